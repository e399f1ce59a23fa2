//! The last-write-wins policies: of concurrent versions, exactly one survives, the
//! greatest by a total order; the others are dropped — acknowledged writes lost by design.
//!
//! The three variants differ only in that order and in where its timestamp comes from:
//! - `lww-timestamp`: the lead's hybrid logical clock, then the dot;
//! - `lww-actor`: the rank of the write's client actor in the keyspace's
//!   `actor_priority` (unknown actors lose to every listed one), then the lead's clock;
//! - `lww-client`: the client's own timestamp (Cassandra's `USING TIMESTAMP`). Those
//!   stamps never reach the node's clock: one far-future stamp would poison every later
//!   write on the node.
//!
//! The merge is a plain maximum over every version either side holds — causality does not
//! enter, so a lower-ranked write cannot displace a higher-ranked one even if it saw it
//! (exactly Cassandra's rule for timestamps). A max is trivially commutative, associative
//! and idempotent; mixing it with causal overwrites is not (property tests found that).

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use super::{plain, ConflictResolver, LeadWrite, PolicyError};
use crate::causality::{CausalityError, Dot};
use crate::clock::Hlc;
use crate::crdt::CrdtOp;
use crate::keyspace::KeyspaceDef;
use crate::object::{Object, Sibling};

/// Which total order decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The lead's hybrid-logical-clock timestamp.
    Timestamp,
    /// The client actor's priority, then the timestamp.
    Actor,
    /// The client's timestamp.
    Client,
}

/// Keep the greatest version by `order`.
pub(super) struct Lww {
    order: Order,
}

/// `lww-timestamp`.
pub(super) static TIMESTAMP: Lww = Lww {
    order: Order::Timestamp,
};
/// `lww-actor`.
pub(super) static ACTOR: Lww = Lww {
    order: Order::Actor,
};
/// `lww-client`.
pub(super) static CLIENT: Lww = Lww {
    order: Order::Client,
};

/// Rank of an actor in an `lww-actor` priority list: higher wins; unknown actors lose to
/// every listed one.
fn actor_rank(priority: &[String], actor: Option<&str>) -> usize {
    actor
        .and_then(|a| priority.iter().position(|p| p == a))
        .map(|pos| priority.len() - pos)
        .unwrap_or(0)
}

impl Lww {
    /// The total order; the greatest sibling wins.
    fn key<'a>(&self, ks: &KeyspaceDef, s: &'a Sibling) -> (usize, u64, &'a Dot) {
        let rank = match self.order {
            Order::Actor => actor_rank(&ks.actor_priority, s.actor.as_deref()),
            Order::Timestamp | Order::Client => 0,
        };
        (rank, s.ts, &s.dot)
    }

    /// Keep only the greatest of the object's versions.
    fn resolve(&self, ks: &KeyspaceDef, o: &mut Object) {
        if o.siblings.len() < 2 {
            return;
        }
        let winner = o
            .siblings
            .iter()
            .max_by(|a, b| self.key(ks, a).cmp(&self.key(ks, b)))
            .cloned();
        o.siblings = winner.into_iter().collect();
    }
}

impl ConflictResolver for Lww {
    fn check_stamp(
        &self,
        ks: &KeyspaceDef,
        timestamp: Option<u64>,
        actor: Option<&str>,
    ) -> Result<(), PolicyError> {
        // A missing required stamp is reported first.
        if self.order == Order::Client && timestamp.is_none() {
            return Err(PolicyError::BadStamp(format!(
                "keyspace {:?} uses lww-client: every write needs a client timestamp",
                ks.name
            )));
        }
        if self.order == Order::Actor && actor.is_none() {
            return Err(PolicyError::BadStamp(format!(
                "keyspace {:?} uses lww-actor: every write needs an actor (one of {:?} wins over the others)",
                ks.name, ks.actor_priority
            )));
        }
        plain::refuse_unused_stamp(
            ks,
            timestamp,
            actor,
            self.order == Order::Client,
            self.order == Order::Actor,
        )
    }

    /// Batch items carry no client timestamp or actor (yet), so only `lww-timestamp`
    /// takes batches.
    fn check_batch(&self, ks: &KeyspaceDef) -> Result<(), PolicyError> {
        match self.order {
            Order::Timestamp => Ok(()),
            Order::Actor | Order::Client => Err(PolicyError::BadStamp(format!(
                "batches are not supported in {:?} keyspaces yet (items cannot carry a client timestamp or actor); write the items one by one",
                ks.policy
            ))),
        }
    }

    fn check_update(&self, ks: &KeyspaceDef, _op: &CrdtOp) -> Result<(), PolicyError> {
        Err(plain::refuse_update(ks))
    }

    /// Never stamp a write below what this copy already holds: the HLC rule. In
    /// `lww-client` keyspaces the stamp is the client's, and the stored stamps (clients'
    /// too) must never reach the node's clock.
    fn stamp(&self, hlc: &Hlc, stored: &Object, client_ts: Option<u64>) -> u64 {
        match (self.order, client_ts) {
            (Order::Client, Some(ts)) => ts,
            (Order::Client, None) => hlc.tick(),
            (Order::Timestamp | Order::Actor, _) => plain::hlc_stamp(hlc, stored),
        }
    }

    /// The dotted write, then the maximum with what the object held before — so the lead
    /// ends where a merge of the new version would.
    fn write(
        &self,
        ks: &KeyspaceDef,
        o: &mut Object,
        w: LeadWrite<'_>,
    ) -> Result<Dot, CausalityError> {
        let before = o.clone();
        let dot = o.apply_stamped_write(w.lead, w.context, w.value, w.now_ms, w.ts, w.actor)?;
        self.merge(ks, o, &before);
        Ok(dot)
    }

    fn observe(&self, hlc: &Hlc, incoming: &Object) {
        if self.order != Order::Client {
            hlc.observe(incoming.max_ts());
        }
    }

    fn merge(&self, ks: &KeyspaceDef, o: &mut Object, other: &Object) {
        for s in &other.siblings {
            if !o.siblings.iter().any(|mine| mine.dot == s.dot) {
                o.siblings.push(s.clone());
            }
        }
        o.vv.join(&other.vv);
        self.resolve(ks, o);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ks, merged};
    use super::*;
    use crate::causality::VersionVector;
    use crate::keyspace::ConflictPolicy;

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
