//! `quorumkv jepsen`: one Jepsen-style run — a workload against a cluster while a nemesis
//! injects faults — recorded as a history, judged, and stored with its plots under
//! `--store DIR/<test>/<timestamp>/`. The generic machinery is `jepsen_like::harness`;
//! the store's client, targets and nemeses are `quorumkv::harness`.
//!
//! Exit status: 0 valid, 1 invalid, 2 unknown or crashed (Jepsen's convention).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use jepsen_like::harness::{self as jh, HistorySink, RunDir, RunOptions, RunRecord};

use quorumkv::clock::{Clock, SystemClock};
use quorumkv::harness::client::{QuicTransport, StoreClient, Transport};
use quorumkv::harness::containers::{Containers, ContainersNemesis};
use quorumkv::harness::convergence::{self, ConvergenceReport};
use quorumkv::harness::local::{client_for, LocalCluster, LocalNemesis};
use quorumkv::harness::simulated::{SimNemesis, SimTarget};
use quorumkv::harness::{KeyspaceSpec, WorkloadKind};
use quorumkv::keyspace::KeyspaceDef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// Node processes on 127.0.0.1, made for this run inside its directory.
    Local,
    /// The five-node compose cluster of `cluster/` (scripts/cluster-up.sh).
    Containers,
    /// The deterministic simulator's in-process cluster.
    Sim,
}

#[derive(Debug, Args)]
pub struct JepsenArgs {
    /// Where the cluster runs.
    #[arg(long, value_enum, default_value = "local")]
    target: Target,
    /// Cluster size (local and sim; the containers cluster has 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The keyspace the run creates: policy=P,n=N,r=R,w=W[,read-repair=async|blocking|off].
    #[arg(long)]
    keyspace: String,
    /// register, set, counter, sibling-register or visibility.
    #[arg(long)]
    workload: String,
    /// Comma-separated faults, or `none`: kill, pause, clock-skew (local, containers);
    /// partition-halves, partition-majorities-ring, partition-bridge, partition-one,
    /// partition-oneway (containers, sim). `sim` has no pause.
    #[arg(long, default_value = "none")]
    nemesis: String,
    /// Seconds between nemesis actions (a fault starts, then stops, each after this long).
    #[arg(long, default_value_t = 10.0)]
    nemesis_interval: f64,
    /// Seconds of workload (before the heal, quiet period and final reads).
    #[arg(long, default_value_t = 30.0)]
    time: f64,
    /// Concurrent clients (each bound to one node, round robin).
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Operations per second across all clients (default: as fast as they go).
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of every random choice the harness makes (and of the simulated cluster).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory of stored runs.
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// Test name (default: workload, keyspace, nemesis and target).
    #[arg(long)]
    name: Option<String>,
    /// Seconds after the heal before the final reads.
    #[arg(long, default_value_t = 5.0)]
    quiet: f64,
    /// Seconds the convergence check may wait for every replica to agree.
    #[arg(long, default_value_t = 30.0)]
    converge_timeout: f64,
    /// Per-operation timeout in seconds (a timed-out operation is `:info`).
    #[arg(long, default_value_t = 5.0)]
    op_timeout: f64,
    /// The quorumkv checkout whose scripts drive the containers target (default: the
    /// current directory, else the one this binary was built from).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Keep the local target's RocksDB data in the run directory (default: removed after
    /// the run; configs and logs stay).
    #[arg(long)]
    keep_data: bool,
}

fn secs(name: &str, s: f64) -> anyhow::Result<Duration> {
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        bail!("--{name} must be between 0 and 86400 seconds (got {s})");
    }
    Ok(Duration::from_secs_f64(s))
}

/// The parsed, checked arguments.
struct Plan {
    target: Target,
    nodes: usize,
    spec: KeyspaceSpec,
    workload: WorkloadKind,
    faults: Vec<String>,
    opts: RunOptions,
    converge_within: Duration,
    test: String,
    keyspace: String,
}

fn plan(a: &JepsenArgs) -> anyhow::Result<Plan> {
    let spec: KeyspaceSpec = a.keyspace.parse()?;
    let workload: WorkloadKind = a.workload.parse()?;
    workload.check_policy(spec.policy)?;
    let nodes = if a.target == Target::Containers {
        5
    } else {
        a.nodes
    };
    let def = spec.def("jepsen", &[]);
    def.validate(nodes)
        .with_context(|| format!("--keyspace {} on {nodes} nodes", a.keyspace))?;
    if a.concurrency == 0 || a.concurrency > 1000 {
        bail!(
            "--concurrency must be between 1 and 1000 (got {})",
            a.concurrency
        );
    }
    if let Some(r) = a.rate {
        if !r.is_finite() || r <= 0.0 {
            bail!("--rate must be a positive number of operations per second (got {r})");
        }
    }
    let faults: Vec<String> = match a.nemesis.trim() {
        "" | "none" => Vec::new(),
        list => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    let target_name = match a.target {
        Target::Local => "local",
        Target::Containers => "containers",
        Target::Sim => "sim",
    };
    let nemesis_label = if faults.is_empty() {
        "none".to_string()
    } else {
        faults.join("+")
    };
    let test = a.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}-{}-{}",
            workload,
            spec.label(),
            nemesis_label,
            target_name
        )
    });
    if test.is_empty() || test.contains('/') || test.starts_with('.') {
        bail!("--name must be a plain directory name (got {test:?})");
    }
    let opts = RunOptions {
        time: secs("time", a.time)?,
        concurrency: a.concurrency,
        rate: a.rate,
        seed: a.seed,
        nemesis_faults: faults.clone(),
        nemesis_interval: secs("nemesis-interval", a.nemesis_interval)?
            .max(Duration::from_millis(100)),
        op_timeout: secs("op-timeout", a.op_timeout)?.max(Duration::from_millis(10)),
        quiet: secs("quiet", a.quiet)?,
        progress: true,
    };
    // A keyspace per run: the containers cluster outlives runs.
    let keyspace = format!("jepsen_{}", now_ms());
    Ok(Plan {
        target: a.target,
        nodes,
        spec,
        workload,
        faults,
        opts,
        converge_within: secs("converge-timeout", a.converge_timeout)?,
        test,
        keyspace,
    })
}

#[allow(clippy::disallowed_methods)] // the harness's wall clock: run directory names
fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// The harness's workload for `kind`, with its default settings.
fn workload(kind: WorkloadKind) -> anyhow::Result<Box<dyn jh::Workload>> {
    Ok(match kind {
        WorkloadKind::Register => Box::new(jh::RegisterWorkload::new(Default::default())?),
        WorkloadKind::Set => Box::new(jh::SetWorkload::new(Default::default())?),
        WorkloadKind::Counter => Box::new(jh::CounterWorkload::new(Default::default())?),
        WorkloadKind::SiblingRegister => Box::new(jh::SiblingWorkload::new(Default::default())?),
        WorkloadKind::Visibility => Box::new(jh::VisibilityWorkload::new(Default::default())?),
    })
}

/// Clients `0..concurrency`, worker `w` bound to node `w % nodes`.
fn store_client<T: Transport>(p: &Plan, t: T, w: usize, clock: Arc<dyn Clock>) -> StoreClient<T> {
    StoreClient::new(
        t,
        &p.keyspace,
        p.spec.policy,
        p.spec.n,
        p.workload,
        format!("c{w}"),
        clock,
    )
}

/// The actors of an `lww-actor` keyspace: one per worker, lower workers ranking higher.
fn actors(concurrency: usize) -> Vec<String> {
    (0..concurrency).map(|w| format!("c{w}")).collect()
}

fn repo_root(a: &JepsenArgs) -> PathBuf {
    if let Some(r) = &a.repo {
        return r.clone();
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("scripts/netsplit.sh").exists() {
        cwd
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }
}

pub fn run(a: JepsenArgs) -> anyhow::Result<ExitCode> {
    let p = plan(&a)?;
    let dir = RunDir::create(&a.store, &p.test, now_ms())
        .with_context(|| format!("creating the run directory under {}", a.store.display()))?;
    eprintln!("jepsen: {} -> {}", p.test, dir.path.display());
    let sink = HistorySink::create(&dir.path.join("history.edn")).context("opening history.edn")?;
    let outcome = match p.target {
        Target::Local => run_local(&a, &p, &dir, sink),
        Target::Containers => run_containers(&a, &p, &dir, sink),
        Target::Sim => run_sim(&p, sink),
    };
    let (record, convergence, logs) = match outcome {
        Ok(x) => x,
        Err(e) => {
            // A crashed run keeps its history; the verdict is unknown.
            let msg = format!("{e:#}");
            let _ = std::fs::write(dir.path.join("error.txt"), format!("{msg}\n"));
            eprintln!(
                "jepsen: the run crashed: {msg}\n  history so far: {}",
                dir.path.join("history.edn").display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let result = workload(p.workload)?.check(&record.history);
    let mut extra = vec![(
        "run".to_string(),
        serde_json::json!({
            "target": format!("{:?}", p.target).to_lowercase(),
            "nodes": p.nodes,
            "keyspace": p.keyspace,
            "keyspace_spec": a.keyspace,
            "policy": p.spec.policy.to_string(),
            "n": p.spec.n, "r": p.spec.r, "w": p.spec.w,
            "read_repair": p.spec.read_repair.to_string(),
            "workload": p.workload.name(),
            "nemesis": p.faults,
            "nemesis_interval_s": a.nemesis_interval,
            "time_s": a.time,
            "concurrency": a.concurrency,
            "rate": a.rate,
            "seed": a.seed,
            "node_logs": logs.iter().map(|l| l.display().to_string()).collect::<Vec<_>>(),
        }),
        vec![format!(
            "run: {} target, {} nodes, keyspace {} ({}), workload {}, nemesis {}, {} s, {} clients, seed {}",
            format!("{:?}", p.target).to_lowercase(),
            p.nodes,
            p.keyspace,
            a.keyspace,
            p.workload,
            if p.faults.is_empty() { "none".to_string() } else { p.faults.join(",") },
            a.time,
            a.concurrency,
            a.seed
        )],
    )];
    // Replicas that never agree fail the run, whatever the workload's checker says.
    let mut conv = serde_json::to_value(&convergence)?;
    conv["verdict"] = serde_json::json!(if convergence.converged {
        "valid"
    } else {
        "invalid"
    });
    extra.push(("convergence".to_string(), conv, convergence.summary()));
    let verdict = jh::write_report(&dir, &p.test, &record, &result, &extra)
        .context("writing the run's report")?;
    let summary = std::fs::read_to_string(dir.path.join("summary.txt")).unwrap_or_default();
    println!("{summary}");
    println!("stored in {}", dir.path.display());
    Ok(ExitCode::from(jh::exit_code(verdict) as u8))
}

type Outcome = (RunRecord, ConvergenceReport, Vec<PathBuf>);

fn run_local(a: &JepsenArgs, p: &Plan, dir: &RunDir, sink: HistorySink) -> anyhow::Result<Outcome> {
    let exe = std::env::current_exe().context("locating the quorumkv binary")?;
    let cluster_dir = dir.path.join("cluster");
    let cluster = LocalCluster::start(&cluster_dir, p.nodes, &exe)?;
    let logs = cluster.logs();
    let names = cluster.names();
    let cf = cluster.cluster_file().clone();
    let cluster = Arc::new(Mutex::new(cluster));
    let rt = super::runtime()?;
    let result = rt.block_on(async {
        quorumkv::harness::local::wait_ready(&cf, Duration::from_secs(30), &logs).await?;
        let out = drive_quic(p, &cf, &names, sink, |faults| {
            LocalNemesis::new(Arc::clone(&cluster), faults).map_err(anyhow::Error::from)
        })
        .await;
        out
    });
    {
        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.stop();
    }
    if !a.keep_data {
        for n in &names {
            let _ = std::fs::remove_dir_all(cluster_dir.join(n).join("data"));
        }
    }
    let (record, conv) = result?;
    Ok((record, conv, logs))
}

fn run_containers(
    a: &JepsenArgs,
    p: &Plan,
    dir: &RunDir,
    sink: HistorySink,
) -> anyhow::Result<Outcome> {
    let exe = std::env::current_exe().context("locating the quorumkv binary")?;
    let root = repo_root(a);
    let rt = super::runtime()?;
    let since = now_ms() / 1000;
    rt.block_on(async {
        let c = Containers::up(&root, &exe).await?;
        let names = c.names();
        let cf = c.cluster_file().clone();
        let out = drive_quic(p, &cf, &names, sink, |faults| {
            ContainersNemesis::new(&c, faults).map_err(anyhow::Error::from)
        })
        .await;
        let logs_dir = dir.path.join("logs");
        let _ = std::fs::create_dir_all(&logs_dir);
        let logs = c.collect_logs(&logs_dir, since).await;
        let (record, conv) = out?;
        Ok((record, conv, logs))
    })
}

/// Create the keyspace, run the workload through QUIC clients (worker `w` on node
/// `w % nodes`), then check convergence.
async fn drive_quic<N, F>(
    p: &Plan,
    cf: &quorumkv::config::ClusterFile,
    names: &[String],
    sink: HistorySink,
    make_nemesis: F,
) -> anyhow::Result<(RunRecord, ConvergenceReport)>
where
    N: jh::Nemesis,
    F: FnOnce(&[String]) -> anyhow::Result<N>,
{
    let admin = client_for(cf, &names[0])?;
    let def: KeyspaceDef = p.spec.def(&p.keyspace, &actors(p.opts.concurrency));
    let (_, missing) = admin
        .create_keyspace(def)
        .await
        .with_context(|| format!("creating keyspace {}", p.keyspace))?;
    if !missing.is_empty() {
        eprintln!(
            "jepsen: keyspace {} not yet stored on {}; they learn it on first use",
            p.keyspace,
            missing.join(", ")
        );
    }
    let nemesis = if p.faults.is_empty() {
        None
    } else {
        Some(make_nemesis(&p.faults)?)
    };
    // One QUIC client per node, built before the run so a failure stops it before it
    // starts; worker `w` uses node `w % nodes`'s.
    let quic = names
        .iter()
        .map(|n| Ok((n.clone(), client_for(cf, n)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let make = |w: usize| {
        let (node, client) = &quic[w % quic.len()];
        store_client(
            p,
            QuicTransport::new(node.clone(), Arc::clone(client)),
            w,
            Arc::new(SystemClock),
        )
    };
    let mut wl = workload(p.workload)?;
    let record = jh::run(&mut wl, make, nemesis, sink, &p.opts).await?;
    let checkers = names
        .iter()
        .map(|n| Ok(QuicTransport::new(n.clone(), client_for(cf, n)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let conv = convergence::check(
        &checkers,
        &p.keyspace,
        &wl.keys(),
        p.converge_within,
        Duration::from_millis(500),
    )
    .await;
    Ok((record, conv))
}

/// A simulated clock reading for `lww-client` stamps: the simulator's wall time.
struct SimWall(Arc<quorumkv::sim::env::SimClock>);

impl Clock for SimWall {
    fn now_ms(&self) -> u64 {
        self.0.reading_at(quorumkv::sim::env::now())
    }
}

fn run_sim(p: &Plan, sink: HistorySink) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    rt.block_on(async {
        let def = p.spec.def(&p.keyspace, &actors(p.opts.concurrency));
        let target = SimTarget::start(p.opts.seed, p.nodes, def)?;
        let names = target.names();
        let nemesis = if p.faults.is_empty() {
            None
        } else {
            Some(SimNemesis::new(target.clone(), &p.faults)?)
        };
        let wall = Arc::new(SimWall(quorumkv::sim::env::SimClock::new(
            quorumkv::sim::env::now(),
        )));
        let mut wl = workload(p.workload)?;
        let make = |w: usize| store_client(p, target.transport(w % names.len()), w, wall.clone());
        let record = jh::run(&mut wl, make, nemesis, sink, &p.opts).await?;
        let checkers: Vec<_> = (0..names.len()).map(|i| target.transport(i)).collect();
        let conv = convergence::check(
            &checkers,
            &p.keyspace,
            &wl.keys(),
            p.converge_within,
            Duration::from_millis(500),
        )
        .await;
        Ok((record, conv, Vec::new()))
    })
}
