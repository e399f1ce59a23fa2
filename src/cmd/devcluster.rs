//! `quorumkv dev-cluster`: a local cluster on 127.0.0.1, each node its own OS process.
//!
//! First run: certificates, node configs and `cluster.toml` are written under `--dir`.
//! Later runs with the same directory reuse them, so data survives restarts. A node that
//! dies stays down (faults must be testable); the printed command brings it back.
//!
//! `--add NAME` starts one more node beside a running cluster, outside its layout
//! (`cluster.joining = true`), so layout changes can be tried locally: the operator then
//! stages `quorumkv cluster join` and commits. The node is added to `cluster.toml`'s
//! contact points, which is also how later runs of the whole cluster find it.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use quorumkv::client::{wait_all_answer, Client, ClientError};
use quorumkv::config::{ClusterFile, Member, NodeConfig, StorageConfig, Timeouts};
use quorumkv::inprocess::write_cluster_files;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::membership::layout::History;
use quorumkv::proto::{ClientRequest, ClientResponse};
use quorumkv::tls::{self, Role};

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
    /// Nodes do not overlap their fsync as a write's lead with replication
    /// (`storage.overlap_lead_sync = false`; on by default).
    #[arg(long)]
    no_overlap_lead_sync: bool,
    /// Exit after the nodes answer instead of waiting for Ctrl-C (nodes keep running;
    /// stop them with the pids in DIR/<node>/pid).
    #[arg(long)]
    detach: bool,
    /// Start one more node NAME beside the cluster already running in --dir, outside its
    /// layout (ready for `quorumkv cluster join`), and add it to DIR/cluster.toml. It runs
    /// detached, on the next free port after the cluster's.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with_all = ["nodes", "base_port", "n", "r", "w", "no_sync", "no_overlap_lead_sync", "detach"]
    )]
    add: Option<String>,
    /// Zone of the node --add starts (needed when the cluster's members have zones).
    #[arg(long, requires = "add")]
    zone: Option<String>,
}

struct Proc {
    name: String,
    child: Child,
    config: PathBuf,
    pid_file: PathBuf,
    running: bool,
}

pub fn run(a: DevClusterArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &a.add {
        return add(&a.dir, name, a.zone.as_deref());
    }
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
    // Every check before any start: a refusal must not leave the nodes before it running.
    for config in &configs {
        let (name, node_dir) = node_of(config);
        let pid_file = node_dir.join("pid");
        if let Some(pid) = live_pid(&pid_file) {
            bail!(
                "node {name} already runs as pid {pid} (from {}); stop it first",
                pid_file.display()
            );
        }
    }
    let mut procs = Vec::new();
    for config in &configs {
        let (name, node_dir) = node_of(config);
        let started = spawn_node(&exe, config, &node_dir, &name);
        let child = match started {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut procs);
                return Err(e);
            }
        };
        procs.push(Proc {
            name,
            child,
            config: config.clone(),
            pid_file: node_dir.join("pid"),
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
        overlap_lead_sync: !a.no_overlap_lead_sync,
    };
    let (cfgs, _) = write_cluster_files(dir, &addrs, &[ks], storage, Timeouts::default())?;
    println!("created a {nodes}-node cluster in {}", dir.display());
    Ok(cfgs
        .iter()
        .map(|c| dir.join(&c.name).join("node.toml"))
        .collect())
}

/// `--add NAME`: one more node beside the cluster running in `dir`, outside its layout
/// (`cluster.joining = true`), started detached and added to the contact points.
fn add(dir: &Path, name: &str, zone: Option<&str>) -> anyhow::Result<ExitCode> {
    check_node_name(name)?;
    if zone.is_some_and(|z| z.trim().is_empty()) {
        bail!("--zone is empty");
    }
    let dir = absolute(dir)?;
    let cluster_file = dir.join("cluster.toml");
    if !cluster_file.exists() {
        bail!(
            "{} holds no dev cluster (no cluster.toml); create and start one first with `quorumkv dev-cluster --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    let cf = ClusterFile::load(&cluster_file)?;
    if cf.contact_points.iter().any(|m| m.name == name) {
        bail!(
            "{name} is already a node of the cluster in {} (a contact point in {})",
            dir.display(),
            cluster_file.display()
        );
    }
    let node_dir = dir.join(name);
    if node_dir.exists() {
        bail!(
            "{} already exists: the name {name} is taken in this cluster; pick another",
            node_dir.display()
        );
    }
    // Every node of a dev cluster has the same settings; the first contact point's config
    // is the template (its `cluster.nodes` are the first layout's members, which a joining
    // node lists too).
    let template_path = dir.join(&cf.contact_points[0].name).join("node.toml");
    let template = NodeConfig::load(&template_path)
        .with_context(|| format!("reading the template config {}", template_path.display()))?;
    let certs = template
        .tls
        .ca_cert
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for ext in ["pem", "key"] {
        let f = certs.join(format!("{name}.{ext}"));
        if f.exists() {
            bail!(
                "{} exists: the name {name} is taken by another identity of this cluster (the CA, the admin, a client or a node); pick another",
                f.display()
            );
        }
    }

    let rt = super::runtime()?;
    let history = rt
        .block_on(current_history(&cf))
        .with_context(|| {
            format!(
                "the cluster in {} does not answer; start it first with `quorumkv dev-cluster --dir {}`",
                dir.display(),
                dir.display()
            )
        })?;
    let current = history.current();
    if history.is_member(name) {
        bail!(
            "{name} is already a member of the cluster's layout v{}",
            current.version
        );
    }
    let zoned = current.members.iter().any(|m| m.zone.is_some());
    match (zoned, zone) {
        (true, None) => bail!(
            "the cluster's members have zones: give {name} one with --zone (a layout's members have a zone each, or none)"
        ),
        (false, Some(z)) => bail!(
            "the cluster's members have no zones, so --zone {z} could not be joined (a layout's members have a zone each, or none)"
        ),
        _ => {}
    }

    let mut in_use: Vec<u16> = cf.contact_points.iter().map(|m| m.addr.port()).collect();
    in_use.extend(history.everyone().iter().map(|m| m.addr.port()));
    let addr = free_port_after(in_use.into_iter().max().unwrap_or(7100))?;

    // From here on, files are written: a failure removes them again, so a retry starts clean.
    let created = Created {
        node_dir: node_dir.clone(),
        cert_files: vec![
            certs.join(format!("{name}.pem")),
            certs.join(format!("{name}.key")),
        ],
    };
    let config = match write_node_config(&template, &certs, &node_dir, name, addr) {
        Ok(c) => c,
        Err(e) => {
            created.remove();
            return Err(e);
        }
    };
    let exe = std::env::current_exe().context("locating the quorumkv binary")?;
    let mut child = match spawn_node(&exe, &config, &node_dir, name) {
        Ok(c) => c,
        Err(e) => {
            created.remove();
            return Err(e);
        }
    };
    let member = Member {
        name: name.to_string(),
        addr,
        zone: zone.map(str::to_string),
    };
    let answered = rt.block_on(wait_answers(&cf, &member, &mut child));
    let appended = answered.and_then(|()| append_contact_point(&cluster_file, &member));
    if let Err(e) = appended {
        stop_child(&mut child);
        let log = std::fs::read_to_string(node_dir.join("node.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        created.remove();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(e.context(format!(
            "node {name} was stopped and its files removed; the end of its log:\n{}",
            tail.join("\n")
        )));
    }

    let exe = exe.display();
    let flag = if cluster_file == absolute(&super::default_cluster_file())? {
        String::new()
    } else {
        format!(" --cluster {}", cluster_file.display())
    };
    let zone_flag = zone.map(|z| format!(" --zone {z}")).unwrap_or_default();
    println!(
        "node {name} runs as pid {} (udp {addr}, log {}), outside the layout v{}: it owns nothing yet.",
        child.id(),
        node_dir.join("node.log").display(),
        current.version
    );
    if let Some(m) = NodeConfig::load(&config)
        .ok()
        .and_then(|c| c.metrics_listen)
    {
        println!("  metrics http://{m}/metrics");
    }
    println!();
    println!("Make it a member (stage the join, check what moves, commit):");
    println!("  {exe} cluster join {name} {addr}{zone_flag}{flag}");
    println!("  {exe} cluster plan{flag}");
    println!("  {exe} cluster commit{flag}");
    println!();
    println!(
        "It runs on its own, not under a running `dev-cluster` (stop it with `kill $(cat {}/pid)`); `{exe} dev-cluster --dir {}` starts it with the others from now on.",
        node_dir.display(),
        dir.display()
    );
    // Dropping a `Child` neither kills nor waits for it: the node outlives this command.
    Ok(ExitCode::SUCCESS)
}

/// What `--add` wrote, removed again when it fails.
struct Created {
    node_dir: PathBuf,
    cert_files: Vec<PathBuf>,
}

impl Created {
    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.node_dir);
        for f in &self.cert_files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A node name is a directory under `--dir`, a certificate's DNS name and file name, and
/// a layout member's name: so letters, digits and `-` only (no `.`, `/` or spaces), not
/// starting with `-`, at most 63 characters (a DNS label).
fn check_node_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        bail!(
            "{name:?} is not a valid node name: use 1 to 63 ASCII letters, digits and '-', not starting with '-'"
        );
    }
    Ok(())
}

/// The layout history the running cluster holds (any contact point that answers).
async fn current_history(cf: &ClusterFile) -> anyhow::Result<History> {
    let client = Client::new(cf)?;
    let reply = client.request(ClientRequest::ClusterStatus).await;
    client.close().await;
    match reply? {
        ClientResponse::Cluster(report) => Ok(report.history),
        other => bail!("unexpected reply to a cluster status request: {other:?}"),
    }
}

/// The first loopback port after `highest` free for both the node's QUIC endpoint (UDP)
/// and its metrics endpoint (TCP, same number as the other nodes use).
fn free_port_after(highest: u16) -> anyhow::Result<SocketAddr> {
    for port in (highest as u32 + 1..=u16::MAX as u32).take(100) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    bail!("no free loopback port (UDP and TCP) among the 100 after {highest}")
}

/// Issue `name`'s node certificate and write `node_dir/node.toml`: `template`'s settings,
/// its own name, address and identity, and `joining = true`. Returns the config's path.
fn write_node_config(
    template: &NodeConfig,
    certs: &Path,
    node_dir: &Path,
    name: &str,
    addr: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let ids = tls::issue(
        certs,
        name,
        Role::Node,
        &[addr.ip()],
        tls::DEFAULT_VALIDITY_DAYS,
    )?;
    std::fs::create_dir_all(node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let mut cfg = template.clone();
    cfg.name = name.to_string();
    cfg.listen = addr;
    cfg.data_dir = node_dir.join("data");
    cfg.tls.cert = ids.cert;
    cfg.tls.key = ids.key;
    // As the others do (`write_cluster_files`): the QUIC port's number, on TCP.
    cfg.metrics_listen = template.metrics_listen.map(|_| addr);
    cfg.cluster.joining = true;
    cfg.validate()?;
    let path = node_dir.join("node.toml");
    std::fs::write(&path, toml::to_string_pretty(&cfg)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Wait (at most 30 s) until the new node answers a ping as `member.name`; fails at once
/// if its process ends.
async fn wait_answers(cf: &ClusterFile, member: &Member, child: &mut Child) -> anyhow::Result<()> {
    let one = ClusterFile {
        contact_points: vec![member.clone()],
        timeout_ms: 1000,
        ..cf.clone()
    };
    let client = Client::new(&one)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!("node {} exited ({status})", member.name));
        }
        match client.ping().await {
            Ok(n) if n == member.name => break Ok(()),
            Ok(n) => {
                break Err(anyhow::anyhow!(
                    "{} answered as {n}, not {}",
                    member.addr,
                    member.name
                ))
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => {
                break Err(anyhow::anyhow!(
                    "node {} did not answer within 30 s: {e}",
                    member.name
                ))
            }
        }
    };
    client.close().await;
    result
}

/// Add `member` to the contact points of `cluster_file`, keeping the rest of the file as
/// written (paths stay as they are; replaced in one rename, so a crash leaves the old file).
fn append_contact_point(cluster_file: &Path, member: &Member) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(cluster_file)
        .with_context(|| format!("reading {}", cluster_file.display()))?;
    let mut cf: ClusterFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", cluster_file.display()))?;
    cf.contact_points.push(member.clone());
    let tmp = cluster_file.with_extension("toml.tmp");
    std::fs::write(&tmp, toml::to_string_pretty(&cf)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, cluster_file)
        .with_context(|| format!("replacing {}", cluster_file.display()))?;
    Ok(())
}

/// SIGTERM, then SIGKILL after 5 s.
fn stop_child(child: &mut Child) {
    terminate(child);
    reap(child, Instant::now() + Duration::from_secs(5));
}

/// Ask a node to stop (SIGTERM: it closes its storage and endpoint).
fn terminate(child: &Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Wait for a node asked to stop until `deadline`, then kill it (SIGKILL).
fn reap(child: &mut Child, deadline: Instant) {
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A node's name and directory, from its config path `DIR/<name>/node.toml`.
fn node_of(config: &Path) -> (String, PathBuf) {
    let node_dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = node_dir
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    (name, node_dir)
}

/// Start `quorumkv node` for `config` as a process of its own, logging to
/// `node_dir/node.log` and keeping its pid in `node_dir/pid`.
fn spawn_node(exe: &Path, config: &Path, node_dir: &Path, name: &str) -> anyhow::Result<Child> {
    let pid_file = node_dir.join("pid");
    let log = std::fs::File::create(node_dir.join("node.log"))?;
    let child = Command::new(exe)
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
    // Written here too, so the pid is known at once (the node writes it once it runs).
    std::fs::write(&pid_file, child.id().to_string())?;
    Ok(child)
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
        terminate(&p.child);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in procs.iter_mut() {
        reap(&mut p.child, deadline);
        // A node restarted by hand after it died owns the pid file now; leave that one.
        let ours = std::fs::read_to_string(&p.pid_file)
            .map(|s| s.trim() == p.child.id().to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&p.pid_file);
        }
    }
}
