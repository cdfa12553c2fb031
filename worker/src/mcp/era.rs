//! Which protocol era a message belongs to, decided from that message alone (no session state):
//! legacy (a revision negotiated by `initialize`, named by the `MCP-Protocol-Version` header or
//! assumed to be 2025-03-26 without it) or modern (2026-07-28: version and capabilities in the
//! request's `_meta`, mirrored in HTTP headers that must agree with the body).

use serde_json::{Map, Value};

use super::jsonrpc::RpcError;
use super::transport::{
    decode_header_value, TransportKind, TransportMeta, HEADER_METHOD, HEADER_NAME, HEADER_PROTOCOL_VERSION,
};
use super::version::ProtocolVersion;

/// `_meta` key: the request's protocol version (2026-07-28, required).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key: the client's capabilities for this request (2026-07-28, required).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key: the client's name and version (2026-07-28, optional).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key on results: the server's name and version (2026-07-28).
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// How to serve one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Handshake-era semantics at this revision.
    Legacy(ProtocolVersion),
    /// 2026-07-28 semantics; the envelope still has to be checked.
    Modern,
}

/// The validated 2026-07-28 request envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The (modern) revision of this request.
    pub version: ProtocolVersion,
    /// What the client says it is, if it said.
    pub client_info: Option<Value>,
    /// What the client can do for this request.
    pub client_capabilities: Map<String, Value>,
}

/// Picks the era of a request or notification from its headers and `params._meta`.
pub fn select(meta: &TransportMeta, params: Option<&Map<String, Value>>) -> Result<Era, RpcError> {
    if meta.is_malformed(HEADER_PROTOCOL_VERSION) {
        return Err(RpcError::header_mismatch(
            "the MCP-Protocol-Version header is repeated or not valid header text",
        ));
    }
    if envelope_version(params).is_some() {
        return Ok(Era::Modern);
    }
    match transport_version(meta)? {
        v if v.is_modern() => Ok(Era::Modern),
        v => Ok(Era::Legacy(v)),
    }
}

/// The revision the transport names (header, or what a stdio loop tracked), defaulting to
/// 2025-03-26; an unknown one is -32022 listing every supported revision.
pub fn transport_version(meta: &TransportMeta) -> Result<ProtocolVersion, RpcError> {
    match meta.protocol_version.as_deref() {
        None => Ok(ProtocolVersion::ASSUMED_WITHOUT_HEADER),
        Some(v) => ProtocolVersion::parse(v)
            .ok_or_else(|| RpcError::unsupported_version(v, &ProtocolVersion::supported_strings())),
    }
}

fn envelope_version(params: Option<&Map<String, Value>>) -> Option<&Value> {
    params?.get("_meta")?.as_object()?.get(META_PROTOCOL_VERSION)
}

/// Checks a 2026-07-28 request in the order the spec and the reference SDK use: envelope
/// present (-32602), headers agree with the body (-32020), version served (-32022).
pub fn check_envelope(
    meta: &TransportMeta,
    method: &str,
    params: Option<&Map<String, Value>>,
) -> Result<Envelope, RpcError> {
    let envelope = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .ok_or_else(|| missing_envelope(&[META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]))?;
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| !envelope.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(missing_envelope(&missing));
    }
    let body_version = &envelope[META_PROTOCOL_VERSION];
    if meta.kind == TransportKind::Http {
        check_headers(meta, method, body_version, params)?;
    }
    let Some(requested) = body_version.as_str() else {
        return Err(RpcError::invalid_params(format!("_meta.{META_PROTOCOL_VERSION} must be a string")));
    };
    let version = match ProtocolVersion::parse(requested) {
        Some(v) if v.is_modern() => v,
        known => return Err(unsupported_in_meta(requested, known.is_some())),
    };
    let Some(Value::Object(capabilities)) = envelope.get(META_CLIENT_CAPABILITIES) else {
        return Err(RpcError::invalid_params(format!("_meta.{META_CLIENT_CAPABILITIES} must be an object")));
    };
    Ok(Envelope {
        version,
        client_info: envelope.get(META_CLIENT_INFO).cloned(),
        client_capabilities: capabilities.clone(),
    })
}

fn unsupported_in_meta(requested: &str, handshake_revision: bool) -> RpcError {
    let mut error = RpcError::unsupported_version(requested, &ProtocolVersion::supported_strings());
    if handshake_revision {
        error.message = format!(
            "Protocol version {requested} is served through initialize, not per-request _meta; \
             use {} in _meta",
            ProtocolVersion::LATEST
        );
    }
    error
}

fn missing_envelope(keys: &[&str]) -> RpcError {
    RpcError::invalid_params(format!("2026-07-28 requests need params._meta with {}", keys.join(" and ")))
}

/// The body field mirrored by `Mcp-Name` for each name-bearing method.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

fn check_headers(
    meta: &TransportMeta,
    method: &str,
    body_version: &Value,
    params: Option<&Map<String, Value>>,
) -> Result<(), RpcError> {
    match meta.protocol_version.as_deref() {
        None => return Err(mismatch("the MCP-Protocol-Version header is missing")),
        Some(h) if body_version.as_str() != Some(h) => {
            return Err(mismatch(&format!(
                "the MCP-Protocol-Version header {h:?} does not match _meta.{META_PROTOCOL_VERSION} {body_version}"
            )))
        }
        Some(_) => {}
    }
    if meta.is_malformed(HEADER_METHOD) {
        return Err(mismatch("the Mcp-Method header is repeated or not valid header text"));
    }
    match meta.mcp_method.as_deref() {
        None => return Err(mismatch("the Mcp-Method header is missing")),
        Some(h) if h != method => {
            return Err(mismatch(&format!(
                "the Mcp-Method header {h:?} does not match the body method {method:?}"
            )))
        }
        Some(_) => {}
    }
    check_name_header(meta, method, params)
}

fn check_name_header(
    meta: &TransportMeta,
    method: &str,
    params: Option<&Map<String, Value>>,
) -> Result<(), RpcError> {
    let Some(field) = name_field(method) else {
        return Ok(());
    };
    let Some(body) = params.and_then(|p| p.get(field)).and_then(Value::as_str) else {
        return Ok(()); // no name in the body: the handler reports the malformed request
    };
    if meta.is_malformed(HEADER_NAME) {
        return Err(mismatch("the Mcp-Name header is repeated or not valid header text"));
    }
    let Some(raw) = meta.mcp_name.as_deref() else {
        return Err(mismatch(&format!("the Mcp-Name header is missing (body {field}: {body:?})")));
    };
    match decode_header_value(raw) {
        Some(decoded) if decoded == body => Ok(()),
        Some(decoded) => Err(mismatch(&format!(
            "the Mcp-Name header {decoded:?} does not match the body {field} {body:?}"
        ))),
        None => Err(mismatch("the Mcp-Name header has a malformed base64 value")),
    }
}

fn mismatch(message: &str) -> RpcError {
    RpcError::header_mismatch(format!("Header mismatch: {message}"))
}

#[cfg(test)]
#[path = "era_tests.rs"]
mod tests;
