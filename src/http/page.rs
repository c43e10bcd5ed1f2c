//! `GET /`: the status page for a person, self-contained (no script, font or style from
//! elsewhere) and reloading itself every [`REFRESH_SECS`]: counters with their rates since
//! the page was last rendered, the subscribers, the upstreams, the store, and the most
//! recent events with links to their XML.

use std::fmt::Write;
use std::time::Instant;

use super::events::percent_encode;
use super::status::{status, Status};
use super::{Context, Reply};
use crate::archive_reader::{EntryJson, Query};

/// Seconds between reloads.
pub const REFRESH_SECS: u32 = 5;
/// Recent events listed.
const RECENT: usize = 50;

/// The counters when the page was last rendered, for the rates.
pub struct Sample {
    at: Instant,
    values: Vec<u64>,
}

/// Escape text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:.9em}\
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.bad{color:#b00;font-weight:bold}.ok{color:#070}h2{margin-bottom:.3em}";

/// The counters shown with rates: label and value.
fn counters(s: &Status) -> Vec<(String, u64)> {
    let c = &s.counters;
    let mut v = Vec::new();
    for (k, n) in &c.accepted {
        v.push((format!("events accepted from {k}"), *n));
    }
    for (k, n) in &c.duplicates {
        v.push((format!("duplicates from {k}"), *n));
    }
    v.push((
        "events rejected (all reasons)".to_string(),
        c.rejected.values().sum(),
    ));
    v.push(("copies sent".to_string(), c.copies_sent));
    v.push((
        "subscribers dropped".to_string(),
        c.subscribers_dropped.values().sum(),
    ));
    v
}

/// Answer `/`.
pub fn page(ctx: &Context) -> Reply {
    let s = status(ctx);
    let counters = counters(&s);
    let now = Instant::now();
    let rates: Vec<Option<f64>> = {
        let mut prev = ctx.page_rates.lock().unwrap_or_else(|e| e.into_inner());
        let rates = match prev.as_ref() {
            Some(p) if p.values.len() == counters.len() && now > p.at => {
                let dt = now.duration_since(p.at).as_secs_f64();
                counters
                    .iter()
                    .zip(&p.values)
                    .map(|((_, n), was)| Some(n.saturating_sub(*was) as f64 / dt))
                    .collect()
            }
            _ => vec![None; counters.len()],
        };
        // A render less than a second after the last keeps the older sample.
        if prev
            .as_ref()
            .map_or(true, |p| now.duration_since(p.at).as_secs() >= 1)
        {
            *prev = Some(Sample {
                at: now,
                values: counters.iter().map(|c| c.1).collect(),
            });
        }
        rates
    };
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"><title>bolide {}</title><style>{STYLE}</style></head><body>",
        esc(s.version)
    );
    let _ = write!(
        h,
        "<h1>bolide {}</h1><p>Started {} (up {} s). Health: {}</p>",
        esc(s.version),
        esc(&s.start_time),
        s.uptime_seconds,
        if s.healthy {
            "<span class=\"ok\" id=\"health\">serving</span>"
        } else {
            "<span class=\"bad\" id=\"health\">cannot commit to the event database</span>"
        }
    );
    h.push_str("<h2>Listeners</h2><table><tr><th>for</th><th>address</th></tr>");
    for l in &s.listeners {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            l.role,
            esc(&l.address)
        );
    }
    h.push_str("</table><h2>Counters</h2><table><tr><th>counter</th><th>total</th><th>per second</th></tr>");
    for ((name, n), rate) in counters.iter().zip(&rates) {
        let rate = rate.map_or("–".to_string(), |r| format!("{r:.2}"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{rate}</td></tr>",
            esc(name)
        );
    }
    let _ = write!(
        h,
        "</table><h2>Subscribers: <span id=\"subscriber-count\">{}</span></h2>\
<table><tr><th>address</th><th>connected since</th><th>filters</th><th>sent</th><th>acked</th><th>queued</th></tr>",
        s.subscribers.len()
    );
    for sub in &s.subscribers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&sub.address),
            esc(&sub.connected_since),
            esc(&sub.filters.join(" | ")),
            sub.events_sent,
            sub.events_acked,
            sub.queued
        );
    }
    let _ = write!(
        h,
        "</table><h2>Upstreams: {}</h2><table><tr><th>remote</th><th>state</th><th>connected since</th><th>received</th><th>last event</th><th>reconnects</th></tr>",
        s.upstreams.len()
    );
    for u in &s.upstreams {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(&u.remote),
            u.state,
            esc(u.connected_since.as_deref().unwrap_or("–")),
            u.events_received,
            esc(u.last_event.as_deref().unwrap_or("–")),
            u.reconnects
        );
    }
    let st = &s.store;
    let _ = write!(
        h,
        "</table><h2>Store</h2><table>\
<tr><td>event database</td><td>{}</td></tr>\
<tr><td>map size</td><td class=\"n\">{}</td></tr><tr><td>bytes in use</td><td class=\"n\">{}</td></tr>\
<tr><td>archived events</td><td class=\"n\">{}</td></tr><tr><td>archived bytes</td><td class=\"n\">{}</td></tr>\
<tr><td>oldest event</td><td>{}</td></tr></table>",
        esc(&st.path),
        st.map_bytes,
        st.used_bytes,
        st.archive_events,
        st.archive_bytes,
        esc(st.oldest_event.as_deref().unwrap_or("–"))
    );
    if let Some(p) = &s.process {
        let _ = write!(
            h,
            "<h2>Process</h2><table><tr><td>resident memory (RSS)</td><td class=\"n\" id=\"rss\">{}</td></tr>\
<tr><td>threads</td><td class=\"n\">{}</td></tr></table>",
            p.rss_bytes, p.threads
        );
    }
    if let Some(k) = &s.kafka {
        let age = k
            .heartbeat_age_seconds
            .map_or("–".to_string(), |a| format!("{a:.0} s"));
        let _ = write!(
            h,
            "<h2>Kafka</h2><table><tr><td>topics</td><td>{}</td></tr>\
<tr><td>heartbeat age</td><td>{}</td></tr></table>\
<table><tr><th>topic</th><th>partition</th><th>lag</th></tr>",
            esc(&k.topics.join(", ")),
            age
        );
        for l in &k.lag {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&l.topic),
                l.partition,
                l.lag
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2>Recent events</h2><table id=\"events\"><tr><th>accepted</th><th>role</th><th>ivorn</th><th>from</th><th>bytes</th></tr>"
    );
    let q = Query {
        limit: Some(RECENT),
        reverse: true,
        ..Query::default()
    };
    let _ = ctx.archive.query(&q, |e| {
        let j = EntryJson::new(e);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td><a href=\"/events/{}\">{}</a></td><td>{} {}</td><td class=\"n\">{}</td></tr>",
            esc(&j.accepted),
            j.role,
            percent_encode(j.ivorn),
            esc(j.ivorn),
            j.source_kind,
            esc(j.source),
            j.bytes
        );
        true
    });
    h.push_str("</table><p>Also: <a href=\"/metrics\">/metrics</a> · <a href=\"/status\">/status</a> · <a href=\"/events\">/events</a> · <a href=\"/healthz\">/healthz</a></p></body></html>");
    Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: h.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::esc("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
