//! The coordinator: any node, handling a client's request for any key.
//!
//! **Read** (`get`): ask all N replicas of the preference list at once, answer after R
//! replies by merging them (dominated versions drop out, concurrent ones stay as
//! siblings), then keep listening in the background until every replica answered or the
//! request timeout passed, and send the merged object to every replica whose copy was
//! stale or missing (asynchronous read repair).
//!
//! **Write** (`put`, delete = put of a tombstone): one replica, the *lead*, issues the
//! write's dot (itself when this node is a replica, else the first healthy replica),
//! applies it and returns its object; the coordinator sends that object to the other
//! N-1 replicas and answers after W acknowledgements in all (the lead counts).
//!
//! Every wait is bounded by the request timeout. Replies that arrive after the answer
//! are ignored (reads still use them for repair). A failure names how many replies were
//! needed and got, and why each missing replica failed.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::causality::{Dot, VersionVector};
use crate::context::ContextError;
use crate::key::{Key, KeyError};
use crate::keyspace::{validate_name, KeyspaceDef, KeyspaceError, ReadRepair};
use crate::node::{Node, NodeError};
use crate::object::{Object, Sibling};
use crate::policy::PolicyError;
use crate::proto::{
    BatchRequest, BatchResponse, ClientResponse, GetRequest, GetResponse, PeerError, PeerRequest,
    PeerResponse, PutRequest, PutResponse, ReplicaFailure, ScanItem, ScanRequest, ScanResponse,
    SiblingView, TraceEvent, UpdateRequest, UpdateResponse,
};
use crate::transport::TransportError;

/// Why a coordinated request failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Fewer than R (or W) replicas answered before the timeout.
    #[error(
        "quorum not reached for {op}: needed {needed}, got {got}{}",
        describe(failures)
    )]
    QuorumNotReached {
        /// "read" or "write".
        op: &'static str,
        /// Replies needed.
        needed: u8,
        /// Replies received.
        got: u8,
        /// Why each other replica failed.
        failures: Vec<ReplicaFailure>,
    },
    /// Keyspace unknown or request quorum invalid.
    #[error(transparent)]
    Keyspace(#[from] KeyspaceError),
    /// Key empty or too large.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The causal context is malformed or was not issued by this cluster for this key.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The value is over the limit.
    #[error("value is {len} bytes; the limit is {max} (limits.max_value_bytes)")]
    ValueTooLarge {
        /// Value length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The key has too many siblings.
    #[error("{0}")]
    SiblingLimit(String),
    /// A conditional write found the key changed.
    #[error("{0}")]
    Conflict(String),
    /// A batch names keys of more than one partition.
    #[error(
        "a batch must stay within one partition: {first} and {other} are in different partitions"
    )]
    CrossPartitionBatch {
        /// The first item's key.
        first: String,
        /// An item in another partition.
        other: String,
    },
    /// A write's client timestamp or actor does not fit the keyspace's policy.
    #[error("{0}")]
    BadStamp(String),
    /// A request that does not fit the keyspace's policy: a CRDT operation on a plain
    /// keyspace, a put or batch on a CRDT keyspace, or an operation of another CRDT type.
    #[error("{0}")]
    Policy(String),
    /// A batch with no items.
    #[error("a batch needs at least one item")]
    EmptyBatch,
    /// A batch with too many items.
    #[error("a batch of {len} items exceeds the limit of {max}")]
    BatchTooLarge {
        /// Items given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The client's certificate lacks a permission (see `access`).
    #[error(transparent)]
    Forbidden(#[from] crate::access::AccessError),
    /// Local metadata failure.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A replica reported an invalid request.
    #[error("replica refused the request: {0}")]
    Replica(String),
}

impl From<PolicyError> for CoordinatorError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::BadStamp(m) => CoordinatorError::BadStamp(m),
            other => CoordinatorError::Policy(other.to_string()),
        }
    }
}

fn describe(failures: &[ReplicaFailure]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {} ({})", f.node, f.kind, f.detail))
        .collect();
    format!(" — {}", parts.join("; "))
}

/// Collects a request's timeline when the client asked for tracing.
struct Trace {
    start: Instant,
    events: Option<Vec<TraceEvent>>,
}

impl Trace {
    fn new(enabled: bool) -> Self {
        Trace {
            start: Instant::now(),
            events: enabled.then(Vec::new),
        }
    }

    fn add(&mut self, node: &str, activity: impl FnOnce() -> String) {
        if let Some(ev) = &mut self.events {
            ev.push(TraceEvent {
                elapsed_us: self.start.elapsed().as_micros() as u64,
                node: node.to_string(),
                activity: activity(),
            });
        }
    }

    fn finish(self) -> Vec<TraceEvent> {
        self.events.unwrap_or_default()
    }
}

/// What one replica call produced.
pub(crate) enum CallFailure {
    Timeout,
    Transport(TransportError),
    Refused(PeerError),
}

impl CallFailure {
    pub(crate) fn to_failure(&self, node: &str) -> ReplicaFailure {
        let (kind, detail) = match self {
            CallFailure::Timeout => ("timeout", "no reply before the request timeout".to_string()),
            CallFailure::Transport(e) => ("unreachable", e.to_string()),
            CallFailure::Refused(e) => ("error", e.to_string()),
        };
        ReplicaFailure {
            node: node.to_string(),
            kind: kind.to_string(),
            detail,
        }
    }
}

pub(crate) type CallResult = Result<PeerResponse, CallFailure>;

/// One replica's page of a scan: (replica, items by sort key, whether it stopped at the
/// limit).
type ScanReply = (String, BTreeMap<Vec<u8>, Object>, bool);

/// Refuse replies whose CRDT state breaks an invariant (see `crdt::check_well_formed`)
/// before any comparison or merge touches them.
fn well_formed(resp: &PeerResponse) -> Result<(), crate::crdt::CrdtError> {
    use crate::crdt::check_well_formed;
    match resp {
        PeerResponse::Object(Some(o)) | PeerResponse::Written { object: o, .. } => {
            check_well_formed(&o.crdt)
        }
        PeerResponse::WrittenBatch { objects, .. } => {
            objects.iter().try_for_each(|o| check_well_formed(&o.crdt))
        }
        PeerResponse::Items { items, .. } => items
            .iter()
            .try_for_each(|(_, o)| check_well_formed(&o.crdt)),
        _ => Ok(()),
    }
}

/// Most items one batch may write.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// A version id as clients see it: `actor:counter`.
fn dot_id(dot: &Dot) -> String {
    format!("{}:{}", dot.actor, dot.counter)
}

/// The id of the version a lead issued, or "" when the keyspace's policy already resolved
/// it away (a last-write-wins write that lost: "OK, but superseded").
fn surviving_dot(object: &Object, dot: Option<&Dot>) -> String {
    match dot {
        Some(d) if object.siblings.iter().any(|s| &s.dot == d) => dot_id(d),
        _ => String::new(),
    }
}

/// Versions as the client sees them.
fn sibling_views(values: &[&Sibling]) -> Vec<SiblingView> {
    values
        .iter()
        .map(|s| SiblingView {
            value: s.value.clone().unwrap_or_default(),
            dot: dot_id(&s.dot),
            written_at_ms: s.written_at_ms,
        })
        .collect()
}

impl Node {
    /// Send a replica request to `to` (locally without the network when `to` is this
    /// node), bounded by `deadline`.
    async fn call_replica(
        self: &Arc<Self>,
        to: &str,
        req: PeerRequest,
        deadline: Instant,
    ) -> CallResult {
        let fut = async {
            if to == self.name {
                Ok(self.replica_step(req).await)
            } else {
                self.transport.call(to, req).await
            }
        };
        let out = match tokio::time::timeout_at(deadline, fut).await {
            Err(_) => Err(CallFailure::Timeout),
            Ok(Err(e)) => Err(CallFailure::Transport(e)),
            Ok(Ok(PeerResponse::Error(e))) => Err(CallFailure::Refused(e)),
            Ok(Ok(resp)) => match well_formed(&resp) {
                Ok(()) => Ok(resp),
                Err(e) => Err(CallFailure::Refused(PeerError::Invalid(format!(
                    "{to} sent {e}"
                )))),
            },
        };
        if to != self.name {
            // A refusal is an answer: the peer is up.
            self.note_health(
                to,
                !matches!(out, Err(CallFailure::Timeout | CallFailure::Transport(_))),
            );
        }
        out
    }

    /// Send `req` to every node in `targets` concurrently; results arrive on the channel
    /// as they come. Tasks outlive the caller so late replies can still be used (repair)
    /// or harmlessly dropped.
    pub(crate) fn fan_out(
        self: &Arc<Self>,
        targets: &[String],
        req: &PeerRequest,
        deadline: Instant,
    ) -> mpsc::Receiver<(String, u64, CallResult)> {
        let (tx, rx) = mpsc::channel(targets.len().max(1));
        let start = Instant::now();
        for node in targets {
            let (me, tx, node, req) = (Arc::clone(self), tx.clone(), node.clone(), req.clone());
            tokio::spawn(async move {
                let res = me.call_replica(&node, req, deadline).await;
                let _ = tx
                    .send((node, start.elapsed().as_micros() as u64, res))
                    .await;
            });
        }
        rx
    }

    /// Resolve a keyspace by name: locally, else from any peer that knows it.
    pub(crate) async fn keyspace(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<KeyspaceDef, CoordinatorError> {
        if let Some(def) = self.keyspaces.get(name) {
            return Ok(def);
        }
        validate_name(name)?;
        let peers = self.other_members();
        let deadline = Instant::now() + self.request_timeout;
        let mut rx = self.fan_out(
            &peers,
            &PeerRequest::LookupKeyspace(name.to_string()),
            deadline,
        );
        while let Some((_, _, res)) = rx.recv().await {
            if let Ok(PeerResponse::Keyspace(Some(def))) = res {
                if def.validate(self.members.len()).is_ok() {
                    self.learn_keyspace(def.clone())?;
                    return Ok(def);
                }
            }
        }
        Err(KeyspaceError::Unknown(name.to_string()).into())
    }

    /// Coordinate a read.
    pub async fn get(self: &Arc<Self>, req: GetRequest) -> Result<GetResponse, CoordinatorError> {
        let mut trace = Trace::new(req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        req.key.validate(self.limits.max_key_bytes)?;
        let r = ks.quorum("r", req.r.unwrap_or(ks.r))?;
        let pl = self.ring.preference_list(&req.key.partition, ks.n as usize);
        trace.add(&self.name, || {
            format!(
                "coordinating read of {}; replicas {pl:?}; waiting for r={r}",
                req.key
            )
        });
        let deadline = Instant::now() + self.request_timeout;
        let read = PeerRequest::Read {
            keyspace: ks.clone(),
            key: req.key.clone(),
        };
        let mut rx = self.fan_out(&pl, &read, deadline);
        let mut replies: Vec<(String, Object)> = Vec::new();
        let mut failures: Vec<ReplicaFailure> = Vec::new();
        while replies.len() < r as usize && failures.len() <= pl.len() - r as usize {
            let Some((node, us, res)) = rx.recv().await else {
                break;
            };
            match res {
                Ok(PeerResponse::Object(o)) => {
                    trace.add(&node, || match &o {
                        Some(o) => {
                            format!("replied after {us} µs: {} sibling(s)", o.siblings.len())
                        }
                        None => format!("replied after {us} µs: key not found"),
                    });
                    replies.push((node, o.unwrap_or_default()));
                }
                Ok(other) => failures.push(
                    CallFailure::Refused(PeerError::Invalid(format!("unexpected reply {other:?}")))
                        .to_failure(&node),
                ),
                Err(f) => {
                    let failure = f.to_failure(&node);
                    trace.add(&node, || {
                        format!(
                            "failed after {us} µs: {} ({})",
                            failure.kind, failure.detail
                        )
                    });
                    failures.push(failure);
                }
            }
        }
        if replies.len() < r as usize {
            return Err(CoordinatorError::QuorumNotReached {
                op: "read",
                needed: r,
                got: replies.len() as u8,
                failures,
            });
        }
        let policy = ks.policy.resolver();
        let merged = replies.iter().fold(Object::default(), |mut acc, (_, o)| {
            policy.merge(&ks, &mut acc, o);
            acc
        });
        self.metrics.siblings_per_read(merged.siblings.len());
        self.metrics.object_size(
            "read",
            merged
                .siblings
                .iter()
                .map(|s| s.value.as_ref().map_or(0, Vec::len))
                .sum(),
        );
        let stale: Vec<String> = replies
            .iter()
            .filter(|(_, o)| *o != merged)
            .map(|(n, _)| n.clone())
            .collect();
        let context = self.seal_context(&ks, &req.key, &policy.context(&merged));
        let view = policy.view(&ks, &merged);
        match ks.read_repair {
            ReadRepair::Off => {}
            ReadRepair::Async => {
                if !stale.is_empty() {
                    trace.add(&self.name, || {
                        format!("read repair (async): sending merged object to {stale:?}")
                    });
                }
                self.spawn_read_repair(ks, req.key.clone(), merged.clone(), replies, rx, pl.len());
            }
            ReadRepair::Blocking => {
                let fresh = (replies.len() - stale.len()) as u8;
                if fresh < r {
                    trace.add(&self.name, || {
                        format!("read repair (blocking): sending merged object to {stale:?}")
                    });
                    let repair = PeerRequest::Replicate {
                        keyspace: ks.clone(),
                        key: req.key.clone(),
                        object: merged.clone(),
                    };
                    let mut acks = self.fan_out(&stale, &repair, deadline);
                    let (mut holding, mut failures) = (fresh, Vec::new());
                    while holding < r {
                        let Some((node, us, res)) = acks.recv().await else {
                            break;
                        };
                        match res {
                            Ok(_) => {
                                trace.add(&node, || format!("repaired after {us} µs"));
                                holding += 1;
                            }
                            Err(f) => failures.push(f.to_failure(&node)),
                        }
                    }
                    if holding < r {
                        return Err(CoordinatorError::QuorumNotReached {
                            op: "read repair",
                            needed: r,
                            got: holding,
                            failures,
                        });
                    }
                }
            }
        }
        trace.add(&self.name, || "read complete".to_string());
        Ok(GetResponse {
            values: sibling_views(&view.values),
            tombstones: view.tombstones,
            context,
            crdt: view.crdt,
            trace: trace.finish(),
        })
    }

    /// After a read: wait (up to the request deadline, already inside the fan-out tasks)
    /// for the replicas that had not answered, then send the merged object to every
    /// replica whose copy differs from it.
    ///
    /// Waiting for late replies costs no repair slot (the fan-out tasks exist anyway and
    /// end at the request deadline); a slot is taken only when a replica is actually stale
    /// and a repair must be sent, and a repair that finds no slot is counted as skipped.
    fn spawn_read_repair(
        self: &Arc<Self>,
        ks: KeyspaceDef,
        key: Key,
        mut merged: Object,
        mut replies: Vec<(String, Object)>,
        mut rx: mpsc::Receiver<(String, u64, CallResult)>,
        replicas: usize,
    ) {
        let any_stale = replies.iter().any(|(_, o)| *o != merged);
        if !any_stale && replies.len() >= replicas {
            // Every replica answered with the merged object: nothing to repair.
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            while let Some((node, _, res)) = rx.recv().await {
                if let Ok(PeerResponse::Object(o)) = res {
                    let o = o.unwrap_or_default();
                    ks.policy.resolver().merge(&ks, &mut merged, &o);
                    replies.push((node, o));
                }
            }
            let stale: Vec<String> = replies
                .into_iter()
                .filter(|(_, o)| *o != merged)
                .map(|(n, _)| n)
                .collect();
            if stale.is_empty() {
                return;
            }
            let Ok(_permit) = Arc::clone(&me.repair_slots).try_acquire_owned() else {
                tracing::warn!(%key, stale = stale.len(), "read repair skipped: too many repairs pending");
                for _ in &stale {
                    me.metrics.read_repair_skipped();
                }
                return;
            };
            let deadline = Instant::now() + me.request_timeout;
            for node in stale {
                tracing::debug!(%key, replica = %node, "read repair");
                me.metrics.read_repairs_sent(1);
                let req = PeerRequest::Replicate {
                    keyspace: ks.clone(),
                    key: key.clone(),
                    object: merged.clone(),
                };
                if let Err(f) = me.call_replica(&node, req, deadline).await {
                    let f = f.to_failure(&node);
                    tracing::debug!(%key, replica = %node, kind = %f.kind, "read repair failed");
                }
            }
        });
    }

    /// Coordinate a write or delete.
    pub async fn put(self: &Arc<Self>, req: PutRequest) -> Result<PutResponse, CoordinatorError> {
        let mut trace = Trace::new(req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        let policy = ks.policy.resolver();
        policy.check_plain_write(&ks, if req.value.is_some() { "put" } else { "delete" })?;
        req.key.validate(self.limits.max_key_bytes)?;
        self.check_value(req.value.as_deref())?;
        let w = ks.quorum("w", req.w.unwrap_or(ks.w))?;
        let context = self.open_context(&ks, &req.key, &req.context)?;
        policy.check_stamp(&ks, req.timestamp, req.actor.as_deref())?;
        self.check_client_timestamp(req.timestamp)?;
        if let Some(v) = &req.value {
            self.metrics.object_size("write", v.len());
        }
        let pl = self.ring.preference_list(&req.key.partition, ks.n as usize);
        let op = if req.value.is_some() {
            "write"
        } else {
            "delete"
        };
        trace.add(&self.name, || {
            format!(
                "coordinating {op} of {}; replicas {pl:?}; waiting for w={w}",
                req.key
            )
        });
        let deadline = Instant::now() + self.request_timeout;
        let write = PeerRequest::Write {
            keyspace: ks.clone(),
            key: req.key.clone(),
            context,
            value: req.value.clone(),
            if_context: req.if_context,
            client_ts: req.timestamp,
            actor: req.actor.clone(),
        };
        let (lead, reply, failures) = self
            .lead_write(&pl, &write, op, w, deadline, &mut trace)
            .await?;
        let PeerResponse::Written { object, dot } = reply else {
            return Err(CoordinatorError::Replica(format!(
                "{lead} sent an unexpected reply to a write"
            )));
        };
        let dot = surviving_dot(&object, dot.as_ref());
        let context_out = self.seal_context(&ks, &req.key, &policy.context(&object));
        let replicate = PeerRequest::Replicate {
            keyspace: ks,
            key: req.key.clone(),
            object,
        };
        self.replicate_from_lead(
            &pl, &lead, &replicate, op, w, deadline, failures, &mut trace,
        )
        .await?;
        Ok(PutResponse {
            context: context_out,
            dot,
            trace: trace.finish(),
        })
    }

    /// Coordinate an atomic batch of writes to one partition.
    pub async fn batch(
        self: &Arc<Self>,
        req: BatchRequest,
    ) -> Result<BatchResponse, CoordinatorError> {
        let mut trace = Trace::new(req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        let policy = ks.policy.resolver();
        policy.check_plain_write(&ks, "batch")?;
        let first = req.items.first().ok_or(CoordinatorError::EmptyBatch)?;
        policy.check_batch(&ks)?;
        let partition = first.key.partition.clone();
        if req.items.len() > MAX_BATCH_ITEMS {
            return Err(CoordinatorError::BatchTooLarge {
                len: req.items.len(),
                max: MAX_BATCH_ITEMS,
            });
        }
        let mut items = Vec::with_capacity(req.items.len());
        for item in &req.items {
            item.key.validate(self.limits.max_key_bytes)?;
            if item.key.partition != partition {
                return Err(CoordinatorError::CrossPartitionBatch {
                    first: first.key.to_string(),
                    other: item.key.to_string(),
                });
            }
            self.check_value(item.value.as_deref())?;
            items.push((
                serde_bytes::ByteBuf::from(item.key.sort.clone()),
                self.open_context(&ks, &item.key, &item.context)?,
                item.value.clone().map(serde_bytes::ByteBuf::from),
            ));
        }
        let w = ks.quorum("w", req.w.unwrap_or(ks.w))?;
        let pl = self.ring.preference_list(&partition, ks.n as usize);
        trace.add(&self.name, || {
            format!("coordinating a batch of {} item(s) in partition {}; replicas {pl:?}; waiting for w={w}", items.len(), String::from_utf8_lossy(&partition))
        });
        let deadline = Instant::now() + self.request_timeout;
        let write = PeerRequest::WriteBatch {
            keyspace: ks.clone(),
            partition: partition.clone(),
            items,
        };
        let (lead, reply, failures) = self
            .lead_write(&pl, &write, "batch", w, deadline, &mut trace)
            .await?;
        let PeerResponse::WrittenBatch { objects, dots } = reply else {
            return Err(CoordinatorError::Replica(format!(
                "{lead} sent an unexpected reply to a batch"
            )));
        };
        let dots = objects
            .iter()
            .zip(&dots)
            .map(|(o, d)| surviving_dot(o, Some(d)))
            .collect();
        let replicate = PeerRequest::ReplicateBatch {
            keyspace: ks,
            partition,
            items: req
                .items
                .iter()
                .zip(objects)
                .map(|(i, o)| (serde_bytes::ByteBuf::from(i.key.sort.clone()), o))
                .collect(),
        };
        self.replicate_from_lead(
            &pl, &lead, &replicate, "batch", w, deadline, failures, &mut trace,
        )
        .await?;
        Ok(BatchResponse {
            dots,
            trace: trace.finish(),
        })
    }

    /// Coordinate a CRDT operation: the lead replica applies it (its name is the CRDT
    /// actor), then its state is replicated like any write.
    pub async fn update(
        self: &Arc<Self>,
        req: UpdateRequest,
    ) -> Result<UpdateResponse, CoordinatorError> {
        let mut trace = Trace::new(req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        let policy = ks.policy.resolver();
        policy.check_update(&ks, &req.op)?;
        req.key.validate(self.limits.max_key_bytes)?;
        let len = req.op.payload_len();
        if len > self.limits.max_value_bytes {
            return Err(CoordinatorError::ValueTooLarge {
                len,
                max: self.limits.max_value_bytes,
            });
        }
        let w = ks.quorum("w", req.w.unwrap_or(ks.w))?;
        let context = self.open_context(&ks, &req.key, &req.context)?;
        let pl = self.ring.preference_list(&req.key.partition, ks.n as usize);
        let op = "update";
        trace.add(&self.name, || {
            format!(
                "coordinating {} of {}; replicas {pl:?}; waiting for w={w}",
                req.op.name(),
                req.key
            )
        });
        let deadline = Instant::now() + self.request_timeout;
        let update = PeerRequest::Update {
            keyspace: ks.clone(),
            key: req.key.clone(),
            op: req.op.clone(),
            context,
        };
        let (lead, reply, failures) = self
            .lead_write(&pl, &update, op, w, deadline, &mut trace)
            .await?;
        let PeerResponse::Written { object, .. } = reply else {
            return Err(CoordinatorError::Replica(format!(
                "{lead} sent an unexpected reply to an update"
            )));
        };
        let context_out = self.seal_context(&ks, &req.key, &policy.context(&object));
        let replicate = PeerRequest::Replicate {
            keyspace: ks,
            key: req.key.clone(),
            object,
        };
        self.replicate_from_lead(
            &pl, &lead, &replicate, op, w, deadline, failures, &mut trace,
        )
        .await?;
        Ok(UpdateResponse {
            context: context_out,
            trace: trace.finish(),
        })
    }

    /// The client's context for `key`, if this cluster sealed it for that key.
    fn open_context(
        &self,
        ks: &KeyspaceDef,
        key: &Key,
        text: &str,
    ) -> Result<VersionVector, CoordinatorError> {
        Ok(self
            .contexts
            .open(&ks.name, &key.encode(&ks.name), key, text)?)
    }

    /// The context handed to a client for `vv`, a version vector of `key`.
    fn seal_context(&self, ks: &KeyspaceDef, key: &Key, vv: &VersionVector) -> String {
        self.contexts.seal(&ks.name, &key.encode(&ks.name), vv)
    }

    /// Refuse a client timestamp further ahead of this node's clock than
    /// `limits.max_clock_skew_ms` (timestamps are µs since the epoch, as Cassandra's
    /// `USING TIMESTAMP`; smaller numbers, such as version numbers, are always accepted).
    /// A far-future stamp would win every later write to the key for good.
    fn check_client_timestamp(&self, ts: Option<u64>) -> Result<(), CoordinatorError> {
        let Some(ts) = ts else { return Ok(()) };
        let now_us = self.clock.now_ms().saturating_mul(1000);
        let skew_us = self.limits.max_clock_skew_ms.saturating_mul(1000);
        let latest = now_us.saturating_add(skew_us);
        if ts > latest {
            self.metrics
                .future_timestamps_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(CoordinatorError::BadStamp(format!(
                "client timestamp {ts} µs is more than {} ms ahead of node {}'s clock ({now_us} µs); timestamps are microseconds since the Unix epoch (limits.max_clock_skew_ms)",
                self.limits.max_clock_skew_ms, self.name
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: Option<&[u8]>) -> Result<(), CoordinatorError> {
        match value {
            Some(v) if v.len() > self.limits.max_value_bytes => {
                Err(CoordinatorError::ValueTooLarge {
                    len: v.len(),
                    max: self.limits.max_value_bytes,
                })
            }
            _ => Ok(()),
        }
    }

    /// Step 1 of a write: find a replica that issues the new version(s). Returns the lead,
    /// its reply, and the failures met on the way.
    async fn lead_write(
        self: &Arc<Self>,
        pl: &[String],
        write: &PeerRequest,
        op: &'static str,
        w: u8,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<(String, PeerResponse, BTreeMap<String, ReplicaFailure>), CoordinatorError> {
        let mut failures: BTreeMap<String, ReplicaFailure> = BTreeMap::new();
        let candidates = self.lead_candidates(pl);
        let count = candidates.len();
        for (i, cand) in candidates.into_iter().enumerate() {
            // Give each candidate half of what remains (the last gets all of it), so one
            // silent replica cannot use up the whole request timeout.
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            let attempt_deadline = if i + 1 == count {
                deadline
            } else {
                now + remaining / 2
            };
            let started = Instant::now();
            match self
                .call_replica(&cand, write.clone(), attempt_deadline)
                .await
            {
                Ok(reply) => {
                    trace.add(&cand, || {
                        format!(
                            "lead replica: issued the version(s) and stored them after {} µs",
                            started.elapsed().as_micros()
                        )
                    });
                    return Ok((cand, reply, failures));
                }
                Err(CallFailure::Refused(PeerError::SiblingLimit(m))) => {
                    return Err(CoordinatorError::SiblingLimit(m))
                }
                Err(CallFailure::Refused(PeerError::Conflict(m))) => {
                    return Err(CoordinatorError::Conflict(m))
                }
                Err(CallFailure::Refused(PeerError::Invalid(m))) => {
                    return Err(CoordinatorError::Replica(m))
                }
                Err(f) => {
                    let failure = f.to_failure(&cand);
                    trace.add(&cand, || {
                        format!("lead attempt failed: {} ({})", failure.kind, failure.detail)
                    });
                    failures.insert(cand, failure);
                }
            }
        }
        Err(CoordinatorError::QuorumNotReached {
            op,
            needed: w,
            got: 0,
            failures: failures.into_values().collect(),
        })
    }

    /// Step 2 of a write: send the lead's result to the other replicas and wait until W
    /// replicas (the lead included) hold it.
    #[allow(clippy::too_many_arguments)]
    async fn replicate_from_lead(
        self: &Arc<Self>,
        pl: &[String],
        lead: &str,
        replicate: &PeerRequest,
        op: &'static str,
        w: u8,
        deadline: Instant,
        mut failures: BTreeMap<String, ReplicaFailure>,
        trace: &mut Trace,
    ) -> Result<(), CoordinatorError> {
        let others: Vec<String> = pl.iter().filter(|n| *n != lead).cloned().collect();
        let mut acks: u8 = 1;
        let mut rx = self.fan_out(&others, replicate, deadline);
        let mut answered = 0usize;
        while acks < w && answered < others.len() {
            let Some((node, us, res)) = rx.recv().await else {
                break;
            };
            answered += 1;
            match res {
                Ok(_) => {
                    trace.add(&node, || format!("stored replica after {us} µs"));
                    failures.remove(&node);
                    acks += 1;
                }
                Err(f) => {
                    let failure = f.to_failure(&node);
                    trace.add(&node, || {
                        format!(
                            "failed after {us} µs: {} ({})",
                            failure.kind, failure.detail
                        )
                    });
                    failures.insert(node, failure);
                }
            }
        }
        if acks < w {
            return Err(CoordinatorError::QuorumNotReached {
                op,
                needed: w,
                got: acks,
                failures: failures.into_values().collect(),
            });
        }
        trace.add(&self.name, || {
            format!("{op} acknowledged by {acks} replica(s)")
        });
        Ok(())
    }

    /// Coordinate a range read of one partition: R replicas' pages merged item by item.
    pub async fn scan(
        self: &Arc<Self>,
        req: ScanRequest,
    ) -> Result<ScanResponse, CoordinatorError> {
        let mut trace = Trace::new(req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        Key {
            partition: req.partition.clone(),
            sort: req.from.clone(),
        }
        .validate(self.limits.max_key_bytes)?;
        let r = ks.quorum("r", req.r.unwrap_or(ks.r))?;
        let limit = (req.limit as usize).clamp(1, crate::node::MAX_SCAN_LIMIT);
        let pl = self.ring.preference_list(&req.partition, ks.n as usize);
        trace.add(&self.name, || {
            format!(
                "coordinating scan of partition {}; replicas {pl:?}; waiting for r={r}",
                String::from_utf8_lossy(&req.partition)
            )
        });
        let deadline = Instant::now() + self.request_timeout;
        let scan = PeerRequest::Scan {
            keyspace: ks.clone(),
            partition: req.partition.clone(),
            from: req.from.clone(),
            to: req.to.clone(),
            limit: limit as u32,
        };
        let mut rx = self.fan_out(&pl, &scan, deadline);
        let mut replies: Vec<ScanReply> = Vec::new();
        let mut failures = Vec::new();
        while replies.len() < r as usize && failures.len() <= pl.len() - r as usize {
            let Some((node, us, res)) = rx.recv().await else {
                break;
            };
            match res {
                Ok(PeerResponse::Items { items, more }) => {
                    trace.add(&node, || {
                        format!("replied after {us} µs: {} item(s)", items.len())
                    });
                    replies.push((
                        node,
                        items.into_iter().map(|(s, o)| (s.into_vec(), o)).collect(),
                        more,
                    ));
                }
                Ok(other) => failures.push(
                    CallFailure::Refused(PeerError::Invalid(format!("unexpected reply {other:?}")))
                        .to_failure(&node),
                ),
                Err(f) => failures.push(f.to_failure(&node)),
            }
        }
        if replies.len() < r as usize {
            return Err(CoordinatorError::QuorumNotReached {
                op: "scan",
                needed: r,
                got: replies.len() as u8,
                failures,
            });
        }
        // Every item among the first `limit` of the union was returned by every replica
        // that stores it (a replica stops only after `limit` smaller items), so the merge
        // of the first `limit` keys is exact.
        let policy = ks.policy.resolver();
        let mut merged: BTreeMap<Vec<u8>, Object> = BTreeMap::new();
        for (_, items, _) in &replies {
            for (sort, o) in items {
                policy.merge(&ks, merged.entry(sort.clone()).or_default(), o);
            }
        }
        // A replica page may also stop early at `limits.max_reply_bytes`: only keys up to
        // the smallest last key of a page that stopped early were seen by every replica
        // holding them, so the merged page ends there.
        let cut: Option<Vec<u8>> = replies
            .iter()
            .filter(|(_, _, more)| *more)
            .filter_map(|(_, items, _)| items.keys().next_back().cloned())
            .min();
        let total = merged.len();
        let mut page: Vec<(Vec<u8>, Object)> = Vec::new();
        let mut page_bytes = 0usize;
        for (sort, o) in merged {
            if page.len() >= limit || cut.as_ref().is_some_and(|c| sort > *c) {
                break;
            }
            // The client's page is bounded in bytes too (always at least one item).
            let bytes = sort.len() + object_bytes(&o);
            if !page.is_empty() && page_bytes + bytes > self.limits.max_reply_bytes {
                break;
            }
            page_bytes += bytes;
            page.push((sort, o));
        }
        let more = replies.iter().any(|(_, _, more)| *more) || total > page.len();
        let next = if more {
            page.last().map(|(s, _)| {
                let mut n = s.clone();
                n.push(0);
                serde_bytes::ByteBuf::from(n)
            })
        } else {
            None
        };
        if ks.read_repair != ReadRepair::Off {
            self.spawn_scan_repair(&ks, &req.partition, &page, &replies);
        }
        Ok(ScanResponse {
            items: page
                .into_iter()
                .filter(|(_, o)| policy.visible(o))
                .map(|(sort, o)| {
                    let key = Key {
                        partition: req.partition.clone(),
                        sort,
                    };
                    let view = policy.view(&ks, &o);
                    ScanItem {
                        context: self.seal_context(&ks, &key, &policy.context(&o)),
                        sort: key.sort,
                        values: sibling_views(&view.values),
                        crdt: view.crdt,
                    }
                })
                .collect(),
            next,
            trace: trace.finish(),
        })
    }

    /// Send each replica that answered a scan the merged items it lacked or had stale,
    /// as one batch (so it applies them atomically).
    fn spawn_scan_repair(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        partition: &[u8],
        page: &[(Vec<u8>, Object)],
        replies: &[ScanReply],
    ) {
        for (node, items, _) in replies {
            let stale: Vec<(serde_bytes::ByteBuf, Object)> = page
                .iter()
                .filter(|(sort, o)| items.get(sort) != Some(o))
                .map(|(sort, o)| (serde_bytes::ByteBuf::from(sort.clone()), o.clone()))
                .collect();
            if stale.is_empty() {
                continue;
            }
            let Ok(permit) = Arc::clone(&self.repair_slots).try_acquire_owned() else {
                tracing::warn!(replica = %node, "scan repair skipped: too many repairs pending");
                self.metrics.read_repair_skipped();
                continue;
            };
            let req = PeerRequest::ReplicateBatch {
                keyspace: ks.clone(),
                partition: partition.to_vec(),
                items: stale,
            };
            let (me, node) = (Arc::clone(self), node.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let deadline = Instant::now() + me.request_timeout;
                if let Err(f) = me.call_replica(&node, req, deadline).await {
                    let f = f.to_failure(&node);
                    tracing::debug!(replica = %node, kind = %f.kind, "scan repair failed");
                }
            });
        }
    }

    /// Lead replicas to try, best first: this node if it is a replica, then replicas last
    /// seen up (or never contacted), then those last seen down.
    fn lead_candidates(&self, pl: &[String]) -> Vec<String> {
        let mut c: Vec<String> = pl.to_vec();
        c.sort_by_key(|n| match (n == &self.name, self.peer_up(n)) {
            (true, _) => 0,
            (false, Some(true)) | (false, None) => 1,
            (false, Some(false)) => 2,
        });
        c
    }

    /// Create a keyspace here and announce it to every other node.
    pub(crate) async fn create_keyspace(
        self: &Arc<Self>,
        def: KeyspaceDef,
    ) -> Result<ClientResponse, CoordinatorError> {
        def.validate(self.members.len())?;
        self.learn_keyspace(def.clone())?;
        let peers = self.other_members();
        let deadline = Instant::now() + self.request_timeout;
        let mut rx = self.fan_out(
            &peers,
            &PeerRequest::AnnounceKeyspace(def.clone()),
            deadline,
        );
        let mut acked = vec![self.name.clone()];
        let mut missing = Vec::new();
        while let Some((node, _, res)) = rx.recv().await {
            match res {
                Ok(_) => acked.push(node),
                Err(CallFailure::Refused(PeerError::Invalid(m))) => {
                    return Err(CoordinatorError::Replica(format!("{node}: {m}")));
                }
                Err(_) => missing.push(node),
            }
        }
        acked.sort();
        missing.sort();
        Ok(ClientResponse::KeyspaceCreated {
            def,
            acked,
            missing,
        })
    }
}

/// About how many bytes an object takes in a reply: its values and per-version overhead
/// (dots, timestamps, the version vector). Used to bound scan pages in bytes.
fn object_bytes(o: &Object) -> usize {
    let siblings: usize = o
        .siblings
        .iter()
        .map(|s| {
            48 + s.value.as_ref().map_or(0, Vec::len) + s.actor.as_ref().map_or(0, String::len)
        })
        .sum();
    let crdt = o
        .crdt
        .as_ref()
        .and_then(|c| rmp_serde::to_vec(c).ok())
        .map_or(0, |v| v.len());
    32 + siblings + 24 * o.vv.0.len() + crdt
}
