//! The shell's command language: a line becomes statements (split on `;`), a statement
//! becomes words (double quotes group, with escapes), and words become a typed [`Command`].
//!
//! Words are bytes, not strings: a quoted `\xHH` escape can write a value that is not
//! UTF-8, so the shell can produce (and then show safely) anything the store can hold.
//! Nothing here panics on any input; every problem is a [`ParseError`] naming the usage.

use crate::key::Key;

use super::commands::{self, Arg, CommandSpec, COMMANDS};
use super::render::Format;

/// Why a statement could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A `"` without its closing `"`.
    #[error("unterminated quote: a value started with \" needs a closing \"")]
    UnterminatedQuote,
    /// A backslash escape inside quotes that the shell does not know.
    #[error("unknown escape {0} inside quotes (use \\\" \\\\ \\n \\t \\r \\0 or \\xHH)")]
    BadEscape(String),
    /// The first word is not a command.
    #[error("unknown command {0:?}; `help` lists the commands")]
    UnknownCommand(String),
    /// The command is known but its arguments are wrong.
    #[error("{problem}\nusage: {usage}")]
    Usage {
        /// What is wrong.
        problem: String,
        /// The command's usage line.
        usage: &'static str,
    },
}

/// One word of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word with quotes removed and escapes applied.
    pub bytes: Vec<u8>,
    /// Offset in `bytes` where the first quoted part starts (`None` if nothing was
    /// quoted). An `=` before it makes the word an option; a quoted `"w=3"` is a value.
    pub quoted_from: Option<usize>,
}

impl Word {
    fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// `(name, value)` if the word is an unquoted `name=value`.
    fn as_option(&self) -> Option<(String, &[u8])> {
        let eq = self.bytes.iter().position(|&b| b == b'=')?;
        if self.quoted_from.is_some_and(|q| q <= eq) || eq == 0 {
            return None;
        }
        let name = std::str::from_utf8(&self.bytes[..eq]).ok()?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        Some((name.to_ascii_lowercase(), &self.bytes[eq + 1..]))
    }
}

/// One command's worth of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The source text of the statement, for messages.
    pub text: String,
    /// Its words.
    pub words: Vec<Word>,
}

/// Split a line into statements. `;` separates statements and an unquoted `#` at the
/// start of a word starts a comment, both outside quotes. Empty statements are dropped.
pub fn split(line: &str) -> Result<Vec<Statement>, ParseError> {
    let mut out = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut cur: Option<Word> = None;
    let mut start = 0usize;
    let mut chars = line.char_indices().peekable();
    let finish = |words: &mut Vec<Word>, out: &mut Vec<Statement>, text: &str| {
        if !words.is_empty() {
            out.push(Statement {
                text: text.trim().to_string(),
                words: std::mem::take(words),
            });
        }
    };
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let w = cur.get_or_insert_with(|| Word {
                    bytes: Vec::new(),
                    quoted_from: None,
                });
                if w.quoted_from.is_none() {
                    w.quoted_from = Some(w.bytes.len());
                }
                let mut closed = false;
                while let Some((_, q)) = chars.next() {
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            let Some((_, e)) = chars.next() else {
                                return Err(ParseError::UnterminatedQuote);
                            };
                            match e {
                                '"' => w.bytes.push(b'"'),
                                '\\' => w.bytes.push(b'\\'),
                                'n' => w.bytes.push(b'\n'),
                                't' => w.bytes.push(b'\t'),
                                'r' => w.bytes.push(b'\r'),
                                '0' => w.bytes.push(0),
                                'x' => {
                                    let hi = chars.next().map(|(_, h)| h);
                                    let lo = chars.next().map(|(_, h)| h);
                                    let digits: String = hi.into_iter().chain(lo).collect();
                                    match u8::from_str_radix(&digits, 16) {
                                        Ok(b) if digits.len() == 2 => w.bytes.push(b),
                                        _ => {
                                            return Err(ParseError::BadEscape(format!(
                                                "\\x{digits}"
                                            )))
                                        }
                                    }
                                }
                                other => return Err(ParseError::BadEscape(format!("\\{other}"))),
                            }
                        }
                        other => {
                            let mut buf = [0u8; 4];
                            w.bytes
                                .extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                if !closed {
                    return Err(ParseError::UnterminatedQuote);
                }
            }
            ';' => {
                words.extend(cur.take());
                finish(&mut words, &mut out, &line[start..i]);
                start = i + 1;
            }
            '#' if cur.is_none() => {
                finish(&mut words, &mut out, &line[start..i]);
                return Ok(out);
            }
            c if c.is_whitespace() => words.extend(cur.take()),
            c => {
                let w = cur.get_or_insert_with(|| Word {
                    bytes: Vec::new(),
                    quoted_from: None,
                });
                let mut buf = [0u8; 4];
                w.bytes
                    .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    words.extend(cur.take());
    finish(&mut words, &mut out, &line[start..]);
    Ok(out)
}

/// A quorum size: a number, or a level resolved against the keyspace's N at request time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Exactly this many replicas.
    Count(u8),
    /// One replica.
    One,
    /// A majority: N/2+1.
    Quorum,
    /// All N replicas.
    All,
}

impl Level {
    /// Parse `2`, `one`, `quorum` or `all`.
    pub fn parse(text: &str) -> Option<Level> {
        match text.to_ascii_lowercase().as_str() {
            "one" => Some(Level::One),
            "quorum" => Some(Level::Quorum),
            "all" => Some(Level::All),
            t => t.parse::<u8>().ok().filter(|&n| n > 0).map(Level::Count),
        }
    }

    /// The number of replicas this level means for a keyspace with `n` replicas.
    pub fn resolve(self, n: u8) -> u8 {
        match self {
            Level::Count(c) => c,
            Level::One => 1,
            Level::Quorum => n / 2 + 1,
            Level::All => n,
        }
    }

    /// Whether it depends on the keyspace (so it must be resolved with N).
    pub fn needs_n(self) -> bool {
        matches!(self, Level::Quorum | Level::All)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Count(c) => write!(f, "{c}"),
            Level::One => f.write_str("one"),
            Level::Quorum => f.write_str("quorum"),
            Level::All => f.write_str("all"),
        }
    }
}

/// A change to one half (R or W) of the session's consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Leave it as it is.
    Keep,
    /// Use the keyspace's own default.
    Default,
    /// Use this level.
    Set(Level),
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `get KEY [r=..]`.
    Get {
        /// The key.
        key: Key,
        /// Read quorum for this request.
        r: Option<Level>,
    },
    /// `put KEY VALUE [w=..] [context=..]`.
    Put {
        /// The key.
        key: Key,
        /// The value.
        value: Vec<u8>,
        /// Write quorum for this request.
        w: Option<Level>,
        /// Causal context (`None`: blind write).
        context: Option<String>,
    },
    /// `delete KEY [w=..] [context=..]`.
    Delete {
        /// The key.
        key: Key,
        /// Write quorum for this request.
        w: Option<Level>,
        /// Causal context (`None`: blind delete).
        context: Option<String>,
    },
    /// `resolve KEY VALUE [w=..]`.
    Resolve {
        /// The key.
        key: Key,
        /// The merged value.
        value: Vec<u8>,
        /// Write quorum for this request.
        w: Option<Level>,
    },
    /// `consistency ...`; both `Keep` means show.
    Consistency {
        /// Read side.
        r: Setting,
        /// Write side.
        w: Setting,
    },
    /// `use KEYSPACE`.
    Use(String),
    /// `keyspaces`.
    Keyspaces,
    /// `create keyspace NAME n=.. [r=..] [w=..] [max_siblings=..]`.
    CreateKeyspace {
        /// Name.
        name: String,
        /// Replicas per key.
        n: u8,
        /// Default read quorum.
        r: u8,
        /// Default write quorum.
        w: u8,
        /// Sibling cap.
        max_siblings: u16,
    },
    /// `replicas KEY`.
    Replicas(Key),
    /// `status`.
    Status,
    /// `ring`.
    Ring,
    /// `tracing [on|off]`; `None` shows the setting.
    Tracing(Option<bool>),
    /// `format [table|json]`; `None` shows the setting.
    Format(Option<Format>),
    /// `help [COMMAND]`.
    Help(Option<String>),
    /// `exit` / `quit`.
    Exit,
}

/// A key from its shell form: `partition` or `partition/sort`, split at the first `/`.
pub fn key_of(bytes: &[u8]) -> Key {
    match bytes.iter().position(|&b| b == b'/') {
        Some(i) => Key {
            partition: bytes[..i].to_vec(),
            sort: bytes[i + 1..].to_vec(),
        },
        None => Key::simple(bytes.to_vec()),
    }
}

/// Every option name some command takes; an unquoted `name=` with one of these names is
/// never silently taken as a value.
fn known_option(name: &str) -> bool {
    COMMANDS.iter().any(|c| c.options.contains(&name))
}

/// Turn a statement into a command.
pub fn parse(stmt: &Statement) -> Result<Command, ParseError> {
    let heads: Vec<String> = stmt.words.iter().take(2).map(Word::lossy).collect();
    let head_refs: Vec<&str> = heads.iter().map(String::as_str).collect();
    let Some((spec, used)) = commands::lookup(&head_refs) else {
        return Err(ParseError::UnknownCommand(
            head_refs.first().copied().unwrap_or_default().to_string(),
        ));
    };
    let usage = |problem: String| ParseError::Usage {
        problem,
        usage: spec.usage,
    };
    let mut positional: Vec<&Word> = Vec::new();
    let mut options: Vec<(String, Vec<u8>)> = Vec::new();
    for w in &stmt.words[used..] {
        match w.as_option() {
            Some((name, value)) if spec.options.contains(&name.as_str()) => {
                if options.iter().any(|(n, _)| *n == name) {
                    return Err(usage(format!("{name}= given twice")));
                }
                options.push((name, value.to_vec()));
            }
            Some((name, _)) if known_option(&name) => {
                return Err(usage(format!(
                    "{} does not take {name}= (quote a value that contains =)",
                    spec.name
                )));
            }
            _ => positional.push(w),
        }
    }
    let opts = Options { spec, options };
    check_arity(spec, &positional).map_err(usage)?;
    let text = |w: &Word, what: &str| -> Result<String, ParseError> {
        std::str::from_utf8(&w.bytes)
            .map(str::to_string)
            .map_err(|_| usage(format!("the {what} must be UTF-8 text")))
    };
    let arg = |i: usize| positional.get(i).copied();
    Ok(match spec.name {
        "get" => Command::Get {
            key: key_arg(arg(0)),
            r: opts.level("r")?,
        },
        "put" => Command::Put {
            key: key_arg(arg(0)),
            value: arg(1).map(|w| w.bytes.clone()).unwrap_or_default(),
            w: opts.level("w")?,
            context: opts.text("context")?,
        },
        "delete" => Command::Delete {
            key: key_arg(arg(0)),
            w: opts.level("w")?,
            context: opts.text("context")?,
        },
        "resolve" => Command::Resolve {
            key: key_arg(arg(0)),
            value: arg(1).map(|w| w.bytes.clone()).unwrap_or_default(),
            w: opts.level("w")?,
        },
        "consistency" => {
            let setting = |name: &str| -> Result<Setting, ParseError> {
                match opts.text(name)? {
                    None => Ok(Setting::Keep),
                    Some(t) if t.eq_ignore_ascii_case("default") => Ok(Setting::Default),
                    Some(t) => Level::parse(&t).map(Setting::Set).ok_or_else(|| {
                        usage(format!(
                            "{name}={t:?} is not a level: use a number from 1, one, quorum, \
                             all or default"
                        ))
                    }),
                }
            };
            let (mut r, mut w) = (setting("r")?, setting("w")?);
            if let Some(word) = arg(0) {
                if r != Setting::Keep || w != Setting::Keep {
                    return Err(usage("give either a level or r=/w=, not both".into()));
                }
                let t = text(word, "level")?;
                let both = if t.eq_ignore_ascii_case("default") {
                    Setting::Default
                } else {
                    Setting::Set(Level::parse(&t).ok_or_else(|| {
                        usage(format!(
                            "{t:?} is not a level: use a number from 1, one, quorum, all or \
                             default"
                        ))
                    })?)
                };
                (r, w) = (both, both);
            }
            Command::Consistency { r, w }
        }
        "use" => Command::Use(text(positional[0], "keyspace name")?),
        "keyspaces" => Command::Keyspaces,
        "create keyspace" => {
            let n = opts
                .number::<u8>("n")?
                .unwrap_or(crate::keyspace::DEFAULT_N);
            let majority = n / 2 + 1;
            Command::CreateKeyspace {
                name: text(positional[0], "keyspace name")?,
                n,
                r: opts.number::<u8>("r")?.unwrap_or(majority),
                w: opts.number::<u8>("w")?.unwrap_or(majority),
                max_siblings: opts
                    .number::<u16>("max_siblings")?
                    .unwrap_or(crate::keyspace::DEFAULT_MAX_SIBLINGS),
            }
        }
        "replicas" => Command::Replicas(key_arg(arg(0))),
        "status" => Command::Status,
        "ring" => Command::Ring,
        "tracing" => Command::Tracing(match arg(0) {
            None => None,
            Some(w) => match text(w, "setting")?.to_ascii_lowercase().as_str() {
                "on" => Some(true),
                "off" => Some(false),
                other => return Err(usage(format!("{other:?} is neither on nor off"))),
            },
        }),
        "format" => Command::Format(match arg(0) {
            None => None,
            Some(w) => {
                let t = text(w, "format")?;
                Some(
                    Format::parse(&t)
                        .ok_or_else(|| usage(format!("{t:?} is neither table nor json")))?,
                )
            }
        }),
        "help" => Command::Help(if positional.is_empty() {
            None
        } else {
            Some(
                positional
                    .iter()
                    .map(|w| w.lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }),
        "exit" => Command::Exit,
        other => return Err(ParseError::UnknownCommand(other.to_string())),
    })
}

fn key_arg(w: Option<&Word>) -> Key {
    key_of(w.map(|w| w.bytes.as_slice()).unwrap_or_default())
}

/// Positional argument counts: every argument is required except the single optional
/// one of consistency, tracing, format and help (help may name a two-word command).
fn check_arity(spec: &CommandSpec, positional: &[&Word]) -> Result<(), String> {
    let optional = matches!(spec.args, [Arg::Choice(_)] | [Arg::Command]);
    let max = if matches!(spec.args, [Arg::Command]) {
        2
    } else {
        spec.args.len()
    };
    let min = if optional { 0 } else { spec.args.len() };
    if positional.len() < min {
        let names: Vec<&str> = spec.usage.split_whitespace().skip(1).collect();
        return Err(format!(
            "{} needs {} argument(s) ({})",
            spec.name,
            min,
            names
                .iter()
                .filter(|n| !n.starts_with('['))
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if positional.len() > max {
        let extra = String::from_utf8_lossy(&positional[max].bytes).into_owned();
        let hint = if matches!(spec.args.last(), Some(Arg::Value)) {
            " (quote a value that contains spaces)"
        } else {
            ""
        };
        return Err(format!("unexpected argument {extra:?}{hint}"));
    }
    Ok(())
}

/// The `name=value` options of one statement.
struct Options {
    spec: &'static CommandSpec,
    options: Vec<(String, Vec<u8>)>,
}

impl Options {
    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn err(&self, problem: String) -> ParseError {
        ParseError::Usage {
            problem,
            usage: self.spec.usage,
        }
    }

    fn text(&self, name: &str) -> Result<Option<String>, ParseError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(|s| Some(s.to_string()))
                .map_err(|_| self.err(format!("{name}= must be UTF-8 text"))),
        }
    }

    fn level(&self, name: &str) -> Result<Option<Level>, ParseError> {
        match self.text(name)? {
            None => Ok(None),
            Some(t) => Level::parse(&t).map(Some).ok_or_else(|| {
                self.err(format!(
                    "{name}={t:?} is not a quorum: use a number from 1, one, quorum or all"
                ))
            }),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ParseError> {
        match self.text(name)? {
            None => Ok(None),
            Some(t) => t
                .parse::<T>()
                .map(Some)
                .map_err(|_| self.err(format!("{name}={t:?} is not a valid number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Command, ParseError> {
        let stmts = split(line)?;
        assert_eq!(stmts.len(), 1, "{line}: {stmts:?}");
        parse(&stmts[0])
    }

    /// Goal: quotes group words, escapes work (including bytes that are not UTF-8), and a
    /// quoted `w=3` is a value, not an option.
    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            one(r#"put k "hello world" w=3"#).unwrap(),
            Command::Put {
                key: Key::simple("k"),
                value: b"hello world".to_vec(),
                w: Some(Level::Count(3)),
                context: None,
            }
        );
        assert_eq!(
            one(r#"put k "a\"b\\c\n\x00\xff""#).unwrap(),
            Command::Put {
                key: Key::simple("k"),
                value: b"a\"b\\c\n\x00\xff".to_vec(),
                w: None,
                context: None,
            }
        );
        assert_eq!(
            one(r#"put k "w=3""#).unwrap(),
            Command::Put {
                key: Key::simple("k"),
                value: b"w=3".to_vec(),
                w: None,
                context: None,
            }
        );
        // An unquoted word with an `=` that is not an option name is a plain value.
        assert!(matches!(one("put k a=b").unwrap(), Command::Put { value, .. } if value == b"a=b"));
        // Quotes inside a word join, and an option value may be quoted.
        assert!(matches!(
            one(r#"put k v context="gaJuMQI""#).unwrap(),
            Command::Put { context: Some(c), .. } if c == "gaJuMQI"
        ));
        assert_eq!(
            one(r#"get "a b/c""#).unwrap(),
            Command::Get {
                key: Key {
                    partition: b"a b".to_vec(),
                    sort: b"c".to_vec()
                },
                r: None,
            }
        );
        assert!(
            matches!(one(r#"put k """#).unwrap(), Command::Put { value, .. } if value.is_empty())
        );
    }

    /// Goal: `;` separates statements outside quotes only; `#` starts a comment at the
    /// start of a word only; blank input gives nothing.
    #[test]
    fn statements_and_comments() {
        let s = split(r#"put a "x;y" ; get a;;get b # get c"#).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].text, r#"put a "x;y""#);
        assert_eq!(s[0].words[2].bytes, b"x;y");
        assert_eq!(s[2].text, "get b");
        assert!(split("   ").unwrap().is_empty());
        assert!(split("# only a comment").unwrap().is_empty());
        let s = split("put tag a#b").unwrap();
        assert_eq!(s[0].words[2].bytes, b"a#b");
        let s = split(r##"put tag "#x""##).unwrap();
        assert_eq!(s[0].words[2].bytes, b"#x");
    }

    /// Goal: options are case-insensitive, levels parse, defaults of create keyspace are a
    /// majority of N.
    #[test]
    fn options_and_levels() {
        assert_eq!(
            one("GET k R=quorum").unwrap(),
            Command::Get {
                key: Key::simple("k"),
                r: Some(Level::Quorum)
            }
        );
        assert_eq!(
            one("create keyspace carts n=5 w=2").unwrap(),
            Command::CreateKeyspace {
                name: "carts".into(),
                n: 5,
                r: 3,
                w: 2,
                max_siblings: crate::keyspace::DEFAULT_MAX_SIBLINGS,
            }
        );
        assert_eq!(
            one("consistency r=1 w=all").unwrap(),
            Command::Consistency {
                r: Setting::Set(Level::Count(1)),
                w: Setting::Set(Level::All)
            }
        );
        assert_eq!(
            one("consistency default").unwrap(),
            Command::Consistency {
                r: Setting::Default,
                w: Setting::Default
            }
        );
        assert_eq!(
            one("consistency").unwrap(),
            Command::Consistency {
                r: Setting::Keep,
                w: Setting::Keep
            }
        );
        assert_eq!(one("tracing ON").unwrap(), Command::Tracing(Some(true)));
        assert_eq!(
            one("format json").unwrap(),
            Command::Format(Some(Format::Json))
        );
        assert_eq!(
            one("help create keyspace").unwrap(),
            Command::Help(Some("create keyspace".into()))
        );
        assert_eq!(Level::Quorum.resolve(3), 2);
        assert_eq!(Level::Quorum.resolve(4), 3);
        assert_eq!(Level::All.resolve(3), 3);
    }

    /// Goal: every kind of mistake is an error with a message, never a panic or a guess.
    #[test]
    fn errors() {
        assert_eq!(
            split(r#"put k "open"#).unwrap_err(),
            ParseError::UnterminatedQuote
        );
        assert!(matches!(
            split(r#"put k "\q""#),
            Err(ParseError::BadEscape(_))
        ));
        assert!(matches!(
            split(r#"put k "\x4""#),
            Err(ParseError::BadEscape(_))
        ));
        assert!(
            matches!(one("frobnicate x"), Err(ParseError::UnknownCommand(c)) if c == "frobnicate")
        );
        let e = one("get").unwrap_err().to_string();
        assert!(e.contains("usage: get KEY"), "{e}");
        let e = one("put k").unwrap_err().to_string();
        assert!(e.contains("needs 2"), "{e}");
        let e = one("put k hello world").unwrap_err().to_string();
        assert!(e.contains("quote"), "{e}");
        let e = one("get k w=2").unwrap_err().to_string();
        assert!(e.contains("does not take w="), "{e}");
        assert!(one("get k r=0").is_err());
        assert!(one("get k r=300").is_err());
        assert!(one("get k r=1 r=2").is_err());
        assert!(one("consistency r=lots").is_err());
        assert!(one("consistency all r=1").is_err());
        assert!(one("create keyspace x n=-1").is_err());
        assert!(one("tracing maybe").is_err());
        assert!(one("format xml").is_err());
        assert!(one("create table x").is_err());
        assert!(one(r#"use "\xff""#).is_err());
    }

    /// Goal: arbitrary input never panics the parser.
    #[test]
    fn garbage_never_panics() {
        for line in [
            "\"",
            "\\",
            "=",
            "==",
            "put =",
            "put k =v",
            "\u{0}",
            "get \"\\x\"",
            "help help help",
            "put k v context=",
            "r=2",
            ";;;",
            "#",
            "\"\"",
            "get ü/ß r=one",
        ] {
            if let Ok(stmts) = split(line) {
                for s in stmts {
                    let _ = parse(&s);
                }
            }
        }
    }
}
