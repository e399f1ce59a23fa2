//! The sibling-register checker: Dynamo/Riak-style registers that keep
//! concurrent writes as siblings, and let a write replace exactly the
//! values its causal context covers.
//!
//! Every write carries a unique value and the values its client had read,
//! i.e. the siblings its context covers (`:value [key value covered]`,
//! `covered` = `[]` for a blind write); a read returns every sibling
//! (`[key [v ...]]`, `[]` = not found). Keys are independent. Once faults
//! have healed and the replicas converged, the last ok `:final-read` of
//! each key must show what causality allows:
//! - `lost`: a write was acknowledged, its value is absent, and no `ok` or
//!   `info` write covered it (an indeterminate write may have overwritten
//!   it, so `info` excuses the absence too);
//! - `resurrected`: present although an acknowledged write covered it;
//! - `unexpected`: present although no write of it was ever invoked;
//! - `failed_but_present`: present although its write failed (`fail`
//!   means definitely not executed);
//! - `recovered`: present although its write was indeterminate (`info`);
//!   reported, not judged.
//!
//! A key with acknowledged writes but no ok final read is unknown. Plain
//! reads are checked for shape only: while faults are active, siblings may
//! legitimately be missing or stale. Keys and findings are sorted, so a
//! report is byte-identical across runs.

use std::collections::{HashMap, HashSet};

use crate::check::{CheckError, Verdict};
use crate::history::{Function, History, Operation, Outcome};
use crate::model::ModelKind;
use crate::value::Value;

/// One value found wrong (or noteworthy) on a key, with the operations
/// involved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiblingFinding {
    /// The value.
    pub value: Value,
    /// Operation ids of the writes of this value (none when unexpected).
    pub writes: Vec<usize>,
    /// Acknowledged writes whose context covered it (resurrected only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub covered_by: Vec<usize>,
}

/// What the checker found on one key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiblingKeyReport {
    /// The key.
    pub key: Value,
    /// valid / invalid / unknown (acknowledged writes, no ok final read).
    pub verdict: Verdict,
    /// Operation id of the deciding final read, if any.
    pub final_read: Option<usize>,
    /// Distinct values whose write was invoked.
    pub attempt_count: usize,
    /// Distinct values with a write that completed ok.
    pub acknowledged_count: usize,
    /// Distinct values in the final read.
    pub present_count: usize,
    /// Distinct values covered by the context of some ok or info write.
    pub covered_count: usize,
    /// Acknowledged, absent, and never covered.
    pub lost: Vec<SiblingFinding>,
    /// Present although an acknowledged write covered it.
    pub resurrected: Vec<SiblingFinding>,
    /// Present but never written.
    pub unexpected: Vec<SiblingFinding>,
    /// Present although every write of it failed.
    pub failed_but_present: Vec<SiblingFinding>,
    /// Present although no write of it was acknowledged (info); not judged.
    pub recovered: Vec<SiblingFinding>,
}

/// What the checker found, key by key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiblingReport {
    /// Invalid if any key is, else unknown if any key is, else valid.
    pub verdict: Verdict,
    /// Why some keys are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every key, in report order ([`Value::report_cmp`]).
    pub keys: Vec<SiblingKeyReport>,
}

/// A write as the checker sees it.
struct Write<'a> {
    id: usize,
    value: &'a Value,
    covered: &'a [Value],
    outcome: Outcome,
}

/// One key's writes and its deciding final read (with its siblings).
#[derive(Default)]
struct KeyOps<'a> {
    writes: Vec<Write<'a>>,
    final_read: Option<(&'a Operation, &'a [Value])>,
}

fn bad(line: usize, message: String) -> CheckError {
    CheckError::BadValue { line, message }
}

fn line_of(history: &History, index: Option<usize>) -> usize {
    index.and_then(|i| history.ops.get(i)).map_or(0, |o| o.line)
}

/// The elements of a sibling collection (`nil` = none).
fn collection(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Vector(s) | Value::Set(s) => Some(s),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// Runs the checker over paired operations.
pub fn check(ops: &[Operation], history: &History) -> Result<SiblingReport, CheckError> {
    let mut index: HashMap<&Value, usize> = HashMap::new();
    let mut keys: Vec<(&Value, KeyOps)> = Vec::new();
    for op in ops {
        let invoke_line = || line_of(history, Some(op.invoke));
        let (key, write, read) = match op.f {
            Function::Write => match &op.value {
                Value::Vector(t) if t.len() == 3 => {
                    let covered = collection(&t[2]).ok_or_else(|| {
                        bad(
                            invoke_line(),
                            format!("covered values must be a vector, got {}", t[2]),
                        )
                    })?;
                    let write = Write {
                        id: op.id,
                        value: &t[1],
                        covered,
                        outcome: op.outcome,
                    };
                    (&t[0], Some(write), None)
                }
                other => {
                    return Err(bad(
                        invoke_line(),
                        format!("sibling writes must be [key value covered], got {other}"),
                    ))
                }
            },
            Function::Read | Function::FinalRead => {
                let key = match history.ops.get(op.invoke).map(|o| &o.value) {
                    Some(Value::Vector(t)) if t.len() == 2 => &t[0],
                    other => {
                        return Err(bad(
                            invoke_line(),
                            format!(
                                "sibling reads must be invoked with [key nil], got {}",
                                other.unwrap_or(&Value::Nil)
                            ),
                        ))
                    }
                };
                if op.outcome != Outcome::Ok {
                    continue;
                }
                let siblings = match &op.value {
                    Value::Vector(t) if t.len() == 2 && t[0] == *key => collection(&t[1]),
                    _ => None,
                };
                let siblings = siblings.ok_or_else(|| {
                    bad(
                        line_of(history, op.complete),
                        format!(
                            "read of key {key} must return [{key} [v ...]], got {}",
                            op.value
                        ),
                    )
                })?;
                (key, None, Some(siblings))
            }
            ref f => {
                return Err(CheckError::UnsupportedFunction {
                    line: invoke_line(),
                    model: ModelKind::SiblingRegister,
                    f: f.clone(),
                })
            }
        };
        let slot = *index.entry(key).or_insert_with(|| {
            keys.push((key, KeyOps::default()));
            keys.len() - 1
        });
        let k = &mut keys[slot].1;
        if let Some(w) = write {
            k.writes.push(w);
        }
        if let (Some(siblings), Function::FinalRead) = (read, &op.f) {
            // The last final read to complete decides.
            if k.final_read.is_none_or(|(f, _)| op.complete > f.complete) {
                k.final_read = Some((op, siblings));
            }
        }
    }
    // Stable sort of first-seen order: deterministic even for keys that
    // print alike.
    keys.sort_by(|a, b| a.0.report_cmp(b.0));
    let keys: Vec<SiblingKeyReport> = keys.iter().map(|(key, k)| judge(key, k)).collect();
    let unknown = keys
        .iter()
        .filter(|k| k.verdict == Verdict::Unknown)
        .count();
    let verdict = if keys.iter().any(|k| k.verdict == Verdict::Invalid) {
        Verdict::Invalid
    } else if unknown > 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    Ok(SiblingReport {
        verdict,
        message: (unknown > 0)
            .then(|| format!("{unknown} key(s) with acknowledged writes have no ok :final-read")),
        keys,
    })
}

/// What is known about one written value.
#[derive(Default)]
struct Written {
    /// Its writes' operation ids, in history order.
    writes: Vec<usize>,
    /// Some write completed ok.
    acked: bool,
    /// Some write completed ok or info (may have executed).
    maybe: bool,
}

/// Judges one key against its final read.
fn judge(key: &Value, k: &KeyOps) -> SiblingKeyReport {
    let mut order: Vec<&Value> = Vec::new();
    let mut written: HashMap<&Value, Written> = HashMap::new();
    let mut covered_by_ok: HashMap<&Value, Vec<usize>> = HashMap::new();
    let mut covered: HashSet<&Value> = HashSet::new();
    for w in &k.writes {
        let e = written.entry(w.value).or_insert_with(|| {
            order.push(w.value);
            Written::default()
        });
        e.writes.push(w.id);
        e.acked |= w.outcome == Outcome::Ok;
        e.maybe |= w.outcome != Outcome::Fail;
        // A failed write executed nowhere, so its context covers nothing.
        if w.outcome != Outcome::Fail {
            for c in w.covered {
                covered.insert(c);
                if w.outcome == Outcome::Ok {
                    covered_by_ok.entry(c).or_default().push(w.id);
                }
            }
        }
    }
    let acknowledged_count = written.values().filter(|w| w.acked).count();
    let mut report = SiblingKeyReport {
        key: key.clone(),
        verdict: Verdict::Valid,
        final_read: k.final_read.map(|(op, _)| op.id),
        attempt_count: written.len(),
        acknowledged_count,
        present_count: 0,
        covered_count: covered.len(),
        lost: Vec::new(),
        resurrected: Vec::new(),
        unexpected: Vec::new(),
        failed_but_present: Vec::new(),
        recovered: Vec::new(),
    };
    let Some((_, siblings)) = k.final_read else {
        if acknowledged_count > 0 {
            report.verdict = Verdict::Unknown;
        }
        return report;
    };
    let mut present: HashSet<&Value> = HashSet::new();
    let finding = |v: &Value, covered_by: Vec<usize>| SiblingFinding {
        value: v.clone(),
        writes: written.get(v).map_or_else(Vec::new, |w| w.writes.clone()),
        covered_by,
    };
    for v in siblings {
        if !present.insert(v) {
            continue;
        }
        match written.get(v) {
            None => report.unexpected.push(finding(v, Vec::new())),
            Some(w) if !w.maybe => report.failed_but_present.push(finding(v, Vec::new())),
            Some(w) if !w.acked => report.recovered.push(finding(v, Vec::new())),
            Some(_) => {}
        }
        if let Some(by) = covered_by_ok.get(v) {
            report.resurrected.push(finding(v, by.clone()));
        }
    }
    report.present_count = present.len();
    for v in order {
        if written.get(v).is_some_and(|w| w.acked) && !present.contains(v) && !covered.contains(v) {
            report.lost.push(finding(v, Vec::new()));
        }
    }
    for list in [
        &mut report.lost,
        &mut report.resurrected,
        &mut report.unexpected,
        &mut report.failed_but_present,
        &mut report.recovered,
    ] {
        list.sort_by(|a, b| a.value.report_cmp(&b.value));
    }
    let bad = !(report.lost.is_empty()
        && report.resurrected.is_empty()
        && report.unexpected.is_empty()
        && report.failed_but_present.is_empty());
    if bad {
        report.verdict = Verdict::Invalid;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;

    fn run(src: &str) -> SiblingReport {
        let h = edn::parse_history(src).expect("parse");
        check(&h.operations().expect("pair"), &h).expect("check")
    }

    /// A write of `v` to `key` covering `covered`, invoked and completed
    /// back to back by process `p` with outcome `end`.
    fn write(p: i64, key: &str, v: i64, covered: &str, end: &str) -> String {
        format!(
            "{{:process {p} :type :invoke :f :write :value [:{key} {v} [{covered}]]}}\n\
             {{:process {p} :type :{end} :f :write :value [:{key} {v} [{covered}]]}}\n"
        )
    }

    /// A read (`f` = read or final-read) of `key` returning `seen`.
    fn read(p: i64, f: &str, key: &str, seen: &str) -> String {
        format!(
            "{{:process {p} :type :invoke :f :{f} :value [:{key} nil]}}\n\
             {{:process {p} :type :ok :f :{f} :value [:{key} [{seen}]]}}\n"
        )
    }

    fn values(list: &[SiblingFinding]) -> Vec<Value> {
        list.iter().map(|f| f.value.clone()).collect()
    }

    fn ints(v: &[i64]) -> Vec<Value> {
        v.iter().map(|&i| Value::Int(i)).collect()
    }

    /// Goal: a write that covers the previous value replaces it; the
    /// history is valid and the counts say what happened.
    #[test]
    fn overwrite_chain_is_valid() {
        let r = run(&[
            write(0, "x", 1, "", "ok"),
            write(0, "x", 2, "1", "ok"),
            read(1, "final-read", "x", "2"),
        ]
        .concat());
        assert_eq!(r.verdict, Verdict::Valid);
        let k = &r.keys[0];
        assert_eq!(k.key, Value::kw("x"));
        assert_eq!(k.final_read, Some(2));
        assert_eq!(
            (
                k.attempt_count,
                k.acknowledged_count,
                k.present_count,
                k.covered_count
            ),
            (2, 2, 1, 1)
        );
    }

    /// Goal: two concurrent blind writes both survive as siblings (valid);
    /// a final read keeping only one of them has lost the other.
    #[test]
    fn concurrent_writes_are_siblings() {
        let writes = "{:process 0 :type :invoke :f :write :value [:x 1 []]}\n\
                      {:process 1 :type :invoke :f :write :value [:x 2 []]}\n\
                      {:process 0 :type :ok :f :write :value [:x 1 []]}\n\
                      {:process 1 :type :ok :f :write :value [:x 2 []]}\n";
        let r = run(&format!("{writes}{}", read(2, "final-read", "x", "2 1")));
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!(r.keys[0].present_count, 2);
        let r = run(&format!("{writes}{}", read(2, "final-read", "x", "2")));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(
            r.keys[0].lost,
            vec![SiblingFinding {
                value: Value::Int(1),
                writes: vec![0],
                covered_by: vec![],
            }]
        );
    }

    /// Goal: an indeterminate write covering an acknowledged value may
    /// have replaced it, so the value's absence is not a loss; the info
    /// write's value showing up is `recovered`, not judged.
    #[test]
    fn info_overwrite_is_not_lost() {
        for seen in ["2", ""] {
            let r = run(&[
                write(0, "x", 1, "", "ok"),
                write(1, "x", 2, "1", "info"),
                read(2, "final-read", "x", seen),
            ]
            .concat());
            assert_eq!(r.verdict, Verdict::Valid, "{seen}: {r:?}");
            assert!(r.keys[0].lost.is_empty());
            assert_eq!(
                values(&r.keys[0].recovered),
                ints(if seen.is_empty() { &[] } else { &[2] })
            );
        }
    }

    /// Goal: each judged finding kind is found, with the operations
    /// involved: lost (a failed write's context excuses nothing),
    /// resurrected (with the covering write), unexpected, and
    /// failed_but_present.
    #[test]
    fn finds_each_kind() {
        let r = run(&[
            write(0, "x", 1, "", "ok"),    // op 0: lost
            write(0, "x", 2, "1", "fail"), // op 1: covers 1, but failed
            write(0, "x", 3, "", "ok"),    // op 2: resurrected
            write(0, "x", 4, "3", "ok"),   // op 3: covers 3
            write(0, "x", 5, "", "fail"),  // op 4: failed but present
            read(1, "final-read", "x", "4 3 9 5 3"),
        ]
        .concat());
        assert_eq!(r.verdict, Verdict::Invalid);
        let k = &r.keys[0];
        assert_eq!(k.verdict, Verdict::Invalid);
        assert_eq!(values(&k.lost), ints(&[1]));
        assert_eq!(k.lost[0].writes, vec![0]);
        assert_eq!(values(&k.resurrected), ints(&[3]));
        assert_eq!(
            (
                k.resurrected[0].writes.clone(),
                k.resurrected[0].covered_by.clone()
            ),
            (vec![2], vec![3])
        );
        assert_eq!(values(&k.unexpected), ints(&[9]));
        assert!(k.unexpected[0].writes.is_empty());
        assert_eq!(values(&k.failed_but_present), ints(&[5]));
        assert_eq!(k.failed_but_present[0].writes, vec![4]);
        assert_eq!(k.present_count, 4, "duplicates count once");
        assert_eq!(k.covered_count, 1, "a failed write covers nothing");
    }

    /// Goal: keys are judged independently and listed in sorted order: a
    /// lost value on one key, a valid key, and a key with an acknowledged
    /// write but only a plain read (no final read) which is unknown; the
    /// invalid key decides the verdict, and without it the verdict is
    /// unknown.
    #[test]
    fn keys_are_independent() {
        let y = [write(1, "y", 1, "", "ok"), read(1, "final-read", "y", "1")].concat();
        let z = [write(2, "z", 1, "", "ok"), read(2, "read", "z", "1")].concat();
        let x = [write(0, "x", 1, "", "ok"), read(0, "final-read", "x", "")].concat();
        let r = run(&[z.clone(), y.clone(), x].concat());
        assert_eq!(r.verdict, Verdict::Invalid);
        let verdicts: Vec<(String, Verdict)> = r
            .keys
            .iter()
            .map(|k| (k.key.to_string(), k.verdict))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                (":x".into(), Verdict::Invalid),
                (":y".into(), Verdict::Valid),
                (":z".into(), Verdict::Unknown),
            ]
        );
        let r = run(&[z, y].concat());
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.message.unwrap_or_default().contains("1 key"));
    }

    /// Goal: the last ok final read decides, even when an earlier one
    /// missed a value or a failed one follows it.
    #[test]
    fn last_final_read_decides() {
        let r = run(&[
            write(0, "x", 1, "", "ok"),
            read(1, "final-read", "x", ""),
            read(1, "final-read", "x", "1"),
            "{:process 1 :type :invoke :f :final-read :value [:x nil]}\n\
             {:process 1 :type :fail :f :final-read :value [:x nil]}\n"
                .to_string(),
        ]
        .concat());
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!(r.keys[0].final_read, Some(2));
    }

    /// Goal: a report is identical across runs, whatever the hash order:
    /// keys and findings are sorted (integers numerically).
    #[test]
    fn reports_are_deterministic() {
        let mut src = String::new();
        for k in [10, 2, 33, 1] {
            src += &format!(
                "{{:process 0 :type :invoke :f :write :value [{k} {k} []]}}\n\
                 {{:process 0 :type :ok :f :write :value [{k} {k} []]}}\n\
                 {{:process 0 :type :invoke :f :final-read :value [{k} nil]}}\n\
                 {{:process 0 :type :ok :f :final-read :value [{k} [7 12 8]]}}\n"
            );
        }
        let first = serde_json::to_string(&run(&src)).expect("json");
        for _ in 0..5 {
            assert_eq!(serde_json::to_string(&run(&src)).expect("json"), first);
        }
        let r = run(&src);
        let keys: Vec<Value> = r.keys.iter().map(|k| k.key.clone()).collect();
        assert_eq!(keys, ints(&[1, 2, 10, 33]));
        assert_eq!(values(&r.keys[0].unexpected), ints(&[7, 8, 12]));
    }

    /// Goal: malformed values and foreign functions are errors naming the
    /// line, not panics or silent passes.
    #[test]
    fn bad_shapes_are_errors() {
        let cases = [
            ("{:process 0 :type :invoke :f :write :value [:x 1]}\n", 1),
            ("{:process 0 :type :invoke :f :write :value [:x 1 2]}\n", 1),
            ("{:process 0 :type :invoke :f :read :value :x}\n", 1),
            (
                "{:process 0 :type :invoke :f :read :value [:x nil]}\n\
                 {:process 0 :type :ok :f :read :value [:y [1]]}\n",
                2,
            ),
            (
                "{:process 0 :type :invoke :f :final-read :value [:x nil]}\n\
                 {:process 0 :type :ok :f :final-read :value [:x 1]}\n",
                2,
            ),
            ("{:process 0 :type :invoke :f :cas :value [:x [1 2]]}\n", 1),
        ];
        for (src, line) in cases {
            let h = edn::parse_history(src).expect("parse");
            let err = check(&h.operations().expect("pair"), &h).expect_err(src);
            let got = match err {
                CheckError::BadValue { line, .. }
                | CheckError::UnsupportedFunction { line, .. } => line,
                other => panic!("{src}: {other}"),
            };
            assert_eq!(got, line, "{src}");
        }
    }

    /// Goal: a history recorded in code goes straight into `check` with
    /// the sibling-register model: verdict, keys and unknown keys are in
    /// the result, and the text report names the finding.
    #[test]
    fn recorded_history_through_check() {
        use crate::history::OpType;
        use crate::recorder::Recorder;
        let mut rec = Recorder::new();
        let kv = |k: &str, v: Value, c: Vec<Value>| {
            Value::Vector(vec![Value::kw(k), v, Value::Vector(c)])
        };
        let w = rec.invoke(0, Function::Write, kv("x", Value::Int(1), vec![]), 1);
        rec.complete(w, OpType::Ok, kv("x", Value::Int(1), vec![]), 2)
            .expect("ok");
        let w = rec.invoke(0, Function::Write, kv("y", Value::Int(1), vec![]), 3);
        rec.complete(w, OpType::Ok, kv("y", Value::Int(1), vec![]), 4)
            .expect("ok");
        let key_nil = Value::Vector(vec![Value::kw("x"), Value::Nil]);
        let fr = rec.invoke(1, Function::FinalRead, key_nil, 5);
        let seen = Value::Vector(vec![Value::kw("x"), Value::Vector(vec![])]);
        rec.complete(fr, OpType::Ok, seen, 6).expect("ok");
        let result = crate::check(
            rec.history(),
            &crate::CheckOptions::new(ModelKind::SiblingRegister),
        )
        .expect("check");
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.keys, 2);
        assert_eq!(result.unknown_keys, vec![Value::kw("y")]);
        let text = crate::report::render_text("sim", &result);
        assert!(text.contains("key :x (final read op 2):"), "{text}");
        assert!(text.contains("lost: 1 (write op 0)"), "{text}");
    }
}
