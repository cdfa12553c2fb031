//! Dry runs of add (a renewal included) and remove (`dry_run: true`): the same plan and the same comparison with the
//! group's rules as the real change (a policy refusal is still a refusal), then EC2 asked with
//! `DryRun` whether the caller's credentials may make the change. Nothing changes: no AWS write,
//! no expiry-index entry, no change counter; one audit entry with phase `dry_run` records it.

use serde::Serialize;

use super::{
    Caller, ChangeKind, Error, ExistingRule, FirewallError, PlannedChange, RuleArgs, RuleView, Scope,
    Whitelist,
};
use crate::whitelist::audit::{About, Change, DryRunFound};
use crate::whitelist::receipts;
use crate::whitelist::AddArgs;

/// EC2's verdict on whether the caller's credentials may make a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsVerdict {
    /// EC2 answered `DryRunOperation` (true) or `UnauthorizedOperation` (false).
    pub allowed: bool,
    /// The IAM action asked about, e.g. `ec2:AuthorizeSecurityGroupIngress`.
    pub action: String,
    /// What EC2 answered, in words.
    pub detail: String,
}

/// The rule a dry run would write (add) or names (remove), as the tools show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedRule {
    /// Group.
    pub group_id: String,
    /// Source network.
    pub cidr_ip: String,
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// `22`, `8000-8100` or `all`.
    pub port: String,
    /// First port (-1: all).
    pub from_port: i32,
    /// Last port (-1: all).
    pub to_port: i32,
    /// Add: the whole description as it would be written, signed marker included.
    pub description: Option<String>,
    /// Add: the expiry, RFC 3339.
    pub expires_at: Option<String>,
}

impl PlannedRule {
    fn of(plan: &PlannedChange) -> PlannedRule {
        let spec = &plan.spec;
        PlannedRule {
            group_id: spec.group_id.clone(),
            cidr_ip: spec.cidr.to_string(),
            protocol: spec.protocol.to_string(),
            port: spec.ports.to_string(),
            from_port: spec.ports.from,
            to_port: spec.ports.to,
            description: plan.description.clone(),
            expires_at: plan.expires_at(),
        }
    }
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    /// Whether the real call would change the group.
    pub would_change: bool,
    /// The rule as it would be written (add) or as named (remove).
    pub rule: PlannedRule,
    /// Add and renew: when the rule would expire.
    pub expires_at: Option<String>,
    /// Renew: the rule's expiry now (`None`: none, or not a renewal).
    pub previous_expires_at: Option<String>,
    /// Remove: the ids of the rules that would be removed. Add: the identical rule already
    /// there, if any.
    pub rule_ids: Vec<String>,
    /// The rules those ids name, as listed.
    pub existing: Vec<RuleView>,
    /// Whether EC2 would let the caller's credentials make the change.
    pub aws_allowed: AwsVerdict,
    /// For people.
    pub message: String,
}

impl Whitelist {
    /// What `add` would do, and whether EC2 would allow it; changes nothing.
    pub async fn dry_run_add(&self, scope: &Scope, args: &AddArgs, who: &Caller) -> Result<DryRun, Error> {
        let plan = self.plan_add(scope, args, who)?;
        let rules = self.fresh(scope, &plan.spec.group_id).await?;
        let existing: Vec<&ExistingRule> =
            self.compare_add(scope, &plan, &rules).await?.into_iter().collect();
        if let Some(renewal) =
            existing.first().map(|r| self.plan_renew(args, &plan, r)).transpose()?.flatten()
        {
            return self.dry_run(scope, renewal.plan, &existing, who).await;
        }
        self.dry_run(scope, plan, &existing, who).await
    }

    /// What `remove` would do, and whether EC2 would allow it; changes nothing.
    pub async fn dry_run_remove(
        &self,
        scope: &Scope,
        args: &RuleArgs,
        who: &Caller,
    ) -> Result<DryRun, Error> {
        let plan = self.plan_remove(scope, args, who)?;
        let rules = self.fresh(scope, &plan.spec.group_id).await?;
        let matching = self.compare_remove(&plan, &rules)?;
        self.dry_run(scope, plan, &matching, who).await
    }

    /// Asks EC2, audits, and words the answer. `found`: the identical rule (add) or the rules
    /// to remove (remove).
    async fn dry_run(
        &self,
        scope: &Scope,
        plan: PlannedChange,
        found: &[&ExistingRule],
        who: &Caller,
    ) -> Result<DryRun, Error> {
        let would_change = match plan.kind {
            ChangeKind::Add => found.is_empty(),
            ChangeKind::Remove => !found.is_empty(),
            ChangeKind::Renew => true,
        };
        let previous = match plan.kind {
            ChangeKind::Renew => found.first().and_then(|r| self.view(r).expires_at),
            _ => None,
        };
        let (verdict, aws) = receipts::collect(
            who.identity.as_deref().unwrap_or("anonymous"),
            self.ask_ec2(scope, &plan, found),
        )
        .await;
        let verdict = verdict?;
        let rule_ids: Vec<String> = found.iter().map(|r| r.rule_id.clone()).collect();
        let about = About {
            action: plan.kind.as_str(),
            spec: &plan.spec,
            rule_id: found.first().filter(|_| plan.kind == ChangeKind::Renew).map(|r| r.rule_id.as_str()),
            description: plan.description.as_deref().unwrap_or(""),
            expires: plan.expires,
        };
        let record = DryRunFound {
            would_change,
            rule_ids: &rule_ids,
            aws_allowed: verdict.allowed,
            aws_detail: &verdict.detail,
        };
        Change::new(about, who, scope).with_receipts(aws).record_dry_run(&self.recorder, record).await?;
        let message = dry_run_message(&plan, would_change, &rule_ids, previous.as_deref(), &verdict);
        Ok(DryRun {
            would_change,
            rule: PlannedRule::of(&plan),
            expires_at: plan.expires_at(),
            previous_expires_at: previous,
            rule_ids,
            existing: found.iter().map(|r| self.view(r)).collect(),
            aws_allowed: verdict,
            message,
        })
    }

    /// EC2's `DryRun` of the change with the caller's own scope: `DryRunOperation` is allowed,
    /// `UnauthorizedOperation` is not (named with its IAM action); anything else (a missing
    /// group, bad credentials) fails the dry run as it would fail the change.
    async fn ask_ec2(
        &self,
        scope: &Scope,
        plan: &PlannedChange,
        found: &[&ExistingRule],
    ) -> Result<AwsVerdict, Error> {
        let action = plan.kind.iam_action_on(&plan.spec.group_id);
        let asked = match plan.kind {
            ChangeKind::Add => self.firewall.can_authorize(scope, &plan.spec).await,
            ChangeKind::Remove => self.firewall.can_revoke(scope, &plan.spec).await,
            ChangeKind::Renew => {
                let (rule_id, description) =
                    (found.first().map_or("", |r| r.rule_id.as_str()), plan.description.as_deref());
                self.firewall
                    .can_redescribe(scope, &plan.spec, rule_id, description.unwrap_or_default())
                    .await
            }
        };
        match asked {
            Ok(()) => Ok(AwsVerdict {
                allowed: true,
                action: action.to_string(),
                detail: format!(
                    "EC2 answered DryRunOperation: these credentials may call {action} on {}",
                    plan.spec.group_id
                ),
            }),
            Err(FirewallError::PermissionDenied { action, detail }) => Ok(AwsVerdict {
                allowed: false,
                detail: format!("EC2 answered UnauthorizedOperation for {action}: {detail}"),
                action,
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// "dry run, nothing changed: would allow …; AWS would allow it (…)".
fn dry_run_message(
    plan: &PlannedChange,
    would_change: bool,
    ids: &[String],
    previous: Option<&str>,
    verdict: &AwsVerdict,
) -> String {
    let (what, group) = (plan.summary(), &plan.spec.group_id);
    let change = match (plan.kind, would_change) {
        (ChangeKind::Add, true) => {
            let until = plan.expires_at().map_or(String::new(), |at| format!(", expiring {at}"));
            let description = plan.description.as_deref().unwrap_or("");
            format!("would allow {what} in {group} with description {description:?}{until}")
        }
        (ChangeKind::Add, false) => {
            format!(
                "{what} is already allowed in {group} (rule {}); adding it would change nothing",
                ids.join(", ")
            )
        }
        (ChangeKind::Remove, true) => format!("would remove {what} from {group} (rule {})", ids.join(", ")),
        (ChangeKind::Renew, _) => format!(
            "would renew {what} in {group} (rule {}): its expiry would move from {} to {}",
            ids.join(", "),
            previous.unwrap_or("never"),
            plan.expires_at().as_deref().unwrap_or("never")
        ),
        (ChangeKind::Remove, false) => {
            format!("{what} is not allowed in {group}; removing it would change nothing")
        }
    };
    let aws = if verdict.allowed {
        format!("AWS would allow it ({}: DryRunOperation)", verdict.action)
    } else {
        format!(
            "AWS would refuse it: these credentials lack {} ({}); grant that IAM action",
            verdict.action, verdict.detail
        )
    };
    format!("dry run, nothing changed: {change}; {aws}")
}
