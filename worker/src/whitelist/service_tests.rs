use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::whitelist::audit::{AuditEntry, INTENT, OUTCOME};
use crate::whitelist::cache::LocalVersions;
use crate::whitelist::firewall::FwFuture;
use crate::whitelist::marker::MarkerKey;
use crate::whitelist::Keys;

/// An in-memory EC2 that behaves like moto for the calls the service makes.
#[derive(Default)]
struct FakeEc2 {
    rules: Mutex<Vec<ExistingRule>>,
    calls: AtomicUsize,
    /// Authorize and revoke calls: the calls that change EC2.
    changes: AtomicUsize,
    next: AtomicUsize,
    fail: Mutex<Option<FirewallError>>,
    /// What the server's own identity is refused when it tries to revoke (a dry run).
    server_cannot_revoke: Mutex<Option<FirewallError>>,
    /// What a dry run of an add answers with (IAM's refusal, say); `None` = allowed.
    cannot_authorize: Mutex<Option<FirewallError>>,
    /// Dry runs of adds asked.
    dry_runs: AtomicUsize,
    /// The account's security groups, listed `GROUP_PAGE` to a page (EC2 pages; moto never).
    groups: Mutex<Vec<crate::whitelist::GroupInfo>>,
    /// Pages of groups asked for.
    group_pages: AtomicUsize,
    /// A rule whose revoke fails (AWS throttling), to show partial failures.
    unrevokable: Mutex<Option<String>>,
}

/// Groups per page of the fake's listing: small, so a handful of groups takes several pages.
const GROUP_PAGE: usize = 2;

impl FakeEc2 {
    fn fail_with(&self, e: FirewallError) {
        *self.fail.lock().unwrap() = Some(e);
    }
    fn failure(&self) -> Option<FirewallError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.fail.lock().unwrap().clone()
    }
}

impl Firewall for FakeEc2 {
    fn list<'a>(&'a self, _: &'a Scope, group: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
        Box::pin(async move {
            if let Some(e) = self.failure() {
                return Err(e);
            }
            if group == "sg-00000000" {
                return Err(FirewallError::GroupNotFound { group: group.into(), region: "r".into() });
            }
            let rules: Vec<ExistingRule> =
                self.rules.lock().unwrap().iter().filter(|r| r.group_id == group).cloned().collect();
            // A read takes time: others run between the snapshot and its answer, as on EC2.
            tokio::task::yield_now().await;
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
            self.changes.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let mut rules = self.rules.lock().unwrap();
            let id = format!("sgr-{:017x}", self.next.fetch_add(1, Ordering::SeqCst));
            rules.push(ExistingRule::authorized(id.clone(), spec, description));
            Ok(id)
        })
    }
    fn can_revoke<'a>(&'a self, scope: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(async move {
            assert!(scope.keys.is_none(), "the dry run asks the server's own identity");
            self.server_cannot_revoke.lock().unwrap().clone().map_or(Ok(()), Err)
        })
    }
    fn can_authorize<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(async move {
            self.dry_runs.fetch_add(1, Ordering::SeqCst);
            self.cannot_authorize.lock().unwrap().clone().map_or(Ok(()), Err)
        })
    }
    fn redescribe<'a>(
        &'a self,
        _: &'a Scope,
        spec: &'a RuleSpec,
        rule_id: &'a str,
        description: &'a str,
    ) -> FwFuture<'a, ()> {
        Box::pin(async move {
            self.changes.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let mut rules = self.rules.lock().unwrap();
            let rule = rules
                .iter_mut()
                .find(|r| r.rule_id == rule_id && r.matches(spec))
                .ok_or(FirewallError::RuleNotFound)?;
            rule.description = description.into();
            Ok(())
        })
    }
    fn groups_page<'a>(
        &'a self,
        _: &'a Scope,
        patterns: &'a [String],
        token: Option<&'a str>,
    ) -> FwFuture<'a, crate::whitelist::GroupPage> {
        Box::pin(async move {
            if let Some(e) = self.failure() {
                return Err(e);
            }
            self.group_pages.fetch_add(1, Ordering::SeqCst);
            let matching: Vec<_> = self
                .groups
                .lock()
                .unwrap()
                .iter()
                .filter(|g| {
                    patterns.is_empty() || patterns.iter().any(|p| super::super::policy::glob(p, &g.group_id))
                })
                .cloned()
                .collect();
            let from: usize = token.map_or(0, |t| t.parse().unwrap());
            let to = (from + GROUP_PAGE).min(matching.len());
            let next = (to < matching.len()).then(|| to.to_string());
            Ok(crate::whitelist::GroupPage { groups: matching[from..to].to_vec(), next })
        })
    }
    fn can_redescribe<'a>(
        &'a self,
        _: &'a Scope,
        _: &'a RuleSpec,
        _: &'a str,
        _: &'a str,
    ) -> FwFuture<'a, ()> {
        Box::pin(async move {
            self.dry_runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
    fn revoke<'a>(&'a self, _: &'a Scope, _: &'a str, ids: &'a [String]) -> FwFuture<'a, ()> {
        Box::pin(async move {
            self.changes.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.failure() {
                return Err(e);
            }
            if ids.iter().any(|id| self.unrevokable.lock().unwrap().as_ref() == Some(id)) {
                return Err(FirewallError::Throttled { action: "ec2:RevokeSecurityGroupIngress".into() });
            }
            let mut rules = self.rules.lock().unwrap();
            if !ids.iter().all(|id| rules.iter().any(|r| &r.rule_id == id)) {
                return Err(FirewallError::RuleNotFound);
            }
            rules.retain(|r| !ids.contains(&r.rule_id));
            Ok(())
        })
    }
}

#[derive(Default)]
struct Journal {
    entries: Mutex<Vec<AuditEntry>>,
    expiring: Mutex<Vec<String>>,
    broken: AtomicBool,
    outcomes_broken: AtomicBool,
    index_broken: AtomicBool,
}

impl Recorder for Journal {
    fn record(&self, e: &AuditEntry) -> Result<(), String> {
        let outcome = e.phase == Some(OUTCOME);
        if self.broken.load(Ordering::SeqCst) || (outcome && self.outcomes_broken.load(Ordering::SeqCst)) {
            return Err("disk full".into());
        }
        self.entries.lock().unwrap().push(e.clone());
        Ok(())
    }
    fn note_expiring(&self, _: &Scope, group: &str) -> Result<(), String> {
        if self.index_broken.load(Ordering::SeqCst) {
            return Err("index: disk full".into());
        }
        self.expiring.lock().unwrap().push(group.into());
        Ok(())
    }
    fn recent(&self) -> Result<Vec<LoggedEntry>, String> {
        // Through the real line format, as the file recorder reads it back.
        let entries = self.entries.lock().unwrap();
        Ok(entries
            .iter()
            .map(|e| serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap())
            .collect())
    }
}

impl Journal {
    fn outcomes(&self) -> Vec<AuditEntry> {
        self.entries.lock().unwrap().iter().filter(|e| e.phase == Some(OUTCOME)).cloned().collect()
    }
}

const G: &str = "sg-0123456789abcdef0";

/// The host's group locks, in memory: one lock for every group (enough for these tests).
#[derive(Default)]
struct OneLock(Arc<tokio::sync::Mutex<()>>);

impl GroupLocks for OneLock {
    fn hold<'a>(&'a self, _: &'a str) -> GroupLockFuture<'a> {
        Box::pin(async move { Ok(Box::new(self.0.clone().lock_owned().await) as GroupGuard) })
    }
}

struct Setup {
    ec2: Arc<FakeEc2>,
    journal: Arc<Journal>,
    versions: Arc<LocalVersions>,
    locks: Arc<OneLock>,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            ec2: Arc::default(),
            journal: Arc::default(),
            versions: Arc::default(),
            locks: Arc::default(),
        }
    }
    fn service(&self, policy: Policy) -> Whitelist {
        Whitelist::new(Parts {
            firewall: self.ec2.clone(),
            policy,
            defaults: Defaults::default(),
            port_mappings: vec![],
            cache_ttl: Duration::from_secs(60),
            versions: self.versions.clone(),
            recorder: self.journal.clone(),
            marker_key: MarkerKey::new(&[5; 32]).unwrap(),
            group_locks: self.locks.clone(),
        })
    }
}

fn rule(ip: &str, port: Option<&str>, protocol: Option<&str>) -> RuleArgs {
    RuleArgs {
        group: G.into(),
        ip_address: ip.into(),
        port: port.map(Into::into),
        protocol: protocol.map(Into::into),
    }
}

fn add(ip: &str, port: Option<&str>, protocol: Option<&str>) -> AddArgs {
    AddArgs { rule: rule(ip, port, protocol), ..AddArgs::default() }
}

fn scope() -> Scope {
    Scope { profile: None, region: Some("us-east-1".into()), keys: None }
}

#[tokio::test]
async fn add_list_check_remove_round_trip() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller { identity: Some("alice".into()), request_id: Some("r1".into()), ..Caller::default() };
    let added = w.add(&scope(), &add("203.0.113.7", None, None), &who).await.unwrap();
    assert!(added.changed);
    assert_eq!(
        (added.rule.cidr_ip.as_deref(), added.rule.port.as_str(), added.rule.protocol.as_str()),
        (Some("203.0.113.7/32"), "22", "tcp")
    );
    assert!(added.rule.description.starts_with("Added by MCP on "), "{}", added.rule.description);
    let again = w.add(&scope(), &add("203.0.113.7/32", Some("ssh"), Some("TCP")), &who).await.unwrap();
    assert!(!again.changed, "identical rule: idempotent");
    assert_eq!(again.rule.rule_id, added.rule.rule_id);
    let v6 = w.add(&scope(), &add("2001:db8::5", Some("8000-8100"), Some("udp")), &who).await.unwrap();
    assert_eq!(v6.rule.cidr_ip.as_deref(), Some("2001:db8::5/128"));
    let listed = w.list(&scope(), G, &Caller::default()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(w.check(&scope(), &rule("203.0.113.7", Some("22"), None), &who).await.unwrap().exists);
    assert!(!w.check(&scope(), &rule("203.0.113.7", Some("23"), None), &who).await.unwrap().exists);
    let removed = w.remove(&scope(), &rule("203.0.113.7", None, None), &who).await.unwrap();
    assert!(removed.changed);
    let missing = w.remove(&scope(), &rule("203.0.113.7", None, None), &who).await.unwrap();
    assert!(!missing.changed && missing.message.contains("was not allowed"), "{}", missing.message);
    let journal = s.journal.entries.lock().unwrap();
    let phases: Vec<(Option<&str>, &str)> = journal.iter().map(|e| (e.phase, e.result)).collect();
    let (intent, outcome) = (Some(INTENT), Some(OUTCOME));
    assert_eq!(
        phases,
        [
            (intent, "pending"),
            (outcome, "added"),
            (intent, "pending"),
            (outcome, "added"),
            (intent, "pending"),
            (outcome, "removed")
        ],
        "only changes are audited, each intent before its outcome"
    );
    for pair in journal.chunks(2) {
        assert!(pair[0].id.is_some() && pair[0].id == pair[1].id, "joined by id: {pair:?}");
    }
    assert_ne!(journal[0].id, journal[2].id);
    assert_eq!(journal[1].identity, "alice");
    assert_eq!(journal[1].request_id.as_deref(), Some("r1"));
}

#[tokio::test]
async fn current_means_the_callers_address() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller { addr: Some("::ffff:198.51.100.9".parse().unwrap()), ..Caller::default() };
    let added = w.add(&scope(), &add("current", None, None), &who).await.unwrap();
    assert_eq!(added.rule.cidr_ip.as_deref(), Some("198.51.100.9/32"));
    let err = w.add(&scope(), &add("current", None, None), &Caller::default()).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "ip_address", .. }));
}

#[tokio::test]
async fn refusals_and_bad_input_make_no_aws_call() {
    let s = Setup::new();
    let w = s.service(Policy { allowed_security_groups: vec![G.into()], ..Policy::default() });
    let who = Caller::default();
    let cases: Vec<(AddArgs, &str)> = vec![
        (add("0.0.0.0/0", None, None), "allow_world"),
        (add("999.1.1.1", None, None), "ip_address"),
        (add("10.0.0.0/8", None, None), "min_prefix_v4"),
        (add("1.2.3.4", Some("0"), None), "port"),
        (add("1.2.3.4", Some("70000"), None), "port"),
        (add("1.2.3.4", None, Some("bogus")), "protocol"),
        (add("1.2.3.4", Some("22"), Some("all")), "port"),
        (
            AddArgs {
                rule: RuleArgs { group: "sg-xyz".into(), ..rule("1.2.3.4", None, None) },
                ..AddArgs::default()
            },
            "security_group_id",
        ),
        (
            AddArgs {
                rule: RuleArgs { group: "sg-12345678".into(), ..rule("1.2.3.4", None, None) },
                ..AddArgs::default()
            },
            "allowed_security_groups",
        ),
        (AddArgs { description: Some("<script>".into()), ..add("1.2.3.4", None, None) }, "description"),
        (AddArgs { duration: Some("soon".into()), ..add("1.2.3.4", None, None) }, "duration"),
    ];
    for (args, what) in cases {
        let err = w.add(&scope(), &args, &who).await.unwrap_err();
        let named = match &err {
            Error::Invalid { field, .. } => *field,
            Error::Policy(r) => r.setting,
            other => panic!("{what}: {other}"),
        };
        assert_eq!(named, what, "{err}");
    }
    assert_eq!(s.ec2.calls.load(Ordering::SeqCst), 0, "nothing reached AWS");
}

#[tokio::test]
async fn expiry_is_capped_recorded_and_swept() {
    let s = Setup::new();
    let w = s.service(Policy { max_rule_duration: Some(Duration::from_secs(8 * 3600)), ..Policy::default() });
    let who = Caller::default();
    let err = w
        .add(&scope(), &AddArgs { duration: Some("9h".into()), ..add("1.2.3.4", None, None) }, &who)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "max_rule_duration_hours"), "{err}");
    let added = w
        .add(&scope(), &AddArgs { duration: Some("1h".into()), ..add("1.2.3.4", None, None) }, &who)
        .await
        .unwrap();
    assert!(added.rule.expires_at.is_some());
    w.add(&scope(), &add("1.2.3.5", None, None), &who).await.unwrap();
    let now = SystemTime::now();
    assert!(w.sweep(&scope(), G, now).await.unwrap().is_empty(), "nothing expired yet");
    let later = now + Duration::from_secs(2 * 3600);
    let swept = w.sweep(&scope(), G, later).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].cidr_ip.as_deref(), Some("1.2.3.4/32"));
    assert!(w.sweep(&scope(), G, later).await.unwrap().is_empty(), "removed exactly once");
    assert_eq!(w.list(&scope(), G, &Caller::default()).await.unwrap().len(), 1, "the permanent rule stays");
    assert_eq!(s.journal.outcomes().last().unwrap().action, "expire");
    assert_eq!(*s.journal.expiring.lock().unwrap(), [G], "the expiring group was noted for the sweeper");
}

#[tokio::test]
async fn a_change_by_one_worker_is_seen_by_another_at_once() {
    let s = Setup::new();
    let (a, b) = (s.service(Policy::default()), s.service(Policy::default()));
    let who = Caller::default();
    assert!(b.list(&scope(), G, &Caller::default()).await.unwrap().is_empty());
    a.add(&scope(), &add("1.2.3.4", None, None), &who).await.unwrap();
    assert_eq!(
        b.list(&scope(), G, &Caller::default()).await.unwrap().len(),
        1,
        "b's cached empty list must not be served"
    );
    let calls = s.ec2.calls.load(Ordering::SeqCst);
    b.list(&scope(), G, &Caller::default()).await.unwrap();
    assert_eq!(s.ec2.calls.load(Ordering::SeqCst), calls, "unchanged groups are served from cache");
}

#[tokio::test]
async fn aws_errors_are_errors_never_a_silent_false() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    s.ec2.fail_with(FirewallError::Throttled { action: "ec2:DescribeSecurityGroupRules".into() });
    let err = w.check(&scope(), &rule("1.2.3.4", None, None), &Caller::default()).await.unwrap_err();
    assert!(matches!(err, Error::Aws(FirewallError::Throttled { .. })));
    *s.ec2.fail.lock().unwrap() = None;
    let missing = RuleArgs { group: "sg-00000000".into(), ..rule("1.2.3.4", None, None) };
    assert!(matches!(
        w.check(&scope(), &missing, &Caller::default()).await.unwrap_err(),
        Error::Aws(FirewallError::GroupNotFound { .. })
    ));
}

#[tokio::test]
async fn a_change_that_cannot_be_recorded_first_is_not_made() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller::default();
    w.add(&scope(), &add("1.2.3.9", None, None), &who).await.unwrap();
    let before = s.ec2.changes.load(Ordering::SeqCst);
    s.journal.broken.store(true, Ordering::SeqCst);
    let err = w.add(&scope(), &add("1.2.3.4", None, None), &who).await.unwrap_err();
    assert!(
        matches!(err, Error::Audit(ref m) if m.contains("no change was made") && m.contains("disk full")),
        "the caller is told why: {err}"
    );
    let err = w.remove(&scope(), &rule("1.2.3.9", None, None), &who).await.unwrap_err();
    assert!(matches!(err, Error::Audit(ref m) if m.contains("no change was made")), "{err}");
    assert_eq!(s.ec2.changes.load(Ordering::SeqCst), before, "no AWS change was even attempted");
    let left: Vec<String> =
        s.ec2.rules.lock().unwrap().iter().filter_map(|r| r.cidr.map(|c| c.to_string())).collect();
    assert_eq!(left, ["1.2.3.9/32"], "EC2 unchanged: nothing added, nothing removed");
}

#[tokio::test]
async fn an_expiring_rule_that_cannot_be_noted_for_the_sweeper_is_not_added() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    s.journal.index_broken.store(true, Ordering::SeqCst);
    let args = AddArgs { duration: Some("1h".into()), ..add("1.2.3.4", None, None) };
    let err = w.add(&scope(), &args, &Caller::default()).await.unwrap_err();
    assert!(
        matches!(err, Error::Audit(ref m) if m.contains("no change was made") && m.contains("index")),
        "{err}"
    );
    assert_eq!(s.ec2.changes.load(Ordering::SeqCst), 0, "no AWS call");
    assert!(s.journal.entries.lock().unwrap().is_empty(), "no intent either");
}

#[tokio::test]
async fn an_intent_left_without_outcome_is_reconciled_against_ec2() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller { identity: Some("dave".into()), ..Caller::default() };
    // Made in EC2, then the outcome was lost (a crash or a full disk right after the call).
    s.journal.outcomes_broken.store(true, Ordering::SeqCst);
    let args = AddArgs { duration: Some("1h".into()), ..add("1.2.3.4", None, None) };
    let err = w.add(&scope(), &args, &who).await.unwrap_err();
    assert!(matches!(err, Error::Audit(ref m) if m.contains("will be reconciled")), "{err}");
    s.journal.outcomes_broken.store(false, Ordering::SeqCst);
    // Recorded, then the process died before the AWS call.
    let mut never_made = s.journal.entries.lock().unwrap()[0].clone();
    never_made.id = Some("lost-before-the-call".into());
    never_made.rule["cidr_ip"] = "1.2.3.5/32".into();
    s.journal.entries.lock().unwrap().push(never_made);
    s.journal.expiring.lock().unwrap().clear();

    assert!(w.reconcile(&|_| false).await.unwrap().is_empty(), "a live writer's intents are left alone");
    let done: Vec<Reconciled> =
        w.reconcile(&|_| true).await.unwrap().into_iter().map(Result::unwrap).collect();
    let found: Vec<&str> = done.iter().map(|r| r.found.as_str()).collect();
    let rule_id = s.ec2.rules.lock().unwrap()[0].rule_id.clone();
    assert_eq!(found, [format!("present (rule {rule_id})").as_str(), "absent"]);
    let outcomes = s.journal.outcomes();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.result == "reconciled" && o.identity == "dave"), "{outcomes:?}");
    assert_eq!(outcomes[1].id.as_deref(), Some("lost-before-the-call"));
    assert_eq!(outcomes[1].found.as_deref(), Some("absent"));
    assert_eq!(*s.journal.expiring.lock().unwrap(), [G], "the present expiring rule is noted again");
    assert!(w.reconcile(&|_| true).await.unwrap().is_empty(), "each intent is completed once");
}

#[tokio::test]
async fn the_per_group_cap_counts_only_this_services_rules() {
    let s = Setup::new();
    let w = s.service(Policy { max_rules_per_group: Some(1), ..Policy::default() });
    s.ec2.rules.lock().unwrap().push(ExistingRule {
        rule_id: "sgr-hand".into(),
        group_id: G.into(),
        cidr: Some("192.0.2.0/24".parse().unwrap()),
        other_source: None,
        protocol: "tcp".into(),
        from_port: 443,
        to_port: 443,
        description: "office".into(),
    });
    w.add(&scope(), &add("1.2.3.4", None, None), &Caller::default()).await.unwrap();
    let err = w.add(&scope(), &add("1.2.3.5", None, None), &Caller::default()).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "max_rules_per_group"), "{err}");
}

#[tokio::test]
async fn a_token_limited_to_some_groups_cannot_touch_others() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller { security_groups: Some(vec!["sg-0abc*".into()].into()), ..Caller::default() };
    let err = w.add(&scope(), &add("1.2.3.4", None, None), &who).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting.starts_with("security_groups")), "{err}");
    assert!(w.list(&scope(), G, &who).await.is_err());
    let mine = AddArgs {
        rule: RuleArgs { group: "sg-0abc1234".into(), ..rule("1.2.3.4", None, None) },
        ..AddArgs::default()
    };
    assert!(w.add(&scope(), &mine, &who).await.is_ok());
}

fn hand_rule(id: &str, cidr: &str, port: i32, description: &str) -> ExistingRule {
    ExistingRule {
        rule_id: id.into(),
        group_id: G.into(),
        cidr: Some(cidr.parse().unwrap()),
        other_source: None,
        protocol: "tcp".into(),
        from_port: port,
        to_port: port,
        description: description.into(),
    }
}

#[tokio::test]
async fn remove_refuses_a_rule_this_service_did_not_add() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    s.ec2.rules.lock().unwrap().push(hand_rule("sgr-publicweb", "0.0.0.0/0", 443, "public web"));
    let calls = s.ec2.calls.load(Ordering::SeqCst);
    let err =
        w.remove(&scope(), &rule("0.0.0.0/0", Some("443"), None), &Caller::default()).await.unwrap_err();
    let Error::Policy(refusal) = &err else { panic!("expected a policy refusal, got {err}") };
    assert_eq!(refusal.setting, "remove_unmanaged", "{err}");
    assert!(refusal.message.contains("sgr-publicweb") && refusal.message.contains("public web"), "{err}");
    assert_eq!(s.ec2.rules.lock().unwrap().len(), 1, "the hand-made rule must stay");
    assert_eq!(s.ec2.calls.load(Ordering::SeqCst), calls + 1, "one read, no revoke");
    assert!(s.journal.entries.lock().unwrap().is_empty(), "nothing changed, nothing audited");
    assert!(refusal.message.contains("remove_unmanaged = true"), "names the setting: {err}");

    // A forged marker does not make a hand-made rule removable either.
    s.ec2.rules.lock().unwrap().push(hand_rule("sgr-forged", "192.0.2.0/24", 22, "x [awswl]"));
    let err = w.remove(&scope(), &rule("192.0.2.0/24", None, None), &Caller::default()).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "remove_unmanaged"), "{err}");

    let reference = s.service(Policy { remove_unmanaged: true, ..Policy::default() });
    let removed =
        reference.remove(&scope(), &rule("0.0.0.0/0", Some("443"), None), &Caller::default()).await.unwrap();
    assert!(removed.changed && !removed.removed[0].managed);
    assert_eq!(s.ec2.rules.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_sweeper_never_deletes_a_rule_whose_marker_does_not_verify() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    // A hand-made rule dressed up with an (unsigned, forged) expired marker.
    s.ec2.rules.lock().unwrap().push(hand_rule(
        "sgr-forged",
        "192.0.2.0/24",
        443,
        "office [awswl exp=2020-01-01T00:00:00Z]",
    ));
    // A rule of this service whose expiry someone edited into the past.
    let added = w
        .add(
            &scope(),
            &AddArgs { duration: Some("8h".into()), ..add("1.2.3.4", None, None) },
            &Caller::default(),
        )
        .await
        .unwrap();
    {
        let mut rules = s.ec2.rules.lock().unwrap();
        let r = rules.iter_mut().find(|r| r.rule_id == added.rule.rule_id).unwrap();
        let at = r.description.find("exp=").unwrap() + 4;
        r.description.replace_range(at..at + 20, "2020-01-01T00:00:00Z");
    }
    let counted = |reason: &str| crate::metrics::global().marker_invalid.with_label_values(&[reason]).get();
    let before = (counted("unsigned"), counted("mismatch"));
    let swept = w.sweep(&scope(), G, SystemTime::now()).await.unwrap();
    assert!(swept.is_empty(), "swept {swept:?}");
    assert_eq!(s.ec2.rules.lock().unwrap().len(), 2, "both rules stay");
    // The counter is the process's, and tests running beside this one report their own forged
    // rules to it: so the counter is checked for having grown, and "once" by this service's
    // record of what it reported (the counter grows only for a first report).
    assert!(counted("unsigned") > before.0 && counted("mismatch") > before.1, "each reported");
    let reported = || w.reported.lock().unwrap().len();
    assert_eq!(reported(), 2, "each reported");
    w.sweep(&scope(), G, SystemTime::now()).await.unwrap();
    assert_eq!(reported(), 2, "reported once, not every sweep");
    let listed = w.list(&scope(), G, &Caller::default()).await.unwrap();
    assert!(listed.iter().all(|r| !r.managed && r.expires_at.is_none()), "{listed:?}");
}

#[tokio::test]
async fn the_per_group_cap_counts_only_verified_markers() {
    let s = Setup::new();
    let w = s.service(Policy { max_rules_per_group: Some(1), ..Policy::default() });
    s.ec2.rules.lock().unwrap().push(hand_rule("sgr-hand", "192.0.2.0/24", 443, "office [awswl]"));
    w.add(&scope(), &add("1.2.3.4", None, None), &Caller::default()).await.unwrap();
    let err = w.add(&scope(), &add("1.2.3.5", None, None), &Caller::default()).await.unwrap_err();
    assert!(matches!(err, Error::Policy(ref r) if r.setting == "max_rules_per_group"), "{err}");
}

#[tokio::test]
async fn two_workers_adding_at_the_cap_cannot_both_succeed() {
    // Two workers of one host (two services, one EC2), each adding a different rule while the
    // group has room for one more.
    let s = Setup::new();
    let policy = Policy { max_rules_per_group: Some(2), ..Policy::default() };
    let (first, second) = (s.service(policy.clone()), s.service(policy));
    first.add(&scope(), &add("198.51.100.1", None, None), &Caller::default()).await.unwrap();
    let (scope, who) = (scope(), Caller::default());
    let (two, three) = (add("198.51.100.2", None, None), add("198.51.100.3", None, None));
    let (a, b) = tokio::join!(first.add(&scope, &two, &who), second.add(&scope, &three, &who));
    let added = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(added, 1, "{a:?} / {b:?}");
    let refused = [a, b].into_iter().find_map(Result::err);
    assert!(
        matches!(refused, Some(Error::Policy(ref r)) if r.setting == "max_rules_per_group"),
        "{refused:?}"
    );
    assert_eq!(s.ec2.rules.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn ipv4_mapped_networks_meet_the_ipv4_policy() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller::default();
    let setting = |err: Error| match err {
        Error::Invalid { field, .. } => field,
        Error::Policy(r) => r.setting,
        other => panic!("{other}"),
    };
    let world = w.add(&scope(), &add("::ffff:0:0/96", None, None), &who).await.unwrap_err();
    assert_eq!(setting(world), "allow_world", "the whole IPv4 internet");
    let wide = w.add(&scope(), &add("::ffff:10.0.0.0/104", None, None), &who).await.unwrap_err();
    assert_eq!(setting(wide), "min_prefix_v4", "a /8 written as an IPv6 /104");
    let compatible = w.add(&scope(), &add("::198.51.100.0/120", None, None), &who).await.unwrap_err();
    assert_eq!(setting(compatible), "ip_address");
    assert_eq!(s.ec2.calls.load(Ordering::SeqCst), 0, "nothing reached AWS");
    let one = w.add(&scope(), &add("::ffff:198.51.100.9/128", None, None), &who).await.unwrap();
    assert_eq!(one.rule.cidr_ip.as_deref(), Some("198.51.100.9/32"));
}

#[tokio::test]
async fn a_huge_duration_is_refused_without_a_panic() {
    let s = Setup::new();
    let w = s.service(Policy { max_rule_duration: None, ..Policy::default() });
    let who = Caller::default();
    for huge in ["10000y", "11y", "3660d", "100000000000000h"] {
        let args = AddArgs { duration: Some(huge.into()), ..add("1.2.3.4", None, None) };
        let err = w.add(&scope(), &args, &who).await.unwrap_err();
        assert!(
            matches!(err, Error::Invalid { field: "duration", ref message } if message.contains("10 years")),
            "{huge}: {err}"
        );
    }
    assert_eq!(s.ec2.calls.load(Ordering::SeqCst), 0, "nothing reached AWS");
    let ten = AddArgs { duration: Some("10y".into()), ..add("1.2.3.4", None, None) };
    assert!(w.add(&scope(), &ten, &who).await.unwrap().rule.expires_at.is_some());
}

fn per_call_scope() -> Scope {
    let keys = Keys {
        access_key_id: "AKIAEXAMPLEPERCALL01".into(),
        secret_access_key: "made-up-secret".into(),
        session_token: None,
    };
    Scope { keys: Some(keys), ..scope() }
}

#[tokio::test]
async fn an_expiring_rule_with_per_call_keys_needs_a_server_that_can_revoke_it() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let who = Caller::default();
    let denied = FirewallError::PermissionDenied {
        action: "ec2:RevokeSecurityGroupIngress".into(),
        detail: "You are not authorized to perform this operation.".into(),
    };
    *s.ec2.server_cannot_revoke.lock().unwrap() = Some(denied);
    let expiring = AddArgs { duration: Some("1h".into()), ..add("1.2.3.4", None, None) };
    let err = w.add(&per_call_scope(), &expiring, &who).await.unwrap_err();
    match &err {
        Error::Policy(r) => {
            assert_eq!(r.setting, "aws.allow_per_call_credentials", "{err}");
            assert!(r.message.contains("not authorized") && r.message.contains("never"), "{err}");
            assert!(!r.message.contains("made-up-secret"), "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(s.ec2.rules.lock().unwrap().is_empty(), "nothing was added");
    assert!(w.add(&scope(), &expiring, &who).await.is_ok(), "the server's own identity is not asked");
    let permanent = add("1.2.3.5", None, None);
    assert!(w.add(&per_call_scope(), &permanent, &who).await.is_ok(), "a rule that never expires");
    *s.ec2.server_cannot_revoke.lock().unwrap() = None;
    let other = AddArgs { duration: Some("1h".into()), ..add("1.2.3.6", None, None) };
    assert!(w.add(&per_call_scope(), &other, &who).await.unwrap().rule.expires_at.is_some());
}

#[path = "dry_run_tests.rs"]
mod dry_run_tests;
#[path = "lifecycle/find_tests.rs"]
mod find_tests;
#[path = "lifecycle/history_tests.rs"]
mod history_tests;
#[path = "lifecycle/move_tests.rs"]
mod move_tests;
#[path = "lifecycle/renew_tests.rs"]
mod renew_tests;
#[path = "lifecycle/revoke_tests.rs"]
mod revoke_tests;
#[path = "sweep_tests.rs"]
mod sweep_tests;
