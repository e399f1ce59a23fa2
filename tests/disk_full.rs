//! Disk faults: a node whose disk fills up answers writes with a clear error, keeps
//! serving reads, and accepts writes again once space is freed. Runs on a small tmpfs it
//! mounts itself (needs root; skipped with a message otherwise).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, eventually, keyspace, timeouts};
use quorumkv::client::{ClientError, RequestOptions};
use quorumkv::config::StorageConfig;
use quorumkv::inprocess::QuicCluster;
use quorumkv::key::Key;
use quorumkv::keyspace::ConflictPolicy;

/// Unmounts the tmpfs when dropped, whatever happened in the test.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: mounting a tmpfs needs root");
        return None;
    }
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status();
    match status {
        Ok(s) if s.success() => Some(Mount(dir.to_path_buf())),
        other => {
            println!("skipped: cannot mount a tmpfs here ({other:?})");
            None
        }
    }
}

/// Write to `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 256 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    let _ = f.sync_all();
    written
}

/// Goal: on a full disk a write fails with an error that names the problem and the node
/// ("disk full on n1") — never a panic or an acknowledgement — reads keep working, and
/// once space is freed writes succeed again without restarting the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_serves_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = mount_tmpfs(dir.path(), "160m") else {
        return;
    };
    let c = QuicCluster::start(
        &dir.path().join("cluster"),
        1,
        &[keyspace("ks", ConflictPolicy::LwwTimestamp, 1, 1, 1)],
        StorageConfig::default(),
        timeouts(2000, 1000, 10_000),
    )
    .await
    .unwrap();
    let client = client(&c);
    let opts = RequestOptions::default();
    client
        .put("ks", Key::parse("before/1"), Some(b"kept".to_vec()), &opts)
        .await
        .unwrap();

    let filler = dir.path().join("filler");
    let filled = fill(&filler);
    println!("filled the tmpfs with {} MiB", filled >> 20);

    // Writes until one fails: RocksDB may still have preallocated WAL space left. The
    // values are incompressible: with a constant value the flushed tables were a few KiB
    // and every flush freed its WAL, so the disk never filled and, depending on when the
    // flush ended, all the writes could succeed.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut value = vec![0u8; 256 << 10];
    let mut error = None;
    let mut acked = 0;
    for i in 0..1000 {
        for chunk in value.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        match client
            .put(
                "ks",
                Key::parse(&format!("fill/{i}")),
                Some(value.clone()),
                &opts,
            )
            .await
        {
            Ok(_) => acked += 1,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = error.expect("writes to a full disk must fail");
    println!("after {acked} acknowledged writes: {error}");
    assert!(
        matches!(error, ClientError::Server { .. }),
        "a clear error from the node, not a broken connection: {error:?}"
    );
    assert!(
        error.to_string().contains("disk full on n1"),
        "the error must name the problem and the node: {error}"
    );
    // Reads keep working, including of the writes acknowledged before the disk filled.
    let g = client
        .get("ks", Key::parse("before/1"), &opts)
        .await
        .unwrap();
    assert_eq!(g.values[0].value, b"kept");
    if acked > 0 {
        let g = client.get("ks", Key::parse("fill/0"), &opts).await.unwrap();
        assert_eq!(g.values[0].value.len(), value.len());
    }

    // Free the space: writes come back without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    eventually(
        "writes to resume once space is freed",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || client.put("ks", Key::parse("after/1"), Some(b"back".to_vec()), &opts),
    )
    .await;
    println!("writes resumed {:?} after space was freed", freed.elapsed());
    let g = client
        .get("ks", Key::parse("after/1"), &opts)
        .await
        .unwrap();
    assert_eq!(g.values[0].value, b"back");
    c.shutdown().await;
    drop(mount);
}
