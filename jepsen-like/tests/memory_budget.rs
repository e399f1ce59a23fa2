//! The memory budget holds on real memory: this test binary installs the
//! library's counting allocator, as the `jepsen-like` binary does, so the
//! check budgets the whole process heap, and the heap's high-water mark is
//! measured independently of the search's own accounting.
//!
//! One test per file on purpose: the heap figures are process-wide, and a
//! concurrently running test would blur them.

use jepsen_like::check::{check, CheckOptions, Verdict};
use jepsen_like::gen::{easy_key, hard_key};
use jepsen_like::mem::{self, CountingAllocator, FLUSH_BYTES};
use jepsen_like::{History, ModelKind, Value};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Goal: on a history built to exhaust the caches (keys whose proof needs
/// about n·2ⁿ configurations), with two worker threads and every key
/// judged, the process heap never passes `--memory-limit-mb` (beyond the
/// counter's per-thread slack), the exhausted keys end unknown rather than
/// the process growing, the budget is actually used (so the test would
/// notice a cache that ignored it), and an easy key's failure is still
/// reported.
#[test]
fn memory_budget_holds_on_history_built_to_exhaust_caches() {
    CountingAllocator::mark_installed();
    let mut ops = Vec::new();
    for k in 0..3 {
        ops.extend(hard_key(k, 26, k * 100));
    }
    ops.extend(easy_key(3, 20, true, 1000));
    let history = History::new(ops);
    let limit_mb = 24;
    let options = CheckOptions {
        threads: Some(2),
        memory_limit_mb: limit_mb,
        all_failures: true,
        ..CheckOptions::new(ModelKind::MultiRegister)
    };
    mem::reset_peak();
    let r = check(&history, &options).expect("check");
    let peak = mem::peak_heap_bytes().expect("allocator installed");
    let limit = limit_mb << 20;
    let slack = 4 * FLUSH_BYTES as usize;
    assert!(
        peak <= limit + slack,
        "heap peaked at {} KiB, over the {} KiB budget",
        peak >> 10,
        limit >> 10
    );
    // Each search may use its share, (budget − heap in use) / threads, and a cache stops
    // at about three quarters of it (a doubling that would not fit is refused). How many
    // hard keys run at the same moment depends on scheduling, so the peak proves the
    // caches were exhausted once it passes half of one share.
    let share = limit / 2;
    assert!(
        peak > share / 2,
        "heap peaked at only {} KiB: the history did not exhaust the caches",
        peak >> 10
    );
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(
        r.unknown_keys,
        vec![Value::Int(0), Value::Int(1), Value::Int(2)]
    );
    assert!(r.message.unwrap_or_default().contains("memory"));
    let heap = r.heap.expect("heap figures with the allocator installed");
    assert!(heap.peak_bytes <= limit + slack, "{heap:?}");
}
