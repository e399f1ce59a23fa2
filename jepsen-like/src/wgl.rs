//! The linearizability search: Wing & Gong's algorithm with Lowe's
//! memoization ("just-in-time linearization"), as in Knossos's `wgl` and
//! porcupine.
//!
//! Call and return entries sit in a doubly linked list in real-time order.
//! The search walks the list from the front: a call entry whose operation
//! the model accepts is *lifted* (its call and return are unlinked) and
//! pushed on a stack; reaching a return entry means that operation had to
//! be linearized already, so the search backtracks (*unlifts* the top of
//! the stack and tries the next candidate). Every (set of linearized ops,
//! model state) reached is cached; reaching it again cannot succeed, so it
//! is pruned. The set is a bitset, hashed incrementally with Zobrist keys.
//!
//! Indeterminate operations have no return entry (their return is at
//! +infinity): if the walk runs off the end of the list, only such
//! operations remain and they may stay un-linearized, so the history is
//! linearizable.
//!
//! One partial-order reduction on top: a read-only operation that the
//! model and real time both allow *now* is linearized at once without
//! branching (see [`Model::is_read_only`]); only state-changing operations
//! create choice points.
//!
//! The loop checks a [`Cancel`] token every few thousand steps so a
//! timeout (or another key's failure) yields an unknown verdict instead of
//! running forever, and [`Limits`] caps one search's steps, time and
//! memory; the cache vets each of its growths against the memory caps
//! before allocating, so a budget is kept rather than overshot.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::model::Model;

/// A shared stop signal: a deadline plus a flag any thread can raise.
#[derive(Debug, Default)]
pub struct Cancel {
    deadline: Option<Instant>,
    flag: AtomicBool,
}

impl Cancel {
    /// A token that fires at `deadline` (never, if `None`).
    pub fn new(deadline: Option<Instant>) -> Cancel {
        Cancel {
            deadline,
            flag: AtomicBool::new(false),
        }
    }

    /// Raises the flag: every search using this token stops soon.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// True once cancelled or past the deadline.
    pub fn is_cancelled(&self) -> bool {
        if self.flag.load(Ordering::Relaxed) {
            return true;
        }
        match self.deadline {
            Some(d) if Instant::now() >= d => {
                self.cancel();
                true
            }
            _ => false,
        }
    }
}

/// One operation handed to the search.
#[derive(Debug, Clone)]
pub struct SearchOp<O> {
    /// The model operation.
    pub op: O,
    /// When it was invoked (any monotone clock, e.g. history index).
    pub call: u64,
    /// When it returned; `None` for indeterminate operations, whose return
    /// is at +infinity and which may remain un-linearized.
    pub ret: Option<u64>,
}

/// Where the search got stuck on a non-linearizable history.
#[derive(Debug, Clone)]
pub struct Stuck<S> {
    /// The longest linearized prefix found (indices into the input ops).
    pub prefix: Vec<usize>,
    /// The operation whose return was reached without being able to
    /// linearize it after that prefix.
    pub op: usize,
    /// The other operations that were pending (concurrent candidates) at
    /// that point; none of them could help.
    pub pending: Vec<usize>,
    /// The model state after the prefix.
    pub state: S,
}

/// The search's answer.
#[derive(Debug, Clone)]
pub enum Outcome<S> {
    /// Linearizable, with one witness order (indices into the input; info
    /// operations left out were never linearized).
    Linearizable(Vec<usize>),
    /// Not linearizable.
    NotLinearizable(Stuck<S>),
    /// Stopped by the [`Cancel`] token.
    Cancelled,
    /// Gave up: the cache would have outgrown [`Limits::max_bytes`] or
    /// [`Limits::heap_limit`].
    TooLarge,
    /// Gave up after [`Limits::max_steps`] iterations.
    OutOfSteps,
    /// Gave up at [`Limits::deadline`].
    OutOfTime,
}

/// Statistics about one search, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Stats {
    /// Loop iterations.
    pub steps: u64,
    /// Distinct (linearized set, state) configurations cached.
    pub cached: u64,
    /// Times the search backtracked.
    pub backtracks: u64,
}

const NONE: u32 = u32::MAX;
const HEAD: u32 = 0;
/// How often (in loop iterations) the cancel token is polled.
const CANCEL_POLL: u64 = 4096;

/// FxHash-style hasher: the cache keys are already well mixed 64-bit
/// values, and model states are small, so SipHash would only cost time.
/// Also used by the history and key-splitting code, whose maps are keyed
/// by small values (process ids, keys, register values).
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(b as u64);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
}

impl FxHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A `HashMap` build-hasher for [`FxHasher`].
pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn state_hash<S: Hash>(s: &S) -> u64 {
    let mut h = FxHasher::default();
    s.hash(&mut h);
    splitmix(h.finish())
}

/// Memo of visited configurations. Bitsets are stored sparsely in one flat
/// arena: the number of leading all-ones words, then (index, word) pairs
/// for the remaining non-zero words. Because definite ops are numbered
/// first (in invocation order) and indeterminate ones last, a configuration
/// is a long run of ones, a short window and the indeterminate tail, so this
/// is far smaller than the dense bitset on big keys.
///
/// Everything lives in a handful of flat vectors (an open-addressing table
/// of entry numbers, then per-entry hash, arena offset and state), never
/// one small allocation per entry: the cache's size is then known exactly
/// from the capacities, every growth is a single large allocation that can
/// be vetted against the budget *before* it happens, and freeing the cache
/// hands whole mappings back to the operating system instead of leaving a
/// fragmented heap behind (with a per-entry `Vec` in a `HashMap`, the real
/// footprint was about three times the old estimate).
struct Cache<S> {
    /// Entry number + 1 per slot (0 = empty); linear probing; the length
    /// is a power of two and at most half the slots are used.
    table: Vec<u32>,
    /// Full hash of each entry, to skip most comparisons.
    hashes: Vec<u64>,
    /// Where each entry's encoding starts in `arena`; it ends where the
    /// next one starts (entries are appended in order).
    starts: Vec<u64>,
    arena: Vec<u64>,
    states: Vec<S>,
    scratch: Vec<u64>,
}

/// The cache would outgrow its budget.
struct OverBudget;

/// What a cache may hold: its own share, and (when the counting allocator
/// is installed) a ceiling on the whole process's heap.
#[derive(Clone, Copy)]
struct CacheBudget {
    max_bytes: usize,
    heap_limit: Option<usize>,
}

impl CacheBudget {
    /// May the cache, now holding `own` bytes, allocate `extra` more?
    fn allows(&self, own: usize, extra: usize) -> bool {
        if own.saturating_add(extra) > self.max_bytes {
            return false;
        }
        match (self.heap_limit, crate::mem::heap_bytes()) {
            (Some(limit), Some(heap)) => heap.saturating_add(extra) <= limit,
            _ => true,
        }
    }
}

fn encode(bits: &[u64], out: &mut Vec<u64>) {
    out.clear();
    let lead = bits.iter().take_while(|&&w| w == u64::MAX).count();
    out.push(lead as u64);
    for (i, &w) in bits.iter().enumerate().skip(lead) {
        if w != 0 {
            out.push(i as u64);
            out.push(w);
        }
    }
}

/// The capacity a full vector grows to (doubling, as `Vec` would).
fn grown(cap: usize, need: usize, min: usize) -> usize {
    cap.saturating_mul(2).max(need).max(min)
}

const INITIAL_SLOTS: usize = 1024;

impl<S: Eq + Clone> Cache<S> {
    fn new() -> Self {
        Cache {
            table: vec![0; INITIAL_SLOTS],
            hashes: Vec::new(),
            starts: Vec::new(),
            arena: Vec::new(),
            states: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn entry(&self, k: usize) -> &[u64] {
        let start = self.starts[k] as usize;
        let end = self
            .starts
            .get(k + 1)
            .map_or(self.arena.len(), |&e| e as usize);
        &self.arena[start..end]
    }

    /// The slot holding (key, enc, state), or the empty slot where it
    /// belongs.
    fn probe(&self, key: u64, enc: &[u64], state: &S) -> (usize, bool) {
        let mask = self.table.len() - 1;
        let mut pos = key as usize & mask;
        loop {
            let e = self.table[pos];
            if e == 0 {
                return (pos, false);
            }
            let k = (e - 1) as usize;
            if self.hashes[k] == key && self.states[k] == *state && self.entry(k) == enc {
                return (pos, true);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Inserts; `Ok(false)` if it was already present, `Err` if storing it
    /// would break the budget (nothing is allocated then).
    fn insert(
        &mut self,
        key: u64,
        bits: &[u64],
        state: &S,
        budget: CacheBudget,
    ) -> Result<bool, OverBudget> {
        let mut enc = std::mem::take(&mut self.scratch);
        encode(bits, &mut enc);
        let (mut pos, present) = self.probe(key, &enc, state);
        if present {
            self.scratch = enc;
            return Ok(false);
        }
        let len = self.states.len();
        if len >= (u32::MAX - 1) as usize {
            self.scratch = enc;
            return Err(OverBudget);
        }
        // Vet every growth this insert triggers before making any: a
        // reallocation briefly holds old and new buffers, so the whole new
        // buffer counts.
        let entry_cap = grown(self.states.capacity(), len + 1, 1024);
        let grow_entries = len == self.states.capacity();
        let arena_need = self.arena.len() + enc.len();
        let arena_cap = grown(self.arena.capacity(), arena_need, 4096);
        let grow_arena = arena_need > self.arena.capacity();
        let grow_table = (len + 1) * 2 > self.table.len();
        let mut extra = 0usize;
        if grow_entries {
            extra += entry_cap * (16 + std::mem::size_of::<S>());
        }
        if grow_arena {
            extra += arena_cap * 8;
        }
        if grow_table {
            extra += self.table.len() * 2 * 4;
        }
        if extra > 0 && !budget.allows(self.bytes(), extra) {
            self.scratch = enc;
            return Err(OverBudget);
        }
        if grow_entries {
            self.hashes.reserve_exact(entry_cap - len);
            self.starts.reserve_exact(entry_cap - len);
            self.states.reserve_exact(entry_cap - len);
        }
        if grow_arena {
            self.arena.reserve_exact(arena_cap - self.arena.len());
        }
        if grow_table {
            self.rehash(self.table.len() * 2);
            pos = self.probe(key, &enc, state).0;
        }
        self.table[pos] = len as u32 + 1;
        self.hashes.push(key);
        self.starts.push(self.arena.len() as u64);
        self.arena.extend_from_slice(&enc);
        self.states.push(state.clone());
        self.scratch = enc;
        Ok(true)
    }

    fn rehash(&mut self, slots: usize) {
        self.table = vec![0; slots];
        let mask = slots - 1;
        for (k, &h) in self.hashes.iter().enumerate() {
            let mut pos = h as usize & mask;
            while self.table[pos] != 0 {
                pos = (pos + 1) & mask;
            }
            self.table[pos] = k as u32 + 1;
        }
    }

    fn len(&self) -> usize {
        self.states.len()
    }

    /// Heap bytes held (exact: what the buffers' capacities occupy).
    fn bytes(&self) -> usize {
        self.table.capacity() * 4
            + (self.hashes.capacity() + self.starts.capacity()) * 8
            + (self.arena.capacity() + self.scratch.capacity()) * 8
            + self.states.capacity() * std::mem::size_of::<S>()
    }
}

struct Frame<S> {
    /// The lifted call node.
    node: u32,
    /// State before the op was applied.
    state: S,
    /// Linearized without branching (read-only op): when backtracking
    /// past it, its level has no other alternatives worth trying.
    forced: bool,
}

/// The entry list: node 0 is the head sentinel, node `k + 1` is entry `k`.
struct List {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Operation index of each node (unused for the head).
    op: Vec<u32>,
    /// Whether a node is a call entry.
    is_call: Vec<bool>,
    /// For a call node, its return node (or NONE).
    ret_of: Vec<u32>,
}

impl List {
    fn build<O>(ops: &[SearchOp<O>]) -> List {
        // (time, kind: 0 = call, 1 = return, op): calls sort before returns
        // at equal times so that such ops count as concurrent.
        let mut entries: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            entries.push((op.call, 0, i as u32));
            if let Some(r) = op.ret {
                // A return never precedes its own call.
                entries.push((r.max(op.call), 1, i as u32));
            }
        }
        entries.sort_unstable();
        let n = entries.len() + 1;
        let mut list = List {
            next: vec![NONE; n],
            prev: vec![NONE; n],
            op: vec![0; n],
            is_call: vec![false; n],
            ret_of: vec![NONE; n],
        };
        let mut call_node = vec![NONE; ops.len()];
        for (k, &(_, kind, op)) in entries.iter().enumerate() {
            let node = k + 1;
            list.prev[node] = k as u32;
            list.next[k] = node as u32;
            list.op[node] = op;
            if kind == 0 {
                list.is_call[node] = true;
                call_node[op as usize] = node as u32;
            } else {
                list.ret_of[call_node[op as usize] as usize] = node as u32;
            }
        }
        list
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NONE {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NONE {
            self.prev[n as usize] = node;
        }
    }

    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let ret = self.ret_of[call as usize];
        if ret != NONE {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: u32) {
        let ret = self.ret_of[call as usize];
        if ret != NONE {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Search limits. Each one that is hit ends the search with its own
/// [`Outcome`], so callers can tell what ran out.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Give up (with [`Outcome::TooLarge`]) rather than let the cache grow
    /// past this many bytes; bounds memory on hopeless searches. Growth is
    /// vetted before it happens, so the cache never exceeds it.
    pub max_bytes: usize,
    /// Give up (also [`Outcome::TooLarge`]) rather than grow the cache
    /// while the whole process's heap, as counted by an installed
    /// [`crate::mem::CountingAllocator`], would pass this many bytes.
    /// Ignored when that allocator is not installed.
    pub heap_limit: Option<usize>,
    /// Give up (with [`Outcome::OutOfSteps`]) after about this many loop
    /// iterations: a cheap, deterministic effort cap for triage passes.
    pub max_steps: Option<u64>,
    /// Give up (with [`Outcome::OutOfTime`]) at this instant: this
    /// search's share of a time budget (the [`Cancel`] token carries the
    /// overall deadline).
    pub deadline: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: usize::MAX,
            heap_limit: None,
            max_steps: None,
            deadline: None,
        }
    }
}

/// Decides whether `ops` is linearizable with respect to `model`.
///
/// Two refinements for indeterminate operations. At each configuration the
/// candidates are tried in two phases, indeterminate operations first and
/// definite ones second: in real executions most indeterminate operations
/// took effect soon after invocation, so a greedy early linearization is
/// usually right (measured: ~10x fewer steps than trying them last on
/// generated histories). And indeterminate operations with identical model
/// ops are interchangeable once invoked (their return is at +infinity), so
/// only the earliest-invoked unused one of each kind is ever a candidate:
/// any linearization can swap in an earlier-invoked twin, which only
/// relaxes real-time constraints. This collapses the 2^n subsets of n
/// pending identical operations to n + 1 and is what makes proving
/// non-linearizability feasible with many timeouts in the history.
pub fn check<M: Model>(
    model: &M,
    ops: &[SearchOp<M::Op>],
    cancel: &Cancel,
    limits: Limits,
) -> (Outcome<M::State>, Stats) {
    // Renumber: definite ops first, then indeterminate ones, each in
    // invocation order, so the cache's sparse bitsets stay small.
    let mut perm: Vec<usize> = (0..ops.len()).collect();
    perm.sort_by_key(|&i| (ops[i].ret.is_none(), ops[i].call, i));
    let renumbered: Vec<SearchOp<M::Op>> = perm.iter().map(|&i| ops[i].clone()).collect();
    let (outcome, stats) = search(model, &renumbered, cancel, limits);
    let back = |v: Vec<usize>| -> Vec<usize> { v.into_iter().map(|i| perm[i]).collect() };
    let outcome = match outcome {
        Outcome::Linearizable(order) => Outcome::Linearizable(back(order)),
        Outcome::NotLinearizable(stuck) => Outcome::NotLinearizable(Stuck {
            prefix: back(stuck.prefix),
            op: perm.get(stuck.op).copied().unwrap_or(0),
            pending: back(stuck.pending),
            state: stuck.state,
        }),
        other => other,
    };
    (outcome, stats)
}

fn search<M: Model>(
    model: &M,
    ops: &[SearchOp<M::Op>],
    cancel: &Cancel,
    limits: Limits,
) -> (Outcome<M::State>, Stats) {
    let mut stats = Stats::default();
    if ops.len() >= (u32::MAX / 4) as usize {
        // Node ids are u32; no real per-key history comes close.
        return (Outcome::TooLarge, stats);
    }
    let mut list = List::build(ops);
    let words = ops.len().div_ceil(64).max(1);
    let zobrist: Vec<u64> = (0..ops.len() as u64)
        .map(|i| splitmix(i ^ 0x5bd1_e995))
        .collect();
    let is_info: Vec<bool> = ops.iter().map(|o| o.ret.is_none()).collect();
    // twin[i]: the previous (by invocation) indeterminate op with the same
    // model op, which must be linearized before i may be.
    let mut twin = vec![NONE; ops.len()];
    {
        let mut by_call: Vec<usize> = (0..ops.len()).filter(|&i| is_info[i]).collect();
        by_call.sort_by_key(|&i| (ops[i].call, i));
        let mut last: HashMap<&M::Op, u32> = HashMap::new();
        for i in by_call {
            if let Some(prev) = last.insert(&ops[i].op, i as u32) {
                twin[i] = prev;
            }
        }
    }
    let mut bits = vec![0u64; words];
    let mut bits_hash = 0u64;
    let mut cache: Cache<M::State> = Cache::new();
    let budget = CacheBudget {
        max_bytes: limits.max_bytes,
        heap_limit: limits.heap_limit,
    };
    let max_steps = limits.max_steps.unwrap_or(u64::MAX);
    let mut state = model.init();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut best: Option<Stuck<M::State>> = None;
    let mut entry = list.next[HEAD as usize];
    // First phase: indeterminate candidates; late phase: definite ones.
    let mut late_phase = false;
    let mut fresh = true;

    macro_rules! toggle {
        ($op:expr) => {{
            let i = $op as usize;
            bits[i / 64] ^= 1u64 << (i % 64);
            bits_hash ^= zobrist[i];
        }};
    }
    macro_rules! is_set {
        ($op:expr) => {{
            let i = $op as usize;
            bits[i / 64] & (1u64 << (i % 64)) != 0
        }};
    }

    loop {
        stats.steps += 1;
        if stats.steps % CANCEL_POLL == 0 {
            let stop = if cancel.is_cancelled() {
                Some(Outcome::Cancelled)
            } else if stats.steps >= max_steps {
                Some(Outcome::OutOfSteps)
            } else if limits.deadline.is_some_and(|d| Instant::now() >= d) {
                Some(Outcome::OutOfTime)
            } else {
                None
            };
            if let Some(stop) = stop {
                stats.cached = cache.len() as u64;
                return (stop, stats);
            }
        }
        let mut dead = false;
        if fresh {
            // A new configuration: take an enabled read-only op without
            // branching, if there is one.
            fresh = false;
            late_phase = false;
            let mut node = list.next[HEAD as usize];
            let mut took = false;
            while node != NONE && list.is_call[node as usize] {
                let op = list.op[node as usize];
                let sop = &ops[op as usize].op;
                if model.is_read_only(sop) {
                    if let Some(next_state) = model.step(&state, sop) {
                        toggle!(op);
                        let key = bits_hash ^ state_hash(&next_state);
                        let Ok(new) = cache.insert(key, &bits, &next_state, budget) else {
                            stats.cached = cache.len() as u64;
                            return (Outcome::TooLarge, stats);
                        };
                        if new {
                            let prev = std::mem::replace(&mut state, next_state);
                            stack.push(Frame {
                                node,
                                state: prev,
                                forced: true,
                            });
                            list.lift(node);
                            took = true;
                        } else {
                            // Explored before and failed: so does this
                            // configuration, which is equivalent to it.
                            toggle!(op);
                            dead = true;
                        }
                        break;
                    }
                }
                node = list.next[node as usize];
            }
            if took {
                fresh = true;
                entry = list.next[HEAD as usize];
                if entry == NONE {
                    break;
                }
                continue;
            }
            entry = list.next[HEAD as usize];
        }

        if !dead {
            if entry == NONE && !late_phase {
                // No return entries remain: every definite op is
                // linearized; the indeterminate rest may stay pending.
                break;
            }
            if entry != NONE && list.is_call[entry as usize] {
                let op = list.op[entry as usize];
                let skip = is_info[op as usize] == late_phase
                    || (twin[op as usize] != NONE && !is_set!(twin[op as usize]));
                if !skip {
                    let sop = &ops[op as usize].op;
                    if let Some(next_state) = model.step(&state, sop) {
                        toggle!(op);
                        let key = bits_hash ^ state_hash(&next_state);
                        let Ok(new) = cache.insert(key, &bits, &next_state, budget) else {
                            stats.cached = cache.len() as u64;
                            return (Outcome::TooLarge, stats);
                        };
                        if new {
                            let prev = std::mem::replace(&mut state, next_state);
                            stack.push(Frame {
                                node: entry,
                                state: prev,
                                forced: false,
                            });
                            list.lift(entry);
                            entry = list.next[HEAD as usize];
                            if entry == NONE {
                                break;
                            }
                            fresh = true;
                            continue;
                        }
                        toggle!(op);
                    }
                }
                entry = list.next[entry as usize];
                continue;
            }
            // End of the candidate region (a return entry).
            if !late_phase {
                late_phase = true;
                entry = list.next[HEAD as usize];
                continue;
            }
            // Both phases exhausted: this return's op cannot be linearized
            // after the current prefix.
            let depth = stack.len();
            if entry != NONE && best.as_ref().is_none_or(|b| depth > b.prefix.len()) {
                let mut pending = Vec::new();
                let mut n = list.next[HEAD as usize];
                let stuck_op = list.op[entry as usize];
                while n != NONE && n != entry {
                    if list.is_call[n as usize] && list.op[n as usize] != stuck_op {
                        pending.push(list.op[n as usize] as usize);
                    }
                    n = list.next[n as usize];
                }
                best = Some(Stuck {
                    prefix: stack
                        .iter()
                        .map(|f| list.op[f.node as usize] as usize)
                        .collect(),
                    op: list.op[entry as usize] as usize,
                    pending,
                    state: state.clone(),
                });
            }
        }

        // Backtrack: pop until a frame with alternatives left (forced
        // frames have none).
        stats.backtracks += 1;
        loop {
            let Some(frame) = stack.pop() else {
                stats.cached = cache.len() as u64;
                let stuck = best.unwrap_or_else(|| Stuck {
                    prefix: Vec::new(),
                    op: 0,
                    pending: Vec::new(),
                    state: model.init(),
                });
                return (Outcome::NotLinearizable(stuck), stats);
            };
            state = frame.state;
            let op = list.op[frame.node as usize];
            toggle!(op);
            list.unlift(frame.node);
            if !frame.forced {
                entry = list.next[frame.node as usize];
                late_phase = !is_info[op as usize];
                break;
            }
        }
    }
    stats.cached = cache.len() as u64;
    let order = stack
        .iter()
        .map(|f| list.op[f.node as usize] as usize)
        .collect();
    (Outcome::Linearizable(order), stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RegisterModel, RegisterOp};

    fn op(o: RegisterOp, call: u64, ret: Option<u64>) -> SearchOp<RegisterOp> {
        SearchOp { op: o, call, ret }
    }

    fn run(ops: &[SearchOp<RegisterOp>]) -> Outcome<u32> {
        check(&RegisterModel, ops, &Cancel::default(), Limits::default()).0
    }

    /// Goal: a concurrent write/read pair where the read sees the write is
    /// linearizable, and the witness order puts the write first.
    #[test]
    fn concurrent_read_sees_write() {
        let ops = [
            op(RegisterOp::Write(1), 0, Some(3)),
            op(RegisterOp::Read(1), 1, Some(2)),
        ];
        match run(&ops) {
            Outcome::Linearizable(order) => assert_eq!(order, vec![0, 1]),
            other => panic!("expected linearizable, got {other:?}"),
        }
    }

    /// Goal: a stale read strictly after a completed write is caught, and
    /// the report names the read with the write in the prefix.
    #[test]
    fn stale_read_is_caught() {
        let ops = [
            op(RegisterOp::Write(1), 0, Some(1)),
            op(RegisterOp::Read(0), 2, Some(3)),
        ];
        match run(&ops) {
            Outcome::NotLinearizable(s) => {
                assert_eq!(s.op, 1);
                assert_eq!(s.prefix, vec![0]);
                assert_eq!(s.state, 1);
            }
            other => panic!("expected not linearizable, got {other:?}"),
        }
    }

    /// Goal: an indeterminate write may take effect arbitrarily late (even
    /// after later ops) or never.
    #[test]
    fn info_write_is_optional_and_late() {
        // info write 1 invoked first; read 0 later; then read 1 later still.
        let ops = [
            op(RegisterOp::Write(1), 0, None),
            op(RegisterOp::Read(0), 1, Some(2)),
            op(RegisterOp::Read(1), 3, Some(4)),
        ];
        assert!(matches!(run(&ops), Outcome::Linearizable(_)));
        // ...or never, with a read of nil at the end.
        let ops = [
            op(RegisterOp::Write(1), 0, None),
            op(RegisterOp::Read(0), 5, Some(6)),
        ];
        assert!(matches!(run(&ops), Outcome::Linearizable(_)));
        // but it cannot take effect before it was invoked.
        let ops = [
            op(RegisterOp::Read(1), 0, Some(1)),
            op(RegisterOp::Write(1), 2, None),
        ];
        assert!(matches!(run(&ops), Outcome::NotLinearizable(_)));
    }

    /// Goal: identical indeterminate ops are interchangeable but each can
    /// take effect only once: two reads of 1 separated by a write of 2
    /// need two indeterminate writes of 1 (exercises the twin reduction).
    #[test]
    fn twin_info_ops_each_count_once() {
        let tail = [
            op(RegisterOp::Read(1), 2, Some(3)),
            op(RegisterOp::Write(2), 4, Some(5)),
            op(RegisterOp::Read(2), 6, Some(7)),
            op(RegisterOp::Read(1), 8, Some(9)),
        ];
        let mut two = vec![
            op(RegisterOp::Write(1), 0, None),
            op(RegisterOp::Write(1), 1, None),
        ];
        two.extend(tail.iter().cloned());
        assert!(matches!(run(&two), Outcome::Linearizable(_)));
        let mut one = vec![op(RegisterOp::Write(1), 0, None)];
        one.extend(tail.iter().cloned());
        assert!(matches!(run(&one), Outcome::NotLinearizable(_)));
    }

    /// Goal: the memory limit makes the search give up instead of growing.
    #[test]
    fn config_limit() {
        let ops: Vec<_> = (0..5000u64)
            .map(|i| op(RegisterOp::Write(i as u32 % 3), i, Some(i + 1)))
            .collect();
        let (outcome, _) = check(
            &RegisterModel,
            &ops,
            &Cancel::default(),
            Limits {
                max_bytes: 1000,
                ..Limits::default()
            },
        );
        assert!(matches!(outcome, Outcome::TooLarge));
    }

    /// Goal: the cancel token stops the search with Cancelled.
    #[test]
    fn cancellation() {
        let ops: Vec<_> = (0..10_000u64)
            .map(|i| op(RegisterOp::Write(1), i, Some(i + 1)))
            .collect();
        let c = Cancel::default();
        c.cancel();
        assert!(matches!(
            check(&RegisterModel, &ops, &c, Limits::default()).0,
            Outcome::Cancelled
        ));
    }

    /// Goal: an empty history is linearizable.
    #[test]
    fn empty() {
        assert!(matches!(run(&[]), Outcome::Linearizable(v) if v.is_empty()));
    }
}
