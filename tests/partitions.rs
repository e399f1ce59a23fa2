//! Colocated partitions and conditional writes: ordered scans with paging, atomic
//! per-partition batches, the post-and-comments causality guarantee, and `if-context`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{batch_item, batch_request, get_request, memory_cluster, put_request, scan_request};
use quorumkv::coordinator::CoordinatorError;
use quorumkv::inprocess::MemoryCluster;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::node::Node;
use quorumkv::proto::{BatchItem, PutRequest, ScanResponse};

/// Three nodes with keyspace `ks` (N=3 R=2 W=2), the cluster of every test here.
fn cluster() -> MemoryCluster {
    memory_cluster(3, [KeyspaceDef::new("ks", 3, 2, 2)])
}

async fn batch(
    node: &Arc<Node>,
    items: Vec<BatchItem>,
    w: Option<u8>,
) -> Result<Vec<String>, CoordinatorError> {
    node.batch(batch_request("ks", items, w))
        .await
        .map(|b| b.dots)
}

async fn scan(
    node: &Arc<Node>,
    partition: &str,
    from: &[u8],
    limit: u32,
    r: Option<u8>,
) -> ScanResponse {
    node.scan(scan_request("ks", partition, from, limit, r))
        .await
        .unwrap()
}

fn sorts(s: &ScanResponse) -> Vec<String> {
    s.items
        .iter()
        .map(|i| String::from_utf8_lossy(&i.sort).to_string())
        .collect()
}

/// Goal: a scan returns a partition's items in sort order, only that partition's, and
/// pages through them with `next` without skipping or repeating an item.
#[tokio::test(start_paused = true)]
async fn scan_is_ordered_and_pages() {
    let c = cluster();
    let mut items: Vec<BatchItem> = (0..25)
        .rev()
        .map(|i| batch_item(&format!("post1/c{i:02}"), format!("comment {i}")))
        .collect();
    items.push(batch_item("post1", "the post"));
    batch(c.node("n1"), items, None).await.unwrap();
    batch(
        c.node("n2"),
        vec![batch_item("post2/c00", "other partition")],
        None,
    )
    .await
    .unwrap();
    let all = scan(c.node("n3"), "post1", b"", 1000, None).await;
    let expected: Vec<String> = std::iter::once(String::new())
        .chain((0..25).map(|i| format!("c{i:02}")))
        .collect();
    assert_eq!(
        sorts(&all),
        expected,
        "post first (empty sort key), then comments in order"
    );
    assert!(all.next.is_none());
    let mut seen = Vec::new();
    let mut from = Vec::new();
    for _ in 0..10 {
        let page = scan(c.node("n2"), "post1", &from, 7, None).await;
        assert!(page.items.len() <= 7);
        seen.extend(sorts(&page));
        match page.next {
            Some(n) => from = n.into_vec(),
            None => break,
        }
    }
    assert_eq!(seen, expected, "paging must visit every item exactly once");
}

/// Goal: a batch spanning two partitions is refused with a clear error and writes nothing.
#[tokio::test(start_paused = true)]
async fn cross_partition_batch_is_refused() {
    let c = cluster();
    let e = batch(
        c.node("n1"),
        vec![batch_item("post1/a", "x"), batch_item("post2/b", "y")],
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, CoordinatorError::CrossPartitionBatch { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("must stay within one partition"),
        "{e}"
    );
    assert!(scan(c.node("n1"), "post1", b"", 10, Some(3))
        .await
        .items
        .is_empty());
    let e = batch(c.node("n1"), vec![], None).await.unwrap_err();
    assert!(matches!(e, CoordinatorError::EmptyBatch), "{e}");
}

/// Goal (the seed's causality violation): a post and its comments written in one batch
/// are never seen apart by concurrent scanners on any node — even while one replica lags
/// (its link from the writer is cut) and catches up through scan read repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_never_seen_half_applied() {
    let c = Arc::new(cluster());
    // n3 lags: it does not get the writer's replication.
    c.net.cut_one_way("n1", "n3");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut scanners = Vec::new();
    for (i, node) in ["n1", "n2", "n3"].iter().enumerate() {
        let (c, stop, node) = (Arc::clone(&c), Arc::clone(&stop), node.to_string());
        scanners.push(tokio::spawn(async move {
            let mut observed = 0usize;
            let mut scans = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && scans < 5000 {
                for p in 0..5 {
                    let partition = format!("post{p}");
                    let r = Some(1 + (i % 2) as u8);
                    let s = scan(c.node(&node), &partition, b"", 100, r).await;
                    let n = s.items.len();
                    assert!(
                        n == 0 || n == 4,
                        "{node} saw {n} of 4 items of {partition}: {:?}",
                        sorts(&s)
                    );
                    observed += usize::from(n == 4);
                }
                scans += 1;
                tokio::task::yield_now().await;
            }
            observed
        }));
    }
    for p in 0..5 {
        let items = vec![
            batch_item(&format!("post{p}"), "post body"),
            batch_item(&format!("post{p}/c1"), "first!"),
            batch_item(&format!("post{p}/c2"), "reply"),
            batch_item(&format!("post{p}/c3"), "reply to reply"),
        ];
        batch(c.node("n1"), items, Some(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if p == 2 {
            c.net.heal();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for s in scanners {
        total += s.await.expect("a scanner saw a half-applied batch");
    }
    assert!(total > 0, "scanners never saw the batches at all");
    // After repair every replica holds every partition whole.
    for p in 0..5 {
        for n in ["n1", "n2", "n3"] {
            let s = scan(c.node(n), &format!("post{p}"), b"", 100, Some(3)).await;
            assert_eq!(s.items.len(), 4);
        }
    }
}

/// Goal: `if-context` writes succeed when nothing changed since the read and fail with a
/// conflict when someone else wrote in between.
#[tokio::test(start_paused = true)]
async fn conditional_write_detects_change() {
    let c = cluster();
    let put = |node: &Arc<Node>, value: &str, context: String, if_context: bool| {
        let node = Arc::clone(node);
        let req = PutRequest {
            w: Some(3),
            if_context,
            ..put_request("ks", "counter", value, &context)
        };
        async move { node.put(req).await }
    };
    let get = |node: &Arc<Node>| {
        let node = Arc::clone(node);
        async move {
            node.get(get_request("ks", "counter", Some(3)))
                .await
                .unwrap()
        }
    };
    put(c.node("n1"), "1", String::new(), false).await.unwrap();
    let seen = get(c.node("n2")).await.context;
    put(c.node("n2"), "2", seen.clone(), true)
        .await
        .expect("unchanged key: conditional write succeeds");
    // `seen` is now stale: a second conditional write with it must be refused.
    let e = put(c.node("n3"), "2-again", seen, true).await.unwrap_err();
    assert!(matches!(e, CoordinatorError::Conflict(_)), "{e}");
    assert!(
        e.to_string()
            .contains("has changed since the context was read"),
        "{e}"
    );
    let g = get(c.node("n1")).await;
    assert_eq!(g.values.len(), 1);
    assert_eq!(g.values[0].value, b"2");
}

/// Goal: a scan page is bounded in bytes as well as items: with values of 900 KiB, a
/// page asked for 1000 items stops at `limits.max_reply_bytes` (4 MiB by default) with
/// `next` set, and paging on from `next` still visits every item exactly once, in order.
#[tokio::test(start_paused = true)]
async fn scan_pages_are_bounded_in_bytes() {
    let c = cluster();
    let big = "x".repeat(900 << 10);
    for i in 0..20 {
        batch(
            c.node("n1"),
            vec![batch_item(&format!("big/c{i:02}"), &big)],
            None,
        )
        .await
        .unwrap();
    }
    let expected: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
    let mut seen = Vec::new();
    let mut from = Vec::new();
    let mut pages = 0;
    loop {
        let page = scan(c.node("n2"), "big", &from, 1000, None).await;
        pages += 1;
        let bytes: usize = page
            .items
            .iter()
            .flat_map(|i| i.values.iter().map(|v| v.value.len()))
            .sum();
        assert!(
            bytes <= 4 << 20,
            "page {pages} carries {bytes} bytes of values, over the 4 MiB reply limit"
        );
        seen.extend(sorts(&page));
        match page.next {
            Some(n) => from = n.into_vec(),
            None => break,
        }
        assert!(pages < 20, "paging does not progress");
    }
    assert_eq!(seen, expected, "paging must visit every item exactly once");
    assert!(
        pages >= 5,
        "20 items of 900 KiB need at least 5 pages of 4 MiB, got {pages}"
    );
}
