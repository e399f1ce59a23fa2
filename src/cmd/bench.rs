//! `quorumkv bench`: argument parsing for the YCSB-style load generator in
//! [`quorumkv::bench`]; prints the report table and writes the JSON report.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use quorumkv::bench::driver::{self, BenchConfig, Stop};
use quorumkv::bench::report::Report;
use quorumkv::bench::workload::{Distribution, Workload};
use quorumkv::client::Client;
use quorumkv::config::ClusterFile;
use serde_json::json;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Client connection file written by `dev-cluster` or `cluster-up`.
    #[arg(long, env = "QUORUMKV_CLUSTER", default_value_os_t = super::default_cluster_file())]
    cluster: PathBuf,
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
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
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
    let cf = ClusterFile::load(&a.cluster).with_context(|| {
        "no cluster to talk to: start one with `scripts/dev.sh` (or `quorumkv dev-cluster`), or pass --cluster FILE".to_string()
    })?;
    let keyspace = a.keyspace.clone().unwrap_or_else(|| cf.keyspace.clone());
    cfg.keyspace = keyspace.clone();
    let parameters = json!({
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
    let result = rt.block_on(async move {
        let client = Client::new(&cf)?;
        anyhow::Ok(driver::run(client, cfg).await?)
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
    Ok(ExitCode::SUCCESS)
}
