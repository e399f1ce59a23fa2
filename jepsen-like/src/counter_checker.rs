//! Jepsen's counter checker: clients `add` integers to a counter starting
//! at 0 and `read` it; every read must be explainable by some set of adds.
//!
//! A read is valid iff its value lies in `[lower, upper]` where `lower` is
//! the sum of adds acknowledged (`ok`) before the read was invoked, and
//! `upper` adds every add that might have happened by the time the read
//! completed: all adds invoked before the read completed whose outcome is
//! `ok` or `info` (a `fail` add did not happen). Negative increments widen
//! the bounds the other way, so they are handled too. Reads are sweeps over
//! prefix sums, so the checker is linear in the history size.
//! `:final-read`s are checked exactly like reads.

use crate::check::{CheckError, OpSummary, Verdict};
use crate::history::{Function, History, Operation, Outcome};
use crate::value::Value;

/// A read outside its possible range.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CounterError {
    /// The read.
    pub op: OpSummary,
    /// What it returned.
    pub value: i64,
    /// Smallest possible value at that read.
    pub lower: i64,
    /// Largest possible value at that read.
    pub upper: i64,
}

/// What the counter checker found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CounterReport {
    /// valid / invalid.
    pub verdict: Verdict,
    /// Successful reads checked.
    pub reads: usize,
    /// Reads out of bounds.
    pub errors: Vec<CounterError>,
    /// Bounds after the whole history (sum of ok adds, sum of ok + info).
    pub final_bounds: (i64, i64),
}

fn int(op: &Operation, history: &History, what: &str) -> Result<i64, CheckError> {
    op.value.as_int().ok_or_else(|| CheckError::BadValue {
        line: history.ops.get(op.invoke).map_or(0, |o| o.line),
        message: format!("counter {what} value must be an integer, got {}", op.value),
    })
}

#[derive(Clone, Copy)]
enum Event {
    /// An add that may take effect is invoked.
    MaybeAdd(i64),
    /// An add is acknowledged.
    Acked(i64),
    /// A read is invoked (op id).
    ReadStart(usize),
    /// A read completes (op id).
    ReadEnd(usize),
}

#[derive(Clone, Copy, Default)]
struct Sums {
    /// Sum of acknowledged adds.
    acked: i64,
    /// Positive / negative parts of acknowledged adds.
    acked_pos: i64,
    acked_neg: i64,
    /// Positive / negative parts of adds that may have happened.
    maybe_pos: i64,
    maybe_neg: i64,
}

/// Runs the counter checker over paired operations.
pub fn check(ops: &[Operation], history: &History) -> Result<CounterReport, CheckError> {
    let mut events: Vec<(usize, Event)> = Vec::new();
    for op in ops {
        match op.f {
            Function::Add => {
                if op.outcome == Outcome::Fail {
                    continue;
                }
                let v = int(op, history, "add")?;
                events.push((op.invoke, Event::MaybeAdd(v)));
                if let (Outcome::Ok, Some(c)) = (op.outcome, op.complete) {
                    events.push((c, Event::Acked(v)));
                }
            }
            // A final read is judged like any other read.
            Function::Read | Function::FinalRead => {
                if let (Outcome::Ok, Some(c)) = (op.outcome, op.complete) {
                    int(op, history, "read")?;
                    events.push((op.invoke, Event::ReadStart(op.id)));
                    events.push((c, Event::ReadEnd(op.id)));
                }
            }
            ref f => {
                return Err(CheckError::UnsupportedFunction {
                    line: history.ops.get(op.invoke).map_or(0, |o| o.line),
                    model: crate::model::ModelKind::Counter,
                    f: f.clone(),
                })
            }
        }
    }
    events.sort_by_key(|(at, _)| *at);
    let mut sums = Sums::default();
    let mut at_start: std::collections::HashMap<usize, Sums> = std::collections::HashMap::new();
    let mut errors = Vec::new();
    let mut reads = 0;
    for (_, ev) in events {
        match ev {
            Event::MaybeAdd(v) => {
                sums.maybe_pos = sums.maybe_pos.saturating_add(v.max(0));
                sums.maybe_neg = sums.maybe_neg.saturating_add(v.min(0));
            }
            Event::Acked(v) => {
                sums.acked = sums.acked.saturating_add(v);
                sums.acked_pos = sums.acked_pos.saturating_add(v.max(0));
                sums.acked_neg = sums.acked_neg.saturating_add(v.min(0));
            }
            Event::ReadStart(id) => {
                at_start.insert(id, sums);
            }
            Event::ReadEnd(id) => {
                reads += 1;
                let start = at_start.remove(&id).unwrap_or_default();
                let op = &ops[id];
                let Value::Int(value) = op.value else {
                    continue;
                };
                // Definitely applied: acked before the read began. Maybe
                // applied: everything invoked by now, minus those.
                let lower = start.acked.saturating_add(sums.maybe_neg - start.acked_neg);
                let upper = start.acked.saturating_add(sums.maybe_pos - start.acked_pos);
                if value < lower || value > upper {
                    errors.push(CounterError {
                        op: OpSummary::new(op, history),
                        value,
                        lower,
                        upper,
                    });
                }
            }
        }
    }
    Ok(CounterReport {
        verdict: if errors.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        },
        reads,
        errors,
        final_bounds: (sums.acked, sums.acked + (sums.maybe_pos - sums.acked_pos)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;

    fn run(src: &str) -> CounterReport {
        let h = edn::parse_history(src).expect("parse");
        check(&h.operations().expect("pair"), &h).expect("check")
    }

    /// Goal: reads within [acked before invoke, attempted before complete]
    /// pass, including a concurrent add seen or not seen and an info add.
    #[test]
    fn in_bounds_reads() {
        let r = run("{:process 0 :type :invoke :f :add :value 1}\n\
                     {:process 0 :type :ok :f :add :value 1}\n\
                     {:process 1 :type :invoke :f :add :value 5}\n\
                     {:process 2 :type :invoke :f :read}\n\
                     {:process 2 :type :ok :f :read :value 6}\n\
                     {:process 2 :type :invoke :f :read}\n\
                     {:process 2 :type :ok :f :read :value 1}\n\
                     {:process 1 :type :info :f :add :value 5}\n");
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.errors);
        assert_eq!(r.reads, 2);
        assert_eq!(r.final_bounds, (1, 6));
    }

    /// Goal: a read below acknowledged adds, above all attempts, or
    /// counting a failed add is flagged with its bounds.
    #[test]
    fn out_of_bounds_reads() {
        let r = run("{:process 0 :type :invoke :f :add :value 2}\n\
                     {:process 0 :type :ok :f :add :value 2}\n\
                     {:process 0 :type :invoke :f :add :value 3}\n\
                     {:process 0 :type :fail :f :add :value 3}\n\
                     {:process 1 :type :invoke :f :read}\n\
                     {:process 1 :type :ok :f :read :value 1}\n\
                     {:process 1 :type :invoke :f :read}\n\
                     {:process 1 :type :ok :f :read :value 5}\n\
                     {:process 1 :type :invoke :f :read}\n\
                     {:process 1 :type :ok :f :read :value 2}\n");
        assert_eq!(r.verdict, Verdict::Invalid);
        let bad: Vec<(i64, i64, i64)> = r
            .errors
            .iter()
            .map(|e| (e.value, e.lower, e.upper))
            .collect();
        assert_eq!(bad, vec![(1, 2, 2), (5, 2, 2)]);
    }

    /// Goal: `:final-read`s are bounds-checked like reads.
    #[test]
    fn final_reads_are_reads() {
        let r = run("{:process 0 :type :invoke :f :add :value 2}\n\
                     {:process 0 :type :ok :f :add :value 2}\n\
                     {:process 1 :type :invoke :f :final-read}\n\
                     {:process 1 :type :ok :f :final-read :value 3}\n");
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.reads, 1);
        assert_eq!((r.errors[0].lower, r.errors[0].upper), (2, 2));
    }

    /// Goal: negative increments widen the lower bound.
    #[test]
    fn negative_adds() {
        let r = run("{:process 0 :type :invoke :f :add :value -4}\n\
                     {:process 1 :type :invoke :f :read}\n\
                     {:process 1 :type :ok :f :read :value -4}\n\
                     {:process 0 :type :ok :f :add :value -4}\n");
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.errors);
    }
}
