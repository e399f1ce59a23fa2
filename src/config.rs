//! Node configuration (`node.toml`) and the client's cluster file (`cluster.toml`).
//!
//! Every field is documented with its default here; `docs/OPERATIONS.md` carries the same
//! table for operators. Unknown fields are errors, not silently ignored, because a typo in
//! `sync` or `w` would otherwise quietly change durability or consistency.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keyspace::KeyspaceDef;

/// Errors for reading and checking configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped fields.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the field and line).
        message: String,
    },
    /// The values do not make a working node.
    #[error("config is invalid: {0}")]
    Invalid(String),
}

/// Default tokens per node on the ring.
pub const DEFAULT_VNODES: usize = 256;

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name; must appear in `cluster.nodes`. Required.
    pub name: String,
    /// UDP address the QUIC endpoint listens on, for peers and clients. Required.
    pub listen: SocketAddr,
    /// Directory for the RocksDB database. Required when `storage.engine = "rocksdb"`.
    pub data_dir: PathBuf,
    /// TLS material. Required.
    pub tls: TlsConfig,
    /// Storage engine settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Ring settings.
    #[serde(default)]
    pub ring: RingConfig,
    /// Size limits and queue bounds.
    #[serde(default)]
    pub limits: Limits,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Cluster membership (static until gossip lands).
    pub cluster: ClusterConfig,
    /// Keyspaces created at start. Default: none.
    #[serde(default)]
    pub keyspaces: Vec<KeyspaceDef>,
    /// TCP address of the Prometheus endpoint (`GET /metrics`). Default: none (off).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Fault injection for tests (the Jepsen-style harness). Default: everything off.
    #[serde(default)]
    pub faults: FaultsConfig,
    /// Merkle anti-entropy (`[anti_entropy]`). Default: on, see [`AntiEntropyConfig`].
    #[serde(default)]
    pub anti_entropy: AntiEntropyConfig,
    /// Sloppy quorum and hinted handoff (`[hints]`). Default: on, see [`HintsConfig`].
    #[serde(default)]
    pub hints: HintsConfig,
    /// Tombstone reaping (`[tombstones]`). Default: on, see [`TombstonesConfig`].
    #[serde(default)]
    pub tombstones: TombstonesConfig,
    /// The failure detector (`[detector]`). Default: see [`DetectorConfig`].
    #[serde(default)]
    pub detector: DetectorConfig,
    /// Layout spreading and data transfers (`[membership]`). Default: see
    /// [`MembershipConfig`].
    #[serde(default)]
    pub membership: MembershipConfig,
    /// Not read from the file: set by `quorumkv node --new-incarnation` (after restoring a
    /// backup), makes the node issue versions under a new incarnation.
    #[serde(skip)]
    pub new_incarnation: bool,
}

/// Certificates and key, PEM files. Relative paths are relative to the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate; peers and clients must present a certificate it signed.
    pub ca_cert: PathBuf,
    /// This node's certificate (made by `quorumkv certs`).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The cluster key that seals clients' causal contexts; every node of a cluster needs
    /// the same file (`quorumkv certs` writes it beside the CA, mode 0600). Default:
    /// `cluster.key` in the directory of `ca_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_key: Option<PathBuf>,
}

impl TlsConfig {
    /// The cluster key file, explicit or beside the CA certificate.
    pub fn cluster_key_path(&self) -> PathBuf {
        match &self.cluster_key {
            Some(p) => p.clone(),
            None => self
                .ca_cert
                .parent()
                .unwrap_or(Path::new("."))
                .join(crate::context::CLUSTER_KEY_FILE),
        }
    }
}

/// Which storage engine and how durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `"rocksdb"` (default) or `"memory"` (tests only: loses everything on exit).
    #[serde(default = "default_engine")]
    pub engine: String,
    /// fsync the write-ahead log before acknowledging a write. Default `true`.
    /// `false` is faster and UNSAFE on power loss or kernel crash: acknowledged writes
    /// can vanish (a process crash alone does not lose them).
    #[serde(default = "yes")]
    pub sync: bool,
    /// When this node leads a write, replicate it while its own fsync runs instead of
    /// after it, counting the lead towards W (and PW) once that fsync succeeded: one fsync
    /// less on every write's path. Default `true` (docs/BENCHMARKS.md: YCSB A 1.3× with
    /// it). Needs `sync = true` (ignored otherwise). Safe through power
    /// loss because a node that did not stop cleanly takes a new incarnation
    /// (docs/CONSISTENCY.md, "Overlapped lead fsync").
    #[serde(default = "yes")]
    pub overlap_lead_sync: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            engine: default_engine(),
            sync: true,
            overlap_lead_sync: true,
        }
    }
}

/// Ring settings; every node must use the same values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    /// Tokens per node. Default 256.
    #[serde(default = "default_vnodes")]
    pub vnodes: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            vnodes: DEFAULT_VNODES,
        }
    }
}

/// Limits on sizes and queues.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest value accepted by a put, bytes. Default 1 MiB.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Largest key (partition + sort), bytes. Default 4096.
    #[serde(default = "default_max_key_bytes")]
    pub max_key_bytes: usize,
    /// Largest stored object (every sibling, tombstone and the causal metadata of one
    /// key, encoded), bytes. A write that would store a larger object is refused with an
    /// error naming the key and size; a merge that produces one anyway (concurrent writes
    /// through different leads) stores it and counts it in
    /// `quorumkv_objects_over_cap_total`. Must be at least `max_value_bytes` + 4 KiB.
    /// Default 4 MiB.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: usize,
    /// Largest message on the wire, bytes; a larger frame is refused before it is decoded.
    /// Must be at least (cluster size × `max_object_bytes`) + 64 KiB, so that every object
    /// a merge can produce (each of at most N sides of a partition accepted writes up to
    /// the object cap) still travels. Default 64 MiB.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Client requests a node handles at once; a client stream beyond it is answered
    /// `overloaded`. Node-to-node requests have a pool of the same size of their own, so
    /// clients cannot take the slots replication needs. Default 1024.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_requests: usize,
    /// Bytes of request and reply frames a node holds at once, client and peer together.
    /// Clients may use `max_inflight_bytes − node_reserved_bytes` of it; when that is spent
    /// a client stream is answered `overloaded` instead of queueing. Node-to-node frames may
    /// use all of it and wait for budget (within `timeouts.frame_read_ms`) rather than fail.
    /// Also sizes the QUIC receive windows (see docs/SECURITY.md). Must be at least
    /// `max_frame_bytes` + `node_reserved_bytes`, so any one frame fits. Default 256 MiB.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: usize,
    /// Part of `max_inflight_bytes` only node-to-node traffic may use. Must be at least
    /// `max_frame_bytes`, so one replication frame always fits. Default 64 MiB.
    #[serde(default = "default_node_reserved_bytes")]
    pub node_reserved_bytes: usize,
    /// Open QUIC connections allowed per client certificate name; further ones are closed
    /// at once with the reason "too many connections". Node certificates are not counted.
    /// Default 16.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Largest scan page (client reply, and each replica's reply to the coordinator) in
    /// bytes of stored objects; a page stops early, with `next` set, once it reaches this.
    /// Must not exceed `max_frame_bytes` / 2. Default 4 MiB.
    #[serde(default = "default_max_reply_bytes")]
    pub max_reply_bytes: usize,
    /// Open QUIC streams allowed per connection. Default 256.
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: u32,
    /// Background read repairs queued at once; extra ones are dropped (and counted) rather
    /// than letting repair work grow without bound. Default 256.
    #[serde(default = "default_max_repairs")]
    pub max_pending_read_repairs: usize,
    /// How far ahead of this node's clock a client timestamp (`lww-client` keyspaces,
    /// microseconds since the epoch) may be, milliseconds; further ones are refused. A
    /// stamp far in the future would win every later write to its key. Default 60000.
    #[serde(default = "default_max_clock_skew_ms")]
    pub max_clock_skew_ms: u64,
    /// Most replication requests (or, in a queue of their own, replica reads) a coordinator
    /// sends a peer in one bundle (one stream; the peer merges a bundle's replication in
    /// one storage batch, one fsync). Requests are bundled only while
    /// `max_bundles_in_flight` bundles of their kind to that peer are already outstanding,
    /// so an idle cluster sends each one at once, alone; 1 turns bundling off. At most
    /// 4096. Default 64.
    #[serde(default = "default_max_bundle_items")]
    pub max_bundle_items: usize,
    /// Bundles of each kind (replication, reads) to one peer in flight at once, 1 to 64. Fewer means bigger
    /// bundles under load (fewer streams and fsyncs), more means less waiting behind a
    /// slow one. Default 2.
    #[serde(default = "default_max_bundles_in_flight")]
    pub max_bundles_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: default_max_value_bytes(),
            max_object_bytes: default_max_object_bytes(),
            max_key_bytes: default_max_key_bytes(),
            max_frame_bytes: default_max_frame_bytes(),
            max_inflight_requests: default_max_inflight(),
            max_inflight_bytes: default_max_inflight_bytes(),
            node_reserved_bytes: default_node_reserved_bytes(),
            max_connections_per_client: default_max_connections_per_client(),
            max_reply_bytes: default_max_reply_bytes(),
            max_streams_per_connection: default_max_streams(),
            max_pending_read_repairs: default_max_repairs(),
            max_clock_skew_ms: default_max_clock_skew_ms(),
            max_bundle_items: default_max_bundle_items(),
            max_bundles_in_flight: default_max_bundles_in_flight(),
        }
    }
}

/// Faults a test may inject into a running node. Never enable them in production.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsConfig {
    /// Let admin clients move this node's wall clock by an offset
    /// (`ClientRequest::SetClockOffset`, the harness's `clock-skew` nemesis): the offset
    /// reaches every timestamp the node issues (last-write-wins order, "last modified").
    /// Default `false`: the request is refused.
    #[serde(default)]
    pub allow_clock_offset: bool,
}

/// Merkle anti-entropy: replicas compare trees of their data and repair what differs,
/// so a replica that missed writes converges without any client reading the keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AntiEntropyConfig {
    /// Keep the trees up to date on every write and exchange them. Default `true`. Off,
    /// the node neither updates nor serves trees; turning it on again rebuilds them at
    /// the next start.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Mean time between exchange rounds, milliseconds; each round waits this long plus
    /// or minus up to a quarter of it, at random, and compares every range the node
    /// replicates with one other replica (the next in turn). Default 60000.
    #[serde(default = "default_aae_interval_ms")]
    pub interval_ms: u64,
    /// Most keys one exchange compares and repairs. Default 256.
    #[serde(default = "default_aae_max_keys")]
    pub max_keys_per_exchange: usize,
    /// Most differing segments (tree leaves) one exchange looks into. Default 64.
    #[serde(default = "default_aae_max_segments")]
    pub max_segments_per_exchange: usize,
    /// Time between rebuilds of the trees from the data, milliseconds, plus up to a
    /// quarter of it at random. A rebuild holds writes back for its duration. Default
    /// 604800000 (7 days).
    #[serde(default = "default_aae_rebuild_ms")]
    pub rebuild_ms: u64,
}

fn default_aae_interval_ms() -> u64 {
    60_000
}
fn default_aae_max_keys() -> usize {
    256
}
fn default_aae_max_segments() -> usize {
    64
}
fn default_aae_rebuild_ms() -> u64 {
    7 * 24 * 3600 * 1000
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            enabled: true,
            interval_ms: default_aae_interval_ms(),
            max_keys_per_exchange: default_aae_max_keys(),
            max_segments_per_exchange: default_aae_max_segments(),
            rebuild_ms: default_aae_rebuild_ms(),
        }
    }
}

/// Hinted handoff (`[hints]`): what a stand-in holds for a primary replica that could not
/// take its copy, and how it hands it back (see `crate::hints`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintsConfig {
    /// The whole mechanism: when `false`, coordinators never send to stand-ins and this
    /// node refuses to hold hints (writes behave as with `sloppy_quorum = false`).
    /// Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most bytes of hints this node holds for one target; beyond it new hints for that
    /// target are refused (the write does not count this stand-in; anti-entropy repairs
    /// the target later). Default 67108864 (64 MiB).
    #[serde(default = "default_hint_bytes")]
    pub max_bytes_per_target: u64,
    /// How long a hint is kept, milliseconds; older hints are dropped (counted) and only
    /// anti-entropy repairs what they carried. Default 10800000 (3 h).
    #[serde(default = "default_hint_window_ms")]
    pub window_ms: u64,
    /// How often the replay loop looks for targets to hand hints back to, milliseconds.
    /// Default 1000.
    #[serde(default = "default_hint_replay_interval_ms")]
    pub replay_interval_ms: u64,
    /// Most bytes of hints replayed per second, over all targets. Default 1048576
    /// (1 MiB/s).
    #[serde(default = "default_hint_replay_rate")]
    pub replay_bytes_per_sec: u64,
}

impl Default for HintsConfig {
    fn default() -> Self {
        HintsConfig {
            enabled: true,
            max_bytes_per_target: default_hint_bytes(),
            window_ms: default_hint_window_ms(),
            replay_interval_ms: default_hint_replay_interval_ms(),
            replay_bytes_per_sec: default_hint_replay_rate(),
        }
    }
}

fn default_hint_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_hint_window_ms() -> u64 {
    3 * 60 * 60 * 1000
}
fn default_hint_replay_interval_ms() -> u64 {
    1000
}
fn default_hint_replay_rate() -> u64 {
    1024 * 1024
}

/// Tombstone reaping (`[tombstones]`): when a delete's tombstone may finally be removed
/// (see `crate::tombstones`). A tombstone is removed only when every replica of its key
/// holds the same one, has held it for `min_age_ms`, every member of the cluster answers,
/// and no member holds a hint for the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TombstonesConfig {
    /// Reap at all. Off, tombstones are kept forever (they still answer reads as
    /// "deleted"). Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long every replica must have held a tombstone, unchanged, before it may be
    /// removed, milliseconds. It must outlast anything that can still carry an older
    /// version of the key: a message in flight, a client's retry, a node's restart. Settable
    /// to seconds for tests. Default 86400000 (24 h).
    #[serde(default = "default_tomb_min_age_ms")]
    pub min_age_ms: u64,
    /// Mean time between reaping rounds, milliseconds (plus or minus a quarter, at
    /// random). Default 60000.
    #[serde(default = "default_tomb_interval_ms")]
    pub interval_ms: u64,
    /// Most tombstones one round looks at (the next round continues after the last).
    /// Default 256.
    #[serde(default = "default_tomb_max_keys")]
    pub max_keys_per_round: usize,
}

fn default_tomb_min_age_ms() -> u64 {
    24 * 60 * 60 * 1000
}
fn default_tomb_interval_ms() -> u64 {
    60_000
}
fn default_tomb_max_keys() -> usize {
    256
}

impl Default for TombstonesConfig {
    fn default() -> Self {
        TombstonesConfig {
            enabled: true,
            min_age_ms: default_tomb_min_age_ms(),
            interval_ms: default_tomb_interval_ms(),
            max_keys_per_round: default_tomb_max_keys(),
        }
    }
}

/// Layouts and transfers (`[membership]`, see `crate::membership` and `crate::transfer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipConfig {
    /// Mean time between pulls of the layout history from one random node, milliseconds
    /// (plus or minus a quarter); commits and acknowledgements are also pushed at once.
    /// Default 1000.
    #[serde(default = "default_gossip_interval_ms")]
    pub gossip_interval_ms: u64,
    /// Most bytes per second this node receives in transfers when ownership moves (the
    /// throttle; each page waits its share). Default 16777216 (16 MiB/s).
    #[serde(default = "default_transfer_bytes_per_sec")]
    pub transfer_bytes_per_sec: u64,
    /// Most bytes of objects in one transfer page, 1024..=4194304. Default 1048576.
    #[serde(default = "default_transfer_page_bytes")]
    pub transfer_page_bytes: u32,
}

fn default_gossip_interval_ms() -> u64 {
    1000
}
fn default_transfer_bytes_per_sec() -> u64 {
    16 << 20
}
fn default_transfer_page_bytes() -> u32 {
    1 << 20
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval_ms: default_gossip_interval_ms(),
            transfer_bytes_per_sec: default_transfer_bytes_per_sec(),
            transfer_page_bytes: default_transfer_page_bytes(),
        }
    }
}

/// The failure detector (`[detector]`, see `crate::membership::detector`): SWIM-style
/// direct and indirect probes, suspicion before conviction, and a check of this node's own
/// timeliness so a local stall does not convict its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Time between two probe rounds (each probes every peer once), milliseconds.
    /// Default 1000.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// How long a direct probe waits for the peer's answer, milliseconds; less than
    /// `probe_interval_ms`. Default 500.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// How many other members are asked to probe a peer that did not answer a direct
    /// probe (0: no indirect probes; a one-way link fault then makes peers suspects).
    /// At most 16. Default 3.
    #[serde(default = "default_indirect_probes")]
    pub indirect_probes: usize,
    /// How long the indirect probes have, after the direct probe's timeout, milliseconds.
    /// Default 500.
    #[serde(default = "default_indirect_timeout_ms")]
    pub indirect_timeout_ms: u64,
    /// How long a peer stays suspect, unless it answers, before it is declared dead,
    /// milliseconds; at least `probe_interval_ms + probe_timeout_ms +
    /// indirect_timeout_ms`, so a suspect always gets one whole probe to answer.
    /// Default 5000.
    #[serde(default = "default_suspicion_timeout_ms")]
    pub suspicion_timeout_ms: u64,
    /// A timer of the detector that fires this much later than it was due means this node
    /// itself stalled (a pause, CPU starvation); the probes that spanned the stall are
    /// voided and every suspicion restarts, milliseconds. Default 250.
    #[serde(default = "default_stall_threshold_ms")]
    pub stall_threshold_ms: u64,
}

fn default_probe_interval_ms() -> u64 {
    1000
}
fn default_probe_timeout_ms() -> u64 {
    500
}
fn default_indirect_probes() -> usize {
    3
}
fn default_indirect_timeout_ms() -> u64 {
    500
}
fn default_suspicion_timeout_ms() -> u64 {
    5000
}
fn default_stall_threshold_ms() -> u64 {
    250
}

/// Most helpers one indirect probe asks (`detector.indirect_probes`).
pub const MAX_INDIRECT_PROBES: usize = 16;

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            probe_interval_ms: default_probe_interval_ms(),
            probe_timeout_ms: default_probe_timeout_ms(),
            indirect_probes: default_indirect_probes(),
            indirect_timeout_ms: default_indirect_timeout_ms(),
            suspicion_timeout_ms: default_suspicion_timeout_ms(),
            stall_threshold_ms: default_stall_threshold_ms(),
        }
    }
}

impl DetectorConfig {
    /// Check the values, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(100..=60_000).contains(&self.probe_interval_ms) {
            return invalid(format!(
                "detector.probe_interval_ms = {}: expected 100..=60000",
                self.probe_interval_ms
            ));
        }
        if self.probe_timeout_ms == 0 || self.probe_timeout_ms >= self.probe_interval_ms {
            return invalid(format!(
                "detector.probe_timeout_ms = {}: expected at least 1 and less than detector.probe_interval_ms ({})",
                self.probe_timeout_ms, self.probe_interval_ms
            ));
        }
        if self.indirect_probes > MAX_INDIRECT_PROBES {
            return invalid(format!(
                "detector.indirect_probes = {}: expected at most {MAX_INDIRECT_PROBES}",
                self.indirect_probes
            ));
        }
        if self.indirect_timeout_ms == 0 || self.indirect_timeout_ms > 60_000 {
            return invalid(format!(
                "detector.indirect_timeout_ms = {}: expected 1..=60000",
                self.indirect_timeout_ms
            ));
        }
        let round = self.probe_interval_ms + self.probe_timeout_ms + self.indirect_timeout_ms;
        if self.suspicion_timeout_ms < round || self.suspicion_timeout_ms > 3_600_000 {
            return invalid(format!(
                "detector.suspicion_timeout_ms = {}: expected at least probe_interval_ms + probe_timeout_ms + indirect_timeout_ms ({round}, so a suspect gets one whole probe to answer) and at most 3600000",
                self.suspicion_timeout_ms
            ));
        }
        if self.stall_threshold_ms == 0 || self.stall_threshold_ms > 60_000 {
            return invalid(format!(
                "detector.stall_threshold_ms = {}: expected 1..=60000",
                self.stall_threshold_ms
            ));
        }
        Ok(())
    }
}

/// Timeouts, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// How long a coordinator waits for R or W replies before failing with
    /// `quorum not reached`. Default 2000.
    #[serde(default = "default_request_ms")]
    pub request_ms: u64,
    /// How long a coordinated read (get, scan) waits for the R replicas it asked before it
    /// asks one more (speculative retry; one that fails is replaced at once, whatever
    /// this says). Reads ask R replicas, not N, so the N − R others cost nothing unless
    /// one is slow or down; then this bounds what the slow one adds to a read. The
    /// default sits above a healthy replica read's p99 on a LAN, even at saturation
    /// (docs/BENCHMARKS.md), so it seldom fires without cause, and far below
    /// `request_ms`. 0 asks all N replicas at once (the former behaviour: more load, and
    /// read repair then covers every replica). Must be below `request_ms`. Default 20.
    #[serde(default = "default_speculative_read_ms")]
    pub speculative_read_ms: u64,
    /// How long to wait for a QUIC handshake with a peer. Default 1000.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// A connection with no traffic for this long is dead (keep-alives are sent at a third
    /// of it). Default 6000.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    /// How long a node waits for the whole request frame once a stream is opened; a
    /// stream still incomplete then is reset and its budget released, so a client that
    /// opens streams and never sends holds nothing for long. Default 5000.
    #[serde(default = "default_frame_read_ms")]
    pub frame_read_ms: u64,
    /// How long a node waits for a reply to be taken by the peer's flow control; a
    /// client that never reads its replies has the stream reset then. Default 5000.
    #[serde(default = "default_reply_write_ms")]
    pub reply_write_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_ms: default_request_ms(),
            speculative_read_ms: default_speculative_read_ms(),
            connect_ms: default_connect_ms(),
            idle_ms: default_idle_ms(),
            frame_read_ms: default_frame_read_ms(),
            reply_write_ms: default_reply_write_ms(),
        }
    }
}

/// The cluster's first layout, and how this node enters it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every node of the cluster's first layout, this one included (unless `joining`); all
    /// nodes must list the same set. Read once: a node that has stored a layout starts
    /// from that, and layouts change only through `quorumkv cluster join|leave|remove` and
    /// `commit` (docs/OPERATIONS.md).
    pub nodes: Vec<Member>,
    /// This node is new and not in `nodes`, which lists the running cluster's first layout
    /// members (the nodes it contacts): it starts outside the layout, learns the current
    /// one from them, and owns nothing until an operator runs `quorumkv cluster join` for
    /// it and commits. Default `false`.
    #[serde(default)]
    pub joining: bool,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Node name; also the DNS name in its certificate.
    pub name: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its zone (rack, room, availability zone): with at least N zones, a key's N
    /// replicas are placed in N distinct zones (`crate::ring`). Give every member a zone,
    /// or none. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

fn default_engine() -> String {
    "rocksdb".into()
}
fn yes() -> bool {
    true
}
fn default_vnodes() -> usize {
    DEFAULT_VNODES
}
fn default_max_value_bytes() -> usize {
    1 << 20
}
fn default_max_object_bytes() -> usize {
    4 << 20
}
fn default_max_clock_skew_ms() -> u64 {
    60_000
}
fn default_max_key_bytes() -> usize {
    4096
}
fn default_max_frame_bytes() -> usize {
    64 << 20
}
fn default_max_inflight() -> usize {
    1024
}
fn default_max_inflight_bytes() -> usize {
    256 << 20
}
fn default_node_reserved_bytes() -> usize {
    64 << 20
}
fn default_max_connections_per_client() -> usize {
    16
}
fn default_max_bundle_items() -> usize {
    64
}
fn default_max_bundles_in_flight() -> usize {
    2
}
fn default_max_reply_bytes() -> usize {
    4 << 20
}
fn default_frame_read_ms() -> u64 {
    5000
}
fn default_reply_write_ms() -> u64 {
    5000
}
fn default_max_streams() -> u32 {
    256
}
fn default_max_repairs() -> usize {
    256
}
fn default_request_ms() -> u64 {
    2000
}

/// `timeouts.speculative_read_ms` when node.toml does not set it.
pub const DEFAULT_SPECULATIVE_READ_MS: u64 = 20;

fn default_speculative_read_ms() -> u64 {
    DEFAULT_SPECULATIVE_READ_MS
}
fn default_connect_ms() -> u64 {
    1000
}
fn default_idle_ms() -> u64 {
    6000
}

/// Read a TOML file into `T`, resolving nothing.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Make `p` absolute relative to `base` (the config file's directory).
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl NodeConfig {
    /// Load, resolve relative paths against the file's directory, and validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: NodeConfig = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data_dir = resolve(base, &cfg.data_dir);
        cfg.tls.ca_cert = resolve(base, &cfg.tls.ca_cert);
        cfg.tls.cert = resolve(base, &cfg.tls.cert);
        cfg.tls.key = resolve(base, &cfg.tls.key);
        cfg.tls.cluster_key = cfg.tls.cluster_key.as_deref().map(|p| resolve(base, p));
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check the values make a working node.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let listed = self.cluster.nodes.iter().any(|m| m.name == self.name);
        if !listed && !self.cluster.joining {
            return invalid(format!(
                "this node ({:?}) is not listed in cluster.nodes (a new node joining a running cluster sets `joining = true` under [cluster])",
                self.name
            ));
        }
        if listed && self.cluster.joining {
            return invalid(format!(
                "cluster.joining = true, but this node ({:?}) is listed in cluster.nodes: a joining node lists the running cluster's members only",
                self.name
            ));
        }
        if self.cluster.nodes.is_empty() {
            return invalid("cluster.nodes is empty".into());
        }
        let m = &self.membership;
        if m.gossip_interval_ms < 10 || m.transfer_bytes_per_sec == 0 {
            return invalid(format!(
                "membership.gossip_interval_ms = {} and transfer_bytes_per_sec = {}: expected at least 10 and more than 0",
                m.gossip_interval_ms, m.transfer_bytes_per_sec
            ));
        }
        if !(1024..=crate::transfer::MAX_PAGE_BYTES).contains(&m.transfer_page_bytes) {
            return invalid(format!(
                "membership.transfer_page_bytes = {}: expected 1024..={}",
                m.transfer_page_bytes,
                crate::transfer::MAX_PAGE_BYTES
            ));
        }
        let mut names: Vec<_> = self.cluster.nodes.iter().map(|m| &m.name).collect();
        names.sort();
        names.dedup();
        if names.len() != self.cluster.nodes.len() {
            return invalid("cluster.nodes lists a node name twice".into());
        }
        let zoned = self
            .cluster
            .nodes
            .iter()
            .filter(|m| m.zone.is_some())
            .count();
        if zoned != 0 && zoned != self.cluster.nodes.len() {
            return invalid(format!(
                "cluster.nodes: {zoned} of {} members have a zone; give every member a zone, or none",
                self.cluster.nodes.len()
            ));
        }
        if let Some(m) = self
            .cluster
            .nodes
            .iter()
            .find(|m| m.zone.as_deref().is_some_and(|z| z.trim().is_empty()))
        {
            return invalid(format!(
                "cluster.nodes: member {} has an empty zone",
                m.name
            ));
        }
        if !matches!(self.storage.engine.as_str(), "rocksdb" | "memory") {
            return invalid(format!(
                "storage.engine = {:?}: expected \"rocksdb\" or \"memory\"",
                self.storage.engine
            ));
        }
        if self.storage.engine == "rocksdb" && !cfg!(feature = "rocksdb") {
            return invalid(crate::storage::NO_ROCKSDB.into());
        }
        if self.ring.vnodes == 0 || self.ring.vnodes > 4096 {
            return invalid(format!(
                "ring.vnodes = {}: expected 1..=4096",
                self.ring.vnodes
            ));
        }
        let ae = &self.anti_entropy;
        if ae.interval_ms < 10 || ae.rebuild_ms < 1000 {
            return invalid(format!(
                "anti_entropy.interval_ms = {} and rebuild_ms = {}: expected at least 10 and 1000",
                ae.interval_ms, ae.rebuild_ms
            ));
        }
        if !(1..=crate::aae::MAX_KEYS_PER_EXCHANGE).contains(&ae.max_keys_per_exchange)
            || !(1..=crate::aae::tree::SEGMENTS as usize).contains(&ae.max_segments_per_exchange)
        {
            return invalid(format!(
                "anti_entropy.max_keys_per_exchange = {} and max_segments_per_exchange = {}: expected 1..={} and 1..={}",
                ae.max_keys_per_exchange,
                ae.max_segments_per_exchange,
                crate::aae::MAX_KEYS_PER_EXCHANGE,
                crate::aae::tree::SEGMENTS
            ));
        }
        let l = &self.limits;
        if l.max_value_bytes == 0 || l.max_key_bytes == 0 || l.max_inflight_requests == 0 {
            return invalid("limits must be positive".into());
        }
        if l.max_streams_per_connection == 0 || l.max_pending_read_repairs == 0 {
            return invalid("limits must be positive".into());
        }
        if !(1..=4096).contains(&l.max_bundle_items) {
            return invalid(format!(
                "limits.max_bundle_items must be between 1 (no bundling) and 4096, got {}",
                l.max_bundle_items
            ));
        }
        if !(1..=64).contains(&l.max_bundles_in_flight) {
            return invalid(format!(
                "limits.max_bundles_in_flight must be between 1 and 64, got {}",
                l.max_bundles_in_flight
            ));
        }
        if l.max_object_bytes < l.max_value_bytes.saturating_add(4 * 1024) {
            return invalid(format!(
                "limits.max_object_bytes ({}) must exceed limits.max_value_bytes ({}) by at least 4 KiB (an object holds the value and its causal metadata)",
                l.max_object_bytes, l.max_value_bytes
            ));
        }
        let members = self.cluster.nodes.len();
        let needed = l
            .max_object_bytes
            .saturating_mul(members)
            .saturating_add(64 * 1024);
        if l.max_frame_bytes < needed {
            return invalid(format!(
                "limits.max_frame_bytes ({}) must be at least {needed}: {members} nodes × limits.max_object_bytes ({}) + 64 KiB, so that any object a merge can produce still travels between nodes; lower max_object_bytes or raise max_frame_bytes",
                l.max_frame_bytes, l.max_object_bytes
            ));
        }
        let h = &self.hints;
        if h.replay_interval_ms == 0 || h.replay_bytes_per_sec == 0 || h.window_ms == 0 {
            return invalid(
                "hints.replay_interval_ms, hints.replay_bytes_per_sec and hints.window_ms must be positive"
                    .into(),
            );
        }
        let t = &self.tombstones;
        if t.interval_ms < 10
            || !(1..=crate::tombstones::MAX_KEYS_PER_ROUND).contains(&t.max_keys_per_round)
        {
            return invalid(format!(
                "tombstones.interval_ms = {} and max_keys_per_round = {}: expected at least 10 and 1..={}",
                t.interval_ms,
                t.max_keys_per_round,
                crate::tombstones::MAX_KEYS_PER_ROUND
            ));
        }
        if t.enabled && t.min_age_ms < 1000 {
            return invalid(format!(
                "tombstones.min_age_ms = {}: expected at least 1000 (a tombstone must outlive every message still in flight)",
                t.min_age_ms
            ));
        }
        if l.max_connections_per_client == 0 || l.max_reply_bytes == 0 {
            return invalid("limits must be positive".into());
        }
        if l.node_reserved_bytes < l.max_frame_bytes {
            return invalid(format!(
                "limits.node_reserved_bytes ({}) must be at least limits.max_frame_bytes ({}) so one replication frame always fits",
                l.node_reserved_bytes, l.max_frame_bytes
            ));
        }
        if l.max_inflight_bytes < l.max_frame_bytes + l.node_reserved_bytes {
            return invalid(format!(
                "limits.max_inflight_bytes ({}) must be at least limits.max_frame_bytes + limits.node_reserved_bytes ({}) so a client frame fits too",
                l.max_inflight_bytes,
                l.max_frame_bytes + l.node_reserved_bytes
            ));
        }
        if l.max_inflight_bytes > u32::MAX as usize {
            return invalid(format!(
                "limits.max_inflight_bytes ({}) must be below 4 GiB",
                l.max_inflight_bytes
            ));
        }
        if l.max_reply_bytes > l.max_frame_bytes / 2 {
            return invalid(format!(
                "limits.max_reply_bytes ({}) must be at most half of limits.max_frame_bytes ({})",
                l.max_reply_bytes, l.max_frame_bytes
            ));
        }
        self.detector.validate()?;
        let t = &self.timeouts;
        if t.frame_read_ms == 0 || t.reply_write_ms == 0 {
            return invalid("timeouts must be positive".into());
        }
        if t.request_ms == 0 || t.connect_ms == 0 || t.idle_ms == 0 {
            return invalid("timeouts must be positive".into());
        }
        if t.speculative_read_ms >= t.request_ms {
            return invalid(format!(
                "timeouts.speculative_read_ms = {}: expected less than timeouts.request_ms ({}), or 0 to read from every replica at once",
                t.speculative_read_ms, t.request_ms
            ));
        }
        for ks in &self.keyspaces {
            ks.validate(self.cluster.nodes.len())
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}

/// What a client needs to reach a cluster: contact points and its TLS identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The client's certificate (PEM), signed by the CA.
    pub client_cert: PathBuf,
    /// The client's private key (PEM).
    pub client_key: PathBuf,
    /// Nodes to try, in order; the client moves to the next when one is unreachable.
    pub contact_points: Vec<Member>,
    /// Default keyspace for the CLI and shell. Default `"default"`.
    #[serde(default = "default_keyspace")]
    pub keyspace: String,
    /// Client-side timeout per request, milliseconds; should exceed the nodes'
    /// `timeouts.request_ms`. Default 5000.
    #[serde(default = "default_client_timeout")]
    pub timeout_ms: u64,
}

fn default_keyspace() -> String {
    "default".into()
}
fn default_client_timeout() -> u64 {
    5000
}

impl ClusterFile {
    /// Load and resolve relative paths against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cf: ClusterFile = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cf.ca_cert = resolve(base, &cf.ca_cert);
        cf.client_cert = resolve(base, &cf.client_cert);
        cf.client_key = resolve(base, &cf.client_key);
        if cf.contact_points.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{}: contact_points is empty",
                path.display()
            )));
        }
        Ok(cf)
    }

    /// This file narrowed to the one contact point `node` (`None` when `node` is not one
    /// of them): a client of it talks to that node only, which then coordinates.
    pub fn only(&self, node: &str) -> Option<ClusterFile> {
        let m = self.contact_points.iter().find(|m| m.name == node)?;
        Some(ClusterFile {
            contact_points: vec![m.clone()],
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("node.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = r#"
name = "n1"
listen = "127.0.0.1:7001"
data_dir = "data"
[tls]
ca_cert = "ca.pem"
cert = "n1.pem"
key = "n1.key"
[cluster]
nodes = [{ name = "n1", addr = "127.0.0.1:7001" }, { name = "n2", addr = "127.0.0.1:7002" }]
"#;

    /// Goal: a minimal config loads, fills every default and resolves relative paths.
    #[test]
    fn minimal_config_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert!(cfg.storage.sync, "durable by default");
        assert!(cfg.storage.overlap_lead_sync, "overlap is on by default");
        assert_eq!(cfg.storage.engine, "rocksdb");
        assert_eq!(cfg.ring.vnodes, DEFAULT_VNODES);
        assert_eq!(cfg.timeouts.request_ms, 2000);
        assert_eq!(cfg.data_dir, dir.path().join("data"));
    }

    /// Goal: `storage.overlap_lead_sync` is read from node.toml (turning the default off),
    /// and a misspelt storage field is refused rather than silently ignored.
    #[test]
    fn overlap_lead_sync_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}[storage]\noverlap_lead_sync = false\n");
        let cfg = NodeConfig::load(&write(dir.path(), &text)).unwrap();
        assert!(!cfg.storage.overlap_lead_sync && cfg.storage.sync);
        let bad = format!("{MINIMAL}[storage]\noverlap_lead_fsync = true\n");
        let e = NodeConfig::load(&write(dir.path(), &bad)).unwrap_err();
        assert!(e.to_string().contains("overlap_lead_fsync"), "{e}");
    }

    /// Goal: zones are read per member; a cluster where some members have a zone and
    /// others do not, or one with an empty zone, is refused with a message saying so.
    #[test]
    fn zones_are_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let zoned = MINIMAL.replace(
            "addr = \"127.0.0.1:7001\" }",
            "addr = \"127.0.0.1:7001\", zone = \"a\" }",
        );
        let both = zoned.replace(
            "addr = \"127.0.0.1:7002\" }",
            "addr = \"127.0.0.1:7002\", zone = \"b\" }",
        );
        let cfg = NodeConfig::load(&write(dir.path(), &both)).unwrap();
        assert_eq!(cfg.cluster.nodes[1].zone.as_deref(), Some("b"));
        let e = NodeConfig::load(&write(dir.path(), &zoned))
            .unwrap_err()
            .to_string();
        assert!(e.contains("give every member a zone, or none"), "{e}");
        let empty = both.replace("zone = \"b\"", "zone = \" \"");
        let e = NodeConfig::load(&write(dir.path(), &empty))
            .unwrap_err()
            .to_string();
        assert!(e.contains("n2 has an empty zone"), "{e}");
    }

    /// Goal: typos, bad values and bad keyspaces are refused with a message naming them.
    #[test]
    fn bad_configs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let typo = MINIMAL.replace("[tls]", "synk = true\n[tls]");
        let e = NodeConfig::load(&write(dir.path(), &typo))
            .unwrap_err()
            .to_string();
        assert!(e.contains("synk"), "{e}");
        let bad = format!("{MINIMAL}\n[[keyspaces]]\nname = \"k\"\nn = 2\nw = 3\n");
        let e = NodeConfig::load(&write(dir.path(), &bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("w=3 is invalid"), "{e}");
        let e = NodeConfig::load(&write(
            dir.path(),
            &MINIMAL.replacen("name = \"n1\"", "name = \"n9\"", 1),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not listed"), "{e}");
        // Two nodes × the default 4 MiB object cap + 64 KiB do not fit 8 MiB frames.
        let small = MINIMAL.replace("[tls]", "[limits]\nmax_frame_bytes = 8388608\n[tls]");
        let e = NodeConfig::load(&write(dir.path(), &small))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_frame_bytes (8388608) must be at least 8454144"),
            "{e}"
        );
        let tiny = MINIMAL.replace("[tls]", "[limits]\nmax_object_bytes = 1024\n[tls]");
        let e = NodeConfig::load(&write(dir.path(), &tiny))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_object_bytes (1024) must exceed"), "{e}");
        let e = NodeConfig::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    /// Goal: `[detector]` defaults load, a valid section is taken as written, and each
    /// field out of range (or inconsistent with another) is refused naming the field.
    #[test]
    fn detector_settings_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(cfg.detector, DetectorConfig::default());
        assert_eq!(cfg.detector.suspicion_timeout_ms, 5000);
        let with =
            |section: &str| MINIMAL.replace("[tls]", &format!("[detector]\n{section}\n[tls]"));
        let ok = NodeConfig::load(&write(
            dir.path(),
            &with("probe_interval_ms = 200\nprobe_timeout_ms = 100\nindirect_probes = 0\nsuspicion_timeout_ms = 2000"),
        ))
        .unwrap();
        assert_eq!(ok.detector.indirect_probes, 0);
        assert_eq!(ok.detector.probe_interval_ms, 200);
        for (section, field) in [
            ("probe_interval_ms = 50", "detector.probe_interval_ms"),
            ("probe_timeout_ms = 1000", "detector.probe_timeout_ms"),
            ("probe_timeout_ms = 0", "detector.probe_timeout_ms"),
            ("indirect_probes = 17", "detector.indirect_probes"),
            ("indirect_timeout_ms = 0", "detector.indirect_timeout_ms"),
            (
                "suspicion_timeout_ms = 1999",
                "detector.suspicion_timeout_ms",
            ),
            ("stall_threshold_ms = 0", "detector.stall_threshold_ms"),
            ("probe_intervall_ms = 1000", "probe_intervall_ms"),
        ] {
            let e = NodeConfig::load(&write(dir.path(), &with(section)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{section}: {e}");
        }
    }

    /// Goal: replication bundling's limits default to 64 items and 2 bundles in flight,
    /// accept their bounds (1 item turns bundling off), and refuse values outside them
    /// naming the field.
    #[test]
    fn bundle_limits_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(
            (
                cfg.limits.max_bundle_items,
                cfg.limits.max_bundles_in_flight
            ),
            (64, 2)
        );
        let with = |section: &str| MINIMAL.replace("[tls]", &format!("[limits]\n{section}\n[tls]"));
        for ok in [
            "max_bundle_items = 1",
            "max_bundle_items = 4096\nmax_bundles_in_flight = 64",
        ] {
            NodeConfig::load(&write(dir.path(), &with(ok))).unwrap();
        }
        for (bad, field) in [
            ("max_bundle_items = 0", "limits.max_bundle_items"),
            ("max_bundle_items = 4097", "limits.max_bundle_items"),
            ("max_bundles_in_flight = 0", "limits.max_bundles_in_flight"),
            ("max_bundles_in_flight = 65", "limits.max_bundles_in_flight"),
        ] {
            let e = NodeConfig::load(&write(dir.path(), &with(bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    /// Goal: `timeouts.speculative_read_ms` defaults to 20, 0 (all replicas at once) and a
    /// value below `request_ms` load, and one at or above `request_ms` (it could never
    /// fire) is refused naming the field.
    #[test]
    fn speculative_read_delay_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(cfg.timeouts.speculative_read_ms, 20);
        let with =
            |section: &str| MINIMAL.replace("[tls]", &format!("[timeouts]\n{section}\n[tls]"));
        for ok in [
            "speculative_read_ms = 0",
            "request_ms = 500\nspeculative_read_ms = 499",
        ] {
            NodeConfig::load(&write(dir.path(), &with(ok))).unwrap();
        }
        for bad in [
            "speculative_read_ms = 2000",
            "request_ms = 500\nspeculative_read_ms = 501",
        ] {
            let e = NodeConfig::load(&write(dir.path(), &with(bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("timeouts.speculative_read_ms"), "{bad}: {e}");
        }
    }

    /// Goal: the in-flight budget settings are checked against each other (a frame must
    /// fit in the node reserve and in the clients' pool, a scan page in half a frame),
    /// and a refusal names the field at fault.
    #[test]
    fn budget_limits_are_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(cfg.limits.max_inflight_bytes, 256 << 20);
        assert_eq!(cfg.limits.node_reserved_bytes, 64 << 20);
        let with = |limits: &str| {
            NodeConfig::load(&write(
                dir.path(),
                &format!("{MINIMAL}\n[limits]\n{limits}\n"),
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let e = with("node_reserved_bytes = 1048576").unwrap_err();
        assert!(e.contains("limits.node_reserved_bytes"), "{e}");
        let e = with("max_inflight_bytes = 100000000").unwrap_err();
        assert!(e.contains("limits.max_inflight_bytes"), "{e}");
        let e = with("max_reply_bytes = 40000000").unwrap_err();
        assert!(e.contains("limits.max_reply_bytes"), "{e}");
        with("max_frame_bytes = 4194304\nmax_value_bytes = 65536\nmax_object_bytes = 1048576\nnode_reserved_bytes = 4194304\nmax_inflight_bytes = 25165824\nmax_reply_bytes = 1048576").unwrap();
    }
}
