//! The standing bad-input campaign (issue 10), part two: the whitelist tools themselves, driven
//! through the MCP dispatcher (`tools/call`, JSON arguments) and through the service, on an
//! in-memory firewall. Properties: nothing panics; a refusal names the argument it refuses (or
//! the policy setting that refused); a refusal changes nothing; and any add that is accepted
//! lies inside a randomly drawn policy. Seeds and replay: see `properties.rs`.

mod prop_support;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};

use prop_support::{config, hostile_text, json_value, runtime};
use worker::caller::Caller;
use worker::mcp::{Dispatcher, Outcome, ServerInfo, TransportMeta};
use worker::whitelist::audit::{AuditEntry, Recorder};
use worker::whitelist::cache::LocalVersions;
use worker::whitelist::{
    AddArgs, Defaults, Error, ExistingRule, Firewall, FirewallError, FwFuture, GroupPage, MarkerKey, Parts,
    Policy, Ports, Protocol, RuleArgs, RuleSpec, Scope, Whitelist,
};

/// Group locks for one service alone: nobody else to exclude, so holding is immediate.
struct OneService;

impl worker::whitelist::GroupLocks for OneService {
    fn hold<'a>(&'a self, _: &'a str) -> worker::whitelist::GroupLockFuture<'a> {
        Box::pin(async { Ok(Box::new(()) as worker::whitelist::GroupGuard) })
    }
}

/// The marker key of every service in these tests (a fixed test value, not a secret).
fn marker_key() -> MarkerKey {
    MarkerKey::new(&[7u8; 32]).expect("a 32-byte key")
}

const G: &str = "sg-0123456789abcdef0";

/// EC2 as moto behaves for the calls the service makes, counting the changes it is asked for.
#[derive(Default)]
struct FakeEc2 {
    rules: Mutex<Vec<ExistingRule>>,
    changes: AtomicUsize,
}

impl FakeEc2 {
    fn rules(&self) -> Vec<ExistingRule> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Firewall for FakeEc2 {
    fn can_revoke<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        // The server's own identity may revoke anything here.
        Box::pin(async { Ok(()) })
    }
    fn can_authorize<'a>(&'a self, _: &'a Scope, _: &'a RuleSpec) -> FwFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn list<'a>(&'a self, _: &'a Scope, group: &'a str) -> FwFuture<'a, Vec<ExistingRule>> {
        Box::pin(async move { Ok(self.rules().into_iter().filter(|r| r.group_id == group).collect()) })
    }
    fn authorize<'a>(
        &'a self,
        _: &'a Scope,
        spec: &'a RuleSpec,
        description: &'a str,
    ) -> FwFuture<'a, String> {
        Box::pin(async move {
            let n = self.changes.fetch_add(1, Ordering::SeqCst);
            let id = format!("sgr-{n:017x}");
            self.rules.lock().unwrap_or_else(|e| e.into_inner()).push(ExistingRule::authorized(
                id.clone(),
                spec,
                description,
            ));
            Ok(id)
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
            let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
            let rule = rules
                .iter_mut()
                .find(|r| r.rule_id == rule_id && r.matches(spec))
                .ok_or(FirewallError::RuleNotFound)?;
            rule.description = description.into();
            Ok(())
        })
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
    ) -> FwFuture<'a, GroupPage> {
        Box::pin(async { Ok(GroupPage::default()) })
    }
    fn revoke<'a>(&'a self, _: &'a Scope, _: &'a str, ids: &'a [String]) -> FwFuture<'a, ()> {
        Box::pin(async move {
            self.changes.fetch_add(1, Ordering::SeqCst);
            self.rules.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| !ids.contains(&r.rule_id));
            Ok(())
        })
    }
}

struct NoAudit;

impl Recorder for NoAudit {
    fn record(&self, _: &AuditEntry) -> Result<(), String> {
        Ok(())
    }

    fn note_expiring(&self, _: &Scope, _: &str) -> Result<(), String> {
        Ok(())
    }

    fn recent(&self) -> Result<Vec<worker::whitelist::audit::LoggedEntry>, String> {
        Ok(Vec::new())
    }
}

fn service(ec2: Arc<FakeEc2>, policy: Policy) -> Arc<Whitelist> {
    Arc::new(Whitelist::new(Parts {
        firewall: ec2,
        policy,
        defaults: Defaults::default(),
        port_mappings: vec![],
        cache_ttl: Duration::ZERO,
        versions: Arc::new(LocalVersions::default()),
        recorder: Arc::new(NoAudit),
        marker_key: marker_key(),
        group_locks: Arc::new(OneService),
    }))
}

/// A hand-made rule already in the group, which no refused call may touch.
fn hand_made() -> ExistingRule {
    ExistingRule {
        rule_id: "sgr-0000000000000hand".into(),
        group_id: G.into(),
        cidr: Some("192.0.2.51/32".parse().expect("CIDR")),
        other_source: None,
        protocol: "tcp".into(),
        from_port: 22,
        to_port: 22,
        description: "hand-made".into(),
    }
}

/// Every tool on a dispatcher over a fresh fake that holds one hand-made rule.
fn dispatcher(policy: Policy) -> (Dispatcher, Arc<FakeEc2>) {
    let ec2 = Arc::new(FakeEc2::default());
    ec2.rules.lock().unwrap_or_else(|e| e.into_inner()).push(hand_made());
    let registry = worker::tools::register_all(50, service(ec2.clone(), policy), None).expect("registry");
    (Dispatcher::new(ServerInfo::new("prop", "0"), registry), ec2)
}

/// The failure text of a `tools/call` reply: a JSON-RPC error's message or an `isError`
/// result's text; `None` on success.
fn failure(outcome: &Outcome) -> Option<String> {
    let body = outcome.body().cloned().unwrap_or(Value::Null);
    if let Some(m) = body.pointer("/error/message").and_then(Value::as_str) {
        let data = body.pointer("/error/data").map_or(String::new(), Value::to_string);
        return Some(format!("{m} {data}"));
    }
    let result = &body["result"];
    if result["isError"].as_bool() == Some(true) {
        return Some(result["content"][0]["text"].as_str().unwrap_or_default().to_string());
    }
    None
}

fn call(d: &Dispatcher, version: &str, tool: &str, args: &Map<String, Value>) -> Outcome {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    let caller = Caller { addr: Some("203.0.113.200".parse().expect("address")), ..Caller::default() };
    let meta = TransportMeta::http().with_caller(caller).with_protocol_version(version);
    runtime().block_on(d.handle_bytes(body.to_string().as_bytes(), &meta))
}

/// The arguments a tool takes and a hostile value for one of them.
fn hostile_argument() -> impl Strategy<Value = (&'static str, Value)> {
    let name = prop_oneof![
        Just("security_group_id"),
        Just("ip_address"),
        Just("port"),
        Just("protocol"),
        Just("description"),
        Just("user"),
        Just("reason"),
        Just("duration"),
        Just("region"),
        Just("credentials"),
    ];
    let value = prop_oneof![
        4 => hostile_text().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => json_value(),
        1 => (
            prop_oneof![Just("AKIA0123456789ABCDEF".to_string()), hostile_text()],
            prop_oneof![Just("0123456789abcdef0123456789abcdef01234567".to_string()), hostile_text()],
            prop::option::of(json_value()),
        )
            .prop_map(|(id, secret, extra)| {
                let mut c = json!({"access_key_id": id, "secret_access_key": secret});
                if let Some(x) = extra {
                    c["region"] = x;
                }
                c
            }),
    ];
    (name, value)
}

proptest! {
    #![proptest_config(config(1_024))]

    #[test]
    fn a_refused_tool_call_names_its_argument_and_changes_nothing(
        tool in prop_oneof![Just("whitelist_add"), Just("whitelist_remove"), Just("whitelist_check"), Just("whitelist_list")],
        (name, value) in hostile_argument(),
        version in prop_oneof![Just("2025-06-18"), Just("2025-11-25")],
    ) {
        let (d, ec2) = dispatcher(Policy::default());
        let mut args = json!({"security_group_id": G, "ip_address": "203.0.113.7", "port": 22})
            .as_object().cloned().unwrap_or_default();
        if tool == "whitelist_list" {
            args.remove("ip_address");
            args.remove("port");
        }
        args.insert(name.to_string(), value.clone());
        let outcome = call(&d, version, tool, &args);
        prop_assert!(outcome.http_status() < 500, "{outcome:?}");
        match failure(&outcome) {
            Some(text) => {
                prop_assert!(
                    text.contains(name) || text.contains("refused by policy"),
                    "{tool} {name}={value}: {text:?} names neither the argument nor a setting"
                );
                prop_assert_eq!(ec2.changes.load(Ordering::SeqCst), 0, "a refusal changed the firewall");
                prop_assert_eq!(ec2.rules(), vec![hand_made()]);
                if let Some(secret) = value.get("secret_access_key").and_then(Value::as_str) {
                    prop_assert!(secret.len() < 8 || !text.contains(secret), "the secret is echoed: {text:?}");
                }
            }
            None => prop_assert!(ec2.rules().contains(&hand_made()), "the hand-made rule is gone"),
        }
    }

    #[test]
    fn any_json_rpc_message_gets_a_well_formed_answer(
        jsonrpc in prop_oneof![4 => Just(json!("2.0")), 1 => json_value()],
        id in prop_oneof![Just(json!(1)), Just(json!("a")), json_value()],
        method in prop_oneof![
            Just(json!("tools/call")), Just(json!("tools/list")), Just(json!("initialize")),
            Just(json!("ping")), Just(json!("server/discover")), json_value()
        ],
        params in prop_oneof![
            2 => (prop_oneof![Just(json!("whitelist_add")), Just(json!("whitelist_list")), json_value()], json_value())
                .prop_map(|(name, arguments)| json!({"name": name, "arguments": arguments})),
            1 => json_value(),
        ],
        batch in 0usize..3,
        version in prop::option::of(prop_oneof![Just("2025-03-26".to_string()), Just("2026-07-28".to_string()), "[ -~]{0,12}"]),
    ) {
        let (d, ec2) = dispatcher(Policy::default());
        let message = json!({"jsonrpc": jsonrpc, "id": id, "method": method, "params": params});
        let body = if batch == 0 { message } else { Value::Array(vec![message; batch]) };
        let mut meta = TransportMeta::http();
        if let Some(v) = version {
            meta = meta.with_protocol_version(v);
        }
        let outcome = runtime().block_on(d.handle_bytes(body.to_string().as_bytes(), &meta));
        prop_assert!(outcome.http_status() < 500, "{outcome:?}");
        let replies = match outcome.body() {
            Some(Value::Array(items)) => items.clone(),
            Some(other) => vec![other.clone()],
            None => vec![],
        };
        for r in replies {
            prop_assert_eq!(&r["jsonrpc"], "2.0", "{}", r);
            prop_assert!(r.get("result").is_some() != r.get("error").is_some(), "{r}");
            if let Some(e) = r.get("error") {
                prop_assert!(e["code"].is_i64() && e["message"].is_string(), "{r}");
            }
        }
        prop_assert!(ec2.rules().contains(&hand_made()));
    }
}

// ---------------------------------------------------------------------------------------------
// Any accepted add is inside the policy.

fn net(s: &str) -> IpNet {
    s.parse().expect("CIDR")
}

/// Half the time a dimension is unrestricted, so that a fair share of adds get through.
fn some<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = Vec<T>>) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![Just(Vec::new()), s]
}

fn policy() -> impl Strategy<Value = Policy> {
    let groups = some(prop::collection::vec(
        prop_oneof![Just(G.to_string()), Just("sg-0abc*".to_string()), Just("sg-1*".to_string())],
        1..3,
    ));
    let ports = some(prop::collection::vec(
        prop_oneof![
            Just(Ports::single(22)),
            Just(Ports { from: 1, to: 65_535 }),
            (1i32..=65_535, 0i32..2_000).prop_map(|(from, len)| Ports { from, to: (from + len).min(65_535) }),
        ],
        1..3,
    ));
    let protocols = some(prop::collection::vec(
        prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Icmp), Just(Protocol::All)],
        1..4,
    ));
    let ranges = some(prop::collection::vec(
        prop_oneof![
            Just(net("203.0.113.0/24")),
            Just(net("203.0.113.0/28")),
            Just(net("198.51.100.0/22")),
            Just(net("10.0.0.0/8")),
            Just(net("2001:db8::/32")),
            Just(net("2001:db8:1::/48")),
            Just(net("0.0.0.0/0")),
        ],
        1..4,
    ));
    let prefixes = (
        prop_oneof![Just(0u8), Just(8), Just(16), Just(24), 0u8..=32],
        prop_oneof![Just(0u8), Just(32), Just(48), 0u8..=128],
    );
    let limits = (
        any::<bool>(),
        prop::option::of(1u64..=(86_400 * 30)),
        any::<bool>(),
        prop::option::weighted(0.3, 0usize..4),
    );
    (groups, ports, protocols, ranges, prefixes, limits).prop_map(
        |(groups, ports, protocols, ranges, (v4, v6), (world, max, require, max_rules))| Policy {
            allowed_security_groups: groups,
            allowed_ports: ports,
            allowed_protocols: protocols,
            allowed_ip_ranges: ranges,
            min_prefix_v4: v4,
            min_prefix_v6: v6,
            allow_world: world,
            max_rule_duration: max.map(Duration::from_secs),
            require_expiry: require,
            max_rules_per_group: max_rules,
            remove_unmanaged: false,
            ..Policy::default()
        },
    )
}

fn ip_argument() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (prop_oneof![Just([203u8, 0, 113]), Just([198, 51, 100]), Just([10, 1, 2])], any::<u8>(), 0u8..=32)
            .prop_map(|(p, last, len)| {
                let len = if len < 16 { 32 - len } else { len };
                let n = IpNet::new(IpAddr::from([p[0], p[1], p[2], last]), len).map(|n| n.trunc());
                n.map_or_else(|_| "203.0.113.1".to_string(), |n| n.to_string())
            }),
        2 => (any::<u16>(), any::<u16>(), prop_oneof![Just(128u8), 0u8..=128]).prop_map(|(a, b, len)| {
            let ip = IpAddr::from([0x2001, 0xdb8, a, b, 0, 0, 0, 1]);
            IpNet::new(ip, len).map_or_else(|_| "2001:db8::1".to_string(), |n| n.trunc().to_string())
        }),
        1 => Just("current".to_string()),
        1 => prop_oneof![Just("0.0.0.0/0".to_string()), Just("::/0".to_string())],
        1 => hostile_text(),
    ]
}

fn add_arguments() -> impl Strategy<Value = AddArgs> {
    let group = prop_oneof![
        4 => Just(G.to_string()),
        1 => Just("sg-0abc1234".to_string()),
        1 => Just("sg-1bcdef0123456789a".to_string()),
        1 => hostile_text(),
    ];
    let port = prop::option::of(prop_oneof![
        Just("22".to_string()),
        (1u32..=65_535).prop_map(|p| p.to_string()),
        (1u32..=65_535, 0u32..3_000).prop_map(|(a, n)| format!("{a}-{}", (a + n).min(65_535))),
        prop_oneof![Just("ssh".to_string()), Just("https".to_string()), Just("all".to_string())],
        hostile_text(),
    ]);
    let protocol = prop::option::of(prop_oneof![
        3 => Just("tcp".to_string()),
        1 => Just("udp".to_string()),
        1 => Just("icmp".to_string()),
        1 => Just("all".to_string()),
        1 => Just("-1".to_string()),
        1 => hostile_text(),
    ]);
    let duration = prop::option::of(prop_oneof![
        (1u64..=(86_400 * 60), prop_oneof![Just("s"), Just("m"), Just("h")]).prop_map(|(n, u)| {
            let n = match u {
                "m" => n / 60 + 1,
                "h" => n / 3_600 + 1,
                _ => n,
            };
            format!("{n}{u}")
        }),
        hostile_text(),
    ]);
    (group, ip_argument(), port, protocol, duration).prop_map(
        |(group, ip_address, port, protocol, duration)| AddArgs {
            rule: RuleArgs { group, ip_address, port, protocol },
            description: None,
            user: None,
            reason: None,
            duration,
        },
    )
}

/// The policy's group patterns here are exact ids or `prefix*`.
fn group_allowed(policy: &Policy, group: &str) -> bool {
    policy.allowed_security_groups.is_empty()
        || policy.allowed_security_groups.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => group.starts_with(prefix),
            None => p == group,
        })
}

const SETTINGS: [&str; 9] = [
    "allowed_security_groups",
    "allowed_ports",
    "allowed_protocols",
    "allowed_ip_ranges",
    "min_prefix_v4",
    "min_prefix_v6",
    "allow_world",
    "max_rule_duration_hours",
    "max_rules_per_group",
];

const POLICY_CASES: u32 = 3_072;

/// Run by hand (not `proptest!`) so that it can also insist that a fair share of the adds were
/// accepted: a property that only ever sees refusals proves nothing about what is accepted.
#[test]
fn any_accepted_add_is_inside_the_policy() {
    let accepted = AtomicUsize::new(0);
    let mut runner = TestRunner::new(config(POLICY_CASES));
    let outcome = runner.run(&(policy(), add_arguments(), 0usize..3), |(policy, args, managed)| {
        let ec2 = Arc::new(FakeEc2::default());
        {
            let mut rules = ec2.rules.lock().unwrap_or_else(|e| e.into_inner());
            rules.push(hand_made());
            for i in 0..managed {
                let mut r = hand_made();
                r.rule_id = format!("sgr-00000000000000{i:03}");
                r.cidr = Some(net(&format!("192.0.2.{i}/32")));
                // Signed like the service's own rules, so they count towards max_rules_per_group.
                let spec = r.spec().expect("a CIDR rule has a spec");
                r.description = format!("earlier {}", marker_key().marker(&spec, None));
                rules.push(r);
            }
        }
        let before = ec2.rules();
        let svc = service(ec2.clone(), policy.clone());
        let who = Caller { addr: Some("203.0.113.77".parse().expect("address")), ..Caller::default() };
        let outcome =
            runtime().block_on(svc.add(&Scope { profile: None, region: None, keys: None }, &args, &who));
        let latest = SystemTime::now();
        match outcome {
            Ok(added) => {
                prop_assert!(added.changed, "nothing in the group matched, so the add changed it");
                let rules = ec2.rules();
                prop_assert_eq!(rules.len(), before.len() + 1);
                let rule = rules.last().cloned().expect("the new rule");
                let cidr = rule.cidr.expect("a CIDR source");
                let protocol = Protocol::from_ec2(&rule.protocol).expect("a known protocol");
                prop_assert!(
                    group_allowed(&policy, &rule.group_id),
                    "group {} outside {:?}",
                    rule.group_id,
                    policy
                );
                prop_assert!(
                    policy.allowed_protocols.is_empty() || policy.allowed_protocols.contains(&protocol),
                    "protocol {} outside {:?}",
                    protocol,
                    policy.allowed_protocols
                );
                if protocol.has_ports() {
                    let ports = Ports { from: rule.from_port, to: rule.to_port };
                    prop_assert!(
                        1 <= ports.from && ports.from <= ports.to && ports.to <= 65_535,
                        "{ports:?}"
                    );
                    prop_assert!(
                        policy.allowed_ports.is_empty()
                            || policy.allowed_ports.iter().any(|a| a.contains(&ports)),
                        "ports {ports:?} outside {:?}",
                        policy.allowed_ports
                    );
                } else {
                    prop_assert!(
                        policy.allowed_ports.is_empty(),
                        "every port opened under {:?}",
                        policy.allowed_ports
                    );
                }
                if cidr.prefix_len() == 0 {
                    prop_assert!(policy.allow_world, "{cidr} without allow_world");
                } else {
                    let min = if matches!(cidr, IpNet::V4(_)) {
                        policy.min_prefix_v4
                    } else {
                        policy.min_prefix_v6
                    };
                    prop_assert!(cidr.prefix_len() >= min, "{cidr} wider than /{min}");
                }
                prop_assert!(
                    policy.allowed_ip_ranges.is_empty()
                        || policy.allowed_ip_ranges.iter().any(|r| r.contains(&cidr)),
                    "{cidr} outside {:?}",
                    policy.allowed_ip_ranges
                );
                let marker = marker_key().read(&rule.description, rule.spec().as_ref());
                prop_assert!(marker.managed(), "the service's own rule verifies: {}", rule.description);
                let expires = marker.expires();
                if let Some(max) = policy.max_rule_duration {
                    prop_assert!(expires.is_none_or(|at| at <= latest + max), "expiry beyond {max:?}");
                    prop_assert!(
                        !policy.require_expiry || expires.is_some(),
                        "require_expiry without an expiry"
                    );
                }
                if let Some(max) = policy.max_rules_per_group {
                    let held = if rule.group_id == G { managed } else { 0 };
                    prop_assert!(held < max, "{managed} managed rules already, limit {max}");
                }
                prop_assert!(rules.contains(&hand_made()));
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                prop_assert_eq!(ec2.rules(), before, "a refused add changed the group");
                let text = e.to_string();
                match &e {
                    Error::Invalid { field, .. } => prop_assert!(
                        ["security_group_id", "ip_address", "port", "protocol", "duration", "description"]
                            .contains(field)
                            && text.contains(field),
                        "{text}"
                    ),
                    Error::Policy(r) => {
                        prop_assert!(SETTINGS.contains(&r.setting) && text.contains(r.setting), "{text}")
                    }
                    other => prop_assert!(false, "the fake firewall never fails, yet: {other}"),
                }
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let accepted = accepted.load(Ordering::Relaxed);
    assert!(accepted >= POLICY_CASES as usize / 20, "only {accepted} of {POLICY_CASES} adds were accepted");
}
