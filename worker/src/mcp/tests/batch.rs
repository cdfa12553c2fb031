//! JSON-RPC batches: accepted up to 2025-03-26 (and without a version header), refused after.

use serde_json::json;

use super::*;
use crate::mcp::jsonrpc::{INVALID_REQUEST, METHOD_NOT_FOUND, UNSUPPORTED_PROTOCOL_VERSION};

fn ping(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

fn note() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

#[tokio::test]
async fn batches_are_accepted_for_old_revisions() {
    let d = dispatcher();
    let stdio = TransportMeta::stdio();
    for meta in [http(None), http(Some("2024-11-05")), http(Some("2025-03-26")), stdio] {
        let batch = json!([ping(1), note(), request(json!("t"), "tools/list", json!({})), ping(2)]);
        let out = d.handle(batch, &meta).await;
        assert_eq!(out.http_status(), 200);
        let replies = body(&out).as_array().cloned().unwrap_or_default();
        let ids: Vec<Value> = replies.iter().map(|r| r["id"].clone()).collect();
        assert_eq!(ids, [json!(1), json!("t"), json!(2)], "one reply per request, in order");
        assert!(replies[1]["result"]["tools"].is_array());
    }
}

#[tokio::test]
async fn batches_are_refused_for_newer_revisions() {
    let d = dispatcher();
    for version in ["2025-06-18", "2025-11-25", "2026-07-28"] {
        let out = d.handle(json!([ping(1)]), &http(Some(version))).await;
        assert_eq!(error(&out), (400, INVALID_REQUEST, Value::Null), "{version}");
        let message = body(&out)["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("batches") && message.contains(version), "{message}");
    }
    let out = d.handle(json!([ping(1)]), &http(Some("2099-01-01"))).await;
    assert_eq!(error(&out), (400, UNSUPPORTED_PROTOCOL_VERSION, Value::Null));
}

#[tokio::test]
async fn notification_only_batches_have_no_body() {
    let d = dispatcher();
    let batch = json!([note(), {"jsonrpc": "2.0", "id": 9, "result": {}}, note()]);
    let out = d.handle(batch, &http(None)).await;
    assert_eq!((out.http_status(), out.body()), (202, None));
}

#[tokio::test]
async fn invalid_members_get_their_own_errors() {
    let d = dispatcher();
    let batch =
        json!([1, {"jsonrpc": "2.0", "id": 3}, {"jsonrpc": "2.0", "id": 4, "method": "nope"}, [ping(5)]]);
    let out = d.handle(batch, &http(None)).await;
    let replies = body(&out).as_array().cloned().unwrap_or_default();
    let got: Vec<(Value, Value)> =
        replies.iter().map(|r| (r["id"].clone(), r["error"]["code"].clone())).collect();
    assert_eq!(
        got,
        [
            (Value::Null, json!(INVALID_REQUEST)),
            (json!(3), json!(INVALID_REQUEST)),
            (json!(4), json!(METHOD_NOT_FOUND)),
            (Value::Null, json!(INVALID_REQUEST)),
        ]
    );
}

#[tokio::test]
async fn initialize_may_not_be_batched() {
    let d = dispatcher();
    let init = request(json!("i"), "initialize", json!({"protocolVersion": "2025-03-26"}));
    let out = d.handle(json!([init, ping(2)]), &http(None)).await;
    let replies = body(&out).as_array().cloned().unwrap_or_default();
    assert_eq!(replies[0]["id"], json!("i"));
    assert_eq!(replies[0]["error"]["code"], json!(INVALID_REQUEST));
    assert_eq!(replies[1]["result"], json!({}));
}

#[tokio::test]
async fn empty_and_oversized_batches_are_refused() {
    let d = dispatcher();
    assert_eq!(error(&d.handle(json!([]), &http(None)).await), (400, INVALID_REQUEST, Value::Null));
    let big: Vec<Value> = (0..=MAX_BATCH as i64).map(ping).collect();
    let out = d.handle(Value::Array(big), &http(None)).await;
    assert_eq!(error(&out), (400, INVALID_REQUEST, Value::Null));
    let fits: Vec<Value> = (0..MAX_BATCH as i64).map(ping).collect();
    let out = d.handle(Value::Array(fits), &http(None)).await;
    assert_eq!(body(&out).as_array().map(Vec::len), Some(MAX_BATCH));
}
