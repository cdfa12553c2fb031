//! The token table: every case gets the right status, error code, description and
//! `WWW-Authenticate`. Keys are generated at test time with aws-lc-rs (already built for
//! rustls and the AWS SDK; nothing committed, no extra crates).

use std::path::PathBuf;
use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const ISS: &str = "https://issuer.example";
const AUD: &str = "https://mcp.example.com/mcp";
const META: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
/// As long as [`SECRET`], and not it.
const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210-test-secret";

fn pem(tag: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ascii")).collect();
    format!("-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n", lines.join("\n"))
}

/// Key pairs made once per test binary: (signing key, public key PEM).
struct Keys {
    rsa: (EncodingKey, String),
    ec: (EncodingKey, String),
    ed: (EncodingKey, String),
    dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let rsa_private = pem("PRIVATE KEY", rsa.as_der().unwrap().as_ref());
        let rsa_public = pem("PUBLIC KEY", rsa.public_key().as_der().unwrap().as_ref());
        let ec_doc = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_doc.as_ref()).unwrap();
        let ec_public = pem("PUBLIC KEY", ec.public_key().as_der().unwrap().as_ref());
        let ed = Ed25519KeyPair::generate().unwrap();
        let ed_pkcs8 = ed.to_pkcs8v1().unwrap();
        let ed_public = pem("PUBLIC KEY", ed.public_key().as_der().unwrap().as_ref());
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("rsa.pem", &rsa_public), ("ec.pem", &ec_public), ("ed.pem", &ed_public)] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("rsa-private.pem"), &rsa_private).unwrap();
        std::fs::write(dir.path().join("secret"), [SECRET, b"\n"].concat()).unwrap();
        Keys {
            rsa: (EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap(), rsa_public),
            ec: (EncodingKey::from_ec_der(ec_doc.as_ref()), ec_public),
            ed: (EncodingKey::from_ed_der(ed_pkcs8.as_ref()), ed_public),
            dir,
        }
    })
}

fn file(name: &str) -> PathBuf {
    keys().dir.path().join(name)
}

fn settings() -> AuthSettings {
    AuthSettings {
        enabled: true,
        issuer: Some(ISS.into()),
        audience: vec![AUD.into()],
        hs_secret_file: Some(file("secret")),
        public_keys: vec![
            PublicKeyConfig {
                kid: Some("rsa-1".into()),
                algorithm: "RS256".into(),
                pem_file: file("rsa.pem"),
            },
            PublicKeyConfig { kid: Some("ec-1".into()), algorithm: "ES256".into(), pem_file: file("ec.pem") },
            PublicKeyConfig { kid: Some("ed-1".into()), algorithm: "EdDSA".into(), pem_file: file("ed.pem") },
        ],
        api_keys: vec![ApiKeyConfig {
            id: "ci".into(),
            hash: apikey::hash(&api_key()),
            scopes: vec![SCOPE_READ.into()],
            security_groups: vec!["sg-0abc*".into()],
            read_only: false,
        }],
        ..AuthSettings::default()
    }
}

/// A fixed, well-formed key for the `ci` entry.
fn api_key() -> String {
    format!("{}ci_{}", apikey::PREFIX, URL_SAFE_NO_PAD.encode([7u8; 32]))
}

fn now() -> i64 {
    get_current_timestamp() as i64
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alice",
        "scope": "whitelist:read whitelist:write",
        "iat": now(), "exp": now() + 600,
    })
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => &EncodingKey::from_secret(SECRET),
        Algorithm::RS256 | Algorithm::PS256 => &keys().rsa.0,
        Algorithm::ES256 => &keys().ec.0,
        Algorithm::EdDSA => &keys().ed.0,
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, claims, key).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token with a hand-made header and signature.
fn raw(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(&header), b64(claims))
}

fn hmac(alg: aws_lc_rs::hmac::Algorithm, secret: &[u8], message: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(alg, secret);
    URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, message.as_bytes()))
}

#[derive(Debug)]
enum Expect {
    /// Authenticated as this subject with these scopes.
    Ok(&'static str, &'static [&'static str]),
    /// 401 without an error code.
    Missing,
    /// 401 `invalid_token` with this reason.
    Invalid(InvalidToken),
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

fn cases() -> Vec<(&'static str, Option<String>, Expect)> {
    use Expect::*;
    use InvalidToken as I;
    let rw: &[&str] = &[SCOPE_READ, SCOPE_WRITE];
    let c = claims();
    let hs_header = json!({"alg": "HS256", "typ": "JWT"});
    // The classic confusion: HS256 "signed" with the RSA public key's PEM as the secret.
    let confused = hs_with_the_rsa_public_key(Some("rsa-1"), &c);
    let tampered = {
        let token =
            sign(Algorithm::RS256, Some("rsa-1"), &with(c.clone(), json!({"scope": "whitelist:read"})));
        let parts: Vec<&str> = token.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&c), parts[2])
    };
    let key = api_key();
    let other_id = key.replacen("awsk_ci_", "awsk_cd_", 1);
    let mut wrong_secret = key.clone();
    wrong_secret.replace_range(wrong_secret.len() - 1.., "A");
    vec![
        ("valid HS256", bearer(&sign(Algorithm::HS256, None, &c)), Ok("alice", rw)),
        ("valid HS512", bearer(&sign(Algorithm::HS512, None, &c)), Ok("alice", rw)),
        ("valid RS256 by kid", bearer(&sign(Algorithm::RS256, Some("rsa-1"), &c)), Ok("alice", rw)),
        ("valid RS256 without kid", bearer(&sign(Algorithm::RS256, None, &c)), Ok("alice", rw)),
        ("valid ES256", bearer(&sign(Algorithm::ES256, Some("ec-1"), &c)), Ok("alice", rw)),
        ("valid EdDSA", bearer(&sign(Algorithm::EdDSA, Some("ed-1"), &c)), Ok("alice", rw)),
        ("lowercase scheme", Some(format!("bearer {}", sign(Algorithm::HS256, None, &c))), Ok("alice", rw)),
        (
            "aud as a list",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"aud": ["other", AUD]})))),
            Ok("alice", rw),
        ),
        (
            "scp list instead of scope",
            bearer(&sign(
                Algorithm::HS256,
                None,
                &with(c.clone(), json!({"scope": null, "scp": [SCOPE_READ]})),
            )),
            Ok("alice", &[SCOPE_READ]),
        ),
        (
            "missing scope claim: no scopes",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"scope": null})))),
            Ok("alice", &[]),
        ),
        (
            "client_id when there is no sub",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"sub": null, "client_id": "bot"})))),
            Ok("bot", rw),
        ),
        (
            "expired",
            bearer(&sign(Algorithm::RS256, Some("rsa-1"), &with(c.clone(), json!({"exp": now() - 120})))),
            Invalid(I::Expired),
        ),
        (
            "exp within leeway",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"exp": now() - 10})))),
            Ok("alice", rw),
        ),
        (
            "not yet valid",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"nbf": now() + 300})))),
            Invalid(I::NotYetValid),
        ),
        (
            "nbf within leeway",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"nbf": now() + 10})))),
            Ok("alice", rw),
        ),
        (
            "wrong iss",
            bearer(&sign(
                Algorithm::ES256,
                Some("ec-1"),
                &with(c.clone(), json!({"iss": "https://evil.example"})),
            )),
            Invalid(I::WrongIssuer),
        ),
        (
            "missing iss",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"iss": null})))),
            Invalid(I::MissingClaim("iss")),
        ),
        (
            "wrong aud",
            bearer(&sign(
                Algorithm::HS256,
                None,
                &with(c.clone(), json!({"aud": "https://other.example/mcp"})),
            )),
            Invalid(I::WrongAudience),
        ),
        (
            "missing aud",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"aud": null})))),
            Invalid(I::MissingClaim("aud")),
        ),
        (
            "missing exp",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"exp": null})))),
            Invalid(I::MissingClaim("exp")),
        ),
        (
            "no sub nor client_id",
            bearer(&sign(Algorithm::HS256, None, &with(c.clone(), json!({"sub": null})))),
            Invalid(I::MissingClaim("sub")),
        ),
        (
            "alg none",
            bearer(&raw(json!({"alg": "none"}), &c, "")),
            Invalid(I::AlgorithmNotAccepted("none".into())),
        ),
        (
            "alg None with a signature",
            bearer(&raw(json!({"alg": "None", "typ": "JWT"}), &c, "c2ln")),
            Invalid(I::AlgorithmNotAccepted("none".into())),
        ),
        (
            "unsupported alg",
            bearer(&raw(json!({"alg": "ES512"}), &c, "c2ln")),
            Invalid(I::AlgorithmNotAccepted("ES512".into())),
        ),
        ("HS256 signed with the RS public key PEM", bearer(&confused), Invalid(I::BadSignature)),
        (
            "RS256 token naming the EC key",
            bearer(&sign(Algorithm::RS256, Some("ec-1"), &c)),
            Invalid(I::AlgorithmNotAccepted("RS256".into())),
        ),
        (
            "PS256 with a key pinned to RS256",
            bearer(&sign(Algorithm::PS256, Some("rsa-1"), &c)),
            Invalid(I::AlgorithmNotAccepted("PS256".into())),
        ),
        ("unknown kid", bearer(&sign(Algorithm::RS256, Some("rsa-9"), &c)), Invalid(I::UnknownKey)),
        ("tampered payload", bearer(&tampered), Invalid(I::BadSignature)),
        (
            "HS256 signed with another secret",
            bearer(
                &encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(OTHER_SECRET)).unwrap(),
            ),
            Invalid(I::BadSignature),
        ),
        ("empty signature", bearer(&raw(hs_header.clone(), &c, "")), Invalid(I::BadSignature)),
        (
            "two parts",
            bearer(&format!("{}.{}", b64(&hs_header), b64(&c))),
            Invalid(I::Malformed("not a JWT (three base64url parts separated by dots)")),
        ),
        (
            "four parts",
            bearer(&format!("{}.x", sign(Algorithm::HS256, None, &c))),
            Invalid(I::Malformed("not a JWT (three base64url parts separated by dots)")),
        ),
        ("bad base64 header", bearer("e30*!.e30.c2ln"), Invalid(I::Malformed("the header is not base64url"))),
        (
            "header not JSON",
            bearer(&format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("not json"))),
            Invalid(I::Malformed("the header is not a JSON object")),
        ),
        (
            "critical header",
            bearer(&raw(json!({"alg": "HS256", "crit": ["exp"]}), &c, "c2ln")),
            Invalid(I::Malformed("the header has critical extensions (crit), none supported")),
        ),
        ("no header", None, Missing),
        ("Basic scheme", Some("Basic YWxpY2U6c2VjcmV0".into()), Missing),
        ("scheme only", Some("Bearer".into()), Invalid(I::Empty)),
        ("empty token", Some("Bearer    ".into()), Invalid(I::Empty)),
        ("API key", bearer(&key), Ok("ci", &[SCOPE_READ])),
        ("API key, wrong secret", bearer(&wrong_secret), Invalid(I::UnknownApiKey)),
        ("API key, other id", bearer(&other_id), Invalid(I::UnknownApiKey)),
        ("API key, malformed", bearer("awsk_ci_short"), Invalid(I::Malformed("not a well-formed API key"))),
    ]
}

fn auth() -> Authenticator {
    Authenticator::load(&settings()).expect("test settings load")
}

#[tokio::test]
async fn token_table() {
    let auth = auth();
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (name, header, expect) in cases {
        let got = auth.authenticate(header.as_deref()).await;
        let ok = match (&expect, &got) {
            (Expect::Ok(sub, scopes), Ok(p)) => {
                p.subject == *sub && p.scopes.iter().map(String::as_str).eq(scopes.iter().copied())
            }
            (Expect::Missing, Err(d @ Denial::Missing)) => {
                d.status() == 401
                    && auth.www_authenticate(d, META) == format!("Bearer resource_metadata=\"{META}\"")
            }
            (Expect::Invalid(reason), Err(d @ Denial::InvalidToken(got))) => {
                let header = auth.www_authenticate(d, META);
                got == reason
                    && d.status() == 401
                    && header
                        == format!(
                            "Bearer resource_metadata=\"{META}\", error=\"invalid_token\", \
                             error_description=\"{}\"",
                            reason.description()
                        )
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn descriptions_never_echo_the_token() {
    let auth = auth();
    let token = sign(Algorithm::HS256, None, &with(claims(), json!({"exp": now() - 999})));
    let denial = auth.authenticate(bearer(&token).as_deref()).await.unwrap_err();
    let header = auth.www_authenticate(&denial, META);
    assert!(header.contains("the token has expired"), "{header}");
    for part in token.split('.') {
        assert!(!header.contains(part));
    }
    let evil = raw(json!({"alg": "\"\\, x=\"y"}), &claims(), "c2ln");
    let denial = auth.authenticate(bearer(&evil).as_deref()).await.unwrap_err();
    let header = auth.www_authenticate(&denial, META);
    assert_eq!(header.matches('"').count(), 6, "{header}");
}

#[tokio::test]
async fn scopes_and_groups() {
    let auth = auth();
    let read_only = sign(
        Algorithm::HS256,
        None,
        &with(claims(), json!({"scope": "whitelist:read", "security_groups": ["sg-01", "sg-0abc*"]})),
    );
    let p = auth.authenticate(bearer(&read_only).as_deref()).await.unwrap();
    assert_eq!(p.kind, PrincipalKind::Jwt);
    assert_eq!(p.identity(), "jwt:alice");
    assert!(p.may(SCOPE_READ) && !p.may(SCOPE_WRITE));
    assert_eq!(p.require(Some(SCOPE_READ)), Ok(()));
    let denial = p.require(Some(SCOPE_WRITE)).unwrap_err();
    assert_eq!(denial, Denial::InsufficientScope { scope: SCOPE_WRITE });
    assert_eq!(denial.status(), 403);
    assert_eq!(
        auth.www_authenticate(&denial, META),
        format!(
            "Bearer resource_metadata=\"{META}\", error=\"insufficient_scope\", scope=\"whitelist:write\", \
             error_description=\"this call needs the scope whitelist:write\""
        )
    );
    assert_eq!(p.security_groups.as_deref(), Some(&["sg-01".to_string(), "sg-0abc*".to_string()][..]));
    assert!(
        p.caller(true, None, &"r".into()).may_touch_group("sg-01")
            && p.caller(true, None, &"r".into()).may_touch_group("sg-0abc123")
    );
    assert!(!p.caller(true, None, &"r".into()).may_touch_group("sg-02"));

    let no_scope = sign(
        Algorithm::HS256,
        None,
        &with(claims(), json!({"scope": null, "security_groups": "sg-1, sg-2"})),
    );
    let p = auth.authenticate(bearer(&no_scope).as_deref()).await.unwrap();
    assert!(p.scopes.is_empty());
    assert_eq!(p.require(Some(SCOPE_READ)), Err(Denial::InsufficientScope { scope: SCOPE_READ }));
    assert_eq!(p.security_groups, Some(vec!["sg-1".to_string(), "sg-2".to_string()]));

    let key = auth.authenticate(bearer(&api_key()).as_deref()).await.unwrap();
    assert_eq!((key.kind, key.identity().as_str()), (PrincipalKind::ApiKey, "key:ci"));
    assert!(
        key.caller(true, None, &"r".into()).may_touch_group("sg-0abcdef")
            && !key.caller(true, None, &"r".into()).may_touch_group("sg-1")
    );

    let bad_groups = sign(Algorithm::HS256, None, &with(claims(), json!({"security_groups": {"a": 1}})));
    assert!(matches!(
        auth.authenticate(bearer(&bad_groups).as_deref()).await,
        Err(Denial::InvalidToken(InvalidToken::Malformed(_)))
    ));
}

#[test]
fn a_scope_is_required_only_when_not_granted() {
    let reader = Principal { scopes: [SCOPE_READ.to_string()].into(), ..Principal::anonymous() };
    assert_eq!(reader.require(None), Ok(()));
    assert_eq!(reader.require(Some(SCOPE_READ)), Ok(()));
    assert_eq!(reader.require(Some(SCOPE_WRITE)), Err(Denial::InsufficientScope { scope: SCOPE_WRITE }));
    let caller = Authenticated::new(reader.clone()).caller(true, None, &"r1".into());
    assert!(caller.has_scope(SCOPE_READ) && !caller.has_scope(SCOPE_WRITE));
    assert_eq!(caller.identity.as_deref(), Some("anonymous"));
    // A token is read-only by its scope set; a key also by its own `read_only`.
    assert_eq!(caller.read_only.as_deref(), Some("its scopes do not include whitelist:write"));
    let writer =
        Principal { scopes: [SCOPE_READ.to_string(), SCOPE_WRITE.to_string()].into(), ..reader.clone() };
    assert_eq!(Authenticated::new(writer.clone()).caller(true, None, &"r1".into()).read_only, None);
    let key = Principal { subject: "ci".into(), kind: PrincipalKind::ApiKey, read_only: true, ..writer };
    let setting = Authenticated::new(key).caller(true, None, &"r1".into()).read_only.unwrap_or_default();
    assert!(setting.contains("[[auth.api_keys]] entry with id \"ci\""), "{setting}");
    // With authentication off, nothing is restricted and nobody is named.
    let open = Authenticated::new(reader).caller(false, None, &"r1".into());
    assert!(open.has_scope(SCOPE_WRITE) && open.identity.is_none() && open.read_only.is_none());
}

/// An HS256 token whose "secret" is the configured RSA public key, as PEM text (the classic
/// algorithm confusion: a verifier that feeds the key it has to whatever `alg` says).
fn hs_with_the_rsa_public_key(kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": "HS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let unsigned = format!("{}.{}", b64(&header), b64(claims));
    format!("{unsigned}.{}", hmac(aws_lc_rs::hmac::HMAC_SHA256, keys().rsa.1.as_bytes(), &unsigned))
}

#[tokio::test]
async fn rsa_public_key_never_doubles_as_an_hmac_secret() {
    // HS256 is accepted here: a secret is configured, and a token signed with it passes.
    let auth = auth();
    let genuine = sign(Algorithm::HS256, None, &claims());
    assert_eq!(
        auth.authenticate(bearer(&genuine).as_deref()).await.map(|p| p.subject.clone()),
        Ok("alice".into())
    );
    // The same claims with the RSA public key as the HMAC key: refused for its signature, with
    // or without the RSA key's kid.
    for kid in [None, Some("rsa-1")] {
        let forged = hs_with_the_rsa_public_key(kid, &claims());
        assert_eq!(
            auth.authenticate(bearer(&forged).as_deref()).await,
            Err(Denial::InvalidToken(InvalidToken::BadSignature)),
            "kid {kid:?}"
        );
    }
}

#[tokio::test]
async fn hs_tokens_refused_without_a_secret() {
    let mut s = settings();
    s.hs_secret_file = None;
    let auth = Authenticator::load(&s).unwrap();
    let token = sign(Algorithm::HS256, None, &claims());
    assert_eq!(
        auth.authenticate(bearer(&token).as_deref()).await,
        Err(Denial::InvalidToken(InvalidToken::AlgorithmNotAccepted("HS256".into())))
    );
    // Nor one made with the RSA public key's PEM as the secret.
    assert_eq!(
        auth.authenticate(bearer(&hs_with_the_rsa_public_key(None, &claims())).as_deref()).await,
        Err(Denial::InvalidToken(InvalidToken::AlgorithmNotAccepted("HS256".into())))
    );
    assert!(auth
        .authenticate(bearer(&sign(Algorithm::EdDSA, Some("ed-1"), &claims())).as_deref())
        .await
        .is_ok());
}

#[tokio::test]
async fn disabled_means_anonymous() {
    let auth = Authenticator::load(&AuthSettings::default()).unwrap();
    assert!(!auth.enabled());
    let p = auth.authenticate(None).await.unwrap();
    assert_eq!(p.kind, PrincipalKind::Anonymous);
    assert!(p.may(SCOPE_WRITE) && p.caller(true, None, &"r".into()).may_touch_group("sg-1"));
}

#[test]
fn load_errors_name_the_key() {
    let mut s = settings();
    s.hs_secret_file = Some(file("no-such-secret"));
    let e = Authenticator::load(&s).unwrap_err().to_string();
    assert!(
        e.starts_with("auth.hs_secret_file = ") && e.contains("no-such-secret") && e.contains("cannot read"),
        "{e}"
    );

    let mut s = settings();
    s.public_keys[1].pem_file = file("missing.pem");
    let e = Authenticator::load(&s).unwrap_err().to_string();
    assert!(e.starts_with("auth.public_keys[1].pem_file = ") && e.contains("missing.pem"), "{e}");

    let mut s = settings();
    s.public_keys[0].pem_file = file("rsa-private.pem");
    let e = Authenticator::load(&s).unwrap_err().to_string();
    assert!(e.contains("this is a private key"), "{e}");

    let mut s = settings();
    s.public_keys[0].pem_file = file("ec.pem");
    let e = Authenticator::load(&s).unwrap_err().to_string();
    assert!(e.contains("not a RS256 public key"), "{e}");

    let short = file("short-secret");
    std::fs::write(&short, "too short\n").unwrap();
    let mut s = settings();
    s.hs_secret_file = Some(short);
    let e = Authenticator::load(&s).unwrap_err().to_string();
    assert!(e.contains("the secret is 9 bytes") && !e.contains("too short"), "{e}");

    let mut s = settings();
    s.hs_secret_file = None;
    s.hs_secret_env = Some("AWSWHITELIST_TEST_CERTAINLY_UNSET_VARIABLE".into());
    let e = Authenticator::load(&s).unwrap_err().to_string();
    assert!(e.contains("AWSWHITELIST_TEST_CERTAINLY_UNSET_VARIABLE") && e.contains("not set"), "{e}");
}

#[test]
fn validation_names_keys() {
    assert_eq!(AuthSettings::default().validate(), Ok(()));
    assert_eq!(settings().validate(), Ok(()));
    let s = AuthSettings {
        enabled: true,
        issuer: Some(" ".into()),
        leeway_seconds: 3600,
        hs_secret_file: Some("/x".into()),
        hs_secret_env: Some("X".into()),
        public_keys: vec![
            PublicKeyConfig { kid: Some("a".into()), algorithm: "HS256".into(), pem_file: "/a".into() },
            PublicKeyConfig { kid: Some("a".into()), algorithm: "RS256".into(), pem_file: "/b".into() },
        ],
        jwks_url: Some("http://idp.example.com/jwks".into()),
        jwks_timeout: 0.0,
        api_keys: vec![
            ApiKeyConfig {
                id: "a_b".into(),
                hash: "md5:00".into(),
                scopes: vec!["admin".into()],
                security_groups: vec![],
                read_only: false,
            },
            ApiKeyConfig {
                id: "ok".into(),
                hash: apikey::hash("x"),
                scopes: vec![],
                security_groups: vec![],
                read_only: false,
            },
            ApiKeyConfig {
                id: "ok".into(),
                hash: apikey::hash("y"),
                scopes: vec![],
                security_groups: vec![],
                read_only: false,
            },
        ],
        groups_claim: "".into(),
        resource_metadata_url: Some("ftp://x".into()),
        ..AuthSettings::default()
    };
    let keys: Vec<String> = s.validate().unwrap_err().into_iter().map(|p| p.key).collect();
    for expected in [
        "auth.issuer",
        "auth.audience",
        "auth.leeway_seconds",
        "auth.hs_secret_env",
        "auth.public_keys[0].algorithm",
        "auth.public_keys[1].kid",
        "auth.jwks_url",
        "auth.jwks_timeout",
        "auth.api_keys[0].id",
        "auth.api_keys[0].hash",
        "auth.api_keys[0].scopes",
        "auth.api_keys[2].id",
        "auth.groups_claim",
        "auth.resource_metadata_url",
    ] {
        assert!(keys.iter().any(|k| k == expected), "{expected} not in {keys:?}");
    }
    let nothing = AuthSettings { enabled: true, ..AuthSettings::default() };
    assert_eq!(nothing.validate().unwrap_err()[0].key, "auth.enabled");
    let loopback =
        AuthSettings { jwks_url: Some("http://127.0.0.1:9/jwks".into()), ..AuthSettings::default() };
    assert_eq!(loopback.validate(), Ok(()));
    let e =
        serde_json::from_value::<AuthSettings>(json!({"enabled": true, "bogus": 1})).unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn api_keys_round_trip() {
    let made = apikey::generate("deploy-bot").unwrap();
    assert!(made.key.starts_with("awsk_deploy-bot_") && made.key.len() == "awsk_deploy-bot_".len() + 43);
    assert_eq!(made.hash, apikey::hash(&made.key));
    assert!(apikey::parse_hash(&made.hash).is_some());
    assert!(!format!("{made:?}").contains(&made.key));
    assert_ne!(apikey::generate("deploy-bot").unwrap().key, made.key);
    assert!(apikey::generate("bad_id").is_err());
    assert!(apikey::random_id().unwrap().starts_with("key-"));
    let keys = apikey::ApiKeys::new(&[ApiKeyConfig {
        id: made.id.clone(),
        hash: made.hash.clone(),
        scopes: vec![SCOPE_WRITE.into()],
        security_groups: vec![],
        read_only: false,
    }]);
    let p = keys.verify(&made.key).unwrap();
    assert_eq!((p.subject.as_str(), p.security_groups.clone()), ("deploy-bot", None));
    assert!(p.may(SCOPE_WRITE));
}

#[tokio::test]
async fn issued_tokens_verify() {
    let s = settings();
    let request = TokenRequest {
        subject: "ops".into(),
        scopes: vec![SCOPE_READ.into(), SCOPE_WRITE.into()],
        ttl: parse_ttl("1h").unwrap(),
        security_groups: Some(vec!["sg-1".into()]),
    };
    let token = issue_hs256(&s, &request).unwrap();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some(ISS), Some(AUD)));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
    let p = auth().authenticate(bearer(&token).as_deref()).await.unwrap();
    assert_eq!(p.subject, "ops");
    assert!(p.may(SCOPE_WRITE));
    assert_eq!(p.security_groups, Some(vec!["sg-1".to_string()]));

    assert!(issue_hs256(&s, &TokenRequest { scopes: vec!["admin".into()], ..request.clone() }).is_err());
    let no_secret = AuthSettings { hs_secret_file: None, ..s };
    assert!(issue_hs256(&no_secret, &request).unwrap_err().to_string().contains("no HS secret"));
    assert_eq!(parse_ttl("90").unwrap().as_secs(), 90);
    assert_eq!(parse_ttl("30m").unwrap().as_secs(), 1800);
    assert!(parse_ttl("0s").is_err() && parse_ttl("soon").is_err() && parse_ttl("400d").is_err());
}

#[test]
fn metadata() {
    let auth = Authenticator::load(&AuthSettings {
        authorization_servers: vec!["https://idp.example".into()],
        ..settings()
    })
    .unwrap();
    assert_eq!(
        auth.protected_resource_metadata(AUD),
        json!({
            "resource": AUD,
            "authorization_servers": ["https://idp.example"],
            "scopes_supported": ["whitelist:read", "whitelist:write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "awswhitelist",
        })
    );
    assert_eq!(auth.resource_metadata_url().as_deref(), Some(META));
    assert_eq!(
        metadata_url_for("http://127.0.0.1:8080").as_deref(),
        Some("http://127.0.0.1:8080/.well-known/oauth-protected-resource")
    );
    assert_eq!(metadata_url_for("urn:x"), None);
    assert!(!format!("{auth:?}").contains("0123456789abcdef"));
}

#[test]
fn jwks_documents() {
    let rsa = jsonwebtoken::jwk::Jwk::from_encoding_key(&keys().rsa.0, Algorithm::RS256).unwrap();
    let mut doc = json!({"keys": [
        rsa.clone(),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
        {"kty": "weird"},
    ]});
    doc["keys"][0]["kid"] = json!("r1");
    let keys = jwks::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
    assert_eq!(keys.len(), 1, "only the RSA signing key is usable");
    assert_eq!(
        (keys[0].kid.as_deref(), keys[0].algorithms.as_slice()),
        (Some("r1"), &[Algorithm::RS256][..])
    );
    assert!(jwks::parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
    assert!(jwks::parse(b"[]").is_err());
}
