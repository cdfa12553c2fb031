//! A principal with the parts of every [`Caller`] it makes, made once per credential.

use std::net::IpAddr;
use std::sync::Arc;

use super::Principal;
use crate::caller::Caller;

/// A principal as a credential proved it, with the parts of a [`Caller`] that come from the
/// credential alone, made once: verified tokens and API keys are kept as these, so a request
/// makes its caller without copying a string. Immutable, so the parts cannot go stale.
#[derive(Debug, PartialEq, Eq)]
pub struct Authenticated {
    principal: Principal,
    shared: Shared,
}

/// What every caller of one principal shares.
#[derive(Debug, PartialEq, Eq)]
struct Shared {
    identity: Arc<str>,
    scopes: Arc<[String]>,
    security_groups: Option<Arc<[String]>>,
    read_only: Option<Arc<str>>,
}

impl Authenticated {
    /// Makes the shared parts of `principal`'s callers.
    pub fn new(principal: Principal) -> Authenticated {
        let shared = Shared {
            identity: principal.identity().into(),
            scopes: principal.scopes.iter().cloned().collect(),
            security_groups: principal.security_groups.as_deref().map(Arc::from),
            read_only: principal.read_only_setting().map(Arc::from),
        };
        Authenticated { principal, shared }
    }

    /// The one conversion from what authentication proved to the caller every later layer sees
    /// (MCP, tools, the whitelist domain). With authentication off there is no identity and no
    /// scope restriction.
    pub fn caller(&self, auth_enabled: bool, addr: Option<IpAddr>, request_id: &Arc<str>) -> Caller {
        let shared = &self.shared;
        Caller {
            addr,
            identity: auth_enabled.then(|| shared.identity.clone()),
            request_id: Some(request_id.clone()),
            scopes: auth_enabled.then(|| shared.scopes.clone()),
            security_groups: shared.security_groups.clone(),
            read_only: auth_enabled.then(|| shared.read_only.clone()).flatten(),
        }
    }

    /// [`Principal::identity`], made once: the key a client's requests are counted under.
    pub fn identity_key(&self) -> &str {
        &self.shared.identity
    }
}

impl std::ops::Deref for Authenticated {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}
