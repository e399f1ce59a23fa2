//! Client subcommands: put, get, delete, keyspaces, status, replicas, and the CRDT
//! operations (incr, decr, sadd, srem, rset, hset, hincr, hsadd, hsrem, hdel).
//!
//! Output is text for people by default, `--output json` for scripts. Errors go to stderr
//! with a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use clap::{Args, ValueEnum};
use quorumkv::client::{Client, RequestOptions};
use quorumkv::config::ClusterFile;
use quorumkv::key::Key;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::proto::{CrdtOp, CrdtValue, FieldOp, GetResponse, PutResponse, TraceEvent};
use serde_json::json;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Client connection file written by `dev-cluster` or `cluster-up`.
    #[arg(long, env = "QUORUMKV_CLUSTER", default_value_os_t = super::default_cluster_file())]
    cluster: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Talk only to this node (by name, from the cluster file's contact points): it
    /// coordinates the request, and no other contact point is tried if it is unreachable.
    #[arg(long)]
    node: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    c: ClusterArgs,
    /// Keyspace (default: the cluster file's `keyspace`).
    #[arg(long, short = 'k')]
    keyspace: Option<String>,
    /// Print the coordinator's timeline of the request.
    #[arg(long)]
    trace: bool,
    /// Key: `partition` or `partition/sort`.
    key: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    k: KeyArgs,
    /// Read quorum for this request.
    #[arg(long, short = 'r', conflicts_with = "replica")]
    r: Option<u8>,
    /// Primary read quorum: fail unless this many of the key's primary replicas answer.
    #[arg(long, conflicts_with = "replica")]
    pr: Option<u8>,
    /// Show node NODE's own stored copy: no quorum, no other replica, no read repair (to
    /// see replicas diverge and converge).
    #[arg(long, value_name = "NODE")]
    replica: Option<String>,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    k: KeyArgs,
    /// The value (UTF-8 text).
    value: String,
    /// Write quorum for this request.
    #[arg(long, short = 'w')]
    w: Option<u8>,
    /// Primary write quorum: fail unless this many of the key's primary replicas (not
    /// stand-ins holding hints) store the write.
    #[arg(long)]
    pw: Option<u8>,
    /// Causal context from a `get`: replaces exactly the versions that read returned.
    /// Without it, the write becomes a sibling of whatever exists.
    #[arg(long)]
    context: Option<String>,
    /// Conditional write: fail with a conflict if the key changed since the read that
    /// produced --context C (optimistic concurrency; not linearizable).
    #[arg(long, value_name = "C", conflicts_with = "context")]
    if_context: Option<String>,
    /// Client timestamp (required in lww-client keyspaces; the highest wins).
    #[arg(long)]
    timestamp: Option<u64>,
    /// Who writes (required in lww-actor keyspaces; the keyspace's priority decides).
    #[arg(long)]
    actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    c: ClusterArgs,
    /// Keyspace (default: the cluster file's `keyspace`).
    #[arg(long, short = 'k')]
    keyspace: Option<String>,
    /// Read quorum for this request.
    #[arg(long, short = 'r')]
    r: Option<u8>,
    /// First sort key (inclusive).
    #[arg(long, default_value = "")]
    from: String,
    /// Start strictly after this sort key (to continue from a previous page's last item).
    #[arg(long, conflicts_with = "from")]
    after: Option<String>,
    /// End sort key (exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Most items per page (the node caps it at 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print the coordinator's timeline of the request.
    #[arg(long)]
    trace: bool,
    /// The partition key.
    partition: String,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(flatten)]
    c: ClusterArgs,
    /// Keyspace (default: the cluster file's `keyspace`).
    #[arg(long, short = 'k')]
    keyspace: Option<String>,
    /// Write quorum for this request.
    #[arg(long, short = 'w')]
    w: Option<u8>,
    /// Print the coordinator's timeline of the request.
    #[arg(long)]
    trace: bool,
    /// Items as KEY=VALUE (blind writes); every KEY must be in the same partition, e.g.
    /// `post1=hello post1/c1=first!`.
    #[arg(required = true)]
    items: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    k: KeyArgs,
    /// Write quorum for this request.
    #[arg(long, short = 'w')]
    w: Option<u8>,
    /// Causal context from a `get`.
    #[arg(long)]
    context: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateKeyspaceArgs {
    #[command(flatten)]
    c: ClusterArgs,
    /// Keyspace name.
    name: String,
    /// Replicas per key.
    #[arg(long, short = 'n', default_value_t = quorumkv::keyspace::DEFAULT_N)]
    n: u8,
    /// Default read quorum.
    #[arg(long, short = 'r', default_value_t = quorumkv::keyspace::DEFAULT_R)]
    r: u8,
    /// Default write quorum.
    #[arg(long, short = 'w', default_value_t = quorumkv::keyspace::DEFAULT_W)]
    w: u8,
    /// Most siblings per key.
    #[arg(long, default_value_t = quorumkv::keyspace::DEFAULT_MAX_SIBLINGS)]
    max_siblings: u16,
    /// Read repair: async, blocking (answer only once R replicas hold the merged value)
    /// or off.
    #[arg(long, default_value = "async")]
    read_repair: quorumkv::keyspace::ReadRepair,
    /// Conflict policy: siblings, lww-timestamp, lww-actor, lww-client, or a CRDT:
    /// counter, set, map, register.
    #[arg(long, default_value = "siblings")]
    policy: quorumkv::keyspace::ConflictPolicy,
    /// For lww-actor: actors from highest to lowest priority, comma-separated.
    #[arg(long, value_delimiter = ',')]
    actor_priority: Vec<String>,
    /// Client certificate names that may read, comma-separated (default: every client;
    /// `--readers ''`: admins only).
    #[arg(long, value_delimiter = ',')]
    readers: Option<Vec<String>>,
    /// Client certificate names that may write, comma-separated (default: every client;
    /// `--writers ''`: admins only).
    #[arg(long, value_delimiter = ',')]
    writers: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct DropKeyspaceArgs {
    #[command(flatten)]
    c: ClusterArgs,
    /// Keyspace name.
    name: String,
}

/// A grant list from the command line: empty entries dropped, so `''` means nobody.
fn grant_list(names: &Option<Vec<String>>) -> Option<Vec<String>> {
    names
        .as_ref()
        .map(|v| v.iter().filter(|n| !n.is_empty()).cloned().collect())
}

#[derive(Debug, Args)]
pub struct ReplicasArgs {
    #[command(flatten)]
    k: KeyArgs,
}

/// Connect and run `f` on a fresh runtime.
fn with_client<T>(
    args: &ClusterArgs,
    f: impl FnOnce(
        std::sync::Arc<Client>,
        ClusterFile,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>>>>,
) -> anyhow::Result<T> {
    let mut cf = ClusterFile::load(&args.cluster).with_context(|| {
        "no cluster to talk to: start one with `scripts/dev.sh` (or `quorumkv dev-cluster`), or pass --cluster FILE".to_string()
    })?;
    if let Some(node) = &args.node {
        cf = cf.only(node).with_context(|| {
            let known: Vec<&str> = cf.contact_points.iter().map(|m| m.name.as_str()).collect();
            format!(
                "--node {node}: not a contact point of {} (known: {})",
                args.cluster.display(),
                known.join(", ")
            )
        })?;
    }
    let rt = super::runtime()?;
    rt.block_on(async move {
        let client = Client::new(&cf)?;
        let result = f(std::sync::Arc::clone(&client), cf).await;
        client.close().await;
        result
    })
}

fn keyspace_of(k: &KeyArgs, cf: &ClusterFile) -> String {
    k.keyspace.clone().unwrap_or_else(|| cf.keyspace.clone())
}

/// A value for display: UTF-8 text as is, anything else as base64 (never raw bytes).
pub fn printable(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => s.to_string(),
        _ => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(v)
        ),
    }
}

fn json_value(v: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(v) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(v) }),
    }
}

fn print_trace(trace: &[TraceEvent]) {
    if trace.is_empty() {
        return;
    }
    eprintln!("{:>10}  {:<6}  activity", "elapsed µs", "node");
    for t in trace {
        eprintln!("{:>10}  {:<6}  {}", t.elapsed_us, t.node, t.activity);
    }
}

fn trace_json(trace: &[TraceEvent]) -> serde_json::Value {
    serde_json::to_value(trace).unwrap_or(serde_json::Value::Null)
}

pub fn get(a: GetArgs) -> anyhow::Result<ExitCode> {
    let output = a.k.c.output;
    let key_text = a.k.key.clone();
    if let Some(node) = a.replica.clone() {
        return replica_get(a, node);
    }
    let res: GetResponse = with_client(&a.k.c.clone(), |client, cf| {
        let ks = keyspace_of(&a.k, &cf);
        let opts = RequestOptions {
            r: a.r,
            pr: a.pr,
            trace: a.k.trace,
            ..Default::default()
        };
        Box::pin(async move { Ok(client.get(&ks, Key::parse(&a.k.key), &opts).await?) })
    })?;
    print_get(&res, output, &key_text, json!({}))
}

/// `get --replica NODE`: that node's own copy, asked of that node only.
fn replica_get(a: GetArgs, node: String) -> anyhow::Result<ExitCode> {
    let output = a.k.c.output;
    let key_text = a.k.key.clone();
    if a.k.c.node.as_ref().is_some_and(|n| *n != node) {
        anyhow::bail!(
            "--replica {node} asks {node} itself; it cannot be combined with --node {}",
            a.k.c.node.as_deref().unwrap_or_default()
        );
    }
    if let Ok(cf) = ClusterFile::load(&a.k.c.cluster) {
        if !cf.contact_points.iter().any(|m| m.name == node) {
            let known: Vec<&str> = cf.contact_points.iter().map(|m| m.name.as_str()).collect();
            anyhow::bail!(
                "--replica {node}: not a node of {} (known: {})",
                a.k.c.cluster.display(),
                known.join(", ")
            );
        }
    }
    let mut c = a.k.c.clone();
    c.node = Some(node);
    let (node, owner, copy) = with_client(&c, |client, cf| {
        let ks = keyspace_of(&a.k, &cf);
        Box::pin(async move { Ok(client.replica_get(&ks, Key::parse(&a.k.key)).await?) })
    })?;
    if output == Output::Text {
        println!(
            "{node}'s own copy ({})",
            if owner {
                "a replica of this key"
            } else {
                "not a replica of this key"
            }
        );
    }
    print_get(
        &copy,
        output,
        &key_text,
        json!({"node": node, "replica": owner}),
    )
}

/// Print a read's answer; `extra` fields are added to the JSON form.
fn print_get(
    res: &GetResponse,
    output: Output,
    key_text: &str,
    extra: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let with_extra = |mut out: serde_json::Value| {
        if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        out
    };
    if let Some(v) = &res.crdt {
        if output == Output::Json {
            let out = with_extra(
                json!({"key": key_text, "crdt": crdt_json(v), "context": res.context, "trace": trace_json(&res.trace)}),
            );
            println!("{out}");
        } else {
            print_trace(&res.trace);
            print_crdt(v);
            if !res.context.is_empty() {
                println!("context: {}", res.context);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if output == Output::Json {
        let out = with_extra(json!({
            "key": key_text,
            "values": res.values.iter().map(|s| json_value(&s.value)).collect::<Vec<_>>(),
            "siblings": res.values.iter().map(|s| json!({"value": json_value(&s.value), "id": s.dot, "written_at_ms": s.written_at_ms})).collect::<Vec<_>>(),
            "tombstones": res.tombstones,
            "context": res.context,
            "trace": trace_json(&res.trace),
        }));
        println!("{out}");
    } else {
        print_trace(&res.trace);
        match res.values.len() {
            0 if res.tombstones > 0 => println!("(not found: deleted)"),
            0 => println!("(not found)"),
            1 => println!("{}", printable(&res.values[0].value)),
            n => {
                println!("{n} siblings:");
                for s in &res.values {
                    println!("  [{}] {}", s.dot, printable(&s.value));
                }
            }
        }
        if res.tombstones > 0 && !res.values.is_empty() {
            println!("(and {} concurrent delete(s))", res.tombstones);
        }
        if !res.context.is_empty() {
            println!("context: {}", res.context);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_put(res: &PutResponse, output: Output, key: &str) {
    if output == Output::Json {
        println!(
            "{}",
            json!({"key": key, "ok": true, "id": res.dot, "context": res.context, "trace": trace_json(&res.trace)})
        );
    } else {
        print_trace(&res.trace);
        if res.dot.is_empty() {
            // Under a last-write-wins policy the lead already held a version that wins.
            println!("OK, but superseded: an existing version wins under the keyspace's last-write-wins policy");
        } else {
            println!("OK [{}]", res.dot);
        }
        println!("context: {}", res.context);
    }
}

pub fn put(a: PutArgs) -> anyhow::Result<ExitCode> {
    let output = a.k.c.output;
    let key_text = a.k.key.clone();
    let res = with_client(&a.k.c.clone(), |client, cf| {
        let ks = keyspace_of(&a.k, &cf);
        let opts = RequestOptions {
            w: a.w,
            pw: a.pw,
            context: a.context.clone().or(a.if_context.clone()),
            trace: a.k.trace,
            if_context: a.if_context.is_some(),
            timestamp: a.timestamp,
            actor: a.actor.clone(),
            ..Default::default()
        };
        Box::pin(async move {
            Ok(client
                .put(&ks, Key::parse(&a.k.key), Some(a.value.into_bytes()), &opts)
                .await?)
        })
    })?;
    print_put(&res, output, &key_text);
    Ok(ExitCode::SUCCESS)
}

pub fn delete(a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let output = a.k.c.output;
    let key_text = a.k.key.clone();
    let res = with_client(&a.k.c.clone(), |client, cf| {
        let ks = keyspace_of(&a.k, &cf);
        let opts = RequestOptions {
            w: a.w,
            context: a.context.clone(),
            trace: a.k.trace,
            ..Default::default()
        };
        Box::pin(async move { Ok(client.delete(&ks, Key::parse(&a.k.key), &opts).await?) })
    })?;
    print_put(&res, output, &key_text);
    Ok(ExitCode::SUCCESS)
}

pub fn create_keyspace(a: CreateKeyspaceArgs) -> anyhow::Result<ExitCode> {
    let mut def = KeyspaceDef::new(&a.name, a.n, a.r, a.w);
    def.max_siblings = a.max_siblings;
    def.read_repair = a.read_repair;
    def.policy = a.policy;
    def.actor_priority = a.actor_priority.clone();
    def.readers = grant_list(&a.readers);
    def.writers = grant_list(&a.writers);
    let output = a.c.output;
    let d = def.clone();
    let (acked, missing) = with_client(&a.c, |client, _| {
        Box::pin(async move { Ok(client.create_keyspace(d).await?) })
    })?;
    if output == Output::Json {
        println!(
            "{}",
            json!({"keyspace": def, "acked": acked, "missing": missing})
        );
    } else {
        println!(
            "keyspace {} created ({}); stored on {:?}",
            def.name,
            def.summary(),
            acked
        );
        if !missing.is_empty() {
            println!(
                "not reached: {missing:?} (they learn it from the first request that names it)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn drop_keyspace(a: DropKeyspaceArgs) -> anyhow::Result<ExitCode> {
    let name = a.name.clone();
    let (acked, missing) = with_client(&a.c, |client, _| {
        Box::pin(async move { Ok(client.drop_keyspace(&name).await?) })
    })?;
    if a.c.output == Output::Json {
        println!(
            "{}",
            json!({"keyspace": a.name, "acked": acked, "missing": missing})
        );
    } else {
        println!(
            "keyspace {} dropped and its data deleted on {:?}",
            a.name, acked
        );
        if !missing.is_empty() {
            println!(
                "not reached: {missing:?} (run drop-keyspace again once they are up; until then they keep the keyspace)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn keyspaces(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let list = with_client(&a, |client, _| {
        Box::pin(async move { Ok(client.keyspaces().await?) })
    })?;
    if a.output == Output::Json {
        println!("{}", json!(list));
    } else {
        println!(
            "{:<20} {:>3} {:>3} {:>3} {:>12}  {:<13} read_repair",
            "keyspace", "n", "r", "w", "max_siblings", "policy"
        );
        for k in list {
            println!(
                "{:<20} {:>3} {:>3} {:>3} {:>12}  {:<13} {}",
                k.name,
                k.n,
                k.r,
                k.w,
                k.max_siblings,
                k.policy.to_string(),
                k.read_repair
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let ((node, nodes), layouts) = with_client(&a, |client, _| {
        Box::pin(async move {
            let status = client.status().await?;
            // The layout line is a help, not the answer: a node that cannot say still
            // shows its status.
            let layouts = client.cluster_status().await.ok();
            Ok((status, layouts))
        })
    })?;
    let layout_line = layouts.as_ref().map(|r| {
        let h = &r.history;
        let live: Vec<String> = h.live.iter().map(|l| format!("v{}", l.version)).collect();
        if h.in_transition() {
            format!(
                "layout v{}: data is moving (live {}; `quorumkv cluster status` shows progress)",
                h.current().version,
                live.join(", ")
            )
        } else {
            format!("layout v{}: no change in progress", h.current().version)
        }
    });
    if a.output == Output::Json {
        let layout = layouts.as_ref().map(|r| {
            json!({
                "current": r.history.current().version,
                "live": r.history.live.iter().map(|l| l.version).collect::<Vec<_>>(),
            })
        });
        println!(
            "{}",
            json!({"contacted": node, "nodes": nodes, "layout": layout})
        );
    } else {
        println!("as seen by {node}:");
        if let Some(l) = &layout_line {
            println!("{l}");
        }
        println!(
            "{:<8} {:<22} {:<8} {:<13} {:>9} {:>13} {:>11}",
            "node", "address", "state", "detector", "ownership", "hints held", "hint bytes"
        );
        let mut counters = None;
        let mut reaping = None;
        for n in nodes {
            println!(
                "{:<8} {:<22} {:<8} {:<13} {:>8.1}% {:>13} {:>11}",
                n.name,
                n.addr,
                n.state,
                quorumkv::shell::render::detector_cell(&n),
                n.ownership * 100.0,
                n.hints_pending,
                n.hints_pending_bytes
            );
            if n.name == node {
                counters = Some((n.hints_replayed, n.hints_dropped));
                reaping = Some((
                    n.tombstones_reaped,
                    n.tombstones_kept,
                    n.tombstones_last_kept,
                ));
            }
        }
        if let Some((replayed, dropped)) = counters {
            println!("hints held by {node} for each node above; replayed {replayed}, dropped {dropped} since it started");
        }
        if let Some((reaped, kept, last)) = reaping {
            println!(
                "{}",
                quorumkv::shell::render::reaping_line(&node, reaped, kept, last.as_deref())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cluster join NAME ADDR [--zone Z]`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    c: ClusterArgs,
    /// The joining node's name (the name in its certificate).
    name: String,
    /// Its QUIC address, HOST:PORT.
    addr: std::net::SocketAddr,
    /// Its zone (rack, room, availability zone), if the cluster's members have zones.
    #[arg(long)]
    zone: Option<String>,
}

/// `cluster leave|remove NAME`.
#[derive(Debug, Args)]
pub struct NodeNameArgs {
    #[command(flatten)]
    c: ClusterArgs,
    /// The node's name.
    name: String,
}

pub fn cluster(cmd: super::ClusterCommand) -> anyhow::Result<ExitCode> {
    use super::ClusterCommand as C;
    use quorumkv::membership::layout::Change;
    use quorumkv::shell::render;
    let stage = |c: &ClusterArgs, change: Change| -> anyhow::Result<ExitCode> {
        let staged = with_client(c, |client, _| {
            Box::pin(async move { Ok(client.cluster_stage(change).await?) })
        })?;
        if c.output == Output::Json {
            println!("{}", json!({"staged": staged}));
        } else {
            println!("staged on top of v{}:", staged.base);
            for ch in &staged.changes {
                println!("  {ch}");
            }
            println!("see what it would move with `quorumkv cluster plan`, apply it with `quorumkv cluster commit`");
        }
        Ok(ExitCode::SUCCESS)
    };
    match cmd {
        C::Status(a) => {
            let r = with_client(&a, |client, _| {
                Box::pin(async move { Ok(client.cluster_status().await?) })
            })?;
            if a.output == Output::Json {
                println!("{}", serde_json::to_value(&r)?);
            } else {
                println!("{}", render::cluster_report(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
        C::Join(j) => stage(
            &j.c,
            Change::Join {
                name: j.name,
                addr: j.addr,
                zone: j.zone,
            },
        ),
        C::Leave(n) => stage(&n.c, Change::Leave { name: n.name }),
        C::Remove(n) => stage(&n.c, Change::Remove { name: n.name }),
        C::Plan(a) => {
            let p = with_client(&a, |client, _| {
                Box::pin(async move { Ok(client.cluster_plan().await?) })
            })?;
            if a.output == Output::Json {
                println!("{}", serde_json::to_value(&p)?);
            } else {
                println!("{}", render::plan_text(&p));
            }
            Ok(ExitCode::SUCCESS)
        }
        C::Commit(a) => {
            let l = with_client(&a, |client, _| {
                Box::pin(async move { Ok(client.cluster_commit().await?) })
            })?;
            if a.output == Output::Json {
                println!("{}", json!({"committed": l}));
            } else {
                println!(
                    "layout v{} committed: members {}; data moves in the background (`quorumkv cluster status` shows progress)",
                    l.version,
                    l.names().join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        C::Abort(a) => {
            let dropped = with_client(&a, |client, _| {
                Box::pin(async move { Ok(client.cluster_abort().await?) })
            })?;
            if a.output == Output::Json {
                println!("{}", json!({"dropped": dropped}));
            } else if dropped.changes.is_empty() {
                println!("nothing was staged");
            } else {
                println!("dropped {} staged change(s)", dropped.changes.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn aae_status(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let (node, enabled, ranges) = with_client(&a, |client, _| {
        Box::pin(async move { Ok(client.aae_status().await?) })
    })?;
    if a.output == Output::Json {
        println!(
            "{}",
            json!({"contacted": node, "enabled": enabled, "ranges": ranges})
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !enabled {
        println!("anti-entropy is off on {node} (anti_entropy.enabled = false)");
        return Ok(ExitCode::SUCCESS);
    }
    #[allow(clippy::disallowed_methods)] // the CLI's wall clock: ages of timestamps
    let now = quorumkv::clock::Clock::now_ms(&quorumkv::clock::SystemClock);
    let age = |ms: Option<u64>| match ms {
        Some(ms) => format!("{:.1}s ago", now.saturating_sub(ms) as f64 / 1000.0),
        None => "never".to_string(),
    };
    println!("anti-entropy on {node}:");
    println!(
        "{:<12} {:<16} {:<20} {:<12} {:<14} {:<14} {:>9} {:>8}  error",
        "keyspace",
        "range",
        "replicas",
        "last peer",
        "last exchange",
        "full compare",
        "differing",
        "repaired"
    );
    for r in ranges {
        println!(
            "{:<12} {:<16} {:<20} {:<12} {:<14} {:<14} {:>9} {:>8}  {}",
            r.keyspace,
            r.range,
            r.replicas.join(","),
            r.last_peer.unwrap_or_else(|| "-".into()),
            age(r.last_exchange_ms),
            age(r.last_full_compare_ms),
            if r.differing { "yes" } else { "no" },
            r.keys_repaired,
            r.last_error.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn replicas(a: ReplicasArgs) -> anyhow::Result<ExitCode> {
    let output = a.k.c.output;
    let key_text = a.k.key.clone();
    let list = with_client(&a.k.c.clone(), |client, cf| {
        let ks = keyspace_of(&a.k, &cf);
        Box::pin(async move { Ok(client.replicas(&ks, Key::parse(&a.k.key)).await?) })
    })?;
    if output == Output::Json {
        println!("{}", json!({"key": key_text, "replicas": list}));
    } else {
        println!("{}", list.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn scan(a: ScanArgs) -> anyhow::Result<ExitCode> {
    let output = a.c.output;
    let partition = a.partition.clone();
    let res = with_client(&a.c.clone(), |client, cf| {
        let ks = a.keyspace.clone().unwrap_or_else(|| cf.keyspace.clone());
        let opts = RequestOptions {
            r: a.r,
            trace: a.trace,
            ..Default::default()
        };
        // The smallest key after X is X followed by a zero byte.
        let from = match &a.after {
            Some(after) => [after.as_bytes(), &[0]].concat(),
            None => a.from.as_bytes().to_vec(),
        };
        Box::pin(async move {
            let to = a.to.as_ref().map(|t| t.as_bytes());
            Ok(client
                .scan(&ks, a.partition.as_bytes(), &from, to, a.limit, &opts)
                .await?)
        })
    })?;
    if output == Output::Json {
        let items: Vec<_> = res
            .items
            .iter()
            .map(|i| {
                let mut item = json!({
                    "sort": printable(&i.sort),
                    "values": i.values.iter().map(|s| json_value(&s.value)).collect::<Vec<_>>(),
                    "context": i.context,
                });
                if let Some(v) = &i.crdt {
                    item["crdt"] = crdt_json(v);
                }
                item
            })
            .collect();
        let next = res
            .next
            .as_ref()
            .map(|n| printable(n.strip_suffix(&[0]).unwrap_or(n)));
        println!(
            "{}",
            json!({"partition": partition, "items": items, "next_after": next, "trace": trace_json(&res.trace)})
        );
    } else {
        print_trace(&res.trace);
        for i in &res.items {
            let values: Vec<String> = match &i.crdt {
                Some(v) => vec![crdt_line(v)],
                None => i.values.iter().map(|s| printable(&s.value)).collect(),
            };
            println!(
                "{}/{}\t{}",
                partition,
                printable(&i.sort),
                values.join(" | ")
            );
        }
        println!(
            "({} item(s){})",
            res.items.len(),
            match &res.next {
                Some(n) => format!(
                    "; more: --after {:?}",
                    printable(n.strip_suffix(&[0]).unwrap_or(n))
                ),
                None => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn batch(a: BatchArgs) -> anyhow::Result<ExitCode> {
    let output = a.c.output;
    let mut items = Vec::new();
    for text in &a.items {
        let (key, value) = text
            .split_once('=')
            .with_context(|| format!("batch item {text:?} is not KEY=VALUE"))?;
        items.push(quorumkv::proto::BatchItem {
            key: Key::parse(key),
            value: Some(value.as_bytes().to_vec()),
            context: String::new(),
        });
    }
    let res = with_client(&a.c.clone(), |client, cf| {
        let ks = a.keyspace.clone().unwrap_or_else(|| cf.keyspace.clone());
        let opts = RequestOptions {
            w: a.w,
            trace: a.trace,
            ..Default::default()
        };
        Box::pin(async move { Ok(client.batch(&ks, items, &opts).await?) })
    })?;
    if output == Output::Json {
        println!(
            "{}",
            json!({"ok": true, "ids": res.dots, "trace": trace_json(&res.trace)})
        );
    } else {
        print_trace(&res.trace);
        println!("OK {} item(s) [{}]", res.dots.len(), res.dots.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

// ---- CRDT keyspaces -------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    k: KeyArgs,
    /// Write quorum for this request.
    #[arg(long, short = 'w')]
    w: Option<u8>,
    /// Causal context from a `get` of this key: a remove removes only what that read saw,
    /// a register write replaces what it saw.
    #[arg(long)]
    context: Option<String>,
}

#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    u: UpdateArgs,
    /// How much (default 1).
    #[arg(default_value_t = 1)]
    n: u32,
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    #[command(flatten)]
    u: UpdateArgs,
    /// Members (UTF-8 text).
    #[arg(required = true)]
    members: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ValueArgs {
    #[command(flatten)]
    u: UpdateArgs,
    /// The value (UTF-8 text).
    value: String,
}

#[derive(Debug, Args)]
pub struct FieldArgs {
    #[command(flatten)]
    u: UpdateArgs,
    /// Map field.
    field: String,
}

#[derive(Debug, Args)]
pub struct FieldValueArgs {
    #[command(flatten)]
    u: UpdateArgs,
    /// Map field.
    field: String,
    /// The value (UTF-8 text).
    value: String,
}

#[derive(Debug, Args)]
pub struct FieldIncrArgs {
    #[command(flatten)]
    u: UpdateArgs,
    /// Map field.
    field: String,
    /// How much to add (negative to subtract).
    #[arg(allow_negative_numbers = true)]
    n: i64,
}

/// Which CRDT operation a command sends; `read_first` says a missing --context should be
/// filled from a read (removes remove only what was observed).
fn run_update(
    u: UpdateArgs,
    op: quorumkv::proto::CrdtOp,
    read_first: bool,
) -> anyhow::Result<ExitCode> {
    let output = u.k.c.output;
    let key_text = u.k.key.clone();
    let res = with_client(&u.k.c.clone(), |client, cf| {
        let ks = keyspace_of(&u.k, &cf);
        Box::pin(async move {
            let key = Key::parse(&u.k.key);
            let context = match u.context {
                Some(c) => Some(c),
                None if read_first => {
                    let g = client
                        .get(&ks, key.clone(), &RequestOptions::default())
                        .await?;
                    Some(g.context)
                }
                None => None,
            };
            let opts = RequestOptions {
                w: u.w,
                context,
                trace: u.k.trace,
                ..Default::default()
            };
            Ok(client.update(&ks, key, op, &opts).await?)
        })
    })?;
    if output == Output::Json {
        println!(
            "{}",
            json!({"key": key_text, "ok": true, "context": res.context, "trace": trace_json(&res.trace)})
        );
    } else {
        print_trace(&res.trace);
        println!("OK");
        if !res.context.is_empty() {
            println!("context: {}", res.context);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bufs(v: Vec<String>) -> Vec<serde_bytes::ByteBuf> {
    v.into_iter()
        .map(|s| serde_bytes::ByteBuf::from(s.into_bytes()))
        .collect()
}

fn buf(s: String) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(s.into_bytes())
}

pub fn incr(a: CountArgs) -> anyhow::Result<ExitCode> {
    run_update(a.u, CrdtOp::CounterAdd(i64::from(a.n)), false)
}

pub fn decr(a: CountArgs) -> anyhow::Result<ExitCode> {
    run_update(a.u, CrdtOp::CounterAdd(-i64::from(a.n)), false)
}

pub fn sadd(a: MembersArgs) -> anyhow::Result<ExitCode> {
    run_update(a.u, CrdtOp::SetAdd(bufs(a.members)), false)
}

pub fn srem(a: MembersArgs) -> anyhow::Result<ExitCode> {
    run_update(a.u, CrdtOp::SetRemove(bufs(a.members)), true)
}

pub fn rset(a: ValueArgs) -> anyhow::Result<ExitCode> {
    run_update(a.u, CrdtOp::RegisterWrite(buf(a.value)), false)
}

pub fn hset(a: FieldValueArgs) -> anyhow::Result<ExitCode> {
    let op = CrdtOp::MapUpdate {
        field: a.field,
        op: FieldOp::RegisterWrite(buf(a.value)),
    };
    run_update(a.u, op, false)
}

pub fn hincr(a: FieldIncrArgs) -> anyhow::Result<ExitCode> {
    let op = CrdtOp::MapUpdate {
        field: a.field,
        op: FieldOp::CounterAdd(a.n),
    };
    run_update(a.u, op, false)
}

pub fn hsadd(a: FieldValueArgs) -> anyhow::Result<ExitCode> {
    let op = CrdtOp::MapUpdate {
        field: a.field,
        op: FieldOp::SetAdd(vec![buf(a.value)]),
    };
    run_update(a.u, op, false)
}

pub fn hsrem(a: FieldValueArgs) -> anyhow::Result<ExitCode> {
    let op = CrdtOp::MapUpdate {
        field: a.field,
        op: FieldOp::SetRemove(vec![buf(a.value)]),
    };
    run_update(a.u, op, true)
}

pub fn hdel(a: FieldArgs) -> anyhow::Result<ExitCode> {
    run_update(a.u, CrdtOp::MapRemove { field: a.field }, true)
}

fn json_values(v: &[serde_bytes::ByteBuf]) -> Vec<serde_json::Value> {
    v.iter().map(|b| json_value(b)).collect()
}

fn crdt_json(v: &CrdtValue) -> serde_json::Value {
    match v {
        CrdtValue::Counter(n) => json!({"type": "counter", "value": n}),
        CrdtValue::Set(m) => json!({"type": "set", "members": json_values(m)}),
        CrdtValue::Register(vs) => json!({"type": "register", "values": json_values(vs)}),
        CrdtValue::Map(fields) => {
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, f)| {
                    (
                        k.clone(),
                        json!({"register": json_values(&f.register), "counter": f.counter, "set": json_values(&f.set)}),
                    )
                })
                .collect();
            json!({"type": "map", "fields": fields})
        }
    }
}

fn braces(v: &[serde_bytes::ByteBuf]) -> String {
    let parts: Vec<String> = v.iter().map(|b| printable(b)).collect();
    format!("{{{}}}", parts.join(", "))
}

fn print_crdt(v: &CrdtValue) {
    match v {
        CrdtValue::Counter(n) => println!("{n}"),
        CrdtValue::Set(m) => println!("{}", braces(m)),
        CrdtValue::Register(vs) => match vs.len() {
            0 => println!("(not found)"),
            1 => println!("{}", printable(&vs[0])),
            n => {
                println!("{n} concurrent values:");
                for v in vs {
                    println!("  {}", printable(v));
                }
            }
        },
        CrdtValue::Map(fields) => {
            if fields.is_empty() {
                println!("(empty map)");
            }
            for (k, f) in fields {
                // A field shows the parts that were written; a register with several
                // values shows them all.
                let mut parts = Vec::new();
                match f.register.len() {
                    0 => {}
                    1 => parts.push(printable(&f.register[0])),
                    _ => parts.push(format!("register {}", braces(&f.register))),
                }
                if f.counter != 0 {
                    parts.push(format!("counter {}", f.counter));
                }
                if !f.set.is_empty() {
                    parts.push(format!("set {}", braces(&f.set)));
                }
                if parts.is_empty() {
                    parts.push("(empty)".into());
                }
                println!("{k}: {}", parts.join("; "));
            }
        }
    }
}

/// A CRDT value on one line (scan output).
fn crdt_line(v: &CrdtValue) -> String {
    match v {
        CrdtValue::Counter(n) => n.to_string(),
        CrdtValue::Set(m) => braces(m),
        CrdtValue::Register(vs) if vs.len() == 1 => printable(&vs[0]),
        CrdtValue::Register(vs) => braces(vs),
        CrdtValue::Map(_) => crdt_json(v)["fields"].to_string(),
    }
}
