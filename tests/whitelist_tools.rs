//! The four whitelist tools end to end: a real `serve` with workers, a real moto for EC2/STS,
//! requests over new connections so they land on different workers.

mod common;

use common::moto::Moto;
use common::{event, Options, Service};
use nix::sys::signal::{kill, Signal};
use serde_json::{json, Value};

struct Env {
    moto: Moto,
    state: tempfile::TempDir,
}

fn env() -> Option<Env> {
    Some(Env { moto: Moto::start()?, state: tempfile::tempdir().unwrap() })
}

impl Env {
    /// Starts serve against this moto; `top` goes before the tables, `tables` after.
    fn serve(&self, top: &str, whitelist: &str, tables: &str) -> Service {
        self.serve_aws(self.state.path(), top, "", whitelist, tables)
    }

    /// Like [`Env::serve`], with another state directory (another host).
    fn serve_in(&self, state: &std::path::Path, top: &str, whitelist: &str, tables: &str) -> Service {
        self.serve_aws(state, top, "", whitelist, tables)
    }

    /// Like `serve`, in `state`, with `aws` added to the `[aws]` table.
    fn serve_aws(
        &self,
        state: &std::path::Path,
        top: &str,
        aws: &str,
        whitelist: &str,
        tables: &str,
    ) -> Service {
        let config = format!(
            "{top}\n{}{aws}\n[whitelist]\nstate_dir = \"{}\"\n{whitelist}\n{tables}\n",
            self.moto.aws_table(),
            state.display()
        );
        Service::start_with(Options { config, env: Moto::sdk_env(), wait_ready: true })
    }

    fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state.path().join("audit.log")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

fn generated_key_id() -> String {
    format!("AKIA{:016}", std::process::id() as u64 * 7919)
}

fn generated_secret() -> String {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:040x}", seed).chars().take(40).collect()
}

/// Writes a made-up marker key (64 characters) to `path`; returns it.
fn write_marker_key(path: &std::path::Path) -> Vec<u8> {
    let key = format!("{}{}", generated_secret(), generated_secret()).into_bytes();
    std::fs::write(path, &key).unwrap();
    key
}

/// The marker this service would write, under `key`, on a tcp rule expiring at `expires`.
fn signed_marker(key: &[u8], group: &str, cidr: &str, port: u16, expires: std::time::SystemTime) -> String {
    use worker::whitelist::{MarkerKey, Ports, Protocol, RuleSpec};
    let spec = RuleSpec {
        group_id: group.into(),
        cidr: cidr.parse().unwrap(),
        protocol: Protocol::Tcp,
        ports: Ports::single(port),
    };
    MarkerKey::new(key).unwrap().marker(&spec, Some(expires))
}

fn ok(r: &Value) -> &Value {
    assert!(!r["isError"].as_bool().unwrap_or(false), "tool failed: {r}");
    &r["structuredContent"]
}

fn failed(r: &Value) -> String {
    let text = r["content"][0]["text"].as_str().map(str::to_string);
    match (r["isError"].as_bool(), r.pointer("/error/message").and_then(Value::as_str)) {
        (Some(true), _) => text.unwrap_or_default(),
        (_, Some(m)) => m.to_string(),
        _ => panic!("expected a failure, got {r}"),
    }
}

#[test]
fn every_tool_end_to_end_across_workers() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("roundtrip");
    // `all` opens every port: named in the policy, as it must be since it is not a default.
    let policy = "[policy]\nallowed_protocols = [\"tcp\", \"udp\", \"icmp\", \"all\"]\n";
    let svc = e.serve("workers = 2\n", "", policy);
    let add = |args: Value| svc.call_tool("whitelist_add", args);

    let r = add(
        json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": 22, "user": "alice", "reason": "deploy"}),
    );
    let s = ok(&r);
    assert_eq!(s["changed"], true);
    assert_eq!(s["rule"]["cidr_ip"], "203.0.113.7/32");
    assert!(s["rule"]["description"].as_str().unwrap().contains("for alice"));
    let again = add(json!({"security_group_id": g, "ip_address": "203.0.113.7/32", "port": "ssh"}));
    assert_eq!(ok(&again)["changed"], false, "adding an existing rule is not an error");

    ok(&add(json!({"security_group_id": g, "ip_address": "2001:db8::7", "port": "https"})));
    ok(&add(
        json!({"security_group_id": g, "ip_address": "198.51.100.0/24", "port": "8000-8100", "protocol": "udp"}),
    ));
    ok(&add(json!({"security_group_id": g, "ip_address": "198.51.100.9", "protocol": "icmp"})));
    ok(&add(json!({"security_group_id": g, "ip_address": "2001:db8::9", "protocol": "all"})));
    let rules = e.moto.ingress(&g);
    assert_eq!(rules.len(), 5, "{rules:?}");
    let v6 = rules.iter().find(|r| r[1] == "2001:db8::7/128").expect("IPv6 lands in Ipv6Ranges");
    assert_eq!((v6[2].as_str(), v6[3].as_str()), ("tcp", "443"));
    assert!(rules
        .iter()
        .any(|r| r[1] == "198.51.100.0/24" && r[2] == "udp" && r[3] == "8000" && r[4] == "8100"));
    assert!(rules.iter().any(|r| r[1] == "2001:db8::9/128" && r[2] == "-1"));

    let listed = svc.call_tool("whitelist_list", json!({"security_group_id": g}));
    assert_eq!(ok(&listed)["count"], 5);
    let checked = svc.call_tool("whitelist_check", json!({"security_group_id": g, "ip_address": "198.51.100.0/24", "port": "8000-8100", "protocol": "udp"}));
    assert_eq!(ok(&checked)["exists"], true);
    assert!(ok(&checked)["rule"]["rule_id"].as_str().unwrap().starts_with("sgr-"));
    let absent = svc.call_tool(
        "whitelist_check",
        json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": 23}),
    );
    assert_eq!(ok(&absent)["exists"], false);

    for args in [
        json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": 22}),
        json!({"security_group_id": g, "ip_address": "2001:db8::7", "port": 443}),
        json!({"security_group_id": g, "ip_address": "198.51.100.0/24", "port": "8000-8100", "protocol": "udp"}),
        json!({"security_group_id": g, "ip_address": "198.51.100.9", "protocol": "icmp"}),
        json!({"security_group_id": g, "ip_address": "2001:db8::9", "protocol": "-1"}),
    ] {
        assert_eq!(ok(&svc.call_tool("whitelist_remove", args.clone()))["changed"], true, "{args}");
    }
    assert!(e.moto.ingress(&g).is_empty());
    let gone = svc.call_tool(
        "whitelist_remove",
        json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": 22}),
    );
    assert_eq!(ok(&gone)["changed"], false);
    assert!(ok(&gone)["message"].as_str().unwrap().contains("was not allowed"));

    // List after change, over new connections that land on either worker: never stale.
    for i in 1..=12 {
        let ip = format!("192.0.2.{i}");
        ok(&add(json!({"security_group_id": g, "ip_address": ip})));
        let l = svc.call_tool("whitelist_list", json!({"security_group_id": g}));
        assert!(
            ok(&l)["rules"].as_array().unwrap().iter().any(|r| r["cidr_ip"] == format!("{ip}/32")),
            "stale list after add #{i}"
        );
        ok(&svc.call_tool("whitelist_remove", json!({"security_group_id": g, "ip_address": ip})));
        let l = svc.call_tool("whitelist_list", json!({"security_group_id": g}));
        assert_eq!(ok(&l)["count"], 0, "stale list after remove #{i}");
    }
    let audit = e.audit();
    assert_eq!(audit.iter().filter(|a| a["action"] == "add" && a["result"] == "added").count(), 5 + 12);
    assert_eq!(audit.iter().filter(|a| a["action"] == "remove" && a["result"] == "removed").count(), 5 + 12);
    assert!(audit
        .iter()
        .all(|a| a["source"] == "127.0.0.1" && a["request_id"].is_string() && a["group_id"] == g));
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("bad");
    let other = e.moto.create_group("other");
    let svc = e.serve(
        "workers = 2\n",
        "",
        &format!("[policy]\nallowed_security_groups = [\"{g}\"]\nmax_rule_duration_hours = 8.0\n"),
    );
    let base = json!({"security_group_id": g, "ip_address": "203.0.113.7"});
    let with = |k: &str, v: Value| {
        let mut a = base.clone();
        a[k] = v;
        a
    };
    let without = |k: &str| {
        let mut a = base.clone();
        a.as_object_mut().unwrap().remove(k);
        a
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("whitelist_add", with("ip_address", json!("999.1.1.1")), "ip_address"),
        ("whitelist_add", with("ip_address", json!("0.0.0.0/0")), "allow_world"),
        ("whitelist_add", with("ip_address", json!("::/0")), "allow_world"),
        ("whitelist_add", with("ip_address", json!("10.0.0.0/8")), "min_prefix_v4"),
        ("whitelist_add", with("ip_address", json!("10.0.0.1/24")), "host bits"),
        ("whitelist_add", with("ip_address", json!("")), "ip_address"),
        ("whitelist_add", with("ip_address", json!(12)), "ip_address"),
        ("whitelist_add", with("port", json!(0)), "port"),
        ("whitelist_add", with("port", json!(70000)), "port"),
        ("whitelist_add", with("port", json!("8100-8000")), "port"),
        ("whitelist_add", with("port", json!("sshh")), "port"),
        ("whitelist_add", with("port", json!(true)), "port"),
        ("whitelist_add", with("protocol", json!("bogus")), "protocol"),
        ("whitelist_add", with("security_group_id", json!("sg-xyz")), "security_group_id"),
        ("whitelist_add", with("security_group_id", json!(other)), "allowed_security_groups"),
        ("whitelist_add", with("description", json!("hello <world>")), "'<'"),
        ("whitelist_add", with("user", json!("bob\"; drop")), "user"),
        ("whitelist_add", with("reason", json!("ünïcode")), "reason"),
        ("whitelist_add", with("description", json!("{date} {nope}")), "{nope}"),
        ("whitelist_add", with("description", json!("x".repeat(250))), "255"),
        ("whitelist_add", with("duration", json!("9h")), "max_rule_duration_hours"),
        ("whitelist_add", with("duration", json!("soon")), "duration"),
        (
            "whitelist_add",
            with("protocol", json!("all"))
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("port".into(), json!(22));
                    Value::Object(o)
                })
                .unwrap(),
            "does not apply",
        ),
        ("whitelist_add", without("security_group_id"), "security_group_id"),
        ("whitelist_add", without("ip_address"), "ip_address"),
        (
            "whitelist_add",
            with("credentials", json!({"access_key_id": "nope", "secret_access_key": "x"})),
            "access_key_id",
        ),
        ("whitelist_add", with("credentials", json!("keys")), "credentials"),
        ("whitelist_add", with("region", json!("Mars")), "region"),
        ("whitelist_add", with("unexpected", json!(1)), "unexpected"),
        ("whitelist_remove", with("ip_address", json!("not-an-ip")), "ip_address"),
        ("whitelist_check", with("port", json!(-5)), "port"),
        ("whitelist_list", json!({"security_group_id": 5}), "security_group_id"),
        ("whitelist_list", json!({"security_group_id": "sg-12345678"}), "allowed_security_groups"),
    ];
    assert!(cases.len() >= 30);
    let mut wrong = Vec::new();
    for (tool, args, needle) in &cases {
        let r = svc.call_tool(tool, args.clone());
        let message = failed(&r);
        if !message.contains(needle) {
            wrong.push(format!("{tool} {args}: {message:?} does not mention {needle:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(e.moto.ingress(&g).is_empty() && e.moto.ingress(&other).is_empty(), "moto must show no change");
    assert!(e.audit().is_empty(), "nothing was changed, so nothing is audited");
}

#[test]
fn expiring_rules_are_removed_once_and_also_at_startup() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("expiry");
    let stale = e.moto.create_group("stale");
    // Expired while the service was down (signed with the configured key): found and removed
    // at start.
    let key_file = e.state.path().join("shared-marker.key");
    let key = write_marker_key(&key_file);
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    let marker = signed_marker(&key, &stale, "192.0.2.50/32", 22, long_ago);
    e.moto.authorize(&stale, "192.0.2.50/32", 22, &format!("old {marker}"));
    e.moto.authorize(&stale, "192.0.2.51/32", 22, "hand-made, no marker");
    let svc = e.serve(
        "workers = 3\n",
        &format!(
            "sweep_interval = 1.0\nsweep_groups = [\"{stale}\"]\nmarker_key_file = \"{}\"\n",
            key_file.display()
        ),
        "",
    );
    svc.logs.wait(0, "startup sweep", |v| event(v) == "rules_expired" && v["group"] == stale.as_str());
    let left = e.moto.ingress(&stale);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0][1], "192.0.2.51/32", "rules without the marker are never touched");

    let r = svc.call_tool(
        "whitelist_add",
        json!({"security_group_id": g, "ip_address": "203.0.113.80", "duration": "2s"}),
    );
    let rule_id = ok(&r)["rule"]["rule_id"].as_str().unwrap().to_string();
    assert!(ok(&r)["rule"]["expires_at"].is_string());
    let (_, swept) =
        svc.logs.wait(0, "expiry sweep", |v| event(v) == "rules_expired" && v["group"] == g.as_str());
    assert!(swept.to_string().contains(&rule_id), "{swept}");
    assert!(e.moto.ingress(&g).is_empty());
    // More sweeps run on three workers (proved by a second rule expiring later): the first
    // rule must still have been removed exactly once.
    let from = svc.logs.len();
    let r = svc.call_tool(
        "whitelist_add",
        json!({"security_group_id": g, "ip_address": "203.0.113.81", "duration": "2s"}),
    );
    let second = ok(&r)["rule"]["rule_id"].as_str().unwrap().to_string();
    svc.logs.wait(from, "second expiry", |v| event(v) == "rules_expired" && v.to_string().contains(&second));
    let expirations: Vec<Value> = e.audit().into_iter().filter(|a| a["result"] == "expired").collect();
    for id in [&rule_id, &second] {
        assert_eq!(
            expirations.iter().filter(|a| a["rule"]["rule_id"] == id.as_str()).count(),
            1,
            "{expirations:?}"
        );
    }
    assert_eq!(
        svc.logs.all().iter().filter(|v| event(v) == "sweeper_lock").count(),
        1,
        "one sweeper for the host"
    );
}

#[test]
fn an_answered_change_is_in_the_audit_log_even_if_the_worker_dies_at_once() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("audit");
    let svc = e.serve("workers = 1\n", "", "");
    for i in 1..=3 {
        let (_, worker) = svc.live_workers()[0];
        let r = svc.call_tool(
            "whitelist_add",
            json!({"security_group_id": g, "ip_address": format!("203.0.113.{i}"), "user": "carol"}),
        );
        let rule_id = ok(&r)["rule"]["rule_id"].as_str().unwrap().to_string();
        let from = svc.logs.len();
        kill(worker, Signal::SIGKILL).unwrap();
        let entry = e
            .audit()
            .into_iter()
            .find(|a| a["rule"]["rule_id"] == rule_id.as_str())
            .expect("entry written before the answer");
        assert_eq!(entry["result"], "added");
        assert_eq!(entry["source"], "127.0.0.1");
        svc.logs.wait(from, "replacement", |v| common::sup_event(v, "worker_ready"));
    }
    let audit = e.audit();
    assert_eq!(audit.iter().filter(|a| a["phase"] == "outcome").count(), 3);
    assert_eq!(audit.iter().filter(|a| a["phase"] == "intent").count(), 3, "each change announced first");
}

#[test]
fn per_call_credentials_and_assume_role_profiles_work_and_can_be_switched_off() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("creds");
    let svc = e.serve_aws(
        e.state.path(),
        "workers = 2\n",
        "allow_per_call_credentials = true\n",
        "",
        "[[aws.profiles]]\nname = \"ops\"\nrole_arn = \"arn:aws:iam::123456789012:role/whitelist\"\n",
    );
    let keys = json!({"access_key_id": generated_key_id(), "secret_access_key": generated_secret(), "region": "us-east-1"});
    let r = svc.call_tool(
        "whitelist_add",
        json!({"security_group_id": g, "ip_address": "203.0.113.9", "credentials": keys}),
    );
    ok(&r);
    let l = svc.call_tool("whitelist_list", json!({"security_group_id": g, "profile": "ops"}));
    assert_eq!(ok(&l)["count"], 1, "the AssumeRole profile reads the same group");
    let unknown = svc.call_tool("whitelist_list", json!({"security_group_id": g, "profile": "nope"}));
    assert!(failed(&unknown).contains("nope"));
    let logs = svc.logs.dump();
    assert!(!logs.contains(keys["secret_access_key"].as_str().unwrap()), "a secret reached the log");
    drop(svc);

    let strict = Service::start_with(Options {
        config: format!(
            "workers = 1\n[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nallow_per_call_credentials = false\n[whitelist]\nstate_dir = \"{}\"\n",
            e.moto.url(),
            e.state.path().display()
        ),
        env: vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())],
        wait_ready: true,
    });
    let r = strict.call_tool("whitelist_list", json!({"security_group_id": g, "credentials": keys}));
    let m = failed(&r);
    assert!(m.contains("disabled") || m.contains("not allowed"), "{m}");
}

#[test]
fn removing_a_rule_added_by_hand_is_refused_and_changes_nothing() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("publicweb");
    e.moto.authorize(&g, "0.0.0.0/0", 443, "public web");
    let before = e.moto.ingress(&g);
    let svc = e.serve("workers = 1\n", "", "");
    let r = svc.call_tool(
        "whitelist_remove",
        json!({"security_group_id": g, "ip_address": "0.0.0.0/0", "port": 443}),
    );
    let m = failed(&r);
    assert!(m.contains("remove_unmanaged") && m.contains(before[0][0].as_str()), "{m}");
    assert_eq!(e.moto.ingress(&g), before, "moto must show no change");
    assert!(e.audit().is_empty(), "nothing was changed, so nothing is audited");
    drop(svc);

    // The reference behaviour, by name.
    let svc = e.serve("workers = 1\n", "", "[policy]\nremove_unmanaged = true\n");
    let r = svc.call_tool(
        "whitelist_remove",
        json!({"security_group_id": g, "ip_address": "0.0.0.0/0", "port": 443}),
    );
    assert_eq!(ok(&r)["changed"], true);
    assert!(e.moto.ingress(&g).is_empty());
    let outcomes: Vec<Value> = e.audit().into_iter().filter(|v| v["phase"] == "outcome").collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["result"], "removed", "{outcomes:?}");
}

#[test]
fn hosts_sharing_the_marker_key_manage_each_others_rules_and_no_other_host_does() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("sharedkey");
    let key_file = e.state.path().join("shared-marker.key");
    write_marker_key(&key_file);
    let shared = format!("marker_key_file = \"{}\"\n", key_file.display());
    let a = e.serve("workers = 1\n", &shared, "");
    let r = a.call_tool(
        "whitelist_add",
        json!({"security_group_id": g, "ip_address": "203.0.113.90", "port": 22, "duration": "1h"}),
    );
    assert!(ok(&r)["rule"]["description"].as_str().unwrap().contains(" mac="), "{r}");
    drop(a);

    let b_state = tempfile::tempdir().unwrap();
    let b = e.serve_in(b_state.path(), "workers = 1\n", &shared, "");
    let listed = b.call_tool("whitelist_list", json!({"security_group_id": g}));
    let rule = &ok(&listed)["rules"][0];
    assert_eq!(rule["managed"], true, "{listed}");
    assert!(rule["expires_at"].is_string(), "{listed}");
    drop(b);

    // A host with its own (generated) key sees a rule it cannot verify: not its to remove.
    let c_state = tempfile::tempdir().unwrap();
    let c = e.serve_in(c_state.path(), "workers = 2\n", "", "");
    let listed = c.call_tool("whitelist_list", json!({"security_group_id": g}));
    assert_eq!(ok(&listed)["rules"][0]["managed"], false, "{listed}");
    let before = e.moto.ingress(&g);
    let r = c.call_tool("whitelist_remove", json!({"security_group_id": g, "ip_address": "203.0.113.90"}));
    let m = failed(&r);
    assert!(m.contains("remove_unmanaged"), "{m}");
    assert_eq!(e.moto.ingress(&g), before, "moto must show no change");
    let generated =
        std::fs::metadata(c_state.path().join("marker.key")).expect("a key generated in state_dir");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&generated.permissions()) & 0o777, 0o600);
}

#[test]
fn a_forged_marker_is_reported_and_never_swept() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("forged");
    e.moto.authorize(&g, "192.0.2.60/32", 443, "office [awswl exp=2020-01-01T00:00:00Z]");
    let before = e.moto.ingress(&g);
    let svc = e.serve("workers = 2\n", &format!("sweep_interval = 1.0\nsweep_groups = [\"{g}\"]\n"), "");
    let (_, seen) = svc.logs.wait(0, "the sweeper to look at the forged rule", |v| {
        v["group"] == g.as_str() && matches!(event(v), "rules_expired" | "marker_invalid")
    });
    assert_eq!(event(&seen), "marker_invalid", "{seen}");
    assert_eq!(seen["rule_id"], before[0][0].as_str(), "{seen}");
    assert_eq!(e.moto.ingress(&g), before, "moto must show no change");
    // The merged /metrics view follows the workers' snapshots: poll it until the count shows.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let metrics = common::http::get(&svc.addr, "/metrics").unwrap();
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        if text.lines().any(|l| l.starts_with("awswl_marker_invalid_total") && !l.ends_with(" 0")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "awswl_marker_invalid_total never counted\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
/// A 64 KiB tmpfs for the audit log, unmounted on drop; `None` (and why) where mounting is not
/// permitted.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if status.success() {
            Ok(SmallDisk(dir))
        } else {
            Err(format!("mount -t tmpfs {status}"))
        }
    }

    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        while f.write_all(&[b'x'; 4096]).is_ok() {}
        while f.write_all(b"x").is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_audit_disk_stops_changes_before_aws_and_never_corrupts_the_log() {
    let disk = match SmallDisk::mount() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED a_full_audit_disk_…: cannot mount a 64 KiB tmpfs ({why}); needs root");
            return;
        }
    };
    let Some(e) = env() else { return };
    let g = e.moto.create_group("fulldisk");
    let log = disk.0.path().join("audit.log");
    let svc = e.serve("workers = 1\n", &format!("audit_log = \"{}\"\n", log.display()), "");
    let add = |ip: &str| svc.call_tool("whitelist_add", json!({"security_group_id": g, "ip_address": ip}));
    ok(&add("203.0.113.1"));
    let filler = disk.fill();
    let mut refused = 0;
    for i in 2..=16 {
        let ip = format!("203.0.113.{i}");
        let r = add(&ip);
        let in_ec2 = e.moto.ingress(&g).iter().any(|x| x[1] == format!("{ip}/32"));
        if r["isError"].as_bool() == Some(true) {
            let m = failed(&r);
            if m.contains("no change was made") {
                refused += 1;
                assert!(!in_ec2, "{ip} refused, yet added to EC2: {m}");
            } else {
                // Only the outcome was lost: the intent is on disk, the reconciler completes it.
                assert!(in_ec2 && m.contains("intent"), "{ip}: {m}");
            }
        } else {
            assert!(in_ec2, "{ip} answered as added but is not in EC2");
        }
    }
    assert!(refused > 0, "the disk was full, so changes must have been refused");
    std::fs::remove_file(filler).unwrap();
    ok(&add("203.0.113.99"));
    let text = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|err| panic!("unparseable audit line ({err}): {l:?}"))
        })
        .collect();
    for rule in e.moto.ingress(&g) {
        let cidr = rule[1].as_str();
        assert!(
            entries.iter().any(|a| a["phase"] == "intent" && a["rule"]["cidr_ip"] == cidr),
            "{cidr} is in EC2 without an intent in the audit log"
        );
    }
}

#[test]
fn an_intent_left_by_a_crash_is_reconciled_at_boot_and_its_group_noted_for_the_sweeper() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("crashed");
    // The worker crashed after EC2 added the rule and before it wrote the outcome.
    let expires = "2099-01-01T00:00:00Z";
    e.moto.authorize(&g, "203.0.113.60/32", 22, &format!("for erin [awswl exp={expires}]"));
    let intent = json!({
        "time": "2026-01-01T00:00:00.000Z", "id": "crashed-1", "phase": "intent", "action": "add",
        "identity": "erin", "group_id": g, "region": "us-east-1", "pid": 0, "result": "pending",
        "rule": {"rule_id": null, "cidr_ip": "203.0.113.60/32", "protocol": "tcp", "port": "22",
                 "description": format!("for erin [awswl exp={expires}]"), "expires_at": expires}
    });
    std::fs::write(e.state.path().join("audit.log"), format!("{intent}\n")).unwrap();
    // Allowed only by a pattern: the sweeper finds the group through the index alone.
    let svc = e.serve("workers = 2\n", "", "[policy]\nallowed_security_groups = [\"sg-*\"]\n");
    let (_, done) = svc.logs.wait(0, "reconcile", |v| event(v) == "change_reconciled");
    assert_eq!(done["id"], "crashed-1", "{done}");
    assert!(done["found"].as_str().unwrap().starts_with("present (rule sgr-"), "{done}");
    let outcomes: Vec<Value> =
        e.audit().into_iter().filter(|a| a["id"] == "crashed-1" && a["phase"] == "outcome").collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(
        (outcomes[0]["result"].as_str(), outcomes[0]["identity"].as_str()),
        (Some("reconciled"), Some("erin"))
    );
    let index = std::fs::read_to_string(e.state.path().join("expiring-groups.jsonl")).unwrap_or_default();
    assert!(index.contains(&g), "the group is noted for the sweeper again: {index:?}");
    assert_eq!(svc.logs.all().iter().filter(|v| event(v) == "change_reconciled").count(), 1, "once per host");
}

#[test]
fn a_huge_duration_is_answered_and_the_next_term_is_quick() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("huge-duration");
    let mut svc =
        e.serve("workers = 1\ngraceful_timeout = 20\n", "", "[policy]\nmax_rule_duration_hours = 0\n");
    let r = svc.call_tool(
        "whitelist_add",
        json!({"security_group_id": g, "ip_address": "203.0.113.10", "duration": "10000y"}),
    );
    let message = failed(&r);
    assert!(message.contains("duration") && message.contains("10 years"), "{message}");
    assert!(e.moto.ingress(&g).is_empty(), "moto must show no change");
    assert!(!svc.logs.dump().contains("panicked"), "{}", svc.logs.dump());
    let asked = std::time::Instant::now();
    svc.signal(Signal::SIGTERM);
    let status = svc.wait_exit(std::time::Duration::from_secs(10));
    assert!(status.is_some(), "TERM waited for a leaked connection:\n{}", svc.logs.dump());
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn per_call_credentials_are_off_by_default_and_expiring_rules_need_a_server_that_can_revoke() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("per-call-default");
    let keys = json!({"access_key_id": generated_key_id(), "secret_access_key": generated_secret()});
    let svc = e.serve("workers = 1\n", "", "");
    let r = svc.call_tool(
        "whitelist_add",
        json!({"security_group_id": g, "ip_address": "203.0.113.11", "credentials": keys}),
    );
    let m = failed(&r);
    assert!(m.contains("aws.allow_per_call_credentials = true"), "the refusal names the setting: {m}");
    assert!(!m.contains(keys["secret_access_key"].as_str().unwrap()));
    assert!(e.moto.ingress(&g).is_empty(), "moto must show no change");
}

#[test]
fn an_expiring_rule_with_per_call_credentials_is_added_when_the_server_can_revoke_it() {
    let Some(e) = env() else { return };
    let g = e.moto.create_group("per-call-expiring");
    let keys = json!({"access_key_id": generated_key_id(), "secret_access_key": generated_secret()});
    let svc = e.serve_aws(e.state.path(), "workers = 1\n", "allow_per_call_credentials = true\n", "", "");
    let r = svc.call_tool(
        "whitelist_add",
        json!({"security_group_id": g, "ip_address": "203.0.113.12", "duration": "1h", "credentials": keys}),
    );
    assert!(ok(&r)["rule"]["expires_at"].is_string(), "{r}");
    assert_eq!(e.moto.ingress(&g).len(), 1, "moto answered the server's dry run: allowed");
}
