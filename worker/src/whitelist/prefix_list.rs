//! EC2 managed prefix lists (`pl-…`) as targets wherever a security group is one: an entry is
//! a CIDR and a description, so it is shown and handled as a rule whose id is its CIDR, whose
//! protocol is `all` and whose ports are `all` (a list has neither: the rules of the groups that
//! reference it decide them). The description carries the same signed expiry marker as a rule's.
//!
//! [`Targets`] is the firewall the service talks to: security groups pass through to the inner
//! [`Firewall`] untouched; for a prefix list each write is a read-modify-write on the list's
//! version (EC2's `CurrentVersion`, optimistic concurrency): read the list, work out the edit,
//! write it for that version; when another writer moved the version in between, EC2 refuses
//! ([`VERSION_CONFLICT`]) and the whole step is done again, at most [`MAX_ATTEMPTS`] times,
//! then a clear error with nothing changed by this call.

use std::sync::Arc;

use ipnet::IpNet;

use super::firewall::{
    Firewall, FirewallError, FwFuture, GroupPage, PrefixListEdit, PrefixListEntry, PrefixListState, Scope,
    VERSION_CONFLICT,
};
pub use super::ids::is_prefix_list;
use super::rules::{ExistingRule, RuleSpec};

/// How many times a prefix-list write is tried when the list keeps changing under it.
pub const MAX_ATTEMPTS: usize = 3;

/// The IAM action every prefix-list write needs (add, remove, renew).
pub const MODIFY_ACTION: &str = "ec2:ModifyManagedPrefixList";

/// An entry as the domain's rule: id = its CIDR, protocol `-1`, ports -1.
pub fn entry_rule(list: &str, e: &PrefixListEntry) -> ExistingRule {
    ExistingRule {
        rule_id: e.cidr.to_string(),
        group_id: list.to_string(),
        cidr: Some(e.cidr),
        other_source: None,
        protocol: "-1".into(),
        from_port: -1,
        to_port: -1,
        description: e.description.clone(),
    }
}

/// The firewall the service uses: prefix lists handled here, everything else passed through.
pub struct Targets {
    inner: Arc<dyn Firewall>,
}

impl Targets {
    /// Wraps `inner` (EC2, or a test's firewall).
    pub fn wrap(inner: Arc<dyn Firewall>) -> Arc<dyn Firewall> {
        Arc::new(Targets { inner })
    }

    async fn entries(&self, scope: &Scope, id: &str) -> Result<Vec<ExistingRule>, FirewallError> {
        let state = self.inner.prefix_list(scope, id).await?;
        Ok(state.entries.iter().map(|e| entry_rule(id, e)).collect())
    }

    /// Reads the list, asks `plan` for the edit, writes it for the version read; again from
    /// the read when the version moved, at most [`MAX_ATTEMPTS`] times.
    async fn write(
        &self,
        scope: &Scope,
        id: &str,
        plan: impl Fn(&PrefixListState) -> Result<PrefixListEdit, FirewallError>,
    ) -> Result<(), FirewallError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let state = self.inner.prefix_list(scope, id).await?;
            let edit = plan(&state)?;
            match self.inner.modify_prefix_list(scope, id, state.version, &edit).await {
                Err(FirewallError::Other { code, .. }) if code == VERSION_CONFLICT => {
                    tracing::info!(
                        event = "prefix_list_conflict",
                        list = id,
                        version = state.version,
                        attempt,
                        "prefix list {id} changed after it was read (version {}); reading it again",
                        state.version
                    );
                }
                done => return done,
            }
        }
        Err(FirewallError::Other {
            action: MODIFY_ACTION.into(),
            code: VERSION_CONFLICT.into(),
            message: format!(
                "prefix list {id} was changed by another writer between each of {MAX_ATTEMPTS} reads and \
                 writes; this call changed nothing: try again when the list is quieter"
            ),
        })
    }

    async fn add(&self, scope: &Scope, spec: &RuleSpec, description: &str) -> Result<String, FirewallError> {
        let id = spec.group_id.as_str();
        self.write(scope, id, |state| {
            if state.entries.iter().any(|e| e.cidr == spec.cidr) {
                return Err(FirewallError::Duplicate);
            }
            if let Some(max) = state.max_entries.filter(|m| state.entries.len() >= *m as usize) {
                return Err(FirewallError::Other {
                    action: MODIFY_ACTION.into(),
                    code: "PrefixListFull".into(),
                    message: format!(
                        "prefix list {id} holds {max} entries, its MaxEntries; remove one, or raise MaxEntries \
                         (each referencing security group counts MaxEntries against its rule quota)"
                    ),
                });
            }
            let entry = PrefixListEntry { cidr: spec.cidr, description: description.to_string() };
            Ok(PrefixListEdit { add: vec![entry], remove: Vec::new() })
        })
        .await?;
        Ok(spec.cidr.to_string())
    }

    async fn remove(&self, scope: &Scope, id: &str, rule_ids: &[String]) -> Result<(), FirewallError> {
        if rule_ids.is_empty() {
            return Ok(());
        }
        let wanted: Vec<IpNet> = rule_ids.iter().filter_map(|r| r.parse().ok()).collect();
        self.write(scope, id, |state| {
            let remove: Vec<IpNet> =
                wanted.iter().copied().filter(|c| state.entries.iter().any(|e| e.cidr == *c)).collect();
            if remove.is_empty() {
                return Err(FirewallError::RuleNotFound);
            }
            Ok(PrefixListEdit { add: Vec::new(), remove })
        })
        .await
    }

    /// A renewal: the entry removed and added again with the new description, in one version
    /// (the list never lacks it).
    async fn redescribe_entry(
        &self,
        scope: &Scope,
        spec: &RuleSpec,
        description: &str,
    ) -> Result<(), FirewallError> {
        self.write(scope, &spec.group_id, |state| {
            if !state.entries.iter().any(|e| e.cidr == spec.cidr) {
                return Err(FirewallError::RuleNotFound);
            }
            let entry = PrefixListEntry { cidr: spec.cidr, description: description.to_string() };
            Ok(PrefixListEdit { add: vec![entry], remove: vec![spec.cidr] })
        })
        .await
    }

    async fn can_modify(&self, scope: &Scope, id: &str) -> Result<(), FirewallError> {
        let state = self.inner.prefix_list(scope, id).await?;
        self.inner.can_modify_prefix_list(scope, &state).await
    }
}

impl Firewall for Targets {
    fn list<'a>(&'a self, scope: &'a Scope, group: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
        match is_prefix_list(group) {
            true => Box::pin(self.entries(scope, group)),
            false => self.inner.list(scope, group),
        }
    }

    fn authorize<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        description: &'a str,
    ) -> FwFuture<'a, String> {
        match is_prefix_list(&spec.group_id) {
            true => Box::pin(self.add(scope, spec, description)),
            false => self.inner.authorize(scope, spec, description),
        }
    }

    fn revoke<'a>(&'a self, scope: &'a Scope, group: &'a str, rule_ids: &'a [String]) -> FwFuture<'a, ()> {
        match is_prefix_list(group) {
            true => Box::pin(self.remove(scope, group, rule_ids)),
            false => self.inner.revoke(scope, group, rule_ids),
        }
    }

    fn can_revoke<'a>(&'a self, scope: &'a Scope, spec: &'a RuleSpec) -> FwFuture<'a, ()> {
        match is_prefix_list(&spec.group_id) {
            true => Box::pin(self.can_modify(scope, &spec.group_id)),
            false => self.inner.can_revoke(scope, spec),
        }
    }

    fn can_authorize<'a>(&'a self, scope: &'a Scope, spec: &'a RuleSpec) -> FwFuture<'a, ()> {
        match is_prefix_list(&spec.group_id) {
            true => Box::pin(self.can_modify(scope, &spec.group_id)),
            false => self.inner.can_authorize(scope, spec),
        }
    }

    fn redescribe<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        rule_id: &'a str,
        description: &'a str,
    ) -> FwFuture<'a, ()> {
        match is_prefix_list(&spec.group_id) {
            true => Box::pin(self.redescribe_entry(scope, spec, description)),
            false => self.inner.redescribe(scope, spec, rule_id, description),
        }
    }

    fn can_redescribe<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        rule_id: &'a str,
        description: &'a str,
    ) -> FwFuture<'a, ()> {
        match is_prefix_list(&spec.group_id) {
            true => Box::pin(self.can_modify(scope, &spec.group_id)),
            false => self.inner.can_redescribe(scope, spec, rule_id, description),
        }
    }

    fn groups_page<'a>(
        &'a self,
        scope: &'a Scope,
        patterns: &'a [String],
        token: Option<&'a str>,
    ) -> FwFuture<'a, GroupPage> {
        self.inner.groups_page(scope, patterns, token)
    }

    fn prefix_list<'a>(&'a self, scope: &'a Scope, id: &'a str) -> FwFuture<'a, PrefixListState> {
        self.inner.prefix_list(scope, id)
    }

    fn modify_prefix_list<'a>(
        &'a self,
        scope: &'a Scope,
        id: &'a str,
        version: i64,
        edit: &'a PrefixListEdit,
    ) -> FwFuture<'a, ()> {
        self.inner.modify_prefix_list(scope, id, version, edit)
    }

    fn can_modify_prefix_list<'a>(&'a self, scope: &'a Scope, list: &'a PrefixListState) -> FwFuture<'a, ()> {
        self.inner.can_modify_prefix_list(scope, list)
    }
}

#[cfg(test)]
#[path = "prefix_list_tests.rs"]
mod tests;
