//! The benchmark driver: a concurrent load phase, then a closed- or open-loop run phase.
//!
//! Closed loop (default): C workers each issue the next operation as soon as the previous
//! one completes; latency is the operation's own service time. Open loop (`rate`): every
//! operation has an *intended* start time on a fixed schedule (`rate` ops/s, released by
//! a pacer thread; the next free worker takes it) and its latency is measured from that
//! intended time, so a stall that delays later requests is charged to them (no
//! coordinated omission). Every loop ends
//! by itself: after a duration or an operation budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::report::{encode_v2, PhaseSummary, Recorder};
use super::target::{Target, TargetError};
use super::workload::{Distribution, KeyChooser, Op, Rng, Workload, MAX_SCAN_LENGTH};

/// Errors from the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Parameters that cannot run.
    #[error("invalid benchmark parameters: {0}")]
    Invalid(String),
    /// A worker task failed (a bug).
    #[error("benchmark worker failed: {0}")]
    Worker(String),
}

/// When the run phase stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long (no new operation starts after it).
    Duration(Duration),
    /// After this many operations in total.
    Ops(u64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Keyspace to use.
    pub keyspace: String,
    /// YCSB workload.
    pub workload: Workload,
    /// Records inserted by the load phase (and assumed present by the run phase).
    pub records: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Concurrent workers.
    pub concurrency: usize,
    /// When the run phase ends.
    pub stop: Stop,
    /// Key popularity.
    pub distribution: Distribution,
    /// Open loop at this many ops/s; `None` for closed loop.
    pub rate: Option<f64>,
    /// Read quorum override.
    pub r: Option<u8>,
    /// Write quorum override.
    pub w: Option<u8>,
    /// Run the load phase.
    pub load: bool,
    /// Run the run phase.
    pub run: bool,
    /// Seed of the random choices.
    pub seed: u64,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// Keep one histogram per operation type per second (for an HdrHistogram log).
    pub intervals: bool,
}

/// Largest value accepted (the node refuses much larger ones anyway).
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;
/// Most workers.
pub const MAX_CONCURRENCY: usize = 10_000;
/// Most contexts remembered for updates (bounded memory).
const MAX_CONTEXTS: usize = 100_000;

impl BenchConfig {
    /// Check that the parameters make sense.
    pub fn validate(&self) -> Result<(), DriverError> {
        let bad = |m: &str| Err(DriverError::Invalid(m.to_string()));
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(&format!("--concurrency must be 1..={MAX_CONCURRENCY}"));
        }
        if self.records == 0 {
            return bad("--records must be at least 1");
        }
        if self.value_size > MAX_VALUE_SIZE {
            return bad(&format!("--value-size must be at most {MAX_VALUE_SIZE}"));
        }
        if let Some(r) = self.rate {
            if !r.is_finite() || r <= 0.0 {
                return bad("--rate must be a positive number of ops/s");
            }
        }
        match self.stop {
            Stop::Duration(d) if d.is_zero() => return bad("--duration must be positive"),
            Stop::Ops(0) => return bad("--ops must be at least 1"),
            _ => {}
        }
        if !self.load && !self.run {
            return bad("nothing to do: neither load nor run phase");
        }
        Ok(())
    }
}

/// Results of the phases that ran.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// The load phase.
    pub load: Option<PhaseSummary>,
    /// The run phase.
    pub run: Option<PhaseSummary>,
    /// When the benchmark started (interval offsets count from here).
    pub started_at: std::time::SystemTime,
    /// Per-second histograms, when asked for.
    pub intervals: Vec<Interval>,
}

/// One operation type's latencies over one interval, V2-serialized (compact: a long run
/// would not fit in memory as full histograms).
#[derive(Debug, Clone)]
pub struct Interval {
    /// `phase-op`, e.g. `run-read`.
    pub tag: String,
    /// Start, since the benchmark started.
    pub start: Duration,
    /// Length.
    pub duration: Duration,
    /// The histogram in HdrHistogram's V2 encoding.
    pub encoded: Vec<u8>,
}

struct Shared {
    target: Target,
    cfg: BenchConfig,
    /// Next record number to insert.
    next_record: AtomicU64,
    /// Operations claimed from the budget.
    issued: AtomicU64,
    /// Latest causal context seen per record: updates carry it so that repeated writes
    /// replace the previous version instead of piling up siblings.
    contexts: Mutex<HashMap<u64, String>>,
    rec: Mutex<Recorder>,
    /// Latencies since the last interval cut (only with `cfg.intervals`).
    interval: Mutex<(Instant, Recorder)>,
    /// The key chooser each worker clones (its zipfian zeta is computed once).
    chooser: KeyChooser,
    intervals: Mutex<Vec<Interval>>,
    /// (seconds since the phase started, ops/s over the last second) of the current phase.
    timeline: Mutex<Vec<(f64, f64)>>,
    /// Open loop: intended start times released by the pacer thread; the next free
    /// worker takes one. `None` outside an open-loop run phase.
    arrivals: tokio::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Instant>>>,
    base: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn remember(&self, n: u64, ctx: String) {
        if ctx.is_empty() || !self.target.has_contexts() {
            return;
        }
        let mut m = lock(&self.contexts);
        if m.len() < MAX_CONTEXTS || m.contains_key(&n) {
            m.insert(n, ctx);
        }
    }

    fn context_of(&self, n: u64) -> Option<String> {
        lock(&self.contexts).get(&n).cloned()
    }

    fn value(&self, rng: &mut Rng) -> Vec<u8> {
        (0..self.cfg.value_size)
            .map(|_| b'a' + (rng.next_u64() % 26) as u8)
            .collect()
    }

    async fn insert(&self, n: u64, rng: &mut Rng) -> Result<(), TargetError> {
        let key = self.cfg.workload.key_text(n);
        let v = self.value(rng);
        self.target.write(&key, v, None).await?;
        Ok(())
    }

    async fn op(&self, op: Op, chooser: &mut KeyChooser, rng: &mut Rng) -> Result<(), TargetError> {
        let wl = self.cfg.workload;
        let count = self.next_record.load(Ordering::Relaxed);
        match op {
            Op::Insert => {
                let n = self.next_record.fetch_add(1, Ordering::Relaxed);
                self.insert(n, rng).await
            }
            Op::Read => {
                let n = chooser.next(rng, count);
                let ctx = self.target.read(&wl.key_text(n)).await?;
                self.remember(n, ctx);
                Ok(())
            }
            Op::Update => {
                let n = chooser.next(rng, count);
                let v = self.value(rng);
                let ctx = self.context_of(n);
                let new_ctx = self.target.write(&wl.key_text(n), v, ctx).await?;
                self.remember(n, new_ctx);
                Ok(())
            }
            Op::ReadModifyWrite => {
                let n = chooser.next(rng, count);
                let key = wl.key_text(n);
                let read_ctx = self.target.read(&key).await?;
                let v = self.value(rng);
                let ctx = (!read_ctx.is_empty()).then_some(read_ctx);
                let new_ctx = self.target.write(&key, v, ctx).await?;
                self.remember(n, new_ctx);
                Ok(())
            }
            Op::Scan => {
                let n = chooser.next(rng, count);
                let (part, from) = Workload::scan_start(n);
                let len = 1 + rng.below(u64::from(MAX_SCAN_LENGTH)) as u32;
                self.target.scan(&part, &from, len).await?;
                Ok(())
            }
        }
    }

    /// Close the current interval: serialize its non-empty histograms.
    fn cut_interval(&self, phase: &str) {
        if !self.cfg.intervals {
            return;
        }
        let now = Instant::now();
        let (from, rec) = {
            let mut cur = lock(&self.interval);
            std::mem::replace(&mut *cur, (now, Recorder::default()))
        };
        let mut out = Vec::new();
        for op in Op::ALL {
            let h = &rec.hists[op.index()];
            if h.is_empty() {
                continue;
            }
            if let Some(encoded) = encode_v2(h) {
                out.push(Interval {
                    tag: format!("{phase}-{}", op.name()),
                    start: from.duration_since(self.base),
                    duration: now.duration_since(from),
                    encoded,
                });
            }
        }
        lock(&self.intervals).extend(out);
    }

    fn record(&self, op: Op, started: Instant, res: Result<(), TargetError>) {
        let mut rec = lock(&self.rec);
        match res {
            Ok(()) => {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                rec.record(op, us);
                if self.cfg.intervals {
                    lock(&self.interval).1.record(op, us);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, op = op.name(), "benchmark operation failed");
                rec.errors.add(e.class());
            }
        }
    }
}

/// Run the configured phases against `target`.
pub async fn run(target: Target, cfg: BenchConfig) -> Result<BenchResult, DriverError> {
    cfg.validate()?;
    let started_at = std::time::SystemTime::now();
    let base = Instant::now();
    let shared = Arc::new(Shared {
        interval: Mutex::new((base, Recorder::default())),
        chooser: KeyChooser::new(cfg.distribution, cfg.records),
        intervals: Mutex::new(Vec::new()),
        timeline: Mutex::new(Vec::new()),
        arrivals: tokio::sync::Mutex::new(None),
        base,
        target,
        next_record: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        contexts: Mutex::new(HashMap::new()),
        rec: Mutex::new(Recorder::default()),
        cfg,
    });
    let mut result = BenchResult {
        load: None,
        run: None,
        started_at,
        intervals: Vec::new(),
    };
    if shared.cfg.load {
        result.load = Some(phase(&shared, "load", load_worker).await?);
    }
    shared
        .next_record
        .store(shared.cfg.records, Ordering::Relaxed);
    if shared.cfg.run {
        *lock(&shared.rec) = Recorder::default();
        result.run = Some(phase(&shared, "run", run_worker).await?);
    }
    result.intervals = std::mem::take(&mut *lock(&shared.intervals));
    Ok(result)
}

async fn phase<F, Fut>(
    shared: &Arc<Shared>,
    name: &'static str,
    worker: F,
) -> Result<PhaseSummary, DriverError>
where
    F: Fn(Arc<Shared>, usize, Instant) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    if shared.cfg.intervals {
        *lock(&shared.interval) = (start, Recorder::default());
    }
    lock(&shared.timeline).clear();
    if name == "run" {
        if let Some(rate) = shared.cfg.rate {
            *shared.arrivals.lock().await = Some(pace(rate, start, shared.cfg.stop)?);
        }
    }
    // Always ticks: besides the progress line and the interval log it samples the
    // throughput timeline the report and the plot show.
    let ticker = tokio::spawn(progress(shared.clone(), name, start));
    let mut tasks = Vec::new();
    for i in 0..shared.cfg.concurrency {
        tasks.push(tokio::spawn(worker(shared.clone(), i, start)));
    }
    let mut failure = None;
    for t in tasks {
        if let Err(e) = t.await {
            failure = Some(e.to_string());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    ticker.abort();
    if shared.cfg.progress {
        eprintln!();
    }
    shared.cut_interval(name);
    if let Some(f) = failure {
        return Err(DriverError::Worker(f));
    }
    let rec = lock(&shared.rec).clone();
    let mut summary = PhaseSummary::of(&rec, elapsed);
    summary.timeline = std::mem::take(&mut *lock(&shared.timeline));
    Ok(summary)
}

async fn progress(shared: Arc<Shared>, name: &'static str, start: Instant) {
    let mut iv = tokio::time::interval(Duration::from_secs(1));
    iv.tick().await;
    let mut last = 0u64;
    let mut last_at = start;
    loop {
        iv.tick().await;
        shared.cut_interval(name);
        let now = Instant::now();
        // One look at the recorder for both the timeline and the progress line (the
        // percentiles only when the line is shown: merging histograms is not free).
        let (count, line) = {
            let rec = lock(&shared.rec);
            let line = shared.cfg.progress.then(|| {
                let all = rec.combined();
                (
                    all.value_at_quantile(0.5),
                    all.value_at_quantile(0.99),
                    rec.errors.total(),
                )
            });
            (rec.count(), line)
        };
        let done = count - last.min(count);
        let dt = now.duration_since(last_at).as_secs_f64();
        if dt > 0.0 {
            lock(&shared.timeline)
                .push((now.duration_since(start).as_secs_f64(), done as f64 / dt));
        }
        if let Some((p50, p99, errors)) = line {
            eprint!(
                "\r[{name}] {:>7.1} s  {:>9} ops/s  p50 {:>7} µs  p99 {:>7} µs  errors {:<6}",
                start.elapsed().as_secs_f64(),
                done,
                p50,
                p99,
                errors
            );
        }
        last = count;
        last_at = now;
    }
}

async fn load_worker(shared: Arc<Shared>, i: usize, _start: Instant) {
    let mut rng = Rng::new(shared.cfg.seed ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    loop {
        let n = shared.next_record.fetch_add(1, Ordering::Relaxed);
        if n >= shared.cfg.records {
            break;
        }
        let started = Instant::now();
        let res = shared.insert(n, &mut rng).await;
        shared.record(Op::Insert, started, res);
    }
}

/// Most arrivals queued ahead of the workers. When the target falls this far behind,
/// the pacer waits — the queued arrivals keep their intended times, so the backlog still
/// shows in the latencies.
const MAX_QUEUED_ARRIVALS: usize = 65_536;

/// Start the open-loop pacer: a thread that releases intended start times, `rate` per
/// second from `start`, until the run's duration or operation budget is used up.
///
/// A thread with `std::thread::sleep` rather than tokio's timer: tokio's timer wheel has
/// millisecond granularity, so a worker sleeping until its intended time would wake up
/// to a millisecond late — and since latency counts from the intended time, every
/// operation would be charged that lateness (measured here: a 0.3 ms echo round trip
/// showed as 1.1 ms). `nanosleep` is accurate to tens of microseconds.
fn pace(
    rate: f64,
    start: Instant,
    stop: Stop,
) -> Result<tokio::sync::mpsc::Receiver<Instant>, DriverError> {
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_QUEUED_ARRIVALS);
    let start_std = start.into_std();
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            for k in 0u64.. {
                let offset = Duration::from_secs_f64(k as f64 / rate);
                let done = match stop {
                    Stop::Duration(d) => offset >= d,
                    Stop::Ops(n) => k >= n,
                };
                if done {
                    break;
                }
                let t = start_std + offset;
                let now = std::time::Instant::now();
                if t > now {
                    std::thread::sleep(t - now);
                }
                // The workers are gone (the phase ended or failed): stop.
                if tx.blocking_send(Instant::from_std(t)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| DriverError::Worker(format!("cannot start the pacer thread: {e}")))?;
    Ok(rx)
}

/// The next intended start time from the pacer; `None` when the schedule is over.
async fn next_arrival(shared: &Shared) -> Option<Instant> {
    let mut arrivals = shared.arrivals.lock().await;
    arrivals.as_mut()?.recv().await
}

async fn run_worker(shared: Arc<Shared>, i: usize, start: Instant) {
    let cfg = &shared.cfg;
    let mut rng = Rng::new(cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut chooser = shared.chooser.clone();
    let deadline = match cfg.stop {
        Stop::Duration(d) => Some(start + d),
        Stop::Ops(_) => None,
    };
    loop {
        let intended = if cfg.rate.is_some() {
            // The pacer owns the schedule and the budget.
            match next_arrival(&shared).await {
                Some(t) => t,
                None => break,
            }
        } else {
            if let Stop::Ops(n) = cfg.stop {
                if shared.issued.fetch_add(1, Ordering::Relaxed) >= n {
                    break;
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            now
        };
        let op = cfg.workload.next_op(&mut rng);
        let res = shared.op(op, &mut chooser, &mut rng).await;
        shared.record(op, intended, res);
    }
}
