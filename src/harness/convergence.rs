//! The check every harness run ends with: once the faults are healed, do the replicas of
//! every key the run touched come to hold the same object, and how long does it take?
//!
//! Each replica's own copy is read with `ReplicaGet` (`quorumkv get --replica`): no
//! coordination and no read repair, so looking does not change what is looked at. Copies
//! are equal when they hold the same siblings (id and value), the same tombstones, the
//! same CRDT value and the same version vector (the sealed context is a deterministic
//! function of it). The check polls until every key agrees or the time is up; it runs
//! before the final reads, whose read repair would otherwise do the converging.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::key::Key;
use crate::proto::{ClientRequest, ClientResponse, GetRequest, GetResponse};

use super::client::{Outcome, Transport};

/// What the convergence check found.
#[derive(Debug, Clone, Serialize)]
pub struct ConvergenceReport {
    /// Every replica of every key held the same object before the time was up.
    pub converged: bool,
    /// Milliseconds from the start of the check (after the heal and the quiet period)
    /// until every key was seen equal (or until the check gave up). The resolution is one
    /// round: see `first_round_ms`.
    pub after_ms: u64,
    /// How long the first round (one look at every replica of every key, key by key)
    /// took: a run whose replicas were equal at once still reports this much.
    pub first_round_ms: u64,
    /// Keys checked.
    pub keys: usize,
    /// Rounds of reads.
    pub rounds: usize,
    /// How many keys still differed at the end.
    pub differing_keys: usize,
    /// The first of them (at most 20), with what each replica held.
    pub differing: Vec<String>,
}

impl ConvergenceReport {
    /// Lines for the run's summary.
    pub fn summary(&self) -> Vec<String> {
        let mut out = vec![if self.converged {
            format!(
                "convergence: every replica of {} key(s) equal, confirmed {} ms after the check began (one round of reads takes {} ms)",
                self.keys, self.after_ms, self.first_round_ms
            )
        } else {
            format!(
                "convergence: FAILED, {} of {} key(s) still differ {} ms after the heal",
                self.differing_keys, self.keys, self.after_ms
            )
        }];
        out.extend(self.differing.iter().take(5).map(|d| format!("  {d}")));
        out
    }
}

/// One copy reduced to what must agree.
fn fingerprint(g: &GetResponse) -> String {
    let mut sibs: Vec<(String, String)> = g
        .values
        .iter()
        .map(|s| {
            (
                s.dot.clone(),
                String::from_utf8_lossy(&s.value).into_owned(),
            )
        })
        .collect();
    sibs.sort();
    format!(
        "{sibs:?} tombstones={} crdt={:?} vv={}",
        g.tombstones, g.crdt, g.context
    )
}

/// Check `keys` of `keyspace` through `nodes` (one transport per node, any order), polling
/// every `every` until `within` has passed since `healed_at` (both on the clock `now`
/// reads, which is tokio's: real time for processes, simulated time under the simulator).
pub async fn check<T: Transport>(
    nodes: &[T],
    keyspace: &str,
    keys: &[String],
    within: Duration,
    every: Duration,
) -> ConvergenceReport {
    let started = tokio::time::Instant::now();
    let by_name: BTreeMap<&str, &T> = nodes.iter().map(|t| (t.node(), t)).collect();
    let mut pending: Vec<String> = keys.to_vec();
    let mut replicas: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rounds = 0;
    let mut first_round_ms = 0;
    let mut differing = Vec::new();
    loop {
        rounds += 1;
        differing.clear();
        let mut still = Vec::new();
        for k in &pending {
            match compare(&by_name, keyspace, k, &mut replicas).await {
                Ok(()) => {}
                Err(why) => {
                    still.push(k.clone());
                    differing.push(format!("{k}: {why}"));
                }
            }
        }
        pending = still;
        let elapsed = started.elapsed();
        if rounds == 1 {
            first_round_ms = elapsed.as_millis() as u64;
        }
        if pending.is_empty() || elapsed >= within {
            differing.truncate(20);
            return ConvergenceReport {
                converged: pending.is_empty(),
                after_ms: elapsed.as_millis() as u64,
                keys: keys.len(),
                rounds,
                first_round_ms,
                differing_keys: pending.len(),
                differing,
            };
        }
        tokio::time::sleep(every.min(within - elapsed)).await;
    }
}

async fn compare<T: Transport>(
    nodes: &BTreeMap<&str, &T>,
    keyspace: &str,
    k: &str,
    replicas: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let key = Key::simple(k.as_bytes().to_vec());
    if !replicas.contains_key(k) {
        let mut found = None;
        for t in nodes.values() {
            let req = ClientRequest::Replicas {
                keyspace: keyspace.to_string(),
                key: key.clone(),
            };
            if let Outcome::Answer(ClientResponse::Replicas(r)) = t.request(req).await {
                found = Some(r);
                break;
            }
        }
        let r = found.ok_or("no node answered with the key's replicas")?;
        replicas.insert(k.to_string(), r);
    }
    let mut copies: Vec<(String, String)> = Vec::new();
    for name in &replicas[k] {
        let t = nodes
            .get(name.as_str())
            .ok_or_else(|| format!("replica {name} is not a node of this run"))?;
        let req = ClientRequest::ReplicaGet(GetRequest {
            keyspace: keyspace.to_string(),
            key: key.clone(),
            r: None,
            trace: false,
            pr: None,
        });
        match t.request(req).await {
            Outcome::Answer(ClientResponse::ReplicaCopy { copy, .. }) => {
                copies.push((name.clone(), fingerprint(&copy)))
            }
            Outcome::Answer(other) => return Err(format!("{name} answered {other:?}")),
            Outcome::Refused(m) | Outcome::Lost(m) => return Err(format!("{name}: {m}")),
        }
    }
    if copies.windows(2).all(|w| w[0].1 == w[1].1) {
        Ok(())
    } else {
        Err(copies
            .iter()
            .map(|(n, f)| format!("{n} {f}"))
            .collect::<Vec<_>>()
            .join(" | "))
    }
}
