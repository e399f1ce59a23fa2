//! The node's environment: the one seam through which protocol code reaches time, timers,
//! randomness and task spawning.
//!
//! Everything non-deterministic a node does goes through [`Env`], chosen when the node is
//! built: [`TokioEnv`] in a real process (the tokio runtime's clock, timers and tasks, the
//! OS random source), `sim::SimEnv` in the deterministic simulation (virtual time of a
//! paused single-threaded runtime, a per-node skewed and drifting wall clock, a seeded
//! random generator, and tasks that die when the simulated node crashes). With every
//! source of nondeterminism behind this trait, the same async protocol code runs in both;
//! see "Determinism" in docs/ARCHITECTURE.md for why we chose this over a sans-IO core.
//!
//! The protocol modules may not bypass the seam: `clippy.toml` disallows the direct calls
//! (`tokio::spawn`, `Instant::now`, `SystemTime::now`, `tokio::time::*`,
//! `spawn_blocking`, OS randomness, sockets) and `sim::seam` scans their sources in a test.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

pub use tokio::time::Instant;

use crate::clock::Clock;

/// A boxed, sendable future (the seam must be object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Time, timers, randomness and tasks, as one node sees them. The wall clock is the
/// [`Clock`] supertrait.
pub trait Env: Clock {
    /// Monotonic time, for deadlines and latencies.
    fn now(&self) -> Instant;

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;

    /// Run `task` in the background, owned by this node: in the simulation it ends when
    /// the node crashes, as a process's tasks do.
    fn spawn(&self, task: BoxFuture<'static, ()>);

    /// Run `job` (blocking storage work) where it cannot stall the node's other tasks,
    /// completing when it has run. The simulation runs it in place.
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()>;

    /// A random number: from the OS in a real node, from the run's seed in simulation.
    fn random_u64(&self) -> u64;
}

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct Elapsed;

/// `base_ms` plus or minus up to a quarter of it, at random (from `env`): how the
/// periodic loops (anti-entropy, reaping) spread their rounds so nodes do not act in step.
pub fn jittered(env: &dyn Env, base_ms: u64) -> std::time::Duration {
    let quarter = base_ms / 4;
    let ms = base_ms - quarter + env.random_u64() % (2 * quarter + 1);
    std::time::Duration::from_millis(ms)
}

/// Run `fut` until `deadline` on `env`'s timers. The future is polled before the timer,
/// so a future that is ready at the deadline wins (the same outcome on every run).
pub async fn timeout_at<F: Future>(
    env: &dyn Env,
    deadline: Instant,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = env.sleep_until(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Run the blocking closure `f` through [`Env::run_blocking`] and return its result.
/// `None` if the job was lost (its thread panicked or the runtime is shutting down).
pub async fn blocking<T: Send + 'static>(
    env: &dyn Env,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let out = Arc::clone(&slot);
    env.run_blocking(Box::new(move || {
        let v = f();
        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }))
    .await;
    let v = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    v
}

/// A small, fast, seedable generator (xoshiro256**, seeded through SplitMix64). Written
/// here rather than taken from `rand` so a recorded seed replays the same run for as long
/// as this code is unchanged, whatever a dependency's next version does to its streams.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for simulation choices, and branch-free.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A fresh generator derived from this one (for a component with a stream of its own,
    /// so adding draws in one component does not shift another's).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// A real node's environment: tokio's clock, timers and tasks, and the OS random source.
pub struct TokioEnv {
    clock: Arc<dyn Clock>,
    rng: Mutex<Rng>,
}

impl TokioEnv {
    /// An environment whose wall clock is `clock` (the system clock in production; tests
    /// pass a manual one).
    #[allow(clippy::disallowed_methods)] // the production seam is where OS randomness enters
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        use ring::rand::SecureRandom as _;
        let mut seed = [0u8; 8];
        if ring::rand::SystemRandom::new().fill(&mut seed).is_err() {
            // The OS random source failing is not recoverable here; the time and pid are
            // unique enough for what randomness is used for (incarnations, generations).
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            seed = (t ^ u64::from(std::process::id()) << 32).to_le_bytes();
        }
        Arc::new(TokioEnv {
            clock,
            rng: Mutex::new(Rng::new(u64::from_le_bytes(seed))),
        })
    }

    /// The production environment: the system clock.
    pub fn system() -> Arc<Self> {
        Self::new(Arc::new(crate::clock::SystemClock))
    }
}

impl Clock for TokioEnv {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

#[allow(clippy::disallowed_methods)] // the production side of the seam
impl Env for TokioEnv {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline))
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }

    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()> {
        let handle = tokio::task::spawn_blocking(job);
        Box::pin(async move {
            let _ = handle.await;
        })
    }

    fn random_u64(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: one seed gives one stream (replay), different seeds give different streams,
    /// and `below` stays in range.
    #[test]
    fn rng_is_seeded_and_bounded() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(8);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| r.below(3) < 3));
        assert_eq!(r.below(0), 0);
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2000..3000).contains(&hits), "{hits}");
    }

    /// Goal: `timeout_at` returns the future's value when it is ready, `Elapsed` when the
    /// deadline passes first (on paused, virtual time).
    #[tokio::test(start_paused = true)]
    async fn timeout_at_on_the_seam() {
        let env = TokioEnv::system();
        let now = env.now();
        let ok = timeout_at(&*env, now + std::time::Duration::from_secs(1), async { 5 }).await;
        assert_eq!(ok, Ok(5));
        let late = timeout_at(
            &*env,
            now + std::time::Duration::from_secs(1),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(late, Err(Elapsed));
        assert_eq!(blocking(&*env, || 3 + 4).await, Some(7));
    }
}
