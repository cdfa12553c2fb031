//! The four whitelist tools of the reference system — same names, same parameters — as MCP
//! tools with input and output schemas, on top of [`crate::whitelist::Whitelist`].

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::mcp::{
    CallContext, Registry, RegistryError, Tool, ToolAnnotations, ToolError, ToolFuture, ToolOutput, ToolSpec,
};
use crate::whitelist::{AddArgs, Keys, RuleArgs, RuleView, Scope, Whitelist, Who};

/// Registers `whitelist_add`, `whitelist_remove`, `whitelist_list` and `whitelist_check`;
/// expiring rules are noted in `state_dir` for the sweeper.
pub fn register(
    registry: &mut Registry,
    service: Arc<Whitelist>,
    state_dir: Option<PathBuf>,
) -> Result<(), RegistryError> {
    for kind in [Kind::Add, Kind::Remove, Kind::List, Kind::Check] {
        let tool =
            WhitelistTool { spec: spec(kind), kind, service: service.clone(), state_dir: state_dir.clone() };
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
    state_dir: Option<PathBuf>,
}

impl Tool for WhitelistTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, args: Map<String, Value>, ctx: &'a CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            let scope = scope(&args).map_err(ToolError::Failed)?;
            let who = Who {
                identity: ctx.caller.subject.clone(),
                addr: ctx.caller.client_addr,
                request_id: ctx.caller.log_id.clone().or_else(|| Some(ctx.request_id.to_value().to_string())),
                allowed_groups: ctx.caller.security_groups.clone(),
            };
            let fail = |e: crate::whitelist::Error| ToolError::Failed(e.to_string());
            let (text, value) = match self.kind {
                Kind::Add => {
                    let a = add_args(&args);
                    let r = self.service.add(&scope, &a, &who).await.map_err(fail)?;
                    if let (Some(dir), Some(_)) = (&self.state_dir, &r.rule.expires_at) {
                        if let Err(e) = crate::sweeper::note_expiring(dir, &scope, &r.rule.group_id) {
                            tracing::error!(error = %e, "cannot record the expiring rule for the sweeper");
                        }
                    }
                    (
                        r.message.clone(),
                        json!({"success": true, "changed": r.changed, "message": r.message, "rule": rule_value(&r.rule)}),
                    )
                }
                Kind::Remove => {
                    let r = self.service.remove(&scope, &rule_args(&args), &who).await.map_err(fail)?;
                    let removed: Vec<Value> = r.removed.iter().map(rule_value).collect();
                    (
                        r.message.clone(),
                        json!({"success": true, "changed": r.changed, "message": r.message, "removed": removed}),
                    )
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
                    (
                        text,
                        json!({"success": true, "security_group_id": group, "rules": values, "count": rules.len()}),
                    )
                }
                Kind::Check => {
                    let r = self.service.check(&scope, &rule_args(&args), &who).await.map_err(fail)?;
                    (
                        r.message.clone(),
                        json!({"success": true, "exists": r.exists, "message": r.message, "rule": r.rule.as_ref().map(rule_value)}),
                    )
                }
            };
            Ok(ToolOutput { text, structured: Some(value) })
        })
    }
}

fn text_arg(args: &Map<String, Value>, key: &str) -> Option<String> {
    match args.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn rule_args(args: &Map<String, Value>) -> RuleArgs {
    RuleArgs {
        group: text_arg(args, "security_group_id").unwrap_or_default(),
        ip_address: text_arg(args, "ip_address").unwrap_or_default(),
        port: text_arg(args, "port"),
        protocol: text_arg(args, "protocol"),
    }
}

fn add_args(args: &Map<String, Value>) -> AddArgs {
    AddArgs {
        rule: rule_args(args),
        description: text_arg(args, "description"),
        user: text_arg(args, "user"),
        reason: text_arg(args, "reason"),
        duration: text_arg(args, "duration"),
    }
}

/// The account scope of a call: profile, region, and per-call keys (validated for shape here;
/// whether they are allowed and valid is the AWS layer's to say).
fn scope(args: &Map<String, Value>) -> Result<Scope, String> {
    let keys = match args.get("credentials") {
        Some(Value::Object(c)) => {
            let get = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
            let id = get("access_key_id").unwrap_or_default();
            let shaped = (id.starts_with("AKIA") || id.starts_with("ASIA"))
                && id.len() == 20
                && id.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit());
            if !shaped {
                return Err("invalid credentials.access_key_id: expected AKIA or ASIA followed by 16 upper-case letters or digits".into());
            }
            let secret = get("secret_access_key").unwrap_or_default();
            if secret.len() < 16 || secret.chars().any(char::is_whitespace) {
                return Err(
                    "invalid credentials.secret_access_key: expected the 40-character secret key".into()
                );
            }
            Some((
                Keys { access_key_id: id, secret_access_key: secret, session_token: get("session_token") },
                get("region"),
            ))
        }
        _ => None,
    };
    let region = text_arg(args, "region").or_else(|| keys.as_ref().and_then(|(_, r)| r.clone()));
    if let Some(r) = &region {
        let shaped = r.len() <= 32
            && r.split('-').count() >= 3
            && r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !shaped {
            return Err(format!("invalid region: {r:?} is not an AWS region name like eu-west-1"));
        }
    }
    Ok(Scope { profile: text_arg(args, "profile"), region, keys: keys.map(|(k, _)| k) })
}

fn rule_value(r: &RuleView) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn spec(kind: Kind) -> ToolSpec {
    let (name, title, description, annotations) = match kind {
        Kind::Add => (
            "whitelist_add",
            "Allow an IP address into a security group",
            "Add an ingress rule to an EC2 security group allowing an IP address or CIDR on a port. \
             ip_address may be \"current\" for the caller's own address. Adding a rule that already \
             exists succeeds with changed=false. duration (e.g. \"8h\") makes the rule expire; the \
             service removes it afterwards. Policy may refuse a request and says which setting did.",
            ToolAnnotations { read_only: false, destructive: false, idempotent: true, open_world: true },
        ),
        Kind::Remove => (
            "whitelist_remove",
            "Remove an IP address from a security group",
            "Remove the ingress rule that allows exactly this address/CIDR, protocol and port. \
             Removing a rule that is not there succeeds with changed=false.",
            ToolAnnotations { read_only: false, destructive: true, idempotent: true, open_world: true },
        ),
        Kind::List => (
            "whitelist_list",
            "List a security group's ingress rules",
            "List every ingress rule of an EC2 security group with its rule id, source, protocol, \
             ports, description and expiry.",
            ToolAnnotations { read_only: true, destructive: false, idempotent: true, open_world: true },
        ),
        Kind::Check => (
            "whitelist_check",
            "Check whether an IP address is allowed",
            "Check whether a security group has an ingress rule allowing exactly this address/CIDR, \
             protocol and port, and which rule matched. AWS errors are reported as errors.",
            ToolAnnotations { read_only: true, destructive: false, idempotent: true, open_world: true },
        ),
    };
    ToolSpec {
        name: name.into(),
        title: Some(title.into()),
        description: description.into(),
        input_schema: input_schema(kind),
        output_schema: Some(output_schema(kind)),
        annotations,
    }
}

fn input_schema(kind: Kind) -> Value {
    let mut props = json!({
        "security_group_id": {"type": "string", "description": "Security group id, e.g. sg-0123456789abcdef0", "minLength": 3, "maxLength": 64},
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
    });
    let mut required = vec!["security_group_id"];
    if kind != Kind::List {
        required.push("ip_address");
        let p = props.as_object_mut().expect("literal object");
        p.insert("ip_address".into(), json!({"type": "string", "description": "IPv4/IPv6 address or CIDR, or \"current\" for your own address", "maxLength": 64}));
        p.insert("port".into(), json!({"type": ["integer", "string"], "description": "Port number, range (8000-8100) or name (ssh, https, rdp, …); default from server config (22)"}));
        p.insert("protocol".into(), json!({"type": "string", "description": "tcp, udp, icmp or all (-1); default tcp", "maxLength": 8}));
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

fn rule_schema() -> Value {
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

fn output_schema(kind: Kind) -> Value {
    let (props, required) = match kind {
        Kind::Add => (
            json!({"success": {"type": "boolean"}, "changed": {"type": "boolean"}, "message": {"type": "string"}, "rule": rule_schema()}),
            vec!["success", "changed", "message", "rule"],
        ),
        Kind::Remove => (
            json!({"success": {"type": "boolean"}, "changed": {"type": "boolean"}, "message": {"type": "string"}, "removed": {"type": "array", "items": rule_schema()}}),
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
    fn per_call_credentials_are_shape_checked_without_echoing_the_secret() {
        let args = |c: Value| {
            json!({"security_group_id": "sg-12345678", "credentials": c}).as_object().unwrap().clone()
        };
        let e = scope(&args(json!({"access_key_id": "nope", "secret_access_key": "s3cr3tvaluethatislong"})))
            .unwrap_err();
        assert!(e.contains("access_key_id") && !e.contains("s3cr3t"), "{e}");
        let e = scope(&args(json!({"access_key_id": "AKIAABCDEFGHIJKLMNOP", "secret_access_key": "short"})))
            .unwrap_err();
        assert!(e.contains("secret_access_key") && !e.contains("short"), "{e}");
        let ok = scope(&args(json!({"access_key_id": "AKIAABCDEFGHIJKLMNOP", "secret_access_key": "0123456789abcdef0123", "region": "eu-west-1"}))).unwrap();
        assert_eq!(ok.region.as_deref(), Some("eu-west-1"));
        assert!(scope(&json!({"region": "Mars"}).as_object().unwrap().clone()).is_err());
    }
}
