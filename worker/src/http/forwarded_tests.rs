use super::*;
use hyper::header::HeaderValue;

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in list {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Case {
    name: &'static str,
    trusted: &'static [&'static str],
    peer: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    want: Option<&'static str>,
}

const NGINX: &[&str] = &["127.0.0.1", "10.0.0.0/8"];

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "no proxies trusted, forged XFF ignored", trusted: &[], peer: Some("203.0.113.7"),
        headers: &[("x-forwarded-for", "198.51.100.1")], want: Some("203.0.113.7") },
    Case { name: "untrusted peer, forged XFF/Forwarded/X-Real-IP ignored", trusted: NGINX,
        peer: Some("203.0.113.7"),
        headers: &[("x-forwarded-for", "198.51.100.1"), ("forwarded", "for=198.51.100.2"),
                   ("x-real-ip", "198.51.100.3")],
        want: Some("203.0.113.7") },
    Case { name: "trusted peer without headers is the client", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[], want: Some("127.0.0.1") },
    Case { name: "trusted nginx with XFF", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "198.51.100.9")], want: Some("198.51.100.9") },
    Case { name: "multi-hop: trusted hops skipped from the right", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "198.51.100.9, 10.1.2.3, 10.0.0.1")], want: Some("198.51.100.9") },
    Case { name: "spoofed left entries ignored", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "1.1.1.1, 8.8.8.8, 198.51.100.9")], want: Some("198.51.100.9") },
    Case { name: "whole chain trusted: leftmost", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "10.9.9.9, 10.0.0.1")], want: Some("10.9.9.9") },
    Case { name: "several XFF headers are one list, in order", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "1.1.1.1, 198.51.100.9"), ("x-forwarded-for", "10.0.0.2")],
        want: Some("198.51.100.9") },
    Case { name: "XFF garbage at the right: the peer's view", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "198.51.100.9, not-an-ip")], want: Some("127.0.0.1") },
    Case { name: "XFF garbage behind a trusted hop: that hop", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "198.51.100.9, 999.1.1.1, 10.0.0.5")], want: Some("10.0.0.5") },
    Case { name: "XFF garbage left of the client is irrelevant", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "<script>, 198.51.100.9")], want: Some("198.51.100.9") },
    Case { name: "XFF empty elements and ports", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "198.51.100.9:5555, , [2001:db8::5]:443")], want: Some("2001:db8::5") },
    Case { name: "XFF unknown stops the walk", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("x-forwarded-for", "198.51.100.9, unknown")], want: Some("127.0.0.1") },
    Case { name: "X-Real-IP from a trusted peer", trusted: NGINX, peer: Some("10.0.0.1"),
        headers: &[("x-real-ip", "198.51.100.4")], want: Some("198.51.100.4") },
    Case { name: "X-Real-IP garbage: the peer", trusted: NGINX, peer: Some("10.0.0.1"),
        headers: &[("x-real-ip", "localhost")], want: Some("10.0.0.1") },
    Case { name: "Forwarded with quoted IPv6 and port", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", r#"for="[2001:db8:cafe::17]:4711";proto=https"#)],
        want: Some("2001:db8:cafe::17") },
    Case { name: "Forwarded RFC 7239 example list", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", "for=192.0.2.43, for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com")],
        want: Some("198.51.100.17") },
    Case { name: "Forwarded IPv4 with port, case-insensitive name, trusted hop skipped",
        trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", r#"For="192.0.2.60:8080", for=10.0.0.7"#)], want: Some("192.0.2.60") },
    Case { name: "Forwarded obfuscated client: the nearest proxy", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", "for=198.51.100.1, for=_hidden, for=10.0.0.3")], want: Some("10.0.0.3") },
    Case { name: "Forwarded obfuscated port is fine", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", r#"for="198.51.100.17:_gazonk""#)], want: Some("198.51.100.17") },
    Case { name: "Forwarded unknown: the peer", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", "for=198.51.100.1, for=unknown")], want: Some("127.0.0.1") },
    Case { name: "Forwarded element without for= stops", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", "for=198.51.100.1, proto=https")], want: Some("127.0.0.1") },
    Case { name: "Forwarded unterminated quote is garbage", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", r#"for="198.51.100.1"#)], want: Some("127.0.0.1") },
    Case { name: "Forwarded duplicate for= is garbage", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", "for=198.51.100.1;for=198.51.100.2")], want: Some("127.0.0.1") },
    Case { name: "Forwarded comma inside a quoted value", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", r#"for=198.51.100.1;host="a,b", for=10.0.0.9"#)], want: Some("198.51.100.1") },
    Case { name: "several Forwarded headers", trusted: NGINX, peer: Some("127.0.0.1"),
        headers: &[("forwarded", "for=198.51.100.1"), ("forwarded", "for=10.0.0.4")],
        want: Some("198.51.100.1") },
    Case { name: "IPv4-mapped peer and entries folded", trusted: &["10.0.0.0/8"], peer: Some("::ffff:10.0.0.1"),
        headers: &[("x-forwarded-for", "::ffff:198.51.100.9, ::ffff:10.2.2.2")], want: Some("198.51.100.9") },
    Case { name: "IPv4-mapped allow-list entry matches an IPv4 peer", trusted: &["::ffff:127.0.0.1"],
        peer: Some("127.0.0.1"), headers: &[("x-forwarded-for", "198.51.100.9")], want: Some("198.51.100.9") },
    Case { name: "IPv6 proxy CIDR", trusted: &["fd00::/8"], peer: Some("fd00::1"),
        headers: &[("x-forwarded-for", "2001:db8::42, fd00::2")], want: Some("2001:db8::42") },
    Case { name: "untrusted peer is folded too", trusted: &[], peer: Some("::ffff:203.0.113.7"),
        headers: &[], want: Some("203.0.113.7") },
    Case { name: "unix peer untrusted: no address, headers ignored", trusted: NGINX, peer: None,
        headers: &[("x-forwarded-for", "198.51.100.9")], want: None },
    Case { name: "unix peer trusted with \"unix\"", trusted: &["unix"], peer: None,
        headers: &[("x-forwarded-for", "198.51.100.9")], want: Some("198.51.100.9") },
    Case { name: "unix peer trusted, garbage: no address", trusted: &["unix"], peer: None,
        headers: &[("x-forwarded-for", "garbage")], want: None },
    Case { name: "star trusts every IP peer", trusted: &["*"], peer: Some("203.0.113.7"),
        headers: &[("x-forwarded-for", "198.51.100.9")], want: Some("198.51.100.9") },
];

#[test]
fn table() {
    assert!(CASES.len() >= 15);
    let mut failures = Vec::new();
    for case in CASES {
        // Each case is about one header: the source is set to it (X-Forwarded-For when the
        // case has several, as it is the default).
        let has = |name: &str| case.headers.iter().any(|(n, _)| *n == name);
        let source = match () {
            _ if has("x-forwarded-for") => Source::XForwardedFor,
            _ if has("forwarded") => Source::Forwarded,
            _ if has("x-real-ip") => Source::XRealIp,
            _ => Source::default(),
        };
        let proxies = TrustedProxies::parse(case.trusted).unwrap().with_source(source);
        let got = proxies.client_addr(case.peer.map(ip), &headers(case.headers));
        if got != case.want.map(ip) {
            failures.push(format!("{}: got {got:?}, want {:?}", case.name, case.want));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn non_ascii_header_value_is_garbage() {
    let proxies = TrustedProxies::parse(NGINX).unwrap();
    let mut map = HeaderMap::new();
    map.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("198.51.100.1"));
    map.append(X_FORWARDED_FOR.clone(), HeaderValue::from_bytes(b"\xff\xfe").unwrap());
    assert_eq!(proxies.client_addr(Some(ip("127.0.0.1")), &map), Some(ip("127.0.0.1")));
}

#[test]
fn by_default_x_forwarded_for_is_believed_and_forwarded_is_not() {
    // A proxy that appends to X-Forwarded-For passes a client's own `Forwarded` through.
    let h = headers(&[("forwarded", "for=198.51.100.1"), ("x-forwarded-for", "198.51.100.2")]);
    let proxies = TrustedProxies::parse(NGINX).unwrap();
    assert_eq!(proxies.client_addr(Some(ip("127.0.0.1")), &h), Some(ip("198.51.100.2")));
    let only_forwarded = headers(&[("forwarded", "for=198.51.100.1")]);
    assert_eq!(proxies.client_addr(Some(ip("127.0.0.1")), &only_forwarded), Some(ip("127.0.0.1")));
}

#[test]
fn pinned_source_ignores_the_others() {
    let h = headers(&[("forwarded", "for=198.51.100.1"), ("x-forwarded-for", "198.51.100.2")]);
    let peer = Some(ip("127.0.0.1"));
    let xff = TrustedProxies::parse(NGINX).unwrap().with_source(Source::XForwardedFor);
    assert_eq!(xff.client_addr(peer, &h), Some(ip("198.51.100.2")));
    let real = TrustedProxies::parse(NGINX).unwrap().with_source(Source::XRealIp);
    assert_eq!(real.client_addr(peer, &h), peer);
}

#[test]
fn parse_rejects_garbage_and_builds_flags() {
    assert_eq!(TrustedProxies::parse(["10.0.0.0/33"]), Err(InvalidEntry("10.0.0.0/33".into())));
    assert!(TrustedProxies::parse(["nginx.local"]).is_err());
    let p = TrustedProxies::parse([" UNIX ", "192.168.1.7/16"]).unwrap();
    assert!(p.trusts_unix());
    assert!(p.is_trusted(ip("192.168.200.1")));
    assert!(!p.is_trusted(ip("192.169.0.1")));
    assert!(TrustedProxies::none().is_empty());
    assert!(!TrustedProxies::new(vec!["::1/128".parse().unwrap()]).trusts_unix());
    assert!(TrustedProxies::parse(Vec::<String>::new()).unwrap().is_empty());
}

#[test]
fn forwarded_node_forms() {
    assert_eq!(forwarded_node("192.0.2.1"), Hop::Addr(ip("192.0.2.1")));
    assert_eq!(forwarded_node("[2001:db8::1]"), Hop::Addr(ip("2001:db8::1")));
    assert_eq!(forwarded_node("2001:db8::1"), Hop::Addr(ip("2001:db8::1")));
    assert_eq!(forwarded_node("[2001:db8::1]:80"), Hop::Addr(ip("2001:db8::1")));
    assert_eq!(forwarded_node("_abc-1.x"), Hop::Opaque);
    assert_eq!(forwarded_node("_abc:_p"), Hop::Opaque);
    assert_eq!(forwarded_node("UNKNOWN"), Hop::Opaque);
    assert_eq!(forwarded_node("_"), Hop::Malformed);
    assert_eq!(forwarded_node("192.0.2.1:99999"), Hop::Malformed);
    assert_eq!(forwarded_node("[2001:db8::1"), Hop::Malformed);
    assert_eq!(forwarded_node("[192.0.2.1]"), Hop::Malformed);
    assert_eq!(forwarded_node("example.com"), Hop::Malformed);
    assert_eq!(forwarded_element(r#"for="\"x\"""#), Hop::Malformed);
    assert_eq!(forwarded_element("for"), Hop::Malformed);
    assert_eq!(forwarded_element("for=192.0.2.1 junk"), Hop::Malformed);
}
