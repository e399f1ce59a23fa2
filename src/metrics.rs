//! Node metrics: HdrHistogram latencies and counters, exported in the Prometheus text
//! format over a minimal HTTP endpoint (`GET /metrics`, address `metrics_listen` in the
//! node config).
//!
//! Histograms are recorded in microseconds and exported as Prometheus *summaries*
//! (quantiles computed on the node), the same shape `nodetool proxyhistograms` shows:
//! coordinator latency per operation, replica-side handling latency per request kind,
//! siblings per read, object sizes read and written. Counters: requests and quorum
//! failures per operation, read repairs sent; a gauge of requests in flight. Every structure is bounded (fixed histogram range,
//! a fixed set of operation names).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The endpoint could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Highest latency recorded exactly (µs); slower requests are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Quantiles exported for every histogram.
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

fn new_histogram(max: u64) -> Histogram<u64> {
    // 1..=max with 3 significant digits: valid constant bounds, so this cannot fail.
    Histogram::new_with_bounds(1, max, 3).expect("constant histogram bounds are valid")
}

/// A histogram behind a lock; writers clamp values into its range.
struct Recorder {
    hist: Mutex<Histogram<u64>>,
    max: u64,
}

impl Recorder {
    fn new(max: u64) -> Self {
        Recorder {
            hist: Mutex::new(new_histogram(max)),
            max,
        }
    }

    fn record(&self, v: u64) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h.record(v.clamp(1, self.max));
    }
}

/// All metrics of one node.
pub struct Metrics {
    coordinator: BTreeMap<&'static str, Recorder>,
    replica: BTreeMap<&'static str, Recorder>,
    requests: BTreeMap<&'static str, AtomicU64>,
    quorum_failures: BTreeMap<&'static str, AtomicU64>,
    read_repairs: AtomicU64,
    /// Merges whose result is larger than `limits.max_object_bytes` (stored anyway: the
    /// versions exist elsewhere and dropping them would lose acknowledged writes).
    pub objects_over_cap: AtomicU64,
    /// Times this node took a new incarnation because it found it had lost dots it once
    /// issued (a restored backup, or a crash with `sync = false`).
    pub incarnation_changes: AtomicU64,
    /// Overlapped lead writes (`storage.overlap_lead_sync`) whose fsync completed before
    /// the write was answered, successfully or not.
    pub overlapped_lead_syncs: AtomicU64,
    /// fsyncs the replica's sync task ran for deferred lead writes and the reads waiting
    /// on them (each may cover many: overlapped writes per fsync is the group commit's
    /// gain).
    pub deferred_fsyncs: AtomicU64,
    /// Client timestamps refused for being further ahead of the node's clock than
    /// `limits.max_clock_skew_ms`.
    pub future_timestamps_refused: AtomicU64,
    /// Repairs of stale replicas not sent because `limits.max_pending_read_repairs`
    /// repairs were already pending.
    read_repairs_skipped: AtomicU64,
    /// Client streams answered `overloaded` (budget or request slots spent).
    overloaded: AtomicU64,
    /// Anti-entropy exchanges this node started.
    pub aae_exchanges: AtomicU64,
    /// Anti-entropy exchanges that failed (peer unreachable, refused).
    pub aae_exchange_errors: AtomicU64,
    /// Keys anti-entropy repaired (in either direction).
    pub aae_keys_repaired: AtomicU64,
    /// Gauge: ranges whose last exchange found differences.
    pub aae_ranges_differing: AtomicU64,
    /// Gauge: seconds since the range compared least recently in full was.
    pub aae_oldest_full_compare_seconds: AtomicU64,
    /// Tombstones this node removed (as the reaper, or at the reaper's request).
    pub tombstones_reaped: AtomicU64,
    /// Tombstones old enough to reap but kept: a member did not answer the check.
    pub tombstones_blocked_unreachable: AtomicU64,
    /// Kept: a member holds a hint for the key.
    pub tombstones_blocked_hints: AtomicU64,
    /// Kept: a replica holds another copy (a live value, another tombstone, nothing) or has
    /// not held it for `tombstones.min_age_ms` yet.
    pub tombstones_blocked_disagree: AtomicU64,
    /// Replicas a coordinated read asked beyond its first R because one asked failed.
    pub read_retries: AtomicU64,
    /// Replicas a coordinated read asked beyond its first R because the replies had not
    /// all come within `timeouts.speculative_read_ms`.
    pub speculative_reads: AtomicU64,
    inflight: AtomicI64,
    siblings: Recorder,
    /// Bytes of values returned by a read (all siblings) and written by a put, like
    /// Riak's `node_get_fsm_objsize`: large objects explain slow tails.
    object_sizes: BTreeMap<&'static str, Recorder>,
    /// The node's hint store, read when rendering (weak: metrics outlive nothing).
    hints: Mutex<Option<std::sync::Weak<crate::hints::HintStore>>>,
    /// Failure detector: peers' state changes, by the state entered (alive, suspect,
    /// dead).
    pub detector_transitions: [AtomicU64; 3],
    /// Failure detector: times this node found its own timers late by more than
    /// `detector.stall_threshold_ms` (a local stall).
    pub detector_stalls: AtomicU64,
    /// Failure detector: failed probes and calls not counted against a peer because they
    /// spanned a local stall.
    pub detector_voided: AtomicU64,
    /// The node's failure detector, read when rendering the per-peer state gauge.
    detector: Mutex<Option<std::sync::Weak<crate::membership::detector::Detector>>>,
}

/// Largest object size recorded exactly (bytes); larger ones are clamped to it.
const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Client operations with their own series.
pub const CLIENT_OPS: [&str; 7] = ["get", "put", "delete", "scan", "batch", "update", "admin"];
/// Replica request kinds with their own series.
pub const REPLICA_OPS: [&str; 5] = ["read", "write", "replicate", "scan", "other"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            coordinator: CLIENT_OPS
                .iter()
                .map(|o| (*o, Recorder::new(MAX_LATENCY_US)))
                .collect(),
            replica: REPLICA_OPS
                .iter()
                .map(|o| (*o, Recorder::new(MAX_LATENCY_US)))
                .collect(),
            requests: CLIENT_OPS.iter().map(|o| (*o, AtomicU64::new(0))).collect(),
            quorum_failures: CLIENT_OPS.iter().map(|o| (*o, AtomicU64::new(0))).collect(),
            read_repairs: AtomicU64::new(0),
            objects_over_cap: AtomicU64::new(0),
            incarnation_changes: AtomicU64::new(0),
            overlapped_lead_syncs: AtomicU64::new(0),
            deferred_fsyncs: AtomicU64::new(0),
            future_timestamps_refused: AtomicU64::new(0),
            read_repairs_skipped: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            aae_exchanges: AtomicU64::new(0),
            aae_exchange_errors: AtomicU64::new(0),
            aae_keys_repaired: AtomicU64::new(0),
            aae_ranges_differing: AtomicU64::new(0),
            aae_oldest_full_compare_seconds: AtomicU64::new(0),
            tombstones_reaped: AtomicU64::new(0),
            tombstones_blocked_unreachable: AtomicU64::new(0),
            tombstones_blocked_hints: AtomicU64::new(0),
            tombstones_blocked_disagree: AtomicU64::new(0),
            read_retries: AtomicU64::new(0),
            speculative_reads: AtomicU64::new(0),
            inflight: AtomicI64::new(0),
            siblings: Recorder::new(100_000),
            object_sizes: ["read", "write"]
                .iter()
                .map(|o| (*o, Recorder::new(MAX_OBJECT_BYTES)))
                .collect(),
            hints: Mutex::new(None),
            detector_transitions: Default::default(),
            detector_stalls: AtomicU64::new(0),
            detector_voided: AtomicU64::new(0),
            detector: Mutex::new(None),
        }
    }
}

/// Decrements the in-flight gauge when a request ends, however it ends.
pub struct InflightGuard<'a>(&'a AtomicI64);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Count a client request as in flight until the guard drops.
    pub fn start_request(&self) -> InflightGuard<'_> {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(&self.inflight)
    }

    /// Record a finished client request (`op` from [`CLIENT_OPS`]).
    pub fn coordinator_done(&self, op: &str, took: Duration, quorum_failed: bool) {
        if let Some(r) = self.coordinator.get(op) {
            r.record(took.as_micros() as u64);
        }
        if let Some(c) = self.requests.get(op) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if quorum_failed {
            if let Some(c) = self.quorum_failures.get(op) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Record replica-side handling time (`op` from [`REPLICA_OPS`]).
    pub fn replica_done(&self, op: &str, took: Duration) {
        if let Some(r) = self.replica.get(op) {
            r.record(took.as_micros() as u64);
        }
    }

    /// Export `store`'s pending hints and counters with the other metrics.
    pub fn set_hints_source(&self, store: &Arc<crate::hints::HintStore>) {
        *self.hints.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(store));
    }

    /// Export `detector`'s view of each peer with the other metrics.
    pub fn set_detector_source(&self, detector: &Arc<crate::membership::detector::Detector>) {
        *self.detector.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(detector));
    }

    /// Render the failure detector's series: one 0/1 gauge per peer and state, state
    /// changes by the state entered, local stalls, voided failures.
    fn render_detector(&self, out: &mut String, node_label: &str) {
        use crate::membership::detector::PeerState;
        let name = "quorumkv_detector_peer_state";
        let _ = writeln!(
            out,
            "# HELP {name} This node's failure detector's view of each peer: 1 for the state it is in (unknown: not probed yet)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let detector = self
            .detector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|w| w.upgrade());
        if let Some(d) = detector {
            for (peer, state, _) in d.view() {
                let now = state.map_or("unknown", PeerState::name);
                for s in ["alive", "suspect", "dead", "unknown"] {
                    let v = u8::from(s == now);
                    let _ = writeln!(
                        out,
                        "{name}{{{node_label},peer=\"{peer}\",state=\"{s}\"}} {v}"
                    );
                }
            }
        }
        let name = "quorumkv_detector_transitions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Peers' state changes in this node's failure detector, by the state entered."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (i, s) in PeerState::ALL.iter().enumerate() {
            let v = self.detector_transitions[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{{node_label},to=\"{}\"}} {v}", s.name());
        }
        for (name, help, c) in [
            (
                "quorumkv_detector_stalls_total",
                "Times this node found its own timers late by more than detector.stall_threshold_ms (a local pause or CPU starvation).",
                &self.detector_stalls,
            ),
            (
                "quorumkv_detector_voided_total",
                "Failed probes and calls not counted against a peer because they spanned a local stall.",
                &self.detector_voided,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{{node_label}}} {}", c.load(Ordering::Relaxed));
        }
    }

    /// Render the hint series (pending per target, replayed, dropped by reason).
    fn render_hints(&self, out: &mut String, node_label: &str) {
        let store = self
            .hints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|w| w.upgrade());
        let Some(store) = store else { return };
        let st = store.stats();
        for (name, help, bytes) in [
            (
                "quorumkv_hints_pending",
                "Hints this node holds, by target node.",
                false,
            ),
            (
                "quorumkv_hints_pending_bytes",
                "Bytes of hints this node holds, by target node.",
                true,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (target, p) in &st.pending {
                let v = if bytes { p.bytes } else { p.count };
                let _ = writeln!(out, "{name}{{{node_label},target=\"{target}\"}} {v}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP quorumkv_hints_replayed_total Hints handed back to their target and acknowledged."
        );
        let _ = writeln!(out, "# TYPE quorumkv_hints_replayed_total counter");
        let _ = writeln!(
            out,
            "quorumkv_hints_replayed_total{{{node_label}}} {}",
            st.replayed
        );
        let _ = writeln!(
            out,
            "# HELP quorumkv_hints_dropped_total Hints dropped: past hints.window_ms (expired), over hints.max_bytes_per_target (full), refused by their target (refused)."
        );
        let _ = writeln!(out, "# TYPE quorumkv_hints_dropped_total counter");
        for (reason, v) in [
            ("expired", st.dropped_expired),
            ("full", st.dropped_full),
            ("refused", st.dropped_refused),
        ] {
            let _ = writeln!(
                out,
                "quorumkv_hints_dropped_total{{{node_label},reason=\"{reason}\"}} {v}"
            );
        }
    }

    /// Count read repairs sent.
    pub fn read_repairs_sent(&self, n: u64) {
        self.read_repairs.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a repair of a stale replica dropped because too many were pending.
    pub fn read_repair_skipped(&self) {
        self.read_repairs_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Read repairs dropped so far because too many were pending.
    pub fn read_repairs_skipped(&self) -> u64 {
        self.read_repairs_skipped.load(Ordering::Relaxed)
    }

    /// Count a client request answered `overloaded`.
    pub fn overloaded_refused(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Client requests answered `overloaded` so far.
    pub fn overloaded(&self) -> u64 {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Record how many versions a read returned.
    pub fn siblings_per_read(&self, n: usize) {
        self.siblings.record(n as u64);
    }

    /// Record the size of an object read (`"read"`) or written (`"write"`), in bytes.
    pub fn object_size(&self, op: &str, bytes: usize) {
        if let Some(r) = self.object_sizes.get(op) {
            r.record(bytes as u64);
        }
    }

    /// Summaries of every latency histogram that has samples, coordinator first.
    pub fn snapshot(&self) -> Vec<crate::proto::LatencyStats> {
        let rows = |kind: &str,
                    map: &BTreeMap<&'static str, Recorder>|
         -> Vec<crate::proto::LatencyStats> {
            map.iter()
                .filter_map(|(op, r)| {
                    let h = r.hist.lock().unwrap_or_else(|e| e.into_inner());
                    (!h.is_empty()).then(|| crate::proto::LatencyStats {
                        kind: kind.to_string(),
                        op: op.to_string(),
                        count: h.len(),
                        p50_us: h.value_at_quantile(0.5),
                        p90_us: h.value_at_quantile(0.9),
                        p99_us: h.value_at_quantile(0.99),
                        p999_us: h.value_at_quantile(0.999),
                        max_us: h.max(),
                    })
                })
                .collect()
        };
        let mut out = rows("coordinator", &self.coordinator);
        out.extend(rows("replica", &self.replica));
        out
    }

    /// Read repairs sent so far.
    pub fn read_repairs(&self) -> u64 {
        self.read_repairs.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, node: &str) -> String {
        let mut out = String::new();
        let summary = |out: &mut String,
                       name: &str,
                       help: &str,
                       scale: f64,
                       series: Vec<(String, &Recorder)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} summary");
            for (labels, rec) in series {
                let h = rec.hist.lock().unwrap_or_else(|e| e.into_inner());
                for q in QUANTILES {
                    let v = h.value_at_quantile(q) as f64 * scale;
                    let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {v}");
                }
                let sum = h.mean() * h.len() as f64 * scale;
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
            }
        };
        let node_label = format!("node=\"{node}\"");
        summary(
            &mut out,
            "quorumkv_coordinator_latency_seconds",
            "Client request latency at the coordinator, by operation.",
            1e-6,
            self.coordinator
                .iter()
                .map(|(op, r)| (format!("{node_label},op=\"{op}\""), r))
                .collect(),
        );
        summary(
            &mut out,
            "quorumkv_replica_latency_seconds",
            "Replica-side handling latency (storage included), by request kind.",
            1e-6,
            self.replica
                .iter()
                .map(|(op, r)| (format!("{node_label},op=\"{op}\""), r))
                .collect(),
        );
        summary(
            &mut out,
            "quorumkv_siblings_per_read",
            "Versions returned by a read.",
            1.0,
            vec![(node_label.clone(), &self.siblings)],
        );
        summary(
            &mut out,
            "quorumkv_object_size_bytes",
            "Bytes of the values a read returned (all siblings) or a put wrote.",
            1.0,
            self.object_sizes
                .iter()
                .map(|(op, r)| (format!("{node_label},op=\"{op}\""), r))
                .collect(),
        );
        let counter = |out: &mut String,
                       name: &str,
                       help: &str,
                       series: &BTreeMap<&'static str, AtomicU64>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (op, c) in series {
                let _ = writeln!(
                    out,
                    "{name}{{{node_label},op=\"{op}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        };
        counter(
            &mut out,
            "quorumkv_requests_total",
            "Client requests coordinated, by operation.",
            &self.requests,
        );
        counter(
            &mut out,
            "quorumkv_quorum_failures_total",
            "Requests that failed with quorum not reached, by operation.",
            &self.quorum_failures,
        );
        let _ = writeln!(
            out,
            "# HELP quorumkv_read_repairs_total Objects sent to stale replicas by read repair."
        );
        let _ = writeln!(out, "# TYPE quorumkv_read_repairs_total counter");
        let _ = writeln!(
            out,
            "quorumkv_read_repairs_total{{{node_label}}} {}",
            self.read_repairs.load(Ordering::Relaxed)
        );
        for (name, help, value) in [
            (
                "quorumkv_objects_over_cap_total",
                "Merges that produced an object over limits.max_object_bytes.",
                &self.objects_over_cap,
            ),
            (
                "quorumkv_incarnation_changes_total",
                "New incarnations taken after finding dots this node issued but lost.",
                &self.incarnation_changes,
            ),
            (
                "quorumkv_overlapped_lead_syncs_total",
                "Overlapped lead writes whose fsync completed before the write was answered.",
                &self.overlapped_lead_syncs,
            ),
            (
                "quorumkv_deferred_fsyncs_total",
                "fsyncs run for deferred (overlapped) lead writes; each may cover many.",
                &self.deferred_fsyncs,
            ),
            (
                "quorumkv_future_timestamps_refused_total",
                "Client timestamps refused for being too far ahead of the node's clock.",
                &self.future_timestamps_refused,
            ),
            (
                "quorumkv_read_repairs_skipped_total",
                "Repairs of stale replicas dropped because limits.max_pending_read_repairs were pending.",
                &self.read_repairs_skipped,
            ),
            (
                "quorumkv_read_retries_total",
                "Replicas a read asked beyond its first R because one asked had failed.",
                &self.read_retries,
            ),
            (
                "quorumkv_speculative_reads_total",
                "Replicas a read asked beyond its first R because replies were slower than timeouts.speculative_read_ms.",
                &self.speculative_reads,
            ),
            (
                "quorumkv_overloaded_total",
                "Client requests answered overloaded (in-flight budget spent).",
                &self.overloaded,
            ),
            (
                "quorumkv_aae_exchanges_total",
                "Anti-entropy exchanges this node started.",
                &self.aae_exchanges,
            ),
            (
                "quorumkv_aae_exchange_errors_total",
                "Anti-entropy exchanges that failed (peer unreachable or refusing).",
                &self.aae_exchange_errors,
            ),
            (
                "quorumkv_aae_keys_repaired_total",
                "Keys anti-entropy found different on two replicas and repaired.",
                &self.aae_keys_repaired,
            ),
            (
                "quorumkv_tombstones_reaped_total",
                "Tombstones this node removed once every replica held them for tombstones.min_age_ms.",
                &self.tombstones_reaped,
            ),
            (
                "quorumkv_tombstones_blocked_unreachable_total",
                "Old-enough tombstones kept because a member did not answer the reaper's check.",
                &self.tombstones_blocked_unreachable,
            ),
            (
                "quorumkv_tombstones_blocked_hints_total",
                "Old-enough tombstones kept because a member holds a hint for the key.",
                &self.tombstones_blocked_hints,
            ),
            (
                "quorumkv_tombstones_blocked_disagree_total",
                "Old-enough tombstones kept because a replica holds another copy or has not held it long enough.",
                &self.tombstones_blocked_disagree,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(
                out,
                "{name}{{{node_label}}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in [
            (
                "quorumkv_aae_ranges_differing",
                "Ranges whose last anti-entropy exchange found differences.",
                &self.aae_ranges_differing,
            ),
            (
                "quorumkv_aae_oldest_full_compare_seconds",
                "Seconds since the least recently fully compared range was compared in full.",
                &self.aae_oldest_full_compare_seconds,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(
                out,
                "{name}{{{node_label}}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP quorumkv_requests_inflight Client requests being coordinated now."
        );
        let _ = writeln!(out, "# TYPE quorumkv_requests_inflight gauge");
        let _ = writeln!(
            out,
            "quorumkv_requests_inflight{{{node_label}}} {}",
            self.inflight.load(Ordering::Relaxed)
        );
        self.render_hints(&mut out, &node_label);
        self.render_detector(&mut out, &node_label);
        out
    }
}

/// Connections the endpoint serves at once; scrapers are few, and a bound keeps a
/// misbehaving one from tying up the node.
const MAX_SCRAPERS: usize = 16;
/// Longest request header accepted.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Bind the metrics endpoint.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serve `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, node: String) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let (metrics, node) = (Arc::clone(&metrics), node.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = vec![0u8; MAX_REQUEST_BYTES];
            let mut len = 0;
            // Read until the end of the request header, bounded in size and time.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let (status, body) =
                if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
                    ("200 OK", metrics.render(&node))
                } else {
                    (
                        "404 Not Found",
                        "only GET /metrics is served here\n".to_string(),
                    )
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: recorded values show up in the exposition with the right names, labels,
    /// counts and units.
    #[test]
    fn render_exposition() {
        let m = Metrics::default();
        m.coordinator_done("put", Duration::from_millis(3), false);
        m.coordinator_done("put", Duration::from_millis(5), true);
        m.replica_done("write", Duration::from_micros(800));
        m.read_repairs_sent(2);
        m.siblings_per_read(2);
        let text = m.render("n1");
        assert!(text.contains("# TYPE quorumkv_coordinator_latency_seconds summary"));
        assert!(
            text.contains("quorumkv_coordinator_latency_seconds_count{node=\"n1\",op=\"put\"} 2"),
            "{text}"
        );
        assert!(text.contains("quorumkv_quorum_failures_total{node=\"n1\",op=\"put\"} 1"));
        assert!(text.contains("quorumkv_requests_total{node=\"n1\",op=\"put\"} 2"));
        assert!(text.contains("quorumkv_read_repairs_total{node=\"n1\"} 2"));
        let p100 = text
            .lines()
            .find(|l| {
                l.starts_with(
                    "quorumkv_coordinator_latency_seconds{node=\"n1\",op=\"put\",quantile=\"1\"}",
                )
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!((p100 - 0.005).abs() < 0.0001, "max put latency {p100}");
        {
            let _g = m.start_request();
            assert!(m
                .render("n1")
                .contains("quorumkv_requests_inflight{node=\"n1\"} 1"));
        }
        assert!(m
            .render("n1")
            .contains("quorumkv_requests_inflight{node=\"n1\"} 0"));
    }
}
