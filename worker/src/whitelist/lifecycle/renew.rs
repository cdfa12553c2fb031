//! Renewing: `whitelist_add` with a `duration` on a rule that exists and that this service
//! manages sets the new expiry by rewriting the rule's signed marker in place (EC2's
//! ModifySecurityGroupRules, by rule id). The rule keeps its id and the text of its
//! description (who asked, when, why); the sweeper reads expiries from markers, so it honours
//! the new time, and the expiry index is noted before the write like any expiring change.
//!
//! A rule this service did not add is never given a marker: that would make a hand-made rule
//! managed (sweepable, removable) because a model asked. Such an add answers `changed: false`
//! and says why.

use std::time::SystemTime;

use super::super::{
    invalid, rfc3339, AddArgs, Added, Caller, ChangeKind, Error, ExistingRule, FirewallError, Marker,
    PlannedChange, RuleView, Scope, Whitelist,
};
use crate::whitelist::audit::{answered, About, Change};
use crate::whitelist::gate::{stamped, Approval};
use crate::whitelist::marker::remark;

/// A renewal planned: the rule found and what it becomes; no AWS call made yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Renewal {
    /// The change: the rule, its description with the new marker, the new expiry.
    pub plan: PlannedChange,
    /// The rule renewed (`sgr-…`).
    pub rule_id: String,
    /// Its expiry before (`None`: it had none).
    pub previous: Option<SystemTime>,
}

impl Whitelist {
    /// The renewal an add asks for when its rule exists (`add` is its checked plan): `None`
    /// when there is nothing to renew — no `duration` given, a rule this service does not
    /// manage, or the same expiry to the second.
    pub(in crate::whitelist) fn plan_renew(
        &self,
        args: &AddArgs,
        add: &PlannedChange,
        existing: &ExistingRule,
    ) -> Result<Option<Renewal>, Error> {
        if args.duration.is_none() {
            return Ok(None);
        }
        let Marker::Valid { expires: previous } = existing.marker(&self.key) else { return Ok(None) };
        let marker = self.key.marker(&add.spec, add.expires);
        let description =
            remark(&existing.description, previous, add.expires, &marker).map_err(invalid("duration"))?;
        if description == existing.description {
            return Ok(None);
        }
        let plan = PlannedChange {
            kind: ChangeKind::Renew,
            spec: add.spec.clone(),
            description: Some(description),
            expires: add.expires,
            lasting: add.lasting,
            details: add.details.clone(),
        };
        Ok(Some(Renewal { plan, rule_id: existing.rule_id.clone(), previous }))
    }

    /// An add whose rule exists: renewed when a renewal is planned, else reported unchanged
    /// (saying why when a `duration` was asked of a rule this service does not manage). The
    /// add's consent, when one was asked (the same rule, the same expiry), covers the renewal
    /// and is stamped on its audit entries.
    pub(in crate::whitelist) async fn renew_or_keep(
        &self,
        scope: &Scope,
        args: &AddArgs,
        add: &PlannedChange,
        existing: &ExistingRule,
        who: &Caller,
        approval: Option<&Approval>,
    ) -> Result<Added, Error> {
        if let Some(renewal) = self.plan_renew(args, add, existing)? {
            return self.renew(scope, &renewal, existing, who, approval).await;
        }
        let mut kept = Added::unchanged(self.view(existing));
        if args.duration.is_some() && !existing.marker(&self.key).managed() {
            kept.message.push_str(
                "; its expiry was not set: this service did not add that rule, and it sets expiries \
                 only on rules it manages (remove that rule by hand, then add it again with duration)",
            );
        }
        Ok(kept)
    }

    /// Writes the renewal: intent (and the expiry index) durable, the description rewritten,
    /// the outcome recorded.
    async fn renew(
        &self,
        scope: &Scope,
        r: &Renewal,
        existing: &ExistingRule,
        who: &Caller,
        approval: Option<&Approval>,
    ) -> Result<Added, Error> {
        let (spec, expires) = (&r.plan.spec, r.plan.expires);
        if let (Some(at), Some(_)) = (expires, &scope.keys) {
            self.check_server_can_revoke(scope, spec, at).await?;
        }
        let description = r.plan.description.as_deref().unwrap_or_default();
        let about = About { action: "renew", spec, rule_id: Some(&r.rule_id), description, expires };
        let change = stamped(Change::new(about, who, scope), approval);
        change.intend(&self.recorder).await?;
        let rewritten = self.firewall.redescribe(scope, spec, &r.rule_id, description);
        let (change, rewritten) = answered(change, rewritten).await;
        match rewritten {
            Ok(()) => {}
            Err(FirewallError::RuleNotFound) => {
                self.versions.changed(&spec.group_id).await;
                change.finish(&self.recorder, "not_present", Some(&r.rule_id), None).await?;
                return Err(Error::Aws(FirewallError::Other {
                    action: ChangeKind::Renew.iam_action_on(&spec.group_id).to_string(),
                    code: "RuleGone".into(),
                    message: format!(
                        "rule {} left {} (expired or removed) before its new expiry was written; \
                         nothing was renewed: add the rule again",
                        r.rule_id, spec.group_id
                    ),
                }));
            }
            Err(e) => return Err(self.failed(&change, e).await),
        }
        self.versions.changed(&spec.group_id).await;
        change.finish(&self.recorder, "renewed", Some(&r.rule_id), None).await?;
        let rule = RuleView {
            description: description.to_string(),
            expires_at: r.plan.expires_at(),
            ..self.view(existing)
        };
        let never = || "never".to_string();
        let message = format!(
            "renewed {} in {} (rule {}): its expiry moved from {} to {}",
            rule.summary(),
            spec.group_id,
            r.rule_id,
            r.previous.map_or_else(never, rfc3339),
            r.plan.expires_at().unwrap_or_else(never)
        );
        Ok(Added {
            changed: true,
            renewed: true,
            previous_expires_at: r.previous.map(rfc3339),
            rule,
            message,
        })
    }
}
