//! The bucket's arithmetic, apart from where buckets are kept: limits, decisions, clocks.
//!
//! # The bucket
//!
//! A token bucket of `burst` tokens refilled at `rate_per_minute`, kept as GCRA (the generic cell
//! rate algorithm): the whole state of a bucket is one number, the *theoretical arrival time*
//! `tat` — the instant at which the bucket would be full again. With `T = 60 s / rate` (the time
//! one token takes to come back) and `W = burst · T`, a request at `now` is allowed iff
//! `max(tat, now) + T ≤ now + W`, and then `tat ← max(tat, now) + T`. The tokens left are
//! `(now + W − tat) / T`; a refused request may retry after `max(tat, now) + T − (now + W)`.
//! A bucket with `tat ≤ now` is full, i.e. exactly a fresh bucket: such a slot can be reused by
//! any other client without changing anybody's limit. Times are nanoseconds of
//! `CLOCK_MONOTONIC`, one clock for every process of the host.
//!

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest window (`W`) a limit may have, in nanoseconds; keeps `tat` arithmetic far from
/// overflow.
pub(super) const MAX_WINDOW_NS: u64 = 1 << 62;

/// A limit: `burst` requests at once, refilled at `rate_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Tokens returned per minute (> 0; may be fractional).
    pub rate_per_minute: f64,
    /// Bucket size: requests allowed at once from a full bucket (≥ 1).
    pub burst: u32,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `remaining` more requests would be allowed right now.
    Allowed {
        /// More requests that would be allowed right now.
        remaining: u32,
    },
    /// Refused; one request will be allowed again after `retry_after`.
    Limited {
        /// When one request will be allowed again.
        retry_after: Duration,
    },
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// `Retry-After` in whole seconds (rounded up, at least 1); `None` when allowed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Decision::Allowed { .. } => None,
            Decision::Limited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
        }
    }
}

/// Where "now" comes from: nanoseconds on a clock every process of the host shares.
pub trait Clock: Send + Sync {
    /// Nanoseconds since an origin common to all users of a table.
    fn now_ns(&self) -> u64;
}

/// `CLOCK_MONOTONIC`: the same for every process of a boot.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        use nix::time::{clock_gettime, ClockId};
        // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make every bucket look full.
        clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map(|ts| (ts.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec() as u64))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Duration) -> ManualClock {
        ManualClock(AtomicU64::new(start.as_nanos() as u64))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `(T, W)` in nanoseconds.
pub(super) fn timing(limits: Limits) -> io::Result<(u64, u64)> {
    let rate = limits.rate_per_minute;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "rate_per_minute must be a positive number"));
    }
    if limits.burst == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "burst must be at least 1"));
    }
    let burst = u64::from(limits.burst);
    // Float → int casts saturate; a vanishing rate becomes "one token per MAX_WINDOW / burst".
    let interval = ((60e9 / rate).round() as u64).clamp(1, MAX_WINDOW_NS / burst);
    Ok((interval, interval * burst))
}

/// One GCRA decision: the answer for a request at `now` to a bucket whose theoretical arrival
/// time is `tat`, and the bucket's new `tat` (unchanged when refused). `interval` is `T`,
/// `window` is `W`, in nanoseconds.
pub fn decide(tat: u64, now: u64, interval: u64, window: u64) -> (Decision, u64) {
    decide_n(tat, now, interval, window, 1)
}

/// [`decide`] for `n` tokens at once, all or nothing: allowed iff `max(tat, now) + n·T ≤ now + W`
/// (then `tat ← max(tat, now) + n·T`), else refused and nothing is taken. More tokens than the
/// burst are never allowed; the `retry_after` of such a refusal is meaningless (check `n`
/// against the burst first).
pub fn decide_n(tat: u64, now: u64, interval: u64, window: u64, n: u32) -> (Decision, u64) {
    // A tat beyond now + W cannot come from this limiter: a fresh bucket, not a lock-out.
    let tat = if tat > now.saturating_add(window) { 0 } else { tat };
    let next = tat.max(now).saturating_add(interval.saturating_mul(u64::from(n)));
    let limit = now.saturating_add(window);
    if next <= limit {
        let remaining = (limit - next) / interval.max(1);
        (Decision::Allowed { remaining: u32::try_from(remaining).unwrap_or(u32::MAX) }, next)
    } else {
        (Decision::Limited { retry_after: Duration::from_nanos(next - limit) }, tat)
    }
}
