//! The store side of the Jepsen-style harness, run in process on the `sim` target through
//! the library API (`quorumkv::harness::run`), as `quorumkv jepsen --target sim` runs it:
//! the verdicts the store deserves on known-good and known-bad configurations, the
//! determinism of the simulated target, and the convergence check's findings. One run
//! uses the `local` target (node processes of the built binary) for the `membership`
//! nemesis, which only that target has.
//!
//! Runs are short (a few simulated seconds, each well under a minute of real time in a
//! debug build) because the simulator's cluster runs on a paused clock; the local run
//! takes about half a minute of real time.

use std::time::Duration;

use jepsen_like::harness::{HistorySink, RunDir, RunOptions};
use jepsen_like::{Process, Value, Verdict};
use quorumkv::harness::run::{Judgement, Processes, RunOutcome, RunPlan, Target};
use quorumkv::harness::{KeyspaceSpec, WorkloadKind};

/// A sim plan: `spec` and `workload` for `secs` simulated seconds with 6 clients, `faults`
/// every second, seeded with `seed`, and a fixed keyspace name (sealed contexts sign it,
/// so the history depends on it).
fn plan(spec: &str, workload: WorkloadKind, faults: &[&str], secs: u64, seed: u64) -> RunPlan {
    let faults: Vec<String> = faults.iter().map(|f| f.to_string()).collect();
    RunPlan {
        target: Target::Sim,
        nodes: 3,
        spec: spec.parse::<KeyspaceSpec>().expect("keyspace spec"),
        spec_text: spec.to_string(),
        workload,
        faults: faults.clone(),
        opts: RunOptions {
            time: Duration::from_secs(secs),
            concurrency: 6,
            rate: None,
            seed,
            nemesis_faults: faults,
            nemesis_interval: Duration::from_secs(1),
            op_timeout: Duration::from_secs(5),
            quiet: Duration::from_secs(1),
            progress: false,
        },
        converge_within: Duration::from_secs(3),
        test: format!("{workload}-test"),
        keyspace: "jepsen_test".into(),
        anti_entropy: Default::default(),
    }
}

/// Run `p` on the sim target into a fresh run directory under `store`, and judge it.
fn run(p: &RunPlan, store: &std::path::Path) -> (RunDir, RunOutcome, Judgement) {
    let dir = RunDir::create(store, &p.test, 0).expect("run directory");
    let sink = HistorySink::create(&dir.file("history.edn")).expect("history.edn");
    let outcome = p.run_sim(sink).expect("the sim run completes");
    let judgement = p.write_report(&dir, &outcome).expect("report");
    (dir, outcome, judgement)
}

/// The run's `results.json`.
fn results(dir: &RunDir) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.file("results.json")).expect("results.json");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// Goal: a set kept as one last-write-wins value, read-extended-written back by 6
/// concurrent clients, loses acknowledged adds (a concurrent write wins over another
/// whole), and the harness says so: the workload's verdict is invalid with lost > 0.
#[test]
fn sim_set_on_lww_timestamp_loses_acknowledged_adds() {
    let store = tempfile::tempdir().unwrap();
    let p = plan("policy=lww-timestamp,n=3", WorkloadKind::Set, &[], 3, 1);
    let (dir, _, j) = run(&p, store.path());
    assert_eq!(
        j.workload.verdict,
        Verdict::Invalid,
        "{:?}",
        j.workload.summary
    );
    assert_eq!(j.verdict, Verdict::Invalid);
    let lost = j.workload.details["set"]["lost"]
        .as_array()
        .expect("set.lost is a list")
        .len();
    assert!(lost > 0, "{:?}", j.workload.summary);
    // The stored report says the same.
    assert_eq!(results(&dir)["verdict"], "invalid");
}

/// Goal: on a siblings keyspace the same read-extend-write-back set keeps every
/// acknowledged add (concurrent writes become siblings, whose union the next read takes),
/// even while nodes are killed and the network is cut in halves; the replicas agree after
/// the heal.
#[test]
fn sim_set_on_siblings_survives_kill_and_partitions() {
    let store = tempfile::tempdir().unwrap();
    let p = plan(
        "policy=siblings,n=3",
        WorkloadKind::Set,
        &["kill", "partition-halves"],
        4,
        // The nemesis draws each fault at random: this seed's schedule draws both.
        4,
    );
    let (dir, outcome, j) = run(&p, store.path());
    assert_eq!(
        j.workload.verdict,
        Verdict::Valid,
        "{:?}",
        j.workload.summary
    );
    // The nemesis really acted: both faults have a period in the record.
    let faults: Vec<&str> = outcome
        .record
        .nemesis_periods
        .iter()
        .map(|f| f.fault.as_str())
        .collect();
    assert!(faults.contains(&"kill"), "{faults:?}");
    assert!(faults.contains(&"partition-halves"), "{faults:?}");
    assert!(
        outcome.convergence.converged,
        "{:?}",
        outcome.convergence.summary()
    );
    assert_eq!(j.verdict, Verdict::Valid);
    assert_eq!(results(&dir)["run"]["target"], "sim");
}

/// Goal: CRDT counter increments are neither lost nor duplicated beyond what
/// indeterminate (`:info`) adds allow, under kills: the counter workload is valid.
#[test]
fn sim_counter_survives_kill() {
    let store = tempfile::tempdir().unwrap();
    let p = plan("policy=counter,n=3", WorkloadKind::Counter, &["kill"], 4, 3);
    let (_, outcome, j) = run(&p, store.path());
    assert_eq!(
        j.workload.verdict,
        Verdict::Valid,
        "{:?}",
        j.workload.summary
    );
    assert!(outcome
        .record
        .nemesis_periods
        .iter()
        .any(|f| f.fault == "kill"));
    assert_eq!(j.verdict, Verdict::Valid);
}

/// Goal: the sim target is deterministic — the same plan and seed, faults included, give
/// a byte-identical history.edn (seeded rng, paused tokio time, simulated cluster); and a
/// different seed gives a different one (so the comparison can fail).
#[test]
fn sim_same_seed_gives_identical_history() {
    let store = tempfile::tempdir().unwrap();
    let faults = ["kill", "partition-halves"];
    let history = |seed: u64, name: &str| {
        let mut p = plan("policy=siblings,n=3", WorkloadKind::Set, &faults, 3, seed);
        p.test = name.into();
        let (dir, _, _) = run(&p, store.path());
        std::fs::read(dir.file("history.edn")).expect("history.edn")
    };
    let a = history(7, "first");
    let b = history(7, "second");
    assert!(!a.is_empty());
    assert!(a == b, "the same seed gave two different histories");
    let c = history(8, "third");
    assert!(a != c, "a different seed gave the same history");
}

/// Goal: without faults every replica of every visibility key holds the same object by
/// the end of the run (every write reaches all three replicas), and the report's verdict
/// counts the convergence section as valid.
#[test]
fn sim_visibility_without_faults_converges() {
    let store = tempfile::tempdir().unwrap();
    let p = plan("policy=siblings,n=3", WorkloadKind::Visibility, &[], 3, 4);
    let (dir, outcome, j) = run(&p, store.path());
    let c = &outcome.convergence;
    assert!(c.keys > 0);
    assert!(c.converged, "{:?}", c.summary());
    assert_eq!(c.differing_keys, 0);
    assert_eq!(j.verdict, Verdict::Valid, "{:?}", j.workload.summary);
    assert_eq!(results(&dir)["convergence"]["verdict"], "valid");
}

/// Goal: the convergence check finds replicas that never agree, and fails the run for it.
/// The scenario diverges by construction, not by chance: a node is killed while writes go
/// on (they reach only the other two replicas), hinted handoff is off for the keyspace
/// (`sloppy=false`) and there is no anti-entropy yet, while `read-repair=off` keeps reads
/// from copying the missed writes to it after its restart — so once healed, the
/// restarted node lacks keys the others hold and nothing will ever give them to it. The
/// visibility workload's own verdict stays valid (staleness is what it measures); the
/// convergence section makes the run invalid.
#[test]
fn sim_visibility_under_kill_without_read_repair_diverges() {
    let store = tempfile::tempdir().unwrap();
    let p = plan(
        "policy=siblings,n=3,read-repair=off,sloppy=false",
        WorkloadKind::Visibility,
        &["kill"],
        3,
        5,
    );
    let (dir, outcome, j) = run(&p, store.path());
    let c = &outcome.convergence;
    assert!(!c.converged, "{:?}", c.summary());
    assert!(c.differing_keys > 0);
    assert!(!c.differing.is_empty());
    assert_eq!(
        j.workload.verdict,
        Verdict::Valid,
        "{:?}",
        j.workload.summary
    );
    assert_eq!(j.verdict, Verdict::Invalid);
    let r = results(&dir);
    assert_eq!(r["convergence"]["verdict"], "invalid");
    assert_eq!(r["verdict"], "invalid");
}

/// Goal: the same run as `sim_visibility_under_kill_without_read_repair_diverges` with
/// hinted handoff on (the default) converges with no read repair and no anti-entropy:
/// the writes the killed node missed are held as hints and handed back after it restarts.
#[test]
fn sim_visibility_under_kill_converges_by_hinted_handoff() {
    let store = tempfile::tempdir().unwrap();
    let p = plan(
        "policy=siblings,n=3,read-repair=off",
        WorkloadKind::Visibility,
        &["kill"],
        3,
        5,
    );
    let (_, outcome, j) = run(&p, store.path());
    let c = &outcome.convergence;
    assert!(c.keys > 0);
    assert!(c.converged, "{:?}", c.summary());
    assert_eq!(c.differing_keys, 0);
    assert_eq!(j.verdict, Verdict::Valid, "{:?}", j.workload.summary);
}

/// The committed layout changes the nemesis recorded: (`join` or `leave`, version) of
/// every nemesis completion whose value is a committed change (not a skipped one, not an
/// error), in history order.
fn committed_changes(outcome: &RunOutcome) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut visit = |v: &Value| {
        if let (Some(change), Some(version)) = (
            v.get(&Value::kw("change")).and_then(Value::as_name),
            v.get(&Value::kw("version")).and_then(Value::as_int),
        ) {
            if v.get(&Value::kw("members")).is_some() {
                out.push((change.to_string(), version));
            }
        }
    };
    for op in &outcome.record.history.ops {
        if op.process != Process::Nemesis {
            continue;
        }
        // `heal_all` records a vector of what it healed; start and stop record one value.
        match &op.value {
            Value::Vector(items) => items.iter().for_each(&mut visit),
            other => visit(other),
        }
    }
    out
}

/// Goal (issue 15): a newcomer grows a running 3-node cluster to 4 and shrinks it back,
/// twice, while six clients add to a set, and nothing acknowledged is lost. On the local
/// target with `--nodes 4`, the `membership` nemesis commits a join of the spare node at
/// each start and its leave at each stop, and after the heal the layout settles back to
/// the first three nodes. The harness's verdict (set-full checker plus convergence) is
/// valid, and the history holds at least one committed join and one committed leave, so
/// the run really moved ownership while it wrote.
#[test]
fn local_set_survives_membership_grow_and_shrink() {
    let store = tempfile::tempdir().unwrap();
    let mut p = plan(
        "policy=siblings,n=3,r=2,w=2",
        WorkloadKind::Set,
        &["membership"],
        16,
        1,
    );
    p.target = Target::Local;
    p.nodes = 4;
    p.opts.nemesis_interval = Duration::from_secs(4);
    p.opts.quiet = Duration::from_secs(2);
    p.converge_within = Duration::from_secs(30);
    p.test = "set-membership-local".into();
    let dir = RunDir::create(store.path(), &p.test, 0).expect("run directory");
    let sink = HistorySink::create(&dir.file("history.edn")).expect("history.edn");
    let processes = Processes {
        exe: Some(env!("CARGO_BIN_EXE_quorumkv").into()),
        repo: std::path::PathBuf::new(),
        keep_data: false,
    };
    let outcome = p
        .run(&dir, sink, &processes)
        .expect("the local run completes");
    let j = p.write_report(&dir, &outcome).expect("report");
    let changes = committed_changes(&outcome);
    assert!(
        changes.iter().any(|(c, _)| c == "join") && changes.iter().any(|(c, _)| c == "leave"),
        "no committed join and leave in {changes:?}; run in {}",
        dir.path.display()
    );
    // The versions only grow: each change committed on top of the one before.
    assert!(changes.windows(2).all(|w| w[0].1 < w[1].1), "{changes:?}");
    let set = &j.workload.details["set"];
    assert!(
        set["acknowledged_count"].as_u64().unwrap_or(0) > 0,
        "{:?}",
        j.workload.summary
    );
    assert_eq!(
        set["lost"].as_array().map(Vec::len),
        Some(0),
        "{:?}",
        j.workload.summary
    );
    assert!(
        outcome.convergence.converged,
        "{:?}",
        outcome.convergence.summary()
    );
    assert_eq!(
        j.verdict,
        Verdict::Valid,
        "{:?}; run in {}",
        j.workload.summary,
        dir.path.display()
    );
}

/// Goal: a `membership` run that cannot work is refused before any cluster starts, with a
/// message naming the problem: a keyspace whose n the layout without the spare cannot
/// hold, a single node, and a target without a spare node.
#[test]
fn membership_plans_that_cannot_work_are_refused() {
    let mut p = plan(
        "policy=siblings,n=3",
        WorkloadKind::Set,
        &["membership"],
        5,
        1,
    );
    p.target = Target::Local;
    p.nodes = 3;
    let e = p.check_membership().unwrap_err().to_string();
    assert!(e.contains("n=3") && e.contains("at most 2"), "{e}");
    p.nodes = 4;
    assert!(p.check_membership().is_ok());
    let mut one = plan(
        "policy=siblings,n=1",
        WorkloadKind::Set,
        &["membership"],
        5,
        1,
    );
    one.target = Target::Local;
    one.nodes = 1;
    let e = one.check_membership().unwrap_err().to_string();
    assert!(e.contains("--nodes 2 or more"), "{e}");
    p.target = Target::Sim;
    let e = p.check_membership().unwrap_err().to_string();
    assert!(e.contains("sim") && e.contains("\"membership\""), "{e}");
}
