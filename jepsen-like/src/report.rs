//! Human-readable text rendering of a [`CheckResult`], as printed by the
//! CLI. Long lists are capped so a report stays readable on huge histories;
//! the JSON output (serde) carries everything.

use std::fmt::Write as _;

use crate::check::{CheckResult, Verdict};
use crate::sibling_checker::{SiblingFinding, SiblingKeyReport, SiblingReport};
use crate::value::Value;

/// How many list items (elements, errors, failures) to print.
const LIST_CAP: usize = 10;

fn list(values: &[Value]) -> String {
    let mut s: Vec<String> = values
        .iter()
        .take(LIST_CAP)
        .map(|v| v.to_string())
        .collect();
    if values.len() > LIST_CAP {
        s.push(format!("... ({} more)", values.len() - LIST_CAP));
    }
    s.join(" ")
}

fn ids(ids: &[usize]) -> String {
    let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    s.join(" ")
}

/// `value (write op 3 5; covered by op 7)` per finding, capped.
fn findings(list: &[SiblingFinding]) -> String {
    let mut s: Vec<String> = list
        .iter()
        .take(LIST_CAP)
        .map(|f| {
            let mut t = f.value.to_string();
            if !f.writes.is_empty() {
                t += &format!(" (write op {}", ids(&f.writes));
                if !f.covered_by.is_empty() {
                    t += &format!("; covered by op {}", ids(&f.covered_by));
                }
                t += ")";
            }
            t
        })
        .collect();
    if list.len() > LIST_CAP {
        s.push(format!("... ({} more)", list.len() - LIST_CAP));
    }
    s.join(", ")
}

fn render_siblings(out: &mut String, s: &SiblingReport) {
    let sum = |f: fn(&SiblingKeyReport) -> usize| s.keys.iter().map(f).sum::<usize>();
    let _ = writeln!(
        out,
        "  attempted {}, acknowledged {}, in final reads {}, covered {}; lost {}, resurrected {}, unexpected {}, failed but present {}, recovered {}",
        sum(|k| k.attempt_count),
        sum(|k| k.acknowledged_count),
        sum(|k| k.present_count),
        sum(|k| k.covered_count),
        sum(|k| k.lost.len()),
        sum(|k| k.resurrected.len()),
        sum(|k| k.unexpected.len()),
        sum(|k| k.failed_but_present.len()),
        sum(|k| k.recovered.len()),
    );
    let invalid: Vec<&SiblingKeyReport> = s
        .keys
        .iter()
        .filter(|k| k.verdict == Verdict::Invalid)
        .collect();
    for k in invalid.iter().take(LIST_CAP) {
        let read = k
            .final_read
            .map(|id| format!(" (final read op {id})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  key {}{read}:", k.key);
        for (label, list) in [
            ("lost", &k.lost),
            ("resurrected", &k.resurrected),
            ("unexpected", &k.unexpected),
            ("failed but present", &k.failed_but_present),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "    {label}: {}", findings(list));
            }
        }
    }
    if invalid.len() > LIST_CAP {
        let _ = writeln!(
            out,
            "  ... and {} more invalid keys",
            invalid.len() - LIST_CAP
        );
    }
}

/// Renders the result for `name` (usually the file path).
pub fn render_text(name: &str, r: &CheckResult) -> String {
    let mut out = String::new();
    let verdict = match r.verdict {
        Verdict::Valid => "valid",
        Verdict::Invalid => "INVALID",
        Verdict::Unknown => "UNKNOWN",
    };
    let _ = writeln!(
        out,
        "{name}: {verdict} ({model}) - {ops} ops, {keys} key{s}, {ms:.1} ms",
        model = r.model,
        ops = r.ops,
        keys = r.keys,
        s = if r.keys == 1 { "" } else { "s" },
        ms = r.elapsed_ms
    );
    if let Some(m) = &r.message {
        let _ = writeln!(out, "  {m}");
    }
    if !r.unknown_keys.is_empty() {
        let _ = writeln!(out, "  keys not decided: {}", list(&r.unknown_keys));
    }
    if r.keys_unchecked > 0 {
        let _ = writeln!(
            out,
            "  stopped at the first non-linearizable key: {} of {} keys left unchecked (--all-failures judges them all)",
            r.keys_unchecked, r.keys
        );
    }
    for f in r.failures.iter().take(LIST_CAP) {
        let key = f
            .key
            .as_ref()
            .map(|k| format!("key {k}: "))
            .unwrap_or_default();
        let _ = writeln!(out, "  {key}cannot linearize {}", f.op);
        let _ = writeln!(
            out,
            "    after the longest linearizable prefix found ({} ops), register value {}",
            f.prefix_len, f.state
        );
        if !f.prefix_tail.is_empty() {
            let _ = writeln!(out, "    prefix ends with:");
            for p in &f.prefix_tail {
                let _ = writeln!(out, "      {p}");
            }
        }
        if !f.pending.is_empty() {
            let _ = writeln!(out, "    concurrent ops that could not help:");
            for p in f.pending.iter().take(LIST_CAP) {
                let _ = writeln!(out, "      {p}");
            }
        }
    }
    if r.failures.len() > LIST_CAP {
        let _ = writeln!(
            out,
            "  ... and {} more failing keys",
            r.failures.len() - LIST_CAP
        );
    }
    if let Some(s) = &r.set {
        let _ = writeln!(
            out,
            "  attempted {}, acknowledged {}, in final read {}, lost {}, unexpected {}, recovered {}, stale {}",
            s.attempt_count,
            s.acknowledged_count,
            s.ok_count,
            s.lost.len(),
            s.unexpected.len(),
            s.recovered.len(),
            s.stale.len()
        );
        for (label, v) in [
            ("lost", &s.lost),
            ("unexpected", &s.unexpected),
            ("stale", &s.stale),
        ] {
            if !v.is_empty() {
                let _ = writeln!(out, "  {label}: {}", list(v));
            }
        }
    }
    if let Some(s) = &r.siblings {
        render_siblings(&mut out, s);
    }
    if let Some(c) = &r.counter {
        let _ = writeln!(
            out,
            "  {} reads checked, final bounds [{}, {}]",
            c.reads, c.final_bounds.0, c.final_bounds.1
        );
        for e in c.errors.iter().take(LIST_CAP) {
            let _ = writeln!(
                out,
                "  read {} outside [{}, {}]: {}",
                e.value, e.lower, e.upper, e.op
            );
        }
        if c.errors.len() > LIST_CAP {
            let _ = writeln!(
                out,
                "  ... and {} more bad reads",
                c.errors.len() - LIST_CAP
            );
        }
    }
    out
}
