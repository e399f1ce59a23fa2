//! Starting a node for real: storage from the config, TLS, the QUIC endpoint (serving
//! requests and, with the node certificate, reaching peers), and the protocol core.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use quinn::{Endpoint, EndpointConfig, TokioRuntime};

use crate::config::NodeConfig;
use crate::node::{Node, NodeError, NodeParams};
#[cfg(feature = "rocksdb")]
use crate::storage::RocksStorage;
use crate::storage::{MemoryStorage, Storage, StorageError};
use crate::tls::{self, TlsError, TransportSettings};
use crate::transport::quic::QuicTransport;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics endpoint could not be bound.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// Storage could not be opened.
    #[error("cannot open storage in {path}: {source}")]
    Storage {
        /// Data directory.
        path: String,
        /// Why.
        source: StorageError,
    },
    /// TLS material is missing or invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node could not be built.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The cluster key could not be loaded.
    #[error(transparent)]
    ClusterKey(#[from] crate::context::ContextError),
}

/// A node serving on its endpoint.
pub struct RunningNode {
    /// The protocol core.
    pub node: Arc<Node>,
    /// The QUIC endpoint.
    pub endpoint: Endpoint,
    /// The bound address.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Problems found at start that do not stop the node (a certificate expiring within
    /// 30 days, a private key readable by others), also logged as warnings.
    pub warnings: Vec<String>,
    server: tokio::task::JoinHandle<()>,
    prober: tokio::task::JoinHandle<()>,
    /// Layout gossip, acknowledgements and transfers.
    layouts: tokio::task::JoinHandle<()>,
    metrics_server: Option<tokio::task::JoinHandle<()>>,
    anti_entropy: Option<tokio::task::JoinHandle<()>>,
    reaper: Option<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Stop accepting, close connections and wait briefly for them to drain.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.server.abort();
        self.prober.abort();
        self.layouts.abort();
        if let Some(m) = self.metrics_server {
            m.abort();
        }
        if let Some(ae) = self.anti_entropy {
            ae.abort();
        }
        if let Some(r) = self.reaper {
            r.abort();
        }
        // Nothing writes any more: the anti-entropy trees are in step with the data.
        self.node.mark_clean_stop();
    }
}

/// QUIC receive windows matching the in-flight budget: what quinn buffers for a
/// connection before the server reads it is bounded by the connection window, so a
/// sixteenth of the budget per connection (at least 1 MiB, at most one frame) keeps many
/// connections' unread data within a few budgets' worth, while one stream may still carry
/// data at full speed (1 MiB per stream, or the connection window if smaller).
pub fn receive_windows(l: &crate::config::Limits) -> tls::ReceiveWindows {
    let connection = (l.max_inflight_bytes / 16).clamp(1 << 20, l.max_frame_bytes.max(1 << 20));
    tls::ReceiveWindows {
        connection: connection as u64,
        stream: connection.min(1 << 20) as u64,
    }
}

/// Open storage as configured.
pub fn open_storage(cfg: &NodeConfig) -> Result<Arc<dyn Storage>, StartError> {
    if cfg.storage.engine == "memory" {
        return Ok(Arc::new(MemoryStorage::new()));
    }
    let err = |source| StartError::Storage {
        path: cfg.data_dir.display().to_string(),
        source,
    };
    #[cfg(not(feature = "rocksdb"))]
    return Err(err(StorageError::Rocks(crate::storage::NO_ROCKSDB.into())));
    #[cfg(feature = "rocksdb")]
    {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| err(StorageError::Rocks(e.to_string())))?;
        Ok(Arc::new(
            RocksStorage::open(&cfg.data_dir, cfg.storage.sync).map_err(err)?,
        ))
    }
}

/// Start a node. `socket` lets a caller bind first (to learn the port); otherwise the
/// node binds `cfg.listen`.
pub async fn start(cfg: &NodeConfig, socket: Option<UdpSocket>) -> Result<RunningNode, StartError> {
    let context_key = crate::context::ContextKey::load(&cfg.tls.cluster_key_path())?;
    // An expired certificate is an error: peers and clients would refuse every handshake,
    // which looks like a network fault from the outside. One about to expire is a warning.
    let mut warnings = Vec::new();
    warnings.extend(tls::expiry_warning(&cfg.tls.cert)?);
    warnings.extend(tls::key_mode_warning(&cfg.tls.key));
    for w in &warnings {
        tracing::warn!(node = %cfg.name, "{w}");
    }
    let storage = open_storage(cfg)?;
    let settings = TransportSettings {
        idle: Duration::from_millis(cfg.timeouts.idle_ms),
        max_streams: cfg.limits.max_streams_per_connection,
        receive_windows: Some(receive_windows(&cfg.limits)),
    };
    let server_cfg = tls::server_config(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key, &settings)?;
    let client_cfg = tls::client_config(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key, &settings)?;
    let bind_err = |source| StartError::Bind {
        addr: cfg.listen,
        source,
    };
    let socket = match socket {
        Some(s) => s,
        None => UdpSocket::bind(cfg.listen).map_err(bind_err)?,
    };
    let mut endpoint = Endpoint::new(
        EndpointConfig::default(),
        Some(server_cfg),
        socket,
        Arc::new(TokioRuntime),
    )
    .map_err(bind_err)?;
    endpoint.set_default_client_config(client_cfg);
    let addr = endpoint.local_addr().map_err(bind_err)?;
    let transport = QuicTransport::new(
        endpoint.clone(),
        &cfg.name,
        &cfg.cluster.nodes,
        Duration::from_millis(cfg.timeouts.connect_ms),
        cfg.limits.max_frame_bytes,
    );
    // Fault injection (tests only): a clock an admin can move, read by everything the node
    // timestamps.
    let clock_offset = cfg
        .faults
        .allow_clock_offset
        .then(|| Arc::new(crate::clock::OffsetClock::new()));
    if clock_offset.is_some() {
        warnings.push("faults.allow_clock_offset is on: admin clients can move this node's clock (for fault-injection tests only)".into());
    }
    if cfg.storage.overlap_lead_sync && !cfg.storage.sync {
        warnings.push("storage.overlap_lead_sync is ignored with storage.sync = false (nothing is fsync'd to overlap)".into());
    }
    let node = Node::new(NodeParams {
        name: cfg.name.clone(),
        members: cfg.cluster.nodes.clone(),
        vnodes: cfg.ring.vnodes,
        storage,
        transport: Arc::new(transport),
        env: match &clock_offset {
            Some(clock) => {
                crate::env::TokioEnv::new(Arc::clone(clock) as Arc<dyn crate::clock::Clock>)
            }
            None => crate::env::TokioEnv::system(),
        },
        limits: cfg.limits.clone(),
        request_timeout: Duration::from_millis(cfg.timeouts.request_ms),
        speculative_read: Duration::from_millis(cfg.timeouts.speculative_read_ms),
        keyspaces: cfg.keyspaces.clone(),
        context_key,
        new_incarnation: crate::replica::starts_new_incarnation(
            cfg.storage.sync,
            cfg.new_incarnation,
        ),
        // With sync = false every start is a new incarnation and nothing is fsync'd:
        // nothing to overlap.
        overlap_lead_sync: cfg.storage.sync && cfg.storage.overlap_lead_sync,
        bugs: Default::default(),
        clock_offset,
        anti_entropy: cfg.anti_entropy.clone(),
        hints: cfg.hints.clone(),
        tombstones: cfg.tombstones.clone(),
        detector: cfg.detector.clone(),
        membership: cfg.membership.clone(),
    })?;
    warnings.extend(node.warnings().iter().cloned());
    let server = tokio::spawn(crate::server::serve(
        endpoint.clone(),
        Arc::clone(&node),
        crate::server::ServeLimits::from_config(cfg),
    ));
    let (metrics_addr, metrics_server) = match cfg.metrics_listen {
        Some(addr) => {
            let listener = crate::metrics::bind(addr).await?;
            let bound = listener.local_addr().ok();
            let task = tokio::spawn(crate::metrics::serve(
                listener,
                Arc::clone(&node.metrics),
                cfg.name.clone(),
            ));
            (bound, Some(task))
        }
        None => (None, None),
    };
    // The failure detector (`[detector]`): probes, suspicion, conviction.
    let prober = tokio::spawn(node.run_detector());
    // Layouts: gossip, acknowledgements, transfers when ownership moves.
    let layouts = tokio::spawn(node.run_membership());
    // Anti-entropy exchanges, on the node's own schedule (`anti_entropy.interval_ms`).
    let anti_entropy = node
        .anti_entropy()
        .map(|ae| tokio::spawn(Arc::clone(ae).run()));
    // Tombstone reaping, on its own schedule (`tombstones.interval_ms`).
    let reaper = node.reaper().map(|r| tokio::spawn(Arc::clone(r).run()));
    tracing::info!(node = %cfg.name, %addr, engine = %cfg.storage.engine, sync = cfg.storage.sync, overlap_lead_sync = cfg.storage.overlap_lead_sync, "node started");
    Ok(RunningNode {
        node,
        endpoint,
        addr,
        metrics_addr,
        warnings,
        server,
        prober,
        layouts,
        metrics_server,
        anti_entropy,
        reaper,
    })
}
