//! The data model shared by every history format: a small EDN-shaped value.
//!
//! Jepsen histories are EDN, so their values are EDN values (nil, integers,
//! keywords, strings, vectors, sets, maps). JSON Lines histories are mapped
//! onto the same type so the checkers never care where a history came from.
//! Values must be hashable and comparable because the checkers intern them
//! (register states, set elements, independent keys).

use std::fmt;
use std::hash::{Hash, Hasher};

/// An EDN-like value as found in a Jepsen history.
#[derive(Debug, Clone)]
pub enum Value {
    /// `nil` / JSON `null`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (EDN `N` big-int suffixes are accepted when they fit in i64).
    Int(i64),
    /// A floating point number. Compared and hashed by bit pattern so that
    /// `Value` can be a hash-map key.
    Float(f64),
    /// A string.
    Str(String),
    /// A keyword, stored without its leading colon (`:ok` is `Keyword("ok")`).
    Keyword(String),
    /// A symbol or any other bare token we do not interpret (e.g. a ratio).
    Symbol(String),
    /// A character literal such as `\a`.
    Char(char),
    /// `[...]` vectors, and `(...)` lists (EDN lists carry no extra meaning
    /// in histories).
    Vector(Vec<Value>),
    /// `#{...}` sets, in source order (duplicates kept as written).
    Set(Vec<Value>),
    /// `{...}` maps, in source order.
    Map(Vec<(Value, Value)>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Str(a), Str(b)) => a == b,
            (Keyword(a), Keyword(b)) => a == b,
            (Symbol(a), Symbol(b)) => a == b,
            (Char(a), Char(b)) => a == b,
            (Vector(a), Vector(b)) => a == b,
            (Set(a), Set(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Nil => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) | Value::Keyword(s) | Value::Symbol(s) => s.hash(state),
            Value::Char(c) => c.hash(state),
            Value::Vector(v) | Value::Set(v) => v.hash(state),
            Value::Map(m) => m.hash(state),
        }
    }
}

impl Value {
    /// A keyword value, for building histories in code.
    pub fn kw(name: &str) -> Value {
        Value::Keyword(name.to_string())
    }

    /// The name of a keyword, string or symbol; `None` for anything else.
    /// Used for fields like `:type` and `:f` where Jepsen writes keywords
    /// but JSON writers write strings.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Value::Keyword(s) | Value::Str(s) | Value::Symbol(s) => {
                Some(s.strip_prefix(':').unwrap_or(s))
            }
            _ => None,
        }
    }

    /// The integer inside, if this is an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Elements of a vector, list or set.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Vector(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    /// The order reports list values in: integers numerically first, the
    /// rest by their EDN text. Stable across runs, unlike hash order.
    pub fn report_cmp(&self, other: &Value) -> std::cmp::Ordering {
        match (self, other) {
            (Value::Int(x), Value::Int(y)) => x.cmp(y),
            (Value::Int(_), _) => std::cmp::Ordering::Less,
            (_, Value::Int(_)) => std::cmp::Ordering::Greater,
            _ => self.to_string().cmp(&other.to_string()),
        }
    }

    /// Look a key up in a map value.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Values print as EDN, which is also how reports show them.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => {
                if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
                    write!(f, "{x:.1}")
                } else if x.is_nan() {
                    f.write_str("##NaN")
                } else if x.is_infinite() {
                    f.write_str(if *x > 0.0 { "##Inf" } else { "##-Inf" })
                } else {
                    write!(f, "{x}")
                }
            }
            Value::Str(s) => write_edn_string(f, s),
            Value::Keyword(k) => write!(f, ":{k}"),
            Value::Symbol(s) => f.write_str(s),
            Value::Char(c) => match c {
                '\n' => f.write_str("\\newline"),
                ' ' => f.write_str("\\space"),
                '\t' => f.write_str("\\tab"),
                '\r' => f.write_str("\\return"),
                c => write!(f, "\\{c}"),
            },
            Value::Vector(v) => write_seq(f, "[", v, "]"),
            Value::Set(v) => write_seq(f, "#{", v, "}"),
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn write_seq(f: &mut fmt::Formatter<'_>, open: &str, items: &[Value], close: &str) -> fmt::Result {
    f.write_str(open)?;
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{v}")?;
    }
    f.write_str(close)
}

fn write_edn_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// JSON form of a value, used by the JSON Lines writer and JSON reports.
/// Keywords become `":name"` strings so that the JSON Lines reader can turn
/// them back into keywords.
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Nil => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(x) => serializer.serialize_f64(*x),
            Value::Str(s) | Value::Symbol(s) => serializer.serialize_str(s),
            Value::Keyword(k) => serializer.serialize_str(&format!(":{k}")),
            Value::Char(c) => serializer.serialize_str(&c.to_string()),
            Value::Vector(v) | Value::Set(v) => {
                let mut seq = serializer.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                // JSON object keys must be strings: use the EDN text of
                // non-string keys (keywords keep their colon).
                let mut map = serializer.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    map.serialize_entry(&key, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: printing produces EDN that a Jepsen user would recognise.
    #[test]
    fn displays_as_edn() {
        let v = Value::Vector(vec![
            Value::kw("x"),
            Value::Set(vec![Value::Int(1), Value::Nil]),
            Value::Str("a\"b".into()),
        ]);
        assert_eq!(v.to_string(), "[:x #{1 nil} \"a\\\"b\"]");
    }

    /// Goal: keywords and strings with the same text are different values,
    /// but `as_name` reads both (so `:type "ok"` in JSON works).
    #[test]
    fn keyword_vs_string() {
        assert_ne!(Value::kw("ok"), Value::Str("ok".into()));
        assert_eq!(Value::kw("ok").as_name(), Some("ok"));
        assert_eq!(Value::Str(":ok".into()).as_name(), Some("ok"));
    }
}
