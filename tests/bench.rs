//! `quorumkv bench`: the real binary against an in-process three-node QUIC cluster
//! (closed loop, workload E scans, open loop at a fixed rate, bad arguments), and the
//! YCSB key choosers' distributions.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{rocksdb_storage, stderr, stdout, three_nodes, timeouts, BIN};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use quorumkv::bench::workload::{Distribution, KeyChooser, Rng, Workload};
use quorumkv::inprocess::QuicCluster;

/// Three nodes with keyspace `default`. Writes do not wait for the disk: these tests check
/// the benchmark's counts and reports, not durability.
async fn cluster(dir: &Path) -> QuicCluster {
    three_nodes(
        dir,
        "default",
        rocksdb_storage(false),
        timeouts(2000, 1000, 5000),
    )
    .await
}

/// Run the binary with `args` to completion (bounded), asserting success; returns stdout.
async fn quorumkv(args: &[&std::ffi::OsStr]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(BIN).args(args).output(),
    )
    .await
    .expect("finishes by itself")
    .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Run `quorumkv bench` with `args` (plus --cluster, --keyspace, --json, --quiet) as a
/// child process, so this runtime keeps serving the nodes; returns the parsed report.
async fn bench(c: &QuicCluster, dir: &Path, args: &[&str]) -> serde_json::Value {
    let json = dir.join("report.json");
    let mut all: Vec<&std::ffi::OsStr> = vec!["bench".as_ref(), "--cluster".as_ref()];
    all.push(c.cluster_file.as_os_str());
    all.extend(["--keyspace", "default", "--quiet", "--json"].map(std::ffi::OsStr::new));
    all.push(json.as_os_str());
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let stdout = quorumkv(&all).await;
    assert!(stdout.contains("p99"), "no table on stdout: {stdout}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn count(phase: &serde_json::Value, op: &str) -> u64 {
    phase["operations"][op]["count"].as_u64().unwrap_or(0)
}

fn errors(phase: &serde_json::Value) -> u64 {
    ["quorum_not_reached", "timeout", "unreachable", "other"]
        .iter()
        .map(|k| phase["errors"][k].as_u64().unwrap())
        .sum()
}

/// Goal: workload A (closed loop, a fixed op budget) loads every record and runs exactly
/// the budget as reads + updates, without errors; the JSON report has percentiles.
/// `--hdr-log` writes an interval log with load and run histograms.
/// Then workload E against its own partition/sort records: scans + inserts == budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_workloads_a_and_e() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let hdr = dir.path().join("latency.hlog");
    let r = bench(
        &c,
        dir.path(),
        &[
            "--workload",
            "a",
            "--records",
            "200",
            "--ops",
            "500",
            "--concurrency",
            "4",
            "--hdr-log",
            hdr.to_str().unwrap(),
        ],
    )
    .await;
    // The interval log holds tagged V2 histograms that HdrHistogram's parser reads back.
    let log = std::fs::read(&hdr).unwrap();
    let mut tags = std::collections::BTreeSet::new();
    for item in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = item.unwrap() {
            tags.insert(h.tag().map(|t| t.as_str().to_string()).unwrap_or_default());
        }
    }
    assert!(
        tags.contains("load-insert") && tags.contains("run-read"),
        "{tags:?}"
    );
    let load = &r["load"];
    assert_eq!(count(load, "insert"), 200);
    assert_eq!(errors(load), 0);
    let run = &r["run"];
    assert_eq!(count(run, "read") + count(run, "update"), 500, "{run}");
    assert_eq!(run["ops"].as_u64(), Some(500));
    assert_eq!(errors(run), 0, "{run}");
    let read = &run["operations"]["read"];
    assert!(read["p50_us"].as_u64().unwrap() > 0);
    assert!(read["p99_us"].as_u64().unwrap() >= read["p50_us"].as_u64().unwrap());
    assert!(read["max_us"].as_u64().unwrap() >= read["p9999_us"].as_u64().unwrap());
    assert_eq!(r["parameters"]["workload"], "a");
    assert_eq!(r["parameters"]["loop"], "closed");

    let r = bench(
        &c,
        dir.path(),
        &[
            "--workload",
            "e",
            "--records",
            "200",
            "--ops",
            "300",
            "--concurrency",
            "4",
        ],
    )
    .await;
    let run = &r["run"];
    assert_eq!(count(run, "scan") + count(run, "insert"), 300, "{run}");
    assert!(count(run, "scan") > 0);
    assert_eq!(errors(run), 0, "{run}");
    c.shutdown().await;
}

/// Goal: open loop at 200 ops/s for 2 s runs at about the requested rate (±30%), the
/// report says open loop, and nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_holds_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let r = bench(
        &c,
        dir.path(),
        &[
            "--workload",
            "b",
            "--records",
            "100",
            "--rate",
            "200",
            "--duration",
            "2",
            "--concurrency",
            "8",
        ],
    )
    .await;
    let run = &r["run"];
    let tput = run["throughput"].as_f64().unwrap();
    assert!((140.0..=260.0).contains(&tput), "throughput {tput}: {run}");
    assert_eq!(errors(run), 0, "{run}");
    assert_eq!(r["parameters"]["loop"], "open");
    c.shutdown().await;
}

/// Goal: `--plot` draws a run, the JSON report keeps a throughput timeline and full
/// histograms, `--target echo` runs the same workload against the QUIC echo ceiling,
/// and `bench-report` merges both runs into one markdown table and one plot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plot_echo_and_merged_report() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let p = |name: &str| dir.path().join(name).into_os_string();
    let common = ["--workload", "a", "--records", "100", "--duration", "2.5"];
    let common: Vec<&std::ffi::OsStr> = common.iter().map(std::ffi::OsStr::new).collect();
    let (qkv_json, qkv_svg, echo_json) = (p("qkv.json"), p("qkv.svg"), p("echo.json"));
    let mut args: Vec<&std::ffi::OsStr> =
        ["bench", "--quiet", "--keyspace", "default", "--cluster"]
            .iter()
            .map(std::ffi::OsStr::new)
            .collect();
    args.push(c.cluster_file.as_os_str());
    args.extend(common.iter().copied());
    args.extend([
        "--json".as_ref(),
        qkv_json.as_os_str(),
        "--plot".as_ref(),
        qkv_svg.as_os_str(),
    ]);
    quorumkv(&args).await;
    let svg = std::fs::read_to_string(&qkv_svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("update") && svg.contains("read"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&qkv_json).unwrap()).unwrap();
    assert_eq!(report["parameters"]["target"], "quorumkv");
    let timeline = report["run"]["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 2, "one point a second: {timeline:?}");
    assert!(report["run"]["histograms"]["update"].is_string());

    let mut args: Vec<&std::ffi::OsStr> = ["bench", "--quiet", "--target", "echo"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend(common.iter().copied());
    args.extend(["--json".as_ref(), echo_json.as_os_str()]);
    quorumkv(&args).await;
    let echo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&echo_json).unwrap()).unwrap();
    assert_eq!(echo["parameters"]["label"], "echo");
    assert_eq!(errors(&echo["run"]), 0);
    assert!(count(&echo["run"], "read") > 0 && count(&echo["run"], "update") > 0);

    let (md, both_svg) = (p("table.md"), p("both.svg"));
    quorumkv(&[
        "bench-report".as_ref(),
        qkv_json.as_os_str(),
        echo_json.as_os_str(),
        "--markdown".as_ref(),
        md.as_os_str(),
        "--plot".as_ref(),
        both_svg.as_os_str(),
    ])
    .await;
    let table = std::fs::read_to_string(&md).unwrap();
    assert_eq!(
        table.lines().count(),
        4,
        "header, rule and one row per run: {table}"
    );
    assert!(table.contains("| quorumkv | quorumkv | A |"), "{table}");
    assert!(table.contains("| echo | echo | A |"), "{table}");
    let svg = std::fs::read_to_string(&both_svg).unwrap();
    assert!(svg.contains("quorumkv update") && svg.contains("echo read"));
    c.shutdown().await;
}

/// Goal: bad arguments fail with a clear message and a non-zero exit, before touching
/// any cluster.
#[test]
fn bad_arguments_are_refused() {
    for (args, needle) in [
        (vec!["--workload", "z"], "unknown workload"),
        (vec!["--concurrency", "0"], "--concurrency"),
        (vec!["--records", "0"], "--records"),
        (vec!["--rate=0"], "--rate"),
        (vec!["--distribution", "pareto"], "unknown distribution"),
        (vec!["--target", "mysql://db:3306"], "invalid --target"),
        (vec!["--target", "redis://localhost"], "not HOST:PORT"),
        (vec!["--timeout-ms", "0"], "--timeout-ms"),
    ] {
        let out = std::process::Command::new(BIN)
            .arg("bench")
            .args(["--cluster", "/nonexistent/cluster.toml"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Goal: a benchmark against a cluster none of whose nodes answers stops at once with an
/// error naming the problem, instead of running every operation into its own connection
/// attempts for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    for i in 0..3 {
        c.stop(i).await;
    }
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .arg("bench")
            .arg("--cluster")
            .arg(&c.cluster_file)
            .args(["--records", "1000", "--timeout-ms", "2000", "--quiet"])
            .output(),
    )
    .await
    .expect("bench gave up by itself")
    .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "a dead cluster was benchmarked");
    assert!(err.contains("cannot reach"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

fn histogram(dist: Distribution, count: u64, draws: usize) -> Vec<u64> {
    let mut rng = Rng::new(42);
    let mut ch = KeyChooser::new(dist, count);
    let mut h = vec![0u64; count as usize];
    for _ in 0..draws {
        let k = ch.next(&mut rng, count);
        assert!(k < count, "{dist}: {k} out of range");
        h[k as usize] += 1;
    }
    h
}

/// Goal: the zipfian chooser is skewed — its most popular key is drawn far more often
/// than the average key — and stays within range.
#[test]
fn zipfian_is_skewed() {
    let h = histogram(Distribution::Zipfian, 1000, 100_000);
    let max = *h.iter().max().unwrap();
    let avg = 100_000 / 1000;
    assert!(max > 20 * avg, "max {max} vs average {avg}");
}

/// Goal: uniform is flat — no key far above the average — and within range.
#[test]
fn uniform_is_flat() {
    let h = histogram(Distribution::Uniform, 100, 100_000);
    assert!(h.iter().all(|&n| (700..1300).contains(&n)), "{h:?}");
}

/// Goal: "latest" favours the most recently inserted records, follows a growing record
/// count, and stays within range.
#[test]
fn latest_favours_recent_inserts() {
    let h = histogram(Distribution::Latest, 1000, 100_000);
    let newest: u64 = h[990..].iter().sum();
    let oldest: u64 = h[..10].iter().sum();
    assert!(
        newest > 20 * oldest.max(1),
        "newest {newest} oldest {oldest}"
    );
    assert!(h[999] > h[500]);
    // The record count grows: the newest record becomes the favourite.
    let mut rng = Rng::new(7);
    let mut ch = KeyChooser::new(Distribution::Latest, 1000);
    let mut hits = 0;
    for _ in 0..10_000 {
        let k = ch.next(&mut rng, 1500);
        assert!(k < 1500);
        if k >= 1490 {
            hits += 1;
        }
    }
    assert!(hits > 3000, "{hits}");
}

/// Goal: the workload mixes match YCSB (A 50/50, E scans) and E's keys share partitions.
#[test]
fn workload_mixes_and_keys() {
    let mut rng = Rng::new(1);
    let a: Workload = "A".parse().unwrap();
    let reads = (0..10_000)
        .filter(|_| a.next_op(&mut rng) == quorumkv::bench::workload::Op::Read)
        .count();
    assert!((4500..5500).contains(&reads), "{reads}");
    let e: Workload = "e".parse().unwrap();
    let k0 = e.key_text(0);
    let k1 = e.key_text(1);
    assert_eq!(k0.split('/').next(), k1.split('/').next());
    assert!(k0.starts_with("user") && k0.ends_with("/000000"));
    assert!(!Workload::A.key_text(3).contains('/'));
    assert!("z".parse::<Workload>().is_err());
}
