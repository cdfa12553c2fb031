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
//! | [`http`] | router, one file per endpoint, guard, forwarded headers, signed sessions, event streams | mcp, auth, ratelimit, metrics, channel |
//! | [`tools`] | each MCP tool: schemas, scope, argument adapter, asking a person (consent) | mcp, whitelist, auth (scope names) |
//! | [`host`] | files the host's workers share: audit, counters, shared reads, expiry index, marker key, group locks, consumed consent states, sweeper | whitelist, settings |
//! | [`ratelimit`] | GCRA arithmetic and the shared table of buckets | settings, host (state files) |
//! | [`auth`] | tokens and keys into a [`auth::Principal`], converted once into a [`caller::Caller`] | caller, settings (its problems) |
//! | [`mcp`] | the protocol, transport-independent | caller, metrics (panics) |
//! | [`aws`] | EC2 and STS behind the domain's `Firewall` trait | whitelist, metrics |
//! | [`whitelist`] | the domain: targets, policy, consent rules and state, rules, signed markers, the service, planned changes and dry runs, reconciliation, the policy's instructions | caller, metrics |
//! | [`caller`] | the one caller type, edge to domain | whitelist (group patterns) |
//! | [`settings`] | the typed settings; [`settings::problem`] is a leaf | auth, aws, http (parsed types), ratelimit, whitelist |
//! | [`channel`], [`metrics`] | leaves used across the crate | nothing of this crate |
//!
//! No file of this crate imports, directly or through a chain, a file that
//! imports it back (tests aside).

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
