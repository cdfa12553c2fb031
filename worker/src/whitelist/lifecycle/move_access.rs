//! Move my access: a user's (or the caller's) managed rules in one group, for one protocol and
//! port, replaced by a rule for a new address (`current` included) — the home IP changed.
//!
//! Add first, remove the old only once the new exists: the add goes through
//! [`Whitelist::add`] (planned, policy-checked, audited; an identical managed rule there is
//! kept or renewed), and only when it succeeded is each old rule removed through
//! [`Whitelist::remove`], one by one, each outcome reported. When the add fails, nothing is
//! removed and the answer says the old access is still in place.

use serde::Serialize;

use super::super::{AddArgs, Caller, Error, ExistingRule, Protocol, RuleArgs, RuleView, Scope, Whitelist};
use super::find::{relation, Query};
use super::revoke::Revocation;
use crate::whitelist::consent::{Asker, NobodyToAsk};

/// What to move where.
#[derive(Debug, Clone, Default)]
pub struct MoveArgs {
    /// The new rule: group, new address (or `current`), port, protocol.
    pub rule: RuleArgs,
    /// Whose access: a user named in the rules' descriptions, or the identity that added
    /// them; the caller's identity when absent.
    pub user: Option<String>,
    /// The new rule's `duration`.
    pub duration: Option<String>,
    /// The new rule's `reason`.
    pub reason: Option<String>,
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moved {
    /// The new access is in place (and the old was removed, or tried: see `removed`).
    pub moved: bool,
    /// Nothing was changed (a dry run).
    pub dry_run: bool,
    /// The new rule (added, renewed or already there); `None` when the add failed.
    pub rule: Option<RuleView>,
    /// Each old rule and its fate (`removed`, `failed`, `would_remove`, `kept` when the add
    /// failed).
    pub removed: Vec<Revocation>,
    /// For people; says plainly when the old access is still in place.
    pub message: String,
}

impl Whitelist {
    /// Replaces `args.user`'s (or the caller's) managed rules in the group for the new rule's
    /// protocol and ports by the new rule: add first, then remove the old. A change that needs
    /// a person's consent is refused (nobody to ask).
    pub async fn move_access(
        &self,
        scope: &Scope,
        args: &MoveArgs,
        dry_run: bool,
        who: &Caller,
    ) -> Result<Moved, Error> {
        self.move_access_with(scope, args, dry_run, who, &NobodyToAsk).await
    }

    /// [`Whitelist::move_access`], the add and each removal asking `asker` when
    /// `[policy.consent]` wants a person's consent (as `whitelist_add`/`whitelist_remove` do);
    /// a question for the client ends the call there, the old access untouched until the new
    /// one exists.
    pub async fn move_access_with(
        &self,
        scope: &Scope,
        args: &MoveArgs,
        dry_run: bool,
        who: &Caller,
        asker: &dyn Asker,
    ) -> Result<Moved, Error> {
        let add = AddArgs {
            rule: args.rule.clone(),
            user: args.user.clone(),
            reason: args.reason.clone(),
            duration: args.duration.clone(),
            description: None,
        };
        let plan = self.plan_add(scope, &add, who).map_err(nothing_moved)?;
        let whose =
            args.user.clone().or_else(|| who.identity.as_deref().map(str::to_owned)).ok_or_else(|| {
                Error::Invalid {
                    field: "user",
                    message: "name whose access to move (user), or call with an authenticated identity"
                        .into(),
                }
            })?;
        let query = Query { net: None, user: Some(whose.clone()) };
        let rules = self.fresh(scope, &plan.spec.group_id).await?;
        let added = self.who_added().await;
        let old: Vec<&ExistingRule> = rules
            .iter()
            .filter(|r| {
                r.marker(&self.key).managed()
                    && Protocol::from_ec2(&r.protocol) == Some(plan.spec.protocol)
                    && r.ports() == plan.spec.ports
                    && r.cidr != Some(plan.spec.cidr)
                    && relation(&query, r, added.get(&r.rule_id).map(|b| b.0.as_str())).is_some()
            })
            .collect();
        let old_ids = || old.iter().map(|r| r.rule_id.as_str()).collect::<Vec<_>>().join(", ");
        let fate = |r: &ExistingRule, outcome: &'static str, detail: Option<String>| Revocation {
            rule: self.view(r),
            group_name: String::new(),
            outcome,
            detail,
        };
        if dry_run {
            let d = self.dry_run_add(scope, &add, who).await?;
            let mut removed = Vec::new();
            for r in &old {
                let (outcome, detail) = match self.dry_run_remove(scope, &rule_args(r), who).await {
                    Ok(x) if x.aws_allowed.allowed => ("would_remove", None),
                    Ok(x) => ("refused", Some(x.aws_allowed.detail)),
                    Err(e) => ("refused", Some(e.to_string())),
                };
                removed.push(fate(r, outcome, detail));
            }
            let message = format!(
                "dry run, nothing changed: {}; then would remove {}'s {} old rule(s) ({})",
                d.message,
                whose,
                old.len(),
                old_ids()
            );
            return Ok(Moved { moved: false, dry_run: true, rule: None, removed, message });
        }
        let new = match self.add_with(scope, &add, who, asker).await {
            Ok(new) => new,
            Err(e @ Error::Consent(_)) => return Err(e),
            Err(e) => {
                let removed = old.iter().map(|r| fate(r, "kept", None)).collect();
                let message = format!(
                    "nothing was moved: the new access could not be added ({e}); the old access \
                     ({}) is still in place",
                    if old.is_empty() { "none found".to_string() } else { old_ids() }
                );
                return Ok(Moved { moved: false, dry_run: false, rule: None, removed, message });
            }
        };
        // The new rule exists: only now does the old access go, rule by rule.
        let mut removed = Vec::new();
        for r in &old {
            let (outcome, detail) = match self.remove_with(scope, &rule_args(r), who, asker).await {
                Ok(x) if x.changed => ("removed", None),
                Ok(x) => ("not_present", Some(x.message)),
                Err(e @ Error::Consent(_)) => return Err(e),
                Err(e) => ("failed", Some(e.to_string())),
            };
            removed.push(fate(r, outcome, detail));
        }
        let failed = removed.iter().filter(|r| r.outcome == "failed").count();
        let message = format!(
            "{}; removed {} of {}'s {} old rule(s){}",
            new.message,
            removed.iter().filter(|r| r.outcome == "removed").count(),
            whose,
            old.len(),
            if failed > 0 {
                format!("; {failed} could not be removed and still allow the old address (see removed)")
            } else {
                String::new()
            }
        );
        Ok(Moved { moved: true, dry_run: false, rule: Some(new.rule), removed, message })
    }
}

/// A refusal before anything was read or changed, saying that the old access stays.
fn nothing_moved(e: Error) -> Error {
    const NOTE: &str = "; nothing was moved: the old access is still in place";
    match e {
        Error::Policy(mut r) => {
            r.message.push_str(NOTE);
            Error::Policy(r)
        }
        Error::Invalid { field, message } => Error::Invalid { field, message: message + NOTE },
        other => other,
    }
}

/// The arguments that name exactly `r` for [`Whitelist::remove`].
fn rule_args(r: &ExistingRule) -> RuleArgs {
    let view_protocol = Protocol::from_ec2(&r.protocol).map_or(r.protocol.clone(), |p| p.to_string());
    RuleArgs {
        group: r.group_id.clone(),
        ip_address: r.cidr.map(|c| c.to_string()).unwrap_or_default(),
        port: Some(r.ports().to_string()),
        protocol: Some(view_protocol),
    }
}
