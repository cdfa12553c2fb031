//! The standing bad-input campaign (issue 10), end to end: hostile tool calls against a real
//! `serve` on a real moto. Each row is a call, and a piece of text its error must contain (the
//! argument it refuses, or the policy setting that refused). At the end, moto holds exactly
//! what it held before (one hand-made rule) and nothing was audited. The policy here is
//! explicit about every dimension, so the rows do not depend on the defaults.

mod common;

use common::moto::Moto;
use common::{tool_failure, Options, Service};
use serde_json::{json, Value};

/// moto accepts any keys; these are made up here, not anyone's.
const KEY_ID: &str = "AKIAHOSTILECALLS0000";
const SECRET: &str = "hostile-calls-made-up-secret-for-moto-00";

fn serve(moto: &Moto, state: &std::path::Path, group: &str) -> Service {
    let config = format!(
        "workers = 2\n\
         [aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nallow_per_call_credentials = true\n\
         [whitelist]\nstate_dir = \"{}\"\n\
         [policy]\nallowed_security_groups = [\"{group}\"]\nmax_rule_duration_hours = 8.0\n\
         allowed_ports = [\"22\", \"443\", \"8000-8100\"]\nallowed_protocols = [\"tcp\", \"udp\", \"icmp\"]\n\
         allowed_ip_ranges = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n",
        moto.url(),
        state.display()
    );
    Service::start_with(Options {
        config,
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
        wait_ready: true,
    })
}

/// `(tool, arguments, what the error must contain)`.
type Row = (&'static str, Value, String);

fn rows(g: &str) -> Vec<Row> {
    let base = json!({"security_group_id": g, "ip_address": "203.0.113.7"});
    let with = |pairs: &[(&str, Value)]| {
        let mut a = base.clone();
        for (k, v) in pairs {
            a[*k] = v.clone();
        }
        a
    };
    let keys = |c: Value| with(&[("credentials", c)]);
    let add = |pairs: &[(&str, Value)], needle: &str| ("whitelist_add", with(pairs), needle.to_string());
    vec![
        // ip_address: not an address, or a network the policy refuses.
        add(&[("ip_address", json!("1.2.3"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.7/33"))], "ip_address"),
        add(&[("ip_address", json!("2001:db8::/129"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.7/x"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.7/-1"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.7 /32"))], "ip_address"),
        add(&[("ip_address", json!("fe80::1%eth0"))], "ip_address"),
        add(&[("ip_address", json!("0x7f.0.0.1"))], "ip_address"),
        add(&[("ip_address", json!("127.1"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.007"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.7,198.51.100.1"))], "ip_address"),
        add(&[("ip_address", json!("http://203.0.113.7"))], "ip_address"),
        add(&[("ip_address", json!("localhost"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.7\u{0}"))], "ip_address"),
        add(&[("ip_address", json!("203.0.113.0/24/24"))], "ip_address"),
        add(&[("ip_address", json!("9".repeat(65)))], "ip_address"),
        add(&[("ip_address", json!(["203.0.113.7"]))], "ip_address"),
        add(&[("ip_address", Value::Null)], "ip_address"),
        add(&[("ip_address", json!("0.0.0.0/00"))], "allow_world"),
        add(&[("ip_address", json!("::0/0"))], "allow_world"),
        add(&[("ip_address", json!("2001:db8::1/64"))], "host bits"),
        add(&[("ip_address", json!("128.0.0.0/1"))], "min_prefix_v4"),
        add(&[("ip_address", json!("2001:db8::/40"))], "min_prefix_v6"),
        add(&[("ip_address", json!("198.51.99.7"))], "allowed_ip_ranges"),
        add(&[("ip_address", json!("2001:db9::1"))], "allowed_ip_ranges"),
        add(&[("ip_address", json!("203.0.0.0/16"))], "allowed_ip_ranges"),
        add(&[("ip_address", json!("current"))], "allowed_ip_ranges"),
        // port: out of range, malformed, the wrong type, or outside allowed_ports.
        add(&[("port", json!("65536"))], "port"),
        add(&[("port", json!("-1"))], "port"),
        add(&[("port", json!("1-2-3"))], "port"),
        add(&[("port", json!("22.0"))], "port"),
        add(&[("port", json!(22.5))], "port"),
        add(&[("port", json!(1e10))], "port"),
        add(&[("port", json!("ssh,https"))], "port"),
        add(&[("port", json!(" "))], "port"),
        add(&[("port", json!("0-100"))], "port"),
        add(&[("port", json!("ＳＳＨ"))], "port"),
        add(&[("port", json!({"from": 1}))], "port"),
        add(&[("port", json!("23"))], "allowed_ports"),
        add(&[("port", json!("8000-8200"))], "allowed_ports"),
        add(&[("port", json!("rdp"))], "allowed_ports"),
        add(&[("protocol", json!("icmp"))], "allowed_ports"),
        add(&[("protocol", json!("icmp")), ("port", json!("22"))], "does not apply"),
        // protocol.
        add(&[("protocol", json!("tcp;udp"))], "protocol"),
        add(&[("protocol", json!("50"))], "protocol"),
        add(&[("protocol", json!("icmp6"))], "protocol"),
        add(&[("protocol", json!(6))], "protocol"),
        add(&[("protocol", json!(""))], "protocol"),
        add(&[("protocol", json!("tcptcptcp"))], "protocol"),
        add(&[("protocol", json!("all"))], "allowed_protocols"),
        // security_group_id.
        add(&[("security_group_id", json!("sg-ABCDEF12"))], "security_group_id"),
        add(&[("security_group_id", json!("sg-1234567"))], "security_group_id"),
        add(&[("security_group_id", json!("sg-123456789"))], "security_group_id"),
        add(&[("security_group_id", json!("sg-12345678*"))], "security_group_id"),
        add(&[("security_group_id", json!("*"))], "security_group_id"),
        add(&[("security_group_id", json!("../sg-12345678"))], "security_group_id"),
        add(&[("security_group_id", json!(""))], "security_group_id"),
        add(&[("security_group_id", json!(format!("sg-{}", "0".repeat(70))))], "security_group_id"),
        add(&[("security_group_id", json!([g]))], "security_group_id"),
        add(&[("security_group_id", json!("sg-00000000"))], "allowed_security_groups"),
        // description template, user, reason.
        add(&[("description", json!("{user"))], "description"),
        add(&[("description", json!("a\nb"))], "description"),
        add(&[("description", json!("tab\there"))], "description"),
        add(&[("description", json!("{DATE}"))], "{DATE}"),
        add(&[("description", json!("d".repeat(256)))], "description"),
        add(&[("description", Value::Null)], "description"),
        add(&[("description", json!("{reason}{reason}")), ("reason", json!("r".repeat(200)))], "255"),
        add(&[("user", json!("alice\u{0}"))], "user"),
        add(&[("user", json!("%s%n"))], "user"),
        add(&[("user", json!("é"))], "user"),
        add(&[("user", json!(5))], "user"),
        add(&[("user", json!("u".repeat(129)))], "user"),
        add(&[("reason", json!("<script>"))], "reason"),
        add(&[("reason", json!("r".repeat(201)))], "reason"),
        // duration.
        add(&[("duration", json!("0s"))], "duration"),
        add(&[("duration", json!("-1h"))], "duration"),
        add(&[("duration", json!("1"))], "duration"),
        add(&[("duration", json!("999ms"))], "duration"),
        add(&[("duration", json!(""))], "duration"),
        add(&[("duration", json!("P1D"))], "duration"),
        add(&[("duration", json!("99999999999999999999h"))], "duration"),
        add(&[("duration", json!(8))], "duration"),
        add(&[("duration", json!("2d"))], "max_rule_duration_hours"),
        // region, profile, per-call credentials (switched on here, so their shape is checked).
        add(&[("region", json!("us-east-1; rm -rf"))], "region"),
        add(&[("region", json!("../../etc"))], "region"),
        add(&[("region", json!(""))], "region"),
        add(&[("region", json!(5))], "region"),
        add(&[("region", json!("r".repeat(33)))], "region"),
        add(&[("profile", json!("nope"))], "profile"),
        add(&[("profile", json!(5))], "profile"),
        (
            "whitelist_add",
            keys(json!({"access_key_id": KEY_ID, "secret_access_key": "short"})),
            "secret_access_key".into(),
        ),
        ("whitelist_add", keys(json!({"access_key_id": KEY_ID})), "secret_access_key".into()),
        (
            "whitelist_add",
            keys(json!({"access_key_id": KEY_ID, "secret_access_key": SECRET, "extra": 1})),
            "extra".into(),
        ),
        (
            "whitelist_add",
            keys(json!({"access_key_id": "akiahostilecalls0000", "secret_access_key": SECRET})),
            "access_key_id".into(),
        ),
        (
            "whitelist_add",
            keys(
                json!({"access_key_id": KEY_ID, "secret_access_key": "0123456789abcdef 0123456789abcdef012345"}),
            ),
            "secret_access_key".into(),
        ),
        (
            "whitelist_add",
            keys(json!({"access_key_id": KEY_ID, "secret_access_key": SECRET, "region": "Mars"})),
            "region".into(),
        ),
        ("whitelist_add", keys(json!([])), "credentials".into()),
        // Arguments nobody declared.
        add(&[("__proto__", json!(1))], "__proto__"),
        add(&[("IP_ADDRESS", json!("203.0.113.8"))], "IP_ADDRESS"),
        // The other tools.
        ("whitelist_remove", with(&[("port", json!("70000"))]), "port".into()),
        ("whitelist_remove", with(&[("protocol", json!("bogus"))]), "protocol".into()),
        (
            "whitelist_remove",
            with(&[("security_group_id", json!("sg-00000000"))]),
            "allowed_security_groups".into(),
        ),
        ("whitelist_check", with(&[("ip_address", json!("1.2.3"))]), "ip_address".into()),
        ("whitelist_check", with(&[("security_group_id", json!("sg-xyz"))]), "security_group_id".into()),
        ("whitelist_list", json!({"security_group_id": "sg-ABCDEF12"}), "security_group_id".into()),
        ("whitelist_list", json!({"security_group_id": g, "ip_address": "203.0.113.7"}), "ip_address".into()),
        ("whitelist_list", json!({}), "security_group_id".into()),
        ("whitelist_nuke", base.clone(), "whitelist_nuke".into()),
        ("whitelist_add", json!([g, "203.0.113.7"]), "arguments".into()),
    ]
}

#[test]
fn hostile_tool_calls_are_refused_by_name_and_change_nothing() {
    let Some(moto) = Moto::start() else { return };
    let state = tempfile::tempdir().unwrap();
    let g = moto.create_group("hostile");
    moto.authorize(&g, "192.0.2.51/32", 22, "hand-made");
    let before = moto.ingress(&g);
    let svc = serve(&moto, state.path(), &g);
    let rows = rows(&g);
    assert!(rows.len() >= 60, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for (tool, args, needle) in &rows {
        match tool_failure(&svc.call_tool(tool, args.clone())) {
            None => wrong.push(format!("{tool} {args}: accepted")),
            Some(m) if !m.contains(needle.as_str()) => {
                wrong.push(format!("{tool} {args}: {m:?} does not mention {needle:?}"))
            }
            Some(m) if m.contains(SECRET) => wrong.push(format!("{tool} {args}: the secret is echoed")),
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows wrong:\n{}", wrong.len(), rows.len(), wrong.join("\n"));
    assert_eq!(moto.ingress(&g), before, "moto must show no change");
    let audit = std::fs::read_to_string(state.path().join("audit.log")).unwrap_or_default();
    assert!(audit.trim().is_empty(), "nothing was changed, so nothing is audited: {audit}");
    assert!(!svc.logs.dump().contains(SECRET), "a secret reached the log");
}
