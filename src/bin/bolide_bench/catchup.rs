//! `bolide-bench catchup`: how fast reconnecting subscribers receive what they missed, and
//! what their replays cost everyone else.
//!
//! M plain VTP subscribers (`--replays`, default 1) connect, each from its own loopback
//! address 127.1.x.y, answer `authenticate` at once (no filters) and ack a first event;
//! they disconnect; one author then submits N events back to back; all M reconnect at
//! once, each from its own address again, and receive until each has all N (or
//! `--max-seconds` passes). The broker must resume subscribers from these addresses
//! (bolide: `--resume-subscribers 127.1.0.0/16`): the events come from its archive, then
//! live. Reported: the time from the reconnect to the last of the N at the slowest
//! subscriber, events/s over all of them, and the events lost, duplicated or out of order
//! (any of which fails the run). The replaying subscribers run at nice 19: they stand for
//! remote subscribers, which would not take CPU from the broker.
//!
//! With `--live-rate R`, a live subscriber from the broker's usual address stays connected
//! throughout, and an author submits R events a second, first for `--baseline` seconds
//! before the replays, then while they run. Reported for both phases: the authors' ack
//! latency and the live subscriber's delivery latency (submission to receipt), so that a
//! replay's cost to live traffic is a difference between two columns of one run.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;
use bolide::frame::FrameReader;
use bolide::sys::{connect_from, DeadlineReader};
use bolide::transport;
use serde::Serialize;

use crate::args::Args;
use crate::author::{resolve, submit, Outcome};
use crate::event::EventMaker;
use crate::report::{latency_line, Latency, Num, Report};
use crate::scan::{attr_in, transport_role};
use crate::stats::percentiles;

/// Subscribers reconnect after N events: time to receive them all from the broker's
/// catch-up (bolide needs --resume-subscribers 127.1.0.0/16), and, with --live-rate, the
/// latency of live traffic before and during the replays.
#[derive(FromArgs)]
#[argh(subcommand, name = "catchup")]
pub struct CatchupArgs {
    /// events accepted while the subscribers are away (default 10000)
    #[argh(option, default = "10_000")]
    pub count: u64,
    /// extra bytes of Description text in every event (default 0)
    #[argh(option, default = "0")]
    pub pad: usize,
    /// subscribers that reconnect at once, each from its own address 127.1.x.y
    /// (default 1)
    #[argh(option, default = "1")]
    pub replays: u32,
    /// live events per second, submitted before and during the replays to a live
    /// subscriber that stays connected (default 0: none)
    #[argh(option, default = "0.0")]
    pub live_rate: f64,
    /// seconds of live events before the replays start (default 3)
    #[argh(option, default = "3.0")]
    pub baseline: f64,
}

/// Who the subscribers say they are, and the broker they answer.
const ME: &str = "ivo://bolide.bench/subscriber";
const BROKER: &str = "ivo://bolide.bench/broker";

/// The JSON figures.
#[derive(Serialize)]
pub struct CatchupFigures {
    mode: &'static str,
    count: u64,
    replays: u32,
    /// Missed events received, over all the replaying subscribers.
    received: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Seconds from the reconnect to the last missed event at the slowest subscriber.
    seconds: Num,
    /// Missed events received per second, over all the replaying subscribers.
    events_per_s: Num,
    /// Seconds the fastest subscriber took.
    fastest_seconds: Num,
    /// Seconds the author took to submit the N events.
    submit_seconds: Num,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<LiveFigures>,
}

/// `live`: the live traffic before and during the replays.
#[derive(Serialize)]
struct LiveFigures {
    rate: Num,
    submitted: u64,
    naks: u64,
    errors: u64,
    /// Live events acked but never received by the live subscriber.
    lost: u64,
    before: LivePhase,
    during: LivePhase,
}

/// The live events submitted in one phase.
#[derive(Serialize)]
struct LivePhase {
    events: u64,
    ack_ms: Latency,
    delivery_ms: Latency,
}

/// A blocking VTP subscriber that acks every event and answers iamalive.
struct Sub {
    s: TcpStream,
    frames: FrameReader,
}

impl Sub {
    /// Take `s` as a subscriber connection: answer the broker's `authenticate` at once,
    /// so that events flow without waiting for the broker's patience to end.
    fn over(s: TcpStream, deadline: Instant) -> Result<Sub, String> {
        let mut sub = Sub {
            s,
            frames: FrameReader::new(16 << 20),
        };
        let f = sub
            .next(deadline)?
            .ok_or("no authenticate from the broker")?;
        if transport_role(&f) != Some(b"authenticate") {
            return Err("the broker did not send authenticate first".into());
        }
        sub.reply(transport::authenticate_response(BROKER, Some(ME), &[]))?;
        Ok(sub)
    }

    fn reply(&mut self, msg: Vec<u8>) -> Result<(), String> {
        self.s
            .write_all(&bolide::frame::encode(&msg))
            .map_err(|e| format!("subscriber write: {e}"))
    }

    /// The next frame (`None` at the deadline).
    fn next(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, String> {
        let mut r = DeadlineReader {
            stream: &self.s,
            deadline,
        };
        match self.frames.read_frame(&mut r) {
            Ok(f) => Ok(Some(f)),
            Err(bolide::frame::FrameError::TimedOut) => Ok(None),
            Err(e) => Err(format!("subscriber read: {e}")),
        }
    }

    /// The next event's ivorn, acked (iamalives answered on the way).
    fn event(&mut self, deadline: Instant) -> Result<Option<String>, String> {
        while let Some(f) = self.next(deadline)? {
            match transport_role(&f) {
                Some(b"iamalive") => self.reply(transport::iamalive_response(BROKER, Some(ME)))?,
                Some(_) => {}
                None => {
                    let ivorn = attr_in(&f, b"ivorn=\"", 4096)
                        .map(|v| String::from_utf8_lossy(v).to_string())
                        .unwrap_or_default();
                    self.reply(transport::ack(&ivorn, Some(ME)))?;
                    return Ok(Some(ivorn));
                }
            }
        }
        Ok(None)
    }

    /// Receive until `ivorn` arrives; anything before it is the broker catching this
    /// address up on an earlier run, or events of the phase before.
    fn skip_to(&mut self, ivorn: &str, deadline: Instant) -> Result<(), String> {
        loop {
            match self.event(deadline)? {
                Some(iv) if iv == ivorn => return Ok(()),
                Some(_) => {}
                None => return Err(format!("{ivorn} did not arrive")),
            }
        }
    }
}

/// The address replaying subscriber `i` connects from: 127.1.0.1, 127.1.0.2, ...
fn replay_address(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x7f01_0000 + i + 1)
}

/// What one replaying subscriber received after reconnecting.
struct Replay {
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    /// From the reconnect to the last missed event.
    seconds: f64,
}

/// Reconnect from `from` once every replaying subscriber is ready (`start`), and receive
/// until all of `missed` have arrived or the deadline passes.
fn replay(
    subs: SocketAddr,
    from: Ipv4Addr,
    missed: &[String],
    start: &Barrier,
    deadline: Instant,
) -> Result<Replay, String> {
    let want: HashSet<&str> = missed.iter().map(String::as_str).collect();
    // Replaying subscribers stand for remote ones, which would not share the broker's
    // CPUs: at the lowest priority they take only what the broker and the live traffic
    // leave, so the live figures show the broker's cost, not this tool's.
    bolide::sys::lower_thread_priority();
    start.wait();
    let reconnected = Instant::now();
    let s = connect_from(from, subs).map_err(|e| format!("{from}: connect: {e}"))?;
    let mut sub = Sub::over(s, deadline)?;
    let (mut seen, mut duplicates, mut out_of_order) = (HashSet::new(), 0u64, 0u64);
    let mut last = reconnected;
    while seen.len() < missed.len() {
        let Some(iv) = sub.event(deadline)? else {
            break;
        };
        if !want.contains(iv.as_str()) {
            continue;
        }
        last = Instant::now();
        if !seen.insert(iv.clone()) {
            duplicates += 1;
            continue;
        }
        if missed[seen.len() - 1] != iv {
            out_of_order += 1;
        }
    }
    Ok(Replay {
        received: seen.len() as u64,
        duplicates,
        out_of_order,
        seconds: (last - reconnected).as_secs_f64(),
    })
}

/// One live event as its author saw it: when its submission began, and how long the
/// ack took (`None`: a nak or an error).
struct LiveSent {
    ivorn: String,
    sent: Instant,
    ack_us: Option<u32>,
    nak: bool,
}

/// The live author: R events a second until `stop`, each its own VTP author connection.
fn live_author(
    authors: SocketAddr,
    maker: &EventMaker,
    rate: f64,
    stop: &AtomicBool,
) -> Vec<LiveSent> {
    let began = Instant::now();
    let mut out = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = began + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let local = format!("live{i}");
        let wire = maker.framed(&local, 1_000_000 + i, 0);
        let sent = Instant::now();
        let outcome = submit(authors, &wire, Duration::from_secs(30));
        let took = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
        out.push(LiveSent {
            ivorn: format!("{}{local}", maker.prefix()),
            sent,
            ack_us: matches!(outcome, Outcome::Ack).then_some(took),
            nak: matches!(outcome, Outcome::Nak(_)),
        });
        i += 1;
    }
    out
}

/// The live subscriber: receive (and ack) everything until `end` arrives (or, once
/// `stop` is set, a second passes with nothing), keeping when each live event came.
fn live_subscriber(
    mut sub: Sub,
    prefix: &str,
    end: &str,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<HashMap<String, Instant>, String> {
    let live = format!("{prefix}live");
    let mut got = HashMap::new();
    loop {
        let slice = deadline.min(Instant::now() + Duration::from_secs(1));
        match sub.event(slice)? {
            Some(iv) if iv == end => break,
            Some(iv) if iv.starts_with(&live) => {
                got.entry(iv).or_insert_with(Instant::now);
            }
            Some(_) => {}
            None if stop.load(Ordering::Relaxed) || Instant::now() >= deadline => break,
            None => {}
        }
    }
    Ok(got)
}

/// Sets the flag when dropped, so that the live threads stop on every way out of a run.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// (p50, p99, max) in ms, `None` with no samples ([`percentiles`]).
type Percentiles = Option<(f64, f64, f64)>;

/// Ack and delivery latencies of the live events submitted in [from, to).
fn live_phase(
    sent: &[LiveSent],
    got: &HashMap<String, Instant>,
    from: Instant,
    to: Instant,
) -> (LivePhase, [Percentiles; 2]) {
    let mut acks = Vec::new();
    let mut deliveries = Vec::new();
    let mut events = 0;
    for e in sent.iter().filter(|e| e.sent >= from && e.sent < to) {
        events += 1;
        if let Some(us) = e.ack_us {
            acks.push(us);
        }
        if let Some(at) = got.get(&e.ivorn) {
            let us = at.duration_since(e.sent).as_micros().min(u32::MAX as u128) as u32;
            deliveries.push(us);
        }
    }
    let (ack, delivery) = (percentiles(&mut acks), percentiles(&mut deliveries));
    let phase = LivePhase {
        events,
        ack_ms: ack.into(),
        delivery_ms: delivery.into(),
    };
    (phase, [ack, delivery])
}

pub fn run(args: &Args, a: &CatchupArgs) -> Result<Report<CatchupFigures>, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.max_seconds);
    let authors = resolve(&args.host, args.receive_port)?;
    let subs = resolve(&args.host, args.broadcast_port)?;
    if !matches!(subs.ip(), IpAddr::V4(ip) if ip.is_loopback()) {
        return Err(format!(
            "catchup needs a broker on 127.0.0.0/8 (its subscribers connect from 127.1.x.y), not {}",
            subs.ip()
        ));
    }
    if a.replays == 0 || a.replays > 65_000 {
        return Err(format!("--replays {}: give 1 to 65000", a.replays));
    }
    if a.live_rate < 0.0 || !a.live_rate.is_finite() {
        return Err(format!("--live-rate {}: give 0 or more", a.live_rate));
    }
    let maker = EventMaker::new(a.pad);
    let author = |local: &str, seq: u64| match submit(
        authors,
        &maker.framed(local, seq, 0),
        Duration::from_secs(30),
    ) {
        Outcome::Ack => Ok(()),
        Outcome::Nak(r) => Err(format!("{local}: nak ({r})")),
        Outcome::Error(e) => Err(format!("{local}: {e}")),
    };
    let first = format!("{}first", maker.prefix());

    // Every replaying subscriber acks the first event, so the broker holds a position for
    // its address; then all of them go away.
    let mut away = Vec::with_capacity(a.replays as usize);
    for i in 0..a.replays {
        let from = replay_address(i);
        let s = connect_from(from, subs).map_err(|e| format!("{from}: connect: {e}"))?;
        away.push(Sub::over(s, deadline)?);
    }
    let mut live_sub = if a.live_rate > 0.0 {
        let s = TcpStream::connect(subs).map_err(|e| format!("live subscriber: {e}"))?;
        Some(Sub::over(s, deadline)?)
    } else {
        None
    };
    author("first", 0)?;
    for sub in away.iter_mut().chain(live_sub.iter_mut()) {
        sub.skip_to(&first, deadline)?;
    }
    drop(away);

    let started = Instant::now();
    let missed: Vec<String> = (0..a.count)
        .map(|i| format!("{}missed{i}", maker.prefix()))
        .collect();
    let end = format!("{}end", maker.prefix());
    let stop = AtomicBool::new(false);
    let start = Barrier::new(a.replays as usize + 1);
    let phases = thread::scope(|scope| -> Result<_, String> {
        let _stop_on_error = StopOnDrop(&stop);
        let live = live_sub.take().map(|sub| {
            let (stop, end, prefix) = (&stop, &end, maker.prefix());
            scope.spawn(move || live_subscriber(sub, &prefix, end, stop, deadline))
        });
        for i in 0..a.count {
            author(&format!("missed{i}"), i + 1)?;
        }
        let submit_seconds = started.elapsed().as_secs_f64();
        let live_author = (a.live_rate > 0.0).then(|| {
            let stop = &stop;
            let maker = &maker;
            scope.spawn(move || live_author(authors, maker, a.live_rate, stop))
        });
        if live_author.is_some() {
            thread::sleep(Duration::from_secs_f64(a.baseline));
        }
        let replays: Vec<_> = (0..a.replays)
            .map(|i| {
                let (start, missed) = (&start, &missed);
                scope.spawn(move || replay(subs, replay_address(i), missed, start, deadline))
            })
            .collect();
        start.wait();
        let replay_start = Instant::now();
        let replays: Vec<Result<Replay, String>> = replays
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a subscriber panicked".into()))
            })
            .collect();
        let replay_end = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let live_sent = live_author.map(|h| h.join().unwrap_or_default());
        let live_got = match live {
            Some(h) => {
                author("end", 0)?;
                Some(
                    h.join()
                        .unwrap_or_else(|_| Err("live subscriber panicked".into()))?,
                )
            }
            None => None,
        };
        Ok((
            submit_seconds,
            replays,
            replay_start,
            replay_end,
            live_sent.zip(live_got),
        ))
    })?;
    let (submit_seconds, replays, replay_start, replay_end, live) = phases;
    let replays = replays.into_iter().collect::<Result<Vec<_>, _>>()?;

    let received: u64 = replays.iter().map(|r| r.received).sum();
    let duplicates: u64 = replays.iter().map(|r| r.duplicates).sum();
    let out_of_order: u64 = replays.iter().map(|r| r.out_of_order).sum();
    let seconds = replays.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let fastest = replays
        .iter()
        .map(|r| r.seconds)
        .fold(f64::INFINITY, f64::min);
    let rate = received as f64 / seconds.max(1e-9);
    let lost = a.count * a.replays as u64 - received;
    let mut lines = vec![
        format!(
            "catchup: {received} of {} missed events received in {seconds:.3} s after reconnecting ({rate:.0} events/s)",
            a.count * a.replays as u64
        ),
        format!(
            "{} subscriber(s) replaying at once, the fastest done in {fastest:.3} s",
            a.replays
        ),
        format!("lost {lost}, duplicates {duplicates}, out of order {out_of_order}; submitted in {submit_seconds:.3} s"),
    ];
    let mut live_ok = true;
    let live = live.map(|(sent, got)| {
        let before_start = sent.first().map_or(replay_start, |e| e.sent);
        let (before, [ba, bd]) = live_phase(&sent, &got, before_start, replay_start);
        let (during, [da, dd]) = live_phase(&sent, &got, replay_start, replay_end);
        let naks = sent.iter().filter(|e| e.nak).count() as u64;
        let errors = sent.iter().filter(|e| e.ack_us.is_none()).count() as u64 - naks;
        let lost = sent
            .iter()
            .filter(|e| e.ack_us.is_some() && !got.contains_key(&e.ivorn))
            .count() as u64;
        live_ok = naks == 0 && errors == 0 && lost == 0;
        lines.push(format!(
            "live at {}/s: {} submitted, naks {naks}, errors {errors}, lost {lost}",
            a.live_rate,
            sent.len()
        ));
        lines.push(format!("  before the replays: {} events", before.events));
        lines.extend(latency_line("ack", ba));
        lines.extend(latency_line("delivery", bd));
        lines.push(format!("  during the replays: {} events", during.events));
        lines.extend(latency_line("ack", da));
        lines.extend(latency_line("delivery", dd));
        LiveFigures {
            rate: Num(a.live_rate),
            submitted: sent.len() as u64,
            naks,
            errors,
            lost,
            before,
            during,
        }
    });
    let figures = CatchupFigures {
        mode: "catchup",
        count: a.count,
        replays: a.replays,
        received,
        lost,
        duplicates,
        out_of_order,
        seconds: Num(seconds),
        events_per_s: Num(rate),
        fastest_seconds: Num(fastest),
        submit_seconds: Num(submit_seconds),
        live,
    };
    Ok(Report {
        lines,
        figures,
        ok: lost == 0 && duplicates == 0 && out_of_order == 0 && live_ok,
    })
}
