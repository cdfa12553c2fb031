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
    /// moto's own record of every request it received, when started with [`Moto::recording`].
    recording: Option<tempfile::TempDir>,
}

impl Moto {
    /// Starts moto (found as [`super::tool`] finds tools: `AWSWL_MOTO_SERVER`, else PATH), or
    /// None when it is not installed and this is not CI (the test then skips, reported).
    pub fn start() -> Option<Moto> {
        Moto::start_with(None)
    }

    /// Like [`Moto::start`], with moto's request recorder on (`MOTO_ENABLE_RECORDING`), so a test
    /// can see what reached moto ([`Moto::recorded_ec2`]).
    pub fn recording() -> Option<Moto> {
        Moto::start_with(Some(tempfile::tempdir().unwrap()))
    }

    fn start_with(recording: Option<tempfile::TempDir>) -> Option<Moto> {
        let program = super::tool("AWSWL_MOTO_SERVER", "moto_server", "pip moto[server], in its venv")?;
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(&program);
        if let Some(dir) = &recording {
            cmd.env("MOTO_ENABLE_RECORDING", "True")
                .env("MOTO_RECORDER_FILEPATH", dir.path().join("requests"));
        }
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut moto = Moto { child, addr: format!("127.0.0.1:{port}"), recording };
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

    /// The form-encoded EC2 Query bodies moto has received so far, decoded into key/value pairs
    /// (needs [`Moto::recording`]).
    pub fn recorded_ec2(&self) -> Vec<Vec<(String, String)>> {
        self.recorded().into_iter().map(|(form, _)| form).collect()
    }

    /// The `User-Agent` of each EC2 Query request moto has received with `Action` `action`
    /// (needs [`Moto::recording`]).
    pub fn recorded_user_agents(&self, action: &str) -> Vec<String> {
        let is = |form: &[(String, String)]| form.iter().any(|(k, v)| k == "Action" && v == action);
        self.recorded()
            .into_iter()
            .filter(|(form, _)| is(form))
            .map(|(_, headers)| headers["User-Agent"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Every request moto recorded: its decoded form body and its headers.
    fn recorded(&self) -> Vec<(Vec<(String, String)>, serde_json::Value)> {
        use base64::Engine;
        let dir = self.recording.as_ref().expect("moto started with Moto::recording()");
        let text = std::fs::read_to_string(dir.path().join("requests")).unwrap_or_default();
        let mut out = Vec::new();
        for line in text.lines() {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            let body = entry["body"].as_str().unwrap_or("");
            let body = match entry["body_encoded"].as_bool() {
                Some(true) => base64::engine::general_purpose::STANDARD.decode(body).unwrap(),
                _ => body.as_bytes().to_vec(),
            };
            let form = String::from_utf8_lossy(&body).into_owned();
            let form =
                form.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v)));
            out.push((form.collect(), entry["headers"].clone()));
        }
        out
    }

    /// The `[aws]` table that points a service at this moto.
    pub fn aws_table(&self) -> String {
        format!(
            "[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\noperation_timeout = 20.0\n",
            self.url()
        )
    }

    /// The environment a service needs to reach this moto: made-up keys (moto accepts any;
    /// these are nobody's), and no instance metadata lookups.
    pub fn sdk_env() -> Vec<(String, String)> {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        vec![
            ("AWS_ACCESS_KEY_ID".into(), format!("AKIA{:016}", std::process::id() as u64 * 7919)),
            ("AWS_SECRET_ACCESS_KEY".into(), format!("{seed:040x}").chars().take(40).collect()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
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

    /// Creates an IPv4 managed prefix list of at most `max` entries and returns its id.
    pub fn create_prefix_list(&self, name: &str, max: u32) -> String {
        let max = max.to_string();
        let xml = self.ec2(&[
            ("Action", "CreateManagedPrefixList"),
            ("PrefixListName", name),
            ("AddressFamily", "IPv4"),
            ("MaxEntries", &max),
        ]);
        tag(&xml, "prefixListId").unwrap_or_else(|| panic!("no prefixListId in {xml}"))
    }

    /// Entries of a managed prefix list as (cidr, description).
    pub fn prefix_list_entries(&self, list: &str) -> Vec<(String, String)> {
        let xml = self.ec2(&[("Action", "GetManagedPrefixListEntries"), ("PrefixListId", list)]);
        xml.split("<item>")
            .skip(1)
            .map(|item| (tag(item, "cidr").unwrap_or_default(), tag(item, "description").unwrap_or_default()))
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

/// Percent-decoding of a form value (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
