//! The network side of layouts: spreading histories, acknowledging versions, and the
//! commit protocol.
//!
//! Histories spread two ways: pushed to every node whenever this node commits or
//! acknowledges a version, and pulled from one random node every
//! `membership.gossip_interval_ms` (so a node that was down or cut off catches up by
//! itself). Merging is order-free ([`History::merge`]), so duplicates and reordering are
//! harmless.
//!
//! A commit is single-decree Paxos on the next version among the current version's
//! members: a majority must promise the proposer's ballot, then accept its layout — or,
//! if some of them had already accepted another proposer's layout, that one, which the
//! proposer then completes instead of its own (and reports that its change lost). Two
//! commits staged on the same version can therefore never both take effect, and a
//! proposer that crashes half-way leaves nothing a later proposer cannot finish.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::sync::Arc;
use std::time::Duration;

use super::layout::{choose, majority, Accepted, Ballot, History, Layout, Promise};
use super::{Membership, MembershipError};
use crate::env::Env;
use crate::peers::{self, Peers};
use crate::proto::ReplicaFailure;

/// Why a commit did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Fewer than a majority of the current version's members answered.
    #[error("layout v{slot} needs {needed} of the {voters} members of v{current} to agree; {got} did ({})", describe(failures))]
    NoMajority {
        /// The version being decided.
        slot: u64,
        /// The current version.
        current: u64,
        /// Members of the current version.
        voters: usize,
        /// A majority of them.
        needed: usize,
        /// How many agreed.
        got: usize,
        /// Why the others did not.
        failures: Vec<ReplicaFailure>,
    },
    /// Another commit from the same version took effect; this one did not.
    #[error("another commit from v{base} took effect first (v{} is now {:?}); your staged changes were not applied: `cluster abort`, then stage them again on the new version", winner.version, winner.names())]
    Lost {
        /// The version both were staged on.
        base: u64,
        /// The layout that took effect.
        winner: Box<Layout>,
    },
    /// Local state could not be read or kept.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

fn describe(failures: &[ReplicaFailure]) -> String {
    if failures.is_empty() {
        return "others rejected the ballot".into();
    }
    failures
        .iter()
        .map(|f| format!("{}: {} ({})", f.node, f.kind, f.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How many times a commit retries with a higher ballot when another proposer's
/// promises got in the way.
const COMMIT_ATTEMPTS: u64 = 5;

/// Every node but this one, of every live version.
pub fn others(m: &Membership) -> Vec<String> {
    m.view()
        .members()
        .into_iter()
        .map(|x| x.name)
        .filter(|n| n != m.name())
        .collect()
}

/// Push this node's history to every other node, waiting at most `timeout`.
pub async fn broadcast(m: &Membership, peers: &Arc<Peers>, env: &dyn Env, timeout: Duration) {
    broadcast_to(m, peers, env, timeout, others(m)).await
}

/// Push this node's history to `targets`. A caller whose change may have pruned some
/// nodes out of the history (the last sync of a transfer) names them here, so the
/// nodes that left still learn the change completed.
pub async fn broadcast_to(
    m: &Membership,
    peers: &Arc<Peers>,
    env: &dyn Env,
    timeout: Duration,
    targets: Vec<String>,
) {
    let deadline = env.now() + timeout;
    let mut rx = peers.fan_out_quiet(
        &targets,
        peers::LayoutSync(m.view().history.clone()),
        deadline,
    );
    while let Some(reply) = rx.recv().await {
        if let Ok(h) = reply.result {
            if let Err(e) = m.merge(&h) {
                tracing::warn!(node = %m.name(), peer = %reply.node, error = %e, "layout history from a peer refused");
            }
        }
    }
}

/// Pull (and push) histories with one random other node.
pub async fn gossip_once(m: &Membership, peers: &Arc<Peers>, env: &dyn Env, timeout: Duration) {
    let targets = others(m);
    if targets.is_empty() {
        return;
    }
    let to = &targets[(env.random_u64() % targets.len() as u64) as usize];
    let h = m.view().history.clone();
    if let Ok(theirs) = peers
        .call_quiet(to, peers::LayoutSync(h), env.now() + timeout)
        .await
    {
        if let Err(e) = m.merge(&theirs) {
            tracing::warn!(node = %m.name(), peer = %to, error = %e, "layout history from a peer refused");
        }
    }
}

/// Run forever: acknowledge versions as soon as this node's older writes drained (and
/// push the news), and gossip every `interval` (± a quarter).
pub async fn run(
    m: Arc<Membership>,
    peers: Arc<Peers>,
    env: Arc<dyn Env>,
    interval: Duration,
    timeout: Duration,
) {
    let next = |env: &Arc<dyn Env>| {
        env.now() + crate::env::jittered(&**env, interval.as_millis().max(1) as u64)
    };
    let mut gossip_at = next(&env);
    loop {
        // Woken early by a history change or the last write under a version ending (a
        // version may now be acknowledged); gossip keeps its own schedule, so a busy
        // node still pulls.
        let changed = m.changed.notified();
        tokio::pin!(changed);
        let timer = env.sleep_until(gossip_at);
        tokio::select! {
            _ = &mut changed => {}
            _ = timer => {}
        }
        match m.try_ack() {
            Ok(true) => broadcast(&m, &peers, &*env, timeout).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(node = %m.name(), error = %e, "acknowledging a layout failed"),
        }
        if env.now() >= gossip_at {
            gossip_once(&m, &peers, &*env, timeout).await;
            gossip_at = next(&env);
        }
    }
}

/// What a successful commit did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The new version.
    pub layout: Layout,
}

/// Commit the changes staged on this node as the next version.
pub async fn commit(
    m: &Arc<Membership>,
    peers: &Arc<Peers>,
    env: &dyn Env,
    timeout: Duration,
) -> Result<Committed, CommitError> {
    let (mine, staged) = m.proposal()?;
    let base = staged.base;
    let slot = mine.version;
    let voters = m.view().history.current().names();
    let needed = majority(voters.len());
    let mut round = m.highest_round().saturating_add(1);
    let (mut last_failures, mut best) = (Vec::new(), 0usize);
    for _ in 0..COMMIT_ATTEMPTS {
        let ballot = Ballot {
            round,
            node: m.name().to_string(),
        };
        // Phase 1: promises from a majority.
        let deadline = env.now() + timeout;
        let mut rx = peers.fan_out(
            &voters,
            peers::LayoutPrepare {
                slot,
                ballot: ballot.clone(),
            },
            deadline,
        );
        let (mut promises, mut failures) = (Vec::new(), Vec::new());
        let mut decided: Option<History> = None;
        while promises.len() < needed {
            let Some(reply) = rx.recv().await else { break };
            match reply.result {
                Ok(Promise::Promised(acc)) => promises.push(acc),
                Ok(Promise::Rejected(b)) => {
                    round = outbid(round, &b);
                    failures.push(refusal(&reply.node, &b));
                }
                Ok(Promise::Decided(h)) => {
                    decided = Some(*h);
                    break;
                }
                Ok(Promise::Lagging(v)) => failures.push(lagging(&reply.node, v)),
                Err(f) => failures.push(f.to_failure(&reply.node)),
            }
        }
        if let Some(h) = decided {
            return settle(m, peers, env, timeout, &h, &mine, base).await;
        }
        best = best.max(promises.len());
        if promises.len() < needed {
            last_failures = failures;
            round = round.saturating_add(1);
            continue;
        }
        let chosen = choose(mine.clone(), &promises);
        // Phase 2: a majority accepts.
        let deadline = env.now() + timeout;
        let mut rx = peers.fan_out(
            &voters,
            peers::LayoutAccept {
                ballot: ballot.clone(),
                layout: chosen.clone(),
            },
            deadline,
        );
        let (mut oks, mut failures) = (0usize, Vec::new());
        while oks < needed {
            let Some(reply) = rx.recv().await else { break };
            match reply.result {
                Ok(Accepted::Accepted) => oks += 1,
                Ok(Accepted::Rejected(b)) => {
                    round = outbid(round, &b);
                    failures.push(refusal(&reply.node, &b));
                }
                Ok(Accepted::Decided(h)) => {
                    decided = Some(*h);
                    break;
                }
                Ok(Accepted::Lagging(v)) => failures.push(lagging(&reply.node, v)),
                Err(f) => failures.push(f.to_failure(&reply.node)),
            }
        }
        if let Some(h) = decided {
            return settle(m, peers, env, timeout, &h, &mine, base).await;
        }
        best = best.max(oks);
        if oks < needed {
            last_failures = failures;
            round = round.saturating_add(1);
            continue;
        }
        // Chosen: apply, tell everyone (the new members included), report.
        m.update(|h| h.add_committed(chosen.clone()))?;
        broadcast(m, peers, env, timeout).await;
        if chosen.digest() == mine.digest() {
            m.abort()?;
            return Ok(Committed { layout: chosen });
        }
        return Err(CommitError::Lost {
            base,
            winner: Box::new(chosen),
        });
    }
    Err(CommitError::NoMajority {
        slot,
        current: base,
        voters: voters.len(),
        needed,
        got: best,
        failures: last_failures,
    })
}

/// The slot was decided already: take that history in and say whether it was ours.
async fn settle(
    m: &Arc<Membership>,
    peers: &Arc<Peers>,
    env: &dyn Env,
    timeout: Duration,
    h: &History,
    mine: &Layout,
    base: u64,
) -> Result<Committed, CommitError> {
    m.merge(h)?;
    broadcast(m, peers, env, timeout).await;
    let view = m.view();
    let winner = view
        .history
        .live
        .iter()
        .find(|l| l.version == mine.version)
        .cloned()
        .unwrap_or_else(|| view.history.current().clone());
    if winner.digest() == mine.digest() {
        m.abort()?;
        return Ok(Committed { layout: winner });
    }
    Err(CommitError::Lost {
        base,
        winner: Box::new(winner),
    })
}

/// The round to try next after `b` refused ours: above it, saturating. (A lagging
/// acceptor once refused with a sentinel ballot of round `u64::MAX`, and the `+ 1` after it
/// overflowed — a panic in debug builds, found by the simulator's membership swarm; it
/// now answers `Lagging`, and rounds saturate besides.)
fn outbid(round: u64, b: &Ballot) -> u64 {
    round.max(b.round.saturating_add(1))
}

fn refusal(node: &str, b: &Ballot) -> ReplicaFailure {
    ReplicaFailure {
        node: node.to_string(),
        kind: "refused".into(),
        detail: format!("promised ballot {} of {} already", b.round, b.node),
    }
}

fn lagging(node: &str, current: u64) -> ReplicaFailure {
    ReplicaFailure {
        node: node.to_string(),
        kind: "lagging".into(),
        detail: format!("it holds layout v{current} only, and catches up by gossip"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a refusal's ballot is outbid, and rounds never overflow, whatever a peer
    /// sends.
    #[test]
    fn refusals_are_outbid_without_overflow() {
        let higher = Ballot {
            round: 7,
            node: "n2".into(),
        };
        assert_eq!(outbid(3, &higher), 8);
        assert_eq!(outbid(9, &higher), 9);
        let top = Ballot {
            round: u64::MAX,
            node: "n2".into(),
        };
        assert_eq!(outbid(3, &top), u64::MAX);
        assert_eq!(outbid(3, &top).saturating_add(1), u64::MAX);
    }
}
