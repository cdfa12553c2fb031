//! What else two hosts share through one Redis (each host: its own ports, state dir and audit
//! log; the same marker key; moto): a consent `requestState` is single-use across the fleet,
//! and refused (naming `consent_fallback`) while Redis is down, then honoured once it is back;
//! `max_rules_per_group` holds across hosts adding at once; a burst of cache misses on both
//! hosts costs one EC2 read of the group.

mod common;

use std::time::Duration;

use common::moto::Moto;
use common::redis::{server_binary, Redis};
use common::{modern_add, Options, Service};
use serde_json::{json, Value};

/// A host with `top` and `tables` added to its config; its state dir is kept by the caller.
fn host(moto: &Moto, redis: &Redis, state: &std::path::Path, key: &str, top: &str, tables: &str) -> Service {
    let config = format!(
        "{top}\n{}\n[whitelist]\nstate_dir = \"{}\"\nmarker_key_env = \"AWSWL_FLEET_MARKER_KEY\"\n{tables}\n[redis]\nurl = \"{}\"\nhosts = 2\nconnect_timeout = 0.2\nresponse_timeout = 0.2\n",
        moto.aws_table(),
        state.display(),
        redis.url()
    );
    let mut env = Moto::sdk_env();
    env.push(("AWSWL_FLEET_MARKER_KEY".into(), key.into()));
    Service::start_with(Options { config, env, wait_ready: true })
}

/// A random hex key shared by the hosts of one test.
fn marker_key() -> String {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn states() -> [tempfile::TempDir; 2] {
    [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()]
}

fn answer(state: &str) -> Value {
    json!({"inputResponses": {"consent": {"action": "accept", "content": {"confirm": true}}}, "requestState": state})
}

#[test]
fn a_consent_is_used_once_in_the_fleet_and_refused_while_redis_cannot_record_it() {
    let (Some(bin), Some(moto)) = (server_binary(), Moto::start()) else { return };
    let mut redis = Redis::start(&bin);
    let group = moto.create_group("fleet-consent");
    let (alice, entry) = common::keygen("alice", "whitelist:read whitelist:write", &[]);
    let (key, dirs) = (marker_key(), states());
    let tables = format!(
        "[policy]\nmin_prefix_v4 = 8\n[policy.consent]\nports = [22]\n[auth]\nenabled = true\n{entry}"
    );
    let [a, b] = [0, 1].map(|i| host(&moto, &redis, dirs[i].path(), &key, "workers = 1", &tables));
    let ssh = |cidr: &str| json!({"security_group_id": group, "ip_address": cidr, "port": 22});
    let elicit = json!({"elicitation": {"form": {}}});
    let ask = |svc: &Service, cidr: &str| -> String {
        let r = modern_add(&svc.addr, &alice, ssh(cidr), elicit.clone(), json!({}));
        r["requestState"].as_str().unwrap_or_else(|| panic!("no question: {r}")).to_string()
    };
    let rules = || moto.ingress(&group).len();

    let state = ask(&a, "203.0.113.7");
    let done = modern_add(&a.addr, &alice, ssh("203.0.113.7"), elicit.clone(), answer(&state));
    assert_eq!(done["structuredContent"]["changed"], true, "{done}");
    moto.ec2(&[
        ("Action", "RevokeSecurityGroupIngress"),
        ("GroupId", &group),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "22"),
        ("IpPermissions.1.ToPort", "22"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "203.0.113.7/32"),
    ]);
    let replay = modern_add(&b.addr, &alice, ssh("203.0.113.7"), elicit.clone(), answer(&state));
    let refused =
        common::tool_failure(&replay).unwrap_or_else(|| panic!("a replay on the other host: {replay}"));
    assert!(refused.contains("already used"), "{refused}");
    assert_eq!(rules(), 0, "a replay through another host changes nothing");

    let state = ask(&a, "198.51.100.7");
    redis.kill();
    let down = modern_add(&b.addr, &alice, ssh("198.51.100.7"), elicit.clone(), answer(&state));
    let refused =
        common::tool_failure(&down).unwrap_or_else(|| panic!("accepted while Redis is down: {down}"));
    assert!(refused.contains("consent_fallback") && refused.contains("nothing was changed"), "{refused}");
    assert_eq!(rules(), 0);
    b.wait_metrics("the consent fallback counted", |t| {
        t.lines().any(|l| l == "redis_fallbacks_total{feature=\"consent\",mode=\"fail_closed\"} 1")
    });

    redis.restart();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let r = modern_add(&b.addr, &alice, ssh("198.51.100.7"), elicit.clone(), answer(&state));
        match common::tool_failure(&r) {
            None => {
                assert_eq!(r["structuredContent"]["changed"], true, "{r}");
                break;
            }
            Some(why) => assert!(why.contains("consent_fallback"), "{why}"),
        }
        assert!(std::time::Instant::now() < deadline, "never honoured after Redis came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rules(), 1);
}

#[test]
fn two_hosts_adding_at_once_never_pass_max_rules_per_group() {
    let (Some(bin), Some(moto)) = (server_binary(), Moto::start()) else { return };
    let redis = Redis::start(&bin);
    // Several groups, so the moment both hosts count the last free place comes several times.
    let groups: Vec<String> = (0..6).map(|g| moto.create_group(&format!("fleet-cap-{g}"))).collect();
    let (key, dirs) = (marker_key(), states());
    let hosts = [0, 1].map(|i| {
        host(&moto, &redis, dirs[i].path(), &key, "workers = 3", "[policy]\nmax_rules_per_group = 2\n")
    });
    let results: Vec<Value> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..48)
            .map(|i| {
                let (svc, group) = (&hosts[i % 2], &groups[i / 8]);
                s.spawn(move || {
                    let ip = format!("192.0.2.{}", i + 1);
                    svc.call_tool("whitelist_add", json!({"security_group_id": group, "ip_address": ip}))
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for g in &groups {
        assert_eq!(moto.ingress(g).len(), 2, "the cap holds across hosts in {g}");
    }
    let added = results.iter().filter(|r| r["structuredContent"]["changed"] == true).count();
    assert_eq!(added, 12, "{results:?}");
    for r in results.iter().filter(|r| r["structuredContent"]["changed"] != true) {
        let why = common::tool_failure(r).unwrap_or_else(|| panic!("{r}"));
        assert!(why.contains("max_rules_per_group"), "{why}");
    }
}

#[test]
fn a_burst_of_misses_on_two_hosts_reads_the_group_from_ec2_once() {
    let (Some(bin), Some(moto)) = (server_binary(), Moto::recording()) else { return };
    let redis = Redis::start(&bin);
    let group = moto.create_group("fleet-flight");
    let (key, dirs) = (marker_key(), states());
    let hosts =
        [0, 1].map(|i| host(&moto, &redis, dirs[i].path(), &key, "workers = 2", "cache_ttl = 60.0\n"));
    let reads = || {
        moto.recorded_ec2()
            .iter()
            .filter(|req| req.iter().any(|(k, v)| k == "Action" && v == "DescribeSecurityGroupRules"))
            .count()
    };
    let before = reads();
    std::thread::scope(|s| {
        for i in 0..16 {
            let (svc, group) = (&hosts[i % 2], &group);
            s.spawn(move || {
                let r = svc.call_tool("whitelist_list", json!({"security_group_id": group}));
                assert!(common::tool_failure(&r).is_none(), "{r}");
            });
        }
    });
    assert_eq!(reads() - before, 1, "one EC2 read for the fleet");
}
