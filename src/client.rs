//! The Rust client library: talks QUIC to any node of a cluster.
//!
//! Used by the CLI and (later) the shell, the benchmark and the Jepsen-like harness. It
//! keeps one connection to a contact point, reached by trying every contact point at once
//! (the first to answer wins), and reconnects the same way when it breaks. A request that may already have been applied (the connection broke
//! after a write was sent) is *not* retried: the error says the outcome is unknown, which
//! is what a Jepsen history records as `info`.

use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint};
use tokio::sync::Mutex;

use crate::config::{ClusterFile, Member};
use crate::key::Key;
use crate::keyspace::KeyspaceDef;
use crate::proto::{
    self, BatchItem, BatchRequest, BatchResponse, ClientRequest, ClientResponse, ErrorKind,
    GetRequest, GetResponse, Message, NodeStatus, PutRequest, PutResponse, Reply, ScanRequest,
    ScanResponse,
};
use crate::tls::{self, TlsError, TransportSettings};
use crate::transport::quic::{connect, exchange, ExchangeError};

/// Client-side errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The local UDP socket could not be opened.
    #[error("cannot open a client socket: {0}")]
    Socket(std::io::Error),
    /// No contact point answered.
    #[error("no contact point is reachable: {}", .0.join("; "))]
    Unreachable(Vec<String>),
    /// A node did not answer a ping in time ([`wait_all_answer`]).
    #[error("node {node} did not answer within {} s", .within.as_secs())]
    Silent {
        /// The node.
        node: String,
        /// How long it was given.
        within: Duration,
    },
    /// The connection broke after a write was sent; it may or may not have been applied.
    #[error("connection to {node} lost during the request; the write may or may not have been applied: {message}")]
    Indeterminate {
        /// The contact node.
        node: String,
        /// What broke.
        message: String,
    },
    /// The request did not complete within the client timeout.
    #[error("no reply from {node} within {ms} ms; a write may or may not have been applied")]
    Timeout {
        /// The contact node.
        node: String,
        /// The client timeout.
        ms: u64,
    },
    /// The node answered with an error.
    #[error("{message}")]
    Server {
        /// Error class.
        kind: ErrorKind,
        /// The node's message.
        message: String,
    },
    /// The node answered with something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Per-request options.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Read quorum override.
    pub r: Option<u8>,
    /// Write quorum override.
    pub w: Option<u8>,
    /// Causal context from a read ("" or None for a blind write).
    pub context: Option<String>,
    /// Ask the coordinator for a timeline.
    pub trace: bool,
    /// Make a put conditional on `context`: refused with a conflict if the key changed
    /// since that read.
    pub if_context: bool,
    /// Client timestamp for `lww-client` keyspaces (e.g. microseconds since the epoch).
    pub timestamp: Option<u64>,
    /// Client actor for `lww-actor` keyspaces (e.g. a user or datacenter id).
    pub actor: Option<String>,
    /// Primary read quorum: replies needed from the key's primary replicas.
    pub pr: Option<u8>,
    /// Primary write quorum: acknowledgements needed from primary replicas (stand-ins
    /// holding hints do not count).
    pub pw: Option<u8>,
}

/// The connection in use, and the last round of connection attempts that failed.
#[derive(Default)]
struct Current {
    /// The contact point's index and its connection.
    conn: Option<(usize, Connection)>,
    /// When the last full round of connection attempts failed, and why. Requests that
    /// were already waiting for the connection get that answer instead of each trying
    /// every contact point again in turn (32 waiters × 3 contacts × the connect timeout
    /// kept a benchmark against a stopped cluster running for minutes).
    failed: Option<(tokio::time::Instant, Vec<String>)>,
}

/// A connection to a cluster.
pub struct Client {
    endpoint: Endpoint,
    contacts: Vec<Member>,
    current: Mutex<Current>,
    timeout: Duration,
    max_frame: usize,
}

impl Drop for Client {
    /// Close the connection so the node stops counting it against the certificate's
    /// connection cap (sent by the endpoint's driver while the runtime lives on).
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"client dropped");
    }
}

/// How long the preferred contact point has to answer before the others are tried too.
const CONTACT_DELAY: Duration = Duration::from_millis(250);

/// Largest reply the client accepts (a read of a key at the sibling cap with large values).
const CLIENT_MAX_FRAME: usize = 256 << 20;

impl Client {
    /// A client for the cluster described by `cf`. Connects lazily.
    pub fn new(cf: &ClusterFile) -> Result<Arc<Self>, ClientError> {
        let settings = TransportSettings {
            idle: Duration::from_secs(30),
            max_streams: 16,
            receive_windows: None,
        };
        let cc = tls::client_config(&cf.ca_cert, &cf.client_cert, &cf.client_key, &settings)?;
        let bind = if cf.contact_points.iter().all(|m| m.addr.is_ipv6()) {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let mut endpoint = Endpoint::client(
            bind.parse()
                .map_err(|e| ClientError::Protocol(format!("{e}")))?,
        )
        .map_err(ClientError::Socket)?;
        endpoint.set_default_client_config(cc);
        Ok(Arc::new(Client {
            endpoint,
            contacts: cf.contact_points.clone(),
            current: Mutex::new(Current::default()),
            timeout: Duration::from_millis(cf.timeout_ms),
            max_frame: CLIENT_MAX_FRAME,
        }))
    }

    /// Close the connection now, telling the node, instead of leaving it to the idle
    /// timeout: a node counts a client certificate's open connections
    /// (`limits.max_connections_per_client`), and a script running one CLI command after
    /// another would otherwise fill that count with connections of processes long gone.
    /// Waits at most half a second for the close to be sent.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"client done");
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }

    /// The contact point currently in use, if connected.
    pub async fn connected_to(&self) -> Option<String> {
        let cur = self.current.lock().await;
        cur.conn
            .as_ref()
            .map(|(i, _)| self.contacts[*i].name.clone())
    }

    /// A live connection: the current one, or the first contact point to complete a
    /// handshake when all are tried at once.
    async fn connection(&self) -> Result<(usize, Connection), ClientError> {
        let asked = tokio::time::Instant::now();
        let mut cur = self.current.lock().await;
        if let Some((i, c)) = cur.conn.as_ref() {
            if c.close_reason().is_none() {
                return Ok((*i, c.clone()));
            }
        }
        if let Some((at, errors)) = cur.failed.as_ref() {
            if *at >= asked {
                return Err(ClientError::Unreachable(errors.clone()));
            }
        }
        // The contact point after the last one used first; if it has not answered within
        // `CONTACT_DELAY`, every other one at once, and the first handshake to complete
        // wins (Happy Eyeballs, RFC 8305). One by one, a command with two of three nodes
        // dead waited out a connect timeout (3 s) per dead node ahead of the live one;
        // this way it waits for the live one only, and a healthy cluster still sees one
        // connection per client.
        let start = cur.conn.as_ref().map(|(i, _)| i + 1).unwrap_or(0);
        let n = self.contacts.len();
        let mut attempts = tokio::task::JoinSet::new();
        for k in 0..n {
            let i = (start + k) % n;
            let m = self.contacts[i].clone();
            let endpoint = self.endpoint.clone();
            let timeout = self.timeout.min(Duration::from_secs(3));
            let delay = if k == 0 {
                Duration::ZERO
            } else {
                CONTACT_DELAY
            };
            attempts.spawn(async move {
                tokio::time::sleep(delay).await;
                let r = connect(&endpoint, m.addr, &m.name, timeout).await;
                (i, r.map_err(|e| format!("{} ({}): {e}", m.name, m.addr)))
            });
        }
        let mut failed: Vec<(usize, String)> = Vec::new();
        while let Some(joined) = attempts.join_next().await {
            match joined {
                Ok((i, Ok(c))) => {
                    attempts.abort_all();
                    cur.conn = Some((i, c.clone()));
                    return Ok((i, c));
                }
                Ok((i, Err(e))) => failed.push((i, e)),
                Err(e) => failed.push((usize::MAX, format!("connection attempt failed: {e}"))),
            }
        }
        // In contact-point order, whatever order the attempts ended in.
        failed.sort();
        let errors: Vec<String> = failed.into_iter().map(|(_, e)| e).collect();
        cur.conn = None;
        cur.failed = Some((tokio::time::Instant::now(), errors.clone()));
        Err(ClientError::Unreachable(errors))
    }

    /// Send any request. Requests that cannot have changed data are retried on the next
    /// contact point when the connection breaks.
    pub async fn request(&self, req: ClientRequest) -> Result<ClientResponse, ClientError> {
        // An update (e.g. a counter increment) is not idempotent either: never retry it.
        // A clock offset is for the node asked, so it must not move on to the next one.
        let idempotent = !matches!(
            req,
            ClientRequest::Put(_)
                | ClientRequest::Batch(_)
                | ClientRequest::Update(_)
                | ClientRequest::SetClockOffset { .. }
        );
        let frame = proto::encode(&Message::Client(req));
        let mut last_err = None;
        for _ in 0..self.contacts.len().max(1) {
            let (i, conn) = self.connection().await?;
            let node = self.contacts[i].name.clone();
            match tokio::time::timeout(self.timeout, exchange(&conn, &frame, self.max_frame)).await
            {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        node,
                        ms: self.timeout.as_millis() as u64,
                    })
                }
                Ok(Ok(bytes)) => {
                    return match proto::decode::<Reply>(&bytes, self.max_frame) {
                        Ok(Reply::Client(ClientResponse::Error(e))) => Err(ClientError::Server {
                            kind: e.kind,
                            message: e.message,
                        }),
                        Ok(Reply::Client(r)) => Ok(r),
                        Ok(Reply::Peer(p)) => Err(ClientError::Protocol(format!(
                            "unexpected peer reply {p:?}"
                        ))),
                        Err(e) => Err(ClientError::Protocol(e.to_string())),
                    };
                }
                Ok(Err(e @ ExchangeError::Reset(_))) => {
                    // A stream-level failure: the connection stays usable.
                    return Err(if idempotent {
                        ClientError::Protocol(format!("{node}: {e}"))
                    } else {
                        ClientError::Indeterminate {
                            node,
                            message: e.to_string(),
                        }
                    });
                }
                Ok(Err(ExchangeError::Reply(e))) => {
                    return Err(ClientError::Protocol(e.to_string()))
                }
                Ok(Err(ExchangeError::Connection(m))) => {
                    conn.close(0u32.into(), b"");
                    if !idempotent {
                        return Err(ClientError::Indeterminate { node, message: m });
                    }
                    last_err = Some(ClientError::Unreachable(vec![format!("{node}: {m}")]));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::Unreachable(vec![])))
    }

    /// Read a key.
    pub async fn get(
        &self,
        keyspace: &str,
        key: Key,
        opts: &RequestOptions,
    ) -> Result<GetResponse, ClientError> {
        let req = ClientRequest::Get(GetRequest {
            keyspace: keyspace.to_string(),
            key,
            r: opts.r,
            trace: opts.trace,
            pr: opts.pr,
        });
        match self.request(req).await? {
            ClientResponse::Get(g) => Ok(g),
            other => Err(unexpected(other)),
        }
    }

    /// The contacted node's own stored copy of `key` (no quorum, no repair): returns the
    /// node that answered, whether it is a replica of the key, and its copy. Point the
    /// client at one node (its only contact point) to choose which replica to look at.
    pub async fn replica_get(
        &self,
        keyspace: &str,
        key: Key,
    ) -> Result<(String, bool, GetResponse), ClientError> {
        let req = ClientRequest::ReplicaGet(GetRequest {
            keyspace: keyspace.to_string(),
            key,
            r: None,
            trace: false,
            pr: None,
        });
        match self.request(req).await? {
            ClientResponse::ReplicaCopy { node, owner, copy } => Ok((node, owner, copy)),
            other => Err(unexpected(other)),
        }
    }

    /// Write a value (`Some`) or delete (`None`).
    pub async fn put(
        &self,
        keyspace: &str,
        key: Key,
        value: Option<Vec<u8>>,
        opts: &RequestOptions,
    ) -> Result<PutResponse, ClientError> {
        let req = ClientRequest::Put(PutRequest {
            keyspace: keyspace.to_string(),
            key,
            value,
            context: opts.context.clone().unwrap_or_default(),
            w: opts.w,
            trace: opts.trace,
            if_context: opts.if_context,
            timestamp: opts.timestamp,
            actor: opts.actor.clone(),
            pw: opts.pw,
        });
        match self.request(req).await? {
            ClientResponse::Put(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Read items of one partition in sort order, `from` (inclusive) to `to`
    /// (exclusive), at most `limit` stored items; `next` in the reply continues.
    pub async fn scan(
        &self,
        keyspace: &str,
        partition: &[u8],
        from: &[u8],
        to: Option<&[u8]>,
        limit: u32,
        opts: &RequestOptions,
    ) -> Result<ScanResponse, ClientError> {
        let req = ClientRequest::Scan(ScanRequest {
            keyspace: keyspace.to_string(),
            partition: partition.to_vec(),
            from: from.to_vec(),
            to: to.map(|t| serde_bytes::ByteBuf::from(t.to_vec())),
            limit,
            r: opts.r,
            trace: opts.trace,
        });
        match self.request(req).await? {
            ClientResponse::Scan(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Apply an operation to a key of a CRDT keyspace (`opts.context`: the context of a
    /// read, needed for removes to remove what was read). Not retried when the connection
    /// breaks mid-request (a counter increment applied twice would count twice).
    pub async fn update(
        &self,
        keyspace: &str,
        key: Key,
        op: crate::proto::CrdtOp,
        opts: &RequestOptions,
    ) -> Result<crate::proto::UpdateResponse, ClientError> {
        let req = ClientRequest::Update(crate::proto::UpdateRequest {
            keyspace: keyspace.to_string(),
            key,
            op,
            context: opts.context.clone().unwrap_or_default(),
            w: opts.w,
            trace: opts.trace,
        });
        match self.request(req).await? {
            ClientResponse::Update(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    /// Write several items of one partition atomically on each replica. A batch is a
    /// write: when the connection breaks mid-request it is not retried.
    pub async fn batch(
        &self,
        keyspace: &str,
        items: Vec<BatchItem>,
        opts: &RequestOptions,
    ) -> Result<BatchResponse, ClientError> {
        let req = ClientRequest::Batch(BatchRequest {
            keyspace: keyspace.to_string(),
            items,
            w: opts.w,
            trace: opts.trace,
        });
        match self.request(req).await? {
            ClientResponse::Batch(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Delete a key (write a tombstone).
    pub async fn delete(
        &self,
        keyspace: &str,
        key: Key,
        opts: &RequestOptions,
    ) -> Result<PutResponse, ClientError> {
        self.put(keyspace, key, None, opts).await
    }

    /// Create a keyspace; returns the nodes that stored it and those that did not answer.
    pub async fn create_keyspace(
        &self,
        def: KeyspaceDef,
    ) -> Result<(Vec<String>, Vec<String>), ClientError> {
        match self.request(ClientRequest::CreateKeyspace(def)).await? {
            ClientResponse::KeyspaceCreated { acked, missing, .. } => Ok((acked, missing)),
            other => Err(unexpected(other)),
        }
    }

    /// Drop a keyspace and its data (admin certificates only); returns the nodes that
    /// dropped it and those that did not answer (with why).
    pub async fn drop_keyspace(
        &self,
        name: &str,
    ) -> Result<(Vec<String>, Vec<String>), ClientError> {
        match self
            .request(ClientRequest::DropKeyspace(name.to_string()))
            .await?
        {
            ClientResponse::KeyspaceDropped { acked, missing, .. } => Ok((acked, missing)),
            other => Err(unexpected(other)),
        }
    }

    /// Keyspaces the contacted node knows.
    pub async fn keyspaces(&self) -> Result<Vec<KeyspaceDef>, ClientError> {
        match self.request(ClientRequest::ListKeyspaces).await? {
            ClientResponse::Keyspaces(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    /// The preference list of a key.
    pub async fn replicas(&self, keyspace: &str, key: Key) -> Result<Vec<String>, ClientError> {
        let req = ClientRequest::Replicas {
            keyspace: keyspace.to_string(),
            key,
        };
        match self.request(req).await? {
            ClientResponse::Replicas(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Cluster status as the contacted node sees it: (that node, members).
    pub async fn status(&self) -> Result<(String, Vec<NodeStatus>), ClientError> {
        match self.request(ClientRequest::Status).await? {
            ClientResponse::Status { node, nodes } => Ok((node, nodes)),
            other => Err(unexpected(other)),
        }
    }

    /// The contacted node's anti-entropy state: (node, enabled, one row per range).
    pub async fn aae_status(
        &self,
    ) -> Result<(String, bool, Vec<crate::proto::AaeRangeStatus>), ClientError> {
        match self.request(ClientRequest::AaeStatus).await? {
            ClientResponse::AaeStatus {
                node,
                enabled,
                ranges,
            } => Ok((node, enabled, ranges)),
            other => Err(unexpected(other)),
        }
    }

    /// The layouts as the contacted node holds them (`quorumkv cluster status`).
    pub async fn cluster_status(&self) -> Result<crate::proto::ClusterReport, ClientError> {
        match self.request(ClientRequest::ClusterStatus).await? {
            ClientResponse::Cluster(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    /// Stage a layout change on the contacted node; returns everything staged there now.
    pub async fn cluster_stage(
        &self,
        change: crate::membership::layout::Change,
    ) -> Result<crate::membership::layout::Staged, ClientError> {
        match self.request(ClientRequest::ClusterStage(change)).await? {
            ClientResponse::Staged(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Drop the changes staged on the contacted node; returns what was dropped.
    pub async fn cluster_abort(&self) -> Result<crate::membership::layout::Staged, ClientError> {
        match self.request(ClientRequest::ClusterAbort).await? {
            ClientResponse::Staged(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// What the staged changes would do.
    pub async fn cluster_plan(&self) -> Result<crate::membership::layout::Plan, ClientError> {
        match self.request(ClientRequest::ClusterPlan).await? {
            ClientResponse::Plan(p) => Ok(*p),
            other => Err(unexpected(other)),
        }
    }

    /// Commit the staged changes; returns the version that took effect.
    pub async fn cluster_commit(&self) -> Result<crate::membership::layout::Layout, ClientError> {
        match self.request(ClientRequest::ClusterCommit).await? {
            ClientResponse::Committed(l) => Ok(*l),
            other => Err(unexpected(other)),
        }
    }

    /// The contacted node's latency histograms: (node, rows, read repairs sent).
    pub async fn stats(
        &self,
    ) -> Result<(String, Vec<crate::proto::LatencyStats>, u64), ClientError> {
        match self.request(ClientRequest::Stats).await? {
            ClientResponse::Stats {
                node,
                latencies,
                read_repairs,
            } => Ok((node, latencies, read_repairs)),
            other => Err(unexpected(other)),
        }
    }

    /// Move the contacted node's wall clock `ms` away from the system clock (fault
    /// injection; the node must allow it and the client must be an admin). Returns the
    /// node and its offset now.
    pub async fn set_clock_offset(&self, ms: i64) -> Result<(String, i64), ClientError> {
        match self.request(ClientRequest::SetClockOffset { ms }).await? {
            ClientResponse::ClockOffset { node, ms } => Ok((node, ms)),
            other => Err(unexpected(other)),
        }
    }

    /// Ping the contact node; returns its name.
    pub async fn ping(&self) -> Result<String, ClientError> {
        match self.request(ClientRequest::Ping).await? {
            ClientResponse::Pong(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: ClientResponse) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {r:?}"))
}

/// Wait until every contact point of `cf` answers a ping — each through a client of its
/// own, attempts of at most 1 s every 200 ms — for at most `within` in all: how a freshly
/// started cluster is known to be up. The first node still silent then is the error
/// ([`ClientError::Silent`]).
pub async fn wait_all_answer(cf: &ClusterFile, within: Duration) -> Result<(), ClientError> {
    let deadline = tokio::time::Instant::now() + within;
    for m in &cf.contact_points {
        let one = ClusterFile {
            contact_points: vec![m.clone()],
            timeout_ms: 1000,
            ..cf.clone()
        };
        let client = Client::new(&one)?;
        loop {
            if client.ping().await.is_ok() {
                client.close().await;
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ClientError::Silent {
                    node: m.name.clone(),
                    within,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
