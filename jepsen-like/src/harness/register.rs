//! The `register` workload: independent read/write/cas registers `r0..`,
//! checked per key for linearizability with the `multi-register` model.
//!
//! Values are `[k v]` (writes; reads invoke `[k nil]` and return `[k v]`)
//! and `[k [old new]]` (cas). Written values are unique increasing integers
//! per key, so every read names the write it saw; a cas's `old` is a value
//! the key recently had (written or read), so cas succeeds often enough to
//! matter. Linearizability judges every read, so there are no final reads.

use std::collections::VecDeque;
use std::time::Duration;

use crate::check::{check, CheckOptions};
use crate::gen::Rng;
use crate::harness::op::{Completion, Invocation};
use crate::harness::workload::{Next, Workload, WorkloadResult};
use crate::harness::HarnessError;
use crate::history::{Function, History, OpType};
use crate::model::ModelKind;
use crate::value::Value;

/// Register workload settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterConfig {
    /// Keys `r0..r{keys-1}`.
    pub keys: usize,
    /// Relative weights of read, write and cas.
    pub mix: [u32; 3],
    /// Give up on the linearizability search after this long (verdict
    /// unknown); `None` = no limit.
    pub check_timeout: Option<Duration>,
}

impl Default for RegisterConfig {
    fn default() -> RegisterConfig {
        RegisterConfig {
            keys: 5,
            mix: [1, 1, 1],
            check_timeout: Some(Duration::from_secs(120)),
        }
    }
}

/// Values a cas may expect: the last few a key was seen or set to.
const RECENT: usize = 4;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RegisterWorkload {
    config: RegisterConfig,
    /// Next value to write, per key.
    next_value: Vec<i64>,
    /// Recent values per key, newest last.
    recent: Vec<VecDeque<i64>>,
    /// Keys that saw at least one op.
    touched: Vec<bool>,
}

impl RegisterWorkload {
    /// A workload with `config`; errors on zero keys or an all-zero mix.
    pub fn new(config: RegisterConfig) -> Result<RegisterWorkload, HarnessError> {
        if config.keys == 0 {
            return Err(HarnessError::Config(
                "register needs at least one key".into(),
            ));
        }
        if config.mix.iter().all(|w| *w == 0) {
            return Err(HarnessError::Config(
                "register mix needs a non-zero weight".into(),
            ));
        }
        let k = config.keys;
        Ok(RegisterWorkload {
            config,
            next_value: vec![1; k],
            recent: vec![VecDeque::new(); k],
            touched: vec![false; k],
        })
    }

    fn key(k: usize) -> Value {
        Value::Str(format!("r{k}"))
    }

    fn remember(&mut self, k: usize, v: i64) {
        let r = &mut self.recent[k];
        if r.back() != Some(&v) {
            r.push_back(v);
            if r.len() > RECENT {
                r.pop_front();
            }
        }
    }

    /// The key index of `[k ...]`, if it is one of ours.
    fn key_index(v: &Value) -> Option<usize> {
        match v.as_seq()?.first()? {
            Value::Str(s) => s.strip_prefix('r')?.parse().ok(),
            _ => None,
        }
    }
}

impl Workload for RegisterWorkload {
    fn name(&self) -> &str {
        "register"
    }

    fn next(&mut self, _worker: usize, _now: Duration, rng: &mut Rng) -> Next {
        let k = rng.below(self.config.keys as u64) as usize;
        self.touched[k] = true;
        let [r, w, c] = self.config.mix.map(u64::from);
        let pick = rng.below(r + w + c);
        let key = Self::key(k);
        if pick < r {
            return Next::Op(Function::Read, Value::Vector(vec![key, Value::Nil]));
        }
        let new = self.next_value[k];
        self.next_value[k] += 1;
        let recent = &self.recent[k];
        if pick >= r + w && !recent.is_empty() {
            let old = recent[rng.below(recent.len() as u64) as usize];
            let pair = Value::Vector(vec![Value::Int(old), Value::Int(new)]);
            return Next::Op(Function::Cas, Value::Vector(vec![key, pair]));
        }
        // A write (or a cas on a key with no known value yet).
        self.remember(k, new);
        Next::Op(Function::Write, Value::Vector(vec![key, Value::Int(new)]))
    }

    fn completed(&mut self, inv: &Invocation, c: &Completion, _now: Duration) {
        let Some(k) = Self::key_index(&inv.value).filter(|k| *k < self.config.keys) else {
            return;
        };
        if c.kind != OpType::Ok {
            return;
        }
        let seen = match inv.f {
            Function::Read => c.value.as_seq().and_then(|kv| kv.get(1)?.as_int()),
            Function::Cas => inv
                .value
                .as_seq()
                .and_then(|kv| kv.get(1)?.as_seq()?.get(1)?.as_int()),
            _ => None,
        };
        if let Some(v) = seen {
            self.remember(k, v);
        }
    }

    fn final_reads(&self) -> Vec<Value> {
        Vec::new()
    }

    fn keys(&self) -> Vec<String> {
        (0..self.config.keys)
            .filter(|k| self.touched[*k])
            .map(|k| format!("r{k}"))
            .collect()
    }

    fn check(&self, history: &History) -> WorkloadResult {
        let mut opts = CheckOptions::new(ModelKind::MultiRegister);
        opts.timeout = self.config.check_timeout;
        // Judge every key: a report naming one bad key out of five hides
        // whether the fault is local or systemic.
        opts.all_failures = true;
        let result = match check(history, &opts) {
            Ok(r) => r,
            Err(e) => return WorkloadResult::error(self.name(), &e.to_string()),
        };
        let mut summary = vec![format!(
            "register: {} ({} ops on {} keys, linearizability per key)",
            result.verdict.name(),
            result.ops,
            result.keys
        )];
        for f in &result.failures {
            let key = f.key.as_ref().map_or("?".into(), |k| k.to_string());
            summary.push(format!("  key {key}: cannot linearize {}", f.op));
        }
        if let Some(m) = &result.message {
            summary.push(format!("  {m}"));
        }
        WorkloadResult {
            verdict: result.verdict,
            summary,
            details: serde_json::to_value(&result).unwrap_or(serde_json::Value::Null),
            check: Some(result),
        }
    }
}
