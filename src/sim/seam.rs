//! The seam's guard: protocol code may not reach the wall clock, timers, tasks, sockets or
//! unseeded randomness except through `crate::env::Env`. Clippy enforces it per call
//! (clippy.toml, denied in each protocol module); this test makes sure every protocol
//! module carries the deny, so a new module cannot silently opt out, and scans the ones
//! with no sanctioned exception for the forbidden calls, so the rule holds even where
//! clippy is not run.

use std::path::{Path, PathBuf};

/// Modules that drive the protocol from outside (sockets, processes, the CLI, benchmarks,
/// configuration): the only ones allowed to use the runtime directly.
const DRIVERS: &[&str] = &[
    "lib.rs",
    "main.rs",
    "runtime.rs",
    "server.rs",
    "client.rs",
    "metrics.rs",
    "tls.rs",
    "config.rs",
    "inprocess.rs",
    "transport/mod.rs",
    "transport/quic.rs",
    "storage/mod.rs",
    "storage/rocks.rs",
    "storage/conformance.rs",
    "sim/seam.rs",
];
// The harness drives processes and containers; under the sim target it runs on the paused
// runtime, where tokio's clock is the simulated one.
const DRIVER_DIRS: &[&str] = &["cmd/", "bench/", "shell/", "harness/"];

const FORBIDDEN: &[&str] = &[
    "tokio::spawn",
    "task::spawn",
    "spawn_blocking",
    "thread::spawn",
    "tokio::time::sleep",
    "tokio::time::timeout",
    "tokio::time::interval",
    "Instant::now",
    "SystemTime",
    "RandomState",
    "SystemRandom",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "quinn::",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Goal: every protocol module denies the calls that bypass the seam, and those with no
/// sanctioned exception contain none of them (comments aside).
#[test]
fn protocol_modules_use_only_the_seam() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in files {
        let rel = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if DRIVERS.contains(&rel.as_str()) || DRIVER_DIRS.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(&path).expect("read source");
        if !text.contains("#![deny(clippy::disallowed_methods)]") {
            problems.push(format!(
                "{rel}: protocol module without #![deny(clippy::disallowed_methods)]"
            ));
        }
        if text.contains("allow(clippy::disallowed_methods)") {
            continue; // its exceptions are named and reviewed; clippy checks the rest
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in FORBIDDEN {
                if code.contains(f) {
                    problems.push(format!("{rel}:{}: `{f}` bypasses crate::env", n + 1));
                }
            }
        }
    }
    assert!(checked >= 10, "found only {checked} protocol modules");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
