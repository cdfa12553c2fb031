//! What moto never does, asked of `Ec2Firewall` through the real SDK against a scripted EC2
//! Query endpoint on loopback: rules and prefix-list entries that come in more than one page
//! (`NextToken`), and EC2's own refusal of a prefix-list write naming a stale `CurrentVersion`
//! (`PrefixListVersionMismatch`), which the service answers by reading the list again and
//! writing once more; the audit outcome carries both calls' request ids and the account.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use worker::aws::{AwsSettings, Ec2Firewall};
use worker::whitelist::{AddArgs, Caller, Firewall, Policy, RuleArgs};

mod moto_support;

use moto_support::{default_chain, service_with, test_env, REGION};

const EC2: &str = "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"";

/// The scripted endpoint's memory: every form body it was sent, and the list's version.
#[derive(Default)]
struct Script {
    bodies: Vec<String>,
    version: i64,
    conflicts_left: usize,
}

fn answer(script: &Mutex<Script>, body: &str) -> (u16, String) {
    let mut s = script.lock().unwrap();
    s.bodies.push(body.to_string());
    let has = |needle: &str| body.contains(needle);
    let action = body.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or_default();
    match action {
        "GetCallerIdentity" => (200, "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::210987654321:user/t</Arn><UserId>AIDTEST</UserId><Account>210987654321</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>sts-1</RequestId></ResponseMetadata></GetCallerIdentityResponse>".into()),
        "DescribeSecurityGroups" => (200, format!("<DescribeSecurityGroupsResponse {EC2}><requestId>r</requestId><securityGroupInfo><item><groupId>sg-12345678</groupId><groupName>g</groupName></item></securityGroupInfo></DescribeSecurityGroupsResponse>")),
        "DescribeSecurityGroupRules" => {
            let (n, next) = if has("NextToken=p2") { (2, "") } else { (1, "<nextToken>p2</nextToken>") };
            (200, format!("<DescribeSecurityGroupRulesResponse {EC2}><requestId>r</requestId><securityGroupRuleSet><item><securityGroupRuleId>sgr-{n}</securityGroupRuleId><groupId>sg-12345678</groupId><isEgress>false</isEgress><ipProtocol>tcp</ipProtocol><fromPort>22</fromPort><toPort>22</toPort><cidrIpv4>203.0.113.{n}/32</cidrIpv4></item></securityGroupRuleSet>{next}</DescribeSecurityGroupRulesResponse>"))
        }
        "DescribeManagedPrefixLists" => (200, format!("<DescribeManagedPrefixListsResponse {EC2}><requestId>r</requestId><prefixListSet><item><prefixListId>pl-12345678</prefixListId><prefixListName>office</prefixListName><version>{}</version><maxEntries>10</maxEntries></item></prefixListSet></DescribeManagedPrefixListsResponse>", s.version)),
        "GetManagedPrefixListEntries" => {
            let (n, next) = if has("NextToken=e2") { (2, "") } else { (1, "<nextToken>e2</nextToken>") };
            (200, format!("<GetManagedPrefixListEntriesResponse {EC2}><requestId>r</requestId><entrySet><item><cidr>198.51.100.{n}/32</cidr><description>d{n}</description></item></entrySet>{next}</GetManagedPrefixListEntriesResponse>"))
        }
        "ModifyManagedPrefixList" if s.conflicts_left > 0 => {
            // Another writer got there first: the version moved, and this write is refused.
            s.conflicts_left -= 1;
            s.version += 1;
            (400, "<Response><Errors><Error><Code>PrefixListVersionMismatch</Code><Message>The prefix list has the incorrect version number</Message></Error></Errors><RequestID>conflict</RequestID></Response>".into())
        }
        "ModifyManagedPrefixList" => {
            s.version += 1;
            (200, format!("<ModifyManagedPrefixListResponse {EC2}><requestId>r</requestId><prefixList><prefixListId>pl-12345678</prefixListId><version>{}</version></prefixList></ModifyManagedPrefixListResponse>", s.version))
        }
        other => (400, format!("<Response><Errors><Error><Code>Unscripted</Code><Message>{other}</Message></Error></Errors></Response>")),
    }
}

/// Serves `script` on a loopback port until the test process ends; returns the endpoint URL.
fn scripted(script: Arc<Mutex<Script>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, xml) = answer(&script, &String::from_utf8_lossy(&body));
            let id = if status == 200 { format!("req-{n}") } else { format!("req-{n}-refused") };
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nx-amzn-RequestId: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            let _ = reader.get_mut().write_all(reply.as_bytes());
        }
    });
    url
}

fn firewall(url: &str) -> Ec2Firewall {
    test_env();
    Ec2Firewall::new(AwsSettings {
        region: Some(REGION.into()),
        endpoint_url: Some(url.into()),
        operation_timeout: 20.0,
        max_attempts: 1,
        ..AwsSettings::default()
    })
}

#[tokio::test(flavor = "current_thread")]
async fn rules_and_entries_are_read_across_pages() {
    let script = Arc::new(Mutex::new(Script { version: 3, ..Script::default() }));
    let fw = firewall(&scripted(script.clone()));
    let rules = fw.list(&default_chain(), "sg-12345678").await.expect("rules");
    let ids: Vec<&str> = rules.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(ids, ["sgr-1", "sgr-2"], "both pages");
    let list = fw.prefix_list(&default_chain(), "pl-12345678").await.expect("list");
    assert_eq!(list.version, 3);
    let cidrs: Vec<String> = list.entries.iter().map(|e| e.cidr.to_string()).collect();
    assert_eq!(cidrs, ["198.51.100.1/32", "198.51.100.2/32"], "both pages");
    let bodies = script.lock().unwrap().bodies.clone();
    assert!(bodies
        .iter()
        .any(|b| b.contains("GetManagedPrefixListEntries") && b.contains("TargetVersion=3")));
}

#[tokio::test(flavor = "current_thread")]
async fn an_ec2_version_mismatch_is_read_again_and_written_once_more() {
    let script = Arc::new(Mutex::new(Script { version: 3, conflicts_left: 1, ..Script::default() }));
    let fw = firewall(&scripted(script.clone()));
    let state = tempfile::tempdir().expect("state dir");
    let policy = Policy { allowed_prefix_lists: vec!["pl-*".into()], ..Policy::default() };
    let w = service_with(Arc::new(fw), policy, state.path());
    let who = Caller { identity: Some("alice".into()), ..Caller::default() };
    let args = AddArgs {
        rule: RuleArgs {
            group: "pl-12345678".into(),
            ip_address: "203.0.113.7".into(),
            ..RuleArgs::default()
        },
        ..AddArgs::default()
    };
    let added = w.add(&default_chain(), &args, &who).await.expect("added on the second write");
    assert!(added.changed, "{added:?}");
    let bodies = script.lock().unwrap().bodies.clone();
    let writes: Vec<&String> =
        bodies.iter().filter(|b| b.contains("Action=ModifyManagedPrefixList")).collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes[0].contains("CurrentVersion=3") && writes[1].contains("CurrentVersion=4"), "{writes:?}");
    assert!(writes[1].contains("203.0.113.7%2F32"), "{writes:?}");
    let audit = std::fs::read_to_string(state.path().join("audit.log")).expect("audit");
    let outcome: serde_json::Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["phase"] == "outcome")
        .expect("outcome");
    assert_eq!(outcome["result"], "added");
    assert_eq!(outcome["aws_account"], "210987654321", "{outcome}");
    let ids: Vec<&str> =
        outcome["aws_request_ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    assert_eq!(ids.len(), 2, "the refused write and the one that landed: {outcome}");
    assert!(ids[0].ends_with("-refused") && !ids[1].ends_with("-refused"), "{ids:?}");
}
