//! The boundary between a transport and the dispatcher: what a transport knows about a message
//! ([`TransportMeta`]) and what it must send back ([`Outcome`]).
//!
//! HTTP fills `TransportMeta` from its headers with [`TransportMeta::from_headers`]; stdio uses
//! [`TransportMeta::stdio`]. Neither needs to understand MCP beyond that.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use serde_json::{Map, Value};

use super::jsonrpc::RequestId;
use super::tool::ClientRequester;
use super::version::ProtocolVersion;
use crate::caller::Caller;

/// Header carrying the protocol revision (HTTP, from 2025-06-18).
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// Header mirroring the JSON-RPC method (HTTP, 2026-07-28).
pub const HEADER_METHOD: &str = "mcp-method";
/// Header mirroring `params.name` / `params.uri` (HTTP, 2026-07-28).
pub const HEADER_NAME: &str = "mcp-name";

/// Which transport a message came over: header rules apply only to HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Streamable HTTP (`POST /mcp`).
    Http,
    /// One JSON message per line on stdin/stdout.
    Stdio,
}

/// What the transport knows about one message besides its body.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportMeta {
    /// HTTP or stdio.
    pub kind: TransportKind,
    /// HTTP: the `MCP-Protocol-Version` header. Stdio: the revision the last `initialize` on
    /// this stream negotiated (see [`Outcome::negotiated_version`]), if the loop tracks it.
    pub protocol_version: Option<String>,
    /// The `Mcp-Method` header (HTTP only).
    pub mcp_method: Option<String>,
    /// The `Mcp-Name` header, still encoded (HTTP only).
    pub mcp_name: Option<String>,
    /// Routing headers that were repeated or not valid header text (lowercase names).
    pub malformed: Vec<&'static str>,
    /// `Mcp-Param-*` headers (2026-07-28 `x-mcp-header`): the lowercase name after the prefix,
    /// and the value still encoded, `None` when repeated or not valid header text.
    pub params: Vec<(String, Option<String>)>,
    /// Who is calling.
    pub caller: Arc<Caller>,
    /// What a handshake-era client declared at `initialize`, as its signed session id carries
    /// it (HTTP); `None` without a session.
    pub session_capabilities: Option<Map<String, Value>>,
    /// Sends requests to the client while a call runs (the legacy HTTP event stream).
    pub requester: Option<RequesterHandle>,
}

/// A [`ClientRequester`] in a [`TransportMeta`]: compared by identity, shown by presence.
#[derive(Clone)]
pub struct RequesterHandle(pub Arc<dyn ClientRequester>);

impl std::fmt::Debug for RequesterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequesterHandle(..)")
    }
}

impl PartialEq for RequesterHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl TransportMeta {
    /// Meta for a stdio message (no headers, no address).
    pub fn stdio() -> TransportMeta {
        TransportMeta::empty(TransportKind::Stdio)
    }

    /// Meta for an HTTP request without any MCP headers.
    pub fn http() -> TransportMeta {
        TransportMeta::empty(TransportKind::Http)
    }

    fn empty(kind: TransportKind) -> TransportMeta {
        TransportMeta {
            kind,
            protocol_version: None,
            mcp_method: None,
            mcp_name: None,
            malformed: Vec::new(),
            params: Vec::new(),
            caller: nobody(),
            session_capabilities: None,
            requester: None,
        }
    }

    /// Reads the MCP routing headers from raw `(name, value)` pairs, matching names
    /// case-insensitively, trimming optional whitespace, and flagging repeats and bad bytes.
    pub fn from_headers<'a, I>(headers: I) -> TransportMeta
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let mut meta = TransportMeta::http();
        for (name, raw) in headers {
            let Some(key) = routing_header(name) else {
                meta.note_param(name, raw);
                continue;
            };
            let value = header_text(raw);
            let slot = meta.slot_mut(key);
            match value {
                Some(v) if slot.is_none() => *slot = Some(v),
                _ => {
                    *slot = Some(String::new());
                    if !meta.malformed.contains(&key) {
                        meta.malformed.push(key);
                    }
                }
            }
        }
        meta
    }

    /// Keeps an `Mcp-Param-*` header; a repeat makes it unreadable.
    fn note_param(&mut self, name: &str, raw: &[u8]) {
        let prefix = super::headers::PARAM_PREFIX;
        if name.len() <= prefix.len() || !name.is_char_boundary(prefix.len()) {
            return;
        }
        let (head, rest) = name.split_at(prefix.len());
        if !head.eq_ignore_ascii_case(prefix) {
            return;
        }
        let rest = rest.to_ascii_lowercase();
        match self.params.iter_mut().find(|(n, _)| *n == rest) {
            Some((_, value)) => *value = None,
            None => self.params.push((rest, header_text(raw))),
        }
    }

    /// The `Mcp-Param-{name}` header (name matched ignoring case): absent, or `Some(None)`
    /// when repeated or unreadable.
    pub fn param_header(&self, name: &str) -> Option<Option<&str>> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }

    fn slot_mut(&mut self, key: &str) -> &mut Option<String> {
        match key {
            HEADER_PROTOCOL_VERSION => &mut self.protocol_version,
            HEADER_METHOD => &mut self.mcp_method,
            _ => &mut self.mcp_name,
        }
    }

    /// Attaches caller information.
    pub fn with_caller(mut self, caller: Caller) -> TransportMeta {
        self.caller = Arc::new(caller);
        self
    }

    /// Sets the protocol revision (stdio loops pass the one `initialize` negotiated).
    pub fn with_protocol_version(mut self, version: impl Into<String>) -> TransportMeta {
        self.protocol_version = Some(version.into());
        self
    }

    /// True when `header` (lowercase) was repeated or unreadable.
    pub fn is_malformed(&self, header: &str) -> bool {
        self.malformed.contains(&header)
    }
}

/// The canonical (lowercase) name if `name` is one of the MCP routing headers.
fn routing_header(name: &str) -> Option<&'static str> {
    [HEADER_PROTOCOL_VERSION, HEADER_METHOD, HEADER_NAME].into_iter().find(|h| name.eq_ignore_ascii_case(h))
}

/// The caller of a message nobody has said anything about yet, shared: HTTP replaces it with
/// the authenticated one, so allocating it per request was waste.
fn nobody() -> Arc<Caller> {
    static NOBODY: OnceLock<Arc<Caller>> = OnceLock::new();
    NOBODY.get_or_init(Arc::default).clone()
}

/// A header value as text: visible ASCII, space and tab only (RFC 9110), outer whitespace removed.
fn header_text(raw: &[u8]) -> Option<String> {
    let ok = raw.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b));
    let text = std::str::from_utf8(raw).ok().filter(|_| ok)?;
    Some(text.trim_matches([' ', '\t']).to_owned())
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel (2026-07-28 value encoding);
/// `None` when the sentinel is malformed, so it can never match a body value by accident.
pub fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value.strip_prefix("=?base64?").and_then(|rest| rest.strip_suffix("?=")) else {
        return Some(value.to_owned());
    };
    // The standard engine is strict: canonical padding, no stray trailing bits.
    let bytes = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
    String::from_utf8(bytes).ok()
}

/// A successful response as the text to send: a result serialised before (a prebuilt
/// `tools/list` page), or one written straight from the method's `Value` (building a response
/// `Value` around it cost five allocations and a tree to drop per request). HTTP sends the text
/// as it is; a `Value` is parsed only where one is asked for (batches, stdio, tests).
#[derive(Debug, Clone)]
pub struct RawReply {
    text: String,
    parsed: OnceLock<Value>,
}

impl RawReply {
    /// The response to `id` carrying `result` (serialised JSON).
    pub fn new(id: &RequestId, result: &str) -> RawReply {
        let mut bytes = RawReply::head(id, result.len());
        bytes.extend_from_slice(result.as_bytes());
        RawReply::finish(bytes)
    }

    /// The response to `id` carrying `result`, serialised once, straight into its text.
    pub fn result(id: &RequestId, result: &Value) -> RawReply {
        let mut bytes = RawReply::head(id, 256);
        let head = bytes.len();
        // Into a `Vec`, a `Value` always serialises; the fallback is never taken.
        if serde_json::to_writer(&mut bytes, result).is_err() {
            bytes.truncate(head);
            bytes.extend_from_slice(b"null");
        }
        RawReply::finish(bytes)
    }

    /// `{"id":…,"jsonrpc":"2.0","result":`: the members in the order a `Value` response
    /// serialises them, so the bytes are the same either way.
    fn head(id: &RequestId, room: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(room + 64);
        bytes.extend_from_slice(b"{\"id\":");
        // A string or a number into a `Vec`: never fails.
        let _ = match id {
            RequestId::Str(s) => serde_json::to_writer(&mut bytes, s),
            RequestId::Num(n) => serde_json::to_writer(&mut bytes, n),
        };
        bytes.extend_from_slice(b",\"jsonrpc\":\"2.0\",\"result\":");
        bytes
    }

    fn finish(mut bytes: Vec<u8>) -> RawReply {
        bytes.push(b'}');
        // serde_json writes UTF-8 and `new` is given a `&str`: the fallback is never taken.
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|_| r#"{"id":null,"jsonrpc":"2.0","result":null}"#.to_string());
        RawReply { text, parsed: OnceLock::new() }
    }

    /// The response as sent.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The response as sent, consumed.
    pub fn into_text(self) -> String {
        self.text
    }

    /// The response parsed (once).
    pub fn value(&self) -> &Value {
        self.parsed.get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null))
    }
}

impl PartialEq for RawReply {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// What the transport sends back for one body.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// HTTP 200 `application/json`; stdio writes the line.
    Reply(Value),
    /// HTTP 200 `application/json` from bytes made before; stdio writes the line.
    Raw(RawReply),
    /// HTTP 202 with no body; stdio writes nothing (notifications and client responses).
    Accepted,
    /// A refusal whose HTTP status the spec fixes (400, 404); stdio writes `body` and ignores
    /// the status.
    Reject {
        /// The HTTP status to use.
        http_status: u16,
        /// A JSON-RPC error response.
        body: Value,
    },
}

impl Outcome {
    /// The HTTP status for this outcome.
    pub fn http_status(&self) -> u16 {
        match self {
            Outcome::Reply(_) | Outcome::Raw(_) => 200,
            Outcome::Accepted => 202,
            Outcome::Reject { http_status, .. } => *http_status,
        }
    }

    /// The JSON to send, if any.
    pub fn body(&self) -> Option<&Value> {
        match self {
            Outcome::Reply(body) | Outcome::Reject { body, .. } => Some(body),
            Outcome::Raw(raw) => Some(raw.value()),
            Outcome::Accepted => None,
        }
    }

    /// Consumes the outcome into the JSON to send, if any.
    pub fn into_body(self) -> Option<Value> {
        match self {
            Outcome::Reply(body) | Outcome::Reject { body, .. } => Some(body),
            Outcome::Raw(raw) => {
                raw.value();
                raw.parsed.into_inner()
            }
            Outcome::Accepted => None,
        }
    }

    /// The revision an `initialize` reply settled on, so a stdio loop can pass it as
    /// [`TransportMeta::protocol_version`] for the rest of the stream.
    pub fn negotiated_version(&self) -> Option<ProtocolVersion> {
        let body = match self {
            Outcome::Reply(body) => body,
            Outcome::Raw(raw) => raw.value(),
            Outcome::Accepted | Outcome::Reject { .. } => return None,
        };
        let version = body.get("result")?.get("protocolVersion")?.as_str()?;
        ProtocolVersion::parse(version)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn headers_match_case_insensitively_and_trim_whitespace() {
        let meta = TransportMeta::from_headers([
            ("MCP-Protocol-Version", &b"2026-07-28"[..]),
            ("mcp-method", b" tools/call\t"),
            ("MCP-NAME", b"  service_status  "),
            ("content-type", b"application/json"),
        ]);
        assert_eq!(meta.kind, TransportKind::Http);
        assert_eq!(meta.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(meta.mcp_method.as_deref(), Some("tools/call"));
        assert_eq!(meta.mcp_name.as_deref(), Some("service_status"));
        assert!(meta.malformed.is_empty());
    }

    #[test]
    fn repeated_or_binary_routing_headers_are_flagged() {
        let meta = TransportMeta::from_headers([
            ("Mcp-Method", &b"tools/list"[..]),
            ("mcp-method", b"tools/call"),
            ("mcp-name", b"caf\xc3\xa9"),
            ("mcp-protocol-version", b"2025-06-18\r\n"),
        ]);
        assert!(meta.is_malformed(HEADER_METHOD));
        assert!(meta.is_malformed(HEADER_NAME));
        assert!(meta.is_malformed(HEADER_PROTOCOL_VERSION));
    }

    #[test]
    fn base64_sentinel_values_decode() {
        assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
        assert_eq!(decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(), Some("Hello, 世界"));
        assert_eq!(decode_header_value("=?base64?IHBhZGRlZCA=?=").as_deref(), Some(" padded "));
        assert_eq!(decode_header_value("=?base64?YQ==?=").as_deref(), Some("a"));
        assert_eq!(decode_header_value("=?base64?YWJj?=").as_deref(), Some("abc"));
        assert_eq!(decode_header_value("=?base64??=").as_deref(), Some(""));
    }

    #[test]
    fn malformed_base64_never_matches() {
        for bad in [
            "=?base64?YQ=?=",      // wrong length
            "=?base64?Y===?=",     // too much padding
            "=?base64?YR==?=",     // non-canonical trailing bits
            "=?base64?YQ==YQ==?=", // padding in the middle
            "=?base64?!!!!?=",     // outside the alphabet
            "=?base64?/w==?=",     // decodes to a byte that is not UTF-8
        ] {
            assert_eq!(decode_header_value(bad), None, "{bad}");
        }
    }

    #[test]
    fn outcome_statuses_and_bodies() {
        assert_eq!(Outcome::Reply(json!({})).http_status(), 200);
        assert_eq!(Outcome::Accepted.http_status(), 202);
        assert_eq!(Outcome::Accepted.body(), None);
        let r = Outcome::Reject { http_status: 404, body: json!({"e":1}) };
        assert_eq!(r.http_status(), 404);
        assert_eq!(r.into_body(), Some(json!({"e":1})));
    }

    #[test]
    fn negotiated_version_is_read_from_initialize_replies_only() {
        let init = Outcome::Reply(json!({"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}));
        assert_eq!(init.negotiated_version(), Some(ProtocolVersion::V2025_06_18));
        let other = Outcome::Reply(json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}}));
        assert_eq!(other.negotiated_version(), None);
        assert_eq!(Outcome::Accepted.negotiated_version(), None);
    }
}
