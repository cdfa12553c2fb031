//! The `[auth]` section: which credentials are accepted and what a token must say.
//!
//! Plain data, checked by [`AuthSettings::validate`]; secrets never live here, only where to
//! read them (a file or an environment variable), and only [`super::Authenticator::load`]
//! reads them.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::apikey::{self, ApiKeyConfig};
use super::SCOPES;
use crate::settings::problem::Problem;

/// Asymmetric algorithms a configured public key may be pinned to.
pub const PUBLIC_KEY_ALGORITHMS: [&str; 9] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// The authentication part of the configuration (`[auth]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Require a credential on every MCP request. Off only on a loopback bind (the server
    /// enforces that, not this struct).
    pub enabled: bool,
    /// The `iss` every JWT must carry; `None` accepts any issuer the keys vouch for (refused
    /// with `jwks_url`: a JWKS vouches for every token its issuer mints, for any service).
    pub issuer: Option<String>,
    /// Accepted `aud` values: the server's canonical resource URI (e.g.
    /// `https://mcp.example.com/mcp`). Required whenever JWTs are accepted.
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// File holding the HS256/384/512 shared secret (trailing whitespace ignored).
    pub hs_secret_file: Option<PathBuf>,
    /// Name of the environment variable holding the HS shared secret (never its value).
    pub hs_secret_env: Option<String>,
    /// Public keys for RS*/PS*/ES*/EdDSA tokens, each pinned to one algorithm.
    pub public_keys: Vec<PublicKeyConfig>,
    /// JWKS document of an OIDC/OAuth issuer (`https://`, or `http://` on loopback only).
    pub jwks_url: Option<String>,
    /// Seconds a fetched JWKS is used before it is fetched again.
    pub jwks_cache_seconds: f64,
    /// Seconds one JWKS fetch may take.
    pub jwks_timeout: f64,
    /// Least seconds between two JWKS fetches, whatever unknown `kid`s arrive (so a flood of
    /// made-up key ids cannot make the server hammer the issuer).
    pub jwks_min_refresh_seconds: f64,
    /// Static API keys for machine clients, stored as hashes only (`awswhitelist keygen`).
    pub api_keys: Vec<ApiKeyConfig>,
    /// JWT claim listing the security groups (ids or `sg-0abc*` patterns) the caller may touch;
    /// absent in a token = no restriction beyond the policy.
    pub groups_claim: String,
    /// URL of the protected resource metadata document, when it cannot be derived from the
    /// audience (RFC 9728); sent in `WWW-Authenticate`.
    pub resource_metadata_url: Option<String>,
    /// Authorization servers advertised in the protected resource metadata.
    pub authorization_servers: Vec<String>,
}

/// One public key file, pinned to the one algorithm it may verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The `kid` tokens signed with this key carry; `None` = tried for tokens without a `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// One of [`PUBLIC_KEY_ALGORITHMS`].
    pub algorithm: String,
    /// PEM file with the public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    pub pem_file: PathBuf,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: false,
            issuer: None,
            audience: Vec::new(),
            leeway_seconds: 30,
            hs_secret_file: None,
            hs_secret_env: None,
            public_keys: Vec::new(),
            jwks_url: None,
            jwks_cache_seconds: 300.0,
            jwks_timeout: 5.0,
            jwks_min_refresh_seconds: 10.0,
            api_keys: Vec::new(),
            groups_claim: "security_groups".to_string(),
            resource_metadata_url: None,
            authorization_servers: Vec::new(),
        }
    }
}

impl AuthSettings {
    /// Whether any JWT key source (shared secret, public key, JWKS) is configured.
    pub fn accepts_jwts(&self) -> bool {
        self.hs_secret_file.is_some()
            || self.hs_secret_env.is_some()
            || !self.public_keys.is_empty()
            || self.jwks_url.is_some()
    }

    /// Checks what serde cannot, without touching files or the environment; returns every
    /// problem found, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, value: String, reason: &str| {
            problems.push(Problem { key: key.to_string(), value, reason: reason.to_string() })
        };
        if let Some(iss) = &self.issuer {
            if iss.trim().is_empty() {
                bad("auth.issuer", format!("{iss:?}"), "must not be empty (leave it out to accept any)");
            }
        }
        for aud in &self.audience {
            if aud.trim().is_empty() {
                bad("auth.audience", format!("{aud:?}"), "entries must not be empty");
            }
        }
        if self.enabled && self.accepts_jwts() && self.audience.is_empty() {
            bad(
                "auth.audience",
                "[]".into(),
                "JWTs are accepted, so the audience must be set: the server's canonical resource \
                 URI, e.g. [\"https://mcp.example.com/mcp\"] (tokens minted for other services \
                 must not work here)",
            );
        }
        if self.enabled && self.jwks_url.is_some() && self.issuer.is_none() {
            bad(
                "auth.issuer",
                "(unset)".into(),
                "auth.jwks_url is set, so the issuer must be too: the `iss` its tokens carry \
                 (the `issuer` of its OIDC discovery document, e.g. \"https://login.example.com/\")",
            );
        }
        if self.leeway_seconds > 300 {
            bad("auth.leeway_seconds", self.leeway_seconds.to_string(), "must be at most 300");
        }
        if self.hs_secret_file.is_some() && self.hs_secret_env.is_some() {
            bad("auth.hs_secret_env", String::new(), "set hs_secret_file or hs_secret_env, not both");
        }
        if let Some(var) = &self.hs_secret_env {
            if var.is_empty() || var.contains(['=', '\0']) {
                bad("auth.hs_secret_env", format!("{var:?}"), "must be the name of an environment variable");
            }
        }
        let mut kids = HashSet::new();
        for (i, k) in self.public_keys.iter().enumerate() {
            if !PUBLIC_KEY_ALGORITHMS.contains(&k.algorithm.as_str()) {
                bad(
                    &format!("auth.public_keys[{i}].algorithm"),
                    format!("{:?}", k.algorithm),
                    &format!("must be one of {}", PUBLIC_KEY_ALGORITHMS.join(", ")),
                );
            }
            if let Some(kid) = &k.kid {
                if kid.is_empty() {
                    bad(&format!("auth.public_keys[{i}].kid"), "\"\"".into(), "must not be empty");
                } else if !kids.insert(kid.as_str()) {
                    bad(&format!("auth.public_keys[{i}].kid"), format!("{kid:?}"), "is used twice");
                }
            }
            if k.pem_file.as_os_str().is_empty() {
                bad(&format!("auth.public_keys[{i}].pem_file"), "\"\"".into(), "must name a PEM file");
            }
        }
        if let Some(url) = &self.jwks_url {
            if let Err(reason) = check_fetch_url(url) {
                bad("auth.jwks_url", format!("{url:?}"), &reason);
            }
        }
        for (key, v, min, max) in [
            ("auth.jwks_cache_seconds", self.jwks_cache_seconds, 1.0, 86_400.0),
            ("auth.jwks_timeout", self.jwks_timeout, 0.1, 60.0),
            ("auth.jwks_min_refresh_seconds", self.jwks_min_refresh_seconds, 0.0, 3_600.0),
        ] {
            if !v.is_finite() || v < min || v > max {
                bad(key, v.to_string(), &format!("must be a number of seconds between {min} and {max}"));
            }
        }
        let mut ids = HashSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            if !apikey::valid_id(&k.id) {
                bad(
                    &format!("auth.api_keys[{i}].id"),
                    format!("{:?}", k.id),
                    "must be 1 to 64 letters, digits, '.' or '-'",
                );
            } else if !ids.insert(k.id.as_str()) {
                bad(&format!("auth.api_keys[{i}].id"), format!("{:?}", k.id), "is used twice");
            }
            if apikey::parse_hash(&k.hash).is_none() {
                bad(
                    &format!("auth.api_keys[{i}].hash"),
                    format!("{:?}", k.hash),
                    "must be sha256:<64 hex digits>, as `awswhitelist keygen` prints it",
                );
            }
            for s in &k.scopes {
                if !SCOPES.contains(&s.as_str()) {
                    bad(
                        &format!("auth.api_keys[{i}].scopes"),
                        format!("{s:?}"),
                        &format!("unknown scope; known: {}", SCOPES.join(", ")),
                    );
                }
            }
            if k.security_groups.iter().any(|g| g.trim().is_empty()) {
                bad(
                    &format!("auth.api_keys[{i}].security_groups"),
                    String::new(),
                    "entries must not be empty",
                );
            }
        }
        if self.groups_claim.trim().is_empty() {
            bad("auth.groups_claim", "\"\"".into(), "must name a claim");
        }
        if let Some(url) = &self.resource_metadata_url {
            if !is_http_url(url) {
                bad("auth.resource_metadata_url", format!("{url:?}"), "must be an http:// or https:// URL");
            }
        }
        for url in &self.authorization_servers {
            if !is_http_url(url) {
                bad("auth.authorization_servers", format!("{url:?}"), "must be an http:// or https:// URL");
            }
        }
        if self.enabled && !self.accepts_jwts() && self.api_keys.is_empty() {
            bad(
                "auth.enabled",
                "true".into(),
                "no credential is configured: set hs_secret_file/hs_secret_env, public_keys, \
                 jwks_url or api_keys",
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn is_http_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && !rest.is_empty())
}

/// A URL the server fetches keys from: `https://`, or `http://` to a loopback host.
pub(super) fn check_fetch_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err("must be https:// (plain http:// only to a loopback address)".into()),
        _ => Err("must be an https:// URL".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_needs_an_issuer() {
        let jwks = AuthSettings {
            enabled: true,
            audience: vec!["https://mcp.example.com/mcp".into()],
            jwks_url: Some("https://login.example.com/jwks.json".into()),
            ..AuthSettings::default()
        };
        let problems = jwks.validate().unwrap_err();
        let issuer = problems.iter().find(|p| p.key == "auth.issuer");
        assert!(issuer.is_some_and(|p| p.reason.contains("jwks_url")), "{problems:?}");
        let pinned = AuthSettings { issuer: Some("https://login.example.com/".into()), ..jwks };
        assert_eq!(pinned.validate(), Ok(()));
    }
}
