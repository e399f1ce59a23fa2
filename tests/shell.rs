//! The real `quorumkv shell` binary against real in-process clusters (QUIC, TLS, RocksDB):
//! scripted sessions through stdin, `-e` and `-f`, asserting on what a user sees; and one
//! test that drives the interactive shell in a terminal (tmux) for completion, history and
//! Ctrl-C.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{
    client, eventually, rocksdb_storage, short_timeouts, three_nodes, wait_for, wait_until, BIN,
};
use quorumkv::client::RequestOptions;
use quorumkv::inprocess::QuicCluster;
use quorumkv::key::Key;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Three RocksDB nodes with keyspace `default` (N=3 R=2 W=2), the shell's default.
async fn cluster(dir: &Path) -> QuicCluster {
    three_nodes(dir, "default", rocksdb_storage(true), short_timeouts()).await
}

/// Run the shell with `script` on stdin; bounded at 60 s.
async fn shell(cluster_file: &Path, args: &[&str], script: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("shell")
        .arg("--cluster")
        .arg(cluster_file)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shell");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(script.as_bytes()).await.expect("write");
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("shell finished within 60 s")
        .expect("shell output")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8"),
        String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8"),
    )
}

/// Goal: the core story a user follows in the shell works end to end — put/get round
/// trip, two blind puts become siblings shown with their ids, `resolve` collapses them
/// with the remembered context, consistency is set and shown, a new keyspace n=3 w=2 is
/// created and used, `replicas` lists 3 nodes, `status` shows 3 nodes up, `ring` shows
/// every node, tracing prints the coordinator's timeline; the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_session_siblings_resolve_and_cluster_views() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = r#"
# a comment, then a blank line

put user:1 alice
get user:1
put doc draft-a
put doc "draft b"
get doc
resolve doc "draft a+b"
get doc
consistency
consistency r=3 w=1
consistency
create keyspace carts n=3 w=2
use carts
keyspaces
put cart/1 apples; get cart/1
replicas cart/1
status
ring
tracing on
get cart/1
put cart/1 pears w=3
tracing off
exit
get never-run
"#;
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // Round trip.
    assert!(stdout.contains("| alice "), "{stdout}");
    // Siblings with ids, then resolved to one value.
    let siblings = stdout
        .split("(2 siblings")
        .next()
        .expect("a read with 2 siblings");
    assert!(siblings.contains("| draft-a "), "{stdout}");
    assert!(siblings.contains("| \"draft b\"") || siblings.contains("| draft b "));
    assert!(
        stdout.contains("(2 siblings: concurrent writes"),
        "{stdout}"
    );
    let ids: Vec<&str> = siblings
        .lines()
        .rev()
        .take(2)
        .map(|l| l.split('|').next().unwrap().trim())
        .collect();
    for id in &ids {
        assert!(id.contains(':'), "sibling id {id:?} in {stdout}");
    }
    assert!(
        stdout.contains(&format!("replacing {}, {}", ids[1], ids[0])),
        "resolve names what it replaced: {stdout}"
    );
    let after = stdout.split("OK: resolved").nth(1).expect("resolved");
    assert!(after.contains("| draft a+b "), "{stdout}");
    assert!(after.contains("(1 value)"), "{stdout}");
    // Consistency.
    assert!(stdout.contains("consistency: r=default (2 for default), w=default (2 for default)"));
    assert!(stdout.contains("OK, consistency: r=3, w=1"), "{stdout}");
    // Keyspace created with n=3 w=2 and in use.
    assert!(
        stdout.contains("OK: keyspace carts created (n=3 r=2 w=2"),
        "{stdout}"
    );
    assert!(stdout.contains("now using keyspace carts"));
    assert!(stdout.contains("*carts"), "{stdout}");
    assert!(stdout.contains("| apples "), "{stdout}");
    // Replicas: three distinct nodes.
    let replicas = stdout
        .split("replicas of cart/1 in carts")
        .nth(1)
        .expect("replicas output");
    let rows: Vec<&str> = replicas
        .lines()
        .skip(3)
        .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 3, "{replicas}");
    for n in ["n1", "n2", "n3"] {
        assert!(rows.iter().any(|r| r.contains(n)), "{n} in {rows:?}");
    }
    // Status: three nodes, all up.
    assert!(stdout.contains("(3 node(s), 3 up;"), "{stdout}");
    assert!(stdout.contains("connected to n1"), "{stdout}");
    // Ring: every node with the default vnode count.
    let ring = stdout.split("primary share").nth(1).expect("ring");
    for n in ["n1", "n2", "n3"] {
        assert!(ring.contains(&format!(" {n}   |    256 |")), "{ring}");
    }
    // Tracing: the coordinator's own events, for a read and for a write.
    let traces: Vec<&str> = stdout
        .split("Tracing session (from the coordinator):")
        .skip(1)
        .collect();
    assert_eq!(traces.len(), 2, "{stdout}");
    assert!(
        traces[0].contains("coordinating read of cart/1"),
        "{}",
        traces[0]
    );
    assert!(traces[0].contains("replied after"), "{}", traces[0]);
    assert!(traces[0].contains("elapsed µs"));
    assert!(traces[1].contains("stored replica after"), "{}", traces[1]);
    // `exit` stopped the script.
    assert!(!stdout.contains("never-run") && !stderr.contains("never-run"));
    c.shutdown().await;
}

/// Goal: mistakes — bad syntax, an unknown command, an unknown keyspace, resolving a key
/// never read — each print one clear message on stderr, the shell keeps running the
/// commands after them, and the exit code is non-zero with a count at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_the_shell_running_and_fail_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = "put k \"unterminated\nfrobnicate\nput k v w=lots\nuse nosuch\nresolve k merged\nput k survived\nget k\n";
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error (line 1): unterminated quote"),
        "{stderr}"
    );
    assert!(stderr.contains("error (line 2): unknown command \"frobnicate\""));
    assert!(stderr.contains("error (line 3): w=\"lots\" is not a quorum"));
    assert!(stderr.contains("error (line 4): unknown keyspace \"nosuch\""));
    assert!(stderr.contains("error (line 5): k has not been read in this session"));
    assert!(stderr.contains("5 of 7 command(s) failed"), "{stderr}");
    assert!(stdout.contains("| survived "), "{stdout}");

    // A keyspace that exists on no node, reached through the server's own error.
    let out = shell(&c.cluster_file, &["-k", "ghost"], "get k\nstatus\n").await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("unknown keyspace \"ghost\""), "{stderr}");
    assert!(stdout.contains("(3 node(s)"), "{stdout}");
    c.shutdown().await;
}

/// Goal: a stopped node shows as down in `status` once a request has touched it, and a
/// request that needs it fails with the quorum error naming it; the shell goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_shows_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    let out = shell(&c.cluster_file, &[], "put k v\nget k r=all\nstatus\n").await;
    assert!(
        text(&out).0.contains("(3 node(s), 3 up;"),
        "{:?}",
        text(&out)
    );
    c.stop(2).await;
    // R=3 needs n3: the read fails and the coordinator records n3 as down. The state is
    // updated when the failure comes back, so poll `status` a bounded number of times.
    let out = shell(&c.cluster_file, &[], "get k r=all\nstatus\n").await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("quorum not reached: needed 3 replica(s), 2 answered in time"),
        "{stderr}"
    );
    assert!(stderr.contains("\n  n3: "), "per-replica cause: {stderr}");
    let shown_down = |status: &str| {
        status
            .lines()
            .any(|l| l.contains(" n3 ") && l.contains("| down"))
    };
    let last = if shown_down(&stdout) {
        stdout
    } else {
        let cluster_file = &c.cluster_file;
        eventually(
            "status to show n3 down",
            Duration::from_secs(10),
            Duration::from_millis(200),
            move || async move {
                let status = text(&shell(cluster_file, &[], "status\n").await).0;
                if shown_down(&status) {
                    Ok(status)
                } else {
                    Err(status)
                }
            },
        )
        .await
    };
    assert!(last.contains("2 up;"), "{last}");
    c.shutdown().await;
}

/// Goal: when the node the shell talks to dies mid-session, the next command goes to
/// another contact point, the shell says so, and `status` shows the new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_fails_over_to_another_contact_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    let mut child = Command::new(BIN)
        .arg("shell")
        .arg("--cluster")
        .arg(&c.cluster_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shell");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin.write_all(b"put k v\nstatus\n").await.unwrap();
    // Wait (bounded) until the first status is printed, so n1 dies between commands.
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seen = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push_str(&l);
            seen.push('\n');
            if l.contains("node(s)") {
                break;
            }
        }
        seen
    })
    .await
    .expect("first status within 30 s");
    assert!(seen.contains("connected to n1"), "{seen}");
    c.stop(0).await;
    stdin.write_all(b"get k\nstatus\n").await.unwrap();
    drop(stdin);
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        let mut rest = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            rest.push_str(&l);
            rest.push('\n');
        }
        rest
    })
    .await
    .expect("rest of the output within 60 s");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{rest}\n{stderr}");
    assert!(rest.contains("| v "), "{rest}");
    assert!(rest.contains("connected to n2"), "{rest}");
    assert!(
        stderr.contains("lost the connection to n1; now talking to n2"),
        "{stderr}"
    );
    c.shutdown().await;
}

/// Goal: `format json` / `--output json` print exactly one JSON object per command on
/// stdout — results and errors alike — and the objects carry the facts (sibling ids and
/// values, context, node states, quorum failure causes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = "format json\nput j one\nput j two\nget j\nstatus\nbad syntax here\nconsistency quorum\nget j\n";
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    let objs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(objs.len(), 8, "{stdout}");
    assert_eq!(objs[0]["value"], "json");
    assert_eq!(objs[1]["command"], "put");
    assert_eq!(objs[1]["blind"], true);
    let sib = objs[3]["siblings"].as_array().expect("siblings");
    assert_eq!(sib.len(), 2, "{}", objs[3]);
    let mut vals: Vec<&str> = sib.iter().map(|s| s["value"].as_str().unwrap()).collect();
    vals.sort();
    assert_eq!(vals, ["one", "two"]);
    assert!(sib.iter().all(|s| s["id"].as_str().unwrap().contains(':')));
    assert!(!objs[3]["context"].as_str().unwrap().is_empty());
    let nodes = objs[4]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    // Every node has answered or is still answering a request: none is down.
    assert!(nodes.iter().all(|n| n["state"] != "down"), "{}", objs[4]);
    assert_eq!(objs[5]["ok"], false);
    assert_eq!(objs[5]["kind"], "syntax");
    assert_eq!(objs[6]["effective_r"], 2);
    assert_eq!(objs[7]["r"], 2);

    // --output json from the start, and a quorum failure as a structured object.
    let out = shell(&c.cluster_file, &["--output", "json"], "get j r=4\n").await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one object");
    assert_eq!(v["ok"], false);
    assert_eq!(v["kind"], "invalid_request", "{v}");
    c.shutdown().await;
}

/// Goal: values that are not UTF-8, or that carry terminal control sequences, never reach
/// stdout raw: non-UTF-8 is shown as `base64:`, controls are escaped, in tables and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_never_printed_raw() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let client = client(&c);
    let o = RequestOptions::default();
    let binary = vec![0xff, 0xfe, 0x1b, b'[', b'2', b'J', 0x00, 0x9b];
    client
        .put("default", Key::parse("bin"), Some(binary.clone()), &o)
        .await
        .unwrap();
    client
        .put(
            "default",
            Key::parse("ansi"),
            Some(b"\x1b[31mred\x07\nnext".to_vec()),
            &o,
        )
        .await
        .unwrap();
    for args in [&[][..], &["--output", "json"][..]] {
        let out = shell(&c.cluster_file, args, "get bin\nget ansi\n").await;
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is valid UTF-8");
        assert!(
            !stdout.chars().any(|ch| ch.is_control() && ch != '\n'),
            "a control character reached stdout: {stdout:?}"
        );
        if args.is_empty() {
            assert!(stdout.contains("base64://4bWzJKAJs="), "{stdout}");
            assert!(stdout.contains(r#""\x1b[31mred\x07\nnext""#), "{stdout}");
        } else {
            assert!(stdout.contains(r#"{"base64":"//4bWzJKAJs="}"#), "{stdout}");
        }
    }
    c.shutdown().await;
}

/// Goal: `-e` runs `;`-separated commands and `-f` runs a file, each then exits; exit code
/// 0 when all succeed and 1 when one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_and_file_modes() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let out = shell(
        &c.cluster_file,
        &["-e", "put e \"one; two\"; get e"],
        "get ignored-stdin\n",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("| one; two "), "{stdout}");
    assert!(!stdout.contains("ignored"));
    let file = dir.path().join("script.qkv");
    std::fs::write(&file, "# setup\nget e\n\nnope\n").unwrap();
    let out = shell(&c.cluster_file, &["-f", file.to_str().unwrap()], "").await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("one; two"), "{stdout}");
    assert!(
        stderr.contains("error (line 4): unknown command \"nope\""),
        "{stderr}"
    );
    c.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The interactive shell in a real terminal.

/// A tmux server of our own (its socket inside the test's temporary directory, so it
/// neither meets the user's tmux nor leaves a socket file behind), killed on drop even if
/// the test fails.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "qkv"];
        args.extend_from_slice(keys);
        let o = self.cmd(&args);
        assert!(o.status.success(), "send-keys: {o:?}");
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "qkv"]).stdout).into_owned()
    }

    /// Wait (at most 20 s) until the screen satisfies `ok`; returns it.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        wait_for(
            what,
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let s = self.screen();
                if ok(&s) {
                    Ok(s)
                } else {
                    Err(format!("the screen is\n{s}"))
                }
            },
        )
    }

    /// The last non-blank line on the screen.
    fn last_line(&self) -> String {
        self.screen()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string()
    }

    fn start_shell(&self, cluster_file: &Path, history: &Path) {
        let command = format!(
            "{BIN} shell --cluster {} --history {}",
            cluster_file.display(),
            history.display()
        );
        let o = self.cmd(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            "qkv",
            &command,
        ]);
        assert!(o.status.success(), "new-session: {o:?}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn tmux_installed() -> bool {
    std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Goal: in a real terminal, `cons<Tab>` completes to `consistency`, `use d<Tab>` completes
/// a keyspace name fetched from the cluster, Ctrl-C drops a half-typed line and the shell
/// stays alive, Ctrl-D exits, and a command from a previous session comes back with Up
/// after restarting with the same --history file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_completion_history_and_ctrl_c_in_tmux() {
    if !tmux_installed() {
        println!("SKIPPED: tmux is not installed; the interactive terminal test did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let cluster_file: PathBuf = c.cluster_file.clone();
    let history = dir.path().join("history");
    let socket = dir.path().join("tmux.sock");
    // tmux and the waits are blocking; keep them off the runtime serving the cluster.
    tokio::task::spawn_blocking(move || {
        let t = Tmux { socket };
        t.start_shell(&cluster_file, &history);
        t.wait_for("the prompt", |s| s.contains("quorumkv:default>"));

        // Completion of a command name.
        t.send(&["cons", "Tab"]);
        t.wait_for("completion of cons", |s| {
            s.contains("quorumkv:default> consistency")
        });
        t.send(&["Enter"]);
        t.wait_for("consistency output", |s| {
            s.contains("consistency: r=default")
        });

        // Completion of a keyspace name from the cluster.
        t.send(&["use d", "Tab"]);
        t.wait_for("completion of the keyspace", |s| {
            s.contains("quorumkv:default> use default")
        });
        t.send(&["Enter"]);
        t.wait_for("use output", |s| s.contains("now using keyspace default"));

        // Ctrl-C drops the half-typed line; the shell is still alive and answers.
        t.send(&["put half typed", "C-c"]);
        t.wait_for("a fresh prompt after Ctrl-C", |_| {
            t.last_line().trim_end() == "quorumkv:default>"
        });
        t.send(&["get history-key", "Enter"]);
        t.wait_for("the get after Ctrl-C", |s| s.contains("(not found)"));
        assert!(
            !t.screen().contains("does not take"),
            "the cancelled line ran"
        );

        // Ctrl-D exits; the session (and pane) ends.
        t.send(&["C-d"]);
        wait_until(
            "the shell to exit on Ctrl-D",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || !t.cmd(&["has-session", "-t", "qkv"]).status.success(),
        );

        // Restart with the same history: Up recalls the last command.
        t.start_shell(&cluster_file, &history);
        t.wait_for("the prompt again", |s| s.contains("quorumkv:default>"));
        t.send(&["Up"]);
        t.wait_for("history recalled with Up", |s| {
            s.contains("quorumkv:default> get history-key")
        });
        // The half-typed, cancelled line never reached the history.
        t.send(&["Up", "Up", "Up"]);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!t.screen().contains("put half typed"), "{}", t.screen());
    })
    .await
    .expect("tmux steps");
    c.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Scan, batch, conditional writes and last-write-wins keyspaces.

/// Goal: a batch writes every item of one partition (a quoted value with spaces
/// included) and a scan then lists all of them in sort order with ids and contexts; a
/// page of limit=3 says how to continue (`scan post1 after=c2` / `next`), `next` shows
/// the rest and ends the scan, a further `next` is a clear error; an item read by scan
/// can be resolved; a batch spanning two partitions is refused with the node's error; the
/// shell keeps going and the exit code counts the two failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_then_scan_with_paging_and_next() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = r#"
batch post1="hello world" post1/c2=second post1/c1=first post1/c3=third
scan post1 limit=3
next
next
resolve post1/c1 "first (edited)"
scan post1 after=c2
batch a=1 b/x=2
scan post1 from=c1 to=c3
"#;
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("2 of 8 command(s) failed"), "{stderr}");
    // The batch: four items, each with its own id, in request order.
    let batch = stdout
        .split("OK: batch of 4 item(s) written atomically")
        .nth(1);
    let batch = batch.expect("batch output");
    let ids: Vec<&str> = batch
        .lines()
        .skip(3)
        .take(4)
        .map(|l| l.split('|').nth(1).unwrap_or_default().trim())
        .collect();
    assert_eq!(ids.len(), 4, "{batch}");
    assert!(ids.iter().all(|i| i.contains(':')), "{ids:?}");
    // First page: sort order, then how to go on.
    let pages: Vec<&str> = stdout.split("| context").skip(1).collect();
    assert!(pages.len() >= 4, "{stdout}");
    let page1 = pages[0];
    let order: Vec<usize> = [" post1 ", " post1/c1 ", " post1/c2 "]
        .iter()
        .map(|k| page1.find(k).unwrap_or_else(|| panic!("{k} in {page1}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{page1}");
    assert!(page1.contains("| hello world |"), "{page1}");
    assert!(
        page1.contains("r=2 (keyspace default), coordinator n1"),
        "{page1}"
    );
    assert!(!page1.contains("post1/c3"), "{page1}");
    assert!(
        page1.contains("(3 item(s); more: `scan post1 after=c2` or `next`)"),
        "{page1}"
    );
    // `next`: the rest, and the end.
    let page2 = pages[1];
    assert!(
        page2.contains(" post1/c3 ") && page2.contains("third"),
        "{page2}"
    );
    assert!(!page2.contains("post1/c1"), "{page2}");
    assert!(page2.contains("(1 item(s); end of scan)"), "{page2}");
    assert!(
        stderr.contains("error (line 5): no scan to continue"),
        "{stderr}"
    );
    // The scanned item's context was remembered: resolve replaced its one version.
    assert!(stdout.contains("OK: resolved as "), "{stdout}");
    assert!(
        stdout.contains(&format!(", replacing {}", ids[2])),
        "{stdout}\n{ids:?}"
    );
    // after=c2 starts after c2.
    let after = pages[2];
    assert!(
        after.contains("post1/c3") && !after.contains("post1/c2 "),
        "{after}"
    );
    // Cross-partition batch: the node's refusal, shown.
    assert!(
        stderr.contains("error (line 8): ") && stderr.contains("different partitions"),
        "{stderr}"
    );
    // from= inclusive, to= exclusive, and the edited value.
    let range = pages[3];
    assert!(range.contains("| first (edited) |"), "{range}");
    assert!(
        range.contains(" post1/c2 ") && !range.contains("post1/c3"),
        "{range}"
    );
    assert!(range.contains("(2 item(s); end of scan)"), "{range}");

    // JSON: one object per command, items in order with contexts, and paging facts.
    let out = shell(
        &c.cluster_file,
        &["--output", "json"],
        "scan post1 limit=2\nnext\nbatch post2/a=1 post2/b=2\n",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let objs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(objs.len(), 3, "{stdout}");
    assert_eq!(objs[0]["command"], "scan");
    let sorts: Vec<&str> = objs[0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sort"].as_str().unwrap())
        .collect();
    assert_eq!(sorts, ["", "c1"]);
    assert_eq!(objs[0]["more"], true);
    assert_eq!(objs[0]["next_after"], "c1");
    assert!(!objs[0]["items"][0]["context"].as_str().unwrap().is_empty());
    assert_eq!(objs[1]["items"][0]["sort"], "c2");
    assert_eq!(objs[2]["command"], "batch");
    assert_eq!(objs[2]["items"].as_array().unwrap().len(), 2);
    c.shutdown().await;
}

/// Goal: `put ... if-context` with the context of the last read succeeds while the key is
/// unchanged, and a second conditional put with that same (now stale) context is refused
/// with a clear conflict error that says nothing was written; the value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_put_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = "put doc v1\nget doc\nput doc v2 if-context\nput doc v3 if-context\nget doc\nput never-read x if-context\n";
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("OK: written (conditional: unchanged since the read) as "),
        "{stdout}"
    );
    assert!(
        stderr.contains("error (line 4): conflict: the write was NOT applied"),
        "{stderr}"
    );
    assert!(stderr.contains("error (line 6): never-read has not been read"));
    assert!(
        stdout.contains("| v2 ") && !stdout.contains("| v3 "),
        "{stdout}"
    );
    assert!(stderr.contains("2 of 6 command(s) failed"), "{stderr}");
    c.shutdown().await;
}

/// Goal: an lww-actor keyspace created from the shell (actor_priority=eu,us) shows its
/// policy in `use` and `keyspaces`; `put x ... actor=us` after `put x ... actor=eu` is
/// reported as superseded and leaves the eu value; the session default `actor` is used
/// by writes; a write without an actor is refused with the node's message. An lww-client
/// keyspace keeps the value with the highest ts= whatever the order of arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_actor_and_lww_client_keyspaces() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = r#"
create keyspace mods n=3 policy=lww-actor actor_priority=eu,us
use mods
put x from-eu actor=eu
put x from-us actor=us
get x
put y plain
actor us
actor
put y by-session-actor
get y
keyspaces
create keyspace cfg policy=lww-client read_repair=blocking
use cfg
put c new ts=200
put c old ts=100
get c
put c nots
"#;
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("2 of 17 command(s) failed"), "{stderr}");
    assert!(
        stdout.contains("OK: keyspace mods created (n=3 r=2 w=2 max_siblings=32 policy=lww-actor"),
        "{stdout}"
    );
    assert!(
        stdout.contains("now using keyspace mods (lww-actor: eu > us)"),
        "{stdout}"
    );
    assert!(stdout.contains("[actor=eu]"), "{stdout}");
    assert!(
        stdout.contains(
            "OK, but superseded: an existing version wins under lww-actor: eu > us [actor=us]"
        ),
        "{stdout}"
    );
    let read_x = stdout
        .split("OK, but superseded")
        .nth(1)
        .expect("superseded");
    assert!(
        read_x.contains("| from-eu ") && !read_x.contains("| from-us "),
        "{read_x}"
    );
    assert!(
        stderr.contains("error (line 7): ") && stderr.contains("needs an actor"),
        "{stderr}"
    );
    assert!(stdout.contains("actor: us"), "{stdout}");
    assert!(stdout.contains("| by-session-actor "), "{stdout}");
    assert!(stdout.contains("lww-actor: eu > us | async"), "{stdout}");
    // lww-client: the highest timestamp wins even when it arrived first.
    assert!(
        stdout.contains("now using keyspace cfg (lww-client; read repair blocking)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK, but superseded: an existing version wins under lww-client [ts=100]"),
        "{stdout}"
    );
    let read_c = stdout.split("[ts=100]").nth(1).expect("ts=100 write");
    assert!(
        read_c.contains("| new ") && !read_c.contains("| old "),
        "{read_c}"
    );
    assert!(
        stderr.contains("error (line 18): ") && stderr.contains("client timestamp"),
        "{stderr}"
    );
    c.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// CRDT keyspaces.

/// Goal: one keyspace per CRDT policy is created from the shell and listed with its
/// policy; counter, map and register commands work and `get`/`scan` show each value as
/// its type: a counter as a number (incr, incr N w=3, decr N; scan shows one per item), a
/// map as a field table with only the parts in use (hset, hincr ±N, hdel with the
/// context of the last read), a register as its value (rset, then rset after a read
/// replaces what the read saw, and a read with r=3 sees the new value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crdt_keyspaces_counter_map_register() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = r#"
create keyspace hits n=3 policy=counter
create keyspace tags n=3 policy=set
create keyspace profiles n=3 policy=map
create keyspace colors n=3 policy=register
keyspaces
use hits
incr page
incr page 10 w=3
decr page 4
get page
incr p/a; incr p/b 2; decr p/c
scan p
use profiles
hset u1 name alice
hincr u1 logins 3
hincr u1 logins -1
get u1
hdel u1 name
get u1
use colors
rset c blue
get c
rset c green w=1
get c r=3
"#;
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for policy in ["counter", "set", "map", "register"] {
        assert!(
            stdout.contains(&format!(
                "policy={policy} read_repair=async); stored on n1, n2, n3"
            )),
            "{policy}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("| {policy:<8} | async")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("now using keyspace hits (counter)"),
        "{stdout}"
    );
    assert!(stdout.contains("OK: incr page: counter +1"), "{stdout}");
    assert!(stdout.contains("OK: incr page: counter +10\ncontext: (empty)\nw=3,"));
    assert!(stdout.contains("OK: decr page: counter -4"), "{stdout}");
    assert!(
        stdout.contains(" counter\n---------\n       7\n(counter)"),
        "{stdout}"
    );
    assert!(stdout.contains(" p/a | -  | counter 1  |"), "{stdout}");
    assert!(stdout.contains(" p/c | -  | counter -1 |"), "{stdout}");
    assert!(stdout.contains("(3 item(s); end of scan)"), "{stdout}");
    // The map: register and counter columns, a field without a counter shows none.
    assert!(
        stdout.contains("OK: hset u1: field name = alice"),
        "{stdout}"
    );
    assert!(stdout.contains("OK: hincr u1: field logins counter -1"));
    assert!(
        stdout.contains(
            " field  | register | counter\n--------+----------+---------\n logins |          |       2\n name   | alice    |\n(map of 2 field(s))"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "OK: hdel u1: field name removed (with the context of your last read of the key)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            " field  | counter\n--------+---------\n logins |       2\n(map of 1 field(s))"
        ),
        "{stdout}"
    );
    // The register.
    assert!(stdout.contains("now using keyspace colors (register)"));
    assert!(
        stdout.contains(" value\n-------\n blue\n(register)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "OK: rset c: register = green (with the context of your last read of the key)"
        ),
        "{stdout}"
    );
    let last = stdout.rsplit("w=1,").next().expect("the w=1 write");
    assert!(
        last.contains(" green\n(register)") && !last.contains("blue") && last.contains("r=3,"),
        "{last}"
    );
    c.shutdown().await;
}

/// Goal: sets — sadd of several members (one quoted with a space), srem of a key never
/// read reads it first, srem after a read removes only what that read saw (a member added
/// after the read survives its remove: add wins), and a map field's set (hsadd, hsrem)
/// shows in a `set members` column.
///
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crdt_sets_and_map_set_fields() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = r#"
create keyspace tags n=3 policy=set
create keyspace profiles n=3 policy=map
use tags
sadd post1 red green "dark blue"
srem post1 green
get post1
sadd post1 yellow
srem post1 red yellow
get post1
use profiles
hsadd u1 roles admin editor
hset u1 name alice
get u1
hsrem u1 roles editor
get u1
"#;
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("OK: sadd post1: added red green dark blue"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: srem post1: removed green (read the key first"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" member\n-----------\n dark blue\n red\n(set of 2 member(s))"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: srem post1: removed red yellow (with the context of your last read"),
        "{stdout}"
    );
    // yellow was added after the read the remove used: it survives.
    assert!(
        stdout.contains(" member\n-----------\n dark blue\n yellow\n(set of 2 member(s))"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" field | register | set members\n-------+----------+-----------------\n name  | alice    |\n roles |          | {admin, editor}"),
        "{stdout}"
    );
    assert!(stdout.contains(" roles |          | {admin}"), "{stdout}");
    c.shutdown().await;
}

/// Goal: mistakes with CRDTs keep the shell running with a clear message — a CRDT command
/// in a siblings keyspace, a set command in a counter keyspace (both name the commands that
/// do apply), put in a counter keyspace (the node refuses it), a negative incr — and the
/// commands after them run. In JSON, an update, a CRDT read and a scan are one object
/// each, the value tagged with its type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crdt_errors_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = r#"
incr k
create keyspace hits policy=counter
use hits
sadd k a
put k 5
incr k -2
incr k 2
get k
"#;
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "error (line 2): incr does not apply to keyspace default (policy siblings); incr \
             needs a counter keyspace; in default use put, delete, resolve, batch"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("error (line 5): sadd does not apply to keyspace hits (policy counter); sadd needs a set keyspace; in hits use incr, decr"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error (line 6): ") && stderr.contains("put is not supported"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error (line 7): \"-2\" is not a count") && stderr.contains("decr"),
        "{stderr}"
    );
    assert!(stderr.contains("4 of 8 command(s) failed"), "{stderr}");
    assert!(stdout.contains("       2\n(counter)"), "{stdout}");

    let out = shell(
        &c.cluster_file,
        &["--output", "json", "-k", "hits"],
        "incr j 3\nget j\nscan j\n",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let objs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(objs.len(), 3, "{stdout}");
    assert_eq!(objs[0]["command"], "incr");
    assert_eq!(objs[0]["op"]["counter_add"], 3);
    assert_eq!(objs[0]["context_from"], "none");
    assert_eq!(
        objs[1]["crdt"],
        serde_json::json!({"type": "counter", "value": 3})
    );
    assert_eq!(
        objs[2]["items"][0]["crdt"],
        serde_json::json!({"type": "counter", "value": 3})
    );
    c.shutdown().await;
}

/// Goal: `--node NAME` makes the shell talk to that node only (it coordinates), and an
/// unknown name is refused with the known ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_option_pins_the_contact_point() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let out = shell(
        &c.cluster_file,
        &["--node", "n2", "-e", "status; put k v"],
        "",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("connected to n2"), "{stdout}");
    assert!(stdout.contains("coordinator n2"), "{stdout}");
    let out = shell(&c.cluster_file, &["--node", "n9", "-e", "status"], "").await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("--node n9: not a contact point") && stderr.contains("n1"),
        "{stderr}"
    );
    c.shutdown().await;
}

/// Goal: `stats` shows the contacted node's own latency histograms (coordinator rows for
/// the operations just run, replica rows for what it stored), in a table and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shows_node_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let out = shell(&c.cluster_file, &[], "put a 1\nput b 2\nget a\nstats\n").await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("latency of n1 in microseconds"), "{stdout}");
    let put_row = stdout
        .lines()
        .find(|l| l.contains("coordinator") && l.contains(" put "))
        .unwrap_or_else(|| panic!("no coordinator put row:\n{stdout}"));
    assert!(
        put_row.split('|').nth(2).map(str::trim) == Some("2"),
        "{put_row}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("replica") && l.contains(" write ")),
        "{stdout}"
    );
    let out = shell(&c.cluster_file, &["--output", "json"], "stats\n").await;
    let (stdout, _) = text(&out);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["command"], "stats");
    assert!(v["latencies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["op"] == "get" && l["count"] == 1));
    c.shutdown().await;
}

/// Goal: the shell's `cluster` commands reach the layouts: `cluster status` shows the first
/// layout, a join is staged and shows in `plan` (about a quarter of the replica slots move,
/// all to the newcomer) and in `status`, bad input is refused naming the problem, and
/// `abort` drops the staged change; JSON output carries the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_stage_plan_and_abort() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let script = "cluster status\ncluster join n4 127.0.0.1:9\ncluster join n5 nowhere\n\
                  cluster leave n9\ncluster plan\ncluster status\ncluster abort\n";
    let out = shell(&c.cluster_file, &[], script).await;
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("current v1"), "{stdout}");
    assert!(stdout.contains("join n4 at 127.0.0.1:9"), "{stdout}");
    assert!(stderr.contains("\"nowhere\" is not an address"), "{stderr}");
    assert!(
        stderr.contains("n9 is not a member of layout v1"),
        "{stderr}"
    );
    assert!(stdout.contains("plan for layout v2"), "{stdout}");
    assert!(stdout.contains("staged on n1 (on v1)"), "{stdout}");
    assert!(stdout.contains("dropped 1 staged change(s)"), "{stdout}");
    assert!(stderr.contains("2 of 7 command(s) failed"), "{stderr}");
    let out = shell(
        &c.cluster_file,
        &["--output", "json"],
        "cluster join n4 127.0.0.1:9\ncluster plan\ncluster abort\n",
    )
    .await;
    let (stdout, _) = text(&out);
    let plan: serde_json::Value = serde_json::from_str(stdout.lines().nth(1).unwrap()).unwrap();
    let moved = plan["plan"]["moved_share"].as_f64().unwrap();
    assert!((0.2..0.3).contains(&moved), "{plan}");
    c.shutdown().await;
}
