//! Renewal against the in-memory EC2 of `service_tests`: the marker rewritten in place, the
//! sweeper honouring the new expiry, unmanaged rules left alone, the dry run.

use super::*;

fn lasting(ip: &str, duration: &str) -> AddArgs {
    AddArgs { duration: Some(duration.into()), ..add(ip, None, None) }
}

#[tokio::test]
async fn adding_a_managed_rule_again_with_a_duration_renews_it_and_the_sweeper_honours_the_new_time() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller { identity: Some("alice".into()), ..Caller::default() };
    let first = w.add(&scope(), &lasting("203.0.113.7", "1h"), &who).await.unwrap();
    let old = first.rule.expires_at.clone().unwrap();
    let before = s.ec2.rules.lock().unwrap()[0].clone();

    let r = w.add(&scope(), &lasting("203.0.113.7", "5h"), &who).await.unwrap();
    assert!(r.changed && r.renewed, "{r:?}");
    assert_eq!(r.previous_expires_at.as_deref(), Some(old.as_str()));
    let new = r.rule.expires_at.clone().unwrap();
    assert!(new > old, "{old} -> {new}");
    assert!(r.message.contains(&old) && r.message.contains(&new), "{}", r.message);
    let after = s.ec2.rules.lock().unwrap().clone();
    assert_eq!(after.len(), 1, "rewritten in place, not added");
    assert_eq!(after[0].rule_id, before.rule_id, "the rule keeps its id");
    assert!(after[0].description.contains(&format!("exp={new}")), "{}", after[0].description);
    assert_eq!(
        after[0].description.split(" [awswl").next(),
        before.description.split(" [awswl").next(),
        "the text before the marker is kept"
    );
    let outcome = s.journal.outcomes().last().cloned().unwrap();
    assert_eq!((outcome.action, outcome.result), ("renew", "renewed"));
    assert_eq!(outcome.rule["expires_at"], new.as_str());

    let now = SystemTime::now();
    let past_old = now + Duration::from_secs(2 * 3600);
    assert!(w.sweep(&scope(), G, past_old).await.unwrap().is_empty(), "the old expiry no longer counts");
    let past_new = now + Duration::from_secs(6 * 3600);
    assert_eq!(w.sweep(&scope(), G, past_new).await.unwrap().len(), 1, "swept at the new expiry");
}

#[tokio::test]
async fn without_a_duration_or_on_an_unmanaged_rule_nothing_is_renewed() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller::default();
    w.add(&scope(), &lasting("203.0.113.7", "1h"), &who).await.unwrap();
    s.ec2.rules.lock().unwrap().push(hand_rule("sgr-hand", "198.51.100.9/32", 22, "by hand"));
    let changes = s.ec2.changes.load(Ordering::SeqCst);

    let again = w.add(&scope(), &add("203.0.113.7", None, None), &who).await.unwrap();
    assert!(!again.changed && !again.renewed, "no duration: idempotent as before");
    let hand = w.add(&scope(), &lasting("198.51.100.9", "2h"), &who).await.unwrap();
    assert!(!hand.changed && !hand.renewed, "{hand:?}");
    assert!(hand.message.contains("did not add that rule"), "{}", hand.message);
    assert_eq!(s.ec2.changes.load(Ordering::SeqCst), changes, "nothing written to EC2");
    let hand_rule = s.ec2.rules.lock().unwrap().iter().find(|r| r.rule_id == "sgr-hand").cloned().unwrap();
    assert_eq!(hand_rule.description, "by hand", "an unmanaged rule never gets a marker");
}

#[tokio::test]
async fn a_renewal_past_the_policy_cap_is_refused_before_any_aws_call() {
    let s = Setup::new();
    let w = s.service(Policy { max_rule_duration: Some(Duration::from_secs(8 * 3600)), ..Policy::default() });
    w.add(&scope(), &lasting("203.0.113.7", "1h"), &Caller::default()).await.unwrap();
    let calls = s.ec2.calls.load(Ordering::SeqCst);
    let err = w.add(&scope(), &lasting("203.0.113.7", "9h"), &Caller::default()).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "max_rule_duration_hours"), "{err}");
    assert_eq!(s.ec2.calls.load(Ordering::SeqCst), calls, "refused before AWS");
}

#[tokio::test]
async fn a_dry_run_shows_the_renewal_and_changes_nothing() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller::default();
    let first = w.add(&scope(), &lasting("203.0.113.7", "1h"), &who).await.unwrap();
    let before = s.ec2.rules.lock().unwrap().clone();
    let d = w.dry_run_add(&scope(), &lasting("203.0.113.7", "5h"), &who).await.unwrap();
    assert!(d.would_change, "{d:?}");
    assert_eq!(d.previous_expires_at, first.rule.expires_at);
    assert_eq!(d.aws_allowed.action, "ec2:ModifySecurityGroupRules");
    assert_eq!(d.rule_ids, std::slice::from_ref(&first.rule.rule_id));
    let planned = d.rule.description.clone().unwrap();
    assert!(planned.contains(&format!("exp={}", d.expires_at.clone().unwrap())), "{planned}");
    assert!(d.message.contains("would renew"), "{}", d.message);
    assert_eq!(*s.ec2.rules.lock().unwrap(), before, "nothing changed");
    let real = w.add(&scope(), &lasting("203.0.113.7", "5h"), &who).await.unwrap();
    assert!(real.renewed);
}
