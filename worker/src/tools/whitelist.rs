//! The four whitelist tools of the reference system — same names, same parameters — as MCP
//! tools with input and output schemas and their scopes, on top of [`crate::whitelist::Whitelist`].

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::args::{add_args, caller_of, rule_args, scope, text_arg, tool_error};
use super::consent::McpAsker;
use crate::auth::{SCOPE_READ, SCOPE_WRITE};
use crate::caller::Caller;
use crate::mcp::{
    object, CallContext, Registry, RegistryError, Tool, ToolAnnotations, ToolError, ToolFuture, ToolOutput,
    ToolSpec,
};
use crate::whitelist::{ConsentSeal, DryRun, RuleView, Whitelist};

/// Registers `whitelist_add`, `whitelist_remove`, `whitelist_list` and `whitelist_check`
/// (the service notes expiring rules for the sweeper, before it adds them); `seal` makes the
/// request states of consent questions (without one, a change that needs consent is refused).
pub fn register(
    registry: &mut Registry,
    service: Arc<Whitelist>,
    seal: Option<Arc<ConsentSeal>>,
) -> Result<(), RegistryError> {
    for kind in [Kind::Add, Kind::Remove, Kind::List, Kind::Check] {
        let tool = WhitelistTool { spec: spec(kind), kind, service: service.clone(), seal: seal.clone() };
        registry.register(Arc::new(tool))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Remove,
    List,
    Check,
}

struct WhitelistTool {
    spec: ToolSpec,
    kind: Kind,
    service: Arc<Whitelist>,
    seal: Option<Arc<ConsentSeal>>,
}

impl Tool for WhitelistTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// The changing tools are not offered to a read-only server or caller (their refusal
    /// names the setting); a read-only profile is refused per call, as the call names it.
    fn unavailable(&self, caller: &Caller) -> Option<String> {
        match self.kind {
            Kind::Add | Kind::Remove => {
                self.service.check_writable(None, caller).err().map(|r| r.to_string())
            }
            Kind::List | Kind::Check => None,
        }
    }

    fn call<'a>(&'a self, args: Map<String, Value>, ctx: &'a CallContext) -> ToolFuture<'a> {
        // The changes' futures (several KB: consent, EC2 writes, audit) are boxed apart, so a
        // check or a list does not allocate and copy room for them on every call.
        Box::pin(async move {
            let scope = scope(&args).map_err(ToolError::Failed)?;
            let who = caller_of(ctx);
            let fail = tool_error;
            let asker = McpAsker { ctx, seal: self.seal.as_deref(), tool: &self.spec.name };
            let dry_run = args.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
            let (text, value) = match self.kind {
                Kind::Add if dry_run => {
                    let d = Box::pin(self.service.dry_run_add(&scope, &add_args(&args), &who))
                        .await
                        .map_err(fail)?;
                    let existing = d.existing.first().map(rule_value);
                    let mut value = dry_run_value(&d);
                    value["rule"] = existing.unwrap_or(Value::Null);
                    (d.message, value)
                }
                Kind::Remove if dry_run => {
                    let d = Box::pin(self.service.dry_run_remove(&scope, &rule_args(&args), &who))
                        .await
                        .map_err(fail)?;
                    let mut value = dry_run_value(&d);
                    value["removed"] = json!([]);
                    value["would_remove"] = d.existing.iter().map(rule_value).collect();
                    (d.message, value)
                }
                Kind::Add => {
                    let a = add_args(&args);
                    let r = Box::pin(self.service.add_with(&scope, &a, &who, &asker)).await.map_err(fail)?;
                    let value = object([
                        ("success", true.into()),
                        ("changed", r.changed.into()),
                        ("renewed", r.renewed.into()),
                        ("previous_expires_at", r.previous_expires_at.clone().into()),
                        ("message", r.message.clone().into()),
                        ("rule", rule_value(&r.rule)),
                    ]);
                    (r.message, value)
                }
                Kind::Remove => {
                    let r = Box::pin(self.service.remove_with(&scope, &rule_args(&args), &who, &asker))
                        .await
                        .map_err(fail)?;
                    let removed: Vec<Value> = r.removed.iter().map(rule_value).collect();
                    let value = object([
                        ("success", true.into()),
                        ("changed", r.changed.into()),
                        ("message", r.message.clone().into()),
                        ("removed", removed.into()),
                    ]);
                    (r.message, value)
                }
                Kind::List => {
                    let group = text_arg(&args, "security_group_id").unwrap_or_default();
                    let rules = self.service.list(&scope, &group, &who).await.map_err(fail)?;
                    let lines: Vec<String> = rules
                        .iter()
                        .map(|r| format!("- {} ({}) {}", r.summary(), r.rule_id, r.description))
                        .collect();
                    let text = format!(
                        "{} has {} ingress rule(s){}{}",
                        group,
                        rules.len(),
                        if lines.is_empty() { "" } else { ":\n" },
                        lines.join("\n")
                    );
                    let values: Vec<Value> = rules.iter().map(rule_value).collect();
                    let value = object([
                        ("success", true.into()),
                        ("security_group_id", group.into()),
                        ("rules", values.into()),
                        ("count", rules.len().into()),
                    ]);
                    (text, value)
                }
                Kind::Check => {
                    let r = self.service.check(&scope, &rule_args(&args), &who).await.map_err(fail)?;
                    let value = object([
                        ("success", true.into()),
                        ("exists", r.exists.into()),
                        ("message", r.message.clone().into()),
                        ("rule", r.rule.as_ref().map(rule_value).into()),
                    ]);
                    (r.message, value)
                }
            };
            Ok(ToolOutput { text, structured: Some(value) })
        })
    }
}

pub(super) fn rule_value(r: &RuleView) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// The fields every dry run answers with (`changed` is false: nothing was changed).
fn dry_run_value(d: &DryRun) -> Value {
    json!({
        "success": true,
        "changed": false,
        "dry_run": true,
        "would_change": d.would_change,
        "message": d.message,
        "planned_rule": serde_json::to_value(&d.rule).unwrap_or(Value::Null),
        "expires_at": d.expires_at,
        "previous_expires_at": d.previous_expires_at,
        "rule_ids": d.rule_ids,
        "aws_allowed": serde_json::to_value(&d.aws_allowed).unwrap_or(Value::Null),
    })
}

fn spec(kind: Kind) -> ToolSpec {
    let (name, title, description, annotations, scope) = match kind {
        Kind::Add => (
            "whitelist_add",
            "Allow an IP address into a security group",
            "Add an ingress rule to an EC2 security group allowing an IP address or CIDR on a port. \
             ip_address may be \"current\" for the caller's own address. Adding a rule that already \
             exists succeeds with changed=false; with duration, a rule this service added is renewed \
             instead: its expiry is set anew (renewed=true, previous_expires_at). duration (e.g. \
             \"8h\") makes the rule expire; the service removes it afterwards. Policy may refuse a request and says which setting did. \
             dry_run: true shows exactly what would change (the rule, its description and expiry) \
             and asks AWS whether your credentials may make the change, changing nothing.",
            ToolAnnotations { read_only: false, destructive: false, idempotent: true, open_world: true },
            SCOPE_WRITE,
        ),
        Kind::Remove => (
            "whitelist_remove",
            "Remove an IP address from a security group",
            "Remove the ingress rule that allows exactly this address/CIDR, protocol and port. \
             Removing a rule that is not there succeeds with changed=false. dry_run: true shows \
             which rules would be removed and asks AWS whether your credentials may remove them, \
             changing nothing.",
            ToolAnnotations { read_only: false, destructive: true, idempotent: true, open_world: true },
            SCOPE_WRITE,
        ),
        Kind::List => (
            "whitelist_list",
            "List a security group's ingress rules",
            "List every ingress rule of an EC2 security group with its rule id, source, protocol, \
             ports, description and expiry.",
            ToolAnnotations { read_only: true, destructive: false, idempotent: true, open_world: true },
            SCOPE_READ,
        ),
        Kind::Check => (
            "whitelist_check",
            "Check whether an IP address is allowed",
            "Check whether a security group has an ingress rule allowing exactly this address/CIDR, \
             protocol and port, and which rule matched. AWS errors are reported as errors.",
            ToolAnnotations { read_only: true, destructive: false, idempotent: true, open_world: true },
            SCOPE_READ,
        ),
    };
    ToolSpec {
        name: name.into(),
        title: Some(title.into()),
        description: description.into(),
        input_schema: super::args::with_group_header(input_schema(kind)),
        output_schema: Some(output_schema(kind)),
        scope: Some(scope),
        annotations,
    }
}

/// The arguments every tool that reaches AWS takes: which account and region.
pub(super) fn account_props() -> Value {
    json!({
        "region": {"type": "string", "description": "AWS region, e.g. eu-west-1 (default from the profile or server config)", "maxLength": 32},
        "profile": {"type": "string", "description": "Name of a credential profile configured on the server", "maxLength": 128},
        "credentials": {
            "type": "object",
            "description": "Per-call AWS credentials (compatibility; the server may disable them)",
            "properties": {
                "access_key_id": {"type": "string", "maxLength": 128},
                "secret_access_key": {"type": "string", "maxLength": 256},
                "session_token": {"type": "string", "maxLength": 4096},
                "region": {"type": "string", "maxLength": 32}
            },
            "required": ["access_key_id", "secret_access_key"],
            "additionalProperties": false
        }
    })
}

fn input_schema(kind: Kind) -> Value {
    let mut props = account_props();
    if let Some(p) = props.as_object_mut() {
        p.insert("security_group_id".into(), json!({"type": "string", "description": "Security group id, e.g. sg-0123456789abcdef0", "minLength": 3, "maxLength": 64}));
    }
    let mut required = vec!["security_group_id"];
    if kind != Kind::List {
        required.push("ip_address");
        let p = props.as_object_mut().expect("literal object");
        p.insert("ip_address".into(), json!({"type": "string", "description": "IPv4/IPv6 address or CIDR, or \"current\" for your own address", "maxLength": 64}));
        p.insert("port".into(), json!({"type": ["integer", "string"], "description": "Port number, range (8000-8100) or name (ssh, https, rdp, …); default from server config (22)"}));
        p.insert("protocol".into(), json!({"type": "string", "description": "tcp, udp, icmp or all (-1); default tcp", "maxLength": 8}));
    }
    if matches!(kind, Kind::Add | Kind::Remove) {
        let p = props.as_object_mut().expect("literal object");
        p.insert("dry_run".into(), json!({"type": "boolean", "description": "Change nothing: answer what would change and whether AWS would allow it"}));
    }
    if kind == Kind::Add {
        let p = props.as_object_mut().expect("literal object");
        p.insert("description".into(), json!({"type": "string", "description": "Description template: {date}, {user}, {reason}, {expires}", "maxLength": 255}));
        p.insert(
            "user".into(),
            json!({"type": "string", "description": "Who the rule is for ({user})", "maxLength": 128}),
        );
        p.insert(
            "reason".into(),
            json!({"type": "string", "description": "Why ({reason})", "maxLength": 200}),
        );
        p.insert("duration".into(), json!({"type": "string", "description": "How long the rule lives, e.g. 30m, 8h, 2d (capped by server policy)", "maxLength": 32}));
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

pub(super) fn rule_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "rule_id": {"type": "string"},
            "group_id": {"type": "string"},
            "cidr_ip": {"type": ["string", "null"]},
            "source": {"type": "string"},
            "protocol": {"type": "string"},
            "port": {"type": "string"},
            "from_port": {"type": "integer"},
            "to_port": {"type": "integer"},
            "description": {"type": "string"},
            "expires_at": {"type": ["string", "null"]},
            "managed": {"type": "boolean"}
        },
        "required": ["rule_id", "group_id", "cidr_ip", "protocol", "port", "description", "expires_at", "managed"]
    })
}

pub(super) fn nullable(mut schema: Value) -> Value {
    schema["type"] = json!(["object", "null"]);
    schema
}

/// What a dry run adds to the answer of add and remove (present when `dry_run` was true).
fn dry_run_schema(props: &mut Value) {
    let planned = json!({
        "type": "object",
        "description": "The rule as it would be written (add: whole description, signed marker and expiry included)",
        "properties": {
            "group_id": {"type": "string"},
            "cidr_ip": {"type": "string"},
            "protocol": {"type": "string"},
            "port": {"type": "string"},
            "from_port": {"type": "integer"},
            "to_port": {"type": "integer"},
            "description": {"type": ["string", "null"]},
            "expires_at": {"type": ["string", "null"]}
        },
        "required": ["group_id", "cidr_ip", "protocol", "port", "description", "expires_at"]
    });
    let verdict = json!({
        "type": "object",
        "description": "EC2's DryRun answer: DryRunOperation (allowed) or UnauthorizedOperation (not), with the IAM action",
        "properties": {"allowed": {"type": "boolean"}, "action": {"type": "string"}, "detail": {"type": "string"}},
        "required": ["allowed", "action", "detail"]
    });
    let extra = json!({
        "dry_run": {"type": "boolean", "description": "true: nothing was changed"},
        "would_change": {"type": "boolean", "description": "Whether the call without dry_run would change the group"},
        "planned_rule": planned,
        "expires_at": {"type": ["string", "null"]},
        "previous_expires_at": {"type": ["string", "null"], "description": "A renewal: the rule's expiry before it (null: none)"},
        "rule_ids": {"type": "array", "items": {"type": "string"}, "description": "remove: the rules that would be removed; add: the identical rule already there"},
        "aws_allowed": verdict
    });
    if let (Some(p), Value::Object(extra)) = (props.as_object_mut(), extra) {
        p.extend(extra);
    }
}

fn output_schema(kind: Kind) -> Value {
    let (mut props, required) = match kind {
        Kind::Add => (
            // `rule` is the rule added or found; a dry run that finds none has no rule.
            json!({"success": {"type": "boolean"}, "changed": {"type": "boolean"}, "renewed": {"type": "boolean", "description": "The rule existed, managed, and was given the new expiry"}, "message": {"type": "string"}, "rule": nullable(rule_schema())}),
            vec!["success", "changed", "message"],
        ),
        Kind::Remove => (
            json!({"success": {"type": "boolean"}, "changed": {"type": "boolean"}, "message": {"type": "string"}, "removed": {"type": "array", "items": rule_schema()}, "would_remove": {"type": "array", "items": rule_schema()}}),
            vec!["success", "changed", "message", "removed"],
        ),
        Kind::List => (
            json!({"success": {"type": "boolean"}, "security_group_id": {"type": "string"}, "rules": {"type": "array", "items": rule_schema()}, "count": {"type": "integer"}}),
            vec!["success", "security_group_id", "rules", "count"],
        ),
        Kind::Check => (
            json!({"success": {"type": "boolean"}, "exists": {"type": "boolean"}, "message": {"type": "string"}, "rule": {"type": ["object", "null"]}}),
            vec!["success", "exists", "message", "rule"],
        ),
    };
    if matches!(kind, Kind::Add | Kind::Remove) {
        dry_run_schema(&mut props);
    }
    json!({"type": "object", "properties": props, "required": required})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_accepted_by_the_registry_validator() {
        for kind in [Kind::Add, Kind::Remove, Kind::List, Kind::Check] {
            let s = spec(kind);
            crate::mcp::schema::check_schema(&s.input_schema).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            crate::mcp::schema::check_schema(s.output_schema.as_ref().unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        }
    }

    #[test]
    fn reading_tools_need_read_and_changing_tools_need_write() {
        let scopes: Vec<(String, Option<&str>)> =
            [Kind::Add, Kind::Remove, Kind::List, Kind::Check].map(|k| (spec(k).name, spec(k).scope)).into();
        assert_eq!(
            scopes,
            vec![
                ("whitelist_add".to_string(), Some(SCOPE_WRITE)),
                ("whitelist_remove".to_string(), Some(SCOPE_WRITE)),
                ("whitelist_list".to_string(), Some(SCOPE_READ)),
                ("whitelist_check".to_string(), Some(SCOPE_READ)),
            ]
        );
    }
}
