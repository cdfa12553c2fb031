//! The sections the workers run with (`[mcp]`, `[rate_limit]`, `[metrics]`, plus the HTTP keys
//! at the top level), as written in the file, and [`Config::settings`]: the one place where the
//! whole file becomes the worker's typed [`worker::Settings`], every bad value named.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use worker::http::forwarded::{Source, TrustedProxies};
use worker::http::guard::EndpointPolicy;
use worker::ratelimit::Limits;

use super::{Config, ConfigError, Problem};

/// `[mcp]`: the MCP endpoint on every worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// URL path of the endpoint.
    pub path: String,
    /// Origins (`scheme://host[:port]`) browsers may call from; requests without Origin pass.
    pub allowed_origins: Vec<String>,
    /// Host names accepted in `Host` besides the loopback names. When every listener is
    /// loopback, Host is always checked (DNS rebinding); otherwise only if this list is set.
    pub allowed_hosts: Vec<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request body.
    pub body_timeout: f64,
    /// Seconds the whole dispatch of one request (a message, or a batch of at most 100) may
    /// take; past it the client gets a JSON-RPC error naming this setting, while a change
    /// already under way still finishes and is audited.
    pub request_timeout: f64,
    /// Tools per `tools/list` page.
    pub page_size: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            path: "/mcp".into(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_body_bytes: 1024 * 1024,
            body_timeout: 10.0,
            request_timeout: 60.0,
            page_size: 50,
        }
    }
}

/// `[rate_limit]`: per client (token subject, API key, else address), shared exactly by every
/// worker of the host; failed authentication is limited per address, more strictly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
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

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            requests_per_minute: 600.0,
            burst: 200,
            auth_failures_per_minute: 30.0,
            auth_failures_burst: 10,
        }
    }
}

/// `[metrics]`: who may read `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Addresses/CIDRs (and `unix`) allowed without a token.
    pub allow_ips: Vec<String>,
    /// `sha256:<hex>` of a bearer token that is allowed from anywhere (`awswhitelist keygen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { allow_ips: vec!["127.0.0.1".into(), "::1".into(), "unix".into()], token_hash: None }
    }
}

impl Config {
    /// The worker's typed settings: every section converted once, all problems reported at
    /// once. `validate` runs this too, so a configuration that loads always converts.
    pub fn settings(&self) -> Result<worker::Settings, ConfigError> {
        let mut problems = Vec::new();
        let mut bad =
            |key: &str, value: String, reason: &str| problems.push(Problem::new(key, value, reason));
        let forwarded = TrustedProxies::parse(&self.forwarded_allow_ips).unwrap_or_else(|e| {
            bad("forwarded_allow_ips", format!("{:?}", e.0), "not an IP address, CIDR, \"*\" or \"unix\"");
            TrustedProxies::default()
        });
        let source = Source::from_name(&self.forwarded_header).unwrap_or_else(|| {
            bad(
                "forwarded_header",
                format!("{:?}", self.forwarded_header),
                &format!("must be one of {}: the header your proxy appends to", Source::NAMES.join(", ")),
            );
            Source::default()
        });
        let forwarded = forwarded.with_source(source);
        let m = &self.mcp;
        if !m.path.starts_with('/')
            || m.path == "/"
            || m.path == "/health"
            || m.path.contains(['?', '#', ' '])
        {
            bad("mcp.path", format!("{:?}", m.path), "must be an absolute path other than / and /health");
        }
        for origin in &m.allowed_origins {
            let ok = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
            });
            if !ok {
                bad("mcp.allowed_origins", format!("{origin:?}"), "must be scheme://host[:port], no path");
            }
        }
        if !(1..=64 * 1024 * 1024).contains(&m.max_body_bytes) {
            bad("mcp.max_body_bytes", m.max_body_bytes.to_string(), "must be between 1 and 67108864");
        }
        let body_timeout = seconds(m.body_timeout, f64::MIN_POSITIVE, 3600.0).unwrap_or_else(|| {
            bad("mcp.body_timeout", m.body_timeout.to_string(), "must be a number of seconds in (0, 3600]");
            Duration::ZERO
        });
        let request_timeout = seconds(m.request_timeout, f64::MIN_POSITIVE, 3600.0).unwrap_or_else(|| {
            bad(
                "mcp.request_timeout",
                m.request_timeout.to_string(),
                "must be a number of seconds in (0, 3600]",
            );
            Duration::ZERO
        });
        if !(1..=1000).contains(&m.page_size) {
            bad("mcp.page_size", m.page_size.to_string(), "must be between 1 and 1000");
        }
        if let Err(e) = self.aws.validate() {
            bad("aws", String::new(), &e);
        }
        if let Err(found) = self.auth.validate() {
            for p in found {
                bad(&p.key, p.value, &p.reason);
            }
        }
        let r = &self.rate_limit;
        let mut limits = |key_rate: &str, rate: f64, key_burst: &str, burst: u32| {
            if !rate.is_finite() || rate <= 0.0 || rate > 1e9 {
                bad(key_rate, rate.to_string(), "must be a positive number of requests per minute");
            }
            if burst == 0 {
                bad(key_burst, "0".into(), "must be at least 1");
            }
            Limits { rate_per_minute: rate, burst }
        };
        let rate_limits = worker::RateLimits {
            requests: limits(
                "rate_limit.requests_per_minute",
                r.requests_per_minute,
                "rate_limit.burst",
                r.burst,
            ),
            auth_failures: limits(
                "rate_limit.auth_failures_per_minute",
                r.auth_failures_per_minute,
                "rate_limit.auth_failures_burst",
                r.auth_failures_burst,
            ),
        };
        let metrics_allow = TrustedProxies::parse(&self.metrics.allow_ips).unwrap_or_else(|e| {
            bad("metrics.allow_ips", format!("{:?}", e.0), "not an IP address, CIDR or \"unix\"");
            TrustedProxies::default()
        });
        let token_digest = self.metrics.token_hash.as_deref().and_then(|h| {
            let digest = worker::auth::apikey::parse_hash(h);
            if digest.is_none() {
                bad(
                    "metrics.token_hash",
                    "(hidden)".into(),
                    "must be sha256:<64 hex digits> (awswhitelist keygen prints one)",
                );
            }
            digest
        });
        let mut duration = |key: &str, v: f64, min: f64| {
            let d = seconds(v, min, 86_400.0);
            if d.is_none() {
                bad(key, v.to_string(), &format!("must be a number of seconds between {min} and 86400"));
            }
            d
        };
        let keepalive = duration("keepalive", self.keepalive, 0.01);
        let graceful_timeout = duration("graceful_timeout", self.graceful_timeout, 0.0);
        let whitelist = self.whitelist_settings().map_err(|found| problems.extend(found));
        let redis = self.redis.settings().unwrap_or_else(|found| {
            problems.extend(found);
            None
        });
        match (whitelist, keepalive, graceful_timeout) {
            (Ok(whitelist), Some(keepalive), Some(graceful_timeout)) if problems.is_empty() => {
                Ok(worker::Settings {
                    keepalive,
                    graceful_timeout,
                    limit_request_line: self.limit_request_line,
                    limit_request_fields: self.limit_request_fields,
                    limit_request_field_size: self.limit_request_field_size,
                    worker_connections: self.worker_connections,
                    forwarded,
                    mcp: worker::McpSettings {
                        policy: self.endpoint_policy(),
                        body_timeout,
                        request_timeout,
                        page_size: m.page_size,
                    },
                    whitelist,
                    aws: self.aws.clone(),
                    auth: self.auth.clone(),
                    rate_limit: r.enabled.then_some(rate_limits),
                    metrics: worker::MetricsAccess { allow: metrics_allow, token_digest },
                    redis,
                })
            }
            _ => Err(ConfigError(problems)),
        }
    }

    /// Host and Origin rules: strict when only this machine can connect (a browser page
    /// must not reach a loopback server through DNS rebinding), configured otherwise.
    fn endpoint_policy(&self) -> EndpointPolicy {
        let local = self.bind_addrs().iter().all(|a| a.is_local());
        let mut hosts: Vec<String> = self.mcp.allowed_hosts.clone();
        if local {
            hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
        }
        EndpointPolicy {
            path: self.mcp.path.clone(),
            allowed_hosts: (!hosts.is_empty()).then_some(hosts),
            allowed_origins: self
                .mcp
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            allow_loopback_origins: local,
            max_body_bytes: self.mcp.max_body_bytes,
        }
    }
}

/// A number of seconds from the file as a `Duration`, if it is finite and within `min..=max`
/// (so the conversion cannot panic).
pub(super) fn seconds(v: f64, min: f64, max: f64) -> Option<Duration> {
    (v.is_finite() && v >= min && v <= max).then(|| Duration::from_secs_f64(v))
}
