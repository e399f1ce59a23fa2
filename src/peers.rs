//! Calling replicas: the coordinator's typed requests to its peers (and to its own
//! replica, without the network), what a call can fail with, collecting the replies of a
//! fan-out until a quorum, and what this node last saw of each peer.
//!
//! **Typed pairs.** On the wire a request is a [`PeerRequest`] and a reply a
//! [`PeerResponse`], two enums that do not say which reply belongs to which request. Here
//! every request kind is a struct implementing [`PeerCall`], whose `Reply` is the one reply
//! it can get: a read gets `Option<Object>`, a replication `()`. The check that a peer sent
//! the right kind of reply happens once, in [`Peers::call`]: a reply of another kind is a
//! protocol failure of that replica, like a reply that does not decode. Coordinating code
//! only ever sees the right reply type.
//!
//! **Quorums.** [`Peers::fan_out`] sends one request to several replicas at once and
//! returns their [`Replies`] as they come; [`Replies::gather`] is the one loop that
//! collects them until enough succeeded or success became impossible.
//!
//! **Health.** Every call's outcome is evidence for the node's failure detector
//! ([`crate::membership::detector`]): an answer (a refusal included) proves the peer
//! alive, a failure makes it a suspect — never dead by itself — unless the call spanned a
//! stall of this node. [`Peers::peer_up`] reads the detector.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::causality::{Dot, VersionVector};
use crate::crdt::CrdtOp;
use crate::env::{self, Env, Instant};
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::membership::detector::Detector;
use crate::object::Object;
use crate::proto::{PeerError, PeerRequest, PeerResponse, ReplicaFailure};
use crate::replica_service::ReplicaService;
use crate::transport::{Transport, TransportError};

/// A request to a replica whose reply type is known statically.
pub trait PeerCall: Send + 'static {
    /// What the replica answers when it serves the request.
    type Reply: Send + 'static;

    /// The request as it goes on the wire.
    fn into_request(self) -> PeerRequest;

    /// The reply, if `resp` is the kind this request gets.
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply>;
}

/// A reply of another kind than the request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongReply {
    /// The kind that came instead (see [`PeerResponse::kind`]).
    pub got: &'static str,
}

impl WrongReply {
    fn of(resp: &PeerResponse) -> Self {
        WrongReply { got: resp.kind() }
    }
}

/// The replies that only acknowledge.
fn ack(resp: PeerResponse) -> Result<(), WrongReply> {
    match resp {
        PeerResponse::Ack => Ok(()),
        other => Err(WrongReply::of(&other)),
    }
}

/// Return a replica's object for a key (`None`: it stores none).
#[derive(Debug, Clone)]
pub struct Read {
    /// Keyspace (carried so a replica that missed its creation learns it).
    pub keyspace: KeyspaceDef,
    /// The key.
    pub key: Key,
    /// The replica's own copy even if it owns the key in no live layout.
    pub own_copy: bool,
}

impl PeerCall for Read {
    type Reply = Option<Object>;
    fn into_request(self) -> PeerRequest {
        PeerRequest::Read {
            keyspace: self.keyspace,
            key: self.key,
            own_copy: self.own_copy,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Object(o) => Ok(o),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Be the lead replica of a client write: issue its dot, store it, return the object.
#[derive(Debug, Clone)]
pub struct Write {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The key.
    pub key: Key,
    /// What the client had read.
    pub context: VersionVector,
    /// New value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Refuse if the lead has seen events `context` does not cover.
    pub if_context: bool,
    /// Client timestamp (`lww-client`).
    pub client_ts: Option<u64>,
    /// Client actor (`lww-actor`).
    pub actor: Option<String>,
}

/// The lead's answer to a [`Write`].
#[derive(Debug, Clone)]
pub struct Written {
    /// The lead's object after the write.
    pub object: Object,
    /// The dot it issued.
    pub dot: Option<Dot>,
}

impl PeerCall for Write {
    type Reply = Written;
    fn into_request(self) -> PeerRequest {
        PeerRequest::Write {
            keyspace: self.keyspace,
            key: self.key,
            context: self.context,
            value: self.value,
            if_context: self.if_context,
            client_ts: self.client_ts,
            actor: self.actor,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Written { object, dot } => Ok(Written { object, dot }),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Be the lead for a batch of writes to one partition, applied in one storage batch.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The shared partition key.
    pub partition: Vec<u8>,
    /// (sort key, context, value) per item.
    pub items: Vec<(
        serde_bytes::ByteBuf,
        VersionVector,
        Option<serde_bytes::ByteBuf>,
    )>,
}

/// The lead's answer to a [`WriteBatch`], in request order.
#[derive(Debug, Clone)]
pub struct WrittenBatch {
    /// The lead's objects after the writes.
    pub objects: Vec<Object>,
    /// One new dot per item.
    pub dots: Vec<Dot>,
}

impl PeerCall for WriteBatch {
    type Reply = WrittenBatch;
    fn into_request(self) -> PeerRequest {
        PeerRequest::WriteBatch {
            keyspace: self.keyspace,
            partition: self.partition,
            items: self.items,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::WrittenBatch { objects, dots } => Ok(WrittenBatch { objects, dots }),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Be the lead replica of a CRDT operation: apply it and return the object.
#[derive(Debug, Clone)]
pub struct Update {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The key.
    pub key: Key,
    /// The operation.
    pub op: CrdtOp,
    /// What the client had read.
    pub context: VersionVector,
}

impl PeerCall for Update {
    type Reply = Object;
    fn into_request(self) -> PeerRequest {
        PeerRequest::Update {
            keyspace: self.keyspace,
            key: self.key,
            op: self.op,
            context: self.context,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            // A CRDT operation's dots live inside the CRDT state; the reply carries none.
            PeerResponse::Written { object, .. } => Ok(object),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Merge an object into the replica's copy (replication and read repair).
#[derive(Debug, Clone)]
pub struct Replicate {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The key.
    pub key: Key,
    /// The object to merge.
    pub object: Object,
}

impl PeerCall for Replicate {
    type Reply = ();
    fn into_request(self) -> PeerRequest {
        PeerRequest::Replicate {
            keyspace: self.keyspace,
            key: self.key,
            object: self.object,
        }
    }
    fn reply(resp: PeerResponse) -> Result<(), WrongReply> {
        ack(resp)
    }
}

/// Merge objects of one partition in one storage batch.
#[derive(Debug, Clone)]
pub struct ReplicateBatch {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The shared partition key.
    pub partition: Vec<u8>,
    /// (sort key, object) per item.
    pub items: Vec<(serde_bytes::ByteBuf, Object)>,
}

impl PeerCall for ReplicateBatch {
    type Reply = ();
    fn into_request(self) -> PeerRequest {
        PeerRequest::ReplicateBatch {
            keyspace: self.keyspace,
            partition: self.partition,
            items: self.items,
        }
    }
    fn reply(resp: PeerResponse) -> Result<(), WrongReply> {
        ack(resp)
    }
}

/// Return stored items of one partition in sort order.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The partition key.
    pub partition: Vec<u8>,
    /// First sort key, inclusive.
    pub from: Vec<u8>,
    /// End sort key, exclusive.
    pub to: Option<serde_bytes::ByteBuf>,
    /// Most items.
    pub limit: u32,
}

/// One replica's page of a [`Scan`].
#[derive(Debug, Clone)]
pub struct Page {
    /// (sort key, object) in sort order.
    pub items: Vec<(serde_bytes::ByteBuf, Object)>,
    /// True if the replica stopped at the limit.
    pub more: bool,
}

impl PeerCall for Scan {
    type Reply = Page;
    fn into_request(self) -> PeerRequest {
        PeerRequest::Scan {
            keyspace: self.keyspace,
            partition: self.partition,
            from: self.from,
            to: self.to,
            limit: self.limit,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Items { items, more } => Ok(Page { items, more }),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Store a keyspace definition.
#[derive(Debug, Clone)]
pub struct AnnounceKeyspace(pub KeyspaceDef);

impl PeerCall for AnnounceKeyspace {
    type Reply = ();
    fn into_request(self) -> PeerRequest {
        PeerRequest::AnnounceKeyspace(self.0)
    }
    fn reply(resp: PeerResponse) -> Result<(), WrongReply> {
        ack(resp)
    }
}

/// Return a keyspace definition if the peer knows it.
#[derive(Debug, Clone)]
pub struct LookupKeyspace(pub String);

impl PeerCall for LookupKeyspace {
    type Reply = Option<KeyspaceDef>;
    fn into_request(self) -> PeerRequest {
        PeerRequest::LookupKeyspace(self.0)
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Keyspace(def) => Ok(def),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Forget a keyspace, delete its data and refuse its definition from now on.
#[derive(Debug, Clone)]
pub struct DropKeyspace {
    /// Keyspace name.
    pub name: String,
    /// The generation the coordinator dropped (see `KeyspaceDef::generation`).
    pub generation: u64,
}

impl PeerCall for DropKeyspace {
    type Reply = ();
    fn into_request(self) -> PeerRequest {
        PeerRequest::DropKeyspace {
            name: self.name,
            generation: self.generation,
        }
    }
    fn reply(resp: PeerResponse) -> Result<(), WrongReply> {
        ack(resp)
    }
}

/// Hold an object for a primary replica that could not take it (sloppy quorum).
#[derive(Debug, Clone)]
pub struct StoreHint {
    /// The primary replica the object is meant for.
    pub owner: String,
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The key.
    pub key: Key,
    /// The already-versioned object.
    pub object: Object,
    /// The rest of an atomic batch (same partition), replayed with it.
    pub more: Vec<(serde_bytes::ByteBuf, Object)>,
}

impl PeerCall for StoreHint {
    type Reply = ();
    fn into_request(self) -> PeerRequest {
        PeerRequest::StoreHint {
            owner: self.owner,
            keyspace: self.keyspace,
            key: self.key,
            object: Box::new(self.object),
            more: self.more,
        }
    }
    fn reply(resp: PeerResponse) -> Result<(), WrongReply> {
        ack(resp)
    }
}

/// Failure detection: ping `target` for the asker and say whether it answered.
#[derive(Debug, Clone)]
pub struct ProbeFor {
    /// The member to ping.
    pub target: String,
    /// How long to wait for it, milliseconds.
    pub timeout_ms: u64,
}

impl PeerCall for ProbeFor {
    type Reply = bool;
    fn into_request(self) -> PeerRequest {
        PeerRequest::ProbeFor {
            target: self.target,
            timeout_ms: self.timeout_ms,
        }
    }
    fn reply(resp: PeerResponse) -> Result<bool, WrongReply> {
        match resp {
            PeerResponse::Probed(ok) => Ok(ok),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Liveness check.
#[derive(Debug, Clone)]
pub struct Ping;

impl PeerCall for Ping {
    type Reply = ();
    fn into_request(self) -> PeerRequest {
        PeerRequest::Ping
    }
    fn reply(resp: PeerResponse) -> Result<(), WrongReply> {
        ack(resp)
    }
}

/// Anti-entropy: a replica's branch hashes of one tree.
#[derive(Debug, Clone)]
pub struct AaeBranches {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The range.
    pub range: u64,
}

impl PeerCall for AaeBranches {
    type Reply = Vec<u64>;
    fn into_request(self) -> PeerRequest {
        PeerRequest::AaeBranches {
            keyspace: self.keyspace,
            range: self.range,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::AaeBranches(b) => Ok(b),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Anti-entropy: a replica's non-zero segment hashes under some branches.
#[derive(Debug, Clone)]
pub struct AaeSegments {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The range.
    pub range: u64,
    /// Branch numbers.
    pub branches: Vec<u32>,
}

impl PeerCall for AaeSegments {
    type Reply = Vec<(u32, u64)>;
    fn into_request(self) -> PeerRequest {
        PeerRequest::AaeSegments {
            keyspace: self.keyspace,
            range: self.range,
            branches: self.branches,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::AaeSegments(s) => Ok(s),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Anti-entropy: the keys of some segments with their hashes and version vectors.
#[derive(Debug, Clone)]
pub struct AaeKeys {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The range.
    pub range: u64,
    /// Segment numbers.
    pub segments: Vec<u32>,
    /// Most keys wanted.
    pub limit: u32,
}

impl PeerCall for AaeKeys {
    type Reply = (Vec<crate::proto::AaeKey>, bool);
    fn into_request(self) -> PeerRequest {
        PeerRequest::AaeKeys {
            keyspace: self.keyspace,
            range: self.range,
            segments: self.segments,
            limit: self.limit,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::AaeKeys { keys, more } => Ok((keys, more)),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Tombstone reaping: each key's tombstone on the replica and the hints held for it.
#[derive(Debug, Clone)]
pub struct TombstoneCheck {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The keys.
    pub keys: Vec<Key>,
}

impl PeerCall for TombstoneCheck {
    type Reply = Vec<crate::proto::TombstoneReport>;
    fn into_request(self) -> PeerRequest {
        PeerRequest::TombstoneCheck {
            keyspace: self.keyspace,
            keys: self.keys,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Tombstones(r) => Ok(r),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Tombstone reaping: remove the keys whose copy is still the agreed tombstone.
#[derive(Debug, Clone)]
pub struct ReapTombstones {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// (key, hash of the agreed tombstone).
    pub items: Vec<(Key, u64)>,
}

impl PeerCall for ReapTombstones {
    type Reply = u32;
    fn into_request(self) -> PeerRequest {
        PeerRequest::ReapTombstones {
            keyspace: self.keyspace,
            items: self.items,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Reaped(n) => Ok(n),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Layouts: send this node's history, get the peer's (merged with it).
#[derive(Debug, Clone)]
pub struct LayoutSync(pub crate::membership::layout::History);

impl PeerCall for LayoutSync {
    type Reply = crate::membership::layout::History;
    fn into_request(self) -> PeerRequest {
        PeerRequest::LayoutSync { history: self.0 }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Layout(h) => Ok(*h),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// The replica's data size estimate (`cluster plan`).
#[derive(Debug, Clone)]
pub struct DataSize;

impl PeerCall for DataSize {
    type Reply = Option<u64>;
    fn into_request(self) -> PeerRequest {
        PeerRequest::DataSize
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::DataSize(n) => Ok(n),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Layout commit, phase 1.
#[derive(Debug, Clone)]
pub struct LayoutPrepare {
    /// The version being decided.
    pub slot: u64,
    /// The proposer's ballot.
    pub ballot: crate::membership::layout::Ballot,
}

impl PeerCall for LayoutPrepare {
    type Reply = crate::membership::layout::Promise;
    fn into_request(self) -> PeerRequest {
        PeerRequest::LayoutPrepare {
            slot: self.slot,
            ballot: self.ballot,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::LayoutPromise(p) => Ok(p),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Layout commit, phase 2.
#[derive(Debug, Clone)]
pub struct LayoutAccept {
    /// The proposer's ballot.
    pub ballot: crate::membership::layout::Ballot,
    /// The proposed layout.
    pub layout: crate::membership::layout::Layout,
}

impl PeerCall for LayoutAccept {
    type Reply = crate::membership::layout::Accepted;
    fn into_request(self) -> PeerRequest {
        PeerRequest::LayoutAccept {
            ballot: self.ballot,
            layout: self.layout,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::LayoutAccepted(a) => Ok(a),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Data transfer: one page of the keys the receiver gains.
#[derive(Debug, Clone)]
pub struct StreamRange {
    /// Keyspace.
    pub keyspace: KeyspaceDef,
    /// The receiving node.
    pub for_node: String,
    /// The layout version being transferred.
    pub version: u64,
    /// Resume after this storage key.
    pub after: Option<Vec<u8>>,
    /// Most bytes of objects in the page.
    pub max_bytes: u32,
}

/// One page of a transfer.
#[derive(Debug, Clone)]
pub struct StreamPage {
    /// (storage key, encoded object), in key order.
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the next page starts; `None` at the keyspace's end.
    pub next: Option<Vec<u8>>,
    /// The sender's checksum of the items.
    pub checksum: u64,
}

impl PeerCall for StreamRange {
    type Reply = StreamPage;
    fn into_request(self) -> PeerRequest {
        PeerRequest::StreamRange {
            keyspace: self.keyspace,
            for_node: self.for_node,
            version: self.version,
            after: self.after.map(serde_bytes::ByteBuf::from),
            max_bytes: self.max_bytes,
        }
    }
    fn reply(resp: PeerResponse) -> Result<Self::Reply, WrongReply> {
        match resp {
            PeerResponse::Stream {
                items,
                next,
                checksum,
            } => Ok(StreamPage {
                items: items
                    .into_iter()
                    .map(|(k, v)| (k.into_vec(), v.into_vec()))
                    .collect(),
                next: next.map(serde_bytes::ByteBuf::into_vec),
                checksum,
            }),
            other => Err(WrongReply::of(&other)),
        }
    }
}

/// Why one replica call produced no usable reply.
#[derive(Debug)]
pub enum CallFailure {
    /// No reply before the deadline.
    Timeout,
    /// The replica could not be reached, or answered with something that is not a reply
    /// to the request (a frame that does not decode, a reply of another kind).
    Transport(TransportError),
    /// The replica refused or failed the request.
    Refused(PeerError),
}

impl CallFailure {
    /// The failure as a quorum error reports it for replica `node`.
    pub fn to_failure(&self, node: &str) -> ReplicaFailure {
        let (kind, detail) = match self {
            CallFailure::Timeout => ("timeout", "no reply before the request timeout".to_string()),
            CallFailure::Transport(e) => ("unreachable", e.to_string()),
            CallFailure::Refused(e) => ("error", e.to_string()),
        };
        ReplicaFailure {
            node: node.to_string(),
            kind: kind.to_string(),
            detail,
        }
    }
}

/// Refuse replies whose CRDT state breaks an invariant (see `crdt::check_well_formed`)
/// before any comparison or merge touches them.
/// How replication to one peer is bundled (`[limits]` `max_bundle_items`,
/// `max_bundles_in_flight`; see [`Bundles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Most requests in one bundle; 1 turns bundling off.
    pub max_items: usize,
    /// Most estimated bytes of objects in one bundle (a larger object travels alone).
    pub max_bytes: usize,
    /// Bundles to one peer in flight at once; requests arriving meanwhile wait and go
    /// together in the next.
    pub in_flight: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        let l = crate::config::Limits::default();
        BundleLimits {
            max_items: l.max_bundle_items,
            max_bytes: l.max_object_bytes,
            in_flight: l.max_bundles_in_flight,
        }
    }
}

/// One request waiting for a bundle, and where its reply goes.
struct Bundled {
    req: PeerRequest,
    bytes: usize,
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<Result<PeerResponse, TransportError>>,
}

/// What a bundle carries: its requests are all of one class, so a read never waits for a
/// slot held by replication (whose bundles wait for an fsync on the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Replicate,
    Read,
}

/// Requests queued per peer, at most this many bundles' worth; a caller beyond waits for
/// room (within its own deadline).
const QUEUED_BUNDLES: usize = 8;

/// Bundling of replication and reads: each peer gets a queue per [`Class`] and a task
/// that sends what is queued as one [`PeerRequest::Bundle`] (one stream; the replica
/// merges a bundle's replication in one storage batch) whenever fewer than `in_flight`
/// bundles of that class to that peer are outstanding. An idle peer
/// gets each request at once, alone, as before; under load the requests that arrive
/// while the last bundles travel and are fsync'd go together — group commit across the
/// network, sized by the load itself, with no timer that would delay a lone request.
struct Bundles {
    limits: BundleLimits,
    transport: Arc<dyn Transport>,
    env: Arc<dyn Env>,
    /// One queue per (peer, class): reads never wait behind replication's fsyncs.
    queues: std::sync::Mutex<std::collections::HashMap<(String, Class), mpsc::Sender<Bundled>>>,
}

impl Bundles {
    fn new(transport: Arc<dyn Transport>, env: Arc<dyn Env>, limits: BundleLimits) -> Self {
        Bundles {
            limits: BundleLimits {
                max_items: limits.max_items.max(1),
                max_bytes: limits.max_bytes.max(1),
                in_flight: limits.in_flight.max(1),
            },
            transport,
            env,
            queues: Default::default(),
        }
    }

    /// The queue `req` goes through, if it is bundled: replication and reads, when
    /// bundling is on.
    fn takes(&self, req: &PeerRequest) -> Option<Class> {
        if self.limits.max_items <= 1 {
            return None;
        }
        match req {
            PeerRequest::Replicate { .. } => Some(Class::Replicate),
            PeerRequest::Read { .. } => Some(Class::Read),
            _ => None,
        }
    }

    /// Send `req` to `to` in the next bundle to it.
    async fn call(
        &self,
        to: &str,
        class: Class,
        req: PeerRequest,
        deadline: Instant,
    ) -> Result<PeerResponse, TransportError> {
        let bytes = match &req {
            PeerRequest::Replicate { key, object, .. } => {
                key.partition.len() + key.sort.len() + object.approx_bytes()
            }
            PeerRequest::Read { key, .. } => key.partition.len() + key.sort.len(),
            _ => 0,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let item = Bundled {
            req,
            bytes,
            deadline,
            reply: tx,
        };
        let queue = self.queue(to, class);
        if queue.send(item).await.is_err() {
            return Err(TransportError::Unreachable(format!(
                "{to}: its replication queue is closed (the node is stopping)"
            )));
        }
        rx.await.unwrap_or_else(|_| {
            Err(TransportError::Unreachable(format!(
                "{to}: the bundle carrying this request was dropped past its deadline"
            )))
        })
    }

    /// The queue to `to`, starting its sender task on first use.
    fn queue(&self, to: &str, class: Class) -> mpsc::Sender<Bundled> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let id = (to.to_string(), class);
        if let Some(q) = queues.get(&id) {
            if !q.is_closed() {
                return q.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.limits.max_items * QUEUED_BUNDLES);
        let sender = BundleSender {
            to: to.to_string(),
            limits: self.limits,
            transport: Arc::clone(&self.transport),
            env: Arc::clone(&self.env),
            knows_bundles: std::sync::atomic::AtomicBool::new(true),
        };
        self.env.spawn(Box::pin(sender.run(rx)));
        queues.insert(id, tx.clone());
        tx
    }
}

/// The task that sends one peer its bundles.
struct BundleSender {
    to: String,
    limits: BundleLimits,
    transport: Arc<dyn Transport>,
    env: Arc<dyn Env>,
    /// False once the peer refused a bundle as a frame it cannot decode (a node of an
    /// older build during a rolling upgrade): it then gets one request per stream.
    knows_bundles: std::sync::atomic::AtomicBool,
}

impl BundleSender {
    /// Until every queue handle is gone (the node stopped): wait for a request, wait for a
    /// free slot, take whatever else queued meanwhile (within the limits) and send it.
    async fn run(self, mut rx: mpsc::Receiver<Bundled>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.limits.in_flight));
        let me = Arc::new(self);
        let mut carried: Option<Bundled> = None;
        loop {
            let first = match carried.take() {
                Some(b) => b,
                None => match rx.recv().await {
                    Some(b) => b,
                    None => return,
                },
            };
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let mut bytes = first.bytes;
            let mut bundle = vec![first];
            while bundle.len() < me.limits.max_items {
                let Ok(next) = rx.try_recv() else { break };
                if bytes + next.bytes > me.limits.max_bytes {
                    carried = Some(next);
                    break;
                }
                bytes += next.bytes;
                bundle.push(next);
            }
            let me2 = Arc::clone(&me);
            me.env.spawn(Box::pin(async move {
                me2.send(bundle).await;
                drop(slot);
            }));
        }
    }

    /// Send one request on its own stream, as without bundles.
    async fn send_alone(&self, b: Bundled) {
        let call = self.transport.call(&self.to, b.req);
        if let Ok(out) = env::timeout_at(&*self.env, b.deadline, call).await {
            let _ = b.reply.send(out);
        }
    }

    /// Send one bundle and hand each item its reply. Items whose caller gave up (past its
    /// deadline) are left out; the exchange is bounded by the latest remaining deadline.
    async fn send(self: Arc<Self>, bundle: Vec<Bundled>) {
        let mut bundle: Vec<Bundled> = bundle
            .into_iter()
            .filter(|b| !b.reply.is_closed())
            .collect();
        let Some(deadline) = bundle.iter().map(|b| b.deadline).max() else {
            return;
        };
        let knows = self
            .knows_bundles
            .load(std::sync::atomic::Ordering::Relaxed);
        if bundle.len() == 1 {
            let b = bundle.remove(0);
            self.send_alone(b).await;
            return;
        }
        if !knows {
            // What a peer without bundles gets: one request per stream, concurrently.
            for b in bundle {
                let me = Arc::clone(&self);
                self.env
                    .spawn(Box::pin(async move { me.send_alone(b).await }));
            }
            return;
        }
        let reqs: Vec<PeerRequest> = bundle.iter().map(|b| b.req.clone()).collect();
        let n = reqs.len();
        let out = env::timeout_at(
            &*self.env,
            deadline,
            self.transport.call(&self.to, PeerRequest::Bundle(reqs)),
        )
        .await;
        match out {
            // Past every caller's deadline: they have all given up.
            Err(_) => {}
            Ok(Ok(PeerResponse::Bundle(replies))) if replies.len() == n => {
                for (b, r) in bundle.into_iter().zip(replies) {
                    let _ = b.reply.send(Ok(r));
                }
            }
            Ok(Ok(PeerResponse::Error(PeerError::Invalid(m))))
                if m.contains("malformed request frame") =>
            {
                tracing::warn!(peer = %self.to, error = %m, "peer cannot decode replication bundles (an older build?); sending it one request per stream");
                self.knows_bundles
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                let rest = std::mem::take(&mut bundle);
                Box::pin(Arc::clone(&self).send(rest)).await;
            }
            // The whole bundle refused (overloaded, say): each item was.
            Ok(Ok(PeerResponse::Error(e))) => {
                for b in bundle {
                    let _ = b.reply.send(Ok(PeerResponse::Error(e.clone())));
                }
            }
            Ok(Ok(other)) => {
                let e = TransportError::Protocol(format!(
                    "{} answered a bundle of {n} with {:?}",
                    self.to,
                    match &other {
                        PeerResponse::Bundle(r) => format!("a bundle of {}", r.len()),
                        o => o.kind().to_string(),
                    }
                ));
                for b in bundle {
                    let _ = b.reply.send(Err(e.clone()));
                }
            }
            Ok(Err(e)) => {
                for b in bundle {
                    let _ = b.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn well_formed(resp: &PeerResponse) -> Result<(), crate::crdt::CrdtError> {
    use crate::crdt::check_well_formed;
    match resp {
        PeerResponse::Object(Some(o)) | PeerResponse::Written { object: o, .. } => {
            check_well_formed(&o.crdt)
        }
        PeerResponse::WrittenBatch { objects, .. } => {
            objects.iter().try_for_each(|o| check_well_formed(&o.crdt))
        }
        PeerResponse::Items { items, .. } => items
            .iter()
            .try_for_each(|(_, o)| check_well_formed(&o.crdt)),
        _ => Ok(()),
    }
}

/// One replica's answer to a fanned-out request.
#[derive(Debug)]
pub struct Reply<T> {
    /// The replica.
    pub node: String,
    /// Microseconds from the fan-out to this answer.
    pub us: u64,
    /// What it answered, or why it did not.
    pub result: Result<T, CallFailure>,
}

/// The answers to one fan-out, in the order they arrive.
pub struct Replies<T> {
    rx: mpsc::Receiver<Reply<T>>,
    /// Answers still to come: each target's task sends exactly one (unless it dies with
    /// its node), which is what tells [`Replies::gather`] when success became impossible.
    pending: usize,
    /// Targets not asked yet, best first, and how to ask one (a fan-out made by
    /// [`Peers::fan_out_some`]; `None` for a fixed one). The asker holds a sender of the
    /// channel, so it is dropped once nobody is left to ask (or on [`Replies::seal`]):
    /// from then on the channel closes when the last task has answered.
    more: Option<(VecDeque<String>, Asker)>,
    /// The fan-out's environment and deadline ([`Peers::fan_out_some`]): the timers of
    /// [`Replies::gather_with_retry`], which never waits past the deadline.
    clock: Option<(Arc<dyn Env>, Instant)>,
}

/// How long past a fan-out's deadline [`Replies::gather_with_retry`] still waits: every
/// task answers by the deadline (a timeout, if nothing else), and this lets those last
/// answers in so a failure names every replica; it only matters if a task died unanswered.
const LATE_ANSWERS: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts the task that asks one more target; it sends its one reply to the channel.
type Asker = Box<dyn Fn(String) + Send>;

/// Why [`Replies::gather_with_retry`] asked a target beyond the first ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    /// In place of one that failed (refused, unreachable, timed out): the replies still
    /// to come could no longer make up the quorum.
    Failed,
    /// Speculatively: the replies needed had not all come within the speculative delay.
    Slow,
}

/// A target asked beyond the first ones, why, and when.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The target.
    pub node: String,
    /// Why it was asked.
    pub why: Extra,
    /// When.
    pub at: Instant,
}

/// What [`Replies::gather`] collected.
#[derive(Debug)]
pub struct Gathered<U> {
    /// The answers that counted, by replica, in arrival order.
    pub ok: Vec<(String, U)>,
    /// Why each other replica that answered did not count.
    pub failures: Vec<ReplicaFailure>,
    /// Targets asked beyond the first ones ([`Replies::gather_with_retry`]), in order.
    pub asked: Vec<Asked>,
}

impl<T> Replies<T> {
    /// The next answer; `None` once every target asked answered (or its task ended) and
    /// none is left to ask (or the fan-out was sealed).
    pub async fn recv(&mut self) -> Option<Reply<T>> {
        if self.more.as_ref().is_some_and(|(q, _)| q.is_empty()) {
            // Nobody left to ask: let the channel close when the asked ones answered.
            self.more = None;
        }
        let reply = self.rx.recv().await;
        if reply.is_some() {
            self.pending = self.pending.saturating_sub(1);
        }
        reply
    }

    /// Ask no more targets: from now on [`Replies::recv`] returns `None` once the ones
    /// asked answered. Read repair seals a read's fan-out before it listens for the late
    /// replies.
    pub fn seal(&mut self) {
        self.more = None;
    }

    /// Targets not asked (yet).
    pub fn unasked(&self) -> Vec<String> {
        self.more
            .as_ref()
            .map(|(q, _)| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Answers still to come from the targets asked.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Ask the next target not asked yet; its name, or `None` if none is left.
    fn ask_next(&mut self) -> Option<String> {
        let (queue, ask) = self.more.as_mut()?;
        let node = queue.pop_front()?;
        ask(node.clone());
        self.pending += 1;
        Some(node)
    }

    /// Collect answers until `needed` of them counted, or until so many did not that the
    /// answers still to come can no longer make up `needed` (or none are left). `accept`
    /// sees each answer as it arrives (traces are written there, so their times are the
    /// arrival times) and says whether it counts: `Ok` with what to keep, or `Err` with
    /// why it does not. Answers that arrive later stay in `self`, for callers that keep
    /// listening (read repair).
    pub async fn gather<U>(
        &mut self,
        needed: usize,
        mut accept: impl FnMut(Reply<T>) -> Result<U, ReplicaFailure>,
    ) -> Gathered<U> {
        let mut got = Gathered {
            ok: Vec::new(),
            failures: Vec::new(),
            asked: Vec::new(),
        };
        while got.ok.len() < needed && got.ok.len() + self.pending >= needed {
            let Some(reply) = self.recv().await else {
                break;
            };
            let node = reply.node.clone();
            match accept(reply) {
                Ok(kept) => got.ok.push((node, kept)),
                Err(failure) => got.failures.push(failure),
            }
        }
        got
    }

    /// As [`Replies::gather`], for a fan-out that asked only some of its targets
    /// ([`Peers::fan_out_some`]), asking the others in their order only when needed:
    /// whenever the answers still to come can no longer make up `needed` (one failed), the
    /// next target is asked at once ([`Extra::Failed`]); and when `needed` answers have
    /// not all counted by `speculate_at`, one more target is asked, once
    /// ([`Extra::Slow`]) if the deadline has not passed by then. Never waits much past
    /// the deadline ([`LATE_ANSWERS`]), by which every task has answered. A fixed fan-out
    /// gathers as [`Replies::gather`] does.
    pub async fn gather_with_retry<U>(
        &mut self,
        needed: usize,
        speculate_at: Option<Instant>,
        mut accept: impl FnMut(Reply<T>) -> Result<U, ReplicaFailure>,
    ) -> Gathered<U> {
        let Some((env, deadline)) = self.clock.clone() else {
            return self.gather(needed, accept).await;
        };
        let mut got = Gathered {
            ok: Vec::new(),
            failures: Vec::new(),
            asked: Vec::new(),
        };
        let mut speculate_at = speculate_at;
        while got.ok.len() < needed {
            while got.ok.len() + self.pending < needed {
                let Some(node) = self.ask_next() else { break };
                let at = env.now();
                got.asked.push(Asked {
                    node,
                    why: Extra::Failed,
                    at,
                });
            }
            if got.ok.len() + self.pending < needed {
                break;
            }
            // Speculate only while there is someone to ask and time to hear them.
            let spec = speculate_at.filter(|s| {
                *s < deadline && self.more.as_ref().is_some_and(|(q, _)| !q.is_empty())
            });
            let wake = spec.unwrap_or(deadline + LATE_ANSWERS);
            let reply = match env::timeout_at(&*env, wake, self.recv()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(_) if spec.is_some() => {
                    speculate_at = None;
                    if let Some(node) = self.ask_next() {
                        let at = env.now();
                        got.asked.push(Asked {
                            node,
                            why: Extra::Slow,
                            at,
                        });
                    }
                    continue;
                }
                Err(_) => break,
            };
            let node = reply.node.clone();
            match accept(reply) {
                Ok(kept) => got.ok.push((node, kept)),
                Err(failure) => got.failures.push(failure),
            }
        }
        got
    }
}

/// This node's way to reach replicas, and what it last saw of each peer.
pub struct Peers {
    /// This node's name: calls to it go to `local`, without the network.
    name: String,
    /// Every member's name, this node included: every node of every live layout
    /// version, kept current by [`Peers::set_members`].
    members: std::sync::RwLock<Vec<String>>,
    /// How to reach the others.
    transport: Arc<dyn Transport>,
    /// This node's own replica side.
    local: Arc<ReplicaService>,
    /// Deadlines, latencies and the fan-out's tasks.
    env: Arc<dyn Env>,
    /// What this node believes about each peer; every call's outcome feeds it.
    detector: Arc<Detector>,
    /// Replication to each peer, bundled while earlier replication to it is in flight.
    bundles: Bundles,
}

impl Peers {
    /// Node `name`'s view of `members`, reached through `transport` (and `local` for
    /// itself), their health kept by `detector`.
    pub fn new(
        name: String,
        members: Vec<String>,
        transport: Arc<dyn Transport>,
        local: Arc<ReplicaService>,
        env: Arc<dyn Env>,
        detector: Arc<Detector>,
    ) -> Self {
        Peers {
            name,
            members: std::sync::RwLock::new(members),
            local,
            bundles: Bundles::new(
                Arc::clone(&transport),
                Arc::clone(&env),
                BundleLimits::default(),
            ),
            transport,
            env,
            detector,
        }
    }

    /// The same peers, bundling replication within `limits` (`limits.max_items` 1: never).
    pub fn with_bundles(mut self, limits: BundleLimits) -> Self {
        self.bundles = Bundles::new(Arc::clone(&self.transport), Arc::clone(&self.env), limits);
        self
    }

    /// The failure detector this node's calls feed.
    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    fn members_now(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the member list (a layout version came or went); the detector follows.
    pub fn set_members(&self, names: Vec<String>) {
        self.detector.set_members(&names);
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// Whether `name` is a member of the cluster.
    pub fn is_member(&self, name: &str) -> bool {
        self.members_now().iter().any(|m| m == name)
    }

    /// The failure detector's ping of `to`, bounded by `deadline`: an answer is recorded
    /// as evidence, a failure is not (the detector decides what it means, after its
    /// indirect probes).
    pub async fn probe(&self, to: &str, deadline: Instant) -> Result<(), CallFailure> {
        self.send::<Ping>(to, PeerRequest::Ping, deadline, false)
            .await
    }

    /// Every member but this node.
    pub fn others(&self) -> Vec<String> {
        self.members_now()
            .iter()
            .filter(|n| **n != self.name)
            .cloned()
            .collect()
    }

    /// Send `call` to replica `to` (locally without the network when `to` is this node),
    /// bounded by `deadline`.
    pub async fn call<C: PeerCall>(
        &self,
        to: &str,
        call: C,
        deadline: Instant,
    ) -> Result<C::Reply, CallFailure> {
        self.send::<C>(to, call.into_request(), deadline, true)
            .await
    }

    /// A lead write (`call`) on this node's own replica, overlapped with replication
    /// (`storage.overlap_lead_sync`): the reply as soon as the write is stored deferred,
    /// with the [`crate::replica::Durable`] that completes once it is on disk. Bounded by
    /// `deadline` and checked as [`Peers::call`] checks a reply.
    pub async fn call_local_overlapped<C: PeerCall>(
        &self,
        call: C,
        deadline: Instant,
    ) -> Result<(C::Reply, crate::replica::Durable), CallFailure> {
        let req = call.into_request();
        let kind = req.kind();
        let fut = self.local.handle_overlapped(req);
        match env::timeout_at(&*self.env, deadline, fut).await {
            Err(_) => Err(CallFailure::Timeout),
            Ok((PeerResponse::Error(e), _)) => Err(CallFailure::Refused(e)),
            Ok((resp, durable)) => match well_formed(&resp) {
                Ok(()) => C::reply(resp).map(|r| (r, durable)).map_err(|wrong| {
                    CallFailure::Transport(TransportError::Protocol(format!(
                        "{} answered request {kind:?} with reply {:?}",
                        self.name, wrong.got
                    )))
                }),
                Err(e) => Err(CallFailure::Refused(PeerError::Invalid(format!(
                    "{} sent {e}",
                    self.name
                )))),
            },
        }
    }

    /// The one call path: the deadline, the reply's checks and the peer's health (a
    /// failure is recorded only if `record_failure`).
    async fn send<C: PeerCall>(
        &self,
        to: &str,
        req: PeerRequest,
        deadline: Instant,
        record_failure: bool,
    ) -> Result<C::Reply, CallFailure> {
        let kind = req.kind();
        let epoch = self.detector.epoch();
        let fut = async {
            if to == self.name {
                Ok(self.local.handle(req).await)
            } else if let Some(class) = self.bundles.takes(&req) {
                self.bundles.call(to, class, req, deadline).await
            } else {
                self.transport.call(to, req).await
            }
        };
        let out = match env::timeout_at(&*self.env, deadline, fut).await {
            Err(_) => Err(CallFailure::Timeout),
            Ok(Err(e)) => Err(CallFailure::Transport(e)),
            Ok(Ok(PeerResponse::Error(e))) => Err(CallFailure::Refused(e)),
            Ok(Ok(resp)) => match well_formed(&resp) {
                Ok(()) => C::reply(resp).map_err(|wrong| {
                    CallFailure::Transport(TransportError::Protocol(format!(
                        "{to} answered request {kind:?} with reply {:?}",
                        wrong.got
                    )))
                }),
                Err(e) => Err(CallFailure::Refused(PeerError::Invalid(format!(
                    "{to} sent {e}"
                )))),
            },
        };
        if to != self.name {
            match &out {
                // A refusal is an answer: the peer is up.
                Ok(_) | Err(CallFailure::Refused(_)) => self.detector.heard_from(to),
                Err(failure) if record_failure => {
                    if matches!(failure, CallFailure::Timeout) {
                        // A deadline that fired late says this node stalled, not the peer.
                        self.detector.check_timer(deadline, self.env.now());
                    }
                    self.detector.failed(to, epoch);
                }
                Err(_) => {}
            }
        }
        out
    }

    /// Send `call` to every node in `targets` concurrently; the answers arrive in the
    /// returned [`Replies`] as they come. The tasks outlive the caller so late answers can
    /// still be used (read repair) or harmlessly dropped.
    pub fn fan_out<C: PeerCall>(
        self: &Arc<Self>,
        targets: &[String],
        call: C,
        deadline: Instant,
    ) -> Replies<C::Reply> {
        self.fan_out_with(targets, call, deadline, true)
    }

    /// As [`Peers::fan_out`], for background chatter (layout gossip): a failure is not
    /// evidence against the peer — the detector's own probes, with their indirect checks,
    /// decide that (a one-way cut must not convict a node through gossip).
    pub fn fan_out_quiet<C: PeerCall>(
        self: &Arc<Self>,
        targets: &[String],
        call: C,
        deadline: Instant,
    ) -> Replies<C::Reply> {
        self.fan_out_with(targets, call, deadline, false)
    }

    /// As [`Peers::call`], with a failure not recorded against the peer (see
    /// [`Peers::fan_out_quiet`]).
    pub async fn call_quiet<C: PeerCall>(
        &self,
        to: &str,
        call: C,
        deadline: Instant,
    ) -> Result<C::Reply, CallFailure> {
        self.send::<C>(to, call.into_request(), deadline, false)
            .await
    }

    fn fan_out_with<C: PeerCall>(
        self: &Arc<Self>,
        targets: &[String],
        call: C,
        deadline: Instant,
        record_failure: bool,
    ) -> Replies<C::Reply> {
        let (tx, rx) = mpsc::channel(targets.len().max(1));
        let start = self.env.now();
        let req = call.into_request();
        for node in targets {
            let (me, tx, node, req) = (Arc::clone(self), tx.clone(), node.clone(), req.clone());
            self.env.spawn(Box::pin(async move {
                let result = me.send::<C>(&node, req, deadline, record_failure).await;
                let us = me.env.now().saturating_duration_since(start).as_micros() as u64;
                let _ = tx.send(Reply { node, us, result }).await;
            }));
        }
        Replies {
            rx,
            pending: targets.len(),
            more: None,
            clock: None,
        }
    }

    /// Send `call` to the first `first` of `targets` (best first) concurrently, and keep
    /// the others to ask later, one at a time, in their order
    /// ([`Replies::gather_with_retry`]): a read asks R replicas, not N. Every task sends
    /// exactly one reply, by `deadline`; the channel holds one per target, so no task
    /// ever waits to send.
    pub fn fan_out_some<C: PeerCall>(
        self: &Arc<Self>,
        targets: &[String],
        first: usize,
        call: C,
        deadline: Instant,
    ) -> Replies<C::Reply> {
        let (tx, rx) = mpsc::channel(targets.len().max(1));
        let start = self.env.now();
        let req = call.into_request();
        let me = Arc::clone(self);
        let ask = move |node: String| {
            let (me2, tx, req) = (Arc::clone(&me), tx.clone(), req.clone());
            me.env.spawn(Box::pin(async move {
                let result = me2.send::<C>(&node, req, deadline, true).await;
                let us = me2.env.now().saturating_duration_since(start).as_micros() as u64;
                let _ = tx.try_send(Reply { node, us, result });
            }));
        };
        let first = first.min(targets.len());
        for node in &targets[..first] {
            ask(node.clone());
        }
        Replies {
            rx,
            pending: first,
            more: Some((targets[first..].iter().cloned().collect(), Box::new(ask))),
            clock: Some((Arc::clone(&self.env), deadline)),
        }
    }

    /// Record that `peer` was heard from outside a call (a request from it).
    pub fn heard_from(&self, peer: &str) {
        self.detector.heard_from(peer);
    }

    /// Whether to count on `peer` when routing, from the failure detector: `Some(true)`
    /// alive, `Some(false)` suspect or dead, `None` not probed or heard from yet.
    pub fn peer_up(&self, peer: &str) -> Option<bool> {
        self.detector.routable(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::metrics::Metrics;
    use crate::replica::{Replica, ReplicaOptions};
    use crate::storage::{MemoryStorage, Storage};
    use crate::transport::BoxFuture;

    /// A peer that answers every request with an acknowledgement.
    struct AcksEverything;

    impl Transport for AcksEverything {
        fn call(
            &self,
            _to: &str,
            _req: PeerRequest,
        ) -> BoxFuture<'_, Result<PeerResponse, TransportError>> {
            Box::pin(async { Ok(PeerResponse::Ack) })
        }
    }

    /// Node `n1` of `n1`, `n2`, reaching `n2` through `transport`.
    fn peers(transport: Arc<dyn Transport>) -> Arc<Peers> {
        peers_with(transport, BundleLimits::default())
    }

    /// As [`peers`], bundling replication within `limits`.
    fn peers_with(transport: Arc<dyn Transport>, limits: BundleLimits) -> Arc<Peers> {
        let env: Arc<dyn Env> = crate::env::TokioEnv::system();
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let metrics: Arc<Metrics> = Arc::default();
        let replica = Replica::new(
            "n1",
            Arc::clone(&storage),
            Arc::clone(&env),
            ReplicaOptions::default(),
        )
        .unwrap();
        let (catalog, _) = Catalog::open(storage, Arc::clone(&env), 2, vec![]).unwrap();
        let local = Arc::new(ReplicaService::new(
            "n1".into(),
            replica,
            Arc::new(catalog),
            Arc::clone(&env),
            metrics,
            1 << 20,
        ));
        let detector = Detector::new(
            "n1".into(),
            vec!["n1".into(), "n2".into()],
            Default::default(),
            Arc::clone(&env),
            Arc::default(),
            Default::default(),
        );
        Arc::new(
            Peers::new(
                "n1".into(),
                vec!["n1".into(), "n2".into()],
                transport,
                local,
                env,
                detector,
            )
            .with_bundles(limits),
        )
    }

    /// Goal: a reply of another kind than the request gets never reaches the caller: it
    /// is a protocol failure of that replica, naming both kinds, and a reply of the right
    /// kind (an acknowledgement to a ping) gets through; the local replica is called too.
    #[tokio::test]
    async fn wrong_reply_kind_is_a_protocol_failure_of_the_replica() {
        let peers = peers(Arc::new(AcksEverything));
        let deadline = peers.env.now() + std::time::Duration::from_secs(1);
        let read = Read {
            keyspace: KeyspaceDef::new("ks", 2, 1, 1),
            key: Key::parse("k"),
            own_copy: false,
        };
        match peers.call("n2", read.clone(), deadline).await {
            Err(CallFailure::Transport(TransportError::Protocol(m))) => {
                assert_eq!(m, r#"n2 answered request "read" with reply "ack""#)
            }
            other => panic!("a wrong reply kind got through: {other:?}"),
        }
        let f = peers.call("n2", read.clone(), deadline).await.unwrap_err();
        assert_eq!(f.to_failure("n2").kind, "unreachable");
        assert_eq!(peers.peer_up("n2"), Some(false));
        peers.call("n2", Ping, deadline).await.unwrap();
        assert_eq!(peers.peer_up("n2"), Some(true));
        assert_eq!(peers.call("n1", read, deadline).await.unwrap(), None);
    }

    /// Goal: a fan-out to some of its targets asks only those first, keeps `pending`
    /// exact as it grows, asks the next target at once when one fails, and once sealed
    /// its channel closes when the asked ones have answered (nothing waits forever).
    #[tokio::test]
    async fn a_partial_fan_out_grows_only_when_needed_and_then_closes() {
        struct RefusesN3;
        impl Transport for RefusesN3 {
            fn call(
                &self,
                to: &str,
                _req: PeerRequest,
            ) -> BoxFuture<'_, Result<PeerResponse, TransportError>> {
                let down = to == "n3";
                Box::pin(async move {
                    if down {
                        Err(TransportError::Unreachable("n3 is down".into()))
                    } else {
                        Ok(PeerResponse::Ack)
                    }
                })
            }
        }
        let peers = peers(Arc::new(RefusesN3));
        let deadline = peers.env.now() + std::time::Duration::from_secs(5);
        let targets: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let mut rx = peers.fan_out_some(&targets, 1, Ping, deadline);
        assert_eq!(rx.pending(), 1);
        let got = rx.gather_with_retry(1, None, accept_unit).await;
        assert_eq!(got.ok.len(), 1);
        assert!(got.asked.is_empty());
        assert_eq!(rx.unasked(), vec!["n2".to_string(), "n3".to_string()]);

        // n3 first: it fails, so n2 is asked at once.
        let order: Vec<String> = ["n3", "n2"].map(String::from).to_vec();
        let mut rx = peers.fan_out_some(&order, 1, Ping, deadline);
        let got = rx.gather_with_retry(1, None, accept_unit).await;
        assert_eq!(
            got.ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["n2"]
        );
        assert_eq!(got.failures.len(), 1);
        assert_eq!(got.asked.len(), 1);
        assert_eq!(
            (got.asked[0].node.as_str(), &got.asked[0].why),
            ("n2", &Extra::Failed)
        );
        assert_eq!(rx.pending(), 0);

        // Sealed with one answer outstanding: it arrives, then the channel closes.
        let mut rx = peers.fan_out_some(&targets, 2, Ping, deadline);
        let got = rx.gather_with_retry(1, None, accept_unit).await;
        assert_eq!(got.ok.len(), 1);
        rx.seal();
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_none());
    }

    /// A replication of key `k` in keyspace `ks`.
    fn replicate(k: &str) -> Replicate {
        let mut object = Object::default();
        object
            .apply_write(
                "n1@1",
                &VersionVector::default(),
                Some(k.as_bytes().to_vec()),
                1,
            )
            .unwrap();
        Replicate {
            keyspace: KeyspaceDef::new("ks", 2, 1, 1),
            key: Key::parse(k),
            object,
        }
    }

    /// A peer that answers after the test lets it (one permit per call) and records the
    /// shape of each request it got: 1 for a lone replication, n for a bundle of n.
    struct Gated {
        gate: tokio::sync::Semaphore,
        shapes: std::sync::Mutex<Vec<usize>>,
        knows_bundles: bool,
    }

    impl Transport for Gated {
        fn call(
            &self,
            _to: &str,
            req: PeerRequest,
        ) -> BoxFuture<'_, Result<PeerResponse, TransportError>> {
            Box::pin(async move {
                let shape = match &req {
                    PeerRequest::Bundle(items) => items.len(),
                    _ => 1,
                };
                self.shapes.lock().unwrap().push(shape);
                if let PeerRequest::Read { .. } = &req {
                    return Ok(PeerResponse::Object(None));
                }
                if let PeerRequest::Bundle(items) = &req {
                    if !self.knows_bundles {
                        return Ok(PeerResponse::Error(PeerError::Invalid(
                            "malformed request frame: unknown variant `Bundle`".into(),
                        )));
                    }
                    self.gate.acquire().await.unwrap().forget();
                    return Ok(PeerResponse::Bundle(vec![PeerResponse::Ack; items.len()]));
                }
                self.gate.acquire().await.unwrap().forget();
                Ok(PeerResponse::Ack)
            })
        }
    }

    /// Node n1 reaching n2 through a [`Gated`] transport, one bundle in flight at a time.
    fn gated_peers(knows_bundles: bool) -> (Arc<Gated>, Arc<Peers>) {
        let gated = Arc::new(Gated {
            gate: tokio::sync::Semaphore::new(0),
            shapes: Default::default(),
            knows_bundles,
        });
        let limits = BundleLimits {
            max_items: 64,
            max_bytes: 1 << 20,
            in_flight: 1,
        };
        let peers = peers_with(Arc::clone(&gated) as Arc<dyn Transport>, limits);
        (gated, peers)
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// Goal: replication to a peer goes alone while nothing to it is in flight, and the
    /// requests that arrive while a bundle travels go together in the next one (one stream
    /// for many), each caller getting its own answer; a read meanwhile is not held up.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // test tasks on the test's own runtime
    async fn replication_is_bundled_only_while_earlier_replication_travels() {
        let (gated, peers) = gated_peers(true);
        let deadline = peers.env.now() + std::time::Duration::from_secs(10);
        let call = |k: String| {
            let p = Arc::clone(&peers);
            tokio::spawn(async move { p.call("n2", replicate(&k), deadline).await })
        };
        let first = call("k0".into());
        settle().await;
        assert_eq!(
            *gated.shapes.lock().unwrap(),
            [1],
            "an idle peer gets the request alone"
        );
        let rest: Vec<_> = (1..10).map(|i| call(format!("k{i}"))).collect();
        settle().await;
        assert_eq!(
            *gated.shapes.lock().unwrap(),
            [1],
            "the others wait for the slot"
        );
        let read = Read {
            keyspace: KeyspaceDef::new("ks", 2, 1, 1),
            key: Key::parse("k0"),
            own_copy: false,
        };
        assert_eq!(peers.call("n2", read, deadline).await.unwrap(), None);
        assert_eq!(
            *gated.shapes.lock().unwrap(),
            [1, 1],
            "a read has its own queue: it does not wait behind replication"
        );
        gated.gate.add_permits(2);
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        assert_eq!(
            *gated.shapes.lock().unwrap(),
            [1, 1, 9],
            "the nine went as one bundle"
        );
        gated.gate.add_permits(1);
        peers.call("n2", replicate("k10"), deadline).await.unwrap();
        assert_eq!(*gated.shapes.lock().unwrap(), [1, 1, 9, 1]);
    }

    /// Goal: a peer that cannot decode a bundle (an older build, mid rolling upgrade) gets
    /// the bundle's requests one per stream, then every later one too; nothing is lost.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // test tasks on the test's own runtime
    async fn a_peer_without_bundles_gets_one_request_per_stream() {
        let (gated, peers) = gated_peers(false);
        let deadline = peers.env.now() + std::time::Duration::from_secs(10);
        let call = |k: String| {
            let p = Arc::clone(&peers);
            tokio::spawn(async move { p.call("n2", replicate(&k), deadline).await })
        };
        let mut calls = vec![call("k0".into())];
        settle().await;
        calls.extend((1..4).map(|i| call(format!("k{i}"))));
        settle().await;
        gated.gate.add_permits(100);
        for c in calls {
            c.await.unwrap().unwrap();
        }
        peers.call("n2", replicate("k4"), deadline).await.unwrap();
        let shapes = gated.shapes.lock().unwrap().clone();
        assert_eq!(
            shapes,
            [1, 3, 1, 1, 1, 1],
            "one refused bundle of 3, then singles"
        );
    }

    /// Goal: a replica serves a bundle item by item: replications of one keyspace are
    /// stored (in one batch), a read sees them, an item of another kind is refused alone.
    #[tokio::test]
    async fn a_bundle_refuses_only_its_bad_items() {
        let peers = peers(Arc::new(AcksEverything));
        let read_a = Read {
            keyspace: KeyspaceDef::new("ks", 2, 1, 1),
            key: Key::parse("a"),
            own_copy: false,
        };
        let items = vec![
            replicate("a").into_request(),
            PeerRequest::Ping,
            replicate("b").into_request(),
            read_a.into_request(),
        ];
        let PeerResponse::Bundle(replies) = peers.local.handle(PeerRequest::Bundle(items)).await
        else {
            panic!("a bundle is answered by a bundle")
        };
        assert_eq!(replies[0], PeerResponse::Ack);
        assert!(
            matches!(&replies[1], PeerResponse::Error(PeerError::Invalid(m)) if m.contains("only replicate and read requests")),
            "{:?}",
            replies[1]
        );
        assert_eq!(replies[2], PeerResponse::Ack);
        let PeerResponse::Object(Some(a)) = &replies[3] else {
            panic!(
                "the read is answered with the merged object: {:?}",
                replies[3]
            )
        };
        assert_eq!(
            a.live_values().next().unwrap().value.as_deref(),
            Some(&b"a"[..])
        );
        let deadline = peers.env.now() + std::time::Duration::from_secs(1);
        for k in ["a", "b"] {
            let read = Read {
                keyspace: KeyspaceDef::new("ks", 2, 1, 1),
                key: Key::parse(k),
                own_copy: false,
            };
            let got = peers.call("n1", read, deadline).await.unwrap().unwrap();
            assert_eq!(
                got.live_values().next().unwrap().value.as_deref(),
                Some(k.as_bytes())
            );
        }
    }

    fn accept_unit(r: Reply<()>) -> Result<(), ReplicaFailure> {
        r.result.map_err(|f| f.to_failure(&r.node))
    }

    /// Replies from a channel the test fills, `expected` in all.
    fn replies(expected: usize) -> (mpsc::Sender<Reply<u8>>, Replies<u8>) {
        let (tx, rx) = mpsc::channel(expected.max(1));
        (
            tx,
            Replies {
                rx,
                pending: expected,
                more: None,
                clock: None,
            },
        )
    }

    fn ok(node: &str, v: u8) -> Reply<u8> {
        Reply {
            node: node.into(),
            us: 0,
            result: Ok(v),
        }
    }

    fn failed(node: &str) -> Reply<u8> {
        Reply {
            node: node.into(),
            us: 0,
            result: Err(CallFailure::Timeout),
        }
    }

    fn accept(r: Reply<u8>) -> Result<u8, ReplicaFailure> {
        r.result.map_err(|f| f.to_failure(&r.node))
    }

    /// Goal: `gather` stops at `needed` successes, leaving later replies in the receiver;
    /// it stops as soon as the replies still to come cannot make up `needed` (without
    /// waiting for them), recording why each failed; and `needed = 0` waits for nothing.
    #[tokio::test]
    async fn gather_stops_at_quorum_or_when_it_is_impossible() {
        let (tx, mut rx) = replies(3);
        for r in [ok("a", 1), failed("b"), ok("c", 3)] {
            tx.send(r).await.unwrap();
        }
        let got = rx.gather(2, accept).await;
        assert_eq!(got.ok, vec![("a".to_string(), 1), ("c".to_string(), 3)]);
        assert_eq!(got.failures.len(), 1);
        assert_eq!(got.failures[0].node, "b");

        let (tx, mut rx) = replies(3);
        for r in [ok("a", 1), ok("b", 2)] {
            tx.send(r).await.unwrap();
        }
        let got = rx.gather(1, accept).await;
        assert_eq!(got.ok.len(), 1);
        assert_eq!(rx.recv().await.map(|r| r.node), Some("b".to_string()));

        // 2 of 3 needed, 2 failed: the third reply never comes, and is not waited for.
        let (tx, mut rx) = replies(3);
        for r in [failed("a"), failed("b")] {
            tx.send(r).await.unwrap();
        }
        let got = rx.gather(2, accept).await;
        assert!(got.ok.is_empty());
        let nodes: Vec<&str> = got.failures.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(nodes, vec!["a", "b"]);
        assert!(got.failures.iter().all(|f| f.kind == "timeout"));

        let (_tx, mut rx) = replies(2);
        let got = rx.gather(0, accept).await;
        assert!(got.ok.is_empty() && got.failures.is_empty());
    }
}
