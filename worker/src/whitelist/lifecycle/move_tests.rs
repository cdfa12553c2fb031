//! Moving access against the in-memory EC2 of `service_tests`: add first, old removed only
//! once the new exists, a failed add leaves the old in place.

use super::*;
use crate::whitelist::MoveArgs;

fn to(ip: &str) -> MoveArgs {
    MoveArgs {
        rule: RuleArgs { group: G.into(), ip_address: ip.into(), ..RuleArgs::default() },
        ..MoveArgs::default()
    }
}

fn cidrs(s: &Setup) -> Vec<String> {
    let mut v: Vec<String> =
        s.ec2.rules.lock().unwrap().iter().filter_map(|r| r.cidr.map(|c| c.to_string())).collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_callers_old_address_is_replaced_by_the_new_one() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let alice = Caller { identity: Some("alice".into()), ..Caller::default() };
    let bob = Caller { identity: Some("bob".into()), ..Caller::default() };
    w.add(&scope(), &add("203.0.113.7", None, None), &alice).await.unwrap();
    w.add(&scope(), &add("203.0.113.9", None, None), &bob).await.unwrap();
    w.add(&scope(), &add("203.0.113.7", Some("443"), None), &alice).await.unwrap();
    s.ec2.rules.lock().unwrap().push(hand_rule("sgr-hand", "198.51.100.1/32", 22, "alice by hand"));

    let dry = w.move_access(&scope(), &to("198.51.100.50"), true, &alice).await.unwrap();
    assert!(dry.dry_run && !dry.moved && dry.removed.len() == 1, "{dry:?}");
    assert_eq!(cidrs(&s).len(), 4, "a dry run changes nothing");

    let moved = w.move_access(&scope(), &to("198.51.100.50"), false, &alice).await.unwrap();
    assert!(moved.moved, "{}", moved.message);
    assert_eq!(moved.removed.iter().map(|r| r.outcome).collect::<Vec<_>>(), ["removed"]);
    assert_eq!(
        cidrs(&s),
        ["198.51.100.1/32", "198.51.100.50/32", "203.0.113.7/32", "203.0.113.9/32"],
        "alice's ssh rule moved; her https rule, bob's rule and the hand-made rule stay"
    );
    let https_left = s.ec2.rules.lock().unwrap().iter().any(|r| r.from_port == 443);
    assert!(https_left);
    let actions: Vec<&str> = s.journal.outcomes().iter().rev().take(2).map(|e| e.action).collect();
    assert_eq!(actions, ["remove", "add"], "added first, then removed");
}

#[tokio::test]
async fn a_failed_add_leaves_the_old_access_in_place_and_says_so() {
    let s = Setup::new();
    let alice = Caller { identity: Some("alice".into()), ..Caller::default() };
    s.service(Policy::default()).add(&scope(), &add("203.0.113.7", None, None), &alice).await.unwrap();
    let narrow = Policy { allowed_ip_ranges: vec!["203.0.113.0/24".parse().unwrap()], ..Policy::default() };
    let w = s.service(narrow);
    let err = w.move_access(&scope(), &to("198.51.100.50"), false, &alice).await.unwrap_err();
    assert!(matches!(err, Error::Policy(_)), "refused before any AWS call: {err}");
    assert!(err.to_string().contains("still in place"), "{err}");
    assert_eq!(cidrs(&s), ["203.0.113.7/32"]);

    // Refused by the group (its rule cap) once the old rule is found: the add fails.
    let changes = s.ec2.changes.load(Ordering::SeqCst);
    let w2 = s.service(Policy { max_rules_per_group: Some(1), ..Policy::default() });
    let m = w2.move_access(&scope(), &to("198.51.100.50"), false, &alice).await.unwrap();
    assert!(!m.moved, "{m:?}");
    assert!(m.message.contains("still in place"), "{}", m.message);
    assert_eq!(m.removed.iter().map(|r| r.outcome).collect::<Vec<_>>(), ["kept"]);
    assert_eq!(cidrs(&s), ["203.0.113.7/32"], "the old access is still there");
    assert_eq!(s.ec2.changes.load(Ordering::SeqCst), changes, "nothing written to EC2");
}
