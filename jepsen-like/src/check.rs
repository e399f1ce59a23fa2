//! The checker's front door: takes a parsed history and a model name,
//! routes to the right checker, and returns one serializable
//! [`CheckResult`].
//!
//! Register models go through the linearizability search ([`crate::wgl`]);
//! `multi-register` splits the history by independent key first and checks
//! every key on its own, in parallel (linearizability is compositional, so
//! the history is linearizable iff every key's subhistory is). Sets and
//! counters use Jepsen's dedicated checkers, sibling registers
//! [`crate::sibling_checker`].
//!
//! Scheduling of the keys, because a long invalid history must not take
//! minutes or the machine's memory:
//! - **Early verdict.** One non-linearizable key settles the file, so by
//!   default the first one found stops every other search (as Knossos and
//!   porcupine do); [`CheckOptions::all_failures`] judges every key.
//! - **Cheap keys first, in two passes.** Keys are ordered by an effort
//!   estimate (ops × peak concurrency). A triage pass gives every key a
//!   small step allowance, so an easy failure anywhere is found before any
//!   explosive key gets the machine; keys that need more are searched
//!   again in a second pass with their full share.
//! - **Shares.** Each concurrent search may use `(budget − heap already in
//!   use) / threads` bytes, and in the second pass each key gets an equal
//!   share of the time left, so one key running out is reported unknown
//!   while the rest are still judged.
//! - **A budget on real memory.** With [`crate::mem::CountingAllocator`]
//!   installed (the binary does), no cache grows while the process heap
//!   would pass the budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::counter_checker::{self, CounterReport};
use crate::history::{Function, History, HistoryError, Operation, Outcome, Process};
use crate::mem;
use crate::model::{ModelKind, RegisterModel, RegisterOp};
use crate::set_checker::{self, SetReport};
use crate::sibling_checker::{self, SiblingReport};
use crate::value::Value;
use crate::wgl::{self, Cancel, FxBuild, SearchOp, Stats};

/// Errors that stop a history from being checked at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    /// The history breaks Jepsen's process discipline.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// An operation the model has no meaning for.
    #[error("line {line}: model {model} does not support :f {f}")]
    UnsupportedFunction {
        /// Line of the invocation.
        line: usize,
        /// The model.
        model: ModelKind,
        /// The function.
        f: Function,
    },
    /// A value of the wrong shape for the model.
    #[error("line {line}: {message}")]
    BadValue {
        /// Line of the entry carrying the value.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// What to check and how long to try.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The model.
    pub model: ModelKind,
    /// Give up (verdict `unknown`) after this long.
    pub timeout: Option<Duration>,
    /// Worker threads for per-key checking; `None` = all cores.
    pub threads: Option<usize>,
    /// Memory budget in MiB for the whole check, shared by the worker
    /// threads; a search that would need more gives up (unknown). With
    /// [`crate::mem::CountingAllocator`] installed it bounds the process
    /// heap (history included); otherwise the search caches only.
    pub memory_limit_mb: usize,
    /// Judge every key and explain every failure, instead of stopping at
    /// the first non-linearizable key.
    pub all_failures: bool,
}

impl CheckOptions {
    /// Options for `model` with no timeout.
    pub fn new(model: ModelKind) -> CheckOptions {
        CheckOptions {
            model,
            timeout: None,
            threads: None,
            memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
            all_failures: false,
        }
    }
}

/// Default memory budget: a few GiB keeps hopeless searches from taking
/// the machine down while leaving real ones plenty of room.
pub const DEFAULT_MEMORY_LIMIT_MB: usize = 4096;

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The history satisfies the model.
    Valid,
    /// It does not.
    Invalid,
    /// Undecided (timeout, or a set that was never read).
    Unknown,
}

impl Verdict {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        }
    }
}

/// A short, printable description of one operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpSummary {
    /// Operation id (position among paired operations).
    pub id: usize,
    /// The process.
    pub process: Process,
    /// The function.
    pub f: Function,
    /// The operation's value (read result, or written value).
    pub value: Value,
    /// ok / fail / info.
    pub outcome: Outcome,
    /// History index of the invocation.
    pub invoke_index: usize,
    /// History index of the completion, if any.
    pub complete_index: Option<usize>,
    /// Source line of the invocation (0 if built in code).
    pub line: usize,
}

impl OpSummary {
    /// Summarizes `op` of `history`.
    pub fn new(op: &Operation, history: &History) -> OpSummary {
        OpSummary {
            id: op.id,
            process: op.process.clone(),
            f: op.f.clone(),
            value: op.value.clone(),
            outcome: op.outcome,
            invoke_index: op.invoke,
            complete_index: op.complete,
            line: history.ops.get(op.invoke).map_or(0, |o| o.line),
        }
    }
}

impl std::fmt::Display for OpSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let complete = self
            .complete_index
            .map_or("-".to_string(), |c| c.to_string());
        write!(
            f,
            "process {} {} {} ({}, history index {}..{}",
            self.process,
            self.f,
            self.value,
            match self.outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "fail",
                Outcome::Info => "info",
            },
            self.invoke_index,
            complete
        )?;
        if self.line > 0 {
            write!(f, ", line {}", self.line)?;
        }
        f.write_str(")")
    }
}

/// Where a register (sub)history stopped being linearizable.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyFailure {
    /// The independent key (multi-register only).
    pub key: Option<Value>,
    /// The operation that could not be linearized after the longest
    /// linearizable prefix found.
    pub op: OpSummary,
    /// Operations that were concurrent candidates at that point.
    pub pending: Vec<OpSummary>,
    /// The register value after the prefix.
    pub state: Value,
    /// Length of the longest linearizable prefix.
    pub prefix_len: usize,
    /// Operation ids of that prefix, in linearization order.
    pub prefix: Vec<usize>,
    /// The last few operations of the prefix, for people.
    pub prefix_tail: Vec<OpSummary>,
}

/// The result of checking one history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// The model checked against.
    pub model: ModelKind,
    /// The verdict.
    pub verdict: Verdict,
    /// Client operations (invocations) in the history.
    pub ops: usize,
    /// History entries, including the nemesis's.
    pub entries: usize,
    /// Independent keys (1 for single-object models).
    pub keys: usize,
    /// Wall-clock time spent checking, in milliseconds.
    pub elapsed_ms: f64,
    /// Why the verdict is unknown, if it is, or why some keys were left
    /// undecided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Non-linearizable keys (register models), in key order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<KeyFailure>,
    /// Keys left undecided: out of time, or out of their share of the time
    /// or memory budget (multi-register); with acknowledged writes but no
    /// ok final read (sibling-register).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_keys: Vec<Value>,
    /// Keys never judged because an earlier failure settled the verdict
    /// (early verdict; see [`CheckOptions::all_failures`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub keys_unchecked: usize,
    /// Process heap at the start and at its peak during the check, in
    /// bytes, when the counting allocator is installed (the peak is
    /// process-wide, so concurrent checks in one process share it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapUse>,
    /// Set checker details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<SetReport>,
    /// Counter checker details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<CounterReport>,
    /// Sibling-register checker details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siblings: Option<SiblingReport>,
    /// Search statistics summed over keys (register models).
    pub stats: Stats,
}

/// Heap figures of one check (see [`CheckResult::heap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HeapUse {
    /// Live heap bytes when the searches started (history included).
    pub start_bytes: usize,
    /// Highest live heap bytes during the check.
    pub peak_bytes: usize,
    /// The budget, in bytes.
    pub limit_bytes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl CheckResult {
    fn empty(model: ModelKind, history: &History, ops: usize) -> CheckResult {
        CheckResult {
            model,
            verdict: Verdict::Valid,
            ops,
            entries: history.ops.len(),
            keys: 1,
            elapsed_ms: 0.0,
            message: None,
            failures: Vec::new(),
            unknown_keys: Vec::new(),
            keys_unchecked: 0,
            heap: None,
            set: None,
            counter: None,
            siblings: None,
            stats: Stats::default(),
        }
    }
}

/// Checks `history` against `options.model`.
pub fn check(history: &History, options: &CheckOptions) -> Result<CheckResult, CheckError> {
    let start = Instant::now();
    // A timeout too large to represent is no timeout.
    let deadline = options.timeout.and_then(|t| start.checked_add(t));
    let cancel = Cancel::new(deadline);
    let ops = history.operations()?;
    let mut result = CheckResult::empty(options.model, history, ops.len());
    let mut undecided = Undecided::default();
    match options.model {
        ModelKind::Register | ModelKind::CasRegister | ModelKind::MultiRegister => {
            let mut subs: Vec<(Option<Value>, Prepared)> = Vec::new();
            if options.model == ModelKind::MultiRegister {
                let keys = split_by_key(&ops, history)?;
                result.keys = keys.len();
                // Preparing a million ops is a visible share of the check:
                // spread it over the workers too.
                let prepared: Vec<Mutex<Option<Result<Prepared, CheckError>>>> =
                    keys.iter().map(|_| Mutex::new(None)).collect();
                pool(keys.len(), worker_threads(options, keys.len()), |i| {
                    let sub = prepare_register(&keys[i].1, history, options.model, |v| match v {
                        Value::Vector(kv) if kv.len() == 2 => &kv[1],
                        other => other,
                    });
                    *prepared[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(sub);
                });
                subs.reserve(keys.len());
                // The first error in key order, as a sequential pass would.
                for ((key, _), slot) in keys.into_iter().zip(prepared) {
                    let sub = slot.into_inner().unwrap_or_else(|e| e.into_inner());
                    if let Some(sub) = sub {
                        subs.push((Some(key), sub?));
                    }
                }
            } else {
                let all: Vec<&Operation> = ops.iter().collect();
                subs.push((None, prepare_register(&all, history, options.model, |v| v)?));
            }
            let heap_start = mem::heap_bytes();
            mem::reset_peak();
            let outcomes = run_keys(&subs, &cancel, deadline, options, heap_start);
            if let (Some(start_bytes), Some(peak)) = (heap_start, mem::peak_heap_bytes()) {
                result.heap = Some(HeapUse {
                    start_bytes,
                    peak_bytes: peak.max(start_bytes),
                    limit_bytes: limit_bytes(options),
                });
            }
            for ((key, _), outcome) in subs.into_iter().zip(outcomes) {
                merge_key(&mut result, key, outcome, &ops, history, &mut undecided);
            }
        }
        ModelKind::Set => {
            let report = set_checker::check(&ops, history)?;
            result.verdict = report.verdict;
            result.message = report.message.clone();
            result.set = Some(report);
        }
        ModelKind::Counter => {
            let report = counter_checker::check(&ops, history)?;
            result.verdict = report.verdict;
            result.counter = Some(report);
        }
        ModelKind::SiblingRegister => {
            let report = sibling_checker::check(&ops, history)?;
            result.verdict = report.verdict;
            result.message = report.message.clone();
            result.keys = report.keys.len();
            result.unknown_keys = report
                .keys
                .iter()
                .filter(|k| k.verdict == Verdict::Unknown)
                .map(|k| k.key.clone())
                .collect();
            result.siblings = Some(report);
        }
    }
    // Undecided keys are worth explaining even when another key's failure
    // settles the verdict (`--all-failures`).
    let some_undecided = undecided.timeout + undecided.time_share + undecided.memory > 0;
    if result.message.is_none() && (result.verdict == Verdict::Unknown || some_undecided) {
        result.message = Some(undecided.message(result.unknown_keys.len()));
    }
    result.elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(result)
}

/// Why keys were left undecided, counted for the message.
#[derive(Debug, Default)]
struct Undecided {
    timeout: usize,
    time_share: usize,
    memory: usize,
}

impl Undecided {
    fn message(&self, keys: usize) -> String {
        let mut why = Vec::new();
        if self.timeout > 0 {
            why.push("timed out".to_string());
        }
        if self.time_share > 0 {
            why.push(format!(
                "{} ran out of their share of the time",
                self.time_share
            ));
        }
        if self.memory > 0 {
            why.push(format!(
                "{} ran out of their share of the memory limit",
                self.memory
            ));
        }
        let why = if why.is_empty() {
            "undecided".to_string()
        } else {
            why.join(", ")
        };
        if keys == 0 {
            // A single-object model: say it plainly.
            if self.memory > 0 {
                "search space exceeded the memory limit before a verdict was reached".into()
            } else {
                "timed out before a verdict was reached".into()
            }
        } else {
            format!("{keys} key(s) not decided before a verdict was reached: {why}")
        }
    }
}

/// One register (sub)history ready for the search.
#[derive(Debug)]
struct Prepared {
    ops: Vec<SearchOp<RegisterOp>>,
    /// Search op index -> operation id.
    ids: Vec<usize>,
    /// Interned id -> value (0 is nil).
    values: Vec<Value>,
}

enum KeyOutcome {
    Valid(Stats),
    Invalid(wgl::Stuck<Value>, Stats),
    Unknown(Reason, Stats),
    /// Not judged: an earlier failure settled the verdict.
    Unchecked(Stats),
}

/// Why a search stopped without a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// The overall deadline (or the early-verdict stop) fired.
    Cancelled,
    /// The key's share of the time ran out.
    TimeShare,
    /// The key's share of the memory (or the process budget) ran out.
    Memory,
    /// The triage pass's step allowance ran out: search again.
    Steps,
}

/// Turns paired operations into search ops: `fail` ops are dropped (they
/// did not happen), reads without a known value (info) are dropped (they
/// constrain nothing), info writes/cas keep an infinite return.
fn prepare_register<'a>(
    members: &[&'a Operation],
    history: &History,
    model: ModelKind,
    inner: impl Fn(&'a Value) -> &'a Value,
) -> Result<Prepared, CheckError> {
    let mut values = vec![Value::Nil];
    let mut intern_table: HashMap<Value, u32, FxBuild> = HashMap::default();
    // Register values are nearly always integers: a map keyed by the
    // integer itself skips hashing and comparing `Value`s.
    let mut int_table: HashMap<i64, u32, FxBuild> = HashMap::default();
    intern_table.insert(Value::Nil, 0);
    let mut intern = |v: &Value| -> u32 {
        let next = values.len() as u32;
        if let Value::Int(i) = v {
            let id = *int_table.entry(*i).or_insert(next);
            if id == next {
                values.push(v.clone());
            }
            return id;
        }
        if let Some(&id) = intern_table.get(v) {
            return id;
        }
        values.push(v.clone());
        intern_table.insert(v.clone(), next);
        next
    };
    let mut out = Vec::with_capacity(members.len());
    let mut ids = Vec::with_capacity(members.len());
    for op in members {
        if op.outcome == Outcome::Fail {
            continue;
        }
        // Only errors need the line; looking it up for every op would be a
        // cache miss per op on big histories.
        let line = || history.ops.get(op.invoke).map_or(0, |o| o.line);
        let v = inner(&op.value);
        let rop = match &op.f {
            Function::Read => {
                if op.outcome != Outcome::Ok {
                    continue;
                }
                RegisterOp::Read(intern(v))
            }
            Function::Write => RegisterOp::Write(intern(v)),
            Function::Cas if model != ModelKind::Register => match v {
                Value::Vector(pair) if pair.len() == 2 => {
                    RegisterOp::Cas(intern(&pair[0]), intern(&pair[1]))
                }
                other => {
                    return Err(CheckError::BadValue {
                        line: line(),
                        message: format!("cas value must be [old new], got {other}"),
                    })
                }
            },
            f => {
                return Err(CheckError::UnsupportedFunction {
                    line: line(),
                    model,
                    f: f.clone(),
                })
            }
        };
        out.push(SearchOp {
            op: rop,
            call: op.invoke as u64,
            ret: match op.outcome {
                Outcome::Ok => op.complete.map(|c| c as u64),
                _ => None,
            },
        });
        ids.push(op.id);
    }
    Ok(Prepared {
        ops: out,
        ids,
        values,
    })
}

/// Groups operations by independent key (`[key value]` tuples), keeping
/// keys in first-seen order.
fn split_by_key<'a>(
    ops: &'a [Operation],
    history: &History,
) -> Result<Vec<(Value, Vec<&'a Operation>)>, CheckError> {
    let mut index: HashMap<&Value, usize, FxBuild> = HashMap::default();
    let mut keys: Vec<(Value, Vec<&Operation>)> = Vec::new();
    for op in ops {
        // The invocation always names the key, even when the completion
        // (fail/info) carries something else.
        // `op.value` is the invocation's value except for ok reads (and
        // other completion-valued functions), so the history entry is only
        // looked up for those: on big histories each lookup is a cache miss.
        let from_completion = op.outcome == Outcome::Ok
            && !matches!(op.f, Function::Write | Function::Cas | Function::Add);
        let invoke_value = if from_completion {
            history
                .ops
                .get(op.invoke)
                .map(|o| &o.value)
                .unwrap_or(&op.value)
        } else {
            &op.value
        };
        let key = match (invoke_value, &op.value) {
            (Value::Vector(kv), _) if kv.len() == 2 => &kv[0],
            (_, Value::Vector(kv)) if kv.len() == 2 => &kv[0],
            (other, _) => {
                return Err(CheckError::BadValue {
                    line: history.ops.get(op.invoke).map_or(0, |o| o.line),
                    message: format!(
                        "multi-register values must be [key value] tuples, got {other}"
                    ),
                })
            }
        };
        if op.outcome == Outcome::Ok && op.f == Function::Read {
            if let Value::Vector(kv) = &op.value {
                if kv.len() != 2 || kv[0] != *key {
                    return Err(CheckError::BadValue {
                        line: op
                            .complete
                            .and_then(|c| history.ops.get(c))
                            .map_or(0, |o| o.line),
                        message: format!("read completion {} does not match key {key}", op.value),
                    });
                }
            } else {
                return Err(CheckError::BadValue {
                    line: op
                        .complete
                        .and_then(|c| history.ops.get(c))
                        .map_or(0, |o| o.line),
                    message: format!(
                        "multi-register values must be [key value] tuples, got {}",
                        op.value
                    ),
                });
            }
        }
        let slot = *index.entry(key).or_insert_with(|| {
            keys.push((key.clone(), Vec::new()));
            keys.len() - 1
        });
        keys[slot].1.push(op);
    }
    Ok(keys)
}

fn limit_bytes(options: &CheckOptions) -> usize {
    options.memory_limit_mb.saturating_mul(1 << 20)
}

/// Steps a key may take in the triage pass: a few milliseconds of search,
/// enough to settle the great majority of keys (valid or not), small
/// enough that a thousand hard keys cost seconds, not minutes, before the
/// second pass.
const TRIAGE_STEPS: u64 = 1 << 16;

/// Effort estimate used to order keys cheap first: operations times the
/// peak number of operations open at once (an indeterminate one stays open
/// to the end). Search cost grows with both.
fn effort(sub: &Prepared) -> u64 {
    let mut events: Vec<(u64, i64)> = Vec::with_capacity(sub.ops.len() * 2);
    for op in &sub.ops {
        events.push((op.call, 1));
        if let Some(r) = op.ret {
            events.push((r.max(op.call), -1));
        }
    }
    // Calls before returns at equal times: they overlap.
    events.sort_unstable_by_key(|&(t, d)| (t, -d));
    let (mut open, mut peak) = (0i64, 0i64);
    for (_, d) in events {
        open += d;
        peak = peak.max(open);
    }
    sub.ops.len() as u64 * (1 + peak as u64)
}

fn run_key(sub: &Prepared, cancel: &Cancel, limits: wgl::Limits) -> KeyOutcome {
    if cancel.is_cancelled() {
        return KeyOutcome::Unknown(Reason::Cancelled, Stats::default());
    }
    // Cheap pre-check: a read of a value that no write or cas could have
    // produced by the time the read returned can never be linearized.
    // Searching would only find that after exhausting every alternative.
    if let Some(bad) = impossible_read(sub) {
        // For the report, the longest prefix is a linearization of what
        // was invoked before the bad read.
        let before: Vec<usize> = (0..sub.ops.len())
            .filter(|&i| sub.ops[i].call < sub.ops[bad].call)
            .collect();
        let truncated: Vec<SearchOp<RegisterOp>> =
            before.iter().map(|&i| sub.ops[i].clone()).collect();
        let (outcome, stats) = wgl::check(&RegisterModel, &truncated, cancel, limits);
        let id = |i: usize| sub.ids.get(i).copied().unwrap_or(0);
        let value = |s: u32| sub.values.get(s as usize).cloned().unwrap_or(Value::Nil);
        let stuck = match outcome {
            // The prefix itself is broken: report that earlier failure.
            wgl::Outcome::NotLinearizable(stuck) => wgl::Stuck {
                prefix: stuck.prefix.iter().map(|&i| id(before[i])).collect(),
                op: id(before[stuck.op]),
                pending: stuck.pending.iter().map(|&i| id(before[i])).collect(),
                state: value(stuck.state),
            },
            wgl::Outcome::Linearizable(order) => {
                let mut state = 0u32;
                for &i in &order {
                    state = wgl_step(state, &truncated[i].op);
                }
                wgl::Stuck {
                    prefix: order.iter().map(|&i| id(before[i])).collect(),
                    op: id(bad),
                    pending: Vec::new(),
                    state: value(state),
                }
            }
            // The explanation's search ran out; the bad read alone proves
            // the verdict.
            _ => wgl::Stuck {
                prefix: Vec::new(),
                op: id(bad),
                pending: Vec::new(),
                state: Value::Nil,
            },
        };
        return KeyOutcome::Invalid(stuck, stats);
    }
    let (outcome, stats) = wgl::check(&RegisterModel, &sub.ops, cancel, limits);
    match outcome {
        wgl::Outcome::Linearizable(_) => KeyOutcome::Valid(stats),
        wgl::Outcome::NotLinearizable(stuck) => {
            // Map search indices back to operation ids and the interned
            // state back to its value.
            let id = |i: usize| sub.ids.get(i).copied().unwrap_or(0);
            let mapped = wgl::Stuck {
                prefix: stuck.prefix.iter().map(|&i| id(i)).collect(),
                op: id(stuck.op),
                pending: stuck.pending.iter().map(|&i| id(i)).collect(),
                state: sub
                    .values
                    .get(stuck.state as usize)
                    .cloned()
                    .unwrap_or(Value::Nil),
            };
            KeyOutcome::Invalid(mapped, stats)
        }
        wgl::Outcome::Cancelled => KeyOutcome::Unknown(Reason::Cancelled, stats),
        wgl::Outcome::TooLarge => KeyOutcome::Unknown(Reason::Memory, stats),
        wgl::Outcome::OutOfSteps => KeyOutcome::Unknown(Reason::Steps, stats),
        wgl::Outcome::OutOfTime => KeyOutcome::Unknown(Reason::TimeShare, stats),
    }
}

fn wgl_step(state: u32, op: &RegisterOp) -> u32 {
    use crate::model::Model;
    RegisterModel.step(&state, op).unwrap_or(state)
}

/// The first (by invocation) read whose value nothing could have written
/// before the read returned; `nil` (the initial value) is always possible.
fn impossible_read(sub: &Prepared) -> Option<usize> {
    // Earliest invocation of an op that can set each value.
    let mut first_set: HashMap<u32, u64> = HashMap::new();
    for op in &sub.ops {
        let to = match op.op {
            RegisterOp::Write(v) | RegisterOp::Cas(_, v) => v,
            RegisterOp::Read(_) => continue,
        };
        let e = first_set.entry(to).or_insert(op.call);
        *e = (*e).min(op.call);
    }
    let mut bad: Option<usize> = None;
    for (i, op) in sub.ops.iter().enumerate() {
        if let (RegisterOp::Read(v), Some(ret)) = (op.op, op.ret) {
            let possible = v == 0 || first_set.get(&v).is_some_and(|&c| c < ret);
            if !possible && bad.is_none_or(|b| op.call < sub.ops[b].call) {
                bad = Some(i);
            }
        }
    }
    bad
}

fn worker_threads(options: &CheckOptions, items: usize) -> usize {
    options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, items.max(1))
}

/// Runs `work` over `0..n` on `threads` scoped workers pulling from a
/// shared counter, so one slow item does not hold up the rest.
fn pool(n: usize, threads: usize, work: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        work(i);
    };
    if threads <= 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(worker);
            }
        });
    }
}

/// Checks every key (see the module docs for the scheduling): a triage
/// pass in cheap-first order with a small step allowance, then the keys it
/// could not settle with their full share of memory and of the time left.
/// Results are in key order.
fn run_keys(
    subs: &[(Option<Value>, Prepared)],
    cancel: &Cancel,
    deadline: Option<Instant>,
    options: &CheckOptions,
    heap_start: Option<usize>,
) -> Vec<KeyOutcome> {
    let threads = worker_threads(options, subs.len());
    let limit = limit_bytes(options);
    // What the history and the prepared keys already hold is not
    // available to the caches.
    let share = limit.saturating_sub(heap_start.unwrap_or(0)) / threads;
    let heap_limit = heap_start.map(|_| limit);
    let mut order: Vec<usize> = (0..subs.len()).collect();
    let efforts: Vec<u64> = subs.iter().map(|(_, sub)| effort(sub)).collect();
    order.sort_by_key(|&i| (efforts[i], i));

    let slots: Vec<Mutex<Option<KeyOutcome>>> = subs.iter().map(|_| Mutex::new(None)).collect();
    let stop = AtomicBool::new(false);
    let store = |i: usize, outcome: KeyOutcome| {
        if matches!(outcome, KeyOutcome::Invalid(..)) && !options.all_failures {
            // The verdict is known: stop every other search now.
            stop.store(true, Ordering::Relaxed);
            cancel.cancel();
        }
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    };
    let take = |i: usize| {
        slots[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(KeyOutcome::Unchecked(Stats::default()))
    };

    // Triage only pays when keys compete for the workers.
    let triage = subs.len() > threads;
    let mut second: Vec<usize> = order.clone();
    let mut carried: Vec<Stats> = vec![Stats::default(); subs.len()];
    if triage {
        let limits = wgl::Limits {
            max_bytes: share,
            heap_limit,
            max_steps: Some(TRIAGE_STEPS),
            deadline: None,
        };
        pool(order.len(), threads, |k| {
            let i = order[k];
            store(i, run_key(&subs[i].1, cancel, limits));
        });
        second.clear();
        for &i in &order {
            let mut slot = slots[i].lock().unwrap_or_else(|e| e.into_inner());
            if let Some(KeyOutcome::Unknown(Reason::Steps, stats)) = &*slot {
                carried[i] = *stats;
                *slot = None;
                second.push(i);
            }
        }
    }

    let remaining = AtomicUsize::new(second.len());
    pool(second.len(), threads, |k| {
        let i = second[k];
        // An equal share of the time left among the keys not yet started,
        // `threads` of which run at once.
        let left = remaining.fetch_sub(1, Ordering::Relaxed).max(1);
        let key_deadline = deadline.map(|d| {
            let now = Instant::now();
            let rest = d.saturating_duration_since(now);
            let part = rest.mul_f64((threads as f64 / left as f64).min(1.0));
            now + part
        });
        let limits = wgl::Limits {
            max_bytes: share,
            heap_limit,
            max_steps: None,
            deadline: key_deadline,
        };
        store(i, run_key(&subs[i].1, cancel, limits));
    });

    let stopped = stop.load(Ordering::Relaxed);
    (0..subs.len())
        .map(|i| {
            let outcome = match take(i) {
                // Searches interrupted by the early verdict, and keys never
                // reached, were not judged.
                KeyOutcome::Unknown(Reason::Cancelled, s) if stopped => KeyOutcome::Unchecked(s),
                other => other,
            };
            add_carried(outcome, carried[i])
        })
        .collect()
}

fn add_carried(outcome: KeyOutcome, extra: Stats) -> KeyOutcome {
    let add = |mut s: Stats| {
        add_stats(&mut s, extra);
        s
    };
    match outcome {
        KeyOutcome::Valid(s) => KeyOutcome::Valid(add(s)),
        KeyOutcome::Invalid(st, s) => KeyOutcome::Invalid(st, add(s)),
        KeyOutcome::Unknown(r, s) => KeyOutcome::Unknown(r, add(s)),
        KeyOutcome::Unchecked(s) => KeyOutcome::Unchecked(add(s)),
    }
}

fn add_stats(total: &mut Stats, s: Stats) {
    total.steps += s.steps;
    total.cached += s.cached;
    total.backtracks += s.backtracks;
}

/// How many prefix operations to spell out in a failure.
const PREFIX_TAIL: usize = 8;

fn merge_key(
    result: &mut CheckResult,
    key: Option<Value>,
    outcome: KeyOutcome,
    ops: &[Operation],
    history: &History,
    undecided: &mut Undecided,
) {
    match outcome {
        KeyOutcome::Valid(stats) => add_stats(&mut result.stats, stats),
        KeyOutcome::Unchecked(stats) => {
            add_stats(&mut result.stats, stats);
            result.keys_unchecked += 1;
        }
        KeyOutcome::Unknown(reason, stats) => {
            add_stats(&mut result.stats, stats);
            match reason {
                Reason::Memory => undecided.memory += 1,
                Reason::TimeShare => undecided.time_share += 1,
                Reason::Cancelled | Reason::Steps => undecided.timeout += 1,
            }
            if result.verdict == Verdict::Valid {
                result.verdict = Verdict::Unknown;
            }
            if let Some(k) = key {
                result.unknown_keys.push(k);
            }
        }
        KeyOutcome::Invalid(stuck, stats) => {
            add_stats(&mut result.stats, stats);
            result.verdict = Verdict::Invalid;
            let summary = |id: usize| OpSummary::new(&ops[id], history);
            let prefix_tail = stuck
                .prefix
                .iter()
                .skip(stuck.prefix.len().saturating_sub(PREFIX_TAIL))
                .map(|&id| summary(id))
                .collect();
            result.failures.push(KeyFailure {
                key,
                op: summary(stuck.op),
                pending: stuck.pending.iter().map(|&id| summary(id)).collect(),
                state: stuck.state,
                prefix_len: stuck.prefix.len(),
                prefix: stuck.prefix,
                prefix_tail,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{easy_key, hard_key};

    fn history(keys: &[Vec<crate::history::Op>]) -> History {
        History::new(keys.iter().flatten().cloned().collect())
    }

    fn options(threads: usize, all_failures: bool) -> CheckOptions {
        CheckOptions {
            threads: Some(threads),
            all_failures,
            ..CheckOptions::new(ModelKind::MultiRegister)
        }
    }

    fn failing_keys(r: &CheckResult) -> Vec<Value> {
        r.failures.iter().filter_map(|f| f.key.clone()).collect()
    }

    /// Goal: once one key is proven non-linearizable the check stops and
    /// reports it (early verdict), counting the keys it never judged;
    /// `all_failures` judges every key and explains every failure, and the
    /// early report's explanation is the same as the full one's.
    #[test]
    fn early_verdict_and_all_failures() {
        let keys: Vec<_> = (0..20)
            .map(|k| easy_key(k, 20, k == 5 || k == 15, k))
            .collect();
        let h = history(&keys);
        let early = check(&h, &options(1, false)).expect("check");
        assert_eq!(early.verdict, Verdict::Invalid);
        assert_eq!(early.failures.len(), 1, "{:?}", failing_keys(&early));
        assert!(early.keys_unchecked > 0, "nothing left unchecked");
        let all = check(&h, &options(2, true)).expect("check");
        assert_eq!(all.verdict, Verdict::Invalid);
        assert_eq!(all.keys_unchecked, 0);
        assert_eq!(failing_keys(&all), vec![Value::Int(5), Value::Int(15)]);
        let first = &early.failures[0];
        let same = all
            .failures
            .iter()
            .find(|f| f.key == first.key)
            .expect("early failure is a real failure");
        assert_eq!(same.op, first.op);
        assert_eq!(same.prefix, first.prefix);
    }

    /// Goal: one explosive key cannot hide an easy failure in another, even
    /// when the easy key looks more expensive (more ops) and so comes later
    /// in cheap-first order: the triage pass gives every key a small step
    /// allowance first, so the failure is found after a bounded number of
    /// steps, long before the explosive key's memory share would run out.
    #[test]
    fn explosive_key_does_not_hide_easy_failure() {
        let h = history(&[hard_key(0, 24, 0), easy_key(1, 1500, true, 100)]);
        let r = check(&h, &options(1, false)).expect("check");
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(failing_keys(&r), vec![Value::Int(1)]);
        assert!(
            r.stats.steps < TRIAGE_STEPS + 20_000,
            "{} steps: the explosive key was searched beyond triage",
            r.stats.steps
        );
        assert_eq!(r.keys_unchecked, 1);
    }

    /// Goal: with `all_failures`, a key that runs out of its share of the
    /// memory budget is reported unknown (with the reason), while the
    /// other keys are still judged.
    #[test]
    fn key_out_of_memory_share_is_unknown_rest_judged() {
        let h = history(&[
            hard_key(0, 24, 0),
            easy_key(1, 10, true, 100),
            easy_key(2, 10, false, 101),
        ]);
        let r = check(
            &h,
            &CheckOptions {
                memory_limit_mb: 4,
                ..options(1, true)
            },
        )
        .expect("check");
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(failing_keys(&r), vec![Value::Int(1)]);
        assert_eq!(r.unknown_keys, vec![Value::Int(0)]);
        let message = r.message.unwrap_or_default();
        assert!(message.contains("memory"), "{message}");
    }

    /// Goal: with `all_failures` and a timeout, an explosive key gets only
    /// its share of the time: it ends unknown, the other keys (after it in
    /// key order) are still judged, and the check ends near the timeout.
    #[test]
    fn key_out_of_time_share_is_unknown_rest_judged() {
        let h = history(&[
            hard_key(0, 30, 0),
            easy_key(1, 10, true, 100),
            easy_key(2, 10, false, 101),
        ]);
        let r = check(
            &h,
            &CheckOptions {
                timeout: Some(Duration::from_millis(500)),
                memory_limit_mb: 1 << 16,
                ..options(1, true)
            },
        )
        .expect("check");
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(failing_keys(&r), vec![Value::Int(1)]);
        assert_eq!(r.unknown_keys, vec![Value::Int(0)]);
        assert!(r.elapsed_ms < 5_000.0, "took {} ms", r.elapsed_ms);
        let message = r.message.unwrap_or_default();
        assert!(message.contains("time"), "{message}");
    }

    /// Goal: keys are ordered by the effort estimate, which grows with
    /// both size and concurrency.
    #[test]
    fn effort_grows_with_ops_and_concurrency() {
        let prep = |ops: Vec<crate::history::Op>| {
            let h = History::new(ops);
            let ops = h.operations().expect("ops");
            let refs: Vec<&Operation> = ops.iter().collect();
            let p = prepare_register(&refs, &h, ModelKind::MultiRegister, |v| match v {
                Value::Vector(kv) if kv.len() == 2 => &kv[1],
                other => other,
            })
            .expect("prepare");
            effort(&p)
        };
        let small = prep(easy_key(0, 10, false, 0));
        let big = prep(easy_key(0, 100, false, 0));
        let wide = prep(hard_key(0, 5, 0));
        let wider = prep(hard_key(0, 10, 0));
        assert!(small < big, "{small} {big}");
        assert!(wide < wider, "{wide} {wider}");
    }
}
