//! `POST /mcp`, as a short pipeline of steps, each of which may answer instead of the next:
//! guard (method, Host, Origin, size, content type) → failed-auth limit (consulted before any
//! credential is verified) → authenticate → rate limit, a client already out of tokens → read
//! the body within its size and time → parse → rate limit, charged for every `tools/call` the
//! request carries (at least one), all or nothing → scope of every tool call → caller →
//! signed session (`Mcp-Session-Id`, 404 when it does not verify) → a client's answer to one of
//! our questions is routed to the worker waiting for it (202) → dispatch within
//! `mcp.request_timeout`; a legacy `tools/call` that asks the client something answers with an
//! event stream instead (see [`super::stream`]), within `request_timeout` plus the consent TTL.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::FutureExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};
use supervisor::ipc::WorkerMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::guard::{self, Refusal};
use super::response::{
    denial, full, json, json_text, limits_unavailable, rate_limited, refused, too_many_calls,
};
use super::stream::{self, EventBody, StreamRequester};
use super::{session, Body, State};
use crate::auth::{Authenticated, Denial, SCOPE_WRITE};
use crate::caller::Caller;
use crate::mcp::{parse_json, Outcome, Registry, RequesterHandle, TransportMeta};
use crate::ratelimit::{Decision, Limiter, Unavailable};

/// Runs the pipeline for one request; `client_addr` is the client as the trusted proxies
/// resolved it (see `super::client_addr`).
pub(super) async fn endpoint(
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
    client_addr: Option<IpAddr>,
    state: &Arc<State>,
    request_id: &Arc<str>,
    mcp_method: &mut Option<&'static str>,
) -> Response<Body> {
    let policy = &state.settings.mcp.policy;
    if let Err(refusal) = guard::check(policy, req.method(), req.headers()) {
        return refused(&refusal);
    }
    let principal = match authenticate(&req, peer, client_addr, state).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let requests = state.limits.as_ref().map(|l| &l.requests);
    // Built only when there is a limit to key.
    let client_key = requests.map(|_| {
        if state.auth.enabled() {
            Cow::Borrowed(principal.identity_key())
        } else {
            Cow::Owned(address_key(client_addr))
        }
    });
    // A client already out of tokens is answered before its body is read.
    if let Some(limited) = peek(requests, client_key.as_deref()).await {
        state.metrics.rate_limited.inc();
        return limited;
    }
    let headers = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let mut meta = TransportMeta::from_headers(headers);
    let accepts_events = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("text/event-stream")));
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, state).await {
        Ok(b) => b,
        Err(refusal) => return refused(&refusal),
    };
    let message = parse_json(&bytes);
    let calls = message.as_ref().map_or(0, |m| called_tools(m).count());
    if let (Some(limiter), Some(key)) = (requests, &client_key) {
        if let Some(limited) = charge(limiter, key, calls).await {
            state.metrics.rate_limited.inc();
            return limited;
        }
    }
    let message = match message {
        Ok(v) => v,
        Err(e) => return json(StatusCode::BAD_REQUEST, &e.to_response()),
    };
    let registry = state.dispatcher.registry();
    // Whether the message may change anything: decides below whether it is finished past the
    // deadline (a task of its own) or dispatched in place, and whether it may ask the client.
    let changes = called_tools(&message).any(|name| may_change(registry, name));
    if state.auth.enabled() {
        let resources =
            state.dispatcher.resources().and_then(|r| r.scope()).filter(|_| reads_resources(&message));
        let tools = called_tools(&message).map(|name| needed_scope(registry, name));
        for needed in tools.chain(resources.map(Some)) {
            if let Err(d) = principal.require(needed) {
                state.metrics.auth_failures.with_label_values(&[denial_reason(&d)]).inc();
                let metadata_url = metadata_url(&parts.headers, peer, state);
                return denial(&d, &state.auth.www_authenticate(&d, &metadata_url));
            }
        }
    }
    meta.caller = Arc::new(principal.caller(state.auth.enabled(), client_addr, request_id));
    let session = match parts.headers.get(session::HEADER) {
        None => None,
        Some(raw) => match raw.to_str().ok().and_then(|id| state.sessions.verify(id, now())) {
            Some(s) => Some(s),
            None => {
                let error = rpc_error(
                    message.get("id").cloned().unwrap_or(Value::Null),
                    SESSION_NOT_FOUND,
                    "Session not found: this Mcp-Session-Id was not issued by this service or has expired; initialize again",
                );
                return json(StatusCode::NOT_FOUND, &error);
            }
        },
    };
    if let Some(answer) = answer_to_us(&message) {
        return route_answer(answer, &meta.caller, state);
    }
    let mut events = None;
    if let Some(s) = session {
        meta.session_capabilities = Some(s.capabilities);
        // Only a change asks the client (consent); a read never needs the event stream.
        if accepts_events && changes {
            let (tx, rx) = mpsc::unbounded_channel();
            let requester = StreamRequester {
                events: tx,
                waiters: state.waiters.clone(),
                identity: meta.caller.identity.as_deref().map(str::to_owned),
            };
            meta.requester = Some(RequesterHandle(Arc::new(requester)));
            events = Some(rx);
        }
    }
    let declared = initialize_capabilities(&message);
    dispatch(message, changes, meta, state, events, declared, mcp_method).await
}

/// JSON-RPC error code of an unknown session (the transport's 404).
const SESSION_NOT_FOUND: i64 = -32001;

fn now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// The capabilities an `initialize` declares (a session id is issued when they need one).
fn initialize_capabilities(message: &Value) -> Option<Map<String, Value>> {
    if message.get("method")?.as_str()? != "initialize" {
        return None;
    }
    message.get("params")?.get("capabilities")?.as_object().cloned()
}

/// A client's JSON-RPC response to a question this service asked (an id of ours).
fn answer_to_us(message: &Value) -> Option<&Value> {
    let id = message.get("id")?.as_str()?;
    let is_response = message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some());
    (is_response && stream::owner_pid(id).is_some()).then_some(message)
}

/// Hands a client's answer to the worker waiting for it: this one, or another through the
/// supervisor. The POST is answered 202 either way.
fn route_answer(answer: &Value, caller: &Caller, state: &State) -> Response<Body> {
    let owner = answer.get("id").and_then(Value::as_str).and_then(stream::owner_pid).unwrap_or(0);
    tracing::info!(
        event = "consent_answer",
        worker = i64::from(state.identity.worker_id),
        owner_pid = owner,
        via = "elicitation",
        "a client's answer to a question arrived on this worker"
    );
    if u32::try_from(owner).ok() == Some(state.identity.pid) {
        deliver(state, answer.clone(), caller.identity.as_deref());
    } else {
        let payload = stream::forward_payload(answer, caller.identity.as_deref());
        state.outbox.send(WorkerMessage::Forward { to_pid: owner, payload });
    }
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

fn deliver(state: &State, answer: Value, identity: Option<&str>) {
    if let Err(why) = state.waiters.deliver(answer, identity) {
        tracing::warn!(event = "answer_undelivered", reason = ?why, "a client's answer found no question waiting for it");
    }
}

/// Delivers an answer another worker received for one of this worker's questions.
pub fn deliver_forwarded(state: &State, payload: &str) {
    if let Err(why) = stream::deliver_forwarded(&state.waiters, payload) {
        tracing::warn!(event = "answer_undelivered", reason = ?why, "a forwarded answer found no question waiting for it");
    }
}

/// The principal, or the 401/429 to answer. An address over its failed-authentication limit is
/// refused before its credential is even verified (so guessing is slowed, and a right guess is
/// not told so); a failed credential is charged to that limit, a valid one is not.
async fn authenticate(
    req: &Request<Incoming>,
    peer: Option<SocketAddr>,
    client_addr: Option<IpAddr>,
    state: &State,
) -> Result<Arc<Authenticated>, Response<Body>> {
    let failures = state.limits.as_ref().map(|l| &l.auth_failures).filter(|_| state.auth.enabled());
    let key = failures.map(|_| address_key(client_addr));
    if let Some(limited) = peek(failures, key.as_deref()).await {
        state.metrics.rate_limited.inc();
        return Err(limited);
    }
    let authorization = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.authenticate(authorization).await {
        Ok(p) => Ok(p),
        Err(d) => {
            state.metrics.auth_failures.with_label_values(&[denial_reason(&d)]).inc();
            if d.is_failed_credential() {
                if let Some(limited) = match (failures, &key) {
                    (Some(l), Some(key)) => decided(l.check_n(key, 1).await),
                    _ => None,
                } {
                    state.metrics.rate_limited.inc();
                    return Err(limited);
                }
            }
            Err(denial(&d, &state.auth.www_authenticate(&d, &metadata_url(req.headers(), peer, state))))
        }
    }
}

/// The rate-limit key of an address: IPv4 by address, IPv6 by its /64 (what one client, one
/// LAN, usually gets whole, so that rotating addresses within it buys nothing), Unix-socket
/// peers all one.
fn address_key(client_addr: Option<IpAddr>) -> String {
    match client_addr.map(|a| a.to_canonical()) {
        None => "ip:unix".to_string(),
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("ip:{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
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

/// Hands the message to the dispatcher, counts it, and turns the outcome into a response. A
/// message that may change something (a call of a tool not declared read-only) is dispatched
/// as a task of its own: past `mcp.request_timeout` the client is answered with an error, while
/// the task finishes what it started (a change under way is completed and audited, never cut
/// between EC2 and the audit log). Anything else changes nothing and is dispatched in place:
/// at the deadline, or when the client goes away, it is simply stopped.
async fn dispatch(
    message: Value,
    changes: bool,
    meta: TransportMeta,
    state: &Arc<State>,
    events: Option<mpsc::UnboundedReceiver<Value>>,
    declared: Option<Map<String, Value>>,
    mcp_method: &mut Option<&'static str>,
) -> Response<Body> {
    let method = match &message {
        Value::Array(_) => "batch",
        m => crate::metrics::Metrics::method_label(m.get("method").and_then(|v| v.as_str()).unwrap_or("")),
    };
    // Bounded like the metric label, so the request's log lines and its access line say
    // which MCP method this was.
    tracing::Span::current().record("mcp_method", method);
    *mcp_method = Some(method);
    let started = std::time::Instant::now();
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let timeout = state.settings.mcp.request_timeout;
    let deadline = Instant::now() + timeout;
    let finished = if !changes {
        // Nothing that changes anything: answered here, and simply dropped at the deadline
        // (a task of its own costs a spawn and a wake-up per request).
        let handled = std::panic::AssertUnwindSafe(state.dispatcher.handle(message, &meta)).catch_unwind();
        tokio::time::timeout_at(deadline, handled).await.map(|r| r.map_err(|_| Failed::Panicked))
    } else {
        let mut task = tokio::spawn({
            let state = state.clone();
            async move { state.dispatcher.handle(message, &meta).await }
        });
        match events {
            None => tokio::time::timeout_at(deadline, &mut task).await.map(|r| r.map_err(Failed::Join)),
            Some(mut events) => tokio::select! {
                finished = tokio::time::timeout_at(deadline, &mut task) => finished.map(|r| r.map_err(Failed::Join)),
                // The call asks the client something: answer with an event stream from here on.
                Some(first) = events.recv() => {
                    return event_stream(first, events, task, id, method, started, state.clone());
                }
            },
        }
    };
    let outcome = settle(finished, id, timeout, changes);
    state.metrics.mcp_request(method, succeeded(&outcome), started.elapsed().as_secs_f64());
    let issued = declared.and_then(|caps| {
        let version = outcome.negotiated_version()?;
        state.sessions.issue(&caps, version.as_str(), now())
    });
    let mut resp = match outcome {
        Outcome::Reply(body) => json(StatusCode::OK, &body),
        Outcome::Raw(raw) => json_text(StatusCode::OK, raw.into_text()),
        Outcome::Accepted => {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::ACCEPTED;
            resp
        }
        Outcome::Reject { http_status, body } => {
            json(StatusCode::from_u16(http_status).unwrap_or(StatusCode::BAD_REQUEST), &body)
        }
    };
    if let Some(v) = issued.and_then(|id| HeaderValue::from_str(&id).ok()) {
        resp.headers_mut().insert(session::HEADER, v);
    }
    resp
}

/// Why a dispatch ended without an outcome.
#[derive(Debug, thiserror::Error)]
enum Failed {
    /// The dispatch task failed (panicked, or was cancelled by the runtime shutting down).
    #[error("{0}")]
    Join(tokio::task::JoinError),
    /// A dispatch answered in place panicked.
    #[error("the dispatch panicked")]
    Panicked,
}

/// The outcome of a dispatch that finished, failed, or outlasted `limit`; `changes`: it was
/// left to finish (a change), rather than stopped (a read).
fn settle(
    finished: Result<Result<Outcome, Failed>, tokio::time::error::Elapsed>,
    id: Value,
    limit: std::time::Duration,
    changes: bool,
) -> Outcome {
    match finished {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            tracing::error!(event = "dispatch_failed", error = %e, "the request's dispatch failed: {e}");
            Outcome::Reply(rpc_error(id, INTERNAL_ERROR, "internal error while handling the request"))
        }
        Err(_) => {
            let limit = limit.as_secs_f64();
            let (fate, advice) = if changes {
                ("left to finish", "; a change it makes is still completed and audited: check with whitelist_list before retrying")
            } else {
                ("stopped (it changes nothing)", " and was stopped; it changes nothing, so it can be retried")
            };
            tracing::warn!(
                event = "request_timeout",
                timeout_s = limit,
                "request outlasted mcp.request_timeout; answered, and {fate}"
            );
            let message =
                format!("the request did not finish within {limit} s (mcp.request_timeout){advice}");
            Outcome::Reply(rpc_error(id, REQUEST_TIMEOUT, &message))
        }
    }
}

fn succeeded(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Reply(Value::Array(replies)) => replies.iter().all(|r| r.get("error").is_none()),
        Outcome::Reply(body) => body.get("error").is_none(),
        Outcome::Raw(_) | Outcome::Accepted => true,
        Outcome::Reject { .. } => false,
    }
}

/// Answers a call that asks the client something with `text/event-stream`: `first` (the
/// question), any further ones, then the call's own response; the stream closes after it. The
/// call may take `mcp.request_timeout` plus the time a person has to answer.
fn event_stream(
    first: Value,
    mut events: mpsc::UnboundedReceiver<Value>,
    mut task: JoinHandle<Outcome>,
    id: Value,
    method: &'static str,
    started: std::time::Instant,
    state: Arc<State>,
) -> Response<Body> {
    let (body, chunks) = mpsc::unbounded_channel();
    let _ = body.send(stream::event(&first));
    let limit = state.settings.mcp.request_timeout + state.settings.whitelist.consent_ttl;
    tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        let finished = loop {
            tokio::select! {
                finished = tokio::time::timeout_at(deadline, &mut task) => break finished.map(|r| r.map_err(Failed::Join)),
                Some(more) = events.recv() => { let _ = body.send(stream::event(&more)); }
            }
        };
        let outcome = settle(finished, id, limit, true);
        state.metrics.mcp_request(method, succeeded(&outcome), started.elapsed().as_secs_f64());
        if let Some(reply) = outcome.into_body() {
            let _ = body.send(stream::event(&reply));
        }
    });
    let mut resp = Response::new(Body::Events(EventBody(chunks)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// JSON-RPC "internal error".
const INTERNAL_ERROR: i64 = -32603;
/// JSON-RPC server-error code for a request that outlasted `mcp.request_timeout`.
const REQUEST_TIMEOUT: i64 = -32000;

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
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

/// 429 with Retry-After when a limiter decided so; 503 when the fleet's limits cannot be
/// consulted and `[redis] rate_limit_fallback = "fail_closed"`.
fn decided(decision: Result<Decision, Unavailable>) -> Option<Response<Body>> {
    match decision {
        Ok(d) => Some(rate_limited(d.retry_after_secs()?)),
        Err(Unavailable) => Some(limits_unavailable()),
    }
}

/// [`decided`] for a look at `key`'s bucket that takes nothing.
async fn peek(limiter: Option<&Limiter>, key: Option<&str>) -> Option<Response<Body>> {
    decided(limiter?.peek(key?).await)
}

/// Charges a request carrying `calls` tool calls (at least one token), all or nothing; the 429
/// to answer if it does not fit.
async fn charge(limiter: &Limiter, key: &str, calls: usize) -> Option<Response<Body>> {
    let burst = limiter.limits().burst;
    match u32::try_from(calls.max(1)) {
        Ok(cost) if cost <= burst => decided(limiter.check_n(key, cost).await),
        _ => Some(too_many_calls(calls, burst)),
    }
}

/// The scope a call of `name` needs: the tool's own; a name no tool has needs the widest, so a
/// caller learns nothing about which tools exist beyond its scopes (fail closed).
fn needed_scope(registry: &Registry, name: &str) -> Option<&'static str> {
    registry.get(name).map_or(Some(SCOPE_WRITE), |t| t.spec().scope)
}

/// Names of the tools a message (or batch) calls: one per `tools/call`, the rate limit's cost.
fn called_tools(message: &Value) -> impl Iterator<Item = &str> {
    // Walked where needed rather than collected: a check is one call.
    let batch = match message {
        Value::Array(batch) => batch.as_slice(),
        m => std::slice::from_ref(m),
    };
    batch.iter().filter_map(called_tool)
}

/// The message (or a message of the batch) lists or reads resources.
fn reads_resources(message: &Value) -> bool {
    let one =
        |m: &Value| m.get("method").and_then(Value::as_str).is_some_and(|m| m.starts_with("resources/"));
    match message {
        Value::Array(batch) => batch.iter().any(one),
        m => one(m),
    }
}

/// A call of `name` may change something: the tool is not declared read-only, or no tool has
/// the name (fail closed: it is finished like a change).
fn may_change(registry: &Registry, name: &str) -> bool {
    registry.get(name).is_none_or(|t| !t.spec().annotations.read_only)
}

fn called_tool(m: &Value) -> Option<&str> {
    if m.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    // Not `pointer`: it splits and unescapes its path on every call.
    m.get("params")?.get("name")?.as_str()
}

/// The canonical URI of this MCP endpoint, as clients reach it: `X-Forwarded-Proto` is believed
/// only from a trusted proxy (`peer` in `forwarded_allow_ips`).
pub(super) fn resource_uri(headers: &HeaderMap, peer: Option<SocketAddr>, state: &State) -> String {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let trusted = state.settings.forwarded.trusts_peer(peer.map(|p| p.ip()));
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| trusted && matches!(*p, "http" | "https"))
        .unwrap_or("http");
    format!("{proto}://{host}{}", state.settings.mcp.policy.path)
}

fn metadata_url(headers: &HeaderMap, peer: Option<SocketAddr>, state: &State) -> String {
    state.auth.resource_metadata_url().unwrap_or_else(|| {
        crate::auth::metadata_url_for(&resource_uri(headers, peer, state)).unwrap_or_default()
    })
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

    /// A tool that only declares itself.
    struct Declared(crate::mcp::ToolSpec);

    impl crate::mcp::Tool for Declared {
        fn spec(&self) -> &crate::mcp::ToolSpec {
            &self.0
        }
        fn call<'a>(
            &'a self,
            _: Map<String, Value>,
            _: &'a crate::mcp::CallContext,
        ) -> crate::mcp::ToolFuture<'a> {
            Box::pin(async { Ok(crate::mcp::ToolOutput::text("ok")) })
        }
    }

    #[test]
    fn only_a_call_of_a_read_only_tool_is_dispatched_in_place() {
        let mut registry = crate::tools::standard_registry(10).unwrap_or_else(|e| panic!("{e}"));
        for (name, read_only) in [("reads", true), ("changes", false)] {
            let spec = crate::mcp::ToolSpec {
                name: name.into(),
                title: None,
                description: name.into(),
                input_schema: serde_json::json!({"type": "object"}),
                output_schema: None,
                annotations: crate::mcp::ToolAnnotations { read_only, ..Default::default() },
                scope: None,
            };
            registry.register(Arc::new(Declared(spec))).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(!may_change(&registry, "service_status"), "a built-in read");
        assert!(!may_change(&registry, "reads"));
        assert!(may_change(&registry, "changes"), "a tool not declared read-only is finished like a change");
        assert!(may_change(&registry, "some_future_tool"), "an unknown name is treated as a change");
    }
}
