//! Whole clusters in one process, for tests, examples and (later) the simulator.
//!
//! [`MemoryCluster`] wires nodes through the in-memory network (cut links, crash nodes,
//! no sockets). [`QuicCluster`] runs real nodes — QUIC, TLS, RocksDB — on loopback ports
//! inside the current tokio runtime, with the same config files a real deployment uses.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{
    ClusterConfig, ClusterFile, HintsConfig, Limits, Member, NodeConfig, RingConfig, StorageConfig,
    Timeouts, TlsConfig, DEFAULT_VNODES,
};
use crate::keyspace::KeyspaceDef;
use crate::node::{Node, NodeError, NodeParams};
use crate::runtime::{self, RunningNode, StartError};
use crate::storage::{MemoryStorage, Storage};
use crate::tls::{self, Role, TlsError};
use crate::transport::memory::MemoryNetwork;
use crate::transport::PeerHandler;

/// Member `n{i}` of an in-memory cluster (its address is never dialled).
fn memory_member(i: usize) -> Member {
    Member {
        name: format!("n{i}"),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
        zone: None,
    }
}

/// The member an in-memory node `name` (`n{i}`) would be in a layout.
pub fn memory_member_named(name: &str) -> Member {
    let i: usize = name.trim_start_matches('n').parse().unwrap_or(0);
    Member {
        name: name.to_string(),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
        zone: None,
    }
}

/// `n` wall clocks, one per node.
fn system_clocks(n: usize) -> Vec<Arc<dyn Clock>> {
    (0..n)
        .map(|_| Arc::new(SystemClock) as Arc<dyn Clock>)
        .collect()
}

/// The self-healing settings of every node of a [`MemoryCluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `[anti_entropy]`.
    pub anti_entropy: crate::config::AntiEntropyConfig,
    /// Whether each node's exchange loop runs (else tests start exchanges themselves).
    pub run_anti_entropy: bool,
    /// `[hints]`.
    pub hints: HintsConfig,
    /// `[tombstones]`.
    pub tombstones: crate::config::TombstonesConfig,
    /// Re-introduced bug classes (tests that show a check can fail).
    #[doc(hidden)]
    pub bugs: crate::replica::InjectedBugs,
    /// `timeouts.speculative_read_ms`; `None` keeps its default.
    pub speculative_read: Option<Duration>,
    /// Whether each node runs its layout loops (gossip, acknowledgements, transfers), as a
    /// real node does; off, layouts change only when tests drive them.
    pub run_membership: bool,
    /// `[membership]`.
    pub membership: crate::config::MembershipConfig,
    /// `storage.overlap_lead_sync` of every node.
    pub overlap_lead_sync: bool,
    /// Each node's storage, by name, when it first starts (`None`: in memory), so a test
    /// can give a node a disk with faults (the simulator's [`crate::sim::storage::SimDisk`]).
    pub storage_for: Option<StorageMaker>,
}

/// A function from a node's name to its storage.
pub type MakeStorage = dyn Fn(&str) -> Arc<dyn Storage> + Send + Sync;

/// Makes a node's storage from its name (see [`ClusterOptions::storage_for`]).
#[derive(Clone)]
pub struct StorageMaker(pub Arc<MakeStorage>);

impl std::fmt::Debug for StorageMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageMaker")
    }
}

/// Nodes connected by a [`MemoryNetwork`].
pub struct MemoryCluster {
    /// The network; cut and heal links here.
    pub net: MemoryNetwork,
    /// The nodes, `n1`..`nN`, then any added ([`MemoryCluster::add_node`]).
    pub nodes: Vec<Arc<Node>>,
    /// How nodes are made, so more can be added and crashed ones restarted.
    recipe: Recipe,
}

/// What every node of a [`MemoryCluster`] is made of.
struct Recipe {
    keyspaces: Vec<KeyspaceDef>,
    request_timeout: Duration,
    opts: ClusterOptions,
    context_key: crate::context::ContextKey,
    /// The first layout's members (node.toml's `cluster.nodes`).
    first: Vec<Member>,
    /// Each node's storage, kept across a crash (the disk survives the process).
    storages: std::collections::BTreeMap<String, Arc<dyn Storage>>,
    /// Each running node's tasks, aborted when it crashes.
    envs: std::collections::BTreeMap<String, Arc<TaskEnv>>,
}

/// A node's environment in a [`MemoryCluster`]: tokio's, with the node's tasks kept so a
/// crash can end them all, as a process's end does.
struct TaskEnv {
    inner: Arc<crate::env::TokioEnv>,
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl TaskEnv {
    fn abort_all(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Clock for TaskEnv {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
}

impl crate::env::Env for TaskEnv {
    fn now(&self) -> tokio::time::Instant {
        self.inner.now()
    }
    fn sleep_until(&self, deadline: tokio::time::Instant) -> crate::env::BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }
    fn spawn(&self, task: crate::env::BoxFuture<'static, ()>) {
        let handle = tokio::spawn(task);
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.abort_handle());
    }
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>) -> crate::env::BoxFuture<'static, ()> {
        self.inner.run_blocking(job)
    }
    fn random_u64(&self) -> u64 {
        self.inner.random_u64()
    }
}

impl MemoryCluster {
    /// `n` nodes with in-memory storage, the given keyspaces and request timeout.
    pub fn new(
        n: usize,
        keyspaces: Vec<KeyspaceDef>,
        request_timeout: Duration,
    ) -> Result<Self, NodeError> {
        Self::with_clocks(keyspaces, request_timeout, system_clocks(n))
    }

    /// One node per clock (`n1` gets the first), so tests can skew or freeze time per node.
    pub fn with_clocks(
        keyspaces: Vec<KeyspaceDef>,
        request_timeout: Duration,
        clocks: Vec<Arc<dyn Clock>>,
    ) -> Result<Self, NodeError> {
        Self::build_with(
            keyspaces,
            request_timeout,
            clocks,
            ClusterOptions::default(),
        )
    }

    /// `n` nodes as [`MemoryCluster::new`], with `anti_entropy` as every node's
    /// `[anti_entropy]` and, when it is enabled, each node's exchange loop running.
    /// Hinted handoff is off, so whatever converges is anti-entropy's doing.
    pub fn with_anti_entropy(
        n: usize,
        keyspaces: Vec<KeyspaceDef>,
        request_timeout: Duration,
        anti_entropy: crate::config::AntiEntropyConfig,
    ) -> Result<Self, NodeError> {
        let opts = ClusterOptions {
            anti_entropy,
            run_anti_entropy: true,
            hints: HintsConfig {
                enabled: false,
                ..HintsConfig::default()
            },
            ..ClusterOptions::default()
        };
        Self::build_with(keyspaces, request_timeout, system_clocks(n), opts)
    }

    /// As [`MemoryCluster::with_clocks`], every node with `hints` as its `[hints]`.
    pub fn with_hints(
        keyspaces: Vec<KeyspaceDef>,
        request_timeout: Duration,
        clocks: Vec<Arc<dyn Clock>>,
        hints: HintsConfig,
    ) -> Result<Self, NodeError> {
        let opts = ClusterOptions {
            hints,
            ..ClusterOptions::default()
        };
        Self::build_with(keyspaces, request_timeout, clocks, opts)
    }

    /// `n` nodes with every self-healing option given: `[anti_entropy]`, `[hints]` and
    /// `[tombstones]` as each node's, and whether the exchange loop runs. The reaper's
    /// loop never runs here: tests call [`crate::tombstones::Reaper::round`] themselves.
    pub fn with_options(
        n: usize,
        keyspaces: Vec<KeyspaceDef>,
        request_timeout: Duration,
        opts: ClusterOptions,
    ) -> Result<Self, NodeError> {
        Self::build_with(keyspaces, request_timeout, system_clocks(n), opts)
    }

    fn build_with(
        keyspaces: Vec<KeyspaceDef>,
        request_timeout: Duration,
        clocks: Vec<Arc<dyn Clock>>,
        opts: ClusterOptions,
    ) -> Result<Self, NodeError> {
        let ClusterOptions {
            anti_entropy,
            run_anti_entropy,
            hints,
            tombstones,
            bugs,
            speculative_read,
            run_membership,
            membership,
            overlap_lead_sync,
            storage_for,
        } = opts;
        let speculative_read = speculative_read.unwrap_or(Duration::from_millis(
            crate::config::DEFAULT_SPECULATIVE_READ_MS,
        ));
        let n = clocks.len();
        let members: Vec<Member> = (1..=n).map(memory_member).collect();
        let mut c = MemoryCluster {
            net: MemoryNetwork::new(),
            nodes: Vec::new(),
            recipe: Recipe {
                keyspaces,
                request_timeout,
                opts: ClusterOptions {
                    anti_entropy,
                    run_anti_entropy,
                    hints,
                    tombstones,
                    bugs,
                    speculative_read: Some(speculative_read),
                    run_membership,
                    membership,
                    overlap_lead_sync,
                    storage_for,
                },
                context_key: crate::context::ContextKey::random(),
                first: members.clone(),
                storages: Default::default(),
                envs: Default::default(),
            },
        };
        for (m, clock) in members.iter().zip(clocks) {
            let node = c.start(&m.name, clock)?;
            c.nodes.push(node);
        }
        Ok(c)
    }

    /// Start node `name` on its storage (new if it has none), on `clock`.
    fn start(&mut self, name: &str, clock: Arc<dyn Clock>) -> Result<Arc<Node>, NodeError> {
        let r = &mut self.recipe;
        let o = &r.opts;
        let storage =
            Arc::clone(r.storages.entry(name.to_string()).or_insert_with(
                || match &o.storage_for {
                    Some(make) => (make.0)(name),
                    None => Arc::new(MemoryStorage::new()),
                },
            ));
        let env = Arc::new(TaskEnv {
            inner: crate::env::TokioEnv::new(clock),
            tasks: Default::default(),
        });
        let node = Node::new(NodeParams {
            name: name.to_string(),
            members: r.first.clone(),
            vnodes: DEFAULT_VNODES,
            storage,
            transport: Arc::new(self.net.transport(name)),
            env: Arc::clone(&env) as Arc<dyn crate::env::Env>,
            limits: Limits::default(),
            request_timeout: r.request_timeout,
            speculative_read: o.speculative_read.unwrap_or(Duration::from_millis(
                crate::config::DEFAULT_SPECULATIVE_READ_MS,
            )),
            keyspaces: r.keyspaces.clone(),
            context_key: r.context_key.clone(),
            new_incarnation: false,
            overlap_lead_sync: o.overlap_lead_sync,
            bugs: o.bugs,
            clock_offset: None,
            anti_entropy: o.anti_entropy.clone(),
            hints: o.hints.clone(),
            tombstones: o.tombstones.clone(),
            // No detector loop runs here (tests drive the nodes); calls feed it.
            detector: Default::default(),
            membership: o.membership.clone(),
        })?;
        use crate::env::Env as _;
        let handler: Arc<dyn PeerHandler> = node.clone();
        if let Some(ae) = node.anti_entropy().filter(|_| o.run_anti_entropy) {
            env.spawn(Box::pin(Arc::clone(ae).run()));
        }
        if o.run_membership {
            env.spawn(Box::pin(node.run_membership()));
        }
        self.net.register(
            name,
            Arc::downgrade(&handler),
            Arc::clone(&env) as Arc<dyn crate::env::Env>,
        );
        self.net.set_down(name, false);
        r.envs.insert(name.to_string(), env);
        Ok(node)
    }

    /// Start a new node `name`, outside the layout (as `cluster.joining = true`): it
    /// learns the layouts from the others and owns nothing until a commit adds it.
    pub fn add_node(&mut self, name: &str) -> Result<Arc<Node>, NodeError> {
        let node = self.start(name, Arc::new(SystemClock))?;
        self.nodes.push(Arc::clone(&node));
        Ok(node)
    }

    /// Crash node `name`: its tasks end and the network stops reaching it; its storage
    /// stays, as a disk does.
    pub fn crash(&mut self, name: &str) {
        self.net.set_down(name, true);
        if let Some(env) = self.recipe.envs.remove(name) {
            env.abort_all();
        }
        self.nodes.retain(|n| n.name() != name);
    }

    /// Start crashed node `name` again on its storage.
    pub fn restart(&mut self, name: &str) -> Result<Arc<Node>, NodeError> {
        let node = self.start(name, Arc::new(SystemClock))?;
        self.nodes.push(Arc::clone(&node));
        Ok(node)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Arc<Node> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}

/// Errors setting up a QUIC cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterSetupError {
    /// Certificates could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A node did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Writing a file failed.
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The cluster key could not be made.
    #[error(transparent)]
    ClusterKey(#[from] crate::context::ContextError),
}

/// Write certificates, node configs and a cluster file for `n` nodes under `dir`;
/// returns the node configs (already validated) and the cluster file path.
///
/// Layout: `dir/certs/`, `dir/<node>/node.toml`, `dir/<node>/data/`, `dir/cluster.toml`.
pub fn write_cluster_files(
    dir: &Path,
    addrs: &[SocketAddr],
    keyspaces: &[KeyspaceDef],
    storage: StorageConfig,
    timeouts: Timeouts,
) -> Result<(Vec<NodeConfig>, PathBuf), ClusterSetupError> {
    let io = |p: &Path, e| ClusterSetupError::Io(p.to_path_buf(), e);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(|e| io(&certs, e))?;
    let ca = tls::ensure_ca(&certs)?;
    let cluster_key = crate::context::ensure_key_file(&certs)?;
    let members: Vec<Member> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Member {
            name: format!("n{}", i + 1),
            addr: *a,
            zone: None,
        })
        .collect();
    let mut configs = Vec::new();
    for m in &members {
        let ids = tls::issue(
            &certs,
            &m.name,
            Role::Node,
            &[m.addr.ip()],
            tls::DEFAULT_VALIDITY_DAYS,
        )?;
        let node_dir = dir.join(&m.name);
        std::fs::create_dir_all(&node_dir).map_err(|e| io(&node_dir, e))?;
        let cfg = NodeConfig {
            name: m.name.clone(),
            listen: m.addr,
            data_dir: node_dir.join("data"),
            tls: TlsConfig {
                ca_cert: ca.cert.clone(),
                cert: ids.cert,
                key: ids.key,
                cluster_key: Some(cluster_key.clone()),
            },
            storage: storage.clone(),
            ring: RingConfig::default(),
            limits: Limits::default(),
            timeouts: timeouts.clone(),
            cluster: ClusterConfig {
                nodes: members.clone(),
                joining: false,
            },
            keyspaces: keyspaces.to_vec(),
            // Same port number as the QUIC endpoint, on TCP: predictable, and free
            // whenever the UDP port was.
            metrics_listen: Some(m.addr),
            faults: Default::default(),
            anti_entropy: Default::default(),
            hints: Default::default(),
            tombstones: Default::default(),
            detector: Default::default(),
            membership: Default::default(),
            new_incarnation: false,
        };
        let path = node_dir.join("node.toml");
        let text = toml::to_string_pretty(&cfg).map_err(|e| io(&path, std::io::Error::other(e)))?;
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        configs.push(cfg);
    }
    // The cluster file's user is the cluster's operator (the dev cluster's CLI and shell
    // create keyspaces), so it gets an admin certificate; `client_file` makes files for
    // plain clients.
    let client = tls::issue(
        &certs,
        "admin",
        Role::Admin,
        &[],
        tls::DEFAULT_VALIDITY_DAYS,
    )?;
    let cf = ClusterFile {
        ca_cert: ca.cert,
        client_cert: client.cert,
        client_key: client.key,
        contact_points: members,
        keyspace: keyspaces
            .first()
            .map(|k| k.name.clone())
            .unwrap_or_else(|| "default".into()),
        timeout_ms: timeouts.request_ms * 2 + 1000,
    };
    let path = dir.join("cluster.toml");
    let text = toml::to_string_pretty(&cf).map_err(|e| io(&path, std::io::Error::other(e)))?;
    std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    Ok((configs, path))
}

/// A copy of `cluster_file` (made by [`write_cluster_files`]) that presents a new
/// certificate for `name` with `role`, issued by the same CA: `<dir>/<name>.toml`, where
/// `dir` holds the cluster file. For clients other than the cluster's admin.
pub fn client_file(
    cluster_file: &Path,
    name: &str,
    role: Role,
) -> Result<PathBuf, ClusterSetupError> {
    let io = |p: &Path, e| ClusterSetupError::Io(p.to_path_buf(), e);
    let mut cf =
        ClusterFile::load(cluster_file).map_err(|e| io(cluster_file, std::io::Error::other(e)))?;
    let certs = cf
        .ca_cert
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let ids = tls::issue(&certs, name, role, &[], tls::DEFAULT_VALIDITY_DAYS)?;
    cf.client_cert = ids.cert;
    cf.client_key = ids.key;
    let path = cluster_file.with_file_name(format!("{name}.toml"));
    let text = toml::to_string_pretty(&cf).map_err(|e| io(&path, std::io::Error::other(e)))?;
    std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    Ok(path)
}

/// Real nodes on loopback in this process.
pub struct QuicCluster {
    /// Running nodes (`None` once stopped).
    pub nodes: Vec<Option<RunningNode>>,
    /// Their configs.
    pub configs: Vec<NodeConfig>,
    /// The client connection file.
    pub cluster_file: PathBuf,
}

impl QuicCluster {
    /// Start `n` nodes under `dir` with the given storage settings and keyspaces.
    pub async fn start(
        dir: &Path,
        n: usize,
        keyspaces: &[KeyspaceDef],
        storage: StorageConfig,
        timeouts: Timeouts,
    ) -> Result<Self, ClusterSetupError> {
        let mut sockets = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0")
                .map_err(|e| ClusterSetupError::Io(PathBuf::from("127.0.0.1:0"), e))?;
            addrs.push(
                s.local_addr()
                    .map_err(|e| ClusterSetupError::Io(PathBuf::from("socket"), e))?,
            );
            sockets.push(s);
        }
        let (configs, cluster_file) =
            write_cluster_files(dir, &addrs, keyspaces, storage, timeouts)?;
        let mut nodes = Vec::new();
        for (cfg, sock) in configs.iter().zip(sockets) {
            nodes.push(Some(runtime::start(cfg, Some(sock)).await?));
        }
        Ok(QuicCluster {
            nodes,
            configs,
            cluster_file,
        })
    }

    /// Stop node `i` (0-based), closing its endpoint and storage.
    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    /// Start node `i` again on the same address and data directory.
    pub async fn restart(&mut self, i: usize) -> Result<(), ClusterSetupError> {
        self.stop(i).await;
        // The old endpoint's socket is closed once shut down; RocksDB's lock is released
        // when the last reference to the node drops, so retry briefly.
        let mut last = None;
        for _ in 0..50 {
            match runtime::start(&self.configs[i], None).await {
                Ok(n) => {
                    self.nodes[i] = Some(n);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.map(ClusterSetupError::Start).unwrap_or_else(|| {
            ClusterSetupError::Io(PathBuf::new(), std::io::Error::other("restart failed"))
        }))
    }

    /// Stop every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}
