//! [`Firewall`] on EC2: security group ingress rules read with DescribeSecurityGroupRules,
//! added with AuthorizeSecurityGroupIngress, removed by rule id, renewed (a new description
//! carrying the new signed marker) with ModifySecurityGroupRules by rule id (moto ignores
//! `DryRun` on UpdateSecurityGroupRuleDescriptionsIngress and writes; this one it honours); groups
//! listed a page at a time with DescribeSecurityGroups (a `group-id` filter of the patterns).

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, SecurityGroupRule, SecurityGroupRuleRequest,
    SecurityGroupRuleUpdate,
};
use ipnet::IpNet;

use super::clients::{Clients, Session};
use super::receipts;
use super::settings::AwsSettings;
use crate::metrics::aws_call;
use crate::whitelist::{
    ChangeKind, ExistingRule, Firewall, FirewallError, FwFuture, GroupInfo, GroupPage, PrefixListEdit,
    PrefixListState, Protocol, RuleSpec, Scope,
};

/// Most pages of rules read for one group (a guard against an endpoint that never ends).
const MAX_PAGES: usize = 1000;

/// The EC2 implementation of [`Firewall`], shared by every request of a worker.
pub struct Ec2Firewall {
    clients: Clients,
}

impl Ec2Firewall {
    /// Cheap: nothing talks to AWS until the first call.
    pub fn new(settings: AwsSettings) -> Self {
        Ec2Firewall { clients: Clients::new(settings) }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &AwsSettings {
        self.clients.settings()
    }

    /// The clients it calls through (for [`Ec2Firewall::identity`]).
    pub(super) fn clients(&self) -> &Clients {
        &self.clients
    }

    /// How many STS GetCallerIdentity checks of per-call keys were made (shows the cache works).
    pub fn per_call_verifications(&self) -> u64 {
        self.clients.sts_verifications()
    }

    async fn list_rules(&self, scope: &Scope, group: &str) -> Result<Vec<ExistingRule>, FirewallError> {
        let s = self.clients.session(scope, group).await?;
        self.ensure_group(&s, group).await?;
        read_rules(&s, group).await
    }

    /// Turns a missing group into `GroupNotFound` (a rule filter on it would just be empty).
    async fn ensure_group(&self, s: &Session, group: &str) -> Result<(), FirewallError> {
        let call = s.call("ec2:DescribeSecurityGroups", group);
        let out = aws_call(
            "ec2:DescribeSecurityGroups",
            s.ec2.describe_security_groups().group_ids(group).send().await,
        )
        .map_err(|e| s.fail(&call, &e))?;
        if out.security_groups().iter().any(|g| g.group_id() == Some(group)) {
            Ok(())
        } else {
            Err(FirewallError::GroupNotFound { group: group.to_string(), region: s.region.clone() })
        }
    }

    async fn add(&self, scope: &Scope, spec: &RuleSpec, description: &str) -> Result<String, FirewallError> {
        let action = "ec2:AuthorizeSecurityGroupIngress";
        let group = spec.group_id.as_str();
        let s = self.clients.session(scope, group).await?;
        let call = s.call(action, group);
        let sent = s
            .ec2
            .authorize_security_group_ingress()
            .group_id(group)
            .ip_permissions(permission(spec, description))
            .send()
            .await;
        let sent = receipts::noted(&s, sent);
        let out = aws_call("ec2:AuthorizeSecurityGroupIngress", sent).map_err(|e| s.fail(&call, &e))?;
        let id = out
            .security_group_rules()
            .iter()
            .filter(|r| r.is_egress() != Some(true))
            .find_map(|r| r.security_group_rule_id());
        if let Some(id) = id {
            tracing::debug!(group, rule_id = id, "ingress rule added");
            return Ok(id.to_string());
        }
        // An endpoint that does not return the new rule: find it by what it is.
        let rules = read_rules(&s, group).await?;
        rules.into_iter().find(|r| r.matches(spec)).map(|r| r.rule_id).ok_or_else(|| FirewallError::Other {
            action: action.to_string(),
            code: "RuleIdMissing".into(),
            message: format!("EC2 accepted the rule on {group} but it does not show among the group's rules"),
        })
    }

    async fn remove(&self, scope: &Scope, group: &str, rule_ids: &[String]) -> Result<(), FirewallError> {
        if rule_ids.is_empty() {
            return Ok(());
        }
        let action = "ec2:RevokeSecurityGroupIngress";
        let s = self.clients.session(scope, group).await?;
        let call = s.call(action, group);
        let sent = s
            .ec2
            .revoke_security_group_ingress()
            .group_id(group)
            .set_security_group_rule_ids(Some(rule_ids.to_vec()))
            .send()
            .await;
        let sent = receipts::noted(&s, sent);
        let out = aws_call("ec2:RevokeSecurityGroupIngress", sent).map_err(|e| s.fail(&call, &e))?;
        if out.r#return() == Some(false) || !out.unknown_ip_permissions().is_empty() {
            return Err(FirewallError::RuleNotFound);
        }
        tracing::debug!(group, rules = rule_ids.len(), "ingress rules removed");
        Ok(())
    }

    async fn group_page(
        &self,
        scope: &Scope,
        patterns: &[String],
        token: Option<&str>,
    ) -> Result<GroupPage, FirewallError> {
        let action = "ec2:DescribeSecurityGroups";
        let s = self.clients.session(scope, "").await?;
        let call = s.call(action, "");
        let mut ask =
            s.ec2.describe_security_groups().max_results(1000).set_next_token(token.map(str::to_string));
        if !patterns.is_empty() {
            ask = ask.filters(Filter::builder().name("group-id").set_values(Some(patterns.to_vec())).build());
        }
        let out = aws_call(action, ask.send().await).map_err(|e| s.fail(&call, &e))?;
        let groups = out
            .security_groups()
            .iter()
            .map(|g| GroupInfo {
                group_id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                vpc_id: g.vpc_id().map(str::to_string),
                description: g.description().unwrap_or_default().to_string(),
                tags: g
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                    .collect(),
            })
            .collect();
        let next = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        Ok(GroupPage { groups, next })
    }

    /// The rule `rule_id` (exactly `spec`) given `description`, or only asked about (`dry`):
    /// an endpoint that ignores `DryRun` has written the planned description, which is an error
    /// to report, never "allowed".
    async fn modify(
        &self,
        scope: &Scope,
        spec: &RuleSpec,
        rule_id: &str,
        description: &str,
        dry: bool,
    ) -> Result<(), FirewallError> {
        let action = ChangeKind::Renew.iam_action();
        let group = spec.group_id.as_str();
        let s = self.clients.session(scope, group).await?;
        let call = s.call(action, group);
        let mut rule = SecurityGroupRuleRequest::builder()
            .ip_protocol(spec.protocol.ec2_name(&spec.cidr))
            .description(description);
        if spec.protocol != Protocol::All {
            rule = rule.from_port(spec.ports.from).to_port(spec.ports.to);
        }
        rule = match spec.cidr {
            IpNet::V4(_) => rule.cidr_ipv4(spec.cidr.to_string()),
            IpNet::V6(_) => rule.cidr_ipv6(spec.cidr.to_string()),
        };
        let update = SecurityGroupRuleUpdate::builder()
            .security_group_rule_id(rule_id)
            .security_group_rule(rule.build());
        let sent = s
            .ec2
            .modify_security_group_rules()
            .group_id(group)
            .security_group_rules(update.build())
            .dry_run(dry)
            .send()
            .await;
        let sent = receipts::noted(&s, sent);
        let done = match sent {
            Err(e) if dry && e.code() == Some("DryRunOperation") => return aws_call(action, Ok(())),
            Ok(_) if dry => Err(FirewallError::Other {
                action: action.to_string(),
                code: "DryRunIgnored".into(),
                message: format!(
                    "the EC2 endpoint ignored DryRun and rewrote rule {rule_id} in {group}; check the group"
                ),
            }),
            Ok(out) if out.r#return() == Some(false) => Err(FirewallError::RuleNotFound),
            Ok(_) => Ok(()),
            Err(e) => Err(s.fail(&call, &e)),
        };
        aws_call(action, done)?;
        tracing::debug!(group, rule_id, "ingress rule description rewritten");
        Ok(())
    }
}

impl Ec2Firewall {
    /// The change `spec` asked of EC2 with `DryRun` (authorize, else revoke): EC2 answers
    /// `DryRunOperation` when the identity may, `UnauthorizedOperation` when it may not; nothing
    /// changes either way. An endpoint that ignores `DryRun` and really changes the group is an
    /// error, never "allowed"; one that ignores it for a revoke of a rule that is not there
    /// changed nothing, so that counts as allowed (the check before an add asks about exactly
    /// such a rule).
    async fn dry_run(&self, scope: &Scope, spec: &RuleSpec, authorize: bool) -> Result<(), FirewallError> {
        let action = match authorize {
            true => "ec2:AuthorizeSecurityGroupIngress",
            false => "ec2:RevokeSecurityGroupIngress",
        };
        let group = spec.group_id.as_str();
        let s = self.clients.session(scope, group).await?;
        let call = s.call(action, group);
        let dry = |code: Option<&str>| code == Some("DryRunOperation");
        let ignored = || FirewallError::Other {
            action: action.to_string(),
            code: "DryRunIgnored".into(),
            message: format!("the EC2 endpoint ignored DryRun and changed {group}; check the group"),
        };
        let allowed = if authorize {
            let sent = s.ec2.authorize_security_group_ingress().group_id(group);
            match receipts::noted(&s, sent.ip_permissions(permission(spec, "")).dry_run(true).send().await) {
                Ok(_) => Err(ignored()),
                Err(e) if dry(e.code()) => Ok(()),
                Err(e) => Err(s.fail(&call, &e)),
            }
        } else {
            let sent = s.ec2.revoke_security_group_ingress().group_id(group);
            match receipts::noted(&s, sent.ip_permissions(permission(spec, "")).dry_run(true).send().await) {
                Ok(out) if out.r#return() == Some(false) || !out.unknown_ip_permissions().is_empty() => {
                    Ok(())
                }
                Ok(_) => Err(ignored()),
                Err(e) if dry(e.code()) => Ok(()),
                Err(e) => Err(s.fail(&call, &e)),
            }
        };
        aws_call(action, allowed)
    }
}

impl Firewall for Ec2Firewall {
    fn list<'a>(&'a self, scope: &'a Scope, group: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
        Box::pin(self.list_rules(scope, group))
    }

    fn authorize<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        description: &'a str,
    ) -> FwFuture<'a, String> {
        Box::pin(self.add(scope, spec, description))
    }

    fn revoke<'a>(&'a self, scope: &'a Scope, group: &'a str, rule_ids: &'a [String]) -> FwFuture<'a, ()> {
        Box::pin(self.remove(scope, group, rule_ids))
    }

    fn can_revoke<'a>(&'a self, scope: &'a Scope, spec: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(self.dry_run(scope, spec, false))
    }

    fn can_authorize<'a>(&'a self, scope: &'a Scope, spec: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(self.dry_run(scope, spec, true))
    }

    fn redescribe<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        rule_id: &'a str,
        description: &'a str,
    ) -> FwFuture<'a, ()> {
        Box::pin(self.modify(scope, spec, rule_id, description, false))
    }

    fn can_redescribe<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        rule_id: &'a str,
        description: &'a str,
    ) -> FwFuture<'a, ()> {
        Box::pin(self.modify(scope, spec, rule_id, description, true))
    }

    fn groups_page<'a>(
        &'a self,
        scope: &'a Scope,
        patterns: &'a [String],
        token: Option<&'a str>,
    ) -> FwFuture<'a, GroupPage> {
        Box::pin(self.group_page(scope, patterns, token))
    }

    fn prefix_list<'a>(&'a self, scope: &'a Scope, id: &'a str) -> FwFuture<'a, PrefixListState> {
        Box::pin(self.read_prefix_list(scope, id))
    }

    fn modify_prefix_list<'a>(
        &'a self,
        scope: &'a Scope,
        id: &'a str,
        version: i64,
        edit: &'a PrefixListEdit,
    ) -> FwFuture<'a, ()> {
        Box::pin(self.write_prefix_list(scope, id, version, edit))
    }

    fn can_modify_prefix_list<'a>(&'a self, scope: &'a Scope, list: &'a PrefixListState) -> FwFuture<'a, ()> {
        Box::pin(self.probe_prefix_list(scope, list))
    }
}

/// Every ingress rule of `group`, following `NextToken`.
async fn read_rules(s: &Session, group: &str) -> Result<Vec<ExistingRule>, FirewallError> {
    let call = s.call("ec2:DescribeSecurityGroupRules", group);
    let filter = Filter::builder().name("group-id").values(group).build();
    let mut rules = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let sent = s
            .ec2
            .describe_security_group_rules()
            .filters(filter.clone())
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await;
        let out = aws_call("ec2:DescribeSecurityGroupRules", sent).map_err(|e| s.fail(&call, &e))?;
        rules
            .extend(out.security_group_rules().iter().filter(|r| r.is_egress() == Some(false)).map(existing));
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(rules),
        }
    }
    Err(FirewallError::Other {
        action: call.action.to_string(),
        code: "TooManyPages".into(),
        message: format!("the rules of {group} did not end after {MAX_PAGES} pages"),
    })
}

/// The one `IpPermission` that stands for `spec`.
fn permission(spec: &RuleSpec, description: &str) -> IpPermission {
    let mut p = IpPermission::builder().ip_protocol(spec.protocol.ec2_name(&spec.cidr));
    // Ports mean nothing for protocol -1: EC2 ignores them, so none are sent.
    if spec.protocol != Protocol::All {
        p = p.from_port(spec.ports.from).to_port(spec.ports.to);
    }
    let description = (!description.is_empty()).then(|| description.to_string());
    match spec.cidr {
        IpNet::V4(_) => p.ip_ranges(
            IpRange::builder().cidr_ip(spec.cidr.to_string()).set_description(description).build(),
        ),
        IpNet::V6(_) => p.ipv6_ranges(
            Ipv6Range::builder().cidr_ipv6(spec.cidr.to_string()).set_description(description).build(),
        ),
    }
    .build()
}

/// One EC2 rule as the domain sees it.
fn existing(r: &SecurityGroupRule) -> ExistingRule {
    let raw_cidr = r.cidr_ipv4().or(r.cidr_ipv6());
    let cidr = raw_cidr.and_then(|c| c.parse::<IpNet>().ok());
    let other_source = match cidr {
        Some(_) => None,
        None => r
            .referenced_group_info()
            .and_then(|g| g.group_id())
            .or(r.prefix_list_id())
            .or(raw_cidr)
            .map(str::to_string),
    };
    ExistingRule {
        rule_id: r.security_group_rule_id().unwrap_or_default().to_string(),
        group_id: r.group_id().unwrap_or_default().to_string(),
        cidr,
        other_source,
        protocol: r.ip_protocol().unwrap_or("-1").to_string(),
        from_port: r.from_port().unwrap_or(-1),
        to_port: r.to_port().unwrap_or(-1),
        description: r.description().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whitelist::Ports;

    fn spec(protocol: Protocol, ports: Ports, cidr: &str) -> RuleSpec {
        RuleSpec { group_id: "sg-1".into(), cidr: cidr.parse().unwrap(), protocol, ports }
    }

    #[test]
    fn ipv6_goes_to_ipv6_ranges() {
        let p = permission(&spec(Protocol::Tcp, Ports::single(22), "2001:db8::1/128"), "d");
        assert!(p.ip_ranges().is_empty());
        assert_eq!(p.ipv6_ranges()[0].cidr_ipv6(), Some("2001:db8::1/128"));
        assert_eq!(p.ipv6_ranges()[0].description(), Some("d"));
        assert_eq!((p.from_port(), p.to_port()), (Some(22), Some(22)));
        let v4 = permission(&spec(Protocol::Icmp, Ports::ANY, "192.0.2.1/32"), "");
        assert_eq!(v4.ip_ranges()[0].description(), None);
        assert_eq!((v4.ip_protocol(), v4.from_port(), v4.to_port()), (Some("icmp"), Some(-1), Some(-1)));
        let all = permission(&spec(Protocol::All, Ports::ANY, "192.0.2.1/32"), "x");
        assert_eq!((all.ip_protocol(), all.from_port()), (Some("-1"), None));
    }

    #[test]
    fn rules_read_back() {
        let r = SecurityGroupRule::builder()
            .security_group_rule_id("sgr-1")
            .group_id("sg-1")
            .is_egress(false)
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22)
            .cidr_ipv6("2001:db8::/64")
            .build();
        let e = existing(&r);
        assert_eq!(e.cidr, Some("2001:db8::/64".parse().unwrap()));
        assert_eq!((e.description.as_str(), e.other_source), ("", None));
        let pl = existing(&SecurityGroupRule::builder().prefix_list_id("pl-1").ip_protocol("-1").build());
        assert_eq!((pl.cidr, pl.other_source.as_deref(), pl.from_port), (None, Some("pl-1"), -1));
    }
}
