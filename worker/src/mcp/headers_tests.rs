use serde_json::json;

use super::*;
use crate::mcp::jsonrpc::HEADER_MISMATCH;

fn group_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "security_group_id": {"type": "string", "x-mcp-header": "Security-Group-Id"},
            "port": {"type": "integer", "x-mcp-header": "Port"},
            "dry_run": {"type": "boolean", "x-mcp-header": "Dry-Run"},
            "credentials": {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}},
        }
    })
}

fn meta(headers: &[(&str, &str)]) -> TransportMeta {
    TransportMeta::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn annotations_are_found_along_properties_chains() {
    let found = annotations(&group_schema()).unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<(String, String)> = found.iter().map(|p| (p.path.join("."), p.name.clone())).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("credentials.region".into(), "Region".into()),
            ("dry_run".into(), "Dry-Run".into()),
            ("port".into(), "Port".into()),
            ("security_group_id".into(), "Security-Group-Id".into()),
        ]
    );
    assert_eq!(annotations(&json!({"type": "object"})), Ok(vec![]));
}

#[test]
fn invalid_annotations_are_refused() {
    let cases = [
        json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
        json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "has space"}}}),
        json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "a\r\nb"}}}),
        json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": 7}}}),
        json!({"type": "object", "properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
        json!({"type": "object", "properties": {"a": {"type": ["string", "null"], "x-mcp-header": "A"}}}),
        json!({"type": "object", "properties": {
            "a": {"type": "string", "x-mcp-header": "Same"},
            "b": {"type": "string", "x-mcp-header": "same"}}}),
        json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
        json!({"type": "object", "additionalProperties": {"type": "string", "x-mcp-header": "A"}}),
        json!({"type": "object", "anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
        json!({"type": "object", "x-mcp-header": "Root"}),
    ];
    for schema in cases {
        assert!(annotations(&schema).is_err(), "{schema}");
    }
}

#[test]
fn matching_headers_pass_and_absent_values_need_no_header() {
    let declared = annotations(&group_schema()).unwrap_or_default();
    let body = args(json!({"security_group_id": "sg-0abc", "port": 22, "dry_run": true,
                           "credentials": {"region": "eu-west-1"}}));
    let ok = meta(&[
        ("mcp-param-security-group-id", "sg-0abc"),
        ("Mcp-Param-Port", "22"),
        ("MCP-PARAM-DRY-RUN", "true"),
        ("Mcp-Param-Region", "=?base64?ZXUtd2VzdC0x?="),
        ("Mcp-Param-Unrelated", "whatever"),
    ]);
    assert_eq!(check_params(&declared, &body, &ok, true), Ok(()));
    let nothing = args(json!({"security_group_id": null}));
    assert_eq!(check_params(&declared, &nothing, &meta(&[]), true), Ok(()));
    let float_port = args(json!({"port": 22.0}));
    assert_eq!(check_params(&declared, &float_port, &meta(&[("Mcp-Param-Port", "22")]), true), Ok(()));
}

/// One refused case: its name, the headers sent and the arguments.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Map<String, Value>);

#[test]
fn every_disagreement_is_a_header_mismatch() {
    let declared = annotations(&group_schema()).unwrap_or_default();
    let body = args(json!({"security_group_id": "sg-0abc"}));
    let cases: [Case; 6] = [
        ("missing", vec![], body.clone()),
        ("other value", vec![("Mcp-Param-Security-Group-Id", "sg-0def")], body.clone()),
        ("case differs", vec![("Mcp-Param-Security-Group-Id", "SG-0ABC")], body.clone()),
        (
            "repeated",
            vec![("Mcp-Param-Security-Group-Id", "sg-0abc"), ("mcp-param-security-group-id", "sg-0abc")],
            body.clone(),
        ),
        ("bad base64", vec![("Mcp-Param-Security-Group-Id", "=?base64?!!?=")], body.clone()),
        ("header without argument", vec![("Mcp-Param-Port", "22")], args(json!({}))),
    ];
    for (what, headers, body) in cases {
        let err = check_params(&declared, &body, &meta(&headers), true).err();
        assert_eq!(err.map(|e| e.code), Some(HEADER_MISMATCH), "{what}");
    }
    let bad_bytes = TransportMeta::from_headers([("Mcp-Param-Security-Group-Id", &b"sg-\xff"[..])]);
    assert!(check_params(&declared, &body, &bad_bytes, false).is_err());
}

#[test]
fn older_revisions_need_no_header_but_a_present_one_must_agree() {
    let declared = annotations(&group_schema()).unwrap_or_default();
    let body = args(json!({"security_group_id": "sg-0abc"}));
    assert_eq!(check_params(&declared, &body, &meta(&[]), false), Ok(()));
    let wrong = meta(&[("Mcp-Param-Security-Group-Id", "sg-0def")]);
    assert!(check_params(&declared, &body, &wrong, false).is_err());
}
