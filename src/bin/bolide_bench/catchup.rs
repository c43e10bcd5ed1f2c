//! `bolide-bench catchup`: how fast a reconnecting subscriber receives what it missed.
//!
//! One plain VTP subscriber connects, answers `authenticate` at once (no filters), and
//! acks a first event; it disconnects; one author then submits N events back to back; the
//! subscriber reconnects from the same address and receives until it has all N (or
//! `--max-seconds` passes). The broker must resume subscribers from this address
//! (bolide: `--resume-subscribers 127.0.0.1`): the events come from its archive, then
//! live. Reported: the time from the reconnect to the last of the N, events/s, and the
//! events lost, duplicated or out of order (any of which fails the run).

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use argh::FromArgs;
use bolide::frame::FrameReader;
use bolide::sys::DeadlineReader;
use bolide::transport;
use serde::Serialize;

use crate::args::Args;
use crate::author::{resolve, submit, Outcome};
use crate::event::EventMaker;
use crate::report::{Num, Report};
use crate::scan::{attr_in, transport_role};

/// A subscriber reconnects after N events: time to receive them all from the broker's
/// catch-up (bolide needs --resume-subscribers for this address).
#[derive(FromArgs)]
#[argh(subcommand, name = "catchup")]
pub struct CatchupArgs {
    /// events accepted while the subscriber is away (default 10000)
    #[argh(option, default = "10_000")]
    pub count: u64,
    /// extra bytes of Description text in every event (default 0)
    #[argh(option, default = "0")]
    pub pad: usize,
}

/// Who the subscriber says it is, and the broker it answers.
const ME: &str = "ivo://bolide.bench/subscriber";
const BROKER: &str = "ivo://bolide.bench/broker";

/// The JSON figures.
#[derive(Serialize)]
pub struct CatchupFigures {
    mode: &'static str,
    count: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Seconds from the reconnect to the last missed event.
    seconds: Num,
    events_per_s: Num,
    /// Seconds the author took to submit the N events.
    submit_seconds: Num,
}

/// A blocking VTP subscriber that acks every event and answers iamalive.
struct Sub {
    s: TcpStream,
    frames: FrameReader,
}

impl Sub {
    fn connect(addr: SocketAddr, deadline: Instant) -> Result<Sub, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("subscriber connect: {e}"))?;
        let mut sub = Sub {
            s,
            frames: FrameReader::new(16 << 20),
        };
        // The broker's authenticate first; answered at once so that events flow without
        // waiting for the broker's patience to end.
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
}

pub fn run(args: &Args, a: &CatchupArgs) -> Result<Report<CatchupFigures>, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.max_seconds);
    let authors = resolve(&args.host, args.receive_port)?;
    let subs = resolve(&args.host, args.broadcast_port)?;
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
    let mut sub = Sub::connect(subs, deadline)?;
    author("first", 0)?;
    // Anything else first is the broker catching this address up on an earlier run.
    loop {
        match sub.event(deadline)? {
            Some(iv) if iv == format!("{}first", maker.prefix()) => break,
            Some(_) => {}
            None => return Err("the first event did not arrive".into()),
        }
    }
    drop(sub);
    let started = Instant::now();
    let mut sent = Vec::with_capacity(a.count as usize);
    for i in 0..a.count {
        let local = format!("missed{i}");
        author(&local, i + 1)?;
        sent.push(format!("{}{local}", maker.prefix()));
    }
    let submit_seconds = started.elapsed().as_secs_f64();
    let reconnected = Instant::now();
    let mut sub = Sub::connect(subs, deadline)?;
    let want: HashSet<&str> = sent.iter().map(String::as_str).collect();
    let (mut seen, mut duplicates, mut out_of_order) = (HashSet::new(), 0u64, 0u64);
    let mut next = 0usize;
    let mut last = reconnected;
    while (seen.len() as u64) < a.count {
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
        if sent.get(next).is_some_and(|s| *s != iv) {
            out_of_order += 1;
        }
        next += 1;
    }
    let received = seen.len() as u64;
    let seconds = (last - reconnected).as_secs_f64();
    let rate = received as f64 / seconds.max(1e-9);
    let lost = a.count - received;
    let figures = CatchupFigures {
        mode: "catchup",
        count: a.count,
        received,
        lost,
        duplicates,
        out_of_order,
        seconds: Num(seconds),
        events_per_s: Num(rate),
        submit_seconds: Num(submit_seconds),
    };
    let lines = vec![
        format!(
            "catchup: {received} of {} missed events received in {seconds:.3} s after reconnecting ({rate:.0} events/s)",
            a.count
        ),
        format!("lost {lost}, duplicates {duplicates}, out of order {out_of_order}; submitted in {submit_seconds:.3} s"),
    ];
    Ok(Report {
        lines,
        figures,
        ok: lost == 0 && duplicates == 0 && out_of_order == 0,
    })
}
