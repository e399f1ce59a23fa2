//! The node: one member of the cluster, independent of sockets.
//!
//! A `Node` owns the ring, the keyspace registry, its replica and a [`Transport`] for
//! reaching peers. It is driven from outside: the QUIC server (or the in-memory network)
//! hands it client requests ([`Node::handle_client`], where it acts as the coordinator)
//! and peer requests ([`Node::handle_peer`], where it acts as a replica). It never opens a
//! socket itself, which is what lets a whole cluster run in one process under test.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::access::{self, ClientIdentity, Permission};
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
    /// The cluster key that seals clients' causal contexts (the same on every node).
    pub context_key: crate::context::ContextKey,
    /// Take a new incarnation even if the database holds one: with `sync = false` (a
    /// crash may have lost writes this node acknowledged) and after restoring a backup.
    pub new_incarnation: bool,
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
    /// Seals and opens clients' causal contexts.
    pub(crate) contexts: crate::context::ContextKey,
    /// The node's wall clock (client timestamps are checked against it).
    pub(crate) clock: Arc<dyn Clock>,
    /// Last known state of each peer (`true` = up), from the last exchange with it.
    pub(crate) health: Mutex<HashMap<String, bool>>,
    /// Latency histograms and counters, served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Bounds background read repairs (see `limits.max_pending_read_repairs`).
    pub(crate) repair_slots: Arc<Semaphore>,
    /// Names of the keyspaces this node's config defines (these cannot be dropped).
    configured: HashSet<String>,
    /// Dropped keyspace generations, by name: their definitions are refused for good.
    dropped: RwLock<HashMap<String, BTreeSet<u64>>>,
    /// Serialises learning a *new* definition, so purging a dropped name's leftover data
    /// cannot race with writes under the definition that replaces it.
    learning: Mutex<()>,
    /// Problems found while loading that did not stop the node.
    warnings: Vec<String>,
}

/// Most items one scan page returns, whatever the client asks for: bounds the reply
/// size and the work one request can cause.
pub const MAX_SCAN_LIMIT: usize = 1000;

/// Storage prefix for node metadata; 0xFF sorts after every keyspace name.
const META_KEYSPACE_PREFIX: &[u8] = b"\xFFmeta\x00keyspace\x00";
/// Storage prefix of dropped-keyspace markers: `<prefix><name>\0<generation, 8 bytes BE>`.
const META_DROPPED_PREFIX: &[u8] = b"\xFFmeta\x00dropped\x00";
/// Keys deleted per storage batch when a dropped keyspace's data is purged.
const PURGE_BATCH: usize = 1000;

/// A generation for a keyspace an admin creates: random (seeded per process by the
/// standard library's hasher keys) and mixed with the time, never 0 (0 marks keyspaces
/// from node.toml). Uniqueness is what matters, not secrecy.
fn fresh_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish().max(1)
}

impl Node {
    /// Build a node and load its stored keyspaces, then the configured ones.
    pub fn new(p: NodeParams) -> Result<Arc<Self>, NodeError> {
        let names: Vec<String> = p.members.iter().map(|m| m.name.clone()).collect();
        let ring = Ring::new(&names, p.vnodes)?;
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let replica = Replica::new(
            &p.name,
            p.storage.clone(),
            p.clock.clone(),
            crate::replica::ReplicaOptions {
                max_object_bytes: p.limits.max_object_bytes,
                new_incarnation: p.new_incarnation,
                metrics: Arc::clone(&metrics),
            },
        )
        .map_err(|e| NodeError::Metadata(format!("node incarnation: {e}")))?;
        let mut node = Node {
            contexts: p.context_key,
            clock: p.clock,
            name: p.name,
            members: p.members,
            ring,
            replica,
            transport: p.transport,
            keyspaces: Registry::default(),
            repair_slots: Arc::new(Semaphore::new(p.limits.max_pending_read_repairs)),
            metrics,
            limits: p.limits,
            request_timeout: p.request_timeout,
            health: Mutex::new(HashMap::new()),
            configured: p.keyspaces.iter().map(|k| k.name.clone()).collect(),
            dropped: RwLock::default(),
            learning: Mutex::new(()),
            warnings: Vec::new(),
        };
        node.load_dropped(&*p.storage)?;
        node.load_stored_keyspaces(&*p.storage)?;
        for def in p.keyspaces {
            def.validate(node.members.len())?;
            let name = def.name.clone();
            match node.learn_keyspace(def.clone()) {
                Ok(_) => {}
                // The stored definition is what the cluster agreed on at runtime and what
                // every peer's requests carry: preferring node.toml's would make this node
                // refuse all of them. So the stored one wins, loudly.
                Err(NodeError::Keyspace(KeyspaceError::Conflict { existing, .. })) => {
                    node.warn(format!(
                        "keyspace {name:?}: node.toml says {}, but this node stored {existing} at runtime; keeping the stored definition (edit node.toml to match, or drop and re-create the keyspace)",
                        def.summary()
                    ));
                }
                Err(NodeError::Keyspace(e @ KeyspaceError::Dropped { .. })) => {
                    node.warn(format!("{e}; ignoring it in node.toml (remove it there)"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Arc::new(node))
    }

    /// Problems found at start that did not stop the node (also logged as warnings).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn warn(&mut self, message: String) {
        tracing::warn!(node = %self.name, "{message}");
        self.warnings.push(message);
    }

    /// Load the dropped-keyspace markers.
    fn load_dropped(&mut self, storage: &dyn Storage) -> Result<(), NodeError> {
        let end = prefix_end(META_DROPPED_PREFIX).unwrap_or_default();
        let mut dropped: HashMap<String, BTreeSet<u64>> = HashMap::new();
        for (k, _) in storage.scan(META_DROPPED_PREFIX, &end, usize::MAX)? {
            let rest = &k[META_DROPPED_PREFIX.len()..];
            let parsed = rest
                .len()
                .checked_sub(9)
                .filter(|&cut| rest[cut] == 0)
                .and_then(|cut| {
                    let name = std::str::from_utf8(&rest[..cut]).ok()?;
                    let generation = u64::from_be_bytes(rest[cut + 1..].try_into().ok()?);
                    Some((name.to_string(), generation))
                });
            match parsed {
                Some((name, generation)) => {
                    dropped.entry(name).or_default().insert(generation);
                }
                None => self.warn(format!(
                    "ignoring a corrupt dropped-keyspace marker in storage ({} bytes)",
                    k.len()
                )),
            }
        }
        *self.dropped.get_mut().unwrap_or_else(|e| e.into_inner()) = dropped;
        Ok(())
    }

    /// Load the keyspaces stored at runtime. A record that does not decode, or whose
    /// definition is invalid for this cluster (e.g. r > n, or n larger than the cluster
    /// now is), is skipped with a warning rather than stopping the node: the node still
    /// serves every other keyspace, and learns a valid definition of the skipped one from
    /// the first peer request or look-up that carries it (which also replaces the record).
    fn load_stored_keyspaces(&mut self, storage: &dyn Storage) -> Result<(), NodeError> {
        let end = prefix_end(META_KEYSPACE_PREFIX).unwrap_or_default();
        for (k, v) in storage.scan(META_KEYSPACE_PREFIX, &end, usize::MAX)? {
            let key_name = String::from_utf8_lossy(&k[META_KEYSPACE_PREFIX.len()..]).to_string();
            let def: KeyspaceDef = match rmp_serde::from_slice(&v) {
                Ok(def) => def,
                Err(e) => {
                    self.warn(format!(
                        "stored definition of keyspace {key_name:?} is corrupt ({e}); skipping it until a peer supplies a valid one"
                    ));
                    continue;
                }
            };
            if let Err(e) = self.check_definition(&def) {
                self.warn(format!(
                    "stored definition of keyspace {key_name:?} is refused ({e}); skipping it until a peer supplies a valid one"
                ));
                continue;
            }
            self.keyspaces.insert(def)?;
        }
        Ok(())
    }

    /// Every keyspace definition entering this node passes here: valid for this cluster's
    /// size (so no `r > n` or `n` beyond the cluster reaches a coordinator) and not a
    /// dropped generation.
    fn check_definition(&self, def: &KeyspaceDef) -> Result<(), KeyspaceError> {
        def.validate(self.members.len())?;
        let dropped = self.dropped.read().unwrap_or_else(|e| e.into_inner());
        if dropped
            .get(&def.name)
            .is_some_and(|gens| gens.contains(&def.generation))
        {
            return Err(KeyspaceError::Dropped {
                name: def.name.clone(),
                generation: def.generation,
            });
        }
        Ok(())
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The actor id (`name@incarnation`) this node issues versions as now.
    pub fn replica_actor(&self) -> String {
        self.replica.actor().to_string()
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
    ) -> Option<crate::object::Object> {
        let ks = self.keyspaces.get(keyspace)?;
        self.replica.read(&ks, key).await.ok().flatten()
    }

    /// Store a keyspace definition (registry and disk) after checking it. Returns whether
    /// it was new.
    pub(crate) fn learn_keyspace(&self, def: KeyspaceDef) -> Result<bool, NodeError> {
        // Fast path for every replica request: a registered definition was checked when
        // it was registered, and dropping one unregisters it.
        if self.keyspaces.get(&def.name).as_ref() == Some(&def) {
            return Ok(false);
        }
        self.check_definition(&def)?;
        let _learning = self.learning.lock().unwrap_or_else(|e| e.into_inner());
        if self.keyspaces.get(&def.name).is_none() && self.was_dropped(&def.name) {
            // A new generation of a dropped name: remove anything a write in flight
            // during the drop left behind, before any write of the new generation lands.
            self.purge_data(&def.name)?;
        }
        let new = self.keyspaces.insert(def.clone())?;
        if new {
            let bytes =
                rmp_serde::to_vec_named(&def).map_err(|e| NodeError::Metadata(e.to_string()))?;
            let stored = self
                .replica
                .storage()
                .write(vec![BatchOp::Put(meta_key(&def.name), bytes)]);
            if let Err(e) = stored {
                self.keyspaces.remove(&def.name);
                return Err(e.into());
            }
            tracing::info!(keyspace = %def.name, settings = %def.summary(), "keyspace stored");
        }
        Ok(new)
    }

    fn was_dropped(&self, name: &str) -> bool {
        self.dropped
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Delete every stored item of keyspace `name`, in bounded batches.
    fn purge_data(&self, name: &str) -> Result<usize, NodeError> {
        let mut start = name.as_bytes().to_vec();
        start.push(0);
        let mut end = name.as_bytes().to_vec();
        end.push(1);
        let storage = self.replica.storage();
        let mut deleted = 0;
        loop {
            let keys = storage.scan(&start, &end, PURGE_BATCH)?;
            if keys.is_empty() {
                return Ok(deleted);
            }
            deleted += keys.len();
            storage.write(keys.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect())?;
        }
    }

    /// Drop keyspace `name` on this node: mark `generation` (and the generation this
    /// node holds, if another) dropped, forget the definition, then delete its data.
    /// Idempotent. Blocking (storage); callers on the runtime use `spawn_blocking`.
    fn drop_local(&self, name: &str, generation: u64) -> Result<usize, NodeError> {
        let _learning = self.learning.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.keyspaces.get(name).map(|d| d.generation);
        let gens: BTreeSet<u64> = held.into_iter().chain([generation]).collect();
        let mut batch = vec![BatchOp::Delete(meta_key(name))];
        for g in &gens {
            let mut k = META_DROPPED_PREFIX.to_vec();
            k.extend_from_slice(name.as_bytes());
            k.push(0);
            k.extend_from_slice(&g.to_be_bytes());
            batch.push(BatchOp::Put(k, Vec::new()));
        }
        // Marker first and in one batch with the definition's removal: after a crash the
        // node either still has the keyspace or refuses it for good, never half of each.
        self.replica.storage().write(batch)?;
        self.dropped
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .extend(gens);
        self.keyspaces.remove(name);
        let deleted = self.purge_data(name)?;
        tracing::info!(keyspace = name, generation, deleted, "keyspace dropped");
        Ok(deleted)
    }

    async fn drop_local_async(
        self: &Arc<Self>,
        name: &str,
        generation: u64,
    ) -> Result<usize, NodeError> {
        let me = Arc::clone(self);
        let name = name.to_string();
        tokio::task::spawn_blocking(move || me.drop_local(&name, generation))
            .await
            .map_err(|e| NodeError::Metadata(format!("drop task failed: {e}")))?
    }

    /// Create a keyspace as an admin asked: a new name gets a fresh generation; asking
    /// again for a keyspace that exists with the same settings is idempotent (it is
    /// announced again, with its existing generation).
    async fn create_keyspace_request(
        self: &Arc<Self>,
        mut def: KeyspaceDef,
    ) -> Result<ClientResponse, CoordinatorError> {
        def.validate(self.members.len())?;
        def.generation = match self.keyspace(&def.name).await {
            Ok(existing) if existing.same_settings(&def) => existing.generation,
            _ => fresh_generation(),
        };
        self.create_keyspace(def).await
    }

    /// Drop a keyspace on every node: here first, then announced to every peer. Nodes
    /// that miss the announcement keep the keyspace until they hear of the drop (an
    /// admin runs the drop again); a re-created keyspace of the same name has a new
    /// generation, which such a node refuses as a conflict rather than merging the old
    /// data into it.
    async fn drop_keyspace(
        self: &Arc<Self>,
        name: String,
    ) -> Result<ClientResponse, CoordinatorError> {
        crate::keyspace::validate_name(&name)?;
        if self.configured.contains(&name) {
            return Err(KeyspaceError::Configured(name).into());
        }
        let generation = self.keyspace(&name).await?.generation;
        self.drop_local_async(&name, generation).await?;
        let req = PeerRequest::DropKeyspace {
            name: name.clone(),
            generation,
        };
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut rx = self.fan_out(&self.other_members(), &req, deadline);
        let mut acked = vec![self.name.clone()];
        let mut missing = Vec::new();
        while let Some((node, _, res)) = rx.recv().await {
            match res {
                Ok(PeerResponse::Ack) => acked.push(node),
                Ok(_) => missing.push(format!("{node} (unexpected reply)")),
                Err(f) => {
                    let f = f.to_failure(&node);
                    missing.push(format!("{node} ({}: {})", f.kind, f.detail));
                }
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

    /// Refuse `req` unless `who` may send it (see [`access`]).
    async fn authorize(
        self: &Arc<Self>,
        who: &ClientIdentity,
        req: &ClientRequest,
    ) -> Result<(), CoordinatorError> {
        match access::needed(req) {
            None => Ok(()),
            Some((Permission::Admin, ks)) => {
                let action = match req {
                    ClientRequest::DropKeyspace(_) => "drop",
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

    /// Handle a request from a client whose certificate is `who`; this node coordinates
    /// it after checking `who` may send it.
    pub async fn handle_client(
        self: &Arc<Self>,
        who: ClientIdentity,
        req: ClientRequest,
    ) -> ClientResponse {
        let span = tracing::debug_span!("client_request", node = %self.name, op = op_name(&req), client = %who.name);
        let metric_op = match op_name(&req) {
            op @ ("get" | "put" | "delete" | "scan" | "batch" | "update") => op,
            _ => "admin",
        };
        let _inflight = self.metrics.start_request();
        let started = tokio::time::Instant::now();
        async move {
            let result = match self.authorize(&who, &req).await {
                Err(e) => Err(e),
                Ok(()) => self.dispatch_client(req).await,
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

    async fn dispatch_client(
        self: &Arc<Self>,
        req: ClientRequest,
    ) -> Result<ClientResponse, CoordinatorError> {
        match req {
            ClientRequest::Get(g) => self.get(g).await.map(ClientResponse::Get),
            ClientRequest::Put(p) => self.put(p).await.map(ClientResponse::Put),
            ClientRequest::Scan(q) => self.scan(q).await.map(ClientResponse::Scan),
            ClientRequest::Batch(b) => self.batch(b).await.map(ClientResponse::Batch),
            ClientRequest::Update(u) => self.update(u).await.map(ClientResponse::Update),
            ClientRequest::CreateKeyspace(def) => self.create_keyspace_request(def).await,
            ClientRequest::DropKeyspace(name) => self.drop_keyspace(name).await,
            ClientRequest::ListKeyspaces => Ok(ClientResponse::Keyspaces(self.keyspaces.list())),
            ClientRequest::Replicas { keyspace, key } => self.keyspace(&keyspace).await.map(|ks| {
                ClientResponse::Replicas(self.ring.preference_list(&key.partition, ks.n as usize))
            }),
            ClientRequest::Status => Ok(self.status()),
            ClientRequest::Stats => Ok(ClientResponse::Stats {
                node: self.name.clone(),
                latencies: self.metrics.snapshot(),
                read_repairs: self.metrics.read_repairs(),
            }),
            ClientRequest::Ping => Ok(ClientResponse::Pong(self.name.clone())),
        }
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
                            .map(|(object, dot)| PeerResponse::Written {
                                object,
                                dot: Some(dot),
                            })
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
                    .map(|written| {
                        let (objects, dots) = written.into_iter().unzip();
                        PeerResponse::WrittenBatch { objects, dots }
                    })
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
                .map(|object| PeerResponse::Written { object, dot: None }),
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
            PeerRequest::DropKeyspace { name, generation } => {
                return match self.drop_local_async(&name, generation).await {
                    Ok(_) => PeerResponse::Ack,
                    Err(e) => PeerResponse::Error(PeerError::Storage(e.to_string())),
                };
            }
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
        ReplicaError::Crdt(_)
        | ReplicaError::Policy(_)
        | ReplicaError::ObjectTooLarge { .. }
        | ReplicaError::BatchTooLarge { .. }
        | ReplicaError::Causality { .. } => PeerError::Invalid(e.to_string()),
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
        ClientRequest::DropKeyspace(_) => "drop_keyspace",
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
        CoordinatorError::Forbidden(_) => ErrorKind::Forbidden,
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

fn meta_key(name: &str) -> Vec<u8> {
    let mut key = META_KEYSPACE_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::storage::MemoryStorage;
    use crate::transport::memory::MemoryNetwork;

    fn members(n: usize) -> Vec<Member> {
        (1..=n)
            .map(|i| Member {
                name: format!("n{i}"),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            })
            .collect()
    }

    /// Node `n1` of a `size`-node cluster over `storage`, with `keyspaces` in its config.
    fn node(
        storage: Arc<dyn Storage>,
        size: usize,
        keyspaces: Vec<KeyspaceDef>,
    ) -> Result<Arc<Node>, NodeError> {
        let net = MemoryNetwork::new();
        Node::new(NodeParams {
            name: "n1".into(),
            members: members(size),
            vnodes: 8,
            storage,
            transport: Arc::new(net.transport("n1")),
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            request_timeout: Duration::from_millis(200),
            keyspaces,
            context_key: crate::context::ContextKey::random(),
            new_incarnation: false,
        })
    }

    fn store_def(storage: &dyn Storage, name: &str, bytes: Vec<u8>) {
        storage
            .write(vec![BatchOp::Put(meta_key(name), bytes)])
            .unwrap();
    }

    /// Goal: a keyspace definition from a peer — announced, or carried by a replica
    /// request — that is invalid for this cluster (r > n, n beyond the cluster) is refused
    /// and never stored or registered.
    #[tokio::test]
    async fn peer_keyspace_definitions_are_validated() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let n1 = node(Arc::clone(&storage), 3, vec![]).unwrap();
        let mut bad = KeyspaceDef::new("bad", 2, 2, 2);
        bad.r = 3;
        let reply = n1
            .handle_peer_request("n2".into(), PeerRequest::AnnounceKeyspace(bad.clone()))
            .await;
        match reply {
            PeerResponse::Error(PeerError::Invalid(m)) => {
                assert!(m.contains("r=3 is invalid"), "{m}")
            }
            other => panic!("r > n accepted: {other:?}"),
        }
        let too_wide = KeyspaceDef::new("wide", 5, 2, 2);
        let reply = n1
            .handle_peer_request(
                "n2".into(),
                PeerRequest::Read {
                    keyspace: too_wide,
                    key: Key::parse("k"),
                },
            )
            .await;
        assert!(
            matches!(reply, PeerResponse::Error(PeerError::Invalid(ref m)) if m.contains("cluster size (3)")),
            "{reply:?}"
        );
        assert!(n1.keyspaces.list().is_empty());
        let end = prefix_end(META_KEYSPACE_PREFIX).unwrap();
        assert!(storage
            .scan(META_KEYSPACE_PREFIX, &end, 10)
            .unwrap()
            .is_empty());
    }

    /// Goal: at start, a stored keyspace record that does not decode, or whose definition
    /// is invalid for the cluster (r > n; n beyond a cluster that shrank), is skipped with
    /// a warning naming it — the node starts, serves the valid stored keyspace, and never
    /// registers the bad ones.
    #[tokio::test]
    async fn bad_stored_keyspaces_are_skipped() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let good = KeyspaceDef::new("good", 3, 2, 2);
        store_def(&*storage, "good", rmp_serde::to_vec_named(&good).unwrap());
        store_def(&*storage, "garbled", b"\xc1\xc1 not a definition".to_vec());
        let mut r_over_n = KeyspaceDef::new("rovern", 2, 2, 2);
        r_over_n.r = 3;
        store_def(
            &*storage,
            "rovern",
            rmp_serde::to_vec_named(&r_over_n).unwrap(),
        );
        let wide = KeyspaceDef::new("wide", 5, 3, 3);
        store_def(&*storage, "wide", rmp_serde::to_vec_named(&wide).unwrap());

        let n1 = node(storage, 3, vec![]).expect("a bad stored record must not stop the node");
        let names: Vec<String> = n1.keyspaces.list().into_iter().map(|k| k.name).collect();
        assert_eq!(names, vec!["good"]);
        let w = n1.warnings().join("\n");
        for name in ["garbled", "rovern", "wide"] {
            assert!(w.contains(&format!("keyspace {name:?}")), "{w}");
        }
        assert!(w.contains("r=3 is invalid"), "{w}");
    }

    /// Goal: a runtime-stored keyspace that differs from node.toml's is a warning, not a
    /// refusal to start, and the stored definition is the one kept.
    #[tokio::test]
    async fn config_conflicting_with_stored_keyspace_warns() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let stored = KeyspaceDef::new("ks", 3, 2, 2);
        store_def(&*storage, "ks", rmp_serde::to_vec_named(&stored).unwrap());
        let edited = KeyspaceDef::new("ks", 3, 1, 1);
        let n1 = node(storage, 3, vec![edited]).expect("conflict must not stop the node");
        assert_eq!(n1.keyspaces.get("ks"), Some(stored));
        let w = n1.warnings().join("\n");
        assert!(
            w.contains("keeping the stored definition") && w.contains("r=1"),
            "{w}"
        );
    }

    /// Goal: a dropped keyspace's definition is refused from then on (also after a
    /// restart), its data is gone, and a new generation of the name is accepted.
    #[tokio::test]
    async fn dropped_generation_is_refused_for_good() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let n1 = node(Arc::clone(&storage), 1, vec![]).unwrap();
        let mut old = KeyspaceDef::new("tmp", 1, 1, 1);
        old.generation = 11;
        n1.learn_keyspace(old.clone()).unwrap();
        storage
            .write(vec![BatchOp::Put(
                b"tmp\x00k\x00\x01".to_vec(),
                b"x".to_vec(),
            )])
            .unwrap();
        assert_eq!(n1.drop_local("tmp", 11).unwrap(), 1);
        assert!(n1.keyspaces.get("tmp").is_none());
        let e = n1.learn_keyspace(old.clone()).unwrap_err().to_string();
        assert!(e.contains("was dropped"), "{e}");
        drop(n1);
        let n1 = node(Arc::clone(&storage), 1, vec![]).unwrap();
        assert!(
            n1.learn_keyspace(old.clone()).is_err(),
            "marker lost on restart"
        );
        let mut new = old.clone();
        new.generation = 12;
        assert!(n1.learn_keyspace(new).unwrap());
    }
}
