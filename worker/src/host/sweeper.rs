//! Removes expired rules: one sweeper for the whole host, whichever worker holds the sweeper
//! lock (an `flock` released when that worker exits, so the next one takes over), at boot and
//! then every `sweep_interval`. With `[redis]`, one sweeper for the whole fleet: the lock
//! holder of the host that holds the fleet's lease (see [`super::fleet_sweep`]).
//!
//! It looks at the groups named in `sweep_groups`, the exact ids in `allowed_security_groups`
//! and `allowed_prefix_lists`, and every group (or managed prefix list) this service has given an
//! expiring rule (an index file in the state dir, written when such a rule is added), with the
//! service's own credentials; an expired prefix-list entry goes like an expired rule. It removes only
//! rules whose signed marker verifies (see [`crate::whitelist::marker`]); a rule whose marker
//! does not is reported by the service (`marker_invalid` warning, `awswl_marker_invalid_total`)
//! and left alone.
//!
//! Before each sweep it completes the changes whose intent is in the audit log without an
//! outcome (see `whitelist::reconcile`), once their writer is dead (checked by pid) and
//! [`DEAD_WRITER_GRACE`] has passed, or once [`ABANDONED_AFTER`] has passed whatever the pid
//! says (a pid may be reused; a live worker may have failed to write the outcome).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::sync::watch;
use tracing::{info, warn};

use super::expiry_index::{read_index, Target};
use super::fleet_sweep::{FleetSweep, Turn};
use crate::fleet::Fleet;
use crate::whitelist::audit::LoggedEntry;
use crate::whitelist::{Error, Scope, Whitelist};

const LOCK: &str = "sweeper.lock";

/// How long after its intent a change by a dead process is reconciled: time for an AWS call it
/// sent just before dying to have landed.
pub const DEAD_WRITER_GRACE: Duration = Duration::from_secs(30);

/// How long after its intent a change is reconciled even if its writer seems alive: far longer
/// than any AWS call (with retries) takes.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(15 * 60);

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

/// Runs forever: takes the host's lock when it is free, then sweeps every `interval`. With
/// `fleet`, the lock holder of each host also takes turns for the fleet's lease (see
/// [`super::fleet_sweep`]), and only the lease holder sweeps, the fleet's whole index.
/// When `drain` turns true (the worker drains), the fleet's lease is given up at once, so
/// another host need not wait for it to expire.
pub async fn run(
    service: Arc<Whitelist>,
    config: Config,
    fleet: Option<Arc<Fleet>>,
    drain: Option<watch::Receiver<bool>>,
) {
    let mut lock: Option<Flock<File>> = None;
    let mut fleet = fleet.map(FleetSweep::new);
    let every = fleet.as_ref().map_or(config.interval, |f| f.every().min(config.interval));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_sweep = Instant::now();
    let mut last_turn = None;
    let mut draining = Box::pin(drained(drain));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut draining => {
                if let Some(f) = &fleet {
                    f.release().await;
                }
                return;
            }
        }
        if lock.is_none() {
            lock = try_lock(&config.state_dir);
            if lock.is_some() {
                info!(event = "sweeper_lock", "this worker sweeps expired rules");
            } else {
                continue;
            }
        }
        let local = read_index(&config.state_dir);
        let turn = match &mut fleet {
            Some(f) => f.turn(&local).await,
            None => Turn::Host,
        };
        // A host that has just taken the lease over sweeps at once.
        if turn == Turn::Fleet && last_turn != Some(Turn::Fleet) {
            next_sweep = Instant::now();
        }
        last_turn = Some(turn);
        if Instant::now() < next_sweep {
            continue;
        }
        next_sweep = Instant::now() + config.interval;
        // This host's audit log: its lock holder completes its intents, whoever sweeps.
        reconcile(&service).await;
        let mut targets = match (turn, &fleet) {
            (Turn::Fleet, Some(f)) => match f.fleet_targets().await {
                Ok(fleet_index) => fleet_index,
                Err(e) => {
                    warn!(event = "sweep_failed", error = %e, "cannot read the fleet's expiry index: {e}");
                    continue;
                }
            },
            (Turn::Host, _) => BTreeSet::new(),
            _ => continue,
        };
        targets.extend(local);
        targets.extend(config.groups.iter().map(|g| Target {
            group: g.clone(),
            region: None,
            profile: None,
        }));
        for t in targets {
            let scope = Scope { profile: t.profile.clone(), region: t.region.clone(), keys: None };
            let swept = match (turn, &fleet) {
                (Turn::Fleet, Some(f)) => {
                    service.sweep_fenced(&scope, &t.group, SystemTime::now(), &f.fence()).await
                }
                _ => service.sweep(&scope, &t.group, SystemTime::now()).await,
            };
            match swept {
                Ok(removed) if !removed.is_empty() => {
                    let ids: Vec<&str> = removed.iter().map(|r| r.rule_id.as_str()).collect();
                    info!(event = "rules_expired", group = %t.group, count = removed.len(), rules = ?ids, "removed expired rules from {}", t.group);
                }
                Ok(_) => {}
                Err(e @ Error::Unavailable(_)) => {
                    warn!(event = "sweep_stopped", group = %t.group, error = %e, "{e}");
                    break;
                }
                Err(e) => {
                    warn!(event = "sweep_failed", group = %t.group, error = %e, "cannot sweep {}: {e}", t.group)
                }
            }
        }
    }
}

/// Resolves when the worker starts draining; never without a drain signal.
async fn drained(drain: Option<watch::Receiver<bool>>) {
    match drain {
        Some(mut rx) => {
            if rx.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Completes intents left without an outcome, logging what it found.
async fn reconcile(service: &Whitelist) {
    let settled = |e: &LoggedEntry| settled(e, SystemTime::now());
    match service.reconcile(&settled).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(r) => {
                        info!(event = "change_reconciled", id = %r.id, group = %r.group, found = %r.found, "completed change {} in {}: {}", r.id, r.group, r.found)
                    }
                    Err(e) => warn!(event = "reconcile_failed", error = %e, "{e}"),
                }
            }
        }
        Err(e) => {
            warn!(event = "reconcile_failed", error = %e, "cannot read the audit log to reconcile: {e}")
        }
    }
}

/// Whether an intent's writer can no longer be making the change.
fn settled(intent: &LoggedEntry, now: SystemTime) -> bool {
    let age = intent.written().and_then(|t| now.duration_since(t).ok()).unwrap_or(Duration::MAX);
    age >= ABANDONED_AFTER || (age >= DEAD_WRITER_GRACE && !alive(intent.pid))
}

fn alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => kill(Pid::from_raw(p), None) != Err(Errno::ESRCH),
        _ => false,
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

    #[test]
    fn an_intent_is_settled_when_its_writer_is_dead_or_it_is_long_abandoned() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let now = SystemTime::now();
        let at = |ago: u64, pid: u32| LoggedEntry {
            time: humantime::format_rfc3339_millis(now - Duration::from_secs(ago)).to_string(),
            pid,
            ..LoggedEntry::default()
        };
        let (me, dead) = (std::process::id(), child.id());
        assert!(!settled(&at(60, me), now), "a live writer may still be making it");
        assert!(settled(&at(ABANDONED_AFTER.as_secs(), me), now), "abandoned whatever the pid says");
        assert!(!settled(&at(1, dead), now), "an AWS call sent just before dying may still land");
        assert!(settled(&at(DEAD_WRITER_GRACE.as_secs(), dead), now));
    }
}
