//! What one worker process serves: today `GET /health`; MCP, auth, tools and metrics hang off
//! the same routes → handlers → domain shape in later modules.
//!
//! A worker is started by the supervisor, inherits its listeners ([`supervisor::child`]), runs a
//! single-threaded tokio runtime built in its own process, reports READY, heartbeats, asks to be
//! recycled when its request budget is spent, and drains on SIGTERM.

pub mod audit;
pub mod auth;
pub mod aws;
mod channel;
pub mod forwarded;
pub mod guard;
mod http;
pub mod mcp;
pub mod metrics;
pub mod ratelimit;
mod server;
mod settings;
pub mod sweeper;
pub mod tools;
pub mod versions;
pub mod whitelist;

pub use server::{run, whitelist_service, Hooks, RunError};
pub use settings::{McpSettings, MetricsSettings, RateLimitSettings, Settings, WhitelistSettings};
