//! `Mcp-Param-*` headers against the body of a `tools/call`: a disagreement is -32020 with HTTP
//! 400 and the tool never runs.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::mcp::jsonrpc::HEADER_MISMATCH;

struct Counting(ToolSpec, Arc<AtomicUsize>);

impl Tool for Counting {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn call<'a>(&'a self, _: Map<String, Value>, _: &'a CallContext) -> ToolFuture<'a> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(ToolOutput::text("ran")) })
    }
}

fn counting() -> (Dispatcher, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let schema = json!({"type": "object", "properties": {
        "security_group_id": {"type": "string", "x-mcp-header": "Security-Group-Id"},
        "port": {"type": "integer", "x-mcp-header": "Port"}}});
    let mut registry = Registry::new(10);
    let tool = Counting(spec("touch", schema), runs.clone());
    registry.register(Arc::new(tool)).unwrap_or_else(|e| panic!("{e}"));
    (Dispatcher::new(ServerInfo::new("awswhitelist", "1"), registry), runs)
}

fn with_params(mut meta: TransportMeta, params: &[(&str, &str)]) -> TransportMeta {
    let headers = TransportMeta::from_headers(params.iter().map(|(n, v)| (*n, v.as_bytes())));
    meta.params = headers.params;
    meta
}

#[tokio::test]
async fn mismatched_or_missing_param_headers_are_refused_before_the_call() {
    let (d, runs) = counting();
    let args = json!({"name": "touch", "arguments": {"security_group_id": "sg-0abc", "port": 22}});
    let call = || modern_request(json!(1), "tools/call", args.clone());
    let base = || modern_http("tools/call", Some("touch"));
    let refused = [
        vec![],
        vec![("Mcp-Param-Security-Group-Id", "sg-0abc")],
        vec![("Mcp-Param-Security-Group-Id", "sg-0def"), ("Mcp-Param-Port", "22")],
        vec![("Mcp-Param-Security-Group-Id", "sg-0abc"), ("Mcp-Param-Port", "23")],
    ];
    for headers in refused {
        let out = d.handle(call(), &with_params(base(), &headers)).await;
        assert_eq!(error(&out), (400, HEADER_MISMATCH, json!(1)), "{headers:?}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a refused call must not run");
    let good = [("mcp-param-security-group-id", "sg-0abc"), ("MCP-PARAM-PORT", "22")];
    let out = d.handle(call(), &with_params(base(), &good)).await;
    assert_eq!(result(&out)["content"][0]["text"], json!("ran"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn older_revisions_need_no_param_header_but_a_wrong_one_is_refused() {
    let (d, runs) = counting();
    let call = request(
        json!(2),
        "tools/call",
        json!({"name": "touch", "arguments": {"security_group_id": "sg-0abc"}}),
    );
    let out = d.handle(call.clone(), &http(Some("2025-11-25"))).await;
    assert_eq!(result(&out)["content"][0]["text"], json!("ran"));
    let wrong = with_params(http(Some("2025-11-25")), &[("Mcp-Param-Security-Group-Id", "sg-0def")]);
    let out = d.handle(call, &wrong).await;
    assert_eq!(error(&out), (400, HEADER_MISMATCH, json!(2)));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_tool_with_an_invalid_annotation_is_not_registered() {
    let mut registry = Registry::new(10);
    let schema = json!({"type": "object", "properties": {"n": {"type": "number", "x-mcp-header": "N"}}});
    let tool = Counting(spec("bad", schema), Arc::new(AtomicUsize::new(0)));
    assert!(matches!(registry.register(Arc::new(tool)), Err(RegistryError::BadSchema { .. })));
}
