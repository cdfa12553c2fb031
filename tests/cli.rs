//! The command line: help, check-config, and how configuration errors are reported.

mod common;

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(common::BIN)
        .args(args)
        .env_remove("AWSWHITELIST_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_has_help() {
    for cmd in [vec!["--help"], vec!["serve", "--help"], vec!["check-config", "--help"]] {
        let (code, out, _) = run(&cmd, &[]);
        assert_eq!(code, 0, "{cmd:?}");
        assert!(out.contains("Usage:"), "{cmd:?}: {out}");
    }
    let (_, out, _) = run(&["serve", "--help"], &[]);
    for flag in ["--config", "--bind", "--workers", "--max-requests-jitter", "--graceful-timeout", "--umask"]
    {
        assert!(out.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "workers = 2\nmax_requests = 100\nbind = \"127.0.0.1:9000\"\n").unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) =
        run(&["check-config", "--config", path, "--max-requests", "7"], &[("AWSWHITELIST_WORKERS", "5")]);
    assert_eq!(code, 0, "{err}");
    // Printed config is valid TOML with each layer applied: file, then env, then flags.
    let printed: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(printed["workers"].as_integer(), Some(5));
    assert_eq!(printed["max_requests"].as_integer(), Some(7));
    assert_eq!(printed["bind"][0].as_str(), Some("127.0.0.1:9000"));
    assert_eq!(printed["log"]["level"].as_str(), Some("info"));
}

#[test]
fn check_config_without_a_file_shows_the_loopback_defaults() {
    let (code, out, _) = run(&["check-config"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("bind = [\"127.0.0.1:8080\"]"), "{out}");
}

#[test]
fn bad_values_are_named_with_their_key_and_exit_2() {
    let (code, _, err) = run(
        &["check-config", "--workers", "0", "--bind", "8080"],
        &[("AWSWHITELIST_GRACEFUL_TIMEOUT", "-3")],
    );
    assert_eq!(code, 2);
    for needle in ["workers = 0", "bind = \"8080\"", "graceful_timeout = -3"] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let (code, _, err) = run(&["serve", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.toml"), "{err}");
    let (code, _, err) = run(&["check-config"], &[("AWSWHITELIST_WORKRS", "2")]);
    assert_eq!(code, 2, "a misspelt variable must not be ignored");
    assert!(err.contains("workrs"), "{err}");
}

#[test]
fn serve_refuses_an_address_it_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // Without SO_REUSEPORT on the other socket the bind must fail, and say which address.
    let (code, _, err) = run(&["serve", "--bind", &addr, "--workers", "1"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn worker_command_refuses_to_run_by_hand() {
    let (code, _, err) = run(&["worker"], &[]);
    assert_eq!(code, 3);
    assert!(err.contains("started by `serve`"), "{err}");
}
