//! Clocks: the protocol reads time only through [`Clock`], so a simulation can run a node
//! with a skewed or frozen clock. Wall time stamps a sibling's "last modified", bounds
//! how far ahead a client timestamp may be (`limits.max_clock_skew_ms`), and drives the
//! hybrid logical clock of the last-write-wins policies.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

// The production wall clock: the one place protocol time meets the OS clock.
#[allow(clippy::disallowed_methods)]
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock set by hand, for tests and simulation.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock(AtomicU64::new(ms))
    }

    /// Move the clock to `ms` (backwards too: that is what skew looks like).
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The operating system's clock moved by an offset that can change while the node runs:
/// the clock-skew fault of the Jepsen-style harness (`quorumkv jepsen --nemesis
/// clock-skew`), reached through `ClientRequest::SetClockOffset`. Nodes only build one
/// when `faults.allow_clock_offset` is set in `node.toml`, so a production node's clock
/// cannot be moved by any request. Skewing the process's view of time rather than the
/// kernel's is what libfaketime does for Jepsen's tests in containers, which share the
/// host's kernel clock and cannot set it.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl OffsetClock {
    /// The system clock, not yet moved.
    pub fn new() -> Self {
        OffsetClock::default()
    }

    /// Move the clock `ms` milliseconds away from the system clock (negative: behind).
    pub fn set_offset_ms(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::SeqCst);
    }

    /// The current offset.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> u64 {
        SystemClock
            .now_ms()
            .saturating_add_signed(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// A hybrid logical clock (µs): never behind the physical clock, never behind anything it
/// has observed, strictly increasing. A node whose wall clock is slow therefore cannot
/// write "into the past" of a value it has seen (`max(physical, last_seen + 1)`).
pub struct Hlc {
    clock: std::sync::Arc<dyn Clock>,
    last: AtomicU64,
}

impl Hlc {
    /// An HLC over `clock`.
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Hlc {
            clock,
            last: AtomicU64::new(0),
        }
    }

    /// Record a timestamp seen in data from elsewhere.
    pub fn observe(&self, ts: u64) {
        self.last.fetch_max(ts, Ordering::SeqCst);
    }

    /// A new timestamp, greater than every earlier one and everything observed.
    pub fn tick(&self) -> u64 {
        let physical = self.clock.now_ms().saturating_mul(1000);
        let mut last = self.last.load(Ordering::SeqCst);
        loop {
            // Saturating: only node-issued timestamps are observed (client timestamps never
            // are), so the end of the range is unreachable in practice, but a corrupt
            // stored stamp must not be able to panic or wrap the clock.
            let next = physical.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Goal: the HLC follows the physical clock, never goes backwards when the physical
    /// clock does, and jumps past observed timestamps.
    #[test]
    fn offset_clock_moves_both_ways() {
        // Goal: the offset is applied on top of the system clock, in both directions.
        let c = OffsetClock::new();
        let base = SystemClock.now_ms();
        c.set_offset_ms(60_000);
        assert!(c.now_ms() >= base + 60_000);
        c.set_offset_ms(-60_000);
        assert!(c.now_ms() < base);
        assert_eq!(c.offset_ms(), -60_000);
    }

    #[test]
    fn hlc_rules() {
        let wall = Arc::new(ManualClock::new(1_000));
        let hlc = Hlc::new(wall.clone());
        assert_eq!(hlc.tick(), 1_000_000);
        assert_eq!(hlc.tick(), 1_000_001);
        wall.set(500);
        assert_eq!(
            hlc.tick(),
            1_000_002,
            "a clock going back must not move the HLC back"
        );
        hlc.observe(9_000_000);
        assert_eq!(hlc.tick(), 9_000_001);
        wall.set(20_000);
        assert_eq!(hlc.tick(), 20_000_000);
    }

    /// Goal: an observed timestamp at the end of the range saturates instead of
    /// overflowing (a panic in debug builds, a wrap to the past in release).
    #[test]
    fn hlc_saturates() {
        let hlc = Hlc::new(Arc::new(ManualClock::new(1_000)));
        hlc.observe(u64::MAX);
        assert_eq!(hlc.tick(), u64::MAX);
        assert_eq!(hlc.tick(), u64::MAX);
    }
}
