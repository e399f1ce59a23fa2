//! Command-line interface: argument parsing (clap) and dispatch to the subcommands.

mod certs;
mod devcluster;
mod kv;
mod node;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// quorumkv: a leaderless, Dynamo-style key-value store.
#[derive(Debug, Parser)]
#[command(name = "quorumkv", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node from its TOML config.
    Node(node::NodeArgs),
    /// Create certificates and configs for a local cluster on 127.0.0.1, start every node
    /// as its own process, and stop them on Ctrl-C.
    DevCluster(devcluster::DevClusterArgs),
    /// Create a cluster CA (if missing) and node/client certificates.
    Certs(certs::CertsArgs),
    /// Write a value.
    Put(kv::PutArgs),
    /// Read a key: every sibling and the causal context.
    Get(kv::GetArgs),
    /// Delete a key (writes a tombstone).
    Delete(kv::DeleteArgs),
    /// Create a keyspace on every node.
    CreateKeyspace(kv::CreateKeyspaceArgs),
    /// List keyspaces.
    Keyspaces(kv::ClusterArgs),
    /// Show nodes, their state as the contacted node sees it, and ring ownership.
    Status(kv::ClusterArgs),
    /// Show the preference list (replicas) of a key.
    Replicas(kv::ReplicasArgs),
    /// Read a partition's items in sort order (paged).
    Scan(kv::ScanArgs),
    /// Write several items of one partition atomically on each replica.
    Batch(kv::BatchArgs),
    /// Interactive shell (cqlsh/redis-cli style): siblings, contexts, tracing, status.
    Shell(shell::ShellArgs),
}

/// Where the client connection file is when `--cluster` is not given.
fn default_cluster_file() -> PathBuf {
    PathBuf::from("dev-cluster/cluster.toml")
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Node(a) => node::run(a),
        Command::DevCluster(a) => devcluster::run(a),
        Command::Certs(a) => certs::run(a),
        Command::Put(a) => kv::put(a),
        Command::Get(a) => kv::get(a),
        Command::Delete(a) => kv::delete(a),
        Command::CreateKeyspace(a) => kv::create_keyspace(a),
        Command::Keyspaces(a) => kv::keyspaces(a),
        Command::Status(a) => kv::status(a),
        Command::Replicas(a) => kv::replicas(a),
        Command::Scan(a) => kv::scan(a),
        Command::Batch(a) => kv::batch(a),
        Command::Shell(a) => shell::run(a),
    }
}

/// Log to stderr, filtered by `QUORUMKV_LOG` (default `info`).
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUORUMKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A tokio runtime for a command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
