//! 2026-07-28: server/discover, per-request `_meta`, header validation, fallback for old clients.

use serde_json::json;

use super::*;
use crate::mcp::era::META_SERVER_INFO;
use crate::mcp::jsonrpc::{HEADER_MISMATCH, INVALID_PARAMS, METHOD_NOT_FOUND, UNSUPPORTED_PROTOCOL_VERSION};

fn discover(id: Value) -> Value {
    modern_request(id, "server/discover", json!({}))
}

fn assert_modern_result(r: &Value) {
    assert_eq!(r["resultType"], json!("complete"), "{r}");
    assert_eq!(
        r["_meta"][META_SERVER_INFO],
        json!({"name": "awswhitelist", "title": "AWS whitelist", "version": "9.9.9"})
    );
}

#[tokio::test]
async fn discover_answers_a_new_client() {
    let d = dispatcher();
    let out = d.handle(discover(json!("discover-1")), &modern_http("server/discover", None)).await;
    assert_eq!(body(&out)["id"], json!("discover-1"));
    let r = result(&out);
    assert_modern_result(r);
    assert_eq!(r["supportedVersions"], json!(ProtocolVersion::supported_strings()));
    assert_eq!(r["capabilities"], json!({"tools": {"listChanged": false}}));
    assert_eq!(r["instructions"], json!("Manage security group rules."));
    assert_eq!((r["ttlMs"].as_u64().is_some(), &r["cacheScope"]), (true, &json!("private")));
}

#[tokio::test]
async fn discover_without_client_info_is_served() {
    let d = dispatcher();
    let mut req = discover(json!(1));
    if let Some(meta) = req["params"]["_meta"].as_object_mut() {
        meta.remove("io.modelcontextprotocol/clientInfo");
    }
    assert_modern_result(result(&d.handle(req, &modern_http("server/discover", None)).await));
}

#[tokio::test]
async fn the_python_sdk_probe_shape_succeeds() {
    // mcp 2.x `send_discover`: MCP-Protocol-Version and Mcp-Method headers, envelope in _meta.
    let d = dispatcher();
    let meta = TransportMeta::from_headers([
        ("mcp-protocol-version", &b"2026-07-28"[..]),
        ("mcp-method", b"server/discover"),
        ("accept", b"application/json, text/event-stream"),
    ]);
    let out = d.handle_bytes(discover(json!(0)).to_string().as_bytes(), &meta).await;
    assert_modern_result(result(&out));
}

#[tokio::test]
async fn modern_conversation_across_workers() {
    // Each request on a fresh dispatcher: nothing may depend on an earlier request.
    let list = |cursor: Option<Value>| {
        let params = cursor.map_or(json!({}), |c| json!({"cursor": c}));
        modern_request(json!(2), "tools/list", params)
    };
    let out = dispatcher().handle(list(None), &modern_http("tools/list", None)).await;
    let r = result(&out).clone();
    assert_modern_result(&r);
    assert!(r["ttlMs"].is_u64() && r["cacheScope"].is_string());
    let echo = r["tools"][1].clone();
    assert_eq!((&echo["name"], &echo["title"]), (&json!("echo"), &json!("echo title")));

    let out =
        dispatcher().handle(list(Some(r["nextCursor"].clone())), &modern_http("tools/list", None)).await;
    let r = result(&out);
    assert_eq!(r["tools"][1]["name"], json!("service_status"));
    assert_eq!(r["tools"][1]["outputSchema"]["required"][0], json!("service"));

    let call = modern_request(json!(3), "tools/call", json!({"name": "service_status", "arguments": {}}));
    let out = dispatcher().handle(call, &modern_http("tools/call", Some("service_status"))).await;
    let r = result(&out);
    assert_modern_result(r);
    assert_eq!(r["structuredContent"]["service"], json!("awswhitelist"));
    assert_eq!(r["structuredContent"]["protocol_versions"][0], json!("2026-07-28"));
}

#[tokio::test]
async fn modern_tool_errors() {
    let d = dispatcher();
    let bad_args = modern_request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "x", "extra": 1}}),
    );
    let out = d.handle(bad_args, &modern_http("tools/call", Some("echo"))).await;
    let r = result(&out);
    assert_modern_result(r);
    assert_eq!(r["isError"], json!(true));
    assert!(r["content"][0]["text"].as_str().is_some_and(|t| t.contains("unknown argument 'extra'")));

    let unknown = modern_request(json!(2), "tools/call", json!({"name": "nope"}));
    let out = d.handle(unknown, &modern_http("tools/call", Some("nope"))).await;
    assert_eq!(error(&out), (400, INVALID_PARAMS, json!(2)));

    let bad_cursor = modern_request(json!(3), "tools/list", json!({"cursor": "x"}));
    let out = d.handle(bad_cursor, &modern_http("tools/list", None)).await;
    assert_eq!(error(&out), (400, INVALID_PARAMS, json!(3)));

    let boom = modern_request(json!(4), "tools/call", json!({"name": "boom"}));
    let out = d.handle(boom, &modern_http("tools/call", Some("boom"))).await;
    assert_eq!(error(&out).1, crate::mcp::jsonrpc::INTERNAL_ERROR);
}

#[tokio::test]
async fn missing_envelope_fields_are_invalid_params_with_400() {
    let d = dispatcher();
    let no_meta = request(json!(10), "server/discover", json!({}));
    let out = d.handle(no_meta, &modern_http("server/discover", None)).await;
    assert_eq!(error(&out), (400, INVALID_PARAMS, json!(10)));

    let mut no_caps = discover(json!(11));
    if let Some(meta) = no_caps["params"]["_meta"].as_object_mut() {
        meta.remove("io.modelcontextprotocol/clientCapabilities");
    }
    let out = d.handle(no_caps, &modern_http("server/discover", None)).await;
    assert_eq!(error(&out), (400, INVALID_PARAMS, json!(11)));
}

#[tokio::test]
async fn version_negotiation_errors() {
    let d = dispatcher();
    let with_body_version = |v: &str| {
        let mut req = discover(json!(301));
        req["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(v);
        req
    };
    // Both header and body name a version nobody serves: -32022 listing what is served.
    let mut meta = modern_http("server/discover", None);
    meta.protocol_version = Some("v999.0.0".into());
    let out = d.handle(with_body_version("v999.0.0"), &meta).await;
    assert_eq!(error(&out), (400, UNSUPPORTED_PROTOCOL_VERSION, json!(301)));
    let data = &body(&out)["error"]["data"];
    assert_eq!(data["requested"], json!("v999.0.0"));
    let discovered =
        result(&d.handle(discover(json!(1)), &modern_http("server/discover", None)).await).clone();
    let listed = discovered["supportedVersions"].as_array().cloned().unwrap_or_default();
    let supported = data["supported"].as_array().cloned().unwrap_or_default();
    assert!(!supported.is_empty() && supported.iter().all(|v| listed.contains(v)));

    // Header and body disagree: -32020 before the version is judged.
    let out = d.handle(with_body_version("v999.0.0"), &modern_http("server/discover", None)).await;
    assert_eq!(error(&out), (400, HEADER_MISMATCH, json!(301)));

    // A modern body over HTTP without the version header.
    let mut no_header = modern_http("server/discover", None);
    no_header.protocol_version = None;
    assert_eq!(error(&d.handle(discover(json!(5)), &no_header).await), (400, HEADER_MISMATCH, json!(5)));
}

#[tokio::test]
async fn standard_headers_must_mirror_the_body() {
    let d = dispatcher();
    let list = || modern_request(json!(0), "tools/list", json!({}));
    let call = || modern_request(json!(1), "tools/call", json!({"name": "service_status"}));
    let mut no_method = modern_http("tools/list", None);
    no_method.mcp_method = None;
    let cases = [
        (list(), modern_http("prompts/list", None), "mismatched Mcp-Method"),
        (list(), no_method, "missing Mcp-Method"),
        (list(), modern_http("TOOLS/LIST", None), "values are case-sensitive"),
        (call(), modern_http("tools/call", None), "missing Mcp-Name"),
        (call(), modern_http("tools/call", Some("wrong_tool_name")), "mismatched Mcp-Name"),
    ];
    for (req, meta, why) in cases {
        let id = req["id"].clone();
        assert_eq!(error(&d.handle(req, &meta).await), (400, HEADER_MISMATCH, id), "{why}");
    }
    // Header names are case-insensitive and values are trimmed by from_headers.
    let meta = TransportMeta::from_headers([
        ("MCP-PROTOCOL-VERSION", &b"2026-07-28"[..]),
        ("MCP-METHOD", b"tools/call"),
        ("mcp-name", b"  service_status  "),
    ]);
    assert_modern_result(result(&d.handle(call(), &meta).await));
    let encoded = modern_http("tools/call", Some("=?base64?c2VydmljZV9zdGF0dXM=?="));
    assert_modern_result(result(&d.handle(call(), &encoded).await));
}

#[tokio::test]
async fn removed_and_unknown_methods_are_404() {
    let d = dispatcher();
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "unknown/method",
    ] {
        let req = modern_request(json!(500), method, json!({}));
        let out = d.handle(req, &modern_http(method, None)).await;
        assert_eq!(error(&out), (404, METHOD_NOT_FOUND, json!(500)), "{method}");
    }
}

#[tokio::test]
async fn stdio_serves_modern_requests_without_headers() {
    let d = dispatcher();
    let out = d.handle(discover(json!(1)), &TransportMeta::stdio()).await;
    assert_modern_result(result(&out));
    let call = modern_request(json!(2), "tools/call", json!({"name": "service_status"}));
    let r = result(&d.handle(call, &TransportMeta::stdio()).await).clone();
    assert_eq!(r["structuredContent"]["worker"], json!(4));
}

#[tokio::test]
async fn modern_notifications_and_responses() {
    let d = dispatcher();
    let cancelled =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
    assert_eq!(d.handle(cancelled, &http(Some("2026-07-28"))).await, Outcome::Accepted);
    let response = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
    let out = d.handle(response, &http(Some("2026-07-28"))).await;
    assert_eq!(error(&out), (400, crate::mcp::jsonrpc::INVALID_REQUEST, Value::Null));
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let out = d.handle(note, &http(Some("1.0"))).await;
    assert_eq!(error(&out), (400, UNSUPPORTED_PROTOCOL_VERSION, Value::Null));
}

#[tokio::test]
async fn dual_era_client_falls_back_cleanly() {
    let d = dispatcher();
    // A client that negotiated 2025-11-25 earlier probes server/discover: the answer is a
    // plain method-not-found (not -32022, not HTTP 4xx), the legacy signal.
    let probe = request(json!(1), "server/discover", json!({}));
    let out = d.handle(probe, &http(Some("2025-11-25"))).await;
    let (status, code, _) = error(&out);
    assert_eq!((status, code), (200, METHOD_NOT_FOUND));
    // It continues with initialize and the legacy methods, statelessly.
    let init = request(json!(2), "initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}}));
    assert_eq!(result(&d.handle(init, &http(None)).await)["protocolVersion"], json!("2025-11-25"));
    let list = request(json!(3), "tools/list", json!({}));
    assert!(result(&d.handle(list, &http(Some("2025-11-25"))).await)["tools"].is_array());

    // A client probing with a modern version we do not have gets -32022 naming what we serve,
    // including the handshake revisions, so it can fall back to initialize.
    let mut meta = modern_http("server/discover", None);
    meta.protocol_version = Some("2027-01-01".into());
    let mut req = discover(json!(4));
    req["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2027-01-01");
    let out = d.handle(req, &meta).await;
    assert_eq!(error(&out).1, UNSUPPORTED_PROTOCOL_VERSION);
    assert!(body(&out)["error"]["data"]["supported"]
        .as_array()
        .is_some_and(|s| s.contains(&json!("2025-11-25"))));
}
