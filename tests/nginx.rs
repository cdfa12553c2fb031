//! Behind a real nginx (Debian's package), started on loopback with a config generated from
//! deploy/nginx/awswhitelist.conf: the client address nginx saw reaches the tools as "current",
//! and an X-Forwarded-For sent straight to the service by anyone else is ignored.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::nginx::{free_port, main_conf, nginx_binary, site, Nginx};
use common::{http, Options, Service};
use serde_json::{json, Value};

/// A read-write API key (`awswhitelist keygen`) and its `[[auth.api_keys]]` entry.
fn api_key() -> (String, String) {
    let out = Command::new(common::BIN)
        .args(["keygen", "--id", "nginx", "--scopes", "whitelist:read whitelist:write"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8(out.stdout).unwrap();
    let key = out.lines().find(|l| l.starts_with("awsk_")).expect("a key line").to_string();
    let entry = out[out.find("[[auth.api_keys]]").expect("a config entry")..].to_string();
    (key, entry)
}

/// POSTs a tools/call from a chosen loopback source address (so nginx and the service see a
/// client other than 127.0.0.1), with extra headers.
fn call_from(source: &str, target: &str, name: &str, args: Value, extra: &str) -> Value {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&target.parse::<SocketAddr>().unwrap().into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-06-18\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = http::read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["result"].clone()
}

#[test]
fn current_is_the_address_nginx_saw_and_forged_headers_are_ignored() {
    let Some(bin) = nginx_binary() else { return };
    let Some(moto) = Moto::start() else { return };
    let group = moto.create_group("nginx");
    let state = tempfile::tempdir().unwrap();
    // Behind a proxy, authentication is required (forwarded_allow_ips with auth off is refused).
    let (key, entry) = api_key();
    let svc = Service::start_with(Options {
        config: format!(
            "workers = 2\nforwarded_allow_ips = [\"127.0.0.1\"]\n[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n[whitelist]\nstate_dir = \"{}\"\n[auth]\nenabled = true\n\n{entry}",
            moto.url(),
            state.path().display()
        ),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), format!("AKIA{:016}", std::process::id())),
            ("AWS_SECRET_ACCESS_KEY".into(), format!("{:040}", std::process::id())),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
        wait_ready: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = main_conf(dir.path(), &site(&svc.addr, port, None));
    let _nginx = Nginx::start(&bin, dir.path(), &conf);
    let front = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http::get(&front, "/health").map(|r| r.status).ok() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "nginx did not come up: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Through nginx from 127.0.0.5, with a forged header nginx must replace.
    let via = call_from(
        "127.0.0.5",
        &front,
        "whitelist_add",
        json!({"security_group_id": group, "ip_address": "current"}),
        &format!(
            "Authorization: Bearer {key}\r\nX-Forwarded-For: 203.0.113.66\r\nForwarded: for=203.0.113.67\r\n"
        ),
    );
    assert_eq!(via["structuredContent"]["rule"]["cidr_ip"], "127.0.0.5/32", "{via}");
    // Straight to the service from an untrusted 127.0.0.7, forging the header: ignored.
    let direct = call_from(
        "127.0.0.7",
        &svc.addr,
        "whitelist_add",
        json!({"security_group_id": group, "ip_address": "current"}),
        &format!("Authorization: Bearer {key}\r\nX-Forwarded-For: 203.0.113.77\r\nForwarded: for=203.0.113.78\r\nX-Real-IP: 203.0.113.79\r\n"),
    );
    assert_eq!(direct["structuredContent"]["rule"]["cidr_ip"], "127.0.0.7/32", "{direct}");
    let cidrs: Vec<String> = moto.ingress(&group).into_iter().map(|r| r[1].clone()).collect();
    assert!(
        !cidrs.iter().any(|c| c.starts_with("203.0.113.")),
        "a forged address was whitelisted: {cidrs:?}"
    );

    assert_eq!(http::get(&front, "/metrics").unwrap().status, 404, "metrics are not public");
    let info = http::get(&front, "/").unwrap();
    assert_eq!(info.status, 200);
}

#[test]
fn the_deploy_config_with_tls_passes_nginx_t() {
    let Some(bin) = nginx_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let conf = main_conf(dir.path(), &site("127.0.0.1:1", free_port(), Some((&cert, &key))));
    let out = Command::new(&bin)
        .args(["-t", "-p", &dir.path().display().to_string(), "-c", &conf.display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("syntax is ok"), "{text}");
}
