//! The request id and the access-log line: one line per request, with the fields an operator
//! greps for, written under the `access` target (so `[log] access_file` can take them apart).

use std::net::IpAddr;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::Body;

/// What the access-log line says about the request (read before the request is consumed).
pub(super) struct Access {
    method: String,
    path: String,
    user_agent: String,
    referer: String,
    client: Option<IpAddr>,
}

impl Access {
    /// Reads the request's side of the line; `client` as the trusted proxies resolved it.
    pub(super) fn read(req: &Request<Incoming>, client: Option<IpAddr>) -> Access {
        Access {
            method: req.method().to_string(),
            path: req.uri().path().chars().take(256).collect(),
            user_agent: header_text(req, hyper::header::USER_AGENT),
            referer: header_text(req, hyper::header::REFERER),
            client,
        }
    }

    /// Writes the line, inside the request's span (so it carries the request id and method).
    pub(super) fn log(&self, resp: &Response<Body>, started: Instant) {
        let bytes = hyper::body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        tracing::info!(
            target: "access",
            event = "access",
            client = %self.client.map_or("unix".to_string(), |a| a.to_string()),
            method = %self.method,
            path = %self.path,
            status = resp.status().as_u16(),
            bytes,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            user_agent = %self.user_agent,
            referer = %self.referer,
            "{} {} {}", self.method, self.path, resp.status().as_u16()
        )
    }
}

fn header_text(req: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(String::new(), |v| v.chars().take(256).collect())
}

/// The client's `X-Request-Id` if it is short and plain (it ends up in logs), else a new one.
pub(super) fn request_id(req: &Request<Incoming>) -> String {
    let given = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let sane = (1..=128).contains(&given.len())
        && given.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if sane {
        return given.to_string();
    }
    let mut bytes = [0u8; 12];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Unreachable in practice; a time-based id still keeps log lines joinable.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return format!("{nanos:x}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
