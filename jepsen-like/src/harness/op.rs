//! What the harness hands a store and gets back: an [`Invocation`] per
//! operation, the [`Completion`] the store's [`Client`] reports, and the
//! [`Nemesis`] that injects faults. The store's side implements the two
//! traits; everything else in [`crate::harness`] is store-agnostic, so the
//! same runner drives a local cluster, containers or a simulator.

use std::future::Future;

use crate::history::{Function, OpType};
use crate::value::Value;

/// One operation about to be performed by a client process.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Jepsen's process id: the worker's number, plus the concurrency after
    /// every indeterminate (`:info`) completion.
    pub process: i64,
    /// What to do.
    pub f: Function,
    /// The invocation's value, in the workload's shape (e.g. `[k v]`).
    pub value: Value,
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `Ok`, `Fail` or `Info`. A client returning `Invoke` is recorded as
    /// `Info` and reported in [`crate::harness::RunRecord::problems`].
    pub kind: OpType,
    /// The completion's value (reads: what was read).
    pub value: Value,
    /// Extra fields for the completion line, e.g. `("node", Str("n2"))`,
    /// `("error", Str(..))`. Names must be plain keywords other than the
    /// entry's own fields (see [`crate::Recorder::annotate`]).
    pub extra: Vec<(String, Value)>,
}

impl Completion {
    /// An `:ok` completion with `value` and no extras.
    pub fn ok(value: Value) -> Completion {
        Completion {
            kind: OpType::Ok,
            value,
            extra: Vec::new(),
        }
    }

    /// A `:fail` completion (the operation certainly did not take effect).
    pub fn fail(value: Value) -> Completion {
        Completion {
            kind: OpType::Fail,
            value,
            extra: Vec::new(),
        }
    }

    /// An `:info` completion (the operation may or may not have taken
    /// effect).
    pub fn info(value: Value) -> Completion {
        Completion {
            kind: OpType::Info,
            value,
            extra: Vec::new(),
        }
    }

    /// Adds an extra field, e.g. `.with("error", Value::Str("timeout".into()))`.
    pub fn with(mut self, field: &str, value: Value) -> Completion {
        self.extra.push((field.to_string(), value));
        self
    }
}

/// The store's client. The runner makes one per worker (concurrency `C` =>
/// `C` clients, from a factory closure `FnMut(usize) -> C`) and uses it
/// for one operation at a time.
pub trait Client: Send + 'static {
    /// Called before the invocation is recorded; may rewrite `inv.value`
    /// (the sibling workload's `:ctx` becomes the values the client last
    /// read of that key) and return extra fields for the invoke line (e.g.
    /// `("node", "n3")`). Default: no change, no extras.
    fn prepare(&mut self, inv: &mut Invocation) -> Vec<(String, Value)> {
        let _ = inv;
        Vec::new()
    }

    /// Performs the operation. The runner races the future with the op
    /// timeout and records a timeout as `:info` (never `:fail`: the request
    /// may still take effect).
    fn invoke(&mut self, inv: &Invocation) -> impl Future<Output = Completion> + Send;
}

/// The fault injector. `fault` is one of the names given on the command
/// line (e.g. "kill", "pause", "partition-halves", "clock-skew"); the
/// nemesis picks its victims with the draw it gets (from the run's seeded
/// generator, so a seed replays the same faults). The returned value goes
/// into the history as the completion's `:value`; an error as
/// `[:error "msg"]`.
pub trait Nemesis: Send + 'static {
    /// Starts `fault`.
    fn start(
        &mut self,
        fault: &str,
        draw: u64,
    ) -> impl Future<Output = Result<Value, String>> + Send;
    /// Stops `fault` (the one started last).
    fn stop(&mut self, fault: &str) -> impl Future<Output = Result<Value, String>> + Send;
    /// Heals everything (restarts killed nodes, resumes paused ones,
    /// removes partitions, undoes clock skew). Called once at the end,
    /// before the quiet period and the final reads.
    fn heal_all(&mut self) -> impl Future<Output = Result<Value, String>> + Send;
}

/// A nemesis that injects nothing, for runs without faults (`None` still
/// needs a type: `None::<NoNemesis>`) or to have `heal_all` recorded with
/// no fault active.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNemesis;

impl Nemesis for NoNemesis {
    async fn start(&mut self, fault: &str, _draw: u64) -> Result<Value, String> {
        Err(format!("no nemesis: cannot start {fault}"))
    }

    async fn stop(&mut self, fault: &str) -> Result<Value, String> {
        Err(format!("no nemesis: cannot stop {fault}"))
    }

    async fn heal_all(&mut self) -> Result<Value, String> {
        Ok(Value::Nil)
    }
}
