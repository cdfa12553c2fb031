//! The checks every request to the MCP endpoint passes before its body is even read: DNS
//! rebinding (Host), cross-site callers (Origin), method, media types and size.
//!
//! A refusal is an HTTP status plus a JSON-RPC error body with `id: null` (the body was not
//! read, so no id is known), which is what MCP clients expect to parse.

use hyper::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

/// Who may reach the MCP endpoint and how much they may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// Path of the endpoint, e.g. `/mcp`.
    pub path: String,
    /// Host names (without port) accepted in `Host`; `None` disables the check (the server
    /// is reached through a proxy that sets Host to anything).
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`scheme://host[:port]`) a browser may call from.
    pub allowed_origins: Vec<String>,
    /// Also accept Origins whose host is a loopback name (when every listener is local).
    pub allow_loopback_origins: bool,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

/// A refusal: status, JSON-RPC error code and a message a person can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON-RPC error code for the body.
    pub code: i64,
    /// Why, naming what was wrong.
    pub message: String,
    /// `Allow` header value for 405.
    pub allow: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Refusal {
        Refusal { status, code, message: message.into(), allow: None }
    }

    /// 400: the body could not be read.
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, message)
    }

    /// 408: the body did not arrive in time.
    pub fn timeout(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::REQUEST_TIMEOUT, INVALID_REQUEST, message)
    }

    /// The JSON-RPC error body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": self.code, "message": self.message}})
    }
}

/// JSON-RPC "server error" range code used for transport-level refusals.
const TRANSPORT_ERROR: i64 = -32000;
/// -32600: the request as a whole is unacceptable.
const INVALID_REQUEST: i64 = -32600;

/// Checks a request to the endpoint; `Ok` means the body may be read.
pub fn check(policy: &EndpointPolicy, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    check_host(policy, headers)?;
    check_origin(policy, headers)?;
    if method != Method::POST {
        let mut r = Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            TRANSPORT_ERROR,
            format!("{method} is not supported on this endpoint: send JSON-RPC messages with POST (no server-sent event stream is offered)"),
        );
        r.allow = Some("POST");
        return Err(r);
    }
    check_content_type(headers)?;
    check_accept(headers)?;
    if let Some(len) =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len > policy.max_body_bytes as u64 {
            return Err(too_large(policy));
        }
    }
    Ok(())
}

/// The refusal for a body over the limit (also used while streaming it in).
pub fn too_large(policy: &EndpointPolicy) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        INVALID_REQUEST,
        format!("request body exceeds {} bytes", policy.max_body_bytes),
    )
}

fn check_host(policy: &EndpointPolicy, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(allowed) = &policy.allowed_hosts else { return Ok(()) };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = host_name(host);
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            TRANSPORT_ERROR,
            format!("Host {host:?} is not accepted by this server (DNS rebinding protection); add it to mcp.allowed_hosts if it is yours"),
        ))
    }
}

fn check_origin(policy: &EndpointPolicy, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("");
    let allowed = policy.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
        || (policy.allow_loopback_origins && origin_is_loopback(origin));
    if allowed {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            TRANSPORT_ERROR,
            format!("Origin {origin:?} is not allowed; add it to mcp.allowed_origins to let that site call this server"),
        ))
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            format!("Content-Type must be application/json, not {value:?}"),
        ));
    }
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            let charset = v.trim().trim_matches('"');
            if k.trim().eq_ignore_ascii_case("charset")
                && !charset.eq_ignore_ascii_case("utf-8")
                && !charset.eq_ignore_ascii_case("utf8")
            {
                return Err(Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    INVALID_REQUEST,
                    format!("charset {charset:?} is not supported: JSON-RPC messages must be UTF-8"),
                ));
            }
        }
    }
    Ok(())
}

/// Answers are JSON; a client that accepts neither JSON nor anything gets 406. A missing
/// Accept header means "anything".
fn check_accept(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(accept) = headers.get(ACCEPT) else { return Ok(()) };
    let accept = accept.to_str().unwrap_or("");
    let ok = accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| matches!(p.split_once('='), Some((k, v)) if k.trim() == "q" && v.trim().parse::<f32>().is_ok_and(|q| q == 0.0)));
        !refused && matches!(media.as_str(), "application/json" | "application/*" | "*/*")
    });
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            INVALID_REQUEST,
            format!("this server answers application/json; Accept {accept:?} does not allow it"),
        ))
    }
}

/// The host part of a Host header value: `[::1]:8080` → `[::1]`, `example.com:80` → `example.com`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn origin_is_loopback(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") || rest.contains('/') {
        return false;
    }
    is_loopback_name(host_name(rest))
}

/// Whether a peer may be served with authentication off: only this machine (a loopback
/// address, IPv4-mapped or not, or a Unix socket: `None`).
pub fn local_peer(peer: Option<std::net::SocketAddr>) -> bool {
    match peer.map(|p| p.ip()) {
        None => true,
        Some(std::net::IpAddr::V4(v4)) => v4.is_loopback(),
        Some(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// The refusal for a peer that is not [`local_peer`] while authentication is off (the serve
/// command refuses such listeners; this is the worker's own check, in depth).
pub fn unauthenticated_peer(peer: Option<std::net::SocketAddr>) -> Refusal {
    let who = peer.map_or_else(|| "a Unix-socket peer".to_string(), |p| p.ip().to_string());
    Refusal::new(
        StatusCode::FORBIDDEN,
        TRANSPORT_ERROR,
        format!("authentication is off ([auth] enabled = false), so only this machine (loopback or a Unix socket) is served, and {who} is not; enable [auth] to serve other machines"),
    )
}

/// Names that reach only this machine.
pub fn is_loopback_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "[::1]"
        || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn policy(loopback: bool) -> EndpointPolicy {
        EndpointPolicy {
            path: "/mcp".into(),
            allowed_hosts: loopback.then(|| vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]),
            allowed_origins: vec!["https://app.example.com".into()],
            allow_loopback_origins: loopback,
            max_body_bytes: 100,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn status(p: &EndpointPolicy, m: Method, pairs: &[(&'static str, &str)]) -> u16 {
        match check(p, &m, &headers(pairs)) {
            Ok(()) => 200,
            Err(r) => r.status.as_u16(),
        }
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn host_is_checked_only_when_bound_to_loopback() {
        let lo = policy(true);
        assert_eq!(status(&lo, Method::POST, &[JSON, ("host", "localhost:8080")]), 200);
        assert_eq!(status(&lo, Method::POST, &[JSON, ("host", "[::1]:8080")]), 200);
        assert_eq!(status(&lo, Method::POST, &[JSON, ("host", "127.0.0.1")]), 200);
        assert_eq!(status(&lo, Method::POST, &[JSON, ("host", "evil.example.com")]), 403);
        assert_eq!(status(&lo, Method::POST, &[JSON]), 403, "no Host at all");
        assert_eq!(status(&policy(false), Method::POST, &[JSON, ("host", "evil.example.com")]), 200);
    }

    #[test]
    fn origin_must_be_allowed_when_present() {
        let lo = policy(true);
        let h = ("host", "localhost");
        assert_eq!(status(&lo, Method::POST, &[JSON, h, ("origin", "http://localhost:3000")]), 200);
        assert_eq!(status(&lo, Method::POST, &[JSON, h, ("origin", "https://app.example.com")]), 200);
        assert_eq!(status(&lo, Method::POST, &[JSON, h, ("origin", "http://evil.example.com")]), 403);
        assert_eq!(status(&lo, Method::POST, &[JSON, h, ("origin", "null")]), 403);
        assert_eq!(status(&lo, Method::POST, &[JSON, h, ("origin", "http://localhost.evil.com")]), 403);
        assert_eq!(status(&policy(false), Method::POST, &[JSON, ("origin", "http://localhost:3000")]), 403);
    }

    #[test]
    fn method_media_types_and_size() {
        let p = policy(false);
        let r = check(&p, &Method::GET, &headers(&[])).unwrap_err();
        assert_eq!((r.status.as_u16(), r.allow), (405, Some("POST")));
        assert_eq!(status(&p, Method::DELETE, &[]), 405);
        assert_eq!(status(&p, Method::POST, &[("content-type", "text/plain")]), 415);
        assert_eq!(status(&p, Method::POST, &[]), 415);
        assert_eq!(status(&p, Method::POST, &[("content-type", "application/json; charset=utf-8")]), 200);
        assert_eq!(status(&p, Method::POST, &[("content-type", "application/json; charset=\"UTF-8\"")]), 200);
        assert_eq!(status(&p, Method::POST, &[("content-type", "application/json; charset=latin1")]), 415);
        assert_eq!(status(&p, Method::POST, &[JSON, ("accept", "text/event-stream")]), 406);
        assert_eq!(status(&p, Method::POST, &[JSON, ("accept", "application/json, text/event-stream")]), 200);
        assert_eq!(status(&p, Method::POST, &[JSON, ("accept", "*/*")]), 200);
        assert_eq!(status(&p, Method::POST, &[JSON, ("accept", "application/json;q=0")]), 406);
        assert_eq!(status(&p, Method::POST, &[JSON, ("content-length", "101")]), 413);
        assert_eq!(status(&p, Method::POST, &[JSON, ("content-length", "100")]), 200);
    }

    #[test]
    fn without_auth_only_loopback_and_unix_peers_are_served() {
        let peer = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
        assert!(local_peer(None), "a Unix-socket peer");
        assert!(local_peer(peer("127.0.0.1:5000")));
        assert!(local_peer(peer("127.9.9.9:5000")));
        assert!(local_peer(peer("[::1]:5000")));
        assert!(local_peer(peer("[::ffff:127.0.0.1]:5000")), "IPv4 loopback on a dual-stack socket");
        assert!(!local_peer(peer("192.0.2.7:5000")));
        assert!(!local_peer(peer("10.0.0.1:5000")));
        assert!(!local_peer(peer("[2001:db8::1]:5000")));
        assert!(!local_peer(peer("[::ffff:192.0.2.7]:5000")));
        assert!(!local_peer(peer("0.0.0.0:5000")));
    }

    #[test]
    fn refusal_body_is_a_json_rpc_error_without_id() {
        let r = check(&policy(false), &Method::POST, &headers(&[])).unwrap_err();
        let body = r.body();
        assert_eq!(body["jsonrpc"], "2.0");
        assert!(body["id"].is_null());
        assert_eq!(body["error"]["code"], -32600);
    }
}
