//! `quorumkv certs`: the cluster CA and node, client and admin certificates.
//!
//! Private keys are written with mode 0600 and never replaced: running the command again
//! for an existing name re-issues the certificate (e.g. with a new `--days`) for the key
//! already on disk, which is how a certificate is renewed.

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
    /// Client names to issue certificates for (comma-separated): reads and writes,
    /// subject to keyspace grants.
    #[arg(long, value_delimiter = ',')]
    client: Vec<String>,
    /// Admin names to issue certificates for (comma-separated): everything a client may
    /// do, not limited by grants, plus creating and dropping keyspaces.
    #[arg(long, value_delimiter = ',')]
    admin: Vec<String>,
    /// Validity of the issued certificates, days (the CA, made once, is valid for 3650).
    #[arg(long, default_value_t = tls::DEFAULT_VALIDITY_DAYS)]
    days: u32,
}

pub fn run(a: CertsArgs) -> anyhow::Result<ExitCode> {
    let ca = tls::ensure_ca(&a.dir)?;
    println!("CA: {}", ca.cert.display());
    let cluster_key = quorumkv::context::ensure_key_file(&a.dir)?;
    println!(
        "cluster key (seals causal contexts; every node needs this same file): {}",
        cluster_key.display()
    );
    let wanted = a
        .node
        .iter()
        .map(|n| (n, Role::Node, &a.ip[..]))
        .chain(a.client.iter().map(|c| (c, Role::Client, &[][..])))
        .chain(a.admin.iter().map(|c| (c, Role::Admin, &[][..])));
    let mut any = false;
    for (name, role, ips) in wanted {
        any = true;
        let f = tls::issue(&a.dir, name, role, ips, a.days)?;
        let key = if f.reused_key {
            "existing key kept"
        } else {
            "new key, mode 0600"
        };
        println!(
            "{role} {name}: {} {} ({key}; valid {} days)",
            f.cert.display(),
            f.key.display(),
            a.days
        );
        if let Some(w) = tls::key_mode_warning(&f.key) {
            eprintln!("warning: {w}");
        }
    }
    if !any {
        println!("no --node, --client or --admin given: only the CA was ensured");
    }
    Ok(ExitCode::SUCCESS)
}
