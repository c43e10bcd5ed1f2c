//! Subscribing to upstream brokers (`--remote`): one thread per upstream, the subscriber
//! state machine of spec §3.5.
//!
//! The thread connects, then answers what the upstream sends: `iamalive` with an iamalive
//! response, `authenticate` with an authenticate response carrying our `--filter`
//! expressions, and every VOEvent with an `ack` (always: valid or not, new or duplicate,
//! so the upstream never drops us). New events go to the dispatcher like an author's,
//! without schema or IVOID checks (spec §5.2). No parseable message for `--remote-timeout`
//! (120 s) means the link is dead. Reconnects back off geometrically with jitter from 1 s
//! to 60 s; the backoff resets only after a connection stayed up for [`HEALTHY_AFTER`], so
//! an upstream that accepts and closes at once (a whitelist refusal) costs at most one
//! attempt per backoff step, never a reconnect storm.
//!
//! Catch-up ([`crate::replay`]): the thread keeps, in the event database's `meta` (key
//! [`position_key`]), its position in the upstream's archive, and sends it in every
//! authenticate response ([`transport::POSITION_PARAM`]; empty until it has one). A bolide
//! upstream answers with an `iamalive` naming its archive and the seq the events that
//! follow start after, then replays what came after the position, then live events; each
//! event received is the next position (archive, key, ivorn). A position moves past an
//! event only once the dispatcher settled it here (committed, or already known), in the
//! order received, so a crash never leaves it ahead of what this broker holds: at worst
//! some events come again and are recognised as seen. It is written at most every
//! [`SAVE_EVERY`] and when a session ends. Other upstreams (Comet) ignore the Param and
//! never name an archive: no position is kept for them.

use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::cli::Remote;
use crate::dispatcher::Msg;
use crate::frame::{write_frame, FrameError, FrameReader};
use crate::metrics::{LinkState, UpstreamStat, METRICS};
use crate::replay::{At, Position};
use crate::store::Store;
use crate::transport::{self, Role};
use crate::verdict::{Reply, Settle, Settled, Verdict};
use crate::voevent::upstream_event;
use crate::voevent::{Event, Rejection};
use crate::xml::{self, Limits};

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every upstream thread shares.
pub struct UpstreamContext {
    /// Sent as `Response` in our replies, if configured.
    pub local_ivo: Option<String>,
    /// Sent in every authenticate response.
    pub filters: Vec<String>,
    pub max_event_size: usize,
    pub limits: Limits,
    pub inactivity: Duration,
    /// Time the upstream may take to finish a message it started sending.
    pub frame_timeout: Duration,
    pub dispatcher: Sender<Msg>,
    /// Where positions are kept.
    pub store: Arc<Store>,
}

/// How often at most the position is written to the event database.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);
/// How long a session's end waits for the verdicts on its last events.
const SETTLE_AT_END: Duration = Duration::from_secs(2);

/// The `meta` key of the catch-up position in upstream `name` (`host:port`).
pub fn position_key(name: &str) -> Vec<u8> {
    format!("upstream_position:{name}").into_bytes()
}

/// One step of the stream from an upstream, in the order received.
struct Mark {
    /// The submission's token (`None`: a position the upstream named, nothing to wait for).
    token: Option<u64>,
    settled: bool,
    failed: bool,
    position: String,
}

/// This thread's position in its upstream's archive.
struct Tracker {
    store: Arc<Store>,
    key: Vec<u8>,
    name: String,
    /// Every event up to here is settled in this broker.
    current: String,
    saved: String,
    saved_at: Instant,
    /// The upstream's archive in this session, once it named it.
    archive: Option<[u8; 16]>,
    tx: Sender<Settled>,
    rx: Receiver<Settled>,
    next_token: u64,
    marks: std::collections::VecDeque<Mark>,
    /// An event failed to be recorded here: the position stays before it until the
    /// upstream names a new start (next session).
    frozen: bool,
}

impl Tracker {
    fn new(store: Arc<Store>, name: &str) -> Tracker {
        let key = position_key(name);
        let current = match store.meta_get(&key) {
            Ok(v) => v
                .and_then(|v| String::from_utf8(v).ok())
                .unwrap_or_default(),
            Err(e) => {
                warn!("upstream {name}: catch-up position unreadable ({e}); starting without");
                String::new()
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        Tracker {
            store,
            key,
            name: name.to_string(),
            saved: current.clone(),
            current,
            saved_at: Instant::now(),
            archive: None,
            tx,
            rx,
            next_token: 0,
            marks: Default::default(),
            frozen: false,
        }
    }

    /// The upstream named the position the events that follow start after.
    fn named(&mut self, text: &str) {
        let Some(p) = Position::parse(text) else {
            warn!(
                "upstream {}: unreadable position {text:?}; ignored",
                self.name
            );
            return;
        };
        debug!("upstream {}: events follow position {p}", self.name);
        self.archive = Some(p.archive);
        self.marks.push_back(Mark {
            token: None,
            settled: true,
            failed: false,
            position: text.to_string(),
        });
        self.pump(true);
    }

    /// `event` is about to be submitted: the reply that settles its mark (`None`: no
    /// archive named, no position kept).
    fn received(&mut self, event: &Event) -> Option<Reply> {
        let archive = self.archive?;
        let token = self.next_token;
        self.next_token += 1;
        let at = At::Event {
            key: event.key,
            ivorn: event.ivorn.clone(),
        };
        self.marks.push_back(Mark {
            token: Some(token),
            settled: false,
            failed: false,
            position: Position { archive, at }.to_string(),
        });
        Some(Reply::Source(Settle::new(self.tx.clone(), token)))
    }

    /// Whether verdicts are awaited or the position is not saved yet.
    fn unsaved(&self) -> bool {
        !self.marks.is_empty() || self.current != self.saved
    }

    /// Take the verdicts that came, advance, and save if due.
    fn pump(&mut self, force: bool) {
        while let Ok(s) = self.rx.try_recv() {
            self.settle(s);
        }
        self.advance();
        self.save(force);
    }

    fn settle(&mut self, s: Settled) {
        if let Some(m) = self.marks.iter_mut().find(|m| m.token == Some(s.token)) {
            m.settled = true;
            m.failed = !matches!(
                s.verdict,
                Verdict::Accepted | Verdict::Rejected(Rejection::Duplicate)
            );
        }
    }

    fn advance(&mut self) {
        while self.marks.front().is_some_and(|m| m.settled) {
            let m = self.marks.pop_front().expect("a front mark");
            if m.token.is_none() {
                self.frozen = false;
            } else if m.failed && !self.frozen {
                warn!(
                    "upstream {}: an event was not recorded here; the catch-up position stays before it until the next connection",
                    self.name
                );
                self.frozen = true;
            }
            if !self.frozen {
                self.current = m.position;
            }
        }
    }

    fn save(&mut self, force: bool) {
        if self.current == self.saved || (!force && self.saved_at.elapsed() < SAVE_EVERY) {
            return;
        }
        match self.store.meta_put(&self.key, self.current.as_bytes()) {
            Ok(()) => {
                debug!(
                    "upstream {}: catch-up position {} saved",
                    self.name, self.current
                );
                self.saved.clone_from(&self.current);
            }
            Err(e) => warn!("upstream {}: catch-up position not saved: {e}", self.name),
        }
        self.saved_at = Instant::now();
    }

    /// A session ended: wait a little for the verdicts on its last events, then save.
    fn end_session(&mut self) {
        let deadline = Instant::now() + SETTLE_AT_END;
        while self.marks.iter().any(|m| !m.settled) {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(s) => self.settle(s),
                Err(_) => break,
            }
        }
        self.pump(true);
        self.archive = None;
    }
}

/// Why a session with an upstream ended.
#[derive(Debug)]
enum End {
    Closed,
    Silent(Duration),
    Io(io::Error),
    Frame(FrameError),
}

/// Geometric backoff with jitter: `min(1 s × 2^failures, 60 s)`, then a uniform factor in
/// [0.5, 1.0], never below 1 s.
pub struct Backoff {
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The next delay (and count one more failure).
    pub fn next_delay(&mut self) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        let unit = r as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.5 + 0.5 * unit).max(BACKOFF_MIN)
    }

    /// The link proved healthy.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Thread body: subscribe to `remote` until `stop` fires or closes.
pub fn run(remote: Remote, ctx: Arc<UpstreamContext>, stop: Receiver<()>) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (remote.port as u64) << 17;
    let mut backoff = Backoff::new(seed);
    let name = remote.to_string();
    let stat = METRICS.upstream(name.clone());
    let mut tracker = Tracker::new(Arc::clone(&ctx.store), &name);
    loop {
        let started = Instant::now();
        stat.set(LinkState::Connecting);
        match connect(&remote) {
            Ok(stream) => {
                info!("subscribed to upstream {name}");
                stat.set(LinkState::Connected);
                let end = session(&stream, &name, &ctx, &stat, &mut tracker);
                let _ = stream.shutdown(Shutdown::Both);
                tracker.end_session();
                let lived = started.elapsed();
                match &end {
                    End::Closed => warn!(
                        "upstream {name} closed the connection after {:.1} s",
                        lived.as_secs_f64()
                    ),
                    End::Silent(d) => warn!(
                        "no iamalive received from upstream {name} for {} seconds; reconnecting",
                        d.as_secs()
                    ),
                    End::Io(e) => warn!("upstream {name}: {e}"),
                    End::Frame(e) => warn!("upstream {name}: {e}"),
                }
                if lived >= HEALTHY_AFTER {
                    backoff.reset();
                }
            }
            Err(e) => warn!("cannot connect to upstream {name}: {e}"),
        }
        stat.set(LinkState::Waiting);
        let delay = backoff.next_delay();
        info!(
            "reconnecting to upstream {name} in {:.1} s",
            delay.as_secs_f64()
        );
        match stop.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}

fn connect(remote: &Remote) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (remote.host.as_str(), remote.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn session(
    stream: &TcpStream,
    name: &str,
    ctx: &UpstreamContext,
    stat: &UpstreamStat,
    tracker: &mut Tracker,
) -> End {
    let mut frames = FrameReader::new(ctx.max_event_size);
    let mut out = stream;
    if let Err(e) = stream.set_write_timeout(Some(ctx.inactivity)) {
        return End::Io(e);
    }
    let local = ctx.local_ivo.as_deref();
    let mut last_good = Instant::now();
    loop {
        let idle = last_good + ctx.inactivity;
        // While a position waits to be settled or saved, wake to do it.
        let wake = match tracker.unsaved() {
            true => idle.min(Instant::now() + SAVE_EVERY),
            false => idle,
        };
        let frame = match frames.read_frame_deadlines(stream, wake, ctx.frame_timeout) {
            Ok(f) => f,
            Err(FrameError::TimedOut | FrameError::Stalled { .. })
                if Instant::now() < idle && !frames.stalled(ctx.frame_timeout) =>
            {
                tracker.pump(false);
                continue;
            }
            Err(FrameError::Closed) => return End::Closed,
            Err(FrameError::TimedOut) => return End::Silent(ctx.inactivity),
            Err(e) => return End::Frame(e),
        };
        let doc = match xml::parse(&frame, ctx.limits) {
            Ok(d) => d,
            Err(e) => {
                // Not acked (no ivorn to ack) and does not count as a sign of life.
                warn!("unparsable message from upstream {name}: {e}");
                continue;
            }
        };
        last_good = Instant::now();
        let root = doc.root();
        let reply = match root.local {
            "Transport" => {
                let m = match transport::from_document(&doc) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!("upstream {name}: {e}");
                        continue;
                    }
                };
                let origin = m.origin.as_deref().unwrap_or("");
                match m.role {
                    Some(Role::IAmAlive) => {
                        debug!("iamalive from upstream {name}");
                        if let Some(p) = &m.position {
                            tracker.named(p);
                        }
                        transport::iamalive_response(origin, local)
                    }
                    Some(Role::Authenticate) => {
                        debug!(
                            "authenticate from upstream {name}; sending {} filters",
                            ctx.filters.len()
                        );
                        transport::authenticate_response_at(
                            origin,
                            local,
                            &ctx.filters,
                            &tracker.current,
                        )
                    }
                    _ => {
                        info!(
                            "incomprehensible message from upstream {name} (role={})",
                            m.role_attr
                        );
                        continue;
                    }
                }
            }
            "VOEvent" => match upstream_event(&doc, &frame, name) {
                Ok(mut ev) => {
                    let ack = transport::ack(&ev.ivorn, local);
                    debug!("received {} from upstream {name}", ev.ivorn);
                    stat.received();
                    let reply = tracker.received(&ev);
                    if ctx.store.archiving() {
                        ev.pack_for_archive();
                    }
                    if ctx
                        .dispatcher
                        .send(Msg::Submit {
                            event: Arc::new(ev),
                            reply,
                        })
                        .is_err()
                    {
                        return End::Closed;
                    }
                    ack
                }
                Err(e) => {
                    warn!("unusable event from upstream {name}: {e}");
                    continue;
                }
            },
            other => {
                info!(
                    "incomprehensible <{}> document from upstream {name}",
                    other.chars().take(40).collect::<String>()
                );
                continue;
            }
        };
        if let Err(e) = write_frame(&mut out, &reply) {
            return End::Io(e);
        }
        tracker.pump(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use std::io::Write;
    use std::net::TcpListener;

    /// An event an upstream sends reaches the dispatcher packed for the archive when the
    /// broker archives, and unpacked under `--no-archive`.
    #[test]
    fn events_are_packed_on_the_upstream_thread_when_archived() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/voevents/swift_grb690738-bat-grb-pos_10.xml");
        let payload = std::fs::read(&corpus).unwrap();
        for archive in [true, false] {
            let dir = std::env::temp_dir().join(format!(
                "bolide-upstream-pack-{archive}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = StoreConfig::new(&dir);
            cfg.no_sync = true;
            if !archive {
                cfg.archive = None;
            }
            let store = Arc::new(Store::open(&cfg).unwrap());
            let (tx, rx) = crossbeam_channel::unbounded();
            let ctx = Arc::new(UpstreamContext {
                local_ivo: None,
                filters: Vec::new(),
                max_event_size: 1 << 20,
                limits: Limits::default(),
                inactivity: Duration::from_secs(30),
                frame_timeout: Duration::from_secs(10),
                dispatcher: tx,
                store,
            });
            let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
            let remote = Remote {
                host: "127.0.0.1".into(),
                port: upstream.local_addr().unwrap().port(),
            };
            let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
            let subscriber = std::thread::spawn(move || run(remote, ctx, stop_rx));
            let (mut conn, _) = upstream.accept().unwrap();
            conn.write_all(&crate::frame::encode(&payload)).unwrap();
            let Ok(Msg::Submit { event, .. }) = rx.recv_timeout(Duration::from_secs(10)) else {
                panic!("no event reached the dispatcher");
            };
            let expected = archive.then(|| crate::archive::pack(&payload).into_boxed_slice());
            assert_eq!(event.packed, expected, "archive: {archive}");
            stop_tx.send(()).unwrap();
            drop(conn);
            subscriber.join().unwrap();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn backoff_grows_geometrically_within_bounds_and_resets() {
        let mut b = Backoff::new(42);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << i.min(6)).min(BACKOFF_MAX);
            assert!(
                *d >= base.mul_f64(0.5).max(BACKOFF_MIN) && *d <= base,
                "{i}: {d:?}"
            );
        }
        assert!(delays[11] >= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        // Jitter: two seeds give different sequences.
        let mut c = Backoff::new(7);
        let other: Vec<Duration> = (0..12).map(|_| c.next_delay()).collect();
        assert_ne!(delays, other);
    }
}
