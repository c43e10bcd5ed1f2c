//! Address whitelists for authors and subscribers (spec §8.1).
//!
//! A list of IPv4 and IPv6 networks, each written as CIDR (`10.0.0.0/8`, `::1/128`), a
//! bare address (a single host), or an IPv4 address with a dotted netmask
//! (`10.0.0.0/255.0.0.0`) or hostmask (`10.0.0.0/0.255.255.255`). Host bits may be set, as
//! Comet 3.1.0 allows (`10.1.2.3/8` means `10.0.0.0/8`). Peers are matched after
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack listener reports) are
//! turned back into IPv4. The default list accepts everything of both families.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use cidr_utils::cidr::IpCidr;

/// A network that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkError {
    pub input: String,
    pub why: &'static str,
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid network '{}': {} (write e.g. 192.0.2.0/24, 192.0.2.7, 192.0.2.0/255.255.255.0 or 2001:db8::/32)",
            self.input, self.why
        )
    }
}

impl std::error::Error for NetworkError {}

/// IPv4-mapped IPv6 → IPv4; everything else unchanged.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn mask_v4(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ipv4Addr::from(u32::from(a) & m)
}

fn mask_v6(a: Ipv6Addr, len: u8) -> Ipv6Addr {
    let m = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    Ipv6Addr::from(u128::from(a) & m)
}

/// Parse one network in any of the accepted forms.
pub fn parse_network(s: &str) -> Result<IpCidr, NetworkError> {
    let err = |why| NetworkError {
        input: s.to_string(),
        why,
    };
    let t = s.trim();
    let (addr, suffix) = match t.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (t, None),
    };
    let ip = IpAddr::from_str(addr).map_err(|_| err("not an IP address"))?;
    let ip = normalize(ip);
    let len = match (ip, suffix) {
        (IpAddr::V4(_), None) => 32,
        (IpAddr::V6(_), None) => 128,
        (_, Some(m)) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u8 = m.parse().map_err(|_| err("prefix length out of range"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if n > max {
                return Err(err("prefix length out of range"));
            }
            n
        }
        (IpAddr::V4(_), Some(m)) => {
            let mask = Ipv4Addr::from_str(m).map_err(|_| err("bad netmask"))?;
            let bits = u32::from(mask);
            // A netmask is ones then zeros; a hostmask is its complement.
            let bits = if bits.leading_ones() + bits.trailing_zeros() == 32 {
                bits
            } else if (!bits).leading_ones() + (!bits).trailing_zeros() == 32 {
                !bits
            } else {
                return Err(err("netmask is not contiguous"));
            };
            bits.leading_ones() as u8
        }
        (IpAddr::V6(_), Some(_)) => return Err(err("IPv6 networks need a prefix length")),
    };
    let net = match ip {
        IpAddr::V4(a) => IpAddr::V4(mask_v4(a, len)),
        IpAddr::V6(a) => IpAddr::V6(mask_v6(a, len)),
    };
    IpCidr::new(net, len).map_err(|_| err("invalid network"))
}

/// A list of networks; an address is allowed if any network contains it.
#[derive(Clone, Debug)]
pub struct Whitelist {
    nets: Vec<IpCidr>,
}

impl Whitelist {
    /// Everything, IPv4 and IPv6 (`0.0.0.0/0` and `::/0`).
    pub fn allow_all() -> Whitelist {
        Whitelist {
            nets: vec![
                parse_network("0.0.0.0/0").expect("valid"),
                parse_network("::/0").expect("valid"),
            ],
        }
    }

    /// Parse each entry; an empty list means the default (everything).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Whitelist, NetworkError> {
        if entries.is_empty() {
            return Ok(Whitelist::allow_all());
        }
        let nets = entries
            .iter()
            .map(|e| parse_network(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Whitelist { nets })
    }

    /// Is this peer allowed?
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

impl fmt::Display for Whitelist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.nets.iter().map(|n| n.to_string()).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An address written in a test (which must parse).
    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forms() {
        let w = Whitelist::parse(&["127.0.0.1/32"]).unwrap();
        assert!(w.allows(ip("127.0.0.1")));
        assert!(!w.allows(ip("127.0.0.2")));
        let w = Whitelist::parse(&["10.0.0.0/255.0.0.0"]).unwrap();
        assert!(w.allows(ip("10.9.8.7")) && !w.allows(ip("11.0.0.1")));
        let w = Whitelist::parse(&["10.0.0.0/0.255.255.255"]).unwrap();
        assert!(w.allows(ip("10.9.8.7")) && !w.allows(ip("11.0.0.1")));
        let w = Whitelist::parse(&["192.0.2.7"]).unwrap();
        assert!(w.allows(ip("192.0.2.7")) && !w.allows(ip("192.0.2.8")));
        // Host bits set: allowed, as in Comet 3.1.0.
        let w = Whitelist::parse(&["10.1.2.3/8"]).unwrap();
        assert!(w.allows(ip("10.200.0.1")));
        let w = Whitelist::parse(&["2001:db8::/32", "::1"]).unwrap();
        assert!(w.allows(ip("2001:db8::5")) && w.allows(ip("::1")) && !w.allows(ip("::2")));
    }

    #[test]
    fn mapped_addresses_match_ipv4_networks() {
        let w = Whitelist::parse(&["127.0.0.0/8"]).unwrap();
        assert!(w.allows(ip("::ffff:127.0.0.1")));
        assert!(!w.allows(ip("::1")));
    }

    #[test]
    fn default_allows_both_families() {
        let w = Whitelist::parse::<&str>(&[]).unwrap();
        assert!(w.allows(ip("192.0.2.1")) && w.allows(ip("2001:db8::1")));
    }

    #[test]
    fn errors_name_the_input() {
        for bad in [
            "",
            "foo",
            "10.0.0.0/33",
            "10.0.0.0/255.0.255.0",
            "::/x",
            "1.2.3.4/-1",
        ] {
            let e = parse_network(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }
}
