//! Change counters for a fleet: the host's memory-mapped counters ([`ChangeCounters`]) stay the
//! fast path for changes made on this host, and a per-group counter in Redis (`INCR` on every
//! change, read on every cache check) makes a change on any host invalidate the cache on every
//! host. While Redis does not answer, every check misses (each read goes to AWS): never stale,
//! only slower. A change Redis did not hear of is told to it (`INCR`) by the worker that made it
//! at that worker's next check of the group once Redis answers, so reads stored in the fleet
//! before the change are not taken for fresh afterwards.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use redis::Script;

use super::ChangeCounters;
use crate::fleet::{keys, Fleet};
use crate::whitelist::cache::Versions;

const READ: &str = "return tonumber(redis.call('GET', KEYS[1]) or '0') or 0";
const INCR: &str = "return redis.call('INCR', KEYS[1])";
/// Most groups remembered as changed without Redis hearing of it.
const UNHEARD_MAX: usize = 4096;

/// The host's counters, joined with the fleet's.
pub struct FleetVersions {
    local: ChangeCounters,
    fleet: Arc<Fleet>,
    read: Script,
    incr: Script,
    /// Values no cache entry was stored under, handed out while Redis is down.
    misses: AtomicU64,
    /// Groups changed by this worker while Redis did not hear of it.
    unheard: Mutex<HashSet<String>>,
}

impl FleetVersions {
    /// Joins the host's `local` counters with the fleet's.
    pub fn new(local: ChangeCounters, fleet: Arc<Fleet>) -> FleetVersions {
        FleetVersions {
            local,
            fleet,
            read: Script::new(READ),
            incr: Script::new(INCR),
            misses: AtomicU64::new(0),
            unheard: Mutex::new(HashSet::new()),
        }
    }

    /// A value that matches no stored entry: the high bit set (a joined counter never has it
    /// in practice) and never the same twice.
    fn miss(&self) -> u64 {
        crate::metrics::global().redis_fallbacks.with_label_values(&["cache", "no_cache"]).inc();
        (1 << 63) | self.misses.fetch_add(1, Ordering::Relaxed)
    }
}

/// The fleet's half of a joined counter; `None` for a miss, which matches nothing.
pub fn fleet_part(joined: u64) -> Option<u64> {
    (joined >> 63 == 0).then_some(joined >> 32)
}

/// The fleet's counter in the high half, the host's in the low half: either moving changes it.
pub fn joined(fleet: u64, local: u64) -> u64 {
    ((fleet & 0x7fff_ffff) << 32) | (local & 0xffff_ffff)
}

impl Versions for FleetVersions {
    fn get(&self, key: &str) -> u64 {
        self.local.get(key)
    }

    fn bump(&self, key: &str) {
        self.local.bump(key);
    }

    fn current<'a>(&'a self, key: &'a str) -> BoxFuture<'a, u64> {
        Box::pin(async move {
            let local = self.local.get(key);
            let unheard = self.unheard.lock().unwrap_or_else(PoisonError::into_inner).contains(key);
            if unheard {
                let counter = keys::change_counter(key);
                if self.fleet.eval::<u64, u64>(&self.incr, &[&counter], &[]).await.is_err() {
                    return self.miss();
                }
                self.unheard.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
            }
            match self.fleet.eval::<u64, u64>(&self.read, &[&keys::change_counter(key)], &[]).await {
                Ok(fleet) => joined(fleet, local),
                Err(_) => self.miss(),
            }
        })
    }

    fn changed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.local.bump(key);
            // A change Redis did not hear of: the other hosts still see it within cache_ttl,
            // and while Redis is down they do not cache at all.
            if self.fleet.eval::<u64, u64>(&self.incr, &[&keys::change_counter(key)], &[]).await.is_err() {
                crate::metrics::global().redis_fallbacks.with_label_values(&["cache", "no_cache"]).inc();
                let mut unheard = self.unheard.lock().unwrap_or_else(PoisonError::into_inner);
                // Bounded: past it, the oldest are forgotten (they cost staleness within cache_ttl).
                if unheard.len() >= UNHEARD_MAX {
                    unheard.clear();
                }
                unheard.insert(key.to_string());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_counter_moving_changes_the_joined_one() {
        assert_ne!(joined(0, 1), joined(0, 2));
        assert_ne!(joined(1, 1), joined(2, 1));
        assert_eq!(joined(3, 4), joined(3, 4));
        assert_eq!(joined(u64::MAX, 0) >> 63, 0, "never the bit that marks a miss");
        assert_eq!(fleet_part(joined(7, 1)), fleet_part(joined(7, 9)), "hosts differ in the low half only");
        assert_ne!(fleet_part(joined(7, 1)), fleet_part(joined(8, 1)));
        assert_eq!(fleet_part((1 << 63) | 5), None, "a miss matches nothing");
    }
}
