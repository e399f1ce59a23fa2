//! End-to-end tests of the real `jepsen-like` binary on the shipped
//! example histories and on malformed input: verdicts, exit codes, JSON
//! output, HTML output, conversion and generation.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jepsen-like"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/histories")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run jepsen-like")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check(model: &str, file: &str) -> Output {
    let path = example(file);
    run(&["check", "--model", model, path.to_str().expect("utf8 path")])
}

/// Goal: every shipped example gets its documented verdict and exit code
/// (0 valid, 1 invalid).
#[test]
fn examples_have_expected_verdicts() {
    let cases = [
        ("cas-register", "cas-register-valid.edn", 0, "valid"),
        ("cas-register", "cas-register-invalid.edn", 1, "INVALID"),
        ("multi-register", "multi-register-valid.edn", 0, "valid"),
        ("kv", "multi-register-invalid.edn", 1, "INVALID"),
        ("register", "register-valid.jsonl", 0, "valid"),
        ("set", "set-valid.edn", 0, "valid"),
        ("counter", "counter-invalid.edn", 1, "INVALID"),
        ("sibling-register", "sibling-register-valid.edn", 0, "valid"),
        (
            "sibling-register",
            "sibling-register-invalid.edn",
            1,
            "INVALID",
        ),
        // One EDN list of operations with comments (knossos's form).
        ("cas-register", "knossos-list-valid.edn", 0, "valid"),
        ("cas-register", "knossos-list-invalid.edn", 1, "INVALID"),
    ];
    for (model, file, code, word) in cases {
        let out = check(model, file);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(code), "{file}: {text}");
        assert!(
            text.contains(&format!(
                ": {word} ({}",
                if model == "kv" {
                    "multi-register"
                } else {
                    model
                }
            )),
            "{file}: {text}"
        );
    }
}

/// Goal: the invalid cas-register example names the stale read (line 11)
/// and the prefix it could not follow, in text and in JSON.
#[test]
fn invalid_report_names_the_op() {
    let text = stdout(&check("cas-register", "cas-register-invalid.edn"));
    assert!(text.contains("cannot linearize process 1 read 1"), "{text}");
    assert!(text.contains("line 11"), "{text}");
    assert!(
        text.contains("prefix found (2 ops), register value 2"),
        "{text}"
    );

    let path = example("cas-register-invalid.edn");
    let out = run(&[
        "check",
        "-m",
        "cas-register",
        "--output",
        "json",
        path.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    let result = &json["files"][0]["result"];
    assert_eq!(result["verdict"], "invalid");
    assert_eq!(result["failures"][0]["op"]["line"], 11);
    assert_eq!(result["failures"][0]["prefix_len"], 2);
    assert_eq!(json["exit_code"], 1);
}

/// Goal: `--model sibling-register` names the findings of the invalid
/// example (text and JSON, with operation ids), a key with acknowledged
/// writes but no final read gives unknown with exit 2, and `gen` refuses
/// the model instead of writing a history of another kind.
#[test]
fn sibling_register_reports_and_exit_codes() {
    let text = stdout(&check("sibling-register", "sibling-register-invalid.edn"));
    assert!(text.contains("key :a (final read op 4):"), "{text}");
    assert!(text.contains("lost: 2 (write op 1)"), "{text}");
    assert!(
        text.contains("resurrected: 1 (write op 0; covered by op 3)"),
        "{text}"
    );

    let path = example("sibling-register-invalid.edn");
    let out = run(&[
        "check",
        "-m",
        "sibling-register",
        "--output",
        "json",
        path.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    let key = &json["files"][0]["result"]["siblings"]["keys"][0];
    assert_eq!(key["verdict"], "invalid");
    assert_eq!(key["lost"][0]["value"], 2);
    assert_eq!(key["resurrected"][0]["covered_by"][0], 3);

    let dir = tempfile::tempdir().expect("tempdir");
    let unread = dir.path().join("unread.edn");
    std::fs::write(
        &unread,
        "{:type :invoke, :f :write, :value [:a 1 []], :process 0}\n\
         {:type :ok, :f :write, :value [:a 1 []], :process 0}\n",
    )
    .expect("write");
    let out = run(&[
        "check",
        "-m",
        "sibling-register",
        unread.to_str().expect("utf8"),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("UNKNOWN (sibling-register)"), "{text}");
    assert!(text.contains("keys not decided: :a"), "{text}");

    let out = run(&["gen", "-m", "sibling-register"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Goal: a directory argument checks each history file in it; with a mix
/// of verdicts the exit code is 1.
#[test]
fn directory_of_histories() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["cas-register-valid.edn", "cas-register-invalid.edn"] {
        std::fs::copy(example(f), dir.path().join(f)).expect("copy");
    }
    let out = run(&[
        "check",
        "-m",
        "cas-register",
        dir.path().to_str().expect("utf8"),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cas-register-valid.edn: valid"), "{text}");
    assert!(text.contains("cas-register-invalid.edn: INVALID"), "{text}");
}

/// Goal: malformed input is an error naming the line, with exit code 2,
/// never a panic.
#[test]
fn malformed_input_reports_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "bad.edn",
            "{:type :invoke, :f :read, :process 0}\n{:type :ok, :f :read\n",
            "line 2",
        ),
        (
            "bad2.edn",
            "{:type :invoke, :f :read, :process 0}\n\n{:type :bogus, :f :read, :process 0}\n",
            "line 3",
        ),
        (
            "bad.jsonl",
            "{\"type\":\"invoke\",\"f\":\"read\",\"process\":0}\n{\"type\":\n",
            "line 2",
        ),
        (
            "bad3.edn",
            "{:type :invoke, :f :read, :process 0}\n{:type :invoke, :f :read, :process 0}\n",
            "line 2",
        ),
    ];
    for (name, body, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        let out = run(&["check", "-m", "register", path.to_str().expect("utf8")]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {text}");
        assert!(
            text.contains("ERROR") && text.contains(needle),
            "{name}: {text}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{name}"
        );
    }
    // A cas in a plain register history is a model error, also exit 2.
    let out = check("register", "cas-register-valid.edn");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
}

/// Goal: a zero timeout on a non-trivial history yields unknown, exit 2.
#[test]
fn timeout_gives_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.edn");
    let gen = run(&[
        "gen",
        "-m",
        "multi-register",
        "--keys",
        "20",
        "--ops-per-key",
        "2000",
        "-o",
        path.to_str().expect("utf8"),
    ]);
    assert!(gen.status.success());
    let out = run(&[
        "check",
        "-m",
        "kv",
        "--timeout",
        "0",
        "--output",
        "json",
        path.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["files"][0]["result"]["verdict"], "unknown");
}

/// Goal: the HTML timeline is written, self-contained, and highlights
/// the failing op.
#[test]
fn html_timeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let html = dir.path().join("t.html");
    let path = example("cas-register-invalid.edn");
    let out = run(&[
        "check",
        "-m",
        "cas-register",
        "--html",
        html.to_str().expect("utf8"),
        path.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("class='op ok bad'"), "failing op highlighted");
    assert!(page.contains("process 1"));
    assert!(
        !page.contains("<script src") && !page.contains("http"),
        "self-contained"
    );
}

/// Goal: convert EDN -> JSONL -> EDN keeps the verdict, and gen output
/// checks valid (or invalid with --corrupt on a set).
#[test]
fn convert_and_gen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jsonl = dir.path().join("h.jsonl");
    let edn = dir.path().join("h.edn");
    let src = example("multi-register-invalid.edn");
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    assert!(run(&["convert", "--to", "jsonl", &s(&src), &s(&jsonl)])
        .status
        .success());
    assert!(run(&["convert", "--to", "edn", &s(&jsonl), &s(&edn)])
        .status
        .success());
    assert_eq!(
        run(&["check", "-m", "kv", &s(&jsonl)]).status.code(),
        Some(1)
    );
    assert_eq!(run(&["check", "-m", "kv", &s(&edn)]).status.code(), Some(1));

    let gen = dir.path().join("g.jsonl");
    assert!(run(&[
        "gen",
        "-m",
        "cas-register",
        "--ops-per-key",
        "300",
        "--format",
        "jsonl",
        "-o",
        &s(&gen)
    ])
    .status
    .success());
    assert_eq!(
        run(&["check", "-m", "cas-register", &s(&gen)])
            .status
            .code(),
        Some(0)
    );
    let bad = dir.path().join("bad.edn");
    assert!(run(&[
        "gen",
        "-m",
        "set",
        "--ops-per-key",
        "300",
        "--corrupt",
        "-o",
        &s(&bad)
    ])
    .status
    .success());
    assert_eq!(
        run(&["check", "-m", "set", &s(&bad)]).status.code(),
        Some(1)
    );
}

/// Writes a multi-register history: `hard` keys built to exhaust the
/// caches (see `gen::hard_key`), then `easy` quick keys, the last of which
/// is stale (not linearizable).
fn exhausting_history(path: &Path, hard: i64, info_writes: usize, easy: i64) {
    let mut ops = Vec::new();
    for k in 0..hard {
        ops.extend(jepsen_like::gen::hard_key(k, info_writes, k * 100));
    }
    for k in hard..hard + easy {
        ops.extend(jepsen_like::gen::easy_key(
            k,
            10,
            k == hard + easy - 1,
            k * 100,
        ));
    }
    let mut text = Vec::new();
    jepsen_like::Format::Edn
        .write(&jepsen_like::History::new(ops), &mut text)
        .expect("write");
    std::fs::write(path, text).expect("write history");
}

/// Goal: `--memory-limit-mb` bounds the real memory of the process (peak
/// resident set, as the OS counts it) on a history built to exhaust the
/// caches, with two worker threads and every key judged: the exhausted
/// keys end unknown instead of the process growing (without the budget
/// these keys need gigabytes), within the documented margin of 16 MiB over
/// the budget; the easy failure is still reported (exit 1).
#[test]
fn memory_limit_bounds_resident_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("exhausting.edn");
    exhausting_history(&path, 3, 26, 3);
    let limit_mb = 16u64;
    let out = run(&[
        "check",
        "-m",
        "kv",
        "--all-failures",
        "--threads",
        "2",
        "--memory-limit-mb",
        &limit_mb.to_string(),
        "--output",
        "json",
        path.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let result = &json["files"][0]["result"];
    assert_eq!(result["unknown_keys"], serde_json::json!([0, 1, 2]));
    assert_eq!(result["failures"][0]["key"], 5);
    let rss = json["max_rss_bytes"].as_u64();
    if cfg!(target_os = "linux") {
        let rss = rss.expect("VmHWM on Linux");
        assert!(
            rss <= (limit_mb + 16) << 20,
            "peak RSS {} MiB over a {limit_mb} MiB budget",
            rss >> 20
        );
    }
    let heap = &result["heap"];
    assert!(heap["peak_bytes"].as_u64().expect("heap figures") <= (limit_mb << 20) + (1 << 20));
}

/// Goal: by default the check stops at the first non-linearizable key and
/// says how many keys it left unchecked; `--all-failures` judges them all
/// (here the explosive keys, which then end unknown on a small budget).
#[test]
fn early_verdict_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("exhausting.edn");
    exhausting_history(&path, 2, 30, 3);
    let p = path.to_str().expect("utf8");
    let out = run(&["check", "-m", "kv", p]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("key 4: cannot linearize"), "{text}");
    assert!(
        text.contains("stopped at the first non-linearizable key: 2 of 5 keys left unchecked"),
        "{text}"
    );
    let out = run(&[
        "check",
        "-m",
        "kv",
        "--all-failures",
        "--memory-limit-mb",
        "8",
        p,
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("left unchecked"), "{text}");
    assert!(text.contains("keys not decided: 0 1"), "{text}");
}
