//! Who may publish what (`--author-config FILE`, `--author-config-strict`): the IVORN
//! prefixes an author may publish under, by the network it connects from.
//!
//! Format: one rule per line, `NETWORK PREFIX [PREFIX...]`: a network in any whitelist form,
//! then one or more IVORN prefixes separated by white space; `#` comment lines and blank
//! lines are ignored; several lines for one network add to one list ([`crate::netrules`]).
//! An author may publish an event only if its ivorn starts with a prefix of the most
//! specific network containing the author's address (longest prefix). A prefix is compared
//! byte for byte, except that one ending in the authority (`ivo://example.org`) matches
//! that authority whole: `ivo://example.org/…` and `ivo://example.org#…`, never
//! `ivo://example.org.evil/…`. `ivo://` alone permits every ivorn.
//!
//! An address no rule covers keeps the whitelist's answer alone, unless
//! `--author-config-strict` refuses it. The receiver applies the rules to each author's
//! event once the event has passed every check of its own and before the dispatcher sees
//! it, so a refused event is never recorded. Events relayed by upstream brokers are not
//! subject to them: they were checked, if at all, where they were authored.
//!
//! The file is read at start-up (an error refuses to start, naming the line) and again on
//! SIGHUP ([`AuthorRules::reload`]: an error keeps the previous rules).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use cidr_utils::cidr::IpCidr;

use crate::netrules::{rule_lines, LineError, NetRules};
use crate::whitelist::NetworkError;

const SCHEME: &str = "ivo://";

/// The parsed file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorConfig {
    /// The prefixes of each network.
    rules: NetRules<Vec<String>>,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRule {
    /// A network and no prefix after it.
    NoPrefixes,
    /// The first word is not a network.
    Network(NetworkError),
    /// A prefix that no ivorn can start with.
    Prefix(String),
}

impl fmt::Display for BadRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRule::NoPrefixes => write!(f, "expected NETWORK PREFIX [PREFIX...]"),
            BadRule::Network(e) => e.fmt(f),
            BadRule::Prefix(p) => write!(
                f,
                "invalid IVORN prefix '{p}': it must start with {SCHEME} (e.g. ivo://example.org/telescope#)"
            ),
        }
    }
}

/// A file that cannot be read or does not parse.
#[derive(Debug)]
pub enum AuthorConfigError {
    /// The file cannot be read.
    Read { path: PathBuf, err: io::Error },
    /// A line does not parse.
    Line {
        path: PathBuf,
        line: usize,
        why: BadRule,
    },
}

impl fmt::Display for AuthorConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthorConfigError::Read { path, err } => write!(f, "{}: {err}", path.display()),
            AuthorConfigError::Line { path, line, why } => {
                write!(f, "{} line {line}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for AuthorConfigError {}

/// What the rules say about one ivorn from one address.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// A prefix of the address's network matches.
    Permitted,
    /// No network contains the address.
    NoRule,
    /// The address's most specific network has no matching prefix.
    Refused {
        network: &'a IpCidr,
        allowed: &'a [String],
    },
}

/// Does `prefix` permit `ivorn` (see the module's documentation)?
pub fn permits(prefix: &str, ivorn: &str) -> bool {
    let Some(rest) = ivorn.strip_prefix(prefix) else {
        return false;
    };
    let authority = &prefix[SCHEME.len().min(prefix.len())..];
    let authority_only = !authority.is_empty() && !authority.contains(['/', '#']);
    !authority_only || rest.is_empty() || rest.starts_with(['/', '#'])
}

impl AuthorConfig {
    /// Parse the text of a config file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<AuthorConfig, AuthorConfigError> {
        let mut cfg = AuthorConfig::default();
        for (line, parsed) in rule_lines(text) {
            let err = |why| AuthorConfigError::Line {
                path: path.to_path_buf(),
                line,
                why,
            };
            let (net, rest) = parsed.map_err(|e| {
                err(match e {
                    LineError::NoRule => BadRule::NoPrefixes,
                    LineError::Network(e) => BadRule::Network(e),
                })
            })?;
            let prefixes = cfg.rules.entry(net);
            for p in rest.split_whitespace() {
                if !p.starts_with(SCHEME) {
                    return Err(err(BadRule::Prefix(p.chars().take(80).collect())));
                }
                if !prefixes.iter().any(|q| q == p) {
                    prefixes.push(p.to_string());
                }
            }
        }
        Ok(cfg)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<AuthorConfig, AuthorConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| AuthorConfigError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        AuthorConfig::parse(&text, path)
    }

    /// Number of networks with rules.
    pub fn networks(&self) -> usize {
        self.rules.networks()
    }

    /// May an author at `ip` publish `ivorn`?
    pub fn decide(&self, ip: IpAddr, ivorn: &str) -> Decision<'_> {
        match self.rules.lookup(ip) {
            None => Decision::NoRule,
            Some((_, allowed)) if allowed.iter().any(|p| permits(p, ivorn)) => Decision::Permitted,
            Some((network, allowed)) => Decision::Refused { network, allowed },
        }
    }
}

/// An event the rules in force refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The network whose rule refused it; `None`: no rule covers the address and
    /// `--author-config-strict` is on.
    pub network: Option<IpCidr>,
    /// That network's prefixes.
    pub allowed: Vec<String>,
}

/// The rules in force: read by every receiver thread, replaced whole on SIGHUP.
#[derive(Debug)]
pub struct AuthorRules {
    path: PathBuf,
    strict: bool,
    current: RwLock<Arc<AuthorConfig>>,
}

impl AuthorRules {
    /// Rules read from `path`; `strict` refuses addresses no rule covers.
    pub fn new(path: PathBuf, cfg: AuthorConfig, strict: bool) -> AuthorRules {
        AuthorRules {
            path,
            strict,
            current: RwLock::new(Arc::new(cfg)),
        }
    }

    /// The file the rules come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether addresses no rule covers are refused.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<AuthorConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Check an author's event against the rules in force.
    pub fn check(&self, ip: IpAddr, ivorn: &str) -> Result<(), Refusal> {
        match self.current().decide(ip, ivorn) {
            Decision::Permitted => Ok(()),
            Decision::NoRule if !self.strict => Ok(()),
            Decision::NoRule => Err(Refusal {
                network: None,
                allowed: Vec::new(),
            }),
            Decision::Refused { network, allowed } => Err(Refusal {
                network: Some(*network),
                allowed: allowed.to_vec(),
            }),
        }
    }

    /// Re-read the file; on success its rules replace the ones in force and the number of
    /// networks is returned, on error the rules in force stay.
    pub fn reload(&self) -> Result<usize, AuthorConfigError> {
        let cfg = AuthorConfig::load(&self.path)?;
        let n = cfg.networks();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whitelist::tests::ip;

    const FILE: &str = "\
# authors
10.0.0.0/8        ivo://example.org/
10.1.0.0/16       ivo://example.org/telescope# ivo://other.org
10.1.0.0/255.255.0.0 ivo://third.org/x
10.1.2.3          ivo://
2001:db8::/32     ivo://v6.example/
";

    fn cfg() -> AuthorConfig {
        AuthorConfig::parse(FILE, Path::new("authors")).unwrap()
    }

    #[test]
    fn most_specific_network_decides() {
        let c = cfg();
        assert_eq!(c.networks(), 4);
        // Per address: what it may publish, then what it may not.
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "10.9.9.9",
                &["ivo://example.org/any#1"],
                &["ivo://nasa.gsfc.gcn/SWIFT#x"],
            ),
            // 10.1/16 has its own list: the /8's prefix no longer applies.
            (
                "10.1.9.9",
                &["ivo://example.org/telescope#1", "ivo://third.org/x#1"],
                &["ivo://example.org/any#1"],
            ),
            ("::ffff:10.1.9.9", &["ivo://other.org/a#1"], &[]),
            // A host rule of `ivo://` permits everything.
            ("10.1.2.3", &["ivo://nasa.gsfc.gcn/SWIFT#x"], &[]),
            (
                "2001:db8::7",
                &["ivo://v6.example/s#1"],
                &["ivo://example.org/any#1"],
            ),
        ];
        for (addr, yes, no) in cases {
            for iv in *yes {
                assert_eq!(c.decide(ip(addr), iv), Decision::Permitted, "{addr} {iv}");
            }
            for iv in *no {
                let d = c.decide(ip(addr), iv);
                assert!(matches!(d, Decision::Refused { .. }), "{addr} {iv}: {d:?}");
            }
        }
        let no_rule = c.decide(ip("192.0.2.7"), "ivo://x.org/a#1");
        assert_eq!(no_rule, Decision::NoRule);
        match c.decide(ip("10.1.9.9"), "ivo://nasa.gsfc.gcn/SWIFT#x") {
            Decision::Refused { network, allowed } => {
                assert_eq!(network.to_string(), "10.1.0.0/16");
                let want = [
                    "ivo://example.org/telescope#",
                    "ivo://other.org",
                    "ivo://third.org/x",
                ];
                assert_eq!(allowed, want);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn an_authority_prefix_matches_the_whole_authority() {
        let table = [
            ("ivo://other.org", "ivo://other.org/a#1", true),
            ("ivo://other.org", "ivo://other.org#1", true),
            ("ivo://other.org", "ivo://other.org.evil/a#1", false),
            ("ivo://other.org", "ivo://other.organisation/a#1", false),
            // Past the authority, prefixes are plain.
            ("ivo://a.org/tele", "ivo://a.org/telescope#1", true),
            ("ivo://a.org/s#BAT_", "ivo://a.org/s#BAT_1", true),
            ("ivo://", "ivo://anything/x#1", true),
            // Byte for byte.
            ("ivo://a.org/", "ivo://A.org/x#1", false),
        ];
        for (prefix, ivorn, want) in table {
            assert_eq!(permits(prefix, ivorn), want, "{prefix} {ivorn}");
        }
    }

    #[test]
    fn strict_refuses_addresses_without_a_rule() {
        let lax = AuthorRules::new("a".into(), cfg(), false);
        let strict = AuthorRules::new("a".into(), cfg(), true);
        assert_eq!(lax.check(ip("192.0.2.7"), "ivo://x.org/a#1"), Ok(()));
        let r = strict
            .check(ip("192.0.2.7"), "ivo://x.org/a#1")
            .unwrap_err();
        assert_eq!(r.network, None);
        let r = lax.check(ip("10.2.0.1"), "ivo://x.org/a#1").unwrap_err();
        assert_eq!(r.network.unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(r.allowed, ["ivo://example.org/"]);
    }

    #[test]
    fn errors_name_the_line() {
        let p = Path::new("/etc/bolide/authors");
        let line = |text: &str| match AuthorConfig::parse(text, p).unwrap_err() {
            AuthorConfigError::Line { line, why, .. } => (line, why),
            e => panic!("{e}"),
        };
        assert_eq!(
            line("# x\n10.0.0.0/8 ivo://a.org/\n10.0.0.0/8\n"),
            (3, BadRule::NoPrefixes)
        );
        assert_eq!(
            line("10.0.0.0/8 ivo://a.org/ example.org/\n"),
            (1, BadRule::Prefix("example.org/".into()))
        );
        assert!(matches!(
            line("\n10.0.0.0/40 ivo://a.org/\n"),
            (2, BadRule::Network(_))
        ));
        let e = AuthorConfig::parse("nonsense\n", p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/bolide/authors line 1: expected NETWORK PREFIX [PREFIX...]"
        );
        let e = AuthorConfig::load(Path::new("/nonexistent/authors")).unwrap_err();
        assert!(matches!(e, AuthorConfigError::Read { .. }));
        assert!(e.to_string().starts_with("/nonexistent/authors: "), "{e}");
        // An empty file is valid: no rules.
        assert_eq!(AuthorConfig::parse("# none\n", p).unwrap().networks(), 0);
    }

    #[test]
    fn reload_keeps_the_rules_on_error() {
        let dir = std::env::temp_dir().join(format!("bolide-authorconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("authors");
        std::fs::write(&path, "10.0.0.0/8 ivo://a.org/\n").unwrap();
        let rules = AuthorRules::new(path.clone(), AuthorConfig::load(&path).unwrap(), false);
        assert!(rules.check(ip("10.0.0.1"), "ivo://b.org/x#1").is_err());
        std::fs::write(&path, "10.0.0.0/8 ivo://b.org/\n::1 ivo://\n").unwrap();
        assert_eq!(rules.reload().unwrap(), 2);
        assert!(rules.check(ip("10.0.0.1"), "ivo://b.org/x#1").is_ok());
        std::fs::write(&path, "10.0.0.0/8 b.org\n").unwrap();
        assert!(rules.reload().is_err());
        assert!(rules.check(ip("10.0.0.1"), "ivo://b.org/x#1").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
