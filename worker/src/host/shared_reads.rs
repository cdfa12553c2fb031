//! The host's single flight for group reads ([`SharedReads`]): per cache key, a lock file
//! `read-<key>.lock` whose holder is the one worker that may read the group from EC2, and a
//! file `read-<key>.json` holding the last read, which the next holder takes while it is fresh.
//! Both are state files (private, never through a link); the read file is written and read
//! only under the lock, so no reader sees it half written, and one torn by a crash only costs
//! a read (it does not parse).

use std::io::{Read, Write};
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use tracing::warn;

use crate::whitelist::flight::{ReadGuard, ReadLeadFuture, SharedRead, SharedReads};

/// Shared reads as files in a directory (the state dir).
#[derive(Debug, Clone)]
pub struct ReadFiles {
    dir: PathBuf,
}

impl ReadFiles {
    /// Reads shared through `dir` (the state dir, already prepared).
    pub fn new(dir: PathBuf) -> ReadFiles {
        ReadFiles { dir }
    }

    fn path(&self, key: &str, ext: &str) -> Result<PathBuf, String> {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("{key:?} cannot name a read file"));
        }
        Ok(self.dir.join(format!("read-{key}.{ext}")))
    }
}

impl SharedReads for ReadFiles {
    fn lead<'a>(&'a self, key: &'a str) -> ReadLeadFuture<'a> {
        Box::pin(async move {
            let held = super::group_locks::lock_file(self.path(key, "lock")?).await?;
            Ok(Box::new(held) as ReadGuard)
        })
    }

    fn load<'a>(&'a self, key: &'a str, version: u64) -> BoxFuture<'a, Option<SharedRead>> {
        Box::pin(async move { self.read_file(key).filter(|r| r.version == version) })
    }

    fn store<'a>(&'a self, key: &'a str, read: &'a SharedRead) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.write_file(key, read) })
    }
}

impl ReadFiles {
    /// The read stored in `key`'s file, if it parses.
    pub(crate) fn read_file(&self, key: &str) -> Option<SharedRead> {
        let mut file = super::state_file::open_read(&self.path(key, "json").ok()?).ok()??;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Stores `read` in `key`'s file (a failure is logged: it costs only a read).
    pub(crate) fn write_file(&self, key: &str, read: &SharedRead) {
        let written = self.path(key, "json").and_then(|path| {
            let mut file = super::state_file::open(&path).map_err(|e| e.to_string())?;
            let text = serde_json::to_vec(read).map_err(|e| e.to_string())?;
            file.set_len(0)
                .and_then(|()| file.write_all(&text))
                .map_err(|e| format!("{}: {e}", path.display()))
        });
        if let Err(e) = written {
            warn!(event = "shared_read_unstored", "the host's other workers will read EC2 themselves: {e}");
        }
    }
}

#[cfg(test)]
#[path = "shared_reads_tests.rs"]
mod tests;
