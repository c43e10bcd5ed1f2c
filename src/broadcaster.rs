//! The broadcaster: one thread per subscriber connection (spec §3.4, with bolide's
//! decisions).
//!
//! On connect it registers its [`Outbox`] with the dispatcher, sends `authenticate` and
//! waits briefly for the answer (filters); the dispatcher holds the events it accepts
//! meanwhile and, once told the filters, offers the ones that pass, then writes every
//! later event straight to the socket without waking this thread. The thread wakes when
//! the dispatcher left backlog (the socket was full; it then writes it with blocking
//! writes under the write deadline), or at least every 5 s (`MAX_NAP`) to drain whatever
//! the subscriber sent without blocking (`recv` with `MSG_DONTWAIT`). Its own timer sends
//! `iamalive` every interval and applies the drop rules: an iamalive still unanswered at
//! the next tick, or more than `max_unacked` events sent before the previous tick still
//! unacknowledged. Acks count only up to what was sent, so unsolicited acks never bank
//! credit. A `nak` ends the connection (that subscriber refused an event; it must not get
//! it again).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, info, warn};

use crate::dispatcher::{Msg, SubscriberHandle};
use crate::frame::{FrameError, FrameReader};
use crate::metrics::{DropReason, Registered, METRICS};
use crate::outbox::{Outbox, Waker};
use crate::replay::{self, ReplayContext, Resume};
use crate::sys::{wait_readable, NonBlocking};
use crate::transport::{self, Role};

/// The longest the thread sleeps before looking at its socket again (so a new
/// authenticate, i.e. new filters, takes effect within this time).
const MAX_NAP: Duration = Duration::from_secs(5);
/// How long a new subscriber may take to answer our authenticate before events flow (the
/// dispatcher holds them meanwhile).
const FIRST_ANSWER: Duration = Duration::from_millis(250);
/// Until a subscriber has answered authenticate (and for at most [`EAGER_FOR`] after it
/// connected), its socket is read this often, so filters that arrive late still apply
/// within a quarter of a second.
const EAGER_NAP: Duration = Duration::from_millis(250);
const EAGER_FOR: Duration = Duration::from_secs(30);
/// Largest message accepted from a subscriber (acks and authenticate responses are small).
const MAX_INCOMING: usize = 64 * 1024;
/// Most bytes taken from a subscriber's socket per `read`: an ack is about 450 bytes.
/// Read straight into the frame buffer: a buffer on the stack would cost every
/// subscriber thread a resident stack page.
const READ_SIZE: usize = 512;
/// Receive buffers no subscriber thread holds now. A thread takes one to read its socket
/// and gives it back once every frame in it is handled, so an idle subscriber holds no
/// receive buffer (it would cost each of thousands of subscribers its largest read).
/// Buffers grown past [`SPARE_LEN`] (a long authenticate) are freed instead, and at most
/// [`SPARES`] are kept.
static SPARE_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const SPARE_LEN: usize = 4096;
const SPARES: usize = 256;

/// What every broadcaster thread shares.
pub struct BroadcastContext {
    pub local_ivo: String,
    pub iamalive_interval: Duration,
    pub max_unacked: u64,
    pub queue: usize,
    pub write_timeout: Duration,
    pub dispatcher: Sender<Msg>,
    pub next_id: AtomicU64,
    /// Most filters installed per subscriber.
    pub max_filters: usize,
    /// Longest filter expression, in bytes.
    pub max_filter_len: usize,
    /// Time a subscriber may take to finish a message it started sending.
    pub frame_timeout: Duration,
    /// Catch-ups from the archive (`None`: no archive).
    pub replay: Option<Arc<ReplayContext>>,
}

/// Why a subscriber connection ended.
#[derive(Debug)]
enum End {
    Closed,
    DroppedByDispatcher,
    Dead,
    NotAcking(u64),
    Nak(String),
    Io(io::Error),
    Garbage(String),
}

/// What a subscriber's catch-up needs to know: made only for a subscriber resumed by
/// address or one whose answer carries a position.
struct CatchUp {
    /// The position its first answer carried (a bolide subscriber).
    resume: Option<Resume>,
    /// Its last ack, when it is resumed by address (`--resume-subscribers`).
    acks: Option<replay::Acked>,
}

/// A subscriber's message as [`Peer::next_message`] first sees it.
enum Incoming {
    Ack,
    IAmAlive,
    /// Anything else, copied out of the receive buffer to be parsed.
    Other(Vec<u8>),
}

/// The next complete message in `frames`: an ack (passed to a catch-up's ack tracker,
/// if any) or an iamalive answer is recognised in place, without a copy or an
/// allocation; anything else is copied out.
fn next_incoming(
    frames: &mut FrameReader,
    catchup: &mut Option<Box<CatchUp>>,
) -> Result<Option<Incoming>, FrameError> {
    frames.with_next_frame(|payload| match transport::quick_role(payload) {
        Some(Role::Ack) => {
            if let Some(a) = catchup.as_mut().and_then(|c| c.acks.as_mut()) {
                a.acked(payload);
            }
            Incoming::Ack
        }
        Some(Role::IAmAlive) => Incoming::IAmAlive,
        _ => Incoming::Other(payload.to_vec()),
    })
}

struct Peer {
    id: u64,
    /// The dispatcher has been told the first filters ([`Msg::Start`]) yet?
    started: bool,
    /// Filters from an authenticate that came before [`Msg::Start`].
    early_filters: Option<Vec<String>>,
    /// Its catch-up state (boxed, and only when it may catch up: most subscribers of most
    /// brokers never do, and the session's stack and heap stay small).
    catchup: Option<Box<CatchUp>>,
    /// With the archive on, its last seq just before the subscriber registered: where a
    /// catch-up hands over to live fan-out.
    archive_end: u64,
    /// The subscriber has answered an authenticate at least once.
    answered: bool,
    /// The connection: this thread reads [`Outbox::stream`]; writes go through the
    /// outbox, shared with the dispatcher.
    out: Arc<Outbox>,
    addr: SocketAddr,
    frames: FrameReader,
    /// Lists this subscriber in the operator's view ([`crate::metrics`]) while it lives;
    /// what the view shows is in its outbox.
    _listed: Registered<Outbox>,
    /// Events sent before the previous tick.
    sent_at_last_tick: u64,
    iamalive_unanswered: bool,
}

/// Handle one subscriber connection to completion.
pub fn handle(stream: TcpStream, addr: SocketAddr, ctx: Arc<BroadcastContext>) {
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    if let Err(e) = stream.set_write_timeout(Some(ctx.write_timeout)) {
        warn!("subscriber {addr}: {e}");
        return;
    }
    let (out, waker) = Outbox::new(stream, addr, ctx.queue);
    let archive_end = ctx
        .replay
        .as_ref()
        .map_or(0, |r| r.store.archive_counters().next_seq.saturating_sub(1));
    let catchup = ctx
        .replay
        .as_ref()
        .filter(|r| r.resumes(addr.ip()))
        .map(|_| {
            Box::new(CatchUp {
                resume: None,
                acks: Some(replay::Acked::new(addr.ip())),
            })
        });
    // Registered before authenticate is sent, so every event accepted from that moment on
    // is held for this subscriber until its filters are known.
    if !register(&ctx, id, &out) {
        return;
    }
    let listed = METRICS.subscriber(&out);
    let mut peer = Peer {
        id,
        started: false,
        early_filters: None,
        catchup,
        archive_end,
        answered: false,
        out,
        addr,
        frames: FrameReader::new(MAX_INCOMING),
        _listed: listed,
        sent_at_last_tick: 0,
        iamalive_unanswered: false,
    };
    serve(&mut peer, &ctx, &waker);
    let _ = peer.out.stream().shutdown(Shutdown::Both);
    unregister(&ctx, id);
}

/// Register the subscriber with the dispatcher (`false`: it is gone). Not inlined, nor
/// is [`unregister`]: the messages are built in frames of their own, not in the one that
/// lives as long as the session (see `subscriber_stack_budget`).
#[inline(never)]
fn register(ctx: &BroadcastContext, id: u64, out: &Arc<Outbox>) -> bool {
    let sub = SubscriberHandle::new(id, Arc::clone(out));
    let hold = ctx.queue;
    ctx.dispatcher.send(Msg::Register { sub, hold }).is_ok()
}

#[inline(never)]
fn unregister(ctx: &BroadcastContext, id: u64) {
    let _ = ctx.dispatcher.send(Msg::Unregister(id));
}

/// Authenticate the registered subscriber, then serve it until the connection ends.
fn serve(peer: &mut Peer, ctx: &BroadcastContext, waker: &Waker) {
    let addr = peer.addr;
    if let Err(e) = peer.send(transport::authenticate(&ctx.local_ivo)) {
        info!("subscriber {addr} went away before authenticate: {e}");
        return;
    }
    // Give the subscriber a moment to answer authenticate (with its filters), so its
    // first event already passes them; the dispatcher holds events for it meanwhile.
    // pygcn never answers, so this is bounded.
    if let Err(end) = peer.first_answer(ctx) {
        if peer.out.was_dropped() {
            debug!("subscriber {addr} dropped by the dispatcher");
        } else {
            info!("subscriber {addr} left while its answer to authenticate was awaited: {end:?}");
        }
        return;
    }
    if !begin(peer, ctx) {
        return;
    }
    peer.started = true;
    let connected = Instant::now();
    let mut next_tick = connected + ctx.iamalive_interval;
    let end = loop {
        let eager = !peer.answered && connected.elapsed() < EAGER_FOR;
        let nap = next_tick
            .saturating_duration_since(Instant::now())
            .min(if eager { EAGER_NAP } else { MAX_NAP });
        // Woken when the dispatcher left backlog for us (the socket was full); otherwise
        // events went straight to the kernel and we only look at the socket and timers.
        peer.give_back_buffer();
        waker.wait(nap);
        if peer.out.was_dropped() {
            break End::DroppedByDispatcher;
        }
        if let Err(e) = peer.out.flush() {
            break if peer.out.was_dropped() {
                End::DroppedByDispatcher
            } else {
                End::Io(e)
            };
        }
        if let Err(end) = peer.read_incoming(ctx) {
            if peer.out.was_dropped() {
                break End::DroppedByDispatcher;
            }
            break end;
        }
        if let (Some(a), Some(r)) = (
            peer.catchup.as_mut().and_then(|c| c.acks.as_mut()),
            &ctx.replay,
        ) {
            a.save(r, false);
        }
        if peer.frames.stalled(ctx.frame_timeout) {
            let (have, want) = peer.frames.partial().unwrap_or((0, 0));
            break End::Garbage(FrameError::Stalled { have, want }.to_string());
        }
        if Instant::now() >= next_tick {
            if let Err(end) = peer.tick(ctx) {
                break end;
            }
            next_tick += ctx.iamalive_interval;
        }
    };
    let dropped = match &end {
        End::Closed | End::DroppedByDispatcher => None,
        End::Dead => Some(DropReason::Dead),
        End::NotAcking(_) => Some(DropReason::NotAcking),
        End::Nak(_) => Some(DropReason::Nak),
        End::Io(_) | End::Garbage(_) => Some(DropReason::Error),
    };
    if let Some(r) = dropped {
        METRICS.dropped(r);
    }
    if let (Some(a), Some(r)) = (
        peer.catchup.as_mut().and_then(|c| c.acks.as_mut()),
        &ctx.replay,
    ) {
        a.save(r, true);
    }
    match &end {
        End::Closed => info!("subscriber {addr} closed the connection"),
        End::DroppedByDispatcher => debug!("subscriber {addr} dropped by the dispatcher"),
        End::Dead => warn!("subscriber {addr} appears to be dead (iamalive unanswered); dropping connection"),
        End::NotAcking(n) => warn!("subscriber {addr} is not acknowledging events ({n} unacknowledged); dropping connection"),
        End::Nak(iv) => warn!("nak received from subscriber {addr} for {iv}; terminating connection"),
        End::Io(e) => warn!("subscriber {addr}: {e}; dropping connection"),
        End::Garbage(e) => warn!("subscriber {addr}: {e}; dropping connection"),
    }
}

/// Start live fan-out to the subscriber, after a catch-up if it has a position (a
/// bolide names its own; one resumed by address has it kept here); `false` if the
/// connection ends meanwhile. Not inlined, so that its frame is gone before the session
/// reads and parses (see `subscriber_stack_budget`).
#[inline(never)]
fn begin(peer: &mut Peer, ctx: &BroadcastContext) -> bool {
    let addr = peer.addr;
    let resume = match (&ctx.replay, peer.catchup.as_mut()) {
        (Some(r), Some(c)) => match c.resume.take() {
            Some(resume) => Some((r, resume, true)),
            None if c.acks.is_some() => Some((r, r.stored(addr.ip()), false)),
            None => None,
        },
        _ => None,
    };
    if let Some((r, resume, tell)) = resume {
        if let Err(stop) = catch_up(peer, ctx, r, &resume, tell) {
            info!("subscriber {addr}: catch-up ended: {stop}");
            return false;
        }
    } else {
        let exprs = peer.early_filters.take().unwrap_or_default();
        let id = peer.id;
        if ctx.dispatcher.send(Msg::Start { id, exprs }).is_err() {
            return false;
        }
    }
    true
}

/// Replay the archive after the subscriber's position, then hand it over to live fan-out
/// ([`replay`]). Not inlined: the catch-up's frames must not add to the depth of every
/// session (see `subscriber_stack_budget`).
#[inline(never)]
fn catch_up(
    peer: &mut Peer,
    ctx: &BroadcastContext,
    r: &ReplayContext,
    resume: &Resume,
    tell_position: bool,
) -> Result<u64, replay::Stop> {
    let out = Arc::clone(&peer.out);
    let sub = replay::Subscriber {
        id: peer.id,
        addr: peer.addr,
        out: &out,
        dispatcher: &ctx.dispatcher,
        local_ivo: &ctx.local_ivo,
        end: peer.archive_end,
        queue: ctx.queue,
        tell_position,
    };
    let exprs = peer.early_filters.clone().unwrap_or_default();
    let next_tick = Instant::now() + ctx.iamalive_interval;
    let mut link = Replaying {
        peer,
        ctx,
        next_tick,
    };
    replay::catch_up(r, &sub, resume, &exprs, &mut link)
}

/// The subscriber's connection while it is caught up.
struct Replaying<'a> {
    peer: &'a mut Peer,
    ctx: &'a BroadcastContext,
    /// When an iamalive is due if the catch-up is still waiting to read.
    next_tick: Instant,
}

impl replay::Link for Replaying<'_> {
    fn drain(&mut self) -> bool {
        self.peer.read_incoming(self.ctx).is_ok()
    }

    fn filters(&mut self) -> Vec<String> {
        self.peer.early_filters.clone().unwrap_or_default()
    }

    fn idle(&mut self) -> bool {
        if Instant::now() < self.next_tick {
            return true;
        }
        self.next_tick += self.ctx.iamalive_interval;
        self.peer.tick(self.ctx).is_ok()
    }
}

impl Peer {
    /// Clamp: acks never exceed what was sent (no credit for unsolicited acks).
    fn count_ack(&mut self) {
        // Only this thread counts acks, so a load and an add do not race.
        let acked = &self.out.stat.acked;
        if acked.load(Ordering::Relaxed) < self.out.sent() {
            acked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queue one of our own messages behind any backlog and write it out.
    fn send(&mut self, msg: Vec<u8>) -> io::Result<()> {
        self.out.push_control(crate::frame::encode(&msg));
        self.out.flush()
    }

    /// Take a spare receive buffer (see [`SPARE_BUFFERS`]) unless the frame reader holds
    /// the start of a frame. Not inlined: its frame must not add to the depth of the
    /// reads and parses that follow (see `subscriber_stack_budget`).
    #[inline(never)]
    fn take_spare_buffer(&mut self) {
        if self.frames.buffered() == 0 {
            let spare = SPARE_BUFFERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            if let Some(buf) = spare {
                self.frames = FrameReader::with_buffer(MAX_INCOMING, buf);
            }
        }
    }

    /// Give the receive buffer back to [`SPARE_BUFFERS`] if nothing is left in it.
    #[inline(never)]
    fn give_back_buffer(&mut self) {
        if self.frames.buffered() > 0 {
            return;
        }
        let idle = FrameReader::new(MAX_INCOMING);
        let buf = std::mem::replace(&mut self.frames, idle).into_buffer();
        if buf.capacity() > 0 && buf.capacity() <= SPARE_LEN {
            let mut spares = SPARE_BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
            if spares.len() < SPARES {
                spares.push(buf);
            }
        }
    }

    /// Wait up to [`FIRST_ANSWER`] for the subscriber's first message and handle what came.
    fn first_answer(&mut self, ctx: &BroadcastContext) -> Result<(), End> {
        let deadline = Instant::now() + FIRST_ANSWER;
        while !self.frames.has_frame() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Wait without a receive buffer: thousands of subscribers connecting at once
            // would otherwise each hold one for the whole wait.
            if !wait_readable(self.out.stream(), left).map_err(End::Io)? {
                break;
            }
            self.take_spare_buffer();
            match self
                .frames
                .read_some(&mut NonBlocking(self.out.stream()), READ_SIZE)
            {
                Ok(0) => return Err(End::Closed),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(End::Io(e)),
            }
        }
        while self.next_message(ctx)? {}
        Ok(())
    }

    /// Read everything the subscriber has sent so far, without blocking.
    fn read_incoming(&mut self, ctx: &BroadcastContext) -> Result<(), End> {
        self.take_spare_buffer();
        loop {
            match self
                .frames
                .read_some(&mut NonBlocking(self.out.stream()), READ_SIZE)
            {
                Ok(0) => return Err(End::Closed),
                Ok(_) => {}
                Err(e) => {
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(()),
                        io::ErrorKind::Interrupted => continue,
                        _ => Err(End::Io(e)),
                    }
                }
            }
            while self.next_message(ctx)? {}
        }
    }

    /// The subscriber's answer to authenticate: its filters (bounded by --max-filters and
    /// --max-filter-length) and, from a bolide, its position. Not inlined: these locals
    /// stay out of the frame that parses every incoming message.
    #[inline(never)]
    fn authenticated(
        &mut self,
        mut exprs: Vec<String>,
        position: Option<String>,
        ctx: &BroadcastContext,
    ) {
        self.answered = true;
        if exprs.len() > ctx.max_filters {
            warn!(
                "subscriber {} sent {} filters; only the first {} are installed (--max-filters)",
                self.addr,
                exprs.len(),
                ctx.max_filters
            );
            exprs.truncate(ctx.max_filters);
        }
        exprs.retain(|e| {
            let ok = e.len() <= ctx.max_filter_len;
            if !ok {
                warn!(
                    "subscriber {}: a filter of {} bytes exceeds --max-filter-length {}; refused",
                    self.addr,
                    e.len(),
                    ctx.max_filter_len
                );
            }
            ok
        });
        self.out.stat.set_filters(&exprs);
        if self.started {
            let _ = ctx.dispatcher.send(Msg::SetFilters { id: self.id, exprs });
        } else {
            self.early_filters = Some(exprs);
            if let (Some(_), Some(p)) = (&ctx.replay, position) {
                let c = self.catchup.get_or_insert_with(|| {
                    Box::new(CatchUp {
                        resume: None,
                        acks: None,
                    })
                });
                if c.resume.is_none() {
                    c.resume = Some(Resume::parse(&p));
                }
            }
        }
    }

    /// Handle the next complete message, if any (`false`: none buffered). Acks and
    /// iamalive answers (one per delivered copy, one per interval) are recognised from
    /// their start tag and handled where they lie in the receive buffer: with thousands of
    /// subscriber threads, a copy per ack would be a `malloc` and a `free` per copy, each
    /// taking a lock on one of the few malloc arenas that all those threads share. Other
    /// messages are copied out and parsed.
    fn next_message(&mut self, ctx: &BroadcastContext) -> Result<bool, End> {
        let next = next_incoming(&mut self.frames, &mut self.catchup);
        match next {
            Ok(None) => Ok(false),
            Ok(Some(Incoming::Ack)) => {
                self.count_ack();
                Ok(true)
            }
            Ok(Some(Incoming::IAmAlive)) => {
                self.iamalive_unanswered = false;
                Ok(true)
            }
            Ok(Some(Incoming::Other(payload))) => {
                self.handle_message(&payload, ctx)?;
                Ok(true)
            }
            Err(e) => Err(End::Garbage(e.to_string())),
        }
    }

    /// A message other than a plain ack or iamalive answer: parsed, then acted on.
    fn handle_message(&mut self, payload: &[u8], ctx: &BroadcastContext) -> Result<(), End> {
        let msg = match transport::parse(payload) {
            Ok(m) => m,
            Err(e) => {
                info!("unparsable message from subscriber {}: {e}", self.addr);
                return Ok(());
            }
        };
        match msg.role {
            Some(Role::Ack) => {
                if let Some(a) = self.catchup.as_mut().and_then(|c| c.acks.as_mut()) {
                    a.acked(payload);
                }
                self.count_ack();
            }
            Some(Role::IAmAlive) => self.iamalive_unanswered = false,
            Some(Role::Nak) => {
                return Err(End::Nak(msg.origin.unwrap_or_default()));
            }
            Some(Role::Authenticate) => self.authenticated(msg.filters, msg.position, ctx),
            None => info!(
                "incomprehensible message from subscriber {} (role={})",
                self.addr, msg.role_attr
            ),
        }
        Ok(())
    }

    fn tick(&mut self, ctx: &BroadcastContext) -> Result<(), End> {
        if self.iamalive_unanswered {
            return Err(End::Dead);
        }
        let overdue = self
            .sent_at_last_tick
            .saturating_sub(self.out.stat.acked.load(Ordering::Relaxed));
        if overdue > ctx.max_unacked {
            return Err(End::NotAcking(overdue));
        }
        self.sent_at_last_tick = self.out.sent();
        self.send(transport::iamalive(&ctx.local_ivo))
            .map_err(End::Io)?;
        self.iamalive_unanswered = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::write_frame;
    use crate::voevent::{Event, EventRole, Origin};
    use std::net::TcpListener;

    /// Bytes of stack, below its caller's frame, that `f` wrote to: the stack under this
    /// frame is painted with a pattern first and searched for the deepest changed byte.
    #[inline(never)]
    fn stack_used_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
        const SPAN: usize = 64 * 1024;
        const PAINT: u8 = 0xA5;
        /// An address below the frame of a function called from here, where `f`'s
        /// frames start (less a margin for the painting itself).
        #[inline(never)]
        fn below_here() -> usize {
            let marker = 0u8;
            std::hint::black_box(&marker) as *const u8 as usize - 512
        }
        let top = below_here();
        // SAFETY: [top - SPAN, top) is unused stack of this thread (started with a
        // stack of CONNECTION_STACK bytes, so it is mapped), below every live frame.
        unsafe { std::ptr::write_bytes((top - SPAN) as *mut u8, PAINT, SPAN) };
        let out = f();
        let deepest = (top - SPAN..top)
            // SAFETY: the same mapped range; volatile so that the reads are not elided.
            .find(|&a| unsafe { std::ptr::read_volatile(a as *const u8) } != PAINT)
            .unwrap_or(top);
        (out, top - deepest)
    }

    /// Acks and iamalive answers are handled where they lie in the receive buffer: no
    /// allocation per message (with thousands of subscriber threads, one per ack would
    /// contend for malloc's few arena locks). Anything else comes out whole, in order.
    #[test]
    fn acks_are_read_in_place() {
        let mut wire = Vec::new();
        for i in 0..50 {
            wire.extend(crate::frame::encode(&transport::ack(
                &format!("ivo://x/y#{i}"),
                Some("ivo://sub/b"),
            )));
            if i % 10 == 0 {
                wire.extend(crate::frame::encode(&transport::iamalive_response(
                    "ivo://bolide.test/broker",
                    Some("ivo://sub/b"),
                )));
            }
        }
        let auth = transport::authenticate_response("ivo://bolide.test/broker", None, &[]);
        wire.extend(crate::frame::encode(&auth));
        let mut frames = FrameReader::new(MAX_INCOMING);
        let mut catchup = None;
        let mut src = &wire[..];
        while frames.read_some(&mut src, wire.len()).unwrap() > 0 {}
        let before = crate::test_alloc::allocations();
        let (mut acks, mut alive) = (0, 0);
        loop {
            match next_incoming(&mut frames, &mut catchup).unwrap() {
                Some(Incoming::Ack) => acks += 1,
                Some(Incoming::IAmAlive) => alive += 1,
                Some(Incoming::Other(m)) => {
                    assert_eq!((acks, alive), (50, 5));
                    assert_eq!(
                        crate::test_alloc::allocations() - before,
                        1,
                        "the copy of authenticate"
                    );
                    assert_eq!(m, auth);
                }
                None => break,
            }
        }
        assert_eq!((acks, alive), (50, 5));
        assert_eq!(crate::test_alloc::allocations() - before, 1);
    }

    /// A whole subscriber session fits in a small stack. Every stack page a subscriber
    /// thread touches stays resident while it is connected, and a thousand subscribers
    /// hold a thousand threads: a connection thread enters [`handle`] about 4 KiB deep
    /// (glibc's thread descriptor and TLS, without the static TLS reserve that
    /// [`crate::sys::LEAN_THREADS`] turns off; the thread's start; the listener), so a
    /// session within 3 KiB keeps each thread at two pages, with 1 KiB to spare for the
    /// paths inside libc this test does not take (a stack buffer of a few KiB on this
    /// path would cost every subscriber a third page). Frame sizes only mean something
    /// optimized: `make test` runs this test with `--release`.
    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "stack depth is measured in an optimized build (make test runs it)"
    )]
    fn subscriber_stack_budget() {
        let used = session_stack(false);
        assert!(
            used <= STACK_BUDGET,
            "a subscriber session used {used} bytes of stack"
        );
    }

    /// The same session as thousands of subscribers connecting at once see it: the
    /// dispatcher's inbox full, so that each message to it takes crossbeam's blocking path
    /// (park, waker lists), and the answer to authenticate late, so that its filters are
    /// sent from the session's loop.
    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "stack depth is measured in an optimized build (make test runs it)"
    )]
    fn subscriber_stack_budget_with_a_full_dispatcher_inbox() {
        let used = session_stack(true);
        assert!(
            used <= STACK_BUDGET,
            "a subscriber session used {used} bytes of stack while the dispatcher was busy"
        );
    }

    /// Bytes of stack a subscriber session may take (see `subscriber_stack_budget`).
    const STACK_BUDGET: usize = 3072;

    /// Bytes of stack a whole subscriber session (authenticate answered with a filter, an
    /// event and its ack, an iamalive and its answer, close) takes. With `busy`, the
    /// dispatcher's inbox holds one message and is emptied slowly, so that every send to
    /// it blocks, and authenticate is answered after [`FIRST_ANSWER`].
    fn session_stack(busy: bool) -> usize {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (server, peer) = l.accept().unwrap();
        let (dispatcher, inbox) = if busy {
            let (full, slow) = crossbeam_channel::bounded(1);
            full.send(Msg::Unregister(u64::MAX)).unwrap();
            let (tx, rx) = crossbeam_channel::unbounded();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(30));
                match slow.recv() {
                    Ok(Msg::Unregister(u64::MAX)) => {}
                    Ok(m) => {
                        let _ = tx.send(m);
                    }
                    Err(_) => break,
                }
            });
            (full, rx)
        } else {
            crossbeam_channel::unbounded()
        };
        let ctx = Arc::new(BroadcastContext {
            local_ivo: "ivo://bolide.test/broker".into(),
            iamalive_interval: Duration::from_millis(200),
            max_unacked: 10,
            queue: 16,
            write_timeout: Duration::from_secs(10),
            dispatcher,
            next_id: AtomicU64::new(0),
            max_filters: 8,
            max_filter_len: 1024,
            frame_timeout: Duration::from_secs(10),
            replay: None,
        });
        let session = std::thread::Builder::new()
            .stack_size(crate::listener::CONNECTION_STACK)
            .spawn(move || stack_used_by(|| handle(server, peer, ctx)).1)
            .unwrap();

        let mut frames = FrameReader::new(1 << 20);
        let mut next = || frames.read_frame(&mut &client).unwrap();
        let role = |f: &[u8]| transport::parse(f).unwrap().role.unwrap();
        assert_eq!(role(&next()), Role::Authenticate);
        let filter = "//Param[@name='Packet_Type' and @value='61']".to_string();
        let answer = transport::authenticate_response("ivo://bolide.test/s", None, &[filter]);
        if busy {
            // Answered after the first wait: the filters come once live fan-out started.
            std::thread::sleep(FIRST_ANSWER + Duration::from_millis(100));
        }
        write_frame(&mut &client, &answer).unwrap();
        let Ok(Msg::Register { sub: h, .. }) = inbox.recv_timeout(Duration::from_secs(10)) else {
            panic!("the subscriber was not registered");
        };
        let Ok(Msg::Start { mut exprs, .. }) = inbox.recv_timeout(Duration::from_secs(10)) else {
            panic!("the subscriber was not started");
        };
        if busy {
            assert!(exprs.is_empty());
            let Ok(Msg::SetFilters { exprs: late, .. }) =
                inbox.recv_timeout(Duration::from_secs(10))
            else {
                panic!("the subscriber's filters were not passed on");
            };
            exprs = late;
        }
        assert_eq!(exprs.len(), 1);
        let ivorn = "ivo://bolide.test/e#1";
        let body = format!("<voe:VOEvent ivorn='{ivorn}'/>");
        let event = Event::new(
            body.as_bytes(),
            ivorn.into(),
            EventRole::Test,
            0..body.len(),
            Origin::Local,
        );
        h.out.offer(&Arc::new(event));
        let alive = transport::iamalive_response("ivo://bolide.test/s", None);
        let mut frame = next();
        while frame != body.as_bytes() {
            // An iamalive that came first (the late answer took an interval or more).
            assert_eq!(role(&frame), Role::IAmAlive);
            write_frame(&mut &client, &alive).unwrap();
            frame = next();
        }
        write_frame(&mut &client, &transport::ack(ivorn, None)).unwrap();
        assert_eq!(role(&next()), Role::IAmAlive);
        write_frame(&mut &client, &alive).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let used = session.join().unwrap();
        let last = inbox.recv_timeout(Duration::from_secs(10));
        assert!(matches!(last, Ok(Msg::Unregister(_))));
        used
    }
}
