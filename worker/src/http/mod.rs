//! The HTTP edge of a worker: routes → handlers, one file per endpoint. Every response passes
//! through [`handle`], so the drain rule (`Connection: close`), the per-line request limits, the
//! request id and the access-log line apply to all of them.
//!
//! May import: `mcp`, `auth`, `ratelimit`, `metrics`, `channel`, `caller`, `settings`.
//! Imported by: `process` (which builds the [`State`] and serves connections with [`handle`]).
//! Nothing here knows about EC2 or the whitelist domain.

mod access;
pub mod forwarded;
pub mod guard;
mod mcp;
mod meta;
mod metrics;
mod response;
pub mod session;
pub mod state;
pub mod stream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tracing::Instrument;

pub use access::{send_json_lines_to, JsonLineSink};
pub use mcp::deliver_forwarded;
pub use response::Body;
pub use state::{ConnectionGuard, Identity, State};

use response::json;

/// Entry point for one request: gives it a request id (the client's `X-Request-Id` when sane),
/// runs it inside a span carrying that id — so every log line of the request has it — echoes
/// the id, and writes one access-log line.
pub async fn handle(
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
    state: Arc<State>,
) -> Result<Response<Body>, Infallible> {
    let request_id = access::request_id(&req);
    let span = tracing::info_span!("request", request_id = &*request_id, mcp_method = tracing::field::Empty);
    let started = std::time::Instant::now();
    // Resolved once: the access line and the MCP endpoint both need it.
    let client = client_addr(&req, peer, &state);
    let line = access::Access::read(&req, client);
    let mut mcp_method = None;
    let mut resp = async {
        match check_limits(&req, &state) {
            Some(refused) => refused,
            None if !state.auth.enabled() && !guard::local_peer(peer) => {
                response::refused(&guard::unauthenticated_peer(peer))
            }
            None if req.uri().path() == state.settings.mcp.policy.path => {
                mcp::endpoint(req, peer, client, &state, &request_id, &mut mcp_method).await
            }
            None if req.uri().path() == "/metrics" => metrics::endpoint(&req, peer, &state).await,
            None => meta::route(&req, peer, &state),
        }
    }
    .instrument(span.clone())
    .await;
    if state.draining() {
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    line.log(&resp, started, &request_id, mcp_method, &span);
    state.metrics.http_request(resp.status().as_u16());
    state.request_done();
    Ok(resp)
}

/// The request id's header; a constant, so naming it costs no copy per response.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client as the request tells it: through trusted proxies only, else the TCP peer.
fn client_addr(req: &Request<Incoming>, peer: Option<SocketAddr>, state: &State) -> Option<std::net::IpAddr> {
    state.settings.forwarded.client_addr(peer.map(|p| p.ip()), req.headers())
}

/// gunicorn's per-line limits, which hyper's whole-head limit does not express.
fn check_limits(req: &Request<Incoming>, state: &State) -> Option<Response<Body>> {
    let s = &state.settings;
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
