//! A short per-group read cache whose entries are checked against a change counter that
//! every worker of the host shares, so a read after a change is never served stale — not even
//! by another worker that has not heard of the change yet.
//!
//! An entry is fresh for `cache_ttl`. For one more `cache_ttl` after that, and only while its
//! counter has not moved, it is *stale*: served to the callers that arrive while one caller
//! refreshes it (see [`super::flight`]), so an expiry never makes every caller wait for EC2.
//! A read is therefore at most `2 × cache_ttl` old, and only for changes made outside this
//! host (a change through any worker of the host moves the counter: the next read is fresh).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::rules::ExistingRule;

/// Change counters shared by the workers of a host (a memory-mapped file in production).
pub trait Versions: Send + Sync {
    /// The current counter of `key`.
    fn get(&self, key: &str) -> u64;
    /// Marks `key` changed.
    fn bump(&self, key: &str);
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

/// A group's rules as read once, shared by every caller served from that read.
pub type Rules = Arc<Vec<ExistingRule>>;

struct Entry {
    fetched: Instant,
    version: u64,
    rules: Rules,
}

/// What the cache holds for a key at the group's current counter.
pub enum Lookup {
    /// Younger than the TTL: serve it.
    Fresh(Rules),
    /// Past the TTL by less than another TTL, counter unchanged: serve it while someone refreshes.
    Stale(Rules),
    /// Nothing usable: read.
    Miss,
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

    /// The lifetime of a fresh entry.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The cached rules for `key`, if fresh and read at the group's `current` counter.
    pub fn get(&self, key: &str, current: u64) -> Option<Rules> {
        match self.lookup(key, current) {
            Lookup::Fresh(rules) => Some(rules),
            _ => None,
        }
    }

    /// What the cache has for `key` at the group's `current` counter.
    pub fn lookup(&self, key: &str, current: u64) -> Lookup {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = entries.get(key).filter(|e| e.version == current) else {
            return Lookup::Miss;
        };
        let age = e.fetched.elapsed();
        if age < self.ttl {
            Lookup::Fresh(e.rules.clone())
        } else if age < self.ttl * 2 {
            Lookup::Stale(e.rules.clone())
        } else {
            Lookup::Miss
        }
    }

    /// Stores rules read when the counter was `version` (read the counter before the AWS call,
    /// so a change racing the read makes the entry stale rather than wrong).
    pub fn put(&self, key: &str, version: u64, rules: Rules) {
        self.put_at(key, version, Instant::now(), rules);
    }

    /// Stores rules read at `fetched` (another worker's read keeps its own age).
    pub fn put_at(&self, key: &str, version: u64, fetched: Instant, rules: Rules) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.fetched.elapsed() < self.ttl * 2);
        entries.insert(key.to_string(), Entry { fetched, version, rules });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_die_with_a_bump_or_the_ttl() {
        let v = LocalVersions::default();
        let c = GroupCache::new(Duration::from_secs(60));
        c.put("k", v.get("sg-1"), Rules::default());
        assert!(c.get("k", v.get("sg-1")).is_some());
        v.bump("sg-1");
        assert!(c.get("k", v.get("sg-1")).is_none(), "a change anywhere invalidates");
        let none = GroupCache::new(Duration::ZERO);
        none.put("k", 0, Rules::default());
        assert!(none.get("k", 0).is_none());
    }

    #[test]
    fn past_the_ttl_an_unchanged_entry_is_stale_for_one_more_ttl() {
        let ttl = Duration::from_secs(10);
        let c = GroupCache::new(ttl);
        let now = Instant::now();
        let at = |age: Duration| now.checked_sub(age).unwrap();
        c.put_at("k", 1, at(Duration::from_secs(5)), Rules::default());
        assert!(matches!(c.lookup("k", 1), Lookup::Fresh(_)));
        c.put_at("k", 1, at(Duration::from_secs(15)), Rules::default());
        assert!(matches!(c.lookup("k", 1), Lookup::Stale(_)));
        assert!(matches!(c.lookup("k", 2), Lookup::Miss), "a change is never served stale");
        c.put_at("k", 1, at(Duration::from_secs(25)), Rules::default());
        assert!(matches!(c.lookup("k", 1), Lookup::Miss), "stale for at most one more TTL");
    }
}
