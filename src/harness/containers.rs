//! The `containers` target: the five-node compose cluster of `cluster/` (one container per
//! node on a private bridge network), brought up by `scripts/cluster-up.sh`, and its
//! nemesis, which drives the same scripts an operator uses: `scripts/nodes.sh` for `kill`
//! and `pause`, `scripts/netsplit.sh` for the partitions (iptables rules inside the
//! containers, as Jepsen makes them), and the nodes' admin clock offset for `clock-skew`
//! (containers share the host's kernel clock and may not set it).
//!
//! The cluster outlives a run (its RocksDB volumes too), so each run creates a keyspace
//! of its own; every fault is healed before the final reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jepsen_like::Value;

use crate::client::Client;
use crate::config::ClusterFile;

use super::local::{client_for, set_clock, skew_ms, wait_ready};
use super::HarnessError;

/// Faults the containers target can inject.
pub const FAULTS: [&str; 8] = [
    "kill",
    "pause",
    "clock-skew",
    "partition-halves",
    "partition-majorities-ring",
    "partition-bridge",
    "partition-one",
    "partition-oneway",
];

fn err(what: impl std::fmt::Display) -> HarnessError {
    HarnessError::Cluster(what.to_string())
}

/// The compose cluster, as the harness uses it.
pub struct Containers {
    root: PathBuf,
    cluster_file: ClusterFile,
}

/// Run one of the repository's scripts; its output on failure.
async fn script(root: &Path, name: &str, args: &[String]) -> Result<String, String> {
    script_with(root, name, args, None).await
}

/// [`script`], with `QKV_BIN` (the binary the cluster scripts use) set to `bin`.
async fn script_with(
    root: &Path,
    name: &str,
    args: &[String],
    bin: Option<&Path>,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("bash");
    if let Some(bin) = bin {
        cmd.env("QKV_BIN", bin);
    }
    let out = cmd
        .arg(root.join("scripts").join(name))
        .args(args)
        .current_dir(root)
        .output()
        .await
        .map_err(|e| format!("running scripts/{name}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "scripts/{name} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Containers {
    /// Bring the cluster up (building the image from `exe`, the binary running now) with
    /// clock offsets allowed, restarting the nodes if they run without them.
    pub async fn up(root: &Path, exe: &Path) -> Result<Containers, HarnessError> {
        if !root.join("scripts/cluster-up.sh").exists() {
            return Err(err(format!(
                "{} is not a quorumkv checkout (no scripts/cluster-up.sh); pass --repo",
                root.display()
            )));
        }
        let args = ["--no-build".to_string(), "--allow-clock-offset".to_string()];
        script_with(root, "cluster-up.sh", &args, Some(exe))
            .await
            .map_err(err)?;
        let path = root.join("cluster/run/cluster.toml");
        let cluster_file =
            ClusterFile::load(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let c = Containers {
            root: root.to_path_buf(),
            cluster_file,
        };
        // Containers started before `--allow-clock-offset` was written keep their old
        // config until they restart.
        let first = &c.cluster_file.contact_points[0].name;
        let admin = client_for(&c.cluster_file, first)?;
        if let Err(e) = admin.set_clock_offset(0).await {
            if e.to_string().contains("does not allow clock offsets") {
                script(root, "nodes.sh", &["restart".into(), "all".into()])
                    .await
                    .map_err(err)?;
            }
        }
        wait_ready(&c.cluster_file, Duration::from_secs(90), &[]).await?;
        Ok(c)
    }

    /// The client connection file (admin certificate).
    pub fn cluster_file(&self) -> &ClusterFile {
        &self.cluster_file
    }

    /// The nodes' names.
    pub fn names(&self) -> Vec<String> {
        self.cluster_file
            .contact_points
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// Copy each node's container log (since `since_unix_s`) into `dir/<node>.log`.
    pub async fn collect_logs(&self, dir: &Path, since_unix_s: u64) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for n in self.names() {
            let path = dir.join(format!("{n}.log"));
            let logs = tokio::process::Command::new("docker")
                .args([
                    "logs",
                    "--since",
                    &since_unix_s.to_string(),
                    &format!("qkv-{n}"),
                ])
                .output()
                .await;
            if let Ok(o) = logs {
                let mut text = o.stdout;
                text.extend_from_slice(&o.stderr);
                if std::fs::write(&path, text).is_ok() {
                    out.push(path);
                }
            }
        }
        out
    }
}

/// The containers target's nemesis. Node faults hurt one node not already hurt; a
/// partition replaces any other partition (netsplit.sh's rule), so at most one is active.
pub struct ContainersNemesis {
    root: PathBuf,
    names: Vec<String>,
    admins: Vec<Arc<Client>>,
    killed: Vec<usize>,
    paused: Vec<usize>,
    skewed: Vec<usize>,
    partitioned: bool,
}

impl ContainersNemesis {
    /// A nemesis over `c`; refuses faults the target cannot inject.
    pub fn new(c: &Containers, faults: &[String]) -> Result<Self, HarnessError> {
        for f in faults {
            if !FAULTS.contains(&f.as_str()) {
                return Err(HarnessError::UnsupportedFault {
                    target: "containers",
                    fault: f.clone(),
                    supported: FAULTS.join(", "),
                });
            }
        }
        let names = c.names();
        let admins = names
            .iter()
            .map(|n| client_for(&c.cluster_file, n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ContainersNemesis {
            root: c.root.clone(),
            names,
            admins,
            killed: Vec::new(),
            paused: Vec::new(),
            skewed: Vec::new(),
            partitioned: false,
        })
    }

    fn victim(&self, draw: u64) -> Option<usize> {
        let healthy: Vec<usize> = (0..self.names.len())
            .filter(|i| {
                !self.killed.contains(i) && !self.paused.contains(i) && !self.skewed.contains(i)
            })
            .collect();
        (!healthy.is_empty()).then(|| healthy[(draw % healthy.len() as u64) as usize])
    }

    /// The nodes in an order drawn from `draw` (a seeded shuffle).
    fn shuffled(&self, mut draw: u64) -> Vec<String> {
        let mut v = self.names.clone();
        for i in (1..v.len()).rev() {
            draw = draw
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.swap(i, ((draw >> 33) % (i as u64 + 1)) as usize);
        }
        v
    }

    async fn netsplit(&mut self, args: Vec<String>) -> Result<Value, String> {
        script(&self.root, "netsplit.sh", &args).await?;
        self.partitioned = true;
        Ok(Value::Vector(
            std::iter::once(Value::kw("netsplit"))
                .chain(args.into_iter().map(Value::Str))
                .collect(),
        ))
    }
}

impl jepsen_like::harness::Nemesis for ContainersNemesis {
    fn start(
        &mut self,
        fault: &str,
        draw: u64,
    ) -> impl std::future::Future<Output = Result<Value, String>> + Send {
        let fault = fault.to_string();
        async move {
            let order = self.shuffled(draw);
            match fault.as_str() {
                "partition-halves" => {
                    // Random halves: a minority of two against a majority of three.
                    let (a, b) = order.split_at(order.len() / 2);
                    self.netsplit(vec!["split".into(), a.join(","), b.join(",")])
                        .await
                }
                "partition-majorities-ring" => self.netsplit(vec!["ring".into()]).await,
                "partition-bridge" => self.netsplit(vec!["bridge".into(), order[0].clone()]).await,
                "partition-one" => {
                    self.netsplit(vec!["isolate".into(), order[0].clone()])
                        .await
                }
                "partition-oneway" => {
                    self.netsplit(vec!["oneway".into(), order[0].clone(), order[1].clone()])
                        .await
                }
                node_fault => {
                    let i = self.victim(draw).ok_or("every node is already hurt")?;
                    let name = self.names[i].clone();
                    match node_fault {
                        "kill" => {
                            script(&self.root, "nodes.sh", &["kill".into(), name.clone()]).await?;
                            self.killed.push(i);
                            Ok(Value::Vector(vec![Value::kw("killed"), Value::Str(name)]))
                        }
                        "pause" => {
                            script(&self.root, "nodes.sh", &["pause".into(), name.clone()]).await?;
                            self.paused.push(i);
                            Ok(Value::Vector(vec![Value::kw("paused"), Value::Str(name)]))
                        }
                        "clock-skew" => {
                            let v = set_clock(&self.admins[i], skew_ms(draw)).await?;
                            self.skewed.push(i);
                            Ok(Value::Vector(vec![Value::kw("clock-offset"), v]))
                        }
                        other => Err(format!("the containers target cannot inject {other:?}")),
                    }
                }
            }
        }
    }

    fn stop(
        &mut self,
        fault: &str,
    ) -> impl std::future::Future<Output = Result<Value, String>> + Send {
        let fault = fault.to_string();
        async move {
            let mut done = Vec::new();
            match fault.as_str() {
                "kill" => {
                    for i in std::mem::take(&mut self.killed) {
                        script(
                            &self.root,
                            "nodes.sh",
                            &["start".into(), self.names[i].clone()],
                        )
                        .await?;
                        done.push(Value::Str(self.names[i].clone()));
                    }
                    Ok(Value::Vector(vec![
                        Value::kw("started"),
                        Value::Vector(done),
                    ]))
                }
                "pause" => {
                    for i in std::mem::take(&mut self.paused) {
                        script(
                            &self.root,
                            "nodes.sh",
                            &["resume".into(), self.names[i].clone()],
                        )
                        .await?;
                        done.push(Value::Str(self.names[i].clone()));
                    }
                    Ok(Value::Vector(vec![
                        Value::kw("resumed"),
                        Value::Vector(done),
                    ]))
                }
                "clock-skew" => {
                    for i in std::mem::take(&mut self.skewed) {
                        done.push(set_clock(&self.admins[i], 0).await?);
                    }
                    Ok(Value::Vector(vec![
                        Value::kw("clock-reset"),
                        Value::Vector(done),
                    ]))
                }
                _ => {
                    script(&self.root, "netsplit.sh", &["heal".into()]).await?;
                    self.partitioned = false;
                    Ok(Value::kw("healed"))
                }
            }
        }
    }

    async fn heal_all(&mut self) -> Result<Value, String> {
        {
            let mut healed = Vec::new();
            // Always: a netsplit left by an earlier, interrupted run heals too.
            healed.push(self.stop("partition").await?);
            for f in ["kill", "pause", "clock-skew"] {
                healed.push(self.stop(f).await?);
            }
            Ok(Value::Vector(healed))
        }
    }
}
