//! Issuing HS256 tokens with the configured shared secret (`awswhitelist token`), for
//! operators and tests; an identity provider does this in production.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use super::{load_hs_secret, AuthError, AuthSettings, SCOPES};

/// Longest lifetime `token` issues: long-lived machine credentials are API keys.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// What the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `sub`.
    pub subject: String,
    /// Granted scopes (joined into `scope`).
    pub scopes: Vec<String>,
    /// Lifetime (`exp` − `iat`).
    pub ttl: Duration,
    /// The groups claim (`auth.groups_claim`), if the token is to be restricted.
    pub security_groups: Option<Vec<String>>,
}

/// `"1h"`, `"30m"`, `"7d"`, `"90s"` or a plain number of seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let ttl = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 1h, 30m or 3600 ({e})"))?,
    };
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(format!("{text:?}: the lifetime must be between 1 second and 366 days"));
    }
    Ok(ttl)
}

/// Signs a token with the configured HS secret, with `iss` and `aud` from the settings and
/// `iat`, `nbf`, `exp` and a random `jti`.
pub fn issue_hs256(settings: &AuthSettings, request: &TokenRequest) -> Result<String, AuthError> {
    let bad = |key: &str, value: String, reason: &str| AuthError::Load {
        key: key.to_string(),
        value,
        reason: reason.to_string(),
    };
    if request.subject.trim().is_empty() {
        return Err(bad("sub", String::new(), "the subject must not be empty"));
    }
    if let Some(scope) = request.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(bad(
            "scope",
            format!("{scope:?}"),
            &format!("unknown scope; known: {}", SCOPES.join(", ")),
        ));
    }
    if request.ttl.is_zero() || request.ttl > MAX_TTL {
        return Err(bad("ttl", format!("{:?}", request.ttl), "must be between 1 second and 366 days"));
    }
    super::install_crypto_provider();
    let secret = load_hs_secret(settings)?.ok_or_else(|| {
        bad(
            "auth.hs_secret_file",
            String::new(),
            "no HS secret is configured: set hs_secret_file (or hs_secret_env) in [auth]",
        )
    })?;
    let now = jsonwebtoken::get_current_timestamp();
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti)
        .map_err(|_| bad("jti", String::new(), "the system random generator failed"))?;
    let mut claims = Map::new();
    if let Some(iss) = &settings.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    match settings.audience.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), json!(one));
        }
        many => {
            claims.insert("aud".into(), json!(many));
        }
    }
    claims.insert("sub".into(), json!(request.subject));
    claims.insert("scope".into(), json!(request.scopes.join(" ")));
    if let Some(groups) = &request.security_groups {
        claims.insert(settings.groups_claim.clone(), json!(groups));
    }
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + request.ttl.as_secs()));
    claims.insert("jti".into(), json!(URL_SAFE_NO_PAD.encode(jti)));
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, &Value::Object(claims), &EncodingKey::from_secret(&secret))
        .map_err(|e| bad("auth.hs_secret_file", String::new(), &format!("cannot sign: {e}")))
}
