//! Wire messages and their framing.
//!
//! Every request and reply is one frame: `b"QK"`, a big-endian `u16` protocol version,
//! then a MessagePack (rmp-serde, named fields so optional fields can be added without a
//! version bump) body. The version sits outside the body so a peer speaking another
//! version is told so, instead of seeing a confusing decode error. Decoding checks the
//! size limit first and never panics on any input (property-tested below).
//!
//! Client and peer messages share one QUIC endpoint; `Message::Peer` is only accepted
//! from connections that presented a *node* certificate. A connection with a client or
//! admin certificate is decoded with [`decode_for_role`] into a type that has no peer
//! variant, so a peer body from such a connection is refused at its tag, before any of
//! it is deserialized.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use serde::{Deserialize, Serialize};

use crate::causality::VersionVector;
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::object::Object;
use crate::tls::Role;

/// The protocol version this build speaks.
/// Version 2: contexts are sealed (see `context`), actors are node incarnations, and a
/// lead's write replies carry the dots it issued.
pub const PROTOCOL_VERSION: u16 = 2;
/// First bytes of every frame.
pub const MAGIC: [u8; 2] = *b"QK";
/// ALPN token for QUIC.
pub const ALPN: &[u8] = b"quorumkv/1";

/// Errors decoding a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// Frame larger than the limit; refused before decoding.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// Not a quorumkv frame.
    #[error("not a quorumkv frame (bad magic or shorter than the header)")]
    BadMagic,
    /// A frame from a different protocol version.
    #[error("protocol version {got} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version the sender used.
        got: u16,
    },
    /// The body is not a valid message.
    #[error("malformed message body: {0}")]
    Body(String),
    /// A peer message on a connection whose certificate is not a node's.
    #[error("peer messages are accepted only from node certificates; this connection presented a {role} certificate")]
    PeerFromClient {
        /// The connection's role.
        role: Role,
    },
}

/// Encode a message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    // Serialising our own plain data types to a Vec cannot fail.
    if let Err(e) = rmp_serde::encode::write_named(&mut out, msg) {
        tracing::error!(error = %e, "message encoding failed");
    }
    out
}

/// Decode a frame, checking size, magic and version.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], max: usize) -> Result<T, ProtoError> {
    if bytes.len() > max {
        return Err(ProtoError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    if bytes.len() < 4 || bytes[..2] != MAGIC {
        return Err(ProtoError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[2], bytes[3]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtoError::Version { got: version });
    }
    rmp_serde::from_slice(&bytes[4..]).map_err(|e| ProtoError::Body(e.to_string()))
}

/// Decode a request frame from a connection whose certificate has `role`: a node may send
/// client and peer messages; a client or admin only client messages, and a peer message
/// from one is refused as soon as its tag is read ([`ProtoError::PeerFromClient`]).
pub fn decode_for_role(bytes: &[u8], max: usize, role: Role) -> Result<Message, ProtoError> {
    match role {
        Role::Node => decode::<Message>(bytes, max),
        Role::Client | Role::Admin => match decode::<ClientFrame>(bytes, max)? {
            ClientFrame::Client(req) => Ok(Message::Client(req)),
            ClientFrame::PeerRefused => Err(ProtoError::PeerFromClient { role }),
        },
    }
}

/// [`Message`] as a client connection may send it. Its deserializer reads the variant tag
/// and, for `Peer`, stops there: the peer body is never deserialized.
enum ClientFrame {
    Client(ClientRequest),
    PeerRefused,
}

impl<'de> Deserialize<'de> for ClientFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The tags of [`Message`], by name or index as the encoding carries them.
        #[derive(Deserialize)]
        enum Tag {
            Client,
            Peer,
        }
        struct FrameVisitor;
        impl<'de> serde::de::Visitor<'de> for FrameVisitor {
            type Value = ClientFrame;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a client message")
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(
                self,
                data: A,
            ) -> Result<ClientFrame, A::Error> {
                use serde::de::VariantAccess;
                match data.variant::<Tag>()? {
                    (Tag::Client, body) => body.newtype_variant().map(ClientFrame::Client),
                    // Left unread on purpose.
                    (Tag::Peer, _body) => Ok(ClientFrame::PeerRefused),
                }
            }
        }
        d.deserialize_enum("Message", &["Client", "Peer"], FrameVisitor)
    }
}

/// Anything sent on a fresh stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    /// From a client (or the CLI, shell, bench).
    Client(ClientRequest),
    /// From another node; `from` is the sender's node name.
    Peer {
        /// Sender node name.
        from: String,
        /// The request.
        req: PeerRequest,
    },
}

/// The reply on the same stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Reply to a client request.
    Client(ClientResponse),
    /// Reply to a peer request.
    Peer(PeerResponse),
}

/// A read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRequest {
    /// Keyspace name.
    pub keyspace: String,
    /// The key.
    pub key: Key,
    /// Read quorum override; `None` uses the keyspace's R.
    pub r: Option<u8>,
    /// Return a timeline of what the coordinator did.
    pub trace: bool,
    /// Primary read quorum: fail unless this many of the key's primary replicas answered.
    /// `None` (or 0): no such requirement.
    #[serde(default)]
    pub pr: Option<u8>,
}

/// A write (or, with `value = None`, a delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// Keyspace name.
    pub keyspace: String,
    /// The key.
    pub key: Key,
    /// The value; `None` deletes (writes a tombstone).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The causal context from a read ("" = blind write: becomes a sibling of whatever
    /// exists).
    pub context: String,
    /// Write quorum override; `None` uses the keyspace's W.
    pub w: Option<u8>,
    /// Return a timeline of what the coordinator did.
    pub trace: bool,
    /// Conditional write: refuse with a conflict if the lead replica's copy has changed
    /// since `context` was read (optimistic concurrency; not linearizable).
    #[serde(default)]
    pub if_context: bool,
    /// Client timestamp; required in `lww-client` keyspaces, refused elsewhere.
    #[serde(default)]
    pub timestamp: Option<u64>,
    /// Client actor; required in `lww-actor` keyspaces, refused elsewhere.
    #[serde(default)]
    pub actor: Option<String>,
    /// Primary write quorum: fail unless this many of the key's primary replicas (not
    /// stand-ins) hold the write. `None` (or 0): no such requirement.
    #[serde(default)]
    pub pw: Option<u8>,
}

/// A range read of one partition, in sort-key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRequest {
    /// Keyspace name.
    pub keyspace: String,
    /// The partition key.
    #[serde(with = "serde_bytes")]
    pub partition: Vec<u8>,
    /// First sort key (inclusive); empty = from the start of the partition.
    #[serde(with = "serde_bytes")]
    pub from: Vec<u8>,
    /// End sort key (exclusive); `None` = to the end of the partition.
    pub to: Option<serde_bytes::ByteBuf>,
    /// Most stored items to return (deleted items count too); capped by the node.
    pub limit: u32,
    /// Read quorum override.
    pub r: Option<u8>,
    /// Return a timeline of what the coordinator did.
    pub trace: bool,
}

/// One item of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanItem {
    /// The item's sort key.
    #[serde(with = "serde_bytes")]
    pub sort: Vec<u8>,
    /// Its concurrent values.
    pub values: Vec<SiblingView>,
    /// Its causal context.
    pub context: String,
    /// Its value in a CRDT keyspace (`values` is then empty).
    #[serde(default)]
    pub crdt: Option<CrdtValue>,
}

/// What a scan returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResponse {
    /// Live items in sort order (deleted items are left out).
    pub items: Vec<ScanItem>,
    /// Where the next page starts (pass as `from`), if there may be more.
    pub next: Option<serde_bytes::ByteBuf>,
    /// Coordinator timeline, when asked for.
    pub trace: Vec<TraceEvent>,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The key; every item of a batch must share its partition.
    pub key: Key,
    /// The value, or `None` to delete.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Causal context from a read of this key ("" = blind).
    pub context: String,
}

/// Several writes to one partition, applied atomically on each replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// Keyspace name.
    pub keyspace: String,
    /// The writes.
    pub items: Vec<BatchItem>,
    /// Write quorum override.
    pub w: Option<u8>,
    /// Return a timeline of what the coordinator did.
    pub trace: bool,
}

/// What a batch returns: one new version id per item, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// `actor:counter` of each item's new version.
    pub dots: Vec<String>,
    /// Coordinator timeline, when asked for.
    pub trace: Vec<TraceEvent>,
}

pub use crate::crdt::{CrdtOp, CrdtValue, FieldOp, FieldValue};

/// An operation on a key of a CRDT keyspace (counter, set, map, register).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// Keyspace name.
    pub keyspace: String,
    /// The key.
    pub key: Key,
    /// The operation.
    pub op: CrdtOp,
    /// The context of a read of this key: what a set/map remove or a register write may
    /// remove ("" = nothing observed).
    pub context: String,
    /// Write quorum override; `None` uses the keyspace's W.
    pub w: Option<u8>,
    /// Return a timeline of what the coordinator did.
    pub trace: bool,
}

/// What an update returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateResponse {
    /// The context of the state just stored at the lead (covers this operation).
    pub context: String,
    /// Coordinator timeline, when asked for.
    pub trace: Vec<TraceEvent>,
}

/// Requests a client may send to any node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key.
    Get(GetRequest),
    /// The contacted node's own stored copy of a key: no coordination, no other replica,
    /// no read repair (`quorumkv get --replica NODE`). `r` and `trace` are ignored.
    ReplicaGet(GetRequest),
    /// Write or delete a key.
    Put(PutRequest),
    /// Read a range of one partition.
    Scan(ScanRequest),
    /// Write several items of one partition atomically.
    Batch(BatchRequest),
    /// Apply an operation to a key of a CRDT keyspace.
    Update(UpdateRequest),
    /// Create a keyspace on every node (admin certificates only).
    CreateKeyspace(KeyspaceDef),
    /// Drop a keyspace and delete its data on every node (admin certificates only).
    DropKeyspace(String),
    /// List the keyspaces the contacted node knows.
    ListKeyspaces,
    /// The preference list for a key.
    Replicas {
        /// Keyspace name.
        keyspace: String,
        /// The key.
        key: Key,
    },
    /// Nodes, their addresses, health as this node sees it, and ring ownership.
    Status,
    /// The contacted node's latency histograms (like `nodetool proxyhistograms`).
    Stats,
    /// Liveness check.
    Ping,
    /// The contacted node's anti-entropy state, per range (`quorumkv aae status`).
    AaeStatus,
    /// Move the contacted node's wall clock `ms` milliseconds away from the system clock
    /// (fault injection for the harness's `clock-skew` nemesis; admin certificates only,
    /// refused unless the node's `faults.allow_clock_offset` is set). `0` undoes it.
    SetClockOffset {
        /// Offset from the system clock, milliseconds (negative: behind).
        ms: i64,
    },
    /// The layouts as the contacted node holds them: live versions, who acknowledged and
    /// synced what, transfers, and the changes staged on it (`quorumkv cluster status`).
    ClusterStatus,
    /// Stage a layout change on the contacted node (`cluster join|leave|remove`; admin).
    ClusterStage(crate::membership::layout::Change),
    /// What the staged changes would do (`cluster plan`).
    ClusterPlan,
    /// Commit the staged changes as the next layout version (`cluster commit`; admin).
    ClusterCommit,
    /// Drop the staged changes (`cluster abort`; admin).
    ClusterAbort,
}

/// The layouts as one node holds them (`quorumkv cluster status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// The node that answered.
    pub node: String,
    /// Its layout history.
    pub history: crate::membership::layout::History,
    /// Changes staged on it.
    pub staged: crate::membership::layout::Staged,
    /// Its transfers.
    pub transfer: crate::transfer::TransferStatus,
}

/// One sibling as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingView {
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The event that wrote it, `actor:counter` (a short, stable sibling id).
    pub dot: String,
    /// Wall-clock milliseconds at the replica that issued it.
    pub written_at_ms: u64,
}

/// What a read returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// Every concurrent value (empty if the key does not exist or was deleted).
    pub values: Vec<SiblingView>,
    /// Opaque causal context; send it with the next write to replace what was read.
    pub context: String,
    /// Deletes concurrent with the values (or the delete, if `values` is empty).
    pub tombstones: usize,
    /// The value of a CRDT keyspace's key (`None` in other keyspaces); `context` is then
    /// the CRDT's read context.
    #[serde(default)]
    pub crdt: Option<CrdtValue>,
    /// Coordinator timeline, when asked for.
    pub trace: Vec<TraceEvent>,
}

/// What a write returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The context of the object just written (covers the new version).
    pub context: String,
    /// The new version's id, `actor:counter`.
    pub dot: String,
    /// Coordinator timeline, when asked for.
    pub trace: Vec<TraceEvent>,
}

/// One step of a traced request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Microseconds since the coordinator received the request.
    pub elapsed_us: u64,
    /// The node the step is about.
    pub node: String,
    /// What happened.
    pub activity: String,
}

/// A node as seen by the contacted node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// QUIC address.
    pub addr: String,
    /// `up`, `down` or `unknown` (never contacted yet), from the last exchange.
    pub state: String,
    /// Share of the ring for which it is the primary replica (0..1).
    pub ownership: f64,
    /// Hints the answering node holds for this node (hinted handoff not yet done).
    #[serde(default)]
    pub hints_pending: u64,
    /// Their bytes.
    #[serde(default)]
    pub hints_pending_bytes: u64,
    /// On the answering node's own row: hints it handed back so far (since it started).
    #[serde(default)]
    pub hints_replayed: u64,
    /// On the answering node's own row: hints it dropped so far (window passed, target
    /// full, refused by the target).
    #[serde(default)]
    pub hints_dropped: u64,
    /// On the answering node's own row: tombstones it removed since it started
    /// (`None`: reaping is off there, `tombstones.enabled = false`).
    #[serde(default)]
    pub tombstones_reaped: Option<u64>,
    /// On the answering node's own row: old-enough tombstones its reaper kept since it
    /// started (a member unreachable, a hint outstanding, replicas disagreeing).
    #[serde(default)]
    pub tombstones_kept: u64,
    /// On the answering node's own row: why the last one was kept.
    #[serde(default)]
    pub tombstones_last_kept: Option<String>,
    /// The answering node's failure detector's view of this node: `alive`, `suspect`,
    /// `dead`, or `unknown` (not probed yet); its own row is always `alive`. Empty from a
    /// node older than the detector.
    #[serde(default)]
    pub detector: String,
    /// How long, milliseconds, the node has been in that state (0 for the answering node
    /// itself and for `unknown`).
    #[serde(default)]
    pub detector_for_ms: u64,
}

/// One latency histogram's summary, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// `coordinator` or `replica`.
    pub kind: String,
    /// Operation or request kind.
    pub op: String,
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Why one replica did not help reach a quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFailure {
    /// The replica.
    pub node: String,
    /// `timeout`, `unreachable` or `error`.
    pub kind: String,
    /// Details.
    pub detail: String,
}

/// Error classes a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Fewer than R/W replicas answered in time.
    QuorumNotReached {
        /// Replies needed.
        needed: u8,
        /// Replies received.
        got: u8,
        /// What happened to the others.
        failures: Vec<ReplicaFailure>,
    },
    /// No node knows the keyspace.
    UnknownKeyspace,
    /// The request is malformed or breaks a limit.
    InvalidRequest,
    /// The key has too many siblings; read it and write with its context.
    SiblingLimit,
    /// A conditional write found the key changed since its context was read.
    Conflict,
    /// The client's certificate lacks the permission (the message names the client, the
    /// keyspace and the permission).
    Forbidden,
    /// The node is shutting down.
    Unavailable,
    /// The node's in-flight request budget (`limits.max_inflight_bytes`,
    /// `limits.max_inflight_requests`) is spent; nothing was done. Retry later, or on
    /// another node.
    Overloaded,
    /// A bug or storage failure on the node.
    Internal,
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Class.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
}

/// Replies to client requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// For `Get`.
    Get(GetResponse),
    /// For `ReplicaGet`: one node's own copy.
    ReplicaCopy {
        /// The node that answered from its storage.
        node: String,
        /// Whether that node is in the key's preference list (a node that is not holds
        /// nothing for the key, unless a layout change left a copy behind).
        owner: bool,
        /// Its copy, as a read shows it (siblings with their ids, tombstones, CRDT value;
        /// the context is its version vector, sealed).
        copy: GetResponse,
    },
    /// For `Put`.
    Put(PutResponse),
    /// For `Scan`.
    Scan(ScanResponse),
    /// For `Batch`.
    Batch(BatchResponse),
    /// For `Update`.
    Update(UpdateResponse),
    /// For `CreateKeyspace`: which nodes stored the definition now (the others learn it
    /// from the first request that names it).
    KeyspaceCreated {
        /// The definition.
        def: KeyspaceDef,
        /// Nodes that acknowledged.
        acked: Vec<String>,
        /// Nodes that did not answer.
        missing: Vec<String>,
    },
    /// For `DropKeyspace`: which nodes dropped it now (the others refuse requests that
    /// carry the dropped definition once they learn of the drop; see docs/SECURITY.md).
    KeyspaceDropped {
        /// The keyspace.
        name: String,
        /// Nodes that acknowledged.
        acked: Vec<String>,
        /// Nodes that did not answer.
        missing: Vec<String>,
    },
    /// For `ListKeyspaces`.
    Keyspaces(Vec<KeyspaceDef>),
    /// For `Replicas`.
    Replicas(Vec<String>),
    /// For `Status`.
    Status {
        /// The node that answered.
        node: String,
        /// Every member.
        nodes: Vec<NodeStatus>,
    },
    /// For `Ping`: the node's name.
    Pong(String),
    /// For `ClusterStatus`.
    Cluster(Box<ClusterReport>),
    /// For `ClusterStage` and `ClusterAbort`: the changes staged now (after an abort: the
    /// ones dropped).
    Staged(crate::membership::layout::Staged),
    /// For `ClusterPlan`.
    Plan(Box<crate::membership::layout::Plan>),
    /// For `ClusterCommit`: the version that took effect.
    Committed(Box<crate::membership::layout::Layout>),
    /// For `AaeStatus`.
    AaeStatus {
        /// The node that answered.
        node: String,
        /// Whether anti-entropy is on there (`anti_entropy.enabled`).
        enabled: bool,
        /// One row per range the node replicates, in keyspace and range order.
        ranges: Vec<AaeRangeStatus>,
    },
    /// For `SetClockOffset`: the node and its clock's offset now.
    ClockOffset {
        /// The node that answered.
        node: String,
        /// Its offset from the system clock, milliseconds.
        ms: i64,
    },
    /// For `Stats`.
    Stats {
        /// The node that answered.
        node: String,
        /// One row per histogram with data.
        latencies: Vec<LatencyStats>,
        /// Read repairs sent so far.
        read_repairs: u64,
    },
    /// Any failure.
    Error(ErrorResponse),
}

/// Requests between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Be the lead replica for this CRDT operation: apply it and return the object.
    Update {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The key.
        key: Key,
        /// The operation.
        op: CrdtOp,
        /// What the client had read.
        context: VersionVector,
    },
    /// Return the replica's object for a key.
    Read {
        /// Keyspace (carried so a replica that missed its creation learns it).
        keyspace: KeyspaceDef,
        /// The key.
        key: Key,
        /// The replica's own copy whether it owns the key or not (`get --replica`);
        /// otherwise a replica that owns the key in no live layout refuses (`NotOwner`).
        #[serde(default)]
        own_copy: bool,
    },
    /// Be the replica that issues the dot for this write; apply it and return the object.
    Write {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The key.
        key: Key,
        /// What the client had read.
        context: VersionVector,
        /// New value, or `None` for a tombstone.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        /// Refuse if this replica has seen events `context` does not cover.
        #[serde(default)]
        if_context: bool,
        /// Client timestamp (`lww-client`).
        #[serde(default)]
        client_ts: Option<u64>,
        /// Client actor (`lww-actor`).
        #[serde(default)]
        actor: Option<String>,
    },
    /// Be the lead for a batch of writes to one partition; apply them in one storage batch.
    WriteBatch {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The shared partition key.
        #[serde(with = "serde_bytes")]
        partition: Vec<u8>,
        /// (sort key, context, value) per item.
        items: Vec<(
            serde_bytes::ByteBuf,
            VersionVector,
            Option<serde_bytes::ByteBuf>,
        )>,
    },
    /// Merge these objects of one partition in one storage batch.
    ReplicateBatch {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The shared partition key.
        #[serde(with = "serde_bytes")]
        partition: Vec<u8>,
        /// (sort key, object) per item.
        items: Vec<(serde_bytes::ByteBuf, Object)>,
    },
    /// Return stored items of one partition in sort order.
    Scan {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The partition key.
        #[serde(with = "serde_bytes")]
        partition: Vec<u8>,
        /// First sort key, inclusive.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// End sort key, exclusive.
        to: Option<serde_bytes::ByteBuf>,
        /// Most items.
        limit: u32,
    },
    /// Merge this object into the replica's copy (replication and read repair).
    Replicate {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The key.
        key: Key,
        /// The object to merge.
        object: Object,
    },
    /// Store a keyspace definition.
    AnnounceKeyspace(KeyspaceDef),
    /// Return a keyspace definition if known.
    LookupKeyspace(String),
    /// Forget a keyspace, delete its data and refuse its definition from now on.
    DropKeyspace {
        /// Keyspace name.
        name: String,
        /// The generation the coordinator dropped (see `KeyspaceDef::generation`).
        generation: u64,
    },
    /// Liveness check.
    Ping,
    /// Anti-entropy: the replica's branch hashes of one tree.
    AaeBranches {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The range (see `aae::tree::range_id`).
        range: u64,
    },
    /// Anti-entropy: the replica's non-zero segment hashes under some branches.
    AaeSegments {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The range.
        range: u64,
        /// Branch numbers (`0..aae::tree::BRANCHES`).
        branches: Vec<u32>,
    },
    /// Anti-entropy: the keys of some segments, with their hashes and version vectors.
    AaeKeys {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The range.
        range: u64,
        /// Segment numbers (`0..aae::tree::SEGMENTS`).
        segments: Vec<u32>,
        /// Most keys wanted (the replica also caps it: `aae::MAX_KEYS_PER_EXCHANGE`).
        limit: u32,
    },
    /// Hold `object` for `owner`, a primary replica that could not take it (sloppy
    /// quorum); the stand-in stores it durably and hands it back later (`crate::hints`).
    StoreHint {
        /// The primary replica the object is meant for.
        owner: String,
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The key.
        key: Key,
        /// The already-versioned object (merged on replay, never re-coordinated); boxed
        /// to keep the request enum small.
        object: Box<Object>,
        /// The other items of an atomic batch (same partition as `key`): held in the same
        /// record and replayed together as one `ReplicateBatch`, so the owner stores the
        /// batch whole. Empty for a single key.
        #[serde(default)]
        more: Vec<(serde_bytes::ByteBuf, Object)>,
    },
    /// Tombstone reaping, step 1: for each key, this replica's tombstone (if its copy
    /// holds only tombstones) and how many hints this node holds for the key.
    TombstoneCheck {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The keys (at most `tombstones::MAX_KEYS_PER_ROUND`).
        keys: Vec<Key>,
    },
    /// Tombstone reaping, step 2: remove each key whose copy is still exactly the
    /// tombstone with this hash (`aae::tree::key_hash`).
    ReapTombstones {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// (key, hash of the tombstone every replica agreed on).
        items: Vec<(Key, u64)>,
    },
    /// Failure detection, an indirect probe: ping `target` on the asker's behalf (it did
    /// not answer the asker's own ping) and say whether it answered within `timeout_ms`
    /// (capped by the receiver at `membership::detector::MAX_INDIRECT_TIMEOUT_MS`).
    ProbeFor {
        /// The member to ping.
        target: String,
        /// How long to wait for its answer, milliseconds.
        timeout_ms: u64,
    },
    /// Layouts: take in the sender's layout history; the reply is this node's, merged.
    LayoutSync {
        /// The sender's history.
        history: crate::membership::layout::History,
    },
    /// Layout commit, phase 1: promise `ballot` for version `slot`.
    LayoutPrepare {
        /// The version being decided.
        slot: u64,
        /// The proposer's ballot.
        ballot: crate::membership::layout::Ballot,
    },
    /// Layout commit, phase 2: accept `layout` with `ballot`.
    LayoutAccept {
        /// The proposer's ballot.
        ballot: crate::membership::layout::Ballot,
        /// The proposed next version.
        layout: crate::membership::layout::Layout,
    },
    /// The replica's estimate of the bytes it holds (`cluster plan`).
    DataSize,
    /// Data transfer: the next page of keyspace `keyspace`'s keys that `for_node` gains in
    /// layout `version`, after storage key `after`.
    StreamRange {
        /// Keyspace.
        keyspace: KeyspaceDef,
        /// The receiving node.
        for_node: String,
        /// The layout version being transferred (refused if the sender holds another).
        version: u64,
        /// Resume after this storage key (`None`: from the start).
        after: Option<serde_bytes::ByteBuf>,
        /// Most bytes of objects in one page.
        max_bytes: u32,
    },
    /// Several requests to one peer in one frame, answered by one
    /// [`PeerResponse::Bundle`] with a reply per item, in order. A coordinator bundles the
    /// replication it sends a peer while earlier bundles to that peer are in flight
    /// (`crate::peers`), and the replica merges a bundle's items in one storage batch: one
    /// stream and one fsync for many writes under load, none of either added when idle.
    /// Only `Replicate` items are accepted; any other item is refused on its own.
    Bundle(Vec<PeerRequest>),
}

/// One key of a [`PeerRequest::TombstoneCheck`] reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneReport {
    /// This replica's tombstone of the key (`None`: it holds a live value, or nothing).
    pub held: Option<crate::replica::HeldTombstone>,
    /// Hints this node holds for the key, for any of its replicas.
    pub hints: u32,
}

/// One key of an anti-entropy segment listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AaeKey {
    /// Its segment.
    pub segment: u32,
    /// The key.
    pub key: Key,
    /// `h(key, object)` on the replica that listed it.
    pub hash: u64,
    /// Its version vector there.
    pub vv: VersionVector,
}

/// One anti-entropy range as `quorumkv aae status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AaeRangeStatus {
    /// Keyspace.
    pub keyspace: String,
    /// The range id, hex.
    pub range: String,
    /// Its replicas, sorted.
    pub replicas: Vec<String>,
    /// Wall-clock ms of the last exchange this node started for it (`None`: never).
    pub last_exchange_ms: Option<u64>,
    /// The replica it exchanged with last.
    pub last_peer: Option<String>,
    /// Wall-clock ms of the last exchange that compared the whole tree: roots equal, or
    /// every difference found fit in the exchange's bounds.
    pub last_full_compare_ms: Option<u64>,
    /// Whether the last exchange found differences.
    pub differing: bool,
    /// Keys this node repaired in the range (either direction).
    pub keys_repaired: u64,
    /// Exchanges this node started for the range.
    pub exchanges: u64,
    /// Why the last exchange failed, if it did.
    pub last_error: Option<String>,
}

impl PeerRequest {
    /// The keyspace definition the request carries, if any (`AnnounceKeyspace` included).
    pub fn keyspace(&self) -> Option<&KeyspaceDef> {
        match self {
            PeerRequest::Read { keyspace, .. }
            | PeerRequest::Write { keyspace, .. }
            | PeerRequest::Update { keyspace, .. }
            | PeerRequest::WriteBatch { keyspace, .. }
            | PeerRequest::ReplicateBatch { keyspace, .. }
            | PeerRequest::Scan { keyspace, .. }
            | PeerRequest::Replicate { keyspace, .. }
            | PeerRequest::StoreHint { keyspace, .. }
            | PeerRequest::TombstoneCheck { keyspace, .. }
            | PeerRequest::ReapTombstones { keyspace, .. }
            | PeerRequest::StreamRange { keyspace, .. } => Some(keyspace),
            PeerRequest::AnnounceKeyspace(def) => Some(def),
            PeerRequest::AaeBranches { keyspace, .. }
            | PeerRequest::AaeSegments { keyspace, .. }
            | PeerRequest::AaeKeys { keyspace, .. } => Some(keyspace),
            PeerRequest::LookupKeyspace(_)
            | PeerRequest::DropKeyspace { .. }
            | PeerRequest::Ping
            | PeerRequest::ProbeFor { .. }
            | PeerRequest::LayoutSync { .. }
            | PeerRequest::DataSize
            | PeerRequest::LayoutPrepare { .. }
            | PeerRequest::LayoutAccept { .. }
            | PeerRequest::Bundle(_) => None,
        }
    }

    /// Whether applying the request twice has the effect of applying it once (merges,
    /// reads, metadata). The lead writes are not: each issues a new version.
    pub fn idempotent(&self) -> bool {
        match self {
            PeerRequest::Write { .. }
            | PeerRequest::WriteBatch { .. }
            | PeerRequest::Update { .. } => false,
            PeerRequest::Bundle(items) => items.iter().all(PeerRequest::idempotent),
            _ => true,
        }
    }

    /// The request's name, for traces and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::Read { .. } => "read",
            PeerRequest::Write { .. } => "write",
            PeerRequest::Update { .. } => "update",
            PeerRequest::WriteBatch { .. } => "write-batch",
            PeerRequest::Replicate { .. } => "replicate",
            PeerRequest::ReplicateBatch { .. } => "replicate-batch",
            PeerRequest::Scan { .. } => "scan",
            PeerRequest::AnnounceKeyspace(_) => "announce-keyspace",
            PeerRequest::LookupKeyspace(_) => "lookup-keyspace",
            PeerRequest::DropKeyspace { .. } => "drop-keyspace",
            PeerRequest::Ping => "ping",
            PeerRequest::AaeBranches { .. } => "aae-branches",
            PeerRequest::AaeSegments { .. } => "aae-segments",
            PeerRequest::AaeKeys { .. } => "aae-keys",
            PeerRequest::StoreHint { .. } => "store-hint",
            PeerRequest::TombstoneCheck { .. } => "tombstone-check",
            PeerRequest::ReapTombstones { .. } => "reap-tombstones",
            PeerRequest::ProbeFor { .. } => "probe-for",
            PeerRequest::LayoutSync { .. } => "layout-sync",
            PeerRequest::LayoutPrepare { .. } => "layout-prepare",
            PeerRequest::LayoutAccept { .. } => "layout-accept",
            PeerRequest::StreamRange { .. } => "stream-range",
            PeerRequest::DataSize => "data-size",
            PeerRequest::Bundle(_) => "bundle",
        }
    }
}

/// Replies between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// For `Read`: the object, if the replica has the key.
    Object(Option<Object>),
    /// For `Write` and `Update`: the object after the write, and the new dot.
    Written {
        /// The replica's object after the write.
        object: Object,
        /// The dot the lead issued (`None` for CRDT operations, whose dots live inside
        /// the CRDT state).
        dot: Option<crate::causality::Dot>,
    },
    /// For `WriteBatch`: the replica's objects after the writes and the dots it issued,
    /// in request order.
    WrittenBatch {
        /// The objects.
        objects: Vec<Object>,
        /// One new dot per item.
        dots: Vec<crate::causality::Dot>,
    },
    /// For `Scan`: (sort key, object) in sort order, and whether the limit cut it short.
    Items {
        /// The items.
        items: Vec<(serde_bytes::ByteBuf, Object)>,
        /// True if the replica stopped at the limit.
        more: bool,
    },
    /// For `Replicate`, `ReplicateBatch`, `AnnounceKeyspace`, `DropKeyspace` and `Ping`.
    Ack,
    /// For `LookupKeyspace`.
    Keyspace(Option<KeyspaceDef>),
    /// For `AaeBranches`: every branch hash, in branch order.
    AaeBranches(Vec<u64>),
    /// For `AaeSegments`: (segment, hash) of the non-zero segments asked for.
    AaeSegments(Vec<(u32, u64)>),
    /// For `AaeKeys`: keys in (segment, key) order, and whether a limit cut the list.
    AaeKeys {
        /// The keys.
        keys: Vec<AaeKey>,
        /// True if the replica stopped at a limit.
        more: bool,
    },
    /// The replica refused or failed.
    Error(PeerError),
    /// For `TombstoneCheck`: one report per key, in order.
    Tombstones(Vec<TombstoneReport>),
    /// For `ReapTombstones`: how many keys this replica removed.
    Reaped(u32),
    /// For `ProbeFor`: whether the target answered the ping in time.
    Probed(bool),
    /// For `DataSize`: the storage engine's estimate, if it has one.
    DataSize(Option<u64>),
    /// For `LayoutSync`: this node's layout history.
    Layout(Box<crate::membership::layout::History>),
    /// For `LayoutPrepare`.
    LayoutPromise(crate::membership::layout::Promise),
    /// For `LayoutAccept`.
    LayoutAccepted(crate::membership::layout::Accepted),
    /// For `StreamRange`: (storage key, encoded object) in key order, where the next page
    /// starts (`None`: the keyspace is done), and an xxh3 checksum of the items.
    Stream {
        /// The page.
        items: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
        /// Resume after this key; `None` when the scan reached the keyspace's end.
        next: Option<serde_bytes::ByteBuf>,
        /// xxh3 of the items (see `crate::transfer::checksum`).
        checksum: u64,
    },
    /// For `Bundle`: one reply per item, in the bundle's order.
    Bundle(Vec<PeerResponse>),
}

impl PeerResponse {
    /// The reply's name, for errors about replies of the wrong kind.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerResponse::Object(_) => "object",
            PeerResponse::Written { .. } => "written",
            PeerResponse::WrittenBatch { .. } => "written-batch",
            PeerResponse::Items { .. } => "items",
            PeerResponse::Ack => "ack",
            PeerResponse::Keyspace(_) => "keyspace",
            PeerResponse::AaeBranches(_) => "aae-branches",
            PeerResponse::AaeSegments(_) => "aae-segments",
            PeerResponse::AaeKeys { .. } => "aae-keys",
            PeerResponse::Tombstones(_) => "tombstones",
            PeerResponse::Reaped(_) => "reaped",
            PeerResponse::Probed(_) => "probed",
            PeerResponse::Layout(_) => "layout",
            PeerResponse::LayoutPromise(_) => "layout-promise",
            PeerResponse::LayoutAccepted(_) => "layout-accepted",
            PeerResponse::Stream { .. } => "stream",
            PeerResponse::DataSize(_) => "data-size",
            PeerResponse::Error(_) => "error",
            PeerResponse::Bundle(_) => "bundle",
        }
    }
}

/// A replica-side failure, classified so the coordinator can tell the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerError {
    /// The write would exceed the keyspace's sibling cap.
    SiblingLimit(String),
    /// A conditional write found the key changed.
    Conflict(String),
    /// The request is invalid (e.g. a keyspace conflict).
    Invalid(String),
    /// Storage failed.
    Storage(String),
    /// The sender is not a node.
    Forbidden(String),
    /// This replica owns the key in none of the layout versions it holds (it may have
    /// dropped its copy after a layout change): ask another replica.
    NotOwner(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::SiblingLimit(m) => write!(f, "sibling limit: {m}"),
            PeerError::Conflict(m) => write!(f, "conflict: {m}"),
            PeerError::Invalid(m) => write!(f, "invalid: {m}"),
            PeerError::Storage(m) => write!(f, "storage: {m}"),
            PeerError::Forbidden(m) => write!(f, "forbidden: {m}"),
            PeerError::NotOwner(m) => write!(f, "not an owner: {m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Goal: a message survives encode/decode unchanged.
    #[test]
    fn round_trip() {
        let msg = Message::Client(ClientRequest::Put(PutRequest {
            keyspace: "default".into(),
            key: Key::parse("a/b"),
            value: Some(vec![0, 1, 2, 255]),
            context: String::new(),
            w: Some(2),
            trace: true,
            if_context: false,
            timestamp: None,
            actor: None,
            pw: None,
        }));
        let bytes = encode(&msg);
        let back: Message = decode(&bytes, 1 << 20).unwrap();
        match back {
            Message::Client(ClientRequest::Put(p)) => {
                assert_eq!(p.value, Some(vec![0, 1, 2, 255]));
                assert_eq!(p.key, Key::parse("a/b"));
            }
            other => panic!("wrong message {other:?}"),
        }
    }

    /// Goal: oversize, foreign, wrong-version and truncated frames are refused with the
    /// right error.
    #[test]
    fn refusals() {
        let bytes = encode(&Message::Client(ClientRequest::Ping));
        assert!(matches!(
            decode::<Message>(&bytes, 3),
            Err(ProtoError::TooLarge { .. })
        ));
        assert_eq!(
            decode::<Message>(b"GET / HTTP/1.1", 100).unwrap_err(),
            ProtoError::BadMagic
        );
        let mut v2 = bytes.clone();
        v2[3] = 9;
        assert_eq!(
            decode::<Message>(&v2, 100).unwrap_err(),
            ProtoError::Version { got: 9 }
        );
        let truncated = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode::<Message>(truncated, 100),
            Err(ProtoError::Body(_))
        ));
    }

    /// Goal: a client or admin connection's frame decodes only into client messages: a
    /// peer message is refused with `PeerFromClient` at its tag — a peer frame whose body
    /// is garbage gets the same refusal, so the body is never deserialized — while a node
    /// connection decodes both kinds.
    #[test]
    fn client_connections_decode_only_client_messages() {
        let peer = encode(&Message::Peer {
            from: "n2".into(),
            req: PeerRequest::AnnounceKeyspace(KeyspaceDef::new("x", 1, 1, 1)),
        });
        let client = encode(&Message::Client(ClientRequest::Ping));
        for role in [Role::Client, Role::Admin] {
            assert_eq!(
                decode_for_role(&peer, 1 << 20, role).unwrap_err(),
                ProtoError::PeerFromClient { role }
            );
            assert!(matches!(
                decode_for_role(&client, 1 << 20, role),
                Ok(Message::Client(ClientRequest::Ping))
            ));
        }
        assert!(matches!(
            decode_for_role(&peer, 1 << 20, Role::Node),
            Ok(Message::Peer { .. })
        ));
        // Header, then the one-entry map and the "Peer" tag, then bytes that are not
        // MessagePack at all (0xc1 is never used).
        let tag_end = 4 + 1 + 1 + "Peer".len();
        assert_eq!(&peer[5..tag_end], b"\xa4Peer");
        let mut garbage = peer[..tag_end].to_vec();
        garbage.extend_from_slice(&[0xc1; 8]);
        assert_eq!(
            decode_for_role(&garbage, 1 << 20, Role::Client).unwrap_err(),
            ProtoError::PeerFromClient { role: Role::Client }
        );
        assert!(matches!(
            decode_for_role(&garbage, 1 << 20, Role::Node),
            Err(ProtoError::Body(_))
        ));
        let e = ProtoError::PeerFromClient { role: Role::Client }.to_string();
        assert!(
            e.contains("only from node certificates") && e.contains("client"),
            "{e}"
        );
    }

    proptest! {
        /// Goal: arbitrary bytes after a valid header never panic the decoder.
        #[test]
        fn garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = MAGIC.to_vec();
            frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            frame.extend_from_slice(&body);
            let _ = decode::<Message>(&frame, 1 << 20);
            let _ = decode::<Reply>(&frame, 1 << 20);
            let _ = decode_for_role(&frame, 1 << 20, Role::Client);
        }
    }
}
