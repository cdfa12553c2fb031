//! JSON-RPC 2.0 as MCP uses it: classifying one incoming JSON value, error objects with the
//! standard and MCP codes, and building responses that echo the request `id`.
//!
//! MCP narrows JSON-RPC: an `id` is a string or an integer and never `null`, and `params`, when
//! present, is an object. A message that breaks these rules is answered with an error that still
//! carries its `id` whenever one could be read.

use std::fmt;

use serde_json::{json, Map, Number, Value};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON is not a valid JSON-RPC request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist (or is not part of the request's protocol revision).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters (also: unknown tool, bad cursor, missing `_meta` fields).
pub const INVALID_PARAMS: i64 = -32602;
/// An unexpected failure inside the server.
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: HTTP headers missing, malformed or disagreeing with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the request needs a client capability the client did not declare.
pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
/// 2026-07-28: the requested protocol version is not served (data lists what is).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A request id as MCP allows it: a string or a number (integers are valid, other numbers are
/// only kept so an error can echo them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// A string id.
    Str(String),
    /// A numeric id, exactly as received.
    Num(Number),
}

impl RequestId {
    /// Reads an id that can be echoed: a string or a number; `null` and other types cannot.
    pub fn read(value: &Value) -> Option<RequestId> {
        match value {
            Value::String(s) => Some(RequestId::Str(s.clone())),
            Value::Number(n) => Some(RequestId::Num(n.clone())),
            _ => None,
        }
    }

    /// True when MCP accepts this id on a request (strings and integers).
    pub fn is_valid_for_mcp(&self) -> bool {
        match self {
            RequestId::Str(_) => true,
            RequestId::Num(n) => n.is_i64() || n.is_u64(),
        }
    }

    /// The id as a JSON value, for responses.
    pub fn to_value(&self) -> Value {
        match self {
            RequestId::Str(s) => Value::String(s.clone()),
            RequestId::Num(n) => Value::Number(n.clone()),
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Str(s) => write!(f, "{s:?}"),
            RequestId::Num(n) => write!(f, "{n}"),
        }
    }
}

/// A JSON-RPC error object: what went wrong, for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// One of the codes above.
    pub code: i64,
    /// One sentence a person can act on.
    pub message: String,
    /// Machine-readable detail, when the code defines some.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), data: None }
    }

    /// Adds machine-readable detail.
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// -32700.
    pub fn parse_error(message: impl Into<String>) -> RpcError {
        RpcError::new(PARSE_ERROR, message)
    }

    /// -32600.
    pub fn invalid_request(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_REQUEST, message)
    }

    /// -32601, naming the method.
    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    /// -32602.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    /// -32603; the message must not leak internals.
    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(INTERNAL_ERROR, message)
    }

    /// -32020.
    pub fn header_mismatch(message: impl Into<String>) -> RpcError {
        RpcError::new(HEADER_MISMATCH, message)
    }

    /// -32022 with the `supported` / `requested` data clients use to retry.
    pub fn unsupported_version(requested: &str, supported: &[&str]) -> RpcError {
        RpcError::new(
            UNSUPPORTED_PROTOCOL_VERSION,
            format!("Unsupported protocol version {requested:?}; supported: {}", supported.join(", ")),
        )
        .with_data(json!({ "supported": supported, "requested": requested }))
    }

    /// The error object as JSON.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("code".into(), Value::from(self.code));
        obj.insert("message".into(), Value::String(self.message.clone()));
        if let Some(data) = &self.data {
            obj.insert("data".into(), data.clone());
        }
        Value::Object(obj)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// An error response; `id` is `null` only when the request's id could not be read.
pub fn error_response(id: Option<&RequestId>, error: &RpcError) -> Value {
    response(id.map_or(Value::Null, RequestId::to_value), "error", error.to_value())
}

/// A success response as a `Value`: what [`crate::mcp::RawReply`]'s text must equal (replies
/// themselves are written as text).
#[cfg(test)]
pub fn result_response(id: &RequestId, result: Value) -> Value {
    response(id.to_value(), "result", result)
}

fn response(id: Value, key: &str, body: Value) -> Value {
    object([("jsonrpc", Value::from("2.0")), ("id", id), (key, body)])
}

/// A JSON object of these members, moved in: `json!` serialises an interpolated `Value` or
/// `String` into a copy of itself (a tool's whole result, a list's every rule).
pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A well-formed request: it gets exactly one response.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the response.
    pub id: RequestId,
    /// The JSON-RPC method.
    pub method: String,
    /// `params`, always an object when present (`null` is read as absent).
    pub params: Option<Map<String, Value>>,
}

/// What one incoming JSON value is.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Needs a response.
    Request(Request),
    /// Needs no response.
    Notification {
        /// The notification method, for logs.
        method: String,
        /// `params` when it is an object; used to find the request envelope.
        params: Option<Map<String, Value>>,
    },
    /// A result or error sent by the client (answers to server requests; never needed here).
    Response {
        /// The id it answers, if readable.
        id: Option<RequestId>,
    },
    /// Not valid JSON-RPC for MCP; answer `error` with `id` (null when unreadable).
    Invalid {
        /// The id to echo, when one could be read.
        id: Option<RequestId>,
        /// What is wrong.
        error: RpcError,
    },
}

/// Classifies one message (not a batch: arrays are classified element by element).
pub fn classify(value: Value) -> Message {
    let Value::Object(mut obj) = value else {
        return invalid(None, "a JSON-RPC message must be a JSON object");
    };
    let id = obj.get("id").and_then(RequestId::read);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(id, "\"jsonrpc\" must be exactly \"2.0\"");
    }
    let has_result = obj.contains_key("result") || obj.contains_key("error");
    match obj.remove("method") {
        None if has_result => classify_response(&obj, id),
        None => invalid(id, "a request needs a \"method\""),
        Some(_) if has_result => invalid(id, "a message cannot have both a method and a result"),
        Some(Value::String(method)) => classify_call(obj, id, method),
        Some(_) => invalid(id, "\"method\" must be a string"),
    }
}

fn classify_call(mut obj: Map<String, Value>, id: Option<RequestId>, method: String) -> Message {
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(Value::Array(_)) => {
            let error = RpcError::invalid_params("MCP params must be an object, not an array");
            return Message::Invalid { id, error };
        }
        Some(_) => return invalid(id, "\"params\" must be an object"),
    };
    match obj.get("id") {
        None => Message::Notification { method, params },
        Some(raw) => match id {
            Some(id) if id.is_valid_for_mcp() => Message::Request(Request { id, method, params }),
            Some(id) => invalid(Some(id), "\"id\" must be a string or an integer"),
            None if raw.is_null() => invalid(None, "\"id\" must not be null in MCP"),
            None => invalid(None, "\"id\" must be a string or an integer"),
        },
    }
}

fn classify_response(obj: &Map<String, Value>, id: Option<RequestId>) -> Message {
    if obj.contains_key("result") && obj.contains_key("error") {
        return invalid(id, "a response cannot have both \"result\" and \"error\"");
    }
    match obj.get("id") {
        Some(Value::Null) if obj.contains_key("error") => Message::Response { id: None },
        Some(_) if id.is_some() => Message::Response { id },
        _ => invalid(None, "a response needs a string or integer \"id\""),
    }
}

fn invalid(id: Option<RequestId>, message: &str) -> Message {
    Message::Invalid { id, error: RpcError::invalid_request(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_id(m: Message) -> (i64, Option<RequestId>) {
        match m {
            Message::Invalid { id, error } => (error.code, id),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn well_formed_request_notification_and_responses() {
        let m = classify(json!({"jsonrpc":"2.0","id":7,"method":"ping"}));
        let Message::Request(r) = m else { panic!("not a request: {m:?}") };
        assert_eq!((r.id, r.method, r.params), (RequestId::Num(7.into()), "ping".into(), None));

        let m = classify(json!({"jsonrpc":"2.0","id":"a","method":"x","params":{"k":1}}));
        assert!(matches!(m, Message::Request(Request { params: Some(_), .. })));

        let m = classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        assert!(matches!(m, Message::Notification { .. }));

        let m = classify(json!({"jsonrpc":"2.0","id":3,"result":{}}));
        assert_eq!(m, Message::Response { id: Some(RequestId::Num(3.into())) });
        let m = classify(json!({"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}));
        assert_eq!(m, Message::Response { id: None });
    }

    #[test]
    fn null_params_read_as_absent() {
        let m = classify(json!({"jsonrpc":"2.0","id":1,"method":"ping","params":null}));
        assert!(matches!(m, Message::Request(Request { params: None, .. })));
    }

    #[test]
    fn invalid_messages_echo_the_id_when_readable() {
        let n = |i: i64| Some(RequestId::Num(i.into()));
        let s = |v: &str| Some(RequestId::Str(v.into()));
        let cases = [
            (json!(42), INVALID_REQUEST, None),
            (json!("ping"), INVALID_REQUEST, None),
            (json!(null), INVALID_REQUEST, None),
            (json!({"id":1,"method":"ping"}), INVALID_REQUEST, n(1)),
            (json!({"jsonrpc":"1.0","id":"x","method":"ping"}), INVALID_REQUEST, s("x")),
            (json!({"jsonrpc":2.0,"id":2,"method":"ping"}), INVALID_REQUEST, n(2)),
            (json!({"jsonrpc":"2.0","id":3}), INVALID_REQUEST, n(3)),
            (json!({"jsonrpc":"2.0","id":4,"method":5}), INVALID_REQUEST, n(4)),
            (json!({"jsonrpc":"2.0","id":5,"method":"x","params":"p"}), INVALID_REQUEST, n(5)),
            (json!({"jsonrpc":"2.0","id":6,"method":"x","params":[1]}), INVALID_PARAMS, n(6)),
            (json!({"jsonrpc":"2.0","id":null,"method":"ping"}), INVALID_REQUEST, None),
            (json!({"jsonrpc":"2.0","id":true,"method":"ping"}), INVALID_REQUEST, None),
            (json!({"jsonrpc":"2.0","id":{"a":1},"method":"ping"}), INVALID_REQUEST, None),
            (json!({"jsonrpc":"2.0","id":[1],"method":"ping"}), INVALID_REQUEST, None),
            (json!({"jsonrpc":"2.0","id":7,"method":"x","result":1}), INVALID_REQUEST, n(7)),
            (json!({"jsonrpc":"2.0","id":8,"result":1,"error":{}}), INVALID_REQUEST, n(8)),
            (json!({"jsonrpc":"2.0","result":1}), INVALID_REQUEST, None),
        ];
        for (msg, code, id) in cases {
            let shown = msg.to_string();
            assert_eq!(code_and_id(classify(msg)), (code, id), "{shown}");
        }
    }

    #[test]
    fn fractional_ids_are_refused_but_echoed() {
        let m = classify(json!({"jsonrpc":"2.0","id":1.5,"method":"ping"}));
        let (code, id) = code_and_id(m);
        assert_eq!(code, INVALID_REQUEST);
        assert_eq!(id.map(|i| i.to_value()), Some(json!(1.5)));
    }

    #[test]
    fn responses_are_built_with_echoed_or_null_ids() {
        let id = RequestId::Str("r1".into());
        let e = RpcError::method_not_found("nope");
        assert_eq!(
            error_response(Some(&id), &e),
            json!({"jsonrpc":"2.0","id":"r1","error":{"code":-32601,"message":"Method not found: nope"}})
        );
        assert_eq!(error_response(None, &e)["id"], Value::Null);
        assert_eq!(
            result_response(&RequestId::Num(9.into()), json!({})),
            json!({"jsonrpc":"2.0","id":9,"result":{}})
        );
    }

    #[test]
    fn unsupported_version_error_carries_retry_data() {
        let e = RpcError::unsupported_version("1900-01-01", &["2026-07-28", "2025-11-25"]);
        assert_eq!(e.code, UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(
            e.to_value()["data"],
            json!({"supported":["2026-07-28","2025-11-25"],"requested":"1900-01-01"})
        );
    }
}
