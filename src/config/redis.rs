//! `[redis]`: the fleet's shared state, as written in the file, and its conversion into the
//! worker's [`RedisSettings`]. No `url` and no `cluster`: no Redis, every shared thing per host.

use serde::{Deserialize, Serialize};
use worker::fleet::settings::valid_url;
use worker::fleet::{redact, ConsentFallback, PasswordSource, RateLimitFallback, RedisSettings, RedisTarget};

use super::settings::seconds;
use super::Problem;

/// `[redis]` as the operator writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// One server: `redis://host:port[/db]` or `rediss://…` (TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster, instead of `url`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    /// A file holding the Redis password (instead of one in the URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    /// The environment variable holding the Redis password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Seconds to wait for a connection.
    pub connect_timeout: f64,
    /// Seconds to wait for one answer.
    pub response_timeout: f64,
    /// `fail_open` (limit per host, each limit divided by `hosts`) or `fail_closed` (503).
    pub rate_limit_fallback: String,
    /// Hosts in the fleet, for `fail_open` (0: not said, which `fail_open` refuses).
    pub hosts: u32,
    /// `fail_closed` (refuse consent answers while Redis is down) or `host` (this host's
    /// records only).
    pub consent_fallback: String,
    /// Seconds of the fleet sweeper's lease.
    pub sweeper_lease: f64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            cluster: Vec::new(),
            password_file: None,
            password_env: None,
            connect_timeout: 1.0,
            response_timeout: 0.5,
            rate_limit_fallback: "fail_open".into(),
            hosts: 0,
            consent_fallback: "fail_closed".into(),
            sweeper_lease: 30.0,
        }
    }
}

impl RedisConfig {
    /// The checked settings (`None` without Redis), or every problem found.
    pub fn settings(&self) -> Result<Option<RedisSettings>, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad =
            |key: &str, value: String, reason: &str| problems.push(Problem::new(key, value, reason));
        let target = match (&self.url, self.cluster.is_empty()) {
            (None, true) => return Ok(None),
            (Some(_), false) => {
                bad("redis.cluster", String::new(), "set either redis.url or redis.cluster, not both");
                None
            }
            (Some(url), true) => Some(RedisTarget::Single(url.clone())),
            (None, false) => Some(RedisTarget::Cluster(self.cluster.clone())),
        };
        let key = if self.url.is_some() { "redis.url" } else { "redis.cluster" };
        for url in self.url.iter().chain(&self.cluster) {
            if !valid_url(url) {
                bad(key, redact(url), "must be redis://host:port or rediss://host:port");
            }
        }
        let password = match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => {
                bad(
                    "redis.password_env",
                    String::new(),
                    "set redis.password_file or redis.password_env, not both",
                );
                None
            }
            (Some(f), None) => Some(PasswordSource::File(f.clone())),
            (None, Some(e)) if e.is_empty() || e.starts_with("AWSWHITELIST_") => {
                bad(
                    "redis.password_env",
                    e.clone(),
                    "must name a variable outside AWSWHITELIST_* (those are configuration keys)",
                );
                None
            }
            (None, Some(e)) => Some(PasswordSource::Env(e.clone())),
            (None, None) => None,
        };
        let mut timeout = |key: &str, v: f64| {
            seconds(v, 0.001, 60.0).unwrap_or_else(|| {
                bad(key, v.to_string(), "must be a number of seconds in [0.001, 60]");
                std::time::Duration::ZERO
            })
        };
        let connect_timeout = timeout("redis.connect_timeout", self.connect_timeout);
        let response_timeout = timeout("redis.response_timeout", self.response_timeout);
        let rate_limit_fallback = match (self.rate_limit_fallback.as_str(), self.hosts) {
            ("fail_closed", _) => RateLimitFallback::FailClosed,
            ("fail_open", 0) => {
                bad(
                    "redis.hosts",
                    "0".into(),
                    "rate_limit_fallback = \"fail_open\" divides each limit by the number of hosts while Redis is down: set redis.hosts (or rate_limit_fallback = \"fail_closed\")",
                );
                RateLimitFallback::FailClosed
            }
            ("fail_open", hosts) => RateLimitFallback::FailOpen { hosts },
            (other, _) => {
                bad(
                    "redis.rate_limit_fallback",
                    format!("{other:?}"),
                    "must be \"fail_open\" or \"fail_closed\"",
                );
                RateLimitFallback::FailClosed
            }
        };
        let consent_fallback = match self.consent_fallback.as_str() {
            "fail_closed" => ConsentFallback::FailClosed,
            "host" => ConsentFallback::Host,
            other => {
                bad("redis.consent_fallback", format!("{other:?}"), "must be \"fail_closed\" or \"host\"");
                ConsentFallback::FailClosed
            }
        };
        let sweeper_lease = seconds(self.sweeper_lease, 1.0, 3600.0).unwrap_or_else(|| {
            bad(
                "redis.sweeper_lease",
                self.sweeper_lease.to_string(),
                "must be a number of seconds in [1, 3600]",
            );
            std::time::Duration::ZERO
        });
        match target {
            Some(target) if problems.is_empty() => Ok(Some(RedisSettings {
                target,
                password,
                connect_timeout,
                response_timeout,
                rate_limit_fallback,
                consent_fallback,
                sweeper_lease,
            })),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut RedisConfig)) -> Result<Option<RedisSettings>, Vec<Problem>> {
        let mut c = RedisConfig { hosts: 2, ..RedisConfig::default() };
        f(&mut c);
        c.settings()
    }

    #[test]
    fn no_address_no_redis() {
        assert_eq!(RedisConfig::default().settings().unwrap(), None);
    }

    #[test]
    fn a_url_or_a_cluster() {
        let s = with(|c| c.url = Some("redis://127.0.0.1:6379".into())).unwrap().unwrap();
        assert_eq!(s.target, RedisTarget::Single("redis://127.0.0.1:6379".into()));
        assert_eq!(s.rate_limit_fallback, RateLimitFallback::FailOpen { hosts: 2 });
        let s = with(|c| c.cluster = vec!["redis://127.0.0.1:7000".into()]).unwrap().unwrap();
        assert!(matches!(s.target, RedisTarget::Cluster(_)));
        let both = with(|c| {
            c.url = Some("redis://a:1".into());
            c.cluster = vec!["redis://b:1".into()];
        });
        assert!(both.is_err());
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let e = with(|c| c.url = Some("http://user:s3cret@h".into())).unwrap_err();
        assert_eq!(e.len(), 1);
        let shown = format!("{:?}", e[0]);
        assert!(shown.contains("redis.url") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn fail_open_needs_the_host_count() {
        let e = with(|c| {
            c.url = Some("redis://h:1".into());
            c.hosts = 0;
        })
        .unwrap_err();
        assert!(format!("{:?}", e[0]).contains("redis.hosts"));
        let s = with(|c| {
            c.url = Some("redis://h:1".into());
            c.hosts = 0;
            c.rate_limit_fallback = "fail_closed".into();
        });
        assert_eq!(s.unwrap().unwrap().rate_limit_fallback, RateLimitFallback::FailClosed);
        assert!(with(|c| {
            c.url = Some("redis://h:1".into());
            c.rate_limit_fallback = "maybe".into();
        })
        .is_err());
    }

    #[test]
    fn passwords_come_from_one_place_outside_the_config_namespace() {
        let s = with(|c| {
            c.url = Some("redis://h:1".into());
            c.password_env = Some("REDIS_PASSWORD".into());
        });
        assert_eq!(s.unwrap().unwrap().password, Some(PasswordSource::Env("REDIS_PASSWORD".into())));
        assert!(with(|c| {
            c.url = Some("redis://h:1".into());
            c.password_env = Some("AWSWHITELIST_X".into());
        })
        .is_err());
        assert!(with(|c| {
            c.url = Some("redis://h:1".into());
            c.password_env = Some("A".into());
            c.password_file = Some("/f".into());
        })
        .is_err());
        assert!(with(|c| {
            c.url = Some("redis://h:1".into());
            c.connect_timeout = 0.0;
        })
        .is_err());
    }

    #[test]
    fn consent_fails_closed_and_the_lease_is_bounded_unless_said_otherwise() {
        let s = with(|c| c.url = Some("redis://h:1".into())).unwrap().unwrap();
        assert_eq!(s.consent_fallback, ConsentFallback::FailClosed);
        assert_eq!(s.sweeper_lease, std::time::Duration::from_secs(30));
        let s = with(|c| {
            c.url = Some("redis://h:1".into());
            c.consent_fallback = "host".into();
            c.sweeper_lease = 2.5;
        });
        let s = s.unwrap().unwrap();
        assert_eq!((s.consent_fallback, s.sweeper_lease.as_millis()), (ConsentFallback::Host, 2500));
        for bad in [
            |c: &mut RedisConfig| c.consent_fallback = "open".into(),
            |c: &mut RedisConfig| c.sweeper_lease = 0.5,
        ] {
            let e = with(|c| {
                c.url = Some("redis://h:1".into());
                bad(c);
            })
            .unwrap_err();
            assert!(format!("{e:?}").contains("redis."), "{e:?}");
        }
    }
}
