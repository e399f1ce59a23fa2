//! The `sibling-register` workload: Dynamo-style registers `s0..` whose
//! concurrent writes survive as siblings, judged by the existing
//! sibling-register checker ([`crate::sibling_checker`]) against a
//! `:final-read` of every key after healing.
//!
//! Writes are `[k v covered]` with globally unique string values ("w17").
//! Three writes in four are emitted with `covered` = the keyword `:ctx`,
//! meaning "use the causal context of your last read of k"; the store's
//! [`crate::harness::Client::prepare`] must replace it with the vector of
//! values that read returned (what the context covers), before the
//! invocation is recorded. The rest are blind writes (`covered` = `[]`).
//! Reads are `[k nil]` and return `[k [v ...]]`.

use std::time::Duration;

use crate::check::{check, CheckOptions};
use crate::gen::Rng;
use crate::harness::op::{Completion, Invocation};
use crate::harness::workload::{Next, Workload, WorkloadResult};
use crate::harness::HarnessError;
use crate::history::{Function, History};
use crate::model::ModelKind;
use crate::value::Value;

/// The placeholder a client replaces with the values its last read of the
/// key returned.
pub const CONTEXT_PLACEHOLDER: &str = "ctx";

/// Sibling-register workload settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SiblingConfig {
    /// Keys `s0..s{keys-1}`.
    pub keys: usize,
    /// Share of operations that are reads, in [0, 1).
    pub read_fraction: f64,
    /// Share of writes that use the last read's context, in [0, 1].
    pub context_fraction: f64,
}

impl Default for SiblingConfig {
    fn default() -> SiblingConfig {
        SiblingConfig {
            keys: 3,
            read_fraction: 0.5,
            context_fraction: 0.75,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct SiblingWorkload {
    config: SiblingConfig,
    next_value: u64,
    touched: Vec<bool>,
}

impl SiblingWorkload {
    /// A workload with `config`; errors on zero keys or fractions out of
    /// range.
    pub fn new(config: SiblingConfig) -> Result<SiblingWorkload, HarnessError> {
        if config.keys == 0 {
            return Err(HarnessError::Config(
                "sibling-register needs at least one key".into(),
            ));
        }
        if !(0.0..1.0).contains(&config.read_fraction)
            || !(0.0..=1.0).contains(&config.context_fraction)
        {
            return Err(HarnessError::Config(format!(
                "sibling-register fractions out of range: read {}, context {}",
                config.read_fraction, config.context_fraction
            )));
        }
        let k = config.keys;
        Ok(SiblingWorkload {
            config,
            next_value: 0,
            touched: vec![false; k],
        })
    }
}

impl Workload for SiblingWorkload {
    fn name(&self) -> &str {
        "sibling-register"
    }

    fn next(&mut self, _worker: usize, _now: Duration, rng: &mut Rng) -> Next {
        let k = rng.below(self.config.keys as u64) as usize;
        self.touched[k] = true;
        let key = Value::Str(format!("s{k}"));
        if rng.chance(self.config.read_fraction) {
            return Next::Op(Function::Read, Value::Vector(vec![key, Value::Nil]));
        }
        self.next_value += 1;
        let covered = if rng.chance(self.config.context_fraction) {
            Value::kw(CONTEXT_PLACEHOLDER)
        } else {
            Value::Vector(Vec::new())
        };
        let v = Value::Str(format!("w{}", self.next_value));
        Next::Op(Function::Write, Value::Vector(vec![key, v, covered]))
    }

    fn completed(&mut self, _inv: &Invocation, _c: &Completion, _now: Duration) {}

    fn final_reads(&self) -> Vec<Value> {
        (0..self.config.keys)
            .filter(|k| self.touched[*k])
            .map(|k| Value::Vector(vec![Value::Str(format!("s{k}")), Value::Nil]))
            .collect()
    }

    fn keys(&self) -> Vec<String> {
        (0..self.config.keys)
            .filter(|k| self.touched[*k])
            .map(|k| format!("s{k}"))
            .collect()
    }

    fn check(&self, history: &History) -> WorkloadResult {
        let result = match check(history, &CheckOptions::new(ModelKind::SiblingRegister)) {
            Ok(r) => r,
            Err(e) => return WorkloadResult::error(self.name(), &e.to_string()),
        };
        let mut summary = vec![format!(
            "sibling-register: {} ({} ops on {} keys)",
            result.verdict.name(),
            result.ops,
            result.keys
        )];
        if let Some(m) = &result.message {
            summary.push(format!("  {m}"));
        }
        if let Some(s) = &result.siblings {
            for k in &s.keys {
                summary.push(format!(
                    "  key {}: {} ({} written, {} acknowledged, {} in the final read; {} lost, {} resurrected, {} unexpected, {} failed but present, {} recovered)",
                    k.key,
                    k.verdict.name(),
                    k.attempt_count,
                    k.acknowledged_count,
                    k.present_count,
                    k.lost.len(),
                    k.resurrected.len(),
                    k.unexpected.len(),
                    k.failed_but_present.len(),
                    k.recovered.len()
                ));
            }
        }
        WorkloadResult {
            verdict: result.verdict,
            summary,
            details: serde_json::to_value(&result).unwrap_or(serde_json::Value::Null),
            check: Some(result),
        }
    }
}
