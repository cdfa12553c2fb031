//! Command-line flags. Each setting flag mirrors a config key of the same name.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::config::Sources;

/// Remote MCP server that manages IP-whitelist rules in AWS EC2 security groups.
#[derive(Debug, Parser)]
#[command(name = "awswhitelist", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: a supervisor that binds the listeners and keeps the workers running.
    Serve(ConfigArgs),
    /// Validate the configuration and print the effective result, without starting anything.
    CheckConfig(ConfigArgs),
    /// Serve MCP locally on stdin/stdout, one JSON message per line (for a client that starts
    /// the server itself); logs go to stderr.
    Stdio(ConfigArgs),
    /// Bridge an MCP client that only speaks stdio to a remote server over HTTP(S): one JSON
    /// message per line in, each answer as one line out, as soon as it arrives.
    Proxy(ProxyArgs),
    /// Issue an HS256 token signed with the configured shared secret; prints only the token.
    Token(crate::keys::TokenArgs),
    /// Make an API key: prints the key once and the config entry holding its hash.
    Keygen(crate::keys::KeygenArgs),
    /// Ask the running service for its status, or reload, scale, upgrade or stop it, over its
    /// control socket (the service's own user and root only).
    Ctl(crate::ctl::CtlArgs),
    /// Check the whole deployment before an assistant uses it: config, listeners, state,
    /// audit log, marker key, AWS identity, groups (DryRun), JWKS, clock. Changes nothing.
    Doctor(crate::doctor::DoctorArgs),
    /// Internal: one worker process, started by `serve`.
    #[command(hide = true)]
    Worker,
}

/// The config file and flags that override its keys (flags win over AWSWHITELIST_* variables,
/// which win over the file).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// TOML config file; without one, the embedded defaults serve on 127.0.0.1:8080.
    #[arg(short, long, env = "AWSWHITELIST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeatable): HOST:PORT, [V6]:PORT or unix:/path.
    #[arg(short, long = "bind", value_name = "ADDR")]
    pub bind: Vec<String>,
    /// Worker processes.
    #[arg(short, long, value_name = "N")]
    pub workers: Option<usize>,
    /// Seconds without a heartbeat before a worker is aborted.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Seconds workers get to finish requests on stop, recycle and reload.
    #[arg(long, value_name = "SECONDS")]
    pub graceful_timeout: Option<f64>,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, value_name = "SECONDS")]
    pub keepalive: Option<f64>,
    /// Requests after which a worker is replaced (0: never).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// Random extra requests per worker, so workers do not recycle together.
    #[arg(long, value_name = "N")]
    pub max_requests_jitter: Option<u64>,
    /// Accept queue length of each listener.
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,
    /// Most simultaneous connections per worker.
    #[arg(long, value_name = "N")]
    pub worker_connections: Option<usize>,
    /// File to write the supervisor's pid to.
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// User the workers run as.
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
    /// Group the workers run as.
    #[arg(short, long, value_name = "GROUP")]
    pub group: Option<String>,
    /// File mode creation mask, octal.
    #[arg(long, value_name = "MASK")]
    pub umask: Option<String>,
    /// Log filter (info, debug, …).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: json, text or auto.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl ConfigArgs {
    /// The sources these arguments name: the file and the flags as a partial config.
    pub fn sources(&self) -> Sources {
        let mut flags = Map::new();
        let mut put = |key: &str, v: Option<Value>| {
            if let Some(v) = v {
                flags.insert(key.to_string(), v);
            }
        };
        put("bind", (!self.bind.is_empty()).then(|| json!(self.bind)));
        put("workers", self.workers.map(|v| json!(v)));
        put("timeout", self.timeout.map(|v| json!(v)));
        put("graceful_timeout", self.graceful_timeout.map(|v| json!(v)));
        put("keepalive", self.keepalive.map(|v| json!(v)));
        put("max_requests", self.max_requests.map(|v| json!(v)));
        put("max_requests_jitter", self.max_requests_jitter.map(|v| json!(v)));
        put("backlog", self.backlog.map(|v| json!(v)));
        put("worker_connections", self.worker_connections.map(|v| json!(v)));
        put("pidfile", self.pidfile.as_ref().map(|v| json!(v)));
        put("user", self.user.as_ref().map(|v| json!(v)));
        put("group", self.group.as_ref().map(|v| json!(v)));
        put("umask", self.umask.as_ref().map(|v| json!(v)));
        let mut log = Map::new();
        for (key, v) in [
            ("level", self.log_level.as_ref().map(|v| json!(v))),
            ("format", self.log_format.as_ref().map(|v| json!(v))),
            ("file", self.log_file.as_ref().map(|v| json!(v))),
        ] {
            if let Some(v) = v {
                log.insert(key.to_string(), v);
            }
        }
        if !log.is_empty() {
            flags.insert("log".to_string(), Value::Object(log));
        }
        Sources { file: self.config.clone(), flags }
    }
}

/// Where `proxy` forwards to and how; the token comes from the environment by preference
/// (a flag is visible to every local user in the process list).
#[derive(Clone, Args)]
pub struct ProxyArgs {
    /// URL of the remote MCP endpoint (http:// or https://).
    #[arg(long, env = "MCP_REMOTE_URL", default_value = "http://localhost:8080/mcp", value_name = "URL")]
    pub url: String,
    /// Bearer token sent as `Authorization: Bearer …`; never logged. Prefer MCP_AUTH_TOKEN.
    #[arg(long, env = "MCP_AUTH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Seconds each request may take, connecting included, before it is answered with an error.
    #[arg(long, default_value = "30", value_parser = parse_timeout, value_name = "SECONDS")]
    pub timeout: Duration,
    /// Log filter for stderr (stdout carries nothing but MCP messages).
    #[arg(long, default_value = "warn", value_name = "FILTER")]
    pub log_level: String,
    /// Allow a plain `http://` URL to a host that is not loopback: the token and every message
    /// cross the network readable by anyone on the path. Off by default; use https://.
    #[arg(long, env = "MCP_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
}

impl fmt::Debug for ProxyArgs {
    /// Redacts the token, so no debug print can leak it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("log_level", &self.log_level)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

/// A positive, finite number of seconds.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and 86400 (e.g. 30 or 2.5)")),
    }
}
