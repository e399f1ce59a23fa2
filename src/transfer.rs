//! Data transfer when ownership moves: a node pulls the ranges it gains in a new layout
//! version, then drops what it no longer owns.
//!
//! While several layout versions are live ([`crate::membership::layout::History`]),
//! every write reaches a quorum of the owners in each of them, and reads go to the oldest
//! version's owners. A node that gains ranges in the newest version therefore needs only
//! what was written *before* the version went live, and it takes that from the older
//! versions' owners:
//!
//! 1. It waits until every node acknowledged the newest version (no write under an older
//!    one is in flight anywhere), so every later write reaches it directly.
//! 2. From every owner of the older versions (but nodes `remove`d as dead) it pulls, per
//!    keyspace, the keys it gains — in its newest preference list and not in the oldest —
//!    in pages: bounded (`membership.transfer_page_bytes`, and a bound on keys scanned per
//!    page), throttled (`membership.transfer_bytes_per_sec`), checksummed (xxh3 over the
//!    page, checked before anything is merged), and resumable (after each merged page the
//!    cursor is stored, so a crash resumes from the last page). Pulling from *every* old
//!    owner matters: a write acknowledged by W of N may be on any W of them.
//! 3. Pages are merged like any replication, so copies from several senders, repeated
//!    pages and concurrent writes all converge.
//! 4. It then says it is synced on the version; once every member of the version is,
//!    the older versions are dropped everywhere, reads move to the new owners, and each
//!    node removes the keys it no longer owns (raising its reap floor, see
//!    [`crate::replica::Replica::forget`]) and rebuilds its anti-entropy trees on the new
//!    ring.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::catalog::Catalog;
use crate::config::MembershipConfig;
use crate::env::Env;
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::membership::{Membership, MembershipError, View};
use crate::peers::{self, Peers, StreamPage};
use crate::replica::Replica;
use crate::storage::{prefix_end, BatchOp, Storage, StorageError};

/// Largest page a sender builds, whatever the receiver asks (4 MiB).
pub const MAX_PAGE_BYTES: u32 = 4 << 20;
/// Most keys a sender looks at for one page, matching or not: bounds the work of one
/// request when the receiver gains few keys.
const MAX_SCANNED_PER_PAGE: usize = 4096;
/// Keys read from storage at a time while building a page.
const SCAN_CHUNK: usize = 256;

const CHECKPOINT_PREFIX: &[u8] = b"\xFFmeta\x00transfer\x00";
const CLEANED_KEY: &[u8] = b"\xFFmeta\x00layout\x00cleaned";
const TREES_KEY: &[u8] = b"\xFFmeta\x00layout\x00trees";

/// Why a transfer step failed (it is retried on the next step).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The sender holds another layout version than the one asked for.
    #[error("layout v{asked} asked, but this node holds v{held} (it will catch up by gossip)")]
    Version {
        /// The version the receiver transfers.
        asked: u64,
        /// The version the sender holds.
        held: u64,
    },
    /// A page's checksum does not match its items.
    #[error("page from {source_node} failed its checksum (sent {sent:#x}, computed {computed:#x}); it is fetched again")]
    Checksum {
        /// The sender.
        source_node: String,
        /// What the sender computed.
        sent: u64,
        /// What the receiver computed.
        computed: u64,
    },
    /// A sender did not answer.
    #[error("pulling {keyspace} from {source_node}: {detail}")]
    Call {
        /// The sender.
        source_node: String,
        /// The keyspace.
        keyspace: String,
        /// What went wrong.
        detail: String,
    },
    /// A record does not decode.
    #[error("corrupt record in a transfer: {0}")]
    Corrupt(String),
    /// Local storage failed.
    #[error("transfer storage: {0}")]
    Storage(#[from] StorageError),
    /// Merging or removing failed on this replica.
    #[error("transfer replica: {0}")]
    Replica(String),
    /// Layout state could not be kept.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// A newer layout version arrived during the clean-up after a change: it stops (what
    /// to drop depends on the new version) and runs again once that change completes.
    #[error("layout v{0} arrived during the clean-up; it runs again after that change")]
    Interrupted(u64),
}

/// The checksum of a page: xxh3 over each item's key and value, length-prefixed.
pub fn checksum(items: &[(Vec<u8>, Vec<u8>)]) -> u64 {
    let mut h = Xxh3::new();
    for (k, v) in items {
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(k);
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.digest()
}

/// Whether `node` gains `partition` of a keyspace with `n` replicas in the view's newest
/// version: a replica there, and not in the oldest live one.
pub fn gains(view: &View, partition: &[u8], n: usize, node: &str) -> bool {
    view.current_ring()
        .preference_list(partition, n)
        .iter()
        .any(|x| x == node)
        && !view
            .read_ring()
            .preference_list(partition, n)
            .iter()
            .any(|x| x == node)
}

/// Sender side: the next page of `ks`'s keys that `for_node` gains in layout `version`,
/// after storage key `after`.
pub fn serve_page(
    storage: &dyn Storage,
    view: &View,
    ks: &KeyspaceDef,
    for_node: &str,
    version: u64,
    after: Option<&[u8]>,
    max_bytes: u32,
) -> Result<StreamPage, TransferError> {
    if view.version() != version {
        return Err(TransferError::Version {
            asked: version,
            held: view.version(),
        });
    }
    let max_bytes = max_bytes.clamp(1024, MAX_PAGE_BYTES) as usize;
    let (prefix, end) = crate::key::keyspace_range(&ks.name);
    let mut start = match after {
        Some(a) => {
            let mut s = a.to_vec();
            s.push(0);
            s.max(prefix.clone())
        }
        None => prefix,
    };
    let (mut items, mut bytes, mut scanned) = (Vec::new(), 0usize, 0usize);
    loop {
        let rows = storage.scan(&start, &end, SCAN_CHUNK)?;
        let at_end = rows.len() < SCAN_CHUNK;
        for (skey, value) in rows {
            scanned += 1;
            let mut next = skey.clone();
            next.push(0);
            start = next;
            let wanted = Key::decode(&skey)
                .map(|(_, key)| gains(view, &key.partition, ks.n as usize, for_node))
                .unwrap_or(false);
            if wanted {
                bytes += skey.len() + value.len();
                items.push((skey.clone(), value));
            }
            if bytes >= max_bytes || scanned >= MAX_SCANNED_PER_PAGE {
                let sum = checksum(&items);
                return Ok(StreamPage {
                    items,
                    next: Some(skey),
                    checksum: sum,
                });
            }
        }
        if at_end {
            let sum = checksum(&items);
            return Ok(StreamPage {
                items,
                next: None,
                checksum: sum,
            });
        }
    }
}

/// Where a transfer stands, for `quorumkv cluster status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    /// The version being received (0: none).
    pub version: u64,
    /// Keys received and merged since this node started.
    pub keys_received: u64,
    /// Bytes received since this node started.
    pub bytes_received: u64,
    /// Pages whose checksum failed (and were fetched again).
    pub checksum_failures: u64,
    /// Keys removed because this node no longer owns them.
    pub keys_dropped: u64,
    /// The last error, if the last step failed.
    pub last_error: Option<String>,
}

/// Everything [`Transfers::new`] needs.
pub struct TransferParams {
    /// This node.
    pub name: String,
    /// The live layouts.
    pub membership: Arc<Membership>,
    /// This node's replica (merges, removals).
    pub replica: Arc<Replica>,
    /// The keyspaces.
    pub catalog: Arc<Catalog>,
    /// Calls to senders.
    pub peers: Arc<Peers>,
    /// The seam.
    pub env: Arc<dyn Env>,
    /// `[membership]`.
    pub cfg: MembershipConfig,
    /// Deadline of each call.
    pub call_timeout: Duration,
    /// Re-introduced bugs (tests only).
    pub bugs: crate::replica::InjectedBugs,
}

/// One node's receiving side of transfers, and its clean-up after them.
pub struct Transfers {
    p: TransferParams,
    status: Mutex<TransferStatus>,
    /// The layout version the last clean-up was for (0: not read from storage yet), so a
    /// step with nothing to do reads nothing.
    cleaned: std::sync::atomic::AtomicU64,
}

/// A resumable cursor: in progress after a key, or done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Cursor {
    After(Option<serde_bytes::ByteBuf>),
    Done,
}

fn checkpoint_key(version: u64, source: &str, keyspace: &str) -> Vec<u8> {
    let mut k = CHECKPOINT_PREFIX.to_vec();
    k.extend_from_slice(&version.to_be_bytes());
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(keyspace.as_bytes());
    k
}

/// Record, at a node's start, that it holds nothing it does not own in layout version `v`
/// unless a later clean-up says otherwise (a node's first start: its data is its own).
pub fn init_cleaned(storage: &dyn Storage, v: u64) -> Result<(), StorageError> {
    if read_u64(storage, CLEANED_KEY)?.is_none() {
        write_u64(storage, CLEANED_KEY, v)?;
    }
    Ok(())
}

/// The layout version the stored anti-entropy trees were built on, if recorded.
pub fn trees_built_on(storage: &dyn Storage) -> Result<Option<u64>, StorageError> {
    read_u64(storage, TREES_KEY)
}

/// Record that the stored trees are built on layout version `v`'s ring.
pub fn mark_trees(storage: &dyn Storage, v: u64) -> Result<(), StorageError> {
    write_u64(storage, TREES_KEY, v)
}

fn write_u64(storage: &dyn Storage, key: &[u8], v: u64) -> Result<(), StorageError> {
    storage.write(vec![BatchOp::Put(key.to_vec(), v.to_be_bytes().to_vec())])
}

fn read_u64(storage: &dyn Storage, key: &[u8]) -> Result<Option<u64>, StorageError> {
    Ok(storage
        .get(key)?
        .and_then(|b| b.try_into().ok().map(u64::from_be_bytes)))
}

impl Transfers {
    /// A node's transfers.
    pub fn new(p: TransferParams) -> Arc<Self> {
        Arc::new(Transfers {
            p,
            status: Mutex::new(TransferStatus::default()),
            cleaned: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Where transfers stand.
    pub fn status(&self) -> TransferStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note(&self, f: impl FnOnce(&mut TransferStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        self.p.replica.storage()
    }

    /// Run forever: a step whenever the layouts change, and every second otherwise (a
    /// failed step — a sender down, a stale version — is retried so).
    pub async fn run(self: Arc<Self>) {
        loop {
            let changed = self.p.membership.changed.notified();
            tokio::pin!(changed);
            let timer = self
                .p
                .env
                .sleep_until(self.p.env.now() + Duration::from_secs(1));
            tokio::select! {
                _ = &mut changed => {}
                _ = timer => {}
            }
            match self.step().await {
                Ok(()) => self.note(|s| s.last_error = None),
                Err(e) => {
                    tracing::info!(node = %self.p.name, error = %e, "transfer step will be retried");
                    self.note(|s| s.last_error = Some(e.to_string()));
                }
            }
        }
    }

    /// One step: follow a completed change (drop what is no longer owned, rebuild the
    /// trees), or receive the ranges gained in the newest version.
    pub async fn step(&self) -> Result<(), TransferError> {
        let view = self.p.membership.view();
        if !view.history.in_transition() {
            return self.settle(&view).await;
        }
        let me = &self.p.name;
        let v = view.version();
        if view.history.synced.get(me).copied().unwrap_or(0) >= v || !view.history.all_acked() {
            return Ok(());
        }
        if view.history.current().has(me) && !self.p.bugs.sync_without_transfer {
            self.receive(&view).await?;
        }
        // Everyone before the update: this sync may complete the change and prune the
        // nodes that left out of the history, and they must hear of it too.
        let mut targets = crate::membership::sync::others(&self.p.membership);
        self.p.membership.update(|h| Ok(h.sync(me, v)))?;
        for t in crate::membership::sync::others(&self.p.membership) {
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        self.clear_checkpoints(v)?;
        tracing::info!(node = %me, version = v, "synced on layout version: every range it gains is here");
        crate::membership::sync::broadcast_to(
            &self.p.membership,
            &self.p.peers,
            &*self.p.env,
            self.p.call_timeout,
            targets,
        )
        .await;
        Ok(())
    }

    /// Pull every gained key of the newest version from every source.
    async fn receive(&self, view: &View) -> Result<(), TransferError> {
        let v = view.version();
        self.note(|s| s.version = v);
        let me = self.p.name.clone();
        let sources: Vec<String> = view
            .history
            .sources()
            .into_iter()
            .filter(|s| *s != me)
            .collect();
        for ks in self.p.catalog.list() {
            let n = ks.n as usize;
            let gains_any = view
                .rings()
                .first()
                .map(|old| crate::membership::layout::gains(old, view.current_ring(), &me, n))
                .unwrap_or(false);
            if !gains_any {
                continue;
            }
            for source in &sources {
                self.pull(v, source, &ks).await?;
            }
        }
        Ok(())
    }

    /// Pull keyspace `ks` from `source` for version `v`, resuming from the stored cursor.
    async fn pull(&self, v: u64, source: &str, ks: &KeyspaceDef) -> Result<(), TransferError> {
        let ck = checkpoint_key(v, source, &ks.name);
        let mut cursor: Cursor = match self.storage().get(&ck)? {
            Some(b) => rmp_serde::from_slice(&b)
                .map_err(|e| TransferError::Corrupt(format!("transfer checkpoint: {e}")))?,
            None => Cursor::After(None),
        };
        loop {
            let after = match &cursor {
                Cursor::Done => return Ok(()),
                Cursor::After(a) => a.clone().map(serde_bytes::ByteBuf::into_vec),
            };
            let call = peers::StreamRange {
                keyspace: ks.clone(),
                for_node: self.p.name.clone(),
                version: v,
                after,
                max_bytes: self.p.cfg.transfer_page_bytes,
            };
            let deadline = self.p.env.now() + self.p.call_timeout;
            let page = self
                .p
                .peers
                .call(source, call, deadline)
                .await
                .map_err(|f| TransferError::Call {
                    source_node: source.to_string(),
                    keyspace: ks.name.clone(),
                    detail: f.to_failure(source).detail,
                })?;
            let computed = checksum(&page.items);
            if computed != page.checksum {
                self.note(|s| s.checksum_failures += 1);
                return Err(TransferError::Checksum {
                    source_node: source.to_string(),
                    sent: page.checksum,
                    computed,
                });
            }
            let bytes: usize = page.items.iter().map(|(k, v)| k.len() + v.len()).sum();
            let keys = self.merge_page(ks, page.items).await?;
            cursor = match page.next {
                Some(k) => Cursor::After(Some(serde_bytes::ByteBuf::from(k))),
                None => Cursor::Done,
            };
            // The cursor moves only after the page is merged (durably, like any write):
            // a crash in between fetches the page again, which merging makes harmless.
            self.storage().write(vec![BatchOp::Put(
                ck.clone(),
                rmp_serde::to_vec(&cursor).expect("cursors encode"),
            )])?;
            self.note(|s| {
                s.keys_received += keys as u64;
                s.bytes_received += bytes as u64;
            });
            // The throttle: each page waits its share of a second.
            let rate = self.p.cfg.transfer_bytes_per_sec.max(1);
            let wait = Duration::from_micros((bytes as u64).saturating_mul(1_000_000) / rate);
            if !wait.is_zero() {
                self.p.env.sleep_until(self.p.env.now() + wait).await;
            }
        }
    }

    /// Merge one page in one storage batch (one fsync per page, not per partition).
    async fn merge_page(
        &self,
        ks: &KeyspaceDef,
        items: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<usize, TransferError> {
        let mut objects = Vec::with_capacity(items.len());
        for (skey, bytes) in items {
            let (name, key) =
                Key::decode(&skey).map_err(|e| TransferError::Corrupt(e.to_string()))?;
            if name != ks.name {
                return Err(TransferError::Corrupt(format!(
                    "a page of keyspace {:?} holds a key of {name:?}",
                    ks.name
                )));
            }
            let object = crate::replica::decode_object(&key, &bytes)
                .map_err(|e| TransferError::Corrupt(e.to_string()))?;
            objects.push((key, object));
        }
        let count = objects.len();
        if count > 0 {
            self.p
                .replica
                .merge_keys(ks, objects)
                .await
                .map_err(|e| TransferError::Replica(e.to_string()))?;
        }
        Ok(count)
    }

    fn clear_checkpoints(&self, v: u64) -> Result<(), StorageError> {
        let mut prefix = CHECKPOINT_PREFIX.to_vec();
        prefix.extend_from_slice(&v.to_be_bytes());
        let end = prefix_end(&prefix).unwrap_or_default();
        let rows = self.storage().scan(&prefix, &end, 10_000)?;
        if !rows.is_empty() {
            self.storage()
                .write(rows.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect())?;
        }
        Ok(())
    }

    /// After a change completed: drop the keys this node no longer owns, then rebuild the
    /// anti-entropy trees on the new ring. Both are recorded by version, so each runs once
    /// per change (again after a crash half-way).
    async fn settle(&self, view: &View) -> Result<(), TransferError> {
        let v = view.read_layout_version();
        let storage = Arc::clone(self.storage());
        use std::sync::atomic::Ordering;
        let mut cleaned = self.cleaned.load(Ordering::Acquire);
        if cleaned == 0 {
            // Recorded at the node's start (`init_cleaned`), so always there.
            cleaned = read_u64(&*storage, CLEANED_KEY)?.unwrap_or(v);
            self.cleaned.store(cleaned, Ordering::Release);
        }
        if cleaned < v {
            let dropped = self.drop_unowned(view).await?;
            write_u64(&*storage, CLEANED_KEY, v)?;
            self.cleaned.store(v, Ordering::Release);
            self.note(|s| s.keys_dropped += dropped as u64);
            tracing::info!(node = %self.p.name, version = v, dropped, "removed the keys this node no longer owns");
        }
        if let Some(trees) = self.p.replica.aae() {
            if trees.ring_version() != v {
                let built = read_u64(&*storage, TREES_KEY)?;
                trees.set_ring(v, view.read_ring().clone());
                // Trees stored on this ring already (a restart) need no rebuild.
                if built != Some(v) {
                    let (trees, keyspaces, st) = (
                        Arc::clone(trees),
                        self.p.catalog.list(),
                        Arc::clone(&storage),
                    );
                    let env = Arc::clone(&self.p.env);
                    crate::env::blocking(&*env, move || trees.rebuild(&*st, &keyspaces))
                        .await
                        .ok_or_else(|| TransferError::Replica("tree rebuild task failed".into()))?
                        .map_err(|e| TransferError::Replica(e.to_string()))?;
                    mark_trees(&*storage, v)?;
                    tracing::info!(node = %self.p.name, version = v, "anti-entropy trees rebuilt on the new layout's ring");
                }
            }
        }
        Ok(())
    }

    /// Remove every key of every keyspace this node is not a replica of in the view.
    async fn drop_unowned(&self, view: &View) -> Result<usize, TransferError> {
        let mut dropped = 0;
        for ks in self.p.catalog.list() {
            let (mut start, end) = crate::key::keyspace_range(&ks.name);
            loop {
                // A new version may make this node an owner again: decide each page on the
                // view it was decided on, and stop if that is no longer current.
                let now = self.p.membership.view();
                if now.version() != view.version() {
                    return Err(TransferError::Interrupted(now.version()));
                }
                let rows = self.storage().scan(&start, &end, SCAN_CHUNK)?;
                let Some((last, _)) = rows.last() else { break };
                let mut next = last.clone();
                next.push(0);
                let mut gone = Vec::new();
                for (skey, _) in &rows {
                    let Ok((_, key)) = Key::decode(skey) else {
                        continue;
                    };
                    let owned = view.rings().iter().any(|r| {
                        r.preference_list(&key.partition, ks.n as usize)
                            .contains(&self.p.name)
                    });
                    if !owned {
                        gone.push(key);
                    }
                }
                if !gone.is_empty() {
                    dropped += self
                        .p
                        .replica
                        .forget(&ks, gone)
                        .await
                        .map_err(|e| TransferError::Replica(e.to_string()))?;
                }
                if rows.len() < SCAN_CHUNK {
                    break;
                }
                start = next;
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::layout::{Change, History, Layout};
    use crate::storage::MemoryStorage;

    use crate::membership::layout::test_member as member;

    /// A view with v1 = n1..n3 and v2 = v1 + n4, and a store holding `keys` keys of `ks`.
    fn setup(keys: usize) -> (View, MemoryStorage, KeyspaceDef, Vec<Vec<u8>>) {
        let mut h = History::new(Layout::initial((1..=3).map(member).collect(), 64).unwrap());
        let m4 = member(4);
        let l2 = h
            .current()
            .apply(&[Change::Join {
                name: m4.name,
                addr: m4.addr,
                zone: None,
            }])
            .unwrap();
        h.add_committed(l2).unwrap();
        let ks = KeyspaceDef::new("ks", 3, 2, 2);
        let storage = MemoryStorage::new();
        let mut all = Vec::new();
        for i in 0..keys {
            let skey = Key::parse(&format!("p{i}/s")).encode("ks");
            storage
                .write(vec![BatchOp::Put(skey.clone(), vec![b'x'; 100])])
                .unwrap();
            all.push(skey);
        }
        // Another keyspace's keys are never sent.
        storage
            .write(vec![BatchOp::Put(
                Key::parse("p1").encode("other"),
                vec![1],
            )])
            .unwrap();
        (View::new(h).unwrap(), storage, ks, all)
    }

    /// Goal: paging through a sender's store gives every key the receiver gains exactly
    /// once and nothing else; pages stay within their byte bound; each page's checksum
    /// matches its items and changes if one byte does; a stale version is refused.
    #[test]
    fn pages_cover_the_gained_keys_once_within_bounds() {
        let (view, storage, ks, all) = setup(2000);
        let gained: std::collections::BTreeSet<Vec<u8>> = all
            .iter()
            .filter(|k| {
                let (_, key) = Key::decode(k).unwrap();
                gains(&view, &key.partition, 3, "n4")
            })
            .cloned()
            .collect();
        // With N=3 of 4 nodes, n4 is a replica of about three quarters of the keys.
        assert!(
            (1300..1700).contains(&gained.len()),
            "n4 gains {} of 2000",
            gained.len()
        );
        let (mut after, mut got, mut pages) = (None, Vec::new(), 0);
        loop {
            let page = serve_page(&storage, &view, &ks, "n4", 2, after.as_deref(), 4096).unwrap();
            pages += 1;
            let bytes: usize = page.items.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(bytes < 4096 + 200, "page of {bytes} bytes");
            assert_eq!(page.checksum, checksum(&page.items));
            if let Some((k, v)) = page.items.first() {
                let mut bent = page.items.clone();
                bent[0] = (k.clone(), [v.as_slice(), b"!"].concat());
                assert_ne!(checksum(&bent), page.checksum);
            }
            got.extend(page.items.into_iter().map(|(k, _)| k));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
            assert!(pages < 1000, "paging does not end");
        }
        let set: std::collections::BTreeSet<Vec<u8>> = got.iter().cloned().collect();
        assert_eq!(set.len(), got.len(), "a key was sent twice");
        assert_eq!(set, gained);
        assert!(pages > 5, "{pages} pages");
        let e = serve_page(&storage, &view, &ks, "n4", 1, None, 4096).unwrap_err();
        assert!(e.to_string().contains("holds v2"), "{e}");
    }

    /// Goal: a node that gains nothing gets empty pages, and the scan per page is bounded
    /// even then (it returns a cursor after at most MAX_SCANNED_PER_PAGE keys).
    #[test]
    fn a_node_that_gains_nothing_gets_bounded_empty_pages() {
        let (view, storage, ks, all) = setup(MAX_SCANNED_PER_PAGE + 100);
        assert!(all.len() > MAX_SCANNED_PER_PAGE);
        let page = serve_page(&storage, &view, &ks, "n1", 2, None, 4096).unwrap();
        assert!(page.items.is_empty());
        let next = page.next.expect("a cursor after the bounded scan");
        let page = serve_page(&storage, &view, &ks, "n1", 2, Some(&next), 4096).unwrap();
        assert!(page.items.is_empty() && page.next.is_none());
    }
}
