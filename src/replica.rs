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

use std::sync::{Arc, Mutex};

use crate::causality::{Object, VersionVector};
use crate::clock::{Clock, Hlc};
use crate::key::{partition_prefix, Key};
use crate::keyspace::ConflictPolicy;
use crate::keyspace::KeyspaceDef;
use crate::resolve::{self, merge_resolved};
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
    /// A plain write reached a CRDT keyspace, whose keys change only by operations.
    #[error("keyspace {keyspace} uses the {policy} policy: update it with CRDT operations, not put or batch")]
    PlainWriteOnCrdt {
        /// Keyspace name.
        keyspace: String,
        /// Its policy.
        policy: ConflictPolicy,
    },
    /// The blocking task running the operation died.
    #[error("storage task failed: {0}")]
    Task(String),
}

/// Format version of stored objects (first byte), so the layout can evolve.
const OBJECT_FORMAT: u8 = 1;
/// Lock stripes; a power of two comfortably above the number of concurrent requests.
const LOCK_STRIPES: usize = 256;

/// A node's replica role.
pub struct Replica {
    name: String,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    /// Timestamps for last-write-wins keyspaces.
    hlc: Hlc,
    locks: Vec<Mutex<()>>,
}

fn encode_object(o: &Object) -> Vec<u8> {
    let mut out = vec![OBJECT_FORMAT];
    if let Err(e) = rmp_serde::encode::write_named(&mut out, o) {
        tracing::error!(error = %e, "object encoding failed");
    }
    out
}

fn decode_object(key: &Key, bytes: &[u8]) -> Result<Object, ReplicaError> {
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
    /// A replica named `name` over `storage`.
    pub fn new(name: &str, storage: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Replica {
            name: name.to_string(),
            storage,
            hlc: Hlc::new(clock.clone()),
            clock,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
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
            tokio::task::spawn_blocking(move || f(&me))
                .await
                .map_err(|e| ReplicaError::Task(e.to_string()))?
        } else {
            f(self)
        }
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
        if let Some(res) = self.storage.get_cached(&skey) {
            return Ok(present(stored_object(key, res?)?));
        }
        let key = key.clone();
        self.run(move |r| Ok(present(r.load(&key, &skey)?))).await
    }

    /// Apply a client write as its lead replica; returns the stored object.
    pub async fn write(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        key: &Key,
        context: VersionVector,
        value: Option<Vec<u8>>,
        if_context: bool,
    ) -> Result<Object, ReplicaError> {
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
    /// of any item refuses the whole batch). Returns the stored objects in order.
    pub async fn write_batch(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        partition: &[u8],
        items: Vec<WriteItem>,
        if_context: bool,
    ) -> Result<Vec<Object>, ReplicaError> {
        if ks.policy.is_crdt() {
            return Err(ReplicaError::PlainWriteOnCrdt {
                keyspace: ks.name.clone(),
                policy: ks.policy,
            });
        }
        let ks = ks.clone();
        let partition = partition.to_vec();
        self.run(move |r| {
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
            // Later items of the batch see earlier ones (a batch may touch a key twice).
            let mut staged: Vec<(Vec<u8>, Object)> = Vec::new();
            for ((item, key), skey) in items.into_iter().zip(&keys).zip(skeys) {
                let mut o = match staged.iter().rev().find(|(k, _)| *k == skey) {
                    Some((_, o)) => o.clone(),
                    None => r.load(key, &skey)?,
                };
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
                // Never stamp a write below what this copy already holds: the HLC rule.
                r.hlc.observe(o.max_ts());
                let ts = match (ks.policy, item.client_ts) {
                    (ConflictPolicy::LwwClient, Some(ts)) => ts,
                    _ => r.hlc.tick(),
                };
                let now = r.clock.now_ms();
                resolve::write(
                    &ks,
                    &mut o,
                    &r.name,
                    &item.context,
                    item.value,
                    now,
                    ts,
                    item.actor,
                );
                if o.siblings.len() > ks.max_siblings as usize {
                    return Err(ReplicaError::SiblingLimit {
                        key: key.to_string(),
                        keyspace: ks.name.clone(),
                        count: o.siblings.len(),
                        max: ks.max_siblings,
                    });
                }
                batch.push(BatchOp::Put(skey.clone(), encode_object(&o)));
                staged.push((skey, o.clone()));
                out.push(o);
            }
            r.storage.write(batch)?;
            Ok(out)
        })
        .await
    }

    /// Apply a CRDT operation as the key's lead replica (the actor is this node's name;
    /// the per-key lock serialises operations, so its dots are unique); returns the
    /// stored object for the coordinator to replicate.
    pub async fn update(
        self: &Arc<Self>,
        ks: &KeyspaceDef,
        key: &Key,
        op: crate::crdt::CrdtOp,
        context: VersionVector,
    ) -> Result<Object, ReplicaError> {
        let ks = ks.clone();
        let key = key.clone();
        self.run(move |r| {
            let skey = key.encode(&ks.name);
            let _guards = r.lock_all(std::slice::from_ref(&skey));
            let mut o = r.load(&key, &skey)?;
            crate::crdt::apply(ks.policy, &mut o.crdt, &r.name, &op, &context)?;
            r.storage
                .write(vec![BatchOp::Put(skey, encode_object(&o))])?;
            Ok(o)
        })
        .await
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
        let ks = ks.clone();
        let partition = partition.to_vec();
        for (sort, o) in &items {
            crate::crdt::check_well_formed(&o.crdt).map_err(|e| ReplicaError::Corrupt {
                key: Key {
                    partition: partition.clone(),
                    sort: sort.clone(),
                }
                .to_string(),
                message: format!("incoming object refused: {e}"),
            })?;
        }
        self.run(move |r| {
            let keys: Vec<Key> = items
                .iter()
                .map(|(sort, _)| Key {
                    partition: partition.clone(),
                    sort: sort.clone(),
                })
                .collect();
            let skeys: Vec<Vec<u8>> = keys.iter().map(|k| k.encode(&ks.name)).collect();
            let _guards = r.lock_all(&skeys);
            let mut batch = Vec::new();
            let mut staged: Vec<(Vec<u8>, Object)> = Vec::new();
            for (((_, incoming), key), skey) in items.into_iter().zip(&keys).zip(skeys) {
                let current = match staged.iter().rev().find(|(k, _)| *k == skey) {
                    Some((_, o)) => o.clone(),
                    None => r.load(key, &skey)?,
                };
                r.hlc.observe(incoming.max_ts());
                let mut merged = current.clone();
                merge_resolved(&ks, &mut merged, &incoming);
                if merged != current {
                    if merged.siblings.len() > ks.max_siblings as usize {
                        tracing::warn!(%key, siblings = merged.siblings.len(), max = ks.max_siblings, "key is over its sibling cap after a merge");
                    }
                    batch.push(BatchOp::Put(skey.clone(), encode_object(&merged)));
                    staged.push((skey, merged));
                }
            }
            if !batch.is_empty() {
                r.storage.write(batch)?;
            }
            Ok(())
        })
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
        self.run(move |r| {
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
        .await
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
    use crate::storage::MemoryStorage;

    fn replica(name: &str) -> Arc<Replica> {
        Replica::new(
            name,
            Arc::new(MemoryStorage::new()),
            Arc::new(ManualClock::new(1000)),
        )
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

    /// Goal: a corrupt stored record is reported as corrupt, not as a panic or a miss.
    #[tokio::test]
    async fn corrupt_record_is_an_error() {
        let storage = Arc::new(MemoryStorage::new());
        let r = Replica::new("n1", storage.clone(), Arc::new(ManualClock::new(0)));
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
