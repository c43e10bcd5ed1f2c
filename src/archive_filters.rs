//! The archive's filters as a person writes them (times as ISO 8601 or an age, a role by
//! name, an XPath expression), turned into an [`crate::archive_reader::Query`]: shared by
//! `bolide-archive`'s options and the HTTP view's `/events` parameters, so both read
//! them the same way.

use std::fmt;

use crate::archive_reader::Query;
use crate::filters::{check_xpath, InvalidFilter};
use crate::voevent::EventRole;

/// The filters as given; `None` / empty: no bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters<'a> {
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub authored_since: Option<&'a str>,
    pub authored_until: Option<&'a str>,
    pub ivorn_prefixes: &'a [String],
    pub ivorn_contains: Option<&'a str>,
    pub role: Option<&'a str>,
    pub xpath: Option<&'a str>,
}

/// A filter that does not parse. `name` is the filter's name with underscores
/// (`authored_since`); its Display starts with that name.
#[derive(Debug)]
pub enum FilterError {
    Time { name: &'static str, value: String },
    Role(String),
    XPath { expr: String, why: InvalidFilter },
}

const NOT_A_TIME: &str = "is neither an ISO 8601 UTC time (2026-12-05T12:00:00Z, 2026-12-05) nor an age (90s, 90m, 6h, 7d)";

impl FilterError {
    /// The message with the filter named as a command-line option (`--authored-since`).
    pub fn as_option(&self) -> String {
        let text = self.to_string();
        format!(
            "--{}",
            text.replacen('_', "-", self.name().matches('_').count())
        )
    }

    fn name(&self) -> &'static str {
        match self {
            FilterError::Time { name, .. } => name,
            FilterError::Role(_) => "role",
            FilterError::XPath { .. } => "xpath",
        }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Time { name, value } => write!(f, "{name} '{value}' {NOT_A_TIME}"),
            FilterError::Role(r) => write!(
                f,
                "role '{r}' is not a role: observation, prediction, utility or test"
            ),
            FilterError::XPath { expr, why } => {
                write!(f, "xpath '{expr}' is not valid XPath 1.0: {why}")
            }
        }
    }
}

impl std::error::Error for FilterError {}

impl Filters<'_> {
    /// The query they stand for, ages counted back from `now_ms`.
    pub fn query(&self, now_ms: u64) -> Result<Query, FilterError> {
        let time = |name: &'static str, v: Option<&str>| -> Result<Option<u64>, FilterError> {
            let Some(v) = v else { return Ok(None) };
            parse_time(v, now_ms)
                .map(Some)
                .ok_or_else(|| FilterError::Time {
                    name,
                    value: v.to_string(),
                })
        };
        let role = match self.role {
            Some(r) => {
                Some(EventRole::from_attr(r).ok_or_else(|| FilterError::Role(r.to_string()))?)
            }
            None => None,
        };
        if let Some(expr) = self.xpath {
            check_xpath(expr).map_err(|why| FilterError::XPath {
                expr: expr.to_string(),
                why,
            })?;
        }
        Ok(Query {
            since_ms: time("since", self.since)?,
            until_ms: time("until", self.until)?,
            authored_since_ms: time("authored_since", self.authored_since)?,
            authored_until_ms: time("authored_until", self.authored_until)?,
            ivorn_prefixes: self.ivorn_prefixes.to_vec(),
            ivorn_contains: self.ivorn_contains.map(str::to_string),
            role,
            xpath: self.xpath.map(str::to_string),
            ..Query::default()
        })
    }
}

/// A time as the filters take it: ISO 8601 (UTC unless it says otherwise), or an age with
/// its unit (`90s`, `90m`, `6h`, `7d`), counted back from `now_ms`. A bare number is
/// neither: `20261205` is more likely a mistyped date than seconds.
pub fn parse_time(v: &str, now_ms: u64) -> Option<u64> {
    if let Some(ms) = crate::time::parse_iso8601_ms(v) {
        return Some(ms);
    }
    if !v.trim_end().ends_with(['s', 'm', 'h', 'd']) {
        return None;
    }
    let secs = crate::cli::parse_duration_secs(v)?;
    Some(now_ms.saturating_sub(secs.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_filter_as_an_option_or_a_parameter() {
        let f = Filters {
            authored_since: Some("yesterday"),
            ..Filters::default()
        };
        let e = f.query(0).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("authored_since 'yesterday' is neither"));
        assert!(e
            .as_option()
            .starts_with("--authored-since 'yesterday' is neither"));
        let f = Filters {
            role: Some("x_y"),
            ..Filters::default()
        };
        assert!(f
            .query(0)
            .unwrap_err()
            .as_option()
            .starts_with("--role 'x_y'"));
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(parse_time("90s", 100_000), Some(10_000));
        assert_eq!(parse_time("20261205", 100_000), None);
        assert_eq!(parse_time("1970-01-01T00:00:01Z", 0), Some(1000));
    }
}
