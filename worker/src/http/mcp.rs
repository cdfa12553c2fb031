//! `POST /mcp`, as a short pipeline of steps, each of which may answer instead of the next:
//! guard (method, Host, Origin, size, content type) → authenticate (with the failed-auth limit)
//! → rate limit → read the body within its size and time → parse → scope of every tool call →
//! caller → dispatch.

use std::net::{IpAddr, SocketAddr};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::guard::{self, Refusal};
use super::response::{denial, json, rate_limited, refused};
use super::{Body, State};
use crate::auth::{Denial, Principal, SCOPE_WRITE};
use crate::mcp::{parse_json, Outcome, Registry, TransportMeta};
use crate::ratelimit::RateLimiter;

/// Runs the pipeline for one request.
pub(super) async fn endpoint(
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
    state: &State,
    request_id: &str,
) -> Response<Body> {
    let policy = &state.settings.mcp.policy;
    if let Err(refusal) = guard::check(policy, req.method(), req.headers()) {
        return refused(&refusal);
    }
    let client_addr = super::client_addr(&req, peer, state);
    let principal = match authenticate(&req, client_addr, state).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let client_key = if state.auth.enabled() { principal.identity() } else { address_key(client_addr) };
    if let Some(limited) = limit(state.limits.as_ref().map(|l| &l.requests), &client_key) {
        state.metrics.rate_limited.inc();
        return limited;
    }
    let headers = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let mut meta = TransportMeta::from_headers(headers);
    let metadata_url = metadata_url(&req, state);
    let bytes = match read_body(req.into_body(), state).await {
        Ok(b) => b,
        Err(refusal) => return refused(&refusal),
    };
    let message = match parse_json(&bytes) {
        Ok(v) => v,
        Err(e) => return json(StatusCode::BAD_REQUEST, &e.to_response()),
    };
    if state.auth.enabled() {
        for name in called_tools(&message) {
            if let Err(d) = principal.require(needed_scope(state.dispatcher.registry(), name)) {
                state.metrics.auth_failures.with_label_values(&[denial_reason(&d)]).inc();
                return denial(&d, &state.auth.www_authenticate(&d, &metadata_url));
            }
        }
    }
    meta.caller = principal.caller(state.auth.enabled(), client_addr, request_id);
    dispatch(message, &meta, state).await
}

/// The principal, or the 401/429 to answer. A failed credential counts against the address's
/// failed-authentication limit.
async fn authenticate(
    req: &Request<Incoming>,
    client_addr: Option<IpAddr>,
    state: &State,
) -> Result<Principal, Response<Body>> {
    let authorization = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.authenticate(authorization).await {
        Ok(p) => Ok(p),
        Err(d) => {
            state.metrics.auth_failures.with_label_values(&[denial_reason(&d)]).inc();
            if d.is_failed_credential() {
                let limiter = state.limits.as_ref().map(|l| &l.auth_failures);
                if let Some(limited) = limit(limiter, &address_key(client_addr)) {
                    state.metrics.rate_limited.inc();
                    return Err(limited);
                }
            }
            Err(denial(&d, &state.auth.www_authenticate(&d, &metadata_url(req, state))))
        }
    }
}

fn address_key(client_addr: Option<IpAddr>) -> String {
    format!("ip:{}", client_addr.map_or("unix".to_string(), |a| a.to_string()))
}

/// The whole body within `max_body_bytes` and `body_timeout`, or the refusal that says which.
async fn read_body(body: Incoming, state: &State) -> Result<Bytes, Refusal> {
    let mcp = &state.settings.mcp;
    let body = Limited::new(body, mcp.policy.max_body_bytes);
    match tokio::time::timeout(mcp.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(guard::too_large(&mcp.policy)),
        Ok(Err(e)) => Err(Refusal::bad_request(format!("could not read the request body: {e}"))),
        Err(_) => Err(Refusal::timeout(format!(
            "the request body did not arrive within {} s",
            mcp.body_timeout.as_secs_f64()
        ))),
    }
}

/// Hands the message to the dispatcher, counts it, and turns the outcome into a response.
async fn dispatch(message: Value, meta: &TransportMeta, state: &State) -> Response<Body> {
    let method = match &message {
        Value::Array(_) => "batch",
        m => crate::metrics::Metrics::method_label(m.get("method").and_then(|v| v.as_str()).unwrap_or("")),
    };
    // Bounded like the metric label, so the access line says which MCP method this was.
    tracing::Span::current().record("mcp_method", method);
    let started = std::time::Instant::now();
    let outcome = state.dispatcher.handle(message, meta).await;
    let ok = match &outcome {
        Outcome::Reply(Value::Array(replies)) => replies.iter().all(|r| r.get("error").is_none()),
        Outcome::Reply(body) => body.get("error").is_none(),
        Outcome::Accepted => true,
        Outcome::Reject { .. } => false,
    };
    state.metrics.mcp_request(method, ok, started.elapsed().as_secs_f64());
    match outcome {
        Outcome::Reply(body) => json(StatusCode::OK, &body),
        Outcome::Accepted => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::ACCEPTED;
            resp
        }
        Outcome::Reject { http_status, body } => {
            json(StatusCode::from_u16(http_status).unwrap_or(StatusCode::BAD_REQUEST), &body)
        }
    }
}

/// A bounded label for why authentication or authorization failed.
fn denial_reason(denial: &Denial) -> &'static str {
    match denial {
        Denial::Missing => "missing",
        Denial::InvalidToken(_) => "invalid_token",
        Denial::InsufficientScope { .. } => "insufficient_scope",
        Denial::Unavailable => "unavailable",
    }
}

/// 429 with Retry-After when `key` is over its limit (counting this request).
fn limit(limiter: Option<&RateLimiter>, key: &str) -> Option<Response<Body>> {
    let secs = limiter?.check(key).retry_after_secs()?;
    Some(rate_limited(secs))
}

/// The scope a call of `name` needs: the tool's own; a name no tool has needs the widest, so a
/// caller learns nothing about which tools exist beyond its scopes (fail closed).
fn needed_scope(registry: &Registry, name: &str) -> Option<&'static str> {
    registry.get(name).map_or(Some(SCOPE_WRITE), |t| t.spec().scope)
}

/// Names of the tools a message (or batch) calls.
fn called_tools(message: &Value) -> Vec<&str> {
    match message {
        Value::Array(batch) => batch.iter().filter_map(called_tool).collect(),
        m => called_tool(m).into_iter().collect(),
    }
}

fn called_tool(m: &Value) -> Option<&str> {
    if m.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    m.pointer("/params/name")?.as_str()
}

/// The canonical URI of this MCP endpoint, as clients reach it (through trusted proxies).
pub(super) fn resource_uri(req: &Request<Incoming>, state: &State) -> String {
    let host = req.headers().get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let proto = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https") && !state.settings.forwarded.is_empty())
        .unwrap_or("http");
    format!("{proto}://{host}{}", state.settings.mcp.policy.path)
}

fn metadata_url(req: &Request<Incoming>, state: &State) -> String {
    state
        .auth
        .resource_metadata_url()
        .unwrap_or_else(|| crate::auth::metadata_url_for(&resource_uri(req, state)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SCOPE_READ;

    #[test]
    fn failed_auth_keys_ipv6_by_64_and_ipv4_by_address() {
        let key = |s: &str| address_key(Some(s.parse().unwrap()));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "one /64, one budget");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"), "another /64");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"), "IPv4 by address");
        assert_eq!(address_key(None), address_key(None), "Unix-socket peers");
        assert_ne!(address_key(None), key("192.0.2.1"));
    }

    #[test]
    fn a_tool_declares_its_scope_and_an_unknown_name_needs_write() {
        let registry = crate::tools::standard_registry(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(needed_scope(&registry, "service_status"), Some(SCOPE_READ));
        assert_eq!(needed_scope(&registry, "some_future_tool"), Some(SCOPE_WRITE));
    }
}
