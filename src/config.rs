//! The configuration: one TOML file, overridden by `AWSWHITELIST_*` variables, overridden by
//! command-line flags. Without a file, the embedded defaults serve on loopback.
//!
//! Every problem is reported with the key and the value that caused it, all at once, so an
//! operator fixes a config in one pass instead of one error per restart.

use std::fmt;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use supervisor::{BindAddr, RunAs};

/// Prefix of the environment variables that override config keys (`__` separates sections).
pub const ENV_PREFIX: &str = "AWSWHITELIST_";

/// The control socket's file name in systemd's `RuntimeDirectory`, when `control_socket` is unset.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Addresses to listen on: `HOST:PORT`, `[V6]:PORT` or `unix:/path`.
    #[serde(deserialize_with = "one_or_many")]
    pub bind: Vec<String>,
    /// Worker processes.
    pub workers: usize,
    /// Seconds a worker may go without a heartbeat before it is aborted.
    pub timeout: f64,
    /// Seconds workers get to finish requests on stop, recycle and reload.
    pub graceful_timeout: f64,
    /// Seconds an idle keep-alive connection is kept.
    pub keepalive: f64,
    /// Requests after which a worker is replaced (0: never).
    pub max_requests: u64,
    /// Up to this many extra requests, chosen per worker, so they do not recycle together.
    pub max_requests_jitter: u64,
    /// Length of each listener's accept queue.
    pub backlog: i32,
    /// Set SO_REUSEPORT, so a second instance can bind beside this one during an upgrade.
    pub reuse_port: bool,
    /// Longest request target, in bytes.
    pub limit_request_line: usize,
    /// Most header fields in a request.
    pub limit_request_fields: usize,
    /// Longest header field, in bytes.
    pub limit_request_field_size: usize,
    /// Most simultaneous connections per worker.
    pub worker_connections: usize,
    /// File to write the supervisor's pid to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// The Unix socket `awswhitelist ctl` talks to (mode 0600; the service's own user and root
    /// only). Default: `control.sock` in systemd's `RuntimeDirectory`; none without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// User the workers run as (name or number); needs root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group the workers run as (name or number); defaults to the user's group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Proxies (addresses, CIDRs, `unix`) whose forwarding header (and `X-Forwarded-Proto`) is
    /// believed; from anyone else the TCP peer is the client.
    pub forwarded_allow_ips: Vec<String>,
    /// The one header those proxies' chain is read from: `x-forwarded-for` (what nginx, AWS ALB
    /// and HAProxy append to), `forwarded` (RFC 7239) or `x-real-ip`. The others are ignored, as
    /// a proxy passes them through as the client wrote them.
    pub forwarded_header: String,
    /// File mode creation mask, octal (`"0o027"` or `0o027`).
    #[serde(
        serialize_with = "ser_umask",
        deserialize_with = "de_umask",
        skip_serializing_if = "Option::is_none"
    )]
    pub umask: Option<u32>,
    /// The MCP endpoint.
    pub mcp: McpConfig,
    /// The whitelist tools: defaults, state, audit, expiry.
    pub whitelist: WhitelistConfig,
    /// What assistants may open (enforced on every change).
    pub policy: PolicyConfig,
    /// How the service reaches AWS.
    pub aws: worker::aws::AwsSettings,
    /// Who may call: JWT bearer tokens, API keys, scopes.
    pub auth: worker::auth::AuthSettings,
    /// Per-client request limits, exact across the host's workers.
    pub rate_limit: RateLimitConfig,
    /// The fleet's shared state (several hosts behind one load balancer); off when empty.
    pub redis: RedisConfig,
    /// Who may read `/metrics`.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Where and how logs are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `awswhitelist=debug,hyper=warn`, …
    pub level: String,
    /// `json` (one object per line), `text` (for people), or `auto` (text on a terminal).
    pub format: LogFormat,
    /// Append to this file instead of stderr; reopened on USR1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Access-log lines (one per request) to this file instead of the main log; reopened on USR1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_file: Option<PathBuf>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// JSON lines.
    Json,
    /// Human-readable lines.
    Text,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: vec!["127.0.0.1:8080".to_string()],
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            timeout: 30.0,
            graceful_timeout: 30.0,
            keepalive: 5.0,
            max_requests: 0,
            max_requests_jitter: 0,
            backlog: 2048,
            reuse_port: true,
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            worker_connections: 1000,
            pidfile: None,
            control_socket: None,
            forwarded_allow_ips: Vec::new(),
            forwarded_header: "x-forwarded-for".to_string(),
            user: None,
            group: None,
            umask: None,
            mcp: McpConfig::default(),
            whitelist: WhitelistConfig::default(),
            policy: PolicyConfig::default(),
            aws: worker::aws::AwsSettings::default(),
            auth: worker::auth::AuthSettings::default(),
            rate_limit: RateLimitConfig::default(),
            redis: RedisConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".to_string(), format: LogFormat::Auto, file: None, access_file: None }
    }
}

/// Where a configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// Values from command-line flags, as a partial config tree.
    pub flags: serde_json::Map<String, serde_json::Value>,
}

/// One thing wrong with the configuration (the worker's type: its sections report the same).
pub use worker::Problem;

/// Everything wrong with a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.0 {
            if p.value.is_empty() {
                write!(f, "\n  {}: {}", p.key, p.reason)?;
            } else {
                write!(f, "\n  {} = {}: {}", p.key, p.value, p.reason)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads defaults < file < environment < flags, then validates.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let config = Config::extract(sources)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads defaults < file < environment < flags without validating the values: for `ctl`,
    /// which needs only where the control socket is, and may run as a user that cannot open
    /// the service's files.
    pub fn extract(sources: &Sources) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &sources.file {
            if !path.is_file() {
                return Err(ConfigError(vec![Problem {
                    key: "config".into(),
                    value: path.display().to_string(),
                    reason: "no such file".into(),
                }]));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig
            .merge(Env::prefixed(ENV_PREFIX).filter(|k| k != "config").split("__"))
            .merge(Serialized::defaults(&sources.flags));
        fig.extract().map_err(from_figment)
    }

    /// Checks every value; returns all problems found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, value: String, reason: &str| {
            problems.push(Problem { key: key.into(), value, reason: reason.into() })
        };
        if self.bind.is_empty() {
            bad("bind", "[]".into(), "at least one address is needed");
        }
        for addr in &self.bind {
            if let Err(e) = addr.parse::<BindAddr>() {
                bad("bind", format!("{addr:?}"), &e.to_string());
            }
        }
        if !(1..=1024).contains(&self.workers) {
            bad("workers", self.workers.to_string(), "must be between 1 and 1024");
        }
        if settings::seconds(self.timeout, 0.05, 86_400.0).is_none() {
            bad("timeout", self.timeout.to_string(), "must be a number of seconds between 0.05 and 86400");
        }
        if self.max_requests_jitter > 0 && self.max_requests == 0 {
            bad(
                "max_requests_jitter",
                self.max_requests_jitter.to_string(),
                "has no effect unless max_requests is set",
            );
        }
        if !(1..=65_535).contains(&self.backlog) {
            bad("backlog", self.backlog.to_string(), "must be between 1 and 65535");
        }
        for (key, v, max) in [
            ("limit_request_line", self.limit_request_line, 65_535),
            ("limit_request_fields", self.limit_request_fields, 32_768),
            ("limit_request_field_size", self.limit_request_field_size, 65_535),
            ("worker_connections", self.worker_connections, 1_000_000),
        ] {
            if v == 0 || v > max {
                bad(key, v.to_string(), &format!("must be between 1 and {max}"));
            }
        }
        if let Some(path) = &self.control_socket {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if !path.is_absolute() {
                bad("control_socket", path.display().to_string(), "must be an absolute path");
            } else if path.as_os_str().len() > supervisor::control::socket::MAX_PATH {
                let max = supervisor::control::socket::MAX_PATH;
                bad(
                    "control_socket",
                    path.display().to_string(),
                    &format!("longer than {max} bytes: a Unix socket address cannot hold it"),
                );
            } else if !dir.is_some_and(|d| d.is_dir()) {
                bad("control_socket", path.display().to_string(), "its directory does not exist");
            }
        }
        if let Some(mask) = self.umask {
            if mask > 0o777 {
                bad("umask", format!("{mask:#o}"), "must be at most 0o777");
            }
        }
        if let Err(reason) = self.run_as() {
            let (key, value) = match (&self.user, &self.group) {
                (Some(u), _) if reason.starts_with("user") => ("user", u.clone()),
                (_, Some(g)) => ("group", g.clone()),
                (Some(u), None) => ("user", u.clone()),
                (None, None) => ("user", String::new()),
            };
            bad(key, format!("{value:?}"), &reason);
        }
        let bound: Vec<String> = self.bind_addrs().iter().map(ToString::to_string).collect();
        for p in self.refuse_unauthenticated(&bound).err().map(|e| e.0).unwrap_or_default() {
            bad(&p.key, p.value, &p.reason);
        }
        if !self.auth.enabled {
            for (key, set) in [
                ("forwarded_allow_ips", !self.forwarded_allow_ips.is_empty()),
                ("mcp.allowed_hosts", !self.mcp.allowed_hosts.is_empty()),
            ] {
                if set {
                    bad(
                        "auth.enabled",
                        "false".into(),
                        &format!("{key} is set, so clients of other machines reach this server (through a proxy, or by a public name): without authentication anyone there could open your firewall; set [auth] enabled = true with a secret, keys or a JWKS issuer (see deploy/awswhitelist.example.toml), or empty {key}"),
                    );
                }
            }
        }
        let worker_problems = self.settings().err().map(|e| e.0).unwrap_or_default();
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            bad("log.level", format!("{:?}", self.log.level), &format!("not a log filter: {e}"));
        }
        for (key, file) in [("log.file", &self.log.file), ("log.access_file", &self.log.access_file)] {
            if let Some(file) = file {
                let dir =
                    file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                if !dir.is_dir() {
                    bad(key, file.display().to_string(), "its directory does not exist");
                }
            }
        }
        problems.extend(worker_problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }

    /// The user and group workers drop to, resolved to ids.
    pub fn run_as(&self) -> Result<Option<RunAs>, String> {
        use nix::unistd::{Gid, Group, Uid, User};
        if self.user.is_none() && self.group.is_none() {
            return Ok(None);
        }
        let user = match &self.user {
            None => None,
            Some(name) => Some(match name.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or((uid, None), |u| (uid, Some(u.gid.as_raw()))),
                Err(_) => match User::from_name(name) {
                    Ok(Some(u)) => (u.uid.as_raw(), Some(u.gid.as_raw())),
                    _ => return Err("user: no such user on this system".into()),
                },
            }),
        };
        let gid = match &self.group {
            Some(name) => match name.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => match Group::from_name(name) {
                    Ok(Some(g)) => g.gid.as_raw(),
                    _ => return Err("group: no such group on this system".into()),
                },
            },
            None => match user {
                Some((_, Some(gid))) => gid,
                _ => Gid::current().as_raw(),
            },
        };
        let uid = user.map_or(Uid::current().as_raw(), |(uid, _)| uid);
        let changes = uid != Uid::effective().as_raw() || gid != Gid::effective().as_raw();
        if changes && !Uid::effective().is_root() {
            return Err("user: switching user or group needs the supervisor to start as root".into());
        }
        Ok(Some(RunAs { uid, gid }))
    }

    /// With `[auth] enabled = false`, refuses any of `listening` (addresses as `bind` writes them,
    /// or as the supervisor reports the sockets it bound or adopted) that another machine could
    /// reach: only loopback and Unix sockets may be served without authentication. An address
    /// that cannot be read counts as reachable.
    pub fn refuse_unauthenticated(&self, listening: &[String]) -> Result<(), ConfigError> {
        if self.auth.enabled {
            return Ok(());
        }
        let local = |a: &String| a.starts_with("unix:") || a.parse::<BindAddr>().is_ok_and(|b| b.is_local());
        let problems: Vec<Problem> = listening
            .iter()
            .filter(|a| !local(a))
            .map(|open| Problem::new(
                "auth.enabled",
                "false",
                format!("{open} is reachable from other machines: without authentication anyone there could open your firewall; set [auth] enabled = true with a secret, keys or a JWKS issuer (see deploy/awswhitelist.example.toml), or listen on loopback only"),
            ))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Where the control socket is: `control_socket`, else `control.sock` in systemd's
    /// `RuntimeDirectory` (`$RUNTIME_DIRECTORY`), else none.
    pub fn control_socket_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.control_socket {
            return Some(path.clone());
        }
        let dirs = std::env::var_os("RUNTIME_DIRECTORY")?;
        std::env::split_paths(&dirs).next().filter(|d| d.is_absolute()).map(|d| d.join(CONTROL_SOCKET_NAME))
    }

    /// Bind addresses, parsed (valid after [`Config::validate`]).
    pub fn bind_addrs(&self) -> Vec<BindAddr> {
        self.bind.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The supervisor's view of this configuration; workers receive the whole config.
    pub fn supervisor_settings(&self) -> Result<supervisor::Settings, ConfigError> {
        let run_as = self.run_as().map_err(|reason| {
            ConfigError(vec![Problem { key: "user".into(), value: String::new(), reason }])
        })?;
        let payload = serde_json::to_value(self).map_err(|e| {
            ConfigError(vec![Problem { key: "(all)".into(), value: String::new(), reason: e.to_string() }])
        })?;
        // The workers' settings carry the drain deadline already checked; the heartbeat timeout
        // is the supervisor's own key.
        let graceful_timeout = self.settings()?.graceful_timeout;
        let timeout = settings::seconds(self.timeout, 0.05, 86_400.0).ok_or_else(|| {
            ConfigError(vec![Problem::new(
                "timeout",
                self.timeout.to_string(),
                "must be a number of seconds",
            )])
        })?;
        Ok(supervisor::Settings {
            binds: self.bind_addrs(),
            workers: self.workers,
            timeout,
            graceful_timeout,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            pidfile: self.pidfile.clone(),
            run_as,
            umask: self.umask,
            worker: supervisor::WorkerSpec {
                program: PathBuf::from("/proc/self/exe"),
                args: vec!["worker".into()],
                payload,
            },
        })
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Turns figment's errors into problems that name the key, the value and where it came from.
fn from_figment(err: figment::Error) -> ConfigError {
    ConfigError(
        err.into_iter()
            .map(|e| {
                let key = if e.path.is_empty() { "(top level)".to_string() } else { e.path.join(".") };
                let source = e.metadata.as_ref().map(|m| match &m.source {
                    Some(src) => format!(" (from {src})"),
                    None if m.name.contains("environment") => {
                        format!(" (from {ENV_PREFIX}{})", e.path.join("__").to_uppercase())
                    }
                    None => format!(" (from {})", m.name),
                });
                Problem {
                    key,
                    value: String::new(),
                    reason: format!("{}{}", e.kind, source.unwrap_or_default()),
                }
            })
            .collect(),
    )
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        // A comma-separated string, so `AWSWHITELIST_BIND=a,b` works from the environment.
        OneOrMany::One(s) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        OneOrMany::Many(v) => v,
    })
}

fn ser_umask<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(m) => s.serialize_str(&format!("{m:#05o}")),
        None => s.serialize_none(),
    }
}

fn de_umask<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mask {
        Num(u32),
        Text(String),
    }
    match Mask::deserialize(d)? {
        Mask::Num(n) => Ok(Some(n)),
        Mask::Text(t) => {
            let digits = t.trim().trim_start_matches("0o");
            u32::from_str_radix(digits, 8)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not an octal mask like \"0o027\"")))
        }
    }
}

mod redis;
mod settings;
mod whitelist;

pub use redis::RedisConfig;
pub use settings::{McpConfig, MetricsConfig, RateLimitConfig};
pub use whitelist::{PolicyConfig, WhitelistConfig};

#[cfg(test)]
mod tests;
