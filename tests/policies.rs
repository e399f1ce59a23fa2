//! Split-brain behaviour of every conflict policy, in-process with the in-memory
//! network's partitions: writes on both sides, heal, read.

mod common;

use std::sync::Arc;

use common::{get_request, keyspace, put_request, values, Split, TIMEOUT};
use quorumkv::clock::{Clock, ManualClock};
use quorumkv::coordinator::CoordinatorError;
use quorumkv::inprocess::MemoryCluster;
use quorumkv::keyspace::{ConflictPolicy, KeyspaceDef};
use quorumkv::proto::{GetResponse, PutRequest};

const KEY: &str = "post:42";

/// Five nodes with manual clocks (returned, `n1`'s first) at the same time; KEY written
/// once with "original".
async fn setup(policy: ConflictPolicy) -> (Split, Vec<Arc<ManualClock>>) {
    let mut ks = keyspace("ks", policy, 3, 2, 2);
    // Whatever the policy, so that only the policy differs between these tests.
    ks.actor_priority = vec!["eu".into(), "us".into()];
    let clocks: Vec<Arc<ManualClock>> = (0..5)
        .map(|_| Arc::new(ManualClock::new(1_000_000)))
        .collect();
    let c = MemoryCluster::with_clocks(
        vec![ks],
        TIMEOUT,
        clocks.iter().map(|c| c.clone() as Arc<dyn Clock>).collect(),
    )
    .unwrap();
    let s = Split::new(c, KEY);
    let stamp = match policy {
        ConflictPolicy::LwwClient => (Some(1), None),
        ConflictPolicy::LwwActor => (None, Some("us")),
        _ => (None, None),
    };
    write(&s, &s.small, "original", stamp.0, stamp.1, Some(3))
        .await
        .unwrap();
    (s, clocks)
}

async fn write(
    s: &Split,
    via: &str,
    value: &str,
    ts: Option<u64>,
    actor: Option<&str>,
    w: Option<u8>,
) -> Result<(), CoordinatorError> {
    s.node(via)
        .put(PutRequest {
            w,
            timestamp: ts,
            actor: actor.map(str::to_string),
            ..put_request("ks", KEY, value, "")
        })
        .await
        .map(|_| ())
}

async fn read_all(s: &Split) -> GetResponse {
    s.node("n5")
        .get(get_request("ks", KEY, Some(3)))
        .await
        .unwrap()
}

fn clock_of<'a>(clocks: &'a [Arc<ManualClock>], name: &str) -> &'a ManualClock {
    let i: usize = name[1..].parse().unwrap();
    &clocks[i - 1]
}

/// Goal: `siblings` keeps both sides' writes after a heal.
#[tokio::test(start_paused = true)]
async fn siblings_keeps_both_sides() {
    let (s, _) = setup(ConflictPolicy::Siblings).await;
    s.split();
    write(&s, &s.small, "edit-a", None, None, Some(1))
        .await
        .unwrap();
    write(&s, &s.large, "edit-b", None, None, Some(1))
        .await
        .unwrap();
    s.c.net.heal();
    assert_eq!(
        values(&read_all(&s).await),
        vec!["edit-a", "edit-b", "original"]
    );
}

/// Goal: `lww-timestamp` keeps the later write after a heal and loses the other (by
/// design), whichever side it was on.
#[tokio::test(start_paused = true)]
async fn lww_timestamp_keeps_the_later_write() {
    let (s, clocks) = setup(ConflictPolicy::LwwTimestamp).await;
    s.split();
    clock_of(&clocks, &s.large).set(1_000_100);
    write(&s, &s.large, "earlier", None, None, Some(1))
        .await
        .unwrap();
    clock_of(&clocks, &s.small).set(1_000_200);
    write(&s, &s.small, "later", None, None, Some(1))
        .await
        .unwrap();
    s.c.net.heal();
    assert_eq!(values(&read_all(&s).await), vec!["later"]);
}

/// Goal: the HLC rule — a node whose wall clock is an hour slow still cannot write "into
/// the past" of a value it holds: its write is stamped after it and wins.
#[tokio::test(start_paused = true)]
async fn lww_timestamp_slow_clock_cannot_write_into_the_past() {
    let (s, clocks) = setup(ConflictPolicy::LwwTimestamp).await;
    clock_of(&clocks, &s.large).set(5_000_000);
    write(&s, &s.large, "from-the-fast-node", None, None, Some(3))
        .await
        .unwrap();
    // The small-side node's clock is far behind (1_000_000 ms vs 5_000_000 ms).
    write(&s, &s.small, "from-the-slow-node", None, None, Some(3))
        .await
        .unwrap();
    let g = read_all(&s).await;
    assert_eq!(
        values(&g),
        vec!["from-the-slow-node"],
        "the HLC must stamp it after the value it saw"
    );
}

/// Goal: `lww-actor` keeps the priority actor's write (eu over us), even though the us
/// write came later.
#[tokio::test(start_paused = true)]
async fn lww_actor_keeps_the_priority_actor() {
    let (s, clocks) = setup(ConflictPolicy::LwwActor).await;
    s.split();
    write(&s, &s.small, "eu-moderator", None, Some("eu"), Some(1))
        .await
        .unwrap();
    for c in &clocks {
        c.set(2_000_000);
    }
    write(&s, &s.large, "us-moderator", None, Some("us"), Some(1))
        .await
        .unwrap();
    s.c.net.heal();
    assert_eq!(values(&read_all(&s).await), vec!["eu-moderator"]);
}

/// Goal: `lww-client` keeps the highest client timestamp, not the last to arrive.
#[tokio::test(start_paused = true)]
async fn lww_client_keeps_the_highest_client_timestamp() {
    let (s, _) = setup(ConflictPolicy::LwwClient).await;
    s.split();
    write(&s, &s.small, "ts-300", Some(300), None, Some(1))
        .await
        .unwrap();
    write(&s, &s.large, "ts-200", Some(200), None, Some(1))
        .await
        .unwrap();
    s.c.net.heal();
    assert_eq!(values(&read_all(&s).await), vec!["ts-300"]);
    // A later write with a lower timestamp loses too (Cassandra's USING TIMESTAMP rule).
    write(&s, "n5", "ts-250", Some(250), None, Some(3))
        .await
        .unwrap();
    assert_eq!(values(&read_all(&s).await), vec!["ts-300"]);
}

/// Goal: writes that do not fit the policy are refused with a message that names it.
#[tokio::test(start_paused = true)]
async fn stamps_must_match_the_policy() {
    let (s, _) = setup(ConflictPolicy::LwwClient).await;
    let e = write(&s, "n1", "x", None, None, None).await.unwrap_err();
    assert!(e.to_string().contains("needs a client timestamp"), "{e}");
    let (s, _) = setup(ConflictPolicy::Siblings).await;
    let e = write(&s, "n1", "x", Some(5), None, None).await.unwrap_err();
    assert!(e.to_string().contains("only applies to lww-client"), "{e}");
    let e = write(&s, "n1", "x", None, Some("eu"), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only applies to lww-actor"), "{e}");
    let mut ks = KeyspaceDef::new("a", 3, 2, 2);
    ks.policy = ConflictPolicy::LwwActor;
    assert!(ks
        .validate(5)
        .unwrap_err()
        .to_string()
        .contains("actor_priority"));
}
