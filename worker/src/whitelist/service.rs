//! The four operations — add, remove, list, check — on top of the `Firewall` trait: input
//! resolved and checked against policy before any AWS call, changes audited durably before the
//! answer, reads cached with change counters shared by the host. Beside it: the calls' shapes
//! (`calls.rs`), the expiry sweep (`sweep.rs`), reads (`reads.rs`), plans and dry runs, and the
//! lifecycle tools.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tracing::warn;

use super::audit::{all_answered, answered, About, Change, LoggedEntry, Recorder};
use super::cache::{GroupCache, Lookup, Rules, Versions};
use super::consent::{Action, Asker, NobodyToAsk, ProposedChange};
use super::description::{self, rfc3339};
pub use super::error::Error;
use super::firewall::{Firewall, FirewallError, Scope};
use super::flight::{Flights, NotShared, SharedRead, SharedReads};
use super::gate::{self, proposed, stamped, Approval};
pub use super::ids::check_group_id;
use super::ids::{entry_target, is_prefix_list};
use super::marker::{Invalid, Marker, MarkerKey};
use super::policy::{Policy, Refusal};
use super::prefix_list::Targets;
use super::reconcile::{self, Reconciled};
use super::rules::{ExistingRule, RuleSpec};
use super::target::{host_net, parse_cidr, parse_ports, NamedPort, Ports, Protocol};
use crate::caller::Caller;

fn invalid(field: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::Invalid { field, message }
}

/// Holds a group locked until dropped.
pub type GroupGuard = Box<dyn Send>;
/// What [`GroupLocks::hold`] returns: the guard, or why the lock cannot be had.
pub type GroupLockFuture<'a> = Pin<Box<dyn Future<Output = Result<GroupGuard, String>> + Send + 'a>>;

/// Mutual exclusion per security group across every worker of the host (of the fleet, with
/// `[redis]`), held while an add under `max_rules_per_group` counts the group's rules and adds
/// one (else two workers can each count one place left and both take it). The host implements
/// it with files, the fleet with Redis; tests in memory.
pub trait GroupLocks: Send + Sync {
    /// Waits until this caller holds `group`'s lock (a validated group id).
    fn hold<'a>(&'a self, group: &'a str) -> GroupLockFuture<'a>;
}

/// The whitelist service of one worker.
pub struct Whitelist {
    firewall: Arc<dyn Firewall>,
    policy: Policy,
    defaults: Defaults,
    port_mappings: Vec<NamedPort>,
    cache: GroupCache,
    /// One reader per group in this worker, then one per host (or fleet) through `shared`.
    flights: Flights,
    shared: Arc<dyn SharedReads>,
    versions: Arc<dyn Versions>,
    recorder: Arc<dyn Recorder>,
    key: MarkerKey,
    /// Rules (id and description) whose bad marker was already reported by this process.
    reported: Mutex<HashSet<(String, String)>>,
    group_locks: Arc<dyn GroupLocks>,
}

/// Most bad markers remembered as reported; past it, the memory starts again.
const REPORTED_MAX: usize = 4096;

/// Everything a `Whitelist` is built from.
pub struct Parts {
    /// EC2 (or a fake).
    pub firewall: Arc<dyn Firewall>,
    /// Policy.
    pub policy: Policy,
    /// Defaults.
    pub defaults: Defaults,
    /// Named ports from config.
    pub port_mappings: Vec<NamedPort>,
    /// Read cache lifetime.
    pub cache_ttl: Duration,
    /// Shared change counters.
    pub versions: Arc<dyn Versions>,
    /// Audit log.
    pub recorder: Arc<dyn Recorder>,
    /// The key rule markers are signed with (the same on every host).
    pub marker_key: MarkerKey,
    /// The host's per-group locks (taken only when `max_rules_per_group` is set).
    pub group_locks: Arc<dyn GroupLocks>,
}

impl Whitelist {
    /// Builds the service.
    pub fn new(p: Parts) -> Whitelist {
        Whitelist {
            firewall: Targets::wrap(p.firewall),
            policy: p.policy,
            defaults: p.defaults,
            port_mappings: p.port_mappings,
            cache: GroupCache::new(p.cache_ttl),
            flights: Flights::default(),
            shared: Arc::new(NotShared),
            versions: p.versions,
            recorder: p.recorder,
            key: p.marker_key,
            reported: Mutex::new(HashSet::new()),
            group_locks: p.group_locks,
        }
    }

    /// Shares group reads with the host's other workers (single flight across the host).
    pub fn with_shared_reads(mut self, shared: Arc<dyn SharedReads>) -> Whitelist {
        self.shared = shared;
        self
    }

    /// Adds a rule, or renews the identical managed one already there when a `duration` is
    /// given (`renewed`, see `lifecycle/renew.rs`), or reports it (`changed: false`); a change
    /// that needs a person's consent is refused (nobody to ask).
    pub async fn add(&self, scope: &Scope, args: &AddArgs, who: &Caller) -> Result<Added, Error> {
        self.add_with(scope, args, who, &NobodyToAsk).await
    }

    /// [`Whitelist::add`], asking `asker` when `[policy.consent]` wants a person's consent.
    pub async fn add_with(
        &self,
        scope: &Scope,
        args: &AddArgs,
        who: &Caller,
        asker: &dyn Asker,
    ) -> Result<Added, Error> {
        let plan = self.plan_add(scope, args, who)?;
        let (spec, expires) = (&plan.spec, plan.expires);
        let description = plan.description.clone().unwrap_or_default();
        let about = About { action: "add", spec, rule_id: None, description: &description, expires };
        let proposed = ProposedChange {
            duration: plan.lasting,
            expires,
            details: plan.details.clone(),
            ..proposed(Action::Add, spec, scope, who)
        };
        let approval = self.consent(&proposed, asker, Change::new(about, who, scope)).await?;
        // Under a cap, count and add under the host's lock on the group (held to the end).
        let _counting = match self.policy.max_rules_per_group {
            Some(_) => Some(self.group_locks.hold(&spec.group_id).await.map_err(|e| {
                Error::Unavailable(format!(
                    "nothing was changed: cannot lock {} to count its rules against max_rules_per_group: {e}",
                    spec.group_id
                ))
            })?),
            None => None,
        };
        let rules = self.fresh(scope, &spec.group_id).await?;
        if let Some(existing) = self.compare_add(scope, &plan, &rules).await? {
            return self.renew_or_keep(scope, args, &plan, existing, who, approval.as_ref()).await;
        }
        let about = About { action: "add", spec, rule_id: None, description: &description, expires };
        let change = stamped(Change::new(about, who, scope), approval.as_ref());
        change.intend(&self.recorder).await?;
        let (change, authorized) = answered(change, self.firewall.authorize(scope, spec, &description)).await;
        let rule_id = match authorized {
            Ok(id) => id,
            Err(FirewallError::Duplicate) => {
                // Another request added the same rule between our read and our write.
                let rules = self.fresh(scope, &spec.group_id).await?;
                if let Some(existing) = rules.iter().find(|r| r.matches(spec)) {
                    change.finish(&self.recorder, "already_present", Some(&existing.rule_id), None).await?;
                    return Ok(Added::unchanged(self.view(existing)));
                }
                return Err(self.failed(&change, FirewallError::Duplicate).await);
            }
            Err(e) => return Err(self.failed(&change, e).await),
        };
        self.versions.changed(&spec.group_id).await;
        change.finish(&self.recorder, "added", Some(&rule_id), None).await?;
        let rule = RuleView {
            rule_id: rule_id.clone(),
            group_id: spec.group_id.clone(),
            cidr_ip: Some(spec.cidr.to_string()),
            source: None,
            protocol: spec.protocol.to_string(),
            port: spec.ports.to_string(),
            from_port: spec.ports.from,
            to_port: spec.ports.to,
            description: description.clone(),
            expires_at: expires.map(rfc3339),
            managed: true,
        };
        let until = rule.expires_at.as_ref().map_or(String::new(), |at| format!(" until {at}"));
        let message = format!("allowed {} in {} (rule {rule_id}){until}", rule.summary(), spec.group_id);
        Ok(Added { changed: true, renewed: false, previous_expires_at: None, rule, message })
    }

    /// A rule added with per-call keys expires only if the sweeper, which runs with the
    /// server's own identity, can remove it: asked of EC2 with a dry run before the add.
    async fn check_server_can_revoke(
        &self,
        scope: &Scope,
        spec: &RuleSpec,
        at: SystemTime,
    ) -> Result<(), Error> {
        let server = Scope { keys: None, ..scope.clone() };
        match self.firewall.can_revoke(&server, spec).await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Policy(Refusal {
                setting: "aws.allow_per_call_credentials",
                message: format!(
                    "this rule would expire at {} but would never be removed: expired rules are removed \
                     with this server's own AWS identity, and a dry run of removing it from {} with that \
                     identity failed ({e}); omit `credentials`, omit `duration`, or grant the server's \
                     identity ec2:RevokeSecurityGroupIngress",
                    rfc3339(at),
                    spec.group_id
                ),
            })),
        }
    }

    /// Removes the exact rule, or reports that it was not there (`changed: false`); a removal
    /// that needs a person's consent is refused (nobody to ask).
    pub async fn remove(&self, scope: &Scope, args: &RuleArgs, who: &Caller) -> Result<Removed, Error> {
        self.remove_with(scope, args, who, &NobodyToAsk).await
    }

    /// [`Whitelist::remove`], asking `asker` when `[policy.consent]` wants a person's consent.
    pub async fn remove_with(
        &self,
        scope: &Scope,
        args: &RuleArgs,
        who: &Caller,
        asker: &dyn Asker,
    ) -> Result<Removed, Error> {
        let plan = self.plan_remove(scope, args, who)?;
        let spec = &plan.spec;
        let rules = self.fresh(scope, &spec.group_id).await?;
        let matching = self.compare_remove(&plan, &rules)?;
        let wanted = plan.summary();
        if matching.is_empty() {
            let message = format!("{wanted} was not allowed in {}; nothing removed", spec.group_id);
            return Ok(Removed { changed: false, removed: Vec::new(), message });
        }
        let ids: Vec<String> = matching.iter().map(|r| r.rule_id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let proposed = ProposedChange { rule_ids: sorted, ..proposed(Action::Remove, spec, scope, who) };
        let joined = ids.join(",");
        let about = About {
            action: "remove",
            spec,
            rule_id: Some(&joined),
            description: &matching[0].description,
            expires: None,
        };
        let approval = self.consent(&proposed, asker, Change::new(about, who, scope)).await?;
        let changes = self.intend_removal(&matching, spec, who, scope, approval.as_ref()).await?;
        let (changes, revoked) =
            all_answered(changes, self.firewall.revoke(scope, &spec.group_id, &ids)).await;
        match revoked {
            Ok(()) => {}
            Err(FirewallError::RuleNotFound) => {
                self.versions.changed(&spec.group_id).await;
                self.finish_all(&changes, "not_present", None).await?;
                let message = format!("{wanted} was already removed from {} by someone else", spec.group_id);
                return Ok(Removed { changed: false, removed: Vec::new(), message });
            }
            Err(e) => {
                self.finish_all(&changes, "failed", Some(e.to_string())).await?;
                return Err(e.into());
            }
        }
        self.versions.changed(&spec.group_id).await;
        self.finish_all(&changes, "removed", None).await?;
        let removed: Vec<RuleView> = matching.into_iter().map(|r| self.view(r)).collect();
        let message = format!("removed {wanted} from {} (rule {})", spec.group_id, ids.join(", "));
        Ok(Removed { changed: true, removed, message })
    }

    /// Every ingress rule of a group.
    pub async fn list(&self, scope: &Scope, group: &str, who: &Caller) -> Result<Vec<RuleView>, Error> {
        let group = check_group_id(group)?;
        self.policy.check_group(&group)?;
        check_caller_group(who, &group)?;
        Ok(self.cached(scope, &group).await?.iter().map(|r| self.view(r)).collect())
    }

    /// Whether the exact rule exists, and which one matched.
    pub async fn check(&self, scope: &Scope, args: &RuleArgs, who: &Caller) -> Result<Checked, Error> {
        let spec = self.resolve(args, who)?;
        let rules = self.cached(scope, &spec.group_id).await?;
        let wanted = format!("{} {} from {}", spec.protocol, spec.ports, spec.cidr);
        Ok(match rules.iter().find(|r| r.matches(&spec)) {
            Some(r) => Checked {
                exists: true,
                message: format!("{wanted} is allowed in {} by rule {}", spec.group_id, r.rule_id),
                rule: Some(self.view(r)),
            },
            None => Checked {
                exists: false,
                rule: None,
                message: format!("{wanted} is not allowed in {}", spec.group_id),
            },
        })
    }

    /// A rule as the tools show it, "managed" only when its marker verifies.
    fn view(&self, r: &ExistingRule) -> RuleView {
        RuleView::of(r, r.marker(&self.key))
    }

    /// Reports a rule whose marker does not verify (once per rule and description per
    /// process): a warning and `awswl_marker_invalid_total{reason}`.
    fn report(&self, r: &ExistingRule, why: Invalid) {
        let first = {
            let mut seen = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.len() >= REPORTED_MAX {
                seen.clear();
            }
            seen.insert((r.rule_id.clone(), r.description.clone()))
        };
        if first {
            crate::metrics::global().marker_invalid.with_label_values(&[why.label()]).inc();
            warn!(
                event = "marker_invalid",
                group = %r.group_id,
                rule_id = %r.rule_id,
                reason = why.label(),
                description = %r.description,
                "rule {} in {} is not managed by this service: {}; it is never swept, and removed only with [policy] remove_unmanaged = true",
                r.rule_id,
                r.group_id,
                why.explain()
            );
        }
    }

    fn resolve(&self, a: &RuleArgs, who: &Caller) -> Result<RuleSpec, Error> {
        let group_id = check_group_id(&a.group)?;
        self.policy.check_group(&group_id)?;
        check_caller_group(who, &group_id)?;
        let cidr = if a.ip_address.trim().eq_ignore_ascii_case("current") {
            let addr = who.addr.ok_or_else(|| Error::Invalid {
                field: "ip_address",
                message: "\"current\" means your address as this server sees it, and this transport has none; give an address".into(),
            })?;
            host_net(addr)
        } else {
            parse_cidr(&a.ip_address).map_err(invalid("ip_address"))?
        };
        if is_prefix_list(&group_id) {
            let (protocol, ports) = entry_target(&group_id, a.port.as_deref(), a.protocol.as_deref())?;
            return Ok(RuleSpec { group_id, cidr, protocol, ports });
        }
        let protocol = match &a.protocol {
            Some(p) => Protocol::parse(p).map_err(invalid("protocol"))?,
            None => self.defaults.protocol,
        };
        let ports = if protocol.has_ports() {
            parse_ports(a.port.as_deref().unwrap_or(&self.defaults.port), &self.port_mappings)
                .map_err(invalid("port"))?
        } else {
            match a.port.as_deref().map(str::trim) {
                None | Some("") | Some("all") | Some("-1") => Ports::ANY,
                Some(p) => {
                    return Err(Error::Invalid {
                        field: "port",
                        message: format!("port {p:?} does not apply to protocol {protocol}, which opens every port; leave port out"),
                    })
                }
            }
        };
        Ok(RuleSpec { group_id, cidr, protocol, ports })
    }

    /// Completes the changes whose intent is in the audit log without an outcome, for which
    /// `settled` says the writer can no longer be making them (see `whitelist::reconcile`).
    pub async fn reconcile(
        &self,
        settled: &(dyn Fn(&LoggedEntry) -> bool + Sync),
    ) -> Result<Vec<Result<Reconciled, String>>, Error> {
        reconcile::run(&*self.firewall, &self.recorder, settled).await.map_err(Error::Audit)
    }

    /// Records a failed AWS call as the change's outcome; returns the error to give the caller.
    async fn failed(&self, change: &Change, e: FirewallError) -> Error {
        match change.finish(&self.recorder, "failed", None, Some(e.to_string())).await {
            Ok(()) => e.into(),
            Err(audit) => audit,
        }
    }

    /// The one place a change meets `[policy.consent]`: after the request is resolved and the
    /// policy allowed it, before any AWS write (see [`gate::check`]). `record` describes the
    /// change for the audit entry of a decline.
    async fn consent(
        &self,
        change: &ProposedChange,
        asker: &dyn Asker,
        record: Change,
    ) -> Result<Option<Approval>, Error> {
        gate::check(&self.policy.consent, &self.recorder, change, asker, record).await
    }

    /// One intent per rule to remove, all durable before the revoke.
    async fn intend_removal(
        &self,
        matching: &[&ExistingRule],
        spec: &RuleSpec,
        who: &Caller,
        scope: &Scope,
        approval: Option<&Approval>,
    ) -> Result<Vec<Change>, Error> {
        let mut changes = Vec::new();
        for r in matching {
            let about = About {
                action: "remove",
                spec,
                rule_id: Some(&r.rule_id),
                description: &r.description,
                expires: None,
            };
            let change = stamped(Change::new(about, who, scope), approval);
            change.intend(&self.recorder).await?;
            changes.push(change);
        }
        Ok(changes)
    }

    async fn finish_all(
        &self,
        changes: &[Change],
        result: &'static str,
        error: Option<String>,
    ) -> Result<(), Error> {
        for c in changes {
            c.finish(&self.recorder, result, None, error.clone()).await?;
        }
        Ok(())
    }
}

/// When a rule given `duration` at `now` expires: never past [`description::MAX_DURATION`],
/// and never an overflow.
fn expiry(now: SystemTime, duration: Duration) -> Result<SystemTime, Error> {
    let at = (duration <= description::MAX_DURATION).then(|| now.checked_add(duration)).flatten();
    at.ok_or_else(|| Error::Invalid {
        field: "duration",
        message: format!(
            "duration {} is longer than 10 years, the longest any rule may have",
            humantime::format_duration(duration)
        ),
    })
}

/// The caller's own limit on groups (a token claim or an API key's list).
fn check_caller_group(who: &Caller, group: &str) -> Result<(), Error> {
    match &who.security_groups {
        Some(allowed) if !who.may_touch_group(group) => Err(Error::Policy(Refusal {
            setting: "security_groups (your token or key)",
            message: format!(
                "{group} is not among the groups your credentials allow ({})",
                allowed.join(", ")
            ),
        })),
        _ => Ok(()),
    }
}

/// Cache entries are per account scope (a secret never enters the key, only its hash); the key
/// is `[a-z0-9-]` (a validated group id and a hex hash), so it can name a file.
fn cache_key(scope: &Scope, group: &str) -> String {
    let mut h = DefaultHasher::new();
    scope.hash(&mut h);
    format!("{group}-{:x}", h.finish())
}

#[path = "calls.rs"]
mod calls;
#[path = "dry_run.rs"]
mod dry_run;
#[path = "lifecycle/mod.rs"]
mod lifecycle;
#[path = "plan.rs"]
mod plan;
#[path = "reads.rs"]
mod reads;
#[path = "sweep.rs"]
mod sweep;

pub use calls::{AddArgs, Added, Checked, Defaults, Removed, RuleArgs, RuleView};
pub use dry_run::{AwsVerdict, DryRun, PlannedRule};
pub use lifecycle::{
    FindArgs, Found, History, HistoryQuery, MoveArgs, Moved, Relation, Renewal, Revocation, Revoked,
};
pub use plan::{ChangeKind, PlannedChange};
pub use sweep::{SweepFence, Unfenced};

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
