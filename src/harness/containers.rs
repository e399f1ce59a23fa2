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

use super::local::{client_for, set_clock, wait_ready};
use super::nemesis::{NodeControl, TargetNemesis};
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

/// What the containers target can do to its nodes: `scripts/nodes.sh` for processes,
/// `scripts/netsplit.sh` for partitions, and the nodes' admin clock offset.
pub struct ContainersControl {
    root: PathBuf,
    names: Vec<String>,
    admins: Vec<Arc<Client>>,
}

impl ContainersControl {
    /// The control of `c`'s nodes.
    pub fn new(c: &Containers) -> Result<Self, HarnessError> {
        let names = c.names();
        let admins = names
            .iter()
            .map(|n| client_for(&c.cluster_file, n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ContainersControl {
            root: c.root.clone(),
            names,
            admins,
        })
    }

    async fn nodes_sh(&self, action: &str, i: usize) -> Result<(), String> {
        script(
            &self.root,
            "nodes.sh",
            &[action.to_string(), self.names[i].clone()],
        )
        .await
        .map(|_| ())
    }
}

impl NodeControl for ContainersControl {
    fn target(&self) -> &'static str {
        "containers"
    }

    fn supported(&self) -> &'static [&'static str] {
        &FAULTS
    }

    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    async fn kill(&mut self, i: usize) -> Result<(), String> {
        self.nodes_sh("kill", i).await
    }

    async fn restart(&mut self, i: usize) -> Result<(), String> {
        // `start` also re-applies the current netsplit inside the fresh container.
        self.nodes_sh("start", i).await
    }

    async fn pause(&mut self, i: usize, pause: bool) -> Result<(), String> {
        self.nodes_sh(if pause { "pause" } else { "resume" }, i)
            .await
    }

    async fn set_clock(&mut self, i: usize, ms: i64) -> Result<Value, String> {
        set_clock(&self.admins[i], ms).await
    }

    async fn partition(&mut self, shape: &str, order: Vec<usize>) -> Result<Value, String> {
        let at = |k: usize| self.names[order[k % order.len()]].clone();
        let args: Vec<String> = match shape {
            // Random halves: a minority of two against a majority of three.
            "halves" => {
                let (a, b) = order.split_at(order.len() / 2);
                let group = |g: &[usize]| {
                    g.iter()
                        .map(|&i| self.names[i].clone())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                vec!["split".into(), group(a), group(b)]
            }
            "majorities-ring" => vec!["ring".into()],
            "bridge" => vec!["bridge".into(), at(0)],
            "one" => vec!["isolate".into(), at(0)],
            "oneway" => vec!["oneway".into(), at(0), at(1)],
            other => return Err(format!("no partition shape {other:?}")),
        };
        script(&self.root, "netsplit.sh", &args).await?;
        Ok(Value::Vector(
            std::iter::once(Value::kw("netsplit"))
                .chain(args.into_iter().map(Value::Str))
                .collect(),
        ))
    }

    async fn heal_partition(&mut self) -> Result<(), String> {
        script(&self.root, "netsplit.sh", &["heal".into()])
            .await
            .map(|_| ())
    }
}

/// The containers target's nemesis.
pub type ContainersNemesis = TargetNemesis<ContainersControl>;
