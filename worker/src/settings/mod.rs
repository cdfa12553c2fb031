//! The settings a worker runs with, as typed, ready-to-use values: durations, parsed networks,
//! digests, resolved paths. The binary turns the configuration file into these once per process
//! (`Config::settings`), naming every bad value; nothing in the worker parses a setting again.
//!
//! One convention for every section of the file: the binary owns the file's shape (`*Config`
//! types, strings and numbers as an operator writes them) and converts each section into the
//! type here. Sections that are already plain data the worker reads at boot (`[aws]` profiles,
//! `[auth]` key locations) are handed over as the checked section itself.

use std::path::PathBuf;
use std::time::Duration;

pub mod problem;

pub use problem::Problem;

use crate::auth::settings::AuthSettings;
use crate::aws::AwsSettings;
use crate::http::forwarded::TrustedProxies;
use crate::http::guard::EndpointPolicy;
use crate::ratelimit::gcra::Limits;
use crate::whitelist::{NamedPort, Policy, Protocol};

/// Everything one worker process needs, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long an idle keep-alive connection (or a slow request head) may take.
    pub keepalive: Duration,
    /// How long a draining worker waits for open requests before exiting.
    pub graceful_timeout: Duration,
    /// Longest request target accepted, in bytes (414 beyond).
    pub limit_request_line: usize,
    /// Most header fields accepted (431 beyond).
    pub limit_request_fields: usize,
    /// Longest single header field (`name: value`), in bytes (431 beyond).
    pub limit_request_field_size: usize,
    /// Most connections open at once in this worker; more wait in the shared accept queue.
    pub worker_connections: usize,
    /// Proxies whose forwarding headers are believed (`forwarded_allow_ips`), and which header
    /// they are read from (`forwarded_header`).
    pub forwarded: TrustedProxies,
    /// The MCP endpoint.
    pub mcp: McpSettings,
    /// The whitelist tools.
    pub whitelist: WhitelistSettings,
    /// AWS access.
    pub aws: AwsSettings,
    /// Authentication.
    pub auth: AuthSettings,
    /// Rate limits; `None` when `[rate_limit] enabled = false`.
    pub rate_limit: Option<RateLimits>,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
}

impl Settings {
    /// The largest request head the limits allow: every line at its maximum.
    pub fn max_head_size(&self) -> usize {
        // Request line: method, target, version and CRLF around the target's limit.
        let line = self.limit_request_line + 32;
        let fields = self.limit_request_fields * (self.limit_request_field_size + 2);
        (line + fields + 2).max(1024)
    }
}

/// `/metrics` is for Prometheus, not for the public: a scraper is let in by its address (a
/// direct connection, no forwarding headers) or by a bearer token whose SHA-256 is kept here.
#[derive(Debug, Clone)]
pub struct MetricsAccess {
    /// Addresses/CIDRs (and `unix`) allowed without a token.
    pub allow: TrustedProxies,
    /// SHA-256 of the bearer token allowed from anywhere.
    pub token_digest: Option<[u8; 32]>,
}

/// Per-client request limits and per-address failed-authentication limits, shared exactly by
/// every worker of the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Per client identity (token subject, API key, else address).
    pub requests: Limits,
    /// Per address, counting only failed authentications.
    pub auth_failures: Limits,
}

/// The whitelist tools: policy, defaults, and where state and audit go.
#[derive(Debug, Clone, PartialEq)]
pub struct WhitelistSettings {
    /// What may be opened.
    pub policy: Policy,
    /// Port when a call names none.
    pub default_port: String,
    /// Protocol when a call names none.
    pub default_protocol: Protocol,
    /// Description template when a call gives none.
    pub description_template: String,
    /// `{user}` default.
    pub default_user: String,
    /// `{reason}` default.
    pub default_reason: String,
    /// Extra port names.
    pub port_mappings: Vec<NamedPort>,
    /// How long a group's rules are cached.
    pub cache_ttl: Duration,
    /// The audit log file.
    pub audit_log: PathBuf,
    /// Directory for the host's shared state (cache counters, sweeper lock, expiry index).
    pub state_dir: PathBuf,
    /// Time between expiry sweeps.
    pub sweep_interval: Duration,
    /// Groups the sweeper always looks at, besides those it saw get expiring rules.
    pub sweep_groups: Vec<String>,
    /// Where the key that signs rule markers comes from.
    pub marker_key: MarkerKeySource,
    /// How long a person has to answer a consent question (`[policy.consent]
    /// state_ttl_seconds`): the life of a 2026-07-28 `requestState`, and the wait for an
    /// answer on a legacy stream.
    pub consent_ttl: Duration,
}

/// Where the key that signs rule markers comes from (`[whitelist] marker_key_file`,
/// `marker_key_env`, else generated). Every host that manages the same groups must use the same
/// key: a rule signed with another key is not managed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerKeySource {
    /// `<state_dir>/marker.key`, generated on first start: right for a single host.
    StateDir,
    /// A secret file (`marker_key_file`).
    File(PathBuf),
    /// The environment variable of this name (`marker_key_env`); the config holds the name,
    /// never the key.
    Env(String),
}

/// The MCP endpoint: who may call it, how much they may send, how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct McpSettings {
    /// Host/Origin/size policy applied before a body is read.
    pub policy: EndpointPolicy,
    /// How long a client has to send the whole request body (slowloris guard).
    pub body_timeout: Duration,
    /// How long the whole dispatch of one request (a message or a batch) may take before the
    /// client is answered with a JSON-RPC error; work in flight still finishes (and is audited).
    pub request_timeout: Duration,
    /// Tools per `tools/list` page.
    pub page_size: usize,
}
