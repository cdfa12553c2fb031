//! Tool arguments into the domain's request types. The schemas have already checked types and
//! lengths; what is left is meaning (credentials' shape, region names), with errors that name
//! the argument and never echo a secret.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::caller::Caller;
use crate::mcp::CallContext;
use crate::whitelist::{AddArgs, Keys, RuleArgs, Scope};

/// The caller of a tool call, with the request's id for the audit log when the transport gave none.
pub(super) fn caller_of(ctx: &CallContext) -> Cow<'_, Caller> {
    if ctx.caller.request_id.is_some() {
        return Cow::Borrowed(&ctx.caller);
    }
    let mut who = Caller::clone(&ctx.caller);
    who.request_id = Some(ctx.request_id.to_value().to_string().into());
    Cow::Owned(who)
}

/// A failed call as the client sees it: a consent question goes back as an input-required
/// result, anything else as the tool's error text.
pub(super) fn tool_error(e: crate::whitelist::Error) -> crate::mcp::ToolError {
    match e {
        crate::whitelist::Error::Consent(crate::whitelist::Stop::InputRequired(result)) => {
            crate::mcp::ToolError::InputRequired(result)
        }
        e => crate::mcp::ToolError::Failed(e.to_string()),
    }
}

/// The `{name}` of the `Mcp-Param-{name}` header that mirrors `security_group_id` (2026-07-28
/// `x-mcp-header`): nginx sees it as `$http_mcp_param_security_group_id`.
pub const GROUP_HEADER: &str = "Security-Group-Id";

/// Declares `security_group_id` (a plain string property at the root) as an `x-mcp-header`
/// parameter, so an intermediary can log, limit or route by group without reading the body.
pub(super) fn with_group_header(mut schema: Value) -> Value {
    let prop = schema.pointer_mut("/properties/security_group_id").and_then(Value::as_object_mut);
    if let Some(prop) = prop.filter(|p| p.get("type").and_then(Value::as_str) == Some("string")) {
        prop.insert(crate::mcp::headers::X_MCP_HEADER.into(), Value::from(GROUP_HEADER));
    }
    schema
}

pub(super) fn text_arg(args: &Map<String, Value>, key: &str) -> Option<String> {
    match args.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn rule_args(args: &Map<String, Value>) -> RuleArgs {
    RuleArgs {
        group: text_arg(args, "security_group_id").unwrap_or_default(),
        ip_address: text_arg(args, "ip_address").unwrap_or_default(),
        port: text_arg(args, "port"),
        protocol: text_arg(args, "protocol"),
    }
}

pub(super) fn add_args(args: &Map<String, Value>) -> AddArgs {
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
pub(super) fn scope(args: &Map<String, Value>) -> Result<Scope, String> {
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
    // Named by the argument it came in, so a refusal names what the caller gave.
    let region = match text_arg(args, "region") {
        Some(r) => Some(("region", r)),
        None => keys.as_ref().and_then(|(_, r)| r.clone()).map(|r| ("credentials.region", r)),
    };
    if let Some((argument, r)) = &region {
        let shaped = r.len() <= 32
            && r.split('-').count() >= 3
            && r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !shaped {
            return Err(format!("invalid {argument}: {r:?} is not an AWS region name like eu-west-1"));
        }
    }
    let region = region.map(|(_, r)| r);
    Ok(Scope { profile: text_arg(args, "profile"), region, keys: keys.map(|(k, _)| k) })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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

    /// Found by `prop_tools`: a bad region inside `credentials` was refused as "invalid region",
    /// naming an argument the call did not give.
    #[test]
    fn a_bad_region_is_named_by_the_argument_it_came_in() {
        let keys =
            json!({"access_key_id": "AKIAABCDEFGHIJKLMNOP", "secret_access_key": "0123456789abcdef0123"});
        let mut inner = keys.clone();
        inner["region"] = json!("");
        let args = json!({"credentials": inner}).as_object().unwrap().clone();
        let e = scope(&args).unwrap_err();
        assert!(e.starts_with("invalid credentials.region: \"\""), "{e}");
        let args = json!({"credentials": keys, "region": "Mars"}).as_object().unwrap().clone();
        let e = scope(&args).unwrap_err();
        assert!(e.starts_with("invalid region: \"Mars\""), "{e}");
    }
}
