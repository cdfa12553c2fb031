//! The AWS checks of `doctor`: the service's credentials (and which source of the chain had
//! them), region, account, AWS's clock against ours, every configured credential profile, and
//! each security group the service may touch or sweep: it exists, and a `DryRun` add and
//! remove are allowed (or the IAM action missing is named). Groups are checked through the
//! domain's `Firewall` trait, so the verdicts are testable with a fake.

use std::collections::BTreeMap;

use worker::aws::{Ec2Firewall, Identity};
use worker::host::expiry_index;
use worker::whitelist::{target, Firewall, FirewallError, Ports, RuleSpec, Scope};
use worker::Settings;

use super::Check;

/// Clock offsets beyond these are a warning, then a failure (JWT `exp`/`nbf` leeway is
/// usually a minute or less; SigV4 refuses requests more than 5 minutes off).
const CLOCK_WARN_SECONDS: f64 = 30.0;
const CLOCK_FAIL_SECONDS: f64 = 300.0;

/// The address a `DryRun` rule names: TEST-NET-1 (RFC 5737), never a real client.
const PROBE_CIDR: &str = "192.0.2.1/32";

/// Every AWS check, in order; stops after the identity when there is none.
pub async fn check(settings: &Settings, extra_groups: &[String]) -> Vec<Check> {
    let fw = Ec2Firewall::new(settings.aws.clone());
    let default = Scope { profile: None, region: None, keys: None };
    let mut out = Vec::new();
    let identity = match fw.identity(&default).await {
        Ok(identity) => identity,
        Err(e) => {
            let name = match &e {
                FirewallError::Refused { code, .. } if code.contains("Region") => "aws.region",
                FirewallError::Refused { .. } | FirewallError::BadCredentials(_) => "aws.credentials",
                _ => "aws.endpoint",
            };
            out.push(Check::fail(name, e.to_string(), fix_for(&e)));
            return out;
        }
    };
    out.extend(identity_lines(&identity));
    out.push(clock(identity.clock_offset));
    for p in &settings.aws.profiles {
        let scope = Scope { profile: Some(p.name.clone()), region: None, keys: None };
        let name = format!("aws.profile {}", p.name);
        out.push(match fw.identity(&scope).await {
            Ok(id) => {
                Check::ok(name, format!("{} in {} ({}, from {})", id.account, id.region, id.arn, id.source))
            }
            Err(e) => Check::fail(name, e.to_string(), fix_for(&e)),
        });
    }
    let (targets, mut lines) = targets(settings, extra_groups);
    out.append(&mut lines);
    let w = &settings.whitelist;
    let protocol = w.default_protocol;
    let ports = if protocol.has_ports() {
        target::parse_ports(&w.default_port, &w.port_mappings).unwrap_or(Ports::single(22))
    } else {
        Ports::ANY
    };
    let Ok(cidr) = target::parse_cidr(PROBE_CIDR) else { return out };
    for ((group, region, profile), roles) in targets {
        let scope = Scope { profile, region, keys: None };
        let spec = RuleSpec { group_id: group, cidr, protocol, ports };
        out.push(group_check(&fw, &scope, &spec, roles, &identity.account).await);
    }
    out
}

/// The identity in three lines: where the credentials came from, the region, the account.
fn identity_lines(id: &Identity) -> Vec<Check> {
    let endpoint = id.endpoint.as_deref().map_or(String::new(), |e| format!(" (endpoint override {e})"));
    vec![
        Check::ok("aws.credentials", format!("found: {}", id.source)),
        Check::ok("aws.region", format!("{}{endpoint}", id.region)),
        Check::ok("aws.account", format!("{} as {}", id.account, id.arn)),
    ]
}

/// Our clock against AWS's `Date`.
pub fn clock(offset: Option<f64>) -> Check {
    const NAME: &str = "clock";
    let fix = "synchronise this host's clock (NTP: `timedatectl set-ntp true`, chrony or systemd-timesyncd)";
    let Some(off) = offset else {
        return Check::warn(NAME, "AWS's answer had no Date header: the clock was not compared", fix);
    };
    let side = if off > 0.0 { "behind" } else { "ahead of" };
    // `Date` has whole seconds: a second or two either way is the resolution, not an offset.
    let found = if off.abs() < 2.0 {
        "in step with AWS's clock (within the 1 s resolution of its Date header)".to_string()
    } else {
        format!("{:.0} s {side} AWS's clock", off.abs())
    };
    if off.abs() > CLOCK_FAIL_SECONDS {
        Check::fail(
            NAME,
            format!("{found}: AWS refuses requests signed more than 5 minutes off (SigV4), and JWT exp/nbf checks misfire"),
            fix,
        )
    } else if off.abs() > CLOCK_WARN_SECONDS {
        Check::warn(NAME, format!("{found}: tokens may be refused as expired or not yet valid"), fix)
    } else {
        Check::ok(NAME, found)
    }
}

/// What the service does with a group: add and remove (allowed by the policy), or only remove
/// expired rules (swept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// An assistant may add and remove rules here.
    pub allowed: bool,
    /// The sweeper removes expired rules here.
    pub swept: bool,
}

/// (group, region, profile) with what the service does there; plus lines about groups that
/// cannot be checked (patterns, an empty allow-list).
type Targets = BTreeMap<(String, Option<String>, Option<String>), Roles>;

fn targets(settings: &Settings, extra: &[String]) -> (Targets, Vec<Check>) {
    let w = &settings.whitelist;
    let mut targets = Targets::new();
    let mut lines = Vec::new();
    let allowed = &w.policy.allowed_security_groups;
    for g in allowed.iter().chain(extra) {
        if g.contains(['*', '?']) {
            lines.push(Check::warn(
                format!("group {g}"),
                "a pattern: the groups it matches are not checked",
                "name them with --security-group to check them (or list them in policy.allowed_security_groups)",
            ));
        } else {
            targets.entry((g.clone(), None, None)).or_default().allowed = true;
        }
    }
    if allowed.is_empty() {
        lines.push(Check::warn(
            "policy.allowed_security_groups",
            "empty: an assistant may touch any group of the account",
            "list the groups it may touch (ids or sg-… patterns); name groups to check with --security-group",
        ));
    }
    for g in &w.sweep_groups {
        targets.entry((g.clone(), None, None)).or_default().swept = true;
    }
    for t in expiry_index::read_index(&w.state_dir) {
        targets.entry((t.group, t.region, t.profile)).or_default().swept = true;
    }
    (targets, lines)
}

/// One group: it exists, and the `DryRun`s its roles need are allowed.
pub async fn group_check(
    fw: &dyn Firewall,
    scope: &Scope,
    spec: &RuleSpec,
    roles: Roles,
    account: &str,
) -> Check {
    let group = &spec.group_id;
    let mut name = format!("group {group}");
    if let Some(r) = &scope.region {
        name.push_str(&format!(" ({r})"));
    }
    let role = match (roles.allowed, roles.swept) {
        (true, true) => "allowed and swept",
        (true, false) => "allowed",
        _ => "swept",
    };
    let rules = match fw.list(scope, group).await {
        Ok(rules) => rules.len(),
        Err(e @ FirewallError::GroupNotFound { .. }) => {
            let fix = if roles.allowed {
                "check the id and the region ([aws] region), or remove it from policy.allowed_security_groups (or --security-group)"
            } else {
                "check the id and the region; remove it from whitelist.sweep_groups if it is gone"
            };
            return Check::fail(name, format!("{role}: {e}"), fix);
        }
        Err(e) => return Check::fail(name, format!("{role}: cannot read it: {e}"), fix_for(&e)),
    };
    let mut denied = Vec::new();
    if roles.allowed {
        if let Err(e) = fw.can_authorize(scope, spec).await {
            denied.push(("add", e));
        }
    }
    if let Err(e) = fw.can_revoke(scope, spec).await {
        denied.push(("remove", e));
    }
    let asked = if roles.allowed { "DryRun add and remove allowed" } else { "DryRun remove allowed" };
    if denied.is_empty() {
        return Check::ok(name, format!("{role}: exists ({rules} ingress rules); {asked}"));
    }
    let found: Vec<String> = denied.iter().map(|(what, e)| format!("DryRun {what}: {e}")).collect();
    let fixes: Vec<String> = denied
        .iter()
        .map(|(_, e)| match e {
            FirewallError::PermissionDenied { action, .. } => format!(
                "grant {action} on arn:aws:ec2:{}:{account}:security-group/{group} to this identity",
                scope.region.as_deref().unwrap_or("*")
            ),
            other => fix_for(other),
        })
        .collect();
    Check::fail(name, format!("{role}: exists, but {}", found.join("; ")), fixes.join("; "))
}

/// The one thing to do about an AWS failure (its message says more).
fn fix_for(e: &FirewallError) -> String {
    match e {
        FirewallError::Refused { code, .. } if code == "NoCredentials" => {
            "give the service credentials: AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in its environment, or an instance role".into()
        }
        FirewallError::Refused { code, .. } if code == "NoRegion" || code == "InvalidRegion" => {
            "set [aws] region (e.g. \"eu-west-1\")".into()
        }
        FirewallError::Refused { .. } => "see the message".into(),
        FirewallError::BadCredentials(_) => "renew or replace the credentials the message names".into(),
        FirewallError::PermissionDenied { action, .. } => {
            format!("grant {action} to this identity (the README's \"Go live\" has the policy)")
        }
        FirewallError::Timeout { .. } => {
            "check the network to AWS, or raise aws.operation_timeout".into()
        }
        FirewallError::Other { code, .. } if code == "EndpointUnreachable" => {
            "check aws.endpoint_url (or AWS_ENDPOINT_URL), the region and the network".into()
        }
        _ => "see the message".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use worker::whitelist::{ExistingRule, FwFuture, Protocol};

    use super::*;

    /// A firewall whose group exists and whose dry runs answer what the test says.
    #[derive(Default)]
    struct Fake {
        add: Mutex<Option<FirewallError>>,
        remove: Mutex<Option<FirewallError>>,
    }

    fn answer(slot: &Mutex<Option<FirewallError>>) -> Result<(), FirewallError> {
        slot.lock().unwrap().clone().map_or(Ok(()), Err)
    }

    impl Firewall for Fake {
        fn list<'a>(&'a self, _: &'a Scope, _: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn authorize<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec, _: &'a str) -> FwFuture<'a, String> {
            Box::pin(async { panic!("doctor never adds a rule") })
        }
        fn revoke<'a>(&'a self, _: &'a Scope, _: &'a str, _: &'a [String]) -> FwFuture<'a, ()> {
            Box::pin(async { panic!("doctor never removes a rule") })
        }
        fn can_revoke<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
            Box::pin(async { answer(&self.remove) })
        }
        fn can_authorize<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
            Box::pin(async { answer(&self.add) })
        }
        fn redescribe<'a>(
            &'a self,
            _: &'a Scope,
            _: &'a RuleSpec,
            _: &'a str,
            _: &'a str,
        ) -> FwFuture<'a, ()> {
            Box::pin(async { panic!("doctor never renews a rule") })
        }
        fn can_redescribe<'a>(
            &'a self,
            _: &'a Scope,
            _: &'a RuleSpec,
            _: &'a str,
            _: &'a str,
        ) -> FwFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn groups_page<'a>(
            &'a self,
            _: &'a Scope,
            _: &'a [String],
            _: Option<&'a str>,
        ) -> FwFuture<'a, worker::whitelist::GroupPage> {
            Box::pin(async { Ok(worker::whitelist::GroupPage::default()) })
        }
    }

    fn spec() -> RuleSpec {
        RuleSpec {
            group_id: "sg-0123456789abcdef0".into(),
            cidr: target::parse_cidr(PROBE_CIDR).unwrap(),
            protocol: Protocol::Tcp,
            ports: Ports::single(22),
        }
    }

    fn denied(action: &str) -> FirewallError {
        FirewallError::PermissionDenied {
            action: action.into(),
            detail: "resource arn:aws:ec2:eu-west-1:<account>:security-group/sg-0123456789abcdef0; AWS says: You are not authorized to perform this operation.".into(),
        }
    }

    fn run(fake: &Fake, roles: Roles) -> Check {
        let scope = Scope { profile: None, region: Some("eu-west-1".into()), keys: None };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(group_check(fake, &scope, &spec(), roles, "123456789012"))
    }

    #[test]
    fn a_policy_that_forbids_revoke_is_a_fail_naming_the_action_and_the_group() {
        let fake = Fake::default();
        *fake.remove.lock().unwrap() = Some(denied("ec2:RevokeSecurityGroupIngress"));
        let check = run(&fake, Roles { allowed: true, swept: false });
        assert_eq!(check.status, super::super::Status::Fail, "{check}");
        assert!(check.found.contains("DryRun remove: AWS denied ec2:RevokeSecurityGroupIngress"), "{check}");
        assert!(!check.found.contains("DryRun add"), "adding is allowed: {check}");
        assert_eq!(
            check.fix.as_deref(),
            Some("grant ec2:RevokeSecurityGroupIngress on arn:aws:ec2:eu-west-1:123456789012:security-group/sg-0123456789abcdef0 to this identity")
        );
    }

    #[test]
    fn a_swept_group_needs_only_remove() {
        let fake = Fake::default();
        *fake.add.lock().unwrap() = Some(denied("ec2:AuthorizeSecurityGroupIngress"));
        let check = run(&fake, Roles { allowed: false, swept: true });
        assert_eq!(check.status, super::super::Status::Ok, "{check}");
        assert!(check.found.starts_with("swept: exists (0 ingress rules); DryRun remove allowed"), "{check}");
        let check = run(&fake, Roles { allowed: true, swept: true });
        assert!(check.found.contains("DryRun add: AWS denied ec2:AuthorizeSecurityGroupIngress"), "{check}");
    }

    #[test]
    fn the_clock_is_judged_by_what_breaks() {
        use super::super::Status;
        assert_eq!(clock(Some(0.4)).status, Status::Ok);
        assert_eq!(clock(Some(-29.0)).status, Status::Ok);
        assert_eq!(clock(Some(45.0)).status, Status::Warn);
        let far = clock(Some(-400.0));
        assert_eq!(far.status, Status::Fail);
        assert!(far.found.starts_with("400 s ahead of AWS's clock") && far.found.contains("SigV4"), "{far}");
        assert!(far.fix.unwrap().contains("NTP"));
        assert_eq!(clock(None).status, Status::Warn);
    }
}
