//! Tool parameters mirrored into HTTP headers (2026-07-28, `x-mcp-header`): which properties of
//! an input schema carry the annotation (checked when a tool is registered, so a tool the
//! clients would have to drop is never published), and whether the `Mcp-Param-*` headers of a
//! `tools/call` agree with its arguments (-32020, HTTP 400 otherwise; the call is not run).
//!
//! An intermediary (nginx) may log, rate-limit or route on these headers; the check here is what
//! lets it trust them: a header the body does not back, or a body value without its header, is
//! refused before anything happens.

use serde_json::{Map, Value};

use super::jsonrpc::RpcError;
use super::transport::{decode_header_value, TransportMeta};

/// The schema keyword naming the header of a property.
pub const X_MCP_HEADER: &str = "x-mcp-header";
/// The (lowercase) prefix of a mirrored parameter's header name.
pub const PARAM_PREFIX: &str = "mcp-param-";

/// Schema keywords whose values are subschemas off the pure-`properties` chain (an annotation
/// below them is invalid).
const OFF_CHAIN_SINGLE: [&str; 11] = [
    "items",
    "contains",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
];
const OFF_CHAIN_LIST: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
const OFF_CHAIN_MAP: [&str; 4] = ["patternProperties", "dependentSchemas", "$defs", "definitions"];
/// Deepest schema nesting walked.
const MAX_DEPTH: usize = 32;

/// One annotated property: its path of `properties` keys and its header's name part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParam {
    /// The chain of `properties` keys from the root.
    pub path: Vec<String>,
    /// The `{name}` of `Mcp-Param-{name}`, as declared.
    pub name: String,
}

/// Every `x-mcp-header` annotation of `schema`, or why one is invalid (empty or not an RFC 9110
/// token, on a non-string/integer/boolean property, repeated ignoring case, or not reachable
/// through `properties` alone).
pub fn annotations(schema: &Value) -> Result<Vec<HeaderParam>, String> {
    let mut found = Vec::new();
    walk(schema, Some(Vec::new()), 0, &mut found)?;
    for (i, a) in found.iter().enumerate() {
        if found[..i].iter().any(|b| b.name.eq_ignore_ascii_case(&a.name)) {
            return Err(format!("{X_MCP_HEADER} {:?} is declared twice (ignoring case)", a.name));
        }
    }
    Ok(found)
}

fn walk(
    schema: &Value,
    path: Option<Vec<String>>,
    depth: usize,
    found: &mut Vec<HeaderParam>,
) -> Result<(), String> {
    let Value::Object(s) = schema else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err("the schema nests too deeply".into());
    }
    if let Some(name) = s.get(X_MCP_HEADER) {
        let Some(p) = path.as_ref().filter(|p| !p.is_empty()) else {
            return Err(format!("{X_MCP_HEADER} outside a chain of properties"));
        };
        let where_ = p.join(".");
        let name = name.as_str().filter(|n| is_token(n)).ok_or_else(|| {
            format!("property {where_}: {X_MCP_HEADER} must be a non-empty header-name token")
        })?;
        match s.get("type").and_then(Value::as_str) {
            Some("string" | "integer" | "boolean") => {}
            _ => {
                return Err(format!(
                    "property {where_}: {X_MCP_HEADER} needs type string, integer or boolean"
                ))
            }
        }
        found.push(HeaderParam { path: p.clone(), name: name.to_owned() });
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        for (key, sub) in props {
            let next = path.as_ref().map(|p| p.iter().cloned().chain([key.clone()]).collect());
            walk(sub, next, depth + 1, found)?;
        }
    }
    for key in OFF_CHAIN_SINGLE {
        if let Some(sub) = s.get(key) {
            walk(sub, None, depth + 1, found)?;
        }
    }
    for key in OFF_CHAIN_LIST {
        if let Some(Value::Array(subs)) = s.get(key) {
            for sub in subs {
                walk(sub, None, depth + 1, found)?;
            }
        }
    }
    for key in OFF_CHAIN_MAP {
        if let Some(Value::Object(subs)) = s.get(key) {
            for sub in subs.values() {
                walk(sub, None, depth + 1, found)?;
            }
        }
    }
    Ok(())
}

/// RFC 9110 `token`: one or more of `!#$%&'*+-.^_`|~`, digits and letters.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks the `Mcp-Param-*` headers of a `tools/call` against its arguments: each annotated
/// argument present (not `null`) needs its header when `required` (2026-07-28; clients of
/// older revisions do not send them), equal after decoding (integers compared as numbers); a
/// header whose argument is absent, a repeated or unreadable one, is refused in any revision.
/// Headers that name no annotated parameter are left alone (intermediaries may add their own).
pub fn check_params(
    declared: &[HeaderParam],
    args: &Map<String, Value>,
    meta: &TransportMeta,
    required: bool,
) -> Result<(), RpcError> {
    for param in declared {
        // The names are written only into an error, not on every call.
        let header = || format!("Mcp-Param-{}", param.name);
        let argument = || param.path.join(".");
        let raw = meta.param_header(&param.name);
        let value = value_at(args, &param.path).filter(|v| !v.is_null());
        let raw = match (raw, value) {
            (None, None) => continue,
            (None, Some(_)) if !required => continue,
            (None, Some(_)) => {
                return Err(mismatch(format!(
                    "the {} header is missing (the body has {})",
                    header(),
                    argument()
                )))
            }
            (Some(None), _) => {
                return Err(mismatch(format!("the {} header is repeated or not valid header text", header())))
            }
            (Some(Some(_)), None) => {
                return Err(mismatch(format!(
                    "the {} header is present but the body has no {}",
                    header(),
                    argument()
                )))
            }
            (Some(Some(raw)), Some(_)) => raw,
        };
        let Some(decoded) = decode_header_value(raw) else {
            return Err(mismatch(format!("the {} header has a malformed base64 value", header())));
        };
        if !agrees(&decoded, value.unwrap_or(&Value::Null)) {
            return Err(mismatch(format!(
                "the {} header does not match the body's {}",
                header(),
                argument()
            )));
        }
    }
    Ok(())
}

/// The value at a path of object keys.
fn value_at<'a>(args: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(args.get(first)?, |node, key| node.as_object()?.get(key))
}

/// A decoded header value equals a body value: strings exactly, booleans as `true`/`false`,
/// numbers numerically (`42` and `42.0` agree).
fn agrees(header: &str, body: &Value) -> bool {
    match body {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => match (n.as_i64(), header.parse::<i64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => match (n.as_f64(), header.parse::<f64>()) {
                (Some(a), Ok(b)) => a == b,
                _ => false,
            },
        },
        _ => false,
    }
}

fn mismatch(message: String) -> RpcError {
    RpcError::header_mismatch(format!("Header mismatch: {message}"))
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
