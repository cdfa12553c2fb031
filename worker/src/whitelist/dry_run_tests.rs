//! Dry runs and read-only mode against the in-memory EC2 of `service_tests`.

use super::*;
use crate::whitelist::audit::DRY_RUN;

fn expiring(ip: &str) -> AddArgs {
    AddArgs { duration: Some("2h".into()), ..add(ip, None, None) }
}

#[tokio::test]
async fn a_dry_run_answers_what_would_change_and_changes_nothing() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller { identity: Some("alice".into()), ..Caller::default() };
    let version = s.versions.get(G);

    let d = w.dry_run_add(&scope(), &expiring("203.0.113.7"), &who).await.unwrap();
    assert!(d.would_change, "{d:?}");
    assert_eq!((d.rule.cidr_ip.as_str(), d.rule.port.as_str()), ("203.0.113.7/32", "22"));
    let description = d.rule.description.clone().unwrap();
    assert!(
        description.starts_with("Added by MCP on ") && description.contains("[awswl exp="),
        "{description}"
    );
    assert!(d.expires_at.is_some() && d.rule.expires_at == d.expires_at);
    assert!(d.aws_allowed.allowed && d.aws_allowed.action == "ec2:AuthorizeSecurityGroupIngress");
    assert!(d.message.starts_with("dry run, nothing changed"), "{}", d.message);
    assert_eq!(s.ec2.changes.load(Ordering::SeqCst), 0, "no AWS write");
    assert!(s.ec2.rules.lock().unwrap().is_empty());
    assert!(s.journal.expiring.lock().unwrap().is_empty(), "no expiry-index entry");
    assert_eq!(s.versions.get(G), version, "no change counter bump");

    // The real add writes the description the dry run showed (from the same plan; only the
    // expiry, and so the marker's signature, may have moved on by a second).
    let added = w.add(&scope(), &expiring("203.0.113.7"), &who).await.unwrap();
    let text = |d: &str| d.split("[awswl").next().unwrap_or("").to_string();
    assert_eq!(text(&added.rule.description), text(&description));
    let again = w.dry_run_add(&scope(), &add("203.0.113.7", None, None), &who).await.unwrap();
    assert!(!again.would_change);
    assert_eq!(again.rule_ids, std::slice::from_ref(&added.rule.rule_id));
    assert!(again.message.contains("would change nothing"), "{}", again.message);

    let gone = w.dry_run_remove(&scope(), &rule("203.0.113.7", None, None), &who).await.unwrap();
    assert!(gone.would_change && gone.rule_ids == [added.rule.rule_id.clone()]);
    assert_eq!(gone.aws_allowed.action, "ec2:RevokeSecurityGroupIngress");
    assert_eq!(s.ec2.rules.lock().unwrap().len(), 1, "still there");
    let absent = w.dry_run_remove(&scope(), &rule("198.51.100.1", None, None), &who).await.unwrap();
    assert!(!absent.would_change && absent.rule_ids.is_empty());

    let journal = s.journal.entries.lock().unwrap();
    let dry: Vec<&AuditEntry> = journal.iter().filter(|e| e.phase == Some(DRY_RUN)).collect();
    let results: Vec<(&str, &str)> = dry.iter().map(|e| (e.action, e.result)).collect();
    assert_eq!(
        results,
        [("add", "would_change"), ("add", "no_change"), ("remove", "would_change"), ("remove", "no_change")]
    );
    assert!(dry.iter().all(|e| e.aws_allowed == Some(true) && e.identity == "alice"));
    assert_eq!(dry[2].rule["rule_ids"], serde_json::json!([added.rule.rule_id]));
    assert_eq!(journal.len(), 4 + 2, "the dry runs and the one real add (intent, outcome)");
}

#[tokio::test]
async fn a_dry_run_names_the_iam_action_ec2_refused() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    *s.ec2.cannot_authorize.lock().unwrap() = Some(FirewallError::PermissionDenied {
        action: "ec2:AuthorizeSecurityGroupIngress".into(),
        detail: "You are not authorized to perform this operation.".into(),
    });
    let d = w.dry_run_add(&scope(), &add("203.0.113.7", None, None), &Caller::default()).await.unwrap();
    assert!(d.would_change && !d.aws_allowed.allowed, "{d:?}");
    assert_eq!(d.aws_allowed.action, "ec2:AuthorizeSecurityGroupIngress");
    assert!(d.aws_allowed.detail.contains("UnauthorizedOperation"), "{}", d.aws_allowed.detail);
    assert!(
        d.message.contains("AWS would refuse it") && d.message.contains("ec2:AuthorizeSecurityGroupIngress")
    );
    assert_eq!(s.ec2.dry_runs.load(Ordering::SeqCst), 1);
    let entry = s.journal.entries.lock().unwrap().last().cloned().unwrap();
    assert_eq!((entry.phase, entry.aws_allowed), (Some(DRY_RUN), Some(false)));
    assert!(entry.error.unwrap_or_default().contains("not authorized"));

    // Other AWS failures fail the dry run, as they would fail the change.
    *s.ec2.cannot_authorize.lock().unwrap() = Some(FirewallError::BadCredentials("expired".into()));
    let err = w.dry_run_add(&scope(), &add("203.0.113.8", None, None), &Caller::default()).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn a_dry_run_is_refused_where_the_change_would_be() {
    let s = Setup::new();
    let w = s.service(Policy { max_rules_per_group: Some(1), ..Policy::default() });
    let who = Caller::default();
    let err = w.dry_run_add(&scope(), &add("0.0.0.0/0", None, None), &who).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "allow_world"), "{err}");
    w.add(&scope(), &add("203.0.113.7", None, None), &who).await.unwrap();
    let err = w.dry_run_add(&scope(), &add("203.0.113.8", None, None), &who).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "max_rules_per_group"), "{err}");
    s.ec2.rules.lock().unwrap().push(hand_rule("sgr-hand", "198.51.100.0/24", 22, "by hand"));
    let err = w.dry_run_remove(&scope(), &rule("198.51.100.0/24", None, None), &who).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "remove_unmanaged"), "{err}");
    assert_eq!(s.ec2.dry_runs.load(Ordering::SeqCst), 0, "refused before asking EC2");
    assert!(s.journal.entries.lock().unwrap().iter().all(|e| e.phase != Some(DRY_RUN)));
}

#[tokio::test]
async fn read_only_refuses_changes_naming_the_setting_and_still_reads() {
    let s = Setup::new();
    let writable = s.service(Policy::default());
    writable.add(&scope(), &expiring("203.0.113.7"), &Caller::default()).await.unwrap();
    let changes = s.ec2.changes.load(Ordering::SeqCst);

    let server = s.service(Policy { read_only: true, ..Policy::default() });
    let err = server.add(&scope(), &add("203.0.113.8", None, None), &Caller::default()).await.unwrap_err();
    assert!(err.to_string().contains("[policy] read_only = false"), "{err}");
    let err = server.dry_run_remove(&scope(), &rule("203.0.113.7", None, None), &Caller::default()).await;
    assert!(matches!(err, Err(Error::Policy(ref r)) if r.setting == "read_only"));
    assert_eq!(server.list(&scope(), G, &Caller::default()).await.unwrap().len(), 1, "reads still work");

    let key = Caller { read_only: Some("read_only = true in the key \"ci\"".into()), ..Caller::default() };
    let err = writable.remove(&scope(), &rule("203.0.113.7", None, None), &key).await.unwrap_err();
    assert!(err.to_string().contains("read_only = true in the key \"ci\""), "{err}");
    assert!(writable.check(&scope(), &rule("203.0.113.7", None, None), &key).await.unwrap().exists);

    let profiles = s.service(Policy { read_only_profiles: vec!["audit".into()], ..Policy::default() });
    let audit = Scope { profile: Some("audit".into()), ..scope() };
    let err = profiles.add(&audit, &add("203.0.113.9", None, None), &Caller::default()).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "aws.profiles.read_only"), "{err}");
    assert!(err.to_string().contains("\"audit\""), "{err}");
    assert!(profiles.check_writable(None, &Caller::default()).is_ok(), "other profiles stay writable");
    assert_eq!(s.ec2.changes.load(Ordering::SeqCst), changes, "nothing reached EC2");
}

#[tokio::test]
async fn the_sweeper_keeps_its_promise_under_read_only_unless_told_otherwise() {
    let s = Setup::new();
    s.service(Policy::default()).add(&scope(), &expiring("203.0.113.7"), &Caller::default()).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(3 * 3600);
    let stopped = s.service(Policy { read_only: true, sweep_when_read_only: false, ..Policy::default() });
    assert!(stopped.sweep(&scope(), G, later).await.unwrap().is_empty());
    assert_eq!(s.ec2.rules.lock().unwrap().len(), 1, "left in place");
    let sweeping = s.service(Policy { read_only: true, ..Policy::default() });
    assert_eq!(sweeping.sweep(&scope(), G, later).await.unwrap().len(), 1, "expired and removed");
}
