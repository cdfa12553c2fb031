//! What `[redis]` says, typed: where Redis is, how its password is found, how long to wait,
//! and what each shared feature does while Redis cannot answer.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One Redis server (`redis://`, `rediss://`) or the seed nodes of a Redis Cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `[redis] url`.
    Single(String),
    /// `[redis] cluster`: any reachable nodes; the client learns the rest.
    Cluster(Vec<String>),
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Single(u) => write!(f, "Single({})", redact(u)),
            RedisTarget::Cluster(us) => {
                f.debug_tuple("Cluster").field(&us.iter().map(|u| redact(u)).collect::<Vec<_>>()).finish()
            }
        }
    }
}

/// Where the Redis password comes from; the configuration holds the place, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file holding the password (trailing newline ignored).
    File(PathBuf),
    /// The environment variable of this name.
    Env(String),
}

/// What the rate limits do while Redis cannot answer (`[redis] rate_limit_fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitFallback {
    /// Limit on this host alone, each limit divided by `hosts` (so the fleet as a whole stays
    /// near its configured limit).
    FailOpen {
        /// Hosts in the fleet (`[redis] hosts`).
        hosts: u32,
    },
    /// Refuse limited requests with 503 until Redis answers again.
    FailClosed,
}

/// What a consent answer does while Redis cannot record it as used (`[redis]
/// consent_fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentFallback {
    /// Refuse the answer (the person is asked again once Redis answers): a consent is never
    /// honoured twice anywhere in the fleet.
    FailClosed,
    /// Record it in this host's files only: honoured once per host, so a replay on another
    /// host during the outage could be honoured again.
    Host,
}

/// `[redis]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// The server or cluster.
    pub target: RedisTarget,
    /// The password, when it is not in the URL.
    pub password: Option<PasswordSource>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for one answer.
    pub response_timeout: Duration,
    /// The rate limits' behaviour while Redis is down.
    pub rate_limit_fallback: RateLimitFallback,
    /// Consent answers' behaviour while Redis is down.
    pub consent_fallback: ConsentFallback,
    /// The fleet sweeper's lease time: a dead holder is replaced within it.
    pub sweeper_lease: Duration,
}

impl RedisSettings {
    /// The password from its file or variable; the error names the place, never the secret.
    pub fn read_password(&self) -> Result<Option<String>, String> {
        match &self.password {
            None => Ok(None),
            Some(PasswordSource::File(p)) => std::fs::read_to_string(p)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read redis.password_file {}: {e}", p.display())),
            Some(PasswordSource::Env(name)) => std::env::var(name)
                .map(Some)
                .map_err(|_| format!("redis.password_env names {name}, which is not set")),
        }
    }
}

/// `url` with any password replaced by `***`, for every message that shows a Redis address.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let user = rest[..at].split_once(':').map_or("", |(u, _)| u);
    // No colon: redis-rs reads the user info as a username, but say nothing of it either way.
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

/// Whether `url` names a Redis server this build can reach (`redis://` or `rediss://`, with a
/// host), for the configuration's check.
pub fn valid_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "redis" | "rediss") && !rest.is_empty() && !rest.starts_with(['/', '@'])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("redis://:s3cret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(redact("rediss://app:s3cret@r.example:6380"), "rediss://app:***@r.example:6380");
        assert_eq!(redact("redis://s3cret@h"), "redis://:***@h");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
        let t = RedisTarget::Cluster(vec!["redis://:pw@a:1".into()]);
        assert!(!format!("{t:?}").contains("pw"));
        assert!(!format!("{:?}", RedisTarget::Single("redis://u:pw@a".into())).contains("pw"));
    }

    #[test]
    fn urls_are_redis_urls() {
        assert!(valid_url("redis://127.0.0.1:6379"));
        assert!(valid_url("rediss://h:6380/1"));
        assert!(!valid_url("http://h"));
        assert!(!valid_url("redis://"));
        assert!(!valid_url("127.0.0.1:6379"));
    }
}
