//! What the proxy puts on and takes off the wire without doing I/O: the MCP routing headers
//! (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` with its base64 form), the `Mcp-Param-*`
//! headers of the tool parameters the server declared with `x-mcp-header` (learned from the
//! `tools/list` answers the proxy relays), and incremental `text/event-stream` parsing.

use std::collections::HashMap;

use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;
use worker::mcp::era::META_PROTOCOL_VERSION;
use worker::mcp::headers::{annotations, HeaderParam};

/// Tool name → the parameters it mirrors into `Mcp-Param-*` headers.
pub(super) type ParamHeaders = HashMap<String, Vec<HeaderParam>>;

/// Learns the `x-mcp-header` parameters of every tool a `tools/list` answer lists (none for a
/// tool whose annotations are invalid: nothing is mirrored for it).
pub(super) fn learn_param_headers(answer: &Value, known: &mut ParamHeaders) {
    let Some(tools) = answer.pointer("/result/tools").and_then(Value::as_array) else {
        return;
    };
    for tool in tools {
        let (Some(name), Some(schema)) = (tool.get("name").and_then(Value::as_str), tool.get("inputSchema"))
        else {
            continue;
        };
        // Invalid annotations mirror nothing (a conforming client would drop the tool).
        known.insert(name.to_owned(), annotations(schema).unwrap_or_default());
    }
}

/// The tool a 2026-07-28 `tools/call` calls when the proxy has not seen it listed yet (so its
/// `x-mcp-header` parameters are unknown).
pub(super) fn unlisted_tool<'a>(message: &'a Value, known: &ParamHeaders) -> Option<&'a str> {
    let params = message.get("params")?;
    params.get("_meta")?.get(META_PROTOCOL_VERSION)?;
    if message.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    params.get("name")?.as_str().filter(|name| !known.contains_key(*name))
}

/// The `Mcp-Param-*` headers of a 2026-07-28 `tools/call` whose tool declared some: each
/// argument present (not `null`) as text (booleans `true`/`false`, numbers in decimal), base64
/// when a header would alter it.
pub(super) fn param_headers(message: &Value, known: &ParamHeaders) -> Vec<(HeaderName, HeaderValue)> {
    let params = message.get("params");
    let modern = params.and_then(|p| p.get("_meta")?.get(META_PROTOCOL_VERSION)).is_some();
    if !modern || message.get("method").and_then(Value::as_str) != Some("tools/call") {
        return Vec::new();
    }
    let Some(declared) = params.and_then(|p| p.get("name")?.as_str()).and_then(|n| known.get(n)) else {
        return Vec::new();
    };
    let args = params.and_then(|p| p.get("arguments"));
    let mut headers = Vec::new();
    for param in declared {
        let value = param.path.iter().try_fold(args, |node, key| Some(node?.get(key)));
        let text = match value.flatten() {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        let name =
            HeaderName::from_bytes(format!("mcp-param-{}", param.name.to_ascii_lowercase()).as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(&name_header(&text))) {
            headers.push((name, value));
        }
    }
    headers
}

use super::{Failure, MAX_RESPONSE};

/// MCP routing headers: the revision (from a 2026-07-28 `_meta`, else the negotiated one),
/// and for 2026-07-28 requests `Mcp-Method` and `Mcp-Name` mirroring the body.
pub(super) fn routing_headers(message: &Value, negotiated: Option<&str>) -> Vec<(&'static str, HeaderValue)> {
    let params = message.get("params");
    let envelope = params.and_then(|p| p.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str());
    let mut headers = Vec::new();
    let Some(version) = envelope.or(negotiated) else {
        return headers;
    };
    headers.extend(HeaderValue::from_str(version).ok().map(|v| ("mcp-protocol-version", v)));
    let method = message.get("method").and_then(Value::as_str);
    let (Some(_), Some(method)) = (envelope, method) else {
        return headers;
    };
    headers.extend(HeaderValue::from_str(method).ok().map(|v| ("mcp-method", v)));
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return headers,
    };
    if let Some(name) = params.and_then(|p| p.get(field)?.as_str()) {
        headers.extend(HeaderValue::from_str(&name_header(name)).ok().map(|v| ("mcp-name", v)));
    }
    headers
}

/// `Mcp-Name` (or an `Mcp-Param-*` value) as sent: plain when it survives a header unchanged,
/// else `=?base64?…?=`.
fn name_header(name: &str) -> String {
    let plain = name.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && name.trim_matches([' ', '\t']) == name
        && !name.starts_with("=?base64?");
    if plain {
        return name.to_owned();
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("=?base64?");
    for chunk in name.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out.push_str("?=");
    out
}

/// Incremental `text/event-stream` parsing: yields the `data` of each complete event.
#[derive(Default)]
pub(super) struct EventStream {
    line: Vec<u8>,
    data: Option<String>,
}

impl EventStream {
    pub(super) fn feed(&mut self, chunk: &[u8], events: &mut Vec<String>) -> Result<(), Failure> {
        for &b in chunk {
            if b == b'\n' {
                self.end_line(events);
            } else if self.line.len() < MAX_RESPONSE {
                self.line.push(b);
            } else {
                return Err(Failure::Invalid(format!("an event-stream line exceeds {MAX_RESPONSE} bytes")));
            }
        }
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // comment
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            let value = String::from_utf8_lossy(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            }
        }
    }

    /// End of stream: an event not closed by a blank line still counts.
    pub(super) fn finish(&mut self, events: &mut Vec<String>) {
        if !self.line.is_empty() {
            self.end_line(events);
        }
        events.extend(self.data.take());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn event_streams_yield_each_data_block() {
        let (mut stream, mut events) = (EventStream::default(), Vec::new());
        let text = ": hi\r\nid: 1\ndata:\n\nevent: message\ndata: {\"a\":\ndata: 1}\n\ndata: {\"b\":2}";
        for chunk in text.as_bytes().chunks(3) {
            assert!(stream.feed(chunk, &mut events).is_ok());
        }
        stream.finish(&mut events);
        assert_eq!(events, ["", "{\"a\":\n1}", "{\"b\":2}"]);
    }

    #[test]
    fn names_that_a_header_would_alter_are_base64_encoded() {
        assert_eq!(name_header("service_status"), "service_status");
        assert_eq!(name_header("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(name_header(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(name_header("=?base64?x"), "=?base64?PT9iYXNlNjQ/eA==?=");
    }

    #[test]
    fn declared_parameters_are_mirrored_once_listed() {
        let mut known = ParamHeaders::new();
        let listed = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"whitelist_add","inputSchema":{"type":"object","properties":{
                "security_group_id":{"type":"string","x-mcp-header":"Security-Group-Id"},
                "port":{"type":"integer","x-mcp-header":"Port"}}}},
            {"name":"bad","inputSchema":{"type":"object","properties":{"n":{"type":"number","x-mcp-header":"N"}}}},
            {"name":"service_status","inputSchema":{"type":"object"}}]}});
        learn_param_headers(&listed, &mut known);
        assert_eq!(known.len(), 3, "{known:?}");
        assert!(known["bad"].is_empty() && known["service_status"].is_empty());
        let call = |name: &str, args: Value, meta: bool| {
            let mut m =
                json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":name,"arguments":args}});
            if meta {
                m["params"]["_meta"] = json!({(META_PROTOCOL_VERSION): "2026-07-28"});
            }
            m
        };
        let got = param_headers(
            &call("whitelist_add", json!({"security_group_id":"sg-0abc","port":22}), true),
            &known,
        );
        let mut got: Vec<(String, String)> =
            got.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("mcp-param-port".into(), "22".into()),
                ("mcp-param-security-group-id".into(), "sg-0abc".into())
            ]
        );
        let spaced = param_headers(&call("whitelist_add", json!({"security_group_id":" x"}), true), &known);
        assert_eq!(spaced[0].1, HeaderValue::from_static("=?base64?IHg=?="));
        assert!(param_headers(&call("whitelist_add", json!({"security_group_id":"sg-1"}), false), &known)
            .is_empty());
        assert!(param_headers(&call("bad", json!({"n":1}), true), &known).is_empty());
        assert!(
            param_headers(&call("whitelist_add", json!({"security_group_id":null}), true), &known).is_empty()
        );
    }

    #[test]
    fn modern_requests_mirror_their_body_in_headers() {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"é",
            "_meta":{(META_PROTOCOL_VERSION):"2026-07-28"}}});
        let got: Vec<_> = routing_headers(&call, Some("2025-06-18"));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], ("mcp-protocol-version", HeaderValue::from_static("2026-07-28")));
        assert_eq!(got[2], ("mcp-name", HeaderValue::from_static("=?base64?w6k=?=")));
        let ping = json!({"jsonrpc":"2.0","id":2,"method":"ping"});
        assert_eq!(routing_headers(&ping, Some("2025-06-18")).len(), 1);
        assert!(routing_headers(&ping, None).is_empty());
    }
}
