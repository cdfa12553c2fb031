//! A person in the loop: `[policy.consent]` decides which changes need a person's consent
//! ([`ConsentRules`]), a change is described exactly once ([`ProposedChange`]), and whoever can
//! reach the person (the MCP client, through elicitation) answers through the [`Asker`] trait.
//!
//! Pure: no MCP, no HTTP, no files. The service asks in one place (`Whitelist::consent`), after
//! the request is resolved and the policy allowed it, before any AWS write; the tools layer
//! implements [`Asker`] for each protocol era, and [`super::consent_token`] seals what a
//! stateless client carries between the question and its answer.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::description::rfc3339;
use super::policy::glob;
use super::target::{Ports, Protocol};

/// Which changes need a person's consent. The default needs none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsentRules {
    /// Every change.
    pub always: bool,
    /// Changes to these groups (ids or `sg-0abc*` patterns).
    pub groups: Vec<String>,
    /// Changes that open (or close) any of these ports: a range or `all` that includes one counts.
    pub ports: Vec<u16>,
    /// IPv4 networks wider than /N (a shorter prefix).
    pub wider_than_v4: Option<u8>,
    /// IPv6 networks wider than /N.
    pub wider_than_v6: Option<u8>,
    /// Rules that live longer than this; a rule without expiry lives longer than any.
    pub longer_than: Option<Duration>,
    /// Every removal.
    pub removes: bool,
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `whitelist_add`.
    Add,
    /// `whitelist_remove`.
    Remove,
}

impl Action {
    /// `add` or `remove`, as the audit log spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}

/// The exact change a person is asked about, resolved and allowed by the policy: what the
/// question shows, what the audit records, and what a consent is bound to (its [`digest`]).
///
/// [`digest`]: ProposedChange::digest
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedChange {
    /// Add or remove.
    pub action: Action,
    /// The group.
    pub group_id: String,
    /// The source network.
    pub cidr: IpNet,
    /// The protocol.
    pub protocol: Protocol,
    /// The ports.
    pub ports: Ports,
    /// How long an added rule lives (`None`: until removed; always `None` for a remove).
    pub duration: Option<Duration>,
    /// When an added rule would expire, if asked now (shown, not bound: a retry comes later).
    pub expires: Option<SystemTime>,
    /// Rules a remove would delete (sorted).
    pub rule_ids: Vec<String>,
    /// What else shapes the rule (description template, user, reason), as the call gave it.
    pub details: String,
    /// Credential profile and region the change is made with.
    pub account: String,
    /// Who asks: the authenticated identity, or `anonymous`.
    pub requested_by: String,
    /// From where, as the server resolved the caller's address.
    pub source: Option<IpAddr>,
}

impl ProposedChange {
    /// SHA-256 over a canonical text of everything that makes the change what it is (not the
    /// expiry instant, which moves between question and retry; its duration is bound instead).
    pub fn digest(&self) -> [u8; 32] {
        let duration = self.duration.map_or("-".to_string(), |d| d.as_secs().to_string());
        let text = format!(
            "awswl-change-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{duration}\n{}\n{}\n{}",
            self.action.as_str(),
            self.group_id,
            self.cidr,
            self.protocol,
            self.ports.from,
            self.ports.to,
            self.rule_ids.join(","),
            self.account,
            self.details,
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, text.as_bytes()).as_ref());
        out
    }

    /// One paragraph for a person: what, where, for how long, who asks.
    pub fn describe(&self) -> String {
        let what = match self.action {
            Action::Add => format!("ALLOW {} port {} from {}", self.protocol, self.ports, self.cidr),
            Action::Remove => {
                format!("REMOVE the rule allowing {} port {} from {}", self.protocol, self.ports, self.cidr)
            }
        };
        let lasting = match (self.action, self.duration, self.expires) {
            (Action::Remove, _, _) => String::new(),
            (Action::Add, Some(d), Some(at)) => {
                format!("; expires after {} (about {})", humantime::format_duration(d), rfc3339(at))
            }
            (Action::Add, Some(d), None) => format!("; expires after {}", humantime::format_duration(d)),
            (Action::Add, None, _) => "; permanent (never expires)".into(),
        };
        let rules = match self.rule_ids.as_slice() {
            [] => String::new(),
            ids => format!(" (rule {})", ids.join(", ")),
        };
        let from = self.source.map_or(String::new(), |a| format!(" from {a}"));
        format!(
            "{what} in security group {}{rules}{lasting}. Requested by {}{from}.",
            self.group_id, self.requested_by
        )
    }
}

impl ConsentRules {
    /// True when no change needs consent.
    pub fn is_off(&self) -> bool {
        *self == ConsentRules::default()
    }

    /// Why `change` needs a person's consent: one reason per rule that matched; empty when it
    /// needs none.
    pub fn needs(&self, change: &ProposedChange) -> Vec<String> {
        let mut why = Vec::new();
        if self.always {
            why.push("every change needs consent (always)".to_string());
        }
        if let Some(p) = self.groups.iter().find(|p| glob(p, &change.group_id)) {
            why.push(format!("changes to {} need consent (groups: {p})", change.group_id));
        }
        if let Some(port) = self.ports.iter().find(|p| touches_port(change.protocol, change.ports, **p)) {
            why.push(format!("changes to port {port} need consent (ports)"));
        }
        let wider = match change.cidr {
            IpNet::V4(_) => self.wider_than_v4.map(|n| (n, "wider_than_v4")),
            IpNet::V6(_) => self.wider_than_v6.map(|n| (n, "wider_than_v6")),
        };
        if let Some((n, key)) = wider.filter(|(n, _)| change.cidr.prefix_len() < *n) {
            why.push(format!("{} is wider than /{n} ({key})", change.cidr));
        }
        if let (Action::Add, Some(max)) = (change.action, self.longer_than) {
            match change.duration {
                None => why.push(format!(
                    "a permanent rule lives longer than {} (longer_than_hours)",
                    humantime::format_duration(max)
                )),
                Some(d) if d > max => why.push(format!(
                    "{} is longer than {} (longer_than_hours)",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                )),
                Some(_) => {}
            }
        }
        if change.action == Action::Remove && self.removes {
            why.push("every removal needs consent (removes)".to_string());
        }
        why
    }

    /// One sentence for the instructions a model reads before it calls: which changes need a
    /// person's consent; `None` when none does.
    pub fn summary(&self) -> Option<String> {
        if self.always {
            return Some("Every change needs a person's consent, asked through the client.".into());
        }
        let mut parts = Vec::new();
        if !self.groups.is_empty() {
            parts.push(format!("to security groups {}", self.groups.join(", ")));
        }
        match self.ports.as_slice() {
            [] => {}
            [one] => parts.push(format!("to port {one}")),
            many => {
                let list: Vec<String> = many.iter().map(u16::to_string).collect();
                parts.push(format!("to ports {}", list.join(", ")));
            }
        }
        if let Some(n) = self.wider_than_v4 {
            parts.push(format!("for IPv4 networks wider than /{n}"));
        }
        if let Some(n) = self.wider_than_v6 {
            parts.push(format!("for IPv6 networks wider than /{n}"));
        }
        if let Some(d) = self.longer_than {
            parts.push(format!(
                "adding rules that last longer than {} or never expire",
                humantime::format_duration(d)
            ));
        }
        if self.removes {
            parts.push("removing any rule".into());
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!(
            "Changes {} need a person's consent, asked through the client; a client that cannot ask is refused.",
            parts.join("; ")
        ))
    }
}

/// Does a rule of `protocol` over `ports` open `port`? `all` opens every port; ICMP none.
fn touches_port(protocol: Protocol, ports: Ports, port: u16) -> bool {
    match protocol {
        Protocol::All => true,
        Protocol::Icmp => false,
        Protocol::Tcp | Protocol::Udp => {
            ports == Ports::ANY || (ports.from <= i32::from(port) && i32::from(port) <= ports.to)
        }
    }
}

/// A person said yes: recorded with the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consented {
    /// Who was asked: the caller's identity and, when known, the client that asked them.
    pub asked: String,
    /// How: `input_required` (2026-07-28) or `elicitation` (a request on the legacy stream).
    pub via: &'static str,
}

/// Why a change that needs consent does not go ahead (now).
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// The person declined (or cancelled): nothing changes, the decision is audited.
    Declined {
        /// Who was asked.
        asked: String,
        /// How they were asked.
        via: &'static str,
        /// `cancel` rather than `decline`.
        cancelled: bool,
    },
    /// The client must ask the person and call again with the answer (2026-07-28): the
    /// transport's whole `InputRequiredResult`.
    InputRequired(serde_json::Value),
    /// The change cannot be consented to this way (a client that cannot ask, a request state
    /// that is forged, replayed, expired or someone else's, no answer in time): nothing
    /// changes. `event` is the metric label (`refused` or `expired`).
    Refused {
        /// Said to the caller.
        message: String,
        /// `refused` or `expired`.
        event: &'static str,
    },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Declined { asked, cancelled: false, .. } => {
                write!(f, "the person asked ({asked}) declined this change; nothing was changed")
            }
            Stop::Declined { asked, cancelled: true, .. } => {
                write!(f, "the person asked ({asked}) cancelled without consenting; nothing was changed")
            }
            Stop::InputRequired(_) => {
                f.write_str("a person's consent is being asked for; nothing was changed yet")
            }
            Stop::Refused { message, .. } => f.write_str(message),
        }
    }
}

/// What [`Asker::ask`] returns.
pub type AskFuture<'a> = Pin<Box<dyn Future<Output = Result<Consented, Stop>> + Send + 'a>>;

/// Whoever can reach the person behind the caller for one call.
pub trait Asker: Send + Sync {
    /// Asks (or, on a retry, reads the answer) whether `change` may be made; `reasons` says
    /// which `[policy.consent]` rules want a person.
    fn ask<'a>(&'a self, change: &'a ProposedChange, reasons: &'a [String]) -> AskFuture<'a>;
}

/// The asker of callers no person stands behind (the default, and transports that cannot ask):
/// refuses every change that needs consent, naming the setting.
#[derive(Debug, Clone, Copy, Default)]
pub struct NobodyToAsk;

impl Asker for NobodyToAsk {
    fn ask<'a>(&'a self, _: &'a ProposedChange, reasons: &'a [String]) -> AskFuture<'a> {
        let message = cannot_ask(reasons, "this transport cannot ask a person");
        Box::pin(async move { Err(Stop::Refused { message, event: "refused" }) })
    }
}

/// The refusal for a change that needs consent when nobody can be asked: what needs a person,
/// why nobody can be asked, and the setting that decides.
pub fn cannot_ask(reasons: &[String], why: &str) -> String {
    format!(
        "refused: a person's consent is required for this change ({}), and {why}; nothing was \
         changed. Use an MCP client that supports elicitation (form mode), or ask the operator to \
         change [policy.consent] in the server's configuration",
        reasons.join("; ")
    )
}

#[cfg(test)]
#[path = "consent_tests.rs"]
mod tests;
