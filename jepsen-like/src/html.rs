//! A self-contained HTML timeline of a checked history, for people.
//!
//! One lane per process, one bar per operation from its invocation to its
//! completion (indeterminate operations run to the right edge), coloured by
//! outcome, with a hover title giving the details. For a non-linearizable
//! register history the page focuses on the first failing key and window
//! around the failure: the operation that could not be linearized is
//! outlined in red and the concurrent candidates are dashed. No scripts or
//! external assets, so the file can be mailed around or attached to a bug.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::check::CheckResult;
use crate::history::{History, Operation, Outcome, Process};
use crate::value::Value;

/// At most this many operations are drawn for a valid history.
const MAX_OPS: usize = 1500;
/// Operations drawn before / after the one that could not be linearized.
const WINDOW_BEFORE: usize = 150;
const WINDOW_AFTER: usize = 50;
/// Minimum pixels per event.
const PX_PER_STEP: f64 = 14.0;
const LANE_HEIGHT: usize = 22;
const LABEL_WIDTH: usize = 90;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn key_of(op: &Operation, history: &History) -> Option<Value> {
    match history.ops.get(op.invoke).map(|o| &o.value) {
        Some(Value::Vector(kv)) if kv.len() == 2 => Some(kv[0].clone()),
        _ => None,
    }
}

/// Renders the page. `ops` must be `history.operations()`.
pub fn render(title: &str, history: &History, ops: &[Operation], result: &CheckResult) -> String {
    let failure = result.failures.first();
    let failing: Option<usize> = failure.map(|f| f.op.id);
    let pending: HashSet<usize> = failure
        .map(|f| f.pending.iter().map(|p| p.id).collect())
        .unwrap_or_default();
    let linearized: HashSet<usize> = failure
        .map(|f| f.prefix.iter().copied().collect())
        .unwrap_or_default();

    // Choose what to draw: the failing key only, then a window.
    let mut shown: Vec<&Operation> = match failure.and_then(|f| f.key.as_ref()) {
        Some(key) => ops
            .iter()
            .filter(|o| key_of(o, history).as_ref() == Some(key))
            .collect(),
        None => ops.iter().collect(),
    };
    let mut note = String::new();
    let failing_pos = failing.and_then(|id| shown.iter().position(|o| o.id == id));
    if let Some(pos) = failing_pos {
        // Focus on the failure: what led up to it and a little after.
        let (start, end) = (
            pos.saturating_sub(WINDOW_BEFORE),
            (pos + WINDOW_AFTER + 1).min(shown.len()),
        );
        if start > 0 || end < shown.len() {
            note = format!(
                "Showing operations {}..{} of {} on this key (a window around the failure).",
                start,
                end,
                shown.len()
            );
            shown = shown[start..end].to_vec();
        }
    } else if shown.len() > MAX_OPS {
        note = format!("Showing the first {MAX_OPS} of {} operations.", shown.len());
        shown.truncate(MAX_OPS);
    }

    // Positions: the rank of each invocation/completion among the shown
    // operations' events, which keeps their real-time order exactly while
    // squeezing out other keys' entries.
    let mut events: Vec<usize> = shown
        .iter()
        .flat_map(|o| std::iter::once(o.invoke).chain(o.complete))
        .collect();
    events.sort_unstable();
    events.dedup();
    let steps = events.len() + 1;
    let px = (900.0 / steps as f64).clamp(PX_PER_STEP, 80.0);
    let x = |i: usize| events.partition_point(|&e| e < i) as f64 * px;
    let end_x = steps as f64 * px;
    let width = end_x + 40.0;

    let mut lanes: BTreeMap<&Process, usize> = BTreeMap::new();
    for o in &shown {
        let n = lanes.len();
        lanes.entry(&o.process).or_insert(n);
    }
    // Renumber lanes in process order for a tidy picture.
    for (i, lane) in lanes.values_mut().enumerate() {
        *lane = i;
    }
    let height = lanes.len() * LANE_HEIGHT + 30;

    let mut body = String::new();
    for (p, lane) in &lanes {
        let _ = write!(
            body,
            "<div class=lbl style='top:{}px'>process {}</div>",
            lane * LANE_HEIGHT + 24,
            escape(&p.to_string())
        );
    }
    for o in &shown {
        let lane = lanes.get(&o.process).copied().unwrap_or(0);
        let left = x(o.invoke);
        let right = match (o.outcome, o.complete) {
            (Outcome::Info, _) | (_, None) => end_x,
            (_, Some(c)) => x(c),
        };
        let w = (right - left).max(px * 0.6);
        let mut class = match o.outcome {
            Outcome::Ok => "op ok".to_string(),
            Outcome::Fail => "op fail".to_string(),
            Outcome::Info => "op info".to_string(),
        };
        let mut role = "";
        if Some(o.id) == failing {
            class.push_str(" bad");
            role = "\nCANNOT BE LINEARIZED here";
        } else if pending.contains(&o.id) {
            class.push_str(" pending");
            role = "\nconcurrent candidate at the failure";
        } else if linearized.contains(&o.id) {
            role = "\nin the longest linearizable prefix";
        }
        let line = history.ops.get(o.invoke).map_or(0, |e| e.line);
        let completion = o
            .complete
            .and_then(|c| history.ops.get(c))
            .map(|c| format!("{} {}", c.kind, c.value))
            .unwrap_or_else(|| "never completed".into());
        let times = match (
            history.ops.get(o.invoke).and_then(|e| e.time),
            o.complete
                .and_then(|c| history.ops.get(c))
                .and_then(|e| e.time),
        ) {
            (Some(a), Some(b)) => format!("\ntime {a} .. {b} ns"),
            (Some(a), None) => format!("\ntime {a} .. ? ns"),
            _ => String::new(),
        };
        let tip =
            format!(
            "op {} process {}: {} {}\noutcome: {:?} (completion: {})\nhistory index {}..{}{}{}{}",
            o.id,
            o.process,
            o.f,
            o.value,
            o.outcome,
            completion,
            o.invoke,
            o.complete.map_or("-".into(), |c| c.to_string()),
            if line > 0 { format!("\nline {line}") } else { String::new() },
            times,
            role
        );
        let _ = write!(
            body,
            "<div class='{class}' style='left:{:.0}px;top:{}px;width:{:.0}px' title=\"{}\">{} {}</div>",
            left + LABEL_WIDTH as f64,
            lane * LANE_HEIGHT + 22,
            w,
            escape(&tip),
            escape(o.f.name()),
            escape(&o.value.to_string())
        );
    }

    let mut summary = format!(
        "<b>{}</b> &mdash; model {}, {} ops, {} key(s), checked in {:.1} ms",
        escape(result.verdict.name()),
        result.model,
        result.ops,
        result.keys,
        result.elapsed_ms
    );
    if let Some(f) = failure {
        let key = f
            .key
            .as_ref()
            .map(|k| format!(" on key {k}"))
            .unwrap_or_default();
        let _ = write!(
            summary,
            "<br>Cannot linearize <span class=badtxt>{}</span>{} after a linearizable prefix of {} ops (register value {}).",
            escape(&f.op.to_string()),
            escape(&key),
            f.prefix_len,
            escape(&f.state.to_string())
        );
    }
    if !note.is_empty() {
        let _ = write!(summary, "<br>{}", escape(&note));
    }

    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>{title}</title>\n<style>\n\
body{{font-family:sans-serif;margin:16px;color:#222}}\n\
.legend span{{display:inline-block;padding:2px 8px;margin-right:8px;border-radius:3px}}\n\
.wrap{{overflow-x:auto;border:1px solid #ccc;background:#fafafa}}\n\
.tl{{position:relative;height:{height}px;width:{tw:.0}px}}\n\
.lbl{{position:absolute;left:4px;font-size:11px;color:#555;width:{lw}px}}\n\
.op{{position:absolute;height:16px;font-size:10px;line-height:16px;overflow:hidden;white-space:nowrap;border-radius:3px;padding:0 2px;box-sizing:border-box;border:1px solid rgba(0,0,0,.25);cursor:default}}\n\
.ok{{background:#8fd18f}}.fail{{background:#e8a0a0}}.info{{background:#f3c46b}}\n\
.bad{{border:3px solid #d00;z-index:2;font-weight:bold}}.pending{{border:2px dashed #00c}}\n\
.badtxt{{color:#d00;font-weight:bold}}\n\
</style></head><body>\n<h2>{title}</h2>\n<p>{summary}</p>\n\
<p class=legend><span class=ok>ok</span><span class=info>info (indeterminate, may take effect until the end)</span><span class=fail>fail</span>\
<span class='bad' style='position:static'>cannot be linearized</span><span class='pending' style='position:static'>concurrent candidate</span></p>\n\
<p style='font-size:12px;color:#666'>Bars run from invocation to completion, in real-time order (invocation/completion order of the operations shown). Hover a bar for details.</p>\n\
<div class=wrap><div class=tl>{body}</div></div>\n</body></html>\n",
        title = escape(title),
        height = height,
        tw = width + LABEL_WIDTH as f64,
        lw = LABEL_WIDTH,
        summary = summary,
        body = body
    )
}
