//! Simulated disks: the [`Storage`] trait over memory, with the durability a real disk has.
//!
//! A [`SimDisk`] keeps two states: what reads see (the page cache) and what survives a
//! crash (synced). In the normal mode every write is synced before it returns, as RocksDB
//! with `sync = true` does; in *unsynced* mode (a node with `sync = false`) writes reach
//! the synced state only when the disk is flushed, so a crash loses every write since the
//! last flush. A crash here is a machine crash (power loss): the page cache is gone.
//!
//! Deferred writes (`write_deferred`, an overlapped lead's store) go to the unsynced list
//! even on a synced disk, and reach the synced state at the next successful `sync` or
//! synced write (a write-ahead log is one sequential file: its fsync covers everything
//! before it). A `sync` takes the disk's *fsync latency* of virtual time before it runs
//! (drawn per disk from the seed, [`SYNC_LATENCY_MS`]), so a crash can land between an
//! overlapped lead's replication and its fsync, as it can on a real machine; a failed
//! fsync (the `disk` fault) leaves the deferred writes unsynced.
//!
//! Faults: a failed fsync refuses the write and applies nothing (RocksDB does not insert
//! into the memtable when its WAL write fails), and a full disk refuses every write with
//! [`StorageError::DiskFull`]. Each process gets a [`SimStorage`] handle stamped with the
//! disk's epoch: after a crash, the dead process's handle refuses everything, so a task
//! of a crashed node can never write to its successor's disk.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::env::Rng;
use crate::storage::{BatchOp, Entries, Storage, StorageError};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// The range of a simulated disk's fsync latency, milliseconds (slow disks and busy
/// volumes take tens of milliseconds; wide, so crashes meet overlapped leads' windows).
pub const SYNC_LATENCY_MS: (u64, u64) = (1, 30);

struct DiskState {
    view: Map,
    synced: Map,
    /// Batches written but not yet synced (unsynced mode).
    pending: Vec<Vec<BatchOp>>,
    unsynced: bool,
    epoch: u64,
    fsync_failure: f64,
    full: bool,
    rng: Rng,
    /// How long a `sync` takes (virtual time, slept by the caller).
    sync_latency: std::time::Duration,
}

impl DiskState {
    /// Every pending batch becomes durable, in order.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for batch in &pending {
            apply(&mut self.synced, batch);
        }
    }
}

/// One simulated machine's disk.
pub struct SimDisk {
    state: Mutex<DiskState>,
}

fn apply(map: &mut Map, batch: &[BatchOp]) {
    for op in batch {
        match op {
            BatchOp::Put(k, v) => {
                map.insert(k.clone(), v.clone());
            }
            BatchOp::Delete(k) => {
                map.remove(k);
            }
        }
    }
}

impl SimDisk {
    /// An empty disk; `unsynced` disks sync only on [`SimDisk::flush`]; fault draws come
    /// from `seed`.
    pub fn new(unsynced: bool, seed: u64) -> Arc<Self> {
        // Drawn from a stream of its own, so the fault draws of existing seeds stay as
        // they were.
        let (lo, hi) = SYNC_LATENCY_MS;
        let latency_draw = Rng::new(seed ^ 0x5EED_F5C1).next_u64();
        let sync_latency = std::time::Duration::from_millis(lo + latency_draw % (hi - lo + 1));
        Arc::new(SimDisk {
            state: Mutex::new(DiskState {
                view: Map::new(),
                synced: Map::new(),
                pending: Vec::new(),
                unsynced,
                epoch: 0,
                fsync_failure: 0.0,
                full: false,
                rng: Rng::new(seed),
                sync_latency,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The storage handle of a process started now.
    pub fn open(self: &Arc<Self>) -> SimStorage {
        SimStorage {
            disk: Arc::clone(self),
            epoch: self.lock().epoch,
        }
    }

    /// Sync everything written so far (the OS's periodic writeback, in unsynced mode).
    pub fn flush(&self) {
        self.lock().flush();
    }

    /// The machine crashes: unsynced writes are lost and the running process's handle dies.
    /// Returns how many unsynced batches were lost.
    pub fn crash(&self) -> usize {
        let mut s = self.lock();
        s.epoch += 1;
        let lost = s.pending.len();
        s.pending.clear();
        s.view = s.synced.clone();
        lost
    }

    /// Make each write's fsync fail with probability `p` (0 heals).
    pub fn set_fsync_failure(&self, p: f64) {
        self.lock().fsync_failure = p;
    }

    /// Fill the disk (every write refused) or free it.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }
}

/// One process's handle on a [`SimDisk`].
pub struct SimStorage {
    disk: Arc<SimDisk>,
    epoch: u64,
}

impl SimStorage {
    fn live(&self) -> Result<std::sync::MutexGuard<'_, DiskState>, StorageError> {
        let s = self.disk.lock();
        if s.epoch != self.epoch {
            return Err(StorageError::Rocks(
                "the process that opened this disk crashed".into(),
            ));
        }
        Ok(s)
    }
}

impl Storage for SimStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.live()?.view.get(key).cloned())
    }

    fn write(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        let mut s = self.live()?;
        if s.full {
            return Err(StorageError::DiskFull(
                "no space left on device (simulated)".into(),
            ));
        }
        if s.unsynced {
            apply(&mut s.view, &batch);
            s.pending.push(batch);
            return Ok(());
        }
        let p = s.fsync_failure;
        if s.rng.chance(p) {
            return Err(StorageError::Rocks(
                "IO error: fsync of the write-ahead log failed (simulated); the write was not applied".into(),
            ));
        }
        // The log's fsync covers the deferred writes before this one.
        s.flush();
        apply(&mut s.view, &batch);
        apply(&mut s.synced, &batch);
        Ok(())
    }

    fn write_deferred(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        let mut s = self.live()?;
        if s.full {
            return Err(StorageError::DiskFull(
                "no space left on device (simulated)".into(),
            ));
        }
        apply(&mut s.view, &batch);
        s.pending.push(batch);
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        let mut s = self.live()?;
        let p = s.fsync_failure;
        if s.rng.chance(p) {
            return Err(StorageError::Rocks(
                "IO error: fsync of the write-ahead log failed (simulated)".into(),
            ));
        }
        s.flush();
        Ok(())
    }

    fn sync_latency(&self) -> std::time::Duration {
        self.disk.lock().sync_latency
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StorageError> {
        if start >= end {
            return Err(StorageError::BadRange("start must be below end"));
        }
        Ok(self
            .live()?
            .view
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn blocking(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> Vec<BatchOp> {
        vec![BatchOp::Put(k.as_bytes().to_vec(), b"v".to_vec())]
    }

    /// Goal: a synced disk keeps every acknowledged write across a crash; an unsynced one
    /// keeps only what was flushed; the crashed process's handle is dead; faults refuse
    /// writes without applying them.
    #[test]
    fn durability_and_faults() {
        let disk = SimDisk::new(false, 1);
        let h = disk.open();
        h.write(put("a")).unwrap();
        disk.crash();
        assert!(h.get(b"a").is_err(), "a dead process's handle must refuse");
        let h = disk.open();
        assert_eq!(h.get(b"a").unwrap(), Some(b"v".to_vec()));

        let lazy = SimDisk::new(true, 1);
        let h = lazy.open();
        h.write(put("a")).unwrap();
        lazy.flush();
        h.write(put("b")).unwrap();
        assert_eq!(h.get(b"b").unwrap(), Some(b"v".to_vec()));
        assert_eq!(lazy.crash(), 1);
        let h = lazy.open();
        assert!(h.get(b"a").unwrap().is_some());
        assert!(
            h.get(b"b").unwrap().is_none(),
            "unsynced write survived a crash"
        );

        disk.set_full(true);
        let h = disk.open();
        assert!(matches!(h.write(put("c")), Err(StorageError::DiskFull(_))));
        disk.set_full(false);
        disk.set_fsync_failure(1.0);
        assert!(h.write(put("c")).is_err());
        assert!(
            h.get(b"c").unwrap().is_none(),
            "a failed fsync applied the write"
        );
    }

    /// Goal: on a synced disk a deferred write is seen at once but lost by a power-off
    /// before a sync; a sync (or a later synced write, as a log's fsync) makes it durable;
    /// a failed sync leaves it unsynced; every disk has an fsync latency in range.
    #[test]
    fn deferred_writes_need_a_sync() {
        let disk = SimDisk::new(false, 7);
        let lat = disk.open().sync_latency().as_millis() as u64;
        assert!(
            (SYNC_LATENCY_MS.0..=SYNC_LATENCY_MS.1).contains(&lat),
            "{lat}"
        );
        let h = disk.open();
        h.write_deferred(put("a")).unwrap();
        assert!(
            h.get(b"a").unwrap().is_some(),
            "a deferred write is visible"
        );
        assert_eq!(disk.crash(), 1);
        let h = disk.open();
        assert!(h.get(b"a").unwrap().is_none(), "lost without a sync");

        h.write_deferred(put("b")).unwrap();
        h.sync().unwrap();
        h.write_deferred(put("c")).unwrap();
        h.write(put("d")).unwrap();
        disk.set_fsync_failure(1.0);
        h.write_deferred(put("e")).unwrap();
        assert!(h.sync().is_err());
        disk.set_fsync_failure(0.0);
        assert_eq!(disk.crash(), 1, "only the write whose sync failed is lost");
        let h = disk.open();
        for k in ["b", "c", "d"] {
            assert!(h.get(k.as_bytes()).unwrap().is_some(), "{k} lost");
        }
        assert!(h.get(b"e").unwrap().is_none());
    }
}
