//! Redis as the fleet's shared state, when several hosts serve behind one load balancer and
//! `[redis]` is configured: the link to Redis ([`link`]), its settings and the redaction of
//! its addresses ([`settings`]), and the names of the keys ([`keys`]). Without `[redis]`
//! nothing here is built and every shared thing stays per host.
//!
//! What is shared lives with its concern and uses the link: the rate limits
//! (`ratelimit::shared`).
//!
//! May import: `metrics`. Imported by: `ratelimit`, `settings`, `process`, `http` (health).

pub mod keys;
pub mod link;
pub mod settings;

pub use link::Fleet;
pub use settings::{redact, PasswordSource, RateLimitFallback, RedisSettings, RedisTarget};
