//! The deterministic simulator, end to end: seeds replay exactly, a correct cluster passes
//! every judged check under every fault, and each re-introduced bug class is found within
//! a bounded number of seeds (docs/SIMULATION.md records the seeds to failure).

use quorumkv::sim::{self, SimConfig};

fn cfg(ops: usize) -> SimConfig {
    SimConfig {
        ops,
        ..SimConfig::default()
    }
}

/// Goal: one seed gives one trace (hash and event count), twice over; another seed gives
/// another.
#[test]
fn same_seed_same_trace() {
    let c = cfg(300);
    for seed in [1, 2, 3] {
        let a = sim::run(seed, &c);
        let b = sim::run(seed, &c);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} did not replay");
        assert_eq!(a.events, b.events);
        assert_eq!(a.ops, b.ops);
    }
    assert_ne!(sim::run(1, &c).trace_hash, sim::run(2, &c).trace_hash);
}

/// Goal: a correct cluster passes every judged check (no acknowledged write lost, counter
/// within bounds, convergence after the heal) under all faults, on a few seeds.
#[test]
fn correct_cluster_passes() {
    let c = cfg(500);
    for seed in 0..5 {
        let r = sim::run(seed, &c);
        assert!(r.passed(), "{}", sim::describe(&r));
        assert!(r.ops > 400, "{}", sim::describe(&r));
        assert!(r.converged_ms.is_some());
    }
}

/// The first seed from 0 that fails with `bug` switched on, searching at most `bound`.
fn seeds_to_failure(bug: &str, bound: u64) -> Option<u64> {
    let mut c = cfg(500);
    c.bugs.enable(bug, &mut c.faults).expect("a known bug name");
    (0..bound).find(|&seed| !sim::run(seed, &c).passed())
}

/// Goal: the swarm finds a lead that ignores the client's causal context (every write
/// blind: overwritten values come back as siblings) within 5 seeds.
#[test]
fn swarm_finds_ignored_contexts() {
    let found = seeds_to_failure("ignore-context", 5);
    assert!(found.is_some(), "ignore-context not found in 5 seeds");
}

/// Goal: the swarm finds replication and read repair that overwrite instead of merging
/// (acknowledged writes lost) within 5 seeds.
#[test]
fn swarm_finds_overwriting_repair() {
    let found = seeds_to_failure("overwrite-repair", 5);
    assert!(found.is_some(), "overwrite-repair not found in 5 seeds");
}

/// Goal: the swarm finds a replica that acknowledges a write before it is durable (a
/// crash loses it, and the lead re-issues its dot) within 5 seeds.
#[test]
fn swarm_finds_ack_before_durable() {
    let found = seeds_to_failure("ack-before-durable", 5);
    assert!(found.is_some(), "ack-before-durable not found in 5 seeds");
}

/// Goal: the swarm finds an unsynced node that restarts under its old incarnation and
/// re-issues dots its crash lost (two different writes under one dot: one is lost)
/// within 40 seeds.
#[test]
fn swarm_finds_reissued_dots() {
    let found = seeds_to_failure("reissue-dot", 40);
    assert!(found.is_some(), "reissue-dot not found in 40 seeds");
}

/// Goal: the same unsynced mode with the incarnation renewed at every start (the real
/// node's rule) loses no acknowledged write: the reissue-dot failures are the bug's, not
/// the mode's.
#[test]
fn unsynced_nodes_with_new_incarnations_pass() {
    let mut c = cfg(500);
    c.faults.push(sim::nemesis::Fault::Unsynced);
    for seed in 0..5 {
        let r = sim::run(seed, &c);
        assert!(r.passed(), "{}", sim::describe(&r));
    }
}
