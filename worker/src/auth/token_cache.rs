//! Verified shared-secret (HS*) JWTs remembered by the SHA-256 of the token (never the token
//! itself) until its `exp`, and at most [`MAX_AGE`], so a client that sends the same bearer
//! token on every request pays for one signature check, not one per request. Only successes are
//! remembered: a token that failed is checked again each time. The cache lives in one worker; a
//! HUP reload replaces every worker, so a secret changed by a reload stops verifying at once.
//! Public-key tokens are not remembered (see `jwt`): a JWKS may drop their key at any fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Authenticated;

/// Most tokens remembered; past it, the expired ones go, and if none had, all of them.
const MAX_ENTRIES: usize = 4096;
/// Longest a verified token is trusted without a new check.
pub(super) const MAX_AGE: Duration = Duration::from_secs(300);

/// Who a remembered token names (shared, so a hit copies nothing) and until when, in Unix
/// seconds.
type Entry = (Arc<Authenticated>, u64);

/// Token hash → [`Entry`].
#[derive(Default)]
pub(super) struct TokenCache(Mutex<HashMap<[u8; 32], Entry>>);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(d.as_ref());
    key
}

impl TokenCache {
    /// Who `token` names, if it verified before and has not expired since.
    pub(super) fn get(&self, token: &str) -> Option<Arc<Authenticated>> {
        let entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (principal, until) = entries.get(&digest(token))?;
        (now() < *until).then(|| principal.clone())
    }

    /// Remembers a verified token whose `exp` is `exp` (Unix seconds), until then.
    pub(super) fn put(&self, token: &str, principal: &Arc<Authenticated>, exp: u64) {
        let now = now();
        let until = exp.min(now.saturating_add(MAX_AGE.as_secs()));
        if until <= now {
            return;
        }
        let mut entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(digest(token), (principal.clone(), until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_exp_and_bounded() {
        let c = TokenCache::default();
        let p = Arc::new(Authenticated::new(super::super::Principal::anonymous()));
        assert_eq!(c.get("t"), None);
        c.put("t", &p, now() + 60);
        assert_eq!(c.get("t"), Some(p.clone()));
        assert_eq!(c.get("u"), None, "another token");
        c.put("old", &p, now().saturating_sub(1));
        assert_eq!(c.get("old"), None, "an expired token is not remembered");
        for i in 0..MAX_ENTRIES + 10 {
            c.put(&format!("t{i}"), &p, now() + 60);
        }
        assert!(c.0.lock().unwrap().len() <= MAX_ENTRIES);
        assert!(!c.0.lock().unwrap().keys().any(|k| k.len() != 32), "only hashes are kept");
    }
}
