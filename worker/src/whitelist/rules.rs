//! Rules as the domain sees them: the one a call asks for, and the ones a group holds.

use std::time::SystemTime;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::marker::{Marker, MarkerKey};
use super::target::{Ports, Protocol};

pub use super::target::RuleSpec;

/// An ingress rule a group holds, as read from EC2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExistingRule {
    /// EC2's rule id (`sgr-…`).
    pub rule_id: String,
    /// The group it belongs to.
    pub group_id: String,
    /// The source network, if the rule has one (not for group or prefix-list sources).
    pub cidr: Option<IpNet>,
    /// The source when it is not a CIDR (`sg-…`, `pl-…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_source: Option<String>,
    /// EC2's `IpProtocol` as stored (`tcp`, `-1`, `50`, …).
    pub protocol: String,
    /// First port or ICMP type (-1 for all).
    pub from_port: i32,
    /// Last port or ICMP code (-1 for all).
    pub to_port: i32,
    /// The rule's description.
    pub description: String,
}

impl ExistingRule {
    /// The rule's ports as the domain compares them (protocol `-1` has none: ANY).
    pub fn ports(&self) -> Ports {
        match Protocol::from_ec2(&self.protocol) {
            Some(Protocol::All) => Ports::ANY,
            _ => Ports { from: self.from_port, to: self.to_port },
        }
    }

    /// True when this rule is exactly `spec` (same network, protocol and ports).
    pub fn matches(&self, spec: &RuleSpec) -> bool {
        self.group_id == spec.group_id
            && self.cidr == Some(spec.cidr)
            && Protocol::from_ec2(&self.protocol) == Some(spec.protocol)
            && self.ports() == spec.ports
    }

    /// The rule as this service would have asked for it, when it could have (a CIDR source
    /// and a protocol it writes): what its marker's MAC is over.
    pub fn spec(&self) -> Option<RuleSpec> {
        Some(RuleSpec {
            group_id: self.group_id.clone(),
            cidr: self.cidr?,
            protocol: Protocol::from_ec2(&self.protocol)?,
            ports: self.ports(),
        })
    }

    /// What the rule's marker says: verified (managed), absent, or not verifying.
    pub fn marker(&self, key: &MarkerKey) -> Marker {
        key.read(&self.description, self.spec().as_ref())
    }

    /// True when the rule carries a verified expiry that is at or before `now`.
    pub fn expired(&self, now: SystemTime, key: &MarkerKey) -> bool {
        self.marker(key).expires().is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, from: i32, to: i32, cidr: &str, description: &str) -> ExistingRule {
        ExistingRule {
            rule_id: "sgr-1".into(),
            group_id: "sg-1".into(),
            cidr: Some(cidr.parse().unwrap()),
            other_source: None,
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            description: description.into(),
        }
    }

    fn spec(protocol: Protocol, ports: Ports, cidr: &str) -> RuleSpec {
        RuleSpec { group_id: "sg-1".into(), cidr: cidr.parse().unwrap(), protocol, ports }
    }

    #[test]
    fn exact_matching() {
        let r = rule("tcp", 22, 22, "203.0.113.7/32", "");
        assert!(r.matches(&spec(Protocol::Tcp, Ports::single(22), "203.0.113.7/32")));
        assert!(!r.matches(&spec(Protocol::Tcp, Ports::single(22), "203.0.113.8/32")));
        assert!(!r.matches(&spec(Protocol::Udp, Ports::single(22), "203.0.113.7/32")));
        assert!(!r.matches(&spec(Protocol::Tcp, Ports { from: 22, to: 23 }, "203.0.113.7/32")));
        let all = rule("-1", 0, 0, "203.0.113.7/32", "");
        assert!(
            all.matches(&spec(Protocol::All, Ports::ANY, "203.0.113.7/32")),
            "ports of -1 rules are ignored"
        );
        let icmp6 = rule("icmpv6", -1, -1, "2001:db8::1/128", "");
        assert!(icmp6.matches(&spec(Protocol::Icmp, Ports::ANY, "2001:db8::1/128")));
    }

    #[test]
    fn expiry_from_a_verified_marker_only() {
        let key = MarkerKey::new(&[3; 32]).unwrap();
        let now = humantime::parse_rfc3339("2026-11-24T12:00:00Z").unwrap();
        let signed = |at: &str, r: &ExistingRule| {
            let at = humantime::parse_rfc3339(at).unwrap();
            format!("x {}", key.marker(&r.spec().unwrap(), Some(at)))
        };
        let mut r = rule("tcp", 22, 22, "1.2.3.4/32", "");
        r.description = signed("2026-11-24T11:00:00Z", &r);
        assert!(r.expired(now, &key));
        r.description = signed("2026-11-24T13:00:00Z", &r);
        assert!(!r.expired(now, &key));
        let mut icmp6 = rule("icmpv6", -1, -1, "2001:db8::1/128", "");
        icmp6.description = signed("2026-11-24T11:00:00Z", &icmp6);
        assert!(icmp6.expired(now, &key), "EC2's icmpv6 is the icmp it was signed as");
        for unsigned in ["x [awswl exp=2026-11-24T11:00:00Z]", "x [awswl]", "hand-made"] {
            assert!(!rule("tcp", 22, 22, "1.2.3.4/32", unsigned).expired(now, &key), "{unsigned}");
        }
    }
}
