//! Keyspaces (Riak's bucket types, Cassandra's tables): replication factor, default
//! quorums and limits, and the registry every node keeps of them.
//!
//! A keyspace is created from the node config at start or at runtime by an admin request.
//! Until gossip exists, the coordinator that creates one announces it to every node, every
//! replica request carries the definition (so a replica that missed the announcement
//! learns it from the first request), and a node that is asked about a keyspace it does not
//! know asks its peers before answering "unknown keyspace".

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// Errors for keyspace definitions and look-ups.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyspaceError {
    /// Names are restricted so they can prefix storage keys and be typed in a shell.
    #[error("invalid keyspace name {0:?}: use 1-64 characters from [A-Za-z0-9_-]")]
    BadName(String),
    /// N must be at least 1 and at most the number of nodes.
    #[error(
        "keyspace {name:?}: n={n} is invalid; it must be between 1 and the cluster size ({nodes})"
    )]
    BadN {
        /// Keyspace name.
        name: String,
        /// Requested replica count.
        n: u8,
        /// Nodes in the cluster.
        nodes: usize,
    },
    /// R or W outside 1..=N.
    #[error(
        "{what}={value} is invalid for keyspace {name:?} with n={n}: it must be between 1 and {n}"
    )]
    BadQuorum {
        /// Keyspace name.
        name: String,
        /// "r" or "w".
        what: &'static str,
        /// Requested quorum.
        value: u8,
        /// Replica count.
        n: u8,
    },
    /// A sibling cap of zero would refuse every write.
    #[error("keyspace {0:?}: max_siblings must be at least 1")]
    BadSiblingCap(String),
    /// An `lww-actor` keyspace needs to know which actor wins.
    #[error(
        "keyspace {0:?} uses lww-actor: give actor_priority, highest first (e.g. [\"eu\", \"us\"])"
    )]
    NoActorPriority(String),
    /// No node knows this keyspace.
    #[error("unknown keyspace {0:?}")]
    Unknown(String),
    /// A grant list names something that cannot be a certificate name, or is too long.
    #[error("keyspace {name:?}: {list} {problem}")]
    BadGrant {
        /// Keyspace name.
        name: String,
        /// `readers` or `writers`.
        list: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The keyspace was dropped; its definition is refused from now on.
    #[error(
        "keyspace {name:?} (generation {generation}) was dropped; create it again to use the name"
    )]
    Dropped {
        /// Keyspace name.
        name: String,
        /// The dropped generation.
        generation: u64,
    },
    /// Dropping a keyspace that the node's own config defines would only last until the
    /// next restart.
    #[error("keyspace {0:?} is defined in node.toml: remove it from every node's [[keyspaces]] and restart them before dropping it")]
    Configured(String),
    /// A keyspace of that name exists with other settings.
    #[error("keyspace {name:?} already exists with different settings ({existing})")]
    Conflict {
        /// Keyspace name.
        name: String,
        /// Summary of the existing definition.
        existing: String,
    },
}

/// How concurrent writes are settled: the serialized name of a policy (config, wire).
/// What each one does is its resolver, `crate::policy` (`ConflictPolicy::resolver`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Keep every concurrent value; reads return them with a causal context.
    #[default]
    Siblings,
    /// Of concurrent values, keep the one with the highest hybrid-logical-clock timestamp
    /// set by the lead replica (ties: highest version id). Loses the others by design.
    LwwTimestamp,
    /// Of concurrent values, keep the one whose client actor ranks highest in
    /// `actor_priority` (then the latest timestamp). Loses the others by design.
    LwwActor,
    /// Of concurrent values, keep the one with the highest client-supplied timestamp
    /// (Cassandra's `USING TIMESTAMP`). Loses the others by design.
    LwwClient,
    /// PN-counter CRDT: increments and decrements from every side of a split add up.
    Counter,
    /// Add-wins observed-remove set CRDT (ORSWOT): a remove drops only the adds it saw.
    Set,
    /// Map CRDT of fields holding a register, a counter and a set, merged per field.
    Map,
    /// Multi-value register CRDT: concurrent writes are all kept until one replaces them.
    Register,
}

impl std::fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictPolicy::Siblings => "siblings",
            ConflictPolicy::LwwTimestamp => "lww-timestamp",
            ConflictPolicy::LwwActor => "lww-actor",
            ConflictPolicy::LwwClient => "lww-client",
            ConflictPolicy::Counter => "counter",
            ConflictPolicy::Set => "set",
            ConflictPolicy::Map => "map",
            ConflictPolicy::Register => "register",
        })
    }
}

impl std::fmt::Display for ReadRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadRepair::Async => "async",
            ReadRepair::Blocking => "blocking",
            ReadRepair::Off => "off",
        })
    }
}

impl std::str::FromStr for ConflictPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "siblings" => Ok(ConflictPolicy::Siblings),
            "lww-timestamp" => Ok(ConflictPolicy::LwwTimestamp),
            "lww-actor" => Ok(ConflictPolicy::LwwActor),
            "lww-client" => Ok(ConflictPolicy::LwwClient),
            "counter" => Ok(ConflictPolicy::Counter),
            "set" => Ok(ConflictPolicy::Set),
            "map" => Ok(ConflictPolicy::Map),
            "register" => Ok(ConflictPolicy::Register),
            other => Err(format!(
                "conflict policy {other:?}: expected siblings, lww-timestamp, lww-actor, lww-client, counter, set, map or register"
            )),
        }
    }
}

/// What a read does about replicas that answered with a stale or missing copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadRepair {
    /// Answer at once; send the merged object to stale replicas in the background.
    #[default]
    Async,
    /// Answer only after R replicas hold the merged object (Cassandra's blocking read
    /// repair: a value once returned by a quorum read is returned by every later one).
    Blocking,
    /// Never repair on reads (anti-entropy alone converges replicas).
    Off,
}

impl std::str::FromStr for ReadRepair {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "async" => Ok(ReadRepair::Async),
            "blocking" => Ok(ReadRepair::Blocking),
            "off" => Ok(ReadRepair::Off),
            other => Err(format!(
                "read repair mode {other:?}: expected async, blocking or off"
            )),
        }
    }
}

/// Default replica count for a keyspace.
pub const DEFAULT_N: u8 = 3;
/// Default read quorum.
pub const DEFAULT_R: u8 = 2;
/// Default write quorum.
pub const DEFAULT_W: u8 = 2;
/// Default cap on siblings per key (Riak warns at 25 and refuses at 100; we refuse earlier
/// because every sibling travels on every read).
pub const DEFAULT_MAX_SIBLINGS: u16 = 32;

fn default_n() -> u8 {
    DEFAULT_N
}
fn default_r() -> u8 {
    DEFAULT_R
}
fn default_w() -> u8 {
    DEFAULT_W
}
fn default_max_siblings() -> u16 {
    DEFAULT_MAX_SIBLINGS
}

/// A keyspace definition, as written in `[[keyspaces]]` of the node config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceDef {
    /// Name: 1-64 characters from `[A-Za-z0-9_-]`.
    pub name: String,
    /// Replicas per key. Default 3.
    #[serde(default = "default_n")]
    pub n: u8,
    /// Replies a read waits for unless the request overrides it. Default 2.
    #[serde(default = "default_r")]
    pub r: u8,
    /// Acknowledgements a write waits for unless the request overrides it. Default 2.
    #[serde(default = "default_w")]
    pub w: u8,
    /// Most siblings a key may hold; a write that would exceed it is refused until a
    /// client resolves the siblings. Default 32.
    #[serde(default = "default_max_siblings")]
    pub max_siblings: u16,
    /// Conflict policy. Default `siblings`.
    #[serde(default)]
    pub policy: ConflictPolicy,
    /// Read repair: `async` (default), `blocking` or `off`.
    #[serde(default)]
    pub read_repair: ReadRepair,
    /// For `lww-actor`: actors from highest to lowest priority (e.g. `["eu", "us"]`).
    /// Default: empty (required for `lww-actor`).
    #[serde(default)]
    pub actor_priority: Vec<String>,
    /// Client certificate names that may read (get, scan). Default: absent = every client
    /// certificate; `[]` = admins only. Admin certificates are never limited by grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers: Option<Vec<String>>,
    /// Client certificate names that may write (put, delete, batch, CRDT updates).
    /// Default: absent = every client certificate; `[]` = admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers: Option<Vec<String>>,
    /// Which creation of this name the definition is: a random non-zero number chosen
    /// when an admin creates the keyspace, 0 for keyspaces from `node.toml`. A dropped
    /// generation is refused for good, so a re-created keyspace of the same name never
    /// merges with the old one's data or definition. Set by the node, not by operators.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// Sloppy quorum: when a primary replica cannot take a write, send its copy with a
    /// hint to the next healthy node on the ring, whose acknowledgement counts towards W
    /// (not towards `pw`). Needs `hints.enabled` on the nodes. Default `true`. Written
    /// only when `false`, so definitions with the default keep the encoding older nodes
    /// (which refuse unknown fields) read.
    #[serde(default = "default_sloppy", skip_serializing_if = "is_default_sloppy")]
    pub sloppy_quorum: bool,
}

fn default_sloppy() -> bool {
    true
}

fn is_default_sloppy(s: &bool) -> bool {
    *s
}

fn is_zero(g: &u64) -> bool {
    *g == 0
}

/// Most names one grant list may hold: the definition travels in every replica request,
/// so it must stay small.
pub const MAX_GRANT_NAMES: usize = 64;

/// Check a grant list: certificate names (letters, digits, '-', '.'; 1-63 bytes), at most
/// [`MAX_GRANT_NAMES`].
fn validate_grant(
    name: &str,
    list: &'static str,
    names: &Option<Vec<String>>,
) -> Result<(), KeyspaceError> {
    let Some(names) = names else { return Ok(()) };
    let bad = |problem: String| KeyspaceError::BadGrant {
        name: name.to_string(),
        list,
        problem,
    };
    if names.len() > MAX_GRANT_NAMES {
        return Err(bad(format!(
            "lists {} names; at most {MAX_GRANT_NAMES} are allowed",
            names.len()
        )));
    }
    for n in names {
        let ok = !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(bad(format!(
                "entry {n:?} is not a certificate name (1-63 letters, digits, '-' and '.')"
            )));
        }
    }
    Ok(())
}

impl KeyspaceDef {
    /// A definition with the given replication settings and defaults elsewhere.
    pub fn new(name: &str, n: u8, r: u8, w: u8) -> Self {
        KeyspaceDef {
            name: name.to_string(),
            n,
            r,
            w,
            max_siblings: DEFAULT_MAX_SIBLINGS,
            policy: ConflictPolicy::Siblings,
            read_repair: ReadRepair::Async,
            actor_priority: Vec::new(),
            readers: None,
            writers: None,
            generation: 0,
            sloppy_quorum: true,
        }
    }

    /// Whether `other` has the same settings, whatever its generation: what makes
    /// re-creating an existing keyspace idempotent.
    pub fn same_settings(&self, other: &KeyspaceDef) -> bool {
        KeyspaceDef {
            generation: other.generation,
            ..self.clone()
        } == *other
    }

    /// Check the definition against a cluster of `nodes` nodes.
    pub fn validate(&self, nodes: usize) -> Result<(), KeyspaceError> {
        validate_name(&self.name)?;
        if self.n == 0 || self.n as usize > nodes {
            return Err(KeyspaceError::BadN {
                name: self.name.clone(),
                n: self.n,
                nodes,
            });
        }
        self.quorum("r", self.r)?;
        self.quorum("w", self.w)?;
        if self.max_siblings == 0 {
            return Err(KeyspaceError::BadSiblingCap(self.name.clone()));
        }
        if self.policy == ConflictPolicy::LwwActor && self.actor_priority.is_empty() {
            return Err(KeyspaceError::NoActorPriority(self.name.clone()));
        }
        validate_grant(&self.name, "readers", &self.readers)?;
        validate_grant(&self.name, "writers", &self.writers)?;
        Ok(())
    }

    /// Resolve a per-request quorum override against this keyspace.
    pub fn quorum(&self, what: &'static str, value: u8) -> Result<u8, KeyspaceError> {
        if value == 0 || value > self.n {
            return Err(KeyspaceError::BadQuorum {
                name: self.name.clone(),
                what,
                value,
                n: self.n,
            });
        }
        Ok(value)
    }

    /// One-line summary, for errors and listings.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "n={} r={} w={} max_siblings={} policy={} read_repair={}",
            self.n, self.r, self.w, self.max_siblings, self.policy, self.read_repair
        );
        for (list, names) in [("readers", &self.readers), ("writers", &self.writers)] {
            if let Some(names) = names {
                s.push_str(&format!(" {list}=[{}]", names.join(",")));
            }
        }
        if self.generation != 0 {
            s.push_str(&format!(" generation={:x}", self.generation));
        }
        s
    }
}

/// Check a keyspace name.
pub fn validate_name(name: &str) -> Result<(), KeyspaceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyspaceError::BadName(name.to_string()))
    }
}

/// The keyspaces one node knows.
#[derive(Debug, Default)]
pub struct Registry {
    defs: RwLock<BTreeMap<String, KeyspaceDef>>,
}

impl Registry {
    /// Look a keyspace up.
    pub fn get(&self, name: &str) -> Option<KeyspaceDef> {
        self.defs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// All known keyspaces, by name.
    pub fn list(&self) -> Vec<KeyspaceDef> {
        self.defs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forget a definition; returns it if it was known.
    pub fn remove(&self, name: &str) -> Option<KeyspaceDef> {
        self.defs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// Add a definition. Returns `Ok(true)` if it is new, `Ok(false)` if an identical one
    /// was already known, and an error if a different one exists.
    pub fn insert(&self, def: KeyspaceDef) -> Result<bool, KeyspaceError> {
        let mut defs = self.defs.write().unwrap_or_else(|e| e.into_inner());
        match defs.get(&def.name) {
            Some(existing) if *existing == def => Ok(false),
            Some(existing) => Err(KeyspaceError::Conflict {
                name: def.name.clone(),
                existing: existing.summary(),
            }),
            None => {
                defs.insert(def.name.clone(), def);
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: invalid combinations (W>N, R=0, N beyond the cluster, bad names) are refused
    /// with errors that name the problem.
    #[test]
    fn invalid_definitions() {
        let ok = KeyspaceDef::new("users", 4, 2, 2);
        assert!(ok.validate(5).is_ok());
        let e = KeyspaceDef::new("users", 3, 2, 4).validate(5).unwrap_err();
        assert!(e.to_string().contains("w=4 is invalid"), "{e}");
        let e = KeyspaceDef::new("users", 3, 0, 2).validate(5).unwrap_err();
        assert!(e.to_string().contains("r=0 is invalid"), "{e}");
        let e = KeyspaceDef::new("users", 6, 2, 2).validate(5).unwrap_err();
        assert!(e.to_string().contains("cluster size (5)"), "{e}");
        assert!(KeyspaceDef::new("bad name", 3, 2, 2).validate(5).is_err());
        assert!(KeyspaceDef::new("", 3, 2, 2).validate(5).is_err());
    }

    /// Goal: grant lists must hold certificate names and stay short (the definition rides
    /// in every replica request); `same_settings` ignores only the generation.
    #[test]
    fn grant_lists_are_checked() {
        let mut ks = KeyspaceDef::new("orders", 3, 2, 2);
        ks.readers = Some(vec!["alice".into(), "app-1.prod".into()]);
        assert!(ks.validate(3).is_ok());
        ks.writers = Some(vec!["bad name".into()]);
        let e = ks.validate(3).unwrap_err().to_string();
        assert!(e.contains("writers") && e.contains("bad name"), "{e}");
        ks.writers = Some((0..65).map(|i| format!("c{i}")).collect());
        let e = ks.validate(3).unwrap_err().to_string();
        assert!(e.contains("at most 64"), "{e}");
        let a = KeyspaceDef::new("a", 3, 2, 2);
        let mut b = a.clone();
        b.generation = 7;
        assert!(a.same_settings(&b) && a != b);
        b.readers = Some(vec![]);
        assert!(!a.same_settings(&b));
    }

    /// Goal: re-creating an identical keyspace is idempotent; a different one conflicts.
    #[test]
    fn registry_insert() {
        let r = Registry::default();
        assert_eq!(r.insert(KeyspaceDef::new("a", 3, 2, 2)), Ok(true));
        assert_eq!(r.insert(KeyspaceDef::new("a", 3, 2, 2)), Ok(false));
        assert!(matches!(
            r.insert(KeyspaceDef::new("a", 3, 1, 1)),
            Err(KeyspaceError::Conflict { .. })
        ));
        assert_eq!(r.list().len(), 1);
    }
}
