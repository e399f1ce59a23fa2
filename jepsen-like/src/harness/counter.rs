//! The `counter` workload: clients `add` small positive integers to one
//! counter (key "counter") and `read` it; a `:final-read` after healing
//! must lie within [sum of acknowledged adds, that plus every
//! indeterminate add]. Judged by the existing counter checker
//! ([`crate::counter_checker`]), which bounds every read the same way at
//! the moment it ran.

use std::time::Duration;

use crate::check::{check, CheckOptions};
use crate::gen::Rng;
use crate::harness::op::{Completion, Invocation};
use crate::harness::workload::{Next, Workload, WorkloadResult};
use crate::harness::HarnessError;
use crate::history::{Function, History, Outcome};
use crate::model::ModelKind;
use crate::value::Value;

/// Counter workload settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterConfig {
    /// Adds are uniform in `1..=max_increment`.
    pub max_increment: i64,
    /// Share of operations that are reads, in [0, 1).
    pub read_fraction: f64,
}

impl Default for CounterConfig {
    fn default() -> CounterConfig {
        CounterConfig {
            max_increment: 5,
            read_fraction: 0.2,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CounterWorkload {
    config: CounterConfig,
}

impl CounterWorkload {
    /// A workload with `config`; errors on a non-positive increment or a
    /// read fraction outside [0, 1).
    pub fn new(config: CounterConfig) -> Result<CounterWorkload, HarnessError> {
        if config.max_increment < 1 {
            return Err(HarnessError::Config(format!(
                "counter max increment must be at least 1, got {}",
                config.max_increment
            )));
        }
        if !(0.0..1.0).contains(&config.read_fraction) {
            return Err(HarnessError::Config(format!(
                "counter read fraction must be in [0, 1), got {}",
                config.read_fraction
            )));
        }
        Ok(CounterWorkload { config })
    }
}

impl Workload for CounterWorkload {
    fn name(&self) -> &str {
        "counter"
    }

    fn next(&mut self, _worker: usize, _now: Duration, rng: &mut Rng) -> Next {
        if rng.chance(self.config.read_fraction) {
            return Next::Op(Function::Read, Value::Nil);
        }
        let v = 1 + rng.below(self.config.max_increment as u64) as i64;
        Next::Op(Function::Add, Value::Int(v))
    }

    fn completed(&mut self, _inv: &Invocation, _c: &Completion, _now: Duration) {}

    fn final_reads(&self) -> Vec<Value> {
        vec![Value::Nil]
    }

    fn keys(&self) -> Vec<String> {
        vec!["counter".into()]
    }

    fn check(&self, history: &History) -> WorkloadResult {
        let result = match check(history, &CheckOptions::new(ModelKind::Counter)) {
            Ok(r) => r,
            Err(e) => return WorkloadResult::error(self.name(), &e.to_string()),
        };
        let Some(counter) = result.counter.clone() else {
            return WorkloadResult::error(self.name(), "the counter checker gave no report");
        };
        // The last ok final read, for the summary (the checker already
        // bounds it like every read).
        let final_value = history.operations().ok().and_then(|ops| {
            ops.iter()
                .filter(|o| o.f == Function::FinalRead && o.outcome == Outcome::Ok)
                .max_by_key(|o| o.complete)
                .and_then(|o| o.value.as_int())
        });
        let (lo, hi) = counter.final_bounds;
        let mut summary = vec![format!(
            "counter: {} ({} reads checked, {} out of bounds; final bounds [{lo}, {hi}], final read {})",
            result.verdict.name(),
            counter.reads,
            counter.errors.len(),
            final_value.map_or("none".into(), |v| v.to_string())
        )];
        for e in counter.errors.iter().take(10) {
            summary.push(format!(
                "  read {} outside [{}, {}]: {}",
                e.value, e.lower, e.upper, e.op
            ));
        }
        let details = serde_json::json!({ "counter": counter, "final_read": final_value });
        WorkloadResult {
            verdict: result.verdict,
            summary,
            details,
            check: Some(result),
        }
    }
}
