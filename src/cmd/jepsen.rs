//! `quorumkv jepsen`: one Jepsen-style run — a workload against a cluster while a nemesis
//! injects faults — recorded as a history, judged, and stored with its plots under
//! `--store DIR/<test>/<timestamp>/`. The generic machinery is `jepsen_like::harness`;
//! the store's client, targets and nemeses are `quorumkv::harness`, and running a checked
//! plan on a target and writing its report is `quorumkv::harness::run`. This file only
//! reads and checks the arguments and prints.
//!
//! Exit status: 0 valid, 1 invalid, 2 unknown or crashed (Jepsen's convention).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use jepsen_like::harness::{self as jh, HistorySink, RunDir, RunOptions};

use quorumkv::clock::{Clock, SystemClock};
use quorumkv::harness::run::{self, Processes, RunPlan};
use quorumkv::harness::{KeyspaceSpec, WorkloadKind};

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
    /// The keyspace the run creates: policy=P,n=N,r=R,w=W[,read-repair=async|blocking|off][,sloppy=true|false].
    #[arg(long)]
    keyspace: String,
    /// register, set, counter, sibling-register or visibility.
    #[arg(long)]
    workload: String,
    /// Comma-separated faults, or `none`: kill, pause, clock-skew (local, containers);
    /// partition-halves, partition-majorities-ring, partition-bridge, partition-one,
    /// partition-oneway (containers, sim); membership (local: the last node is a spare
    /// that joins the layout at each start and leaves at each stop). `sim` has no pause.
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
    /// Every node's `anti_entropy.interval_ms` (local and sim targets; default: the
    /// node default, 60000).
    #[arg(long)]
    aae_interval_ms: Option<u64>,
    /// Turn anti-entropy off on every node (`anti_entropy.enabled = false`; local and sim).
    #[arg(long)]
    no_aae: bool,
}

fn secs(name: &str, s: f64) -> anyhow::Result<Duration> {
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        bail!("--{name} must be between 0 and 86400 seconds (got {s})");
    }
    Ok(Duration::from_secs_f64(s))
}

/// The run the arguments describe, or a message naming the argument that is wrong.
fn plan(a: &JepsenArgs) -> anyhow::Result<RunPlan> {
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
    let mut anti_entropy = quorumkv::config::AntiEntropyConfig {
        enabled: !a.no_aae,
        ..Default::default()
    };
    if let Some(ms) = a.aae_interval_ms {
        if !(10..=86_400_000).contains(&ms) {
            bail!("--aae-interval-ms must be between 10 and 86400000 (got {ms})");
        }
        anti_entropy.interval_ms = ms;
    }
    // A keyspace per run: the containers cluster outlives runs.
    let keyspace = format!("jepsen_{}", now_ms());
    let plan = RunPlan {
        target: match a.target {
            Target::Local => run::Target::Local,
            Target::Containers => run::Target::Containers,
            Target::Sim => run::Target::Sim,
        },
        nodes,
        spec,
        spec_text: a.keyspace.clone(),
        workload,
        faults,
        opts,
        converge_within: secs("converge-timeout", a.converge_timeout)?,
        test,
        keyspace,
        anti_entropy,
    };
    plan.check_membership()?;
    Ok(plan)
}

#[allow(clippy::disallowed_methods)] // the harness's wall clock: run directory names
fn now_ms() -> u64 {
    SystemClock.now_ms()
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
    let processes = Processes {
        exe: std::env::current_exe().ok(),
        repo: repo_root(&a),
        keep_data: a.keep_data,
    };
    let outcome = match p.run(&dir, sink, &processes) {
        Ok(x) => x,
        Err(e) => {
            // A crashed run keeps its history; the verdict is unknown.
            let _ = run::write_crash(&dir, &e);
            eprintln!(
                "jepsen: the run crashed: {e}\n  history so far: {}",
                dir.path.join("history.edn").display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let judgement = p
        .write_report(&dir, &outcome)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let summary = std::fs::read_to_string(dir.path.join("summary.txt")).unwrap_or_default();
    println!("{summary}");
    println!("stored in {}", dir.path.display());
    Ok(ExitCode::from(jh::exit_code(judgement.verdict) as u8))
}
