//! Causality: dots and version vectors, the vocabulary every layer above uses to say
//! which events a copy, a client or a CRDT has seen.
//!
//! We follow the dotted-version-vector design Riak 2.0 adopted after "sibling explosion"
//! (Preguiça et al., *Dotted Version Vectors*): every stored value carries exactly one
//! **dot** — `(actor, counter)`, the event that wrote it — and a key's copy as a whole
//! carries a **version vector** that summarises every event it has seen. The stored object
//! built from them is [`crate::object`]; the CRDT states of [`crate::crdt`] express their
//! causal contexts as version vectors too.
//!
//! This module is the bottom of the data layers and depends on none of them:
//! `causality` ← `crdt` ← `object` ← `policy`. (The stored object used to live here while
//! also holding a CRDT state, so `causality` and `crdt` imported each other.)

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Errors issuing a new event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CausalityError {
    /// The actor's counter for this key is at its maximum: no new dot can be issued.
    /// Contexts are authenticated, so only a corrupt stored object can get here; refusing
    /// is what keeps the key writable by other leads instead of wrapping to a dot that
    /// every replica already holds.
    #[error("version counter of {actor} is exhausted for this key (stored object corrupt?)")]
    CounterExhausted {
        /// The actor.
        actor: String,
    },
}

/// One event: the `counter`-th write issued by `actor` for one key. The actor is a node
/// *incarnation* (`name@incarnation`, see `replica::Incarnation`), not a bare node name: a
/// node that lost its data comes back as a new actor and cannot re-issue a dot its peers
/// already hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot {
    /// The node incarnation that issued the event.
    pub actor: String,
    /// Strictly increasing per (actor, key).
    pub counter: u64,
}

/// A version vector: for every actor, the highest counter seen. Counters for one actor and
/// key are contiguous, so `vv[a] = n` means "events (a,1)..(a,n) are all known".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<String, u64>);

impl VersionVector {
    /// The empty vector: has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter recorded for `actor` (0 when absent).
    pub fn get(&self, actor: &str) -> u64 {
        self.0.get(actor).copied().unwrap_or(0)
    }

    /// Whether the event `dot` is among those this vector has seen.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Raise `actor`'s entry to at least `counter`.
    pub fn witness(&mut self, actor: &str, counter: u64) {
        let entry = self.0.entry(actor.to_string()).or_insert(0);
        if *entry < counter {
            *entry = counter;
        }
    }

    /// Pointwise maximum: the events seen by either vector.
    pub fn join(&mut self, other: &VersionVector) {
        for (actor, counter) in &other.0 {
            self.witness(actor, *counter);
        }
    }

    /// Partial order of vectors: `Less` means `self` happened before `other`, `None` means
    /// concurrent.
    pub fn partial_cmp_vv(&self, other: &VersionVector) -> Option<Ordering> {
        let mut less = false;
        let mut greater = false;
        for actor in self.0.keys().chain(other.0.keys()) {
            match self.get(actor).cmp(&other.get(actor)) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
        }
        match (less, greater) {
            (false, false) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (true, true) => None,
        }
    }

    /// The dot `actor` issues for a new write to a copy that has seen `self`, made by a
    /// client that saw `context`: one more than anything this actor issued or anyone saw
    /// for the key, so the dot is new even if the context is ahead of the copy. Refused,
    /// rather than wrapped, when that counter is exhausted.
    pub fn next_dot(&self, actor: &str, context: &VersionVector) -> Result<Dot, CausalityError> {
        let counter = self
            .get(actor)
            .max(context.get(actor))
            .checked_add(1)
            .ok_or_else(|| CausalityError::CounterExhausted {
                actor: actor.to_string(),
            })?;
        Ok(Dot {
            actor: actor.to_string(),
            counter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        VersionVector(entries.iter().map(|(a, c)| (a.to_string(), *c)).collect())
    }

    /// Goal: the partial order of version vectors classifies before/after/concurrent.
    #[test]
    fn version_vector_order() {
        assert_eq!(
            vv(&[("a", 1)]).partial_cmp_vv(&vv(&[("a", 2)])),
            Some(Ordering::Less)
        );
        assert_eq!(
            vv(&[("a", 1), ("b", 1)]).partial_cmp_vv(&vv(&[("a", 2)])),
            None
        );
        assert_eq!(vv(&[]).partial_cmp_vv(&vv(&[])), Some(Ordering::Equal));
    }

    /// Goal: the next dot is one past both the copy and the context, and an exhausted
    /// counter is an error instead of a wrap.
    #[test]
    fn next_dot_is_new_or_refused() {
        let dot = vv(&[("n1", 2)]).next_dot("n1", &vv(&[("n1", 5)])).unwrap();
        assert_eq!((dot.actor.as_str(), dot.counter), ("n1", 6));
        let e = vv(&[("n1", u64::MAX)])
            .next_dot("n1", &VersionVector::new())
            .unwrap_err();
        assert!(matches!(e, CausalityError::CounterExhausted { .. }), "{e}");
    }
}
