//! The audit log file: one JSON line per entry, appended with O_APPEND by every worker and
//! flushed to disk (fdatasync) before the tool answers, so an answered change is never lost —
//! not even to a `kill -9` a moment later. Reopened on USR1 like the other logs.
//!
//! Whole lines or nothing: each append holds an exclusive `flock` on the file (the host's
//! workers all append to it), ends a tail left without `'\n'` (a crash mid-write) before its
//! own line, and cuts a short or failed write (a full disk) back off, so the log never holds
//! half a line glued to the next. Readers skip lines that do not parse.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::expiry_index;
use super::state_file::append_line;
use crate::whitelist::audit::{AuditEntry, LoggedEntry, Recorder};
use crate::whitelist::Scope;

/// How much of the log's end the reconciler reads (the intents it can still complete).
const TAIL_BYTES: u64 = 4 << 20;

/// An append-only, durable audit file (and the expiry index noted with it).
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    index_dir: Option<PathBuf>,
}

impl AuditLog {
    /// Opens (creating) the file for appending; the directory must exist.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        Ok(AuditLog { path: path.to_path_buf(), file: Mutex::new(open(path)?), index_dir: None })
    }

    /// Notes expiring rules in the index in `state_dir` (the sweeper reads it).
    pub fn with_expiry_index(self, state_dir: PathBuf) -> AuditLog {
        AuditLog { index_dir: Some(state_dir), ..self }
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

/// The entries in the last `max` bytes of the file at `path`, skipping unparseable lines.
fn read_tail(path: &Path, max: u64) -> io::Result<Vec<LoggedEntry>> {
    let mut f = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let from = f.metadata()?.len().saturating_sub(max);
    f.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    // Started mid-file: the first line is only the end of one.
    let skip = usize::from(from > 0);
    Ok(text.lines().skip(skip).filter_map(|l| serde_json::from_str(l).ok()).collect())
}

impl Recorder for AuditLog {
    fn record(&self, entry: &AuditEntry) -> Result<(), String> {
        let mut line = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        append_line(&file, &line).map_err(|e| format!("writing {}: {e}", self.path.display()))
    }

    fn note_expiring(&self, scope: &Scope, group: &str) -> Result<(), String> {
        match &self.index_dir {
            Some(dir) => expiry_index::note_expiring(dir, scope, group)
                .map_err(|e| format!("noting {group} in the expiry index in {}: {e}", dir.display())),
            None => Ok(()),
        }
    }

    fn recent(&self) -> Result<Vec<LoggedEntry>, String> {
        read_tail(&self.path, TAIL_BYTES).map_err(|e| format!("reading {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn entry(n: u32) -> AuditEntry {
        AuditEntry {
            time: "2026-11-24T10:00:00.000Z".into(),
            action: "add",
            identity: format!("user{n}"),
            group_id: "sg-12345678".into(),
            rule: serde_json::json!({}),
            result: "added",
            ..AuditEntry::default()
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

    #[test]
    fn a_line_left_half_written_never_glues_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let torn = r#"{"time":"2026-11-24T09:59:59.000Z","action":"add","identi"#;
        std::fs::write(&path, format!("{}\n{torn}", serde_json::to_string(&entry(0)).unwrap())).unwrap();
        let log = AuditLog::open(&path).unwrap();
        log.record(&entry(1)).unwrap();
        log.record(&entry(2)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "the torn line stays alone on its line: {text}");
        assert_eq!(lines[1], torn, "what was on disk is kept as it was");
        for l in [lines[0], lines[2], lines[3]] {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        }
    }

    /// A small tmpfs mounted for one test, unmounted on drop.
    pub(crate) struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        /// Mounts `kib` KiB, or says why it cannot (not root, no mount namespace).
        pub(crate) fn mount(kib: u32) -> Result<Tmpfs, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status();
            match status {
                Ok(s) if s.success() => Ok(Tmpfs(dir)),
                Ok(s) => Err(format!("mount -t tmpfs {s}")),
                Err(e) => Err(format!("mount: {e}")),
            }
        }

        pub(crate) fn path(&self) -> &Path {
            self.0.path()
        }

        /// Fills the file system with a file; returns its path.
        pub(crate) fn fill(&self) -> PathBuf {
            let path = self.path().join("filler");
            let mut f = File::create(&path).unwrap();
            let chunk = vec![b'x'; 4096];
            while f.write_all(&chunk).is_ok() {}
            while f.write_all(b"x").is_ok() {}
            path
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0.path()).status();
        }
    }

    #[test]
    fn a_full_disk_never_leaves_half_a_line() {
        let fs = match Tmpfs::mount(64) {
            Ok(fs) => fs,
            Err(why) => {
                eprintln!("SKIPPED a_full_disk_never_leaves_half_a_line: cannot mount a tmpfs ({why})");
                return;
            }
        };
        let path = fs.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.record(&entry(0)).unwrap();
        let filler = fs.fill();
        let failed = (1..=40).filter(|n| log.record(&entry(*n)).is_err()).count();
        assert!(failed > 0, "the disk was full");
        std::fs::remove_file(filler).unwrap();
        log.record(&entry(99)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        }
        assert!(text.lines().last().unwrap().contains("user99"));
    }
}
