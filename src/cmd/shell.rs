//! `quorumkv shell`: the terminal side of the shell — the interactive loop (rustyline:
//! line editing, history file, completion, Ctrl-C/Ctrl-D) and the non-interactive modes
//! (`-e`, `-f`, commands piped on stdin) with their exit code.
//!
//! Everything about commands themselves (parsing, running, rendering) is in
//! `quorumkv::shell`; this file only moves lines in and text out.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use quorumkv::client::Client;
use quorumkv::config::ClusterFile;
use quorumkv::shell::completion::{ShellHelper, Vocabulary};
use quorumkv::shell::parse::{self, Statement};
use quorumkv::shell::{render, Format, Outcome, Session};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};
use tokio::runtime::Runtime;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputArg {
    /// Aligned tables.
    #[value(alias = "text")]
    Table,
    /// One JSON object per command result.
    Json,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Client connection file written by `dev-cluster` or `cluster-up`.
    #[arg(long, env = "QUORUMKV_CLUSTER", default_value_os_t = super::default_cluster_file())]
    cluster: PathBuf,
    /// Output format (also `format json|table` inside the shell).
    #[arg(long, value_enum, default_value = "table")]
    output: OutputArg,
    /// Keyspace to start in (default: the cluster file's `keyspace`).
    #[arg(long, short = 'k')]
    keyspace: Option<String>,
    /// Run these commands (separated by `;`) and exit.
    #[arg(long, short = 'e', conflicts_with = "file")]
    execute: Option<String>,
    /// Run the commands in this file and exit.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// History file of the interactive shell (default `~/.quorumkv_history`).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Talk only to this node (by name, from the cluster file's contact points): it
    /// coordinates every request, and no other contact point is tried if it is
    /// unreachable (e.g. one shell on each side of a netsplit).
    #[arg(long)]
    node: Option<String>,
}

/// Counts for the exit code of a script.
#[derive(Debug, Default)]
struct Tally {
    run: usize,
    failed: usize,
}

/// Whether to keep reading input after a statement.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

pub fn run(a: ShellArgs) -> anyhow::Result<ExitCode> {
    let mut cf = ClusterFile::load(&a.cluster).with_context(|| {
        "no cluster to talk to: start one with `scripts/dev.sh` (or `quorumkv dev-cluster`), or pass --cluster FILE".to_string()
    })?;
    if let Some(node) = &a.node {
        cf = cf.only(node).with_context(|| {
            let known: Vec<&str> = cf.contact_points.iter().map(|m| m.name.as_str()).collect();
            format!(
                "--node {node}: not a contact point of {} (known: {})",
                a.cluster.display(),
                known.join(", ")
            )
        })?;
    }
    let rt = super::runtime()?;
    let client = {
        let _guard = rt.enter();
        Client::new(&cf)?
    };
    let format = match a.output {
        OutputArg::Table => Format::Table,
        OutputArg::Json => Format::Json,
    };
    let keyspace = a.keyspace.clone().unwrap_or_else(|| cf.keyspace.clone());
    let mut session = Session::new(std::sync::Arc::clone(&client), keyspace, format);

    // Lines are read as they come, so a pipe that is still being written (a test, or
    // `tail -f`) gets each answer before the next command arrives.
    let script: Option<Lines> = if let Some(e) = &a.execute {
        Some(Box::new(std::iter::once(Ok(("-e".to_string(), e.clone())))))
    } else if let Some(f) = &a.file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        Some(numbered(lines.into_iter().map(Ok)))
    } else if !std::io::stdin().is_terminal() {
        Some(numbered(std::io::stdin().lock().lines()))
    } else {
        None
    };
    let outcome = match script {
        Some(lines) => run_script(&rt, &mut session, lines),
        None => interactive(&rt, &mut session, &cf, a.history),
    };
    rt.block_on(client.close());
    outcome
}

/// Input lines with where they came from ("line 3").
type Lines = Box<dyn Iterator<Item = std::io::Result<(String, String)>>>;

fn numbered(lines: impl Iterator<Item = std::io::Result<String>> + 'static) -> Lines {
    Box::new(
        lines
            .enumerate()
            .map(|(i, l)| l.map(|l| (format!("line {}", i + 1), l))),
    )
}

/// Run a script; keeps going after a failure and reports the count at the end.
fn run_script(rt: &Runtime, session: &mut Session, lines: Lines) -> anyhow::Result<ExitCode> {
    let mut tally = Tally::default();
    'lines: for item in lines {
        let (place, line) = item.context("cannot read commands")?;
        let stmts = match parse::split(&line) {
            Ok(s) => s,
            Err(e) => {
                tally.run += 1;
                tally.failed += 1;
                report_error(session, &e.into(), line.trim(), Some(&place));
                continue;
            }
        };
        for stmt in stmts {
            tally.run += 1;
            if run_statement(rt, session, &stmt, Some(&place), false, &mut tally) == Flow::Exit {
                break 'lines;
            }
        }
    }
    let _ = std::io::stdout().flush();
    if tally.failed > 0 {
        eprintln!("{} of {} command(s) failed", tally.failed, tally.run);
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Parse, execute and print one statement. In the interactive shell Ctrl-C cancels the
/// request in flight.
fn run_statement(
    rt: &Runtime,
    session: &mut Session,
    stmt: &Statement,
    place: Option<&str>,
    cancellable: bool,
    tally: &mut Tally,
) -> Flow {
    let cmd = match parse::parse(stmt) {
        Ok(c) => c,
        Err(e) => {
            tally.failed += 1;
            report_error(session, &e.into(), &stmt.text, place);
            return Flow::Continue;
        }
    };
    let result = rt.block_on(async {
        if cancellable {
            tokio::select! {
                r = session.execute(cmd) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        } else {
            Some(session.execute(cmd).await)
        }
    });
    for n in session.take_notices() {
        eprintln!("note: {n}");
    }
    match result {
        None => {
            tally.failed += 1;
            eprintln!("cancelled (a write that was sent may or may not have been applied)");
            Flow::Continue
        }
        Some(Ok(Outcome::Exit)) => Flow::Exit,
        Some(Ok(o)) => {
            let text = session.render(&o);
            if !text.is_empty() {
                println!("{text}");
            }
            Flow::Continue
        }
        Some(Err(e)) => {
            tally.failed += 1;
            report_error(session, &e, &stmt.text, place);
            Flow::Continue
        }
    }
}

/// Errors go to stderr as text; in JSON mode to stdout as one object, so a script reading
/// stdout gets exactly one object per command.
fn report_error(
    session: &Session,
    e: &quorumkv::shell::ExecError,
    statement: &str,
    place: Option<&str>,
) {
    let text = render::error(e, session.format(), statement, place);
    match session.format() {
        Format::Json => println!("{text}"),
        Format::Table => eprintln!("{text}"),
    }
}

fn default_history() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quorumkv_history"))
}

fn vocabulary(session: &Session) -> Vocabulary {
    Vocabulary {
        keyspaces: session.keyspace_names(),
        keys: session.read_keys(),
        actors: session.known_actors(),
    }
}

fn interactive(
    rt: &Runtime,
    session: &mut Session,
    cf: &ClusterFile,
    history: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .max_history_size(1000)?
        .completion_type(CompletionType::List)
        .build();
    let mut rl: Editor<ShellHelper, FileHistory> = Editor::with_config(config)?;
    rl.set_helper(Some(ShellHelper::default()));
    let history = history.or_else(default_history);
    if let Some(h) = &history {
        // A missing history file is the normal first run.
        let _ = rl.load_history(h);
    }
    let contacts: Vec<String> = cf
        .contact_points
        .iter()
        .map(|m| format!("{} ({})", m.name, m.addr))
        .collect();
    println!("quorumkv shell; contact points: {}", contacts.join(", "));
    println!("Type `help` for commands, `help COMMAND` for one; Ctrl-D exits.");
    // Keyspace names for completion. A cluster that is down is not a reason to refuse to
    // start: the shell says so and commands will report it.
    let fetched = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), session.refresh_keyspaces()).await
    });
    match fetched {
        Ok(Ok(())) => {
            if !session
                .keyspace_names()
                .iter()
                .any(|k| k == session.keyspace())
            {
                eprintln!(
                    "note: keyspace {} does not exist yet; `keyspaces` lists them",
                    session.keyspace()
                );
            }
        }
        Ok(Err(e)) => eprintln!("warning: cannot reach the cluster yet: {e}"),
        Err(_) => eprintln!("warning: the cluster did not answer within 10 s"),
    }
    let mut tally = Tally::default();
    loop {
        if let Some(h) = rl.helper_mut() {
            h.vocabulary = vocabulary(session);
        }
        match rl.readline(&session.prompt()) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                    if let Some(h) = &history {
                        if let Err(e) = rl.save_history(h) {
                            eprintln!("warning: cannot save history to {}: {e}", h.display());
                        }
                    }
                }
                let stmts = match parse::split(&line) {
                    Ok(s) => s,
                    Err(e) => {
                        report_error(session, &e.into(), line.trim(), None);
                        continue;
                    }
                };
                for stmt in stmts {
                    if run_statement(rt, session, &stmt, None, true, &mut tally) == Flow::Exit {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            // Ctrl-C: drop the line being typed, like a shell.
            Err(ReadlineError::Interrupted) => continue,
            // Ctrl-D on an empty line.
            Err(ReadlineError::Eof) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e).context("reading the terminal"),
        }
    }
}
