//! `quorumkv node`: run one node until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use quorumkv::config::NodeConfig;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's TOML config.
    #[arg(long)]
    config: PathBuf,
    /// Override `listen` from the config.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Override `data_dir` from the config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the process id to this file while running.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Issue versions under a new incarnation of this node. Use it once after restoring
    /// the data directory from a backup (or any copy older than the node's last write),
    /// so the node cannot re-issue version ids its peers already hold.
    #[arg(long)]
    new_incarnation: bool,
}

pub fn run(a: NodeArgs) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    let mut cfg = NodeConfig::load(&a.config)?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    cfg.new_incarnation = a.new_incarnation;
    cfg.validate()?;
    if let Some(p) = &a.pid_file {
        std::fs::write(p, std::process::id().to_string())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let rt = super::runtime()?;
    rt.block_on(async {
        let running = quorumkv::runtime::start(&cfg, None).await?;
        // Also on plain stderr, so they show whatever QUORUMKV_LOG filters out.
        for w in &running.warnings {
            eprintln!("warning: {w}");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!(node = %cfg.name, "shutting down");
        running.shutdown().await;
        anyhow::Ok(())
    })?;
    if let Some(p) = &a.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(ExitCode::SUCCESS)
}
