//! The replica side of the peer protocol: one [`PeerRequest`] in, one [`PeerResponse`]
//! out, served from this node's [`Replica`] and keyspace [`Catalog`].
//!
//! Requests reach it from peers (through the node) and from this node's own coordinator
//! (directly, without the network), so both see exactly the same replica. Every data
//! request carries its keyspace's definition, which is learnt here before the request is
//! served: a replica that missed a keyspace's creation learns it from the first request.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::env::Env;
use crate::hints::{HintError, HintStore};
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::metrics::Metrics;
use crate::object::Object;
use crate::proto::{PeerError, PeerRequest, PeerResponse};
use crate::replica::{Durable, Replica, ReplicaError, WriteItem};
use crate::storage::StorageError;

/// Most items one scan page returns, whatever the client asks for: bounds the reply
/// size and the work one request can cause.
pub const MAX_SCAN_LIMIT: usize = 1000;

/// Serves peer requests from this node's replica and catalog.
pub struct ReplicaService {
    /// This node's name (errors name the node they happened on).
    name: String,
    /// This node's own copy of the data.
    replica: Arc<Replica>,
    /// The keyspaces this node knows: learnt from requests, dropped on request.
    catalog: Arc<Catalog>,
    /// Times each request for the metrics.
    env: Arc<dyn Env>,
    /// Per-kind replica latencies.
    metrics: Arc<Metrics>,
    /// Most bytes one scan page may carry (`limits.max_reply_bytes`).
    max_reply_bytes: usize,
    /// The hints this node holds as a stand-in (`StoreHint`); `None` refuses them.
    hints: Option<Arc<HintStore>>,
    /// The layouts (`LayoutSync`, the commit protocol, `StreamRange`); `None` refuses them.
    membership: Option<Arc<crate::membership::Membership>>,
}

impl ReplicaService {
    /// Node `name`'s replica side.
    pub fn new(
        name: String,
        replica: Arc<Replica>,
        catalog: Arc<Catalog>,
        env: Arc<dyn Env>,
        metrics: Arc<Metrics>,
        max_reply_bytes: usize,
    ) -> Self {
        ReplicaService {
            name,
            replica,
            catalog,
            env,
            metrics,
            max_reply_bytes,
            hints: None,
            membership: None,
        }
    }

    /// The same service, holding hints for other replicas in `hints`.
    pub fn with_hints(mut self, hints: Arc<HintStore>) -> Self {
        self.hints = Some(hints);
        self
    }

    /// The same service, answering layout and transfer requests from `membership`.
    pub fn with_membership(mut self, membership: Arc<crate::membership::Membership>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// Layout and transfer requests.
    async fn membership_request(&self, req: PeerRequest) -> PeerResponse {
        let Some(m) = &self.membership else {
            return PeerResponse::Error(PeerError::Invalid(format!(
                "node {} does not take layout requests",
                self.name
            )));
        };
        let failed = |e: crate::membership::MembershipError| {
            PeerResponse::Error(PeerError::Storage(e.to_string()))
        };
        match req {
            PeerRequest::LayoutSync { history } => {
                if let Err(e) = m.merge(&history) {
                    tracing::warn!(node = %self.name, error = %e, "layout history from a peer refused");
                }
                PeerResponse::Layout(Box::new(m.view().history.clone()))
            }
            PeerRequest::LayoutPrepare { slot, ballot } => match m.prepare(slot, &ballot) {
                Ok(p) => PeerResponse::LayoutPromise(p),
                Err(e) => failed(e),
            },
            PeerRequest::LayoutAccept { ballot, layout } => match m.accept(&ballot, &layout) {
                Ok(a) => PeerResponse::LayoutAccepted(a),
                Err(e) => failed(e),
            },
            PeerRequest::StreamRange {
                keyspace,
                for_node,
                version,
                after,
                max_bytes,
            } => {
                let view = m.view();
                let storage = Arc::clone(self.replica.storage());
                let page = move || {
                    crate::transfer::serve_page(
                        &*storage,
                        &view,
                        &keyspace,
                        &for_node,
                        version,
                        after.as_deref().map(|a| &a[..]),
                        max_bytes,
                    )
                };
                let result = if self.replica.storage().blocking() {
                    crate::env::blocking(&*self.env, page).await
                } else {
                    Some(page())
                };
                match result {
                    Some(Ok(p)) => PeerResponse::Stream {
                        items: p
                            .items
                            .into_iter()
                            .map(|(k, v)| {
                                (serde_bytes::ByteBuf::from(k), serde_bytes::ByteBuf::from(v))
                            })
                            .collect(),
                        next: p.next.map(serde_bytes::ByteBuf::from),
                        checksum: p.checksum,
                    },
                    Some(Err(e)) => PeerResponse::Error(PeerError::Invalid(e.to_string())),
                    None => PeerResponse::Error(PeerError::Storage("transfer task failed".into())),
                }
            }
            _ => PeerResponse::Error(PeerError::Invalid("not a layout request".into())),
        }
    }

    /// Why this replica must not serve `req`: a read, a scan or a lead write of a
    /// partition it owns in none of the layout versions it holds. After a layout change
    /// completes, a node drops the keys it no longer owns; a coordinator that has not heard
    /// of the change yet may still pick it, and an empty answer would read as "no such
    /// key" (a read going back in time), a lead write would issue versions on an empty
    /// copy. Refused, the coordinator asks another replica. Merges are always taken (they
    /// never lose anything; the next clean-up drops what is not owned).
    fn not_an_owner(&self, req: &PeerRequest) -> Option<String> {
        let m = self.membership.as_ref()?;
        let (ks, partition) = match req {
            PeerRequest::Read {
                keyspace,
                key,
                own_copy: false,
            }
            | PeerRequest::Write { keyspace, key, .. }
            | PeerRequest::Update { keyspace, key, .. } => (keyspace, &key.partition),
            PeerRequest::Scan {
                keyspace,
                partition,
                ..
            }
            | PeerRequest::WriteBatch {
                keyspace,
                partition,
                ..
            } => (keyspace, partition),
            _ => return None,
        };
        let view = m.view();
        let owns = view
            .rings()
            .iter()
            .any(|r| r.holds(partition, ks.n as usize, &self.name));
        (!owns).then(|| {
            format!(
                "{} owns partition {:?} of {} in none of its live layout versions (current v{})",
                self.name,
                String::from_utf8_lossy(partition),
                ks.name,
                view.version()
            )
        })
    }

    /// Serve one request, timing it by kind.
    pub async fn handle(&self, req: PeerRequest) -> PeerResponse {
        let kind = match &req {
            PeerRequest::Read { .. } => "read",
            PeerRequest::Write { .. }
            | PeerRequest::WriteBatch { .. }
            | PeerRequest::Update { .. } => "write",
            PeerRequest::Replicate { .. }
            | PeerRequest::ReplicateBatch { .. }
            | PeerRequest::Bundle(_) => "replicate",
            PeerRequest::StoreHint { .. } => "hint",
            PeerRequest::TombstoneCheck { .. } | PeerRequest::ReapTombstones { .. } => "other",
            PeerRequest::Scan { .. } => "scan",
            _ => "other",
        };
        let started = self.env.now();
        let reply = self.apply(req).await;
        self.metrics
            .replica_done(kind, self.env.now().saturating_duration_since(started));
        reply
    }

    /// Serve this node's own coordinator's lead write (`Write`, `WriteBatch`, `Update`)
    /// overlapped (`storage.overlap_lead_sync`): stored deferred, answered at once, with
    /// the [`Durable`] that completes once it is on disk. Any other request is served as
    /// [`ReplicaService::handle`] serves it, already durable.
    pub async fn handle_overlapped(&self, req: PeerRequest) -> (PeerResponse, Durable) {
        if !matches!(
            req,
            PeerRequest::Write { .. } | PeerRequest::WriteBatch { .. } | PeerRequest::Update { .. }
        ) {
            return (self.handle(req).await, Durable::now());
        }
        let started = self.env.now();
        let reply = match self.admit(&req) {
            Some(refused) => (refused, Durable::now()),
            None => match self.lead(req, true).await {
                Ok(done) => done,
                Err(e) => (
                    PeerResponse::Error(peer_error(&self.name, e)),
                    Durable::now(),
                ),
            },
        };
        self.metrics
            .replica_done("write", self.env.now().saturating_duration_since(started));
        reply
    }

    /// The checks before any request is served: its keyspace is learnt (a replica that
    /// missed the keyspace's creation learns it from the first request), and a partition
    /// this node does not own is refused. `Some` is the refusal.
    fn admit(&self, req: &PeerRequest) -> Option<PeerResponse> {
        if let Some(def) = req.keyspace() {
            if let Err(e) = self.catalog.learn(def.clone()) {
                return Some(PeerResponse::Error(PeerError::Invalid(e.to_string())));
            }
        }
        self.not_an_owner(req)
            .map(|refusal| PeerResponse::Error(PeerError::NotOwner(refusal)))
    }

    /// A lead write (`Write`, `WriteBatch`, `Update`), stored `deferred` or synced.
    async fn lead(
        &self,
        req: PeerRequest,
        deferred: bool,
    ) -> Result<(PeerResponse, Durable), ReplicaError> {
        match req {
            PeerRequest::Write {
                keyspace,
                key,
                context,
                value,
                if_context,
                client_ts,
                actor,
            } => {
                let item = WriteItem {
                    sort: key.sort.clone(),
                    context,
                    value,
                    client_ts,
                    actor,
                };
                let (mut objects, durable) = self
                    .replica
                    .lead_write_batch(&keyspace, &key.partition, vec![item], if_context, deferred)
                    .await?;
                let (object, dot) = objects
                    .pop()
                    .ok_or_else(|| ReplicaError::Task("empty batch result".into()))?;
                Ok((
                    PeerResponse::Written {
                        object,
                        dot: Some(dot),
                    },
                    durable,
                ))
            }
            PeerRequest::WriteBatch {
                keyspace,
                partition,
                items,
            } => {
                let items = items
                    .into_iter()
                    .map(|(sort, context, value)| WriteItem {
                        sort: sort.into_vec(),
                        context,
                        value: value.map(|v| v.into_vec()),
                        client_ts: None,
                        actor: None,
                    })
                    .collect();
                let (written, durable) = self
                    .replica
                    .lead_write_batch(&keyspace, &partition, items, false, deferred)
                    .await?;
                let (objects, dots) = written.into_iter().unzip();
                Ok((PeerResponse::WrittenBatch { objects, dots }, durable))
            }
            PeerRequest::Update {
                keyspace,
                key,
                op,
                context,
            } => {
                let (object, durable) = self
                    .replica
                    .lead_update(&keyspace, &key, op, context, deferred)
                    .await?;
                Ok((PeerResponse::Written { object, dot: None }, durable))
            }
            other => Err(ReplicaError::Task(format!(
                "a {} request is not a lead write",
                other.kind()
            ))),
        }
    }

    async fn apply(&self, req: PeerRequest) -> PeerResponse {
        if let Some(refused) = self.admit(&req) {
            return refused;
        }
        let result: Result<PeerResponse, ReplicaError> = match req {
            PeerRequest::Read { keyspace, key, .. } => self
                .replica
                .read(&keyspace, &key)
                .await
                .map(PeerResponse::Object),
            req @ (PeerRequest::Write { .. }
            | PeerRequest::WriteBatch { .. }
            | PeerRequest::Update { .. }) => self.lead(req, false).await.map(|(r, _)| r),
            PeerRequest::Replicate {
                keyspace,
                key,
                object,
            } => self
                .replica
                .merge(&keyspace, &key, object)
                .await
                .map(|_| PeerResponse::Ack),
            PeerRequest::ReplicateBatch {
                keyspace,
                partition,
                items,
            } => {
                let items = items.into_iter().map(|(s, o)| (s.into_vec(), o)).collect();
                self.replica
                    .merge_batch(&keyspace, &partition, items)
                    .await
                    .map(|_| PeerResponse::Ack)
            }
            PeerRequest::Scan {
                keyspace,
                partition,
                from,
                to,
                limit,
            } => {
                let limit = (limit as usize).min(MAX_SCAN_LIMIT);
                let to = to.as_deref().map(|v| &v[..]);
                self.replica
                    .scan(
                        &keyspace,
                        &partition,
                        &from,
                        to,
                        limit,
                        self.max_reply_bytes,
                    )
                    .await
                    .map(|(items, more)| PeerResponse::Items {
                        items: items
                            .into_iter()
                            .map(|(s, o)| (serde_bytes::ByteBuf::from(s), o))
                            .collect(),
                        more,
                    })
            }
            // Already learnt above.
            PeerRequest::AnnounceKeyspace(_) => Ok(PeerResponse::Ack),
            PeerRequest::DropKeyspace { name, generation } => {
                return match self.catalog.drop_keyspace(&name, generation).await {
                    Ok(_) => PeerResponse::Ack,
                    Err(e) => PeerResponse::Error(PeerError::Storage(e.to_string())),
                };
            }
            PeerRequest::LookupKeyspace(name) => {
                Ok(PeerResponse::Keyspace(self.catalog.get(&name)))
            }
            PeerRequest::Ping => Ok(PeerResponse::Ack),
            req @ (PeerRequest::AaeBranches { .. }
            | PeerRequest::AaeSegments { .. }
            | PeerRequest::AaeKeys { .. }) => {
                return crate::aae::serve(
                    &self.name,
                    &self.replica,
                    &self.env,
                    req,
                    self.max_reply_bytes,
                )
                .await;
            }
            PeerRequest::TombstoneCheck { keyspace, keys } => {
                if let Some(refused) = too_many_keys("tombstone check", keys.len()) {
                    return refused;
                }
                let hints = match &self.hints {
                    Some(h) => match h.held_for(&keyspace.name, &keys).await {
                        Ok(counts) => counts,
                        Err(e) => return PeerResponse::Error(hint_error(e)),
                    },
                    None => vec![0; keys.len()],
                };
                self.replica
                    .held_tombstones(&keyspace, keys)
                    .await
                    .map(|held| {
                        PeerResponse::Tombstones(
                            held.into_iter()
                                .zip(hints)
                                .map(|(held, hints)| crate::proto::TombstoneReport { held, hints })
                                .collect(),
                        )
                    })
            }
            PeerRequest::ReapTombstones { keyspace, items } => {
                if let Some(refused) = too_many_keys("reap", items.len()) {
                    return refused;
                }
                self.replica
                    .reap(&keyspace, items)
                    .await
                    .map(|n| PeerResponse::Reaped(n as u32))
            }
            PeerRequest::Bundle(items) => {
                return PeerResponse::Bundle(self.apply_bundle(items).await);
            }
            PeerRequest::DataSize => Ok(PeerResponse::DataSize(
                self.replica.storage().approximate_bytes(),
            )),
            // Served by `membership_request` above.
            PeerRequest::LayoutSync { .. }
            | PeerRequest::LayoutPrepare { .. }
            | PeerRequest::LayoutAccept { .. }
            | PeerRequest::StreamRange { .. } => {
                return self.membership_request(req).await;
            }
            // Served by the node (it needs the node's peers), never by the replica.
            PeerRequest::ProbeFor { .. } => {
                return PeerResponse::Error(PeerError::Invalid(format!(
                    "node {}: an indirect probe is served by the node, not its replica",
                    self.name
                )));
            }
            PeerRequest::StoreHint {
                owner,
                keyspace,
                key,
                object,
                more,
            } => {
                let Some(hints) = &self.hints else {
                    return PeerResponse::Error(PeerError::Invalid(format!(
                        "node {} does not hold hints",
                        self.name
                    )));
                };
                return match hints
                    .store_batch(&owner, keyspace, key, *object, more)
                    .await
                {
                    Ok(()) => PeerResponse::Ack,
                    Err(e) => PeerResponse::Error(hint_error(e)),
                };
            }
        };
        result.unwrap_or_else(|e| PeerResponse::Error(peer_error(&self.name, e)))
    }
}

impl ReplicaService {
    /// Serve a bundle: every `Replicate` item of one keyspace is merged in one storage
    /// batch (one fsync for the lot), so a peer's replication under load costs this
    /// replica one write instead of one per key; `Read` items are served one by one. Each
    /// item still gets its own answer and the checks a lone request gets
    /// ([`ReplicaService::admit`]): an item of another kind, one that names a keyspace this
    /// node refuses to learn, a read of a partition it does not own, or a malformed object
    /// is refused alone, without failing the others. A storage
    /// failure fails the items of its batch, none of which was stored (a batch is atomic).
    async fn apply_bundle(&self, items: Vec<PeerRequest>) -> Vec<PeerResponse> {
        let mut replies: Vec<Option<PeerResponse>> = vec![None; items.len()];
        // (keyspace, item indexes, keys and objects) per keyspace, in first-seen order.
        type Group = (KeyspaceDef, Vec<usize>, Vec<(Key, Object)>);
        let mut groups: Vec<Group> = Vec::new();
        // Reads are served after the merges: a bundle's requests were all in flight at
        // once, so any order is one they could have arrived in.
        let mut reads: Vec<(usize, KeyspaceDef, Key)> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if !matches!(
                item,
                PeerRequest::Read { .. } | PeerRequest::Replicate { .. }
            ) {
                replies[i] = Some(PeerResponse::Error(PeerError::Invalid(format!(
                    "node {}: a bundle holds only replicate and read requests, item {i} is {:?}",
                    self.name,
                    item.kind()
                ))));
                continue;
            }
            if let Some(refused) = self.admit(&item) {
                replies[i] = Some(refused);
                continue;
            }
            let (keyspace, key, object) = match item {
                PeerRequest::Read { keyspace, key, .. } => (keyspace, key, None),
                PeerRequest::Replicate {
                    keyspace,
                    key,
                    object,
                } => (keyspace, key, Some(object)),
                _ => continue, // refused above
            };
            let Some(object) = object else {
                reads.push((i, keyspace, key));
                continue;
            };
            if let Err(e) = crate::crdt::check_well_formed(&object.crdt) {
                replies[i] = Some(PeerResponse::Error(PeerError::Invalid(format!(
                    "node {}: incoming object of {key} refused: {e}",
                    self.name
                ))));
                continue;
            }
            match groups.iter_mut().find(|g| g.0 == keyspace) {
                Some(g) => {
                    g.1.push(i);
                    g.2.push((key, object));
                }
                None => groups.push((keyspace, vec![i], vec![(key, object)])),
            }
        }
        for (keyspace, indexes, objects) in groups {
            let reply = match self.replica.merge_keys(&keyspace, objects).await {
                Ok(()) => PeerResponse::Ack,
                Err(e) => PeerResponse::Error(peer_error(&self.name, e)),
            };
            for i in indexes {
                replies[i] = Some(reply.clone());
            }
        }
        for (i, keyspace, key) in reads {
            replies[i] = Some(match self.replica.read(&keyspace, &key).await {
                Ok(o) => PeerResponse::Object(o),
                Err(e) => PeerResponse::Error(peer_error(&self.name, e)),
            });
        }
        replies
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    PeerResponse::Error(PeerError::Invalid("bundle item not served".into()))
                })
            })
            .collect()
    }
}

/// The refusal of a reaping request over more keys than one round may cover.
fn too_many_keys(what: &str, n: usize) -> Option<PeerResponse> {
    let max = crate::tombstones::MAX_KEYS_PER_ROUND;
    (n > max).then(|| {
        PeerResponse::Error(PeerError::Invalid(format!(
            "a {what} of {n} keys; at most {max} at once"
        )))
    })
}

/// A hint refused for good is invalid; one refused for now (bound, disk) a storage
/// failure.
fn hint_error(e: HintError) -> PeerError {
    match e {
        HintError::Disabled(_) | HintError::BadOwner(..) | HintError::Corrupt(_) => {
            PeerError::Invalid(e.to_string())
        }
        HintError::TargetFull { .. } | HintError::Storage(_) | HintError::Task => {
            PeerError::Storage(e.to_string())
        }
    }
}

fn peer_error(node: &str, e: ReplicaError) -> PeerError {
    match e {
        ReplicaError::Storage(StorageError::DiskFull(m)) => PeerError::Storage(format!(
            "disk full on {node}: {m}; free space in its data directory and writes resume"
        )),
        ReplicaError::SiblingLimit { .. } => PeerError::SiblingLimit(e.to_string()),
        ReplicaError::Conflict { .. } => PeerError::Conflict(e.to_string()),
        ReplicaError::Crdt(_)
        | ReplicaError::Policy(_)
        | ReplicaError::ObjectTooLarge { .. }
        | ReplicaError::BatchTooLarge { .. }
        | ReplicaError::Causality { .. } => PeerError::Invalid(e.to_string()),
        other => PeerError::Storage(other.to_string()),
    }
}
