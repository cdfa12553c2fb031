// figment::Jail closures return figment::Error, which is large; not ours to shrink.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

fn load_in(jail: &mut Jail, toml: &str) -> Result<Config, ConfigError> {
    jail.create_file("c.toml", toml).unwrap();
    Config::load(&Sources { file: Some("c.toml".into()), flags: Default::default() })
}

#[test]
fn embedded_defaults_listen_on_loopback_and_validate() {
    let c = Config::default();
    assert_eq!(c.bind, vec!["127.0.0.1:8080"]);
    assert!(c.bind_addrs().iter().all(|a| a.is_local()));
    c.validate().unwrap();
}

#[test]
fn file_then_env_then_flags() {
    Jail::expect_with(|jail| {
        jail.set_env("AWSWHITELIST_WORKERS", "3");
        jail.set_env("AWSWHITELIST_LOG__LEVEL", "debug");
        let c = load_in(jail, "workers = 2\nmax_requests = 10\n[log]\nlevel = \"warn\"\n").unwrap();
        assert_eq!((c.workers, c.max_requests, c.log.level.as_str()), (3, 10, "debug"));
        let mut flags = serde_json::Map::new();
        flags.insert("workers".into(), serde_json::json!(5));
        let c = Config::load(&Sources { file: Some("c.toml".into()), flags }).unwrap();
        assert_eq!(c.workers, 5);
        Ok(())
    });
}

#[test]
fn bind_accepts_a_string_a_list_or_a_comma_list() {
    Jail::expect_with(|jail| {
        assert_eq!(load_in(jail, "bind = \"127.0.0.1:1\"").unwrap().bind, vec!["127.0.0.1:1"]);
        assert_eq!(load_in(jail, "bind = [\"127.0.0.1:1\", \"[::1]:2\"]").unwrap().bind.len(), 2);
        jail.set_env("AWSWHITELIST_BIND", "127.0.0.1:3,unix:/tmp/x.sock");
        assert_eq!(load_in(jail, "").unwrap().bind, vec!["127.0.0.1:3", "unix:/tmp/x.sock"]);
        Ok(())
    });
}

#[test]
fn every_problem_names_key_and_value() {
    Jail::expect_with(|jail| {
        let err = load_in(
            jail,
            "workers = 0\ntimeout = -1\nbind = [\"nowhere\"]\nbacklog = 0\numask = \"0o1777\"\n[log]\nlevel = \"=[\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "workers = 0",
            "timeout = -1",
            "bind = \"nowhere\"",
            "backlog = 0",
            "umask = 0o1777",
            "log.level",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert_eq!(err.0.len(), 6, "{text}");
        Ok(())
    });
}

#[test]
fn type_errors_and_unknown_keys_name_the_key_and_source() {
    Jail::expect_with(|jail| {
        let text = load_in(jail, "workers = \"many\"").unwrap_err().to_string();
        assert!(text.contains("workers") && text.contains("many") && text.contains("c.toml"), "{text}");
        let text = load_in(jail, "wokers = 2").unwrap_err().to_string();
        assert!(text.contains("wokers"), "{text}");
        jail.set_env("AWSWHITELIST_MAX_REQUESTS", "lots");
        let text = load_in(jail, "").unwrap_err().to_string();
        assert!(text.contains("max_requests") && text.contains("AWSWHITELIST_MAX_REQUESTS"), "{text}");
        Ok(())
    });
}

#[test]
fn missing_file_is_an_error_not_the_defaults() {
    let err = Config::load(&Sources { file: Some("/nonexistent/a.toml".into()), flags: Default::default() })
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/a.toml"));
}

#[test]
fn umask_forms_and_round_trip() {
    Jail::expect_with(|jail| {
        assert_eq!(load_in(jail, "umask = 0o027").unwrap().umask, Some(0o027));
        let c = load_in(jail, "umask = \"0o077\"").unwrap();
        assert_eq!(c.umask, Some(0o077));
        let printed = c.to_toml();
        assert!(printed.contains("umask = \"0o077\""), "{printed}");
        jail.create_file("round.toml", &printed).unwrap();
        let again =
            Config::load(&Sources { file: Some("round.toml".into()), flags: Default::default() }).unwrap();
        assert_eq!(again, c);
        Ok(())
    });
}

#[test]
fn unknown_user_is_refused() {
    let c = Config { user: Some("no-such-user-xyz".into()), ..Config::default() };
    let text = c.validate().unwrap_err().to_string();
    assert!(text.contains("user = \"no-such-user-xyz\""), "{text}");
}

#[test]
fn jitter_without_max_requests_is_flagged() {
    let c = Config { max_requests_jitter: 5, ..Config::default() };
    assert!(c.validate().unwrap_err().to_string().contains("max_requests_jitter = 5"));
}

#[test]
fn the_file_converts_once_into_typed_settings() {
    Jail::expect_with(|jail| {
        let c = load_in(
            jail,
            "keepalive = 2.5\nforwarded_allow_ips = [\"10.0.0.0/8\"]\n[mcp]\nbody_timeout = 0.25\n\
             [whitelist]\ncache_ttl = 7\nstate_dir = \"/tmp/awswl-state\"\n\
             [rate_limit]\nrequests_per_minute = 60\nburst = 3\n\
             [metrics]\nallow_ips = [\"192.0.2.1\"]\n\
             token_hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"\n\
             [auth]\nenabled = true\n[[auth.api_keys]]\nid = \"k\"\n\
             hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000002\"\n",
        )
        .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.keepalive, std::time::Duration::from_millis(2500));
        assert_eq!(s.mcp.body_timeout, std::time::Duration::from_millis(250));
        assert_eq!(s.whitelist.cache_ttl, std::time::Duration::from_secs(7));
        assert!(s.forwarded.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(!s.forwarded.is_trusted("192.0.2.1".parse().unwrap()));
        assert!(s.metrics.allow.is_trusted("192.0.2.1".parse().unwrap()));
        assert_eq!(s.metrics.token_digest.map(|d| d[31]), Some(1));
        let limits = s.rate_limit.unwrap();
        assert_eq!((limits.requests.rate_per_minute, limits.requests.burst), (60.0, 3));
        assert_eq!(s.whitelist.audit_log, std::path::Path::new("/tmp/awswl-state/audit.log"));

        let off = load_in(jail, "[rate_limit]\nenabled = false\n").unwrap();
        assert!(off.settings().unwrap().rate_limit.is_none());
        Ok(())
    });
}

#[test]
fn a_bad_value_is_named_by_the_conversion_and_never_defaulted() {
    let mut c = Config::default();
    c.mcp.body_timeout = f64::NAN;
    c.whitelist.sweep_interval = 0.5;
    c.metrics.allow_ips = vec!["nope".into()];
    let text = c.settings().unwrap_err().to_string();
    for key in ["mcp.body_timeout", "whitelist.sweep_interval", "metrics.allow_ips"] {
        assert!(text.contains(key), "{key} missing from: {text}");
    }
    // validate reports the same problems (it runs the conversion), once each.
    let all = c.validate().unwrap_err().to_string();
    assert_eq!(all.matches("mcp.body_timeout").count(), 1, "{all}");
}

#[test]
fn marker_key_source_and_remove_unmanaged_convert_and_bad_ones_are_named() {
    use worker::settings::MarkerKeySource;
    Jail::expect_with(|jail| {
        let c = load_in(
            jail,
            "[whitelist]\nmarker_key_env = \"AWSWL_MARKER_KEY\"\n[policy]\nremove_unmanaged = true\n",
        )
        .unwrap();
        let w = c.settings().unwrap().whitelist;
        assert_eq!(w.marker_key, MarkerKeySource::Env("AWSWL_MARKER_KEY".into()));
        assert!(w.policy.remove_unmanaged);
        let c = load_in(jail, "[whitelist]\nmarker_key_file = \"/etc/awswhitelist/marker.key\"\n").unwrap();
        let w = c.settings().unwrap().whitelist;
        assert_eq!(w.marker_key, MarkerKeySource::File("/etc/awswhitelist/marker.key".into()));
        Ok(())
    });
    let w = Config::default().settings().unwrap().whitelist;
    assert_eq!(w.marker_key, MarkerKeySource::StateDir, "generated in state_dir by default");
    assert!(!w.policy.remove_unmanaged, "only managed rules are removed by default");
    let mut both = Config::default();
    both.whitelist.marker_key_file = Some("/k".into());
    both.whitelist.marker_key_env = Some("K".into());
    let text = both.settings().unwrap_err().to_string();
    assert!(text.contains("whitelist.marker_key_env") && text.contains("not both"), "{text}");
    let mut value = Config::default();
    value.whitelist.marker_key_env = Some("hunter2 hunter2".into());
    let text = value.settings().unwrap_err().to_string();
    assert!(text.contains("whitelist.marker_key_env") && text.contains("NAME"), "{text}");
    assert!(!text.contains("hunter2"), "a key written in the wrong place is not echoed: {text}");
}

#[test]
fn auth_off_is_refused_when_a_proxy_or_public_host_names_are_configured() {
    Jail::expect_with(|jail| {
        for (toml, key) in [
            ("forwarded_allow_ips = [\"127.0.0.1\"]\n[auth]\nenabled = false\n", "forwarded_allow_ips"),
            ("[mcp]\nallowed_hosts = [\"mcp.example.com\"]\n[auth]\nenabled = false\n", "mcp.allowed_hosts"),
        ] {
            let text = load_in(jail, toml).unwrap_err().to_string();
            assert!(text.contains("auth.enabled") && text.contains(key), "{toml}: {text}");
        }
        // Loopback and no proxy: auth off is still the reference-compatible local setup.
        load_in(jail, "[auth]\nenabled = false\n").unwrap();
        Ok(())
    });
}

#[test]
fn forwarded_header_names_the_one_header_believed() {
    Jail::expect_with(|jail| {
        for value in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            let c = load_in(jail, &format!("forwarded_header = \"{value}\"\n")).unwrap();
            c.settings().unwrap();
        }
        let text = load_in(jail, "forwarded_header = \"x-client-ip\"\n").unwrap_err().to_string();
        assert!(text.contains("forwarded_header"), "{text}");
        Ok(())
    });
}

#[test]
fn control_socket_comes_from_the_key_else_the_runtime_directory_and_is_checked() {
    Jail::expect_with(|jail| {
        jail.set_env("RUNTIME_DIRECTORY", "/run/awswhitelist");
        let c = load_in(jail, "").unwrap();
        assert_eq!(c.control_socket_path(), Some(PathBuf::from("/run/awswhitelist/control.sock")));
        let dir = jail.directory().to_path_buf();
        let c = load_in(jail, &format!("control_socket = \"{}/c.sock\"", dir.display())).unwrap();
        assert_eq!(c.control_socket_path(), Some(dir.join("c.sock")), "the key wins");
        jail.set_env("RUNTIME_DIRECTORY", "");
        assert_eq!(load_in(jail, "").unwrap().control_socket_path(), None, "no systemd, no key: none");
        let long = format!("/tmp/{}", "x".repeat(120));
        for (bad, why) in [
            ("ctl.sock".to_string(), "absolute"),
            ("/nonexistent-dir/ctl.sock".to_string(), "directory does not exist"),
            (long, "longer than"),
        ] {
            let err = load_in(jail, &format!("control_socket = \"{bad}\"")).unwrap_err().to_string();
            assert!(err.contains("control_socket") && err.contains(why), "{bad}: {err}");
        }
        Ok(())
    });
}

#[test]
fn policy_consent_converts_is_off_by_default_and_bad_values_are_named() {
    use std::time::Duration;
    let w = Config::default().settings().unwrap().whitelist;
    assert!(w.policy.consent.is_off(), "no change needs consent by default");
    assert_eq!(w.consent_ttl, Duration::from_secs(300));
    Jail::expect_with(|jail| {
        let c = load_in(
            jail,
            "[policy.consent]\nports = [22, 3389]\nwider_than_v4 = 24\nlonger_than_hours = 8\nremoves = true\n\
             groups = [\"sg-0prod*\"]\nstate_ttl_seconds = 120\n",
        )
        .unwrap();
        let w = c.settings().unwrap().whitelist;
        let rules = &w.policy.consent;
        assert_eq!(rules.ports, [22, 3389]);
        assert_eq!((rules.wider_than_v4, rules.wider_than_v6), (Some(24), None));
        assert_eq!(rules.longer_than, Some(Duration::from_secs(8 * 3600)));
        assert!(rules.removes && !rules.always);
        assert_eq!(w.consent_ttl, Duration::from_secs(120));
        jail.set_env("AWSWHITELIST_POLICY__CONSENT__ALWAYS", "true");
        let c = load_in(jail, "").unwrap();
        assert!(c.settings().unwrap().whitelist.policy.consent.always, "overridable from the environment");
        Ok(())
    });
    let mut bad = Config::default();
    bad.policy.consent.wider_than_v4 = 33;
    bad.policy.consent.groups = vec!["prod".into()];
    bad.policy.consent.state_ttl_seconds = 0.5;
    bad.policy.consent.longer_than_hours = -1.0;
    let text = bad.settings().unwrap_err().to_string();
    for key in [
        "policy.consent.wider_than_v4",
        "policy.consent.groups",
        "policy.consent.state_ttl_seconds",
        "policy.consent.longer_than_hours",
    ] {
        assert!(text.contains(key), "{key} missing from: {text}");
    }
}
