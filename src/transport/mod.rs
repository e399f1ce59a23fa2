//! Transport: how a node sends a peer request and gets the reply.
//!
//! The coordinator and replicas only see the [`Transport`] trait, so the same protocol
//! code runs over real QUIC ([`quic::QuicTransport`]) and over an in-process network
//! ([`memory::MemoryNetwork`]) whose links tests cut, heal and crash. The trait has no
//! timeouts: the caller bounds every call, which keeps time in one place (the coordinator).

pub mod memory;
pub mod quic;

pub use crate::env::BoxFuture;
use crate::proto::{PeerRequest, PeerResponse};

/// Why a peer call produced no reply.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// No connection could be made, or it broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer answered with something that is not a valid reply.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The name is not a cluster member.
    #[error("unknown node {0:?}")]
    UnknownNode(String),
}

/// Sends requests to peers.
pub trait Transport: Send + Sync + 'static {
    /// Send `req` to node `to` and wait for its reply. May wait forever (e.g. a silently
    /// dropped packet); callers wrap it in a timeout.
    fn call(
        &self,
        to: &str,
        req: PeerRequest,
    ) -> BoxFuture<'_, Result<PeerResponse, TransportError>>;

    /// Learn (or update) where node `name` listens: a layout version added it. Transports
    /// that route by name alone (the in-process network) need not care.
    fn learn_peer(&self, _name: &str, _addr: std::net::SocketAddr) {}
}

/// The receiving side of a transport: a node.
pub trait PeerHandler: Send + Sync + 'static {
    /// Handle a request from peer `from`.
    fn handle_peer(
        self: std::sync::Arc<Self>,
        from: String,
        req: PeerRequest,
    ) -> BoxFuture<'static, PeerResponse>;
}
