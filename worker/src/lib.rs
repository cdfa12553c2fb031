//! What one worker process serves: MCP over HTTP (and, through the binary, over stdio), with
//! authentication, rate limits, the whitelist tools on EC2, metrics and an audit log.
//!
//! A worker is started by the supervisor, inherits its listeners ([`supervisor::child`]), runs a
//! single-threaded tokio runtime built in its own process, reports READY, heartbeats, asks to be
//! recycled when its request budget is spent, and drains on SIGTERM.
//!
//! # Layout: one folder per concern, imports only go down
//!
//! | module | what lives there | may import |
//! |---|---|---|
//! | [`process`] | boot, accept loop, drain, signals | app, http, channel, auth, ratelimit |
//! | [`app`] | builds every service once (serve and stdio) | tools, whitelist, aws, host, mcp |
//! | [`http`] | router, one file per endpoint, guard, forwarded headers | mcp, auth, ratelimit, metrics, channel |
//! | [`tools`] | each MCP tool: schemas, scope, argument adapter | mcp, whitelist, host, auth (scope names) |
//! | [`host`] | files the host's workers share: audit, counters, expiry index, sweeper | whitelist |
//! | [`ratelimit`] | GCRA arithmetic and the shared table of buckets | settings |
//! | [`auth`] | tokens and keys into a [`auth::Principal`] | caller, whitelist (group patterns) |
//! | [`mcp`] | the protocol, transport-independent | caller |
//! | [`aws`] | EC2 and STS behind the domain's `Firewall` trait | whitelist, metrics |
//! | [`whitelist`] | the domain: targets, policy, rules, the service | caller, metrics |
//! | [`channel`], [`metrics`], [`caller`], [`settings`] | leaves used across the crate | (their own types) |

pub mod app;
pub mod auth;
pub mod aws;
pub mod caller;
pub mod channel;
pub mod host;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod process;
pub mod ratelimit;
pub mod settings;
pub mod tools;
pub mod whitelist;

pub use app::App;
pub use process::{run, Hooks, RunError};
pub use settings::{McpSettings, MetricsAccess, Problem, RateLimits, Settings, WhitelistSettings};
