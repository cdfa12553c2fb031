//! Redis dies under load, then comes back. Two hosts (own ports, own state dirs and audit logs)
//! share one Redis (one server, or a 3-master cluster whose every node is killed) and moto;
//! threads call add, check, list and remove through both hosts, on one group capped by
//! `max_rules_per_group` (so adds take the group's fleet lock), all the while. Then: no 5xx
//! and no failed tool call (the rate limits fail open, every other feature falls back to the
//! host), every answered change has its audit outcome in the answering host's log (and every
//! intent an outcome), `/health` said degraded and then ok, and the metrics showed Redis down,
//! the fallbacks taken, and Redis up again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::moto::Moto;
use common::redis::{server_binary, Cluster, Redis};
use common::{http, Options, Service};
use serde_json::{json, Value};

/// One call as the client saw it.
struct Answer {
    tool: &'static str,
    status: u16,
    result: Value,
}

fn start_host(moto: &Moto, redis: &str, state: &std::path::Path) -> Service {
    let config = format!(
        "workers = 1\n{}\n[whitelist]\nstate_dir = \"{}\"\ncache_ttl = 5.0\n[policy]\nmax_rules_per_group = 50\n[rate_limit]\nrequests_per_minute = 60000\nburst = 10000\n[redis]\n{redis}\nhosts = 2\nrate_limit_fallback = \"fail_open\"\nconnect_timeout = 0.2\nresponse_timeout = 0.2\n",
        moto.aws_table(),
        state.display()
    );
    Service::start_with(Options { config, env: Moto::sdk_env(), wait_ready: true })
}

/// One tool call over a new connection; status 0 when the connection itself failed.
fn call(addr: &str, tool: &'static str, args: Value) -> Answer {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}})
        .to_string();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    match http::raw(addr, req.as_bytes()) {
        Ok(r) => {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            Answer { tool, status: r.status, result: v.get("result").cloned().unwrap_or(v) }
        }
        Err(e) => Answer { tool, status: 0, result: json!({"connection": e.to_string()}) },
    }
}

/// Threads calling add, check, list, remove on `group` through `addr`, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    threads: Vec<(usize, std::thread::JoinHandle<Vec<Answer>>)>,
}

impl Load {
    fn start(hosts: &[&Service], group: &str) -> Load {
        let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let nets = ["192.0.2", "198.51.100", "203.0.113", "100.64.7"];
        let mut threads = Vec::new();
        for (t, net) in nets.iter().enumerate() {
            let host = t % hosts.len();
            let (addr, group, stop, answered) =
                (hosts[host].addr.clone(), group.to_string(), stop.clone(), answered.clone());
            let net = net.to_string();
            threads.push((
                host,
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let ip = format!("{net}.{}", i % 250 + 1);
                        i += 1;
                        let rule = json!({"security_group_id": group, "ip_address": ip, "port": "ssh"});
                        for tool in ["whitelist_add", "whitelist_check", "whitelist_list", "whitelist_remove"]
                        {
                            let args = if tool == "whitelist_list" {
                                json!({"security_group_id": group})
                            } else {
                                rule.clone()
                            };
                            seen.push(call(&addr, tool, args));
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    seen
                }),
            ));
        }
        Load { stop, answered, threads }
    }

    /// Blocks until `n` more calls were answered: paces the test by work done.
    fn wait_for(&self, n: u64) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = std::time::Instant::now() + common::PATIENCE;
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(std::time::Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops; every answer, by the index of the host that gave it.
    fn finish(self) -> Vec<(usize, Answer)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|(host, t)| t.join().unwrap().into_iter().map(move |a| (host, a)))
            .collect()
    }
}

fn audit(state: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(state.join("audit.log")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn metric_positive(text: &str, prefix: &str) -> bool {
    text.lines().any(|l| l.starts_with(prefix) && !l.ends_with(" 0"))
}

/// The test; `kill` and `restart` act on the Redis the hosts share.
fn through_an_outage_under_load(redis: &str, kill: &mut dyn FnMut(), restart: &mut dyn FnMut()) {
    let Some(moto) = Moto::start() else { return };
    let group = moto.create_group("outage");
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let hosts = [start_host(&moto, redis, states[0].path()), start_host(&moto, redis, states[1].path())];
    for h in &hosts {
        h.wait_health("ok");
    }
    let load = Load::start(&[&hosts[0], &hosts[1]], &group);
    load.wait_for(40);

    kill();
    for h in &hosts {
        let health = h.wait_health("degraded");
        assert!(health["degraded"]["redis"].is_string(), "{health}");
    }
    load.wait_for(80);
    for h in &hosts {
        h.wait_metrics("Redis down and the fallbacks taken", |text| {
            text.lines().any(|l| l == "redis_up 0")
                && metric_positive(text, "redis_fallbacks_total{feature=\"rate_limit\",mode=\"fail_open\"}")
                && metric_positive(text, "redis_fallbacks_total{feature=\"group_lock\",mode=\"host\"}")
                && metric_positive(text, "redis_fallbacks_total{feature=\"cache\",mode=\"no_cache\"}")
        });
    }

    restart();
    for h in &hosts {
        h.wait_health("ok");
    }
    load.wait_for(40);
    for h in &hosts {
        h.wait_metrics("redis_up 1", |text| text.lines().any(|l| l == "redis_up 1"));
    }
    let answers = load.finish();

    let failed: Vec<String> = answers
        .iter()
        .filter(|(_, a)| a.status != 200 || common::tool_failure(&a.result).is_some())
        .map(|(h, a)| format!("host {h} {}: {} {}", a.tool, a.status, a.result))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );

    for (h, state) in states.iter().enumerate() {
        let log = audit(state.path());
        let outcomes = |action: &str, result: &str| {
            log.iter()
                .filter(|e| e["phase"] == "outcome" && e["action"] == action && e["result"] == result)
                .count()
        };
        let mine = answers.iter().filter(|(host, _)| *host == h).map(|(_, a)| a);
        let (mut added, mut removed) = (0, 0);
        for a in mine {
            match a.tool {
                "whitelist_add" if a.result["structuredContent"]["changed"] == json!(true) => added += 1,
                "whitelist_remove" => {
                    removed += a.result["structuredContent"]["removed"]
                        .as_array()
                        .map_or(0, |r| usize::from(!r.is_empty()))
                }
                _ => {}
            }
        }
        assert!(added > 0 && removed > 0, "host {h} changed nothing");
        assert_eq!(outcomes("add", "added"), added, "host {h}: an answered add without its audit line");
        assert_eq!(
            outcomes("remove", "removed"),
            removed,
            "host {h}: an answered remove without its audit line"
        );
        let intents = log.iter().filter(|e| e["phase"] == "intent").count();
        let finished = log.iter().filter(|e| e["phase"] == "outcome").count();
        assert_eq!(intents, finished, "host {h}: every intent has its outcome");
    }
}

#[test]
fn redis_killed_under_mixed_load_loses_no_call_and_no_audit_line() {
    let Some(bin) = server_binary() else { return };
    let redis = std::cell::RefCell::new(Redis::start(&bin));
    let url = redis.borrow().url();
    through_an_outage_under_load(&format!("url = \"{url}\""), &mut || redis.borrow_mut().kill(), &mut || {
        redis.borrow_mut().restart()
    });
}

#[test]
fn a_whole_redis_cluster_killed_under_mixed_load_loses_no_call_and_no_audit_line() {
    let Some(bin) = server_binary() else { return };
    let cluster = std::cell::RefCell::new(Cluster::start(&bin));
    let seeds = cluster.borrow().seeds();
    through_an_outage_under_load(
        &format!("cluster = {seeds}"),
        &mut || cluster.borrow_mut().nodes.iter_mut().for_each(Redis::kill),
        &mut || cluster.borrow_mut().restart(),
    );
}
