//! The Jepsen history model: raw entries ([`Op`]) and the paired
//! invocation/completion view ([`Operation`]) that the checkers consume.
//!
//! Semantics follow Jepsen exactly: an `invoke` is completed by the next
//! `ok`/`fail`/`info` of the same process; `fail` means the operation did
//! not take effect; `info` (or no completion at all) means it may or may not
//! have taken effect at any point after its invocation, and the process
//! never returns. A read's value is the one its `ok` completion carries; a
//! write's, cas's or add's value is the one its invocation carries.
//! Entries of the `:nemesis` process are not client operations.

use std::collections::HashMap;
use std::fmt;

use crate::value::Value;

/// Errors turning parsed entries into a history.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    /// An entry that is not a map.
    #[error("line {line}: history entry is not a map")]
    NotAMap {
        /// Line of the entry.
        line: usize,
    },
    /// A required key is absent.
    #[error("line {line}: entry has no {field}")]
    MissingField {
        /// Line of the entry.
        line: usize,
        /// The missing key.
        field: &'static str,
    },
    /// A key holds a value of the wrong shape.
    #[error("line {line}: bad {field}: {found}")]
    BadField {
        /// Line of the entry.
        line: usize,
        /// The key.
        field: &'static str,
        /// What was found instead.
        found: String,
    },
    /// A process invoked while its previous invocation was still open.
    #[error("line {line}: process {process} invokes again while its invocation on line {open_line} is still open")]
    DoubleInvoke {
        /// Line of the second invocation.
        line: usize,
        /// The process.
        process: Process,
        /// Line of the open invocation.
        open_line: usize,
    },
    /// A completion with no open invocation for its process.
    #[error("line {line}: {kind} completion for process {process} which has no open invocation")]
    CompletionWithoutInvoke {
        /// Line of the completion.
        line: usize,
        /// The process.
        process: Process,
        /// The completion type.
        kind: OpType,
    },
    /// A completion whose function differs from its invocation's.
    #[error("line {line}: completion :f {got} does not match the invocation's :f {expected} (line {invoke_line})")]
    FunctionMismatch {
        /// Line of the completion.
        line: usize,
        /// Line of the invocation.
        invoke_line: usize,
        /// The invocation's function.
        expected: Function,
        /// The completion's function.
        got: Function,
    },
}

impl HistoryError {
    /// The 1-based line the error refers to.
    pub fn line(&self) -> usize {
        match self {
            HistoryError::NotAMap { line }
            | HistoryError::MissingField { line, .. }
            | HistoryError::BadField { line, .. }
            | HistoryError::DoubleInvoke { line, .. }
            | HistoryError::CompletionWithoutInvoke { line, .. }
            | HistoryError::FunctionMismatch { line, .. } => *line,
        }
    }
}

/// The `:type` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation starts.
    Invoke,
    /// It completed and took effect.
    Ok,
    /// It completed and did not take effect.
    Fail,
    /// Indeterminate: it may or may not have taken effect.
    Info,
}

impl OpType {
    /// Jepsen's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }

    fn parse(name: &str) -> Option<OpType> {
        Some(match name {
            "invoke" => OpType::Invoke,
            "ok" => OpType::Ok,
            "fail" => OpType::Fail,
            "info" => OpType::Info,
            _ => return None,
        })
    }
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `:process` of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    /// A numbered client process.
    Client(i64),
    /// The `:nemesis` (fault injector); its entries are not client ops.
    Nemesis,
    /// Any other named process, treated as a client.
    Named(String),
}

impl Process {
    /// True for client processes (everything except the nemesis).
    pub fn is_client(&self) -> bool {
        !matches!(self, Process::Nemesis)
    }

    /// The EDN value of the process.
    pub fn to_value(&self) -> Value {
        match self {
            Process::Client(i) => Value::Int(*i),
            Process::Nemesis => Value::kw("nemesis"),
            Process::Named(s) => Value::Keyword(s.clone()),
        }
    }
}

impl From<i64> for Process {
    fn from(p: i64) -> Process {
        Process::Client(p)
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(i) => write!(f, "{i}"),
            Process::Nemesis => f.write_str(":nemesis"),
            Process::Named(s) => write!(f, ":{s}"),
        }
    }
}

impl serde::Serialize for Process {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(i) => s.serialize_i64(*i),
            Process::Nemesis => s.serialize_str("nemesis"),
            Process::Named(n) => s.serialize_str(n),
        }
    }
}

/// The `:f` of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Function {
    /// `:read` (registers, sets, counters).
    Read,
    /// `:write` (registers).
    Write,
    /// `:cas` with value `[old new]` (cas registers).
    Cas,
    /// `:add` (sets, counters).
    Add,
    /// `:final-read`: a read done after every fault has healed and the
    /// replicas have converged. Set and sibling-register checkers judge
    /// against the last successful one; otherwise it is a read.
    FinalRead,
    /// Anything else, e.g. nemesis functions like `:start`.
    Other(String),
}

impl Function {
    /// Jepsen's name for the function.
    pub fn name(&self) -> &str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Add => "add",
            Function::FinalRead => "final-read",
            Function::Other(s) => s,
        }
    }

    fn parse(name: &str) -> Function {
        match name {
            "read" => Function::Read,
            "write" => Function::Write,
            "cas" => Function::Cas,
            "add" => Function::Add,
            "final-read" => Function::FinalRead,
            other => Function::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Function {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One raw history entry (one map of `history.edn`).
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// Which process performed it.
    pub process: Process,
    /// invoke / ok / fail / info.
    pub kind: OpType,
    /// The function.
    pub f: Function,
    /// The value as written in this entry.
    pub value: Value,
    /// `:time` (nanoseconds since the test started), if present.
    pub time: Option<i64>,
    /// Source line (1-based); 0 for entries built with [`Op::new`]. A
    /// [`crate::recorder::Recorder`] sets the line the entry has in its
    /// EDN output, so errors and reports point into that file.
    pub line: usize,
}

impl Op {
    /// Builds an entry in code (line 0).
    pub fn new(process: i64, kind: OpType, f: Function, value: Value) -> Op {
        Op {
            process: Process::Client(process),
            kind,
            f,
            value,
            time: None,
            line: 0,
        }
    }

    /// Reads an entry from its EDN/JSON map. Keys may be keywords (EDN) or
    /// strings (JSON); unknown keys such as `:index` are ignored.
    pub fn from_value(v: &Value, line: usize) -> Result<Op, HistoryError> {
        let Value::Map(pairs) = v else {
            return Err(HistoryError::NotAMap { line });
        };
        let mut b = OpBuilder::default();
        for (k, val) in pairs {
            if matches!(k, Value::Symbol(_)) {
                continue;
            }
            if let Some(name) = k.as_name() {
                b.set(name, val, line)?;
            }
        }
        b.finish(line)
    }
    /// The entry as an EDN map, in Jepsen's key order, with `:index`.
    pub fn to_value_indexed(&self, index: usize) -> Value {
        let mut m = vec![
            (Value::kw("type"), Value::kw(self.kind.name())),
            (Value::kw("f"), Value::kw(self.f.name())),
            (Value::kw("value"), self.value.clone()),
            (Value::kw("process"), self.process.to_value()),
        ];
        if let Some(t) = self.time {
            m.push((Value::kw("time"), Value::Int(t)));
        }
        m.push((Value::kw("index"), Value::Int(index as i64)));
        Value::Map(m)
    }

    /// The entry as an EDN map without `:index`.
    pub fn to_value(&self) -> Value {
        let mut v = self.to_value_indexed(0);
        if let Value::Map(m) = &mut v {
            m.pop();
        }
        v
    }
}

/// Collects an entry's fields while it is being read, then validates them.
/// Shared by the generic map path and the EDN reader's fast path (which
/// hands over keyword names and integers without building values).
#[derive(Debug, Default)]
pub(crate) struct OpBuilder {
    process: Option<Process>,
    kind: Option<OpType>,
    f: Option<Function>,
    value: Option<Value>,
    time: Option<i64>,
}

impl OpBuilder {
    /// Sets the field `name` from a value (unknown names are ignored).
    pub(crate) fn set(&mut self, name: &str, v: &Value, line: usize) -> Result<(), HistoryError> {
        match name {
            "process" => match v {
                Value::Int(i) => self.process = Some(Process::Client(*i)),
                other => match other.as_name() {
                    Some(n) => self.set_name("process", n, line)?,
                    None => return Err(bad(line, ":process", other)),
                },
            },
            "type" | "f" => match v.as_name() {
                Some(n) => self.set_name(name, n, line)?,
                None => return Err(bad(line, if name == "f" { ":f" } else { ":type" }, v)),
            },
            "value" => self.value = Some(v.clone()),
            "time" => match v {
                Value::Nil => self.time = None,
                Value::Int(t) => self.time = Some(*t),
                Value::Float(t) if t.is_finite() => self.time = Some(*t as i64),
                other => return Err(bad(line, ":time", other)),
            },
            _ => {}
        }
        Ok(())
    }

    /// Sets `process`, `type` or `f` from a keyword/string name.
    pub(crate) fn set_name(
        &mut self,
        field: &str,
        n: &str,
        line: usize,
    ) -> Result<(), HistoryError> {
        match field {
            "process" => {
                self.process = Some(if n == "nemesis" {
                    Process::Nemesis
                } else {
                    Process::Named(n.to_string())
                })
            }
            "type" => {
                self.kind = Some(OpType::parse(n).ok_or_else(|| HistoryError::BadField {
                    line,
                    field: ":type",
                    found: format!(":{n}"),
                })?)
            }
            "f" => self.f = Some(Function::parse(n)),
            _ => {}
        }
        Ok(())
    }

    /// Sets the process from an integer.
    pub(crate) fn set_process_int(&mut self, p: i64) {
        self.process = Some(Process::Client(p));
    }

    /// Sets the time from an integer.
    pub(crate) fn set_time(&mut self, t: i64) {
        self.time = Some(t);
    }

    /// Sets the value.
    pub(crate) fn set_value(&mut self, v: Value) {
        self.value = Some(v);
    }

    /// Validates and builds the entry.
    pub(crate) fn finish(self, line: usize) -> Result<Op, HistoryError> {
        let process = self.process.ok_or(HistoryError::MissingField {
            line,
            field: ":process",
        })?;
        let kind = self.kind.ok_or(HistoryError::MissingField {
            line,
            field: ":type",
        })?;
        let f = match self.f {
            Some(f) => f,
            None if process == Process::Nemesis => Function::Other(String::new()),
            None => return Err(HistoryError::MissingField { line, field: ":f" }),
        };
        Ok(Op {
            process,
            kind,
            f,
            value: self.value.unwrap_or(Value::Nil),
            time: self.time,
            line,
        })
    }
}

fn bad(line: usize, field: &'static str, found: &Value) -> HistoryError {
    HistoryError::BadField {
        line,
        field,
        found: found.to_string(),
    }
}

/// How a paired operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Completed with `ok`: it took effect.
    Ok,
    /// Completed with `fail`: it did not take effect.
    Fail,
    /// Completed with `info`, or never completed: may or may not have
    /// taken effect.
    Info,
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Operation {
    /// Position in [`History::operations`].
    pub id: usize,
    /// The process.
    pub process: Process,
    /// The function.
    pub f: Function,
    /// The value that matters: the `ok` completion's value for reads, the
    /// invocation's value otherwise.
    pub value: Value,
    /// How it ended.
    pub outcome: Outcome,
    /// Index of the invocation in [`History::ops`].
    pub invoke: usize,
    /// Index of the completion in [`History::ops`], if any.
    pub complete: Option<usize>,
}

/// Which operation each process has open. Jepsen's processes are small
/// integers (growing by the concurrency after each `info`), so those go in
/// a plain vector; named processes, and numbers too large for the vector,
/// take a map. Pairing a million-op history through a map alone cost a
/// noticeable share of the check.
struct OpenTable<'a> {
    dense: Vec<u32>,
    limit: usize,
    other: HashMap<&'a Process, usize, crate::wgl::FxBuild>,
}

const NOT_OPEN: u32 = u32::MAX;

impl<'a> OpenTable<'a> {
    fn new(entries: usize) -> Self {
        OpenTable {
            dense: Vec::new(),
            // Process ids beyond a few per entry would waste memory.
            limit: entries.saturating_mul(4).clamp(1024, u32::MAX as usize),
            other: HashMap::default(),
        }
    }

    fn dense_index(&self, p: &Process) -> Option<usize> {
        match p {
            Process::Client(i) if *i >= 0 && (*i as usize) < self.limit => Some(*i as usize),
            _ => None,
        }
    }

    /// Opens `id` for `p`; returns the already open one instead, if any.
    fn insert(&mut self, p: &'a Process, id: usize) -> Option<usize> {
        match self.dense_index(p) {
            Some(i) if id < NOT_OPEN as usize => {
                if i >= self.dense.len() {
                    self.dense
                        .resize((i + 1).max(self.dense.len() * 2), NOT_OPEN);
                }
                match self.dense[i] {
                    NOT_OPEN => {
                        self.dense[i] = id as u32;
                        None
                    }
                    prev => Some(prev as usize),
                }
            }
            _ => match self.other.get(p) {
                Some(&prev) => Some(prev),
                None => {
                    self.other.insert(p, id);
                    None
                }
            },
        }
    }

    fn remove(&mut self, p: &Process) -> Option<usize> {
        if let Some(i) = self.dense_index(p) {
            if let Some(slot) = self.dense.get_mut(i) {
                if *slot != NOT_OPEN {
                    return Some(std::mem::replace(slot, NOT_OPEN) as usize);
                }
            }
        }
        self.other.remove(p)
    }
}

/// A whole history: entries in the order they happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The entries, in real-time order.
    pub ops: Vec<Op>,
}

impl History {
    /// Wraps entries (already in real-time order).
    pub fn new(ops: Vec<Op>) -> History {
        History { ops }
    }

    /// Pairs every client invocation with its completion.
    ///
    /// Errors on histories that break Jepsen's process discipline: a second
    /// invocation while one is open, or a completion with no invocation.
    pub fn operations(&self) -> Result<Vec<Operation>, HistoryError> {
        // At most one operation per two entries, usually exactly: sizing
        // up front spares a million-op history a dozen reallocations.
        let mut out: Vec<Operation> = Vec::with_capacity(self.ops.len() / 2 + 1);
        let mut open = OpenTable::new(self.ops.len());
        // Whether an operation's value is its completion's (reads, unknown
        // functions) rather than its invocation's (writes, cas, adds).
        let from_completion =
            |f: &Function| !matches!(f, Function::Write | Function::Cas | Function::Add);
        for (i, op) in self.ops.iter().enumerate() {
            if !op.process.is_client() {
                continue;
            }
            match op.kind {
                OpType::Invoke => {
                    let id = out.len();
                    if let Some(prev) = open.insert(&op.process, id) {
                        return Err(HistoryError::DoubleInvoke {
                            line: op.line,
                            process: op.process.clone(),
                            open_line: self.ops[out[prev].invoke].line,
                        });
                    }
                    out.push(Operation {
                        id,
                        process: op.process.clone(),
                        f: op.f.clone(),
                        // A completion-valued op gets its value when it
                        // completes: cloning the invocation's first would
                        // be wasted on every ok read.
                        value: if from_completion(&op.f) {
                            Value::Nil
                        } else {
                            op.value.clone()
                        },
                        // Until a completion shows up, it is indeterminate.
                        outcome: Outcome::Info,
                        invoke: i,
                        complete: None,
                    });
                }
                kind => {
                    let Some(id) = open.remove(&op.process) else {
                        return Err(HistoryError::CompletionWithoutInvoke {
                            line: op.line,
                            process: op.process.clone(),
                            kind,
                        });
                    };
                    let o = &mut out[id];
                    if o.f != op.f {
                        return Err(HistoryError::FunctionMismatch {
                            line: op.line,
                            invoke_line: self.ops[o.invoke].line,
                            expected: o.f.clone(),
                            got: op.f.clone(),
                        });
                    }
                    o.complete = Some(i);
                    o.outcome = match kind {
                        OpType::Ok => Outcome::Ok,
                        OpType::Fail => Outcome::Fail,
                        _ => Outcome::Info,
                    };
                    // Reads (and unknown functions) report their result on
                    // completion; writes, cas and adds carry it on invoke.
                    if from_completion(&o.f) {
                        o.value = if kind == OpType::Ok {
                            op.value.clone()
                        } else {
                            self.ops[o.invoke].value.clone()
                        };
                    }
                }
            }
        }
        // Never completed: their value is the invocation's.
        for o in out.iter_mut() {
            if o.complete.is_none() && from_completion(&o.f) {
                o.value = self.ops[o.invoke].value.clone();
            }
        }
        Ok(out)
    }

    /// Number of entries belonging to client processes.
    pub fn client_entries(&self) -> usize {
        self.ops.iter().filter(|o| o.process.is_client()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;

    /// Goal: pairing follows Jepsen: next completion of the same process,
    /// read values from `ok`, write values from invoke, missing completion
    /// is `info`, nemesis ignored.
    #[test]
    fn pairs_invocations_with_completions() {
        let h = edn::parse_history(
            "{:type :invoke, :f :write, :value 1, :process 0}\n\
             {:type :invoke, :f :read, :value nil, :process 1}\n\
             {:type :info, :f :start, :value nil, :process :nemesis}\n\
             {:type :ok, :f :read, :value 1, :process 1}\n\
             {:type :info, :f :write, :value :timed-out, :process 0}\n\
             {:type :invoke, :f :cas, :value [1 2], :process 2}\n",
        )
        .expect("parse");
        let ops = h.operations().expect("pair");
        assert_eq!(ops.len(), 3);
        assert_eq!(
            (ops[0].outcome, ops[0].value.clone()),
            (Outcome::Info, Value::Int(1))
        );
        assert_eq!((ops[0].invoke, ops[0].complete), (0, Some(4)));
        assert_eq!(
            (ops[1].outcome, ops[1].value.clone()),
            (Outcome::Ok, Value::Int(1))
        );
        assert_eq!(ops[2].outcome, Outcome::Info);
        assert_eq!(ops[2].complete, None);
    }

    /// Goal: broken process discipline is an error naming the line.
    #[test]
    fn discipline_errors() {
        let double =
            "{:type :invoke, :f :read, :process 0}\n{:type :invoke, :f :read, :process 0}\n";
        let err = edn::parse_history(double)
            .expect("parse")
            .operations()
            .expect_err("double");
        assert_eq!(err.line(), 2);
        let orphan = "{:type :ok, :f :read, :process 0, :value 1}\n";
        let err = edn::parse_history(orphan)
            .expect("parse")
            .operations()
            .expect_err("orphan");
        assert_eq!(err.line(), 1);
        let mismatch =
            "{:type :invoke, :f :read, :process 0}\n\n{:type :ok, :f :write, :process 0}";
        let err = edn::parse_history(mismatch)
            .expect("parse")
            .operations()
            .expect_err("f");
        assert_eq!(err.line(), 3);
    }

    /// Goal: entries missing required keys or with bad types name the line.
    #[test]
    fn bad_entries() {
        for (src, line) in [
            ("{:type :invoke, :f :read}", 1),
            ("\n{:process 0, :f :read}", 2),
            ("{:process 0, :type :weird, :f :read}", 1),
            ("{:process 0, :type :ok}", 1),
            ("{:process [1], :type :ok, :f :read}", 1),
            ("[1 2]", 1),
        ] {
            let err = edn::parse_history(src).expect_err(src);
            assert_eq!(err.line(), line, "{src}: {err}");
        }
    }
}
