//! Tombstone reaping: removing a delete's tombstone once nothing can bring the deleted
//! value back.
//!
//! **Why it is delicate.** A delete is a tombstone version ([`crate::object`]); it is what
//! stops a stale copy of the old value from coming back. Remove it too early and any
//! replica, hint or message still carrying the old value resurrects it; remove it on one
//! replica only and anti-entropy or read repair copies it back from the others.
//!
//! **The rule.** A tombstone is removed only when
//! 1. every replica of the key (its preference list, primaries only) holds *the same*
//!    copy (equal `aae::tree::key_hash`), holding only tombstones;
//! 2. every one of them has held that exact copy for `tombstones.min_age_ms` (each by its
//!    own clock, so clock skew cannot shorten it; any change restarts the age);
//! 3. every member of the cluster answers, and none holds a hint for the key (a hint may
//!    carry an older live version for a replica that is behind);
//!
//! and then each replica removes it only if its copy is *still* that tombstone
//! ([`Replica::reap`]): a write that lands between the check and the removal keeps the
//! key. A removal also raises the replica's reap floor, so a re-created key's versions
//! are issued above the old ones (Riak's kv679: without it a late copy of the old
//! tombstone would cover, and erase, the new write). A down member blocks reaping of
//! every key, as Riak's delete mode and Cassandra's `gc_grace_seconds` do: a node away
//! longer than `min_age` comes back with its old values and finds the tombstones still
//! there.
//!
//! **Who reaps.** The first replica of a key's preference list, from its *tombstone
//! index* (`0xFE "tomb" <storage key>` → since when it held the copy, written in the same
//! batch as the data by [`Replica`]), so a round never scans the data. Each round looks at
//! most `tombstones.max_keys_per_round` index entries, continuing where the last stopped.
//!
//! Ranges whose replicas change (membership) will need the layout's owners here; with a
//! fixed ring the preference list is the owner set.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::TombstonesConfig;
use crate::env::Env;
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::metrics::Metrics;
use crate::peers::{self, Peers};
use crate::replica::{Replica, ReplicaError};
use crate::storage::{prefix_end, BatchOp, Storage, StorageError};

/// Storage prefix of the tombstone index (hints use `0xFE "hint"`, trees `0xFE "aae"`).
pub const INDEX_PREFIX: &[u8] = b"\xFEtomb";

/// Most keys one round, one check request or one reap request covers (and the largest
/// `tombstones.max_keys_per_round` accepted).
pub const MAX_KEYS_PER_ROUND: usize = 1024;

/// Why a round could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    /// Reading the index or the local copies failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

/// The index record of the data record at `skey`.
pub fn index_key(skey: &[u8]) -> Vec<u8> {
    let mut k = INDEX_PREFIX.to_vec();
    k.extend_from_slice(skey);
    k
}

/// The "held since" milliseconds of an index record.
pub fn decode_since(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// One tombstone index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Its storage key (where the next page starts after).
    pub index_key: Vec<u8>,
    /// The keyspace.
    pub keyspace: String,
    /// The key.
    pub key: Key,
    /// Since when (ms, this node's clock) this replica has held the copy.
    pub since_ms: u64,
}

/// Up to `limit` index entries after `after` (exclusive; empty: from the start).
pub fn read_index(
    storage: &dyn Storage,
    after: &[u8],
    limit: usize,
) -> Result<Vec<IndexEntry>, ReplicaError> {
    let end = prefix_end(INDEX_PREFIX).unwrap_or_default();
    let start = if after.is_empty() {
        INDEX_PREFIX.to_vec()
    } else {
        let mut s = after.to_vec();
        s.push(0);
        s
    };
    let rows = storage.scan(&start, &end, limit)?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let corrupt = |message: &str| ReplicaError::Corrupt {
            key: format!("tombstone index {k:?}"),
            message: message.to_string(),
        };
        let (keyspace, key) =
            Key::decode(&k[INDEX_PREFIX.len()..]).map_err(|e| corrupt(&format!("bad key: {e}")))?;
        let since_ms = decode_since(&v).ok_or_else(|| corrupt("value is not 8 bytes"))?;
        out.push(IndexEntry {
            index_key: k,
            keyspace,
            key,
            since_ms,
        });
    }
    Ok(out)
}

/// Delete keyspace `name`'s index entries (its data is being purged).
pub fn purge_keyspace(storage: &dyn Storage, name: &str) -> Result<(), StorageError> {
    let mut start = INDEX_PREFIX.to_vec();
    start.extend_from_slice(name.as_bytes());
    start.push(0);
    let mut end = INDEX_PREFIX.to_vec();
    end.extend_from_slice(name.as_bytes());
    end.push(1);
    loop {
        let rows = storage.scan(&start, &end, 256)?;
        if rows.is_empty() {
            return Ok(());
        }
        storage.write(rows.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect())?;
    }
}

/// What the reaper did so far, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapStats {
    /// Rounds run.
    pub rounds: u64,
    /// Tombstones removed by rounds this node ran (on this replica).
    pub reaped: u64,
    /// Index entries the last round looked at.
    pub looked_at: u64,
    /// Old-enough tombstones kept because a member did not answer.
    pub blocked_unreachable: u64,
    /// Kept because a member holds a hint for the key.
    pub blocked_hints: u64,
    /// Kept because the replicas' copies differ or are not all old enough.
    pub blocked_disagree: u64,
    /// Wall-clock ms of the last round.
    pub last_round_ms: Option<u64>,
    /// Why the last blocked key was kept (a member that did not answer, a replica that
    /// disagrees).
    pub last_blocker: Option<String>,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    /// Index entries looked at.
    pub looked_at: usize,
    /// Entries this node is the reaper of and old enough here.
    pub candidates: usize,
    /// Removed on this replica.
    pub reaped: usize,
    /// Kept: unreachable member, hint outstanding, replicas disagree.
    pub blocked: [usize; 3],
}

/// Everything [`Reaper::new`] needs.
pub struct ReaperParams {
    /// This node.
    pub name: String,
    /// `[tombstones]`.
    pub cfg: TombstonesConfig,
    /// The node's replica.
    pub replica: Arc<Replica>,
    /// The keyspaces.
    pub catalog: Arc<Catalog>,
    /// Calls to the other members.
    pub peers: Arc<Peers>,
    /// The live layouts: a key's replicas. Reaping waits while data moves between
    /// versions (a tombstone may be on its way to a new owner).
    pub membership: Arc<crate::membership::Membership>,
    /// The seam.
    pub env: Arc<dyn Env>,
    /// Where reaps are counted.
    pub metrics: Arc<Metrics>,
    /// Deadline of each call.
    pub call_timeout: Duration,
    /// Re-introduced bugs (simulation only).
    pub bugs: crate::replica::InjectedBugs,
}

/// A node's tombstone reaper (see the module comment).
pub struct Reaper {
    p: ReaperParams,
    /// Where the next round continues in the index.
    cursor: Mutex<Vec<u8>>,
    stats: Mutex<ReapStats>,
    /// A round is running (a second one is a no-op).
    busy: AtomicBool,
}

/// The keys of one keyspace a round checks, with their replicas.
type Group = Vec<(Key, Vec<String>)>;

impl Reaper {
    /// A node's reaper.
    pub fn new(p: ReaperParams) -> Arc<Self> {
        Arc::new(Reaper {
            p,
            cursor: Mutex::new(Vec::new()),
            stats: Mutex::new(ReapStats::default()),
            busy: AtomicBool::new(false),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TombstonesConfig {
        &self.p.cfg
    }

    /// What the reaper did so far.
    pub fn stats(&self) -> ReapStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Run forever: a round every `interval_ms`, plus or minus a quarter at random.
    /// Spawned by whoever runs the node (process runtime, simulator, in-process clusters).
    pub async fn run(self: Arc<Self>) {
        loop {
            let wake = self.p.env.now()
                + crate::env::jittered(&*self.p.env, self.p.cfg.interval_ms.max(1));
            self.p.env.sleep_until(wake).await;
            if let Err(e) = self.round().await {
                tracing::warn!(node = %self.p.name, error = %e, "tombstone reaping round failed");
            }
        }
    }

    /// One round: the next page of the index, checked and reaped.
    pub async fn round(&self) -> Result<RoundOutcome, ReapError> {
        let mut out = RoundOutcome::default();
        if self.busy.swap(true, Ordering::AcqRel) {
            return Ok(out);
        }
        struct Busy<'a>(&'a AtomicBool);
        impl Drop for Busy<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _busy = Busy(&self.busy);
        let view = self.p.membership.view();
        if view.history.in_transition() {
            // Data is moving between layout versions: a tombstone may be on its way to a
            // new owner, which could not take part in the agreement. Wait for the move.
            return Ok(out);
        }
        let limit = self.p.cfg.max_keys_per_round.clamp(1, MAX_KEYS_PER_ROUND);
        let after = self
            .cursor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let entries = self.p.replica.tombstone_index(after, limit).await?;
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = if entries.len() < limit {
            Vec::new() // the end: start again from the beginning next round
        } else {
            entries
                .last()
                .map(|e| e.index_key.clone())
                .unwrap_or_default()
        };
        out.looked_at = entries.len();
        let now = self.p.env.now_ms();
        let mut groups: BTreeMap<String, (KeyspaceDef, Group)> = BTreeMap::new();
        for e in entries {
            let Some(ks) = self.p.catalog.get(&e.keyspace) else {
                continue; // dropped: its data and index are being purged
            };
            if now.saturating_sub(e.since_ms) < self.p.cfg.min_age_ms {
                continue;
            }
            let owners = view
                .read_ring()
                .preference_list(&e.key.partition, ks.n as usize);
            if owners.first() != Some(&self.p.name) {
                continue; // its first replica reaps it
            }
            groups
                .entry(ks.name.clone())
                .or_insert_with(|| (ks, Vec::new()))
                .1
                .push((e.key, owners));
        }
        for (_, (ks, group)) in groups {
            out.candidates += group.len();
            self.reap_group(&ks, group, &mut out).await;
        }
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.rounds += 1;
        st.looked_at = out.looked_at as u64;
        st.reaped += out.reaped as u64;
        st.blocked_unreachable += out.blocked[0] as u64;
        st.blocked_hints += out.blocked[1] as u64;
        st.blocked_disagree += out.blocked[2] as u64;
        st.last_round_ms = Some(now);
        let m = &self.p.metrics;
        m.tombstones_blocked_unreachable
            .fetch_add(out.blocked[0] as u64, Ordering::Relaxed);
        m.tombstones_blocked_hints
            .fetch_add(out.blocked[1] as u64, Ordering::Relaxed);
        m.tombstones_blocked_disagree
            .fetch_add(out.blocked[2] as u64, Ordering::Relaxed);
        Ok(out)
    }

    fn blocked(&self, why: String) {
        tracing::debug!(node = %self.p.name, "tombstone kept: {why}");
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_blocker = Some(why);
    }

    /// Check one keyspace's candidates with every member, then reap those all agree on.
    async fn reap_group(&self, ks: &KeyspaceDef, group: Group, out: &mut RoundOutcome) {
        let keys: Vec<Key> = group.iter().map(|(k, _)| k.clone()).collect();
        let agreed: Vec<(Key, Vec<String>, u64)> = if self.p.bugs.reap_without_agreement {
            // Re-introduced bug: only this replica's copy is looked at.
            match self.p.replica.held_tombstones(ks, keys).await {
                Ok(held) => group
                    .into_iter()
                    .zip(held)
                    .filter_map(|((k, owners), h)| Some((k, owners, h?.hash)))
                    .collect(),
                Err(_) => return,
            }
        } else {
            match self.check(ks, keys).await {
                Ok(reports) => self.agreed(group, &reports, out),
                Err(why) => {
                    out.blocked[0] += group.len();
                    self.blocked(why);
                    return;
                }
            }
        };
        if agreed.is_empty() {
            return;
        }
        // Each replica gets the keys it holds; this node (the first of every preference
        // list here) removes its own copies last, so if another replica cannot be reached
        // the tombstone stays listed here and the next round tries again.
        let mut per_node: BTreeMap<String, Vec<(Key, u64)>> = BTreeMap::new();
        for (key, owners, hash) in &agreed {
            for o in owners {
                per_node
                    .entry(o.clone())
                    .or_default()
                    .push((key.clone(), *hash));
            }
        }
        let mine = per_node.remove(&self.p.name).unwrap_or_default();
        let mut all_removed = true;
        for (node, items) in per_node {
            let deadline = self.p.env.now() + self.p.call_timeout;
            let call = peers::ReapTombstones {
                keyspace: ks.clone(),
                items,
            };
            if let Err(e) = self.p.peers.call(&node, call, deadline).await {
                all_removed = false;
                self.blocked(format!(
                    "{node} did not remove its copies: {}",
                    e.to_failure(&node).detail
                ));
            }
        }
        if !all_removed {
            return;
        }
        match self.p.replica.reap(ks, mine).await {
            Ok(n) => out.reaped += n,
            Err(e) => self.blocked(format!("removing this node's copies failed: {e}")),
        }
    }

    /// Every member's report on `keys`, by member; `Err` names the first member that did
    /// not answer (nothing may be reaped then).
    async fn check(
        &self,
        ks: &KeyspaceDef,
        keys: Vec<Key>,
    ) -> Result<BTreeMap<String, Vec<crate::proto::TombstoneReport>>, String> {
        // Every node of every live layout version (reaping waits out transitions, so
        // this is the current version's members).
        let members: Vec<String> = self
            .p
            .membership
            .view()
            .members()
            .into_iter()
            .map(|m| m.name)
            .collect();
        let deadline = self.p.env.now() + self.p.call_timeout;
        let n = keys.len();
        let mut replies = self.p.peers.fan_out(
            &members,
            peers::TombstoneCheck {
                keyspace: ks.clone(),
                keys,
            },
            deadline,
        );
        let mut by_node = BTreeMap::new();
        while let Some(reply) = replies.recv().await {
            match reply.result {
                Ok(reports) if reports.len() == n => {
                    by_node.insert(reply.node, reports);
                }
                Ok(reports) => {
                    return Err(format!(
                        "{} answered {} reports for {n} keys",
                        reply.node,
                        reports.len()
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "{} did not answer the check: {}",
                        reply.node,
                        e.to_failure(&reply.node).detail
                    ))
                }
            }
        }
        if by_node.len() < members.len() {
            return Err("a member's check task ended without an answer".into());
        }
        Ok(by_node)
    }

    /// The candidates every replica agrees on, with the hash of the agreed tombstone.
    fn agreed(
        &self,
        group: Group,
        reports: &BTreeMap<String, Vec<crate::proto::TombstoneReport>>,
        out: &mut RoundOutcome,
    ) -> Vec<(Key, Vec<String>, u64)> {
        let mut agreed = Vec::new();
        for (i, (key, owners)) in group.into_iter().enumerate() {
            let hints: u32 = reports.values().map(|r| r[i].hints).sum();
            if hints > 0 {
                out.blocked[1] += 1;
                self.blocked(format!("{key}: {hints} hint(s) outstanding"));
                continue;
            }
            let mut hash = None;
            let mut why = None;
            for o in &owners {
                match reports.get(o).and_then(|r| r[i].held) {
                    None => why = Some(format!("{o} holds no tombstone-only copy")),
                    Some(h) if h.held_ms < self.p.cfg.min_age_ms => {
                        why = Some(format!("{o} has held it for {} ms only", h.held_ms))
                    }
                    Some(h) => match hash {
                        None => hash = Some(h.hash),
                        Some(x) if x != h.hash => {
                            why = Some(format!("{o} holds another tombstone"))
                        }
                        Some(_) => {}
                    },
                }
                if why.is_some() {
                    break;
                }
            }
            match (why, hash) {
                (None, Some(hash)) => agreed.push((key, owners, hash)),
                (why, _) => {
                    out.blocked[2] += 1;
                    self.blocked(format!(
                        "{key}: {}",
                        why.unwrap_or_else(|| "no replica".into())
                    ));
                }
            }
        }
        agreed
    }
}
