//! `quorumkv certs`: the cluster CA and node/client certificates.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use quorumkv::tls::{self, Role};

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory for ca.pem/ca.key and the issued certificates (the CA is created once and
    /// reused).
    #[arg(long)]
    dir: PathBuf,
    /// Node names to issue certificates for (comma-separated).
    #[arg(long, value_delimiter = ',')]
    node: Vec<String>,
    /// IP addresses to put in node certificates (comma-separated).
    #[arg(long, value_delimiter = ',')]
    ip: Vec<IpAddr>,
    /// Client names to issue certificates for (comma-separated).
    #[arg(long, value_delimiter = ',')]
    client: Vec<String>,
}

pub fn run(a: CertsArgs) -> anyhow::Result<ExitCode> {
    let ca = tls::ensure_ca(&a.dir)?;
    println!("CA: {}", ca.cert.display());
    let cluster_key = quorumkv::context::ensure_key_file(&a.dir)?;
    println!(
        "cluster key (seals causal contexts; every node needs this same file): {}",
        cluster_key.display()
    );
    for n in &a.node {
        let f = tls::issue(&a.dir, n, Role::Node, &a.ip)?;
        println!("node {n}: {} {}", f.cert.display(), f.key.display());
    }
    for c in &a.client {
        let f = tls::issue(&a.dir, c, Role::Client, &[])?;
        println!("client {c}: {} {}", f.cert.display(), f.key.display());
    }
    if a.node.is_empty() && a.client.is_empty() {
        println!("no --node or --client given: only the CA was ensured");
    }
    Ok(ExitCode::SUCCESS)
}
