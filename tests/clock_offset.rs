//! The node's clock-offset fault hook (`ClientRequest::SetClockOffset`, the harness's
//! `clock-skew` nemesis) over real QUIC: refused unless the node's config allows it, and
//! when allowed, it moves the timestamps the node issues.

mod common;

use std::time::Duration;

use common::{client, rocksdb_storage, short_timeouts};
use quorumkv::client::{ClientError, RequestOptions};
use quorumkv::clock::{Clock, SystemClock};
use quorumkv::inprocess::QuicCluster;
use quorumkv::key::Key;
use quorumkv::keyspace::KeyspaceDef;

/// How far the test moves the clock: far beyond any scheduling delay.
const OFFSET_MS: i64 = 3_600_000;

/// Slack for the time between reading the test's clock and the node stamping a write.
const TOLERANCE_MS: i64 = 5_000;

/// The `written_at_ms` of the single value `key` holds, minus the test's clock now.
async fn written_at_minus_now(c: &std::sync::Arc<quorumkv::client::Client>, key: &str) -> i64 {
    let g = c
        .get("ks", Key::parse(key), &RequestOptions::default())
        .await
        .expect("read");
    assert_eq!(g.values.len(), 1, "{g:?}");
    g.values[0].written_at_ms as i64 - SystemClock.now_ms() as i64
}

/// Goal: a node whose node.toml lacks `[faults] allow_clock_offset = true` refuses
/// SetClockOffset with a message naming the setting; the same node restarted with it
/// accepts, reports the offset, and stamps a value written afterwards `written_at_ms`
/// about the offset ahead of real time (while one written before was not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_offset_is_refused_without_the_flag_and_moves_timestamps_with_it() {
    let dir = tempfile::tempdir().unwrap();
    // One node holding the only replica: it both coordinates and stamps every write.
    let mut c = QuicCluster::start(
        dir.path(),
        1,
        &[KeyspaceDef::new("ks", 1, 1, 1)],
        rocksdb_storage(true),
        short_timeouts(),
    )
    .await
    .expect("start cluster");
    assert!(!c.configs[0].faults.allow_clock_offset);

    let admin = client(&c);
    match admin.set_clock_offset(OFFSET_MS).await {
        Err(ClientError::Server { message, .. }) => {
            assert!(message.contains("allow_clock_offset"), "{message}")
        }
        other => panic!("expected a refusal naming allow_clock_offset, got {other:?}"),
    }
    let opts = RequestOptions::default();
    admin
        .put("ks", Key::parse("before"), Some(b"1".to_vec()), &opts)
        .await
        .expect("write before the offset");
    let before = written_at_minus_now(&admin, "before").await;
    assert!(
        before.abs() < TOLERANCE_MS,
        "unskewed write is {before} ms off"
    );
    admin.close().await;

    c.configs[0].faults.allow_clock_offset = true;
    c.restart(0).await.expect("restart with the flag");
    let admin = client(&c);
    let (node, ms) = common::eventually(
        "the restarted node to accept the offset",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || admin.set_clock_offset(OFFSET_MS),
    )
    .await;
    assert_eq!((node.as_str(), ms), ("n1", OFFSET_MS));
    admin
        .put("ks", Key::parse("after"), Some(b"2".to_vec()), &opts)
        .await
        .expect("write after the offset");
    let after = written_at_minus_now(&admin, "after").await;
    assert!(
        (after - OFFSET_MS).abs() < TOLERANCE_MS,
        "skewed write is {after} ms off, expected about {OFFSET_MS}"
    );

    // Offset 0 undoes it.
    let (_, ms) = admin.set_clock_offset(0).await.expect("reset the offset");
    assert_eq!(ms, 0);
    admin.close().await;
    c.shutdown().await;
}
