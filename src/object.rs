//! The stored object: everything a replica keeps for one key — the dotted siblings, the
//! version vector that summarises them, and, in CRDT keyspaces, the CRDT state.
//!
//! Plain writes follow the dotted-version-vector design ([`crate::causality`]): every
//! stored value (a *sibling*) carries exactly one dot, the event that wrote it, and the
//! object's version vector summarises every event it has seen.
//!
//! Why not a plain vector clock per sibling, with the coordinator as actor? Because a
//! coordinator that does not read the key first cannot tell two concurrent blind writes
//! apart: both would get `{coord: c+1}` and one would silently win. Here the dot is issued
//! by a *replica* that serialises writes to the key ([`Object::apply_write`]); the counter is
//! one more than any event that replica has issued for the key, so dots never repeat and a
//! context covers exactly the events a client saw.
//!
//! The laws (checked by property tests below): [`Object::merge`] is commutative,
//! associative and idempotent; a write with context `C` removes exactly the siblings whose
//! dots `C` covers and keeps every other one. What a keyspace's conflict policy does on top
//! (last-write-wins, CRDT joins) is [`crate::policy`].
//!
//! The object sits above both [`crate::causality`] and [`crate::crdt`] (it holds a dotted
//! history and a CRDT state), so neither of them depends on it. Its encoding is what
//! replicas store (`replica::encode_object`) and send each other: a MessagePack map of
//! `vv`, `siblings` and, only when present, `crdt`. The golden test below pins the bytes,
//! so data stored by earlier builds keeps decoding.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use serde::{Deserialize, Serialize};

use crate::causality::{CausalityError, Dot, VersionVector};
use crate::crdt::CrdtState;

/// One stored version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The write event that created this version.
    pub dot: Dot,
    /// The value, or `None` for a tombstone (a delete is a write like any other, so it
    /// obeys the same causality rules and cannot be undone by a stale replica).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Wall-clock milliseconds at the issuing replica; informational ("last modified").
    pub written_at_ms: u64,
    /// Ordering timestamp for last-write-wins keyspaces: the lead's hybrid logical clock
    /// (µs), or the client's timestamp in `lww-client` keyspaces. Siblings keyspaces
    /// ignore it.
    #[serde(default)]
    pub ts: u64,
    /// The client-named actor of the write (`lww-actor` keyspaces).
    #[serde(default)]
    pub actor: Option<String>,
}

/// Everything a replica stores for one key: the siblings and the causal summary.
///
/// Invariant: `vv` covers every sibling's dot, and no two siblings share a dot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Every event this object has seen (including overwritten ones).
    pub vv: VersionVector,
    /// Concurrent versions, none of which has seen another. Kept sorted by dot so equal
    /// objects compare equal.
    pub siblings: Vec<Sibling>,
    /// The CRDT state, in CRDT keyspaces (counter, set, map, register); `None` elsewhere
    /// and then not serialized, so plain objects are stored exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crdt: Option<CrdtState>,
}

impl Object {
    /// About how many bytes the object takes encoded, without encoding it: what a scan
    /// page or a replication bundle counts against its byte budget.
    pub fn approx_bytes(&self) -> usize {
        let siblings: usize = self
            .siblings
            .iter()
            .map(|s| {
                48 + s.value.as_ref().map_or(0, Vec::len) + s.actor.as_ref().map_or(0, String::len)
            })
            .sum();
        let crdt = self
            .crdt
            .as_ref()
            .and_then(|c| rmp_serde::to_vec(c).ok())
            .map_or(0, |v| v.len());
        32 + siblings + 24 * self.vv.0.len() + crdt
    }

    /// Whether the object holds no version at all (never written on this replica).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.vv.0.is_empty() && self.crdt.is_none()
    }

    /// Siblings that hold a value (not tombstones).
    pub fn live_values(&self) -> impl Iterator<Item = &Sibling> {
        self.siblings.iter().filter(|s| s.value.is_some())
    }

    /// Apply a client write at the replica that issues its dot.
    ///
    /// `context` is what the client read; every sibling it covers is replaced, every
    /// other sibling stays (a blind write, with an empty context, becomes a sibling).
    /// Returns the new dot.
    pub fn apply_write(
        &mut self,
        actor: &str,
        context: &VersionVector,
        value: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<Dot, CausalityError> {
        self.apply_stamped_write(actor, context, value, now_ms, 0, None)
    }

    /// [`Object::apply_write`] with the ordering timestamp and client actor that
    /// last-write-wins policies use.
    pub fn apply_stamped_write(
        &mut self,
        actor: &str,
        context: &VersionVector,
        value: Option<Vec<u8>>,
        now_ms: u64,
        ts: u64,
        client_actor: Option<String>,
    ) -> Result<Dot, CausalityError> {
        // Checked before anything changes, so a refused write leaves the object as it was.
        let dot = self.vv.next_dot(actor, context)?;
        self.siblings.retain(|s| !context.covers(&s.dot));
        // The context may know events this replica has not received yet; joining it means
        // those versions, when they arrive, are recognised as overwritten.
        self.vv.join(context);
        // One more than anything this actor issued or anyone saw for this key (computed
        // above), so the dot is new even if the client's context is ahead of our copy.
        self.vv.witness(actor, dot.counter);
        self.siblings.push(Sibling {
            dot: dot.clone(),
            value,
            written_at_ms: now_ms,
            ts,
            actor: client_actor,
        });
        self.siblings.sort_by(|a, b| a.dot.cmp(&b.dot));
        Ok(dot)
    }

    /// Join two replicas' states. A sibling survives if both sides have it, or if the other
    /// side has not seen its event (so it cannot have overwritten it).
    pub fn merge(&mut self, other: &Object) {
        let mut kept: Vec<Sibling> = self
            .siblings
            .iter()
            .filter(|s| other.siblings.iter().any(|o| o.dot == s.dot) || !other.vv.covers(&s.dot))
            .cloned()
            .collect();
        for s in &other.siblings {
            let already = kept.iter().any(|k| k.dot == s.dot);
            if !already && !self.vv.covers(&s.dot) {
                kept.push(s.clone());
            }
        }
        kept.sort_by(|a, b| a.dot.cmp(&b.dot));
        self.siblings = kept;
        self.vv.join(&other.vv);
    }

    /// Highest ordering timestamp among the siblings (0 if none).
    pub fn max_ts(&self) -> u64 {
        self.siblings.iter().map(|s| s.ts).max().unwrap_or(0)
    }

    /// The merge of `self` and `other` as a new object.
    pub fn merged(&self, other: &Object) -> Object {
        let mut out = self.clone();
        out.merge(other);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    use crate::crdt::CrdtOp;
    use crate::keyspace::ConflictPolicy;
    use proptest::prelude::*;
    use serde_bytes::ByteBuf;

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        VersionVector(entries.iter().map(|(a, c)| (a.to_string(), *c)).collect())
    }

    /// Goal: a blind write on an existing key keeps the old value as a sibling, and a write
    /// carrying the read context replaces exactly what was read.
    #[test]
    fn blind_write_makes_sibling_and_context_write_collapses() {
        let mut o = Object::default();
        o.apply_write("n1", &VersionVector::new(), Some(b"a".to_vec()), 1)
            .unwrap();
        o.apply_write("n1", &VersionVector::new(), Some(b"b".to_vec()), 2)
            .unwrap();
        assert_eq!(o.live_values().count(), 2, "blind write must not overwrite");
        let ctx = o.vv.clone();
        o.apply_write("n2", &ctx, Some(b"c".to_vec()), 3).unwrap();
        let values: Vec<_> = o.live_values().map(|s| s.value.clone().unwrap()).collect();
        assert_eq!(values, vec![b"c".to_vec()]);
    }

    /// Goal: a context write does not remove a concurrent version it never saw, even when
    /// that version arrives at the replica after the write.
    #[test]
    fn context_write_keeps_unseen_concurrent_version() {
        let mut a = Object::default();
        a.apply_write("n1", &VersionVector::new(), Some(b"v1".to_vec()), 1)
            .unwrap();
        let ctx = a.vv.clone();
        let mut b = a.clone();
        // Concurrently, n2 gets a blind write.
        b.apply_write("n2", &VersionVector::new(), Some(b"other".to_vec()), 2)
            .unwrap();
        // The client that read v1 writes v2 through n1.
        a.apply_write("n1", &ctx, Some(b"v2".to_vec()), 3).unwrap();
        a.merge(&b);
        let mut values: Vec<_> = a.live_values().map(|s| s.value.clone().unwrap()).collect();
        values.sort();
        assert_eq!(values, vec![b"other".to_vec(), b"v2".to_vec()]);
    }

    /// Goal: a stale replica cannot resurrect a value that a later write (or delete) replaced.
    #[test]
    fn merge_does_not_resurrect_overwritten_value() {
        let mut fresh = Object::default();
        fresh
            .apply_write("n1", &VersionVector::new(), Some(b"old".to_vec()), 1)
            .unwrap();
        let stale = fresh.clone();
        let ctx = fresh.vv.clone();
        fresh.apply_write("n1", &ctx, None, 2).unwrap(); // delete
        fresh.merge(&stale);
        assert_eq!(fresh.live_values().count(), 0);
        assert_eq!(fresh.siblings.len(), 1, "only the tombstone remains");
    }

    /// Goal: a stored vector whose counter for the lead is at u64::MAX (only corrupt data
    /// can hold one now that contexts are sealed) refuses the write and leaves the object
    /// unchanged, instead of wrapping (release) or panicking (debug) — the key stays
    /// writable through other leads.
    #[test]
    fn exhausted_counter_refuses_instead_of_wrapping() {
        let mut o = Object::default();
        o.apply_write("n1", &VersionVector::new(), Some(b"a".to_vec()), 1)
            .unwrap();
        let before = o.clone();
        let ctx = vv(&[("n1", u64::MAX)]);
        let e = o
            .apply_write("n1", &ctx, Some(b"b".to_vec()), 2)
            .unwrap_err();
        assert!(matches!(e, CausalityError::CounterExhausted { .. }), "{e}");
        assert_eq!(o, before);
        o.apply_write("n2", &VersionVector::new(), Some(b"c".to_vec()), 3)
            .unwrap();
        assert_eq!(o.live_values().count(), 2);
    }

    /// A random history of writes at random replicas with random (possibly stale) contexts
    /// and random merges, producing replica states that obey the invariants.
    fn arb_objects() -> impl Strategy<Value = Vec<Object>> {
        // (replica index, kind: 0 = blind write, 1 = context write, 2 = merge from other)
        prop::collection::vec((0usize..3, 0u8..3, 0usize..3), 0..25).prop_map(|steps| {
            let actors = ["n1", "n2", "n3"];
            let mut reps = vec![Object::default(), Object::default(), Object::default()];
            for (i, (r, kind, other)) in steps.into_iter().enumerate() {
                match kind {
                    0 => {
                        reps[r]
                            .apply_write(actors[r], &VersionVector::new(), Some(vec![i as u8]), 0)
                            .unwrap();
                    }
                    1 => {
                        let ctx = reps[other].vv.clone();
                        reps[r]
                            .apply_write(actors[r], &ctx, Some(vec![i as u8]), 0)
                            .unwrap();
                    }
                    _ => {
                        let o = reps[other].clone();
                        reps[r].merge(&o);
                    }
                }
            }
            reps
        })
    }

    proptest! {
        /// Law: merge is commutative.
        #[test]
        fn merge_commutative(reps in arb_objects()) {
            prop_assert_eq!(reps[0].merged(&reps[1]), reps[1].merged(&reps[0]));
        }

        /// Law: merge is associative.
        #[test]
        fn merge_associative(reps in arb_objects()) {
            let left = reps[0].merged(&reps[1]).merged(&reps[2]);
            let right = reps[0].merged(&reps[1].merged(&reps[2]));
            prop_assert_eq!(left, right);
        }

        /// Law: merge is idempotent.
        #[test]
        fn merge_idempotent(reps in arb_objects()) {
            prop_assert_eq!(reps[0].merged(&reps[0]), reps[0].clone());
        }

        /// Invariant: the vector covers every sibling and dots are unique, after any history.
        #[test]
        fn invariants_hold(reps in arb_objects()) {
            for o in &reps {
                for s in &o.siblings {
                    prop_assert!(o.vv.covers(&s.dot));
                }
                let mut dots: Vec<_> = o.siblings.iter().map(|s| s.dot.clone()).collect();
                dots.dedup();
                prop_assert_eq!(dots.len(), o.siblings.len());
            }
        }

        /// Law: version-vector join is an upper bound of both inputs.
        #[test]
        fn join_is_upper_bound(reps in arb_objects()) {
            let mut j = reps[0].vv.clone();
            j.join(&reps[1].vv);
            prop_assert!(matches!(reps[0].vv.partial_cmp_vv(&j), Some(Ordering::Less | Ordering::Equal)));
            prop_assert!(matches!(reps[1].vv.partial_cmp_vv(&j), Some(Ordering::Less | Ordering::Equal)));
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Goal: the stored and wire encoding of objects is pinned, so data stored by earlier
    /// releases still decodes and peers of either version understand each other: a plain
    /// object (value, tombstone, client timestamp and actor) and a CRDT object encode to the
    /// exact bytes the `causality::Object` of before the `object` module did.
    #[test]
    fn encoding_is_unchanged() {
        let mut o = Object::default();
        o.apply_stamped_write(
            "n1@0000002a",
            &VersionVector::new(),
            Some(b"v1".to_vec()),
            7,
            1_000,
            Some("eu".into()),
        )
        .unwrap();
        o.apply_stamped_write("n2@0000002b", &VersionVector::new(), None, 8, 2_000, None)
            .unwrap();
        let bytes = rmp_serde::to_vec_named(&o).unwrap();
        assert_eq!(
            hex(&bytes),
            "82a2767682ab6e3140303030303030326101ab6e3240303030303030326201a87369626c696e67739285a3646f7482a56163746f72ab6e31403030303030303261a7636f756e74657201a576616c7565c4027631ad7772697474656e5f61745f6d7307a27473cd03e8a56163746f72a2657585a3646f7482a56163746f72ab6e32403030303030303262a7636f756e74657201a576616c7565c0ad7772697474656e5f61745f6d7308a27473cd07d0a56163746f72c0"
        );
        assert_eq!(rmp_serde::from_slice::<Object>(&bytes).unwrap(), o);

        let mut s = None;
        crate::crdt::apply(
            ConflictPolicy::Set,
            &mut s,
            "n1@0000002a",
            &CrdtOp::SetAdd(vec![ByteBuf::from(b"m".to_vec())]),
            &VersionVector::new(),
        )
        .unwrap();
        let mut c = Object {
            crdt: s,
            ..Default::default()
        };
        c.vv.witness("n1@0000002a", 1);
        let bytes = rmp_serde::to_vec_named(&c).unwrap();
        assert_eq!(
            hex(&bytes),
            "83a2767681ab6e3140303030303030326101a87369626c696e677390a46372647481a373657483a5636c6f636b81a4646f747381ab6e3140303030303030326101a7656e747269657381916d81a4646f747381ab6e3140303030303030326101a8646566657272656480"
        );
        assert_eq!(rmp_serde::from_slice::<Object>(&bytes).unwrap(), c);
    }

    /// Goal: a remove whose context is ahead of the lead is kept (deferred) and survives
    /// the storage/wire encoding, whose maps then have vector-clock keys.
    #[test]
    fn deferred_remove_survives_encoding() {
        let mut s = None;
        let none = VersionVector::new();
        crate::crdt::apply(
            ConflictPolicy::Set,
            &mut s,
            "n1",
            &CrdtOp::SetAdd(vec![ByteBuf::from(b"a".to_vec())]),
            &none,
        )
        .unwrap();
        let ahead = VersionVector([("n2".to_string(), 4)].into_iter().collect());
        crate::crdt::apply(
            ConflictPolicy::Set,
            &mut s,
            "n1",
            &CrdtOp::SetRemove(vec![ByteBuf::from(b"z".to_vec())]),
            &ahead,
        )
        .unwrap();
        let o = Object {
            crdt: s,
            ..Default::default()
        };
        let bytes = rmp_serde::to_vec_named(&o).unwrap();
        let back: Object = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, o);
        // A plain object is encoded without the field, exactly as before CRDTs existed.
        let plain = Object::default();
        let bytes = rmp_serde::to_vec_named(&plain).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("crdt"));
    }
}
