//! Two workers of one host, as two services on one state dir (their own caches, the host's
//! counters, group locks and shared reads): how many times EC2 is read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;

use super::*;
use crate::host::{AuditLog, ChangeCounters, GroupLockFiles};
use crate::whitelist::firewall::FwFuture;
use crate::whitelist::{
    AddArgs, Caller, Defaults, ExistingRule, Firewall, MarkerKey, Parts, Policy, RuleArgs, RuleSpec, Scope,
    Whitelist,
};

const G: &str = "sg-0123456789abcdef0";

/// EC2 that counts the reads and takes a while to answer each (so callers pile up behind it).
#[derive(Default)]
struct SlowEc2 {
    rules: Mutex<Vec<ExistingRule>>,
    lists: AtomicUsize,
}

impl Firewall for SlowEc2 {
    fn list<'a>(&'a self, _: &'a Scope, _: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
        Box::pin(async move {
            self.lists.fetch_add(1, Ordering::SeqCst);
            let rules = self.rules.lock().unwrap().clone();
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(rules)
        })
    }
    fn authorize<'a>(
        &'a self,
        _: &'a Scope,
        spec: &'a RuleSpec,
        description: &'a str,
    ) -> FwFuture<'a, String> {
        Box::pin(async move {
            let mut rules = self.rules.lock().unwrap();
            let id = format!("sgr-{:017x}", rules.len());
            rules.push(ExistingRule::authorized(id.clone(), spec, description));
            Ok(id)
        })
    }
    fn revoke<'a>(&'a self, _: &'a Scope, _: &'a str, _: &'a [String]) -> FwFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn can_revoke<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn can_authorize<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn redescribe<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec, _: &'a str, _: &'a str) -> FwFuture<'a, ()> {
        Box::pin(async { Ok(()) })
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
    ) -> FwFuture<'a, crate::whitelist::GroupPage> {
        Box::pin(async { Ok(crate::whitelist::GroupPage::default()) })
    }
}

/// A worker of the host in `dir`: its own service (and cache) over the host's shared files.
fn worker(dir: &std::path::Path, ec2: &Arc<SlowEc2>, ttl: Duration) -> Whitelist {
    Whitelist::new(Parts {
        firewall: ec2.clone(),
        policy: Policy::default(),
        defaults: Defaults::default(),
        port_mappings: vec![],
        cache_ttl: ttl,
        versions: Arc::new(ChangeCounters::open(&dir.join("cache-versions")).unwrap()),
        recorder: Arc::new(AuditLog::open(&dir.join("audit.log")).unwrap()),
        marker_key: MarkerKey::new(&[5; 32]).unwrap(),
        group_locks: Arc::new(GroupLockFiles::new(dir.into())),
    })
    .with_shared_reads(Arc::new(ReadFiles::new(dir.into())))
}

fn scope() -> Scope {
    Scope { profile: None, region: Some("us-east-1".into()), keys: None }
}

fn ssh_from(ip: &str) -> RuleArgs {
    RuleArgs { group: G.into(), ip_address: ip.into(), port: Some("22".into()), protocol: None }
}

/// 64 checks at once, half on each worker.
async fn burst(a: &Whitelist, b: &Whitelist) {
    let who = Caller::default();
    let (s, rule) = (scope(), ssh_from("203.0.113.7"));
    let checks = (0..64).map(|i| {
        let w = if i % 2 == 0 { a } else { b };
        w.check(&s, &rule, &who)
    });
    for answer in join_all(checks).await {
        assert!(!answer.unwrap().exists);
    }
}

#[tokio::test]
async fn sixty_four_checks_on_an_expired_entry_read_ec2_once_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let ec2 = Arc::new(SlowEc2::default());
    let ttl = Duration::from_millis(400);
    let (a, b) = (worker(dir.path(), &ec2, ttl), worker(dir.path(), &ec2, ttl));
    let lists = || ec2.lists.load(Ordering::SeqCst);

    burst(&a, &b).await;
    assert_eq!(lists(), 1, "a cold burst on two workers: one read for the host");

    // Past twice the TTL nothing may be served: every caller waits for the one read.
    tokio::time::sleep(ttl * 2 + Duration::from_millis(100)).await;
    burst(&a, &b).await;
    assert_eq!(lists(), 2, "64 checks on an expired entry: one read for the host");

    // Within the stale window: one read, and the others are answered at once meanwhile.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    burst(&a, &b).await;
    assert_eq!(lists(), 3, "64 checks on a stale entry: one read for the host");

    burst(&a, &b).await;
    assert_eq!(lists(), 3, "fresh again: no read");
}

#[tokio::test]
async fn an_add_on_one_worker_makes_the_next_list_on_another_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let ec2 = Arc::new(SlowEc2::default());
    let ttl = Duration::from_secs(60);
    let (a, b) = (worker(dir.path(), &ec2, ttl), worker(dir.path(), &ec2, ttl));
    let who = Caller::default();
    assert!(b.list(&scope(), G, &who).await.unwrap().is_empty());
    assert!(a.list(&scope(), G, &who).await.unwrap().is_empty());
    let before = ec2.lists.load(Ordering::SeqCst);
    let add = AddArgs { rule: ssh_from("203.0.113.9"), ..AddArgs::default() };
    assert!(a.add(&scope(), &add, &who).await.unwrap().changed);
    let listed = b.list(&scope(), G, &who).await.unwrap();
    assert_eq!(listed.len(), 1, "worker b served its cached empty list after a's add");
    assert_eq!(listed[0].cidr_ip.as_deref(), Some("203.0.113.9/32"));
    assert!(ec2.lists.load(Ordering::SeqCst) > before, "b read EC2 again");
}

#[test]
fn a_read_survives_the_round_trip_and_a_torn_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let files = ReadFiles::new(dir.path().into());
    assert_eq!(files.read_file("sg-12345678-ab"), None);
    let read = SharedRead { version: 3, fetched_ms: 17, rules: vec![] };
    files.write_file("sg-12345678-ab", &read);
    assert_eq!(files.read_file("sg-12345678-ab"), Some(read));
    std::fs::write(dir.path().join("read-sg-12345678-ab.json"), b"{\"version\":3,\"fe").unwrap();
    assert_eq!(files.read_file("sg-12345678-ab"), None);
    assert!(files.path("../x", "json").is_err());
}
