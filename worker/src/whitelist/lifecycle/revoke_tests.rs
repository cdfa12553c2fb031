//! Revoke-everywhere against the in-memory EC2 of `service_tests`.

use super::*;
use crate::whitelist::{FindArgs, GroupInfo};

const G2: &str = "sg-0123456789abcdef1";
const OTHER: &str = "sg-0fedcba987654321f";

fn group(id: &str) -> GroupInfo {
    GroupInfo {
        group_id: id.into(),
        name: id.into(),
        vpc_id: None,
        description: String::new(),
        tags: Default::default(),
    }
}

fn on(g: &str, ip: &str, port: &str) -> AddArgs {
    AddArgs {
        rule: RuleArgs {
            group: g.into(),
            ip_address: ip.into(),
            port: Some(port.into()),
            ..RuleArgs::default()
        },
        user: Some("leaver".into()),
        ..AddArgs::default()
    }
}

#[tokio::test]
async fn revoke_everywhere_lists_first_then_removes_rule_by_rule_only_where_allowed() {
    let s = Setup::new();
    *s.ec2.groups.lock().unwrap() = vec![group(G), group(G2), group(OTHER)];
    let open = s.service(Policy::default());
    let who = Caller { identity: Some("ops".into()), ..Caller::default() };
    let ssh = open.add(&scope(), &on(G, "203.0.113.7", "22"), &who).await.unwrap().rule.rule_id;
    let https = open.add(&scope(), &on(G2, "203.0.113.7", "443"), &who).await.unwrap().rule.rule_id;
    let elsewhere = open.add(&scope(), &on(OTHER, "203.0.113.7", "22"), &who).await.unwrap().rule.rule_id;
    let wide = open.add(&scope(), &on(G2, "203.0.113.0/24", "22"), &who).await.unwrap().rule.rule_id;
    s.ec2.rules.lock().unwrap().push(hand_rule("sgr-hand", "203.0.113.7/32", 8080, "by hand"));

    let w = s.service(Policy {
        allowed_security_groups: vec!["sg-0123456789abcdef*".into()],
        ..Policy::default()
    });
    let q = FindArgs { ip_address: Some("203.0.113.7".into()), user: None };
    let before = s.ec2.rules.lock().unwrap().clone();
    let dry = w.revoke_everywhere(&scope(), &q, true, &who).await.unwrap();
    assert_eq!(*s.ec2.rules.lock().unwrap(), before, "a dry run changes nothing");
    let fate = |r: &crate::whitelist::Revoked| -> Vec<(String, &'static str)> {
        let mut v: Vec<_> = r.rules.iter().map(|x| (x.rule.rule_id.clone(), x.outcome)).collect();
        v.sort();
        v
    };
    let mut want = vec![
        (ssh.clone(), "would_remove"),
        (https.clone(), "would_remove"),
        (wide.clone(), "kept_wider"),
        ("sgr-hand".to_string(), "kept_unmanaged"),
    ];
    want.sort();
    assert_eq!(fate(&dry), want, "{}", dry.message);
    assert!(
        !dry.rules.iter().any(|r| r.rule.rule_id == elsewhere),
        "a group the policy does not allow is not touched"
    );

    *s.ec2.unrevokable.lock().unwrap() = Some(https.clone());
    let done = w.revoke_everywhere(&scope(), &q, false, &who).await.unwrap();
    let outcome = |id: &str| done.rules.iter().find(|r| r.rule.rule_id == id).map(|r| r.outcome);
    assert_eq!(outcome(&ssh), Some("removed"));
    assert_eq!(outcome(&https), Some("failed"), "a failure is reported for its rule");
    assert!(
        done.rules.iter().any(|r| r.detail.as_deref().is_some_and(|d| d.contains("throttling"))),
        "{done:?}"
    );
    assert_eq!((done.removed, done.failed), (1, 1));
    let left: Vec<String> = s.ec2.rules.lock().unwrap().iter().map(|r| r.rule_id.clone()).collect();
    for kept in [&https, &elsewhere, &wide, &"sgr-hand".to_string()] {
        assert!(left.contains(kept), "{kept} kept: {left:?}");
    }
    assert!(!left.contains(&ssh));
    let removes = s.journal.outcomes().into_iter().filter(|e| e.action == "remove").count();
    assert_eq!(removes, 2, "each removal audited (one removed, one failed)");

    let reader = Caller { read_only: Some("key".into()), ..Caller::default() };
    let err = w.revoke_everywhere(&scope(), &q, true, &reader).await.unwrap_err();
    assert!(matches!(err, Error::Policy(_)), "read-only callers are refused before any AWS call: {err}");
}
