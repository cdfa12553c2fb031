//! The one way a file in `state_dir` is opened for sharing between the host's workers (cache
//! counters, rate-limit tables): read-write, created when absent, never truncated (another
//! worker may be using it), grown but never shrunk.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Opens (creating) a shared state file; errors name the file.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
}

/// Makes the file at least `bytes` long (zeroes), never shorter: others may have mapped more.
pub fn grow(file: &File, bytes: u64) -> io::Result<()> {
    if file.metadata()?.len() < bytes {
        file.set_len(bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;

    use crate::host::expiry_index::note_expiring;
    use crate::host::{AuditLog, ChangeCounters};
    use crate::ratelimit::{Limits, RateLimiter};
    use crate::whitelist::Scope;

    const LIMITS: Limits = Limits { rate_per_minute: 60.0, burst: 3 };

    /// Every state file this module opens, by the name it gets in `state_dir`, with the mode it
    /// must be created with and a way to open it there.
    #[allow(clippy::type_complexity)]
    fn openers() -> Vec<(&'static str, u32, Box<dyn Fn(&Path) -> bool>)> {
        vec![
            (
                "cache-versions",
                0o600,
                Box::new(|d: &Path| ChangeCounters::open(&d.join("cache-versions")).is_ok()),
            ),
            ("ratelimit", 0o600, Box::new(|d: &Path| RateLimiter::open(d.join("ratelimit"), LIMITS).is_ok())),
            ("audit.log", 0o640, Box::new(|d: &Path| AuditLog::open(&d.join("audit.log")).is_ok())),
            (
                "expiring-groups.jsonl",
                0o600,
                Box::new(|d: &Path| {
                    note_expiring(d, &Scope { profile: None, region: None, keys: None }, "sg-12345678")
                        .is_ok()
                }),
            ),
        ]
    }

    #[test]
    fn state_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode, open) in openers() {
            assert!(open(dir.path()), "{name}");
            let meta = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                mode,
                "{name}: mode {:o}",
                meta.permissions().mode()
            );
        }
    }

    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        for (name, _, open) in openers() {
            std::fs::write(&victim, b"precious").unwrap();
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
            let planted = dir.path().join(name);
            symlink(&victim, &planted).unwrap();
            assert!(!open(dir.path()), "{name}: a symlink was followed");
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name}: the target changed");
            assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o644, "{name}");
            // A dangling link must not create its target either.
            std::fs::remove_file(&victim).unwrap();
            assert!(!open(dir.path()), "{name}: a dangling symlink was followed");
            assert!(!victim.exists(), "{name}: the dangling link's target was created");
            std::fs::remove_file(&planted).unwrap();
        }
    }
}
