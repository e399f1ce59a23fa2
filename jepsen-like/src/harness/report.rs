//! A run's report files, written into its [`RunDir`]: `results.json`
//! (everything, for tools), `summary.txt` (for people), `latency.svg` and
//! `rate.svg` (faults shaded), and `timeline.html`. The overall verdict
//! combines the workload's with any extra section that carries one (e.g.
//! the store's convergence check): invalid beats unknown beats valid.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::check::Verdict;
use crate::harness::rundir::{timestamp, RunDir};
use crate::harness::runner::RunRecord;
use crate::harness::svg::{self, LatencyPoint, RateSeries};
use crate::harness::workload::{Percentiles, WorkloadResult};
use crate::harness::HarnessError;
use crate::history::{History, Operation, Outcome};

/// The process exit status for a verdict: valid 0, invalid 1, unknown 2
/// (as the `check` command).
pub fn exit_code(v: Verdict) -> i32 {
    match v {
        Verdict::Valid => 0,
        Verdict::Invalid => 1,
        Verdict::Unknown => 2,
    }
}

/// The worse of two verdicts: invalid, then unknown, then valid.
pub fn worse(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v| match v {
        Verdict::Valid => 0,
        Verdict::Unknown => 1,
        Verdict::Invalid => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}

/// Per-operation facts the reports share.
struct OpTimes<'a> {
    op: &'a Operation,
    start_ns: i64,
    end_ns: Option<i64>,
}

fn op_times<'a>(history: &History, ops: &'a [Operation]) -> Vec<OpTimes<'a>> {
    let t = |i: usize| history.ops.get(i).and_then(|o| o.time).unwrap_or(0);
    ops.iter()
        .map(|op| OpTimes {
            op,
            start_ns: t(op.invoke),
            end_ns: op.complete.map(t),
        })
        .collect()
}

/// Writes every report file (see the module docs); returns the overall
/// verdict. An `extra` section is `(name, json, summary lines)`; when its
/// JSON is an object with a `"verdict"` of "valid"/"invalid"/"unknown", it
/// counts towards the overall verdict.
pub fn write_report(
    dir: &RunDir,
    test: &str,
    record: &RunRecord,
    result: &WorkloadResult,
    extra: &[(String, serde_json::Value, Vec<String>)],
) -> Result<Verdict, HarnessError> {
    let history = &record.history;
    let (ops, pairing_error) = match history.operations() {
        Ok(ops) => (ops, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let times = op_times(history, &ops);

    let mut verdict = result.verdict;
    for (_, json, _) in extra {
        let v = match json.get("verdict").and_then(|v| v.as_str()) {
            Some("invalid") => Verdict::Invalid,
            Some("unknown") => Verdict::Unknown,
            _ => Verdict::Valid,
        };
        verdict = worse(verdict, v);
    }

    // Function names in first-use order (marker shapes, legend order).
    let mut f_names: Vec<String> = Vec::new();
    let f_index = |names: &mut Vec<String>, f: &str| match names.iter().position(|n| n == f) {
        Some(i) => i,
        None => {
            names.push(f.to_string());
            names.len() - 1
        }
    };
    let mut counts: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut latencies: BTreeMap<String, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    let mut points = Vec::new();
    let mut per_second: BTreeMap<(usize, &str), (Outcome, Vec<f64>)> = BTreeMap::new();
    for t in &times {
        let f = t.op.f.name().to_string();
        let fi = f_index(&mut f_names, &f);
        let outcome = outcome_name(t.op.outcome);
        *counts
            .entry(f.clone())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
        let Some(end) = t.end_ns else { continue };
        let ms = (end - t.start_ns) as f64 / 1e6;
        latencies
            .entry(f)
            .or_default()
            .entry(outcome)
            .or_default()
            .push(ms);
        let t_s = end as f64 / 1e9;
        points.push(LatencyPoint {
            t_s,
            ms,
            outcome: t.op.outcome,
            f: fi,
        });
        let bucket = t_s.max(0.0) as usize;
        let series = &mut per_second
            .entry((fi, outcome))
            .or_insert_with(|| (t.op.outcome, Vec::new()))
            .1;
        if series.len() <= bucket {
            series.resize(bucket + 1, 0.0);
        }
        series[bucket] += 1.0;
    }
    let latency_ms: BTreeMap<&String, BTreeMap<&&str, Percentiles>> = latencies
        .iter()
        .map(|(f, by)| (f, by.iter().map(|(o, v)| (o, Percentiles::of(v))).collect()))
        .collect();

    let mut json = serde_json::json!({
        "test": test,
        "verdict": verdict,
        "workload_verdict": result.verdict,
        "started_at_unix_ms": record.started_at_unix_ms,
        "started_at": timestamp(record.started_at_unix_ms),
        "wall_s": record.wall.as_secs_f64(),
        "entries": history.ops.len(),
        "op_counts": counts,
        "latency_ms": latency_ms,
        "nemesis_periods": record.nemesis_periods.iter().map(|p| serde_json::json!({
            "fault": p.fault,
            "start_s": p.start.as_secs_f64(),
            "end_s": p.end.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "workload": result.details,
        "problems": record.problems,
    });
    if let Some(e) = &pairing_error {
        json["pairing_error"] = serde_json::Value::String(e.clone());
    }
    for (name, value, _) in extra {
        json[name.as_str()] = value.clone();
    }
    write(dir, "results.json", &serde_json::to_string_pretty(&json)?)?;

    let mut text = String::new();
    let _ = writeln!(text, "{test}: {}", verdict.name());
    let _ = writeln!(
        text,
        "started {} UTC, {:.1} s, {} history entries",
        timestamp(record.started_at_unix_ms),
        record.wall.as_secs_f64(),
        history.ops.len()
    );
    text.push('\n');
    for line in &result.summary {
        let _ = writeln!(text, "{line}");
    }
    for (name, _, lines) in extra {
        let _ = writeln!(text, "\n{name}:");
        for line in lines {
            let _ = writeln!(text, "  {line}");
        }
    }
    let _ = writeln!(text, "\noperations (count; latency ms):");
    for (f, by) in &counts {
        for (o, n) in by {
            let lat = latency_ms
                .get(f)
                .and_then(|l| l.get(o))
                .map_or("not completed".into(), |p| p.line("ms"));
            let _ = writeln!(text, "  {f:>12} {o:<4} {n:>8}  {lat}");
        }
    }
    if !record.nemesis_periods.is_empty() {
        let _ = writeln!(text, "\nfaults:");
        for p in &record.nemesis_periods {
            let _ = writeln!(
                text,
                "  {:>8.1} s .. {:>8.1} s  {}",
                p.start.as_secs_f64(),
                p.end.as_secs_f64(),
                p.fault
            );
        }
    }
    if let Some(e) = &pairing_error {
        let _ = writeln!(text, "\nthe history does not pair: {e}");
    }
    if !record.problems.is_empty() {
        let _ = writeln!(text, "\nharness problems:");
        for p in &record.problems {
            let _ = writeln!(text, "  {p}");
        }
    }
    write(dir, "summary.txt", &text)?;

    let span_s = record.wall.as_secs_f64();
    write(
        dir,
        "latency.svg",
        &svg::latency(
            &format!("{test}: latency"),
            &points,
            &f_names,
            span_s,
            &record.nemesis_periods,
        ),
    )?;
    let series: Vec<RateSeries> = per_second
        .into_iter()
        .map(|((f, _), (outcome, per_second))| RateSeries {
            f,
            outcome,
            per_second,
        })
        .collect();
    write(
        dir,
        "rate.svg",
        &svg::rate(
            &format!("{test}: completed ops/s"),
            &series,
            &f_names,
            &record.nemesis_periods,
        ),
    )?;
    let page = match &result.check {
        Some(check) => crate::html::render(test, history, &ops, check),
        None => table_page(test, verdict, &times),
    };
    write(dir, "timeline.html", &page)?;
    Ok(verdict)
}

fn write(dir: &RunDir, name: &str, content: &str) -> Result<(), HarnessError> {
    let path = dir.file(name);
    std::fs::write(&path, content).map_err(|e| HarnessError::io(&path, e))
}

/// Rows of the plain timeline page.
const TABLE_ROWS: usize = 5000;

/// The timeline when no checker produced one: a table of operations in
/// invocation order, coloured like [`crate::html::render`]'s bars.
fn table_page(test: &str, verdict: Verdict, times: &[OpTimes]) -> String {
    let title = svg::escape(test);
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>{title}</title>\n<style>\n\
         body{{font-family:sans-serif;margin:16px;color:#222}}\n\
         table{{border-collapse:collapse;font-size:12px}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}}\n\
         .ok{{background:#8fd18f}}.fail{{background:#e8a0a0}}.info{{background:#f3c46b}}\n\
         </style></head><body>\n<h2>{title}</h2>\n<p>verdict: <b>{}</b>; {} operations{}</p>\n\
         <table><tr><th>start (s)</th><th>latency (ms)</th><th>process</th><th>f</th><th>value</th><th>outcome</th></tr>\n",
        verdict.name(),
        times.len(),
        if times.len() > TABLE_ROWS {
            format!(" (the first {TABLE_ROWS} shown)")
        } else {
            String::new()
        }
    );
    for t in times.iter().take(TABLE_ROWS) {
        let o = outcome_name(t.op.outcome);
        let lat = t.end_ns.map_or("-".into(), |e| {
            format!("{:.2}", (e - t.start_ns) as f64 / 1e6)
        });
        let _ = writeln!(
            out,
            "<tr class={o}><td>{:.3}</td><td>{lat}</td><td>{}</td><td>{}</td><td>{}</td><td>{o}</td></tr>",
            t.start_ns as f64 / 1e9,
            svg::escape(&t.op.process.to_string()),
            svg::escape(t.op.f.name()),
            svg::escape(&t.op.value.to_string())
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}
