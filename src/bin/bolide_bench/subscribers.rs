//! The subscribers of `fanout` and `filter`: a few threads ([`Worker`]), each with one
//! epoll set over its share of the connections, reading into one scratch buffer per
//! thread and answering with prebuilt acks. An event is recognised by a byte search for
//! `ivorn="`; each subscriber answers authenticate (installing its filter in `filter`
//! mode) and iamalive, acks every event, and counts what arrives against what should.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bolide::frame::encode;

use crate::event::{filter_matches, CLASSES, FILTERS};
use crate::scan::{attr_in, find, origin_of, transport_role};

/// The ivo identifier the subscribers give in their replies.
const SUBSCRIBER_IVO: &str = "ivo://bolide.bench/subscriber";

/// What the subscriber threads share with the main thread.
pub struct Shared {
    /// Ivorn prefix of this run.
    pub prefix: Vec<u8>,
    pub count: u64,
    /// Send instant of event n, ns after `base` plus 1 (0: not sent yet).
    pub sent_ns: Vec<AtomicU64>,
    pub base: Instant,
    /// Filter index per subscriber (filter mode).
    pub filters: Option<Vec<usize>>,
    /// Highest probe round each subscriber has seen (+1; 0 = none).
    pub probe_seen: Vec<AtomicU32>,
    /// Authenticate answered, per subscriber.
    pub authenticated: Vec<AtomicBool>,
    /// First deliveries of measured events, all subscribers.
    pub delivered: AtomicU64,
    pub stop: AtomicBool,
}

impl Shared {
    /// For `subscribers` subscribers awaiting `count` events whose ivorns start with
    /// `prefix`; with `filtered`, subscriber i installs `FILTERS[i % 4]`.
    pub fn new(prefix: Vec<u8>, count: u64, subscribers: usize, filtered: bool) -> Shared {
        Shared {
            prefix,
            count,
            sent_ns: (0..count).map(|_| AtomicU64::new(0)).collect(),
            base: Instant::now(),
            filters: filtered.then(|| (0..subscribers).map(|i| i % FILTERS.len()).collect()),
            probe_seen: (0..subscribers).map(|_| AtomicU32::new(0)).collect(),
            authenticated: (0..subscribers).map(|_| AtomicBool::new(false)).collect(),
            delivered: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    pub fn subscribers(&self) -> usize {
        self.probe_seen.len()
    }

    /// Copies the broker should deliver: every event to every subscriber, or in `filter`
    /// mode to those whose filter matches its class.
    pub fn expected_deliveries(&self) -> u64 {
        let subscribers = self.subscribers() as u64;
        (0..self.count)
            .map(|n| match &self.filters {
                Some(fs) => fs
                    .iter()
                    .filter(|&&f| filter_matches(f, n % CLASSES))
                    .count() as u64,
                None => subscribers,
            })
            .sum()
    }
}

/// One subscriber's connection.
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

/// What the subscribers counted.
#[derive(Default)]
pub struct SubStats {
    pub delivered: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub foreign: u64,
    pub disconnects: u64,
    pub first_problem: Option<String>,
    pub lat: Vec<u32>,
}

impl SubStats {
    /// Add another worker's counts to these.
    fn merge(&mut self, s: SubStats) {
        self.delivered += s.delivered;
        self.duplicates += s.duplicates;
        self.unexpected += s.unexpected;
        self.foreign += s.foreign;
        self.disconnects += s.disconnects;
        self.first_problem = self.first_problem.take().or(s.first_problem);
        self.lat.extend(s.lat);
    }
}

/// Prebuilt pieces of the ack a subscriber sends (Comet's shape, fixed TimeStamp).
struct AckParts {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl AckParts {
    fn new() -> AckParts {
        const MARK: &str = "\u{1}IVORN\u{1}";
        let full = bolide::transport::ack(MARK, Some(SUBSCRIBER_IVO));
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

/// One subscriber thread: its connections, in one epoll set.
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
                let m = bolide::transport::iamalive_response(&o, Some(SUBSCRIBER_IVO));
                conn.out.extend_from_slice(&encode(&m));
            }
            Some(b"authenticate") => {
                let o = origin_of(f).unwrap_or_default();
                let filters: Vec<String> = match &sh.filters {
                    Some(fs) => vec![FILTERS[fs[conn.id]].to_string()],
                    None => Vec::new(),
                };
                let m =
                    bolide::transport::authenticate_response(&o, Some(SUBSCRIBER_IVO), &filters);
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

/// Connect every subscriber to the broker's broadcast port `addr`, then start `threads`
/// workers, subscriber i on worker i % threads.
pub fn start(
    addr: SocketAddr,
    shared: &Arc<Shared>,
    threads: usize,
) -> Result<Vec<JoinHandle<SubStats>>, String> {
    let words = shared.count.div_ceil(64) as usize;
    let mut per_thread: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for id in 0..shared.subscribers() {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("subscriber {id}: cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        per_thread[id % threads].push(Conn {
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
            shared: Arc::clone(shared),
            ack: AckParts::new(),
            conns,
            stats: SubStats::default(),
            epfd,
        };
        workers.push(thread::spawn(move || w.run()));
    }
    Ok(workers)
}

/// Wait for the workers (stopped through `Shared::stop`) and add up their counts.
pub fn join(workers: Vec<JoinHandle<SubStats>>) -> Result<SubStats, String> {
    let mut all = SubStats::default();
    for w in workers {
        all.merge(
            w.join()
                .map_err(|_| "a subscriber thread panicked".to_string())?,
        );
    }
    Ok(all)
}
