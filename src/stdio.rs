//! `awswhitelist stdio`: the MCP dispatcher of the workers, spoken locally over stdin/stdout,
//! one JSON message per line, for clients that start the server as a child process.
//!
//! Stdout carries nothing but protocol lines (logs go to stderr or the configured file).
//! Lines are handled as they arrive: `initialize` is answered before the next line is read, so
//! the revision it negotiates applies to every later message; other messages run concurrently
//! and their answers are written as they finish, each as one line, flushed at once.
//! [`read_line`] and [`LineWriter`] are shared with the proxy.
//!
//! A client that declares `elicitation` at `initialize` can be asked for a person's consent
//! (`[policy.consent]`) the handshake-era way: the server writes an `elicitation/create` request
//! line while the call waits, and the client's response line is handed to it (never dispatched).

use std::io;
use std::rc::Rc;

use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet, LocalSet};

use serde_json::Map;
use worker::http::stream::{owner_pid, StreamRequester, Waiters};
use worker::mcp::{parse_json, Dispatcher, Outcome, RequesterHandle, ServerInfo, TransportMeta};

use crate::config::Config;

/// One line read from the peer: its bytes without the line ending, or how long it was when it
/// exceeded the cap (its bytes are dropped as they arrive, never buffered whole).
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without `\n` or `\r\n`.
    Text(Vec<u8>),
    /// A line longer than the cap; holds the number of bytes seen.
    TooLong(usize),
}

/// Reads one line of at most `max` bytes, streaming: returns as soon as a `\n` arrives, and
/// `None` at end of input. A final line without `\n` still counts as a line.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut seen = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match seen {
                0 => None,
                n if n > max => Some(Line::TooLong(n)),
                _ => Some(Line::Text(strip_cr(buf))),
            });
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        seen += chunk.len();
        if seen <= max {
            buf.extend_from_slice(chunk);
        } else if !buf.is_empty() {
            buf = Vec::new(); // over the cap: stop keeping it
        }
        let used = chunk.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(if seen > max { Line::TooLong(seen) } else { Line::Text(strip_cr(buf)) }));
        }
    }
}

fn strip_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// True for a line of only whitespace, which both loops skip without answering.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// The -32700 answer to a line over the cap (its id cannot be read without reading it).
pub fn too_long_response(len: usize, max: usize) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32700,
            "message": format!("Parse error: the message is {len} bytes, over the limit of {max} bytes"),
        },
    })
}

/// Writes JSON messages as single lines from any task, in the order they are handed over,
/// flushing after each, so a reader on the other end sees every answer as soon as it exists.
#[derive(Clone)]
pub struct LineWriter {
    tx: mpsc::UnboundedSender<Value>,
}

impl LineWriter {
    /// Where a server request line is queued (the same order as answers).
    fn requests(&self) -> mpsc::UnboundedSender<Value> {
        self.tx.clone()
    }
}

impl LineWriter {
    /// Starts the writer task on `out`; the handle ends when every `LineWriter` is dropped
    /// (after writing what was queued) or when a write fails (the peer has gone).
    pub fn start<W>(out: W) -> (LineWriter, JoinHandle<io::Result<()>>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        (LineWriter { tx }, tokio::spawn(write_lines(rx, out)))
    }

    /// Queues one message; false when the writer has stopped (stdout is closed).
    pub fn send(&self, message: Value) -> bool {
        self.tx.send(message).is_ok()
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut rx: mpsc::UnboundedReceiver<Value>,
    mut out: W,
) -> io::Result<()> {
    while let Some(message) = rx.recv().await {
        // Compact serde_json output has no raw newlines: strings escape them.
        let mut line = serde_json::to_vec(&message).map_err(io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line).await?;
        out.flush().await?;
    }
    Ok(())
}

/// Serves MCP on stdin/stdout until stdin ends and every started request has been answered.
pub fn run(config: &Config) -> io::Result<()> {
    let settings = config.settings().map_err(io::Error::other)?;
    let info = ServerInfo::new("awswhitelist", env!("CARGO_PKG_VERSION"));
    let max = config.mcp.max_body_bytes;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The same tools as `serve`, built inside the runtime (the sweeper is a task of it).
    let result = LocalSet::new().block_on(&runtime, async move {
        let app = worker::App::build(&settings, info, None).map_err(io::Error::other)?;
        let _sweeper = app.spawn_sweeper(None);
        let dispatcher = Rc::new(app.dispatcher);
        serve(dispatcher, tokio::io::stdin(), tokio::io::stdout(), max).await
    });
    // A read of stdin cannot be cancelled; do not wait for one still blocked (stdout closed first).
    runtime.shutdown_background();
    result
}

/// The loop behind [`run`], on any reader and writer (so it can be tested in memory).
async fn serve<R, W>(dispatcher: Rc<Dispatcher>, input: R, output: W, max: usize) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut input = BufReader::new(input);
    let (out, writer) = LineWriter::start(output);
    let mut version: Option<String> = None;
    // What the client declared at initialize (elicitation), and its questions waiting for answers.
    let mut declared: Option<Map<String, Value>> = None;
    let waiters = Arc::new(Waiters::new(0, std::process::id()));
    let requester = RequesterHandle(Arc::new(StreamRequester {
        events: out.requests(),
        waiters: waiters.clone(),
        identity: None,
    }));
    let mut tasks = JoinSet::new();
    tracing::info!(event = "stdio_started", max_line_bytes = max, "serving MCP on stdin/stdout");
    while let Some(line) = read_line(&mut input, max).await? {
        while tasks.try_join_next().is_some() {}
        let bytes = match line {
            Line::TooLong(len) => {
                tracing::warn!(event = "line_too_long", len, max, "message over the size limit refused");
                out.send(too_long_response(len, max));
                continue;
            }
            Line::Text(bytes) if is_blank(&bytes) => continue,
            Line::Text(bytes) => bytes,
        };
        let mut meta = match &version {
            Some(v) => TransportMeta::stdio().with_protocol_version(v.clone()),
            None => TransportMeta::stdio(),
        };
        let body = match parse_json(&bytes) {
            Ok(body) => body,
            Err(e) => {
                tracing::debug!(event = "parse_error", error = %e, "unreadable line");
                out.send(e.to_response());
                continue;
            }
        };
        if is_answer(&body) {
            if let Err(why) = waiters.deliver(body, None) {
                tracing::warn!(event = "answer_undelivered", reason = ?why, "an answer found no question waiting for it");
            }
            continue;
        }
        if let Some(caps) = declared.as_ref().filter(|c| c.contains_key("elicitation")) {
            meta.session_capabilities = Some(caps.clone());
            meta.requester = Some(requester.clone());
        }
        let sent = if body.get("method").and_then(Value::as_str) == Some("initialize") {
            declared = body.pointer("/params/capabilities").and_then(Value::as_object).cloned();
            // Answered before the next line is read: later messages use what it negotiates.
            let outcome = dispatcher.handle(body, &meta).await;
            if let Some(negotiated) = outcome.negotiated_version() {
                version = Some(negotiated.as_str().to_owned());
            }
            send_outcome(&out, outcome)
        } else {
            let (dispatcher, out) = (dispatcher.clone(), out.clone());
            tasks.spawn_local(async move {
                let outcome = dispatcher.handle(body, &meta).await;
                send_outcome(&out, outcome);
            });
            true
        };
        if !sent {
            break;
        }
    }
    while tasks.join_next().await.is_some() {}
    // The requester writes through `out` too: the writer ends when both are gone.
    drop(requester);
    drop(out);
    writer.await.map_err(io::Error::other)?
}

/// A response to one of this server's requests (its id is one of ours).
fn is_answer(body: &Value) -> bool {
    body.get("method").is_none()
        && (body.get("result").is_some() || body.get("error").is_some())
        && body.get("id").and_then(Value::as_str).and_then(owner_pid).is_some()
}

/// Replies and refusals become lines; `Accepted` (notifications, client responses) writes nothing.
fn send_outcome(out: &LineWriter, outcome: Outcome) -> bool {
    match outcome.into_body() {
        Some(body) => out.send(body),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        while let Some(line) = read_line(&mut reader, max).await.expect("in-memory read") {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn lines_are_split_capped_and_stripped() {
        let got = lines(b"{}\r\n\nabcdefghij\nlast", 5).await;
        assert_eq!(
            got,
            vec![
                Line::Text(b"{}".to_vec()),
                Line::Text(Vec::new()),
                Line::TooLong(10),
                Line::Text(b"last".to_vec()),
            ]
        );
        assert_eq!(lines(b"", 5).await, vec![]);
        assert_eq!(lines(b"123456", 5).await, vec![Line::TooLong(6)]);
    }

    #[tokio::test]
    async fn the_loop_answers_each_line_and_skips_blank_ones() {
        let dispatcher = Rc::new(Dispatcher::new(
            ServerInfo::new("t", "0"),
            worker::tools::standard_registry(10).expect("registry"),
        ));
        let input = [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "   ",
            "{oops",
            &"x".repeat(300),
            r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#,
        ]
        .join("\n");
        let (mut ours, theirs) = tokio::io::duplex(1 << 16);
        let local = LocalSet::new();
        local.run_until(serve(dispatcher, input.as_bytes(), theirs, 200)).await.expect("serve");
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut ours, &mut text).await.expect("read");
        let got: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
        assert_eq!(got.len(), 4, "{text}");
        assert_eq!(got[0]["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(got[1]["error"]["code"], -32700);
        assert_eq!(got[2]["error"]["code"], -32700);
        assert!(got[2]["error"]["message"].as_str().unwrap_or("").contains("over the limit"));
        assert_eq!(got[3], json!({"jsonrpc":"2.0","id":"p","result":{}}));
    }
}
