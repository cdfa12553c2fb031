//! The audit log file: one JSON line per change, appended with O_APPEND by every worker and
//! flushed to disk (fdatasync) before the tool answers, so an answered change is never lost —
//! not even to a `kill -9` a moment later. Reopened on USR1 like the other logs.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::whitelist::audit::{AuditEntry, Recorder};

/// An append-only, durable audit file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating) the file for appending; the directory must exist.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        Ok(AuditLog { path: path.to_path_buf(), file: Mutex::new(open(path)?) })
    }

    /// Reopens at the same path (after logrotate moved the file).
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Mode `0640` (a log reader's group may read it), never through a symlink.
fn open(path: &Path) -> io::Result<File> {
    super::state_file::open_append(path, super::state_file::LOG)
        .map_err(|e| io::Error::new(e.kind(), format!("audit log: {e}")))
}

impl Recorder for AuditLog {
    fn record(&self, entry: &AuditEntry) -> Result<(), String> {
        let mut line = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per entry: with O_APPEND, lines of different workers never interleave.
        file.write_all(&line).map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        file.sync_data().map_err(|e| format!("syncing {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> AuditEntry {
        AuditEntry {
            time: "2026-11-24T10:00:00.000Z".into(),
            action: "add",
            identity: format!("user{n}"),
            source: None,
            request_id: None,
            group_id: "sg-12345678".into(),
            region: None,
            rule: serde_json::json!({}),
            result: "added",
            error: None,
        }
    }

    #[test]
    fn appends_lines_and_reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.record(&entry(1)).unwrap();
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        log.record(&entry(2)).unwrap();
        log.reopen().unwrap();
        log.record(&entry(3)).unwrap();
        let old = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 2);
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("user3"));
    }
}
