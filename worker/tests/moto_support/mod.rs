//! What the moto suites of this crate share: a `moto_server` on an ephemeral port (found by the
//! suite's one rule for tools, tests/common/skip.rs: `AWSWL_MOTO_SERVER`, else PATH; without it
//! the tests fail under CI and are reported as skipped elsewhere), a test environment without
//! IMDS or the host's `~/.aws`, an SDK client of our own to set up what the firewall works on,
//! and the whole service in this process over `Ec2Firewall`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use worker::aws::{AwsSettings, Ec2Firewall};
use worker::whitelist::{Firewall, Policy, Ports, Protocol, RuleSpec, Scope, Whitelist};

#[path = "../../../tests/common/skip.rs"]
mod skip;

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A moto server on an ephemeral port, killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Static test credentials for the default chain, and no IMDS or host `~/.aws` in the way.
/// Every test sets the same values, once, before anything reads them.
pub fn test_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_ENDPOINT_URL");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        // A shared config of our own: one profile, `base`, for `source_profile`.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("awswl-aws-moto");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let credentials = dir.join("credentials");
        std::fs::write(
            &credentials,
            "[base]\naws_access_key_id = AKIABASEEXAMPLE0\naws_secret_access_key = base\n",
        )
        .expect("write credentials");
        std::env::set_var("AWS_CONFIG_FILE", dir.join("config"));
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", credentials);
    });
}

pub fn start_moto() -> Option<Moto> {
    test_env();
    let program = skip::tool("AWSWL_MOTO_SERVER", "moto_server", "pip moto[server], in its venv")?;
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!("moto_server exited at start: {status}");
        }
        if answers_http(port) {
            return Some(moto);
        }
        assert!(Instant::now() < deadline, "moto_server did not answer on port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn answers_http(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// moto's own view of its state (`/moto-api/data.json`).
pub fn moto_state(moto: &Moto) -> serde_json::Value {
    let addr = moto.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to moto");
    s.write_all(b"GET /moto-api/data.json HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("ask moto");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read moto's state");
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).expect("moto's state is JSON")
}

/// The AssumeRole sessions moto handed out, as (role ARN, session name, external id).
pub fn assumed_roles(moto: &Moto) -> Vec<(String, String, String)> {
    let state = moto_state(moto);
    let roles = state["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    roles.iter().map(|r| (text(&r["role_arn"]), text(&r["session_name"]), text(&r["external_id"]))).collect()
}

/// An EC2 client of our own, to set up what the firewall works on.
pub async fn ec2(moto: &Moto) -> aws_sdk_ec2::Client {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

pub async fn create_group(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.expect("create VPC");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("VPC id").to_string();
    let sg = ec2
        .create_security_group()
        .group_name(name)
        .description("awswhitelist test")
        .vpc_id(vpc_id)
        .send()
        .await
        .expect("create security group");
    sg.group_id().expect("group id").to_string()
}

pub fn settings(moto: &Moto) -> AwsSettings {
    AwsSettings {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.url.clone()),
        operation_timeout: 20.0,
        ..AwsSettings::default()
    }
}

pub fn spec(group: &str, cidr: &str, protocol: Protocol, ports: Ports) -> RuleSpec {
    RuleSpec { group_id: group.into(), cidr: cidr.parse().expect("cidr"), protocol, ports }
}

pub fn default_chain() -> Scope {
    Scope { profile: None, region: None, keys: None }
}

/// The whole service in this process over `firewall`, with `policy` and the host's real audit
/// log and expiry index in `state`, so the sweeper can be driven with any clock.
pub fn service_with(firewall: Arc<dyn Firewall>, policy: Policy, state: &Path) -> Whitelist {
    use worker::host::audit_file::AuditLog;
    use worker::host::group_locks::GroupLockFiles;
    use worker::whitelist::cache::LocalVersions;
    use worker::whitelist::{Defaults, MarkerKey, Parts};
    let audit = AuditLog::open(&state.join("audit.log")).expect("audit log").with_expiry_index(state.into());
    Whitelist::new(Parts {
        firewall,
        policy,
        defaults: Defaults::default(),
        port_mappings: vec![],
        cache_ttl: Duration::from_secs(60),
        versions: Arc::new(LocalVersions::default()),
        recorder: Arc::new(audit),
        marker_key: MarkerKey::new(&[9u8; 32]).expect("key"),
        group_locks: Arc::new(GroupLockFiles::new(state.into())),
    })
}

/// [`service_with`] over `Ec2Firewall` on `moto`, with the default policy.
pub fn service_on(moto: &Moto, state: &Path) -> Whitelist {
    service_with(Arc::new(Ec2Firewall::new(settings(moto))), Policy::default(), state)
}
