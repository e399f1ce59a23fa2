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

use crate::causality::{CausalityError, Object, VersionVector};
use crate::key::{Key, KeyError};
use crate::keyspace::{validate_name, KeyspaceDef, KeyspaceError, ReadRepair};
use crate::node::{Node, NodeError};
use crate::proto::{
    ClientResponse, GetRequest, GetResponse, PeerError, PeerRequest, PeerResponse, PutRequest,
    PutResponse, ReplicaFailure, SiblingView, TraceEvent,
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
    /// The causal context is malformed.
    #[error(transparent)]
    Context(#[from] CausalityError),
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
    /// Local metadata failure.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A replica reported an invalid request.
    #[error("replica refused the request: {0}")]
    Replica(String),
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
enum CallFailure {
    Timeout,
    Transport(TransportError),
    Refused(PeerError),
}

impl CallFailure {
    fn to_failure(&self, node: &str) -> ReplicaFailure {
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

type CallResult = Result<PeerResponse, CallFailure>;

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
            Ok(Ok(resp)) => Ok(resp),
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
    fn fan_out(
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
        let peers: Vec<String> = self
            .members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| *n != self.name)
            .collect();
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
        let merged = replies
            .iter()
            .fold(Object::default(), |acc, (_, o)| acc.merged(o));
        let stale: Vec<String> = replies
            .iter()
            .filter(|(_, o)| *o != merged)
            .map(|(n, _)| n.clone())
            .collect();
        match ks.read_repair {
            ReadRepair::Off => {}
            ReadRepair::Async => {
                if !stale.is_empty() {
                    trace.add(&self.name, || {
                        format!("read repair (async): sending merged object to {stale:?}")
                    });
                }
                self.spawn_read_repair(ks, req.key.clone(), merged.clone(), replies, rx);
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
            values: merged
                .live_values()
                .map(|s| SiblingView {
                    value: s.value.clone().unwrap_or_default(),
                    dot: format!("{}:{}", s.dot.actor, s.dot.counter),
                    written_at_ms: s.written_at_ms,
                })
                .collect(),
            tombstones: merged.siblings.iter().filter(|s| s.value.is_none()).count(),
            context: merged.vv.to_context(),
            trace: trace.finish(),
        })
    }

    /// After a read: wait (up to the request deadline, already inside the fan-out tasks)
    /// for the replicas that had not answered, then send the merged object to every
    /// replica whose copy differs from it.
    fn spawn_read_repair(
        self: &Arc<Self>,
        ks: KeyspaceDef,
        key: Key,
        mut merged: Object,
        mut replies: Vec<(String, Object)>,
        mut rx: mpsc::Receiver<(String, u64, CallResult)>,
    ) {
        let Ok(permit) = Arc::clone(&self.repair_slots).try_acquire_owned() else {
            tracing::warn!(%key, "read repair skipped: too many repairs pending");
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            while let Some((node, _, res)) = rx.recv().await {
                if let Ok(PeerResponse::Object(o)) = res {
                    let o = o.unwrap_or_default();
                    merged.merge(&o);
                    replies.push((node, o));
                }
            }
            let deadline = Instant::now() + me.request_timeout;
            for (node, o) in replies {
                if o != merged {
                    tracing::debug!(%key, replica = %node, "read repair");
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
            }
        });
    }

    /// Coordinate a write or delete.
    pub async fn put(self: &Arc<Self>, req: PutRequest) -> Result<PutResponse, CoordinatorError> {
        let mut trace = Trace::new(req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        req.key.validate(self.limits.max_key_bytes)?;
        if let Some(v) = &req.value {
            if v.len() > self.limits.max_value_bytes {
                return Err(CoordinatorError::ValueTooLarge {
                    len: v.len(),
                    max: self.limits.max_value_bytes,
                });
            }
        }
        let w = ks.quorum("w", req.w.unwrap_or(ks.w))?;
        let context = VersionVector::from_context(&req.context)?;
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
        let mut failures: BTreeMap<String, ReplicaFailure> = BTreeMap::new();

        // 1. The lead replica issues the dot.
        let mut lead: Option<(String, Object)> = None;
        let candidates = self.lead_candidates(&pl);
        let count = candidates.len() as u32;
        for (i, cand) in candidates.into_iter().enumerate() {
            // Give each candidate half of what remains (the last gets all of it), so one
            // silent replica cannot use up the whole request timeout.
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            let attempt_deadline = if (i as u32) + 1 == count {
                deadline
            } else {
                now + remaining / 2
            };
            let write = PeerRequest::Write {
                keyspace: ks.clone(),
                key: req.key.clone(),
                context: context.clone(),
                value: req.value.clone(),
            };
            let started = Instant::now();
            match self.call_replica(&cand, write, attempt_deadline).await {
                Ok(PeerResponse::Written { object }) => {
                    trace.add(&cand, || {
                        format!(
                            "lead replica: issued the version and stored it after {} µs",
                            started.elapsed().as_micros()
                        )
                    });
                    lead = Some((cand, object));
                    break;
                }
                Ok(other) => {
                    let f = CallFailure::Refused(PeerError::Invalid(format!(
                        "unexpected reply {other:?}"
                    )))
                    .to_failure(&cand);
                    failures.insert(cand, f);
                }
                Err(CallFailure::Refused(PeerError::SiblingLimit(m))) => {
                    return Err(CoordinatorError::SiblingLimit(m))
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
        let Some((lead_node, object)) = lead else {
            return Err(CoordinatorError::QuorumNotReached {
                op,
                needed: w,
                got: 0,
                failures: failures.into_values().collect(),
            });
        };
        let dot = object
            .siblings
            .iter()
            .find(|s| s.dot.actor == lead_node && s.dot.counter == object.vv.get(&lead_node))
            .map(|s| format!("{}:{}", s.dot.actor, s.dot.counter))
            .unwrap_or_default();
        let context_out = object.vv.to_context();

        // 2. Replicate the lead's object to the others; W counts the lead.
        let others: Vec<String> = pl.iter().filter(|n| **n != lead_node).cloned().collect();
        let mut acks: u8 = 1;
        let replicate = PeerRequest::Replicate {
            keyspace: ks.clone(),
            key: req.key.clone(),
            object,
        };
        let mut rx = self.fan_out(&others, &replicate, deadline);
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
        Ok(PutResponse {
            context: context_out,
            dot,
            trace: trace.finish(),
        })
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
        let peers: Vec<String> = self
            .members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| *n != self.name)
            .collect();
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
