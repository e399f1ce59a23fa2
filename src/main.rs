//! The `quorumkv` command: run a node, a local dev cluster, make certificates, and talk
//! to a cluster from the command line.

mod cmd;

/// mimalloc instead of glibc's malloc: a node allocates many small, short-lived buffers
/// per request (frames, decoded messages, RocksDB slices), and under load glibc's
/// allocator took ~12% of the CPU (perf, docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
