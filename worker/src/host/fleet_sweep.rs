//! The expiry sweeper of a fleet (`[redis]`): which host sweeps — the holder of the fleet's
//! lease ([`crate::fleet::lease`]), fenced before each revoke — and what it sweeps: the fleet's
//! expiry index, a Redis set into which every host's sweeper worker copies its own index file
//! on each of its turns (the host file stays the durable record; the copy heals a Redis that
//! restarted empty).
//!
//! While Redis does not answer, nobody can know who holds the lease. After one lease time
//! without an answer (by then any holder's lease has run out) each host sweeps what it indexed
//! itself, as without Redis: logged once when it starts and once when it ends, each such sweep
//! counted in `redis_fallbacks_total{feature="sweeper",mode="host"}`. Two hosts may then both
//! sweep a group; the second revoke of a rule is answered `InvalidPermission.NotFound` by EC2 and
//! recorded as `not_present`, changing nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::Script;
use tracing::{info, warn};

use super::expiry_index::Target;
use crate::fleet::lease::{renew_every, Lease, Standing};
use crate::fleet::{keys, Fleet};
use crate::whitelist::SweepFence;

/// KEYS: the index. ARGV: targets (JSON). Adds each.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new("for _, t in ipairs(ARGV) do redis.call('SADD', KEYS[1], t) end return #ARGV")
});
/// KEYS: the index. Every target.
static MEMBERS: LazyLock<Script> = LazyLock::new(|| Script::new("return redis.call('SMEMBERS', KEYS[1])"));

/// Whose turn it is to sweep, as this host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This host holds the lease: it sweeps the fleet's index, fenced.
    Fleet,
    /// Another host holds it.
    Elsewhere,
    /// Redis does not answer, for less than a lease time yet: a holder may still be sweeping.
    Wait,
    /// Redis has not answered for a lease time: this host sweeps its own index.
    Host,
}

/// One host's part in the fleet's sweeping.
pub struct FleetSweep {
    fleet: Arc<Fleet>,
    lease: Lease,
    last_answer: Instant,
    on_fallback: bool,
}

impl FleetSweep {
    /// A candidate for the lease of `[redis] sweeper_lease`.
    pub fn new(fleet: Arc<Fleet>) -> FleetSweep {
        let ttl = fleet.settings().sweeper_lease;
        FleetSweep {
            lease: Lease::new(fleet.clone(), ttl),
            fleet,
            last_answer: Instant::now(),
            on_fallback: false,
        }
    }

    /// How often to take a turn: often enough to renew the lease, and to take it over within
    /// the lease time when its holder dies.
    pub fn every(&self) -> Duration {
        renew_every(self.lease.ttl())
    }

    /// Copies `local` (this host's index) into the fleet's, then renews or tries to take the
    /// lease; says whose turn it is.
    pub async fn turn(&mut self, local: &BTreeSet<Target>) -> Turn {
        let members: Vec<String> = local.iter().filter_map(|t| serde_json::to_string(t).ok()).collect();
        if !members.is_empty() {
            // A failure shows in the lease call just below.
            let _ = self
                .fleet
                .eval::<i64, &str>(
                    &PUBLISH,
                    &[&keys::expiry_index()],
                    &members.iter().map(String::as_str).collect::<Vec<_>>(),
                )
                .await;
        }
        match self.lease.keep().await {
            Standing::Held => self.answered(Turn::Fleet),
            Standing::Elsewhere => self.answered(Turn::Elsewhere),
            Standing::Unknown(e) if self.last_answer.elapsed() >= self.lease.ttl() => {
                if !self.on_fallback {
                    self.on_fallback = true;
                    warn!(event = "sweeper_fallback", error = %e, "redis has not answered for a sweeper lease time: this host sweeps the groups it indexed itself until it does (other hosts may too; a second revoke of a removed rule changes nothing)");
                }
                crate::metrics::global().redis_fallbacks.with_label_values(&["sweeper", "host"]).inc();
                Turn::Host
            }
            Standing::Unknown(_) => Turn::Wait,
        }
    }

    fn answered(&mut self, turn: Turn) -> Turn {
        self.last_answer = Instant::now();
        if self.on_fallback {
            self.on_fallback = false;
            info!(event = "sweeper_fleet", "redis answers again: one sweeper for the fleet again");
        }
        turn
    }

    /// Every target in the fleet's index (entries that do not parse are skipped).
    pub async fn fleet_targets(&self) -> Result<BTreeSet<Target>, String> {
        let members: Vec<String> = self
            .fleet
            .eval::<_, u64>(&MEMBERS, &[&keys::expiry_index()], &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(members.iter().filter_map(|m| serde_json::from_str(m).ok()).collect())
    }

    /// Gives the lease up, if held (the worker drains).
    pub async fn release(&self) {
        self.lease.release().await;
    }

    /// The fence the sweep asks before each revoke.
    pub fn fence(&self) -> LeaseFence<'_> {
        LeaseFence(&self.lease)
    }
}

/// The lease as the domain's [`SweepFence`].
pub struct LeaseFence<'a>(&'a Lease);

impl SweepFence for LeaseFence<'_> {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.0.check())
    }
}
