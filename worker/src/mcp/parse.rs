//! Raw bytes → JSON for every transport: UTF-8 is checked, nesting depth is bounded before
//! serde_json recurses, and every failure becomes a -32700 error with `id: null`.

use serde_json::Value;

use super::jsonrpc::{error_response, RpcError};

/// Deepest `[`/`{` nesting accepted; MCP messages need far less, and the bound keeps parsing,
/// validation and dropping a hostile body shallow.
pub const MAX_DEPTH: usize = 64;

/// Why a body is not a JSON value; each maps to a -32700 parse error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("the message is empty")]
    Empty,
    /// Bytes that are not UTF-8 (JSON on the wire must be UTF-8).
    #[error("the message is not valid UTF-8 (bad byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Arrays/objects nested deeper than [`MAX_DEPTH`].
    #[error("the JSON nests deeper than {limit} levels")]
    TooDeep {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

impl ParseError {
    /// The JSON-RPC error object for this failure.
    pub fn to_rpc_error(&self) -> RpcError {
        RpcError::parse_error(format!("Parse error: {self}"))
    }

    /// A complete error response (`id: null`, since no id could be read).
    pub fn to_response(&self) -> Value {
        error_response(None, &self.to_rpc_error())
    }
}

/// Parses one message body (a single message or a batch) with the default depth limit.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ParseError> {
    parse_json_with_depth(bytes, MAX_DEPTH)
}

/// Parses with an explicit nesting limit (tests, or transports that want a tighter one).
pub fn parse_json_with_depth(bytes: &[u8], max_depth: usize) -> Result<Value, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError::NotUtf8 { offset: e.valid_up_to() })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if exceeds_depth(text.as_bytes(), max_depth) {
        return Err(ParseError::TooDeep { limit: max_depth });
    }
    serde_json::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))
}

/// Scans for `[`/`{` nesting beyond `limit`, skipping string contents; linear and allocation-free.
fn exceeds_depth(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_objects_batches_and_a_bom() {
        assert_eq!(parse_json(br#"{"a":1}"#), Ok(json!({"a":1})));
        assert_eq!(parse_json(b"[1,2]"), Ok(json!([1, 2])));
        assert_eq!(parse_json("\u{feff}{}".as_bytes()), Ok(json!({})));
        assert_eq!(parse_json("{\"k\":\"h\u{e9}\"}".as_bytes()), Ok(json!({"k":"hé"})));
    }

    #[test]
    fn empty_and_whitespace_bodies() {
        assert_eq!(parse_json(b""), Err(ParseError::Empty));
        assert_eq!(parse_json(b" \r\n\t"), Err(ParseError::Empty));
    }

    #[test]
    fn bad_utf8_is_reported_with_its_offset() {
        assert_eq!(parse_json(b"{\"a\":\"\xff\"}"), Err(ParseError::NotUtf8 { offset: 6 }));
        // Latin-1 "é" as a single byte: never silently turned into another character.
        assert!(matches!(parse_json(b"{\"a\":\"caf\xe9\"}"), Err(ParseError::NotUtf8 { .. })));
    }

    #[test]
    fn syntax_errors() {
        for body in [&b"{"[..], b"{\"a\":}", b"nul", b"{} {}", b"{'a':1}", b"[1,]"] {
            assert!(matches!(parse_json(body), Err(ParseError::Syntax(_))), "{body:?}");
        }
    }

    #[test]
    fn nesting_is_bounded_before_serde_recurses() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_json(ok.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse_json(deep.as_bytes()), Err(ParseError::TooDeep { limit: MAX_DEPTH }));
        // A hostile body far beyond serde_json's own limit fails fast, without recursion.
        let hostile = "{\"a\":".repeat(1_000_000);
        assert_eq!(parse_json(hostile.as_bytes()), Err(ParseError::TooDeep { limit: MAX_DEPTH }));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!("{{\"s\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(parse_json(s.as_bytes()).is_ok());
    }

    #[test]
    fn every_failure_is_a_parse_error_with_null_id() {
        let r = ParseError::Syntax("x".into()).to_response();
        assert_eq!(r["id"], Value::Null);
        assert_eq!(r["error"]["code"], json!(-32700));
        assert_eq!(ParseError::Empty.to_response()["error"]["code"], json!(-32700));
    }
}
