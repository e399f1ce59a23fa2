//! The store's side of the Jepsen-style harness (`quorumkv jepsen`): what a run's keyspace
//! looks like, which workloads fit which conflict policy, the client that turns the
//! harness's abstract operations into quorumkv requests ([`client`]), the targets a run
//! can be pointed at with their nemeses ([`local`], [`containers`], [`simulated`]), and
//! the convergence check every run ends with ([`convergence`]), and one whole run from a
//! checked plan to its stored report ([`run`]).
//!
//! The generic parts — generators, the nemesis schedule, recording the history as it
//! happens, the checkers, plots and stored runs — live in the `jepsen-like` crate
//! (`jepsen_like::harness`), which knows nothing of quorumkv; this module is the seam
//! between the two, as a Jepsen test's `client` and `db` namespaces are.

pub mod client;
pub mod containers;
pub mod convergence;
pub mod local;
pub mod nemesis;
pub mod run;
pub mod simulated;

use std::fmt;
use std::str::FromStr;

use crate::keyspace::{ConflictPolicy, KeyspaceDef, ReadRepair};

/// What can go wrong setting up or running a harness run.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `--keyspace` could not be read.
    #[error("bad --keyspace {spec:?}: {problem} (expected policy=P,n=N,r=R,w=W[,read-repair=async|blocking|off][,sloppy=true|false], e.g. policy=siblings,n=3,r=2,w=2)")]
    KeyspaceSpec {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The workload cannot run on the keyspace's policy.
    #[error("workload {workload} cannot run on a {policy} keyspace: {why}")]
    Unsupported {
        /// The workload.
        workload: WorkloadKind,
        /// The policy.
        policy: ConflictPolicy,
        /// Which policies it needs.
        why: &'static str,
    },
    /// `--workload` names no workload.
    #[error(
        "unknown workload {0:?} (expected register, set, counter, sibling-register or visibility)"
    )]
    UnknownWorkload(String),
    /// A nemesis the target cannot inject.
    #[error("the {target} target cannot inject {fault:?} (it can: {supported})")]
    UnsupportedFault {
        /// The target.
        target: &'static str,
        /// The fault asked for.
        fault: String,
        /// What it supports.
        supported: String,
    },
    /// The `membership` fault cannot run on this cluster size or keyspace.
    #[error("the membership nemesis on {nodes} nodes: {problem}")]
    MembershipPlan {
        /// `--nodes`.
        nodes: usize,
        /// What is wrong.
        problem: String,
    },
    /// Starting, reaching or stopping the cluster failed.
    #[error("{0}")]
    Cluster(String),
    /// The run's keyspace could not be created.
    #[error("creating keyspace {keyspace}: {message}")]
    CreateKeyspace {
        /// The keyspace.
        keyspace: String,
        /// The client's error.
        message: String,
    },
    /// The generic runner or a workload stopped the run (bad options, the history file).
    #[error(transparent)]
    Run(#[from] jepsen_like::harness::HarnessError),
    /// The report could not be written.
    #[error("writing the run's report: {0}")]
    Report(jepsen_like::harness::HarnessError),
    /// The convergence report could not be serialized.
    #[error("serializing the convergence report: {0}")]
    Json(serde_json::Error),
    /// An operating-system call failed (a runtime, a file).
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        cause: std::io::Error,
    },
}

/// The workloads of `quorumkv jepsen --workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Reads, writes and compare-and-set per key, checked for linearizability.
    Register,
    /// Jepsen's set-full: unique adds, then reads.
    Set,
    /// CRDT increments within bounds.
    Counter,
    /// Blind and context writes; every acknowledged write visible or causally replaced.
    SiblingRegister,
    /// Probabilistically bounded staleness, measured.
    Visibility,
}

impl WorkloadKind {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Set => "set",
            WorkloadKind::Counter => "counter",
            WorkloadKind::SiblingRegister => "sibling-register",
            WorkloadKind::Visibility => "visibility",
        }
    }

    /// Refuse a policy the workload has no meaning on, naming the ones it needs.
    pub fn check_policy(self, policy: ConflictPolicy) -> Result<(), HarnessError> {
        use ConflictPolicy::*;
        let plain = matches!(policy, Siblings | LwwTimestamp | LwwActor | LwwClient);
        let (ok, why) = match self {
            WorkloadKind::Register | WorkloadKind::SiblingRegister | WorkloadKind::Visibility => (
                plain,
                "it needs siblings, lww-timestamp, lww-actor or lww-client",
            ),
            // A set is a CRDT set, or one key a client reads, extends and writes back.
            WorkloadKind::Set => (
                plain || policy == Set,
                "it needs a set keyspace (CRDT adds) or siblings/lww-* (read, extend, write back)",
            ),
            WorkloadKind::Counter => (
                policy == Counter,
                "it needs a counter keyspace (CRDT increments)",
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(HarnessError::Unsupported {
                workload: self,
                policy,
                why,
            })
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = HarnessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "register" => WorkloadKind::Register,
            "set" => WorkloadKind::Set,
            "counter" => WorkloadKind::Counter,
            "sibling-register" | "siblings" => WorkloadKind::SiblingRegister,
            "visibility" => WorkloadKind::Visibility,
            other => return Err(HarnessError::UnknownWorkload(other.to_string())),
        })
    }
}

/// The keyspace a run creates: `policy=P,n=N,r=R,w=W[,read-repair=M][,sloppy=false]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyspaceSpec {
    /// Conflict policy.
    pub policy: ConflictPolicy,
    /// Replicas per key.
    pub n: u8,
    /// Read quorum.
    pub r: u8,
    /// Write quorum.
    pub w: u8,
    /// Read repair mode (default async).
    pub read_repair: ReadRepair,
    /// The keyspace's `sloppy_quorum` (default true); `false` also means no hints for
    /// it, so a run can show what hinted handoff does.
    pub sloppy: bool,
}

impl KeyspaceSpec {
    /// The definition of keyspace `name` this spec describes. `actors` are the client
    /// actors of an `lww-actor` keyspace, highest priority first.
    pub fn def(&self, name: &str, actors: &[String]) -> KeyspaceDef {
        let mut def = KeyspaceDef::new(name, self.n, self.r, self.w);
        def.policy = self.policy;
        def.read_repair = self.read_repair;
        def.sloppy_quorum = self.sloppy;
        if self.policy == ConflictPolicy::LwwActor {
            def.actor_priority = actors.to_vec();
        }
        def
    }

    /// A short label for reports and directory names: `siblings-n3r2w2`.
    pub fn label(&self) -> String {
        let rr = match self.read_repair {
            ReadRepair::Async => String::new(),
            other => format!("-rr{other}"),
        };
        let sloppy = if self.sloppy { "" } else { "-strict" };
        format!(
            "{}-n{}r{}w{}{rr}{sloppy}",
            self.policy, self.n, self.r, self.w
        )
    }
}

impl FromStr for KeyspaceSpec {
    type Err = HarnessError;
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |problem: String| HarnessError::KeyspaceSpec {
            spec: spec.to_string(),
            problem,
        };
        let (mut policy, mut n, mut r, mut w, mut rr) = (None, None, None, None, None);
        let mut sloppy = true;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            let num = |v: &str| {
                v.parse::<u8>()
                    .map_err(|_| bad(format!("{k}={v:?} is not a number from 1 to 255")))
            };
            match k.trim() {
                "policy" => {
                    policy = Some(
                        v.parse::<ConflictPolicy>()
                            .map_err(|e| bad(format!("policy: {e}")))?,
                    )
                }
                "n" => n = Some(num(v)?),
                "r" => r = Some(num(v)?),
                "w" => w = Some(num(v)?),
                "read-repair" | "read_repair" => {
                    rr = Some(
                        v.parse::<ReadRepair>()
                            .map_err(|e| bad(format!("read-repair: {e}")))?,
                    )
                }
                "sloppy" => {
                    sloppy = v
                        .trim()
                        .parse::<bool>()
                        .map_err(|_| bad(format!("sloppy={v:?} is not true or false")))?
                }
                other => return Err(bad(format!("unknown field {other:?}"))),
            }
        }
        let n = n.ok_or_else(|| bad("n is missing".into()))?;
        let quorum = n / 2 + 1;
        Ok(KeyspaceSpec {
            policy: policy.ok_or_else(|| bad("policy is missing".into()))?,
            n,
            r: r.unwrap_or(quorum),
            w: w.unwrap_or(quorum),
            read_repair: rr.unwrap_or_default(),
            sloppy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the documented spec form parses, quorums default to a majority, and every
    /// malformed spec is refused with a message naming the problem.
    #[test]
    fn keyspace_spec_parses_and_refuses() {
        let s: KeyspaceSpec = "policy=lww-timestamp,n=3,r=1,w=1,read-repair=off"
            .parse()
            .unwrap();
        assert_eq!(s.policy, ConflictPolicy::LwwTimestamp);
        assert_eq!((s.n, s.r, s.w), (3, 1, 1));
        assert_eq!(s.read_repair, ReadRepair::Off);
        assert_eq!(s.label(), "lww-timestamp-n3r1w1-rroff");
        let d: KeyspaceSpec = "policy=siblings,n=5".parse().unwrap();
        assert_eq!((d.r, d.w), (3, 3));
        for (bad, needle) in [
            ("n=3", "policy is missing"),
            ("policy=siblings", "n is missing"),
            ("policy=nope,n=3", "policy"),
            ("policy=siblings,n=x", "not a number"),
            ("policy=siblings,n=3,q=1", "unknown field"),
            ("policy=siblings,n=3,r", "not key=value"),
        ] {
            let e = bad.parse::<KeyspaceSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    /// Goal: workloads refuse policies they have no meaning on.
    #[test]
    fn workloads_check_their_policy() {
        assert!(WorkloadKind::Set.check_policy(ConflictPolicy::Set).is_ok());
        assert!(WorkloadKind::Set
            .check_policy(ConflictPolicy::LwwTimestamp)
            .is_ok());
        assert!(WorkloadKind::Counter
            .check_policy(ConflictPolicy::Counter)
            .is_ok());
        let e = WorkloadKind::Counter
            .check_policy(ConflictPolicy::Siblings)
            .unwrap_err()
            .to_string();
        assert!(e.contains("counter keyspace"), "{e}");
        assert!(WorkloadKind::Register
            .check_policy(ConflictPolicy::Map)
            .is_err());
        assert_eq!(
            "sibling-register".parse::<WorkloadKind>().unwrap(),
            WorkloadKind::SiblingRegister
        );
        assert!("nope".parse::<WorkloadKind>().is_err());
    }
}
