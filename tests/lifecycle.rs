//! The life of an access end to end: a real `serve` against a real moto, three groups — two
//! allowed by the policy (one by a pattern), one not — and the lifecycle tools over HTTP:
//! renew, groups, find, revoke everywhere, move (its add made to fail too), history.

mod common;

use common::moto::Moto;
use common::{tool_failure, Options, Service};
use serde_json::{json, Value};

struct Env {
    moto: Moto,
    state: tempfile::TempDir,
}

impl Env {
    fn serve(&self, policy: &str) -> Service {
        let config = format!(
            "workers = 2\n{}\n[whitelist]\nstate_dir = \"{}\"\n{policy}\n",
            self.moto.aws_table(),
            self.state.path().display()
        );
        Service::start_with(Options { config, env: Moto::sdk_env(), wait_ready: true })
    }
}

fn ok(r: &Value) -> &Value {
    assert!(tool_failure(r).is_none(), "tool failed: {r}");
    &r["structuredContent"]
}

/// The description of `cidr`'s rule in `group`, as moto holds it.
fn description(moto: &Moto, group: &str, cidr: &str) -> Option<String> {
    moto.ingress(group).into_iter().find(|r| r[1] == cidr).map(|r| r[5].clone())
}

#[test]
fn renew_find_revoke_move_and_history_across_three_groups() {
    let Some(moto) = Moto::start() else { return };
    let e = Env { moto, state: tempfile::tempdir().unwrap() };
    let (bastion, web, billing) =
        (e.moto.create_group("bastion"), e.moto.create_group("web"), e.moto.create_group("billing"));
    // bastion by a pattern (its id with the last digit a wildcard), web by its id; billing not.
    let pattern = format!("{}?", &bastion[..bastion.len() - 1]);
    let policy = format!("[policy]\nallowed_security_groups = [\"{pattern}\", \"{web}\"]\n");
    let open = e.serve("");
    let add = |svc: &Service, g: &str, ip: &str, extra: Value| {
        let mut args = json!({"security_group_id": g, "ip_address": ip, "user": "alice"});
        if let (Some(a), Value::Object(x)) = (args.as_object_mut(), extra) {
            a.extend(x);
        }
        ok(&svc.call_tool("whitelist_add", args)).clone()
    };
    // Set up with an open policy: alice everywhere, a wider rule, and a hand-made one.
    for g in [&bastion, &web, &billing] {
        add(&open, g, "203.0.113.7", json!({"duration": "1h"}));
    }
    add(&open, &web, "203.0.113.0/24", json!({"port": 443}));
    e.moto.authorize(&bastion, "203.0.113.7/32", 8080, "by hand");
    drop(open);
    let svc = e.serve(&policy);

    // Renew: expiry moved in EC2's description; answered with the old and the new.
    let before = description(&e.moto, &bastion, "203.0.113.7/32").unwrap();
    let dry = ok(&svc.call_tool(
        "whitelist_add",
        json!({"security_group_id": bastion, "ip_address": "203.0.113.7", "duration": "5h", "dry_run": true}),
    ))
    .clone();
    assert_eq!(dry["would_change"], true, "{dry}");
    assert_eq!(
        description(&e.moto, &bastion, "203.0.113.7/32").unwrap(),
        before,
        "the dry run changed nothing"
    );
    let renewed = add(&svc, &bastion, "203.0.113.7", json!({"duration": "5h"}));
    assert_eq!(
        (renewed["changed"].clone(), renewed["renewed"].clone()),
        (json!(true), json!(true)),
        "{renewed}"
    );
    let (old, new) =
        (renewed["previous_expires_at"].as_str().unwrap(), renewed["rule"]["expires_at"].as_str().unwrap());
    assert!(before.contains(&format!("exp={old}")), "{before}");
    let after = description(&e.moto, &bastion, "203.0.113.7/32").unwrap();
    assert!(after.contains(&format!("exp={new}")) && !after.contains(old), "{after}");

    // Groups: the two allowed, with name and VPC.
    let groups = ok(&svc.call_tool("whitelist_groups", json!({}))).clone();
    let mut ids: Vec<&str> =
        groups["groups"].as_array().unwrap().iter().map(|g| g["group_id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![bastion.as_str(), web.as_str()];
    want.sort();
    assert_eq!(ids, want, "{groups}");
    assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "web"));

    // Find: only the allowed groups; managed and unmanaged told apart; the wider rule named.
    let found = ok(&svc.call_tool("whitelist_find", json!({"ip_address": "203.0.113.7"}))).clone();
    let rows: Vec<(String, String, bool, String)> = found["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group_id"].as_str().unwrap().into(),
                r["port"].as_str().unwrap().into(),
                r["managed"].as_bool().unwrap(),
                r["relation"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 4, "{found}");
    assert!(!rows.iter().any(|r| r.0 == billing), "billing is not allowed: {rows:?}");
    assert!(rows.contains(&(bastion.clone(), "8080".into(), false, "exact".into())), "{rows:?}");
    assert!(rows.contains(&(web.clone(), "443".into(), true, "wider".into())), "{rows:?}");

    // Revoke everywhere: dry run lists, then only the managed exact rules of allowed groups go.
    let dry =
        ok(&svc
            .call_tool("whitelist_revoke_everywhere", json!({"ip_address": "203.0.113.7", "dry_run": true})))
        .clone();
    assert_eq!((dry["removed"].clone(), dry["changed"].clone()), (json!(2), json!(false)), "{dry}");
    assert!(description(&e.moto, &web, "203.0.113.7/32").is_some(), "the dry run removed nothing");
    let done =
        ok(&svc.call_tool("whitelist_revoke_everywhere", json!({"ip_address": "203.0.113.7"}))).clone();
    assert_eq!((done["removed"].clone(), done["failed"].clone()), (json!(2), json!(0)), "{done}");
    assert_eq!(
        description(&e.moto, &bastion, "203.0.113.7/32").as_deref(),
        Some("by hand"),
        "unmanaged: reported, kept"
    );
    assert!(description(&e.moto, &web, "203.0.113.7/32").is_none());
    assert!(description(&e.moto, &web, "203.0.113.0/24").is_some(), "the wider rule is kept");
    assert!(
        description(&e.moto, &billing, "203.0.113.7/32").is_some(),
        "a group the policy does not allow is untouched"
    );

    // Move: alice's ssh access in web to her current address; the old one goes after.
    add(&svc, &web, "198.51.100.7", json!({}));
    let moved = ok(&svc.call_tool(
        "whitelist_move",
        json!({"security_group_id": web, "ip_address": "current", "user": "alice"}),
    ))
    .clone();
    assert_eq!(moved["changed"], true, "{moved}");
    assert!(description(&e.moto, &web, "127.0.0.1/32").is_some(), "the new address is in");
    assert!(description(&e.moto, &web, "198.51.100.7/32").is_none(), "the old address is out");
    // A move whose add the policy refuses leaves the old access and says so.
    add(&svc, &web, "198.51.100.8", json!({"port": 2222}));
    let narrowed = e.serve(&format!("{policy}allowed_ip_ranges = [\"198.51.100.0/24\"]\n"));
    let refused = narrowed.call_tool(
        "whitelist_move",
        json!({"security_group_id": web, "ip_address": "current", "port": 2222, "user": "alice"}),
    );
    let why = tool_failure(&refused).expect("the move is refused");
    assert!(why.contains("allowed_ip_ranges") && why.contains("still in place"), "{why}");
    assert!(description(&e.moto, &web, "198.51.100.8/32").is_some(), "the old access is still there");
    drop(narrowed);

    // History: exactly the changes above, newest first, for the allowed groups.
    let h = ok(&svc.call_tool("whitelist_history", json!({"outcome": "removed"}))).clone();
    let removed: Vec<&str> =
        h["entries"].as_array().unwrap().iter().map(|e| e["rule"]["cidr_ip"].as_str().unwrap()).collect();
    assert_eq!(removed, ["198.51.100.7/32", "203.0.113.7/32", "203.0.113.7/32"], "{h}");
    let renewals =
        ok(&svc.call_tool("whitelist_history", json!({"outcome": "renewed", "security_group_id": bastion})))
            .clone();
    assert_eq!(renewals["count"], 1, "{renewals}");
    let page = ok(&svc.call_tool("whitelist_history", json!({"limit": 2}))).clone();
    assert_eq!(page["count"], 2);
    let cursor = page["next_cursor"].as_str().expect("more pages").to_string();
    let next = ok(&svc.call_tool("whitelist_history", json!({"limit": 2, "cursor": cursor}))).clone();
    assert_ne!(next["entries"][0], page["entries"][0]);
    let billing_seen = ok(&svc.call_tool("whitelist_history", json!({"limit": 500}))).clone();
    assert!(
        !billing_seen["entries"].as_array().unwrap().iter().any(|e| e["group_id"] == billing.as_str()),
        "a group the caller may not touch has no history here"
    );
}

#[test]
fn a_prefix_list_named_by_the_policy_takes_entries_through_the_tools() {
    let Some(moto) = Moto::recording() else { return };
    let e = Env { moto, state: tempfile::tempdir().unwrap() };
    let list = e.moto.create_prefix_list("office", 5);
    let entry = |extra: Value| {
        let mut args = json!({"security_group_id": list, "ip_address": "203.0.113.7", "user": "alice"});
        if let (Some(a), Value::Object(x)) = (args.as_object_mut(), extra) {
            a.extend(x);
        }
        args
    };

    // Not named by the policy: refused, naming the key, nothing written.
    let closed = e.serve("");
    let refused = tool_failure(&closed.call_tool("whitelist_add", entry(json!({})))).expect("refused");
    assert!(refused.contains("allowed_prefix_lists") && refused.contains(&list), "{refused}");
    assert!(e.moto.prefix_list_entries(&list).is_empty());
    drop(closed);

    let svc = e.serve(&format!("[policy]\nallowed_prefix_lists = [\"{list}\"]\n"));
    let added = ok(&svc.call_tool("whitelist_add", entry(json!({"duration": "1h"})))).clone();
    assert_eq!(
        (added["changed"].clone(), added["rule"]["rule_id"].clone()),
        (json!(true), json!("203.0.113.7/32"))
    );
    let held = e.moto.prefix_list_entries(&list);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].1.contains("[awswl exp="), "the signed marker in the entry's description: {held:?}");
    let port = tool_failure(&svc.call_tool("whitelist_add", entry(json!({"port": 22})))).expect("refused");
    assert!(port.contains("port") && port.contains("prefix list"), "{port}");
    let listed = ok(&svc.call_tool("whitelist_list", json!({"security_group_id": list}))).clone();
    assert_eq!(listed["count"], 1, "{listed}");
    let removed =
        ok(&svc
            .call_tool("whitelist_remove", json!({"security_group_id": list, "ip_address": "203.0.113.7"})))
        .clone();
    assert_eq!(removed["changed"], true, "{removed}");
    assert!(e.moto.prefix_list_entries(&list).is_empty());

    let audit = std::fs::read_to_string(e.state.path().join("audit.log")).unwrap();
    let outcomes: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["phase"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 2, "{audit}");
    for o in &outcomes {
        assert_eq!(o["group_id"], json!(list));
        assert!(o["aws_account"].as_str().is_some_and(|a| a.len() == 12), "{o}");
        assert_eq!(o["aws_request_ids"].as_array().map(Vec::len), Some(1), "{o}");
    }
    // The calls of a change name their caller in the user agent (CloudTrail's userAgent); the
    // plain reads (list, the read before a change) do not.
    let writes = e.moto.recorded_user_agents("ModifyManagedPrefixList");
    assert_eq!(writes.len(), 2, "{writes:?}");
    let identity = outcomes[0]["identity"].as_str().unwrap();
    assert!(writes.iter().all(|ua| ua.contains(&format!("app/awswl.{identity}"))), "{writes:?} ({identity})");
    let reads = e.moto.recorded_user_agents("DescribeManagedPrefixLists");
    assert!(reads.iter().any(|ua| !ua.contains("app/awswl")), "{reads:?}");
}
