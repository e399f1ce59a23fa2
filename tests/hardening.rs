//! Hardening: no forged, recycled or oversized version loses a write, and no client
//! timestamp poisons a node's clock. Each test reproduces a way acknowledged writes were
//! lost (or a node panicked) before the fix; see docs/SECURITY.md.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::{
    eventually, get_request, keyspace, memory_cluster, object_values, put_request, rocksdb_storage,
    running_node, update_request, values,
};
use quorumkv::config::Timeouts;
use quorumkv::coordinator::CoordinatorError;
use quorumkv::inprocess::QuicCluster;
use quorumkv::key::Key;
use quorumkv::keyspace::{ConflictPolicy, KeyspaceDef};
use quorumkv::node::Node;
use quorumkv::object::Object;
use quorumkv::proto::{CrdtOp, CrdtValue, GetResponse, PutRequest, PutResponse};
use serde_bytes::ByteBuf;

async fn put(node: &Arc<Node>, req: PutRequest) -> Result<PutResponse, CoordinatorError> {
    node.put(req).await
}

async fn get(node: &Arc<Node>, keyspace: &str, key: &str, r: Option<u8>) -> GetResponse {
    node.get(get_request(keyspace, key, r)).await.unwrap()
}

/// The context the attacker sent: an unsealed vector claiming n1 issued 2^64-1
/// versions (the format contexts had before they were sealed).
fn forged_max_context(actor: &str) -> String {
    let map: std::collections::BTreeMap<String, u64> = [(actor.to_string(), u64::MAX)].into();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rmp_serde::to_vec(&map).unwrap())
}

/// Goal (item 1): one `put --context` claiming 2^64-1 versions of a node is refused with a
/// clear error, and the key keeps every value and accepts later writes (before the fix it
/// emptied the key and every later write was acknowledged and dropped).
#[tokio::test(start_paused = true)]
async fn forged_context_is_refused_and_the_key_survives() {
    let c = memory_cluster(
        3,
        [
            keyspace("ks", ConflictPolicy::Siblings, 3, 2, 2),
            keyspace("tags", ConflictPolicy::Set, 3, 2, 2),
        ],
    );
    let n1 = c.node("n1");
    put(n1, put_request("ks", "z", "kept", "")).await.unwrap();
    for actor in ["n1", "n2", &n1.replica_actor()] {
        let e = put(
            n1,
            put_request("ks", "z", "evil", &forged_max_context(actor)),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("not issued by this cluster for key z"),
            "{e}"
        );
    }
    // A CRDT remove with a forged context is refused the same way.
    let e = n1
        .update(update_request(
            "tags",
            "z",
            CrdtOp::SetRemove(vec![ByteBuf::from(b"x".to_vec())]),
            &forged_max_context("n1"),
            None,
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not issued by this cluster"), "{e}");
    put(n1, put_request("ks", "z", "later", "")).await.unwrap();
    assert_eq!(
        values(&get(n1, "ks", "z", Some(3)).await),
        vec!["kept", "later"]
    );
}

/// Goal (item 1): a genuine context read from one key cannot be replayed against another
/// key (its counters would claim versions that key's replicas never issued), while the
/// key's own context still resolves its siblings.
#[tokio::test(start_paused = true)]
async fn context_is_bound_to_its_key() {
    let c = memory_cluster(3, [keyspace("ks", ConflictPolicy::Siblings, 3, 2, 2)]);
    let n1 = c.node("n1");
    for i in 0..5 {
        put(n1, put_request("ks", "a", format!("a{i}"), ""))
            .await
            .unwrap();
    }
    put(n1, put_request("ks", "b", "b0", "")).await.unwrap();
    let ctx_a = get(n1, "ks", "a", None).await.context;
    let e = put(n1, put_request("ks", "b", "b1", &ctx_a))
        .await
        .unwrap_err();
    assert!(matches!(e, CoordinatorError::Context(_)), "{e}");
    put(n1, put_request("ks", "a", "merged", &ctx_a))
        .await
        .unwrap();
    assert_eq!(values(&get(n1, "ks", "a", Some(3)).await), vec!["merged"]);
}

/// Goal (item 3): a far-future client timestamp is refused, naming the limit, and
/// afterwards writes in every keyspace policy still work on that node (before the fix the
/// stamp entered the node's shared HLC and the next plain write overflowed: a panic in
/// this debug build).
#[tokio::test(start_paused = true)]
async fn far_future_client_timestamp_is_refused_and_nothing_is_poisoned() {
    let policies = [
        ConflictPolicy::Siblings,
        ConflictPolicy::LwwTimestamp,
        ConflictPolicy::LwwActor,
        ConflictPolicy::LwwClient,
    ];
    let defs: Vec<KeyspaceDef> = policies
        .iter()
        .map(|p| keyspace(&p.to_string(), *p, 3, 2, 2))
        .collect();
    let c = memory_cluster(3, defs);
    let n1 = c.node("n1");
    let mut stamped = put_request("lww-client", "k", "future", "");
    stamped.timestamp = Some(u64::MAX);
    let e = put(n1, stamped).await.unwrap_err();
    assert!(
        e.to_string().contains("max_clock_skew_ms") && e.to_string().contains("ahead"),
        "{e}"
    );
    // A stamp within the skew is fine (version numbers far in the past too).
    let mut small = put_request("lww-client", "k", "v7", "");
    small.timestamp = Some(7);
    put(n1, small).await.unwrap();
    for p in policies {
        let mut req = put_request(&p.to_string(), "after", "ok", "");
        match p {
            ConflictPolicy::LwwClient => req.timestamp = Some(8),
            ConflictPolicy::LwwActor => req.actor = Some("eu".into()),
            _ => {}
        }
        put(n1, req).await.unwrap();
        assert_eq!(
            values(&get(n1, &p.to_string(), "after", None).await),
            vec!["ok"]
        );
    }
}

/// Goal (item 4): a write that would make an object larger than `limits.max_object_bytes`
/// is refused with an error naming the key and its size (blind writes used to pile
/// siblings up to the frame limit, after which the key could no longer be read or
/// replicated); a write with the read's context still resolves the key. CRDT sets are
/// capped the same way.
#[tokio::test(start_paused = true)]
async fn objects_are_capped_in_bytes() {
    let mut big = keyspace("ks", ConflictPolicy::Siblings, 3, 2, 2);
    big.max_siblings = 100;
    let c = memory_cluster(3, [big, keyspace("tags", ConflictPolicy::Set, 3, 2, 2)]);
    let n1 = c.node("n1");
    let cap = quorumkv::config::Limits::default().max_object_bytes;
    let value = "x".repeat(quorumkv::config::Limits::default().max_value_bytes);
    let mut refused = None;
    for i in 0..8 {
        match put(n1, put_request("ks", "fat", &value, "")).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (i, e) = refused.expect("the object cap never refused a write");
    assert!(i >= 3, "refused too early, after {i} writes: {e}");
    assert!(
        e.contains("key fat would be stored as") && e.contains(&format!("over the limit of {cap}")),
        "{e}"
    );
    let ctx = get(n1, "ks", "fat", None).await.context;
    put(n1, put_request("ks", "fat", "small", &ctx))
        .await
        .unwrap();
    assert_eq!(values(&get(n1, "ks", "fat", Some(3)).await), vec!["small"]);

    let member = ByteBuf::from(vec![b'm'; 1000]);
    let mut refused = None;
    for i in 0..10_000u32 {
        let mut m = member.to_vec();
        m.extend_from_slice(&i.to_be_bytes());
        let members: Vec<ByteBuf> = (0..1000u32)
            .map(|j| {
                let mut mm = m.clone();
                mm.extend_from_slice(&j.to_be_bytes());
                ByteBuf::from(mm)
            })
            .collect();
        let r = n1
            .update(update_request(
                "tags",
                "s",
                CrdtOp::SetAdd(members),
                "",
                None,
            ))
            .await;
        if let Err(e) = r {
            refused = Some(e.to_string());
            break;
        }
    }
    let e = refused.expect("a CRDT set grew without bound");
    assert!(e.contains("key s would be stored as"), "{e}");
}

fn local(
    c: &QuicCluster,
    i: usize,
    keyspace: &str,
    key: &str,
) -> impl std::future::Future<Output = Option<Object>> {
    let node = running_node(c, i);
    let (keyspace, key) = (keyspace.to_string(), Key::parse(key));
    async move { node.local_object(&keyspace, &key).await }
}

async fn update(node: &Arc<Node>, keyspace: &str, key: &str, op: CrdtOp) {
    node.update(update_request(keyspace, key, op, "", Some(3)))
        .await
        .unwrap();
}

/// Goal (item 2, Riak's kv679): a node whose data directory is wiped comes back under the
/// same name and must not re-issue version ids its peers hold. Before the fix the wiped
/// node issued `n2:1` again: peers acked the new blind write, counter increment and set
/// add and then dropped them (the replicas diverged for good). Every acknowledged value
/// must be on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_never_reissues_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = QuicCluster::start(
        dir.path(),
        3,
        &[
            keyspace("ks", ConflictPolicy::Siblings, 3, 3, 3),
            keyspace("hits", ConflictPolicy::Counter, 3, 3, 3),
            keyspace("tags", ConflictPolicy::Set, 3, 3, 3),
        ],
        rocksdb_storage(true),
        Timeouts::default(),
    )
    .await
    .unwrap();
    let n2 = || running_node(&c, 1);
    let first = n2().replica_actor();
    put(&n2(), put_request("ks", "z", "old", "")).await.unwrap();
    put(&n2(), put_request("ks", "y", "y-old", ""))
        .await
        .unwrap();
    update(&n2(), "hits", "h", CrdtOp::CounterAdd(5)).await;
    update(
        &n2(),
        "tags",
        "t",
        CrdtOp::SetAdd(vec![ByteBuf::from(b"a".to_vec())]),
    )
    .await;

    c.stop(1).await;
    wait_closed(&c.configs[1].data_dir).await;
    std::fs::remove_dir_all(&c.configs[1].data_dir).unwrap();
    c.restart(1).await.unwrap();
    let n2 = running_node(&c, 1);
    assert_ne!(
        n2.replica_actor(),
        first,
        "a wiped node must come back as a new actor"
    );

    // Blind write through the wiped node: a sibling of "old" on every replica.
    put(&n2, put_request("ks", "z", "new", "")).await.unwrap();
    // A write with the context of a full read replaces exactly what was read.
    let ctx = get(&n2, "ks", "y", Some(3)).await.context;
    put(&n2, put_request("ks", "y", "y-new", &ctx))
        .await
        .unwrap();
    update(&n2, "hits", "h", CrdtOp::CounterAdd(3)).await;
    update(
        &n2,
        "tags",
        "t",
        CrdtOp::SetAdd(vec![ByteBuf::from(b"b".to_vec())]),
    )
    .await;

    // The peers acked every write and must hold every acknowledged value; the wiped
    // node lost its own old copies (only a read or anti-entropy brings them back), so it
    // is checked after a quorum read has repaired it.
    check_replicas(&c, &[0, 2]).await;
    assert_eq!(
        values(&get(&n2, "ks", "z", Some(3)).await),
        vec!["new", "old"]
    );
    for (keyspace, key) in [("ks", "y"), ("hits", "h"), ("tags", "t")] {
        get(&n2, keyspace, key, Some(3)).await;
    }
    let mut waited = 0;
    while waited < 50
        && local(&c, 1, "ks", "z")
            .await
            .map(|o| object_values(&o).len())
            != Some(2)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_replicas(&c, &[0, 1, 2]).await;
    c.shutdown().await;
}

/// Every acknowledged value of `wiped_node_never_reissues_old_versions` on replicas `which`.
async fn check_replicas(c: &QuicCluster, which: &[usize]) {
    for &i in which {
        let z = local(c, i, "ks", "z").await.expect("z on every replica");
        assert_eq!(object_values(&z), vec!["new", "old"], "replica n{}", i + 1);
        let y = local(c, i, "ks", "y").await.expect("y on every replica");
        assert_eq!(object_values(&y), vec!["y-new"], "replica n{}", i + 1);
        let h = local(c, i, "hits", "h")
            .await
            .expect("counter on every replica");
        assert_eq!(
            quorumkv::crdt::value(ConflictPolicy::Counter, &h.crdt),
            Some(CrdtValue::Counter(8)),
            "replica n{}",
            i + 1
        );
        let t = local(c, i, "tags", "t")
            .await
            .expect("set on every replica");
        assert_eq!(
            quorumkv::crdt::value(ConflictPolicy::Set, &t.crdt),
            Some(CrdtValue::Set(vec![
                ByteBuf::from(b"a".to_vec()),
                ByteBuf::from(b"b".to_vec())
            ])),
            "replica n{}",
            i + 1
        );
    }
}

/// Goal (item 2): a node restored from an old copy of its data (same incarnation, the
/// latest versions lost) takes a new incarnation as soon as it sees that a peer holds more
/// of its versions than it does — and then no key it leads can re-issue a lost version,
/// not only the key that revealed the loss (Riak's kv679 fix, node-wide). Before the fix
/// the blind write to `k2` re-issued the lost `k2` version id and the peers dropped it.
/// `--new-incarnation` forces a new one at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_backup_takes_a_new_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = QuicCluster::start(
        dir.path(),
        3,
        &[keyspace("ks", ConflictPolicy::Siblings, 3, 3, 3)],
        rocksdb_storage(true),
        Timeouts::default(),
    )
    .await
    .unwrap();
    let n2 = |c: &QuicCluster| running_node(c, 1);
    put(&n2(&c), put_request("ks", "k1", "a1", ""))
        .await
        .unwrap();
    put(&n2(&c), put_request("ks", "k2", "b1", ""))
        .await
        .unwrap();
    // The backup: a copy of n2's data directory taken now.
    c.stop(1).await;
    let data = c.configs[1].data_dir.clone();
    wait_closed(&data).await;
    let backup = dir.path().join("n2-backup");
    copy_dir(&data, &backup);
    c.restart(1).await.unwrap();
    let actor = n2(&c).replica_actor();
    for (key, value) in [("k1", "a2"), ("k2", "b2")] {
        let ctx = get(&n2(&c), "ks", key, Some(3)).await.context;
        put(&n2(&c), put_request("ks", key, value, &ctx))
            .await
            .unwrap();
    }
    // Restore the old copy: it holds the incarnation, but not a2's and b2's versions.
    c.stop(1).await;
    wait_closed(&data).await;
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    c.restart(1).await.unwrap();
    assert_eq!(
        n2(&c).replica_actor(),
        actor,
        "the restored copy holds the old incarnation"
    );
    // A read of k1 repairs n2's copy of k1, which reveals the loss.
    assert_eq!(values(&get(&n2(&c), "ks", "k1", Some(3)).await), vec!["a2"]);
    let mut waited = 0;
    while n2(&c).replica_actor() == actor && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_ne!(
        n2(&c).replica_actor(),
        actor,
        "the lost versions were not noticed"
    );
    // A blind write to the other key, which nothing has repaired yet.
    put(&n2(&c), put_request("ks", "k2", "b3", ""))
        .await
        .unwrap();
    for i in 0..3 {
        let o = local(&c, i, "ks", "k2").await.unwrap();
        let v = object_values(&o);
        assert!(v.contains(&"b3".to_string()), "replica n{}: {v:?}", i + 1);
    }
    assert_eq!(
        values(&get(&n2(&c), "ks", "k2", Some(3)).await),
        vec!["b2", "b3"]
    );
    // `quorumkv node --new-incarnation` (restored backups) forces a new one.
    let before = n2(&c).replica_actor();
    c.configs[1].new_incarnation = true;
    c.restart(1).await.unwrap();
    assert_ne!(n2(&c).replica_actor(), before);
    c.shutdown().await;
}

/// Wait until a stopped node's RocksDB has let go of its data directory (its last
/// references drop shortly after shutdown): opening the database succeeds only then.
async fn wait_closed(dir: &std::path::Path) {
    eventually(
        &format!("{} to be let go after the node stopped", dir.display()),
        Duration::from_secs(10),
        Duration::from_millis(100),
        move || async move { quorumkv::storage::RocksStorage::open(dir, true).map(drop) },
    )
    .await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
