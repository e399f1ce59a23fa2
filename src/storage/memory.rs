//! The in-memory engine: a `BTreeMap` behind a mutex. For tests and the simulation; it
//! forgets everything when dropped, which is exactly what a crash of a memory node means.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{BatchOp, Entries, Storage, StorageError};

/// An ordered map in memory.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn approximate_bytes(&self) -> Option<u64> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Some(map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).cloned())
    }

    fn write(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        // One lock for the whole batch: readers see all of it or none of it.
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for op in batch {
            match op {
                BatchOp::Put(k, v) => {
                    map.insert(k, v);
                }
                BatchOp::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn write_deferred(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        // Nothing here is durable anyway: the same as a write.
        self.write(batch)
    }

    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StorageError> {
        if start > end {
            return Err(StorageError::BadRange("start is after end"));
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn blocking(&self) -> bool {
        false
    }
}
