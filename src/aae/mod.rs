//! Merkle anti-entropy: replicas of a range compare their trees and repair what differs,
//! so a replica that missed writes converges without any client reading the keys.
//!
//! The trees themselves ([`tree`]) are updated in every store's batch by the replica. This
//! module is the rest: the replica side of the exchange requests ([`serve`]) and the
//! exchanges a node starts ([`AntiEntropy`]). Every `anti_entropy.interval_ms` (jittered)
//! a node compares each range it replicates with one other replica, the next in turn, one
//! exchange at a time:
//!
//! 1. branch hashes (the root is their hash): equal roots end the exchange;
//! 2. the peer's segment hashes under the differing branches;
//! 3. the keys, hashes and version vectors of at most `max_segments_per_exchange`
//!    differing segments, at most `max_keys_per_exchange` keys, on both sides;
//! 4. for each key whose hashes differ: if ours is not behind theirs, it is sent
//!    (`Replicate`); if theirs is not behind ours, it is read and merged here; concurrent
//!    copies go both ways (fetched and merged first, then the merge is sent).
//!
//! Work per exchange is bounded by those two limits; differences beyond them are found by
//! later exchanges. Repairs are merges, the same as replication and read repair, so they
//! commute with concurrent writes and never create versions.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

pub mod tree;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::AntiEntropyConfig;
use crate::env::{self, Env};
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::metrics::Metrics;
use crate::peers::{self, CallFailure, Peers};
use crate::proto::{AaeKey, AaeRangeStatus, PeerError, PeerRequest, PeerResponse};
use crate::replica::{Replica, ReplicaError};
use crate::storage::Storage;
use tree::{branches_of, root_of, IndexedKey, TreeError, TreeIndex, BRANCHES, SEGMENTS_PER_BRANCH};

/// Most keys one `AaeKeys` reply carries, whatever is asked (and the largest
/// `anti_entropy.max_keys_per_exchange` accepted).
pub const MAX_KEYS_PER_EXCHANGE: usize = 4096;

/// Errors of an exchange.
#[derive(Debug, thiserror::Error)]
pub enum AaeError {
    /// The peer did not answer usefully.
    #[error("{peer}: {message}")]
    Peer {
        /// The peer.
        peer: String,
        /// What went wrong.
        message: String,
    },
    /// The local tree or replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The local tree failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The blocking task reading the tree died.
    #[error("anti-entropy task failed")]
    Task,
}

/// What one exchange did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeOutcome {
    /// The roots differed.
    pub differing: bool,
    /// Differing segments found (before the bound).
    pub segments_differing: usize,
    /// Segments looked into (at most `max_segments_per_exchange`).
    pub segments_compared: usize,
    /// Keys whose copies differed and were repaired (at most `max_keys_per_exchange`).
    pub keys_repaired: usize,
    /// Every difference was within the bounds: the whole tree was compared.
    pub full: bool,
}

/// Serve an anti-entropy request from this node's trees (`req` must be one of the `Aae*`
/// requests). Refused when anti-entropy is off here.
pub async fn serve(
    node: &str,
    replica: &Arc<Replica>,
    env: &Arc<dyn Env>,
    req: PeerRequest,
    max_reply_bytes: usize,
) -> PeerResponse {
    let Some(trees) = replica.aae().cloned() else {
        return PeerResponse::Error(PeerError::Invalid(format!(
            "anti-entropy is off on {node} (anti_entropy.enabled = false)"
        )));
    };
    let storage = Arc::clone(replica.storage());
    let job = move || -> Result<PeerResponse, PeerError> {
        let failed = |e: TreeError| PeerError::Storage(e.to_string());
        match req {
            PeerRequest::AaeBranches { keyspace, range } => Ok(PeerResponse::AaeBranches(
                trees
                    .branches(&*storage, &keyspace.name, range)
                    .map_err(failed)?,
            )),
            PeerRequest::AaeSegments {
                keyspace,
                range,
                branches,
            } => {
                if let Some(b) = branches.iter().find(|b| **b >= BRANCHES) {
                    return Err(PeerError::Invalid(format!(
                        "branch {b} out of range (a tree has {BRANCHES})"
                    )));
                }
                let segs = trees
                    .segment_hashes(&*storage, &keyspace.name, range)
                    .map_err(failed)?;
                Ok(PeerResponse::AaeSegments(
                    segs.into_iter()
                        .filter(|(s, _)| branches.contains(&(s / SEGMENTS_PER_BRANCH)))
                        .collect(),
                ))
            }
            PeerRequest::AaeKeys {
                keyspace,
                range,
                segments,
                limit,
            } => {
                if let Some(s) = segments.iter().find(|s| **s >= tree::SEGMENTS) {
                    return Err(PeerError::Invalid(format!(
                        "segment {s} out of range (a tree has {})",
                        tree::SEGMENTS
                    )));
                }
                let limit = (limit as usize).min(MAX_KEYS_PER_EXCHANGE);
                let (listed, mut more) = trees
                    .keys(&*storage, &keyspace.name, range, &segments, limit)
                    .map_err(failed)?;
                let mut keys = Vec::with_capacity(listed.len());
                let mut bytes = 0usize;
                for IndexedKey {
                    segment,
                    skey,
                    hash,
                } in listed
                {
                    let Ok((_, key)) = Key::decode(&skey) else {
                        continue;
                    };
                    let vv = match storage.get(&skey) {
                        Ok(Some(b)) => crate::replica::decode_object(&key, &b)
                            .map(|o| o.vv)
                            .unwrap_or_default(),
                        Ok(None) => Default::default(),
                        Err(e) => return Err(PeerError::Storage(e.to_string())),
                    };
                    // Keep the reply within the node's reply budget (always one key, so an
                    // exchange makes progress).
                    let size = skey.len() + vv.0.keys().map(|a| a.len() + 12).sum::<usize>() + 32;
                    if !keys.is_empty() && bytes + size > max_reply_bytes / 2 {
                        more = true;
                        break;
                    }
                    bytes += size;
                    keys.push(AaeKey {
                        segment,
                        key,
                        hash,
                        vv,
                    });
                }
                Ok(PeerResponse::AaeKeys { keys, more })
            }
            other => Err(PeerError::Invalid(format!(
                "{} is not an anti-entropy request",
                other.kind()
            ))),
        }
    };
    let result = if replica.storage().blocking() {
        env::blocking(&**env, job)
            .await
            .unwrap_or_else(|| Err(PeerError::Storage("anti-entropy task failed".into())))
    } else {
        job()
    };
    result.unwrap_or_else(PeerResponse::Error)
}

/// Per-range bookkeeping of the exchanges this node starts.
#[derive(Debug, Clone, Default)]
struct RangeState {
    replicas: Vec<String>,
    last_exchange_ms: Option<u64>,
    last_peer: Option<String>,
    last_full_compare_ms: Option<u64>,
    differing: bool,
    keys_repaired: u64,
    exchanges: u64,
    last_error: Option<String>,
    /// Index into the other replicas of the next peer to try.
    next_peer: usize,
}

/// The exchanges one node starts.
pub struct AntiEntropy {
    name: String,
    cfg: AntiEntropyConfig,
    trees: Arc<TreeIndex>,
    replica: Arc<Replica>,
    catalog: Arc<Catalog>,
    peers: Arc<Peers>,
    env: Arc<dyn Env>,
    metrics: Arc<Metrics>,
    /// Deadline of each call of an exchange.
    call_timeout: Duration,
    /// The live layouts: exchanges wait while data moves between versions.
    membership: Arc<crate::membership::Membership>,
    /// Wall-clock ms at start: the "last full compare" of a range never compared yet.
    started_ms: u64,
    ranges: Mutex<BTreeMap<(String, u64), RangeState>>,
    /// One exchange round at a time.
    busy: AtomicBool,
}

/// Releases [`AntiEntropy::busy`].
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Everything [`AntiEntropy::new`] needs.
pub struct AntiEntropyParams {
    /// This node.
    pub name: String,
    /// `[anti_entropy]`.
    pub cfg: AntiEntropyConfig,
    /// The node's trees.
    pub trees: Arc<TreeIndex>,
    /// The node's replica (local reads and merges).
    pub replica: Arc<Replica>,
    /// The keyspaces.
    pub catalog: Arc<Catalog>,
    /// Calls to the other replicas.
    pub peers: Arc<Peers>,
    /// The seam.
    pub env: Arc<dyn Env>,
    /// Where exchanges are counted.
    pub metrics: Arc<Metrics>,
    /// Deadline of each call of an exchange.
    pub call_timeout: Duration,
    /// The live layouts.
    pub membership: Arc<crate::membership::Membership>,
}

impl AntiEntropy {
    /// A node's anti-entropy.
    pub fn new(p: AntiEntropyParams) -> Arc<Self> {
        let started_ms = p.env.now_ms();
        Arc::new(AntiEntropy {
            name: p.name,
            cfg: p.cfg,
            trees: p.trees,
            replica: p.replica,
            catalog: p.catalog,
            peers: p.peers,
            env: p.env,
            metrics: p.metrics,
            call_timeout: p.call_timeout,
            membership: p.membership,
            started_ms,
            ranges: Mutex::new(BTreeMap::new()),
            busy: AtomicBool::new(false),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AntiEntropyConfig {
        &self.cfg
    }

    fn jittered(&self, base: u64) -> Duration {
        env::jittered(&*self.env, base)
    }

    /// Run forever: an exchange round every jittered `interval_ms`, a rebuild of the trees
    /// every jittered `rebuild_ms`. Spawned at node start (through the node's `Env`).
    pub async fn run(self: Arc<Self>) {
        let mut next_rebuild = self.env.now() + self.jittered(self.cfg.rebuild_ms);
        loop {
            let wake = self.env.now() + self.jittered(self.cfg.interval_ms);
            self.env.sleep_until(wake).await;
            if self.env.now() >= next_rebuild {
                if let Err(e) = self.rebuild().await {
                    tracing::warn!(node = %self.name, error = %e, "anti-entropy rebuild failed");
                }
                next_rebuild = self.env.now() + self.jittered(self.cfg.rebuild_ms);
            }
            self.round().await;
        }
    }

    /// Rebuild every tree from the data (writes wait meanwhile).
    pub async fn rebuild(&self) -> Result<tree::RebuildStats, AaeError> {
        let (trees, storage, keyspaces) = (
            Arc::clone(&self.trees),
            Arc::clone(self.replica.storage()),
            self.catalog.list(),
        );
        let job = move || trees.rebuild(&*storage, &keyspaces);
        let stats = if self.replica.storage().blocking() {
            env::blocking(&*self.env, job)
                .await
                .ok_or(AaeError::Task)??
        } else {
            job()?
        };
        tracing::info!(node = %self.name, keys = stats.keys, skipped = stats.skipped, "anti-entropy trees rebuilt");
        Ok(stats)
    }

    /// Every (keyspace, range) this node replicates, with the range's replicas.
    fn my_ranges(&self) -> Vec<(KeyspaceDef, u64, Vec<String>)> {
        let mut out = Vec::new();
        for ks in self.catalog.list() {
            if ks.n < 2 {
                continue;
            }
            for (range, replicas) in self.trees.ranges(ks.n as usize) {
                out.push((ks.clone(), range, replicas));
            }
        }
        out
    }

    /// One round: every range this node replicates is compared with one other replica
    /// (the next one in turn that is not known to be down), one exchange at a time. A
    /// round already running makes this a no-op.
    pub async fn round(&self) {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let _busy = Busy(&self.busy);
        let view = self.membership.view();
        if view.history.in_transition() || self.trees.ring_version() != view.read_layout_version() {
            // Data is moving between layout versions, or the trees are not rebuilt on
            // the new ring yet: ranges would not line up with the peers'. Transfers do
            // the moving; exchanges resume once the trees follow the new layout.
            return;
        }
        let ranges = self.my_ranges();
        for (ks, range, replicas) in ranges {
            let id = (ks.name.clone(), range);
            let others: Vec<String> = replicas
                .iter()
                .filter(|r| **r != self.name)
                .cloned()
                .collect();
            let start = {
                let mut states = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
                let st = states.entry(id.clone()).or_default();
                st.replicas = replicas.clone();
                st.next_peer
            };
            if others.is_empty() {
                continue;
            }
            // The next replica in turn not known to be down; if all are, the next one
            // anyway (the exchange is then also the probe that finds it back).
            let turn = |i: usize| (start + i) % others.len();
            let offset = (0..others.len())
                .map(turn)
                .find(|i| self.peers.peer_up(&others[*i]) != Some(false))
                .unwrap_or_else(|| turn(0));
            let peer = others[offset].clone();
            let now_ms = self.env.now_ms();
            let outcome = self.exchange(&ks, range, &peer).await;
            self.metrics.aae_exchanges.fetch_add(1, Ordering::Relaxed);
            self.with_state(&id, |st| {
                st.next_peer = offset + 1;
                st.exchanges += 1;
                st.last_exchange_ms = Some(now_ms);
                st.last_peer = Some(peer.clone());
                match &outcome {
                    Ok(o) => {
                        st.last_error = None;
                        st.differing = o.differing;
                        st.keys_repaired += o.keys_repaired as u64;
                        if o.full {
                            st.last_full_compare_ms = Some(now_ms);
                        }
                    }
                    Err(e) => st.last_error = Some(e.to_string()),
                }
            });
            match outcome {
                Ok(o) => {
                    self.metrics
                        .aae_keys_repaired
                        .fetch_add(o.keys_repaired as u64, Ordering::Relaxed);
                    if o.differing {
                        tracing::debug!(node = %self.name, keyspace = %ks.name, range = %format!("{range:016x}"), %peer, ?o, "anti-entropy exchange found differences");
                    }
                }
                Err(e) => {
                    self.metrics
                        .aae_exchange_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = %self.name, keyspace = %ks.name, %peer, error = %e, "anti-entropy exchange failed");
                }
            }
        }
        self.update_gauges();
    }

    fn with_state(&self, id: &(String, u64), f: impl FnOnce(&mut RangeState)) {
        let mut states = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        f(states.entry(id.clone()).or_default());
    }

    fn update_gauges(&self) {
        let now = self.env.now_ms();
        let states = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        let differing = states.values().filter(|s| s.differing).count();
        let oldest = states
            .values()
            .map(|s| now.saturating_sub(s.last_full_compare_ms.unwrap_or(self.started_ms)))
            .max()
            .unwrap_or(0);
        self.metrics
            .aae_ranges_differing
            .store(differing as u64, Ordering::Relaxed);
        self.metrics
            .aae_oldest_full_compare_seconds
            .store(oldest / 1000, Ordering::Relaxed);
    }

    /// The status of every range this node replicates (`quorumkv aae status`).
    pub fn status(&self) -> Vec<AaeRangeStatus> {
        let states = self
            .ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.my_ranges()
            .into_iter()
            .map(|(ks, range, replicas)| {
                let st = states
                    .get(&(ks.name.clone(), range))
                    .cloned()
                    .unwrap_or_default();
                AaeRangeStatus {
                    keyspace: ks.name,
                    range: format!("{range:016x}"),
                    replicas,
                    last_exchange_ms: st.last_exchange_ms,
                    last_peer: st.last_peer,
                    last_full_compare_ms: st.last_full_compare_ms,
                    differing: st.differing,
                    keys_repaired: st.keys_repaired,
                    exchanges: st.exchanges,
                    last_error: st.last_error,
                }
            })
            .collect()
    }

    /// Run a tree job on the local storage, off the async threads when it blocks.
    async fn local<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TreeIndex, &dyn Storage) -> Result<T, TreeError> + Send + 'static,
    ) -> Result<T, AaeError> {
        let (trees, storage) = (Arc::clone(&self.trees), Arc::clone(self.replica.storage()));
        if storage.blocking() {
            Ok(env::blocking(&*self.env, move || f(&trees, &*storage))
                .await
                .ok_or(AaeError::Task)??)
        } else {
            Ok(f(&trees, &*storage)?)
        }
    }

    async fn call<C: peers::PeerCall>(&self, peer: &str, call: C) -> Result<C::Reply, AaeError> {
        let deadline = self.env.now() + self.call_timeout;
        self.peers
            .call(peer, call, deadline)
            .await
            .map_err(|e: CallFailure| AaeError::Peer {
                peer: peer.to_string(),
                message: e.to_failure(peer).detail,
            })
    }

    /// Compare this node's tree of `range` in `ks` with `peer`'s and repair, within the
    /// configured bounds, every difference found, in both directions.
    pub async fn exchange(
        &self,
        ks: &KeyspaceDef,
        range: u64,
        peer: &str,
    ) -> Result<ExchangeOutcome, AaeError> {
        let name = ks.name.clone();
        let ours = self
            .local(move |t, s| t.segment_hashes(s, &name, range))
            .await?;
        let our_branches = branches_of(&ours);
        let their_branches = self
            .call(
                peer,
                peers::AaeBranches {
                    keyspace: ks.clone(),
                    range,
                },
            )
            .await?;
        if their_branches.len() != our_branches.len() {
            return Err(AaeError::Peer {
                peer: peer.to_string(),
                message: format!(
                    "sent {} branch hashes, expected {}",
                    their_branches.len(),
                    our_branches.len()
                ),
            });
        }
        let mut outcome = ExchangeOutcome::default();
        if root_of(&our_branches) == root_of(&their_branches) {
            outcome.full = true;
            return Ok(outcome);
        }
        outcome.differing = true;
        let branches: Vec<u32> = (0..BRANCHES)
            .filter(|b| our_branches[*b as usize] != their_branches[*b as usize])
            .collect();
        let theirs: HashMap<u32, u64> = self
            .call(
                peer,
                peers::AaeSegments {
                    keyspace: ks.clone(),
                    range,
                    branches: branches.clone(),
                },
            )
            .await?
            .into_iter()
            .collect();
        let mut differing: Vec<u32> = branches
            .iter()
            .flat_map(|b| b * SEGMENTS_PER_BRANCH..(b + 1) * SEGMENTS_PER_BRANCH)
            .filter(|s| ours.get(s).copied().unwrap_or(0) != theirs.get(s).copied().unwrap_or(0))
            .collect();
        outcome.segments_differing = differing.len();
        let max_segments = self.cfg.max_segments_per_exchange.max(1);
        let mut truncated = false;
        if differing.len() > max_segments {
            // Start at a random place, so segments whose repair keeps failing cannot
            // starve the others.
            let at = (self.env.random_u64() % differing.len() as u64) as usize;
            differing.rotate_left(at);
            differing.truncate(max_segments);
            differing.sort_unstable();
            truncated = true;
        }
        outcome.segments_compared = differing.len();
        let max_keys = self
            .cfg
            .max_keys_per_exchange
            .clamp(1, MAX_KEYS_PER_EXCHANGE);
        let (their_keys, their_more) = self
            .call(
                peer,
                peers::AaeKeys {
                    keyspace: ks.clone(),
                    range,
                    segments: differing.clone(),
                    limit: max_keys as u32,
                },
            )
            .await?;
        let (name, segs) = (ks.name.clone(), differing.clone());
        let (our_keys, our_more) = self
            .local(move |t, s| t.keys(s, &name, range, &segs, max_keys))
            .await?;
        // A side whose list was cut short says nothing about keys past its last one:
        // compare only up to the smaller cut.
        let mut bound: Option<(u32, Vec<u8>)> = None;
        let mut cut = |last: Option<(u32, Vec<u8>)>| {
            if let Some(last) = last {
                bound = Some(match bound.take() {
                    Some(b) if b < last => b,
                    _ => last,
                });
            }
        };
        if their_more {
            cut(their_keys
                .last()
                .map(|k| (k.segment, k.key.encode(&ks.name))));
        }
        if our_more {
            cut(our_keys.last().map(|k| (k.segment, k.skey.clone())));
        }
        let within = |seg: u32, skey: &[u8]| match &bound {
            None => true,
            Some((bs, bk)) => (seg, skey) <= (*bs, bk.as_slice()),
        };
        // skey -> (our hash, their listing)
        let mut keys: BTreeMap<(u32, Vec<u8>), (u64, Option<AaeKey>)> = BTreeMap::new();
        for k in our_keys {
            if within(k.segment, &k.skey) {
                keys.insert((k.segment, k.skey), (k.hash, None));
            }
        }
        for k in their_keys {
            let skey = k.key.encode(&ks.name);
            if !within(k.segment, &skey) || tree::segment_of(&skey) != k.segment {
                continue;
            }
            let segment = k.segment;
            keys.entry((segment, skey)).or_insert((0, None)).1 = Some(k);
        }
        for ((_, skey), (our_hash, theirs)) in keys.into_iter().take(max_keys) {
            if theirs.as_ref().map_or(0, |t| t.hash) == our_hash {
                continue;
            }
            let key = match &theirs {
                Some(t) => t.key.clone(),
                None => match Key::decode(&skey) {
                    Ok((_, key)) => key,
                    Err(_) => continue,
                },
            };
            self.repair(ks, &key, peer, theirs.map(|t| t.vv)).await?;
            outcome.keys_repaired += 1;
        }
        outcome.full = !truncated && !their_more && !our_more;
        Ok(outcome)
    }

    /// Make `key` the same on this node and `peer`: fetch theirs unless ours is ahead,
    /// send ours (after that merge) unless theirs is ahead.
    async fn repair(
        &self,
        ks: &KeyspaceDef,
        key: &Key,
        peer: &str,
        their_vv: Option<crate::causality::VersionVector>,
    ) -> Result<(), AaeError> {
        let ours = self.replica.read(ks, key).await?;
        let order = match (&ours, &their_vv) {
            (Some(o), Some(t)) => o.vv.partial_cmp_vv(t),
            _ => None,
        };
        let pull = their_vv.is_some() && order != Some(std::cmp::Ordering::Greater);
        let push = ours.is_some() && order != Some(std::cmp::Ordering::Less);
        if pull {
            let theirs = self
                .call(
                    peer,
                    peers::Read {
                        keyspace: ks.clone(),
                        key: key.clone(),
                        // Exchanges run between owners only (and pause during changes).
                        own_copy: true,
                    },
                )
                .await?;
            if let Some(theirs) = theirs {
                self.replica.merge(ks, key, theirs).await?;
            }
        }
        if push {
            if let Some(object) = self.replica.read(ks, key).await? {
                self.call(
                    peer,
                    peers::Replicate {
                        keyspace: ks.clone(),
                        key: key.clone(),
                        object,
                    },
                )
                .await?;
            }
        }
        Ok(())
    }
}
