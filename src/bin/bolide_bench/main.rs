//! `bolide-bench`: a VTP load generator for bolide or any other VTP broker (Comet, …).
//!
//! Modes:
//! * `ingest`: K concurrent authors, one event per connection; ack latency and events/s.
//! * `fanout`: one author, S subscribers that answer authenticate/iamalive and ack every
//!   event; end-to-end latency (author send → each subscriber's receipt, one clock).
//! * `filter`: fanout where the subscribers install XPath filters (4 distinct
//!   expressions, round-robin); exactly the matching events must arrive.
//! * `null-broker`: not a load generator but the other end: a broker doing only the
//!   unavoidable socket work, to measure the machine's floor ([`null_broker`]).
//!
//! The subscribers run on a few threads, each with one epoll set over its share of the
//! sockets, reading into one scratch buffer per thread and answering with prebuilt acks;
//! an event is recognised by a byte search for `ivorn="`, never a DOM parse. The tool
//! reports its own CPU time next to the broker's (`--pid`) so its overhead can be judged.
//!
//! The last line of standard output is one JSON object with every figure. Exit status:
//! 0 when nothing was lost, duplicated or unexpected and no error occurred; 1 otherwise;
//! 2 for a usage error or when the broker cannot be reached at all.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argh::FromArgs;
use bolide::frame::{encode, FrameReader};
use bolide::sys::DeadlineReader;

mod null_broker;

/// VTP load generator: measures a broker's ingest rate, fan-out and filter latency, and
/// (with --pid) its CPU time and memory.
#[derive(FromArgs)]
struct Args {
    /// broker host; for null-broker, the address to listen on (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    host: String,
    /// broker's author (receive) port (default 8098)
    #[argh(option, default = "8098")]
    receive_port: u16,
    /// broker's subscriber (broadcast) port (default 8099)
    #[argh(option, default = "8099")]
    broadcast_port: u16,
    /// process id of the broker: sample its CPU time and RSS from /proc (default: none)
    #[argh(option)]
    pid: Option<u32>,
    /// hard limit on the whole run in seconds; what has not arrived by then is lost
    /// (default 300)
    #[argh(option, default = "300.0")]
    max_seconds: f64,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    mode: Option<Mode>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Mode {
    Ingest(IngestArgs),
    Fanout(FanoutArgs),
    Filter(FilterArgs),
    NullBroker(null_broker::NullBrokerArgs),
}

/// K concurrent authors submit events, one per connection, as VTP authors do.
#[derive(FromArgs)]
#[argh(subcommand, name = "ingest")]
struct IngestArgs {
    /// concurrent author connections (default 16)
    #[argh(option, default = "16")]
    authors: usize,
    /// stop after this many events (default 0: no limit, --duration decides)
    #[argh(option, default = "0")]
    count: u64,
    /// stop after this many seconds (default 10; 0: no limit, --count decides)
    #[argh(option, default = "10.0")]
    duration: f64,
    /// extra bytes of Description text in every event (default 0)
    #[argh(option, default = "0")]
    pad: usize,
}

/// One author, S subscribers acking every event; end-to-end latency.
#[derive(FromArgs)]
#[argh(subcommand, name = "fanout")]
struct FanoutArgs {
    /// subscriber connections (default 1000)
    #[argh(option, default = "1000")]
    subscribers: usize,
    /// events to send (default 100)
    #[argh(option, default = "100")]
    count: u64,
    /// events per second (default 2; 0: back to back, each sent once the previous is acked)
    #[argh(option, default = "2.0")]
    rate: f64,
    /// extra bytes of Description text in every event (default 0)
    #[argh(option, default = "0")]
    pad: usize,
    /// threads running the subscribers (default: the number of CPUs, at most 4)
    #[argh(option)]
    threads: Option<usize>,
}

/// Fan-out where subscribers install XPath filters; checks exactly the matching events
/// arrive.
#[derive(FromArgs)]
#[argh(subcommand, name = "filter")]
struct FilterArgs {
    /// subscriber connections (default 1000)
    #[argh(option, default = "1000")]
    subscribers: usize,
    /// events to send (default 100)
    #[argh(option, default = "100")]
    count: u64,
    /// events per second (default 2; 0: back to back, each sent once the previous is acked)
    #[argh(option, default = "2.0")]
    rate: f64,
    /// extra bytes of Description text in every event (default 0)
    #[argh(option, default = "0")]
    pad: usize,
    /// threads running the subscribers (default: the number of CPUs, at most 4)
    #[argh(option)]
    threads: Option<usize>,
}

// ---------------------------------------------------------------------------------------
// The event

/// Events per class cycle; the filters of `filter` mode select classes.
const CLASSES: u64 = 4;

/// The XPath filters of `filter` mode (subscriber i gets FILTERS[i % 4]).
const FILTERS: [&str; 4] = [
    "//Param[@name=\"Bench_Class\" and @value=\"0\"]",
    "//Param[@name=\"Bench_Class\" and @value=\"1\"]",
    "//Param[@name=\"Bench_Class\" and (@value=\"2\" or @value=\"3\")]",
    "//Param[@name=\"Bench_Class\" and @value >= 3]",
];

/// Whether `FILTERS[f]` matches an event of class `c`.
fn filter_matches(f: usize, c: u64) -> bool {
    match f {
        0 => c == 0,
        1 => c == 1,
        2 => c == 2 || c == 3,
        _ => c >= 3,
    }
}

const IVORN_BASE: &str = "ivo://bolide.bench/SWIFT#BAT_GRB_Pos_";

/// A Swift BAT GRB position notice (shape of GCN's VOEvent 2.0 notices, ~4.5 KB), with
/// three bench Params in What. `{ivorn}`, `{date}`, `{class}`, `{seq}`, `{run}`, `{pad}`
/// are substituted.
const TEMPLATE: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ivorn="{ivorn}" role="observation" version="2.0" xsi:schemaLocation="http://www.ivoa.net/xml/VOEvent/v2.0  http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"><Who><AuthorIVORN>ivo://nasa.gsfc.tan/gcn</AuthorIVORN><Author><shortName>VO-GCN</shortName><contactName>Scott Barthelmy</contactName><contactPhone>+1-301-286-3106</contactPhone><contactEmail>scott.barthelmy@nasa.gov</contactEmail></Author><Date>{date}</Date><Description>This VOEvent message was created with GCN VOE version: 1.29 04jun16</Description></Who><What><Param name="Bench_Class" value="{class}" dataType="int"/><Param name="Bench_Seq" value="{seq}" dataType="int"/><Param name="Bench_Run" value="{run}"/><Param name="Packet_Type" value="61"/><Param name="Pkt_Ser_Num" value="6"/><Param name="TrigID" value="690738" ucd="meta.id"/><Param name="Segment_Num" value="0" ucd="meta.id.part"/><Param name="Burst_TJD" value="17551" unit="days" ucd="time"/><Param name="Burst_SOD" value="59071.59" unit="sec" ucd="time"/><Param name="Burst_Inten" value="0" unit="cts" ucd="phot.count;em.gamma.soft"/><Param name="Burst_Peak" value="2192" unit="cts" ucd="phot.count;em.gamma.soft"/><Param name="Integ_Time" value="64.000" unit="sec" ucd="time.interval"/><Param name="Phi" value="69.79" unit="deg" ucd="pos.az.azi"/><Param name="Theta" value="15.59" unit="deg" ucd="pos.az.zd"/><Param name="Trig_Index" value="20000"/><Param name="Soln_Status" value="0x11d"/><Param name="Misc_flags" value="0x1000000"/><Param name="Cat_Num" value="20638"/><Param name="Rate_Signif" value="0.00" unit="sigma" ucd="stat.snr"/><Param name="Image_Signif" value="9.83" unit="sigma" ucd="stat.snr"/><Param name="Bkg_Inten" value="0" unit="cts" ucd="phot.count"/><Param name="Bkg_Time" value="00:00:00.00" ucd="time.start"/><Param name="Bkg_Dur" value="0.00" unit="sec" ucd="time.duration"/><Param name="SC_Long" value="12.43" unit="deg" ucd="pos.earth.lon"/><Param name="SC_Lat" value="642.73" unit="deg" ucd="pos.earth.lat"/><Group name="Merit_Values"><Param name="Merit_Val0" value="0" unit="dn"/><Param name="Merit_Val1" value="0" unit="dn"/><Param name="Merit_Val2" value="100" unit="dn"/><Param name="Merit_Val3" value="6" unit="dn"/><Param name="Merit_Val4" value="1" unit="dn"/><Param name="Merit_Val5" value="0" unit="dn"/></Group><Group name="Solution_Status"><Param name="Point_Source" value="true"/><Param name="GRB_Identified" value="false"/><Param name="Target_of_Interest" value="true"/><Param name="Target_Imag_Trig" value="true"/><Param name="Target_Rate_Trig" value="false"/><Param name="Def_NOT_a_GRB" value="false"/><Param name="Hi_Bkg_Level" value="false"/><Param name="Target_in_Flt_Catalog" value="true"/><Param name="Target_in_Gnd_Catalog" value="true"/><Param name="Test_Submission" value="false"/></Group><Param name="Coords_Type" value="1" unit="dn"/><Param name="Coords_String" value="source_object"/><Group name="Obs_Support_Info"><Description>The Sun and Moon values are valid at the time the VOEvent XML message was created.</Description><Param name="Sun_RA" value="81.44" unit="deg" ucd="pos.eq.ra"/><Param name="Sun_Dec" value="23.20" unit="deg" ucd="pos.eq.dec"/><Param name="Sun_Distance" value="163.03" unit="deg" ucd="pos.angDistance"/><Param name="Moon_RA" value="176.80" unit="deg" ucd="pos.eq.ra"/><Param name="Moon_Dec" value="2.25" unit="deg" ucd="pos.eq.dec"/><Param name="MOON_Distance" value="70.01" unit="deg" ucd="pos.angDistance"/><Param name="Galactic_Long" value="359.21" unit="deg" ucd="pos.galactic.lon"/><Param name="Galactic_Lat" value="23.74" unit="deg" ucd="pos.galactic.lat"/></Group><Description>Type=61: The Swift-BAT instrument position notice.</Description></What><WhereWhen><ObsDataLocation><ObservatoryLocation id="GEOLUN"/><ObservationLocation><AstroCoordSystem id="UTC-FK5-GEO"/><AstroCoords coord_system_id="UTC-FK5-GEO"><Time unit="s"><TimeInstant><ISOTime>2016-06-12T16:24:31.59</ISOTime></TimeInstant></Time><Position2D unit="deg"><Name1>RA</Name1><Name2>Dec</Name2><Value2><C1>245.0860</C1><C2>-15.5858</C2></Value2><Error2Radius>0.0500</Error2Radius></Position2D></AstroCoords></ObservationLocation></ObsDataLocation><Description>The RA,Dec coordinates are of the type: source_object.</Description></WhereWhen><How><Description>Swift Satellite, BAT Instrument</Description><Reference uri="http://gcn.gsfc.nasa.gov/swift.html" type="url"/></How><Why importance="0.90"><Inference probability="0.90"><Name>(null)</Name><Concept>process.variation.burst;em.gamma</Concept></Inference></Why><Description>bolide-bench event{pad}</Description></voe:VOEvent>
"#;

/// Builds the events of one run: the template is split once at its placeholders, so an
/// event costs one allocation and a few copies.
struct EventMaker {
    run: String,
    prefix: String,
    /// Literal pieces and the placeholder following each (the last has none).
    parts: Vec<(&'static str, Option<&'static str>)>,
    date: String,
    pad: String,
}

impl EventMaker {
    fn new(pad: usize) -> EventMaker {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Seconds, nanoseconds and pid: distinct across runs against the same broker.
        let mix = (now.as_secs() << 20)
            ^ u64::from(now.subsec_nanos())
            ^ (u64::from(std::process::id()) << 40);
        let mut date = bolide::time::utc_timestamp(now.as_secs());
        date.pop(); // no trailing Z, as GCN writes it
        let run = format!("{:x}", mix & 0xffff_ffff_ffff);
        let mut parts = Vec::new();
        let mut rest = TEMPLATE;
        while let Some(at) = rest.find('{') {
            let end = at + rest[at..].find('}').expect("closing brace");
            parts.push((&rest[..at], Some(&rest[at + 1..end])));
            rest = &rest[end + 1..];
        }
        parts.push((rest, None));
        EventMaker {
            prefix: format!("{IVORN_BASE}{run}-"),
            run,
            parts,
            date,
            pad: " ".repeat(pad.min(1)) + &"x".repeat(pad.saturating_sub(1)),
        }
    }

    /// Ivorn prefix shared by every event of this run: `<base><run>-`.
    fn prefix(&self) -> String {
        self.prefix.clone()
    }

    /// Event `local` (the part after the run prefix) of class `class`, already framed
    /// (4-byte length prefix) when `framed`.
    fn build(&self, local: &str, seq: u64, class: u64, framed: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(TEMPLATE.len() + self.pad.len() + 128);
        if framed {
            out.extend_from_slice(&[0; 4]);
        }
        let (seq, class) = (seq.to_string(), class.to_string());
        for (lit, ph) in &self.parts {
            out.extend_from_slice(lit.as_bytes());
            match ph {
                Some("ivorn") => {
                    out.extend_from_slice(self.prefix.as_bytes());
                    out.extend_from_slice(local.as_bytes());
                }
                Some("date") => out.extend_from_slice(self.date.as_bytes()),
                Some("class") => out.extend_from_slice(class.as_bytes()),
                Some("seq") => out.extend_from_slice(seq.as_bytes()),
                Some("run") => out.extend_from_slice(self.run.as_bytes()),
                Some("pad") => out.extend_from_slice(self.pad.as_bytes()),
                Some(other) => unreachable!("placeholder {other}"),
                None => {}
            }
        }
        if framed {
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
        }
        out
    }

    fn event(&self, local: &str, seq: u64, class: u64) -> Vec<u8> {
        self.build(local, seq, class, false)
    }

    fn framed(&self, local: &str, seq: u64, class: u64) -> Vec<u8> {
        self.build(local, seq, class, true)
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match hay[i..=last].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The value of the first `name="…"` attribute within the first `window` bytes.
fn attr_in<'a>(payload: &'a [u8], name: &[u8], window: usize) -> Option<&'a [u8]> {
    let head = &payload[..payload.len().min(window)];
    let at = find(head, name)? + name.len();
    let end = payload[at..].iter().position(|&b| b == b'"')?;
    Some(&payload[at..at + end])
}

/// Text of the first `<Origin>…</Origin>` (any prefix-free spelling).
fn origin_of(payload: &[u8]) -> Option<String> {
    let a = find(payload, b"<Origin>")? + 8;
    let e = find(&payload[a..], b"</Origin>")?;
    Some(
        String::from_utf8_lossy(&payload[a..a + e])
            .trim()
            .to_string(),
    )
}

/// The `role` of a Transport message (cheap).
fn transport_role(payload: &[u8]) -> Option<&[u8]> {
    let t = find(payload, b"Transport")?;
    attr_in(&payload[t..], b"role=\"", 1024)
}

/// CPU time (user + system) of this process, seconds.
fn self_cpu_s() -> f64 {
    // SAFETY: getrusage fills a zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Percentiles (nearest rank) of microsecond samples, in ms: (p50, p99, max).
fn percentiles(v: &mut [u32]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1000.0
    };
    Some((at(0.50), at(0.99), v[v.len() - 1] as f64 / 1000.0))
}

// ---------------------------------------------------------------------------------------
// Broker sampling (--pid)

#[derive(Clone, Copy, Default)]
struct ProcSample {
    cpu_ticks: u64,
    rss_kb: u64,
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kb,
    })
}

/// Samples a broker every 100 ms on its own thread.
struct Sampler {
    pid: u32,
    tick_hz: f64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Option<Sampler> {
        let first = proc_sample(pid)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let peak = Arc::new(AtomicU64::new(first.rss_kb));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (Arc::clone(&peak), Arc::clone(&stop));
        let handle = thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Some(s) = proc_sample(pid) {
                    p2.fetch_max(s.rss_kb, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Some(Sampler {
            pid,
            tick_hz: if hz > 0 { hz as f64 } else { 100.0 },
            peak,
            stop,
            handle: Some(handle),
        })
    }

    fn now(&self) -> ProcSample {
        let s = proc_sample(self.pid).unwrap_or_default();
        self.peak.fetch_max(s.rss_kb, Ordering::Relaxed);
        s
    }

    /// Forget the peak so far (the measured phase starts).
    fn reset_peak(&self, to: u64) {
        self.peak.store(to, Ordering::Relaxed);
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// What the `broker` JSON object reports.
struct BrokerFigures {
    cpu_s: f64,
    rss_start: u64,
    rss_end: u64,
    rss_peak: u64,
    rss_subscribers_idle: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// JSON, by hand

struct Json(String);

impl Json {
    fn new() -> Json {
        Json(String::from("{"))
    }
    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(k);
        self.0.push_str("\":");
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.0.push('"');
        for c in v.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => self.0.push_str(&format!("\\u{:04x}", c as u32)),
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }
    fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.0.push_str(&v.to_string());
        self
    }
    fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        if v.is_finite() {
            self.0
                .push_str(&format!("{}", (v * 1000.0).round() / 1000.0));
        } else {
            self.0.push_str("null");
        }
        self
    }
    fn null(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.0.push_str("null");
        self
    }
    fn obj(&mut self, k: &str, o: Json) -> &mut Self {
        self.key(k);
        self.0.push_str(&o.finish());
        self
    }
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn latency_json(lat: Option<(f64, f64, f64)>) -> Json {
    let mut j = Json::new();
    match lat {
        Some((p50, p99, max)) => {
            j.num("p50", p50).num("p99", p99).num("max", max);
        }
        None => {
            j.null("p50").null("p99").null("max");
        }
    }
    j
}

fn broker_json(b: &BrokerFigures) -> Json {
    let mut j = Json::new();
    j.num("cpu_s", b.cpu_s)
        .int("rss_kb_start", b.rss_start)
        .int("rss_kb_end", b.rss_end)
        .int("rss_kb_peak_sampled", b.rss_peak);
    if let Some(r) = b.rss_subscribers_idle {
        j.int("rss_kb_with_subscribers_idle", r);
    }
    j
}

// ---------------------------------------------------------------------------------------
// Authors

enum Outcome {
    Ack,
    Nak(String),
    Error(String),
}

/// One VTP author transaction: connect, send, wait for ack/nak, close.
fn submit(addr: SocketAddr, wire: &[u8], timeout: Duration) -> Outcome {
    // As few system calls as an author can make, so the tool's own cost stays small next
    // to the broker's; one write of the whole frame needs no TCP_NODELAY (Nagle never
    // holds back the first segment).
    let mut s = match connect_bounded(addr, timeout) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("connect: {e}")),
    };
    if let Err(e) = s.write_all(wire) {
        return Outcome::Error(format!("send: {e}"));
    }
    let mut fr = FrameReader::new(1 << 20);
    let mut r = DeadlineReader {
        stream: &s,
        deadline: Instant::now() + timeout,
    };
    match fr.read_frame(&mut r) {
        Ok(f) => match transport_role(&f) {
            Some(b"ack") => Outcome::Ack,
            Some(b"nak") => {
                let reason = find(&f, b"<Result>")
                    .and_then(|a| {
                        let a = a + 8;
                        find(&f[a..], b"</Result>")
                            .map(|e| String::from_utf8_lossy(&f[a..a + e]).to_string())
                    })
                    .unwrap_or_else(|| "no reason given".into());
                Outcome::Nak(reason)
            }
            _ => Outcome::Error("reply is neither ack nor nak".into()),
        },
        Err(e) => Outcome::Error(format!("reply: {e}")),
    }
}

/// A blocking connection whose connect(2) and writes both give up after `timeout`: on
/// Linux SO_SNDTIMEO bounds a blocking connect too. socket, setsockopt, connect: three
/// system calls where `TcpStream::connect_timeout` makes six (non-blocking mode on and
/// off, poll, SO_ERROR).
fn connect_bounded(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream at once, which
    // closes it on every path below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    // SAFETY: zeroed sockaddr_in/sockaddr_in6 are valid; connect(2) reads `len` bytes.
    let rc = unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                sa.sin6_flowinfo = a.flowinfo();
                sa.sin6_scope_id = a.scope_id();
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // A blocking connect cut short by SO_SNDTIMEO reports EINPROGRESS.
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            ));
        }
        return Err(e);
    }
    Ok(stream)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))
}

// ---------------------------------------------------------------------------------------
// ingest

fn run_ingest(g: &Args, a: &IngestArgs) -> Result<(Vec<String>, Json, bool), String> {
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
    let sampler = g.pid.and_then(Sampler::start);
    if g.pid.is_some() && sampler.is_none() {
        return Err(format!("cannot read /proc/{}", g.pid.unwrap_or(0)));
    }
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
    struct AuthorResult {
        lat: Vec<u32>,
        acked: u64,
        naks: u64,
        errors: u64,
        first_nak: Option<String>,
        first_error: Option<String>,
        last_reply: Instant,
    }
    let mut handles = Vec::new();
    for _ in 0..a.authors {
        let (next, maker) = (Arc::clone(&next), Arc::clone(&maker));
        handles.push(thread::spawn(move || {
            let mut r = AuthorResult {
                lat: Vec::new(),
                acked: 0,
                naks: 0,
                errors: 0,
                first_nak: None,
                first_error: None,
                last_reply: start,
            };
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
        }));
    }
    let mut lat = Vec::new();
    let (mut acked, mut naks, mut errors) = (0u64, 0u64, 0u64);
    let (mut first_nak, mut first_error) = (None, None);
    let mut end = start;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "an author thread panicked".to_string())?;
        lat.extend(r.lat);
        acked += r.acked;
        naks += r.naks;
        errors += r.errors;
        first_nak = first_nak.or(r.first_nak);
        first_error = first_error.or(r.first_error);
        end = end.max(r.last_reply);
    }
    let elapsed = (end - start).as_secs_f64().max(1e-9);
    let tool_cpu = self_cpu_s() - cpu0;
    let broker = sampler.map(|s| {
        let b1 = s.now();
        let hz = s.tick_hz;
        let peak = s.finish();
        let b0 = b0.unwrap_or_default();
        BrokerFigures {
            cpu_s: (b1.cpu_ticks.saturating_sub(b0.cpu_ticks)) as f64 / hz,
            rss_start: b0.rss_kb,
            rss_end: b1.rss_kb,
            rss_peak: peak,
            rss_subscribers_idle: None,
        }
    });
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
    if let Some((p50, p99, max)) = lat {
        lines.push(format!(
            "  ack latency (connect to ack) ms: p50 {p50:.3}, p99 {p99:.3}, max {max:.3}"
        ));
    }
    let mut j = Json::new();
    j.str("mode", "ingest")
        .str("run", &maker.run)
        .int("authors", a.authors as u64)
        .int("event_bytes", event_bytes as u64)
        .int("sent", acked + naks + errors)
        .int("acked", acked)
        .int("naks", naks)
        .int("errors", errors)
        .num("elapsed_s", elapsed)
        .num("accepted_per_s", rate)
        .obj("latency_ms", latency_json(lat));
    let mut tool = Json::new();
    tool.num("cpu_s", tool_cpu);
    if acked > 0 {
        tool.num("cpu_us_per_event", tool_cpu * 1e6 / acked as f64);
    }
    j.obj("tool", tool);
    lines.push(format!(
        "  tool CPU {:.3} s ({:.1} us/event)",
        tool_cpu,
        tool_cpu * 1e6 / acked.max(1) as f64
    ));
    if let Some(b) = &broker {
        j.obj("broker", broker_json(b));
        if acked > 0 {
            j.num("cpu_us_per_event", b.cpu_s * 1e6 / acked as f64);
        }
        lines.push(format!(
            "  broker CPU {:.2} s ({:.1} us/event); RSS start {} kB, end {} kB, peak {} kB",
            b.cpu_s,
            b.cpu_s * 1e6 / acked.max(1) as f64,
            b.rss_start,
            b.rss_end,
            b.rss_peak
        ));
    }
    let ok = naks == 0 && errors == 0 && acked > 0;
    Ok((lines, j, ok))
}

// ---------------------------------------------------------------------------------------
// Subscribers

/// What the subscriber threads share with the main thread.
struct Shared {
    /// Ivorn prefix of this run.
    prefix: Vec<u8>,
    count: u64,
    /// Send instant of event n, ns after `base` plus 1 (0: not sent yet).
    sent_ns: Vec<AtomicU64>,
    base: Instant,
    /// Filter index per subscriber (filter mode).
    filters: Option<Vec<usize>>,
    /// Highest probe round each subscriber has seen (+1; 0 = none).
    probe_seen: Vec<AtomicU32>,
    /// Authenticate answered, per subscriber.
    authenticated: Vec<AtomicBool>,
    /// First deliveries of measured events, all subscribers.
    delivered: AtomicU64,
    stop: AtomicBool,
}

struct Conn {
    id: usize,
    stream: TcpStream,
    /// Bytes of an incomplete frame.
    partial: Vec<u8>,
    /// Replies not yet written.
    out: Vec<u8>,
    out_armed: bool,
    /// One bit per measured event.
    seen: Vec<u64>,
    closed: bool,
}

#[derive(Default)]
struct SubStats {
    delivered: u64,
    duplicates: u64,
    unexpected: u64,
    foreign: u64,
    disconnects: u64,
    first_problem: Option<String>,
    lat: Vec<u32>,
}

/// Prebuilt pieces of the ack a subscriber sends (Comet's shape, fixed TimeStamp).
struct AckParts {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl AckParts {
    fn new() -> AckParts {
        const MARK: &str = "\u{1}IVORN\u{1}";
        let full = bolide::transport::ack(MARK, Some("ivo://bolide.bench/subscriber"));
        let at = find(&full, MARK.as_bytes()).expect("marker");
        AckParts {
            head: full[..at].to_vec(),
            tail: full[at + MARK.len()..].to_vec(),
        }
    }

    fn push(&self, out: &mut Vec<u8>, ivorn: &[u8]) {
        let len = self.head.len() + ivorn.len() + self.tail.len();
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(ivorn);
        out.extend_from_slice(&self.tail);
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')))
}

struct Worker {
    shared: Arc<Shared>,
    ack: AckParts,
    conns: Vec<Conn>,
    stats: SubStats,
    epfd: i32,
}

impl Worker {
    fn handle_frame(&mut self, ci: usize, f: &[u8], now: Instant) {
        let sh = &*self.shared;
        let conn = &mut self.conns[ci];
        if let Some(ivorn) = attr_in(f, b"ivorn=\"", 1024) {
            self.ack.push(&mut conn.out, ivorn);
            let Some(local) = ivorn.strip_prefix(&sh.prefix[..]) else {
                self.stats.foreign += 1;
                return;
            };
            if let Some(p) = local.strip_prefix(b"p") {
                // Probe `p<round>c<class>`.
                let round = p.split(|&b| b == b'c').next().and_then(parse_u64);
                if let Some(r) = round {
                    sh.probe_seen[conn.id].fetch_max(r as u32 + 1, Ordering::Relaxed);
                }
                return;
            }
            let Some(n) = parse_u64(local).filter(|&n| n < sh.count) else {
                self.stats.unexpected += 1;
                self.stats.first_problem.get_or_insert_with(|| {
                    format!("unknown event {}", String::from_utf8_lossy(ivorn))
                });
                return;
            };
            if let Some(fs) = &sh.filters {
                if !filter_matches(fs[conn.id], n % CLASSES) {
                    self.stats.unexpected += 1;
                    self.stats.first_problem.get_or_insert_with(|| {
                        format!(
                            "event {n} (class {}) reached a subscriber with filter {}",
                            n % CLASSES,
                            FILTERS[fs[conn.id]]
                        )
                    });
                    return;
                }
            }
            let (w, bit) = ((n / 64) as usize, 1u64 << (n % 64));
            if conn.seen[w] & bit != 0 {
                self.stats.duplicates += 1;
                return;
            }
            conn.seen[w] |= bit;
            self.stats.delivered += 1;
            let sent = sh.sent_ns[n as usize].load(Ordering::Acquire);
            if sent > 0 {
                let at = now.duration_since(sh.base).as_nanos() as u64 + 1;
                let us = at.saturating_sub(sent) / 1000;
                self.stats.lat.push(us.min(u32::MAX as u64) as u32);
            }
            return;
        }
        match transport_role(f) {
            Some(b"iamalive") => {
                let o = origin_of(f).unwrap_or_default();
                let m =
                    bolide::transport::iamalive_response(&o, Some("ivo://bolide.bench/subscriber"));
                conn.out.extend_from_slice(&encode(&m));
            }
            Some(b"authenticate") => {
                let o = origin_of(f).unwrap_or_default();
                let filters: Vec<String> = match &sh.filters {
                    Some(fs) => vec![FILTERS[fs[conn.id]].to_string()],
                    None => Vec::new(),
                };
                let m = bolide::transport::authenticate_response(
                    &o,
                    Some("ivo://bolide.bench/subscriber"),
                    &filters,
                );
                conn.out.extend_from_slice(&encode(&m));
                sh.authenticated[conn.id].store(true, Ordering::Release);
            }
            _ => {}
        }
    }

    /// Split `data` (prefixed by the conn's partial bytes) into frames.
    fn consume(&mut self, ci: usize, data: &[u8], now: Instant) {
        let mut partial = std::mem::take(&mut self.conns[ci].partial);
        let buf: &[u8] = if partial.is_empty() {
            data
        } else {
            partial.extend_from_slice(data);
            &partial
        };
        let mut pos = 0;
        while buf.len() - pos >= 4 {
            let len =
                u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            if len > (16 << 20) {
                self.stats
                    .first_problem
                    .get_or_insert_with(|| format!("subscriber {}: absurd frame length {len}", ci));
                self.conns[ci].closed = true;
                return;
            }
            if buf.len() - pos - 4 < len {
                break;
            }
            // Borrow dance: the frame lives in `buf`, which is either `data` or `partial`.
            let frame = &buf[pos + 4..pos + 4 + len];
            self.handle_frame(ci, frame, now);
            pos += 4 + len;
        }
        let rest = buf[pos..].to_vec();
        let mut partial_new = partial;
        partial_new.clear();
        partial_new.extend_from_slice(&rest);
        self.conns[ci].partial = partial_new;
    }

    fn flush(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        while !c.out.is_empty() {
            match (&c.stream).write(&c.out) {
                Ok(0) => break,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.closed = true;
                    c.out.clear();
                    break;
                }
            }
        }
        let want_out = !c.out.is_empty();
        if want_out != c.out_armed && !c.closed {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | if want_out { libc::EPOLLOUT } else { 0 }) as u32,
                u64: ci as u64,
            };
            // SAFETY: valid epoll fd and socket fd owned by this worker.
            unsafe {
                libc::epoll_ctl(
                    self.epfd,
                    libc::EPOLL_CTL_MOD,
                    c.stream.as_raw_fd(),
                    &mut ev,
                )
            };
            c.out_armed = want_out;
        }
    }

    fn run(mut self) -> SubStats {
        let mut scratch = vec![0u8; 256 * 1024];
        let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        while !self.shared.stop.load(Ordering::Relaxed) {
            // SAFETY: the buffer holds `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(self.epfd, events.as_mut_ptr(), events.len() as i32, 50)
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            let before = self.stats.delivered;
            for e in &events[..n as usize] {
                let ci = e.u64 as usize;
                if self.conns[ci].closed {
                    continue;
                }
                if e.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    // Read until the socket is drained (level-triggered, so one big read
                    // usually suffices; stop after a few to stay fair).
                    for _ in 0..4 {
                        match (&self.conns[ci].stream).read(&mut scratch) {
                            Ok(0) => {
                                self.conns[ci].closed = true;
                                break;
                            }
                            Ok(k) => {
                                let now = Instant::now();
                                let data = std::mem::take(&mut scratch);
                                self.consume(ci, &data[..k], now);
                                scratch = data;
                                if k < scratch.len() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                self.conns[ci].closed = true;
                                break;
                            }
                        }
                    }
                }
                if !self.conns[ci].closed {
                    self.flush(ci);
                }
                if self.conns[ci].closed {
                    self.stats.disconnects += 1;
                    self.stats.first_problem.get_or_insert_with(|| {
                        format!(
                            "subscriber {} disconnected by the broker",
                            self.conns[ci].id
                        )
                    });
                    // SAFETY: removing our own fd from our own epoll set.
                    unsafe {
                        libc::epoll_ctl(
                            self.epfd,
                            libc::EPOLL_CTL_DEL,
                            self.conns[ci].stream.as_raw_fd(),
                            std::ptr::null_mut(),
                        )
                    };
                }
            }
            let d = self.stats.delivered - before;
            if d > 0 {
                self.shared.delivered.fetch_add(d, Ordering::Relaxed);
            }
        }
        // SAFETY: closing the epoll fd we created.
        unsafe { libc::close(self.epfd) };
        self.stats
    }
}

// ---------------------------------------------------------------------------------------
// fanout / filter

struct FanCfg {
    subscribers: usize,
    count: u64,
    rate: f64,
    pad: usize,
    threads: Option<usize>,
    filtered: bool,
}

/// `FanoutArgs` and `FilterArgs` carry the same options (argh has no flatten); both
/// become one [`FanCfg`].
macro_rules! fan_cfg {
    ($a:expr, $filtered:expr) => {
        FanCfg {
            subscribers: $a.subscribers,
            count: $a.count,
            rate: $a.rate,
            pad: $a.pad,
            threads: $a.threads,
            filtered: $filtered,
        }
    };
}

fn run_fanout(g: &Args, c: &FanCfg) -> Result<(Vec<String>, Json, bool), String> {
    let mode = if c.filtered { "filter" } else { "fanout" };
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
    let begin = Instant::now();
    let hard = begin + Duration::from_secs_f64(g.max_seconds);
    let maker = EventMaker::new(c.pad);
    let event_bytes = maker.event("0", 0, 0).len();
    let sampler = g.pid.and_then(Sampler::start);
    if g.pid.is_some() && sampler.is_none() {
        return Err(format!("cannot read /proc/{}", g.pid.unwrap_or(0)));
    }
    let rss_start = sampler.as_ref().map(|s| s.now().rss_kb);
    let filters = c
        .filtered
        .then(|| (0..c.subscribers).map(|i| i % FILTERS.len()).collect());
    let shared = Arc::new(Shared {
        prefix: maker.prefix().into_bytes(),
        count: c.count,
        sent_ns: (0..c.count).map(|_| AtomicU64::new(0)).collect(),
        base: Instant::now(),
        filters,
        probe_seen: (0..c.subscribers).map(|_| AtomicU32::new(0)).collect(),
        authenticated: (0..c.subscribers).map(|_| AtomicBool::new(false)).collect(),
        delivered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let nthreads = c.threads.unwrap_or(cpus.min(4)).clamp(1, c.subscribers);
    // Connect every subscriber, then hand them to the workers.
    let words = c.count.div_ceil(64) as usize;
    let mut per_thread: Vec<Vec<Conn>> = (0..nthreads).map(|_| Vec::new()).collect();
    for id in 0..c.subscribers {
        let stream = TcpStream::connect_timeout(&baddr, Duration::from_secs(10))
            .map_err(|e| format!("subscriber {id}: cannot connect to {baddr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        per_thread[id % nthreads].push(Conn {
            id,
            stream,
            partial: Vec::new(),
            out: Vec::new(),
            out_armed: false,
            seen: vec![0; words],
            closed: false,
        });
    }
    let mut workers = Vec::new();
    for conns in per_thread {
        // SAFETY: plain syscall.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
        }
        for (ci, conn) in conns.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: ci as u64,
            };
            // SAFETY: valid fds.
            if unsafe {
                libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, conn.stream.as_raw_fd(), &mut ev)
            } < 0
            {
                return Err(format!("epoll_ctl: {}", io::Error::last_os_error()));
            }
        }
        let w = Worker {
            shared: Arc::clone(&shared),
            ack: AckParts::new(),
            conns,
            stats: SubStats::default(),
            epfd,
        };
        workers.push(thread::spawn(move || w.run()));
    }
    let mut lines = Vec::new();
    // Wait for authenticate to be answered everywhere (a broker that never sends it, like
    // some non-Comet brokers, just costs this timeout), then probe until every subscriber
    // gets events: only then is the broker known to have registered them all.
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
        let classes: Vec<u64> = if c.filtered {
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
    let connected = shared
        .probe_seen
        .iter()
        .filter(|p| p.load(Ordering::Relaxed) > 0)
        .count();
    let setup_s = begin.elapsed().as_secs_f64();
    lines.push(format!(
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
    ));
    // Idle with subscribers.
    thread::sleep(Duration::from_millis(300));
    let rss_idle = sampler.as_ref().map(|s| s.now().rss_kb);
    let b0 = sampler.as_ref().map(|s| s.now());
    if let (Some(s), Some(b)) = (&sampler, b0) {
        s.reset_peak(b.rss_kb);
    }
    let cpu0 = self_cpu_s();
    // Expected deliveries.
    let expected: u64 = (0..c.count)
        .map(|n| match &shared.filters {
            Some(fs) => fs
                .iter()
                .filter(|&&f| filter_matches(f, n % CLASSES))
                .count() as u64,
            None => c.subscribers as u64,
        })
        .sum();
    // The author.
    let t0 = Instant::now();
    let (mut naks, mut errors) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut sent = 0u64;
    for n in 0..c.count {
        if c.rate > 0.0 {
            let at = t0 + Duration::from_secs_f64(n as f64 / c.rate);
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
        }
        if Instant::now() >= hard {
            first_error.get_or_insert_with(|| "--max-seconds reached while sending".into());
            break;
        }
        let wire = maker.framed(&n.to_string(), n, n % CLASSES);
        let ns = Instant::now().duration_since(shared.base).as_nanos() as u64 + 1;
        shared.sent_ns[n as usize].store(ns, Ordering::Release);
        sent += 1;
        match submit(raddr, &wire, Duration::from_secs(30)) {
            Outcome::Ack => {}
            Outcome::Nak(why) => {
                naks += 1;
                first_error.get_or_insert(format!("event {n} nak'd: {why}"));
            }
            Outcome::Error(why) => {
                errors += 1;
                first_error.get_or_insert(format!("event {n}: {why}"));
            }
        }
    }
    let send_s = t0.elapsed().as_secs_f64();
    // Wait for the deliveries: until all arrived, 10 s without progress, or the limit.
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
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    // A short grace to catch duplicates or unexpected late copies.
    thread::sleep(Duration::from_millis(200));
    let tool_cpu = self_cpu_s() - cpu0;
    let broker = sampler.map(|s| {
        let b1 = s.now();
        let hz = s.tick_hz;
        let peak = s.finish();
        let b0 = b0.unwrap_or_default();
        BrokerFigures {
            cpu_s: (b1.cpu_ticks.saturating_sub(b0.cpu_ticks)) as f64 / hz,
            rss_start: rss_start.unwrap_or(0),
            rss_end: b1.rss_kb,
            rss_peak: peak,
            rss_subscribers_idle: rss_idle,
        }
    });
    shared.stop.store(true, Ordering::Relaxed);
    let mut st = SubStats::default();
    for w in workers {
        let s = w
            .join()
            .map_err(|_| "a subscriber thread panicked".to_string())?;
        st.delivered += s.delivered;
        st.duplicates += s.duplicates;
        st.unexpected += s.unexpected;
        st.foreign += s.foreign;
        st.disconnects += s.disconnects;
        st.first_problem = st.first_problem.or(s.first_problem);
        st.lat.extend(s.lat);
    }
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
    if let Some((p50, p99, max)) = lat {
        lines.push(format!(
            "  e2e latency ms: p50 {p50:.3}, p99 {p99:.3}, max {max:.3}"
        ));
    }
    let per_copy = |cpu: f64| cpu * 1e6 / st.delivered.max(1) as f64;
    lines.push(format!(
        "  tool CPU {tool_cpu:.3} s ({:.2} us/copy, {} threads)",
        per_copy(tool_cpu),
        nthreads
    ));
    let mut j = Json::new();
    j.str("mode", mode)
        .str("run", &maker.run)
        .int("subscribers", c.subscribers as u64)
        .int("subscribers_receiving", connected as u64)
        .int("count", c.count)
        .num("rate", c.rate)
        .int("event_bytes", event_bytes as u64)
        .int("sent", sent)
        .int("naks", naks)
        .int("errors", errors)
        .int("delivered", st.delivered)
        .int("expected_deliveries", expected)
        .int("lost", lost)
        .int("duplicates", st.duplicates)
        .int("unexpected", st.unexpected)
        .int("foreign", st.foreign)
        .int("disconnects", st.disconnects)
        .num("send_s", send_s)
        .num("elapsed_s", elapsed)
        .num("deliveries_per_s", per_s)
        .obj("latency_ms", latency_json(lat));
    let mut tool = Json::new();
    tool.num("cpu_s", tool_cpu)
        .num("cpu_us_per_copy", per_copy(tool_cpu))
        .int("threads", nthreads as u64);
    j.obj("tool", tool);
    if let Some(b) = &broker {
        j.obj("broker", broker_json(b));
        j.num("cpu_us_per_copy", per_copy(b.cpu_s));
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
    Ok((lines, j, ok))
}

// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args = match bolide::cli::parse_env::<Args>("bolide-bench") {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        println!("bolide-bench {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if !args.max_seconds.is_finite() || args.max_seconds <= 0.0 || args.max_seconds > 1e9 {
        eprintln!("bolide-bench: --max-seconds must be positive");
        return ExitCode::from(2);
    }
    let result = match &args.mode {
        None => {
            eprintln!(
                "bolide-bench: give a mode: ingest, fanout, filter or null-broker (see --help)"
            );
            return ExitCode::from(2);
        }
        Some(Mode::NullBroker(a)) => return null_broker::run(&args.host, a),
        Some(Mode::Ingest(a)) => run_ingest(&args, a),
        Some(Mode::Fanout(a)) => run_fanout(&args, &fan_cfg!(a, false)),
        Some(Mode::Filter(a)) => run_fanout(&args, &fan_cfg!(a, true)),
    };
    match result {
        Ok((lines, json, ok)) => {
            let out = io::stdout();
            let mut out = out.lock();
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
            let mut json = json;
            json.str("result", if ok { "ok" } else { "fail" });
            let _ = writeln!(out, "{}", json.finish());
            let _ = out.flush();
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("bolide-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// connect_bounded builds its own socket addresses: it must reach IPv4 and IPv6
    /// listeners, report a refusal, and give up on a listener that never completes the
    /// handshake (accept queue full) instead of waiting for the kernel's two minutes.
    #[test]
    fn connect_bounded_connects_refuses_and_times_out() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = TcpListener::bind(host) else {
                continue; // no IPv6 loopback on this machine
            };
            let s = connect_bounded(l.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
            let (a, _) = l.accept().unwrap();
            assert_eq!(a.peer_addr().unwrap(), s.local_addr().unwrap());
        }
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = connect_bounded(port, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        let started = Instant::now();
        let timed_out = loop {
            match connect_bounded(addr, Duration::from_millis(300)) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() < 5000, "the accept queue never filled");
        };
        assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut, "{timed_out}");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
