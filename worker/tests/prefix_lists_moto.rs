//! Managed prefix lists as targets, and audit entries tied to CloudTrail, through the whole
//! service on `Ec2Firewall` against a real `moto_server`.
//!
//! moto 5.2 does not enforce `CurrentVersion` on ModifyManagedPrefixList (checked: a write naming
//! a stale version is applied to that version's entries, silently dropping the other writer's),
//! so the conflict tests put EC2's check back in a thin [`Firewall`] around `Ec2Firewall`: a second
//! client really modifies the list in moto between our read and our write, and the stale write is
//! then refused as EC2 refuses it; everything else is moto's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::AddPrefixListEntry;
use worker::aws::{AwsSettings, CredentialProfile, Ec2Firewall};
use worker::whitelist::firewall::VERSION_CONFLICT;
use worker::whitelist::{
    AddArgs, Caller, Error, ExistingRule, Firewall, FirewallError, FwFuture, GroupPage, Policy,
    PrefixListEdit, PrefixListState, RuleArgs, RuleSpec, Scope,
};

mod moto_support;

use moto_support::{create_group, default_chain, ec2, service_with, settings, start_moto, Moto};

async fn create_list(client: &aws_sdk_ec2::Client, max: i32) -> String {
    let out = client
        .create_managed_prefix_list()
        .prefix_list_name("office")
        .address_family("IPv4")
        .max_entries(max)
        .send()
        .await
        .expect("create prefix list");
    out.prefix_list().and_then(|l| l.prefix_list_id()).expect("list id").to_string()
}

/// The list's entries as moto holds them: (cidr, description).
async fn entries(client: &aws_sdk_ec2::Client, id: &str) -> Vec<(String, String)> {
    let out = client.get_managed_prefix_list_entries().prefix_list_id(id).send().await.expect("entries");
    let mut e: Vec<(String, String)> = out
        .entries()
        .iter()
        .map(|e| (e.cidr().unwrap_or_default().into(), e.description().unwrap_or_default().into()))
        .collect();
    e.sort();
    e
}

fn allowing(list: &str) -> Policy {
    Policy { allowed_prefix_lists: vec![list.to_string()], ..Policy::default() }
}

fn add(list: &str, ip: &str, duration: Option<&str>) -> AddArgs {
    AddArgs {
        rule: RuleArgs { group: list.into(), ip_address: ip.into(), ..RuleArgs::default() },
        duration: duration.map(str::to_string),
        ..AddArgs::default()
    }
}

fn alice() -> Caller {
    Caller { identity: Some("alice@example.com".into()), ..Caller::default() }
}

fn audit_lines(state: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("audit.log")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("audit line is JSON")).collect()
}

fn ec2_firewall(moto: &Moto) -> Arc<dyn Firewall> {
    Arc::new(Ec2Firewall::new(settings(moto)))
}

#[tokio::test(flavor = "current_thread")]
async fn entries_are_added_checked_renewed_removed_and_swept_with_signed_markers() {
    let Some(moto) = start_moto() else { return };
    let client = ec2(&moto).await;
    let list = create_list(&client, 5).await;
    let state = tempfile::tempdir().expect("state dir");
    let w = service_with(ec2_firewall(&moto), allowing(&list), state.path());
    let scope = default_chain();

    let added = w.add(&scope, &add(&list, "203.0.113.7", Some("1h")), &alice()).await.expect("add");
    assert!(added.changed && added.rule.managed, "{added:?}");
    assert_eq!((added.rule.rule_id.as_str(), added.rule.protocol.as_str()), ("203.0.113.7/32", "all"));
    let old = added.rule.expires_at.clone().expect("an expiry");
    let held = entries(&client, &list).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].1.contains(&format!("exp={old}")) && held[0].1.contains("mac="), "{held:?}");
    let index = std::fs::read_to_string(state.path().join("expiring-groups.jsonl")).unwrap_or_default();
    assert!(index.contains(&list), "the list is in the sweeper's index: {index}");

    let again = w.add(&scope, &add(&list, "203.0.113.7", None), &alice()).await.expect("idempotent");
    assert!(!again.changed, "{again:?}");
    let rule = RuleArgs { group: list.clone(), ip_address: "203.0.113.7".into(), ..RuleArgs::default() };
    assert!(w.check(&scope, &rule, &alice()).await.expect("check").exists);
    let listed = w.list(&scope, &list, &alice()).await.expect("list");
    assert_eq!(listed.len(), 1);

    // A port or protocol means nothing for an entry: refused, nothing changed.
    let mut with_port = add(&list, "203.0.113.8", None);
    with_port.rule.port = Some("22".into());
    match w.add(&scope, &with_port, &alice()).await {
        Err(Error::Invalid { field: "port", message }) => {
            assert!(message.contains("prefix list"), "{message}")
        }
        other => panic!("expected a refused port, got {other:?}"),
    }
    assert_eq!(entries(&client, &list).await.len(), 1);

    let renewed = w.add(&scope, &add(&list, "203.0.113.7", Some("5h")), &alice()).await.expect("renew");
    assert!(renewed.renewed, "{renewed:?}");
    let new = renewed.rule.expires_at.clone().expect("new expiry");
    let held = entries(&client, &list).await;
    assert_eq!(held.len(), 1, "the entry rewritten, not doubled: {held:?}");
    assert!(held[0].1.contains(&format!("exp={new}")) && !held[0].1.contains(&old), "{held:?}");

    let now = SystemTime::now();
    let swept = w.sweep(&scope, &list, now + Duration::from_secs(2 * 3600)).await.expect("sweep");
    assert!(swept.is_empty(), "not yet expired: {swept:?}");
    w.add(&scope, &add(&list, "198.51.100.0/24", None), &alice()).await.expect("a permanent entry");
    let swept = w.sweep(&scope, &list, now + Duration::from_secs(6 * 3600)).await.expect("sweep");
    assert_eq!(swept.len(), 1, "{swept:?}");
    let held = entries(&client, &list).await;
    assert_eq!(held.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["198.51.100.0/24"], "{held:?}");

    let removed =
        w.remove(&scope, &RuleArgs { ip_address: "198.51.100.0/24".into(), ..rule }, &alice()).await;
    assert!(removed.expect("remove").changed);
    assert_eq!(entries(&client, &list).await, vec![]);
    let results: Vec<String> = audit_lines(state.path())
        .iter()
        .filter(|l| l["phase"] == "outcome")
        .map(|l| l["result"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(results, ["added", "renewed", "added", "expired", "removed"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_list_the_policy_does_not_name_is_refused_naming_the_key() {
    let Some(moto) = start_moto() else { return };
    let client = ec2(&moto).await;
    let list = create_list(&client, 5).await;
    let state = tempfile::tempdir().expect("state dir");
    for policy in [
        Policy::default(),
        Policy {
            allowed_prefix_lists: vec!["pl-0000*".into()],
            allowed_security_groups: vec!["pl-*".into()],
            ..Policy::default()
        },
    ] {
        let w = service_with(ec2_firewall(&moto), policy, state.path());
        match w.add(&default_chain(), &add(&list, "203.0.113.7", None), &alice()).await {
            Err(Error::Policy(r)) => {
                assert_eq!(r.setting, "allowed_prefix_lists");
                assert!(r.message.contains(&list), "{}", r.message);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(w.list(&default_chain(), &list, &alice()).await.is_err(), "reads are refused too");
    }
    assert_eq!(entries(&client, &list).await, vec![]);
    assert!(audit_lines(state.path()).is_empty(), "refused before any intent or AWS call");
}

/// `Ec2Firewall` with EC2's `CurrentVersion` check put back, and a second client that modifies
/// the list (in moto) just before each of our next `interlopers` writes.
struct Contended {
    inner: Ec2Firewall,
    other: aws_sdk_ec2::Client,
    interlopers: AtomicUsize,
    /// How many writes the other client made (each its own address).
    written: AtomicUsize,
}

impl Contended {
    async fn write(
        &self,
        scope: &Scope,
        id: &str,
        version: i64,
        edit: &PrefixListEdit,
    ) -> Result<(), FirewallError> {
        if self.interlopers.load(Ordering::SeqCst) > 0 {
            self.interlopers.fetch_sub(1, Ordering::SeqCst);
            let n = self.written.fetch_add(1, Ordering::SeqCst) + 1;
            let now = self.inner.prefix_list(scope, id).await?.version;
            let entry =
                AddPrefixListEntry::builder().cidr(format!("192.0.2.{n}/32")).description("other writer");
            let out = self.other.modify_managed_prefix_list().prefix_list_id(id).current_version(now);
            out.add_entries(entry.build()).send().await.expect("the other writer's change");
        }
        if self.inner.prefix_list(scope, id).await?.version != version {
            return Err(FirewallError::Other {
                action: "ec2:ModifyManagedPrefixList".into(),
                code: VERSION_CONFLICT.into(),
                message: format!("{id} is not at version {version}"),
            });
        }
        self.inner.modify_prefix_list(scope, id, version, edit).await
    }
}

impl Firewall for Contended {
    fn list<'a>(&'a self, s: &'a Scope, g: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
        self.inner.list(s, g)
    }
    fn authorize<'a>(&'a self, s: &'a Scope, r: &'a RuleSpec, d: &'a str) -> FwFuture<'a, String> {
        self.inner.authorize(s, r, d)
    }
    fn revoke<'a>(&'a self, s: &'a Scope, g: &'a str, ids: &'a [String]) -> FwFuture<'a, ()> {
        self.inner.revoke(s, g, ids)
    }
    fn can_revoke<'a>(&'a self, s: &'a Scope, r: &'a RuleSpec) -> FwFuture<'a, ()> {
        self.inner.can_revoke(s, r)
    }
    fn can_authorize<'a>(&'a self, s: &'a Scope, r: &'a RuleSpec) -> FwFuture<'a, ()> {
        self.inner.can_authorize(s, r)
    }
    fn redescribe<'a>(&'a self, s: &'a Scope, r: &'a RuleSpec, id: &'a str, d: &'a str) -> FwFuture<'a, ()> {
        self.inner.redescribe(s, r, id, d)
    }
    fn can_redescribe<'a>(
        &'a self,
        s: &'a Scope,
        r: &'a RuleSpec,
        id: &'a str,
        d: &'a str,
    ) -> FwFuture<'a, ()> {
        self.inner.can_redescribe(s, r, id, d)
    }
    fn groups_page<'a>(
        &'a self,
        s: &'a Scope,
        p: &'a [String],
        t: Option<&'a str>,
    ) -> FwFuture<'a, GroupPage> {
        self.inner.groups_page(s, p, t)
    }
    fn prefix_list<'a>(&'a self, s: &'a Scope, id: &'a str) -> FwFuture<'a, PrefixListState> {
        self.inner.prefix_list(s, id)
    }
    fn modify_prefix_list<'a>(
        &'a self,
        s: &'a Scope,
        id: &'a str,
        version: i64,
        edit: &'a PrefixListEdit,
    ) -> FwFuture<'a, ()> {
        Box::pin(self.write(s, id, version, edit))
    }
    fn can_modify_prefix_list<'a>(&'a self, s: &'a Scope, l: &'a PrefixListState) -> FwFuture<'a, ()> {
        self.inner.can_modify_prefix_list(s, l)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_concurrent_writer_makes_the_write_start_again_and_both_entries_stay() {
    let Some(moto) = start_moto() else { return };
    let client = ec2(&moto).await;
    let list = create_list(&client, 10).await;
    let state = tempfile::tempdir().expect("state dir");
    let contended = Arc::new(Contended {
        inner: Ec2Firewall::new(settings(&moto)),
        other: ec2(&moto).await,
        interlopers: AtomicUsize::new(2),
        written: AtomicUsize::new(0),
    });
    let w = service_with(contended.clone(), allowing(&list), state.path());
    let added = w.add(&default_chain(), &add(&list, "203.0.113.7", None), &alice()).await.expect("add");
    assert!(added.changed, "{added:?}");
    let held: Vec<String> = entries(&client, &list).await.into_iter().map(|e| e.0).collect();
    assert_eq!(held, ["192.0.2.1/32", "192.0.2.2/32", "203.0.113.7/32"], "nobody's entry lost");
    let outcome = audit_lines(state.path()).into_iter().find(|l| l["phase"] == "outcome").expect("outcome");
    assert_eq!(outcome["result"], "added");
    assert_eq!(
        outcome["aws_request_ids"].as_array().map(Vec::len),
        Some(1),
        "one write reached AWS: {outcome}"
    );

    // A list that changes before every one of the three attempts: given up, nothing of ours.
    contended.interlopers.store(3, Ordering::SeqCst);
    match w.add(&default_chain(), &add(&list, "203.0.113.9", None), &alice()).await {
        Err(Error::Aws(FirewallError::Other { code, message, .. })) => {
            assert_eq!(code, VERSION_CONFLICT);
            assert!(message.contains("3") && message.contains("changed nothing"), "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let held: Vec<String> = entries(&client, &list).await.into_iter().map(|e| e.0).collect();
    assert_eq!(held.len(), 6, "three more of the other writer's, none of ours: {held:?}");
    assert!(!held.contains(&"203.0.113.9/32".to_string()));
    let failed = audit_lines(state.path()).into_iter().filter(|l| l["result"] == "failed").count();
    assert_eq!(failed, 1, "the failure is audited");
}

#[tokio::test(flavor = "current_thread")]
async fn audit_outcomes_carry_the_account_and_the_request_ids_of_their_aws_calls() {
    let Some(moto) = start_moto() else { return };
    let client = ec2(&moto).await;
    let group = create_group(&client, "audit").await;
    let list = create_list(&client, 5).await;
    let state = tempfile::tempdir().expect("state dir");
    let w = service_with(ec2_firewall(&moto), allowing(&list), state.path());
    w.add(&default_chain(), &add(&group, "203.0.113.7", None), &alice()).await.expect("add to the group");
    w.add(&default_chain(), &add(&list, "203.0.113.7", None), &alice()).await.expect("add to the list");
    let dry = w.dry_run_add(&default_chain(), &add(&list, "203.0.113.8", None), &alice()).await.expect("dry");
    assert!(dry.aws_allowed.allowed && dry.aws_allowed.action == "ec2:ModifyManagedPrefixList", "{dry:?}");
    assert_eq!(entries(&client, &list).await.len(), 1, "the dry run changed nothing");
    let lines = audit_lines(state.path());
    let recorded: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["phase"] == "outcome" || l["phase"] == "dry_run").collect();
    assert_eq!(recorded.len(), 3, "{lines:#?}");
    for l in recorded {
        assert_eq!(l["aws_account"], "123456789012", "moto's account: {l}");
        let ids = l["aws_request_ids"].as_array().cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "{l}");
        assert!(ids[0].as_str().is_some_and(|id| id.len() >= 8), "{l}");
    }
    let intents = lines.iter().filter(|l| l["phase"] == "intent");
    assert!(intents.clone().count() == 2 && intents.clone().all(|l| l.get("aws_request_ids").is_none()));
    let text = std::fs::read_to_string(state.path().join("audit.log")).expect("audit");
    assert!(!text.contains("testing\""), "no credential in the audit log");
}

#[tokio::test(flavor = "current_thread")]
async fn a_role_without_a_fixed_session_name_is_assumed_in_the_callers_name() {
    let Some(moto) = start_moto() else { return };
    let client = ec2(&moto).await;
    let group = create_group(&client, "per-caller").await;
    let state = tempfile::tempdir().expect("state dir");
    let profile = CredentialProfile {
        name: "ops".into(),
        region: None,
        role_arn: Some("arn:aws:iam::123456789012:role/ops".into()),
        external_id: None,
        session_name: None,
        source_profile: None,
        read_only: false,
    };
    let fw = Ec2Firewall::new(AwsSettings { profiles: vec![profile], ..settings(&moto) });
    let w = service_with(Arc::new(fw), Policy::default(), state.path());
    let scope = Scope { profile: Some("ops".into()), region: None, keys: None };
    let bob = Caller { identity: Some("bob smith/ops".into()), ..Caller::default() };
    w.add(&scope, &add(&group, "203.0.113.7", None), &alice()).await.expect("alice adds");
    w.add(&scope, &add(&group, "203.0.113.8", None), &alice()).await.expect("alice again");
    w.add(&scope, &add(&group, "203.0.113.9", None), &bob).await.expect("bob adds");
    let mut sessions: Vec<String> =
        moto_support::assumed_roles(&moto).into_iter().map(|(_, session, _)| session).collect();
    sessions.sort();
    sessions.dedup();
    assert!(sessions.contains(&"awswl-alice@example.com".to_string()), "{sessions:?}");
    assert!(sessions.contains(&"awswl-bob_smith_ops".to_string()), "{sessions:?}");
    let alice_sessions = moto_support::assumed_roles(&moto)
        .into_iter()
        .filter(|(_, s, _)| s == "awswl-alice@example.com")
        .count();
    assert_eq!(alice_sessions, 1, "the caller's role credentials are kept, not assumed per call");
}
