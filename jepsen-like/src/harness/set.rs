//! The `set` workload, Jepsen's set-full: clients `add` unique integers to
//! one set (key "set") and `read` all of it; a `:final-read` after healing
//! decides what survived.
//!
//! The existing set checker ([`crate::set_checker`]) finds lost,
//! unexpected, recovered and stale elements; on top, this module reports
//! `never-read` elements (acknowledged adds that no read observed and no
//! successful read began after the add was invoked, so nothing is known
//! about them) and the *stable latency* of every surviving acknowledged
//! element: the time from the add's acknowledgement until the completion
//! of the last read, begun after the acknowledgement, that missed it
//! (0 when no such read missed it). Valid iff nothing is lost or
//! unexpected; staleness and latency are measured, not judged.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::check::{check, CheckError, CheckOptions, Verdict};
use crate::gen::Rng;
use crate::harness::op::{Completion, Invocation};
use crate::harness::workload::{Next, Percentiles, Workload, WorkloadResult};
use crate::harness::HarnessError;
use crate::history::{Function, History, Outcome};
use crate::model::ModelKind;
use crate::set_checker::SetReport;
use crate::value::Value;

/// Set workload settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SetConfig {
    /// Share of operations that are reads (the rest are adds), in [0, 1).
    pub read_fraction: f64,
}

impl Default for SetConfig {
    fn default() -> SetConfig {
        SetConfig { read_fraction: 0.2 }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct SetWorkload {
    config: SetConfig,
    next_element: i64,
}

impl SetWorkload {
    /// A workload with `config`; errors unless `read_fraction` is in [0, 1).
    pub fn new(config: SetConfig) -> Result<SetWorkload, HarnessError> {
        if !(0.0..1.0).contains(&config.read_fraction) {
            return Err(HarnessError::Config(format!(
                "set read fraction must be in [0, 1), got {}",
                config.read_fraction
            )));
        }
        Ok(SetWorkload {
            config,
            next_element: 0,
        })
    }
}

/// What set-full adds to the set checker's report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SetFullReport {
    /// Acknowledged, never observed, and no ok read began after the add
    /// was invoked.
    pub never_read: Vec<Value>,
    /// Stable latency of the surviving acknowledged elements, in ms.
    pub stable_latency_ms: Percentiles,
}

/// Times (ns) of an entry, 0 when the history has none.
fn time_of(history: &History, index: usize) -> i64 {
    history.ops.get(index).and_then(|o| o.time).unwrap_or(0)
}

/// Never-read elements and stable latencies (see the module docs);
/// `lost` elements get no latency (they never became stable).
pub fn set_full(history: &History, lost: &[Value]) -> Result<SetFullReport, CheckError> {
    let ops = history.operations()?;
    // element -> (add invoke index, ack index) of its earliest ack.
    let mut acked: HashMap<&Value, (usize, usize)> = HashMap::new();
    // ok reads: invoke index, completion index, elements.
    let mut reads: Vec<(usize, usize, HashSet<&Value>)> = Vec::new();
    for op in &ops {
        match (&op.f, op.outcome, op.complete) {
            (Function::Add, Outcome::Ok, Some(c)) => {
                let e = acked.entry(&op.value).or_insert((op.invoke, c));
                if c < e.1 {
                    *e = (op.invoke, c);
                }
            }
            (Function::Read | Function::FinalRead, Outcome::Ok, Some(c)) => {
                let seen = match &op.value {
                    Value::Vector(v) | Value::Set(v) => v.iter().collect(),
                    _ => HashSet::new(),
                };
                reads.push((op.invoke, c, seen));
            }
            _ => {}
        }
    }
    let lost: HashSet<&Value> = lost.iter().collect();
    let mut never_read = Vec::new();
    let mut latencies = Vec::new();
    for (&el, &(invoked, ack)) in &acked {
        let seen = reads.iter().any(|r| r.2.contains(el));
        let later_read = reads.iter().any(|r| r.0 > invoked);
        if !seen && !later_read {
            never_read.push(el.clone());
            continue;
        }
        if lost.contains(el) || !reads.iter().any(|r| r.0 > ack) {
            continue;
        }
        let last_miss = reads
            .iter()
            .filter(|r| r.0 > ack && !r.2.contains(el))
            .map(|r| time_of(history, r.1))
            .max();
        let ack_ns = time_of(history, ack);
        let ns = last_miss.map_or(0, |t| (t - ack_ns).max(0));
        latencies.push(ns as f64 / 1e6);
    }
    never_read.sort_by(Value::report_cmp);
    Ok(SetFullReport {
        never_read,
        stable_latency_ms: Percentiles::of(&latencies),
    })
}

fn list(values: &[Value]) -> String {
    let mut s: Vec<String> = values.iter().take(10).map(|v| v.to_string()).collect();
    if values.len() > 10 {
        s.push(format!("... ({} more)", values.len() - 10));
    }
    s.join(" ")
}

impl Workload for SetWorkload {
    fn name(&self) -> &str {
        "set"
    }

    fn next(&mut self, _worker: usize, _now: Duration, rng: &mut Rng) -> Next {
        if rng.chance(self.config.read_fraction) {
            return Next::Op(Function::Read, Value::Nil);
        }
        self.next_element += 1;
        Next::Op(Function::Add, Value::Int(self.next_element))
    }

    fn completed(&mut self, _inv: &Invocation, _c: &Completion, _now: Duration) {}

    fn final_reads(&self) -> Vec<Value> {
        vec![Value::Nil]
    }

    fn keys(&self) -> Vec<String> {
        vec!["set".into()]
    }

    fn check(&self, history: &History) -> WorkloadResult {
        let result = match check(history, &CheckOptions::new(ModelKind::Set)) {
            Ok(r) => r,
            Err(e) => return WorkloadResult::error(self.name(), &e.to_string()),
        };
        let Some(set) = result.set.clone() else {
            return WorkloadResult::error(self.name(), "the set checker gave no report");
        };
        let full = match set_full(history, &set.lost) {
            Ok(f) => f,
            Err(e) => return WorkloadResult::error(self.name(), &e.to_string()),
        };
        let summary = summary(&set, &full);
        let details = serde_json::json!({ "set": set, "set_full": full });
        WorkloadResult {
            verdict: result.verdict,
            summary,
            details,
            check: Some(result),
        }
    }
}

fn summary(set: &SetReport, full: &SetFullReport) -> Vec<String> {
    let mut out = vec![format!(
        "set: {} ({} attempted, {} acknowledged, {} lost, {} unexpected, {} stale, {} never read, {} recovered)",
        set.verdict.name(),
        set.attempt_count,
        set.acknowledged_count,
        set.lost.len(),
        set.unexpected.len(),
        set.stale.len(),
        full.never_read.len(),
        set.recovered.len()
    )];
    if let Some(m) = &set.message {
        out.push(format!("  {m}"));
    }
    for (name, v) in [
        ("lost", &set.lost),
        ("unexpected", &set.unexpected),
        ("stale", &set.stale),
        ("never read", &full.never_read),
    ] {
        if !v.is_empty() {
            out.push(format!("  {name}: {}", list(v)));
        }
    }
    out.push(format!(
        "  stable latency ({} elements): {}",
        full.stable_latency_ms.count,
        full.stable_latency_ms.line("ms")
    ));
    if set.verdict == Verdict::Unknown && set.final_read.is_none() {
        out.push("  no ok read: the final read never succeeded".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;

    /// Goal: stable latency runs from the ack to the completion of the
    /// last later-begun read that missed the element; an element no read
    /// began after is never-read; a lost one gets no latency.
    #[test]
    fn never_read_and_stable_latency() {
        let h = edn::parse_history(
            "{:process 0 :type :invoke :f :add :value 1 :time 0}\n\
             {:process 0 :type :ok :f :add :value 1 :time 1000000}\n\
             {:process 1 :type :invoke :f :read :value nil :time 2000000}\n\
             {:process 1 :type :ok :f :read :value [] :time 5000000}\n\
             {:process 1 :type :invoke :f :read :value nil :time 6000000}\n\
             {:process 1 :type :ok :f :read :value [1] :time 7000000}\n\
             {:process 0 :type :invoke :f :add :value 2 :time 8000000}\n\
             {:process 0 :type :ok :f :add :value 2 :time 9000000}\n",
        )
        .expect("parse");
        let r = set_full(&h, &[]).expect("set-full");
        assert_eq!(r.never_read, vec![Value::Int(2)]);
        assert_eq!(r.stable_latency_ms.count, 1);
        assert_eq!(r.stable_latency_ms.max, Some(4.0));
        let lost = set_full(&h, &[Value::Int(1)]).expect("set-full");
        assert_eq!(lost.stable_latency_ms.count, 0);
    }
}
