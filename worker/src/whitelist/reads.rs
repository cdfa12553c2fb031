//! Reading a group's rules: fresh from EC2 for writes and the sweeper; for reads, the cache,
//! refreshed by one caller per worker (stale served meanwhile, within one more `cache_ttl`) and
//! by one worker per host (the shared read another worker stored is taken while fresh).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{cache_key, Error, Lookup, Rules, Scope, SharedRead, Whitelist};

impl Whitelist {
    /// The group's rules read from EC2 now (writes and the sweeper: never a cached answer).
    pub(super) async fn fresh(&self, scope: &Scope, group: &str) -> Result<Rules, Error> {
        let version = self.versions.current(group).await;
        let rules = Arc::new(self.firewall.list(scope, group).await?);
        self.cache.put(&cache_key(scope, group), version, rules.clone());
        Ok(rules)
    }

    /// The group's rules for a read: cached while fresh; past the TTL, one caller of the worker
    /// refreshes while the others are served the stale entry (see `cache`); with nothing usable,
    /// the others wait for that one. The refresh itself is single-flighted across the host.
    pub(super) async fn cached(&self, scope: &Scope, group: &str) -> Result<Rules, Error> {
        let metrics = crate::metrics::global();
        if self.cache.ttl().is_zero() {
            return self.fresh(scope, group).await;
        }
        let key = cache_key(scope, group);
        let _lead = match self.cache.lookup(&key, self.versions.current(group).await) {
            Lookup::Fresh(rules) => {
                metrics.cache_hits.inc();
                return Ok(rules);
            }
            Lookup::Stale(rules) => match self.flights.try_lead(&key) {
                Some(lead) => lead,
                None => {
                    metrics.cache_hits.inc();
                    return Ok(rules);
                }
            },
            Lookup::Miss => self.flights.lead(&key).await,
        };
        // The leader before us may have refreshed it while we waited.
        if let Some(rules) = self.cache.get(&key, self.versions.current(group).await) {
            metrics.cache_hits.inc();
            return Ok(rules);
        }
        metrics.cache_misses.inc();
        self.refresh(scope, group, &key).await
    }

    /// Reads the group for every worker of the host: under the host's lead on `key`, the read
    /// another worker stored is taken if it is still fresh; else EC2 is asked and the answer
    /// stored. Without a lead (its file cannot be locked), this worker reads alone. Reads made
    /// with a call's own keys are not shared: there is no bound on how many keys callers bring,
    /// and each would leave its files in `state_dir`.
    async fn refresh(&self, scope: &Scope, group: &str, key: &str) -> Result<Rules, Error> {
        if scope.keys.is_some() {
            return self.fresh(scope, group).await;
        }
        let host_lead = match self.shared.lead(key).await {
            Ok(lead) => Some(lead),
            Err(e) => {
                warn!(
                    event = "shared_read_unavailable",
                    group, "reading {group} without the host's single flight: {e}"
                );
                None
            }
        };
        let version = self.versions.current(group).await;
        let now = SystemTime::now();
        if let Some(read) = self.shared.load(key, version).await {
            let fetched = SystemTime::UNIX_EPOCH + Duration::from_millis(read.fetched_ms);
            let age = now.duration_since(fetched).ok().filter(|age| *age < self.cache.ttl());
            if let Some(fetched) = age.and_then(|age| std::time::Instant::now().checked_sub(age)) {
                let rules = Arc::new(read.rules);
                self.cache.put_at(key, version, fetched, rules.clone());
                return Ok(rules);
            }
        }
        let rules = self.fresh(scope, group).await?;
        let fetched_ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if host_lead.is_some() {
            self.shared.store(key, &SharedRead { version, fetched_ms, rules: rules.to_vec() }).await;
        }
        Ok(rules)
    }
}
