//! Every error code, from raw bytes, with the HTTP status and the echoed id.

use serde_json::json;

use super::*;
use crate::mcp::jsonrpc::{
    HEADER_MISMATCH, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
};

struct Case {
    what: &'static str,
    body: Vec<u8>,
    meta: TransportMeta,
    status: u16,
    code: i64,
    id: Value,
}

fn case(
    what: &'static str,
    body: impl Into<Vec<u8>>,
    meta: TransportMeta,
    status: u16,
    code: i64,
    id: Value,
) -> Case {
    Case { what, body: body.into(), meta, status, code, id }
}

// One row per case: the table reads as a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let none = || http(None);
    let null = Value::Null;
    let deep = "[".repeat(200) + &"]".repeat(200);
    let modern_call = |name: &str| modern_request(json!(21), "tools/call", json!({"name": name})).to_string();
    vec![
        case("truncated JSON", &b"{\"jsonrpc\":\"2.0\","[..], none(), 400, PARSE_ERROR, null.clone()),
        case("empty body", &b""[..], none(), 400, PARSE_ERROR, null.clone()),
        case("bad UTF-8", &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffng\"}"[..], none(), 400, PARSE_ERROR, null.clone()),
        case("deep nesting", deep, none(), 400, PARSE_ERROR, null.clone()),
        case("not an object", &b"42"[..], none(), 400, INVALID_REQUEST, null.clone()),
        case("string message", &b"\"ping\""[..], none(), 400, INVALID_REQUEST, null.clone()),
        case("missing jsonrpc", &br#"{"id":1,"method":"ping"}"#[..], none(), 400, INVALID_REQUEST, json!(1)),
        case("wrong jsonrpc", &br#"{"jsonrpc":"1.0","id":"a","method":"ping"}"#[..], none(), 400, INVALID_REQUEST, json!("a")),
        case("missing method", &br#"{"jsonrpc":"2.0","id":2}"#[..], none(), 400, INVALID_REQUEST, json!(2)),
        case("numeric method", &br#"{"jsonrpc":"2.0","id":3,"method":7}"#[..], none(), 400, INVALID_REQUEST, json!(3)),
        case("null id", &br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#[..], none(), 400, INVALID_REQUEST, null.clone()),
        case("boolean id", &br#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#[..], none(), 400, INVALID_REQUEST, null.clone()),
        case("fractional id", &br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#[..], none(), 400, INVALID_REQUEST, json!(1.5)),
        case("string params", &br#"{"jsonrpc":"2.0","id":4,"method":"ping","params":"x"}"#[..], none(), 400, INVALID_REQUEST, json!(4)),
        case("array params", &br#"{"jsonrpc":"2.0","id":5,"method":"ping","params":[]}"#[..], none(), 400, INVALID_PARAMS, json!(5)),
        case("unknown method", &br#"{"jsonrpc":"2.0","id":6,"method":"nope"}"#[..], none(), 200, METHOD_NOT_FOUND, json!(6)),
        case("unknown tool", &br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#[..], none(), 200, INVALID_PARAMS, json!(7)),
        case("tool name not a string", &br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":1}}"#[..], none(), 200, INVALID_PARAMS, json!(8)),
        case("tool crashed", &br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"boom"}}"#[..], none(), 200, INTERNAL_ERROR, json!(9)),
        case("unsupported version header", &br#"{"jsonrpc":"2.0","id":10,"method":"ping"}"#[..], http(Some("2099-01-01")), 400, UNSUPPORTED_PROTOCOL_VERSION, json!(10)),
        case("batch on a new revision", &br#"[{"jsonrpc":"2.0","id":11,"method":"ping"}]"#[..], http(Some("2025-06-18")), 400, INVALID_REQUEST, null.clone()),
        case("empty batch", &b"[]"[..], none(), 400, INVALID_REQUEST, null.clone()),
        case("modern request without _meta", &br#"{"jsonrpc":"2.0","id":12,"method":"tools/list"}"#[..], modern_http("tools/list", None), 400, INVALID_PARAMS, json!(12)),
        case("Mcp-Name mismatch", modern_call("service_status"), modern_http("tools/call", Some("echo")), 400, HEADER_MISMATCH, json!(21)),
        case("modern unknown method", modern_request(json!(13), "x/y", json!({})).to_string(), modern_http("x/y", None), 404, METHOD_NOT_FOUND, json!(13)),
    ]
}

#[tokio::test]
async fn every_error_has_its_code_status_and_id() {
    let d = dispatcher();
    for c in cases() {
        let out = d.handle_bytes(&c.body, &c.meta).await;
        assert_eq!(error(&out), (c.status, c.code, c.id), "{}", c.what);
    }
}

#[tokio::test]
async fn parse_errors_say_what_is_wrong() {
    let d = dispatcher();
    let out = d.handle_bytes(b"{\"a\":\"\xe9\"}", &http(None)).await;
    let message = body(&out)["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("UTF-8"), "{message}");
    let deep = "{\"a\":".repeat(100_000);
    let out = d.handle_bytes(deep.as_bytes(), &http(None)).await;
    assert!(body(&out)["error"]["message"].as_str().is_some_and(|m| m.contains("nests deeper")));
}
