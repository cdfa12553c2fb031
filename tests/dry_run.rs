//! `dry_run: true` on whitelist_add and whitelist_remove, end to end: a real `serve` with two
//! workers, a real moto with its request recorder on, so the test sees with moto's own eyes that
//! each dry run reached EC2 as `DryRun=true` (and that moto's DryRun handling answered: the
//! verdict is "allowed" only on `DryRunOperation`), and that nothing changed.

mod common;

use common::moto::Moto;
use common::{tool_failure, Options, Service};
use serde_json::{json, Value};

fn ok(r: &Value) -> &Value {
    assert!(tool_failure(r).is_none(), "tool failed: {r}");
    &r["structuredContent"]
}

fn with_dry_run(mut args: Value) -> Value {
    args["dry_run"] = json!(true);
    args
}

/// The actions moto received, with whether each was a dry run.
fn actions(moto: &Moto) -> Vec<(String, bool)> {
    let field =
        |req: &Vec<(String, String)>, k: &str| req.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    moto.recorded_ec2()
        .iter()
        .filter_map(|req| Some((field(req, "Action")?, field(req, "DryRun").as_deref() == Some("true"))))
        .filter(|(action, _)| action.ends_with("SecurityGroupIngress"))
        .collect()
}

#[test]
fn a_dry_run_answers_exactly_what_would_change_asks_ec2_and_changes_nothing() {
    let Some(moto) = Moto::recording() else { return };
    let g = moto.create_group("dry");
    let state = tempfile::tempdir().unwrap();
    let svc = Service::start_with(Options {
        config: format!(
            "workers = 2\n{}\n[whitelist]\nstate_dir = \"{}\"\n",
            moto.aws_table(),
            state.path().display()
        ),
        env: Moto::sdk_env(),
        wait_ready: true,
    });
    let rule = json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": "ssh"});
    let add = json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": "ssh", "duration": "2h", "user": "alice"});

    // A new rule: would change; the rule exactly as it would be written.
    let r = svc.call_tool("whitelist_add", with_dry_run(add.clone()));
    let d = ok(&r);
    assert_eq!(
        (d["dry_run"].clone(), d["changed"].clone(), d["would_change"].clone()),
        (json!(true), json!(false), json!(true)),
        "{d}"
    );
    let planned = &d["planned_rule"];
    assert_eq!(
        (planned["group_id"].as_str(), planned["cidr_ip"].as_str(), planned["port"].as_str()),
        (Some(g.as_str()), Some("203.0.113.7/32"), Some("22"))
    );
    let description = planned["description"].as_str().unwrap();
    assert!(description.contains("for alice") && description.contains("[awswl exp="), "{description}");
    assert!(d["expires_at"].is_string() && planned["expires_at"] == d["expires_at"], "{d}");
    assert_eq!(d["aws_allowed"]["allowed"], true, "{d}");
    assert_eq!(d["aws_allowed"]["action"], "ec2:AuthorizeSecurityGroupIngress");
    assert!(d["aws_allowed"]["detail"].as_str().unwrap().contains("DryRunOperation"), "{d}");
    assert!(d["rule"].is_null(), "{d}");
    let text = r["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("dry run, nothing changed: would allow tcp 22 from 203.0.113.7/32"), "{text}");
    assert!(moto.ingress(&g).is_empty(), "moto unchanged");
    assert!(!state.path().join("expiring-groups.jsonl").exists(), "no expiry-index entry");

    // The real add, then: an existing rule would not change.
    let added = svc.call_tool("whitelist_add", add.clone());
    let id = ok(&added)["rule"]["rule_id"].as_str().unwrap().to_string();
    let present = moto.ingress(&g);
    assert_eq!(present.len(), 1);
    // Without a duration: with one, the same add a second later is a renewal (its expiry moves
    // by that second), and the test would depend on the clock not ticking between the calls.
    let mut again = add;
    again.as_object_mut().unwrap().remove("duration");
    let d = svc.call_tool("whitelist_add", with_dry_run(again));
    assert_eq!(
        (ok(&d)["would_change"].clone(), ok(&d)["rule_ids"].clone()),
        (json!(false), json!([id])),
        "{d}"
    );
    assert_eq!(ok(&d)["rule"]["rule_id"], json!(id));

    // Remove: the managed rule would go (named by its id); an absent one would not change.
    let d = svc.call_tool("whitelist_remove", with_dry_run(rule.clone()));
    let d = ok(&d);
    assert_eq!((d["would_change"].clone(), d["rule_ids"].clone()), (json!(true), json!([id])), "{d}");
    assert_eq!(d["would_remove"][0]["rule_id"], json!(id));
    assert_eq!(d["removed"], json!([]));
    assert_eq!(d["aws_allowed"]["action"], "ec2:RevokeSecurityGroupIngress");
    let absent = json!({"security_group_id": g, "ip_address": "198.51.100.1", "port": 22, "dry_run": true});
    let d = svc.call_tool("whitelist_remove", absent);
    assert_eq!(
        (ok(&d)["would_change"].clone(), ok(&d)["rule_ids"].clone()),
        (json!(false), json!([])),
        "{d}"
    );
    assert_eq!(moto.ingress(&g), present, "moto unchanged by the dry runs");

    // A policy refusal is still a refusal, and a missing group fails as the change would.
    let world = json!({"security_group_id": g, "ip_address": "0.0.0.0/0", "dry_run": true});
    assert!(tool_failure(&svc.call_tool("whitelist_add", world)).unwrap().contains("allow_world"));
    let missing =
        json!({"security_group_id": "sg-0123456789abcdef0", "ip_address": "203.0.113.7", "dry_run": true});
    assert!(tool_failure(&svc.call_tool("whitelist_add", missing)).unwrap().contains("was not found"));

    // What moto saw: every dry run as DryRun=true, and only the real add as a change.
    let seen = actions(&moto);
    let (add_action, revoke) =
        ("AuthorizeSecurityGroupIngress".to_string(), "RevokeSecurityGroupIngress".to_string());
    assert_eq!(
        seen,
        [
            (add_action.clone(), true),
            (add_action.clone(), false),
            (add_action, true),
            (revoke.clone(), true),
            (revoke, true)
        ],
        "moto's own record of the ingress calls"
    );

    let audit: Vec<Value> = std::fs::read_to_string(state.path().join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dry: Vec<(&str, &str)> = audit
        .iter()
        .filter(|a| a["phase"] == "dry_run")
        .map(|a| (a["action"].as_str().unwrap(), a["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        dry,
        [("add", "would_change"), ("add", "no_change"), ("remove", "would_change"), ("remove", "no_change")]
    );
    assert!(audit
        .iter()
        .filter(|a| a["phase"] == "dry_run")
        .all(|a| a["aws_allowed"] == true && a["source"] == "127.0.0.1"));
    assert_eq!(audit.iter().filter(|a| a["phase"] == "intent").count(), 1, "one real change");
}
