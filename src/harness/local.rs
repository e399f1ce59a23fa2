//! The `local` target: a fresh cluster of node processes on 127.0.0.1, made for one run
//! inside its run directory (configs, certificates, RocksDB data and each node's log), and
//! the nemesis that hurts them the way an operator's bad day would — `kill` (SIGKILL, then
//! a restart from the same data), `pause` (SIGSTOP, then SIGCONT) and `clock-skew` (the
//! node's wall clock moved by an admin request; see [`crate::clock::OffsetClock`]).
//! Loopback has no links to cut, so partitions are the `containers` target's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_like::Value;

use crate::client::{wait_all_answer, Client, ClientError};
use crate::config::{ClusterFile, NodeConfig, StorageConfig, Timeouts};
use crate::inprocess::write_cluster_files;

use super::nemesis::{NodeControl, TargetNemesis};
use super::HarnessError;

/// Faults the local target can inject.
pub const FAULTS: [&str; 3] = ["kill", "pause", "clock-skew"];

struct LocalNode {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The node processes of one run.
pub struct LocalCluster {
    exe: PathBuf,
    cluster_file: ClusterFile,
    nodes: Vec<LocalNode>,
}

fn err(what: impl std::fmt::Display) -> HarnessError {
    HarnessError::Cluster(what.to_string())
}

/// A port free on 127.0.0.1 for both UDP (QUIC) and TCP (metrics, same number).
fn free_port(taken: &[u16]) -> Result<u16, HarnessError> {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").map_err(err)?;
        let port = udp.local_addr().map_err(err)?.port();
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(err("no free port found on 127.0.0.1 after 100 tries"))
}

impl LocalCluster {
    /// Write a `nodes`-node cluster into `dir` (which must not hold one) with fault
    /// injection allowed, and start every node as a child process of `exe`.
    pub fn start(
        dir: &Path,
        nodes: usize,
        exe: &Path,
        anti_entropy: &crate::config::AntiEntropyConfig,
    ) -> Result<LocalCluster, HarnessError> {
        if !(1..=64).contains(&nodes) {
            return Err(err(format!(
                "--nodes must be between 1 and 64 (got {nodes})"
            )));
        }
        let mut ports = Vec::new();
        for _ in 0..nodes {
            let p = free_port(&ports)?;
            ports.push(p);
        }
        let addrs: Vec<SocketAddr> = ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        let storage = StorageConfig {
            engine: "rocksdb".into(),
            sync: true,
        };
        let (configs, cluster_path) =
            write_cluster_files(dir, &addrs, &[], storage, Timeouts::default())
                .map_err(|e| err(format!("writing the cluster into {}: {e}", dir.display())))?;
        let cluster_file = ClusterFile::load(&cluster_path).map_err(err)?;
        let mut out = LocalCluster {
            exe: exe.to_path_buf(),
            cluster_file,
            nodes: Vec::new(),
        };
        for cfg in configs {
            let mut cfg: NodeConfig = cfg;
            cfg.faults.allow_clock_offset = true;
            cfg.anti_entropy = anti_entropy.clone();
            let node_dir = dir.join(&cfg.name);
            let path = node_dir.join("node.toml");
            let text = toml::to_string_pretty(&cfg).map_err(err)?;
            std::fs::write(&path, text).map_err(|e| err(format!("{}: {e}", path.display())))?;
            out.nodes.push(LocalNode {
                name: cfg.name.clone(),
                config: path,
                log: node_dir.join("node.log"),
                child: None,
                paused: false,
            });
        }
        for i in 0..out.nodes.len() {
            out.spawn(i)?;
        }
        Ok(out)
    }

    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let n = &mut self.nodes[i];
        // Appended: a restarted node's log follows its earlier life.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(|e| err(format!("{}: {e}", n.log.display())))?;
        let log2 = log.try_clone().map_err(err)?;
        let child = Command::new(&self.exe)
            .arg("node")
            .arg("--config")
            .arg(&n.config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err(format!("starting node {}: {e}", n.name)))?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    /// The client connection file (admin certificate, every node a contact point).
    pub fn cluster_file(&self) -> &ClusterFile {
        &self.cluster_file
    }

    /// The nodes' names.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The nodes' log files.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.log.clone()).collect()
    }

    fn pid(&self, i: usize) -> Option<i32> {
        self.nodes[i].child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, i: usize, sig: i32) -> Result<(), HarnessError> {
        let pid = self
            .pid(i)
            .ok_or_else(|| err(format!("node {} is not running", self.nodes[i].name)))?;
        // SAFETY-free: kill(2) with a pid we spawned and still own (not yet reaped).
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(err(format!(
                "signal {sig} to {} (pid {pid}): {}",
                self.nodes[i].name,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, libc::SIGKILL)?;
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.wait();
        }
        self.nodes[i].paused = false;
        Ok(())
    }

    /// Start node `i` again if it is not running.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.nodes[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) node `i`.
    pub fn pause(&mut self, i: usize, pause: bool) -> Result<(), HarnessError> {
        self.signal(i, if pause { libc::SIGSTOP } else { libc::SIGCONT })?;
        self.nodes[i].paused = pause;
        Ok(())
    }

    /// Whether node `i` runs and is not paused.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() && !self.nodes[i].paused
    }

    /// A client whose only contact point is node `i`.
    pub fn client_for(&self, i: usize) -> Result<Arc<Client>, HarnessError> {
        client_for(&self.cluster_file, &self.nodes[i].name)
    }

    /// Stop every node: resume paused ones, SIGTERM, and SIGKILL what is left after 10 s.
    pub fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                let _ = self.pause(i, false);
            }
            let _ = self.signal(i, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        _ => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl Drop for LocalCluster {
    /// Never leave node processes behind, whatever ended the run.
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client of `cf`'s cluster whose only contact point is `node`.
pub fn client_for(cf: &ClusterFile, node: &str) -> Result<Arc<Client>, HarnessError> {
    let one = cf
        .only(node)
        .ok_or_else(|| err(format!("no node {node} in the cluster file")))?;
    Client::new(&one).map_err(|e| err(format!("client for {node}: {e}")))
}

/// Wait until every contact point of `cf` answers a ping.
pub async fn wait_ready(
    cf: &ClusterFile,
    within: Duration,
    logs: &[PathBuf],
) -> Result<(), HarnessError> {
    wait_all_answer(cf, within).await.map_err(|e| match e {
        ClientError::Silent { node, within } => err(format!(
            "node {node} did not answer within {} s (logs: {})",
            within.as_secs(),
            logs.iter()
                .map(|l| l.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        other => err(other),
    })
}

/// Move `node`'s clock through `client` (its only contact point).
pub async fn set_clock(client: &Client, ms: i64) -> Result<Value, String> {
    client
        .set_clock_offset(ms)
        .await
        .map(|(node, ms)| Value::Vector(vec![Value::Str(node), Value::Int(ms)]))
        .map_err(|e| e.to_string())
}

/// What the local target can do to its nodes: signals to the processes, and the clock
/// offset through each node's admin client.
pub struct LocalControl {
    cluster: Arc<Mutex<LocalCluster>>,
    admins: Vec<Arc<Client>>,
}

impl LocalControl {
    /// The control of `cluster`'s nodes.
    pub fn new(cluster: Arc<Mutex<LocalCluster>>) -> Result<Self, HarnessError> {
        let admins = {
            let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
            (0..c.nodes.len())
                .map(|i| c.client_for(i))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(LocalControl { cluster, admins })
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, LocalCluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NodeControl for LocalControl {
    fn target(&self) -> &'static str {
        "local"
    }

    fn supported(&self) -> &'static [&'static str] {
        &FAULTS
    }

    fn names(&self) -> Vec<String> {
        self.cluster().names()
    }

    async fn kill(&mut self, i: usize) -> Result<(), String> {
        self.cluster().kill(i).map_err(|e| e.to_string())
    }

    async fn restart(&mut self, i: usize) -> Result<(), String> {
        self.cluster().restart(i).map_err(|e| e.to_string())
    }

    async fn pause(&mut self, i: usize, pause: bool) -> Result<(), String> {
        self.cluster().pause(i, pause).map_err(|e| e.to_string())
    }

    async fn set_clock(&mut self, i: usize, ms: i64) -> Result<Value, String> {
        set_clock(&self.admins[i], ms).await
    }

    async fn partition(&mut self, shape: &str, _order: Vec<usize>) -> Result<Value, String> {
        Err(format!(
            "the local target cannot partition (partition-{shape}): loopback has no links to cut; use --target containers or sim"
        ))
    }

    async fn heal_partition(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The local target's nemesis.
pub type LocalNemesis = TargetNemesis<LocalControl>;
