//! Who is calling: the one type that travels from the edge (HTTP after authentication, or stdio)
//! through the MCP dispatcher to the tools and the whitelist domain. It holds no transport or
//! credential types, so the domain can take it as it is.

use std::net::IpAddr;

/// A caller, as every layer sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller {
    /// The client's address, after trusted-proxy resolution by the transport (`"current"`,
    /// rate limits, audit).
    pub addr: Option<IpAddr>,
    /// The authenticated identity (`jwt:alice`, `key:ci`); `None` when authentication is off.
    pub identity: Option<String>,
    /// The transport's request id, so tool logs and audit lines join the request's log lines.
    pub request_id: Option<String>,
    /// Scopes the caller was granted; `None` when authentication is off (everything allowed).
    pub scopes: Option<Vec<String>>,
    /// Security groups (ids or `sg-0abc*` patterns) the caller's credential allows; `None` = no
    /// restriction beyond the policy.
    pub security_groups: Option<Vec<String>>,
    /// Why this caller may change nothing, naming the setting (an API key marked `read_only`);
    /// `None` when its credential allows changes (the server's policy may still refuse them).
    pub read_only: Option<String>,
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
            scopes: Some(vec!["whitelist:read".into()]),
            security_groups: Some(vec!["sg-0abc*".into(), "sg-01".into()]),
            ..Caller::default()
        };
        assert!(narrow.has_scope("whitelist:read") && !narrow.has_scope("whitelist:write"));
        assert!(narrow.may_touch_group("sg-0abc123") && narrow.may_touch_group("sg-01"));
        assert!(!narrow.may_touch_group("sg-02"));
    }
}
