//! Every request gets a request id — the client's `X-Request-Id` when it is sane — echoed in the
//! response and carried by every log line of that request, including its access-log line.

mod common;

use common::{event, http, Service};

#[test]
fn request_ids_are_echoed_and_on_every_line_of_the_request() {
    let svc = Service::start("workers = 1\n");
    let given = http::raw(&svc.addr, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-42.a_b:c\r\nUser-Agent: probe/1\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(given.header("x-request-id"), Some("trace-42.a_b:c"));
    let (_, line) = svc.logs.wait(0, "access line", |v| {
        event(v) == "access"
            && v.pointer("/span/request_id").and_then(|r| r.as_str()) == Some("trace-42.a_b:c")
    });
    assert_eq!(line["status"], 200);
    assert_eq!(line["path"], "/health");
    assert_eq!(line["user_agent"], "probe/1");
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["bytes"].as_u64().unwrap() > 0);

    let generated = http::get(&svc.addr, "/health").unwrap();
    let id = generated.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 24, "{id}");
    let unsafe_id = "x".repeat(200);
    let req =
        format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: {unsafe_id}\r\nConnection: close\r\n\r\n");
    let replaced = http::raw(&svc.addr, req.as_bytes()).unwrap();
    assert_ne!(
        replaced.header("x-request-id"),
        Some(unsafe_id.as_str()),
        "an over-long id is not taken into logs"
    );

    // An MCP request's own log lines (here: the refusal of a bad body) carry its id too.
    let body = "{not json";
    let req = format!("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Request-Id: mcp-7\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let r = http::raw(&svc.addr, req.as_bytes()).unwrap();
    assert_eq!(r.header("x-request-id"), Some("mcp-7"));
    svc.logs.wait(0, "mcp access line", |v| {
        event(v) == "access"
            && v.pointer("/span/request_id").and_then(|r| r.as_str()) == Some("mcp-7")
            && v["status"] == 400
    });
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Request-Id: mcp-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ping}",
        ping.len()
    );
    let pong = http::raw(&svc.addr, req.as_bytes()).unwrap();
    assert_eq!(pong.status, 200);
    // The reply is written as text straight from the result, framed by its length (not chunks).
    assert_eq!(String::from_utf8_lossy(&pong.body), r#"{"id":1,"jsonrpc":"2.0","result":{}}"#);
    assert_eq!(pong.header("content-length"), Some(pong.body.len().to_string().as_str()));
    assert_eq!(pong.header("transfer-encoding"), None);
    svc.logs.wait(0, "access line with the MCP method", |v| {
        event(v) == "access"
            && v.pointer("/span/request_id").and_then(|r| r.as_str()) == Some("mcp-8")
            && v.pointer("/span/mcp_method").and_then(|m| m.as_str()) == Some("ping")
    });
    for v in
        svc.logs.all().iter().filter(|v| v.pointer("/span/name").and_then(|n| n.as_str()) == Some("request"))
    {
        assert!(v.pointer("/span/request_id").is_some(), "{v}");
    }
}

#[test]
fn access_lines_can_go_to_their_own_file_which_usr1_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let svc = Service::start(&format!(
        "workers = 2\n[log]\nformat = \"json\"\naccess_file = \"{}\"\n",
        access.display()
    ));
    for i in 0..5 {
        let req =
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: a{i}\r\nConnection: close\r\n\r\n");
        assert_eq!(http::raw(&svc.addr, req.as_bytes()).unwrap().status, 200);
    }
    let wait_for = |path: &std::path::Path, id: &str| {
        let deadline = std::time::Instant::now() + common::PATIENCE;
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(&format!("\"request_id\":\"{id}\"")) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "{id} not in {}:\n{text}", path.display());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // Two workers flush their batches on their own clocks: a4 can be written before a2.
    for i in 0..5 {
        wait_for(&access, &format!("a{i}"));
    }
    let text = std::fs::read_to_string(&access).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains("\"event\":\"access\"")).count(), 5, "{text}");
    assert!(!svc.logs.all().iter().any(|v| event(v) == "access"), "access lines left the main log");

    std::fs::rename(&access, dir.path().join("access.log.1")).unwrap();
    let from = svc.logs.len();
    svc.signal(nix::sys::signal::Signal::SIGUSR1);
    // Both workers must have reopened before the next request, whichever worker takes it.
    let mut reopened = std::collections::HashSet::new();
    let mut at = from;
    while reopened.len() < 2 {
        let (i, v) = svc.logs.wait(at, "a worker reopened", |v| {
            event(v) == "logs_reopened" && v.pointer("/span/name").and_then(|n| n.as_str()) == Some("worker")
        });
        reopened.insert(v.pointer("/span/pid").and_then(|p| p.as_i64()));
        at = i + 1;
    }
    let req = "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: after\r\nConnection: close\r\n\r\n";
    assert_eq!(http::raw(&svc.addr, req.as_bytes()).unwrap().status, 200);
    wait_for(&access, "after");
    let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
    assert!(!old.contains("\"request_id\":\"after\""));
}

/// Workers write their log lines in batches: whatever was answered before a graceful stop is in
/// the access log after it, none lost in a buffer.
#[test]
fn every_answered_request_is_in_the_access_log_after_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let mut svc = Service::start(&format!(
        "workers = 2\n[log]\nformat = \"json\"\naccess_file = \"{}\"\n",
        access.display()
    ));
    const N: usize = 200;
    for i in 0..N {
        let req =
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: stop{i}\r\nConnection: close\r\n\r\n");
        assert_eq!(http::raw(&svc.addr, req.as_bytes()).unwrap().status, 200);
    }
    // At once: the last answers are still in the workers' buffers.
    svc.signal(nix::sys::signal::Signal::SIGTERM);
    let status = svc.wait_exit(common::PATIENCE).expect("a graceful stop");
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&access).unwrap();
    let ids: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| event(v) == "access")
        .filter_map(|v| v.pointer("/span/request_id").and_then(|r| r.as_str()).map(String::from))
        .collect();
    for i in 0..N {
        assert!(ids.contains(&format!("stop{i}")), "stop{i} missing from the access log:\n{text}");
    }
}
