//! Tombstone reaping (issue 14): a tombstone is removed only once every replica holds the
//! same one for `tombstones.min_age_ms`, every member answers and no hint for the key is
//! outstanding — and deleted data never comes back. One test per resurrection scenario
//! the issue names (a delete during a partition, a stand-in whose tombstone outlives the
//! owners' reap — Riak's kv679 —, a delete followed at once by a re-create, a node down
//! for longer than `min_age`), and, for the two checks that carry the safety, the same
//! story with the check switched off (a re-introduced bug) showing the loss it prevents.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, get_request, object_values, put_request, values, TIMEOUT};
use quorumkv::config::{HintsConfig, TombstonesConfig};
use quorumkv::inprocess::{ClusterOptions, MemoryCluster};
use quorumkv::key::Key;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::node::Node;
use quorumkv::proto::PutRequest;
use quorumkv::replica::InjectedBugs;

/// Short enough for a test, long against the in-memory network's delays.
const MIN_AGE: Duration = Duration::from_millis(400);

fn options(hints: bool, bugs: InjectedBugs) -> ClusterOptions {
    ClusterOptions {
        hints: HintsConfig {
            enabled: hints,
            replay_interval_ms: 100,
            ..HintsConfig::default()
        },
        tombstones: TombstonesConfig {
            min_age_ms: MIN_AGE.as_millis() as u64,
            ..TombstonesConfig::default()
        },
        bugs,
        ..ClusterOptions::default()
    }
}

/// Five nodes, keyspace `ks` with N=3, R=2, W=2 (so a key has two nodes that are not its
/// replicas: stand-ins).
fn cluster(opts: ClusterOptions) -> MemoryCluster {
    MemoryCluster::with_options(5, vec![KeyspaceDef::new("ks", 3, 2, 2)], TIMEOUT, opts)
        .expect("cluster")
}

/// `key`'s three replicas, in preference order (the first one reaps it).
fn replicas(c: &MemoryCluster, key: &str) -> Vec<String> {
    c.nodes[0].ring().preference_list(key.as_bytes(), 3)
}

fn delete_request(key: &str, context: &str) -> PutRequest {
    PutRequest {
        value: None,
        ..put_request("ks", key, "", context)
    }
}

/// One reaping round on every node; how many tombstones were removed in all.
async fn reap_everywhere(c: &MemoryCluster) -> usize {
    let mut n = 0;
    for node in &c.nodes {
        n += node
            .reaper()
            .expect("reaping on")
            .round()
            .await
            .unwrap()
            .reaped;
    }
    n
}

/// What `node` holds for `key`: `None` (nothing), or its live values (empty: tombstones
/// only).
async fn copy(node: &Arc<Node>, key: &str) -> Option<Vec<String>> {
    node.local_object("ks", &Key::parse(key))
        .await
        .map(|o| object_values(&o))
}

async fn wait_copies(c: &MemoryCluster, nodes: &[String], key: &str, want: Option<Vec<String>>) {
    eventually(
        &format!("{nodes:?} to hold {want:?} for {key}"),
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let want = want.clone();
            async move {
                for n in nodes {
                    let got = copy(c.node(n), key).await;
                    if got != want {
                        return Err(format!("{n} holds {got:?}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
}

/// A client's read of `key` through `via` at R=3 (sorted live values).
async fn read(c: &MemoryCluster, via: &str, key: &str) -> Vec<String> {
    values(
        &c.node(via)
            .get(get_request("ks", key, Some(3)))
            .await
            .expect("read"),
    )
}

/// Write "old" to `key` through its first replica (the lead) and wait until all three
/// replicas hold it; returns the replicas and the write's answer.
async fn old_value_everywhere(
    c: &MemoryCluster,
    key: &str,
) -> (Vec<String>, quorumkv::proto::PutResponse) {
    let pl = replicas(c, key);
    let put = c
        .node(&pl[0])
        .put(put_request("ks", key, "old", ""))
        .await
        .unwrap();
    wait_copies(c, &pl, key, Some(vec!["old".into()])).await;
    (pl, put)
}

/// [`old_value_everywhere`], then delete it with the write's context and wait until all
/// three replicas hold the tombstone.
async fn write_then_delete_everywhere(c: &MemoryCluster, key: &str) -> Vec<String> {
    let (pl, put) = old_value_everywhere(c, key).await;
    let lead = c.node(&pl[0]);
    lead.put(delete_request(key, &put.context)).await.unwrap();
    wait_copies(c, &pl, key, Some(vec![])).await;
    pl
}

/// `key`'s tombstone has just reached the last of its replicas `pl`: young there, so kept;
/// reaped once `min_age` has passed, gone from every replica, and the old value never read
/// again (through the replica that last held it).
async fn reaped_only_after_min_age(c: &MemoryCluster, pl: &[String], key: &str) {
    assert_eq!(
        reap_everywhere(c).await,
        0,
        "young on the last replica to get it"
    );
    tokio::time::sleep(MIN_AGE + Duration::from_millis(100)).await;
    assert_eq!(reap_everywhere(c).await, 1);
    wait_copies(c, pl, key, None).await;
    assert!(read(c, &pl[2], key).await.is_empty(), "no resurrection");
}

/// Goal: the basic life of a tombstone — kept while younger than `min_age` on every
/// replica, removed from all three once old enough, after which the key reads as never
/// written and the reaper's own counters say so.
#[tokio::test]
async fn a_tombstone_every_replica_agrees_on_is_reaped_after_min_age() {
    let c = cluster(options(true, InjectedBugs::default()));
    let pl = write_then_delete_everywhere(&c, "k").await;
    assert_eq!(reap_everywhere(&c).await, 0, "too young to reap");
    tokio::time::sleep(MIN_AGE + Duration::from_millis(100)).await;
    assert_eq!(
        reap_everywhere(&c).await,
        1,
        "reaped once, by its first replica"
    );
    wait_copies(&c, &pl, "k", None).await;
    let g = c
        .node(&pl[1])
        .get(get_request("ks", "k", Some(3)))
        .await
        .unwrap();
    assert!(g.values.is_empty() && g.tombstones == 0, "{g:?}");
    let st = c.node(&pl[0]).reaper().unwrap().stats();
    assert_eq!((st.reaped, st.blocked_unreachable), (1, 0), "{st:?}");
    // Nothing is left to reap, and nothing comes back.
    assert_eq!(reap_everywhere(&c).await, 0);
}

/// Goal (scenario: a delete during a partition): a replica cut off during the delete
/// keeps the old value; while it cannot answer, nothing is reaped however old the
/// tombstone is; once healed it still holds the value, so nothing is reaped until it has
/// the tombstone too and has held it for `min_age` — and the value never comes back.
/// Hints are off, so only read repair brings it the tombstone.
#[tokio::test]
async fn a_delete_during_a_partition_is_reaped_only_after_the_cut_off_replica_has_it() {
    let c = cluster(options(false, InjectedBugs::default()));
    let (pl, put) = old_value_everywhere(&c, "p").await;
    let lead = c.node(&pl[0]);
    common::isolate(&c, &pl[2]);
    lead.put(delete_request("p", &put.context)).await.unwrap();
    tokio::time::sleep(MIN_AGE + Duration::from_millis(100)).await;
    assert_eq!(reap_everywhere(&c).await, 0, "a replica cannot answer");
    let st = lead.reaper().unwrap().stats();
    assert!(st.blocked_unreachable >= 1, "{st:?}");
    assert!(
        st.last_blocker.as_deref().unwrap_or("").contains(&pl[2]),
        "the blocker is named: {st:?}"
    );
    c.net.heal();
    assert_eq!(copy(c.node(&pl[2]), "p").await, Some(vec!["old".into()]));
    assert_eq!(
        reap_everywhere(&c).await,
        0,
        "the healed replica still holds the value"
    );
    // A read (R=3) repairs it; its tombstone is young there.
    assert!(read(&c, &pl[1], "p").await.is_empty());
    wait_copies(&c, &pl, "p", Some(vec![])).await;
    reaped_only_after_min_age(&c, &pl, "p").await;
}

/// Goal: the agreement check is what prevents resurrection. The same partition story
/// with the reaper trusting its own copy only (a re-introduced bug): the two replicas
/// that had the tombstone drop it, and the old value, back from the cut-off replica,
/// is read again.
#[tokio::test]
async fn without_the_agreement_check_the_deleted_value_comes_back() {
    let bugs = InjectedBugs {
        reap_without_agreement: true,
        ..InjectedBugs::default()
    };
    let c = cluster(options(false, bugs));
    let (pl, put) = old_value_everywhere(&c, "p").await;
    let lead = c.node(&pl[0]);
    common::isolate(&c, &pl[2]);
    lead.put(delete_request("p", &put.context)).await.unwrap();
    wait_copies(&c, &pl[..2], "p", Some(vec![])).await;
    tokio::time::sleep(MIN_AGE + Duration::from_millis(100)).await;
    c.net.heal();
    assert!(reap_everywhere(&c).await >= 1);
    assert_eq!(
        read(&c, &pl[0], "p").await,
        vec!["old".to_string()],
        "the deleted value is back: this is what the check prevents"
    );
}

/// Goal (scenario: a node down for longer than `min_age`): a replica that was down for
/// the delete and stays down well past `min_age` blocks reaping; when it returns, the
/// stand-in's hint brings it the tombstone (no client read), and only `min_age` after
/// that is the key reaped. The old value it held is never read again.
#[tokio::test]
async fn a_replica_down_longer_than_min_age_blocks_reaping_until_it_has_the_tombstone() {
    let c = cluster(options(true, InjectedBugs::default()));
    let (pl, put) = old_value_everywhere(&c, "d").await;
    let lead = c.node(&pl[0]);
    c.net.set_down(&pl[2], true);
    lead.put(delete_request("d", &put.context)).await.unwrap();
    tokio::time::sleep(3 * MIN_AGE).await;
    assert_eq!(reap_everywhere(&c).await, 0, "a replica is down");
    c.net.set_down(&pl[2], false);
    // Hint replay (every 100 ms) hands it the tombstone; no read.
    wait_copies(&c, &pl, "d", Some(vec![])).await;
    eventually(
        "the hint to be handed back and deleted",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            let held = common::total_hints(&c);
            if held == 0 {
                Ok(())
            } else {
                Err(format!("{held} hint(s) held"))
            }
        },
    )
    .await;
    reaped_only_after_min_age(&c, &pl, "d").await;
}

/// Goal (scenario: a delete followed at once by a re-create): the re-created value
/// replaces the tombstone everywhere and is never reaped, however long we wait; a
/// tombstone that a write lands on between the reaper's check and its removal is kept
/// (the removal is conditional on the exact copy).
#[tokio::test]
async fn a_delete_followed_at_once_by_a_re_create_keeps_the_new_value() {
    let c = cluster(options(true, InjectedBugs::default()));
    let pl = replicas(&c, "r");
    let lead = c.node(&pl[0]);
    let put = lead.put(put_request("ks", "r", "old", "")).await.unwrap();
    let del = lead.put(delete_request("r", &put.context)).await.unwrap();
    lead.put(put_request("ks", "r", "new", &del.context))
        .await
        .unwrap();
    wait_copies(&c, &pl, "r", Some(vec!["new".into()])).await;
    tokio::time::sleep(MIN_AGE + Duration::from_millis(100)).await;
    assert_eq!(reap_everywhere(&c).await, 0);
    assert_eq!(read(&c, &pl[1], "r").await, vec!["new".to_string()]);

    // A blind re-create right after the delete, through another coordinator.
    let pl2 = write_then_delete_everywhere(&c, "r2").await;
    c.node(&pl2[1])
        .put(put_request("ks", "r2", "again", ""))
        .await
        .unwrap();
    tokio::time::sleep(MIN_AGE + Duration::from_millis(100)).await;
    reap_everywhere(&c).await;
    assert_eq!(read(&c, &pl2[2], "r2").await, vec!["again".to_string()]);
}

/// Set up the kv679 story: `key` written and deleted through its first replica while
/// its third replica was down, so a stand-in holds the tombstone as a hint for it; the
/// third replica then gets the tombstone by a read's repair while the stand-in is cut
/// off from it. Returns (replicas, stand-in).
async fn stand_in_holding_a_tombstone(c: &MemoryCluster, key: &str) -> (Vec<String>, String) {
    let (pl, put) = old_value_everywhere(c, key).await;
    let lead = c.node(&pl[0]);
    c.net.set_down(&pl[2], true);
    lead.put(delete_request(key, &put.context)).await.unwrap();
    let holder = eventually(
        "a stand-in to hold the tombstone as a hint",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            c.nodes
                .iter()
                .find(|n| n.hint_stats().pending.contains_key(&pl[2]))
                .map(|n| n.name().to_string())
                .ok_or("no hint yet")
        },
    )
    .await;
    assert!(!pl.contains(&holder), "the hint is on a stand-in");
    c.net.cut(&holder, &pl[2]);
    c.net.set_down(&pl[2], false);
    assert!(read(c, &pl[0], key).await.is_empty());
    wait_copies(c, &pl, key, Some(vec![])).await;
    tokio::time::sleep(MIN_AGE + Duration::from_millis(100)).await;
    (pl, holder)
}

/// Goal (scenario: a stand-in whose tombstone outlives the owners' reap, Riak's kv679):
/// while a stand-in still holds the tombstone as a hint, the key is not reaped even
/// though all three replicas agree; once the hint is handed back it is. A key
/// re-created after the reap is then read back intact.
#[tokio::test]
async fn an_outstanding_hint_blocks_reaping_until_it_is_handed_back() {
    let c = cluster(options(true, InjectedBugs::default()));
    let (pl, holder) = stand_in_holding_a_tombstone(&c, "h").await;
    assert_eq!(reap_everywhere(&c).await, 0, "a hint is outstanding");
    let st = c.node(&pl[0]).reaper().unwrap().stats();
    assert!(st.blocked_hints >= 1, "{st:?}");
    c.net.heal();
    eventually(
        "the stand-in to hand its hint back",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            match c.node(&holder).hint_stats().pending.get(&pl[2]) {
                None => Ok(()),
                Some(p) if p.count == 0 => Ok(()),
                Some(p) => Err(format!("{p:?}")),
            }
        },
    )
    .await;
    // The replayed tombstone equals the one held: the age is not restarted.
    assert_eq!(reap_everywhere(&c).await, 1);
    wait_copies(&c, &pl, "h", None).await;
    c.node(&pl[0])
        .put(put_request("ks", "h", "reborn", ""))
        .await
        .unwrap();
    assert_eq!(read(&c, &pl[2], "h").await, vec!["reborn".to_string()]);
}

/// Replay the kv679 story with the hint check switched off: the key is reaped while the
/// stand-in still holds the old tombstone, re-created through its first replica, and
/// then the stand-in hands the old tombstone back. Returns what a read sees at the end.
async fn kv679_with(bugs: InjectedBugs) -> Vec<String> {
    let c = cluster(options(true, bugs));
    let (pl, _holder) = stand_in_holding_a_tombstone(&c, "h").await;
    assert!(reap_everywhere(&c).await >= 1, "reaped despite the hint");
    wait_copies(&c, &pl, "h", None).await;
    c.node(&pl[0])
        .put(put_request("ks", "h", "reborn", ""))
        .await
        .unwrap();
    wait_copies(&c, &pl, "h", Some(vec!["reborn".into()])).await;
    c.net.heal();
    // The old tombstone reaches the third replica by hint replay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    read(&c, &pl[1], "h").await
}

/// Goal: the reap floor is what keeps a re-created key safe from an old tombstone that
/// outlived the reap. With the hint check off (so the old tombstone does outlive it), the
/// re-created value survives the old tombstone's return; with the floor off as well, the
/// same story loses the acknowledged write — Riak's kv679.
#[tokio::test]
async fn the_reap_floor_keeps_a_re_created_key_safe_from_an_old_tombstone() {
    let no_hint_check = InjectedBugs {
        reap_without_agreement: true,
        ..InjectedBugs::default()
    };
    assert_eq!(kv679_with(no_hint_check).await, vec!["reborn".to_string()]);
    let no_floor = InjectedBugs {
        no_reap_floor: true,
        ..no_hint_check
    };
    assert_eq!(
        kv679_with(no_floor).await,
        Vec::<String>::new(),
        "without the floor the old tombstone covers the new write and erases it"
    );
}

/// A small seeded generator: a seed's choices repeat (the network's timing does not).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// One client's random reads, writes with context, blind writes and deletes on a few
/// keys while nodes are cut off at random (hints, read repair and anti-entropy all on,
/// reaping rounds run all along); then heal, let reaping finish, and check every key with
/// a quorum read of all three replicas. Two rules, by the dots the client saw:
/// - a version an acknowledged write or delete covered (its context held it) never
///   comes back — in particular not after its tombstone was reaped;
/// - a version acknowledged and never covered by any write or delete (acknowledged or
///   not) is still there.
///
/// Reads ask R replicas and one more only when needed (the default), or, with
/// `all_n_reads`, all N at once (`timeouts.speculative_read_ms = 0`): every read then
/// compares and repairs every replica, which spreads a wrongly kept version fastest.
///
/// Returns the tombstones reaped, or the first broken rule.
async fn deletes_under_faults(
    seed: u64,
    bugs: InjectedBugs,
    all_n_reads: bool,
) -> Result<u64, String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut opts = options(true, bugs);
    if all_n_reads {
        opts.speculative_read = Some(Duration::ZERO);
    }
    opts.anti_entropy = quorumkv::config::AntiEntropyConfig {
        interval_ms: 200,
        ..Default::default()
    };
    opts.run_anti_entropy = true;
    let c = cluster(opts);
    let names: Vec<String> = c.nodes.iter().map(|n| n.name().to_string()).collect();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let keys: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    // Dots name versions of one key: (key, dot).
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut maybe_covered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut acked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut isolated: Option<(String, std::time::Instant)> = None;
    for step in 0..160 {
        let now = std::time::Instant::now();
        if let Some((_, until)) = &isolated {
            if now >= *until {
                c.net.heal();
                isolated = None;
            }
        } else if rng.below(12) == 0 {
            let n = names[rng.below(names.len())].clone();
            common::isolate(&c, &n);
            let ms = 200 + rng.below(600) as u64;
            isolated = Some((n, now + Duration::from_millis(ms)));
        }
        if rng.below(8) == 0 {
            reap_everywhere(&c).await;
        }
        let key = &keys[rng.below(keys.len())];
        let via = loop {
            let n = &c.nodes[rng.below(c.nodes.len())];
            if isolated.as_ref().is_none_or(|(i, _)| i != n.name()) {
                break n;
            }
        };
        let Ok(read) = via.get(get_request("ks", key, None)).await else {
            continue;
        };
        let seen: Vec<(String, String)> = read
            .values
            .iter()
            .map(|s| (key.clone(), s.dot.clone()))
            .collect();
        let (req, with_context, is_put) = match rng.below(4) {
            0 => (delete_request(key, &read.context), true, false),
            1 => (put_request("ks", key, format!("b{step}"), ""), false, true),
            _ => (
                put_request("ks", key, format!("v{step}"), &read.context),
                true,
                true,
            ),
        };
        if with_context {
            maybe_covered.extend(seen.iter().cloned());
        }
        if let Ok(resp) = via.put(req).await {
            if with_context {
                covered.extend(seen);
            }
            if is_put {
                acked.entry(key.clone()).or_default().insert(resp.dot);
            }
        }
    }
    c.net.heal();
    // Let handoff, anti-entropy and reaping finish.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        reap_everywhere(&c).await;
    }
    for key in &keys {
        let g = eventually(
            &format!("a quorum read of {key}"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || c.nodes[0].get(get_request("ks", key, Some(3))),
        )
        .await;
        let dots: BTreeSet<(String, String)> = g
            .values
            .iter()
            .map(|s| (key.clone(), s.dot.clone()))
            .collect();
        if let Some((_, d)) = dots.iter().find(|d| covered.contains(*d)) {
            return Err(format!(
                "seed {seed}: {key}: version {d} came back after a write or delete covered it"
            ));
        }
        for d in acked.get(key).into_iter().flatten() {
            let v = (key.clone(), d.clone());
            if !maybe_covered.contains(&v) && !dots.contains(&v) {
                return Err(format!(
                    "seed {seed}: {key}: acknowledged version {d} is lost"
                ));
            }
        }
    }
    Ok(c.nodes
        .iter()
        .map(|n| n.reaper().unwrap().stats().reaped)
        .sum())
}

/// Goal: reaping under seeded random faults loses and resurrects nothing (see
/// [`deletes_under_faults`]), and does reap: over three seeds some tombstones go; with
/// reads asking R replicas (the default) and with reads asking all N.
#[tokio::test]
async fn reaping_under_random_faults_loses_and_resurrects_nothing() {
    let mut reaped = 0;
    for all_n_reads in [false, true] {
        for seed in 1..=3 {
            reaped += deletes_under_faults(seed, InjectedBugs::default(), all_n_reads)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert!(
        reaped > 0,
        "no tombstone was reaped: the test did not exercise reaping"
    );
}

/// Goal: the random-fault test above can fail. With the reaper trusting its own copy
/// (a re-introduced bug), some seed of 1–8 (the test stops at the first) shows a deleted
/// version coming back,
/// in the test's all-N-reads configuration: there every read repairs every replica, so
/// a wrongly kept version spreads within the run. (With reads asking R replicas the bug
/// still surfaces, but on fewer seeds: 2 of seeds 1–10 in one run, none of 1–3 in three.)
#[tokio::test]
async fn the_random_fault_test_finds_reaping_without_agreement() {
    let bugs = InjectedBugs {
        reap_without_agreement: true,
        ..InjectedBugs::default()
    };
    let mut found = Vec::new();
    for seed in 1..=8 {
        if let Err(e) = deletes_under_faults(seed, bugs, true).await {
            let came_back = e.contains("came back");
            found.push(e);
            if came_back {
                break;
            }
        }
    }
    assert!(
        found.iter().any(|e| e.contains("came back")),
        "no seed found the resurrection: {found:?}"
    );
}
