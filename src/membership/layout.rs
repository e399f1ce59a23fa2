//! Layouts: who owns what, as numbered versions an operator stages and commits.
//!
//! Ownership is never gossip or failure-detector output (Cassandra's gossiped token
//! metadata diverged in the field). A [`Layout`] is an immutable member list (names,
//! addresses, zones) with a version; the ring of each version is computed from it by
//! [`crate::ring`], so every node that holds version `v` places every key alike.
//!
//! A change goes through three steps:
//! 1. **Staged**: `join`, `leave` and `remove` are [`Change`]s kept by the node the operator
//!    talks to, on top of the version they were staged against; [`Plan`] shows what they
//!    would move.
//! 2. **Committed**: the node proposes `version + 1` to the members of the current version
//!    and it takes effect only once a majority accepted it ([`Acceptor`]: single-decree
//!    Paxos per version). So two commits staged on the same version cannot both take
//!    effect: the second learns it lost and nothing of it is applied.
//! 3. **Transferred**: several versions stay *live* at once in a [`History`] until the
//!    data has moved (Garage lost writes under layout changes until it did the same).
//!    Writes reach a quorum of the owners in *every* live version; reads go to the owners
//!    in the *oldest* live version, whose members all hold their data. Each node says
//!    when it has applied a version with no older write still in flight (`acked`) and when
//!    it has received every range it gained (`synced`, [`crate::transfer`]); once every
//!    member of the newest version is synced on it, the older versions are dropped
//!    ([`History::prune`]).
//!
//! Everything here is plain data and decisions; the node persists it and moves it over
//! the network.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::Member;
use crate::ring::{Ring, RingError};

/// Why a layout change or a layout message cannot be taken.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The change does not fit the layout it is staged on.
    #[error("{0}")]
    BadChange(String),
    /// The layout's members do not make a ring.
    #[error("layout v{version}: {source}")]
    Ring {
        /// The layout's version.
        version: u64,
        /// What is wrong.
        source: RingError,
    },
    /// Two different layouts claim the same version: consensus was bypassed.
    #[error("two different layouts claim version {0}; keeping the one this node holds")]
    Diverged(u64),
    /// A committed layout that does not follow the newest one held, with versions missing
    /// in between.
    #[error("layout v{got} does not follow v{newest}: versions in between are missing")]
    Gap {
        /// The newest version held.
        newest: u64,
        /// The version received.
        got: u64,
    },
    /// A layout or history that breaks the rules (from a peer, or a bad change).
    #[error("invalid layout: {0}")]
    Invalid(String),
    /// There is nothing staged to commit.
    #[error("nothing is staged: stage a change with `cluster join`, `leave` or `remove` first")]
    NothingStaged,
    /// The staged changes were staged on an older version than the current one.
    #[error("the staged changes were made on layout v{staged_on}, but another commit took effect since (v{current} is current now): `cluster abort` and stage them again")]
    StaleStage {
        /// The version the changes were staged on.
        staged_on: u64,
        /// The current version.
        current: u64,
    },
}

/// One version of who owns what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The version: 1 for the cluster's first, then one more per commit.
    pub version: u64,
    /// Tokens per node (`ring.vnodes`).
    pub vnodes: usize,
    /// The nodes that own data in this version, in the order their ring is built.
    pub members: Vec<Member>,
    /// Members of the previous version dropped by `remove` (dead): nobody waits for them
    /// or asks them for data while this version is being transferred.
    #[serde(default)]
    pub removed: Vec<String>,
}

impl Layout {
    /// The first layout, from `cluster.nodes`.
    pub fn initial(members: Vec<Member>, vnodes: usize) -> Result<Layout, LayoutError> {
        let l = Layout {
            version: 1,
            vnodes,
            members,
            removed: Vec::new(),
        };
        l.ring()?;
        Ok(l)
    }

    /// Check the rules every layout keeps, whatever sent it: at least one and at most
    /// [`MAX_MEMBERS`] members with valid, distinct names and addresses, and 1..=4096
    /// tokens each (what `ring.vnodes` allows). Bounds the work and memory a ring costs.
    pub fn check(&self) -> Result<(), LayoutError> {
        let bad = |m: String| Err(LayoutError::Invalid(format!("v{}: {m}", self.version)));
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return bad(format!(
                "{} members (expected 1..={MAX_MEMBERS})",
                self.members.len()
            ));
        }
        if !(1..=4096).contains(&self.vnodes) {
            return bad(format!("vnodes = {} (expected 1..=4096)", self.vnodes));
        }
        for (i, m) in self.members.iter().enumerate() {
            check_name(&m.name)
                .map_err(|e| LayoutError::Invalid(format!("v{}: {e}", self.version)))?;
            if self.members[..i].iter().any(|o| o.addr == m.addr) {
                return bad(format!("address {} is listed twice", m.addr));
            }
        }
        self.ring().map(|_| ())
    }

    /// The ring of this version.
    pub fn ring(&self) -> Result<Ring, LayoutError> {
        let names = self.names();
        let zones: Vec<Option<String>> = self.members.iter().map(|m| m.zone.clone()).collect();
        Ring::with_zones(&names, &zones, self.vnodes).map_err(|source| LayoutError::Ring {
            version: self.version,
            source,
        })
    }

    /// Member names, in order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Whether `name` owns data in this version.
    pub fn has(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name)
    }

    /// A digest that tells two layouts apart (what commits compare).
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&rmp_serde::to_vec(self).unwrap_or_default())
    }

    /// The next version: this one with `changes` applied.
    pub fn apply(&self, changes: &[Change]) -> Result<Layout, LayoutError> {
        let mut next = Layout {
            version: self.version + 1,
            vnodes: self.vnodes,
            members: self.members.clone(),
            removed: Vec::new(),
        };
        for c in changes {
            match c {
                Change::Join { name, addr, zone } => {
                    if next.has(name) {
                        return Err(LayoutError::BadChange(format!(
                            "{name} is already a member"
                        )));
                    }
                    if let Some(m) = next.members.iter().find(|m| m.addr == *addr) {
                        return Err(LayoutError::BadChange(format!(
                            "address {addr} is already {}'s",
                            m.name
                        )));
                    }
                    next.members.push(Member {
                        name: name.clone(),
                        addr: *addr,
                        zone: zone.clone(),
                    });
                }
                Change::Leave { name } | Change::Remove { name } => {
                    if !next.has(name) {
                        return Err(LayoutError::BadChange(format!(
                            "{name} is not a member of layout v{}",
                            self.version
                        )));
                    }
                    next.members.retain(|m| m.name != *name);
                    if matches!(c, Change::Remove { .. }) {
                        next.removed.push(name.clone());
                    }
                }
            }
        }
        if next.members.is_empty() {
            return Err(LayoutError::BadChange(
                "the change would leave no member: a cluster needs at least one node".into(),
            ));
        }
        for c in changes {
            if let Change::Join { name, .. } = c {
                check_name(name).map_err(LayoutError::BadChange)?;
            }
        }
        next.check()?;
        Ok(next)
    }
}

/// Most members a layout may have.
pub const MAX_MEMBERS: usize = 256;

/// A node name: 1 to 63 ASCII letters, digits and '-', not starting with '-' (it is also a
/// certificate's DNS name and a directory name).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid node name: use 1 to 63 ASCII letters, digits and '-', not starting with '-'"
        ))
    }
}

/// One staged change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A new node takes a share of the ranges.
    Join {
        /// Its name (the DNS name in its certificate).
        name: String,
        /// Its QUIC address.
        addr: std::net::SocketAddr,
        /// Its zone, if the cluster uses zones.
        zone: Option<String>,
    },
    /// A live node hands its ranges over, then owns nothing.
    Leave {
        /// Its name.
        name: String,
    },
    /// A dead node is dropped; the survivors re-replicate its ranges.
    Remove {
        /// Its name.
        name: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Join { name, addr, zone } => {
                write!(f, "join {name} at {addr}")?;
                if let Some(z) = zone {
                    write!(f, " in zone {z}")?;
                }
                Ok(())
            }
            Change::Leave { name } => write!(f, "leave {name} (hands its data over)"),
            Change::Remove { name } => {
                write!(
                    f,
                    "remove {name} (dead: its ranges re-replicate from survivors)"
                )
            }
        }
    }
}

/// Changes staged on one version, waiting for `commit` or `abort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The version they apply to.
    pub base: u64,
    /// In the order staged.
    pub changes: Vec<Change>,
}

/// The layout versions a node holds and what each node has said about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Live versions, oldest first, consecutive; the last is the current one. More than one
    /// while data moves.
    pub live: Vec<Layout>,
    /// Per node, the newest version it applied with no write under an older one still in
    /// flight on it.
    pub acked: BTreeMap<String, u64>,
    /// Per node, the newest version whose ranges it holds all the data of.
    pub synced: BTreeMap<String, u64>,
}

impl History {
    /// A history holding only `first`, every member acked and synced on it.
    pub fn new(first: Layout) -> History {
        let v = first.version;
        let names = first.names();
        History {
            live: vec![first],
            acked: names.iter().map(|n| (n.clone(), v)).collect(),
            synced: names.into_iter().map(|n| (n, v)).collect(),
        }
    }

    /// Check a history that came from elsewhere: at least one live version, consecutive,
    /// each a valid layout.
    pub fn check(&self) -> Result<(), LayoutError> {
        if self.live.is_empty() || self.live.len() > 64 {
            return Err(LayoutError::Invalid(format!(
                "a history with {} live versions (expected 1..=64)",
                self.live.len()
            )));
        }
        for (i, l) in self.live.iter().enumerate() {
            if i > 0 && l.version != self.live[i - 1].version + 1 {
                return Err(LayoutError::Invalid(format!(
                    "live versions are not consecutive: v{} after v{}",
                    l.version,
                    self.live[i - 1].version
                )));
            }
            l.check()?;
        }
        Ok(())
    }

    /// The current (newest) version.
    pub fn current(&self) -> &Layout {
        self.live
            .last()
            .expect("a history holds at least one layout")
    }

    /// The version reads use: the oldest live one, whose members hold all their data.
    pub fn read_layout(&self) -> &Layout {
        &self.live[0]
    }

    /// Whether data is moving (more than one live version).
    pub fn in_transition(&self) -> bool {
        self.live.len() > 1
    }

    /// Every node of every live version, in first-seen order.
    pub fn everyone(&self) -> Vec<Member> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for l in &self.live {
            for m in &l.members {
                if seen.insert(m.name.clone()) {
                    out.push(m.clone());
                }
            }
        }
        out
    }

    /// Whether `name` owns data in any live version.
    pub fn is_member(&self, name: &str) -> bool {
        self.live.iter().any(|l| l.has(name))
    }

    /// Nodes dropped by `remove` in a live version after the first: nobody waits for them.
    pub fn removed(&self) -> BTreeSet<String> {
        self.live
            .iter()
            .skip(1)
            .flat_map(|l| l.removed.iter().cloned())
            .collect()
    }

    /// The nodes whose acknowledgement of the current version transfers wait for: every
    /// node of every live version but the removed ones.
    pub fn ack_needed(&self) -> Vec<String> {
        let removed = self.removed();
        self.everyone()
            .into_iter()
            .map(|m| m.name)
            .filter(|n| !removed.contains(n))
            .collect()
    }

    /// Whether every node that must has acknowledged the current version, so no write
    /// under an older version is in flight anywhere and transfers may start.
    pub fn all_acked(&self) -> bool {
        let v = self.current().version;
        self.ack_needed()
            .iter()
            .all(|n| self.acked.get(n).copied().unwrap_or(0) >= v)
    }

    /// The nodes transfers for the current version pull from: members of the older live
    /// versions but the removed ones.
    pub fn sources(&self) -> Vec<String> {
        let removed = self.removed();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for l in &self.live[..self.live.len() - 1] {
            for m in &l.members {
                if !removed.contains(&m.name) && seen.insert(m.name.clone()) {
                    out.push(m.name.clone());
                }
            }
        }
        out
    }

    /// Record that `node` acknowledged version `v`; true if that is news.
    pub fn ack(&mut self, node: &str, v: u64) -> bool {
        raise(&mut self.acked, node, v)
    }

    /// Record that `node` holds all the data of its ranges in version `v`; true if news.
    pub fn sync(&mut self, node: &str, v: u64) -> bool {
        raise(&mut self.synced, node, v)
    }

    /// Append a newly committed version. Returns false if it is already held; refuses a
    /// different layout under a held version, and a version that skips some.
    pub fn add_committed(&mut self, layout: Layout) -> Result<bool, LayoutError> {
        layout.check()?;
        let newest = self.current().version;
        if layout.version <= newest {
            if let Some(held) = self.live.iter().find(|l| l.version == layout.version) {
                if held.digest() != layout.digest() {
                    return Err(LayoutError::Diverged(layout.version));
                }
            }
            return Ok(false);
        }
        if layout.version != newest + 1 {
            return Err(LayoutError::Gap {
                newest,
                got: layout.version,
            });
        }
        self.live.push(layout);
        Ok(true)
    }

    /// Take in what another node holds: newer versions, its acks and syncs, and any
    /// pruning it did. Returns whether anything changed.
    pub fn merge(&mut self, other: &History) -> Result<bool, LayoutError> {
        other.check()?;
        let before = self.clone();
        let mut all: BTreeMap<u64, Layout> = BTreeMap::new();
        for l in &self.live {
            all.insert(l.version, l.clone());
        }
        for l in &other.live {
            match all.get(&l.version) {
                Some(held) if held.digest() != l.digest() => {
                    return Err(LayoutError::Diverged(l.version))
                }
                Some(_) => {}
                None => {
                    all.insert(l.version, l.clone());
                }
            }
        }
        let oldest = self.live[0].version.max(other.live[0].version);
        self.live = all.into_values().filter(|l| l.version >= oldest).collect();
        for (n, v) in &other.acked {
            raise(&mut self.acked, n, *v);
        }
        for (n, v) in &other.synced {
            raise(&mut self.synced, n, *v);
        }
        self.prune();
        self.forget_gone();
        Ok(*self != before)
    }

    /// Once every member of the current version is synced on it, drop every older
    /// version; keep acks and syncs of live nodes only. Returns whether any dropped.
    ///
    /// Only the current version can become the oldest: a node syncs on the current
    /// version only, pulling what it gains there relative to the *oldest* live one, so
    /// `synced >= v` proves nothing about an intermediate version. With v2 (n4 joined)
    /// oldest, v3 (n4 left) and v4 (n4 joined again) stacked on it, a node that gains a
    /// range in v3 but not in v4 syncs on v4 without pulling it; making v3 the read
    /// layout would send reads, and lead writes, to an owner without the data (the
    /// simulator's `membership` swarm lost acknowledged set adds that way).
    pub fn prune(&mut self) -> bool {
        if !self.in_transition() {
            return false;
        }
        let current = self.current();
        let synced = current
            .members
            .iter()
            .all(|m| self.synced.get(&m.name).copied().unwrap_or(0) >= current.version);
        if !synced {
            return false;
        }
        let last = self.live.len() - 1;
        self.live.drain(..last);
        self.forget_gone();
        true
    }

    /// Keep acks and syncs of nodes in a live version only.
    fn forget_gone(&mut self) {
        let everyone: BTreeSet<String> = self.everyone().into_iter().map(|m| m.name).collect();
        self.acked.retain(|n, _| everyone.contains(n));
        self.synced.retain(|n, _| everyone.contains(n));
    }

    /// The address of `name` in the newest live version that has it.
    pub fn addr_of(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.live
            .iter()
            .rev()
            .flat_map(|l| l.members.iter())
            .find(|m| m.name == name)
            .map(|m| m.addr)
    }
}

fn raise(map: &mut BTreeMap<String, u64>, node: &str, v: u64) -> bool {
    let e = map.entry(node.to_string()).or_insert(0);
    if v > *e {
        *e = v;
        true
    } else {
        false
    }
}

/// Whether `node` holds, in `new` with `n` replicas per key, a range it did not hold in
/// `old`: whether it has data to receive.
pub fn gains(old: &Ring, new: &Ring, node: &str, n: usize) -> bool {
    arcs(old, new).any(|t| {
        new.preference_list_for_token(t, n)
            .iter()
            .any(|x| x == node)
            && !old
                .preference_list_for_token(t, n)
                .iter()
                .any(|x| x == node)
    })
}

/// The end token of every arc on which both rings' preference lists are constant.
fn arcs<'a>(old: &'a Ring, new: &'a Ring) -> impl Iterator<Item = u64> + 'a {
    let mut all: Vec<u64> = old.tokens().chain(new.tokens()).collect();
    all.sort_unstable();
    all.dedup();
    all.into_iter()
}

/// What a staged change would do, for `cluster plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The version it would make.
    pub version: u64,
    /// The changes, as staged.
    pub changes: Vec<Change>,
    /// Replicas per key the figures are for (the largest N of the keyspaces).
    pub n: usize,
    /// Arcs of the ring whose replica set changes, and the arcs there are.
    pub ranges_moving: usize,
    /// All arcs of the combined rings.
    pub ranges_total: usize,
    /// Share of the replica slots (key range × replica) that move to a new node (0..1).
    pub moved_share: f64,
    /// Estimated bytes to transfer: each data holder's size times the share of its
    /// replica slots it loses.
    pub bytes_to_transfer: u64,
    /// Each member's share of the replica slots after the change (sums to 1).
    pub balance_after: BTreeMap<String, f64>,
    /// Each member's share before.
    pub balance_before: BTreeMap<String, f64>,
}

impl Plan {
    /// The plan of going from `old` to `new` with `n` replicas per key; `sizes` is each
    /// node's data size in bytes, as far as known.
    pub fn of(
        old: &Layout,
        new: &Layout,
        changes: &[Change],
        n: usize,
        sizes: &BTreeMap<String, u64>,
    ) -> Result<Plan, LayoutError> {
        let (ro, rn) = (old.ring()?, new.ring()?);
        let total = u64::MAX as f64 + 1.0;
        let mut before: BTreeMap<String, f64> = BTreeMap::new();
        let mut after: BTreeMap<String, f64> = BTreeMap::new();
        let mut lost: BTreeMap<String, f64> = BTreeMap::new();
        let (mut moving, mut arcs_total, mut moved) = (0usize, 0usize, 0f64);
        let tokens: Vec<u64> = arcs(&ro, &rn).collect();
        for (i, t) in tokens.iter().enumerate() {
            let prev = if i == 0 {
                tokens[tokens.len() - 1]
            } else {
                tokens[i - 1]
            };
            let width = if tokens.len() == 1 {
                1.0
            } else {
                t.wrapping_sub(prev) as f64 / total
            };
            let po = ro.preference_list_for_token(*t, n);
            let pn = rn.preference_list_for_token(*t, n);
            arcs_total += 1;
            let newcomers = pn.iter().filter(|x| !po.contains(x)).count();
            if newcomers > 0 {
                moving += 1;
            }
            moved += width * newcomers as f64 / pn.len().max(1) as f64;
            for x in &po {
                *before.entry(x.clone()).or_default() += width / po.len() as f64;
                if !pn.contains(x) {
                    *lost.entry(x.clone()).or_default() += width / po.len() as f64;
                }
            }
            for x in &pn {
                *after.entry(x.clone()).or_default() += width / pn.len() as f64;
            }
        }
        let mut bytes = 0u64;
        for (node, share_lost) in &lost {
            let held = before.get(node).copied().unwrap_or(0.0);
            if held > 0.0 {
                let size = sizes.get(node).copied().unwrap_or(0) as f64;
                bytes += (size * share_lost / held) as u64;
            }
        }
        // A node that does not lose a replica slot still streams to newcomers when another
        // holder is removed: sizes of survivors cover that, since every holder of a moved
        // slot's data sends it (the receiver merges copies).
        Ok(Plan {
            version: new.version,
            changes: changes.to_vec(),
            n,
            ranges_moving: moving,
            ranges_total: arcs_total,
            moved_share: moved,
            bytes_to_transfer: bytes,
            balance_after: after,
            balance_before: before,
        })
    }
}

/// A Paxos ballot: a round number, ties broken by the proposer's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ballot {
    /// Higher rounds win.
    pub round: u64,
    /// The proposing node.
    pub node: String,
}

/// An acceptor's answer to a prepare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Promise {
    /// Promised not to accept lower ballots; carries what it accepted for the slot, if any.
    Promised(Option<(Ballot, Layout)>),
    /// Already promised a higher ballot.
    Rejected(Ballot),
    /// The slot is decided already: here is the history holding it.
    Decided(Box<History>),
    /// This acceptor has not learnt the version before the slot yet (its current one is
    /// given): it cannot judge the slot; gossip will catch it up.
    Lagging(u64),
}

/// An acceptor's answer to an accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Accepted {
    /// Accepted.
    Accepted,
    /// Promised a higher ballot meanwhile.
    Rejected(Ballot),
    /// The slot is decided already.
    Decided(Box<History>),
    /// This acceptor has not learnt the version before the slot yet.
    Lagging(u64),
}

/// One node's acceptor state for the next version: what it promised and accepted. Kept
/// durably (a node that forgot a promise could let two layouts win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptor {
    /// The version being decided.
    pub slot: u64,
    /// The highest ballot promised for it.
    pub promised: Option<Ballot>,
    /// The last layout accepted for it, with its ballot.
    pub accepted: Option<(Ballot, Layout)>,
}

impl Acceptor {
    /// Forget slots that are decided (the history's current version reached them).
    fn catch_up(&mut self, current: u64) {
        if self.slot <= current {
            *self = Acceptor {
                slot: current + 1,
                promised: None,
                accepted: None,
            };
        }
    }

    /// Phase 1: a proposer asks to lead `slot` with `ballot`.
    pub fn prepare(&mut self, history: &History, slot: u64, ballot: &Ballot) -> Promise {
        let current = history.current().version;
        self.catch_up(current);
        if slot <= current {
            return Promise::Decided(Box::new(history.clone()));
        }
        if slot > self.slot {
            // This node lags: it cannot judge a later slot before it learns the ones
            // before it.
            return Promise::Lagging(current);
        }
        if let Some(p) = &self.promised {
            if p > ballot {
                return Promise::Rejected(p.clone());
            }
        }
        self.promised = Some(ballot.clone());
        Promise::Promised(self.accepted.clone())
    }

    /// Phase 2: a proposer asks to accept `layout` for its version with `ballot`.
    pub fn accept(&mut self, history: &History, ballot: &Ballot, layout: &Layout) -> Accepted {
        let current = history.current().version;
        self.catch_up(current);
        if layout.version <= current {
            return Accepted::Decided(Box::new(history.clone()));
        }
        if layout.version != self.slot {
            return Accepted::Lagging(current);
        }
        if let Some(p) = &self.promised {
            if p > ballot {
                return Accepted::Rejected(p.clone());
            }
        }
        self.promised = Some(ballot.clone());
        self.accepted = Some((ballot.clone(), layout.clone()));
        Accepted::Accepted
    }
}

/// The proposer's choice after phase 1: the layout it must propose given the promises a
/// majority returned (the accepted layout with the highest ballot, else its own).
pub fn choose(own: Layout, promises: &[Option<(Ballot, Layout)>]) -> Layout {
    promises
        .iter()
        .flatten()
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, l)| l.clone())
        .unwrap_or(own)
}

/// Member `n{i}` on loopback port 7100 + i: the members unit tests build layouts of.
#[cfg(test)]
pub(crate) fn test_member(i: usize) -> Member {
    Member {
        name: format!("n{i}"),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7100 + i as u16)),
        zone: None,
    }
}

/// Members `n1`..`nN` ([`test_member`]).
#[cfg(test)]
pub(crate) fn test_members(n: usize) -> Vec<Member> {
    (1..=n).map(test_member).collect()
}

/// The smallest majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_member as member;

    fn layout(n: usize) -> Layout {
        Layout::initial((1..=n).map(member).collect(), 64).unwrap()
    }

    fn join(i: usize) -> Change {
        let m = member(i);
        Change::Join {
            name: m.name,
            addr: m.addr,
            zone: None,
        }
    }

    fn ballot(round: u64, node: &str) -> Ballot {
        Ballot {
            round,
            node: node.into(),
        }
    }

    /// Goal: changes apply to a new version and bad ones are refused with their reason.
    #[test]
    fn changes_apply_and_bad_ones_are_refused() {
        let l1 = layout(3);
        let l2 = l1.apply(&[join(4)]).unwrap();
        assert_eq!(l2.version, 2);
        assert_eq!(l2.names(), ["n1", "n2", "n3", "n4"]);
        let e = l1.apply(&[join(2)]).unwrap_err().to_string();
        assert!(e.contains("n2 is already a member"), "{e}");
        let e = l1
            .apply(&[Change::Leave { name: "n9".into() }])
            .unwrap_err()
            .to_string();
        assert!(e.contains("n9 is not a member"), "{e}");
        let mut dup = join(4);
        if let Change::Join { addr, .. } = &mut dup {
            *addr = member(1).addr;
        }
        let e = l1.apply(&[dup]).unwrap_err().to_string();
        assert!(e.contains("already n1's"), "{e}");
        let all: Vec<Change> = (1..=3)
            .map(|i| Change::Leave {
                name: format!("n{i}"),
            })
            .collect();
        assert!(l1
            .apply(&all)
            .unwrap_err()
            .to_string()
            .contains("no member"));
        let l3 = l2.apply(&[Change::Remove { name: "n2".into() }]).unwrap();
        assert_eq!(l3.removed, ["n2"]);
    }

    /// Goal: a history keeps both versions live until every member of the new one is
    /// synced, reads use the old one meanwhile, and merging is order-free.
    #[test]
    fn history_moves_through_ack_sync_prune() {
        let mut h = History::new(layout(3));
        let l2 = h.current().apply(&[join(4)]).unwrap();
        assert!(h.add_committed(l2.clone()).unwrap());
        assert!(!h.add_committed(l2.clone()).unwrap());
        assert!(h.in_transition());
        assert_eq!(h.read_layout().version, 1);
        assert!(!h.all_acked());
        for n in ["n1", "n2", "n3"] {
            h.ack(n, 2);
        }
        assert!(!h.all_acked(), "n4 has not acknowledged");
        h.ack("n4", 2);
        assert!(h.all_acked());
        assert_eq!(h.sources(), ["n1", "n2", "n3"]);
        for n in ["n1", "n2", "n3"] {
            h.sync(n, 2);
        }
        assert!(!h.prune(), "n4 is not synced yet");
        let mut other = h.clone();
        other.sync("n4", 2);
        assert!(h.merge(&other).unwrap());
        assert!(!h.in_transition());
        assert_eq!(h.read_layout().version, 2);
        // A lagging node that merges the pruned history drops v1 as well.
        let mut lag = History::new(layout(3));
        lag.merge(&h).unwrap();
        assert_eq!(lag, h);
    }

    /// Goal: an intermediate version never becomes the read layout. v2 (n4 joined) is
    /// settled, v3 (n4 leaves) and v4 (n4 joins again) stack on it; a node that syncs on
    /// v4 pulled only what it gains from v2 to v4, not what it gains in v3, so v2 stays
    /// oldest until every member of v4 is synced, and then v4 alone is live (the
    /// simulator's membership swarm found reads and lead writes going to a v3 owner that
    /// never received its v3 ranges: seed 21, acknowledged set adds lost).
    #[test]
    fn only_the_newest_version_becomes_the_read_layout() {
        let mut h = History::new(layout(3));
        let l2 = h.current().apply(&[join(4)]).unwrap();
        h.add_committed(l2.clone()).unwrap();
        for n in ["n1", "n2", "n3", "n4"] {
            h.sync(n, 2);
        }
        assert!(h.prune());
        assert_eq!((h.read_layout().version, h.live.len()), (2, 1));
        let l3 = l2.apply(&[Change::Leave { name: "n4".into() }]).unwrap();
        h.add_committed(l3.clone()).unwrap();
        let l4 = l3.apply(&[join(4)]).unwrap();
        h.add_committed(l4).unwrap();
        for n in ["n1", "n2", "n3"] {
            h.sync(n, 4);
        }
        assert!(!h.prune(), "n4 is not synced on v4 yet");
        assert_eq!(
            h.read_layout().version,
            2,
            "v3 must not become the read layout"
        );
        let mut other = h.clone();
        other.sync("n4", 4);
        assert!(h.merge(&other).unwrap());
        assert_eq!(h.live.len(), 1);
        assert_eq!(h.read_layout().version, 4);
    }

    /// Goal: a different layout under a held version, or a version gap, is refused.
    #[test]
    fn diverged_and_gapped_layouts_are_refused() {
        let mut h = History::new(layout(3));
        let a = h.current().apply(&[join(4)]).unwrap();
        let b = h.current().apply(&[join(5)]).unwrap();
        h.add_committed(a).unwrap();
        assert_eq!(h.add_committed(b.clone()), Err(LayoutError::Diverged(2)));
        let mut other = History::new(layout(3));
        other.add_committed(b).unwrap();
        assert_eq!(h.merge(&other), Err(LayoutError::Diverged(2)));
        let far = Layout {
            version: 9,
            ..layout(3)
        };
        assert!(matches!(
            h.add_committed(far),
            Err(LayoutError::Gap { newest: 2, got: 9 })
        ));
    }

    /// Goal: a removed node is neither waited for nor asked for data.
    #[test]
    fn removed_nodes_are_not_waited_for() {
        let mut h = History::new(layout(4));
        let l2 = h
            .current()
            .apply(&[Change::Remove { name: "n4".into() }])
            .unwrap();
        h.add_committed(l2).unwrap();
        assert_eq!(h.ack_needed(), ["n1", "n2", "n3"]);
        assert_eq!(h.sources(), ["n1", "n2", "n3"]);
    }

    /// Goal: of two proposers racing for the same version, only one layout can be chosen
    /// by a majority, whatever the interleaving (exhaustive over small schedules).
    #[test]
    fn two_commits_from_one_version_cannot_both_win() {
        let h = History::new(layout(3));
        let a = h.current().apply(&[join(4)]).unwrap();
        let b = h.current().apply(&[join(5)]).unwrap();
        // Each proposer: prepare on a majority, then accept on a majority; the schedule
        // picks, for each step, which acceptors see it first. Enumerate acceptor subsets
        // and interleavings of the four phases.
        let subsets: Vec<Vec<usize>> = vec![vec![0, 1], vec![1, 2], vec![0, 2], vec![0, 1, 2]];
        let orders: [[usize; 4]; 6] = [
            [0, 1, 2, 3],
            [0, 2, 1, 3],
            [0, 2, 3, 1],
            [2, 0, 1, 3],
            [2, 0, 3, 1],
            [2, 3, 0, 1],
        ];
        for sa in &subsets {
            for sb in &subsets {
                for order in &orders {
                    let mut acc = vec![Acceptor::default(); 3];
                    let mut props = [
                        (ballot(1, "n1"), a.clone(), sa, None::<Layout>, 0usize),
                        (ballot(1, "n2"), b.clone(), sb, None::<Layout>, 0usize),
                    ];
                    // Steps 0,1: proposer A prepare/accept; 2,3: proposer B.
                    for step in order {
                        let (p, phase) = (step / 2, step % 2);
                        let (bal, own, set, chosen, _) = &mut props[p];
                        if phase == 0 {
                            let mut promises = Vec::new();
                            for &i in set.iter() {
                                if let Promise::Promised(x) = acc[i].prepare(&h, 2, bal) {
                                    promises.push(x);
                                }
                            }
                            if promises.len() >= majority(3) {
                                *chosen = Some(choose(own.clone(), &promises));
                            }
                        } else if let Some(l) = chosen.clone() {
                            let oks = set
                                .iter()
                                .filter(|&&i| acc[i].accept(&h, bal, &l) == Accepted::Accepted)
                                .count();
                            props[p].4 = oks;
                        }
                    }
                    let won: Vec<u64> = props
                        .iter()
                        .filter(|p| p.4 >= majority(3))
                        .map(|p| p.3.as_ref().unwrap().digest())
                        .collect();
                    if won.len() == 2 {
                        assert_eq!(
                            won[0], won[1],
                            "two layouts chosen: {sa:?} {sb:?} {order:?}"
                        );
                    }
                }
            }
        }
    }

    /// Goal: a plan for one join moves about 1/(n+1) of the replica slots, all to the
    /// newcomer, and the result is balanced within 10%.
    #[test]
    fn a_join_moves_about_its_share() {
        let l1 = Layout::initial((1..=3).map(member).collect(), 256).unwrap();
        let l2 = l1.apply(&[join(4)]).unwrap();
        let sizes: BTreeMap<String, u64> = (1..=3).map(|i| (format!("n{i}"), 1_000_000)).collect();
        let p = Plan::of(&l1, &l2, &[join(4)], 3, &sizes).unwrap();
        assert!(
            (p.moved_share - 0.25).abs() < 0.03,
            "moved {:.3} of the slots",
            p.moved_share
        );
        let even = 1.0 / 4.0;
        for (n, s) in &p.balance_after {
            assert!((s - even).abs() / even < 0.10, "{n} holds {s:.3}");
        }
        // Each of 3 nodes holding 1 MB loses about a quarter of its slots.
        assert!(
            (600_000..=900_000).contains(&p.bytes_to_transfer),
            "{}",
            p.bytes_to_transfer
        );
        let (ro, rn) = (l1.ring().unwrap(), l2.ring().unwrap());
        assert!(gains(&ro, &rn, "n4", 3));
        assert!(!gains(&ro, &rn, "n1", 3));
    }

    /// Goal: histories and layouts from elsewhere are checked before anything uses them:
    /// no live version, gaps, no members, absurd token counts, bad names and repeated
    /// addresses are refused with the reason (a peer's bytes must not panic or exhaust a
    /// node), and a join of a badly named node is refused.
    #[test]
    fn bad_histories_and_layouts_are_refused() {
        let good = History::new(layout(3));
        let mut h = good.clone();
        let empty = History {
            live: vec![],
            ..good.clone()
        };
        assert!(h
            .merge(&empty)
            .unwrap_err()
            .to_string()
            .contains("0 live versions"));
        let mut gap = good.clone();
        let mut l3 = layout(3);
        l3.version = 3;
        gap.live.push(l3);
        assert!(h
            .merge(&gap)
            .unwrap_err()
            .to_string()
            .contains("not consecutive"));
        let mut huge = layout(3);
        huge.vnodes = 1 << 30;
        assert!(huge.check().unwrap_err().to_string().contains("vnodes"));
        let mut none = layout(3);
        none.members.clear();
        assert!(none.check().is_err());
        let mut twice = layout(3);
        twice.members[1].addr = twice.members[0].addr;
        assert!(twice
            .check()
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let mut badname = layout(3);
        badname.members[0].name = "no/slash".into();
        assert!(badname
            .check()
            .unwrap_err()
            .to_string()
            .contains("not a valid node name"));
        let e = layout(3)
            .apply(&[Change::Join {
                name: String::new(),
                addr: "127.0.0.1:9".parse().unwrap(),
                zone: None,
            }])
            .unwrap_err();
        assert!(e.to_string().contains("not a valid node name"), "{e}");
        assert_eq!(h, good, "a refused merge changes nothing");
    }
}
