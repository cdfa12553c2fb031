//! The shapes of the service's calls: what a call names ([`RuleArgs`], [`AddArgs`], and the
//! [`Defaults`] for what it leaves out) and what it is answered ([`RuleView`], [`Added`],
//! [`Removed`], [`Checked`]).

use serde::Serialize;

use crate::whitelist::description::{self, rfc3339};
use crate::whitelist::marker::Marker;
use crate::whitelist::rules::ExistingRule;
use crate::whitelist::target::Protocol;

/// What applies when a call leaves something out.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Port (number, range or name); 22 like the reference.
    pub port: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Description template.
    pub description_template: String,
    /// `{user}` when the call names none.
    pub user: String,
    /// `{reason}` when the call gives none.
    pub reason: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            port: "22".into(),
            protocol: Protocol::Tcp,
            description_template: description::DEFAULT_TEMPLATE.into(),
            user: "MCP".into(),
            reason: "API access".into(),
        }
    }
}

/// The rule a call names.
#[derive(Debug, Clone, Default)]
pub struct RuleArgs {
    /// `security_group_id`.
    pub group: String,
    /// `ip_address`: address, CIDR or `"current"`.
    pub ip_address: String,
    /// `port`, if given.
    pub port: Option<String>,
    /// `protocol`, if given.
    pub protocol: Option<String>,
}

/// Extra inputs of an add.
#[derive(Debug, Clone, Default)]
pub struct AddArgs {
    /// The rule.
    pub rule: RuleArgs,
    /// Description template for this rule.
    pub description: Option<String>,
    /// `{user}`.
    pub user: Option<String>,
    /// `{reason}`.
    pub reason: Option<String>,
    /// `duration`, e.g. `"8h"`.
    pub duration: Option<String>,
}

/// A rule as the tools show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    /// EC2 rule id.
    pub rule_id: String,
    /// Group.
    pub group_id: String,
    /// Source network (absent for group or prefix-list sources).
    pub cidr_ip: Option<String>,
    /// Non-CIDR source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `tcp`, `udp`, `icmp`, `all`, or EC2's value for others.
    pub protocol: String,
    /// `22`, `8000-8100` or `all`.
    pub port: String,
    /// First port (-1: all).
    pub from_port: i32,
    /// Last port (-1: all).
    pub to_port: i32,
    /// Description.
    pub description: String,
    /// Expiry, RFC 3339, when the rule has one.
    pub expires_at: Option<String>,
    /// Added by this service.
    pub managed: bool,
}

impl RuleView {
    pub(super) fn of(r: &ExistingRule, marker: Marker) -> RuleView {
        RuleView {
            rule_id: r.rule_id.clone(),
            group_id: r.group_id.clone(),
            cidr_ip: r.cidr.map(|c| c.to_string()),
            source: r.other_source.clone(),
            protocol: Protocol::from_ec2(&r.protocol).map_or(r.protocol.clone(), |p| p.to_string()),
            port: r.ports().to_string(),
            from_port: r.from_port,
            to_port: r.to_port,
            description: r.description.clone(),
            expires_at: marker.expires().map(rfc3339),
            managed: marker.managed(),
        }
    }

    /// "tcp 22 from 203.0.113.7/32", for messages.
    pub fn summary(&self) -> String {
        format!(
            "{} {} from {}",
            self.protocol,
            self.port,
            self.cidr_ip.as_deref().or(self.source.as_deref()).unwrap_or("?")
        )
    }
}

/// Result of an add.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Added {
    /// False when the rule was already there (and not renewed).
    pub changed: bool,
    /// True when the rule was there, managed, and given the new expiry (a renewal).
    pub renewed: bool,
    /// A renewal: the expiry before it, RFC 3339 (`None`: it had none).
    pub previous_expires_at: Option<String>,
    /// The rule (new, renewed or existing).
    pub rule: RuleView,
    /// For people.
    pub message: String,
}

impl Added {
    /// The answer when the identical rule is already there: success, nothing changed.
    pub(super) fn unchanged(rule: RuleView) -> Added {
        let message = format!(
            "{} is already allowed in {} (rule {}); nothing changed",
            rule.summary(),
            rule.group_id,
            rule.rule_id
        );
        Added { changed: false, renewed: false, previous_expires_at: None, rule, message }
    }
}

/// Result of a remove.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removed {
    /// False when no such rule existed.
    pub changed: bool,
    /// Rules removed.
    pub removed: Vec<RuleView>,
    /// For people.
    pub message: String,
}

/// Result of a check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checked {
    /// Whether the exact rule exists.
    pub exists: bool,
    /// The rule that matched.
    pub rule: Option<RuleView>,
    /// For people.
    pub message: String,
}
