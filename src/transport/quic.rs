//! QUIC transport between nodes (and the request/response exchange clients reuse).
//!
//! One connection per peer pair, reused; one bidirectional stream per request, closed by
//! each side after its frame, so a frame is exactly the bytes of a stream and a reader can
//! refuse one that exceeds the limit without buffering it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint};

use super::{BoxFuture, Transport, TransportError};
use crate::config::Member;
use crate::proto::{self, Message, PeerRequest, PeerResponse, Reply};

/// Errors of one request/response exchange on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection or stream failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The node reset this request's stream (it stalled past a deadline); the connection
    /// and its other streams are fine.
    #[error("the node reset the request's stream (code {0})")]
    Reset(u64),
    /// The reply was not a valid frame.
    #[error("bad reply: {0}")]
    Reply(#[from] proto::ProtoError),
}

/// Send one frame on a new stream of `conn` and read the reply frame.
pub async fn exchange(
    conn: &Connection,
    frame: &[u8],
    max_frame: usize,
) -> Result<Vec<u8>, ExchangeError> {
    let conn_err = |e: String| ExchangeError::Connection(e);
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| conn_err(e.to_string()))?;
    match send.write_all(frame).await {
        Ok(()) => send.finish().map_err(|e| conn_err(e.to_string()))?,
        // The node stopped reading this request (too large, or overloaded) and says why
        // in its reply on the same stream.
        Err(quinn::WriteError::Stopped(_)) => {}
        Err(e) => return Err(conn_err(e.to_string())),
    }
    recv.read_to_end(max_frame).await.map_err(|e| match e {
        quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)) => {
            ExchangeError::Reset(code.into_inner())
        }
        e => conn_err(e.to_string()),
    })
}

/// Connect to `addr`, expecting a certificate for `name`, within `timeout`.
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Connection, String> {
    let connecting = endpoint.connect(addr, name).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {} ms", timeout.as_millis())),
    }
}

/// A peer's address and its cached connection.
type PeerSlot = (SocketAddr, tokio::sync::Mutex<Option<Connection>>);

/// Peer transport over a quinn endpoint whose default client config carries this node's
/// certificate.
pub struct QuicTransport {
    endpoint: Endpoint,
    me: String,
    /// One slot per peer: the mutex makes concurrent callers share one connection attempt.
    /// Layout changes add peers ([`Transport::learn_peer`]), hence the lock around the map.
    peers: std::sync::RwLock<HashMap<String, Arc<PeerSlot>>>,
    connect_timeout: Duration,
    max_frame: usize,
}

impl QuicTransport {
    /// A transport for node `me` over `endpoint`.
    pub fn new(
        endpoint: Endpoint,
        me: &str,
        members: &[Member],
        connect_timeout: Duration,
        max_frame: usize,
    ) -> Self {
        let peers = members
            .iter()
            .filter(|m| m.name != me)
            .map(|m| {
                (
                    m.name.clone(),
                    Arc::new((m.addr, tokio::sync::Mutex::new(None))),
                )
            })
            .collect();
        QuicTransport {
            endpoint,
            me: me.to_string(),
            peers: std::sync::RwLock::new(peers),
            connect_timeout,
            max_frame,
        }
    }

    async fn connection(&self, to: &str) -> Result<Connection, TransportError> {
        let peer = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(to)
            .cloned()
            .ok_or_else(|| TransportError::UnknownNode(to.to_string()))?;
        let (addr, slot) = &*peer;
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let c = connect(&self.endpoint, *addr, to, self.connect_timeout)
            .await
            .map_err(|e| TransportError::Unreachable(format!("{to} ({addr}): {e}")))?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

impl Transport for QuicTransport {
    fn learn_peer(&self, name: &str, addr: SocketAddr) {
        if name == self.me {
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if peers.get(name).is_some_and(|p| p.0 == addr) {
            return;
        }
        peers.insert(
            name.to_string(),
            Arc::new((addr, tokio::sync::Mutex::new(None))),
        );
    }

    fn call(
        &self,
        to: &str,
        req: PeerRequest,
    ) -> BoxFuture<'_, Result<PeerResponse, TransportError>> {
        let to = to.to_string();
        Box::pin(async move {
            let conn = self.connection(&to).await?;
            let frame = proto::encode(&Message::Peer {
                from: self.me.clone(),
                req,
            });
            let bytes = exchange(&conn, &frame, self.max_frame)
                .await
                .map_err(|e| match e {
                    ExchangeError::Connection(m) => {
                        TransportError::Unreachable(format!("{to}: {m}"))
                    }
                    ExchangeError::Reset(_) => TransportError::Unreachable(format!("{to}: {e}")),
                    ExchangeError::Reply(p) => TransportError::Protocol(p.to_string()),
                })?;
            match proto::decode::<Reply>(&bytes, self.max_frame) {
                Ok(Reply::Peer(r)) => Ok(r),
                Ok(Reply::Client(c)) => Err(TransportError::Protocol(format!(
                    "{to} sent a client reply: {c:?}"
                ))),
                Err(e) => Err(TransportError::Protocol(e.to_string())),
            }
        })
    }
}
