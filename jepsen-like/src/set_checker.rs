//! Jepsen's set checker: clients `add` elements and `read` the whole set;
//! the last successful read decides. When the workload ends with
//! `:final-read`s (reads after every fault healed and the replicas
//! converged), the last successful `:final-read`, if there is one, decides
//! instead: a plain read that happens to complete later may still have
//! raced a partition.
//!
//! Semantics as in `jepsen.checker/set`: *attempts* are all invoked adds,
//! *acknowledged* are adds that completed `ok`. Against the final read:
//! `lost` = acknowledged but absent, `unexpected` = present but never
//! attempted, `recovered` = present although the add was not acknowledged
//! (info), `ok` = attempted and present. Valid iff nothing is lost or
//! unexpected; with no successful read at all the verdict is unknown.
//! On top, like `set-full`, we list *stale* elements: acknowledged
//! elements missing from some read that began after the add completed but
//! present in the final read. Staleness is reported, not judged (Jepsen's
//! set-full only judges it when asked for linearizable sets).

use std::collections::{HashMap, HashSet};

use crate::check::{CheckError, Verdict};
use crate::history::{Function, History, Operation, Outcome};
use crate::value::Value;

/// What the set checker found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SetReport {
    /// valid / invalid / unknown.
    pub verdict: Verdict,
    /// Why the verdict is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Distinct elements whose add was invoked.
    pub attempt_count: usize,
    /// Distinct elements whose add completed ok.
    pub acknowledged_count: usize,
    /// Elements of the final read that were attempted.
    pub ok_count: usize,
    /// Acknowledged elements missing from the final read.
    pub lost: Vec<Value>,
    /// Elements of the final read never attempted.
    pub unexpected: Vec<Value>,
    /// Elements present although their add was indeterminate.
    pub recovered: Vec<Value>,
    /// Acknowledged elements that some later read missed, yet the final
    /// read has.
    pub stale: Vec<Value>,
    /// Operation id of the final read, if any.
    pub final_read: Option<usize>,
}

fn elements<'a>(op: &'a Operation, history: &History) -> Result<&'a [Value], CheckError> {
    match &op.value {
        Value::Vector(v) | Value::Set(v) => Ok(v),
        Value::Nil => Ok(&[]),
        other => Err(CheckError::BadValue {
            line: op
                .complete
                .and_then(|c| history.ops.get(c))
                .map_or(0, |o| o.line),
            message: format!("set read must return a collection, got {other}"),
        }),
    }
}

/// Runs the set checker over paired operations.
pub fn check(ops: &[Operation], history: &History) -> Result<SetReport, CheckError> {
    let mut attempts: HashSet<&Value> = HashSet::new();
    // element -> history index at which its add was acknowledged (earliest)
    let mut acked: HashMap<&Value, usize> = HashMap::new();
    let mut last_read: Option<&Operation> = None;
    let mut last_final_read: Option<&Operation> = None;
    let mut reads: Vec<&Operation> = Vec::new();
    for op in ops {
        match op.f {
            Function::Add => {
                attempts.insert(&op.value);
                if op.outcome == Outcome::Ok {
                    let at = op.complete.unwrap_or(op.invoke);
                    let e = acked.entry(&op.value).or_insert(at);
                    *e = (*e).min(at);
                }
            }
            Function::Read | Function::FinalRead => {
                if op.outcome == Outcome::Ok {
                    elements(op, history)?;
                    reads.push(op);
                    // The last read to *complete* is Jepsen's final read.
                    let last = if op.f == Function::FinalRead {
                        &mut last_final_read
                    } else {
                        &mut last_read
                    };
                    if last.is_none_or(|f| op.complete > f.complete) {
                        *last = Some(op);
                    }
                }
            }
            ref f => {
                return Err(CheckError::UnsupportedFunction {
                    line: history.ops.get(op.invoke).map_or(0, |o| o.line),
                    model: crate::model::ModelKind::Set,
                    f: f.clone(),
                })
            }
        }
    }
    let final_read = last_final_read.or(last_read);
    let mut report = SetReport {
        verdict: Verdict::Unknown,
        message: None,
        attempt_count: attempts.len(),
        acknowledged_count: acked.len(),
        ok_count: 0,
        lost: Vec::new(),
        unexpected: Vec::new(),
        recovered: Vec::new(),
        stale: Vec::new(),
        final_read: final_read.map(|f| f.id),
    };
    let Some(final_read) = final_read else {
        report.message = Some("set was never read".into());
        return Ok(report);
    };
    let final_set: HashSet<&Value> = elements(final_read, history)?.iter().collect();
    let mut lost: Vec<Value> = acked
        .keys()
        .filter(|v| !final_set.contains(*v))
        .map(|v| (*v).clone())
        .collect();
    let mut unexpected: Vec<Value> = final_set
        .iter()
        .filter(|v| !attempts.contains(*v))
        .map(|v| (*v).clone())
        .collect();
    let mut recovered: Vec<Value> = final_set
        .iter()
        .filter(|v| attempts.contains(*v) && !acked.contains_key(*v))
        .map(|v| (*v).clone())
        .collect();
    report.ok_count = final_set.iter().filter(|v| attempts.contains(*v)).count();
    let mut stale: HashSet<&Value> = HashSet::new();
    for read in &reads {
        if read.id == final_read.id {
            continue;
        }
        let seen: HashSet<&Value> = elements(read, history)?.iter().collect();
        for (&el, &at) in &acked {
            if at < read.invoke && !seen.contains(el) && final_set.contains(el) {
                stale.insert(el);
            }
        }
    }
    let mut stale: Vec<Value> = stale.into_iter().cloned().collect();
    for v in [&mut lost, &mut unexpected, &mut recovered, &mut stale] {
        sort_values(v);
    }
    report.verdict = if lost.is_empty() && unexpected.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    report.lost = lost;
    report.unexpected = unexpected;
    report.recovered = recovered;
    report.stale = stale;
    Ok(report)
}

/// Sorts for stable reports: integers numerically, the rest by EDN text.
pub(crate) fn sort_values(v: &mut [Value]) {
    v.sort_by(Value::report_cmp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;

    fn run(src: &str) -> SetReport {
        let h = edn::parse_history(src).expect("parse");
        check(&h.operations().expect("pair"), &h).expect("check")
    }

    /// Goal: a final read with every acknowledged add is valid; an info
    /// add that shows up is "recovered", one that doesn't is fine.
    #[test]
    fn valid_with_recovered() {
        let r = run("{:process 0 :type :invoke :f :add :value 1}\n\
                     {:process 0 :type :ok :f :add :value 1}\n\
                     {:process 1 :type :invoke :f :add :value 2}\n\
                     {:process 1 :type :info :f :add :value 2}\n\
                     {:process 2 :type :invoke :f :add :value 3}\n\
                     {:process 2 :type :info :f :add :value 3}\n\
                     {:process 0 :type :invoke :f :read :value nil}\n\
                     {:process 0 :type :ok :f :read :value #{1 2}}\n");
        assert_eq!(r.verdict, Verdict::Valid);
        assert_eq!(r.recovered, vec![Value::Int(2)]);
        assert_eq!(r.ok_count, 2);
        assert_eq!(r.attempt_count, 3);
    }

    /// Goal: lost (acknowledged, missing) and unexpected (never attempted)
    /// elements make the history invalid; stale reads are listed.
    #[test]
    fn lost_unexpected_stale() {
        let r = run("{:process 0 :type :invoke :f :add :value 1}\n\
                     {:process 0 :type :ok :f :add :value 1}\n\
                     {:process 0 :type :invoke :f :add :value 2}\n\
                     {:process 0 :type :ok :f :add :value 2}\n\
                     {:process 1 :type :invoke :f :read}\n\
                     {:process 1 :type :ok :f :read :value [1]}\n\
                     {:process 1 :type :invoke :f :read}\n\
                     {:process 1 :type :ok :f :read :value [2 9]}\n");
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.lost, vec![Value::Int(1)]);
        assert_eq!(r.unexpected, vec![Value::Int(9)]);
        assert_eq!(r.stale, vec![Value::Int(2)]);
    }

    /// Goal: the last ok `:final-read` decides even when a plain read
    /// completes after it; without an ok final read the last ok read does.
    #[test]
    fn final_read_is_preferred() {
        let adds = "{:process 0 :type :invoke :f :add :value 1}\n\
                    {:process 0 :type :ok :f :add :value 1}\n";
        let r = run(&format!(
            "{adds}{{:process 1 :type :invoke :f :final-read}}\n\
             {{:process 1 :type :ok :f :final-read :value [1]}}\n\
             {{:process 2 :type :invoke :f :read}}\n\
             {{:process 2 :type :ok :f :read :value []}}\n"
        ));
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.lost);
        assert_eq!(r.final_read, Some(1));
        let r = run(&format!(
            "{adds}{{:process 1 :type :invoke :f :final-read}}\n\
             {{:process 1 :type :fail :f :final-read}}\n\
             {{:process 2 :type :invoke :f :read}}\n\
             {{:process 2 :type :ok :f :read :value []}}\n"
        ));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.final_read, Some(2));
    }

    /// Goal: a set never read successfully gets an unknown verdict.
    #[test]
    fn never_read_is_unknown() {
        let r = run("{:process 0 :type :invoke :f :add :value 1}\n\
                     {:process 0 :type :ok :f :add :value 1}\n\
                     {:process 1 :type :invoke :f :read}\n\
                     {:process 1 :type :fail :f :read}\n");
        assert_eq!(r.verdict, Verdict::Unknown);
    }
}
