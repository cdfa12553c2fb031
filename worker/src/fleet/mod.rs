//! Redis as the fleet's shared state, when several hosts serve behind one load balancer and
//! `[redis]` is configured: the link to Redis ([`link`]), its settings and the redaction of
//! its addresses ([`settings`]), the names of the keys ([`keys`]), short fleet-wide locks
//! ([`lock`]) and the sweeper's fenced lease ([`lease`]). Without `[redis]` nothing here is
//! built and every shared thing stays per host.
//!
//! What is shared lives with its concern and uses the link: the rate limits
//! (`ratelimit::shared`); cache counters, consent records, group locks, read single flight and
//! the expiry index and sweeper (`host::fleet_*`, `host::sweeper`).
//!
//! May import: `metrics`. Imported by: `ratelimit`, `settings`, `process`, `http` (health).

pub mod keys;
pub mod lease;
pub mod link;
pub mod lock;
pub mod settings;

pub use link::Fleet;
pub use settings::{redact, ConsentFallback, PasswordSource, RateLimitFallback, RedisSettings, RedisTarget};
