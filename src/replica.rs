//! The replica: what a node does with its own copy of a key.
//!
//! Three operations, each a read-modify-write under a per-key lock so concurrent requests
//! for one key are serialised on this replica:
//! - `read`: return the stored object;
//! - `write`: issue a new dot for a client write (this replica is the write's *lead*),
//!   store, and return the resulting object for the coordinator to replicate;
//! - `merge`: join an object from another replica (replication, read repair).
//!
//! Each store is one storage batch; with RocksDB and `sync = true` it is fsync'd before the
//! reply leaves, which is what makes an acknowledgement mean "on disk".
//!
//! **Incarnations.** The dots a lead issues name an *actor*, and the counter is one more
//! than what the lead's stored copy (or the client's context) holds for that actor. A node
//! that lost its data — directory wiped, restored from a backup, or a crash with
//! `sync = false` — would, under its bare name, issue counters its peers already hold;
//! they would ack the new write and drop it (Riak's kv679). So the actor is the node's
//! name plus an *incarnation*, a random 32-bit id stored in the database when it is
//! created: a wiped node comes back as a new actor. A new incarnation is also taken at
//! every start with `sync = false`, on `quorumkv node --new-incarnation` (restored
//! backups), and — as Riak's per-key epochs do — as soon as this replica sees evidence
//! that it lost dots it issued: a context or a peer's copy claiming more events of this
//! actor than its own copy holds. Every dot this replica issues is stored before its
//! object leaves, so such a claim can only mean lost data.
//!
//! **Overlapped lead writes** (`storage.overlap_lead_sync`). A lead may store its write
//! *deferred* — visible at once, durable at the next fsync — and hand the object to the
//! coordinator together with a [`Durable`] that completes once a sync covering it has
//! run; the coordinator replicates meanwhile and counts the lead towards W only then. One
//! sync task per replica runs the fsyncs (off the async threads, like every blocking
//! store) and serves every write registered before it started: concurrent leads share
//! one fsync. Two consequences are handled here:
//! - *kv679 after a power loss*: the deferred write's object may reach other replicas
//!   before this replica's copy is durable; a power loss then loses dots that live
//!   elsewhere, and re-issuing them would let peers drop a new write. So a node running
//!   with overlap keeps a durable *running marker* (written synced at start, removed
//!   synced at a clean stop): a start that finds it takes a new incarnation, whatever the
//!   current setting (the previous run may have overlapped).
//! - *dirty reads*: a read or scan that sees a key with a deferred write not yet synced
//!   waits for a sync before answering, so no client reads a value a power loss could
//!   still take back from this replica (docs/CONSISTENCY.md).
//!
//! **Tombstones and the reap floor.** Every store keeps a *tombstone index* in the same
//! batch: a key whose object holds only tombstones has a record saying since when
//! ([`crate::tombstones`] reaps from it). Removing a tombstone forgets the key's
//! version vector, so the lead's next write to the key would issue counters it already
//! used — and a stand-in's late copy of the old tombstone would then cover the new write
//! and erase it (Riak's kv679). So every reap raises a durable *reap floor*: the highest
//! counter this node's actor had in any tombstone it removed (and in any key it dropped
//! after a layout change: [`Replica::forget`]). A write to a key whose copy holds no
//! counter of this actor above the floor first witnesses the floor, so its dot is above
//! anything the key's earlier lives held; and a claim of counters at or below the floor
//! is an earlier life, not lost data (no new incarnation).
//!
//! **Object cap.** A write that would store an object larger than
//! `limits.max_object_bytes` is refused, naming the key and size; a merge is never
//! refused (the versions exist elsewhere and dropping them would lose acknowledged
//! writes), but one that produces an oversized object is counted.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use crate::aae::tree::{TreeChange, TreeError, TreeIndex};
use crate::causality::{CausalityError, Dot, VersionVector};
use crate::clock::Hlc;
use crate::env::{self, Env};
use crate::key::{partition_prefix, Key};
use crate::keyspace::KeyspaceDef;
use crate::object::Object;
use crate::policy::{LeadWrite, PolicyError};
use crate::storage::{prefix_end, BatchOp, Storage, StorageError};

/// Errors a replica reports.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored object could not be decoded.
    #[error("stored object for {key} is corrupt: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// Decoder message.
        message: String,
    },
    /// A conditional write found the key changed since the client's read.
    #[error(
        "conditional write refused: {key} has changed since the context was read (read it again)"
    )]
    Conflict {
        /// The key.
        key: String,
    },
    /// The write would leave more siblings than the keyspace allows.
    #[error("key {key} would have {count} siblings (keyspace {keyspace} allows {max}); read it and write with its context to resolve them")]
    SiblingLimit {
        /// The key.
        key: String,
        /// Keyspace name.
        keyspace: String,
        /// Siblings after the write.
        count: usize,
        /// The cap.
        max: u16,
    },
    /// A CRDT operation was refused (wrong type for the keyspace, overflow).
    #[error(transparent)]
    Crdt(#[from] crate::crdt::CrdtError),
    /// The request does not fit the keyspace's conflict policy (a plain write reached a
    /// CRDT keyspace, whose keys change only by operations).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The write would store an object over `limits.max_object_bytes`.
    #[error("key {key} would be stored as {size} bytes, over the limit of {max} (limits.max_object_bytes); write with the context of a read to replace siblings, or store less")]
    ObjectTooLarge {
        /// The key.
        key: String,
        /// Encoded size after the write.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// The objects a batch would store are together over `limits.max_object_bytes` (a
    /// batch is replicated as one message).
    #[error("the batch would store {size} bytes in all, over the limit of {max} (limits.max_object_bytes); split it")]
    BatchTooLarge {
        /// Encoded size of every object of the batch.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// No new version can be issued for the key.
    #[error("key {key}: {source}")]
    Causality {
        /// The key.
        key: String,
        /// Why.
        source: CausalityError,
    },
    /// The blocking task running the operation died.
    #[error("storage task failed: {0}")]
    Task(String),
    /// An anti-entropy tree entry is damaged (a rebuild replaces it).
    #[error("anti-entropy tree: {0}")]
    Tree(String),
    /// The fsync that was to make a deferred write durable failed (or the sync task
    /// ended with the process): the write is visible here but may not survive a power
    /// loss.
    #[error("fsync of a deferred write failed: {0}")]
    Sync(String),
}

impl From<TreeError> for ReplicaError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Storage(e) => ReplicaError::Storage(e),
            other => ReplicaError::Tree(other.to_string()),
        }
    }
}

/// Format version of stored objects (first byte), so the layout can evolve.
const OBJECT_FORMAT: u8 = 1;
/// Lock stripes; a power of two comfortably above the number of concurrent requests.
const LOCK_STRIPES: usize = 256;

/// Storage key of the node's incarnation (metadata sorts after every keyspace).
const INCARNATION_KEY: &[u8] = b"\xFFmeta\x00incarnation";

/// Storage key of the running marker: present while a node that overlaps its lead's fsync
/// with replication runs; found at start, the previous run did not stop cleanly.
const RUNNING_KEY: &[u8] = b"\xFFmeta\x00running";

/// Most deferred writes and read barriers waiting for the sync task; past it a lead write
/// is stored synced (and a read syncs itself), so the queue stays bounded.
const MAX_PENDING_SYNCS: usize = 4096;

/// How long the sync task waits before trying again after an fsync failed (a failing
/// disk must not turn it into a busy loop).
const SYNC_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Storage key of the reap floor: the incarnation it belongs to (4 bytes) and the floor
/// (8 bytes), big-endian.
const REAP_FLOOR_KEY: &[u8] = b"\xFFmeta\x00reap-floor";

/// How a replica is set up.
#[derive(Clone)]
pub struct ReplicaOptions {
    /// `limits.max_object_bytes`.
    pub max_object_bytes: usize,
    /// Take a new incarnation even if the database holds one (`sync = false`, a restored
    /// backup).
    pub new_incarnation: bool,
    /// Where the replica counts oversized merges and incarnation changes.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Known bug classes, re-introduced on purpose (simulation tests only).
    pub bugs: InjectedBugs,
    /// The anti-entropy trees every store updates in its own batch (`None`: anti-entropy
    /// is off).
    pub aae: Option<Arc<TreeIndex>>,
    /// `storage.overlap_lead_sync` (with `sync = true`): lead writes asked for it are
    /// stored deferred and synced alongside replication, and the running marker is kept.
    pub overlap_lead_sync: bool,
}

/// Bugs the simulator re-introduces to show that its swarm finds them (docs/SIMULATION.md).
/// All off in every real node: nothing in node.toml or on the command line of `quorumkv
/// node` reaches them; only `quorumkv sim --bug` and the simulator's tests set them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Acknowledge a write before it is stored: the storage write runs later, in the
    /// background (a crash in between loses an acknowledged version, and the lead's next
    /// write to the key re-issues its dot).
    pub ack_before_durable: bool,
    /// The lead ignores the client's causal context (every write is blind).
    pub ignore_context: bool,
    /// Replication and read repair store the incoming copy instead of merging it.
    pub overwrite_on_merge: bool,
    /// Never renew the incarnation on seeing that this node lost dots it issued (the
    /// run-time half of the incarnation rule; the simulator's `keep_incarnation` is the
    /// start-up half).
    pub ignore_lost_dots: bool,
    /// Reaping forgets a key without raising the reap floor, so a re-created key's dots
    /// start again from 1 (Riak's kv679 once tombstones are removed).
    pub no_reap_floor: bool,
    /// The reaper removes a tombstone as soon as its own copy is old enough: no check
    /// that every replica holds it, and none for outstanding hints.
    pub reap_without_agreement: bool,
    /// The failure detector ignores its own late timers: probes and calls that spanned a
    /// local stall count against peers, and suspicions run on through it.
    pub detector_ignores_stalls: bool,
    /// The failure detector does not let an answer from a suspect clear the suspicion
    /// (only the suspicion timeout ends it, as dead).
    pub detector_no_refutation: bool,
    /// A node says it is synced on a new layout version without receiving the ranges it
    /// gained: reads move to owners that lack the data.
    pub sync_without_transfer: bool,
    /// Writes during a layout change reach a quorum of the newest version's owners only,
    /// while reads still go to the oldest version's.
    pub write_newest_layout_only: bool,
    /// A start that finds the running marker (an overlapping node that lost power) keeps
    /// the old incarnation: dots whose objects reached peers before the power loss took
    /// them here are issued again.
    pub overlap_keeps_incarnation: bool,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            max_object_bytes: crate::config::Limits::default().max_object_bytes,
            new_incarnation: false,
            metrics: Arc::default(),
            bugs: InjectedBugs::default(),
            aae: None,
            overlap_lead_sync: false,
        }
    }
}

/// Whether a node starting now must take a new incarnation: when asked (a restored
/// backup), and on every start without fsync, because a crash may have lost versions it
/// had acknowledged and issuing their dots again would collide with copies elsewhere.
pub fn starts_new_incarnation(sync: bool, asked: bool) -> bool {
    asked || !sync
}

/// The actor id of `name` in incarnation `inc`.
pub fn actor_id(name: &str, inc: u32) -> String {
    format!("{name}@{inc:08x}")
}

/// The node name part of an actor id.
pub fn actor_node(actor: &str) -> &str {
    actor.split_once('@').map_or(actor, |(name, _)| name)
}

/// A random incarnation (from the node's environment), different from `previous` and
/// from 0 (0 marks "none").
fn fresh_incarnation(env: &dyn Env, previous: Option<u32>) -> u32 {
    loop {
        let inc = env.random_u64() as u32;
        if inc != 0 && Some(inc) != previous {
            return inc;
        }
    }
}

/// The stored incarnation, if the database holds one.
fn stored_incarnation(storage: &dyn Storage) -> Result<Option<u32>, ReplicaError> {
    match storage.get(INCARNATION_KEY)? {
        None => Ok(None),
        Some(b) => match <[u8; 4]>::try_from(b.as_slice()) {
            Ok(a) if u32::from_be_bytes(a) != 0 => Ok(Some(u32::from_be_bytes(a))),
            _ => Err(ReplicaError::Corrupt {
                key: "node incarnation".into(),
                message: format!("expected 4 non-zero bytes, found {b:?}"),
            }),
        },
    }
}

/// The stored reap floor of incarnation `inc` (0 if none, or if it belongs to another
/// incarnation: a new actor has issued nothing).
fn stored_reap_floor(storage: &dyn Storage, inc: u32) -> Result<u64, ReplicaError> {
    match storage.get(REAP_FLOOR_KEY)? {
        None => Ok(0),
        Some(b) if b.len() == 12 => {
            let (i, f) = b.split_at(4);
            let (i, f) = (
                u32::from_be_bytes(i.try_into().unwrap_or_default()),
                u64::from_be_bytes(f.try_into().unwrap_or_default()),
            );
            Ok(if i == inc { f } else { 0 })
        }
        Some(b) => Err(ReplicaError::Corrupt {
            key: "reap floor".into(),
            message: format!("expected 12 bytes, found {}", b.len()),
        }),
    }
}

/// The incarnation part of an actor id made by [`actor_id`].
fn incarnation_of(actor: &str) -> Option<u32> {
    u32::from_str_radix(actor.rsplit_once('@')?.1, 16).ok()
}

/// Whether `o` holds versions and every one of them is a tombstone: what the tombstone
/// index lists and the reaper may remove.
pub fn only_tombstones(o: &Object) -> bool {
    !o.siblings.is_empty() && o.crdt.is_none() && o.siblings.iter().all(|s| s.value.is_none())
}

/// A tombstone of one key as its replica holds it, for the reaper's agreement check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldTombstone {
    /// `h(key, object)` (`aae::tree::key_hash`): equal on two replicas when their copies are.
    pub hash: u64,
    /// How long this replica has held this exact copy, milliseconds (by its own clock).
    pub held_ms: u64,
}

/// Draw an incarnation other than `previous` and store it (synced as every write is).
fn store_new_incarnation(
    storage: &dyn Storage,
    env: &dyn Env,
    previous: Option<u32>,
) -> Result<u32, ReplicaError> {
    let inc = fresh_incarnation(env, previous);
    storage.write(vec![BatchOp::Put(
        INCARNATION_KEY.to_vec(),
        inc.to_be_bytes().to_vec(),
    )])?;
    Ok(inc)
}

/// A node's replica role.
pub struct Replica {
    name: String,
    /// `name@incarnation`: the actor of every dot and CRDT operation this replica issues.
    actor: RwLock<Arc<str>>,
    /// Serialises incarnation changes.
    renewing: Mutex<()>,
    max_object_bytes: usize,
    metrics: Arc<crate::metrics::Metrics>,
    storage: Arc<dyn Storage>,
    /// Time, randomness and blocking work (see [`crate::env`]).
    env: Arc<dyn Env>,
    bugs: InjectedBugs,
    /// Anti-entropy trees, updated in every store's batch.
    aae: Option<Arc<TreeIndex>>,
    /// Timestamps for last-write-wins keyspaces.
    hlc: Hlc,
    locks: Vec<Mutex<()>>,
    /// The reap floor of the current actor (see the module comment); 0 when nothing was
    /// reaped in this incarnation.
    reap_floor: std::sync::atomic::AtomicU64,
    /// Lead writes may be stored deferred (`storage.overlap_lead_sync`).
    overlap: bool,
    /// Storage keys with a deferred write whose sync has not completed, and how many.
    dirty: Mutex<BTreeMap<Vec<u8>, u32>>,
    /// Sum of `dirty`'s counts: reads skip the map's lock while it is zero.
    dirty_count: AtomicUsize,
    /// Deferred writes and read barriers waiting for the sync task.
    syncs: Mutex<SyncQueue>,
    /// True once stopped cleanly: deferred stores hold it shared from their check to their
    /// write, so none lands after the running marker is removed.
    stopped: RwLock<bool>,
}

/// What waits for the replica's sync task.
#[derive(Default)]
struct SyncQueue {
    waiting: Vec<SyncWaiter>,
    /// A sync task is running (it takes `waiting` before each fsync).
    running: bool,
    /// The last fsync failed: the next waits [`SYNC_RETRY`] first.
    failed: bool,
}

/// A deferred write (its keys) or a read barrier (no keys) waiting for an fsync.
struct SyncWaiter {
    keys: Vec<Vec<u8>>,
    /// Who to tell; `None` for the keys of a write whose fsync failed, kept dirty until an
    /// fsync succeeds.
    tx: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// Completes once a lead's deferred write is durable (or its fsync failed); a synced
/// write's completes at once.
#[must_use = "a deferred write counts only once its sync is awaited"]
pub struct Durable(Option<tokio::sync::oneshot::Receiver<Result<(), String>>>);

impl Durable {
    /// Already durable (stored synced).
    pub fn now() -> Self {
        Durable(None)
    }

    /// Whether the write still waits for its fsync.
    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }

    /// Wait until the write is durable; an error when its fsync failed or the sync task
    /// ended (the process is going away).
    pub async fn wait(self) -> Result<(), ReplicaError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(m)) => Err(ReplicaError::Sync(m)),
                Err(_) => Err(ReplicaError::Sync("the sync task ended".into())),
            },
        }
    }
}

/// The stored form of an object: a format byte, then its MessagePack encoding.
pub fn encode_object(o: &Object) -> Vec<u8> {
    let mut out = vec![OBJECT_FORMAT];
    if let Err(e) = rmp_serde::encode::write_named(&mut out, o) {
        tracing::error!(error = %e, "object encoding failed");
    }
    out
}

/// Inverse of [`encode_object`] for the record stored at `key`: refuses an unknown format,
/// a malformed body and CRDT states that break an invariant (public for the fuzz targets).
pub fn decode_object(key: &Key, bytes: &[u8]) -> Result<Object, ReplicaError> {
    let corrupt = |message: String| ReplicaError::Corrupt {
        key: key.to_string(),
        message,
    };
    match bytes.split_first() {
        Some((&OBJECT_FORMAT, rest)) => {
            let o: Object = rmp_serde::from_slice(rest).map_err(|e| corrupt(e.to_string()))?;
            crate::crdt::check_well_formed(&o.crdt).map_err(|e| corrupt(e.to_string()))?;
            Ok(o)
        }
        Some((v, _)) => Err(corrupt(format!("unknown object format {v}"))),
        None => Err(corrupt("empty record".into())),
    }
}

/// The object stored for `key` (an empty one if nothing is stored).
fn stored_object(key: &Key, bytes: Option<Vec<u8>>) -> Result<Object, ReplicaError> {
    match bytes {
        Some(bytes) => decode_object(key, &bytes),
        None => Ok(Object::default()),
    }
}

impl Replica {
    /// A replica named `name` over `storage`, in the incarnation the database holds (a new
    /// one, stored durably, if it holds none or `opts.new_incarnation`).
    pub fn new(
        name: &str,
        storage: Arc<dyn Storage>,
        env: Arc<dyn Env>,
        opts: ReplicaOptions,
    ) -> Result<Arc<Self>, ReplicaError> {
        // A running marker left behind: the previous run overlapped its lead's fsync with
        // replication and did not stop cleanly, so objects holding dots it issued may be
        // on peers while a power loss took them here (see the module comment).
        let unclean = storage.get(RUNNING_KEY)?.is_some();
        let renew = opts.new_incarnation || (unclean && !opts.bugs.overlap_keeps_incarnation);
        let inc = match stored_incarnation(storage.as_ref())? {
            Some(inc) if !renew => inc,
            previous => {
                let inc = store_new_incarnation(storage.as_ref(), &*env, previous)?;
                tracing::info!(node = name, incarnation = %format!("{inc:08x}"), previous = ?previous.map(|p| format!("{p:08x}")), unclean_overlapped_stop = unclean, "new node incarnation");
                inc
            }
        };
        // Synced: the marker is durable before any deferred write can be.
        if opts.overlap_lead_sync {
            storage.write(vec![BatchOp::Put(RUNNING_KEY.to_vec(), vec![1])])?;
        } else if unclean {
            storage.write(vec![BatchOp::Delete(RUNNING_KEY.to_vec())])?;
        }
        let reap_floor = stored_reap_floor(storage.as_ref(), inc)?;
        Ok(Arc::new(Replica {
            reap_floor: reap_floor.into(),
            name: name.to_string(),
            actor: RwLock::new(actor_id(name, inc).into()),
            renewing: Mutex::new(()),
            max_object_bytes: opts.max_object_bytes,
            metrics: opts.metrics,
            bugs: opts.bugs,
            aae: opts.aae,
            storage,
            hlc: Hlc::new(env.clone()),
            env,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            overlap: opts.overlap_lead_sync,
            dirty: Mutex::new(BTreeMap::new()),
            dirty_count: AtomicUsize::new(0),
            syncs: Mutex::new(SyncQueue::default()),
            stopped: RwLock::new(false),
        }))
    }

    /// Record a clean stop: no deferred store starts any more, and the running marker is
    /// removed with a synced write (which makes every deferred write before it durable).
    /// Call once nothing writes any more.
    pub fn stop_cleanly(&self) -> Result<(), ReplicaError> {
        let mut stopped = self.stopped.write().unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        if self.overlap {
            self.storage
                .write(vec![BatchOp::Delete(RUNNING_KEY.to_vec())])?;
        }
        Ok(())
    }

    /// Whether lead writes asked to overlap are stored deferred.
    pub fn overlaps_lead_sync(&self) -> bool {
        self.overlap
    }

    fn lock_syncs(&self) -> std::sync::MutexGuard<'_, SyncQueue> {
        self.syncs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_dirty(&self, keys: &[Vec<u8>]) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            *d.entry(k.clone()).or_insert(0) += 1;
        }
        self.dirty_count
            .fetch_add(keys.len(), AtomicOrdering::SeqCst);
    }

    fn unmark_dirty(&self, keys: &[Vec<u8>]) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if let Some(n) = d.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    d.remove(k);
                }
                self.dirty_count.fetch_sub(1, AtomicOrdering::SeqCst);
            }
        }
    }

    /// Whether a key in `[start, end)` has a deferred write not yet durable. Checked after
    /// the storage read: the key is marked before its write is applied and unmarked after
    /// its sync, so a read that saw a deferred write finds it marked.
    fn dirty_in(&self, start: &[u8], end: &[u8]) -> bool {
        if self.dirty_count.load(AtomicOrdering::SeqCst) == 0 {
            return false;
        }
        let d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.range::<[u8], _>((
            std::ops::Bound::Included(start),
            std::ops::Bound::Excluded(end),
        ))
        .next()
        .is_some()
    }

    /// Whether `skey` has a deferred write not yet durable.
    fn is_dirty(&self, skey: &[u8]) -> bool {
        if self.dirty_count.load(AtomicOrdering::SeqCst) == 0 {
            return false;
        }
        let d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.contains_key(skey)
    }

    /// Wait until everything stored before this call is durable (a read that saw a
    /// deferred write): a waiter on the next fsync, or an fsync of its own when the
    /// queue is full.
    async fn sync_barrier(self: &Arc<Self>) -> Result<(), ReplicaError> {
        let rx = {
            let mut q = self.lock_syncs();
            if q.waiting.len() >= MAX_PENDING_SYNCS {
                None
            } else {
                let (tx, rx) = tokio::sync::oneshot::channel();
                q.waiting.push(SyncWaiter {
                    keys: Vec::new(),
                    tx: Some(tx),
                });
                Some(rx)
            }
        };
        match rx {
            Some(rx) => {
                self.kick_sync();
                Durable(Some(rx)).wait().await
            }
            None => self.run(|r| Ok(r.storage.sync()?)).await,
        }
    }

    /// Start the sync task if something waits and none runs.
    fn kick_sync(self: &Arc<Self>) {
        {
            let mut q = self.lock_syncs();
            if q.running || q.waiting.is_empty() {
                return;
            }
            q.running = true;
        }
        let me = Arc::clone(self);
        self.env
            .spawn(Box::pin(async move { me.sync_loop().await }));
    }

    /// The sync task: until nothing waits, take every waiter, fsync once, tell them. A
    /// waiter registered during an fsync waits for the next, which covers its write.
    async fn sync_loop(self: Arc<Self>) {
        loop {
            let (waiters, after_failure) = {
                let mut q = self.lock_syncs();
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                (std::mem::take(&mut q.waiting), q.failed)
            };
            let mut pause = self.storage.sync_latency();
            if after_failure {
                pause += SYNC_RETRY;
            }
            if !pause.is_zero() {
                self.env.sleep_until(self.env.now() + pause).await;
            }
            let result = if self.storage.blocking() {
                let storage = Arc::clone(&self.storage);
                env::blocking(&*self.env, move || storage.sync())
                    .await
                    .unwrap_or_else(|| Err(StorageError::Rocks("sync task failed".into())))
            } else {
                self.storage.sync()
            };
            self.metrics
                .deferred_fsyncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = result.map_err(|e| e.to_string());
            let mut retry = Vec::new();
            for w in waiters {
                if result.is_ok() {
                    self.unmark_dirty(&w.keys);
                } else if !w.keys.is_empty() {
                    // Still not durable: reads of these keys keep waiting, for the next
                    // fsync that succeeds.
                    retry.push(SyncWaiter {
                        keys: w.keys,
                        tx: None,
                    });
                }
                if let Some(tx) = w.tx {
                    let _ = tx.send(result.clone());
                }
            }
            let mut q = self.lock_syncs();
            if let Err(e) = &result {
                // Once per run of failures, not at every retry.
                if !q.failed {
                    tracing::warn!(node = %self.name, error = %e, "fsync of deferred lead writes failed; retrying every {} ms while reads wait for it", SYNC_RETRY.as_millis());
                }
            }
            q.failed = result.is_err();
            q.waiting.extend(retry);
        }
    }

    /// The actor id this replica issues dots as now.
    pub fn actor(&self) -> Arc<str> {
        Arc::clone(&self.actor.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// This replica has seen a claim that `seen` (an actor of this node) issued more than
    /// its own copy holds: it lost dots. Take a new incarnation, unless another request
    /// already did, so nothing it issues from now on can collide with what was lost.
    fn renew_incarnation(&self, seen: &str) -> Result<(), ReplicaError> {
        let _one = self.renewing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.actor();
        if &*current != seen {
            return Ok(());
        }
        let previous = stored_incarnation(self.storage.as_ref())?;
        let inc = store_new_incarnation(self.storage.as_ref(), &*self.env, previous)?;
        let actor: Arc<str> = actor_id(&self.name, inc).into();
        tracing::warn!(node = %self.name, old = %current, new = %actor, "this node lost versions it had issued (restored backup or unsynced crash?); took a new incarnation");
        self.metrics
            .incarnation_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
        // The new actor has issued nothing: no reaped life of any key holds its counters.
        self.reap_floor
            .store(0, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The actor to issue this key's next dot as. If `claimed` (a context, or a peer's copy
    /// of the key) says the current actor issued more than `local` (this replica's copy)
    /// holds, this node lost dots: renew first.
    fn issuing_actor(
        &self,
        local: &VersionVector,
        claimed: &VersionVector,
    ) -> Result<Arc<str>, ReplicaError> {
        let actor = self.actor();
        let floor = self.reap_floor.load(std::sync::atomic::Ordering::Acquire);
        // A claim at or below the reap floor may be an earlier life of the key, reaped or
        // dropped here (a layout change), not versions this node lost; and whatever this
        // replica holds of the key, its next dot goes above the floor (`write_batch`), so
        // no counter at or below it is issued again.
        let reaped_life = claimed.get(&actor) <= floor;
        if claimed.get(&actor) > local.get(&actor) && !reaped_life && !self.bugs.ignore_lost_dots {
            self.renew_incarnation(&actor)?;
            return Ok(self.actor());
        }
        Ok(actor)
    }

    /// The storage engine (for metadata).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Run `f` off the async worker threads when the engine blocks on disk.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Replica) -> Result<T, ReplicaError> + Send + 'static,
    ) -> Result<T, ReplicaError> {
        if self.storage.blocking() {
            let me = Arc::clone(self);
            env::blocking(&*self.env, move || f(&me))
                .await
                .ok_or_else(|| ReplicaError::Task("storage task failed".into()))?
        } else {
            f(self)
        }
    }

    /// The anti-entropy trees, when anti-entropy is on.
    pub fn aae(&self) -> Option<&Arc<TreeIndex>> {
        self.aae.as_ref()
    }

    /// The tree change of storing `new` over `old` at `key` (none when anti-entropy is
    /// off or the key's hash does not change).
    fn tree_change(
        &self,
        ks: &KeyspaceDef,
        key: &Key,
        skey: &[u8],
        old: &Object,
        new: &Object,
    ) -> Option<TreeChange> {
        self.aae.as_ref()?.change(ks, key, skey, old, new)
    }

    /// As [`Replica::store`], deferred: visible at once, durable once the sync task's
    /// next fsync ran (the returned receiver says when). `keys` (the objects' storage
    /// keys) are marked dirty until then. Stored synced instead (no receiver) when
    /// overlap is off, the replica stopped, or the sync queue is full.
    fn store_deferred(
        &self,
        batch: Vec<BatchOp>,
        changes: Vec<TreeChange>,
        keys: Vec<Vec<u8>>,
    ) -> Result<Durable, ReplicaError> {
        let stopped = self.stopped.read().unwrap_or_else(|e| e.into_inner());
        let full = self.lock_syncs().waiting.len() >= MAX_PENDING_SYNCS;
        if !self.overlap || *stopped || full {
            self.store(batch, changes)?;
            return Ok(Durable::now());
        }
        self.mark_dirty(&keys);
        let written = match self.aae.as_ref() {
            Some(trees) => trees.write(&*self.storage, batch, changes, true),
            None => self.storage.write_deferred(batch).map_err(TreeError::from),
        };
        if let Err(e) = written {
            self.unmark_dirty(&keys);
            return Err(e.into());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock_syncs()
            .waiting
            .push(SyncWaiter { keys, tx: Some(tx) });
        Ok(Durable(Some(rx)))
    }

    /// Store a batch of objects together with their anti-entropy tree `changes` (one
    /// storage batch); durable on return (unless the simulator re-introduced the
    /// ack-before-durable bug).
    fn store(&self, batch: Vec<BatchOp>, changes: Vec<TreeChange>) -> Result<(), ReplicaError> {
        let write = |storage: &dyn Storage, aae: Option<&Arc<TreeIndex>>| match aae {
            Some(trees) => trees.write(storage, batch, changes, false),
            None => storage.write(batch).map_err(TreeError::from),
        };
        if !self.bugs.ack_before_durable {
            write(&*self.storage, self.aae.as_ref())?;
            return Ok(());
        }
        let (storage, env, aae) = (
            Arc::clone(&self.storage),
            Arc::clone(&self.env),
            self.aae.clone(),
        );
        self.env.spawn(Box::pin(async move {
            env.sleep_until(env.now() + std::time::Duration::from_millis(20))
                .await;
            let _ = write(&*storage, aae.as_ref());
        }));
        Ok(())
    }

    /// Lock the stripes of every key, in stripe order so two batches cannot deadlock.
    fn lock_all(&self, storage_keys: &[Vec<u8>]) -> Vec<std::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = storage_keys
            .iter()
            .map(|k| (xxhash_rust::xxh3::xxh3_64(k) as usize) % LOCK_STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.locks[i].lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    fn load(&self, key: &Key, skey: &[u8]) -> Result<Object, ReplicaError> {
        stored_object(key, self.storage.get(skey)?)
    }

    /// `bytes`, the encoded object a write would store for `key`, if it obeys
    /// `limits.max_object_bytes`. A write that shrinks an object already over the cap (one
    /// that merges grew) is let through, so the key can always be resolved.
    fn capped(
        &self,
        key: &Key,
        bytes: Vec<u8>,
        size_before: usize,
    ) -> Result<Vec<u8>, ReplicaError> {
        if bytes.len() > self.max_object_bytes && bytes.len() >= size_before {
            return Err(ReplicaError::ObjectTooLarge {
                key: key.to_string(),
                size: bytes.len(),
                max: self.max_object_bytes,
            });
        }
        Ok(bytes)
    }

    /// The stored object and its encoded size (0 when absent).
    fn load_sized(&self, key: &Key, skey: &[u8]) -> Result<(Object, usize), ReplicaError> {
        let bytes = self.storage.get(skey)?;
        let size = bytes.as_ref().map_or(0, Vec::len);
        Ok((stored_object(key, bytes)?, size))
    }

    /// This replica's object for `key` (`None` if it has never seen the key).
    pub async fn read(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        key: &Key,
    ) -> Result<Option<Object>, ReplicaError> {
        let skey = key.encode(&ks.name);
        let present = |o: Object| if o.is_empty() { None } else { Some(o) };
        // A hot key is in RocksDB's memtable or block cache: read it right here. Handing
        // every read to a blocking thread cost ~4 context switches each (perf: 11 per
        // client operation), more than the read; only reads that would touch disk go
        // there.
        let bytes = match self.storage.get_cached(&skey) {
            Some(res) => res?,
            None => {
                let skey = skey.clone();
                self.run(move |r| Ok(r.storage.get(&skey)?)).await?
            }
        };
        // A deferred write not yet durable is answered only once it is (no dirty read).
        if self.is_dirty(&skey) {
            self.sync_barrier().await?;
        }
        Ok(present(stored_object(key, bytes)?))
    }

    /// Apply a client write as its lead replica; returns the stored object and the new
    /// version's dot.
    pub async fn write(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        key: &Key,
        context: VersionVector,
        value: Option<Vec<u8>>,
        if_context: bool,
    ) -> Result<(Object, Dot), ReplicaError> {
        let item = WriteItem {
            sort: key.sort.clone(),
            context,
            value,
            client_ts: None,
            actor: None,
        };
        let mut objects = self
            .write_batch(ks, &key.partition, vec![item], if_context)
            .await?;
        objects
            .pop()
            .ok_or_else(|| ReplicaError::Task("empty batch result".into()))
    }

    /// Apply client writes to items of one partition as their lead replica, atomically:
    /// all are stored in one storage batch or none is (a sibling-cap or condition failure
    /// of any item refuses the whole batch). Returns the stored objects and the new dots,
    /// in order.
    pub async fn write_batch(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        partition: &[u8],
        items: Vec<WriteItem>,
        if_context: bool,
    ) -> Result<Vec<(Object, Dot)>, ReplicaError> {
        let (out, _synced) = self
            .lead_write_batch(ks, partition, items, if_context, false)
            .await?;
        Ok(out)
    }

    /// As [`Replica::write_batch`], with `deferred` (and overlap on) stored deferred: the
    /// objects come back at once, with a [`Durable`] that completes once they are on disk.
    /// Otherwise stored synced, with a [`Durable`] already complete.
    pub async fn lead_write_batch(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        partition: &[u8],
        items: Vec<WriteItem>,
        if_context: bool,
        deferred: bool,
    ) -> Result<(Vec<(Object, Dot)>, Durable), ReplicaError> {
        let policy = ks.policy.resolver();
        policy.check_lead_write(ks)?;
        let ks = ks.clone();
        let partition = partition.to_vec();
        let done = self
            .run(move |r| {
                let keys: Vec<Key> = items
                    .iter()
                    .map(|i| Key {
                        partition: partition.clone(),
                        sort: i.sort.clone(),
                    })
                    .collect();
                let skeys: Vec<Vec<u8>> = keys.iter().map(|k| k.encode(&ks.name)).collect();
                let _guards = r.lock_all(&skeys);
                let mut out = Vec::with_capacity(items.len());
                let mut batch = Vec::with_capacity(items.len());
                let mut total = 0usize;
                // Later items of the batch see earlier ones (a batch may touch a key twice).
                let mut staged: Vec<(Vec<u8>, Object, usize)> = Vec::new();
                let mut changes = Vec::new();
                for ((item, key), skey) in items.into_iter().zip(&keys).zip(skeys) {
                    let (mut o, size_before) =
                        match staged.iter().rev().find(|(k, _, _)| *k == skey) {
                            Some((_, o, size)) => (o.clone(), *size),
                            None => r.load_sized(key, &skey)?,
                        };
                    let old = r.aae.is_some().then(|| o.clone());
                    let actor = r.issuing_actor(&o.vv, &item.context)?;
                    let was_tombstoned = only_tombstones(&o);
                    if if_context
                        && !matches!(
                            o.vv.partial_cmp_vv(&item.context),
                            Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                        )
                    {
                        return Err(ReplicaError::Conflict {
                            key: key.to_string(),
                        });
                    }
                    let ts = policy.stamp(&r.hlc, &o, item.client_ts);
                    let now = r.env.now_ms();
                    // A re-introduced bug (simulation only): the lead ignores the context.
                    let blind = VersionVector::new();
                    let context = if r.bugs.ignore_context {
                        &blind
                    } else {
                        &item.context
                    };
                    // This key may have had earlier lives, reaped or dropped here: its dots
                    // start above every counter those held (see the module comment). A copy
                    // already above the floor keeps its counters; one at or below it may be a
                    // partial copy that came back (a merge after a drop), whose next counter
                    // could have been issued in the forgotten life.
                    let floor = r.reap_floor.load(std::sync::atomic::Ordering::Acquire);
                    if floor > 0 && o.vv.get(&actor) <= floor && !r.bugs.no_reap_floor {
                        o.vv.witness(&actor, floor);
                    }
                    let write = LeadWrite {
                        lead: &actor,
                        context,
                        value: item.value,
                        now_ms: now,
                        ts,
                        actor: item.actor,
                    };
                    let refused = |source| ReplicaError::Causality {
                        key: key.to_string(),
                        source,
                    };
                    let dot = policy.write(&ks, &mut o, write).map_err(refused)?;
                    if o.siblings.len() > ks.max_siblings as usize {
                        return Err(ReplicaError::SiblingLimit {
                            key: key.to_string(),
                            keyspace: ks.name.clone(),
                            count: o.siblings.len(),
                            max: ks.max_siblings,
                        });
                    }
                    let bytes = r.capped(key, encode_object(&o), size_before)?;
                    total = total.saturating_add(bytes.len());
                    if keys.len() > 1 && total > r.max_object_bytes {
                        return Err(ReplicaError::BatchTooLarge {
                            size: total,
                            max: r.max_object_bytes,
                        });
                    }
                    let size = bytes.len();
                    if let Some(old) = &old {
                        changes.extend(r.tree_change(&ks, key, &skey, old, &o));
                    }
                    batch.extend(tombstone_index_op(&skey, was_tombstoned, &o, now));
                    batch.push(BatchOp::Put(skey.clone(), bytes));
                    staged.push((skey, o.clone(), size));
                    out.push((o, dot));
                }
                let durable = if deferred {
                    let keys = staged.iter().map(|(k, _, _)| k.clone()).collect();
                    r.store_deferred(batch, changes, keys)?
                } else {
                    r.store(batch, changes)?;
                    Durable::now()
                };
                Ok((out, durable))
            })
            .await;
        if matches!(&done, Ok((_, d)) if d.is_pending()) {
            self.kick_sync();
        }
        done
    }

    /// Apply a CRDT operation as the key's lead replica (the actor is this node's
    /// incarnation; the per-key lock serialises operations, so its dots are unique); returns the
    /// stored object for the coordinator to replicate.
    pub async fn update(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        key: &Key,
        op: crate::crdt::CrdtOp,
        context: VersionVector,
    ) -> Result<Object, ReplicaError> {
        let (o, _synced) = self.lead_update(ks, key, op, context, false).await?;
        Ok(o)
    }

    /// As [`Replica::update`], with `deferred` (and overlap on) stored deferred (see
    /// [`Replica::lead_write_batch`]).
    pub async fn lead_update(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        key: &Key,
        op: crate::crdt::CrdtOp,
        context: VersionVector,
        deferred: bool,
    ) -> Result<(Object, Durable), ReplicaError> {
        let ks = ks.clone();
        let key = key.clone();
        let done = self
            .run(move |r| {
                let skey = key.encode(&ks.name);
                let _guards = r.lock_all(std::slice::from_ref(&skey));
                let (mut o, size_before) = r.load_sized(&key, &skey)?;
                let old = r.aae.is_some().then(|| o.clone());
                ks.policy
                    .resolver()
                    .update(&ks, &mut o, &r.actor(), &op, &context)?;
                let bytes = r.capped(&key, encode_object(&o), size_before)?;
                let changes = old
                    .and_then(|old| r.tree_change(&ks, &key, &skey, &old, &o))
                    .into_iter()
                    .collect();
                let batch = vec![BatchOp::Put(skey.clone(), bytes)];
                let durable = if deferred {
                    r.store_deferred(batch, changes, vec![skey])?
                } else {
                    r.store(batch, changes)?;
                    Durable::now()
                };
                Ok((o, durable))
            })
            .await;
        if matches!(&done, Ok((_, d)) if d.is_pending()) {
            self.kick_sync();
        }
        done
    }

    /// Merge `incoming` into this replica's copy. Never refuses on the sibling cap: the
    /// versions already exist elsewhere and dropping them here would lose acknowledged
    /// writes; the cap is enforced where new versions are created.
    pub async fn merge(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        key: &Key,
        incoming: Object,
    ) -> Result<(), ReplicaError> {
        self.merge_batch(ks, &key.partition, vec![(key.sort.clone(), incoming)])
            .await
    }

    /// Merge objects of one partition, stored in one storage batch (so a batch written
    /// atomically on the lead also lands atomically here).
    pub async fn merge_batch(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        partition: &[u8],
        items: Vec<(Vec<u8>, Object)>,
    ) -> Result<(), ReplicaError> {
        let items = items
            .into_iter()
            .map(|(sort, o)| {
                (
                    Key {
                        partition: partition.to_vec(),
                        sort,
                    },
                    o,
                )
            })
            .collect();
        self.merge_keys(ks, items).await
    }

    /// Merge objects of any keys of one keyspace, stored in one storage batch (one fsync
    /// for a whole transfer page, where a batch per partition would cost one each).
    pub async fn merge_keys(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        items: Vec<(Key, Object)>,
    ) -> Result<(), ReplicaError> {
        let ks = ks.clone();
        let policy = ks.policy.resolver();
        for (key, o) in &items {
            crate::crdt::check_well_formed(&o.crdt).map_err(|e| ReplicaError::Corrupt {
                key: key.to_string(),
                message: format!("incoming object refused: {e}"),
            })?;
        }
        self.run(move |r| {
            let (keys, objects): (Vec<Key>, Vec<Object>) = items.into_iter().unzip();
            let skeys: Vec<Vec<u8>> = keys.iter().map(|k| k.encode(&ks.name)).collect();
            let _guards = r.lock_all(&skeys);
            let mut batch = Vec::new();
            let mut changes = Vec::new();
            let mut staged: Vec<(Vec<u8>, Object)> = Vec::new();
            for ((incoming, key), skey) in objects.into_iter().zip(&keys).zip(skeys) {
                let current = match staged.iter().rev().find(|(k, _)| *k == skey) {
                    Some((_, o)) => o.clone(),
                    None => r.load(key, &skey)?,
                };
                policy.observe(&r.hlc, &incoming);
                r.issuing_actor(&current.vv, &incoming.vv)?;
                let mut merged = current.clone();
                if r.bugs.overwrite_on_merge {
                    merged = incoming;
                } else {
                    policy.merge(&ks, &mut merged, &incoming);
                }
                if merged != current {
                    if merged.siblings.len() > ks.max_siblings as usize {
                        tracing::warn!(%key, siblings = merged.siblings.len(), max = ks.max_siblings, "key is over its sibling cap after a merge");
                    }
                    let bytes = encode_object(&merged);
                    if bytes.len() > r.max_object_bytes {
                        tracing::warn!(%key, size = bytes.len(), max = r.max_object_bytes, "a merge produced an object over limits.max_object_bytes; stored anyway (its versions exist elsewhere)");
                        r.metrics
                            .objects_over_cap
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    changes.extend(r.tree_change(&ks, key, &skey, &current, &merged));
                    batch.extend(tombstone_index_op(
                        &skey,
                        only_tombstones(&current),
                        &merged,
                        r.env.now_ms(),
                    ));
                    batch.push(BatchOp::Put(skey.clone(), bytes));
                    staged.push((skey, merged));
                }
            }
            if !batch.is_empty() {
                r.store(batch, changes)?;
            }
            Ok(())
        })
        .await
    }

    /// This replica's tombstone of each key, if its copy holds only tombstones (with how
    /// long it has held that exact copy); `None` otherwise.
    pub async fn held_tombstones(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        keys: Vec<Key>,
    ) -> Result<Vec<Option<HeldTombstone>>, ReplicaError> {
        let name = ks.name.clone();
        self.run(move |r| {
            let skeys: Vec<Vec<u8>> = keys.iter().map(|k| k.encode(&name)).collect();
            let _guards = r.lock_all(&skeys);
            let now = r.env.now_ms();
            let mut fixes = Vec::new();
            let mut out = Vec::with_capacity(keys.len());
            for (key, skey) in keys.iter().zip(&skeys) {
                let o = r.load(key, skey)?;
                let ikey = crate::tombstones::index_key(skey);
                let listed = r.storage.get(&ikey)?;
                if !only_tombstones(&o) {
                    // A stale listing (the index is repaired, never trusted).
                    if listed.is_some() {
                        fixes.push(BatchOp::Delete(ikey));
                    }
                    out.push(None);
                    continue;
                }
                let since = match listed.as_deref().and_then(crate::tombstones::decode_since) {
                    Some(since) => since,
                    // Not listed (stored by a build without the index) or damaged: list
                    // it from now, the safe side.
                    None => {
                        fixes.push(BatchOp::Put(ikey, now.to_be_bytes().to_vec()));
                        now
                    }
                };
                out.push(Some(HeldTombstone {
                    hash: crate::aae::tree::key_hash(skey, &o),
                    held_ms: now.saturating_sub(since),
                }));
            }
            if !fixes.is_empty() {
                r.storage.write(fixes)?;
            }
            Ok(out)
        })
        .await
    }

    /// Remove each key whose copy is still exactly the tombstone with hash `expected`
    /// (anything else — a write since the reaper's check, another merge — keeps it), in
    /// one storage batch with its tree change, its index record and the raised reap
    /// floor. Returns how many keys were removed.
    pub async fn reap(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        items: Vec<(Key, u64)>,
    ) -> Result<usize, ReplicaError> {
        let removed = self
            .remove_keys(ks, items, |skey, o, expected| {
                only_tombstones(o) && crate::aae::tree::key_hash(skey, o) == *expected
            })
            .await?;
        self.metrics
            .tombstones_reaped
            .fetch_add(removed as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(removed)
    }

    /// Remove `keys` of `ks` outright, whatever their copy holds: this node stopped owning
    /// them when a layout change completed (`crate::transfer` cleans up). Like reaping it
    /// forgets their version vectors, so it raises the reap floor the same way: if this
    /// node owns them again later, the dots it issues stay above the forgotten ones (kv679).
    /// Returns how many keys were removed.
    pub async fn forget(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        keys: Vec<Key>,
    ) -> Result<usize, ReplicaError> {
        let items = keys.into_iter().map(|k| (k, ())).collect();
        self.remove_keys(ks, items, |_, o, _| *o != Object::default())
            .await
    }

    /// Remove each key whose copy `pick` accepts (given its storage key, the copy and the
    /// key's item), in one storage batch with the tree changes, the tombstone index records
    /// and the reap floor raised above every counter of this actor the copies held.
    async fn remove_keys<T: Send + 'static>(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        items: Vec<(Key, T)>,
        pick: impl Fn(&[u8], &Object, &T) -> bool + Send + 'static,
    ) -> Result<usize, ReplicaError> {
        let ks = ks.clone();
        self.run(move |r| {
            let skeys: Vec<Vec<u8>> = items.iter().map(|(k, _)| k.encode(&ks.name)).collect();
            let _guards = r.lock_all(&skeys);
            let actor = r.actor();
            let inc = incarnation_of(&actor).unwrap_or(0);
            let before = r.reap_floor.load(std::sync::atomic::Ordering::Acquire);
            let mut floor = before;
            let (mut batch, mut changes, mut removed) = (Vec::new(), Vec::new(), 0);
            for ((key, item), skey) in items.iter().zip(skeys) {
                let o = r.load(key, &skey)?;
                if !pick(&skey, &o, item) {
                    continue;
                }
                floor = floor.max(o.vv.get(&actor));
                changes.extend(r.tree_change(&ks, key, &skey, &o, &Object::default()));
                batch.push(BatchOp::Delete(crate::tombstones::index_key(&skey)));
                batch.push(BatchOp::Delete(skey));
                removed += 1;
            }
            if batch.is_empty() {
                return Ok(0);
            }
            if floor > before && !r.bugs.no_reap_floor {
                let mut rec = inc.to_be_bytes().to_vec();
                rec.extend_from_slice(&floor.to_be_bytes());
                batch.push(BatchOp::Put(REAP_FLOOR_KEY.to_vec(), rec));
            }
            r.store(batch, changes)?;
            if !r.bugs.no_reap_floor {
                r.reap_floor
                    .fetch_max(floor, std::sync::atomic::Ordering::AcqRel);
            }
            Ok(removed)
        })
        .await
    }

    /// The reap floor of the current actor (tests, status).
    pub fn reap_floor(&self) -> u64 {
        self.reap_floor.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Up to `limit` entries of the tombstone index after `after` (exclusive; empty:
    /// from the start): (index key, keyspace, key, held since ms).
    pub async fn tombstone_index(
        self: &Arc<Self>,
        after: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<crate::tombstones::IndexEntry>, ReplicaError> {
        self.run(move |r| crate::tombstones::read_index(&*r.storage, &after, limit))
            .await
    }

    /// Stored items of one partition with `from <= sort < to`, in sort order, at most
    /// `limit`; the flag is true when the limit cut the range short. Reads one consistent
    /// view of the engine, so an atomic batch is seen whole or not at all.
    pub async fn scan(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        partition: &[u8],
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<(Vec<u8>, Object)>, bool), ReplicaError> {
        let prefix = partition_prefix(&ks.name, partition);
        let mut start = prefix.clone();
        start.extend_from_slice(from);
        let end = match to {
            Some(t) => {
                let mut e = prefix.clone();
                e.extend_from_slice(t);
                e
            }
            None => prefix_end(&prefix).unwrap_or_else(|| vec![0xFF; prefix.len() + 1]),
        };
        if end < start {
            return Ok((Vec::new(), false));
        }
        let partition = partition.to_vec();
        let (s, e) = (start.clone(), end.clone());
        let page = self
            .run(move |r| {
                // One extra item tells whether the range continues past the limit.
                let rows = r.storage.scan(&start, &end, limit.saturating_add(1))?;
                let mut more = rows.len() > limit;
                let mut out = Vec::with_capacity(rows.len().min(limit));
                // The page also stops once its stored bytes reach `max_bytes` (always after at
                // least one item, so a page makes progress).
                let mut bytes = 0usize;
                for (k, v) in rows.into_iter().take(limit) {
                    if !out.is_empty() && bytes + k.len() + v.len() > max_bytes {
                        more = true;
                        break;
                    }
                    bytes += k.len() + v.len();
                    let sort = k[prefix.len()..].to_vec();
                    let key = Key {
                        partition: partition.clone(),
                        sort: sort.clone(),
                    };
                    out.push((sort, decode_object(&key, &v)?));
                }
                Ok((out, more))
            })
            .await?;
        // A page that may hold a deferred write not yet durable is answered once it is.
        if self.dirty_in(&s, &e) {
            self.sync_barrier().await?;
        }
        Ok(page)
    }
}

/// The tombstone index change of storing `new` at `skey` over a copy that did
/// (`was`) or did not hold only tombstones: listed from now when `new` holds only
/// tombstones (a changed tombstone starts its age again), unlisted when it no longer
/// does.
fn tombstone_index_op(skey: &[u8], was: bool, new: &Object, now_ms: u64) -> Option<BatchOp> {
    if only_tombstones(new) {
        Some(BatchOp::Put(
            crate::tombstones::index_key(skey),
            now_ms.to_be_bytes().to_vec(),
        ))
    } else if was {
        Some(BatchOp::Delete(crate::tombstones::index_key(skey)))
    } else {
        None
    }
}

/// One client write of a batch.
#[derive(Debug, Clone)]
pub struct WriteItem {
    /// Sort key within the batch's partition.
    pub sort: Vec<u8>,
    /// What the client had read of this item.
    pub context: VersionVector,
    /// New value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Client timestamp (`lww-client` keyspaces).
    pub client_ts: Option<u64>,
    /// Client actor (`lww-actor` keyspaces).
    pub actor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::keyspace::ConflictPolicy;
    use crate::storage::MemoryStorage;

    fn replica(name: &str) -> Arc<Replica> {
        Replica::new(
            name,
            Arc::new(MemoryStorage::new()),
            crate::env::TokioEnv::new(Arc::new(ManualClock::new(1000))),
            ReplicaOptions::default(),
        )
        .unwrap()
    }

    /// Goal: the incarnation is created once and kept across restarts on the same
    /// storage; `new_incarnation` (sync = false, restored backups) and a fresh database
    /// give a new actor; a damaged record is an error, not a silent new identity.
    #[test]
    fn incarnation_is_stored_and_renewed_on_demand() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let clock: Arc<dyn Env> = crate::env::TokioEnv::new(Arc::new(ManualClock::new(0)));
        let open = |new_incarnation| {
            Replica::new(
                "n1",
                storage.clone(),
                clock.clone(),
                ReplicaOptions {
                    new_incarnation,
                    ..ReplicaOptions::default()
                },
            )
            .unwrap()
            .actor()
        };
        let a = open(false);
        assert!(a.starts_with("n1@") && a.len() == "n1@".len() + 8, "{a}");
        assert_eq!(open(false), a);
        let b = open(true);
        assert_ne!(b, a);
        assert_eq!(open(false), b);
        assert_ne!(
            replica("n1").actor(),
            b,
            "a fresh database is a new incarnation"
        );
        storage
            .write(vec![BatchOp::Put(INCARNATION_KEY.to_vec(), vec![1, 2])])
            .unwrap();
        let e = Replica::new(
            "n1",
            storage.clone(),
            clock.clone(),
            ReplicaOptions::default(),
        )
        .err()
        .expect("a damaged incarnation record must be refused");
        assert!(e.to_string().contains("node incarnation"), "{e}");
    }

    /// Goal: client timestamps stored in an lww-client key never reach the node's HLC: a
    /// stored stamp of u64::MAX (from before the coordinator checked them, or a peer) does
    /// not make the next HLC-stamped write on this node overflow (a panic in debug builds)
    /// or stamp later writes at the end of time.
    #[tokio::test]
    async fn client_timestamps_stay_out_of_the_hlc() {
        let r = replica("n1");
        let mut lwwc = KeyspaceDef::new("c", 3, 2, 2);
        lwwc.policy = ConflictPolicy::LwwClient;
        let mut lwwt = KeyspaceDef::new("t", 3, 2, 2);
        lwwt.policy = ConflictPolicy::LwwTimestamp;
        let key = Key::simple("x");
        let item = |ts| WriteItem {
            sort: Vec::new(),
            context: VersionVector::new(),
            value: Some(b"v".to_vec()),
            client_ts: Some(ts),
            actor: None,
        };
        r.write_batch(&lwwc, &key.partition, vec![item(u64::MAX)], false)
            .await
            .unwrap();
        // Another write to the poisoned key, and one in an HLC keyspace.
        r.write_batch(&lwwc, &key.partition, vec![item(5)], false)
            .await
            .unwrap();
        // An HLC-stamped write on this node is stamped near now, not at the end of time.
        let hlc_write_is_sane = |value: &'static [u8]| {
            let (r, lwwt, key) = (Arc::clone(&r), lwwt.clone(), key.clone());
            async move {
                let (o, _) = r
                    .write(
                        &lwwt,
                        &key,
                        VersionVector::new(),
                        Some(value.to_vec()),
                        false,
                    )
                    .await
                    .unwrap();
                assert!(o.max_ts() < u64::MAX / 2, "HLC poisoned: {}", o.max_ts());
            }
        };
        hlc_write_is_sane(b"t").await;
        // Merging a peer's copy of the poisoned key does not poison it either.
        let stored = r.read(&lwwc, &key).await.unwrap().unwrap();
        r.merge(&lwwc, &key, stored).await.unwrap();
        hlc_write_is_sane(b"t2").await;
    }

    /// Goal: the sibling cap refuses the write that would exceed it and stores nothing.
    #[tokio::test]
    async fn sibling_cap_refuses_extra_blind_write() {
        let r = replica("n1");
        let mut ks = KeyspaceDef::new("k", 3, 2, 2);
        ks.max_siblings = 2;
        let key = Key::simple("x");
        r.write(&ks, &key, VersionVector::new(), Some(b"a".to_vec()), false)
            .await
            .unwrap();
        r.write(&ks, &key, VersionVector::new(), Some(b"b".to_vec()), false)
            .await
            .unwrap();
        let e = r
            .write(&ks, &key, VersionVector::new(), Some(b"c".to_vec()), false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("would have 3 siblings"), "{e}");
        assert_eq!(r.read(&ks, &key).await.unwrap().unwrap().siblings.len(), 2);
        // Resolving with the context is always allowed.
        let ctx = r.read(&ks, &key).await.unwrap().unwrap().vv;
        r.write(&ks, &key, ctx, Some(b"merged".to_vec()), false)
            .await
            .unwrap();
        assert_eq!(r.read(&ks, &key).await.unwrap().unwrap().siblings.len(), 1);
    }

    /// Goal: the tombstone index lists exactly the keys whose copy holds only tombstones
    /// — after a delete and after merging a peer's tombstone — and forgets a key that a
    /// write makes live again.
    #[tokio::test]
    async fn the_tombstone_index_follows_the_object() {
        let r = replica("n1");
        let ks = KeyspaceDef::new("k", 3, 2, 2);
        let key = Key::simple("x");
        let listed = |r: &Arc<Replica>| {
            let r = Arc::clone(r);
            async move { r.tombstone_index(Vec::new(), 10).await.unwrap().len() }
        };
        let (o, _) = r
            .write(&ks, &key, VersionVector::new(), Some(b"a".to_vec()), false)
            .await
            .unwrap();
        assert_eq!(listed(&r).await, 0);
        let (t, _) = r.write(&ks, &key, o.vv, None, false).await.unwrap();
        assert_eq!(listed(&r).await, 1);
        let held = r.held_tombstones(&ks, vec![key.clone()]).await.unwrap();
        assert_eq!(
            held[0].map(|h| h.hash),
            Some(crate::aae::tree::key_hash(&key.encode("k"), &t))
        );
        r.write(&ks, &key, t.vv.clone(), Some(b"b".to_vec()), false)
            .await
            .unwrap();
        assert_eq!(listed(&r).await, 0);
        assert_eq!(
            r.held_tombstones(&ks, vec![key.clone()]).await.unwrap(),
            vec![None]
        );
        let other = replica("n2");
        other.merge(&ks, &key, t).await.unwrap();
        assert_eq!(listed(&other).await, 1, "a merged tombstone is listed too");
    }

    /// Goal: a reap removes a key only while its copy is exactly the agreed tombstone,
    /// and raises the reap floor durably; a write to the re-created key then issues a dot
    /// above the reaped tombstone's, and a late copy of that tombstone neither erases the
    /// new value nor makes the node take a new incarnation (it is a reaped life, not
    /// lost data).
    #[tokio::test]
    async fn reaping_raises_the_floor_that_keeps_a_re_created_key_safe() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let env: Arc<dyn Env> = crate::env::TokioEnv::new(Arc::new(ManualClock::new(1000)));
        let open = || {
            Replica::new(
                "n1",
                storage.clone(),
                env.clone(),
                ReplicaOptions::default(),
            )
            .unwrap()
        };
        let r = open();
        let ks = KeyspaceDef::new("k", 3, 2, 2);
        let key = Key::simple("x");
        let (o, _) = r
            .write(
                &ks,
                &key,
                VersionVector::new(),
                Some(b"old".to_vec()),
                false,
            )
            .await
            .unwrap();
        let (t, dot) = r.write(&ks, &key, o.vv, None, false).await.unwrap();
        let hash = crate::aae::tree::key_hash(&key.encode("k"), &t);
        assert_eq!(r.reap(&ks, vec![(key.clone(), hash ^ 1)]).await.unwrap(), 0);
        assert_eq!(r.reap(&ks, vec![(key.clone(), hash)]).await.unwrap(), 1);
        assert!(r.read(&ks, &key).await.unwrap().is_none());
        assert_eq!(r.reap_floor(), dot.counter);
        let actor = r.actor();
        // A restart keeps the floor.
        let r = open();
        assert_eq!((r.reap_floor(), r.actor()), (dot.counter, actor.clone()));
        // A late copy of the reaped tombstone claims counters this replica no longer
        // holds: a reaped life (at or below the floor), not lost data.
        r.merge(&ks, &key, t.clone()).await.unwrap();
        assert_eq!(r.actor(), actor, "a reaped life is not lost data");
        assert_eq!(r.reap(&ks, vec![(key.clone(), hash)]).await.unwrap(), 1);
        let (_, reborn) = r
            .write(
                &ks,
                &key,
                VersionVector::new(),
                Some(b"new".to_vec()),
                false,
            )
            .await
            .unwrap();
        assert!(reborn.counter > dot.counter, "{reborn:?} after {dot:?}");
        r.merge(&ks, &key, t).await.unwrap();
        let now = r.read(&ks, &key).await.unwrap().unwrap();
        assert_eq!(
            now.live_values()
                .map(|s| s.value.clone())
                .collect::<Vec<_>>(),
            vec![Some(b"new".to_vec())]
        );
    }

    /// A replica named `name` over the simulated disk `disk`, overlapping its lead
    /// writes when `overlap`.
    /// A blind overlapped lead write of `value` to key `k` (its `Durable` handle).
    async fn put_overlapped(r: &Arc<Replica>, ks: &KeyspaceDef, k: &str, value: &[u8]) -> Durable {
        let key = Key::simple(k);
        let item = WriteItem {
            sort: key.sort.clone(),
            context: VersionVector::new(),
            value: Some(value.to_vec()),
            client_ts: None,
            actor: None,
        };
        let (_, durable) = r
            .lead_write_batch(ks, &key.partition, vec![item], false, true)
            .await
            .unwrap();
        durable
    }

    fn on_disk(disk: &Arc<crate::sim::storage::SimDisk>, overlap: bool) -> Arc<Replica> {
        Replica::new(
            "n1",
            Arc::new(disk.open()),
            crate::env::TokioEnv::new(Arc::new(ManualClock::new(1000))),
            ReplicaOptions {
                overlap_lead_sync: overlap,
                ..ReplicaOptions::default()
            },
        )
        .unwrap()
    }

    /// Goal: the running marker makes an unclean stop of an overlapping node a new
    /// incarnation, and only that: a clean stop keeps it; a start with overlap off after
    /// an unclean overlapped run still renews (the previous run overlapped) and clears the
    /// marker; the re-introduced bug keeps the old incarnation.
    #[test]
    fn an_unclean_overlapped_stop_is_a_new_incarnation() {
        let disk = crate::sim::storage::SimDisk::new(false, 3);
        let a = on_disk(&disk, true).actor();
        disk.crash();
        let b = on_disk(&disk, true).actor();
        assert_ne!(a, b, "power lost while overlapping: a new incarnation");
        let r = on_disk(&disk, true);
        assert_ne!(r.actor(), b, "the previous run did not stop cleanly either");
        let c = r.actor();
        r.stop_cleanly().unwrap();
        assert_eq!(on_disk(&disk, false).actor(), c, "a clean stop keeps it");
        // An unclean overlapped run, then a start without overlap: renewed, marker gone.
        let d = on_disk(&disk, true).actor();
        disk.crash();
        let e = on_disk(&disk, false).actor();
        assert_ne!(e, d);
        assert_eq!(
            on_disk(&disk, false).actor(),
            e,
            "no overlap, no marker: kept"
        );
        // The re-introduced bug ignores the marker.
        let f = on_disk(&disk, true).actor();
        disk.crash();
        let kept = Replica::new(
            "n1",
            Arc::new(disk.open()),
            crate::env::TokioEnv::new(Arc::new(ManualClock::new(1000))),
            ReplicaOptions {
                overlap_lead_sync: true,
                bugs: InjectedBugs {
                    overlap_keeps_incarnation: true,
                    ..InjectedBugs::default()
                },
                ..ReplicaOptions::default()
            },
        )
        .unwrap();
        assert_eq!(kept.actor(), f);
    }

    /// Goal: an overlapped lead write is visible at once and durable only once its
    /// `Durable` completed: a power-off before loses it (and the handle reports the
    /// failed sync); after, it survives. Without overlap the same call stores synced.
    #[tokio::test]
    async fn overlapped_writes_are_durable_once_their_sync_completes() {
        let ks = KeyspaceDef::new("k", 3, 2, 2);
        let key = Key::simple("x");
        let item = |v: &[u8]| WriteItem {
            sort: key.sort.clone(),
            context: VersionVector::new(),
            value: Some(v.to_vec()),
            client_ts: None,
            actor: None,
        };
        let disk = crate::sim::storage::SimDisk::new(false, 5);
        let r = on_disk(&disk, true);
        let (_, durable) = r
            .lead_write_batch(&ks, &key.partition, vec![item(b"lost")], false, true)
            .await
            .unwrap();
        assert!(durable.is_pending());
        assert_eq!(disk.crash(), 1, "the deferred write was not yet durable");
        assert!(durable.wait().await.is_err(), "its sync cannot succeed now");
        let r = on_disk(&disk, true);
        assert!(r.read(&ks, &key).await.unwrap().is_none());

        let (_, durable) = r
            .lead_write_batch(&ks, &key.partition, vec![item(b"kept")], false, true)
            .await
            .unwrap();
        durable.wait().await.unwrap();
        disk.crash();
        let r = on_disk(&disk, false);
        let o = r
            .read(&ks, &key)
            .await
            .unwrap()
            .expect("durable after its sync");
        assert_eq!(o.siblings[0].value.as_deref(), Some(&b"kept"[..]));
        let (_, durable) = r
            .lead_write_batch(&ks, &key.partition, vec![item(b"synced")], false, true)
            .await
            .unwrap();
        assert!(!durable.is_pending(), "overlap off: stored synced");
    }

    /// Goal: no dirty read — a read or scan that sees an overlapped write answers only
    /// once the write is durable (a power-off right after the answer keeps it); a CRDT
    /// update overlaps the same way; concurrent leads share the sync task's fsyncs.
    #[tokio::test]
    async fn reads_of_a_deferred_write_wait_until_it_is_durable() {
        let ks = KeyspaceDef::new("k", 3, 2, 2);
        let disk = crate::sim::storage::SimDisk::new(false, 9);
        let r = on_disk(&disk, true);
        let mut pending = Vec::new();
        for k in ["a", "b", "c"] {
            pending.push(put_overlapped(&r, &ks, k, k.as_bytes()).await);
        }
        assert!(r.is_dirty(&Key::simple("a").encode("k")));
        let seen = r.read(&ks, &Key::simple("a")).await.unwrap();
        assert!(seen.is_some());
        assert!(!r.is_dirty(&Key::simple("a").encode("k")), "synced by then");
        for d in pending {
            d.wait().await.unwrap();
        }
        assert_eq!(
            disk.crash(),
            0,
            "the read answered only once all was durable"
        );

        let r = on_disk(&disk, true);
        let key = Key::simple("d");
        drop(put_overlapped(&r, &ks, "d", b"d").await); // nobody waits: the sync task runs anyway
        let (page, _) = r
            .scan(&ks, &key.partition, b"", None, 10, usize::MAX)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(
            disk.crash(),
            0,
            "the scan answered only once it was durable"
        );

        let mut ctr = KeyspaceDef::new("c", 3, 2, 2);
        ctr.policy = ConflictPolicy::Counter;
        let r = on_disk(&disk, true);
        let (_, d) = r
            .lead_update(
                &ctr,
                &Key::simple("n"),
                crate::crdt::CrdtOp::CounterAdd(2),
                VersionVector::new(),
                true,
            )
            .await
            .unwrap();
        assert!(d.is_pending());
        d.wait().await.unwrap();
        assert_eq!(disk.crash(), 0);
    }

    /// Goal: concurrent overlapped leads share fsyncs (group commit without a timer):
    /// twenty writes arriving together are made durable by at most two fsyncs.
    #[tokio::test]
    async fn concurrent_overlapped_writes_share_an_fsync() {
        let ks = KeyspaceDef::new("k", 3, 2, 2);
        let disk = crate::sim::storage::SimDisk::new(false, 11);
        let r = on_disk(&disk, true);
        let mut writes: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = (0..20)
            .map(|i| {
                let (r, ks) = (Arc::clone(&r), ks.clone());
                async move {
                    let d = put_overlapped(&r, &ks, &format!("k{i}"), b"v").await;
                    d.wait().await.unwrap();
                }
            })
            .map(|f| Box::pin(f) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>)
            .collect();
        // All polled together, as concurrent requests are.
        std::future::poll_fn(|cx| {
            writes.retain_mut(|f| f.as_mut().poll(cx).is_pending());
            if writes.is_empty() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        let fsyncs = r
            .metrics
            .deferred_fsyncs
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!((1..=2).contains(&fsyncs), "{fsyncs} fsyncs for 20 writes");
        assert_eq!(disk.crash(), 0, "all durable");
    }

    /// Goal: a corrupt stored record is reported as corrupt, not as a panic or a miss.
    #[tokio::test]
    async fn corrupt_record_is_an_error() {
        let storage = Arc::new(MemoryStorage::new());
        let r = Replica::new(
            "n1",
            storage.clone(),
            crate::env::TokioEnv::new(Arc::new(ManualClock::new(0))),
            ReplicaOptions::default(),
        )
        .unwrap();
        let ks = KeyspaceDef::new("k", 3, 2, 2);
        let key = Key::simple("x");
        storage
            .write(vec![BatchOp::Put(
                key.encode("k"),
                vec![OBJECT_FORMAT, 0xC1],
            )])
            .unwrap();
        let e = r.read(&ks, &key).await.unwrap_err();
        assert!(matches!(e, ReplicaError::Corrupt { .. }), "{e}");
    }
}
