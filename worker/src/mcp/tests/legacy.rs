//! Handshake-era revisions (2024-11-05 … 2025-11-25), served statelessly.

use serde_json::json;

use super::*;
use crate::mcp::jsonrpc::{INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND};

fn init(version: &str) -> Value {
    request(
        json!(1),
        "initialize",
        json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}),
    )
}

#[tokio::test]
async fn initialize_negotiation_matrix() {
    let d = dispatcher();
    for (asked, offered) in crate::mcp::version::tests::NEGOTIATION {
        // Clients send no MCP-Protocol-Version on initialize; some send their own.
        for meta in [http(None), http(Some(offered))] {
            let out = d.handle(init(asked), &meta).await;
            let r = result(&out);
            assert_eq!(r["protocolVersion"], json!(offered), "asked {asked}");
            assert_eq!(r["capabilities"]["tools"], json!({"listChanged": false}));
            assert_eq!(r["serverInfo"]["name"], json!("awswhitelist"));
            assert_eq!(r["instructions"], json!("Manage security group rules."));
            assert!(r.get("resultType").is_none(), "no 2026 fields before 2026: {r}");
            let titled = offered >= "2025-06-18";
            assert_eq!(r["serverInfo"].get("title").is_some(), titled, "{asked}: {r}");
            assert_eq!(out.negotiated_version().map(|v| v.as_str()), Some(offered));
        }
    }
}

#[tokio::test]
async fn initialize_needs_a_protocol_version() {
    let d = dispatcher();
    for params in [json!({}), json!({"protocolVersion": 20250618})] {
        let out = d.handle(request(json!("i"), "initialize", params), &http(None)).await;
        assert_eq!(error(&out), (200, INVALID_PARAMS, json!("i")));
    }
    let no_params = json!({"jsonrpc": "2.0", "id": 2, "method": "initialize"});
    assert_eq!(error(&d.handle(no_params, &http(None)).await), (200, INVALID_PARAMS, json!(2)));
}

#[tokio::test]
async fn notifications_and_client_responses_are_accepted() {
    let d = dispatcher();
    for version in [None, Some("2025-03-26"), Some("2025-11-25")] {
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(d.handle(initialized, &http(version)).await, Outcome::Accepted);
        let cancelled =
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
        assert_eq!(d.handle(cancelled, &http(version)).await, Outcome::Accepted);
        let response = json!({"jsonrpc": "2.0", "id": 5, "result": {}});
        let out = d.handle(response, &http(version)).await;
        assert_eq!((out.http_status(), out.body()), (202, None));
    }
}

#[tokio::test]
async fn ping_answers_an_empty_object() {
    let d = dispatcher();
    for version in [None, Some("2024-11-05"), Some("2025-06-18"), Some("2025-11-25")] {
        let out = d.handle(json!({"jsonrpc": "2.0", "id": "123", "method": "ping"}), &http(version)).await;
        assert_eq!(body(&out), &json!({"jsonrpc": "2.0", "id": "123", "result": {}}));
    }
}

#[tokio::test]
async fn tools_list_pages_without_any_session() {
    let d = dispatcher();
    let meta = http(Some("2025-11-25"));
    let first = d.handle(request(json!(1), "tools/list", json!({})), &meta).await;
    let r = result(&first);
    let names: Vec<&str> =
        r["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["boom", "echo"]);
    for t in r["tools"].as_array().into_iter().flatten() {
        assert!(t["description"].is_string() && t["inputSchema"]["type"] == json!("object"), "{t}");
    }
    let cursor = r["nextCursor"].clone();
    assert!(cursor.is_string() && r.get("ttlMs").is_none());

    // The next page from another worker (a fresh dispatcher with the same tools).
    let other = dispatcher();
    let second = other.handle(request(json!(2), "tools/list", json!({"cursor": cursor})), &meta).await;
    let r = result(&second);
    let names: Vec<&str> =
        r["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["fail", "service_status"]);
    assert!(r.get("nextCursor").is_none());
}

#[tokio::test]
async fn tool_fields_follow_the_revision() {
    let d = dispatcher();
    let status_of = |out: &Outcome| -> Value {
        let tools = result(out)["tools"].as_array().cloned().unwrap_or_default();
        tools.into_iter().find(|t| t["name"] == json!("service_status")).unwrap_or_default()
    };
    let cursor = {
        let out = d.handle(request(json!(1), "tools/list", json!(null)), &http(None)).await;
        result(&out)["nextCursor"].clone()
    };
    let params = json!({"cursor": cursor});
    let old = status_of(
        &d.handle(request(json!(2), "tools/list", params.clone()), &http(Some("2024-11-05"))).await,
    );
    assert!(old.get("annotations").is_none() && old.get("outputSchema").is_none(), "{old}");
    let mid = status_of(
        &d.handle(request(json!(3), "tools/list", params.clone()), &http(Some("2025-03-26"))).await,
    );
    assert_eq!(mid["annotations"]["readOnlyHint"], json!(true));
    assert!(mid.get("title").is_none());
    let new = status_of(&d.handle(request(json!(4), "tools/list", params), &http(Some("2025-06-18"))).await);
    assert_eq!(new["title"], json!("Service status"));
    assert_eq!(new["outputSchema"]["type"], json!("object"));
}

#[tokio::test]
async fn bad_cursors_are_invalid_params() {
    let d = dispatcher();
    for cursor in [json!("bogus"), json!(""), json!(7), json!({"o": 1})] {
        let out = d.handle(request(json!(9), "tools/list", json!({"cursor": cursor})), &http(None)).await;
        assert_eq!(error(&out), (200, INVALID_PARAMS, json!(9)), "{cursor}");
    }
}

#[tokio::test]
async fn tools_call_success_with_and_without_structured_content() {
    let d = dispatcher();
    let call = request(json!(1), "tools/call", json!({"name": "service_status", "arguments": {}}));
    let out = d.handle(call.clone(), &http(Some("2025-06-18"))).await;
    let r = result(&out);
    assert_eq!(r["content"][0]["type"], json!("text"));
    assert_eq!(r["structuredContent"]["worker"], json!(4));
    assert_eq!(r["structuredContent"]["generation"], json!(2));
    assert!(r.get("isError").is_none() && r.get("resultType").is_none());
    let text: Value =
        serde_json::from_str(r["content"][0]["text"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(text, r["structuredContent"]);

    let out = d.handle(call, &http(Some("2025-03-26"))).await;
    let r = result(&out);
    assert!(r.get("structuredContent").is_none() && r["content"][0]["text"].is_string());
}

#[tokio::test]
async fn arguments_reach_the_tool_with_caller_info() {
    let d = dispatcher();
    let mut meta = http(None);
    std::sync::Arc::make_mut(&mut meta.caller).identity = Some("alice".into());
    let call = request(
        json!("c1"),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "hi", "times": 2.0}}),
    );
    let r = d.handle(call, &meta).await;
    assert_eq!(
        result(&r)["content"][0]["text"].as_str().and_then(|t| serde_json::from_str::<Value>(t).ok()),
        Some(json!({"echo": "hi", "times": 2, "caller": "alice", "request": "c1"}))
    );
}

#[tokio::test]
async fn tool_failures_are_results_and_internal_errors_are_rpc_errors() {
    let d = dispatcher();
    let fail = request(json!(1), "tools/call", json!({"name": "fail"}));
    let out = d.handle(fail, &http(None)).await;
    let r = result(&out);
    assert_eq!(r["isError"], json!(true));
    assert_eq!(r["content"][0]["text"], json!("the upstream API said no"));

    let boom = request(json!(2), "tools/call", json!({"name": "boom"}));
    let out = d.handle(boom, &http(None)).await;
    assert_eq!(error(&out), (200, INTERNAL_ERROR, json!(2)));
    assert!(!body(&out).to_string().contains("bug"), "internal detail leaked");
}

#[tokio::test]
async fn unknown_tools_and_malformed_calls_are_invalid_params() {
    let d = dispatcher();
    let cases = [
        json!({"name": "nope"}),
        json!({"arguments": {}}),
        json!({"name": 5}),
        json!({"name": "echo", "arguments": "message=hi"}),
        json!({"name": "echo", "arguments": ["hi"]}),
    ];
    for params in cases {
        let out = d.handle(request(json!(3), "tools/call", params.clone()), &http(None)).await;
        assert_eq!(error(&out), (200, INVALID_PARAMS, json!(3)), "{params}");
    }
    let out = d.handle(request(json!(3), "tools/call", json!({"name": "nope"})), &http(None)).await;
    assert_eq!(body(&out)["error"]["message"], json!("Unknown tool: nope"));
}

#[tokio::test]
async fn argument_errors_depend_on_the_revision() {
    let d = dispatcher();
    let bad = || request(json!(4), "tools/call", json!({"name": "echo", "arguments": {"message": 1}}));
    for version in [None, Some("2024-11-05"), Some("2025-06-18")] {
        let out = d.handle(bad(), &http(version)).await;
        assert_eq!(error(&out), (200, INVALID_PARAMS, json!(4)));
        assert_eq!(body(&out)["error"]["data"], json!({"tool": "echo", "argument": "message"}));
    }
    let out = d.handle(bad(), &http(Some("2025-11-25"))).await;
    let r = result(&out);
    assert_eq!(r["isError"], json!(true));
    let text = r["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("argument 'message' must be a string"), "{text}");

    let missing = request(json!(5), "tools/call", json!({"name": "echo"}));
    let out = d.handle(missing, &http(Some("2025-11-25"))).await;
    assert!(result(&out)["content"][0]["text"].as_str().is_some_and(|t| t.contains("'message' is required")));
}

#[tokio::test]
async fn discover_under_a_handshake_revision_is_method_not_found() {
    let d = dispatcher();
    for version in [None, Some("2025-03-26"), Some("2025-11-25")] {
        let out = d.handle(request(json!(7), "server/discover", json!({})), &http(version)).await;
        // 200 + -32601: not a "recognized modern error", so dual-era clients fall back.
        assert_eq!(error(&out), (200, METHOD_NOT_FOUND, json!(7)));
    }
}

#[tokio::test]
async fn unknown_methods() {
    let d = dispatcher();
    for method in ["resources/list", "prompts/list", "logging/setLevel", "tools/List", ""] {
        let out = d.handle(request(json!(8), method, json!({})), &http(Some("2025-06-18"))).await;
        assert_eq!(error(&out), (200, METHOD_NOT_FOUND, json!(8)), "{method:?}");
    }
}

#[tokio::test]
async fn stdio_tracks_the_negotiated_revision_through_the_outcome() {
    let d = dispatcher();
    let mut meta = TransportMeta::stdio();
    let out = d.handle(init("2025-11-25"), &meta).await;
    if let Some(v) = out.negotiated_version() {
        meta = meta.with_protocol_version(v.as_str());
    }
    let bad = request(json!(2), "tools/call", json!({"name": "echo", "arguments": {}}));
    let out = d.handle(bad, &meta).await;
    assert_eq!(result(&out)["isError"], json!(true), "2025-11-25 semantics over stdio");
}
