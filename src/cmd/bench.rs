//! `quorumkv bench` and `quorumkv bench-report`: argument parsing for the YCSB-style load
//! generator in [`quorumkv::bench`]; prints the report table, writes the JSON report and
//! the plot, and merges several runs' reports into one comparison table and plot.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use quorumkv::bench::driver::{self, BenchConfig, Stop};
use quorumkv::bench::plot::{self, LatencySeries, ThroughputSeries};
use quorumkv::bench::report::{PhaseSummary, Report};
use quorumkv::bench::target::{Connect, Target, TargetSpec};
use quorumkv::bench::workload::{Distribution, Workload};
use quorumkv::client::Client;
use quorumkv::config::ClusterFile;
use serde_json::json;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Client connection file written by `dev-cluster` or `cluster-up`.
    #[arg(long, env = "QUORUMKV_CLUSTER", default_value_os_t = super::default_cluster_file())]
    cluster: PathBuf,
    /// What to measure: quorumkv (the --cluster), echo (a bare QUIC echo server started
    /// on loopback: the network ceiling), redis://HOST:PORT or etcd://HOST:PORT[,...]
    /// (with the `peers` build feature).
    #[arg(long, default_value = "quorumkv")]
    target: String,
    /// Name of this run in reports and plots (default: the target's name).
    #[arg(long)]
    label: Option<String>,
    /// Per-operation timeout in milliseconds for echo, redis and etcd (quorumkv uses the
    /// cluster file's timeout).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Keyspace (default: the cluster file's `keyspace`).
    #[arg(long, short = 'k')]
    keyspace: Option<String>,
    /// YCSB core workload: a (50/50 read/update), b (95/5 read/update), c (read only),
    /// d (95/5 read/insert, latest), e (95/5 scan/insert), f (50/50 read/read-modify-write).
    #[arg(long, default_value = "a")]
    workload: Workload,
    /// Records inserted by the load phase.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Concurrent workers (in-flight requests).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of the run phase in seconds (default 10 unless --ops is given).
    #[arg(long, conflicts_with = "ops")]
    duration: Option<f64>,
    /// Operations in the run phase.
    #[arg(long)]
    ops: Option<u64>,
    /// Key popularity: zipfian, uniform or latest (default: the workload's).
    #[arg(long)]
    distribution: Option<Distribution>,
    /// Open loop: start operations at this many per second (latency measured from the
    /// intended start). Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Read quorum per request.
    #[arg(long, short = 'r')]
    r: Option<u8>,
    /// Write quorum per request.
    #[arg(long, short = 'w')]
    w: Option<u8>,
    /// Only insert the records.
    #[arg(long, conflicts_with = "skip_load")]
    load_only: bool,
    /// Skip the load phase (the records were loaded by an earlier run).
    #[arg(long)]
    skip_load: bool,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one histogram per operation type per second,
    /// V2 encoding) to FILE.
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// Draw latency by percentile (one line per operation type) and throughput over
    /// time as an SVG to FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let spec: TargetSpec = a.target.parse()?;
    anyhow::ensure!(
        (1..=3_600_000).contains(&a.timeout_ms),
        "--timeout-ms must be 1..=3600000 (got {})",
        a.timeout_ms
    );
    let stop = match (a.duration, a.ops) {
        (_, Some(n)) => Stop::Ops(n),
        (Some(s), None) => {
            anyhow::ensure!(
                s.is_finite() && s > 0.0 && s < 1e9,
                "--duration must be a positive number of seconds"
            );
            Stop::Duration(Duration::from_secs_f64(s))
        }
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    let distribution = a
        .distribution
        .unwrap_or_else(|| a.workload.default_distribution());
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut cfg = BenchConfig {
        keyspace: a.keyspace.clone().unwrap_or_default(),
        workload: a.workload,
        records: a.records,
        value_size: a.value_size,
        concurrency: a.concurrency,
        stop,
        distribution,
        rate: a.rate,
        r: a.r,
        w: a.w,
        load: !a.skip_load,
        run: !a.load_only,
        seed,
        progress: !a.quiet && std::io::stderr().is_terminal(),
        intervals: a.hdr_log.is_some(),
    };
    cfg.validate()?;
    let cf = if spec == TargetSpec::Quorumkv {
        Some(ClusterFile::load(&a.cluster).with_context(|| {
            "no cluster to talk to: start one with `scripts/dev.sh` (or `quorumkv dev-cluster`), or pass --cluster FILE".to_string()
        })?)
    } else {
        None
    };
    let keyspace = a
        .keyspace
        .clone()
        .or_else(|| cf.as_ref().map(|c| c.keyspace.clone()))
        .unwrap_or_default();
    cfg.keyspace = keyspace.clone();
    let label = a.label.clone().unwrap_or_else(|| spec.name().to_string());
    let parameters = json!({
        "target": spec.to_string(),
        "label": label,
        "keyspace": keyspace,
        "workload": a.workload,
        "records": a.records,
        "value_size": a.value_size,
        "concurrency": a.concurrency,
        "duration_s": match stop { Stop::Duration(d) => Some(d.as_secs_f64()), Stop::Ops(_) => None },
        "ops": match stop { Stop::Ops(n) => Some(n), Stop::Duration(_) => None },
        "distribution": distribution,
        "loop": if a.rate.is_some() { "open" } else { "closed" },
        "rate": a.rate,
        "r": a.r,
        "w": a.w,
        "load": cfg.load,
        "run": cfg.run,
        "seed": seed,
    });
    let rt = super::runtime()?;
    let timeout = Duration::from_millis(a.timeout_ms);
    let result = rt.block_on(async move {
        let client = cf.as_ref().map(Client::new).transpose()?;
        let target = Target::connect(Connect {
            spec: &spec,
            client,
            keyspace: cfg.keyspace.clone(),
            r: cfg.r,
            w: cfg.w,
            timeout,
        })
        .await?;
        anyhow::Ok(driver::run(target, cfg).await?)
    })?;
    if let Some(path) = &a.hdr_log {
        quorumkv::bench::report::write_hdr_log(path, result.started_at, &result.intervals)?;
    }
    let report = Report {
        parameters,
        load: result.load,
        run: result.run,
    };
    print!("{}", report.text());
    if let Some(path) = &a.json {
        report.write_json(path)?;
    }
    if let Some(path) = &a.plot {
        let (phase_name, phase) = match (&report.run, &report.load) {
            (Some(r), _) => ("run", r),
            (None, Some(l)) => ("load", l),
            (None, None) => anyhow::bail!("no phase ran: nothing to plot"),
        };
        let title = format!(
            "{label}: YCSB {} {phase_name}, {}",
            a.workload,
            loop_text(&report.parameters)
        );
        let (latency, throughput) = series(&[(String::new(), phase)], &[])?;
        plot::write_svg(path, &title, &latency, &throughput)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// "closed loop, 32 workers" or "open loop at 1000 ops/s, 32 workers".
fn loop_text(p: &serde_json::Value) -> String {
    let workers = p["concurrency"].as_u64().unwrap_or(0);
    match p["rate"].as_f64() {
        Some(rate) => format!("open loop at {rate:.0} ops/s, {workers} workers"),
        None => format!("closed loop, {workers} workers"),
    }
}

/// Plot lines of phases: one latency line per (run, operation type) — only the types in
/// `ops`, unless it is empty — and one throughput line per run. `prefix` names the run
/// ("" for a single run).
fn series(
    phases: &[(String, &PhaseSummary)],
    ops: &[String],
) -> anyhow::Result<(Vec<LatencySeries>, Vec<ThroughputSeries>)> {
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    for (prefix, phase) in phases {
        for op in phase.operations.keys() {
            if !ops.is_empty() && !ops.contains(op) {
                continue;
            }
            if let Some(hist) = phase.histogram(op)? {
                let label = if prefix.is_empty() {
                    op.clone()
                } else {
                    format!("{prefix} {op}")
                };
                latency.push(LatencySeries { label, hist });
            }
        }
        throughput.push(ThroughputSeries {
            label: if prefix.is_empty() {
                "all operations".to_string()
            } else {
                prefix.clone()
            },
            points: phase.timeline.clone(),
        });
    }
    Ok((latency, throughput))
}

#[derive(Debug, Args)]
pub struct BenchReportArgs {
    /// Reports written by `quorumkv bench --json`; one table row per file, in order.
    #[arg(required = true, value_name = "REPORT.json")]
    reports: Vec<PathBuf>,
    /// Write the markdown table to FILE (default: print it).
    #[arg(long, value_name = "FILE.md")]
    markdown: Option<PathBuf>,
    /// Draw every run's latency by percentile and throughput over time into one SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Only these operation types in the plot (comma-separated, e.g. `update,read`).
    #[arg(long, value_delimiter = ',')]
    plot_ops: Vec<String>,
    /// Title of the plot.
    #[arg(long, default_value = "quorumkv bench")]
    title: String,
}

/// `quorumkv bench-report`: one markdown row per report (its run phase, and the load
/// phase's insert rate), and one plot of all of them.
pub fn report(a: BenchReportArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for path in &a.reports {
        let r = Report::read_json(path)?;
        let label = r.parameters["label"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| path.display().to_string());
        reports.push((label, r));
    }
    let table = markdown_table(&reports);
    match &a.markdown {
        Some(path) => std::fs::write(path, &table)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{table}"),
    }
    if let Some(path) = &a.plot {
        let phases: Vec<(String, &PhaseSummary)> = reports
            .iter()
            .filter_map(|(label, r)| {
                r.run
                    .as_ref()
                    .or(r.load.as_ref())
                    .map(|p| (label.clone(), p))
            })
            .collect();
        let (latency, throughput) = series(&phases, &a.plot_ops)?;
        plot::write_svg(path, &a.title, &latency, &throughput)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn markdown_table(reports: &[(String, Report)]) -> String {
    let mut s = String::from(
        "| run | target | workload | loop | ops/s | read p50 / p99 / p99.9 (µs) | update p50 / p99 / p99.9 (µs) | load inserts/s | errors |\n\
         |---|---|---|---|---:|---|---|---:|---:|\n",
    );
    let pct = |p: Option<&PhaseSummary>, op: &str| {
        p.and_then(|p| p.operations.get(op))
            .map(|o| format!("{} / {} / {}", o.p50_us, o.p99_us, o.p999_us))
            .unwrap_or_else(|| "—".to_string())
    };
    for (label, r) in reports {
        let p = &r.parameters;
        let run = r.run.as_ref();
        let errors = r.run.as_ref().map(|x| x.errors.total()).unwrap_or(0)
            + r.load.as_ref().map(|x| x.errors.total()).unwrap_or(0);
        s.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {errors} |\n",
            // The store, not its address (the report's setup section has those).
            p["target"]
                .as_str()
                .map(|t| t.split("://").next().unwrap_or(t))
                .unwrap_or("?"),
            p["workload"].as_str().unwrap_or("?").to_uppercase(),
            loop_text(p),
            run.map(|x| format!("{:.0}", x.throughput))
                .unwrap_or_else(|| "—".into()),
            pct(run, "read"),
            pct(run, "update"),
            r.load
                .as_ref()
                .map(|l| format!("{:.0}", l.throughput))
                .unwrap_or_else(|| "—".into()),
        ));
    }
    s
}
