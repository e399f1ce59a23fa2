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
use super::local::skew_ms;
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
            unsynced: false,
            bugs: Default::default(),
            keep_incarnation: false,
            hints: Default::default(),
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

/// The sim target's nemesis.
pub struct SimNemesis {
    target: SimTarget,
    n: usize,
    crashed: Vec<usize>,
    skewed: Vec<(usize, i64)>,
}

impl SimNemesis {
    /// A nemesis over `target`; refuses faults it cannot inject.
    pub fn new(target: SimTarget, faults: &[String]) -> Result<Self, HarnessError> {
        for f in faults {
            if !FAULTS.contains(&f.as_str()) {
                return Err(HarnessError::UnsupportedFault {
                    target: "sim",
                    fault: f.clone(),
                    supported: FAULTS.join(", "),
                });
            }
        }
        let n = target.names().len();
        Ok(SimNemesis {
            target,
            n,
            crashed: Vec::new(),
            skewed: Vec::new(),
        })
    }

    fn victim(&self, draw: u64) -> Option<usize> {
        let healthy: Vec<usize> = (0..self.n)
            .filter(|i| !self.crashed.contains(i) && !self.skewed.iter().any(|(j, _)| j == i))
            .collect();
        (!healthy.is_empty()).then(|| healthy[(draw % healthy.len() as u64) as usize])
    }

    fn partition(&mut self, shape: Shape, draw: u64) -> Value {
        let mut rng = Rng::new(draw);
        let mut order: Vec<usize> = (0..self.n).collect();
        for i in (1..self.n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let c = self.target.cluster();
        c.net.heal();
        let cut = cuts(shape, &order);
        for (a, b) in &cut {
            c.net
                .cut_one_way(&format!("n{}", a + 1), &format!("n{}", b + 1));
        }
        Value::Vector(vec![
            Value::kw("partition"),
            Value::Str(shape.name().into()),
            Value::Vector(
                cut.iter()
                    .map(|(a, b)| Value::Str(format!("n{}->n{}", a + 1, b + 1)))
                    .collect(),
            ),
        ])
    }
}

impl jepsen_like::harness::Nemesis for SimNemesis {
    fn start(
        &mut self,
        fault: &str,
        draw: u64,
    ) -> impl std::future::Future<Output = Result<Value, String>> + Send {
        let result = match fault {
            "partition-halves" => Ok(self.partition(Shape::Halves, draw)),
            "partition-majorities-ring" => Ok(self.partition(Shape::MajoritiesRing, draw)),
            "partition-bridge" => Ok(self.partition(Shape::Bridge, draw)),
            "partition-one" => Ok(self.partition(Shape::Isolate, draw)),
            "partition-oneway" => Ok(self.partition(Shape::OneWay, draw)),
            "kill" => match self.victim(draw) {
                None => Err("every node is already hurt".to_string()),
                Some(i) => {
                    self.target.cluster().crash(i);
                    self.crashed.push(i);
                    Ok(Value::Vector(vec![
                        Value::kw("killed"),
                        Value::Str(format!("n{}", i + 1)),
                    ]))
                }
            },
            "clock-skew" => match self.victim(draw) {
                None => Err("every node is already hurt".to_string()),
                Some(i) => {
                    let ms = skew_ms(draw);
                    self.target.cluster().machines()[i].clock.jump(ms);
                    self.skewed.push((i, ms));
                    Ok(Value::Vector(vec![
                        Value::kw("clock-offset"),
                        Value::Vector(vec![Value::Str(format!("n{}", i + 1)), Value::Int(ms)]),
                    ]))
                }
            },
            other => Err(format!("the sim target cannot inject {other:?}")),
        };
        std::future::ready(result)
    }

    fn stop(
        &mut self,
        fault: &str,
    ) -> impl std::future::Future<Output = Result<Value, String>> + Send {
        std::future::ready(self.undo(fault))
    }

    fn heal_all(&mut self) -> impl std::future::Future<Output = Result<Value, String>> + Send {
        let mut healed = Vec::new();
        let mut error = None;
        for f in ["partition", "kill", "clock-skew"] {
            match self.undo(f) {
                Ok(v) => healed.push(v),
                Err(e) => error = Some(e),
            }
        }
        std::future::ready(match error {
            Some(e) => Err(e),
            None => Ok(Value::Vector(healed)),
        })
    }
}

impl SimNemesis {
    /// Undo what `fault` did (simulated faults heal at once).
    fn undo(&mut self, fault: &str) -> Result<Value, String> {
        let mut done = Vec::new();
        match fault {
            "kill" => {
                let mut failed = None;
                for i in std::mem::take(&mut self.crashed) {
                    if let Err(e) = self.target.cluster().restart(i) {
                        failed = Some(format!("n{} did not restart: {e}", i + 1));
                    }
                    done.push(Value::Str(format!("n{}", i + 1)));
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(Value::Vector(vec![
                        Value::kw("restarted"),
                        Value::Vector(done),
                    ])),
                }
            }
            "clock-skew" => {
                for (i, ms) in std::mem::take(&mut self.skewed) {
                    self.target.cluster().machines()[i].clock.jump(-ms);
                    done.push(Value::Str(format!("n{}", i + 1)));
                }
                Ok(Value::Vector(vec![
                    Value::kw("clock-reset"),
                    Value::Vector(done),
                ]))
            }
            _ => {
                self.target.cluster().net.heal();
                Ok(Value::kw("healed"))
            }
        }
    }
}
