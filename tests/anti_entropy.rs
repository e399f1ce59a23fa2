//! Merkle anti-entropy on in-memory clusters: an exchange finds exactly the differences
//! between two replicas and repairs both, within its bounds; a node that missed a write
//! burst converges with no client read; an unclean stop makes the next start rebuild the
//! trees, a clean one does not.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{keyspace, put_request, update_request, TIMEOUT};
use quorumkv::aae::tree::range_id;
use quorumkv::causality::VersionVector;
use quorumkv::config::{AntiEntropyConfig, Limits, Member};
use quorumkv::inprocess::MemoryCluster;
use quorumkv::key::Key;
use quorumkv::keyspace::{ConflictPolicy, KeyspaceDef};
use quorumkv::node::{Node, NodeParams};
use quorumkv::object::Object;
use quorumkv::proto::{CrdtOp, PeerRequest, PeerResponse};
use quorumkv::storage::{BatchOp, MemoryStorage, Storage};
use quorumkv::transport::memory::MemoryNetwork;

/// Exchanges only when the test asks (the loop's first round is an hour away).
fn manual(max_keys: usize, max_segments: usize) -> AntiEntropyConfig {
    AntiEntropyConfig {
        interval_ms: 3_600_000,
        max_keys_per_exchange: max_keys,
        max_segments_per_exchange: max_segments,
        ..AntiEntropyConfig::default()
    }
}

/// A copy of `key` written by `actor` (as if that replica had led the write).
fn object(actor: &str, value: &str) -> Object {
    let mut o = Object::default();
    o.apply_write(
        actor,
        &VersionVector::new(),
        Some(value.as_bytes().to_vec()),
        1,
    )
    .unwrap();
    o
}

/// Store `object` at `key` on `node` only (a merge, as replication does).
async fn inject(node: &Arc<Node>, ks: &KeyspaceDef, key: &str, object: Object) {
    let reply = node
        .handle_peer_request(
            "test".into(),
            PeerRequest::Replicate {
                keyspace: ks.clone(),
                key: Key::parse(key),
                object,
            },
        )
        .await;
    assert!(matches!(reply, PeerResponse::Ack), "{reply:?}");
}

/// The keys injected by [`differences`]: present on n1 only, on n2 only, concurrent on
/// both, equal on both.
struct Injected {
    only_n1: Vec<String>,
    only_n2: Vec<String>,
    concurrent: Vec<String>,
    equal: Vec<String>,
}

impl Injected {
    fn all(&self) -> impl Iterator<Item = &String> {
        self.only_n1
            .iter()
            .chain(&self.only_n2)
            .chain(&self.concurrent)
            .chain(&self.equal)
    }
}

async fn differences(c: &MemoryCluster, ks: &KeyspaceDef, per_kind: usize) -> Injected {
    let (n1, n2) = (c.node("n1"), c.node("n2"));
    let names = |p: &str| (0..per_kind).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let d = Injected {
        only_n1: names("a"),
        only_n2: names("b"),
        concurrent: names("c"),
        equal: names("d"),
    };
    for k in &d.only_n1 {
        inject(n1, ks, k, object("x@1", k)).await;
    }
    for k in &d.only_n2 {
        inject(n2, ks, k, object("y@1", k)).await;
    }
    for k in &d.concurrent {
        inject(n1, ks, k, object("x@1", "mine")).await;
        inject(n2, ks, k, object("y@1", "theirs")).await;
    }
    for k in &d.equal {
        inject(n1, ks, k, object("x@1", k)).await;
        inject(n2, ks, k, object("x@1", k)).await;
    }
    d
}

async fn copies(c: &MemoryCluster, ks: &str, key: &str) -> Vec<Option<Object>> {
    let mut out = Vec::new();
    for n in &c.nodes {
        out.push(n.local_object(ks, &Key::parse(key)).await);
    }
    out
}

/// Goal: one exchange between two replicas finds exactly the keys that differ (missing
/// on either side, or concurrent), repairs both sides — concurrent versions end up as
/// siblings on both — and leaves keys that were equal alone; the next exchange finds the
/// trees equal.
#[tokio::test(start_paused = true)]
async fn exchange_repairs_exactly_the_differences_both_ways() {
    let ks = keyspace("ks", ConflictPolicy::Siblings, 2, 1, 1);
    let c =
        MemoryCluster::with_anti_entropy(2, vec![ks.clone()], TIMEOUT, manual(256, 64)).unwrap();
    let d = differences(&c, &ks, 10).await;
    let ae = c.node("n1").anti_entropy().unwrap();
    let range = range_id(&["n1".to_string(), "n2".to_string()]);
    let o = ae.exchange(&ks, range, "n2").await.unwrap();
    assert!(o.differing && o.full, "{o:?}");
    assert_eq!(
        o.keys_repaired, 30,
        "only n1, only n2 and concurrent keys: {o:?}"
    );
    for k in d.all() {
        let copies = copies(&c, "ks", k).await;
        assert!(copies[0].is_some(), "{k} missing on n1");
        assert_eq!(copies[0], copies[1], "{k} differs after the exchange");
    }
    for k in &d.concurrent {
        let o = c
            .node("n2")
            .local_object("ks", &Key::parse(k))
            .await
            .unwrap();
        assert_eq!(
            o.siblings.len(),
            2,
            "{k}: concurrent versions must both survive"
        );
    }
    let again = ae.exchange(&ks, range, "n2").await.unwrap();
    assert!(
        !again.differing && again.full && again.keys_repaired == 0,
        "{again:?}"
    );
}

/// Goal: with more differences than one exchange may handle, every exchange stays within
/// `max_keys_per_exchange` and `max_segments_per_exchange`, and repeated exchanges still
/// converge the replicas.
#[tokio::test(start_paused = true)]
async fn exchanges_are_bounded_and_converge_over_several() {
    let ks = keyspace("ks", ConflictPolicy::Siblings, 2, 1, 1);
    let c = MemoryCluster::with_anti_entropy(2, vec![ks.clone()], TIMEOUT, manual(8, 4)).unwrap();
    let d = differences(&c, &ks, 15).await;
    let ae = c.node("n2").anti_entropy().unwrap();
    let range = range_id(&["n1".to_string(), "n2".to_string()]);
    let mut exchanges = 0;
    let mut repaired = 0;
    loop {
        let o = ae.exchange(&ks, range, "n1").await.unwrap();
        if !o.differing {
            break;
        }
        exchanges += 1;
        assert!(o.keys_repaired <= 8 && o.segments_compared <= 4, "{o:?}");
        assert!(!o.full || o.segments_differing <= 4, "{o:?}");
        repaired += o.keys_repaired;
        assert!(exchanges < 50, "no convergence after 50 exchanges");
    }
    assert_eq!(repaired, 45, "each differing key repaired once");
    assert!(
        exchanges >= 45 / 8,
        "{exchanges} exchanges for 45 keys at 8 per exchange"
    );
    for k in d.all() {
        let copies = copies(&c, "ks", k).await;
        assert_eq!(copies[0], copies[1], "{k} differs");
    }
}

/// Goal: a replica that was down during a write burst gets every write back from
/// anti-entropy alone — no client reads, no hints — within two exchange intervals of
/// coming back, judged on each replica's own copy.
#[tokio::test(start_paused = true)]
async fn node_down_during_writes_converges_without_reads() {
    down_during_burst_converges(ConflictPolicy::Siblings).await;
}

/// Goal: the same for a CRDT keyspace (counters): the CRDT state, not a version vector,
/// is what differs, and repair still reaches every replica.
#[tokio::test(start_paused = true)]
async fn node_down_during_crdt_updates_converges_without_reads() {
    down_during_burst_converges(ConflictPolicy::Counter).await;
}

async fn down_during_burst_converges(policy: ConflictPolicy) {
    let ks = keyspace("ks", policy, 3, 2, 2);
    let interval = Duration::from_millis(1000);
    let cfg = AntiEntropyConfig {
        interval_ms: interval.as_millis() as u64,
        ..AntiEntropyConfig::default()
    };
    let c = MemoryCluster::with_anti_entropy(3, vec![ks.clone()], TIMEOUT, cfg).unwrap();
    c.net.set_down("n3", true);
    let keys: Vec<String> = (0..40).map(|i| format!("burst{i}")).collect();
    for k in &keys {
        if policy == ConflictPolicy::Counter {
            c.node("n1")
                .update(update_request("ks", k, CrdtOp::CounterAdd(3), "", None))
                .await
                .unwrap();
        } else {
            c.node("n1")
                .put(put_request("ks", k, k.as_bytes(), ""))
                .await
                .unwrap();
        }
    }
    assert!(c
        .node("n3")
        .local_object("ks", &Key::parse(&keys[0]))
        .await
        .is_none());
    c.net.set_down("n3", false);
    let back = tokio::time::Instant::now();
    // Two intervals, each at most a quarter longer with jitter.
    let deadline = back + interval * 5 / 2;
    loop {
        let mut converged = true;
        for k in &keys {
            let copies = copies(&c, "ks", k).await;
            if copies[2].is_none() || copies.iter().any(|o| *o != copies[0]) {
                converged = false;
                break;
            }
        }
        if converged {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "n3 not converged within two intervals"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = back.elapsed();
    println!("{policy:?}: converged {took:?} after n3 came back (interval {interval:?})");
    let status = c.node("n3").anti_entropy().unwrap().status();
    assert_eq!(status.len(), 1, "{status:?}");
}

fn single_node(storage: Arc<dyn Storage>, ks: &KeyspaceDef) -> Arc<Node> {
    let net = MemoryNetwork::new();
    Node::new(NodeParams {
        name: "n1".into(),
        members: vec![Member {
            name: "n1".into(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7001)),
            zone: None,
        }],
        vnodes: 8,
        storage,
        transport: Arc::new(net.transport("n1")),
        env: quorumkv::env::TokioEnv::system(),
        limits: Limits::default(),
        request_timeout: TIMEOUT,
        speculative_read: Duration::from_millis(quorumkv::config::DEFAULT_SPECULATIVE_READ_MS),
        keyspaces: vec![ks.clone()],
        context_key: quorumkv::context::ContextKey::random(),
        new_incarnation: false,
        overlap_lead_sync: false,
        bugs: Default::default(),
        clock_offset: None,
        anti_entropy: AntiEntropyConfig::default(),
        hints: Default::default(),
        tombstones: Default::default(),
        detector: Default::default(),
        membership: Default::default(),
    })
    .unwrap()
}

/// Every anti-entropy tree entry (segments and key index), without the marker.
fn tree_entries(storage: &dyn Storage) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = storage
        .scan(b"\xFEaae\x00k", b"\xFEaae\x00l", usize::MAX)
        .unwrap();
    out.extend(
        storage
            .scan(b"\xFEaae\x00s", b"\xFEaae\x00t", usize::MAX)
            .unwrap(),
    );
    out
}

fn wipe_trees(storage: &dyn Storage) {
    let ops = tree_entries(storage)
        .into_iter()
        .map(|(k, _)| BatchOp::Delete(k))
        .collect();
    storage.write(ops).unwrap();
}

/// Goal: a node that did not stop cleanly (the marker stays "dirty" while it runs)
/// rebuilds its trees from the data at the next start, giving the trees its writes had
/// kept; after a clean stop the next start trusts the stored trees (no rebuild).
#[tokio::test]
async fn unclean_stop_rebuilds_trees_and_clean_stop_does_not() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let ks = keyspace("ks", ConflictPolicy::Siblings, 1, 1, 1);
    let node = single_node(Arc::clone(&storage), &ks);
    for i in 0..20 {
        node.put(put_request("ks", &format!("k{i}"), "v", ""))
            .await
            .unwrap();
    }
    let kept = tree_entries(&*storage);
    assert!(
        kept.len() > 20,
        "segments and index entries: {}",
        kept.len()
    );
    // A crash: no clean stop. Damage the trees to see that they are rebuilt.
    drop(node);
    wipe_trees(&*storage);
    let node = single_node(Arc::clone(&storage), &ks);
    assert_eq!(
        tree_entries(&*storage),
        kept,
        "an unclean stop must rebuild the trees"
    );
    // A clean stop: the next start keeps what is stored, damaged or not.
    node.mark_clean_stop();
    drop(node);
    wipe_trees(&*storage);
    let _node = single_node(Arc::clone(&storage), &ks);
    assert!(
        tree_entries(&*storage).is_empty(),
        "a clean stop must not trigger a rebuild"
    );
}
