//! Where a run's files go: `STORE/<test>/<YYYYMMDDTHHMMSS.mmm>/` (UTC),
//! with `STORE/latest` and `STORE/<test>/latest` symlinks pointing at the
//! newest run, as Jepsen's `store/` does, so "the last run" is always one
//! path away. Links are replaced atomically (a new link renamed over the
//! old), so a reader never finds one missing.

use std::path::{Path, PathBuf};

use crate::harness::HarnessError;

/// A run's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The directory itself.
    pub path: PathBuf,
}

impl RunDir {
    /// Creates `store/<test>/<timestamp>/` for a run started at `unix_ms`
    /// (a `-1`, `-2`... suffix if that millisecond is taken) and points
    /// the `latest` links at it. `test` must be a plain name (no path
    /// separators, not `latest`).
    pub fn create(store: &Path, test: &str, unix_ms: u64) -> Result<RunDir, HarnessError> {
        if test.is_empty()
            || test == "latest"
            || test.starts_with('.')
            || test.contains(['/', '\\'])
        {
            return Err(HarnessError::Config(format!(
                "test name {test:?} must be a plain directory name"
            )));
        }
        let test_dir = store.join(test);
        std::fs::create_dir_all(&test_dir).map_err(|e| HarnessError::io(&test_dir, e))?;
        let stamp = timestamp(unix_ms);
        let mut name = stamp.clone();
        let mut n = 0;
        let path = loop {
            let candidate = test_dir.join(&name);
            match std::fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                    n += 1;
                    name = format!("{stamp}-{n}");
                }
                Err(e) => return Err(HarnessError::io(&candidate, e)),
            }
        };
        link(&test_dir.join("latest"), Path::new(&name))?;
        link(&store.join("latest"), &Path::new(test).join(&name))?;
        Ok(RunDir { path })
    }

    /// A file in the run's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Points `at` (a symlink) to the relative `target`, atomically.
#[cfg(unix)]
fn link(at: &Path, target: &Path) -> Result<(), HarnessError> {
    let tmp = at.with_file_name(format!(".latest.tmp-{}", std::process::id()));
    // A stale temporary from a crashed run would make symlink fail.
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| HarnessError::io(&tmp, e))?;
    std::fs::rename(&tmp, at).map_err(|e| HarnessError::io(at, e))
}

/// Without symlinks, `latest` is a text file naming the run's directory.
#[cfg(not(unix))]
fn link(at: &Path, target: &Path) -> Result<(), HarnessError> {
    std::fs::write(at, target.to_string_lossy().as_bytes()).map_err(|e| HarnessError::io(at, e))
}

/// `YYYYMMDDTHHMMSS.mmm` in UTC.
pub fn timestamp(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}.{ms:03}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: timestamps are UTC calendar times, leap days included.
    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "19700101T000000.000");
        // 2024-02-29 13:45:07.089 UTC.
        assert_eq!(timestamp(1_709_214_307_089), "20240229T134507.089");
        assert_eq!(timestamp(951_782_400_000), "20000229T000000.000");
    }

    /// Goal: both `latest` links follow the newest run; a second run in
    /// the same millisecond gets its own directory; bad names are refused.
    #[test]
    fn latest_follows_the_newest() {
        let store = tempfile::tempdir().expect("tempdir");
        let a = RunDir::create(store.path(), "set", 1_000).expect("a");
        let b = RunDir::create(store.path(), "set", 2_000).expect("b");
        let c = RunDir::create(store.path(), "set", 2_000).expect("c");
        assert_ne!(b, c);
        assert!(c.path.ends_with("19700101T000002.000-1"));
        for latest in [store.path().join("latest"), store.path().join("set/latest")] {
            let resolved = std::fs::canonicalize(&latest).expect("resolve");
            assert_eq!(resolved, std::fs::canonicalize(&c.path).expect("c"));
        }
        assert!(a.path.is_dir() && b.path.is_dir());
        for bad in ["", "latest", "../x", "a/b", ".hidden"] {
            assert!(RunDir::create(store.path(), bad, 0).is_err(), "{bad:?}");
        }
    }
}
