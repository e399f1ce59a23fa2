//! A small hand-rolled EDN reader and writer for Jepsen's `history.edn`.
//!
//! Hand-rolled rather than a crate because the checker needs exact line
//! numbers for every operation (so errors and reports can point into the
//! file), tolerance for what Jepsen actually writes (tagged records such as
//! `#jepsen.history.Op{...}`, `#{}` sets, commas, `;` comments, `#_`
//! discards) and speed on multi-megabyte histories. It never panics: every
//! malformed input is an [`EdnError`] carrying the line and column.

use crate::history::{History, HistoryError, Op, OpBuilder};
use crate::value::Value;

/// Nesting deeper than this is rejected instead of risking a stack overflow
/// on hostile input; real histories nest three or four levels.
const MAX_DEPTH: usize = 256;

/// Errors from reading EDN text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EdnError {
    /// The text is not valid EDN (or uses EDN we do not support).
    #[error("line {line}, column {col}: {message}")]
    Syntax {
        /// 1-based line of the offending character.
        line: usize,
        /// 1-based column (in bytes) of the offending character.
        col: usize,
        /// What was wrong.
        message: String,
    },
    /// The EDN is well formed but an entry is not a valid history operation.
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl EdnError {
    /// The 1-based line the error refers to.
    pub fn line(&self) -> usize {
        match self {
            EdnError::Syntax { line, .. } => *line,
            EdnError::History(h) => h.line(),
        }
    }
}

/// Reads EDN text: one or more top-level forms.
struct Reader<'a> {
    text: &'a str,
    src: &'a [u8],
    pos: usize,
    line: usize,
    line_start: usize,
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b'\r' | b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
    )
}

impl<'a> Reader<'a> {
    fn new(src: &'a str) -> Self {
        Reader {
            text: src,
            src: src.as_bytes(),
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    fn err(&self, message: impl Into<String>) -> EdnError {
        self.err_at(self.line, self.pos, message)
    }

    fn err_at(&self, line: usize, pos: usize, message: impl Into<String>) -> EdnError {
        EdnError::Syntax {
            line,
            col: pos.saturating_sub(self.line_start) + 1,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
            self.line_start = self.pos;
        }
        Some(b)
    }

    /// Skips whitespace, commas and `;` comments.
    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                    self.bump();
                }
                b';' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// Reads the next form, or `None` at end of input.
    fn next_form(&mut self, depth: usize) -> Result<Option<Value>, EdnError> {
        loop {
            self.skip_ws();
            let Some(b) = self.peek() else {
                return Ok(None);
            };
            if depth > MAX_DEPTH {
                return Err(self.err("nesting too deep"));
            }
            let value = match b {
                b'[' | b'(' => {
                    self.bump();
                    let close = if b == b'[' { b']' } else { b')' };
                    Value::Vector(self.read_seq(close, depth)?)
                }
                b'{' => {
                    self.bump();
                    self.read_map(depth)?
                }
                b']' | b')' | b'}' => {
                    return Err(self.err(format!("unexpected '{}'", b as char)));
                }
                b'"' => self.read_string()?,
                b'\\' => self.read_char()?,
                b'#' => match self.src.get(self.pos + 1).copied() {
                    Some(b'{') => {
                        self.bump();
                        self.bump();
                        Value::Set(self.read_seq(b'}', depth)?)
                    }
                    Some(b'_') => {
                        // `#_form` discards the next form entirely.
                        self.bump();
                        self.bump();
                        if self.next_form(depth + 1)?.is_none() {
                            return Err(self.err("end of input after #_"));
                        }
                        continue;
                    }
                    Some(b'#') => {
                        self.bump();
                        self.bump();
                        let tok = self.read_token();
                        match tok {
                            "Inf" => Value::Float(f64::INFINITY),
                            "-Inf" => Value::Float(f64::NEG_INFINITY),
                            "NaN" => Value::Float(f64::NAN),
                            other => {
                                return Err(self.err(format!("unknown symbolic value ##{other}")))
                            }
                        }
                    }
                    Some(c) if c.is_ascii_alphabetic() => {
                        // A tagged literal such as `#inst "..."` or a record
                        // `#jepsen.history.Op{...}`: keep the tagged form's
                        // value and drop the tag.
                        self.bump();
                        let _tag = self.read_token();
                        match self.next_form(depth + 1)? {
                            Some(v) => v,
                            None => return Err(self.err("end of input after tag")),
                        }
                    }
                    _ => return Err(self.err("unsupported dispatch character after '#'")),
                },
                _ => self.read_atom()?,
            };
            return Ok(Some(value));
        }
    }

    /// Reads one history entry straight into an [`Op`]: the fast path for
    /// `{:type :ok, :f :read, ...}` maps that avoids building a generic map
    /// (and a string per keyword) for every entry of a large history.
    fn read_op(&mut self, line: usize, depth: usize) -> Result<Op, EdnError> {
        // `#jepsen.history.Op{...}` records: skip the tag.
        if self.peek() == Some(b'#')
            && self
                .src
                .get(self.pos + 1)
                .is_some_and(|c| c.is_ascii_alphabetic())
        {
            self.bump();
            let _tag = self.read_token();
            self.skip_ws();
        }
        if self.peek() != Some(b'{') {
            return match self.next_form(depth)? {
                Some(v) => Ok(Op::from_value(&v, line)?),
                None => Err(self.err("expected a history entry")),
            };
        }
        let (open_line, start) = (self.line, self.pos);
        self.bump();
        let mut b = OpBuilder::default();
        loop {
            self.skip_ws();
            let key = match self.peek() {
                None => return Err(self.err_at(open_line, start, "unclosed map (expected '}')")),
                Some(b'}') => {
                    self.bump();
                    break;
                }
                Some(b':') => {
                    let tok = self.read_token();
                    let name = tok.trim_start_matches(':');
                    if name.is_empty() {
                        return Err(self.err("empty keyword"));
                    }
                    Some(name)
                }
                Some(_) => None,
            };
            // Non-keyword keys (e.g. strings) take the generic route.
            let generic_key = match key {
                Some(_) => None,
                None => match self.next_form(depth + 1)? {
                    Some(k) => Some(k),
                    None => return Err(self.err_at(open_line, start, "unclosed map")),
                },
            };
            self.skip_ws();
            match self.peek() {
                None => return Err(self.err_at(open_line, start, "unclosed map (expected '}')")),
                Some(b'}') => {
                    return Err(self.err_at(
                        open_line,
                        start,
                        "map literal has an odd number of forms",
                    ))
                }
                _ => {}
            }
            let name = match (&key, &generic_key) {
                (Some(n), _) => Some(*n),
                (None, Some(k)) if !matches!(k, Value::Symbol(_)) => k.as_name(),
                _ => None,
            };
            match name {
                Some(field @ ("type" | "f" | "process")) if self.peek() == Some(b':') => {
                    let tok = self.read_token();
                    b.set_name(field, tok.trim_start_matches(':'), line)?;
                }
                Some("value") => match self.next_form(depth + 1)? {
                    Some(v) => b.set_value(v),
                    None => return Err(self.err_at(open_line, start, "unclosed map")),
                },
                Some(field) => match self.next_form(depth + 1)? {
                    Some(Value::Int(i)) if field == "process" => b.set_process_int(i),
                    Some(Value::Int(t)) if field == "time" => b.set_time(t),
                    Some(v) => b.set(field, &v, line)?,
                    None => return Err(self.err_at(open_line, start, "unclosed map")),
                },
                None => {
                    if self.next_form(depth + 1)?.is_none() {
                        return Err(self.err_at(open_line, start, "unclosed map"));
                    }
                }
            }
        }
        Ok(b.finish(line)?)
    }

    fn read_seq(&mut self, close: u8, depth: usize) -> Result<Vec<Value>, EdnError> {
        let (line, start) = (self.line, self.pos.saturating_sub(1));
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => {
                    return Err(self.err_at(
                        line,
                        start,
                        format!("unclosed collection (expected '{}')", close as char),
                    ))
                }
                Some(b) if b == close => {
                    self.bump();
                    return Ok(items);
                }
                Some(_) => match self.next_form(depth + 1)? {
                    Some(v) => items.push(v),
                    None => {
                        return Err(self.err_at(line, start, "unclosed collection"));
                    }
                },
            }
        }
    }

    fn read_map(&mut self, depth: usize) -> Result<Value, EdnError> {
        let (line, start) = (self.line, self.pos.saturating_sub(1));
        let items = self.read_seq(b'}', depth)?;
        if items.len() % 2 != 0 {
            return Err(self.err_at(line, start, "map literal has an odd number of forms"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(Value::Map(pairs))
    }

    fn read_string(&mut self) -> Result<Value, EdnError> {
        let (line, start) = (self.line, self.pos);
        self.bump(); // opening quote
        let mut out = Vec::new();
        loop {
            let Some(b) = self.bump() else {
                return Err(self.err_at(line, start, "unterminated string"));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.bump() else {
                        return Err(self.err_at(line, start, "unterminated string"));
                    };
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'u' => {
                            let c = self.read_unicode_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        other => {
                            return Err(
                                self.err(format!("unknown string escape \\{}", other as char))
                            )
                        }
                    }
                }
                other => out.push(other),
            }
        }
        String::from_utf8(out)
            .map(Value::Str)
            .map_err(|_| self.err_at(line, start, "string is not valid UTF-8"))
    }

    fn read_unicode_escape(&mut self) -> Result<char, EdnError> {
        let end = self.pos + 4;
        let hex = self
            .src
            .get(self.pos..end)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        let code = u32::from_str_radix(hex, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.pos = end;
        // Lone surrogates cannot be represented; substitute rather than fail.
        Ok(char::from_u32(code).unwrap_or('\u{FFFD}'))
    }

    fn read_char(&mut self) -> Result<Value, EdnError> {
        self.bump(); // backslash
        let start = self.pos;
        // A character literal is at least one character, even a delimiter.
        let first_len = match self.peek() {
            None => return Err(self.err("end of input in character literal")),
            Some(b) if b < 0x80 => 1,
            Some(_) => {
                let rest = std::str::from_utf8(&self.src[self.pos..])
                    .map_err(|_| self.err("invalid UTF-8"))?;
                rest.chars().next().map(char::len_utf8).unwrap_or(1)
            }
        };
        self.pos += first_len;
        while let Some(b) = self.peek() {
            if is_delimiter(b) {
                break;
            }
            self.pos += 1;
        }
        let tok = std::str::from_utf8(&self.src[start..self.pos])
            .map_err(|_| self.err("invalid UTF-8 in character literal"))?;
        let c = match tok {
            "newline" => '\n',
            "space" => ' ',
            "tab" => '\t',
            "return" => '\r',
            "formfeed" => '\u{c}',
            "backspace" => '\u{8}',
            t if t.chars().count() == 1 => t.chars().next().unwrap_or(' '),
            t if t.starts_with('u') && t.len() == 5 => {
                let code = u32::from_str_radix(&t[1..], 16)
                    .map_err(|_| self.err(format!("bad character literal \\{t}")))?;
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            t => return Err(self.err(format!("bad character literal \\{t}"))),
        };
        Ok(Value::Char(c))
    }

    /// Reads a bare token up to the next delimiter.
    fn read_token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if is_delimiter(b) {
                break;
            }
            self.pos += 1;
        }
        // Tokens start after and end before ASCII bytes, so they are on
        // char boundaries; `get` double-checks without panicking.
        self.text.get(start..self.pos).unwrap_or("")
    }

    fn read_atom(&mut self) -> Result<Value, EdnError> {
        let start = self.pos;
        let tok = self.read_token();
        if tok.is_empty() {
            return Err(self.err_at(self.line, start, "unexpected character"));
        }
        if let Some(kw) = tok.strip_prefix(':') {
            if kw.is_empty() {
                return Err(self.err_at(self.line, start, "empty keyword"));
            }
            return Ok(Value::Keyword(kw.trim_start_matches(':').to_string()));
        }
        match tok {
            "nil" => return Ok(Value::Nil),
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        let bytes = tok.as_bytes();
        let numeric = bytes[0].is_ascii_digit()
            || (bytes.len() > 1
                && (bytes[0] == b'-' || bytes[0] == b'+')
                && bytes[1].is_ascii_digit());
        if !numeric {
            return Ok(Value::Symbol(tok.to_string()));
        }
        parse_number(tok)
            .ok_or_else(|| self.err_at(self.line, start, format!("bad number '{tok}'")))
    }
}

fn parse_number(tok: &str) -> Option<Value> {
    let int_part = tok.strip_suffix('N').unwrap_or(tok);
    if let Ok(i) = int_part.trim_start_matches('+').parse::<i64>() {
        return Some(Value::Int(i));
    }
    if tok.contains('/') {
        // Ratios are rare in histories; keep their text.
        let mut parts = tok.splitn(2, '/');
        let ok = parts.all(|p| {
            let p = p.trim_start_matches(['+', '-']);
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        });
        return ok.then(|| Value::Symbol(tok.to_string()));
    }
    let float_part = tok.strip_suffix('M').unwrap_or(tok);
    if float_part
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return float_part.parse::<f64>().ok().map(Value::Float);
    }
    None
}

/// Parses every top-level form of `input`, with the line each form starts on.
pub fn parse_forms(input: &str) -> Result<Vec<(usize, Value)>, EdnError> {
    let mut reader = Reader::new(input);
    let mut out = Vec::new();
    loop {
        reader.skip_ws();
        let line = reader.line;
        match reader.next_form(0)? {
            Some(v) => out.push((line, v)),
            None => return Ok(out),
        }
    }
}

/// Parses exactly one EDN value.
pub fn parse_value(input: &str) -> Result<Value, EdnError> {
    let mut forms = parse_forms(input)?;
    match forms.len() {
        1 => Ok(forms.remove(0).1),
        0 => Err(EdnError::Syntax {
            line: 1,
            col: 1,
            message: "no value".into(),
        }),
        _ => Err(EdnError::Syntax {
            line: forms[1].0,
            col: 1,
            message: "more than one value".into(),
        }),
    }
}

fn unclosed(close: u8) -> &'static str {
    if close == b']' {
        "unclosed history vector (expected ']')"
    } else {
        "unclosed history list (expected ')')"
    }
}

/// Reads the history entries of `input`: the top-level forms, where a
/// top-level vector or list is a whole history and contributes each of its
/// elements (Jepsen writes either one map per line or one vector of maps;
/// knossos's test data is one list). Each entry comes with the line on
/// which it starts.
pub fn parse_entries(input: &str) -> Result<Vec<(usize, Value)>, EdnError> {
    let mut reader = Reader::new(input);
    let mut out = Vec::new();
    loop {
        reader.skip_ws();
        match reader.peek() {
            None => return Ok(out),
            Some(open @ (b'[' | b'(')) => {
                // A history vector or list: read element by element to
                // keep lines.
                let close = if open == b'[' { b']' } else { b')' };
                let (line, start) = (reader.line, reader.pos);
                reader.bump();
                loop {
                    reader.skip_ws();
                    match reader.peek() {
                        None => return Err(reader.err_at(line, start, unclosed(close))),
                        Some(b) if b == close => {
                            reader.bump();
                            break;
                        }
                        Some(_) => {
                            let el_line = reader.line;
                            match reader.next_form(1)? {
                                Some(v) => out.push((el_line, v)),
                                None => return Err(reader.err_at(line, start, unclosed(close))),
                            }
                        }
                    }
                }
            }
            Some(_) => {
                let line = reader.line;
                if let Some(v) = reader.next_form(0)? {
                    out.push((line, v));
                }
            }
        }
    }
}

/// Parses a Jepsen EDN history: one entry map per line (maps may span
/// lines), or one vector or list of entry maps, `;` comments anywhere.
pub fn parse_history(input: &str) -> Result<History, EdnError> {
    let mut reader = Reader::new(input);
    let mut ops = Vec::with_capacity(input.len() / 80);
    loop {
        reader.skip_ws();
        match reader.peek() {
            None => {
                // The capacity guess can overshoot by half; the history
                // lives through the whole check, so give the rest back.
                ops.shrink_to_fit();
                return Ok(History::new(ops));
            }
            Some(open @ (b'[' | b'(')) => {
                // A whole history as one vector or list (knossos's test
                // data uses lists).
                let close = if open == b'[' { b']' } else { b')' };
                let (line, start) = (reader.line, reader.pos);
                reader.bump();
                loop {
                    reader.skip_ws();
                    match reader.peek() {
                        None => return Err(reader.err_at(line, start, unclosed(close))),
                        Some(b) if b == close => {
                            reader.bump();
                            break;
                        }
                        Some(_) => {
                            let el_line = reader.line;
                            ops.push(reader.read_op(el_line, 1)?);
                        }
                    }
                }
            }
            Some(_) => {
                let line = reader.line;
                ops.push(reader.read_op(line, 0)?);
            }
        }
    }
}

/// Writes a history as EDN, one op map per line (Jepsen's `history.edn`
/// layout).
pub fn write_history(history: &History, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for op in &history.ops {
        writeln!(out, "{}", op.to_value())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the EDN scalar and collection syntax Jepsen uses parses to the
    /// expected values, with commas as whitespace and comments ignored.
    #[test]
    fn parses_scalars_and_collections() {
        let v = parse_value("{:a 1, :b [nil true \"s\" :k/w -3 2.5 7N], :c #{1 2} ; c\n :d (x y)}")
            .expect("valid edn");
        assert_eq!(
            v,
            Value::Map(vec![
                (Value::kw("a"), Value::Int(1)),
                (
                    Value::kw("b"),
                    Value::Vector(vec![
                        Value::Nil,
                        Value::Bool(true),
                        Value::Str("s".into()),
                        Value::kw("k/w"),
                        Value::Int(-3),
                        Value::Float(2.5),
                        Value::Int(7),
                    ])
                ),
                (
                    Value::kw("c"),
                    Value::Set(vec![Value::Int(1), Value::Int(2)])
                ),
                (
                    Value::kw("d"),
                    Value::Vector(vec![Value::Symbol("x".into()), Value::Symbol("y".into())])
                ),
            ])
        );
    }

    /// Goal: tags are dropped, `#_` discards, chars and escapes decode.
    #[test]
    fn tags_discards_chars() {
        let v = parse_value(
            "[#inst \"2020\" #_ :gone \\a \\newline \"\\u0041\\n\" #jepsen.history.Op{:a 1}]",
        )
        .expect("valid edn");
        assert_eq!(
            v,
            Value::Vector(vec![
                Value::Str("2020".into()),
                Value::Char('a'),
                Value::Char('\n'),
                Value::Str("A\n".into()),
                Value::Map(vec![(Value::kw("a"), Value::Int(1))]),
            ])
        );
    }

    /// Goal: malformed input reports the right line (and never panics).
    #[test]
    fn errors_carry_line_numbers() {
        let cases = [
            ("{:a 1}\n{:a 2\n", 2),
            ("{:a 1}\n\n{:a}\n", 3),
            ("[1 2 3]\n]\n", 2),
            ("\"abc", 1),
            ("{:a 1}\n{:b 1.2.3}", 2),
            ("\n\n#?foo", 3),
            ("\\", 1),
            ("#", 1),
            (":", 1),
        ];
        for (src, line) in cases {
            let err = parse_forms(src).expect_err(src);
            assert_eq!(err.line(), line, "{src:?}: {err}");
        }
    }

    /// Goal: absurd nesting is an error, not a stack overflow.
    #[test]
    fn deep_nesting_is_rejected() {
        let src = "[".repeat(100_000);
        assert!(parse_forms(&src).is_err());
    }

    /// Goal: a top-level history vector is flattened and each element keeps
    /// its own starting line.
    #[test]
    fn history_vector_entries_keep_lines() {
        let src = "; comment\n[{:a 1}\n {:a 2\n  :b 3}\n {:a 4}]\n";
        let lines: Vec<usize> = parse_entries(src)
            .expect("ok")
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(lines, vec![2, 3, 5]);
    }

    /// Goal: a whole history written as ONE vector or ONE list of
    /// operations (knossos's test data), with `;` comments between and
    /// inside, parses to the same entries as one map per line, each with
    /// the line it starts on; an unclosed list is an error at its line.
    #[test]
    fn history_as_one_vector_or_list() {
        let maps = "{:process 0, :type :invoke, :f :write, :value 1}\n\
                    {:process 0, :type :ok, :f :write, :value 1}\n\
                    {:process 1, :type :invoke, :f :read, :value nil}\n\
                    {:process 1, :type :ok, :f :read, :value 1}\n";
        let per_line = parse_history(maps).expect("per line");
        let body: Vec<&str> = maps.lines().collect();
        for (open, close) in [("[", "]"), ("(", ")")] {
            let src = format!(
                "; knossos style\n{open}{}\n ; a comment between ops\n {}\n {} ; trailing\n {}{close}\n",
                body[0], body[1], body[2], body[3]
            );
            let h = parse_history(&src).unwrap_or_else(|e| panic!("{open}: {e}"));
            assert_eq!(h.ops.len(), 4, "{open}");
            for (a, b) in h.ops.iter().zip(&per_line.ops) {
                assert_eq!(
                    (&a.process, a.kind, &a.f, &a.value),
                    (&b.process, b.kind, &b.f, &b.value)
                );
            }
            let lines: Vec<usize> = h.ops.iter().map(|o| o.line).collect();
            assert_eq!(lines, vec![2, 4, 5, 6], "{open}");
            let entries: Vec<usize> = parse_entries(&src)
                .expect("entries")
                .into_iter()
                .map(|(l, _)| l)
                .collect();
            assert_eq!(entries, vec![2, 4, 5, 6], "{open}");
            let unclosed = format!("\n{open}{}\n", body[0]);
            let err = parse_history(&unclosed).expect_err("unclosed");
            assert_eq!(err.line(), 2, "{open}: {err}");
        }
    }

    /// Goal: printed values read back identically (writer/reader agree).
    #[test]
    fn display_round_trips() {
        let src = "{:a [1 -2 nil \"x\\\"y\\\\\"], :b #{:c \\space}, \"k\" {:z 2.5}}";
        let v = parse_value(src).expect("ok");
        assert_eq!(parse_value(&v.to_string()).expect("reparse"), v);
    }
}
