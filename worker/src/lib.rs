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
//! | [`process`] | boot, accept loop, drain, signals | app, http, channel, auth, ratelimit, fleet |
//! | [`app`] | builds every service once (serve and stdio) | tools, whitelist, aws, host, mcp, fleet |
//! | [`http`] | router, one file per endpoint, guard, forwarded headers, signed sessions, event streams | mcp, auth, ratelimit, metrics, channel, fleet (health) |
//! | [`tools`] | each MCP tool: schemas, scope, argument adapter, asking a person (consent) | mcp, whitelist, auth (scope names) |
//! | [`host`] | files the host's workers share: audit, counters (joined with the fleet's), shared reads, expiry index, marker key, group locks, consumed consent states, sweeper; their fleet-wide versions on Redis (`fleet_*`) | whitelist, settings, fleet |
//! | [`ratelimit`] | GCRA arithmetic, the host's table of buckets, the fleet's buckets in Redis | settings, host (state files), fleet, metrics |
//! | [`fleet`] | Redis as the fleet's shared state: the link (after the fork), its health, key names, short locks, the sweeper's fenced lease | metrics |
//! | [`auth`] | tokens and keys into a [`auth::Principal`], converted once into a [`caller::Caller`] | caller, settings (its problems) |
//! | [`mcp`] | the protocol, transport-independent | caller, metrics (panics) |
//! | [`aws`] | EC2 and STS behind the domain's `Firewall` trait | whitelist, metrics |
//! | [`whitelist`] | the domain: targets, policy, consent rules and state, rules, signed markers, the service, planned changes and dry runs, reconciliation, the policy's instructions | caller, metrics |
//! | [`caller`] | the one caller type, edge to domain | whitelist (group patterns) |
//! | [`settings`] | the typed settings; [`settings::problem`] is a leaf | auth, aws, http (parsed types), ratelimit, whitelist, fleet (its settings) |
//! | [`channel`], [`metrics`] | leaves used across the crate | nothing of this crate |
//!
//! No file of this crate imports, directly or through a chain, a file that
//! imports it back (tests aside).

pub mod app;
pub mod auth;
pub mod aws;
pub mod caller;
pub mod channel;
pub mod fleet;
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
