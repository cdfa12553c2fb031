//! `Ec2Firewall` against a real `moto_server` (PyPI `moto[server]`): list, authorize (IPv4,
//! IPv6, ranges, ICMP, all), duplicates, revoke, missing groups, and the three credential paths
//! (default chain, per-call keys checked once with STS, a profile that assumes a role).
//!
//! moto is found by the suite's one rule for tools (tests/common/skip.rs), see `moto_support`.

use std::net::TcpListener;
use std::time::Duration;

use worker::aws::{AwsSettings, CredentialProfile, Ec2Firewall};
use worker::whitelist::{Firewall, FirewallError, Keys, Ports, Protocol, RuleSpec, Scope};

mod moto_support;

use moto_support::{
    assumed_roles, create_group, default_chain, ec2, service_on, settings, spec, start_moto, test_env, REGION,
};

#[tokio::test(flavor = "current_thread")]
async fn rules_end_to_end() {
    let Some(moto) = start_moto() else { return };
    let group = create_group(&ec2(&moto).await, "e2e").await;
    let fw = Ec2Firewall::new(settings(&moto));
    let scope = default_chain();

    assert_eq!(fw.list(&scope, &group).await.expect("list"), vec![], "a new group has no ingress rules");

    let ssh = spec(&group, "203.0.113.7/32", Protocol::Tcp, Ports::single(22));
    let id = fw.authorize(&scope, &ssh, "office ssh").await.expect("authorize");
    assert!(id.starts_with("sgr-"), "{id}");
    let rules = fw.list(&scope, &group).await.expect("list");
    assert_eq!(rules.len(), 1, "{rules:?}");
    let r = &rules[0];
    assert_eq!(
        (r.rule_id.as_str(), r.group_id.as_str(), r.protocol.as_str(), r.from_port, r.to_port),
        (id.as_str(), group.as_str(), "tcp", 22, 22)
    );
    assert_eq!((r.cidr, r.description.as_str()), (Some(ssh.cidr), "office ssh"));
    assert!(r.matches(&ssh));

    let again = fw.authorize(&scope, &ssh, "another description").await;
    assert_eq!(again, Err(FirewallError::Duplicate));

    let v6 = spec(&group, "2001:db8::7/128", Protocol::Tcp, Ports::single(22));
    let v6_id = fw.authorize(&scope, &v6, "v6").await.expect("authorize IPv6");
    let raw = ec2(&moto)
        .await
        .describe_security_group_rules()
        .security_group_rule_ids(&v6_id)
        .send()
        .await
        .expect("describe the IPv6 rule");
    let raw = &raw.security_group_rules()[0];
    assert_eq!((raw.cidr_ipv6(), raw.cidr_ipv4()), (Some("2001:db8::7/128"), None), "IPv6 lands in CidrIpv6");

    let udp = spec(&group, "198.51.100.0/24", Protocol::Udp, Ports { from: 8000, to: 8100 });
    let icmp = spec(&group, "198.51.100.9/32", Protocol::Icmp, Ports::ANY);
    let icmp6 = spec(&group, "2001:db8::9/128", Protocol::Icmp, Ports::ANY);
    let all = spec(&group, "192.0.2.1/32", Protocol::All, Ports::ANY);
    for s in [&udp, &icmp, &icmp6, &all] {
        fw.authorize(&scope, s, "").await.unwrap_or_else(|e| panic!("authorize {s:?}: {e}"));
    }
    let rules = fw.list(&scope, &group).await.expect("list");
    assert_eq!(rules.len(), 6, "{rules:#?}");
    for s in [&ssh, &v6, &udp, &icmp, &icmp6, &all] {
        let found = rules.iter().find(|r| r.matches(s)).unwrap_or_else(|| panic!("{s:?} not in {rules:#?}"));
        assert!(found.rule_id.starts_with("sgr-"));
    }
    let stored = |s: &RuleSpec| {
        rules.iter().find(|r| r.matches(s)).map(|r| (r.protocol.clone(), r.from_port, r.to_port))
    };
    assert_eq!(stored(&udp), Some(("udp".into(), 8000, 8100)));
    assert_eq!(stored(&icmp), Some(("icmp".into(), -1, -1)));
    assert_eq!(stored(&icmp6), Some(("icmpv6".into(), -1, -1)));
    assert_eq!(stored(&all).map(|s| s.0), Some("-1".into()));
    assert_eq!(
        fw.authorize(&scope, &all, "").await,
        Err(FirewallError::Duplicate),
        "all is matched without ports"
    );

    fw.revoke(&scope, &group, std::slice::from_ref(&id)).await.expect("revoke");
    let rules = fw.list(&scope, &group).await.expect("list");
    assert!(!rules.iter().any(|r| r.rule_id == id), "revoked rule still listed");
    assert_eq!(rules.len(), 5);
    assert_eq!(fw.revoke(&scope, &group, std::slice::from_ref(&id)).await, Err(FirewallError::RuleNotFound));
    fw.revoke(&scope, &group, &[]).await.expect("revoking nothing is a no-op");

    let missing = "sg-0123456789abcdef0";
    let nf = FirewallError::GroupNotFound { group: missing.into(), region: REGION.into() };
    assert_eq!(fw.list(&scope, missing).await, Err(nf.clone()));
    let on_missing = spec(missing, "203.0.113.7/32", Protocol::Tcp, Ports::single(22));
    assert_eq!(fw.authorize(&scope, &on_missing, "").await, Err(nf));
}

#[tokio::test(flavor = "current_thread")]
async fn per_call_keys_are_verified_once() {
    let Some(moto) = start_moto() else { return };
    let group = create_group(&ec2(&moto).await, "keys").await;
    let keys = Keys {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
    };
    let scope = Scope { profile: None, region: Some(REGION.into()), keys: Some(keys.clone()) };

    let fw =
        Ec2Firewall::new(AwsSettings { region: None, allow_per_call_credentials: true, ..settings(&moto) });
    assert_eq!(fw.per_call_verifications(), 0);
    fw.list(&scope, &group).await.expect("list with per-call keys");
    assert_eq!(fw.per_call_verifications(), 1, "first use checks the keys with STS");
    let ssh = spec(&group, "203.0.113.7/32", Protocol::Tcp, Ports::single(22));
    fw.authorize(&scope, &ssh, "").await.expect("authorize with per-call keys");
    fw.list(&scope, &group).await.expect("list again");
    assert_eq!(fw.per_call_verifications(), 1, "verified keys are remembered");

    let other = Keys { secret_access_key: "another-secret".into(), ..keys.clone() };
    let other_scope = Scope { keys: Some(other), ..scope.clone() };
    fw.list(&other_scope, &group).await.expect("list with other keys");
    assert_eq!(fw.per_call_verifications(), 2, "different keys are checked on their own");

    let expiring = Ec2Firewall::new(AwsSettings {
        per_call_cache_ttl: 0.0,
        allow_per_call_credentials: true,
        ..settings(&moto)
    });
    expiring.list(&scope, &group).await.expect("list");
    expiring.list(&scope, &group).await.expect("list");
    assert_eq!(expiring.per_call_verifications(), 2, "a zero TTL checks every time");

    let closed = Ec2Firewall::new(AwsSettings { allow_per_call_credentials: false, ..settings(&moto) });
    match closed.list(&scope, &group).await {
        Err(e @ FirewallError::Refused { .. }) => {
            let text = e.to_string();
            assert!(text.contains("per-call credentials are disabled"), "{text}");
            assert!(!text.contains(&keys.secret_access_key) && !text.contains(&keys.access_key_id));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(closed.per_call_verifications(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn profiles_assume_roles() {
    let Some(moto) = start_moto() else { return };
    let group = create_group(&ec2(&moto).await, "roles").await;
    let profile = |name: &str, account: &str| CredentialProfile {
        name: name.into(),
        region: Some(REGION.into()),
        role_arn: Some(format!("arn:aws:iam::{account}:role/test")),
        external_id: Some("ext-1".into()),
        session_name: Some("awswhitelist-test".into()),
        source_profile: None,
        read_only: false,
    };
    let s = AwsSettings {
        region: None,
        profiles: vec![profile("same", "123456789012"), profile("elsewhere", "111111111111")],
        ..settings(&moto)
    };
    let fw = Ec2Firewall::new(s);
    let scope = |name: &str| Scope { profile: Some(name.into()), region: None, keys: None };

    // The role in the group's own account sees it and can change it.
    let ssh = spec(&group, "203.0.113.7/32", Protocol::Tcp, Ports::single(22));
    fw.authorize(&scope("same"), &ssh, "via role").await.expect("authorize through AssumeRole");
    let rules = fw.list(&scope("same"), &group).await.expect("list through AssumeRole");
    assert_eq!(rules.len(), 1);
    // moto puts assumed-role credentials in the role's account: a role elsewhere does not see
    // the group, which proves the calls ran with the assumed credentials.
    assert_eq!(
        fw.list(&scope("elsewhere"), &group).await,
        Err(FirewallError::GroupNotFound { group: group.clone(), region: REGION.into() })
    );

    // The assumed credentials are cached: one AssumeRole per profile, however many calls.
    fw.list(&scope("same"), &group).await.expect("list again");
    let mut sessions = assumed_roles(&moto);
    sessions.sort();
    let session = |account: &str| {
        (format!("arn:aws:iam::{account}:role/test"), "awswhitelist-test".to_string(), "ext-1".to_string())
    };
    assert_eq!(sessions, vec![session("111111111111"), session("123456789012")]);

    match fw.list(&scope("nope"), &group).await {
        Err(FirewallError::Refused { code, message }) => {
            assert_eq!(code, "UnknownProfile");
            assert!(message.contains("\"nope\"") && message.contains("same, elsewhere"), "{message}");
        }
        other => panic!("expected an unknown-profile error, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn source_profiles_give_the_base_credentials() {
    let Some(moto) = start_moto() else { return };
    let group = create_group(&ec2(&moto).await, "source").await;
    let profile = |name: &str, source: &str, role: Option<&str>| CredentialProfile {
        name: name.into(),
        region: None,
        role_arn: role.map(str::to_string),
        external_id: None,
        session_name: None,
        source_profile: Some(source.into()),
        read_only: false,
    };
    let fw = Ec2Firewall::new(AwsSettings {
        profiles: vec![
            profile("plain", "base", None),
            profile("chained", "base", Some("arn:aws:iam::222222222222:role/chained")),
            profile("broken", "missing", None),
        ],
        ..settings(&moto)
    });
    let scope = |name: &str| Scope { profile: Some(name.into()), region: None, keys: None };

    assert_eq!(fw.list(&scope("plain"), &group).await, Ok(vec![]));
    // The chained role lives in another account (moto switches accounts on AssumeRole).
    assert_eq!(
        fw.list(&scope("chained"), &group).await,
        Err(FirewallError::GroupNotFound { group: group.clone(), region: REGION.into() })
    );
    let roles = assumed_roles(&moto);
    assert_eq!(roles.len(), 1, "{roles:?}");
    assert_eq!(roles[0].0, "arn:aws:iam::222222222222:role/chained");
    // A source profile that does not exist fails, although env keys would have worked; nothing
    // was sent to AWS, so nothing was "rejected": no credentials were found.
    match fw.list(&scope("broken"), &group).await {
        Err(FirewallError::Refused { code, message }) if code == "NoCredentials" => {
            assert!(message.contains("missing") && message.contains("source_profile"), "{message}")
        }
        other => panic!("expected no credentials found, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn unreachable_endpoint_is_named() {
    test_env();
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let url = format!("http://127.0.0.1:{port}");
    let fw = Ec2Firewall::new(AwsSettings {
        region: Some(REGION.into()),
        endpoint_url: Some(url.clone()),
        max_attempts: 1,
        ..AwsSettings::default()
    });
    match fw.list(&default_chain(), "sg-0123456789abcdef0").await {
        Err(FirewallError::Other { code, message, .. }) => {
            assert_eq!(code, "EndpointUnreachable");
            assert!(message.contains("cannot reach the EC2 endpoint") && message.contains(&url), "{message}");
        }
        other => panic!("expected an unreachable endpoint, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_dry_run_revoke_asks_without_changing_anything() {
    let Some(moto) = start_moto() else { return };
    let ec2 = ec2(&moto).await;
    let group = create_group(&ec2, "dry-run").await;
    let fw = Ec2Firewall::new(settings(&moto));
    let scope = default_chain();
    let ssh = spec(&group, "203.0.113.7/32", Protocol::Tcp, Ports::single(22));
    fw.authorize(&scope, &ssh, "kept").await.expect("authorize");
    assert_eq!(fw.can_revoke(&scope, &ssh).await, Ok(()), "moto answers DryRunOperation: allowed");
    let rules = fw.list(&scope, &group).await.expect("list");
    assert_eq!(rules.len(), 1, "a dry run removes nothing: {rules:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_renewal_moves_the_expiry_in_ec2_and_the_sweeper_honours_it() {
    use std::time::SystemTime;
    use worker::whitelist::{AddArgs, Caller, RuleArgs};
    let Some(moto) = start_moto() else { return };
    let client = ec2(&moto).await;
    let group = create_group(&client, "renew").await;
    let state = tempfile::tempdir().expect("state dir");
    let w = service_on(&moto, state.path());
    let who = Caller { identity: Some("alice".into()), ..Caller::default() };
    let args = |duration: &str| AddArgs {
        rule: RuleArgs { group: group.clone(), ip_address: "203.0.113.7".into(), ..RuleArgs::default() },
        duration: Some(duration.into()),
        ..AddArgs::default()
    };
    let ec2_description = || async {
        let out = client
            .describe_security_group_rules()
            .filters(aws_sdk_ec2::types::Filter::builder().name("group-id").values(&group).build())
            .send()
            .await
            .expect("describe rules");
        let ingress: Vec<_> =
            out.security_group_rules().iter().filter(|r| r.is_egress() == Some(false)).collect();
        assert!(ingress.len() <= 1, "{ingress:?}");
        ingress.first().map(|r| r.description().unwrap_or_default().to_string())
    };

    let first = w.add(&default_chain(), &args("1h"), &who).await.expect("add");
    let old = first.rule.expires_at.clone().expect("an expiry");
    let dry = w.dry_run_add(&default_chain(), &args("5h"), &who).await.expect("dry run");
    assert!(dry.would_change && dry.aws_allowed.allowed, "{dry:?}");
    assert_eq!(dry.previous_expires_at.as_deref(), Some(old.as_str()));
    assert!(
        ec2_description().await.expect("the rule").contains(&format!("exp={old}")),
        "the dry run changed nothing"
    );

    let renewed = w.add(&default_chain(), &args("5h"), &who).await.expect("renew");
    assert!(renewed.changed && renewed.renewed, "{renewed:?}");
    assert_eq!(renewed.previous_expires_at.as_deref(), Some(old.as_str()));
    let new = renewed.rule.expires_at.clone().expect("a new expiry");
    assert_eq!(renewed.rule.rule_id, first.rule.rule_id, "the same rule, rewritten in place");
    let description = ec2_description().await.expect("the rule");
    assert!(description.contains(&format!("exp={new}")) && !description.contains(&old), "{description}");
    let index = std::fs::read_to_string(state.path().join("expiring-groups.jsonl")).unwrap_or_default();
    assert!(index.contains(&group), "the group is in the sweeper's index: {index}");
    let audit = std::fs::read_to_string(state.path().join("audit.log")).expect("audit log");
    assert!(
        audit.lines().any(|l| l.contains("\"action\":\"renew\"") && l.contains("\"result\":\"renewed\"")),
        "{audit}"
    );

    let now = SystemTime::now();
    let swept = w.sweep(&default_chain(), &group, now + Duration::from_secs(2 * 3600)).await.expect("sweep");
    assert!(swept.is_empty(), "past the old expiry only: {swept:?}");
    assert!(ec2_description().await.is_some(), "still in EC2");
    let swept = w.sweep(&default_chain(), &group, now + Duration::from_secs(6 * 3600)).await.expect("sweep");
    assert_eq!(swept.len(), 1, "past the new expiry");
    assert_eq!(ec2_description().await, None, "removed from EC2");
}
