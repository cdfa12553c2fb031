//! The deployment files in `deploy/` are valid and ask only for what the service exports:
//! `promtool` accepts the Prometheus config and alert rules, every metric the Grafana dashboard
//! and the alert rules query appears as a `# TYPE` in the live `/metrics` of the real binary, and
//! the dashboard has the panels operators expect.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http, Service, PATIENCE};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs promtool with `args` in the repository root and fails with its output unless it exits 0.
fn run_promtool(tool: &Path, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_config_and_rules() {
    let Some(tool) = common::tool("AWSWL_PROMTOOL", "promtool", "apt package prometheus") else { return };
    // rule_files are resolved relative to the config file, so this also finds alerts.yml.
    run_promtool(&tool, &["check", "config", "deploy/prometheus/prometheus.yml"]);
    run_promtool(&tool, &["check", "rules", "deploy/prometheus/alerts.yml"]);
    // The compose variant names a credentials file that exists only inside its container.
    run_promtool(&tool, &["check", "config", "--syntax-only", "deploy/prometheus/prometheus.docker.yml"]);
}

// ---- metric names in PromQL --------------------------------------------------------------------

/// Aggregation operators, functions and keywords of PromQL: identifiers that are not metrics.
const PROMQL_WORDS: &[&str] = &[
    // aggregations
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    // keywords and binary operators
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
    // functions
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sort_by_label",
    "sort_by_label_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
    "mad_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "cos",
    "cosh",
    "sin",
    "sinh",
    "tan",
    "tanh",
    "deg",
    "rad",
    "pi",
    // Grafana's label_values() in template variable queries
    "label_values",
    "label_names",
    "metrics",
    "query_result",
];

/// Series Prometheus records itself for every target; the service cannot export them.
const SCRAPE_SERIES: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Index just past the group that opens at `s[open]` (`{`, `[` or `(`), skipping strings.
fn skip_group(s: &[u8], open: usize) -> usize {
    let (o, c) = (
        s[open],
        match s[open] {
            b'{' => b'}',
            b'[' => b']',
            _ => b')',
        },
    );
    let mut depth = 0;
    let mut i = open;
    while i < s.len() {
        match s[i] {
            b'"' | b'\'' | b'`' => i = skip_string(s, i) - 1,
            x if x == o => depth += 1,
            x if x == c => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len()
}

/// Index just past the string literal that starts at `s[at]`.
fn skip_string(s: &[u8], at: usize) -> usize {
    let q = s[at];
    let mut i = at + 1;
    while i < s.len() {
        if s[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if s[i] == q {
            return i + 1;
        }
        i += 1;
    }
    s.len()
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers
/// (`{…}`), ranges (`[…]`) and grouping label lists (`by (…)`, `on (…)`, …) that are neither
/// called like a function nor a PromQL word. Grafana variables (`$__rate_interval`, `$job`) only
/// occur inside those skipped parts.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let s = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(s, i);
        } else if c == b'{' || c == b'[' {
            i = skip_group(s, i);
        } else if c == b'#' {
            // A comment runs to the end of the line.
            i = s[i..].iter().position(|&b| b == b'\n').map_or(s.len(), |n| i + n);
        } else if c == b'$' || c.is_ascii_digit() || c == b'.' {
            // A variable or a number/duration (5m, 0.95, 1e3): one token, not a name.
            i += 1;
            while i < s.len() && (ident_char(s[i]) || s[i] == b'.') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut next = i;
            while next < s.len() && s[next].is_ascii_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if matches!(lower.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right")
                && s.get(next) == Some(&b'(')
            {
                // A list of label names.
                i = skip_group(s, next);
            } else if s.get(next) == Some(&b'(') || PROMQL_WORDS.contains(&lower.as_str()) {
                // A function call or a keyword.
            } else {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_name_extraction() {
    let got = metric_names(
        r#"histogram_quantile(0.95, sum by (method, le) (rate(mcp_request_duration_seconds_bucket{job="$job", method=~"tools/.*"}[$__rate_interval])))
           / on (instance) group_left sum without (status) (increase(x_total [5m] offset 1h)) > bool 2
           and up{job="a b"} unless absent(y) or sum(z:recorded:rate5m)"#,
    );
    let want: BTreeSet<String> =
        ["mcp_request_duration_seconds_bucket", "x_total", "up", "y", "z:recorded:rate5m"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(got, want);
    assert_eq!(metric_names("sum(rate(a{s=\"}{[(\"}[1m]))"), BTreeSet::from(["a".to_string()]));
}

/// Every string under a key named `key`, anywhere in the JSON value.
fn strings_under(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    if let Value::String(s) = v {
                        out.push(s.clone());
                    }
                }
                strings_under(v, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

/// The `expr:` values of a Prometheus rules file: inline, or a `|`/`>` block (the lines indented
/// deeper than the `expr:` line). Enough YAML for the rule files this repository writes.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start().trim_start_matches("- ");
        i += 1;
        let Some(rest) = body.strip_prefix("expr:") else { continue };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let mut block = Vec::new();
            while i < lines.len()
                && (lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() > indent)
            {
                block.push(lines[i].trim());
                i += 1;
            }
            exprs.push(block.join("\n"));
        } else {
            let unquoted = rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
                .unwrap_or(rest);
            exprs.push(unquoted.to_string());
        }
    }
    exprs
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/awswhitelist-dashboard.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/awswhitelist-dashboard.json is not JSON: {e}"))
}

/// `# TYPE name kind` lines of an exposition: name -> kind.
fn exported_types(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// Whether `name` is exported: its own `# TYPE`, or a histogram/summary's `_bucket`, `_sum` or
/// `_count` series.
fn is_exported(types: &std::collections::BTreeMap<String, String>, name: &str) -> bool {
    if types.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|base| types.get(base))
            .is_some_and(|kind| kind == "histogram" || (kind == "summary" && *suffix != "_bucket"))
    })
}

#[test]
fn dashboard_and_alerts_query_only_exported_metrics() {
    let mut exprs: Vec<(String, String)> = Vec::new();
    let mut dash_exprs = Vec::new();
    let dash = dashboard();
    strings_under(&dash, "expr", &mut dash_exprs);
    // Template variable queries, `label_values(metric{…}, label)`: the series selector only.
    let mut defs = Vec::new();
    if let Some(vars) = dash.pointer("/templating/list") {
        strings_under(vars, "definition", &mut defs);
    }
    for d in defs {
        let selector = d.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')).map(|(sel, _)| sel);
        dash_exprs.push(selector.unwrap_or(&d).to_string());
    }
    assert!(dash_exprs.len() >= 7, "expected an expr per panel in the dashboard, found {dash_exprs:?}");
    exprs.extend(dash_exprs.into_iter().map(|e| ("dashboard".to_string(), e)));
    let rules = rule_exprs(&read("deploy/prometheus/alerts.yml"));
    let alerts = read("deploy/prometheus/alerts.yml")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(rules.len(), alerts, "one expr per alert rule, found {rules:?}");
    assert!(alerts >= 6, "expected at least six alert rules, found {alerts}");
    exprs.extend(rules.into_iter().map(|e| ("alerts.yml".to_string(), e)));

    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for (file, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{file}: no metric name found in {expr:?}");
        wanted.extend(names.into_iter().map(|n| (n, file.clone())));
    }

    let svc = Service::start("workers = 2\n");
    // The workers' families arrive with their first snapshot: wait until every name is there.
    let deadline = Instant::now() + PATIENCE;
    let (text, missing) = loop {
        let resp = http::get(&svc.addr, "/metrics").expect("GET /metrics");
        assert_eq!(resp.status, 200, "GET /metrics: {}", String::from_utf8_lossy(&resp.body));
        let text = String::from_utf8(resp.body).expect("/metrics is UTF-8");
        let types = exported_types(&text);
        let missing: Vec<&(String, String)> = wanted
            .iter()
            .filter(|(name, _)| !SCRAPE_SERIES.contains(&name.as_str()) && !is_exported(&types, name))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (text, missing.into_iter().cloned().collect::<Vec<_>>());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(missing.is_empty(), "queried but not in /metrics (name, file): {missing:?}\n/metrics:\n{text}");
    // The families the dashboard is about are really used.
    let used: BTreeSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
    for family in [
        "mcp_requests_total",
        "mcp_request_duration_seconds_bucket",
        "mcp_aws_api_calls_total",
        "http_requests_total",
        "awswhitelist_workers",
        "awswhitelist_worker_exits_total",
        "rate_limited_total",
        "auth_failures_total",
    ] {
        assert!(used.contains(family), "no dashboard panel or alert queries {family}");
    }
}

#[test]
fn dashboard_has_the_panels() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(schema >= 36, "schemaVersion {schema}: too old for the datasource-variable panel format");
    let vars = dash.pointer("/templating/list").and_then(Value::as_array).expect("templating.list");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"),
        "no Prometheus datasource variable named `datasource`"
    );
    let panels = dash["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Request rate by method",
        "p95 duration by method",
        "AWS call rate by operation",
        "Errors",
        "Workers alive and restarts by reason",
        "Rate-limited requests",
        "Auth failures by reason",
    ] {
        assert!(titles.contains(&want), "no panel titled {want:?}; panels: {titles:?}");
    }
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in {title:?}");
        assert_eq!(p.pointer("/datasource/uid"), Some(&Value::from("${datasource}")), "{title}: datasource");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}: a target without expr");
        }
    }
}

/// The container config example is one the service accepts (with its secret file in place).
#[test]
fn container_config_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    fs::write(&secret, "0123456789abcdef0123456789abcdef0123456789abcdef\n").unwrap();
    let text = read("deploy/awswhitelist.container.toml");
    assert!(text.contains("bind = [\"0.0.0.0:8080\"]") && text.contains("enabled = true"));
    let config = dir.path().join("config.toml");
    fs::write(&config, text.replace("/run/secrets/jwt_secret", secret.to_str().unwrap())).unwrap();
    let out = Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .env_remove("AWSWHITELIST_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config rejected deploy/awswhitelist.container.toml:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
