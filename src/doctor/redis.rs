//! `[redis]`: whether the fleet's Redis answers, asked the way a worker asks it (through the
//! worker's own link: the same password source, timeouts and cluster handling).

use std::time::Instant;

use worker::fleet::{Fleet, RedisSettings};

use super::Check;

/// One line for `[redis]`, or none when it is not configured.
pub async fn check(settings: Option<&RedisSettings>) -> Option<Check> {
    let settings = settings?;
    let target = format!("{:?}", settings.target);
    let fix = "start Redis or correct redis.url / redis.cluster (and redis.password_file or \
               redis.password_env); until it answers, the service runs on the fallbacks [redis] \
               names (rate limits: redis.rate_limit_fallback; consent answers: \
               redis.consent_fallback; no cache across hosts; locks, reads and the sweeper per host)";
    let fleet = match Fleet::new(settings) {
        Ok(fleet) => fleet,
        Err(e) => return Some(Check::fail("redis", e, fix)),
    };
    let started = Instant::now();
    Some(match fleet.ping().await {
        Ok(()) => {
            Check::ok("redis", format!("{target} answers (PING in {} ms)", started.elapsed().as_millis()))
        }
        Err(e) => Check::fail("redis", format!("{target} does not answer: {e}"), fix),
    })
}
