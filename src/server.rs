//! The QUIC server: accepts connections, reads one frame per stream, hands it to the
//! node and writes the reply.
//!
//! Bad input is contained per connection: a frame over the size limit or bytes that do
//! not decode close *that* connection with an error code and a log line; every other
//! connection keeps being served. A semaphore bounds requests in flight across all
//! connections so a flood queues in QUIC flow control instead of in our memory.

use std::sync::Arc;

use quinn::{Connection, Endpoint, VarInt};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::access::ClientIdentity;
use crate::node::Node;
use crate::proto::{self, Message, PeerError, PeerResponse, Reply};
use crate::tls::{self, Role};

/// Application close code: the peer sent a frame over the size limit.
pub const CLOSE_FRAME_TOO_LARGE: u32 = 1;
/// Application close code: the peer sent bytes that are not a valid frame.
pub const CLOSE_MALFORMED: u32 = 2;
/// Application close code: the peer's certificate carries no usable role.
pub const CLOSE_FORBIDDEN: u32 = 3;

/// Serve `endpoint` until it is closed.
pub async fn serve(endpoint: Endpoint, node: Arc<Node>, max_frame: usize, max_inflight: usize) {
    let slots = Arc::new(Semaphore::new(max_inflight));
    while let Some(incoming) = endpoint.accept().await {
        let (node, slots) = (Arc::clone(&node), Arc::clone(&slots));
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, node, max_frame, slots).await,
                Err(e) => tracing::debug!(%remote, error = %e, "handshake failed"),
            }
        });
    }
}

async fn serve_connection(
    conn: Connection,
    node: Arc<Node>,
    max_frame: usize,
    slots: Arc<Semaphore>,
) {
    let remote = conn.remote_address();
    let Some((role, cert_name)) = tls::peer_role(conn.peer_identity()) else {
        tracing::warn!(%remote, "certificate has no quorumkv role; closing");
        conn.close(
            VarInt::from_u32(CLOSE_FORBIDDEN),
            b"certificate has no role",
        );
        return;
    };
    let span = tracing::debug_span!("connection", %remote, peer = %cert_name);
    async move {
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(reason = %e, "connection ended");
                    return;
                }
            };
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
            let (node, conn, cert_name) = (Arc::clone(&node), conn.clone(), cert_name.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let bytes = match recv.read_to_end(max_frame).await {
                    Ok(b) => b,
                    Err(quinn::ReadToEndError::TooLong) => {
                        tracing::warn!(%remote, max_frame, "frame over the size limit; closing connection");
                        conn.close(VarInt::from_u32(CLOSE_FRAME_TOO_LARGE), b"frame too large");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "stream read failed");
                        return;
                    }
                };
                let msg = match proto::decode_for_role(&bytes, max_frame, role) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%remote, error = %e, "malformed frame; closing connection");
                        conn.close(VarInt::from_u32(CLOSE_MALFORMED), e.to_string().as_bytes());
                        return;
                    }
                };
                let reply = match msg {
                    Message::Client(req) => {
                        let who = ClientIdentity { name: cert_name, role };
                        Reply::Client(node.handle_client(who, req).await)
                    }
                    Message::Peer { from, req } => {
                        if role != Role::Node || cert_name != from {
                            tracing::warn!(%remote, %from, %cert_name, "peer request without a matching node certificate");
                            Reply::Peer(PeerResponse::Error(PeerError::Forbidden(format!(
                                "peer requests need the node certificate of {from:?}; this connection presented {cert_name:?}"
                            ))))
                        } else {
                            Reply::Peer(node.handle_peer_request(from, req).await)
                        }
                    }
                };
                if let Err(e) = send.write_all(&proto::encode(&reply)).await {
                    tracing::debug!(%remote, error = %e, "reply write failed");
                    return;
                }
                let _ = send.finish();
            });
        }
    }
    .instrument(span)
    .await
}
