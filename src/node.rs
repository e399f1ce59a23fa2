//! The node: one member of the cluster, independent of sockets.
//!
//! A `Node` composes the pieces of one member, each depending only on those below it:
//!
//! ```text
//! Node ─► Coordinator ─► Peers ─► Transport (other nodes)
//!   │                      └────► ReplicaService ─► Replica, Catalog
//!   └───────────────────────────► ReplicaService (requests from peers)
//! ```
//!
//! It is driven from outside: the QUIC server (or the in-memory network) hands it client
//! requests ([`Node::handle_client`]: authorized, then coordinated by its [`Coordinator`])
//! and peer requests ([`Node::handle_peer_request`]: served by its [`ReplicaService`]). It
//! keeps what is the node's own: start-up (loading the [`Catalog`], warnings), the
//! mapping of coordinator errors to wire errors, metrics per client request, and status.
//! It never opens a socket itself, which is what lets a whole cluster run in one process
//! under test.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::access::ClientIdentity;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Limits, Member};
use crate::coordinator::{Coordinator, CoordinatorError, CoordinatorParams};
use crate::env::Env;
use crate::hints::HintStore;
use crate::key::Key;
use crate::keyspace::{KeyspaceDef, KeyspaceError};
use crate::peers::Peers;
use crate::proto::{
    BatchRequest, BatchResponse, ClientRequest, ClientResponse, ErrorKind, ErrorResponse,
    GetRequest, GetResponse, NodeStatus, PeerError, PeerRequest, PeerResponse, PutRequest,
    PutResponse, ScanRequest, ScanResponse, UpdateRequest, UpdateResponse,
};
use crate::replica::Replica;
use crate::replica_service::ReplicaService;
use crate::ring::{Ring, RingError};
use crate::storage::{Storage, StorageError};
use crate::transport::{BoxFuture, PeerHandler, Transport};

pub use crate::replica_service::MAX_SCAN_LIMIT;

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

impl From<CatalogError> for NodeError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Storage(e) => NodeError::Storage(e),
            CatalogError::Keyspace(e) => NodeError::Keyspace(e),
            CatalogError::Metadata(m) => NodeError::Metadata(m),
        }
    }
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
    /// Time, timers, randomness and tasks (see [`crate::env`]).
    pub env: Arc<dyn Env>,
    /// Limits.
    pub limits: Limits,
    /// Coordinator timeout per request.
    pub request_timeout: Duration,
    /// How long a read waits for its first R replicas before asking one more; zero asks
    /// all N at once (`timeouts.speculative_read_ms`).
    pub speculative_read: Duration,
    /// Keyspaces from the config.
    pub keyspaces: Vec<KeyspaceDef>,
    /// The cluster key that seals clients' causal contexts (the same on every node).
    pub context_key: crate::context::ContextKey,
    /// Take a new incarnation even if the database holds one: with `sync = false` (a
    /// crash may have lost writes this node acknowledged) and after restoring a backup.
    pub new_incarnation: bool,
    /// Overlap this node's fsync as a lead with replication (`storage.overlap_lead_sync`,
    /// only with `storage.sync = true`): lead writes it coordinates are stored deferred,
    /// and it keeps the running marker that makes an unclean restart a new incarnation.
    pub overlap_lead_sync: bool,
    /// Bug classes re-introduced on purpose (simulation tests only; all off otherwise).
    pub bugs: crate::replica::InjectedBugs,
    /// The clock `SetClockOffset` moves (the same one `env` reads), when the node's
    /// `faults.allow_clock_offset` is set; `None` refuses the request.
    pub clock_offset: Option<Arc<crate::clock::OffsetClock>>,
    /// `[anti_entropy]`: Merkle trees updated on every write, and exchanges.
    pub anti_entropy: crate::config::AntiEntropyConfig,
    /// Sloppy quorum and hinted handoff (`[hints]` of node.toml).
    pub hints: crate::config::HintsConfig,
    /// Tombstone reaping (`[tombstones]` of node.toml).
    pub tombstones: crate::config::TombstonesConfig,
    /// The failure detector (`[detector]` of node.toml).
    pub detector: crate::config::DetectorConfig,
    /// Layout spreading and transfers (`[membership]` of node.toml).
    pub membership: crate::config::MembershipConfig,
}

/// A cluster member's protocol core.
pub struct Node {
    /// This node's name.
    name: String,
    /// The live layouts: who owns what, and every member's address.
    membership: Arc<crate::membership::Membership>,
    /// Pulls the ranges this node gains when a layout changes, and drops the ones it lost.
    transfers: Arc<crate::transfer::Transfers>,
    /// `[membership]` of node.toml.
    membership_cfg: crate::config::MembershipConfig,
    /// Coordinator timeout per request (layout calls use it too).
    request_timeout: Duration,
    /// This node's own copy of the data.
    replica: Arc<Replica>,
    /// The keyspaces this node knows.
    catalog: Arc<Catalog>,
    /// Serves peers' requests (and this node's coordinator's, without the network).
    replica_service: Arc<ReplicaService>,
    /// Calls to replicas and the peers' last known health.
    peers: Arc<Peers>,
    /// Coordinates clients' requests.
    coordinator: Arc<Coordinator>,
    /// Time, timers, randomness and tasks: the node's only way to reach them.
    env: Arc<dyn Env>,
    /// Latency histograms and counters, served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Problems found while loading that did not stop the node.
    warnings: Vec<String>,
    /// The clock an admin may move (fault injection), when the config allows it.
    clock_offset: Option<Arc<crate::clock::OffsetClock>>,
    /// Anti-entropy exchanges (`None` when `anti_entropy.enabled` is off).
    anti_entropy: Option<Arc<crate::aae::AntiEntropy>>,
    /// The hints this node holds for other replicas (`crate::hints`).
    hints: Arc<HintStore>,
    /// Tombstone reaping (`None` when `tombstones.enabled` is off).
    reaper: Option<Arc<crate::tombstones::Reaper>>,
}

impl Node {
    /// Build a node and load its stored keyspaces, then the configured ones.
    pub fn new(p: NodeParams) -> Result<Arc<Self>, NodeError> {
        // The layouts: the stored history if this node has one, else a first layout from
        // node.toml's member list.
        let (membership, layout_warnings) = crate::membership::Membership::open(
            &p.name,
            p.storage.clone(),
            p.members.clone(),
            p.vnodes,
        )
        .map_err(|e| NodeError::Metadata(format!("layout: {e}")))?;
        let view = membership.view();
        let names: Vec<String> = view.members().into_iter().map(|m| m.name).collect();
        let ring = view.read_ring().clone();
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let trees = p.anti_entropy.enabled.then(|| {
            let t = crate::aae::tree::TreeIndex::new(&p.name, ring.clone());
            t.set_ring(view.read_layout_version(), ring.clone());
            Arc::new(t)
        });
        // The trees can be trusted only if the node stopped cleanly, on the ring of the
        // layout reads use now; from now until a clean stop they may not be (and stay
        // untrusted while anti-entropy is off, since writes then do not update them).
        let built_on = crate::transfer::trees_built_on(&*p.storage)
            .map_err(|e| NodeError::Metadata(format!("anti-entropy marker: {e}")))?;
        let trees_clean = crate::aae::tree::TreeIndex::was_clean(&*p.storage)
            .map_err(|e| NodeError::Metadata(format!("anti-entropy marker: {e}")))?
            && built_on.is_none_or(|v| v == view.read_layout_version());
        crate::transfer::init_cleaned(&*p.storage, view.read_layout_version())
            .map_err(|e| NodeError::Metadata(format!("layout clean-up marker: {e}")))?;
        crate::transfer::mark_trees(&*p.storage, view.read_layout_version())
            .map_err(|e| NodeError::Metadata(format!("anti-entropy marker: {e}")))?;
        crate::aae::tree::TreeIndex::mark(&*p.storage, false)
            .map_err(|e| NodeError::Metadata(format!("anti-entropy marker: {e}")))?;
        let replica = Replica::new(
            &p.name,
            p.storage.clone(),
            p.env.clone(),
            crate::replica::ReplicaOptions {
                max_object_bytes: p.limits.max_object_bytes,
                new_incarnation: p.new_incarnation,
                metrics: Arc::clone(&metrics),
                bugs: p.bugs,
                aae: trees.clone(),
                overlap_lead_sync: p.overlap_lead_sync,
            },
        )
        .map_err(|e| NodeError::Metadata(format!("node incarnation: {e}")))?;
        let (catalog, mut warnings) = Catalog::open(
            p.storage.clone(),
            p.env.clone(),
            smallest_layout(&view),
            p.keyspaces,
        )?;
        warnings.extend(layout_warnings);
        for message in &warnings {
            tracing::warn!(node = %p.name, "{message}");
        }
        let catalog = Arc::new(catalog);
        if let Some(trees) = trees.as_ref().filter(|_| !trees_clean) {
            let stats = trees
                .rebuild(&*p.storage, &catalog.list())
                .map_err(|e| NodeError::Metadata(format!("anti-entropy rebuild: {e}")))?;
            tracing::info!(node = %p.name, keys = stats.keys, skipped = stats.skipped, "anti-entropy trees rebuilt at start (the node did not stop cleanly, or they were off)");
        }
        let hints = Arc::new(
            HintStore::open(&p.name, p.storage.clone(), p.env.clone(), p.hints.clone())
                .map_err(|e| NodeError::Metadata(format!("hints: {e}")))?,
        );
        metrics.set_hints_source(&hints);
        let replica_service = Arc::new(
            ReplicaService::new(
                p.name.clone(),
                Arc::clone(&replica),
                Arc::clone(&catalog),
                p.env.clone(),
                Arc::clone(&metrics),
                p.limits.max_reply_bytes,
            )
            .with_hints(Arc::clone(&hints))
            .with_membership(Arc::clone(&membership)),
        );
        let detector = crate::membership::detector::Detector::new(
            p.name.clone(),
            names.clone(),
            p.detector.clone(),
            p.env.clone(),
            Arc::clone(&metrics),
            p.bugs,
        );
        let transport = p.transport;
        let peers = Arc::new(
            Peers::new(
                p.name.clone(),
                names,
                Arc::clone(&transport),
                Arc::clone(&replica_service),
                p.env.clone(),
                detector,
            )
            .with_bundles(crate::peers::BundleLimits {
                max_items: p.limits.max_bundle_items,
                max_bytes: p.limits.max_object_bytes,
                in_flight: p.limits.max_bundles_in_flight,
            }),
        );
        // Every layout change: peers, the detector, the transport's addresses and the
        // keyspaces' bound on `n` follow the nodes of the live versions.
        {
            // Weak: peers reach the membership (through the replica service), so a strong
            // reference back would keep the node, and its storage's lock, alive for good.
            let (peers, catalog) = (Arc::downgrade(&peers), Arc::downgrade(&catalog));
            let transport = Arc::downgrade(&transport);
            membership.on_change(move |v| {
                let members = v.members();
                if let Some(t) = transport.upgrade() {
                    for m in &members {
                        t.learn_peer(&m.name, m.addr);
                    }
                }
                if let Some(p) = peers.upgrade() {
                    p.set_members(members.into_iter().map(|m| m.name).collect());
                }
                if let Some(c) = catalog.upgrade() {
                    c.set_cluster_size(smallest_layout(v));
                }
            });
        }
        let anti_entropy = trees.map(|trees| {
            crate::aae::AntiEntropy::new(crate::aae::AntiEntropyParams {
                name: p.name.clone(),
                cfg: p.anti_entropy.clone(),
                trees,
                replica: Arc::clone(&replica),
                catalog: Arc::clone(&catalog),
                peers: Arc::clone(&peers),
                env: p.env.clone(),
                metrics: Arc::clone(&metrics),
                call_timeout: p.request_timeout,
                membership: Arc::clone(&membership),
            })
        });
        let reaper = p.tombstones.enabled.then(|| {
            crate::tombstones::Reaper::new(crate::tombstones::ReaperParams {
                name: p.name.clone(),
                cfg: p.tombstones.clone(),
                replica: Arc::clone(&replica),
                catalog: Arc::clone(&catalog),
                peers: Arc::clone(&peers),
                membership: Arc::clone(&membership),
                env: p.env.clone(),
                metrics: Arc::clone(&metrics),
                call_timeout: p.request_timeout,
                bugs: p.bugs,
            })
        });
        let coordinator = Arc::new(Coordinator::new(CoordinatorParams {
            name: p.name.clone(),
            membership: Arc::clone(&membership),
            catalog: Arc::clone(&catalog),
            peers: Arc::clone(&peers),
            limits: p.limits,
            request_timeout: p.request_timeout,
            contexts: p.context_key,
            env: p.env.clone(),
            metrics: Arc::clone(&metrics),
            sloppy: p.hints.enabled,
            speculative_read: p.speculative_read,
            bugs: p.bugs,
            overlap_lead_sync: p.overlap_lead_sync,
        }));
        // The handoff loop runs in the node's Env, so the simulator drives it too.
        crate::hints::spawn_replay(&hints, &peers, p.request_timeout);
        let transfers = crate::transfer::Transfers::new(crate::transfer::TransferParams {
            name: p.name.clone(),
            membership: Arc::clone(&membership),
            replica: Arc::clone(&replica),
            catalog: Arc::clone(&catalog),
            peers: Arc::clone(&peers),
            env: p.env.clone(),
            cfg: p.membership.clone(),
            call_timeout: p.request_timeout,
            bugs: p.bugs,
        });
        Ok(Arc::new(Node {
            name: p.name,
            membership,
            transfers,
            membership_cfg: p.membership,
            request_timeout: p.request_timeout,
            replica,
            catalog,
            replica_service,
            peers,
            coordinator,
            env: p.env,
            metrics,
            warnings,
            clock_offset: p.clock_offset,
            anti_entropy,
            hints,
            reaper,
        }))
    }

    /// This node's tombstone reaper, when `tombstones.enabled` is on. Its
    /// [`run`](crate::tombstones::Reaper::run) loop is spawned by whoever runs the node.
    pub fn reaper(&self) -> Option<&Arc<crate::tombstones::Reaper>> {
        self.reaper.as_ref()
    }

    /// This node's anti-entropy, when `anti_entropy.enabled` is on. Its
    /// [`run`](crate::aae::AntiEntropy::run) loop is spawned by whoever runs the node
    /// (the process runtime, the simulator, in-process clusters).
    pub fn anti_entropy(&self) -> Option<&Arc<crate::aae::AntiEntropy>> {
        self.anti_entropy.as_ref()
    }

    /// Record a clean stop: the anti-entropy trees are in step with the data, so the next
    /// start need not rebuild them. Call once nothing writes any more.
    pub fn mark_clean_stop(&self) {
        // The running marker goes (overlap_lead_sync): this start is not an unclean one.
        if let Err(e) = self.replica.stop_cleanly() {
            tracing::warn!(node = %self.name, error = %e, "could not record the clean stop; the next start takes a new incarnation");
        }
        if self.anti_entropy.is_some() {
            if let Err(e) = crate::aae::tree::TreeIndex::mark(&**self.replica.storage(), true) {
                tracing::warn!(node = %self.name, error = %e, "could not record the clean stop; anti-entropy trees will be rebuilt at the next start");
            }
        }
    }

    /// Problems found at start that did not stop the node (also logged as warnings).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// What this node holds for other replicas as a stand-in, and what it handed back.
    pub fn hint_stats(&self) -> crate::hints::HintStats {
        self.hints.stats()
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The actor id (`name@incarnation`) this node issues versions as now.
    pub fn replica_actor(&self) -> String {
        self.replica.actor().to_string()
    }

    /// The ring reads use now (the oldest live layout version's).
    pub fn ring(&self) -> Ring {
        self.coordinator.read_ring()
    }

    /// The live layouts.
    pub fn membership(&self) -> &Arc<crate::membership::Membership> {
        &self.membership
    }

    /// Transfers between layout versions.
    pub fn transfers(&self) -> &Arc<crate::transfer::Transfers> {
        &self.transfers
    }

    /// Run the layout machinery forever: acknowledging versions, gossiping histories, and
    /// transfers. Spawned by whoever runs the node, like the detector.
    pub fn run_membership(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let sync = crate::membership::sync::run(
            Arc::clone(&self.membership),
            Arc::clone(&self.peers),
            Arc::clone(&self.env),
            Duration::from_millis(self.membership_cfg.gossip_interval_ms),
            self.request_timeout,
        );
        let transfers = Arc::clone(&self.transfers).run();
        async move {
            tokio::join!(sync, transfers);
        }
    }

    /// The coordinator, for callers that coordinate requests without a client identity
    /// (tests, tools, the simulator).
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// This node's own copy of a key, read straight from its replica (no quorum): for
    /// tests and debugging tools that need to see one replica's state.
    pub async fn local_object(
        self: &Arc<Self>,
        keyspace: &str,
        key: &Key,
    ) -> Option<crate::object::Object> {
        let ks = self.catalog.get(keyspace)?;
        self.replica.read(&ks, key).await.ok().flatten()
    }

    /// Coordinate a read, without authorization (see [`Coordinator::get`]).
    pub async fn get(&self, req: GetRequest) -> Result<GetResponse, CoordinatorError> {
        self.coordinator.get(req).await
    }

    /// Coordinate a write or delete, without authorization (see [`Coordinator::put`]).
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, CoordinatorError> {
        self.coordinator.put(req).await
    }

    /// Coordinate a scan, without authorization (see [`Coordinator::scan`]).
    pub async fn scan(&self, req: ScanRequest) -> Result<ScanResponse, CoordinatorError> {
        self.coordinator.scan(req).await
    }

    /// Coordinate a batch, without authorization (see [`Coordinator::batch`]).
    pub async fn batch(&self, req: BatchRequest) -> Result<BatchResponse, CoordinatorError> {
        self.coordinator.batch(req).await
    }

    /// Coordinate a CRDT operation, without authorization (see [`Coordinator::update`]).
    pub async fn update(&self, req: UpdateRequest) -> Result<UpdateResponse, CoordinatorError> {
        self.coordinator.update(req).await
    }

    /// This node's failure detector. Its [`run`](crate::membership::detector::Detector::run)
    /// loop is started by whoever runs the node, through [`Node::run_detector`].
    pub fn detector(&self) -> &Arc<crate::membership::detector::Detector> {
        self.peers.detector()
    }

    /// The failure detector's loop (probes, suspicion, conviction), for the node's driver
    /// to spawn.
    pub fn run_detector(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(self.peers.detector()).run(Arc::clone(&self.peers))
    }

    /// Serve an indirect probe: ping `target` for the asker, bounded by `timeout_ms`.
    async fn probe_for(&self, target: String, timeout_ms: u64) -> PeerResponse {
        if !self.peers.is_member(&target) {
            return PeerResponse::Error(PeerError::Invalid(format!(
                "indirect probe of {target:?}, which is not a member"
            )));
        }
        let timeout = timeout_ms.min(crate::membership::detector::MAX_INDIRECT_TIMEOUT_MS);
        let deadline = self.env.now() + Duration::from_millis(timeout);
        PeerResponse::Probed(self.peers.probe(&target, deadline).await.is_ok())
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
        let started = self.env.now();
        async move {
            let result = match self.coordinator.authorize(&who, &req).await {
                Err(e) => Err(e),
                Ok(()) => self.dispatch_client(req).await,
            };
            let quorum_failed = matches!(result, Err(CoordinatorError::QuorumNotReached { .. }));
            self.metrics.coordinator_done(
                metric_op,
                self.env.now().saturating_duration_since(started),
                quorum_failed,
            );
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
        let coordinator = &self.coordinator;
        match req {
            ClientRequest::Get(g) => coordinator.get(g).await.map(ClientResponse::Get),
            ClientRequest::ReplicaGet(g) => coordinator.replica_copy(g).await,
            ClientRequest::Put(p) => coordinator.put(p).await.map(ClientResponse::Put),
            ClientRequest::Scan(q) => coordinator.scan(q).await.map(ClientResponse::Scan),
            ClientRequest::Batch(b) => coordinator.batch(b).await.map(ClientResponse::Batch),
            ClientRequest::Update(u) => coordinator.update(u).await.map(ClientResponse::Update),
            ClientRequest::CreateKeyspace(def) => coordinator.create_keyspace(def).await,
            ClientRequest::DropKeyspace(name) => coordinator.drop_keyspace(name).await,
            ClientRequest::ListKeyspaces => Ok(ClientResponse::Keyspaces(self.catalog.list())),
            ClientRequest::Replicas { keyspace, key } => coordinator
                .replicas(&keyspace, &key)
                .await
                .map(ClientResponse::Replicas),
            ClientRequest::Status => Ok(self.status()),
            ClientRequest::AaeStatus => Ok(ClientResponse::AaeStatus {
                node: self.name.clone(),
                enabled: self.anti_entropy.is_some(),
                ranges: self
                    .anti_entropy
                    .as_ref()
                    .map(|a| a.status())
                    .unwrap_or_default(),
            }),
            ClientRequest::Stats => Ok(ClientResponse::Stats {
                node: self.name.clone(),
                latencies: self.metrics.snapshot(),
                read_repairs: self.metrics.read_repairs(),
            }),
            ClientRequest::Ping => Ok(ClientResponse::Pong(self.name.clone())),
            ClientRequest::ClusterStatus => Ok(ClientResponse::Cluster(Box::new(
                crate::proto::ClusterReport {
                    node: self.name.clone(),
                    history: self.membership.view().history.clone(),
                    staged: self.membership.staged(),
                    transfer: self.transfers.status(),
                },
            ))),
            ClientRequest::ClusterStage(change) => self
                .membership
                .stage(change, |next| {
                    self.layout_fits(next)
                        .map_err(crate::membership::layout::LayoutError::BadChange)
                })
                .map(ClientResponse::Staged)
                .map_err(|e| CoordinatorError::Layout(e.to_string())),
            ClientRequest::ClusterAbort => self
                .membership
                .abort()
                .map(ClientResponse::Staged)
                .map_err(|e| CoordinatorError::Layout(e.to_string())),
            ClientRequest::ClusterPlan => self.plan().await.map(|p| ClientResponse::Plan(Box::new(p))),
            ClientRequest::ClusterCommit => {
                let (next, _) = self
                    .membership
                    .proposal()
                    .map_err(|e| CoordinatorError::Layout(e.to_string()))?;
                self.check_layout(&next)?;
                match crate::membership::sync::commit(
                    &self.membership,
                    &self.peers,
                    &*self.env,
                    self.request_timeout,
                )
                .await
                {
                    Ok(c) => Ok(ClientResponse::Committed(Box::new(c.layout))),
                    Err(e @ crate::membership::sync::CommitError::NoMajority { .. }) => {
                        Err(CoordinatorError::LayoutUnavailable(e.to_string()))
                    }
                    Err(e) => Err(CoordinatorError::Layout(e.to_string())),
                }
            }
            ClientRequest::SetClockOffset { ms } => match &self.clock_offset {
                Some(clock) => {
                    tracing::warn!(node = %self.name, ms, "clock offset set by an admin (fault injection)");
                    clock.set_offset_ms(ms);
                    Ok(ClientResponse::ClockOffset {
                        node: self.name.clone(),
                        ms: clock.offset_ms(),
                    })
                }
                None => Err(CoordinatorError::FaultInjectionOff(format!(
                    "node {} does not allow clock offsets (fault injection is off: set `allow_clock_offset = true` under `[faults]` in its node.toml, for tests only)",
                    self.name
                ))),
            },
        }
    }

    /// A layout must hold at least N members for every keyspace.
    fn check_layout(
        &self,
        next: &crate::membership::layout::Layout,
    ) -> Result<(), CoordinatorError> {
        self.layout_fits(next).map_err(CoordinatorError::Layout)
    }

    /// Why `next` cannot serve this cluster's keyspaces, if it cannot: fewer members than
    /// some keyspace's N.
    fn layout_fits(&self, next: &crate::membership::layout::Layout) -> Result<(), String> {
        match self
            .catalog
            .list()
            .into_iter()
            .find(|k| k.n as usize > next.members.len())
        {
            Some(ks) => Err(format!(
                "layout v{} would have {} member(s), but keyspace {:?} keeps n={} replicas of every key: drop or shrink the keyspace first, or add nodes",
                next.version,
                next.members.len(),
                ks.name,
                ks.n
            )),
            None => Ok(()),
        }
    }

    /// What the staged changes would do: ranges moving, bytes to transfer (from each
    /// member's storage estimate, [`Node::data_sizes`]), and the balance after.
    async fn plan(&self) -> Result<crate::membership::layout::Plan, CoordinatorError> {
        let (next, staged) = self
            .membership
            .proposal()
            .map_err(|e| CoordinatorError::Layout(e.to_string()))?;
        self.check_layout(&next)?;
        let view = self.membership.view();
        let current = view.history.current();
        let n = self
            .catalog
            .list()
            .iter()
            .map(|k| k.n as usize)
            .max()
            .unwrap_or(3);
        let sizes = self.data_sizes(current).await;
        crate::membership::layout::Plan::of(current, &next, &staged.changes, n, &sizes)
            .map_err(|e| CoordinatorError::Layout(e.to_string()))
    }

    /// Each member's data size in bytes: its storage engine's estimate, asked for with a
    /// short deadline; a member that does not answer is counted at this node's size (the
    /// plan's figure is an estimate either way).
    async fn data_sizes(
        &self,
        layout: &crate::membership::layout::Layout,
    ) -> std::collections::BTreeMap<String, u64> {
        let own = self.replica.storage().approximate_bytes().unwrap_or(0);
        let names = layout.names();
        let deadline = self.env.now() + self.request_timeout.min(Duration::from_secs(1));
        let mut rx = self.peers.fan_out(&names, crate::peers::DataSize, deadline);
        let mut sizes: std::collections::BTreeMap<String, u64> =
            names.iter().map(|n| (n.clone(), own)).collect();
        while let Some(r) = rx.recv().await {
            if let Ok(Some(n)) = r.result {
                sizes.insert(r.node, n);
            }
        }
        sizes
    }

    fn status(&self) -> ClientResponse {
        let own = self.ring().ownership();
        let hints = self.hints.stats();
        let reaping = self.reaper.as_ref().map(|r| r.stats());
        let me = |m: &Member| m.name == self.name;
        let view: std::collections::HashMap<_, _> = self
            .detector()
            .view()
            .into_iter()
            .map(|(n, s, held)| (n, (s, held)))
            .collect();
        let members = self.membership.view().members();
        let nodes = members
            .iter()
            .map(|m| NodeStatus {
                hints_pending: hints.pending.get(&m.name).map_or(0, |p| p.count),
                hints_pending_bytes: hints.pending.get(&m.name).map_or(0, |p| p.bytes),
                hints_replayed: if m.name == self.name {
                    hints.replayed
                } else {
                    0
                },
                hints_dropped: if m.name == self.name {
                    hints.dropped_expired + hints.dropped_full + hints.dropped_refused
                } else {
                    0
                },
                name: m.name.clone(),
                addr: m.addr.to_string(),
                state: match self.peers.peer_up(&m.name) {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "unknown",
                }
                .to_string(),
                ownership: own.get(&m.name).copied().unwrap_or(0.0),
                detector: match view.get(&m.name) {
                    _ if me(m) => "alive",
                    Some((Some(s), _)) => s.name(),
                    _ => "unknown",
                }
                .to_string(),
                detector_for_ms: view
                    .get(&m.name)
                    .map_or(0, |(_, held)| held.as_millis() as u64),
                tombstones_reaped: reaping.as_ref().filter(|_| me(m)).map(|_| {
                    self.metrics
                        .tombstones_reaped
                        .load(std::sync::atomic::Ordering::Relaxed)
                }),
                tombstones_kept: reaping.as_ref().filter(|_| me(m)).map_or(0, |s| {
                    s.blocked_unreachable + s.blocked_hints + s.blocked_disagree
                }),
                tombstones_last_kept: reaping
                    .as_ref()
                    .filter(|_| me(m))
                    .and_then(|s| s.last_blocker.clone()),
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
            if self.peers.is_member(&from) {
                self.peers.heard_from(&from);
            }
            match req {
                PeerRequest::ProbeFor { target, timeout_ms } => {
                    self.probe_for(target, timeout_ms).await
                }
                req => self.replica_service.handle(req).await,
            }
        }
        .instrument(span)
        .await
    }
}

/// The members of the smallest live layout version: what bounds a keyspace's N.
fn smallest_layout(view: &crate::membership::View) -> usize {
    view.history
        .live
        .iter()
        .map(|l| l.members.len())
        .min()
        .unwrap_or(1)
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
        ClientRequest::ReplicaGet(_) => "replica_get",
        ClientRequest::Status => "status",
        ClientRequest::AaeStatus => "aae_status",
        ClientRequest::Stats => "stats",
        ClientRequest::Ping => "ping",
        ClientRequest::SetClockOffset { .. } => "set_clock_offset",
        ClientRequest::ClusterStatus => "cluster_status",
        ClientRequest::ClusterStage(_) => "cluster_stage",
        ClientRequest::ClusterPlan => "cluster_plan",
        ClientRequest::ClusterCommit => "cluster_commit",
        ClientRequest::ClusterAbort => "cluster_abort",
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
        | CoordinatorError::BatchTooLarge { .. }
        | CoordinatorError::FaultInjectionOff(_)
        | CoordinatorError::Layout(_) => ErrorKind::InvalidRequest,
        CoordinatorError::LayoutUnavailable(_) => ErrorKind::Unavailable,
        CoordinatorError::Catalog(CatalogError::Keyspace(_)) | CoordinatorError::Replica(_) => {
            ErrorKind::InvalidRequest
        }
        CoordinatorError::Catalog(_) => ErrorKind::Internal,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{meta_key, META_KEYSPACE_PREFIX};
    use crate::storage::{prefix_end, BatchOp, MemoryStorage};
    use crate::transport::memory::MemoryNetwork;

    use crate::membership::layout::test_members as members;

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
            env: crate::env::TokioEnv::system(),
            limits: Limits::default(),
            request_timeout: Duration::from_millis(200),
            speculative_read: Duration::from_millis(crate::config::DEFAULT_SPECULATIVE_READ_MS),
            keyspaces,
            context_key: crate::context::ContextKey::random(),
            new_incarnation: false,
            overlap_lead_sync: false,
            bugs: Default::default(),
            clock_offset: None,
            anti_entropy: Default::default(),
            hints: Default::default(),
            tombstones: Default::default(),
            detector: Default::default(),
            membership: Default::default(),
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
                    own_copy: false,
                },
            )
            .await;
        assert!(
            matches!(reply, PeerResponse::Error(PeerError::Invalid(ref m)) if m.contains("cluster size (3)")),
            "{reply:?}"
        );
        assert!(n1.catalog.list().is_empty());
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
        let names: Vec<String> = n1.catalog.list().into_iter().map(|k| k.name).collect();
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
        assert_eq!(n1.catalog.get("ks"), Some(stored));
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
        n1.catalog.learn(old.clone()).unwrap();
        storage
            .write(vec![BatchOp::Put(
                b"tmp\x00k\x00\x01".to_vec(),
                b"x".to_vec(),
            )])
            .unwrap();
        assert_eq!(n1.catalog.drop_local("tmp", 11).unwrap(), 1);
        assert!(n1.catalog.get("tmp").is_none());
        let e = n1.catalog.learn(old.clone()).unwrap_err().to_string();
        assert!(e.contains("was dropped"), "{e}");
        drop(n1);
        let n1 = node(Arc::clone(&storage), 1, vec![]).unwrap();
        assert!(
            n1.catalog.learn(old.clone()).is_err(),
            "marker lost on restart"
        );
        let mut new = old.clone();
        new.generation = 12;
        assert!(n1.catalog.learn(new).unwrap());
    }
}
