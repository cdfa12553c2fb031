//! The settings a worker needs, sent to it by the supervisor inside its assignment.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use crate::aws::AwsSettings;
use crate::guard::EndpointPolicy;
use crate::whitelist::{NamedPort, Policy, Protocol};

/// HTTP limits and timeouts of one worker (the gunicorn-equivalent settings that live here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Seconds an idle keep-alive connection (or a slow request head) may take.
    pub keepalive: f64,
    /// Seconds a draining worker waits for open requests before exiting.
    pub graceful_timeout: f64,
    /// Longest request target accepted, in bytes (414 beyond).
    pub limit_request_line: usize,
    /// Most header fields accepted (431 beyond).
    pub limit_request_fields: usize,
    /// Longest single header field (`name: value`), in bytes (431 beyond).
    pub limit_request_field_size: usize,
    /// Most connections open at once in this worker; more wait in the shared accept queue.
    pub worker_connections: usize,
    /// Proxies whose forwarding headers are believed (`forwarded_allow_ips`).
    pub forwarded_allow_ips: Vec<String>,
    /// The MCP endpoint.
    pub mcp: McpSettings,
    /// The whitelist tools.
    pub whitelist: WhitelistSettings,
    /// AWS access.
    pub aws: AwsSettings,
    /// Authentication.
    pub auth: crate::auth::AuthSettings,
    /// Rate limits.
    pub rate_limit: RateLimitSettings,
    /// Who may read `/metrics`.
    pub metrics: MetricsSettings,
}

/// `[metrics]`: `/metrics` is for Prometheus, not for the public. A scraper is let in by its
/// address (a direct connection, no forwarding headers) or by a bearer token whose hash is here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Addresses/CIDRs (and `unix`) allowed without a token.
    pub allow_ips: Vec<String>,
    /// `sha256:<hex>` of a bearer token that is allowed from anywhere (`awswhitelist keygen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { allow_ips: vec!["127.0.0.1".into(), "::1".into(), "unix".into()], token_hash: None }
    }
}

/// `[rate_limit]`: per client (token subject, API key, else address), shared exactly by every
/// worker of the host; failed authentication is limited per address, more strictly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Whether requests to the MCP endpoint are limited at all.
    pub enabled: bool,
    /// Sustained requests per minute per client.
    pub requests_per_minute: f64,
    /// Requests a client may send at once.
    pub burst: u32,
    /// Failed authentications per minute per address.
    pub auth_failures_per_minute: f64,
    /// Failed authentications at once per address.
    pub auth_failures_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            enabled: true,
            requests_per_minute: 600.0,
            burst: 200,
            auth_failures_per_minute: 30.0,
            auth_failures_burst: 10,
        }
    }
}

/// The whitelist tools: policy, defaults, and where state and audit go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Seconds a group's rules are cached.
    pub cache_ttl: f64,
    /// The audit log file.
    pub audit_log: PathBuf,
    /// Directory for the host's shared state (cache counters, sweeper lock, expiry index).
    pub state_dir: PathBuf,
    /// Seconds between expiry sweeps.
    pub sweep_interval: f64,
    /// Groups the sweeper always looks at, besides those it saw get expiring rules.
    pub sweep_groups: Vec<String>,
}

/// The MCP endpoint: who may call it, how much they may send, how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpSettings {
    /// Host/Origin/size policy applied before a body is read.
    pub policy: EndpointPolicy,
    /// Seconds a client has to send the whole request body (slowloris guard).
    pub body_timeout: f64,
    /// Tools per `tools/list` page.
    pub page_size: usize,
}

impl Settings {
    /// The keep-alive timeout as a duration.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs_f64(self.keepalive)
    }

    /// The drain deadline as a duration.
    pub fn graceful_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.graceful_timeout)
    }

    /// The largest request head the limits allow: every line at its maximum.
    pub fn max_head_size(&self) -> usize {
        // Request line: method, target, version and CRLF around the target's limit.
        let line = self.limit_request_line + 32;
        let fields = self.limit_request_fields * (self.limit_request_field_size + 2);
        (line + fields + 2).max(1024)
    }
}
