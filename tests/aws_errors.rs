//! What a user sees when AWS cannot be used: each failure as the message a tool call answers
//! with, through the real binary (`awswhitelist stdio`) and the real SDK. Missing credentials
//! with the instance metadata service refusing or hanging on loopback, an unreachable endpoint
//! (a dead loopback port), a missing group (moto), and the answers moto cannot give (expired
//! token, clock skew, missing permission, throttling) from a loopback endpoint that speaks
//! EC2's error XML.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

/// A group id that passes validation; no call in these tests gets far enough to need it real.
const GROUP: &str = "sg-12345678";

/// An environment with no AWS credentials anywhere: no variables, no shared files, a home
/// directory of its own; the instance metadata service at `imds`.
fn bare_env(home: &Path, imds: &str) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), home.display().to_string()),
        ("AWS_CONFIG_FILE".into(), home.join("no-config").display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), home.join("no-credentials").display().to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), imds.to_string()),
    ]
}

/// Made-up keys (moto and the fake endpoint accept anything) and nothing else.
fn keys_env(home: &Path) -> Vec<(String, String)> {
    common::moto::client_env(home)
}

/// Calls `whitelist_list` on `group` through `awswhitelist stdio` with only `env` and `aws`
/// (lines of the `[aws]` table); returns the error text the tool answered with.
fn tool_error(env: &[(String, String)], aws: &str, group: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\n{aws}\n[whitelist]\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(common::BIN)
        .args(["stdio", "--config", config.to_str().unwrap()])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let answer = common::list_over_stdio(&mut child, group);
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let _ = child.wait();
    let answer = answer.unwrap_or_else(|| panic!("no answer to the call; stderr:\n{stderr}"));
    let result = &answer["result"];
    assert_eq!(result["isError"], true, "{answer}");
    result["content"][0]["text"].as_str().unwrap_or_default().to_string()
}

#[test]
fn no_credentials_anywhere_says_where_it_looked_and_what_to_set() {
    let home = tempfile::tempdir().unwrap();
    // The instance metadata service refuses connections (not on EC2).
    let refused = dead_port();
    let imds = format!("http://127.0.0.1:{refused}");
    let message = tool_error(&bare_env(home.path(), &imds), "endpoint_url = \"http://127.0.0.1:1\"", GROUP);
    assert_no_credentials(&message);
    // It accepts connections and never answers (a firewalled metadata address).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", silent.local_addr().unwrap());
    let message = tool_error(&bare_env(home.path(), &imds), "endpoint_url = \"http://127.0.0.1:1\"", GROUP);
    assert_no_credentials(&message);
}

fn assert_no_credentials(message: &str) {
    assert!(message.starts_with("no AWS credentials found"), "{message}");
    assert!(!message.contains("rejected"), "nothing was rejected: {message}");
    for place in ["AWS_ACCESS_KEY_ID", "AWS_PROFILE", "SSO", "web identity", "ECS", "IMDS"] {
        assert!(message.contains(place), "{place} not named: {message}");
    }
    assert!(message.contains("doctor"), "{message}");
}

/// A loopback port nobody listens on (bound, then released).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback endpoint that answers every request with one EC2 error (status, code, message).
struct Refusing(common::http::Canned);

impl Refusing {
    fn start(status: u16, code: &str, message: &str) -> Refusing {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
        );
        Refusing(common::http::Canned::start(status, "text/xml;charset=UTF-8", xml))
    }

    fn url(&self) -> String {
        format!("endpoint_url = \"http://{}\"", self.0.addr)
    }
}

#[test]
fn an_expired_session_token_says_how_to_renew_it() {
    let home = tempfile::tempdir().unwrap();
    let aws = Refusing::start(400, "ExpiredToken", "The security token included in the request is expired");
    let message = tool_error(&keys_env(home.path()), &aws.url(), GROUP);
    assert!(message.contains("the session token has expired"), "{message}");
    assert!(message.contains("aws sso login") && message.contains("AWS_SESSION_TOKEN"), "{message}");
}

#[test]
fn a_request_expired_by_clock_skew_points_at_the_clock() {
    let home = tempfile::tempdir().unwrap();
    let aws = Refusing::start(400, "RequestExpired", "Request has expired.");
    let message = tool_error(&keys_env(home.path()), &aws.url(), GROUP);
    assert!(message.contains("clock") && message.contains("NTP"), "{message}");
}

#[test]
fn a_missing_permission_names_the_action_and_the_resource() {
    let home = tempfile::tempdir().unwrap();
    let aws =
        Refusing::start(403, "UnauthorizedOperation", "You are not authorized to perform this operation.");
    let message = tool_error(&keys_env(home.path()), &aws.url(), GROUP);
    // The first call of a list is DescribeSecurityGroups, which IAM grants only on "*".
    assert!(message.starts_with("AWS denied ec2:DescribeSecurityGroups: resource *"), "{message}");
    assert!(message.contains("grant the IAM action ec2:DescribeSecurityGroups"), "{message}");
}

#[test]
fn throttling_is_retried_then_reported_as_retried() {
    let home = tempfile::tempdir().unwrap();
    let aws = Refusing::start(503, "RequestLimitExceeded", "Request limit exceeded.");
    let message = tool_error(&keys_env(home.path()), &format!("{}\nmax_attempts = 3", aws.url()), GROUP);
    assert!(message.contains("throttling ec2:DescribeSecurityGroups"), "{message}");
    assert!(message.contains("retried") && message.contains("aws.max_attempts"), "{message}");
    assert_eq!(aws.0.requests.load(Ordering::SeqCst), 3, "max_attempts = 3: the SDK tried three times");
}

#[test]
fn an_unreachable_endpoint_is_named_with_what_to_check() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", dead_port());
    let message = tool_error(&keys_env(home.path()), &format!("endpoint_url = \"{url}\""), GROUP);
    assert!(message.contains(&format!("cannot reach the EC2 endpoint ({url})")), "{message}");
    assert!(message.contains("check aws.endpoint_url"), "{message}");
}

#[test]
fn a_missing_group_names_the_group_and_the_region() {
    let Some(moto) = common::moto::Moto::start() else { return };
    let home = tempfile::tempdir().unwrap();
    let message = tool_error(
        &keys_env(home.path()),
        &format!("endpoint_url = \"{}\"", moto.url()),
        "sg-0123456789abcdef0",
    );
    assert_eq!(
        message,
        "security group sg-0123456789abcdef0 was not found (check the id and the region us-east-1)"
    );
}
