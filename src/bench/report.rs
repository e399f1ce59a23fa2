//! Benchmark results: per-operation HdrHistograms (µs) and error counts, summarised as a
//! text table for people and JSON for scripts.
//!
//! Kept apart from the driver so the summary format is one place: what the table shows
//! and what the JSON holds are the same numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::workload::Op;
use crate::client::ClientError;
use crate::proto::ErrorKind;

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The report could not be serialised.
    #[error("cannot encode the report: {0}")]
    Json(#[from] serde_json::Error),
    /// A histogram in a JSON report could not be decoded.
    #[error("bad {op} histogram in the report: {message}")]
    Histogram {
        /// The operation type.
        op: String,
        /// Why.
        message: String,
    },
    /// A JSON report could not be read.
    #[error("cannot read the report {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The HdrHistogram log could not be written.
    #[error("cannot write the HdrHistogram log {path}: {message}")]
    HdrLog {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Write per-interval histograms as an HdrHistogram interval log (V2 encoding, tagged
/// `phase-op`, timestamps relative to `started_at`), readable by HdrHistogram's log
/// tools (e.g. HistogramLogAnalyzer).
pub fn write_hdr_log(
    path: &Path,
    started_at: std::time::SystemTime,
    intervals: &[super::driver::Interval],
) -> Result<(), ReportError> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2Serializer;
    let err = |message: String| ReportError::HdrLog {
        path: path.display().to_string(),
        message,
    };
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| err(e.to_string()))?);
    let mut ser = V2Serializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("quorumkv bench: latencies in microseconds, tag = phase-operation")
            .with_start_time(started_at)
            .with_base_time(started_at)
            .begin_log_with(&mut file, &mut ser)
            .map_err(|e| err(e.to_string()))?;
        for i in intervals {
            let h = decode_v2(&i.encoded).map_err(err)?;
            w.write_histogram(&h, i.start, i.duration, Tag::new(&i.tag))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    std::io::Write::flush(&mut file).map_err(|e| err(e.to_string()))
}

/// A histogram in HdrHistogram's V2 encoding (what interval logs and JSON reports hold);
/// `None` if it cannot be encoded.
pub fn encode_v2(h: &Histogram<u64>) -> Option<Vec<u8>> {
    let mut encoded = Vec::new();
    hdrhistogram::serialization::Serializer::serialize(
        &mut hdrhistogram::serialization::V2Serializer::new(),
        h,
        &mut encoded,
    )
    .ok()?;
    Some(encoded)
}

/// Decode a histogram written by [`encode_v2`].
pub fn decode_v2(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("{e:?}"))
}

/// Highest latency recorded: 10 minutes in µs (larger values are clamped).
pub const MAX_LATENCY_US: u64 = 600_000_000;

/// A latency histogram in µs, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Error classes a benchmark counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Fewer than R/W replicas answered.
    QuorumNotReached,
    /// No reply within the client timeout.
    Timeout,
    /// No contact point reachable.
    Unreachable,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Which class a client error is.
    pub fn of(e: &ClientError) -> Self {
        match e {
            ClientError::Server {
                kind: ErrorKind::QuorumNotReached { .. },
                ..
            } => ErrorClass::QuorumNotReached,
            ClientError::Timeout { .. } => ErrorClass::Timeout,
            ClientError::Unreachable(_) => ErrorClass::Unreachable,
            _ => ErrorClass::Other,
        }
    }
}

/// Errors by class.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Quorum not reached.
    pub quorum_not_reached: u64,
    /// Client timeouts.
    pub timeout: u64,
    /// No contact point reachable.
    pub unreachable: u64,
    /// Anything else.
    pub other: u64,
}

impl ErrorCounts {
    /// Count one error.
    pub fn add(&mut self, c: ErrorClass) {
        match c {
            ErrorClass::QuorumNotReached => self.quorum_not_reached += 1,
            ErrorClass::Timeout => self.timeout += 1,
            ErrorClass::Unreachable => self.unreachable += 1,
            ErrorClass::Other => self.other += 1,
        }
    }

    /// Add another set of counts.
    pub fn merge(&mut self, o: &ErrorCounts) {
        self.quorum_not_reached += o.quorum_not_reached;
        self.timeout += o.timeout;
        self.unreachable += o.unreachable;
        self.other += o.other;
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.quorum_not_reached + self.timeout + self.unreachable + self.other
    }
}

/// Live measurements of one phase: a histogram per operation type and error counts.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Successful operations' latencies, indexed by [`Op::index`].
    pub hists: Vec<Histogram<u64>>,
    /// Failed operations.
    pub errors: ErrorCounts,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            hists: Op::ALL.iter().map(|_| new_histogram()).collect(),
            errors: ErrorCounts::default(),
        }
    }
}

impl Recorder {
    /// Record a successful operation taking `us` microseconds.
    pub fn record(&mut self, op: Op, us: u64) {
        let _ = self.hists[op.index()].record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Successful operations so far.
    pub fn count(&self) -> u64 {
        self.hists.iter().map(|h| h.len()).sum()
    }

    /// All operation types in one histogram.
    pub fn combined(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for h in &self.hists {
            let _ = all.add(h);
        }
        all
    }
}

/// Summary of one operation type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpSummary {
    /// Successful operations.
    pub count: u64,
    /// Operations per second over the phase.
    pub throughput: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Percentiles, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// 99.99th percentile, µs.
    pub p9999_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
}

impl OpSummary {
    fn of(h: &Histogram<u64>, elapsed_s: f64) -> Self {
        OpSummary {
            count: h.len(),
            throughput: if elapsed_s > 0.0 {
                h.len() as f64 / elapsed_s
            } else {
                0.0
            },
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            p9999_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
        }
    }
}

/// Summary of a phase (load or run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseSummary {
    /// Wall-clock length, seconds.
    pub elapsed_s: f64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations by class.
    pub errors: ErrorCounts,
    /// Per operation type (only types that ran).
    pub operations: BTreeMap<String, OpSummary>,
    /// (seconds since the phase started, ops/s over the second before) once a second.
    #[serde(default)]
    pub timeline: Vec<(f64, f64)>,
    /// Per operation type, the full latency histogram (µs) in HdrHistogram's V2
    /// encoding, base64: what `bench-report` merges and plots, and what HdrHistogram
    /// tools can decode.
    #[serde(default)]
    pub histograms: BTreeMap<String, String>,
}

impl PhaseSummary {
    /// Summarise a recorder over `elapsed_s` seconds.
    pub fn of(rec: &Recorder, elapsed_s: f64) -> Self {
        let mut operations = BTreeMap::new();
        let mut histograms = BTreeMap::new();
        for op in Op::ALL {
            let h = &rec.hists[op.index()];
            if !h.is_empty() {
                operations.insert(op.name().to_string(), OpSummary::of(h, elapsed_s));
                if let Some(encoded) = encode_v2(h) {
                    use base64::Engine as _;
                    histograms.insert(
                        op.name().to_string(),
                        base64::engine::general_purpose::STANDARD.encode(encoded),
                    );
                }
            }
        }
        let ops = rec.count();
        PhaseSummary {
            elapsed_s,
            throughput: if elapsed_s > 0.0 {
                ops as f64 / elapsed_s
            } else {
                0.0
            },
            ops,
            errors: rec.errors,
            operations,
            timeline: Vec::new(),
            histograms,
        }
    }

    /// The latency histogram of operation type `op`, decoded from [`Self::histograms`].
    pub fn histogram(&self, op: &str) -> Result<Option<Histogram<u64>>, ReportError> {
        use base64::Engine as _;
        let Some(text) = self.histograms.get(op) else {
            return Ok(None);
        };
        let bad = |message: String| ReportError::Histogram {
            op: op.to_string(),
            message,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| bad(e.to_string()))?;
        decode_v2(&bytes).map(Some).map_err(bad)
    }

    /// The phase as a text table.
    pub fn table(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{title}: {} ops in {:.2} s = {:.1} ops/s; errors: {} (quorum {}, timeout {}, unreachable {}, other {})",
            self.ops,
            self.elapsed_s,
            self.throughput,
            self.errors.total(),
            self.errors.quorum_not_reached,
            self.errors.timeout,
            self.errors.unreachable,
            self.errors.other
        );
        let _ = writeln!(
            s,
            "  {:<18} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "op", "count", "ops/s", "mean µs", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, o) in &self.operations {
            let _ = writeln!(
                s,
                "  {:<18} {:>9} {:>10.1} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                name,
                o.count,
                o.throughput,
                o.mean_us,
                o.p50_us,
                o.p90_us,
                o.p99_us,
                o.p999_us,
                o.p9999_us,
                o.max_us
            );
        }
        s
    }
}

/// The whole result: parameters and phases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The run's parameters.
    pub parameters: serde_json::Value,
    /// The load phase, if it ran.
    pub load: Option<PhaseSummary>,
    /// The run phase, if it ran.
    pub run: Option<PhaseSummary>,
}

impl Report {
    /// The report as text tables.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if let Some(l) = &self.load {
            s.push_str(&l.table("load"));
        }
        if let Some(r) = &self.run {
            s.push_str(&r.table("run"));
        }
        s
    }

    /// Read a report written by [`Self::write_json`].
    pub fn read_json(path: &Path) -> Result<Self, ReportError> {
        let err = |message: String| ReportError::Read {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    }

    /// Write the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).map_err(|source| ReportError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}
