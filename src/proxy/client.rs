//! The HTTP side of the proxy: one hyper client (rustls with the aws-lc-rs provider for
//! `https://`), the POST for each message with the headers the stream has earned, and the reading
//! of its answer, whole JSON or `text/event-stream`, onto stdout.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use worker::mcp::parse_json;

use super::wire::{
    learn_param_headers, param_headers, routing_headers, unlisted_tool, EventStream, ParamHeaders,
};
use super::{Failure, Pending, ProxyError, MAX_RESPONSE, QUOTED_BODY};
use crate::cli::ProxyArgs;
use crate::stdio::{is_blank, LineWriter};

/// Most `tools/list` pages the proxy reads to learn one tool's header parameters.
const MAX_LIST_PAGES: usize = 20;

/// The server and what this stream has learned about it.
pub(super) struct Remote {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    /// The URL for messages and logs: no query string, which may hold secrets.
    pub(super) shown: String,
    auth: Option<HeaderValue>,
    pub(super) timeout: Duration,
    state: Mutex<Negotiated>,
}

/// Learned from answers: the revision `initialize` settled on, the server's session id, and
/// the `x-mcp-header` parameters of the tools it listed.
#[derive(Default)]
struct Negotiated {
    version: Option<String>,
    session: Option<HeaderValue>,
    params: ParamHeaders,
}

impl Remote {
    pub(super) fn new(args: &ProxyArgs) -> Result<Remote, ProxyError> {
        let url = parse_url(&args.url).map_err(ProxyError::Setup)?;
        let shown = format!("{}://{}{}", url.scheme_str().unwrap_or("http"), host_of(&url), url.path());
        if url.scheme_str() == Some("http") && !args.allow_insecure_http && !is_loopback(&url) {
            return Err(ProxyError::Setup(format!(
                "MCP_REMOTE_URL {shown:?} is plain http:// to a host that is not loopback: the token and \
                 every message would cross the network in clear; use an https:// URL, or pass \
                 --allow-insecure-http (MCP_ALLOW_INSECURE_HTTP=true) to send them anyway",
            )));
        }
        if url.scheme_str() == Some("http") && !is_loopback(&url) {
            tracing::warn!(event = "insecure_http", url = %shown, "sending the token over plain http:// (--allow-insecure-http)");
        }
        let auth = match args.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    ProxyError::Setup(
                        "MCP_AUTH_TOKEN holds characters that cannot be sent in a header".into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(args.timeout));
        http.set_nodelay(true);
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = if url.scheme_str() == Some("https") {
            tls.with_provider_and_native_roots(provider)
                .map_err(|e| {
                    ProxyError::Setup(format!(
                        "no usable CA certificates for {shown} ({e}); install the system CA bundle \
                         (ca-certificates) or point SSL_CERT_FILE at one"
                    ))
                })?
                .https_only()
        } else {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ProxyError::Setup(format!("TLS setup failed: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            tls.with_tls_config(config).https_or_http()
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(tls.enable_http1().wrap_connector(http));
        let state = Mutex::new(Negotiated::default());
        Ok(Remote { client, url, shown, auth, timeout: args.timeout, state })
    }

    fn negotiated(&self) -> std::sync::MutexGuard<'_, Negotiated> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The POST for one message, with the headers this stream has earned so far.
    fn request(&self, message: &Value) -> Result<Request<Full<Bytes>>, Failure> {
        let body = serde_json::to_vec(message).map_err(|e| Failure::Invalid(e.to_string()))?;
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.url.clone();
        let headers = req.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let state = self.negotiated();
        if let Some(session) = &state.session {
            headers.insert("mcp-session-id", session.clone());
        }
        for (name, value) in routing_headers(message, state.version.as_deref()) {
            headers.insert(name, value);
        }
        for (name, value) in param_headers(message, &state.params) {
            headers.insert(name, value);
        }
        Ok(req)
    }

    /// Sends one message and prints what comes back; answered ids leave `pending`.
    pub(super) async fn exchange(
        &self,
        message: &Value,
        out: &LineWriter,
        pending: &mut Pending,
    ) -> Result<(), Failure> {
        self.learn_tools_for(message).await;
        let req = self.request(message)?;
        let resp = self.client.request(req).await.map_err(|e| Failure::Connect(root_cause(&e)))?;
        let (parts, body) = resp.into_parts();
        pending.status = Some(parts.status);
        if let Some(session) = parts.headers.get("mcp-session-id") {
            self.negotiated().session = Some(session.clone());
        }
        let content_type = header_str(&parts.headers, CONTENT_TYPE.as_str()).to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") && parts.status.is_success() {
            return self.read_events(body, out, pending).await;
        }
        let limit = if parts.status.is_success() { MAX_RESPONSE } else { 1024 * 1024 };
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return Err(Failure::Invalid(format!("the response could not be read: {e}"))),
        };
        let parsed = (!is_blank(&bytes)).then(|| parse_json(&bytes));
        match (parts.status.is_success(), parsed) {
            (true, None) => Ok(()), // 202 for notifications and responses
            (_, Some(Ok(value))) if is_jsonrpc(&value) => {
                self.emit(value, out, pending);
                Ok(())
            }
            (true, Some(Ok(_))) => Err(Failure::Invalid("the body is JSON but not JSON-RPC".into())),
            (true, Some(Err(e))) => Err(Failure::Invalid(format!("{content_type:?} body: {e}"))),
            (false, _) => Err(Failure::Http {
                status: parts.status,
                challenge: parts.headers.contains_key(WWW_AUTHENTICATE),
                body: quote(&bytes),
            }),
        }
    }

    /// Before a 2026-07-28 `tools/call` of a tool this proxy has not seen listed: lists the
    /// tools itself (with the call's `_meta`, a page at a time, the answers kept to itself) so
    /// the call carries the `Mcp-Param-*` headers the server requires. A failure here is left
    /// to the call itself to report.
    async fn learn_tools_for(&self, message: &Value) {
        let Some(tool) = unlisted_tool(message, &self.negotiated().params).map(str::to_owned) else {
            return;
        };
        let meta = message.pointer("/params/_meta").cloned().unwrap_or(Value::Null);
        let mut cursor: Option<String> = None;
        for page in 0..MAX_LIST_PAGES {
            let mut params = serde_json::json!({ "_meta": meta });
            if let Some(c) = &cursor {
                params["cursor"] = Value::String(c.clone());
            }
            let list = serde_json::json!({"jsonrpc": "2.0", "id": format!("awswl-proxy-list-{page}"),
                "method": "tools/list", "params": params});
            let Ok(req) = self.request(&list) else { return };
            let Ok(resp) = self.client.request(req).await else { return };
            if !resp.status().is_success() {
                return;
            }
            let Ok(body) = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await else { return };
            let Ok(answer) = parse_json(&body.to_bytes()) else { return };
            learn_param_headers(&answer, &mut self.negotiated().params);
            cursor = answer.pointer("/result/nextCursor").and_then(Value::as_str).map(str::to_owned);
            if cursor.is_none() || self.negotiated().params.contains_key(&tool) {
                return;
            }
        }
    }

    /// Prints each JSON-RPC message of an event stream as its event arrives.
    async fn read_events(
        &self,
        mut body: Incoming,
        out: &LineWriter,
        pending: &mut Pending,
    ) -> Result<(), Failure> {
        let mut events = EventStream::default();
        let mut done = false;
        while !done {
            let mut data = Vec::new();
            match body.frame().await {
                None => {
                    events.finish(&mut data);
                    done = true;
                }
                Some(Err(e)) => {
                    return Err(Failure::Invalid(format!("the event stream broke: {}", root_cause(&e))))
                }
                Some(Ok(frame)) => {
                    if let Ok(chunk) = frame.into_data() {
                        events.feed(&chunk, &mut data)?;
                    }
                }
            }
            for text in data.iter().filter(|d| !d.trim().is_empty()) {
                match parse_json(text.as_bytes()) {
                    Ok(value) => self.emit(value, out, pending),
                    Err(e) => {
                        tracing::warn!(event = "bad_event", error = %e, "ignored an event that is not JSON")
                    }
                }
            }
        }
        Ok(())
    }

    /// Prints the messages of one answer (each batch element on its own line), noting which
    /// requests they answer; an error whose id the server could not read gets ours back.
    fn emit(&self, value: Value, out: &LineWriter, pending: &mut Pending) {
        let items = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        for mut item in items {
            let is_response =
                item.get("method").is_none() && (item.get("result").is_some() || item.get("error").is_some());
            if is_response {
                if item.get("id").is_none_or(Value::is_null) && pending.ids.len() == 1 {
                    item["id"] = pending.ids[0].clone();
                }
                pending.ids.retain(|id| Some(id) != item.get("id"));
                learn_param_headers(&item, &mut self.negotiated().params);
                if pending.initialize {
                    if let Some(v) = item.pointer("/result/protocolVersion").and_then(Value::as_str) {
                        self.negotiated().version = Some(v.to_owned());
                    }
                }
            }
            if pending.silent {
                tracing::warn!(event = "answer_to_notification", message = %item, "not printed");
            } else {
                out.send(item);
            }
        }
    }
}

fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.trim().parse().map_err(|e| format!("MCP_REMOTE_URL {text:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("MCP_REMOTE_URL {text:?} must be an http:// or https:// URL with a host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("MCP_REMOTE_URL must not hold credentials; pass the token in MCP_AUTH_TOKEN".into());
    }
    Ok(uri)
}

/// Whether the URL's host is this machine: `localhost` or a loopback address.
fn is_loopback(uri: &Uri) -> bool {
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn host_of(uri: &Uri) -> &str {
    uri.authority().map_or("", |a| a.as_str())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn is_jsonrpc(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty() && items.iter().all(is_jsonrpc),
        v => v.get("jsonrpc").and_then(Value::as_str) == Some("2.0"),
    }
}

/// The start of an error page, as text, for the error's `data`.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The innermost cause ("Connection refused (os error 111)"), which says what to fix.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
