//! `GET /events` (the archive selected by `bolide-archive list`'s filters as query
//! parameters: a JSON array of the objects `bolide-archive list --json` prints) and
//! `GET /events/<percent-encoded ivorn>` (the event's exact bytes). Both read the
//! broker's own environment in one LMDB read transaction.

use serde::Serialize;

use super::{Context, Reply};
use crate::archive_filters::Filters;
use crate::archive_reader::EntryJson;
use crate::time::unix_now_ms;

/// Entries returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most entries one request returns.
pub const MAX_LIMIT: usize = 10_000;

/// Decode `%XX` escapes (and `+` as a space when `plus` is set, as in a query string);
/// `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
                continue;
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Encode everything but RFC 3986's unreserved characters, for a path segment.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// A query string's parameters, decoded, in order.
fn params(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (percent_decode(k, true), percent_decode(v, true)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!(
                    "parameter '{p}' is not valid percent-encoded UTF-8"
                )),
            }
        })
        .collect()
}

/// Answer `/events?...`.
pub fn list(ctx: &Context, query: &str) -> Reply {
    match select(ctx, query) {
        Ok(body) => Reply {
            status: 200,
            content_type: "application/json",
            body,
        },
        Err(why) => Reply::text(400, &why),
    }
}

fn select(ctx: &Context, query: &str) -> Result<Vec<u8>, String> {
    let params = params(query)?;
    let one = |name: &str| -> Result<Option<&str>, String> {
        let mut it = params.iter().filter(|(k, _)| k == name);
        let v = it.next().map(|(_, v)| v.as_str());
        match it.next() {
            Some(_) => Err(format!("{name} given twice")),
            None => Ok(v),
        }
    };
    const KNOWN: [&str; 10] = [
        "since",
        "until",
        "authored_since",
        "authored_until",
        "ivorn_prefix",
        "ivorn_contains",
        "role",
        "xpath",
        "limit",
        "order",
    ];
    if let Some((k, _)) = params.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "unknown parameter '{k}': use since, until, authored_since, authored_until, ivorn_prefix, ivorn_contains, role, xpath, limit, order"
        ));
    }
    let prefixes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "ivorn_prefix")
        .map(|(_, v)| v.clone())
        .collect();
    let filters = Filters {
        since: one("since")?,
        until: one("until")?,
        authored_since: one("authored_since")?,
        authored_until: one("authored_until")?,
        ivorn_prefixes: &prefixes,
        ivorn_contains: one("ivorn_contains")?,
        role: one("role")?,
        xpath: one("xpath")?,
    };
    let mut q = filters.query(unix_now_ms()).map_err(|e| e.to_string())?;
    q.limit = Some(match one("limit")? {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("limit '{l}' is not a number from 1 to {MAX_LIMIT}"))?,
    });
    q.reverse = match one("order")? {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(o) => return Err(format!("order '{o}' is neither oldest nor newest")),
    };
    let mut out = Vec::with_capacity(4096);
    out.push(b'[');
    let mut first = true;
    let mut err = None;
    ctx.archive
        .query(&q, |e| {
            if !first {
                out.push(b',');
            }
            first = false;
            if let Err(e) = EntryJson::new(e).serialize(&mut serde_json::Serializer::new(&mut out))
            {
                err = Some(e.to_string());
                return false;
            }
            true
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = err {
        return Err(e);
    }
    out.push(b']');
    Ok(out)
}

/// Answer `/events/<ivorn>`.
pub fn show(ctx: &Context, encoded: &str) -> Reply {
    let Some(ivorn) = percent_decode(encoded, false) else {
        return Reply::text(400, "the ivorn is not valid percent-encoded UTF-8");
    };
    match ctx.archive.newest_bytes(&ivorn) {
        Ok(Some(bytes)) => Reply {
            status: 200,
            content_type: "application/xml",
            body: bytes,
        },
        Ok(None) => Reply::text(404, &format!("no event {ivorn} in the archive")),
        Err(e) => Reply::text(500, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips_an_ivorn() {
        let ivorn = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234-567 é";
        let enc = percent_encode(ivorn);
        assert!(!enc.contains(['#', '/', ' ']));
        assert_eq!(percent_decode(&enc, false).as_deref(), Some(ivorn));
        assert_eq!(percent_decode("a+b%2B", true).as_deref(), Some("a b+"));
        assert_eq!(percent_decode("%zz", true), None);
        assert_eq!(percent_decode("%C3", true), None);
    }
}
