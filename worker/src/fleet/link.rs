//! The worker's one link to Redis: built in the worker after the fork (a connection never
//! crosses a fork), multiplexed (every request of the worker shares it), lazy (a worker boots
//! and serves while Redis is down), with timeouts, and with a health state that is logged once
//! per change, exported as the `redis_up` gauge and shown by `/health`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, IntoConnectionInfo, RedisResult, Script, ToRedisArgs};

use super::settings::{redact, RedisSettings, RedisTarget};

enum Conn {
    Single(ConnectionManager),
    Cluster(Box<ClusterLink>),
}

/// A cluster client, its connection once made, and when connecting last failed.
struct ClusterLink {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::Mutex<(Option<ClusterConnection>, Option<Instant>)>,
}

/// A worker's link to the fleet's Redis, and whether Redis answers.
pub struct Fleet {
    conn: Conn,
    settings: RedisSettings,
    password: Option<String>,
    up: AtomicBool,
    down_reason: Mutex<Option<String>>,
}

/// How long a cluster link that failed to connect waits before trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

impl Fleet {
    /// The link, not yet connected (the first use connects). Errors name the bad setting and
    /// show addresses redacted.
    pub fn new(settings: &RedisSettings) -> Result<Fleet, String> {
        let password = settings.read_password()?;
        let info = |url: &str| {
            let mut info = url
                .into_connection_info()
                .map_err(|e| format!("redis address {} is not usable: {e}", redact(url)))?;
            if let Some(p) = &password {
                let r = info.redis_settings().clone().set_password(p);
                info = info.set_redis_settings(r);
            }
            Ok::<_, String>(info)
        };
        let conn = match &settings.target {
            RedisTarget::Single(url) => {
                let client =
                    redis::Client::open(info(url)?).map_err(|e| format!("redis.url {}: {e}", redact(url)))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.response_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|e| format!("redis.url {}: {e}", redact(url)))?,
                )
            }
            RedisTarget::Cluster(urls) => {
                let nodes = urls.iter().map(|u| info(u)).collect::<Result<Vec<_>, _>>()?;
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(settings.response_timeout)
                    .retries(1);
                if let Some(p) = &password {
                    builder = builder.password(p);
                }
                let client = builder.build().map_err(|e| format!("redis.cluster: {e}"))?;
                Conn::Cluster(Box::new(ClusterLink { client, conn: tokio::sync::Mutex::new((None, None)) }))
            }
        };
        crate::metrics::global().redis_up.set(1);
        Ok(Fleet {
            conn,
            settings: settings.clone(),
            password,
            up: AtomicBool::new(true),
            down_reason: Mutex::new(None),
        })
    }

    /// The settings the link was built from.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Runs `script` (EVALSHA, loading it once when the server does not know it) on `keys`,
    /// within the response timeout; records whether Redis answered.
    pub async fn eval<T: FromRedisValue, A: ToRedisArgs>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[A],
    ) -> RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a);
        }
        let deadline = self.settings.connect_timeout + self.settings.response_timeout;
        let run = async {
            match &self.conn {
                Conn::Single(m) => invocation.invoke_async(&mut m.clone()).await,
                Conn::Cluster(link) => {
                    let mut c = link.connection().await?;
                    invocation.invoke_async(&mut c).await
                }
            }
        };
        let result = match tokio::time::timeout(deadline, run).await {
            Ok(r) => r,
            Err(_) => {
                Err(redis::RedisError::from((redis::ErrorKind::Io, "no answer within the redis timeouts")))
            }
        };
        self.record(result.as_ref().err());
        result
    }

    /// Whether Redis answers a PING, through the path every call takes (a script, the
    /// timeouts, the cluster's routing): `doctor`'s check. The error is shown with any password
    /// scrubbed.
    pub async fn ping(&self) -> Result<(), String> {
        match self.eval::<String, u64>(&Script::new("return redis.call('PING')"), &[], &[]).await {
            Ok(answer) if answer == "PONG" => Ok(()),
            Ok(other) => Err(format!("it answered PING with {other:?}")),
            Err(e) => {
                let text = e.to_string();
                Err(match self.password.as_deref().filter(|p| !p.is_empty()) {
                    Some(p) => text.replace(p, "***"),
                    None => text,
                })
            }
        }
    }

    /// Whether the last call to Redis was answered.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Why Redis is considered down (`None` while it answers).
    pub fn down_reason(&self) -> Option<String> {
        self.down_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notes the outcome of one call: logs and sets the gauge only when the state changes.
    fn record(&self, error: Option<&redis::RedisError>) {
        let up = error.is_none();
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        crate::metrics::global().redis_up.set(i64::from(up));
        let mut reason = self.down_reason.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            None => {
                *reason = None;
                tracing::warn!(
                    event = "redis_up",
                    "redis answers again: rate limits, cache counters, consent records, group locks and read single flight are fleet-wide again"
                );
            }
            Some(e) => {
                let mut text = e.to_string();
                if let Some(p) = self.password.as_deref().filter(|p| !p.is_empty()) {
                    text = text.replace(p, "***");
                }
                tracing::error!(event = "redis_down", error = %text, "redis does not answer: features fall back as [redis] says until it does ({text})");
                *reason = Some(text);
            }
        }
    }
}

impl ClusterLink {
    /// The cluster connection, connecting when there is none (at most every
    /// [`RECONNECT_PAUSE`], so a dead cluster is not hammered by every request).
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &slot.0 {
            return Ok(c.clone());
        }
        if slot.1.is_some_and(|t| t.elapsed() < RECONNECT_PAUSE) {
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "redis cluster unreachable")));
        }
        match self.client.get_async_connection().await {
            Ok(c) => {
                *slot = (Some(c.clone()), None);
                Ok(c)
            }
            Err(e) => {
                slot.1 = Some(Instant::now());
                Err(e)
            }
        }
    }
}
