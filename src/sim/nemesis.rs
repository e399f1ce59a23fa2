//! The simulator's nemesis: faults drawn from the run's seed, one at a time, each healed
//! before the next — partitions of every shape `scripts/netsplit.sh` knows, crashes and
//! restarts, clock skew, drift and jumps, message loss and duplication, and disk faults.
//!
//! `membership` is opt-in (not in [`EVENTS`]): an operator's layout change rather than a
//! fault of one machine. The run gets a spare machine outside the layout, and a lane of its
//! own, concurrent with the one-at-a-time faults above, grows the layout by it and shrinks
//! it back ([`draw_membership`]), so joins, leaves and the transfers between them meet
//! partitions, crashes, clock jumps, loss and disk faults.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::env::Rng;
use crate::transport::memory::LinkFaults;

/// A kind of fault a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Network partitions: halves, majorities-ring, bridge, isolate, one-way.
    Partition,
    /// Machine crashes (power loss) and restarts, one machine at a time.
    Crash,
    /// Clock skew, drift and jumps (forwards and backwards).
    Clock,
    /// Message loss, duplication and extra latency on every link.
    Loss,
    /// Failed fsyncs and full disks.
    Disk,
    /// Not an event but a mode: every node runs with `sync = false`.
    Unsynced,
    /// Layout changes: a spare machine joins the layout and leaves it again, in a lane of
    /// its own (opt-in: not in [`EVENTS`]).
    Membership,
    /// Not an event but a mode: every node overlaps its lead's fsync with replication
    /// (`storage.overlap_lead_sync`).
    Overlap,
}

/// Every fault kind that is an event (the default set).
pub const EVENTS: [Fault; 5] = [
    Fault::Partition,
    Fault::Crash,
    Fault::Clock,
    Fault::Loss,
    Fault::Disk,
];

impl Fault {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Crash => "crash",
            Fault::Clock => "clock",
            Fault::Loss => "loss",
            Fault::Disk => "disk",
            Fault::Unsynced => "unsynced",
            Fault::Membership => "membership",
            Fault::Overlap => "overlap",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of the known kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?}: expected none, all, or a comma-separated list of partition, crash, clock, loss, disk, unsynced, membership, overlap")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            EVENTS.as_slice(),
            &[Fault::Unsynced, Fault::Membership, Fault::Overlap],
        ]
        .concat()
        .into_iter()
        .find(|f| f.name() == s)
        .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

/// Parse `none`, `all` or a comma-separated list of fault names.
pub fn parse_faults(text: &str) -> Result<Vec<Fault>, UnknownFault> {
    match text.trim() {
        "none" | "" => Ok(Vec::new()),
        "all" => Ok(EVENTS.to_vec()),
        list => {
            let mut v = Vec::new();
            for name in list.split(',').map(str::trim) {
                match name {
                    "all" => v.extend(EVENTS),
                    _ => v.push(name.parse()?),
                }
            }
            v.sort();
            v.dedup();
            Ok(v)
        }
    }
}

/// The shapes of a partition (the names `scripts/netsplit.sh` uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Two halves that cannot talk.
    Halves,
    /// Every node sees a majority, no two the same majority.
    MajoritiesRing,
    /// Two halves joined by one node that talks to both.
    Bridge,
    /// One node cut off from all others.
    Isolate,
    /// One node's messages to the others are dropped; it still hears them.
    OneWay,
}

impl Shape {
    const ALL: [Shape; 5] = [
        Shape::Halves,
        Shape::MajoritiesRing,
        Shape::Bridge,
        Shape::Isolate,
        Shape::OneWay,
    ];

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Halves => "halves",
            Shape::MajoritiesRing => "majorities-ring",
            Shape::Bridge => "bridge",
            Shape::Isolate => "isolate",
            Shape::OneWay => "one-way",
        }
    }
}

/// The directed links (from, to) a partition of `shape` cuts, over `nodes` in the
/// (shuffled) order given.
pub fn cuts(shape: Shape, nodes: &[usize]) -> Vec<(usize, usize)> {
    let n = nodes.len();
    let mut out = Vec::new();
    let both = |a: usize, b: usize, out: &mut Vec<(usize, usize)>| {
        out.push((a, b));
        out.push((b, a));
    };
    match shape {
        Shape::Halves => {
            let (a, b) = nodes.split_at(n / 2);
            for &x in a {
                for &y in b {
                    both(x, y, &mut out);
                }
            }
        }
        Shape::Isolate => {
            for &y in &nodes[1..] {
                both(nodes[0], y, &mut out);
            }
        }
        Shape::OneWay => {
            for &y in &nodes[1..] {
                out.push((nodes[0], y));
            }
        }
        Shape::Bridge => {
            // nodes[0] is the bridge; the rest split in two halves around it.
            let rest = &nodes[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            for &x in a {
                for &y in b {
                    both(x, y, &mut out);
                }
            }
        }
        Shape::MajoritiesRing => {
            // In ring order, each node talks to the nodes within distance d, which with
            // itself makes a majority; everything further away is cut.
            let d = (n / 2).div_ceil(2);
            for i in 0..n {
                for j in (i + 1)..n {
                    let dist = (j - i).min(n - (j - i));
                    if dist > d.max(1) {
                        both(nodes[i], nodes[j], &mut out);
                    }
                }
            }
        }
    }
    out
}

/// One nemesis action, drawn from the seed.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Cut these directed links.
    Partition {
        /// The shape.
        shape: Shape,
        /// Links cut.
        cuts: Vec<(usize, usize)>,
    },
    /// Crash a machine.
    Crash(usize),
    /// Step a machine's clock (ms).
    ClockJump(usize, i64),
    /// Make a machine's clock run fast or slow (ppm).
    ClockDrift(usize, i64),
    /// Degrade every link.
    Loss(LinkFaults),
    /// Fail a fraction of a machine's fsyncs.
    FsyncFailures(usize, f64),
    /// Fill a machine's disk.
    DiskFull(usize),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Partition { shape, cuts } => {
                let links: Vec<String> = cuts
                    .iter()
                    .map(|(a, b)| format!("n{}->n{}", a + 1, b + 1))
                    .collect();
                write!(f, "partition {} [{}]", shape.name(), links.join(" "))
            }
            Action::Crash(i) => write!(f, "crash n{}", i + 1),
            Action::ClockJump(i, ms) => write!(f, "clock-jump n{} {ms:+} ms", i + 1),
            Action::ClockDrift(i, ppm) => write!(f, "clock-drift n{} {ppm:+} ppm", i + 1),
            Action::Loss(l) => write!(
                f,
                "loss drop={:.3} duplicate={:.3} extra-latency={:?}",
                l.drop, l.duplicate, l.extra_latency
            ),
            Action::FsyncFailures(i, p) => write!(f, "fsync-failures n{} p={p:.2}", i + 1),
            Action::DiskFull(i) => write!(f, "disk-full n{}", i + 1),
        }
    }
}

/// Whether `f` is one of the faults [`draw`] draws (the others are modes, `unsynced` and
/// `overlap`, and a lane of their own, `membership`).
pub fn is_drawn(f: Fault) -> bool {
    !matches!(f, Fault::Unsynced | Fault::Membership | Fault::Overlap)
}

/// Draw the next action among `faults` for a cluster of `n` machines, and how long it
/// lasts before it is healed.
pub fn draw(rng: &mut Rng, faults: &[Fault], n: usize, base: &LinkFaults) -> (Action, Duration) {
    let events: Vec<Fault> = faults.iter().copied().filter(|f| is_drawn(*f)).collect();
    let kind = events[rng.below(events.len() as u64) as usize];
    let node = rng.below(n as u64) as usize;
    let lasting = Duration::from_millis(200 + rng.below(1300));
    let action = match kind {
        Fault::Partition => {
            let shape = Shape::ALL[rng.below(Shape::ALL.len() as u64) as usize];
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            Action::Partition {
                shape,
                cuts: cuts(shape, &order),
            }
        }
        Fault::Crash => Action::Crash(node),
        Fault::Clock => {
            if rng.chance(0.5) {
                let ms = rng.below(120_000) as i64 - 60_000;
                Action::ClockJump(node, ms)
            } else {
                Action::ClockDrift(node, rng.below(200_001) as i64 - 100_000)
            }
        }
        Fault::Loss => Action::Loss(LinkFaults {
            drop: 0.01 + rng.below(20) as f64 / 100.0,
            duplicate: rng.below(5) as f64 / 100.0,
            extra_latency: Duration::from_millis(rng.below(50)),
            ..base.clone()
        }),
        Fault::Disk => {
            if rng.chance(0.5) {
                Action::FsyncFailures(node, 0.1 + rng.below(60) as f64 / 100.0)
            } else {
                Action::DiskFull(node)
            }
        }
        Fault::Unsynced | Fault::Membership | Fault::Overlap => {
            unreachable!("filtered out above")
        }
    };
    (action, lasting)
}

/// The next step of the membership lane: the pause before the spare joins, which up
/// layout node (an index into `up`) the join is committed through, how long the spare
/// stays a member, and which up layout node commits the leave (drawn now, applied to the
/// nodes up then). The lasting time is often shorter than a transfer takes, so a leave
/// regularly stacks on a join still moving data.
pub struct MembershipDraw {
    /// Pause before the join.
    pub gap: Duration,
    /// Draw for the node the join is committed through.
    pub join_via: u64,
    /// How long the spare stays in the layout.
    pub lasting: Duration,
    /// Draw for the node the leave is committed through.
    pub leave_via: u64,
}

/// Draw the membership lane's next join and leave.
pub fn draw_membership(rng: &mut Rng) -> MembershipDraw {
    MembershipDraw {
        gap: Duration::from_millis(200 + rng.below(1800)),
        join_via: rng.next_u64(),
        lasting: Duration::from_millis(500 + rng.below(4500)),
        leave_via: rng.next_u64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: each partition shape cuts what its name says, on 5 nodes.
    #[test]
    fn partition_shapes() {
        let order = [0, 1, 2, 3, 4];
        let halves = cuts(Shape::Halves, &order);
        assert_eq!(halves.len(), 2 * 2 * 3);
        assert!(halves.contains(&(0, 4)) && !halves.contains(&(0, 1)));
        let iso = cuts(Shape::Isolate, &order);
        assert_eq!(iso.len(), 8);
        let one_way = cuts(Shape::OneWay, &order);
        assert_eq!(one_way, vec![(0, 1), (0, 2), (0, 3), (0, 4)]);
        let bridge = cuts(Shape::Bridge, &order);
        assert!(bridge.iter().all(|(a, b)| *a != 0 && *b != 0));
        assert!(bridge.contains(&(1, 3)) && !bridge.contains(&(1, 2)));
        let ring = cuts(Shape::MajoritiesRing, &order);
        // Each node keeps itself and its two ring neighbours: a majority of 5.
        for i in 0..5 {
            let reachable = 5 - ring.iter().filter(|(a, _)| *a == i).count();
            assert_eq!(reachable, 3, "node {i}: {ring:?}");
        }
    }

    /// Goal: fault lists parse, and an unknown name is an error naming it.
    #[test]
    fn fault_lists() {
        assert_eq!(parse_faults("all").unwrap(), EVENTS.to_vec());
        // `membership` is opt-in: named, never part of `all`.
        assert_eq!(
            parse_faults("membership,all").unwrap(),
            [EVENTS.as_slice(), &[Fault::Membership]].concat()
        );
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(
            parse_faults("crash,partition,crash").unwrap(),
            vec![Fault::Partition, Fault::Crash]
        );
        let e = parse_faults("crash,meteor").unwrap_err().to_string();
        assert!(e.contains("\"meteor\""), "{e}");
    }
}
