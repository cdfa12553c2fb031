//! The `instructions` a client receives with `initialize` and `server/discover`, generated from
//! the policy, so the model knows the rules before it tries one: which groups, ports and
//! protocols, the widest network, the longest duration, what may be removed, read-only.
//!
//! [`sentences`] builds one short sentence per part of the policy; a new policy part (consent,
//! say) adds its sentence there, and `app` joins them once at boot.

use super::policy::Policy;
use super::target::Protocol;

/// The instructions as short sentences, in the order a model needs them.
pub fn sentences(policy: &Policy) -> Vec<String> {
    let mut out = vec![
        "This server manages IP-whitelist ingress rules of AWS EC2 security groups: whitelist_list and \
         whitelist_check read them, whitelist_add and whitelist_remove change them."
            .to_string(),
        "whitelist_groups lists the groups you may touch; whitelist_find finds where an address or a \
         user is allowed; whitelist_history shows who changed what and when."
            .to_string(),
    ];
    if policy.read_only {
        out.push(
            "It is read-only ([policy] read_only): rules can be listed and checked, never added or removed."
                .into(),
        );
    }
    out.push(groups(policy));
    out.push(match policy.allowed_ports.is_empty() {
        true => "Any port or port range may be opened.".into(),
        false => format!("Only these ports may be opened: {}.", list(&policy.allowed_ports)),
    });
    out.push(protocols(policy));
    out.push(networks(policy));
    if !policy.allowed_ip_ranges.is_empty() {
        out.push(format!("Addresses must lie inside {}.", list(&policy.allowed_ip_ranges)));
    }
    out.push(durations(policy));
    if let Some(max) = policy.max_rules_per_group {
        out.push(format!("A group holds at most {max} rules added by this service."));
    }
    out.push(match policy.remove_unmanaged {
        true => "whitelist_remove may also remove rules this service did not add.".into(),
        false => "whitelist_remove removes only rules this service added (signed in their description); \
                  other rules are listed but left alone."
            .into(),
    });
    if !policy.read_only_profiles.is_empty() {
        out.push(format!(
            "Nothing may be changed through the read-only credential profiles {}.",
            policy.read_only_profiles.join(", ")
        ));
    }
    if !policy.read_only {
        out.extend(policy.consent.summary());
        out.push(
            "ip_address \"current\" means your own address; dry_run: true on whitelist_add or \
             whitelist_remove shows exactly what would change and whether AWS would allow it, \
             changing nothing."
                .into(),
        );
        out.push(
            "whitelist_add with duration on a rule this service added renews it; whitelist_move moves \
             a user's access in a group to a new address (the new one is added before the old is \
             removed); whitelist_revoke_everywhere removes an address's or a user's rules from every \
             group (run it with dry_run: true first)."
                .into(),
        );
    }
    out
}

fn groups(policy: &Policy) -> String {
    let groups = match policy.allowed_security_groups.is_empty() {
        true => "Any security group id (sg-…) may be named.".to_string(),
        false => format!(
            "Only these security groups may be used: {} (* matches any run of characters).",
            policy.allowed_security_groups.join(", ")
        ),
    };
    match policy.allowed_prefix_lists.is_empty() {
        true => groups,
        false => format!(
            "{groups} These EC2 managed prefix lists may be named wherever a security_group_id is taken: {} \
             (an entry is an address or CIDR with no port or protocol: leave both out).",
            policy.allowed_prefix_lists.join(", ")
        ),
    }
}

fn protocols(policy: &Policy) -> String {
    let all = policy.allowed_protocols.contains(&Protocol::All);
    let named: Vec<String> =
        policy.allowed_protocols.iter().filter(|p| **p != Protocol::All).map(|p| p.to_string()).collect();
    let base = match named.is_empty() {
        true => "Any of tcp, udp and icmp may be used".to_string(),
        false => format!("Protocols allowed: {}", named.join(", ")),
    };
    match all {
        true => format!("{base}, and all (every protocol and port)."),
        false => format!("{base}; protocol all (every protocol and port) is refused."),
    }
}

fn networks(policy: &Policy) -> String {
    let world = match policy.allow_world {
        true => "0.0.0.0/0 and ::/0 (the whole internet) are allowed",
        false => "0.0.0.0/0 and ::/0 (the whole internet) are refused",
    };
    format!(
        "The widest networks accepted are IPv4 /{} and IPv6 /{}; {world}; a single address becomes a /32 or /128.",
        policy.min_prefix_v4, policy.min_prefix_v6
    )
}

fn durations(policy: &Policy) -> String {
    let max = policy.max_rule_duration.map(|d| humantime::format_duration(d).to_string());
    match (max, policy.require_expiry) {
        (Some(max), true) => format!(
            "Every rule expires: duration (e.g. \"8h\") may be at most {max}, and a rule given none expires after {max}."
        ),
        (Some(max), false) => {
            format!("A rule may be given a duration (e.g. \"8h\") of at most {max}; without one it does not expire.")
        }
        (None, _) => "A rule may be given a duration (e.g. \"8h\") after which it is removed.".into(),
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::whitelist::Ports;

    #[test]
    fn the_sentences_follow_the_policy() {
        let open = sentences(&Policy::default()).join(" ");
        assert!(open.contains("Any security group id"), "{open}");
        assert!(open.contains("protocol all (every protocol and port) is refused"), "{open}");
        assert!(open.contains("IPv4 /16 and IPv6 /48"), "{open}");
        assert!(open.contains("only rules this service added"), "{open}");
        assert!(!open.contains("read-only"), "{open}");
        assert!(open.contains("dry_run"), "{open}");
        assert!(!open.contains("prefix list"), "none may be touched by default: {open}");

        let strict = Policy {
            allowed_security_groups: vec!["sg-0abc*".into()],
            allowed_ports: vec![Ports::single(22), Ports { from: 8000, to: 8100 }],
            allowed_ip_ranges: vec!["203.0.113.0/24".parse().unwrap()],
            min_prefix_v4: 24,
            max_rule_duration: Some(Duration::from_secs(8 * 3600)),
            require_expiry: true,
            max_rules_per_group: Some(5),
            remove_unmanaged: true,
            read_only: true,
            read_only_profiles: vec!["audit".into()],
            allowed_prefix_lists: vec!["pl-0office*".into()],
            ..Policy::default()
        };
        let text = sentences(&strict).join(" ");
        for needle in [
            "sg-0abc*",
            "prefix lists may be named wherever a security_group_id is taken: pl-0office*",
            "22, 8000-8100",
            "203.0.113.0/24",
            "IPv4 /24",
            "at most 8h",
            "expires after 8h",
            "at most 5 rules",
            "may also remove rules this service did not add",
            "read-only ([policy] read_only)",
            "profiles audit",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
        assert!(!text.contains("dry_run"), "a read-only server offers no changing tool: {text}");
    }
}
