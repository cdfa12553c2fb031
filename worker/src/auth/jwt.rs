//! JWT bearer tokens: the header is read first to pin the algorithm to a key that may verify
//! it (HS* only with the shared secret, asymmetric algorithms only with a key of that
//! algorithm), then `jsonwebtoken` checks the signature, `exp`, `nbf`, `iss` and `aud`.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

pub(super) use super::jwks::VerifyKey;
use super::jwks::{Jwks, Refresh};
use super::token_cache::TokenCache;
use super::{Authenticated, Denial, InvalidToken, Principal, PrincipalKind};

/// Longest token looked at.
const MAX_TOKEN: usize = 16 * 1024;
/// Most keys one token is tried against (tokens without a `kid`).
const MAX_CANDIDATES: usize = 8;

/// Everything needed to check a JWT.
pub(super) struct JwtVerifier {
    pub(super) hs: Option<DecodingKey>,
    pub(super) static_keys: Vec<VerifyKey>,
    pub(super) jwks: Option<Jwks>,
    pub(super) issuer: Option<String>,
    pub(super) audience: Vec<String>,
    pub(super) leeway: u64,
    pub(super) groups_claim: String,
    /// Tokens verified before, by hash, until their `exp`.
    pub(super) verified: TokenCache,
}

/// Why no key was found for a token.
enum Miss {
    /// Keys exist, none with the token's `kid`.
    UnknownKid,
    /// The `kid` exists but is pinned to other algorithms.
    WrongAlgorithm,
    /// No key at all takes this algorithm.
    NoKeyForAlgorithm,
}

impl JwtVerifier {
    pub(super) fn accepts_asymmetric(&self) -> bool {
        !self.static_keys.is_empty() || self.jwks.is_some()
    }

    /// Checks a token (the bearer value that is not an API key). A shared-secret token that
    /// verified before and has not expired is remembered (the secret changes only with a
    /// reload, which replaces the workers); a public-key token is checked every time, so a key
    /// the issuer's JWKS drops stops verifying at the next fetch.
    pub(super) async fn verify(&self, token: &str) -> Result<Arc<Authenticated>, Denial> {
        if let Some(principal) = self.verified.get(token) {
            return Ok(principal);
        }
        let (principal, remember_until) = self.verify_now(token).await?;
        let principal = Arc::new(Authenticated::new(principal));
        if let Some(exp) = remember_until {
            self.verified.put(token, &principal, exp);
        }
        Ok(principal)
    }

    /// Verifies a token; who it names and, for a shared-secret token, its `exp`.
    async fn verify_now(&self, token: &str) -> Result<(Principal, Option<u64>), Denial> {
        let (alg, kid) = parse_header(token).map_err(Denial::InvalidToken)?;
        if alg.family() == AlgorithmFamily::Hmac {
            // Shared-secret tokens are checked with the shared secret and nothing else: a
            // public key's bytes never become an HMAC key.
            let Some(secret) = &self.hs else {
                return Err(Denial::InvalidToken(InvalidToken::AlgorithmNotAccepted(alg_name(alg))));
            };
            return self.check(token, alg, &[secret]).map(|(p, exp)| (p, Some(exp)));
        }
        let mut jwks_keys = Arc::new(Vec::new());
        if let Some(jwks) = &self.jwks {
            if jwks.expired() {
                jwks.refresh().await;
            }
            jwks_keys = jwks.keys();
        }
        let mut found = self.select(alg, kid.as_deref(), &jwks_keys, true);
        if let (Err(Miss::UnknownKid | Miss::NoKeyForAlgorithm), Some(jwks)) = (&found, &self.jwks) {
            // Perhaps the issuer rotated its keys: fetch again (rate-limited) and retry once.
            if jwks.refresh().await != Refresh::TooSoon || !Arc::ptr_eq(&jwks_keys, &jwks.keys()) {
                jwks_keys = jwks.keys();
                found = self.select(alg, kid.as_deref(), &jwks_keys, true);
            }
        }
        if let Err(Miss::UnknownKid) = found {
            // Keys configured without a kid still vouch for tokens that carry one.
            found = self.select(alg, kid.as_deref(), &jwks_keys, false);
        }
        match found {
            Ok(keys) => self.check(token, alg, &keys).map(|(p, _)| (p, None)),
            Err(miss) => {
                let unavailable = self.jwks.as_ref().is_some_and(|j| !j.ever_fetched());
                Err(match miss {
                    _ if unavailable => Denial::Unavailable,
                    Miss::UnknownKid => Denial::InvalidToken(InvalidToken::UnknownKey),
                    Miss::WrongAlgorithm | Miss::NoKeyForAlgorithm => {
                        Denial::InvalidToken(InvalidToken::AlgorithmNotAccepted(alg_name(alg)))
                    }
                })
            }
        }
    }

    /// The keys that may verify a token with this `alg` and `kid`. With `exact_kid` false, a
    /// token's `kid` is matched by keys that have none.
    fn select<'k>(
        &'k self,
        alg: Algorithm,
        kid: Option<&str>,
        jwks_keys: &'k [VerifyKey],
        exact_kid: bool,
    ) -> Result<Vec<&'k DecodingKey>, Miss> {
        let all = || self.static_keys.iter().chain(jwks_keys.iter());
        let named: Vec<&VerifyKey> = match kid {
            Some(kid) if exact_kid => all().filter(|k| k.kid.as_deref() == Some(kid)).collect(),
            Some(_) => all().filter(|k| k.kid.is_none()).collect(),
            None => all().collect(),
        };
        let usable: Vec<&DecodingKey> =
            named.iter().filter(|k| k.algorithms.contains(&alg)).map(|k| &k.key).collect();
        match (kid, named.is_empty(), usable.is_empty()) {
            (_, _, false) => Ok(usable),
            (Some(_), true, _) => Err(Miss::UnknownKid),
            (Some(_), false, true) => Err(Miss::WrongAlgorithm),
            (None, _, true) => Err(Miss::NoKeyForAlgorithm),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if !self.audience.is_empty() {
            v.set_audience(&self.audience);
            required.push("aud");
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// Verifies against each candidate key; the first that verifies decides. With the
    /// principal, the token's `exp` (required, so present).
    fn check(&self, token: &str, alg: Algorithm, keys: &[&DecodingKey]) -> Result<(Principal, u64), Denial> {
        let validation = self.validation(alg);
        for key in keys.iter().take(MAX_CANDIDATES) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => {
                    // A fractional exp counts down to the second; anything else is never remembered.
                    let exp = data.claims.get("exp").and_then(Value::as_f64).map_or(0, |e| e.max(0.0) as u64);
                    return self.principal(data.claims).map(|p| (p, exp)).map_err(Denial::InvalidToken);
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey => continue,
                    kind => return Err(Denial::InvalidToken(invalid(kind, alg))),
                },
            }
        }
        Err(Denial::InvalidToken(InvalidToken::BadSignature))
    }

    /// The caller a verified token names.
    fn principal(&self, claims: Map<String, Value>) -> Result<Principal, InvalidToken> {
        let subject = ["sub", "client_id"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str).filter(|s| !s.trim().is_empty()))
            .ok_or(InvalidToken::MissingClaim("sub"))?
            .to_string();
        let mut scopes = BTreeSet::new();
        for claim in ["scope", "scp"] {
            match claims.get(claim) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    scopes.extend(string_list(v).ok_or(InvalidToken::Malformed("scope is not a string"))?)
                }
            }
        }
        let security_groups = match claims.get(&self.groups_claim) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                string_list(v).ok_or(InvalidToken::Malformed("the security groups claim is not a list"))?,
            ),
        };
        Ok(Principal { subject, scopes, security_groups, kind: PrincipalKind::Jwt, read_only: false })
    }
}

/// A claim given as `"a b c"`, `"a,b"` or `["a", "b"]`.
fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(
            s.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
        ),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_string()))
            .filter(|s| s.as_deref() != Some(""))
            .collect(),
        _ => None,
    }
}

fn alg_name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

/// Reads the algorithm and key id from a token's header, rejecting what is not a signed JWT.
pub(super) fn parse_header(token: &str) -> Result<(Algorithm, Option<String>), InvalidToken> {
    if token.len() > MAX_TOKEN {
        return Err(InvalidToken::Malformed("the token is too long"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts[0].is_empty() || parts[1].is_empty() {
        return Err(InvalidToken::Malformed("not a JWT (three base64url parts separated by dots)"));
    }
    let header = URL_SAFE_NO_PAD
        .decode(parts[0])
        .map_err(|_| InvalidToken::Malformed("the header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| InvalidToken::Malformed("the header is not a JSON object"))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        _ => return Err(InvalidToken::Malformed("the header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(InvalidToken::AlgorithmNotAccepted("none".into()));
    }
    let Ok(alg) = Algorithm::from_str(alg) else {
        return Err(InvalidToken::AlgorithmNotAccepted(printable(alg)));
    };
    if header.contains_key("crit") {
        return Err(InvalidToken::Malformed("the header has critical extensions (crit), none supported"));
    }
    if parts[2].is_empty() {
        return Err(InvalidToken::BadSignature);
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(InvalidToken::Malformed("the header's kid is not a string")),
    };
    Ok((alg, kid))
}

/// An attacker-chosen name, safe to echo: at most 16 printable ASCII characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.+".contains(*c)).take(16).collect()
}

fn invalid(kind: &ErrorKind, alg: Algorithm) -> InvalidToken {
    match kind {
        ErrorKind::ExpiredSignature => InvalidToken::Expired,
        ErrorKind::ImmatureSignature => InvalidToken::NotYetValid,
        ErrorKind::InvalidIssuer => InvalidToken::WrongIssuer,
        ErrorKind::InvalidAudience => InvalidToken::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => InvalidToken::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "aud" => "aud",
            "iss" => "iss",
            "nbf" => "nbf",
            _ => "sub",
        }),
        ErrorKind::InvalidClaimFormat(_) => InvalidToken::Malformed("exp or nbf is not a number"),
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            InvalidToken::AlgorithmNotAccepted(alg_name(alg))
        }
        ErrorKind::Base64(_) => InvalidToken::Malformed("a part is not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            InvalidToken::Malformed("the claims are not a JSON object")
        }
        _ => InvalidToken::Malformed("the token cannot be verified"),
    }
}
