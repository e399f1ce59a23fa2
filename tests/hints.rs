//! Sloppy quorum and hinted handoff (issue 14): stand-ins take a missing primary's copy
//! as a hint, count towards W but not towards `pw`, hand it back when the primary returns
//! (without any client read), keep it across a restart, and do nothing when switched off.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    eventually, get_request, object_values, put_request, rocksdb_storage, short_timeouts,
    total_hints, TIMEOUT,
};
use quorumkv::clock::{Clock, SystemClock};
use quorumkv::config::HintsConfig;
use quorumkv::coordinator::CoordinatorError;
use quorumkv::inprocess::{MemoryCluster, QuicCluster};
use quorumkv::key::Key;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::node::Node;
use quorumkv::object::Object;
use quorumkv::proto::{GetRequest, PutRequest};
use quorumkv::replica::{Replica, ReplicaOptions};
use quorumkv::storage::{MemoryStorage, Storage};

/// Hints replayed every 100 ms, so tests wait little.
fn fast_hints() -> HintsConfig {
    HintsConfig {
        replay_interval_ms: 100,
        ..HintsConfig::default()
    }
}

/// Five in-memory nodes with `hints`, defining `keyspaces`.
fn cluster(keyspaces: Vec<KeyspaceDef>, hints: HintsConfig) -> MemoryCluster {
    let clocks = (0..5)
        .map(|_| Arc::new(SystemClock) as Arc<dyn Clock>)
        .collect();
    MemoryCluster::with_hints(keyspaces, TIMEOUT, clocks, hints).expect("cluster")
}

fn strict(name: &str) -> KeyspaceDef {
    let mut k = KeyspaceDef::new(name, 3, 2, 2);
    k.sloppy_quorum = false;
    k
}

/// The first key `key0`, `key1`, … whose primaries are [`lead`, down1, down2]: the
/// coordinator is the lead, and the two others are to be taken down.
fn key_led_by(c: &MemoryCluster) -> (String, String, [String; 2]) {
    for i in 0.. {
        let k = format!("key{i}");
        let pl = c.nodes[0].ring().preference_list(k.as_bytes(), 3);
        if pl[0] == "n1" {
            return (k, pl[0].clone(), [pl[1].clone(), pl[2].clone()]);
        }
    }
    unreachable!()
}

/// Goal: a node down during a burst of writes gets every one of them back by hint replay
/// within seconds of returning, with no client read at all: its own stored copies (not
/// a coordinated read) end up holding each written value, and the hints are gone.
#[tokio::test]
async fn node_down_during_burst_gets_every_write_back_by_replay() {
    let c = cluster(vec![KeyspaceDef::new("ks", 3, 2, 2)], fast_hints());
    let down = "n3";
    c.net.set_down(down, true);
    let mut missed = Vec::new();
    for i in 0..60 {
        let key = format!("burst{i}");
        let pl = c.nodes[0].ring().preference_list(key.as_bytes(), 3);
        let via = c.nodes.iter().find(|n| n.name() != down).unwrap();
        via.put(put_request("ks", &key, format!("v{i}"), ""))
            .await
            .unwrap_or_else(|e| panic!("write {key}: {e}"));
        if pl.iter().any(|n| n == down) {
            missed.push((key, format!("v{i}")));
        }
    }
    assert!(
        missed.len() >= 10,
        "too few keys on {down}: {}",
        missed.len()
    );
    assert!(total_hints(&c) >= missed.len() as u64);
    let back = tokio::time::Instant::now();
    c.net.set_down(down, false);
    let n3 = Arc::clone(c.node(down));
    eventually(
        "every missed write on n3",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let (n3, missed) = (Arc::clone(&n3), missed.clone());
            async move {
                for (key, value) in &missed {
                    let copy = n3.local_object("ks", &Key::parse(key)).await;
                    if copy.as_ref().map(object_values) != Some(vec![value.clone()]) {
                        return Err(format!("{key}: {copy:?}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    let took = back.elapsed();
    eprintln!(
        "n3 got {} missed writes back by hint replay in {took:?}",
        missed.len()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    eventually(
        "hints deleted after replay",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let left = total_hints(&c);
            async move {
                if left == 0 {
                    Ok(())
                } else {
                    Err(format!("{left} left"))
                }
            }
        },
    )
    .await;
    let replayed: u64 = c.nodes.iter().map(|n| n.hint_stats().replayed).sum();
    assert!(replayed >= missed.len() as u64);
}

/// Goal: with N=3, W=2 and two of the key's primaries down, a write succeeds through a
/// stand-in (which then holds a hint); the same write with pw=2 fails, as does one to a
/// keyspace with `sloppy_quorum = false`, both with quorum not reached.
#[tokio::test]
async fn sloppy_write_succeeds_via_stand_in_but_not_with_pw_or_strict() {
    let c = cluster(
        vec![KeyspaceDef::new("ks", 3, 2, 2), strict("strict")],
        fast_hints(),
    );
    let (key, lead, [d1, d2]) = key_led_by(&c);
    c.net.set_down(&d1, true);
    c.net.set_down(&d2, true);
    let n1 = c.node(&lead);
    n1.put(put_request("ks", &key, "sloppy", ""))
        .await
        .expect("a sloppy write with two primaries down");
    assert!(
        total_hints(&c) >= 2,
        "the stand-in(s) and lead hold no hint"
    );
    let held_by_stand_in = c
        .nodes
        .iter()
        .any(|n| n.name() != lead && n.hint_stats().pending.keys().any(|t| *t == d1 || *t == d2));
    assert!(held_by_stand_in, "no stand-in holds a hint");

    let with_pw = n1
        .put(PutRequest {
            pw: Some(2),
            ..put_request("ks", &key, "needs two primaries", "")
        })
        .await;
    assert!(
        matches!(
            with_pw,
            Err(CoordinatorError::QuorumNotReached {
                needed: 2,
                got: 1,
                ..
            })
        ),
        "{with_pw:?}"
    );
    let strict = n1.put(put_request("strict", &key, "strict", "")).await;
    assert!(
        matches!(
            strict,
            Err(CoordinatorError::QuorumNotReached {
                needed: 2,
                got: 1,
                ..
            })
        ),
        "{strict:?}"
    );
    // pr counts primaries only: one is up.
    let read = n1
        .get(GetRequest {
            r: Some(1),
            pr: Some(2),
            ..get_request("ks", &key, None)
        })
        .await;
    assert!(
        matches!(read, Err(CoordinatorError::QuorumNotReached { .. })),
        "{read:?}"
    );
    n1.get(get_request("ks", &key, Some(1)))
        .await
        .expect("r=1 read");
}

/// Goal: with `hints.enabled = false` writes behave as before hints: no stand-ins (the
/// two-primaries-down write fails) and no node stores a hint, even for a write that
/// succeeds while one primary is down.
#[tokio::test]
async fn hints_disabled_means_no_stand_ins_and_no_hints() {
    let off = HintsConfig {
        enabled: false,
        ..HintsConfig::default()
    };
    let c = cluster(vec![KeyspaceDef::new("ks", 3, 2, 2)], off);
    let (key, lead, [d1, d2]) = key_led_by(&c);
    c.net.set_down(&d1, true);
    c.node(&lead)
        .put(put_request("ks", &key, "one down", ""))
        .await
        .expect("w=2 with one primary down");
    c.net.set_down(&d2, true);
    let r = c
        .node(&lead)
        .put(put_request("ks", &key, "two down", ""))
        .await;
    assert!(
        matches!(
            r,
            Err(CoordinatorError::QuorumNotReached {
                needed: 2,
                got: 1,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(total_hints(&c), 0);
}

/// The lead's object after each write of a key's history, captured from its replica:
/// a chain a → b → c (each written with the previous read's context) and d, written
/// blind (concurrent with all of them).
async fn history() -> (KeyspaceDef, Key, Vec<Object>) {
    let ks = KeyspaceDef::new("ks", 3, 2, 2);
    let c = MemoryCluster::new(3, vec![ks.clone()], TIMEOUT).unwrap();
    let n1: &Arc<Node> = c.node("n1");
    let key = Key::parse("k");
    let mut objects = Vec::new();
    let mut ctx = String::new();
    for v in ["a", "b", "c"] {
        ctx = n1
            .put(put_request("ks", "k", v, &ctx))
            .await
            .unwrap()
            .context;
        objects.push(n1.local_object("ks", &key).await.unwrap());
    }
    c.node("n2")
        .put(put_request("ks", "k", "d", ""))
        .await
        .unwrap();
    objects.push(c.node("n2").local_object("ks", &key).await.unwrap());
    (ks, key, objects)
}

fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, *first);
            out.push(p);
        }
    }
    out
}

/// Goal: replaying hints (merges into the owner's replica, as `Replicate` does) in every
/// order, and each with the first hint replayed a second time at the end, leaves the
/// same stored object — the two live versions `c` and `d`, no false sibling.
#[tokio::test]
async fn hint_replay_in_any_order_or_twice_gives_the_same_state() {
    let (ks, key, objects) = history().await;
    let mut reference: Option<Object> = None;
    for order in permutations(&[0, 1, 2, 3]) {
        for twice in [false, true] {
            let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
            let env: Arc<dyn quorumkv::env::Env> = quorumkv::env::TokioEnv::system();
            let owner = Replica::new("n9", storage, env, ReplicaOptions::default()).unwrap();
            let mut replay = order.clone();
            if twice {
                replay.push(order[0]);
            }
            for i in replay {
                owner.merge(&ks, &key, objects[i].clone()).await.unwrap();
            }
            let state = owner.read(&ks, &key).await.unwrap().unwrap();
            assert_eq!(object_values(&state), vec!["c", "d"], "order {order:?}");
            match &reference {
                None => reference = Some(state),
                Some(r) => assert_eq!(&state, r, "order {order:?}, twice {twice}"),
            }
        }
    }
}

/// Goal: a stand-in holding hints that is stopped and started again (its RocksDB
/// reopened) still holds them, and hands them back: the primaries that were down when
/// the write happened get it with no client read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_in_restart_keeps_hints() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyspaceDef::new("ks", 2, 1, 2);
    let mut c = QuicCluster::start(
        dir.path(),
        3,
        &[ks],
        rocksdb_storage(true),
        short_timeouts(),
    )
    .await
    .unwrap();
    let node = |c: &QuicCluster, i: usize| Arc::clone(&c.nodes[i].as_ref().unwrap().node);
    let names: Vec<String> = (0..3).map(|i| node(&c, i).name().to_string()).collect();
    // A key whose primaries are [node 0, X]; the third node is the stand-in.
    let (key, down, stand_in) = (0..)
        .find_map(|i| {
            let k = format!("key{i}");
            let pl = node(&c, 0).ring().preference_list(k.as_bytes(), 3);
            (pl[0] == names[0]).then(|| {
                let idx = |n: &str| names.iter().position(|m| m == n).unwrap();
                (k, idx(&pl[1]), idx(&pl[2]))
            })
        })
        .unwrap();
    c.stop(down).await;
    node(&c, 0)
        .put(put_request("ks", &key, "kept", ""))
        .await
        .expect("w=2 through the stand-in");
    let held = node(&c, stand_in).hint_stats();
    assert_eq!(held.pending.get(&names[down]).map(|p| p.count), Some(1));
    c.restart(stand_in).await.unwrap();
    let held = node(&c, stand_in).hint_stats();
    assert_eq!(
        held.pending.get(&names[down]).map(|p| p.count),
        Some(1),
        "hint lost across the restart"
    );
    c.restart(down).await.unwrap();
    let owner = node(&c, down);
    eventually(
        "the hint replayed to its owner",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let owner = Arc::clone(&owner);
            let key = key.clone();
            async move {
                match owner.local_object("ks", &Key::parse(&key)).await {
                    Some(o) if object_values(&o) == vec!["kept"] => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    c.shutdown().await;
}

/// Goal: a batch gets the same sloppy quorum as a single key. With two of a partition's
/// primaries down, a W=2 batch succeeds through a stand-in; the batch is held as one hint
/// per missing primary (not one per item); when the primaries return, each receives the
/// whole batch by replay, with no client read — every item on each replica's own copy.
#[tokio::test]
async fn a_batch_is_written_through_a_stand_in_and_handed_back_whole() {
    let c = cluster(vec![KeyspaceDef::new("ks", 3, 2, 2)], fast_hints());
    let (key, lead, [d1, d2]) = key_led_by(&c);
    c.net.set_down(&d1, true);
    c.net.set_down(&d2, true);
    let items = (0..5)
        .map(|i| common::batch_item(&format!("{key}/item{i}"), format!("b{i}")))
        .collect();
    c.node(&lead)
        .batch(common::batch_request("ks", items, None))
        .await
        .expect("a sloppy batch with two primaries down");
    let held: u64 = c
        .nodes
        .iter()
        .flat_map(|n| {
            n.hint_stats()
                .pending
                .into_iter()
                .filter(|(t, _)| *t == d1 || *t == d2)
                .map(|(_, p)| p.count)
        })
        .sum();
    assert_eq!(
        held, 2,
        "one hint record per missing primary, not one per item"
    );
    c.net.set_down(&d1, false);
    c.net.set_down(&d2, false);
    for owner in [&d1, &d2] {
        let node = Arc::clone(c.node(owner));
        let key = key.clone();
        eventually(
            &format!("{owner} to hold the whole batch"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                let (node, key) = (Arc::clone(&node), key.clone());
                async move {
                    for i in 0..5 {
                        let k = Key::parse(&format!("{key}/item{i}"));
                        let got = node.local_object("ks", &k).await.map(|o| object_values(&o));
                        if got != Some(vec![format!("b{i}")]) {
                            return Err(format!("item{i}: {got:?}"));
                        }
                    }
                    Ok(())
                }
            },
        )
        .await;
    }
}
