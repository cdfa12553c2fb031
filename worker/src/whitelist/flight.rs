//! Single flight for group reads: however many callers miss a group's cache entry at once, on
//! however many workers of the host, one of them asks EC2 and the others take its answer.
//!
//! Two levels. In a worker, one task per cache key leads ([`Flights`]); the others wait for it
//! (or, while the entry is only past its `cache_ttl` and not changed, are served the old entry —
//! see [`super::cache`]). Across the host's workers, the leader takes the host's read lock on the
//! key and looks at the read the last leader stored ([`SharedReads`]); only if that is stale does
//! it call EC2, and it stores what it got for the next. The host implements [`SharedReads`] with
//! files in `state_dir`; a fleet-wide one (Redis) fits the same trait.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::rules::ExistingRule;

/// Held while this caller is the one reader of a key on the host (or fleet); dropping releases.
pub type ReadGuard = Box<dyn Send>;
/// Resolves once this caller leads the key's read; an error says why no lead could be taken.
pub type ReadLeadFuture<'a> = Pin<Box<dyn Future<Output = Result<ReadGuard, String>> + Send + 'a>>;

/// One read of a group, as stored for the other readers of the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedRead {
    /// The group's change counter, read before the EC2 call.
    pub version: u64,
    /// When the EC2 call started, in milliseconds since the Unix epoch.
    pub fetched_ms: u64,
    /// What EC2 answered.
    pub rules: Vec<ExistingRule>,
}

/// Reads shared by the workers of a host (or fleet): a lead per key and the last read stored.
pub trait SharedReads: Send + Sync {
    /// Waits until this caller leads the read of `key` (an opaque `[a-z0-9-]` name).
    fn lead<'a>(&'a self, key: &'a str) -> ReadLeadFuture<'a>;
    /// The read the last leader of `key` stored, if any was made under change counter
    /// `version` (the caller's; the read comes back with it), called while leading.
    fn load<'a>(&'a self, key: &'a str, version: u64) -> BoxFuture<'a, Option<SharedRead>>;
    /// Stores a read for the next leader (called while leading); failures cost only a read.
    fn store<'a>(&'a self, key: &'a str, read: &'a SharedRead) -> BoxFuture<'a, ()>;
}

/// Nothing shared: every leader reads EC2 itself (one worker alone, tests).
pub struct NotShared;

impl SharedReads for NotShared {
    fn lead<'a>(&'a self, _: &'a str) -> ReadLeadFuture<'a> {
        Box::pin(async { Ok(Box::new(()) as ReadGuard) })
    }
    fn load<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Option<SharedRead>> {
        Box::pin(async { None })
    }
    fn store<'a>(&'a self, _: &'a str, _: &'a SharedRead) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Most keys with a lead slot kept; past it, the idle ones are dropped.
const SLOTS_MAX: usize = 1024;

/// The in-worker lead per cache key.
#[derive(Default)]
pub struct Flights(Mutex<HashMap<String, Arc<AsyncMutex<()>>>>);

impl Flights {
    fn slot(&self, key: &str) -> Arc<AsyncMutex<()>> {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= SLOTS_MAX && !slots.contains_key(key) {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(key.to_string()).or_default().clone()
    }

    /// The lead of `key` if nobody in this worker has it now.
    pub fn try_lead(&self, key: &str) -> Option<OwnedMutexGuard<()>> {
        self.slot(key).try_lock_owned().ok()
    }

    /// Waits for the lead of `key`.
    pub async fn lead(&self, key: &str) -> OwnedMutexGuard<()> {
        self.slot(key).lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_per_key_in_a_worker() {
        let f = Flights::default();
        let held = f.try_lead("a").expect("free");
        assert!(f.try_lead("a").is_none(), "a second leader");
        assert!(f.try_lead("b").is_some(), "keys are independent");
        drop(held);
        let _again = f.lead("a").await;
    }
}
