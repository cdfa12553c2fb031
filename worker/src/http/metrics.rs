//! `GET /metrics`: the merged view of every worker and the supervisor, asked of the supervisor.
//! For the configured scrapers only: a direct connection from `[metrics] allow_ips` (a request
//! relayed by a proxy is not direct, whoever the proxy is), or the metrics bearer token.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::response::{json, method_not_allowed};
use super::{Body, State};
use crate::settings::MetricsAccess;

/// How long `/metrics` waits for the supervisor's merged view.
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers `/metrics`.
pub(super) async fn endpoint(
    req: &Request<Incoming>,
    peer: Option<SocketAddr>,
    state: &State,
) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return method_not_allowed("GET, HEAD");
    }
    let access = &state.settings.metrics;
    if !allowed(req, peer, access) {
        let mut resp = json(
            StatusCode::FORBIDDEN,
            &json!({"error": "metrics are for the configured scrapers: metrics.allow_ips, or the metrics bearer token"}),
        );
        if access.token_digest.is_some() {
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"metrics\""));
        }
        return resp;
    }
    // Our own latest figures first, so the answer includes everything this worker did.
    state.outbox.send(supervisor::ipc::WorkerMessage::Metrics { families: state.metrics.snapshot() });
    match state.outbox.metrics_text(METRICS_TIMEOUT).await {
        Some(text) => {
            let mut resp = Response::new(super::response::full(text));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            resp
        }
        None => {
            json(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "the supervisor did not answer in time"}))
        }
    }
}

/// The token (compared in constant time) from anywhere, or a direct connection from the list.
fn allowed(req: &Request<Incoming>, peer: Option<SocketAddr>, access: &MetricsAccess) -> bool {
    if let Some(expected) = &access.token_digest {
        let presented = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(token) =
            presented.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        {
            let got = crate::auth::apikey::sha256(token.trim());
            if aws_lc_rs::constant_time::verify_slices_are_equal(&got, expected).is_ok() {
                return true;
            }
        }
    }
    let forwarded =
        ["forwarded", "x-forwarded-for", "x-real-ip"].iter().any(|h| req.headers().contains_key(*h));
    !forwarded
        && match peer {
            Some(p) => access.allow.is_trusted(p.ip()),
            None => access.allow.trusts_unix(),
        }
}
