//! Behind a real nginx (Debian's package), started on loopback with a config generated from
//! deploy/nginx/awswhitelist.conf: the client address nginx saw reaches the tools as "current",
//! and an X-Forwarded-For sent straight to the service by anyone else is ignored.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::{http, Options, Service};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const DEPLOY: &str = include_str!("../deploy/nginx/awswhitelist.conf");

fn nginx_binary() -> Option<PathBuf> {
    common::tool("AWSWL_NGINX", "nginx", "apt package nginx")
}

/// The deploy site, pointed at `upstream` and listening on `port`; with `tls`, using `cert`.
/// The port-80 redirect server is dropped: nothing listens on 80 here.
fn site(upstream: &str, port: u16, tls: Option<(&Path, &Path)>) -> String {
    let redirect_start = DEPLOY.find("server {\n    listen 80;").expect("the redirect server block");
    let redirect_end = redirect_start + DEPLOY[redirect_start..].find("\n}\n").expect("its end") + 3;
    let text = format!("{}{}", &DEPLOY[..redirect_start], &DEPLOY[redirect_end..]);
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        let replaced = if t.starts_with("server 127.0.0.1:8080") {
            format!("    server {upstream};")
        } else if t.starts_with("listen [::]:443") {
            continue;
        } else if t.starts_with("listen 443") {
            format!("    listen 127.0.0.1:{port}{};", if tls.is_some() { " ssl" } else { "" })
        } else if t.starts_with("ssl_certificate_key") {
            match tls {
                Some((_, key)) => format!("    ssl_certificate_key {};", key.display()),
                None => continue,
            }
        } else if t.starts_with("ssl_certificate ") {
            match tls {
                Some((cert, _)) => format!("    ssl_certificate {};", cert.display()),
                None => continue,
            }
        } else if t.starts_with("ssl_") && tls.is_none() {
            continue;
        } else {
            line.to_string()
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    out
}

fn main_conf(dir: &Path, site: &str) -> PathBuf {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{site}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// A running nginx (master and worker, in a process group of their own), stopped when
/// dropped, also when the test fails: SIGTERM to the group (nginx's fast shutdown: the master
/// waits for its worker, then exits), the master waited for; SIGKILL to the whole group if it
/// is still there after 10 s, so no worker is ever left behind, re-parented to init.
struct Nginx(Child);

impl Nginx {
    fn start(bin: &Path, prefix: &Path, conf: &Path) -> Nginx {
        let child = Command::new(bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Nginx(child)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.0.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                // The master is not reaped yet, so the group id is still ours.
                let _ = killpg(group, Signal::SIGKILL);
                let _ = self.0.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
