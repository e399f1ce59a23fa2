//! Storage: the `Storage` trait every engine implements, and the engines.
//!
//! The trait is deliberately small — point reads, atomic batches (synced, or deferred until
//! an explicit `sync`), ordered range scans —
//! because everything above it (causality, merges, Merkle trees later) is engine-neutral.
//! RocksDB is the real engine; the in-memory engine exists so protocol tests and the
//! simulation run without a disk. One conformance suite (`conformance.rs`) runs against
//! both, so they cannot drift apart.

mod memory;
// Behind the default `rocksdb` cargo feature: the fuzz targets build without it (fuzz/).
#[cfg(feature = "rocksdb")]
mod rocks;

#[cfg(test)]
mod conformance;

pub use memory::MemoryStorage;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksStorage;

/// Why `storage.engine = "rocksdb"` is refused by a build without the `rocksdb` feature.
pub const NO_ROCKSDB: &str = "storage.engine = \"rocksdb\", but this quorumkv was built without the RocksDB engine (cargo feature `rocksdb`, on by default): rebuild with the default features or use storage.engine = \"memory\"";

/// Errors from a storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB reported an error (I/O, corruption, lock held by another process...).
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// The disk holding the data directory is full: writes fail (nothing is acknowledged)
    /// until space is freed; reads keep working.
    #[error("disk full: {0}; free space in the data directory and writes resume")]
    DiskFull(String),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The scan range is empty or inverted.
    #[error("scan range is invalid: {0}")]
    BadRange(&'static str),
}

/// Key-value pairs in key order, as a scan returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One operation of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
}

/// A key-value engine with atomic batches and ordered scans.
pub trait Storage: Send + Sync + 'static {
    /// The value stored at `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Apply every operation or none; durable on return when the engine is configured to
    /// sync.
    fn write(&self, batch: Vec<BatchOp>) -> Result<(), StorageError>;

    /// Apply every operation or none, visible to reads at once but durable only after a
    /// later [`Storage::sync`] (or a later synced `write`, which makes everything before it
    /// durable, as a write-ahead log does). A power loss before then may lose it. The lead
    /// uses it to overlap its fsync with replication (`storage.overlap_lead_sync`).
    fn write_deferred(&self, batch: Vec<BatchOp>) -> Result<(), StorageError>;

    /// Make every write so far durable (the write-ahead log's fsync); an error leaves the
    /// deferred writes' durability unknown.
    fn sync(&self) -> Result<(), StorageError>;

    /// Time a [`Storage::sync`] takes that the engine does not spend inside the call: zero
    /// for real engines (the call itself blocks for the fsync); the simulator's disks model
    /// fsync latency with it, so an overlapped lead's window exists in virtual time.
    fn sync_latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Up to `limit` entries with `start <= key < end`, in key order.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StorageError>;

    /// Whether calls may block on disk, so async callers should move them off the
    /// runtime's worker threads.
    fn blocking(&self) -> bool;

    /// The value at `key` if the engine can answer from memory without touching disk;
    /// `None` when it cannot (the caller then uses [`Storage::get`] off the async
    /// threads). Lets hot reads skip the hand-off to a blocking thread, which under load
    /// cost more than the read itself. Engines that never block need not override it.
    fn get_cached(&self, _key: &[u8]) -> Option<Result<Option<Vec<u8>>, StorageError>> {
        None
    }

    /// The engine's estimate of the bytes it holds, if it has one (`cluster plan`'s
    /// bytes to transfer).
    fn approximate_bytes(&self) -> Option<u64> {
        None
    }
}

/// The smallest key greater than every key starting with `prefix` (None if there is none,
/// i.e. the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
