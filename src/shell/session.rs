//! A shell session: what a user builds up while typing (current keyspace, default R and W,
//! tracing, output format, the causal context of every key read) and the execution of one
//! command against the cluster through [`crate::client::Client`].
//!
//! Execution returns an [`Outcome`] — plain data — and never prints: `render` decides how
//! it looks, so the table and JSON forms always carry the same facts.

use std::collections::HashMap;
use std::sync::Arc;

use crate::client::{Client, ClientError, RequestOptions};
use crate::config::DEFAULT_VNODES;
use crate::key::Key;
use crate::keyspace::{ConflictPolicy, KeyspaceDef};
use crate::proto::{
    BatchItem, BatchResponse, CrdtOp, ErrorKind, GetResponse, NodeStatus, PutResponse, ScanItem,
    UpdateResponse,
};
use crate::ring::{Ring, RingError};

use super::commands;
use super::parse::{ClusterCommand, Command, Level, ParseError, Setting, Stamp};
use super::render::{self, Format};

/// Why a command failed. The shell prints it and goes on.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The statement did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The cluster refused or could not be reached.
    #[error("{}", describe_client_error(.0))]
    Client(#[from] ClientError),
    /// `resolve` of a key this session has not read.
    #[error("{key} has not been read in this session: `get {key}` first, then resolve it")]
    NotRead {
        /// The key, as shown to the user.
        key: String,
    },
    /// `use` (or a level like quorum) named a keyspace the cluster does not know.
    #[error("unknown keyspace {name:?} (known: {known}); `create keyspace {name} n=3` makes it")]
    UnknownKeyspace {
        /// The name asked for.
        name: String,
        /// The names the contacted node knows.
        known: String,
    },
    /// The ring could not be rebuilt from the member list.
    #[error("cannot compute the ring: {0}")]
    Ring(#[from] RingError),
    /// `help` for something that is not a command.
    #[error("no command {0:?}; `help` lists the commands")]
    NoHelp(String),
    /// `next` with no scan to continue.
    #[error("{0}")]
    NoScan(&'static str),
    /// A CRDT command in a keyspace whose policy it does not belong to.
    #[error(
        "{command} does not apply to keyspace {keyspace} (policy {policy}); {command} needs a \
         {needs} keyspace{hint}"
    )]
    WrongPolicy {
        /// The shell command.
        command: &'static str,
        /// The current keyspace.
        keyspace: String,
        /// Its policy.
        policy: ConflictPolicy,
        /// The policy the command needs.
        needs: ConflictPolicy,
        /// What to use instead.
        hint: String,
    },
}

/// The policy a CRDT operation belongs to.
fn op_policy(op: &CrdtOp) -> ConflictPolicy {
    match op {
        CrdtOp::CounterAdd(_) => ConflictPolicy::Counter,
        CrdtOp::SetAdd(_) | CrdtOp::SetRemove(_) => ConflictPolicy::Set,
        CrdtOp::RegisterWrite(_) => ConflictPolicy::Register,
        CrdtOp::MapUpdate { .. } | CrdtOp::MapRemove { .. } => ConflictPolicy::Map,
    }
}

/// The shell commands that work in a keyspace with `policy`.
fn commands_for(policy: ConflictPolicy) -> &'static str {
    match policy {
        ConflictPolicy::Counter => "incr, decr",
        ConflictPolicy::Set => "sadd, srem",
        ConflictPolicy::Map => "hset, hincr, hsadd, hsrem, hdel",
        ConflictPolicy::Register => "rset",
        _ => "put, delete, resolve, batch",
    }
}

/// Where the context of a CRDT operation came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// None was sent (adds, increments, a register write to a key never read).
    None,
    /// Given with context=.
    Given,
    /// The session's last read of the key.
    LastRead,
    /// The shell read the key first.
    ReadFirst,
}

/// One line per cause, so a failed quorum shows what happened to every replica.
fn describe_client_error(e: &ClientError) -> String {
    match e {
        ClientError::Server {
            kind:
                ErrorKind::QuorumNotReached {
                    needed,
                    got,
                    failures,
                },
            ..
        } => {
            let mut out =
                format!("quorum not reached: needed {needed} replica(s), {got} answered in time");
            for f in failures {
                out.push_str(&format!("\n  {}: {} ({})", f.node, f.kind, f.detail));
            }
            out
        }
        ClientError::Server {
            kind: ErrorKind::UnknownKeyspace,
            message,
        } => format!("{message}; `keyspaces` lists them, `use NAME` switches"),
        ClientError::Server {
            kind: ErrorKind::SiblingLimit,
            message,
        } => format!("{message}; `get` the key and `resolve` it to merge its siblings"),
        ClientError::Server {
            kind: ErrorKind::Conflict,
            message,
        } => format!(
            "conflict: the write was NOT applied: {message}\n  (`get` the key to see what \
             changed, then retry with if-context)"
        ),
        other => other.to_string(),
    }
}

/// Which kind of write a [`Outcome::Written`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `put`.
    Put,
    /// `delete`.
    Delete,
    /// `resolve`.
    Resolve,
    /// `put ... if-context`.
    Conditional,
}

/// A keyspace's policy for people: `lww-actor: eu > us` names the actor order.
pub fn policy_text(def: &KeyspaceDef) -> String {
    if def.policy == ConflictPolicy::LwwActor && !def.actor_priority.is_empty() {
        format!("{}: {}", def.policy, def.actor_priority.join(" > "))
    } else {
        def.policy.to_string()
    }
}

/// What a successful command produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A read.
    Read {
        /// Keyspace read.
        keyspace: String,
        /// The key.
        key: Key,
        /// The R sent (None: the keyspace's).
        r: Option<u8>,
        /// The keyspace's own R, if known: what `None` meant.
        default_r: Option<u8>,
        /// The node that coordinated it.
        coordinator: Option<String>,
        /// The reply.
        response: GetResponse,
    },
    /// A put, delete or resolve.
    Written {
        /// Keyspace written.
        keyspace: String,
        /// The key.
        key: Key,
        /// Which command.
        kind: WriteKind,
        /// Sent without a context.
        blind: bool,
        /// Sibling ids the context covered (resolve only: what the last read returned).
        replaces: Vec<String>,
        /// The W sent (None: the keyspace's).
        w: Option<u8>,
        /// The keyspace's own W, if known: what `None` meant.
        default_w: Option<u8>,
        /// The node that coordinated it.
        coordinator: Option<String>,
        /// Sent as a conditional write (if-context).
        conditional: bool,
        /// Client timestamp and actor sent.
        stamp: Stamp,
        /// The keyspace's policy, if known (to explain a superseded write).
        policy: Option<String>,
        /// The reply.
        response: PutResponse,
    },
    /// A CRDT operation (incr, sadd, hset, rset, ...).
    Updated {
        /// Keyspace written.
        keyspace: String,
        /// The key.
        key: Key,
        /// The shell command.
        command: &'static str,
        /// The operation sent.
        op: CrdtOp,
        /// Where its context came from.
        source: ContextSource,
        /// The context sent.
        sent_context: String,
        /// The W sent (None: the keyspace's).
        w: Option<u8>,
        /// The keyspace's own W, if known.
        default_w: Option<u8>,
        /// The node that coordinated it.
        coordinator: Option<String>,
        /// The reply.
        response: UpdateResponse,
    },
    /// A page of a scan.
    Scanned {
        /// Keyspace read.
        keyspace: String,
        /// The partition.
        partition: Vec<u8>,
        /// The items, in sort order.
        items: Vec<ScanItem>,
        /// The sort key to continue after, if there may be more.
        more_after: Option<Vec<u8>>,
        /// The R sent (None: the keyspace's).
        r: Option<u8>,
        /// The keyspace's own R, if known: what `None` meant.
        default_r: Option<u8>,
        /// The node that coordinated it.
        coordinator: Option<String>,
        /// Coordinator timeline.
        trace: Vec<crate::proto::TraceEvent>,
    },
    /// A batch.
    Batched {
        /// Keyspace written.
        keyspace: String,
        /// The keys, in request order.
        keys: Vec<Key>,
        /// The W sent (None: the keyspace's).
        w: Option<u8>,
        /// The keyspace's own W, if known.
        default_w: Option<u8>,
        /// The node that coordinated it.
        coordinator: Option<String>,
        /// The reply (one id per key).
        response: BatchResponse,
    },
    /// `consistency`, shown or changed.
    Consistency {
        /// Current keyspace.
        keyspace: String,
        /// Session read level (None: keyspace default).
        r: Option<Level>,
        /// Session write level.
        w: Option<Level>,
        /// The keyspace, if known, to show what the levels mean.
        def: Option<KeyspaceDef>,
        /// Whether the command changed it.
        changed: bool,
    },
    /// `use`.
    Used {
        /// The new keyspace.
        keyspace: String,
        /// Its definition, if known.
        def: Option<KeyspaceDef>,
    },
    /// `keyspaces`.
    Keyspaces {
        /// Current keyspace.
        current: String,
        /// Every keyspace the node knows.
        list: Vec<KeyspaceDef>,
    },
    /// `create keyspace`.
    Created {
        /// The definition.
        def: KeyspaceDef,
        /// Nodes that stored it.
        acked: Vec<String>,
        /// Nodes that did not answer.
        missing: Vec<String>,
    },
    /// `drop keyspace`.
    Dropped {
        /// The keyspace.
        name: String,
        /// Nodes that dropped it.
        acked: Vec<String>,
        /// Nodes that did not answer, with why.
        missing: Vec<String>,
    },
    /// `replicas`.
    Replicas {
        /// Keyspace.
        keyspace: String,
        /// The key.
        key: Key,
        /// Preference list with each node's state (if status answered).
        nodes: Vec<(String, Option<String>)>,
    },
    /// `stats`.
    Stats {
        /// The node that answered.
        node: String,
        /// Its histograms.
        latencies: Vec<crate::proto::LatencyStats>,
        /// Read repairs it sent.
        read_repairs: u64,
    },
    /// A `cluster ...` command: its text, and its JSON (`--output json`).
    Cluster {
        /// What the text output shows.
        text: String,
        /// What the JSON output holds.
        json: serde_json::Value,
    },
    /// `status`.
    Status {
        /// The node that answered.
        contacted: String,
        /// Every member.
        nodes: Vec<NodeStatus>,
    },
    /// `ring`.
    Ring {
        /// Virtual nodes per node assumed.
        vnodes: usize,
        /// (node, computed ownership, ownership the node reported).
        rows: Vec<(String, f64, Option<f64>)>,
    },
    /// `tracing` / `format` shown or set.
    Setting {
        /// Which setting.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// `help`.
    Help(String),
    /// `exit`.
    Exit,
}

/// What the session remembers about a key it read.
#[derive(Debug, Clone)]
struct Remembered {
    context: String,
    ids: Vec<String>,
}

/// Where the last scan stopped, so `next` can go on.
#[derive(Debug, Clone)]
struct ScanCursor {
    keyspace: String,
    partition: Vec<u8>,
    from: Vec<u8>,
    to: Option<Vec<u8>>,
    limit: u32,
    r: Option<Level>,
}

/// Page size of `scan` without limit=.
pub const DEFAULT_SCAN_LIMIT: u32 = 20;

/// The session's default R and W.
#[derive(Debug, Clone, Copy, Default)]
struct Consistency {
    r: Option<Level>,
    w: Option<Level>,
}

/// One user's session.
pub struct Session {
    client: Arc<Client>,
    keyspace: String,
    consistency: Consistency,
    tracing: bool,
    format: Format,
    contexts: HashMap<(String, Key), Remembered>,
    keyspaces: Vec<KeyspaceDef>,
    last_contact: Option<String>,
    notices: Vec<String>,
    listed_once: bool,
    scan: Option<ScanCursor>,
    actor: Option<String>,
}

impl Session {
    /// A session on `client`, starting in `keyspace`.
    pub fn new(client: Arc<Client>, keyspace: String, format: Format) -> Self {
        Session {
            client,
            keyspace,
            consistency: Consistency::default(),
            tracing: false,
            format,
            contexts: HashMap::new(),
            keyspaces: Vec::new(),
            last_contact: None,
            notices: Vec::new(),
            listed_once: false,
            scan: None,
            actor: None,
        }
    }

    /// The prompt: shows the current keyspace, and its conflict policy when that is not
    /// the default (siblings) as far as the session knows.
    pub fn prompt(&self) -> String {
        match self.keyspaces.iter().find(|k| k.name == self.keyspace) {
            Some(def) if def.policy != ConflictPolicy::Siblings => {
                format!("quorumkv:{}[{}]> ", self.keyspace, def.policy)
            }
            _ => format!("quorumkv:{}> ", self.keyspace),
        }
    }

    /// The session's default actor, if set.
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// The output format in force.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The current keyspace.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Messages about the session itself (e.g. a failover) since the last call.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Keyspace names last fetched, for completion.
    pub fn keyspace_names(&self) -> Vec<String> {
        self.keyspaces.iter().map(|k| k.name.clone()).collect()
    }

    /// Actor names of every known keyspace's actor priority (and the session's), for
    /// completion.
    pub fn known_actors(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .keyspaces
            .iter()
            .flat_map(|k| k.actor_priority.iter().cloned())
            .chain(self.actor.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Keys read in the current keyspace with their remembered context, for completion.
    pub fn read_keys(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .contexts
            .iter()
            .filter(|((ks, _), _)| *ks == self.keyspace)
            .map(|((_, k), r)| (render::key_text(k), r.context.clone()))
            .collect();
        out.sort();
        out
    }

    /// Fetch the keyspace list (for completion and levels); errors are the caller's to
    /// report or ignore.
    /// `cluster ...`: the same requests and renderings as `quorumkv cluster ...`.
    async fn cluster(&mut self, c: ClusterCommand) -> Result<Outcome, ExecError> {
        use super::render::{cluster_report, plan_text};
        let (text, json) = match c {
            ClusterCommand::Status => {
                let r = self.client.cluster_status().await?;
                (
                    cluster_report(&r),
                    serde_json::json!({"ok": true, "command": "cluster status", "report": r}),
                )
            }
            ClusterCommand::Plan => {
                let p = self.client.cluster_plan().await?;
                (
                    plan_text(&p),
                    serde_json::json!({"ok": true, "command": "cluster plan", "plan": p}),
                )
            }
            ClusterCommand::Commit => {
                let l = self.client.cluster_commit().await?;
                (
                    format!(
                        "layout v{} committed: members {}; data moves in the background (`cluster status` shows progress)",
                        l.version,
                        l.names().join(", ")
                    ),
                    serde_json::json!({"ok": true, "command": "cluster commit", "committed": l}),
                )
            }
            ClusterCommand::Abort => {
                let d = self.client.cluster_abort().await?;
                (
                    format!("dropped {} staged change(s)", d.changes.len()),
                    serde_json::json!({"ok": true, "command": "cluster abort", "dropped": d}),
                )
            }
            ClusterCommand::Stage(change) => {
                let st = self.client.cluster_stage(change).await?;
                let mut text = format!("staged on top of v{}:", st.base);
                for ch in &st.changes {
                    text.push_str(&format!("\n  {ch}"));
                }
                text.push_str(
                    "\n`cluster plan` shows what it would move; `cluster commit` applies it",
                );
                (
                    text,
                    serde_json::json!({"ok": true, "command": "cluster stage", "staged": st}),
                )
            }
        };
        Ok(Outcome::Cluster { text, json })
    }

    pub async fn refresh_keyspaces(&mut self) -> Result<(), ExecError> {
        self.listed_once = true;
        self.keyspaces = self.client.keyspaces().await?;
        Ok(())
    }

    /// The current keyspace's definition if known, listing keyspaces once per session
    /// so reads and writes can say what "keyspace default" R/W means. Only a display aid:
    /// a failure here is ignored (the request itself will report the problem).
    async fn current_def(&mut self) -> Option<KeyspaceDef> {
        // Listed once per session, and again when the keyspace is not in the list (it may
        // have been created since, e.g. by another shell).
        if !self.listed_once || !self.keyspaces.iter().any(|k| k.name == self.keyspace) {
            let _ = self.refresh_keyspaces().await;
        }
        self.keyspaces
            .iter()
            .find(|k| k.name == self.keyspace)
            .cloned()
    }

    /// The definition of `name`, from the cache or the cluster.
    async fn keyspace_def(&mut self, name: &str) -> Result<KeyspaceDef, ExecError> {
        if let Some(d) = self.keyspaces.iter().find(|k| k.name == name) {
            return Ok(d.clone());
        }
        self.refresh_keyspaces().await?;
        self.keyspaces
            .iter()
            .find(|k| k.name == name)
            .cloned()
            .ok_or_else(|| ExecError::UnknownKeyspace {
                name: name.to_string(),
                known: self.keyspace_names().join(", "),
            })
    }

    /// The quorum to send: the request's level, else the session's, resolved against the
    /// current keyspace's N when it is quorum or all.
    async fn quorum(
        &mut self,
        explicit: Option<Level>,
        session: Option<Level>,
    ) -> Result<Option<u8>, ExecError> {
        match explicit.or(session) {
            None => Ok(None),
            Some(l) if !l.needs_n() => Ok(Some(l.resolve(0))),
            Some(l) => {
                let ks = self.keyspace.clone();
                Ok(Some(l.resolve(self.keyspace_def(&ks).await?.n)))
            }
        }
    }

    /// Note a change of contact node (the client failed over).
    async fn track_contact(&mut self) -> Option<String> {
        let now = self.client.connected_to().await;
        if let (Some(before), Some(after)) = (&self.last_contact, &now) {
            if before != after {
                self.notices.push(format!(
                    "lost the connection to {before}; now talking to {after}"
                ));
            }
        }
        if now.is_some() {
            self.last_contact = now.clone();
        }
        now
    }

    /// Run one command.
    pub async fn execute(&mut self, cmd: Command) -> Result<Outcome, ExecError> {
        let result = self.run(cmd).await;
        self.track_contact().await;
        result
    }

    async fn run(&mut self, cmd: Command) -> Result<Outcome, ExecError> {
        match cmd {
            Command::Get { key, r } => {
                let r = self.quorum(r, self.consistency.r).await?;
                let opts = RequestOptions {
                    r,
                    trace: self.tracing,
                    ..Default::default()
                };
                let response = self.client.get(&self.keyspace, key.clone(), &opts).await?;
                self.contexts.insert(
                    (self.keyspace.clone(), key.clone()),
                    Remembered {
                        context: response.context.clone(),
                        ids: response.values.iter().map(|s| s.dot.clone()).collect(),
                    },
                );
                let default_r = match r {
                    Some(_) => None,
                    None => self.current_def().await.map(|d| d.r),
                };
                Ok(Outcome::Read {
                    keyspace: self.keyspace.clone(),
                    key,
                    r,
                    default_r,
                    coordinator: self.track_contact().await,
                    response,
                })
            }
            Command::Put {
                key,
                value,
                w,
                context,
                if_context,
                stamp,
            } => match if_context {
                None => {
                    self.write(key, Some(value), w, context, WriteKind::Put, vec![], stamp)
                        .await
                }
                Some(given) => {
                    let context = if given.is_empty() {
                        self.remembered(&key)?.context
                    } else {
                        given
                    };
                    self.write(
                        key,
                        Some(value),
                        w,
                        Some(context),
                        WriteKind::Conditional,
                        vec![],
                        stamp,
                    )
                    .await
                }
            },
            Command::Delete {
                key,
                w,
                context,
                stamp,
            } => {
                self.write(key, None, w, context, WriteKind::Delete, vec![], stamp)
                    .await
            }
            Command::Scan {
                partition,
                from,
                to,
                limit,
                r,
            } => {
                let cursor = ScanCursor {
                    keyspace: self.keyspace.clone(),
                    partition,
                    from,
                    to,
                    limit: limit.unwrap_or(DEFAULT_SCAN_LIMIT),
                    r,
                };
                self.scan_page(cursor).await
            }
            Command::Next => {
                let cursor = self.scan.clone().ok_or(ExecError::NoScan(
                    "no scan to continue: `scan PARTITION` starts one (and the last one, if \
                     any, is complete)",
                ))?;
                self.scan_page(cursor).await
            }
            Command::Batch { items, w } => {
                let w = self.quorum(w, self.consistency.w).await?;
                let opts = RequestOptions {
                    w,
                    trace: self.tracing,
                    ..Default::default()
                };
                let keys: Vec<Key> = items.iter().map(|(k, _)| k.clone()).collect();
                let batch = items
                    .into_iter()
                    .map(|(key, value)| BatchItem {
                        key,
                        value: Some(value),
                        context: String::new(),
                    })
                    .collect();
                let response = self.client.batch(&self.keyspace, batch, &opts).await?;
                let default_w = match w {
                    Some(_) => None,
                    None => self.current_def().await.map(|d| d.w),
                };
                Ok(Outcome::Batched {
                    keyspace: self.keyspace.clone(),
                    keys,
                    w,
                    default_w,
                    coordinator: self.track_contact().await,
                    response,
                })
            }
            Command::Update {
                command,
                key,
                op,
                w,
                context,
            } => self.update(command, key, op, w, context).await,
            Command::Actor(set) => {
                if let Some(a) = set {
                    self.actor = a;
                }
                Ok(Outcome::Setting {
                    name: "actor",
                    value: self.actor.clone().unwrap_or_else(|| {
                        "none (writes carry no actor unless actor= is given)".into()
                    }),
                })
            }
            Command::Resolve {
                key,
                value,
                w,
                stamp,
            } => {
                let remembered = self
                    .contexts
                    .get(&(self.keyspace.clone(), key.clone()))
                    .cloned()
                    .ok_or_else(|| ExecError::NotRead {
                        key: render::key_text(&key),
                    })?;
                self.write(
                    key,
                    Some(value),
                    w,
                    Some(remembered.context),
                    WriteKind::Resolve,
                    remembered.ids,
                    stamp,
                )
                .await
            }
            Command::Consistency { r, w } => {
                let changed = r != Setting::Keep || w != Setting::Keep;
                let apply = |cur: Option<Level>, s: Setting| match s {
                    Setting::Keep => cur,
                    Setting::Default => None,
                    Setting::Set(l) => Some(l),
                };
                self.consistency = Consistency {
                    r: apply(self.consistency.r, r),
                    w: apply(self.consistency.w, w),
                };
                let ks = self.keyspace.clone();
                // Showing what the levels mean needs the keyspace; its absence is not an
                // error for this command.
                let def = self.keyspace_def(&ks).await.ok();
                Ok(Outcome::Consistency {
                    keyspace: ks,
                    r: self.consistency.r,
                    w: self.consistency.w,
                    def,
                    changed,
                })
            }
            Command::Use(name) => {
                if self.keyspace_def(&name).await.is_err() {
                    // The contacted node may not have learnt a keyspace created through
                    // another node yet; a request naming it makes it ask its peers.
                    self.client
                        .replicas(&name, Key::simple("probe"))
                        .await
                        .map_err(|e| match e {
                            ClientError::Server {
                                kind: ErrorKind::UnknownKeyspace,
                                ..
                            } => ExecError::UnknownKeyspace {
                                name: name.clone(),
                                known: self.keyspace_names().join(", "),
                            },
                            other => other.into(),
                        })?;
                    let _ = self.refresh_keyspaces().await;
                }
                self.keyspace = name.clone();
                let def = self.keyspaces.iter().find(|k| k.name == name).cloned();
                Ok(Outcome::Used {
                    keyspace: name,
                    def,
                })
            }
            Command::Keyspaces => {
                self.refresh_keyspaces().await?;
                Ok(Outcome::Keyspaces {
                    current: self.keyspace.clone(),
                    list: self.keyspaces.clone(),
                })
            }
            Command::CreateKeyspace {
                name,
                n,
                r,
                w,
                max_siblings,
                policy,
                read_repair,
                actor_priority,
                readers,
                writers,
            } => {
                let mut def = KeyspaceDef::new(&name, n, r, w);
                def.max_siblings = max_siblings;
                def.policy = policy;
                def.read_repair = read_repair;
                def.actor_priority = actor_priority;
                def.readers = readers;
                def.writers = writers;
                let (acked, missing) = self.client.create_keyspace(def.clone()).await?;
                let _ = self.refresh_keyspaces().await;
                Ok(Outcome::Created {
                    def,
                    acked,
                    missing,
                })
            }
            Command::DropKeyspace(name) => {
                let (acked, missing) = self.client.drop_keyspace(&name).await?;
                let _ = self.refresh_keyspaces().await;
                Ok(Outcome::Dropped {
                    name,
                    acked,
                    missing,
                })
            }
            Command::Replicas(key) => {
                let list = self.client.replicas(&self.keyspace, key.clone()).await?;
                // The states are a help, not the answer: without them the list stands.
                let states = self.client.status().await.ok().map(|(_, n)| n);
                let nodes = list
                    .into_iter()
                    .map(|name| {
                        let state = states.as_ref().and_then(|s| {
                            s.iter().find(|n| n.name == name).map(|n| n.state.clone())
                        });
                        (name, state)
                    })
                    .collect();
                Ok(Outcome::Replicas {
                    keyspace: self.keyspace.clone(),
                    key,
                    nodes,
                })
            }
            Command::Cluster(c) => self.cluster(c).await,
            Command::Status => {
                let (contacted, nodes) = self.client.status().await?;
                Ok(Outcome::Status { contacted, nodes })
            }
            Command::Stats => {
                let (node, latencies, read_repairs) = self.client.stats().await?;
                Ok(Outcome::Stats {
                    node,
                    latencies,
                    read_repairs,
                })
            }
            Command::Ring => {
                let (_, nodes) = self.client.status().await?;
                let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
                let ring = Ring::new(&names, DEFAULT_VNODES)?;
                let computed = ring.ownership();
                let rows = nodes
                    .iter()
                    .map(|n| {
                        (
                            n.name.clone(),
                            computed.get(&n.name).copied().unwrap_or(0.0),
                            Some(n.ownership),
                        )
                    })
                    .collect();
                Ok(Outcome::Ring {
                    vnodes: ring.vnodes(),
                    rows,
                })
            }
            Command::Tracing(set) => {
                if let Some(on) = set {
                    self.tracing = on;
                }
                Ok(Outcome::Setting {
                    name: "tracing",
                    value: if self.tracing { "on" } else { "off" }.into(),
                })
            }
            Command::Format(set) => {
                if let Some(f) = set {
                    self.format = f;
                }
                Ok(Outcome::Setting {
                    name: "format",
                    value: self.format.name().into(),
                })
            }
            Command::Help(None) => Ok(Outcome::Help(commands::help_overview())),
            Command::Help(Some(topic)) => commands::topic(&topic)
                .map(|spec| Outcome::Help(commands::help_for(spec)))
                .ok_or(ExecError::NoHelp(topic)),
            Command::Exit => Ok(Outcome::Exit),
        }
    }

    /// What the session remembers of its last read of `key` in the current keyspace.
    fn remembered(&self, key: &Key) -> Result<Remembered, ExecError> {
        self.contexts
            .get(&(self.keyspace.clone(), key.clone()))
            .cloned()
            .ok_or_else(|| ExecError::NotRead {
                key: render::key_text(key),
            })
    }

    /// Read one page of a scan, remember each item's context and where to go on.
    async fn scan_page(&mut self, cursor: ScanCursor) -> Result<Outcome, ExecError> {
        if cursor.keyspace != self.keyspace {
            // `next` after `use`: the scan belongs to its own keyspace.
            self.scan = None;
            return Err(ExecError::NoScan(
                "the last scan was in another keyspace: `scan PARTITION` starts a new one",
            ));
        }
        let r = self.quorum(cursor.r, self.consistency.r).await?;
        let opts = RequestOptions {
            r,
            trace: self.tracing,
            ..Default::default()
        };
        let response = self
            .client
            .scan(
                &self.keyspace,
                &cursor.partition,
                &cursor.from,
                cursor.to.as_deref(),
                cursor.limit,
                &opts,
            )
            .await?;
        for item in &response.items {
            let key = Key {
                partition: cursor.partition.clone(),
                sort: item.sort.clone(),
            };
            self.contexts.insert(
                (self.keyspace.clone(), key),
                Remembered {
                    context: item.context.clone(),
                    ids: item.values.iter().map(|s| s.dot.clone()).collect(),
                },
            );
        }
        let more_after = response.next.as_ref().map(|n| {
            let n: &[u8] = n;
            n.strip_suffix(&[0]).unwrap_or(n).to_vec()
        });
        self.scan = response.next.as_ref().map(|n| ScanCursor {
            from: n.to_vec(),
            ..cursor.clone()
        });
        let default_r = match r {
            Some(_) => None,
            None => self.current_def().await.map(|d| d.r),
        };
        Ok(Outcome::Scanned {
            keyspace: self.keyspace.clone(),
            partition: cursor.partition,
            items: response.items,
            more_after,
            r,
            default_r,
            coordinator: self.track_contact().await,
            trace: response.trace,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &mut self,
        key: Key,
        value: Option<Vec<u8>>,
        w: Option<Level>,
        context: Option<String>,
        kind: WriteKind,
        replaces: Vec<String>,
        mut stamp: Stamp,
    ) -> Result<Outcome, ExecError> {
        let w = self.quorum(w, self.consistency.w).await?;
        let blind = context.as_deref().unwrap_or_default().is_empty();
        let def = self.current_def().await;
        // The session's actor goes only to lww-actor keyspaces: the others refuse actors.
        if stamp.actor.is_none()
            && def
                .as_ref()
                .is_some_and(|d| d.policy == ConflictPolicy::LwwActor)
        {
            stamp.actor = self.actor.clone();
        }
        let conditional = kind == WriteKind::Conditional;
        let opts = RequestOptions {
            w,
            context,
            trace: self.tracing,
            if_context: conditional,
            timestamp: stamp.ts,
            actor: stamp.actor.clone(),
            ..Default::default()
        };
        let response = self
            .client
            .put(&self.keyspace, key.clone(), value, &opts)
            .await?;
        let default_w = match w {
            Some(_) => None,
            None => def.as_ref().map(|d| d.w),
        };
        Ok(Outcome::Written {
            keyspace: self.keyspace.clone(),
            key,
            kind,
            blind,
            replaces,
            w,
            default_w,
            coordinator: self.track_contact().await,
            conditional,
            stamp,
            policy: def.map(|d| policy_text(&d)),
            response,
        })
    }

    /// Apply a CRDT operation. Removes (srem, hsrem, hdel) without context= use the
    /// session's last read of the key, else read it first; rset uses the last read if any.
    async fn update(
        &mut self,
        command: &'static str,
        key: Key,
        op: CrdtOp,
        w: Option<Level>,
        context: Option<String>,
    ) -> Result<Outcome, ExecError> {
        let def = self.current_def().await;
        let needs = op_policy(&op);
        if let Some(d) = &def {
            if d.policy != needs {
                return Err(ExecError::WrongPolicy {
                    command,
                    keyspace: d.name.clone(),
                    policy: d.policy,
                    needs,
                    hint: format!("; in {} use {}", d.name, commands_for(d.policy)),
                });
            }
        }
        let w = self.quorum(w, self.consistency.w).await?;
        let removes = matches!(
            op,
            CrdtOp::SetRemove(_)
                | CrdtOp::MapRemove { .. }
                | CrdtOp::MapUpdate {
                    op: crate::proto::FieldOp::SetRemove(_),
                    ..
                }
        );
        let uses_read = removes || matches!(op, CrdtOp::RegisterWrite(_));
        let remembered = self
            .contexts
            .get(&(self.keyspace.clone(), key.clone()))
            .map(|r| r.context.clone());
        let (source, context) = match (context, remembered) {
            (Some(c), _) => (ContextSource::Given, c),
            (None, Some(c)) if uses_read => (ContextSource::LastRead, c),
            (None, None) if removes => {
                let r = self.quorum(None, self.consistency.r).await?;
                let opts = RequestOptions {
                    r,
                    ..Default::default()
                };
                let read = self.client.get(&self.keyspace, key.clone(), &opts).await?;
                self.contexts.insert(
                    (self.keyspace.clone(), key.clone()),
                    Remembered {
                        context: read.context.clone(),
                        ids: Vec::new(),
                    },
                );
                (ContextSource::ReadFirst, read.context)
            }
            _ => (ContextSource::None, String::new()),
        };
        let opts = RequestOptions {
            w,
            context: Some(context.clone()),
            trace: self.tracing,
            ..Default::default()
        };
        let response = self
            .client
            .update(&self.keyspace, key.clone(), op.clone(), &opts)
            .await?;
        let default_w = match w {
            Some(_) => None,
            None => def.map(|d| d.w),
        };
        Ok(Outcome::Updated {
            keyspace: self.keyspace.clone(),
            key,
            command,
            op,
            source,
            sent_context: context,
            w,
            default_w,
            coordinator: self.track_contact().await,
            response,
        })
    }

    /// Render an outcome in the session's format.
    pub fn render(&self, outcome: &Outcome) -> String {
        render::outcome(outcome, self.format)
    }
}
