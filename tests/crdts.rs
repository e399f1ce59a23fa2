//! CRDT keyspaces under split-brain, in-process with the in-memory network: a replica of
//! the key is cut off from the rest, operations run on both sides with w=1, the network
//! heals and a read at r=3 shows what survived.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quorumkv::coordinator::CoordinatorError;
use quorumkv::inprocess::MemoryCluster;
use quorumkv::key::Key;
use quorumkv::keyspace::{ConflictPolicy, KeyspaceDef};
use quorumkv::node::{error_response, Node};
use quorumkv::proto::{
    BatchItem, BatchRequest, CrdtOp, CrdtValue, ErrorKind, FieldOp, GetRequest, PutRequest,
    UpdateRequest,
};
use serde_bytes::ByteBuf;

const TIMEOUT: Duration = Duration::from_millis(500);
const KEY: &str = "cart:7";

struct Split {
    c: MemoryCluster,
    /// A replica of KEY alone on one side, and a replica on the other side.
    small: String,
    large: String,
}

/// Five nodes; one keyspace per CRDT policy (named after it) plus a `plain` siblings one,
/// all with n=3.
fn setup() -> Split {
    let mut defs = Vec::new();
    for (name, policy) in [
        ("counter", ConflictPolicy::Counter),
        ("set", ConflictPolicy::Set),
        ("map", ConflictPolicy::Map),
        ("register", ConflictPolicy::Register),
        ("plain", ConflictPolicy::Siblings),
    ] {
        let mut ks = KeyspaceDef::new(name, 3, 2, 2);
        ks.policy = policy;
        defs.push(ks);
    }
    let c = MemoryCluster::new(5, defs, TIMEOUT).unwrap();
    let pl = c.node("n1").ring().preference_list(KEY.as_bytes(), 3);
    Split {
        c,
        small: pl[0].clone(),
        large: pl[1].clone(),
    }
}

fn node<'a>(s: &'a Split, name: &str) -> &'a Arc<Node> {
    s.c.node(name)
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
    node(s, via)
        .update(UpdateRequest {
            keyspace: ks.into(),
            key: Key::parse(KEY),
            op,
            context: context.to_string(),
            w: Some(w),
            trace: false,
        })
        .await
        .map(|u| u.context)
}

/// Read through `via` at r (the CRDT value and its context).
async fn read(s: &Split, via: &str, ks: &str, r: u8) -> (CrdtValue, String) {
    let g = node(s, via)
        .get(GetRequest {
            keyspace: ks.into(),
            key: Key::parse(KEY),
            r: Some(r),
            trace: false,
        })
        .await
        .unwrap();
    (
        g.crdt.expect("a CRDT keyspace returns a CRDT value"),
        g.context,
    )
}

/// Cut the small side's replica off from everyone.
fn split(s: &Split) {
    let others: Vec<&str> = ["n1", "n2", "n3", "n4", "n5"]
        .into_iter()
        .filter(|n| *n != s.small)
        .collect();
    s.c.net.partition(&[s.small.as_str()], &others);
}

/// Goal: increments and decrements on both sides of a split all count after the heal.
#[tokio::test(start_paused = true)]
async fn counter_sums_both_sides() {
    let s = setup();
    update(&s, &s.small, "counter", CrdtOp::CounterAdd(5), "", 3)
        .await
        .unwrap();
    split(&s);
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
    split(&s);
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
    split(&s);
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
    split(&s);
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
    let n = node(&s, "n1");
    let put = n
        .put(PutRequest {
            keyspace: "counter".into(),
            key: Key::parse(KEY),
            value: Some(b"1".to_vec()),
            context: String::new(),
            w: None,
            trace: false,
            if_context: false,
            timestamp: None,
            actor: None,
        })
        .await
        .unwrap_err();
    let batch = n
        .batch(BatchRequest {
            keyspace: "set".into(),
            items: vec![BatchItem {
                key: Key::parse(KEY),
                value: Some(b"1".to_vec()),
                context: String::new(),
            }],
            w: None,
            trace: false,
        })
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
