//! Who is calling, and what they may do: bearer JWTs (shared HS secret, pinned public keys, an
//! issuer's JWKS) and static API keys, checked into a [`Principal`]; failures are a [`Denial`]
//! that knows its HTTP status and `WWW-Authenticate` header (RFC 6750, MCP authorization).
//!
//! May import: `caller` (a principal converts into one), `settings` (problems). Imported by:
//! `http` (authenticate, require a tool's scope), `process` (load at boot), `tools` (scope names).
//!
//! Wiring it into a transport takes a few lines:
//!
//! ```ignore
//! let auth = Authenticator::load(&settings.auth)?;            // at boot: reads secrets and PEMs
//! match auth.authenticate(header_value).await {
//!     Ok(principal) => meta.caller = principal.caller(true, client_addr, &request_id),
//!     Err(denial) => respond(denial.status(), ("WWW-Authenticate",
//!         auth.www_authenticate(&denial, &metadata_url))),
//! }
//! principal.require(tool.spec().scope)?;                       // 403 insufficient_scope
//! ```

pub mod apikey;
mod authenticated;
mod jwks;
mod jwt;
pub mod settings;
pub mod token;
mod token_cache;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

use serde_json::{json, Value};

pub use apikey::ApiKeyConfig;
pub use authenticated::Authenticated;
pub use settings::{AuthSettings, PublicKeyConfig, PUBLIC_KEY_ALGORITHMS};
pub use token::{issue_hs256, parse_ttl, TokenRequest};

use apikey::ApiKeys;
use jwks::{Jwks, Refresh};
use jwt::{JwtVerifier, VerifyKey};

/// Scope of the tools that only read (each tool declares its own).
pub const SCOPE_READ: &str = "whitelist:read";
/// Scope of the tools that change security groups, and of any tool name nobody declared.
pub const SCOPE_WRITE: &str = "whitelist:write";
/// Every scope this server knows.
pub const SCOPES: [&str; 2] = [SCOPE_READ, SCOPE_WRITE];
/// Shortest HS shared secret accepted, in bytes (as long as an HS256 digest).
pub const MIN_SECRET_BYTES: usize = 32;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A verified JWT.
    Jwt,
    /// A configured API key.
    ApiKey,
    /// Nobody: authentication is off (loopback only).
    Anonymous,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The JWT's `sub` (else `client_id`), or the API key's id.
    pub subject: String,
    /// Granted scopes (`scope` / `scp` claims, or the key's configured scopes).
    pub scopes: BTreeSet<String>,
    /// Security groups (ids or `sg-0abc*` patterns) the caller may touch, from the groups claim
    /// or the key's configuration; `None` = no restriction beyond the policy.
    pub security_groups: Option<Vec<String>>,
    /// How the caller authenticated.
    pub kind: PrincipalKind,
    /// The credential may change nothing (an API key with `read_only = true`), whatever its
    /// scopes say: the changing tools are not offered to it and are refused if called.
    pub read_only: bool,
}

impl Principal {
    /// The principal when authentication is off: every scope, no group restriction.
    pub fn anonymous() -> Principal {
        Principal {
            subject: "anonymous".to_string(),
            scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
            security_groups: None,
            kind: PrincipalKind::Anonymous,
            read_only: false,
        }
    }

    /// Was this scope granted?
    pub fn may(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// Ok, or the 403 `insufficient_scope` naming the missing scope. The scope comes from the
    /// tool itself (`ToolSpec::scope`); `None` needs nothing.
    pub fn require(&self, scope: Option<&'static str>) -> Result<(), Denial> {
        match scope {
            Some(scope) if !self.may(scope) => Err(Denial::InsufficientScope { scope }),
            _ => Ok(()),
        }
    }

    /// What makes this credential read-only, as a refusal names it: an API key's `read_only`,
    /// or scopes without `whitelist:write` (a token is read-only by its scope set).
    fn read_only_setting(&self) -> Option<String> {
        if self.read_only && self.kind == PrincipalKind::ApiKey {
            return Some(format!(
                "read_only = true in the [[auth.api_keys]] entry with id {:?}",
                self.subject
            ));
        }
        if self.read_only {
            return Some("read_only on this credential".to_string());
        }
        (!self.may(SCOPE_WRITE)).then(|| format!("its scopes do not include {SCOPE_WRITE}"))
    }

    /// A key unique across kinds (`jwt:alice`, `key:ci`, `anonymous`), for rate limits and
    /// audit: a token subject and an API key id may be spelt the same.
    pub fn identity(&self) -> String {
        match self.kind {
            PrincipalKind::Jwt => format!("jwt:{}", self.subject),
            PrincipalKind::ApiKey => format!("key:{}", self.subject),
            PrincipalKind::Anonymous => "anonymous".to_string(),
        }
    }
}

/// What is wrong with a presented token or key. The descriptions name the problem and never
/// echo the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidToken {
    /// `Authorization: Bearer` with nothing after it.
    Empty,
    /// Not a well-formed JWT or API key; says which part.
    Malformed(&'static str),
    /// `alg` is `none`, unknown, or not accepted with the key the token names.
    AlgorithmNotAccepted(String),
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    NotYetValid,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not name this server.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(&'static str),
    /// The signature does not verify.
    BadSignature,
    /// The `kid` is not among the known keys (even after refetching the JWKS).
    UnknownKey,
    /// No configured API key matches.
    UnknownApiKey,
}

impl InvalidToken {
    /// The `error_description`.
    pub fn description(&self) -> String {
        match self {
            InvalidToken::Empty => "the bearer token is empty".into(),
            InvalidToken::Malformed(what) => format!("malformed token: {what}"),
            InvalidToken::AlgorithmNotAccepted(alg) if alg == "none" => {
                "unsigned tokens (alg none) are not accepted".into()
            }
            InvalidToken::AlgorithmNotAccepted(alg) => {
                format!("tokens signed with {alg} are not accepted (for this key)")
            }
            InvalidToken::Expired => "the token has expired".into(),
            InvalidToken::NotYetValid => "the token is not valid yet (nbf)".into(),
            InvalidToken::WrongIssuer => "the token's issuer (iss) is not trusted here".into(),
            InvalidToken::WrongAudience => "the token is not meant for this server (aud)".into(),
            InvalidToken::MissingClaim(c) => format!("the token has no {c} claim"),
            InvalidToken::BadSignature => "the token's signature does not verify".into(),
            InvalidToken::UnknownKey => "the token is signed with an unknown key (kid)".into(),
            InvalidToken::UnknownApiKey => "unknown or revoked API key".into(),
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credential, or another scheme than Bearer: 401 without an error code (RFC 6750 §3.1).
    Missing,
    /// A credential that does not check out: 401 `invalid_token`.
    InvalidToken(InvalidToken),
    /// Authenticated, but without the scope: 403 `insufficient_scope`.
    InsufficientScope {
        /// The scope needed.
        scope: &'static str,
    },
    /// The issuer's keys cannot be fetched, so the token cannot be checked: 503.
    Unavailable,
}

impl Denial {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Denial::Missing | Denial::InvalidToken(_) => 401,
            Denial::InsufficientScope { .. } => 403,
            Denial::Unavailable => 503,
        }
    }

    /// The RFC 6750 error code, if any.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Denial::InvalidToken(_) => Some("invalid_token"),
            Denial::InsufficientScope { .. } => Some("insufficient_scope"),
            Denial::Missing | Denial::Unavailable => None,
        }
    }

    /// Whether a credential was presented and failed (what a failed-authentication rate limit
    /// counts).
    pub fn is_failed_credential(&self) -> bool {
        matches!(self, Denial::InvalidToken(_))
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Missing => write!(f, "no bearer credential"),
            Denial::InvalidToken(r) => write!(f, "{}", r.description()),
            Denial::InsufficientScope { scope } => write!(f, "the credential lacks the scope {scope}"),
            Denial::Unavailable => write!(f, "the issuer's signing keys cannot be fetched"),
        }
    }
}

/// A boot-time failure: settings, secret or key files.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `validate` found problems.
    #[error("invalid [auth] settings: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Settings(Vec<crate::settings::problem::Problem>),
    /// A secret or key could not be read or used.
    #[error("{}", if value.is_empty() { format!("{key}: {reason}") } else { format!("{key} = {value}: {reason}") })]
    Load {
        /// The config key.
        key: String,
        /// Its value (a path or variable name, never a secret).
        value: String,
        /// What went wrong.
        reason: String,
    },
}

impl AuthError {
    fn load(key: impl Into<String>, value: impl fmt::Debug, reason: impl Into<String>) -> AuthError {
        AuthError::Load { key: key.into(), value: format!("{value:?}"), reason: reason.into() }
    }

    /// The problems as `(key, value, reason)`, for a config error listing.
    pub fn problems(&self) -> Vec<crate::settings::problem::Problem> {
        match self {
            AuthError::Settings(p) => p.clone(),
            AuthError::Load { key, value, reason } => {
                vec![crate::settings::problem::Problem {
                    key: key.clone(),
                    value: value.clone(),
                    reason: reason.clone(),
                }]
            }
        }
    }
}

/// Checks credentials; built once per worker at boot, shared by every request.
pub struct Authenticator {
    enabled: bool,
    jwt: JwtVerifier,
    api_keys: ApiKeys,
    resource_metadata_url: Option<String>,
    authorization_servers: Vec<String>,
    /// Every caller when authentication is off: made once, not per request.
    anonymous: Arc<Authenticated>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("enabled", &self.enabled)
            .field("hs_secret", &self.jwt.hs.as_ref().map(|_| "<redacted>"))
            .field("public_keys", &self.jwt.static_keys.len())
            .field("jwks", &self.jwt.jwks.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Validates the settings and reads the HS secret and the PEM files; any missing or unusable
    /// one is an error naming its key.
    pub fn load(settings: &AuthSettings) -> Result<Authenticator, AuthError> {
        settings.validate().map_err(AuthError::Settings)?;
        install_crypto_provider();
        let hs = load_hs_secret(settings)?.map(|secret| DecodingKey::from_secret(&secret));
        let mut static_keys = Vec::new();
        for (i, k) in settings.public_keys.iter().enumerate() {
            static_keys.push(load_public_key(&format!("auth.public_keys[{i}].pem_file"), k)?);
        }
        let jwks = match &settings.jwks_url {
            None => None,
            Some(url) => Some(
                Jwks::new(
                    url,
                    settings.jwks_timeout,
                    settings.jwks_cache_seconds,
                    settings.jwks_min_refresh_seconds,
                )
                .map_err(|reason| AuthError::load("auth.jwks_url", url, reason))?,
            ),
        };
        Ok(Authenticator {
            enabled: settings.enabled,
            jwt: JwtVerifier {
                hs,
                static_keys,
                jwks,
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                leeway: settings.leeway_seconds,
                groups_claim: settings.groups_claim.clone(),
                verified: Default::default(),
            },
            api_keys: ApiKeys::new(&settings.api_keys),
            resource_metadata_url: settings.resource_metadata_url.clone(),
            authorization_servers: settings.authorization_servers.clone(),
            anonymous: Arc::new(Authenticated::new(Principal::anonymous())),
        })
    }

    /// Whether credentials are required (`auth.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Checks the `Authorization` header's value. With auth off, every caller is
    /// [`Principal::anonymous`].
    pub async fn authenticate(
        &self,
        authorization_header: Option<&str>,
    ) -> Result<Arc<Authenticated>, Denial> {
        if !self.enabled {
            return Ok(self.anonymous.clone());
        }
        let value = authorization_header.map(str::trim).unwrap_or("");
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denial::Missing);
        }
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(Denial::InvalidToken(InvalidToken::Empty));
        }
        if credential.starts_with(apikey::PREFIX) {
            return self.api_keys.verify(credential);
        }
        if !self.jwt.accepts_asymmetric() && self.jwt.hs.is_none() {
            return Err(Denial::InvalidToken(InvalidToken::Malformed("not an API key")));
        }
        self.jwt.verify(credential).await
    }

    /// Fetches the JWKS now (at boot, so the first request does not wait); the number of keys.
    /// `Ok(0)` when no `jwks_url` is configured or a fetch was made moments ago.
    pub async fn refresh_jwks(&self) -> Result<usize, String> {
        match &self.jwt.jwks {
            None => Ok(0),
            Some(jwks) => match jwks.refresh().await {
                Refresh::Fetched(n) => Ok(n),
                Refresh::TooSoon => Ok(jwks.keys().len()),
                Refresh::Failed(e) => Err(e),
            },
        }
    }

    /// The URL of the protected resource metadata document: the configured one, else derived
    /// from the first audience (RFC 9728 §3.1); `None` leaves it to the transport (from the
    /// request's host).
    pub fn resource_metadata_url(&self) -> Option<String> {
        self.resource_metadata_url
            .clone()
            .or_else(|| self.jwt.audience.first().and_then(|aud| metadata_url_for(aud)))
    }

    /// The `WWW-Authenticate` value for a denial: `Bearer resource_metadata="…"`, plus
    /// `error`/`error_description` for a bad token, or `error`/`scope` for a missing scope.
    pub fn www_authenticate(&self, denial: &Denial, resource_metadata_url: &str) -> String {
        let mut value = format!("Bearer resource_metadata=\"{}\"", quoted(resource_metadata_url));
        match denial {
            Denial::Missing | Denial::Unavailable => {}
            Denial::InvalidToken(reason) => {
                value.push_str(&format!(
                    ", error=\"invalid_token\", error_description=\"{}\"",
                    quoted(&reason.description())
                ));
            }
            Denial::InsufficientScope { scope } => {
                value.push_str(&format!(
                    ", error=\"insufficient_scope\", scope=\"{scope}\", error_description=\"{}\"",
                    quoted(&format!("this call needs the scope {scope}"))
                ));
            }
        }
        value
    }

    /// The resource identifier to publish: the first configured audience (what tokens must be
    /// issued for), else `derived` from how the request reached us.
    pub fn audience_or(&self, derived: &str) -> String {
        self.jwt.audience.first().cloned().unwrap_or_else(|| derived.to_string())
    }

    /// The protected resource metadata document (RFC 9728) for `resource`.
    pub fn protected_resource_metadata(&self, resource: &str) -> Value {
        let mut doc = json!({
            "resource": resource,
            "scopes_supported": SCOPES,
            "bearer_methods_supported": ["header"],
            "resource_name": "awswhitelist",
        });
        if !self.authorization_servers.is_empty() {
            doc["authorization_servers"] = json!(self.authorization_servers);
        }
        doc
    }
}

/// The RFC 9728 metadata URL of a resource: `https://h/mcp` → `https://h/.well-known/oauth-protected-resource/mcp`.
pub fn metadata_url_for(resource: &str) -> Option<String> {
    let (scheme, rest) = resource.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return None;
    }
    let path = path.trim_end_matches('/');
    Some(format!("{scheme}://{authority}/.well-known/oauth-protected-resource{path}"))
}

/// Text safe inside an RFC 6750 quoted-string (no `"`, `\` or controls).
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .filter(|c| (' '..='~').contains(c))
        .collect()
}

/// jsonwebtoken picks its crypto backend from its features; should another crate ever switch
/// on a second backend, it would panic unless one is installed: install aws-lc-rs explicitly.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The HS shared secret from `hs_secret_file` or `hs_secret_env`, if either is set.
pub(crate) fn load_hs_secret(settings: &AuthSettings) -> Result<Option<Vec<u8>>, AuthError> {
    let (key, shown, secret) = if let Some(path) = &settings.hs_secret_file {
        let bytes = std::fs::read(path)
            .map_err(|e| AuthError::load("auth.hs_secret_file", path, format!("cannot read it: {e}")))?;
        warn_if_world_readable(path);
        ("auth.hs_secret_file", format!("{path:?}"), bytes)
    } else if let Some(var) = &settings.hs_secret_env {
        let value = std::env::var_os(var).ok_or_else(|| {
            AuthError::load("auth.hs_secret_env", var, "this environment variable is not set")
        })?;
        ("auth.hs_secret_env", format!("{var:?}"), value.into_encoded_bytes())
    } else {
        return Ok(None);
    };
    let end = secret.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let secret = secret[..end].to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthError::Load {
            key: key.into(),
            value: shown,
            reason: format!(
                "the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -base64 48`)",
                secret.len()
            ),
        });
    }
    Ok(Some(secret))
}

fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                event = "secret_world_readable",
                file = %path.display(),
                "the HS secret file {} is readable by every user; chmod o-r it",
                path.display()
            );
        }
    }
}

fn load_public_key(key: &str, config: &PublicKeyConfig) -> Result<VerifyKey, AuthError> {
    let path = &config.pem_file;
    let pem = std::fs::read(path).map_err(|e| AuthError::load(key, path, format!("cannot read it: {e}")))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY") {
        return Err(AuthError::load(
            key,
            path,
            "this is a private key; give the public key (openssl pkey -pubout) and keep the private one off this server",
        ));
    }
    let alg: Algorithm = config
        .algorithm
        .parse()
        .map_err(|_| AuthError::load(key, path, format!("unknown algorithm {}", config.algorithm)))?;
    let decoded = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => return Err(AuthError::load(key, path, "HS algorithms use hs_secret_file, not a PEM")),
    }
    .map_err(|e| {
        AuthError::load(key, path, format!("not a {} public key in PEM form: {e}", config.algorithm))
    })?;
    Ok(VerifyKey { kid: config.kid.clone(), algorithms: vec![alg], key: decoded })
}
