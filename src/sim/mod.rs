//! The deterministic simulator: a whole quorumkv cluster in one thread, driven by one
//! seed, replayable exactly (docs/SIMULATION.md).
//!
//! Real nodes — the same coordinator, replica, conflict resolution and storage-facing
//! code a process runs — are built on simulated machines: a disk with real durability
//! semantics ([`storage`]), a wall clock with skew, drift and jumps ([`env::SimClock`]), and
//! a process environment ([`env::SimEnv`]) whose tasks die with it. They talk over the
//! in-memory network with seeded latency, loss, duplication and partitions. Simulated
//! clients ([`workload`]) run four workloads and record Jepsen histories while the
//! [`nemesis`] injects faults; then every fault is healed, the replicas must converge, and
//! the `jepsen-like` checkers judge the histories in process. With the opt-in `membership`
//! fault a spare machine joins and leaves the layout meanwhile ([`membership_loop`]); the
//! heal then shrinks the layout back and waits until it settles on one version.
//!
//! Determinism: everything runs on one paused single-threaded tokio runtime (virtual time
//! jumps to the next timer when every task waits), every random choice comes from the
//! seed, and the protocol code reaches time, tasks and randomness only through
//! [`crate::env::Env`]. Every event (message sent, delivered, lost; fault; operation) is
//! hashed into the run's trace hash, so two runs of one seed can be compared exactly.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

pub mod cluster;
pub mod env;
pub mod nemesis;
#[cfg(test)]
mod seam;
pub mod storage;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_like::{CheckOptions, Function, OpType, Value, Verdict};

use crate::env::{Instant, Rng};
use crate::membership::layout::Change;
use crate::membership::View;
use crate::proto::{ClientRequest, ClientResponse};
use crate::replica::InjectedBugs;
use crate::transport::memory::{LinkFaults, MemoryNetwork};

use cluster::{ClusterSpec, SimCluster};
use nemesis::{Action, Fault};
use workload::{ClientState, Histories, Outcome, Planned, Workload};

/// How long the layout may take to settle after the heal (the spare out of it, one live
/// version everywhere) before the run fails.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// How long the simulator waits for a commit's answer: the proposer's own bound is five
/// ballots of two phases, each within the request timeout, plus the push of the result.
const COMMIT_PATIENCE: Duration = Duration::from_secs(15);

/// How often the OS writes an unsynced disk back (Linux's default is every 5 s for data
/// older than 30 s; shorter here so a run of a few seconds sees both sides of it).
const WRITEBACK: Duration = Duration::from_millis(500);

/// How a run is set up (everything but the seed).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster size.
    pub nodes: usize,
    /// Client operations in the fault phase (at most).
    pub ops: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Simulated time limit of the fault phase.
    pub time: Duration,
    /// Faults the nemesis draws from (and the `unsynced` mode).
    pub faults: Vec<Fault>,
    /// Workloads the clients draw from.
    pub workloads: Vec<Workload>,
    /// Re-introduced bug classes (tests and `--bug` only).
    pub bugs: SimBugs,
    /// Keep every event's text, not only its hash.
    pub trace: bool,
    /// Simulated time the replicas get to converge after the heal.
    pub converge_within: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            ops: 1000,
            clients: 5,
            time: Duration::from_secs(60),
            faults: nemesis::EVENTS.to_vec(),
            workloads: workload::ALL.to_vec(),
            bugs: SimBugs::default(),
            trace: false,
            converge_within: Duration::from_secs(30),
        }
    }
}

/// The bug classes the simulator can re-introduce, to show its swarm finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimBugs {
    /// In the replica: see [`InjectedBugs`].
    pub replica: InjectedBugs,
    /// An unsynced node restarts under its old incarnation, re-issuing dots its crash lost.
    pub keep_incarnation: bool,
}

/// The names `--bug` takes, and what each switches on.
pub const BUG_NAMES: [&str; 7] = [
    "ack-before-durable",
    "reissue-dot",
    "overlap-keeps-incarnation",
    "ignore-context",
    "overwrite-repair",
    "sync-without-transfer",
    "write-newest-layout-only",
];

impl SimBugs {
    /// Switch on the bug called `name` (one of [`BUG_NAMES`]); `reissue-dot` also runs
    /// the nodes unsynced, and the two layout bugs add the `membership` fault, which they
    /// need.
    pub fn enable(&mut self, name: &str, faults: &mut Vec<Fault>) -> Result<(), String> {
        match name {
            "ack-before-durable" => self.replica.ack_before_durable = true,
            "reissue-dot" => {
                // Both halves of the incarnation rule off: the restart keeps the old
                // incarnation, and the lost-dot detection does not renew it.
                self.keep_incarnation = true;
                self.replica.ignore_lost_dots = true;
                if !faults.contains(&Fault::Unsynced) {
                    faults.push(Fault::Unsynced);
                }
            }
            "overlap-keeps-incarnation" => {
                // The start-up half of the overlap rule off: a node that lost power with
                // deferred writes whose objects reached peers keeps its incarnation.
                self.replica.overlap_keeps_incarnation = true;
                if !faults.contains(&Fault::Overlap) {
                    faults.push(Fault::Overlap);
                }
            }
            "ignore-context" => self.replica.ignore_context = true,
            "overwrite-repair" => self.replica.overwrite_on_merge = true,
            "sync-without-transfer" | "write-newest-layout-only" => {
                if name == "sync-without-transfer" {
                    self.replica.sync_without_transfer = true;
                } else {
                    self.replica.write_newest_layout_only = true;
                }
                if !faults.contains(&Fault::Membership) {
                    faults.push(Fault::Membership);
                }
            }
            other => {
                return Err(format!(
                    "unknown bug {other:?}: expected one of {}",
                    BUG_NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }
}

/// One check of a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// Whether it decides the run (some verdicts are only reported).
    pub judged: bool,
    /// What was found.
    pub detail: String,
}

/// What a run did and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Hash of every event, in order: equal for two runs of one seed.
    pub trace_hash: u64,
    /// Events recorded.
    pub events: u64,
    /// The event log (with `trace`).
    #[serde(skip)]
    pub trace: Option<Vec<String>>,
    /// Client operations completed in the fault phase.
    pub ops: u64,
    /// Simulated time of the whole run, ms.
    pub sim_ms: u64,
    /// Simulated time from the heal until every replica held the same copy of every key.
    pub converged_ms: Option<u64>,
    /// The checks, judged and reported.
    pub checks: Vec<Check>,
    /// A failure of the simulation itself (a node that would not restart, ...).
    pub error: Option<String>,
}

impl SimReport {
    /// A run that could not be carried out.
    fn failed(seed: u64, error: String) -> Self {
        SimReport {
            seed,
            trace_hash: 0,
            events: 0,
            trace: None,
            ops: 0,
            sim_ms: 0,
            converged_ms: None,
            checks: Vec::new(),
            error: Some(error),
        }
    }

    /// Whether every judged check held.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.iter().all(|c| c.passed || !c.judged)
    }

    /// The judged checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.judged && !c.passed)
            .collect()
    }
}

/// The event trace: hashed as it goes; kept in full when asked.
struct Trace {
    hasher: xxhash_rust::xxh3::Xxh3,
    lines: Option<Vec<String>>,
    count: u64,
    origin: Instant,
}

impl Trace {
    fn event(&mut self, text: &str) {
        let t = env::now().saturating_duration_since(self.origin).as_nanos() as u64;
        self.hasher.update(&t.to_le_bytes());
        self.hasher.update(text.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if let Some(lines) = &mut self.lines {
            lines.push(format!("{:>12.6} {text}", t as f64 / 1e9));
        }
    }
}

/// Everything the run's tasks share.
struct Run {
    cfg: SimConfig,
    cluster: Mutex<SimCluster>,
    trace: Arc<Mutex<Trace>>,
    histories: Mutex<Histories>,
    origin: Instant,
    ops_left: AtomicU64,
    ops_done: AtomicU64,
    unique: AtomicU64,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
    request_timeout: Duration,
    base_links: LinkFaults,
    /// The membership fault's spare machine (after the `cfg.nodes` layout nodes).
    spare: Option<usize>,
}

impl Run {
    fn event(&self, text: &str) {
        self.trace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .event(text);
    }

    /// Record a failure of the simulation itself (it fails the run).
    fn error(&self, message: String) {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, SimCluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn time_ns(&self) -> i64 {
        env::now().saturating_duration_since(self.origin).as_nanos() as i64
    }

    /// Every machine: the layout nodes and the spare, if any.
    fn machines(&self) -> usize {
        self.cfg.nodes + usize::from(self.spare.is_some())
    }

    fn fault_phase_over(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || env::now().saturating_duration_since(self.origin) >= self.cfg.time
    }

    /// Call node `i`'s coordinator and wait (bounded) for its answer.
    async fn call(&self, i: usize, req: ClientRequest) -> Outcome {
        // A little longer than the coordinator's own timeout, so a slow answer still counts.
        let patience = self.request_timeout + Duration::from_millis(500);
        self.call_within(i, req, patience).await
    }

    /// Call node `i`'s coordinator and wait at most `patience` for its answer.
    async fn call_within(&self, i: usize, req: ClientRequest, patience: Duration) -> Outcome {
        let (rx, process) = {
            let c = self.cluster();
            (c.request(i, req), c.node(i))
        };
        let (Some(rx), Some((_, env))) = (rx, process) else {
            return Outcome::Refused;
        };
        match within(patience, rx).await {
            Some(Ok(resp)) => Outcome::Answer(resp),
            Some(Err(_)) if env.alive() => {
                // The request's task ended without answering while its process still
                // runs: it panicked (a crash ends it with the process instead).
                self.error(format!(
                    "n{}'s coordinator ended a request without answering (a panic)",
                    i + 1
                ));
                Outcome::Lost
            }
            _ => Outcome::Lost,
        }
    }

    /// Run one planned operation from `process` against node `node`, recording it.
    async fn operate(
        &self,
        process: i64,
        node: usize,
        p: Planned,
        state: &mut ClientState,
    ) -> OpType {
        let idx = {
            let mut h = self.histories.lock().unwrap_or_else(|e| e.into_inner());
            let rec = h.of(p.workload, &p.key);
            let idx = rec.invoke(process, p.f.clone(), p.value.clone(), self.time_ns());
            let _ = rec.annotate(idx, "node", Value::Str(format!("n{}", node + 1)));
            idx
        };
        self.event(&format!(
            "invoke p{process} n{} {} {} {}",
            node + 1,
            p.workload,
            p.f.name(),
            p.value
        ));
        let outcome = self.call(node, p.request.clone()).await;
        let (kind, value) = workload::complete(&p, outcome, state);
        self.event(&format!("{kind:?} p{process} {} {value}", p.f.name()));
        let mut h = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = h
            .of(p.workload, &p.key)
            .complete(idx, kind, value, self.time_ns())
        {
            self.error(format!("history: {e}"));
        }
        kind
    }
}

/// `fut`, or `None` after `d` of simulated time.
#[allow(clippy::disallowed_methods)] // the simulator's own clock is the paused runtime's
async fn within<F: std::future::Future>(d: Duration, fut: F) -> Option<F::Output> {
    tokio::time::timeout(d, fut).await.ok()
}

#[allow(clippy::disallowed_methods)] // the simulator's own tasks (clients, nemesis)
fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(
    f: F,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(f)
}

/// Run one seed.
pub fn run(seed: u64, cfg: &SimConfig) -> SimReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    match rt {
        Ok(rt) => {
            let report = rt.block_on(run_async(seed, cfg.clone()));
            // Dropping the runtime ends the nodes' remaining tasks (probes, repairs).
            drop(rt);
            report
        }
        Err(e) => SimReport::failed(seed, format!("cannot build the simulation runtime: {e}")),
    }
}

/// The simulated network of an `nodes`-node cluster named n1.., drawn from `rng`: every
/// directed link gets its own latency range, 0.1–1 ms at least plus up to 10 ms of spread
/// (so messages on one link reorder too). Returns it with its fault-free link settings.
pub fn network(rng: &mut Rng, nodes: usize, origin: Instant) -> (MemoryNetwork, LinkFaults) {
    // The network's own timers and tasks live in an environment that never crashes.
    let net_env = env::SimEnv::new(env::SimClock::new(origin), rng.next_u64());
    let net = MemoryNetwork::with_env(net_env, rng.next_u64());
    let base_links = LinkFaults::default();
    net.set_faults(base_links.clone());
    for a in 1..=nodes {
        for b in 1..=nodes {
            if a != b {
                let min = Duration::from_micros(100 + rng.below(900));
                let max = min + Duration::from_micros(rng.below(10_000));
                net.set_link_latency(&format!("n{a}"), &format!("n{b}"), min, max);
            }
        }
    }
    (net, base_links)
}

async fn run_async(seed: u64, cfg: SimConfig) -> SimReport {
    let origin = env::now();
    let mut rng = Rng::new(seed);
    let trace = Arc::new(Mutex::new(Trace {
        hasher: xxhash_rust::xxh3::Xxh3::new(),
        lines: cfg.trace.then(Vec::new),
        count: 0,
        origin,
    }));
    // The membership fault's spare machine comes after the layout nodes; without it the
    // seed draws exactly what it drew before the fault existed.
    let spares = usize::from(cfg.faults.contains(&Fault::Membership));
    let (net, base_links) = network(&mut rng, cfg.nodes + spares, origin);
    {
        let trace = Arc::clone(&trace);
        net.observe(Arc::new(move |e| {
            trace
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .event(&format!("net {e:?}"));
        }));
    }
    let request_timeout = Duration::from_millis(1000);
    let unsynced = cfg.faults.contains(&Fault::Unsynced);
    let spec = ClusterSpec {
        nodes: cfg.nodes,
        keyspaces: cfg
            .workloads
            .iter()
            .map(|w| {
                let mut def = w.keyspace_def(cfg.nodes);
                // With more nodes than N (a 5-node cluster, or the spare in the layout)
                // there are stand-ins beyond the N primaries, and a write W counted with a
                // stand-in's hint may be missed by a quorum read until the hint is
                // replayed: what a sloppy quorum gives up (docs/CONSISTENCY.md), and the
                // counter checker judges every read. So the counter keeps strict quorums
                // there, and its reads judge R + W > N (across layout versions too); the
                // other workloads, which judge only what survives, stay sloppy.
                let stand_ins = cfg.nodes + spares > def.n as usize;
                if stand_ins && *w == Workload::Counter {
                    def.sloppy_quorum = false;
                }
                def
            })
            .collect(),
        request_timeout,
        speculative_read: Duration::from_millis(crate::config::DEFAULT_SPECULATIVE_READ_MS),
        unsynced,
        bugs: cfg.bugs.replica,
        keep_incarnation: cfg.bugs.keep_incarnation,
        overlap_lead_sync: cfg.faults.contains(&Fault::Overlap),
        anti_entropy: Default::default(),
        hints: Default::default(),
        tombstones: crate::config::TombstonesConfig {
            // The simulated workloads do not delete; reaping is tested in-process
            // (tests/tombstones.rs). Off, so seeds replay as before.
            enabled: false,
            ..Default::default()
        },
        detector: Default::default(),
    };
    let cluster = match SimCluster::start_with_spares(spec, spares, net, origin, &mut rng) {
        Ok(c) => c,
        Err(e) => return SimReport::failed(seed, format!("cannot start the cluster: {e}")),
    };
    let cfg_nodes = cfg.nodes;
    let run = Arc::new(Run {
        ops_left: AtomicU64::new(cfg.ops as u64),
        cfg,
        cluster: Mutex::new(cluster),
        trace,
        histories: Mutex::new(Histories::default()),
        origin,
        ops_done: AtomicU64::new(0),
        unique: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        request_timeout,
        base_links,
        spare: (spares > 0).then_some(cfg_nodes),
    });
    run.event(&format!("start seed={seed} nodes={}", run.cfg.nodes));
    if let Some(spare) = run.spare {
        run.event(&format!("spare n{} outside the layout", spare + 1));
    }

    // Unsynced disks are written back by the OS every `WRITEBACK`.
    if unsynced {
        let r = Arc::clone(&run);
        spawn(async move {
            while !r.stop.load(Ordering::SeqCst) {
                env::sleep(WRITEBACK).await;
                for m in r.cluster().machines() {
                    m.disk.flush();
                }
            }
        });
    }

    let nemesis = {
        let r = Arc::clone(&run);
        let nrng = rng.fork();
        spawn(nemesis_loop(r, nrng))
    };
    let mut clients = Vec::new();
    for c in 0..run.cfg.clients.max(1) {
        let r = Arc::clone(&run);
        let crng = rng.fork();
        clients.push(spawn(client_loop(r, c, crng)));
    }
    // The membership lane draws from its own generator, forked last so the others draw
    // as they did before it existed.
    let membership = run.spare.map(|spare| {
        let r = Arc::clone(&run);
        let mrng = rng.fork();
        spawn(membership_loop(r, spare, mrng))
    });
    for c in clients {
        let _ = c.await;
    }
    run.stop.store(true, Ordering::SeqCst);
    let _ = nemesis.await;
    if let Some(m) = membership {
        let _ = m.await;
    }

    // Heal: every fault undone, every machine up; the spare out of the layout and one live
    // layout version everywhere, so convergence and the final reads see a settled layout.
    heal_all(&run);
    run.event("heal");
    if let Some(spare) = run.spare {
        match settle_membership(&run, spare).await {
            Ok((version, d)) => run.event(&format!(
                "layout settled on v{version} after {} ms",
                d.as_millis()
            )),
            Err(e) => {
                run.event(&format!("layout did not settle: {e}"));
                run.error(e);
            }
        }
    }
    let converged_ms = converge(&run, &mut rng).await.map(|d| d.as_millis() as u64);
    match converged_ms {
        Some(ms) => run.event(&format!("converged after {ms} ms")),
        None => run.event("did not converge"),
    }
    final_reads(&run).await;

    let mut checks = judge(&run);
    checks.push(Check {
        name: "convergence".into(),
        passed: converged_ms.is_some(),
        judged: true,
        detail: match converged_ms {
            Some(ms) => format!("every replica of every key equal {ms} ms after the heal"),
            None => format!(
                "replicas still differ {} ms after the heal",
                run.cfg.converge_within.as_millis()
            ),
        },
    });
    for c in &checks {
        run.event(&format!("check {} passed={}", c.name, c.passed));
    }
    let errors = run.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut t = run.trace.lock().unwrap_or_else(|e| e.into_inner());
    SimReport {
        seed,
        trace_hash: t.hasher.digest(),
        events: t.count,
        trace: t.lines.take(),
        ops: run.ops_done.load(Ordering::SeqCst),
        sim_ms: env::now().saturating_duration_since(origin).as_millis() as u64,
        converged_ms,
        checks,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

async fn client_loop(run: Arc<Run>, client: usize, mut rng: Rng) {
    let mut state = ClientState::default();
    let clients = run.cfg.clients.max(1) as i64;
    let mut process = client as i64;
    loop {
        if run.fault_phase_over() {
            return;
        }
        // Take one operation from the run's budget.
        if run
            .ops_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return;
        }
        let w = run.cfg.workloads[rng.below(run.cfg.workloads.len() as u64) as usize];
        // Any machine coordinates, the spare too (a node outside the layout still does).
        let node = rng.below(run.machines() as u64) as usize;
        let unique = run.unique.fetch_add(1, Ordering::SeqCst);
        let mut choice = rng.next_u64();
        if w == Workload::Counter && run.cfg.faults.contains(&Fault::Unsynced) {
            // With `sync = false` a crash can leave an acknowledged increment on fewer
            // than W replicas until repair, so a quorum read may miss it: a stale read
            // that mode allows (docs/CONSISTENCY.md). Unsynced runs judge counters by
            // their final reads only, so their clients only increment.
            choice &= !(1 << 8);
        }
        let p = workload::plan(w, &state, unique, client, choice);
        let kind = run.operate(process, node, p, &mut state).await;
        run.ops_done.fetch_add(1, Ordering::SeqCst);
        if kind == OpType::Info {
            // An indeterminate operation ends this Jepsen process; continue as a new one.
            process += clients;
        }
        env::sleep(Duration::from_micros(rng.below(100_000))).await;
    }
}

async fn nemesis_loop(run: Arc<Run>, mut rng: Rng) {
    let events: Vec<Fault> = run
        .cfg
        .faults
        .iter()
        .copied()
        .filter(|f| nemesis::is_drawn(*f))
        .collect();
    if events.is_empty() {
        return;
    }
    // With unsynced disks, a crash soon after another machine's restart could take the
    // only other copy of a write before its writeback: data loss that `sync = false`
    // accepts by definition, not a bug. Crashes keep two writebacks apart.
    let unsynced = run.cfg.faults.contains(&Fault::Unsynced);
    let mut last_restart: Option<Instant> = None;
    loop {
        env::sleep(Duration::from_millis(20 + rng.below(480))).await;
        if run.fault_phase_over() {
            return;
        }
        // Faults hit every machine, the spare too.
        let n = run.machines();
        let (action, lasting) = nemesis::draw(&mut rng, &events, n, &run.base_links);
        if let (Action::Crash(_), true, Some(t)) = (&action, unsynced, last_restart) {
            if env::now().saturating_duration_since(t) < 2 * WRITEBACK {
                continue;
            }
        }
        run.event(&format!("nemesis {action}"));
        apply(&run, &action);
        env::sleep(lasting).await;
        undo(&run, &action);
        if matches!(action, Action::Crash(_)) {
            last_restart = Some(env::now());
        }
        run.event(&format!("nemesis healed {action}"));
    }
}

/// The membership fault's lane, concurrent with the one-at-a-time faults: after a pause,
/// the spare joins the layout, stays a while (often less than its transfer takes, so the
/// leave stacks on the join), and leaves. Each change is committed through a layout node
/// that is up; a commit that fails (no majority during a partition, a proposer that
/// crashed) is recorded and the lane goes on. One change at a time.
async fn membership_loop(run: Arc<Run>, spare: usize, mut rng: Rng) {
    loop {
        let d = nemesis::draw_membership(&mut rng);
        env::sleep(d.gap).await;
        if run.fault_phase_over() {
            return;
        }
        change_membership(&run, spare, true, d.join_via).await;
        env::sleep(d.lasting).await;
        change_membership(&run, spare, false, d.leave_via).await;
    }
}

/// Grow the layout by the spare (`join`) or shrink it back, committed through the up
/// layout node `via_draw` picks; the trace records the attempt and what came of it.
async fn change_membership(run: &Run, spare: usize, join: bool, via_draw: u64) {
    let kind = if join { "join" } else { "leave" };
    let via = {
        let c = run.cluster();
        let up: Vec<usize> = (0..run.cfg.nodes).filter(|&i| c.is_up(i)).collect();
        (!up.is_empty()).then(|| up[(via_draw % up.len() as u64) as usize])
    };
    let Some(via) = via else {
        run.event(&format!(
            "nemesis membership {kind} n{}: skipped, no layout node is up",
            spare + 1
        ));
        return;
    };
    commit_traced(run, "nemesis", spare, join, via).await;
}

/// Commit the spare's join or leave through layout node `via`, recording the attempt and
/// its outcome in the trace under `phase` (`nemesis` or `heal`).
async fn commit_traced(run: &Run, phase: &str, spare: usize, join: bool, via: usize) {
    let kind = if join { "join" } else { "leave" };
    let what = format!("{phase} membership {kind} n{} via n{}", spare + 1, via + 1);
    run.event(&what);
    let outcome = commit_change(run, spare, join, via).await;
    run.event(&format!("{what}: {outcome}"));
}

/// Stage the spare's join or leave on node `via` and commit it; what came of it.
async fn commit_change(run: &Run, spare: usize, join: bool, via: usize) -> String {
    let (node, member) = {
        let c = run.cluster();
        (c.node(via), c.member(spare))
    };
    let Some((node, _)) = node else {
        return "skipped: the node is down".into();
    };
    let view = node.membership().view();
    let current = view.history.current();
    if current.has(&member.name) == join {
        return format!(
            "skipped: {} is {} a member of v{} (as this node knows it)",
            member.name,
            if join { "already" } else { "not" },
            current.version
        );
    }
    let change = if join {
        Change::Join {
            name: member.name.clone(),
            addr: member.addr,
            zone: None,
        }
    } else {
        Change::Leave {
            name: member.name.clone(),
        }
    };
    // A commit that failed earlier leaves its change staged there; staging on top of it
    // would stack the same change twice. At most one change is pending at a time.
    for (what, req) in [
        (
            "dropping earlier staged changes",
            ClientRequest::ClusterAbort,
        ),
        ("staging", ClientRequest::ClusterStage(change)),
    ] {
        match run.call(via, req).await {
            Outcome::Answer(ClientResponse::Staged(_)) => {}
            other => return format!("{what} failed: {}", describe_outcome(other)),
        }
    }
    match run
        .call_within(via, ClientRequest::ClusterCommit, COMMIT_PATIENCE)
        .await
    {
        Outcome::Answer(ClientResponse::Committed(l)) => {
            format!("committed v{} [{}]", l.version, l.names().join(" "))
        }
        other => format!("commit failed: {}", describe_outcome(other)),
    }
}

fn describe_outcome(o: Outcome) -> String {
    match o {
        Outcome::Answer(ClientResponse::Error(e)) => format!("{:?}: {}", e.kind, e.message),
        Outcome::Answer(other) => format!("unexpected reply {other:?}"),
        Outcome::Refused => "the node is down".into(),
        Outcome::Lost => "no answer (it may still take effect)".into(),
    }
}

/// After the heal: commit the spare's leave while it is a member of the newest layout any
/// node holds, then wait until every node holds one live version, the same one. Bounded by
/// [`SETTLE_WITHIN`] of simulated time; returns the version and how long it took, or why
/// the layout did not settle.
async fn settle_membership(run: &Run, spare: usize) -> Result<(u64, Duration), String> {
    let start = env::now();
    let spare_name = name(spare);
    let mut last_commit: Option<Instant> = None;
    loop {
        // (machine, name, view) of every node up.
        let views: Vec<(usize, String, Arc<View>)> = {
            let c = run.cluster();
            (0..c.len())
                .filter_map(|i| {
                    c.node(i)
                        .map(|(n, _)| (i, n.name().to_string(), n.membership().view()))
                })
                .collect()
        };
        let newest = views.iter().map(|(_, _, v)| v.version()).max().unwrap_or(0);
        let spare_in = views
            .iter()
            .find(|(_, _, v)| v.version() == newest)
            .is_some_and(|(_, _, v)| v.history.current().has(&spare_name));
        let down = (0..run.machines()).find(|i| !views.iter().any(|(j, _, _)| j == i));
        let why = if let Some(i) = down {
            // The heal restarted every machine; one that did not come back is an error
            // recorded already, and its layout cannot be judged.
            format!("{} is down", name(i))
        } else if spare_in {
            // Through a layout node that holds the newest version (a stale one would only
            // learn that its staged change lost); one attempt a second.
            let retry = last_commit
                .is_none_or(|t| env::now().saturating_duration_since(t) >= Duration::from_secs(1));
            let via = views
                .iter()
                .find(|(i, _, v)| *i < run.cfg.nodes && v.version() == newest)
                .map(|(i, _, _)| *i);
            if let (true, Some(via)) = (retry, via) {
                commit_traced(run, "heal", spare, false, via).await;
                last_commit = Some(env::now());
            }
            format!("{spare_name} is still a member of v{newest}")
        } else if let Some(why) = unsettled(&views) {
            why
        } else {
            return Ok((newest, env::now().saturating_duration_since(start)));
        };
        if env::now().saturating_duration_since(start) >= SETTLE_WITHIN {
            return Err(format!(
                "the layout did not settle within {} s after the heal: {why}",
                SETTLE_WITHIN.as_secs()
            ));
        }
        env::sleep(Duration::from_millis(200)).await;
    }
}

/// Why the nodes' layouts differ or are in transition, if they do or are.
fn unsettled(views: &[(usize, String, Arc<View>)]) -> Option<String> {
    for (_, node, v) in views {
        if v.history.in_transition() {
            let live: Vec<String> = v
                .history
                .live
                .iter()
                .map(|l| format!("v{}", l.version))
                .collect();
            return Some(format!("{node} holds live versions {}", live.join(", ")));
        }
    }
    let (_, first, v0) = views.first()?;
    views
        .iter()
        .find(|(_, _, v)| v.version() != v0.version())
        .map(|(_, node, v)| {
            format!(
                "{node} holds layout v{}, {first} v{}",
                v.version(),
                v0.version()
            )
        })
}

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn apply(run: &Run, action: &Action) {
    let mut c = run.cluster();
    match action {
        Action::Partition { cuts, .. } => {
            for (a, b) in cuts {
                c.net.cut_one_way(&name(*a), &name(*b));
            }
        }
        Action::Crash(i) => {
            let lost = c.crash(*i);
            drop(c);
            run.event(&format!("n{} lost {lost} unsynced batch(es)", i + 1));
        }
        Action::ClockJump(i, ms) => c.machines()[*i].clock.jump(*ms),
        Action::ClockDrift(i, ppm) => c.machines()[*i].clock.set_drift(*ppm, env::now()),
        Action::Loss(l) => c.net.set_faults(l.clone()),
        Action::FsyncFailures(i, p) => c.machines()[*i].disk.set_fsync_failure(*p),
        Action::DiskFull(i) => c.machines()[*i].disk.set_full(true),
    }
}

fn undo(run: &Run, action: &Action) {
    let mut c = run.cluster();
    match action {
        Action::Partition { .. } => c.net.heal(),
        Action::Crash(i) => {
            if let Err(e) = c.restart(*i) {
                run.error(format!("n{} did not restart: {e}", i + 1));
            }
        }
        // A clock stays wrong: skew is the normal state of clocks; only its effects heal.
        Action::ClockJump(..) | Action::ClockDrift(..) => {}
        Action::Loss(_) => c.net.set_faults(run.base_links.clone()),
        Action::FsyncFailures(i, _) => c.machines()[*i].disk.set_fsync_failure(0.0),
        Action::DiskFull(i) => c.machines()[*i].disk.set_full(false),
    }
}

fn heal_all(run: &Run) {
    let mut c = run.cluster();
    c.net.heal();
    c.net.set_faults(run.base_links.clone());
    for i in 0..c.len() {
        c.machines()[i].disk.set_fsync_failure(0.0);
        c.machines()[i].disk.set_full(false);
        if let Err(e) = c.restart(i) {
            run.error(format!("n{} did not restart: {e}", i + 1));
        }
    }
}

/// Read every key at all replicas (read repair does the rest) until every replica of every
/// key holds the same object; the time it took, or `None` past the bound.
async fn converge(run: &Run, rng: &mut Rng) -> Option<Duration> {
    let start = env::now();
    let n = run.cfg.nodes;
    let mut round = 0usize;
    loop {
        if converged(run).await {
            return Some(env::now().saturating_duration_since(start));
        }
        if env::now().saturating_duration_since(start) >= run.cfg.converge_within {
            return None;
        }
        for w in run.cfg.workloads.clone() {
            let all = w.keyspace_def(n).n;
            for k in w.keys() {
                let node = (round + rng.below(n as u64) as usize) % n;
                let p = workload::read_op(w, &k, Function::Read, Some(all));
                let _ = run.call(node, p.request).await;
            }
        }
        round += 1;
        env::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether every replica of every key holds the same copy.
async fn converged(run: &Run) -> bool {
    let nodes: Vec<_> = {
        let c = run.cluster();
        (0..c.len()).filter_map(|i| c.node(i)).collect()
    };
    let Some((first, _)) = nodes.first() else {
        return false;
    };
    // The owners come from the first node's ring, which is every node's only when every
    // node holds one live layout version, the same one (the heal waits for that after
    // membership changes; without them every node stays on v1).
    let version = first.membership().view().read_layout_version();
    if nodes.iter().any(|(node, _)| {
        let v = node.membership().view();
        v.history.in_transition() || v.read_layout_version() != version
    }) {
        return false;
    }
    for w in &run.cfg.workloads {
        let n = w.keyspace_def(run.cfg.nodes).n as usize;
        for k in w.keys() {
            let key = crate::key::Key::simple(k.as_bytes().to_vec());
            let owners = first.ring().preference_list(&key.partition, n);
            let mut copies = Vec::new();
            for (node, _) in &nodes {
                if owners.iter().any(|o| o == node.name()) {
                    copies.push(
                        node.local_object(w.keyspace(), &key)
                            .await
                            .unwrap_or_default(),
                    );
                }
            }
            if copies.windows(2).any(|p| p[0] != p[1]) {
                return false;
            }
        }
    }
    true
}

/// One final read of every key, at all replicas, after convergence.
async fn final_reads(run: &Run) {
    let n = run.cfg.nodes;
    let mut state = ClientState::default();
    let process = 1_000_000;
    for (i, w) in run.cfg.workloads.clone().into_iter().enumerate() {
        // The register checker has no final reads: a plain read is its last word.
        let f = if w == Workload::Register {
            Function::Read
        } else {
            Function::FinalRead
        };
        for k in w.keys() {
            let all = w.keyspace_def(n).n;
            let p = workload::read_op(w, &k, f.clone(), Some(all));
            run.operate(process, i % n, p, &mut state).await;
        }
    }
}

/// Judge every workload's history.
fn judge(run: &Run) -> Vec<Check> {
    let h = run.histories.lock().unwrap_or_else(|e| e.into_inner());
    let mut checks: Vec<Check> = Vec::new();
    for ((w, key), rec) in h.iter() {
        let mut opts = CheckOptions::new(w.model());
        opts.threads = Some(1);
        opts.timeout = Some(Duration::from_secs(10));
        let (passed, mut detail) = match jepsen_like::check(rec.history(), &opts) {
            Ok(r) => (r.verdict == Verdict::Valid, summarize(&r)),
            Err(e) => (false, format!("checker error: {e}")),
        };
        if !key.is_empty() {
            detail = format!("{key}: {detail}");
        }
        // One check per workload: the set keys' verdicts are joined, failures first.
        match checks.iter_mut().find(|c| c.name == w.name()) {
            Some(c) => {
                if !passed && c.passed {
                    c.detail = detail;
                } else if !passed {
                    c.detail.push_str(&format!(" | {detail}"));
                }
                c.passed &= passed;
            }
            None => checks.push(Check {
                name: w.name().to_string(),
                passed,
                judged: w.judged(),
                detail,
            }),
        }
    }
    checks
}

fn summarize(r: &jepsen_like::CheckResult) -> String {
    let mut parts = vec![format!("{:?}", r.verdict).to_lowercase()];
    if let Some(m) = &r.message {
        parts.push(m.clone());
    }
    if let Some(s) = &r.siblings {
        for k in &s.keys {
            let show = |what: &str, f: &[jepsen_like::sibling_checker::SiblingFinding]| {
                (!f.is_empty()).then(|| {
                    let v: Vec<String> = f.iter().map(|x| x.value.to_string()).collect();
                    format!("key {} {what} {}", k.key, v.join(" "))
                })
            };
            parts.extend(show("lost", &k.lost));
            parts.extend(show("resurrected", &k.resurrected));
            parts.extend(show("unexpected", &k.unexpected));
            parts.extend(show("failed-but-present", &k.failed_but_present));
        }
    }
    if let Some(s) = &r.set {
        if !s.lost.is_empty() {
            let v: Vec<String> = s.lost.iter().map(|x| x.to_string()).collect();
            parts.push(format!("lost {}", v.join(" ")));
        }
        if !s.unexpected.is_empty() {
            parts.push(format!("unexpected {}", s.unexpected.len()));
        }
        parts.push(format!(
            "{} acknowledged, {} attempted",
            s.acknowledged_count, s.attempt_count
        ));
    }
    if let Some(c) = &r.counter {
        parts.push(format!(
            "final bounds {:?}, {} error(s)",
            c.final_bounds,
            c.errors.len()
        ));
        // The first out-of-bounds read, so a failing seed says which read to look for.
        if let Some(e) = c.errors.first() {
            parts.push(format!(
                "first: process {:?} read {} outside [{}, {}]",
                e.op.process, e.value, e.lower, e.upper
            ));
        }
    }
    if !r.failures.is_empty() {
        parts.push(format!("{} key(s) not linearizable", r.failures.len()));
    }
    let mut s = parts.join("; ");
    if s.len() > 600 {
        s.truncate(600);
        s.push('…');
    }
    s
}

/// The per-seed summary line of a swarm (and of `quorumkv sim --seed`).
pub fn describe(r: &SimReport) -> String {
    let failures: Vec<String> = r
        .failures()
        .iter()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let mut s = format!(
        "seed {} {} trace {:016x} ({} events, {} ops, {} ms simulated, converged {})",
        r.seed,
        if r.passed() { "ok" } else { "FAILED" },
        r.trace_hash,
        r.events,
        r.ops,
        r.sim_ms,
        r.converged_ms
            .map_or("never".to_string(), |ms| format!("in {ms} ms")),
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("\n  error: {e}"));
    }
    for f in failures {
        s.push_str(&format!("\n  check {f}"));
    }
    s
}

/// A map from check name to how many seeds failed it.
pub fn failure_counts(reports: &[SimReport]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in reports {
        for c in r.failures() {
            *m.entry(c.name.clone()).or_default() += 1;
        }
        if r.error.is_some() {
            *m.entry("error".to_string()).or_default() += 1;
        }
    }
    m
}
