//! Tab completion for the interactive shell (a rustyline helper).
//!
//! Completes command names, then each argument by what it is (keyspace names fetched from
//! the cluster, keys read in this session, fixed choices), then `name=` options; after
//! `context=` it offers the context remembered from the last read of the key. It works from
//! a snapshot ([`Vocabulary`]) the shell refreshes after each command, so completing never
//! waits on the network.

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::commands::{self, Arg, COMMANDS, LEVELS};

/// What completion can offer beyond the fixed command language.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Keyspace names.
    pub keyspaces: Vec<String>,
    /// Keys read in the current keyspace, with their remembered context.
    pub keys: Vec<(String, String)>,
    /// Actor names from the keyspaces' actor priorities (for `actor=`).
    pub actors: Vec<String>,
}

/// The rustyline helper.
#[derive(Debug, Default)]
pub struct ShellHelper {
    /// Refreshed by the shell after every command.
    pub vocabulary: Vocabulary,
}

/// The words before the cursor (quotes respected, unterminated ones tolerated) and the
/// start offset of the word being typed.
fn words_before(line: &str) -> (Vec<String>, usize) {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => {
                in_quote = !in_quote;
                if !in_word {
                    start = i;
                    in_word = true;
                }
            }
            c if c.is_whitespace() && !in_quote => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            ';' if !in_quote => {
                // A new statement starts: forget the words before it.
                words.clear();
                cur.clear();
                in_word = false;
            }
            c => {
                if !in_word {
                    start = i;
                    in_word = true;
                }
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    } else {
        start = line.len();
        words.push(String::new());
    }
    (words, start)
}

fn matching<'a>(prefix: &str, options: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let lower = prefix.to_ascii_lowercase();
    let mut out: Vec<String> = options
        .into_iter()
        .filter(|o| o.to_ascii_lowercase().starts_with(&lower))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

impl ShellHelper {
    /// Candidates for the word being typed at the end of `line`; returns (start, words).
    pub fn candidates(&self, line: &str) -> (usize, Vec<String>) {
        let (words, start) = words_before(line);
        let (typing, done) = words.split_last().unwrap_or((&words[0], &[]));
        if done.is_empty() {
            let names = COMMANDS
                .iter()
                .map(|c| c.name.split(' ').next().unwrap_or(c.name));
            return (start, matching(typing, names));
        }
        let done_refs: Vec<&str> = done.iter().map(String::as_str).collect();
        // `create` alone: the second word of the name.
        if done_refs.len() == 1 {
            let two_word: Vec<&str> = COMMANDS
                .iter()
                .filter_map(|c| c.name.split_once(' '))
                .filter(|(head, _)| head.eq_ignore_ascii_case(done_refs[0]))
                .map(|(_, rest)| rest)
                .collect();
            if !two_word.is_empty() {
                return (start, matching(typing, two_word));
            }
        }
        let Some((spec, used)) = commands::lookup(&done_refs) else {
            return (start, Vec::new());
        };
        let args = &done_refs[used..];
        // After `name=`: complete the option's value.
        if let Some((name, value)) = typing.split_once('=') {
            let name_lc = name.to_ascii_lowercase();
            let values: Vec<String> = match name_lc.as_str() {
                "context" | "if-context" | "if_context" => {
                    let key = args.iter().find(|a| !a.contains('='));
                    self.vocabulary
                        .keys
                        .iter()
                        .filter(|(k, _)| Some(&k.as_str()) == key)
                        .map(|(_, c)| c.clone())
                        .collect()
                }
                "policy" if spec.name == "create keyspace" => [
                    "siblings",
                    "lww-timestamp",
                    "lww-actor",
                    "lww-client",
                    "counter",
                    "set",
                    "map",
                    "register",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                "read_repair" | "read-repair" if spec.name == "create keyspace" => {
                    ["async", "blocking", "off"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }
                "actor" => self.vocabulary.actors.clone(),
                "r" | "w" if spec.name != "create keyspace" => {
                    let mut v: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
                    if spec.name == "consistency" {
                        v.push("default".into());
                    }
                    v
                }
                _ => Vec::new(),
            };
            let offset = start + name.len() + 1;
            return (offset, matching(value, values.iter().map(String::as_str)));
        }
        let positional = if matches!(spec.args, [Arg::Items]) {
            // Batch items are `KEY=VALUE`: they count as arguments.
            args.len()
        } else {
            args.iter().filter(|a| !a.contains('=')).count()
        };
        let given: Vec<String> = args
            .iter()
            .filter_map(|a| a.split_once('=').map(|(n, _)| n.to_ascii_lowercase()))
            .collect();
        let mut out: Vec<String> = Vec::new();
        // Batch items repeat: every word may be another KEY=.
        let slot = match spec.args {
            [Arg::Items] => Some(&Arg::Items),
            [.., Arg::Members] if positional >= spec.args.len() => Some(&Arg::Members),
            _ => spec.args.get(positional),
        };
        match slot {
            Some(Arg::Keyspace) => out.extend(self.vocabulary.keyspaces.iter().cloned()),
            Some(Arg::Partition) => out.extend(
                self.vocabulary
                    .keys
                    .iter()
                    .map(|(k, _)| k.split('/').next().unwrap_or(k).to_string()),
            ),
            Some(Arg::Items) => {
                out.extend(self.vocabulary.keys.iter().map(|(k, _)| format!("{k}=")))
            }
            Some(Arg::Key) => out.extend(self.vocabulary.keys.iter().map(|(k, _)| k.clone())),
            Some(Arg::Choice(c)) => out.extend(c.iter().map(|s| s.to_string())),
            Some(Arg::Command) => out.extend(COMMANDS.iter().map(|c| c.name.to_string())),
            Some(Arg::Value) | Some(Arg::Name) | Some(Arg::Field) | Some(Arg::Members)
            | Some(Arg::OptNumber) => {}
            None => {}
        }
        // Options once the required arguments are in (or for commands whose argument is
        // optional), minus those already given.
        let required = spec
            .args
            .iter()
            .filter(|a| !matches!(a, Arg::Choice(_) | Arg::Command | Arg::OptNumber))
            .count();
        if positional >= required {
            out.extend(
                spec.options
                    .iter()
                    .filter(|o| !given.iter().any(|g| g == *o))
                    .map(|o| format!("{o}=")),
            );
        }
        (start, matching(typing, out.iter().map(String::as_str)))
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        let (start, words) = self.candidates(before);
        let pairs = words
            .into_iter()
            .map(|w| {
                // A finished word gets a space; an option name waits for its value.
                let replacement = if w.ends_with('=') {
                    w.clone()
                } else {
                    format!("{w} ")
                };
                Pair {
                    display: w,
                    replacement,
                }
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> ShellHelper {
        ShellHelper {
            vocabulary: Vocabulary {
                keyspaces: vec!["default".into(), "carts".into()],
                keys: vec![
                    ("doc".into(), "gaJuMQI".into()),
                    ("post1/c1".into(), "gaJwMQE".into()),
                ],
                actors: vec!["eu".into(), "us".into()],
            },
        }
    }

    /// Goal: command names, keyspaces, choices, options and remembered contexts complete
    /// from what is typed before the cursor.
    #[test]
    fn completes_by_position() {
        let h = helper();
        assert_eq!(h.candidates("cons"), (0, vec!["consistency".to_string()]));
        assert_eq!(h.candidates("cr").1, vec!["create"]);
        assert_eq!(h.candidates("create k").1, vec!["keyspace"]);
        assert_eq!(h.candidates("use c"), (4, vec!["carts".to_string()]));
        assert_eq!(h.candidates("use ").1, vec!["carts", "default"]);
        assert_eq!(h.candidates("tracing o").1, vec!["off", "on"]);
        assert_eq!(h.candidates("get d").1, vec!["doc"]);
        assert_eq!(h.candidates("get doc ").1, vec!["r="]);
        assert_eq!(
            h.candidates("put doc v ").1,
            vec!["actor=", "context=", "if-context=", "ts=", "w="]
        );
        assert_eq!(
            h.candidates("put doc v w=2 actor=eu ts=1 ").1,
            vec!["context=", "if-context="]
        );
        assert_eq!(
            h.candidates("put doc v context="),
            (18, vec!["gaJuMQI".to_string()])
        );
        assert_eq!(h.candidates("get doc r=q").1, vec!["quorum"]);
        assert_eq!(
            h.candidates("create keyspace x ").1,
            vec![
                "actor_priority=",
                "max_siblings=",
                "n=",
                "policy=",
                "r=",
                "read_repair=",
                "readers=",
                "w=",
                "writers="
            ]
        );
        assert_eq!(h.candidates("help cr").1, vec!["create keyspace"]);
        assert_eq!(h.candidates("get a; cons").1, vec!["consistency"]);
        assert!(h.candidates("frob ").1.is_empty());
    }

    /// Goal: the new commands complete — scan offers partitions then its options, batch
    /// offers `KEY=` for every item and w=, put's if-context= offers the remembered
    /// context, actor= the keyspaces' actors, and create keyspace's policy and read_repair
    /// their values.
    #[test]
    fn completes_scan_batch_and_write_options() {
        let h = helper();
        assert_eq!(h.candidates("sc").1, vec!["scan"]);
        assert_eq!(h.candidates("ne").1, vec!["next"]);
        assert_eq!(h.candidates("act").1, vec!["actor"]);
        assert_eq!(h.candidates("actor ").1, vec!["none"]);
        assert_eq!(h.candidates("scan p").1, vec!["post1"]);
        assert_eq!(
            h.candidates("scan post1 ").1,
            vec!["after=", "from=", "limit=", "r=", "to="]
        );
        assert_eq!(h.candidates("batch p").1, vec!["post1/c1="]);
        assert_eq!(
            h.candidates("batch post1=a ").1,
            vec!["doc=", "post1/c1=", "w="]
        );
        assert_eq!(
            h.candidates("put doc v if-context="),
            (21, vec!["gaJuMQI".to_string()])
        );
        assert_eq!(h.candidates("put doc v actor=").1, vec!["eu", "us"]);
        assert_eq!(
            h.candidates("create keyspace m policy=lww").1,
            vec!["lww-actor", "lww-client", "lww-timestamp"]
        );
        assert_eq!(
            h.candidates("create keyspace m read_repair=").1,
            vec!["async", "blocking", "off"]
        );
        assert!(h.candidates("put \"unterminated ").1.is_empty());
    }

    /// Goal: the CRDT commands complete: names, keys, options once the required
    /// arguments are in (incr's count is optional; members repeat), a remembered context
    /// after srem's context=, and the CRDT policies of create keyspace.
    #[test]
    fn completes_crdt_commands() {
        let h = helper();
        assert_eq!(h.candidates("inc").1, vec!["incr"]);
        assert_eq!(h.candidates("hs").1, vec!["hsadd", "hset", "hsrem"]);
        assert_eq!(h.candidates("incr d").1, vec!["doc"]);
        assert_eq!(h.candidates("incr doc ").1, vec!["w="]);
        assert_eq!(h.candidates("sadd doc ").1, Vec::<String>::new());
        assert_eq!(h.candidates("srem doc a b ").1, vec!["context=", "w="]);
        assert_eq!(
            h.candidates("srem doc a context="),
            (19, vec!["gaJuMQI".to_string()])
        );
        assert_eq!(h.candidates("hdel doc f ").1, vec!["context=", "w="]);
        assert_eq!(h.candidates("hset doc f v ").1, vec!["w="]);
        assert_eq!(h.candidates("help hi").1, vec!["hincr"]);
        assert_eq!(
            h.candidates("create keyspace m policy=").1,
            vec![
                "counter",
                "lww-actor",
                "lww-client",
                "lww-timestamp",
                "map",
                "register",
                "set",
                "siblings"
            ]
        );
    }
}
