//! A real `redis-server` (Debian's package) on loopback, one server or a 3-master Redis
//! Cluster built with `redis-cli --cluster create`, each in a temp dir, killed when dropped.
//! redis-cli is the one next to redis-server.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nginx::free_port;

/// `redis-server`, or None when it is missing and this is not CI (the test skips, reported).
pub fn server_binary() -> Option<PathBuf> {
    super::tool("AWSWL_REDIS_SERVER", "redis-server", "apt package redis-server")
}

/// One running server.
pub struct Redis {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    cluster: bool,
}

impl Redis {
    /// A plain server on a free port, answering PING when this returns.
    pub fn start(bin: &Path) -> Redis {
        Redis::launch(bin, false)
    }

    fn launch(bin: &Path, cluster: bool) -> Redis {
        let mut r = Redis {
            bin: bin.to_path_buf(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            port: free_port(),
            cluster,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (data is not kept: no persistence).
    pub fn restart(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(self.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + super::PATIENCE;
        while !command(self.port, "PING").is_some_and(|r| r.starts_with("+PONG")) {
            assert!(Instant::now() < deadline, "redis-server on {} did not answer PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One inline command to 127.0.0.1:`port`; the raw answer.
pub fn command(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Three masters, no replicas, every slot assigned, `cluster_state:ok` on each node.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts and joins the three nodes.
    pub fn start(bin: &Path) -> Cluster {
        let nodes: Vec<Redis> = (0..3).map(|_| Redis::launch(bin, true)).collect();
        let cli = bin.with_file_name("redis-cli");
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", cli.display()));
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Starts every node again (each keeps its `nodes.conf`, so the cluster forms again, empty)
    /// and waits until it is ok.
    pub fn restart(&mut self) {
        for n in &mut self.nodes {
            n.restart();
        }
        self.wait_ok();
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + super::PATIENCE;
        for n in &self.nodes {
            while !command(n.port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok")) {
                assert!(Instant::now() < deadline, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The TOML array of seed URLs.
    pub fn seeds(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
        format!("[{}]", urls.join(", "))
    }
}
