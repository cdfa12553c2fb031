//! Where an access lives: the groups the caller may touch (policy patterns resolved with
//! EC2's paginated group listing, then every group checked again against the policy and the
//! caller's credential), and the rules in them that let an address, a network or a user in,
//! managed and unmanaged told apart, with who added each and when (from the audit log).

use std::collections::HashMap;

use ipnet::IpNet;
use serde::Serialize;

use super::super::{
    check_group_id, invalid, Caller, Error, ExistingRule, FirewallError, RuleView, Scope, Whitelist,
};
use crate::whitelist::audit::blocking;
use crate::whitelist::target::{host_net, parse_cidr};
use crate::whitelist::GroupInfo;

/// Most pages of groups read (a guard against an endpoint whose pages never end).
const MAX_GROUP_PAGES: usize = 100;

/// What find (and revoke-everywhere) look for: an address or network, a user, or both.
#[derive(Debug, Clone, Default)]
pub struct FindArgs {
    /// An address, a CIDR, or `"current"` (the caller's address).
    pub ip_address: Option<String>,
    /// A user: matched against the rule's description and against who added it.
    pub user: Option<String>,
}

/// The query, resolved once.
#[derive(Debug, Clone)]
pub(in crate::whitelist) struct Query {
    pub net: Option<IpNet>,
    pub user: Option<String>,
}

/// How a rule's network stands to the network asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The same network.
    Exact,
    /// The rule allows a wider network that contains it (others are let in by it too).
    Wider,
    /// The rule allows part of it.
    Narrower,
    /// Matched by user only (no network asked).
    User,
}

/// A rule found: the rule, its group, how it matched, who added it and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// The rule (managed or not, port, protocol, expiry).
    #[serde(flatten)]
    pub rule: RuleView,
    /// The group's name.
    pub group_name: String,
    /// How it matched the network asked about.
    pub relation: Relation,
    /// Who added it, when the audit log still has its add.
    pub added_by: Option<String>,
    /// When it was added, from the same entry.
    pub added_at: Option<String>,
}

impl Whitelist {
    /// Every group the caller may touch: the policy's patterns (or, when it has none, the
    /// credential's) sent to EC2 as a `group-id` filter, every page read, and every group
    /// checked again here (an endpoint that ignores the filter widens nothing).
    pub async fn groups(&self, scope: &Scope, who: &Caller) -> Result<Vec<GroupInfo>, Error> {
        let patterns = match (&self.policy.allowed_security_groups, &who.security_groups) {
            (p, _) if !p.is_empty() => p.clone(),
            (_, Some(c)) => c.to_vec(),
            _ => Vec::new(),
        };
        let mut groups = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_GROUP_PAGES {
            let page = self.firewall.groups_page(scope, &patterns, token.as_deref()).await?;
            groups.extend(page.groups.into_iter().filter(|g| self.may_touch(who, &g.group_id)));
            match page.next {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                Some(_) => break,
                None => return Ok(groups),
            }
        }
        Err(Error::Aws(FirewallError::Other {
            action: "ec2:DescribeSecurityGroups".into(),
            code: "TooManyPages".into(),
            message: format!(
                "the security groups did not end after {MAX_GROUP_PAGES} pages (or a page repeated); \
                 narrow allowed_security_groups"
            ),
        }))
    }

    /// The rules, in every group the caller may touch, that let the query in.
    pub async fn find(&self, scope: &Scope, args: &FindArgs, who: &Caller) -> Result<Vec<Found>, Error> {
        let query = self.query(args, who)?;
        let groups = self.groups(scope, who).await?;
        let added = self.who_added().await;
        let mut found = Vec::new();
        for g in &groups {
            let rules = match self.cached(scope, &g.group_id).await {
                Ok(rules) => rules,
                // Deleted between the listing and the read: nothing to find there.
                Err(Error::Aws(FirewallError::GroupNotFound { .. })) => continue,
                Err(e) => return Err(e),
            };
            for r in rules.iter() {
                let by = added.get(&r.rule_id);
                if let Some(relation) = relation(&query, r, by.map(|b| b.0.as_str())) {
                    found.push(Found {
                        rule: self.view(r),
                        group_name: g.name.clone(),
                        relation,
                        added_by: by.map(|b| b.0.clone()),
                        added_at: by.map(|b| b.1.clone()),
                    });
                }
            }
        }
        Ok(found)
    }

    /// The query resolved: `current` is the caller's address; at least one of the two given.
    pub(in crate::whitelist) fn query(&self, args: &FindArgs, who: &Caller) -> Result<Query, Error> {
        let net = match args.ip_address.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(a) if a.eq_ignore_ascii_case("current") => Some(host_net(who.addr.ok_or_else(|| {
                Error::Invalid {
                    field: "ip_address",
                    message: "\"current\" means your address as this server sees it, and this transport has none; give an address".into(),
                }
            })?)),
            Some(a) => Some(parse_cidr(a).map_err(invalid("ip_address"))?),
        };
        let user = args.user.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_string);
        if net.is_none() && user.is_none() {
            return Err(Error::Invalid {
                field: "ip_address",
                message: "give ip_address (an address, a CIDR or \"current\"), user, or both".into(),
            });
        }
        Ok(Query { net, user })
    }

    /// The policy and the caller's credential both allow the group (and it is a group id).
    pub(in crate::whitelist) fn may_touch(&self, who: &Caller, group: &str) -> bool {
        check_group_id(group).is_ok() && self.policy.check_group(group).is_ok() && who.may_touch_group(group)
    }

    /// Rule id → (identity, time) of the adds the audit log's recent tail holds. An audit log
    /// that cannot be read leaves them unknown; it never fails a read.
    pub(in crate::whitelist) async fn who_added(&self) -> HashMap<String, (String, String)> {
        let entries = blocking(&self.recorder, |r| r.recent()).await.unwrap_or_default();
        entries
            .into_iter()
            .filter(|e| e.action == "add" && e.phase.as_deref() == Some("outcome"))
            .filter_map(|e| {
                let id = e.rule.get("rule_id")?.as_str()?.to_string();
                Some((id, (e.identity, e.time)))
            })
            .collect()
    }
}

/// How `r` matches the query (`None`: it does not). With both a network and a user, both must.
pub(in crate::whitelist) fn relation(
    q: &Query,
    r: &ExistingRule,
    added_by: Option<&str>,
) -> Option<Relation> {
    let by_user = match &q.user {
        None => true,
        Some(u) => {
            let u = u.to_ascii_lowercase();
            added_by.is_some_and(|a| a.eq_ignore_ascii_case(&u)) || words(&r.description).any(|w| w == u)
        }
    };
    if !by_user {
        return None;
    }
    let Some(net) = q.net else { return Some(Relation::User) };
    let cidr = r.cidr?;
    if cidr == net {
        Some(Relation::Exact)
    } else if cidr.contains(&net) {
        Some(Relation::Wider)
    } else if net.contains(&cidr) {
        Some(Relation::Narrower)
    } else {
        None
    }
}

/// The description's words, lower-cased (a user matches a whole word, never part of one).
pub(in crate::whitelist) fn words(description: &str) -> impl Iterator<Item = String> + '_ {
    description
        .split(|c: char| !(c.is_ascii_alphanumeric() || "._-@".contains(c)))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
}
