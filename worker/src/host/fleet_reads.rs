//! The single flight of group reads for a fleet (`[redis]`): the lead of a cache key is the
//! host's lock file and then a fleet lock in Redis, and the read the leader stores goes to
//! Redis (`SET … PX`, kept a little longer than the cache lives), keyed by the cache key and
//! carrying the change counter it was read under, so the next leader anywhere takes it while
//! it is fresh and unchanged (see `whitelist::reads`). A change Redis did not hear of (made
//! while it was down) is told to it as soon as it answers again (`fleet_versions`), so a read
//! stored before it is not taken for fresh afterwards.
//!
//! While Redis does not answer, the host's files do it all (counted in
//! `redis_fallbacks_total{feature="read_flight",mode="host"}`): one reader per host instead of
//! one per fleet. Staleness is not at stake either way: the change counters decide freshness.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;

use super::fleet_group_locks::with_fleet_lock;
use super::fleet_versions::fleet_part;
use super::ReadFiles;
use crate::fleet::{keys, Fleet};
use crate::whitelist::flight::{ReadGuard, ReadLeadFuture, SharedRead, SharedReads};

static GET: LazyLock<Script> = LazyLock::new(|| Script::new("return redis.call('GET', KEYS[1])"));
static SET: LazyLock<Script> =
    LazyLock::new(|| Script::new("return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])"));

/// Reads shared through Redis, the host's files as fallback.
pub struct FleetReads {
    fleet: Arc<Fleet>,
    host: ReadFiles,
    keep_ms: u64,
}

impl FleetReads {
    /// Reads shared through `fleet`, kept `cache_ttl` and a second; `host` is the fallback.
    pub fn new(fleet: Arc<Fleet>, host: ReadFiles, cache_ttl: Duration) -> FleetReads {
        let keep_ms = u64::try_from((cache_ttl + Duration::from_secs(1)).as_millis()).unwrap_or(u64::MAX);
        FleetReads { fleet, host, keep_ms }
    }

    fn fell_back(&self) {
        crate::metrics::global().redis_fallbacks.with_label_values(&["read_flight", "host"]).inc();
    }
}

impl SharedReads for FleetReads {
    fn lead<'a>(&'a self, key: &'a str) -> ReadLeadFuture<'a> {
        Box::pin(async move {
            let held = self.host.lead(key).await?;
            with_fleet_lock(&self.fleet, held, keys::read_lead(key), "read_flight")
                .await
                .map(|g| g as ReadGuard)
        })
    }

    fn load<'a>(&'a self, key: &'a str, version: u64) -> BoxFuture<'a, Option<SharedRead>> {
        Box::pin(async move {
            match self.fleet.eval::<Option<String>, u64>(&GET, &[&keys::shared_read(key)], &[]).await {
                // Another host's read carries its own host's counter in the low half: only the
                // fleet's half says whether a change came after it.
                Ok(text) => text
                    .and_then(|t| serde_json::from_str::<SharedRead>(&t).ok())
                    .filter(|r| fleet_part(r.version).is_some_and(|f| Some(f) == fleet_part(version)))
                    .map(|r| SharedRead { version, ..r }),
                Err(_) => {
                    self.fell_back();
                    self.host.read_file(key).filter(|r| r.version == version)
                }
            }
        })
    }

    fn store<'a>(&'a self, key: &'a str, read: &'a SharedRead) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(text) = serde_json::to_string(read) else { return };
            let args = [text.as_str(), &self.keep_ms.to_string()];
            if self.fleet.eval::<(), &str>(&SET, &[&keys::shared_read(key)], &args).await.is_err() {
                self.fell_back();
                self.host.write_file(key, read);
            }
        })
    }
}
