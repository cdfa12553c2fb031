//! Test harness: starts the real `awswhitelist serve` binary in a temp dir, reads its JSON log
//! lines and its sd_notify messages (the readiness signals tests wait on), and speaks plain
//! HTTP/1.1 to it over loopback.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod http;
pub mod moto;
pub mod nginx;
pub mod redis;
pub mod skip;

#[allow(unused_imports)] // each test binary uses a different part
pub use skip::{in_ci, skip, tool};

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_awswhitelist");

/// Generous bound for anything that should take milliseconds: debug builds on a loaded
/// 2-core CI machine are slow, and a test that fails only waits this long once.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Lines seen so far, with a condition variable to wait for new ones.
#[derive(Default)]
pub struct Lines {
    lines: Mutex<Vec<Value>>,
    grew: Condvar,
}

impl Lines {
    fn push(&self, v: Value) {
        self.lines.lock().unwrap().push(v);
        self.grew.notify_all();
    }

    /// Number of lines so far (a position to search from later).
    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Copies of all lines so far.
    pub fn all(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line at index >= `from` that satisfies `pred`; returns its index and value.
    pub fn wait(&self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> (usize, Value) {
        self.try_wait(from, PATIENCE, pred)
            .unwrap_or_else(|| panic!("timed out waiting for {what}; log:\n{}", self.dump()))
    }

    /// Like [`Lines::wait`], but gives up after `limit` and returns None.
    pub fn try_wait(
        &self,
        from: usize,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(usize, Value)> {
        let deadline = Instant::now() + limit;
        let mut lines = self.lines.lock().unwrap();
        let mut next = from;
        loop {
            while next < lines.len() {
                if pred(&lines[next]) {
                    return Some((next, lines[next].clone()));
                }
                next += 1;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Every line, for failure messages.
    pub fn dump(&self) -> String {
        self.all().iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
    }
}

/// `event` field of a JSON log line.
pub fn event(v: &Value) -> &str {
    v.get("event").and_then(Value::as_str).unwrap_or("")
}

/// A JSON log line of the supervisor (not of a worker) with this event.
pub fn sup_event(v: &Value, name: &str) -> bool {
    event(v) == name && v.pointer("/span/name").and_then(Value::as_str) == Some("supervisor")
}

/// Integer field of a log line.
pub fn int(v: &Value, field: &str) -> i64 {
    v.get(field).and_then(Value::as_i64).unwrap_or(-1)
}

/// A running `awswhitelist serve`.
pub struct Service {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub logs: Arc<Lines>,
    pub notes: Arc<Lines>,
    /// First TCP address it listens on.
    pub addr: String,
    status: Option<ExitStatus>,
}

/// How to start a service.
pub struct Options {
    /// Config file text; `bind = "127.0.0.1:0"` and JSON logs are added unless present.
    pub config: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Wait for READY=1 before returning.
    pub wait_ready: bool,
}

impl Options {
    /// Defaults with this config text.
    pub fn new(config: &str) -> Options {
        Options { config: config.to_string(), env: Vec::new(), wait_ready: true }
    }
}

impl Service {
    /// Starts with `config` and waits until every worker is ready.
    pub fn start(config: &str) -> Service {
        Service::start_with(Options::new(config))
    }

    /// Starts with options.
    pub fn start_with(opts: Options) -> Service {
        Service::start_program(Path::new(BIN), opts)
    }

    /// Starts `program` (a copy of the binary under test, say) with options.
    pub fn start_program(program: &Path, opts: Options) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, full_config(&opts.config, dir.path())).unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let mut cmd = Command::new(program);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so a failed test can kill the workers too.
            .process_group(0);
        let child = cmd.spawn().unwrap();
        Service::attach(child, dir, config, notify, opts.wait_ready)
    }

    /// Wraps an already spawned serve process (for tests that spawn it differently).
    pub fn attach(
        mut child: Child,
        dir: tempfile::TempDir,
        config: PathBuf,
        notify: UnixDatagram,
        wait_ready: bool,
    ) -> Service {
        let logs = Arc::new(Lines::default());
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                sink.push(v);
            }
        });
        let notes = Arc::new(Lines::default());
        let sink = notes.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = notify.recv(&mut buf) {
                sink.push(Value::String(String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        });
        let mut svc = Service { child, dir, config, logs, notes, addr: String::new(), status: None };
        if wait_ready {
            let (_, l) = svc.logs.wait(0, "listening", |v| {
                sup_event(v, "listening") && !v["addr"].as_str().unwrap_or("").starts_with("unix:")
            });
            svc.addr = l["addr"].as_str().unwrap().to_string();
            svc.wait_note(0, "READY=1");
            // The log line comes before the datagram, but through another pipe and thread.
            svc.logs.wait(0, "ready", |v| sup_event(v, "ready"));
        }
        svc
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends a signal to the supervisor.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    /// Waits for a notify datagram at index >= `from` containing `needle`; returns its index.
    pub fn wait_note(&self, from: usize, needle: &str) -> usize {
        self.notes
            .try_wait(from, PATIENCE, |v| v.as_str().unwrap_or("").contains(needle))
            .unwrap_or_else(|| {
                panic!("no sd_notify {needle:?}; notes: {}\nlog:\n{}", self.notes.dump(), self.logs.dump())
            })
            .0
    }

    /// Pids of the workers ready at this moment, by the log: ready and not exited.
    pub fn live_workers(&self) -> Vec<(i64, Pid)> {
        let mut live: Vec<(i64, Pid)> = Vec::new();
        for v in self.logs.all() {
            if sup_event(&v, "worker_ready") {
                live.push((int(&v, "worker"), Pid::from_raw(int(&v, "pid") as i32)));
            } else if sup_event(&v, "worker_exited") || sup_event(&v, "worker_stopping") {
                live.retain(|(_, p)| p.as_raw() as i64 != int(&v, "pid"));
            }
        }
        live
    }

    /// Waits until every worker of another generation than `generation` has exited, so that
    /// whatever answers from then on runs that generation.
    pub fn wait_only_generation(&self, generation: i64) {
        let mut seen = 0;
        loop {
            let lines = self.logs.all();
            let mut old: Vec<i64> = Vec::new();
            for v in &lines {
                if sup_event(v, "worker_spawned") && int(v, "generation") != generation {
                    old.push(int(v, "pid"));
                } else if sup_event(v, "worker_exited") {
                    old.retain(|p| *p != int(v, "pid"));
                }
            }
            if old.is_empty() {
                return;
            }
            seen = lines.len().max(seen);
            self.logs.wait(seen, "another log line", |_| true);
            seen += 1;
        }
    }

    /// GET /health over a new connection.
    pub fn health(&self) -> Value {
        let r = http::get(&self.addr, "/health")
            .unwrap_or_else(|e| panic!("GET /health: {e}\nlog:\n{}", self.logs.dump()));
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Replaces the config file (for a later HUP).
    pub fn rewrite_config(&self, text: &str) {
        let tmp = self.dir.path().join("config.toml.new");
        std::fs::write(&tmp, full_config(text, self.dir.path())).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Waits for the supervisor to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Calls an MCP tool over a new connection (legacy revision); returns the whole result.
    pub fn call_tool(&self, name: &str, args: serde_json::Value) -> Value {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}});
        let v = self.post_mcp(&[("MCP-Protocol-Version", "2025-06-18")], &body).json();
        v.get("result").cloned().unwrap_or(v)
    }

    /// POSTs one JSON-RPC message to /mcp over a new connection, with these extra headers.
    pub fn post_mcp(&self, headers: &[(&str, &str)], body: &Value) -> http::Response {
        let body = body.to_string();
        let mut req =
            String::from("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
        http::raw(&self.addr, req.as_bytes()).unwrap_or_else(|e| panic!("POST /mcp {body}: {e}"))
    }

    /// Waits until `/health` says this `status` (`ok`, `degraded`); the body.
    pub fn wait_health(&self, status: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let h = http::get(&self.addr, "/health").unwrap().json();
            if h["status"] == status {
                return h;
            }
            assert!(Instant::now() < deadline, "/health never said {status}: {h}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the merged `/metrics` (a worker's figures reach it with its next snapshot,
    /// not at once) satisfies `ok`.
    pub fn wait_metrics(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = String::from_utf8_lossy(&http::get(&self.addr, "/metrics").unwrap().body).into_owned();
            if ok(&text) {
                return;
            }
            assert!(Instant::now() < deadline, "/metrics never showed {what}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Path inside the service's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = killpg(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Adds test defaults (ephemeral loopback port, JSON logs, a state directory) unless the text
/// sets them. The state directory is `<dir>/state`, removed with `dir`. (A name made from the
/// test's pid under /tmp was not unique: pids are reused within a run, and a service found the
/// state an earlier test left, owned by whoever ran it.)
pub fn full_config(text: &str, dir: &Path) -> String {
    let mut out = String::new();
    if !text.contains("bind") {
        out.push_str("bind = \"127.0.0.1:0\"\n");
    }
    // Top-level keys must precede any [table]; the [log] table goes last.
    out.push_str(text);
    if !text.contains("[log]") {
        out.push_str("\n[log]\nformat = \"json\"\nlevel = \"info\"\n");
    }
    if !text.contains("[whitelist]") {
        out.push_str(&format!("\n[whitelist]\nstate_dir = \"{}\"\n", dir.join("state").display()));
    }
    out
}

/// Speaks MCP to a child over its stdin/stdout (`stdio`, or `proxy`) as a client would:
/// initialize, then one `whitelist_list` of `group`; returns that call's answer (`None` if the
/// child closed stdout first) and closes stdin, so the child can exit.
pub fn list_over_stdio(child: &mut Child, group: &str) -> Option<Value> {
    use std::io::Write;
    let init = serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}});
    let mut stdin = child.stdin.take().expect("stdin piped");
    for message in [
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}),
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "whitelist_list", "arguments": {"security_group_id": group}}}),
    ] {
        writeln!(stdin, "{message}").expect("write to the child");
    }
    let stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let answer = stdout
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .find(|v| v["id"] == 2);
    drop(stdin);
    answer
}

/// True when running as root (some tests need to drop privileges).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Reads a process's real uid from /proc.
pub fn uid_of(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A client loop on loopback: threads that GET /health until stopped (or until a hard
/// deadline, so a failed test never leaves load running). "Fresh" threads open a new connection
/// per request; "keep-alive" threads reuse one until the server answers `Connection: close`,
/// and never retry: a request lost on a reused connection counts as a failure.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
    handles: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

/// What a load run saw.
#[derive(Debug)]
pub struct LoadResult {
    pub ok: u64,
    pub failures: Vec<String>,
}

impl LoadResult {
    /// Fails the test, with the first few failures, unless every request was answered.
    pub fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "{} failed of {}: {:?}",
            self.failures.len(),
            self.ok,
            &self.failures[..self.failures.len().min(10)]
        );
    }
}

impl Load {
    /// Starts `fresh` new-connection loops and `keepalive` reused-connection loops.
    pub fn start(addr: &str, fresh: usize, keepalive: usize) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let hard_stop = Instant::now() + Duration::from_secs(120);
        let handles = (0..fresh + keepalive)
            .map(|i| {
                let (stop, answered) = (stop.clone(), answered.clone());
                let addr = addr.to_string();
                let reuse = i >= fresh;
                std::thread::spawn(move || {
                    let (mut ok, mut failures) = (0u64, Vec::new());
                    let mut conn: Option<std::net::TcpStream> = None;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                        let outcome =
                            if reuse { keepalive_get(&addr, &mut conn) } else { http::get(&addr, "/health") };
                        match outcome {
                            Ok(r) if r.status == 200 => {
                                ok += 1;
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures.push(format!("status {}", r.status)),
                            Err(e) => failures.push(format!(
                                "{} connection: {e}",
                                if reuse { "kept-alive" } else { "new" }
                            )),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        Load { stop, answered, handles }
    }

    /// Requests answered so far, across all threads.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until `n` more requests have been answered: paces a test by work done, not time.
    pub fn wait_for(&self, n: u64) {
        let target = self.answered() + n;
        let deadline = Instant::now() + PATIENCE;
        while self.answered() < target {
            assert!(Instant::now() < deadline, "load stalled at {} answers", self.answered());
            std::thread::yield_now();
        }
    }

    /// Stops the loops and adds up what they saw.
    pub fn finish(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut result = LoadResult { ok: 0, failures: Vec::new() };
        for h in self.handles {
            let (ok, failures) = h.join().unwrap();
            result.ok += ok;
            result.failures.extend(failures);
        }
        result
    }
}

/// One GET on a kept-alive connection, opening a new one only when the last answer closed it.
fn keepalive_get(addr: &str, conn: &mut Option<std::net::TcpStream>) -> std::io::Result<http::Response> {
    use std::io::Write;
    if conn.is_none() {
        let s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        *conn = Some(s);
    }
    let result = (|| {
        let s = conn.as_mut().expect("connected above");
        s.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        http::read_response(s)
    })();
    match &result {
        Ok(r) if r.header("connection") != Some("close") => {}
        _ => *conn = None,
    }
    result
}

/// The failure text of a `tools/call` result as [`Service::call_tool`] returns it: an `isError`
/// result's text or a JSON-RPC error's message; `None` when the call succeeded.
pub fn tool_failure(r: &Value) -> Option<String> {
    let text = r["content"][0]["text"].as_str().map(str::to_string);
    match (r["isError"].as_bool(), r.pointer("/error/message").and_then(Value::as_str)) {
        (Some(true), _) => Some(text.unwrap_or_default()),
        (_, Some(m)) => Some(m.to_string()),
        _ => None,
    }
}

/// A 2026-07-28 `tools/call` of `whitelist_add` to `addr` as API key `key`, with `extra` merged
/// into params (`requestState`, `inputResponses`); the JSON-RPC result (or the whole body).
pub fn modern_add(addr: &str, key: &str, args: Value, capabilities: Value, extra: Value) -> Value {
    const MODERN: &str = "2026-07-28";
    let mut params = serde_json::json!({
        "name": "whitelist_add",
        "arguments": args,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "consent-test", "version": "1"},
        },
    });
    if let (Some(p), Value::Object(e)) = (params.as_object_mut(), extra) {
        p.extend(e);
    }
    // The group id mirrored as a 2026-07-28 client does (its x-mcp-header).
    let group = params.pointer("/arguments/security_group_id").and_then(Value::as_str).unwrap_or_default();
    let group_header = format!("Mcp-Param-Security-Group-Id: {group}\r\n");
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\n\
         Mcp-Name: whitelist_add\r\n{group_header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let v = http::raw(addr, req.as_bytes()).unwrap().json();
    v.get("result").cloned().unwrap_or(v)
}

/// `awswhitelist keygen --id ID --scopes SCOPES EXTRA…`: the key (printed once) and its
/// `[[auth.api_keys]]` entry.
pub fn keygen(id: &str, scopes: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .args(["keygen", "--id", id, "--scopes", scopes])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("keygen: {e}"));
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8(out.stdout).unwrap();
    let key = out.lines().find(|l| l.starts_with("awsk_")).expect("a key line").to_string();
    let entry = &out[out.find("[[auth.api_keys]]").expect("a config entry")..];
    assert!(!entry.contains(&key), "the config entry must hold only the key's hash");
    (key, entry.to_string())
}
