use serde_json::{json, Map, Value};

use super::*;
use crate::mcp::jsonrpc::{HEADER_MISMATCH, INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION};

fn params(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn modern_params() -> Map<String, Value> {
    params(json!({
        "name": "service_status",
        "_meta": {
            META_PROTOCOL_VERSION: "2026-07-28",
            META_CLIENT_CAPABILITIES: {},
            META_CLIENT_INFO: {"name": "c", "version": "1"}
        }
    }))
}

fn http(version: Option<&str>, method: Option<&str>, name: Option<&str>) -> TransportMeta {
    let mut meta = TransportMeta::http();
    meta.protocol_version = version.map(str::to_owned);
    meta.mcp_method = method.map(str::to_owned);
    meta.mcp_name = name.map(str::to_owned);
    meta
}

fn code(r: Result<Envelope, RpcError>) -> i64 {
    match r {
        Err(e) => e.code,
        Ok(env) => panic!("accepted {env:?}"),
    }
}

#[test]
fn era_selection_matrix() {
    use ProtocolVersion::*;
    let legacy = params(json!({"_meta": {"progressToken": 1}}));
    let modern = modern_params();
    type Case<'a> = (TransportMeta, Option<&'a Map<String, Value>>, Result<Era, i64>);
    let cases: [Case; 9] = [
        (http(None, None, None), None, Ok(Era::Legacy(V2025_03_26))),
        (http(None, None, None), Some(&legacy), Ok(Era::Legacy(V2025_03_26))),
        (http(Some("2024-11-05"), None, None), None, Ok(Era::Legacy(V2024_11_05))),
        (http(Some("2025-11-25"), None, None), None, Ok(Era::Legacy(V2025_11_25))),
        (http(Some("2026-07-28"), None, None), None, Ok(Era::Modern)),
        (http(None, None, None), Some(&modern), Ok(Era::Modern)),
        (http(Some("2099-01-01"), None, None), None, Err(UNSUPPORTED_PROTOCOL_VERSION)),
        (TransportMeta::stdio(), Some(&modern), Ok(Era::Modern)),
        (TransportMeta::stdio().with_protocol_version("2025-06-18"), None, Ok(Era::Legacy(V2025_06_18))),
    ];
    for (meta, p, want) in cases {
        let got = select(&meta, p).map_err(|e| e.code);
        assert_eq!(got, want, "{meta:?} {p:?}");
    }
}

#[test]
fn unknown_header_lists_every_supported_revision() {
    let e = select(&http(Some("v999"), None, None), None).err();
    let data = e.and_then(|e| e.data).unwrap_or_default();
    assert_eq!(data["requested"], json!("v999"));
    assert_eq!(data["supported"], json!(ProtocolVersion::supported_strings()));
}

#[test]
fn a_repeated_version_header_is_a_mismatch() {
    let meta = TransportMeta::from_headers([
        ("mcp-protocol-version", &b"2025-06-18"[..]),
        ("mcp-protocol-version", b"2025-11-25"),
    ]);
    assert_eq!(select(&meta, None).map_err(|e| e.code), Err(HEADER_MISMATCH));
}

#[test]
fn a_good_envelope_passes_with_matching_headers() {
    let meta = http(Some("2026-07-28"), Some("tools/call"), Some("service_status"));
    let env = check_envelope(&meta, "tools/call", Some(&modern_params()));
    let env = env.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(env.version, ProtocolVersion::V2026_07_28);
    assert_eq!(env.client_info, Some(json!({"name": "c", "version": "1"})));
    // Stdio has no headers to check.
    assert!(check_envelope(&TransportMeta::stdio(), "tools/call", Some(&modern_params())).is_ok());
}

#[test]
fn envelope_ladder_codes() {
    let ok = |m: &str| http(Some("2026-07-28"), Some(m), None);
    let p = modern_params();
    let mut no_caps = modern_params();
    no_caps.insert("_meta".into(), json!({META_PROTOCOL_VERSION: "2026-07-28"}));
    let mut bad_caps = modern_params();
    bad_caps
        .insert("_meta".into(), json!({META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: []}));
    let mut numeric = modern_params();
    numeric.insert("_meta".into(), json!({META_PROTOCOL_VERSION: 2026, META_CLIENT_CAPABILITIES: {}}));
    let mut v999 = modern_params();
    v999.insert("_meta".into(), json!({META_PROTOCOL_VERSION: "v999", META_CLIENT_CAPABILITIES: {}}));
    let mut legacy_in_body = modern_params();
    legacy_in_body
        .insert("_meta".into(), json!({META_PROTOCOL_VERSION: "2025-11-25", META_CLIENT_CAPABILITIES: {}}));

    assert_eq!(code(check_envelope(&ok("tools/list"), "tools/list", None)), INVALID_PARAMS);
    assert_eq!(code(check_envelope(&ok("tools/list"), "tools/list", Some(&no_caps))), INVALID_PARAMS);
    assert_eq!(code(check_envelope(&ok("tools/list"), "tools/list", Some(&bad_caps))), INVALID_PARAMS);
    assert_eq!(code(check_envelope(&TransportMeta::stdio(), "x", Some(&numeric))), INVALID_PARAMS);
    // Headers are compared before the version is judged: a client that disagrees with itself
    // hears about the disagreement.
    assert_eq!(code(check_envelope(&ok("tools/list"), "tools/list", Some(&v999))), HEADER_MISMATCH);
    let v999_both = http(Some("v999"), Some("tools/list"), None);
    assert_eq!(code(check_envelope(&v999_both, "tools/list", Some(&v999))), UNSUPPORTED_PROTOCOL_VERSION);
    let legacy_both = http(Some("2025-11-25"), Some("tools/list"), None);
    assert_eq!(
        code(check_envelope(&legacy_both, "tools/list", Some(&legacy_in_body))),
        UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(
        code(check_envelope(&http(None, Some("tools/list"), None), "tools/list", Some(&p))),
        HEADER_MISMATCH
    );
}

#[test]
fn method_and_name_headers_must_mirror_the_body() {
    let p = modern_params();
    let v = Some("2026-07-28");
    let cases = [
        (http(v, None, Some("service_status")), "missing Mcp-Method"),
        (http(v, Some("tools/list"), Some("service_status")), "wrong Mcp-Method"),
        (http(v, Some("TOOLS/CALL"), Some("service_status")), "values are case-sensitive"),
        (http(v, Some("tools/call"), None), "missing Mcp-Name"),
        (http(v, Some("tools/call"), Some("other")), "wrong Mcp-Name"),
        (http(v, Some("tools/call"), Some("=?base64?!!?=")), "bad base64"),
    ];
    for (meta, why) in cases {
        assert_eq!(code(check_envelope(&meta, "tools/call", Some(&p))), HEADER_MISMATCH, "{why}");
    }
    let encoded = http(v, Some("tools/call"), Some("=?base64?c2VydmljZV9zdGF0dXM=?="));
    assert!(check_envelope(&encoded, "tools/call", Some(&p)).is_ok());
    // Methods without a name field need no Mcp-Name.
    assert!(check_envelope(&http(v, Some("tools/list"), None), "tools/list", Some(&p)).is_ok());
}

#[test]
fn repeated_method_header_is_a_mismatch() {
    let meta = TransportMeta::from_headers([
        ("mcp-protocol-version", &b"2026-07-28"[..]),
        ("mcp-method", b"tools/list"),
        ("Mcp-Method", b"tools/list"),
    ]);
    assert_eq!(code(check_envelope(&meta, "tools/list", Some(&modern_params()))), HEADER_MISMATCH);
}
