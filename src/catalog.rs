//! The keyspace catalog: which keyspaces this node knows, which it must refuse for good,
//! and their durable records.
//!
//! Both sides of a node need it: the coordinator looks keyspaces up (and asks peers for
//! ones it missed) and creates and drops them; the replica side learns the definition every
//! peer request carries and applies drops. So it is one piece of its own, below both,
//! instead of logic in the node that each side calls back into.
//!
//! Every keyspace definition entering the node passes [`Catalog::learn`]: it must be valid
//! for this cluster's size (no `r > n`, no `n` beyond the cluster) and not a dropped
//! generation. Definitions are stored under a reserved `0xFF` prefix and reloaded at start;
//! dropped generations leave markers there so they stay refused across restarts.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use crate::env::{self, Env};
use crate::keyspace::{KeyspaceDef, KeyspaceError, Registry};
use crate::storage::{prefix_end, BatchOp, Storage, StorageError};

/// Errors reading, storing or accepting keyspace definitions.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Stored metadata could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A definition is invalid, conflicts with a known one, or was dropped.
    #[error(transparent)]
    Keyspace(#[from] KeyspaceError),
    /// Stored keyspace metadata is corrupt (or a drop could not run).
    #[error("stored keyspace metadata is corrupt: {0}")]
    Metadata(String),
}

/// Storage prefix for node metadata; 0xFF sorts after every keyspace name.
pub(crate) const META_KEYSPACE_PREFIX: &[u8] = b"\xFFmeta\x00keyspace\x00";
/// Storage prefix of dropped-keyspace markers: `<prefix><name>\0<generation, 8 bytes BE>`.
const META_DROPPED_PREFIX: &[u8] = b"\xFFmeta\x00dropped\x00";
/// Keys deleted per storage batch when a dropped keyspace's data is purged.
const PURGE_BATCH: usize = 1000;

/// The keyspaces one node knows, and the ones it refuses for good.
pub struct Catalog {
    /// The definitions in use, by name.
    registry: Registry,
    /// Where definitions and drop markers are stored (the replica's storage).
    storage: Arc<dyn Storage>,
    /// Runs drops on the blocking pool.
    env: Arc<dyn Env>,
    /// Members in the cluster: a definition's `n` may not exceed it. Follows the current
    /// layout version ([`Catalog::set_cluster_size`]).
    cluster_size: std::sync::atomic::AtomicUsize,
    /// Names of the keyspaces this node's config defines (these cannot be dropped).
    configured: HashSet<String>,
    /// Dropped keyspace generations, by name: their definitions are refused for good.
    dropped: RwLock<HashMap<String, BTreeSet<u64>>>,
    /// Serialises learning a *new* definition, so purging a dropped name's leftover data
    /// cannot race with writes under the definition that replaces it.
    learning: Mutex<()>,
}

impl Catalog {
    /// Load the catalog from `storage` (dropped markers, then the keyspaces stored at
    /// runtime), then learn the keyspaces of the node's config. Returns it with the
    /// problems found that did not stop loading, for the node to report.
    pub fn open(
        storage: Arc<dyn Storage>,
        env: Arc<dyn Env>,
        cluster_size: usize,
        configured: Vec<KeyspaceDef>,
    ) -> Result<(Self, Vec<String>), CatalogError> {
        let mut catalog = Catalog {
            registry: Registry::default(),
            storage,
            env,
            cluster_size: std::sync::atomic::AtomicUsize::new(cluster_size),
            configured: configured.iter().map(|k| k.name.clone()).collect(),
            dropped: RwLock::default(),
            learning: Mutex::new(()),
        };
        let mut warnings = Vec::new();
        catalog.load_dropped(&mut warnings)?;
        catalog.load_stored_keyspaces(&mut warnings)?;
        for def in configured {
            def.validate(cluster_size)?;
            let name = def.name.clone();
            match catalog.learn(def.clone()) {
                Ok(_) => {}
                // The stored definition is what the cluster agreed on at runtime and what
                // every peer's requests carry: preferring node.toml's would make this node
                // refuse all of them. So the stored one wins, loudly.
                Err(CatalogError::Keyspace(KeyspaceError::Conflict { existing, .. })) => {
                    warnings.push(format!(
                        "keyspace {name:?}: node.toml says {}, but this node stored {existing} at runtime; keeping the stored definition (edit node.toml to match, or drop and re-create the keyspace)",
                        def.summary()
                    ));
                }
                Err(CatalogError::Keyspace(e @ KeyspaceError::Dropped { .. })) => {
                    warnings.push(format!("{e}; ignoring it in node.toml (remove it there)"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((catalog, warnings))
    }

    /// Load the dropped-keyspace markers.
    fn load_dropped(&mut self, warnings: &mut Vec<String>) -> Result<(), CatalogError> {
        let end = prefix_end(META_DROPPED_PREFIX).unwrap_or_default();
        let mut dropped: HashMap<String, BTreeSet<u64>> = HashMap::new();
        for (k, _) in self.storage.scan(META_DROPPED_PREFIX, &end, usize::MAX)? {
            let rest = &k[META_DROPPED_PREFIX.len()..];
            let parsed = rest
                .len()
                .checked_sub(9)
                .filter(|&cut| rest[cut] == 0)
                .and_then(|cut| {
                    let name = std::str::from_utf8(&rest[..cut]).ok()?;
                    let generation = u64::from_be_bytes(rest[cut + 1..].try_into().ok()?);
                    Some((name.to_string(), generation))
                });
            match parsed {
                Some((name, generation)) => {
                    dropped.entry(name).or_default().insert(generation);
                }
                None => warnings.push(format!(
                    "ignoring a corrupt dropped-keyspace marker in storage ({} bytes)",
                    k.len()
                )),
            }
        }
        *self.dropped.get_mut().unwrap_or_else(|e| e.into_inner()) = dropped;
        Ok(())
    }

    /// Load the keyspaces stored at runtime. A record that does not decode, or whose
    /// definition is invalid for this cluster (e.g. r > n, or n larger than the cluster
    /// now is), is skipped with a warning rather than stopping the node: the node still
    /// serves every other keyspace, and learns a valid definition of the skipped one from
    /// the first peer request or look-up that carries it (which also replaces the record).
    fn load_stored_keyspaces(&mut self, warnings: &mut Vec<String>) -> Result<(), CatalogError> {
        let end = prefix_end(META_KEYSPACE_PREFIX).unwrap_or_default();
        for (k, v) in self.storage.scan(META_KEYSPACE_PREFIX, &end, usize::MAX)? {
            let key_name = String::from_utf8_lossy(&k[META_KEYSPACE_PREFIX.len()..]).to_string();
            let def: KeyspaceDef = match rmp_serde::from_slice(&v) {
                Ok(def) => def,
                Err(e) => {
                    warnings.push(format!(
                        "stored definition of keyspace {key_name:?} is corrupt ({e}); skipping it until a peer supplies a valid one"
                    ));
                    continue;
                }
            };
            if let Err(e) = self.check_definition(&def) {
                warnings.push(format!(
                    "stored definition of keyspace {key_name:?} is refused ({e}); skipping it until a peer supplies a valid one"
                ));
                continue;
            }
            self.registry.insert(def)?;
        }
        Ok(())
    }

    /// Every keyspace definition entering this node passes here: valid for this cluster's
    /// size (so no `r > n` or `n` beyond the cluster reaches a coordinator) and not a
    /// dropped generation.
    fn check_definition(&self, def: &KeyspaceDef) -> Result<(), KeyspaceError> {
        def.validate(self.cluster_size())?;
        let dropped = self.dropped.read().unwrap_or_else(|e| e.into_inner());
        if dropped
            .get(&def.name)
            .is_some_and(|gens| gens.contains(&def.generation))
        {
            return Err(KeyspaceError::Dropped {
                name: def.name.clone(),
                generation: def.generation,
            });
        }
        Ok(())
    }

    /// Members in the cluster, which bounds every definition's `n`.
    pub fn cluster_size(&self) -> usize {
        self.cluster_size.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A layout version with `n` members is current now.
    pub fn set_cluster_size(&self, n: usize) {
        self.cluster_size
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The definition of keyspace `name`, if this node knows it.
    pub fn get(&self, name: &str) -> Option<KeyspaceDef> {
        self.registry.get(name)
    }

    /// Every keyspace this node knows, by name.
    pub fn list(&self) -> Vec<KeyspaceDef> {
        self.registry.list()
    }

    /// Whether this node's config defines keyspace `name` (it cannot be dropped).
    pub fn is_configured(&self, name: &str) -> bool {
        self.configured.contains(name)
    }

    /// Store a keyspace definition (registry and disk) after checking it. Returns whether
    /// it was new.
    pub fn learn(&self, def: KeyspaceDef) -> Result<bool, CatalogError> {
        // Fast path for every replica request: a registered definition was checked when
        // it was registered, and dropping one unregisters it.
        if self.registry.get(&def.name).as_ref() == Some(&def) {
            return Ok(false);
        }
        self.check_definition(&def)?;
        let _learning = self.learning.lock().unwrap_or_else(|e| e.into_inner());
        if self.registry.get(&def.name).is_none() && self.was_dropped(&def.name) {
            // A new generation of a dropped name: remove anything a write in flight
            // during the drop left behind, before any write of the new generation lands.
            self.purge_data(&def.name)?;
        }
        let new = self.registry.insert(def.clone())?;
        if new {
            let bytes =
                rmp_serde::to_vec_named(&def).map_err(|e| CatalogError::Metadata(e.to_string()))?;
            let stored = self
                .storage
                .write(vec![BatchOp::Put(meta_key(&def.name), bytes)]);
            if let Err(e) = stored {
                self.registry.remove(&def.name);
                return Err(e.into());
            }
            tracing::info!(keyspace = %def.name, settings = %def.summary(), "keyspace stored");
        }
        Ok(new)
    }

    fn was_dropped(&self, name: &str) -> bool {
        self.dropped
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Delete every stored item of keyspace `name`, in bounded batches.
    fn purge_data(&self, name: &str) -> Result<usize, CatalogError> {
        let (start, end) = crate::key::keyspace_range(name);
        let mut deleted = 0;
        crate::aae::tree::purge_keyspace(&*self.storage, name)?;
        crate::tombstones::purge_keyspace(&*self.storage, name)?;
        loop {
            let keys = self.storage.scan(&start, &end, PURGE_BATCH)?;
            if keys.is_empty() {
                return Ok(deleted);
            }
            deleted += keys.len();
            self.storage
                .write(keys.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect())?;
        }
    }

    /// Drop keyspace `name` on this node: mark `generation` (and the generation this
    /// node holds, if another) dropped, forget the definition, then delete its data.
    /// Idempotent. Blocking (storage); callers on the runtime use [`Catalog::drop_keyspace`].
    pub(crate) fn drop_local(&self, name: &str, generation: u64) -> Result<usize, CatalogError> {
        let _learning = self.learning.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.registry.get(name).map(|d| d.generation);
        let gens: BTreeSet<u64> = held.into_iter().chain([generation]).collect();
        let mut batch = vec![BatchOp::Delete(meta_key(name))];
        for g in &gens {
            let mut k = META_DROPPED_PREFIX.to_vec();
            k.extend_from_slice(name.as_bytes());
            k.push(0);
            k.extend_from_slice(&g.to_be_bytes());
            batch.push(BatchOp::Put(k, Vec::new()));
        }
        // Marker first and in one batch with the definition's removal: after a crash the
        // node either still has the keyspace or refuses it for good, never half of each.
        self.storage.write(batch)?;
        self.dropped
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .extend(gens);
        self.registry.remove(name);
        let deleted = self.purge_data(name)?;
        tracing::info!(keyspace = name, generation, deleted, "keyspace dropped");
        Ok(deleted)
    }

    /// Drop keyspace `name` as `drop_local` does, on the blocking pool.
    pub async fn drop_keyspace(
        self: &Arc<Self>,
        name: &str,
        generation: u64,
    ) -> Result<usize, CatalogError> {
        let me = Arc::clone(self);
        let name = name.to_string();
        env::blocking(&*self.env, move || me.drop_local(&name, generation))
            .await
            .ok_or_else(|| CatalogError::Metadata("drop task failed".into()))?
    }
}

/// Where the definition of keyspace `name` is stored.
pub(crate) fn meta_key(name: &str) -> Vec<u8> {
    let mut key = META_KEYSPACE_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}
