//! quorumkv: a leaderless, eventually consistent key-value store in the line of Dynamo,
//! Riak and Cassandra.
//!
//! The data path, module by module:
//! request ([`proto`], [`server`]) → [`coordinator`] (opening the client's sealed causal
//! [`context`]) → [`ring`] (preference list) → [`replica`] (the lead issues a dot as its
//! node incarnation) → [`storage`] → conflict resolution: the stored [`object`] (dots and
//! version vectors of [`causality`], CRDT states of [`crdt`]) handled by the keyspace's
//! [`policy`] → read repair ([`coordinator`]). [`node`] ties one member together without
//! sockets; [`transport`] moves peer messages over QUIC or an in-memory network;
//! [`client`] is the client library. See `docs/ARCHITECTURE.md`.

pub mod access;
pub mod bench;
pub mod causality;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod coordinator;
pub mod crdt;
pub mod inprocess;
pub mod key;
pub mod keyspace;
pub mod metrics;
pub mod node;
pub mod object;
pub mod policy;
pub mod proto;
pub mod replica;
pub mod ring;
pub mod runtime;
pub mod server;
pub mod shell;
pub mod storage;
pub mod tls;
pub mod transport;
