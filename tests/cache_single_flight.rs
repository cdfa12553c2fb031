//! EC2 asked once per host (issue 12): 64 concurrent `whitelist_check` calls on a group whose
//! cache entry has expired, spread over both workers of `serve`, reach moto as exactly one
//! DescribeSecurityGroupRules (counted from moto's own request recorder); and an add through one
//! worker makes the next list through the other fresh. Not timed: it asserts counts and content.
//!
//! Each call is pinned to a worker by sending it on a keep-alive connection whose worker is known
//! (`service_status` on that connection names its slot): a connection is served by the worker
//! that accepted it.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{http, moto::Moto, Service};
use serde_json::{json, Value};

const CALLS: usize = 64;
/// Long enough for 64 debug-build checks to finish inside one TTL after the refresh.
const CACHE_TTL_S: f64 = 3.0;

/// A keep-alive connection to one worker.
struct Conn {
    stream: TcpStream,
    worker: i64,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut conn = Conn { stream, worker: -1 };
        let status = conn.call("service_status", json!({}));
        conn.worker = status["structuredContent"]["worker"].as_i64().unwrap_or_else(|| panic!("{status}"));
        conn
    }

    /// One `tools/call` on this connection (legacy revision); the result.
    fn call(&mut self, name: &str, args: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}})
            .to_string();
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
        let r = http::read_response(&mut self.stream).unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(r.status, 200, "{r:?}");
        let v = r.json();
        v.get("result").cloned().unwrap_or_else(|| panic!("{v}"))
    }
}

/// `per_worker` connections on each of the two workers (extra connections are closed).
fn pinned(addr: &str, per_worker: usize) -> (Vec<Conn>, Vec<Conn>) {
    let mut by_worker: std::collections::BTreeMap<i64, Vec<Conn>> = Default::default();
    for _ in 0..per_worker * 20 {
        let c = Conn::open(addr);
        let own = by_worker.entry(c.worker).or_default();
        if own.len() < per_worker {
            own.push(c);
        }
        if by_worker.len() == 2 && by_worker.values().all(|v| v.len() == per_worker) {
            let mut two = by_worker.into_values();
            return (two.next().unwrap(), two.next().unwrap());
        }
    }
    let counts: Vec<(i64, usize)> = by_worker.iter().map(|(w, v)| (*w, v.len())).collect();
    panic!("could not get {per_worker} connections on each of two workers: {counts:?}");
}

fn describes_of(moto: &Moto, group: &str) -> usize {
    moto.recorded_ec2()
        .iter()
        .filter(|form| form.iter().any(|(k, v)| k == "Action" && v == "DescribeSecurityGroupRules"))
        .filter(|form| form.iter().any(|(_, v)| v == group))
        .count()
}

fn ok(r: &Value) -> &Value {
    assert!(!r["isError"].as_bool().unwrap_or(false), "{r}");
    &r["structuredContent"]
}

#[test]
fn concurrent_checks_on_an_expired_entry_ask_ec2_once_per_host_and_writes_are_seen_everywhere() {
    let Some(moto) = Moto::recording() else { return };
    let group = moto.create_group("single-flight");
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "workers = 2\nkeepalive = 60.0\n{}[whitelist]\nstate_dir = \"{}\"\ncache_ttl = {CACHE_TTL_S}\n[rate_limit]\nenabled = false\n",
        moto.aws_table(),
        state.path().display()
    );
    let svc = Service::start_with(common::Options { config, env: Moto::sdk_env(), wait_ready: true });
    let (mut zero, mut one) = pinned(&svc.addr, CALLS / 2);
    let (worker_a, worker_b) = (zero[0].worker, one[0].worker);
    let check = json!({"security_group_id": group, "ip_address": "203.0.113.50", "port": 22});

    // Warm both workers' entries, then let them expire past the stale window (2 × cache_ttl).
    ok(&zero[0].call("whitelist_check", check.clone()));
    ok(&one[0].call("whitelist_check", check.clone()));
    std::thread::sleep(Duration::from_secs_f64(2.0 * CACHE_TTL_S + 0.5));
    let before = describes_of(&moto, &group);
    assert!(before >= 1, "the warm-up reached moto");

    let start = Arc::new(Barrier::new(CALLS));
    let threads: Vec<_> = zero
        .drain(..)
        .chain(one.drain(..))
        .map(|mut conn| {
            let (start, check) = (start.clone(), check.clone());
            std::thread::spawn(move || {
                start.wait();
                let r = conn.call("whitelist_check", check);
                (conn, r)
            })
        })
        .collect();
    let mut conns: Vec<Conn> = Vec::new();
    for t in threads {
        let (conn, r) = t.join().unwrap();
        assert_eq!(ok(&r)["exists"], false, "{r}");
        conns.push(conn);
    }
    assert_eq!(conns.iter().filter(|c| c.worker == worker_a).count(), CALLS / 2);
    assert_eq!(conns.iter().filter(|c| c.worker == worker_b).count(), CALLS / 2);
    assert_eq!(
        describes_of(&moto, &group) - before,
        1,
        "{CALLS} concurrent checks on an expired entry, 2 workers"
    );

    // An add through worker A, then a list through worker B (whose cached entry is fresh, and
    // so must have been invalidated by the add): it shows the new rule.
    let (a, b): (Vec<Conn>, Vec<Conn>) = conns.into_iter().partition(|c| c.worker == worker_a);
    let (mut a, mut b) = (a.into_iter().next().unwrap(), b.into_iter().next().unwrap());
    ok(&b.call("whitelist_list", json!({"security_group_id": group})));
    let added = a.call("whitelist_add", check.clone());
    assert_eq!(ok(&added)["changed"], true, "{added}");
    let listed = b.call("whitelist_list", json!({"security_group_id": group}));
    let rules = ok(&listed)["rules"].as_array().cloned().unwrap_or_default();
    assert!(
        rules.iter().any(|r| r["cidr_ip"] == "203.0.113.50/32"),
        "stale list on the other worker: {listed}"
    );
    assert_eq!(ok(&b.call("whitelist_check", check))["exists"], true);
}
