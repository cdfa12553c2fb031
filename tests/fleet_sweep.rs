//! One expiry sweeper for a fleet: two `serve` instances ("hosts": own ports, own state dirs,
//! own audit logs) share one Redis and moto. Expiring rules added through either host are each
//! removed exactly once, by the one host holding the sweeper lease (its audit log has every
//! `expired` line, the other none), including rules of a group only the other host indexed.
//! Then the holder's whole host is killed (`kill -9` of its process group): the other host takes
//! the lease over within the lease time (plus one renewal period) and sweeps from then on.

mod common;

use std::time::{Duration, Instant};

use common::moto::Moto;
use common::redis::{server_binary, Redis};
use common::{event, Options, Service};
use nix::sys::signal::{killpg, Signal};
use serde_json::{json, Value};

/// `[redis] sweeper_lease` in these tests, seconds.
const LEASE: f64 = 3.0;

/// A host: its service and its state dir (audit log inside).
struct Host {
    svc: Service,
    state: tempfile::TempDir,
}

impl Host {
    fn start(moto: &Moto, redis: &str, marker_key: &str) -> Host {
        Host::start_with(moto, redis, marker_key, str::to_string)
    }

    /// Like [`Host::start`], the config text passed through `edit`.
    fn start_with(moto: &Moto, redis: &str, marker_key: &str, edit: impl Fn(&str) -> String) -> Host {
        let state = tempfile::tempdir().unwrap();
        let config = format!(
            "workers = 2\n{}\n[whitelist]\nstate_dir = \"{}\"\nsweep_interval = 1.0\nmarker_key_env = \"AWSWL_FLEET_MARKER_KEY\"\n[redis]\n{redis}\nhosts = 2\nsweeper_lease = {LEASE}\n",
            moto.aws_table(),
            state.path().display()
        );
        let config = edit(&config);
        let mut env = Moto::sdk_env();
        env.push(("AWSWL_FLEET_MARKER_KEY".into(), marker_key.into()));
        Host { svc: Service::start_with(Options { config, env, wait_ready: true }), state }
    }

    fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state.path().join("audit.log")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Adds an expiring rule; its id.
    fn add_expiring(&self, group: &str, ip: &str) -> String {
        let r = self.svc.call_tool(
            "whitelist_add",
            json!({"security_group_id": group, "ip_address": ip, "duration": "2s"}),
        );
        assert_eq!(r["structuredContent"]["changed"], json!(true), "{r}");
        r["structuredContent"]["rule"]["rule_id"].as_str().unwrap().to_string()
    }

    /// Whether this host's logs say it took the fleet's sweeper lease (from line `from` on).
    fn took_lease(&self, from: usize) -> bool {
        self.svc.logs.all().iter().skip(from).any(|l| event(l) == "sweeper_lease")
    }
}

/// The same random marker key for both hosts (hex, generated for this run).
fn marker_key() -> String {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until one of the hosts took the lease; its index.
fn wait_for_holder(hosts: &[Host]) -> usize {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        if let Some(i) = hosts.iter().position(|h| h.took_lease(0)) {
            return i;
        }
        assert!(Instant::now() < deadline, "no host took the sweeper lease");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until moto shows no rule in any of `groups`.
fn wait_swept(moto: &Moto, groups: &[&str]) {
    let deadline = Instant::now() + common::PATIENCE;
    while groups.iter().any(|g| !moto.ingress(g).is_empty()) {
        assert!(Instant::now() < deadline, "expired rules were never removed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many `expire` outcomes each audit log holds for `rule`, once one of them holds one (the
/// outcome is written just after EC2 answers the revoke, so moto may show the rule gone first).
fn expirations(hosts: &[&Host], rule: &str) -> Vec<usize> {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let counts = outcomes(hosts, rule);
        if counts.iter().sum::<usize>() > 0 {
            return counts;
        }
        assert!(Instant::now() < deadline, "no audit outcome for the expiry of {rule}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn outcomes(hosts: &[&Host], rule: &str) -> Vec<usize> {
    hosts
        .iter()
        .map(|h| {
            h.audit()
                .iter()
                .filter(|a| {
                    a["phase"] == "outcome" && a["action"] == "expire" && a["rule"]["rule_id"] == rule
                })
                .count()
        })
        .collect()
}

fn one_sweeper_then_a_takeover(redis: &str) {
    let Some(moto) = Moto::start() else { return };
    let (mine, theirs) = (moto.create_group("swept-a"), moto.create_group("swept-b"));
    let key = marker_key();
    let hosts = [Host::start(&moto, redis, &key), Host::start(&moto, redis, &key)];
    // One of them takes the lease at its first turn.
    let holder = wait_for_holder(&hosts);
    let other = 1 - holder;

    // Rules through both hosts; `theirs` is known only to the other host's index.
    let mut rules = Vec::new();
    for i in 1..=3 {
        rules.push(hosts[holder].add_expiring(&mine, &format!("192.0.2.{i}")));
        rules.push(hosts[other].add_expiring(&theirs, &format!("198.51.100.{i}")));
    }
    wait_swept(&moto, &[&mine, &theirs]);
    for rule in &rules {
        let mut want = vec![0, 0];
        want[holder] = 1;
        assert_eq!(expirations(&[&hosts[0], &hosts[1]], rule), want, "{rule}: removed once, by the holder");
    }
    assert!(!hosts[other].took_lease(0), "one holder only:\n{}", hosts[other].svc.logs.dump());
    let swept_elsewhere = hosts[other].svc.logs.all().iter().filter(|l| event(l) == "rules_expired").count();
    assert_eq!(swept_elsewhere, 0, "{}", hosts[other].svc.logs.dump());

    // kill -9 the holder's whole host (supervisor and workers): the lease is left to expire.
    let [a, b] = hosts;
    let (mut dead, survivor) = if holder == 0 { (a, b) } else { (b, a) };
    let from = survivor.svc.logs.len();
    killpg(dead.svc.pid(), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    assert!(dead.svc.wait_exit(common::PATIENCE).is_some());
    survivor.svc.logs.wait(from, "the survivor to take the lease", |l| event(l) == "sweeper_lease");
    let took = killed.elapsed();
    // The lease runs out at most LEASE after its last renewal (before the kill); candidates try
    // every LEASE / 3; the log line is written within a batch (25 ms).
    let bound = Duration::from_secs_f64(LEASE + LEASE / 3.0 + 0.5);
    assert!(took <= bound, "took over after {took:?}, more than {bound:?}");

    let late = survivor.add_expiring(&theirs, "203.0.113.9");
    wait_swept(&moto, &[&theirs]);
    assert_eq!(expirations(&[&survivor], &late), vec![1]);
    for rule in &rules {
        let all = outcomes(&[&dead, &survivor], rule).iter().sum::<usize>();
        assert_eq!(all, 1, "{rule} was swept once, and never again by the new holder");
    }
}

#[test]
fn expiring_rules_are_removed_once_by_one_sweeper_and_a_killed_holder_is_replaced_within_the_lease() {
    let Some(bin) = server_binary() else { return };
    let redis = Redis::start(&bin);
    one_sweeper_then_a_takeover(&format!("url = \"{}\"", redis.url()));
}

/// The holder of a 30 s lease is stopped gracefully (SIGTERM): its draining worker gives the
/// lease up, and the other host takes it at its next turn (every 10 s), not after 30 s.
#[test]
fn a_holder_stopped_gracefully_gives_the_lease_up_at_once() {
    let (Some(bin), Some(moto)) = (server_binary(), Moto::start()) else { return };
    let redis = Redis::start(&bin);
    let conf = format!("url = \"{}\"", redis.url());
    let key = marker_key();
    let long = |h: &str| h.replace(&format!("sweeper_lease = {LEASE}"), "sweeper_lease = 30.0");
    let hosts = [Host::start_with(&moto, &conf, &key, long), Host::start_with(&moto, &conf, &key, long)];
    let first = wait_for_holder(&hosts);
    let [a, b] = hosts;
    let (mut holder, other) = if first == 0 { (a, b) } else { (b, a) };
    let from = other.svc.logs.len();
    holder.svc.signal(Signal::SIGTERM);
    let stopped = Instant::now();
    holder.svc.logs.wait(0, "the lease given up", |l| event(l) == "sweeper_lease_released");
    other.svc.logs.wait(from, "the other host to take the lease", |l| event(l) == "sweeper_lease");
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(15), "took over after {took:?}: the lease was not given up");
    assert!(holder.svc.wait_exit(common::PATIENCE).is_some());
}

#[test]
fn expiring_rules_are_removed_once_by_one_sweeper_with_a_redis_cluster() {
    let Some(bin) = server_binary() else { return };
    let cluster = common::redis::Cluster::start(&bin);
    one_sweeper_then_a_takeover(&format!("cluster = {}", cluster.seeds()));
}

/// Redis dies: after one lease time without an answer the host sweeps what it indexed itself,
/// says so once and counts it; when Redis is back, it says so once too.
#[test]
fn while_redis_is_down_a_host_sweeps_its_own_index_and_says_so_once() {
    let (Some(bin), Some(moto)) = (server_binary(), Moto::start()) else { return };
    let mut redis = Redis::start(&bin);
    let group = moto.create_group("fallback");
    let short = |h: &str| h.replace(&format!("sweeper_lease = {LEASE}"), "sweeper_lease = 1.0");
    let host = Host::start_with(&moto, &format!("url = \"{}\"", redis.url()), &marker_key(), short);
    wait_for_holder(std::slice::from_ref(&host));
    redis.kill();
    let rule = host.add_expiring(&group, "192.0.2.77");
    host.svc.logs.wait(0, "the sweeper's fallback", |l| event(l) == "sweeper_fallback");
    wait_swept(&moto, &[&group]);
    assert_eq!(expirations(&[&host], &rule), vec![1]);
    host.svc.wait_metrics("the sweeper's fallback counted", |t| {
        t.lines().any(|l| {
            l.starts_with("redis_fallbacks_total{feature=\"sweeper\",mode=\"host\"}") && !l.ends_with(" 0")
        })
    });
    redis.restart();
    host.svc.logs.wait(0, "one sweeper for the fleet again", |l| event(l) == "sweeper_fleet");
    let fallbacks = host.svc.logs.all().iter().filter(|l| event(l) == "sweeper_fallback").count();
    assert_eq!(fallbacks, 1, "logged once per change of state");
}
