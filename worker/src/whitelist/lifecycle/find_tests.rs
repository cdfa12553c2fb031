//! Groups and find against the in-memory EC2 of `service_tests`, whose group listing pages.

use super::*;
use crate::whitelist::{FindArgs, GroupInfo, Relation};

const G2: &str = "sg-0123456789abcdef1";
const G3: &str = "sg-0123456789abcdef2";
const OTHER: &str = "sg-0fedcba987654321f";

fn group(id: &str, name: &str) -> GroupInfo {
    GroupInfo {
        group_id: id.into(),
        name: name.into(),
        vpc_id: Some("vpc-1".into()),
        description: format!("{name} servers"),
        tags: [("team".to_string(), "ops".to_string())].into(),
    }
}

/// Five groups (three pages of two): G, G2, G3 allowed by a pattern, OTHER and one more not.
fn five_groups(s: &Setup) {
    *s.ec2.groups.lock().unwrap() = vec![
        group(G, "bastion"),
        group(OTHER, "billing"),
        group(G2, "web"),
        group("sg-0aaaaaaaaaaaaaaaa", "db"),
        group(G3, "ci"),
    ];
}

fn policy() -> Policy {
    Policy { allowed_security_groups: vec!["sg-0123456789abcdef*".into()], ..Policy::default() }
}

#[tokio::test]
async fn groups_are_read_page_by_page_and_only_allowed_ones_shown() {
    let s = Setup::new();
    five_groups(&s);
    let w = s.service(Policy::default());
    let all = w.groups(&scope(), &Caller::default()).await.unwrap();
    assert_eq!(all.len(), 5, "every page read");
    assert_eq!(s.ec2.group_pages.load(Ordering::SeqCst), 3, "5 groups, 2 a page");

    let w = s.service(policy());
    let ids: Vec<String> =
        w.groups(&scope(), &Caller::default()).await.unwrap().into_iter().map(|g| g.group_id).collect();
    assert_eq!(ids, [G, G2, G3]);
    let narrow = Caller { security_groups: Some(vec![G2.into()].into()), ..Caller::default() };
    let ids: Vec<String> =
        w.groups(&scope(), &narrow).await.unwrap().into_iter().map(|g| g.group_id).collect();
    assert_eq!(ids, [G2], "the caller's credential narrows it further");
}

#[tokio::test]
async fn a_listing_whose_pages_never_end_is_an_error() {
    let s = Setup::new();
    *s.ec2.groups.lock().unwrap() = (0..250).map(|n| group(&format!("sg-{n:017x}"), "g")).collect();
    let w = s.service(Policy::default());
    let err = w.groups(&scope(), &Caller::default()).await.unwrap_err();
    assert!(err.to_string().contains("did not end after 100 pages"), "{err}");
}

#[tokio::test]
async fn find_looks_in_every_allowed_group_and_tells_managed_from_unmanaged() {
    let s = Setup::new();
    five_groups(&s);
    let w = s.service(Policy::default());
    let alice = Caller { identity: Some("alice".into()), ..Caller::default() };
    let on = |g: &str, ip: &str| AddArgs {
        rule: RuleArgs { group: g.into(), ip_address: ip.into(), ..RuleArgs::default() },
        user: Some("bob".into()),
        ..AddArgs::default()
    };
    w.add(&scope(), &on(G, "203.0.113.7"), &alice).await.unwrap();
    w.add(&scope(), &on(G3, "203.0.113.0/24"), &alice).await.unwrap();
    w.add(&scope(), &on(OTHER, "203.0.113.7"), &alice).await.unwrap();
    s.ec2.rules.lock().unwrap().push(ExistingRule {
        group_id: G2.into(),
        ..hand_rule("sgr-hand", "203.0.113.7/32", 443, "by hand")
    });

    let w = s.service(policy());
    let q = FindArgs { ip_address: Some("203.0.113.7".into()), user: None };
    let found = w.find(&scope(), &q, &Caller::default()).await.unwrap();
    let seen: Vec<(&str, bool, Relation)> =
        found.iter().map(|f| (f.rule.group_id.as_str(), f.rule.managed, f.relation)).collect();
    assert_eq!(seen, [(G, true, Relation::Exact), (G2, false, Relation::Exact), (G3, true, Relation::Wider)]);
    assert_eq!(found[0].added_by.as_deref(), Some("alice"), "who added it, from the audit log");
    assert!(found[0].added_at.is_some());
    assert_eq!(found[0].group_name, "bastion");

    let user = |u: &str| FindArgs { ip_address: None, user: Some(u.into()) };
    let by_user = w.find(&scope(), &user("BOB"), &Caller::default()).await.unwrap();
    let by_user: Vec<String> = by_user.into_iter().map(|f| f.rule.group_id).collect();
    assert_eq!(by_user, [G, G3], "the user named in the description, never in a group the policy hides");
    let by_adder = w.find(&scope(), &user("alice"), &Caller::default()).await.unwrap();
    assert_eq!(by_adder.len(), 2, "or the identity that added it");

    let none = w.find(&scope(), &FindArgs::default(), &Caller::default()).await.unwrap_err();
    assert!(matches!(none, Error::Invalid { field: "ip_address", .. }), "{none}");
}
