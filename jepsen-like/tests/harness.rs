//! The harness end to end against an in-memory fake store (a test double,
//! not a store): workloads judged right on honest and on deliberately
//! broken stores, and the runner's discipline (determinism, process ids,
//! timeouts, nemesis entries, healing, final reads, streaming) on a paused
//! tokio clock, so the runs take no real time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_like::gen::Rng;
use jepsen_like::harness::{
    exit_code, run, write_report, Client, Completion, CounterConfig, CounterWorkload, HistorySink,
    Invocation, Nemesis, NoNemesis, RegisterConfig, RegisterWorkload, RunDir, RunOptions,
    RunRecord, SetConfig, SetWorkload, SiblingConfig, SiblingWorkload, VisibilityConfig,
    VisibilityWorkload, Workload,
};
use jepsen_like::{edn, Function, OpType, Process, Value, Verdict};

/// The fake store's state, shared by its clients. Every operation takes
/// effect atomically at one instant inside its invocation, so an honest
/// fake is linearizable.
#[derive(Debug, Default)]
struct FakeState {
    registers: HashMap<Value, Value>,
    set: Vec<i64>,
    counter: i64,
    siblings: HashMap<Value, Vec<Value>>,
    /// Set adds to acknowledge without applying (a broken store).
    lose_adds: Vec<i64>,
    /// Unkeyed reads return the counter rather than the set.
    counter_mode: bool,
}

/// How a fake client misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Every n-th op of a client completes :info without taking effect.
    info_every: Option<u64>,
    /// Every n-th op of a client never completes.
    hang_every: Option<u64>,
    /// The first n final reads of a client fail.
    fail_final_reads: u64,
}

/// A test-double client of the fake store.
struct FakeClient {
    state: Arc<Mutex<FakeState>>,
    rng: Rng,
    faults: Faults,
    ops: u64,
    final_reads: u64,
    /// Siblings last read per key (what a context would cover).
    last_read: HashMap<Value, Vec<Value>>,
}

fn fake(seed: u64, faults: Faults) -> (Arc<Mutex<FakeState>>, impl FnMut(usize) -> FakeClient) {
    let state = Arc::new(Mutex::new(FakeState::default()));
    let shared = state.clone();
    let make = move |w: usize| FakeClient {
        state: shared.clone(),
        rng: Rng::new(seed * 1000 + w as u64),
        faults,
        ops: 0,
        final_reads: 0,
        last_read: HashMap::new(),
    };
    (state, make)
}

fn seq(v: &Value) -> &[Value] {
    v.as_seq().unwrap_or(&[])
}

/// Applies `inv` to the state: the completion.
fn apply(s: &mut FakeState, inv: &Invocation) -> Completion {
    let v = seq(&inv.value);
    match (&inv.f, &inv.value) {
        // Set and counter: unkeyed values.
        (Function::Add, Value::Int(n)) if s.lose_adds.contains(n) => Completion::ok(Value::Nil),
        (Function::Add, Value::Int(n)) => {
            // One fake serves both: the set records, the counter sums.
            s.set.push(*n);
            s.counter += n;
            Completion::ok(Value::Nil)
        }
        (Function::Read | Function::FinalRead, Value::Nil) if s.counter_mode => {
            Completion::ok(Value::Int(s.counter))
        }
        (Function::Read | Function::FinalRead, Value::Nil) => {
            Completion::ok(Value::Set(s.set.iter().map(|n| Value::Int(*n)).collect()))
        }
        _ => match (&inv.f, v) {
            (Function::Read | Function::FinalRead, [k, Value::Nil]) if is_sibling(k) => {
                let sib = s.siblings.get(k).cloned().unwrap_or_default();
                Completion::ok(Value::Vector(vec![k.clone(), Value::Vector(sib)]))
            }
            (Function::Read | Function::FinalRead, [k, Value::Nil]) => {
                let cur = s.registers.get(k).cloned().unwrap_or(Value::Nil);
                Completion::ok(Value::Vector(vec![k.clone(), cur]))
            }
            (Function::Read, [k, Value::Nil, _]) => {
                let found: Vec<Value> = s.registers.get(k).cloned().into_iter().collect();
                Completion::ok(Value::Vector(vec![k.clone(), Value::Vector(found)]))
            }
            (Function::Write, [k, val]) => {
                s.registers.insert(k.clone(), val.clone());
                Completion::ok(Value::Nil)
            }
            (Function::Write, [k, val, covered]) => {
                let sib = s.siblings.entry(k.clone()).or_default();
                sib.retain(|x| !seq(covered).contains(x));
                sib.push(val.clone());
                Completion::ok(Value::Nil)
            }
            (Function::Cas, [k, pair]) => match seq(pair) {
                [old, new] if s.registers.get(k).unwrap_or(&Value::Nil) == old => {
                    s.registers.insert(k.clone(), new.clone());
                    Completion::ok(Value::Nil)
                }
                _ => Completion::fail(Value::Nil),
            },
            _ => Completion::fail(Value::Nil).with("error", Value::Str("unknown op".into())),
        },
    }
}

fn is_sibling(k: &Value) -> bool {
    matches!(k, Value::Str(s) if s.starts_with('s'))
}

impl Client for FakeClient {
    fn prepare(&mut self, inv: &mut Invocation) -> Vec<(String, Value)> {
        if let Value::Vector(t) = &mut inv.value {
            if t.len() == 3 && t[2] == Value::kw("ctx") {
                t[2] = Value::Vector(self.last_read.get(&t[0]).cloned().unwrap_or_default());
            }
        }
        vec![("node".into(), Value::Str("n1".into()))]
    }

    fn invoke(&mut self, inv: &Invocation) -> impl std::future::Future<Output = Completion> + Send {
        self.ops += 1;
        let before = Duration::from_micros(100 + self.rng.below(2000));
        let after = Duration::from_micros(100 + self.rng.below(2000));
        let f = self.faults;
        let hang = f.hang_every.is_some_and(|n| self.ops.is_multiple_of(n));
        let info = f.info_every.is_some_and(|n| self.ops.is_multiple_of(n));
        let mut fail_final = false;
        if inv.f == Function::FinalRead {
            self.final_reads += 1;
            fail_final = self.final_reads <= f.fail_final_reads;
        }
        let state = self.state.clone();
        let inv = inv.clone();
        let last_read = &mut self.last_read;
        async move {
            tokio::time::sleep(before).await;
            if hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if info {
                return Completion::info(Value::Nil).with("error", Value::Str("conn reset".into()));
            }
            if fail_final {
                return Completion::fail(Value::Nil);
            }
            let c = apply(&mut state.lock().expect("fake state"), &inv);
            if let (OpType::Ok, [k, Value::Vector(sib)]) = (c.kind, seq(&c.value)) {
                last_read.insert(k.clone(), sib.clone());
            }
            tokio::time::sleep(after).await;
            c
        }
    }
}

/// A test-double nemesis logging its calls.
#[derive(Clone, Default)]
struct LogNemesis {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Nemesis for LogNemesis {
    async fn start(&mut self, fault: &str, draw: u64) -> Result<Value, String> {
        self.calls
            .lock()
            .expect("log")
            .push(format!("start {fault}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        if fault == "broken" {
            return Err("cannot break".into());
        }
        Ok(Value::Vector(vec![Value::Str(format!("n{}", draw % 3))]))
    }

    async fn stop(&mut self, fault: &str) -> Result<Value, String> {
        self.calls
            .lock()
            .expect("log")
            .push(format!("stop {fault}"));
        Ok(Value::kw("healed"))
    }

    async fn heal_all(&mut self) -> Result<Value, String> {
        self.calls.lock().expect("log").push("heal".into());
        Ok(Value::kw("all-healed"))
    }
}

fn opts(secs: u64, seed: u64) -> RunOptions {
    RunOptions {
        time: Duration::from_secs(secs),
        concurrency: 4,
        rate: Some(400.0),
        seed,
        quiet: Duration::from_secs(1),
        ..RunOptions::default()
    }
}

async fn run_fake<W: Workload>(w: &mut W, seed: u64, faults: Faults, o: &RunOptions) -> RunRecord {
    let (state, make) = fake(seed, faults);
    state.lock().expect("state").counter_mode = w.name() == "counter";
    run(w, make, None::<NoNemesis>, HistorySink::memory(), o)
        .await
        .expect("run")
}

/// Goal: a linearizable store passes the register workload (cas included,
/// some of it succeeding), and reports every key it touched.
#[tokio::test(start_paused = true)]
async fn register_on_honest_store_is_valid() {
    let mut w = RegisterWorkload::new(RegisterConfig::default()).expect("config");
    let rec = run_fake(&mut w, 1, Faults::default(), &opts(5, 1)).await;
    let result = w.check(&rec.history);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.summary);
    let ops = rec.history.operations().expect("pair");
    assert!(ops.len() > 1000, "{} ops", ops.len());
    let cas_ok = ops
        .iter()
        .filter(|o| o.f == Function::Cas && o.outcome == jepsen_like::Outcome::Ok)
        .count();
    assert!(cas_ok > 10, "{cas_ok} successful cas");
    assert_eq!(w.keys(), ["r0", "r1", "r2", "r3", "r4"]);
    assert!(w.final_reads().is_empty());
}

/// Goal: a register read returning a value never written (here forged
/// into the recorded history) is found non-linearizable.
#[tokio::test(start_paused = true)]
async fn register_impossible_read_is_invalid() {
    let mut w = RegisterWorkload::new(RegisterConfig {
        keys: 1,
        ..RegisterConfig::default()
    })
    .expect("config");
    let mut rec = run_fake(&mut w, 2, Faults::default(), &opts(2, 2)).await;
    // Make the last ok read of a written value return nil instead.
    let read = rec
        .history
        .ops
        .iter()
        .rposition(|o| {
            o.kind == OpType::Ok
                && o.f == Function::Read
                && seq(&o.value).get(1) != Some(&Value::Nil)
        })
        .expect("an ok read");
    let key = seq(&rec.history.ops[read].value)[0].clone();
    rec.history.ops[read].value = Value::Vector(vec![key, Value::Int(-1)]);
    assert_eq!(w.check(&rec.history).verdict, Verdict::Invalid);
}

/// Goal: a store that acknowledges adds it drops fails the set workload,
/// naming the lost elements; an honest one passes with stable latencies.
#[tokio::test(start_paused = true)]
async fn set_lost_elements_are_named() {
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let rec = run_fake(&mut w, 3, Faults::default(), &opts(3, 3)).await;
    let r = w.check(&rec.history);
    assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.summary);
    assert!(r.details["set_full"]["stable_latency_ms"]["count"].as_u64() > Some(100));
    let finals = rec
        .history
        .ops
        .iter()
        .filter(|o| o.f == Function::FinalRead)
        .count();
    assert_eq!(finals, 2, "one final read, invoked and completed");

    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let (state, make) = fake(3, Faults::default());
    state.lock().expect("state").lose_adds = vec![7, 40];
    let rec = run(
        &mut w,
        make,
        None::<NoNemesis>,
        HistorySink::memory(),
        &opts(3, 3),
    )
    .await
    .expect("run");
    let r = w.check(&rec.history);
    assert_eq!(r.verdict, Verdict::Invalid);
    let lost = &r.details["set"]["lost"];
    assert_eq!(lost, &serde_json::json!([7, 40]), "{:?}", r.summary);
    assert!(
        r.summary.iter().any(|l| l.contains("lost: 7 40")),
        "{:?}",
        r.summary
    );
}

/// Goal: the counter's final read lies within the bounds, with some adds
/// indeterminate (:info, not applied).
#[tokio::test(start_paused = true)]
async fn counter_in_bounds() {
    let mut w = CounterWorkload::new(CounterConfig::default()).expect("config");
    let faults = Faults {
        info_every: Some(17),
        ..Faults::default()
    };
    let rec = run_fake(&mut w, 4, faults, &opts(3, 4)).await;
    let r = w.check(&rec.history);
    assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.summary);
    let counter = &r.details["counter"];
    let (lo, hi) = (
        counter["final_bounds"][0].as_i64().expect("lo"),
        counter["final_bounds"][1].as_i64().expect("hi"),
    );
    assert!(lo < hi, "info adds widen the bounds: {lo} {hi}");
    let fin = r.details["final_read"].as_i64().expect("final read");
    assert!((lo..=hi).contains(&fin));
}

/// Goal: the sibling workload passes on a store that keeps siblings and
/// honours contexts, with :ctx replaced by the client before recording.
#[tokio::test(start_paused = true)]
async fn siblings_valid() {
    let mut w = SiblingWorkload::new(SiblingConfig::default()).expect("config");
    let rec = run_fake(&mut w, 5, Faults::default(), &opts(3, 5)).await;
    let r = w.check(&rec.history);
    assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.summary);
    assert!(!rec
        .history
        .ops
        .iter()
        .any(|o| o.value.to_string().contains(":ctx")));
    let finals = rec
        .history
        .ops
        .iter()
        .filter(|o| o.f == Function::FinalRead && o.kind == OpType::Ok)
        .count();
    assert_eq!(finals, 3, "one ok final read per key");
}

/// Goal: on a store where writes are visible at once, every delay's reads
/// see the write, reads carry their delay, and the run stops at max_keys.
#[tokio::test(start_paused = true)]
async fn visibility_run() {
    let mut w = VisibilityWorkload::new(VisibilityConfig {
        max_keys: 50,
        ..VisibilityConfig::default()
    })
    .expect("config");
    let o = RunOptions {
        rate: None,
        ..opts(10, 6)
    };
    let rec = run_fake(&mut w, 6, Faults::default(), &o).await;
    let r = w.check(&rec.history);
    assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.summary);
    let delays = r.details["delays"].as_array().expect("delays");
    assert_eq!(delays.len(), 11);
    for d in delays {
        assert_eq!(d["reads"], 50, "{d}");
        assert_eq!(d["probability"], 1.0, "{d}");
        // Reads start within a few ms of their plan.
        assert!(d["median_start_lag_ms"].as_f64() < Some(5.0), "{d}");
    }
    assert_eq!(w.keys().len(), 50);
}

/// Goal: the same seed gives the same history, entry for entry and
/// nanosecond for nanosecond; another seed does not.
#[tokio::test(start_paused = true)]
async fn same_seed_same_history() {
    let once = |seed: u64| async move {
        let mut w = RegisterWorkload::new(RegisterConfig::default()).expect("config");
        let (_, make) = fake(
            seed,
            Faults {
                info_every: Some(9),
                ..Faults::default()
            },
        );
        let nemesis = LogNemesis::default();
        let o = RunOptions {
            nemesis_faults: vec!["kill".into(), "pause".into()],
            nemesis_interval: Duration::from_millis(500),
            ..opts(2, seed)
        };
        let rec = run(&mut w, make, Some(nemesis), HistorySink::memory(), &o)
            .await
            .expect("run");
        rec.history
    };
    let a = once(7).await;
    let b = once(7).await;
    assert_eq!(a, b);
    assert_ne!(a, once(8).await);
}

/// Goal: after an :info completion a worker continues as process
/// `p + concurrency` and never invokes as `p` again.
#[tokio::test(start_paused = true)]
async fn info_moves_to_a_new_process() {
    let mut w = CounterWorkload::new(CounterConfig::default()).expect("config");
    let faults = Faults {
        info_every: Some(5),
        ..Faults::default()
    };
    let rec = run_fake(&mut w, 8, faults, &opts(2, 8)).await;
    let mut retired: Vec<i64> = Vec::new();
    let mut moved = 0;
    for op in &rec.history.ops {
        let Process::Client(p) = op.process else {
            continue;
        };
        match op.kind {
            OpType::Invoke => {
                assert!(!retired.contains(&p), "process {p} invoked after :info");
                if p >= 4 {
                    assert!(
                        retired.contains(&(p - 4)),
                        "process {p} before {} retired",
                        p - 4
                    );
                    moved += 1;
                }
            }
            OpType::Info => retired.push(p),
            _ => {}
        }
    }
    assert!(moved > 10, "{moved}");
    rec.history.operations().expect("well paired");
}

/// Goal: an op that never completes is recorded as :info with
/// `:error "timeout"` after op_timeout, and the run still ends on time.
#[tokio::test(start_paused = true)]
async fn op_timeout_is_info() {
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let faults = Faults {
        hang_every: Some(50),
        ..Faults::default()
    };
    let o = RunOptions {
        op_timeout: Duration::from_millis(300),
        ..opts(3, 9)
    };
    let rec = run_fake(&mut w, 9, faults, &o).await;
    let edn = rec.history.ops.len();
    assert!(edn > 0);
    let ops = rec.history.operations().expect("pair");
    let timeouts: Vec<_> = ops
        .iter()
        .filter(|o| o.outcome == jepsen_like::Outcome::Info)
        .collect();
    assert!(!timeouts.is_empty());
    for t in timeouts {
        let (i, c) = (t.invoke, t.complete.expect("completed"));
        let took = rec.history.ops[c].time.expect("t") - rec.history.ops[i].time.expect("t");
        assert_eq!(took, 300_000_000, "timed out at op_timeout");
    }
    // 3 s run + 1 s quiet + a final read; no hour-long hang.
    assert!(rec.wall < Duration::from_secs(6), "{:?}", rec.wall);
}

/// Goal: the timeout's :error field is on the completion line.
#[tokio::test(start_paused = true)]
async fn timeout_line_names_the_error() {
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let faults = Faults {
        hang_every: Some(1),
        ..Faults::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.edn");
    let o = RunOptions {
        op_timeout: Duration::from_millis(100),
        concurrency: 1,
        quiet: Duration::ZERO,
        ..opts(1, 10)
    };
    let (_, make) = fake(10, faults);
    let sink = HistorySink::create(&path).expect("sink");
    run(&mut w, make, None::<NoNemesis>, sink, &o)
        .await
        .expect("run");
    let text = std::fs::read_to_string(&path).expect("read");
    let second = text.lines().nth(1).expect("a completion");
    assert!(
        second.starts_with("{:type :info, ") && second.ends_with(":error \"timeout\"}"),
        "{second}"
    );
    // The worker moved to a new process after each timeout.
    assert!(text.contains(":process 1,"), "{text}");
}

/// Goal: nemesis operations are recorded as Jepsen does (:info start and
/// stop with :fault, errors as [:error msg]), periods match, heal_all is
/// called once at the end and recorded, and final reads come after it and
/// are retried until ok.
#[tokio::test(start_paused = true)]
async fn nemesis_heal_and_final_reads() {
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let nemesis = LogNemesis::default();
    let calls = nemesis.calls.clone();
    let faults = Faults {
        fail_final_reads: 2,
        ..Faults::default()
    };
    let (_, make) = fake(11, faults);
    let o = RunOptions {
        nemesis_faults: vec!["kill".into(), "broken".into(), "none".into()],
        nemesis_interval: Duration::from_secs(1),
        concurrency: 1,
        ..opts(5, 11)
    };
    let rec = run(&mut w, make, Some(nemesis), HistorySink::memory(), &o)
        .await
        .expect("run");
    let calls = calls.lock().expect("log").clone();
    assert_eq!(calls.last().map(String::as_str), Some("heal"));
    assert_eq!(calls.iter().filter(|c| *c == "heal").count(), 1);
    assert_eq!(rec.nemesis_periods.len(), 2, "{:?}", rec.nemesis_periods);
    for p in &rec.nemesis_periods {
        assert!(p.fault == "kill" || p.fault == "broken");
        assert!(p.end > p.start);
    }
    let nem: Vec<_> = rec
        .history
        .ops
        .iter()
        .filter(|o| o.process == Process::Nemesis)
        .collect();
    assert_eq!(
        nem.len(),
        2 * 4 + 2,
        "start/stop pairs of two faults, then heal"
    );
    assert!(nem.iter().all(|o| o.kind == OpType::Info));
    let heal = rec
        .history
        .ops
        .iter()
        .rposition(|o| o.f == Function::Other("heal".into()))
        .expect("heal recorded");
    if calls.iter().any(|c| c == "start broken") {
        assert!(nem
            .iter()
            .any(|o| o.value.to_string() == "[:error \"cannot break\"]"));
    }
    let finals: Vec<_> = rec
        .history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.f == Function::FinalRead && o.kind != OpType::Invoke)
        .collect();
    assert!(finals.iter().all(|(i, _)| *i > heal));
    let kinds: Vec<OpType> = finals.iter().map(|(_, o)| o.kind).collect();
    assert_eq!(kinds, [OpType::Fail, OpType::Fail, OpType::Ok]);
    // One second between attempts.
    let t: Vec<i64> = finals.iter().map(|(_, o)| o.time.expect("t")).collect();
    assert!(t[1] - t[0] >= 1_000_000_000);
    assert_eq!(w.check(&rec.history).verdict, Verdict::Valid);
}

/// Goal: the history file is complete while the run is still going (every
/// line written so far parses, and is a prefix of the final file), and
/// the final file parses back to the run's history.
#[tokio::test(start_paused = true)]
async fn history_file_streams_during_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.edn");
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let (_, make) = fake(12, Faults::default());
    let sink = HistorySink::create(&path).expect("sink");
    let o = opts(4, 12);
    let runner = run(&mut w, make, Some(LogNemesis::default()), sink, &o);
    let peek = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        std::fs::read_to_string(&path).expect("read mid-run")
    };
    let (rec, mid) = tokio::join!(runner, peek);
    let rec = rec.expect("run");
    let mid_history = edn::parse_history(&mid).expect("mid-run file parses");
    assert!(mid_history.ops.len() > 100);
    let end = std::fs::read_to_string(&path).expect("read");
    assert!(end.starts_with(&mid) && end.len() > mid.len());
    assert_eq!(edn::parse_history(&end).expect("parse"), rec.history);
    assert!(end.contains(":node \"n1\""), "client extras recorded");
}

/// Goal: bad options are errors that say what is wrong, not panics.
#[tokio::test(start_paused = true)]
async fn bad_options_are_errors() {
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    for o in [
        RunOptions {
            concurrency: 0,
            ..opts(1, 0)
        },
        RunOptions {
            rate: Some(0.0),
            ..opts(1, 0)
        },
        RunOptions {
            op_timeout: Duration::ZERO,
            ..opts(1, 0)
        },
    ] {
        let (_, make) = fake(0, Faults::default());
        let e = run(&mut w, make, None::<NoNemesis>, HistorySink::memory(), &o)
            .await
            .expect_err("bad options");
        assert!(e.to_string().starts_with("bad run options"), "{e}");
    }
    assert!(SetWorkload::new(SetConfig { read_fraction: 1.5 }).is_err());
    assert!(RegisterWorkload::new(RegisterConfig {
        keys: 0,
        ..RegisterConfig::default()
    })
    .is_err());
}

/// Goal: the run future is Send, so a caller may spawn it.
#[test]
fn run_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let (_, make) = fake(0, Faults::default());
    let o = opts(1, 0);
    let f = run(
        &mut w,
        make,
        Some(LogNemesis::default()),
        HistorySink::memory(),
        &o,
    );
    assert_send(&f);
}

/// Checks that every tag of an SVG/XML text is closed in order; returns
/// the number of elements.
fn balanced(text: &str) -> Result<usize, String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut elements = 0;
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else if !tag.starts_with('?') && !tag.starts_with('!') {
            elements += 1;
            let name = tag.split_whitespace().next().unwrap_or("");
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
    }
    if stack.is_empty() {
        Ok(elements)
    } else {
        Err(format!("unclosed {stack:?}"))
    }
}

/// Goal: a stored run has every report file; the SVGs are well-formed
/// and draw the ops and the shaded faults; results.json carries the
/// verdict, counts and extras; an extra section's verdict counts; the
/// exit status follows the verdict; a checker-less workload still gets a
/// timeline page.
#[tokio::test(start_paused = true)]
async fn reports_are_written() {
    let store = tempfile::tempdir().expect("tempdir");
    let dir = RunDir::create(store.path(), "set-kill", 1_700_000_000_000).expect("run dir");
    let mut w = SetWorkload::new(SetConfig::default()).expect("config");
    let (_, make) = fake(
        13,
        Faults {
            info_every: Some(23),
            ..Faults::default()
        },
    );
    let sink = HistorySink::create(&dir.file("history.edn")).expect("sink");
    let o = RunOptions {
        nemesis_faults: vec!["kill".into()],
        nemesis_interval: Duration::from_secs(1),
        ..opts(4, 13)
    };
    let rec = run(&mut w, make, Some(LogNemesis::default()), sink, &o)
        .await
        .expect("run");
    let result = w.check(&rec.history);
    assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.summary);
    let converged = (
        "convergence".to_string(),
        serde_json::json!({"verdict": "valid", "keys": 1}),
        vec!["1 key converged".to_string()],
    );
    let v = write_report(
        &dir,
        "set-kill",
        &rec,
        &result,
        std::slice::from_ref(&converged),
    )
    .expect("report");
    assert_eq!((v, exit_code(v)), (Verdict::Valid, 0));
    for name in [
        "history.edn",
        "results.json",
        "summary.txt",
        "latency.svg",
        "rate.svg",
        "timeline.html",
    ] {
        assert!(dir.file(name).is_file(), "{name}");
    }
    for name in ["latency.svg", "rate.svg"] {
        let svg = std::fs::read_to_string(dir.file(name)).expect("svg");
        assert!(svg.starts_with("<svg"), "{name}");
        let n = balanced(&svg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n > 20, "{name}: {n} elements");
        assert!(svg.contains(">kill</text>"), "{name}: fault band labelled");
    }
    let latency = std::fs::read_to_string(dir.file("latency.svg")).expect("svg");
    assert!(
        latency.matches("#ff7f0e").count() > 1,
        "info ops drawn orange"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.file("results.json")).expect("json"))
            .expect("parse");
    assert_eq!(json["verdict"], "valid");
    assert_eq!(json["convergence"]["keys"], 1);
    assert!(json["op_counts"]["add"]["ok"].as_u64() > Some(100));
    assert!(json["latency_ms"]["add"]["ok"]["median"].as_f64() > Some(0.0));
    assert_eq!(json["nemesis_periods"].as_array().map(Vec::len), Some(2));
    let summary = std::fs::read_to_string(dir.file("summary.txt")).expect("summary");
    assert!(summary.starts_with("set-kill: valid\n"), "{summary}");
    assert!(summary.contains("1 key converged"));
    let html = std::fs::read_to_string(dir.file("timeline.html")).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>"));

    let diverged = (
        "convergence".to_string(),
        serde_json::json!({"verdict": "invalid"}),
        vec!["replicas differ".to_string()],
    );
    let v = write_report(&dir, "set-kill", &rec, &result, &[diverged]).expect("report");
    assert_eq!((v, exit_code(v)), (Verdict::Invalid, 1));

    let mut w = VisibilityWorkload::new(VisibilityConfig {
        max_keys: 5,
        ..VisibilityConfig::default()
    })
    .expect("config");
    let rec = run_fake(&mut w, 14, Faults::default(), &opts(3, 14)).await;
    let result = w.check(&rec.history);
    assert!(result.check.is_none());
    let dir = RunDir::create(store.path(), "visibility", 1_700_000_001_000).expect("dir");
    write_report(&dir, "visibility", &rec, &result, &[]).expect("report");
    let html = std::fs::read_to_string(dir.file("timeline.html")).expect("html");
    assert!(html.contains("<tr class=ok>"), "table of ops");
    assert!(balanced(
        &html
            .replace("<!DOCTYPE html>", "")
            .replace("<meta charset=utf-8>", "")
    )
    .is_ok());
    assert_eq!(exit_code(Verdict::Unknown), 2);
}
