//! MCP resources: what a resource source is ([`Resources`], implemented outside this layer, as
//! tools are) and the methods that answer for it: `resources/list` (paged by the source's own
//! cursor), `resources/read` and `resources/templates/list`, each with the caching hints
//! 2026-07-28 requires of them. Resources are read-only; a source names the scope a caller
//! needs to see them, and decides itself what a caller may list or read.

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Map, Value};

use super::info::{CacheScope, ServerInfo};
use super::jsonrpc::{RpcError, INTERNAL_ERROR, INVALID_PARAMS};
use super::methods::cursor_param;
use super::version::ProtocolVersion;
use crate::caller::Caller;

/// JSON-RPC code of "resource not found" before 2026-07-28 (from then on: -32602).
pub const LEGACY_RESOURCE_NOT_FOUND: i64 = -32002;

/// What a resource or a template says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    /// Machine name.
    pub name: String,
    /// Display name (2025-06-18 and later).
    pub title: Option<String>,
    /// What it holds, for the model.
    pub description: Option<String>,
    /// Content type of its contents.
    pub mime_type: Option<String>,
}

/// One listed resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its URI (what `resources/read` takes).
    pub uri: String,
    /// Name, title, description, content type.
    pub about: About,
}

/// A family of resources named by an RFC 6570 URI template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTemplate {
    /// The template.
    pub uri_template: String,
    /// Name, title, description, content type of an instance.
    pub about: About,
}

/// One page of `resources/list`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourcePage {
    /// The resources on this page.
    pub resources: Vec<Resource>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// The text contents of a read resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextContents {
    /// The URI read.
    pub uri: String,
    /// Content type.
    pub mime_type: String,
    /// The contents.
    pub text: String,
}

/// Why a list or a read has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// No such resource for this caller (a group outside the policy or the credential is not
    /// told apart from one that does not exist): -32602 from 2026-07-28, -32002 before.
    #[error("{0}")]
    NotFound(String),
    /// A malformed URI or cursor: -32602.
    #[error("{0}")]
    Invalid(String),
    /// The source failed (AWS, the audit log): -32603 with the message, which names no secret.
    #[error("{0}")]
    Failed(String),
}

/// The future a source returns.
pub type ResourceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ResourceError>> + Send + 'a>>;

/// Something that serves resources.
pub trait Resources: Send + Sync {
    /// The scope a caller needs to list or read any of them (`None`: any caller).
    fn scope(&self) -> Option<&'static str>;
    /// The page at `cursor` of what `caller` may read.
    fn list<'a>(&'a self, cursor: Option<&'a str>, caller: &'a Caller) -> ResourceFuture<'a, ResourcePage>;
    /// The contents of `uri` for `caller`.
    fn read<'a>(&'a self, uri: &'a str, caller: &'a Caller) -> ResourceFuture<'a, TextContents>;
    /// The URI templates of the resources.
    fn templates(&self) -> Vec<ResourceTemplate>;
    /// How long a client may keep a read result (ms); lists use the server's hint.
    fn read_ttl_ms(&self) -> u64 {
        0
    }
}

/// `resources/list`: one page, `private` (it depends on the caller's credential).
pub async fn list(
    source: &dyn Resources,
    info: &ServerInfo,
    version: ProtocolVersion,
    params: Option<&Map<String, Value>>,
    caller: &Caller,
) -> Result<Value, RpcError> {
    allowed(source, caller)?;
    let page = source.list(cursor_param(params)?, caller).await.map_err(|e| rpc_error(e, version))?;
    let resources: Vec<Value> = page.resources.iter().map(|r| resource_value(r, version)).collect();
    let mut result = Map::new();
    result.insert("resources".into(), Value::Array(resources));
    if let Some(next) = page.next_cursor {
        result.insert("nextCursor".into(), json!(next));
    }
    hint(&mut result, version, info.cache.ttl_ms, CacheScope::Private);
    Ok(Value::Object(result))
}

/// `resources/read`: the contents, `private`, fresh for the source's read TTL.
pub async fn read(
    source: &dyn Resources,
    version: ProtocolVersion,
    params: Option<&Map<String, Value>>,
    caller: &Caller,
) -> Result<Value, RpcError> {
    allowed(source, caller)?;
    let uri = params
        .and_then(|p| p.get("uri"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("resources/read needs params.uri (a string)"))?;
    let c =
        source.read(uri, caller).await.map_err(|e| rpc_error(e, version).with_data(json!({"uri": uri})))?;
    let mut result = Map::new();
    result.insert("contents".into(), json!([{ "uri": c.uri, "mimeType": c.mime_type, "text": c.text }]));
    hint(&mut result, version, source.read_ttl_ms(), CacheScope::Private);
    Ok(Value::Object(result))
}

/// `resources/templates/list`: every template on one page, `public` (the same for everyone).
pub fn templates(
    source: &dyn Resources,
    info: &ServerInfo,
    version: ProtocolVersion,
    params: Option<&Map<String, Value>>,
    caller: &Caller,
) -> Result<Value, RpcError> {
    allowed(source, caller)?;
    if cursor_param(params)?.is_some() {
        return Err(RpcError::invalid_params("Invalid cursor: the templates fit on one page"));
    }
    let templates: Vec<Value> = source
        .templates()
        .iter()
        .map(|t| {
            let mut obj = Map::new();
            obj.insert("uriTemplate".into(), json!(t.uri_template));
            describe(&mut obj, &t.about, version);
            Value::Object(obj)
        })
        .collect();
    let mut result = Map::new();
    result.insert("resourceTemplates".into(), Value::Array(templates));
    hint(&mut result, version, info.cache.ttl_ms, CacheScope::Public);
    Ok(Value::Object(result))
}

/// The capability object announced for a source (no subscriptions, no change notifications).
pub fn capability() -> Value {
    json!({ "subscribe": false, "listChanged": false })
}

/// A caller without the source's scope is refused (HTTP refuses it earlier with 403).
fn allowed(source: &dyn Resources, caller: &Caller) -> Result<(), RpcError> {
    match source.scope() {
        Some(scope) if !caller.has_scope(scope) => Err(RpcError::invalid_params(format!(
            "reading resources needs the {scope} scope, which your credential does not have"
        ))),
        _ => Ok(()),
    }
}

fn resource_value(r: &Resource, version: ProtocolVersion) -> Value {
    let mut obj = Map::new();
    obj.insert("uri".into(), json!(r.uri));
    describe(&mut obj, &r.about, version);
    Value::Object(obj)
}

fn describe(obj: &mut Map<String, Value>, about: &About, version: ProtocolVersion) {
    obj.insert("name".into(), json!(about.name));
    if let (true, Some(t)) = (version.has_structured_output(), &about.title) {
        obj.insert("title".into(), json!(t));
    }
    if let Some(d) = &about.description {
        obj.insert("description".into(), json!(d));
    }
    if let Some(m) = &about.mime_type {
        obj.insert("mimeType".into(), json!(m));
    }
}

/// `ttlMs` and `cacheScope`, which 2026-07-28 requires on these results (older revisions do
/// not define them).
fn hint(result: &mut Map<String, Value>, version: ProtocolVersion, ttl_ms: u64, scope: CacheScope) {
    if version.is_modern() {
        result.insert("ttlMs".into(), json!(ttl_ms));
        result.insert("cacheScope".into(), json!(scope.as_str()));
    }
}

fn rpc_error(e: ResourceError, version: ProtocolVersion) -> RpcError {
    match e {
        ResourceError::NotFound(m) if !version.is_modern() => RpcError::new(LEGACY_RESOURCE_NOT_FOUND, m),
        ResourceError::NotFound(m) | ResourceError::Invalid(m) => RpcError::new(INVALID_PARAMS, m),
        ResourceError::Failed(m) => RpcError::new(INTERNAL_ERROR, m),
    }
}
