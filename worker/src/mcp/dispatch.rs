//! The dispatcher every transport shares: one body (a message or a batch) in, one [`Outcome`]
//! out. It keeps no state between calls, so any worker can answer any request.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tracing::debug;

use super::era::{self, Era};
use super::headers;
use super::info::ServerInfo;
use super::jsonrpc::{
    self, error_response, Message, Request, RequestId, RpcError, INTERNAL_ERROR, METHOD_NOT_FOUND,
};
use super::listing::ToolLists;
use super::methods::{self, CallInput};
use super::parse::parse_json;
use super::registry::Registry;
use super::resource::{self, Resources};
use super::tool::ClientInput;
use super::transport::{Outcome, RawReply, TransportKind, TransportMeta};
use super::version::ProtocolVersion;

/// Most messages accepted in one batch (2025-03-26 and older). Fixed, not a setting; each
/// `tools/call` in a batch is also charged to the client's rate limit.
pub const MAX_BATCH: usize = 100;

/// Routes MCP messages to their handlers; cheap to share behind an `Arc`.
pub struct Dispatcher {
    info: Arc<ServerInfo>,
    registry: Registry,
    lists: ToolLists,
    resources: Option<Arc<dyn Resources>>,
}

/// A method's answer: a result to serialise, or one serialised before.
enum Reply {
    Value(Value),
    Raw(Arc<str>),
}

impl Reply {
    fn into_outcome(self, id: &RequestId) -> Outcome {
        match self {
            Reply::Value(result) => Outcome::Raw(RawReply::result(id, &result)),
            Reply::Raw(result) => Outcome::Raw(RawReply::new(id, &result)),
        }
    }
}

impl Dispatcher {
    /// A dispatcher announcing `info` and serving the tools in `registry`.
    pub fn new(info: ServerInfo, registry: Registry) -> Dispatcher {
        Dispatcher { info: Arc::new(info), registry, lists: ToolLists::default(), resources: None }
    }

    /// Serves `source` as the server's resources (and announces the capability).
    pub fn with_resources(mut self, source: Arc<dyn Resources>) -> Dispatcher {
        self.resources = Some(source);
        self
    }

    /// The resources served, if any.
    pub fn resources(&self) -> Option<&Arc<dyn Resources>> {
        self.resources.as_ref()
    }

    /// The identity this dispatcher announces.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The tools it serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Parses raw bytes (UTF-8, bounded nesting) and handles the result; parse failures are
    /// a 400 with a -32700 error and `id: null`.
    pub async fn handle_bytes(&self, bytes: &[u8], meta: &TransportMeta) -> Outcome {
        match parse_json(bytes) {
            Ok(body) => self.handle(body, meta).await,
            Err(e) => Outcome::Reject { http_status: 400, body: e.to_response() },
        }
    }

    /// Handles one parsed body: a single message, or a batch where the revision allows one.
    pub async fn handle(&self, body: Value, meta: &TransportMeta) -> Outcome {
        match body {
            Value::Array(items) => self.batch(items, meta).await,
            message => self.single(message, meta).await,
        }
    }

    async fn batch(&self, items: Vec<Value>, meta: &TransportMeta) -> Outcome {
        if let Err(error) = batch_allowed(meta, items.len()) {
            return reject(400, None, &error);
        }
        let mut replies = Vec::new();
        for item in items {
            let outcome = match item.get("method").and_then(Value::as_str) {
                Some("initialize") => initialize_in_batch(&item),
                _ => self.single(item, meta).await,
            };
            replies.extend(outcome.into_body());
        }
        if replies.is_empty() {
            Outcome::Accepted
        } else {
            Outcome::Reply(Value::Array(replies))
        }
    }

    async fn single(&self, message: Value, meta: &TransportMeta) -> Outcome {
        match jsonrpc::classify(message) {
            Message::Invalid { id, error } => reject(400, id.as_ref(), &error),
            Message::Response { id } => client_response(id.as_ref(), meta),
            Message::Notification { method, params } => notification(&method, params.as_ref(), meta),
            Message::Request(request) => self.request(request, meta).await,
        }
    }

    async fn request(&self, mut req: Request, meta: &TransportMeta) -> Outcome {
        debug!(method = %req.method, id = %req.id, "mcp request");
        match era::select(meta, req.params.as_ref()) {
            Err(error) => reject(400, Some(&req.id), &error),
            Ok(Era::Legacy(version)) => match self.param_headers(&req, meta, false) {
                Err(error) => reject(400, Some(&req.id), &error),
                Ok(()) => match self.legacy(version, &mut req, meta).await {
                    Ok(reply) => reply.into_outcome(&req.id),
                    Err(error) => Outcome::Reply(error_response(Some(&req.id), &error)),
                },
            },
            Ok(Era::Modern) => match self.modern(&mut req, meta).await {
                Ok(reply) => reply.into_outcome(&req.id),
                Err(e) if e.code == INTERNAL_ERROR => Outcome::Reply(error_response(Some(&req.id), &e)),
                Err(e) => reject(modern_status(e.code), Some(&req.id), &e),
            },
        }
    }

    /// Over HTTP, the `Mcp-Param-*` headers of a `tools/call` agree with its arguments (see
    /// [`headers::check_params`]); checked before the call runs, so a refused call changes nothing.
    fn param_headers(&self, req: &Request, meta: &TransportMeta, required: bool) -> Result<(), RpcError> {
        if meta.kind != TransportKind::Http || req.method != "tools/call" {
            return Ok(());
        }
        let params = req.params.as_ref();
        let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
            return Ok(()); // tools/call reports the malformed request
        };
        let declared = self.registry.header_params(name);
        if declared.is_empty() {
            return Ok(());
        }
        let empty = Map::new();
        let args = match params.and_then(|p| p.get("arguments")) {
            Some(Value::Object(a)) => a,
            _ => &empty,
        };
        headers::check_params(declared, args, meta, required)
    }

    /// Handshake-era methods, served statelessly: nothing requires a prior `initialize`.
    async fn legacy(
        &self,
        version: ProtocolVersion,
        req: &mut Request,
        meta: &TransportMeta,
    ) -> Result<Reply, RpcError> {
        let arguments = take_arguments(req);
        let params = req.params.as_ref();
        let value = match req.method.as_str() {
            "initialize" => methods::initialize(&self.info, params, &meta.caller, self.resources.is_some()),
            "ping" => Ok(json!({})),
            "tools/list" => {
                return self
                    .lists
                    .result(&self.registry, &self.info, version, params, &meta.caller)
                    .map(Reply::Raw)
            }
            "tools/call" => {
                let client =
                    ClientInput { capabilities: meta.session_capabilities.clone(), ..ClientInput::default() };
                let mut input = self.call_input(version, &req.id, meta, client);
                input.requester = meta.requester.as_ref().map(|r| r.0.clone());
                methods::tools_call(input, params, arguments).await
            }
            "server/discover" => Err(discover_under_legacy(version)),
            other => self.resource_method(other, version, params, &meta.caller).await,
        };
        value.map(Reply::Value)
    }

    /// 2026-07-28 methods, after the envelope and header checks.
    async fn modern(&self, req: &mut Request, meta: &TransportMeta) -> Result<Reply, RpcError> {
        let envelope = era::check_envelope(meta, &req.method, req.params.as_ref())?;
        self.param_headers(req, meta, true)?;
        let arguments = take_arguments(req);
        let params = req.params.as_ref();
        let era::Envelope { version, client_info, client_capabilities } = envelope;
        let result = match req.method.as_str() {
            "server/discover" => methods::discover(&self.info, &meta.caller, self.resources.is_some()),
            "tools/list" => {
                let listed = self.lists.result(&self.registry, &self.info, version, params, &meta.caller)?;
                return Ok(Reply::Raw(listed));
            }
            "tools/call" => {
                let client = ClientInput {
                    capabilities: Some(client_capabilities),
                    client_name: client_info.as_ref().and_then(client_name),
                    ..ClientInput::default()
                };
                methods::tools_call(self.call_input(version, &req.id, meta, client), params, arguments)
                    .await?
            }
            "initialize" => return Err(initialize_under_modern()),
            other => self.resource_method(other, version, params, &meta.caller).await?,
        };
        Ok(Reply::Value(methods::decorate_modern(result, &self.info)))
    }

    /// `resources/*` when a source is served; any other method is unknown (-32601).
    async fn resource_method(
        &self,
        method: &str,
        version: ProtocolVersion,
        params: Option<&Map<String, Value>>,
        caller: &crate::caller::Caller,
    ) -> Result<Value, RpcError> {
        let source = match (&self.resources, method) {
            (Some(s), "resources/list" | "resources/read" | "resources/templates/list") => s.as_ref(),
            _ => return Err(RpcError::method_not_found(method)),
        };
        match method {
            "resources/list" => resource::list(source, &self.info, version, params, caller).await,
            "resources/read" => resource::read(source, version, params, caller).await,
            _ => resource::templates(source, &self.info, version, params, caller),
        }
    }

    fn call_input<'a>(
        &'a self,
        version: ProtocolVersion,
        id: &'a RequestId,
        meta: &'a TransportMeta,
        client: ClientInput,
    ) -> CallInput<'a> {
        CallInput {
            info: &self.info,
            registry: &self.registry,
            version,
            id,
            caller: &meta.caller,
            client,
            requester: None,
        }
    }
}

/// `params.arguments` of a `tools/call`, moved out of the request (nothing else reads it after
/// the header check); `None` for any other method.
fn take_arguments(req: &mut Request) -> Option<Value> {
    if req.method != "tools/call" {
        return None;
    }
    req.params.as_mut().and_then(|p| p.remove("arguments"))
}

/// `clientInfo.name`, bounded, when the client gave one.
fn client_name(info: &Value) -> Option<String> {
    let name = info.get("name")?.as_str()?;
    Some(name.chars().filter(|c| !c.is_control()).take(64).collect())
}

/// Batches exist up to 2025-03-26 (also assumed when no version header is sent).
fn batch_allowed(meta: &TransportMeta, len: usize) -> Result<(), RpcError> {
    if len == 0 {
        return Err(RpcError::invalid_request("an empty batch is not a valid request"));
    }
    let version = match era::select(meta, None)? {
        Era::Legacy(v) => v,
        Era::Modern => ProtocolVersion::LATEST,
    };
    if !version.allows_batches() {
        return Err(RpcError::invalid_request(format!(
            "JSON-RPC batches are not part of protocol version {version} (only 2025-03-26 and \
             older); send one message per request"
        )));
    }
    if len > MAX_BATCH {
        return Err(RpcError::invalid_request(format!(
            "a batch of {len} messages exceeds the limit of {MAX_BATCH} messages per batch; split it into several requests"
        )));
    }
    Ok(())
}

fn initialize_in_batch(item: &Value) -> Outcome {
    let id = item.get("id").and_then(RequestId::read);
    let error = RpcError::invalid_request("initialize must not be part of a JSON-RPC batch");
    reject(400, id.as_ref(), &error)
}

/// Client responses answer server requests, which this server never sends; 2026-07-28 forbids
/// them outright.
fn client_response(id: Option<&RequestId>, meta: &TransportMeta) -> Outcome {
    match era::select(meta, None) {
        Err(error) => reject(400, None, &error),
        Ok(Era::Modern) => {
            let error = RpcError::invalid_request("2026-07-28 clients must not send JSON-RPC responses");
            reject(400, None, &error)
        }
        Ok(Era::Legacy(_)) => {
            debug!(id = ?id.map(ToString::to_string), "client response accepted and ignored");
            Outcome::Accepted
        }
    }
}

/// Notifications are acknowledged (nothing here needs them), unless the revision is unknown.
fn notification(method: &str, params: Option<&Map<String, Value>>, meta: &TransportMeta) -> Outcome {
    match era::select(meta, params) {
        Err(error) => reject(400, None, &error),
        Ok(_) => {
            debug!(method, "mcp notification accepted");
            Outcome::Accepted
        }
    }
}

fn discover_under_legacy(version: ProtocolVersion) -> RpcError {
    RpcError::new(
        METHOD_NOT_FOUND,
        format!(
            "Method not found: server/discover is a {} method; this request uses protocol \
             version {version} (use initialize, or send 2026-07-28 request metadata)",
            ProtocolVersion::LATEST
        ),
    )
}

fn initialize_under_modern() -> RpcError {
    let supported = ProtocolVersion::supported_strings();
    RpcError::new(
        METHOD_NOT_FOUND,
        format!(
            "Method not found: initialize is not part of protocol version {}; use \
             server/discover, or initialize without 2026-07-28 metadata (supported: {})",
            ProtocolVersion::LATEST,
            supported.join(", ")
        ),
    )
    .with_data(json!({ "supported": supported }))
}

/// HTTP status of a 2026-07-28 error: 404 for an unknown method, 400 for the rest.
fn modern_status(code: i64) -> u16 {
    if code == METHOD_NOT_FOUND {
        404
    } else {
        400
    }
}

fn reject(http_status: u16, id: Option<&RequestId>, error: &RpcError) -> Outcome {
    Outcome::Reject { http_status, body: error_response(id, error) }
}
