//! The RocksDB engine.
//!
//! Every `write` is one `WriteBatch`, so a replica's object update (and, later, its Merkle
//! leaf and a partition's batch of items) lands atomically. With `sync = true` (the
//! default) the WAL is fsync'd before `write` returns, so an acknowledged write survives
//! `kill -9` and power loss; with `sync = false` it survives a process crash (the WAL is
//! in the OS page cache) but not a power loss. `write_deferred` writes without the fsync
//! whatever `sync` says, and `sync` is RocksDB's SyncWAL (`flush_wal(true)`): how an
//! overlapped lead (`storage.overlap_lead_sync`) stores first and fsyncs alongside
//! replication, several leads' writes sharing one fsync.
//!
//! **Column families.** Hinted-handoff records (`crate::hints`, keys under
//! `0xFE "hint"`) live in their own column family, `hints`: they are written once and
//! deleted soon after, so their tombstones and compactions stay out of the data's LSM
//! tree (whose reads they would otherwise slow), and an operator can see their size apart
//! (`rocksdb.total-sst-files-size` per family). The routing is by key prefix inside this
//! engine, so the rest of quorumkv sees one ordered key space: a batch touching both
//! families is still one atomic `WriteBatch` (one WAL), and a scan across the prefix
//! merges both families in key order. A database written before the family existed has
//! its hint records moved into it when it is opened.

use std::path::Path;

use rocksdb::{ColumnFamily, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::{prefix_end, BatchOp, Entries, Storage, StorageError};

/// The column family of hint records.
const HINTS_CF: &str = "hints";

/// Whether `key` belongs in the hints family.
fn is_hint(key: &[u8]) -> bool {
    key.starts_with(crate::hints::HINT_PREFIX)
}

/// A RocksDB database opened by this node.
pub struct RocksStorage {
    db: DB,
    sync: bool,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.db.path())
            .field("sync", &self.sync)
            .finish()
    }
}

fn rocks_err(e: rocksdb::Error) -> StorageError {
    let message = e.into_string();
    // RocksDB reports ENOSPC as `IO error: No space left on device` (from the OS) or with
    // its `NoSpace` subcode; both get their own error so operators see the real cause.
    if message.contains("No space left on device") || message.contains("NoSpace") {
        StorageError::DiskFull(message)
    } else {
        StorageError::Rocks(message)
    }
}

impl RocksStorage {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path, sync: bool) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Point reads dominate; a bloom filter per SST avoids disk reads for missing keys.
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&block);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Writers waiting for the group-commit leader (many, with fsync'd writes) spin
        // before sleeping by default; on a node sharing two cores with its peers that
        // spinning showed as ~4% of CPU (rocksdb::WriteThread::AwaitState) doing nothing.
        opts.set_enable_write_thread_adaptive_yield(false);
        opts.create_missing_column_families(true);
        // Fail loudly on a second process opening the same directory (RocksDB's LOCK file).
        let db = DB::open_cf(&opts, path, ["default", HINTS_CF]).map_err(rocks_err)?;
        let me = RocksStorage { db, sync };
        me.move_hints_out_of_default()?;
        Ok(me)
    }

    fn hints_cf(&self) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(HINTS_CF)
            .ok_or_else(|| StorageError::Rocks(format!("column family {HINTS_CF} is missing")))
    }

    /// Hint records a build before the `hints` family stored in the default one move into
    /// it, a page per atomic batch.
    fn move_hints_out_of_default(&self) -> Result<(), StorageError> {
        let prefix = crate::hints::HINT_PREFIX;
        let end = prefix_end(prefix).unwrap_or_default();
        loop {
            let page = self.scan_family(None, prefix, &end, 256)?;
            if page.is_empty() {
                return Ok(());
            }
            let cf = self.hints_cf()?;
            let mut wb = WriteBatch::default();
            for (k, v) in page {
                wb.put_cf(cf, &k, v);
                wb.delete(k);
            }
            let mut wo = WriteOptions::default();
            wo.set_sync(self.sync);
            self.db.write_opt(wb, &wo).map_err(rocks_err)?;
        }
    }

    /// Up to `limit` entries of one family (`None`: the default) in `[start, end)`.
    fn scan_family(
        &self,
        cf: Option<&ColumnFamily>,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let mode = IteratorMode::From(start, Direction::Forward);
        let iter = match cf {
            Some(cf) => self.db.iterator_cf(cf, mode),
            None => self.db.iterator(mode),
        };
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(rocks_err)?;
            if &*k >= end {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

impl Storage for RocksStorage {
    fn approximate_bytes(&self) -> Option<u64> {
        let live = self
            .db
            .property_int_value("rocksdb.estimate-live-data-size")
            .ok()
            .flatten()?;
        let mem = self
            .db
            .property_int_value("rocksdb.cur-size-all-mem-tables")
            .ok()
            .flatten()
            .unwrap_or(0);
        Some(live + mem)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if is_hint(key) {
            return self.db.get_cf(self.hints_cf()?, key).map_err(rocks_err);
        }
        self.db.get(key).map_err(rocks_err)
    }

    fn get_cached(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>, StorageError>> {
        // Memtable and block cache only: RocksDB answers `Incomplete` instead of reading
        // a file, and the caller falls back to a blocking read.
        if is_hint(key) {
            return None; // hints are read on the blocking path only
        }
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_read_tier(rocksdb::ReadTier::BlockCache);
        match self.db.get_opt(key, &ro) {
            Ok(v) => Some(Ok(v)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => None,
            Err(e) => Some(Err(rocks_err(e))),
        }
    }

    fn write(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        self.write_batch(batch, self.sync)
    }

    fn write_deferred(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        self.write_batch(batch, false)
    }

    fn sync(&self) -> Result<(), StorageError> {
        // SyncWAL: fsyncs every WAL file written so far, so every write before this call
        // (deferred or not) survives a power loss once it returns.
        self.db.flush_wal(true).map_err(rocks_err)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StorageError> {
        self.scan_merged(start, end, limit)
    }

    fn blocking(&self) -> bool {
        true
    }
}

impl RocksStorage {
    /// One atomic `WriteBatch`, its WAL fsync'd before return when `sync`.
    fn write_batch(&self, batch: Vec<BatchOp>, sync: bool) -> Result<(), StorageError> {
        let hints = self.hints_cf()?;
        let mut wb = WriteBatch::default();
        for op in batch {
            match op {
                BatchOp::Put(k, v) if is_hint(&k) => wb.put_cf(hints, k, v),
                BatchOp::Delete(k) if is_hint(&k) => wb.delete_cf(hints, k),
                BatchOp::Put(k, v) => wb.put(k, v),
                BatchOp::Delete(k) => wb.delete(k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(rocks_err)
    }

    /// A scan across both families, in key order.
    fn scan_merged(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StorageError> {
        if start > end {
            return Err(StorageError::BadRange("start is after end"));
        }
        let hp = crate::hints::HINT_PREFIX;
        let hp_end = prefix_end(hp).unwrap_or_default();
        // The part of [start, end) inside the hint prefix, if any.
        let h_start = start.max(hp);
        let h_end = end.min(&hp_end[..]);
        if h_start >= h_end {
            return self.scan_family(None, start, end, limit);
        }
        let hints = self.scan_family(Some(self.hints_cf()?), h_start, h_end, limit)?;
        if start >= hp && end <= &hp_end[..] {
            return Ok(hints);
        }
        // A range across the prefix: the smallest `limit` of both families, in order
        // (each list holds its family's smallest `limit`, so the merge is exact).
        let data = self.scan_family(None, start, end, limit)?;
        let mut out: Entries = Vec::with_capacity(limit.min(data.len() + hints.len()));
        let (mut a, mut b) = (data.into_iter().peekable(), hints.into_iter().peekable());
        while out.len() < limit {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.0 <= y.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            out.extend(if take_a { a.next() } else { b.next() });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a database written before the `hints` family existed (hint records in the
    /// default family) keeps its hints: opening it moves them into the family, where
    /// reads and scans find them, and the default family no longer holds them.
    #[test]
    fn hints_in_the_default_family_move_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = [crate::hints::HINT_PREFIX, b"n2\0ks\0k"].concat();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, dir.path()).unwrap();
            db.put(&key, b"held").unwrap();
            db.put(b"data", b"v").unwrap();
        }
        let s = RocksStorage::open(dir.path(), true).unwrap();
        assert_eq!(s.get(&key).unwrap(), Some(b"held".to_vec()));
        assert_eq!(s.db.get(&key).unwrap(), None, "left in the default family");
        assert_eq!(s.get(b"data").unwrap(), Some(b"v".to_vec()));
        let all = s.scan(b"", &[0xFF; 8], 10).unwrap();
        assert_eq!(
            all,
            vec![
                (b"data".to_vec(), b"v".to_vec()),
                (key.clone(), b"held".to_vec())
            ]
        );
    }
}
