//! The `local` target: a fresh cluster of node processes on 127.0.0.1, made for one run
//! inside its run directory (configs, certificates, RocksDB data and each node's log), and
//! the nemesis that hurts them the way an operator's bad day would — `kill` (SIGKILL, then
//! a restart from the same data), `pause` (SIGSTOP, then SIGCONT) and `clock-skew` (the
//! node's wall clock moved by an admin request; see [`crate::clock::OffsetClock`]).
//! Loopback has no links to cut, so partitions are the `containers` target's.
//!
//! With the `membership` fault the last node is a *spare*: it starts outside the layout
//! (`cluster.joining = true`; every node's `cluster.nodes` lists the others), and the
//! nemesis grows the layout by it and shrinks it back through an admin client of a node
//! of the layout, as an operator would with `quorumkv cluster join|leave` and `commit`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_like::Value;

use crate::client::{wait_all_answer, Client, ClientError};
use crate::config::{ClusterFile, NodeConfig, StorageConfig, Timeouts};
use crate::inprocess::write_cluster_files;
use crate::membership::layout::{Change, History, Layout};
use crate::proto::{ClientRequest, ClientResponse};

use super::nemesis::{NodeControl, TargetNemesis};
use super::HarnessError;

/// Faults the local target can inject.
pub const FAULTS: [&str; 4] = ["kill", "pause", "clock-skew", "membership"];

/// How long `heal_all` waits for the layout to settle after the spare left: every
/// transfer of the run done and the older versions dropped on every node.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// How often the settle wait asks the nodes again.
const SETTLE_POLL: Duration = Duration::from_millis(500);

struct LocalNode {
    name: String,
    addr: SocketAddr,
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
    /// The node started outside the layout for the `membership` fault (the last one).
    spare: Option<usize>,
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
    /// injection allowed, and start every node as a child process of `exe`. With `spare`,
    /// the last node starts outside the layout (`cluster.joining = true`) and the first
    /// layout is the other nodes (the `membership` fault's spare).
    pub fn start(
        dir: &Path,
        nodes: usize,
        exe: &Path,
        anti_entropy: &crate::config::AntiEntropyConfig,
        spare: bool,
    ) -> Result<LocalCluster, HarnessError> {
        if !(1..=64).contains(&nodes) {
            return Err(err(format!(
                "--nodes must be between 1 and 64 (got {nodes})"
            )));
        }
        if spare && nodes < 2 {
            return Err(err(format!(
                "the membership fault needs --nodes 2 or more: the last node is a spare outside the layout (got {nodes})"
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
            // The default a user gets, so the harness's verdicts cover it.
            overlap_lead_sync: true,
        };
        let (configs, cluster_path) =
            write_cluster_files(dir, &addrs, &[], storage, Timeouts::default())
                .map_err(|e| err(format!("writing the cluster into {}: {e}", dir.display())))?;
        let cluster_file = ClusterFile::load(&cluster_path).map_err(err)?;
        let mut out = LocalCluster {
            exe: exe.to_path_buf(),
            cluster_file,
            nodes: Vec::new(),
            spare: spare.then_some(nodes - 1),
        };
        for (i, cfg) in configs.into_iter().enumerate() {
            let mut cfg: NodeConfig = cfg;
            cfg.faults.allow_clock_offset = true;
            cfg.anti_entropy = anti_entropy.clone();
            if spare {
                // Every node's first layout is the others; the spare joins it only when
                // the nemesis commits its join. The cluster file keeps the spare as a
                // contact point: a node outside the layout still coordinates requests.
                cfg.cluster.nodes.truncate(nodes - 1);
                cfg.cluster.joining = i == nodes - 1;
            }
            let node_dir = dir.join(&cfg.name);
            let path = node_dir.join("node.toml");
            let text = toml::to_string_pretty(&cfg).map_err(err)?;
            std::fs::write(&path, text).map_err(|e| err(format!("{}: {e}", path.display())))?;
            out.nodes.push(LocalNode {
                name: cfg.name.clone(),
                addr: cfg.listen,
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

    /// The spare node of the `membership` fault, if the cluster has one.
    pub fn spare(&self) -> Option<usize> {
        self.spare
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

/// The layout history as `client`'s node holds it (`ClusterStatus`).
pub async fn cluster_history(client: &Client) -> Result<History, String> {
    match client.request(ClientRequest::ClusterStatus).await {
        Ok(ClientResponse::Cluster(r)) => Ok(r.history),
        Ok(other) => Err(format!("unexpected reply to a cluster status: {other:?}")),
        Err(e) => Err(format!("cluster status: {e}")),
    }
}

fn members(l: &Layout) -> Value {
    Value::Vector(l.names().into_iter().map(Value::Str).collect())
}

/// Grow the layout by node `name` at `addr` (`grow`: stage `join`, commit) or shrink it
/// by `name` (stage `leave`, commit), through `admin`, an admin client of a node of the
/// layout. Returns what the history records:
/// `{:change :join, :node "n4", :version 2, :members ["n1" "n2" "n3" "n4"]}`, or
/// `:skipped` with the reason when the layout already is as asked (the stop after a start
/// whose commit failed). A failed stage or commit is the error.
pub async fn change_membership(
    admin: &Client,
    name: &str,
    addr: SocketAddr,
    grow: bool,
) -> Result<Value, String> {
    let kind = if grow { "join" } else { "leave" };
    let history = cluster_history(admin).await?;
    let current = history.current();
    let mut record = vec![
        (Value::kw("change"), Value::kw(kind)),
        (Value::kw("node"), Value::Str(name.to_string())),
    ];
    if current.has(name) == grow {
        let why = format!(
            "{name} is {} a member of layout v{}",
            if grow { "already" } else { "not" },
            current.version
        );
        record.push((Value::kw("skipped"), Value::Str(why)));
        return Ok(Value::Map(record));
    }
    // A commit that failed earlier leaves its change staged on that node; staging on top
    // of it would stack the same change twice.
    admin
        .request(ClientRequest::ClusterAbort)
        .await
        .map_err(|e| format!("dropping changes staged earlier: {e}"))?;
    let change = if grow {
        Change::Join {
            name: name.to_string(),
            addr,
            zone: None,
        }
    } else {
        Change::Leave {
            name: name.to_string(),
        }
    };
    match admin.request(ClientRequest::ClusterStage(change)).await {
        Ok(ClientResponse::Staged(_)) => {}
        Ok(other) => return Err(format!("staging {kind} {name}: unexpected reply {other:?}")),
        Err(e) => return Err(format!("staging {kind} {name}: {e}")),
    }
    match admin.request(ClientRequest::ClusterCommit).await {
        Ok(ClientResponse::Committed(l)) => {
            record.push((Value::kw("version"), Value::Int(l.version as i64)));
            record.push((Value::kw("members"), members(&l)));
            Ok(Value::Map(record))
        }
        Ok(other) => Err(format!(
            "committing {kind} {name}: unexpected reply {other:?}"
        )),
        Err(e) => Err(format!("committing {kind} {name}: {e}")),
    }
}

/// Wait until every node of `nodes` (name, admin client) holds one live layout version,
/// the same one: no data moves and no node still reads from an older layout. Polls every
/// 500 ms for at most `within`; the error names a node still in transition (or silent).
pub async fn wait_settled(
    nodes: &[(String, Arc<Client>)],
    within: Duration,
) -> Result<Value, String> {
    let started = tokio::time::Instant::now();
    loop {
        let mut version = None;
        let mut unsettled = None;
        for (name, client) in nodes {
            match cluster_history(client).await {
                Ok(h) if h.in_transition() => {
                    let versions: Vec<String> =
                        h.live.iter().map(|l| format!("v{}", l.version)).collect();
                    unsettled = Some(format!(
                        "{name} holds live versions {}",
                        versions.join(", ")
                    ));
                }
                Ok(h) => {
                    let l = h.current();
                    match &version {
                        Some((v, _)) if *v != l.version => {
                            unsettled = Some(format!(
                                "{name} holds layout v{} and another node v{v}",
                                l.version
                            ))
                        }
                        Some(_) => {}
                        None => version = Some((l.version, members(l))),
                    }
                }
                Err(e) => unsettled = Some(format!("{name}: {e}")),
            }
            if unsettled.is_some() {
                break;
            }
        }
        let elapsed = started.elapsed();
        match (unsettled, version) {
            (None, Some((v, m))) => {
                return Ok(Value::Map(vec![
                    (
                        Value::kw("settled-ms"),
                        Value::Int(elapsed.as_millis() as i64),
                    ),
                    (Value::kw("version"), Value::Int(v as i64)),
                    (Value::kw("members"), m),
                ]))
            }
            (None, None) => return Err("no node to ask about the layout".into()),
            (Some(why), _) if elapsed >= within => {
                return Err(format!(
                    "the layout did not settle within {} s: {why}",
                    within.as_secs()
                ))
            }
            (Some(_), _) => tokio::time::sleep(SETTLE_POLL.min(within - elapsed)).await,
        }
    }
}

/// What the local target can do to its nodes: signals to the processes, the clock
/// offset through each node's admin client, and layout changes of its spare node.
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

    /// The spare's index, and the first running node of the layout to ask (never the
    /// spare: the commit's proposer must be a member).
    fn spare_and_admin(&self) -> Result<(usize, usize), String> {
        let c = self.cluster();
        let spare = c.spare().ok_or(
            "this local cluster has no spare node: it was started without the membership fault",
        )?;
        let admin = (0..c.nodes.len())
            .find(|&i| i != spare && c.is_up(i))
            .ok_or("no node of the layout is running to commit the change")?;
        Ok((spare, admin))
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

    async fn change_membership(&mut self, grow: bool) -> Result<Value, String> {
        let (spare, admin) = self.spare_and_admin()?;
        let (name, addr) = {
            let c = self.cluster();
            (c.nodes[spare].name.clone(), c.nodes[spare].addr)
        };
        change_membership(&self.admins[admin], &name, addr, grow).await
    }

    async fn settle_membership(&mut self) -> Result<Value, String> {
        // Every node, the spare included: it coordinates some clients' final reads, so
        // it must have dropped the older versions too.
        let nodes: Vec<(String, Arc<Client>)> = {
            let c = self.cluster();
            (0..c.nodes.len())
                .filter(|&i| c.is_up(i))
                .map(|i| (c.nodes[i].name.clone(), Arc::clone(&self.admins[i])))
                .collect()
        };
        wait_settled(&nodes, SETTLE_WITHIN).await
    }
}

/// The local target's nemesis.
pub type LocalNemesis = TargetNemesis<LocalControl>;
