//! The responses every endpoint builds from: JSON bodies, guard refusals, 405s, auth denials and
//! 429s, each with its headers (`Allow`, `WWW-Authenticate`, `Retry-After`).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Bytes, Frame, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::guard::Refusal;
use crate::auth::Denial;

/// The response body of every handler: whole (JSON, text) or an event stream. An enum, not a
/// boxed body: the box was an allocation per response.
pub enum Body {
    /// All of it at once, with its length.
    Whole(Full<Bytes>),
    /// Server-sent events, as the call produces them.
    Events(super::stream::EventBody),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Both are `Unpin`.
        match self.get_mut() {
            Body::Whole(body) => Pin::new(body).poll_frame(cx),
            Body::Events(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(body) => body.is_end_stream(),
            Body::Events(body) => body.is_end_stream(),
        }
    }

    // The whole body's exact size is what makes hyper send `Content-Length`, not chunks.
    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(body) => body.size_hint(),
            Body::Events(body) => body.size_hint(),
        }
    }
}

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Whole(Full::new(bytes.into()))
}

/// A JSON response with the right content type.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    // Straight into bytes (`to_string` goes through `fmt::Display`'s adapter and a `String`);
    // a `Value` always serialises, so the fallback is never taken.
    let mut bytes = Vec::with_capacity(512);
    if serde_json::to_writer(&mut bytes, value).is_err() {
        bytes = b"null".to_vec();
    }
    json_bytes(status, bytes.into())
}

/// A JSON response from text already serialised (a prebuilt answer).
pub fn json_text(status: StatusCode, text: String) -> Response<Body> {
    json_bytes(status, text.into())
}

fn json_bytes(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A guard's refusal (400, 403, 405, 413, 415, 408) with its `Allow` header where it has one.
pub(super) fn refused(refusal: &Refusal) -> Response<Body> {
    let mut resp = json(refusal.status, &refusal.body());
    if let Some(allow) = refusal.allow {
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// 405 with the methods the path does take.
pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp =
        json(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method not allowed", "allow": allow}));
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// 401/403 as JSON-RPC, with the challenge the MCP authorization spec asks for.
pub(super) fn denial(denial: &Denial, challenge: &str) -> Response<Body> {
    let status = StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let body =
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": denial.to_string()}});
    let mut resp = json(status, &body);
    if let Ok(v) = HeaderValue::from_str(challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

/// 429 for a request carrying more tool calls than the rate limit's burst: it could never pass,
/// so there is no `Retry-After`.
pub(super) fn too_many_calls(calls: usize, burst: u32) -> Response<Body> {
    let message = format!("this request carries {calls} tool calls, more than a client may make at once (rate_limit.burst = {burst}): every tools/call of a batch is charged; send at most {burst} per request");
    json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": message}}),
    )
}

/// 503 while the fleet's rate limits live in a Redis that does not answer and the operator
/// chose to refuse rather than guess.
pub(super) fn limits_unavailable() -> Response<Body> {
    let message = "the fleet's rate limits cannot be checked (Redis does not answer) and [redis] rate_limit_fallback = \"fail_closed\" refuses until it does; retry shortly";
    let mut resp = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": message}}),
    );
    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1u64));
    resp
}

/// 429 with `Retry-After`.
pub(super) fn rate_limited(retry_after_secs: u64) -> Response<Body> {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": format!("rate limit exceeded; retry after {retry_after_secs} s")}});
    let mut resp = json(StatusCode::TOO_MANY_REQUESTS, &body);
    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}
