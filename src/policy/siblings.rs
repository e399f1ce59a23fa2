//! The `siblings` policy (the default): concurrent versions are all kept, as siblings, for
//! the client to read and merge; a write with the context of a read replaces exactly what
//! was read. It is the dotted-version-vector object of [`crate::object`] with nothing on
//! top: the merge is [`Object::merge`], the context is the object's version vector.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use super::{plain, ConflictResolver, PolicyError};
use crate::clock::Hlc;
use crate::crdt::CrdtOp;
use crate::keyspace::KeyspaceDef;
use crate::object::Object;

/// Keep every concurrent version.
pub(super) struct Siblings;

impl ConflictResolver for Siblings {
    fn check_update(&self, ks: &KeyspaceDef, _op: &CrdtOp) -> Result<(), PolicyError> {
        Err(plain::refuse_update(ks))
    }

    /// Siblings are never ordered by timestamp, but a write is stamped with the lead's
    /// hybrid logical clock as in every policy whose stamps come from nodes.
    fn stamp(&self, hlc: &Hlc, stored: &Object, _client_ts: Option<u64>) -> u64 {
        plain::hlc_stamp(hlc, stored)
    }

    /// The dotted-version-vector merge: a version survives unless the other side has seen
    /// it overwritten.
    fn merge(&self, _ks: &KeyspaceDef, o: &mut Object, other: &Object) {
        o.merge(other);
    }
}
