//! The standing bad-input campaign (issue 10), part one: property tests on what a client or a
//! proxy controls, one layer at a time — tool-argument parsers (addresses, CIDRs, ports, port
//! names, protocols, durations, descriptions and templates, group ids), the expiry marker, the
//! JSON-RPC front end, the forwarded headers and the JWT/API-key front end. The properties:
//! nothing panics, every refusal names what it refuses, and what is accepted is well-formed.
//! `prop_tools.rs` drives the tools themselves through a dispatcher on a fake firewall.
//!
//! Reproducing a failure: no regression files are written (`failure_persistence` is off, since
//! CI runs in a fresh clone); instead every property prints the seed it ran with, and proptest
//! prints the minimal failing input. Rerun one property with that seed:
//! `PROPTEST_RNG_SEED=<seed> cargo test -p worker --test properties <name>`.
//! Case counts keep the whole campaign well under a minute in a debug build on two cores.

mod prop_support;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::{json, Value};

use prop_support::{config, hostile_text, json_value, runtime};
use worker::auth::{AuthSettings, Authenticator, Denial};
use worker::http::forwarded::{Source, TrustedProxies};
use worker::mcp::{parse_json, MAX_DEPTH};
use worker::whitelist::description::{check_template, parse_duration, render, rfc3339, Fill, MAX_LEN};
use worker::whitelist::policy::glob;
use worker::whitelist::service::check_group_id;
use worker::whitelist::target::{parse_cidr, parse_ports, Protocol};

/// Punctuation EC2 accepts in a description (mirrors the domain's list; a description the
/// service renders must stay inside it whatever it was given).
const EC2_PUNCTUATION: &str = "._-:/()#,@[]+=&;{}!$*";

/// Address-shaped text: digits, hex, separators, prefixes, zones and near misses.
fn addressish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}(\\.[0-9]{1,4}){0,4}(/[0-9+-]{0,4})?",
        "[0-9a-fA-F:]{0,40}(/[0-9]{0,4})?(%[a-z0-9]{0,5})?",
        (any::<IpAddr>(), any::<u8>()).prop_map(|(ip, len)| format!("{ip}/{len}")),
        any::<IpAddr>().prop_map(|ip| ip.to_string()),
        hostile_text(),
    ]
}

proptest! {
    #![proptest_config(config(2_048))]

    #[test]
    fn cidrs_parse_to_networks_or_an_error_quoting_the_value(s in addressish()) {
        match parse_cidr(&s) {
            Ok(net) => {
                prop_assert_eq!(net.trunc(), net, "host bits accepted for {:?}", s);
                if !s.contains('/') {
                    prop_assert_eq!(net.prefix_len(), net.max_prefix_len(), "an address is one host: {:?}", s);
                }
            }
            Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{e:?} does not quote {s:?}"),
        }
    }

    #[test]
    fn ports_are_inside_1_to_65535_or_refused_by_name(
        s in prop_oneof![
            "[0-9 -]{0,12}",
            "-?[0-9]{1,12}(-[0-9]{0,12})?",
            "[a-zA-Z-]{0,12}",
            hostile_text(),
        ]
    ) {
        match parse_ports(&s, &[]) {
            Ok(p) => prop_assert!(1 <= p.from && p.from <= p.to && p.to <= 65_535, "{s:?} gave {p:?}"),
            Err(e) => prop_assert!(e.contains("port") && e.contains(&format!("{s:?}")), "{e:?}"),
        }
    }

    #[test]
    fn protocols_are_the_four_or_refused_by_name(s in prop_oneof!["[a-zA-Z0-9 -]{0,8}", hostile_text()]) {
        match Protocol::parse(&s) {
            Ok(p) => prop_assert!(matches!(p, Protocol::Tcp | Protocol::Udp | Protocol::Icmp | Protocol::All)),
            Err(e) => prop_assert!(e.contains("protocol") && e.contains(&format!("{s:?}")), "{e:?}"),
        }
    }

    #[test]
    fn durations_are_at_least_a_second_or_refused_by_name(
        s in prop_oneof![
            "[0-9]{0,25}(ns|us|ms|s|m|h|d|w|y|M)?",
            "-?[0-9]{1,6} ?[a-z]{0,6}",
            hostile_text(),
        ]
    ) {
        match parse_duration(&s) {
            Ok(d) => prop_assert!(d >= Duration::from_secs(1), "{s:?} gave {d:?}"),
            Err(e) => prop_assert!(e.contains("duration") && e.contains(&format!("{s:?}")), "{e:?}"),
        }
    }

    #[test]
    fn group_ids_are_sg_and_8_or_17_lower_hex_or_refused_by_name(
        s in prop_oneof!["(sg-)?[0-9a-fA-Fg-z*?]{0,20}", hostile_text()]
    ) {
        match check_group_id(&s) {
            Ok(g) => {
                let hex = g.strip_prefix("sg-").unwrap_or("");
                prop_assert!(
                    (hex.len() == 8 || hex.len() == 17)
                        && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                    "{s:?} accepted as {g:?}"
                );
            }
            Err(e) => prop_assert!(e.to_string().contains("security_group_id"), "{e}"),
        }
    }

    #[test]
    fn rendered_descriptions_are_what_ec2_accepts_and_end_in_a_marker_that_reads_back(
        template in prop_oneof![
            "[ -~]{0,60}",
            "(\\{(date|user|reason|expires|nope|DATE)\\}|[a-z ]{0,6}|\\{|\\}){0,8}",
            hostile_text(),
        ],
        user in prop_oneof!["[a-zA-Z0-9 .@-]{0,20}", hostile_text()],
        reason in prop_oneof!["[a-zA-Z0-9 ]{0,120}", hostile_text()],
        secs in 0u64..(10 * 365 * 86_400),
        expiring in any::<bool>(),
    ) {
        let now = SystemTime::now();
        let expires = expiring.then(|| now + Duration::from_secs(secs));
        let fill = Fill { user: &user, reason: &reason, now, expires };
        let key = test_marker_key();
        let spec = ssh_spec();
        match render(&template, &fill, &key.marker(&spec, expires)) {
            Ok(d) => {
                prop_assert!(check_template(&template).is_ok());
                prop_assert!(d.chars().count() <= MAX_LEN, "{} characters", d.len());
                prop_assert!(
                    d.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || EC2_PUNCTUATION.contains(c)),
                    "{d:?} has a character EC2 refuses"
                );
                let marker = key.read(&d, Some(&spec));
                prop_assert!(marker.managed(), "{d:?} lost its marker");
                let read = marker.expires().map(rfc3339);
                prop_assert_eq!(read, expires.map(rfc3339), "the marker's expiry in {:?}", d);
            }
            Err(e) => prop_assert!(
                ["description", "user", "reason", "255"].iter().any(|w| e.contains(w)),
                "{e:?} names no argument"
            ),
        }
    }

    #[test]
    fn markers_are_read_only_at_the_end_and_never_panic(
        prefix in hostile_text(),
        inner in prop_oneof![
            Just(String::new()),
            "exp=[0-9T:Z-]{0,25}",
            " exp=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
            hostile_text(),
        ],
        suffix in prop_oneof![Just(String::new()), Just("]".to_string()), hostile_text()],
    ) {
        let d = format!("{prefix}[awswl{inner}{suffix}");
        let key = test_marker_key();
        // Text nobody signed never reads as this service's rule, and reading it never panics.
        prop_assert!(!key.read(&d, Some(&ssh_spec())).managed(), "{d:?}");
        prop_assert!(!key.read(&d, None).managed(), "{d:?}");
        prop_assert!(!key.read(&prefix, None).managed(), "{prefix:?}");
    }

}

proptest! {
    #![proptest_config(config(2_048))]

    /// Found by this campaign: a `*` in the pattern was first compared literally, so `"*"` did
    /// not match a text that starts with `*` (`glob("*", "*a")` was false).
    #[test]
    fn a_star_matches_any_text_and_globs_never_panic(pattern in "[a-z0-9*?-]{0,12}", text in hostile_text()) {
        let _ = glob(&pattern, &text);
        prop_assert!(glob("*", &text), "* does not match {:?}", text);
        let prefix = format!("{text}*");
        prop_assert!(glob(&prefix, &text) || text.contains(['*', '?']), "{:?} does not match itself", prefix);
        let literal = text.replace(['*', '?'], "");
        prop_assert!(glob(&literal, &literal));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC: the body parser.

proptest! {
    #![proptest_config(config(2_048))]

    #[test]
    fn any_bytes_parse_or_give_a_parse_error_response(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = parse_json(&bytes) {
            let r = e.to_response();
            prop_assert_eq!(&r["jsonrpc"], "2.0");
            prop_assert_eq!(&r["error"]["code"], -32700);
            prop_assert!(r["id"].is_null());
        }
    }

    #[test]
    fn nesting_is_bounded_without_overflowing_the_stack(depth in 0usize..20_000, object in any::<bool>()) {
        let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
        let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let parsed = parse_json(text.as_bytes());
        prop_assert_eq!(parsed.is_ok(), depth <= MAX_DEPTH, "depth {}", depth);
    }

    #[test]
    fn any_json_text_parses_the_way_serde_does_or_is_refused(v in json_value()) {
        let text = v.to_string();
        match parse_json(text.as_bytes()) {
            Ok(back) => prop_assert_eq!(back, v),
            Err(e) => prop_assert!(e.to_string().contains("deeper"), "{e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarded headers.

/// A value one hop might write: an address (v4, v6, mapped, with port or brackets), `unknown`,
/// an obfuscated id, or junk.
fn hop() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        1 => any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
        1 => any::<std::net::Ipv4Addr>().prop_map(|a| format!("::ffff:{a}")),
        1 => (any::<std::net::Ipv6Addr>(), any::<u16>()).prop_map(|(a, p)| format!("[{a}]:{p}")),
        1 => Just("unknown".to_string()),
        1 => "_[a-z]{1,6}",
        1 => "[ -~]{0,12}",
    ]
}

fn forwarded_element(h: String) -> String {
    let quoted = h.contains(':') || h.contains('[');
    if quoted {
        format!("for=\"{h}\"")
    } else {
        format!("for={h}")
    }
}

/// A few well-known networks, so trusted peers and hops actually meet.
fn trusted_nets() -> impl Strategy<Value = Vec<IpNet>> {
    prop::collection::vec(
        prop_oneof![
            Just("10.0.0.0/8"),
            Just("127.0.0.0/8"),
            Just("192.168.0.0/16"),
            Just("::1/128"),
            Just("fd00::/8"),
            Just("0.0.0.0/0"),
        ]
        .prop_map(|s| s.parse::<IpNet>().expect("valid CIDR")),
        0..3,
    )
}

fn peer() -> impl Strategy<Value = Option<IpAddr>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            Just("10.1.2.3".parse::<IpAddr>().expect("address")),
            Just("127.0.0.1".parse::<IpAddr>().expect("address")),
            Just("::ffff:10.9.9.9".parse::<IpAddr>().expect("address")),
            any::<IpAddr>(),
        ],
    )
}

fn fold(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

proptest! {
    #![proptest_config(config(2_048))]

    #[test]
    fn a_forwarded_client_is_the_peer_or_an_address_some_hop_wrote(
        nets in trusted_nets(),
        unix in any::<bool>(),
        source in prop_oneof![Just(Source::Forwarded), Just(Source::XForwardedFor), Just(Source::XRealIp)],
        peer in peer(),
        xff in prop::collection::vec(hop(), 0..5),
        fwd in prop::collection::vec(hop(), 0..5),
        real in prop::option::of(hop()),
        junk in prop::collection::vec((prop_oneof![Just("forwarded"), Just("x-forwarded-for"), Just("x-real-ip")], "[ -~]{0,40}"), 0..3),
    ) {
        let proxies = TrustedProxies::new(nets).with_unix(unix).with_source(source);
        let mut headers = HeaderMap::new();
        let mut add = |name: &str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.append(HeaderName::from_bytes(name.as_bytes()).expect("header name"), v);
            }
        };
        if !xff.is_empty() {
            add("x-forwarded-for", xff.join(", "));
        }
        if !fwd.is_empty() {
            add("forwarded", fwd.iter().cloned().map(forwarded_element).collect::<Vec<_>>().join(", "));
        }
        if let Some(r) = &real {
            add("x-real-ip", r.clone());
        }
        for (name, value) in &junk {
            add(name, value.clone());
        }
        let client = proxies.client_addr(peer, &headers);
        let trusted = match peer {
            Some(p) => proxies.is_trusted(p),
            None => unix,
        };
        if !trusted {
            prop_assert_eq!(client, peer.map(fold), "an untrusted peer is the client");
            return Ok(());
        }
        if let Some(c) = client {
            // Whatever was chosen was written by someone: the peer or a header.
            let written: String = headers.values().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(" ");
            let shown = [c.to_string(), format!("::ffff:{c}")];
            prop_assert!(
                Some(c) == peer.map(fold) || shown.iter().any(|s| written.contains(s.as_str())),
                "{c} came from nowhere ({written:?})"
            );
        }
        prop_assert!(client.is_some() || peer.is_none(), "a TCP peer always has an answer");
    }

    #[test]
    fn a_plain_x_forwarded_for_chain_is_read_from_the_right(
        peer in Just("10.0.0.1".parse::<IpAddr>().expect("address")),
        chain in prop::collection::vec(
            prop_oneof![
                Just("10.2.3.4".parse::<IpAddr>().expect("address")),
                any::<std::net::Ipv4Addr>().prop_map(IpAddr::V4),
            ],
            0..6,
        ),
    ) {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("CIDR")])
            .with_source(Source::XForwardedFor);
        let mut headers = HeaderMap::new();
        if !chain.is_empty() {
            let text = chain.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
            headers.insert("x-forwarded-for", HeaderValue::from_str(&text).expect("ascii"));
        }
        let expected = chain.iter().rev().find(|a| !proxies.is_trusted(**a)).copied()
            .or_else(|| chain.first().copied())
            .unwrap_or(peer);
        prop_assert_eq!(proxies.client_addr(Some(peer), &headers), Some(expected));
    }
}

// ---------------------------------------------------------------------------------------------
// The JWT / API-key front end.

const ISS: &str = "https://issuer.example";
const AUD: &str = "https://mcp.example.com/mcp";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-prop-secret";

fn authenticator() -> &'static (Authenticator, tempfile::TempDir) {
    static AUTH: std::sync::OnceLock<(Authenticator, tempfile::TempDir)> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, SECRET).expect("secret file");
        let settings = AuthSettings {
            enabled: true,
            issuer: Some(ISS.into()),
            audience: vec![AUD.into()],
            hs_secret_file: Some(path),
            ..AuthSettings::default()
        };
        (Authenticator::load(&settings).expect("auth settings"), dir)
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(message: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET);
    b64(aws_lc_rs::hmac::sign(&key, message.as_bytes()).as_ref())
}

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A claim value that is sometimes right, sometimes wrong, sometimes the wrong type.
fn claim(right: Value) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.85, prop_oneof![3 => Just(right), 1 => json_value()])
}

fn time_claim(offset: std::ops::Range<i64>) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.85,
        prop_oneof![
            3 => offset.prop_map(|o| json!(now() + o)),
            1 => any::<i64>().prop_map(|n| json!(n)),
            1 => any::<f64>().prop_map(|f| json!(f)),
            1 => json_value(),
        ],
    )
}

fn header() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!({"alg": "HS256", "typ": "JWT"})),
        1 => prop_oneof![
            Just("none"), Just("HS384"), Just("hs256"), Just("RS256"), Just("ES256"), Just("EdDSA"), Just("")
        ].prop_map(|alg| json!({"alg": alg})),
        1 => json_value().prop_map(|kid| json!({"alg": "HS256", "kid": kid})),
        1 => json_value().prop_map(|crit| json!({"alg": "HS256", "crit": crit})),
        1 => json_value(),
    ]
}

proptest! {
    #![proptest_config(config(768))]

    #[test]
    fn any_authorization_header_is_refused_with_a_denial(
        value in prop_oneof![
            hostile_text(),
            "Bearer [ -~]{0,80}",
            "(Bearer|bearer|Basic|Bearer  ) [A-Za-z0-9_-]{0,30}\\.[A-Za-z0-9_-]{0,30}\\.[A-Za-z0-9_-]{0,30}",
            "Bearer awsk_[A-Za-z0-9_-]{0,60}",
            (json_value(), json_value(), "[A-Za-z0-9_-]{0,50}")
                .prop_map(|(h, c, s)| format!("Bearer {}.{}.{s}", b64(h.to_string().as_bytes()), b64(c.to_string().as_bytes()))),
        ]
    ) {
        let (auth, _) = authenticator();
        let outcome = runtime().block_on(auth.authenticate(Some(&value)));
        match outcome {
            Ok(p) => prop_assert!(false, "{value:?} authenticated as {p:?}"),
            Err(d) => {
                prop_assert!(matches!(d, Denial::Missing | Denial::InvalidToken(_)), "{d:?}");
                prop_assert!(!d.to_string().is_empty());
                prop_assert!(value.len() < 12 || !d.to_string().contains(value.trim()), "the credential is echoed");
            }
        }
    }

    #[test]
    fn a_signed_token_passes_only_when_its_claims_say_it_may(
        header in header(),
        iss in claim(json!(ISS)),
        aud in claim(json!(AUD)),
        exp in time_claim(-3_600..3_600),
        nbf in time_claim(-3_600..3_600),
        sub in claim(json!("alice")),
        scope in claim(json!("whitelist:read whitelist:write")),
        extra in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..3),
    ) {
        let mut claims = serde_json::Map::new();
        for (k, v) in extra {
            claims.insert(k, v);
        }
        for (k, v) in [("iss", iss), ("aud", aud), ("exp", exp), ("nbf", nbf), ("sub", sub), ("scope", scope)] {
            if let Some(v) = v {
                claims.insert(k.into(), v);
            }
        }
        let claims = Value::Object(claims);
        let unsigned = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let token = format!("{unsigned}.{}", hs256(&unsigned));
        let (auth, _) = authenticator();
        match runtime().block_on(auth.authenticate(Some(&format!("Bearer {token}")))) {
            Ok(_) => {
                prop_assert_eq!(&header["alg"], "HS256", "accepted with header {}", header);
                prop_assert_eq!(&claims["iss"], ISS, "accepted {}", claims);
                let aud_ok = claims["aud"] == AUD
                    || claims["aud"].as_array().is_some_and(|a| a.iter().any(|x| x == AUD));
                prop_assert!(aud_ok, "accepted {}", claims);
                let exp = claims["exp"].as_f64();
                prop_assert!(exp.is_some_and(|e| e > (now() - 60) as f64), "accepted {}", claims);
                if let Some(nbf) = claims.get("nbf") {
                    prop_assert!(nbf.as_f64().is_some_and(|n| n < (now() + 60) as f64), "accepted {}", claims);
                }
            }
            Err(d) => prop_assert!(matches!(d, Denial::InvalidToken(_)), "{d:?}"),
        }
    }
}

/// The marker key of these tests (a fixed test value, not a secret).
fn test_marker_key() -> worker::whitelist::MarkerKey {
    worker::whitelist::MarkerKey::new(&[7u8; 32]).expect("a 32-byte key")
}

/// A rule to sign markers for.
fn ssh_spec() -> worker::whitelist::RuleSpec {
    worker::whitelist::RuleSpec {
        group_id: "sg-0123456789abcdef0".into(),
        cidr: "198.51.100.7/32".parse().expect("a CIDR"),
        protocol: worker::whitelist::Protocol::Tcp,
        ports: worker::whitelist::Ports { from: 22, to: 22 },
    }
}
