//! Dispatcher tests: fixtures shared by the per-topic files.

mod batch;
mod errors;
mod legacy;
mod listing;
mod modern;
mod params;

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::era::{META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_PROTOCOL_VERSION};
use super::*;
use crate::tools::standard_registry;

/// Echoes `message`; declares an output schema.
struct Echo(ToolSpec);

impl Tool for Echo {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn call<'a>(&'a self, args: Map<String, Value>, ctx: &'a CallContext) -> ToolFuture<'a> {
        let reply = json!({
            "echo": args.get("message").cloned().unwrap_or_default(),
            "times": args.get("times").cloned().unwrap_or(json!(1)),
            "caller": ctx.caller.identity.as_deref(),
            "request": ctx.request_id.to_value(),
        });
        Box::pin(async move { Ok(ToolOutput::structured(reply)) })
    }
}

/// Always fails the way a tool reports an actionable failure, or an internal one.
struct Failing(ToolSpec, ToolError);

impl Tool for Failing {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn call<'a>(&'a self, _: Map<String, Value>, _: &'a CallContext) -> ToolFuture<'a> {
        let error = self.1.clone();
        Box::pin(async move { Err(error) })
    }
}

fn spec(name: &str, input_schema: Value) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        title: Some(format!("{name} title")),
        description: format!("{name} description"),
        input_schema,
        output_schema: None,
        annotations: ToolAnnotations::default(),
        scope: None,
    }
}

/// The built-in tool plus three fixtures, two per page:
/// page 1 = boom, echo; page 2 = fail, service_status.
fn dispatcher() -> Dispatcher {
    let mut registry = standard_registry(2).unwrap_or_else(|e| panic!("{e}"));
    let echo_schema = json!({
        "type": "object",
        "properties": {"message": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
        "required": ["message"],
        "additionalProperties": false
    });
    let mut echo = spec("echo", echo_schema);
    echo.output_schema = Some(json!({"type": "object"}));
    let empty = json!({"type": "object"});
    let tools: [Arc<dyn Tool>; 3] = [
        Arc::new(Echo(echo)),
        Arc::new(Failing(spec("fail", empty.clone()), ToolError::Failed("the upstream API said no".into()))),
        Arc::new(Failing(spec("boom", empty), ToolError::Internal("bug".into()))),
    ];
    for tool in tools {
        registry.register(tool).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut info = ServerInfo::new("awswhitelist", "9.9.9");
    info.title = Some("AWS whitelist".into());
    info.instructions = Some("Manage security group rules.".into());
    info.worker_id = Some(4);
    info.generation = Some(2);
    Dispatcher::new(info, registry)
}

/// HTTP meta with an optional `MCP-Protocol-Version` header.
fn http(version: Option<&str>) -> TransportMeta {
    let mut meta = TransportMeta::http();
    meta.protocol_version = version.map(str::to_owned);
    meta
}

/// HTTP meta with every 2026-07-28 header a conforming client sends.
fn modern_http(method: &str, name: Option<&str>) -> TransportMeta {
    let mut meta = http(Some("2026-07-28"));
    meta.mcp_method = Some(method.to_owned());
    meta.mcp_name = name.map(str::to_owned);
    meta
}

fn request(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A 2026-07-28 request: `params` plus the `_meta` envelope.
fn modern_request(id: Value, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        META_PROTOCOL_VERSION: "2026-07-28",
        META_CLIENT_INFO: {"name": "test-client", "version": "1.0"},
        META_CLIENT_CAPABILITIES: {}
    });
    request(id, method, params)
}

fn body(outcome: &Outcome) -> &Value {
    outcome.body().unwrap_or_else(|| panic!("no body: {outcome:?}"))
}

/// The result of a successful reply (HTTP 200).
fn result(outcome: &Outcome) -> &Value {
    assert_eq!(outcome.http_status(), 200, "{outcome:?}");
    let b = body(outcome);
    assert!(b.get("error").is_none(), "error: {b}");
    &b["result"]
}

/// `(http status, error code, id)` of an error answer.
fn error(outcome: &Outcome) -> (u16, i64, Value) {
    let b = body(outcome);
    let code = b["error"]["code"].as_i64().unwrap_or_else(|| panic!("not an error: {b}"));
    assert!(b["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    assert_eq!(b["jsonrpc"], json!("2.0"));
    (outcome.http_status(), code, b["id"].clone())
}

fn assert_send_sync<T: Send + Sync>(_: &T) {}
fn assert_send<T: Send>(_: T) {}

#[test]
fn dispatcher_can_be_shared_across_spawned_tasks() {
    let d = dispatcher();
    assert_send_sync(&d);
    let meta = TransportMeta::http();
    assert_send(d.handle(json!({}), &meta));
    assert_send(d.handle_bytes(b"{}", &meta));
}
