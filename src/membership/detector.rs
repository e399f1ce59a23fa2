//! The failure detector: what this node believes about each peer — alive, suspect or
//! dead — from SWIM-style probes with suspicion, guarded against this node's own stalls.
//!
//! **Probes.** Every `detector.probe_interval_ms` the node pings every peer (clusters are
//! small and their membership is static, so each node probes all of them itself and no
//! state is gossiped; see "Failure detection" in docs/ARCHITECTURE.md). A peer that does
//! not answer within `probe_timeout_ms` is probed *indirectly*: up to `indirect_probes`
//! other members, chosen at random among those alive, are asked to ping it on this node's
//! behalf ([`crate::proto::PeerRequest::ProbeFor`]); any of them hearing it counts as an
//! answer, so a link broken in one direction between two nodes does not make them suspect
//! each other. Only when neither the direct nor an indirect probe is answered does the
//! peer become a suspect.
//!
//! **Suspicion.** A suspect is declared dead only after `suspicion_timeout_ms` with no
//! answer; any answer from it before then — to a probe, to an indirect probe, to any other
//! call, or a request from it — refutes the suspicion and it is alive again (as is a dead
//! peer that answers). A call of the data path that fails makes the peer a suspect too
//! (routing avoids it at once, as before this detector), but never dead by itself: only
//! the suspicion timeout, with probes still unanswered, does that.
//!
//! **Local stalls** (Lifeguard's local-health idea, reduced to its core). A node that was
//! paused (a GC-like pause, a stopped VM, CPU starvation) finds on waking that every probe
//! it had in flight "timed out" and every suspicion "expired", though the peers were fine
//! and it was the one not listening. So every timer of the detector (the round's, each
//! probe's, each call's) checks how late it fired: later than `stall_threshold_ms` means
//! this node stalled. Then the failures of every probe and call started before the stall
//! are voided (an epoch counter: evidence carries the epoch it started in, and a stall
//! starts a new one), and every suspicion's clock restarts, so a suspect gets a whole
//! suspicion timeout of fresh probes before it can be convicted.
//!
//! The detector reaches time, timers and randomness only through [`Env`], so the simulator
//! runs it deterministically; [`Detector::run`] is its loop, spawned by whoever runs the
//! node (the process runtime, the simulator).

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::DetectorConfig;
use crate::env::{Env, Instant};
use crate::metrics::Metrics;
use crate::peers::{CallFailure, Peers};
use crate::replica::InjectedBugs;

/// The longest an indirect probe's helper waits for the target, whatever the asker says.
pub const MAX_INDIRECT_TIMEOUT_MS: u64 = 60_000;

/// A peer's state as this node's detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// It answered the last probe (or some call since).
    Alive,
    /// A probe (direct and indirect) or a call failed; not yet for the suspicion timeout.
    Suspect,
    /// Suspect for the whole suspicion timeout without answering.
    Dead,
}

impl PeerState {
    /// Every state, in the order of [`Metrics::detector_transitions`].
    pub const ALL: [PeerState; 3] = [PeerState::Alive, PeerState::Suspect, PeerState::Dead];

    /// The state's name in `status`, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Dead => "dead",
        }
    }

    fn index(self) -> usize {
        match self {
            PeerState::Alive => 0,
            PeerState::Suspect => 1,
            PeerState::Dead => 2,
        }
    }
}

/// What the detector knows of one peer.
#[derive(Debug)]
struct Member {
    /// `None`: neither probed nor heard from yet.
    state: Option<PeerState>,
    /// When it entered `state`.
    since: Instant,
    /// While suspect: when it is declared dead unless it answers first.
    deadline: Option<Instant>,
    /// A probe of it is in flight (a slow one is not doubled by the next round).
    probing: bool,
}

#[derive(Debug)]
struct Inner {
    members: BTreeMap<String, Member>,
    /// Bumped at every local stall; failures carry the epoch they started in.
    epoch: u64,
}

/// A peer's state with how long it has held it, as `status` shows it.
pub type PeerView = (String, Option<PeerState>, Duration);

/// One node's failure detector.
pub struct Detector {
    name: String,
    cfg: DetectorConfig,
    env: Arc<dyn Env>,
    metrics: Arc<Metrics>,
    bugs: InjectedBugs,
    inner: Mutex<Inner>,
}

impl Detector {
    /// The detector of node `name` over its peers `others`, all unknown yet.
    pub fn new(
        name: String,
        others: Vec<String>,
        cfg: DetectorConfig,
        env: Arc<dyn Env>,
        metrics: Arc<Metrics>,
        bugs: InjectedBugs,
    ) -> Arc<Self> {
        let now = env.now();
        let members = others
            .into_iter()
            .filter(|n| *n != name)
            .map(|n| {
                (
                    n,
                    Member {
                        state: None,
                        since: now,
                        deadline: None,
                        probing: false,
                    },
                )
            })
            .collect();
        let d = Arc::new(Detector {
            name,
            cfg,
            env,
            metrics,
            bugs,
            inner: Mutex::new(Inner { members, epoch: 0 }),
        });
        d.metrics.set_detector_source(&d);
        d
    }

    /// Follow a new member list (a layout version came or went): newcomers start unknown,
    /// nodes no longer members are forgotten.
    pub fn set_members(&self, names: &[String]) {
        let now = self.env.now();
        let mut inner = self.lock();
        inner.members.retain(|n, _| names.contains(n));
        for n in names {
            if *n != self.name && !inner.members.contains_key(n) {
                inner.members.insert(
                    n.clone(),
                    Member {
                        state: None,
                        since: now,
                        deadline: None,
                        probing: false,
                    },
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The settings it runs with.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// The current epoch: a failure observed later counts only if it started in the
    /// same epoch (no local stall in between).
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// `peer`'s state (`None`: not probed or heard from yet). This node is always alive.
    pub fn state(&self, peer: &str) -> Option<PeerState> {
        if peer == self.name {
            return Some(PeerState::Alive);
        }
        self.lock().members.get(peer).and_then(|m| m.state)
    }

    /// Whether the data path should count on `peer`: `Some(true)` alive, `Some(false)`
    /// suspect or dead, `None` not known yet (tried like an alive one).
    pub fn routable(&self, peer: &str) -> Option<bool> {
        self.state(peer).map(|s| s == PeerState::Alive)
    }

    /// Every peer with its state and for how long it has held it, by name.
    pub fn view(&self) -> Vec<PeerView> {
        let now = self.env.now();
        self.lock()
            .members
            .iter()
            .map(|(n, m)| {
                let held = match m.state {
                    Some(_) => now.saturating_duration_since(m.since),
                    None => Duration::ZERO,
                };
                (n.clone(), m.state, held)
            })
            .collect()
    }

    fn set(&self, peer: &str, m: &mut Member, to: PeerState, now: Instant) {
        if m.state == Some(to) {
            return;
        }
        let from = m.state.map_or("unknown", PeerState::name);
        m.state = Some(to);
        m.since = now;
        m.deadline = match to {
            PeerState::Suspect => Some(now + Self::ms(self.cfg.suspicion_timeout_ms)),
            _ => None,
        };
        self.metrics.detector_transitions[to.index()].fetch_add(1, Ordering::Relaxed);
        match to {
            PeerState::Alive => tracing::info!(node = %self.name, peer, from, "peer is alive"),
            PeerState::Suspect => {
                tracing::warn!(node = %self.name, peer, from, "peer is suspect")
            }
            PeerState::Dead => tracing::warn!(node = %self.name, peer, from, "peer is dead"),
        }
    }

    /// `peer` answered (a probe, an indirect probe, any call) or sent a request: it is
    /// alive, whatever it was.
    pub fn heard_from(&self, peer: &str) {
        let now = self.env.now();
        let mut inner = self.lock();
        let Some(m) = inner.members.get_mut(peer) else {
            return;
        };
        if self.bugs.detector_no_refutation
            && matches!(m.state, Some(PeerState::Suspect | PeerState::Dead))
        {
            return;
        }
        self.set(peer, m, PeerState::Alive, now);
    }

    /// A probe (direct and indirect) or a call to `peer` started in `epoch` failed: it
    /// becomes a suspect unless it already is one (or dead), or the failure spanned a
    /// local stall (then it is voided).
    pub fn failed(&self, peer: &str, epoch: u64) {
        let now = self.env.now();
        let mut inner = self.lock();
        if epoch != inner.epoch {
            self.metrics.detector_voided.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(node = %self.name, peer, "failure voided: it spanned a local stall");
            return;
        }
        let Some(m) = inner.members.get_mut(peer) else {
            return;
        };
        if matches!(m.state, None | Some(PeerState::Alive)) {
            self.set(peer, m, PeerState::Suspect, now);
        }
    }

    /// A timer of this node due at `due` fired `now`: if it is later than
    /// `stall_threshold_ms`, this node itself stalled. Then a new epoch starts (voiding
    /// every failure in flight) and every suspicion's clock restarts. Returns whether it
    /// found a stall.
    pub fn check_timer(&self, due: Instant, now: Instant) -> bool {
        let late = now.saturating_duration_since(due);
        if late <= Self::ms(self.cfg.stall_threshold_ms) || self.bugs.detector_ignores_stalls {
            return false;
        }
        let restart = now + Self::ms(self.cfg.suspicion_timeout_ms);
        let mut inner = self.lock();
        inner.epoch += 1;
        for m in inner.members.values_mut() {
            if let Some(d) = m.deadline.as_mut() {
                *d = (*d).max(restart);
            }
        }
        self.metrics.detector_stalls.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = %self.name, late_ms = late.as_millis() as u64, "this node stalled (a timer fired late): failures in flight voided, suspicions restarted");
        true
    }

    /// Declare dead every suspect whose suspicion timeout passed by `now`.
    pub fn expire(&self, now: Instant) {
        let mut inner = self.lock();
        for (peer, m) in inner.members.iter_mut() {
            if m.state == Some(PeerState::Suspect) && m.deadline.is_some_and(|d| d <= now) {
                self.set(peer, m, PeerState::Dead, now);
            }
        }
    }

    /// The earliest suspicion deadline, if any peer is suspect.
    fn next_deadline(&self) -> Option<Instant> {
        self.lock()
            .members
            .values()
            .filter_map(|m| m.deadline)
            .min()
    }

    /// Mark a probe of `peer` in flight; false if one already is.
    fn start_probe(&self, peer: &str) -> bool {
        let mut inner = self.lock();
        match inner.members.get_mut(peer) {
            Some(m) if !m.probing => {
                m.probing = true;
                true
            }
            _ => false,
        }
    }

    fn end_probe(&self, peer: &str) {
        if let Some(m) = self.lock().members.get_mut(peer) {
            m.probing = false;
        }
    }

    /// Up to `indirect_probes` members other than `target`, alive or not probed yet,
    /// chosen at random.
    fn helpers(&self, target: &str) -> Vec<String> {
        let mut pool: Vec<String> = self
            .lock()
            .members
            .iter()
            .filter(|(n, m)| {
                n.as_str() != target && matches!(m.state, None | Some(PeerState::Alive))
            })
            .map(|(n, _)| n.clone())
            .collect();
        let k = self.cfg.indirect_probes.min(pool.len());
        if k == 0 {
            return Vec::new();
        }
        // A partial Fisher–Yates shuffle on the node's own random stream.
        for i in 0..k {
            let j = i + (self.env.random_u64() % (pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }

    /// The detector's loop: a probe round every `probe_interval_ms`, suspects convicted
    /// when their timeout passes, and every wake-up checked for lateness. Runs until the
    /// node's tasks end.
    pub async fn run(self: Arc<Self>, peers: Arc<Peers>) {
        let interval = Self::ms(self.cfg.probe_interval_ms);
        let mut next_round = self.env.now() + interval;
        loop {
            let due = self
                .next_deadline()
                .map_or(next_round, |d| d.min(next_round));
            self.env.sleep_until(due).await;
            let now = self.env.now();
            self.check_timer(due, now);
            self.expire(now);
            if now >= next_round {
                let targets: Vec<String> = self.lock().members.keys().cloned().collect();
                for target in targets {
                    if !self.start_probe(&target) {
                        continue;
                    }
                    let (me, peers) = (Arc::clone(&self), Arc::clone(&peers));
                    self.env.spawn(Box::pin(async move {
                        me.probe(&peers, &target).await;
                        me.end_probe(&target);
                    }));
                }
                next_round = now + interval;
            }
        }
    }

    /// One probe of `target`: directly, then through helpers; the outcome goes into the
    /// detector.
    async fn probe(&self, peers: &Arc<Peers>, target: &str) {
        let epoch = self.epoch();
        let due = self.env.now() + Self::ms(self.cfg.probe_timeout_ms);
        match peers.probe(target, due).await {
            Ok(()) => {
                self.heard_from(target);
                return;
            }
            Err(CallFailure::Timeout) => {
                self.check_timer(due, self.env.now());
            }
            // Refused or unreachable from here: it may still be reachable from others.
            Err(_) => {}
        }
        let helpers = self.helpers(target);
        if !helpers.is_empty() {
            let timeout_ms = (self.cfg.indirect_timeout_ms * 3 / 4).max(1);
            let due = self.env.now() + Self::ms(self.cfg.indirect_timeout_ms);
            let mut replies = peers.fan_out(
                &helpers,
                crate::peers::ProbeFor {
                    target: target.to_string(),
                    timeout_ms,
                },
                due,
            );
            while let Some(reply) = replies.recv().await {
                if matches!(reply.result, Ok(true)) {
                    self.heard_from(target);
                    return;
                }
            }
            let now = self.env.now();
            if now >= due {
                self.check_timer(due, now);
            }
        }
        self.failed(target, epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(cfg: DetectorConfig, bugs: InjectedBugs) -> Arc<Detector> {
        Detector::new(
            "n1".into(),
            vec!["n1".into(), "n2".into(), "n3".into()],
            cfg,
            crate::env::TokioEnv::system(),
            Arc::default(),
            bugs,
        )
    }

    /// Goal: the state machine on its own — unknown until heard, a failure makes a
    /// suspect, the suspicion timeout makes it dead and not before, an answer refutes a
    /// suspect and revives a dead peer, and the node itself is always alive.
    #[tokio::test(start_paused = true)]
    async fn suspicion_then_conviction_or_refutation() {
        let d = detector(DetectorConfig::default(), InjectedBugs::default());
        let t0 = d.env.now();
        assert_eq!(d.state("n1"), Some(PeerState::Alive));
        assert_eq!(d.state("n2"), None);
        assert_eq!(d.routable("n2"), None);
        d.heard_from("n2");
        assert_eq!(d.routable("n2"), Some(true));
        d.failed("n2", d.epoch());
        assert_eq!(d.state("n2"), Some(PeerState::Suspect));
        assert_eq!(d.routable("n2"), Some(false));
        d.expire(t0 + Duration::from_millis(4999));
        assert_eq!(d.state("n2"), Some(PeerState::Suspect));
        d.expire(t0 + Duration::from_millis(5000));
        assert_eq!(d.state("n2"), Some(PeerState::Dead));
        d.heard_from("n2");
        assert_eq!(d.state("n2"), Some(PeerState::Alive));
        d.failed("n3", d.epoch());
        d.heard_from("n3");
        d.expire(t0 + Duration::from_secs(60));
        assert_eq!(d.state("n3"), Some(PeerState::Alive));
    }

    /// Goal: a timer that fires later than the stall threshold voids failures started
    /// before it and restarts suspicions; one on time does neither; and with the stall
    /// check switched off (the injected bug) the same late timer convicts.
    #[tokio::test(start_paused = true)]
    async fn a_late_timer_voids_failures_and_restarts_suspicions() {
        for ignore in [false, true] {
            let bugs = InjectedBugs {
                detector_ignores_stalls: ignore,
                ..Default::default()
            };
            let d = detector(DetectorConfig::default(), bugs);
            let t0 = d.env.now();
            d.heard_from("n2");
            d.heard_from("n3");
            d.failed("n3", d.epoch());
            let before = d.epoch();
            let due = t0 + Duration::from_secs(1);
            assert!(!d.check_timer(due, due + Duration::from_millis(250)));
            // (Virtual time stands still in this test: `failed` stamps its suspicion at
            // t0, as a failure observed just before the stall would be.)
            let woke = t0 + Duration::from_secs(11);
            assert_eq!(d.check_timer(due, woke), !ignore);
            d.failed("n2", before);
            d.expire(woke);
            if ignore {
                assert_eq!(d.state("n2"), Some(PeerState::Dead));
                assert_eq!(d.state("n3"), Some(PeerState::Dead));
            } else {
                assert_eq!(d.state("n2"), Some(PeerState::Alive));
                assert_eq!(d.state("n3"), Some(PeerState::Suspect));
                d.expire(woke + Duration::from_millis(4999));
                assert_eq!(d.state("n3"), Some(PeerState::Suspect));
                d.expire(woke + Duration::from_millis(5000));
                assert_eq!(d.state("n3"), Some(PeerState::Dead));
            }
        }
    }
}
