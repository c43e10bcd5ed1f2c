//! `fanout` and `filter`: one author sends `--count` events at `--rate` to S subscribers
//! ([`crate::subscribers`]) that ack every event; the figures are deliveries per second
//! and the end-to-end latency (author send → each subscriber's receipt, one clock).
//! `filter` is the same run with subscribers that install XPath filters (4 distinct
//! expressions, round-robin): exactly the matching events must arrive.
//!
//! A run: connect the subscribers; wait until the broker has registered them all
//! ([`register`]); idle a moment (the broker's memory with subscribers); send the events
//! ([`send`]); wait for the deliveries ([`wait_deliveries`]); count.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bolide::frame::encode;

use crate::args::{Args, FanArgs};
use crate::author::{resolve, submit, Outcome};
use crate::event::{EventMaker, CLASSES};
use crate::report::{latency_line, FanFigures, FanTool, Latency, Num, Report};
use crate::stats::{percentiles, self_cpu_s, BrokerFigures, Sampler};
use crate::subscribers::{self, Shared};

/// Wait for authenticate to be answered everywhere (a broker that never sends it, like
/// some non-Comet brokers, just costs this timeout), then probe until every subscriber
/// gets events: only then is the broker known to have registered them all. Probes are
/// events of this run whose local part is `p<round>c<class>`; in `filter` mode one of
/// each class, so that every filter matches one. Returns the probe rounds made.
fn register(
    shared: &Shared,
    maker: &EventMaker,
    raddr: SocketAddr,
    filtered: bool,
    hard: Instant,
) -> Result<u32, String> {
    let auth_deadline = (Instant::now() + Duration::from_secs(10)).min(hard);
    while Instant::now() < auth_deadline
        && !shared
            .authenticated
            .iter()
            .all(|a| a.load(Ordering::Acquire))
    {
        thread::sleep(Duration::from_millis(10));
    }
    let mut probe_errors = 0u64;
    let mut ready = false;
    let probe_deadline = (Instant::now() + Duration::from_secs(60)).min(hard);
    let mut round = 0u32;
    while !ready && Instant::now() < probe_deadline {
        let classes: Vec<u64> = if filtered {
            (0..CLASSES).collect()
        } else {
            vec![0]
        };
        for &cl in &classes {
            let ev = maker.event(&format!("p{round}c{cl}"), 0, cl);
            if !matches!(
                submit(raddr, &encode(&ev), Duration::from_secs(30)),
                Outcome::Ack
            ) {
                probe_errors += 1;
            }
        }
        let wait = Instant::now() + Duration::from_secs(2);
        while Instant::now() < wait {
            if shared
                .probe_seen
                .iter()
                .all(|p| p.load(Ordering::Relaxed) > round)
            {
                ready = true;
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        round += 1;
    }
    if probe_errors > 0 && round as u64 <= probe_errors {
        shared.stop.store(true, Ordering::Relaxed);
        return Err(format!(
            "the broker at {raddr} refused every probe event (is it running with --receive, \
             and this host whitelisted?)"
        ));
    }
    Ok(round)
}

/// What the author counted.
#[derive(Default)]
struct Sent {
    sent: u64,
    naks: u64,
    errors: u64,
    first_error: Option<String>,
}

/// The author: event n at `t0 + n / rate` (back to back at rate 0), each one's send
/// instant recorded in `shared` for the latencies; stops at `hard`.
fn send(
    shared: &Shared,
    maker: &EventMaker,
    raddr: SocketAddr,
    rate: f64,
    t0: Instant,
    hard: Instant,
) -> Sent {
    let mut s = Sent::default();
    for n in 0..shared.count {
        if rate > 0.0 {
            let at = t0 + Duration::from_secs_f64(n as f64 / rate);
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
        }
        if Instant::now() >= hard {
            s.first_error
                .get_or_insert_with(|| "--max-seconds reached while sending".into());
            break;
        }
        let wire = maker.framed(&n.to_string(), n, n % CLASSES);
        let ns = Instant::now().duration_since(shared.base).as_nanos() as u64 + 1;
        shared.sent_ns[n as usize].store(ns, Ordering::Release);
        s.sent += 1;
        match submit(raddr, &wire, Duration::from_secs(30)) {
            Outcome::Ack => {}
            Outcome::Nak(why) => {
                s.naks += 1;
                s.first_error
                    .get_or_insert(format!("event {n} nak'd: {why}"));
            }
            Outcome::Error(why) => {
                s.errors += 1;
                s.first_error.get_or_insert(format!("event {n}: {why}"));
            }
        }
    }
    s
}

/// Wait until `expected` copies arrived, 10 s passed without progress, or `hard`;
/// returns the instant of the last progress.
fn wait_deliveries(shared: &Shared, expected: u64, hard: Instant) -> Instant {
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    let mut done_at = Instant::now();
    loop {
        let d = shared.delivered.load(Ordering::Relaxed);
        let now = Instant::now();
        if d != last {
            last = d;
            last_change = now;
            done_at = now;
        }
        if d >= expected || now >= hard || now - last_change > Duration::from_secs(10) {
            return done_at;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Run `fanout`, or `filter` when `filtered`, against the broker of the global options.
pub fn run(g: &Args, c: &FanArgs, filtered: bool) -> Result<Report<FanFigures>, String> {
    let mode = if filtered { "filter" } else { "fanout" };
    if c.subscribers == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if c.count == 0 {
        return Err("--count must be at least 1".into());
    }
    if !c.rate.is_finite() || c.rate < 0.0 {
        return Err("--rate must be 0 or more".into());
    }
    let raddr = resolve(&g.host, g.receive_port)?;
    let baddr = resolve(&g.host, g.broadcast_port)?;
    // One descriptor per subscriber, and a margin for the authors, the epoll sets and
    // the broker's /proc files.
    let nofile = bolide::sys::raise_nofile_limit();
    let need = c.subscribers as u64 + 64;
    if nofile < need {
        return Err(format!(
            "--subscribers {} needs {need} open files, but the hard limit is {nofile}: \
             raise it (`ulimit -Hn`, LimitNOFILE= or /etc/security/limits.conf)",
            c.subscribers
        ));
    }
    let begin = Instant::now();
    let hard = begin + Duration::from_secs_f64(g.max_seconds);
    let maker = EventMaker::new(c.pad);
    let event_bytes = maker.event("0", 0, 0).len();
    let sampler = Sampler::for_pid(g.pid)?;
    let rss_start = sampler.as_ref().map(|s| s.now().rss_kb);
    let shared = Arc::new(Shared::new(
        maker.prefix().into_bytes(),
        c.count,
        c.subscribers,
        filtered,
    ));
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let nthreads = c.threads.unwrap_or(cpus.min(4)).clamp(1, c.subscribers);
    let workers = subscribers::start(baddr, &shared, nthreads)?;
    let round = register(&shared, &maker, raddr, filtered, hard)?;
    let connected = shared
        .probe_seen
        .iter()
        .filter(|p| p.load(Ordering::Relaxed) > 0)
        .count();
    let setup_s = begin.elapsed().as_secs_f64();
    let mut lines = vec![format!(
        "{mode}: {} subscribers ({} receiving after {} probe round(s), {:.2} s), {} events of {} bytes at {}",
        c.subscribers,
        connected,
        round,
        setup_s,
        c.count,
        event_bytes,
        if c.rate > 0.0 {
            format!("{} events/s", c.rate)
        } else {
            "back to back".into()
        }
    )];
    // Idle with subscribers.
    thread::sleep(Duration::from_millis(300));
    let rss_idle = sampler.as_ref().map(|s| s.now().rss_kb);
    let b0 = sampler.as_ref().map(|s| s.now());
    if let (Some(s), Some(b)) = (&sampler, b0) {
        s.reset_peak(b.rss_kb);
    }
    let scraper = c.scrape.as_deref().map(crate::scrape::start).transpose()?;
    let cpu0 = self_cpu_s();
    let expected = shared.expected_deliveries();
    let t0 = Instant::now();
    let Sent {
        sent,
        naks,
        errors,
        first_error,
    } = send(&shared, &maker, raddr, c.rate, t0, hard);
    let send_s = t0.elapsed().as_secs_f64();
    let done_at = wait_deliveries(&shared, expected, hard);
    // A short grace to catch duplicates or unexpected late copies.
    thread::sleep(Duration::from_millis(200));
    let tool_cpu = self_cpu_s() - cpu0;
    if let Some((ok, failed)) = scraper.map(crate::scrape::Scraper::finish) {
        lines.push(format!("  scraped /metrics {ok} times ({failed} failed)"));
    }
    let broker = sampler.map(|s| BrokerFigures {
        // Before the subscribers connected, and with them idle.
        rss_start: rss_start.unwrap_or(0),
        rss_subscribers_idle: rss_idle,
        ..s.finish(b0.unwrap_or_default())
    });
    shared.stop.store(true, Ordering::Relaxed);
    let mut st = subscribers::join(workers)?;
    let elapsed = (done_at - t0).as_secs_f64().max(1e-9);
    let lost = expected.saturating_sub(st.delivered);
    let lat = percentiles(&mut st.lat);
    let per_s = st.delivered as f64 / elapsed;
    lines.push(format!(
        "  sent {sent} in {send_s:.2} s (naks {naks}, errors {errors}); delivered {} of {expected} \
         expected in {elapsed:.2} s ({per_s:.0} deliveries/s)",
        st.delivered
    ));
    lines.push(format!(
        "  lost {lost}, duplicates {}, unexpected {}, foreign {}, disconnects {}",
        st.duplicates, st.unexpected, st.foreign, st.disconnects
    ));
    if let Some(p) = &st.first_problem {
        lines.push(format!("  first problem: {p}"));
    }
    if let Some(e) = &first_error {
        lines.push(format!("  first author error: {e}"));
    }
    lines.extend(latency_line("e2e latency", lat));
    let per_copy = |cpu: f64| cpu * 1e6 / st.delivered.max(1) as f64;
    lines.push(format!(
        "  tool CPU {tool_cpu:.3} s ({:.2} us/copy, {} threads)",
        per_copy(tool_cpu),
        nthreads
    ));
    if let Some(b) = &broker {
        lines.push(format!(
            "  broker CPU {:.2} s ({:.2} us/copy); RSS start {} kB, with subscribers idle {} kB, \
             end {} kB, peak {} kB",
            b.cpu_s,
            per_copy(b.cpu_s),
            b.rss_start,
            b.rss_subscribers_idle.unwrap_or(0),
            b.rss_end,
            b.rss_peak
        ));
    }
    let ok = lost == 0
        && st.duplicates == 0
        && st.unexpected == 0
        && naks == 0
        && errors == 0
        && st.disconnects == 0
        && sent == c.count;
    let figures = FanFigures {
        mode,
        run: maker.run.clone(),
        subscribers: c.subscribers,
        subscribers_receiving: connected,
        count: c.count,
        rate: Num(c.rate),
        event_bytes,
        sent,
        naks,
        errors,
        delivered: st.delivered,
        expected_deliveries: expected,
        lost,
        duplicates: st.duplicates,
        unexpected: st.unexpected,
        foreign: st.foreign,
        disconnects: st.disconnects,
        send_s: Num(send_s),
        elapsed_s: Num(elapsed),
        deliveries_per_s: Num(per_s),
        latency_ms: Latency::from(lat),
        tool: FanTool {
            cpu_s: Num(tool_cpu),
            cpu_us_per_copy: Num(per_copy(tool_cpu)),
            threads: nthreads,
        },
        broker: broker.as_ref().map(Into::into),
        cpu_us_per_copy: broker.as_ref().map(|b| Num(per_copy(b.cpu_s))),
    };
    Ok(Report { lines, figures, ok })
}
