//! The policy an operator sets on what assistants may open; enforced on every change.
//!
//! Every refusal names the setting that refused and what would be allowed, and is decided
//! before any AWS call, so a refused request changes nothing.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::consent::ConsentRules;
use super::target::{Ports, Protocol};

/// What may be opened. Empty lists mean "no restriction" for that dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Security group ids or patterns (`sg-0abc*`) that may be touched.
    pub allowed_security_groups: Vec<String>,
    /// Managed prefix list ids or patterns (`pl-0abc*`) that may be touched. Unlike the groups,
    /// empty means none: an entry opens every referencing group at once.
    pub allowed_prefix_lists: Vec<String>,
    /// Port ranges a rule may open; a rule's whole range must fit in one of them.
    pub allowed_ports: Vec<Ports>,
    /// Protocols a rule may use. `all` (every protocol and port) only when named here, even
    /// when the list is empty; the default is tcp, udp and icmp.
    pub allowed_protocols: Vec<Protocol>,
    /// Networks requested CIDRs must lie inside.
    pub allowed_ip_ranges: Vec<IpNet>,
    /// Shortest IPv4 prefix accepted (a /8 opens 16 million addresses).
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix accepted.
    pub min_prefix_v6: u8,
    /// Allow 0.0.0.0/0 and ::/0 (the whole internet); never by default.
    pub allow_world: bool,
    /// Longest `duration` a rule may be given; also the expiry imposed when the call gives none,
    /// if `require_expiry` is set.
    pub max_rule_duration: Option<Duration>,
    /// Every rule must expire (rules without `duration` get `max_rule_duration`).
    pub require_expiry: bool,
    /// Most rules this service may hold in one group.
    pub max_rules_per_group: Option<usize>,
    /// Let `whitelist_remove` remove rules this service did not add (no marker, or one that
    /// does not verify), like the reference system; never by default.
    pub remove_unmanaged: bool,
    /// The whole server is read-only (`[policy] read_only`): `whitelist_add` and
    /// `whitelist_remove` are not offered and are refused if called.
    pub read_only: bool,
    /// Credential profiles through which nothing may be changed (`[[aws.profiles]] read_only`).
    pub read_only_profiles: Vec<String>,
    /// Whether the expiry sweeper still removes expired rules under `read_only` (and through
    /// read-only profiles). On by default: the expiry was promised when the rule was added, and
    /// removing an expired rule only closes access.
    pub sweep_when_read_only: bool,
    /// `[policy.consent]`: which changes need a person's consent (none by default).
    pub consent: ConsentRules,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_security_groups: Vec::new(),
            allowed_prefix_lists: Vec::new(),
            allowed_ports: Vec::new(),
            allowed_protocols: DEFAULT_PROTOCOLS.to_vec(),
            allowed_ip_ranges: Vec::new(),
            min_prefix_v4: 16,
            min_prefix_v6: 48,
            allow_world: false,
            max_rule_duration: None,
            require_expiry: false,
            max_rules_per_group: None,
            remove_unmanaged: false,
            read_only: false,
            read_only_profiles: Vec::new(),
            sweep_when_read_only: true,
            consent: ConsentRules::default(),
        }
    }
}

/// The protocols allowed when the operator names none: not `all`, which opens every port.
pub const DEFAULT_PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp];

/// A policy refusal: which setting, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The config key that refused.
    pub setting: &'static str,
    /// What was asked and what is allowed.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by policy {}: {}", self.setting, self.message)
    }
}

fn refuse(setting: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { setting, message })
}

impl Policy {
    /// May this group (or prefix list) be touched at all (read or write)?
    pub fn check_group(&self, group: &str) -> Result<(), Refusal> {
        if super::ids::is_prefix_list(group) {
            return self.check_prefix_list(group);
        }
        if self.allowed_security_groups.is_empty()
            || self.allowed_security_groups.iter().any(|p| glob(p, group))
        {
            return Ok(());
        }
        refuse(
            "allowed_security_groups",
            format!("{group} is not in the allowed groups ({})", self.allowed_security_groups.join(", ")),
        )
    }

    /// May this managed prefix list be touched? Only when `allowed_prefix_lists` names it.
    pub fn check_prefix_list(&self, list: &str) -> Result<(), Refusal> {
        if self.allowed_prefix_lists.iter().any(|p| glob(p, list)) {
            return Ok(());
        }
        let allowed = match self.allowed_prefix_lists.is_empty() {
            true => "none: the list is empty".to_string(),
            false => self.allowed_prefix_lists.join(", "),
        };
        refuse(
            "allowed_prefix_lists",
            format!(
                "{list} is a managed prefix list, and prefix lists may be touched only when [policy] \
                 allowed_prefix_lists names them (allowed: {allowed}); an entry opens every security group \
                 that references the list"
            ),
        )
    }

    /// May this rule be added?
    pub fn check_rule(&self, cidr: &IpNet, protocol: Protocol, ports: &Ports) -> Result<(), Refusal> {
        if protocol == Protocol::All && !self.allowed_protocols.contains(&Protocol::All) {
            return refuse(
                "allowed_protocols",
                "protocol all opens every protocol and port; it is allowed only when `all` is named in [policy] allowed_protocols".into(),
            );
        }
        if !self.allowed_protocols.is_empty() && !self.allowed_protocols.contains(&protocol) {
            let list: Vec<String> = self.allowed_protocols.iter().map(|p| p.to_string()).collect();
            return refuse(
                "allowed_protocols",
                format!("protocol {protocol} is not allowed (allowed: {})", list.join(", ")),
            );
        }
        if protocol.has_ports()
            && !self.allowed_ports.is_empty()
            && !self.allowed_ports.iter().any(|a| a.contains(ports))
        {
            let list: Vec<String> = self.allowed_ports.iter().map(|p| p.to_string()).collect();
            return refuse(
                "allowed_ports",
                format!("port {ports} is not allowed (allowed: {})", list.join(", ")),
            );
        }
        if !protocol.has_ports() && !self.allowed_ports.is_empty() {
            return refuse(
                "allowed_ports",
                format!("protocol {protocol} opens every port, but only some ports are allowed"),
            );
        }
        self.check_cidr(cidr)
    }

    /// May this network be opened?
    pub fn check_cidr(&self, cidr: &IpNet) -> Result<(), Refusal> {
        let world = cidr.prefix_len() == 0;
        if world && !self.allow_world {
            return refuse(
                "allow_world",
                format!("{cidr} opens the group to the whole internet; give the caller's own address or network instead"),
            );
        }
        let (min, family) = match cidr {
            IpNet::V4(_) => (self.min_prefix_v4, "min_prefix_v4"),
            IpNet::V6(_) => (self.min_prefix_v6, "min_prefix_v6"),
        };
        if !world && cidr.prefix_len() < min {
            return refuse(
                family,
                format!("{cidr} is wider than /{min}, the widest network this server may open"),
            );
        }
        if !self.allowed_ip_ranges.is_empty() && !self.allowed_ip_ranges.iter().any(|r| r.contains(cidr)) {
            let list: Vec<String> = self.allowed_ip_ranges.iter().map(|r| r.to_string()).collect();
            return refuse(
                "allowed_ip_ranges",
                format!("{cidr} is not inside the allowed ranges ({})", list.join(", ")),
            );
        }
        Ok(())
    }

    /// The expiry to give a new rule: the requested duration within the cap.
    pub fn check_duration(&self, requested: Option<Duration>) -> Result<Option<Duration>, Refusal> {
        match (requested, self.max_rule_duration) {
            (Some(d), Some(max)) if d > max => refuse(
                "max_rule_duration_hours",
                format!(
                    "duration {} is longer than the allowed {}",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ),
            )
            .map(|_| None),
            (None, max) if self.require_expiry => Ok(max),
            (d, _) => Ok(d),
        }
    }

    /// May `rule` (described for the message), which this service did not add, be removed?
    pub fn check_unmanaged(&self, rule: &str) -> Result<(), Refusal> {
        if self.remove_unmanaged {
            return Ok(());
        }
        refuse(
            "remove_unmanaged",
            format!("{rule} was not added by this service (its description carries no valid marker of this service), so it is left alone; set [policy] remove_unmanaged = true to let assistants remove rules this service did not add"),
        )
    }

    /// May changes be made through `profile` (the call's credential profile; `None` when the
    /// call names none, or when only the server as a whole is asked about)?
    pub fn check_writable(&self, profile: Option<&str>) -> Result<(), Refusal> {
        if self.read_only {
            return refuse(
                "read_only",
                "this server is read-only: it lists and checks rules but adds and removes none; \
                 set [policy] read_only = false to allow changes"
                    .into(),
            );
        }
        match profile {
            Some(p) if self.read_only_profiles.iter().any(|r| r == p) => refuse(
                "aws.profiles.read_only",
                format!(
                    "the credential profile {p:?} is read-only: nothing may be changed through it; \
                     use another profile, or set read_only = false in its [[aws.profiles]] entry"
                ),
            ),
            _ => Ok(()),
        }
    }

    /// May the expiry sweeper remove expired rules through `profile`? Always, unless the
    /// server or the profile is read-only and `sweep_when_read_only` is off.
    pub fn may_sweep(&self, profile: Option<&str>) -> bool {
        self.sweep_when_read_only || self.check_writable(profile).is_ok()
    }

    /// May one more rule of this service go into a group that holds `existing` of them?
    pub fn check_count(&self, existing: usize) -> Result<(), Refusal> {
        match self.max_rules_per_group {
            Some(max) if existing >= max => refuse(
                "max_rules_per_group",
                format!("the group already holds {existing} rules added by this service (limit {max}); remove one first"),
            ),
            _ => Ok(()),
        }
    }
}

/// Matches `*` (any run) and `?` (one character); anything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn world_is_refused_by_default_and_names_its_setting() {
        let p = Policy::default();
        let r = p.check_cidr(&net("0.0.0.0/0")).unwrap_err();
        assert_eq!(r.setting, "allow_world");
        assert_eq!(p.check_cidr(&net("::/0")).unwrap_err().setting, "allow_world");
        assert_eq!(p.check_cidr(&net("10.0.0.0/8")).unwrap_err().setting, "min_prefix_v4");
        assert!(p.check_cidr(&net("10.1.0.0/16")).is_ok());
        assert_eq!(p.check_cidr(&net("2001:db8::/32")).unwrap_err().setting, "min_prefix_v6");
        let open = Policy { allow_world: true, ..Policy::default() };
        assert!(open.check_cidr(&net("0.0.0.0/0")).is_ok());
    }

    #[test]
    fn ranges_ports_protocols_groups() {
        let p = Policy {
            allowed_ip_ranges: vec![net("203.0.113.0/24"), net("2001:db8::/32")],
            allowed_ports: vec![Ports::single(22), Ports { from: 8000, to: 8100 }],
            allowed_protocols: vec![Protocol::Tcp],
            allowed_security_groups: vec!["sg-0abc*".into(), "sg-12345678".into()],
            ..Policy::default()
        };
        assert!(p.check_rule(&net("203.0.113.7/32"), Protocol::Tcp, &Ports::single(22)).is_ok());
        assert!(p.check_rule(&net("203.0.113.7/32"), Protocol::Tcp, &Ports { from: 8010, to: 8020 }).is_ok());
        assert_eq!(
            p.check_rule(&net("198.51.100.7/32"), Protocol::Tcp, &Ports::single(22)).unwrap_err().setting,
            "allowed_ip_ranges"
        );
        assert_eq!(
            p.check_rule(&net("203.0.113.7/32"), Protocol::Tcp, &Ports::single(23)).unwrap_err().setting,
            "allowed_ports"
        );
        assert_eq!(
            p.check_rule(&net("203.0.113.7/32"), Protocol::Udp, &Ports::single(22)).unwrap_err().setting,
            "allowed_protocols"
        );
        assert!(p.check_group("sg-0abcdef").is_ok());
        assert!(p.check_group("sg-12345678").is_ok());
        assert!(p.check_group("sg-99999999").unwrap_err().message.contains("sg-99999999"));
    }

    #[test]
    fn prefix_lists_only_when_named() {
        let p = Policy::default();
        let r = p.check_group("pl-12345678").unwrap_err();
        assert_eq!(r.setting, "allowed_prefix_lists");
        assert!(r.message.contains("none"), "{r}");
        let named = Policy {
            allowed_prefix_lists: vec!["pl-0abc*".into()],
            allowed_security_groups: vec!["pl-*".into()],
            ..Policy::default()
        };
        assert!(named.check_group("pl-0abcdef1").is_ok());
        assert_eq!(
            named.check_group("pl-12345678").unwrap_err().setting,
            "allowed_prefix_lists",
            "a group pattern never lets a prefix list in"
        );
        assert!(named.check_group("sg-12345678").unwrap_err().setting == "allowed_security_groups");
    }

    #[test]
    fn protocol_all_must_be_named_in_allowed_protocols() {
        let p = Policy::default();
        let r = p.check_rule(&net("10.1.0.0/16"), Protocol::All, &Ports::ANY).unwrap_err();
        assert_eq!(r.setting, "allowed_protocols");
        assert!(r.to_string().contains("[policy] allowed_protocols"), "{r}");
        assert!(p.check_rule(&net("10.1.0.0/16"), Protocol::Tcp, &Ports::single(22)).is_ok());
        assert!(p.check_rule(&net("10.1.0.0/16"), Protocol::Udp, &Ports::single(53)).is_ok());
        assert!(p.check_rule(&net("10.1.0.0/16"), Protocol::Icmp, &Ports::ANY).is_ok());
        let empty = Policy { allowed_protocols: Vec::new(), ..Policy::default() };
        assert_eq!(
            empty.check_rule(&net("10.1.0.0/16"), Protocol::All, &Ports::ANY).unwrap_err().setting,
            "allowed_protocols",
            "an empty list never means every port"
        );
        let named = Policy { allowed_protocols: vec![Protocol::Tcp, Protocol::All], ..Policy::default() };
        assert!(named.check_rule(&net("10.1.0.0/16"), Protocol::All, &Ports::ANY).is_ok());
    }

    #[test]
    fn durations_and_counts() {
        let p = Policy { max_rule_duration: Some(Duration::from_secs(3600)), ..Policy::default() };
        assert_eq!(p.check_duration(Some(Duration::from_secs(60))).unwrap(), Some(Duration::from_secs(60)));
        assert_eq!(
            p.check_duration(Some(Duration::from_secs(7200))).unwrap_err().setting,
            "max_rule_duration_hours"
        );
        assert_eq!(p.check_duration(None).unwrap(), None);
        let strict = Policy { require_expiry: true, ..p };
        assert_eq!(strict.check_duration(None).unwrap(), Some(Duration::from_secs(3600)));
        let capped = Policy { max_rules_per_group: Some(2), ..Policy::default() };
        assert!(capped.check_count(1).is_ok());
        assert_eq!(capped.check_count(2).unwrap_err().setting, "max_rules_per_group");
    }

    #[test]
    fn glob_matching() {
        assert!(glob("sg-*", "sg-123"));
        assert!(glob("*", ""));
        assert!(glob("sg-??", "sg-ab"));
        assert!(!glob("sg-??", "sg-abc"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(!glob("sg-1", "sg-12"));
    }
}
