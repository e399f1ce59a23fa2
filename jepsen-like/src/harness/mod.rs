//! The generic half of a Jepsen-style test harness: workloads (operation
//! generators with their checkers), a runner that drives them through a
//! store's [`Client`]s while a [`Nemesis`] injects faults, a history sink
//! that streams `history.edn` as the run goes, and the stored run
//! directory with its reports. The store supplies only the client and the
//! nemesis, so this module knows nothing of any particular store.

use std::path::{Path, PathBuf};

pub mod counter;
pub mod op;
pub mod register;
pub mod report;
pub mod rundir;
pub mod runner;
pub mod set;
pub mod siblings;
pub mod sink;
mod svg;
pub mod visibility;
pub mod workload;

pub use counter::{CounterConfig, CounterWorkload};
pub use op::{Client, Completion, Invocation, Nemesis, NoNemesis};
pub use register::{RegisterConfig, RegisterWorkload};
pub use report::{exit_code, write_report};
pub use rundir::RunDir;
pub use runner::{run, NemesisPeriod, RunOptions, RunRecord};
pub use set::{SetConfig, SetWorkload};
pub use siblings::{SiblingConfig, SiblingWorkload};
pub use sink::HistorySink;
pub use visibility::{VisibilityConfig, VisibilityWorkload};
pub use workload::{Next, Percentiles, Workload, WorkloadResult};

/// Everything that can stop the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Run options that cannot work (zero concurrency, a bad rate...).
    #[error("bad run options: {0}")]
    Options(String),
    /// A workload configuration that cannot work.
    #[error("bad workload configuration: {0}")]
    Config(String),
    /// The history recorder was misused (a runner bug).
    #[error("recording the history: {0}")]
    Record(#[from] crate::recorder::RecorderError),
    /// Results could not be serialized.
    #[error("serializing results: {0}")]
    Json(#[from] serde_json::Error),
}

impl HarnessError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> HarnessError {
        HarnessError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
