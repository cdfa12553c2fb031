//! Static API keys for machine clients: `awsk_<id>_<43 base64url characters>` (32 random
//! bytes). The configuration holds only `sha256:<hex>` of the whole key: the keys are
//! high-entropy, so a fast hash is enough (nothing to brute-force), and it binds the id to the
//! secret. Comparison is constant-time.

use std::sync::Arc;

use aws_lc_rs::{constant_time, digest, rand};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{Authenticated, Denial, InvalidToken, Principal, PrincipalKind};

/// One API key: its id, the hash of the whole key, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The id embedded in the key (`awsk_<id>_…`); the caller's identity.
    pub id: String,
    /// `sha256:<64 hex digits>` of the whole key, as `awswhitelist keygen` prints it.
    pub hash: String,
    /// Scopes granted (`whitelist:read`, `whitelist:write`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Security groups (ids or patterns) this key may touch; empty = no restriction beyond
    /// the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// The key may change nothing, whatever its scopes: `whitelist_add` and `whitelist_remove`
    /// are not listed for it and are refused if called (a refusal naming this entry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// What every API key starts with (and how a bearer value is told from a JWT).
pub const PREFIX: &str = "awsk_";
/// Random bytes in a key.
const SECRET_BYTES: usize = 32;
/// Their base64url length, unpadded.
const SECRET_CHARS: usize = 43;

/// A freshly made key: show `key` once, store `hash`.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The key's id (also inside `key`).
    pub id: String,
    /// The whole key, for the client.
    pub key: String,
    /// `sha256:<hex>`, for the server's configuration.
    pub hash: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("id", &self.id).field("key", &"<redacted>").finish()
    }
}

/// Is this usable as a key id (1–64 of `A-Za-z0-9.-`; no `_`, which separates the parts)?
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// A random id (`key-` and 8 hex digits) for `keygen` without `--id`.
pub fn random_id() -> Result<String, String> {
    let mut bytes = [0u8; 4];
    rand::fill(&mut bytes).map_err(|_| "the system random generator failed".to_string())?;
    Ok(format!("key-{}", hex(&bytes)))
}

/// Makes a new key with this id.
pub fn generate(id: &str) -> Result<GeneratedKey, String> {
    if !valid_id(id) {
        return Err(format!("the key id {id:?} must be 1 to 64 letters, digits, '.' or '-'"));
    }
    let mut secret = [0u8; SECRET_BYTES];
    rand::fill(&mut secret).map_err(|_| "the system random generator failed".to_string())?;
    let key = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&key);
    Ok(GeneratedKey { id: id.to_string(), key, hash })
}

/// The stored form of a key: `sha256:<64 lowercase hex digits>`.
pub fn hash(key: &str) -> String {
    format!("sha256:{}", hex(&sha256(key)))
}

/// The SHA-256 of a presented key or token, to compare with a stored one in constant time.
pub fn sha256(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, key.as_bytes()).as_ref());
    out
}

/// The digest inside a stored hash, if it is well-formed.
pub fn parse_hash(stored: &str) -> Option<[u8; 32]> {
    let hex_digits = stored.strip_prefix("sha256:")?;
    if hex_digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex_digits.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of a well-formed key, without checking the secret.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = valid_id(id)
        && secret.len() == SECRET_CHARS
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(id)
}

/// The configured keys, ready to check.
pub(super) struct ApiKeys {
    entries: Vec<Entry>,
}

struct Entry {
    digest: [u8; 32],
    /// Made once: every request with this key shares it (and the caller parts it makes).
    principal: Arc<Authenticated>,
}

impl ApiKeys {
    /// From validated settings (entries with a bad hash are skipped; `validate` names them).
    pub(super) fn new(configs: &[ApiKeyConfig]) -> ApiKeys {
        let entries = configs
            .iter()
            .filter_map(|c| {
                Some(Entry {
                    digest: parse_hash(&c.hash)?,
                    principal: Arc::new(Authenticated::new(Principal {
                        subject: c.id.clone(),
                        scopes: c.scopes.iter().cloned().collect(),
                        security_groups: (!c.security_groups.is_empty()).then(|| c.security_groups.clone()),
                        kind: PrincipalKind::ApiKey,
                        read_only: c.read_only,
                    })),
                })
            })
            .collect();
        ApiKeys { entries }
    }

    /// Checks a bearer value that starts with [`PREFIX`].
    pub(super) fn verify(&self, key: &str) -> Result<Arc<Authenticated>, Denial> {
        let Some(id) = key_id(key) else {
            return Err(Denial::InvalidToken(InvalidToken::Malformed("not a well-formed API key")));
        };
        let presented = digest::digest(&digest::SHA256, key.as_bytes());
        // An unknown id costs the same comparison as a known one.
        let entry = self.entries.iter().find(|e| e.principal.subject == id);
        let expected = entry.map_or([0u8; 32], |e| e.digest);
        let same = constant_time::verify_slices_are_equal(presented.as_ref(), &expected).is_ok();
        match entry {
            Some(e) if same => Ok(e.principal.clone()),
            _ => Err(Denial::InvalidToken(InvalidToken::UnknownApiKey)),
        }
    }
}
