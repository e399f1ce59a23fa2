//! The `sim` target: the harness's workloads, clients, checkers and reports run against
//! the deterministic simulator's cluster ([`crate::sim`]) instead of processes — the same
//! `Node` code on simulated machines, network, disks and clocks, in one thread on a
//! paused tokio runtime, so a run of 60 s takes a fraction of that and one seed gives one
//! history. Its nemesis injects the same faults as the containers target, minus `pause`
//! (a simulated process is either running or crashed): `kill` is a power loss of the
//! machine and a restart from its disk, partitions cut the in-memory links in the shapes
//! of `scripts/netsplit.sh`, and `clock-skew` jumps a machine's clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_like::Value;

use crate::env::Rng;
use crate::keyspace::KeyspaceDef;
use crate::proto::ClientRequest;
use crate::sim::cluster::{ClusterSpec, SimCluster};
use crate::sim::nemesis::{cuts, Shape};

use super::client::{Outcome, Transport};
use super::nemesis::{NodeControl, TargetNemesis};
use super::HarnessError;

/// Faults the sim target can inject.
pub const FAULTS: [&str; 7] = [
    "kill",
    "clock-skew",
    "partition-halves",
    "partition-majorities-ring",
    "partition-bridge",
    "partition-one",
    "partition-oneway",
];

/// The coordinator's timeout in the simulated cluster (as in `quorumkv sim`).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a client takes to give up connecting to a node that is down.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// A simulated cluster shared by the run's clients and nemesis.
#[derive(Clone)]
pub struct SimTarget {
    cluster: Arc<Mutex<SimCluster>>,
}

impl SimTarget {
    /// Boot `nodes` simulated nodes that all define `keyspace`, drawn from `seed`. Must be
    /// called on a paused current-thread runtime (the harness builds one).
    pub fn start(
        seed: u64,
        nodes: usize,
        keyspace: KeyspaceDef,
        anti_entropy: crate::config::AntiEntropyConfig,
    ) -> Result<SimTarget, HarnessError> {
        if !(1..=16).contains(&nodes) {
            return Err(HarnessError::Cluster(format!(
                "--nodes must be between 1 and 16 for the sim target (got {nodes})"
            )));
        }
        let mut rng = Rng::new(seed);
        let origin = crate::sim::env::now();
        let (net, _) = crate::sim::network(&mut rng, nodes, origin);
        let spec = ClusterSpec {
            nodes,
            keyspaces: vec![keyspace],
            request_timeout: REQUEST_TIMEOUT,
            speculative_read: std::time::Duration::from_millis(
                crate::config::DEFAULT_SPECULATIVE_READ_MS,
            ),
            unsynced: false,
            bugs: Default::default(),
            keep_incarnation: false,
            overlap_lead_sync: false,
            anti_entropy,
            hints: Default::default(),
            tombstones: Default::default(),
            detector: Default::default(),
        };
        let cluster = SimCluster::start(spec, net, origin, &mut rng).map_err(|e| {
            HarnessError::Cluster(format!("cannot start the simulated cluster: {e}"))
        })?;
        Ok(SimTarget {
            cluster: Arc::new(Mutex::new(cluster)),
        })
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, SimCluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The nodes' names.
    pub fn names(&self) -> Vec<String> {
        self.cluster()
            .machines()
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// A transport to node `i`.
    pub fn transport(&self, i: usize) -> SimTransport {
        SimTransport {
            name: format!("n{}", i + 1),
            i,
            target: self.clone(),
        }
    }
}

/// Requests to one simulated node's coordinator.
pub struct SimTransport {
    name: String,
    i: usize,
    target: SimTarget,
}

impl Transport for SimTransport {
    fn node(&self) -> &str {
        &self.name
    }

    fn request(&self, req: ClientRequest) -> impl std::future::Future<Output = Outcome> + Send {
        let rx = self.target.cluster().request(self.i, req);
        let name = self.name.clone();
        async move {
            let Some(rx) = rx else {
                // A client finds a dead node out only when its connection attempt gives
                // up; answering at once would also let a worker spin through failures
                // without simulated time passing at all.
                tokio::time::sleep(CONNECT_TIMEOUT).await;
                return Outcome::Refused(format!("{name} is down"));
            };
            // A little longer than the coordinator's own timeout, so a slow answer counts.
            match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_millis(500), rx).await {
                Ok(Ok(resp)) => Outcome::Answer(resp),
                Ok(Err(_)) => Outcome::Lost(format!("{name} crashed while coordinating")),
                Err(_) => Outcome::Lost(format!("no reply from {name}")),
            }
        }
    }
}

/// What the sim target can do to its machines: power loss and restart, clock jumps,
/// and cuts of the in-memory links in the shapes of `scripts/netsplit.sh`. There is no
/// pause: a simulated process is either running or crashed.
pub struct SimControl {
    target: SimTarget,
    /// Each machine's clock offset now, so a reset jumps back by exactly as much.
    offsets: Vec<i64>,
}

impl SimControl {
    /// The control of `target`'s machines.
    pub fn new(target: SimTarget) -> Self {
        let n = target.names().len();
        SimControl {
            target,
            offsets: vec![0; n],
        }
    }
}

impl NodeControl for SimControl {
    fn target(&self) -> &'static str {
        "sim"
    }

    fn supported(&self) -> &'static [&'static str] {
        &FAULTS
    }

    fn names(&self) -> Vec<String> {
        self.target.names()
    }

    async fn kill(&mut self, i: usize) -> Result<(), String> {
        self.target.cluster().crash(i);
        Ok(())
    }

    async fn restart(&mut self, i: usize) -> Result<(), String> {
        self.target
            .cluster()
            .restart(i)
            .map_err(|e| format!("n{} did not restart: {e}", i + 1))
    }

    async fn pause(&mut self, _i: usize, _pause: bool) -> Result<(), String> {
        Err("the sim target cannot pause a node".into())
    }

    async fn set_clock(&mut self, i: usize, ms: i64) -> Result<Value, String> {
        let by = ms - self.offsets[i];
        self.target.cluster().machines()[i].clock.jump(by);
        self.offsets[i] = ms;
        Ok(Value::Vector(vec![
            Value::Str(format!("n{}", i + 1)),
            Value::Int(ms),
        ]))
    }

    async fn partition(&mut self, shape: &str, order: Vec<usize>) -> Result<Value, String> {
        let shape = match shape {
            "halves" => Shape::Halves,
            "majorities-ring" => Shape::MajoritiesRing,
            "bridge" => Shape::Bridge,
            "one" => Shape::Isolate,
            "oneway" => Shape::OneWay,
            other => return Err(format!("no partition shape {other:?}")),
        };
        let c = self.target.cluster();
        c.net.heal();
        let cut = cuts(shape, &order);
        for (a, b) in &cut {
            c.net
                .cut_one_way(&format!("n{}", a + 1), &format!("n{}", b + 1));
        }
        Ok(Value::Vector(vec![
            Value::kw("partition"),
            Value::Str(shape.name().into()),
            Value::Vector(
                cut.iter()
                    .map(|(a, b)| Value::Str(format!("n{}->n{}", a + 1, b + 1)))
                    .collect(),
            ),
        ]))
    }

    async fn heal_partition(&mut self) -> Result<(), String> {
        self.target.cluster().net.heal();
        Ok(())
    }
}

/// The sim target's nemesis.
pub type SimNemesis = TargetNemesis<SimControl>;
