//! How results look: aligned tables for people, one JSON object per result for scripts.
//!
//! Stored values are arbitrary bytes, and a terminal must never receive them raw: text is
//! shown as is only when it is plain printable UTF-8; otherwise it is shown quoted with the
//! shell's own escapes (so it can be pasted back into a `put`), and bytes that are not
//! UTF-8 are shown as `base64:...`.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::key::Key;
use crate::proto::{CrdtOp, CrdtValue, FieldOp, TraceEvent};

use super::session::{policy_text, ContextSource, ExecError, Outcome, WriteKind};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned tables.
    Table,
    /// One JSON object per command result, on one line.
    Json,
}

impl Format {
    /// Parse `table` or `json` (`text` is accepted for `table`, like the CLI's flag).
    pub fn parse(text: &str) -> Option<Format> {
        match text.to_ascii_lowercase().as_str() {
            "table" | "text" => Some(Format::Table),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
        }
    }
}

/// Characters that must not reach a terminal unescaped: controls, and the invisible
/// direction overrides that make text display in a different order than it is stored.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// A value for a terminal: plain text as is, text needing escapes as a quoted shell
/// string, anything else as `base64:`.
pub fn value_text(bytes: &[u8]) -> String {
    let Ok(s) = std::str::from_utf8(bytes) else {
        return format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
    };
    let plain = !s.is_empty()
        && !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
        && !s.starts_with('"')
        && !s.starts_with("base64:")
        && !s.chars().any(needs_escape);
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            // Non-ASCII controls and direction marks: their UTF-8 bytes as \x escapes,
            // which the shell reads back as the same bytes.
            c if needs_escape(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value in JSON: a string if UTF-8 (JSON escapes controls), else `{"base64": ...}`.
pub fn value_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// A key as the user types it: `partition` or `partition/sort`, escaped like values.
pub fn key_text(key: &Key) -> String {
    let mut raw = key.partition.clone();
    if !key.sort.is_empty() {
        raw.push(b'/');
        raw.extend_from_slice(&key.sort);
    }
    value_text(&raw)
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A table in the style of cqlsh: a header, a rule, left-aligned cells (right-aligned
/// where the column is marked numeric with a leading `>` in its header).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let right: Vec<bool> = headers.iter().map(|h| h.starts_with('>')).collect();
    let names: Vec<&str> = headers.iter().map(|h| h.trim_start_matches('>')).collect();
    let mut widths: Vec<usize> = names.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if right[i] {
                    format!(" {}{c} ", " ".repeat(pad))
                } else {
                    format!(" {c}{} ", " ".repeat(pad))
                }
            })
            .collect();
        parts.join("|").trim_end().to_string()
    };
    let mut out = line(names.clone());
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn trace_table(trace: &[TraceEvent]) -> String {
    let rows: Vec<Vec<String>> = trace
        .iter()
        .map(|t| {
            vec![
                t.elapsed_us.to_string(),
                t.node.clone(),
                value_text(t.activity.as_bytes()),
            ]
        })
        .collect();
    format!(
        "\n\nTracing session (from the coordinator):\n{}",
        table(&[">elapsed µs", "node", "activity"], &rows)
    )
}

fn trace_json(trace: &[TraceEvent]) -> Value {
    serde_json::to_value(trace).unwrap_or(Value::Null)
}

fn quorum_note(name: &str, q: Option<u8>, default: Option<u8>) -> String {
    match (q, default) {
        (Some(q), _) => format!("{name}={q}"),
        (None, Some(d)) => format!("{name}={d} (keyspace default)"),
        (None, None) => format!("{name}=keyspace default"),
    }
}

/// Render a successful result.
pub fn outcome(o: &Outcome, format: Format) -> String {
    match format {
        Format::Table => outcome_table(o),
        Format::Json => outcome_json(o).to_string(),
    }
}

fn outcome_table(o: &Outcome) -> String {
    match o {
        Outcome::Read {
            key,
            r,
            default_r,
            coordinator,
            response,
            ..
        } => {
            let mut out = String::new();
            if let Some(v) = &response.crdt {
                out.push_str(&crdt_table(v, key));
            } else if response.values.is_empty() {
                out.push_str(if response.tombstones > 0 {
                    "(not found: deleted)"
                } else {
                    "(not found)"
                });
            } else {
                let rows: Vec<Vec<String>> = response
                    .values
                    .iter()
                    .map(|s| vec![s.dot.clone(), value_text(&s.value), utc(s.written_at_ms)])
                    .collect();
                out.push_str(&table(&["id", "value", "written (UTC)"], &rows));
                let n = response.values.len();
                if n > 1 {
                    out.push_str(&format!(
                        "\n({n} siblings: concurrent writes; `resolve {} VALUE` merges them)",
                        key_text(key)
                    ));
                } else {
                    out.push_str("\n(1 value)");
                }
                if response.tombstones > 0 {
                    out.push_str(&format!(
                        "\n(and {} concurrent delete(s))",
                        response.tombstones
                    ));
                }
            }
            out.push_str(&format!(
                "\ncontext: {}",
                if response.context.is_empty() {
                    "(empty)"
                } else {
                    &response.context
                }
            ));
            out.push_str(&format!(
                "\n{}, coordinator {}",
                quorum_note("r", *r, *default_r),
                coordinator.as_deref().unwrap_or("?")
            ));
            if !response.trace.is_empty() {
                out.push_str(&trace_table(&response.trace));
            }
            out
        }
        Outcome::Written {
            kind,
            blind,
            replaces,
            w,
            default_w,
            coordinator,
            stamp,
            policy,
            response,
            ..
        } => {
            let what = match kind {
                WriteKind::Put => "written",
                WriteKind::Delete => "deleted (tombstone written)",
                WriteKind::Resolve => "resolved",
                WriteKind::Conditional => "written (conditional: unchanged since the read)",
            };
            let mut out = if response.dot.is_empty() {
                // Under a last-write-wins policy the lead replica already held a version
                // that wins over this one: the write is stored nowhere as the value.
                format!(
                    "OK, but superseded: an existing version wins under {}",
                    policy
                        .as_deref()
                        .unwrap_or("the keyspace's last-write-wins policy")
                )
            } else {
                format!("OK: {what} as {}", response.dot)
            };
            let mut sent = Vec::new();
            if let Some(ts) = stamp.ts {
                sent.push(format!("ts={ts}"));
            }
            if let Some(a) = &stamp.actor {
                sent.push(format!("actor={}", value_text(a.as_bytes())));
            }
            if !sent.is_empty() {
                out.push_str(&format!(" [{}]", sent.join(" ")));
            }
            if response.dot.is_empty() {
                // Nothing more to say about siblings: the write lost.
            } else if *kind == WriteKind::Resolve {
                if replaces.is_empty() {
                    out.push_str(" (the last read found nothing to replace)");
                } else {
                    out.push_str(&format!(", replacing {}", replaces.join(", ")));
                }
            } else if *blind && policy.as_deref().is_none_or(|p| p == "siblings") {
                out.push_str(" (blind: any existing value stays as a sibling)");
            }
            out.push_str(&format!(
                "\ncontext: {}\n{}, coordinator {}",
                response.context,
                quorum_note("w", *w, *default_w),
                coordinator.as_deref().unwrap_or("?")
            ));
            if !response.trace.is_empty() {
                out.push_str(&trace_table(&response.trace));
            }
            out
        }
        Outcome::Updated {
            key,
            command,
            op,
            source,
            w,
            default_w,
            coordinator,
            response,
            ..
        } => {
            let mut out = format!("OK: {command} {}: {}", key_text(key), op_text(op));
            match source {
                ContextSource::None => {}
                ContextSource::Given => out.push_str(" (with the context given)"),
                ContextSource::LastRead => {
                    out.push_str(" (with the context of your last read of the key)")
                }
                ContextSource::ReadFirst => {
                    out.push_str(" (read the key first for its context: removes only what it saw)")
                }
            }
            out.push_str(&format!(
                "\ncontext: {}\n{}, coordinator {}",
                if response.context.is_empty() {
                    "(empty)"
                } else {
                    &response.context
                },
                quorum_note("w", *w, *default_w),
                coordinator.as_deref().unwrap_or("?")
            ));
            if !response.trace.is_empty() {
                out.push_str(&trace_table(&response.trace));
            }
            out
        }
        Outcome::Consistency {
            keyspace,
            r,
            w,
            def,
            changed,
        } => {
            let side = |name: &str, l: &Option<crate::shell::parse::Level>, dflt: Option<u8>| {
                let n = def.as_ref().map(|d| d.n);
                match (l, n) {
                    (None, _) => match dflt {
                        Some(d) => format!("{name}=default ({d} for {keyspace})"),
                        None => format!("{name}=default"),
                    },
                    (Some(l), Some(n)) if l.needs_n() => {
                        format!("{name}={l} ({} for {keyspace} with n={n})", l.resolve(n))
                    }
                    (Some(l), _) => format!("{name}={l}"),
                }
            };
            format!(
                "{}consistency: {}, {}",
                if *changed { "OK, " } else { "" },
                side("r", r, def.as_ref().map(|d| d.r)),
                side("w", w, def.as_ref().map(|d| d.w))
            )
        }
        Outcome::Scanned {
            partition,
            items,
            more_after,
            r,
            default_r,
            coordinator,
            trace,
            ..
        } => {
            let p = value_text(partition);
            let mut out = String::new();
            if items.is_empty() {
                out.push_str(&format!("(no items in partition {p} in this range)"));
            } else {
                let mut rows: Vec<Vec<String>> = Vec::new();
                for item in items {
                    let key = key_text(&Key {
                        partition: partition.clone(),
                        sort: item.sort.clone(),
                    });
                    if let Some(v) = &item.crdt {
                        rows.push(vec![
                            key.clone(),
                            "-".into(),
                            crdt_line(v),
                            item.context.clone(),
                        ]);
                        continue;
                    }
                    for (i, s) in item.values.iter().enumerate() {
                        let first = i == 0;
                        rows.push(vec![
                            if first { key.clone() } else { String::new() },
                            s.dot.clone(),
                            value_text(&s.value),
                            if first {
                                item.context.clone()
                            } else {
                                String::new()
                            },
                        ]);
                    }
                }
                out.push_str(&table(&["key", "id", "value", "context"], &rows));
                let siblings = items.iter().filter(|i| i.values.len() > 1).count();
                if siblings > 0 {
                    out.push_str(&format!(
                        "\n({siblings} item(s) with siblings; `resolve KEY VALUE` merges them)"
                    ));
                }
            }
            match more_after {
                Some(last) => out.push_str(&format!(
                    "\n({} item(s); more: `scan {p} after={}` or `next`)",
                    items.len(),
                    value_text(last)
                )),
                None => out.push_str(&format!("\n({} item(s); end of scan)", items.len())),
            }
            out.push_str(&format!(
                "\n{}, coordinator {}",
                quorum_note("r", *r, *default_r),
                coordinator.as_deref().unwrap_or("?")
            ));
            if !trace.is_empty() {
                out.push_str(&trace_table(trace));
            }
            out
        }
        Outcome::Batched {
            keys,
            w,
            default_w,
            coordinator,
            response,
            ..
        } => {
            let rows: Vec<Vec<String>> = keys
                .iter()
                .zip(
                    response
                        .dots
                        .iter()
                        .map(Some)
                        .chain(std::iter::repeat(None)),
                )
                .map(|(k, d)| vec![key_text(k), d.cloned().unwrap_or_else(|| "?".into())])
                .collect();
            let mut out = format!(
                "OK: batch of {} item(s) written atomically (blind writes)\n{}",
                keys.len(),
                table(&["key", "id"], &rows)
            );
            out.push_str(&format!(
                "\n{}, coordinator {}",
                quorum_note("w", *w, *default_w),
                coordinator.as_deref().unwrap_or("?")
            ));
            if !response.trace.is_empty() {
                out.push_str(&trace_table(&response.trace));
            }
            out
        }
        Outcome::Used { keyspace, def } => match def {
            Some(d) => {
                let mut extra = policy_text(d);
                if d.read_repair != crate::keyspace::ReadRepair::Async {
                    extra.push_str(&format!("; read repair {}", d.read_repair));
                }
                format!("now using keyspace {keyspace} ({extra})")
            }
            None => format!("now using keyspace {keyspace}"),
        },
        Outcome::Keyspaces { current, list } => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|k| {
                    vec![
                        format!("{}{}", if &k.name == current { "*" } else { " " }, k.name),
                        k.n.to_string(),
                        k.r.to_string(),
                        k.w.to_string(),
                        k.max_siblings.to_string(),
                        policy_text(k),
                        k.read_repair.to_string(),
                    ]
                })
                .collect();
            format!(
                "{}\n({} keyspace(s); * = current)",
                table(
                    &[
                        " keyspace",
                        ">n",
                        ">r",
                        ">w",
                        ">max_siblings",
                        "policy",
                        "read_repair"
                    ],
                    &rows
                ),
                list.len()
            )
        }
        Outcome::Dropped {
            name,
            acked,
            missing,
        } => {
            let mut out = format!(
                "OK: keyspace {name} dropped and its data deleted on {}",
                acked.join(", ")
            );
            if !missing.is_empty() {
                out.push_str(&format!(
                    "\nnot reached: {} (run drop keyspace again once they are up; until then they keep it)",
                    missing.join(", ")
                ));
            }
            out
        }
        Outcome::Created {
            def,
            acked,
            missing,
        } => {
            let mut out = format!(
                "OK: keyspace {} created ({}); stored on {}",
                def.name,
                def.summary(),
                if acked.is_empty() {
                    "no node".to_string()
                } else {
                    acked.join(", ")
                }
            );
            if !missing.is_empty() {
                out.push_str(&format!(
                    "\nnot reached: {} (they learn it from the first request that names it)",
                    missing.join(", ")
                ));
            }
            out
        }
        Outcome::Replicas {
            keyspace,
            key,
            nodes,
        } => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .enumerate()
                .map(|(i, (n, s))| {
                    vec![
                        (i + 1).to_string(),
                        n.clone(),
                        s.clone().unwrap_or_else(|| "?".into()),
                    ]
                })
                .collect();
            format!(
                "replicas of {} in {keyspace} (preference list order):\n{}",
                key_text(key),
                table(&[">#", "node", "state"], &rows)
            )
        }
        Outcome::Stats {
            node,
            latencies,
            read_repairs,
        } => {
            let rows: Vec<Vec<String>> = latencies
                .iter()
                .map(|l| {
                    vec![
                        l.kind.clone(),
                        l.op.clone(),
                        l.count.to_string(),
                        l.p50_us.to_string(),
                        l.p90_us.to_string(),
                        l.p99_us.to_string(),
                        l.p999_us.to_string(),
                        l.max_us.to_string(),
                    ]
                })
                .collect();
            format!(
                "latency of {node} in microseconds, since it started:\n{}\n(read repairs sent: {read_repairs})",
                table(&["role", "op", ">count", ">p50", ">p90", ">p99", ">p99.9", ">max"], &rows)
            )
        }
        Outcome::Cluster { text, .. } => text.clone(),
        Outcome::Status { contacted, nodes } => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        format!("{}{}", if &n.name == contacted { "*" } else { " " }, n.name),
                        n.addr.clone(),
                        n.state.clone(),
                        detector_cell(n),
                        format!("{:.1}%", n.ownership * 100.0),
                        n.hints_pending.to_string(),
                        n.hints_pending_bytes.to_string(),
                    ]
                })
                .collect();
            let up = nodes.iter().filter(|n| n.state == "up").count();
            let (replayed, dropped) = nodes
                .iter()
                .find(|n| &n.name == contacted)
                .map_or((0, 0), |n| (n.hints_replayed, n.hints_dropped));
            let reaping = nodes
                .iter()
                .find(|n| &n.name == contacted)
                .map_or(String::new(), |n| {
                    format!(
                        "\n{}",
                        reaping_line(
                            contacted,
                            n.tombstones_reaped,
                            n.tombstones_kept,
                            n.tombstones_last_kept.as_deref()
                        )
                    )
                });
            format!(
                "connected to {contacted}; states as {contacted} sees them:\n{}\n({} node(s), {up} up; * = the node this shell talks to; hints = what {contacted} holds for each node, {replayed} replayed, {dropped} dropped since it started){reaping}",
                table(&[" node", "address", "state", "detector", ">ownership", ">hints", ">hint bytes"], &rows),
                nodes.len()
            )
        }
        Outcome::Ring { vnodes, rows } => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|(n, own, reported)| {
                    vec![
                        n.clone(),
                        vnodes.to_string(),
                        format!("{:.1}%", own * 100.0),
                        reported
                            .map(|r| format!("{:.1}%", r * 100.0))
                            .unwrap_or_else(|| "?".into()),
                    ]
                })
                .collect();
            let agree = rows
                .iter()
                .all(|(_, own, rep)| rep.is_none_or(|r| (r - own).abs() < 0.001));
            let mut out = table(
                &["node", ">vnodes", ">primary share", ">node reports"],
                &cells,
            );
            out.push_str(&format!(
                "\n(ring rebuilt here from the member names with {vnodes} vnodes per node, the default)"
            ));
            if !agree {
                out.push_str(
                    "\nnote: the cluster's shares differ: its ring.vnodes is not the default, \
                     so trust the `node reports` column",
                );
            }
            out
        }
        Outcome::Setting { name, value } => format!("{name}: {value}"),
        Outcome::Help(text) => text.clone(),
        Outcome::Exit => String::new(),
    }
}

fn outcome_json(o: &Outcome) -> Value {
    match o {
        Outcome::Read {
            keyspace,
            key,
            r,
            default_r,
            coordinator,
            response,
        } => json!({
            "ok": true, "command": "get", "keyspace": keyspace, "key": value_json(&key_bytes(key)),
            "siblings": response.values.iter().map(|s| json!({
                "id": s.dot, "value": value_json(&s.value), "written_at_ms": s.written_at_ms,
            })).collect::<Vec<_>>(),
            "tombstones": response.tombstones, "context": response.context,
            "crdt": response.crdt.as_ref().map(crdt_json),
            "r": r.or(*default_r), "coordinator": coordinator, "trace": trace_json(&response.trace),
        }),
        Outcome::Updated {
            keyspace,
            key,
            command,
            op,
            source,
            sent_context,
            w,
            default_w,
            coordinator,
            response,
        } => json!({
            "ok": true, "command": command, "keyspace": keyspace, "key": value_json(&key_bytes(key)),
            "op": op_json(op),
            "context_from": match source {
                ContextSource::None => "none",
                ContextSource::Given => "given",
                ContextSource::LastRead => "last_read",
                ContextSource::ReadFirst => "read_first",
            },
            "sent_context": sent_context, "context": response.context, "w": w.or(*default_w),
            "coordinator": coordinator, "trace": trace_json(&response.trace),
        }),
        Outcome::Written {
            keyspace,
            key,
            kind,
            blind,
            replaces,
            w,
            default_w,
            coordinator,
            conditional,
            stamp,
            policy,
            response,
        } => json!({
            "ok": true,
            "command": match kind { WriteKind::Put | WriteKind::Conditional => "put", WriteKind::Delete => "delete", WriteKind::Resolve => "resolve" },
            "keyspace": keyspace, "key": value_json(&key_bytes(key)), "id": response.dot,
            "superseded": response.dot.is_empty(), "policy": policy,
            "conditional": conditional, "ts": stamp.ts, "actor": stamp.actor,
            "blind": blind, "replaces": replaces, "context": response.context, "w": w.or(*default_w),
            "coordinator": coordinator, "trace": trace_json(&response.trace),
        }),
        Outcome::Scanned {
            keyspace,
            partition,
            items,
            more_after,
            r,
            default_r,
            coordinator,
            trace,
        } => json!({
            "ok": true, "command": "scan", "keyspace": keyspace,
            "partition": value_json(partition),
            "items": items.iter().map(|i| json!({
                "sort": value_json(&i.sort),
                "key": value_json(&key_bytes(&Key { partition: partition.clone(), sort: i.sort.clone() })),
                "siblings": i.values.iter().map(|s| json!({
                    "id": s.dot, "value": value_json(&s.value), "written_at_ms": s.written_at_ms,
                })).collect::<Vec<_>>(),
                "context": i.context,
                "crdt": i.crdt.as_ref().map(crdt_json),
            })).collect::<Vec<_>>(),
            "more": more_after.is_some(),
            "next_after": more_after.as_ref().map(|m| value_json(m)),
            "r": r.or(*default_r), "coordinator": coordinator, "trace": trace_json(trace),
        }),
        Outcome::Batched {
            keyspace,
            keys,
            w,
            default_w,
            coordinator,
            response,
        } => json!({
            "ok": true, "command": "batch", "keyspace": keyspace,
            "items": keys.iter().enumerate().map(|(i, k)| json!({
                "key": value_json(&key_bytes(k)), "id": response.dots.get(i),
            })).collect::<Vec<_>>(),
            "w": w.or(*default_w), "coordinator": coordinator, "trace": trace_json(&response.trace),
        }),
        Outcome::Consistency {
            keyspace,
            r,
            w,
            def,
            ..
        } => {
            let n = def.as_ref().map(|d| d.n);
            let eff = |l: &Option<crate::shell::parse::Level>, d: Option<u8>| match (l, n) {
                (None, _) => d,
                (Some(l), Some(n)) => Some(l.resolve(n)),
                (Some(l), None) if !l.needs_n() => Some(l.resolve(0)),
                _ => None,
            };
            json!({
                "ok": true, "command": "consistency", "keyspace": keyspace,
                "r": r.map(|l| l.to_string()).unwrap_or_else(|| "default".into()),
                "w": w.map(|l| l.to_string()).unwrap_or_else(|| "default".into()),
                "effective_r": eff(r, def.as_ref().map(|d| d.r)),
                "effective_w": eff(w, def.as_ref().map(|d| d.w)),
            })
        }
        Outcome::Used { keyspace, def } => json!({
            "ok": true, "command": "use", "keyspace": keyspace,
            "policy": def.as_ref().map(|d| d.policy.to_string()),
            "actor_priority": def.as_ref().map(|d| d.actor_priority.clone()),
            "read_repair": def.as_ref().map(|d| d.read_repair.to_string()),
        }),
        Outcome::Keyspaces { current, list } => {
            json!({"ok": true, "command": "keyspaces", "current": current, "keyspaces": list})
        }
        Outcome::Dropped {
            name,
            acked,
            missing,
        } => json!({
            "ok": true, "command": "drop keyspace", "keyspace": name, "acked": acked, "missing": missing,
        }),
        Outcome::Created {
            def,
            acked,
            missing,
        } => json!({
            "ok": true, "command": "create keyspace", "keyspace": def, "acked": acked, "missing": missing,
        }),
        Outcome::Replicas {
            keyspace,
            key,
            nodes,
        } => json!({
            "ok": true, "command": "replicas", "keyspace": keyspace, "key": value_json(&key_bytes(key)),
            "replicas": nodes.iter().map(|(n, s)| json!({"node": n, "state": s})).collect::<Vec<_>>(),
        }),
        Outcome::Cluster { json, .. } => json.clone(),
        Outcome::Status { contacted, nodes } => {
            json!({"ok": true, "command": "status", "contacted": contacted, "nodes": nodes})
        }
        Outcome::Stats {
            node,
            latencies,
            read_repairs,
        } => {
            json!({"ok": true, "command": "stats", "node": node, "latencies": latencies, "read_repairs": read_repairs})
        }
        Outcome::Ring { vnodes, rows } => json!({
            "ok": true, "command": "ring", "vnodes": vnodes,
            "nodes": rows.iter().map(|(n, own, rep)| json!({
                "node": n, "primary_share": own, "node_reports": rep,
            })).collect::<Vec<_>>(),
        }),
        Outcome::Setting { name, value } => {
            json!({"ok": true, "command": name, "value": value})
        }
        Outcome::Help(text) => json!({"ok": true, "command": "help", "text": text}),
        Outcome::Exit => json!({"ok": true, "command": "exit"}),
    }
}

/// Values in braces: `{a, b}`.
fn braces(v: &[serde_bytes::ByteBuf]) -> String {
    let parts: Vec<String> = v.iter().map(|b| value_text(b)).collect();
    format!("{{{}}}", parts.join(", "))
}

fn values_json(v: &[serde_bytes::ByteBuf]) -> Vec<Value> {
    v.iter().map(|b| value_json(b)).collect()
}

/// A CRDT value in JSON, tagged with its type (the same shape as `quorumkv get`).
pub fn crdt_json(v: &CrdtValue) -> Value {
    match v {
        CrdtValue::Counter(n) => json!({"type": "counter", "value": n}),
        CrdtValue::Set(m) => json!({"type": "set", "members": values_json(m)}),
        CrdtValue::Register(vs) => json!({"type": "register", "values": values_json(vs)}),
        CrdtValue::Map(fields) => {
            let fields: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, f)| {
                    (
                        k.clone(),
                        json!({"register": values_json(&f.register), "counter": f.counter, "set": values_json(&f.set)}),
                    )
                })
                .collect();
            json!({"type": "map", "fields": fields})
        }
    }
}

/// A CRDT value on one line (scan rows).
pub fn crdt_line(v: &CrdtValue) -> String {
    match v {
        CrdtValue::Counter(n) => format!("counter {n}"),
        CrdtValue::Set(m) => format!("set {}", braces(m)),
        CrdtValue::Register(vs) if vs.len() == 1 => value_text(&vs[0]),
        CrdtValue::Register(vs) => format!("register {} (concurrent)", braces(vs)),
        CrdtValue::Map(fields) => {
            let parts: Vec<String> = fields
                .iter()
                .map(|(k, f)| {
                    format!(
                        "{}: {}",
                        value_text(k.as_bytes()),
                        field_parts(f).join("; ")
                    )
                })
                .collect();
            format!("map {{{}}}", parts.join(", "))
        }
    }
}

/// The parts of a map field in use, for one line.
fn field_parts(f: &crate::proto::FieldValue) -> Vec<String> {
    let mut parts = Vec::new();
    match f.register.len() {
        0 => {}
        1 => parts.push(value_text(&f.register[0])),
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
    parts
}

/// A CRDT value as a table (get).
fn crdt_table(v: &CrdtValue, key: &Key) -> String {
    match v {
        CrdtValue::Counter(n) => format!(
            "{}\n(counter)",
            table(&[">counter"], &[vec![n.to_string()]])
        ),
        CrdtValue::Set(m) if m.is_empty() => "(empty set)".into(),
        CrdtValue::Set(m) => {
            let rows: Vec<Vec<String>> = m.iter().map(|b| vec![value_text(b)]).collect();
            format!(
                "{}\n(set of {} member(s))",
                table(&["member"], &rows),
                m.len()
            )
        }
        CrdtValue::Register(vs) if vs.is_empty() => "(not found)".into(),
        CrdtValue::Register(vs) => {
            let rows: Vec<Vec<String>> = vs.iter().map(|b| vec![value_text(b)]).collect();
            let mut out = table(&["value"], &rows);
            if vs.len() > 1 {
                out.push_str(&format!(
                    "\n({} concurrent values: written concurrently; `rset {} VALUE` replaces them all)",
                    vs.len(),
                    key_text(key)
                ));
            } else {
                out.push_str("\n(register)");
            }
            out
        }
        CrdtValue::Map(fields) if fields.is_empty() => "(empty map)".into(),
        CrdtValue::Map(fields) => {
            let reg = fields.values().any(|f| !f.register.is_empty());
            let ctr = fields.values().any(|f| f.counter != 0);
            let set = fields.values().any(|f| !f.set.is_empty());
            let mut headers = vec!["field"];
            if reg {
                headers.push("register");
            }
            if ctr {
                headers.push(">counter");
            }
            if set {
                headers.push("set members");
            }
            let rows: Vec<Vec<String>> = fields
                .iter()
                .map(|(k, f)| {
                    let mut row = vec![value_text(k.as_bytes())];
                    if reg {
                        row.push(match f.register.len() {
                            0 => String::new(),
                            1 => value_text(&f.register[0]),
                            _ => format!("{} (concurrent)", braces(&f.register)),
                        });
                    }
                    if ctr {
                        // 0 in a field used as a register or set is "no counter".
                        let other = !f.register.is_empty() || !f.set.is_empty();
                        row.push(if f.counter == 0 && other {
                            String::new()
                        } else {
                            f.counter.to_string()
                        });
                    }
                    if set {
                        row.push(if f.set.is_empty() {
                            String::new()
                        } else {
                            braces(&f.set)
                        });
                    }
                    row
                })
                .collect();
            format!(
                "{}\n(map of {} field(s))",
                table(&headers, &rows),
                fields.len()
            )
        }
    }
}

/// What a CRDT operation does, for people.
fn op_text(op: &CrdtOp) -> String {
    let list = |v: &[serde_bytes::ByteBuf]| {
        v.iter()
            .map(|b| value_text(b))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match op {
        CrdtOp::CounterAdd(n) if *n < 0 => format!("counter {n}"),
        CrdtOp::CounterAdd(n) => format!("counter +{n}"),
        CrdtOp::SetAdd(m) => format!("added {}", list(m)),
        CrdtOp::SetRemove(m) => format!("removed {}", list(m)),
        CrdtOp::RegisterWrite(v) => format!("register = {}", value_text(v)),
        CrdtOp::MapUpdate { field, op } => {
            let f = value_text(field.as_bytes());
            match op {
                FieldOp::RegisterWrite(v) => format!("field {f} = {}", value_text(v)),
                FieldOp::CounterAdd(n) if *n < 0 => format!("field {f} counter {n}"),
                FieldOp::CounterAdd(n) => format!("field {f} counter +{n}"),
                FieldOp::SetAdd(m) => format!("field {f} set: added {}", list(m)),
                FieldOp::SetRemove(m) => format!("field {f} set: removed {}", list(m)),
            }
        }
        CrdtOp::MapRemove { field } => format!("field {} removed", value_text(field.as_bytes())),
    }
}

fn op_json(op: &CrdtOp) -> Value {
    match op {
        CrdtOp::CounterAdd(n) => json!({"counter_add": n}),
        CrdtOp::SetAdd(m) => json!({"set_add": values_json(m)}),
        CrdtOp::SetRemove(m) => json!({"set_remove": values_json(m)}),
        CrdtOp::RegisterWrite(v) => json!({"register_write": value_json(v)}),
        CrdtOp::MapUpdate { field, op } => {
            let inner = match op {
                FieldOp::RegisterWrite(v) => json!({"register_write": value_json(v)}),
                FieldOp::CounterAdd(n) => json!({"counter_add": n}),
                FieldOp::SetAdd(m) => json!({"set_add": values_json(m)}),
                FieldOp::SetRemove(m) => json!({"set_remove": values_json(m)}),
            };
            json!({"field": field, "update": inner})
        }
        CrdtOp::MapRemove { field } => json!({"field": field, "remove": true}),
    }
}

fn key_bytes(key: &Key) -> Vec<u8> {
    let mut raw = key.partition.clone();
    if !key.sort.is_empty() {
        raw.push(b'/');
        raw.extend_from_slice(&key.sort);
    }
    raw
}

/// Render a failure. `statement` is the input that failed (shown in JSON so a script can
/// match results to commands); `place` says where it was ("line 3") in a script.
pub fn error(e: &ExecError, format: Format, statement: &str, place: Option<&str>) -> String {
    match format {
        Format::Table => match place {
            Some(p) => format!("error ({p}): {e}"),
            None => format!("error: {e}"),
        },
        Format::Json => {
            let mut v = json!({
                "ok": false, "statement": statement, "error": e.to_string(),
                "kind": error_kind(e),
            });
            if let ExecError::Client(crate::client::ClientError::Server {
                kind:
                    crate::proto::ErrorKind::QuorumNotReached {
                        needed,
                        got,
                        failures,
                    },
                ..
            }) = e
            {
                v["needed"] = json!(needed);
                v["got"] = json!(got);
                v["failures"] = json!(failures);
            }
            if let Some(p) = place {
                v["at"] = json!(p);
            }
            v.to_string()
        }
    }
}

fn error_kind(e: &ExecError) -> String {
    use crate::client::ClientError as C;
    let s = match e {
        ExecError::Parse(_) => "syntax",
        ExecError::NotRead { .. } => "not_read",
        ExecError::UnknownKeyspace { .. } => "unknown_keyspace",
        ExecError::Ring(_) => "ring",
        ExecError::NoHelp(_) => "no_such_command",
        ExecError::NoScan(_) => "no_scan",
        ExecError::WrongPolicy { .. } => "wrong_policy",
        // The server's class, named after its variant (`QuorumNotReached` →
        // `quorum_not_reached`), so a class added to the protocol shows up here as is.
        ExecError::Client(C::Server { kind, .. }) => return snake_variant(&format!("{kind:?}")),
        ExecError::Client(C::Unreachable(_)) => "unreachable",
        ExecError::Client(C::Indeterminate { .. }) => "indeterminate",
        ExecError::Client(C::Timeout { .. }) => "timeout",
        ExecError::Client(C::Silent { .. }) => "silent",
        ExecError::Client(C::Tls(_) | C::Socket(_)) => "client_setup",
        ExecError::Client(C::Protocol(_)) => "protocol",
    };
    s.to_string()
}

/// `QuorumNotReached { .. }` → `quorum_not_reached`.
fn snake_variant(debug: &str) -> String {
    let name: String = debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The failure detector's view of a node as one cell: `alive`, `suspect 2.1s`, `dead 40s`
/// (how long it has been so), `unknown` (not probed yet), `-` from a node older than the
/// detector.
pub fn detector_cell(n: &crate::proto::NodeStatus) -> String {
    match n.detector.as_str() {
        "" => "-".to_string(),
        s @ ("suspect" | "dead") => format!("{s} {:.1}s", n.detector_for_ms as f64 / 1000.0),
        s => s.to_string(),
    }
}

/// The tombstone-reaping line of `status` (CLI and shell), for the answering node.
pub fn reaping_line(node: &str, reaped: Option<u64>, kept: u64, last: Option<&str>) -> String {
    match reaped {
        None => format!("tombstone reaping is off on {node} (tombstones.enabled = false)"),
        Some(reaped) => {
            let mut line = format!(
                "tombstones reaped by {node}: {reaped}; old enough but kept: {kept} since it started"
            );
            if let Some(why) = last {
                line.push_str(&format!(" (last kept: {why})"));
            }
            line
        }
    }
}

/// `cluster status` (CLI and shell): the live layout versions as the answering node holds
/// them, each node's part in them, its transfer, and the changes staged on it.
pub fn cluster_report(r: &crate::proto::ClusterReport) -> String {
    use std::fmt::Write as _;
    let h = &r.history;
    let cur = h.current();
    let mut out = String::new();
    let versions: Vec<String> = h.live.iter().map(|l| format!("v{}", l.version)).collect();
    let _ = writeln!(
        out,
        "layouts as {} holds them: current v{}",
        r.node, cur.version
    );
    if h.in_transition() {
        let _ = writeln!(
            out,
            "data is moving: live versions {} (reads use v{}; writes reach a quorum in each)",
            versions.join(", "),
            h.read_layout().version
        );
    } else {
        let _ = writeln!(out, "no change in progress (one live version)");
    }
    let _ = write!(out, "{:<8} {:<22} {:<10}", "node", "address", "zone");
    for l in &h.live {
        let _ = write!(out, " {:>5}", format!("v{}", l.version));
    }
    let _ = writeln!(out, " {:>6} {:>6}", "acked", "synced");
    let removed = h.removed();
    for m in h.everyone() {
        let _ = write!(
            out,
            "{:<8} {:<22} {:<10}",
            m.name,
            m.addr.to_string(),
            m.zone.as_deref().unwrap_or("-")
        );
        for l in &h.live {
            let cell = if l.has(&m.name) {
                "owns"
            } else if removed.contains(&m.name) && l.removed.contains(&m.name) {
                "gone"
            } else {
                "-"
            };
            let _ = write!(out, " {cell:>5}");
        }
        let v = |map: &std::collections::BTreeMap<String, u64>| {
            map.get(&m.name)
                .map_or("-".to_string(), |v| format!("v{v}"))
        };
        let _ = writeln!(out, " {:>6} {:>6}", v(&h.acked), v(&h.synced));
    }
    let t = &r.transfer;
    if t.version > 0 || t.keys_dropped > 0 {
        let _ = writeln!(
            out,
            "transfers into {} since it started: {} keys ({} bytes) received for v{}, {} checksum failures, {} keys dropped after changes",
            r.node, t.keys_received, t.bytes_received, t.version, t.checksum_failures, t.keys_dropped
        );
    }
    if let Some(e) = &t.last_error {
        let _ = writeln!(out, "last transfer error (retried every second): {e}");
    }
    if r.staged.changes.is_empty() {
        let _ = writeln!(out, "nothing staged on {}", r.node);
    } else {
        let _ = writeln!(out, "staged on {} (on v{}):", r.node, r.staged.base);
        for c in &r.staged.changes {
            let _ = writeln!(out, "  {c}");
        }
        let _ = writeln!(
            out,
            "see `cluster plan`, then `cluster commit` (or `cluster abort`)"
        );
    }
    out.trim_end().to_string()
}

/// `cluster plan` (CLI and shell).
pub fn plan_text(p: &crate::membership::layout::Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "plan for layout v{}:", p.version);
    for c in &p.changes {
        let _ = writeln!(out, "  {c}");
    }
    let _ = writeln!(
        out,
        "replica slots moving to a new owner: {:.1}% ({} of {} ring arcs change owners; N={})",
        p.moved_share * 100.0,
        p.ranges_moving,
        p.ranges_total,
        p.n
    );
    let _ = writeln!(
        out,
        "data to transfer: about {} (from each member's storage estimate)",
        human_bytes(p.bytes_to_transfer)
    );
    let _ = writeln!(out, "{:<8} {:>8} {:>8}", "node", "before", "after");
    let names: std::collections::BTreeSet<&String> = p
        .balance_before
        .keys()
        .chain(p.balance_after.keys())
        .collect();
    for n in names {
        let pct = |m: &std::collections::BTreeMap<String, f64>| {
            m.get(n)
                .map_or("-".to_string(), |s| format!("{:.1}%", s * 100.0))
        };
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>8}",
            n,
            pct(&p.balance_before),
            pct(&p.balance_after)
        );
    }
    let _ = writeln!(
        out,
        "`cluster commit` applies it (data then moves in the background; `cluster status` shows progress); `cluster abort` drops it"
    );
    out.trim_end().to_string()
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::parse;

    /// Goal: plain text is shown as is; controls, quotes at the start, surrounding spaces
    /// and direction overrides are escaped; invalid UTF-8 becomes base64 with a marker.
    #[test]
    fn values_never_reach_the_terminal_raw() {
        assert_eq!(value_text(b"alice"), "alice");
        assert_eq!(value_text("héllo wörld".as_bytes()), "héllo wörld");
        assert_eq!(value_text(b"a\nb"), r#""a\nb""#);
        assert_eq!(value_text(b"\x1b[31mred"), r#""\x1b[31mred""#);
        assert_eq!(value_text(b""), r#""""#);
        assert_eq!(value_text(b" pad"), r#"" pad""#);
        assert_eq!(value_text("a\u{202e}b".as_bytes()), r#""a\xe2\x80\xaeb""#);
        assert_eq!(value_text(&[0xff, 0x00, 0x41]), "base64:/wBB");
        // A text that looks like the marker is quoted so it cannot be mistaken for one.
        assert_eq!(value_text(b"base64:AA"), r#""base64:AA""#);
        for bytes in [&b"\x1b[2J"[..], &[0x9b, 0x32, 0x4a], "\u{85}x".as_bytes()] {
            let shown = value_text(bytes);
            assert!(
                !shown.chars().any(|c| c.is_control()),
                "{bytes:?} shown as {shown:?}"
            );
        }
    }

    /// Goal: what the table shows for a value with escapes reads back, through the shell's
    /// own parser, as the very same bytes.
    #[test]
    fn escaped_values_round_trip_through_the_parser() {
        for bytes in [
            &b"a\nb\t\"q\"\\"[..],
            b"\x1b[0m",
            "x\u{202e}y".as_bytes(),
            b" lead",
        ] {
            let shown = value_text(bytes);
            let stmts = parse::split(&format!("put k {shown}")).unwrap();
            assert_eq!(stmts[0].words[2].bytes, bytes, "{shown}");
        }
    }

    /// Goal: server error classes get stable snake_case names in JSON.
    #[test]
    fn error_kind_names() {
        let q = crate::proto::ErrorKind::QuorumNotReached {
            needed: 2,
            got: 1,
            failures: vec![],
        };
        assert_eq!(snake_variant(&format!("{q:?}")), "quorum_not_reached");
        assert_eq!(
            snake_variant(&format!("{:?}", crate::proto::ErrorKind::UnknownKeyspace)),
            "unknown_keyspace"
        );
    }

    /// Goal: dates are right at known points (epoch, a leap day).
    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(utc(1_718_454_896_789), "2024-06-15 12:34:56.789");
    }

    /// Goal: CRDT values display as their type: a set as one member per row, concurrent
    /// register values all shown with how to replace them, a map as a field table with
    /// only the parts some field uses (a field without a counter shows no 0), and scan's
    /// one-line form.
    #[test]
    fn crdt_values_display_by_type() {
        use crate::proto::FieldValue;
        use serde_bytes::ByteBuf;
        let b = |s: &str| ByteBuf::from(s.as_bytes().to_vec());
        let key = Key::simple("k");
        assert_eq!(
            crdt_table(&CrdtValue::Set(vec![b("a b"), b("red")]), &key),
            " member\n--------\n a b\n red\n(set of 2 member(s))"
        );
        assert_eq!(crdt_table(&CrdtValue::Set(vec![]), &key), "(empty set)");
        let two = crdt_table(&CrdtValue::Register(vec![b("blue"), b("green")]), &key);
        assert!(
            two.starts_with(" value\n-------\n blue\n green\n(2 concurrent values")
                && two.contains("`rset k VALUE` replaces them all"),
            "{two}"
        );
        assert_eq!(
            crdt_table(&CrdtValue::Register(vec![]), &key),
            "(not found)"
        );
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "name".to_string(),
            FieldValue {
                register: vec![b("ada"), b("bob")],
                ..Default::default()
            },
        );
        fields.insert(
            "roles".to_string(),
            FieldValue {
                set: vec![b("admin"), b("ed")],
                ..Default::default()
            },
        );
        fields.insert(
            "visits".to_string(),
            FieldValue {
                counter: -2,
                ..Default::default()
            },
        );
        let map = CrdtValue::Map(fields.clone());
        assert_eq!(
            crdt_table(&map, &key),
            " field  | register                | counter | set members\n\
             --------+-------------------------+---------+-------------\n \
             name   | {ada, bob} (concurrent) |         |\n \
             roles  |                         |         | {admin, ed}\n \
             visits |                         |      -2 |\n\
             (map of 3 field(s))"
        );
        assert_eq!(
            crdt_line(&map),
            "map {name: register {ada, bob}, roles: set {admin, ed}, visits: counter -2}"
        );
        fields.remove("name");
        fields.remove("visits");
        assert_eq!(
            crdt_table(&CrdtValue::Map(fields), &key),
            " field | set members\n------+-------------\n roles | {admin, ed}\n(map of 1 field(s))"
                .replace("------+", "-------+")
        );
        assert_eq!(crdt_line(&CrdtValue::Counter(7)), "counter 7");
        assert_eq!(
            crdt_json(&CrdtValue::Set(vec![b("x")])),
            json!({"type": "set", "members": ["x"]})
        );
    }

    /// Goal: tables align, numeric columns right-aligned.
    #[test]
    fn table_layout() {
        let t = table(
            &["id", ">n"],
            &[
                vec!["a".into(), "1".into()],
                vec!["bbb".into(), "22".into()],
            ],
        );
        assert_eq!(t, " id  |  n\n-----+----\n a   |  1\n bbb | 22");
    }
}
