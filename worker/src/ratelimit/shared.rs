//! The rate limits of a fleet: the same GCRA as [`super::gcra`], kept in Redis so that a client
//! has one bucket whichever worker of whichever host it reaches. Each decision is one Lua
//! script run atomically by the server on one key (one slot of a cluster), timed by the
//! server's own clock (`TIME`), so the hosts' clocks do not matter. Times are microseconds
//! (Lua numbers are doubles: nanoseconds since 1970 would lose precision).

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::gcra::{Decision, Limits};
use crate::fleet::{keys, Fleet};

/// KEYS[1]: the bucket (its value is `tat` in µs). ARGV: interval `T`, window `W` (µs), tokens
/// `n` (0: peek, i.e. would one token be allowed, taking nothing). Answers `{1, remaining}` or
/// `{0, retry_after_us}`, exactly as `gcra::decide_n`.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat > now + window then tat = 0 end
local cost = n
if cost < 1 then cost = 1 end
local nxt = math.max(tat, now) + interval * cost
local limit = now + window
if nxt <= limit then
  if n > 0 then
    redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', string.format('%d', math.floor((nxt - now) / 1000) + 1))
  end
  return {1, math.floor((limit - nxt) / interval)}
end
return {0, nxt - limit}
"#;

/// One limiter's buckets in Redis.
pub struct SharedLimiter {
    fleet: Arc<Fleet>,
    script: Script,
    name: &'static str,
    interval_us: u64,
    window_us: u64,
}

impl SharedLimiter {
    /// The limiter `name` (`req`, `auth`: part of its keys) with the fleet-wide `limits`.
    pub fn new(fleet: Arc<Fleet>, name: &'static str, limits: Limits) -> SharedLimiter {
        let (interval_us, window_us) = timing_us(limits);
        SharedLimiter { fleet, script: Script::new(GCRA), name, interval_us, window_us }
    }

    /// Takes `n` tokens (0: only looks whether one would be allowed); `Err` when Redis did not
    /// answer.
    pub async fn decide(&self, client: &str, n: u32) -> Result<Decision, redis::RedisError> {
        let key = keys::rate_limit(self.name, client);
        let (allowed, value): (i64, i64) =
            self.fleet.eval(&self.script, &[&key], &[self.interval_us, self.window_us, u64::from(n)]).await?;
        let value = u64::try_from(value).unwrap_or(0);
        Ok(if allowed == 1 {
            Decision::Allowed { remaining: u32::try_from(value).unwrap_or(u32::MAX) }
        } else {
            Decision::Limited { retry_after: Duration::from_micros(value.max(1)) }
        })
    }
}

/// `(T, W)` in microseconds, as `gcra::timing` computes them in nanoseconds.
fn timing_us(limits: Limits) -> (u64, u64) {
    let burst = u64::from(limits.burst.max(1));
    let rate = if limits.rate_per_minute.is_finite() && limits.rate_per_minute > 0.0 {
        limits.rate_per_minute
    } else {
        f64::MIN_POSITIVE
    };
    // Keep W below 2^52 µs, where Lua's doubles are still exact.
    let interval = ((60e6 / rate).round() as u64).clamp(1, (1u64 << 52) / burst);
    (interval, interval * burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_matches_the_local_arithmetic() {
        let (t, w) = timing_us(Limits { rate_per_minute: 60.0, burst: 5 });
        assert_eq!((t, w), (1_000_000, 5_000_000));
        let (t, w) = timing_us(Limits { rate_per_minute: 1e-30, burst: 3 });
        assert!(w <= 1u64 << 52 && t * 3 == w);
    }
}
