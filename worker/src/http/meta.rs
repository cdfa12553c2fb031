//! The small routes beside MCP: `GET /` (what this service is), `GET /health` (which worker
//! answered, and whether it is draining), and the RFC 9728 protected resource metadata.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::response::{json, method_not_allowed};
use super::{Body, State};

/// Where RFC 9728 puts the protected resource metadata.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Every path that is neither the MCP endpoint nor `/metrics`.
pub(super) fn route(req: &Request<Incoming>, peer: Option<SocketAddr>, state: &State) -> Response<Body> {
    let path = req.uri().path();
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let mcp_path = state.settings.mcp.policy.path.as_str();
    if path == WELL_KNOWN || path.strip_prefix(WELL_KNOWN) == Some(mcp_path) {
        return if read_only { resource_metadata(req, peer, state) } else { method_not_allowed("GET, HEAD") };
    }
    match path {
        "/" if read_only => service_info(state),
        "/health" if read_only => health(state),
        "/" | "/health" => method_not_allowed("GET, HEAD"),
        _ => json(StatusCode::NOT_FOUND, &json!({"error": "not found", "path": path})),
    }
}

/// RFC 9728 protected resource metadata, at the well-known path and at it + the MCP path.
fn resource_metadata(req: &Request<Incoming>, peer: Option<SocketAddr>, state: &State) -> Response<Body> {
    if !state.auth.enabled() {
        return json(
            StatusCode::NOT_FOUND,
            &json!({"error": "authentication is not enabled on this server"}),
        );
    }
    let resource = state.auth.audience_or(&super::mcp::resource_uri(req.headers(), peer, state));
    json(StatusCode::OK, &state.auth.protected_resource_metadata(&resource))
}

fn service_info(state: &State) -> Response<Body> {
    json(
        StatusCode::OK,
        &json!({
            "service": "awswhitelist",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "MCP server for IP-whitelist rules in AWS EC2 security groups",
            "mcp_endpoint": state.settings.mcp.policy.path,
            "transport": "streamable-http (JSON responses)",
            "health": "/health",
        }),
    )
}

fn health(state: &State) -> Response<Body> {
    let id = &state.identity;
    // Degraded, not down: without Redis the service still answers, on its fallbacks.
    let redis_down = state.fleet.as_ref().and_then(|f| f.down_reason());
    let status = match (state.draining(), &redis_down) {
        (true, _) => "draining",
        (false, Some(_)) => "degraded",
        (false, None) => "ok",
    };
    let mut body = json!({
            "status": status,
            "service": "awswhitelist",
            "version": env!("CARGO_PKG_VERSION"),
            "worker": id.worker_id,
            "pid": id.pid,
            "generation": id.generation,
    });
    if let Some(reason) = redis_down {
        body["degraded"] = json!({"redis": format!("redis does not answer ({reason}); rate limits, consent records, group locks, read single flight and the sweeper on their [redis] fallbacks")});
    }
    json(StatusCode::OK, &body)
}
