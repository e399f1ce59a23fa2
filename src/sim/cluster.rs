//! The simulated cluster: nodes built exactly as a real process builds them (the same
//! `Node`, coordinator, replica and storage code), each on its own simulated machine —
//! a [`SimDisk`], a [`SimClock`] — and process ([`SimEnv`]), wired by the in-memory
//! network. Crash and restart replace the process and keep the machine.
//!
//! A cluster may have *spare* machines beyond the layout's nodes: they boot with the
//! layout's member list, which does not name them, so they start outside the layout (as a
//! node an operator is about to `join` does) and own nothing until a join is committed.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::sync::Arc;
use std::time::Duration;

use crate::access::ClientIdentity;
use crate::config::{Limits, Member, DEFAULT_VNODES};
use crate::context::ContextKey;
use crate::env::{Env, Rng};
use crate::keyspace::KeyspaceDef;
use crate::node::{Node, NodeError, NodeParams};
use crate::proto::{ClientRequest, ClientResponse};
use crate::replica::InjectedBugs;
use crate::transport::memory::MemoryNetwork;
use crate::transport::PeerHandler;

use super::env::{SimClock, SimEnv};
use super::storage::SimDisk;

/// One simulated machine and the process running on it, if any.
pub struct Machine {
    /// The node's name.
    pub name: String,
    /// Its disk (survives crashes).
    pub disk: Arc<SimDisk>,
    /// Its wall clock (survives crashes).
    pub clock: Arc<SimClock>,
    process: Option<(Arc<Node>, Arc<SimEnv>)>,
}

/// Everything that is fixed for a run's cluster.
pub struct ClusterSpec {
    /// Node count.
    pub nodes: usize,
    /// Keyspaces every node's config defines.
    pub keyspaces: Vec<KeyspaceDef>,
    /// Coordinator timeout.
    pub request_timeout: Duration,
    /// Every node's `timeouts.speculative_read_ms` (zero: reads ask all N at once).
    pub speculative_read: Duration,
    /// Nodes run with `sync = false` (writes synced only by periodic flushes).
    pub unsynced: bool,
    /// Re-introduced bug classes.
    pub bugs: InjectedBugs,
    /// Re-introduced bug: restart an unsynced node under its old incarnation.
    pub keep_incarnation: bool,
    /// Every node overlaps its lead's fsync with replication (`storage.overlap_lead_sync`;
    /// not with `unsynced`, where nothing is fsync'd).
    pub overlap_lead_sync: bool,
    /// Every node's `[anti_entropy]`.
    pub anti_entropy: crate::config::AntiEntropyConfig,
    /// Every node's `[hints]` (sloppy quorum and hinted handoff).
    pub hints: crate::config::HintsConfig,
    /// Every node's `[tombstones]` (reaping).
    pub tombstones: crate::config::TombstonesConfig,
    /// Every node's `[detector]` (failure detection).
    pub detector: crate::config::DetectorConfig,
}

/// Machine `i`'s member entry.
fn member(i: usize) -> Member {
    Member {
        name: format!("n{}", i + 1),
        // Names route in the in-memory network; the address only has to be unique.
        addr: std::net::SocketAddr::from(([10, 0, 0, (i + 1) as u8], 7000)),
        zone: None,
    }
}

/// The cluster.
pub struct SimCluster {
    spec: ClusterSpec,
    members: Vec<Member>,
    machines: Vec<Machine>,
    /// The network (partitions, loss, latency).
    pub net: MemoryNetwork,
    context_key: ContextKey,
    rng: Rng,
}

impl SimCluster {
    /// Build and boot every node.
    pub fn start(
        spec: ClusterSpec,
        net: MemoryNetwork,
        origin: crate::env::Instant,
        rng: &mut Rng,
    ) -> Result<Self, NodeError> {
        Self::start_with_spares(spec, 0, net, origin, rng)
    }

    /// Build and boot the `spec.nodes` layout nodes `n1..`, and `spares` more machines
    /// after them that start outside the layout (the membership fault's joining node).
    pub fn start_with_spares(
        spec: ClusterSpec,
        spares: usize,
        net: MemoryNetwork,
        origin: crate::env::Instant,
        rng: &mut Rng,
    ) -> Result<Self, NodeError> {
        let members: Vec<Member> = (0..spec.nodes).map(member).collect();
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let machines = (0..spec.nodes + spares)
            .map(member)
            .map(|m| Machine {
                name: m.name,
                disk: SimDisk::new(spec.unsynced, rng.next_u64()),
                clock: SimClock::new(origin),
                process: None,
            })
            .collect();
        let mut c = SimCluster {
            spec,
            members,
            machines,
            net,
            context_key: ContextKey::from_bytes(&key),
            rng: rng.fork(),
        };
        for i in 0..c.machines.len() {
            c.boot(i, true)?;
        }
        Ok(c)
    }

    /// Machine `i`'s member entry (name `n{i+1}`, a made-up address): what a `join` of it
    /// names.
    pub fn member(&self, i: usize) -> Member {
        member(i)
    }

    /// Machine count (layout nodes and spares).
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// Whether the cluster has no nodes (never: a run needs at least one).
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// The machines.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// Node `i`'s running process, if it is up.
    pub fn node(&self, i: usize) -> Option<(Arc<Node>, Arc<SimEnv>)> {
        self.machines[i].process.clone()
    }

    /// Whether node `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.machines[i].process.is_some()
    }

    fn boot(&mut self, i: usize, first: bool) -> Result<(), NodeError> {
        let env = SimEnv::new(Arc::clone(&self.machines[i].clock), self.rng.next_u64());
        let storage = Arc::new(self.machines[i].disk.open());
        let name = self.machines[i].name.clone();
        let sync = !self.spec.unsynced;
        let new_incarnation = !first
            && !self.spec.keep_incarnation
            && crate::replica::starts_new_incarnation(sync, false);
        let node = Node::new(NodeParams {
            name: name.clone(),
            members: self.members.clone(),
            vnodes: DEFAULT_VNODES,
            storage,
            transport: Arc::new(self.net.transport(&name)),
            env: env.clone(),
            limits: Limits::default(),
            request_timeout: self.spec.request_timeout,
            speculative_read: self.spec.speculative_read,
            keyspaces: self.spec.keyspaces.clone(),
            context_key: self.context_key.clone(),
            new_incarnation,
            overlap_lead_sync: self.spec.overlap_lead_sync && sync,
            bugs: self.spec.bugs,
            clock_offset: None,
            anti_entropy: self.spec.anti_entropy.clone(),
            hints: self.spec.hints.clone(),
            tombstones: self.spec.tombstones.clone(),
            detector: self.spec.detector.clone(),
            membership: Default::default(),
        })?;
        let handler: Arc<dyn PeerHandler> = node.clone();
        self.net
            .register(&name, Arc::downgrade(&handler), env.clone());
        self.net.set_down(&name, false);
        // The failure detector, as a real node runs it.
        env.spawn(Box::pin(node.run_detector()));
        // Layout gossip and transfers, as a real node runs them.
        env.spawn(Box::pin(node.run_membership()));
        // Anti-entropy exchanges, as a real node runs them.
        if let Some(ae) = node.anti_entropy() {
            env.spawn(Box::pin(Arc::clone(ae).run()));
        }
        // Tombstone reaping, as a real node runs it.
        if let Some(r) = node.reaper() {
            env.spawn(Box::pin(Arc::clone(r).run()));
        }
        self.machines[i].process = Some((node, env));
        Ok(())
    }

    /// Power off machine `i`: its process and unsynced writes are gone. Returns how many
    /// unsynced batches were lost.
    pub fn crash(&mut self, i: usize) -> usize {
        let m = &mut self.machines[i];
        self.net.set_down(&m.name, true);
        if let Some((_, env)) = m.process.take() {
            env.crash();
        }
        m.disk.crash()
    }

    /// Stall machine `i`'s process for `d` (a GC-like pause, a stopped VM): its tasks stop,
    /// its timers fire late, requests to it wait unanswered, replies to it wait until it
    /// wakes. Nothing is lost. No effect if it is down.
    pub fn stall(&self, i: usize, d: Duration) {
        if let Some((_, env)) = self.machines[i].process.as_ref() {
            let until = env.now() + d;
            env.stall(until);
            self.net.stall(&self.machines[i].name, until);
        }
    }

    /// Start a process on machine `i` again, on the disk it left.
    pub fn restart(&mut self, i: usize) -> Result<(), NodeError> {
        if self.machines[i].process.is_some() {
            return Ok(());
        }
        self.boot(i, false)
    }

    /// Send a client request to node `i`'s coordinator, run in that node's process (so a
    /// crash ends it mid-way, as it would a real coordinator).
    pub fn request(
        &self,
        i: usize,
        req: ClientRequest,
    ) -> Option<tokio::sync::oneshot::Receiver<ClientResponse>> {
        let (node, env) = self.node(i)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        env.spawn(Box::pin(async move {
            let resp = node
                .handle_client(ClientIdentity::admin("sim-client"), req)
                .await;
            let _ = tx.send(resp);
        }));
        Some(rx)
    }
}
