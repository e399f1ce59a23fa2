//! CRDT keyspaces under split-brain, in-process with the in-memory network: a replica of
//! the key is cut off from the rest, operations run on both sides with w=1, the network
//! heals and a read at r=3 shows what survived.

mod common;

use std::collections::BTreeMap;

use common::{
    batch_item, batch_request, get_request, keyspace, memory_cluster, put_request, update_request,
    Split,
};
use quorumkv::coordinator::CoordinatorError;
use quorumkv::keyspace::ConflictPolicy;
use quorumkv::node::error_response;
use quorumkv::proto::{CrdtOp, CrdtValue, ErrorKind, FieldOp};
use serde_bytes::ByteBuf;

const KEY: &str = "cart:7";

/// Five nodes; one keyspace per CRDT policy (named after it) plus a `plain` siblings one,
/// all with n=3.
fn setup() -> Split {
    let defs = [
        ("counter", ConflictPolicy::Counter),
        ("set", ConflictPolicy::Set),
        ("map", ConflictPolicy::Map),
        ("register", ConflictPolicy::Register),
        ("plain", ConflictPolicy::Siblings),
    ]
    .map(|(name, policy)| keyspace(name, policy, 3, 2, 2));
    Split::new(memory_cluster(5, defs), KEY)
}

fn b(x: &str) -> ByteBuf {
    ByteBuf::from(x.as_bytes().to_vec())
}

fn bs(xs: &[&str]) -> Vec<ByteBuf> {
    xs.iter().map(|x| b(x)).collect()
}

async fn update(
    s: &Split,
    via: &str,
    ks: &str,
    op: CrdtOp,
    context: &str,
    w: u8,
) -> Result<String, CoordinatorError> {
    s.node(via)
        .update(update_request(ks, KEY, op, context, Some(w)))
        .await
        .map(|u| u.context)
}

/// Read through `via` at r (the CRDT value and its context).
async fn read(s: &Split, via: &str, ks: &str, r: u8) -> (CrdtValue, String) {
    let g = s
        .node(via)
        .get(get_request(ks, KEY, Some(r)))
        .await
        .unwrap();
    (
        g.crdt.expect("a CRDT keyspace returns a CRDT value"),
        g.context,
    )
}

/// Goal: increments and decrements on both sides of a split all count after the heal.
#[tokio::test(start_paused = true)]
async fn counter_sums_both_sides() {
    let s = setup();
    update(&s, &s.small, "counter", CrdtOp::CounterAdd(5), "", 3)
        .await
        .unwrap();
    s.split();
    update(&s, &s.small, "counter", CrdtOp::CounterAdd(2), "", 1)
        .await
        .unwrap();
    update(&s, &s.large, "counter", CrdtOp::CounterAdd(10), "", 1)
        .await
        .unwrap();
    update(&s, &s.large, "counter", CrdtOp::CounterAdd(-3), "", 1)
        .await
        .unwrap();
    s.c.net.heal();
    assert_eq!(read(&s, "n5", "counter", 3).await.0, CrdtValue::Counter(14));
}

/// Goal: adds from both sides survive; a remove honours exactly the adds its reader
/// observed — an element re-added concurrently on the other side stays (add wins), an
/// observed element is removed.
#[tokio::test(start_paused = true)]
async fn set_is_add_wins_and_honours_observed_removes() {
    let s = setup();
    update(&s, &s.small, "set", CrdtOp::SetAdd(bs(&["a", "b"])), "", 3)
        .await
        .unwrap();
    let (seen, ctx) = read(&s, &s.small, "set", 3).await;
    assert_eq!(seen, CrdtValue::Set(bs(&["a", "b"])));
    s.split();
    // Small side: remove what it read, add "d".
    update(
        &s,
        &s.small,
        "set",
        CrdtOp::SetRemove(bs(&["a", "b"])),
        &ctx,
        1,
    )
    .await
    .unwrap();
    update(&s, &s.small, "set", CrdtOp::SetAdd(bs(&["d"])), "", 1)
        .await
        .unwrap();
    // Large side, concurrently: re-add "b", add "c".
    update(&s, &s.large, "set", CrdtOp::SetAdd(bs(&["b", "c"])), "", 1)
        .await
        .unwrap();
    s.c.net.heal();
    let (after, _) = read(&s, "n5", "set", 3).await;
    assert_eq!(after, CrdtValue::Set(bs(&["b", "c", "d"])));
    // A remove without any context removes nothing it did not observe.
    update(&s, "n5", "set", CrdtOp::SetRemove(bs(&["c"])), "", 3)
        .await
        .unwrap();
    assert_eq!(read(&s, "n5", "set", 3).await.0, after);
}

/// Goal: fields edited on different sides merge field by field; counters in fields sum,
/// sets in fields union, an observed field removal applies.
#[tokio::test(start_paused = true)]
async fn map_merges_fields_from_both_sides() {
    let s = setup();
    let up = |field: &str, op| CrdtOp::MapUpdate {
        field: field.into(),
        op,
    };
    update(
        &s,
        &s.small,
        "map",
        up("name", FieldOp::RegisterWrite(b("ann"))),
        "",
        3,
    )
    .await
    .unwrap();
    update(
        &s,
        &s.small,
        "map",
        up("old", FieldOp::RegisterWrite(b("x"))),
        "",
        3,
    )
    .await
    .unwrap();
    let (_, ctx) = read(&s, &s.small, "map", 3).await;
    s.split();
    update(
        &s,
        &s.small,
        "map",
        up("visits", FieldOp::CounterAdd(2)),
        "",
        1,
    )
    .await
    .unwrap();
    update(
        &s,
        &s.small,
        "map",
        up("tags", FieldOp::SetAdd(bs(&["x"]))),
        "",
        1,
    )
    .await
    .unwrap();
    update(
        &s,
        &s.small,
        "map",
        CrdtOp::MapRemove {
            field: "old".into(),
        },
        &ctx,
        1,
    )
    .await
    .unwrap();
    update(
        &s,
        &s.large,
        "map",
        up("email", FieldOp::RegisterWrite(b("a@x"))),
        "",
        1,
    )
    .await
    .unwrap();
    update(
        &s,
        &s.large,
        "map",
        up("visits", FieldOp::CounterAdd(3)),
        "",
        1,
    )
    .await
    .unwrap();
    update(
        &s,
        &s.large,
        "map",
        up("tags", FieldOp::SetAdd(bs(&["y"]))),
        "",
        1,
    )
    .await
    .unwrap();
    s.c.net.heal();
    let CrdtValue::Map(m) = read(&s, "n5", "map", 3).await.0 else {
        panic!("not a map");
    };
    let fields: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(fields, vec!["email", "name", "tags", "visits"]);
    assert_eq!(m["name"].register, bs(&["ann"]));
    assert_eq!(m["email"].register, bs(&["a@x"]));
    assert_eq!(m["visits"].counter, 5);
    assert_eq!(m["tags"].set, bs(&["x", "y"]));
    let _: &BTreeMap<_, _> = &m;
}

/// Goal: concurrent register writes on both sides are both kept; a write with the read's
/// context then replaces them.
#[tokio::test(start_paused = true)]
async fn register_keeps_both_concurrent_values() {
    let s = setup();
    update(
        &s,
        &s.small,
        "register",
        CrdtOp::RegisterWrite(b("original")),
        "",
        3,
    )
    .await
    .unwrap();
    s.split();
    update(
        &s,
        &s.small,
        "register",
        CrdtOp::RegisterWrite(b("left")),
        "",
        1,
    )
    .await
    .unwrap();
    update(
        &s,
        &s.large,
        "register",
        CrdtOp::RegisterWrite(b("right")),
        "",
        1,
    )
    .await
    .unwrap();
    s.c.net.heal();
    let (v, ctx) = read(&s, "n5", "register", 3).await;
    assert_eq!(v, CrdtValue::Register(bs(&["left", "right"])));
    update(
        &s,
        "n5",
        "register",
        CrdtOp::RegisterWrite(b("merged")),
        &ctx,
        3,
    )
    .await
    .unwrap();
    assert_eq!(
        read(&s, "n5", "register", 3).await.0,
        CrdtValue::Register(bs(&["merged"]))
    );
}

/// Goal: put and batch are refused on CRDT keyspaces, updates on plain keyspaces and
/// operations of another CRDT type are refused — all as invalid requests, storing nothing.
#[tokio::test(start_paused = true)]
async fn mismatched_requests_are_refused() {
    let s = setup();
    let n = s.node("n1");
    let put = n
        .put(put_request("counter", KEY, "1", ""))
        .await
        .unwrap_err();
    let batch = n
        .batch(batch_request("set", vec![batch_item(KEY, "1")], None))
        .await
        .unwrap_err();
    let plain = update(&s, "n1", "plain", CrdtOp::CounterAdd(1), "", 2)
        .await
        .unwrap_err();
    let wrong = update(&s, "n1", "counter", CrdtOp::SetAdd(bs(&["x"])), "", 2)
        .await
        .unwrap_err();
    for (e, needle) in [
        (put, "update it with CRDT operations"),
        (batch, "batch is not supported"),
        (plain, "not a CRDT policy"),
        (wrong, "does not apply to a counter keyspace"),
    ] {
        let resp = error_response(&e);
        assert_eq!(resp.kind, ErrorKind::InvalidRequest, "{e}");
        assert!(resp.message.contains(needle), "{}", resp.message);
    }
    assert_eq!(read(&s, "n1", "counter", 3).await.0, CrdtValue::Counter(0));
}
