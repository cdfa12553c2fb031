//! `GET /metrics` end to end: every worker's registry merged by the supervisor, counters that
//! never go down across recycling and crashes, exact totals for workers that drain, histograms
//! merged bucket by bucket.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{http, int, sup_event, Load, Service, PATIENCE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Recycling every ~50 requests; a short timeout makes heartbeats (and snapshots) come every
/// second, so a live worker's figures are at most a second old.
const RECYCLING: &str = "workers = 3\nmax_requests = 50\nmax_requests_jitter = 10\ntimeout = 4\n";

/// The sum of every sample of `family` (plain counters and gauges; not histograms).
fn total(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(family).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap_or_else(|_| panic!("bad sample {l:?}")))
        .sum()
}

/// The value of one exact series, e.g. `x_bucket{method="ping",le="+Inf"}`.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(addr: &str) -> String {
    let r = http::get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", String::from_utf8_lossy(&r.body));
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    String::from_utf8(r.body).unwrap()
}

/// Samples under load (paced by answered requests) and checks the merged request counter
/// never decreases; `crash` kills one worker with SIGKILL halfway. Returns (answered by the
/// load, scrapes answered, last value seen, the killed pid).
fn sample_under_load(svc: &Service, crash: bool) -> (u64, u64, f64, Option<Pid>) {
    let load = Load::start(&svc.addr, 2, 2);
    let (mut scrapes, mut last, mut killed) = (0u64, 0.0f64, None);
    for i in 0..40 {
        load.wait_for(15);
        if crash && i == 20 {
            // The newest ready worker: the least likely to be draining already.
            let (_, victim) = *svc.live_workers().last().expect("a live worker");
            kill(victim, Signal::SIGKILL).unwrap();
            killed = Some(victim);
        }
        let text = scrape(&svc.addr);
        scrapes += 1;
        let now = total(&text, "http_requests_total");
        assert!(now >= last, "http_requests_total went down: {last} -> {now}\n{text}");
        // The load is GET /health and the scrapes GET /metrics: not one MCP request.
        let mcp = total(&text, "mcp_requests_total");
        assert_eq!(mcp, 0.0, "MCP requests counted under a load without any\n{text}");
        last = now;
    }
    let result = load.finish();
    if !crash {
        assert!(result.failures.is_empty(), "load failures: {:?}", result.failures);
    }
    (result.ok, scrapes, last, killed)
}

#[test]
fn merged_counter_never_decreases_and_is_exact_after_graceful_recycling() {
    let svc = Service::start(RECYCLING);
    let (ok, scrapes, last, _) = sample_under_load(&svc, false);
    let text = wait_until_exact(&svc, ok + scrapes, last);
    // Three serving, plus perhaps one still draining from the last recycle.
    assert!(series(&text, "awswhitelist_workers").is_some_and(|n| n >= 3.0), "{text}");
}

/// A recycle every few requests, under new connections only: whenever a worker starts to
/// drain, connections wait in the shared queue (and one may just have been accepted). Every
/// request answered must still be counted exactly: one accepted around the drain is waited
/// for, and none is accepted once the drain has begun (both were lost before).
#[test]
fn every_request_is_counted_when_workers_recycle_every_few_requests() {
    let svc = Service::start("workers = 2\nmax_requests = 4\nmax_requests_jitter = 0\ntimeout = 4\n");
    let load = Load::start(&svc.addr, 4, 0);
    load.wait_for(1500);
    let result = load.finish();
    result.assert_no_failures();
    let text = wait_until_exact(&svc, result.ok, 0.0);
    assert!(series(&text, "awswhitelist_worker_exits_total{reason=\"recycle\"}").unwrap() >= 3.0, "{text}");
}

/// Scrapes until the merged request counter reaches `answered` plus the scrapes answered so
/// far (a scrape is counted once it has been answered; live workers report within a
/// heartbeat), asserting on the way that it never goes down nor past what was answered.
/// Returns the exact scrape, which has counted at least one recycle.
fn wait_until_exact(svc: &Service, answered: u64, mut last: f64) -> String {
    let mut expected = answered as f64;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(&svc.addr);
        let now = total(&text, "http_requests_total");
        assert!(now >= last, "http_requests_total went down: {last} -> {now}");
        assert!(now <= expected, "counted {now} requests, only {expected} were answered\n{text}");
        if now == expected {
            assert!(
                series(&text, "awswhitelist_worker_exits_total{reason=\"recycle\"}").unwrap() >= 1.0,
                "{text}"
            );
            return text;
        }
        assert!(Instant::now() < deadline, "counted {now}, expected {expected}\n{text}");
        expected += 1.0;
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn merged_counter_never_decreases_across_a_kill() {
    let svc = Service::start(RECYCLING);
    let (ok, scrapes, last, killed) = sample_under_load(&svc, true);
    let victim = killed.unwrap().as_raw() as i64;
    let (at, exit) = svc
        .logs
        .wait(0, "the killed worker's exit", |v| sup_event(v, "worker_exited") && int(v, "pid") == victim);
    assert!(exit["status"].as_str().unwrap().contains("SIGKILL"), "{exit}");
    // Counted under `crash`, or under what it was already stopping for (recycle).
    let reason = exit["reason"].as_str().unwrap().to_string();
    assert!(reason == "crash" || reason == "recycle", "{exit}");
    // The pool is whole again (three ready workers, the victim's replacement among them).
    let mut seen = at;
    while svc.live_workers().len() < 3 {
        seen = svc.logs.wait(seen + 1, "the victim's replacement", |v| sup_event(v, "worker_ready")).0;
    }

    let mut answered = ok + scrapes;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(&svc.addr);
        let now = total(&text, "http_requests_total");
        assert!(now >= last, "http_requests_total went down: {last} -> {now}");
        // What the victim answered after its last report is lost (SIGKILL gives it no chance
        // to report), never invented: an upper bound, not an exact figure.
        assert!(now <= answered as f64, "counted {now}, answered {answered}\n{text}");
        answered += 1;
        // Every exit, by reason, exactly as the supervisor logged them: the log is read up to
        // the exits this scrape counted; one logged since (a recycle caused by the scrapes)
        // means scraping again.
        let counted = exits_by_reason(&text);
        assert!(
            counted.get(&reason).is_some_and(|n| *n >= 1),
            "the victim's exit ({reason}) is not counted\n{text}"
        );
        let logged = loop {
            let lines = svc.logs.all();
            let logged = logged_exits(&lines);
            if counted.iter().all(|(r, n)| logged.get(r).copied().unwrap_or(0) >= *n) {
                break logged;
            }
            svc.logs.wait(lines.len(), "the exits the scrape counted, in the log", |v| {
                sup_event(v, "worker_exited")
            });
        };
        if logged == counted {
            break;
        }
        assert!(Instant::now() < deadline, "exits counted {counted:?}, logged {logged:?}\n{text}");
    }
}

/// `awswhitelist_worker_exits_total` by reason, reasons with none left out.
fn exits_by_reason(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("awswhitelist_worker_exits_total{reason=\""))
        .map(|rest| {
            let (reason, value) = rest.split_once("\"} ").unwrap();
            (reason.to_string(), value.parse::<f64>().unwrap() as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The supervisor's `worker_exited` log lines, counted by reason.
fn logged_exits(lines: &[serde_json::Value]) -> BTreeMap<String, u64> {
    let mut by_reason = BTreeMap::new();
    for v in lines.iter().filter(|v| sup_event(v, "worker_exited")) {
        *by_reason.entry(v["reason"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    by_reason
}

#[test]
fn histograms_merge_across_three_workers() {
    let svc = Service::start("workers = 3\ntimeout = 4\n");
    let n = 60;
    for i in 0..n {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#);
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = http::raw(&svc.addr, req.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let name = "mcp_request_duration_seconds";
    let deadline = Instant::now() + PATIENCE;
    let text = loop {
        let text = scrape(&svc.addr);
        if series(&text, &format!("{name}_count{{method=\"ping\"}}")) == Some(n as f64) {
            break text;
        }
        assert!(Instant::now() < deadline, "ping count never reached {n}\n{text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{method=\"ping\",le=\"")))
        .map(|rest| {
            let (le, value) = rest.split_once("\"} ").unwrap();
            (le.to_string(), value.parse().unwrap())
        })
        .collect();
    assert!(buckets.len() > 2, "{text}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "buckets not cumulative: {buckets:?}");
    assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), n as f64));
    let sum = series(&text, &format!("{name}_sum{{method=\"ping\"}}")).unwrap();
    assert!(sum > 0.0 && sum < n as f64 * 1.0, "sum {sum}");
    assert_eq!(total(&text, "mcp_requests_total"), n as f64, "{text}");
    assert!(text.contains(&format!("# TYPE {name} histogram\n")));
}

#[test]
fn metrics_are_refused_through_a_proxy() {
    let svc = Service::start("workers = 1\n");
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";
    let r = http::raw(&svc.addr, req.as_bytes()).unwrap();
    assert_eq!(r.status, 403);
}

#[test]
fn tool_calls_count_aws_calls_changes_and_cache() {
    let Some(moto) = common::moto::Moto::start() else { return };
    let g = moto.create_group("metrics");
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "workers = 2\ntimeout = 4\n[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\noperation_timeout = 20.0\n[whitelist]\nstate_dir = \"{}\"\n",
        moto.url(),
        state.path().display()
    );
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let svc = Service::start_with(common::Options {
        config,
        env: vec![
            // moto accepts any keys; these are made up here.
            ("AWS_ACCESS_KEY_ID".into(), format!("AKIA{:016}", std::process::id() as u64 * 7919)),
            ("AWS_SECRET_ACCESS_KEY".into(), format!("{seed:040x}").chars().take(40).collect()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
        wait_ready: true,
    });
    let args = serde_json::json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": 22});
    let r = svc.call_tool("whitelist_add", args.clone());
    assert!(!r["isError"].as_bool().unwrap_or(false), "{r}");
    for _ in 0..3 {
        svc.call_tool("whitelist_check", args.clone());
    }
    let r = svc.call_tool("whitelist_remove", args);
    assert!(!r["isError"].as_bool().unwrap_or(false), "{r}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(&svc.addr);
        let added = series(&text, "whitelist_changes_total{action=\"add\",result=\"added\"}");
        let removed = series(&text, "whitelist_changes_total{action=\"remove\",result=\"removed\"}");
        let calls = series(&text, "mcp_requests_total{method=\"tools/call\",status=\"ok\"}");
        if added == Some(1.0) && removed == Some(1.0) && calls == Some(5.0) {
            let authorize = "mcp_aws_api_calls_total{operation=\"AuthorizeSecurityGroupIngress\",service=\"ec2\",status=\"ok\"}";
            assert_eq!(series(&text, authorize), Some(1.0), "{text}");
            assert!(total(&text, "cache_hits_total") + total(&text, "cache_misses_total") >= 3.0, "{text}");
            assert!(!text.contains("203.0.113.7") && !text.contains(&g), "user data in labels:\n{text}");
            break;
        }
        assert!(Instant::now() < deadline, "tool metrics never showed\n{text}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_reload_keeps_every_count_and_is_counted() {
    let svc = Service::start("workers = 2\ntimeout = 4\n");
    let mut answered = 0u64;
    for _ in 0..30 {
        assert_eq!(http::get(&svc.addr, "/health").unwrap().status, 200);
        answered += 1;
    }
    let before = total(&scrape(&svc.addr), "http_requests_total");
    answered += 1;
    svc.signal(Signal::SIGHUP);
    svc.wait_only_generation(2);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(&svc.addr);
        let now = total(&text, "http_requests_total");
        assert!(now >= before, "http_requests_total went down across the reload: {before} -> {now}");
        assert!(now <= answered as f64, "counted {now}, answered {answered}");
        answered += 1;
        if now == (answered - 1) as f64 {
            assert_eq!(series(&text, "awswhitelist_reloads_total"), Some(1.0), "{text}");
            assert_eq!(series(&text, "awswhitelist_generation"), Some(2.0), "{text}");
            assert_eq!(
                series(&text, "awswhitelist_worker_exits_total{reason=\"reload\"}"),
                Some(2.0),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "counted {now}, answered {}\n{text}", answered - 1);
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_scraper_outside_allow_ips_needs_the_metrics_token() {
    // The token is made here, at test time; only its hash goes into the config.
    let out = std::process::Command::new(common::BIN).args(["keygen", "--id", "metrics"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = text.split_whitespace().find(|w| w.starts_with("awsk_")).expect("a key").to_string();
    let hash = text.split('"').find(|w| w.starts_with("sha256:")).expect("a hash").to_string();
    let svc = Service::start(&format!("workers = 2\n[metrics]\nallow_ips = []\ntoken_hash = \"{hash}\"\n"));
    let anonymous = http::get(&svc.addr, "/metrics").unwrap();
    assert_eq!(anonymous.status, 401, "loopback is not enough once allow_ips is empty");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer realm=\"metrics\""));
    let wrong = http::raw(&svc.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer awsk_metrics_nope\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(wrong.status, 401);
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    let ok = http::raw(&svc.addr, req.as_bytes()).unwrap();
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("awswhitelist_workers"));
    assert!(!svc.logs.dump().contains(&key), "the token never reaches the log");
}
