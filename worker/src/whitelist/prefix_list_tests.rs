//! The prefix-list adapter against an in-memory list that enforces `CurrentVersion` as EC2
//! does, with another writer that can slip in between a read and a write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::whitelist::target::{Ports, Protocol};

/// One list; `interlopers` writes by someone else land just before our next ones.
#[derive(Default)]
struct FakeLists {
    list: Mutex<PrefixListState>,
    interlopers: AtomicUsize,
    writes: AtomicUsize,
}

fn refused() -> FirewallError {
    FirewallError::Refused { code: "Test".into(), message: "not in this fake".into() }
}

impl FakeLists {
    fn with(entries: &[(&str, &str)], max: Option<i32>) -> FakeLists {
        let entries = entries
            .iter()
            .map(|(c, d)| PrefixListEntry { cidr: c.parse().unwrap(), description: d.to_string() })
            .collect();
        let list =
            PrefixListState { id: "pl-12345678".into(), version: 1, max_entries: max, entries, name: None };
        FakeLists { list: Mutex::new(list), ..FakeLists::default() }
    }

    fn cidrs(&self) -> Vec<(String, String)> {
        let l = self.list.lock().unwrap();
        l.entries.iter().map(|e| (e.cidr.to_string(), e.description.clone())).collect()
    }
}

impl Firewall for FakeLists {
    fn list<'a>(&'a self, _: &'a Scope, _: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
        Box::pin(async { Err(refused()) })
    }
    fn authorize<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec, _: &'a str) -> FwFuture<'a, String> {
        Box::pin(async { Err(refused()) })
    }
    fn revoke<'a>(&'a self, _: &'a Scope, _: &'a str, _: &'a [String]) -> FwFuture<'a, ()> {
        Box::pin(async { Err(refused()) })
    }
    fn can_revoke<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(async { Err(refused()) })
    }
    fn can_authorize<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(async { Err(refused()) })
    }
    fn redescribe<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec, _: &'a str, _: &'a str) -> FwFuture<'a, ()> {
        Box::pin(async { Err(refused()) })
    }
    fn can_redescribe<'a>(
        &'a self,
        _: &'a Scope,
        _: &'a RuleSpec,
        _: &'a str,
        _: &'a str,
    ) -> FwFuture<'a, ()> {
        Box::pin(async { Err(refused()) })
    }
    fn groups_page<'a>(
        &'a self,
        _: &'a Scope,
        _: &'a [String],
        _: Option<&'a str>,
    ) -> FwFuture<'a, GroupPage> {
        Box::pin(async { Ok(GroupPage::default()) })
    }
    fn prefix_list<'a>(&'a self, _: &'a Scope, id: &'a str) -> FwFuture<'a, PrefixListState> {
        let l = self.list.lock().unwrap().clone();
        Box::pin(async move {
            match l.id == id {
                true => Ok(l),
                false => Err(FirewallError::GroupNotFound { group: id.into(), region: "r".into() }),
            }
        })
    }
    fn modify_prefix_list<'a>(
        &'a self,
        _: &'a Scope,
        _: &'a str,
        version: i64,
        edit: &'a PrefixListEdit,
    ) -> FwFuture<'a, ()> {
        let mut l = self.list.lock().unwrap();
        // Another writer, between our read and this write.
        if self.interlopers.load(Ordering::SeqCst) > 0 {
            let n = self.interlopers.fetch_sub(1, Ordering::SeqCst);
            let cidr = format!("198.51.100.{n}/32").parse().unwrap();
            l.entries.push(PrefixListEntry { cidr, description: "other writer".into() });
            l.version += 1;
        }
        let done = if l.version != version {
            Err(FirewallError::Other {
                action: MODIFY_ACTION.into(),
                code: VERSION_CONFLICT.into(),
                message: "version".into(),
            })
        } else {
            l.entries.retain(|e| !edit.remove.contains(&e.cidr));
            l.entries.extend(edit.add.iter().cloned());
            l.version += 1;
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        Box::pin(async move { done })
    }
}

fn spec(cidr: &str) -> RuleSpec {
    RuleSpec {
        group_id: "pl-12345678".into(),
        cidr: cidr.parse().unwrap(),
        protocol: Protocol::All,
        ports: Ports::ANY,
    }
}

fn scope() -> Scope {
    Scope { profile: None, region: Some("eu-west-1".into()), keys: None }
}

fn targets(fake: &Arc<FakeLists>) -> Arc<dyn Firewall> {
    Targets::wrap(fake.clone())
}

#[tokio::test(flavor = "current_thread")]
async fn entries_read_as_rules_with_the_cidr_as_id() {
    let fake = Arc::new(FakeLists::with(&[("203.0.113.7/32", "d")], None));
    let rules = targets(&fake).list(&scope(), "pl-12345678").await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!((rules[0].rule_id.as_str(), rules[0].protocol.as_str()), ("203.0.113.7/32", "-1"));
    assert!(rules[0].matches(&spec("203.0.113.7/32")), "an entry is the spec of protocol all, ports all");
}

#[tokio::test(flavor = "current_thread")]
async fn a_write_after_another_writer_is_retried_on_the_new_version_and_keeps_both() {
    let fake = Arc::new(FakeLists::with(&[], None));
    fake.interlopers.store(2, Ordering::SeqCst);
    let id = targets(&fake).authorize(&scope(), &spec("203.0.113.7/32"), "mine").await.unwrap();
    assert_eq!(id, "203.0.113.7/32");
    let cidrs = fake.cidrs();
    assert_eq!(cidrs.len(), 3, "both interlopers' entries and ours: {cidrs:?}");
    assert!(cidrs.contains(&("203.0.113.7/32".into(), "mine".into())));
    assert_eq!(fake.writes.load(Ordering::SeqCst), 1, "written once, on the third attempt");
}

#[tokio::test(flavor = "current_thread")]
async fn a_list_that_keeps_changing_is_given_up_after_max_attempts_with_nothing_written() {
    let fake = Arc::new(FakeLists::with(&[], None));
    fake.interlopers.store(MAX_ATTEMPTS, Ordering::SeqCst);
    let e = targets(&fake).authorize(&scope(), &spec("203.0.113.7/32"), "mine").await.unwrap_err();
    match e {
        FirewallError::Other { code, message, .. } => {
            assert_eq!(code, VERSION_CONFLICT);
            assert!(message.contains("3") && message.contains("changed nothing"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(fake.writes.load(Ordering::SeqCst), 0);
    assert!(!fake.cidrs().iter().any(|(c, _)| c == "203.0.113.7/32"));
}

#[tokio::test(flavor = "current_thread")]
async fn duplicates_full_lists_and_absent_entries() {
    let fake = Arc::new(FakeLists::with(&[("203.0.113.7/32", "d")], Some(1)));
    let t = targets(&fake);
    assert_eq!(t.authorize(&scope(), &spec("203.0.113.7/32"), "x").await, Err(FirewallError::Duplicate));
    match t.authorize(&scope(), &spec("203.0.113.8/32"), "x").await {
        Err(FirewallError::Other { code, message, .. }) => {
            assert_eq!(code, "PrefixListFull");
            assert!(message.contains("MaxEntries"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    let absent = ["203.0.113.9/32".to_string()];
    assert_eq!(t.revoke(&scope(), "pl-12345678", &absent).await, Err(FirewallError::RuleNotFound));
    assert_eq!(
        t.redescribe(&scope(), &spec("203.0.113.9/32"), "203.0.113.9/32", "new").await,
        Err(FirewallError::RuleNotFound)
    );
    assert_eq!(fake.writes.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn renew_rewrites_the_description_in_one_version_and_revoke_removes() {
    let fake = Arc::new(FakeLists::with(&[("203.0.113.7/32", "old"), ("203.0.113.8/32", "keep")], None));
    let t = targets(&fake);
    t.redescribe(&scope(), &spec("203.0.113.7/32"), "203.0.113.7/32", "new").await.unwrap();
    assert_eq!(fake.list.lock().unwrap().version, 2, "one write");
    assert!(fake.cidrs().contains(&("203.0.113.7/32".into(), "new".into())));
    assert_eq!(fake.cidrs().len(), 2);
    t.revoke(&scope(), "pl-12345678", &["203.0.113.7/32".to_string()]).await.unwrap();
    assert_eq!(fake.cidrs(), vec![("203.0.113.8/32".to_string(), "keep".to_string())]);
}

#[tokio::test(flavor = "current_thread")]
async fn security_groups_pass_through() {
    let fake = Arc::new(FakeLists::with(&[], None));
    let e = targets(&fake).list(&scope(), "sg-12345678").await.unwrap_err();
    assert!(matches!(e, FirewallError::Refused { .. }), "the inner firewall answered: {e:?}");
}
