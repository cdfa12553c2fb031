//! Removes expired rules: one sweeper for the whole host, whichever worker holds the sweeper
//! lock (an `flock` released when that worker exits, so the next one takes over), at boot and
//! then every `sweep_interval`.
//!
//! It looks at the groups named in `sweep_groups`, the exact ids in `allowed_security_groups`,
//! and every group this service has given an expiring rule (an index file in the state dir,
//! written when such a rule is added), with the service's own credentials.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::whitelist::{Scope, Whitelist};

const INDEX: &str = "expiring-groups.jsonl";
const LOCK: &str = "sweeper.lock";

/// One group to sweep, and the account scope to sweep it with (never per-call keys).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    /// The group.
    pub group: String,
    /// Region it lives in, if not the default.
    pub region: Option<String>,
    /// Credential profile, if not the default chain.
    pub profile: Option<String>,
}

/// Records that `group` holds an expiring rule, so the sweeper will look at it.
pub fn note_expiring(state_dir: &Path, scope: &Scope, group: &str) -> io::Result<()> {
    let target =
        Target { group: group.to_string(), region: scope.region.clone(), profile: scope.profile.clone() };
    if read_index(state_dir).contains(&target) {
        return Ok(());
    }
    let mut line = serde_json::to_vec(&target).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new().create(true).append(true).open(state_dir.join(INDEX))?;
    f.write_all(&line)
}

fn read_index(state_dir: &Path) -> BTreeSet<Target> {
    let Ok(f) = File::open(state_dir.join(INDEX)) else { return BTreeSet::new() };
    BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect()
}

/// What the sweeper needs besides the service.
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
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(state_dir.join(LOCK)).ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_keeps_each_target_once() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope { profile: None, region: Some("eu-west-1".into()), keys: None };
        note_expiring(dir.path(), &scope, "sg-12345678").unwrap();
        note_expiring(dir.path(), &scope, "sg-12345678").unwrap();
        note_expiring(dir.path(), &Scope { region: None, ..scope }, "sg-12345678").unwrap();
        assert_eq!(read_index(dir.path()).len(), 2);
    }

    #[test]
    fn only_one_holder_of_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_lock(dir.path());
        assert!(first.is_some());
        assert!(try_lock(dir.path()).is_none());
        drop(first);
        assert!(try_lock(dir.path()).is_some());
    }
}
