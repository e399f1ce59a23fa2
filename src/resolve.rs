//! Conflict resolution: what a keyspace's policy does with concurrent versions.
//!
//! Causality is always tracked the same way ([`crate::causality`]): a write with a context
//! replaces what it saw, whatever the policy. Policies differ only in what happens to
//! versions that are *concurrent*: `siblings` keeps them all for the client to merge; the
//! last-write-wins variants keep exactly one and drop the rest — acknowledged writes lost
//! by design, the behaviour Jepsen documented in Riak's and Cassandra's LWW modes.
//!
//! Resolution runs wherever versions meet: on the lead after a write, on every replica
//! after a merge (replication, read repair) and on the coordinator after reconciling
//! replies. For last-write-wins policies the merge is a maximum over a total order of
//! versions, so it is commutative, associative and idempotent — checked by the property
//! tests below.

use crate::keyspace::{ConflictPolicy, KeyspaceDef};
use crate::object::{Object, Sibling};

/// Rank of an actor in an `lww-actor` priority list: higher wins; unknown actors lose to
/// every listed one.
fn actor_rank(priority: &[String], actor: Option<&str>) -> usize {
    actor
        .and_then(|a| priority.iter().position(|p| p == a))
        .map(|pos| priority.len() - pos)
        .unwrap_or(0)
}

/// The total order a last-write-wins policy uses; the greatest sibling wins.
fn lww_key<'a>(ks: &KeyspaceDef, s: &'a Sibling) -> (usize, u64, &'a crate::causality::Dot) {
    let rank = match ks.policy {
        ConflictPolicy::LwwActor => actor_rank(&ks.actor_priority, s.actor.as_deref()),
        _ => 0,
    };
    (rank, s.ts, &s.dot)
}

/// Apply a client write to a replica's object under the keyspace's policy (the lead's
/// step): the dotted write, then, for last-write-wins policies, the maximum with what the
/// object held before — so the lead ends where a merge of the new version would. Returns
/// the dot issued (which a last-write-wins policy may already have resolved away).
#[allow(clippy::too_many_arguments)]
pub fn write(
    ks: &KeyspaceDef,
    o: &mut Object,
    lead: &str,
    context: &crate::causality::VersionVector,
    value: Option<Vec<u8>>,
    now_ms: u64,
    ts: u64,
    actor: Option<String>,
) -> Result<crate::causality::Dot, crate::causality::CausalityError> {
    let before = (ks.policy != ConflictPolicy::Siblings).then(|| o.clone());
    let dot = o.apply_stamped_write(lead, context, value, now_ms, ts, actor)?;
    if let Some(before) = before {
        merge_resolved(ks, o, &before);
    }
    Ok(dot)
}

/// Apply the keyspace's policy to an object's concurrent versions, in place.
pub fn resolve(ks: &KeyspaceDef, o: &mut Object) {
    if ks.policy == ConflictPolicy::Siblings || o.siblings.len() < 2 {
        return;
    }
    let winner = o
        .siblings
        .iter()
        .max_by(|a, b| lww_key(ks, a).cmp(&lww_key(ks, b)))
        .cloned();
    o.siblings = winner.into_iter().collect();
}

/// Merge `other` into `o` under the keyspace's policy.
///
/// `siblings`: the dotted-version-vector merge (a version survives unless the other side
/// has seen it overwritten). Last-write-wins policies: a plain maximum over every version
/// either side holds, by the policy's total order — causality does not enter, so a
/// lower-ranked write cannot displace a higher-ranked one even if it saw it (exactly
/// Cassandra's rule for timestamps). A max is trivially commutative, associative and
/// idempotent; mixing it with causal overwrites is not (property tests found that).
pub fn merge_resolved(ks: &KeyspaceDef, o: &mut Object, other: &Object) {
    if ks.policy.is_crdt() {
        // CRDT keyspaces hold no siblings: the state's own join is the whole merge.
        crate::crdt::merge(&mut o.crdt, &other.crdt);
        o.vv.join(&other.vv);
        return;
    }
    if ks.policy == ConflictPolicy::Siblings {
        o.merge(other);
        return;
    }
    for s in &other.siblings {
        if !o.siblings.iter().any(|mine| mine.dot == s.dot) {
            o.siblings.push(s.clone());
        }
    }
    o.vv.join(&other.vv);
    resolve(ks, o);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::VersionVector;
    use proptest::prelude::*;

    fn ks(policy: ConflictPolicy) -> KeyspaceDef {
        let mut k = KeyspaceDef::new("k", 3, 2, 2);
        k.policy = policy;
        k.actor_priority = vec!["eu".into(), "us".into()];
        k
    }

    /// Random histories at three replicas under one policy: writes with random
    /// timestamps and actors, blind or with a (possibly stale) context, and merges.
    fn arb_replicas(policy: ConflictPolicy) -> impl Strategy<Value = Vec<Object>> {
        let step = (0usize..3, 0u8..3, 0usize..3, 0u64..20, 0usize..3);
        prop::collection::vec(step, 0..25).prop_map(move |steps| {
            let k = ks(policy);
            let actors = [Some("eu"), Some("us"), None];
            let nodes = ["n1", "n2", "n3"];
            let mut reps = vec![Object::default(), Object::default(), Object::default()];
            for (i, (r, kind, other, ts, a)) in steps.into_iter().enumerate() {
                match kind {
                    0 | 1 => {
                        let ctx = if kind == 0 {
                            VersionVector::new()
                        } else {
                            reps[other].vv.clone()
                        };
                        let actor = actors[a].map(str::to_string);
                        reps[r]
                            .apply_stamped_write(nodes[r], &ctx, Some(vec![i as u8]), 0, ts, actor)
                            .unwrap();
                        resolve(&k, &mut reps[r]);
                    }
                    _ => {
                        let o = reps[other].clone();
                        merge_resolved(&k, &mut reps[r], &o);
                    }
                }
            }
            reps
        })
    }

    fn merged(k: &KeyspaceDef, a: &Object, b: &Object) -> Object {
        let mut out = a.clone();
        merge_resolved(k, &mut out, b);
        out
    }

    macro_rules! laws {
        ($name:ident, $policy:expr) => {
            proptest! {
                /// Laws for this policy: resolved merge is commutative, associative and
                /// idempotent, and leaves at most one version.
                #[test]
                fn $name(reps in arb_replicas($policy)) {
                    let k = ks($policy);
                    prop_assert_eq!(merged(&k, &reps[0], &reps[1]), merged(&k, &reps[1], &reps[0]));
                    prop_assert_eq!(
                        merged(&k, &merged(&k, &reps[0], &reps[1]), &reps[2]),
                        merged(&k, &reps[0], &merged(&k, &reps[1], &reps[2]))
                    );
                    prop_assert_eq!(merged(&k, &reps[0], &reps[0]), reps[0].clone());
                    prop_assert!(merged(&k, &reps[0], &reps[1]).siblings.len() <= 1);
                }
            }
        };
    }

    laws!(lww_timestamp_laws, ConflictPolicy::LwwTimestamp);
    laws!(lww_actor_laws, ConflictPolicy::LwwActor);
    laws!(lww_client_laws, ConflictPolicy::LwwClient);

    proptest! {
        /// The siblings policy keeps its laws too (resolution is the identity).
        #[test]
        fn siblings_laws(reps in arb_replicas(ConflictPolicy::Siblings)) {
            let k = ks(ConflictPolicy::Siblings);
            prop_assert_eq!(merged(&k, &reps[0], &reps[1]), merged(&k, &reps[1], &reps[0]));
            prop_assert_eq!(merged(&k, &reps[0], &reps[0]), reps[0].clone());
        }
    }

    /// Random CRDT histories at three replicas (actors n1..n3, each the lead of its own
    /// operations): operations of the policy with contexts read from any replica (so
    /// possibly stale or ahead), and resolved merges between replicas.
    fn arb_crdt_replicas(policy: ConflictPolicy) -> impl Strategy<Value = Vec<Object>> {
        use crate::crdt::{CrdtOp, FieldOp};
        use serde_bytes::ByteBuf;
        // (replica, kind, other replica, operand)
        let step = (0usize..3, 0u8..6, 0usize..3, -3i64..4);
        prop::collection::vec(step, 0..30).prop_map(move |steps| {
            let k = ks(policy);
            let nodes = ["n1", "n2", "n3"];
            let mut reps = vec![Object::default(), Object::default(), Object::default()];
            for (r, kind, other, n) in steps {
                if kind == 5 {
                    let o = reps[other].clone();
                    merge_resolved(&k, &mut reps[r], &o);
                    continue;
                }
                let member = vec![ByteBuf::from(vec![n.unsigned_abs() as u8])];
                let field = format!("f{}", n.rem_euclid(2));
                let op = match (policy, kind) {
                    (ConflictPolicy::Counter, _) => CrdtOp::CounterAdd(n),
                    (ConflictPolicy::Set, 0..=2) => CrdtOp::SetAdd(member),
                    (ConflictPolicy::Set, _) => CrdtOp::SetRemove(member),
                    (ConflictPolicy::Register, _) => CrdtOp::RegisterWrite(member[0].clone()),
                    (_, 0) => CrdtOp::MapUpdate {
                        field,
                        op: FieldOp::RegisterWrite(member[0].clone()),
                    },
                    (_, 1) => CrdtOp::MapUpdate {
                        field,
                        op: FieldOp::CounterAdd(n),
                    },
                    (_, 2) => CrdtOp::MapUpdate {
                        field,
                        op: FieldOp::SetAdd(member),
                    },
                    (_, 3) => CrdtOp::MapUpdate {
                        field,
                        op: FieldOp::SetRemove(member),
                    },
                    _ => CrdtOp::MapRemove { field },
                };
                // Half the operations are blind, half carry a context read somewhere.
                let ctx = if kind % 2 == 0 {
                    VersionVector::new()
                } else {
                    crate::crdt::context(&reps[other].crdt)
                };
                let res = crate::crdt::apply(policy, &mut reps[r].crdt, nodes[r], &op, &ctx);
                assert!(res.is_ok(), "{res:?}");
            }
            reps
        })
    }

    macro_rules! crdt_laws {
        ($name:ident, $policy:expr) => {
            proptest! {
                /// Laws for this CRDT policy: the resolved merge is commutative,
                /// associative and idempotent, so replicas exchanging states in any order,
                /// any number of times, converge.
                #[test]
                fn $name(reps in arb_crdt_replicas($policy)) {
                    let k = ks($policy);
                    prop_assert_eq!(merged(&k, &reps[0], &reps[1]), merged(&k, &reps[1], &reps[0]));
                    prop_assert_eq!(
                        merged(&k, &merged(&k, &reps[0], &reps[1]), &reps[2]),
                        merged(&k, &reps[0], &merged(&k, &reps[1], &reps[2]))
                    );
                    prop_assert_eq!(merged(&k, &reps[0], &reps[0]), reps[0].clone());
                    // And the values clients read agree too.
                    let v = |o: &Object| crate::crdt::value($policy, &o.crdt);
                    prop_assert_eq!(v(&merged(&k, &reps[0], &reps[1])), v(&merged(&k, &reps[1], &reps[0])));
                }
            }
        };
    }

    crdt_laws!(counter_laws, ConflictPolicy::Counter);
    crdt_laws!(set_laws, ConflictPolicy::Set);
    crdt_laws!(map_laws, ConflictPolicy::Map);
    crdt_laws!(register_laws, ConflictPolicy::Register);

    /// Goal: each LWW policy picks the documented winner among concurrent writes.
    #[test]
    fn winners() {
        let mut a = Object::default();
        a.apply_stamped_write(
            "n1",
            &VersionVector::new(),
            Some(b"us-late".to_vec()),
            0,
            200,
            Some("us".into()),
        )
        .unwrap();
        let mut b = Object::default();
        b.apply_stamped_write(
            "n2",
            &VersionVector::new(),
            Some(b"eu-early".to_vec()),
            0,
            100,
            Some("eu".into()),
        )
        .unwrap();
        let value = |policy| {
            let o = merged(&ks(policy), &a, &b);
            o.siblings[0].value.clone().unwrap()
        };
        assert_eq!(value(ConflictPolicy::LwwTimestamp), b"us-late");
        assert_eq!(value(ConflictPolicy::LwwClient), b"us-late");
        assert_eq!(
            value(ConflictPolicy::LwwActor),
            b"eu-early",
            "eu outranks us whatever the time"
        );
        assert_eq!(
            merged(&ks(ConflictPolicy::Siblings), &a, &b).siblings.len(),
            2
        );
    }
}
