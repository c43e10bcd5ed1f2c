//! Operator-imposed filters per subscriber network (`--subscriber-config FILE`), as GCN's
//! servers did with their sites file.
//!
//! Format: one rule per line, `NETWORK XPATH`: a network in any whitelist form (CIDR, bare
//! address, address/netmask), whitespace, then an XPath 1.0 expression to the end of the
//! line. `#` starts a comment line; blank lines are ignored. Several lines for the same
//! network form one list (an event passes if any of them matches). A subscriber gets the
//! rules of the most specific network that contains its address (longest prefix); no
//! matching network means nothing is imposed. What it asks for itself is then ANDed with
//! the imposed list: it receives an event only if both select it.
//!
//! The file is read at start-up (an error refuses to start, naming the line) and again on
//! SIGHUP (an error keeps the previous rules and is logged); connections stay up.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::filters::check_xpath;
use crate::netrules::{rule_lines, LineError, NetRules};

/// The parsed file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteConfig {
    /// The expressions of each network.
    rules: NetRules<Vec<String>>,
}

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub why: String,
}

impl fmt::Display for SiteConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.why)
        } else {
            write!(
                f,
                "{} line {}: {}",
                self.path.display(),
                self.line,
                self.why
            )
        }
    }
}

impl std::error::Error for SiteConfigError {}

impl SiteConfig {
    /// Parse the text of a config file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<SiteConfig, SiteConfigError> {
        let mut cfg = SiteConfig::default();
        for (line, parsed) in rule_lines(text) {
            let err = |why: String| SiteConfigError {
                path: path.to_path_buf(),
                line,
                why,
            };
            let (net, expr) = parsed.map_err(|e| {
                err(match e {
                    LineError::NoRule => "expected NETWORK XPATH".into(),
                    LineError::Network(e) => e.to_string(),
                })
            })?;
            check_xpath(expr).map_err(|why| err(format!("invalid XPath {expr:?}: {why}")))?;
            cfg.rules.entry(net).push(expr.to_string());
        }
        Ok(cfg)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<SiteConfig, SiteConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| SiteConfigError {
            path: path.to_path_buf(),
            line: 0,
            why: e.to_string(),
        })?;
        SiteConfig::parse(&text, path)
    }

    /// The expressions imposed on a subscriber at `ip` (empty: nothing imposed).
    pub fn imposed(&self, ip: IpAddr) -> &[String] {
        self.rules
            .lookup(ip)
            .map(|(_, e)| e.as_slice())
            .unwrap_or(&[])
    }

    /// Number of networks with rules.
    pub fn networks(&self) -> usize {
        self.rules.networks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match_longest_prefix() {
        let text = "# sites\n\n10.0.0.0/8  @role!=\"test\"\n10.1.0.0/255.255.0.0 //Who\n10.1.0.0/16 //What\n::1 true()\n";
        let c = SiteConfig::parse(text, Path::new("sites")).unwrap();
        assert_eq!(c.networks(), 3);
        assert_eq!(c.imposed("10.9.9.9".parse().unwrap()), ["@role!=\"test\""]);
        assert_eq!(c.imposed("10.1.2.3".parse().unwrap()), ["//Who", "//What"]);
        assert_eq!(
            c.imposed("::ffff:10.1.2.3".parse().unwrap()),
            ["//Who", "//What"]
        );
        assert_eq!(c.imposed("::1".parse().unwrap()), ["true()"]);
        assert!(c.imposed("192.0.2.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let p = Path::new("/etc/bolide/sites");
        let e = SiteConfig::parse("10.0.0.0/8 //Who\nnonsense\n", p).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("/etc/bolide/sites line 2: "));
        let e = SiteConfig::parse("10.0.0.0/8 //[\n", p).unwrap_err();
        assert!(e.why.contains("invalid XPath"));
        let e = SiteConfig::parse("10.0.0.0/99 //Who\n", p).unwrap_err();
        assert!(e.why.contains("invalid network"));
        assert!(SiteConfig::load(Path::new("/nonexistent/sites")).is_err());
    }
}
