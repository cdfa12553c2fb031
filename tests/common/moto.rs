//! A real `moto_server` on loopback for EC2/STS, and its EC2 Query API spoken directly, so
//! tests can set up groups and look at what really changed without going through the service.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Moto {
    /// Starts moto (found as [`super::tool`] finds tools: `AWSWL_MOTO_SERVER`, else PATH), or
    /// None when it is not installed and this is not CI (the test then skips, reported).
    pub fn start() -> Option<Moto> {
        let program = super::tool("AWSWL_MOTO_SERVER", "moto_server", "pip moto[server], in its venv")?;
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut moto = Moto { child, addr: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http::get(&moto.addr, "/moto-api/").is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("{} exited at start: {status}", program.display());
            }
            assert!(Instant::now() < deadline, "moto did not come up on {}", moto.addr);
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// The endpoint URL for the SDK.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One EC2 Query API call; returns the XML body.
    pub fn ec2(&self, params: &[(&str, &str)]) -> String {
        let mut body = String::from("Version=2016-11-15");
        for (k, v) in params {
            body.push_str(&format!("&{}={}", k, encode(v)));
        }
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let r = http::raw(&self.addr, req.as_bytes()).unwrap();
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// Creates a security group and returns its id.
    pub fn create_group(&self, name: &str) -> String {
        let xml =
            self.ec2(&[("Action", "CreateSecurityGroup"), ("GroupName", name), ("GroupDescription", "test")]);
        tag(&xml, "groupId").unwrap_or_else(|| panic!("no groupId in {xml}"))
    }

    /// Ingress rules of a group as (rule id, cidr, protocol, from, to, description).
    pub fn ingress(&self, group: &str) -> Vec<[String; 6]> {
        let xml = self.ec2(&[
            ("Action", "DescribeSecurityGroupRules"),
            ("Filter.1.Name", "group-id"),
            ("Filter.1.Value.1", group),
        ]);
        xml.split("<item>")
            .skip(1)
            .filter(|item| tag(item, "isEgress").as_deref() == Some("false"))
            .map(|item| {
                let cidr = tag(item, "cidrIpv4").or_else(|| tag(item, "cidrIpv6")).unwrap_or_default();
                [
                    tag(item, "securityGroupRuleId").unwrap_or_default(),
                    cidr,
                    tag(item, "ipProtocol").unwrap_or_default(),
                    tag(item, "fromPort").unwrap_or_default(),
                    tag(item, "toPort").unwrap_or_default(),
                    tag(item, "description").unwrap_or_default(),
                ]
            })
            .collect()
    }

    /// Adds a rule behind the service's back (e.g. an already expired one).
    pub fn authorize(&self, group: &str, cidr: &str, port: u16, description: &str) {
        let port = port.to_string();
        let xml = self.ec2(&[
            ("Action", "AuthorizeSecurityGroupIngress"),
            ("GroupId", group),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", &port),
            ("IpPermissions.1.ToPort", &port),
            ("IpPermissions.1.IpRanges.1.CidrIp", cidr),
            ("IpPermissions.1.IpRanges.1.Description", description),
        ]);
        assert!(xml.contains("<return>true</return>"), "{xml}");
    }
}

/// An environment for a client of moto with nothing of this machine's AWS setup in it: made-up
/// keys (moto accepts any; generated, not anyone's), no instance metadata, `home` as the home
/// directory and no shared config files. For `Command::env_clear().envs(…)`.
pub fn client_env(home: &std::path::Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), home.display().to_string()),
        ("AWS_CONFIG_FILE".into(), home.join("no-config").display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), home.join("no-credentials").display().to_string()),
        ("AWS_ACCESS_KEY_ID".into(), format!("AKIA{:016}", std::process::id())),
        ("AWS_SECRET_ACCESS_KEY".into(), format!("{:040}", u64::from(std::process::id()) * 7919)),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_string())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
