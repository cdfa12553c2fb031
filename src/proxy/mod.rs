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
//!
//! The parts: this module reads stdin and settles each forwarded message (`forward`, and the
//! JSON-RPC errors it answers failures with); [`client`] is the HTTP/TLS client that sends one
//! message and prints what comes back; [`wire`] holds the pure header and event-stream encoding.

mod client;
mod wire;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::task::JoinSet;
use worker::mcp::parse_json;

use crate::cli::ProxyArgs;
use crate::stdio::{is_blank, read_line, too_long_response, Line, LineWriter};

use client::Remote;

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
