//! The CRDT policies (`counter`, `set`, `map`, `register`): a key holds a CRDT state
//! instead of siblings, changed only by client operations the lead applies
//! ([`crate::crdt::apply`], with the lead's incarnation as the CRDT actor) and joined by
//! the CRDT's merge wherever copies meet. Puts, deletes and batches are refused.
//!
//! A client reads the CRDT's value, and its context is the CRDT's read context — what a
//! later remove (set member, map field) or register write may remove — not the object's
//! version vector. The four types share this one implementation; which CRDT a key holds
//! follows from the keyspace's policy ([`crate::crdt`]).

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use super::{ClientView, ConflictResolver, PolicyError};
use crate::causality::VersionVector;
use crate::clock::Hlc;
use crate::crdt::{CrdtError, CrdtOp};
use crate::keyspace::KeyspaceDef;
use crate::object::Object;

/// Join CRDT states.
pub(super) struct Crdt;

impl ConflictResolver for Crdt {
    fn check_plain_write(&self, ks: &KeyspaceDef, what: &str) -> Result<(), PolicyError> {
        Err(PolicyError::Unsupported(format!(
            "keyspace {:?} uses the {} policy: {what} is not supported, update it with CRDT operations (incr, sadd, hset, rset, ...)",
            ks.name, ks.policy
        )))
    }

    fn check_update(&self, ks: &KeyspaceDef, op: &CrdtOp) -> Result<(), PolicyError> {
        op.check(ks.policy)
            .map_err(|e| PolicyError::Unsupported(format!("keyspace {:?}: {e}", ks.name)))
    }

    fn check_lead_write(&self, ks: &KeyspaceDef) -> Result<(), PolicyError> {
        Err(PolicyError::PlainWriteOnCrdt {
            keyspace: ks.name.clone(),
            policy: ks.policy,
        })
    }

    /// Never used ([`ConflictResolver::check_lead_write`] refuses plain writes); the
    /// lead's clock, as for the other node-stamped policies.
    fn stamp(&self, hlc: &Hlc, stored: &Object, _client_ts: Option<u64>) -> u64 {
        super::plain::hlc_stamp(hlc, stored)
    }

    fn update(
        &self,
        ks: &KeyspaceDef,
        o: &mut Object,
        lead: &str,
        op: &CrdtOp,
        context: &VersionVector,
    ) -> Result<(), CrdtError> {
        crate::crdt::apply(ks.policy, &mut o.crdt, lead, op, context)
    }

    /// CRDT keyspaces hold no siblings: the state's own join is the whole merge.
    fn merge(&self, _ks: &KeyspaceDef, o: &mut Object, other: &Object) {
        crate::crdt::merge(&mut o.crdt, &other.crdt);
        o.vv.join(&other.vv);
    }

    fn context(&self, o: &Object) -> VersionVector {
        crate::crdt::context(&o.crdt)
    }

    /// The CRDT's value (an untouched key reads as the type's empty value), and no
    /// versions: the merge never carries siblings over, so a reconciled copy has none.
    fn view<'a>(&self, ks: &KeyspaceDef, o: &'a Object) -> ClientView<'a> {
        ClientView {
            values: Vec::new(),
            tombstones: 0,
            crdt: crate::crdt::value(ks.policy, &o.crdt),
        }
    }

    fn visible(&self, o: &Object) -> bool {
        o.crdt.is_some()
    }
}
