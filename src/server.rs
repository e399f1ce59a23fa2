//! The QUIC server: accepts connections, reads one frame per stream, hands it to the
//! node and writes the reply.
//!
//! Bad input is contained per *stream*: a frame over the size limit, bytes that do not
//! decode, or a stream that stalls are answered (or reset) on that stream alone, so one
//! bad request on a node-to-node connection never takes the replication traffic sharing
//! it down with it.
//!
//! Memory is bounded by a byte budget (`limits.max_inflight_bytes`) taken chunk by chunk
//! as a frame is read and held until its reply is written, and by a count of requests in
//! flight. Clients and nodes draw on separate pools: clients may use the budget less
//! `limits.node_reserved_bytes`, and a client stream that finds its pool spent is answered
//! `overloaded` at once instead of queueing; node streams may use all of it and wait for
//! budget, so clients cannot starve replication. Deadlines on reading a request
//! (`timeouts.frame_read_ms`) and on writing a reply (`timeouts.reply_write_ms`) reset a
//! stalled stream and release what it held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::access::ClientIdentity;
use crate::config::NodeConfig;
use crate::node::Node;
use crate::proto::{
    self, ClientRequest, ClientResponse, ErrorKind, ErrorResponse, Message, PeerError, PeerRequest,
    PeerResponse, Reply,
};
use crate::tls::{self, Role};

/// Application close code: the peer's certificate carries no usable role.
pub const CLOSE_FORBIDDEN: u32 = 3;
/// Application close code: the client certificate already has
/// `limits.max_connections_per_client` connections open.
pub const CLOSE_TOO_MANY_CONNECTIONS: u32 = 4;
/// Stream error code (STOP_SENDING / RESET_STREAM): the frame is over the size limit.
pub const STREAM_FRAME_TOO_LARGE: u32 = 1;
/// Stream error code: the node is overloaded; the reply on the stream says so.
pub const STREAM_OVERLOADED: u32 = 5;
/// Stream error code: the request was not received, or the reply not taken, in time.
pub const STREAM_TIMEOUT: u32 = 6;

/// Largest piece of a frame read (and charged to the budget) at once.
const CHUNK: usize = 64 * 1024;

/// What the server enforces, from `limits` and `timeouts` of the node config.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Largest request frame.
    pub max_frame: usize,
    /// Client requests in flight (node requests have a pool of the same size).
    pub max_inflight_requests: usize,
    /// Bytes of frames in flight, client and node together.
    pub max_inflight_bytes: usize,
    /// Part of `max_inflight_bytes` only node connections may use.
    pub node_reserved_bytes: usize,
    /// Connections per client certificate name.
    pub max_connections_per_client: usize,
    /// Largest scan page, bytes: reserved up front for a scan's reply.
    pub max_reply_bytes: usize,
    /// Deadline for reading a request frame.
    pub frame_read: Duration,
    /// Deadline for writing a reply.
    pub reply_write: Duration,
}

impl ServeLimits {
    /// The limits a node config sets.
    pub fn from_config(cfg: &NodeConfig) -> Self {
        let l = &cfg.limits;
        ServeLimits {
            max_frame: l.max_frame_bytes,
            max_inflight_requests: l.max_inflight_requests,
            max_inflight_bytes: l.max_inflight_bytes,
            node_reserved_bytes: l.node_reserved_bytes,
            max_connections_per_client: l.max_connections_per_client,
            max_reply_bytes: l.max_reply_bytes,
            frame_read: Duration::from_millis(cfg.timeouts.frame_read_ms),
            reply_write: Duration::from_millis(cfg.timeouts.reply_write_ms),
        }
    }
}

/// State shared by every connection of one server.
struct Server {
    node: Arc<Node>,
    limits: ServeLimits,
    client_slots: Arc<Semaphore>,
    node_slots: Arc<Semaphore>,
    /// Bytes clients and nodes both draw on.
    shared_bytes: Arc<Semaphore>,
    /// Bytes only node connections draw on.
    reserved_bytes: Arc<Semaphore>,
    /// Open connections per client certificate name, and the bytes that certificate may
    /// still hold (see [`Server::client_share`]).
    client_conns: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

/// Serve `endpoint` until it is closed.
pub async fn serve(endpoint: Endpoint, node: Arc<Node>, limits: ServeLimits) {
    let shared = limits
        .max_inflight_bytes
        .saturating_sub(limits.node_reserved_bytes);
    let server = Arc::new(Server {
        node,
        client_slots: Arc::new(Semaphore::new(limits.max_inflight_requests)),
        node_slots: Arc::new(Semaphore::new(limits.max_inflight_requests)),
        shared_bytes: Arc::new(Semaphore::new(shared)),
        reserved_bytes: Arc::new(Semaphore::new(limits.node_reserved_bytes)),
        client_conns: Mutex::new(HashMap::new()),
        limits,
    });
    while let Some(incoming) = endpoint.accept().await {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => server.serve_connection(conn).await,
                Err(e) => tracing::debug!(%remote, error = %e, "handshake failed"),
            }
        });
    }
}

/// Counts a client connection against its certificate's cap until dropped.
struct ConnectionSlot {
    server: Arc<Server>,
    name: String,
    bytes: Arc<Semaphore>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut conns = self
            .server
            .client_conns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = conns.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                conns.remove(&self.name);
            }
        }
    }
}

/// Bytes of the budget one stream holds; released when dropped.
#[derive(Default)]
struct Budget {
    shared: Option<OwnedSemaphorePermit>,
    reserved: Option<OwnedSemaphorePermit>,
    /// The client certificate's share, taken alongside `shared`.
    client: Option<OwnedSemaphorePermit>,
}

impl Budget {
    fn add(slot: &mut Option<OwnedSemaphorePermit>, p: OwnedSemaphorePermit) {
        match slot {
            Some(held) => held.merge(p),
            None => *slot = Some(p),
        }
    }

    fn bytes(&self) -> usize {
        self.shared.as_ref().map_or(0, |p| p.num_permits())
            + self.reserved.as_ref().map_or(0, |p| p.num_permits())
    }
}

/// Who sent a stream, for budget purposes.
struct Sender {
    role: Role,
    cert_name: String,
    /// The client certificate's byte share (`None` for nodes).
    cert_bytes: Option<Arc<Semaphore>>,
}

/// Why a request frame was not read.
enum ReadFailure {
    TooLarge,
    Overloaded(String),
    /// The stream or connection broke; nothing to answer.
    Gone(String),
}

impl Server {
    async fn serve_connection(self: Arc<Self>, conn: Connection) {
        let remote = conn.remote_address();
        let Some((role, cert_name)) = tls::peer_role(conn.peer_identity()) else {
            tracing::warn!(%remote, "certificate has no quorumkv role; closing");
            conn.close(
                VarInt::from_u32(CLOSE_FORBIDDEN),
                b"certificate has no role",
            );
            return;
        };
        let conn_slot = if role != Role::Node {
            match self.count_connection(&cert_name) {
                Some(slot) => Some(slot),
                None => {
                    let max = self.limits.max_connections_per_client;
                    tracing::warn!(%remote, client = %cert_name, max, "too many connections for one client certificate; closing");
                    let reason = format!(
                        "too many connections: client certificate {cert_name:?} already has {max} open on node {} (limits.max_connections_per_client)",
                        self.node.name()
                    );
                    conn.close(
                        VarInt::from_u32(CLOSE_TOO_MANY_CONNECTIONS),
                        reason.as_bytes(),
                    );
                    return;
                }
            }
        } else {
            None
        };
        let cert_bytes = conn_slot.as_ref().map(|s| Arc::clone(&s.bytes));
        let span = tracing::debug_span!("connection", %remote, peer = %cert_name);
        let me = Arc::clone(&self);
        async move {
            loop {
                let (send, recv) = match conn.accept_bi().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(reason = %e, "connection ended");
                        return;
                    }
                };
                let slot = if role == Role::Node {
                    // Node requests wait for a slot: the wait pushes back on the peer
                    // through the stream limit instead of failing replication.
                    Arc::clone(&me.node_slots).acquire_owned().await.ok()
                } else {
                    Arc::clone(&me.client_slots).try_acquire_owned().ok()
                };
                let sender = Sender {
                    role,
                    cert_name: cert_name.clone(),
                    cert_bytes: cert_bytes.clone(),
                };
                let server = Arc::clone(&me);
                tokio::spawn(
                    async move { server.serve_stream(send, recv, sender, slot).await }
                        .in_current_span(),
                );
            }
        }
        .instrument(span)
        .await;
        drop(conn_slot);
    }

    fn count_connection(self: &Arc<Self>, name: &str) -> Option<ConnectionSlot> {
        let share = self.client_share();
        let mut conns = self.client_conns.lock().unwrap_or_else(|e| e.into_inner());
        let (n, bytes) = conns
            .entry(name.to_string())
            .or_insert_with(|| (0, Arc::new(Semaphore::new(share))));
        if *n >= self.limits.max_connections_per_client {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            server: Arc::clone(self),
            name: name.to_string(),
            bytes: Arc::clone(bytes),
        })
    }

    /// Bytes of the budget clients may use.
    fn client_pool(&self) -> usize {
        self.limits
            .max_inflight_bytes
            .saturating_sub(self.limits.node_reserved_bytes)
    }

    /// Bytes one client certificate may hold: a quarter of the clients' pool, so one
    /// greedy client — say one that never reads its replies — cannot spend the budget
    /// every other client needs; but at least one frame of `max_frame_bytes`, so a
    /// legitimate request up to the frame limit always fits (and an oversized one is
    /// refused as too large, not as overloaded).
    fn client_share(&self) -> usize {
        (self.client_pool() / 4)
            .max(self.limits.max_frame)
            .min(self.client_pool())
    }

    fn overloaded_message(&self, what: &str) -> String {
        format!(
            "node {} is overloaded: {what}; retry later",
            self.node.name()
        )
    }

    /// Take `n` bytes of budget for `from`. With `wait` false a client fails at once when
    /// its pool (or its certificate's share) is spent; otherwise it waits, and nodes
    /// always wait (callers bound every wait with a deadline). Nodes draw on the shared
    /// pool or the reserved one, whichever has room first.
    async fn take(
        &self,
        budget: &mut Budget,
        from: &Sender,
        n: usize,
        wait: bool,
    ) -> Result<(), ReadFailure> {
        if n == 0 {
            return Ok(());
        }
        let Ok(n32) = u32::try_from(n) else {
            return Err(ReadFailure::TooLarge);
        };
        let gone = |_| ReadFailure::Gone("server closed".into());
        if let Some(cert) = &from.cert_bytes {
            let p = match Arc::clone(cert).try_acquire_many_owned(n32) {
                Ok(p) => p,
                Err(_) if wait => Arc::clone(cert).acquire_many_owned(n32).await.map_err(gone)?,
                Err(_) => {
                    return Err(ReadFailure::Overloaded(self.overloaded_message(&format!(
                        "client {:?} already holds its share of {} bytes of the in-flight budget (a quarter of limits.max_inflight_bytes − limits.node_reserved_bytes, at least limits.max_frame_bytes)",
                        from.cert_name,
                        self.client_share()
                    ))))
                }
            };
            Budget::add(&mut budget.client, p);
        }
        if let Ok(p) = Arc::clone(&self.shared_bytes).try_acquire_many_owned(n32) {
            Budget::add(&mut budget.shared, p);
            return Ok(());
        }
        if from.role != Role::Node {
            if !wait {
                return Err(ReadFailure::Overloaded(self.overloaded_message(&format!(
                    "the {} bytes of in-flight budget clients may use are spent (limits.max_inflight_bytes − limits.node_reserved_bytes)",
                    self.client_pool()
                ))));
            }
            let p = Arc::clone(&self.shared_bytes)
                .acquire_many_owned(n32)
                .await
                .map_err(gone)?;
            Budget::add(&mut budget.shared, p);
            return Ok(());
        }
        tokio::select! {
            p = Arc::clone(&self.shared_bytes).acquire_many_owned(n32) => {
                Budget::add(&mut budget.shared, p.map_err(gone)?);
            }
            p = Arc::clone(&self.reserved_bytes).acquire_many_owned(n32) => {
                Budget::add(&mut budget.reserved, p.map_err(gone)?);
            }
        }
        Ok(())
    }

    /// Read one request frame, charging each chunk to the budget as it arrives.
    async fn read_frame(
        &self,
        recv: &mut RecvStream,
        budget: &mut Budget,
        from: &Sender,
    ) -> Result<Vec<u8>, ReadFailure> {
        let mut frame = Vec::new();
        loop {
            match recv.read_chunk(CHUNK, true).await {
                Ok(Some(chunk)) => {
                    if frame.len() + chunk.bytes.len() > self.limits.max_frame {
                        return Err(ReadFailure::TooLarge);
                    }
                    self.take(budget, from, chunk.bytes.len(), false).await?;
                    frame.extend_from_slice(&chunk.bytes);
                }
                Ok(None) => return Ok(frame),
                Err(e) => return Err(ReadFailure::Gone(e.to_string())),
            }
        }
    }

    async fn serve_stream(
        self: Arc<Self>,
        mut send: SendStream,
        mut recv: RecvStream,
        from: Sender,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let (role, cert_name) = (from.role, from.cert_name.clone());
        let node_name = self.node.name().to_string();
        let Some(slot) = slot else {
            let msg = self.overloaded_message(&format!(
                "{} client requests are already in flight (limits.max_inflight_requests)",
                self.limits.max_inflight_requests
            ));
            tracing::debug!(client = %cert_name, "request refused: no request slot");
            self.node.metrics.overloaded_refused();
            let _ = recv.stop(VarInt::from_u32(STREAM_OVERLOADED));
            self.write_reply(send, &error_reply(role, ErrorKind::Overloaded, msg))
                .await;
            return;
        };
        let mut budget = Budget::default();
        let read = tokio::time::timeout(
            self.limits.frame_read,
            self.read_frame(&mut recv, &mut budget, &from),
        )
        .await;
        let bytes = match read {
            Ok(Ok(b)) => b,
            Ok(Err(ReadFailure::TooLarge)) => {
                let max = self.limits.max_frame;
                tracing::warn!(peer = %cert_name, max, "frame over the size limit; refusing this stream");
                let _ = recv.stop(VarInt::from_u32(STREAM_FRAME_TOO_LARGE));
                let msg = format!(
                    "frame too large: request frames are limited to {max} bytes on node {node_name} (limits.max_frame_bytes)"
                );
                self.write_reply(send, &error_reply(role, ErrorKind::InvalidRequest, msg))
                    .await;
                return;
            }
            Ok(Err(ReadFailure::Overloaded(msg))) => {
                tracing::debug!(client = %cert_name, "request refused: byte budget spent");
                self.node.metrics.overloaded_refused();
                let _ = recv.stop(VarInt::from_u32(STREAM_OVERLOADED));
                drop(budget);
                self.write_reply(send, &error_reply(role, ErrorKind::Overloaded, msg))
                    .await;
                return;
            }
            Ok(Err(ReadFailure::Gone(e))) => {
                tracing::debug!(peer = %cert_name, error = %e, "stream read failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %cert_name, "request frame not received in time; resetting the stream");
                let _ = recv.stop(VarInt::from_u32(STREAM_TIMEOUT));
                let _ = send.reset(VarInt::from_u32(STREAM_TIMEOUT));
                return;
            }
        };
        // Client connections decode only client messages: a peer message's body is never
        // parsed for them (`decode_for_role`), and the refusal stays on this stream.
        let msg = match proto::decode_for_role(&bytes, self.limits.max_frame, role) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(peer = %cert_name, error = %e, "malformed frame; refusing this stream");
                let msg = format!("malformed request frame: {e}");
                self.write_reply(send, &error_reply(role, ErrorKind::InvalidRequest, msg))
                    .await;
                return;
            }
        };
        drop(bytes);
        // A scan's reply can be far larger than its request: reserve its page up front
        // (the coordinator holds replica pages and its own), so a flood of scans is
        // refused instead of piling up pages.
        let reply_reserve = match &msg {
            Message::Client(ClientRequest::Scan(_)) => 2 * self.limits.max_reply_bytes,
            Message::Peer {
                req: PeerRequest::Scan { .. },
                ..
            } => self.limits.max_reply_bytes,
            _ => 0,
        };
        match tokio::time::timeout(
            self.limits.frame_read,
            self.take(&mut budget, &from, reply_reserve, false),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(ReadFailure::Overloaded(m))) => {
                self.node.metrics.overloaded_refused();
                drop(budget);
                self.write_reply(send, &error_reply(role, ErrorKind::Overloaded, m))
                    .await;
                return;
            }
            Ok(Err(_)) | Err(_) => {
                let _ = send.reset(VarInt::from_u32(STREAM_TIMEOUT));
                return;
            }
        }
        let reply = self.dispatch(msg, role, &cert_name).await;
        let frame = proto::encode(&reply);
        drop(reply);
        // The request slot is free once the reply exists. The reply's bytes stay charged
        // to the budget until written: a reply larger than what the stream holds takes the
        // rest (waiting, within the write deadline), so a client that never reads its
        // replies holds at most its certificate's share of memory.
        drop(slot);
        let extra = frame.len().saturating_sub(budget.bytes());
        let took = tokio::time::timeout(
            self.limits.reply_write,
            self.take(&mut budget, &from, extra, true),
        )
        .await;
        if matches!(took, Ok(Ok(()))) {
            self.write_frame(send, &frame).await;
        } else {
            tracing::debug!(peer = %cert_name, "no budget for the reply in time; resetting the stream");
            let _ = send.reset(VarInt::from_u32(STREAM_TIMEOUT));
        }
        drop(budget);
    }

    /// Hand one decoded request to the node.
    async fn dispatch(&self, msg: Message, role: Role, cert_name: &str) -> Reply {
        match msg {
            Message::Client(req) => {
                let who = ClientIdentity {
                    name: cert_name.to_string(),
                    role,
                };
                Reply::Client(self.node.handle_client(who, req).await)
            }
            Message::Peer { from, req } => {
                if role != Role::Node || cert_name != from {
                    tracing::warn!(%from, %cert_name, "peer request without a matching node certificate");
                    Reply::Peer(PeerResponse::Error(PeerError::Forbidden(format!(
                        "peer requests need the node certificate of {from:?}; this connection presented {cert_name:?}"
                    ))))
                } else {
                    Reply::Peer(self.node.handle_peer_request(from, req).await)
                }
            }
        }
    }

    async fn write_reply(&self, send: SendStream, reply: &Reply) {
        self.write_frame(send, &proto::encode(reply)).await
    }

    /// Write a reply frame within `timeouts.reply_write_ms`; reset the stream if the peer
    /// does not take it in time (it never reads, or reads too slowly).
    async fn write_frame(&self, mut send: SendStream, frame: &[u8]) {
        let write = tokio::time::timeout(self.limits.reply_write, send.write_all(frame)).await;
        match write {
            Ok(Ok(())) => {
                let _ = send.finish();
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "reply write failed"),
            Err(_) => {
                tracing::debug!(
                    bytes = frame.len(),
                    "reply not taken in time; resetting the stream"
                );
                let _ = send.reset(VarInt::from_u32(STREAM_TIMEOUT));
            }
        }
    }
}

/// An error reply in the shape the sender expects: peer replies to node certificates,
/// client replies to everyone else.
fn error_reply(role: Role, kind: ErrorKind, message: String) -> Reply {
    match role {
        // Node streams wait for budget rather than being refused, so a node only ever
        // gets a refusal of a bad frame here.
        Role::Node => Reply::Peer(PeerResponse::Error(PeerError::Invalid(message))),
        _ => Reply::Client(ClientResponse::Error(ErrorResponse { kind, message })),
    }
}
