//! Command-line interface: argument parsing (clap) and dispatch to the subcommands.

mod bench;
mod certs;
mod devcluster;
mod jepsen;
mod kv;
mod node;
mod shell;
mod sim;

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
    /// Create a cluster CA (if missing) and node, client and admin certificates.
    Certs(certs::CertsArgs),
    /// Write a value.
    Put(kv::PutArgs),
    /// Read a key: every sibling and the causal context.
    Get(kv::GetArgs),
    /// Delete a key (writes a tombstone).
    Delete(kv::DeleteArgs),
    /// Create a keyspace on every node (needs an admin certificate).
    CreateKeyspace(kv::CreateKeyspaceArgs),
    /// Drop a keyspace and delete its data on every node (needs an admin certificate).
    DropKeyspace(kv::DropKeyspaceArgs),
    /// List keyspaces.
    Keyspaces(kv::ClusterArgs),
    /// Show nodes, their state as the contacted node sees it, ring ownership, and the hints
    /// the contacted node holds for each (hinted handoff).
    Status(kv::ClusterArgs),
    /// Show the preference list (replicas) of a key.
    Replicas(kv::ReplicasArgs),
    /// Merkle anti-entropy: `aae status` shows, per range the contacted node replicates,
    /// its replicas, the last exchange and full compare, and the keys repaired.
    Aae {
        #[command(subcommand)]
        command: AaeCommand,
    },
    /// Membership: `cluster status` shows the layout versions; `join`, `leave` and
    /// `remove` stage changes, `plan` shows what they would move, `commit` applies them
    /// (data then moves in the background), `abort` drops them. Needs an admin
    /// certificate to change anything.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Read a partition's items in sort order (paged).
    Scan(kv::ScanArgs),
    /// Write several items of one partition atomically on each replica.
    Batch(kv::BatchArgs),
    /// Counter keyspaces: add N (default 1).
    Incr(kv::CountArgs),
    /// Counter keyspaces: subtract N (default 1).
    Decr(kv::CountArgs),
    /// Set keyspaces: add members.
    Sadd(kv::MembersArgs),
    /// Set keyspaces: remove members observed by --context C (without it: read first).
    Srem(kv::MembersArgs),
    /// Register keyspaces: write a value (with --context C: replace what that read saw).
    Rset(kv::ValueArgs),
    /// Map keyspaces: write a field's register.
    Hset(kv::FieldValueArgs),
    /// Map keyspaces: add N (negative to subtract) to a field's counter.
    Hincr(kv::FieldIncrArgs),
    /// Map keyspaces: add a member to a field's set.
    Hsadd(kv::FieldValueArgs),
    /// Map keyspaces: remove an observed member from a field's set (without --context:
    /// read first).
    Hsrem(kv::FieldValueArgs),
    /// Map keyspaces: remove a field as observed by --context C (without it: read first).
    Hdel(kv::FieldArgs),
    /// Interactive shell (cqlsh/redis-cli style): siblings, contexts, tracing, status.
    Shell(shell::ShellArgs),
    /// YCSB-style load generator: workloads A-F, closed or open loop, latency histograms.
    Bench(bench::BenchArgs),
    /// Merge `bench --json` reports of several runs (e.g. quorumkv, echo, redis, etcd)
    /// into one markdown table and one plot.
    BenchReport(bench::BenchReportArgs),
    /// Deterministic simulation: replay one seed (`--seed S`) or run a swarm (`--seeds
    /// A..B`) of the whole cluster in one process under seeded faults; exit 0 only when
    /// every seed passes.
    Sim(sim::SimArgs),
    /// Jepsen-style test: a workload against a cluster (local processes, the containers,
    /// or the simulator) while a nemesis injects faults; the history, verdict and plots
    /// are stored under --store. Exit 0 valid, 1 invalid, 2 unknown or crashed.
    Jepsen(jepsen::JepsenArgs),
}

/// `quorumkv aae ...`.
#[derive(Debug, Subcommand)]
pub enum AaeCommand {
    /// Per range the contacted node (`--node`) replicates: replicas, last exchange, last
    /// full compare, keys repaired.
    Status(kv::ClusterArgs),
}

/// `quorumkv cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The layout versions the contacted node holds: members, zones, what each node has
    /// acknowledged and received, transfers, and the changes staged on it.
    Status(kv::ClusterArgs),
    /// Stage: node NAME (already running, e.g. `dev-cluster --add NAME`) joins at ADDR.
    Join(kv::JoinArgs),
    /// Stage: live node NAME hands its data over, then owns nothing.
    Leave(kv::NodeNameArgs),
    /// Stage: dead node NAME is dropped; its ranges re-replicate from the survivors.
    Remove(kv::NodeNameArgs),
    /// What the staged changes would do: ranges and bytes that move, balance after.
    Plan(kv::ClusterArgs),
    /// Apply the staged changes as the next layout version (refused if another commit
    /// from the same version took effect first).
    Commit(kv::ClusterArgs),
    /// Drop the staged changes.
    Abort(kv::ClusterArgs),
}

/// Where the client connection file is when `--cluster` is not given.
fn default_cluster_file() -> PathBuf {
    PathBuf::from("dev-cluster/cluster.toml")
}

/// Run the parsed command.
impl Cli {
    /// Whether the command prints a result and ends (everything but the node and the dev
    /// cluster, which run until stopped).
    pub fn prints_for_a_reader(&self) -> bool {
        !matches!(self.command, Command::Node(_) | Command::DevCluster(_))
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Node(a) => node::run(a),
        Command::DevCluster(a) => devcluster::run(a),
        Command::Certs(a) => certs::run(a),
        Command::Put(a) => kv::put(a),
        Command::Get(a) => kv::get(a),
        Command::Delete(a) => kv::delete(a),
        Command::CreateKeyspace(a) => kv::create_keyspace(a),
        Command::DropKeyspace(a) => kv::drop_keyspace(a),
        Command::Keyspaces(a) => kv::keyspaces(a),
        Command::Status(a) => kv::status(a),
        Command::Replicas(a) => kv::replicas(a),
        Command::Aae {
            command: AaeCommand::Status(a),
        } => kv::aae_status(a),
        Command::Cluster { command } => kv::cluster(command),
        Command::Scan(a) => kv::scan(a),
        Command::Batch(a) => kv::batch(a),
        Command::Incr(a) => kv::incr(a),
        Command::Decr(a) => kv::decr(a),
        Command::Sadd(a) => kv::sadd(a),
        Command::Srem(a) => kv::srem(a),
        Command::Rset(a) => kv::rset(a),
        Command::Hset(a) => kv::hset(a),
        Command::Hincr(a) => kv::hincr(a),
        Command::Hsadd(a) => kv::hsadd(a),
        Command::Hsrem(a) => kv::hsrem(a),
        Command::Hdel(a) => kv::hdel(a),
        Command::Shell(a) => shell::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchReport(a) => bench::report(a),
        Command::Sim(a) => sim::run(a),
        Command::Jepsen(a) => jepsen::run(a),
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
