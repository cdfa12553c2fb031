//! Per-client rate limits with burst, exact across every worker process of a host — and, with
//! `[redis]`, across every host of the fleet.
//!
//! The buckets live in a memory-mapped file that every worker maps (one file per limiter: the
//! request limit and the stricter failed-authentication limit are two files). There is no
//! `limit / N` split: a client has one bucket, whichever worker it reaches. With `[redis]` the
//! buckets live in Redis ([`shared`]) and the host's table is the fallback while Redis does not
//! answer (`fail_open`: each limit divided by the configured host count), or requests are
//! refused (`fail_closed`).
//!
//! [`gcra`] is the arithmetic of one bucket; [`table`] is where the host keeps them.
//!
//! May import: `settings`, `host` (its table is a state file), `fleet`, `metrics`. Imported by:
//! `http` (checks), `process` (opens the tables).

pub mod gcra;
pub mod shared;
pub mod table;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use gcra::{Clock, Decision, Limits, ManualClock, MonotonicClock};
pub use shared::SharedLimiter;
pub use table::{Options, RateLimiter, DEFAULT_SLOTS};

use crate::fleet::{Fleet, RateLimitFallback};
use crate::settings::RateLimits;

/// The rate limiters a worker consults.
pub struct Limiters {
    /// Per client identity.
    pub requests: Limiter,
    /// Per address, counting only failed authentications.
    pub auth_failures: Limiter,
}

impl Limiters {
    /// Opens (or creates) both tables in `state_dir`; with `fleet`, the buckets are kept in
    /// Redis and the tables hold the fallback's per-host share.
    pub fn open(state_dir: &Path, limits: &RateLimits, fleet: Option<&Arc<Fleet>>) -> io::Result<Limiters> {
        let one = |file: &str, name: &'static str, limits: Limits| -> io::Result<Limiter> {
            let Some(fleet) = fleet else {
                return Ok(Limiter {
                    local: RateLimiter::open(state_dir.join(file), limits)?,
                    shared: None,
                    limits,
                });
            };
            let fallback = fleet.settings().rate_limit_fallback;
            let share = match fallback {
                RateLimitFallback::FailOpen { hosts } => per_host(limits, hosts),
                RateLimitFallback::FailClosed => limits,
            };
            Ok(Limiter {
                local: RateLimiter::open(state_dir.join(file), share)?,
                shared: Some((SharedLimiter::new(fleet.clone(), name, limits), fallback)),
                limits,
            })
        };
        Ok(Limiters {
            requests: one("ratelimit-requests", "req", limits.requests)?,
            auth_failures: one("ratelimit-auth-failures", "auth", limits.auth_failures)?,
        })
    }
}

/// A host's share of a fleet-wide limit: rate and burst divided by `hosts` (burst at least 1).
pub fn per_host(limits: Limits, hosts: u32) -> Limits {
    let hosts = hosts.max(1);
    Limits {
        rate_per_minute: limits.rate_per_minute / f64::from(hosts),
        burst: limits.burst.div_ceil(hosts).max(1),
    }
}

/// Redis did not answer and the fallback is `fail_closed`: the request is refused (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// One limiter: the host's table, or the fleet's buckets with the table as fallback.
pub struct Limiter {
    local: RateLimiter,
    shared: Option<(SharedLimiter, RateLimitFallback)>,
    limits: Limits,
}

impl Limiter {
    /// The configured limit (fleet-wide with `[redis]`).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether one more request would be allowed now, taking nothing.
    pub async fn peek(&self, key: &str) -> Result<Decision, Unavailable> {
        self.decide(key, 0).await
    }

    /// Takes `n` tokens at once, or none (see [`RateLimiter::check_n`]).
    pub async fn check_n(&self, key: &str, n: u32) -> Result<Decision, Unavailable> {
        self.decide(key, n.max(1)).await
    }

    async fn decide(&self, key: &str, n: u32) -> Result<Decision, Unavailable> {
        let local = || if n == 0 { self.local.peek(key) } else { self.local.check_n(key, n) };
        let Some((shared, fallback)) = &self.shared else {
            return Ok(local());
        };
        match shared.decide(key, n).await {
            Ok(d) => Ok(d),
            Err(_) => {
                let (mode, answer) = match fallback {
                    RateLimitFallback::FailOpen { .. } => ("fail_open", Ok(local())),
                    RateLimitFallback::FailClosed => ("fail_closed", Err(Unavailable)),
                };
                crate::metrics::global().redis_fallbacks.with_label_values(&["rate_limit", mode]).inc();
                answer
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_share_never_drops_to_nothing() {
        let l = Limits { rate_per_minute: 600.0, burst: 5 };
        assert_eq!(per_host(l, 2), Limits { rate_per_minute: 300.0, burst: 3 });
        assert_eq!(per_host(l, 1), l);
        assert_eq!(per_host(l, 0), l);
        assert_eq!(per_host(Limits { rate_per_minute: 1.0, burst: 1 }, 4).burst, 1);
    }
}
