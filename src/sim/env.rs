//! A simulated node's environment and wall clock.
//!
//! Time is the virtual time of the simulator's paused, single-threaded tokio runtime: it
//! advances only when every task waits, jumping to the next timer, so a run takes the CPU
//! time its work needs, never the wall time its timeouts span. Each simulated *machine*
//! has a [`SimClock`] (skew, drift and jumps, kept across process restarts, as a real
//! machine's clock is); each simulated *process* has a [`SimEnv`] whose tasks all end when
//! the process crashes.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::future::Future as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::clock::Clock;
use crate::env::{BoxFuture, Env, Instant, Rng};

/// The wall clock's reading at virtual time zero: 2026-01-01T00:00:00Z, in ms.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

#[derive(Debug)]
struct ClockState {
    /// Virtual time of the run's start.
    origin: Instant,
    /// Fixed offset from true time (skew and accumulated jumps), ms.
    offset_ms: i64,
    /// Rate error in parts per million since `drift_from`.
    drift_ppm: i64,
    /// When the current drift began, and the drift accumulated before it (ms).
    drift_from: Instant,
    drift_before_ms: i64,
}

/// One simulated machine's wall clock: true (virtual) time, plus skew, drift and jumps.
#[derive(Debug)]
pub struct SimClock {
    state: Mutex<ClockState>,
}

impl SimClock {
    /// A correct clock, starting at `origin`.
    pub fn new(origin: Instant) -> Arc<Self> {
        Arc::new(SimClock {
            state: Mutex::new(ClockState {
                origin,
                offset_ms: 0,
                drift_ppm: 0,
                drift_from: origin,
                drift_before_ms: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Step the clock by `ms` (negative: backwards), as an NTP step or an operator does.
    pub fn jump(&self, ms: i64) {
        let mut s = self.lock();
        s.offset_ms = s.offset_ms.saturating_add(ms);
    }

    /// Let the clock run fast (`ppm` > 0) or slow from now on.
    pub fn set_drift(&self, ppm: i64, now: Instant) {
        let mut s = self.lock();
        let drifted = drift_ms(&s, now);
        s.drift_before_ms = drifted;
        s.drift_from = now;
        s.drift_ppm = ppm;
    }

    /// Milliseconds since the epoch at virtual time `now`.
    pub fn reading_at(&self, now: Instant) -> u64 {
        let s = self.lock();
        let true_ms = now.saturating_duration_since(s.origin).as_millis() as i64;
        let ms = EPOCH_MS as i64 + true_ms + s.offset_ms + drift_ms(&s, now);
        ms.max(0) as u64
    }
}

fn drift_ms(s: &ClockState, now: Instant) -> i64 {
    let since = now.saturating_duration_since(s.drift_from).as_millis() as i64;
    s.drift_before_ms + since.saturating_mul(s.drift_ppm) / 1_000_000
}

/// One simulated process: its machine's clock, its own seeded random stream, and the
/// tasks it runs (aborted together when it crashes, frozen together while it stalls).
pub struct SimEnv {
    clock: Arc<SimClock>,
    rng: Mutex<Rng>,
    tasks: Mutex<Vec<AbortHandle>>,
    alive: AtomicBool,
    /// While set and in the future, the process is stalled: none of its tasks runs.
    stalled_until: Arc<Mutex<Option<Instant>>>,
}

impl SimEnv {
    /// A process on the machine whose clock is `clock`, drawing randomness from `seed`.
    pub fn new(clock: Arc<SimClock>, seed: u64) -> Arc<Self> {
        Arc::new(SimEnv {
            clock,
            rng: Mutex::new(Rng::new(seed)),
            tasks: Mutex::new(Vec::new()),
            alive: AtomicBool::new(true),
            stalled_until: Arc::new(Mutex::new(None)),
        })
    }

    /// Stall the process until `until` (a GC pause, a stopped VM, a starved CPU): none of
    /// its tasks makes progress before then — timers due meanwhile fire late, requests
    /// wait unhandled — and at `until` everything that became ready runs at once.
    pub fn stall(&self, until: Instant) {
        *self.stalled_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    /// Kill the process: every task it runs stops at its next await, and nothing it tries
    /// to spawn afterwards runs.
    pub fn crash(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
    }

    /// Whether the process still runs.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

impl Clock for SimEnv {
    fn now_ms(&self) -> u64 {
        self.clock.reading_at(self.now())
    }
}

// The simulated side of the seam: virtual time is the paused runtime's, and tasks are the
// runtime's, tracked so a crash can end them.
#[allow(clippy::disallowed_methods)]
impl Env for SimEnv {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline))
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        if !self.alive() {
            return;
        }
        let handle = tokio::spawn(stallable(Arc::clone(&self.stalled_until), task)).abort_handle();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= 256 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(handle);
    }

    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()> {
        // Simulated storage never blocks: run in place, keeping the schedule one thread's.
        job();
        Box::pin(std::future::ready(()))
    }

    fn random_u64(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u64()
    }
}

/// `task`, frozen whenever `stalled_until` lies in the future: polled then, it waits for
/// the stall's end instead of running.
#[allow(clippy::disallowed_methods)] // the simulated side of the seam
fn stallable(
    stalled_until: Arc<Mutex<Option<Instant>>>,
    mut task: BoxFuture<'static, ()>,
) -> BoxFuture<'static, ()> {
    let mut wait: Option<(Instant, std::pin::Pin<Box<tokio::time::Sleep>>)> = None;
    Box::pin(std::future::poll_fn(move |cx| {
        let until = *stalled_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = until.filter(|u| Instant::now() < *u) {
            if wait.as_ref().map(|(u, _)| *u) != Some(until) {
                wait = Some((until, Box::pin(tokio::time::sleep_until(until))));
            }
            if let Some((_, sleep)) = wait.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return std::task::Poll::Pending;
                }
            }
        }
        wait = None;
        task.as_mut().poll(cx)
    }))
}

/// Sleep on the simulator's virtual time (for the simulator's own tasks: clients, nemesis).
#[allow(clippy::disallowed_methods)]
pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await
}

/// Virtual now (for the simulator's own tasks).
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the simulated clock follows virtual time and applies skew, drift and jumps,
    /// backwards included.
    #[tokio::test(start_paused = true)]
    async fn clock_skew_drift_and_jumps() {
        let t0 = now();
        let c = SimClock::new(t0);
        assert_eq!(c.reading_at(t0), EPOCH_MS);
        c.jump(-5_000);
        assert_eq!(c.reading_at(t0 + Duration::from_secs(10)), EPOCH_MS + 5_000);
        c.set_drift(100_000, t0 + Duration::from_secs(10)); // 10% fast from t=10 s
        assert_eq!(
            c.reading_at(t0 + Duration::from_secs(20)),
            EPOCH_MS + 15_000 + 1_000
        );
    }
}
