//! `tools/list` served from prebuilt pages: byte for byte what the answer built as a `Value`
//! (today's way) serialises to, for every revision, page and kind of caller, hit or miss.

use super::*;
use crate::mcp::jsonrpc::{result_response, RequestId};
use crate::mcp::methods;

/// Needs `whitelist:write` and is unavailable to read-only callers (like `whitelist_add`).
struct Writer(ToolSpec);

impl Tool for Writer {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn call<'a>(&'a self, _: Map<String, Value>, _: &'a CallContext) -> ToolFuture<'a> {
        Box::pin(async { Ok(ToolOutput::text("ok")) })
    }
    fn unavailable(&self, caller: &Caller) -> Option<String> {
        caller.read_only.as_deref().map(str::to_owned)
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new(2);
    for (name, scope) in
        [("a_read", Some("whitelist:read")), ("b_write", Some("whitelist:write")), ("c_any", None)]
    {
        let mut s = spec(
            name,
            json!({"type": "object", "properties": {
            "security_group_id": {"type": "string", "x-mcp-header": "Security-Group-Id"}}}),
        );
        s.scope = scope;
        s.output_schema = Some(json!({"type": "object"}));
        registry.register(Arc::new(Writer(s))).unwrap_or_else(|e| panic!("{e}"));
    }
    registry
}

fn callers() -> Vec<Caller> {
    let scoped = |scopes: &[&str]| Caller {
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        ..Caller::default()
    };
    let read_only = Caller { read_only: Some("[whitelist] read_only = true".into()), ..Caller::default() };
    vec![
        Caller::default(),
        scoped(&["whitelist:read"]),
        scoped(&["whitelist:read", "whitelist:write"]),
        read_only,
    ]
}

#[tokio::test]
async fn prebuilt_pages_are_byte_identical_to_the_value_built_answer() {
    let d = Dispatcher::new(ServerInfo::new("awswhitelist", "1.0.0"), registry());
    let reference = registry();
    let info = ServerInfo::new("awswhitelist", "1.0.0");
    let mut served = 0;
    // Twice round: the first fills the pages, the second is served from them, callers interleaved
    // so that a page made for one caller is never shown to another who sees other tools.
    for round in 0..2 {
        for version in ProtocolVersion::supported_strings() {
            let version = ProtocolVersion::parse(version).unwrap_or_else(|| panic!("{version}"));
            for caller in callers() {
                for cursor in [None, Some(reference.page(None).ok().and_then(|p| p.next_cursor))] {
                    let cursor = cursor.flatten();
                    let mut params = json!({});
                    if let Some(c) = &cursor {
                        params["cursor"] = json!(c);
                    }
                    let (message, meta) = if version.is_modern() {
                        (
                            modern_request(json!(round), "tools/list", params.clone()),
                            modern_http("tools/list", None),
                        )
                    } else {
                        (request(json!(round), "tools/list", params.clone()), http(Some(version.as_str())))
                    };
                    let meta = meta.with_caller(caller.clone());
                    let outcome = d.handle(message.clone(), &meta).await;
                    let Outcome::Raw(raw) = &outcome else { panic!("not prebuilt: {outcome:?}") };
                    let mut expected = methods::tools_list(
                        &reference,
                        &info,
                        version,
                        message["params"].as_object(),
                        &caller,
                    )
                    .unwrap_or_else(|e| panic!("{e:?}"));
                    if version.is_modern() {
                        expected = methods::decorate_modern(expected, &info);
                    }
                    let expected = result_response(&RequestId::Num(round.into()), expected).to_string();
                    assert_eq!(raw.text(), expected, "{version} {caller:?} {cursor:?}");
                    served += 1;
                }
            }
        }
    }
    assert_eq!(served, 2 * 5 * 4 * 2);
}

#[tokio::test]
async fn a_bad_cursor_is_still_refused() {
    let d = Dispatcher::new(ServerInfo::new("awswhitelist", "1.0.0"), registry());
    let out = d.handle(request(json!(1), "tools/list", json!({"cursor": "nope"})), &http(None)).await;
    assert_eq!(error(&out).1, crate::mcp::jsonrpc::INVALID_PARAMS);
    let out = d.handle(request(json!(1), "tools/list", json!({"cursor": 5})), &http(None)).await;
    assert_eq!(error(&out).1, crate::mcp::jsonrpc::INVALID_PARAMS);
}
