//! Short mutual exclusion across the fleet: a Redis key set with `SET NX PX` to a random token
//! the holder alone knows, kept alive by a renewal task while held (compare-and-`PEXPIRE`), and
//! released by compare-and-delete, so a holder whose lock expired never deletes its successor's.
//! A holder that dies leaves the key to expire after `ttl`; nobody waits longer than that.
//!
//! Used where the host holds an `flock` and the fleet needs the same (a group's count and add,
//! the lead of a group's read). The host's lock is taken first by the callers, so the workers of
//! one host queue in the kernel and only one of them polls Redis.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::Script;

use super::Fleet;

/// `SET key token NX PX ttl`: 1 when taken.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0")
});
/// `PEXPIRE` only while the key still holds our token.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});
/// `DEL` only while the key still holds our token.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

/// Longest pause between two attempts on a held lock.
const POLL_MAX: Duration = Duration::from_millis(100);

/// Why a fleet lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Redis did not answer: the caller falls back to the host's lock.
    #[error("redis does not answer: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another holder kept it for longer than the caller waits.
    #[error("still held elsewhere in the fleet after {0:?}")]
    Busy(Duration),
}

/// A held fleet lock; dropping it stops the renewals and releases it.
pub struct FleetLock {
    /// Kept for its drop, which releases the key.
    _held: Held,
    renewer: tokio::task::JoinHandle<()>,
}

/// A key this caller may hold, released (compare-and-delete, in the background) when dropped.
/// It exists from the first `SET NX`, not only once the answer is read: a caller cancelled
/// while that command is in flight (a read whose client went away) may hold the key without
/// knowing it, and would otherwise leave it to expire after `ttl` while others wait. Releasing
/// a key this caller never took deletes nothing.
struct Held {
    fleet: Arc<Fleet>,
    key: String,
    token: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let (fleet, key, token) =
            (self.fleet.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.token));
        // Released in the background: a release that fails only leaves the key to expire.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = fleet.eval::<i64, &str>(&RELEASE, &[&key], &[token.as_str()]).await;
            });
        }
    }
}

/// 128 random bits in hex: a holder's token, unguessable by any other holder.
pub fn token() -> String {
    let mut bytes = [0u8; 16];
    // A failed system generator leaves zeros: still unique enough with the time mixed in.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl FleetLock {
    /// Waits (polling, at most `wait`) until this caller holds `key`; the key lives `ttl` past
    /// the last renewal, renewed every `ttl / 3` while the lock is held.
    pub async fn acquire(
        fleet: &Arc<Fleet>,
        key: String,
        ttl: Duration,
        wait: Duration,
    ) -> Result<FleetLock, LockError> {
        let held = Held { fleet: fleet.clone(), key, token: token() };
        let (key, token) = (held.key.as_str(), held.token.as_str());
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let taken: i64 = fleet.eval(&ACQUIRE, &[key], &[token, millis(ttl).to_string().as_str()]).await?;
            if taken == 1 {
                break;
            }
            if started.elapsed() >= wait {
                return Err(LockError::Busy(wait));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
        let renewer = tokio::spawn(renew_while_held(fleet.clone(), key.to_string(), token.to_string(), ttl));
        Ok(FleetLock { _held: held, renewer })
    }
}

/// Renews every `ttl / 3` until aborted (or until the lock is found lost: nothing to keep).
async fn renew_while_held(fleet: Arc<Fleet>, key: String, token: String, ttl: Duration) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let renewed: Result<i64, _> =
            fleet.eval(&RENEW, &[&key], &[token.as_str(), millis(ttl).to_string().as_str()]).await;
        if matches!(renewed, Ok(0)) {
            tracing::warn!(
                event = "fleet_lock_lost",
                "a fleet lock expired while held (held longer than its ttl with Redis unreachable)"
            );
            return;
        }
    }
}

impl Drop for FleetLock {
    fn drop(&mut self) {
        // The renewals stop first; then `_held` is dropped, which releases the key.
        self.renewer.abort();
    }
}
