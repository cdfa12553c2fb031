//! Consumed consent states for a fleet (`[redis]`): one key per nonce, set with `SET NX PX`
//! until the state's expiry, so exactly one retry in the whole fleet consumes a state and any
//! replay, on any host, finds the key taken.
//!
//! While Redis does not answer, `[redis] consent_fallback` decides. `fail_closed` (the
//! default) refuses the answer, naming the setting: the person is asked again once Redis is
//! back, and a consent is never honoured twice. `host` records it in this host's files
//! ([`NonceFiles`]): honoured once per host, so a replay reaching another host during the
//! outage could be honoured again (the same caller, the same change, within the state's life).
//! Either way the decision is counted in `redis_fallbacks_total{feature="consent",mode}`.

use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use redis::Script;

use super::consent_nonces::check_nonce;
use super::NonceFiles;
use crate::fleet::{keys, ConsentFallback, Fleet};
use crate::whitelist::NonceStore;

/// KEYS: the nonce's key. ARGV: lifetime (ms). 1 the first time, 0 after.
static CONSUME: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end return 0")
});

/// Consent nonces in Redis, with this host's files as the configured fallback.
pub struct FleetNonces {
    fleet: Arc<Fleet>,
    host: NonceFiles,
}

impl FleetNonces {
    /// Nonces in `fleet`'s Redis; `host` serves `consent_fallback = "host"`.
    pub fn new(fleet: Arc<Fleet>, host: NonceFiles) -> FleetNonces {
        FleetNonces { fleet, host }
    }
}

impl NonceStore for FleetNonces {
    fn consume<'a>(&'a self, nonce: &'a str, until: SystemTime) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            check_nonce(nonce)?;
            // Kept a second past the expiry: a state is refused as expired by then anyway.
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).saturating_add(1000);
            let first: Result<i64, _> =
                self.fleet.eval(&CONSUME, &[&keys::consent_nonce(nonce)], &[ms]).await;
            let e = match first {
                Ok(first) => return Ok(first == 1),
                Err(e) => e,
            };
            let fallbacks = &crate::metrics::global().redis_fallbacks;
            match self.fleet.settings().consent_fallback {
                ConsentFallback::FailClosed => {
                    fallbacks.with_label_values(&["consent", "fail_closed"]).inc();
                    Err(format!(
                        "the fleet keeps used consents in Redis, which does not answer ({e}); answers are \
                         refused until it does ([redis] consent_fallback = \"host\" accepts them on this \
                         host's records meanwhile); ask again shortly"
                    ))
                }
                ConsentFallback::Host => {
                    fallbacks.with_label_values(&["consent", "host"]).inc();
                    self.host.record(nonce, until)
                }
            }
        })
    }
}
