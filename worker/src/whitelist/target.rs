//! What a rule opens: a CIDR, a protocol and a port range, parsed from what people type
//! (`"203.0.113.7"`, `"ssh"`, `"8000-8100"`, `"all"`) into values EC2 accepts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An IP protocol as EC2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP for IPv4 (1); ICMPv6 (58) when the CIDR is IPv6.
    Icmp,
    /// Every protocol (`-1`): ports do not apply.
    All,
}

impl Protocol {
    /// Parses `tcp`, `udp`, `icmp`, `all`/`-1` (and the numbers 6, 17, 1), case-insensitively.
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Protocol::Tcp),
            "udp" | "17" => Ok(Protocol::Udp),
            "icmp" | "1" | "icmpv6" | "58" => Ok(Protocol::Icmp),
            "all" | "-1" | "any" => Ok(Protocol::All),
            _ => Err(format!("protocol {s:?} is not one of tcp, udp, icmp, all (-1)")),
        }
    }

    /// The `IpProtocol` value EC2 expects for a rule on `cidr`.
    pub fn ec2_name(self, cidr: &IpNet) -> &'static str {
        match (self, cidr) {
            (Protocol::Tcp, _) => "tcp",
            (Protocol::Udp, _) => "udp",
            (Protocol::Icmp, IpNet::V4(_)) => "icmp",
            (Protocol::Icmp, IpNet::V6(_)) => "icmpv6",
            (Protocol::All, _) => "-1",
        }
    }

    /// Reads EC2's `IpProtocol` back (`"tcp"`, `"6"`, `"icmpv6"`, `"-1"`, …).
    pub fn from_ec2(s: &str) -> Option<Protocol> {
        Protocol::parse(s).ok()
    }

    /// True when the rule has ports (TCP/UDP).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::All => "all",
        })
    }
}

/// An inclusive port range; for ICMP, `from` is the type and `to` the code (-1 = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Ports {
    /// First port (or ICMP type).
    pub from: i32,
    /// Last port (or ICMP code).
    pub to: i32,
}

impl Ports {
    /// Every port / every ICMP type: what EC2 stores for `all` and plain `icmp`.
    pub const ANY: Ports = Ports { from: -1, to: -1 };

    /// One port.
    pub fn single(p: u16) -> Ports {
        Ports { from: p as i32, to: p as i32 }
    }

    /// True when `other` lies entirely within this range.
    pub fn contains(&self, other: &Ports) -> bool {
        self.from <= other.from && other.to <= self.to
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.from, self.to) {
            (-1, -1) => f.write_str("all"),
            (a, b) if a == b => write!(f, "{a}"),
            (a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Protocol {
    type Error = String;
    fn try_from(s: String) -> Result<Protocol, String> {
        Protocol::parse(&s)
    }
}

impl From<Ports> for String {
    fn from(p: Ports) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Ports {
    type Error = String;
    fn try_from(s: String) -> Result<Ports, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Ports::ANY);
        }
        parse_ports(&s, &[])
    }
}

/// A service name that stands for a port (`ssh` → 22), from the built-ins or `port_mappings`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamedPort {
    /// Lower-case name.
    pub name: String,
    /// The ports it means.
    pub ports: Ports,
}

/// Well-known names accepted without configuration.
pub const BUILTIN_PORTS: &[(&str, u16)] = &[
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("dns", 53),
    ("http", 80),
    ("pop3", 110),
    ("imap", 143),
    ("ldap", 389),
    ("https", 443),
    ("smtps", 465),
    ("submission", 587),
    ("ldaps", 636),
    ("imaps", 993),
    ("pop3s", 995),
    ("openvpn", 1194),
    ("mssql", 1433),
    ("oracle", 1521),
    ("nfs", 2049),
    ("mysql", 3306),
    ("rdp", 3389),
    ("postgres", 5432),
    ("postgresql", 5432),
    ("amqp", 5672),
    ("vnc", 5900),
    ("redis", 6379),
    ("kubernetes", 6443),
    ("http-alt", 8080),
    ("https-alt", 8443),
    ("kafka", 9092),
    ("elasticsearch", 9200),
    ("memcached", 11211),
    ("mongodb", 27017),
    ("wireguard", 51820),
];

/// Parses a `port` argument: a number, `"from-to"`, or a name (configured names first).
pub fn parse_ports(value: &str, mappings: &[NamedPort]) -> Result<Ports, String> {
    let v = value.trim();
    if let Some((a, b)) = v.split_once('-') {
        let from = parse_port_number(a.trim(), value)?;
        let to = parse_port_number(b.trim(), value)?;
        if from > to {
            return Err(format!("port range {value:?} runs backwards; write it as {to}-{from}"));
        }
        return Ok(Ports { from: from as i32, to: to as i32 });
    }
    if v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty() {
        return parse_port_number(v, value).map(Ports::single);
    }
    let name = v.to_ascii_lowercase();
    if let Some(m) = mappings.iter().find(|m| m.name == name) {
        return Ok(m.ports);
    }
    if let Some((_, p)) = BUILTIN_PORTS.iter().find(|(n, _)| *n == name) {
        return Ok(Ports::single(*p));
    }
    Err(format!("port {value:?} is not a number from 1 to 65535, a range like 8000-8100, or a known name (ssh, https, rdp, …)"))
}

fn parse_port_number(s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65_535).contains(&n) => Ok(n as u16),
        _ => Err(format!("port {whole:?} is out of range: ports go from 1 to 65535")),
    }
}

/// Parses an address or CIDR; a single address becomes /32 or /128.
///
/// IPv6 networks that stand for IPv4 ones are never judged as IPv6: a network inside the
/// IPv4-mapped range `::ffff:0:0/96` is folded to IPv4 (`::ffff:198.51.100.9` →
/// `198.51.100.9/32`, `::ffff:0:0/96` → `0.0.0.0/0`), so the IPv4 policy applies to it; a
/// network inside the deprecated IPv4-compatible range `::/96` (RFC 4291), or any network
/// wider than /96 that holds either range but is not the whole internet, is refused.
pub fn parse_cidr(value: &str) -> Result<IpNet, String> {
    let v = value.trim();
    let net = if let Some((addr, len)) = v.split_once('/') {
        let ip: IpAddr = addr.parse().map_err(|_| format!("{value:?} is not an IP address or CIDR"))?;
        let len: u8 = len.parse().map_err(|_| format!("{value:?} has an invalid prefix length"))?;
        let net = IpNet::new(ip, len)
            .map_err(|_| format!("{value:?} has a prefix length too long for its family"))?;
        if net.trunc() != net {
            return Err(format!("{value:?} has host bits set; the network is {}", net.trunc()));
        }
        net
    } else {
        let ip: IpAddr = v.parse().map_err(|_| format!("{value:?} is not an IP address or CIDR"))?;
        IpNet::from(ip)
    };
    match net {
        IpNet::V6(v6) => fold_ipv4_in_ipv6(v6).map_err(|why| format!("{value:?} {why}")),
        v4 => Ok(v4),
    }
}

/// The IPv4-mapped range: IPv4 addresses as dual-stack sockets show them.
const MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);
/// The IPv4-compatible range (deprecated by RFC 4291).
const COMPATIBLE: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 96);

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it means; refuses networks in
/// (or holding) the IPv4-compatible range and wider networks holding the mapped one.
fn fold_ipv4_in_ipv6(net: Ipv6Net) -> Result<IpNet, String> {
    if MAPPED.contains(&net) {
        let [.., a, b, c, d] = net.addr().octets();
        let v4 = Ipv4Net::new(Ipv4Addr::new(a, b, c, d), net.prefix_len() - 96)
            .map_err(|_| "is not a valid IPv4-mapped network".to_string())?;
        return Ok(IpNet::V4(v4));
    }
    if net.prefix_len() == 0 {
        // The whole internet: the policy's world check decides (allow_world).
        return Ok(IpNet::V6(net));
    }
    if COMPATIBLE.contains(&net) {
        return Err(format!(
            "lies in {COMPATIBLE}, the deprecated IPv4-compatible IPv6 range (RFC 4291); give the IPv4 address or network instead"
        ));
    }
    // Written out: Display shows the mapped range as `::ffff:0.0.0.0/96`.
    for (inner, name) in [(MAPPED, "::ffff:0:0/96"), (COMPATIBLE, "::/96")] {
        if net.contains(&inner) {
            return Err(format!(
                "holds {name}, IPv6 addresses that stand for IPv4 ones (for ::ffff:0:0/96, the whole IPv4 internet); give a narrower IPv6 network, or the IPv4 network meant"
            ));
        }
    }
    Ok(IpNet::V6(net))
}

/// The /32 or /128 network of one address (IPv4-mapped IPv6 folded to IPv4).
pub fn host_net(ip: IpAddr) -> IpNet {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    IpNet::from(ip)
}

/// A rule to add or remove, fully resolved (no defaults or names left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The security group.
    pub group_id: String,
    /// The network allowed in.
    pub cidr: IpNet,
    /// The protocol.
    pub protocol: Protocol,
    /// The ports (ANY for `all` and ICMP).
    pub ports: Ports,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(Protocol::parse("TCP").unwrap(), Protocol::Tcp);
        assert_eq!(Protocol::parse("-1").unwrap(), Protocol::All);
        assert!(Protocol::parse("bogus").unwrap_err().contains("bogus"));
        let v6: IpNet = "2001:db8::/64".parse().unwrap();
        assert_eq!(Protocol::Icmp.ec2_name(&v6), "icmpv6");
        assert_eq!(Protocol::from_ec2("icmpv6"), Some(Protocol::Icmp));
    }

    #[test]
    fn ports_numbers_ranges_and_names() {
        assert_eq!(parse_ports("22", &[]).unwrap(), Ports::single(22));
        assert_eq!(parse_ports("ssh", &[]).unwrap(), Ports::single(22));
        assert_eq!(parse_ports("HTTPS", &[]).unwrap(), Ports::single(443));
        assert_eq!(parse_ports("8000-8100", &[]).unwrap(), Ports { from: 8000, to: 8100 });
        let custom = [NamedPort { name: "app".into(), ports: Ports { from: 9000, to: 9001 } }];
        assert_eq!(parse_ports("app", &custom).unwrap(), Ports { from: 9000, to: 9001 });
        for bad in ["0", "70000", "-1", "8100-8000", "nope", "", "1-", "22.5"] {
            assert!(parse_ports(bad, &[]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses_and_cidrs() {
        assert_eq!(parse_cidr("203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
        assert_eq!(parse_cidr("2001:db8::1").unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::ffff:198.51.100.4").unwrap().to_string(), "198.51.100.4/32");
        assert!(parse_cidr("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        for bad in ["999.1.1.1", "1.2.3", "10.0.0.0/33", "::/129", "abc", "", "1.2.3.4/x"] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ipv4_mapped_networks_fold_and_compatible_ones_are_refused() {
        let folded = |s: &str| parse_cidr(s).map(|n| n.to_string());
        assert_eq!(folded("::ffff:198.51.100.9/128").unwrap(), "198.51.100.9/32");
        assert_eq!(folded("::ffff:198.51.100.0/120").unwrap(), "198.51.100.0/24");
        assert_eq!(folded("::ffff:0:0/96").unwrap(), "0.0.0.0/0");
        assert_eq!(folded("::FFFF:10.0.0.0/104").unwrap(), "10.0.0.0/8");
        for compatible in ["::198.51.100.9", "::198.51.100.0/120", "::/96", "::1"] {
            let e = parse_cidr(compatible).unwrap_err();
            assert!(e.contains("IPv4-compatible") && e.contains("::/96"), "{compatible}: {e}");
        }
        for wide in ["::/80", "::/64", "::fffe:0:0/95", "::/81"] {
            let e = parse_cidr(wide).unwrap_err();
            assert!(e.contains("::ffff:0:0/96") || e.contains("::/96"), "{wide}: {e}");
        }
        assert_eq!(folded("::/0").unwrap(), "::/0", "the world is the policy's to refuse");
        assert_eq!(folded("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(folded("::1:0:0/96").unwrap(), "::1:0:0/96", "a neighbour of the mapped range");
    }

    #[test]
    fn port_containment() {
        let wide = Ports { from: 1000, to: 2000 };
        assert!(wide.contains(&Ports::single(1500)));
        assert!(!wide.contains(&Ports { from: 1500, to: 2500 }));
        assert_eq!(Ports::ANY.to_string(), "all");
    }
}
