//! Planning a change: the one step that turns a call's arguments into exactly the change it
//! would make (the rule, its description with the signed marker, its expiry), checked against
//! the policy and the caller's credential, before any AWS call. The real add and remove and
//! their dry runs start from the same [`PlannedChange`] and hold it against the group's rules
//! with the same [`Whitelist::compare_add`] / [`Whitelist::compare_remove`], so what a dry run
//! (or a person asked to consent) is shown and what is done cannot drift apart.

use std::time::{Duration, SystemTime};

use super::description::{parse_duration, render, rfc3339, Fill};
use super::{
    expiry, invalid, AddArgs, Caller, Error, ExistingRule, Marker, Refusal, RuleArgs, RuleSpec, RuleView,
    Scope, Whitelist,
};

/// What a planned change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Allow a network in (`whitelist_add`).
    Add,
    /// Take an allowance away (`whitelist_remove`).
    Remove,
    /// Give a managed rule a new expiry: its description rewritten in place with a new signed
    /// marker (`whitelist_add` with a `duration` on a rule that exists).
    Renew,
}

impl ChangeKind {
    /// `add` or `remove`, as the audit log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Add => "add",
            ChangeKind::Remove => "remove",
            ChangeKind::Renew => "renew",
        }
    }

    /// The IAM action the change needs on `target`: every prefix-list change is one
    /// `ec2:ModifyManagedPrefixList`.
    pub fn iam_action_on(self, target: &str) -> &'static str {
        match crate::whitelist::ids::is_prefix_list(target) {
            true => crate::whitelist::prefix_list::MODIFY_ACTION,
            false => self.iam_action(),
        }
    }

    /// The IAM action the change needs, as EC2's refusals and dry runs name it.
    pub fn iam_action(self) -> &'static str {
        match self {
            ChangeKind::Add => "ec2:AuthorizeSecurityGroupIngress",
            ChangeKind::Remove => "ec2:RevokeSecurityGroupIngress",
            ChangeKind::Renew => "ec2:ModifySecurityGroupRules",
        }
    }
}

/// A change resolved from a call and checked against policy; no AWS call made yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    /// Add or remove.
    pub kind: ChangeKind,
    /// The rule: group, network (`current` resolved), protocol, ports (names resolved).
    pub spec: RuleSpec,
    /// Add: the description exactly as it would be written (template filled in, signed marker
    /// and expiry included). Renew: the rule's description with the new marker. Remove:
    /// `None`; the rules found carry their own.
    pub description: Option<String>,
    /// Add and renew: when the rule would expire (the requested duration within the policy's cap).
    pub expires: Option<SystemTime>,
    /// How long the rule lasts (`None`: permanent; always `None` for a removal).
    pub lasting: Option<Duration>,
    /// What the description is made of apart from the time (template, user, reason): what a
    /// person consented to, so a retry with another description is another change.
    pub details: String,
}

impl PlannedChange {
    /// "tcp 22 from 203.0.113.7/32", for messages.
    pub fn summary(&self) -> String {
        format!("{} {} from {}", self.spec.protocol, self.spec.ports, self.spec.cidr)
    }

    /// The expiry in RFC 3339, when the rule would have one.
    pub fn expires_at(&self) -> Option<String> {
        self.expires.map(rfc3339)
    }
}

impl Whitelist {
    /// Ok when this caller may change rules through `scope` (`None`: asked about the server
    /// and the caller only, as `tools/list` does); else the refusal naming the setting that
    /// made it read-only: `[policy] read_only`, the caller's API key, or the scope's profile.
    pub fn check_writable(&self, scope: Option<&Scope>, who: &Caller) -> Result<(), Refusal> {
        self.policy.check_writable(None)?;
        if let Some(setting) = &who.read_only {
            return Err(Refusal {
                setting: "read_only (your credential)",
                message: format!(
                    "your credential is read-only ({setting}): it may list and check rules, never \
                     add or remove them; an operator can give you a credential that is not read-only"
                ),
            });
        }
        self.policy.check_writable(scope.and_then(|s| s.profile.as_deref()))
    }

    /// The add a call asks for, resolved and checked: read-only settings, the group (policy
    /// and the caller's credential), network, protocol and ports, duration within the cap, and
    /// the description as it would be written.
    pub fn plan_add(&self, scope: &Scope, args: &AddArgs, who: &Caller) -> Result<PlannedChange, Error> {
        self.check_writable(Some(scope), who)?;
        let spec = self.resolve(&args.rule, who)?;
        match crate::whitelist::ids::is_prefix_list(&spec.group_id) {
            // An entry has no protocol or ports of its own (see `ids::entry_target`).
            true => self.policy.check_cidr(&spec.cidr)?,
            false => self.policy.check_rule(&spec.cidr, spec.protocol, &spec.ports)?,
        }
        let requested =
            args.duration.as_deref().map(parse_duration).transpose().map_err(invalid("duration"))?;
        let now = SystemTime::now();
        let lasting = self.policy.check_duration(requested)?;
        let expires = lasting.map(|d| expiry(now, d)).transpose()?;
        let template = args.description.as_deref().unwrap_or(&self.defaults.description_template);
        let fill = Fill {
            user: args.user.as_deref().unwrap_or(&self.defaults.user),
            reason: args.reason.as_deref().unwrap_or(&self.defaults.reason),
            now,
            expires,
        };
        let marker = self.key.marker(&spec, expires);
        let description = render(template, &fill, &marker).map_err(invalid("description"))?;
        let details = format!("{template}\n{}\n{}", fill.user, fill.reason);
        Ok(PlannedChange {
            kind: ChangeKind::Add,
            spec,
            description: Some(description),
            expires,
            lasting,
            details,
        })
    }

    /// The remove a call asks for, resolved and checked (read-only settings, the group).
    pub fn plan_remove(&self, scope: &Scope, args: &RuleArgs, who: &Caller) -> Result<PlannedChange, Error> {
        self.check_writable(Some(scope), who)?;
        let spec = self.resolve(args, who)?;
        Ok(PlannedChange {
            kind: ChangeKind::Remove,
            spec,
            description: None,
            expires: None,
            lasting: None,
            details: String::new(),
        })
    }

    /// The add held against the group's rules: the identical rule already there (nothing to
    /// do), or `None` once what only the group can tell allows it (`max_rules_per_group`; for
    /// an expiring rule added with per-call keys, that the sweeper could remove it).
    pub(super) async fn compare_add<'r>(
        &self,
        scope: &Scope,
        plan: &PlannedChange,
        rules: &'r [ExistingRule],
    ) -> Result<Option<&'r ExistingRule>, Error> {
        if let Some(existing) = rules.iter().find(|r| r.matches(&plan.spec)) {
            return Ok(Some(existing));
        }
        self.policy.check_count(rules.iter().filter(|r| r.marker(&self.key).managed()).count())?;
        if let (Some(at), Some(_)) = (plan.expires, &scope.keys) {
            self.check_server_can_revoke(scope, &plan.spec, at).await?;
        }
        Ok(None)
    }

    /// The rules the remove would take away (none when the rule is absent); refused when one
    /// of them was not added by this service and `remove_unmanaged` is off.
    pub(super) fn compare_remove<'r>(
        &self,
        plan: &PlannedChange,
        rules: &'r [ExistingRule],
    ) -> Result<Vec<&'r ExistingRule>, Error> {
        let matching: Vec<&ExistingRule> = rules.iter().filter(|r| r.matches(&plan.spec)).collect();
        for r in &matching {
            let marker = r.marker(&self.key);
            if let Marker::Invalid(why) = marker {
                self.report(r, why);
            }
            if !marker.managed() {
                self.policy.check_unmanaged(&format!(
                    "rule {} ({} in {}, description {:?})",
                    r.rule_id,
                    RuleView::of(r, marker).summary(),
                    r.group_id,
                    r.description
                ))?;
            }
        }
        Ok(matching)
    }
}
