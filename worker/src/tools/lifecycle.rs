//! The tools for the life of an access beyond one rule (issue 14): `whitelist_groups` (the
//! groups the caller may touch), `whitelist_find` (where an address, a network or a user is
//! allowed across them), `whitelist_revoke_everywhere` (offboarding) and `whitelist_move`
//! (a user's access in a group moved to a new address), `whitelist_history` (the audit log,
//! filtered and paged). Each declares its scope; the ones that change something are hidden
//! from read-only callers, as `whitelist_add` is.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::args::{caller_of, rule_args, scope, text_arg, tool_error};
use super::consent::McpAsker;
use super::whitelist::{account_props, nullable, rule_schema};
use crate::auth::{SCOPE_READ, SCOPE_WRITE};
use crate::caller::Caller;
use crate::mcp::{
    CallContext, Registry, RegistryError, Tool, ToolAnnotations, ToolError, ToolFuture, ToolOutput, ToolSpec,
};
use crate::whitelist::{ConsentSeal, FindArgs, HistoryQuery, MoveArgs, Whitelist};

/// Registers `whitelist_groups`, `whitelist_find`, `whitelist_revoke_everywhere`,
/// `whitelist_move` and `whitelist_history`; `seal` makes the request states of consent
/// questions, as for `whitelist_add`.
pub fn register(
    registry: &mut Registry,
    service: Arc<Whitelist>,
    seal: Option<Arc<ConsentSeal>>,
) -> Result<(), RegistryError> {
    for kind in KINDS {
        let tool = LifecycleTool { spec: spec(kind), kind, service: service.clone(), seal: seal.clone() };
        registry.register(Arc::new(tool))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Groups,
    Find,
    Revoke,
    Move,
    History,
}

const KINDS: [Kind; 5] = [Kind::Groups, Kind::Find, Kind::Revoke, Kind::Move, Kind::History];

struct LifecycleTool {
    spec: ToolSpec,
    kind: Kind,
    service: Arc<Whitelist>,
    seal: Option<Arc<ConsentSeal>>,
}

impl Tool for LifecycleTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// The tools that change something are not offered to a read-only server or caller.
    fn unavailable(&self, caller: &Caller) -> Option<String> {
        match self.kind {
            Kind::Revoke | Kind::Move => {
                self.service.check_writable(None, caller).err().map(|r| r.to_string())
            }
            Kind::Groups | Kind::Find | Kind::History => None,
        }
    }

    fn call<'a>(&'a self, args: Map<String, Value>, ctx: &'a CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            let scope = scope(&args).map_err(ToolError::Failed)?;
            let who = caller_of(ctx);
            let fail = tool_error;
            let asker = McpAsker { ctx, seal: self.seal.as_deref(), tool: &self.spec.name };
            let (text, value) = match self.kind {
                Kind::Groups => {
                    let groups = self.service.groups(&scope, &who).await.map_err(fail)?;
                    let lines: Vec<String> = groups
                        .iter()
                        .map(|g| {
                            let vpc = g.vpc_id.as_deref().unwrap_or("no VPC");
                            format!("- {} {:?} ({vpc}): {}", g.group_id, g.name, g.description)
                        })
                        .collect();
                    let text = format!(
                        "{} group(s) you may touch{}{}",
                        groups.len(),
                        colon(&lines),
                        lines.join("\n")
                    );
                    (text, json!({"success": true, "groups": groups, "count": groups.len()}))
                }
                Kind::Find => {
                    let q =
                        FindArgs { ip_address: text_arg(&args, "ip_address"), user: text_arg(&args, "user") };
                    let found = self.service.find(&scope, &q, &who).await.map_err(fail)?;
                    let lines: Vec<String> = found
                        .iter()
                        .map(|f| {
                            let managed =
                                if f.rule.managed { "managed" } else { "not managed by this service" };
                            let until = f
                                .rule
                                .expires_at
                                .as_deref()
                                .map_or(String::new(), |at| format!(", expires {at}"));
                            let by =
                                f.added_by.as_deref().map_or(String::new(), |b| format!(", added by {b}"));
                            format!(
                                "- {} {:?}: {} (rule {}, {managed}{by}{until}) {:?}",
                                f.rule.group_id,
                                f.group_name,
                                f.rule.summary(),
                                f.rule.rule_id,
                                f.rule.description
                            )
                        })
                        .collect();
                    let text = format!("{} rule(s) found{}{}", found.len(), colon(&lines), lines.join("\n"));
                    (text, json!({"success": true, "rules": found, "count": found.len()}))
                }
                Kind::Revoke => {
                    let q =
                        FindArgs { ip_address: text_arg(&args, "ip_address"), user: text_arg(&args, "user") };
                    let dry_run = args.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
                    let r = self
                        .service
                        .revoke_everywhere_with(&scope, &q, dry_run, &who, &asker)
                        .await
                        .map_err(fail)?;
                    let lines: Vec<String> = r
                        .rules
                        .iter()
                        .map(|x| {
                            let detail = x.detail.as_deref().map_or(String::new(), |d| format!(": {d}"));
                            format!(
                                "- {} {} (rule {}): {}{detail}",
                                x.rule.group_id,
                                x.rule.summary(),
                                x.rule.rule_id,
                                x.outcome
                            )
                        })
                        .collect();
                    let text = format!("{}{}{}", r.message, colon(&lines), lines.join("\n"));
                    let value = json!({
                        "success": r.failed == 0,
                        "changed": !r.dry_run && r.removed > 0,
                        "dry_run": r.dry_run,
                        "removed": r.removed,
                        "failed": r.failed,
                        "rules": r.rules,
                        "message": r.message,
                    });
                    (text, value)
                }
                Kind::Move => {
                    let m = MoveArgs {
                        rule: rule_args(&args),
                        user: text_arg(&args, "user"),
                        duration: text_arg(&args, "duration"),
                        reason: text_arg(&args, "reason"),
                    };
                    let dry_run = args.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
                    let r = self
                        .service
                        .move_access_with(&scope, &m, dry_run, &who, &asker)
                        .await
                        .map_err(fail)?;
                    if !r.moved && !r.dry_run {
                        return Err(ToolError::Failed(r.message));
                    }
                    let value = json!({
                        "success": true,
                        "changed": r.moved,
                        "dry_run": r.dry_run,
                        "rule": r.rule,
                        "removed": r.removed,
                        "message": r.message,
                    });
                    (r.message.clone(), value)
                }
                Kind::History => {
                    let q = HistoryQuery {
                        group: text_arg(&args, "security_group_id"),
                        ip_address: text_arg(&args, "ip_address"),
                        user: text_arg(&args, "user"),
                        caller: text_arg(&args, "caller"),
                        since: text_arg(&args, "since"),
                        until: text_arg(&args, "until"),
                        outcome: text_arg(&args, "outcome"),
                        limit: args
                            .get("limit")
                            .and_then(Value::as_u64)
                            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                        cursor: text_arg(&args, "cursor"),
                    };
                    let h = self.service.history(&q, &who).await.map_err(fail)?;
                    let lines: Vec<String> = h
                        .entries
                        .iter()
                        .map(|e| {
                            let rule =
                                |k: &str| e.rule.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                            format!(
                                "- {} {} {} {} {} port {} from {} by {}: {}",
                                e.time,
                                e.phase.as_deref().unwrap_or("-"),
                                e.action,
                                e.group_id,
                                rule("protocol"),
                                rule("port"),
                                rule("cidr_ip"),
                                e.identity,
                                e.result
                            )
                        })
                        .collect();
                    let more =
                        if h.next_cursor.is_some() { " (more: pass next_cursor as cursor)" } else { "" };
                    let text = format!(
                        "{} audit entr(y/ies), newest first{more}{}{}",
                        h.entries.len(),
                        colon(&lines),
                        lines.join("\n")
                    );
                    (
                        text,
                        json!({"success": true, "entries": h.entries, "count": h.entries.len(), "next_cursor": h.next_cursor}),
                    )
                }
            };
            Ok(ToolOutput { text, structured: Some(value) })
        })
    }
}

fn colon(lines: &[String]) -> &'static str {
    if lines.is_empty() {
        ""
    } else {
        ":\n"
    }
}

fn spec(kind: Kind) -> ToolSpec {
    let read = ToolAnnotations { read_only: true, destructive: false, idempotent: true, open_world: true };
    let write = ToolAnnotations { read_only: false, destructive: true, idempotent: true, open_world: true };
    let (name, title, description) = match kind {
        Kind::Groups => (
            "whitelist_groups",
            "List the security groups you may touch",
            "List the EC2 security groups this server's policy and your credentials let you \
             touch, with name, VPC, description and tags, so you need not know sg- ids beforehand.",
        ),
        Kind::Find => (
            "whitelist_find",
            "Find where an address or a user is allowed",
            "Find, across every security group you may touch, the ingress rules that let an \
             address, a CIDR (or \"current\", your own address) or a user in: port, protocol, \
             whether this service manages the rule, who added it and when, and its expiry. \
             relation says how the rule's network stands to the one asked: exact, wider (the \
             rule lets in more than it) or narrower.",
        ),
        Kind::Revoke => (
            "whitelist_revoke_everywhere",
            "Remove an address's or a user's access from every group",
            "Offboarding: remove the rules that let an address, a CIDR or a user in, from every \
             security group you may touch, each through the same checks and audit as \
             whitelist_remove. Rules wider than the network asked, and rules this service did not \
             add (unless the policy allows removing them), are reported and kept. Each rule's \
             outcome is reported; one failure stops nothing else. dry_run: true lists what would \
             be removed and asks AWS, changing nothing — run it first.",
        ),
        Kind::Move => (
            "whitelist_move",
            "Move your access in a group to a new address",
            "Your home IP changed: replace the rules this service added for a user (by default \
             you) in a security group, for this protocol and port, by a rule for the new address \
             (ip_address, or \"current\" for your own). The new rule is added first; the old ones \
             are removed only once it exists. If the add fails, nothing is removed and the answer \
             says the old access is still in place. dry_run: true shows both steps, changing \
             nothing.",
        ),
        Kind::History => (
            "whitelist_history",
            "Who opened what, when and why",
            "The audit log of the groups you may touch, newest first: every change's intent and \
             outcome (add, renew, remove, expire) and every dry run, with who, from where, the \
             rule and its description. Filter by security_group_id, ip_address (overlapping \
             rules), user (named in the description, or who made the change), caller (who made \
             it), since/until (RFC 3339) and outcome (added, renewed, removed, expired, failed, \
             would_change, …). limit entries a page; pass next_cursor back as cursor for more. \
             Reads the recent part of this host's audit log.",
        ),
    };
    ToolSpec {
        name: name.into(),
        title: Some(title.into()),
        description: description.into(),
        input_schema: super::args::with_group_header(input_schema(kind)),
        output_schema: Some(output_schema(kind)),
        scope: Some(if writes(kind) { SCOPE_WRITE } else { SCOPE_READ }),
        annotations: if writes(kind) { write } else { read },
    }
}

/// The tools that change something (write scope, hidden from read-only callers).
fn writes(kind: Kind) -> bool {
    matches!(kind, Kind::Revoke | Kind::Move)
}

fn input_schema(kind: Kind) -> Value {
    let mut props = account_props();
    let mut required: Vec<&str> = Vec::new();
    if let (Kind::Find | Kind::Revoke, Some(p)) = (kind, props.as_object_mut()) {
        required = Vec::new();
        p.insert("ip_address".into(), json!({"type": "string", "description": "IPv4/IPv6 address or CIDR, or \"current\" for your own address", "maxLength": 64}));
        p.insert("user".into(), json!({"type": "string", "description": "A user: named in the rule's description, or the identity that added it", "maxLength": 128}));
    }
    if let (Kind::Move, Some(p)) = (kind, props.as_object_mut()) {
        required = vec!["security_group_id", "ip_address"];
        p.insert("security_group_id".into(), json!({"type": "string", "description": "Security group id, e.g. sg-0123456789abcdef0", "minLength": 3, "maxLength": 64}));
        p.insert("ip_address".into(), json!({"type": "string", "description": "The new address or CIDR, or \"current\" for your own address", "maxLength": 64}));
        p.insert("port".into(), json!({"type": ["integer", "string"], "description": "Port number, range or name; default from server config (22)"}));
        p.insert(
            "protocol".into(),
            json!({"type": "string", "description": "tcp, udp, icmp or all; default tcp", "maxLength": 8}),
        );
        p.insert("user".into(), json!({"type": "string", "description": "Whose access: named in the rules' descriptions, or the identity that added them; default: you", "maxLength": 128}));
        p.insert(
            "reason".into(),
            json!({"type": "string", "description": "Why ({reason} of the new rule)", "maxLength": 200}),
        );
        p.insert("duration".into(), json!({"type": "string", "description": "How long the new rule lives, e.g. 8h (capped by server policy)", "maxLength": 32}));
    }
    if kind == Kind::History {
        props = json!({
            "security_group_id": {"type": "string", "description": "Only this group", "minLength": 3, "maxLength": 64},
            "ip_address": {"type": "string", "description": "Only rules overlapping this address or CIDR (\"current\": yours)", "maxLength": 64},
            "user": {"type": "string", "description": "Named in the rule's description, or who made the change", "maxLength": 128},
            "caller": {"type": "string", "description": "Who made the change (the authenticated identity)", "maxLength": 256},
            "since": {"type": "string", "description": "From this time, RFC 3339", "maxLength": 40},
            "until": {"type": "string", "description": "Up to this time, RFC 3339", "maxLength": 40},
            "outcome": {"type": "string", "description": "added, renewed, removed, expired, failed, pending, would_change, …", "maxLength": 32},
            "limit": {"type": "integer", "minimum": 1, "maximum": 500, "description": "Entries a page (default 50)"},
            "cursor": {"type": "string", "description": "next_cursor of the previous page", "maxLength": 512}
        });
    }
    if let (Kind::Revoke | Kind::Move, Some(p)) = (kind, props.as_object_mut()) {
        p.insert("dry_run".into(), json!({"type": "boolean", "description": "Change nothing: answer what would change and whether AWS would allow it"}));
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn output_schema(kind: Kind) -> Value {
    let found_rule = || {
        let mut rule = rule_schema();
        if let Some(p) = rule["properties"].as_object_mut() {
            p.insert("group_name".into(), json!({"type": "string"}));
            p.insert(
                "relation".into(),
                json!({"type": "string", "enum": ["exact", "wider", "narrower", "user"]}),
            );
            p.insert("added_by".into(), json!({"type": ["string", "null"]}));
            p.insert("added_at".into(), json!({"type": ["string", "null"]}));
            p.insert("outcome".into(), json!({"type": "string"}));
            p.insert("detail".into(), json!({"type": ["string", "null"]}));
        }
        rule
    };
    match kind {
        Kind::Groups => {
            let group = json!({
                "type": "object",
                "properties": {
                    "group_id": {"type": "string"},
                    "name": {"type": "string"},
                    "vpc_id": {"type": ["string", "null"]},
                    "description": {"type": "string"},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}}
                },
                "required": ["group_id", "name", "vpc_id", "description", "tags"]
            });
            json!({"type": "object", "properties": {"success": {"type": "boolean"}, "groups": {"type": "array", "items": group}, "count": {"type": "integer"}}, "required": ["success", "groups", "count"]})
        }
        Kind::Find => {
            json!({"type": "object", "properties": {"success": {"type": "boolean"}, "rules": {"type": "array", "items": found_rule()}, "count": {"type": "integer"}}, "required": ["success", "rules", "count"]})
        }
        Kind::Revoke => json!({
            "type": "object",
            "properties": {
                "success": {"type": "boolean", "description": "false when a rule could not be removed"},
                "changed": {"type": "boolean"},
                "dry_run": {"type": "boolean"},
                "removed": {"type": "integer"},
                "failed": {"type": "integer"},
                "rules": {"type": "array", "items": found_rule()},
                "message": {"type": "string"}
            },
            "required": ["success", "changed", "dry_run", "removed", "failed", "rules", "message"]
        }),
        Kind::Move => json!({
            "type": "object",
            "properties": {
                "success": {"type": "boolean"},
                "changed": {"type": "boolean"},
                "dry_run": {"type": "boolean"},
                "rule": nullable(rule_schema()),
                "removed": {"type": "array", "items": found_rule(), "description": "Each old rule and its fate"},
                "message": {"type": "string"}
            },
            "required": ["success", "changed", "dry_run", "rule", "removed", "message"]
        }),
        Kind::History => {
            let entry = json!({
                "type": "object",
                "properties": {
                    "time": {"type": "string"},
                    "id": {"type": ["string", "null"]},
                    "phase": {"type": ["string", "null"]},
                    "action": {"type": "string"},
                    "identity": {"type": "string"},
                    "source": {"type": ["string", "null"]},
                    "group_id": {"type": "string"},
                    "rule": {"type": "object"},
                    "result": {"type": "string"}
                },
                "required": ["time", "action", "identity", "group_id", "rule", "result"]
            });
            json!({"type": "object", "properties": {"success": {"type": "boolean"}, "entries": {"type": "array", "items": entry}, "count": {"type": "integer"}, "next_cursor": {"type": ["string", "null"]}}, "required": ["success", "entries", "count", "next_cursor"]})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_accepted_and_each_tool_declares_its_scope() {
        for kind in KINDS {
            let s = spec(kind);
            crate::mcp::schema::check_schema(&s.input_schema).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            crate::mcp::schema::check_schema(s.output_schema.as_ref().unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let want = if writes(kind) { SCOPE_WRITE } else { SCOPE_READ };
            assert_eq!(s.scope, Some(want), "{}", s.name);
            assert_eq!(s.annotations.read_only, want == SCOPE_READ, "{}", s.name);
        }
    }
}
