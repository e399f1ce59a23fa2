//! The real binary: `dev-cluster` starts nodes as OS processes; the CLI client writes and
//! reads; `kill -9` of nodes loses no acknowledged write; bad input gets clear errors.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::{stderr, stdout, KillOnDrop, BIN};
use quorumkv::client::Client;
use quorumkv::config::ClusterFile;
use quorumkv::membership::layout::Change;
use quorumkv::proto::{ClientRequest, ClientResponse, ClusterReport};

/// Kills every node process it knows when dropped, so a failing test leaves nothing behind:
/// those of the dev cluster by their pid files (every `DIR/<node>/pid`, nodes added with
/// `--add` included), and the restarted ones (`extra`) by their guards, dropped after this.
struct Nodes {
    dir: PathBuf,
    extra: Vec<KillOnDrop>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if let Some(pid) = read_pid(&e.path().join("pid")) {
                kill(pid, 9);
            }
        }
    }
}

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn pid_of(dir: &Path, i: usize) -> Option<i32> {
    read_pid(&dir.join(format!("n{i}/pid")))
}

fn kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Whether `pid` is a running process (a zombie — killed but not yet reaped by its
/// parent — counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Three consecutive free UDP ports on loopback. Each call starts its search elsewhere:
/// tests running at the same time in this process would otherwise both find the same
/// free range before either binds it.
fn free_base_port() -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() as u16).wrapping_add(call.wrapping_mul(1009));
    for k in 0..200u16 {
        let base = 30000 + (seed.wrapping_mul(7).wrapping_add(k * 13)) % 30000;
        let ok = (0..3).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free ports");
}

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--cluster")
        .arg(dir.join("cluster.toml"))
        .output()
        .expect("run quorumkv")
}

fn restart_node(dir: &Path, i: usize) -> Child {
    let node_dir = dir.join(format!("n{i}"));
    let log = std::fs::File::create(node_dir.join("restart.log")).unwrap();
    Command::new(BIN)
        .args(["node", "--config"])
        .arg(node_dir.join("node.toml"))
        .arg("--pid-file")
        .arg(node_dir.join("pid"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Wait until `done` (at most 30 s, polled every 200 ms): nodes are OS processes here,
/// which take a while to die or to come back.
fn wait_until(what: &str, done: impl FnMut() -> bool) {
    common::wait_until(
        what,
        Duration::from_secs(30),
        Duration::from_millis(200),
        done,
    );
}

/// Start a three-node `dev-cluster` under `dir` on ports from `base` and return its
/// output; `--detach` makes it return once the nodes are up.
fn dev_cluster(dir: &Path, base: &str) -> Output {
    Command::new(BIN)
        .args([
            "dev-cluster",
            "--nodes",
            "3",
            "--detach",
            "--base-port",
            base,
            "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap()
}

/// A three-node dev cluster started under `tmp/dc` on free ports (asserting it came up):
/// its directory, the command's output, and the guard that kills its nodes.
fn started_dev_cluster(tmp: &Path) -> (PathBuf, Output, Nodes) {
    let dir = tmp.join("dc");
    let base = free_base_port().to_string();
    let guard = Nodes {
        dir: dir.clone(),
        extra: vec![],
    };
    let out = dev_cluster(&dir, &base);
    assert!(
        out.status.success(),
        "dev-cluster failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    (dir, out, guard)
}

/// Goal: the dev cluster runs each node as its own process; writes and reads work through
/// the CLI; with a node killed (-9) W=2 still succeeds; after every node is killed with -9
/// and restarted from its config, every acknowledged write is served.
#[test]
fn dev_cluster_kill_9_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, out, mut guard) = started_dev_cluster(tmp.path());
    assert!(
        stdout(&out).contains("dev cluster is up"),
        "{}",
        stdout(&out)
    );
    for i in 1..=3 {
        assert!(dir.join(format!("n{i}/node.toml")).exists());
        assert!(alive(pid_of(&dir, i).unwrap()), "n{i} is not running");
    }

    let o = cli(&dir, &["put", "greeting", "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("OK ["), "{}", stdout(&o));
    let o = cli(&dir, &["get", "greeting", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["key"], "greeting");
    assert_eq!(v["values"], serde_json::json!(["hello"]));
    assert!(v["context"].as_str().unwrap().len() > 4);

    // Siblings from two blind writes, then resolved with the context.
    assert!(cli(&dir, &["put", "doc", "a"]).status.success());
    assert!(cli(&dir, &["put", "doc", "b"]).status.success());
    let v: serde_json::Value = serde_json::from_str(
        stdout(&cli(&dir, &["get", "doc", "--output", "json", "-r", "3"])).trim(),
    )
    .unwrap();
    let mut vals: Vec<String> = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    vals.sort();
    assert_eq!(vals, vec!["a", "b"]);
    let ctx = v["context"].as_str().unwrap().to_string();
    assert!(cli(&dir, &["put", "doc", "ab", "--context", &ctx])
        .status
        .success());
    let v: serde_json::Value = serde_json::from_str(
        stdout(&cli(&dir, &["get", "doc", "--output", "json", "-r", "3"])).trim(),
    )
    .unwrap();
    assert_eq!(v["values"], serde_json::json!(["ab"]));

    // A post and its comments in one atomic batch, scanned back in order and paged.
    let o = cli(
        &dir,
        &["batch", "post1=hello", "post1/c1=first", "post1/c2=second"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(&dir, &["scan", "post1", "--limit", "2"]);
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        vec![
            "post1/\thello",
            "post1/c1\tfirst",
            "(2 item(s); more: --after \"c1\")"
        ]
    );
    let o = cli(&dir, &["scan", "post1", "--after", "c1"]);
    assert!(
        stdout(&o).starts_with("post1/c2\tsecond\n(1 item(s))"),
        "{}",
        stdout(&o)
    );
    let o = cli(&dir, &["batch", "post1/a=x", "post2/b=y"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("must stay within one partition"),
        "{}",
        stderr(&o)
    );

    // Conditional writes: the second one with the same (now stale) context conflicts.
    let v: serde_json::Value =
        serde_json::from_str(stdout(&cli(&dir, &["get", "greeting", "--output", "json"])).trim())
            .unwrap();
    let ctx = v["context"].as_str().unwrap().to_string();
    assert!(cli(&dir, &["put", "greeting", "hi", "--if-context", &ctx])
        .status
        .success());
    let o = cli(&dir, &["put", "greeting", "hey", "--if-context", &ctx]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("has changed since the context was read"),
        "{}",
        stderr(&o)
    );

    // kill -9 one node: W=2 still succeeds.
    let n2 = pid_of(&dir, 2).unwrap();
    kill(n2, 9);
    wait_until("n2 to die", || !alive(n2));
    let o = cli(&dir, &["put", "during-outage", "yes"]);
    assert!(
        o.status.success(),
        "W=2 with one node killed: {}",
        stderr(&o)
    );
    // W=3 cannot be met: a clear quorum error and a non-zero exit.
    let o = cli(&dir, &["put", "needs-all", "x", "-w", "3"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("quorum not reached") && stderr(&o).contains("n2"),
        "{}",
        stderr(&o)
    );
    guard.extra.push(KillOnDrop(restart_node(&dir, 2)));
    // Back as every coordinator sees it: each node's failure detector (a probe a second)
    // clears n2 on its own schedule, and until then that node routes around it.
    wait_until("n2 to come back", || {
        (1..=3).all(|i| {
            cli(
                &dir,
                &["put", "probe", "x", "-w", "3", "--node", &format!("n{i}")],
            )
            .status
            .success()
        })
    });

    // Acknowledged writes with W=3, then kill -9 every node at once.
    for i in 0..30 {
        let o = cli(
            &dir,
            &["put", &format!("acked:{i}"), &format!("v{i}"), "-w", "3"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let pids: Vec<i32> = (1..=3).map(|i| pid_of(&dir, i).unwrap()).collect();
    for p in &pids {
        kill(*p, 9);
    }
    for p in &pids {
        wait_until("a node to die", || !alive(*p));
    }
    for i in 1..=3 {
        guard.extra.push(KillOnDrop(restart_node(&dir, i)));
    }
    wait_until("the cluster to come back", || {
        cli(&dir, &["get", "acked:0", "-r", "3"]).status.success()
    });
    for i in 0..30 {
        let o = cli(
            &dir,
            &["get", &format!("acked:{i}"), "-r", "3", "--output", "json"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(
            v["values"],
            serde_json::json!([format!("v{i}")]),
            "acked:{i} lost after kill -9"
        );
    }
    let o = cli(&dir, &["get", "during-outage", "-r", "3"]);
    assert_eq!(stdout(&o).lines().next(), Some("yes"));
    // Each node's own copy (no quorum, no repair): a W=3 write is on every replica.
    for n in ["n1", "n2", "n3"] {
        let o = cli(
            &dir,
            &["get", "--replica", n, "acked:0", "--output", "json"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(
            (v["node"].as_str(), v["replica"].as_bool()),
            (Some(n), Some(true))
        );
        assert_eq!(v["values"], serde_json::json!(["v0"]), "{n}'s own copy");
    }
    // Anti-entropy status after the kill -9 (trees rebuilt at start): every range n1
    // replicates, with its replicas.
    let o = cli(&dir, &["aae", "status", "--node", "n1", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["contacted"].as_str(), v["enabled"].as_bool()),
        (Some("n1"), Some(true))
    );
    let ranges = v["ranges"].as_array().unwrap();
    assert!(!ranges.is_empty(), "{v}");
    for r in ranges {
        let replicas = r["replicas"].as_array().unwrap();
        assert!(replicas.contains(&serde_json::json!("n1")), "{r}");
    }
    let o = cli(&dir, &["aae", "status", "--node", "n1"]);
    assert!(stdout(&o).contains("anti-entropy on n1"), "{}", stdout(&o));
    drop(guard);
}

/// Hints the contacted node holds for `target`, from `quorumkv status --node NODE --output
/// json` (`None` while the node does not answer).
fn hints_held(dir: &Path, node: &str, target: &str) -> Option<u64> {
    let o = cli(dir, &["status", "--node", node, "--output", "json"]);
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).ok()?;
    v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == target)?["hints_pending"]
        .as_u64()
}

/// Goal (hinted handoff, issue 14): hints are durable. While n3 is down, 20 writes (W=2)
/// leave hints for it on the nodes that led them; both hint holders are then killed with
/// -9 and restarted with anti-entropy off (so only hints can repair n3), n3 comes back,
/// and its own copy of every key (`get --replica`: no quorum, no read repair) holds the
/// value, with no hint left.
#[test]
fn hints_survive_kill_9_of_their_holders() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, mut guard) = started_dev_cluster(tmp.path());
    let n3 = pid_of(&dir, 3).unwrap();
    kill(n3, 9);
    wait_until("n3 to die", || !alive(n3));
    for i in 0..20 {
        let o = cli(&dir, &["put", &format!("h:{i}"), &format!("v{i}")]);
        assert!(o.status.success(), "W=2 with n3 down: {}", stderr(&o));
    }
    // Every write left one hint for n3 on its lead (3 nodes, N=3: no stand-in exists).
    wait_until("20 hints for n3 held by n1 and n2", || {
        matches!(
            (hints_held(&dir, "n1", "n3"), hints_held(&dir, "n2", "n3")),
            (Some(a), Some(b)) if a + b == 20
        )
    });
    let holders: Vec<i32> = (1..=2).map(|i| pid_of(&dir, i).unwrap()).collect();
    for p in &holders {
        kill(*p, 9);
    }
    for p in &holders {
        wait_until("a hint holder to die", || !alive(*p));
    }
    for i in 1..=3 {
        let config = dir.join(format!("n{i}/node.toml"));
        let text = std::fs::read_to_string(&config).unwrap();
        let off = text.replace(
            "[anti_entropy]\nenabled = true",
            "[anti_entropy]\nenabled = false",
        );
        assert_ne!(
            off,
            text,
            "{} has no [anti_entropy] enabled = true",
            config.display()
        );
        std::fs::write(&config, off).unwrap();
        guard.extra.push(KillOnDrop(restart_node(&dir, i)));
    }
    wait_until("n3 to hold every write, handed back by hints", || {
        (0..20).all(|i| {
            let o = cli(
                &dir,
                &[
                    "get",
                    "--replica",
                    "n3",
                    &format!("h:{i}"),
                    "--output",
                    "json",
                ],
            );
            o.status.success()
                && serde_json::from_str::<serde_json::Value>(stdout(&o).trim())
                    .map(|v| v["values"] == serde_json::json!([format!("v{i}")]))
                    .unwrap_or(false)
        })
    });
    wait_until("no hint left for n3", || {
        hints_held(&dir, "n1", "n3") == Some(0) && hints_held(&dir, "n2", "n3") == Some(0)
    });
    drop(guard);
}

/// The JSON of `get --replica NODE KEY`.
fn replica_copy(dir: &Path, node: &str, key: &str) -> Option<serde_json::Value> {
    let o = cli(dir, &["get", "--replica", node, key, "--output", "json"]);
    if !o.status.success() {
        return None;
    }
    serde_json::from_str(stdout(&o).trim()).ok()
}

/// Goal (tombstone reaping, issue 14, on real processes): with `[tombstones]
/// min_age_ms = 1000`, a key deleted with its context is first a tombstone on all three
/// replicas, then gone from every replica's own copy, and `status` counts the reap.
#[test]
fn tombstones_are_reaped_on_real_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, mut guard) = started_dev_cluster(tmp.path());
    for i in 1..=3 {
        let p = pid_of(&dir, i).unwrap();
        kill(p, 9);
        wait_until("a node to die", || !alive(p));
    }
    for i in 1..=3 {
        let config = dir.join(format!("n{i}/node.toml"));
        let text = std::fs::read_to_string(&config).unwrap();
        let fast = text
            .replace("min_age_ms = 86400000", "min_age_ms = 1000")
            .replace(
                "[tombstones]\nenabled = true\nmin_age_ms = 1000\ninterval_ms = 60000",
                "[tombstones]\nenabled = true\nmin_age_ms = 1000\ninterval_ms = 200",
            );
        assert!(
            fast.contains("min_age_ms = 1000\ninterval_ms = 200"),
            "{} has no [tombstones] section as expected:\n{text}",
            config.display()
        );
        std::fs::write(&config, fast).unwrap();
        guard.extra.push(KillOnDrop(restart_node(&dir, i)));
    }
    wait_until("the cluster to answer", || {
        cli(&dir, &["put", "gone", "soon"]).status.success()
    });
    let read = cli(&dir, &["get", "gone", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&read).trim()).unwrap();
    let context = v["context"].as_str().unwrap().to_string();
    let del = cli(&dir, &["delete", "gone", "--context", &context]);
    assert!(del.status.success(), "{}", stderr(&del));
    let state = |want_tombstones: u64| {
        (1..=3).all(|i| {
            replica_copy(&dir, &format!("n{i}"), "gone").is_some_and(|c| {
                c["values"] == serde_json::json!([]) && c["tombstones"] == want_tombstones
            })
        })
    };
    // The tombstone may be reaped within a second: seeing it is not required, seeing it
    // gone everywhere is.
    let _ = state(1);
    wait_until("every replica's own copy of the key to be gone", || {
        state(0)
    });
    let reaped: u64 = (1..=3)
        .filter_map(|i| {
            let n = format!("n{i}");
            let o = cli(&dir, &["status", "--node", &n, "--output", "json"]);
            let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).ok()?;
            v["nodes"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == n.as_str())?["tombstones_reaped"]
                .as_u64()
        })
        .sum();
    assert_eq!(
        reaped, 3,
        "each of the three replicas removed its copy once"
    );
    let text = cli(&dir, &["status"]);
    assert!(
        stdout(&text).contains("tombstones reaped by"),
        "{}",
        stdout(&text)
    );
    drop(guard);
}

/// Goal: user mistakes get one clear message and a non-zero exit, never a panic.
#[test]
fn cli_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["get", "k", "--cluster"])
        .arg(tmp.path().join("none.toml"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no cluster to talk to"),
        "{}",
        stderr(&o)
    );
    let bad = tmp.path().join("node.toml");
    std::fs::write(&bad, "name = 3\n").unwrap();
    let o = Command::new(BIN)
        .args(["node", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is invalid") && stderr(&o).contains("name"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(BIN)
        .args(["dev-cluster", "--nodes", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--nodes must be between"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"));
}

/// Goal: the CRDT commands work end to end through the binary: counters add up, `srem`
/// without --context reads first and removes what it saw, map fields update
/// independently, `get` prints CRDT values as text and JSON, mismatches are refused.
#[test]
fn crdt_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, _guard) = started_dev_cluster(tmp.path());
    let ok = |args: &[&str]| {
        let o = cli(&dir, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let json =
        |args: &[&str]| -> serde_json::Value { serde_json::from_str(ok(args).trim()).unwrap() };
    for (name, policy) in [
        ("hits", "counter"),
        ("tags", "set"),
        ("users", "map"),
        ("notes", "register"),
    ] {
        ok(&["create-keyspace", name, "--policy", policy]);
    }
    ok(&["incr", "-k", "hits", "home"]);
    ok(&["incr", "-k", "hits", "home", "10"]);
    ok(&["decr", "-k", "hits", "home", "3"]);
    assert_eq!(ok(&["get", "-k", "hits", "home"]).trim(), "8");
    assert_eq!(
        json(&["get", "-k", "hits", "home", "--output", "json"])["crdt"]["value"],
        8
    );
    ok(&["incr", "-k", "hits", "home/mobile", "2"]);
    let scan = ok(&["scan", "-k", "hits", "home"]);
    assert!(
        scan.contains("home/\t8") && scan.contains("home/mobile\t2"),
        "{scan}"
    );

    ok(&["sadd", "-k", "tags", "p1", "rust", "dynamo", "crdt"]);
    ok(&["srem", "-k", "tags", "p1", "dynamo"]);
    let v = json(&["get", "-k", "tags", "p1", "--output", "json"]);
    assert_eq!(v["crdt"]["members"], serde_json::json!(["crdt", "rust"]));
    // An explicit empty context observed nothing, so it removes nothing.
    ok(&["srem", "-k", "tags", "p1", "rust", "--context", ""]);
    assert!(ok(&["get", "-k", "tags", "p1"]).contains("{crdt, rust}"));

    ok(&["hset", "-k", "users", "u1", "name", "ann"]);
    ok(&["hincr", "-k", "users", "u1", "visits", "5"]);
    ok(&["hincr", "-k", "users", "u1", "visits", "-2"]);
    ok(&["hsadd", "-k", "users", "u1", "langs", "rust"]);
    ok(&["hdel", "-k", "users", "u1", "name"]);
    let v = json(&["get", "-k", "users", "u1", "--output", "json"]);
    assert_eq!(v["crdt"]["fields"]["visits"]["counter"], 3);
    assert_eq!(
        v["crdt"]["fields"]["langs"]["set"],
        serde_json::json!(["rust"])
    );
    assert!(v["crdt"]["fields"].get("name").is_none(), "{v}");

    ok(&["rset", "-k", "notes", "n1", "draft"]);
    ok(&["rset", "-k", "notes", "n1", "final"]);
    assert!(ok(&["get", "-k", "notes", "n1"]).starts_with("final\n"));

    let o = cli(&dir, &["put", "-k", "hits", "home", "5"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("put is not supported"),
        "{}",
        stderr(&o)
    );
    let o = cli(&dir, &["incr", "-k", "tags", "p1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not apply to a set keyspace"),
        "{}",
        stderr(&o)
    );
}

/// Goal: `quorumkv certs` writes private keys with mode 0600, never overwrites a key
/// (a second run for the same name keeps it and re-issues the certificate), issues admin
/// certificates, and honours `--days`.
#[test]
fn certs_keys_are_private_and_kept() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let run = |args: &[&str]| {
        let o = Command::new(BIN)
            .arg("certs")
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
    run(&["--node", "n1"]);
    assert_eq!(mode("n1.key"), 0o600, "node key");
    assert_eq!(mode("ca.key"), 0o600, "CA key");
    let key = std::fs::read(dir.join("n1.key")).unwrap();
    let cert = std::fs::read(dir.join("n1.pem")).unwrap();
    let out = run(&["--node", "n1", "--admin", "ops", "--days", "10"]);
    assert!(out.contains("existing key kept"), "{out}");
    assert_eq!(
        std::fs::read(dir.join("n1.key")).unwrap(),
        key,
        "key overwritten"
    );
    assert_ne!(std::fs::read(dir.join("n1.pem")).unwrap(), cert);
    assert!(
        out.contains("admin ops") && out.contains("valid 10 days"),
        "{out}"
    );
    assert_eq!(mode("ops.key"), 0o600, "admin key");
}

/// Goal (layouts, issue 15, on real processes): `cluster status` shows the first layout;
/// bad changes are refused naming the problem (a member joining again, a stranger leaving,
/// a shrink below the keyspace's N, a commit with nothing staged); a staged join shows in
/// `status` and in `plan` (about a quarter of the replica slots move, all to the newcomer),
/// and `abort` drops it.
#[test]
fn cluster_commands_stage_plan_and_refuse_bad_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, _guard) = started_dev_cluster(tmp.path());
    let o = cli(&dir, &["cluster", "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("current v1") && text.contains("no change in progress"),
        "{text}"
    );
    for (args, want) in [
        (
            vec!["cluster", "join", "n2", "127.0.0.1:1"],
            "n2 is already a member",
        ),
        (vec!["cluster", "leave", "n9"], "n9 is not a member"),
        (vec!["cluster", "leave", "n3"], "keeps n=3 replicas"),
        (vec!["cluster", "commit"], "nothing is staged"),
        (vec!["cluster", "join", "n4", "not-an-address"], "invalid"),
    ] {
        let o = cli(&dir, &args);
        assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let o = cli(&dir, &["cluster", "join", "n4", "127.0.0.1:9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("join n4 at 127.0.0.1:9"),
        "{}",
        stdout(&o)
    );
    let o = cli(&dir, &["cluster", "plan", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let moved = plan["moved_share"].as_f64().unwrap();
    assert!((0.2..0.3).contains(&moved), "{plan}");
    assert_eq!(plan["version"], 2);
    let after = plan["balance_after"]["n4"].as_f64().unwrap();
    assert!((0.2..0.3).contains(&after), "{plan}");
    let o = cli(&dir, &["cluster", "status"]);
    assert!(
        stdout(&o).contains("staged on n1 (on v1)"),
        "{}",
        stdout(&o)
    );
    let o = cli(&dir, &["cluster", "abort"]);
    assert!(
        stdout(&o).contains("dropped 1 staged change"),
        "{}",
        stdout(&o)
    );
    let o = cli(&dir, &["cluster", "status"]);
    assert!(stdout(&o).contains("nothing staged"), "{}", stdout(&o));
}

/// `quorumkv dev-cluster --dir DIR --add NAME`.
fn add_node(dir: &Path, name: &str) -> Output {
    Command::new(BIN)
        .args(["dev-cluster", "--dir"])
        .arg(dir)
        .args(["--add", name])
        .output()
        .unwrap()
}

/// Node `node`'s layouts, asked through the client API of it alone.
async fn cluster_report(cf: &ClusterFile, node: &str) -> Result<ClusterReport, String> {
    let client = Client::new(&cf.only(node).ok_or(format!("no contact point {node}"))?)
        .map_err(|e| e.to_string())?;
    let reply = client.request(ClientRequest::ClusterStatus).await;
    client.close().await;
    match reply.map_err(|e| e.to_string())? {
        ClientResponse::Cluster(r) => Ok(*r),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Goal: `dev-cluster --add` starts a node beside a running dev cluster, as its own
/// process and outside the layout, holding the cluster's layout v1, and prints the join
/// command; a name already used is refused and changes nothing; a join staged and
/// committed through the client API makes it a member of a single live version 2; and a
/// later restart of the whole dev cluster starts the added node with the others.
#[test]
fn dev_cluster_add_starts_a_node_ready_to_join() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, _guard) = started_dev_cluster(tmp.path());
    let cluster_file = dir.join("cluster.toml");
    let o = add_node(&dir, "n4");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let cf = ClusterFile::load(&cluster_file).unwrap();
    let names: Vec<&str> = cf.contact_points.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3", "n4"], "contact points");
    let n4 = cf.contact_points[3].clone();
    let highest = cf.contact_points[..3].iter().map(|m| m.addr.port()).max();
    assert!(Some(n4.addr.port()) > highest, "n4 on {}", n4.addr);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("cluster join n4 {}", n4.addr))
            && out.contains("cluster plan")
            && out.contains("cluster commit")
            && out.contains(&format!("--cluster {}", cluster_file.display())),
        "{out}"
    );
    let pid = read_pid(&dir.join("n4/pid")).expect("n4's pid file");
    assert!(alive(pid), "n4 is not running");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(cluster_report(&cf, "n4")).unwrap();
    assert_eq!(report.node, "n4");
    let current = report.history.current();
    assert_eq!(current.version, 1, "{:?}", report.history);
    assert_eq!(current.names(), ["n1", "n2", "n3"]);
    assert!(!report.history.is_member("n4"));

    // Refusals: a name in use, whether a contact point or not; nothing changes.
    for taken in ["n4", "n2"] {
        let o = add_node(&dir, taken);
        assert!(!o.status.success(), "--add {taken} succeeded");
        assert!(
            stderr(&o).contains(&format!("{taken} is already a node")),
            "{}",
            stderr(&o)
        );
    }
    let o = add_node(&dir, "admin");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is taken"), "{}", stderr(&o));
    assert!(!dir.join("admin").exists());
    assert_eq!(
        ClusterFile::load(&cluster_file).unwrap().contact_points,
        cf.contact_points
    );
    assert_eq!(read_pid(&dir.join("n4/pid")), Some(pid), "n4 restarted");

    // Join n4 through n1, as `quorumkv cluster join` and `commit` do.
    rt.block_on(async {
        let client = Client::new(&cf.only("n1").unwrap()).unwrap();
        let join = Change::Join {
            name: "n4".into(),
            addr: n4.addr,
            zone: None,
        };
        match client.request(ClientRequest::ClusterStage(join)).await {
            Ok(ClientResponse::Staged(s)) => assert_eq!(s.changes.len(), 1, "{s:?}"),
            other => panic!("stage: {other:?}"),
        }
        match client.request(ClientRequest::ClusterCommit).await {
            Ok(ClientResponse::Committed(l)) => {
                assert_eq!((l.version, l.has("n4")), (2, true), "{l:?}")
            }
            other => panic!("commit: {other:?}"),
        }
        client.close().await;
    });
    let joined = |cf: &ClusterFile| {
        common::wait_for(
            "n4 to hold a single live layout v2 with itself in it",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let r = rt.block_on(cluster_report(cf, "n4"))?;
                let h = &r.history;
                let live: Vec<u64> = h.live.iter().map(|l| l.version).collect();
                if live == [2] && h.current().has("n4") {
                    Ok(())
                } else {
                    Err(format!(
                        "live versions {live:?}, members {:?}",
                        h.current().names()
                    ))
                }
            },
        )
    };
    joined(&cf);

    // Restart the whole dev cluster: n4 comes back with the others, still a member.
    let pids: Vec<i32> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|n| read_pid(&dir.join(n).join("pid")).unwrap())
        .collect();
    for p in &pids {
        kill(*p, 15);
    }
    for p in &pids {
        wait_until("a node to stop", || !alive(*p));
    }
    let o = dev_cluster(&dir, "1");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("n4 "), "{}", stdout(&o));
    let pid = read_pid(&dir.join("n4/pid")).expect("n4's pid file after the restart");
    assert!(alive(pid) && !pids.contains(&pid), "n4 did not start again");
    joined(&cf);
}

/// Goal: `dev-cluster --add` refuses clearly, writing nothing, when the name cannot be a
/// node's or the directory holds no cluster.
#[test]
fn dev_cluster_add_refuses_without_a_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    let o = add_node(&dir, "n4");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("holds no dev cluster"),
        "{}",
        stderr(&o)
    );
    for bad in ["a b", "../n4", "n_4", ""] {
        let o = add_node(&dir, bad);
        assert!(!o.status.success(), "--add {bad:?} succeeded");
        assert!(
            stderr(&o).contains("is not a valid node name"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "files written");
    assert!(!stderr(&o).contains("panicked"));
}
