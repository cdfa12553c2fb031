//! The consent gate: the one place a change meets `[policy.consent]`, after the request is
//! resolved and the policy allowed it, before any AWS write. It asks through the call's
//! [`Asker`], counts the outcome (`awswl_consent_total{event}`), audits a decline, and hands an
//! acceptance back so the change's own audit entries carry it.

use std::sync::Arc;

use tracing::info;

use super::audit::{Change, Recorder};
use super::consent::{Action, Asker, ConsentRules, Consented, ProposedChange, Stop};
use super::error::Error;
use super::firewall::Scope;
use super::rules::RuleSpec;
use crate::caller::Caller;

/// A person's yes, with the rules that wanted it: recorded on the change's audit entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Who was asked, and how.
    pub consented: Consented,
    /// The `[policy.consent]` rules that matched.
    pub reasons: Vec<String>,
}

impl Approval {
    /// `change`, its audit entries carrying this approval.
    pub(crate) fn stamp(&self, change: Change) -> Change {
        change.with_consent("accepted", &self.consented.asked, self.consented.via, &self.reasons)
    }
}

/// Asks for consent when the rules want it: `Ok(None)` when they do not, `Ok(Some)` when a
/// person said yes; a decline is audited (`record` describes the change) and, like every
/// other stop, answered as [`Error::Consent`] with nothing changed.
pub(crate) async fn check(
    rules: &ConsentRules,
    recorder: &Arc<dyn Recorder>,
    change: &ProposedChange,
    asker: &dyn Asker,
    record: Change,
) -> Result<Option<Approval>, Error> {
    let reasons = rules.needs(change);
    if reasons.is_empty() {
        return Ok(None);
    }
    let counter = |event: &str| crate::metrics::global().consent.with_label_values(&[event]).inc();
    match asker.ask(change, &reasons).await {
        Ok(consented) => {
            counter("accepted");
            info!(event = "consent_accepted", asked = %consented.asked, via = consented.via, change = %change.describe(), "a person consented to the change");
            Ok(Some(Approval { consented, reasons }))
        }
        Err(Stop::Declined { asked, via, cancelled }) => {
            let (decision, label) =
                if cancelled { ("cancelled", "cancelled") } else { ("declined", "declined") };
            counter("declined");
            info!(event = "consent_declined", %asked, via, decision, change = %change.describe(), "the person did not consent; nothing changed");
            let record = record.with_consent(decision, &asked, via, &reasons);
            record.declined(recorder, label).await?;
            Err(Error::Consent(Stop::Declined { asked, via, cancelled }))
        }
        Err(Stop::Refused { message, event }) => {
            counter(event);
            info!(event = "consent_refused", reason = event, %message, "consent could not be had; nothing changed");
            Err(Error::Consent(Stop::Refused { message, event }))
        }
        Err(stop @ Stop::InputRequired(_)) => Err(Error::Consent(stop)),
    }
}

/// A change's audit entries, carrying the person's consent when one was given.
pub(crate) fn stamped(change: Change, approval: Option<&Approval>) -> Change {
    match approval {
        Some(a) => a.stamp(change),
        None => change,
    }
}

/// The change as a person is asked about it (an add fills in duration, expiry and details).
pub(crate) fn proposed(action: Action, spec: &RuleSpec, scope: &Scope, who: &Caller) -> ProposedChange {
    let keys = scope.keys.as_ref().map_or(String::new(), |k| format!(" keys {}", k.access_key_id));
    ProposedChange {
        action,
        group_id: spec.group_id.clone(),
        cidr: spec.cidr,
        protocol: spec.protocol,
        ports: spec.ports,
        duration: None,
        expires: None,
        rule_ids: Vec::new(),
        details: String::new(),
        account: format!(
            "profile {} region {}{keys}",
            scope.profile.as_deref().unwrap_or("-"),
            scope.region.as_deref().unwrap_or("-")
        ),
        requested_by: who.identity.as_deref().unwrap_or("anonymous").to_string(),
        source: who.addr,
    }
}
