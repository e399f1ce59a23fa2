//! Writes the seed inputs of the fuzz targets (fuzz/seeds/TARGET/): real frames, stored
//! objects, contexts and keys as quorumkv produces them, so each fuzzer starts from inputs
//! that pass the outer checks instead of having to discover the format. The seeds are
//! committed; rerun after a format change:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds`.

use std::path::Path;

use quorumkv::causality::VersionVector;
use quorumkv::crdt::{self, CrdtOp, FieldOp};
use quorumkv::key::Key;
use quorumkv::keyspace::{ConflictPolicy, KeyspaceDef};
use quorumkv::object::Object;
use quorumkv::proto::{self, ClientRequest, GetRequest, Message, PeerRequest, PeerResponse};
use quorumkv::proto::{ClientResponse, GetResponse, PutRequest, Reply, SiblingView};
use quorumkv::replica::encode_object;
use serde_bytes::ByteBuf;

/// The bytes a sealed context authenticates (format byte, then the vector): what the
/// context decoder sees once a seal verified.
fn body(vv: &VersionVector) -> Vec<u8> {
    let mut b = vec![1u8];
    b.extend(rmp_serde::to_vec(&vv.0).expect("a version vector encodes"));
    b
}

/// A sealer under a fixed key, for request seeds carrying contexts.
fn sealer() -> quorumkv::context::ContextKey {
    quorumkv::context::ContextKey::from_bytes(b"fuzz cluster key")
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create the seed directory");
    std::fs::write(d.join(name), bytes).expect("write a seed");
}

fn crdt_states() -> Vec<(ConflictPolicy, Object)> {
    let b = |s: &str| ByteBuf::from(s.as_bytes().to_vec());
    let none = VersionVector::new();
    let cases = [
        (
            ConflictPolicy::Counter,
            vec![CrdtOp::CounterAdd(5), CrdtOp::CounterAdd(-2)],
        ),
        (
            ConflictPolicy::Set,
            vec![
                CrdtOp::SetAdd(vec![b("a"), b("b")]),
                CrdtOp::SetRemove(vec![b("a")]),
            ],
        ),
        (
            ConflictPolicy::Map,
            vec![
                CrdtOp::MapUpdate {
                    field: "name".into(),
                    op: FieldOp::RegisterWrite(b("ann")),
                },
                CrdtOp::MapUpdate {
                    field: "n".into(),
                    op: FieldOp::CounterAdd(3),
                },
                CrdtOp::MapUpdate {
                    field: "tags".into(),
                    op: FieldOp::SetAdd(vec![b("x")]),
                },
            ],
        ),
        (
            ConflictPolicy::Register,
            vec![CrdtOp::RegisterWrite(b("v"))],
        ),
    ];
    cases
        .into_iter()
        .map(|(policy, ops)| {
            let mut state = None;
            for (i, op) in ops.iter().enumerate() {
                let lead = if i % 2 == 0 { "n1" } else { "n2" };
                let ctx = if i == ops.len() - 1 {
                    crdt::context(&state)
                } else {
                    none.clone()
                };
                crdt::apply(policy, &mut state, lead, op, &ctx).expect("a seed operation applies");
            }
            (
                policy,
                Object {
                    crdt: state,
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let dir = Path::new(&dir);

    // Plain objects: siblings, a tombstone, last-write-wins stamps.
    let mut plain = Object::default();
    let fresh = "fresh objects have counters left";
    plain
        .apply_write("n1", &VersionVector::new(), Some(b"a".to_vec()), 1)
        .expect(fresh);
    plain
        .apply_write("n2", &VersionVector::new(), Some(b"b".to_vec()), 2)
        .expect(fresh);
    let ctx = plain.vv.clone();
    let mut replaced = plain.clone();
    replaced
        .apply_stamped_write("n3", &ctx, None, 3, 7, Some("eu".into()))
        .expect(fresh);
    let states = crdt_states();

    write(dir, "object_decode", "siblings", &encode_object(&plain));
    write(dir, "object_decode", "tombstone", &encode_object(&replaced));
    for (policy, o) in &states {
        write(dir, "object_decode", &policy.to_string(), &encode_object(o));
    }

    // Contexts: empty, a plain object's and a CRDT's.
    write(dir, "context_decode", "plain", &body(&plain.vv));
    write(dir, "context_decode", "replaced", &body(&replaced.vv));
    for (policy, o) in &states {
        write(
            dir,
            "context_decode",
            &policy.to_string(),
            &body(&crdt::context(&o.crdt)),
        );
    }

    // Keys: stored forms (a NUL in the partition, a sort key) and text forms.
    let k = Key {
        partition: b"p\0q".to_vec(),
        sort: b"s/1".to_vec(),
    };
    write(dir, "key_decode", "stored", &k.encode("ks"));
    write(
        dir,
        "key_decode",
        "stored-simple",
        &Key::simple("post1").encode("default"),
    );
    write(dir, "key_decode", "text", b"post1/comment/7");

    // Frames: client and peer requests and replies.
    let key = Key::parse("a/b");
    let ks = KeyspaceDef::new("default", 3, 2, 2);
    let frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "get",
            proto::encode(&Message::Client(ClientRequest::Get(GetRequest {
                keyspace: "default".into(),
                key: key.clone(),
                r: Some(2),
                trace: false,
                pr: None,
            }))),
        ),
        (
            "put",
            proto::encode(&Message::Client(ClientRequest::Put(PutRequest {
                keyspace: "default".into(),
                key: key.clone(),
                value: Some(b"v".to_vec()),
                context: sealer().seal("default", &Key::parse("k").encode("default"), &plain.vv),
                w: None,
                trace: true,
                if_context: true,
                timestamp: Some(5),
                actor: Some("eu".into()),
                pw: Some(1),
            }))),
        ),
        (
            "replicate",
            proto::encode(&Message::Peer {
                from: "n1".into(),
                req: PeerRequest::Replicate {
                    keyspace: ks.clone(),
                    key: key.clone(),
                    object: plain.clone(),
                },
            }),
        ),
        (
            "update",
            proto::encode(&Message::Peer {
                from: "n2".into(),
                req: PeerRequest::Update {
                    keyspace: ks.clone(),
                    key: key.clone(),
                    op: CrdtOp::MapUpdate {
                        field: "f".into(),
                        op: FieldOp::CounterAdd(1),
                    },
                    context: plain.vv.clone(),
                },
            }),
        ),
        (
            "get-reply",
            proto::encode(&Reply::Client(ClientResponse::Get(GetResponse {
                values: vec![SiblingView {
                    value: b"v".to_vec(),
                    dot: "n1:1".into(),
                    written_at_ms: 1,
                }],
                context: sealer().seal("default", &Key::parse("k").encode("default"), &plain.vv),
                tombstones: 0,
                crdt: None,
                trace: Vec::new(),
            }))),
        ),
        (
            "object-reply",
            proto::encode(&Reply::Peer(PeerResponse::Object(Some(
                states[2].1.clone(),
            )))),
        ),
    ];
    for (name, bytes) in frames {
        write(dir, "frame_decode", name, &bytes);
    }
}
