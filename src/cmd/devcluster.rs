//! `quorumkv dev-cluster`: a local cluster on 127.0.0.1, each node its own OS process.
//!
//! First run: certificates, node configs and `cluster.toml` are written under `--dir`.
//! Later runs with the same directory reuse them, so data survives restarts. A node that
//! dies stays down (faults must be testable); the printed command brings it back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use quorumkv::client::{wait_all_answer, ClientError};
use quorumkv::config::{ClusterFile, NodeConfig, StorageConfig, Timeouts};
use quorumkv::inprocess::write_cluster_files;
use quorumkv::keyspace::KeyspaceDef;

#[derive(Debug, Args)]
pub struct DevClusterArgs {
    /// Number of nodes (ignored when --dir already holds a cluster).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Directory for certificates, configs, data, logs and pid files.
    #[arg(long, default_value = "dev-cluster")]
    dir: PathBuf,
    /// UDP port of n1; n2 uses the next one, and so on.
    #[arg(long, default_value_t = 7101)]
    base_port: u16,
    /// Replicas per key of the `default` keyspace (default: min(3, nodes)).
    #[arg(long)]
    n: Option<u8>,
    /// Read quorum of the `default` keyspace (default: n/2+1).
    #[arg(long)]
    r: Option<u8>,
    /// Write quorum of the `default` keyspace (default: n/2+1).
    #[arg(long)]
    w: Option<u8>,
    /// Disable fsync of the write-ahead log (faster; unsafe on power loss).
    #[arg(long)]
    no_sync: bool,
    /// Exit after the nodes answer instead of waiting for Ctrl-C (nodes keep running;
    /// stop them with the pids in DIR/<node>/pid).
    #[arg(long)]
    detach: bool,
}

struct Proc {
    name: String,
    child: Child,
    config: PathBuf,
    pid_file: PathBuf,
    running: bool,
}

pub fn run(a: DevClusterArgs) -> anyhow::Result<ExitCode> {
    if a.nodes == 0 || a.nodes > 64 {
        bail!("--nodes must be between 1 and 64 (got {})", a.nodes);
    }
    let dir = absolute(&a.dir)?;
    let cluster_file = dir.join("cluster.toml");
    let configs: Vec<PathBuf> = if cluster_file.exists() {
        let cf = ClusterFile::load(&cluster_file)?;
        println!(
            "reusing the cluster in {} ({} nodes)",
            dir.display(),
            cf.contact_points.len()
        );
        cf.contact_points
            .iter()
            .map(|m| dir.join(&m.name).join("node.toml"))
            .collect()
    } else {
        create(&a, &dir)?
    };
    for c in &configs {
        NodeConfig::load(c).with_context(|| format!("config {}", c.display()))?;
    }
    let exe = std::env::current_exe().context("locating the quorumkv binary")?;
    let mut procs = Vec::new();
    for config in &configs {
        let node_dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = node_dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let pid_file = node_dir.join("pid");
        if let Some(pid) = live_pid(&pid_file) {
            bail!(
                "node {name} already runs as pid {pid} (from {}); stop it first",
                pid_file.display()
            );
        }
        let log = std::fs::File::create(node_dir.join("node.log"))?;
        let child = Command::new(&exe)
            .arg("node")
            .arg("--config")
            .arg(config)
            .arg("--pid-file")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {name}"))?;
        std::fs::write(&pid_file, child.id().to_string())?;
        procs.push(Proc {
            name,
            child,
            config: config.clone(),
            pid_file,
            running: true,
        });
    }
    let rt = super::runtime()?;
    let ready = rt.block_on(wait_ready(&cluster_file, &procs));
    if let Err(e) = ready {
        stop_all(&mut procs);
        return Err(e);
    }
    print_banner(&dir, &cluster_file, &procs);
    if a.detach {
        // Dropping a `Child` neither kills nor waits for it: the nodes outlive this command.
        return Ok(ExitCode::SUCCESS);
    }
    rt.block_on(supervise(&mut procs))?;
    println!("stopping nodes...");
    stop_all(&mut procs);
    println!(
        "stopped. Data stays in {}; run the same command to start again.",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn create(a: &DevClusterArgs, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let nodes = a.nodes;
    let n = a.n.unwrap_or(nodes.min(3) as u8);
    let quorum = n / 2 + 1;
    let ks = KeyspaceDef::new("default", n, a.r.unwrap_or(quorum), a.w.unwrap_or(quorum));
    ks.validate(nodes).context("the default keyspace")?;
    let last = a.base_port as usize + nodes - 1;
    if last > u16::MAX as usize {
        bail!(
            "--base-port {} leaves no room for {nodes} nodes",
            a.base_port
        );
    }
    let addrs: Vec<SocketAddr> = (0..nodes)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], a.base_port + i as u16)))
        .collect();
    let storage = StorageConfig {
        engine: "rocksdb".into(),
        sync: !a.no_sync,
    };
    let (cfgs, _) = write_cluster_files(dir, &addrs, &[ks], storage, Timeouts::default())?;
    println!("created a {nodes}-node cluster in {}", dir.display());
    Ok(cfgs
        .iter()
        .map(|c| dir.join(&c.name).join("node.toml"))
        .collect())
}

/// The pid in `file` if that process is alive.
fn live_pid(file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    // Signal 0 checks existence without sending anything.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

async fn wait_ready(cluster_file: &Path, procs: &[Proc]) -> anyhow::Result<()> {
    let cf = ClusterFile::load(cluster_file)?;
    match wait_all_answer(&cf, Duration::from_secs(30)).await {
        Err(ClientError::Silent { node, .. }) => {
            let log = procs
                .iter()
                .find(|p| p.name == node)
                .map(|p| p.config.with_file_name("node.log"));
            bail!(
                "node {node} did not answer within 30 s; see {}",
                log.map(|l| l.display().to_string()).unwrap_or_default()
            );
        }
        other => Ok(other?),
    }
}

fn print_banner(dir: &Path, cluster_file: &Path, procs: &[Proc]) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "quorumkv".into());
    println!();
    println!("quorumkv dev cluster is up:");
    for p in procs {
        let addr = NodeConfig::load(&p.config)
            .map(|c| c.listen.to_string())
            .unwrap_or_default();
        println!(
            "  {:<4} pid {:<8} udp {:<16} log {}",
            p.name,
            p.child.id(),
            addr,
            p.config.with_file_name("node.log").display()
        );
        if let Ok(Some(m)) = NodeConfig::load(&p.config).map(|c| c.metrics_listen) {
            println!("       metrics http://{m}/metrics");
        }
    }
    let c = cluster_file.display();
    println!();
    println!("Talk to it (any node can coordinate any request):");
    println!("  {exe} put --cluster {c} user:1 alice");
    println!("  {exe} get --cluster {c} user:1");
    println!("  {exe} status --cluster {c}");
    println!(
        "Kill a node with `kill -9 $(cat {}/n2/pid)`; it stays down. Bring it back with:",
        dir.display()
    );
    println!(
        "  {exe} node --config {}/n2/node.toml --pid-file {}/n2/pid",
        dir.display(),
        dir.display()
    );
    println!("Press Ctrl-C to stop the cluster.");
}

async fn supervise(procs: &mut [Proc]) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tick.tick() => {
                for p in procs.iter_mut().filter(|p| p.running) {
                    if let Ok(Some(status)) = p.child.try_wait() {
                        p.running = false;
                        println!("node {} exited ({status}); it stays down. Restart it with: quorumkv node --config {} --pid-file {}",
                            p.name, p.config.display(), p.pid_file.display());
                    }
                }
            }
        }
    }
}

fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter().filter(|p| p.running) {
        unsafe {
            libc::kill(p.child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in procs.iter_mut() {
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // A node restarted by hand after it died owns the pid file now; leave that one.
        let ours = std::fs::read_to_string(&p.pid_file)
            .map(|s| s.trim() == p.child.id().to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&p.pid_file);
        }
    }
}
