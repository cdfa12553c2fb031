//! The baseline for `bench/health.sh`: the least a hyper 1 HTTP/1 server does. One process, one
//! current-thread tokio runtime, a fixed small JSON body on `GET /health`, nothing else (no
//! supervisor, no limits, no logging, no metrics). What the service costs on top of hyper is
//! the difference between the two.
//!
//! Usage: `bare_hyper [ADDR]` (default 127.0.0.1:3000); prints `listening on ADDR` when ready.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// About the size of the service's own `/health` answer.
const BODY: &str = r#"{"status":"ok","version":"0.1.0","worker":0,"pid":0}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("bad address {a:?}: {e}"))?,
        None => SocketAddr::from(([127, 0, 0, 1], 3000)),
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(answer)).await;
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => (StatusCode::OK, BODY),
        _ => (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
    };
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}
