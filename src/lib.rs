//! quorumkv: a leaderless, eventually consistent key-value store in the line of Dynamo,
//! Riak and Cassandra.
//!
//! The data path, module by module:
//! request ([`proto`], [`server`]) → [`node`] → [`coordinator`] (authorizes with
//! [`access`], finds the keyspace in the [`catalog`], opens the client's sealed causal
//! [`context`]) → [`ring`] (preference list) → typed replica calls ([`peers`]: over
//! [`transport`] to other nodes, directly to this node's own) → [`replica_service`] (learns
//! the keyspace the request carries) → [`replica`] (the lead issues a dot as its node
//! incarnation) → [`storage`] → conflict resolution: the stored [`object`] (dots and
//! version vectors of [`causality`], CRDT states of [`crdt`]) handled by the keyspace's
//! [`policy`] → replies gathered until the quorum ([`peers`]) → read repair
//! ([`coordinator`]). [`node`] composes one member without sockets; [`transport`] moves
//! peer messages over QUIC or an in-memory network; [`env`] is the one seam to time, tasks
//! and randomness, which [`sim`] replaces to run a whole cluster in one seeded process;
//! [`client`] is the client library. See `docs/ARCHITECTURE.md`.

pub mod aae;
pub mod access;
pub mod bench;
pub mod catalog;
pub mod causality;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod coordinator;
pub mod crdt;
pub mod env;
pub mod harness;
pub mod hints;
pub mod inprocess;
pub mod key;
pub mod keyspace;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod object;
pub mod peers;
pub mod policy;
pub mod proto;
pub mod replica;
pub mod replica_service;
pub mod ring;
pub mod runtime;
pub mod server;
pub mod shell;
pub mod sim;
pub mod storage;
pub mod tls;
pub mod tombstones;
pub mod transfer;
pub mod transport;
