//! The MCP methods this server implements, each building its result for one protocol revision:
//! `initialize` (legacy), `server/discover` (2026-07-28), `tools/list` and `tools/call` (both).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::{json, Map, Value};
use tracing::error;

use super::era::META_SERVER_INFO;
use super::info::ServerInfo;
use super::jsonrpc::{object, RequestId, RpcError};
use super::registry::Registry;
use super::schema;
use super::tool::{CallContext, ClientInput, ClientRequester, Tool, ToolError, ToolOutput};
use super::version::ProtocolVersion;
use crate::caller::Caller;

/// What a `tools/call` needs from the dispatcher and the request.
pub struct CallInput<'a> {
    /// Server identity (handed to the tool).
    pub info: &'a Arc<ServerInfo>,
    /// Where the tool is looked up.
    pub registry: &'a Registry,
    /// The request's revision.
    pub version: ProtocolVersion,
    /// The request id.
    pub id: &'a RequestId,
    /// Who is calling.
    pub caller: &'a Arc<Caller>,
    /// The client's capabilities for this request (answers are read from the params here).
    pub client: ClientInput,
    /// Requests to the client while the call runs, where the transport can send them.
    pub requester: Option<Arc<dyn ClientRequester>>,
}

/// The capabilities announced by `initialize` and `server/discover` (`resources` when a
/// resource source is served).
fn capabilities(resources: bool) -> Value {
    let mut caps = json!({ "tools": { "listChanged": false } });
    if resources {
        caps["resources"] = super::resource::capability();
    }
    caps
}

/// `initialize`: echoes a supported handshake revision, else offers the latest one.
pub fn initialize(
    info: &ServerInfo,
    params: Option<&Map<String, Value>>,
    caller: &Caller,
    resources: bool,
) -> Result<Value, RpcError> {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("initialize needs params.protocolVersion (a string)"))?;
    let version = ProtocolVersion::negotiate(requested);
    let mut result = Map::new();
    result.insert("protocolVersion".into(), json!(version.as_str()));
    result.insert("capabilities".into(), capabilities(resources));
    result.insert("serverInfo".into(), info.implementation(version.has_structured_output()));
    insert_instructions(&mut result, info, caller);
    Ok(Value::Object(result))
}

/// `server/discover`: every served revision, capabilities, and caching hints.
pub fn discover(info: &ServerInfo, caller: &Caller, resources: bool) -> Value {
    let mut result = Map::new();
    result.insert("supportedVersions".into(), json!(ProtocolVersion::supported_strings()));
    result.insert("capabilities".into(), capabilities(resources));
    insert_instructions(&mut result, info, caller);
    insert_cache_hint(&mut result, info);
    Value::Object(result)
}

/// The server's instructions, plus a sentence for a caller whose credential is read-only (known
/// here when the transport authenticated before dispatch, as HTTP does).
fn insert_instructions(result: &mut Map<String, Value>, info: &ServerInfo, caller: &Caller) {
    let mut text = info.instructions.clone().unwrap_or_default();
    if let Some(setting) = &caller.read_only {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!(
            "Your credential is read-only ({setting}): the tools that change rules are not offered to you."
        ));
    }
    if !text.is_empty() {
        result.insert("instructions".into(), json!(text));
    }
}

/// `tools/list`: one page, the cursor checked (-32602 "Invalid cursor" when it is not ours).
pub fn tools_list(
    registry: &Registry,
    info: &ServerInfo,
    version: ProtocolVersion,
    params: Option<&Map<String, Value>>,
    caller: &Caller,
) -> Result<Value, RpcError> {
    let cursor = cursor_param(params)?;
    let page = registry.page(cursor).map_err(|e| RpcError::invalid_params(e.to_string()))?;
    // A caller sees only the tools it may call (a page may then hold fewer than page_size).
    let tools: Vec<Value> = page
        .tools
        .iter()
        .filter(|t| visible_to(t.as_ref(), caller))
        .map(|t| t.spec().to_value(version))
        .collect();
    let mut result = Map::new();
    result.insert("tools".into(), Value::Array(tools));
    if let Some(next) = page.next_cursor {
        result.insert("nextCursor".into(), json!(next));
    }
    if version.is_modern() {
        insert_cache_hint(&mut result, info);
    }
    Ok(Value::Object(result))
}

/// `params.cursor` of a list request: absent, or a string (-32602 otherwise).
pub fn cursor_param(params: Option<&Map<String, Value>>) -> Result<Option<&str>, RpcError> {
    match params.and_then(|p| p.get("cursor")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(c)) => Ok(Some(c.as_str())),
        Some(_) => Err(RpcError::invalid_params("params.cursor must be a string")),
    }
}

/// A caller sees a tool when it has the tool's scope and the tool is available to it.
pub fn visible_to(tool: &dyn Tool, caller: &Caller) -> bool {
    tool.spec().scope.is_none_or(|scope| caller.has_scope(scope)) && tool.unavailable(caller).is_none()
}

/// `tools/call`: unknown tools and malformed params are JSON-RPC errors; argument-schema
/// failures are -32602 before 2025-11-25 and `isError` results from then on; tool failures
/// are `isError` results.
///
/// `arguments` is `params.arguments`, taken out of the request by the caller (so it is validated
/// and handed to the tool without a copy).
pub async fn tools_call(
    input: CallInput<'_>,
    params: Option<&Map<String, Value>>,
    arguments: Option<Value>,
) -> Result<Value, RpcError> {
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("tools/call needs params.name (a string)"))?;
    let tool =
        input.registry.get(name).ok_or_else(|| RpcError::invalid_params(format!("Unknown tool: {name}")))?;
    if let Some(why) = tool.unavailable(input.caller) {
        return Ok(error_result(&format!("{name} is not available: {why}")));
    }
    let mut args = match arguments {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(a @ Value::Object(_)) => a,
        Some(_) => return Err(RpcError::invalid_params("params.arguments must be an object")),
    };
    if let Err(violation) = schema::validate(&tool.spec().input_schema, &mut args) {
        let message = format!("Invalid arguments for tool {name}: {violation}");
        if input.version.argument_errors_are_results() {
            return Ok(error_result(&message));
        }
        let data = json!({ "tool": name, "argument": violation.path });
        return Err(RpcError::invalid_params(message).with_data(data));
    }
    let Value::Object(args) = args else {
        return Err(RpcError::internal("validated arguments are not an object"));
    };
    let mut client = input.client;
    if input.version.is_modern() {
        (client.input_responses, client.request_state) = retry_inputs(params)?;
    }
    let ctx = CallContext {
        request_id: input.id.clone(),
        protocol_version: input.version,
        caller: Arc::clone(input.caller),
        server: Arc::clone(input.info),
        client,
        requester: input.requester,
    };
    // A bug in a tool must cost its request only: a panic becomes -32603, logged and counted,
    // and the transport (HTTP or stdio) answers and goes on.
    let called = AssertUnwindSafe(async { tool.call(args, &ctx).await }).catch_unwind().await;
    let outcome = match called {
        Ok(outcome) => outcome,
        Err(payload) => {
            crate::metrics::global().panics.inc();
            let detail = panic_message(payload.as_ref());
            error!(event = "panic", tool = name, request = %input.id, %detail, "tool call panicked");
            return Err(RpcError::internal(format!("Internal error in tool {name}")));
        }
    };
    match outcome {
        Ok(output) => Ok(success_result(input.version, output)),
        Err(ToolError::Failed(message)) => Ok(error_result(&message)),
        Err(ToolError::Internal(detail)) => {
            error!(tool = name, request = %input.id, %detail, "tool failed unexpectedly");
            Err(RpcError::internal(format!("Internal error in tool {name}")))
        }
        Err(ToolError::InputRequired(result)) if input.version.is_modern() => Ok(result),
        Err(ToolError::InputRequired(_)) => {
            error!(tool = name, request = %input.id, "tool asked for input outside 2026-07-28");
            Err(RpcError::internal(format!("Internal error in tool {name}")))
        }
    }
}

/// `inputResponses` and `requestState` of a 2026-07-28 retry, checked for shape (-32602).
#[allow(clippy::type_complexity)]
fn retry_inputs(
    params: Option<&Map<String, Value>>,
) -> Result<(Option<Map<String, Value>>, Option<String>), RpcError> {
    let responses = match params.and_then(|p| p.get("inputResponses")) {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => Some(r.clone()),
        Some(_) => return Err(RpcError::invalid_params("params.inputResponses must be an object")),
    };
    let state = match params.and_then(|p| p.get("requestState")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(RpcError::invalid_params("params.requestState must be a string")),
    };
    Ok((responses, state))
}

/// The text a panic was raised with (`panic!("…")`, an index out of bounds, …).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn success_result(version: ProtocolVersion, output: ToolOutput) -> Value {
    let mut result = Map::new();
    let content = object([("type", Value::from("text")), ("text", Value::String(output.text))]);
    result.insert("content".into(), Value::Array(vec![content]));
    if let Some(structured) = output.structured {
        // Before 2026-07-28 structuredContent had to be an object.
        if version.has_structured_output() && (structured.is_object() || version.is_modern()) {
            result.insert("structuredContent".into(), structured);
        }
    }
    Value::Object(result)
}

fn error_result(message: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": message }], "isError": true })
}

fn insert_cache_hint(result: &mut Map<String, Value>, info: &ServerInfo) {
    result.insert("ttlMs".into(), json!(info.cache.ttl_ms));
    result.insert("cacheScope".into(), json!(info.cache.scope.as_str()));
}

/// Adds what every 2026-07-28 result carries: `resultType` and the server's identity in `_meta`.
pub fn decorate_modern(result: Value, info: &ServerInfo) -> Value {
    let mut obj = match result {
        Value::Object(obj) => obj,
        other => return other,
    };
    // A result that says what it is (`input_required`) keeps it.
    obj.entry("resultType").or_insert_with(|| json!("complete"));
    let meta = obj.entry("_meta").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert(META_SERVER_INFO.into(), info.implementation(true));
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::super::jsonrpc::INTERNAL_ERROR;
    use super::super::tool::{Tool, ToolAnnotations, ToolFuture, ToolSpec};
    use super::*;

    /// A tool with a bug: it panics inside its future.
    struct Panicking(ToolSpec);

    impl Tool for Panicking {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        fn call<'a>(&'a self, _: Map<String, Value>, _: &'a CallContext) -> ToolFuture<'a> {
            Box::pin(async move {
                let v: Vec<u8> = Vec::new();
                let i = v.len() + 3;
                Ok(ToolOutput::text(format!("{}", v[i])))
            })
        }
    }

    fn panics_counted() -> f64 {
        let families = crate::metrics::global().snapshot();
        let family = families.iter().find(|f| f.name == "mcp_panics_total");
        family.map_or(-1.0, |f| f.samples.iter().map(|s| s.value).sum())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_tool_is_an_internal_error_and_counted() {
        let mut registry = Registry::new(10);
        let spec = ToolSpec {
            name: "buggy".into(),
            title: None,
            description: "panics".into(),
            input_schema: json!({"type": "object"}),
            output_schema: None,
            annotations: ToolAnnotations::default(),
            scope: None,
        };
        registry.register(Arc::new(Panicking(spec))).unwrap_or_else(|e| panic!("{e}"));
        let info = Arc::new(ServerInfo::new("awswhitelist", "0"));
        let id = RequestId::Num(7.into());
        let caller = Arc::new(Caller::default());
        let before = panics_counted();
        let input = CallInput {
            info: &info,
            registry: &registry,
            version: ProtocolVersion::LATEST,
            id: &id,
            caller: &caller,
            client: ClientInput::default(),
            requester: None,
        };
        let params = json!({"name": "buggy", "arguments": {}});
        let err = tools_call(input, params.as_object(), Some(json!({}))).await.unwrap_err();
        assert_eq!(err.code, INTERNAL_ERROR);
        assert!(err.message.contains("buggy"), "{}", err.message);
        assert!(before >= 0.0, "the panic counter is exported");
        assert_eq!(panics_counted(), before + 1.0);
    }
}
