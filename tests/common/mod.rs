//! Helpers shared by the integration tests (`tests/*.rs`): request builders with the
//! defaults every test uses, cluster setups (in-memory and QUIC), reading values back,
//! guards for child processes, and bounded waiting.
//!
//! One copy, so that a new field in a request type or a change to how a cluster starts is
//! made in one place instead of once per test file. Each test file says `mod common;`.
//! Cargo does not build a directory under `tests/` as a test of its own; every test
//! binary compiles this module separately.

// Every test binary compiles this module on its own and uses only part of it; what one
// binary does not use would otherwise be reported as dead code there.
#![allow(dead_code)]

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::Duration;

use quorumkv::client::Client;
use quorumkv::config::{ClusterFile, StorageConfig, Timeouts};
use quorumkv::inprocess::{MemoryCluster, QuicCluster};
use quorumkv::key::Key;
use quorumkv::keyspace::{ConflictPolicy, KeyspaceDef};
use quorumkv::node::Node;
use quorumkv::object::Object;
use quorumkv::proto::{
    BatchItem, BatchRequest, CrdtOp, GetRequest, GetResponse, PutRequest, ScanRequest,
    UpdateRequest,
};
use quorumkv::tls::TransportSettings;

/// The `quorumkv` binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_quorumkv");

/// Request timeout of the in-memory clusters. Most of their tests run on virtual time
/// (`start_paused`), so a short timeout costs nothing and keeps timed-out cases quick.
pub const TIMEOUT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// Keyspaces.

/// A keyspace `name` with conflict `policy` and the given N, R and W. An `lww-actor`
/// keyspace gets the actor priority `eu > us` (it needs one), the actors the tests use.
pub fn keyspace(name: &str, policy: ConflictPolicy, n: u8, r: u8, w: u8) -> KeyspaceDef {
    let mut k = KeyspaceDef::new(name, n, r, w);
    k.policy = policy;
    if policy == ConflictPolicy::LwwActor {
        k.actor_priority = vec!["eu".into(), "us".into()];
    }
    k
}

// ---------------------------------------------------------------------------------------
// Requests, with the defaults a test does not care about: no tracing, no conditional
// write, no client timestamp or actor. Override a field with `..put_request(…)`.

/// A write of `value` to `key` with `context` (empty: a blind write) at the keyspace's W.
pub fn put_request(
    keyspace: &str,
    key: &str,
    value: impl AsRef<[u8]>,
    context: &str,
) -> PutRequest {
    PutRequest {
        keyspace: keyspace.into(),
        key: Key::parse(key),
        value: Some(value.as_ref().to_vec()),
        context: context.into(),
        w: None,
        trace: false,
        if_context: false,
        timestamp: None,
        actor: None,
        pw: None,
    }
}

/// A read of `key` at `r` (`None`: the keyspace's R).
pub fn get_request(keyspace: &str, key: &str, r: Option<u8>) -> GetRequest {
    GetRequest {
        keyspace: keyspace.into(),
        key: Key::parse(key),
        r,
        trace: false,
        pr: None,
    }
}

/// A CRDT operation on `key` with `context` (what a remove observed; empty: nothing).
pub fn update_request(
    keyspace: &str,
    key: &str,
    op: CrdtOp,
    context: &str,
    w: Option<u8>,
) -> UpdateRequest {
    UpdateRequest {
        keyspace: keyspace.into(),
        key: Key::parse(key),
        op,
        context: context.into(),
        w,
        trace: false,
    }
}

/// One blind write of a batch.
pub fn batch_item(key: &str, value: impl AsRef<[u8]>) -> BatchItem {
    BatchItem {
        key: Key::parse(key),
        value: Some(value.as_ref().to_vec()),
        context: String::new(),
    }
}

/// An atomic batch of `items` (all in one partition) at `w`.
pub fn batch_request(keyspace: &str, items: Vec<BatchItem>, w: Option<u8>) -> BatchRequest {
    BatchRequest {
        keyspace: keyspace.into(),
        items,
        w,
        trace: false,
    }
}

/// A scan of up to `limit` items of `partition` from sort key `from` on, to its end.
pub fn scan_request(
    keyspace: &str,
    partition: &str,
    from: &[u8],
    limit: u32,
    r: Option<u8>,
) -> ScanRequest {
    ScanRequest {
        keyspace: keyspace.into(),
        partition: partition.as_bytes().to_vec(),
        from: from.to_vec(),
        to: None,
        limit,
        r,
        trace: false,
    }
}

// ---------------------------------------------------------------------------------------
// Reading values back.

/// The values of a read as text, sorted (siblings come in no particular order).
pub fn values(g: &GetResponse) -> Vec<String> {
    let mut v: Vec<String> = g
        .values
        .iter()
        .map(|s| String::from_utf8_lossy(&s.value).to_string())
        .collect();
    v.sort();
    v
}

/// The live values of a replica's stored object as text, sorted.
pub fn object_values(o: &Object) -> Vec<String> {
    let mut v: Vec<String> = o
        .live_values()
        .map(|s| String::from_utf8_lossy(s.value.as_deref().unwrap_or_default()).to_string())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// In-memory clusters.

/// `n` nodes `n1`..`nN` on the in-memory network with `keyspaces` and [`TIMEOUT`].
pub fn memory_cluster(n: usize, keyspaces: impl IntoIterator<Item = KeyspaceDef>) -> MemoryCluster {
    MemoryCluster::new(n, keyspaces.into_iter().collect(), TIMEOUT).expect("cluster")
}

/// Hint records held by every node of `c`, for any target.
pub fn total_hints(c: &MemoryCluster) -> u64 {
    c.nodes
        .iter()
        .map(|n| {
            n.hint_stats()
                .pending
                .values()
                .map(|p| p.count)
                .sum::<u64>()
        })
        .sum()
}

/// Cut `node` off from every other node of `c`, both ways.
pub fn isolate(c: &MemoryCluster, node: &str) {
    let others: Vec<&str> = c
        .nodes
        .iter()
        .map(|n| n.name())
        .filter(|n| *n != node)
        .collect();
    c.net.partition(&[node], &others);
}

/// A cluster set up for split-brain stories about one key: [`Split::split`] leaves one of
/// the key's replicas alone on the small side and the others on the large side.
pub struct Split {
    pub c: MemoryCluster,
    /// The key's first replica, alone on its side once split.
    pub small: String,
    /// The key's second replica, on the other side.
    pub large: String,
}

impl Split {
    /// `c`, with `key`'s first two replicas as the two sides.
    pub fn new(c: MemoryCluster, key: &str) -> Split {
        let pl = c.node("n1").ring().preference_list(key.as_bytes(), 2);
        Split {
            small: pl[0].clone(),
            large: pl[1].clone(),
            c,
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Arc<Node> {
        self.c.node(name)
    }

    /// Cut the small side's replica off from everyone.
    pub fn split(&self) {
        isolate(&self.c, &self.small);
    }
}

// ---------------------------------------------------------------------------------------
// QUIC clusters: real nodes on loopback.

/// RocksDB storage; `sync` makes every write wait for the disk (off only where a test
/// measures throughput, not durability).
pub fn rocksdb_storage(sync: bool) -> StorageConfig {
    StorageConfig {
        engine: "rocksdb".into(),
        sync,
        overlap_lead_sync: false,
    }
}

/// Timeouts in milliseconds; the others keep their defaults.
pub fn timeouts(request_ms: u64, connect_ms: u64, idle_ms: u64) -> Timeouts {
    Timeouts {
        request_ms,
        connect_ms,
        idle_ms,
        ..Timeouts::default()
    }
}

/// Timeouts short enough that a request to a stopped node fails within about a second,
/// which loopback allows.
pub fn short_timeouts() -> Timeouts {
    timeouts(1000, 500, 3000)
}

/// Three nodes under `dir` with one keyspace `keyspace` (N=3 R=2 W=2).
pub async fn three_nodes(
    dir: &Path,
    keyspace: &str,
    storage: StorageConfig,
    timeouts: Timeouts,
) -> QuicCluster {
    QuicCluster::start(
        dir,
        3,
        &[KeyspaceDef::new(keyspace, 3, 2, 2)],
        storage,
        timeouts,
    )
    .await
    .expect("start cluster")
}

/// A client (admin certificate) that knows every node of `c`.
pub fn client(c: &QuicCluster) -> Arc<Client> {
    Client::new(&ClusterFile::load(&c.cluster_file).unwrap()).unwrap()
}

/// A client that only knows node `i` (0-based), so that node coordinates.
pub fn client_of(c: &QuicCluster, i: usize) -> Arc<Client> {
    let mut cf = ClusterFile::load(&c.cluster_file).unwrap();
    cf.contact_points = vec![cf.contact_points[i].clone()];
    Client::new(&cf).unwrap()
}

/// Node `i` (0-based) of `c`, which must be running.
pub fn running_node(c: &QuicCluster, i: usize) -> Arc<Node> {
    Arc::clone(&c.nodes[i].as_ref().expect("node is running").node)
}

/// A bare QUIC client endpoint with the given certificate, for tests that send frames by
/// hand (no quorumkv client on top to check or retry them).
pub fn raw_endpoint(
    ca: &Path,
    cert: &Path,
    key: &Path,
    idle: Duration,
    max_streams: u32,
) -> quinn::Endpoint {
    let settings = TransportSettings {
        idle,
        max_streams,
        receive_windows: None,
    };
    let cc = quorumkv::tls::client_config(ca, cert, key, &settings).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cc);
    ep
}

// ---------------------------------------------------------------------------------------
// Child processes.

/// A child process (a node, a peer server) killed and reaped when dropped, so a failing
/// test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A finished process's stdout as text (invalid UTF-8 replaced).
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished process's stderr as text (invalid UTF-8 replaced).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// Bounded waiting: every wait has a deadline and fails the test naming what it waited
// for, instead of hanging.

/// Call `attempt` every `interval` until it returns `Ok`, and return that value; panics
/// after `timeout` with `what` and the last attempt's error. Blocks the thread: for tests
/// outside a runtime, or inside `spawn_blocking`.
pub fn wait_for<T, E: Display>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last attempt: {e}")
            }
            Err(_) => std::thread::sleep(interval),
        }
    }
}

/// [`wait_for`] a condition.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut done: impl FnMut() -> bool,
) {
    wait_for(what, timeout, interval, || {
        if done() {
            Ok(())
        } else {
            Err("not yet")
        }
    })
}

/// [`wait_for`] in async code: `attempt` returns a future, and the waits are the
/// runtime's (virtual time in `start_paused` tests).
pub async fn eventually<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut attempt: F,
) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last attempt: {e}")
            }
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}

/// Run `f` on a paused single-threaded runtime, as the simulator does.
pub fn sim<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}
