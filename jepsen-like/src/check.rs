//! The checker's front door: takes a parsed history and a model name,
//! routes to the right checker, and returns one serializable
//! [`CheckResult`].
//!
//! Register models go through the linearizability search ([`crate::wgl`]);
//! `multi-register` splits the history by independent key first and checks
//! every key on its own, in parallel (linearizability is compositional, so
//! the history is linearizable iff every key's subhistory is). Sets and
//! counters use Jepsen's dedicated checkers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::counter_checker::{self, CounterReport};
use crate::history::{Function, History, HistoryError, Operation, Outcome, Process};
use crate::model::{ModelKind, RegisterModel, RegisterOp};
use crate::set_checker::{self, SetReport};
use crate::value::Value;
use crate::wgl::{self, Cancel, SearchOp, Stats};

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
    /// Memory budget for the searches' caches, in MiB, shared by the
    /// worker threads; a search that would need more gives up (unknown).
    pub memory_limit_mb: usize,
}

impl CheckOptions {
    /// Options for `model` with no timeout.
    pub fn new(model: ModelKind) -> CheckOptions {
        CheckOptions {
            model,
            timeout: None,
            threads: None,
            memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
        }
    }
}

/// Default cache budget: a few GiB keeps hopeless searches from taking
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
    /// Why the verdict is unknown, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Non-linearizable keys (register models), in key order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<KeyFailure>,
    /// Keys whose search timed out (multi-register).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_keys: Vec<Value>,
    /// Set checker details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<SetReport>,
    /// Counter checker details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<CounterReport>,
    /// Search statistics summed over keys (register models).
    pub stats: Stats,
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
            set: None,
            counter: None,
            stats: Stats::default(),
        }
    }
}

/// Checks `history` against `options.model`.
pub fn check(history: &History, options: &CheckOptions) -> Result<CheckResult, CheckError> {
    let start = Instant::now();
    // A timeout too large to represent is no timeout.
    let cancel = Cancel::new(options.timeout.and_then(|t| start.checked_add(t)));
    let ops = history.operations()?;
    let mut result = CheckResult::empty(options.model, history, ops.len());
    match options.model {
        ModelKind::Register | ModelKind::CasRegister => {
            let all: Vec<&Operation> = ops.iter().collect();
            let sub = prepare_register(&all, history, options.model, |v| v)?;
            let budget = budget_per_search(options, 1);
            merge_key(
                &mut result,
                None,
                run_key(&sub, &cancel, budget),
                &ops,
                history,
            );
        }
        ModelKind::MultiRegister => {
            let keys = split_by_key(&ops, history)?;
            result.keys = keys.len();
            let mut subs = Vec::with_capacity(keys.len());
            for (key, members) in &keys {
                let sub = prepare_register(members, history, options.model, |v| match v {
                    Value::Vector(kv) if kv.len() == 2 => &kv[1],
                    other => other,
                })?;
                subs.push((key.clone(), sub));
            }
            let outcomes = run_parallel(&subs, &cancel, options);
            for ((key, _), outcome) in subs.iter().zip(outcomes) {
                merge_key(&mut result, Some(key.clone()), outcome, &ops, history);
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
    }
    if result.verdict == Verdict::Unknown && result.message.is_none() {
        result.message = Some(if cancel.is_cancelled() {
            "timed out before a verdict was reached".into()
        } else {
            "search space exceeded the memory limit before a verdict was reached".into()
        });
    }
    result.elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(result)
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
    Unknown(Stats),
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
    let mut intern_table: HashMap<Value, u32> = HashMap::new();
    intern_table.insert(Value::Nil, 0);
    let mut intern = |v: &Value| -> u32 {
        if let Some(&id) = intern_table.get(v) {
            return id;
        }
        let id = values.len() as u32;
        values.push(v.clone());
        intern_table.insert(v.clone(), id);
        id
    };
    let mut out = Vec::with_capacity(members.len());
    let mut ids = Vec::with_capacity(members.len());
    for op in members {
        if op.outcome == Outcome::Fail {
            continue;
        }
        let line = history.ops.get(op.invoke).map_or(0, |o| o.line);
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
                        line,
                        message: format!("cas value must be [old new], got {other}"),
                    })
                }
            },
            f => {
                return Err(CheckError::UnsupportedFunction {
                    line,
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
    let mut index: HashMap<&Value, usize> = HashMap::new();
    let mut keys: Vec<(Value, Vec<&Operation>)> = Vec::new();
    for op in ops {
        // The invocation always names the key, even when the completion
        // (fail/info) carries something else.
        let invoke_value = history
            .ops
            .get(op.invoke)
            .map(|o| &o.value)
            .unwrap_or(&op.value);
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

/// Each concurrent search's share of the memory budget.
fn budget_per_search(options: &CheckOptions, threads: usize) -> usize {
    options.memory_limit_mb.saturating_mul(1 << 20) / threads.max(1)
}

fn run_key(sub: &Prepared, cancel: &Cancel, budget_bytes: usize) -> KeyOutcome {
    if cancel.is_cancelled() {
        return KeyOutcome::Unknown(Stats::default());
    }
    let limits = wgl::Limits {
        max_bytes: budget_bytes.max(1 << 20),
    };
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
            wgl::Outcome::Cancelled | wgl::Outcome::TooLarge => wgl::Stuck {
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
        wgl::Outcome::Cancelled | wgl::Outcome::TooLarge => KeyOutcome::Unknown(stats),
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

/// Checks keys on a pool of scoped threads pulling from a shared counter,
/// so one slow key does not hold up the rest. Results are in key order.
fn run_parallel(
    subs: &[(Value, Prepared)],
    cancel: &Cancel,
    options: &CheckOptions,
) -> Vec<KeyOutcome> {
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, subs.len().max(1));
    let budget = budget_per_search(options, threads);
    let slots: Vec<Mutex<Option<KeyOutcome>>> = subs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    if threads == 1 {
        for (i, (_, sub)) in subs.iter().enumerate() {
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) =
                Some(run_key(sub, cancel, budget));
        }
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, sub)) = subs.get(i) else { break };
                    let outcome = run_key(sub, cancel, budget);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                });
            }
        });
    }
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(KeyOutcome::Unknown(Stats::default()))
        })
        .collect()
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
) {
    match outcome {
        KeyOutcome::Valid(stats) => add_stats(&mut result.stats, stats),
        KeyOutcome::Unknown(stats) => {
            add_stats(&mut result.stats, stats);
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
