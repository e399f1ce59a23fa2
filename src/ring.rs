//! The consistent-hash ring: which nodes hold a partition.
//!
//! Each physical node owns `vnodes` tokens on a 64-bit ring (tokens are hashes of
//! `"{node}#{i}"`, so every node computes the same ring from the same member list with no
//! coordination). A partition key hashes to a point; its **preference list** is the first N
//! *distinct physical nodes* met walking clockwise from that point. Virtual nodes spread
//! each node's share over many small ranges, which evens out ownership and means a joining
//! node takes a little from everyone instead of half of one neighbour.
//!
//! **Zones.** A member may name its zone (a rack, a room, an availability zone). With
//! zones, the walk takes the first node of each zone not yet used, so with at least N
//! zones a key's N replicas are in N distinct zones; with fewer zones it then takes the
//! nodes it skipped, in ring order, so a key still gets N replicas (Cassandra's
//! rack-aware placement does the same). The primary — the first node clockwise — is the
//! same with or without zones, and a member without a zone is a zone of its own, so a
//! ring without zones is exactly the ring it was.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64;

/// Errors for rings that cannot be built or queried.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// A ring needs at least one node.
    #[error("the ring has no nodes")]
    Empty,
    /// A node needs at least one token.
    #[error("vnodes must be at least 1")]
    NoVnodes,
    /// The same node name was given twice.
    #[error("node {0:?} is listed twice")]
    DuplicateNode(String),
    /// Zones given for some members and not others, or a different number than nodes.
    #[error("zones: {0}")]
    Zones(String),
}

/// Hash of a partition key: its position on the ring.
pub fn token_of(partition: &[u8]) -> u64 {
    xxh3_64(partition)
}

/// An immutable ring built from a member list.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Sorted by token; the index points into `nodes`.
    tokens: Vec<(u64, usize)>,
    /// Physical node names, in the order given.
    nodes: Vec<String>,
    /// Tokens per node.
    vnodes: usize,
    /// Each node's zone number (index into the distinct zones); a node without a zone
    /// has a zone of its own.
    zone_of: Vec<usize>,
    /// How many distinct zones.
    zone_count: usize,
}

impl Ring {
    /// Build the ring for `nodes` with `vnodes` tokens each.
    pub fn new(nodes: &[String], vnodes: usize) -> Result<Self, RingError> {
        if nodes.is_empty() {
            return Err(RingError::Empty);
        }
        if vnodes == 0 {
            return Err(RingError::NoVnodes);
        }
        let mut seen = std::collections::HashSet::new();
        for n in nodes {
            if !seen.insert(n) {
                return Err(RingError::DuplicateNode(n.clone()));
            }
        }
        let mut tokens = Vec::with_capacity(nodes.len() * vnodes);
        for (idx, name) in nodes.iter().enumerate() {
            for i in 0..vnodes {
                tokens.push((xxh3_64(format!("{name}#{i}").as_bytes()), idx));
            }
        }
        // Ties between two nodes' tokens are astronomically unlikely; sorting by (token, idx)
        // still makes the ring identical on every node if one happens.
        tokens.sort_unstable();
        Ok(Ring {
            tokens,
            nodes: nodes.to_vec(),
            vnodes,
            zone_of: (0..nodes.len()).collect(),
            zone_count: nodes.len(),
        })
    }

    /// Build the ring for `nodes`, each in the zone of the same index in `zones` (all
    /// `Some`, or all `None` for a ring without zones).
    pub fn with_zones(
        nodes: &[String],
        zones: &[Option<String>],
        vnodes: usize,
    ) -> Result<Self, RingError> {
        let mut ring = Ring::new(nodes, vnodes)?;
        if zones.len() != nodes.len() {
            return Err(RingError::Zones(format!(
                "{} zones for {} nodes",
                zones.len(),
                nodes.len()
            )));
        }
        let named = zones.iter().filter(|z| z.is_some()).count();
        if named == 0 {
            return Ok(ring);
        }
        if named != zones.len() {
            return Err(RingError::Zones(
                "some members have a zone and others do not: give every member one, or none".into(),
            ));
        }
        let mut distinct: Vec<&str> = Vec::new();
        ring.zone_of = zones
            .iter()
            .flatten()
            .map(|z| match distinct.iter().position(|d| *d == z) {
                Some(i) => i,
                None => {
                    distinct.push(z);
                    distinct.len() - 1
                }
            })
            .collect();
        ring.zone_count = distinct.len();
        Ok(ring)
    }

    /// Physical node names.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Tokens per node.
    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// Every token on the ring, in ring order (each starts the arc whose preference list
    /// `preference_list_for_token` gives): how anti-entropy enumerates ranges.
    pub fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.tokens.iter().map(|(t, _)| *t)
    }

    /// The first `n` distinct nodes clockwise from the partition's token (fewer if the ring
    /// has fewer nodes).
    pub fn preference_list(&self, partition: &[u8], n: usize) -> Vec<String> {
        self.preference_list_for_token(token_of(partition), n)
    }

    /// As [`Ring::preference_list`], for a raw token.
    pub fn preference_list_for_token(&self, token: u64, n: usize) -> Vec<String> {
        self.replica_indexes(token, n)
            .into_iter()
            .map(|i| self.nodes[i].clone())
            .collect()
    }

    /// Whether `node` is one of the first `n` replicas of `partition`: the check every
    /// replica request makes ([`crate::replica_service`]), without building the list.
    pub fn holds(&self, partition: &[u8], n: usize, node: &str) -> bool {
        self.replica_indexes(token_of(partition), n)
            .into_iter()
            .any(|i| self.nodes[i] == node)
    }

    /// The preference list as indexes into `nodes`.
    fn replica_indexes(&self, token: u64, n: usize) -> Vec<usize> {
        let want = n.min(self.nodes.len());
        // Nodes in zones not used yet, as many as there are zones (at most `want`); then
        // the nodes skipped for their zone, in ring order, for the rest.
        let distinct_wanted = want.min(self.zone_count);
        let start = self.tokens.partition_point(|(t, _)| *t < token);
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        let mut skipped: Vec<usize> = Vec::new();
        let mut zones_used: Vec<usize> = Vec::with_capacity(distinct_wanted);
        for i in 0..self.tokens.len() {
            if picked.len() == distinct_wanted && picked.len() + skipped.len() >= want {
                break;
            }
            let (_, idx) = self.tokens[(start + i) % self.tokens.len()];
            if picked.contains(&idx) || skipped.contains(&idx) {
                continue;
            }
            let zone = self.zone_of[idx];
            if picked.len() < distinct_wanted && !zones_used.contains(&zone) {
                zones_used.push(zone);
                picked.push(idx);
            } else {
                skipped.push(idx);
            }
        }
        picked.extend(skipped.into_iter().take(want - picked.len().min(want)));
        picked
    }

    /// Share of the ring (0..1) for which each node is the *primary* replica.
    pub fn ownership(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self.nodes.iter().map(|n| (n.clone(), 0.0)).collect();
        let total = u64::MAX as f64 + 1.0;
        for (i, (token, idx)) in self.tokens.iter().enumerate() {
            // The range (previous token, token] belongs to this token's node.
            let prev = if i == 0 {
                self.tokens[self.tokens.len() - 1].0
            } else {
                self.tokens[i - 1].0
            };
            let width = token.wrapping_sub(prev) as f64;
            let width = if self.tokens.len() == 1 { total } else { width };
            *out.entry(self.nodes[*idx].clone()).or_default() += width / total;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_VNODES;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    /// Goal: `holds` agrees with the preference list for every node, with and without zones.
    #[test]
    fn holds_agrees_with_the_preference_list() {
        let zones: Vec<Option<String>> = (0..6).map(|i| Some(format!("z{}", i % 3))).collect();
        for ring in [
            Ring::new(&names(6), 64).unwrap(),
            Ring::with_zones(&names(6), &zones, 64).unwrap(),
        ] {
            for i in 0..300 {
                let p = format!("p{i}");
                let pl = ring.preference_list(p.as_bytes(), 3);
                for n in names(6) {
                    assert_eq!(ring.holds(p.as_bytes(), 3, &n), pl.contains(&n), "{p} {n}");
                }
            }
        }
    }

    /// Goal: preference lists hold N distinct nodes, and items of one partition share one.
    #[test]
    fn preference_list_distinct_and_partition_scoped() {
        let ring = Ring::new(&names(5), DEFAULT_VNODES).unwrap();
        for i in 0..1000 {
            let pl = ring.preference_list(format!("p{i}").as_bytes(), 4);
            assert_eq!(pl.len(), 4);
            let mut d = pl.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 4, "preference list has duplicates: {pl:?}");
        }
        // Placement ignores the sort key by construction: it only sees the partition.
        let k1 = crate::key::Key::parse("post1/a");
        let k2 = crate::key::Key::parse("post1/zzz");
        assert_eq!(
            ring.preference_list(&k1.partition, 3),
            ring.preference_list(&k2.partition, 3)
        );
        // Asking for more replicas than nodes gives every node once.
        assert_eq!(ring.preference_list(b"x", 9).len(), 5);
    }

    /// Goal: with the default vnode count, ownership is balanced (max/min share below 1.35
    /// for 3..=10 nodes) and shares sum to 1.
    #[test]
    fn balance_with_default_vnodes() {
        for n in 3..=10 {
            let ring = Ring::new(&names(n), DEFAULT_VNODES).unwrap();
            let own = ring.ownership();
            let sum: f64 = own.values().sum();
            assert!((sum - 1.0).abs() < 1e-9, "shares sum to {sum}");
            let max = own.values().cloned().fold(f64::MIN, f64::max);
            let min = own.values().cloned().fold(f64::MAX, f64::min);
            assert!(
                max / min < 1.35,
                "n={n}: max/min ownership {:.3}",
                max / min
            );
        }
    }

    /// Goal: adding a node to n moves about 1/(n+1) of the keys, all of them to the new node.
    #[test]
    fn adding_a_node_moves_about_one_over_n_plus_one() {
        for n in [3usize, 5, 8] {
            let before = Ring::new(&names(n), DEFAULT_VNODES).unwrap();
            let after = Ring::new(&names(n + 1), DEFAULT_VNODES).unwrap();
            let new_node = format!("n{}", n + 1);
            let samples = 50_000;
            let mut moved = 0;
            for i in 0..samples {
                let k = format!("key-{i}");
                let a = &before.preference_list(k.as_bytes(), 1)[0];
                let b = &after.preference_list(k.as_bytes(), 1)[0];
                if a != b {
                    moved += 1;
                    assert_eq!(b, &new_node, "a key moved between two old nodes");
                }
            }
            let frac = moved as f64 / samples as f64;
            let ideal = 1.0 / (n as f64 + 1.0);
            assert!(
                (frac - ideal).abs() < ideal * 0.25,
                "n={n}: moved {frac:.3}, ideal {ideal:.3}"
            );
        }
    }

    /// Goal: bad member lists are refused with a clear error.
    #[test]
    fn bad_rings() {
        assert_eq!(Ring::new(&[], 8).unwrap_err(), RingError::Empty);
        assert_eq!(Ring::new(&names(2), 0).unwrap_err(), RingError::NoVnodes);
        let dup = vec!["a".to_string(), "a".to_string()];
        assert_eq!(
            Ring::new(&dup, 8).unwrap_err(),
            RingError::DuplicateNode("a".into())
        );
    }

    /// Goal: every node computes the same ring regardless of list order.
    #[test]
    fn ring_independent_of_member_order() {
        let a = Ring::new(&names(4), 32).unwrap();
        let mut rev = names(4);
        rev.reverse();
        let b = Ring::new(&rev, 32).unwrap();
        for i in 0..200 {
            let k = format!("k{i}");
            assert_eq!(
                a.preference_list(k.as_bytes(), 3),
                b.preference_list(k.as_bytes(), 3)
            );
        }
    }

    /// `n` nodes named `n1`.. in zones `z0`, `z1`, .. round robin over `zones`.
    fn zoned(n: usize, zones: usize) -> Ring {
        let names = names(n);
        let z: Vec<Option<String>> = (0..n).map(|i| Some(format!("z{}", i % zones))).collect();
        Ring::with_zones(&names, &z, DEFAULT_VNODES).unwrap()
    }

    fn zone_of(n: &str, zones: usize) -> usize {
        (n[1..].parse::<usize>().unwrap() - 1) % zones
    }

    /// Goal (zone-aware placement): with at least N zones every key's N replicas are in N
    /// distinct zones, with the same primary as without zones; with fewer zones than N a
    /// key still gets N distinct replicas, spread over every zone.
    #[test]
    fn replicas_are_spread_over_zones() {
        let plain = Ring::new(&names(6), DEFAULT_VNODES).unwrap();
        let ring = zoned(6, 3);
        for i in 0..5000 {
            let key = format!("key{i}");
            let pl = ring.preference_list(key.as_bytes(), 3);
            let mut zs: Vec<usize> = pl.iter().map(|n| zone_of(n, 3)).collect();
            zs.sort_unstable();
            zs.dedup();
            assert_eq!(zs.len(), 3, "{key}: {pl:?}");
            assert_eq!(pl[0], plain.preference_list(key.as_bytes(), 1)[0]);
        }
        let two = zoned(4, 2);
        for i in 0..2000 {
            let pl = two.preference_list(format!("k{i}").as_bytes(), 3);
            let mut distinct = pl.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{pl:?}");
            let mut zs: Vec<usize> = pl.iter().map(|n| zone_of(n, 2)).collect();
            zs.sort_unstable();
            zs.dedup();
            assert_eq!(zs.len(), 2, "{pl:?}");
        }
    }

    /// Goal: a ring whose members have no zone places exactly as before zones existed,
    /// and mixed or mismatched zone lists are refused.
    #[test]
    fn no_zones_is_the_plain_ring_and_bad_zone_lists_are_refused() {
        let plain = Ring::new(&names(5), DEFAULT_VNODES).unwrap();
        let none =
            Ring::with_zones(&names(5), &[None, None, None, None, None], DEFAULT_VNODES).unwrap();
        for i in 0..2000 {
            let k = format!("k{i}");
            assert_eq!(
                plain.preference_list(k.as_bytes(), 3),
                none.preference_list(k.as_bytes(), 3)
            );
        }
        let mixed = [Some("a".to_string()), None, None];
        assert!(matches!(
            Ring::with_zones(&names(3), &mixed, 8),
            Err(RingError::Zones(_))
        ));
        assert!(matches!(
            Ring::with_zones(&names(3), &[None], 8),
            Err(RingError::Zones(_))
        ));
    }

    /// Share of (partition, replica) slots each node holds over `keys` sampled keys.
    fn replica_shares(ring: &Ring, n: usize, keys: usize) -> BTreeMap<String, f64> {
        let mut count: BTreeMap<String, f64> = BTreeMap::new();
        for i in 0..keys {
            for node in ring.preference_list(format!("s{i}").as_bytes(), n) {
                *count.entry(node).or_default() += 1.0;
            }
        }
        let total = (keys * n) as f64;
        count.into_iter().map(|(k, v)| (k, v / total)).collect()
    }

    /// Goal: with balanced zones (6 nodes, 3 zones of 2, N=3) every node holds within 10%
    /// of an even share of the replicas; one node joining a zone moves close to the
    /// minimum: the replica slots that change are at most 1.1 times the new node's own
    /// share of the slots (every one of which had to move to it).
    #[test]
    fn zoned_placement_is_balanced_and_a_join_moves_little() {
        let keys = 20_000;
        let ring = zoned(6, 3);
        let even = 1.0 / 6.0;
        let shares = replica_shares(&ring, 3, keys);
        let worst = shares
            .values()
            .map(|s| (s - even).abs() / even)
            .fold(0.0, f64::max);
        println!(
            "zoned 6 nodes / 3 zones: largest deviation from an even replica share {:.1}%",
            worst * 100.0
        );
        for (node, share) in shares {
            assert!(
                (share - even).abs() / even <= 0.10,
                "{node} holds {share:.4} of the replicas, even is {even:.4}"
            );
        }
        // n7 joins zone z0.
        let mut names7 = names(6);
        names7.push("n7".into());
        let mut z7: Vec<Option<String>> = (0..6).map(|i| Some(format!("z{}", i % 3))).collect();
        z7.push(Some("z0".into()));
        let grown = Ring::with_zones(&names7, &z7, DEFAULT_VNODES).unwrap();
        let mut moved = 0usize;
        for i in 0..keys {
            let k = format!("s{i}");
            let before = ring.preference_list(k.as_bytes(), 3);
            let after = grown.preference_list(k.as_bytes(), 3);
            moved += after.iter().filter(|n| !before.contains(n)).count();
        }
        let moved = moved as f64 / (keys * 3) as f64;
        // Every slot the new node holds moved to it: its share is the minimum. (With
        // zones it is its zone's third of the replicas split three ways, 1/9, rather than
        // the 1/(n+1) = 1/7 of a ring without zones.)
        let minimum = replica_shares(&grown, 3, keys)["n7"];
        println!(
            "a join to 7 nodes moved {:.1}% of the replica slots (minimum {:.1}%)",
            moved * 100.0,
            minimum * 100.0
        );
        assert!(
            moved <= 1.1 * minimum,
            "a join moved {moved:.3} of the replica slots; the minimum is {minimum:.3}"
        );
    }
}
