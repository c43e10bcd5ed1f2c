//! Wall-clock helpers: Unix seconds and milliseconds, the UTC `YYYY-MM-DDThh:mm:ssZ` form
//! that Comet writes in every Transport `TimeStamp` and test-event ivorn, and reading ISO
//! 8601 times back (the archive's filters, VOEvents' `Who/Date`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `ms` since the epoch as `YYYY-MM-DDThh:mm:ss.mmmZ`.
pub fn utc_timestamp_ms(ms: u64) -> String {
    let s = utc_timestamp(ms / 1000);
    format!("{}.{:03}Z", &s[..s.len() - 1], ms % 1000)
}

/// Read an ISO 8601 date or date-time as Unix milliseconds: `YYYY-MM-DD`, or
/// `YYYY-MM-DDThh:mm[:ss[.fff]]` followed by `Z`, `+hh:mm`, `-hh:mm` or nothing (UTC, as
/// VOEvent's `Who/Date` is read). `None` if it is not one, or is before 1970.
pub fn parse_iso8601_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let num = |t: &str| -> Option<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, dd) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
        return None;
    }
    let mut ms = days_from_civil(y, m as u32, dd as u32) * 86_400_000;
    if let Some(rest) = rest {
        let (clock, offset_ms) = match rest.find(['Z', 'z', '+', '-']) {
            Some(at) => {
                let zone = &rest[at..];
                let off = match zone.as_bytes()[0] {
                    b'Z' | b'z' if zone.len() == 1 => 0,
                    sign @ (b'+' | b'-') => {
                        let (h, mi) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
                        let o = (num(h)? * 60 + num(mi)?) * 60_000;
                        if sign == b'+' {
                            o
                        } else {
                            -o
                        }
                    }
                    _ => return None,
                };
                (&rest[..at], off)
            }
            None => (rest, 0),
        };
        let mut parts = clock.split(':');
        let h = num(parts.next()?)?;
        let mi = num(parts.next()?)?;
        let (sec, frac) = match parts.next() {
            Some(sec) => match sec.split_once('.') {
                Some((s, f)) => (num(s)?, Some(f)),
                None => (num(sec)?, None),
            },
            None => (0, None),
        };
        if parts.next().is_some() || h > 24 || mi > 59 || sec > 60 {
            return None;
        }
        let frac_ms = match frac {
            Some(f) => {
                num(f)?;
                let digits: String = f.chars().chain("000".chars()).take(3).collect();
                num(&digits)?
            }
            None => 0,
        };
        ms += ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms - offset_ms;
    }
    u64::try_from(ms).ok()
}

/// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` since the epoch as `YYYY-MM-DDThh:mm:ssZ`.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The current time as `YYYY-MM-DDThh:mm:ssZ`.
pub fn utc_now() -> String {
    utc_timestamp(unix_now())
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days` algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_325_376_000), "2012-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_825_599), "2000-02-29T11:59:59Z");
        assert_eq!(utc_timestamp(1_795_219_200), "2026-11-21T00:00:00Z");
        assert_eq!(
            utc_timestamp_ms(1_795_219_200_042),
            "2026-11-21T00:00:00.042Z"
        );
    }

    /// ISO 8601 read back: dates, times with and without seconds, fractions, zones, and
    /// what is refused.
    #[test]
    fn iso8601_read_back() {
        let p = parse_iso8601_ms;
        assert_eq!(p("1970-01-01"), Some(0));
        assert_eq!(p("2026-11-21"), Some(1_795_219_200_000));
        assert_eq!(p("2026-11-21T00:00:00Z"), Some(1_795_219_200_000));
        assert_eq!(p("2026-11-21T00:00:00"), Some(1_795_219_200_000));
        assert_eq!(p("2026-11-21T01:30"), Some(1_795_219_200_000 + 5_400_000));
        assert_eq!(p("2026-11-21T00:00:00.5Z"), Some(1_795_219_200_500));
        assert_eq!(p("2026-11-21T00:00:00.123456"), Some(1_795_219_200_123));
        assert_eq!(p("2026-11-21T02:00:00+02:00"), Some(1_795_219_200_000));
        assert_eq!(p("2026-11-20T22:00:00-02:00"), Some(1_795_219_200_000));
        assert_eq!(p(" 2000-02-29T11:59:59 "), Some(951_825_599_000));
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-11-21T",
            "2026-11-21T25:00",
            "x-1-1",
            "2026-11-21T00:00:00Q",
            "1969-12-31",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        for secs in [0u64, 951_825_599, 1_795_219_200, 4_102_444_800] {
            assert_eq!(p(&utc_timestamp(secs)), Some(secs * 1000));
        }
    }
}
