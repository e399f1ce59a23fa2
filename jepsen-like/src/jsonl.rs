//! JSON Lines histories: one JSON object per line, the same keys as
//! Jepsen's EDN maps without colons (`{"type":"invoke","f":"write",
//! "value":3,"process":0,"time":12}`).
//!
//! JSON has no keywords, so strings that start with `:` (such as
//! `":timed-out"`) are read back as keywords; this is also how the writer
//! encodes keywords, which makes EDN -> JSONL -> EDN lossless for histories.
//! `"nemesis"` (or `":nemesis"`) as the process is the nemesis.

use crate::history::{History, HistoryError, Op, OpBuilder};
use crate::value::Value;

/// Errors from reading JSON Lines.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// A line that is not valid JSON.
    #[error("line {line}: invalid JSON: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// Valid JSON that is not a history operation.
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl JsonlError {
    /// The 1-based line the error refers to.
    pub fn line(&self) -> usize {
        match self {
            JsonlError::Json { line, .. } => *line,
            JsonlError::History(h) => h.line(),
        }
    }
}

/// Converts parsed JSON into the shared value model.
pub fn from_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => match s.strip_prefix(':') {
            Some(kw) if !kw.is_empty() => Value::Keyword(kw.to_string()),
            _ => Value::Str(s),
        },
        serde_json::Value::Array(a) => Value::Vector(a.into_iter().map(from_json).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::Str(k), from_json(v)))
                .collect(),
        ),
    }
}

/// Parses a JSON Lines history. Blank lines are skipped; a line holding a
/// JSON array contributes each element (so a one-line JSON array of ops
/// also reads).
pub fn parse_history(input: &str) -> Result<History, JsonlError> {
    let mut ops = Vec::new();
    for (i, text) in input.lines().enumerate() {
        let line = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        if let Some(op) = fast_op(text, line) {
            ops.push(op);
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|source| JsonlError::Json { line, source })?;
        match from_json(json) {
            Value::Vector(items) => {
                for item in items {
                    ops.push(Op::from_value(&item, line)?);
                }
            }
            v => ops.push(Op::from_value(&v, line)?),
        }
    }
    Ok(History::new(ops))
}

/// The usual shape of a line, deserialized without building a generic map.
#[derive(serde::Deserialize)]
struct FastLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    f: Option<std::borrow::Cow<'a, str>>,
    process: serde_json::Value,
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default)]
    time: Option<i64>,
}

/// Fast path for the common line shape; `None` sends the line down the
/// generic path, which also produces the precise error if there is one.
fn fast_op(text: &str, line: usize) -> Option<Op> {
    let l: FastLine = serde_json::from_str(text).ok()?;
    let mut b = OpBuilder::default();
    b.set_name("type", l.kind.strip_prefix(':').unwrap_or(&l.kind), line)
        .ok()?;
    if let Some(f) = &l.f {
        b.set_name("f", f.strip_prefix(':').unwrap_or(f), line)
            .ok()?;
    }
    match l.process {
        serde_json::Value::Number(n) => b.set_process_int(n.as_i64()?),
        serde_json::Value::String(p) => b
            .set_name("process", p.strip_prefix(':').unwrap_or(&p), line)
            .ok()?,
        _ => return None,
    }
    b.set_value(from_json(l.value));
    if let Some(t) = l.time {
        b.set_time(t);
    }
    b.finish(line).ok()
}

#[derive(serde::Serialize)]
struct JsonOp<'a> {
    index: usize,
    #[serde(rename = "type")]
    kind: &'static str,
    f: &'a str,
    value: &'a Value,
    process: &'a crate::history::Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<i64>,
}

/// Writes a history as JSON Lines.
pub fn write_history(history: &History, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for (index, op) in history.ops.iter().enumerate() {
        let j = JsonOp {
            index,
            kind: op.kind.name(),
            f: op.f.name(),
            value: &op.value,
            process: &op.process,
            time: op.time,
        };
        serde_json::to_writer(&mut *out, &j)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Function, OpType, Process};

    /// Goal: the JSONL reader understands Jepsen-shaped objects, keywords
    /// encoded as ":name" strings, and the nemesis.
    #[test]
    fn reads_ops() {
        let h = parse_history(
            "{\"type\":\"invoke\",\"f\":\"cas\",\"value\":[1,2],\"process\":3,\"time\":5}\n\n\
             {\"type\":\":info\",\"f\":\"cas\",\"value\":\":timed-out\",\"process\":3}\n\
             {\"type\":\"info\",\"f\":\"kill\",\"process\":\"nemesis\"}\n",
        )
        .expect("parse");
        assert_eq!(h.ops.len(), 3);
        assert_eq!(h.ops[0].f, Function::Cas);
        assert_eq!(h.ops[0].time, Some(5));
        assert_eq!(h.ops[1].kind, OpType::Info);
        assert_eq!(h.ops[1].value, Value::kw("timed-out"));
        assert_eq!(h.ops[1].line, 3);
        assert_eq!(h.ops[2].process, Process::Nemesis);
    }

    /// Goal: bad JSON and non-op objects are errors with the line number.
    #[test]
    fn errors_have_lines() {
        let err = parse_history("{\"type\":\"invoke\",\"f\":\"read\",\"process\":0}\n{oops\n")
            .expect_err("bad json");
        assert_eq!(err.line(), 2);
        let err = parse_history("\n\n{\"f\":\"read\",\"process\":0}").expect_err("no type");
        assert_eq!(err.line(), 3);
    }

    /// Goal: EDN -> JSONL -> history is lossless.
    #[test]
    fn round_trip_through_edn() {
        let src = "{:type :invoke, :f :write, :value [:k [1 \"s\"]], :process 0, :time 7}\n\
                   {:type :info, :f :write, :value :timed-out, :process 0}\n\
                   {:type :info, :f :start, :value nil, :process :nemesis}\n";
        let h = crate::edn::parse_history(src).expect("edn");
        let mut buf = Vec::new();
        write_history(&h, &mut buf).expect("write");
        let back = parse_history(std::str::from_utf8(&buf).expect("utf8")).expect("jsonl");
        let strip = |h: &History| -> Vec<Op> {
            h.ops
                .iter()
                .map(|o| Op {
                    line: 0,
                    ..o.clone()
                })
                .collect()
        };
        assert_eq!(strip(&h), strip(&back));
    }
}
