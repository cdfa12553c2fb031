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
    for v in
        svc.logs.all().iter().filter(|v| v.pointer("/span/name").and_then(|n| n.as_str()) == Some("request"))
    {
        assert!(v.pointer("/span/request_id").is_some(), "{v}");
    }
}
