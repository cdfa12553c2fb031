//! Per-group locks for a fleet (`[redis]`): an add under `max_rules_per_group` counts the
//! group's rules and adds one while no other worker of any host can. The host's `flock` is
//! taken first (the host's workers queue in the kernel), then the group's fleet lock
//! ([`FleetLock`]: a token, a lifetime renewed while held, compare-and-delete release).
//!
//! While Redis does not answer, the host's lock alone is held (counted in
//! `redis_fallbacks_total{feature="group_lock",mode="host"}`): each host then counts exactly,
//! but two hosts adding to the same group at the same moment may together pass the cap by up to
//! one rule per extra host (EC2's own per-group limit still holds).

use std::sync::Arc;
use std::time::Duration;

use super::GroupLockFiles;
use crate::fleet::lock::{FleetLock, LockError};
use crate::fleet::{keys, Fleet};
use crate::whitelist::{GroupGuard, GroupLockFuture, GroupLocks};

/// A fleet lock's lifetime without renewal: how long a dead holder blocks the others.
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(10);
/// Longest wait for a fleet lock held elsewhere.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Group locks held on the host and in Redis.
pub struct FleetGroupLocks {
    fleet: Arc<Fleet>,
    host: GroupLockFiles,
}

impl FleetGroupLocks {
    /// The host's `host` locks, joined with the fleet's in `fleet`.
    pub fn new(fleet: Arc<Fleet>, host: GroupLockFiles) -> FleetGroupLocks {
        FleetGroupLocks { fleet, host }
    }
}

/// Adds the fleet lock `key` to the host's `held` guard; on Redis failure the host's guard
/// alone, counted as `feature`'s fallback.
pub(crate) async fn with_fleet_lock(
    fleet: &Arc<Fleet>,
    held: Box<dyn Send>,
    key: String,
    feature: &str,
) -> Result<Box<dyn Send>, String> {
    match FleetLock::acquire(fleet, key, LOCK_TTL, LOCK_WAIT).await {
        Ok(lock) => Ok(Box::new((held, lock))),
        Err(LockError::Redis(_)) => {
            crate::metrics::global().redis_fallbacks.with_label_values(&[feature, "host"]).inc();
            Ok(held)
        }
        Err(e @ LockError::Busy(_)) => Err(e.to_string()),
    }
}

impl GroupLocks for FleetGroupLocks {
    fn hold<'a>(&'a self, group: &'a str) -> GroupLockFuture<'a> {
        Box::pin(async move {
            let held = self.host.hold(group).await?;
            with_fleet_lock(&self.fleet, held, keys::group_lock(group), "group_lock")
                .await
                .map_err(|e| format!("the lock of {group}: {e}"))
                .map(|g| g as GroupGuard)
        })
    }
}
