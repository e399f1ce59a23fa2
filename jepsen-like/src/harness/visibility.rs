//! The `visibility` workload: PBS t-visibility, measured rather than
//! modelled. Each write goes to a fresh key (`v{n}`, value `[k n]`); when
//! it is acknowledged at time `a`, reads of that key are scheduled at
//! `a + d` for every delay `d` of a list. A read is invoked as
//! `[k nil d_ms]` (the planned delay travels with it) and returns
//! `[k [v ...]]` (`[]` = not found). Per delay, the checker reports how
//! many reads saw the write, the probability with a Wilson 95% interval,
//! and how late reads actually started against their plan.
//!
//! Staleness is the measurement, not a fault: the verdict is valid unless
//! a read returned a value never written to its key (invalid).
//!
//! Scheduling keeps reads near their due time: a due read always goes
//! first, and new writes are only started while fewer than half the
//! workers are busy writing, so free workers remain for reads. At most
//! `max_keys` writes are made per run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use crate::check::{CheckError, Verdict};
use crate::gen::Rng;
use crate::harness::op::{Completion, Invocation};
use crate::harness::workload::{quantile, Next, Workload, WorkloadResult};
use crate::harness::HarnessError;
use crate::history::{Function, History, OpType, Outcome};
use crate::value::Value;

/// Visibility workload settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibilityConfig {
    /// Read delays after each acknowledged write, in ms.
    pub delays_ms: Vec<u64>,
    /// At most this many writes (keys) per run.
    pub max_keys: usize,
}

impl Default for VisibilityConfig {
    fn default() -> VisibilityConfig {
        VisibilityConfig {
            delays_ms: vec![0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
            max_keys: 2000,
        }
    }
}

/// A read waiting for its time: (due, sequence for ties, key number,
/// delay in ms).
type Planned = Reverse<(Duration, u64, i64, u64)>;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct VisibilityWorkload {
    config: VisibilityConfig,
    /// Writes started so far (key numbers `0..written`).
    written: usize,
    /// Writes invoked and not completed.
    writes_in_flight: usize,
    /// Highest worker number seen, plus one.
    workers: usize,
    due: BinaryHeap<Planned>,
    seq: u64,
}

impl VisibilityWorkload {
    /// A workload with `config`; errors on an empty delay list or zero
    /// keys.
    pub fn new(mut config: VisibilityConfig) -> Result<VisibilityWorkload, HarnessError> {
        if config.delays_ms.is_empty() || config.max_keys == 0 {
            return Err(HarnessError::Config(
                "visibility needs at least one delay and one key".into(),
            ));
        }
        config.delays_ms.sort_unstable();
        config.delays_ms.dedup();
        Ok(VisibilityWorkload {
            config,
            written: 0,
            writes_in_flight: 0,
            workers: 0,
            due: BinaryHeap::new(),
            seq: 0,
        })
    }

    fn key(n: i64) -> Value {
        Value::Str(format!("v{n}"))
    }
}

impl Workload for VisibilityWorkload {
    fn name(&self) -> &str {
        "visibility"
    }

    fn next(&mut self, worker: usize, now: Duration, _rng: &mut Rng) -> Next {
        self.workers = self.workers.max(worker + 1);
        if let Some(Reverse((at, _, n, d))) = self.due.peek().copied() {
            if at <= now {
                self.due.pop();
                let v = vec![Self::key(n), Value::Nil, Value::Int(d as i64)];
                return Next::Op(Function::Read, Value::Vector(v));
            }
        }
        if self.written < self.config.max_keys && self.writes_in_flight * 2 < self.workers {
            let n = self.written as i64;
            self.written += 1;
            self.writes_in_flight += 1;
            return Next::Op(
                Function::Write,
                Value::Vector(vec![Self::key(n), Value::Int(n)]),
            );
        }
        match self.due.peek() {
            Some(Reverse((at, ..))) => Next::Wait(at.saturating_sub(now)),
            None if self.written >= self.config.max_keys && self.writes_in_flight == 0 => {
                Next::Done
            }
            None => Next::Wait(Duration::from_millis(10)),
        }
    }

    fn completed(&mut self, inv: &Invocation, c: &Completion, now: Duration) {
        if inv.f != Function::Write {
            return;
        }
        self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
        let n = inv.value.as_seq().and_then(|kv| kv.get(1)?.as_int());
        if let (OpType::Ok, Some(n)) = (c.kind, n) {
            for &d in &self.config.delays_ms {
                self.seq += 1;
                self.due
                    .push(Reverse((now + Duration::from_millis(d), self.seq, n, d)));
            }
        }
    }

    fn final_reads(&self) -> Vec<Value> {
        Vec::new()
    }

    fn keys(&self) -> Vec<String> {
        (0..self.written).map(|n| format!("v{n}")).collect()
    }

    fn check(&self, history: &History) -> WorkloadResult {
        let report = match visibility(history, &self.config.delays_ms) {
            Ok(r) => r,
            Err(e) => return WorkloadResult::error(self.name(), &e.to_string()),
        };
        WorkloadResult {
            verdict: report.verdict,
            summary: summary(&report),
            details: serde_json::to_value(&report).unwrap_or(serde_json::Value::Null),
            check: None,
        }
    }
}

/// Visibility at one delay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DelayStats {
    /// The planned delay after the acknowledgement, in ms.
    pub delay_ms: u64,
    /// Reads that completed ok.
    pub reads: usize,
    /// Of those, reads that saw the write.
    pub saw: usize,
    /// Reads that failed or were indeterminate (not counted above).
    pub failed: usize,
    /// `saw / reads`.
    pub probability: Option<f64>,
    /// Wilson 95% interval of the probability.
    pub wilson_95: Option<(f64, f64)>,
    /// Median of (actual start - planned start) of the ok reads, in ms.
    pub median_start_lag_ms: Option<f64>,
}

/// A read that returned a value never written to its key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PhantomRead {
    /// The key.
    pub key: Value,
    /// The value never written there.
    pub value: Value,
    /// Operation id of the read.
    pub read: usize,
}

/// What the visibility checker found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VisibilityReport {
    /// Invalid iff some read returned a value never written to its key.
    pub verdict: Verdict,
    /// Writes invoked.
    pub writes: usize,
    /// Writes acknowledged.
    pub writes_acked: usize,
    /// Per delay, ascending.
    pub delays: Vec<DelayStats>,
    /// Reads returning values never written to their key.
    pub phantoms: Vec<PhantomRead>,
}

/// The Wilson score interval at 95% for `s` successes in `n` trials.
pub fn wilson_95(s: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let z = 1.96_f64;
    let (s, n) = (s as f64, n as f64);
    let p = s / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

fn bad(history: &History, index: usize, message: String) -> CheckError {
    CheckError::BadValue {
        line: history.ops.get(index).map_or(0, |o| o.line),
        message,
    }
}

#[derive(Default)]
struct Tally {
    reads: usize,
    saw: usize,
    failed: usize,
    lags_ms: Vec<f64>,
}

/// Judges a visibility history; `delays_ms` are listed even when no read
/// of them ran.
pub fn visibility(history: &History, delays_ms: &[u64]) -> Result<VisibilityReport, CheckError> {
    let ops = history.operations()?;
    let time = |i: usize| history.ops.get(i).and_then(|o| o.time).unwrap_or(0);
    // key -> every value written there; key -> (value, ack time) of the
    // acknowledged write.
    let mut written: HashMap<&Value, HashSet<&Value>> = HashMap::new();
    let mut acked: HashMap<&Value, (&Value, i64)> = HashMap::new();
    let mut writes = 0;
    for op in ops.iter().filter(|o| o.f == Function::Write) {
        let Some([k, v]) = op
            .value
            .as_seq()
            .and_then(|s| <&[Value; 2]>::try_from(s).ok())
        else {
            return Err(bad(
                history,
                op.invoke,
                format!("visibility writes must be [k v], got {}", op.value),
            ));
        };
        writes += 1;
        written.entry(k).or_default().insert(v);
        if let (Outcome::Ok, Some(c)) = (op.outcome, op.complete) {
            acked.insert(k, (v, time(c)));
        }
    }
    let mut tallies: BTreeMap<u64, Tally> =
        delays_ms.iter().map(|d| (*d, Tally::default())).collect();
    let mut phantoms = Vec::new();
    for op in ops.iter().filter(|o| o.f == Function::Read) {
        let invoked = history.ops.get(op.invoke).map(|o| &o.value);
        let (k, d) = match invoked.and_then(Value::as_seq) {
            Some([k, Value::Nil, Value::Int(d)]) if *d >= 0 => (k, *d as u64),
            _ => {
                return Err(bad(
                    history,
                    op.invoke,
                    format!(
                        "visibility reads must be invoked with [k nil delay-ms], got {}",
                        invoked.unwrap_or(&Value::Nil)
                    ),
                ))
            }
        };
        let t = tallies.entry(d).or_default();
        if op.outcome != Outcome::Ok {
            t.failed += 1;
            continue;
        }
        let seen = match op.value.as_seq() {
            Some([rk, vals]) if rk == k => match vals {
                Value::Nil => &[][..],
                other => other.as_seq().ok_or_else(|| {
                    bad(
                        history,
                        op.complete.unwrap_or(op.invoke),
                        format!("visibility reads must return [k [v ...]], got {}", op.value),
                    )
                })?,
            },
            _ => {
                return Err(bad(
                    history,
                    op.complete.unwrap_or(op.invoke),
                    format!("read of {k} must return [{k} [v ...]], got {}", op.value),
                ))
            }
        };
        for v in seen {
            if !written.get(k).is_some_and(|w| w.contains(v)) {
                phantoms.push(PhantomRead {
                    key: k.clone(),
                    value: v.clone(),
                    read: op.id,
                });
            }
        }
        let Some(&(value, ack_ns)) = acked.get(k) else {
            // A read of a key whose write was never acknowledged measures
            // nothing (the workload does not plan such reads).
            continue;
        };
        t.reads += 1;
        if seen.contains(value) {
            t.saw += 1;
        }
        let planned = ack_ns.saturating_add((d as i64).saturating_mul(1_000_000));
        t.lags_ms.push((time(op.invoke) - planned) as f64 / 1e6);
    }
    let delays = tallies
        .into_iter()
        .map(|(delay_ms, mut t)| {
            t.lags_ms.sort_by(f64::total_cmp);
            DelayStats {
                delay_ms,
                reads: t.reads,
                saw: t.saw,
                failed: t.failed,
                probability: (t.reads > 0).then(|| t.saw as f64 / t.reads as f64),
                wilson_95: wilson_95(t.saw, t.reads),
                median_start_lag_ms: quantile(&t.lags_ms, 0.5),
            }
        })
        .collect();
    Ok(VisibilityReport {
        verdict: if phantoms.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        },
        writes,
        writes_acked: acked.len(),
        delays,
        phantoms,
    })
}

fn summary(r: &VisibilityReport) -> Vec<String> {
    let mut out = vec![
        format!(
            "visibility: {} ({} writes, {} acknowledged, {} phantom reads)",
            r.verdict.name(),
            r.writes,
            r.writes_acked,
            r.phantoms.len()
        ),
        format!(
            "  {:>8} {:>7} {:>7} {:>7} {:>10} {:>17} {:>12}",
            "delay ms", "reads", "saw", "failed", "P(seen)", "95% interval", "start lag ms"
        ),
    ];
    for d in &r.delays {
        let p = d.probability.map_or("-".into(), |p| format!("{p:.4}"));
        let ci = d
            .wilson_95
            .map_or("-".into(), |(lo, hi)| format!("[{lo:.3}, {hi:.3}]"));
        let lag = d
            .median_start_lag_ms
            .map_or("-".into(), |l| format!("{l:.1}"));
        out.push(format!(
            "  {:>8} {:>7} {:>7} {:>7} {:>10} {:>17} {:>12}",
            d.delay_ms, d.reads, d.saw, d.failed, p, ci, lag
        ));
    }
    for p in r.phantoms.iter().take(10) {
        out.push(format!(
            "  phantom: read op {} of {} returned {}, never written there",
            p.read, p.key, p.value
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;

    /// Goal: per-delay counts, probability, Wilson interval and start lag
    /// come out right on a crafted history, failed reads are counted
    /// apart, and a value never written makes the history invalid.
    #[test]
    fn probabilities_on_a_crafted_history() {
        let ms = 1_000_000;
        let mut src = format!(
            "{{:process 0 :type :invoke :f :write :value [\"v0\" 0] :time 0}}\n\
             {{:process 0 :type :ok :f :write :value [\"v0\" 0] :time {}}}\n",
            10 * ms
        );
        // Delay 0: planned at 10 ms; two reads miss, one sees, one fails.
        // Delay 5: planned at 15 ms; both see.
        let reads = [
            (0, 11, "[]", "ok"),
            (0, 12, "[]", "ok"),
            (0, 13, "[0]", "ok"),
            (0, 14, "nil", "fail"),
            (5, 15, "[0]", "ok"),
            (5, 17, "[0]", "ok"),
        ];
        for (d, start, seen, kind) in reads {
            let t = start * ms;
            let value = if kind == "ok" {
                format!("[\"v0\" {seen}]")
            } else {
                "nil".into()
            };
            src += &format!(
                "{{:process 1 :type :invoke :f :read :value [\"v0\" nil {d}] :time {t}}}\n\
                 {{:process 1 :type :{kind} :f :read :value {value} :time {}}}\n",
                t + ms
            );
        }
        let h = edn::parse_history(&src).expect("parse");
        let r = visibility(&h, &[0, 5, 10]).expect("check");
        assert_eq!(r.verdict, Verdict::Valid);
        let d0 = &r.delays[0];
        assert_eq!((d0.delay_ms, d0.reads, d0.saw, d0.failed), (0, 3, 1, 1));
        assert!((d0.probability.expect("p") - 1.0 / 3.0).abs() < 1e-12);
        let (lo, hi) = d0.wilson_95.expect("interval");
        // Wilson 95% for 1/3: [0.0615, 0.7923].
        assert!(
            (lo - 0.0615).abs() < 1e-3 && (hi - 0.7923).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(d0.median_start_lag_ms, Some(2.0));
        let d5 = &r.delays[1];
        assert_eq!((d5.reads, d5.saw, d5.probability), (2, 2, Some(1.0)));
        assert_eq!(d5.median_start_lag_ms, Some(0.0));
        assert_eq!((r.delays[2].reads, r.delays[2].probability), (0, None));

        let phantom = src.replace("[\"v0\" [0]] :time 14", "[\"v0\" [7]] :time 14");
        let h = edn::parse_history(&phantom).expect("parse");
        let r = visibility(&h, &[0]).expect("check");
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.phantoms[0].value, Value::Int(7));
    }

    /// Goal: the generator reads a key at each delay after its write is
    /// acknowledged, due reads before new writes, and stops at max_keys.
    #[test]
    fn schedules_reads_after_acks() {
        let mut w = VisibilityWorkload::new(VisibilityConfig {
            delays_ms: vec![0, 5],
            max_keys: 1,
        })
        .expect("config");
        let mut rng = Rng::new(1);
        let t = Duration::from_millis;
        let Next::Op(f, value) = w.next(0, t(0), &mut rng) else {
            panic!("expected a write");
        };
        assert_eq!(f, Function::Write);
        // Nothing due yet, no more keys: wait for the ack.
        assert_eq!(w.next(1, t(1), &mut rng), Next::Wait(t(10)));
        let inv = Invocation {
            process: 0,
            f,
            value,
        };
        w.completed(&inv, &Completion::ok(Value::Nil), t(2));
        let read = |d: i64| {
            Next::Op(
                Function::Read,
                Value::Vector(vec![Value::Str("v0".into()), Value::Nil, Value::Int(d)]),
            )
        };
        assert_eq!(w.next(0, t(2), &mut rng), read(0));
        assert_eq!(w.next(0, t(3), &mut rng), Next::Wait(t(4)));
        assert_eq!(w.next(0, t(7), &mut rng), read(5));
        assert_eq!(w.next(0, t(8), &mut rng), Next::Done);
        assert_eq!(w.keys(), vec!["v0".to_string()]);
    }
}
