//! Reads ask R replicas, not N, and one more only when needed (speculative retry), under
//! the deterministic simulator: how many replica reads a client read costs, that a slow,
//! crashed or silent replica is replaced (at once when it fails, after
//! `timeouts.speculative_read_ms` when it is only slow) within the same latency bound,
//! that nothing extra is asked while the replicas are healthy, and that read repair still
//! fixes a stale replica the read asked. The figures printed are the ones
//! docs/BENCHMARKS.md quotes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{put_request, sim};
use quorumkv::env::Rng;
use quorumkv::key::Key;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::node::Node;
use quorumkv::proto::{GetRequest, PutRequest, ScanRequest};
use quorumkv::sim::cluster::{ClusterSpec, SimCluster};
use quorumkv::sim::env as simenv;

/// One-way delay of every link unless a test slows one.
const LINK: Duration = Duration::from_millis(1);
/// The default speculative delay (`timeouts.speculative_read_ms`).
const SPECULATE: Duration = Duration::from_millis(quorumkv::config::DEFAULT_SPECULATIVE_READ_MS);
/// Keys read per scenario.
const KEYS: usize = 100;

/// Three simulated nodes, keyspace `ks` N=3 R=2 W=2, every link `LINK` each way, reads
/// speculating after `speculative_read` (zero: all N at once).
fn cluster(seed: u64, speculative_read: Duration) -> SimCluster {
    let origin = simenv::now();
    let mut rng = Rng::new(seed);
    let (net, _) = quorumkv::sim::network(&mut rng, 3, origin);
    for a in 1..=3 {
        for b in 1..=3 {
            if a != b {
                net.set_link_latency(&format!("n{a}"), &format!("n{b}"), LINK, LINK);
            }
        }
    }
    let spec = ClusterSpec {
        nodes: 3,
        keyspaces: vec![KeyspaceDef::new("ks", 3, 2, 2)],
        request_timeout: Duration::from_millis(1000),
        speculative_read,
        unsynced: false,
        bugs: Default::default(),
        keep_incarnation: false,
        overlap_lead_sync: false,
        anti_entropy: quorumkv::config::AntiEntropyConfig {
            enabled: false,
            ..Default::default()
        },
        hints: quorumkv::config::HintsConfig {
            enabled: false,
            ..Default::default()
        },
        tombstones: quorumkv::config::TombstonesConfig {
            enabled: false,
            ..Default::default()
        },
        detector: Default::default(),
    };
    SimCluster::start(spec, net, origin, &mut rng).unwrap()
}

fn node(c: &SimCluster, i: usize) -> Arc<Node> {
    c.node(i).unwrap().0
}

fn key(i: usize) -> Key {
    Key::parse(&format!("k{i}"))
}

fn get(k: Key) -> GetRequest {
    GetRequest {
        keyspace: "ks".into(),
        key: k,
        r: None,
        trace: true,
        pr: None,
    }
}

async fn put(n: &Node, k: Key, v: &str) {
    n.put(PutRequest {
        key: k,
        ..put_request("ks", "", v, "")
    })
    .await
    .unwrap();
}

/// Replica reads served by every node so far (its own coordinator's included).
fn replica_reads(c: &SimCluster) -> u64 {
    (0..c.len())
        .filter_map(|i| c.node(i))
        .flat_map(|(n, _)| n.metrics.snapshot())
        .filter(|s| s.kind == "replica" && s.op == "read")
        .map(|s| s.count)
        .sum()
}

/// (read retries, speculative reads) counted by every node so far.
fn extra_reads(c: &SimCluster) -> (u64, u64) {
    (0..c.len())
        .filter_map(|i| c.node(i))
        .fold((0, 0), |acc, (n, _)| {
            (
                acc.0 + n.metrics.read_retries.load(Ordering::Relaxed),
                acc.1 + n.metrics.speculative_reads.load(Ordering::Relaxed),
            )
        })
}

/// Write `KEYS` keys through n1, then let the writes' background work settle.
async fn load(c: &SimCluster) {
    let n1 = node(c, 0);
    for i in 0..KEYS {
        put(&n1, key(i), &format!("v{i}")).await;
    }
    simenv::sleep(Duration::from_millis(100)).await;
}

/// Read every key once through n1; each read's latency (virtual time), and whether its
/// trace shows a speculative read.
async fn read_all(c: &SimCluster) -> Vec<(Duration, bool)> {
    let n1 = node(c, 0);
    let mut out = Vec::new();
    for i in 0..KEYS {
        let start = simenv::now();
        let g = n1.get(get(key(i))).await.unwrap();
        let took = simenv::now().saturating_duration_since(start);
        assert_eq!(g.values.len(), 1, "k{i}");
        assert_eq!(g.values[0].value, format!("v{i}").into_bytes());
        let speculated = g
            .trace
            .iter()
            .any(|e| e.activity.contains("speculative read"));
        out.push((took, speculated));
    }
    out
}

/// Goal: at N=3 R=2 a client read costs 2 replica reads, not 3 — measured over 1000 reads
/// through every coordinator on a healthy cluster, against the same reads with
/// `speculative_read_ms = 0` (all N at once, the former behaviour), which must cost
/// exactly 3 — and nothing extra is asked while the replicas are healthy.
#[test]
fn a_read_asks_r_replicas_not_n() {
    let mut per_read = Vec::new();
    for spec in [Duration::ZERO, SPECULATE] {
        let reads = sim(async {
            let c = cluster(1, spec);
            load(&c).await;
            let before = replica_reads(&c);
            for i in 0..1000 {
                let n = node(&c, i % 3);
                n.get(get(key(i % KEYS))).await.unwrap();
            }
            // Late replies of the all-N fan-outs arrive after their answers.
            simenv::sleep(Duration::from_millis(100)).await;
            assert_eq!(extra_reads(&c), (0, 0), "healthy replicas, nothing extra");
            replica_reads(&c) - before
        });
        per_read.push(reads as f64 / 1000.0);
    }
    println!(
        "replica reads per client read at N=3 R=2 (1000 reads): all N at once {:.3}, R first {:.3}",
        per_read[0], per_read[1]
    );
    assert_eq!(per_read, vec![3.0, 2.0]);
}

/// Goal: a slow replica (60 ms each way, alive to the failure detector) costs a read no
/// more than the speculative delay: reads that asked it ask the third replica after
/// `speculative_read_ms` and answer within that plus one round trip, reads that did not
/// ask it answer in one round trip and speculate nothing; and with the replicas healthy,
/// no read speculates.
#[test]
fn a_slow_replica_is_replaced_after_the_speculative_delay() {
    sim(async {
        let c = cluster(2, SPECULATE);
        load(&c).await;
        let healthy = read_all(&c).await;
        assert!(
            healthy.iter().all(|(t, s)| *t <= 2 * LINK && !s),
            "{healthy:?}"
        );
        assert_eq!(extra_reads(&c), (0, 0));

        let slow = Duration::from_millis(60);
        c.net.set_link_latency("n1", "n2", slow, slow);
        c.net.set_link_latency("n2", "n1", slow, slow);
        let n1 = node(&c, 0);
        let reads = read_all(&c).await;
        let mut speculated = 0;
        for (i, (took, spec)) in reads.iter().enumerate() {
            let pl = n1.ring().preference_list(&key(i).partition, 3);
            let second = pl.iter().find(|n| *n != "n1").unwrap();
            if second == "n2" {
                assert!(*spec, "k{i}: n2 was asked and slow, but nothing speculated");
                assert!(*took <= SPECULATE + 2 * LINK, "k{i}: took {took:?}");
                speculated += 1;
            } else {
                assert!(!*spec && *took <= 2 * LINK, "k{i}: {took:?} {spec}");
            }
        }
        assert!(speculated > 10, "only {speculated} reads asked n2 first");
        assert_eq!(extra_reads(&c), (0, speculated));
        println!(
            "slow replica: {speculated} of {KEYS} reads asked it and speculated; slowest read {:?} (bound {:?})",
            reads.iter().map(|r| r.0).max().unwrap(),
            SPECULATE + 2 * LINK
        );
    });
}

/// Goal: a crashed replica (calls refused at once) is replaced at once, without waiting
/// for the speculative delay: every read succeeds within one round trip plus a local
/// retry, and the retries are counted; a silent one (every message dropped) is replaced
/// after the speculative delay, and every read still succeeds within that plus a round
/// trip — not the request timeout. Once the failure detector stops seeing it up, it is
/// asked last, so reads stop paying for it.
#[test]
fn a_crashed_or_silent_replica_is_replaced() {
    sim(async {
        let mut c = cluster(3, SPECULATE);
        load(&c).await;
        c.crash(1);
        let reads = read_all(&c).await;
        assert!(reads.iter().all(|(t, s)| *t <= 2 * LINK && !s), "{reads:?}");
        let (retries, spec) = extra_reads(&c);
        assert!(
            retries > 0 && spec == 0,
            "{retries} retries, {spec} speculative"
        );
        println!("crashed replica: {retries} of {KEYS} reads retried at once");
    });
    sim(async {
        let c = cluster(4, SPECULATE);
        load(&c).await;
        c.net.partition(&["n2"], &["n1", "n3"]);
        let reads = read_all(&c).await;
        let slowest = reads.iter().map(|r| r.0).max().unwrap();
        assert!(slowest <= SPECULATE + 2 * LINK, "slowest read {slowest:?}");
        let (_, spec) = extra_reads(&c);
        assert!(spec > 0, "nothing speculated");
        // After the detector's suspicion, n2 is asked last: no read waits for it.
        simenv::sleep(Duration::from_secs(3)).await;
        let before = extra_reads(&c);
        let later = read_all(&c).await;
        assert!(later.iter().all(|(t, s)| *t <= 2 * LINK && !s), "{later:?}");
        assert_eq!(extra_reads(&c), before);
        println!("silent replica: {spec} of {KEYS} reads speculated, slowest {slowest:?}");
    });
}

/// Goal: read repair still covers what was read — a replica that missed a write and is
/// asked by a read (here it coordinates the read, so it is asked first) answers stale
/// and gets the merged object; a scan through it repairs it too.
#[test]
fn read_repair_fixes_a_stale_replica_that_was_asked() {
    sim(async {
        let c = cluster(5, SPECULATE);
        load(&c).await;
        // n3 misses an update to k0 and to k1.
        c.net.partition(&["n3"], &["n1", "n2"]);
        let n1 = node(&c, 0);
        for k in [key(0), key(1)] {
            let g = n1.get(get(k.clone())).await.unwrap();
            n1.put(PutRequest {
                key: k,
                ..put_request("ks", "", "new", &g.context)
            })
            .await
            .unwrap();
        }
        c.net.heal();
        let n3 = node(&c, 2);
        let local = |k: Key| {
            let n3 = Arc::clone(&n3);
            async move {
                let o = n3.local_object("ks", &k).await.unwrap();
                o.live_values()
                    .map(|s| String::from_utf8_lossy(s.value.as_deref().unwrap()).to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(local(key(0)).await, vec!["v0"]);
        let g = n3.get(get(key(0))).await.unwrap();
        assert_eq!(g.values[0].value, b"new".to_vec());
        simenv::sleep(Duration::from_millis(50)).await;
        assert_eq!(local(key(0)).await, vec!["new"], "read repair of n3");

        // A scan of k1's partition through n3 repairs it as well.
        assert_eq!(local(key(1)).await, vec!["v1"]);
        let s = n3
            .coordinator()
            .scan(ScanRequest {
                keyspace: "ks".into(),
                partition: key(1).partition.clone(),
                from: Vec::new(),
                to: None,
                limit: 10,
                r: None,
                trace: false,
            })
            .await
            .unwrap();
        assert_eq!(s.items[0].values[0].value, b"new".to_vec());
        simenv::sleep(Duration::from_millis(50)).await;
        assert_eq!(local(key(1)).await, vec!["new"], "scan repair of n3");
    });
}
