//! What an audit entry says, and the trait the service writes entries through (the file
//! behind it is the host's audit log, `host/audit_file.rs`).

use serde::Serialize;

/// One change, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// UTC time of the change, RFC 3339 with milliseconds.
    pub time: String,
    /// `add`, `remove` or `expire`.
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
    /// The rule: cidr, protocol, ports, description, rule id.
    pub rule: serde_json::Value,
    /// `added`, `already_present`, `removed`, `not_present`, `expired`, or `failed`.
    pub result: &'static str,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where audit entries go; `record` returns only once the entry is durable.
pub trait Recorder: Send + Sync {
    /// Appends one entry durably.
    fn record(&self, entry: &AuditEntry) -> Result<(), String>;
}
