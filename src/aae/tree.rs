//! TicTac-style Merkle trees kept in the node's own storage, one per (keyspace, range).
//!
//! A *range* is the set of keys whose preference list is the same set of N nodes: those
//! nodes are exactly the replicas that must agree on it, so each of them keeps a tree for
//! it and any two can compare. With vnodes many ring arcs share one set; they are one range
//! (its id is a hash of the sorted node names).
//!
//! A tree has [`SEGMENTS`] leaves. A key belongs to segment `hash(key) mod SEGMENTS`; a
//! segment's hash is the XOR of `h(key, fingerprint(object))` over its keys. XOR is what
//! makes the tree incremental: storing a new version of a key changes its segment by
//! `h(key, old) ^ h(key, new)`, with no scan. Branch hashes (groups of
//! [`SEGMENTS_PER_BRANCH`] segments) and the root are computed from the stored segments when
//! asked for: a range has at most 1024 of them, so reading them costs one short scan and
//! keeps the stored state to one level.
//!
//! Beside the segments, a per-key index entry `(range, segment, key) -> h(key, object)`
//! lets an exchange list the keys of a differing segment with a prefix scan instead of a
//! scan of the keyspace.
//!
//! Everything lives under the reserved prefix `0xFE "aae" 0x00` (keyspace names are UTF-8,
//! which never contains 0xFE; the catalog uses 0xFF), and is written in the same storage
//! batch as the data it describes ([`TreeIndex::write`]), so a crash cannot separate them.
//! A crash can still leave the trees stale relative to data written with the simulator's
//! ack-before-durable bug or by older builds; the [clean marker](TreeIndex::was_clean)
//! makes a node that did not stop cleanly rebuild them from the data at its next start.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::object::Object;
use crate::ring::Ring;
use crate::storage::{prefix_end, BatchOp, Storage, StorageError};

/// Leaves per tree.
pub const SEGMENTS: u32 = 1024;
/// Segments under one branch.
pub const SEGMENTS_PER_BRANCH: u32 = 32;
/// Branches per tree.
pub const BRANCHES: u32 = SEGMENTS / SEGMENTS_PER_BRANCH;

/// Reserved prefix of everything anti-entropy stores.
const PREFIX: &[u8] = b"\xFEaae\x00";
/// Sub-prefix of segment hashes.
const SEGMENT_TAG: u8 = b's';
/// Sub-prefix of the per-key index.
const KEY_TAG: u8 = b'k';
/// The clean-shutdown marker.
const MARKER: &[u8] = b"\xFEaae\x00m";
const CLEAN: &[u8] = b"clean";
const DIRTY: &[u8] = b"dirty";

/// Lock stripes over segments: updates of one segment are read-modify-writes, so two
/// batches touching the same segment must not interleave.
const LOCK_STRIPES: usize = 256;
/// Entries per page when rebuilding or clearing.
const PAGE: usize = 1000;

/// Errors of the tree store.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored tree entry has the wrong size.
    #[error("anti-entropy entry {key:?} is corrupt: expected 8 bytes, found {len}")]
    Corrupt {
        /// The storage key, escaped.
        key: String,
        /// The length found.
        len: usize,
    },
}

/// The id of the range whose replicas are `nodes` (order does not matter).
pub fn range_id(nodes: &[String]) -> u64 {
    let mut sorted: Vec<&str> = nodes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    xxh3_64(sorted.join("\0").as_bytes())
}

/// The segment of a storage key.
pub fn segment_of(skey: &[u8]) -> u32 {
    // A different seed from the ring's token and the lock stripes, so segments do not
    // correlate with ring positions.
    (xxhash_rust::xxh3::xxh3_64_with_seed(skey, 0x5eed_aae0) % u64::from(SEGMENTS)) as u32
}

/// What two replicas holding equal copies of a key share: the version vector, the dots of
/// the siblings (a dot names exactly one value) and, in CRDT keyspaces, a digest of the
/// CRDT state ([`crate::crdt::digest`]).
fn fingerprint(h: &mut Xxh3, o: &Object) {
    for (actor, counter) in &o.vv.0 {
        h.update(actor.as_bytes());
        h.update(&[0]);
        h.update(&counter.to_be_bytes());
    }
    h.update(b"\x01siblings");
    for s in &o.siblings {
        h.update(s.dot.actor.as_bytes());
        h.update(&[0]);
        h.update(&s.dot.counter.to_be_bytes());
        h.update(&[u8::from(s.value.is_some())]);
    }
    if let Some(state) = &o.crdt {
        h.update(b"\x01crdt");
        h.update(&crate::crdt::digest(state));
    }
}

/// `h(key, object)`: 0 for an absent key (so absent keys contribute nothing), never 0
/// otherwise.
pub fn key_hash(skey: &[u8], o: &Object) -> u64 {
    if o.is_empty() {
        return 0;
    }
    let mut h = Xxh3::new();
    h.update(&(skey.len() as u64).to_be_bytes());
    h.update(skey);
    fingerprint(&mut h, o);
    h.digest().max(1)
}

fn tree_prefix(tag: u8, keyspace: &str, range: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.push(tag);
    k.extend_from_slice(keyspace.as_bytes());
    k.push(0);
    k.extend_from_slice(&range.to_be_bytes());
    k
}

fn segment_key(keyspace: &str, range: u64, segment: u32) -> Vec<u8> {
    let mut k = tree_prefix(SEGMENT_TAG, keyspace, range);
    k.extend_from_slice(&segment.to_be_bytes());
    k
}

fn index_key(keyspace: &str, range: u64, segment: u32, skey: &[u8]) -> Vec<u8> {
    let mut k = tree_prefix(KEY_TAG, keyspace, range);
    k.extend_from_slice(&segment.to_be_bytes());
    k.extend_from_slice(skey);
    k
}

fn decode_hash(key: &[u8], v: &[u8]) -> Result<u64, TreeError> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| TreeError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            len: v.len(),
        })
}

/// The change one stored key makes to its tree.
#[derive(Debug, Clone)]
pub struct TreeChange {
    segment_key: Vec<u8>,
    index_key: Vec<u8>,
    old: u64,
    new: u64,
}

/// One key of a segment, as the per-key index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedKey {
    /// Its segment.
    pub segment: u32,
    /// The storage key (`Key::encode`).
    pub skey: Vec<u8>,
    /// `h(key, object)`.
    pub hash: u64,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// Keys hashed.
    pub keys: u64,
    /// Stored records skipped because they did not decode.
    pub skipped: u64,
}

/// Maps keys to ranges and keeps the trees of one node.
pub struct TreeIndex {
    name: String,
    /// The ring the trees are built on, with its layout version: the read layout's, set
    /// again (and the trees rebuilt) when a layout change completes.
    ring: std::sync::RwLock<(u64, Ring)>,
    locks: Vec<Mutex<()>>,
}

impl TreeIndex {
    /// The trees of node `name` on `ring`.
    pub fn new(name: &str, ring: Ring) -> Self {
        TreeIndex {
            name: name.to_string(),
            ring: std::sync::RwLock::new((0, ring)),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, (u64, Ring)> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The layout version whose ring the trees follow (0: the one the node started with).
    pub fn ring_version(&self) -> u64 {
        self.ring().0
    }

    /// Follow layout `version`'s ring; the caller rebuilds the trees
    /// ([`TreeIndex::rebuild`]), since every key's range may have changed.
    pub fn set_ring(&self, version: u64, ring: Ring) {
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = (version, ring);
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The range of a partition in a keyspace with `n` replicas, and its replicas.
    pub fn range_of(&self, n: usize, partition: &[u8]) -> (u64, Vec<String>) {
        let nodes = self.ring().1.preference_list(partition, n);
        (range_id(&nodes), nodes)
    }

    /// Every range of a keyspace with `n` replicas that this node is a replica of, with
    /// its replicas (sorted), ordered by id.
    pub fn ranges(&self, n: usize) -> BTreeMap<u64, Vec<String>> {
        let mut out = BTreeMap::new();
        let ring = self.ring();
        for token in ring.1.tokens() {
            let mut nodes = ring.1.preference_list_for_token(token, n);
            if nodes.contains(&self.name) {
                nodes.sort();
                out.entry(range_id(&nodes)).or_insert(nodes);
            }
        }
        out
    }

    /// The tree change of storing `new` over `old` at `key` of `ks`; `None` when the key's
    /// hash does not change.
    pub fn change(
        &self,
        ks: &KeyspaceDef,
        key: &Key,
        skey: &[u8],
        old: &Object,
        new: &Object,
    ) -> Option<TreeChange> {
        let (old, new) = (key_hash(skey, old), key_hash(skey, new));
        if old == new {
            return None;
        }
        let (range, _) = self.range_of(ks.n as usize, &key.partition);
        let segment = segment_of(skey);
        Some(TreeChange {
            segment_key: segment_key(&ks.name, range, segment),
            index_key: index_key(&ks.name, range, segment, skey),
            old,
            new,
        })
    }

    fn stripe(key: &[u8]) -> usize {
        (xxh3_64(key) as usize) % LOCK_STRIPES
    }

    fn lock_stripes(&self, mut stripes: Vec<usize>) -> Vec<MutexGuard<'_, ()>> {
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.locks[i].lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// Write `batch` together with the tree updates of `changes`, atomically (`deferred`:
    /// with [`Storage::write_deferred`], durable at the next sync). Segments are
    /// read-modify-written under their stripe locks, so concurrent batches touching the
    /// same segment cannot lose each other's update.
    pub fn write(
        &self,
        storage: &dyn Storage,
        mut batch: Vec<BatchOp>,
        changes: Vec<TreeChange>,
        deferred: bool,
    ) -> Result<(), TreeError> {
        let put = |batch| {
            if deferred {
                storage.write_deferred(batch)
            } else {
                storage.write(batch)
            }
        };
        if changes.is_empty() {
            put(batch)?;
            return Ok(());
        }
        let _guards = self.lock_stripes(
            changes
                .iter()
                .map(|c| Self::stripe(&c.segment_key))
                .collect(),
        );
        let mut deltas: BTreeMap<&[u8], u64> = BTreeMap::new();
        for c in &changes {
            *deltas.entry(&c.segment_key).or_insert(0) ^= c.old ^ c.new;
        }
        for (seg, delta) in deltas {
            let current = match storage.get(seg)? {
                Some(v) => decode_hash(seg, &v)?,
                None => 0,
            };
            let next = current ^ delta;
            batch.push(if next == 0 {
                BatchOp::Delete(seg.to_vec())
            } else {
                BatchOp::Put(seg.to_vec(), next.to_be_bytes().to_vec())
            });
        }
        // In order: a batch that stores one key twice leaves its last hash.
        for c in changes {
            batch.push(if c.new == 0 {
                BatchOp::Delete(c.index_key)
            } else {
                BatchOp::Put(c.index_key, c.new.to_be_bytes().to_vec())
            });
        }
        put(batch)?;
        Ok(())
    }

    /// The non-zero segment hashes of a tree, by segment.
    pub fn segment_hashes(
        &self,
        storage: &dyn Storage,
        keyspace: &str,
        range: u64,
    ) -> Result<BTreeMap<u32, u64>, TreeError> {
        let prefix = tree_prefix(SEGMENT_TAG, keyspace, range);
        let end = prefix_end(&prefix).unwrap_or_default();
        let mut out = BTreeMap::new();
        for (k, v) in storage.scan(&prefix, &end, SEGMENTS as usize + 1)? {
            let Some(seg) = k
                .get(prefix.len()..)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map(u32::from_be_bytes)
            else {
                continue;
            };
            out.insert(seg, decode_hash(&k, &v)?);
        }
        Ok(out)
    }

    /// The tree's branch hashes ([`BRANCHES`] of them; 0 for a branch with no keys).
    pub fn branches(
        &self,
        storage: &dyn Storage,
        keyspace: &str,
        range: u64,
    ) -> Result<Vec<u64>, TreeError> {
        Ok(branches_of(&self.segment_hashes(storage, keyspace, range)?))
    }

    /// Up to `limit` keys of the given segments from the per-key index, in (segment, key)
    /// order; the flag says the limit cut the list short.
    pub fn keys(
        &self,
        storage: &dyn Storage,
        keyspace: &str,
        range: u64,
        segments: &[u32],
        limit: usize,
    ) -> Result<(Vec<IndexedKey>, bool), TreeError> {
        let mut segments = segments.to_vec();
        segments.sort_unstable();
        segments.dedup();
        let mut out = Vec::new();
        for seg in segments {
            let remaining = limit.saturating_sub(out.len());
            let prefix = index_key(keyspace, range, seg, &[]);
            let end = prefix_end(&prefix).unwrap_or_default();
            let rows = storage.scan(&prefix, &end, remaining.saturating_add(1))?;
            let more = rows.len() > remaining;
            for (k, v) in rows.into_iter().take(remaining) {
                out.push(IndexedKey {
                    segment: seg,
                    skey: k[prefix.len()..].to_vec(),
                    hash: decode_hash(&k, &v)?,
                });
            }
            if more {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// Whether the node stopped cleanly last time (the trees can be trusted). A fresh
    /// database, or one written by a build without anti-entropy, has no marker: not clean.
    pub fn was_clean(storage: &dyn Storage) -> Result<bool, TreeError> {
        Ok(storage.get(MARKER)?.as_deref() == Some(CLEAN))
    }

    /// Record that the trees are (`clean`) or may not be (`!clean`) in step with the
    /// data. A running node keeps it dirty, so a crash leaves it dirty; a clean stop
    /// sets it clean; a node with anti-entropy off leaves it dirty, since its writes do
    /// not update the trees.
    pub fn mark(storage: &dyn Storage, clean: bool) -> Result<(), TreeError> {
        let v = if clean { CLEAN } else { DIRTY };
        storage.write(vec![BatchOp::Put(MARKER.to_vec(), v.to_vec())])?;
        Ok(())
    }

    /// Recompute every tree from the data of `keyspaces`, replacing what is stored.
    /// Holds every segment lock, so writes through [`TreeIndex::write`] wait for it; reads
    /// and writes in pages of [`PAGE`] entries so memory stays bounded (apart from the
    /// segment hashes, at most [`SEGMENTS`] per range).
    pub fn rebuild(
        &self,
        storage: &dyn Storage,
        keyspaces: &[KeyspaceDef],
    ) -> Result<RebuildStats, TreeError> {
        let _all = self.lock_stripes((0..LOCK_STRIPES).collect());
        // Clear everything under the prefix but the marker.
        for tag in [SEGMENT_TAG, KEY_TAG] {
            let mut start = PREFIX.to_vec();
            start.push(tag);
            let end = prefix_end(&start).unwrap_or_default();
            loop {
                let rows = storage.scan(&start, &end, PAGE)?;
                if rows.is_empty() {
                    break;
                }
                storage.write(rows.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect())?;
            }
        }
        let mut stats = RebuildStats::default();
        let mut segments: HashMap<Vec<u8>, u64> = HashMap::new();
        for ks in keyspaces {
            let (mut start, end) = crate::key::keyspace_range(&ks.name);
            loop {
                let rows = storage.scan(&start, &end, PAGE)?;
                let Some((last, _)) = rows.last() else { break };
                let mut next = last.clone();
                next.push(0);
                let mut batch = Vec::with_capacity(rows.len());
                for (skey, bytes) in rows {
                    let decoded = Key::decode(&skey).ok().and_then(|(_, key)| {
                        crate::replica::decode_object(&key, &bytes)
                            .ok()
                            .map(|o| (key, o))
                    });
                    let Some((key, object)) = decoded else {
                        tracing::warn!(key = %String::from_utf8_lossy(&skey), "anti-entropy rebuild skipped a record that does not decode");
                        stats.skipped += 1;
                        continue;
                    };
                    if let Some(c) = self.change(ks, &key, &skey, &Object::default(), &object) {
                        *segments.entry(c.segment_key).or_insert(0) ^= c.new;
                        batch.push(BatchOp::Put(c.index_key, c.new.to_be_bytes().to_vec()));
                        stats.keys += 1;
                    }
                }
                storage.write(batch)?;
                start = next;
            }
        }
        let ops: Vec<BatchOp> = segments
            .into_iter()
            .filter(|(_, h)| *h != 0)
            .map(|(k, h)| BatchOp::Put(k, h.to_be_bytes().to_vec()))
            .collect();
        for chunk in ops.chunks(PAGE) {
            storage.write(chunk.to_vec())?;
        }
        Ok(stats)
    }
}

/// Branch hashes from segment hashes: a hash of the (segment, hash) pairs under each
/// branch, 0 when it has none. Not an XOR, so two differing segments cannot cancel out.
pub fn branches_of(segments: &BTreeMap<u32, u64>) -> Vec<u64> {
    let mut hashers: Vec<Option<Xxh3>> = (0..BRANCHES).map(|_| None).collect();
    for (seg, h) in segments {
        let Some(slot) = hashers.get_mut((seg / SEGMENTS_PER_BRANCH) as usize) else {
            continue;
        };
        let hasher = slot.get_or_insert_with(Xxh3::new);
        hasher.update(&seg.to_be_bytes());
        hasher.update(&h.to_be_bytes());
    }
    hashers
        .into_iter()
        .map(|h| h.map_or(0, |h| h.digest().max(1)))
        .collect()
}

/// The root of a tree: a hash of its branches.
pub fn root_of(branches: &[u64]) -> u64 {
    let mut h = Xxh3::new();
    for b in branches {
        h.update(&b.to_be_bytes());
    }
    h.digest()
}

/// Delete the trees of keyspace `name`, in pages (its data is being purged: a later
/// keyspace of the same name must not inherit them).
pub fn purge_keyspace(storage: &dyn Storage, name: &str) -> Result<(), StorageError> {
    for tag in [SEGMENT_TAG, KEY_TAG] {
        let mut start = PREFIX.to_vec();
        start.push(tag);
        start.extend_from_slice(name.as_bytes());
        start.push(0);
        let end = prefix_end(&start).unwrap_or_default();
        loop {
            let rows = storage.scan(&start, &end, PAGE)?;
            if rows.is_empty() {
                break;
            }
            storage.write(rows.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::causality::VersionVector;
    use crate::crdt::CrdtOp;
    use crate::keyspace::ConflictPolicy;
    use crate::replica::{Replica, ReplicaOptions, WriteItem};
    use crate::storage::MemoryStorage;

    /// Every anti-entropy entry (segments and per-key index), in key order.
    fn tree_entries(storage: &dyn Storage) -> Vec<(Vec<u8>, Vec<u8>)> {
        let end = prefix_end(PREFIX).unwrap();
        storage
            .scan(PREFIX, &end, usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.as_slice() != MARKER)
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A plain write (`None`: delete), blind or with the read's context.
        Put(u8, Option<u8>, bool),
        /// A two-item batch of one partition (possibly the same key twice).
        Batch(u8, u8),
        /// Merge the other replica's copy of a key.
        Merge(u8),
        /// A write on the other replica only (so merges bring news).
        Elsewhere(u8, u8),
        /// A counter increment, and a set add or remove.
        Crdt(u8, i8),
        /// Merge the other replica's CRDT copy.
        MergeCrdt(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, proptest::option::of(any::<u8>()), any::<bool>())
                .prop_map(|(k, v, c)| Op::Put(k, v, c)),
            (0u8..12, 0u8..12).prop_map(|(a, b)| Op::Batch(a, b)),
            (0u8..12).prop_map(Op::Merge),
            (0u8..12, any::<u8>()).prop_map(|(k, v)| Op::Elsewhere(k, v)),
            (0u8..6, any::<i8>()).prop_map(|(k, d)| Op::Crdt(k, d)),
            (0u8..6).prop_map(Op::MergeCrdt),
        ]
    }

    /// Keys spread over several partitions (so over several ranges when n < nodes).
    fn key(k: u8) -> Key {
        Key {
            partition: format!("p{}", k % 5).into_bytes(),
            sort: vec![k],
        }
    }

    fn replica(
        name: &str,
        storage: Arc<dyn Storage>,
        trees: Option<Arc<TreeIndex>>,
    ) -> Arc<Replica> {
        let env = crate::env::TokioEnv::new(Arc::new(crate::clock::ManualClock::new(1000)));
        Replica::new(
            name,
            storage,
            env,
            ReplicaOptions {
                aae: trees,
                ..ReplicaOptions::default()
            },
        )
        .unwrap()
    }

    async fn apply(ops: Vec<Op>) -> (Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>) {
        let nodes: Vec<String> = ["n1", "n2", "n3", "n4"].map(String::from).to_vec();
        let ring = Ring::new(&nodes, 8).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let trees = Arc::new(TreeIndex::new("n1", ring));
        let r1 = replica("n1", Arc::clone(&storage), Some(Arc::clone(&trees)));
        let r2 = replica("n2", Arc::new(MemoryStorage::new()), None);
        let plain = KeyspaceDef::new("s", 2, 1, 1);
        let mut counter = KeyspaceDef::new("c", 3, 1, 1);
        counter.policy = ConflictPolicy::Counter;
        let mut set = KeyspaceDef::new("t", 2, 1, 1);
        set.policy = ConflictPolicy::Set;
        for op in ops {
            match op {
                Op::Put(k, v, with_context) => {
                    let ctx = match (with_context, r1.read(&plain, &key(k)).await.unwrap()) {
                        (true, Some(o)) => o.vv,
                        _ => VersionVector::new(),
                    };
                    let _ = r1
                        .write(&plain, &key(k), ctx, v.map(|v| vec![v]), false)
                        .await;
                }
                Op::Batch(a, b) => {
                    // Same partition: the same key again, or the one 5 further.
                    let b = match (b % 3, a + 5 < 12) {
                        (0, _) => a,
                        (_, true) => a + 5,
                        (_, false) => a - 5,
                    };
                    let items = [a, b]
                        .iter()
                        .map(|k| WriteItem {
                            sort: key(*k).sort,
                            context: VersionVector::new(),
                            value: Some(vec![*k]),
                            client_ts: None,
                            actor: None,
                        })
                        .collect();
                    let _ = r1
                        .write_batch(&plain, &key(a).partition, items, false)
                        .await;
                }
                Op::Merge(k) => {
                    if let Some(o) = r2.read(&plain, &key(k)).await.unwrap() {
                        r1.merge(&plain, &key(k), o).await.unwrap();
                    }
                }
                Op::Elsewhere(k, v) => {
                    let _ = r2
                        .write(&plain, &key(k), VersionVector::new(), Some(vec![v]), false)
                        .await;
                    let _ = r2
                        .update(
                            &counter,
                            &key(k % 6),
                            CrdtOp::CounterAdd(1),
                            VersionVector::new(),
                        )
                        .await;
                }
                Op::Crdt(k, d) => {
                    let _ = r1
                        .update(
                            &counter,
                            &key(k),
                            CrdtOp::CounterAdd(d.into()),
                            VersionVector::new(),
                        )
                        .await;
                    let member = vec![serde_bytes::ByteBuf::from(vec![d as u8 % 3])];
                    let op = if d < 0 {
                        CrdtOp::SetRemove(member)
                    } else {
                        CrdtOp::SetAdd(member)
                    };
                    let ctx = r1
                        .read(&set, &key(k))
                        .await
                        .unwrap()
                        .map(|o| crate::crdt::context(&o.crdt))
                        .unwrap_or_default();
                    let _ = r1.update(&set, &key(k), op, ctx).await;
                }
                Op::MergeCrdt(k) => {
                    if let Some(o) = r2.read(&counter, &key(k)).await.unwrap() {
                        r1.merge(&counter, &key(k), o).await.unwrap();
                    }
                }
            }
        }
        let incremental = tree_entries(&*storage);
        trees.rebuild(&*storage, &[plain, counter, set]).unwrap();
        (incremental, tree_entries(&*storage))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Goal: the trees kept incrementally by every write path (lead writes, batches,
        /// merges, CRDT updates, deletes) always equal the trees rebuilt from the data.
        #[test]
        fn incremental_tree_equals_rebuilt(ops in proptest::collection::vec(op(), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (incremental, rebuilt) = rt.block_on(apply(ops));
            prop_assert_eq!(incremental, rebuilt);
        }
    }

    /// Goal: equal copies hash equal and any change of version, sibling or CRDT state
    /// changes the hash; an absent key contributes nothing.
    #[test]
    fn key_hash_covers_what_replicas_share() {
        let skey = b"ks\x00p\x00\x01s".to_vec();
        assert_eq!(key_hash(&skey, &Object::default()), 0);
        let mut a = Object::default();
        a.apply_write("n1@1", &VersionVector::new(), Some(b"x".to_vec()), 5)
            .unwrap();
        let mut b = Object::default();
        b.apply_write("n1@1", &VersionVector::new(), Some(b"x".to_vec()), 5)
            .unwrap();
        assert_eq!(key_hash(&skey, &a), key_hash(&skey, &b));
        assert_ne!(key_hash(&skey, &a), key_hash(b"other", &a));
        b.apply_write("n2@1", &VersionVector::new(), Some(b"y".to_vec()), 5)
            .unwrap();
        assert_ne!(key_hash(&skey, &a), key_hash(&skey, &b));
        let mut c = a.clone();
        crate::crdt::apply(
            ConflictPolicy::Counter,
            &mut c.crdt,
            "n1@1",
            &CrdtOp::CounterAdd(1),
            &VersionVector::new(),
        )
        .unwrap();
        assert_ne!(key_hash(&skey, &a), key_hash(&skey, &c));
    }
}
