//! Property tests for the linearizability checker, cross-checked against a
//! brute-force checker that tries every order of every admissible subset
//! of operations (so it shares no logic with the WGL search).
//!
//! Histories are built as real Jepsen entries (invoke + ok/fail/info, one
//! process per operation) and go through the whole library pipeline:
//! pairing, preparation (fail ops dropped, unknown reads dropped, info ops
//! with an infinite return) and the search.

use jepsen_like::check::{check, CheckOptions, Verdict};
use jepsen_like::history::{Function, History, Op, OpType, Operation, Outcome};
use jepsen_like::model::{Model, ModelKind, RegisterModel, RegisterOp};
use jepsen_like::value::Value;
use jepsen_like::wgl::{self, Cancel, Limits, SearchOp};
use proptest::prelude::*;

/// One generated operation before it becomes history entries.
#[derive(Debug, Clone)]
struct GenOp {
    /// 0 = read, 1 = write, 2 = cas.
    f: u8,
    a: i64,
    b: i64,
    call: u64,
    ret: u64,
    /// 0 = ok, 1 = info, 2 = fail.
    end: u8,
}

fn value(v: i64) -> Value {
    if v == 0 {
        Value::Nil
    } else {
        Value::Int(v)
    }
}

/// Turns generated ops into a time-ordered Jepsen history: invocations at
/// even instants, completions at odd ones, so the real-time order is
/// exactly the generated one.
fn to_history(ops: &[GenOp]) -> History {
    let mut timed: Vec<(u64, usize, Op)> = Vec::new();
    for (p, g) in ops.iter().enumerate() {
        let f = match g.f {
            0 => Function::Read,
            1 => Function::Write,
            _ => Function::Cas,
        };
        let invoke_value = match g.f {
            0 => Value::Nil,
            1 => value(g.a),
            _ => Value::Vector(vec![value(g.a), value(g.b)]),
        };
        timed.push((
            g.call * 2,
            p,
            Op::new(p as i64, OpType::Invoke, f.clone(), invoke_value.clone()),
        ));
        let (kind, v) = match g.end {
            0 => (OpType::Ok, if g.f == 0 { value(g.a) } else { invoke_value }),
            1 => (OpType::Info, Value::kw("timed-out")),
            _ => (OpType::Fail, invoke_value),
        };
        timed.push((g.ret * 2 + 1, p, Op::new(p as i64, kind, f, v)));
    }
    timed.sort_by_key(|(t, p, _)| (*t, *p));
    History::new(timed.into_iter().map(|(_, _, o)| o).collect())
}

fn intern(v: &Value) -> u32 {
    match v {
        Value::Int(i) => *i as u32,
        _ => 0,
    }
}

/// The search input for paired operations, by the documented semantics:
/// fail ops and reads without a known value are dropped; only ok ops have
/// a return.
fn search_ops(ops: &[Operation]) -> Vec<SearchOp<RegisterOp>> {
    let mut out = Vec::new();
    for o in ops {
        if o.outcome == Outcome::Fail || (o.f == Function::Read && o.outcome != Outcome::Ok) {
            continue;
        }
        let op = match (&o.f, &o.value) {
            (Function::Read, v) => RegisterOp::Read(intern(v)),
            (Function::Write, v) => RegisterOp::Write(intern(v)),
            (_, Value::Vector(p)) => RegisterOp::Cas(intern(&p[0]), intern(&p[1])),
            _ => unreachable!("generated cas values are pairs"),
        };
        out.push(SearchOp {
            op,
            call: o.invoke as u64,
            ret: if o.outcome == Outcome::Ok {
                o.complete.map(|c| c as u64)
            } else {
                None
            },
        });
    }
    out
}

/// True if `order` is a legal linearization: it contains every op with a
/// return, each at most once, respects real time, and the model accepts.
fn is_legal(ops: &[SearchOp<RegisterOp>], order: &[usize]) -> bool {
    let mut seen = vec![false; ops.len()];
    for &i in order {
        if seen[i] {
            return false;
        }
        seen[i] = true;
    }
    if ops
        .iter()
        .enumerate()
        .any(|(i, o)| o.ret.is_some() && !seen[i])
    {
        return false;
    }
    for (x, &i) in order.iter().enumerate() {
        for &j in &order[x + 1..] {
            // j is placed after i, so j must not have returned before i
            // was invoked.
            if ops[j].ret.is_some_and(|r| r < ops[i].call) {
                return false;
            }
        }
    }
    let mut state = RegisterModel.init();
    for &i in order {
        match RegisterModel.step(&state, &ops[i].op) {
            Some(s) => state = s,
            None => return false,
        }
    }
    true
}

/// Brute force: every subset of the indeterminate ops, every permutation.
fn brute_force(ops: &[SearchOp<RegisterOp>]) -> bool {
    let info: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    let definite: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_some()).collect();
    for mask in 0u32..(1 << info.len()) {
        let mut chosen = definite.clone();
        for (k, &i) in info.iter().enumerate() {
            if mask & (1 << k) != 0 {
                chosen.push(i);
            }
        }
        if permutations_any(&mut chosen, 0, &mut |perm| is_legal(ops, perm)) {
            return true;
        }
    }
    false
}

fn permutations_any(
    items: &mut Vec<usize>,
    k: usize,
    f: &mut impl FnMut(&[usize]) -> bool,
) -> bool {
    if k == items.len() {
        return f(items);
    }
    for i in k..items.len() {
        items.swap(k, i);
        if permutations_any(items, k + 1, f) {
            items.swap(k, i);
            return true;
        }
        items.swap(k, i);
    }
    false
}

fn verdict_of(history: &History) -> Verdict {
    check(history, &CheckOptions::new(ModelKind::CasRegister))
        .expect("check")
        .verdict
}

/// Arbitrary small histories: random ops, values, overlaps and outcomes.
fn arb_ops(max: usize) -> impl Strategy<Value = Vec<GenOp>> {
    prop::collection::vec(
        (
            0u8..3,
            0i64..3,
            0i64..3,
            0u64..12,
            1u64..6,
            prop::sample::select(vec![0u8, 0, 0, 1, 1, 2]),
        ),
        1..=max,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(f, a, b, call, dur, end)| GenOp {
                f,
                a,
                b,
                call,
                ret: call + dur,
                end,
            })
            .collect()
    })
}

/// Histories from a real sequential execution with random overlap: each
/// op takes effect at a point inside its [call, ret] window (an info op
/// possibly later or never; a failed cas reports fail, as in Jepsen).
fn real_ops(max: usize) -> impl Strategy<Value = Vec<GenOp>> {
    prop::collection::vec(
        (
            0u8..3,
            1i64..3,
            1i64..3,
            0u64..20,
            1u64..8,
            0u64..100,
            prop::sample::select(vec![0u8, 0, 0, 0, 1]),
        ),
        1..=max,
    )
    .prop_map(|v| {
        // (effect time, index); effect strictly inside (call, ret) using
        // half-steps so that it never ties with an endpoint.
        let mut ops: Vec<GenOp> = Vec::new();
        let mut effects: Vec<(u64, usize)> = Vec::new();
        for (i, (f, a, b, call, dur, frac, end)) in v.into_iter().enumerate() {
            let ret = call + dur;
            let effect = if end == 1 {
                // Info: takes effect anywhere after the call, even after
                // everything else, or never (u64::MAX).
                if frac % 3 == 0 {
                    u64::MAX
                } else {
                    call * 100 + 1 + frac * 3
                }
            } else {
                call * 100 + 1 + frac * (dur * 100 - 2) / 100
            };
            effects.push((effect, i));
            ops.push(GenOp {
                f,
                a,
                b,
                call,
                ret,
                end,
            });
        }
        effects.sort();
        let mut state = 0i64;
        for (t, i) in effects {
            if t == u64::MAX {
                continue;
            }
            let op = &mut ops[i];
            match op.f {
                0 => op.a = state,
                1 => state = op.a,
                _ => {
                    if state == op.a {
                        state = op.b;
                    } else if op.end == 0 {
                        op.end = 2; // a cas that did not apply fails
                    }
                }
            }
        }
        ops
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Goal: on arbitrary small histories (linearizable or not, with info
    /// and fail ops and cas), the checker agrees with brute force, and any
    /// witness order the search returns is a legal linearization.
    #[test]
    fn agrees_with_brute_force(gen in arb_ops(7)) {
        let history = to_history(&gen);
        let ops = history.operations().expect("well formed");
        let sops = search_ops(&ops);
        let expected = brute_force(&sops);
        let verdict = verdict_of(&history);
        prop_assert_eq!(verdict == Verdict::Valid, expected, "history: {:?}", gen);
        let (outcome, _) = wgl::check(&RegisterModel, &sops, &Cancel::default(), Limits::default());
        match outcome {
            wgl::Outcome::Linearizable(order) => {
                prop_assert!(expected);
                prop_assert!(is_legal(&sops, &order), "illegal witness {:?}", order);
            }
            wgl::Outcome::NotLinearizable(stuck) => {
                prop_assert!(!expected);
                // The reported prefix must itself be a legal partial order
                // start: each op at most once and accepted by the model.
                let mut state = 0u32;
                for &i in &stuck.prefix {
                    state = RegisterModel.step(&state, &sops[i].op).expect("prefix replays");
                }
                prop_assert_eq!(state, stuck.state);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// Goal: histories of a real execution are always linearizable; after
    /// changing one ok read's value the checker still agrees with brute
    /// force.
    #[test]
    fn real_executions_linearize_and_mutations_agree(gen in real_ops(7), pick in 0usize..7, delta in 1i64..3) {
        let history = to_history(&gen);
        prop_assert_eq!(verdict_of(&history), Verdict::Valid, "history: {:?}", gen);
        let reads: Vec<usize> = (0..gen.len()).filter(|&i| gen[i].f == 0 && gen[i].end == 0).collect();
        if !reads.is_empty() {
            let mut mutated = gen.clone();
            let r = reads[pick % reads.len()];
            mutated[r].a = (mutated[r].a + delta) % 3;
            let history = to_history(&mutated);
            let expected = brute_force(&search_ops(&history.operations().expect("ok")));
            prop_assert_eq!(verdict_of(&history) == Verdict::Valid, expected, "mutated: {:?}", mutated);
        }
    }
}

/// Goal: mutating a read of a real execution usually breaks
/// linearizability (otherwise the mutation test above would be vacuous),
/// judged over a deterministic sample.
#[test]
fn mutated_reads_are_usually_invalid() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let (mut mutated, mut invalid) = (0, 0);
    for _ in 0..300 {
        let gen = real_ops(7).new_tree(&mut runner).expect("tree").current();
        let Some(r) = (0..gen.len()).find(|&i| gen[i].f == 0 && gen[i].end == 0) else {
            continue;
        };
        let mut m = gen.clone();
        m[r].a = (m[r].a + 1) % 3;
        mutated += 1;
        if verdict_of(&to_history(&m)) == Verdict::Invalid {
            invalid += 1;
        }
    }
    assert!(mutated > 100, "too few histories with reads: {mutated}");
    assert!(
        invalid * 2 > mutated,
        "only {invalid}/{mutated} mutated histories were invalid"
    );
}

/// Goal: the arbitrary-history generator is balanced enough for the
/// brute-force comparison to mean something: a good share of both
/// linearizable and non-linearizable histories, and some info ops.
#[test]
fn arbitrary_histories_cover_both_verdicts() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let (mut valid, mut with_info, total) = (0, 0, 300);
    for _ in 0..total {
        let gen = arb_ops(7).new_tree(&mut runner).expect("tree").current();
        let history = to_history(&gen);
        let sops = search_ops(&history.operations().expect("ok"));
        if sops.iter().any(|o| o.ret.is_none()) {
            with_info += 1;
        }
        if brute_force(&sops) {
            valid += 1;
        }
    }
    assert!(
        valid * 5 > total && valid * 5 < total * 4,
        "{valid}/{total} valid"
    );
    assert!(with_info * 5 > total, "{with_info}/{total} with info ops");
}

/// Goal: larger real executions (beyond brute force) are linearizable
/// with many indeterminate ops, exercising the info-op reductions.
#[test]
fn larger_real_executions_are_valid() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    for _ in 0..50 {
        let gen = real_ops(40).new_tree(&mut runner).expect("tree").current();
        assert_eq!(verdict_of(&to_history(&gen)), Verdict::Valid, "{gen:?}");
    }
}
