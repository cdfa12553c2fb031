use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn change(
    action: Action,
    cidr: &str,
    protocol: Protocol,
    ports: Ports,
    duration: Option<Duration>,
) -> ProposedChange {
    ProposedChange {
        action,
        group_id: "sg-0abc1234".into(),
        cidr: cidr.parse().unwrap(),
        protocol,
        ports,
        duration,
        expires: None,
        rule_ids: Vec::new(),
        details: String::new(),
        account: "profile - region -".into(),
        requested_by: "jwt:alice".into(),
        source: None,
    }
}

fn ssh(cidr: &str) -> ProposedChange {
    change(Action::Add, cidr, Protocol::Tcp, Ports::single(22), Some(Duration::from_secs(3600)))
}

#[test]
fn the_default_needs_no_consent_and_says_nothing() {
    let rules = ConsentRules::default();
    assert!(rules.is_off());
    assert!(rules.needs(&ssh("0.0.0.0/0")).is_empty());
    assert_eq!(rules.summary(), None);
}

#[test]
fn each_rule_matches_what_it_names_and_nothing_else() {
    let port = ConsentRules { ports: vec![22, 3389], ..ConsentRules::default() };
    assert_eq!(port.needs(&ssh("203.0.113.7/32")).len(), 1);
    let https = change(Action::Add, "203.0.113.7/32", Protocol::Tcp, Ports::single(443), None);
    assert!(port.needs(&https).is_empty());
    let range = change(Action::Add, "203.0.113.7/32", Protocol::Tcp, Ports { from: 3000, to: 4000 }, None);
    assert!(!port.needs(&range).is_empty(), "a range holding 3389");
    let all = change(Action::Add, "203.0.113.7/32", Protocol::All, Ports::ANY, None);
    assert!(!port.needs(&all).is_empty(), "protocol all opens every port");
    let icmp = change(Action::Add, "203.0.113.7/32", Protocol::Icmp, Ports::ANY, None);
    assert!(port.needs(&icmp).is_empty(), "icmp has no ports");

    let wide = ConsentRules { wider_than_v4: Some(24), wider_than_v6: Some(64), ..ConsentRules::default() };
    assert!(wide.needs(&ssh("203.0.113.0/24")).is_empty(), "/24 is not wider than /24");
    assert!(wide.needs(&ssh("203.0.112.0/23"))[0].contains("wider_than_v4"));
    assert!(wide.needs(&ssh("2001:db8::/64")).is_empty());
    assert!(wide.needs(&ssh("2001:db8::/56"))[0].contains("wider_than_v6"));

    let long = ConsentRules { longer_than: Some(Duration::from_secs(8 * 3600)), ..ConsentRules::default() };
    assert!(long.needs(&ssh("203.0.113.7/32")).is_empty());
    let day = change(
        Action::Add,
        "203.0.113.7/32",
        Protocol::Tcp,
        Ports::single(22),
        Some(Duration::from_secs(86_400)),
    );
    assert_eq!(long.needs(&day).len(), 1);
    let forever = change(Action::Add, "203.0.113.7/32", Protocol::Tcp, Ports::single(22), None);
    assert!(long.needs(&forever)[0].contains("permanent"));
    let remove = change(Action::Remove, "203.0.113.7/32", Protocol::Tcp, Ports::single(22), None);
    assert!(long.needs(&remove).is_empty(), "a removal has no duration");

    let removes = ConsentRules { removes: true, ..ConsentRules::default() };
    assert_eq!(removes.needs(&remove).len(), 1);
    assert!(removes.needs(&ssh("203.0.113.7/32")).is_empty());

    let groups = ConsentRules { groups: vec!["sg-0abc*".into()], ..ConsentRules::default() };
    assert_eq!(groups.needs(&ssh("203.0.113.7/32")).len(), 1);
    let other = ProposedChange { group_id: "sg-99999999".into(), ..ssh("203.0.113.7/32") };
    assert!(groups.needs(&other).is_empty());

    let always = ConsentRules { always: true, ..ConsentRules::default() };
    assert_eq!(always.needs(&remove).len(), 1);
}

#[test]
fn summaries_name_what_needs_a_person() {
    let port = ConsentRules { ports: vec![22], ..ConsentRules::default() };
    let text = port.summary().unwrap();
    assert!(text.contains("port 22") && text.contains("consent"), "{text}");
    let many = ConsentRules {
        ports: vec![22, 3389],
        removes: true,
        wider_than_v4: Some(24),
        ..ConsentRules::default()
    };
    let text = many.summary().unwrap();
    assert!(text.contains("ports 22, 3389") && text.contains("removing") && text.contains("/24"), "{text}");
    assert!(ConsentRules { always: true, ..ConsentRules::default() }
        .summary()
        .unwrap()
        .starts_with("Every change"));
}

#[test]
fn the_digest_binds_every_part_of_the_change_but_not_the_moment() {
    let base = ssh("203.0.113.7/32");
    let moved = ProposedChange { expires: Some(SystemTime::now()), ..base.clone() };
    assert_eq!(base.digest(), moved.digest(), "the expiry instant moves between question and retry");
    let variants = [
        ProposedChange { action: Action::Remove, ..base.clone() },
        ProposedChange { group_id: "sg-0abc1235".into(), ..base.clone() },
        ProposedChange { cidr: "203.0.113.8/32".parse().unwrap(), ..base.clone() },
        ProposedChange { protocol: Protocol::Udp, ..base.clone() },
        ProposedChange { ports: Ports::single(23), ..base.clone() },
        ProposedChange { duration: Some(Duration::from_secs(7200)), ..base.clone() },
        ProposedChange { duration: None, ..base.clone() },
        ProposedChange { rule_ids: vec!["sgr-1".into()], ..base.clone() },
        ProposedChange { details: "other reason".into(), ..base.clone() },
        ProposedChange { account: "profile prod region -".into(), ..base.clone() },
    ];
    for v in variants {
        assert_ne!(base.digest(), v.digest(), "{v:?}");
    }
}

#[test]
fn the_description_shows_the_exact_change() {
    let text = ssh("203.0.113.7/32").describe();
    for part in ["ALLOW tcp port 22 from 203.0.113.7/32", "sg-0abc1234", "expires after 1h", "jwt:alice"] {
        assert!(text.contains(part), "{part}: {text}");
    }
    let forever = change(Action::Add, "203.0.113.7/32", Protocol::Tcp, Ports::single(22), None).describe();
    assert!(forever.contains("permanent"), "{forever}");
}

#[tokio::test(flavor = "current_thread")]
async fn nobody_to_ask_refuses_naming_the_setting() {
    let reasons = vec!["changes to port 22 need consent (ports)".to_string()];
    let stop = NobodyToAsk.ask(&ssh("203.0.113.7/32"), &reasons).await.unwrap_err();
    let text = stop.to_string();
    assert!(
        text.contains("[policy.consent]") && text.contains("port 22") && text.contains("consent is required"),
        "{text}"
    );
}

proptest! {
    /// A port rule matches exactly when the rule's range holds a named port (tcp/udp).
    #[test]
    fn port_rules_match_exactly_the_ranges_that_hold_them(
        named in proptest::collection::vec(1u16..=65535, 1..4),
        from in 1i32..=65535,
        len in 0i32..2000,
        udp in any::<bool>(),
    ) {
        let to = (from + len).min(65535);
        let rules = ConsentRules { ports: named.clone(), ..ConsentRules::default() };
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        let c = change(Action::Add, "203.0.113.7/32", protocol, Ports { from, to }, Some(Duration::from_secs(60)));
        let expected = named.iter().any(|p| from <= i32::from(*p) && i32::from(*p) <= to);
        prop_assert_eq!(!rules.needs(&c).is_empty(), expected);
    }

    /// A prefix rule matches exactly the networks shorter than its prefix.
    #[test]
    fn prefix_rules_match_exactly_the_wider_networks(n in 1u8..=32, len in 0u8..=32) {
        let rules = ConsentRules { wider_than_v4: Some(n), ..ConsentRules::default() };
        let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(203, 0, 113, 7), len).unwrap().trunc();
        let c = ProposedChange { cidr: IpNet::V4(net), ..ssh("203.0.113.7/32") };
        prop_assert_eq!(!rules.needs(&c).is_empty(), len < n);
    }

    /// Adding a rule to the set never removes a reason (rules only add up).
    #[test]
    fn more_rules_never_need_less(removes in any::<bool>(), port in 1u16..100, hours in 1u64..48) {
        let c = change(Action::Add, "203.0.113.0/24", Protocol::Tcp, Ports { from: 1, to: 99 }, Some(Duration::from_secs(hours * 3600)));
        let few = ConsentRules { removes, ..ConsentRules::default() };
        let more = ConsentRules { removes, ports: vec![port], longer_than: Some(Duration::from_secs(12 * 3600)), ..ConsentRules::default() };
        prop_assert!(more.needs(&c).len() >= few.needs(&c).len());
        prop_assert!(!more.needs(&c).is_empty(), "port {} lies in 1-99", port);
    }
}
