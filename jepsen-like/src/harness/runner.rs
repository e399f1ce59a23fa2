//! The runner: drives a [`Workload`] against a store through one
//! [`Client`] per worker, with an optional [`Nemesis`], recording a Jepsen
//! history as it goes.
//!
//! Everything runs as futures inside the caller's task on the caller's
//! runtime, timed with `tokio::time` only and randomised with seeded
//! generators only, so the same seed on a paused (simulated) current-thread
//! runtime replays the same history. The workers borrow the workload (it
//! is `&mut W`, shared behind a mutex that is never held across an await),
//! which is why they are not spawned tasks; clients are I/O bound, so
//! sharing one task costs nothing that matters.
//!
//! Jepsen's process discipline: worker `w` starts as process `w`; after an
//! `:info` completion (the op may still take effect) it continues as
//! `w + C`, then `w + 2C`, ... A timeout is `:info` with `:error
//! "timeout"`, never `:fail`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::gen::Rng;
use crate::harness::op::{Client, Completion, Invocation, Nemesis};
use crate::harness::sink::HistorySink;
use crate::harness::workload::{Next, Workload};
use crate::harness::HarnessError;
use crate::history::{Function, History, OpType, Process};
use crate::value::Value;

/// How to run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// How long workers invoke operations (and the nemesis injects faults).
    pub time: Duration,
    /// Workers, each with its own client.
    pub concurrency: usize,
    /// Total operations per second across workers; `None` = as fast as the
    /// clients go.
    pub rate: Option<f64>,
    /// Seeds every random choice (workers, nemesis).
    pub seed: u64,
    /// Fault names for the nemesis to cycle through; empty (or only
    /// "none") = no faults.
    pub nemesis_faults: Vec<String>,
    /// Time between faults, and how long each lasts.
    pub nemesis_interval: Duration,
    /// An operation not complete after this long is recorded as `:info`.
    pub op_timeout: Duration,
    /// Pause after healing, before the final reads (lets replicas
    /// converge).
    pub quiet: Duration,
    /// Print a progress line to stderr every 5 s.
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            time: Duration::from_secs(60),
            concurrency: 5,
            rate: None,
            seed: 0,
            nemesis_faults: Vec::new(),
            nemesis_interval: Duration::from_secs(10),
            op_timeout: Duration::from_secs(5),
            quiet: Duration::from_secs(5),
            progress: false,
        }
    }
}

/// A stretch of time during which a fault was active.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NemesisPeriod {
    /// The fault's name.
    pub fault: String,
    /// When its start was invoked (since the run started).
    pub start: Duration,
    /// When its stop completed.
    pub end: Duration,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The whole history (as streamed to the sink's file).
    pub history: History,
    /// Faults in the order they were injected.
    pub nemesis_periods: Vec<NemesisPeriod>,
    /// Wall-clock start of the run (ms since the Unix epoch).
    pub started_at_unix_ms: u64,
    /// How long the run took, final reads included (runtime time: virtual
    /// on a paused runtime).
    pub wall: Duration,
    /// Things that went wrong without stopping the run: refused extra
    /// fields, clients completing with `:invoke`.
    pub problems: Vec<String>,
}

/// Attempts of a final read that does not complete ok: one, plus retries.
const FINAL_READ_RETRIES: usize = 5;
/// Pause between final read attempts.
const FINAL_READ_SPACING: Duration = Duration::from_secs(1);
/// Longest wait before asking a waiting workload again.
const MAX_WAIT: Duration = Duration::from_millis(10);
/// A nemesis call not done after this long is recorded as an error
/// (restarting nodes can be slow, so far longer than an op timeout).
const NEMESIS_TIMEOUT: Duration = Duration::from_secs(120);
/// Progress line period.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Mixed into the seed for the nemesis's generator, so its choices do not
/// mirror worker 0's.
const NEMESIS_SALT: u64 = 0x6e65_6d65_7369_7321;

/// State shared by the workers and the nemesis.
struct Shared<'w, W> {
    workload: &'w mut W,
    sink: HistorySink,
    /// Completions by type: ok, fail, info.
    counts: [u64; 3],
    problems: Vec<String>,
}

struct Ctx<'w, W> {
    shared: Mutex<Shared<'w, W>>,
    opts: &'w RunOptions,
    start: Instant,
    end: Instant,
}

impl<'w, W: Workload> Ctx<'w, W> {
    fn lock(&self) -> MutexGuard<'_, Shared<'w, W>> {
        // A panic elsewhere cannot leave the state half-updated in a way
        // that matters more than losing the run.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Uniform in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn worker_seed(seed: u64, worker: usize) -> u64 {
    // Spread workers apart; Rng (SplitMix64) scrambles the rest.
    seed ^ (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Polls every future until all are done, in the caller's task; results
/// in input order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Option<Pin<Box<F>>>> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn check_options(opts: &RunOptions, faults: &[String]) -> Result<(), HarnessError> {
    let bad = |m: &str| Err(HarnessError::Options(m.to_string()));
    if opts.concurrency == 0 {
        return bad("concurrency must be at least 1");
    }
    if let Some(r) = opts.rate {
        if !(r.is_finite() && r > 0.0) {
            return bad(&format!("rate must be a positive number of ops/s, got {r}"));
        }
    }
    if opts.op_timeout.is_zero() {
        return bad("op timeout must be positive");
    }
    if !faults.is_empty() && opts.nemesis_interval.is_zero() {
        return bad("nemesis interval must be positive when faults are injected");
    }
    Ok(())
}

/// Runs `workload` for `opts.time` with `opts.concurrency` clients made by
/// `make_client(worker)`, injecting `opts.nemesis_faults` with `nemesis`;
/// then heals everything (whenever a nemesis is given), waits
/// `opts.quiet`, and runs the workload's final reads (each retried up to
/// 5 times, 1 s apart, until it completes ok). Every entry goes to `sink`
/// as it happens. The store's own checks (convergence) are the caller's,
/// after this returns.
pub async fn run<W, C, F, N>(
    workload: &mut W,
    mut make_client: F,
    nemesis: Option<N>,
    sink: HistorySink,
    opts: &RunOptions,
) -> Result<RunRecord, HarnessError>
where
    W: Workload,
    C: Client,
    F: FnMut(usize) -> C,
    N: Nemesis,
{
    let faults: Vec<String> = opts
        .nemesis_faults
        .iter()
        .filter(|f| !f.is_empty() && f.as_str() != "none")
        .cloned()
        .collect();
    check_options(opts, &faults)?;
    let started_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let start = Instant::now();
    let end = start
        .checked_add(opts.time)
        .ok_or_else(|| HarnessError::Options(format!("time {:?} is too long", opts.time)))?;
    let ctx = Ctx {
        shared: Mutex::new(Shared {
            workload,
            sink,
            counts: [0; 3],
            problems: Vec::new(),
        }),
        opts,
        start,
        end,
    };
    let clients: Vec<C> = (0..opts.concurrency).map(&mut make_client).collect();

    let workers = join_all(
        clients
            .into_iter()
            .enumerate()
            .map(|(w, c)| worker(&ctx, w, c))
            .collect(),
    );
    let faults_task = async {
        match nemesis {
            Some(n) => nemesis_task(&ctx, n, &faults).await,
            None => Vec::new(),
        }
    };
    let progress = async {
        if opts.progress {
            progress_task(&ctx).await;
        }
    };
    let (workers, nemesis_periods, ()) = tokio::join!(workers, faults_task, progress);

    tokio::time::sleep(opts.quiet).await;
    let reads = ctx.lock().workload.final_reads();
    let mut per_worker: Vec<Vec<Value>> = vec![Vec::new(); workers.len()];
    for (i, v) in reads.into_iter().enumerate() {
        per_worker[i % opts.concurrency].push(v);
    }
    join_all(
        workers
            .into_iter()
            .zip(per_worker)
            .map(|((client, process), reads)| final_reader(&ctx, client, process, reads))
            .collect(),
    )
    .await;

    let wall = ctx.now();
    let shared = ctx.shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut problems = shared.sink.problems().to_vec();
    problems.extend(shared.problems);
    let history = shared.sink.finish()?;
    Ok(RunRecord {
        history,
        nemesis_periods,
        started_at_unix_ms,
        wall,
        problems,
    })
}

/// Records, performs (raced with the op timeout) and completes one op;
/// tells the workload.
async fn perform<W: Workload, C: Client>(
    ctx: &Ctx<'_, W>,
    client: &mut C,
    process: i64,
    f: Function,
    value: Value,
) -> Completion {
    let mut inv = Invocation { process, f, value };
    let extra = client.prepare(&mut inv);
    let index = {
        let mut s = ctx.lock();
        let t = nanos(ctx.now());
        s.sink
            .invoke(process, inv.f.clone(), inv.value.clone(), t, &extra)
    };
    let mut c = match tokio::time::timeout(ctx.opts.op_timeout, client.invoke(&inv)).await {
        Ok(c) => c,
        Err(_) => Completion::info(inv.value.clone()).with("error", Value::Str("timeout".into())),
    };
    let mut s = ctx.lock();
    if c.kind == OpType::Invoke {
        s.problems.push(format!(
            "process {process} {} {}: the client completed with :invoke; recorded as :info",
            inv.f, inv.value
        ));
        c.kind = OpType::Info;
    }
    let now = ctx.now();
    if let Err(e) = s
        .sink
        .complete(index, c.kind, c.value.clone(), nanos(now), &c.extra)
    {
        s.problems.push(e.to_string());
    }
    s.counts[match c.kind {
        OpType::Ok => 0,
        OpType::Fail => 1,
        _ => 2,
    }] += 1;
    s.workload.completed(&inv, &c, now);
    c
}

async fn worker<W: Workload, C: Client>(ctx: &Ctx<'_, W>, w: usize, mut client: C) -> (C, i64) {
    let concurrency = ctx.opts.concurrency as i64;
    let mut process = w as i64;
    let mut rng = Rng::new(worker_seed(ctx.opts.seed, w));
    loop {
        let now = ctx.now();
        if now >= ctx.opts.time {
            break;
        }
        let next = ctx.lock().workload.next(w, now, &mut rng);
        match next {
            Next::Done => break,
            Next::Wait(d) => {
                let d = d.clamp(Duration::from_millis(1), MAX_WAIT);
                tokio::time::sleep_until((Instant::now() + d).min(ctx.end)).await;
            }
            Next::Op(f, value) => {
                let c = perform(ctx, &mut client, process, f, value).await;
                if c.kind == OpType::Info {
                    process += concurrency;
                }
                if let Some(rate) = ctx.opts.rate {
                    // Each worker's share of the rate, jittered ±50% so
                    // workers do not march in lockstep.
                    let mean = ctx.opts.concurrency as f64 / rate;
                    let pause = Duration::from_secs_f64(mean * (0.5 + unit(&mut rng)));
                    tokio::time::sleep_until((Instant::now() + pause).min(ctx.end)).await;
                }
            }
        }
    }
    (client, process)
}

async fn final_reader<W: Workload, C: Client>(
    ctx: &Ctx<'_, W>,
    mut client: C,
    mut process: i64,
    reads: Vec<Value>,
) {
    for value in reads {
        for attempt in 0..=FINAL_READ_RETRIES {
            let c = perform(
                ctx,
                &mut client,
                process,
                Function::FinalRead,
                value.clone(),
            )
            .await;
            if c.kind == OpType::Info {
                process += ctx.opts.concurrency as i64;
            }
            if c.kind == OpType::Ok {
                break;
            }
            if attempt < FINAL_READ_RETRIES {
                tokio::time::sleep(FINAL_READ_SPACING).await;
            }
        }
    }
}

/// Records a nemesis call as Jepsen does (`:info` invoke and completion,
/// `:fault` on both); returns when it completed.
async fn nemesis_op<W: Workload>(
    ctx: &Ctx<'_, W>,
    f: &str,
    value: Value,
    fault: &str,
    call: impl Future<Output = Result<Value, String>>,
) -> Duration {
    let extra = [("fault".to_string(), Value::Str(fault.to_string()))];
    let f = Function::Other(f.to_string());
    {
        let mut s = ctx.lock();
        let t = nanos(ctx.now());
        s.sink.info(Process::Nemesis, f.clone(), value, t, &extra);
    }
    let error = |m: String| Value::Vector(vec![Value::kw("error"), Value::Str(m)]);
    let result = match tokio::time::timeout(NEMESIS_TIMEOUT, call).await {
        Ok(Ok(v)) => v,
        Ok(Err(m)) => error(m),
        Err(_) => error("timeout".into()),
    };
    let now = ctx.now();
    ctx.lock()
        .sink
        .info(Process::Nemesis, f, result, nanos(now), &extra);
    now
}

async fn nemesis_task<W: Workload, N: Nemesis>(
    ctx: &Ctx<'_, W>,
    mut nemesis: N,
    faults: &[String],
) -> Vec<NemesisPeriod> {
    let mut rng = Rng::new(ctx.opts.seed ^ NEMESIS_SALT);
    let interval = ctx.opts.nemesis_interval;
    let mut periods = Vec::new();
    while !faults.is_empty() {
        tokio::time::sleep_until((Instant::now() + interval).min(ctx.end)).await;
        if Instant::now() >= ctx.end {
            break;
        }
        let fault = &faults[rng.below(faults.len() as u64) as usize];
        let draw = rng.next_u64();
        let start = ctx.now();
        let value = Value::Str(fault.clone());
        nemesis_op(
            ctx,
            "start",
            value.clone(),
            fault,
            nemesis.start(fault, draw),
        )
        .await;
        tokio::time::sleep_until((Instant::now() + interval).min(ctx.end)).await;
        let end = nemesis_op(ctx, "stop", value, fault, nemesis.stop(fault)).await;
        periods.push(NemesisPeriod {
            fault: fault.clone(),
            start,
            end,
        });
    }
    nemesis_op(ctx, "heal", Value::Nil, "all", nemesis.heal_all()).await;
    periods
}

async fn progress_task<W: Workload>(ctx: &Ctx<'_, W>) {
    loop {
        tokio::time::sleep_until((Instant::now() + PROGRESS_EVERY).min(ctx.end)).await;
        if Instant::now() >= ctx.end {
            break;
        }
        let s = ctx.lock();
        let [ok, fail, info] = s.counts;
        eprintln!(
            "jepsen {}: {:>5.0} s  ok {ok}  fail {fail}  info {info}",
            s.workload.name(),
            ctx.now().as_secs_f64()
        );
    }
}
