//! One harness run from a checked plan to its stored report: start the target (node
//! processes, the compose cluster, or the simulator in this process), create the run's
//! keyspace, drive the workload through [`StoreClient`]s while the target's nemesis
//! injects faults, check that the replicas converged, and write the report with the
//! convergence check folded into the verdict.
//!
//! It lives in the library rather than in `quorumkv jepsen` so that tests can run a whole
//! plan in process (the `sim` target needs nothing outside it) and see the same
//! histories, verdicts and reports the command produces; the command keeps only argument
//! parsing, validation messages and printing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_like::harness::{self as jh, HistorySink, RunDir, RunOptions, RunRecord};
use jepsen_like::harness::{Workload, WorkloadResult};
use jepsen_like::Verdict;

use crate::clock::{Clock, SystemClock};
use crate::config::ClusterFile;
use crate::keyspace::KeyspaceDef;

use super::client::{QuicTransport, StoreClient, Transport};
use super::containers::{Containers, ContainersControl, ContainersNemesis};
use super::convergence::{self, ConvergenceReport};
use super::local::{client_for, wait_ready, LocalCluster, LocalControl, LocalNemesis};
use super::nemesis::MEMBERSHIP;
use super::simulated::{SimControl, SimNemesis, SimTarget};
use super::{HarnessError, KeyspaceSpec, WorkloadKind};

/// How often the convergence check reads the replicas again.
const CONVERGENCE_POLL: Duration = Duration::from_millis(500);

/// How long the local target's nodes may take to answer their first ping.
const LOCAL_READY_WITHIN: Duration = Duration::from_secs(30);

/// Where a run's cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Node processes on 127.0.0.1, made for the run inside its directory.
    Local,
    /// The five-node compose cluster of `cluster/` (scripts/cluster-up.sh).
    Containers,
    /// The deterministic simulator's in-process cluster.
    Sim,
}

impl Target {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Containers => "containers",
            Target::Sim => "sim",
        }
    }
}

/// A checked description of one run: everything the targets need besides the files and
/// processes of the machine it runs on ([`Processes`]).
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Where the cluster runs.
    pub target: Target,
    /// Cluster size.
    pub nodes: usize,
    /// The keyspace the run creates.
    pub spec: KeyspaceSpec,
    /// The keyspace spec as it was given (recorded in the report).
    pub spec_text: String,
    /// The workload.
    pub workload: WorkloadKind,
    /// The nemesis's faults (empty: none).
    pub faults: Vec<String>,
    /// The runner's options (time, concurrency, rate, seed, nemesis interval...).
    pub opts: RunOptions,
    /// How long the convergence check may wait for every replica to agree.
    pub converge_within: Duration,
    /// The test's name (its directory under the store).
    pub test: String,
    /// The name of the keyspace the run creates.
    pub keyspace: String,
    /// Every node's `[anti_entropy]` (local and sim targets; the containers cluster keeps
    /// its own node.toml).
    pub anti_entropy: crate::config::AntiEntropyConfig,
}

/// What the process targets (`local`, `containers`) need from the machine.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    /// The quorumkv binary the nodes run (`None`: it could not be located, which fails a
    /// process target's run and nothing else).
    pub exe: Option<PathBuf>,
    /// The quorumkv checkout whose scripts drive the containers target.
    pub repo: PathBuf,
    /// Keep the local target's RocksDB data in the run directory.
    pub keep_data: bool,
}

/// What a run produced, before it is judged.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The history and the faults' periods.
    pub record: RunRecord,
    /// Whether the replicas agreed after the heal.
    pub convergence: ConvergenceReport,
    /// The nodes' log files (none for the sim target).
    pub logs: Vec<PathBuf>,
}

/// A run's judgement as written to its report.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// The overall verdict: the workload's, made invalid by replicas that never agreed.
    pub verdict: Verdict,
    /// The workload checker's own result.
    pub workload: WorkloadResult,
}

/// The harness's workload for `kind`, with its default settings.
pub fn workload(kind: WorkloadKind) -> Result<Box<dyn Workload>, HarnessError> {
    Ok(match kind {
        WorkloadKind::Register => Box::new(jh::RegisterWorkload::new(Default::default())?),
        WorkloadKind::Set => Box::new(jh::SetWorkload::new(Default::default())?),
        WorkloadKind::Counter => Box::new(jh::CounterWorkload::new(Default::default())?),
        WorkloadKind::SiblingRegister => Box::new(jh::SiblingWorkload::new(Default::default())?),
        WorkloadKind::Visibility => Box::new(jh::VisibilityWorkload::new(Default::default())?),
    })
}

/// The actors of an `lww-actor` keyspace: one per worker, lower workers ranking higher.
fn actors(concurrency: usize) -> Vec<String> {
    (0..concurrency).map(|w| format!("c{w}")).collect()
}

#[allow(clippy::disallowed_methods)] // the harness's wall clock: container log timestamps
fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// A runtime for the process targets, whose clients use real sockets and time.
fn process_runtime() -> Result<tokio::runtime::Runtime, HarnessError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| HarnessError::Io {
            what: "starting the harness's runtime".into(),
            cause: e,
        })
}

fn exe(processes: &Processes) -> Result<&Path, HarnessError> {
    processes
        .exe
        .as_deref()
        .ok_or_else(|| HarnessError::Cluster("cannot locate the quorumkv binary".into()))
}

/// A simulated clock reading for `lww-client` stamps: the simulator's wall time.
struct SimWall(Arc<crate::sim::env::SimClock>);

impl Clock for SimWall {
    fn now_ms(&self) -> u64 {
        self.0.reading_at(crate::sim::env::now())
    }
}

impl RunPlan {
    /// Whether the run grows and shrinks the layout (the `membership` fault).
    pub fn membership(&self) -> bool {
        self.faults.iter().any(|f| f == MEMBERSHIP)
    }

    /// Refuse a `membership` run that cannot work, before any cluster starts: only the
    /// local target has a spare node; the spare is the last of `nodes`, so there must be
    /// at least 2, and the layout without it (`nodes - 1` members) must hold the
    /// keyspace's `n` replicas.
    pub fn check_membership(&self) -> Result<(), HarnessError> {
        if !self.membership() {
            return Ok(());
        }
        let supported = match self.target {
            Target::Local => None,
            Target::Containers => Some(super::containers::FAULTS.join(", ")),
            Target::Sim => Some(super::simulated::FAULTS.join(", ")),
        };
        if let Some(supported) = supported {
            return Err(HarnessError::UnsupportedFault {
                target: self.target.name(),
                fault: MEMBERSHIP.into(),
                supported,
            });
        }
        let bad = |problem: String| {
            Err(HarnessError::MembershipPlan {
                nodes: self.nodes,
                problem,
            })
        };
        if self.nodes < 2 {
            return bad(
                "it needs --nodes 2 or more (the last node is a spare started outside the layout)"
                    .into(),
            );
        }
        if usize::from(self.spec.n) > self.nodes - 1 {
            return bad(format!(
                "the keyspace's n={} must be at most {} (--nodes minus the spare): the layout holds {} nodes while the spare is out",
                self.spec.n,
                self.nodes - 1,
                self.nodes - 1
            ));
        }
        Ok(())
    }

    /// Run the plan on its target, streaming the history to `sink`; `dir` holds what the
    /// process targets write (configs, data, logs).
    pub fn run(
        &self,
        dir: &RunDir,
        sink: HistorySink,
        processes: &Processes,
    ) -> Result<RunOutcome, HarnessError> {
        self.check_membership()?;
        match self.target {
            Target::Local => self.run_local(dir, sink, processes),
            Target::Containers => self.run_containers(dir, sink, processes),
            Target::Sim => self.run_sim(sink),
        }
    }

    /// The client of worker `w` through `t`.
    fn store_client<T: Transport>(&self, t: T, w: usize, clock: Arc<dyn Clock>) -> StoreClient<T> {
        StoreClient::new(
            t,
            &self.keyspace,
            self.spec.policy,
            self.spec.n,
            self.workload,
            format!("c{w}"),
            clock,
        )
    }

    /// The `sim` target: the simulated cluster in this thread, on a paused runtime of its
    /// own, so one seed gives one history. Must not be called from inside a runtime.
    pub fn run_sim(&self, sink: HistorySink) -> Result<RunOutcome, HarnessError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| HarnessError::Io {
                what: "starting the simulator's runtime".into(),
                cause: e,
            })?;
        rt.block_on(async {
            let def = self
                .spec
                .def(&self.keyspace, &actors(self.opts.concurrency));
            let target =
                SimTarget::start(self.opts.seed, self.nodes, def, self.anti_entropy.clone())?;
            let names = target.names();
            let nemesis = if self.faults.is_empty() {
                None
            } else {
                Some(SimNemesis::new(
                    SimControl::new(target.clone()),
                    &self.faults,
                )?)
            };
            let wall = Arc::new(SimWall(crate::sim::env::SimClock::new(
                crate::sim::env::now(),
            )));
            let mut wl = workload(self.workload)?;
            let make =
                |w: usize| self.store_client(target.transport(w % names.len()), w, wall.clone());
            let record = jh::run(&mut wl, make, nemesis, sink, &self.opts).await?;
            let checkers: Vec<_> = (0..names.len()).map(|i| target.transport(i)).collect();
            let convergence = self.converge(&checkers, &wl.keys()).await;
            Ok(RunOutcome {
                record,
                convergence,
                logs: Vec::new(),
            })
        })
    }

    /// The `local` target: node processes of `processes.exe` under `dir/cluster`, stopped
    /// when the run ends (their data removed unless `keep_data`).
    pub fn run_local(
        &self,
        dir: &RunDir,
        sink: HistorySink,
        processes: &Processes,
    ) -> Result<RunOutcome, HarnessError> {
        let exe = exe(processes)?;
        let cluster_dir = dir.path.join("cluster");
        self.check_membership()?;
        let cluster = LocalCluster::start(
            &cluster_dir,
            self.nodes,
            exe,
            &self.anti_entropy,
            self.membership(),
        )?;
        let logs = cluster.logs();
        let names = cluster.names();
        let cf = cluster.cluster_file().clone();
        let cluster = Arc::new(Mutex::new(cluster));
        let rt = process_runtime()?;
        let result = rt.block_on(async {
            wait_ready(&cf, LOCAL_READY_WITHIN, &logs).await?;
            self.drive_quic(&cf, &names, sink, |faults| {
                LocalNemesis::new(LocalControl::new(Arc::clone(&cluster))?, faults)
            })
            .await
        });
        {
            let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
            c.stop();
        }
        if !processes.keep_data {
            for n in &names {
                let _ = std::fs::remove_dir_all(cluster_dir.join(n).join("data"));
            }
        }
        let (record, convergence) = result?;
        Ok(RunOutcome {
            record,
            convergence,
            logs,
        })
    }

    /// The `containers` target: the compose cluster of `processes.repo`, brought up (or
    /// reused), with the nodes' logs of this run copied into `dir/logs`.
    pub fn run_containers(
        &self,
        dir: &RunDir,
        sink: HistorySink,
        processes: &Processes,
    ) -> Result<RunOutcome, HarnessError> {
        let exe = exe(processes)?;
        let rt = process_runtime()?;
        let since = now_ms() / 1000;
        rt.block_on(async {
            let c = Containers::up(&processes.repo, exe).await?;
            let names = c.names();
            let cf = c.cluster_file().clone();
            let out = self
                .drive_quic(&cf, &names, sink, |faults| {
                    ContainersNemesis::new(ContainersControl::new(&c)?, faults)
                })
                .await;
            let logs_dir = dir.path.join("logs");
            let _ = std::fs::create_dir_all(&logs_dir);
            let logs = c.collect_logs(&logs_dir, since).await;
            let (record, convergence) = out?;
            Ok(RunOutcome {
                record,
                convergence,
                logs,
            })
        })
    }

    /// Create the keyspace, run the workload through QUIC clients (worker `w` on node
    /// `w % nodes`), then check convergence.
    async fn drive_quic<N, F>(
        &self,
        cf: &ClusterFile,
        names: &[String],
        sink: HistorySink,
        make_nemesis: F,
    ) -> Result<(RunRecord, ConvergenceReport), HarnessError>
    where
        N: jh::Nemesis,
        F: FnOnce(&[String]) -> Result<N, HarnessError>,
    {
        let first = names
            .first()
            .ok_or_else(|| HarnessError::Cluster("the cluster has no nodes".into()))?;
        let admin = client_for(cf, first)?;
        let def: KeyspaceDef = self
            .spec
            .def(&self.keyspace, &actors(self.opts.concurrency));
        let (_, missing) =
            admin
                .create_keyspace(def)
                .await
                .map_err(|e| HarnessError::CreateKeyspace {
                    keyspace: self.keyspace.clone(),
                    message: e.to_string(),
                })?;
        if !missing.is_empty() {
            eprintln!(
                "jepsen: keyspace {} not yet stored on {}; they learn it on first use",
                self.keyspace,
                missing.join(", ")
            );
        }
        let nemesis = if self.faults.is_empty() {
            None
        } else {
            Some(make_nemesis(&self.faults)?)
        };
        // One QUIC client per node, built before the run so a failure stops it before it
        // starts; worker `w` uses node `w % nodes`'s.
        let quic = names
            .iter()
            .map(|n| Ok((n.clone(), client_for(cf, n)?)))
            .collect::<Result<Vec<_>, HarnessError>>()?;
        let make = |w: usize| {
            let (node, client) = &quic[w % quic.len()];
            self.store_client(
                QuicTransport::new(node.clone(), Arc::clone(client)),
                w,
                Arc::new(SystemClock),
            )
        };
        let mut wl = workload(self.workload)?;
        let record = jh::run(&mut wl, make, nemesis, sink, &self.opts).await?;
        let checkers = names
            .iter()
            .map(|n| Ok(QuicTransport::new(n.clone(), client_for(cf, n)?)))
            .collect::<Result<Vec<_>, HarnessError>>()?;
        let convergence = self.converge(&checkers, &wl.keys()).await;
        Ok((record, convergence))
    }

    /// The convergence check of this plan's keyspace over `keys`, through `checkers`
    /// (one transport per node).
    async fn converge<T: Transport>(&self, checkers: &[T], keys: &[String]) -> ConvergenceReport {
        convergence::check(
            checkers,
            &self.keyspace,
            keys,
            self.converge_within,
            CONVERGENCE_POLL,
        )
        .await
    }

    /// Judge `outcome` and write the run's report into `dir` (results.json, summary.txt,
    /// plots, timeline): the workload's checker, this plan, and the convergence check,
    /// which makes the run invalid if the replicas never agreed, whatever the checker says.
    pub fn write_report(
        &self,
        dir: &RunDir,
        outcome: &RunOutcome,
    ) -> Result<Judgement, HarnessError> {
        let result = workload(self.workload)?.check(&outcome.record.history);
        let o = &self.opts;
        let (time_s, interval_s) = (o.time.as_secs_f64(), o.nemesis_interval.as_secs_f64());
        let mut extra = vec![(
            "run".to_string(),
            serde_json::json!({
                "target": self.target.name(),
                "nodes": self.nodes,
                "keyspace": self.keyspace,
                "keyspace_spec": self.spec_text,
                "policy": self.spec.policy.to_string(),
                "n": self.spec.n, "r": self.spec.r, "w": self.spec.w,
                "read_repair": self.spec.read_repair.to_string(),
                "workload": self.workload.name(),
                "nemesis": self.faults,
                "nemesis_interval_s": interval_s,
                "time_s": time_s,
                "concurrency": o.concurrency,
                "rate": o.rate,
                "seed": o.seed,
                "node_logs": outcome.logs.iter().map(|l| l.display().to_string()).collect::<Vec<_>>(),
            }),
            vec![format!(
                "run: {} target, {} nodes, keyspace {} ({}), workload {}, nemesis {}, {} s, {} clients, seed {}",
                self.target.name(),
                self.nodes,
                self.keyspace,
                self.spec_text,
                self.workload,
                if self.faults.is_empty() { "none".to_string() } else { self.faults.join(",") },
                time_s,
                o.concurrency,
                o.seed
            )],
        )];
        let c = &outcome.convergence;
        let mut conv = serde_json::to_value(c).map_err(HarnessError::Json)?;
        conv["verdict"] = serde_json::json!(if c.converged { "valid" } else { "invalid" });
        extra.push(("convergence".to_string(), conv, c.summary()));
        let verdict = jh::write_report(dir, &self.test, &outcome.record, &result, &extra)
            .map_err(HarnessError::Report)?;
        Ok(Judgement {
            verdict,
            workload: result,
        })
    }
}

/// Record why a run crashed in its directory (`error.txt`), next to the history it left.
pub fn write_crash(dir: &RunDir, error: &HarnessError) -> Result<(), HarnessError> {
    let path = dir.path.join("error.txt");
    std::fs::write(&path, format!("{error}\n")).map_err(|e| HarnessError::Io {
        what: format!("writing {}", path.display()),
        cause: e,
    })
}
