//! The gunicorn-equivalent HTTP limits, enforced by each worker.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{http, Service, PATIENCE};

#[test]
fn oversized_request_lines_and_headers_are_refused_and_the_worker_survives() {
    let svc = Service::start(
        "workers = 1\nlimit_request_line = 100\nlimit_request_fields = 5\nlimit_request_field_size = 60\n",
    );
    let pid = svc.health()["pid"].clone();
    let long_target = format!("/health?{}", "a".repeat(200));
    let r = http::get(&svc.addr, &long_target).unwrap();
    assert_eq!(r.status, 414);
    assert!(r.json()["error"].as_str().unwrap().contains("limit_request_line"), "{r:?}");

    let big_header =
        format!("GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "b".repeat(100));
    let r = http::raw(&svc.addr, big_header.as_bytes()).unwrap();
    assert_eq!(r.status, 431);
    assert!(r.json()["error"].as_str().unwrap().contains("x-big"), "{r:?}");

    let many: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = http::raw(
        &svc.addr,
        format!("GET /health HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 431, "more fields than limit_request_fields");

    let h = svc.health();
    assert_eq!(h["pid"], pid, "the same worker still serves");
}

#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let svc = Service::start("workers = 1\n");
    let r = http::get(&svc.addr, "/nope").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = http::raw(&svc.addr, b"DELETE /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn worker_connections_caps_what_one_worker_holds_open() {
    let svc = Service::start("workers = 1\nworker_connections = 2\nkeepalive = 30\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&svc.addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(http::read_response(&mut s).unwrap().status, 200);
        held.push(s);
    }
    // A third connection waits in the shared queue while the worker is at its cap…
    let mut third = TcpStream::connect(&svc.addr).unwrap();
    third.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    third.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(http::read_response(&mut third).is_err(), "answered beyond worker_connections");
    // …and is served as soon as one of the held connections closes.
    drop(held.pop());
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(http::read_response(&mut third).unwrap().status, 200);
}

#[test]
fn a_request_that_outlasts_request_timeout_gets_a_json_rpc_error() {
    // An "EC2" that accepts connections (the kernel completes them into the queue) and never
    // answers: each AWS call would wait the whole aws.operation_timeout.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    let svc = common::Service::start_with(common::Options {
        config: format!(
            "workers = 1\n[mcp]\nrequest_timeout = 2.0\n[aws]\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\noperation_timeout = 60.0\nmax_attempts = 1\n"
        ),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "AKIAEXAMPLEEXAMPLE00".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "0".repeat(40)),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
        wait_ready: true,
    });
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"whitelist_list","arguments":{"security_group_id":"sg-0123456789abcdef0"}}}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let started = std::time::Instant::now();
    let r = http::raw(&svc.addr, req.as_bytes()).unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "answered after {took:?}, not at request_timeout");
    let v = r.json();
    assert_eq!(v["id"], 7, "{r:?}");
    let message = v.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or_default();
    assert!(message.contains("mcp.request_timeout"), "the error names the setting: {r:?}");
    // A read is stopped at the deadline, and the answer says it changed nothing (only a change
    // is left to finish).
    assert!(message.contains("was stopped; it changes nothing"), "{message}");
    assert_eq!(svc.health()["status"], "ok", "the worker still serves");
}
