//! The sweeper's lease: one holder in the whole fleet, so expired rules are removed by one
//! sweeper, not one per host.
//!
//! Taking it is one script: if nobody holds the lease, `INCR` the fencing counter and `SET NX
//! PX` the lease to `<token>:<fence>` (the token is 128 random bits only this holder knows).
//! Renewal and release are compare-and-set scripts: they act only while the lease still holds
//! this holder's token and fence and the counter still holds this fence, so a holder that lost
//! the lease cannot extend or delete its successor's.
//!
//! Fencing a paused holder: the holder keeps a local, monotonic deadline — the time it *sent*
//! the taking or renewing call, plus the lease time, minus a margin — which is always before
//! Redis lets the key expire (Redis starts its clock only when the call arrives). Before each
//! revoke the sweeper renews through Redis and requires that deadline still ahead
//! ([`Lease::check`]). What no lease can do: EC2 does not check a fence token, so a holder
//! paused *between* that check and the moment EC2 applies its revoke (a stop signal, a stalled
//! host, an AWS call retried for long) can still act after losing the lease. The bound is the
//! margin for pauses up to it, and beyond that one revoke per paused holder (the one it was
//! about to send); a second revoke of a rule another sweeper already removed is answered
//! `InvalidPermission.NotFound` and recorded as `not_present`, changing nothing.

use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::Script;

use super::{keys, Fleet};

/// KEYS: lease, fence. ARGV: token, ttl (ms). The new fence, or 0 when someone holds it.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
if redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'NX', 'PX', ARGV[2]) then return fence end
return 0",
    )
});
/// KEYS: lease, fence. ARGV: token, fence, ttl (ms). 1 when renewed, 0 when not ours any more.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ':' .. ARGV[2] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[3])",
    )
});
/// KEYS: lease, fence. ARGV: token, fence. Deletes the lease only while it is ours.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ':' .. ARGV[2] then return 0 end
return redis.call('DEL', KEYS[1])",
    )
});

/// The part of the lease time a holder does not count on: Redis' clock and ours may differ in
/// rate, and the revoke after a check takes a moment to send.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(200)).min(ttl / 2)
}

/// Until when a holder may act on a lease taken or renewed by a call sent at `sent`.
pub fn deadline(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - margin(ttl)
}

/// How often a holder renews, and a candidate tries to take the lease.
pub fn renew_every(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

/// A lease this holder has: its fence and until when it may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The fencing counter's value when it was taken.
    pub fence: u64,
    /// Local monotonic deadline ([`deadline`]).
    pub until: Instant,
}

/// Where the lease stands after [`Lease::keep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This holder has it (and just took or renewed it).
    Held,
    /// Another holder has it.
    Elsewhere,
    /// Redis did not answer: nobody can say.
    Unknown(String),
}

/// One candidate for the lease (one per host: the host's sweeper worker).
pub struct Lease {
    fleet: std::sync::Arc<Fleet>,
    token: String,
    ttl: Duration,
    held: Mutex<Option<Held>>,
}

impl Lease {
    /// A candidate with a fresh token; `ttl` is `[redis] sweeper_lease`.
    pub fn new(fleet: std::sync::Arc<Fleet>, ttl: Duration) -> Lease {
        Lease { fleet, token: super::lock::token(), ttl, held: Mutex::new(None) }
    }

    /// The lease time.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn held(&self) -> Option<Held> {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, held: Option<Held>) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = held;
    }

    /// The fence of the lease held now (its local deadline ahead), if any.
    pub fn fence_at(&self, now: Instant) -> Option<u64> {
        self.held().filter(|h| now < h.until).map(|h| h.fence)
    }

    /// Renews the lease when held, else tries to take it.
    pub async fn keep(&self) -> Standing {
        let [lease, fence_key] = keys::sweeper_lease();
        let ttl = self.ttl.as_millis().to_string();
        let sent = Instant::now();
        if let Some(h) = self.held() {
            let renewed: Result<i64, _> = self
                .fleet
                .eval(&RENEW, &[&lease, &fence_key], &[self.token.as_str(), &h.fence.to_string(), &ttl])
                .await;
            match renewed {
                Ok(1) => {
                    self.set(Some(Held { fence: h.fence, until: deadline(sent, self.ttl) }));
                    return Standing::Held;
                }
                Ok(_) => {
                    self.set(None);
                    tracing::warn!(
                        event = "sweeper_lease_lost",
                        fence = h.fence,
                        "this host's sweeper lost the fleet's lease (it expired before it was renewed)"
                    );
                }
                // Not renewed, not lost either: the deadline stays where it was.
                Err(e) => return Standing::Unknown(e.to_string()),
            }
        }
        let taken: Result<u64, _> =
            self.fleet.eval(&ACQUIRE, &[&lease, &fence_key], &[self.token.as_str(), &ttl]).await;
        match taken {
            Ok(0) => Standing::Elsewhere,
            Ok(fence) => {
                self.set(Some(Held { fence, until: deadline(sent, self.ttl) }));
                tracing::info!(
                    event = "sweeper_lease",
                    fence,
                    "this host sweeps expired rules for the fleet"
                );
                Standing::Held
            }
            Err(e) => Standing::Unknown(e.to_string()),
        }
    }

    /// The fence before a revoke: renews through Redis and requires the lease still held with
    /// its local deadline ahead; an error says why this holder must not act.
    pub async fn check(&self) -> Result<(), String> {
        if self.held().is_none() {
            return Err("this sweeper does not hold the fleet's lease".into());
        }
        match self.keep().await {
            Standing::Held if self.fence_at(Instant::now()).is_some() => Ok(()),
            Standing::Held | Standing::Elsewhere => Err("the fleet's sweeper lease was lost".into()),
            Standing::Unknown(e) => Err(format!("the fleet's sweeper lease cannot be renewed ({e})")),
        }
    }

    /// Gives the lease up (a draining worker), so another host need not wait for it to expire.
    pub async fn release(&self) {
        if let Some(h) = self.held() {
            self.set(None);
            let [lease, fence_key] = keys::sweeper_lease();
            let released = self
                .fleet
                .eval::<i64, &str>(
                    &RELEASE,
                    &[&lease, &fence_key],
                    &[self.token.as_str(), &h.fence.to_string()],
                )
                .await;
            if matches!(released, Ok(1)) {
                tracing::info!(
                    event = "sweeper_lease_released",
                    fence = h.fence,
                    "this host's sweeper gave the fleet's lease up"
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
