//! `[whitelist]` and `[policy]`: how the tools behave and what they may open, as written in
//! the config file, and their translation into the worker's types with every bad value named.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, Problem};

/// `[whitelist]`: defaults of the tools and where their state lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhitelistConfig {
    /// Port when a call names none (number, range or name).
    pub default_port: String,
    /// Protocol when a call names none.
    pub default_protocol: String,
    /// Description template: `{date}`, `{user}`, `{reason}`, `{expires}`.
    pub description_template: String,
    /// `{user}` when a call names none.
    pub default_user: String,
    /// `{reason}` when a call gives none.
    pub default_reason: String,
    /// Extra port names: `[[whitelist.port_mappings]] name = "app", port = "9000-9001"`.
    pub port_mappings: Vec<PortMapping>,
    /// Seconds a group's rules are cached (a change on this host invalidates at once).
    pub cache_ttl: f64,
    /// Directory for state shared by the host's workers; `$STATE_DIRECTORY` under systemd.
    pub state_dir: PathBuf,
    /// The audit log; default `<state_dir>/audit.log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
    /// Seconds between expiry sweeps.
    pub sweep_interval: f64,
    /// Groups the sweeper always checks for expired rules.
    pub sweep_groups: Vec<String>,
    /// Secret file holding the key that signs rule markers (at least 32 bytes; every host
    /// managing the same groups must share it). Default: `<state_dir>/marker.key`, generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker_key_file: Option<PathBuf>,
    /// Name of the environment variable holding the marker key (the name, never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker_key_env: Option<String>,
}

/// A named port from config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The name calls may use.
    pub name: String,
    /// A port or range.
    pub port: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Default for WhitelistConfig {
    fn default() -> Self {
        WhitelistConfig {
            default_port: "22".into(),
            default_protocol: "tcp".into(),
            description_template: "Added by MCP on {date} for {user}".into(),
            default_user: "MCP".into(),
            default_reason: "API access".into(),
            port_mappings: Vec::new(),
            cache_ttl: 5.0,
            state_dir: default_state_dir(),
            audit_log: None,
            sweep_interval: 60.0,
            sweep_groups: Vec::new(),
            marker_key_file: None,
            marker_key_env: None,
        }
    }
}

/// systemd's StateDirectory, else the XDG state home.
fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        if let Some(first) = std::env::split_paths(&dir).next() {
            return first;
        }
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    base.unwrap_or_else(|| PathBuf::from("/var/lib")).join("awswhitelist")
}

/// `[policy]`: enforced on every change; a refusal names the key that refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Security group ids or patterns (`sg-0abc*`); empty = any.
    pub allowed_security_groups: Vec<String>,
    /// Managed prefix list ids or patterns (`pl-0abc*`) that may be touched; empty = none.
    pub allowed_prefix_lists: Vec<String>,
    /// Ports or ranges a rule may open (`"22"`, `"8000-8100"`, `"https"`); empty = any.
    pub allowed_ports: Vec<String>,
    /// Protocols allowed; default tcp, udp, icmp. `all` (every port) only when named here.
    pub allowed_protocols: Vec<String>,
    /// Networks requested CIDRs must lie inside; empty = any.
    pub allowed_ip_ranges: Vec<String>,
    /// Widest IPv4 network that may be opened.
    pub min_prefix_v4: u8,
    /// Widest IPv6 network that may be opened.
    pub min_prefix_v6: u8,
    /// Allow 0.0.0.0/0 and ::/0.
    pub allow_world: bool,
    /// Longest rule duration, in hours (0: no cap).
    pub max_rule_duration_hours: f64,
    /// Every rule must expire (rules without duration get the cap).
    pub require_expiry: bool,
    /// Most rules this service may hold in one group (0: no cap).
    pub max_rules_per_group: usize,
    /// Let `whitelist_remove` remove rules this service did not add (the reference behaviour).
    pub remove_unmanaged: bool,
    /// The whole server is read-only: `whitelist_add`/`whitelist_remove` are not offered and are
    /// refused if called (also per API key and per `[[aws.profiles]]` entry).
    pub read_only: bool,
    /// The expiry sweeper still removes expired rules under `read_only` (and through read-only
    /// profiles): their expiry was promised when they were added.
    pub sweep_when_read_only: bool,
    /// `[policy.consent]`: which changes need a person's consent.
    pub consent: ConsentConfig,
}

/// `[policy.consent]`: which changes need a person's consent, asked through the MCP client
/// (elicitation). Nothing needs it by default; a client that cannot ask is refused when it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// Every change.
    pub always: bool,
    /// Changes to these groups (ids or `sg-0abc*` patterns).
    pub groups: Vec<String>,
    /// Changes that open or close any of these ports.
    pub ports: Vec<u16>,
    /// IPv4 networks wider than /N (0: no rule).
    pub wider_than_v4: u8,
    /// IPv6 networks wider than /N (0: no rule).
    pub wider_than_v6: u8,
    /// Rules lasting longer than this many hours, or never expiring (0: no rule).
    pub longer_than_hours: f64,
    /// Every removal.
    pub removes: bool,
    /// Seconds a person has to answer (the life of the signed request state).
    pub state_ttl_seconds: f64,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            always: false,
            groups: Vec::new(),
            ports: Vec::new(),
            wider_than_v4: 0,
            wider_than_v6: 0,
            longer_than_hours: 0.0,
            removes: false,
            state_ttl_seconds: 300.0,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = worker::whitelist::Policy::default();
        PolicyConfig {
            allowed_security_groups: Vec::new(),
            allowed_prefix_lists: Vec::new(),
            allowed_ports: Vec::new(),
            allowed_protocols: p.allowed_protocols.iter().map(ToString::to_string).collect(),
            allowed_ip_ranges: Vec::new(),
            min_prefix_v4: p.min_prefix_v4,
            min_prefix_v6: p.min_prefix_v6,
            allow_world: false,
            max_rule_duration_hours: 24.0,
            require_expiry: false,
            max_rules_per_group: 0,
            remove_unmanaged: false,
            read_only: false,
            sweep_when_read_only: p.sweep_when_read_only,
            consent: ConsentConfig::default(),
        }
    }
}

impl Config {
    /// The `[whitelist]` and `[policy]` sections in the worker's types; every bad value is
    /// reported with its key.
    pub fn whitelist_settings(&self) -> Result<worker::WhitelistSettings, Vec<Problem>> {
        use worker::settings::MarkerKeySource;
        use worker::whitelist::{description, target, NamedPort, Policy, Protocol};
        let mut problems = Vec::new();
        let mut bad = |key: &str, value: &str, reason: String| {
            problems.push(Problem::new(key, format!("{value:?}"), reason))
        };
        let w = &self.whitelist;
        let p = &self.policy;
        let mut mappings = Vec::new();
        for m in &w.port_mappings {
            let name = m.name.trim().to_ascii_lowercase();
            if name.is_empty()
                || name.chars().any(|c| c.is_ascii_digit() && name.chars().all(|d| d.is_ascii_digit()))
            {
                bad("whitelist.port_mappings.name", &m.name, "must be a word, not a number".into());
            }
            match target::parse_ports(&m.port, &[]) {
                Ok(ports) => mappings.push(NamedPort { name, ports }),
                Err(e) => bad("whitelist.port_mappings.port", &m.port, e),
            }
        }
        let protocol = Protocol::parse(&w.default_protocol).unwrap_or_else(|e| {
            bad("whitelist.default_protocol", &w.default_protocol, e);
            Protocol::Tcp
        });
        if protocol.has_ports() {
            if let Err(e) = target::parse_ports(&w.default_port, &mappings) {
                bad("whitelist.default_port", &w.default_port, e);
            }
        }
        if let Err(e) = description::check_template(&w.description_template) {
            bad("whitelist.description_template", &w.description_template, e);
        }
        let mut seconds = |key: &str, v: f64, min: f64| {
            super::settings::seconds(v, min, 86_400.0).unwrap_or_else(|| {
                bad(key, &v.to_string(), format!("must be a number of seconds between {min} and 86400"));
                Duration::ZERO
            })
        };
        let cache_ttl = seconds("whitelist.cache_ttl", w.cache_ttl, 0.0);
        let sweep_interval = seconds("whitelist.sweep_interval", w.sweep_interval, 1.0);
        if w.state_dir.as_os_str().is_empty() || !w.state_dir.is_absolute() {
            bad(
                "whitelist.state_dir",
                &w.state_dir.display().to_string(),
                "must be an absolute directory".into(),
            );
        }
        let mut ports = Vec::new();
        for v in &p.allowed_ports {
            match target::parse_ports(v, &mappings) {
                Ok(x) => ports.push(x),
                Err(e) => bad("policy.allowed_ports", v, e),
            }
        }
        let mut protocols = Vec::new();
        for v in &p.allowed_protocols {
            match Protocol::parse(v) {
                Ok(x) => protocols.push(x),
                Err(e) => bad("policy.allowed_protocols", v, e),
            }
        }
        let mut ranges = Vec::new();
        for v in &p.allowed_ip_ranges {
            match target::parse_cidr(v) {
                Ok(x) => ranges.push(x),
                Err(e) => bad("policy.allowed_ip_ranges", v, e),
            }
        }
        for g in &p.allowed_security_groups {
            if !g.starts_with("sg-") {
                bad(
                    "policy.allowed_security_groups",
                    g,
                    "must be a group id or pattern starting with sg-".into(),
                );
            }
        }
        for l in &p.allowed_prefix_lists {
            if !l.starts_with("pl-") {
                bad(
                    "policy.allowed_prefix_lists",
                    l,
                    "must be a managed prefix list id or pattern starting with pl-".into(),
                );
            }
        }
        if p.min_prefix_v4 > 32 {
            bad("policy.min_prefix_v4", &p.min_prefix_v4.to_string(), "must be 0 to 32".into());
        }
        if p.min_prefix_v6 > 128 {
            bad("policy.min_prefix_v6", &p.min_prefix_v6.to_string(), "must be 0 to 128".into());
        }
        let hours = p.max_rule_duration_hours;
        if !hours.is_finite() || !(0.0..=8760.0).contains(&hours) {
            bad(
                "policy.max_rule_duration_hours",
                &hours.to_string(),
                "must be between 0 (no cap) and 8760".into(),
            );
        }
        if p.require_expiry && hours == 0.0 {
            bad(
                "policy.require_expiry",
                "true",
                "needs max_rule_duration_hours, the expiry given to rules without one".into(),
            );
        }
        let c = &p.consent;
        for g in &c.groups {
            if !g.starts_with("sg-") && !g.starts_with("pl-") {
                bad(
                    "policy.consent.groups",
                    g,
                    "must be a group id or pattern starting with sg- (or a prefix list's, pl-)".into(),
                );
            }
        }
        if c.wider_than_v4 > 32 {
            bad("policy.consent.wider_than_v4", &c.wider_than_v4.to_string(), "must be 0 (off) to 32".into());
        }
        if c.wider_than_v6 > 128 {
            bad(
                "policy.consent.wider_than_v6",
                &c.wider_than_v6.to_string(),
                "must be 0 (off) to 128".into(),
            );
        }
        let longer = c.longer_than_hours;
        if !longer.is_finite() || !(0.0..=87_600.0).contains(&longer) {
            bad(
                "policy.consent.longer_than_hours",
                &longer.to_string(),
                "must be between 0 (off) and 87600".into(),
            );
        }
        let consent_ttl = super::settings::seconds(c.state_ttl_seconds, 2.0, 3600.0).unwrap_or_else(|| {
            bad(
                "policy.consent.state_ttl_seconds",
                &c.state_ttl_seconds.to_string(),
                "must be a number of seconds between 2 and 3600".into(),
            );
            Duration::ZERO
        });
        let marker_key = match (&w.marker_key_file, &w.marker_key_env) {
            (Some(_), Some(name)) => {
                bad(
                    "whitelist.marker_key_env",
                    name,
                    "give marker_key_file or marker_key_env, not both".into(),
                );
                MarkerKeySource::StateDir
            }
            (Some(file), None) if file.as_os_str().is_empty() => {
                bad("whitelist.marker_key_file", "", "must be the path of a secret file".into());
                MarkerKeySource::StateDir
            }
            (Some(file), None) => MarkerKeySource::File(file.clone()),
            (None, Some(name)) if !env_name(name) => {
                // Not shown: someone may have written the key itself here.
                problems.push(Problem::new(
                    "whitelist.marker_key_env",
                    "",
                    "must be the NAME of an environment variable (letters, digits, _), not the key (the value is not shown)",
                ));
                MarkerKeySource::StateDir
            }
            (None, Some(name)) => MarkerKeySource::Env(name.clone()),
            (None, None) => MarkerKeySource::StateDir,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let cap = (hours > 0.0).then(|| Duration::from_secs_f64(hours * 3600.0));
        Ok(worker::WhitelistSettings {
            policy: Policy {
                allowed_security_groups: p.allowed_security_groups.clone(),
                allowed_prefix_lists: p.allowed_prefix_lists.clone(),
                allowed_ports: ports,
                allowed_protocols: protocols,
                allowed_ip_ranges: ranges,
                min_prefix_v4: p.min_prefix_v4,
                min_prefix_v6: p.min_prefix_v6,
                allow_world: p.allow_world,
                max_rule_duration: cap,
                require_expiry: p.require_expiry,
                max_rules_per_group: (p.max_rules_per_group > 0).then_some(p.max_rules_per_group),
                remove_unmanaged: p.remove_unmanaged,
                read_only: p.read_only,
                read_only_profiles: self
                    .aws
                    .profiles
                    .iter()
                    .filter(|profile| profile.read_only)
                    .map(|profile| profile.name.clone())
                    .collect(),
                sweep_when_read_only: p.sweep_when_read_only,
                consent: worker::whitelist::ConsentRules {
                    always: c.always,
                    groups: c.groups.clone(),
                    ports: c.ports.clone(),
                    wider_than_v4: (c.wider_than_v4 > 0).then_some(c.wider_than_v4),
                    wider_than_v6: (c.wider_than_v6 > 0).then_some(c.wider_than_v6),
                    longer_than: (longer > 0.0).then(|| Duration::from_secs_f64(longer * 3600.0)),
                    removes: c.removes,
                },
            },
            default_port: w.default_port.clone(),
            default_protocol: protocol,
            description_template: w.description_template.clone(),
            default_user: w.default_user.clone(),
            default_reason: w.default_reason.clone(),
            port_mappings: mappings,
            cache_ttl,
            audit_log: w.audit_log.clone().unwrap_or_else(|| w.state_dir.join("audit.log")),
            state_dir: w.state_dir.clone(),
            sweep_interval,
            sweep_groups: w.sweep_groups.clone(),
            marker_key,
            consent_ttl,
        })
    }
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker::whitelist::{Ports, Protocol};

    #[test]
    fn protocol_all_is_refused_unless_named() {
        let all = |config: &Config| {
            let settings = config.whitelist_settings().unwrap_or_else(|p| panic!("{p:?}"));
            settings.policy.check_rule(&"10.1.0.0/16".parse().unwrap(), Protocol::All, &Ports::ANY)
        };
        let mut config = Config::default();
        config.whitelist.state_dir = "/var/lib/awswhitelist".into();
        assert_eq!(all(&config).unwrap_err().setting, "allowed_protocols");
        config.policy.allowed_protocols.push("all".into());
        assert!(all(&config).is_ok(), "naming `all` allows it");
    }

    #[test]
    fn read_only_reaches_the_policy_from_policy_and_profiles() {
        let mut config = Config::default();
        config.whitelist.state_dir = "/var/lib/awswhitelist".into();
        let profile = |name: &str, read_only: bool| worker::aws::settings::CredentialProfile {
            name: name.into(),
            region: None,
            role_arn: None,
            external_id: None,
            session_name: None,
            source_profile: None,
            read_only,
        };
        config.aws.profiles = vec![profile("audit", true), profile("ops", false)];
        let policy = config.whitelist_settings().unwrap_or_else(|p| panic!("{p:?}")).policy;
        assert!(!policy.read_only && policy.sweep_when_read_only, "defaults: writable, sweeping");
        assert_eq!(policy.read_only_profiles, ["audit"]);
        assert_eq!(policy.check_writable(Some("audit")).unwrap_err().setting, "aws.profiles.read_only");
        assert!(policy.check_writable(Some("ops")).is_ok());
        config.policy.read_only = true;
        config.policy.sweep_when_read_only = false;
        let policy = config.whitelist_settings().unwrap_or_else(|p| panic!("{p:?}")).policy;
        assert_eq!(policy.check_writable(None).unwrap_err().setting, "read_only");
        assert!(!policy.may_sweep(None));
    }
}
