//! The workload contract: a generator of abstract operations that also
//! judges the history they produced. Workloads know nothing of the store;
//! the store's [`crate::harness::Client`] turns their operations into
//! requests. The five workloads live in their own modules
//! ([`crate::harness::register`], [`crate::harness::set`], ...).

use std::time::Duration;

use crate::check::{CheckResult, Verdict};
use crate::gen::Rng;
use crate::harness::op::{Completion, Invocation};
use crate::history::{Function, History};
use crate::value::Value;

/// What a worker should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Invoke this operation.
    Op(Function, Value),
    /// Nothing is due yet: ask again later (the runner sleeps
    /// `min(wait, 10 ms)`).
    Wait(Duration),
    /// This worker has nothing more to do.
    Done,
}

/// A generator plus checker. See the module docs.
pub trait Workload: Send {
    /// The workload's name, e.g. "register".
    fn name(&self) -> &str;
    /// The next operation for `worker` at test time `now` (since start).
    fn next(&mut self, worker: usize, now: Duration, rng: &mut Rng) -> Next;
    /// Every completion, final reads included, is reported here.
    fn completed(&mut self, inv: &Invocation, c: &Completion, now: Duration);
    /// Values of the final reads (one `:final-read` op each), run after the
    /// nemesis healed everything and the quiet period.
    fn final_reads(&self) -> Vec<Value>;
    /// Keys the run touched, for the store's convergence check.
    fn keys(&self) -> Vec<String>;
    /// Judges the history.
    fn check(&self, history: &History) -> WorkloadResult;
}

/// A boxed workload is a workload, so a caller can choose one at run time
/// (`Box<dyn Workload>`) and still hand it to [`crate::harness::run`].
impl<W: Workload + ?Sized> Workload for Box<W> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn next(&mut self, worker: usize, now: Duration, rng: &mut Rng) -> Next {
        (**self).next(worker, now, rng)
    }
    fn completed(&mut self, inv: &Invocation, c: &Completion, now: Duration) {
        (**self).completed(inv, c, now)
    }
    fn final_reads(&self) -> Vec<Value> {
        (**self).final_reads()
    }
    fn keys(&self) -> Vec<String> {
        (**self).keys()
    }
    fn check(&self, history: &History) -> WorkloadResult {
        (**self).check(history)
    }
}

/// A workload's judgement.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// valid / invalid / unknown.
    pub verdict: Verdict,
    /// Readable lines for summary.txt.
    pub summary: Vec<String>,
    /// Details for results.json.
    pub details: serde_json::Value,
    /// The existing checker's result, when one ran (for timeline.html).
    pub check: Option<CheckResult>,
}

impl WorkloadResult {
    /// An unknown verdict because the history could not be judged at all
    /// (a malformed value, broken process discipline): says why.
    pub fn error(workload: &str, why: &str) -> WorkloadResult {
        WorkloadResult {
            verdict: Verdict::Unknown,
            summary: vec![format!("{workload}: cannot check the history: {why}")],
            details: serde_json::json!({ "error": why }),
            check: None,
        }
    }
}

/// `p`-quantile (0..=1) of sorted values, nearest-rank; `None` if empty.
pub(crate) fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median, p90, p99 and max of a sample (e.g. latencies in ms).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Sample size.
    pub count: usize,
    /// Median (nearest rank); `None` for an empty sample.
    pub median: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `values` (any order; non-finite values skipped).
    pub fn of(values: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Percentiles {
            count: v.len(),
            median: quantile(&v, 0.5),
            p90: quantile(&v, 0.9),
            p99: quantile(&v, 0.99),
            max: v.last().copied(),
        }
    }

    /// `median 3.0 p90 5.0 p99 9.0 max 12.0 ms` (or `no samples`).
    pub fn line(&self, unit: &str) -> String {
        match (self.median, self.p90, self.p99, self.max) {
            (Some(m), Some(p90), Some(p99), Some(max)) => {
                format!("median {m:.1} p90 {p90:.1} p99 {p99:.1} max {max:.1} {unit}")
            }
            _ => "no samples".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: nearest-rank quantiles pick real samples at the right rank.
    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        let p = Percentiles::of(&[3.0, f64::NAN, 1.0, 2.0]);
        assert_eq!((p.count, p.median, p.max), (3, Some(2.0), Some(3.0)));
        assert_eq!(Percentiles::of(&[]).line("ms"), "no samples");
    }
}
