//! Revoke everywhere (offboarding): take an address's, a network's or a user's rules out of
//! every group the caller may touch. Each rule goes through `whitelist_remove`'s own path
//! ([`Whitelist::remove`]: planned, policy-checked, intent and outcome audited; its dry run
//! through [`Whitelist::dry_run_remove`]), one rule at a time, so a failure stops nothing else
//! and is reported for that rule.
//!
//! Never removed: a rule whose network is wider than the one asked (it lets others in too), and
//! a rule this service did not add unless `[policy] remove_unmanaged` allows it; both reported.

use serde::Serialize;

use super::super::{Caller, Error, RuleArgs, RuleView, Scope, Whitelist};
use super::find::{FindArgs, Found, Relation};
use crate::whitelist::consent::{Asker, NobodyToAsk};

/// One rule's fate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revocation {
    /// The rule as found.
    #[serde(flatten)]
    pub rule: RuleView,
    /// Its group's name.
    pub group_name: String,
    /// `removed`, `not_present` (gone already), `would_remove` (dry run), `kept_wider`,
    /// `kept_unmanaged`, `kept_not_a_network`, `refused` or `failed`.
    pub outcome: &'static str,
    /// Why it was kept, refused or failed.
    pub detail: Option<String>,
}

/// What revoke-everywhere did (or, as a dry run, would do).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revoked {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Every rule found, with its fate.
    pub rules: Vec<Revocation>,
    /// Rules removed (or that would be).
    pub removed: usize,
    /// Rules that could not be removed (refused or failed).
    pub failed: usize,
    /// For people.
    pub message: String,
}

impl Whitelist {
    /// Removes the rules [`Whitelist::find`] finds for `args` from every group the caller may
    /// touch, rule by rule (`dry_run`: lists what it would remove and asks EC2, changing nothing).
    /// A removal that needs a person's consent is refused (nobody to ask).
    pub async fn revoke_everywhere(
        &self,
        scope: &Scope,
        args: &FindArgs,
        dry_run: bool,
        who: &Caller,
    ) -> Result<Revoked, Error> {
        self.revoke_everywhere_with(scope, args, dry_run, who, &NobodyToAsk).await
    }

    /// [`Whitelist::revoke_everywhere`], each removal asking `asker` when `[policy.consent]`
    /// wants a person's consent (as `whitelist_remove` does). A question for the client (the
    /// 2026-07-28 `input_required`) ends the call there; its retry goes on from what is left.
    pub async fn revoke_everywhere_with(
        &self,
        scope: &Scope,
        args: &FindArgs,
        dry_run: bool,
        who: &Caller,
        asker: &dyn Asker,
    ) -> Result<Revoked, Error> {
        self.check_writable(Some(scope), who)?;
        let found = self.find(scope, args, who).await?;
        let mut rules = Vec::new();
        for f in found {
            let (outcome, detail) = self.revoke_one(scope, &f, dry_run, who, asker).await?;
            rules.push(Revocation { rule: f.rule, group_name: f.group_name, outcome, detail });
        }
        let count = |o: &[&str]| rules.iter().filter(|r| o.contains(&r.outcome)).count();
        let removed = count(&["removed", "would_remove"]);
        let failed = count(&["refused", "failed"]);
        let kept = rules.len() - removed - failed - count(&["not_present"]);
        let verb = if dry_run { "dry run, nothing changed: would remove" } else { "removed" };
        let message = format!(
            "{verb} {removed} rule(s); {failed} could not be removed; {kept} kept (wider networks, or not \
             added by this service){}",
            if failed > 0 { " — see each rule's detail" } else { "" }
        );
        Ok(Revoked { dry_run, rules, removed, failed, message })
    }

    async fn revoke_one(
        &self,
        scope: &Scope,
        f: &Found,
        dry_run: bool,
        who: &Caller,
        asker: &dyn Asker,
    ) -> Result<(&'static str, Option<String>), Error> {
        if f.relation == Relation::Wider {
            let why =
                "its network is wider than the one asked and lets others in too; remove it by hand if meant";
            return Ok(("kept_wider", Some(why.into())));
        }
        if !f.rule.managed && !self.policy.remove_unmanaged {
            let why = "not added by this service; removed only with [policy] remove_unmanaged = true";
            return Ok(("kept_unmanaged", Some(why.into())));
        }
        let Some(cidr) = f.rule.cidr_ip.clone() else {
            return Ok((
                "kept_not_a_network",
                Some("its source is a group or a prefix list, not a network".into()),
            ));
        };
        let args = RuleArgs {
            group: f.rule.group_id.clone(),
            ip_address: cidr,
            port: Some(f.rule.port.clone()),
            protocol: Some(f.rule.protocol.clone()),
        };
        // A question for the person goes back to the client; every other failure is this rule's.
        let refused_or_failed = |e: Error| match e {
            Error::Consent(_) => Err(e),
            Error::Policy(_) | Error::Invalid { .. } => Ok(("refused", Some(e.to_string()))),
            e => Ok(("failed", Some(e.to_string()))),
        };
        if dry_run {
            return match self.dry_run_remove(scope, &args, who).await {
                Ok(d) if !d.would_change => Ok(("not_present", None)),
                Ok(d) if !d.aws_allowed.allowed => Ok(("refused", Some(d.aws_allowed.detail))),
                Ok(_) => Ok(("would_remove", None)),
                Err(e) => refused_or_failed(e),
            };
        }
        match self.remove_with(scope, &args, who, asker).await {
            Ok(r) if r.changed => Ok(("removed", None)),
            Ok(r) => Ok(("not_present", Some(r.message))),
            Err(e) => refused_or_failed(e),
        }
    }
}
