//! Sequential specifications ("models") that the linearizability search
//! replays operations against, and the names of all checkable models.
//!
//! The search in [`crate::wgl`] is generic over [`Model`]; registers are the
//! models Jepsen histories usually need. Register values are interned to
//! small integers per key before the search so that states are cheap to
//! hash and compare (the search memoizes on them).

use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

/// A sequential specification for the linearizability search.
pub trait Model: Sync {
    /// The abstract state. Cheap to clone and hash: it is memoized.
    type State: Clone + Eq + Hash + Send + fmt::Debug;
    /// An operation as the model sees it (result included). `Eq + Hash`
    /// so the search can recognise identical indeterminate operations.
    type Op: Clone + Eq + Hash + Send + Sync + fmt::Debug;

    /// The initial state.
    fn init(&self) -> Self::State;

    /// Applies `op` to `state`: the next state, or `None` when the op's
    /// observed result is impossible in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    /// True when `op` never changes the state wherever it is applied (a
    /// read). The search linearizes such ops as soon as they are possible,
    /// without branching: moving a state-preserving op earlier to a point
    /// where it is both allowed by real time and by the model never breaks
    /// a linearization.
    fn is_read_only(&self, _op: &Self::Op) -> bool {
        false
    }
}

/// A register operation with interned values (0 is always `nil`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// A read that returned the value.
    Read(u32),
    /// A write of the value.
    Write(u32),
    /// A compare-and-set from the first value to the second.
    Cas(u32, u32),
}

/// A read/write(/cas) register whose initial value is `nil` (id 0).
///
/// Serves both `register` and `cas-register`: a plain register simply has
/// no cas ops (the checker rejects cas for `register` up front).
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = u32;
    type Op = RegisterOp;

    fn init(&self) -> u32 {
        0
    }

    fn step(&self, state: &u32, op: &RegisterOp) -> Option<u32> {
        match *op {
            RegisterOp::Read(v) => (v == *state).then_some(*state),
            RegisterOp::Write(v) => Some(v),
            RegisterOp::Cas(from, to) => (from == *state).then_some(to),
        }
    }

    fn is_read_only(&self, op: &RegisterOp) -> bool {
        matches!(op, RegisterOp::Read(_))
    }
}

/// Errors naming a model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The name is not one of the known models.
    #[error(
        "unknown model '{0}' (expected register, cas-register, multi-register, kv, set, counter or sibling-register)"
    )]
    Unknown(String),
}

/// The models the checker knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Read/write register, initial value nil.
    Register,
    /// Read/write/cas register, initial value nil.
    CasRegister,
    /// Independent cas registers per key, values are `[key value]` tuples.
    MultiRegister,
    /// A grow-only set checked with Jepsen's set checker.
    Set,
    /// A counter checked with Jepsen's counter checker.
    Counter,
    /// Dynamo-style registers with siblings and causal contexts, per key
    /// (see [`crate::sibling_checker`]).
    SiblingRegister,
}

impl ModelKind {
    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Register => "register",
            ModelKind::CasRegister => "cas-register",
            ModelKind::MultiRegister => "multi-register",
            ModelKind::Set => "set",
            ModelKind::Counter => "counter",
            ModelKind::SiblingRegister => "sibling-register",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Ok(match s {
            "register" => ModelKind::Register,
            "cas-register" | "cas" => ModelKind::CasRegister,
            "multi-register" | "kv" | "independent" => ModelKind::MultiRegister,
            "set" => ModelKind::Set,
            "counter" => ModelKind::Counter,
            "sibling-register" | "siblings" => ModelKind::SiblingRegister,
            other => return Err(ModelError::Unknown(other.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the register model accepts exactly the sequentially valid steps.
    #[test]
    fn register_steps() {
        let m = RegisterModel;
        assert_eq!(m.step(&0, &RegisterOp::Read(0)), Some(0));
        assert_eq!(m.step(&0, &RegisterOp::Read(1)), None);
        assert_eq!(m.step(&0, &RegisterOp::Write(3)), Some(3));
        assert_eq!(m.step(&3, &RegisterOp::Cas(3, 4)), Some(4));
        assert_eq!(m.step(&3, &RegisterOp::Cas(2, 4)), None);
        assert!(m.is_read_only(&RegisterOp::Read(2)));
        assert!(!m.is_read_only(&RegisterOp::Cas(2, 2)));
    }

    /// Goal: model names and aliases parse; unknown names are errors.
    #[test]
    fn parses_names() {
        assert_eq!("kv".parse(), Ok(ModelKind::MultiRegister));
        assert_eq!("cas-register".parse(), Ok(ModelKind::CasRegister));
        assert_eq!("sibling-register".parse(), Ok(ModelKind::SiblingRegister));
        assert_eq!(ModelKind::SiblingRegister.to_string(), "sibling-register");
        assert!("queue".parse::<ModelKind>().is_err());
    }
}
