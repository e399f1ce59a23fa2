//! [`HistorySink`]: the history of a harness run, kept in memory for the
//! checkers and written to `history.edn` as it happens, one flushed line
//! per entry, so a runner that crashes or is killed still leaves every
//! entry recorded so far on disk. Lines are exactly those of
//! [`Recorder::to_edn`], so the file parses back to the same [`History`].

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::harness::HarnessError;
use crate::history::{Function, History, OpType, Process};
use crate::recorder::Recorder;
use crate::value::Value;

/// A recorder that also streams to a file. See the module docs.
#[derive(Debug)]
pub struct HistorySink {
    recorder: Recorder,
    file: Option<(PathBuf, File)>,
    /// The first write error; nothing more is written after it.
    io_error: Option<HarnessError>,
    /// Refused extra fields.
    problems: Vec<String>,
}

impl HistorySink {
    /// A sink that keeps the history in memory only (tests, simulations
    /// that write the file themselves).
    pub fn memory() -> HistorySink {
        HistorySink {
            recorder: Recorder::new(),
            file: None,
            io_error: None,
            problems: Vec::new(),
        }
    }

    /// A sink writing to `path` (created, or truncated if it exists).
    pub fn create(path: &Path) -> Result<HistorySink, HarnessError> {
        let file = File::create(path).map_err(|e| HarnessError::io(path, e))?;
        Ok(HistorySink {
            recorder: Recorder::new(),
            file: Some((path.to_path_buf(), file)),
            io_error: None,
            problems: Vec::new(),
        })
    }

    /// The file being written, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Records an invocation with extra fields; returns its entry index.
    pub fn invoke(
        &mut self,
        process: i64,
        f: Function,
        value: Value,
        time_ns: i64,
        extra: &[(String, Value)],
    ) -> usize {
        let i = self.recorder.invoke(process, f, value, time_ns);
        self.finish_entry(i, extra);
        i
    }

    /// Records the completion of the invocation at `invoke`; an error only
    /// when `invoke` is not an open invocation or `kind` is `Invoke`.
    pub fn complete(
        &mut self,
        invoke: usize,
        kind: OpType,
        value: Value,
        time_ns: i64,
        extra: &[(String, Value)],
    ) -> Result<usize, HarnessError> {
        let i = self.recorder.complete(invoke, kind, value, time_ns)?;
        self.finish_entry(i, extra);
        Ok(i)
    }

    /// Records a lone `:info` entry (nemesis operations).
    pub fn info(
        &mut self,
        process: Process,
        f: Function,
        value: Value,
        time_ns: i64,
        extra: &[(String, Value)],
    ) -> usize {
        let i = self.recorder.info(process, f, value, time_ns);
        self.finish_entry(i, extra);
        i
    }

    /// Annotates entry `i` and writes its line. A refused extra field is
    /// dropped and listed in [`HistorySink::problems`]; a write error stops
    /// the file (the history stays complete in memory) and is returned by
    /// [`HistorySink::finish`]. Either way the run goes on: losing the
    /// run over a bad annotation would be worse than losing the field.
    fn finish_entry(&mut self, i: usize, extra: &[(String, Value)]) {
        for (field, value) in extra {
            if let Err(e) = self.recorder.annotate(i, field, value.clone()) {
                self.problems.push(format!("history entry {i}: {e}"));
            }
        }
        if self.io_error.is_some() {
            return;
        }
        if let Some((path, file)) = &mut self.file {
            let mut line = self.recorder.entry_edn(i).unwrap_or_default();
            line.push('\n');
            // One write per line: a crash leaves whole lines behind.
            if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                self.io_error = Some(HarnessError::io(path, e));
            }
        }
    }

    /// Extra fields refused so far (each with its entry and reason).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The history so far.
    pub fn history(&self) -> &History {
        self.recorder.history()
    }

    /// The whole history as EDN (what the file holds).
    pub fn to_edn(&self) -> String {
        self.recorder.to_edn()
    }

    /// Syncs the file (if any) and returns the history; the first write
    /// error, if there was one.
    pub fn finish(self) -> Result<History, HarnessError> {
        if let Some(e) = self.io_error {
            return Err(e);
        }
        if let Some((path, file)) = &self.file {
            file.sync_all().map_err(|e| HarnessError::io(path, e))?;
        }
        Ok(self.recorder.into_history())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn;

    /// Goal: every entry is on disk as soon as it is recorded, extras
    /// included, and the file parses back to the in-memory history; a
    /// refused extra is listed as a problem but the entry is still
    /// recorded; completing twice is an error.
    #[test]
    fn streams_lines_that_parse_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.edn");
        let mut sink = HistorySink::create(&path).expect("create");
        let node = [("node".to_string(), Value::Str("n1".into()))];
        let w = sink.invoke(0, Function::Write, Value::Int(1), 5, &node);
        let on_disk = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            on_disk,
            "{:type :invoke, :f :write, :value 1, :process 0, :time 5, :node \"n1\"}\n"
        );
        sink.info(
            Process::Nemesis,
            Function::Other("start".into()),
            Value::Str("kill".into()),
            6,
            &[("fault".into(), Value::Str("kill".into()))],
        );
        let bad = [("value".to_string(), Value::Nil)];
        sink.complete(w, OpType::Ok, Value::Int(1), 7, &bad)
            .expect("complete");
        assert_eq!(sink.problems().len(), 1, "{:?}", sink.problems());
        assert!(sink.complete(w, OpType::Ok, Value::Int(1), 8, &[]).is_err());
        let on_disk = std::fs::read_to_string(&path).expect("read");
        assert_eq!(on_disk.lines().count(), 3);
        assert_eq!(
            &edn::parse_history(&on_disk).expect("parse"),
            sink.history()
        );
        assert_eq!(on_disk, sink.to_edn());
        let history = sink.finish().expect("finish");
        assert_eq!(history.operations().expect("pair").len(), 1);
    }
}
