//! Routes → handlers. Every response is built here, so the drain rule (`Connection: close`)
//! and the request limits apply to all of them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::guard::{self, Refusal};
use crate::mcp::{Caller, Outcome, TransportMeta};
use crate::server::Shared;

/// The response body type of every handler.
pub type Body = Full<Bytes>;

/// Entry point for one request.
pub async fn handle(
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let mut resp = match check_limits(&req, &shared) {
        Some(refused) => refused,
        None if req.uri().path() == shared.settings.mcp.policy.path => mcp_endpoint(req, peer, &shared).await,
        None => route(&req, &shared),
    };
    if shared.draining() {
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    shared.request_done();
    Ok(resp)
}

/// `POST /mcp`: guard, read the body within its size and time limits, dispatch.
async fn mcp_endpoint(req: Request<Incoming>, peer: Option<SocketAddr>, shared: &Shared) -> Response<Body> {
    let mcp = &shared.settings.mcp;
    if let Err(refusal) = guard::check(&mcp.policy, req.method(), req.headers()) {
        return refused(&refusal);
    }
    let headers = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let meta = TransportMeta::from_headers(headers)
        .with_caller(Caller { client_addr: peer.map(|p| p.ip()), ..Caller::default() });
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
    match shared.dispatcher.handle_bytes(&bytes, &meta).await {
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

fn refused(refusal: &Refusal) -> Response<Body> {
    let mut resp = json(refusal.status, &refusal.body());
    if let Some(allow) = refusal.allow {
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    match req.uri().path() {
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
