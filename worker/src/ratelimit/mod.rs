//! Per-client rate limits with burst, exact across every worker process of a host.
//!
//! The buckets live in a memory-mapped file that every worker maps (one file per limiter: the
//! request limit and the stricter failed-authentication limit are two files). There is no
//! `limit / N` split: a client has one bucket, whichever worker it reaches.
//!
//! [`gcra`] is the arithmetic of one bucket; [`table`] is where the host keeps them.
//!
//! May import: `settings`, `host` (its table is a state file). Imported by: `http` (checks),
//! `process` (opens the tables).

pub mod gcra;
pub mod table;

use std::io;
use std::path::Path;

pub use gcra::{Clock, Decision, Limits, ManualClock, MonotonicClock};
pub use table::{Options, RateLimiter, DEFAULT_SLOTS};

use crate::settings::RateLimits;

/// The host-wide rate limiters a worker consults.
pub struct Limiters {
    /// Per client identity.
    pub requests: RateLimiter,
    /// Per address, counting only failed authentications.
    pub auth_failures: RateLimiter,
}

impl Limiters {
    /// Opens (or creates) both tables in `state_dir`.
    pub fn open(state_dir: &Path, limits: &RateLimits) -> io::Result<Limiters> {
        Ok(Limiters {
            requests: RateLimiter::open(state_dir.join("ratelimit-requests"), limits.requests)?,
            auth_failures: RateLimiter::open(
                state_dir.join("ratelimit-auth-failures"),
                limits.auth_failures,
            )?,
        })
    }
}
