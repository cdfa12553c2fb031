//! A real nginx (Debian's package) in front of the service, configured from
//! deploy/nginx/awswhitelist.conf: the site, the main config around it, the running process.
#![allow(dead_code)] // each test binary uses a different part of it

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

const DEPLOY: &str = include_str!("../../deploy/nginx/awswhitelist.conf");

pub fn nginx_binary() -> Option<PathBuf> {
    super::tool("AWSWL_NGINX", "nginx", "apt package nginx")
}

/// The deploy site, pointed at `upstream` and listening on `port`; with `tls`, using `cert`.
/// The port-80 redirect server is dropped: nothing listens on 80 here.
pub fn site(upstream: &str, port: u16, tls: Option<(&Path, &Path)>) -> String {
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

pub fn main_conf(dir: &Path, site: &str) -> PathBuf {
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
pub struct Nginx(Child);

impl Nginx {
    pub fn start(bin: &Path, prefix: &Path, conf: &Path) -> Nginx {
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

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `front` (nginx) answers `/health` with 200; panics with nginx's error log.
pub fn wait_up(front: &str, prefix: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while super::http::get(front, "/health").map(|r| r.status).ok() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "nginx did not come up: {}",
            std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
