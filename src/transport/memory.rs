//! An in-process network for tests and simulation: every node registers its handler, and
//! the test cuts links (one way or both), crashes nodes and adds latency.
//!
//! Messages are encoded and decoded on the way, exactly as over QUIC, so a type that does
//! not survive the wire fails here too. A cut link *drops* requests silently (the caller's
//! timeout fires, as with an iptables DROP rule); a crashed node is refused at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{BoxFuture, PeerHandler, Transport, TransportError};
use crate::proto::{self, Message, PeerRequest, PeerResponse, Reply};

/// Frame limit inside the simulated network.
const MAX_FRAME: usize = 64 << 20;

#[derive(Default)]
struct State {
    nodes: HashMap<String, Weak<dyn PeerHandler>>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(String, String)>,
    /// Crashed nodes: calls to them fail immediately.
    down: HashSet<String>,
    /// One-way delay added to every message.
    latency: Duration,
}

/// The shared network.
#[derive(Default, Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<State>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attach a node's handler under `name`.
    pub fn register(&self, name: &str, handler: Weak<dyn PeerHandler>) {
        self.lock().nodes.insert(name.to_string(), handler);
    }

    /// The transport a node named `me` uses to send.
    pub fn transport(&self, me: &str) -> MemoryTransport {
        MemoryTransport {
            net: self.clone(),
            me: me.to_string(),
        }
    }

    /// Drop every message from `from` to `to` (one direction).
    pub fn cut_one_way(&self, from: &str, to: &str) {
        self.lock().cut.insert((from.to_string(), to.to_string()));
    }

    /// Drop every message between `a` and `b`, both directions.
    pub fn cut(&self, a: &str, b: &str) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Split the cluster: no message crosses between `side_a` and `side_b`.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        for a in side_a {
            for b in side_b {
                self.cut(a, b);
            }
        }
    }

    /// Remove every cut.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Mark `name` crashed (calls to it are refused) or back up.
    pub fn set_down(&self, name: &str, down: bool) {
        let mut s = self.lock();
        if down {
            s.down.insert(name.to_string());
        } else {
            s.down.remove(name);
        }
    }

    /// Add a one-way delay to every message.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }
}

/// One node's view of the network.
#[derive(Clone)]
pub struct MemoryTransport {
    net: MemoryNetwork,
    me: String,
}

impl Transport for MemoryTransport {
    fn call(
        &self,
        to: &str,
        req: PeerRequest,
    ) -> BoxFuture<'_, Result<PeerResponse, TransportError>> {
        let to = to.to_string();
        Box::pin(async move {
            let (handler, latency, forward_cut, back_cut) = {
                let s = self.net.lock();
                if s.down.contains(&to) || s.down.contains(&self.me) {
                    return Err(TransportError::Unreachable(format!("{to} is down")));
                }
                let handler = s
                    .nodes
                    .get(&to)
                    .and_then(|w| w.upgrade())
                    .ok_or_else(|| TransportError::UnknownNode(to.clone()))?;
                let fwd = s.cut.contains(&(self.me.clone(), to.clone()));
                let back = s.cut.contains(&(to.clone(), self.me.clone()));
                (handler, s.latency, fwd, back)
            };
            if forward_cut {
                // Dropped on the way: the request never arrives.
                std::future::pending::<()>().await;
            }
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let frame = proto::encode(&Message::Peer {
                from: self.me.clone(),
                req,
            });
            let (from, req) = match proto::decode::<Message>(&frame, MAX_FRAME) {
                Ok(Message::Peer { from, req }) => (from, req),
                Ok(_) => return Err(TransportError::Protocol("not a peer message".into())),
                Err(e) => return Err(TransportError::Protocol(e.to_string())),
            };
            let resp = handler.handle_peer(from, req).await;
            if back_cut {
                // The request took effect, but the reply is lost.
                std::future::pending::<()>().await;
            }
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let frame = proto::encode(&Reply::Peer(resp));
            match proto::decode::<Reply>(&frame, MAX_FRAME) {
                Ok(Reply::Peer(r)) => Ok(r),
                Ok(_) => Err(TransportError::Protocol("not a peer reply".into())),
                Err(e) => Err(TransportError::Protocol(e.to_string())),
            }
        })
    }
}
