//! The peer drivers of `quorumkv bench` (`--target redis://…`, `--target etcd://…`)
//! against real servers: Debian's `redis-server` and `etcd`, started here on loopback
//! ports of their own (scripts/prereqs.sh installs them). Built with the `peers`
//! feature (on by default).
#![cfg(feature = "peers")]

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, KillOnDrop};
use quorumkv::bench::driver::{self, BenchConfig, Stop};
use quorumkv::bench::target::{Connect, Target, TargetSpec};
use quorumkv::bench::workload::Workload;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Start a server, killed when the test ends however it ends.
fn start(cmd: &mut Command, what: &str) -> KillOnDrop {
    KillOnDrop(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {what} ({e}); scripts/prereqs.sh installs it")
            }),
    )
}

fn redis(dir: &std::path::Path) -> (KillOnDrop, TargetSpec) {
    let port = free_port();
    let server = start(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir),
        "redis-server",
    );
    (server, format!("redis://127.0.0.1:{port}").parse().unwrap())
}

fn etcd(dir: &std::path::Path) -> (KillOnDrop, TargetSpec) {
    let (client, peer) = (free_port(), free_port());
    let server = start(
        Command::new("etcd")
            .args(["--name", "t1", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &format!("t1=http://127.0.0.1:{peer}")]),
        "etcd",
    );
    (
        server,
        format!("etcd://127.0.0.1:{client}").parse().unwrap(),
    )
}

/// Connect, retrying while the freshly started server comes up (at most 30 s).
async fn connect(spec: &TargetSpec) -> Target {
    eventually(
        &format!("{spec} to come up"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || Target::connect(Connect::peer(spec, Duration::from_secs(3))),
    )
    .await
}

/// The primitives the workloads use: a write is read back, and a scan returns a
/// partition's items from the start key on, in order, up to the limit, and nothing of
/// the next partition.
async fn check_primitives(t: &Target) {
    for sort in ["000001", "000002", "000003", "000004"] {
        t.write(&format!("userp/{sort}"), b"v".to_vec(), None)
            .await
            .expect("write");
    }
    t.write("userp0/000000", b"next partition".to_vec(), None)
        .await
        .expect("write");
    t.write("userq", b"plain".to_vec(), None)
        .await
        .expect("write");
    t.read("userq").await.expect("read");
    t.read("never-written").await.expect("a miss is a read");
    assert_eq!(t.scan("userp", "000002", 10).await.expect("scan"), 3);
    assert_eq!(t.scan("userp", "000001", 2).await.expect("scan"), 2);
    assert_eq!(t.scan("userp", "000005", 10).await.expect("scan"), 0);
    assert_eq!(t.scan("nosuch", "000000", 10).await.expect("scan"), 0);
}

fn config(workload: Workload) -> BenchConfig {
    BenchConfig {
        keyspace: String::new(),
        workload,
        records: 200,
        value_size: 50,
        concurrency: 4,
        stop: Stop::Ops(300),
        distribution: workload.default_distribution(),
        rate: None,
        r: None,
        w: None,
        load: true,
        run: true,
        seed: 7,
        progress: false,
        intervals: false,
    }
}

/// A whole benchmark (load then run) completes every operation without an error.
async fn check_bench(t: Target, workload: Workload) {
    let res = driver::run(t, config(workload)).await.expect("bench");
    let load = res.load.expect("load phase");
    assert_eq!(load.ops, 200, "every record inserted");
    assert_eq!(load.errors.total(), 0);
    let run = res.run.expect("run phase");
    assert_eq!(run.ops, 300, "every operation of the budget succeeded");
    assert_eq!(run.errors.total(), 0);
    assert!(!run.histograms.is_empty(), "histograms kept for the report");
}

/// Goal: the Redis driver reads, writes and scans (sorted-set index) correctly and runs
/// workloads A and E against a real durable redis-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_driver_against_redis_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, spec) = redis(dir.path());
    check_primitives(&connect(&spec).await).await;
    check_bench(connect(&spec).await, Workload::A).await;
    check_bench(connect(&spec).await, Workload::E).await;
}

/// Goal: the etcd driver reads, writes and scans (range over the partition prefix)
/// correctly and runs workloads A and E against a real etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_driver_against_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, spec) = etcd(dir.path());
    check_primitives(&connect(&spec).await).await;
    check_bench(connect(&spec).await, Workload::A).await;
    check_bench(connect(&spec).await, Workload::E).await;
}

/// Goal: a peer that is not there is reported as unreachable, naming the target, within
/// the timeout — not a hang and not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_peers_are_named() {
    let port = free_port();
    for spec in [
        format!("redis://127.0.0.1:{port}"),
        format!("etcd://127.0.0.1:{port}"),
    ] {
        let spec: TargetSpec = spec.parse().unwrap();
        let started = Instant::now();
        let e = Target::connect(Connect::peer(&spec, Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cannot reach"), "{e}");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10), "bounded");
    }
}
