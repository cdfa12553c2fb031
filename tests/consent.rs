//! A person in the loop, end to end over HTTP: a real `serve` with two workers, a real moto,
//! `[policy.consent]` asking for consent on port 22. Every request is on a new connection, so
//! questions and retries land on either worker. What must hold: a change that needs consent is
//! made only after an accepted answer carrying a valid request state; a declined, tampered,
//! replayed, expired or other caller's state changes nothing; a client that cannot ask is
//! refused with a message naming the setting; what the policy does not cover is not asked.

mod common;

use std::process::{Command, Stdio};

use common::moto::Moto;
use common::{http, Options, Service, BIN};
use serde_json::{json, Value};

struct Env {
    moto: Moto,
    state: tempfile::TempDir,
    group: String,
    svc: Service,
    /// API keys of two callers (read+write).
    alice: String,
    bob: String,
}

/// moto, a group, and serve with consent on port 22 (state TTL `ttl` s) and two API keys.
fn env(ttl: u32) -> Option<Env> {
    let moto = Moto::start()?;
    let group = moto.create_group("consent");
    let state = tempfile::tempdir().unwrap();
    let (alice, alice_entry) = keygen("alice");
    let (bob, bob_entry) = keygen("bob");
    let config = format!(
        "workers = 2\n[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n[whitelist]\nstate_dir = \"{}\"\n\
         [policy]\nmin_prefix_v4 = 8\n[policy.consent]\nports = [22]\nstate_ttl_seconds = {ttl}\n\
         [auth]\nenabled = true\n{alice_entry}\n{bob_entry}\n",
        moto.url(),
        state.path().display()
    );
    let svc = Service::start_with(Options {
        config,
        env: vec![
            // moto accepts any keys; made up here, nobody's.
            ("AWS_ACCESS_KEY_ID".into(), format!("AKIA{:016}", std::process::id())),
            ("AWS_SECRET_ACCESS_KEY".into(), "0".repeat(40)),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
        wait_ready: true,
    });
    Some(Env { moto, state, group, svc, alice, bob })
}

fn keygen(id: &str) -> (String, String) {
    let out = Command::new(BIN)
        .args(["keygen", "--id", id, "--scopes", "whitelist:read whitelist:write"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8(out.stdout).unwrap();
    let key = out.lines().find(|l| l.starts_with("awsk_")).expect("a key line").to_string();
    let entry = out[out.find("[[auth.api_keys]]").expect("a config entry")..].to_string();
    (key, entry)
}

impl Env {
    /// A 2026-07-28 `tools/call` of `whitelist_add` as `key`, with `extra` merged into params;
    /// the JSON-RPC result (or the whole body when there is none).
    fn add(&self, key: &str, args: Value, capabilities: Value, extra: Value) -> Value {
        common::modern_add(&self.svc.addr, key, args, capabilities, extra)
    }

    fn ssh(&self, cidr: &str) -> Value {
        json!({"security_group_id": self.group, "ip_address": cidr, "port": 22, "duration": "1h"})
    }

    fn rules(&self) -> Vec<String> {
        self.moto.ingress(&self.group).into_iter().map(|r| format!("{} {}", r[1], r[3])).collect()
    }

    fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state.path().join("audit.log")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

fn elicit() -> Value {
    json!({"elicitation": {"form": {}}})
}

fn answer(action: &str, confirm: Option<bool>, state: &str) -> Value {
    let mut response = json!({"action": action});
    if let Some(c) = confirm {
        response["content"] = json!({"confirm": c});
    }
    json!({"inputResponses": {"consent": response}, "requestState": state})
}

fn failure(r: &Value) -> String {
    common::tool_failure(r).unwrap_or_else(|| panic!("expected a refusal, got {r}"))
}

/// The question: an input-required result with one form showing the exact change.
fn question(r: &Value, group: &str, cidr: &str) -> String {
    assert_eq!(r["resultType"], "input_required", "{r}");
    let form = &r["inputRequests"]["consent"];
    assert_eq!(form["method"], "elicitation/create", "{r}");
    assert_eq!(form["params"]["mode"], "form");
    assert_eq!(form["params"]["requestedSchema"]["properties"]["confirm"]["type"], "boolean");
    let message = form["params"]["message"].as_str().unwrap();
    for part in [group, cidr, "port 22", "tcp", "expires after 1h", "key:alice"] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    r["requestState"].as_str().expect("a requestState").to_string()
}

#[test]
fn accepted_consent_adds_once_and_declined_changes_nothing() {
    let Some(e) = env(300) else { return };
    let cidr = "203.0.113.7/32";
    let state = question(&e.add(&e.alice, e.ssh(cidr), elicit(), json!({})), &e.group, cidr);
    assert!(e.rules().is_empty(), "nothing before the answer");

    let done = e.add(&e.alice, e.ssh(cidr), elicit(), answer("accept", Some(true), &state));
    assert_eq!(done["structuredContent"]["changed"], true, "{done}");
    assert_eq!(e.rules(), [format!("{cidr} 22")]);

    // The same state again (on whichever worker): refused, nothing more happens.
    e.moto.ec2(&[
        ("Action", "RevokeSecurityGroupIngress"),
        ("GroupId", &e.group),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "22"),
        ("IpPermissions.1.ToPort", "22"),
        ("IpPermissions.1.IpRanges.1.CidrIp", cidr),
    ]);
    assert!(e.rules().is_empty());
    let replay = e.add(&e.alice, e.ssh(cidr), elicit(), answer("accept", Some(true), &state));
    assert!(failure(&replay).contains("already used"), "{replay}");
    assert!(e.rules().is_empty(), "a replay changes nothing");

    let other = "198.51.100.9/32";
    for (action, confirm) in [("decline", None), ("cancel", None), ("accept", Some(false))] {
        let state = question(&e.add(&e.alice, e.ssh(other), elicit(), json!({})), &e.group, other);
        let r = e.add(&e.alice, e.ssh(other), elicit(), answer(action, confirm, &state));
        let text = failure(&r);
        assert!(text.contains("nothing was changed") && text.contains("key:alice"), "{action}: {text}");
        assert!(e.rules().is_empty(), "{action} changes nothing");
    }

    let audit = e.audit();
    let accepted: Vec<&Value> = audit.iter().filter(|a| a["consent"]["decision"] == "accepted").collect();
    assert_eq!(accepted.len(), 2, "intent and outcome carry the consent: {audit:?}");
    assert!(accepted.iter().all(|a| a["consent"]["asked"] == "key:alice via consent-test"), "{accepted:?}");
    assert_eq!(accepted[1]["result"], "added");
    let declined: Vec<&str> =
        audit.iter().filter_map(|a| a["consent"]["decision"].as_str()).filter(|d| *d != "accepted").collect();
    assert_eq!(declined, ["declined", "cancelled", "declined"], "{audit:?}");

    // Workers report their counters to the supervisor with their heartbeats: scrape until the
    // merged view has caught up (it never counts more than happened).
    let want: Vec<String> = [("asked", 4), ("accepted", 1), ("declined", 3), ("refused", 1)]
        .iter()
        .map(|(event, n)| format!("awswl_consent_total{{event=\"{event}\"}} {n}"))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = String::from_utf8_lossy(&http::get(&e.svc.addr, "/metrics").unwrap().body).into_owned();
        if want.iter().all(|line| text.lines().any(|l| l == line)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{want:?} not all in /metrics:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[test]
fn tampered_foreign_and_expired_states_are_refused() {
    let Some(e) = env(2) else { return };
    let cidr = "203.0.113.8/32";
    let state = question(&e.add(&e.alice, e.ssh(cidr), elicit(), json!({})), &e.group, cidr);

    let mut bytes = state.clone().into_bytes();
    bytes[8] = if bytes[8] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let r = e.add(&e.alice, e.ssh(cidr), elicit(), answer("accept", Some(true), &tampered));
    assert!(failure(&r).contains("does not verify"), "{r}");

    let r = e.add(&e.bob, e.ssh(cidr), elicit(), answer("accept", Some(true), &state));
    assert!(failure(&r).contains("another caller"), "{r}");

    let r = e.add(&e.alice, e.ssh("203.0.113.9/32"), elicit(), answer("accept", Some(true), &state));
    assert!(failure(&r).contains("different change"), "{r}");
    assert!(e.rules().is_empty(), "nothing changed");

    // The state lives 2 s: past it, even the right caller's accept is refused.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let r = e.add(&e.alice, e.ssh(cidr), elicit(), answer("accept", Some(true), &state));
    assert!(failure(&r).contains("expired"), "{r}");
    assert!(e.rules().is_empty(), "nothing changed");
}

#[test]
fn a_client_that_cannot_ask_is_refused_and_uncovered_changes_are_not_asked() {
    let Some(e) = env(300) else { return };
    let cidr = "203.0.113.10/32";
    let r = e.add(&e.alice, e.ssh(cidr), json!({}), json!({}));
    let text = failure(&r);
    for part in ["consent is required", "port 22", "[policy.consent]", "elicitation"] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // A handshake-era client (no stream to ask on) is refused the same way.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whitelist_add", "arguments": e.ssh(cidr)}}).to_string();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        e.alice,
        body.len()
    );
    let legacy = http::raw(&e.svc.addr, req.as_bytes()).unwrap().json();
    assert!(failure(&legacy["result"]).contains("[policy.consent]"), "{legacy}");
    assert!(e.rules().is_empty(), "refused, nothing changed");

    // Port 443 is not in [policy.consent]: made without asking, even by a client that cannot ask.
    let https = json!({"security_group_id": e.group, "ip_address": cidr, "port": 443, "duration": "1h"});
    let r = e.add(&e.alice, https, json!({}), json!({}));
    assert_eq!(r["structuredContent"]["changed"], true, "{r}");
    assert_eq!(e.rules(), [format!("{cidr} 443")]);
}

// ------------------------------------------------------------------------------------------
// Handshake-era clients: signed session, event stream, answers routed between workers
// ------------------------------------------------------------------------------------------

const LEGACY: &str = "2025-11-25";

impl Env {
    /// A legacy POST of `body` as `key` with an optional session id; the response.
    fn legacy_post(&self, key: &str, session: Option<&str>, body: &Value) -> http::Response {
        let body = body.to_string();
        let session = session.map_or(String::new(), |s| format!("Mcp-Session-Id: {s}\r\n"));
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {LEGACY}\r\n{session}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        http::raw(&self.svc.addr, req.as_bytes()).unwrap()
    }

    /// `initialize` declaring `capabilities`; the session id issued, if any.
    fn initialize(&self, key: &str, capabilities: Value) -> Option<String> {
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": capabilities, "clientInfo": {"name": "raw", "version": "1"}}});
        let r = self.legacy_post(key, None, &body);
        assert_eq!(r.status, 200, "{r:?}");
        r.header("mcp-session-id").map(str::to_string)
    }

    /// Opens a legacy `tools/call` of whitelist_add whose answer is an event stream.
    fn open_stream(&self, key: &str, session: &str, args: Value) -> std::io::BufReader<std::net::TcpStream> {
        use std::io::Write;
        let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "whitelist_add", "arguments": args}}).to_string();
        let mut s = std::net::TcpStream::connect(&self.svc.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {LEGACY}\r\nMcp-Session-Id: {session}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        std::io::BufReader::new(s)
    }
}

/// The next `data:` line of an event stream, as JSON; `None` at its end.
fn next_event(stream: &mut std::io::BufReader<std::net::TcpStream>) -> Option<Value> {
    use std::io::BufRead;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            return Some(serde_json::from_str(data).unwrap());
        }
    }
}

#[test]
fn legacy_sessions_are_signed_and_an_unanswered_or_foreign_answer_changes_nothing() {
    let Some(e) = env(3) else { return };
    assert_eq!(e.initialize(&e.alice, json!({})), None, "nothing to remember, no session");
    let session =
        e.initialize(&e.alice, json!({"elicitation": {}})).expect("a session id for an eliciting client");

    let call = |session: &str| {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whitelist_list", "arguments": {"security_group_id": e.group}}});
        e.legacy_post(&e.alice, Some(session), &body)
    };
    assert_eq!(call(&session).status, 200, "the session verifies on whichever worker");
    let mut forged = session.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let r = call(&String::from_utf8(forged).unwrap());
    assert_eq!(r.status, 404, "an altered session id is not found: {r:?}");

    // The question comes on the stream; Bob's answer to Alice's question is not taken; nobody
    // else answers, so after state_ttl_seconds the call fails and nothing changes.
    let cidr = "203.0.113.20/32";
    let mut stream = e.open_stream(&e.alice, &session, e.ssh(cidr));
    let question = next_event(&mut stream).expect("a question on the stream");
    assert_eq!(question["method"], "elicitation/create", "{question}");
    let message = question["params"]["message"].as_str().unwrap();
    assert!(message.contains(cidr) && message.contains("port 22"), "{message}");
    let id = question["id"].as_str().unwrap();
    assert!(id.starts_with("awswl-"), "{id}");
    let answer =
        json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"confirm": true}}});
    let bob_session = e.initialize(&e.bob, json!({"elicitation": {}})).unwrap();
    assert_eq!(e.legacy_post(&e.bob, Some(&bob_session), &answer).status, 202);
    let last = next_event(&mut stream).expect("the call's response on the stream");
    assert_eq!(last["id"], 5, "{last}");
    let text = failure(&last["result"]);
    assert!(text.contains("nobody answered") && text.contains("state_ttl_seconds"), "{text}");
    assert!(next_event(&mut stream).is_none(), "the stream ends with the response");
    assert!(e.rules().is_empty(), "nothing changed");
    // Bob's answer was refused (worker log lines are written in batches: wait for it).
    e.svc.logs.wait(0, "answer_undelivered", |l| l["event"] == "answer_undelivered");
}

/// `awswhitelist stdio`: the question is a line on stdout, the client's answer a line on stdin.
#[test]
fn stdio_asks_with_a_request_line_and_takes_the_answer_line() {
    use std::io::{BufRead, BufReader, Write};
    let Some(moto) = Moto::start() else { return };
    let group = moto.create_group("consent-stdio");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n[whitelist]\nstate_dir = \"{}\"\n\
             [policy.consent]\nports = [22]\n",
            moto.url(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["stdio", "--config", config.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", format!("AKIA{:016}", std::process::id()))
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(40))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<Value>();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::Null));
        }
    });
    let mut send = |v: Value| writeln!(stdin, "{v}").and_then(|()| stdin.flush()).unwrap();
    let recv = || lines.recv_timeout(std::time::Duration::from_secs(60)).expect("a line from stdio");
    let add = |id: u32, ip: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "whitelist_add",
            "arguments": {"security_group_id": group, "ip_address": ip, "port": 22, "duration": "1h"}}})
    };

    send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": LEGACY,
        "capabilities": {"elicitation": {}}, "clientInfo": {"name": "stdio-test", "version": "1"}}}));
    assert_eq!(recv()["id"], 0);
    for (id, ip, action, added) in
        [(1, "203.0.113.30", "accept", true), (2, "203.0.113.31", "decline", false)]
    {
        send(add(id, ip));
        let question = recv();
        assert_eq!(question["method"], "elicitation/create", "{question}");
        assert!(question["params"]["message"].as_str().unwrap().contains(ip), "{question}");
        send(
            json!({"jsonrpc": "2.0", "id": question["id"], "result": {"action": action, "content": {"confirm": true}}}),
        );
        let result = recv();
        assert_eq!(result["id"], id, "{result}");
        assert_eq!(result["result"]["isError"].as_bool().unwrap_or(false), !added, "{result}");
        let present = moto.ingress(&group).iter().any(|r| r[1] == format!("{ip}/32"));
        assert_eq!(present, added, "{action}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
