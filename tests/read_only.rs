//! Read-only mode and the policy's `instructions`, end to end over HTTP: a real `serve` with
//! workers, a real moto. Read-only from `[policy] read_only` and from an API key's `read_only`:
//! the changing tools are not listed and are refused with a message naming the setting, the
//! reading tools still answer, and moto is unchanged. (stdio: tests/stdio_proxy.rs.)

mod common;

use common::moto::Moto;
use common::{keygen, tool_failure, Options, Service};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn serve(moto: &Moto, top: &str, tables: &str) -> Service {
    Service::start_with(Options {
        config: format!("{top}\n{}\n{tables}\n", moto.aws_table()),
        env: Moto::sdk_env(),
        wait_ready: true,
    })
}

/// A legacy (2025-06-18) request with an optional bearer credential; the JSON-RPC result.
fn rpc(svc: &Service, bearer: Option<&str>, method: &str, params: Value) -> Value {
    let authorization = bearer.map(|b| format!("Bearer {b}"));
    let mut headers = vec![("MCP-Protocol-Version", "2025-06-18")];
    if let Some(a) = &authorization {
        headers.push(("Authorization", a.as_str()));
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let r = svc.post_mcp(&headers, &body);
    assert_eq!(r.status, 200, "{method}: {r:?}");
    let v = r.json();
    v.get("result").cloned().unwrap_or(v)
}

fn tool_names(list: &Value) -> Vec<String> {
    let tools = list["tools"].as_array().unwrap_or_else(|| panic!("no tools: {list}"));
    tools.iter().map(|t| t["name"].as_str().unwrap_or("").to_string()).collect()
}

fn initialize(svc: &Service, bearer: Option<&str>) -> String {
    let params = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
    let r = rpc(svc, bearer, "initialize", params);
    r["instructions"].as_str().unwrap_or_else(|| panic!("no instructions: {r}")).to_string()
}

fn call(svc: &Service, bearer: Option<&str>, tool: &str, args: Value) -> Value {
    rpc(svc, bearer, "tools/call", json!({"name": tool, "arguments": args}))
}

const CHANGING: [&str; 2] = ["whitelist_add", "whitelist_remove"];

#[test]
fn a_read_only_server_offers_no_changing_tool_and_refuses_one_naming_the_setting() {
    let Some(moto) = Moto::start() else { return };
    let g = moto.create_group("ro-server");
    moto.authorize(&g, "198.51.100.0/24", 22, "by hand");
    let before = moto.ingress(&g);
    let svc = serve(&moto, "workers = 2\n", "[policy]\nread_only = true\n");

    let names = tool_names(&rpc(&svc, None, "tools/list", json!({})));
    assert!(names.iter().all(|n| !CHANGING.contains(&n.as_str())), "{names:?}");
    assert!(names.contains(&"whitelist_list".into()) && names.contains(&"whitelist_check".into()));
    for tool in CHANGING {
        for dry_run in [false, true] {
            let args = json!({"security_group_id": g, "ip_address": "198.51.100.0/24", "dry_run": dry_run});
            let failure = tool_failure(&call(&svc, None, tool, args)).expect("refused");
            assert!(failure.contains(&format!("{tool} is not available")), "{failure}");
            assert!(failure.contains("[policy] read_only = false"), "names the setting: {failure}");
        }
    }
    let listed = call(&svc, None, "whitelist_list", json!({"security_group_id": g}));
    assert_eq!(listed["structuredContent"]["count"], 1, "reading still works: {listed}");
    let checked =
        call(&svc, None, "whitelist_check", json!({"security_group_id": g, "ip_address": "198.51.100.0/24"}));
    assert_eq!(checked["structuredContent"]["exists"], true, "{checked}");
    assert_eq!(moto.ingress(&g), before, "nothing changed");
    assert!(initialize(&svc, None).contains("read-only ([policy] read_only)"));
}

#[test]
fn a_read_only_api_key_is_refused_the_changes_another_key_makes() {
    let Some(moto) = Moto::start() else { return };
    let g = moto.create_group("ro-key");
    let both = "whitelist:read whitelist:write";
    let (ro, ro_entry) = keygen("ci-ro", both, &["--read-only"]);
    let (rw, rw_entry) = keygen("ci-rw", both, &[]);
    let (reader, reader_entry) = keygen("ci-reader", "whitelist:read", &[]);
    assert!(ro_entry.contains("read_only = true") && !rw_entry.contains("read_only"), "{ro_entry}");
    let keys = format!("{ro_entry}\n{rw_entry}\n{reader_entry}");
    let svc = serve(&moto, "workers = 2\n", &format!("[auth]\nenabled = true\n{keys}\n"));

    let names = tool_names(&rpc(&svc, Some(&ro), "tools/list", json!({})));
    assert!(names.iter().all(|n| !CHANGING.contains(&n.as_str())), "{names:?}");
    let names = tool_names(&rpc(&svc, Some(&rw), "tools/list", json!({})));
    assert!(CHANGING.iter().all(|c| names.contains(&c.to_string())), "{names:?}");

    let args = json!({"security_group_id": g, "ip_address": "203.0.113.7", "port": 22});
    let failure = tool_failure(&call(&svc, Some(&ro), "whitelist_add", args.clone())).expect("refused");
    assert!(failure.contains("[[auth.api_keys]] entry with id \"ci-ro\""), "names the setting: {failure}");
    assert!(moto.ingress(&g).is_empty(), "nothing changed");
    let added = call(&svc, Some(&rw), "whitelist_add", args.clone());
    assert_eq!(added["structuredContent"]["changed"], true, "{added}");
    let listed = call(&svc, Some(&ro), "whitelist_list", json!({"security_group_id": g}));
    assert_eq!(listed["structuredContent"]["count"], 1, "the read-only key still reads: {listed}");
    let failure = tool_failure(&call(&svc, Some(&ro), "whitelist_remove", args)).expect("refused");
    assert!(failure.contains("ci-ro"), "{failure}");
    assert_eq!(moto.ingress(&g).len(), 1);

    // HTTP authenticates before dispatch, so initialize knows the caller is read-only.
    let instructions = initialize(&svc, Some(&ro));
    assert!(instructions.contains("Your credential is read-only"), "{instructions}");
    assert!(!initialize(&svc, Some(&rw)).contains("Your credential is read-only"));
    // A credential is also read-only by its scope set (its changing calls are answered 403).
    let instructions = initialize(&svc, Some(&reader));
    assert!(instructions.contains("read-only (its scopes do not include whitelist:write)"), "{instructions}");
}

/// `server/discover` the 2026-07-28 way; its instructions.
fn discover(svc: &Service) -> String {
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}});
    let r = svc.post_mcp(&[("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "server/discover")], &body);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    v["result"]["instructions"].as_str().unwrap_or_else(|| panic!("no instructions: {v}")).to_string()
}

#[test]
fn instructions_follow_the_policy_in_initialize_and_discover_and_after_a_reload() {
    let policy = "[policy]\nallowed_security_groups = [\"sg-0abc*\"]\nallowed_ports = [\"22\", \"443\"]\nmax_rule_duration_hours = 8.0\n";
    let svc = Service::start(&format!("workers = 2\n{policy}"));
    let text = initialize(&svc, None);
    for needle in ["sg-0abc*", "ports may be opened: 22, 443", "at most 8h", "IPv4 /16", "dry_run"] {
        assert!(text.contains(needle), "{needle:?} missing: {text}");
    }
    assert!(!text.contains("read-only"), "{text}");
    assert_eq!(discover(&svc), text, "the same sentences through server/discover");

    svc.rewrite_config("workers = 2\n[policy]\nallowed_security_groups = [\"sg-0def*\"]\nread_only = true\n");
    svc.signal(Signal::SIGHUP);
    svc.wait_only_generation(2);
    let text = initialize(&svc, None);
    assert!(text.contains("sg-0def*") && !text.contains("sg-0abc*"), "{text}");
    assert!(text.contains("Any port") && text.contains("read-only ([policy] read_only)"), "{text}");
    assert_eq!(discover(&svc), text);
}
