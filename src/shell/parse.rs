//! The shell's command language: a line becomes statements (split on `;`), a statement
//! becomes words (double quotes group, with escapes), and words become a typed [`Command`].
//!
//! Words are bytes, not strings: a quoted `\xHH` escape can write a value that is not
//! UTF-8, so the shell can produce (and then show safely) anything the store can hold.
//! Nothing here panics on any input; every problem is a [`ParseError`] naming the usage.

use crate::key::Key;
use crate::keyspace::{ConflictPolicy, ReadRepair};
use crate::membership::layout::Change;
use crate::proto::{CrdtOp, FieldOp};

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
    /// Offset in `bytes` of the first `=` typed outside quotes, if any: where a batch
    /// item `KEY=VALUE` splits (`"a b"=x` splits after the quoted key).
    pub eq_unquoted: Option<usize>,
}

impl Word {
    fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// `(name, value)` if the word is an unquoted `name=value`. The name is lower-cased
    /// with `-` read as `_` (`if-context` and `if_context` are one option).
    fn as_option(&self) -> Option<(String, &[u8])> {
        let eq = self.bytes.iter().position(|&b| b == b'=')?;
        if self.quoted_from.is_some_and(|q| q <= eq) || eq == 0 {
            return None;
        }
        let name = std::str::from_utf8(&self.bytes[..eq]).ok()?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return None;
        }
        Some((normal(name), &self.bytes[eq + 1..]))
    }

    /// The word as a bare flag name (unquoted, no `=`), normalised like option names.
    fn as_flag(&self) -> Option<String> {
        if self.quoted_from.is_some() || self.bytes.contains(&b'=') {
            return None;
        }
        std::str::from_utf8(&self.bytes).ok().map(normal)
    }
}

/// An option name as compared: lower case, `-` as `_`.
fn normal(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// The spelling of option `name` (normalised) in `spec`, if it takes it.
fn spec_option(spec: &CommandSpec, name: &str) -> Option<&'static str> {
    spec.options.iter().copied().find(|o| normal(o) == name)
}

/// Options that may be given bare, without `=value` (an empty value).
const FLAGS: &[&str] = &["if-context"];

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
                    eq_unquoted: None,
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
                    eq_unquoted: None,
                });
                if c == '=' && w.eq_unquoted.is_none() {
                    w.eq_unquoted = Some(w.bytes.len());
                }
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

/// The shell's `cluster ...` commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCommand {
    /// `cluster status`.
    Status,
    /// `cluster plan`.
    Plan,
    /// `cluster commit`.
    Commit,
    /// `cluster abort`.
    Abort,
    /// `cluster join|leave|remove`.
    Stage(Change),
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
    /// `put KEY VALUE [w=..] [context=.. | if-context[=..]] [ts=..] [actor=..]`.
    Put {
        /// The key.
        key: Key,
        /// The value.
        value: Vec<u8>,
        /// Write quorum for this request.
        w: Option<Level>,
        /// Causal context (`None`: blind write).
        context: Option<String>,
        /// Conditional write: `Some(C)` with the context C, `Some("")` with the context
        /// of the session's last read of the key.
        if_context: Option<String>,
        /// Client timestamp and actor.
        stamp: Stamp,
    },
    /// `delete KEY [w=..] [context=..] [ts=..] [actor=..]`.
    Delete {
        /// The key.
        key: Key,
        /// Write quorum for this request.
        w: Option<Level>,
        /// Causal context (`None`: blind delete).
        context: Option<String>,
        /// Client timestamp and actor.
        stamp: Stamp,
    },
    /// `resolve KEY VALUE [w=..] [ts=..] [actor=..]`.
    Resolve {
        /// The key.
        key: Key,
        /// The merged value.
        value: Vec<u8>,
        /// Write quorum for this request.
        w: Option<Level>,
        /// Client timestamp and actor.
        stamp: Stamp,
    },
    /// `scan PARTITION [from=|after=] [to=] [limit=] [r=]`.
    Scan {
        /// The partition.
        partition: Vec<u8>,
        /// First sort key, inclusive (`after=X` is `X` followed by a zero byte).
        from: Vec<u8>,
        /// End sort key, exclusive.
        to: Option<Vec<u8>>,
        /// Page size (None: the shell's default).
        limit: Option<u32>,
        /// Read quorum for this request.
        r: Option<Level>,
    },
    /// `next` / `scan more`: the next page of the last scan.
    Next,
    /// `batch KEY=VALUE ... [w=..]`.
    Batch {
        /// (key, value) in the order given.
        items: Vec<(Key, Vec<u8>)>,
        /// Write quorum for this request.
        w: Option<Level>,
    },
    /// A CRDT operation: `incr`, `decr`, `sadd`, `srem`, `hset`, `hincr`, `hsadd`,
    /// `hsrem`, `hdel` or `rset`.
    Update {
        /// The shell command's name (`sadd`), for messages.
        command: &'static str,
        /// The key.
        key: Key,
        /// The operation.
        op: CrdtOp,
        /// Write quorum for this request.
        w: Option<Level>,
        /// `context=C`; `None`: the session's last read of the key (for removes and
        /// register writes; read first for removes if there is none).
        context: Option<String>,
    },
    /// `actor [NAME|none]`: `None` shows, `Some(None)` clears, `Some(Some(n))` sets.
    Actor(Option<Option<String>>),
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
    /// `create keyspace NAME n=.. [r=..] [w=..] [max_siblings=..] [policy=..]
    /// [read_repair=..] [actor_priority=..]`.
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
        /// Conflict policy.
        policy: ConflictPolicy,
        /// Read repair mode.
        read_repair: ReadRepair,
        /// Actors, highest priority first (lww-actor).
        actor_priority: Vec<String>,
        /// Client names that may read (`None`: every client).
        readers: Option<Vec<String>>,
        /// Client names that may write (`None`: every client).
        writers: Option<Vec<String>>,
    },
    /// `drop keyspace NAME`.
    DropKeyspace(String),
    /// `replicas KEY`.
    Replicas(Key),
    /// `status`.
    Status,
    /// `stats`.
    Stats,
    /// `cluster status|plan|commit|abort`, and `cluster join|leave|remove` (staging).
    Cluster(ClusterCommand),
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

/// A write's client timestamp (lww-client) and actor (lww-actor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    /// `ts=N`.
    pub ts: Option<u64>,
    /// `actor=NAME`.
    pub actor: Option<String>,
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
    COMMANDS.iter().any(|c| spec_option(c, name).is_some())
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
    if spec.name == "batch" {
        return parse_batch(spec, &stmt.words[used..]);
    }
    let mut positional: Vec<&Word> = Vec::new();
    let mut options: Vec<(String, Vec<u8>)> = Vec::new();
    for w in &stmt.words[used..] {
        let flag = w
            .as_flag()
            .and_then(|f| FLAGS.iter().find(|o| normal(o) == f))
            .and_then(|f| spec_option(spec, &normal(f)));
        if let Some(name) = flag {
            if options.iter().any(|(n, _)| n == name) {
                return Err(usage(format!("{name} given twice")));
            }
            options.push((name.to_string(), Vec::new()));
            continue;
        }
        match w.as_option() {
            Some((name, value)) if spec_option(spec, &name).is_some() => {
                let name = spec_option(spec, &name).unwrap_or_default().to_string();
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
        "put" => {
            let context = opts.text("context")?;
            let if_context = opts.text("if-context")?;
            if context.is_some() && if_context.is_some() {
                return Err(usage(
                    "give context= (replace what a read saw) or if-context (only if \
                     unchanged since that read), not both"
                        .into(),
                ));
            }
            Command::Put {
                key: key_arg(arg(0)),
                value: arg(1).map(|w| w.bytes.clone()).unwrap_or_default(),
                w: opts.level("w")?,
                context,
                if_context,
                stamp: opts.stamp()?,
            }
        }
        "delete" => Command::Delete {
            key: key_arg(arg(0)),
            w: opts.level("w")?,
            context: opts.text("context")?,
            stamp: opts.stamp()?,
        },
        "resolve" => Command::Resolve {
            key: key_arg(arg(0)),
            value: arg(1).map(|w| w.bytes.clone()).unwrap_or_default(),
            w: opts.level("w")?,
            stamp: opts.stamp()?,
        },
        "scan" => {
            let word = positional[0];
            // `scan more` continues; a quoted "more" is a partition of that name.
            if word.quoted_from.is_none()
                && word.bytes.eq_ignore_ascii_case(b"more")
                && opts.options.is_empty()
            {
                return Ok(Command::Next);
            }
            if word.bytes.is_empty() {
                return Err(usage("the partition must not be empty".into()));
            }
            let from = match (opts.raw("from"), opts.raw("after")) {
                (Some(_), Some(_)) => {
                    return Err(usage("give from= or after=, not both".into()));
                }
                (Some(f), None) => f.to_vec(),
                // The smallest sort key after X is X followed by a zero byte.
                (None, Some(a)) => [a, &[0u8][..]].concat(),
                (None, None) => Vec::new(),
            };
            let limit = opts.number::<u32>("limit")?;
            if limit == Some(0) {
                return Err(usage("limit= must be at least 1".into()));
            }
            Command::Scan {
                partition: word.bytes.clone(),
                from,
                to: opts.raw("to").map(<[u8]>::to_vec),
                limit,
                r: opts.level("r")?,
            }
        }
        "incr" | "decr" | "sadd" | "srem" | "hset" | "hincr" | "hsadd" | "hsrem" | "hdel"
        | "rset" => {
            let members = |from: usize| -> Vec<serde_bytes::ByteBuf> {
                positional[from..]
                    .iter()
                    .map(|w| serde_bytes::ByteBuf::from(w.bytes.clone()))
                    .collect()
            };
            let value = |i: usize| serde_bytes::ByteBuf::from(positional[i].bytes.clone());
            let field = || -> Result<String, ParseError> {
                let f = text(positional[1], "field name")?;
                if f.is_empty() {
                    return Err(usage("the field name must not be empty".into()));
                }
                Ok(f)
            };
            let op = match spec.name {
                "incr" | "decr" => {
                    let n: i64 = match arg(1) {
                        None => 1,
                        Some(w) => {
                            let t = text(w, "amount")?;
                            let n = t.parse::<u32>().map_err(|_| {
                                usage(format!(
                                    "{t:?} is not a count: use a whole number from 0 to {}{}",
                                    u32::MAX,
                                    if t.starts_with('-') {
                                        " (decr subtracts)"
                                    } else {
                                        ""
                                    }
                                ))
                            })?;
                            i64::from(n)
                        }
                    };
                    CrdtOp::CounterAdd(if spec.name == "decr" { -n } else { n })
                }
                "sadd" => CrdtOp::SetAdd(members(1)),
                "srem" => CrdtOp::SetRemove(members(1)),
                "rset" => CrdtOp::RegisterWrite(value(1)),
                "hdel" => CrdtOp::MapRemove { field: field()? },
                name => {
                    let field = field()?;
                    let op = match name {
                        "hset" => FieldOp::RegisterWrite(value(2)),
                        "hincr" => {
                            let t = text(positional[2], "amount")?;
                            FieldOp::CounterAdd(t.parse::<i64>().map_err(|_| {
                                usage(format!("{t:?} is not a whole number (e.g. 5 or -3)"))
                            })?)
                        }
                        "hsadd" => FieldOp::SetAdd(members(2)),
                        _ => FieldOp::SetRemove(members(2)),
                    };
                    CrdtOp::MapUpdate { field, op }
                }
            };
            Command::Update {
                command: spec.name,
                key: key_arg(arg(0)),
                op,
                w: opts.level("w")?,
                context: opts.text("context")?,
            }
        }
        "next" => Command::Next,
        "actor" => Command::Actor(match arg(0) {
            None => None,
            Some(w) => {
                let t = text(w, "actor")?;
                if t.is_empty() {
                    return Err(usage("the actor must not be empty".into()));
                }
                if w.quoted_from.is_none() && t.eq_ignore_ascii_case("none") {
                    Some(None)
                } else {
                    Some(Some(t))
                }
            }
        }),
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
                policy: match opts.text("policy")? {
                    None => ConflictPolicy::default(),
                    Some(t) => t.to_ascii_lowercase().parse().map_err(usage)?,
                },
                read_repair: match opts.text("read_repair")? {
                    None => ReadRepair::default(),
                    Some(t) => t.to_ascii_lowercase().parse().map_err(usage)?,
                },
                actor_priority: opts
                    .text("actor_priority")?
                    .map(|t| {
                        t.split(',')
                            .map(|a| a.trim().to_string())
                            .filter(|a| !a.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                readers: opts.text("readers")?.map(|t| name_list(&t)),
                writers: opts.text("writers")?.map(|t| name_list(&t)),
            }
        }
        "drop keyspace" => Command::DropKeyspace(text(positional[0], "keyspace name")?),
        "replicas" => Command::Replicas(key_arg(arg(0))),
        "status" => Command::Status,
        "stats" => Command::Stats,
        "cluster status" => Command::Cluster(ClusterCommand::Status),
        "cluster plan" => Command::Cluster(ClusterCommand::Plan),
        "cluster commit" => Command::Cluster(ClusterCommand::Commit),
        "cluster abort" => Command::Cluster(ClusterCommand::Abort),
        "cluster join" => {
            let name = text(positional[0], "node name")?;
            let addr_text = text(positional[1], "address")?;
            let addr = addr_text.parse().map_err(|_| {
                usage(format!(
                    "{addr_text:?} is not an address: give HOST:PORT with an IP, e.g. 127.0.0.1:7104"
                ))
            })?;
            Command::Cluster(ClusterCommand::Stage(Change::Join {
                name,
                addr,
                zone: opts.text("zone")?,
            }))
        }
        "cluster leave" => Command::Cluster(ClusterCommand::Stage(Change::Leave {
            name: text(positional[0], "node name")?,
        })),
        "cluster remove" => Command::Cluster(ClusterCommand::Stage(Change::Remove {
            name: text(positional[0], "node name")?,
        })),
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

/// `batch KEY=VALUE ... [w=LEVEL]`: every word but `w=` is an item split at its first
/// unquoted `=`.
fn parse_batch(spec: &'static CommandSpec, words: &[Word]) -> Result<Command, ParseError> {
    let usage = |problem: String| ParseError::Usage {
        problem,
        usage: spec.usage,
    };
    let mut items = Vec::new();
    let mut w_text: Option<String> = None;
    for word in words {
        if let Some((name, value)) = word.as_option() {
            if name == "w" {
                if w_text.is_some() {
                    return Err(usage("w= given twice".into()));
                }
                w_text = Some(String::from_utf8_lossy(value).into_owned());
                continue;
            }
        }
        let Some(eq) = word.eq_unquoted else {
            return Err(usage(format!(
                "batch item {:?} is not KEY=VALUE (quote a value with spaces: k=\"a b\")",
                word.lossy()
            )));
        };
        let key = key_of(&word.bytes[..eq]);
        if key.partition.is_empty() {
            return Err(usage(format!(
                "batch item {:?} has no key before =",
                word.lossy()
            )));
        }
        items.push((key, word.bytes[eq + 1..].to_vec()));
    }
    if items.is_empty() {
        return Err(usage("batch needs at least one KEY=VALUE item".into()));
    }
    let w = match w_text {
        None => None,
        Some(t) => Some(Level::parse(&t).ok_or_else(|| {
            usage(format!(
                "w={t:?} is not a quorum: use a number from 1, one, quorum or all"
            ))
        })?),
    };
    Ok(Command::Batch { items, w })
}

fn key_arg(w: Option<&Word>) -> Key {
    key_of(w.map(|w| w.bytes.as_slice()).unwrap_or_default())
}

/// Positional argument counts: every argument is required except the single optional
/// one of consistency, tracing, format and help (help may name a two-word command) and an
/// optional number (`incr KEY [N]`); trailing members repeat (one or more).
fn check_arity(spec: &CommandSpec, positional: &[&Word]) -> Result<(), String> {
    let min = spec
        .args
        .iter()
        .filter(|a| !matches!(a, Arg::Choice(_) | Arg::Command | Arg::OptNumber))
        .count();
    let max = match spec.args.last() {
        Some(Arg::Command) => 2,
        Some(Arg::Members) => usize::MAX,
        _ => spec.args.len(),
    };
    if positional.len() < min {
        let names: Vec<&str> = spec.usage.split_whitespace().skip(1).collect();
        return Err(format!(
            "{} needs {}{} argument(s) ({})",
            spec.name,
            if max > min { "at least " } else { "" },
            min,
            names
                .iter()
                .filter(|n| !n.starts_with('[') && !n.ends_with(']'))
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

    fn stamp(&self) -> Result<Stamp, ParseError> {
        let actor = self.text("actor")?;
        if actor.as_deref() == Some("") {
            return Err(self.err("actor= needs a name".into()));
        }
        Ok(Stamp {
            ts: self.number::<u64>("ts")?,
            actor,
        })
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

/// A comma-separated list of names (`readers=alice,bob`); `readers=` (empty) is an empty
/// list: admins only.
fn name_list(t: &str) -> Vec<String> {
    t.split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
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
                if_context: None,
                stamp: Stamp::default(),
            }
        );
        assert_eq!(
            one(r#"put k "a\"b\\c\n\x00\xff""#).unwrap(),
            Command::Put {
                key: Key::simple("k"),
                value: b"a\"b\\c\n\x00\xff".to_vec(),
                w: None,
                context: None,
                if_context: None,
                stamp: Stamp::default(),
            }
        );
        assert_eq!(
            one(r#"put k "w=3""#).unwrap(),
            Command::Put {
                key: Key::simple("k"),
                value: b"w=3".to_vec(),
                w: None,
                context: None,
                if_context: None,
                stamp: Stamp::default(),
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
                policy: ConflictPolicy::Siblings,
                read_repair: ReadRepair::Async,
                actor_priority: vec![],
                readers: None,
                writers: None,
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

    /// Goal: scan takes a partition and from=/after=/to=/limit=/r=; after=X starts just
    /// after X (X and a zero byte); `scan more` and `next` continue; a quoted "more" is a
    /// partition; from= with after=, limit=0 and a missing partition are refused.
    #[test]
    fn scan_syntax() {
        assert_eq!(
            one("scan post1").unwrap(),
            Command::Scan {
                partition: b"post1".to_vec(),
                from: vec![],
                to: None,
                limit: None,
                r: None,
            }
        );
        assert_eq!(
            one("SCAN post1 after=c1 to=d limit=2 r=one").unwrap(),
            Command::Scan {
                partition: b"post1".to_vec(),
                from: b"c1\0".to_vec(),
                to: Some(b"d".to_vec()),
                limit: Some(2),
                r: Some(Level::One),
            }
        );
        assert!(matches!(
            one("scan p from=b").unwrap(),
            Command::Scan { from, .. } if from == b"b"
        ));
        assert_eq!(one("next").unwrap(), Command::Next);
        assert_eq!(one("scan more").unwrap(), Command::Next);
        assert!(matches!(
            one(r#"scan "more""#).unwrap(),
            Command::Scan { partition, .. } if partition == b"more"
        ));
        assert!(one("scan p from=a after=b").is_err());
        assert!(one("scan p limit=0").is_err());
        assert!(one("scan p limit=x").is_err());
        assert!(one("scan").unwrap_err().to_string().contains("usage: scan"));
        assert!(one("scan a b").is_err());
        assert!(one("next x").is_err());
    }

    /// Goal: batch items split at the first unquoted `=`, values may be quoted (with
    /// spaces and `=`), a quoted key may be `w`, a bare w= is the quorum; a word without
    /// `=`, an empty key or no items at all are refused.
    #[test]
    fn batch_syntax() {
        let k = |p: &str, s: &str| Key {
            partition: p.as_bytes().to_vec(),
            sort: s.as_bytes().to_vec(),
        };
        assert_eq!(
            one(r#"batch post1="hello world" post1/c1=first post1/c2="a=b" w=3"#).unwrap(),
            Command::Batch {
                items: vec![
                    (k("post1", ""), b"hello world".to_vec()),
                    (k("post1", "c1"), b"first".to_vec()),
                    (k("post1", "c2"), b"a=b".to_vec()),
                ],
                w: Some(Level::Count(3)),
            }
        );
        assert_eq!(
            one(r#"batch "w"=x "a b"/c="" r=1"#).unwrap(),
            Command::Batch {
                items: vec![
                    (k("w", ""), b"x".to_vec()),
                    (k("a b", "c"), b"".to_vec()),
                    (k("r", ""), b"1".to_vec()),
                ],
                w: None,
            }
        );
        let e = one("batch a=1 nokey").unwrap_err().to_string();
        assert!(e.contains("not KEY=VALUE"), "{e}");
        assert!(one("batch =v").is_err());
        assert!(one("batch w=2").is_err());
        assert!(one("batch a=1 w=lots").is_err());
        assert!(one("batch a=1 w=1 w=2").is_err());
    }

    /// Goal: put's if-context takes a context or stands alone (meaning "my last read"),
    /// `if_context` is the same option, it cannot be combined with context=; ts= and
    /// actor= parse on put, delete and resolve; `actor` shows, sets and clears.
    #[test]
    fn conditional_and_stamped_writes() {
        assert!(matches!(
            one("put k v if-context=gaJ").unwrap(),
            Command::Put { if_context: Some(c), context: None, .. } if c == "gaJ"
        ));
        assert!(matches!(
            one("put k v if-context").unwrap(),
            Command::Put { if_context: Some(c), .. } if c.is_empty()
        ));
        assert!(matches!(
            one("put k v IF_CONTEXT w=2").unwrap(),
            Command::Put { if_context: Some(c), w: Some(Level::Count(2)), .. } if c.is_empty()
        ));
        // Quoted, it is a value.
        assert!(matches!(
            one(r#"put k "if-context""#).unwrap(),
            Command::Put { if_context: None, value, .. } if value == b"if-context"
        ));
        assert!(one("put k v context=a if-context").is_err());
        assert!(one("put k v if-context if-context").is_err());
        assert!(one("get k if-context=x").is_err());
        assert!(matches!(
            one("put k v ts=17 actor=eu").unwrap(),
            Command::Put { stamp: Stamp { ts: Some(17), actor: Some(a) }, .. } if a == "eu"
        ));
        assert!(matches!(
            one("delete k ts=18").unwrap(),
            Command::Delete {
                stamp: Stamp {
                    ts: Some(18),
                    actor: None
                },
                ..
            }
        ));
        assert!(matches!(
            one("resolve k v actor=us").unwrap(),
            Command::Resolve { stamp: Stamp { actor: Some(a), .. }, .. } if a == "us"
        ));
        assert!(one("put k v ts=-1").is_err());
        assert!(one("put k v ts=soon").is_err());
        assert!(one("put k v actor=").is_err());
        assert!(one("get k ts=1").is_err());
        assert_eq!(one("actor").unwrap(), Command::Actor(None));
        assert_eq!(
            one("actor eu").unwrap(),
            Command::Actor(Some(Some("eu".into())))
        );
        assert_eq!(one("actor NONE").unwrap(), Command::Actor(Some(None)));
        assert!(one("actor a b").is_err());
    }

    /// Goal: create keyspace takes policy, read_repair and a comma-separated
    /// actor_priority; unknown policies and modes are refused with the accepted ones.
    #[test]
    fn create_keyspace_policies() {
        assert_eq!(
            one("create keyspace mods n=3 policy=lww-actor actor_priority=eu,us read_repair=blocking")
                .unwrap(),
            Command::CreateKeyspace {
                name: "mods".into(),
                n: 3,
                r: 2,
                w: 2,
                max_siblings: crate::keyspace::DEFAULT_MAX_SIBLINGS,
                policy: ConflictPolicy::LwwActor,
                read_repair: ReadRepair::Blocking,
                actor_priority: vec!["eu".into(), "us".into()],
                readers: None,
                writers: None,
            }
        );
        // Grants: a list, or an empty one (admins only); drop keyspace takes a name.
        assert!(matches!(
            one("create keyspace o readers=alice,bob writers=").unwrap(),
            Command::CreateKeyspace { readers: Some(r), writers: Some(w), .. }
                if r == ["alice", "bob"] && w.is_empty()
        ));
        assert_eq!(
            one("drop keyspace o").unwrap(),
            Command::DropKeyspace("o".into())
        );
        assert!(matches!(
            one("create keyspace c policy=LWW-CLIENT").unwrap(),
            Command::CreateKeyspace {
                policy: ConflictPolicy::LwwClient,
                ..
            }
        ));
        let e = one("create keyspace c policy=newest")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lww-client"), "{e}");
        let e = one("create keyspace c read_repair=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("blocking"), "{e}");
    }

    /// Goal: the CRDT commands parse to their operations: incr/decr with an optional
    /// count (default 1; negative refused, decr subtracts), sadd/srem with one or more
    /// members (quoted members may hold spaces and bytes), hset/hincr (negative allowed)/
    /// hsadd/hsrem/hdel on a field, rset; w= everywhere, context= only where a read's
    /// context means something; missing arguments name the usage.
    #[test]
    fn crdt_commands() {
        use serde_bytes::ByteBuf;
        let b = |s: &str| ByteBuf::from(s.as_bytes().to_vec());
        let upd = |line: &str| match one(line).unwrap() {
            Command::Update {
                command,
                key,
                op,
                w,
                context,
            } => (command, key, op, w, context),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(
            upd("incr hits"),
            (
                "incr",
                Key::simple("hits"),
                CrdtOp::CounterAdd(1),
                None,
                None
            )
        );
        assert_eq!(upd("INCR hits 10 w=all").2, CrdtOp::CounterAdd(10));
        assert_eq!(upd("incr hits 10 w=all").3, Some(Level::All));
        assert_eq!(upd("decr p/s 4").2, CrdtOp::CounterAdd(-4));
        assert_eq!(upd("decr p/s").2, CrdtOp::CounterAdd(-1));
        assert_eq!(
            upd(r#"sadd tags red "dark blue" "\xff""#).2,
            CrdtOp::SetAdd(vec![b("red"), b("dark blue"), ByteBuf::from(vec![0xff])])
        );
        let (command, _, op, w, context) = upd("srem tags red green w=1 context=gaJ");
        assert_eq!(command, "srem");
        assert_eq!(op, CrdtOp::SetRemove(vec![b("red"), b("green")]));
        assert_eq!((w, context), (Some(Level::Count(1)), Some("gaJ".into())));
        assert_eq!(
            upd("hset u1 name \"Ada L\"").2,
            CrdtOp::MapUpdate {
                field: "name".into(),
                op: FieldOp::RegisterWrite(b("Ada L"))
            }
        );
        assert_eq!(
            upd("hincr u1 logins -3").2,
            CrdtOp::MapUpdate {
                field: "logins".into(),
                op: FieldOp::CounterAdd(-3)
            }
        );
        assert_eq!(
            upd("hsadd u1 roles admin editor").2,
            CrdtOp::MapUpdate {
                field: "roles".into(),
                op: FieldOp::SetAdd(vec![b("admin"), b("editor")])
            }
        );
        assert_eq!(
            upd("hsrem u1 roles editor").2,
            CrdtOp::MapUpdate {
                field: "roles".into(),
                op: FieldOp::SetRemove(vec![b("editor")])
            }
        );
        assert_eq!(
            upd("hdel u1 name context=x").2,
            CrdtOp::MapRemove {
                field: "name".into()
            }
        );
        assert_eq!(upd("rset c blue").2, CrdtOp::RegisterWrite(b("blue")));
        assert_eq!(upd("rset c blue context=gaJ").4, Some("gaJ".into()));
        // A quoted `w=1` is a member, not an option.
        assert_eq!(upd(r#"sadd s "w=1""#).2, CrdtOp::SetAdd(vec![b("w=1")]));
        // Mistakes.
        let e = one("incr hits -2").unwrap_err().to_string();
        assert!(
            e.contains("decr subtracts") && e.contains("usage: incr KEY [N]"),
            "{e}"
        );
        assert!(one("incr hits lots").is_err());
        assert!(one("incr hits 1 2").is_err());
        assert!(one("incr").is_err());
        let e = one("sadd tags").unwrap_err().to_string();
        assert!(
            e.contains("needs at least 2 argument(s) (KEY MEMBER)"),
            "{e}"
        );
        assert!(one("hincr u1 logins").is_err());
        assert!(one("hincr u1 logins 1.5").is_err());
        assert!(one("hset u1 name").is_err());
        assert!(one("hset u1 name a b").is_err());
        assert!(one(r#"hset u1 "" a"#).is_err());
        assert!(one(r#"hset u1 "\xff" a"#).is_err());
        assert!(one("hdel u1").is_err());
        assert!(one("incr hits context=x")
            .unwrap_err()
            .to_string()
            .contains("does not take context="));
        assert!(one("sadd s a context=x").is_err());
        assert!(one("rset c").is_err());
        assert!(one("rset c a r=1").is_err());
        assert!(matches!(
            one("create keyspace hits policy=COUNTER").unwrap(),
            Command::CreateKeyspace {
                policy: ConflictPolicy::Counter,
                ..
            }
        ));
        for p in ["set", "map", "register"] {
            assert!(one(&format!("create keyspace x policy={p}")).is_ok());
        }
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
            "batch",
            "batch =",
            "batch \"\"=",
            "scan \"\"",
            "scan p after=",
            "put k v if-context=",
            "actor \"\"",
            "create keyspace x actor_priority=,",
        ] {
            if let Ok(stmts) = split(line) {
                for s in stmts {
                    let _ = parse(&s);
                }
            }
        }
    }
}
