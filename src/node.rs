//! The node: one member of the cluster, independent of sockets.
//!
//! A `Node` owns the ring, the keyspace registry, its replica and a [`Transport`] for
//! reaching peers. It is driven from outside: the QUIC server (or the in-memory network)
//! hands it client requests ([`Node::handle_client`], where it acts as the coordinator)
//! and peer requests ([`Node::handle_peer`], where it acts as a replica). It never opens a
//! socket itself, which is what lets a whole cluster run in one process under test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::{Limits, Member};
use crate::coordinator::CoordinatorError;
use crate::key::Key;
use crate::keyspace::{KeyspaceDef, KeyspaceError, Registry};
use crate::proto::{
    ClientRequest, ClientResponse, ErrorKind, ErrorResponse, NodeStatus, PeerError, PeerRequest,
    PeerResponse,
};
use crate::replica::{Replica, ReplicaError, WriteItem};
use crate::ring::{Ring, RingError};
use crate::storage::{prefix_end, BatchOp, Storage, StorageError};
use crate::transport::{BoxFuture, PeerHandler, Transport};

/// Errors building a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The member list does not make a ring.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Stored metadata could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A configured keyspace is invalid or conflicts with a stored one.
    #[error(transparent)]
    Keyspace(#[from] KeyspaceError),
    /// Stored keyspace metadata is corrupt.
    #[error("stored keyspace metadata is corrupt: {0}")]
    Metadata(String),
}

/// Everything a node is made of.
pub struct NodeParams {
    /// This node's name.
    pub name: String,
    /// All members, this node included.
    pub members: Vec<Member>,
    /// Tokens per node.
    pub vnodes: usize,
    /// The storage engine.
    pub storage: Arc<dyn Storage>,
    /// How to reach peers.
    pub transport: Arc<dyn Transport>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Limits.
    pub limits: Limits,
    /// Coordinator timeout per request.
    pub request_timeout: Duration,
    /// Keyspaces from the config.
    pub keyspaces: Vec<KeyspaceDef>,
}

/// A cluster member's protocol core.
pub struct Node {
    pub(crate) name: String,
    pub(crate) members: Vec<Member>,
    pub(crate) ring: Ring,
    pub(crate) replica: Arc<Replica>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) keyspaces: Registry,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
    /// Last known state of each peer (`true` = up), from the last exchange with it.
    pub(crate) health: Mutex<HashMap<String, bool>>,
    /// Latency histograms and counters, served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Bounds background read repairs (see `limits.max_pending_read_repairs`).
    pub(crate) repair_slots: Arc<Semaphore>,
}

/// Most items one scan page returns, whatever the client asks for: bounds the reply
/// size and the work one request can cause.
pub const MAX_SCAN_LIMIT: usize = 1000;

/// Storage prefix for node metadata; 0xFF sorts after every keyspace name.
const META_KEYSPACE_PREFIX: &[u8] = b"\xFFmeta\x00keyspace\x00";

impl Node {
    /// Build a node and load its stored keyspaces, then the configured ones.
    pub fn new(p: NodeParams) -> Result<Arc<Self>, NodeError> {
        let names: Vec<String> = p.members.iter().map(|m| m.name.clone()).collect();
        let ring = Ring::new(&names, p.vnodes)?;
        let replica = Replica::new(&p.name, p.storage.clone(), p.clock.clone());
        let node = Node {
            name: p.name,
            members: p.members,
            ring,
            replica,
            transport: p.transport,
            keyspaces: Registry::default(),
            repair_slots: Arc::new(Semaphore::new(p.limits.max_pending_read_repairs)),
            metrics: Arc::default(),
            limits: p.limits,
            request_timeout: p.request_timeout,
            health: Mutex::new(HashMap::new()),
        };
        let end = prefix_end(META_KEYSPACE_PREFIX).unwrap_or_default();
        for (_, v) in p.storage.scan(META_KEYSPACE_PREFIX, &end, usize::MAX)? {
            let def: KeyspaceDef =
                rmp_serde::from_slice(&v).map_err(|e| NodeError::Metadata(e.to_string()))?;
            node.keyspaces.insert(def)?;
        }
        for def in p.keyspaces {
            def.validate(node.members.len())?;
            node.learn_keyspace(def)?;
        }
        Ok(Arc::new(node))
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// This node's own copy of a key, read straight from its replica (no quorum): for
    /// tests and debugging tools that need to see one replica's state.
    pub async fn local_object(
        self: &Arc<Self>,
        keyspace: &str,
        key: &Key,
    ) -> Option<crate::causality::Object> {
        let ks = self.keyspaces.get(keyspace)?;
        self.replica.read(&ks, key).await.ok().flatten()
    }

    /// Store a keyspace definition (registry and disk). Returns whether it was new.
    pub(crate) fn learn_keyspace(&self, def: KeyspaceDef) -> Result<bool, NodeError> {
        let new = self.keyspaces.insert(def.clone())?;
        if new {
            let mut key = META_KEYSPACE_PREFIX.to_vec();
            key.extend_from_slice(def.name.as_bytes());
            let bytes =
                rmp_serde::to_vec_named(&def).map_err(|e| NodeError::Metadata(e.to_string()))?;
            self.replica
                .storage()
                .write(vec![BatchOp::Put(key, bytes)])?;
            tracing::info!(keyspace = %def.name, settings = %def.summary(), "keyspace stored");
        }
        Ok(new)
    }

    /// Record the outcome of an exchange with `peer`.
    pub(crate) fn note_health(&self, peer: &str, up: bool) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let changed = h.get(peer).map(|p| *p != up).unwrap_or(true);
        if changed {
            h.insert(peer.to_string(), up);
            if up {
                tracing::info!(peer, "peer is up");
            } else {
                tracing::warn!(peer, "peer is down");
            }
        }
    }

    /// Ping every peer once (each bounded by `timeout`) and record who answered. Run
    /// periodically by the node's driver so `status` reflects nodes that no request has
    /// touched lately; gossip-based failure detection will replace it.
    pub async fn probe_peers(self: &Arc<Self>, timeout: Duration) {
        let mut probes = tokio::task::JoinSet::new();
        for peer in self.other_members() {
            let me = Arc::clone(self);
            probes.spawn(async move {
                let ok = matches!(
                    tokio::time::timeout(timeout, me.transport.call(&peer, PeerRequest::Ping))
                        .await,
                    Ok(Ok(PeerResponse::Ack))
                );
                me.note_health(&peer, ok);
            });
        }
        while probes.join_next().await.is_some() {}
    }

    /// `Some(true)` up, `Some(false)` down, `None` never contacted.
    pub(crate) fn peer_up(&self, peer: &str) -> Option<bool> {
        if peer == self.name {
            return Some(true);
        }
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.get(peer).copied()
    }

    /// Handle a request from a client; this node coordinates it.
    pub async fn handle_client(self: &Arc<Self>, req: ClientRequest) -> ClientResponse {
        let span = tracing::debug_span!("client_request", node = %self.name, op = op_name(&req));
        let metric_op = match op_name(&req) {
            op @ ("get" | "put" | "delete" | "scan" | "batch" | "update") => op,
            _ => "admin",
        };
        let _inflight = self.metrics.start_request();
        let started = tokio::time::Instant::now();
        async move {
            let result = match req {
                ClientRequest::Get(g) => self.get(g).await.map(ClientResponse::Get),
                ClientRequest::Put(p) => self.put(p).await.map(ClientResponse::Put),
                ClientRequest::Scan(q) => self.scan(q).await.map(ClientResponse::Scan),
                ClientRequest::Batch(b) => self.batch(b).await.map(ClientResponse::Batch),
                ClientRequest::Update(u) => self.update(u).await.map(ClientResponse::Update),
                ClientRequest::CreateKeyspace(def) => self.create_keyspace(def).await,
                ClientRequest::ListKeyspaces => {
                    Ok(ClientResponse::Keyspaces(self.keyspaces.list()))
                }
                ClientRequest::Replicas { keyspace, key } => {
                    self.keyspace(&keyspace).await.map(|ks| {
                        ClientResponse::Replicas(
                            self.ring.preference_list(&key.partition, ks.n as usize),
                        )
                    })
                }
                ClientRequest::Status => Ok(self.status()),
                ClientRequest::Stats => Ok(ClientResponse::Stats {
                    node: self.name.clone(),
                    latencies: self.metrics.snapshot(),
                    read_repairs: self.metrics.read_repairs(),
                }),
                ClientRequest::Ping => Ok(ClientResponse::Pong(self.name.clone())),
            };
            let quorum_failed = matches!(result, Err(CoordinatorError::QuorumNotReached { .. }));
            self.metrics
                .coordinator_done(metric_op, started.elapsed(), quorum_failed);
            result.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "request failed");
                ClientResponse::Error(error_response(&e))
            })
        }
        .instrument(span)
        .await
    }

    fn status(&self) -> ClientResponse {
        let own = self.ring.ownership();
        let nodes = self
            .members
            .iter()
            .map(|m| NodeStatus {
                name: m.name.clone(),
                addr: m.addr.to_string(),
                state: match self.peer_up(&m.name) {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "unknown",
                }
                .to_string(),
                ownership: own.get(&m.name).copied().unwrap_or(0.0),
            })
            .collect();
        ClientResponse::Status {
            node: self.name.clone(),
            nodes,
        }
    }

    /// Handle a request from a peer; this node acts as a replica.
    pub async fn handle_peer_request(
        self: &Arc<Self>,
        from: String,
        req: PeerRequest,
    ) -> PeerResponse {
        let span = tracing::debug_span!("peer_request", node = %self.name, %from);
        async move {
            // A request from a peer proves it is up.
            if self.members.iter().any(|m| m.name == from) {
                self.note_health(&from, true);
            }
            self.replica_step(req).await
        }
        .instrument(span)
        .await
    }

    /// The replica side of the protocol, shared by local and remote calls.
    pub(crate) async fn replica_step(self: &Arc<Self>, req: PeerRequest) -> PeerResponse {
        let kind = match &req {
            PeerRequest::Read { .. } => "read",
            PeerRequest::Write { .. }
            | PeerRequest::WriteBatch { .. }
            | PeerRequest::Update { .. } => "write",
            PeerRequest::Replicate { .. } | PeerRequest::ReplicateBatch { .. } => "replicate",
            PeerRequest::Scan { .. } => "scan",
            _ => "other",
        };
        let started = tokio::time::Instant::now();
        let reply = self.replica_apply(req).await;
        self.metrics.replica_done(kind, started.elapsed());
        reply
    }

    async fn replica_apply(self: &Arc<Self>, req: PeerRequest) -> PeerResponse {
        // Every data request carries its keyspace, so a replica that missed the keyspace's
        // creation learns it here, before serving the request.
        if let Some(def) = req.keyspace() {
            if let Err(e) = self.learn_keyspace(def.clone()) {
                return PeerResponse::Error(PeerError::Invalid(e.to_string()));
            }
        }
        let result: Result<PeerResponse, ReplicaError> = match req {
            PeerRequest::Read { keyspace, key } => self
                .replica
                .read(&keyspace, &key)
                .await
                .map(PeerResponse::Object),
            PeerRequest::Write {
                keyspace,
                key,
                context,
                value,
                if_context,
                client_ts,
                actor,
            } => {
                let item = WriteItem {
                    sort: key.sort.clone(),
                    context,
                    value,
                    client_ts,
                    actor,
                };
                self.replica
                    .write_batch(&keyspace, &key.partition, vec![item], if_context)
                    .await
                    .and_then(|mut objects| {
                        objects
                            .pop()
                            .map(|object| PeerResponse::Written { object })
                            .ok_or_else(|| ReplicaError::Task("empty batch result".into()))
                    })
            }
            PeerRequest::WriteBatch {
                keyspace,
                partition,
                items,
            } => {
                let items = items
                    .into_iter()
                    .map(|(sort, context, value)| WriteItem {
                        sort: sort.into_vec(),
                        context,
                        value: value.map(|v| v.into_vec()),
                        client_ts: None,
                        actor: None,
                    })
                    .collect();
                self.replica
                    .write_batch(&keyspace, &partition, items, false)
                    .await
                    .map(PeerResponse::WrittenBatch)
            }
            PeerRequest::Update {
                keyspace,
                key,
                op,
                context,
            } => self
                .replica
                .update(&keyspace, &key, op, context)
                .await
                .map(|object| PeerResponse::Written { object }),
            PeerRequest::Replicate {
                keyspace,
                key,
                object,
            } => self
                .replica
                .merge(&keyspace, &key, object)
                .await
                .map(|_| PeerResponse::Ack),
            PeerRequest::ReplicateBatch {
                keyspace,
                partition,
                items,
            } => {
                let items = items.into_iter().map(|(s, o)| (s.into_vec(), o)).collect();
                self.replica
                    .merge_batch(&keyspace, &partition, items)
                    .await
                    .map(|_| PeerResponse::Ack)
            }
            PeerRequest::Scan {
                keyspace,
                partition,
                from,
                to,
                limit,
            } => {
                let limit = (limit as usize).min(MAX_SCAN_LIMIT);
                let to = to.as_deref().map(|v| &v[..]);
                self.replica
                    .scan(
                        &keyspace,
                        &partition,
                        &from,
                        to,
                        limit,
                        self.limits.max_reply_bytes,
                    )
                    .await
                    .map(|(items, more)| PeerResponse::Items {
                        items: items
                            .into_iter()
                            .map(|(s, o)| (serde_bytes::ByteBuf::from(s), o))
                            .collect(),
                        more,
                    })
            }
            // Already learnt above.
            PeerRequest::AnnounceKeyspace(_) => Ok(PeerResponse::Ack),
            PeerRequest::LookupKeyspace(name) => {
                Ok(PeerResponse::Keyspace(self.keyspaces.get(&name)))
            }
            PeerRequest::Ping => Ok(PeerResponse::Ack),
        };
        result.unwrap_or_else(|e| PeerResponse::Error(peer_error(&self.name, e)))
    }

    /// Every member but this node.
    pub(crate) fn other_members(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| *n != self.name)
            .collect()
    }
}

fn peer_error(node: &str, e: ReplicaError) -> PeerError {
    match e {
        ReplicaError::Storage(StorageError::DiskFull(m)) => PeerError::Storage(format!(
            "disk full on {node}: {m}; free space in its data directory and writes resume"
        )),
        ReplicaError::SiblingLimit { .. } => PeerError::SiblingLimit(e.to_string()),
        ReplicaError::Conflict { .. } => PeerError::Conflict(e.to_string()),
        ReplicaError::Crdt(_) | ReplicaError::PlainWriteOnCrdt { .. } => {
            PeerError::Invalid(e.to_string())
        }
        other => PeerError::Storage(other.to_string()),
    }
}

fn op_name(req: &ClientRequest) -> &'static str {
    match req {
        ClientRequest::Get(_) => "get",
        ClientRequest::Put(p) if p.value.is_none() => "delete",
        ClientRequest::Put(_) => "put",
        ClientRequest::Scan(_) => "scan",
        ClientRequest::Batch(_) => "batch",
        ClientRequest::Update(_) => "update",
        ClientRequest::CreateKeyspace(_) => "create_keyspace",
        ClientRequest::ListKeyspaces => "list_keyspaces",
        ClientRequest::Replicas { .. } => "replicas",
        ClientRequest::Status => "status",
        ClientRequest::Stats => "stats",
        ClientRequest::Ping => "ping",
    }
}

/// The one place coordinator errors become wire errors.
pub fn error_response(e: &CoordinatorError) -> ErrorResponse {
    let kind = match e {
        CoordinatorError::QuorumNotReached {
            needed,
            got,
            failures,
            ..
        } => ErrorKind::QuorumNotReached {
            needed: *needed,
            got: *got,
            failures: failures.clone(),
        },
        CoordinatorError::Keyspace(KeyspaceError::Unknown(_)) => ErrorKind::UnknownKeyspace,
        CoordinatorError::Keyspace(_)
        | CoordinatorError::Key(_)
        | CoordinatorError::Context(_)
        | CoordinatorError::ValueTooLarge { .. } => ErrorKind::InvalidRequest,
        CoordinatorError::SiblingLimit(_) => ErrorKind::SiblingLimit,
        CoordinatorError::Conflict(_) => ErrorKind::Conflict,
        CoordinatorError::CrossPartitionBatch { .. }
        | CoordinatorError::EmptyBatch
        | CoordinatorError::BadStamp(_)
        | CoordinatorError::Policy(_)
        | CoordinatorError::BatchTooLarge { .. } => ErrorKind::InvalidRequest,
        CoordinatorError::Node(NodeError::Keyspace(_)) | CoordinatorError::Replica(_) => {
            ErrorKind::InvalidRequest
        }
        CoordinatorError::Node(_) => ErrorKind::Internal,
    };
    ErrorResponse {
        kind,
        message: e.to_string(),
    }
}

impl PeerHandler for Node {
    fn handle_peer(
        self: Arc<Self>,
        from: String,
        req: PeerRequest,
    ) -> BoxFuture<'static, PeerResponse> {
        Box::pin(async move { self.handle_peer_request(from, req).await })
    }
}
