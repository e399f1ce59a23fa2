//! `quorumkv sim`: replay one seed of the deterministic simulator, or run a swarm of seeds.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use quorumkv::sim::{self, nemesis, workload, SimConfig, SimReport};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Replay this seed (prints its trace hash; `--trace` prints every event).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a swarm over seeds A..B (B excluded), e.g. `0..200`.
    #[arg(long)]
    seeds: Option<String>,
    /// Print the event log of `--seed`.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Client operations per seed (fault phase).
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Concurrent simulated clients.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Faults: none, all, or a list of partition, crash, clock, loss, disk, unsynced,
    /// membership, overlap (`all` is the first five; `membership` adds a spare node that
    /// joins and leaves the layout; `overlap` runs every node with
    /// `storage.overlap_lead_sync`).
    #[arg(long, default_value = "all")]
    faults: String,
    /// Workloads: all, or a list of siblings, set, counter, register.
    #[arg(long, default_value = "all")]
    workloads: String,
    /// Simulated seconds the fault phase may last.
    #[arg(long, default_value_t = 60.0)]
    time: f64,
    /// Seeds run at once in a swarm (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Re-introduce a known bug class (for showing the swarm finds it): ack-before-durable,
    /// reissue-dot, ignore-context, overwrite-repair, sync-without-transfer,
    /// write-newest-layout-only (the last two add the membership fault). Repeatable.
    #[arg(long, hide = true)]
    bug: Vec<String>,
    /// One JSON report per seed instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_range(text: &str) -> anyhow::Result<std::ops::Range<u64>> {
    let (a, b) = text
        .split_once("..")
        .with_context(|| format!("--seeds {text:?}: expected A..B, e.g. 0..200"))?;
    let a: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("--seeds {text:?}: {a:?} is not a number"))?;
    let b: u64 = b
        .trim()
        .parse()
        .with_context(|| format!("--seeds {text:?}: {b:?} is not a number"))?;
    if b <= a {
        bail!("--seeds {text:?}: the range is empty (B must be greater than A)");
    }
    Ok(a..b)
}

fn config(a: &SimArgs) -> anyhow::Result<SimConfig> {
    if !(1..=64).contains(&a.nodes) {
        bail!("--nodes {}: expected 1 to 64", a.nodes);
    }
    if !(a.time.is_finite() && a.time > 0.0 && a.time <= 86_400.0) {
        bail!(
            "--time {}: expected simulated seconds between 0 and 86400",
            a.time
        );
    }
    if a.clients == 0 || a.clients > 1000 {
        bail!("--clients {}: expected 1 to 1000", a.clients);
    }
    let mut faults = nemesis::parse_faults(&a.faults)?;
    let workloads = workload::parse_workloads(&a.workloads)?;
    let mut bugs = sim::SimBugs::default();
    for b in &a.bug {
        bugs.enable(b, &mut faults).map_err(anyhow::Error::msg)?;
    }
    Ok(SimConfig {
        nodes: a.nodes,
        ops: a.ops,
        clients: a.clients,
        time: Duration::from_secs_f64(a.time),
        faults,
        workloads,
        bugs,
        trace: a.trace,
        ..SimConfig::default()
    })
}

fn print(r: &SimReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        println!("{}", sim::describe(r));
    }
}

pub fn run(a: SimArgs) -> anyhow::Result<ExitCode> {
    let cfg = config(&a)?;
    if let Some(seed) = a.seed {
        let started = Instant::now();
        let r = sim::run(seed, &cfg);
        if let Some(lines) = &r.trace {
            for l in lines {
                println!("{l}");
            }
        }
        if a.json {
            print(&r, true);
        } else {
            // The headline (and a simulation error, if any); every check follows.
            let text = sim::describe(&r);
            for line in text.lines().filter(|l| !l.starts_with("  check ")) {
                println!("{line}");
            }
            for c in &r.checks {
                println!(
                    "  {} {}{}: {}",
                    if c.passed { "ok  " } else { "FAIL" },
                    c.name,
                    if c.judged {
                        ""
                    } else {
                        " (reported, not judged)"
                    },
                    c.detail
                );
            }
            println!(
                "  {:.2} s wall, {:.0} simulated ops/s",
                started.elapsed().as_secs_f64(),
                r.ops as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
        }
        return Ok(if r.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let Some(range) = &a.seeds else {
        bail!("give --seed S to replay one seed or --seeds A..B to run a swarm");
    };
    let range = parse_range(range)?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let started = Instant::now();
    let next = AtomicU64::new(range.start);
    let done: Mutex<Vec<SimReport>> = Mutex::new(Vec::new());
    let ops = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= range.end {
                    return;
                }
                let r = sim::run(seed, &cfg);
                ops.fetch_add(r.ops, Ordering::Relaxed);
                if !r.passed() || a.json {
                    print(&r, a.json);
                }
                done.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
        }
    });
    let reports = done.into_inner().unwrap_or_else(|e| e.into_inner());
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if !a.json {
        let counts = sim::failure_counts(&reports);
        let by_check: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "{} seeds, {} failed{}; {:.1} s wall, {:.0} seeds/min, {:.0} simulated ops/s",
            reports.len(),
            failed,
            if by_check.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_check.join(", "))
            },
            secs,
            reports.len() as f64 * 60.0 / secs,
            ops.load(Ordering::Relaxed) as f64 / secs,
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
