//! `awswhitelist doctor` against real peers: a moto for EC2/STS, real directories and sockets.
//! All ok on a sound deployment (exit 0, `--json` parsed); a missing group, a dead endpoint, a
//! world-writable state_dir, a port another program holds: each one fail line with its fix, and
//! exit 1. Nothing is created: the state dir stays empty, no rule appears in the group.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::moto::{client_env, Moto};
use serde_json::Value;

/// Runs `doctor` with this config text (and `args`), with only made-up AWS keys in its env.
fn doctor(dir: &Path, config: &str, args: &[&str]) -> Output {
    let file = dir.join("config.toml");
    std::fs::write(&file, config).unwrap();
    Command::new(common::BIN)
        .args(["doctor", "--config", file.to_str().unwrap()])
        .args(args)
        .env_clear()
        .envs(client_env(dir))
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The line of the check named `check` (the first one starting so).
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line in:\n{report}"))
}

/// A config for moto with a private state dir; `extra` goes into `[policy]`.
fn config(moto: &Moto, state: &Path, policy: &str) -> String {
    format!(
        "bind = \"127.0.0.1:0\"\n[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n[whitelist]\nstate_dir = \"{}\"\n[policy]\n{policy}\n",
        moto.url(),
        state.display()
    )
}

#[test]
fn a_sound_deployment_is_all_ok_and_nothing_is_changed() {
    let Some(moto) = Moto::start() else { return };
    let group = moto.create_group("doctor-ok");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = config(&moto, &state, &format!("allowed_security_groups = [\"{group}\"]"));
    let out = doctor(dir.path(), &cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(doc["ok"], true, "{doc:#}");
    let checks = doc["checks"].as_array().unwrap();
    for c in checks {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c.get("fix").is_none(), "an ok line has no fix: {c}");
    }
    let found = |name: &str| {
        checks.iter().find(|c| c["check"] == name).unwrap_or_else(|| panic!("no {name} check: {doc:#}"))
            ["found"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for name in
        ["config", "listen 127.0.0.1:0", "state_dir", "audit_log", "marker_key", "aws.region", "clock"]
    {
        found(name);
    }
    assert!(found("aws.credentials").contains("environment variables"), "the source is named");
    assert!(found("aws.account").contains("123456789012"), "moto's account");
    let g = found(&format!("group {group}"));
    assert!(g.contains("exists") && g.contains("DryRun add and remove allowed"), "{g}");
    assert!(moto.ingress(&group).is_empty(), "a DryRun added nothing: {:?}", moto.ingress(&group));
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "doctor created nothing in state_dir");
    // The text report says the same, one line per check.
    let out = doctor(dir.path(), &cfg, &[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.lines().filter(|l| l.starts_with("ok ")).count() == checks.len(), "{report}");
    assert!(report.ends_with(&format!("doctor: {} ok, 0 warn, 0 fail\n", checks.len())), "{report}");
}

#[test]
fn a_missing_group_fails_with_its_fix_also_when_only_the_sweeper_knows_it() {
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A group the sweeper will visit because an expiring rule was once added there.
    let index = state.join("expiring-groups.jsonl");
    std::fs::write(&index, "{\"group\":\"sg-0fedcba987654321f\",\"region\":null,\"profile\":null}\n")
        .unwrap();
    std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = config(&moto, &state, "allowed_security_groups = [\"sg-0123456789abcdef0\"]");
    let out = doctor(dir.path(), &cfg, &[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let allowed = line(&report, "group sg-0123456789abcdef0");
    assert!(allowed.starts_with("fail"), "{allowed}");
    assert!(allowed.contains("was not found") && allowed.contains("us-east-1"), "{allowed}");
    assert!(allowed.contains("-- fix: check the id and the region"), "{allowed}");
    let swept = line(&report, "group sg-0fedcba987654321f");
    assert!(swept.starts_with("fail") && swept.contains("swept: security group"), "{swept}");
    assert!(swept.contains("whitelist.sweep_groups"), "{swept}");
    assert!(report.ends_with("2 fail\n"), "{report}");
}

#[test]
fn a_dead_endpoint_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = format!(
        "bind = \"127.0.0.1:0\"\n[aws]\nendpoint_url = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\nmax_attempts = 1\n[whitelist]\nstate_dir = \"{}\"\n",
        dir.path().join("state").display()
    );
    let out = doctor(dir.path(), &cfg, &[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let aws = line(&report, "aws.endpoint");
    assert!(aws.starts_with("fail"), "{aws}");
    assert!(aws.contains(&format!("cannot reach the STS endpoint (http://127.0.0.1:{port})")), "{aws}");
    assert!(aws.contains("-- fix: check aws.endpoint_url"), "{aws}");
}

#[test]
fn a_world_writable_state_dir_fails_with_chmod_and_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = format!("bind = \"127.0.0.1:0\"\n[whitelist]\nstate_dir = \"{}\"\n", state.display());
    let out = doctor(dir.path(), &cfg, &["--offline"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let l = line(&report, "state_dir");
    assert!(l.starts_with("fail") && l.contains("writable by every user (mode 0777)"), "{l}");
    assert!(l.contains(&format!("-- fix: `chmod 700 {}`", state.display())), "{l}");
    assert!(line(&report, "aws").starts_with("skip"), "--offline asks no network: {report}");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "nothing created in a refused dir");
}

#[test]
fn a_port_held_by_another_program_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let cfg = format!(
        "bind = \"{addr}\"\nreuse_port = false\n[whitelist]\nstate_dir = \"{}\"\n",
        dir.path().join("state").display()
    );
    let out = doctor(dir.path(), &cfg, &["--offline"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let l = line(&report, &format!("listen {addr}"));
    // This test process holds it; its pid is named.
    assert!(l.starts_with("fail") && l.contains(&format!("(pid {})", std::process::id())), "{l}");
    assert!(l.contains("-- fix: stop that program, or change `bind`"), "{l}");
}

#[test]
fn an_invalid_config_is_one_fail_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = doctor(dir.path(), "workers = 0\n[whitelist]\nstate_dir = \"relative\"\n", &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fails: Vec<&Value> = doc["checks"].as_array().unwrap().iter().collect();
    assert!(
        fails.len() >= 2 && fails.iter().all(|c| c["status"] == "fail" && c["check"] == "config"),
        "{doc:#}"
    );
    assert!(fails.iter().any(|c| c["found"].as_str().unwrap().starts_with("workers = 0")), "{doc:#}");
}

/// RFC 8037's example Ed25519 public key (public test data, not a secret of anyone's).
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","alg":"EdDSA","use":"sig"}]}"#;

#[test]
fn the_jwks_is_fetched_and_its_keys_counted_or_the_failure_named() {
    let issuer = common::http::Canned::start(200, "application/json", JWKS.to_string());
    let dead_aws = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = |jwks: &str| {
        format!(
            "bind = \"127.0.0.1:0\"\n[aws]\nendpoint_url = \"http://127.0.0.1:{dead_aws}\"\nregion = \"us-east-1\"\nmax_attempts = 1\n[whitelist]\nstate_dir = \"{}\"\n[auth]\nenabled = true\nissuer = \"https://issuer.test\"\naudience = [\"http://127.0.0.1/mcp\"]\njwks_url = \"{jwks}\"\n",
            dir.path().join("state").display()
        )
    };
    let out = doctor(dir.path(), &config(&format!("http://{}/jwks", issuer.addr)), &[]);
    let report = text(&out);
    assert!(line(&report, "auth:").starts_with("ok"), "{report}");
    let jwks = line(&report, "auth.jwks_url");
    assert!(jwks.starts_with("ok") && jwks.ends_with("/jwks: 1 usable keys"), "{jwks}");
    assert_eq!(issuer.requests.load(std::sync::atomic::Ordering::SeqCst), 1, "one fetch");
    let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = doctor(dir.path(), &config(&format!("http://127.0.0.1:{gone}/jwks")), &[]);
    let report = text(&out);
    let jwks = line(&report, "auth.jwks_url");
    assert!(jwks.starts_with("fail") && jwks.contains("-- fix: check the URL"), "{jwks}");
    // Without --offline, AWS was asked too (and is down here): its line fails on its own.
    assert!(line(&report, "aws.endpoint").starts_with("fail"), "{report}");
}

#[test]
fn a_configured_redis_is_pinged_and_a_dead_one_fails_naming_the_setting() {
    let Some(moto) = Moto::start() else { return };
    let Some(bin) = common::redis::server_binary() else { return };
    let mut redis = common::redis::Redis::start(&bin);
    let group = moto.create_group("doctor-redis");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = format!(
        "{}[redis]\nurl = \"{}\"\nhosts = 1\n",
        config(&moto, &state, &format!("allowed_security_groups = [\"{group}\"]")),
        redis.url()
    );
    let out = doctor(dir.path(), &cfg, &[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(line(&report, "redis").starts_with("ok") && line(&report, "redis").contains("PING"), "{report}");

    redis.kill();
    let out = doctor(dir.path(), &cfg, &[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "a Redis that does not answer is a fail: {report}");
    let redis_line = line(&report, "redis");
    assert!(redis_line.starts_with("fail"), "{report}");
    assert!(redis_line.contains(&redis.port.to_string()) && redis_line.contains("redis.url"), "{redis_line}");
}
