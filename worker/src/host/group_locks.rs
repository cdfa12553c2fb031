//! The host's per-group locks: an `flock` on `group-<id>.lock` in `state_dir` (opened through
//! [`super::state_file`]), so an add under `max_rules_per_group` counts and adds while no other
//! worker of the host can. The kernel releases the lock if the holder dies.

use std::fs::File;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

use crate::whitelist::{GroupGuard, GroupLockFuture, GroupLocks};

/// Group locks as files in a directory.
#[derive(Debug, Clone)]
pub struct GroupLockFiles {
    dir: PathBuf,
}

impl GroupLockFiles {
    /// Locks in `dir` (the state dir, already prepared).
    pub fn new(dir: PathBuf) -> GroupLockFiles {
        GroupLockFiles { dir }
    }
}

impl GroupLocks for GroupLockFiles {
    fn hold<'a>(&'a self, group: &'a str) -> GroupLockFuture<'a> {
        Box::pin(async move {
            if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("{group:?} cannot name a lock file"));
            }
            let held = lock_file(self.dir.join(format!("group-{group}.lock"))).await?;
            Ok(Box::new(held) as GroupGuard)
        })
    }
}

/// Waits for an exclusive `flock` on the state file at `path` (created private if absent).
pub(crate) async fn lock_file(path: PathBuf) -> Result<Flock<File>, String> {
    // flock waits in the kernel: on a blocking thread, not the worker's only one. A request
    // dropped meanwhile leaves the thread to take and at once drop the lock.
    tokio::task::spawn_blocking(move || -> Result<Flock<File>, String> {
        let file = super::state_file::open(&path).map_err(|e| e.to_string())?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", path.display()))
    })
    .await
    .map_err(|e| format!("the lock task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_holder_per_group_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        // Two workers: two lock sets on one directory.
        let (a, b) = (GroupLockFiles::new(dir.path().into()), GroupLockFiles::new(dir.path().into()));
        let held = a.hold("sg-12345678").await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(100), b.hold("sg-12345678")).await;
        assert!(waiting.is_err(), "a second holder got the lock");
        assert!(b.hold("sg-87654321").await.is_ok(), "another group is independent");
        drop(held);
        let next = tokio::time::timeout(Duration::from_secs(10), b.hold("sg-12345678")).await;
        assert!(matches!(next, Ok(Ok(_))), "released on drop");
        assert!(a.hold("../x").await.is_err());
    }
}
