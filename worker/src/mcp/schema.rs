//! A small JSON Schema (2020-12 subset) validator for tool arguments, with messages that name the
//! offending argument.
//!
//! Supported validation keywords: `type` (one name or a list), `properties`, `required`,
//! `additionalProperties` (boolean or schema), `enum`, `items`, `minimum`, `maximum`,
//! `minLength`, `maxLength`. Annotations (`description`, `title`, `default`, `examples`,
//! `format`, `$schema`, `x-…`) are allowed and ignored. [`check_schema`] refuses any other
//! keyword when a tool is registered, so a schema never promises a check that is not made.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// Deepest schema/value nesting walked.
const MAX_DEPTH: usize = 32;

const VALIDATION_KEYWORDS: [&str; 10] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "items",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
];
const ANNOTATION_KEYWORDS: [&str; 6] = ["description", "title", "default", "examples", "format", "$schema"];
const TYPE_NAMES: [&str; 7] = ["string", "integer", "number", "boolean", "object", "array", "null"];

/// Arguments that do not match a tool's input schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaViolation {
    /// Where: `port`, `credentials.region`, `ports[2]`; empty for the arguments as a whole.
    pub path: String,
    /// A sentence naming the argument and what is wrong with it.
    pub message: String,
}

/// Validates `value` against `schema`, turning integral floats (`80.0`) into integers where
/// the schema wants an integer, so tools can read them with `as_i64`.
pub fn validate(schema: &Value, value: &mut Value) -> Result<(), SchemaViolation> {
    check(schema, value, &mut String::new(), 0)
}

fn check(schema: &Value, value: &mut Value, path: &mut String, depth: usize) -> Result<(), SchemaViolation> {
    let schema = match schema {
        Value::Bool(false) => return Err(violation(path, format!("{} is not accepted", at(path)))),
        Value::Object(s) => s,
        _ => return Ok(()),
    };
    if depth > MAX_DEPTH {
        return Err(violation(path, format!("{} nests too deeply", at(path))));
    }
    if let Some(t) = schema.get("type") {
        check_type(t, value, path)?;
    }
    if let Some(Value::Array(options)) = schema.get("enum") {
        if !options.contains(value) {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            let msg = format!("{} must be one of: {}", at(path), list.join(", "));
            return Err(violation(path, msg));
        }
    }
    match value {
        Value::Object(obj) => check_object(schema, obj, path, depth),
        Value::Array(items) => check_items(schema, items, path, depth),
        Value::String(s) => check_length(schema, s, path),
        Value::Number(n) => check_range(schema, n, path),
        _ => Ok(()),
    }
}

fn check_type(t: &Value, value: &mut Value, path: &str) -> Result<(), SchemaViolation> {
    // Walked in place: this runs for every argument of every call.
    let list: &[Value] = match t {
        Value::String(_) => std::slice::from_ref(t),
        Value::Array(list) => list,
        _ => return Ok(()),
    };
    let names = || list.iter().filter_map(Value::as_str);
    if names().any(|n| has_type(n, value)) {
        return Ok(());
    }
    if names().any(|n| n == "integer") {
        if let Some(i) = value.as_f64().and_then(integral) {
            *value = Value::from(i);
            return Ok(());
        }
    }
    let wanted: Vec<&str> = names().map(with_article).collect();
    let msg = format!("{} must be {}, not {}", at(path), wanted.join(" or "), with_article(type_of(value)));
    Err(violation(path, msg))
}

fn check_object(
    schema: &Map<String, Value>,
    obj: &mut Map<String, Value>,
    path: &mut String,
    depth: usize,
) -> Result<(), SchemaViolation> {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(name) {
                let p = child(path, name);
                return Err(violation(&p, format!("{} is required", at(&p))));
            }
        }
    }
    let extra = schema.get("additionalProperties");
    for (name, v) in obj.iter_mut() {
        let len = path.len();
        push_key(path, name);
        let result = match props.and_then(|p| p.get(name)).or(extra) {
            Some(Value::Bool(false)) => Err(violation(path, format!("unknown argument '{path}'"))),
            Some(sub) => check(sub, v, path, depth + 1),
            None => Ok(()),
        };
        path.truncate(len);
        result?;
    }
    Ok(())
}

fn check_items(
    schema: &Map<String, Value>,
    items: &mut [Value],
    path: &mut String,
    depth: usize,
) -> Result<(), SchemaViolation> {
    let Some(item_schema) = schema.get("items") else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        let len = path.len();
        let _ = write!(path, "[{i}]");
        let result = check(item_schema, item, path, depth + 1);
        path.truncate(len);
        result?;
    }
    Ok(())
}

fn check_length(schema: &Map<String, Value>, s: &str, path: &str) -> Result<(), SchemaViolation> {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if len < min {
            let msg = format!("{} must be at least {min} characters long", at(path));
            return Err(violation(path, msg));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            let msg = format!("{} must be at most {max} characters long", at(path));
            return Err(violation(path, msg));
        }
    }
    Ok(())
}

fn check_range(schema: &Map<String, Value>, n: &Number, path: &str) -> Result<(), SchemaViolation> {
    let x = n.as_f64().unwrap_or(f64::NAN);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if x.is_nan() || x < min {
            return Err(violation(path, format!("{} must be at least {min}", at(path))));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if x.is_nan() || x > max {
            return Err(violation(path, format!("{} must be at most {max}", at(path))));
        }
    }
    Ok(())
}

fn has_type(name: &str, value: &Value) -> bool {
    match name {
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        other => type_of(value) == other || (other == "number" && value.is_number()),
    }
}

fn integral(f: f64) -> Option<i64> {
    let in_range = f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64;
    in_range.then_some(f as i64)
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn with_article(name: &str) -> &str {
    match name {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "object" => "an object",
        "array" => "an array",
        other => other,
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the arguments".to_owned()
    } else {
        format!("argument '{path}'")
    }
}

fn child(path: &str, name: &str) -> String {
    let mut p = path.to_owned();
    push_key(&mut p, name);
    p
}

fn push_key(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

fn violation(path: &str, message: String) -> SchemaViolation {
    SchemaViolation { path: path.to_owned(), message }
}

/// Checks a tool's input schema when the tool is registered: an object schema at the root and
/// only keywords this validator enforces (or ignores as annotations).
pub fn check_schema(schema: &Value) -> Result<(), String> {
    if schema.get("type") != Some(&Value::String("object".into())) {
        return Err("an input schema needs \"type\": \"object\" at the root".into());
    }
    check_keywords(schema, "", 0)
}

fn check_keywords(schema: &Value, at: &str, depth: usize) -> Result<(), String> {
    let obj = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(obj) if depth <= MAX_DEPTH => obj,
        Value::Object(_) => return Err(format!("schema at '{at}' nests too deeply")),
        _ => return Err(format!("schema at '{at}' is not an object or boolean")),
    };
    for (key, value) in obj {
        let known = VALIDATION_KEYWORDS.contains(&key.as_str())
            || ANNOTATION_KEYWORDS.contains(&key.as_str())
            || key.starts_with("x-"); // `x-mcp-header` is checked by `headers::annotations`
        if !known {
            return Err(format!("keyword '{key}' at '{at}' is not supported"));
        }
        check_keyword(key, value, at, depth)?;
    }
    Ok(())
}

fn check_keyword(key: &str, value: &Value, at: &str, depth: usize) -> Result<(), String> {
    let bad = |what: &str| Err(format!("'{key}' at '{at}' must be {what}"));
    match (key, value) {
        ("type", Value::String(t)) if TYPE_NAMES.contains(&t.as_str()) => Ok(()),
        ("type", Value::Array(ts))
            if ts.iter().all(|t| t.as_str().is_some_and(|t| TYPE_NAMES.contains(&t))) =>
        {
            Ok(())
        }
        ("type", _) => bad("a JSON type name or a list of them"),
        ("properties", Value::Object(props)) => {
            props.iter().try_for_each(|(name, sub)| check_keywords(sub, &child(at, name), depth + 1))
        }
        ("properties", _) => bad("an object"),
        ("required", Value::Array(names)) if names.iter().all(Value::is_string) => Ok(()),
        ("required", _) => bad("a list of names"),
        ("enum", Value::Array(_)) => Ok(()),
        ("enum", _) => bad("a list"),
        ("items" | "additionalProperties", sub) => check_keywords(sub, &format!("{at}/{key}"), depth + 1),
        ("minimum" | "maximum", v) if v.is_number() => Ok(()),
        ("minLength" | "maxLength", v) if v.is_u64() => Ok(()),
        ("minimum" | "maximum" | "minLength" | "maxLength", _) => bad("a number"),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
