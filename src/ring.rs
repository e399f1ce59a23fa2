//! The consistent-hash ring: which nodes hold a partition.
//!
//! Each physical node owns `vnodes` tokens on a 64-bit ring (tokens are hashes of
//! `"{node}#{i}"`, so every node computes the same ring from the same member list with no
//! coordination). A partition key hashes to a point; its **preference list** is the first N
//! *distinct physical nodes* met walking clockwise from that point. Virtual nodes spread
//! each node's share over many small ranges, which evens out ownership and means a joining
//! node takes a little from everyone instead of half of one neighbour.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64;

/// Errors for rings that cannot be built or queried.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
        })
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
        let want = n.min(self.nodes.len());
        let start = self.tokens.partition_point(|(t, _)| *t < token);
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        for i in 0..self.tokens.len() {
            if picked.len() == want {
                break;
            }
            let (_, idx) = self.tokens[(start + i) % self.tokens.len()];
            if !picked.contains(&idx) {
                picked.push(idx);
            }
        }
        picked.into_iter().map(|i| self.nodes[i].clone()).collect()
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
}
