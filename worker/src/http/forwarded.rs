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
#[path = "forwarded_tests.rs"]
mod tests;
