//! Who is calling: the one type that travels from the edge (HTTP after authentication, or stdio)
//! through the MCP dispatcher to the tools and the whitelist domain. It holds no transport or
//! credential types, so the domain can take it as it is.

use std::net::IpAddr;
use std::sync::Arc;

/// A caller, as every layer sees it. What the credential says is shared (`Arc`), so making a
/// caller per request from a cached credential copies no string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller {
    /// The client's address, after trusted-proxy resolution by the transport (`"current"`,
    /// rate limits, audit).
    pub addr: Option<IpAddr>,
    /// The authenticated identity (`jwt:alice`, `key:ci`); `None` when authentication is off.
    pub identity: Option<Arc<str>>,
    /// The transport's request id, so tool logs and audit lines join the request's log lines.
    pub request_id: Option<Arc<str>>,
    /// Scopes the caller was granted; `None` when authentication is off (everything allowed).
    pub scopes: Option<Arc<[String]>>,
    /// Security groups (ids or `sg-0abc*` patterns) the caller's credential allows; `None` = no
    /// restriction beyond the policy.
    pub security_groups: Option<Arc<[String]>>,
    /// Why this caller may change nothing, naming the setting (an API key marked `read_only`);
    /// `None` when its credential allows changes (the server's policy may still refuse them).
    pub read_only: Option<Arc<str>>,
}

impl Caller {
    /// Was `scope` granted? Always true when authentication is off.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|granted| granted.iter().any(|s| s == scope))
    }

    /// May this security group be touched, as far as the caller's credential says? The policy's
    /// `allowed_security_groups` is checked separately; both must agree.
    pub fn may_touch_group(&self, group_id: &str) -> bool {
        match &self.security_groups {
            None => true,
            Some(patterns) => patterns.iter().any(|p| crate::whitelist::policy::glob(p, group_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_restriction_unless_the_credential_says_so() {
        let open = Caller::default();
        assert!(open.has_scope("whitelist:write") && open.may_touch_group("sg-1"));
        let narrow = Caller {
            scopes: Some(["whitelist:read".to_string()].into()),
            security_groups: Some(["sg-0abc*".to_string(), "sg-01".to_string()].into()),
            ..Caller::default()
        };
        assert!(narrow.has_scope("whitelist:read") && !narrow.has_scope("whitelist:write"));
        assert!(narrow.may_touch_group("sg-0abc123") && narrow.may_touch_group("sg-01"));
        assert!(!narrow.may_touch_group("sg-02"));
    }
}
