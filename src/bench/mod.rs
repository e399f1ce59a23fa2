//! `quorumkv bench`: a YCSB-style load generator (workloads A–F) with HdrHistogram
//! latencies, closed- and open-loop drivers, text/JSON/SVG reports, and targets other
//! than quorumkv (a QUIC echo ceiling, Redis, etcd) measured by the same code.
//!
//! It lives in the library so tests and other tools can drive it; the CLI in
//! `src/cmd/bench.rs` only parses arguments. See `docs/BENCHMARKS.md`.

pub mod driver;
pub mod echo;
pub mod plot;
pub mod report;
pub mod target;
pub mod workload;

/// Errors of the benchmark as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad workload parameter.
    #[error(transparent)]
    Workload(#[from] workload::WorkloadError),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] driver::DriverError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// The target could not be reached.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// The plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
}
