//! The coordinator: any node, handling a client's request for any key.
//!
//! [`Coordinator`] owns what coordinating needs and nothing else: the ring, the keyspace
//! [`Catalog`], the calls to replicas ([`Peers`]), the limits and timeout, the key that
//! seals clients' contexts, and the node's [`Env`]. The node hands it client requests; it
//! reaches replicas only through typed calls (`crate::peers`), its own replica included,
//! and never calls back into the node.
//!
//! **Read** (`get`, `scan`): ask R of the N replicas of the preference list — this node
//! first when it is one (no network), then replicas the failure detector sees up (or has
//! not contacted yet), then those it sees down, in preference-list order otherwise — and
//! ask the next one only when needed (speculative retry, as Cassandra's): at once when one
//! asked fails (refused, unreachable, timed out) so that R can no longer come, and once
//! more when the R replies have not all come within `timeouts.speculative_read_ms`. Answer
//! after R replies by merging them (dominated versions drop out, concurrent ones stay as
//! siblings), then keep listening in the background until every replica *asked* answered
//! or the request timeout passed, and send the merged object to every replica that
//! answered with a stale or missing copy (asynchronous read repair). Replicas not asked
//! are left to anti-entropy and hinted handoff. `timeouts.speculative_read_ms = 0` asks
//! all N at once, as before.
//!
//! **Write** (`put`, delete = put of a tombstone): one replica, the *lead*, issues the
//! write's dot (itself when this node is a replica, else the first healthy replica),
//! applies it and returns its object; the coordinator sends that object to the other
//! N-1 replicas and answers after W acknowledgements in all (the lead counts).
//!
//! Every wait is bounded by the request timeout, and every wait for several replies is
//! one [`Replies::gather`]: it ends as soon as enough replies counted or so many failed
//! that enough can no longer come. Replies that arrive after the answer are ignored (reads
//! still use them for repair). A failure names how many replies were needed and got, and
//! why each missing replica failed.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::access::{self, ClientIdentity, Permission};
use crate::catalog::{Catalog, CatalogError};
use crate::causality::{Dot, VersionVector};
use crate::config::Limits;
use crate::context::{ContextError, ContextKey};
use crate::env::{Env, Instant};
use crate::key::{Key, KeyError};
use crate::keyspace::{validate_name, KeyspaceDef, KeyspaceError, ReadRepair};
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::object::{Object, Sibling};
use crate::peers::{self, CallFailure, PeerCall, Peers, Replies};
use crate::policy::PolicyError;
use crate::proto::{
    BatchRequest, BatchResponse, ClientRequest, ClientResponse, GetRequest, GetResponse, PeerError,
    PutRequest, PutResponse, ReplicaFailure, ScanItem, ScanRequest, ScanResponse, SiblingView,
    TraceEvent, UpdateRequest, UpdateResponse,
};
use crate::replica::ReplicaError;
use crate::replica_service::MAX_SCAN_LIMIT;
use crate::ring::Ring;

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
    /// A fault-injection request reached a node that does not allow it.
    #[error("{0}")]
    FaultInjectionOff(String),
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
    /// Local keyspace metadata failure.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A replica reported an invalid request.
    #[error("replica refused the request: {0}")]
    Replica(String),
    /// A layout change that cannot be staged or committed as asked.
    #[error("{0}")]
    Layout(String),
    /// A layout commit that could not reach a majority of the current members.
    #[error("{0}")]
    LayoutUnavailable(String),
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
    env: Arc<dyn Env>,
    start: Instant,
    events: Option<Vec<TraceEvent>>,
}

impl Trace {
    fn new(env: &Arc<dyn Env>, enabled: bool) -> Self {
        Trace {
            start: env.now(),
            env: Arc::clone(env),
            events: enabled.then(Vec::new),
        }
    }

    fn add(&mut self, node: &str, activity: impl FnOnce() -> String) {
        if let Some(ev) = &mut self.events {
            ev.push(TraceEvent {
                elapsed_us: self
                    .env
                    .now()
                    .saturating_duration_since(self.start)
                    .as_micros() as u64,
                node: node.to_string(),
                activity: activity(),
            });
        }
    }

    /// Record that `node`'s call failed after `us` µs, and return the failure.
    fn failure(&mut self, node: &str, us: u64, f: &CallFailure) -> ReplicaFailure {
        let failure = f.to_failure(node);
        self.add(node, || {
            format!(
                "failed after {us} µs: {} ({})",
                failure.kind, failure.detail
            )
        });
        failure
    }

    /// As [`Trace::add`], for something that happened at `at` (before now): the event
    /// goes in its place in time.
    fn add_at(&mut self, node: &str, at: Instant, activity: impl FnOnce() -> String) {
        if let Some(ev) = &mut self.events {
            let elapsed_us = at.saturating_duration_since(self.start).as_micros() as u64;
            let i = ev.partition_point(|e| e.elapsed_us <= elapsed_us);
            ev.insert(
                i,
                TraceEvent {
                    elapsed_us,
                    node: node.to_string(),
                    activity: activity(),
                },
            );
        }
    }

    fn finish(self) -> Vec<TraceEvent> {
        self.events.unwrap_or_default()
    }
}

/// One replica's page of a scan: (replica, items by sort key, whether it stopped at the
/// limit).
type ScanReply = (String, BTreeMap<Vec<u8>, Object>, bool);

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

/// What a coordinator is made of (named, so no two of them can be swapped).
pub struct CoordinatorParams {
    /// This node's name.
    pub name: String,
    /// The live layouts: which replicas hold a key, for reads and for writes.
    pub membership: Arc<Membership>,
    /// The keyspaces this node knows.
    pub catalog: Arc<Catalog>,
    /// How to reach replicas, this node's own included.
    pub peers: Arc<Peers>,
    /// Limits on keys, values, clock skew, replies and pending repairs.
    pub limits: Limits,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// Seals and opens clients' causal contexts.
    pub contexts: ContextKey,
    /// Time, timers, randomness and tasks.
    pub env: Arc<dyn Env>,
    /// Where latencies and counters go.
    pub metrics: Arc<Metrics>,
    /// Send a missing primary's copy to a stand-in (`hints.enabled`; each keyspace's
    /// `sloppy_quorum` must allow it too).
    pub sloppy: bool,
    /// How long a read waits for its first R replicas before asking one more
    /// (`timeouts.speculative_read_ms`); zero asks all N at once.
    pub speculative_read: Duration,
    /// Re-introduced bugs (tests only).
    pub bugs: crate::replica::InjectedBugs,
    /// `storage.overlap_lead_sync`: when this node leads a write, replicate it while its
    /// own fsync runs, counting it once durable.
    pub overlap_lead_sync: bool,
}

/// A lead's deferred write, completing once it is durable (its fsync overlapped with
/// replication).
type LeadSync =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ReplicaError>> + Send>>;

/// What a replication loop waits for next: the lead's fsync or a replica's answer.
enum Step<T> {
    /// The lead's fsync completed.
    Lead(Result<(), ReplicaError>),
    /// A replica answered.
    Peer(T),
}

/// The next of the lead's fsync (while `lead` is pending) and `peer` (while
/// `peers_open`); `None` when neither is left. The lead's comes first when both are ready
/// (`biased`: the simulator's runs stay deterministic).
async fn next_step<T>(
    lead: &mut Option<LeadSync>,
    peers_open: &mut bool,
    peer: impl std::future::Future<Output = Option<T>>,
) -> Option<Step<T>> {
    let mut peer = std::pin::pin!(peer);
    loop {
        let got = match (lead.as_mut(), *peers_open) {
            (None, false) => return None,
            (None, true) => match peer.as_mut().await {
                Some(t) => return Some(Step::Peer(t)),
                None => {
                    *peers_open = false;
                    return None;
                }
            },
            (Some(f), false) => Step::Lead(f.await),
            (Some(f), true) => tokio::select! {
                biased;
                r = f => Step::Lead(r),
                p = peer.as_mut() => match p {
                    Some(t) => Step::Peer(t),
                    None => {
                        *peers_open = false;
                        continue;
                    }
                },
            },
        };
        if matches!(got, Step::Lead(_)) {
            *lead = None;
        }
        return Some(got);
    }
}

/// The first step of a write: the lead, its reply, its pending fsync (an overlapped
/// lead's), and the failures met on the way.
type LeadOutcome<R> = (
    String,
    R,
    Option<LeadSync>,
    BTreeMap<String, ReplicaFailure>,
);

/// Coordinates clients' requests on one node.
pub struct Coordinator {
    /// This node's name (lead candidates, traces, errors).
    name: String,
    /// Which replicas hold a key: the live layouts (several while data moves).
    membership: Arc<Membership>,
    /// The keyspaces this node knows; look-ups that miss ask the peers.
    catalog: Arc<Catalog>,
    /// Typed calls to replicas, and their last known health.
    peers: Arc<Peers>,
    /// Limits on keys, values, clock skew and replies.
    limits: Limits,
    /// How long one request may take.
    request_timeout: Duration,
    /// Seals and opens clients' causal contexts.
    contexts: ContextKey,
    /// Time, timers, randomness and tasks: the coordinator's only way to reach them.
    env: Arc<dyn Env>,
    /// Latency histograms and counters.
    metrics: Arc<Metrics>,
    /// Bounds background read repairs (see `limits.max_pending_read_repairs`).
    repair_slots: Arc<Semaphore>,
    /// Hinted handoff is on for this node (`hints.enabled`).
    sloppy: bool,
    /// How long a read waits for its first R replicas before asking one more; zero asks
    /// all N at once (`timeouts.speculative_read_ms`).
    speculative_read: Duration,
    /// Re-introduced bugs (tests only).
    bugs: crate::replica::InjectedBugs,
    /// Overlap this node's fsync as a lead with replication (`storage.overlap_lead_sync`).
    overlap_lead_sync: bool,
}

impl Coordinator {
    /// A coordinator made of `p`.
    pub fn new(p: CoordinatorParams) -> Self {
        Coordinator {
            repair_slots: Arc::new(Semaphore::new(p.limits.max_pending_read_repairs)),
            name: p.name,
            membership: p.membership,
            catalog: p.catalog,
            peers: p.peers,
            limits: p.limits,
            request_timeout: p.request_timeout,
            contexts: p.contexts,
            env: p.env,
            metrics: p.metrics,
            sloppy: p.sloppy,
            speculative_read: p.speculative_read,
            bugs: p.bugs,
            overlap_lead_sync: p.overlap_lead_sync,
        }
    }

    /// Start a read's fan-out (`get`, `scan`): to the first `r` replicas of `pl` in
    /// [`Coordinator::lead_candidates`] order (this node, replicas seen up or not yet
    /// contacted, those seen down), keeping the others for
    /// [`Replies::gather_with_retry`]; returns when to ask one more speculatively. With
    /// `timeouts.speculative_read_ms = 0`, every replica at once.
    fn read_fan_out<C: PeerCall>(
        &self,
        pl: &[String],
        r: u8,
        call: C,
        deadline: Instant,
    ) -> (Replies<C::Reply>, Option<Instant>) {
        let order = self.lead_candidates(pl);
        if self.speculative_read.is_zero() {
            let rx = self.peers.fan_out_some(&order, order.len(), call, deadline);
            return (rx, None);
        }
        let rx = self.peers.fan_out_some(&order, r as usize, call, deadline);
        (rx, Some(self.env.now() + self.speculative_read))
    }

    /// Trace and count the replicas a read asked beyond its first R.
    fn note_extra_reads(&self, trace: &mut Trace, asked: &[peers::Asked]) {
        for a in asked {
            match a.why {
                peers::Extra::Failed => {
                    self.metrics.read_retries.fetch_add(1, Ordering::Relaxed);
                    trace.add_at(&a.node, a.at, || {
                        "asked: a replica asked before failed".to_string()
                    });
                }
                peers::Extra::Slow => {
                    self.metrics
                        .speculative_reads
                        .fetch_add(1, Ordering::Relaxed);
                    let ms = self.speculative_read.as_millis();
                    trace.add_at(&a.node, a.at, || {
                        format!("asked: speculative read (replies not all in after {ms} ms)")
                    });
                }
            }
        }
    }

    /// The replica sets a write must reach a quorum of (see
    /// [`crate::membership::View::write_sets`]); the lead comes from the first, the
    /// oldest live version's, whose owners hold all their data.
    fn write_sets(
        &self,
        view: &crate::membership::View,
        partition: &[u8],
        n: usize,
    ) -> Vec<Vec<String>> {
        let mut sets = view.write_sets(partition, n);
        if self.bugs.write_newest_layout_only {
            let newest = view.current_ring().preference_list(partition, n);
            sets = vec![newest];
        }
        sets
    }

    /// The live layouts this node coordinates with.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// The ring reads use (the oldest live layout's: its owners hold all their data).
    pub fn read_ring(&self) -> Ring {
        self.membership.view().read_ring().clone()
    }

    /// Resolve a keyspace by name: locally, else from any peer that knows it.
    pub async fn keyspace(&self, name: &str) -> Result<KeyspaceDef, CoordinatorError> {
        if let Some(def) = self.catalog.get(name) {
            return Ok(def);
        }
        validate_name(name)?;
        let others = self.peers.others();
        let deadline = self.env.now() + self.request_timeout;
        let mut replies =
            self.peers
                .fan_out(&others, peers::LookupKeyspace(name.to_string()), deadline);
        // The first peer that knows a valid definition answers; the others do not count.
        let cluster_size = self.catalog.cluster_size();
        let found = replies
            .gather(1, |r| match r.result {
                Ok(Some(def)) if def.validate(cluster_size).is_ok() => Ok(def),
                Ok(_) => Err(ReplicaFailure {
                    node: r.node,
                    kind: "error".into(),
                    detail: format!("does not know keyspace {name:?}"),
                }),
                Err(f) => Err(f.to_failure(&r.node)),
            })
            .await;
        if let Some((_, def)) = found.ok.into_iter().next() {
            self.catalog.learn(def.clone())?;
            return Ok(def);
        }
        Err(KeyspaceError::Unknown(name.to_string()).into())
    }

    /// Refuse `req` unless `who` may send it (see [`access`]).
    pub async fn authorize(
        &self,
        who: &ClientIdentity,
        req: &ClientRequest,
    ) -> Result<(), CoordinatorError> {
        match access::needed(req) {
            None => Ok(()),
            Some((Permission::Admin, ks)) => {
                let action = match req {
                    ClientRequest::DropKeyspace(_) => "drop",
                    ClientRequest::SetClockOffset { .. } => "skew the clock of",
                    ClientRequest::ClusterStage(_)
                    | ClientRequest::ClusterCommit
                    | ClientRequest::ClusterAbort => "change the layout of",
                    _ => "create",
                };
                Ok(access::check_admin(who, action, ks)?)
            }
            Some((permission, ks)) => {
                if matches!(who.role, crate::tls::Role::Admin | crate::tls::Role::Node) {
                    return Ok(());
                }
                let def = self.keyspace(ks).await?;
                Ok(access::check_grant(who, permission, &def)?)
            }
        }
    }

    /// The replicas of `key` in keyspace `keyspace`, in preference order.
    pub async fn replicas(
        &self,
        keyspace: &str,
        key: &Key,
    ) -> Result<Vec<String>, CoordinatorError> {
        let ks = self.keyspace(keyspace).await?;
        Ok(self
            .membership
            .view()
            .read_ring()
            .preference_list(&key.partition, ks.n as usize))
    }

    /// Coordinate a read.
    pub async fn get(self: &Arc<Self>, req: GetRequest) -> Result<GetResponse, CoordinatorError> {
        let mut trace = Trace::new(&self.env, req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        req.key.validate(self.limits.max_key_bytes)?;
        // Reads go to the primary replicas only, so `pr` primaries is `pr` replies.
        let pr = primary_quorum(&ks, "pr", req.pr)?;
        let r = ks.quorum("r", req.r.unwrap_or(ks.r))?.max(pr);
        // Reads use the oldest live layout: its owners hold all their data.
        let pl = self
            .membership
            .view()
            .read_ring()
            .preference_list(&req.key.partition, ks.n as usize);
        trace.add(&self.name, || {
            format!(
                "coordinating read of {}; replicas {pl:?}; waiting for r={r}",
                req.key
            )
        });
        let deadline = self.env.now() + self.request_timeout;
        let read = peers::Read {
            keyspace: ks.clone(),
            key: req.key.clone(),
            own_copy: false,
        };
        let (mut rx, speculate_at) = self.read_fan_out(&pl, r, read, deadline);
        let got = rx
            .gather_with_retry(r as usize, speculate_at, |reply| {
                let (node, us) = (&reply.node, reply.us);
                match reply.result {
                    Ok(o) => {
                        trace.add(node, || match &o {
                            Some(o) => {
                                format!("replied after {us} µs: {} sibling(s)", o.siblings.len())
                            }
                            None => format!("replied after {us} µs: key not found"),
                        });
                        Ok(o.unwrap_or_default())
                    }
                    Err(f) => Err(trace.failure(node, us, &f)),
                }
            })
            .await;
        self.note_extra_reads(&mut trace, &got.asked);
        let replies: Vec<(String, Object)> = got.ok;
        if replies.len() < r as usize {
            return Err(CoordinatorError::QuorumNotReached {
                op: "read",
                needed: r,
                got: replies.len() as u8,
                failures: got.failures,
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
                self.spawn_read_repair(ks, req.key.clone(), merged.clone(), replies, rx);
            }
            ReadRepair::Blocking => {
                let fresh = (replies.len() - stale.len()) as u8;
                if fresh < r {
                    trace.add(&self.name, || {
                        format!("read repair (blocking): sending merged object to {stale:?}")
                    });
                    let repair = peers::Replicate {
                        keyspace: ks.clone(),
                        key: req.key.clone(),
                        object: merged.clone(),
                    };
                    let repaired = self
                        .peers
                        .fan_out(&stale, repair, deadline)
                        .gather((r - fresh) as usize, |reply| match reply.result {
                            Ok(()) => {
                                let us = reply.us;
                                trace.add(&reply.node, || format!("repaired after {us} µs"));
                                Ok(())
                            }
                            Err(f) => Err(f.to_failure(&reply.node)),
                        })
                        .await;
                    let holding = fresh + repaired.ok.len() as u8;
                    if holding < r {
                        return Err(CoordinatorError::QuorumNotReached {
                            op: "read repair",
                            needed: r,
                            got: holding,
                            failures: repaired.failures,
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

    /// This node's own copy of a key, read from its replica alone: no quorum, no other
    /// replica, no repair (`quorumkv get --replica NODE`, and the harness's convergence
    /// check). A node outside the key's preference list answers too (usually: nothing).
    pub async fn replica_copy(&self, req: GetRequest) -> Result<ClientResponse, CoordinatorError> {
        let ks = self.keyspace(&req.keyspace).await?;
        req.key.validate(self.limits.max_key_bytes)?;
        let owner = self
            .membership
            .view()
            .write_sets(&req.key.partition, ks.n as usize)
            .iter()
            .any(|s| s.contains(&self.name));
        let deadline = self.env.now() + self.request_timeout;
        let read = peers::Read {
            keyspace: ks.clone(),
            key: req.key.clone(),
            own_copy: true,
        };
        let object = match self.peers.call(&self.name, read, deadline).await {
            Ok(o) => o.unwrap_or_default(),
            Err(f) => {
                return Err(CoordinatorError::QuorumNotReached {
                    op: "replica read",
                    needed: 1,
                    got: 0,
                    failures: vec![f.to_failure(&self.name)],
                })
            }
        };
        let policy = ks.policy.resolver();
        let view = policy.view(&ks, &object);
        Ok(ClientResponse::ReplicaCopy {
            node: self.name.clone(),
            owner,
            copy: GetResponse {
                values: sibling_views(&view.values),
                tombstones: view.tombstones,
                context: self.seal_context(&ks, &req.key, &policy.context(&object)),
                crdt: view.crdt,
                trace: Vec::new(),
            },
        })
    }

    /// After a read: wait (up to the request deadline, already inside the fan-out tasks)
    /// for the replicas asked that had not answered, then send the merged object to every
    /// replica that answered with a copy that differs from it. Replicas the read did not
    /// ask are not read, so not repaired here (anti-entropy and hinted handoff are).
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
        mut rx: Replies<Option<Object>>,
    ) {
        // No more replicas are asked: the channel closes once the asked ones answered.
        rx.seal();
        let any_stale = replies.iter().any(|(_, o)| *o != merged);
        if !any_stale && rx.pending() == 0 {
            // Every replica asked answered with the merged object: nothing to repair.
            return;
        }
        let me = Arc::clone(self);
        self.env.spawn(Box::pin(async move {
            while let Some(reply) = rx.recv().await {
                if let Ok(o) = reply.result {
                    let o = o.unwrap_or_default();
                    ks.policy.resolver().merge(&ks, &mut merged, &o);
                    replies.push((reply.node, o));
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
            let deadline = me.env.now() + me.request_timeout;
            for node in stale {
                tracing::debug!(%key, replica = %node, "read repair");
                me.metrics.read_repairs_sent(1);
                let req = peers::Replicate {
                    keyspace: ks.clone(),
                    key: key.clone(),
                    object: merged.clone(),
                };
                if let Err(f) = me.peers.call(&node, req, deadline).await {
                    let f = f.to_failure(&node);
                    tracing::debug!(%key, replica = %node, kind = %f.kind, "read repair failed");
                }
            }
        }));
    }

    /// Coordinate a write or delete.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, CoordinatorError> {
        let mut trace = Trace::new(&self.env, req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        let policy = ks.policy.resolver();
        policy.check_plain_write(&ks, if req.value.is_some() { "put" } else { "delete" })?;
        req.key.validate(self.limits.max_key_bytes)?;
        self.check_value(req.value.as_deref())?;
        let w = ks.quorum("w", req.w.unwrap_or(ks.w))?;
        let pw = primary_quorum(&ks, "pw", req.pw)?;
        let context = self.open_context(&ks, &req.key, &req.context)?;
        policy.check_stamp(&ks, req.timestamp, req.actor.as_deref())?;
        self.check_client_timestamp(req.timestamp)?;
        if let Some(v) = &req.value {
            self.metrics.object_size("write", v.len());
        }
        // The write counts under its layout version until it ends, so the node can tell
        // when none under an older version is left (`Membership::try_ack`).
        let (view, _layout_guard) = self.membership.write_guard();
        let sets = self.write_sets(&view, &req.key.partition, ks.n as usize);
        let pl = sets[0].clone();
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
        let deadline = self.env.now() + self.request_timeout;
        let write = peers::Write {
            keyspace: ks.clone(),
            key: req.key.clone(),
            context,
            value: req.value.clone(),
            if_context: req.if_context,
            client_ts: req.timestamp,
            actor: req.actor.clone(),
        };
        let (lead, peers::Written { object, dot }, lead_sync, failures) = self
            .lead_write(&pl, &write, op, w, deadline, &mut trace)
            .await?;
        let dot = surviving_dot(&object, dot.as_ref());
        let context_out = self.seal_context(&ks, &req.key, &policy.context(&object));
        let replicate = peers::Replicate {
            keyspace: ks,
            key: req.key.clone(),
            object,
        };
        let quorum = Quorum { w, pw };
        let out = Outgoing::One(replicate);
        self.replicate(
            &sets, &lead, lead_sync, out, op, quorum, deadline, failures, &mut trace,
        )
        .await?;
        Ok(PutResponse {
            context: context_out,
            dot,
            trace: trace.finish(),
        })
    }

    /// Coordinate an atomic batch of writes to one partition.
    pub async fn batch(&self, req: BatchRequest) -> Result<BatchResponse, CoordinatorError> {
        let mut trace = Trace::new(&self.env, req.trace);
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
        // The write counts under its layout version until it ends, so the node can tell
        // when none under an older version is left (`Membership::try_ack`).
        let (view, _layout_guard) = self.membership.write_guard();
        let sets = self.write_sets(&view, &partition, ks.n as usize);
        let pl = sets[0].clone();
        trace.add(&self.name, || {
            format!("coordinating a batch of {} item(s) in partition {}; replicas {pl:?}; waiting for w={w}", items.len(), String::from_utf8_lossy(&partition))
        });
        let deadline = self.env.now() + self.request_timeout;
        let write = peers::WriteBatch {
            keyspace: ks.clone(),
            partition: partition.clone(),
            items,
        };
        let (lead, peers::WrittenBatch { objects, dots }, lead_sync, failures) = self
            .lead_write(&pl, &write, "batch", w, deadline, &mut trace)
            .await?;
        let dots = objects
            .iter()
            .zip(&dots)
            .map(|(o, d)| surviving_dot(o, Some(d)))
            .collect();
        let replicate = peers::ReplicateBatch {
            keyspace: ks,
            partition,
            items: req
                .items
                .iter()
                .zip(objects)
                .map(|(i, o)| (serde_bytes::ByteBuf::from(i.key.sort.clone()), o))
                .collect(),
        };
        let quorum = Quorum { w, pw: 0 };
        let out = Outgoing::Batch(replicate);
        self.replicate(
            &sets, &lead, lead_sync, out, "batch", quorum, deadline, failures, &mut trace,
        )
        .await?;
        Ok(BatchResponse {
            dots,
            trace: trace.finish(),
        })
    }

    /// Coordinate a CRDT operation: the lead replica applies it (its name is the CRDT
    /// actor), then its state is replicated like any write.
    pub async fn update(&self, req: UpdateRequest) -> Result<UpdateResponse, CoordinatorError> {
        let mut trace = Trace::new(&self.env, req.trace);
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
        // The write counts under its layout version until it ends, so the node can tell
        // when none under an older version is left (`Membership::try_ack`).
        let (view, _layout_guard) = self.membership.write_guard();
        let sets = self.write_sets(&view, &req.key.partition, ks.n as usize);
        let pl = sets[0].clone();
        let op = "update";
        trace.add(&self.name, || {
            format!(
                "coordinating {} of {}; replicas {pl:?}; waiting for w={w}",
                req.op.name(),
                req.key
            )
        });
        let deadline = self.env.now() + self.request_timeout;
        let update = peers::Update {
            keyspace: ks.clone(),
            key: req.key.clone(),
            op: req.op.clone(),
            context,
        };
        let (lead, object, lead_sync, failures) = self
            .lead_write(&pl, &update, op, w, deadline, &mut trace)
            .await?;
        let context_out = self.seal_context(&ks, &req.key, &policy.context(&object));
        let replicate = peers::Replicate {
            keyspace: ks,
            key: req.key.clone(),
            object,
        };
        let quorum = Quorum { w, pw: 0 };
        let out = Outgoing::One(replicate);
        self.replicate(
            &sets, &lead, lead_sync, out, op, quorum, deadline, failures, &mut trace,
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
        let now_us = self.env.now_ms().saturating_mul(1000);
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
    /// its reply, its fsync still to come when this node led overlapped
    /// (`storage.overlap_lead_sync`: stored deferred, synced while the write replicates),
    /// and the failures met on the way.
    async fn lead_write<C: PeerCall + Clone>(
        &self,
        pl: &[String],
        write: &C,
        op: &'static str,
        w: u8,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<LeadOutcome<C::Reply>, CoordinatorError> {
        let mut failures: BTreeMap<String, ReplicaFailure> = BTreeMap::new();
        let candidates = self.lead_candidates(pl);
        for cand in candidates {
            let started = self.env.now();
            let answer = if self.overlap_lead_sync && cand == self.name {
                self.peers
                    .call_local_overlapped(write.clone(), deadline)
                    .await
                    .map(|(reply, durable)| {
                        // Bounded by the request's deadline like every replica's answer: a
                        // stuck fsync is the lead's failure, not a hung request.
                        let env = Arc::clone(&self.env);
                        let sync: Option<LeadSync> = durable.is_pending().then(|| {
                            Box::pin(async move {
                                crate::env::timeout_at(&*env, deadline, durable.wait())
                                    .await
                                    .unwrap_or_else(|_| {
                                        Err(ReplicaError::Sync(
                                            "not durable within the request's deadline".into(),
                                        ))
                                    })
                            }) as LeadSync
                        });
                        (reply, sync)
                    })
            } else {
                self.peers
                    .call(&cand, write.clone(), deadline)
                    .await
                    .map(|reply| (reply, None))
            };
            match answer {
                Ok((reply, sync)) => {
                    trace.add(&cand, || {
                        let us = self
                            .env
                            .now()
                            .saturating_duration_since(started)
                            .as_micros();
                        if sync.is_some() {
                            format!("lead replica: issued the version(s) and stored them after {us} µs, not yet durable (its fsync runs alongside replication; it counts once done)")
                        } else {
                            format!("lead replica: issued the version(s) and stored them after {us} µs")
                        }
                    });
                    return Ok((cand, reply, sync, failures));
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
                    // A lead that did not answer in time may still have issued and stored
                    // the version: trying another lead would issue it a second time (a
                    // counter increment counted twice; a value stored under two dots, one
                    // of which a later context write cannot see and so cannot replace —
                    // found by the simulator, docs/SIMULATION.md). The write is
                    // indeterminate; the client decides whether to retry. Only a lead that
                    // certainly did not apply it (unreachable, or it refused: storage error,
                    // disk full) is passed over for the next.
                    if matches!(f, CallFailure::Timeout) {
                        break;
                    }
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

    /// Step 2 of a write (a key's object or a batch's): with a sloppy quorum (the
    /// keyspace's `sloppy_quorum` and this node's `hints.enabled`) through
    /// [`Coordinator::replicate_sloppy`], else to the primaries only.
    ///
    /// While data moves between layouts, `sets` holds one replica set per live layout
    /// version and the write goes through [`Coordinator::replicate_strict`] instead.
    ///
    /// `lead_sync`, when the lead stored its write deferred (an overlapped local lead):
    /// the lead counts (towards W and PW) only once it completes without error; until
    /// then the others' answers count as they come.
    #[allow(clippy::too_many_arguments)]
    async fn replicate(
        &self,
        sets: &[Vec<String>],
        lead: &str,
        lead_sync: Option<LeadSync>,
        out: Outgoing,
        op: &'static str,
        quorum: Quorum,
        deadline: Instant,
        failures: BTreeMap<String, ReplicaFailure>,
        trace: &mut Trace,
    ) -> Result<(), CoordinatorError> {
        if sets.len() == 1 && self.sloppy && out.keyspace().sloppy_quorum {
            return self
                .replicate_sloppy(
                    &sets[0], lead, lead_sync, out, op, quorum, deadline, failures, trace,
                )
                .await;
        }
        self.replicate_strict(
            sets, lead, lead_sync, out, op, quorum, deadline, failures, trace,
        )
        .await
    }

    /// Trace the overlapped lead's fsync outcome after `us` µs; its failure, if any, to
    /// record.
    fn lead_synced(
        &self,
        trace: &mut Trace,
        lead: &str,
        us: u64,
        result: Result<(), ReplicaError>,
    ) -> Option<ReplicaFailure> {
        self.metrics
            .overlapped_lead_syncs
            .fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                trace.add(lead, || {
                    format!(
                        "lead's write durable after {us} µs (fsync overlapped with replication)"
                    )
                });
                None
            }
            Err(e) => {
                let f =
                    CallFailure::Refused(crate::proto::PeerError::Storage(format!("{lead}: {e}")));
                Some(trace.failure(lead, us, &f))
            }
        }
    }

    /// Trace a write answered while the lead's fsync still runs (it was not counted).
    fn lead_still_syncing(&self, trace: &mut Trace, lead: &str, lead_sync: &Option<LeadSync>) {
        if lead_sync.is_some() {
            trace.add(lead, || {
                "lead's fsync still running: the write was acknowledged without it".to_string()
            });
        }
    }

    /// Step 2 to the primaries only: the lead's result goes to every other replica, and
    /// the write succeeds once W of them (the lead included; `max(w, pw)`, since all are
    /// primaries) hold it, or fails as soon as that is out of reach. While data moves
    /// between layout versions, `sets` holds each live version's replica set and the write
    /// must reach W in *each*, so a read from either version's owners meets it. No
    /// stand-ins then: a hint would be replayed to one version's owner only, and transfers
    /// are short.
    #[allow(clippy::too_many_arguments)]
    async fn replicate_strict(
        &self,
        sets: &[Vec<String>],
        lead: &str,
        mut lead_sync: Option<LeadSync>,
        out: Outgoing,
        op: &'static str,
        quorum: Quorum,
        deadline: Instant,
        mut failures: BTreeMap<String, ReplicaFailure>,
        trace: &mut Trace,
    ) -> Result<(), CoordinatorError> {
        let w = quorum.w.max(quorum.pw) as usize;
        let mut targets: Vec<String> = Vec::new();
        for n in sets.iter().flatten() {
            if n != lead && !targets.contains(n) {
                targets.push(n.clone());
            }
        }
        if sets.len() > 1 {
            trace.add(&self.name, || {
                format!("layouts in transition: the write must reach w={w} in each of {sets:?}")
            });
        }
        // An overlapped lead is pending until its fsync completes.
        let mut acked: Vec<String> = Vec::new();
        let mut pending: Vec<String> = targets.clone();
        if lead_sync.is_some() {
            pending.push(lead.to_string());
        } else {
            acked.push(lead.to_string());
        }
        let start = self.env.now();
        let mut peers_open = true;
        let count =
            |acked: &[String], set: &[String]| set.iter().filter(|n| acked.contains(n)).count();
        let enough = |acked: &[String]| sets.iter().all(|s| count(acked, s) >= w.min(s.len()));
        let possible = |acked: &[String], pending: &[String]| {
            sets.iter().all(|s| {
                count(acked, s) + s.iter().filter(|n| pending.contains(n)).count() >= w.min(s.len())
            })
        };
        let mut rx = out.fan_out(&self.peers, &targets, deadline);
        while !enough(&acked) && possible(&acked, &pending) {
            let Some(step) = next_step(&mut lead_sync, &mut peers_open, rx.recv()).await else {
                break;
            };
            let reply = match step {
                Step::Lead(result) => {
                    pending.retain(|n| n != lead);
                    let us = self.env.now().saturating_duration_since(start).as_micros() as u64;
                    match self.lead_synced(trace, lead, us, result) {
                        None => {
                            failures.remove(lead);
                            acked.push(lead.to_string());
                        }
                        Some(f) => {
                            failures.insert(lead.to_string(), f);
                        }
                    }
                    continue;
                }
                Step::Peer(reply) => reply,
            };
            pending.retain(|n| *n != reply.node);
            let us = reply.us;
            match reply.result {
                Ok(()) => {
                    trace.add(&reply.node, || format!("stored replica after {us} µs"));
                    failures.remove(&reply.node);
                    acked.push(reply.node);
                }
                Err(f) => {
                    let failure = trace.failure(&reply.node, us, &f);
                    failures.insert(reply.node, failure);
                }
            }
        }
        if !enough(&acked) {
            let got = sets.iter().map(|s| count(&acked, s)).min().unwrap_or(0);
            return Err(CoordinatorError::QuorumNotReached {
                op,
                needed: w as u8,
                got: got as u8,
                failures: failures.into_values().collect(),
            });
        }
        self.lead_still_syncing(trace, lead, &lead_sync);
        trace.add(&self.name, || match sets {
            [_] => format!("{op} acknowledged by {} replica(s)", acked.len()),
            _ => format!("{op} acknowledged by w={w} in every live layout's replica set"),
        });
        Ok(())
    }

    /// Step 2 with a sloppy quorum. Each other primary gets the lead's object; one that
    /// is known down, unreachable or refused it (so certainly did not store it — not one
    /// that timed out, which may have) has its copy sent as a hint to the next healthy
    /// stand-in on the ring beyond the primaries (one distinct stand-in per missing
    /// primary), whose durable acknowledgement counts towards W but not towards `pw`.
    /// When no stand-in is left, the lead holds the hint itself: it counted already, so
    /// nothing more counts, but the primary still gets its copy back when it returns. A
    /// primary that timed out counts for nothing either, and the lead keeps a hint for
    /// it too (once the write is answered), since it may lack the copy.
    #[allow(clippy::too_many_arguments)]
    async fn replicate_sloppy(
        &self,
        pl: &[String],
        lead: &str,
        mut lead_sync: Option<LeadSync>,
        replicate: Outgoing,
        op: &'static str,
        quorum: Quorum,
        deadline: Instant,
        mut failures: BTreeMap<String, ReplicaFailure>,
        trace: &mut Trace,
    ) -> Result<(), CoordinatorError> {
        let n = pl.len();
        let ring_order = self
            .membership
            .view()
            .read_ring()
            .preference_list(replicate.partition(), self.peers.others().len() + 1);
        // Stand-ins: the nodes after the primaries, healthy (or not yet known) first.
        let stand_ins: VecDeque<String> = ring_order
            .iter()
            .skip(n)
            .filter(|s| self.peers.peer_up(s) != Some(false))
            .cloned()
            .collect();
        let pool = Arc::new(std::sync::Mutex::new(stand_ins));
        let others: Vec<String> = pl.iter().filter(|n| *n != lead).cloned().collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(others.len().max(1));
        let start = self.env.now();
        let timeout = self.request_timeout;
        for owner in &others {
            let (peers, pool, tx) = (Arc::clone(&self.peers), Arc::clone(&pool), tx.clone());
            let (owner, replicate, lead, env) = (
                owner.clone(),
                replicate.clone(),
                lead.to_string(),
                Arc::clone(&self.env),
            );
            self.env.spawn(Box::pin(async move {
                let held =
                    hand_over(&peers, &pool, &owner, &lead, replicate.clone(), deadline).await;
                let us = env.now().saturating_duration_since(start).as_micros() as u64;
                let timed_out = matches!(&held, Held::Nowhere(f) if f.kind == "timeout");
                let _ = tx.send((owner.clone(), us, held)).await;
                if timed_out {
                    // The primary may or may not have stored it: it does not count, but
                    // the lead keeps a hint (after the answer, on its own deadline) so
                    // the primary gets it either way; merging it twice is harmless.
                    let hint = replicate.hint(&owner);
                    let _ = peers.call(&lead, hint, env.now() + timeout).await;
                }
            }));
        }
        drop(tx);
        // An overlapped lead counts once its fsync completes.
        let lead_now = u8::from(lead_sync.is_none());
        let (mut primaries, mut total) = (lead_now, lead_now);
        let mut pending = others.len() + usize::from(lead_sync.is_some());
        let mut peers_open = true;
        let enough = |p: u8, t: u8| t >= quorum.w && p >= quorum.pw;
        let possible = |p: u8, t: u8, left: usize| {
            t as usize + left >= quorum.w as usize && p as usize + left >= quorum.pw as usize
        };
        while !enough(primaries, total) && possible(primaries, total, pending) {
            let Some(step) = next_step(&mut lead_sync, &mut peers_open, rx.recv()).await else {
                break;
            };
            pending -= 1;
            let (owner, us, held) = match step {
                Step::Lead(result) => {
                    let us = self.env.now().saturating_duration_since(start).as_micros() as u64;
                    match self.lead_synced(trace, lead, us, result) {
                        None => {
                            failures.remove(lead);
                            primaries += 1;
                            total += 1;
                        }
                        Some(f) => {
                            failures.insert(lead.to_string(), f);
                        }
                    }
                    continue;
                }
                Step::Peer(answer) => answer,
            };
            match held {
                Held::Primary => {
                    trace.add(&owner, || format!("stored replica after {us} µs"));
                    failures.remove(&owner);
                    primaries += 1;
                    total += 1;
                }
                Held::StandIn(s, why) => {
                    trace.add(&s, || {
                        format!("stand-in for {owner} ({why}) stored a hint after {us} µs")
                    });
                    failures.insert(
                        owner.clone(),
                        ReplicaFailure {
                            node: owner,
                            kind: "unreachable".into(),
                            detail: format!("{why}; stand-in {s} holds its copy as a hint"),
                        },
                    );
                    total += 1;
                }
                Held::Lead(why) => {
                    trace.add(lead, || {
                        format!("no stand-in for {owner} ({why}): the lead holds its hint")
                    });
                    failures.insert(
                        owner.clone(),
                        ReplicaFailure {
                            node: owner,
                            kind: "unreachable".into(),
                            detail: format!("{why}; no stand-in left, the lead holds its hint"),
                        },
                    );
                }
                Held::Nowhere(f) => {
                    trace.add(&owner, || {
                        format!("failed after {us} µs: {} ({})", f.kind, f.detail)
                    });
                    failures.insert(owner, f);
                }
            }
        }
        if total < quorum.w || primaries < quorum.pw {
            let (needed, got) = if total < quorum.w {
                (quorum.w, total)
            } else {
                (quorum.pw, primaries)
            };
            return Err(CoordinatorError::QuorumNotReached {
                op: if total < quorum.w {
                    op
                } else {
                    "write to primaries (pw)"
                },
                needed,
                got,
                failures: failures.into_values().collect(),
            });
        }
        self.lead_still_syncing(trace, lead, &lead_sync);
        trace.add(&self.name, || {
            format!("{op} acknowledged by {total} node(s), {primaries} of them primaries")
        });
        Ok(())
    }

    /// Coordinate a range read of one partition: R replicas' pages merged item by item.
    pub async fn scan(
        self: &Arc<Self>,
        req: ScanRequest,
    ) -> Result<ScanResponse, CoordinatorError> {
        let mut trace = Trace::new(&self.env, req.trace);
        let ks = self.keyspace(&req.keyspace).await?;
        Key {
            partition: req.partition.clone(),
            sort: req.from.clone(),
        }
        .validate(self.limits.max_key_bytes)?;
        let r = ks.quorum("r", req.r.unwrap_or(ks.r))?;
        let limit = (req.limit as usize).clamp(1, MAX_SCAN_LIMIT);
        let pl = self
            .membership
            .view()
            .read_ring()
            .preference_list(&req.partition, ks.n as usize);
        trace.add(&self.name, || {
            format!(
                "coordinating scan of partition {}; replicas {pl:?}; waiting for r={r}",
                String::from_utf8_lossy(&req.partition)
            )
        });
        let deadline = self.env.now() + self.request_timeout;
        let scan = peers::Scan {
            keyspace: ks.clone(),
            partition: req.partition.clone(),
            from: req.from.clone(),
            to: req.to.clone(),
            limit: limit as u32,
        };
        let (mut rx, speculate_at) = self.read_fan_out(&pl, r, scan, deadline);
        let got = rx
            .gather_with_retry(r as usize, speculate_at, |reply| match reply.result {
                Ok(page) => {
                    let us = reply.us;
                    trace.add(&reply.node, || {
                        format!("replied after {us} µs: {} item(s)", page.items.len())
                    });
                    let items: BTreeMap<Vec<u8>, Object> = page
                        .items
                        .into_iter()
                        .map(|(s, o)| (s.into_vec(), o))
                        .collect();
                    Ok((items, page.more))
                }
                Err(f) => Err(f.to_failure(&reply.node)),
            })
            .await;
        self.note_extra_reads(&mut trace, &got.asked);
        let replies: Vec<ScanReply> = got
            .ok
            .into_iter()
            .map(|(node, (items, more))| (node, items, more))
            .collect();
        if replies.len() < r as usize {
            return Err(CoordinatorError::QuorumNotReached {
                op: "scan",
                needed: r,
                got: replies.len() as u8,
                failures: got.failures,
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
            let bytes = sort.len() + o.approx_bytes();
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
            let req = peers::ReplicateBatch {
                keyspace: ks.clone(),
                partition: partition.to_vec(),
                items: stale,
            };
            let (me, node) = (Arc::clone(self), node.clone());
            self.env.spawn(Box::pin(async move {
                let _permit = permit;
                let deadline = me.env.now() + me.request_timeout;
                if let Err(f) = me.peers.call(&node, req, deadline).await {
                    let f = f.to_failure(&node);
                    tracing::debug!(replica = %node, kind = %f.kind, "scan repair failed");
                }
            }));
        }
    }

    /// Lead replicas to try, best first: this node if it is a replica, then replicas last
    /// seen up (or never contacted), then those last seen down (in preference-list order
    /// otherwise). Reads ask replicas in the same order.
    fn lead_candidates(&self, pl: &[String]) -> Vec<String> {
        let mut c: Vec<String> = pl.to_vec();
        c.sort_by_key(|n| match (n == &self.name, self.peers.peer_up(n)) {
            (true, _) => 0,
            (false, Some(true)) | (false, None) => 1,
            (false, Some(false)) => 2,
        });
        c
    }

    /// Create a keyspace as an admin asked: a new name gets a fresh generation; asking
    /// again for a keyspace that exists with the same settings is idempotent (it is
    /// announced again, with its existing generation).
    pub async fn create_keyspace(
        &self,
        mut def: KeyspaceDef,
    ) -> Result<ClientResponse, CoordinatorError> {
        def.validate(self.catalog.cluster_size())?;
        def.generation = match self.keyspace(&def.name).await {
            Ok(existing) if existing.same_settings(&def) => existing.generation,
            // Random (from the node's environment) and never 0, which marks keyspaces
            // from node.toml. Uniqueness is what matters, not secrecy.
            _ => self.env.random_u64().max(1),
        };
        self.announce_keyspace(def).await
    }

    /// Store a keyspace definition here and announce it to every other node.
    async fn announce_keyspace(
        &self,
        def: KeyspaceDef,
    ) -> Result<ClientResponse, CoordinatorError> {
        def.validate(self.catalog.cluster_size())?;
        self.catalog.learn(def.clone())?;
        let others = self.peers.others();
        let deadline = self.env.now() + self.request_timeout;
        // Every peer's answer is wanted (who acknowledged and who missed it is the reply),
        // except that a peer refusing the definition as invalid ends the request at once.
        let heard = self
            .peers
            .fan_out(&others, peers::AnnounceKeyspace(def.clone()), deadline)
            .gather(others.len(), |reply| match reply.result {
                Ok(()) => Ok(true),
                Err(CallFailure::Refused(PeerError::Invalid(m))) => Err(ReplicaFailure {
                    node: reply.node,
                    kind: "error".into(),
                    detail: m,
                }),
                Err(_) => Ok(false),
            })
            .await;
        if let Some(f) = heard.failures.into_iter().next() {
            return Err(CoordinatorError::Replica(format!(
                "{}: {}",
                f.node, f.detail
            )));
        }
        let mut acked = vec![self.name.clone()];
        let mut missing = Vec::new();
        for (node, ack) in heard.ok {
            if ack {
                acked.push(node);
            } else {
                missing.push(node);
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

    /// Drop a keyspace on every node: here first, then announced to every peer. Nodes
    /// that miss the announcement keep the keyspace until they hear of the drop (an
    /// admin runs the drop again); a re-created keyspace of the same name has a new
    /// generation, which such a node refuses as a conflict rather than merging the old
    /// data into it.
    pub async fn drop_keyspace(&self, name: String) -> Result<ClientResponse, CoordinatorError> {
        validate_name(&name)?;
        if self.catalog.is_configured(&name) {
            return Err(KeyspaceError::Configured(name).into());
        }
        let generation = self.keyspace(&name).await?.generation;
        self.catalog.drop_keyspace(&name, generation).await?;
        let req = peers::DropKeyspace {
            name: name.clone(),
            generation,
        };
        let deadline = self.env.now() + self.request_timeout;
        let others = self.peers.others();
        // Every peer's answer is wanted: the reply says who dropped it and who missed it.
        let heard = self
            .peers
            .fan_out(&others, req, deadline)
            .gather(others.len(), |reply| {
                Ok::<_, ReplicaFailure>(match reply.result {
                    Ok(()) => None,
                    Err(f) => {
                        let f = f.to_failure(&reply.node);
                        Some(format!("{} ({}: {})", reply.node, f.kind, f.detail))
                    }
                })
            })
            .await;
        let mut acked = vec![self.name.clone()];
        let mut missing = Vec::new();
        for (node, failed) in heard.ok {
            match failed {
                None => acked.push(node),
                Some(why) => missing.push(why),
            }
        }
        acked.sort();
        missing.sort();
        Ok(ClientResponse::KeyspaceDropped {
            name,
            acked,
            missing,
        })
    }
}

/// About how many bytes an object takes in a reply: its values and per-version overhead
/// (dots, timestamps, the version vector). Used to bound scan pages in bytes.
/// What a write waits for: W acknowledgements in all, `pw` of them from primaries.
#[derive(Debug, Clone, Copy)]
struct Quorum {
    w: u8,
    pw: u8,
}

/// A request's `pw` or `pr`: 0 when absent (no requirement), else checked against N.
fn primary_quorum(
    ks: &KeyspaceDef,
    name: &'static str,
    v: Option<u8>,
) -> Result<u8, CoordinatorError> {
    match v {
        None | Some(0) => Ok(0),
        Some(v) => Ok(ks.quorum(name, v)?),
    }
}

/// Who ended up holding a primary's copy of a sloppy write.
enum Held {
    /// The primary itself.
    Primary,
    /// A stand-in, as a hint (counts towards W); why the primary did not.
    StandIn(String, String),
    /// The lead, as a hint (counts towards nothing); why the primary did not.
    Lead(String),
    /// Nobody: the primary timed out (it may hold it), or it and every stand-in failed.
    Nowhere(ReplicaFailure),
}

/// What step 2 of a write gives each other replica: one key's object, or a batch's objects
/// (stored together on each replica, and held together in one hint).
#[derive(Debug, Clone)]
enum Outgoing {
    One(peers::Replicate),
    Batch(peers::ReplicateBatch),
}

impl Outgoing {
    fn keyspace(&self) -> &KeyspaceDef {
        match self {
            Outgoing::One(r) => &r.keyspace,
            Outgoing::Batch(b) => &b.keyspace,
        }
    }

    fn partition(&self) -> &[u8] {
        match self {
            Outgoing::One(r) => &r.key.partition,
            Outgoing::Batch(b) => &b.partition,
        }
    }

    /// Send it to every one of `targets` at once.
    fn fan_out(
        &self,
        peers: &Arc<Peers>,
        targets: &[String],
        deadline: Instant,
    ) -> peers::Replies<()> {
        match self {
            Outgoing::One(r) => peers.fan_out(targets, r.clone(), deadline),
            Outgoing::Batch(b) => peers.fan_out(targets, b.clone(), deadline),
        }
    }

    /// Send it to replica `to`.
    async fn send(&self, peers: &Peers, to: &str, deadline: Instant) -> Result<(), CallFailure> {
        match self {
            Outgoing::One(r) => peers.call(to, r.clone(), deadline).await,
            Outgoing::Batch(b) => peers.call(to, b.clone(), deadline).await,
        }
    }

    /// The hint that holds it for `owner`: a batch is one hint, keyed by its first item.
    fn hint(&self, owner: &str) -> peers::StoreHint {
        match self {
            Outgoing::One(r) => peers::StoreHint {
                owner: owner.to_string(),
                keyspace: r.keyspace.clone(),
                key: r.key.clone(),
                object: r.object.clone(),
                more: Vec::new(),
            },
            Outgoing::Batch(b) => {
                let mut items = b.items.iter();
                let (sort, object) = items
                    .next()
                    .map(|(s, o)| (s.to_vec(), o.clone()))
                    .unwrap_or_default();
                peers::StoreHint {
                    owner: owner.to_string(),
                    keyspace: b.keyspace.clone(),
                    key: Key {
                        partition: b.partition.clone(),
                        sort,
                    },
                    object,
                    more: items.cloned().collect(),
                }
            }
        }
    }
}

/// Give `owner` the lead's object, or a stand-in (from `pool`) a hint of it, or the lead.
async fn hand_over(
    peers: &Peers,
    pool: &std::sync::Mutex<VecDeque<String>>,
    owner: &str,
    lead: &str,
    replicate: Outgoing,
    deadline: Instant,
) -> Held {
    let why = if peers.peer_up(owner) == Some(false) {
        "known down".to_string()
    } else {
        match replicate.send(peers, owner, deadline).await {
            Ok(()) => return Held::Primary,
            Err(f @ CallFailure::Timeout)
            | Err(f @ CallFailure::Refused(PeerError::Invalid(_))) => {
                // A timed-out request may still be applied; an invalid one would be
                // refused on replay too.
                return Held::Nowhere(f.to_failure(owner));
            }
            Err(f) => {
                let rf = f.to_failure(owner);
                format!("{}: {}", rf.kind, rf.detail)
            }
        }
    };
    let hint = || replicate.hint(owner);
    loop {
        let next = pool.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(stand_in) = next else { break };
        if peers.call(&stand_in, hint(), deadline).await.is_ok() {
            return Held::StandIn(stand_in, why);
        }
    }
    match peers.call(lead, hint(), deadline).await {
        Ok(()) => Held::Lead(why),
        Err(f) => Held::Nowhere(ReplicaFailure {
            node: owner.to_string(),
            kind: "unreachable".into(),
            detail: format!(
                "{why}; no stand-in took its hint and the lead refused it: {}",
                f.to_failure(lead).detail
            ),
        }),
    }
}
