//! Real memory accounting for the memory budget.
//!
//! The search caches know their own size, but a budget on the caches alone
//! does not bound what the process holds: the parsed history, the per-key
//! subhistories, allocator slack and every worker thread's cache all count
//! toward what the machine sees. [`CountingAllocator`] wraps the system
//! allocator and keeps a running total of live heap bytes; a program that
//! installs it as its `#[global_allocator]` (the `jepsen-like` binary does)
//! lets [`heap_bytes`] report the real figure, which the checker consults
//! before every cache growth. Without it, [`heap_bytes`] is `None` and only
//! the caches' own (exact, capacity-based) sizes are budgeted.
//!
//! Counting is per thread and batched ([`FLUSH_BYTES`]) so the hot path is
//! one thread-local add, not a contended atomic; the global total is
//! therefore off by at most `threads × FLUSH_BYTES`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// A thread publishes its local count once it drifts this far: small
/// enough to be noise against a budget in MiB, large enough that the
/// shared counter is touched rarely.
pub const FLUSH_BYTES: isize = 256 * 1024;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // `const` and no destructor: safe to touch from inside the allocator
    // (no lazy initialisation that could itself allocate).
    static LOCAL: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting live bytes (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator;

#[inline]
fn record(delta: isize) {
    // `try_with` fails only while the thread is being torn down; count
    // those bytes straight into the global total.
    let flushed = LOCAL.try_with(|l| {
        let v = l.get() + delta;
        if v.abs() >= FLUSH_BYTES {
            l.set(0);
            v
        } else {
            l.set(v);
            0
        }
    });
    let publish = flushed.unwrap_or(delta);
    if publish != 0 {
        let now = LIVE.fetch_add(publish, Ordering::Relaxed) + publish;
        if publish > 0 {
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the bookkeeping touches only atomics and a const thread-local
// `Cell`, never allocates, and cannot unwind.
unsafe impl GlobalAlloc for CountingAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            record(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        record(-(layout.size() as isize));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            record(new_size as isize - layout.size() as isize);
        }
        p
    }
}

impl CountingAllocator {
    /// Declares the allocator installed, so [`heap_bytes`] is trusted.
    /// Call it first thing in `main` of a program whose
    /// `#[global_allocator]` is a `CountingAllocator` (allocations made
    /// before the call are counted all the same).
    pub fn mark_installed() {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// Live heap bytes of the whole process, if a [`CountingAllocator`] is
/// installed (and [`CountingAllocator::mark_installed`] was called).
pub fn heap_bytes() -> Option<usize> {
    // The calling thread's unpublished drift is known exactly; add it.
    let local = LOCAL.try_with(Cell::get).unwrap_or(0);
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| (LIVE.load(Ordering::Relaxed) + local).max(0) as usize)
}

/// The highest [`heap_bytes`] seen since the start or the last
/// [`reset_peak`], if the counting allocator is installed.
pub fn peak_heap_bytes() -> Option<usize> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| PEAK.load(Ordering::Relaxed).max(0) as usize)
}

/// Restarts the high-water mark at the current live total.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// The process's peak resident set size (`VmHWM`), on Linux: what the
/// operating system, and an out-of-memory killer, actually sees.
pub fn max_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// The process's current resident set size (`VmRSS`), on Linux.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the allocator hands out usable memory and its counter moves
    /// by the sizes asked for (exercised directly, since the unit-test
    /// binary does not install it globally).
    #[test]
    fn counts_alloc_realloc_dealloc() {
        let a = CountingAllocator;
        let before = LIVE.load(Ordering::Relaxed) + LOCAL.with(|l| l.get());
        let layout = Layout::from_size_align(1 << 20, 8).expect("layout");
        // SAFETY: non-zero size; the pointer is used within its layout and
        // freed with the layout it has at that point.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, 1 << 20);
            let q = a.realloc(p, layout, 2 << 20);
            assert!(!q.is_null());
            assert_eq!(*q.add((1 << 20) - 1), 7);
            let mid = LIVE.load(Ordering::Relaxed) + LOCAL.with(|l| l.get());
            assert_eq!(mid - before, 2 << 20);
            a.dealloc(q, Layout::from_size_align(2 << 20, 8).expect("layout"));
        }
        let after = LIVE.load(Ordering::Relaxed) + LOCAL.with(|l| l.get());
        assert_eq!(after, before);
    }

    /// Goal: on Linux the resident-set figures are readable and plausible.
    #[test]
    fn rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = rss_bytes().expect("VmRSS");
            let hwm = max_rss_bytes().expect("VmHWM");
            assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
        }
    }
}
