//! Building histories in code, for in-process workloads such as a
//! deterministic simulator: record each invocation and completion as it
//! happens, hand the [`History`] straight to [`crate::check()`] (no text
//! round trip), and write the same history as Jepsen EDN to keep, or to
//! replay with the command line.
//!
//! The recorder only appends entries. Pairing invocations with completions
//! stays in [`History::operations`], the one place parsed and recorded
//! histories both go through, so process discipline (one open invocation
//! per process) is checked there, when the history is checked. Each
//! entry's `line` is the line it has in [`Recorder::to_edn`]'s output, so
//! errors and reports point into that file, and parsing that output gives
//! back an identical [`History`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::history::{Function, History, Op, OpType, Process};
use crate::value::Value;

/// Misuse of a [`Recorder`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecorderError {
    /// `complete` named an entry that is not an invocation awaiting its
    /// completion (out of range, a completion, or already completed).
    #[error("entry {0} is not an invocation awaiting its completion")]
    NotOpen(usize),
    /// `complete` was given [`OpType::Invoke`].
    #[error("entry {0} cannot be completed by another invocation")]
    InvokeAsCompletion(usize),
    /// `annotate` named an entry that does not exist.
    #[error("no entry {0}")]
    NoEntry(usize),
    /// `annotate` used a field every entry already has, or a name that is
    /// not a plain EDN keyword.
    #[error("cannot annotate with field {0:?}: reserved or not a plain keyword")]
    BadField(String),
}

/// Fields every entry defines itself (`:index` is what Jepsen numbers
/// entries with; an annotation of that name would mislead readers).
const RESERVED: [&str; 6] = ["type", "f", "value", "process", "time", "index"];

/// A history under construction. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// The entries so far, in the order they were recorded.
    history: History,
    /// Invocations not completed yet, so a completion cannot be recorded
    /// twice (which would silently pair with a later invocation).
    open: HashSet<usize>,
    /// Extra fields per entry (`:node "n1"`), for `to_edn` only: the
    /// checkers ignore them, as the parsers ignore unknown keys.
    extra: BTreeMap<usize, Vec<(Value, Value)>>,
}

impl Recorder {
    /// An empty history.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn push(&mut self, process: Process, kind: OpType, f: Function, value: Value, time_ns: i64) {
        let line = self.history.ops.len() + 1;
        self.history.ops.push(Op {
            process,
            kind,
            f,
            value,
            time: Some(time_ns),
            line,
        });
    }

    /// Records that `process` invokes `f` with `value` at `time_ns`
    /// (nanoseconds since the test started: Jepsen's `:time`). Returns the
    /// entry's index, the handle to pass to [`Recorder::complete`].
    /// `Process::Nemesis` entries are recorded too, and ignored by the
    /// checkers.
    pub fn invoke(
        &mut self,
        process: impl Into<Process>,
        f: Function,
        value: Value,
        time_ns: i64,
    ) -> usize {
        let index = self.history.ops.len();
        self.push(process.into(), OpType::Invoke, f, value, time_ns);
        self.open.insert(index);
        index
    }

    /// Records the completion (`Ok`, `Fail` or `Info`) of the invocation
    /// at `invoke`, by the same process with the same `f`. Returns the
    /// completion's entry index. An invocation never completed counts as
    /// `info`, as in Jepsen.
    pub fn complete(
        &mut self,
        invoke: usize,
        kind: OpType,
        value: Value,
        time_ns: i64,
    ) -> Result<usize, RecorderError> {
        if kind == OpType::Invoke {
            return Err(RecorderError::InvokeAsCompletion(invoke));
        }
        if !self.open.remove(&invoke) {
            return Err(RecorderError::NotOpen(invoke));
        }
        let inv = &self.history.ops[invoke];
        let (process, f) = (inv.process.clone(), inv.f.clone());
        self.push(process, kind, f, value, time_ns);
        Ok(self.history.ops.len() - 1)
    }

    /// Adds `:field value` (e.g. `:node "n1"`) to entry `index`, for
    /// [`Recorder::to_edn`]; checkers ignore it. `field` must be a plain
    /// keyword name (letters, digits, `-_.?!*+<>=/`, not starting with a
    /// digit) other than the entry's own fields.
    pub fn annotate(
        &mut self,
        index: usize,
        field: &str,
        value: Value,
    ) -> Result<(), RecorderError> {
        if index >= self.history.ops.len() {
            return Err(RecorderError::NoEntry(index));
        }
        let plain = field
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.?!*+<>=/".contains(c));
        if !plain || RESERVED.contains(&field) {
            return Err(RecorderError::BadField(field.to_string()));
        }
        self.extra
            .entry(index)
            .or_default()
            .push((Value::kw(field), value));
        Ok(())
    }

    /// Records a lone `:info` entry of `process` that opens nothing and
    /// completes nothing: Jepsen writes nemesis operations this way (both
    /// the start and the end of a fault are `:info`). Returns its index.
    /// Only meant for `Process::Nemesis`: a client process's lone `:info`
    /// breaks the pairing, which reports it when the history is checked.
    pub fn info(
        &mut self,
        process: impl Into<Process>,
        f: Function,
        value: Value,
        time_ns: i64,
    ) -> usize {
        let index = self.history.ops.len();
        self.push(process.into(), OpType::Info, f, value, time_ns);
        index
    }

    /// Entry `index` as one line of [`Recorder::to_edn`] (without the
    /// newline), annotations included; `None` if there is no such entry.
    /// Lets a caller stream the history as it is recorded.
    pub fn entry_edn(&self, index: usize) -> Option<String> {
        let op = self.history.ops.get(index)?;
        let mut entry = op.to_value();
        if let (Value::Map(fields), Some(extra)) = (&mut entry, self.extra.get(&index)) {
            fields.extend(extra.iter().cloned());
        }
        Some(entry.to_string())
    }

    /// The history so far, ready for [`crate::check()`].
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The history, consuming the recorder.
    pub fn into_history(self) -> History {
        self.history
    }

    /// The history as Jepsen EDN, one entry per line (Jepsen's key order,
    /// then the annotations). [`crate::edn::parse_history`] reads it back
    /// as a history equal to [`Recorder::history`], lines included.
    pub fn to_edn(&self) -> String {
        let mut out = String::new();
        for i in 0..self.history.ops.len() {
            if let Some(line) = self.entry_edn(i) {
                // Writing to a String cannot fail.
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;
    use proptest::prelude::*;

    /// Goal: a recorded history pairs as the parser's would, misuse is an
    /// error rather than a panic or a silently wrong pairing, and the EDN
    /// carries annotations that the parser ignores.
    #[test]
    fn records_pairs_and_rejects_misuse() {
        let mut r = Recorder::new();
        let w = r.invoke(0, Function::Write, Value::Int(1), 10);
        let rd = r.invoke(1, Function::Read, Value::Nil, 11);
        r.annotate(w, "node", Value::Str("n1".into()))
            .expect("annotate");
        let done = r.complete(w, OpType::Ok, Value::Int(1), 12).expect("ok");
        r.complete(rd, OpType::Ok, Value::Int(1), 13).expect("ok");
        assert_eq!(done, 2);
        assert_eq!(
            r.complete(w, OpType::Ok, Value::Nil, 14),
            Err(RecorderError::NotOpen(w))
        );
        assert_eq!(
            r.complete(done, OpType::Ok, Value::Nil, 14),
            Err(RecorderError::NotOpen(done))
        );
        assert_eq!(
            r.complete(99, OpType::Ok, Value::Nil, 14),
            Err(RecorderError::NotOpen(99))
        );
        let open = r.invoke(2, Function::Read, Value::Nil, 15);
        assert_eq!(
            r.complete(open, OpType::Invoke, Value::Nil, 16),
            Err(RecorderError::InvokeAsCompletion(open))
        );
        for bad in ["value", "time", "", "1x", "a b", "x}"] {
            assert!(r.annotate(0, bad, Value::Nil).is_err(), "{bad:?}");
        }
        assert_eq!(
            r.annotate(9, "node", Value::Nil),
            Err(RecorderError::NoEntry(9))
        );

        let ops = r.history().operations().expect("pair");
        assert_eq!(ops.len(), 3);
        assert_eq!(
            (ops[1].outcome, &ops[1].value),
            (crate::history::Outcome::Ok, &Value::Int(1))
        );
        let edn = r.to_edn();
        assert!(
            edn.starts_with(
                "{:type :invoke, :f :write, :value 1, :process 0, :time 10, :node \"n1\"}\n"
            ),
            "{edn}"
        );
        assert_eq!(&edn::parse_history(&edn).expect("parse"), r.history());
    }

    /// Goal: a second invocation by a process whose invocation is open is
    /// reported by the pairing, at the line it has in the EDN output.
    #[test]
    fn discipline_errors_name_edn_lines() {
        let mut r = Recorder::new();
        r.invoke(0, Function::Read, Value::Nil, 1);
        r.invoke(0, Function::Read, Value::Nil, 2);
        let err = r.history().operations().expect_err("double invoke");
        assert_eq!(err.line(), 2);
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-1000i32..1000).prop_map(|i| Value::Float(f64::from(i) / 4.0)),
            "[ -~é\n\t]{0,8}".prop_map(Value::Str),
            "[a-z][a-z0-9-]{0,6}".prop_map(Value::Keyword),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Vector),
                prop::collection::vec(inner, 0..4).prop_map(Value::Set),
            ]
        })
    }

    /// One recording step: invoke on a process, complete an open
    /// invocation, or annotate an entry (indices are taken modulo what
    /// exists).
    #[derive(Debug, Clone)]
    enum Step {
        Invoke(i64, usize, Value),
        Complete(usize, usize, Value),
        Annotate(usize, Value),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0i64..4, 0usize..5, value()).prop_map(|(p, f, v)| Step::Invoke(p, f, v)),
            (0usize..8, 0usize..3, value()).prop_map(|(i, k, v)| Step::Complete(i, k, v)),
            (0usize..8, value()).prop_map(|(i, v)| Step::Annotate(i, v)),
        ]
    }

    proptest! {
        /// Goal: whatever is recorded, `to_edn` parses back to exactly the
        /// recorded history (entries, values, times and lines), and pairs
        /// to the same operations.
        #[test]
        fn edn_round_trip(steps in prop::collection::vec(step(), 0..40)) {
            let fs = [Function::Read, Function::Write, Function::FinalRead, Function::Add,
                      Function::Other("start".into())];
            let kinds = [OpType::Ok, OpType::Fail, OpType::Info];
            let mut r = Recorder::new();
            let mut open: Vec<usize> = Vec::new();
            let mut busy: HashSet<i64> = HashSet::new();
            for (t, s) in steps.into_iter().enumerate() {
                let t = t as i64 * 7;
                match s {
                    Step::Invoke(p, f, v) if busy.insert(p) => {
                        open.push(r.invoke(p, fs[f].clone(), v, t));
                    }
                    Step::Invoke(..) => {}
                    Step::Complete(i, k, v) if !open.is_empty() => {
                        let inv = open.remove(i % open.len());
                        if let Process::Client(p) = r.history().ops[inv].process {
                            busy.remove(&p);
                        }
                        r.complete(inv, kinds[k], v, t).expect("open invocation");
                    }
                    Step::Complete(..) => {}
                    Step::Annotate(i, v) => {
                        let n = r.history().ops.len();
                        if n > 0 {
                            r.annotate(i % n, "node", v).expect("annotate");
                        }
                    }
                }
            }
            let back = edn::parse_history(&r.to_edn()).expect("parse");
            prop_assert_eq!(&back, r.history());
            prop_assert_eq!(back.operations().expect("pair"), r.history().operations().expect("pair"));
        }
    }
}
