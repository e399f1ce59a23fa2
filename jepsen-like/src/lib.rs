//! `jepsen-like`: a fast linearizability checker for Jepsen histories.
//!
//! It reads Jepsen's `history.edn` (and JSON Lines), pairs invocations with
//! completions using Jepsen's semantics, and checks the history against a
//! model: registers through a Wing & Gong / Lowe search ([`wgl`]), with
//! independent keys checked separately and in parallel, sets and counters
//! with Jepsen's own set and counter checkers, and Dynamo-style sibling
//! registers with [`sibling_checker`]. Histories can also be built in code
//! with a [`Recorder`]. It has no dependency on any particular store.
//!
//! ```
//! use jepsen_like::{check, CheckOptions, Format, ModelKind, Verdict};
//!
//! let history = Format::Edn.parse(
//!     "{:type :invoke, :f :write, :value 1, :process 0}\n\
//!      {:type :ok,     :f :write, :value 1, :process 0}\n\
//!      {:type :invoke, :f :read,  :value nil, :process 1}\n\
//!      {:type :ok,     :f :read,  :value 1, :process 1}\n",
//! ).unwrap();
//! let result = check(&history, &CheckOptions::new(ModelKind::Register)).unwrap();
//! assert_eq!(result.verdict, Verdict::Valid);
//! ```

pub mod check;
pub mod counter_checker;
pub mod edn;
pub mod format;
pub mod gen;
pub mod harness;
pub mod history;
pub mod html;
pub mod jsonl;
pub mod mem;
pub mod model;
pub mod recorder;
pub mod report;
pub mod set_checker;
pub mod sibling_checker;
pub mod value;
pub mod wgl;

pub use check::{check, CheckError, CheckOptions, CheckResult, Verdict};
pub use format::{Format, FormatError};
pub use history::{Function, History, Op, OpType, Operation, Outcome, Process};
pub use model::ModelKind;
pub use recorder::{Recorder, RecorderError};
pub use value::Value;
