//! Hinted handoff: the copies a node holds for a primary replica that could not take
//! them, and the loop that hands them back once that replica answers again.
//!
//! **Why.** With a sloppy quorum a write whose primary replica is down goes to the next
//! healthy node on the ring instead (a *stand-in*); without handing that copy back, the
//! primary would stay behind until a client read the key. A hint is the already-versioned
//! object the lead issued, tagged with its intended owner. Replay sends it to the owner
//! as a plain `Replicate`, which *merges* it — never a new write through a coordinator,
//! which would issue a new dot and leave false siblings (Riak issue 1046). Merging is
//! idempotent, commutative and associative, so replaying a hint twice, or several hints
//! in any order, leaves the owner in the same state.
//!
//! **Where.** Hints live in the node's own [`Storage`] under the reserved prefix
//! [`HINT_PREFIX`] (`0xFE "hint"`; the RocksDB engine keeps that prefix in its own column
//! family, `storage::rocks`), one record per (owner, keyspace, key):
//! `0xFE "hint" owner 0x00 <Key::encode(keyspace)>` → MessagePack of the keyspace
//! definition, the key, the object and the time it was last written. A second hint for
//! the same owner and key is merged into the stored one, so a hot key costs one record.
//! A hint is written in one storage batch, synced as data writes are, before the stand-in
//! acknowledges it.
//!
//! A batch's hint is one record, keyed by its first item and carrying the other items of
//! the partition along; replay sends it as one `ReplicateBatch`, so the owner stores the
//! batch whole, as it would have from the lead.
//!
//! **Bounds.** Per target at most `hints.max_bytes_per_target` bytes (a hint beyond it is
//! refused and the write does not count that stand-in); hints older than
//! `hints.window_ms` are dropped (only anti-entropy repairs them then); replay sends at
//! most `hints.replay_bytes_per_sec` (per round: that rate times the round's interval,
//! and at least one hint), and deletes a hint only after the owner's durable
//! acknowledgement — and only if no newer hint was merged into it meanwhile.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HintsConfig;
use crate::env::{self, Env};
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::object::Object;
use crate::peers::{self, CallFailure, Peers};
use crate::proto::PeerError;
use crate::storage::{prefix_end, BatchOp, Storage, StorageError};

/// The storage prefix every hint record starts with (the catalog owns `0xFF`).
pub const HINT_PREFIX: &[u8] = b"\xFEhint";

/// Most records one replay or expiry scan reads at once: bounds the memory a round uses.
const SCAN_PAGE: usize = 64;

/// Most hint records of one partition the reaper's check reads for one key.
const PARTITION_SCAN_LIMIT: usize = 1024;

/// How often the replay loop also drops hints past the window, at most.
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

/// Why a hint could not be stored or handed back.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// `hints.enabled = false` on the node asked to hold the hint.
    #[error("node {0} does not hold hints (hints.enabled = false)")]
    Disabled(String),
    /// The target's hints are at their byte bound.
    #[error("node {node} already holds {pending} bytes of hints for {target}; another {len} would pass hints.max_bytes_per_target ({max})")]
    TargetFull {
        /// The node asked to hold the hint.
        node: String,
        /// The hint's owner.
        target: String,
        /// Bytes held for it now.
        pending: u64,
        /// The new record's size.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The owner's name cannot be part of a hint key, or the owner is this node.
    #[error("cannot hold a hint for {0:?}: {1}")]
    BadOwner(String, &'static str),
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored hint does not decode.
    #[error("stored hint is corrupt: {0}")]
    Corrupt(String),
    /// The blocking storage task was lost.
    #[error("hint storage task failed")]
    Task,
}

/// One stored hint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredHint {
    /// The keyspace, as the coordinator sent it (replay carries it to the owner).
    keyspace: KeyspaceDef,
    /// The key.
    key: Key,
    /// The already-versioned object (merged with earlier hints for the same key).
    object: Object,
    /// Wall-clock milliseconds of the last write merged into this hint.
    created_ms: u64,
    /// The other items of an atomic batch (same partition as `key`), by sort key:
    /// replayed with `object` as one `ReplicateBatch`, so the owner stores the batch
    /// whole. Empty for a single key.
    #[serde(default)]
    more: Vec<(serde_bytes::ByteBuf, Object)>,
}

/// What this node holds for one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Hint records.
    pub count: u64,
    /// Their stored bytes.
    pub bytes: u64,
}

/// Hints held and handed back, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HintStats {
    /// Per target: what is pending.
    pub pending: BTreeMap<String, Pending>,
    /// Hints handed back and acknowledged.
    pub replayed: u64,
    /// Hints dropped because they outlived `hints.window_ms`.
    pub dropped_expired: u64,
    /// Hints refused because their target was at `hints.max_bytes_per_target`.
    pub dropped_full: u64,
    /// Hints the owner refused for good (keyspace dropped or invalid there).
    pub dropped_refused: u64,
}

/// This node's hints: stored durably, counted per target, replayed by [`spawn_replay`].
pub struct HintStore {
    /// This node's name (errors).
    name: String,
    /// Where the records live.
    storage: Arc<dyn Storage>,
    /// Wall clock (creation times), timers, blocking work.
    env: Arc<dyn Env>,
    /// `[hints]` of node.toml.
    config: HintsConfig,
    /// Pending per target. Held across each read-modify-write of a record, so a merge
    /// into a hint and the delete after its replay never interleave.
    pending: Mutex<BTreeMap<String, Pending>>,
    replayed: AtomicU64,
    dropped_expired: AtomicU64,
    dropped_full: AtomicU64,
    dropped_refused: AtomicU64,
    /// When hints past the window were last dropped.
    last_expiry: Mutex<Option<crate::env::Instant>>,
}

/// The storage key of the hint for `owner` about `key` of keyspace `ks`.
fn hint_key(owner: &str, ks: &str, key: &Key) -> Vec<u8> {
    let mut k = target_prefix(owner);
    k.extend_from_slice(&key.encode(ks));
    k
}

/// Where the hints for `owner` start.
fn target_prefix(owner: &str) -> Vec<u8> {
    let mut k = HINT_PREFIX.to_vec();
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    k
}

/// The owner named in a hint's storage key.
fn owner_of(storage_key: &[u8]) -> Option<String> {
    let rest = storage_key.strip_prefix(HINT_PREFIX)?;
    let end = rest.iter().position(|b| *b == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

fn decode(bytes: &[u8]) -> Result<StoredHint, HintError> {
    rmp_serde::from_slice(bytes).map_err(|e| HintError::Corrupt(e.to_string()))
}

fn encode(h: &StoredHint) -> Result<Vec<u8>, HintError> {
    rmp_serde::to_vec_named(h).map_err(|e| HintError::Corrupt(e.to_string()))
}

impl HintStore {
    /// Node `name`'s hints in `storage`, counting what is pending per target.
    pub fn open(
        name: &str,
        storage: Arc<dyn Storage>,
        env: Arc<dyn Env>,
        config: HintsConfig,
    ) -> Result<Self, HintError> {
        let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
        let end = prefix_end(HINT_PREFIX).ok_or(HintError::Corrupt("no prefix end".into()))?;
        let mut start = HINT_PREFIX.to_vec();
        loop {
            let page = storage.scan(&start, &end, SCAN_PAGE)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                let owner = owner_of(k)
                    .ok_or_else(|| HintError::Corrupt(format!("hint key {k:?} names no target")))?;
                let p = pending.entry(owner).or_default();
                p.count += 1;
                p.bytes += v.len() as u64;
            }
        }
        Ok(HintStore {
            name: name.to_string(),
            storage,
            env,
            config,
            pending: Mutex::new(pending),
            replayed: AtomicU64::new(0),
            dropped_expired: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_refused: AtomicU64::new(0),
            last_expiry: Mutex::new(None),
        })
    }

    /// Whether this node holds hints at all (`hints.enabled`).
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// What is pending and what happened to hints so far.
    pub fn stats(&self) -> HintStats {
        HintStats {
            pending: self.lock().clone(),
            replayed: self.replayed.load(Ordering::Relaxed),
            dropped_expired: self.dropped_expired.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_refused: self.dropped_refused.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` off the async threads when the engine blocks on disk.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&HintStore) -> Result<T, HintError> + Send + 'static,
    ) -> Result<T, HintError> {
        if self.storage.blocking() {
            let me = Arc::clone(self);
            env::blocking(&*self.env, move || f(&me))
                .await
                .ok_or(HintError::Task)?
        } else {
            f(self)
        }
    }

    /// How many hints this node holds for each of `keys` of keyspace `ks`, whatever
    /// their owner (the tombstone reaper removes nothing a hint still carries). Looks up
    /// one record per key and target with hints pending: no scan.
    pub async fn held_for(self: &Arc<Self>, ks: &str, keys: &[Key]) -> Result<Vec<u32>, HintError> {
        let (ks, keys) = (ks.to_string(), keys.to_vec());
        self.run(move |me| {
            // Held across the look-ups, as a store holds it: a hint being written now is
            // either seen or written after the answer.
            let pending = me.lock();
            let targets: Vec<&String> = pending
                .iter()
                .filter(|(_, p)| p.count > 0)
                .map(|(t, _)| t)
                .collect();
            keys.iter()
                .map(|key| {
                    let mut n = 0u32;
                    for t in &targets {
                        n += me.held_in_partition(t, &ks, key)?;
                    }
                    Ok(n)
                })
                .collect()
        })
        .await
    }

    /// Hints for `owner` that carry `key`: its own record, or a batch record of its
    /// partition carrying it along. Past [`PARTITION_SCAN_LIMIT`] records of the
    /// partition, one is assumed (the reaper then waits, the safe side).
    fn held_in_partition(&self, owner: &str, ks: &str, key: &Key) -> Result<u32, HintError> {
        let mut prefix = target_prefix(owner);
        prefix.extend_from_slice(&crate::key::partition_prefix(ks, &key.partition));
        let end = prefix_end(&prefix).ok_or(HintError::Corrupt("no prefix end".into()))?;
        let rows = self.storage.scan(&prefix, &end, PARTITION_SCAN_LIMIT + 1)?;
        if rows.len() > PARTITION_SCAN_LIMIT {
            return Ok(1);
        }
        let mut n = 0;
        for (_, v) in rows {
            let h = decode(&v)?;
            if h.key == *key
                || h.more
                    .iter()
                    .any(|(s, _)| s.as_slice() == key.sort.as_slice())
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Hold `object` for `owner` durably (merged into any hint already held for that
    /// key): what a stand-in does before it acknowledges.
    pub async fn store(
        self: &Arc<Self>,
        owner: &str,
        keyspace: KeyspaceDef,
        key: Key,
        object: Object,
    ) -> Result<(), HintError> {
        self.store_batch(owner, keyspace, key, object, Vec::new())
            .await
    }

    /// [`HintStore::store`] for an atomic batch: `key`'s object and the `more` items of
    /// the same partition, held in one record and replayed together.
    pub async fn store_batch(
        self: &Arc<Self>,
        owner: &str,
        keyspace: KeyspaceDef,
        key: Key,
        object: Object,
        more: Vec<(serde_bytes::ByteBuf, Object)>,
    ) -> Result<(), HintError> {
        if !self.config.enabled {
            return Err(HintError::Disabled(self.name.clone()));
        }
        if owner.is_empty() || owner.as_bytes().contains(&0) {
            return Err(HintError::BadOwner(
                owner.to_string(),
                "empty or contains a NUL byte",
            ));
        }
        if owner == self.name {
            return Err(HintError::BadOwner(
                owner.to_string(),
                "a node does not hold hints for itself",
            ));
        }
        for o in std::iter::once(&object).chain(more.iter().map(|(_, o)| o)) {
            crate::crdt::check_well_formed(&o.crdt)
                .map_err(|e| HintError::Corrupt(format!("incoming object refused: {e}")))?;
        }
        let owner = owner.to_string();
        self.run(move |me| me.store_now(owner, keyspace, key, object, more))
            .await
    }

    fn store_now(
        &self,
        owner: String,
        keyspace: KeyspaceDef,
        key: Key,
        object: Object,
        more: Vec<(serde_bytes::ByteBuf, Object)>,
    ) -> Result<(), HintError> {
        let skey = hint_key(&owner, &keyspace.name, &key);
        let mut pending = self.lock();
        let old = self.storage.get(&skey)?;
        let (mut object, mut more) = (object, more);
        if let Some(bytes) = &old {
            let held = decode(bytes)?;
            let policy = keyspace.policy.resolver();
            let mut merged = held.object;
            policy.merge(&keyspace, &mut merged, &object);
            object = merged;
            // The riders: merged by sort key, the held ones the new hint lacks kept.
            let mut riders = held.more;
            for (sort, o) in more {
                match riders.iter_mut().find(|(s, _)| *s == sort) {
                    Some((_, held)) => policy.merge(&keyspace, held, &o),
                    None => riders.push((sort, o)),
                }
            }
            more = riders;
        }
        let record = encode(&StoredHint {
            keyspace,
            key,
            object,
            created_ms: self.env.now_ms(),
            more,
        })?;
        let old_len = old.as_ref().map_or(0, |b| b.len() as u64);
        let new_len = record.len() as u64;
        let p = pending.get(&owner).copied().unwrap_or_default();
        let after = p.bytes.saturating_sub(old_len).saturating_add(new_len);
        if new_len > old_len && after > self.config.max_bytes_per_target {
            self.dropped_full.fetch_add(1, Ordering::Relaxed);
            return Err(HintError::TargetFull {
                node: self.name.clone(),
                target: owner,
                pending: p.bytes,
                len: new_len,
                max: self.config.max_bytes_per_target,
            });
        }
        self.storage.write(vec![BatchOp::Put(skey, record)])?;
        let e = pending.entry(owner).or_default();
        if old.is_none() {
            e.count += 1;
        }
        e.bytes = after;
        Ok(())
    }

    /// Delete hint `skey` of `owner` if it still holds `bytes` (a hint merged into it
    /// after it was read for replay stays, to be replayed next round).
    fn delete_if_unchanged(
        &self,
        owner: &str,
        skey: &[u8],
        bytes: &[u8],
    ) -> Result<bool, HintError> {
        let mut pending = self.lock();
        if self.storage.get(skey)?.as_deref() != Some(bytes) {
            return Ok(false);
        }
        self.storage.write(vec![BatchOp::Delete(skey.to_vec())])?;
        if let Some(p) = pending.get_mut(owner) {
            p.count = p.count.saturating_sub(1);
            p.bytes = p.bytes.saturating_sub(bytes.len() as u64);
            if p.count == 0 {
                pending.remove(owner);
            }
        }
        Ok(true)
    }

    /// The next [`SCAN_PAGE`] hint records of `owner` from `start` on, moving `start`
    /// past them (empty at the end).
    async fn next_page(
        self: &Arc<Self>,
        owner: &str,
        start: &mut Vec<u8>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, HintError> {
        let end =
            prefix_end(&target_prefix(owner)).ok_or(HintError::Corrupt("no prefix end".into()))?;
        let from = start.clone();
        let page = self
            .run(move |me| Ok(me.storage.scan(&from, &end, SCAN_PAGE)?))
            .await?;
        if let Some((last, _)) = page.last() {
            *start = last.clone();
            start.push(0);
        }
        Ok(page)
    }

    /// [`HintStore::delete_if_unchanged`] off the async threads.
    async fn drop_hint(
        self: &Arc<Self>,
        owner: &str,
        skey: Vec<u8>,
        bytes: Vec<u8>,
    ) -> Result<bool, HintError> {
        let owner = owner.to_string();
        self.run(move |me| me.delete_if_unchanged(&owner, &skey, &bytes))
            .await
    }

    /// Drop hint record `skey` (holding `bytes`, decoded as `h`) if it is past the window,
    /// counting it; whether it was past the window.
    async fn drop_if_expired(
        self: &Arc<Self>,
        owner: &str,
        skey: &[u8],
        bytes: &[u8],
        h: &StoredHint,
    ) -> Result<bool, HintError> {
        if !self.expired(h.created_ms) {
            return Ok(false);
        }
        if self.drop_hint(owner, skey.to_vec(), bytes.to_vec()).await? {
            self.dropped_expired.fetch_add(1, Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Whether a hint written at `created_ms` is past the window now.
    fn expired(&self, created_ms: u64) -> bool {
        self.env.now_ms().saturating_sub(created_ms) > self.config.window_ms
    }

    /// Drop every hint past the window (at most once per [`EXPIRY_EVERY`]).
    async fn expire(self: &Arc<Self>) -> Result<(), HintError> {
        {
            let mut last = self.last_expiry.lock().unwrap_or_else(|e| e.into_inner());
            let now = self.env.now();
            if last.is_some_and(|t| now.saturating_duration_since(t) < EXPIRY_EVERY) {
                return Ok(());
            }
            *last = Some(now);
        }
        let owners: Vec<String> = self.lock().keys().cloned().collect();
        for owner in owners {
            let mut start = target_prefix(&owner);
            loop {
                let page = self.next_page(&owner, &mut start).await?;
                if page.is_empty() {
                    break;
                }
                for (k, v) in page {
                    let h = decode(&v)?;
                    self.drop_if_expired(&owner, &k, &v, &h).await?;
                }
            }
        }
        Ok(())
    }

    /// One replay round: for each target with hints, send them (merged by the owner as
    /// a `Replicate`) until the round's byte budget is spent or the target fails; delete
    /// each after its acknowledgement. Returns the hints handed back.
    pub async fn replay_round(
        self: &Arc<Self>,
        peers: &Peers,
        timeout: Duration,
    ) -> Result<u64, HintError> {
        self.expire().await?;
        let budget = self
            .config
            .replay_bytes_per_sec
            .saturating_mul(self.config.replay_interval_ms)
            / 1000;
        let mut sent_bytes = 0u64;
        let mut done = 0u64;
        let owners: Vec<String> = self.lock().keys().cloned().collect();
        'owners: for owner in owners {
            let mut start = target_prefix(&owner);
            loop {
                let page = self.next_page(&owner, &mut start).await?;
                if page.is_empty() {
                    break;
                }
                for (k, v) in page {
                    // At least one hint per round, so a hint larger than the budget
                    // still goes.
                    if done > 0 && sent_bytes >= budget {
                        break 'owners;
                    }
                    let h = decode(&v)?;
                    if self.drop_if_expired(&owner, &k, &v, &h).await? {
                        continue;
                    }
                    sent_bytes += v.len() as u64;
                    let deadline = self.env.now() + timeout;
                    let sent = if h.more.is_empty() {
                        let call = peers::Replicate {
                            keyspace: h.keyspace,
                            key: h.key,
                            object: h.object,
                        };
                        peers.call(&owner, call, deadline).await
                    } else {
                        let mut items = vec![(serde_bytes::ByteBuf::from(h.key.sort), h.object)];
                        items.extend(h.more);
                        let call = peers::ReplicateBatch {
                            keyspace: h.keyspace,
                            partition: h.key.partition,
                            items,
                        };
                        peers.call(&owner, call, deadline).await
                    };
                    match sent {
                        Ok(()) => {
                            self.drop_hint(&owner, k, v).await?;
                            self.replayed.fetch_add(1, Ordering::Relaxed);
                            done += 1;
                        }
                        Err(CallFailure::Refused(PeerError::Invalid(m))) => {
                            // The owner will never take it (its keyspace was dropped, or
                            // the definition conflicts): keeping it would block nothing
                            // but would be retried forever.
                            tracing::warn!(node = %self.name, target = %owner, error = %m, "hint refused by its owner; dropped");
                            if self.drop_hint(&owner, k, v).await? {
                                self.dropped_refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => continue 'owners,
                    }
                }
            }
        }
        Ok(done)
    }
}

/// Start the replay loop in `env`: every `hints.replay_interval_ms`, one
/// [`HintStore::replay_round`]. It holds the store and peers weakly and ends when the
/// node is gone.
pub fn spawn_replay(store: &Arc<HintStore>, peers: &Arc<Peers>, timeout: Duration) {
    if !store.config.enabled {
        return;
    }
    let env = Arc::clone(&store.env);
    let interval = Duration::from_millis(store.config.replay_interval_ms);
    let (store, peers): (Weak<HintStore>, Weak<Peers>) =
        (Arc::downgrade(store), Arc::downgrade(peers));
    let loop_env = Arc::clone(&env);
    env.spawn(Box::pin(async move {
        loop {
            loop_env.sleep_until(loop_env.now() + interval).await;
            let (Some(store), Some(peers)) = (store.upgrade(), peers.upgrade()) else {
                return;
            };
            if store.lock().is_empty() {
                continue;
            }
            match store.replay_round(&peers, timeout).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(node = %store.name, replayed = n, "hints replayed"),
                Err(e) => tracing::warn!(node = %store.name, error = %e, "hint replay failed"),
            }
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn store(config: HintsConfig) -> (Arc<HintStore>, Arc<dyn Storage>) {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let env: Arc<dyn Env> = crate::env::TokioEnv::system();
        let s = HintStore::open("n4", Arc::clone(&storage), env, config).unwrap();
        (Arc::new(s), storage)
    }

    /// Goal: hints are counted per target, a second hint for the same key merges into
    /// the first record (one record), the count survives reopening the store, and a
    /// target at its byte bound refuses new hints (counted as dropped).
    #[tokio::test]
    async fn hints_are_counted_merged_and_bounded() {
        let ks = KeyspaceDef::new("ks", 3, 2, 2);
        let (s, storage) = store(HintsConfig::default());
        let k = Key::parse("a");
        s.store("n1", ks.clone(), k.clone(), Object::default())
            .await
            .unwrap();
        s.store("n1", ks.clone(), k.clone(), Object::default())
            .await
            .unwrap();
        s.store("n2", ks.clone(), Key::parse("b"), Object::default())
            .await
            .unwrap();
        let st = s.stats();
        assert_eq!(st.pending["n1"].count, 1);
        assert_eq!(st.pending["n2"].count, 1);
        let env: Arc<dyn Env> = crate::env::TokioEnv::system();
        let reopened = HintStore::open("n4", storage, env, HintsConfig::default()).unwrap();
        assert_eq!(reopened.stats().pending, st.pending);

        let (s, _) = store(HintsConfig {
            max_bytes_per_target: st.pending["n1"].bytes,
            ..HintsConfig::default()
        });
        s.store("n1", ks.clone(), k, Object::default())
            .await
            .unwrap();
        let e = s
            .store("n1", ks.clone(), Key::parse("other"), Object::default())
            .await
            .unwrap_err();
        assert!(matches!(e, HintError::TargetFull { .. }), "{e}");
        assert_eq!(s.stats().dropped_full, 1);
        assert!(matches!(
            s.store("n4", ks, Key::parse("x"), Object::default()).await,
            Err(HintError::BadOwner(..))
        ));
    }

    /// Goal: Prometheus shows pending hints per target and the replayed and dropped
    /// counters (by reason) of the store the metrics were given.
    #[tokio::test]
    async fn metrics_export_hint_series() {
        let (s, _) = store(HintsConfig::default());
        s.store(
            "n1",
            KeyspaceDef::new("ks", 3, 2, 2),
            Key::parse("a"),
            Object::default(),
        )
        .await
        .unwrap();
        let m = crate::metrics::Metrics::default();
        m.set_hints_source(&s);
        let text = m.render("n4");
        assert!(
            text.contains("quorumkv_hints_pending{node=\"n4\",target=\"n1\"} 1"),
            "{text}"
        );
        assert!(text.contains("quorumkv_hints_pending_bytes{node=\"n4\",target=\"n1\"} "));
        assert!(text.contains("quorumkv_hints_replayed_total{node=\"n4\"} 0"));
        assert!(text.contains("quorumkv_hints_dropped_total{node=\"n4\",reason=\"expired\"} 0"));
    }

    /// Goal: a hint older than `hints.window_ms` is dropped and counted as expired; a
    /// fresh one stays.
    #[tokio::test]
    async fn hints_past_the_window_are_dropped() {
        let clock = Arc::new(crate::clock::ManualClock::new(1_000_000));
        let env: Arc<dyn Env> = crate::env::TokioEnv::new(clock.clone());
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let config = HintsConfig {
            window_ms: 1000,
            ..HintsConfig::default()
        };
        let s = Arc::new(HintStore::open("n4", storage, env, config).unwrap());
        let ks = KeyspaceDef::new("ks", 3, 2, 2);
        s.store("n1", ks.clone(), Key::parse("old"), Object::default())
            .await
            .unwrap();
        clock.set(1_001_500);
        s.store("n1", ks, Key::parse("new"), Object::default())
            .await
            .unwrap();
        s.expire().await.unwrap();
        let st = s.stats();
        assert_eq!(st.dropped_expired, 1);
        assert_eq!(st.pending["n1"].count, 1);
    }

    /// Goal: with hints off the node refuses to hold any.
    #[tokio::test]
    async fn disabled_store_refuses_hints() {
        let (s, _) = store(HintsConfig {
            enabled: false,
            ..HintsConfig::default()
        });
        let e = s
            .store(
                "n1",
                KeyspaceDef::new("ks", 3, 2, 2),
                Key::parse("a"),
                Object::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, HintError::Disabled(_)), "{e}");
        assert!(s.stats().pending.is_empty());
    }
}
