//! The `jepsen-like` command line: `check` histories against a model,
//! `convert` between EDN and JSON Lines, and `gen`erate random histories.
//!
//! Exit codes of `check` are meant for scripts: 0 when every file is valid,
//! 1 when any file is invalid, 2 when nothing is invalid but some file is
//! unknown (timeout, never-read set, sibling key without a final read) or
//! could not be read/checked.
//!
//! The binary installs the library's counting allocator so that
//! `--memory-limit-mb` bounds the real heap of the process, not only the
//! search caches' own estimate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use jepsen_like::gen::{generate, GenOptions};
use jepsen_like::mem::CountingAllocator;
use jepsen_like::{check, html, report, CheckOptions, CheckResult, Format, ModelKind, Verdict};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

#[derive(Parser)]
#[command(
    name = "jepsen-like",
    version,
    about = "A fast linearizability checker for Jepsen histories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check histories against a model.
    Check(CheckArgs),
    /// Convert a history between EDN and JSON Lines.
    Convert(ConvertArgs),
    /// Generate a random (linearizable unless --corrupt) history.
    Gen(GenArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    Register,
    CasRegister,
    MultiRegister,
    Kv,
    Set,
    Counter,
    SiblingRegister,
}

impl From<ModelArg> for ModelKind {
    fn from(m: ModelArg) -> ModelKind {
        match m {
            ModelArg::Register => ModelKind::Register,
            ModelArg::CasRegister => ModelKind::CasRegister,
            ModelArg::MultiRegister | ModelArg::Kv => ModelKind::MultiRegister,
            ModelArg::Set => ModelKind::Set,
            ModelArg::Counter => ModelKind::Counter,
            ModelArg::SiblingRegister => ModelKind::SiblingRegister,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum FormatArg {
    Auto,
    Edn,
    Jsonl,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum OutputArg {
    Text,
    Json,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The model: register, cas-register, multi-register (alias kv), set,
    /// counter, sibling-register.
    #[arg(long, short)]
    model: ModelArg,
    /// Give up after this many seconds per file (verdict unknown).
    #[arg(long)]
    timeout: Option<f64>,
    /// Write an HTML timeline here (with several files, one page per file).
    #[arg(long)]
    html: Option<PathBuf>,
    /// Output style.
    #[arg(long, value_enum, default_value = "text")]
    output: OutputArg,
    /// Input format; auto uses the extension, then the content.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Worker threads for independent keys (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Memory budget in MiB for the process's heap, history included
    /// (keys that would exceed their share end unknown).
    #[arg(long, default_value_t = jepsen_like::check::DEFAULT_MEMORY_LIMIT_MB)]
    memory_limit_mb: usize,
    /// Judge every key and explain every failure (default: stop at the
    /// first non-linearizable key, whose verdict settles the file).
    #[arg(long)]
    all_failures: bool,
    /// History files, or directories of them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Output format.
    #[arg(long, value_enum)]
    to: FormatArg,
    /// Input format.
    #[arg(long, value_enum, default_value = "auto")]
    from: FormatArg,
    /// Input history.
    input: PathBuf,
    /// Output file.
    output: PathBuf,
}

#[derive(clap::Args)]
struct GenArgs {
    /// What kind of history.
    #[arg(long, short, value_enum, default_value = "cas-register")]
    model: ModelArg,
    /// Independent keys (multi-register).
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Operations per key.
    #[arg(long, default_value_t = 1000)]
    ops_per_key: usize,
    /// Concurrent processes per key.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Register values are 1..=VALUES.
    #[arg(long, default_value_t = 5)]
    values: u32,
    /// Fraction of operations that end indeterminate (info).
    #[arg(long, default_value_t = 0.05)]
    info_rate: f64,
    /// Fraction of writes/adds that fail.
    #[arg(long, default_value_t = 0.02)]
    fail_rate: f64,
    /// PRNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Corrupt one read per key (makes the history invalid).
    #[arg(long)]
    corrupt: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "edn")]
    format: FormatArg,
    /// Output file (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    CountingAllocator::mark_installed();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => run_check(&args),
        Command::Convert(args) => run_convert(&args).map(|()| 0),
        Command::Gen(args) => run_gen(&args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Expands directories into the history files they hold (non-recursive,
/// sorted; Jepsen's `results.edn` is not a history and is skipped).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && Format::from_extension(f).is_some())
                .filter(|f| f.file_name().and_then(|n| n.to_str()) != Some("results.edn"))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("no history files (.edn, .jsonl) in {}", p.display());
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn read_history(path: &Path, format: FormatArg) -> Result<jepsen_like::History> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let format = match format {
        FormatArg::Auto => Format::detect(path, &text),
        FormatArg::Edn => Format::Edn,
        FormatArg::Jsonl => Format::Jsonl,
    };
    format
        .parse(&text)
        .with_context(|| format!("parsing {}", path.display()))
}

fn html_path(base: &Path, index: usize, file: &Path, many: bool) -> PathBuf {
    if !many {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("timeline");
    let file_stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("history");
    base.with_file_name(format!("{stem}-{index}-{file_stem}.html"))
}

#[derive(serde::Serialize)]
struct FileReport<'a> {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parse_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a CheckResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

fn check_one(
    path: &Path,
    args: &CheckArgs,
    index: usize,
    many: bool,
) -> Result<(CheckResult, f64, Option<PathBuf>)> {
    let t0 = Instant::now();
    let history = read_history(path, args.format)?;
    let parse_ms = t0.elapsed().as_secs_f64() * 1e3;
    let options = CheckOptions {
        model: args.model.into(),
        timeout: timeout(args)?,
        threads: args.threads,
        memory_limit_mb: args.memory_limit_mb,
        all_failures: args.all_failures,
    };
    let result =
        check(&history, &options).with_context(|| format!("checking {}", path.display()))?;
    let mut written = None;
    if let Some(base) = &args.html {
        let out = html_path(base, index, path, many);
        let ops = history.operations()?;
        let page = html::render(&path.display().to_string(), &history, &ops, &result);
        std::fs::write(&out, page).with_context(|| format!("writing {}", out.display()))?;
        written = Some(out);
    }
    Ok((result, parse_ms, written))
}

fn timeout(args: &CheckArgs) -> Result<Option<Duration>> {
    match args.timeout {
        None => Ok(None),
        Some(t) => match Duration::try_from_secs_f64(t) {
            Ok(d) => Ok(Some(d)),
            Err(_) => bail!("bad --timeout {t}: expected a finite, non-negative number of seconds"),
        },
    }
}

fn run_check(args: &CheckArgs) -> Result<u8> {
    // Reject a bad timeout once, before touching any file.
    timeout(args)?;
    let files = expand(&args.files)?;
    let many = files.len() > 1;
    let mut outcomes = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        outcomes.push((f, check_one(f, args, i, many)));
    }
    let (mut invalid, mut undecided) = (false, false);
    let mut reports = Vec::new();
    for (f, outcome) in &outcomes {
        let name = f.display().to_string();
        match outcome {
            Ok((r, parse_ms, html)) => {
                invalid |= r.verdict == Verdict::Invalid;
                undecided |= r.verdict == Verdict::Unknown;
                if args.output == OutputArg::Text {
                    print!("{}", report::render_text(&name, r));
                    println!("  (parsed in {parse_ms:.1} ms)");
                    if let Some(h) = html {
                        println!("  timeline: {}", h.display());
                    }
                }
                reports.push(FileReport {
                    file: name,
                    parse_ms: Some(*parse_ms),
                    result: Some(r),
                    error: None,
                    html: html.as_ref().map(|h| h.display().to_string()),
                });
            }
            Err(e) => {
                undecided = true;
                if args.output == OutputArg::Text {
                    println!("{name}: ERROR {e:#}");
                }
                reports.push(FileReport {
                    file: name,
                    parse_ms: None,
                    result: None,
                    error: Some(format!("{e:#}")),
                    html: None,
                });
            }
        }
    }
    let code = if invalid {
        1
    } else if undecided {
        2
    } else {
        0
    };
    if args.output == OutputArg::Json {
        // The peak resident set of the whole run, as the OS saw it (Linux).
        let doc = serde_json::json!({
            "files": reports,
            "exit_code": code,
            "max_rss_bytes": jepsen_like::mem::max_rss_bytes(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(code)
}

fn run_convert(args: &ConvertArgs) -> Result<()> {
    let history = read_history(&args.input, args.from)?;
    let to = match args.to {
        FormatArg::Edn => Format::Edn,
        FormatArg::Jsonl => Format::Jsonl,
        FormatArg::Auto => Format::from_extension(&args.output)
            .context("--to auto needs an output file ending in .edn or .jsonl")?,
    };
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let mut w = std::io::BufWriter::new(file);
    to.write(&history, &mut w)?;
    std::io::Write::flush(&mut w)?;
    Ok(())
}

fn run_gen(args: &GenArgs) -> Result<()> {
    if let ModelArg::SiblingRegister = args.model {
        bail!("gen does not generate sibling-register histories");
    }
    let opts = GenOptions {
        model: args.model.into(),
        keys: args.keys,
        ops_per_key: args.ops_per_key,
        concurrency: args.concurrency,
        values: args.values,
        info_rate: args.info_rate,
        fail_rate: args.fail_rate,
        seed: args.seed,
        corrupt: args.corrupt,
    };
    let history = generate(&opts);
    let format = match args.format {
        FormatArg::Jsonl => Format::Jsonl,
        _ => Format::Edn,
    };
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            format.write(&history, &mut w)?;
            std::io::Write::flush(&mut w)?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            format.write(&history, &mut w)?;
            std::io::Write::flush(&mut w)?;
        }
    }
    Ok(())
}
