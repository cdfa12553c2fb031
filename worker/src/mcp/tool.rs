//! What a tool is: its published description ([`ToolSpec`]) and its behaviour ([`Tool::call`]),
//! plus what a call gets ([`CallContext`]) and gives back ([`ToolOutput`] / [`ToolError`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::info::ServerInfo;
use super::jsonrpc::RequestId;
use super::version::ProtocolVersion;
use crate::caller::Caller;

/// Behaviour hints shown to clients; never a security boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolAnnotations {
    /// Does not change anything.
    pub read_only: bool,
    /// May remove or overwrite state (meaningful when not read-only).
    pub destructive: bool,
    /// Repeating a call with the same arguments changes nothing more.
    pub idempotent: bool,
    /// Reaches outside systems (AWS APIs here).
    pub open_world: bool,
}

impl ToolAnnotations {
    /// The wire object (`readOnlyHint`, …); every hint is spelled out.
    pub fn to_value(self) -> Value {
        json!({
            "readOnlyHint": self.read_only,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent,
            "openWorldHint": self.open_world,
        })
    }
}

/// The published description of a tool, as `tools/list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Unique name (letters, digits, `_`, `-`, `.`; 1–128 characters).
    pub name: String,
    /// Display name (2025-06-18 and later).
    pub title: Option<String>,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments; `type: "object"` at the root.
    pub input_schema: Value,
    /// JSON Schema of `structuredContent` (2025-06-18 and later).
    pub output_schema: Option<Value>,
    /// Behaviour hints (2025-03-26 and later).
    pub annotations: ToolAnnotations,
    /// The scope a caller needs to see and call the tool (`whitelist:read`, …); `None` = any
    /// caller. Declared by each tool, so adding a tool never means editing the auth layer.
    pub scope: Option<&'static str>,
}

impl ToolSpec {
    /// The `Tool` object for `tools/list`, with only the fields `version` defines.
    pub fn to_value(&self, version: ProtocolVersion) -> Value {
        let mut obj = Map::new();
        obj.insert("name".into(), json!(self.name));
        if let (true, Some(title)) = (version.has_structured_output(), &self.title) {
            obj.insert("title".into(), json!(title));
        }
        obj.insert("description".into(), json!(self.description));
        obj.insert("inputSchema".into(), self.input_schema.clone());
        if let (true, Some(schema)) = (version.has_structured_output(), &self.output_schema) {
            obj.insert("outputSchema".into(), schema.clone());
        }
        if version.has_tool_annotations() {
            obj.insert("annotations".into(), self.annotations.to_value());
        }
        Value::Object(obj)
    }
}

/// What the client declared and carried for one call, for tools that ask the person behind it
/// (elicitation): capabilities, and the answers of a 2026-07-28 retry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientInput {
    /// The client's capabilities for this request: `_meta` (2026-07-28), or what it declared at
    /// `initialize` as a signed session carries it (legacy); `None` when unknown.
    pub capabilities: Option<Map<String, Value>>,
    /// The client's name (`clientInfo.name`), when it said.
    pub client_name: Option<String>,
    /// `params.inputResponses` of a 2026-07-28 retry.
    pub input_responses: Option<Map<String, Value>>,
    /// `params.requestState` of a 2026-07-28 retry, verbatim.
    pub request_state: Option<String>,
}

impl ClientInput {
    /// Did the client declare form-mode elicitation? (`elicitation: {}` means form, as does a
    /// `form` key; only `url` does not.)
    pub fn can_elicit_form(&self) -> bool {
        match self.capabilities.as_ref().and_then(|c| c.get("elicitation")) {
            Some(Value::Object(modes)) => modes.is_empty() || modes.contains_key("form"),
            _ => false,
        }
    }
}

/// Sends a request to the client and waits for its answer, on a transport that can (the
/// legacy Streamable HTTP stream of a POST): `elicitation/create` for the handshake-era
/// revisions.
pub trait ClientRequester: Send + Sync {
    /// Sends `method` with `params`; the client's `result`, or why there is none (its JSON-RPC
    /// error, the stream closed, no answer in time).
    fn request<'a>(
        &'a self,
        method: &'a str,
        params: Value,
    ) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'a>>;
}

/// Everything a call may need besides its arguments.
#[derive(Clone)]
pub struct CallContext {
    /// The JSON-RPC id of the `tools/call` request.
    pub request_id: RequestId,
    /// The revision the request uses.
    pub protocol_version: ProtocolVersion,
    /// Who is calling and from where (shared with the transport's, so a call copies nothing).
    pub caller: Arc<Caller>,
    /// The serving process's identity (worker slot, generation, version).
    pub server: Arc<ServerInfo>,
    /// What the client declared and carried (elicitation).
    pub client: ClientInput,
    /// Sends requests to the client while the call runs, where the transport can.
    pub requester: Option<Arc<dyn ClientRequester>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("request_id", &self.request_id)
            .field("protocol_version", &self.protocol_version)
            .field("caller", &self.caller)
            .field("client", &self.client)
            .field("requester", &self.requester.is_some())
            .finish()
    }
}

/// A successful call: text for every client, and structured content matching `output_schema`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// Shown to clients that read `content` (and to every pre-2025-06-18 client).
    pub text: String,
    /// The `structuredContent` value, when the tool declares an output schema.
    pub structured: Option<Value>,
}

impl ToolOutput {
    /// Text only.
    pub fn text(text: impl Into<String>) -> ToolOutput {
        ToolOutput { text: text.into(), structured: None }
    }

    /// Structured content, with its JSON serialization as the text (as the spec recommends
    /// for backwards compatibility).
    pub fn structured(value: Value) -> ToolOutput {
        ToolOutput { text: value.to_string(), structured: Some(value) }
    }
}

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// The call failed in a way the caller can act on: becomes an `isError: true` result.
    #[error("{0}")]
    Failed(String),
    /// A bug or unexpected state: logged, and answered with JSON-RPC -32603.
    #[error("internal error: {0}")]
    Internal(String),
    /// The call needs input from the client first (2026-07-28): the whole
    /// `InputRequiredResult` (`resultType`, `inputRequests`, `requestState`).
    #[error("input required")]
    InputRequired(Value),
}

/// The future a tool call returns (boxed so tools can live behind `dyn Tool`; `Send` because
/// requests run on spawned tasks).
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = Result<ToolOutput, ToolError>> + Send + 'a>>;

/// A callable tool.
pub trait Tool: Send + Sync {
    /// The published description.
    fn spec(&self) -> &ToolSpec;

    /// Runs the tool with arguments already validated against `spec().input_schema`.
    fn call<'a>(&'a self, args: Map<String, Value>, ctx: &'a CallContext) -> ToolFuture<'a>;

    /// Why this caller may not use the tool at all, naming the setting (a tool that changes
    /// things, under a read-only server or credential); `None` = available. An unavailable
    /// tool is left out of `tools/list` and a call of it is refused with this text.
    fn unavailable(&self, _caller: &Caller) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ToolSpec {
        ToolSpec {
            name: "t".into(),
            title: Some("T".into()),
            description: "d".into(),
            input_schema: json!({"type":"object"}),
            output_schema: Some(json!({"type":"object"})),
            annotations: ToolAnnotations { read_only: true, ..ToolAnnotations::default() },
            scope: None,
        }
    }

    #[test]
    fn listing_has_only_the_fields_each_revision_defines() {
        let old = spec().to_value(ProtocolVersion::V2024_11_05);
        assert_eq!(old, json!({"name":"t","description":"d","inputSchema":{"type":"object"}}));

        let v0326 = spec().to_value(ProtocolVersion::V2025_03_26);
        assert!(v0326.get("annotations").is_some());
        assert!(v0326.get("title").is_none() && v0326.get("outputSchema").is_none());

        let new = spec().to_value(ProtocolVersion::V2026_07_28);
        assert_eq!(new["title"], json!("T"));
        assert_eq!(new["outputSchema"], json!({"type":"object"}));
        assert_eq!(
            new["annotations"],
            json!({"readOnlyHint":true,"destructiveHint":false,"idempotentHint":false,"openWorldHint":false})
        );
    }

    #[test]
    fn structured_output_carries_its_json_as_text() {
        let out = ToolOutput::structured(json!({"a":1}));
        assert_eq!(out.text, r#"{"a":1}"#);
        assert_eq!(out.structured, Some(json!({"a":1})));
        assert_eq!(ToolOutput::text("hi").structured, None);
    }
}
