//! Simulated clients and what they record: Jepsen histories of four workloads, judged by
//! the `jepsen-like` checkers in process.
//!
//! - `siblings` (keyspace `sib`, policy siblings): reads, and writes of unique values —
//!   blind, or with the causal context of the client's last read of the key (recording
//!   the values that read saw as the write's `covered`). Judged by the sibling-register
//!   checker: no acknowledged write lost unless a write covered it, no covered value back.
//! - `set` (keyspace `set`, CRDT set): adds of unique elements and reads; Jepsen's set
//!   checker: every acknowledged add in the final read.
//! - `counter` (keyspace `ctr`, CRDT counter): increments and reads; Jepsen's counter
//!   checker: the final value within [acknowledged sum, attempted sum].
//! - `register` (keyspace `reg`, lww-timestamp): reads and writes per key, checked for
//!   linearizability. An eventually consistent keyspace is not linearizable under faults
//!   (that is the point of the matrix in docs/CONSISTENCY.md), so its verdict is reported,
//!   not judged.
//!
//! A client is one Jepsen process at a time: after an indeterminate operation (`:info`)
//! it continues as a new process, as Jepsen's clients do.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jepsen_like::{Function, OpType, Recorder, Value};

use crate::crdt::{CrdtOp, CrdtValue};
use crate::key::Key;
use crate::keyspace::{ConflictPolicy, KeyspaceDef};
use crate::proto::{
    ClientRequest, ClientResponse, ErrorKind, GetRequest, PutRequest, UpdateRequest,
};

/// Keys per register-like workload (few, so clients contend).
pub const KEYS: usize = 3;

/// Keys of the set workload (each its own history: Jepsen's set checker judges one set).
pub const SET_KEYS: usize = 16;

/// A workload the simulated clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// Sibling-register (keyspace `sib`).
    Siblings,
    /// CRDT set (keyspace `set`).
    Set,
    /// CRDT counter (keyspace `ctr`).
    Counter,
    /// Last-write-wins register (keyspace `reg`), reported only.
    Register,
}

/// Every workload.
pub const ALL: [Workload; 4] = [
    Workload::Siblings,
    Workload::Set,
    Workload::Counter,
    Workload::Register,
];

impl Workload {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Siblings => "siblings",
            Workload::Set => "set",
            Workload::Counter => "counter",
            Workload::Register => "register",
        }
    }

    /// Its keyspace's name.
    pub fn keyspace(self) -> &'static str {
        match self {
            Workload::Siblings => "sib",
            Workload::Set => "set",
            Workload::Counter => "ctr",
            Workload::Register => "reg",
        }
    }

    fn policy(self) -> ConflictPolicy {
        match self {
            Workload::Siblings => ConflictPolicy::Siblings,
            Workload::Set => ConflictPolicy::Set,
            Workload::Counter => ConflictPolicy::Counter,
            Workload::Register => ConflictPolicy::LwwTimestamp,
        }
    }

    /// The keyspace definition for a cluster of `nodes` (N = min(3, nodes), majority
    /// quorums).
    pub fn keyspace_def(self, nodes: usize) -> KeyspaceDef {
        let n = nodes.min(3) as u8;
        let q = n / 2 + 1;
        let mut def = KeyspaceDef::new(self.keyspace(), n, q, q);
        def.policy = self.policy();
        def
    }

    /// The keys it touches.
    pub fn keys(self) -> Vec<String> {
        match self {
            Workload::Siblings => (0..KEYS).map(|i| format!("s{i}")).collect(),
            Workload::Register => (0..KEYS).map(|i| format!("r{i}")).collect(),
            // Many small sets rather than one big one: a set's every replication carries
            // the whole set, so one set of every add would make a run quadratic.
            Workload::Set => (0..SET_KEYS).map(|i| format!("set{i}")).collect(),
            Workload::Counter => vec!["ctr".into()],
        }
    }

    /// The Jepsen model that judges it.
    pub fn model(self) -> jepsen_like::ModelKind {
        match self {
            Workload::Siblings => jepsen_like::ModelKind::SiblingRegister,
            Workload::Set => jepsen_like::ModelKind::Set,
            Workload::Counter => jepsen_like::ModelKind::Counter,
            Workload::Register => jepsen_like::ModelKind::MultiRegister,
        }
    }

    /// Whether its verdict decides the run (the register's is reported only).
    pub fn judged(self) -> bool {
        self != Workload::Register
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A workload name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workload {0:?}: expected all or a comma-separated list of siblings, set, counter, register")]
pub struct UnknownWorkload(pub String);

impl FromStr for Workload {
    type Err = UnknownWorkload;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| UnknownWorkload(s.to_string()))
    }
}

/// Parse `all` or a comma-separated list of workloads.
pub fn parse_workloads(text: &str) -> Result<Vec<Workload>, UnknownWorkload> {
    if text.trim() == "all" {
        return Ok(ALL.to_vec());
    }
    let mut v = text
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<Vec<Workload>, _>>()?;
    v.sort();
    v.dedup();
    if v.is_empty() {
        return Err(UnknownWorkload(text.to_string()));
    }
    Ok(v)
}

/// What a client call to a coordinator came to.
pub enum Outcome {
    /// The coordinator answered.
    Answer(ClientResponse),
    /// The node was down: the request was certainly not executed.
    Refused,
    /// No answer (timeout, or the coordinator crashed mid-way): it may have taken effect.
    Lost,
}

/// The operation a client does next, and how its result is recorded.
pub struct Planned {
    /// Which workload's history it goes to.
    pub workload: Workload,
    /// Jepsen function.
    pub f: Function,
    /// The invocation's value.
    pub value: Value,
    /// The request.
    pub request: ClientRequest,
    /// For sibling writes: the key and value written.
    pub key: String,
}

fn key(k: &str) -> Key {
    Key::simple(k.as_bytes().to_vec())
}

fn get(workload: Workload, k: &str, r: Option<u8>) -> ClientRequest {
    ClientRequest::Get(GetRequest {
        keyspace: workload.keyspace().into(),
        key: key(k),
        r,
        trace: false,
        pr: None,
    })
}

fn put(workload: Workload, k: &str, value: Vec<u8>, context: String) -> ClientRequest {
    ClientRequest::Put(PutRequest {
        keyspace: workload.keyspace().into(),
        key: key(k),
        value: Some(value),
        context,
        w: None,
        trace: false,
        if_context: false,
        timestamp: None,
        actor: None,
        pw: None,
    })
}

/// A client's memory between operations: the last read of each sibling key (its values
/// and causal context).
#[derive(Default)]
pub struct ClientState {
    last_read: BTreeMap<String, (Vec<String>, String)>,
}

/// Plan the next operation of `workload`; `unique` is a run-wide unique number and
/// `choice` a random draw.
pub fn plan(
    workload: Workload,
    state: &ClientState,
    unique: u64,
    client: usize,
    choice: u64,
) -> Planned {
    let keys = workload.keys();
    let k = keys[(choice % keys.len() as u64) as usize].clone();
    // Bit 8 of the draw decides read or write (callers may clear it to force a write).
    let write = (choice >> 8).is_multiple_of(2);
    match workload {
        Workload::Siblings if write => {
            let v = format!("c{client}-{unique}");
            // Three writes in four carry the context of the client's last read of the key.
            let (covered, context) = match state.last_read.get(&k) {
                Some((values, ctx)) if !(choice >> 16).is_multiple_of(4) => {
                    (values.clone(), ctx.clone())
                }
                _ => (Vec::new(), String::new()),
            };
            Planned {
                workload,
                f: Function::Write,
                value: Value::Vector(vec![
                    Value::Str(k.clone()),
                    Value::Str(v.clone()),
                    Value::Vector(covered.into_iter().map(Value::Str).collect()),
                ]),
                request: put(workload, &k, v.into_bytes(), context),
                key: k,
            }
        }
        Workload::Register if write => Planned {
            workload,
            f: Function::Write,
            value: Value::Vector(vec![Value::Str(k.clone()), Value::Int(unique as i64)]),
            request: put(workload, &k, unique.to_string().into_bytes(), String::new()),
            key: k,
        },
        Workload::Set if write => Planned {
            workload,
            f: Function::Add,
            value: Value::Int(unique as i64),
            request: ClientRequest::Update(UpdateRequest {
                keyspace: workload.keyspace().into(),
                key: key(&k),
                op: CrdtOp::SetAdd(vec![serde_bytes::ByteBuf::from(
                    unique.to_string().into_bytes(),
                )]),
                context: String::new(),
                w: None,
                trace: false,
            }),
            key: k,
        },
        Workload::Counter if write => {
            let delta = 1 + (choice >> 24) % 5;
            Planned {
                workload,
                f: Function::Add,
                value: Value::Int(delta as i64),
                request: ClientRequest::Update(UpdateRequest {
                    keyspace: workload.keyspace().into(),
                    key: key(&k),
                    op: CrdtOp::CounterAdd(delta as i64),
                    context: String::new(),
                    w: None,
                    trace: false,
                }),
                key: k,
            }
        }
        _ => read_op(workload, &k, Function::Read, None),
    }
}

/// A read of `k` (a final read asks every replica: `r` = N).
pub fn read_op(workload: Workload, k: &str, f: Function, r: Option<u8>) -> Planned {
    let value = match workload {
        Workload::Siblings | Workload::Register => {
            Value::Vector(vec![Value::Str(k.to_string()), Value::Nil])
        }
        Workload::Set | Workload::Counter => Value::Nil,
    };
    Planned {
        workload,
        f,
        value,
        request: get(workload, k, r),
        key: k.to_string(),
    }
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How an operation completed, and with what value; updates the client's memory.
pub fn complete(p: &Planned, outcome: Outcome, state: &mut ClientState) -> (OpType, Value) {
    let is_read = matches!(p.f, Function::Read | Function::FinalRead);
    let resp = match outcome {
        Outcome::Answer(r) => r,
        Outcome::Refused => return (OpType::Fail, p.value.clone()),
        // A read that got no answer changed nothing: it failed. A write may have happened.
        Outcome::Lost if is_read => return (OpType::Fail, p.value.clone()),
        Outcome::Lost => return (OpType::Info, p.value.clone()),
    };
    match resp {
        ClientResponse::Get(g) if is_read => {
            let value = match p.workload {
                Workload::Siblings => {
                    let mut values: Vec<String> = g.values.iter().map(|s| utf8(&s.value)).collect();
                    values.sort();
                    state
                        .last_read
                        .insert(p.key.clone(), (values.clone(), g.context.clone()));
                    Value::Vector(vec![
                        Value::Str(p.key.clone()),
                        Value::Vector(values.into_iter().map(Value::Str).collect()),
                    ])
                }
                Workload::Register => {
                    // Last-write-wins keeps one value; read the newest if there were more.
                    let v = g
                        .values
                        .iter()
                        .max_by_key(|s| s.written_at_ms)
                        .and_then(|s| utf8(&s.value).parse::<i64>().ok())
                        .map_or(Value::Nil, Value::Int);
                    Value::Vector(vec![Value::Str(p.key.clone()), v])
                }
                Workload::Set => match g.crdt {
                    Some(CrdtValue::Set(members)) => {
                        let mut v: Vec<i64> = members
                            .iter()
                            .filter_map(|m| utf8(m).parse().ok())
                            .collect();
                        v.sort_unstable();
                        Value::Vector(v.into_iter().map(Value::Int).collect())
                    }
                    _ => Value::Vector(Vec::new()),
                },
                Workload::Counter => match g.crdt {
                    Some(CrdtValue::Counter(n)) => Value::Int(n),
                    _ => Value::Int(0),
                },
            };
            (OpType::Ok, value)
        }
        ClientResponse::Put(_) | ClientResponse::Update(_) if !is_read => {
            (OpType::Ok, p.value.clone())
        }
        ClientResponse::Error(e) if !is_read => match e.kind {
            // Some replicas may hold the write: indeterminate.
            ErrorKind::QuorumNotReached { .. } | ErrorKind::Internal => {
                (OpType::Info, p.value.clone())
            }
            _ => (OpType::Fail, p.value.clone()),
        },
        _ => (OpType::Fail, p.value.clone()),
    }
}

/// One history per workload (per key for sets, whose checker judges one set).
#[derive(Default)]
pub struct Histories {
    recorders: BTreeMap<(Workload, String), Recorder>,
}

impl Histories {
    /// The recorder of key `key` of `w`.
    pub fn of(&mut self, w: Workload, key: &str) -> &mut Recorder {
        let k = if w == Workload::Set { key } else { "" };
        self.recorders.entry((w, k.to_string())).or_default()
    }

    /// Each workload (and set key) and its recorder.
    pub fn iter(&self) -> impl Iterator<Item = (&(Workload, String), &Recorder)> {
        self.recorders.iter()
    }
}
