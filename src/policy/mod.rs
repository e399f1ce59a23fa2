//! Conflict policies: everything a keyspace's policy decides, one implementation per
//! policy.
//!
//! Causality is always tracked the same way ([`crate::object`]): a write with a context
//! replaces what it saw, whatever the policy. Policies differ in what they accept from a
//! client, how the lead stamps and applies a write, what happens to versions that are
//! *concurrent*, and what a client is shown. `siblings` keeps concurrent versions for the
//! client to merge; the last-write-wins variants keep exactly one and drop the rest —
//! acknowledged writes lost by design, the behaviour Jepsen documented in Riak's and
//! Cassandra's LWW modes; the CRDT policies hold no siblings at all but a CRDT state that
//! changes only by operations and joins by the CRDT's merge.
//!
//! Each policy is a [`ConflictResolver`]: `siblings.rs`, `lww.rs` (its three orders) and
//! `crdt.rs` (the four CRDT types; the CRDT mechanics themselves are [`crate::crdt`]). The
//! keyspace's serialized [`ConflictPolicy`] picks one with [`ConflictPolicy::resolver`], so
//! the coordinator and the replica ask the resolver and never look at the policy
//! themselves.
//!
//! Resolution runs wherever versions meet: on the lead after a write, on every replica
//! after a merge (replication, read repair) and on the coordinator after reconciling
//! replies. Every resolver's merge must therefore be commutative, associative and
//! idempotent — checked for every policy by the property tests below.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

mod crdt;
mod lww;
mod siblings;

use crate::causality::{CausalityError, Dot, VersionVector};
use crate::clock::Hlc;
use crate::crdt::{CrdtError, CrdtOp, CrdtValue};
use crate::keyspace::{ConflictPolicy, KeyspaceDef};
use crate::object::{Object, Sibling};

/// A request that does not fit the keyspace's conflict policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A write's client timestamp or actor does not fit the policy (a missing one, one the
    /// policy has no use for, or a batch whose items cannot carry one).
    #[error("{0}")]
    BadStamp(String),
    /// A request of a kind the policy does not take: a put, delete or batch on a CRDT
    /// keyspace, a CRDT operation on a plain keyspace or one of another CRDT type.
    #[error("{0}")]
    Unsupported(String),
    /// A plain write reached the lead of a CRDT keyspace (coordinators refuse it first, so
    /// only a faulty peer sends one).
    #[error("keyspace {keyspace} uses the {policy} policy: update it with CRDT operations, not put or batch")]
    PlainWriteOnCrdt {
        /// Keyspace name.
        keyspace: String,
        /// Its policy.
        policy: ConflictPolicy,
    },
}

/// A client write as the lead applies it, stamped already ([`ConflictResolver::stamp`]).
#[derive(Debug, Clone)]
pub struct LeadWrite<'a> {
    /// The lead's actor (its node incarnation): the actor of the new dot.
    pub lead: &'a str,
    /// What the client had read.
    pub context: &'a VersionVector,
    /// New value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Wall-clock milliseconds at the lead (informational).
    pub now_ms: u64,
    /// The ordering timestamp.
    pub ts: u64,
    /// The client-named actor (`lww-actor`).
    pub actor: Option<String>,
}

/// What a client is shown of a (reconciled) object, besides its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView<'a> {
    /// Versions shown as values (none in CRDT keyspaces).
    pub values: Vec<&'a Sibling>,
    /// Tombstone versions the object holds.
    pub tombstones: usize,
    /// The CRDT's value, in CRDT keyspaces.
    pub crdt: Option<CrdtValue>,
}

/// Everything one conflict policy does, wherever the data path meets it.
///
/// Law (property tests below, for every policy): [`ConflictResolver::merge`] is
/// commutative, associative and idempotent, so replicas exchanging copies in any order,
/// any number of times, converge. The other decisions are each taken in one place (the
/// coordinator or the lead) and need no law.
pub trait ConflictResolver: Send + Sync {
    /// Refuse a put, delete or batch (`what`) the policy does not take; checked by the
    /// coordinator before anything else about the write.
    fn check_plain_write(&self, _ks: &KeyspaceDef, _what: &str) -> Result<(), PolicyError> {
        Ok(())
    }

    /// Check a put's or delete's client timestamp and actor. By default the policy takes
    /// neither.
    fn check_stamp(
        &self,
        ks: &KeyspaceDef,
        timestamp: Option<u64>,
        actor: Option<&str>,
    ) -> Result<(), PolicyError> {
        plain::refuse_unused_stamp(ks, timestamp, actor, false, false)
    }

    /// Refuse a batch the policy cannot take (checked after the batch is known non-empty).
    fn check_batch(&self, _ks: &KeyspaceDef) -> Result<(), PolicyError> {
        Ok(())
    }

    /// Refuse a CRDT operation that does not belong to the keyspace.
    fn check_update(&self, ks: &KeyspaceDef, op: &CrdtOp) -> Result<(), PolicyError>;

    /// The lead's own check before a plain write (the coordinator has checked already;
    /// this guards against peers that did not).
    fn check_lead_write(&self, _ks: &KeyspaceDef) -> Result<(), PolicyError> {
        Ok(())
    }

    /// The ordering timestamp the lead gives a new write to `stored`.
    fn stamp(&self, hlc: &Hlc, stored: &Object, client_ts: Option<u64>) -> u64;

    /// Apply a client write at the lead. Returns the dot issued (which a policy may
    /// already have resolved away). By default, the dotted write alone.
    fn write(
        &self,
        _ks: &KeyspaceDef,
        o: &mut Object,
        w: LeadWrite<'_>,
    ) -> Result<Dot, CausalityError> {
        o.apply_stamped_write(w.lead, w.context, w.value, w.now_ms, w.ts, w.actor)
    }

    /// Apply a CRDT operation at the lead `lead`, with the client's `context`. A refused
    /// operation leaves the object as it was. By default refused: not a CRDT policy.
    fn update(
        &self,
        ks: &KeyspaceDef,
        _o: &mut Object,
        _lead: &str,
        _op: &CrdtOp,
        _context: &VersionVector,
    ) -> Result<(), CrdtError> {
        Err(CrdtError::NotCrdt(ks.policy))
    }

    /// Let the node's clock see the stamps of a copy arriving from a peer, when the policy
    /// stamps with it (by default it does).
    fn observe(&self, hlc: &Hlc, incoming: &Object) {
        hlc.observe(incoming.max_ts());
    }

    /// Merge `other` into `o`.
    fn merge(&self, ks: &KeyspaceDef, o: &mut Object, other: &Object);

    /// The causal context a client gets for `o`: what a later write or operation with it
    /// replaces. By default the object's version vector.
    fn context(&self, o: &Object) -> VersionVector {
        o.vv.clone()
    }

    /// What a client reads of `o`. By default its live siblings and tombstones.
    fn view<'a>(&self, _ks: &KeyspaceDef, o: &'a Object) -> ClientView<'a> {
        plain::view(o)
    }

    /// Whether a scan shows `o` (deleted items and untouched keys are left out). By
    /// default, when some version holds a value.
    fn visible(&self, o: &Object) -> bool {
        plain::visible(o)
    }
}

impl ConflictPolicy {
    /// The implementation of this policy. (Defined here rather than in `keyspace`, so
    /// keyspace definitions stay below the data path and do not depend on it.)
    pub fn resolver(self) -> &'static dyn ConflictResolver {
        match self {
            ConflictPolicy::Siblings => &siblings::Siblings,
            ConflictPolicy::LwwTimestamp => &lww::TIMESTAMP,
            ConflictPolicy::LwwActor => &lww::ACTOR,
            ConflictPolicy::LwwClient => &lww::CLIENT,
            ConflictPolicy::Counter
            | ConflictPolicy::Set
            | ConflictPolicy::Map
            | ConflictPolicy::Register => &crdt::Crdt,
        }
    }
}

/// The parts plain (sibling-holding) policies share: what the client sees, its context,
/// HLC stamping, and the refusal of CRDT operations.
mod plain {
    use super::*;

    /// Refuse a client timestamp or actor the policy has no use for.
    pub(super) fn refuse_unused_stamp(
        ks: &KeyspaceDef,
        timestamp: Option<u64>,
        actor: Option<&str>,
        takes_timestamp: bool,
        takes_actor: bool,
    ) -> Result<(), PolicyError> {
        let p = ks.policy;
        if timestamp.is_some() && !takes_timestamp {
            return Err(PolicyError::BadStamp(format!(
                "a client timestamp only applies to lww-client keyspaces; {:?} uses {p:?}",
                ks.name
            )));
        }
        if actor.is_some() && !takes_actor {
            return Err(PolicyError::BadStamp(format!(
                "an actor only applies to lww-actor keyspaces; {:?} uses {p:?}",
                ks.name
            )));
        }
        Ok(())
    }

    /// The lead's hybrid logical clock: never below what the copy already holds.
    pub(super) fn hlc_stamp(hlc: &Hlc, stored: &Object) -> u64 {
        hlc.observe(stored.max_ts());
        hlc.tick()
    }

    /// A CRDT operation on a keyspace without CRDTs, as the coordinator refuses it.
    pub(super) fn refuse_update(ks: &KeyspaceDef) -> PolicyError {
        PolicyError::Unsupported(format!(
            "keyspace {:?}: {}",
            ks.name,
            CrdtError::NotCrdt(ks.policy)
        ))
    }

    /// The live siblings as values, with the tombstones counted.
    pub(super) fn view(o: &Object) -> ClientView<'_> {
        ClientView {
            values: o.live_values().collect(),
            tombstones: o.siblings.iter().filter(|s| s.value.is_none()).count(),
            crdt: None,
        }
    }

    /// Shown by scans when some version holds a value.
    pub(super) fn visible(o: &Object) -> bool {
        o.live_values().next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A keyspace of `policy` (lww-actor: eu wins over us). Shared with `lww::tests`.
    pub(super) fn ks(policy: ConflictPolicy) -> KeyspaceDef {
        let mut k = KeyspaceDef::new("k", 3, 2, 2);
        k.policy = policy;
        k.actor_priority = vec!["eu".into(), "us".into()];
        k
    }

    /// Random histories at three replicas under one plain policy: lead writes (through the
    /// policy) with random timestamps and actors, blind or with a (possibly stale)
    /// context, and resolved merges.
    fn arb_replicas(policy: ConflictPolicy) -> impl Strategy<Value = Vec<Object>> {
        let step = (0usize..3, 0u8..3, 0usize..3, 0u64..20, 0usize..3);
        prop::collection::vec(step, 0..25).prop_map(move |steps| {
            let k = ks(policy);
            let r = policy.resolver();
            let actors = [Some("eu"), Some("us"), None];
            let nodes = ["n1", "n2", "n3"];
            let mut reps = vec![Object::default(), Object::default(), Object::default()];
            for (i, (at, kind, other, ts, a)) in steps.into_iter().enumerate() {
                match kind {
                    0 | 1 => {
                        let ctx = if kind == 0 {
                            VersionVector::new()
                        } else {
                            reps[other].vv.clone()
                        };
                        let w = LeadWrite {
                            lead: nodes[at],
                            context: &ctx,
                            value: Some(vec![i as u8]),
                            now_ms: 0,
                            ts,
                            actor: actors[a].map(str::to_string),
                        };
                        r.write(&k, &mut reps[at], w).unwrap();
                    }
                    _ => {
                        let o = reps[other].clone();
                        r.merge(&k, &mut reps[at], &o);
                    }
                }
            }
            reps
        })
    }

    /// `a` merged with `b` under `k`'s policy. Shared with `lww::tests`.
    pub(super) fn merged(k: &KeyspaceDef, a: &Object, b: &Object) -> Object {
        let mut out = a.clone();
        k.policy.resolver().merge(k, &mut out, b);
        out
    }

    /// The merge is commutative, associative and idempotent on three replicas' states.
    fn merge_laws(k: &KeyspaceDef, reps: &[Object]) -> Result<(), TestCaseError> {
        prop_assert_eq!(merged(k, &reps[0], &reps[1]), merged(k, &reps[1], &reps[0]));
        prop_assert_eq!(
            merged(k, &merged(k, &reps[0], &reps[1]), &reps[2]),
            merged(k, &reps[0], &merged(k, &reps[1], &reps[2]))
        );
        prop_assert_eq!(merged(k, &reps[0], &reps[0]), reps[0].clone());
        Ok(())
    }

    macro_rules! laws {
        ($name:ident, $policy:expr) => {
            proptest! {
                /// Laws for this policy: resolved merge is commutative, associative and
                /// idempotent, and leaves at most one version.
                #[test]
                fn $name(reps in arb_replicas($policy)) {
                    let k = ks($policy);
                    merge_laws(&k, &reps)?;
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
            merge_laws(&ks(ConflictPolicy::Siblings), &reps)?;
        }
    }

    /// Random CRDT histories at three replicas (actors n1..n3, each the lead of its own
    /// operations): operations of the policy with contexts read from any replica (so
    /// possibly stale or ahead), and resolved merges between replicas.
    fn arb_crdt_replicas(policy: ConflictPolicy) -> impl Strategy<Value = Vec<Object>> {
        use crate::crdt::FieldOp;
        use serde_bytes::ByteBuf;
        // (replica, kind, other replica, operand)
        let step = (0usize..3, 0u8..6, 0usize..3, -3i64..4);
        prop::collection::vec(step, 0..30).prop_map(move |steps| {
            let k = ks(policy);
            let res = policy.resolver();
            let nodes = ["n1", "n2", "n3"];
            let mut reps = vec![Object::default(), Object::default(), Object::default()];
            for (r, kind, other, n) in steps {
                if kind == 5 {
                    let o = reps[other].clone();
                    res.merge(&k, &mut reps[r], &o);
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
                    res.context(&reps[other])
                };
                let out = res.update(&k, &mut reps[r], nodes[r], &op, &ctx);
                assert!(out.is_ok(), "{out:?}");
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
                    merge_laws(&k, &reps)?;
                    // And the values clients read agree too.
                    let v = |o: &Object| $policy.resolver().view(&k, o).crdt;
                    prop_assert_eq!(v(&merged(&k, &reps[0], &reps[1])), v(&merged(&k, &reps[1], &reps[0])));
                }
            }
        };
    }

    crdt_laws!(counter_laws, ConflictPolicy::Counter);
    crdt_laws!(set_laws, ConflictPolicy::Set);
    crdt_laws!(map_laws, ConflictPolicy::Map);
    crdt_laws!(register_laws, ConflictPolicy::Register);

    /// Goal: each policy checks a write's client timestamp and actor with the messages
    /// clients have always seen, in the same order (a missing required stamp first).
    #[test]
    fn stamps_are_checked_per_policy() {
        let check = |p: ConflictPolicy, ts: Option<u64>, actor: Option<&str>| {
            p.resolver()
                .check_stamp(&ks(p), ts, actor)
                .map_err(|e| e.to_string())
        };
        assert_eq!(check(ConflictPolicy::Siblings, None, None), Ok(()));
        assert_eq!(
            check(ConflictPolicy::Siblings, Some(1), Some("eu")),
            Err(
                "a client timestamp only applies to lww-client keyspaces; \"k\" uses Siblings"
                    .into()
            )
        );
        assert_eq!(
            check(ConflictPolicy::LwwTimestamp, None, Some("eu")),
            Err("an actor only applies to lww-actor keyspaces; \"k\" uses LwwTimestamp".into())
        );
        assert_eq!(
            check(ConflictPolicy::LwwClient, None, Some("eu")),
            Err("keyspace \"k\" uses lww-client: every write needs a client timestamp".into())
        );
        assert_eq!(
            check(ConflictPolicy::LwwClient, Some(1), Some("eu")),
            Err("an actor only applies to lww-actor keyspaces; \"k\" uses LwwClient".into())
        );
        assert_eq!(check(ConflictPolicy::LwwClient, Some(1), None), Ok(()));
        assert_eq!(
            check(ConflictPolicy::LwwActor, Some(1), None),
            Err("keyspace \"k\" uses lww-actor: every write needs an actor (one of [\"eu\", \"us\"] wins over the others)".into())
        );
        assert_eq!(
            check(ConflictPolicy::LwwActor, Some(1), Some("eu")),
            Err(
                "a client timestamp only applies to lww-client keyspaces; \"k\" uses LwwActor"
                    .into()
            )
        );
        assert_eq!(check(ConflictPolicy::LwwActor, None, Some("eu")), Ok(()));
        assert_eq!(
            check(ConflictPolicy::Counter, Some(1), None),
            Err(
                "a client timestamp only applies to lww-client keyspaces; \"k\" uses Counter"
                    .into()
            )
        );
    }

    /// Goal: requests of the wrong kind are refused by the policy with the messages of
    /// before: plain writes and batches on CRDT keyspaces, batches in lww-client and
    /// lww-actor keyspaces, CRDT operations elsewhere or of another type.
    #[test]
    fn request_kinds_are_checked_per_policy() {
        let set = ks(ConflictPolicy::Set);
        let crdt = ConflictPolicy::Set.resolver();
        assert_eq!(
            crdt.check_plain_write(&set, "put").unwrap_err().to_string(),
            "keyspace \"k\" uses the set policy: put is not supported, update it with CRDT operations (incr, sadd, hset, rset, ...)"
        );
        assert_eq!(
            crdt.check_lead_write(&set).unwrap_err().to_string(),
            "keyspace k uses the set policy: update it with CRDT operations, not put or batch"
        );
        let add = CrdtOp::CounterAdd(1);
        assert_eq!(
            crdt.check_update(&set, &add).unwrap_err().to_string(),
            "keyspace \"k\": operation counter-add does not apply to a set keyspace"
        );
        for p in [
            ConflictPolicy::Siblings,
            ConflictPolicy::LwwTimestamp,
            ConflictPolicy::LwwActor,
            ConflictPolicy::LwwClient,
        ] {
            let r = p.resolver();
            assert_eq!(r.check_plain_write(&ks(p), "batch"), Ok(()));
            assert_eq!(r.check_lead_write(&ks(p)), Ok(()));
            assert_eq!(
                r.check_update(&ks(p), &add).unwrap_err().to_string(),
                format!("keyspace \"k\": keyspace policy {p} is not a CRDT policy (use counter, set, map or register)")
            );
            let batch = r.check_batch(&ks(p));
            if matches!(p, ConflictPolicy::LwwActor | ConflictPolicy::LwwClient) {
                assert_eq!(
                    batch.unwrap_err().to_string(),
                    format!("batches are not supported in {p:?} keyspaces yet (items cannot carry a client timestamp or actor); write the items one by one")
                );
            } else {
                assert_eq!(batch, Ok(()));
            }
        }
    }
}
