//! What an audit entry says, and the trait the service writes entries through (the file
//! behind it is the host's audit log, `host/audit_file.rs`).
//!
//! Every change is written twice: an *intent* durable before the AWS call (if it cannot be
//! written, no call is made), and an *outcome* after it, joined by `id`. An intent left without
//! an outcome (a crash, a kill, a full disk between the call and the outcome) is completed later
//! by [`super::reconcile`], which asks EC2 what is there.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::description::rfc3339;
use super::error::Error;
use super::firewall::Scope;
use super::receipts::{self, Receipts};
use super::rules::RuleSpec;
use crate::caller::Caller;

/// `phase` of an entry written before the AWS call.
pub const INTENT: &str = "intent";
/// `phase` of an entry written after it (or by the reconciler).
pub const OUTCOME: &str = "outcome";
/// `phase` of the one entry a dry run writes: nothing was changed, nothing is left to reconcile.
pub const DRY_RUN: &str = "dry_run";

/// One change, as the audit log records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditEntry {
    /// UTC time of the change, RFC 3339 with milliseconds.
    pub time: String,
    /// Joins a change's intent with its outcome: unique on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// [`INTENT`], [`OUTCOME`] or [`DRY_RUN`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    /// `add`, `remove`, `expire` or `renew`.
    pub action: &'static str,
    /// Who: the authenticated identity, or `anonymous`.
    pub identity: String,
    /// From where: the client's address as the server resolved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request id, to join the entry with log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The security group.
    pub group_id: String,
    /// Region, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Credential profile, when one was given (the reconciler looks with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The change was made with per-call credentials (never kept, so the reconciler may not be
    /// able to look).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub per_call_credentials: bool,
    /// The process that wrote the entry (the reconciler leaves a live writer's intents alone).
    pub pid: u32,
    /// The rule: cidr, protocol, ports, description, rule id, expiry.
    pub rule: serde_json::Value,
    /// `pending` (intents); `added`, `already_present`, `removed`, `not_present`, `expired`,
    /// `failed`, or `reconciled` (outcomes); `would_change` or `no_change` (dry runs).
    pub result: &'static str,
    /// Dry runs: whether EC2 said the caller's credentials may make the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_allowed: Option<bool>,
    /// What the reconciler found in EC2 (`present (rule …)`, `absent`, `unknown: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A person's decision on a change that needed consent: `decision` (`accepted`,
    /// `declined`, `cancelled`), `asked` (who), `via`, and the `[policy.consent]` `reasons`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<serde_json::Value>,
    /// Outcomes and dry runs: the AWS account the change ran in (CloudTrail's
    /// `recipientAccountId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_account: Option<String>,
    /// Outcomes and dry runs: AWS's request id of each change call (CloudTrail's `requestID`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aws_request_ids: Vec<String>,
}

/// An entry read back from the log: what the reconciler needs to complete an intent, and what
/// the history tool shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggedEntry {
    /// As written.
    pub time: String,
    /// As written.
    pub id: Option<String>,
    /// As written.
    pub phase: Option<String>,
    /// As written.
    pub action: String,
    /// As written.
    pub identity: String,
    /// As written.
    pub source: Option<String>,
    /// As written.
    pub request_id: Option<String>,
    /// As written.
    pub group_id: String,
    /// As written.
    pub region: Option<String>,
    /// As written.
    pub profile: Option<String>,
    /// As written.
    pub per_call_credentials: bool,
    /// As written (0 when absent).
    pub pid: u32,
    /// As written.
    pub rule: serde_json::Value,
    /// As written (`pending`, `added`, `renewed`, `failed`, `would_change`, …).
    pub result: String,
    /// As written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_allowed: Option<bool>,
    /// As written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// As written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// As written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_account: Option<String>,
    /// As written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aws_request_ids: Vec<String>,
}

impl LoggedEntry {
    /// When it was written, if the time parses.
    pub fn written(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.time).ok()
    }
}

/// The intents among `entries` that have no outcome, oldest first.
pub fn unfinished(entries: &[LoggedEntry]) -> Vec<&LoggedEntry> {
    let phase_of = |e: &LoggedEntry, p: &str| e.id.is_some() && e.phase.as_deref() == Some(p);
    let finished: std::collections::HashSet<&str> =
        entries.iter().filter(|e| phase_of(e, OUTCOME)).filter_map(|e| e.id.as_deref()).collect();
    entries
        .iter()
        .filter(|e| phase_of(e, INTENT) && !finished.contains(e.id.as_deref().unwrap_or("")))
        .collect()
}

/// Where audit entries go; each call returns only once what it wrote is durable.
pub trait Recorder: Send + Sync {
    /// Appends one entry durably: a whole line, or nothing.
    fn record(&self, entry: &AuditEntry) -> Result<(), String>;
    /// Notes durably that `group` holds (or is about to hold) an expiring rule, so the sweeper
    /// looks at it even when the policy names it only by a pattern.
    fn note_expiring(&self, scope: &Scope, group: &str) -> Result<(), String>;
    /// The most recent entries (a bounded tail of the log), oldest first; lines that do not
    /// parse are skipped.
    fn recent(&self) -> Result<Vec<LoggedEntry>, String>;
}

/// Runs a recorder call off the async runtime (they sync to disk).
pub(crate) async fn blocking<T: Send + 'static>(
    recorder: &Arc<dyn Recorder>,
    call: impl FnOnce(&dyn Recorder) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let recorder = recorder.clone();
    tokio::task::spawn_blocking(move || call(&*recorder))
        .await
        .map_err(|e| format!("audit writer failed: {e}"))?
}

/// One change in flight: its intent entry, which its outcome repeats.
pub(crate) struct Change {
    intent: AuditEntry,
    scope: Scope,
    expiring: bool,
}

/// What a dry run found, as its audit entry records it.
pub(crate) struct DryRunFound<'a> {
    /// The change would change something.
    pub would_change: bool,
    /// The rules it would remove, or the identical rule already there.
    pub rule_ids: &'a [String],
    /// EC2's verdict on the caller's credentials.
    pub aws_allowed: bool,
    /// EC2's answer, kept when it refused.
    pub aws_detail: &'a str,
}

/// What a change is about.
#[derive(Clone, Copy)]
pub(crate) struct About<'a> {
    /// `add`, `remove`, `expire` or `renew`.
    pub action: &'static str,
    /// The rule.
    pub spec: &'a RuleSpec,
    /// Its id, when it exists already (remove, expire).
    pub rule_id: Option<&'a str>,
    /// Its description.
    pub description: &'a str,
    /// Its expiry (add).
    pub expires: Option<SystemTime>,
}

impl Change {
    /// The intent to make a change (not yet written).
    pub(crate) fn new(about: About<'_>, who: &Caller, scope: &Scope) -> Change {
        let mut rule = serde_json::json!({
            "rule_id": about.rule_id,
            "cidr_ip": about.spec.cidr.to_string(),
            "protocol": about.spec.protocol.to_string(),
            "port": about.spec.ports.to_string(),
            "description": about.description,
        });
        if let Some(at) = about.expires {
            rule["expires_at"] = rfc3339(at).into();
        }
        let intent = AuditEntry {
            time: now(),
            id: Some(change_id()),
            phase: Some(INTENT),
            action: about.action,
            identity: who.identity.as_deref().unwrap_or("anonymous").to_string(),
            source: who.addr.map(|a| a.to_string()),
            request_id: who.request_id.as_deref().map(str::to_owned),
            group_id: about.spec.group_id.clone(),
            region: scope.region.clone(),
            profile: scope.profile.clone(),
            per_call_credentials: scope.keys.is_some(),
            pid: std::process::id(),
            rule,
            result: "pending",
            aws_allowed: None,
            found: None,
            error: None,
            consent: None,
            aws_account: None,
            aws_request_ids: Vec::new(),
        };
        Change { intent, scope: scope.clone(), expiring: about.expires.is_some() }
    }

    /// Records with the change's outcome (or dry run) what AWS answered its calls with.
    pub(crate) fn with_receipts(mut self, r: Receipts) -> Change {
        self.intent.aws_account = r.account;
        self.intent.aws_request_ids = r.request_ids;
        self
    }

    /// Who the change is made for, as the audit names them.
    pub(crate) fn identity(&self) -> &str {
        &self.intent.identity
    }

    /// Records with the change (intent and outcome) the person's decision on it.
    pub(crate) fn with_consent(
        mut self,
        decision: &str,
        asked: &str,
        via: &str,
        reasons: &[String],
    ) -> Change {
        self.intent.consent = Some(serde_json::json!({
            "decision": decision, "asked": asked, "via": via, "reasons": reasons,
        }));
        self
    }

    /// Records a change a person declined: one entry, no intent (nothing is made), its result
    /// the decision.
    pub(crate) async fn declined(
        &self,
        recorder: &Arc<dyn Recorder>,
        result: &'static str,
    ) -> Result<(), Error> {
        crate::metrics::global().whitelist_changes.with_label_values(&[self.intent.action, result]).inc();
        let entry = AuditEntry { time: now(), phase: Some(OUTCOME), result, ..self.intent.clone() };
        blocking(recorder, move |r| r.record(&entry)).await.map_err(|e| {
            Error::Audit(format!(
                "nothing was changed (the person {result} the change to {}), but the decision could not \
                 be written to the audit log ({e})",
                self.intent.group_id
            ))
        })
    }

    /// Makes the intent (and, for an expiring rule, the sweeper's index entry) durable; when
    /// that fails, the caller is told why and must not touch AWS.
    pub(crate) async fn intend(&self, recorder: &Arc<dyn Recorder>) -> Result<(), Error> {
        let refused = |e: String| {
            Error::Audit(format!(
                "no change was made to {}: the audit log could not record the intent to {} ({e}); \
                 every change is recorded before it is made — free space for the audit log and retry",
                self.intent.group_id, self.intent.action
            ))
        };
        if self.expiring {
            let (scope, group) = (self.scope.clone(), self.intent.group_id.clone());
            blocking(recorder, move |r| r.note_expiring(&scope, &group)).await.map_err(refused)?;
        }
        let intent = self.intent.clone();
        blocking(recorder, move |r| r.record(&intent)).await.map_err(refused)
    }

    /// Records, instead of an intent, that the change was only tried as a dry run: one entry,
    /// no expiry-index note, no change counted.
    pub(crate) async fn record_dry_run(
        &self,
        recorder: &Arc<dyn Recorder>,
        found: DryRunFound<'_>,
    ) -> Result<(), Error> {
        let mut entry = AuditEntry {
            phase: Some(DRY_RUN),
            result: if found.would_change { "would_change" } else { "no_change" },
            aws_allowed: Some(found.aws_allowed),
            error: (!found.aws_allowed).then(|| found.aws_detail.to_string()),
            ..self.intent.clone()
        };
        if !found.rule_ids.is_empty() {
            entry.rule["rule_ids"] = found.rule_ids.into();
        }
        let group = entry.group_id.clone();
        blocking(recorder, move |r| r.record(&entry)).await.map_err(|e| {
            Error::Audit(format!(
                "the dry run on {group} changed nothing, but it could not be written to the audit log ({e}); \
                 free space for the audit log and retry"
            ))
        })
    }

    /// Records how the change ended.
    pub(crate) async fn finish(
        &self,
        recorder: &Arc<dyn Recorder>,
        result: &'static str,
        rule_id: Option<&str>,
        error: Option<String>,
    ) -> Result<(), Error> {
        crate::metrics::global().whitelist_changes.with_label_values(&[self.intent.action, result]).inc();
        let mut outcome =
            AuditEntry { time: now(), phase: Some(OUTCOME), result, error, ..self.intent.clone() };
        if let Some(id) = rule_id {
            outcome.rule["rule_id"] = id.into();
        }
        let group = &self.intent.group_id;
        let what = match result {
            "failed" => format!("the change to {group} failed"),
            made => format!("the change to {group} was made ({made})"),
        };
        blocking(recorder, move |r| r.record(&outcome)).await.map_err(|e| {
            Error::Audit(format!(
                "{what} but its outcome could not be written to the audit log ({e}); its intent is \
                 recorded (id {}) and will be reconciled",
                self.intent.id.as_deref().unwrap_or("?")
            ))
        })
    }
}

/// Makes the AWS calls of `change` (`calls`), collecting their receipts for its outcome.
pub(crate) async fn answered<T>(change: Change, calls: impl Future<Output = T>) -> (Change, T) {
    let (out, r) = receipts::collect(change.identity(), calls).await;
    (change.with_receipts(r), out)
}

/// [`answered`] for changes made by one AWS call (a removal of several rules): each outcome
/// carries the call's receipts.
pub(crate) async fn all_answered<T>(
    changes: Vec<Change>,
    calls: impl Future<Output = T>,
) -> (Vec<Change>, T) {
    let caller = changes.first().map_or("anonymous", |c| c.identity()).to_string();
    let (out, r) = receipts::collect(&caller, calls).await;
    (changes.into_iter().map(|c| c.with_receipts(r.clone())).collect(), out)
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Unique on the host: process id, time, and a per-process counter.
fn change_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}-{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
