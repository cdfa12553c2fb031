//! Self-validating `Mcp-Session-Id`s for handshake-era clients (2025-06-18, 2025-11-25) that
//! declared capabilities the server needs to remember between requests (elicitation): the
//! server is stateless across workers, so the id carries what the client declared, signed.
//!
//! Format: `awswl1.<payload>.<mac>`, base64url; the payload holds the capabilities that matter
//! here (`elicitation`, `sampling`, `roots`), the negotiated revision and the issue time; the
//! MAC is HMAC-SHA256 under a key derived from the marker key (the same on every worker and
//! host that shares it). An id that does not verify, or is older than [`MAX_AGE`], is answered
//! 404 (the transport's "session not found": the client starts a new one).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Label the session key is derived under.
pub const KEY_LABEL: &str = "awswl-session-v1";
/// Header name (lowercase).
pub const HEADER: &str = "mcp-session-id";
/// How long an id is honoured.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const PREFIX: &str = "awswl1";
/// Capabilities worth carrying.
const KEPT: [&str; 3] = ["elicitation", "sampling", "roots"];
/// Longest id accepted.
const MAX_ID: usize = 2048;

/// What a verified session id says.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The client's capabilities, as declared at `initialize` (the kept ones).
    pub capabilities: Map<String, Value>,
    /// The revision `initialize` negotiated.
    pub version: String,
}

/// Issues and verifies session ids.
pub struct Sessions {
    key: hmac::Key,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(..)")
    }
}

impl Sessions {
    /// Ids signed with `secret` (derived with [`KEY_LABEL`]).
    pub fn new(secret: &[u8]) -> Sessions {
        Sessions { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// An id for a client that declared `capabilities` at `initialize` and got `version`;
    /// `None` when nothing it declared needs remembering.
    pub fn issue(&self, capabilities: &Map<String, Value>, version: &str, now: SystemTime) -> Option<String> {
        let kept: Map<String, Value> = capabilities
            .iter()
            .filter(|(k, _)| KEPT.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.contains_key("elicitation") {
            return None;
        }
        let t = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let payload = json!({"c": kept, "v": version, "t": t}).to_string();
        let body = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(payload));
        let mac = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, body.as_bytes()));
        let id = format!("{body}.{mac}");
        (id.len() <= MAX_ID).then_some(id)
    }

    /// The session an id stands for, if it verifies and is young enough.
    pub fn verify(&self, id: &str, now: SystemTime) -> Option<Session> {
        if id.len() > MAX_ID {
            return None;
        }
        let (body, mac) = id.rsplit_once('.')?;
        let payload = body.strip_prefix(PREFIX)?.strip_prefix('.')?;
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        constant_time::verify_slices_are_equal(&given, hmac::sign(&self.key, body.as_bytes()).as_ref())
            .ok()?;
        let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let issued = UNIX_EPOCH + Duration::from_secs(v.get("t")?.as_u64()?);
        // Too old, or issued in the future beyond clock skew between hosts.
        if now.duration_since(issued).is_ok_and(|age| age > MAX_AGE)
            || issued > now + Duration::from_secs(300)
        {
            return None;
        }
        Some(Session {
            capabilities: v.get("c")?.as_object()?.clone(),
            version: v.get("v")?.as_str()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_eliciting_client_gets_an_id_that_verifies_anywhere_with_the_key() {
        let now = SystemTime::now();
        let a = Sessions::new(&[3; 32]);
        let id = a
            .issue(&caps(json!({"elicitation": {"form": {}}, "experimental": {"x": {}}})), "2025-11-25", now)
            .unwrap();
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "visible ASCII only");
        let other_worker = Sessions::new(&[3; 32]);
        let s = other_worker.verify(&id, now).unwrap();
        assert_eq!(s.version, "2025-11-25");
        assert_eq!(s.capabilities, caps(json!({"elicitation": {"form": {}}})));
        assert!(a.issue(&caps(json!({"roots": {}})), "2025-11-25", now).is_none(), "nothing to remember");
    }

    #[test]
    fn forged_altered_and_old_ids_do_not_verify() {
        let now = SystemTime::now();
        let a = Sessions::new(&[3; 32]);
        let id = a.issue(&caps(json!({"elicitation": {}})), "2025-06-18", now).unwrap();
        assert!(Sessions::new(&[4; 32]).verify(&id, now).is_none());
        let mut bytes = id.clone().into_bytes();
        bytes[9] = if bytes[9] == b'A' { b'B' } else { b'A' };
        assert!(a.verify(&String::from_utf8(bytes).unwrap(), now).is_none());
        assert!(a.verify(&id, now + MAX_AGE + Duration::from_secs(1)).is_none());
        for junk in ["", "awswl1", "awswl1..", "x.y.z", "a.b"] {
            assert!(a.verify(junk, now).is_none(), "{junk}");
        }
    }
}
