//! `awswhitelist stdio` and `awswhitelist proxy` driven the way an MCP client drives them: one
//! JSON message per line on the child's stdin, answers read line by line from its stdout while
//! stdin stays open. The proxy talks to a real `serve`, to a closed port, and to a scripted
//! HTTP peer standing in for nginx error pages, event streams, batches and sessions.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::PATIENCE;

/// A running `stdio` or `proxy` child and the lines it prints.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    stderr: Arc<Mutex<String>>,
    /// `stdio` keeps state (audit log, cache counters): here, never in the real home directory,
    /// and never what an earlier test left (a name made from the pid was reused within a run).
    _state: tempfile::TempDir,
}

impl Peer {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Peer {
        let state = tempfile::tempdir().expect("a state directory");
        let mut child = Command::new(common::BIN)
            .args(args)
            .env("XDG_STATE_HOME", state.path())
            .env_remove("AWSWHITELIST_CONFIG")
            .env_remove("MCP_REMOTE_URL")
            .env_remove("MCP_AUTH_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the binary");
        let (tx, stdout) = mpsc::channel();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || loop {
            let mut line = Vec::new();
            match out.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => drop(tx.send(line)),
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sink, mut err) = (stderr.clone(), child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Peer { stdin: child.stdin.take(), child, stdout, stderr, _state: state }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).and_then(|()| stdin.write_all(b"\n")).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.stdin.as_mut().expect("stdin open").write_all(bytes).expect("write stdin");
    }

    /// The next stdout line, which must be exactly one JSON object and a newline.
    fn recv(&self) -> Value {
        let line = match self.stdout.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => panic!("no line from the child ({e:?}); stderr:\n{}", self.stderr()),
        };
        let text = String::from_utf8(line).expect("stdout is UTF-8");
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "not one line: {text:?}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        v
    }

    /// Sends a request and returns its answer (checking it has the same id).
    fn call(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string());
        let answer = self.recv();
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}).to_string());
    }

    /// Closes stdin and waits for the exit; nothing more may have been printed.
    fn close(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "no exit after stdin closed; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        };
        match self.stdout.recv_timeout(PATIENCE) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => panic!("unexpected stdout after the conversation: {other:?}"),
        }
        status
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn init_params() -> Value {
    json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}})
}

/// The conversation every client has: handshake, list, call, ping, a bad line, blank lines.
/// `remote`: the status tool names the worker that answered (null locally, a number via serve).
fn converse(peer: &mut Peer, remote: bool) {
    let init = peer.call(json!(1), "initialize", init_params());
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "awswhitelist", "{init}");
    peer.notify("notifications/initialized");
    let list = peer.call(json!(2), "tools/list", json!({}));
    let tools = list["result"]["tools"].as_array().expect("tools");
    let status = tools.iter().find(|t| t["name"] == "service_status").expect("service_status listed");
    // outputSchema exists from 2025-06-18 on: the negotiated revision was carried forward.
    assert!(status.get("outputSchema").is_some(), "{status}");
    let call = peer.call(json!("c"), "tools/call", json!({"name": "service_status", "arguments": {}}));
    let content = &call["result"]["structuredContent"];
    assert_eq!(content["service"], "awswhitelist", "{call}");
    assert_eq!(content["worker"].is_u64(), remote, "{call}");
    assert_eq!(peer.call(json!(3), "ping", json!({}))["result"], json!({}));
    peer.send("{\"jsonrpc\": \"2.0\", \"id\": 4, \"method\": ");
    let bad = peer.recv();
    assert_eq!((bad["id"].clone(), bad["error"]["code"].clone()), (Value::Null, json!(-32700)), "{bad}");
    peer.send("");
    peer.send(" \t");
    assert_eq!(peer.call(json!(5), "ping", json!({}))["result"], json!({}));
}

#[test]
fn stdio_speaks_mcp_line_by_line_and_exits_on_eof() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[mcp]\nmax_body_bytes = 4096\n").unwrap();
    let mut peer = Peer::start(&["stdio", "--config", config.to_str().unwrap()], &[]);
    converse(&mut peer, false);
    // The configured size limit applies to lines; the loop goes on after refusing one.
    peer.send(&format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}",
        "a".repeat(5000)
    ));
    let long = peer.recv();
    assert_eq!(long["error"]["code"], -32700, "{long}");
    assert!(long["error"]["message"].as_str().unwrap().contains("4096"), "{long}");
    peer.send_bytes(b"{\"jsonrpc\":\"2.0\",\"id\":\"\xff\",\"method\":\"ping\"}\n");
    assert_eq!(peer.recv()["error"]["code"], -32700);
    let unknown = peer.call(json!(7), "no/such/method", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    peer.notify("notifications/cancelled");
    let status = peer.close();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn proxy_carries_the_conversation_to_a_real_serve() {
    let svc = common::Service::start("workers = 2\n");
    let url = format!("http://{}/mcp", svc.addr);
    let mut peer = Peer::start(&["proxy"], &[("MCP_REMOTE_URL", &url)]);
    converse(&mut peer, true);
    // Streaming: two requests written back to back are both answered while stdin stays open.
    peer.send(&json!({"jsonrpc": "2.0", "id": 10, "method": "ping"}).to_string());
    peer.send(&json!({"jsonrpc": "2.0", "id": 11, "method": "tools/list"}).to_string());
    let mut ids = vec![peer.recv()["id"].clone(), peer.recv()["id"].clone()];
    ids.sort_by_key(|id| id.as_i64());
    assert_eq!(ids, [json!(10), json!(11)]);
    // A server-side refusal keeps its id and its code.
    let unknown = peer.call(json!(12), "no/such/method", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    assert_eq!(peer.close().code(), Some(0));
}

#[test]
fn proxy_mirrors_the_x_mcp_header_parameters_of_2026_07_28_calls() {
    let svc = common::Service::start("workers = 2\n");
    let url = format!("http://{}/mcp", svc.addr);
    let mut peer = Peer::start(&["proxy"], &[("MCP_REMOTE_URL", &url)]);
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let check = json!({"name": "whitelist_check", "_meta": meta,
        "arguments": {"security_group_id": "sg-0123456789abcdef0", "ip_address": "192.0.2.1", "port": 22}});
    // Not listed yet: the proxy lists the tools itself first, so the call carries its header
    // and reaches the tool (which fails here for want of AWS: a tool result, not a refusal).
    let early = peer.call(json!(1), "tools/call", check.clone());
    assert!(early.get("error").is_none() && early["result"]["isError"] == true, "{early}");
    let list = peer.call(json!(2), "tools/list", json!({"_meta": meta}));
    let add =
        list["result"]["tools"].as_array().and_then(|t| t.iter().find(|t| t["name"] == "whitelist_check"));
    assert_eq!(
        add.map(|t| &t["inputSchema"]["properties"]["security_group_id"]["x-mcp-header"]),
        Some(&json!("Security-Group-Id"))
    );
    // Listed by the client: the same.
    let call = peer.call(json!(3), "tools/call", check);
    assert!(call.get("error").is_none() && call["result"]["isError"] == true, "{call}");
    assert_eq!(peer.close().code(), Some(0));
}

#[test]
fn proxy_reports_an_unreachable_server_per_request() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut peer = Peer::start(&["proxy"], &[("MCP_REMOTE_URL", &url)]);
    peer.notify("notifications/initialized");
    for id in [json!(1), json!("two")] {
        let answer = peer.call(id, "ping", json!({}));
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert_eq!(answer["error"]["code"], -32000, "{answer}");
        assert!(message.contains(&format!("127.0.0.1:{port}")) && message.contains("refused"), "{message}");
    }
    assert_eq!(peer.close().code(), Some(0));
}

/// A scripted HTTP/1.1 peer: answers by the JSON-RPC method of each POST and records every
/// request (head and body), one connection per request.
struct Scripted {
    addr: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Scripted {
    fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || answer(stream, &log));
            }
        });
        Scripted { addr, seen }
    }

    fn head_of(&self, method: &str) -> String {
        let seen = self.seen.lock().unwrap();
        let found = seen.iter().find(|(_, body)| body["method"] == method);
        found.map(|(head, _)| head.to_lowercase()).unwrap_or_else(|| panic!("no {method} request seen"))
    }
}

fn answer(mut stream: TcpStream, log: &Mutex<Vec<(String, Value)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut head, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    log.lock().unwrap().push((head, body.clone()));
    let id = body["id"].clone();
    let ok = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let html = "<html><head><title>401 Authorization Required</title></head><body>nginx</body></html>";
    let (status, extra, content_type, text) = match body["method"].as_str().unwrap_or("") {
        "initialize" => ("200 OK", "Mcp-Session-Id: s-1\r\n", "application/json", ok(init_params())),
        "deny" => ("401 Unauthorized", "WWW-Authenticate: Bearer\r\n", "text/html", html.to_string()),
        "gateway" => ("502 Bad Gateway", "", "text/html", "<html>502 Bad Gateway</html>".into()),
        "stream" => {
            let progress =
                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
            let text = format!(
                ": hi\n\nid: 1\ndata:\n\nevent: message\ndata: {progress}\n\ndata: {}\n\n",
                ok(json!({"streamed": true}))
            );
            ("200 OK", "", "text/event-stream", text)
        }
        "batch" => {
            let text = json!([{"jsonrpc": "2.0", "id": id, "result": {"n": 1}}, {"jsonrpc": "2.0", "id": "other", "result": {"n": 2}}]);
            ("200 OK", "", "application/json", text.to_string())
        }
        "slow" => {
            std::thread::sleep(Duration::from_secs(5));
            return;
        }
        "quiet" => ("202 Accepted", "", "application/json", String::new()),
        _ => ("200 OK", "", "application/json", ok(json!({}))),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

#[test]
fn proxy_turns_every_kind_of_answer_into_lines_with_the_right_id() {
    let server = Scripted::start();
    let url = format!("http://{}/mcp", server.addr);
    let env = [("MCP_REMOTE_URL", url.as_str()), ("MCP_AUTH_TOKEN", "s3cret-token")];
    let mut peer = Peer::start(&["proxy", "--timeout", "1", "--log-level", "debug"], &env);
    peer.call(json!(1), "initialize", init_params());
    // Headers: JSON in, JSON or SSE out, the token, and what initialize taught the proxy.
    peer.call(json!(2), "ping", json!({}));
    let head = server.head_of("ping");
    for expected in [
        "content-type: application/json",
        "accept: application/json, text/event-stream",
        "authorization: bearer s3cret-token",
        "mcp-session-id: s-1",
        "mcp-protocol-version: 2025-06-18",
    ] {
        assert!(head.contains(expected), "{expected:?} missing from:\n{head}");
    }
    let denied = peer.call(json!(3), "deny", json!({}));
    let message = denied["error"]["message"].as_str().unwrap_or("");
    assert_eq!(denied["error"]["code"], -32000, "{denied}");
    assert!(message.contains("401") && message.contains("MCP_AUTH_TOKEN"), "{message}");
    assert_eq!(denied["error"]["data"]["httpStatus"], 401, "{denied}");
    let gateway = peer.call(json!("g"), "gateway", json!({}));
    assert!(gateway["error"]["message"].as_str().unwrap_or("").contains("502"), "{gateway}");
    // An event stream: each message in it is a line, the notification first.
    peer.send(&json!({"jsonrpc": "2.0", "id": 4, "method": "stream"}).to_string());
    assert_eq!(peer.recv()["method"], "notifications/progress");
    assert_eq!(peer.recv(), json!({"jsonrpc": "2.0", "id": 4, "result": {"streamed": true}}));
    // A batch body: one line per element.
    peer.send(&json!({"jsonrpc": "2.0", "id": 5, "method": "batch"}).to_string());
    assert_eq!(peer.recv()["id"], 5);
    assert_eq!(peer.recv()["id"], "other");
    // No answer in time, or none at all: an error with the request's id.
    let slow = peer.call(json!(6), "slow", json!({}));
    assert_eq!(slow["error"]["code"], -32001, "{slow}");
    let quiet = peer.call(json!(7), "quiet", json!({}));
    assert_eq!(quiet["error"]["code"], -32000, "{quiet}");
    // A failing notification prints nothing; a bad line is answered without the server.
    peer.notify("deny");
    peer.send("not json");
    let bad = peer.recv();
    assert_eq!((bad["id"].clone(), bad["error"]["code"].clone()), (Value::Null, json!(-32700)), "{bad}");
    assert_eq!(peer.call(json!(8), "ping", json!({}))["result"], json!({}));
    let stderr = peer.stderr.clone();
    assert_eq!(peer.close().code(), Some(0));
    let seen = server.seen.lock().unwrap();
    assert!(seen.iter().all(|(_, body)| body.is_object()), "a line that is not JSON was forwarded");
    assert!(seen.iter().any(|(_, body)| body["method"] == "deny" && body.get("id").is_none()));
    let stderr = stderr.lock().unwrap();
    assert!(stderr.contains("forward_failed") && !stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn proxy_setup_errors_are_clear_and_the_token_stays_hidden() {
    let out = Command::new(common::BIN)
        .args(["proxy", "--help"])
        .env("MCP_AUTH_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("MCP_REMOTE_URL") && help.contains("--timeout"), "{help}");
    assert!(!help.contains("s3cret"), "{help}");
    for url in ["ftp://example.com/mcp", "http://user:pw@localhost/mcp", "not a url"] {
        let out =
            Command::new(common::BIN).args(["proxy", "--url", url]).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(out.stdout.is_empty(), "{url}: stdout {:?}", out.stdout);
        assert!(String::from_utf8_lossy(&out.stderr).contains("MCP_REMOTE_URL"), "{url}");
    }
}

#[test]
fn proxy_refuses_plain_http_to_a_remote_host() {
    let proxy = |url: &str, extra: &[&str]| {
        Command::new(common::BIN)
            .args(["proxy", "--url", url])
            .args(extra)
            .env("MCP_AUTH_TOKEN", "s3cret-token")
            .env_remove("MCP_ALLOW_INSECURE_HTTP")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for url in ["http://mcp.example.com/mcp", "http://192.0.2.10:8080/mcp", "http://[2001:db8::1]/mcp"] {
        let out = proxy(url, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(out.stdout.is_empty(), "{url}: stdout {:?}", out.stdout);
        assert!(stderr.contains("--allow-insecure-http") && stderr.contains("https://"), "{url}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
    // Loopback stays allowed, and the flag lets a person choose plain http on purpose (stdin is
    // empty: nothing is sent, the proxy just starts and ends).
    for (url, extra) in [
        ("http://localhost:9/mcp", &[][..]),
        ("http://127.0.0.1:9/mcp", &[][..]),
        ("http://[::1]:9/mcp", &[][..]),
        ("http://mcp.example.com/mcp", &["--allow-insecure-http"][..]),
    ] {
        let out = proxy(url, extra);
        assert_eq!(out.status.code(), Some(0), "{url} {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn stdio_refuses_a_state_dir_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("[whitelist]\nstate_dir = \"{}\"\n", state.display())).unwrap();
    let stdio = || {
        Command::new(common::BIN)
            .args(["stdio", "--config", config.to_str().unwrap()])
            .env_remove("AWSWHITELIST_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = stdio();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("whitelist.state_dir") && stderr.contains("chmod"), "{stderr}");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "a state file was created in the refused dir");
    // Only the service's user may write it: owned by someone else is refused too (testable as root).
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let out = stdio();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("whitelist.state_dir") && stderr.contains("owned by"), "{stderr}");
        nix::unistd::chown(&state, Some(nix::unistd::geteuid()), None).unwrap();
    }
    assert!(stdio().status.success(), "a private state dir is accepted");
}

#[test]
fn stdio_read_only_offers_no_changing_tool_and_still_reads() {
    let Some(moto) = common::moto::Moto::start() else { return };
    let g = moto.create_group("ro-stdio");
    moto.authorize(&g, "198.51.100.0/24", 22, "by hand");
    let before = moto.ingress(&g);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("{}\n[policy]\nread_only = true\n", moto.aws_table())).unwrap();
    let env = common::moto::Moto::sdk_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut peer = Peer::start(&["stdio", "--config", config.to_str().unwrap()], &env);
    let init = peer.call(json!(1), "initialize", init_params());
    let instructions = init["result"]["instructions"].as_str().unwrap_or_default();
    assert!(instructions.contains("read-only ([policy] read_only)"), "{init}");
    let list = peer.call(json!(2), "tools/list", json!({}));
    let names: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(!names.contains(&"whitelist_add") && !names.contains(&"whitelist_remove"), "{names:?}");
    assert!(names.contains(&"whitelist_list"), "{names:?}");
    for (id, tool) in [(3, "whitelist_add"), (4, "whitelist_remove")] {
        let args = json!({"security_group_id": g, "ip_address": "198.51.100.0/24"});
        let r = peer.call(json!(id), "tools/call", json!({"name": tool, "arguments": args}));
        let failure = common::tool_failure(&r["result"]).unwrap_or_else(|| panic!("not refused: {r}"));
        assert!(failure.contains("[policy] read_only = false"), "names the setting: {failure}");
    }
    let listed = peer.call(
        json!(5),
        "tools/call",
        json!({"name": "whitelist_list", "arguments": {"security_group_id": g}}),
    );
    assert_eq!(listed["result"]["structuredContent"]["count"], 1, "{listed}");
    assert_eq!(moto.ingress(&g), before, "nothing changed");
    assert_eq!(peer.close().code(), Some(0));
}
