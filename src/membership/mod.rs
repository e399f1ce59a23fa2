//! Cluster membership: who owns what ([`layout`]), and how each member is doing
//! ([`detector`]).
//!
//! Ownership is a staged, versioned layout an operator commits (`quorumkv cluster …`);
//! the failure detector's view drives routing only (skip a down replica, pick a stand-in,
//! replay hints) and never changes who owns a key. [`Membership`] is one node's live
//! handle on the layouts: the history it holds (persisted, so a node starts from the
//! layout it last knew), the rings of every live version, its acceptor state for the next
//! commit, the changes staged on it, and the writes it coordinates under each version (so
//! it can say when none under an older one is left). The network side — spreading
//! histories, the commit protocol — is in [`sync`]; data transfers are in
//! [`crate::transfer`].

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

pub mod detector;
pub mod layout;
pub mod sync;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Member;
use crate::ring::Ring;
use crate::storage::{BatchOp, Storage, StorageError};
use layout::{Accepted, Acceptor, Ballot, Change, History, Layout, LayoutError, Promise, Staged};

/// Where a node keeps its layout history, its acceptor state and its staged changes.
const HISTORY_KEY: &[u8] = b"\xFFmeta\x00layout\x00history";
const ACCEPTOR_KEY: &[u8] = b"\xFFmeta\x00layout\x00acceptor";
const STAGED_KEY: &[u8] = b"\xFFmeta\x00layout\x00staged";

/// Why membership state cannot be loaded, kept or changed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A layout rule was broken.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The storage engine failed.
    #[error("layout storage: {0}")]
    Storage(#[from] StorageError),
    /// A stored record does not decode.
    #[error("stored layout state is corrupt: {0}")]
    Corrupt(String),
}

/// One consistent picture of the live layouts, shared by the requests that use it.
#[derive(Debug)]
pub struct View {
    /// The live versions and what nodes said about them.
    pub history: History,
    /// The ring of each live version, oldest first.
    rings: Vec<Ring>,
}

impl View {
    /// The view of `history`: its rings computed.
    pub fn new(history: History) -> Result<View, LayoutError> {
        let rings = history
            .live
            .iter()
            .map(Layout::ring)
            .collect::<Result<_, _>>()?;
        Ok(View { history, rings })
    }

    /// The ring reads use: the oldest live version's, whose owners hold all their data.
    pub fn read_ring(&self) -> &Ring {
        &self.rings[0]
    }

    /// The newest version's ring.
    pub fn current_ring(&self) -> &Ring {
        self.rings.last().expect("a view holds at least one ring")
    }

    /// Every live version's ring, oldest first.
    pub fn rings(&self) -> &[Ring] {
        &self.rings
    }

    /// The replica sets a write of `partition` must reach a quorum of: one per live
    /// version whose set differs from the others'.
    pub fn write_sets(&self, partition: &[u8], n: usize) -> Vec<Vec<String>> {
        let mut sets: Vec<Vec<String>> = Vec::with_capacity(self.rings.len());
        for r in &self.rings {
            let pl = r.preference_list(partition, n);
            if !sets.iter().any(|s| same_set(s, &pl)) {
                sets.push(pl);
            }
        }
        sets
    }

    /// Every node of every live version.
    pub fn members(&self) -> Vec<Member> {
        self.history.everyone()
    }

    /// The version reads use (the oldest live one).
    pub fn read_layout_version(&self) -> u64 {
        self.history.read_layout().version
    }

    /// The current version number.
    pub fn version(&self) -> u64 {
        self.history.current().version
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// Counts one coordinated write under a layout version until dropped.
pub struct WriteGuard {
    membership: Arc<Membership>,
    version: u64,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut m = self.membership.lock_inflight();
        let mut last = false;
        if let Some(c) = m.get_mut(&self.version) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.version);
                last = true;
            }
        }
        drop(m);
        // The last write under an older version: the current one may be acknowledged now.
        if last && self.version < self.membership.view().version() {
            self.membership.changed.notify_one();
        }
    }
}

/// Called with the new view whenever the live layouts change.
type Listener = Box<dyn Fn(&View) + Send + Sync>;

/// One node's live handle on the cluster's layouts.
pub struct Membership {
    name: String,
    storage: Arc<dyn Storage>,
    view: RwLock<Arc<View>>,
    acceptor: Mutex<Acceptor>,
    staged: Mutex<Staged>,
    /// Writes this node coordinates, by the layout version they started under.
    inflight: Mutex<BTreeMap<u64, usize>>,
    /// Woken when the history changes or a write ends: the ack and transfer loops wait on it.
    pub changed: tokio::sync::Notify,
    listeners: Mutex<Vec<Listener>>,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, MembershipError> {
    rmp_serde::from_slice(bytes).map_err(|e| MembershipError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("layout records always encode")
}

impl Membership {
    /// Node `name`'s membership: the history stored in `storage` if there is one, else a
    /// first layout of `members` (node.toml's `cluster.nodes`) with `vnodes` tokens each.
    /// Returns warnings worth logging (node.toml's member list no longer matches).
    pub fn open(
        name: &str,
        storage: Arc<dyn Storage>,
        members: Vec<Member>,
        vnodes: usize,
    ) -> Result<(Arc<Membership>, Vec<String>), MembershipError> {
        let mut warnings = Vec::new();
        let history = match storage.get(HISTORY_KEY)? {
            Some(b) => {
                let h: History = decode(&b, "layout history")?;
                let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                let cur = h.current();
                if cur.version > 1 && cur.names() != names {
                    warnings.push(format!(
                        "this node starts from stored layout v{} (members {:?}), not from node.toml's cluster.nodes ({:?}): layouts change only through `quorumkv cluster commit`",
                        cur.version,
                        cur.names(),
                        names
                    ));
                }
                h
            }
            None => {
                let h = History::new(Layout::initial(members, vnodes)?);
                storage.write(vec![BatchOp::Put(HISTORY_KEY.to_vec(), encode(&h))])?;
                h
            }
        };
        let acceptor = match storage.get(ACCEPTOR_KEY)? {
            Some(b) => decode(&b, "layout acceptor")?,
            None => Acceptor::default(),
        };
        let staged = match storage.get(STAGED_KEY)? {
            Some(b) => decode(&b, "staged layout changes")?,
            None => Staged::default(),
        };
        let view = View::new(history)?;
        Ok((
            Arc::new(Membership {
                name: name.to_string(),
                storage,
                view: RwLock::new(Arc::new(view)),
                acceptor: Mutex::new(acceptor),
                staged: Mutex::new(staged),
                inflight: Mutex::new(BTreeMap::new()),
                changed: tokio::sync::Notify::new(),
                listeners: Mutex::new(Vec::new()),
            }),
            warnings,
        ))
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current view (cheap: a shared pointer).
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The current view, and a guard that counts a write under its version until dropped.
    pub fn write_guard(self: &Arc<Self>) -> (Arc<View>, WriteGuard) {
        // Take the view and count the write under one lock of `inflight`, so `try_ack`
        // cannot see the new version with this write uncounted.
        let mut inflight = self.lock_inflight();
        let view = self.view();
        let version = view.version();
        *inflight.entry(version).or_insert(0) += 1;
        drop(inflight);
        (
            view,
            WriteGuard {
                membership: Arc::clone(self),
                version,
            },
        )
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Call `f` with every new view from now on (and once with the current one).
    pub fn on_change(&self, f: impl Fn(&View) + Send + Sync + 'static) {
        f(&self.view());
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// Change the history with `f` (which says whether it changed anything); persist and
    /// publish the result if so.
    pub fn update(
        &self,
        f: impl FnOnce(&mut History) -> Result<bool, LayoutError>,
    ) -> Result<bool, MembershipError> {
        let mut slot = self.view.write().unwrap_or_else(|e| e.into_inner());
        let mut h = slot.history.clone();
        if !f(&mut h)? {
            return Ok(false);
        }
        h.prune();
        let view = Arc::new(View::new(h)?);
        self.storage.write(vec![BatchOp::Put(
            HISTORY_KEY.to_vec(),
            encode(&view.history),
        )])?;
        let old_version = slot.version();
        *slot = Arc::clone(&view);
        drop(slot);
        if view.version() != old_version {
            tracing::info!(node = %self.name, version = view.version(), members = ?view.history.current().names(), "layout version applied");
        }
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            l(&view);
        }
        self.changed.notify_waiters();
        self.changed.notify_one();
        Ok(true)
    }

    /// Take in another node's history.
    pub fn merge(&self, other: &History) -> Result<bool, MembershipError> {
        self.update(|h| h.merge(other))
    }

    /// Acknowledge the current version if no write this node coordinates under an older
    /// one is still in flight. Returns whether that is news.
    pub fn try_ack(&self) -> Result<bool, MembershipError> {
        let view = self.view();
        let v = view.version();
        if view.history.acked.get(&self.name).copied().unwrap_or(0) >= v {
            return Ok(false);
        }
        if self.lock_inflight().range(..v).any(|(_, c)| *c > 0) {
            return Ok(false);
        }
        let me = self.name.clone();
        self.update(|h| Ok(h.ack(&me, v)))
    }

    /// The changes staged on this node.
    pub fn staged(&self) -> Staged {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stage `change` on top of the current version, after checking it applies and that
    /// `fits` accepts the layout the staged changes would then make.
    pub fn stage(
        &self,
        change: Change,
        fits: impl FnOnce(&Layout) -> Result<(), LayoutError>,
    ) -> Result<Staged, MembershipError> {
        let view = self.view();
        let current = view.history.current();
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = if staged.changes.is_empty() || staged.base != current.version {
            Staged {
                base: current.version,
                changes: Vec::new(),
            }
        } else {
            staged.clone()
        };
        next.changes.push(change);
        fits(&current.apply(&next.changes)?)?;
        self.storage
            .write(vec![BatchOp::Put(STAGED_KEY.to_vec(), encode(&next))])?;
        *staged = next.clone();
        Ok(next)
    }

    /// Drop every staged change.
    pub fn abort(&self) -> Result<Staged, MembershipError> {
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::take(&mut *staged);
        self.storage
            .write(vec![BatchOp::Delete(STAGED_KEY.to_vec())])?;
        Ok(old)
    }

    /// The layout the staged changes make, checked against the current version.
    pub fn proposal(&self) -> Result<(Layout, Staged), MembershipError> {
        let staged = self.staged();
        let view = self.view();
        let current = view.history.current();
        if staged.changes.is_empty() {
            return Err(LayoutError::NothingStaged.into());
        }
        if staged.base != current.version {
            return Err(LayoutError::StaleStage {
                staged_on: staged.base,
                current: current.version,
            }
            .into());
        }
        Ok((current.apply(&staged.changes)?, staged))
    }

    fn save_acceptor(&self, a: &Acceptor) -> Result<(), MembershipError> {
        self.storage
            .write(vec![BatchOp::Put(ACCEPTOR_KEY.to_vec(), encode(a))])?;
        Ok(())
    }

    /// Commit protocol, phase 1, as an acceptor.
    pub fn prepare(&self, slot: u64, ballot: &Ballot) -> Result<Promise, MembershipError> {
        self.acceptor_step(|a, h| a.prepare(h, slot, ballot))
    }

    /// Commit protocol, phase 2, as an acceptor.
    pub fn accept(&self, ballot: &Ballot, layout: &Layout) -> Result<Accepted, MembershipError> {
        layout.check()?;
        self.acceptor_step(|a, h| a.accept(h, ballot, layout))
    }

    /// One acceptor step on the current history; its new state is stored before the
    /// answer is given (a node that forgot a promise could let two layouts win).
    fn acceptor_step<T>(
        &self,
        step: impl FnOnce(&mut Acceptor, &History) -> T,
    ) -> Result<T, MembershipError> {
        let view = self.view();
        let mut a = self.acceptor.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = a.clone();
        let answer = step(&mut next, &view.history);
        if next != *a {
            self.save_acceptor(&next)?;
            *a = next;
        }
        Ok(answer)
    }

    /// The highest ballot round this node has seen (a proposer starts above it).
    pub fn highest_round(&self) -> u64 {
        let a = self.acceptor.lock().unwrap_or_else(|e| e.into_inner());
        a.promised.as_ref().map_or(0, |b| b.round)
    }

    /// Whether the node is synced on the current version.
    pub fn synced(&self) -> bool {
        let view = self.view();
        view.history.synced.get(&self.name).copied().unwrap_or(0) >= view.version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    use layout::test_members as members;

    /// Goal: a node starts from the layout it stored, not from a changed node.toml; its
    /// staged changes and acceptor promises survive a restart too.
    #[test]
    fn layout_state_survives_a_restart() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let (m, w) = Membership::open("n1", storage.clone(), members(3), 16).unwrap();
        assert!(w.is_empty());
        let m4 = members(4).pop().unwrap();
        m.stage(
            Change::Join {
                name: m4.name.clone(),
                addr: m4.addr,
                zone: None,
            },
            |_| Ok(()),
        )
        .unwrap();
        let (l2, _) = m.proposal().unwrap();
        let b = Ballot {
            round: 1,
            node: "n1".into(),
        };
        assert!(matches!(m.prepare(2, &b).unwrap(), Promise::Promised(None)));
        m.update(|h| h.add_committed(l2.clone())).unwrap();
        drop(m);
        let (m, w) = Membership::open("n1", storage, members(3), 16).unwrap();
        assert_eq!(m.view().version(), 2);
        assert!(w[0].contains("stored layout v2"), "{w:?}");
        assert_eq!(m.staged().changes.len(), 1);
        assert!(m.view().history.in_transition());
    }

    /// Goal: a version is acknowledged only once no write under an older one is in flight.
    #[test]
    fn ack_waits_for_older_writes() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let (m, _) = Membership::open("n1", storage, members(3), 16).unwrap();
        let (_, guard) = m.write_guard();
        let l2 = m
            .view()
            .history
            .current()
            .apply(&[Change::Leave { name: "n3".into() }])
            .unwrap();
        m.update(|h| h.add_committed(l2)).unwrap();
        assert!(!m.try_ack().unwrap(), "a v1 write is still in flight");
        drop(guard);
        assert!(m.try_ack().unwrap());
        assert_eq!(m.view().history.acked["n1"], 2);
    }
}
