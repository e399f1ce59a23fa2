//! Random history generator for benchmarks, demos and tests.
//!
//! Histories come from simulating a real object: each key has a fixed
//! number of client slots (Jepsen's concurrency); a slot invokes an op, the
//! op takes effect atomically at a random later moment against the real
//! state, then completes. Generated histories are therefore linearizable
//! by construction (unless [`GenOptions::corrupt`] is set), while still
//! being genuinely concurrent, with values from a small range so the
//! checker has real work to do. Indeterminate ops take effect or not at
//! random and their slot moves to a fresh process id, as in Jepsen.

use crate::history::{Function, History, Op, OpType, Process};
use crate::model::ModelKind;
use crate::value::Value;

/// A small deterministic PRNG (SplitMix64), so histories are reproducible
/// from a seed without an extra dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1.0 < p
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Which kind of object: registers (single or multi-key), set, counter.
    /// Sibling registers are not simulated (they get a register history;
    /// the CLI refuses them).
    pub model: ModelKind,
    /// Independent keys (multi-register only; others use 1).
    pub keys: usize,
    /// Operations invoked per key.
    pub ops_per_key: usize,
    /// Concurrent client slots per key.
    pub concurrency: usize,
    /// Register values are drawn from `0..values`.
    pub values: u32,
    /// Probability an operation ends `info`.
    pub info_rate: f64,
    /// Probability a write or add ends `fail` (without effect).
    pub fail_rate: f64,
    /// PRNG seed.
    pub seed: u64,
    /// Corrupt one ok read per key so the history is (almost surely) not
    /// linearizable.
    pub corrupt: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            model: ModelKind::CasRegister,
            keys: 1,
            ops_per_key: 1000,
            concurrency: 10,
            values: 5,
            info_rate: 0.05,
            fail_rate: 0.02,
            seed: 0,
            corrupt: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Fate {
    Ok,
    Fail,
    /// Indeterminate; whether it takes effect.
    Info(bool),
}

#[derive(Debug, Clone)]
struct InFlight {
    f: Function,
    /// Invocation value (inner value, without the key).
    value: Value,
    fate: Fate,
    /// Result once applied (read value, or whether a cas succeeded).
    result: Option<Value>,
    applied: bool,
}

struct Slot {
    process: i64,
    op: Option<InFlight>,
}

/// The simulated object.
enum Object {
    Register(u32),
    Set(Vec<i64>),
    Counter(i64),
}

/// Generates a history.
pub fn generate(opts: &GenOptions) -> History {
    let keys = if opts.model == ModelKind::MultiRegister {
        opts.keys.max(1)
    } else {
        1
    };
    let concurrency = opts.concurrency.max(1);
    let total_slots = (keys * concurrency) as i64;
    let mut rng = Rng::new(opts.seed);
    // (time, key, seq, op)
    let mut timed: Vec<(i64, usize, usize, Op)> = Vec::new();
    for key in 0..keys {
        let mut entries = simulate_key(opts, key, concurrency, total_slots, &mut rng);
        if opts.corrupt {
            corrupt_one_read(&mut entries, opts, &mut rng);
        }
        for (seq, op) in entries.into_iter().enumerate() {
            timed.push((op.time.unwrap_or(0), key, seq, op));
        }
    }
    timed.sort_by_key(|(t, k, s, _)| (*t, *k, *s));
    History::new(timed.into_iter().map(|(_, _, _, op)| op).collect())
}

fn wrap(key: usize, v: Value, multi: bool) -> Value {
    if multi {
        Value::Vector(vec![Value::Int(key as i64), v])
    } else {
        v
    }
}

fn simulate_key(
    opts: &GenOptions,
    key: usize,
    concurrency: usize,
    total_slots: i64,
    rng: &mut Rng,
) -> Vec<Op> {
    let multi = opts.model == ModelKind::MultiRegister;
    let mut slots: Vec<Slot> = (0..concurrency)
        .map(|i| Slot {
            process: (key * concurrency + i) as i64,
            op: None,
        })
        .collect();
    let mut object = match opts.model {
        ModelKind::Set => Object::Set(Vec::new()),
        ModelKind::Counter => Object::Counter(0),
        _ => Object::Register(0),
    };
    let values = opts.values.max(1) as u64;
    let mut invoked = 0usize;
    let mut next_element = 0i64;
    let mut time: i64 = rng.below(1000) as i64;
    let mut out = Vec::with_capacity(opts.ops_per_key * 2 + 2);
    let emit =
        |out: &mut Vec<Op>, time: i64, process: i64, kind: OpType, f: &Function, v: Value| {
            out.push(Op {
                process: Process::Client(process),
                kind,
                f: f.clone(),
                value: wrap(key, v, multi),
                time: Some(time),
                line: 0,
            });
        };
    let reg_value = |id: u32| {
        if id == 0 {
            Value::Nil
        } else {
            Value::Int(id as i64)
        }
    };
    // Each iteration advances one slot; the bound keeps the loop finite
    // even for odd options.
    let max_iters = (opts.ops_per_key + concurrency) * 16 + 64;
    for _ in 0..max_iters {
        let busy = slots.iter().any(|s| s.op.is_some());
        if invoked >= opts.ops_per_key && !busy {
            break;
        }
        time += 1 + rng.below(1000) as i64;
        let s = rng.below(concurrency as u64) as usize;
        let slot = &mut slots[s];
        match slot.op.take() {
            None => {
                if invoked >= opts.ops_per_key {
                    continue;
                }
                invoked += 1;
                let (f, value) = match opts.model {
                    ModelKind::Set => {
                        if rng.chance(0.8) {
                            next_element += 1;
                            (Function::Add, Value::Int(next_element))
                        } else {
                            (Function::Read, Value::Nil)
                        }
                    }
                    ModelKind::Counter => {
                        if rng.chance(0.6) {
                            (Function::Add, Value::Int(1 + rng.below(5) as i64))
                        } else {
                            (Function::Read, Value::Nil)
                        }
                    }
                    _ => {
                        let allow_cas = opts.model != ModelKind::Register;
                        let r = rng.below(if allow_cas { 3 } else { 2 });
                        // Values 1..=values; 0 is the initial nil.
                        match r {
                            0 => (Function::Read, Value::Nil),
                            1 => (Function::Write, Value::Int(1 + rng.below(values) as i64)),
                            _ => (
                                Function::Cas,
                                Value::Vector(vec![
                                    Value::Int(1 + rng.below(values) as i64),
                                    Value::Int(1 + rng.below(values) as i64),
                                ]),
                            ),
                        }
                    }
                };
                let fate = if rng.chance(opts.info_rate) {
                    Fate::Info(rng.chance(0.5))
                } else if f != Function::Read && rng.chance(opts.fail_rate) {
                    Fate::Fail
                } else {
                    Fate::Ok
                };
                emit(
                    &mut out,
                    time,
                    slot.process,
                    OpType::Invoke,
                    &f,
                    value.clone(),
                );
                slot.op = Some(InFlight {
                    f,
                    value,
                    fate,
                    result: None,
                    applied: false,
                });
            }
            Some(mut op) => {
                let takes_effect = matches!(op.fate, Fate::Ok | Fate::Info(true));
                if takes_effect && !op.applied {
                    op.result = Some(apply(&mut object, &op, &reg_value));
                    op.applied = true;
                    slot.op = Some(op);
                    continue;
                }
                match op.fate {
                    Fate::Ok => {
                        let result = op.result.clone().unwrap_or(Value::Nil);
                        let (kind, v) = match op.f {
                            Function::Read => (OpType::Ok, result),
                            Function::Cas if result == Value::Bool(false) => {
                                (OpType::Fail, op.value.clone())
                            }
                            _ => (OpType::Ok, op.value.clone()),
                        };
                        emit(&mut out, time, slot.process, kind, &op.f, v);
                    }
                    Fate::Fail => {
                        emit(
                            &mut out,
                            time,
                            slot.process,
                            OpType::Fail,
                            &op.f,
                            op.value.clone(),
                        );
                    }
                    Fate::Info(_) => {
                        let v = if rng.chance(0.5) {
                            Value::kw("timed-out")
                        } else {
                            op.value.clone()
                        };
                        emit(&mut out, time, slot.process, OpType::Info, &op.f, v);
                        // The process is gone; its slot continues as a new one.
                        slot.process += total_slots;
                    }
                }
            }
        }
    }
    if let Object::Set(items) = &object {
        // Jepsen's set workloads end with a final read after quiescence.
        let process = slots[0].process;
        let all = Value::Vector(items.iter().map(|&i| Value::Int(i)).collect());
        time += 1 + rng.below(1000) as i64;
        emit(
            &mut out,
            time,
            process,
            OpType::Invoke,
            &Function::Read,
            Value::Nil,
        );
        time += 1 + rng.below(1000) as i64;
        emit(&mut out, time, process, OpType::Ok, &Function::Read, all);
    }
    out
}

fn apply(object: &mut Object, op: &InFlight, reg_value: &impl Fn(u32) -> Value) -> Value {
    match object {
        Object::Register(state) => match (&op.f, &op.value) {
            (Function::Read, _) => reg_value(*state),
            (Function::Write, Value::Int(v)) => {
                *state = *v as u32;
                Value::Nil
            }
            (Function::Cas, Value::Vector(p)) if p.len() == 2 => {
                if p[0] == reg_value(*state) {
                    *state = p[1].as_int().unwrap_or(0) as u32;
                    Value::Bool(true)
                } else {
                    Value::Bool(false)
                }
            }
            _ => Value::Nil,
        },
        Object::Set(items) => match (&op.f, &op.value) {
            (Function::Add, Value::Int(v)) => {
                items.push(*v);
                Value::Nil
            }
            _ => Value::Vector(items.iter().map(|&i| Value::Int(i)).collect()),
        },
        Object::Counter(c) => match (&op.f, &op.value) {
            (Function::Add, Value::Int(v)) => {
                *c += v;
                Value::Nil
            }
            _ => Value::Int(*c),
        },
    }
}

/// Changes the value of one random ok read to a value it cannot have had.
fn corrupt_one_read(entries: &mut [Op], opts: &GenOptions, rng: &mut Rng) {
    let reads: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind == OpType::Ok && o.f == Function::Read)
        .map(|(i, _)| i)
        .collect();
    if reads.is_empty() {
        return;
    }
    // The set checker only judges the final read, so corrupt that one.
    let i = if opts.model == ModelKind::Set {
        reads[reads.len() - 1]
    } else {
        reads[rng.below(reads.len() as u64) as usize]
    };
    let op = &mut entries[i];
    let bogus = match opts.model {
        ModelKind::Set => Value::Vector(vec![Value::Int(-1)]),
        ModelKind::Counter => Value::Int(-1),
        // A plausible but wrong register value: one that is written
        // somewhere, just not what the read saw.
        _ => {
            let actual = match &op.value {
                Value::Vector(kv) if kv.len() == 2 => kv[1].as_int(),
                v => v.as_int(),
            }
            .unwrap_or(0);
            let span = opts.values.max(2) as i64;
            Value::Int(1 + (actual + rng.below(span as u64 - 1) as i64) % span)
        }
    };
    op.value = match &op.value {
        Value::Vector(kv) if opts.model == ModelKind::MultiRegister && kv.len() == 2 => {
            Value::Vector(vec![kv[0].clone(), bogus])
        }
        _ => bogus,
    };
}

/// One key of a multi-register history built to exhaust the search: `n`
/// indeterminate writes of distinct values (never completed), then write
/// A, read A, write B, read A. The last read is stale, so the key is not
/// linearizable, but no cheap check sees it (A was written before the
/// read), and proving it means visiting every subset of the indeterminate
/// writes with every last-written value: about n·2ⁿ configurations, since
/// the twin reduction only merges *identical* indeterminate ops. For tests
/// and benchmarks of the budgets. Processes are `first_process..`.
pub fn hard_key(key: i64, n: usize, first_process: i64) -> Vec<Op> {
    let kv = |v: Value| Value::Vector(vec![Value::Int(key), v]);
    let mut out = Vec::with_capacity(n + 8);
    for i in 0..n {
        out.push(Op::new(
            first_process + i as i64,
            OpType::Invoke,
            Function::Write,
            kv(Value::Int(i as i64 + 1)),
        ));
    }
    let p = first_process + n as i64;
    let (a, b) = (Value::Int(1_000_000), Value::Int(1_000_001));
    for (f, v) in [
        (Function::Write, a.clone()),
        (Function::Read, a.clone()),
        (Function::Write, b),
        (Function::Read, a),
    ] {
        let invoke = if f == Function::Read {
            Value::Nil
        } else {
            v.clone()
        };
        out.push(Op::new(p, OpType::Invoke, f.clone(), kv(invoke)));
        out.push(Op::new(p, OpType::Ok, f, kv(v)));
    }
    out
}

/// One key of a multi-register history that is quick to decide: `rounds`
/// sequential rounds of write r, read r by one process; if `bad`, the
/// last read returns the previous round's value (stale: not linearizable,
/// found in a few steps per op). Process `process`.
pub fn easy_key(key: i64, rounds: usize, bad: bool, process: i64) -> Vec<Op> {
    let kv = |v: i64| Value::Vector(vec![Value::Int(key), Value::Int(v)]);
    let mut out = Vec::with_capacity(rounds * 4);
    for r in 1..=rounds as i64 {
        let seen = if bad && r == rounds as i64 && r > 1 {
            r - 1
        } else {
            r
        };
        out.push(Op::new(process, OpType::Invoke, Function::Write, kv(r)));
        out.push(Op::new(process, OpType::Ok, Function::Write, kv(r)));
        out.push(Op::new(
            process,
            OpType::Invoke,
            Function::Read,
            Value::Vector(vec![Value::Int(key), Value::Nil]),
        ));
        out.push(Op::new(process, OpType::Ok, Function::Read, kv(seen)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check, CheckOptions, Verdict};

    /// Goal: generated histories are well formed, have the requested size
    /// and concurrency, and check valid (they come from a real execution).
    #[test]
    fn generated_histories_are_valid() {
        for model in [
            ModelKind::Register,
            ModelKind::CasRegister,
            ModelKind::MultiRegister,
            ModelKind::Set,
            ModelKind::Counter,
        ] {
            let opts = GenOptions {
                model,
                keys: 3,
                ops_per_key: 200,
                seed: 7,
                ..GenOptions::default()
            };
            let h = generate(&opts);
            let ops = h.operations().expect("well formed");
            let keys = if model == ModelKind::MultiRegister {
                3
            } else {
                1
            };
            // Set histories end with one extra final read.
            let expected = 200 * keys + usize::from(model == ModelKind::Set);
            assert_eq!(ops.len(), expected, "{model}");
            let r = check(&h, &CheckOptions::new(model)).expect("check");
            assert_eq!(
                r.verdict,
                Verdict::Valid,
                "{model}: {:?}",
                r.failures.first()
            );
        }
    }

    /// Goal: corrupting a read makes set and counter histories invalid,
    /// and register histories usually invalid (a wrong but plausible value
    /// can occasionally still be explained by concurrency).
    #[test]
    fn corrupted_histories_are_invalid() {
        for model in [ModelKind::Counter, ModelKind::Set] {
            let opts = GenOptions {
                model,
                ops_per_key: 100,
                seed: 3,
                corrupt: true,
                ..GenOptions::default()
            };
            let r = check(&generate(&opts), &CheckOptions::new(model)).expect("check");
            assert_eq!(r.verdict, Verdict::Invalid, "{model}");
        }
        for model in [ModelKind::CasRegister, ModelKind::MultiRegister] {
            let invalid = (0..10)
                .filter(|&seed| {
                    let opts = GenOptions {
                        model,
                        keys: 2,
                        ops_per_key: 100,
                        // Low concurrency and no info ops, so that a wrong
                        // value is rarely explainable by overlap.
                        concurrency: 3,
                        info_rate: 0.0,
                        seed,
                        corrupt: true,
                        ..GenOptions::default()
                    };
                    let r = check(&generate(&opts), &CheckOptions::new(model)).expect("check");
                    r.verdict == Verdict::Invalid
                })
                .count();
            assert!(
                invalid >= 6,
                "{model}: only {invalid}/10 corrupted histories invalid"
            );
        }
    }
}
