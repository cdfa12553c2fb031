//! The `requestState` a stateless (2026-07-28) client carries between a consent question and
//! its retry: `v1.<payload>.<mac>`, both base64url, the MAC HMAC-SHA256 under a key derived from
//! the marker key (so every worker and host that shares the marker key accepts it, and operators
//! manage one secret).
//!
//! The payload binds the caller (a hash of its identity), the exact change
//! ([`ProposedChange::digest`]), an expiry and a random nonce. A state is single-use: the retry
//! that consumes it records its nonce through a [`NonceStore`] (files in `state_dir` on one
//! host; Redis, with `[redis]`, for a fleet), so a replay on any worker (of any host) is refused.
//!
//! [`ProposedChange::digest`]: super::consent::ProposedChange::digest

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, digest, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Label the consent key is derived under (never valid as a marker MAC, nor the reverse).
pub const KEY_LABEL: &str = "awswl-consent-state-v1";
/// Longest token accepted, in bytes (a real one is about 250).
const MAX_TOKEN: usize = 1024;

/// Records nonces of consumed states so each is honoured once on the whole host (or fleet).
pub trait NonceStore: Send + Sync {
    /// Records `nonce` (32 lower-case hex digits) until `until`: `Ok(true)` the first time,
    /// `Ok(false)` when it was already recorded (a replay).
    fn consume<'a>(&'a self, nonce: &'a str, until: SystemTime) -> BoxFuture<'a, Result<bool, String>>;
}

/// Issues and checks consent states.
pub struct ConsentSeal {
    key: hmac::Key,
    ttl: Duration,
    nonces: Arc<dyn NonceStore>,
}

impl std::fmt::Debug for ConsentSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsentSeal(ttl {:?})", self.ttl)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// SHA-256 (hex) of the caller's identity.
    sub: String,
    /// The change's digest (hex).
    chg: String,
    /// Expiry, Unix seconds.
    exp: u64,
    /// 16 random bytes (hex).
    n: String,
}

/// A state that verified: what remains is to consume it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    nonce: String,
    until: SystemTime,
}

/// Why a state is refused; each says so in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not a state this server issued in any shape.
    #[error("the consent requestState is malformed")]
    Malformed,
    /// The MAC does not verify: altered, or issued under another key.
    #[error("the consent requestState does not verify (altered, or issued by another server)")]
    Forged,
    /// Too old.
    #[error("the consent requestState expired (consent must be given within {0} s); ask again")]
    Expired(u64),
    /// Issued to another caller.
    #[error("the consent requestState was issued to another caller")]
    OtherCaller,
    /// Issued for another change than the one retried.
    #[error("the consent requestState was issued for a different change than this call")]
    OtherChange,
    /// Used before.
    #[error("the consent requestState was already used; each consent applies to one change once")]
    Replayed,
    /// The nonce could not be recorded, so single use cannot be guaranteed.
    #[error("the consent could not be recorded as used ({0})")]
    Store(String),
}

impl ConsentSeal {
    /// A seal with `secret` (derive it with [`KEY_LABEL`]), states valid for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration, nonces: Arc<dyn NonceStore>) -> ConsentSeal {
        ConsentSeal { key: hmac::Key::new(hmac::HMAC_SHA256, secret), ttl, nonces }
    }

    /// How long a state is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new state for `subject` asking about the change with `change_digest`.
    pub fn issue(&self, subject: &str, change_digest: &[u8; 32], now: SystemTime) -> Result<String, String> {
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "the system random generator failed".to_string())?;
        let exp = unix(now).saturating_add(self.ttl.as_secs().max(1));
        let payload =
            Payload { sub: hex(&sha256(subject.as_bytes())), chg: hex(change_digest), exp, n: hex(&nonce) };
        let json = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
        let body = format!("v1.{}", URL_SAFE_NO_PAD.encode(json));
        let mac = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, body.as_bytes()));
        Ok(format!("{body}.{mac}"))
    }

    /// Checks a state presented by `subject` for the change with `change_digest`: integrity,
    /// then expiry, caller and change. Nothing is consumed yet.
    pub fn verify(
        &self,
        token: &str,
        subject: &str,
        change_digest: &[u8; 32],
        now: SystemTime,
    ) -> Result<Verified, StateError> {
        if token.len() > MAX_TOKEN {
            return Err(StateError::Malformed);
        }
        let (body, mac) = token.rsplit_once('.').ok_or(StateError::Malformed)?;
        let payload = body.strip_prefix("v1.").ok_or(StateError::Malformed)?;
        let given = URL_SAFE_NO_PAD.decode(mac).map_err(|_| StateError::Malformed)?;
        let expected = hmac::sign(&self.key, body.as_bytes());
        constant_time::verify_slices_are_equal(&given, expected.as_ref()).map_err(|_| StateError::Forged)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| StateError::Malformed)?;
        let p: Payload = serde_json::from_slice(&json).map_err(|_| StateError::Malformed)?;
        let nonce_ok =
            p.n.len() == 32 && p.n.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !nonce_ok {
            return Err(StateError::Malformed);
        }
        if unix(now) >= p.exp {
            return Err(StateError::Expired(self.ttl.as_secs()));
        }
        if p.sub != hex(&sha256(subject.as_bytes())) {
            return Err(StateError::OtherCaller);
        }
        if p.chg != hex(change_digest) {
            return Err(StateError::OtherChange);
        }
        Ok(Verified { nonce: p.n, until: UNIX_EPOCH + Duration::from_secs(p.exp) })
    }

    /// Consumes a verified state: the first consumer on the host wins, any other is a replay.
    pub async fn consume(&self, verified: &Verified) -> Result<(), StateError> {
        match self.nonces.consume(&verified.nonce, verified.until).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StateError::Replayed),
            Err(e) => Err(StateError::Store(e)),
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Memory(Mutex<HashSet<String>>);

    impl NonceStore for Memory {
        fn consume<'a>(&'a self, nonce: &'a str, _: SystemTime) -> BoxFuture<'a, Result<bool, String>> {
            Box::pin(async move { Ok(self.0.lock().map_err(|e| e.to_string())?.insert(nonce.to_string())) })
        }
    }

    fn seal(secret: &[u8]) -> ConsentSeal {
        ConsentSeal::new(secret, Duration::from_secs(300), Arc::new(Memory::default()))
    }

    const CHANGE: [u8; 32] = [7; 32];
    const OTHER: [u8; 32] = [8; 32];

    #[tokio::test]
    async fn a_state_is_honoured_once_for_its_caller_and_change() {
        let s = seal(&[1; 32]);
        let now = SystemTime::now();
        let token = s.issue("jwt:alice", &CHANGE, now).unwrap();
        let ok = s.verify(&token, "jwt:alice", &CHANGE, now).unwrap();
        assert_eq!(s.consume(&ok).await, Ok(()));
        let again = s.verify(&token, "jwt:alice", &CHANGE, now).unwrap();
        assert_eq!(s.consume(&again).await, Err(StateError::Replayed), "single use");
    }

    #[test]
    fn foreign_changed_expired_and_tampered_states_are_refused() {
        let s = seal(&[1; 32]);
        let now = SystemTime::now();
        let token = s.issue("jwt:alice", &CHANGE, now).unwrap();
        assert_eq!(s.verify(&token, "jwt:mallory", &CHANGE, now), Err(StateError::OtherCaller));
        assert_eq!(s.verify(&token, "jwt:alice", &OTHER, now), Err(StateError::OtherChange));
        let later = now + Duration::from_secs(301);
        assert_eq!(s.verify(&token, "jwt:alice", &CHANGE, later), Err(StateError::Expired(300)));
        assert_eq!(seal(&[2; 32]).verify(&token, "jwt:alice", &CHANGE, now), Err(StateError::Forged));
        // Flip one character of the payload: the MAC no longer matches.
        let mut bytes = token.clone().into_bytes();
        bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        assert_eq!(s.verify(&altered, "jwt:alice", &CHANGE, now), Err(StateError::Forged));
        for junk in ["", "v1", "v1..", "x.y.z", &"a".repeat(2000)] {
            assert!(
                matches!(
                    s.verify(junk, "jwt:alice", &CHANGE, now),
                    Err(StateError::Malformed | StateError::Forged)
                ),
                "{junk}"
            );
        }
    }

    #[test]
    fn every_state_is_new_and_reveals_no_identity() {
        let s = seal(&[1; 32]);
        let now = SystemTime::now();
        let a = s.issue("jwt:alice", &CHANGE, now).unwrap();
        let b = s.issue("jwt:alice", &CHANGE, now).unwrap();
        assert_ne!(a, b, "a random nonce in each");
        let payload = URL_SAFE_NO_PAD.decode(a.split('.').nth(1).unwrap()).unwrap();
        assert!(!String::from_utf8_lossy(&payload).contains("alice"));
    }
}
