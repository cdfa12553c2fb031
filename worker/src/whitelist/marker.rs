//! The marker this service writes at the end of a rule's description, signed so that nobody
//! can forge one, move one to another rule, or edit its expiry.
//!
//! Format: `[awswl exp=2026-11-24T20:00:00Z mac=<16 chars>]` for an expiring rule,
//! `[awswl mac=<16 chars>]` for a permanent one. `mac` is HMAC-SHA256, truncated to 12 bytes and
//! written in unpadded base64url, over the group, source network, protocol, ports and the
//! expiry exactly as written, under the host's marker key (shared by every host that manages
//! the same groups).
//!
//! A rule is *managed* by this service only when its marker verifies. A marker that does not
//! (edited, copied from another rule, signed with another key, or the unsigned `[awswl …]` of
//! versions before signing) makes the rule unmanaged: reported, never swept, never removed
//! unless `[policy] remove_unmanaged` allows it.

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::description::{rfc3339, MAX_LEN};
use super::target::RuleSpec;

/// How a marker starts; the last one in a description is the one read.
pub const OPEN: &str = "[awswl";
/// Bytes of the HMAC kept in the marker (96 bits).
const MAC_BYTES: usize = 12;
/// Characters of the MAC as written (unpadded base64url of [`MAC_BYTES`]).
const MAC_CHARS: usize = 16;
/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Domain separation: a MAC over this layout is never valid for another use of the key.
const CONTEXT: &str = "awswl-marker-v1";

/// The secret markers are signed with. `Debug` never prints it.
#[derive(Clone)]
pub struct MarkerKey(hmac::Key);

impl fmt::Debug for MarkerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MarkerKey(..)")
    }
}

impl MarkerKey {
    /// A key from secret bytes; at least [`MIN_KEY_BYTES`] of them.
    pub fn new(secret: &[u8]) -> Result<MarkerKey, String> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the marker key is {} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        Ok(MarkerKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// A secret for another purpose (the consent request state), derived from this key under
    /// `label`: operators manage one secret, and a MAC for one purpose is never valid for another.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, label.as_bytes()).as_ref());
        out
    }

    fn tag(&self, spec: &RuleSpec, expiry: &str) -> [u8; MAC_BYTES] {
        let text = format!(
            "{CONTEXT}\n{}\n{}\n{}\n{}\n{}\n{expiry}",
            spec.group_id, spec.cidr, spec.protocol, spec.ports.from, spec.ports.to
        );
        let full = hmac::sign(&self.0, text.as_bytes());
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full.as_ref()[..MAC_BYTES]);
        out
    }

    /// The marker for a new rule `spec` expiring at `expires` (`None`: never).
    pub fn marker(&self, spec: &RuleSpec, expires: Option<SystemTime>) -> String {
        let expiry = expires.map(rfc3339).unwrap_or_default();
        let mac = URL_SAFE_NO_PAD.encode(self.tag(spec, &expiry));
        match expires {
            Some(_) => format!("{OPEN} exp={expiry} mac={mac}]"),
            None => format!("{OPEN} mac={mac}]"),
        }
    }

    /// What the marker at the end of `description` says about the rule `spec` (as read from
    /// EC2; `None` when its source or protocol is one this service never writes).
    pub fn read(&self, description: &str, spec: Option<&RuleSpec>) -> Marker {
        use Invalid::{Malformed, Mismatch, Unsigned};
        let d = description.trim_end();
        let Some(start) = d.rfind(OPEN) else { return Marker::Absent };
        let Some(inner) = d[start + OPEN.len()..].strip_suffix(']') else {
            return Marker::Invalid(Malformed);
        };
        let (head, mac) = match inner.split_once(" mac=") {
            Some(parts) => parts,
            None if inner.is_empty() || inner.starts_with(" exp=") => return Marker::Invalid(Unsigned),
            None => return Marker::Invalid(Malformed),
        };
        let Some(expiry) = (if head.is_empty() { Some("") } else { head.strip_prefix(" exp=") }) else {
            return Marker::Invalid(Malformed);
        };
        let expires = match expiry {
            "" => None,
            at => match humantime::parse_rfc3339(at) {
                Ok(t) => Some(t),
                Err(_) => return Marker::Invalid(Malformed),
            },
        };
        let given = match URL_SAFE_NO_PAD.decode(mac) {
            Ok(bytes) if mac.len() == MAC_CHARS && bytes.len() == MAC_BYTES => bytes,
            _ => return Marker::Invalid(Malformed),
        };
        let Some(spec) = spec else { return Marker::Invalid(Mismatch) };
        match constant_time::verify_slices_are_equal(&given, &self.tag(spec, expiry)) {
            Ok(()) => Marker::Valid { expires },
            Err(_) => Marker::Invalid(Mismatch),
        }
    }
}

/// What a rule's description says about who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// No marker: someone else's rule.
    Absent,
    /// This service's marker, verified: the rule is managed.
    Valid {
        /// When it expires; `None` for a permanent rule.
        expires: Option<SystemTime>,
    },
    /// Something that looks like a marker but does not verify: the rule is not managed, and
    /// this is reported.
    Invalid(Invalid),
}

impl Marker {
    /// True when the rule is this service's (its marker verifies).
    pub fn managed(self) -> bool {
        matches!(self, Marker::Valid { .. })
    }

    /// The verified expiry, if any.
    pub fn expires(self) -> Option<SystemTime> {
        match self {
            Marker::Valid { expires } => expires,
            _ => None,
        }
    }
}

/// Why a marker does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The unsigned marker of versions before signing (`[awswl]`, `[awswl exp=…]`).
    Unsigned,
    /// Not in the marker's format (edited, truncated).
    Malformed,
    /// Well-formed, but the MAC is not this key's over this rule: edited, copied from
    /// another rule, or signed by a host with another key.
    Mismatch,
}

impl Invalid {
    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Invalid::Unsigned => "unsigned",
            Invalid::Malformed => "malformed",
            Invalid::Mismatch => "mismatch",
        }
    }

    /// For people: what it means and what to do.
    pub fn explain(self) -> &'static str {
        match self {
            Invalid::Unsigned => "its marker is the unsigned one of earlier versions, which anyone could have written (not trusted); remove the rule by hand, or add it again through this service",
            Invalid::Malformed => "its marker was edited and no longer parses",
            Invalid::Mismatch => "its marker does not verify: edited, copied from another rule, or signed with another host's key (every host must share [whitelist] marker_key_file or marker_key_env)",
        }
    }
}

/// A managed rule's description with `marker` in place of its old one (a renewal): the text
/// before the marker is kept (who asked, when, why), and an expiry that `{expires}` wrote into
/// it follows the marker's. Longer than EC2 allows is an error saying what to do.
pub fn remark(
    description: &str,
    old: Option<SystemTime>,
    new: Option<SystemTime>,
    marker: &str,
) -> Result<String, String> {
    let text = description.rfind(OPEN).map_or(description, |at| &description[..at]).trim_end();
    let text = match (old, new) {
        (Some(old), Some(new)) => text.replace(&rfc3339(old), &rfc3339(new)),
        _ => text.to_string(),
    };
    let full = if text.is_empty() { marker.to_string() } else { format!("{text} {marker}") };
    if full.chars().count() > MAX_LEN {
        return Err(format!(
            "the rule's description with the new expiry would be {} characters; EC2 allows {MAX_LEN}: \
             remove the rule and add it again with a shorter description",
            full.chars().count()
        ));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whitelist::target::{Ports, Protocol};

    fn key(b: u8) -> MarkerKey {
        MarkerKey::new(&[b; 32]).unwrap()
    }

    fn spec(group: &str, cidr: &str, protocol: Protocol, ports: Ports) -> RuleSpec {
        RuleSpec { group_id: group.into(), cidr: cidr.parse().unwrap(), protocol, ports }
    }

    fn ssh() -> RuleSpec {
        spec("sg-11111111", "203.0.113.7/32", Protocol::Tcp, Ports::single(22))
    }

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn a_marker_verifies_for_its_rule_only() {
        let k = key(1);
        let exp = Some(at("2026-11-24T20:00:00Z"));
        let m = k.marker(&ssh(), exp);
        assert!(m.starts_with("[awswl exp=2026-11-24T20:00:00Z mac="), "{m}");
        assert_eq!(m.len(), 53, "{m}: short, for a 255-character description");
        let d = format!("Added by MCP for alice {m}");
        assert_eq!(k.read(&d, Some(&ssh())), Marker::Valid { expires: exp });
        let others = [
            spec("sg-22222222", "203.0.113.7/32", Protocol::Tcp, Ports::single(22)),
            spec("sg-11111111", "203.0.113.8/32", Protocol::Tcp, Ports::single(22)),
            spec("sg-11111111", "203.0.113.7/32", Protocol::Udp, Ports::single(22)),
            spec("sg-11111111", "203.0.113.7/32", Protocol::Tcp, Ports::single(443)),
            spec("sg-11111111", "203.0.113.7/32", Protocol::Tcp, Ports { from: 22, to: 23 }),
        ];
        for other in &others {
            assert_eq!(k.read(&d, Some(other)), Marker::Invalid(Invalid::Mismatch), "{other:?}");
        }
        assert_eq!(key(2).read(&d, Some(&ssh())), Marker::Invalid(Invalid::Mismatch), "another key");
        assert_eq!(k.read(&d, None), Marker::Invalid(Invalid::Mismatch), "a source we never write");
    }

    #[test]
    fn permanent_rules_are_signed_too() {
        let k = key(1);
        let m = k.marker(&ssh(), None);
        assert!(m.starts_with("[awswl mac=") && !m.contains("exp="), "{m}");
        assert_eq!(k.read(&m, Some(&ssh())), Marker::Valid { expires: None });
        // Giving a permanent rule's MAC an expiry (or the reverse) breaks it.
        let with_exp = m.replace("[awswl ", "[awswl exp=2026-11-24T20:00:00Z ");
        assert_eq!(k.read(&with_exp, Some(&ssh())), Marker::Invalid(Invalid::Mismatch));
    }

    #[test]
    fn an_edited_expiry_does_not_verify() {
        let k = key(1);
        let m = k.marker(&ssh(), Some(at("2026-11-24T20:00:00Z")));
        let earlier = m.replace("2026-11-24T20", "2020-01-01T00");
        assert_eq!(k.read(&earlier, Some(&ssh())), Marker::Invalid(Invalid::Mismatch));
        let no_exp = format!("[awswl mac={}", m.split("mac=").nth(1).unwrap());
        assert_eq!(k.read(&no_exp, Some(&ssh())), Marker::Invalid(Invalid::Mismatch));
    }

    #[test]
    fn old_unsigned_markers_are_read_as_unmanaged() {
        let k = key(1);
        for d in ["x [awswl]", "x [awswl exp=2020-01-01T00:00:00Z]"] {
            let m = k.read(d, Some(&ssh()));
            assert_eq!(m, Marker::Invalid(Invalid::Unsigned), "{d}");
            assert!(!m.managed() && m.expires().is_none());
        }
    }

    #[test]
    fn descriptions_without_or_with_broken_markers() {
        let k = key(1);
        assert_eq!(k.read("office VPN", Some(&ssh())), Marker::Absent);
        assert_eq!(k.read("", Some(&ssh())), Marker::Absent);
        for d in [
            "[awswl exp=garbage mac=AAAAAAAAAAAAAAAA]",
            "[awswl] and more",
            "[awswl mac=short]",
            "[awswl mac=AAAAAAAAAAAAAAAAAAAA]",
            "[awswl exp=2026-11-24T20:00:00Z]x",
            "[awswl by=me mac=AAAAAAAAAAAAAAAA]",
            "[awswl mac=!!!!!!!!!!!!!!!!]",
        ] {
            let m = k.read(d, Some(&ssh()));
            assert!(matches!(m, Marker::Invalid(_)), "{d}: {m:?}");
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(MarkerKey::new(&[7; 31]).unwrap_err().contains("32"));
        assert!(format!("{:?}", key(9)).contains(".."));
    }
}
