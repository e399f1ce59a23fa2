//! History file formats: choosing between EDN and JSON Lines (by file
//! extension, else by sniffing the text) and reading/writing either.

use std::path::Path;

use crate::edn::EdnError;
use crate::history::History;
use crate::jsonl::JsonlError;

/// A history file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Jepsen's `history.edn`.
    Edn,
    /// One JSON object per line.
    Jsonl,
}

/// Errors reading a history in some format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// EDN problem.
    #[error("EDN: {0}")]
    Edn(#[from] EdnError),
    /// JSON Lines problem.
    #[error("JSON Lines: {0}")]
    Jsonl(#[from] JsonlError),
}

impl FormatError {
    /// The 1-based line the error refers to.
    pub fn line(&self) -> usize {
        match self {
            FormatError::Edn(e) => e.line(),
            FormatError::Jsonl(e) => e.line(),
        }
    }
}

impl Format {
    /// The format a path's extension implies, if any.
    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "edn" => Some(Format::Edn),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// Guesses from content: a first map whose first key is a JSON string
    /// means JSON Lines; anything else is taken as EDN.
    pub fn sniff(text: &str) -> Format {
        let mut rest = text.trim_start();
        // Skip EDN comment lines.
        while rest.starts_with(';') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        }
        let rest = rest.strip_prefix('[').map_or(rest, str::trim_start);
        match rest.strip_prefix('{') {
            Some(inner) if inner.trim_start().starts_with('"') => Format::Jsonl,
            _ => Format::Edn,
        }
    }

    /// Extension-based detection with content sniffing as the fallback.
    pub fn detect(path: &Path, text: &str) -> Format {
        Format::from_extension(path).unwrap_or_else(|| Format::sniff(text))
    }

    /// Parses `text` in this format.
    pub fn parse(self, text: &str) -> Result<History, FormatError> {
        Ok(match self {
            Format::Edn => crate::edn::parse_history(text)?,
            Format::Jsonl => crate::jsonl::parse_history(text)?,
        })
    }

    /// Writes `history` in this format.
    pub fn write(self, history: &History, out: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            Format::Edn => crate::edn::write_history(history, out),
            Format::Jsonl => crate::jsonl::write_history(history, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: detection follows extensions first, then content.
    #[test]
    fn detects_formats() {
        assert_eq!(Format::detect(Path::new("h.edn"), "{\"a\":1}"), Format::Edn);
        assert_eq!(Format::detect(Path::new("h.jsonl"), ""), Format::Jsonl);
        assert_eq!(
            Format::detect(Path::new("h"), " {\"type\":\"ok\"}"),
            Format::Jsonl
        );
        assert_eq!(
            Format::detect(Path::new("h"), "; c\n{:type :ok}"),
            Format::Edn
        );
        assert_eq!(
            Format::detect(Path::new("h.txt"), "[{:type :ok}]"),
            Format::Edn
        );
    }
}
