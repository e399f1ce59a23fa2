//! An in-process network for tests and the simulator: every node registers its handler
//! and its environment; the test or simulation cuts links (one way or both), crashes
//! nodes, and sets per-link latency, loss and duplication drawn from a seeded generator.
//!
//! It behaves as a network does, not as a function call: a request is encoded, travels as
//! a task of the network (so it still arrives if the caller gives up), and is handled in
//! a task of the *receiver's* environment (so it dies if the receiver crashes, and runs
//! on the receiver's clock); the reply travels back the same way. Messages are encoded
//! and decoded exactly as over QUIC, so a type that does not survive the wire fails here
//! too. A cut link or a lost message *drops* silently (the caller's timeout fires, as with
//! an iptables DROP rule); a crashed node is refused at once. Independent latencies per
//! message reorder them.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{PeerHandler, Transport, TransportError};
use crate::env::{BoxFuture, Env, Rng, TokioEnv};
use crate::proto::{self, Message, PeerRequest, PeerResponse, Reply};

/// How long after a stalled node wakes the replies that waited for it are delivered: its
/// overdue timers run first, as a real process's do before it drains its socket.
const STALL_BACKLOG: Duration = Duration::from_millis(1);

/// Frame limit inside the simulated network.
const MAX_FRAME: usize = 64 << 20;

/// Faults every message meets, drawn per message from the network's seeded generator.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkFaults {
    /// Least one-way delay.
    pub latency_min: Duration,
    /// Greatest one-way delay (uniform between the two).
    pub latency_max: Duration,
    /// Probability that a message (request or reply) is lost.
    pub drop: f64,
    /// Probability that a request is delivered twice (a retransmission or a retry). Only
    /// idempotent requests are (`PeerRequest::idempotent`).
    pub duplicate: f64,
    /// Extra delay, uniform in 0..this, added to every message on top of its link's own
    /// latency (congestion).
    pub extra_latency: Duration,
}

impl Default for LinkFaults {
    fn default() -> Self {
        LinkFaults {
            latency_min: Duration::ZERO,
            latency_max: Duration::ZERO,
            drop: 0.0,
            duplicate: 0.0,
            extra_latency: Duration::ZERO,
        }
    }
}

/// What happened to a message, for the simulator's event trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A request left `from` (with its sequence number and kind).
    Send {
        /// Message number.
        id: u64,
        /// Sender.
        from: String,
        /// Receiver.
        to: String,
        /// Request kind.
        kind: &'static str,
    },
    /// Message `id` was lost (cut link, crashed receiver, or chance).
    Drop {
        /// Message number.
        id: u64,
        /// Why.
        why: &'static str,
    },
    /// Request `id` reached its receiver's handler.
    Deliver {
        /// Message number.
        id: u64,
    },
    /// The reply to request `id` reached the caller.
    Reply {
        /// Message number.
        id: u64,
    },
}

type Observer = Arc<dyn Fn(&NetEvent) + Send + Sync>;

struct Endpoint {
    handler: Weak<dyn PeerHandler>,
    env: Arc<dyn Env>,
}

struct State {
    nodes: HashMap<String, Endpoint>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(String, String)>,
    /// Crashed nodes: calls to them fail immediately.
    down: HashSet<String>,
    /// Stalled nodes, until when: requests and replies to them wait in their "socket
    /// buffer" until just after the stall ends, so their overdue timers run first, as in
    /// a real process.
    stalled: HashMap<String, crate::env::Instant>,
    faults: LinkFaults,
    /// Latency ranges of particular directed links (from, to), replacing the default.
    links: HashMap<(String, String), (Duration, Duration)>,
    rng: Rng,
    next_id: u64,
    observer: Option<Observer>,
}

impl State {
    fn note(&self, e: NetEvent) {
        if let Some(o) = &self.observer {
            o(&e);
        }
    }

    /// The delay of the next message from `from` to `to`.
    fn latency(&mut self, from: &str, to: &str) -> Duration {
        let (lo, hi) = match self.links.get(&(from.to_string(), to.to_string())) {
            Some(range) => *range,
            None => (self.faults.latency_min, self.faults.latency_max),
        };
        let mut d = lo;
        if hi > lo {
            d += Duration::from_nanos(self.rng.below((hi - lo).as_nanos() as u64 + 1));
        }
        let extra = self.faults.extra_latency.as_nanos() as u64;
        if extra > 0 {
            d += Duration::from_nanos(self.rng.below(extra + 1));
        }
        d
    }

    /// Whether the next message is lost by chance.
    fn lose(&mut self) -> bool {
        let p = self.faults.drop;
        self.rng.chance(p)
    }

    /// Whether the next request is delivered twice.
    fn duplicates(&mut self) -> bool {
        let p = self.faults.duplicate;
        self.rng.chance(p)
    }

    fn cut(&self, from: &str, to: &str) -> bool {
        // Fast path: most runs have no cut at all.
        !self.cut.is_empty() && self.cut.contains(&(from.to_string(), to.to_string()))
    }
}

/// The shared network.
#[derive(Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<State>>,
    /// Timers and tasks of messages in flight.
    env: Arc<dyn Env>,
}

impl Default for MemoryNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryNetwork {
    /// A network with no faults, on the real tokio runtime.
    pub fn new() -> Self {
        Self::with_env(TokioEnv::system(), 0)
    }

    /// A network whose messages travel on `env`'s timers and tasks, with faults drawn from
    /// `seed` (the simulator passes its own environment and the run's seed).
    pub fn with_env(env: Arc<dyn Env>, seed: u64) -> Self {
        MemoryNetwork {
            state: Arc::new(Mutex::new(State {
                nodes: HashMap::new(),
                cut: HashSet::new(),
                down: HashSet::new(),
                stalled: HashMap::new(),
                faults: LinkFaults::default(),
                links: HashMap::new(),
                rng: Rng::new(seed),
                next_id: 0,
                observer: None,
            })),
            env,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attach a node's handler under `name`; its requests run on `env` (a restarted node
    /// registers again, replacing the crashed one).
    pub fn register(&self, name: &str, handler: Weak<dyn PeerHandler>, env: Arc<dyn Env>) {
        self.lock()
            .nodes
            .insert(name.to_string(), Endpoint { handler, env });
    }

    /// Report every message's fate to `observer` (the simulator's trace).
    pub fn observe(&self, observer: Observer) {
        self.lock().observer = Some(observer);
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

    /// Hold requests and replies to `name` until just after `until` (its process stalls until then;
    /// see `sim::env::SimEnv::stall`).
    pub fn stall(&self, name: &str, until: crate::env::Instant) {
        self.lock().stalled.insert(name.to_string(), until);
    }

    /// Add the same one-way delay to every message.
    pub fn set_latency(&self, latency: Duration) {
        let mut s = self.lock();
        s.faults.latency_min = latency;
        s.faults.latency_max = latency;
    }

    /// Give the directed link `from` → `to` its own latency range (uniform).
    pub fn set_link_latency(&self, from: &str, to: &str, min: Duration, max: Duration) {
        self.lock()
            .links
            .insert((from.to_string(), to.to_string()), (min, max.max(min)));
    }

    /// Set the default latency distribution, loss, duplication and congestion of every
    /// link.
    pub fn set_faults(&self, faults: LinkFaults) {
        self.lock().faults = faults;
    }

    /// Carry request `id` (encoded as `frame`) from `from` to `to` after `delay`, run it in
    /// the receiver's environment, and carry the reply back to `reply` (if any).
    fn deliver(
        &self,
        id: u64,
        from: String,
        to: String,
        frame: Vec<u8>,
        delay: Duration,
        reply: Option<tokio::sync::oneshot::Sender<Result<PeerResponse, TransportError>>>,
    ) {
        let net = self.clone();
        self.env.spawn(Box::pin(async move {
            if !delay.is_zero() {
                net.env.sleep_until(net.env.now() + delay).await;
            }
            let stalled = net.lock().stalled.get(&to).copied();
            if let Some(until) = stalled.filter(|u| *u >= net.env.now()) {
                net.env.sleep_until(until + STALL_BACKLOG).await;
            }
            let (handler, env) = {
                let s = net.lock();
                let why = if s.down.contains(&to) {
                    Some("receiver down")
                } else if s.cut(&from, &to) {
                    Some("link cut")
                } else {
                    None
                };
                let endpoint = s
                    .nodes
                    .get(&to)
                    .and_then(|e| Some((e.handler.upgrade()?, Arc::clone(&e.env))));
                match (why, endpoint) {
                    (None, Some(ep)) => {
                        s.note(NetEvent::Deliver { id });
                        ep
                    }
                    (why, _) => {
                        s.note(NetEvent::Drop {
                            id,
                            why: why.unwrap_or("receiver gone"),
                        });
                        return;
                    }
                }
            };
            let req = match proto::decode::<Message>(&frame, MAX_FRAME) {
                Ok(Message::Peer { req, .. }) => req,
                Ok(_) => {
                    if let Some(tx) = reply {
                        let _ = tx.send(Err(TransportError::Protocol("not a peer message".into())));
                    }
                    return;
                }
                Err(e) => {
                    if let Some(tx) = reply {
                        let _ = tx.send(Err(TransportError::Protocol(e.to_string())));
                    }
                    return;
                }
            };
            let receiver_env = Arc::clone(&env);
            receiver_env.spawn(Box::pin(async move {
                let resp = handler.handle_peer(from.clone(), req).await;
                let Some(tx) = reply else { return };
                let frame = proto::encode(&Reply::Peer(resp));
                let delay = {
                    let mut s = net.lock();
                    let lost = if s.cut(&to, &from) {
                        Some("reply link cut")
                    } else if s.lose() {
                        Some("reply lost")
                    } else {
                        None
                    };
                    if let Some(why) = lost {
                        s.note(NetEvent::Drop { id, why });
                        return;
                    }
                    s.latency(&to, &from)
                };
                let back = net.clone();
                net.env.spawn(Box::pin(async move {
                    if !delay.is_zero() {
                        back.env.sleep_until(back.env.now() + delay).await;
                    }
                    let stalled = back.lock().stalled.get(&from).copied();
                    if let Some(until) = stalled.filter(|u| *u >= back.env.now()) {
                        back.env.sleep_until(until + STALL_BACKLOG).await;
                    }
                    let resp = match proto::decode::<Reply>(&frame, MAX_FRAME) {
                        Ok(Reply::Peer(r)) => Ok(r),
                        Ok(_) => Err(TransportError::Protocol("not a peer reply".into())),
                        Err(e) => Err(TransportError::Protocol(e.to_string())),
                    };
                    back.lock().note(NetEvent::Reply { id });
                    let _ = tx.send(resp);
                }));
            }));
        }));
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
            let kind = req.kind();
            let idempotent = req.idempotent();
            let frame = proto::encode(&Message::Peer {
                from: self.me.clone(),
                req,
            });
            let (tx, rx) = tokio::sync::oneshot::channel();
            {
                let mut s = self.net.lock();
                if s.down.contains(&to) || s.down.contains(&self.me) {
                    return Err(TransportError::Unreachable(format!("{to} is down")));
                }
                if !s.nodes.contains_key(&to) {
                    return Err(TransportError::UnknownNode(to));
                }
                let id = s.next_id;
                s.next_id += 1;
                s.note(NetEvent::Send {
                    id,
                    from: self.me.clone(),
                    to: to.clone(),
                    kind,
                });
                let lost = if s.cut(&self.me, &to) {
                    Some("link cut")
                } else if s.lose() {
                    Some("lost")
                } else {
                    None
                };
                match lost {
                    Some(why) => s.note(NetEvent::Drop { id, why }),
                    None => {
                        // Only requests the protocol may receive twice are duplicated: a
                        // QUIC stream delivers a request at most once, and the writes a lead
                        // applies (write, write-batch, update) are deliberately not
                        // idempotent (each issues a new version).
                        let duplicate = idempotent && s.duplicates();
                        let delay = s.latency(&self.me, &to);
                        let second = duplicate.then(|| s.latency(&self.me, &to));
                        drop(s);
                        if let Some(d2) = second {
                            // The copy's reply goes nowhere: the caller takes the first.
                            let net = &self.net;
                            net.deliver(id, self.me.clone(), to.clone(), frame.clone(), d2, None);
                        }
                        self.net
                            .deliver(id, self.me.clone(), to.clone(), frame, delay, Some(tx));
                    }
                }
            }
            match rx.await {
                Ok(r) => r,
                // Lost on the way there or back: silence, as on a real network. The
                // caller's deadline ends the wait.
                Err(_) => std::future::pending().await,
            }
        })
    }
}
