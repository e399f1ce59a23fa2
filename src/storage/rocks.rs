//! The RocksDB engine.
//!
//! Every `write` is one `WriteBatch`, so a replica's object update (and, later, its Merkle
//! leaf and a partition's batch of items) lands atomically. With `sync = true` (the
//! default) the WAL is fsync'd before `write` returns, so an acknowledged write survives
//! `kill -9` and power loss; with `sync = false` it survives a process crash (the WAL is
//! in the OS page cache) but not a power loss.

use std::path::Path;

use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::{BatchOp, Entries, Storage, StorageError};

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
        // Fail loudly on a second process opening the same directory (RocksDB's LOCK file).
        let db = DB::open(&opts, path).map_err(rocks_err)?;
        Ok(RocksStorage { db, sync })
    }
}

impl Storage for RocksStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get(key).map_err(rocks_err)
    }

    fn get_cached(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>, StorageError>> {
        // Memtable and block cache only: RocksDB answers `Incomplete` instead of reading
        // a file, and the caller falls back to a blocking read.
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_read_tier(rocksdb::ReadTier::BlockCache);
        match self.db.get_opt(key, &ro) {
            Ok(v) => Some(Ok(v)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => None,
            Err(e) => Some(Err(rocks_err(e))),
        }
    }

    fn write(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        let mut wb = WriteBatch::default();
        for op in batch {
            match op {
                BatchOp::Put(k, v) => wb.put(k, v),
                BatchOp::Delete(k) => wb.delete(k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(wb, &wo).map_err(rocks_err)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StorageError> {
        if start > end {
            return Err(StorageError::BadRange("start is after end"));
        }
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(start, Direction::Forward))
        {
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

    fn blocking(&self) -> bool {
        true
    }
}
