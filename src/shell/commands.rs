//! The catalogue of shell commands: names, usage lines, help text, options and what each
//! positional argument is.
//!
//! One table serves the parser (usage in error messages, which options a command takes),
//! `help` and tab completion, so the three cannot disagree about what the shell accepts.

/// What a positional argument is, so completion can offer the right candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A key: `partition` or `partition/sort`.
    Key,
    /// A value (free text).
    Value,
    /// An existing keyspace name.
    Keyspace,
    /// A new name (nothing to complete).
    Name,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A command name (for `help`).
    Command,
}

/// One command of the shell.
#[derive(Debug)]
pub struct CommandSpec {
    /// The words that name it (`create keyspace` is two).
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// Usage line.
    pub usage: &'static str,
    /// One line for the `help` list.
    pub summary: &'static str,
    /// The longer text of `help COMMAND`.
    pub details: &'static str,
    /// Positional arguments, in order.
    pub args: &'static [Arg],
    /// `name=` options it takes.
    pub options: &'static [&'static str],
}

/// Consistency level words accepted wherever a quorum number is.
pub const LEVELS: &[&str] = &["one", "quorum", "all"];

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "get",
        aliases: &[],
        usage: "get KEY [r=LEVEL]",
        summary: "read a key: every sibling with its id, and the causal context",
        details: "Reads KEY from R replicas (the session's consistency, or r= for this request).\n\
                  Prints every sibling (concurrent version) with its id, `node:counter` — the\n\
                  replica event that wrote it — and the causal context of the read. The shell\n\
                  remembers that context, so `resolve KEY VALUE` can replace exactly what\n\
                  this read saw.\n\n\
                  Examples:\n  get user:1\n  get orders/2024-06-01 r=3",
        args: &[Arg::Key],
        options: &["r"],
    },
    CommandSpec {
        name: "put",
        aliases: &["set"],
        usage: "put KEY VALUE [w=LEVEL] [context=C]",
        summary: "write a value (blind unless context= is given)",
        details: "Writes VALUE under KEY and waits for W acknowledgements.\n\
                  Without context= the write is BLIND: it replaces nothing, so if the key\n\
                  already has a value the two become siblings (concurrent versions).\n\
                  With context=C (from a read) it replaces exactly the versions that read saw.\n\
                  `resolve KEY VALUE` is put with the context of your last `get KEY`.\n\
                  Quote values with spaces: put greeting \"hello world\" (escapes: \\\" \\\\ \\n\n\
                  \\t \\r \\0 \\xHH). A quoted word is never taken as an option.\n\n\
                  Examples:\n  put user:1 alice\n  put doc \"first draft\" w=3\n  \
                  put doc v2 context=gaJuMQI",
        args: &[Arg::Key, Arg::Value],
        options: &["w", "context"],
    },
    CommandSpec {
        name: "delete",
        aliases: &["del"],
        usage: "delete KEY [w=LEVEL] [context=C]",
        summary: "delete a key (writes a tombstone; blind unless context= is given)",
        details: "Writes a tombstone for KEY. Like put, a delete without context= is blind:\n\
                  it becomes a sibling of the existing values instead of removing them.\n\
                  Read first, then delete with the context (or `get KEY` then\n\
                  `delete KEY context=...`) to remove what you saw.\n\n\
                  Examples:\n  delete user:1 context=gaJuMQE",
        args: &[Arg::Key],
        options: &["w", "context"],
    },
    CommandSpec {
        name: "resolve",
        aliases: &[],
        usage: "resolve KEY VALUE [w=LEVEL]",
        summary: "write VALUE with the context of your last `get KEY` (merges siblings)",
        details: "Writes VALUE with the causal context remembered from the last `get KEY` in\n\
                  this session, so it replaces every sibling that read returned: this is how\n\
                  you merge siblings by hand. Fails if KEY has not been read in this session.\n\
                  Siblings written after that read survive (they are still concurrent).\n\n\
                  Example:\n  get doc\n  resolve doc \"draft a+b\"",
        args: &[Arg::Key, Arg::Value],
        options: &["w"],
    },
    CommandSpec {
        name: "consistency",
        aliases: &[],
        usage: "consistency [LEVEL | default | r=LEVEL w=LEVEL]",
        summary: "show or set the session's default R and W",
        details: "Without arguments shows the session's read and write quorums. LEVEL is a\n\
                  number (1..N) or one, quorum (N/2+1), all (N), resolved against the\n\
                  current keyspace's N at each request. `consistency quorum` sets both;\n\
                  `consistency default` goes back to the keyspace's own r and w.\n\
                  A request's own r=/w= overrides the session setting.\n\n\
                  Examples:\n  consistency\n  consistency r=1 w=3\n  consistency all\n  \
                  consistency default",
        args: &[Arg::Choice(&["default", "one", "quorum", "all"])],
        options: &["r", "w"],
    },
    CommandSpec {
        name: "use",
        aliases: &[],
        usage: "use KEYSPACE",
        summary: "switch the current keyspace",
        details: "Makes KEYSPACE the one get/put/delete/resolve/replicas work in; it must\n\
                  exist. The prompt shows the current keyspace.\n\nExample:\n  use sessions",
        args: &[Arg::Keyspace],
        options: &[],
    },
    CommandSpec {
        name: "keyspaces",
        aliases: &[],
        usage: "keyspaces",
        summary: "list keyspaces with their n, r, w and sibling cap",
        details: "Lists the keyspaces the contacted node knows; `*` marks the current one.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "create keyspace",
        aliases: &[],
        usage: "create keyspace NAME n=N [r=R] [w=W] [max_siblings=M]",
        summary: "create a keyspace on every node",
        details: "Creates keyspace NAME with N replicas per key (default 3). R and W default\n\
                  to a majority of N; max_siblings (default 32) caps concurrent versions\n\
                  per key. Names use [A-Za-z0-9_-]. Prints which nodes stored the\n\
                  definition (the others learn it from the first request that names it).\n\n\
                  Example:\n  create keyspace carts n=3 w=2",
        args: &[Arg::Name],
        options: &["n", "r", "w", "max_siblings"],
    },
    CommandSpec {
        name: "replicas",
        aliases: &[],
        usage: "replicas KEY",
        summary: "show the preference list (the N replicas) of a key",
        details: "Shows the nodes that hold KEY in the current keyspace, in preference-list\n\
                  order (placement uses the partition part only), with each node's state as\n\
                  the contacted node sees it.\n\nExample:\n  replicas user:1",
        args: &[Arg::Key],
        options: &[],
    },
    CommandSpec {
        name: "status",
        aliases: &[],
        usage: "status",
        summary: "nodes, addresses, up/down as the contacted node sees them, ownership",
        details: "Shows every member with its address, its state as the contacted node last\n\
                  saw it (up, down, or unknown if it has not talked to it yet) and its share\n\
                  of the ring. Also shows which node the shell is talking to: when that node\n\
                  dies the shell moves to the next contact point.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "ring",
        aliases: &[],
        usage: "ring",
        summary: "ring ownership per node and virtual nodes",
        details: "Rebuilds the consistent-hash ring client-side from the member names (the\n\
                  same hash every node uses) and shows each node's virtual-node count and\n\
                  the share of the ring it is primary replica for.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "tracing",
        aliases: &[],
        usage: "tracing [on|off]",
        summary: "print the coordinator's timeline of each request",
        details: "With tracing on, every get/put/delete/resolve asks the coordinator for its\n\
                  timeline and prints it after the result: which replicas were contacted,\n\
                  each reply or failure with its latency in µs, and whether read repair was\n\
                  sent and to whom. Without an argument shows the setting.",
        args: &[Arg::Choice(&["on", "off"])],
        options: &[],
    },
    CommandSpec {
        name: "format",
        aliases: &[],
        usage: "format [table|json]",
        summary: "output as tables (default) or one JSON object per command",
        details: "table prints aligned tables for people; json prints one JSON object per\n\
                  command result on one line (errors too, with \"ok\": false), for scripts.\n\
                  Same as starting the shell with --output json.",
        args: &[Arg::Choice(&["table", "json"])],
        options: &[],
    },
    CommandSpec {
        name: "help",
        aliases: &["?"],
        usage: "help [COMMAND]",
        summary: "list commands, or explain one",
        details: "help alone lists every command; help COMMAND shows its usage, what it does\n\
                  and examples.",
        args: &[Arg::Command],
        options: &[],
    },
    CommandSpec {
        name: "exit",
        aliases: &["quit"],
        usage: "exit",
        summary: "leave the shell (Ctrl-D does too)",
        details: "Leaves the shell. In a script, stops running it.",
        args: &[],
        options: &[],
    },
];

/// The command named by `words` (its first one or two words), and how many words the
/// name took. Case-insensitive.
pub fn lookup(words: &[&str]) -> Option<(&'static CommandSpec, usize)> {
    let first = words.first()?.to_ascii_lowercase();
    COMMANDS.iter().find_map(|spec| {
        let mut parts = spec.name.split(' ');
        let head = parts.next()?;
        if head != first && !spec.aliases.contains(&first.as_str()) {
            return None;
        }
        match parts.next() {
            None => Some((spec, 1)),
            Some(second) => {
                let got = words.get(1)?.to_ascii_lowercase();
                (got == second).then_some((spec, 2))
            }
        }
    })
}

/// The spec for a help topic (`create` finds `create keyspace`).
pub fn topic(name: &str) -> Option<&'static CommandSpec> {
    let words: Vec<&str> = name.split_whitespace().collect();
    lookup(&words).map(|(s, _)| s).or_else(|| {
        let first = words.first()?.to_ascii_lowercase();
        COMMANDS
            .iter()
            .find(|s| s.name.split(' ').next() == Some(first.as_str()))
    })
}

/// `help` with no argument: every command with its summary.
pub fn help_overview() -> String {
    let width = COMMANDS.iter().map(|c| c.usage.len()).max().unwrap_or(0);
    let mut out = String::from("Commands (case-insensitive; `help COMMAND` for details):\n");
    for c in COMMANDS {
        out.push_str(&format!("  {:<width$}  {}\n", c.usage, c.summary));
    }
    out.push_str(
        "\nLEVEL is a number of replicas, or one, quorum (N/2+1) or all (N).\n\
         Keys are `partition` or `partition/sort`. Quote values with spaces: \"a b\".\n\
         Writes without context= are blind and become siblings of existing values.\n\
         Several commands on one line: separate them with `;`. `#` starts a comment.\n\
         Ctrl-C cancels the line (or the running request), Ctrl-D exits.",
    );
    out
}

/// `help COMMAND`.
pub fn help_for(spec: &CommandSpec) -> String {
    let mut out = format!("usage: {}\n\n{}\n", spec.usage, spec.details);
    if !spec.aliases.is_empty() {
        out.push_str(&format!("\naliases: {}\n", spec.aliases.join(", ")));
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: one- and two-word names, aliases and case are all found; a half name is not.
    #[test]
    fn lookup_names() {
        assert_eq!(
            lookup(&["GET", "k"]).map(|(s, n)| (s.name, n)),
            Some(("get", 1))
        );
        assert_eq!(
            lookup(&["create", "KEYSPACE", "x"]).map(|(s, n)| (s.name, n)),
            Some(("create keyspace", 2))
        );
        assert!(lookup(&["create", "table"]).is_none());
        assert_eq!(lookup(&["quit"]).map(|(s, _)| s.name), Some("exit"));
        assert!(lookup(&["frobnicate"]).is_none());
        assert_eq!(topic("create").map(|s| s.name), Some("create keyspace"));
    }

    /// Goal: every command shows up in the overview, so help cannot silently miss one.
    #[test]
    fn overview_lists_everything() {
        let text = help_overview();
        for c in COMMANDS {
            assert!(text.contains(c.usage), "{} missing", c.name);
        }
    }
}
