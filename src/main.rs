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
    if cli.prints_for_a_reader() {
        // Like other Unix tools, end quietly when the reader of our output goes away
        // (`quorumkv get k | head -1`): Rust ignores SIGPIPE, and `println!` then panics.
        // Not for the long-running node commands, which must outlive their log reader.
        // SAFETY: resetting a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
