//! Routes → handlers. Every response is built here, so the drain rule (`Connection: close`)
//! and the request limits apply to all of them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::Instrument;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::auth::Denial;
use crate::guard::{self, Refusal};
use crate::mcp::{parse_json, Caller, Outcome, TransportMeta};

/// Where RFC 9728 puts the protected resource metadata.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
use crate::server::Shared;

/// The response body type of every handler.
pub type Body = Full<Bytes>;

/// Entry point for one request: gives it a request id (the client's `X-Request-Id` when sane),
/// runs it inside a span carrying that id — so every log line of the request has it — echoes
/// the id, and writes one access-log line.
pub async fn handle(
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let request_id = request_id(&req);
    let span = tracing::info_span!("request", request_id = %request_id, mcp_method = tracing::field::Empty);
    let started = std::time::Instant::now();
    let access = Access {
        method: req.method().to_string(),
        path: req.uri().path().chars().take(256).collect(),
        user_agent: header_text(&req, hyper::header::USER_AGENT),
        referer: header_text(&req, hyper::header::REFERER),
        client: client_addr(&req, peer, &shared),
    };
    let mut resp = async {
        match check_limits(&req, &shared) {
            Some(refused) => refused,
            None if req.uri().path() == shared.settings.mcp.policy.path => {
                mcp_endpoint(req, peer, &shared, &request_id).await
            }
            None if req.uri().path() == "/metrics" => metrics_endpoint(&req, peer, &shared).await,
            None => route(&req, &shared),
        }
    }
    .instrument(span.clone())
    .await;
    if shared.draining() {
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let bytes = hyper::body::Body::size_hint(resp.body()).exact().unwrap_or(0);
    span.in_scope(|| {
        tracing::info!(
            target: "access",
            event = "access",
            client = %access.client.map_or("unix".to_string(), |a| a.to_string()),
            method = %access.method,
            path = %access.path,
            status = resp.status().as_u16(),
            bytes,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            user_agent = %access.user_agent,
            referer = %access.referer,
            "{} {} {}", access.method, access.path, resp.status().as_u16()
        )
    });
    shared.metrics.http_request(resp.status().as_u16());
    shared.request_done();
    Ok(resp)
}

/// What the access-log line says about the request (read before the request is consumed).
struct Access {
    method: String,
    path: String,
    user_agent: String,
    referer: String,
    client: Option<std::net::IpAddr>,
}

fn header_text(req: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(String::new(), |v| v.chars().take(256).collect())
}

/// The client's `X-Request-Id` if it is short and plain (it ends up in logs), else a new one.
fn request_id(req: &Request<Incoming>) -> String {
    let given = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let sane = (1..=128).contains(&given.len())
        && given.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if sane {
        return given.to_string();
    }
    let mut bytes = [0u8; 12];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Unreachable in practice; a time-based id still keeps log lines joinable.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return format!("{nanos:x}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A scraper is let in by a direct connection from `metrics.allow_ips` (a request relayed by
/// a proxy is not direct, whoever the proxy is), or by the metrics bearer token from anywhere.
fn metrics_allowed(req: &Request<Incoming>, peer: Option<SocketAddr>, shared: &Shared) -> bool {
    let m = &shared.settings.metrics;
    if let Some(expected) = m.token_hash.as_deref().and_then(crate::auth::apikey::parse_hash) {
        let presented = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(token) =
            presented.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        {
            let got = crate::auth::apikey::parse_hash(&crate::auth::apikey::hash(token.trim()));
            if got.is_some_and(|g| aws_lc_rs::constant_time::verify_slices_are_equal(&g, &expected).is_ok()) {
                return true;
            }
        }
    }
    let forwarded =
        ["forwarded", "x-forwarded-for", "x-real-ip"].iter().any(|h| req.headers().contains_key(*h));
    let Ok(allowed) = crate::forwarded::TrustedProxies::parse(&m.allow_ips) else { return false };
    !forwarded
        && match peer {
            Some(p) => allowed.is_trusted(p.ip()),
            None => allowed.trusts_unix(),
        }
}

/// How long `/metrics` waits for the supervisor's merged view.
const METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /metrics`: the merged view of every worker and the supervisor, asked of the supervisor.
/// Served only to direct local callers: a loopback TCP peer or a Unix socket peer, and no
/// forwarding headers (a request relayed by a proxy is not local, whoever the proxy is).
async fn metrics_endpoint(
    req: &Request<Incoming>,
    peer: Option<SocketAddr>,
    shared: &Shared,
) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return method_not_allowed("GET, HEAD");
    }
    if !metrics_allowed(req, peer, shared) {
        let mut resp = json(
            StatusCode::FORBIDDEN,
            &json!({"error": "metrics are for the configured scrapers: metrics.allow_ips, or the metrics bearer token"}),
        );
        if shared.settings.metrics.token_hash.is_some() {
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"metrics\""));
        }
        return resp;
    }
    // Our own latest figures first, so the answer includes everything this worker did.
    shared.outbox.send(supervisor::ipc::WorkerMessage::Metrics { families: shared.metrics.snapshot() });
    match shared.outbox.metrics_text(METRICS_TIMEOUT).await {
        Some(text) => {
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            resp
        }
        None => {
            json(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "the supervisor did not answer in time"}))
        }
    }
}

/// `POST /mcp`: guard, authenticate, read the body within its size and time limits, check
/// the scope of every tool call in it, dispatch.
async fn mcp_endpoint(
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
    shared: &Shared,
    request_id: &str,
) -> Response<Body> {
    let mcp = &shared.settings.mcp;
    if let Err(refusal) = guard::check(&mcp.policy, req.method(), req.headers()) {
        return refused(&refusal);
    }
    let authorization = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let client_addr = client_addr(&req, peer, shared);
    let address_key = format!("ip:{}", client_addr.map_or("unix".to_string(), |a| a.to_string()));
    let principal = match shared.auth.authenticate(authorization).await {
        Ok(p) => p,
        Err(denial) => {
            shared.metrics.auth_failures.with_label_values(&[denial_reason(&denial)]).inc();
            if denial.is_failed_credential() {
                if let Some(limited) = limit(shared.limits.as_ref().map(|l| &l.auth_failures), &address_key) {
                    shared.metrics.rate_limited.inc();
                    return limited;
                }
            }
            return denied(&req, &denial, shared);
        }
    };
    let client_key = if shared.auth.enabled() { principal.identity() } else { address_key };
    if let Some(limited) = limit(shared.limits.as_ref().map(|l| &l.requests), &client_key) {
        shared.metrics.rate_limited.inc();
        return limited;
    }
    let headers = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let mut meta = TransportMeta::from_headers(headers);
    let metadata_url = metadata_url(&req, shared);
    let body = Limited::new(req.into_body(), mcp.policy.max_body_bytes);
    let timeout = std::time::Duration::from_secs_f64(mcp.body_timeout);
    let bytes = match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refused(&guard::too_large(&mcp.policy));
        }
        Ok(Err(e)) => {
            let r = Refusal::bad_request(format!("could not read the request body: {e}"));
            return refused(&r);
        }
        Err(_) => {
            let r =
                Refusal::timeout(format!("the request body did not arrive within {} s", mcp.body_timeout));
            return refused(&r);
        }
    };
    let message = match parse_json(&bytes) {
        Ok(v) => v,
        Err(e) => return json(StatusCode::BAD_REQUEST, &e.to_response()),
    };
    if shared.auth.enabled() {
        for name in called_tools(&message) {
            if let Err(denial) = principal.authorize_tool(name) {
                shared.metrics.auth_failures.with_label_values(&[denial_reason(&denial)]).inc();
                return denial_response(&denial, &shared.auth.www_authenticate(&denial, &metadata_url));
            }
        }
    }
    meta.caller = Caller {
        client_addr,
        subject: shared.auth.enabled().then(|| principal.identity()),
        log_id: Some(request_id.to_string()),
        allowed_tools: shared.auth.enabled().then(|| {
            let tools = shared.dispatcher.registry().tools();
            tools.iter().map(|t| t.spec().name.clone()).filter(|n| principal.may_call(n)).collect()
        }),
        security_groups: principal.security_groups.clone(),
    };
    let method = match &message {
        serde_json::Value::Array(_) => "batch",
        m => crate::metrics::Metrics::method_label(m.get("method").and_then(|v| v.as_str()).unwrap_or("")),
    };
    // Bounded like the metric label, so the access line says which MCP method this was.
    tracing::Span::current().record("mcp_method", method);
    let started = std::time::Instant::now();
    let outcome = shared.dispatcher.handle(message, &meta).await;
    let ok = match &outcome {
        Outcome::Reply(serde_json::Value::Array(replies)) => replies.iter().all(|r| r.get("error").is_none()),
        Outcome::Reply(body) => body.get("error").is_none(),
        Outcome::Accepted => true,
        Outcome::Reject { .. } => false,
    };
    shared.metrics.mcp_request(method, ok, started.elapsed().as_secs_f64());
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
fn limit(limiter: Option<&crate::ratelimit::RateLimiter>, key: &str) -> Option<Response<Body>> {
    let decision = limiter?.check(key);
    let secs = decision.retry_after_secs()?;
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": format!("rate limit exceeded; retry after {secs} s")}});
    let mut resp = json(StatusCode::TOO_MANY_REQUESTS, &body);
    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    Some(resp)
}

/// Names of the tools a message (or batch) calls.
fn called_tools(message: &serde_json::Value) -> Vec<&str> {
    match message {
        serde_json::Value::Array(batch) => batch.iter().filter_map(called_tool).collect(),
        m => called_tool(m).into_iter().collect(),
    }
}

fn called_tool(m: &serde_json::Value) -> Option<&str> {
    if m.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    m.pointer("/params/name")?.as_str()
}

/// The canonical URI of this MCP endpoint, as clients reach it (through trusted proxies).
fn resource_uri(req: &Request<Incoming>, shared: &Shared) -> String {
    let host = req.headers().get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let proto = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https") && !shared.proxies.is_empty())
        .unwrap_or("http");
    format!("{proto}://{host}{}", shared.settings.mcp.policy.path)
}

fn metadata_url(req: &Request<Incoming>, shared: &Shared) -> String {
    shared
        .auth
        .resource_metadata_url()
        .unwrap_or_else(|| crate::auth::metadata_url_for(&resource_uri(req, shared)).unwrap_or_default())
}

fn denied(req: &Request<Incoming>, denial: &Denial, shared: &Shared) -> Response<Body> {
    let challenge = shared.auth.www_authenticate(denial, &metadata_url(req, shared));
    denial_response(denial, &challenge)
}

fn denial_response(denial: &Denial, challenge: &str) -> Response<Body> {
    let status = StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": denial.to_string()}});
    let mut resp = json(status, &body);
    if let Ok(v) = HeaderValue::from_str(challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

/// RFC 9728 protected resource metadata, at the well-known path and at it + the MCP path.
fn resource_metadata(req: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    if !shared.auth.enabled() {
        return json(
            StatusCode::NOT_FOUND,
            &json!({"error": "authentication is not enabled on this server"}),
        );
    }
    let resource = shared.auth.audience_or(&resource_uri(req, shared));
    json(StatusCode::OK, &shared.auth.protected_resource_metadata(&resource))
}

/// The client as the request tells it: through trusted proxies only, else the TCP peer.
fn client_addr(
    req: &Request<Incoming>,
    peer: Option<SocketAddr>,
    shared: &Shared,
) -> Option<std::net::IpAddr> {
    shared.proxies.client_addr(peer.map(|p| p.ip()), req.headers())
}

fn refused(refusal: &Refusal) -> Response<Body> {
    let mut resp = json(refusal.status, &refusal.body());
    if let Some(allow) = refusal.allow {
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    let path = req.uri().path();
    if path == WELL_KNOWN || path.strip_prefix(WELL_KNOWN) == Some(shared.settings.mcp.policy.path.as_str()) {
        return match *req.method() {
            Method::GET | Method::HEAD => resource_metadata(req, shared),
            _ => method_not_allowed("GET, HEAD"),
        };
    }
    match path {
        "/" => match *req.method() {
            Method::GET | Method::HEAD => service_info(shared),
            _ => method_not_allowed("GET, HEAD"),
        },
        "/health" => match *req.method() {
            Method::GET | Method::HEAD => health(shared),
            _ => method_not_allowed("GET, HEAD"),
        },
        _ => json(StatusCode::NOT_FOUND, &json!({"error": "not found", "path": req.uri().path()})),
    }
}

fn service_info(shared: &Shared) -> Response<Body> {
    json(
        StatusCode::OK,
        &json!({
            "service": "awswhitelist",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "MCP server for IP-whitelist rules in AWS EC2 security groups",
            "mcp_endpoint": shared.settings.mcp.policy.path,
            "transport": "streamable-http (JSON responses)",
            "health": "/health",
        }),
    )
}

fn health(shared: &Shared) -> Response<Body> {
    let id = &shared.identity;
    json(
        StatusCode::OK,
        &json!({
            "status": if shared.draining() { "draining" } else { "ok" },
            "service": "awswhitelist",
            "version": env!("CARGO_PKG_VERSION"),
            "worker": id.worker_id,
            "pid": id.pid,
            "generation": id.generation,
        }),
    )
}

/// gunicorn's per-line limits, which hyper's whole-head limit does not express.
fn check_limits(req: &Request<Incoming>, shared: &Shared) -> Option<Response<Body>> {
    let s = &shared.settings;
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > s.limit_request_line {
        return Some(json(
            StatusCode::URI_TOO_LONG,
            &json!({"error": format!("request target is {target_len} bytes; limit_request_line is {}", s.limit_request_line)}),
        ));
    }
    for (name, value) in req.headers() {
        let size = name.as_str().len() + 2 + value.len();
        if size > s.limit_request_field_size {
            return Some(json(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &json!({"error": format!("header {name} is {size} bytes; limit_request_field_size is {}", s.limit_request_field_size)}),
            ));
        }
    }
    None
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp =
        json(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method not allowed", "allow": allow}));
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// A JSON response with the right content type.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
