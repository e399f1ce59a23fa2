//! The harness's nemesis, once for every target: which faults exist, which node each one
//! hurts, what is hurt now, and how each is undone. A target only says how to do the
//! primitive things to its nodes ([`NodeControl`]): kill and restart a process, pause
//! and resume it, move its clock, cut and heal links. So `local` (processes and signals),
//! `containers` (`scripts/nodes.sh`, `scripts/netsplit.sh`) and `sim` (the simulator's
//! machines and network) hurt nodes by the same rules and record them the same way.
//!
//! Rules: a node fault (`kill`, `pause`, `clock-skew`) hurts one node that no other
//! fault hurts, drawn from the seeded draw; a partition replaces any earlier partition
//! (at most one is active, as with `scripts/netsplit.sh`); `stop` undoes every instance of
//! its fault; `heal_all` undoes everything.
//!
//! `membership` is not a fault of one node but an operator's change: its start grows the
//! layout by the target's spare node (stage `join`, commit), its stop shrinks it back
//! (stage `leave`, commit), while data moves in the background. `heal_all` makes the spare
//! leave if it is still a member and then waits until no node reports a layout
//! transition, so the final reads and the convergence check see one settled layout (the
//! one the run started with).

use std::future::Future;

use jepsen_like::Value;

use super::HarnessError;

/// Every fault name, in the order documented in docs/HARNESS.md.
pub const ALL_FAULTS: [&str; 9] = [
    "kill",
    "pause",
    "clock-skew",
    "partition-halves",
    "partition-majorities-ring",
    "partition-bridge",
    "partition-one",
    "partition-oneway",
    "membership",
];

/// The fault that grows and shrinks the layout (see the module docs).
pub const MEMBERSHIP: &str = "membership";

/// The shape of a partition fault (`partition-*`), if `fault` is one.
pub fn partition_shape(fault: &str) -> Option<&str> {
    fault
        .strip_prefix("partition-")
        .filter(|_| ALL_FAULTS.contains(&fault))
}

/// A clock offset drawn from `draw`: 2 to 60 s, ahead or behind.
pub fn skew_ms(draw: u64) -> i64 {
    let ms = 2_000 + ((draw >> 8) % 58_000) as i64;
    if draw & 1 == 0 {
        ms
    } else {
        -ms
    }
}

/// The primitive faults of one target. Node indexes are `0..names().len()`; errors are
/// messages for the history.
pub trait NodeControl: Send + 'static {
    /// The target's name, for messages.
    fn target(&self) -> &'static str;
    /// The faults it can inject (a subset of [`ALL_FAULTS`]).
    fn supported(&self) -> &'static [&'static str];
    /// The nodes' names.
    fn names(&self) -> Vec<String>;
    /// Kill node `i`'s process at once (SIGKILL, power loss).
    fn kill(&mut self, i: usize) -> impl Future<Output = Result<(), String>> + Send;
    /// Start node `i` again from its data.
    fn restart(&mut self, i: usize) -> impl Future<Output = Result<(), String>> + Send;
    /// Freeze (`true`) or resume (`false`) node `i`.
    fn pause(&mut self, i: usize, pause: bool) -> impl Future<Output = Result<(), String>> + Send;
    /// Set node `i`'s wall clock `ms` away from true time (0: back to true time); returns
    /// what to record.
    fn set_clock(
        &mut self,
        i: usize,
        ms: i64,
    ) -> impl Future<Output = Result<Value, String>> + Send;
    /// Replace the current partition with one of `shape` (`halves`, `majorities-ring`,
    /// `bridge`, `one`, `oneway`) over the nodes in `order`; returns what to record.
    fn partition(
        &mut self,
        shape: &str,
        order: Vec<usize>,
    ) -> impl Future<Output = Result<Value, String>> + Send;
    /// Remove every partition.
    fn heal_partition(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// Grow the layout by the spare node (`true`: stage `join`, commit) or shrink it back
    /// (`false`: stage `leave`, commit), through a node of the layout; returns what to
    /// record (the committed version and its members, or why nothing was needed).
    /// Default: unsupported, for targets with no spare node.
    fn change_membership(
        &mut self,
        grow: bool,
    ) -> impl Future<Output = Result<Value, String>> + Send {
        let msg = format!(
            "the {} target cannot change membership (grow: {grow})",
            self.target()
        );
        async move { Err(msg) }
    }
    /// Wait (bounded) until no node reports a layout transition (one live version
    /// everywhere); returns what to record. Default: nothing to wait for.
    fn settle_membership(&mut self) -> impl Future<Output = Result<Value, String>> + Send {
        async { Ok(Value::Nil) }
    }
}

/// A target's nemesis: [`NodeControl`] plus the rules of the module docs.
pub struct TargetNemesis<C> {
    control: C,
    names: Vec<String>,
    killed: Vec<usize>,
    paused: Vec<usize>,
    skewed: Vec<usize>,
    /// The run asked for `membership`: `heal_all` must shrink the layout back and wait
    /// for the data to settle.
    membership: bool,
}

impl<C: NodeControl> TargetNemesis<C> {
    /// A nemesis over `control`; refuses a fault the target cannot inject, naming the
    /// ones it can.
    pub fn new(control: C, faults: &[String]) -> Result<Self, HarnessError> {
        for f in faults {
            if !control.supported().contains(&f.as_str()) {
                return Err(HarnessError::UnsupportedFault {
                    target: control.target(),
                    fault: f.clone(),
                    supported: control.supported().join(", "),
                });
            }
        }
        Ok(TargetNemesis {
            names: control.names(),
            control,
            killed: Vec::new(),
            paused: Vec::new(),
            skewed: Vec::new(),
            membership: faults.iter().any(|f| f == MEMBERSHIP),
        })
    }

    /// A node no fault hurts, chosen by `draw`.
    fn victim(&self, draw: u64) -> Option<usize> {
        let healthy: Vec<usize> = (0..self.names.len())
            .filter(|i| {
                !self.killed.contains(i) && !self.paused.contains(i) && !self.skewed.contains(i)
            })
            .collect();
        (!healthy.is_empty()).then(|| healthy[(draw % healthy.len() as u64) as usize])
    }

    /// The nodes in an order drawn from `draw` (a seeded shuffle).
    fn shuffled(&self, mut draw: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.names.len()).collect();
        for i in (1..v.len()).rev() {
            draw = draw
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.swap(i, ((draw >> 33) % (i as u64 + 1)) as usize);
        }
        v
    }

    fn name(&self, i: usize) -> Value {
        Value::Str(self.names[i].clone())
    }

    fn unsupported(&self, fault: &str) -> String {
        format!(
            "the {} target cannot inject {fault:?}",
            self.control.target()
        )
    }
}

impl<C: NodeControl> jepsen_like::harness::Nemesis for TargetNemesis<C> {
    async fn start(&mut self, fault: &str, draw: u64) -> Result<Value, String> {
        if let Some(shape) = partition_shape(fault) {
            let order = self.shuffled(draw);
            return self.control.partition(shape, order).await;
        }
        if fault == MEMBERSHIP {
            return self.control.change_membership(true).await;
        }
        let i = self.victim(draw).ok_or("every node is already hurt")?;
        match fault {
            "kill" => {
                self.control.kill(i).await?;
                self.killed.push(i);
                Ok(Value::Vector(vec![Value::kw("killed"), self.name(i)]))
            }
            "pause" => {
                self.control.pause(i, true).await?;
                self.paused.push(i);
                Ok(Value::Vector(vec![Value::kw("paused"), self.name(i)]))
            }
            "clock-skew" => {
                let v = self.control.set_clock(i, skew_ms(draw)).await?;
                self.skewed.push(i);
                Ok(Value::Vector(vec![Value::kw("clock-offset"), v]))
            }
            other => Err(self.unsupported(other)),
        }
    }

    async fn stop(&mut self, fault: &str) -> Result<Value, String> {
        if partition_shape(fault).is_some() {
            self.control.heal_partition().await?;
            return Ok(Value::kw("healed"));
        }
        if fault == MEMBERSHIP {
            return self.control.change_membership(false).await;
        }
        let mut done = Vec::new();
        let (what, hurt) = match fault {
            "kill" => ("restarted", std::mem::take(&mut self.killed)),
            "pause" => ("resumed", std::mem::take(&mut self.paused)),
            "clock-skew" => ("clock-reset", std::mem::take(&mut self.skewed)),
            other => return Err(self.unsupported(other)),
        };
        for i in hurt {
            match fault {
                "kill" => self.control.restart(i).await?,
                "pause" => self.control.pause(i, false).await?,
                _ => {
                    self.control.set_clock(i, 0).await?;
                }
            }
            done.push(self.name(i));
        }
        Ok(Value::Vector(vec![Value::kw(what), Value::Vector(done)]))
    }

    async fn heal_all(&mut self) -> Result<Value, String> {
        let mut healed = Vec::new();
        // Always: a partition left behind by an earlier, interrupted run heals too.
        if self
            .control
            .supported()
            .iter()
            .any(|f| partition_shape(f).is_some())
        {
            healed.push(self.stop("partition-one").await?);
        }
        for f in ["kill", "pause", "clock-skew"] {
            if self.control.supported().contains(&f) {
                healed.push(self.stop(f).await?);
            }
        }
        // Last: every node is up again, so the leave can commit and the transfers finish.
        if self.membership {
            healed.push(self.control.change_membership(false).await?);
            healed.push(self.control.settle_membership().await?);
        }
        Ok(Value::Vector(healed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jepsen_like::harness::Nemesis;

    /// A control that records what it was asked, to test the rules alone.
    #[derive(Default)]
    struct Recording {
        calls: Vec<String>,
    }

    impl NodeControl for Recording {
        fn target(&self) -> &'static str {
            "test"
        }
        fn supported(&self) -> &'static [&'static str] {
            &ALL_FAULTS
        }
        fn names(&self) -> Vec<String> {
            (1..=3).map(|i| format!("n{i}")).collect()
        }
        async fn kill(&mut self, i: usize) -> Result<(), String> {
            self.calls.push(format!("kill {i}"));
            Ok(())
        }
        async fn restart(&mut self, i: usize) -> Result<(), String> {
            self.calls.push(format!("restart {i}"));
            Ok(())
        }
        async fn pause(&mut self, i: usize, pause: bool) -> Result<(), String> {
            self.calls.push(format!("pause {i} {pause}"));
            Ok(())
        }
        async fn set_clock(&mut self, i: usize, ms: i64) -> Result<Value, String> {
            self.calls.push(format!("clock {i} {ms}"));
            Ok(Value::Int(ms))
        }
        async fn partition(&mut self, shape: &str, order: Vec<usize>) -> Result<Value, String> {
            self.calls.push(format!("partition {shape} {order:?}"));
            Ok(Value::Nil)
        }
        async fn heal_partition(&mut self) -> Result<(), String> {
            self.calls.push("heal".into());
            Ok(())
        }
        async fn change_membership(&mut self, grow: bool) -> Result<Value, String> {
            self.calls.push(format!("grow {grow}"));
            Ok(Value::Bool(grow))
        }
        async fn settle_membership(&mut self) -> Result<Value, String> {
            self.calls.push("settle".into());
            Ok(Value::Nil)
        }
    }

    /// Goal: `membership` grows the layout at start and shrinks it at stop without
    /// hurting a node (the node faults still have every node to draw from), and
    /// `heal_all` shrinks it and waits for the data to settle, after every other heal; a
    /// run without `membership` never touches the layout.
    #[tokio::test]
    async fn membership_grows_shrinks_and_settles_last() {
        let mut n = TargetNemesis::new(Recording::default(), &[MEMBERSHIP.into()]).unwrap();
        assert_eq!(n.start(MEMBERSHIP, 3).await.unwrap(), Value::Bool(true));
        assert!(n.killed.is_empty() && n.paused.is_empty() && n.skewed.is_empty());
        assert_eq!(n.stop(MEMBERSHIP).await.unwrap(), Value::Bool(false));
        n.start(MEMBERSHIP, 4).await.unwrap();
        n.start("kill", 0).await.unwrap();
        n.heal_all().await.unwrap();
        let calls = &n.control.calls;
        let at = |c: &str| calls.iter().rposition(|x| x == c).unwrap();
        assert_eq!(calls[..3], ["grow true", "grow false", "grow true"]);
        assert!(at("grow false") > at("heal") && at("grow false") > at("restart 0"));
        assert_eq!(calls.last().map(String::as_str), Some("settle"));

        let mut plain = TargetNemesis::new(Recording::default(), &["kill".into()]).unwrap();
        plain.heal_all().await.unwrap();
        let calls = &plain.control.calls;
        assert!(!calls.iter().any(|c| c.starts_with("grow") || c == "settle"));
    }

    /// Goal: node faults never pile onto one node, `stop` undoes every instance of its
    /// fault, a fourth node fault on three nodes is refused, and `heal_all` undoes all.
    #[tokio::test]
    async fn node_faults_hurt_distinct_nodes_and_heal() {
        let mut n = TargetNemesis::new(Recording::default(), &["kill".into()]).unwrap();
        n.start("kill", 0).await.unwrap();
        n.start("pause", 0).await.unwrap();
        n.start("clock-skew", 0).await.unwrap();
        let mut hurt = n.killed.clone();
        hurt.extend(&n.paused);
        hurt.extend(&n.skewed);
        hurt.sort_unstable();
        assert_eq!(hurt, vec![0, 1, 2]);
        assert!(n.start("kill", 7).await.is_err());
        let (k, p, s) = (n.killed[0], n.paused[0], n.skewed[0]);
        n.heal_all().await.unwrap();
        assert!(n.killed.is_empty() && n.paused.is_empty() && n.skewed.is_empty());
        let calls = &n.control.calls;
        for want in [
            "heal".to_string(),
            format!("restart {k}"),
            format!("pause {p} false"),
            format!("clock {s} 0"),
        ] {
            assert!(calls.contains(&want), "{want} missing from {calls:?}");
        }
    }

    /// Goal: a fault the target cannot inject is refused up front, naming what it can, and a
    /// target without a spare refuses a membership change.
    #[tokio::test]
    async fn unsupported_fault_is_refused() {
        struct NoPause(Recording);
        impl NodeControl for NoPause {
            fn target(&self) -> &'static str {
                "nopause"
            }
            fn supported(&self) -> &'static [&'static str] {
                &["kill"]
            }
            fn names(&self) -> Vec<String> {
                self.0.names()
            }
            async fn kill(&mut self, i: usize) -> Result<(), String> {
                self.0.kill(i).await
            }
            async fn restart(&mut self, i: usize) -> Result<(), String> {
                self.0.restart(i).await
            }
            async fn pause(&mut self, i: usize, p: bool) -> Result<(), String> {
                self.0.pause(i, p).await
            }
            async fn set_clock(&mut self, i: usize, ms: i64) -> Result<Value, String> {
                self.0.set_clock(i, ms).await
            }
            async fn partition(&mut self, s: &str, o: Vec<usize>) -> Result<Value, String> {
                self.0.partition(s, o).await
            }
            async fn heal_partition(&mut self) -> Result<(), String> {
                self.0.heal_partition().await
            }
        }
        let e = TargetNemesis::new(NoPause(Recording::default()), &["pause".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("nopause") && e.contains("\"pause\"") && e.contains("kill"),
            "{e}"
        );
        // A target that does not implement membership says so rather than pretending.
        let mut no = NoPause(Recording::default());
        let e = no.change_membership(true).await.unwrap_err();
        assert!(e.contains("nopause") && e.contains("membership"), "{e}");
    }

    /// Goal: partition names map to shapes; other names do not.
    #[test]
    fn partition_names() {
        assert_eq!(partition_shape("partition-halves"), Some("halves"));
        assert_eq!(partition_shape("partition-oneway"), Some("oneway"));
        assert_eq!(partition_shape("partition-nope"), None);
        assert_eq!(partition_shape("kill"), None);
        assert!((2_000..=60_000).contains(&skew_ms(12345).abs()));
    }
}
