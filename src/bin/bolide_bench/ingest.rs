//! `ingest`: K author threads submit events back to back, one per connection, for
//! `--count` events or `--duration` seconds; the figures are events accepted per second
//! and the ack latency (connect to ack) of each.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::{Args, IngestArgs};
use crate::author::{resolve, submit, Outcome};
use crate::event::{EventMaker, CLASSES};
use crate::report::{latency_line, IngestFigures, IngestTool, Latency, Num, Report};
use crate::stats::{percentiles, self_cpu_s, Sampler};

/// What one author thread counted.
struct AuthorResult {
    lat: Vec<u32>,
    acked: u64,
    naks: u64,
    errors: u64,
    first_nak: Option<String>,
    first_error: Option<String>,
    last_reply: Instant,
}

impl AuthorResult {
    fn new(start: Instant) -> AuthorResult {
        AuthorResult {
            lat: Vec::new(),
            acked: 0,
            naks: 0,
            errors: 0,
            first_nak: None,
            first_error: None,
            last_reply: start,
        }
    }

    /// Add another thread's counts to these.
    fn merge(&mut self, r: AuthorResult) {
        self.lat.extend(r.lat);
        self.acked += r.acked;
        self.naks += r.naks;
        self.errors += r.errors;
        self.first_nak = self.first_nak.take().or(r.first_nak);
        self.first_error = self.first_error.take().or(r.first_error);
        self.last_reply = self.last_reply.max(r.last_reply);
    }
}

/// One author thread: take the next event number, submit it, until `stop_at` or the
/// count is reached; `hard` bounds each transaction too.
fn author(
    maker: &EventMaker,
    addr: SocketAddr,
    next: &AtomicU64,
    count: u64,
    start: Instant,
    stop_at: Instant,
    hard: Instant,
) -> AuthorResult {
    let mut r = AuthorResult::new(start);
    loop {
        if Instant::now() >= stop_at {
            break;
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        if count > 0 && n >= count {
            break;
        }
        let wire = maker.framed(&n.to_string(), n, n % CLASSES);
        let t0 = Instant::now();
        let left = hard
            .saturating_duration_since(t0)
            .max(Duration::from_secs(1));
        let out = submit(addr, &wire, left.min(Duration::from_secs(30)));
        let t1 = Instant::now();
        r.last_reply = t1;
        match out {
            Outcome::Ack => {
                r.acked += 1;
                r.lat
                    .push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
            }
            Outcome::Nak(why) => {
                r.naks += 1;
                r.first_nak.get_or_insert(why);
            }
            Outcome::Error(why) => {
                r.errors += 1;
                r.first_error.get_or_insert(why);
            }
        }
    }
    r
}

/// Run `ingest` against the broker of the global options.
pub fn run(g: &Args, a: &IngestArgs) -> Result<Report<IngestFigures>, String> {
    if a.authors == 0 {
        return Err("--authors must be at least 1".into());
    }
    if !a.duration.is_finite() || a.duration < 0.0 {
        return Err("--duration must be 0 or more seconds".into());
    }
    if a.count == 0 && a.duration <= 0.0 {
        return Err("give --count or --duration (both are unlimited)".into());
    }
    let addr = resolve(&g.host, g.receive_port)?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {addr} (receive port): {e}"))?;
    let maker = Arc::new(EventMaker::new(a.pad));
    let event_bytes = maker.event("0", 0, 0).len();
    let sampler = Sampler::for_pid(g.pid)?;
    let b0 = sampler.as_ref().map(|s| s.now());
    let cpu0 = self_cpu_s();
    let start = Instant::now();
    let hard = start + Duration::from_secs_f64(g.max_seconds);
    let stop_at = if a.duration > 0.0 {
        (start + Duration::from_secs_f64(a.duration)).min(hard)
    } else {
        hard
    };
    let next = Arc::new(AtomicU64::new(0));
    let count = a.count;
    let mut handles = Vec::new();
    for _ in 0..a.authors {
        let (next, maker) = (Arc::clone(&next), Arc::clone(&maker));
        handles.push(thread::spawn(move || {
            author(&maker, addr, &next, count, start, stop_at, hard)
        }));
    }
    let mut all = AuthorResult::new(start);
    for h in handles {
        all.merge(
            h.join()
                .map_err(|_| "an author thread panicked".to_string())?,
        );
    }
    let AuthorResult {
        mut lat,
        acked,
        naks,
        errors,
        first_nak,
        first_error,
        last_reply: end,
    } = all;
    let elapsed = (end - start).as_secs_f64().max(1e-9);
    let tool_cpu = self_cpu_s() - cpu0;
    let broker = sampler.map(|s| s.finish(b0.unwrap_or_default()));
    let lat = percentiles(&mut lat);
    let rate = acked as f64 / elapsed;
    let mut lines = vec![
        format!(
            "ingest: {} authors, {} events of {} bytes in {:.2} s",
            a.authors,
            acked + naks + errors,
            event_bytes,
            elapsed
        ),
        format!("  acked {acked}, naks {naks}, errors {errors}; accepted {rate:.1} events/s"),
    ];
    if let Some(n) = &first_nak {
        lines.push(format!("  first nak: {n}"));
    }
    if let Some(e) = &first_error {
        lines.push(format!("  first error: {e}"));
    }
    lines.extend(latency_line("ack latency (connect to ack)", lat));
    lines.push(format!(
        "  tool CPU {:.3} s ({:.1} us/event)",
        tool_cpu,
        tool_cpu * 1e6 / acked.max(1) as f64
    ));
    // Per accepted event, written only when there was one.
    let per_event = |cpu: f64| (acked > 0).then(|| Num(cpu * 1e6 / acked as f64));
    if let Some(b) = &broker {
        lines.push(format!(
            "  broker CPU {:.2} s ({:.1} us/event); RSS start {} kB, end {} kB, peak {} kB",
            b.cpu_s,
            b.cpu_s * 1e6 / acked.max(1) as f64,
            b.rss_start,
            b.rss_end,
            b.rss_peak
        ));
    }
    let figures = IngestFigures {
        mode: "ingest",
        run: maker.run.clone(),
        authors: a.authors,
        event_bytes,
        sent: acked + naks + errors,
        acked,
        naks,
        errors,
        elapsed_s: Num(elapsed),
        accepted_per_s: Num(rate),
        latency_ms: Latency::from(lat),
        tool: IngestTool {
            cpu_s: Num(tool_cpu),
            cpu_us_per_event: per_event(tool_cpu),
        },
        broker: broker.as_ref().map(Into::into),
        cpu_us_per_event: broker.as_ref().and_then(|b| per_event(b.cpu_s)),
    };
    let ok = naks == 0 && errors == 0 && acked > 0;
    Ok(Report { lines, figures, ok })
}
