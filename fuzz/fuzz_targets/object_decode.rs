//! Stored objects: `replica::decode_object` reads every record back from the storage
//! engine, and the same `Object` type arrives from peers (replication, read repair). A
//! corrupt record must be refused with an error, and whatever is accepted must be safe to
//! use the way a replica and a coordinator use it: merged with itself and with a normal
//! object under every conflict policy, read as a client value, written to, and stored again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorumkv::causality::VersionVector;
use quorumkv::crdt::{CrdtOp, FieldOp};
use quorumkv::key::Key;
use quorumkv::keyspace::{ConflictPolicy, KeyspaceDef};
use quorumkv::object::Object;
use quorumkv::policy::LeadWrite;
use quorumkv::replica::{decode_object, encode_object};
use serde_bytes::ByteBuf;

const POLICIES: [ConflictPolicy; 8] = [
    ConflictPolicy::Siblings,
    ConflictPolicy::LwwTimestamp,
    ConflictPolicy::LwwActor,
    ConflictPolicy::LwwClient,
    ConflictPolicy::Counter,
    ConflictPolicy::Set,
    ConflictPolicy::Map,
    ConflictPolicy::Register,
];

/// One operation of each CRDT kind, as a lead would apply it to the stored state.
fn ops() -> Vec<CrdtOp> {
    let m = || vec![ByteBuf::from(b"m".to_vec())];
    vec![
        CrdtOp::CounterAdd(1),
        CrdtOp::SetAdd(m()),
        CrdtOp::SetRemove(m()),
        CrdtOp::RegisterWrite(ByteBuf::from(b"v".to_vec())),
        CrdtOp::MapUpdate {
            field: "f".into(),
            op: FieldOp::SetAdd(m()),
        },
        CrdtOp::MapUpdate {
            field: "f".into(),
            op: FieldOp::RegisterWrite(ByteBuf::from(b"v".to_vec())),
        },
        CrdtOp::MapUpdate {
            field: "f".into(),
            op: FieldOp::CounterAdd(-1),
        },
        CrdtOp::MapRemove { field: "f".into() },
    ]
}

fuzz_target!(|data: &[u8]| {
    let key = Key::simple("k");
    let Ok(stored) = decode_object(&key, data) else {
        return;
    };
    // Stored again, it reads back the same.
    let back = decode_object(&key, &encode_object(&stored)).expect("a decoded object re-encodes");
    assert_eq!(back, stored, "object changed in a round trip");

    let mut fresh = Object::default();
    fresh
        .apply_write("n1", &VersionVector::new(), Some(b"x".to_vec()), 1)
        .expect("a fresh object has counters left");
    for policy in POLICIES {
        let mut ks = KeyspaceDef::new("ks", 3, 2, 2);
        ks.policy = policy;
        ks.actor_priority = vec!["a".into(), "b".into()];
        let resolver = policy.resolver();
        // Replication and read repair: merges in both directions and with itself.
        let mut o = stored.clone();
        resolver.merge(&ks, &mut o, &stored);
        resolver.merge(&ks, &mut o, &fresh);
        let mut f = fresh.clone();
        resolver.merge(&ks, &mut f, &stored);
        // A read: the client's view and context.
        let _ = resolver.view(&ks, &o);
        let _ = resolver.visible(&o);
        let sealer = quorumkv::context::ContextKey::from_bytes(b"fuzz cluster key");
        let _ = sealer.seal("ks", b"k", &resolver.context(&o)).len();
        let _ = sealer.seal("ks", b"k", &o.vv).len();
        // The lead applying an operation to the stored state (refused, changing nothing,
        // where the policy holds no CRDT or another type).
        for op in ops() {
            let mut s = stored.clone();
            let ctx = resolver.context(&s);
            let _ = resolver.update(&ks, &mut s, "n1", &op, &ctx);
            let _ = resolver.update(&ks, &mut s, "n2", &op, &VersionVector::new());
        }
        // The lead writing to the stored object, with and without its context (the
        // replica lets only plain policies get here).
        if resolver.check_lead_write(&ks).is_ok() {
            let mut o = stored.clone();
            let ctx = o.vv.clone();
            // Refused, changing nothing, when the vector holds a lead's last counter.
            let blind = LeadWrite {
                lead: "n1",
                context: &VersionVector::new(),
                value: Some(vec![1]),
                now_ms: 2,
                ts: 2,
                actor: None,
            };
            let _ = resolver.write(&ks, &mut o, blind);
            let with_context = LeadWrite {
                lead: "n2",
                context: &ctx,
                value: None,
                now_ms: 3,
                ts: 3,
                actor: Some("a".into()),
            };
            let _ = resolver.write(&ks, &mut o, with_context);
        }
        let _ = encode_object(&o);
    }
});
