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
    /// A partition key (the part of a key before `/`).
    Partition,
    /// `KEY=VALUE` items, one or more (batch).
    Items,
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
    /// An optional number, last (`incr KEY [N]`).
    OptNumber,
    /// One or more values, last (set members).
    Members,
    /// A map field name.
    Field,
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
                  this read saw.\n\
                  In a CRDT keyspace it shows the value as its type: a counter's total, a\n\
                  set's members, a map's fields (register | counter | set members, the\n\
                  parts in use), a register's value(s) (several = concurrent values); the\n\
                  context is remembered for srem, hsrem, hdel and rset.\n\n\
                  Examples:\n  get user:1\n  get orders/2024-06-01 r=3",
        args: &[Arg::Key],
        options: &["r"],
    },
    CommandSpec {
        name: "put",
        aliases: &["set"],
        usage: "put KEY VALUE [w=LEVEL] [context=C | if-context[=C]] [ts=N] [actor=NAME]",
        summary: "write a value (blind unless context= is given; if-context: conditional)",
        details: "Writes VALUE under KEY and waits for W acknowledgements.\n\
                  Without context= the write is BLIND: it replaces nothing, so if the key\n\
                  already has a value the two become siblings (concurrent versions).\n\
                  With context=C (from a read) it replaces exactly the versions that read saw.\n\
                  `resolve KEY VALUE` is put with the context of your last `get KEY`.\n\
                  Quote values with spaces: put greeting \"hello world\" (escapes: \\\" \\\\ \\n\n\
                  \\t \\r \\0 \\xHH). A quoted word is never taken as an option.\n\n\
                  if-context=C makes the write CONDITIONAL: the node refuses it with a\n\
                  conflict if KEY changed since the read that returned C. `if-context` alone\n\
                  uses the context of your last read of KEY (get or scan).\n\
                  ts=N is the client timestamp of lww-client keyspaces (the highest wins);\n\
                  actor=NAME the writer of lww-actor keyspaces (its rank in the keyspace's\n\
                  actor_priority wins; `actor NAME` sets a session default). Under a\n\
                  last-write-wins policy a write that loses at once says \"superseded\".\n\n\
                  Examples:\n  put user:1 alice\n  put doc \"first draft\" w=3\n  \
                  put doc v2 context=gaJuMQI\n  get doc\n  put doc v3 if-context\n  \
                  put cfg blue ts=1718454896000000\n  put mods/x 1 actor=eu",
        args: &[Arg::Key, Arg::Value],
        options: &["w", "context", "if-context", "ts", "actor"],
    },
    CommandSpec {
        name: "delete",
        aliases: &["del"],
        usage: "delete KEY [w=LEVEL] [context=C] [ts=N] [actor=NAME]",
        summary: "delete a key (writes a tombstone; blind unless context= is given)",
        details: "Writes a tombstone for KEY. Like put, a delete without context= is blind:\n\
                  it becomes a sibling of the existing values instead of removing them.\n\
                  Read first, then delete with the context (or `get KEY` then\n\
                  `delete KEY context=...`) to remove what you saw. ts= and actor= are as\n\
                  for put (lww-client and lww-actor keyspaces).\n\n\
                  Examples:\n  delete user:1 context=gaJuMQE\n  delete cfg ts=1718454897000000",
        args: &[Arg::Key],
        options: &["w", "context", "ts", "actor"],
    },
    CommandSpec {
        name: "resolve",
        aliases: &[],
        usage: "resolve KEY VALUE [w=LEVEL] [ts=N] [actor=NAME]",
        summary: "write VALUE with the context of your last `get KEY` (merges siblings)",
        details: "Writes VALUE with the causal context remembered from the last `get KEY` in\n\
                  this session (by get, or by scan for an item of a partition), so it\n\
                  replaces every sibling that read returned: this is how you merge siblings\n\
                  by hand. Fails if KEY has not been read in this session.\n\
                  Siblings written after that read survive (they are still concurrent).\n\n\
                  Example:\n  get doc\n  resolve doc \"draft a+b\"",
        args: &[Arg::Key, Arg::Value],
        options: &["w", "ts", "actor"],
    },
    CommandSpec {
        name: "scan",
        aliases: &[],
        usage: "scan PARTITION [from=SORT] [after=SORT] [to=SORT] [limit=N] [r=LEVEL]",
        summary: "list the items of a partition in sort order, a page at a time",
        details: "Reads the items `PARTITION/SORT` of one partition in sort-key order:\n\
                  from= is the first sort key (inclusive), after= starts just after a sort\n\
                  key, to= is the end (exclusive); limit= is the page size (default 20;\n\
                  the node caps it at 1000, and deleted items count towards it). Each item\n\
                  shows its values (sibling ids and values) and its causal context, which\n\
                  the shell remembers, so `resolve P/SORT VALUE` and `put ... if-context`\n\
                  work on scanned items. When there may be more, it prints how to go on:\n\
                  `scan P after=LAST`, or just `next` (also `scan more`). A partition named\n\
                  `more` is scanned with `scan \"more\"`.\n\n\
                  Examples:\n  scan post1\n  scan post1 from=c limit=5\n  next\n  \
                  scan orders after=2024-06-01 to=2024-07",
        args: &[Arg::Partition],
        options: &["from", "after", "to", "limit", "r"],
    },
    CommandSpec {
        name: "next",
        aliases: &[],
        usage: "next",
        summary: "the next page of the last scan (same as `scan more`)",
        details: "Continues the last scan of this session where its page ended, with the\n\
                  same partition, to= and limit=. Fails if no scan has more to show.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "batch",
        aliases: &[],
        usage: "batch KEY=VALUE [KEY=VALUE ...] [w=LEVEL]",
        summary: "write several items of ONE partition atomically",
        details: "Writes every KEY=VALUE in one request, applied atomically on each replica.\n\
                  All keys must share their partition (`post1`, `post1/c1`, `post1/c2`); the\n\
                  node refuses a batch that spans partitions. Items are blind writes (like\n\
                  put without context=). Quote values with spaces: post1=\"hello world\".\n\
                  The key part must be unquoted before the first `=`, or quoted as a whole\n\
                  (\"w\"=x writes key w; a bare w=LEVEL is the write quorum).\n\
                  Batches are refused in lww-client and lww-actor keyspaces (items carry no\n\
                  timestamp or actor).\n\n\
                  Example:\n  batch post1=\"hello world\" post1/c1=first post1/c2=second",
        args: &[Arg::Items],
        options: &["w"],
    },
    CommandSpec {
        name: "incr",
        aliases: &[],
        usage: "incr KEY [N] [w=LEVEL]",
        summary: "counter keyspace: add N (default 1) to a counter",
        details: "Adds N (default 1) to the counter KEY of a `counter` keyspace. Counters are\n\
                  PN-counters: increments made concurrently on both sides of a partition all\n\
                  count once the sides meet again. `get KEY` shows the total.\n\n\
                  Examples:\n  incr hits\n  incr hits 10 w=1",
        args: &[Arg::Key, Arg::OptNumber],
        options: &["w"],
    },
    CommandSpec {
        name: "decr",
        aliases: &[],
        usage: "decr KEY [N] [w=LEVEL]",
        summary: "counter keyspace: subtract N (default 1) from a counter",
        details: "Subtracts N (default 1) from the counter KEY of a `counter` keyspace (a\n\
                  counter may go below zero).\n\n\
                  Examples:\n  decr stock\n  decr stock 3",
        args: &[Arg::Key, Arg::OptNumber],
        options: &["w"],
    },
    CommandSpec {
        name: "sadd",
        aliases: &[],
        usage: "sadd KEY MEMBER [MEMBER ...] [w=LEVEL]",
        summary: "set keyspace: add members to a set",
        details: "Adds every MEMBER to the set KEY of a `set` keyspace (an add-wins set, an\n\
                  ORSWOT: an add concurrent with a remove of the same member survives).\n\n\
                  Examples:\n  sadd tags red green\n  sadd tags \"dark blue\" w=3",
        args: &[Arg::Key, Arg::Members],
        options: &["w"],
    },
    CommandSpec {
        name: "srem",
        aliases: &[],
        usage: "srem KEY MEMBER [MEMBER ...] [w=LEVEL] [context=C]",
        summary: "set keyspace: remove members you have seen from a set",
        details: "Removes every MEMBER from the set KEY, but only the adds a read observed:\n\
                  the context of your last `get KEY` (or scan) in this session, else the\n\
                  shell reads KEY first; context=C uses another read's context. An add made\n\
                  elsewhere that the read did not see survives (add wins). After adding\n\
                  members yourself, `get KEY` again before removing them.\n\n\
                  Examples:\n  get tags\n  srem tags red\n  srem tags green context=gaJuMQI",
        args: &[Arg::Key, Arg::Members],
        options: &["w", "context"],
    },
    CommandSpec {
        name: "hset",
        aliases: &[],
        usage: "hset KEY FIELD VALUE [w=LEVEL]",
        summary: "map keyspace: write a field's register",
        details: "Writes VALUE to the register of FIELD in the map KEY of a `map` keyspace.\n\
                  A field holds a register (hset), a counter (hincr) and a set (hsadd,\n\
                  hsrem), each updated on its own; `get KEY` shows the parts in use.\n\
                  Writes made concurrently through different nodes are all kept as\n\
                  concurrent register values.\n\n\
                  Example:\n  hset user:1 name alice",
        args: &[Arg::Key, Arg::Field, Arg::Value],
        options: &["w"],
    },
    CommandSpec {
        name: "hincr",
        aliases: &[],
        usage: "hincr KEY FIELD N [w=LEVEL]",
        summary: "map keyspace: add N (may be negative) to a field's counter",
        details: "Adds N to the counter of FIELD in the map KEY (negative N subtracts).\n\n\
                  Examples:\n  hincr user:1 logins 1\n  hincr user:1 credits -5",
        args: &[Arg::Key, Arg::Field, Arg::Value],
        options: &["w"],
    },
    CommandSpec {
        name: "hsadd",
        aliases: &[],
        usage: "hsadd KEY FIELD MEMBER [MEMBER ...] [w=LEVEL]",
        summary: "map keyspace: add members to a field's set",
        details: "Adds every MEMBER to the set of FIELD in the map KEY (add wins).\n\n\
                  Example:\n  hsadd user:1 roles admin editor",
        args: &[Arg::Key, Arg::Field, Arg::Members],
        options: &["w"],
    },
    CommandSpec {
        name: "hsrem",
        aliases: &[],
        usage: "hsrem KEY FIELD MEMBER [MEMBER ...] [w=LEVEL] [context=C]",
        summary: "map keyspace: remove members you have seen from a field's set",
        details: "Removes every MEMBER from the set of FIELD in the map KEY, only the adds\n\
                  observed by the context of your last read of KEY (else the shell reads it\n\
                  first; context=C uses another one), like srem.\n\n\
                  Example:\n  get user:1\n  hsrem user:1 roles editor",
        args: &[Arg::Key, Arg::Field, Arg::Members],
        options: &["w", "context"],
    },
    CommandSpec {
        name: "hdel",
        aliases: &[],
        usage: "hdel KEY FIELD [w=LEVEL] [context=C]",
        summary: "map keyspace: remove a field (what your last read saw)",
        details: "Removes FIELD from the map KEY: the edits observed by the context of your\n\
                  last read of KEY (else the shell reads it first; context=C uses another\n\
                  one). Edits made concurrently elsewhere survive.\n\n\
                  Example:\n  get user:1\n  hdel user:1 name",
        args: &[Arg::Key, Arg::Field],
        options: &["w", "context"],
    },
    CommandSpec {
        name: "rset",
        aliases: &[],
        usage: "rset KEY VALUE [w=LEVEL] [context=C]",
        summary: "register keyspace: write a multi-value register",
        details: "Writes VALUE to the register KEY of a `register` keyspace. It replaces the\n\
                  values your last read of KEY in this session saw (context=C: another\n\
                  read's); never read, it replaces what the lead replica holds. Values\n\
                  written concurrently elsewhere survive: `get KEY` then shows several\n\
                  concurrent values, and an rset after that read replaces them all.\n\n\
                  Examples:\n  rset color blue\n  get color\n  rset color green",
        args: &[Arg::Key, Arg::Value],
        options: &["w", "context"],
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
        details: "Makes KEYSPACE the one get/put/delete/resolve/scan/batch/replicas work in;\n\
                  it must exist. The prompt shows the current keyspace (and its conflict\n\
                  policy when it is not siblings).\n\nExample:\n  use sessions",
        args: &[Arg::Keyspace],
        options: &[],
    },
    CommandSpec {
        name: "keyspaces",
        aliases: &[],
        usage: "keyspaces",
        summary: "list keyspaces: n, r, w, sibling cap, policy, read repair",
        details: "Lists the keyspaces the contacted node knows; `*` marks the current one.\n\
                  Shows each one's conflict policy (with the actor priority of lww-actor)\n\
                  and its read repair mode.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "create keyspace",
        aliases: &[],
        usage: "create keyspace NAME n=N [r=R] [w=W] [max_siblings=M] [policy=P] \
                [read_repair=async|blocking|off] [actor_priority=A,B] [readers=C,D] \
                [writers=C,D]",
        summary: "create a keyspace on every node (admin certificate)",
        details: "Creates keyspace NAME with N replicas per key (default 3). R and W default\n\
                  to a majority of N; max_siblings (default 32) caps concurrent versions\n\
                  per key. Names use [A-Za-z0-9_-]. Prints which nodes stored the\n\
                  definition (the others learn it from the first request that names it).\n\
                  policy= settles concurrent writes: siblings (default: keep them all),\n\
                  lww-timestamp (the coordinator's clock wins), lww-actor (the writer ranked\n\
                  highest in actor_priority wins; actor_priority is required, highest\n\
                  first, comma-separated), lww-client (the highest client ts= wins).\n\
                  CRDT policies store a data type instead of values, changed with its own\n\
                  commands (put/delete/batch are refused): counter (incr, decr), set (sadd,\n\
                  srem), map (hset, hincr, hsadd, hsrem, hdel), register (rset).\n\
                  read_repair= is async (default), blocking or off.\n\
                  readers= and writers= grant reads and writes to the named client\n\
                  certificates only (default: every client; `readers=` alone: admins only).\n\
                  Needs an admin certificate.\n\n\
                  Examples:\n  create keyspace carts n=3 w=2\n  \
                  create keyspace mods n=3 policy=lww-actor actor_priority=eu,us\n  \
                  create keyspace cfg policy=lww-client read_repair=blocking\n  \
                  create keyspace hits policy=counter",
        args: &[Arg::Name],
        options: &[
            "n",
            "r",
            "w",
            "max_siblings",
            "policy",
            "read_repair",
            "actor_priority",
            "readers",
            "writers",
        ],
    },
    CommandSpec {
        name: "drop keyspace",
        aliases: &[],
        usage: "drop keyspace NAME",
        summary: "drop a keyspace and delete its data on every node (admin certificate)",
        details: "Removes keyspace NAME from every node it reaches and deletes its data there;\n\
                  a node that is down keeps it until the drop is run again. A keyspace\n\
                  created again under the same name starts empty. Keyspaces defined in\n\
                  node.toml cannot be dropped. Needs an admin certificate.\n\n\
                  Example:\n  drop keyspace carts",
        args: &[Arg::Name],
        options: &[],
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
        summary: "nodes, addresses, up/down as the contacted node sees them, ownership, hints held",
        details: "Shows every member with its address, its state as the contacted node last\n\
                  saw it (up, down, or unknown if it has not talked to it yet) and its share\n\
                  of the ring. Also shows which node the shell is talking to: when that node\n\
                  dies the shell moves to the next contact point.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "stats",
        aliases: &[],
        usage: "stats",
        summary: "the contacted node's latency histograms (like nodetool proxyhistograms)",
        details: "Shows the contacted node's latency percentiles in microseconds: as a\n\
                  coordinator, per client operation (get, put, scan, ...), and as a replica,\n\
                  per request kind (read, write, replicate, scan), since the node started.\n\
                  The same figures are served to Prometheus at the node's /metrics.",
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
        name: "cluster status",
        aliases: &[],
        usage: "cluster status",
        summary: "layout versions: members, acknowledgements, transfers, staged changes",
        details: "Shows the layout versions the contacted node holds (more than one while data\n\
                  moves after a change), each node's part in them, the newest version each\n\
                  node acknowledged and holds all its data for, transfers into the contacted\n\
                  node, and the changes staged on it (docs/OPERATIONS.md, Membership).",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "cluster join",
        aliases: &[],
        usage: "cluster join NAME HOST:PORT [zone=Z]",
        summary: "stage: a running node outside the layout joins (admin certificate)",
        details: "Stages node NAME, listening at HOST:PORT (started outside the layout, e.g. by\n\
                  `quorumkv dev-cluster --add NAME`), as a new member. Nothing moves until\n\
                  `cluster commit`; `cluster plan` shows what would.\n\n\
                  Example:\n  cluster join n4 127.0.0.1:7104",
        args: &[Arg::Name, Arg::Value],
        options: &["zone"],
    },
    CommandSpec {
        name: "cluster leave",
        aliases: &[],
        usage: "cluster leave NAME",
        summary: "stage: a live node hands its data over and leaves (admin certificate)",
        details: "Stages the departure of live node NAME: after `cluster commit` its ranges\n\
                  stream to the other nodes, then it owns nothing and can be stopped.",
        args: &[Arg::Name],
        options: &[],
    },
    CommandSpec {
        name: "cluster remove",
        aliases: &[],
        usage: "cluster remove NAME",
        summary: "stage: drop a dead node; survivors re-replicate its ranges (admin certificate)",
        details: "Stages the removal of dead node NAME: nobody waits for it, and its ranges\n\
                  are re-replicated from the surviving replicas. Stop the node first.",
        args: &[Arg::Name],
        options: &[],
    },
    CommandSpec {
        name: "cluster plan",
        aliases: &[],
        usage: "cluster plan",
        summary: "what the staged changes would move, and the balance after",
        details: "Shows the staged changes, the share of replica slots that move to a new\n\
                  owner, the ring arcs that change owners, an estimate of the bytes to\n\
                  transfer, and each node's share of the replicas before and after.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "cluster commit",
        aliases: &[],
        usage: "cluster commit",
        summary: "apply the staged changes as the next layout version (admin certificate)",
        details: "Makes the staged changes the next layout version once a majority of the\n\
                  current members accept it; of two commits staged on the same version only\n\
                  one can take effect. Data then moves in the background.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "cluster abort",
        aliases: &[],
        usage: "cluster abort",
        summary: "drop the staged layout changes (admin certificate)",
        details: "Drops every change staged on the contacted node.",
        args: &[],
        options: &[],
    },
    CommandSpec {
        name: "actor",
        aliases: &[],
        usage: "actor [NAME | none]",
        summary: "show or set the session's default actor for lww-actor writes",
        details: "With a default actor set, every put/delete/resolve in an lww-actor\n\
                  keyspace is sent with actor=NAME unless the command gives its own actor=.\n\
                  Keyspaces with other policies refuse actors, so the default is not sent\n\
                  to them. `actor none` clears it; `actor` alone shows it.\n\n\
                  Examples:\n  actor eu\n  actor none",
        args: &[Arg::Choice(&["none"])],
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
    // Long usage lines get their summary on the next line, so one long command does
    // not push every summary off the screen.
    const WIDTH: usize = 44;
    let width = COMMANDS
        .iter()
        .map(|c| c.usage.len())
        .filter(|&l| l <= WIDTH)
        .max()
        .unwrap_or(0);
    let mut out = String::from("Commands (case-insensitive; `help COMMAND` for details):\n");
    for c in COMMANDS {
        if c.usage.len() > width {
            out.push_str(&format!("  {}\n  {:<width$}  {}\n", c.usage, "", c.summary));
        } else {
            out.push_str(&format!("  {:<width$}  {}\n", c.usage, c.summary));
        }
    }
    out.push_str(
        "\nLEVEL is a number of replicas, or one, quorum (N/2+1) or all (N).\n\
         Keys are `partition` or `partition/sort`. Quote values with spaces: \"a b\".\n\
         Writes without context= are blind and become siblings of existing values.\n\
         `scan P` pages through a partition; `next` continues it.\n\
         CRDT keyspaces: incr/decr (counter), sadd/srem (set), hset/hincr/hsadd/hsrem/hdel\n\
         (map), rset (register); `get` shows their value.\n\
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
