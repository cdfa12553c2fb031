//! Authentication and authorization over real HTTP, against `serve` with two workers: a table of
//! credentials — valid HS256/HS384, RS256 and ES256 tokens and API keys, and every way a token
//! can be wrong — each answered on `POST /mcp` with the right status and `WWW-Authenticate`
//! challenge (RFC 6750, MCP authorization); scopes (403 `insufficient_scope`, `tools/list`
//! showing only what the caller may call); the RFC 9728 protected resource metadata; and the
//! refusal to serve a non-loopback address without authentication.
//!
//! Nothing secret is committed: the HS secret, the key pairs (openssl) and the API keys
//! (`awswhitelist keygen`) are made per test in a temp dir; the HS tokens a client would get come
//! from `awswhitelist token`, the hostile ones are crafted here with `jsonwebtoken`.

mod common;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{http, Service, BIN, PATIENCE};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

const ISSUER: &str = "https://issuer.test/";
/// The server's canonical resource URI: what tokens must be issued for.
const AUDIENCE: &str = "http://localhost/mcp";
/// Where RFC 9728 §3.1 puts the metadata of [`AUDIENCE`].
const METADATA_URL: &str = "http://localhost/.well-known/oauth-protected-resource/mcp";
const AUTHORIZATION_SERVER: &str = "https://login.issuer.test/";
const RS_KID: &str = "rs-2026";
const EC_KID: &str = "ec-2026";
const READ: &str = "whitelist:read";
const WRITE: &str = "whitelist:write";
const READ_WRITE: &str = "whitelist:read whitelist:write";

// ------------------------------------------------------------------------------------------
// Credentials, made per test
// ------------------------------------------------------------------------------------------

/// Secrets and keys of one test, in a temp dir that lives as long as this.
struct Creds {
    _dir: tempfile::TempDir,
    /// The HS shared secret as the server reads it from `secret_file`.
    secret: Vec<u8>,
    secret_file: PathBuf,
    rs_private: Vec<u8>,
    rs_public: PathBuf,
    ec_private: Vec<u8>,
    ec_public: PathBuf,
    /// A key pair the server has never seen.
    stranger_rs_private: Vec<u8>,
    /// API keys (`awswhitelist keygen`): read+write, and read only.
    key_rw: String,
    key_ro: String,
    /// Their `[[auth.api_keys]]` entries, as keygen printed them.
    api_keys_toml: String,
}

impl Creds {
    fn new() -> Creds {
        let dir = tempfile::tempdir().unwrap();
        // 48 random bytes, as 96 hex digits: the secret is the text (trailing whitespace aside).
        let mut random = [0u8; 48];
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut random).unwrap();
        let secret: Vec<u8> = random.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes();
        let secret_file = dir.path().join("jwt.secret");
        write_private(&secret_file, &secret);
        let (rs_private, rs_public) =
            keypair(dir.path(), "rs", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let (ec_private, ec_public) =
            keypair(dir.path(), "ec", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let (stranger_rs_private, _) =
            keypair(dir.path(), "stranger", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let (key_rw, entry_rw) = keygen("ci-rw", READ_WRITE);
        let (key_ro, entry_ro) = keygen("ci-ro", READ);
        Creds {
            _dir: dir,
            secret,
            secret_file,
            rs_private,
            rs_public,
            ec_private,
            ec_public,
            stranger_rs_private,
            key_rw,
            key_ro,
            api_keys_toml: format!("{entry_rw}\n{entry_ro}"),
        }
    }

    /// The service config: auth on with every kind of credential, two workers.
    fn config(&self) -> String {
        format!(
            r#"bind = "127.0.0.1:0"
workers = 2

[auth]
enabled = true
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
hs_secret_file = "{}"
authorization_servers = ["{AUTHORIZATION_SERVER}"]

[[auth.public_keys]]
kid = "{RS_KID}"
algorithm = "RS256"
pem_file = "{}"

[[auth.public_keys]]
kid = "{EC_KID}"
algorithm = "ES256"
pem_file = "{}"

{}
[rate_limit]
# The table sends ~20 bad credentials from one address: more than the default failed-auth
# burst (10), which tests/ratelimit_http.rs covers.
auth_failures_burst = 1000
"#,
            self.secret_file.display(),
            self.rs_public.display(),
            self.ec_public.display(),
            self.api_keys_toml,
        )
    }

    fn hs(&self) -> EncodingKey {
        EncodingKey::from_secret(&self.secret)
    }

    fn rs(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(&self.rs_private).unwrap()
    }

    fn ec(&self) -> EncodingKey {
        EncodingKey::from_ec_pem(&self.ec_private).unwrap()
    }

    fn stranger_rs(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(&self.stranger_rs_private).unwrap()
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A private key (PKCS#8 PEM) made by `openssl genpkey`, and its public key's file.
fn keypair(dir: &Path, name: &str, genpkey: &[&str]) -> (Vec<u8>, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub.pem"));
    run(Command::new("openssl").arg("genpkey").args(genpkey).arg("-out").arg(&private));
    run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public));
    (std::fs::read(&private).unwrap(), public)
}

/// `awswhitelist keygen`: the key (printed once) and its `[[auth.api_keys]]` entry.
fn keygen(id: &str, scopes: &str) -> (String, String) {
    common::keygen(id, scopes, &[])
}

/// `awswhitelist token` with the service's own config file.
fn cli_token(svc: &Service, sub: &str, scope: &str) -> String {
    let out = run(Command::new(BIN)
        .arg("token")
        .arg("--config")
        .arg(&svc.config)
        .args(["--sub", sub, "--scope", scope, "--ttl", "10m"]));
    out.trim().to_string()
}

// ------------------------------------------------------------------------------------------
// Crafted tokens
// ------------------------------------------------------------------------------------------

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims a valid token for this server carries.
fn claims(scope: &str) -> Map<String, Value> {
    let now = now();
    let v = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "scope": scope,
                   "iat": now, "nbf": now, "exp": now + 600});
    v.as_object().unwrap().clone()
}

/// [`claims`] with some set (`Some`) or removed (`None`).
fn claims_with(edits: &[(&str, Option<Value>)]) -> Map<String, Value> {
    let mut c = claims(READ_WRITE);
    for (name, value) in edits {
        match value {
            Some(v) => c.insert(name.to_string(), v.clone()),
            None => c.remove(*name),
        };
    }
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Map<String, Value>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// base64url without padding (RFC 7515 §2).
fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token with its parts replaced.
fn splice(token: &str, header: Option<String>, payload: Option<String>, signature: Option<String>) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    format!(
        "{}.{}.{}",
        header.as_deref().unwrap_or(parts[0]),
        payload.as_deref().unwrap_or(parts[1]),
        signature.as_deref().unwrap_or(parts[2])
    )
}

/// The key with one character of its secret part changed (still well-formed).
fn wrong_secret(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

// ------------------------------------------------------------------------------------------
// Requests and what they must get
// ------------------------------------------------------------------------------------------

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const SERVICE_STATUS: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"service_status","arguments":{}}}"#;
const WHITELIST_ADD: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whitelist_add","arguments":{"security_group_id":"sg-0123456789abcdef0","ip_address":"192.0.2.10","port":22}}}"#;
const WHITELIST_REMOVE: &str = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"whitelist_remove","arguments":{"security_group_id":"sg-0123456789abcdef0","ip_address":"192.0.2.10","port":22}}}"#;

/// POST /mcp on a new connection, with this `Authorization` value (if any).
fn post(addr: &str, authorization: Option<&str>, body: &str) -> http::Response {
    let mut req = String::from("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n");
    req.push_str("Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n");
    if let Some(v) = authorization {
        req.push_str(&format!("Authorization: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    http::raw(addr, req.as_bytes()).unwrap_or_else(|e| panic!("POST /mcp: {e}"))
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 200 with a JSON-RPC result, and no challenge.
    Ok,
    /// 401 `Bearer resource_metadata="…"` without an error (RFC 6750 §3.1: no credential).
    NoCredential,
    /// 401 `invalid_token` whose description contains this.
    Invalid(&'static str),
    /// 403 `insufficient_scope` naming this scope.
    Scope(&'static str),
}

struct Case {
    name: &'static str,
    authorization: Option<String>,
    body: &'static str,
    expect: Expect,
}

fn bearer(name: &'static str, token: impl Into<String>, body: &'static str, expect: Expect) -> Case {
    Case { name, authorization: Some(format!("Bearer {}", token.into())), body, expect }
}

/// A `WWW-Authenticate` value parsed strictly: `Scheme k="v", k="v"` (RFC 7235 auth-params, every
/// value a quoted-string), each parameter at most once.
fn parse_challenge(value: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (scheme, mut rest) = value.split_once(' ').ok_or("no parameters")?;
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        let (name, after) = rest.split_once("=\"").ok_or(format!("expected name=\"…\" at {rest:?}"))?;
        let end = after.find('"').ok_or("unterminated quoted-string")?;
        let (val, after) = after.split_at(end);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("bad parameter name {name:?}"));
        }
        if val.contains('\\') || val.chars().any(|c| c.is_control()) {
            return Err(format!("{name}: escapes or controls in {val:?}"));
        }
        if params.iter().any(|(n, _)| n == name) {
            return Err(format!("{name} given twice"));
        }
        params.push((name.to_string(), val.to_string()));
        rest = &after[1..];
        if rest.is_empty() {
            return Ok((scheme.to_string(), params));
        }
        rest = rest.strip_prefix(", ").ok_or(format!("expected \", \" at {rest:?}"))?;
    }
}

/// The challenge a refusal must carry: its `error`, words its `error_description` must contain,
/// and its `scope`.
type Challenge = (Option<&'static str>, Option<&'static str>, Option<&'static str>);

/// What is wrong with `r` as the answer to `case` (empty when right).
fn problems(case: &Case, r: &http::Response) -> Vec<String> {
    let mut bad = Vec::new();
    let body = r.json();
    let challenge = r.header("www-authenticate");
    let (status, want): (u16, Option<Challenge>) = match case.expect {
        Expect::Ok => (200, None),
        Expect::NoCredential => (401, Some((None, None, None))),
        Expect::Invalid(about) => (401, Some((Some("invalid_token"), Some(about), None))),
        Expect::Scope(scope) => (403, Some((Some("insufficient_scope"), Some(scope), Some(scope)))),
    };
    if r.status != status {
        bad.push(format!("status {} (want {status})", r.status));
    }
    match (want, challenge) {
        (None, None) => {
            if body.get("result").is_none() {
                bad.push(format!("no JSON-RPC result: {body}"));
            }
        }
        (None, Some(c)) => bad.push(format!("a challenge on success: {c}")),
        (Some(_), None) => bad.push("no WWW-Authenticate".into()),
        (Some((error, about, scope)), Some(c)) => match parse_challenge(c) {
            Err(e) => bad.push(format!("unparsable WWW-Authenticate {c:?}: {e}")),
            Ok((scheme, params)) => {
                let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
                let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
                names.sort_unstable();
                let mut want_names: Vec<&str> = match (error, scope) {
                    (None, _) => vec!["resource_metadata"],
                    (Some(_), None) => vec!["resource_metadata", "error", "error_description"],
                    (Some(_), Some(_)) => vec!["resource_metadata", "error", "scope", "error_description"],
                };
                want_names.sort_unstable();
                if scheme != "Bearer" {
                    bad.push(format!("scheme {scheme:?} in {c:?}"));
                }
                if names != want_names {
                    bad.push(format!("parameters {names:?} (want {want_names:?}) in {c:?}"));
                }
                if get("resource_metadata") != Some(METADATA_URL) {
                    bad.push(format!("resource_metadata in {c:?} is not {METADATA_URL}"));
                }
                if get("error") != error {
                    bad.push(format!("error in {c:?} (want {error:?})"));
                }
                if get("scope") != scope {
                    bad.push(format!("scope in {c:?} (want {scope:?})"));
                }
                if let Some(about) = about {
                    if !get("error_description").unwrap_or("").contains(about) {
                        bad.push(format!("error_description in {c:?} does not say {about:?}"));
                    }
                }
            }
        },
    }
    if status != 200 && body.pointer("/error/code") != Some(&json!(-32001)) {
        bad.push(format!("body is not a JSON-RPC error -32001: {body}"));
    }
    // A credential is never echoed back, nor is the secret.
    if let Some(cred) = case.authorization.as_deref().and_then(|a| a.split_once(' ')).map(|(_, c)| c.trim()) {
        let text = format!("{} {}", challenge.unwrap_or(""), String::from_utf8_lossy(&r.body));
        if cred.len() >= 8 && text.contains(cred) {
            bad.push("the credential is echoed in the answer".into());
        }
    }
    bad
}

/// Runs every case, each on a new connection (whichever worker accepts it), and fails once,
/// listing every case that went wrong.
fn run_table(svc: &Service, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let r = post(&svc.addr, case.authorization.as_deref(), case.body);
        let bad = problems(case, &r);
        if !bad.is_empty() {
            failures.push(format!(
                "{}:\n    {}\n    got {} {:?} {}",
                case.name,
                bad.join("\n    "),
                r.status,
                r.header("www-authenticate"),
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn tool_names(r: &http::Response) -> Vec<String> {
    let body = r.json();
    let tools = body.pointer("/result/tools").and_then(Value::as_array).unwrap_or_else(|| panic!("{body}"));
    let mut names: Vec<String> = tools.iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

#[test]
fn every_credential_gets_the_right_status_and_challenge() {
    let creds = Creds::new();
    let svc = Service::start(&creds.config());
    let hs_rw = cli_token(&svc, "alice", READ_WRITE);
    let hs_ro = cli_token(&svc, "reader", READ);
    let (hs, rs, ec) = (creds.hs(), creds.rs(), creds.ec());
    let now = now();
    let rs_valid = sign(Algorithm::RS256, Some(RS_KID), &rs, &claims(READ_WRITE));
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    // The classic confusion attack: HS256 keyed with the RS public key's PEM, which an attacker
    // can read; verifying it with that PEM as an HMAC key would accept it.
    let rs_public_pem = std::fs::read(&creds.rs_public).unwrap();
    let escalated = b64(serde_json::to_string(&claims(READ_WRITE)).unwrap().as_bytes());
    let wrong = |what: &str, v: Value| claims_with(&[(what, Some(v))]);
    let without = |what: &str| claims_with(&[(what, None)]);
    use Expect::*;
    let cases = vec![
        // Valid credentials, every kind.
        bearer("HS256 from `awswhitelist token`, tools/list", &hs_rw, TOOLS_LIST, Ok),
        bearer("HS256 from `awswhitelist token`, service_status", &hs_rw, SERVICE_STATUS, Ok),
        bearer(
            "HS384 with the shared secret",
            sign(Algorithm::HS384, None, &hs, &claims(READ_WRITE)),
            SERVICE_STATUS,
            Ok,
        ),
        bearer("RS256 with the pinned key's kid", &rs_valid, SERVICE_STATUS, Ok),
        bearer(
            "ES256 with the pinned key's kid",
            sign(Algorithm::ES256, Some(EC_KID), &ec, &claims(READ_WRITE)),
            SERVICE_STATUS,
            Ok,
        ),
        bearer("API key (keygen), read+write", &creds.key_rw, SERVICE_STATUS, Ok),
        bearer("API key (keygen), read only, tools/list", &creds.key_ro, TOOLS_LIST, Ok),
        Case {
            name: "scheme is case-insensitive (bearer)",
            authorization: Some(format!("bearer {rs_valid}")),
            body: SERVICE_STATUS,
            expect: Ok,
        },
        bearer(
            "expired 10 s ago: within the 30 s leeway",
            sign(Algorithm::HS256, None, &hs, &wrong("exp", json!(now - 10))),
            SERVICE_STATUS,
            Ok,
        ),
        // No credential.
        Case { name: "no Authorization header", authorization: None, body: TOOLS_LIST, expect: NoCredential },
        Case {
            name: "Basic scheme",
            authorization: Some("Basic YWxpY2U6cGFzc3dvcmQ=".into()),
            body: TOOLS_LIST,
            expect: NoCredential,
        },
        // Bad tokens.
        Case {
            name: "Bearer with nothing after it",
            authorization: Some("Bearer".into()),
            body: TOOLS_LIST,
            expect: Invalid("empty"),
        },
        bearer(
            "expired an hour ago",
            sign(Algorithm::HS256, None, &hs, &wrong("exp", json!(now - 3600))),
            TOOLS_LIST,
            Invalid("expired"),
        ),
        bearer(
            "not yet valid (nbf in an hour)",
            sign(Algorithm::HS256, None, &hs, &wrong("nbf", json!(now + 3600))),
            TOOLS_LIST,
            Invalid("not valid yet"),
        ),
        bearer(
            "wrong issuer",
            sign(Algorithm::RS256, Some(RS_KID), &rs, &wrong("iss", json!("https://evil.test/"))),
            TOOLS_LIST,
            Invalid("issuer"),
        ),
        bearer(
            "no issuer",
            sign(Algorithm::HS256, None, &hs, &without("iss")),
            TOOLS_LIST,
            Invalid("no iss claim"),
        ),
        bearer(
            "wrong audience",
            sign(Algorithm::HS256, None, &hs, &wrong("aud", json!("http://localhost/other"))),
            TOOLS_LIST,
            Invalid("(aud)"),
        ),
        bearer(
            "no audience",
            sign(Algorithm::ES256, Some(EC_KID), &ec, &without("aud")),
            TOOLS_LIST,
            Invalid("no aud claim"),
        ),
        bearer(
            "no exp",
            sign(Algorithm::HS256, None, &hs, &without("exp")),
            TOOLS_LIST,
            Invalid("no exp claim"),
        ),
        bearer(
            "no subject",
            sign(Algorithm::HS256, None, &hs, &without("sub")),
            TOOLS_LIST,
            Invalid("no sub claim"),
        ),
        bearer(
            "alg none, no signature",
            format!("{none_header}.{escalated}."),
            TOOLS_LIST,
            Invalid("alg none"),
        ),
        bearer(
            "alg none with a signature",
            splice(&rs_valid, Some(none_header.clone()), None, None),
            TOOLS_LIST,
            Invalid("alg none"),
        ),
        bearer(
            "HS256 keyed with the RS public key PEM",
            sign(
                Algorithm::HS256,
                Some(RS_KID),
                &EncodingKey::from_secret(&rs_public_pem),
                &claims(READ_WRITE),
            ),
            TOOLS_LIST,
            Invalid("signature does not verify"),
        ),
        bearer(
            "RS256 signed by a key nobody configured",
            sign(Algorithm::RS256, Some(RS_KID), &creds.stranger_rs(), &claims(READ_WRITE)),
            TOOLS_LIST,
            Invalid("signature does not verify"),
        ),
        bearer(
            "unknown kid",
            sign(Algorithm::RS256, Some("rs-1999"), &rs, &claims(READ_WRITE)),
            TOOLS_LIST,
            Invalid("unknown key"),
        ),
        bearer(
            "ES256 under the kid of an RS256 key",
            sign(Algorithm::ES256, Some(RS_KID), &ec, &claims(READ_WRITE)),
            TOOLS_LIST,
            Invalid("ES256"),
        ),
        bearer(
            "tampered payload (read-only token, scope raised)",
            splice(&hs_ro, None, Some(escalated.clone()), None),
            WHITELIST_ADD,
            Invalid("signature does not verify"),
        ),
        bearer(
            "signature stripped",
            splice(&rs_valid, None, None, Some(String::new())),
            TOOLS_LIST,
            Invalid("signature does not verify"),
        ),
        bearer(
            "header not base64url",
            splice(&hs_rw, Some("!!!".into()), None, None),
            TOOLS_LIST,
            Invalid("header is not base64url"),
        ),
        bearer(
            "header not JSON",
            splice(&hs_rw, Some(b64(b"alg=HS256")), None, None),
            TOOLS_LIST,
            Invalid("header is not a JSON object"),
        ),
        bearer("garbage", "not-a-token", TOOLS_LIST, Invalid("not a JWT")),
        bearer(
            "API key with a wrong secret",
            wrong_secret(&creds.key_rw),
            TOOLS_LIST,
            Invalid("unknown or revoked API key"),
        ),
        bearer(
            "API key with an unknown id",
            creds.key_rw.replacen("ci-rw", "ci-xx", 1),
            TOOLS_LIST,
            Invalid("unknown or revoked API key"),
        ),
        bearer("API key cut short", &creds.key_rw[..20], TOOLS_LIST, Invalid("not a well-formed API key")),
        // Authenticated, without the scope.
        bearer("read-only token calls whitelist_add", &hs_ro, WHITELIST_ADD, Scope(WRITE)),
        bearer("read-only token calls whitelist_remove", &hs_ro, WHITELIST_REMOVE, Scope(WRITE)),
        bearer("read-only API key calls whitelist_add", &creds.key_ro, WHITELIST_ADD, Scope(WRITE)),
    ];
    assert!(cases.len() >= 20);
    run_table(&svc, &cases);
}

#[test]
fn tools_list_shows_only_what_the_caller_may_call() {
    let creds = Creds::new();
    let svc = Service::start(&creds.config());
    let hs_rw = cli_token(&svc, "alice", READ_WRITE);
    let hs_ro = cli_token(&svc, "reader", READ);
    let all = [
        "service_status",
        "whitelist_add",
        "whitelist_check",
        "whitelist_find",
        "whitelist_groups",
        "whitelist_history",
        "whitelist_list",
        "whitelist_move",
        "whitelist_remove",
        "whitelist_revoke_everywhere",
    ];
    let read = [
        "service_status",
        "whitelist_check",
        "whitelist_find",
        "whitelist_groups",
        "whitelist_history",
        "whitelist_list",
    ];
    for (who, credential, want) in [
        ("read+write token", &hs_rw, &all[..]),
        ("read+write API key", &creds.key_rw, &all[..]),
        ("read-only token", &hs_ro, &read[..]),
        ("read-only API key", &creds.key_ro, &read[..]),
    ] {
        let r = post(&svc.addr, Some(&format!("Bearer {credential}")), TOOLS_LIST);
        assert_eq!(r.status, 200, "{who}: {r:?}");
        assert_eq!(
            tool_names(&r),
            want,
            "{who}: a caller sees exactly the tools its scopes allow; service_status needs only \
             whitelist:read, so a read-only caller sees it among the read-only tools"
        );
    }
    // What is listed can be called: service_status is read-only (readOnlyHint) and needs no AWS.
    for (who, credential) in [("read-only token", &hs_ro), ("read-only API key", &creds.key_ro)] {
        let r = post(&svc.addr, Some(&format!("Bearer {credential}")), SERVICE_STATUS);
        assert_eq!(r.status, 200, "{who} calling service_status: {r:?}");
        let body = r.json();
        assert_eq!(body.pointer("/result/structuredContent/service"), Some(&json!("awswhitelist")), "{body}");
    }
}

#[test]
fn protected_resource_metadata_is_served_at_both_well_known_paths() {
    let creds = Creds::new();
    let svc = Service::start(&creds.config());
    // The challenge points at a document this server serves.
    let r = post(&svc.addr, None, TOOLS_LIST);
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap();
    assert_eq!(challenge, format!("Bearer resource_metadata=\"{METADATA_URL}\""));
    let advertised = METADATA_URL.strip_prefix("http://localhost").unwrap();
    for path in ["/.well-known/oauth-protected-resource", advertised] {
        let r = http::get(&svc.addr, path).unwrap();
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        let doc = r.json();
        assert_eq!(doc["resource"], json!(AUDIENCE), "{path}: {doc}");
        assert_eq!(doc["scopes_supported"], json!([READ, WRITE]), "{path}: {doc}");
        assert_eq!(doc["authorization_servers"], json!([AUTHORIZATION_SERVER]), "{path}: {doc}");
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]), "{path}: {doc}");
        let post = http::raw(
            &svc.addr,
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(post.status, 405, "POST {path}");
    }
}

/// `serve` (or `check-config`) with this config: its exit status and stderr, waiting at most
/// [`PATIENCE`].
fn run_to_exit(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("awswhitelist {args:?} did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn a_public_bind_without_auth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &config,
        format!(
            "bind = \"0.0.0.0:0\"\nworkers = 1\n\n[log]\nformat = \"json\"\n\n[whitelist]\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    for command in [&["serve"][..], &["check-config"][..]] {
        let (code, stderr) = run_to_exit(command, &config);
        assert_eq!(code, Some(2), "{command:?}: {stderr}");
        assert!(stderr.contains("auth.enabled"), "{command:?} must name auth.enabled:\n{stderr}");
        assert!(stderr.contains("0.0.0.0"), "{command:?} must name the address:\n{stderr}");
        assert!(!stderr.contains("\"event\":\"listening\""), "{command:?} listened anyway:\n{stderr}");
    }
}

#[test]
fn a_public_bind_with_auth_serves_and_derives_the_resource_from_the_request() {
    // API keys only: no JWTs, so no audience is needed, and the resource URI (and its metadata
    // URL) are what the client asked for.
    let (key, entry) = keygen("edge", READ);
    let svc =
        Service::start(&format!("bind = \"0.0.0.0:0\"\nworkers = 2\n\n[auth]\nenabled = true\n\n{entry}"));
    let port = svc.addr.rsplit_once(':').unwrap().1;
    let addr = format!("127.0.0.1:{port}");
    let host = "mcp.example.test:8443";
    let send = |authorization: Option<&str>| {
        let mut req = format!("POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n");
        if let Some(a) = authorization {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{TOOLS_LIST}",
            TOOLS_LIST.len()
        ));
        http::raw(&addr, req.as_bytes()).unwrap()
    };
    let r = send(None);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer resource_metadata=\"http://mcp.example.test:8443/.well-known/oauth-protected-resource/mcp\"")
    );
    let r = send(Some(&format!("Bearer {key}")));
    assert_eq!(r.status, 200, "{r:?}");
    let req = format!(
        "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let doc = http::raw(&addr, req.as_bytes()).unwrap().json();
    assert_eq!(doc["resource"], json!("http://mcp.example.test:8443/mcp"), "{doc}");
    assert!(doc.get("authorization_servers").is_none(), "none configured, none published: {doc}");
}

/// The supervisor started by `systemd-socket-activate` on 0.0.0.0 adopts a public socket that
/// is in no `bind` list: with `[auth] enabled = false` it must refuse to start, naming the
/// setting and the address, and never answer the connection that woke it.
#[test]
fn auth_off_on_a_public_socket_from_systemd_is_refused() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};

    let Some(activate) = common::tool("AWSWL_SYSTEMD_SOCKET_ACTIVATE", "systemd-socket-activate", "systemd")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Loopback in `bind`, so the file alone passes validation: only the adopted socket is public.
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:0\"\nworkers = 1\n\n[log]\nformat = \"json\"\n\n[whitelist]\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(activate)
        .arg("-l")
        .arg(format!("0.0.0.0:{port}"))
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    struct KillGroup(i32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::SIGKILL);
        }
    }
    let _group = KillGroup(child.id() as i32);
    let stderr = Arc::new(Mutex::new(String::new()));
    let (listening_tx, listening_rx) = std::sync::mpsc::channel();
    let sink = stderr.clone();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.starts_with("Listening on") {
                let _ = listening_tx.send(());
            }
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    listening_rx.recv_timeout(PATIENCE).expect("systemd-socket-activate listens");

    // The first connection starts the service; the Host check alone would let this through.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TOOLS_LIST}",
        TOOLS_LIST.len()
    );
    conn.write_all(request.as_bytes()).unwrap();
    let answer = http::read_response(&mut conn).map(|r| r.status);

    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "serve kept running with auth off on 0.0.0.0:{port} (the request got {answer:?}):\n{}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains("auth.enabled"), "the refusal must name [auth] enabled:\n{text}");
    assert!(text.contains(&format!("0.0.0.0:{port}")), "the refusal must name the socket:\n{text}");
    assert!(!matches!(answer, Ok(200)), "the request was answered without authentication");
}

/// POST /mcp without credentials from `source` (a loopback address of the test's choosing), with
/// `X-Forwarded-Proto: https`; the challenge's metadata URL.
fn challenge_from(source: &str, addr: &str) -> String {
    use std::io::Write;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&format!("{source}:0").parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&addr.parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    let mut s: std::net::TcpStream = socket.into();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Forwarded-Proto: https\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TOOLS_LIST}",
        TOOLS_LIST.len()
    )
    .unwrap();
    let r = http::read_response(&mut s).unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    r.header("www-authenticate").unwrap_or_default().to_string()
}

#[test]
fn x_forwarded_proto_is_believed_only_from_a_trusted_proxy() {
    let (_key, entry) = keygen("proto", READ);
    let svc = Service::start(&format!(
        "workers = 1\nforwarded_allow_ips = [\"127.0.0.1\"]\n\n[auth]\nenabled = true\n\n{entry}"
    ));
    let trusted = challenge_from("127.0.0.1", &svc.addr);
    assert!(trusted.contains("resource_metadata=\"https://localhost/"), "from the proxy: {trusted}");
    let stranger = challenge_from("127.0.0.3", &svc.addr);
    assert!(
        stranger.contains("resource_metadata=\"http://localhost/"),
        "a client that is not a trusted proxy chose the scheme: {stranger}"
    );
}
