//! Completes changes whose intent is in the audit log but whose outcome never was (a crash, a
//! kill or a full disk between the AWS call and the outcome): asks EC2 what is there, records
//! the outcome `reconciled` with what was found, and, when an expiring rule is present, notes
//! its group for the sweeper again.

use std::sync::Arc;

use serde_json::Value;

use super::audit::{blocking, unfinished, AuditEntry, LoggedEntry, Recorder, OUTCOME};
use super::firewall::{Firewall, FirewallError, Scope};
use super::rules::ExistingRule;
use super::target::Protocol;

/// One intent completed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// The change id.
    pub id: String,
    /// The group.
    pub group: String,
    /// What EC2 showed: `present (rule …)`, `absent`, or `unknown: …`.
    pub found: String,
}

/// Completes every unfinished intent for which `settled` says its writer can no longer be
/// making the change. One result per intent tried: an error leaves the intent for next time.
pub async fn run(
    firewall: &dyn Firewall,
    recorder: &Arc<dyn Recorder>,
    settled: &(dyn Fn(&LoggedEntry) -> bool + Sync),
) -> Result<Vec<Result<Reconciled, String>>, String> {
    let entries = blocking(recorder, |r| r.recent()).await?;
    let mut results = Vec::new();
    for intent in unfinished(&entries).into_iter().filter(|e| settled(e)) {
        results.push(complete(firewall, recorder, intent).await);
    }
    Ok(results)
}

async fn complete(
    firewall: &dyn Firewall,
    recorder: &Arc<dyn Recorder>,
    intent: &LoggedEntry,
) -> Result<Reconciled, String> {
    let id = intent.id.clone().unwrap_or_default();
    let scope = Scope { profile: intent.profile.clone(), region: intent.region.clone(), keys: None };
    let found = match firewall.list(&scope, &intent.group_id).await {
        Ok(rules) => Ok(find(&rules, &intent.rule).map(|r| r.rule_id.clone())),
        Err(e) if intent.per_call_credentials => Err(format!(
            "unknown: made with per-call credentials, which are not kept, and this server's identity cannot look ({e})"
        )),
        Err(FirewallError::GroupNotFound { .. }) => Ok(None),
        Err(e) => return Err(format!("cannot reconcile change {id} in {}: {e}", intent.group_id)),
    };
    let expiring = intent.rule.get("expires_at").is_some_and(Value::is_string);
    if (intent.action == "add" || intent.action == "renew") && expiring && matches!(found, Ok(Some(_))) {
        let (s, g) = (scope.clone(), intent.group_id.clone());
        blocking(recorder, move |r| r.note_expiring(&s, &g)).await?;
    }
    let found = match found {
        Ok(Some(rule_id)) => format!("present (rule {rule_id})"),
        Ok(None) => "absent".to_string(),
        Err(unknown) => unknown,
    };
    let outcome = outcome_of(intent, &found).ok_or_else(|| format!("change {id}: unknown action"))?;
    let action = outcome.action;
    blocking(recorder, move |r| r.record(&outcome)).await?;
    crate::metrics::global().whitelist_changes.with_label_values(&[action, "reconciled"]).inc();
    Ok(Reconciled { id, group: intent.group_id.clone(), found })
}

/// The rule the intent named: by id when it had one, else by source, protocol and ports.
fn find<'a>(rules: &'a [ExistingRule], rule: &Value) -> Option<&'a ExistingRule> {
    let text = |k: &str| rule.get(k).and_then(Value::as_str);
    if let Some(id) = text("rule_id") {
        return rules.iter().find(|r| r.rule_id == id);
    }
    rules.iter().find(|r| {
        r.cidr.map(|c| c.to_string()).as_deref() == text("cidr_ip")
            && Protocol::from_ec2(&r.protocol).map(|p| p.to_string()).as_deref() == text("protocol")
            && Some(r.ports().to_string().as_str()) == text("port")
    })
}

fn outcome_of(intent: &LoggedEntry, found: &str) -> Option<AuditEntry> {
    let action = ["add", "remove", "expire", "renew"].into_iter().find(|a| *a == intent.action)?;
    Some(AuditEntry {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        id: intent.id.clone(),
        phase: Some(OUTCOME),
        action,
        identity: intent.identity.clone(),
        source: intent.source.clone(),
        request_id: intent.request_id.clone(),
        group_id: intent.group_id.clone(),
        region: intent.region.clone(),
        profile: intent.profile.clone(),
        per_call_credentials: intent.per_call_credentials,
        pid: std::process::id(),
        rule: intent.rule.clone(),
        result: "reconciled",
        aws_allowed: None,
        found: Some(found.to_string()),
        error: None,
        consent: None,
        aws_account: None,
        aws_request_ids: Vec::new(),
    })
}
