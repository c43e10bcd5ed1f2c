//! Rules by network, for the operator's per-network files (`--subscriber-config`,
//! `--author-config`): the line format they share and the lookup that gives an address the
//! rules of the most specific network containing it.
//!
//! A rule line is a network in any whitelist form ([`crate::whitelist::parse_network`]),
//! white space, then the rule itself to the end of the line. Lines whose first non-blank
//! character is `#` and blank lines are ignored. Several lines for one network form one
//! entry; an address gets the entry of the longest prefix containing it, IPv4-mapped IPv6
//! addresses matching IPv4 networks.

use std::net::IpAddr;

use cidr_utils::cidr::IpCidr;

use crate::whitelist::{normalize, parse_network, NetworkError};

/// Rules of type `T` per network, one entry per distinct network, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRules<T> {
    rules: Vec<(IpCidr, T)>,
}

impl<T> Default for NetRules<T> {
    fn default() -> Self {
        NetRules { rules: Vec::new() }
    }
}

impl<T> NetRules<T> {
    /// The entry of `net`, created empty on first use, so that several lines for one
    /// network add to one entry.
    pub fn entry(&mut self, net: IpCidr) -> &mut T
    where
        T: Default,
    {
        let i = match self.rules.iter().position(|(n, _)| *n == net) {
            Some(i) => i,
            None => {
                self.rules.push((net, T::default()));
                self.rules.len() - 1
            }
        };
        &mut self.rules[i].1
    }

    /// The most specific network containing `ip`, with its entry.
    pub fn lookup(&self, ip: IpAddr) -> Option<(&IpCidr, &T)> {
        let ip = normalize(ip);
        self.rules
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .max_by_key(|(n, _)| n.network_length())
            .map(|(n, t)| (n, t))
    }

    /// Number of networks with an entry.
    pub fn networks(&self) -> usize {
        self.rules.len()
    }
}

/// Why a rule line does not parse, as far as the shared format goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// A network and nothing after it.
    NoRule,
    /// The first word is not a network.
    Network(NetworkError),
}

/// One rule line: its number (from 1), and its network with the rest of the line (trimmed),
/// or why the line does not parse.
pub type RuleLine<'a> = (usize, Result<(IpCidr, &'a str), LineError>);

/// The rule lines of a file's text, comments and blank lines left out.
pub fn rule_lines(text: &str) -> impl Iterator<Item = RuleLine<'_>> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let parsed = match line.split_once(|c: char| c.is_whitespace()) {
            None => Err(LineError::NoRule),
            Some((net, rest)) => parse_network(net)
                .map(|n| (n, rest.trim()))
                .map_err(LineError::Network),
        };
        Some((i + 1, parsed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whitelist::tests::ip;

    #[test]
    fn lines_and_longest_prefix() {
        let text =
            "# c\n\n  10.0.0.0/8 a\n10.1.0.0/255.255.0.0\tb c \n10.1.0.0/16 d\n::1 e\nlonely\n";
        let mut rules: NetRules<Vec<String>> = NetRules::default();
        let mut errors = Vec::new();
        for (n, l) in rule_lines(text) {
            match l {
                Ok((net, rest)) => rules.entry(net).push(rest.to_string()),
                Err(e) => errors.push((n, e)),
            }
        }
        assert_eq!(errors, [(7, LineError::NoRule)]);
        assert_eq!(rules.networks(), 3);
        let get = |s| rules.lookup(ip(s)).map(|(n, v)| (n.to_string(), v.clone()));
        assert_eq!(get("10.9.9.9").unwrap().1, ["a"]);
        assert_eq!(
            get("10.1.2.3").unwrap(),
            ("10.1.0.0/16".to_string(), vec!["b c".into(), "d".into()])
        );
        assert_eq!(get("::ffff:10.1.2.3").unwrap().1, ["b c", "d"]);
        assert_eq!(get("::1").unwrap().1, ["e"]);
        assert_eq!(get("192.0.2.1"), None);
        let bad: Vec<_> = rule_lines("10.0.0.0/99 x\n").collect();
        assert!(matches!(bad[0], (1, Err(LineError::Network(_)))));
    }
}
