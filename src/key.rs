//! Keys: a (partition key, sort key) pair, and its order-preserving storage encoding.
//!
//! Placement hashes the partition key only, so every item of one partition shares its
//! replicas (a post and its comments). On disk a key is
//! `keyspace 0x00 escape(partition) 0x00 0x01 sort`: one partition is one contiguous,
//! sort-ordered range, which is what ordered scans and atomic per-partition batches need.
//! The escape (`0x00` → `0x00 0xFF`) keeps the encoding prefix-free and order-preserving.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use serde::{Deserialize, Serialize};

/// Errors for keys that cannot be stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The partition key is empty; every key needs one to be placed on the ring.
    #[error("the partition key is empty")]
    EmptyPartition,
    /// The key is too large.
    #[error("key is {len} bytes (partition + sort); the limit is {max}")]
    TooLarge {
        /// Partition plus sort key length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// Stored bytes that are not a key this module wrote.
    #[error("stored key is corrupt: {0}")]
    Corrupt(&'static str),
}

/// A key: the partition key decides placement; the sort key orders items in a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// Hashed onto the ring.
    #[serde(with = "serde_bytes")]
    pub partition: Vec<u8>,
    /// Empty when the partition holds a single item.
    #[serde(with = "serde_bytes")]
    pub sort: Vec<u8>,
}

impl Key {
    /// A key with no sort component.
    pub fn simple(partition: impl Into<Vec<u8>>) -> Self {
        Key {
            partition: partition.into(),
            sort: Vec::new(),
        }
    }

    /// Parse the text form used by the CLI and shell: `partition` or `partition/sort`
    /// (the first `/` separates; a partition containing `/` must use the API).
    pub fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((p, s)) => Key {
                partition: p.as_bytes().to_vec(),
                sort: s.as_bytes().to_vec(),
            },
            None => Key::simple(text.as_bytes().to_vec()),
        }
    }

    /// Check the key against the size limit.
    pub fn validate(&self, max_key_bytes: usize) -> Result<(), KeyError> {
        if self.partition.is_empty() {
            return Err(KeyError::EmptyPartition);
        }
        let len = self.partition.len() + self.sort.len();
        if len > max_key_bytes {
            return Err(KeyError::TooLarge {
                len,
                max: max_key_bytes,
            });
        }
        Ok(())
    }

    /// The storage key inside `keyspace`.
    pub fn encode(&self, keyspace: &str) -> Vec<u8> {
        let mut out = partition_prefix(keyspace, &self.partition);
        out.extend_from_slice(&self.sort);
        out
    }

    /// Inverse of [`Key::encode`]; returns the keyspace and the key.
    pub fn decode(bytes: &[u8]) -> Result<(String, Key), KeyError> {
        let ks_end = bytes
            .iter()
            .position(|b| *b == 0)
            .ok_or(KeyError::Corrupt("no keyspace terminator"))?;
        let keyspace = std::str::from_utf8(&bytes[..ks_end])
            .map_err(|_| KeyError::Corrupt("keyspace is not UTF-8"))?
            .to_string();
        let mut partition = Vec::new();
        let mut i = ks_end + 1;
        loop {
            match (bytes.get(i), bytes.get(i + 1)) {
                (Some(0), Some(0xFF)) => {
                    partition.push(0);
                    i += 2;
                }
                (Some(0), Some(0x01)) => {
                    i += 2;
                    break;
                }
                (Some(0), _) => return Err(KeyError::Corrupt("bad escape in partition")),
                (Some(b), _) => {
                    partition.push(*b);
                    i += 1;
                }
                (None, _) => return Err(KeyError::Corrupt("no partition terminator")),
            }
        }
        Ok((
            keyspace,
            Key {
                partition,
                sort: bytes[i..].to_vec(),
            },
        ))
    }
}

/// The storage range `[start, end)` holding every item of `keyspace`: its name and the
/// 0x00 that ends it, up to the name and 0x01.
pub fn keyspace_range(keyspace: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = keyspace.as_bytes().to_vec();
    let mut end = start.clone();
    start.push(0);
    end.push(1);
    (start, end)
}

/// The storage prefix shared by every item of one partition.
pub fn partition_prefix(keyspace: &str, partition: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keyspace.len() + partition.len() + 4);
    out.extend_from_slice(keyspace.as_bytes());
    out.push(0);
    for b in partition {
        if *b == 0 {
            out.extend_from_slice(&[0, 0xFF]);
        } else {
            out.push(*b);
        }
    }
    out.extend_from_slice(&[0, 0x01]);
    out
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.partition))?;
        if !self.sort.is_empty() {
            write!(f, "/{}", String::from_utf8_lossy(&self.sort))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Goal: the CLI text form splits on the first slash.
    #[test]
    fn parse_text_form() {
        assert_eq!(Key::parse("post1"), Key::simple("post1"));
        let k = Key::parse("post1/comment/7");
        assert_eq!(k.partition, b"post1");
        assert_eq!(k.sort, b"comment/7");
    }

    /// Goal: empty and oversized keys are refused with errors that say why.
    #[test]
    fn validation() {
        assert_eq!(Key::simple("").validate(10), Err(KeyError::EmptyPartition));
        assert_eq!(
            Key::simple("x".repeat(11)).validate(10),
            Err(KeyError::TooLarge { len: 11, max: 10 })
        );
        assert!(Key::simple("ok").validate(10).is_ok());
    }

    proptest! {
        /// Law: decode(encode(k)) == k for every key, including NUL bytes.
        #[test]
        fn round_trip(p in prop::collection::vec(any::<u8>(), 1..20), s in prop::collection::vec(any::<u8>(), 0..20)) {
            let k = Key { partition: p, sort: s };
            let (ks, back) = Key::decode(&k.encode("ks")).unwrap();
            prop_assert_eq!(ks, "ks");
            prop_assert_eq!(back, k);
        }

        /// Law: within a partition, storage order is sort-key order; and a partition's items
        /// all start with the partition prefix, which no other partition's items share.
        #[test]
        fn order_and_contiguity(p in prop::collection::vec(any::<u8>(), 1..8), q in prop::collection::vec(any::<u8>(), 1..8),
                                s1 in prop::collection::vec(any::<u8>(), 0..8), s2 in prop::collection::vec(any::<u8>(), 0..8)) {
            let a = Key { partition: p.clone(), sort: s1.clone() }.encode("ks");
            let b = Key { partition: p.clone(), sort: s2.clone() }.encode("ks");
            prop_assert_eq!(a.cmp(&b), s1.cmp(&s2));
            let other = Key { partition: q.clone(), sort: s1 }.encode("ks");
            if p != q {
                prop_assert!(!other.starts_with(&partition_prefix("ks", &p)));
            }
        }

        /// Garbage never panics the decoder.
        #[test]
        fn decode_garbage(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = Key::decode(&bytes);
        }
    }
}
