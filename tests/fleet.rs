//! Several hosts, one service: two `serve` instances ("hosts": own ports, own state dirs) share
//! one Redis (`[redis]`), one server or a 3-master Redis Cluster, behind one nginx upstream.
//! A client gets exactly its configured burst in total, whichever host nginx picks; when Redis
//! dies, the configured fallback answers, `/health` says degraded and the metrics say so, and
//! all is well again once Redis is back.
//!
//! A change through one host is seen at once by a list through the other, however long the
//! cache lives.
//!
//! The refill is one request per two minutes, so nothing comes back while a test runs: the
//! counts are exact, not "about".

mod common;

use std::time::{Duration, Instant};

use common::moto::Moto;
use common::nginx::{free_port, main_conf, nginx_binary, site, wait_up, Nginx};
use common::redis::{server_binary, Cluster, Redis};
use common::{http, Options, Service};
use serde_json::json;

const BURST: usize = 5;

/// Two hosts with this `[redis]` body and two API keys; their `Authorization` headers.
fn two_hosts(redis: &str) -> (Service, Service, [String; 2]) {
    let (a, entry_a) = common::keygen("client-a", "whitelist:read", &[]);
    let (b, entry_b) = common::keygen("client-b", "whitelist:read", &[]);
    let config = format!(
        "workers = 2\nforwarded_allow_ips = [\"127.0.0.1\"]\n[rate_limit]\nrequests_per_minute = 0.5\nburst = {BURST}\n[redis]\n{redis}\nhosts = 2\n[auth]\nenabled = true\n\n{entry_a}\n{entry_b}"
    );
    let one = Service::start(&config);
    let two = Service::start(&config);
    (one, two, [format!("Bearer {a}"), format!("Bearer {b}")])
}

/// A ping through `addr` with this Authorization; the HTTP status.
fn ping(addr: &str, authorization: &str) -> u16 {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-06-18\r\nAuthorization: {authorization}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http::raw(addr, req.as_bytes()).unwrap().status
}

/// nginx in front of both hosts, round robin; its address.
fn front(bin: &std::path::Path, dir: &std::path::Path, one: &Service, two: &Service) -> (Nginx, String) {
    let port = free_port();
    // The site's one `server` line becomes two.
    let upstream = format!("{};\n    server {}", one.addr, two.addr);
    let conf = main_conf(dir, &site(&upstream, port, None));
    let nginx = Nginx::start(bin, dir, &conf);
    let addr = format!("127.0.0.1:{port}");
    wait_up(&addr, dir);
    (nginx, addr)
}

fn exactly_the_burst_in_total(redis: &str) {
    let Some(nginx_bin) = nginx_binary() else { return };
    let (one, two, [a, b]) = two_hosts(redis);
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, addr) = front(&nginx_bin, dir.path(), &one, &two);
    let statuses: Vec<u16> = (0..4 * BURST).map(|_| ping(&addr, &a)).collect();
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(allowed, BURST, "one client, two hosts: exactly the burst in total: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    // Both hosts refused some (nginx spreads the requests), so the limit was shared; the
    // host's metrics are merged from its workers' snapshots, which arrive a little later.
    let limited = |s: &Service| common::int(&metrics_line(s, "rate_limited_total"), "v");
    let deadline = Instant::now() + common::PATIENCE;
    while limited(&one) == 0 || limited(&two) == 0 {
        assert!(
            Instant::now() < deadline,
            "both hosts refused some: {} and {}",
            limited(&one),
            limited(&two)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let other: Vec<u16> = (0..BURST).map(|_| ping(&addr, &b)).collect();
    assert!(other.iter().all(|s| *s == 200), "another client is unaffected: {other:?}");
}

/// `name value` from /metrics (merged over the host's workers), as `{"v": value}`.
fn metrics_line(svc: &Service, name: &str) -> serde_json::Value {
    let text = String::from_utf8_lossy(&http::get(&svc.addr, "/metrics").unwrap().body).into_owned();
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"));
    serde_json::json!({"v": v as i64})
}

#[test]
fn two_hosts_behind_nginx_share_one_burst_through_one_redis() {
    let Some(bin) = server_binary() else { return };
    let redis = Redis::start(&bin);
    exactly_the_burst_in_total(&format!("url = \"{}\"", redis.url()));
}

#[test]
fn two_hosts_behind_nginx_share_one_burst_through_a_redis_cluster() {
    let Some(bin) = server_binary() else { return };
    let cluster = Cluster::start(&bin);
    exactly_the_burst_in_total(&format!("cluster = {}", cluster.seeds()));
}

fn through_an_outage(fallback: &str, refused_while_down: u16) {
    let Some(bin) = server_binary() else { return };
    let mut redis = Redis::start(&bin);
    let (key, entry) = common::keygen("client", "whitelist:read", &[]);
    let auth = format!("Bearer {key}");
    let svc = Service::start(&format!(
        "workers = 1\n[rate_limit]\nrequests_per_minute = 6000\nburst = 1000\n[redis]\nurl = \"{}\"\nhosts = 2\nrate_limit_fallback = \"{fallback}\"\n[auth]\nenabled = true\n\n{entry}",
        redis.url()
    ));
    assert_eq!(ping(&svc.addr, &auth), 200);
    assert_eq!(svc.wait_health("ok")["status"], "ok");

    redis.kill();
    let down: Vec<u16> = (0..10).map(|_| ping(&svc.addr, &auth)).collect();
    assert!(down.iter().all(|s| *s == refused_while_down), "{fallback} while Redis is down: {down:?}");
    let h = svc.wait_health("degraded");
    assert!(h["degraded"]["redis"].as_str().is_some_and(|r| r.contains("redis")), "{h}");
    let counted = format!("redis_fallbacks_total{{feature=\"rate_limit\",mode=\"{fallback}\"}}");
    svc.wait_metrics("redis_up 0 and the fallback counted", |text| {
        text.lines().any(|l| l == "redis_up 0")
            && text.lines().any(|l| l.starts_with(&counted) && !l.ends_with(" 0"))
    });
    // Logged once per change of state, not once per request.
    // Worker log lines are written in batches: wait for the line before counting.
    svc.logs.wait(0, "a redis_down line", |l| common::event(l) == "redis_down");
    let downs = svc.logs.all().iter().filter(|l| common::event(l) == "redis_down").count();
    assert_eq!(downs, 1, "{}", svc.logs.dump());

    redis.restart();
    let deadline = Instant::now() + common::PATIENCE;
    while ping(&svc.addr, &auth) != 200 {
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    svc.wait_health("ok");
    svc.wait_metrics("redis_up 1", |text| text.lines().any(|l| l == "redis_up 1"));
    svc.logs.wait(0, "a redis_up line", |l| common::event(l) == "redis_up");
}

#[test]
fn redis_down_fail_open_keeps_answering_on_the_hosts_share() {
    through_an_outage("fail_open", 200);
}

#[test]
fn redis_down_fail_closed_refuses_with_503_then_recovers() {
    through_an_outage("fail_closed", 503);
}

/// Adds through host A, then lists through host B at once, 20 rounds: never stale, although
/// `cache_ttl` is five minutes and B read the group (and cached it) before the first add.
fn never_stale_across_hosts(redis: &str) {
    let Some(moto) = Moto::start() else { return };
    let group = moto.create_group("fleet");
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let host = |state: &tempfile::TempDir| {
        let config = format!(
            "workers = 2\n{}\n[whitelist]\nstate_dir = \"{}\"\ncache_ttl = 300.0\n[redis]\n{redis}\nhosts = 2\n",
            moto.aws_table(),
            state.path().display()
        );
        Service::start_with(Options { config, env: Moto::sdk_env(), wait_ready: true })
    };
    let (a, b) = (host(&states[0]), host(&states[1]));
    let listed = |svc: &Service| -> Vec<String> {
        let r = svc.call_tool("whitelist_list", json!({"security_group_id": group}));
        let rules = r["structuredContent"]["rules"].as_array().unwrap_or_else(|| panic!("{r}")).clone();
        rules.iter().filter_map(|r| r["cidr_ip"].as_str().map(str::to_string)).collect()
    };
    // Both workers of B read (and cache) the group first.
    for _ in 0..4 {
        assert!(listed(&b).is_empty());
    }
    for i in 1..=20 {
        let ip = format!("192.0.2.{i}");
        let added = a.call_tool("whitelist_add", json!({"security_group_id": group, "ip_address": ip}));
        assert_eq!(added["structuredContent"]["changed"], json!(true), "{added}");
        assert!(listed(&b).contains(&format!("{ip}/32")), "host B served a stale list after add #{i}");
    }
}

#[test]
fn an_add_through_one_host_is_listed_by_the_other_at_once() {
    let Some(bin) = server_binary() else { return };
    let redis = Redis::start(&bin);
    never_stale_across_hosts(&format!("url = \"{}\"", redis.url()));
}

#[test]
fn an_add_through_one_host_is_listed_by_the_other_at_once_with_a_cluster() {
    let Some(bin) = server_binary() else { return };
    let cluster = Cluster::start(&bin);
    never_stale_across_hosts(&format!("cluster = {}", cluster.seeds()));
}

/// A fleet lock attempt cancelled while its `SET NX` is in flight leaves no key behind. Reads
/// are dispatched in place, so a read whose client goes away is dropped wherever it is, also
/// while taking a group's read lead; a key left held would make every other host wait for the
/// lock's whole ttl (10 s). Redis is paused so the command is surely sent and not yet answered
/// when the attempt is dropped; the next attempt goes on the same connection, after it.
#[test]
fn a_fleet_lock_attempt_cancelled_in_flight_leaves_no_key() {
    use std::sync::Arc;
    use worker::fleet::link::Fleet;
    use worker::fleet::lock::FleetLock;
    use worker::fleet::settings::{ConsentFallback, RateLimitFallback, RedisSettings, RedisTarget};

    let Some(bin) = server_binary() else { return };
    let redis = Redis::start(&bin);
    let settings = RedisSettings {
        target: RedisTarget::Single(redis.url()),
        password: None,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(10),
        rate_limit_fallback: RateLimitFallback::FailClosed,
        consent_fallback: ConsentFallback::FailClosed,
        sweeper_lease: Duration::from_secs(30),
    };
    let (ttl, wait) = (Duration::from_secs(10), Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let fleet = Arc::new(Fleet::new(&settings).unwrap_or_else(|e| panic!("{e}")));
        // Connected (and the scripts loaded) before Redis is paused.
        drop(FleetLock::acquire(&fleet, "warm".into(), ttl, wait).await.unwrap_or_else(|e| panic!("{e}")));
        let paused = common::redis::command(redis.port, "CLIENT PAUSE 500 ALL");
        assert_eq!(paused.as_deref(), Some("+OK\r\n"));
        let attempt = FleetLock::acquire(&fleet, "read-lead".into(), ttl, wait);
        let cancelled = tokio::time::timeout(Duration::from_millis(100), attempt).await;
        assert!(cancelled.is_err(), "the attempt was waiting for Redis when it was dropped");
        // Its SET NX runs once the pause ends; the lock must be free after it, not held for `ttl`.
        let started = Instant::now();
        let next = FleetLock::acquire(&fleet, "read-lead".into(), ttl, wait).await;
        assert!(next.is_ok(), "the cancelled attempt left the key held: {:?}", next.err());
        assert!(started.elapsed() < wait, "taken at once after the pause, not when the key expired");
    });
}
