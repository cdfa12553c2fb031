//! The expiry sweep: a group's rules whose verified expiry has passed are revoked, each
//! audited as `expire`; a rule whose marker does not verify is reported, never removed.

use std::net::IpAddr;
use std::time::SystemTime;

use super::{Error, RuleView, Whitelist};
use crate::caller::Caller;
use crate::whitelist::audit::{answered, About, Change};
use crate::whitelist::firewall::{FirewallError, Scope};
use crate::whitelist::marker::Marker;
use crate::whitelist::rules::RuleSpec;
use crate::whitelist::target::{host_net, Protocol};

/// Asked by the sweeper before each expired rule is revoked: whether this sweeper may still
/// act (in a fleet, whether it still holds the sweeper lease). An error stops the sweep before
/// the revoke, with nothing recorded or changed.
pub trait SweepFence: Send + Sync {
    /// `Ok` while this sweeper may act; else why not.
    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>>;
}

/// No fence: the host's sweeper, whose flock the kernel holds for it.
pub struct Unfenced;

impl SweepFence for Unfenced {
    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

impl Whitelist {
    /// Removes the group's rules whose verified expiry has passed; returns what was removed.
    /// Rules whose marker does not verify are reported, never removed.
    /// Nothing is removed through a read-only server or profile when `sweep_when_read_only` is
    /// off (see [`crate::whitelist::Policy::may_sweep`]).
    pub async fn sweep(&self, scope: &Scope, group: &str, now: SystemTime) -> Result<Vec<RuleView>, Error> {
        self.sweep_fenced(scope, group, now, &Unfenced).await
    }

    /// [`Whitelist::sweep`], asking `fence` before each revoke; a fence that says no stops the
    /// sweep (`Unavailable`) before that rule's intent is recorded.
    pub async fn sweep_fenced(
        &self,
        scope: &Scope,
        group: &str,
        now: SystemTime,
        fence: &dyn SweepFence,
    ) -> Result<Vec<RuleView>, Error> {
        if !self.policy.may_sweep(scope.profile.as_deref()) {
            return Ok(Vec::new());
        }
        let rules = self.fresh(scope, group).await?;
        let mut removed = Vec::new();
        for r in rules.iter() {
            match r.marker(&self.key) {
                Marker::Valid { expires: Some(at) } if at <= now => {}
                Marker::Invalid(why) => {
                    self.report(r, why);
                    continue;
                }
                _ => continue,
            }
            let spec = RuleSpec {
                group_id: group.to_string(),
                cidr: r.cidr.unwrap_or_else(|| host_net(IpAddr::from([0, 0, 0, 0]))),
                protocol: Protocol::from_ec2(&r.protocol).unwrap_or(Protocol::All),
                ports: r.ports(),
            };
            let who = Caller { identity: Some("expiry-sweeper".into()), ..Caller::default() };
            let about = About {
                action: "expire",
                spec: &spec,
                rule_id: Some(&r.rule_id),
                description: &r.description,
                expires: None,
            };
            let change = Change::new(about, &who, scope);
            fence.check().await.map_err(|e| Error::Unavailable(format!("sweep of {group} stopped: {e}")))?;
            change.intend(&self.recorder).await?;
            let gone = self.firewall.revoke(scope, group, std::slice::from_ref(&r.rule_id));
            let (change, gone) = answered(change, gone).await;
            match gone {
                Ok(()) => {}
                Err(FirewallError::RuleNotFound) => {
                    change.finish(&self.recorder, "not_present", None, None).await?;
                    continue;
                }
                Err(e) => return Err(self.failed(&change, e).await),
            }
            self.versions.changed(group).await;
            change.finish(&self.recorder, "expired", None, None).await?;
            removed.push(self.view(r));
        }
        Ok(removed)
    }
}
