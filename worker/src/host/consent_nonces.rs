//! Consumed consent states, shared by every worker of the host: one empty file per nonce,
//! `<state_dir>/consent/<expiry>-<nonce>`, created with `O_CREAT | O_EXCL` (see
//! [`super::state_file::create_new`]), so exactly one worker's retry consumes a state and any
//! replay, on any worker, finds the name taken. Names past their expiry are pruned (at most once
//! a minute per process): the state they record would be refused as expired anyway.
//! With `[redis]`, Redis keeps them for the fleet ([`super::fleet_nonces`], behind the same
//! [`NonceStore`] trait), and these files are its fallback when so configured.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use crate::whitelist::NonceStore;

/// The directory of consumed nonces.
#[derive(Debug)]
pub struct NonceFiles {
    dir: PathBuf,
    last_prune: AtomicU64,
}

/// Seconds between prunes.
const PRUNE_EVERY: u64 = 60;

impl NonceFiles {
    /// `<state_dir>/consent`, created private if absent.
    pub fn open(state_dir: &std::path::Path) -> io::Result<NonceFiles> {
        let dir = state_dir.join("consent");
        super::state_file::private_subdir(&dir)?;
        Ok(NonceFiles { dir, last_prune: AtomicU64::new(0) })
    }

    /// Removes the names whose expiry has passed.
    fn prune(&self, now: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let expired = name
                .to_str()
                .and_then(|n| n.split_once('-'))
                .and_then(|(exp, _)| exp.parse::<u64>().ok())
                .is_some_and(|exp| exp < now);
            if expired {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Refuses anything but the 32 lower-case hex digits a consent nonce is.
pub(crate) fn check_nonce(nonce: &str) -> Result<(), String> {
    let hex = nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        Ok(())
    } else {
        Err("a consent nonce must be 32 lower-case hex digits".into())
    }
}

impl NonceStore for NonceFiles {
    fn consume<'a>(&'a self, nonce: &'a str, until: SystemTime) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move { self.record(nonce, until) })
    }
}

impl NonceFiles {
    /// Records `nonce` in a new file: `Ok(true)` the first time on this host.
    pub(crate) fn record(&self, nonce: &str, until: SystemTime) -> Result<bool, String> {
        check_nonce(nonce)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now.saturating_sub(self.last_prune.load(Ordering::Relaxed)) >= PRUNE_EVERY {
            self.last_prune.store(now, Ordering::Relaxed);
            self.prune(now);
        }
        let exp = until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let path = self.dir.join(format!("{exp}-{nonce}"));
        match super::state_file::create_new(&path) {
            Ok(file) => {
                file.sync_all().map_err(|e| format!("cannot record {}: {e}", path.display()))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(format!("cannot record {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn racing_workers_consume_a_nonce_once() {
        let dir = tempfile::tempdir().unwrap();
        let until = SystemTime::now() + Duration::from_secs(300);
        let start = Arc::new(Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (path, start) = (dir.path().to_path_buf(), start.clone());
                std::thread::spawn(move || {
                    let store = NonceFiles::open(&path).unwrap();
                    start.wait();
                    store.record(NONCE, until).unwrap()
                })
            })
            .collect();
        let won = racers.into_iter().map(|t| t.join().unwrap()).filter(|w| *w).count();
        assert_eq!(won, 1, "exactly one consumer");
        let meta = std::fs::metadata(dir.path().join("consent")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn expired_names_are_pruned_and_bad_nonces_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = NonceFiles::open(dir.path()).unwrap();
        let past = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(store.record(NONCE, past), Ok(true));
        assert!(store.record("../../etc/passwd", past).is_err());
        store.prune(2_000);
        assert_eq!(std::fs::read_dir(dir.path().join("consent")).unwrap().count(), 0);
    }

    #[test]
    fn a_planted_link_in_place_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("consent")).unwrap();
        assert!(NonceFiles::open(dir.path()).is_err());
    }
}
