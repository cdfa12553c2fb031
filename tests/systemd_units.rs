//! The unit files in `systemd/` are accepted by this host's systemd (`systemd-analyze verify`)
//! and keep the settings the service relies on.
//!
//! `systemd-analyze verify` exits 0 even when it cannot parse a line (it logs "Unknown key" or
//! "Failed to parse …, ignoring" and goes on), so a unit passes only when the command exits 0
//! *and* prints nothing at all.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the unit files name the binary; the tests point it at the one cargo built.
const INSTALLED_BINARY: &str = "/usr/bin/awswhitelist";
const UNITS: [&str; 2] = ["awswhitelist.service", "awswhitelist.socket"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_unit(name: &str) -> String {
    let path = repo().join("systemd").join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Writes the units into `dir` with ExecStart=/ExecReload= pointing at the binary cargo built.
fn stage_units(dir: &Path, edit: impl Fn(&str, String) -> String) -> Vec<PathBuf> {
    let built = env!("CARGO_BIN_EXE_awswhitelist");
    // In unit files `%` starts a specifier; a path with spaces needs quotes.
    let mut exe = built.replace('%', "%%");
    if exe.contains(char::is_whitespace) {
        exe = format!("\"{exe}\"");
    }
    UNITS
        .iter()
        .map(|name| {
            let text = read_unit(name).replace(INSTALLED_BINARY, &exe);
            let path = dir.join(name);
            fs::write(&path, edit(name, text)).unwrap();
            path
        })
        .collect()
}

fn verify(analyze: &Path, units: &[PathBuf]) -> Output {
    Command::new(analyze)
        .arg("verify")
        // Only these units' own problems count, not those of the host's units they name
        // (network-online.target, …); no man-page look-ups for Documentation=.
        .arg("--recursive-errors=no")
        .arg("--man=no")
        .args(units.iter().map(|p| p.as_os_str()))
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat")
        .env_remove("SYSTEMD_LOG_LEVEL")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", analyze.display()))
}

fn describe(out: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn systemd_analyze_verify_accepts_the_units_silently() {
    let Some(analyze) = common::tool("AWSWL_SYSTEMD_ANALYZE", "systemd-analyze", "apt package systemd")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = stage_units(dir.path(), |_, text| text);
    let service = fs::read_to_string(&units[0]).unwrap();
    assert!(
        service.contains(&format!("ExecStart={}", env!("CARGO_BIN_EXE_awswhitelist")))
            || service.contains(&format!("ExecStart=\"{}", env!("CARGO_BIN_EXE_awswhitelist"))),
        "ExecStart= no longer names {INSTALLED_BINARY}:\n{service}"
    );
    let out = verify(&analyze, &units);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify must exit 0 and print nothing\n{}",
        describe(&out)
    );
}

/// The check above is only worth something if verify does complain here: a key systemd 252
/// does not know (Type=notify-reload is 253+) must produce output, although the exit code is 0.
#[test]
fn systemd_analyze_verify_reports_a_bad_line() {
    let Some(analyze) = common::tool("AWSWL_SYSTEMD_ANALYZE", "systemd-analyze", "apt package systemd")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = stage_units(dir.path(), |name, text| {
        if name.ends_with(".service") {
            text.replace("[Service]\n", "[Service]\nNoSuchSetting=yes\n")
        } else {
            text
        }
    });
    let out = verify(&analyze, &units);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        printed.contains("NoSuchSetting"),
        "systemd-analyze verify said nothing about an unknown key\n{}",
        describe(&out)
    );
}

/// `section.key` → every value given for it, in order (a unit may repeat a key).
fn parse_unit(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        map.entry(format!("{section}.{}", key.trim())).or_default().push(value.trim().to_string());
    }
    map
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match unit.get(key).map(Vec::as_slice) {
        Some([.., last]) => last,
        _ => panic!("the unit has no {key}="),
    }
}

#[test]
fn service_keeps_the_settings_the_supervisor_relies_on() {
    let unit = parse_unit(&read_unit("awswhitelist.service"));
    // systemd 252 (Debian 12) has no notify-reload.
    assert_eq!(one(&unit, "Service.Type"), "notify");
    assert_eq!(one(&unit, "Service.NotifyAccess"), "main");
    let start = one(&unit, "Service.ExecStart");
    assert!(start.starts_with(INSTALLED_BINARY) && start.contains(" serve"), "ExecStart={start}");
    let pre = one(&unit, "Service.ExecStartPre");
    assert!(
        pre.starts_with(INSTALLED_BINARY) && pre.contains(" doctor --offline"),
        "ExecStartPre= runs the host's checks, never AWS's (an outage must not keep the service down): {pre}"
    );
    let reload = &unit["Service.ExecReload"];
    assert!(
        reload.iter().any(|r| r.contains("kill") && r.contains("-HUP") && r.contains("$MAINPID")),
        "ExecReload= must send HUP to $MAINPID: {reload:?}"
    );
    assert_eq!(one(&unit, "Service.KillMode"), "mixed");
    assert_eq!(one(&unit, "Service.KillSignal"), "SIGTERM");
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateDevices", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(&unit, &format!("Service.{key}")), want, "{key}=");
    }
    for key in ["StateDirectory", "RuntimeDirectory"] {
        assert_eq!(one(&unit, &format!("Service.{key}")), "awswhitelist", "{key}=");
    }

    // Stopping must leave the supervisor time to drain: more than graceful_timeout.
    let stop = one(&unit, "Service.TimeoutStopSec");
    let stop: f64 =
        stop.parse().unwrap_or_else(|_| panic!("TimeoutStopSec={stop}: write it in plain seconds"));
    let graceful = default_graceful_timeout();
    assert!(stop > graceful, "TimeoutStopSec={stop} must exceed the default graceful_timeout ({graceful} s)");
}

/// The unit's ExecStartPre, run as systemd would (the example config in place of
/// /etc/awswhitelist/config.toml, a fresh StateDirectory): it passes, asks no network (there is
/// no AWS here to ask), and creates nothing.
#[test]
fn exec_start_pre_passes_on_the_example_config_and_creates_nothing() {
    let unit = parse_unit(&read_unit("awswhitelist.service"));
    let pre = one(&unit, "Service.ExecStartPre");
    let example = repo().join("deploy/awswhitelist.example.toml");
    let args: Vec<String> = pre
        .split_whitespace()
        .skip(1)
        .map(|a| if a == "/etc/awswhitelist/config.toml" { example.display().to_string() } else { a.into() })
        .collect();
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_awswhitelist"))
        .args(&args)
        .env_clear()
        .env("STATE_DIRECTORY", state.path())
        .env("AWSWHITELIST_BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{pre}\n{}", describe(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.lines().any(|l| l.starts_with("skip") && l.contains("--offline")), "{report}");
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0, "{report}");
}

/// `graceful_timeout` as `check-config` prints it without a config file.
fn default_graceful_timeout() -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_awswhitelist"))
        .arg("check-config")
        .env_remove("AWSWHITELIST_CONFIG")
        .env_remove("AWSWHITELIST_GRACEFUL_TIMEOUT")
        .output()
        .unwrap();
    assert!(out.status.success(), "check-config\n{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "graceful_timeout").then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no graceful_timeout in check-config output:\n{text}"))
}

#[test]
fn socket_activates_the_service_on_loopback() {
    let socket = parse_unit(&read_unit("awswhitelist.socket"));
    // With no Service=, a socket activates the service of the same name.
    let service =
        socket.get("Socket.Service").and_then(|v| v.last()).map_or("awswhitelist.service", String::as_str);
    assert_eq!(service, "awswhitelist.service");
    assert!(repo().join("systemd").join(service).is_file());
    // One listening socket for the whole pre-fork service, not a service per connection.
    assert_ne!(socket.get("Socket.Accept").and_then(|v| v.last()).map(String::as_str), Some("yes"));
    let listen = &socket["Socket.ListenStream"];
    assert!(!listen.is_empty());
    for addr in listen {
        assert!(
            addr.starts_with("127.") || addr.starts_with("[::1]"),
            "ListenStream={addr}: the socket stays on loopback (nginx faces the network)"
        );
    }
}

/// The example config is the one the service unit points at: it must load as it is, and name
/// every key `check-config` prints (set or commented out).
#[test]
fn example_config_loads_and_documents_every_key() {
    let example = repo().join("deploy/awswhitelist.example.toml");
    let text = fs::read_to_string(&example).unwrap();
    let check = |args: &[&OsStr]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_awswhitelist"));
        cmd.arg("check-config").args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWSWHITELIST_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "check-config {args:?}\n{}", describe(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    check(&[OsStr::new("--config"), example.as_os_str()]);
    let defaults = check(&[]);
    let documented = |key: &str| {
        text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.split_once('=').is_some_and(|(k, _)| k.trim() == key)
        })
    };
    for line in defaults.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            assert!(
                documented(key.trim()),
                "deploy/awswhitelist.example.toml does not mention `{}`",
                key.trim()
            );
        }
    }
}
