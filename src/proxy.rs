//! `awswhitelist proxy`: an MCP client that only speaks stdio, bridged to a remote server over
//! Streamable HTTP (`POST` per message), for assistants that cannot reach a URL themselves.
//!
//! Each stdin line is forwarded as soon as it is read; requests run concurrently and every
//! answer is printed as one line when it arrives (`initialize` alone is awaited first, so its
//! negotiated revision and any `Mcp-Session-Id` apply to everything after it). A request that
//! fails (connection refused, timeout, an HTTP error page from nginx, a body that is not
//! JSON-RPC) is answered locally with a JSON-RPC error carrying its `id` and the cause;
//! notifications never print anything, their failures go to the log on stderr. JSON and
//! `text/event-stream` responses are both understood; batches print one line per element.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::task::JoinSet;
use worker::mcp::era::META_PROTOCOL_VERSION;
use worker::mcp::parse_json;

use crate::cli::ProxyArgs;
use crate::stdio::{is_blank, read_line, too_long_response, Line, LineWriter};

/// Longest stdin line forwarded; the server applies its own (usually smaller) limit.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Largest response read, whole JSON body or one event-stream line.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// JSON-RPC error code for transport failures (implementation-defined server-error range).
const TRANSPORT_ERROR: i64 = -32000;
/// JSON-RPC error code for a request with no answer in time (the code the MCP SDKs use).
const REQUEST_TIMEOUT: i64 = -32001;
/// How much of an HTTP error page is quoted back to the person reading the error.
const QUOTED_BODY: usize = 300;

/// Why the proxy stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The URL, the token or the TLS setup cannot work; nothing was sent.
    #[error("{0}")]
    Setup(String),
    /// Reading stdin or writing stdout failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Forwards stdin to the remote server until stdin ends and in-flight requests are settled.
pub fn run(args: &ProxyArgs) -> Result<(), ProxyError> {
    let remote = Arc::new(Remote::new(args)?);
    tracing::info!(event = "proxy_started", url = %remote.shown, timeout_s = args.timeout.as_secs_f64());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(serve(remote, tokio::io::stdin(), tokio::io::stdout()));
    // A read of stdin cannot be cancelled; do not wait for one still blocked (stdout closed first).
    runtime.shutdown_background();
    Ok(result?)
}

async fn serve<R, W>(remote: Arc<Remote>, input: R, output: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut input = BufReader::new(input);
    let (out, writer) = LineWriter::start(output);
    let mut tasks = JoinSet::new();
    while let Some(line) = read_line(&mut input, MAX_LINE).await? {
        while tasks.try_join_next().is_some() {}
        let message = match line {
            Line::TooLong(len) => Err(too_long_response(len, MAX_LINE)),
            Line::Text(bytes) if is_blank(&bytes) => continue,
            Line::Text(bytes) => parse_json(&bytes).map_err(|e| e.to_response()),
        };
        let message = match message {
            Ok(message) => message,
            Err(answer) => {
                if !out.send(answer) {
                    break;
                }
                continue;
            }
        };
        if message.get("method").and_then(Value::as_str) == Some("initialize") {
            forward(remote.clone(), message, out.clone()).await;
        } else {
            tasks.spawn(forward(remote.clone(), message, out.clone()));
        }
    }
    // Every task ends within its own timeout; the margin only guards against a stuck write.
    let settle = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(remote.timeout + Duration::from_secs(5), settle).await.is_err() {
        tracing::warn!(event = "requests_abandoned", count = tasks.len(), "stdin closed; gave up waiting");
    }
    drop(out);
    writer.await.map_err(io::Error::other)?
}

/// The server and what this stream has learned about it.
struct Remote {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    /// The URL for messages and logs: no query string, which may hold secrets.
    shown: String,
    auth: Option<HeaderValue>,
    timeout: Duration,
    state: Mutex<Negotiated>,
}

/// Learned from answers: the revision `initialize` settled on and the server's session id.
#[derive(Default)]
struct Negotiated {
    version: Option<String>,
    session: Option<HeaderValue>,
}

impl Remote {
    fn new(args: &ProxyArgs) -> Result<Remote, ProxyError> {
        let url = parse_url(&args.url).map_err(ProxyError::Setup)?;
        let shown = format!("{}://{}{}", url.scheme_str().unwrap_or("http"), host_of(&url), url.path());
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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
        Ok(req)
    }

    /// Sends one message and prints what comes back; answered ids leave `pending`.
    async fn exchange(
        &self,
        message: &Value,
        out: &LineWriter,
        pending: &mut Pending,
    ) -> Result<(), Failure> {
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
                if item.get("id").map_or(true, Value::is_null) && pending.ids.len() == 1 {
                    item["id"] = pending.ids[0].clone();
                }
                pending.ids.retain(|id| Some(id) != item.get("id"));
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

/// What one forwarded message still waits for.
struct Pending {
    /// Ids of the requests not answered yet.
    ids: Vec<Value>,
    /// Notifications and client responses: nothing is printed for them, even errors.
    silent: bool,
    initialize: bool,
    status: Option<StatusCode>,
}

impl Pending {
    fn of(message: &Value) -> Pending {
        let items = match message {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let ids: Vec<Value> = items
            .iter()
            .filter(|m| m.get("method").is_some())
            .filter_map(|m| m.get("id").filter(|id| !id.is_null()).cloned())
            .collect();
        let initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
        Pending { silent: ids.is_empty(), ids, initialize, status: None }
    }
}

/// Forwards one message within the timeout and answers every request it left unanswered.
async fn forward(remote: Arc<Remote>, message: Value, out: LineWriter) {
    let mut pending = Pending::of(&message);
    let method = match &message {
        Value::Array(items) => format!("batch of {}", items.len()),
        m => m.get("method").and_then(Value::as_str).unwrap_or("(response)").to_owned(),
    };
    let started = Instant::now();
    let result =
        match tokio::time::timeout(remote.timeout, remote.exchange(&message, &out, &mut pending)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout(remote.timeout)),
        };
    let result = match (result, pending.ids.is_empty()) {
        (Ok(()), false) => Err(Failure::NoAnswer(pending.status)),
        (result, _) => result,
    };
    let ms = started.elapsed().as_millis() as u64;
    let Err(failure) = result else {
        tracing::debug!(event = "forwarded", method, ms);
        return;
    };
    let error = failure.to_error(&remote.shown);
    tracing::warn!(event = "forward_failed", method, ms, error = %error["message"].as_str().unwrap_or(""));
    for id in pending.ids.drain(..) {
        out.send(json!({"jsonrpc": "2.0", "id": id, "error": error.clone()}));
    }
}

/// Why a request got no answer from the server.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Timeout(Duration),
    Http { status: StatusCode, challenge: bool, body: String },
    Invalid(String),
    NoAnswer(Option<StatusCode>),
}

impl Failure {
    /// The JSON-RPC error object, worded for the person who has to fix it.
    fn to_error(&self, url: &str) -> Value {
        let (code, message, data) = match self {
            Failure::Connect(cause) => {
                let hint = if cause.contains("certificate") {
                    "install its CA in the system store or point SSL_CERT_FILE at it"
                } else {
                    "is it running, is MCP_REMOTE_URL right?"
                };
                let message = format!("cannot reach the MCP server at {url}: {cause} ({hint})");
                (TRANSPORT_ERROR, message, json!({"url": url}))
            }
            Failure::Timeout(limit) => (
                REQUEST_TIMEOUT,
                format!(
                    "no answer from the MCP server at {url} within {} s (--timeout)",
                    limit.as_secs_f64()
                ),
                json!({"url": url, "timeoutSeconds": limit.as_secs_f64()}),
            ),
            Failure::Http { status, challenge, body } => (
                TRANSPORT_ERROR,
                format!("the MCP server at {url} answered HTTP {status}{}", http_hint(*status, *challenge)),
                json!({"url": url, "httpStatus": status.as_u16(), "body": body}),
            ),
            Failure::Invalid(detail) => (
                TRANSPORT_ERROR,
                format!("the MCP server at {url} sent no JSON-RPC answer: {detail}"),
                json!({"url": url}),
            ),
            Failure::NoAnswer(status) => {
                let status = status.map_or_else(|| "?".to_owned(), |s| s.to_string());
                let message =
                    format!("the MCP server at {url} sent no answer to this request (HTTP {status})");
                (TRANSPORT_ERROR, message, json!({"url": url}))
            }
        };
        json!({"code": code, "message": message, "data": data})
    }
}

/// What to do about an HTTP error status, as a sentence tail.
fn http_hint(status: StatusCode, challenge: bool) -> &'static str {
    match status.as_u16() {
        401 if challenge => {
            ": the server wants a valid bearer token; set MCP_AUTH_TOKEN (it may be missing or expired)"
        }
        401 => ": not authorized; check MCP_AUTH_TOKEN",
        403 => ": forbidden; the token lacks the scope for this, or the server refuses this client",
        404 | 405 => ": no MCP endpoint at this URL; check the path in MCP_REMOTE_URL (usually /mcp)",
        413 => ": the message is larger than the server accepts",
        429 => ": rate limited; try again later",
        502..=504 => ": the gateway in front of the MCP server cannot reach it; is the service running?",
        500..=599 => ": server error; the server's log has the cause",
        _ => "",
    }
}

/// MCP routing headers: the revision (from a 2026-07-28 `_meta`, else the negotiated one),
/// and for 2026-07-28 requests `Mcp-Method` and `Mcp-Name` mirroring the body.
fn routing_headers(message: &Value, negotiated: Option<&str>) -> Vec<(&'static str, HeaderValue)> {
    let params = message.get("params");
    let envelope = params.and_then(|p| p.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str());
    let mut headers = Vec::new();
    let Some(version) = envelope.or(negotiated) else {
        return headers;
    };
    headers.extend(HeaderValue::from_str(version).ok().map(|v| ("mcp-protocol-version", v)));
    let method = message.get("method").and_then(Value::as_str);
    let (Some(_), Some(method)) = (envelope, method) else {
        return headers;
    };
    headers.extend(HeaderValue::from_str(method).ok().map(|v| ("mcp-method", v)));
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return headers,
    };
    if let Some(name) = params.and_then(|p| p.get(field)?.as_str()) {
        headers.extend(HeaderValue::from_str(&name_header(name)).ok().map(|v| ("mcp-name", v)));
    }
    headers
}

/// `Mcp-Name` as sent: plain when it survives a header unchanged, else `=?base64?…?=`.
fn name_header(name: &str) -> String {
    let plain = name.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && name.trim_matches([' ', '\t']) == name
        && !name.starts_with("=?base64?");
    if plain {
        return name.to_owned();
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("=?base64?");
    for chunk in name.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out.push_str("?=");
    out
}

/// Incremental `text/event-stream` parsing: yields the `data` of each complete event.
#[derive(Default)]
struct EventStream {
    line: Vec<u8>,
    data: Option<String>,
}

impl EventStream {
    fn feed(&mut self, chunk: &[u8], events: &mut Vec<String>) -> Result<(), Failure> {
        for &b in chunk {
            if b == b'\n' {
                self.end_line(events);
            } else if self.line.len() < MAX_RESPONSE {
                self.line.push(b);
            } else {
                return Err(Failure::Invalid(format!("an event-stream line exceeds {MAX_RESPONSE} bytes")));
            }
        }
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // comment
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            let value = String::from_utf8_lossy(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            }
        }
    }

    /// End of stream: an event not closed by a blank line still counts.
    fn finish(&mut self, events: &mut Vec<String>) {
        if !self.line.is_empty() {
            self.end_line(events);
        }
        events.extend(self.data.take());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_yield_each_data_block() {
        let (mut stream, mut events) = (EventStream::default(), Vec::new());
        let text = ": hi\r\nid: 1\ndata:\n\nevent: message\ndata: {\"a\":\ndata: 1}\n\ndata: {\"b\":2}";
        for chunk in text.as_bytes().chunks(3) {
            assert!(stream.feed(chunk, &mut events).is_ok());
        }
        stream.finish(&mut events);
        assert_eq!(events, ["", "{\"a\":\n1}", "{\"b\":2}"]);
    }

    #[test]
    fn names_that_a_header_would_alter_are_base64_encoded() {
        assert_eq!(name_header("service_status"), "service_status");
        assert_eq!(name_header("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(name_header(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(name_header("=?base64?x"), "=?base64?PT9iYXNlNjQ/eA==?=");
    }

    #[test]
    fn modern_requests_mirror_their_body_in_headers() {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"é",
            "_meta":{(META_PROTOCOL_VERSION):"2026-07-28"}}});
        let got: Vec<_> = routing_headers(&call, Some("2025-06-18"));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], ("mcp-protocol-version", HeaderValue::from_static("2026-07-28")));
        assert_eq!(got[2], ("mcp-name", HeaderValue::from_static("=?base64?w6k=?=")));
        let ping = json!({"jsonrpc":"2.0","id":2,"method":"ping"});
        assert_eq!(routing_headers(&ping, Some("2025-06-18")).len(), 1);
        assert!(routing_headers(&ping, None).is_empty());
    }
}
