//! Removes expired rules: one sweeper for the whole host, whichever worker holds the sweeper
//! lock (an `flock` released when that worker exits, so the next one takes over), at boot and
//! then every `sweep_interval`.
//!
//! It looks at the groups named in `sweep_groups`, the exact ids in `allowed_security_groups`,
//! and every group this service has given an expiring rule (an index file in the state dir,
//! written when such a rule is added), with the service's own credentials. It removes only
//! rules whose signed marker verifies (see [`crate::whitelist::marker`]); a rule whose marker
//! does not is reported by the service (`marker_invalid` warning, `awswl_marker_invalid_total`)
//! and left alone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use super::expiry_index::{read_index, Target};
use crate::whitelist::{Scope, Whitelist};

const LOCK: &str = "sweeper.lock";

/// What the sweeper needs besides the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory (lock and index).
    pub state_dir: PathBuf,
    /// Time between sweeps.
    pub interval: Duration,
    /// Groups always swept.
    pub groups: Vec<String>,
}

/// Runs forever: takes the lock when it is free, then sweeps on every tick.
pub async fn run(service: Arc<Whitelist>, config: Config) {
    let mut lock: Option<Flock<File>> = None;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if lock.is_none() {
            lock = try_lock(&config.state_dir);
            if lock.is_some() {
                info!(event = "sweeper_lock", "this worker sweeps expired rules");
            } else {
                continue;
            }
        }
        let mut targets = read_index(&config.state_dir);
        targets.extend(config.groups.iter().map(|g| Target {
            group: g.clone(),
            region: None,
            profile: None,
        }));
        for t in targets {
            let scope = Scope { profile: t.profile.clone(), region: t.region.clone(), keys: None };
            match service.sweep(&scope, &t.group, SystemTime::now()).await {
                Ok(removed) if !removed.is_empty() => {
                    let ids: Vec<&str> = removed.iter().map(|r| r.rule_id.as_str()).collect();
                    info!(event = "rules_expired", group = %t.group, count = removed.len(), rules = ?ids, "removed expired rules from {}", t.group);
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(event = "sweep_failed", group = %t.group, error = %e, "cannot sweep {}: {e}", t.group)
                }
            }
        }
    }
}

fn try_lock(state_dir: &Path) -> Option<Flock<File>> {
    let file = match super::state_file::open(&state_dir.join(LOCK)) {
        Ok(file) => file,
        Err(e) => {
            warn!(event = "sweeper_lock_failed", error = %e, "{e}");
            return None;
        }
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_holder_of_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_lock(dir.path());
        assert!(first.is_some());
        assert!(try_lock(dir.path()).is_none());
        drop(first);
        assert!(try_lock(dir.path()).is_some());
    }

    #[test]
    fn the_lock_file_is_private_and_never_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(try_lock(dir.path()).is_some());
        let mode = std::fs::metadata(dir.path().join(LOCK)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let other = tempfile::tempdir().unwrap();
        let victim = other.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, other.path().join(LOCK)).unwrap();
        assert!(try_lock(other.path()).is_none(), "a symlinked lock file was followed");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
