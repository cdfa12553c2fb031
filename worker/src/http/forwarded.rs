//! Who the client is when the service sits behind proxies.
//!
//! Only a TCP peer listed in `forwarded_allow_ips` is believed when it says, through `Forwarded`
//! (RFC 7239), `X-Forwarded-For` or `X-Real-IP`, on whose behalf it connects; anyone else is the
//! client itself, whatever it wrote in those headers.
//!
//! Each proxy appends the address it saw to the right of the chain, so the chain is read from the
//! right: an address that is itself a trusted proxy only passes the question one hop further
//! left, and the first address that is not trusted is the client. Everything left of it was
//! written by that client or by hops nobody vouches for, and is never used. An entry that cannot
//! be vouched for — malformed, `unknown`, an obfuscated identifier (`_hidden`), a `Forwarded`
//! element without `for=` — ends the walk: the last address a trusted hop reported (the nearest
//! proxy's view) is the answer, never a value further left.
//!
//! Which header carries the chain is a setting (`forwarded_header`, [`Source`]), by default
//! `X-Forwarded-For`, and only that one is read: a proxy that appends to one header passes the
//! others through as the client sent them (AWS ALB and HAProxy pass `Forwarded` through), so
//! believing whichever header is present would let a client write its own address.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack socket reports for an IPv4
//! peer) are folded to IPv4 everywhere: peers, chain entries and the allow-list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hyper::header::{HeaderMap, HeaderName};
use ipnet::{IpNet, Ipv4Net};

/// The value of `forwarded_allow_ips` that stands for Unix-socket peers.
pub const UNIX: &str = "unix";

/// The one header a trusted proxy's chain is read from (`forwarded_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// `Forwarded` (RFC 7239).
    Forwarded,
    /// `X-Forwarded-For`: what nginx, AWS ALB and HAProxy append to.
    #[default]
    XForwardedFor,
    /// `X-Real-IP`.
    XRealIp,
}

impl Source {
    /// The values `forwarded_header` takes, as written in the file.
    pub const NAMES: [&'static str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

    /// The source named by a `forwarded_header` value (case-insensitive).
    pub fn from_name(name: &str) -> Option<Source> {
        match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(Source::XForwardedFor),
            "forwarded" => Some(Source::Forwarded),
            "x-real-ip" => Some(Source::XRealIp),
            _ => None,
        }
    }
}

/// An entry of `forwarded_allow_ips` that is neither an address, a CIDR, `*` nor `unix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("forwarded_allow_ips: {0:?} is neither an IP address, a CIDR, \"*\" nor \"unix\"")]
pub struct InvalidEntry(pub String);

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    trust_unix: bool,
    source: Source,
}

/// One hop of a forwarding chain, as written by the hop to its right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, or a `Forwarded` element without `for=`: a node that
    /// exists but whose address is not given.
    Opaque,
    /// Not parseable: whoever wrote it is not following the protocol.
    Malformed,
}

impl TrustedProxies {
    /// Trusts the TCP peers in `nets` (empty: nobody). Unix-socket peers are not trusted; see
    /// [`with_unix`](Self::with_unix).
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        let nets = nets.into_iter().map(fold_net).collect();
        TrustedProxies { nets, trust_unix: false, source: Source::default() }
    }

    /// Nobody is trusted: the TCP peer is always the client.
    pub fn none() -> TrustedProxies {
        TrustedProxies::default()
    }

    /// Parses `forwarded_allow_ips` entries: IP addresses, CIDRs, `*` (every IP peer) and `unix`
    /// (Unix-socket peers).
    pub fn parse<I, S>(entries: I) -> Result<TrustedProxies, InvalidEntry>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        let mut trust_unix = false;
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.eq_ignore_ascii_case(UNIX) {
                trust_unix = true;
            } else if entry == "*" {
                nets.push("0.0.0.0/0".parse().expect("valid CIDR"));
                nets.push("::/0".parse().expect("valid CIDR"));
            } else if let Ok(net) = entry.parse::<IpNet>() {
                nets.push(net.trunc());
            } else if let Ok(addr) = entry.parse::<IpAddr>() {
                nets.push(IpNet::from(addr));
            } else {
                return Err(InvalidEntry(entry.to_string()));
            }
        }
        Ok(TrustedProxies::new(nets).with_unix(trust_unix))
    }

    /// Whether a peer on a Unix socket (no address) is a trusted proxy.
    pub fn with_unix(mut self, trust_unix: bool) -> TrustedProxies {
        self.trust_unix = trust_unix;
        self
    }

    /// Reads the chain from this header (by default `X-Forwarded-For`).
    pub fn with_source(mut self, source: Source) -> TrustedProxies {
        self.source = source;
        self
    }

    /// Whether Unix-socket peers are trusted.
    pub fn trusts_unix(&self) -> bool {
        self.trust_unix
    }

    /// Whether nobody at all is trusted (the headers are never read).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.trust_unix
    }

    /// Whether `addr` is a trusted proxy.
    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = fold(addr);
        self.nets.iter().any(|net| net.contains(&addr))
    }

    /// Whether this TCP peer (`None`: a Unix-socket peer) is a trusted proxy, whose forwarding
    /// headers (the chain, `X-Forwarded-Proto`) are believed.
    pub fn trusts_peer(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            Some(addr) => self.is_trusted(addr),
            None => self.trust_unix,
        }
    }

    /// The client's address: `peer` (the TCP peer, `None` on a Unix socket) unless it is a trusted
    /// proxy, in which case the forwarding headers are followed as described in the module docs.
    /// `None` when no address is known (a Unix-socket peer whose headers name nobody).
    pub fn client_addr(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(fold);
        if !self.trusts_peer(peer) {
            return peer;
        }
        self.walk(peer, &self.chain(headers))
    }

    fn chain(&self, headers: &HeaderMap) -> Vec<Hop> {
        let forwarded = || forwarded_chain(headers);
        let xff = || list_chain(headers, &X_FORWARDED_FOR);
        let real_ip = || list_chain(headers, &X_REAL_IP);
        match self.source {
            Source::Forwarded => forwarded(),
            Source::XForwardedFor => xff(),
            Source::XRealIp => real_ip(),
        }
    }

    /// From the right: trusted addresses pass the question on, the first untrusted one is the
    /// client, anything unusable stops at the last address a trusted hop reported.
    fn walk(&self, peer: Option<IpAddr>, chain: &[Hop]) -> Option<IpAddr> {
        let mut nearest = peer;
        for hop in chain.iter().rev() {
            match *hop {
                Hop::Addr(addr) if !self.is_trusted(addr) => return Some(addr),
                Hop::Addr(addr) => nearest = Some(addr),
                Hop::Opaque | Hop::Malformed => return nearest,
            }
        }
        nearest
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// IPv4-mapped IPv6 → IPv4.
fn fold(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) → `a.b.c.d/(n-96)`, so it matches folded addresses.
fn fold_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(v4net);
            }
        }
    }
    net.trunc()
}

/// `X-Forwarded-For` / `X-Real-IP`: comma lists, every header in order.
fn list_chain(headers: &HeaderMap, name: &HeaderName) -> Vec<Hop> {
    let mut chain = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            chain.push(Hop::Malformed);
            continue;
        };
        // Empty list elements (`a, , b`) are allowed by the list syntax and carry nothing.
        chain.extend(value.split(',').map(str::trim).filter(|e| !e.is_empty()).map(list_node));
    }
    chain
}

/// An `X-Forwarded-For` entry: an address, possibly `[v6]`, possibly with a port.
fn list_node(entry: &str) -> Hop {
    if entry.eq_ignore_ascii_case("unknown") {
        return Hop::Opaque;
    }
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Hop::Addr(fold(addr));
    }
    match host_port(entry) {
        Some(addr) => Hop::Addr(fold(addr)),
        None => Hop::Malformed,
    }
}

/// `[v6]`, `[v6]:port`, `v4:port` (the port a number, or obfuscated in `Forwarded`).
fn host_port(s: &str) -> Option<IpAddr> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let v6: Ipv6Addr = inside.parse().ok()?;
        if after.is_empty() || after.strip_prefix(':').is_some_and(valid_port) {
            return Some(IpAddr::V6(v6));
        }
        return None;
    }
    let (host, port) = s.split_once(':')?;
    let v4: Ipv4Addr = host.parse().ok()?;
    valid_port(port).then_some(IpAddr::V4(v4))
}

/// `node-port` of RFC 7239: 1–5 digits, or an obfuscated port.
fn valid_port(port: &str) -> bool {
    (!port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok())
        || obfuscated(port)
}

/// `obfnode` / `obfport`: `_` followed by ALPHA / DIGIT / `.` / `_` / `-`.
fn obfuscated(s: &str) -> bool {
    s.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// `Forwarded` (RFC 7239): the `for=` node of every element of every header, in order.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Hop> {
    let mut chain = Vec::new();
    for value in headers.get_all(hyper::header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            chain.push(Hop::Malformed);
            continue;
        };
        let Some(elements) = split_unquoted(value, b',') else {
            chain.push(Hop::Malformed);
            continue;
        };
        for element in elements.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            chain.push(forwarded_element(element));
        }
    }
    chain
}

/// One `forwarded-element`: `pair *( ";" pair )`, each pair `token "=" ( token / quoted-string )`.
fn forwarded_element(element: &str) -> Hop {
    let Some(pairs) = split_unquoted(element, b';') else {
        return Hop::Malformed;
    };
    let mut node = None;
    for pair in pairs {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Hop::Malformed;
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Hop::Malformed;
        }
        let Some(value) = pair_value(value.trim()) else {
            return Hop::Malformed;
        };
        if name.eq_ignore_ascii_case("for") {
            if node.is_some() {
                // A parameter must not occur twice in one element.
                return Hop::Malformed;
            }
            node = Some(forwarded_node(&value));
        }
    }
    node.unwrap_or(Hop::Opaque)
}

/// The `for=` value once unquoted: `unknown`, `_obfuscated`, IPv4, `[IPv6]`, each with an
/// optional port.
fn forwarded_node(value: &str) -> Hop {
    let (host, port) = if value.starts_with('[') {
        match value.find(']') {
            Some(end) => (&value[..=end], &value[end + 1..]),
            None => return Hop::Malformed,
        }
    } else {
        match value.split_once(':') {
            // Lenient: a bare IPv6 address (not valid RFC 7239, but unambiguous).
            Some(_) if value.parse::<Ipv6Addr>().is_ok() => (value, ""),
            Some((host, _)) => (host, &value[host.len()..]),
            None => (value, ""),
        }
    };
    if !(port.is_empty() || port.strip_prefix(':').is_some_and(valid_port)) {
        return Hop::Malformed;
    }
    if host.eq_ignore_ascii_case("unknown") || obfuscated(host) {
        return Hop::Opaque;
    }
    let addr = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inside) => inside.parse::<Ipv6Addr>().map(IpAddr::V6).ok(),
        None => host.parse::<IpAddr>().ok(),
    };
    match addr {
        Some(addr) => Hop::Addr(fold(addr)),
        None => Hop::Malformed,
    }
}

/// A token, or a quoted-string with its quotes and escapes removed.
fn pair_value(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('"') {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        loop {
            match chars.next()? {
                '\\' => out.push(chars.next()?),
                '"' => return chars.as_str().is_empty().then_some(out),
                c => out.push(c),
            }
        }
    }
    // Brackets and colons are not token characters, but some proxies leave `[v6]:port` or
    // `v4:port` unquoted; accept them, nothing else.
    (!raw.is_empty() && raw.bytes().all(|b| is_tchar(b) || matches!(b, b'[' | b']' | b':')))
        .then(|| raw.to_string())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits at `sep` outside quoted strings; `None` for an unterminated quote.
fn split_unquoted(s: &str, sep: u8) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    if quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

#[cfg(test)]
mod tests {
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
}
