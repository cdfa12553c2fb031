//! The MCP endpoint over real HTTP: a table of bad requests, each with its status and JSON-RPC
//! error code, and none of them may crash or stall a worker.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http, sup_event, Service, PATIENCE};
use serde_json::{json, Value};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

struct Case {
    name: &'static str,
    method: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// Expected JSON-RPC error code, if the answer is an error object.
    code: Option<i64>,
    /// Expected `id` of the error (Null when none could be read).
    id: Option<Value>,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: Option<i64>,
    id: Option<Value>,
) -> Case {
    Case {
        name,
        method: "POST",
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        status,
        code,
        id,
    }
}

fn with(mut c: Case, header: &'static str, value: &str) -> Case {
    c.headers.retain(|(h, _)| *h != header);
    c.headers.push((header, value.to_string()));
    c
}

fn send(addr: &str, c: &Case) -> http::Response {
    let mut req = format!("{} /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", c.method);
    for (h, v) in &c.headers {
        req.push_str(&format!("{h}: {v}\r\n"));
    }
    if !c.headers.iter().any(|(h, _)| *h == "transfer-encoding") {
        req.push_str(&format!("content-length: {}\r\n", c.body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&c.body);
    http::raw(addr, &bytes).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

fn table() -> Vec<Case> {
    let v = |s: &str| Some(json!(s));
    let n = |i: i64| Some(json!(i));
    let null = Some(Value::Null);
    let big =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#, "x".repeat(5000));
    let deep = format!("{}{}", "[".repeat(2_000), "]".repeat(2_000));
    let mut chunked = case("chunked body over the limit", "", 413, Some(-32600), null.clone());
    chunked.headers.push(("transfer-encoding", "chunked".into()));
    chunked.body = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).into_bytes();
    vec![
        case("malformed JSON", r#"{"jsonrpc":"2.0","id":1,"#, 400, Some(-32700), null.clone()),
        case("empty body", "", 400, Some(-32700), null.clone()),
        case("JSON scalar", "42", 400, Some(-32600), null.clone()),
        case("wrong jsonrpc version", r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#, 400, Some(-32600), n(7)),
        case("missing jsonrpc", r#"{"id":"a","method":"ping"}"#, 400, Some(-32600), v("a")),
        case("missing method", r#"{"jsonrpc":"2.0","id":3}"#, 400, Some(-32600), n(3)),
        case("method not a string", r#"{"jsonrpc":"2.0","id":4,"method":12}"#, 400, Some(-32600), n(4)),
        case("null id", r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, 400, Some(-32600), null.clone()),
        case(
            "object id",
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            400,
            Some(-32600),
            null.clone(),
        ),
        case(
            "unknown method",
            r#"{"jsonrpc":"2.0","id":5,"method":"whitelist/explode"}"#,
            200,
            Some(-32601),
            n(5),
        ),
        case(
            "params not an object",
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/list","params":[1]}"#,
            400,
            Some(-32602),
            n(6),
        ),
        case(
            "tools/call without name",
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}"#,
            200,
            Some(-32602),
            n(8),
        ),
        case(
            "tools/call unknown tool",
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"rm_rf"}}"#,
            200,
            Some(-32602),
            n(9),
        ),
        case(
            "tools/call arguments not an object",
            r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"service_status","arguments":"x"}}"#,
            200,
            Some(-32602),
            n(10),
        ),
        case(
            "tools/list bad cursor",
            r#"{"jsonrpc":"2.0","id":11,"method":"tools/list","params":{"cursor":"garbage"}}"#,
            200,
            Some(-32602),
            n(11),
        ),
        case("empty batch", "[]", 400, Some(-32600), null.clone()),
        case("body over max_body_bytes", big.clone(), 413, Some(-32600), null.clone()),
        chunked,
        case("deep nesting", deep, 400, Some(-32700), null.clone()),
        case(
            "bytes that are not UTF-8",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffng\"}".to_vec(),
            400,
            Some(-32700),
            null.clone(),
        ),
        with(case("wrong content type", INIT, 415, Some(-32600), null.clone()), "content-type", "text/plain"),
        with(
            case("charset other than UTF-8", INIT, 415, Some(-32600), null.clone()),
            "content-type",
            "application/json; charset=iso-8859-1",
        ),
        with(case("no content type", INIT, 415, Some(-32600), null.clone()), "content-type", ""),
        with(
            case("foreign Origin", INIT, 403, Some(-32000), null.clone()),
            "origin",
            "https://evil.example.com",
        ),
        with(
            case("Accept without JSON", INIT, 406, Some(-32600), null.clone()),
            "accept",
            "text/event-stream",
        ),
        with(
            case(
                "unsupported protocol version",
                r#"{"jsonrpc":"2.0","id":12,"method":"ping"}"#,
                400,
                None,
                None,
            ),
            "mcp-protocol-version",
            "1999-01-01",
        ),
        with(
            case("batch on 2025-06-18", format!("[{INIT}]"), 400, Some(-32600), None),
            "mcp-protocol-version",
            "2025-06-18",
        ),
        with(
            with(
                case(
                    "Mcp-Method differs from the body",
                    r#"{"jsonrpc":"2.0","id":13,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
                    400,
                    Some(-32020),
                    n(13),
                ),
                "mcp-protocol-version",
                "2026-07-28",
            ),
            "mcp-method",
            "tools/call",
        ),
        Case { method: "GET", ..case("GET on the endpoint", "", 405, Some(-32000), null.clone()) },
        Case { method: "DELETE", ..case("DELETE on the endpoint", "", 405, Some(-32000), null.clone()) },
    ]
}

#[test]
fn bad_requests_get_the_right_status_and_error_and_crash_nothing() {
    let svc = Service::start("workers = 2\n[mcp]\nmax_body_bytes = 4096\n");
    let cases = table();
    assert!(cases.len() >= 25);
    let mut wrong = Vec::new();
    for c in &cases {
        let r = send(&svc.addr, c);
        let body = r.json();
        let code = body.pointer("/error/code").and_then(Value::as_i64);
        let mut problems = Vec::new();
        if r.status != c.status {
            problems.push(format!("status {} (want {})", r.status, c.status));
        }
        if c.code.is_some() && code != c.code {
            problems.push(format!("code {code:?} (want {:?})", c.code));
        }
        if c.status >= 400 && body.pointer("/error/message").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            problems.push("no error message".into());
        }
        if let Some(id) = &c.id {
            if body.get("id") != Some(id) {
                problems.push(format!("id {:?} (want {id})", body.get("id")));
            }
        }
        if !problems.is_empty() {
            wrong.push(format!("{}: {} — {}", c.name, problems.join(", "), String::from_utf8_lossy(&r.body)));
        }
        if c.method == "GET" {
            assert_eq!(r.header("allow"), Some("POST"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    assert!(
        !svc.logs.all().iter().any(|v| sup_event(v, "worker_exited")),
        "a worker died:\n{}",
        svc.logs.dump()
    );
    let ok = http::raw(&svc.addr, format!("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INIT}", INIT.len()).as_bytes()).unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["result"]["protocolVersion"], "2025-06-18");
}

#[test]
fn notifications_and_client_responses_get_202_without_a_body() {
    let svc = Service::start("workers = 1\n");
    for body in [
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
    ] {
        let r = send(&svc.addr, &case("202", body, 202, None, None));
        assert_eq!(r.status, 202, "{body}");
        assert!(r.body.is_empty());
    }
    let batch = format!("[{INIT}, {{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}}]")
        .replace(r#""id":1,"method":"initialize""#, r#""id":1,"method":"ping""#);
    let r =
        send(&svc.addr, &with(case("batch", batch, 200, None, None), "mcp-protocol-version", "2025-03-26"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().map(Vec::len), Some(2), "{:?}", r.json());
}

#[test]
fn dns_rebinding_is_refused_on_loopback() {
    let svc = Service::start("workers = 1\n");
    let r = http::raw(&svc.addr, format!("POST /mcp HTTP/1.1\r\nHost: evil.example.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INIT}", INIT.len()).as_bytes()).unwrap();
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("evil.example.com"));
}

#[test]
fn a_body_that_never_finishes_times_out() {
    let svc = Service::start("workers = 1\n[mcp]\nbody_timeout = 0.5\n");
    let mut s = TcpStream::connect(&svc.addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"").unwrap();
    let started = Instant::now();
    let r = http::read_response(&mut s).unwrap();
    assert_eq!(r.status, 408);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(svc.health()["status"], "ok");
}
