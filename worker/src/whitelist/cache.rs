//! A short per-group read cache whose entries are checked against a change counter that
//! every worker of the host shares, so a read after a change is never served stale — not even
//! by another worker that has not heard of the change yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::rules::ExistingRule;

/// Change counters shared by the workers of a host (a memory-mapped file in production) and,
/// with `[redis]`, by every host of the fleet.
pub trait Versions: Send + Sync {
    /// The current counter of `key` on this host.
    fn get(&self, key: &str) -> u64;
    /// Marks `key` changed on this host.
    fn bump(&self, key: &str);
    /// The counter a cache entry is checked against: the host's, unless the counters are
    /// shared by a fleet (then it may ask Redis). What the service calls.
    fn current<'a>(&'a self, key: &'a str) -> BoxFuture<'a, u64> {
        Box::pin(async move { self.get(key) })
    }
    /// Marks `key` changed wherever the counters are shared. What the service calls.
    fn changed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.bump(key) })
    }
}

/// Counters in this process only (stdio mode and tests).
#[derive(Default)]
pub struct LocalVersions(Mutex<HashMap<String, u64>>);

impl Versions for LocalVersions {
    fn get(&self, key: &str) -> u64 {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()).get(key).unwrap_or(&0)
    }
    fn bump(&self, key: &str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default() += 1;
    }
}

struct Entry {
    fetched: Instant,
    version: u64,
    rules: Vec<ExistingRule>,
}

/// Rules per (account scope, group), valid for `ttl` and until the group's counter moves.
pub struct GroupCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl GroupCache {
    /// A cache whose entries live at most `ttl` (zero disables caching).
    pub fn new(ttl: Duration) -> GroupCache {
        GroupCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The cached rules for `key`, if fresh and read at the group's `current` counter.
    pub fn get(&self, key: &str, current: u64) -> Option<Vec<ExistingRule>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(key)?;
        (e.fetched.elapsed() < self.ttl && e.version == current).then(|| e.rules.clone())
    }

    /// Stores rules read when the counter was `version` (read the counter before the AWS call,
    /// so a change racing the read makes the entry stale rather than wrong).
    pub fn put(&self, key: &str, version: u64, rules: Vec<ExistingRule>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.fetched.elapsed() < self.ttl);
        entries.insert(key.to_string(), Entry { fetched: Instant::now(), version, rules });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_die_with_a_bump_or_the_ttl() {
        let v = LocalVersions::default();
        let c = GroupCache::new(Duration::from_secs(60));
        c.put("k", v.get("sg-1"), vec![]);
        assert!(c.get("k", v.get("sg-1")).is_some());
        v.bump("sg-1");
        assert!(c.get("k", v.get("sg-1")).is_none(), "a change anywhere invalidates");
        let none = GroupCache::new(Duration::ZERO);
        none.put("k", 0, vec![]);
        assert!(none.get("k", 0).is_none());
    }
}
