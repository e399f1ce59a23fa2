//! The harness's client: turns the abstract operations of a `jepsen-like` workload (a
//! register read, a set add, a sibling write with the context of the last read...) into
//! quorumkv requests, and their replies into the completion the history records.
//!
//! How a reply becomes `:ok`, `:fail` or `:info` follows Jepsen: `:fail` only when the
//! operation certainly did not take effect (the node was unreachable, the request was
//! refused before anything was written, a conditional write's check failed), `:info`
//! whenever a write may have reached some replica (a timeout, a broken connection, a write
//! quorum not reached: Dynamo keeps such partial writes, and read repair may spread them
//! later). A read that did not complete changed nothing, so it fails.
//!
//! One client per harness worker, bound to one node (its only contact point), so the
//! history names the coordinator of every operation, as Jepsen binds clients to nodes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use jepsen_like::harness::{Completion, Invocation};
use jepsen_like::{Function, OpType, Value};
use serde_bytes::ByteBuf;

use crate::client::{Client, ClientError};
use crate::clock::Clock;
use crate::crdt::{CrdtOp, CrdtValue};
use crate::key::Key;
use crate::keyspace::ConflictPolicy;
use crate::proto::{
    ClientRequest, ClientResponse, ErrorKind, GetRequest, GetResponse, PutRequest, UpdateRequest,
};

use super::WorkloadKind;

/// What became of one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The coordinator answered (possibly with an error).
    Answer(ClientResponse),
    /// The node could not be reached: the request was certainly not executed.
    Refused(String),
    /// No answer (a timeout, a broken connection): it may have taken effect.
    Lost(String),
}

/// How requests reach one node: QUIC for real processes and containers, the simulator's
/// in-memory cluster for the `sim` target.
pub trait Transport: Send + Sync + 'static {
    /// The node requests go to.
    fn node(&self) -> &str;
    /// Send one request to it.
    fn request(&self, req: ClientRequest) -> impl Future<Output = Outcome> + Send;
}

/// A QUIC client whose only contact point is one node.
pub struct QuicTransport {
    node: String,
    client: Arc<Client>,
}

impl QuicTransport {
    /// A transport to `node` through `client` (built with that node as its only contact).
    pub fn new(node: String, client: Arc<Client>) -> Self {
        QuicTransport { node, client }
    }
}

impl Transport for QuicTransport {
    fn node(&self) -> &str {
        &self.node
    }

    async fn request(&self, req: ClientRequest) -> Outcome {
        {
            match self.client.request(req).await {
                Ok(r) => Outcome::Answer(r),
                Err(ClientError::Server { kind, message }) => {
                    Outcome::Answer(ClientResponse::Error(crate::proto::ErrorResponse {
                        kind,
                        message,
                    }))
                }
                Err(e @ ClientError::Unreachable(_)) => Outcome::Refused(e.to_string()),
                Err(e) => Outcome::Lost(e.to_string()),
            }
        }
    }
}

/// The client of one harness worker. See the module docs.
pub struct StoreClient<T> {
    transport: T,
    keyspace: String,
    policy: ConflictPolicy,
    workload: WorkloadKind,
    /// Replicas per key: final reads ask all of them.
    n: u8,
    /// The actor of `lww-actor` writes (this worker's name).
    actor: String,
    /// Stamps `lww-client` writes.
    clock: Arc<dyn Clock>,
    /// Last read of each key: its values and causal context (sibling writes replace what
    /// it saw; register writes on a siblings keyspace replace it too).
    last_read: BTreeMap<String, (Vec<Value>, String)>,
    /// The context chosen by `prepare` for the write about to be invoked.
    pending_context: Option<String>,
    /// Client timestamps handed out, so two writes of one client never tie.
    last_stamp: u64,
    /// The causal context the last write sent (recorded with its completion).
    sent_context: String,
    /// The context the operation's read returned (recorded with a read's completion).
    read_context: String,
}

fn key(k: &Value) -> Key {
    Key::simple(text(k).into_bytes())
}

/// A history value as the bytes stored for it: integers in decimal, strings as they are.
fn text(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::Keyword(s) | Value::Symbol(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => other.to_string(),
    }
}

/// Stored bytes back as a history value: what was written as an integer reads as one.
fn value_of(bytes: &[u8]) -> Value {
    let s = String::from_utf8_lossy(bytes);
    match s.parse::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::Str(s.into_owned()),
    }
}

/// The elements of a set kept as one plain value: a comma-separated list of integers.
fn decode_elements(bytes: &[u8], into: &mut Vec<i64>) {
    for part in String::from_utf8_lossy(bytes).split(',') {
        if let Ok(i) = part.trim().parse() {
            into.push(i);
        }
    }
}

fn pair(k: &Value, v: Value) -> Value {
    Value::Vector(vec![k.clone(), v])
}

fn parts(v: &Value) -> &[Value] {
    v.as_seq().unwrap_or(&[])
}

impl<T: Transport> StoreClient<T> {
    /// A client of `workload` on keyspace `keyspace` (policy `policy`, `n` replicas)
    /// through `transport`; `actor` names it in `lww-actor` keyspaces.
    pub fn new(
        transport: T,
        keyspace: &str,
        policy: ConflictPolicy,
        n: u8,
        workload: WorkloadKind,
        actor: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        StoreClient {
            transport,
            keyspace: keyspace.to_string(),
            policy,
            workload,
            n,
            actor,
            clock,
            last_read: BTreeMap::new(),
            pending_context: None,
            last_stamp: 0,
            sent_context: String::new(),
            read_context: String::new(),
        }
    }

    fn get(&self, k: &Value, r: Option<u8>) -> ClientRequest {
        ClientRequest::Get(GetRequest {
            keyspace: self.keyspace.clone(),
            key: key(k),
            r,
            trace: false,
            pr: None,
        })
    }

    fn put(
        &mut self,
        k: &Value,
        value: Vec<u8>,
        context: String,
        if_context: bool,
    ) -> ClientRequest {
        let timestamp = (self.policy == ConflictPolicy::LwwClient).then(|| {
            // Microseconds, strictly increasing per client.
            let now = self.clock.now_ms().saturating_mul(1000);
            self.last_stamp = now.max(self.last_stamp + 1);
            self.last_stamp
        });
        self.sent_context = context.clone();
        ClientRequest::Put(PutRequest {
            keyspace: self.keyspace.clone(),
            key: key(k),
            value: Some(value),
            context,
            w: None,
            trace: false,
            if_context,
            timestamp,
            actor: (self.policy == ConflictPolicy::LwwActor).then(|| self.actor.clone()),
            pw: None,
        })
    }

    fn update(&self, k: &Value, op: CrdtOp) -> ClientRequest {
        ClientRequest::Update(UpdateRequest {
            keyspace: self.keyspace.clone(),
            key: key(k),
            op,
            context: String::new(),
            w: None,
            trace: false,
        })
    }

    /// The values of a read, oldest first (`written_at`, then id), as history values.
    fn values(g: &GetResponse) -> Vec<Value> {
        let mut s: Vec<_> = g.values.iter().collect();
        s.sort_by(|a, b| (a.written_at_ms, &a.dot).cmp(&(b.written_at_ms, &b.dot)));
        s.iter().map(|v| value_of(&v.value)).collect()
    }

    /// The elements of a set read: the CRDT's members, or the union of the siblings.
    fn set_elements(g: &GetResponse) -> Value {
        let mut out = Vec::new();
        match &g.crdt {
            Some(CrdtValue::Set(members)) => {
                for m in members {
                    decode_elements(m, &mut out);
                }
            }
            _ => {
                for s in &g.values {
                    decode_elements(&s.value, &mut out);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Value::Set(out.into_iter().map(Value::Int).collect())
    }

    async fn read(&mut self, k: &Value, r: Option<u8>) -> Result<GetResponse, Completion> {
        let req = self.get(k, r);
        match self.transport.request(req).await {
            Outcome::Answer(ClientResponse::Get(g)) => {
                self.last_read
                    .insert(text(k), (Self::values(&g), g.context.clone()));
                self.read_context = g.context.clone();
                Ok(g)
            }
            // A read changes nothing: whatever stopped it, it failed.
            other => Err(self.completion(other, false, Value::Nil)),
        }
    }

    /// The completion of an operation that did not get the reply it wanted.
    fn completion(&mut self, outcome: Outcome, write: bool, value: Value) -> Completion {
        let (kind, error) = match outcome {
            Outcome::Refused(m) => (OpType::Fail, m),
            Outcome::Lost(m) if write => (OpType::Info, m),
            Outcome::Lost(m) => (OpType::Fail, m),
            Outcome::Answer(ClientResponse::Error(e)) => {
                let kind = match e.kind {
                    // Some replicas may hold the write.
                    ErrorKind::QuorumNotReached { .. } | ErrorKind::Internal if write => {
                        OpType::Info
                    }
                    _ => OpType::Fail,
                };
                (kind, e.message)
            }
            Outcome::Answer(other) => (
                if write { OpType::Info } else { OpType::Fail },
                format!("unexpected reply {other:?}"),
            ),
        };
        self.done(kind, value, Some(error))
    }

    fn done(&mut self, kind: OpType, value: Value, error: Option<String>) -> Completion {
        let mut extra = vec![(
            "node".to_string(),
            Value::Str(self.transport.node().to_string()),
        )];
        // A read's completion carries the context it returned.
        let read_context = std::mem::take(&mut self.read_context);
        if kind == OpType::Ok && !read_context.is_empty() {
            extra.push(("context".to_string(), Value::Str(read_context)));
        }
        if let Some(e) = error {
            extra.push(("error".to_string(), Value::Str(e)));
        }
        Completion { kind, value, extra }
    }

    async fn write(&mut self, req: ClientRequest, value: Value) -> Completion {
        let sent = std::mem::take(&mut self.sent_context);
        // The write's own context is what its line records, not its read's.
        self.read_context.clear();
        let mut c = self.send_write(req, value).await;
        if !sent.is_empty() {
            c.extra.push(("context".into(), Value::Str(sent)));
        }
        c
    }

    async fn send_write(&mut self, req: ClientRequest, value: Value) -> Completion {
        match self.transport.request(req).await {
            Outcome::Answer(ClientResponse::Put(p)) => {
                let mut c = self.done(OpType::Ok, value, None);
                c.extra.push(("dot".into(), Value::Str(p.dot)));
                c
            }
            Outcome::Answer(ClientResponse::Update(_)) => self.done(OpType::Ok, value, None),
            other => self.completion(other, true, value),
        }
    }

    /// Run one operation.
    async fn run(&mut self, inv: &Invocation) -> Completion {
        self.read_context.clear();
        self.sent_context.clear();
        let final_read = inv.f == Function::FinalRead;
        // Final reads ask every replica, so they see what the cluster converged to.
        let r = final_read.then_some(self.n);
        let v = &inv.value;
        match (self.workload, &inv.f) {
            // [k nil] -> [k v]: of several siblings, the newest (what a register shows).
            (WorkloadKind::Register, Function::Read | Function::FinalRead) => {
                let k = &parts(v).first().cloned().unwrap_or(Value::Nil);
                match self.read(k, r).await {
                    Ok(g) => {
                        let vals = Self::values(&g);
                        let mut c = self.done(
                            OpType::Ok,
                            pair(k, vals.last().cloned().unwrap_or(Value::Nil)),
                            None,
                        );
                        if vals.len() > 1 {
                            c.extra
                                .push(("siblings".into(), Value::Int(vals.len() as i64)));
                        }
                        c
                    }
                    Err(c) => with_value(c, v.clone()),
                }
            }
            (WorkloadKind::Register, Function::Write) => {
                let (k, new) = (parts(v)[0].clone(), parts(v)[1].clone());
                // On a siblings keyspace a register write replaces what the client last
                // read; last-write-wins keyspaces need no context.
                let ctx = self.context_for(&k);
                let req = self.put(&k, text(&new).into_bytes(), ctx, false);
                self.write(req, v.clone()).await
            }
            // [k [old new]]: read, compare, then a conditional write with the read's
            // context, refused if the lead's copy changed since (not atomic: that is what
            // the linearizability check shows).
            (WorkloadKind::Register, Function::Cas) => {
                let k = parts(v)[0].clone();
                let (old, new) = match parts(&parts(v)[1]) {
                    [o, n] => (o.clone(), n.clone()),
                    _ => {
                        return self.done(
                            OpType::Fail,
                            v.clone(),
                            Some("cas value is not [old new]".into()),
                        )
                    }
                };
                let g = match self.read(&k, None).await {
                    Ok(g) => g,
                    Err(c) => return with_value(c, v.clone()),
                };
                let current = Self::values(&g);
                if current.len() != 1 || current[0] != old {
                    return self.done(
                        OpType::Fail,
                        v.clone(),
                        Some(format!("precondition: key holds {current:?}")),
                    );
                }
                let req = self.put(&k, text(&new).into_bytes(), g.context, true);
                self.write(req, v.clone()).await
            }
            (WorkloadKind::Set, Function::Add) => {
                let set_key = Value::Str("set".into());
                if self.policy == ConflictPolicy::Set {
                    let req = self.update(
                        &set_key,
                        CrdtOp::SetAdd(vec![ByteBuf::from(text(v).into_bytes())]),
                    );
                    return self.write(req, v.clone()).await;
                }
                // One plain key: read, add to the union of the siblings, write back with
                // the read's context (how Jepsen's Riak tests used a set on siblings).
                let g = match self.read(&set_key, None).await {
                    Ok(g) => g,
                    Err(c) => return with_value(c, v.clone()),
                };
                let mut elems: Vec<i64> = parts(&Self::set_elements(&g))
                    .iter()
                    .filter_map(Value::as_int)
                    .collect();
                if let Some(i) = v.as_int() {
                    elems.push(i);
                }
                elems.sort_unstable();
                elems.dedup();
                let body = elems
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let req = self.put(&set_key, body.into_bytes(), g.context, false);
                self.write(req, v.clone()).await
            }
            (WorkloadKind::Set, Function::Read | Function::FinalRead) => {
                match self.read(&Value::Str("set".into()), r).await {
                    Ok(g) => self.done(OpType::Ok, Self::set_elements(&g), None),
                    Err(c) => c,
                }
            }
            (WorkloadKind::Counter, Function::Add) => {
                let req = self.update(
                    &Value::Str("counter".into()),
                    CrdtOp::CounterAdd(v.as_int().unwrap_or(1)),
                );
                self.write(req, v.clone()).await
            }
            (WorkloadKind::Counter, Function::Read | Function::FinalRead) => {
                match self.read(&Value::Str("counter".into()), r).await {
                    Ok(g) => {
                        let n = match g.crdt {
                            Some(CrdtValue::Counter(n)) => n,
                            _ => 0,
                        };
                        self.done(OpType::Ok, Value::Int(n), None)
                    }
                    Err(c) => c,
                }
            }
            // [k v covered]: `prepare` chose the context and filled in what it covers.
            (WorkloadKind::SiblingRegister, Function::Write) => {
                let (k, new) = (parts(v)[0].clone(), parts(v)[1].clone());
                let ctx = self.pending_context.take().unwrap_or_default();
                let req = self.put(&k, text(&new).into_bytes(), ctx, false);
                self.write(req, v.clone()).await
            }
            // [k nil] -> [k [v ...]]; visibility reads are [k nil delay] -> [k [v ...]].
            (
                WorkloadKind::SiblingRegister | WorkloadKind::Visibility,
                Function::Read | Function::FinalRead,
            ) => {
                let k = parts(v).first().cloned().unwrap_or(Value::Nil);
                match self.read(&k, r).await {
                    Ok(g) => {
                        let mut vals = Self::values(&g);
                        vals.sort_by(|a, b| a.report_cmp(b));
                        self.done(OpType::Ok, pair(&k, Value::Vector(vals)), None)
                    }
                    Err(c) => with_value(c, v.clone()),
                }
            }
            (WorkloadKind::Visibility, Function::Write) => {
                let (k, new) = (parts(v)[0].clone(), parts(v)[1].clone());
                let req = self.put(&k, text(&new).into_bytes(), String::new(), false);
                self.write(req, v.clone()).await
            }
            (w, f) => self.done(
                OpType::Fail,
                v.clone(),
                Some(format!("the {w} client has no operation {:?}", f.name())),
            ),
        }
    }

    /// The context a register write sends: the last read's on a siblings keyspace.
    fn context_for(&self, k: &Value) -> String {
        if self.policy == ConflictPolicy::Siblings {
            self.last_read
                .get(&text(k))
                .map(|(_, c)| c.clone())
                .unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// A failed operation keeps the invocation's value (Jepsen's convention for writes).
fn with_value(mut c: Completion, v: Value) -> Completion {
    c.value = v;
    c
}

impl<T: Transport> jepsen_like::harness::Client for StoreClient<T> {
    fn prepare(&mut self, inv: &mut Invocation) -> Vec<(String, Value)> {
        self.pending_context = None;
        if self.workload == WorkloadKind::SiblingRegister && inv.f == Function::Write {
            if let Value::Vector(items) = &mut inv.value {
                if items.len() == 3 && items[2] == Value::kw("ctx") {
                    // The write replaces what this client last read of the key (nothing,
                    // if it never read it: then it is blind).
                    let (covered, ctx) = self
                        .last_read
                        .get(&text(&items[0]))
                        .cloned()
                        .unwrap_or_default();
                    items[2] = Value::Vector(covered);
                    self.pending_context = Some(ctx);
                }
            }
        }
        vec![(
            "node".to_string(),
            Value::Str(self.transport.node().to_string()),
        )]
    }

    fn invoke(&mut self, inv: &Invocation) -> impl Future<Output = Completion> + Send {
        self.run(inv)
    }
}

#[cfg(test)]
mod tests {
    //! The client against a scripted transport: each test scripts the node's replies,
    //! runs operations, and checks both the completions and the requests sent.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use jepsen_like::harness::Client as _;

    use super::*;
    use crate::clock::ManualClock;
    use crate::proto::{ErrorResponse, PutResponse, SiblingView, UpdateResponse};

    /// Replies in order, and every request it was sent.
    #[derive(Default)]
    struct Script {
        replies: Mutex<VecDeque<Outcome>>,
        sent: Mutex<Vec<ClientRequest>>,
    }

    /// A transport to node "n1" answering from a shared [`Script`].
    struct Scripted(Arc<Script>);

    impl Transport for Scripted {
        fn node(&self) -> &str {
            "n1"
        }

        fn request(&self, req: ClientRequest) -> impl Future<Output = Outcome> + Send {
            self.0.sent.lock().unwrap().push(req);
            let reply = self
                .0
                .replies
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Outcome::Lost("the script has no more replies".into()));
            std::future::ready(reply)
        }
    }

    /// A client of `workload` on a `policy` keyspace that will get `replies`, and the
    /// script (to read what it sent).
    fn client(
        policy: ConflictPolicy,
        workload: WorkloadKind,
        replies: Vec<Outcome>,
    ) -> (StoreClient<Scripted>, Arc<Script>) {
        let script = Arc::new(Script {
            replies: Mutex::new(replies.into()),
            sent: Mutex::new(Vec::new()),
        });
        let c = StoreClient::new(
            Scripted(Arc::clone(&script)),
            "ks",
            policy,
            3,
            workload,
            "c3".into(),
            Arc::new(ManualClock::new(1_000)),
        );
        (c, script)
    }

    fn sent(s: &Script) -> Vec<ClientRequest> {
        s.sent.lock().unwrap().clone()
    }

    /// The puts among the requests sent.
    fn puts(s: &Script) -> Vec<PutRequest> {
        sent(s)
            .into_iter()
            .filter_map(|r| match r {
                ClientRequest::Put(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn inv(f: Function, value: Value) -> Invocation {
        Invocation {
            process: 0,
            f,
            value,
        }
    }

    fn v(items: Vec<Value>) -> Value {
        Value::Vector(items)
    }

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    fn read_reply(values: &[(&str, &str)], context: &str) -> Outcome {
        Outcome::Answer(ClientResponse::Get(GetResponse {
            values: values
                .iter()
                .enumerate()
                .map(|(i, (dot, value))| SiblingView {
                    value: value.as_bytes().to_vec(),
                    dot: dot.to_string(),
                    written_at_ms: 100 + i as u64,
                })
                .collect(),
            context: context.into(),
            tombstones: 0,
            crdt: None,
            trace: Vec::new(),
        }))
    }

    fn put_ok() -> Outcome {
        Outcome::Answer(ClientResponse::Put(PutResponse {
            context: "after".into(),
            dot: "n1:9".into(),
            trace: Vec::new(),
        }))
    }

    fn error(kind: ErrorKind) -> Outcome {
        Outcome::Answer(ClientResponse::Error(ErrorResponse {
            kind,
            message: "scripted error".into(),
        }))
    }

    fn extra<'a>(c: &'a Completion, name: &str) -> Option<&'a Value> {
        c.extra.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn write_inv() -> Invocation {
        inv(Function::Write, v(vec![s("k"), Value::Int(5)]))
    }

    /// Goal: an unreachable node certainly did not execute the write: `:fail`, with the
    /// reason recorded.
    #[tokio::test]
    async fn refused_write_fails() {
        let (mut c, _) = client(
            ConflictPolicy::LwwTimestamp,
            WorkloadKind::Register,
            vec![Outcome::Refused("n1 is down".into())],
        );
        let done = c.invoke(&write_inv()).await;
        assert_eq!(done.kind, OpType::Fail);
        assert_eq!(extra(&done, "error"), Some(&s("n1 is down")));
    }

    /// Goal: a write whose reply was lost may have taken effect: `:info`, never `:fail`.
    #[tokio::test]
    async fn lost_write_is_indeterminate() {
        let (mut c, _) = client(
            ConflictPolicy::LwwTimestamp,
            WorkloadKind::Register,
            vec![Outcome::Lost("no reply".into())],
        );
        let done = c.invoke(&write_inv()).await;
        assert_eq!(done.kind, OpType::Info);
        assert_eq!(done.value, write_inv().value);
    }

    /// Goal: a read whose reply was lost changed nothing: `:fail`, keeping the
    /// invocation's value.
    #[tokio::test]
    async fn lost_read_fails() {
        let (mut c, _) = client(
            ConflictPolicy::LwwTimestamp,
            WorkloadKind::Register,
            vec![Outcome::Lost("no reply".into())],
        );
        let read = inv(Function::Read, v(vec![s("k"), Value::Nil]));
        let done = c.invoke(&read).await;
        assert_eq!(done.kind, OpType::Fail);
        assert_eq!(done.value, read.value);
    }

    /// Goal: a write that missed its quorum may still be on some replicas: `:info`.
    #[tokio::test]
    async fn quorum_not_reached_write_is_indeterminate() {
        let (mut c, _) = client(
            ConflictPolicy::LwwTimestamp,
            WorkloadKind::Register,
            vec![error(ErrorKind::QuorumNotReached {
                needed: 2,
                got: 1,
                failures: Vec::new(),
            })],
        );
        let done = c.invoke(&write_inv()).await;
        assert_eq!(done.kind, OpType::Info);
        assert_eq!(extra(&done, "error"), Some(&s("scripted error")));
    }

    /// Goal: a cas whose read matched but whose conditional write was refused with
    /// `Conflict` did not happen: `:fail`; the put was conditional on the read's context.
    #[tokio::test]
    async fn cas_conflict_fails() {
        let (mut c, script) = client(
            ConflictPolicy::Siblings,
            WorkloadKind::Register,
            vec![
                read_reply(&[("n1:1", "1")], "ctx-1"),
                error(ErrorKind::Conflict),
            ],
        );
        let cas = inv(
            Function::Cas,
            v(vec![s("k"), v(vec![Value::Int(1), Value::Int(2)])]),
        );
        let done = c.invoke(&cas).await;
        assert_eq!(done.kind, OpType::Fail);
        let p = puts(&script);
        assert_eq!(p.len(), 1);
        assert!(p[0].if_context);
        assert_eq!(p[0].context, "ctx-1");
        assert_eq!(p[0].value.as_deref(), Some(&b"2"[..]));
    }

    /// Goal: a cas whose read shows another value fails at once, without writing.
    #[tokio::test]
    async fn cas_precondition_mismatch_fails_without_writing() {
        let (mut c, script) = client(
            ConflictPolicy::Siblings,
            WorkloadKind::Register,
            vec![read_reply(&[("n1:1", "3")], "ctx-1"), put_ok()],
        );
        let cas = inv(
            Function::Cas,
            v(vec![s("k"), v(vec![Value::Int(1), Value::Int(2)])]),
        );
        let done = c.invoke(&cas).await;
        assert_eq!(done.kind, OpType::Fail);
        let e = extra(&done, "error").cloned().unwrap_or(Value::Nil);
        assert!(e.to_string().contains("precondition"), "{e}");
        assert_eq!(sent(&script).len(), 1, "only the read was sent");
        assert!(puts(&script).is_empty());
    }

    /// Goal: a sibling write's `prepare` replaces `:ctx` with the values of the client's
    /// last read of that key, and the put carries that read's context (not an earlier
    /// read's, not another key's).
    #[tokio::test]
    async fn sibling_prepare_uses_the_last_read() {
        let (mut c, script) = client(
            ConflictPolicy::Siblings,
            WorkloadKind::SiblingRegister,
            vec![
                read_reply(&[("n1:1", "1")], "ctx-old"),
                read_reply(&[("n1:1", "1"), ("n2:1", "2")], "ctx-new"),
                read_reply(&[("n3:1", "7")], "ctx-other-key"),
                put_ok(),
            ],
        );
        for key in ["k", "k", "other"] {
            let done = c
                .invoke(&inv(Function::Read, v(vec![s(key), Value::Nil])))
                .await;
            assert_eq!(done.kind, OpType::Ok);
        }
        let mut w = inv(
            Function::Write,
            v(vec![s("k"), Value::Int(3), Value::kw("ctx")]),
        );
        c.prepare(&mut w);
        assert_eq!(
            w.value,
            v(vec![
                s("k"),
                Value::Int(3),
                v(vec![Value::Int(1), Value::Int(2)])
            ])
        );
        let done = c.invoke(&w).await;
        assert_eq!(done.kind, OpType::Ok);
        let p = puts(&script);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].context, "ctx-new");
        assert!(!p[0].if_context);
        assert_eq!(extra(&done, "context"), Some(&s("ctx-new")));
    }

    /// Goal: a set on a plain (non-CRDT) keyspace reads the key, adds the element to the
    /// union of its siblings, and writes the union back with the read's context, so the
    /// write replaces exactly the siblings it merged.
    #[tokio::test]
    async fn set_on_siblings_unions_and_writes_back_with_the_read_context() {
        let (mut c, script) = client(
            ConflictPolicy::Siblings,
            WorkloadKind::Set,
            vec![
                read_reply(&[("n1:1", "1,2"), ("n2:1", "2,3")], "ctx-set"),
                put_ok(),
            ],
        );
        let done = c.invoke(&inv(Function::Add, Value::Int(4))).await;
        assert_eq!(done.kind, OpType::Ok);
        let p = puts(&script);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, Key::simple(b"set".to_vec()));
        assert_eq!(p[0].value.as_deref(), Some(&b"1,2,3,4"[..]));
        assert_eq!(p[0].context, "ctx-set");
    }

    /// Goal: a set on a CRDT set keyspace is one update (no read), adding the element.
    #[tokio::test]
    async fn set_on_crdt_set_is_one_update() {
        let (mut c, script) = client(
            ConflictPolicy::Set,
            WorkloadKind::Set,
            vec![Outcome::Answer(ClientResponse::Update(UpdateResponse {
                context: String::new(),
                trace: Vec::new(),
            }))],
        );
        let done = c.invoke(&inv(Function::Add, Value::Int(4))).await;
        assert_eq!(done.kind, OpType::Ok);
        match sent(&script).as_slice() {
            [ClientRequest::Update(u)] => {
                assert_eq!(u.op, CrdtOp::SetAdd(vec![ByteBuf::from(b"4".to_vec())]))
            }
            other => panic!("expected one update, sent {other:?}"),
        }
    }

    /// Goal: on an `lww-client` keyspace every write carries a client timestamp, strictly
    /// increasing even when the clock does not move between writes.
    #[tokio::test]
    async fn lww_client_timestamps_strictly_increase() {
        let (mut c, script) = client(
            ConflictPolicy::LwwClient,
            WorkloadKind::Register,
            vec![put_ok(), put_ok(), put_ok()],
        );
        for _ in 0..3 {
            assert_eq!(c.invoke(&write_inv()).await.kind, OpType::Ok);
        }
        let stamps: Vec<u64> = puts(&script)
            .iter()
            .map(|p| p.timestamp.expect("lww-client writes carry a timestamp"))
            .collect();
        assert_eq!(stamps.len(), 3);
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
        // Microseconds of the client's clock (1000 ms).
        assert_eq!(stamps[0], 1_000_000);
    }

    /// Goal: on an `lww-actor` keyspace writes carry the client's actor; elsewhere none.
    #[tokio::test]
    async fn lww_actor_writes_carry_the_actor() {
        let (mut c, script) = client(
            ConflictPolicy::LwwActor,
            WorkloadKind::Register,
            vec![put_ok()],
        );
        assert_eq!(c.invoke(&write_inv()).await.kind, OpType::Ok);
        let p = puts(&script);
        assert_eq!(p[0].actor.as_deref(), Some("c3"));
        assert_eq!(p[0].timestamp, None);

        let (mut c, script) = client(
            ConflictPolicy::LwwTimestamp,
            WorkloadKind::Register,
            vec![put_ok()],
        );
        assert_eq!(c.invoke(&write_inv()).await.kind, OpType::Ok);
        assert_eq!(puts(&script)[0].actor, None);
    }
}
