use serde_json::{json, Value};

use super::*;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "security_group_id": {"type": "string", "minLength": 4, "maxLength": 32},
            "port": {"type": "integer", "minimum": 0, "maximum": 65535},
            "ratio": {"type": "number"},
            "dry_run": {"type": "boolean"},
            "protocol": {"type": "string", "enum": ["tcp", "udp"]},
            "note": {"type": ["string", "null"]},
            "credentials": {
                "type": "object",
                "properties": {"region": {"type": "string"}},
                "required": ["region"],
                "additionalProperties": false
            },
            "ports": {"type": "array", "items": {"type": "integer"}}
        },
        "required": ["security_group_id"],
        "additionalProperties": false
    })
}

fn run(mut args: Value) -> Result<Value, SchemaViolation> {
    validate(&schema(), &mut args).map(|()| args)
}

fn fails(args: Value) -> SchemaViolation {
    match run(args) {
        Err(v) => v,
        Ok(v) => panic!("accepted {v}"),
    }
}

#[test]
fn accepts_valid_arguments() {
    let ok = json!({
        "security_group_id": "sg-123",
        "port": 443, "ratio": 0.5, "dry_run": true, "protocol": "tcp", "note": null,
        "credentials": {"region": "eu-west-1"}, "ports": [22, 80]
    });
    assert_eq!(run(ok.clone()), Ok(ok));
    assert!(run(json!({"security_group_id": "sg-1", "ratio": 3})).is_ok());
}

#[test]
fn integral_floats_become_integers() {
    let out = run(json!({"security_group_id": "sg-1", "port": 80.0, "ports": [1.0]}));
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out["port"].as_i64(), Some(80));
    assert_eq!(out["ports"][0].as_i64(), Some(1));
}

#[test]
fn each_violation_names_the_argument() {
    let cases = [
        (json!({}), "security_group_id", "argument 'security_group_id' is required"),
        (
            json!({"security_group_id": 5}),
            "security_group_id",
            "argument 'security_group_id' must be a string, not an integer",
        ),
        (
            json!({"security_group_id": "sg-1", "port": "22"}),
            "port",
            "argument 'port' must be an integer, not a string",
        ),
        (
            json!({"security_group_id": "sg-1", "port": 22.5}),
            "port",
            "argument 'port' must be an integer, not a number",
        ),
        (
            json!({"security_group_id": "sg-1", "port": 70000}),
            "port",
            "argument 'port' must be at most 65535",
        ),
        (json!({"security_group_id": "sg-1", "port": -1}), "port", "argument 'port' must be at least 0"),
        (
            json!({"security_group_id": "sg"}),
            "security_group_id",
            "argument 'security_group_id' must be at least 4 characters long",
        ),
        (
            json!({"security_group_id": "sg-1", "dry_run": "yes"}),
            "dry_run",
            "argument 'dry_run' must be a boolean, not a string",
        ),
        (
            json!({"security_group_id": "sg-1", "protocol": "icmp"}),
            "protocol",
            "argument 'protocol' must be one of: \"tcp\", \"udp\"",
        ),
        (
            json!({"security_group_id": "sg-1", "note": 1}),
            "note",
            "argument 'note' must be a string or null, not an integer",
        ),
        (json!({"security_group_id": "sg-1", "bogus": 1}), "bogus", "unknown argument 'bogus'"),
        (
            json!({"security_group_id": "sg-1", "credentials": {}}),
            "credentials.region",
            "argument 'credentials.region' is required",
        ),
        (
            json!({"security_group_id": "sg-1", "credentials": {"region": "x", "key": 1}}),
            "credentials.key",
            "unknown argument 'credentials.key'",
        ),
        (
            json!({"security_group_id": "sg-1", "credentials": "x"}),
            "credentials",
            "argument 'credentials' must be an object, not a string",
        ),
        (
            json!({"security_group_id": "sg-1", "ports": [1, "2"]}),
            "ports[1]",
            "argument 'ports[1]' must be an integer, not a string",
        ),
        (json!([1]), "", "the arguments must be an object, not an array"),
    ];
    for (args, path, message) in cases {
        let v = fails(args);
        assert_eq!((v.path.as_str(), v.message.as_str()), (path, message));
    }
}

#[test]
fn boolean_schemas() {
    assert!(validate(&json!(true), &mut json!(1)).is_ok());
    assert!(validate(&json!(false), &mut json!(1)).is_err());
}

#[test]
fn deep_values_stop_at_the_depth_limit() {
    let mut schema = json!({"type": "object"});
    for _ in 0..40 {
        schema = json!({"type": "object", "additionalProperties": schema});
    }
    let mut value = json!({});
    for _ in 0..40 {
        value = json!({"a": value});
    }
    let v = validate(&schema, &mut value).err();
    assert!(v.is_some_and(|v| v.message.contains("nests too deeply")));
}

#[test]
fn registration_check_accepts_the_supported_subset() {
    assert_eq!(check_schema(&schema()), Ok(()));
    let annotated = json!({"type":"object","$schema":"https://json-schema.org/draft/2020-12/schema",
        "properties":{"a":{"type":"string","description":"d","format":"ipv4","x-note":1,"x-mcp-header":"A"}}});
    assert_eq!(check_schema(&annotated), Ok(()));
}

#[test]
fn registration_check_refuses_what_is_not_enforced() {
    let cases = [
        json!({"properties": {}}),
        json!({"type": "array"}),
        json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^a"}}}),
        json!({"type": "object", "oneOf": []}),
        json!({"type": "object", "properties": {"a": {"type": "text"}}}),
        json!({"type": "object", "required": "a"}),
        json!({"type": "object", "properties": {"a": 5}}),
        json!({"type": "object", "items": {"$ref": "#/x"}}),
    ];
    for s in cases {
        assert!(check_schema(&s).is_err(), "{s}");
    }
}
