//! The request id and the access-log line: one line per request, with the fields an operator
//! greps for, written under the `access` target (so `[log] access_file` can take them apart).
//!
//! When the log is JSON, the line is serialised here and handed straight to the log's buffer
//! ([`send_json_lines_to`]) instead of going through tracing's JSON formatter, which turns every
//! field into a map, re-reads the request span's fields from their JSON text and serialises it
//! all again: in issue 12's profile that was 14 % of a worker's time on `ping`. The line is the
//! same as the formatter's, field for field and in the same order; `[log] level` still decides
//! whether it is written, except into an `access_file`, which takes every line.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, REFERER, USER_AGENT};
use hyper::{Method, Request, Response, Uri};
use serde::Serialize;

use super::Body;

/// Takes one whole JSON access line (with its newline) into the log.
pub type JsonLineSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Where this process's access lines go as JSON, and whether `[log] level` applies to them.
struct Direct {
    sink: JsonLineSink,
    /// False when the lines have a file of their own (`access_file`): they are all written,
    /// whatever the level, as the access layer always did.
    filtered: bool,
}

static DIRECT: OnceLock<Direct> = OnceLock::new();

/// Sends this process's access lines, already JSON, to `sink` from now on; the logging setup
/// calls it when they are JSON (`[log] format`, or an `access_file`). `filtered`: the log level
/// still decides whether a line is written. A second call (tests that start twice) changes
/// nothing, as a second tracing subscriber would not.
pub fn send_json_lines_to(sink: JsonLineSink, filtered: bool) {
    let _ = DIRECT.set(Direct { sink, filtered });
}

/// What the access-log line says about the request (kept before the request is consumed).
/// The parts are clones that share the request's bytes, so keeping them copies nothing.
pub(super) struct Access {
    method: Method,
    uri: Uri,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    client: Option<IpAddr>,
}

impl Access {
    /// Keeps the request's side of the line; `client` as the trusted proxies resolved it.
    pub(super) fn read<B>(req: &Request<B>, client: Option<IpAddr>) -> Access {
        Access {
            method: req.method().clone(),
            uri: req.uri().clone(),
            user_agent: req.headers().get(USER_AGENT).cloned(),
            referer: req.headers().get(REFERER).cloned(),
            client,
        }
    }

    /// The path, at most 256 characters of it.
    fn path(&self) -> &str {
        clipped(self.uri.path())
    }

    /// Writes the line: as JSON straight to the log when a sink is set, else as a tracing event
    /// inside the request's `span` (so it carries the request id and method). `mcp_method`:
    /// what the MCP endpoint dispatched, if it did.
    pub(super) fn log(
        &self,
        resp: &Response<Body>,
        started: Instant,
        request_id: &str,
        mcp_method: Option<&str>,
        span: &tracing::Span,
    ) {
        let direct = DIRECT.get();
        if direct.is_none_or(|d| d.filtered) && !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let status = resp.status().as_u16();
        let bytes = hyper::body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Some(d) = direct {
            (d.sink)(&self.json_line(status, bytes, duration_ms, request_id, mcp_method));
            return;
        }
        span.in_scope(|| {
            tracing::info!(
                target: "access",
                event = "access",
                client = %Client(self.client),
                method = %self.method,
                path = self.path(),
                status,
                bytes,
                duration_ms,
                user_agent = header_text(self.user_agent.as_ref()),
                referer = header_text(self.referer.as_ref()),
                "{} {} {}", self.method, self.path(), status
            )
        })
    }

    /// The line tracing's JSON formatter would write for the event above, in its field order.
    fn json_line(
        &self,
        status: u16,
        bytes: u64,
        duration_ms: f64,
        request_id: &str,
        mcp_method: Option<&str>,
    ) -> Vec<u8> {
        let line = JsonLine {
            timestamp: Display(humantime::format_rfc3339_micros(SystemTime::now())),
            level: "INFO",
            message: Display(format_args!("{} {} {}", self.method, self.path(), status)),
            event: "access",
            client: Display(Client(self.client)),
            method: self.method.as_str(),
            path: self.path(),
            status,
            bytes,
            duration_ms,
            user_agent: header_text(self.user_agent.as_ref()),
            referer: header_text(self.referer.as_ref()),
            target: "access",
            span: SpanFields { mcp_method, request_id, name: "request" },
        };
        let mut out = Vec::with_capacity(384);
        // Writing into a Vec fails only if a Display impl does, and none of these does.
        if serde_json::to_writer(&mut out, &line).is_err() {
            out.clear();
            out.extend_from_slice(
                br#"{"level":"ERROR","event":"access","message":"unwritable access line"}"#,
            );
        }
        out.push(b'\n');
        out
    }
}

#[derive(Serialize)]
#[serde(bound = "")]
struct JsonLine<'a, T: fmt::Display, M: fmt::Display> {
    timestamp: Display<T>,
    level: &'static str,
    message: Display<M>,
    event: &'static str,
    client: Display<Client>,
    method: &'a str,
    path: &'a str,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    user_agent: &'a str,
    referer: &'a str,
    target: &'static str,
    span: SpanFields<'a>,
}

/// The request span as the formatter prints it: its fields sorted by name, then its name.
#[derive(Serialize)]
struct SpanFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_method: Option<&'a str>,
    request_id: &'a str,
    name: &'static str,
}

/// A value serialised as the string its `Display` writes, without an intermediate `String`.
struct Display<T>(T);

impl<T: fmt::Display> Serialize for Display<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The client address, or `unix` for a Unix-socket peer.
struct Client(Option<IpAddr>);

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("unix"),
        }
    }
}

/// A header's text for the line: empty when absent or not visible ASCII, at most 256 characters.
fn header_text(value: Option<&HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).map_or("", clipped)
}

/// At most the first 256 characters of `text`.
fn clipped(text: &str) -> &str {
    text.char_indices().nth(256).map_or(text, |(end, _)| &text[..end])
}

/// The client's `X-Request-Id` if it is short and plain (it ends up in logs), else a new one.
/// Shared: the caller the tools see carries it too.
pub(super) fn request_id(req: &Request<Incoming>) -> Arc<str> {
    let given = req.headers().get(&super::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let sane = (1..=128).contains(&given.len())
        && given.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if sane {
        given.into()
    } else {
        new_request_id()
    }
}

fn new_request_id() -> Arc<str> {
    // 96 bits from a keyed hash (SipHash, keys from the OS) of a per-thread counter: unique
    // and unguessable enough for an id that only joins log lines, at a fraction of a CSPRNG
    // draw per request.
    let (high, low) = IDS.with(|(keys, count)| {
        let n = count.get().wrapping_add(1);
        count.set(n);
        (keys.hash_one(n), keys.hash_one(!n))
    });
    let mut id = [0u8; 24];
    let bytes = high.to_be_bytes().into_iter().chain(low.to_be_bytes().into_iter().take(4));
    for (pair, b) in id.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    // Hex digits: always UTF-8.
    std::str::from_utf8(&id).unwrap_or("0").into()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

thread_local! {
    static IDS: (RandomState, Cell<u64>) = (RandomState::new(), Cell::new(0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_24_hex_digits_and_do_not_repeat() {
        let ids: std::collections::HashSet<Arc<str>> = (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let other = std::thread::spawn(new_request_id).join().unwrap();
        assert!(!ids.contains(&other), "another thread has other keys");
    }

    /// The direct line must keep the formatter's fields, in its order (what operators' parsers
    /// and the tests read).
    #[test]
    fn the_direct_json_line_has_the_formatters_fields_in_its_order() {
        let req = Request::post("/mcp").header(USER_AGENT, "probe \"1\"").body(()).unwrap();
        let access = Access::read(&req, Some("192.0.2.1".parse().unwrap()));
        let line = access.json_line(200, 280, 0.5, "abc", Some("tools/call"));
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        let order = [
            "timestamp",
            "level",
            "message",
            "event",
            "client",
            "method",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "user_agent",
            "referer",
            "target",
            "span",
            "mcp_method",
            "request_id",
            "name",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k}: {text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "field order: {text}");
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "POST /mcp 200");
        assert_eq!(v["client"], "192.0.2.1");
        assert_eq!(v["user_agent"], "probe \"1\"");
        assert_eq!(
            (v["status"].as_u64(), v["bytes"].as_u64(), v["duration_ms"].as_f64()),
            (Some(200), Some(280), Some(0.5))
        );
        assert_eq!(
            v["span"],
            serde_json::json!({"mcp_method": "tools/call", "request_id": "abc", "name": "request"})
        );
        assert!(humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).is_ok(), "{text}");

        let unix = Access { client: None, ..access };
        let v: serde_json::Value = serde_json::from_slice(&unix.json_line(404, 0, 0.1, "x", None)).unwrap();
        assert_eq!(v["client"], "unix");
        assert!(v["span"].get("mcp_method").is_none(), "an empty field is left out, as the formatter does");
    }

    #[test]
    fn long_paths_and_headers_are_clipped_to_256_characters() {
        let long = format!("/{}", "é".repeat(300));
        assert_eq!(clipped(&long).chars().count(), 256);
        assert!(long.starts_with(clipped(&long)));
        assert_eq!(clipped("/mcp"), "/mcp");
        assert_eq!(header_text(None), "");
        let agent = HeaderValue::from_str(&"a".repeat(300)).unwrap();
        assert_eq!(header_text(Some(&agent)).len(), 256);
        let opaque = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_eq!(header_text(Some(&opaque)), "", "not visible ASCII: left empty, as before");
    }
}
