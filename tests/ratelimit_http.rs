//! Rate limits over real HTTP, against `serve` with four workers: one client gets exactly its
//! burst, whichever workers its requests reach, and 429 with `Retry-After` beyond it; another
//! client (another source address, or another token subject) is unaffected; failed
//! authentications are limited per address, separately and more strictly.
//!
//! The refill is 1 request per minute, so nothing comes back while a test runs (each sends its
//! requests within seconds): the counts are exact, not "about".

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::Duration;

use common::{http, Service, BIN};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};

/// The client most requests come from.
const CLIENT_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// Another client: a loopback address of its own, so the server sees another peer.
const CLIENT_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

const BURST: usize = 20;
const REQUESTS: usize = 60;
const THREADS: usize = 6;

const SERVICE_STATUS: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"service_status","arguments":{}}}"#;

/// POST /mcp from `source` on a new connection (so successive requests spread over the workers
/// sharing the listener), with this `Authorization` value (if any).
fn post_from(source: IpAddr, addr: &str, authorization: Option<&str>) -> http::Response {
    post_body_from(source, addr, authorization, Some("2025-06-18"), SERVICE_STATUS)
}

/// POST /mcp of `body` from `source`, with `MCP-Protocol-Version: version` when given (a batch
/// is only accepted without one, or with a revision that has batches).
fn post_body_from(
    source: IpAddr,
    addr: &str,
    authorization: Option<&str>,
    version: Option<&str>,
    body: &str,
) -> http::Response {
    let mut req = String::from("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n");
    if let Some(v) = version {
        req.push_str(&format!("MCP-Protocol-Version: {v}\r\n"));
    }
    if let Some(v) = authorization {
        req.push_str(&format!("Authorization: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    let attempt = || -> std::io::Result<http::Response> {
        let target: SocketAddr = addr.parse().expect("a TCP address");
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect(&target.into())?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(req.as_bytes())?;
        http::read_response(&mut stream)
    };
    attempt().unwrap_or_else(|e| panic!("POST /mcp from {source}: {e}"))
}

/// The worker slot a successful `service_status` reports.
fn worker_of(r: &http::Response) -> i64 {
    let body = r.json();
    body.pointer("/result/structuredContent/worker")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{body}"))
}

/// A 429 as the limiter must send it: `Retry-After` in whole seconds, at least 1 and at most the
/// time one request takes to come back (60 s at 1 per minute), and a JSON-RPC error.
fn assert_limited(r: &http::Response, what: &str) {
    assert_eq!(r.status, 429, "{what}: {r:?}");
    let retry_after: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 429 without Retry-After: {r:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{what}: Retry-After is not delta-seconds ({e}): {r:?}"));
    assert!((1..=60).contains(&retry_after), "{what}: Retry-After {retry_after}");
    assert_eq!(r.json().pointer("/error/code"), Some(&json!(-32000)), "{what}: {r:?}");
}

#[test]
fn one_client_gets_exactly_its_burst_across_four_workers_and_another_is_unaffected() {
    let svc = Service::start(&format!(
        "bind = \"127.0.0.1:0\"\nworkers = 4\n\n[rate_limit]\nrequests_per_minute = 1.0\nburst = {BURST}\n"
    ));
    // REQUESTS from one client, THREADS at a time, each on a new connection; exactly the burst
    // must pass every time. The kernel may hand one idle worker every connection of a run, which
    // would prove nothing about sharing, so the experiment is repeated with fresh client
    // addresses (fresh buckets) until the allowed requests reached two workers or more.
    let mut spread = Vec::new();
    for attempt in 0..10u8 {
        let client = if attempt == 0 { CLIENT_A } else { IpAddr::V4(Ipv4Addr::new(127, 0, 1, attempt)) };
        let barrier = Barrier::new(THREADS);
        let answers: Vec<http::Response> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        (0..REQUESTS / THREADS)
                            .map(|_| post_from(client, &svc.addr, None))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
        });
        let passed: Vec<&http::Response> = answers.iter().filter(|r| r.status == 200).collect();
        let limited: Vec<&http::Response> = answers.iter().filter(|r| r.status == 429).collect();
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert_eq!(passed.len(), BURST, "exactly the burst passes ({client}): {statuses:?}");
        assert_eq!(
            limited.len(),
            REQUESTS - BURST,
            "every other request is refused ({client}): {statuses:?}"
        );
        for r in &limited {
            assert_limited(r, "a client over its burst");
        }
        let mut workers: Vec<i64> = passed.iter().map(|r| worker_of(r)).collect();
        workers.sort_unstable();
        workers.dedup();
        spread = workers;
        if spread.len() >= 2 {
            break;
        }
    }
    // The bucket is one for the host, not one per worker: the burst was shared by the workers
    // that answered.
    assert!(spread.len() >= 2, "in 10 runs the allowed requests never reached two workers: {spread:?}");

    // Client B has a bucket of its own, full: its whole burst passes, and then it is limited too.
    for i in 0..BURST {
        let r = post_from(CLIENT_B, &svc.addr, None);
        assert_eq!(r.status, 200, "client B, request {}: {r:?}", i + 1);
    }
    assert_limited(&post_from(CLIENT_B, &svc.addr, None), "client B over its burst");
    // And client A is still refused.
    assert_limited(&post_from(CLIENT_A, &svc.addr, None), "client A, later");
}

// ------------------------------------------------------------------------------------------
// With authentication
// ------------------------------------------------------------------------------------------

/// A service with auth on (an HS secret made now, in a temp dir of its own) and these
/// `[rate_limit]` lines.
struct AuthService {
    svc: Service,
    _secret_dir: tempfile::TempDir,
}

impl AuthService {
    fn start(rate_limit: &str) -> AuthService {
        let dir = tempfile::tempdir().unwrap();
        let mut random = [0u8; 48];
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut random).unwrap();
        let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let secret_file = dir.path().join("jwt.secret");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_file)
            .and_then(|mut f| f.write_all(secret.as_bytes()))
            .unwrap();
        let svc = Service::start(&format!(
            "bind = \"127.0.0.1:0\"\nworkers = 4\n\n[auth]\nenabled = true\n\
             issuer = \"https://issuer.test/\"\naudience = [\"http://localhost/mcp\"]\n\
             hs_secret_file = \"{}\"\n\n[rate_limit]\n{rate_limit}\n",
            secret_file.display()
        ));
        AuthService { svc, _secret_dir: dir }
    }

    /// `Bearer <token>` for this subject, from `awswhitelist token`.
    fn bearer(&self, sub: &str) -> String {
        let out = Command::new(BIN)
            .arg("token")
            .arg("--config")
            .arg(&self.svc.config)
            .args(["--sub", sub, "--scope", "whitelist:read whitelist:write", "--ttl", "10m"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "awswhitelist token: {}", String::from_utf8_lossy(&out.stderr));
        format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim())
    }
}

#[test]
fn failed_authentication_is_limited_per_address() {
    let s = AuthService::start("auth_failures_per_minute = 1.0\nauth_failures_burst = 3");
    let addr = &s.svc.addr;
    // A real token with the tail of its signature replaced: well-formed, and its signature
    // does not verify.
    let forged = s.bearer("mallory");
    let tail = if forged.ends_with("AAAA") { "BBBB" } else { "AAAA" };
    let forged = format!("{}{tail}", &forged[..forged.len() - 4]);
    let statuses: Vec<u16> =
        (0..5).map(|_| post_from(CLIENT_A, addr, Some(&forged))).map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 401, 429, 429], "3 failures allowed, then limited");
    let r = post_from(CLIENT_A, addr, Some(&forged));
    assert_limited(&r, "another bad token from the same address");
    // The limit is consulted before any credential is checked, so guessing is slowed down: even
    // a valid token from the limited address waits (else a guess would still be verified, and a
    // right one would be told so).
    assert_limited(
        &post_from(CLIENT_A, addr, Some(&s.bearer("dave"))),
        "a valid token from the limited address",
    );

    // Another address: its failures have their own budget, and a valid token works.
    assert_eq!(post_from(CLIENT_B, addr, Some(&s.bearer("carol"))).status, 200);
    let r = post_from(CLIENT_B, addr, Some(&forged));
    assert_eq!(r.status, 401, "client B's first failure: {r:?}");
    assert!(r.header("www-authenticate").unwrap_or("").contains("error=\"invalid_token\""), "{r:?}");
    // The limit counts failed credentials only: successes from client B charge nothing.
    for i in 0..5 {
        assert_eq!(
            post_from(CLIENT_B, addr, Some(&s.bearer("carol"))).status,
            200,
            "carol, request {}",
            i + 1
        );
    }
}

#[test]
fn authenticated_requests_are_limited_per_subject_not_per_address() {
    let s = AuthService::start("requests_per_minute = 1.0\nburst = 3");
    let addr = &s.svc.addr;
    let alice = s.bearer("alice");
    let statuses: Vec<u16> = (0..4).map(|_| post_from(CLIENT_A, addr, Some(&alice)).status).collect();
    assert_eq!(statuses, [200, 200, 200, 429], "alice: her burst, then limited");
    assert_limited(&post_from(CLIENT_B, addr, Some(&alice)), "alice from another address");
    // Bob, from the very address alice is limited on, has his own bucket.
    let bob = s.bearer("bob");
    for i in 0..3 {
        assert_eq!(post_from(CLIENT_A, addr, Some(&bob)).status, 200, "bob, request {}", i + 1);
    }
    assert_limited(&post_from(CLIENT_A, addr, Some(&bob)), "bob over his burst");
}

/// `n` `tools/call` messages in one JSON-RPC batch.
fn batch_of(n: usize) -> String {
    let calls: Vec<Value> = (0..n)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "service_status", "arguments": {}}}))
        .collect();
    Value::Array(calls).to_string()
}

#[test]
fn every_tool_call_of_a_batch_is_charged_all_or_nothing() {
    let svc = Service::start(
        "bind = \"127.0.0.1:0\"\nworkers = 2\n\n[rate_limit]\nrequests_per_minute = 1.0\nburst = 5\n",
    );
    let send = |n: usize| post_body_from(CLIENT_A, &svc.addr, None, None, &batch_of(n));
    // More calls than the burst can never pass: refused whole, saying why and which setting.
    let r = send(7);
    assert_eq!(r.status, 429, "a batch of 7 calls with a burst of 5: {r:?}");
    let message = r.json().pointer("/error/message").and_then(Value::as_str).unwrap_or("").to_string();
    assert!(message.contains('7') && message.contains("rate_limit.burst"), "{message}");
    // Nothing was charged for it: 4 of the 5 pass, as 4 replies.
    let r = send(4);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().as_array().map(Vec::len), Some(4), "{r:?}");
    // One left: a batch of 2 is refused whole (and charged nothing), one call still passes.
    assert_limited(&send(2), "a batch of 2 with one call left");
    assert_eq!(post_from(CLIENT_A, &svc.addr, None).status, 200, "the last call of the burst");
    assert_limited(&post_from(CLIENT_A, &svc.addr, None), "over the burst");
}
