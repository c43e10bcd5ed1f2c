//! Catch-up: reading the archive for one subscriber that reconnects, then handing it over
//! to the dispatcher's live fan-out without gap, duplicate or reordering.
//!
//! A subscriber that says where it stopped (a bolide broker, with the
//! [`transport::POSITION_PARAM`] Param of its authenticate answer) is sent every archived
//! event after that point that passes its filters, then the live events. Its broadcaster
//! thread runs the catch-up; the reading and writing go on a helper thread at the lowest
//! CPU priority, started for each pass to the archive's end (`read_in_background`),
//! while the broadcaster thread reads the subscriber's acks. The archive is the only copy
//! of past events: this module reads it in chunks of at most the subscriber's queue, each
//! chunk in a short read transaction, and writes each chunk out (blocking, under the write
//! deadline) before it reads the next, so a replay holds no more than the subscriber's
//! queue in memory (the archive pages it reads through LMDB's map are dropped as it goes,
//! [`Store::read_archive`]) and a subscriber that stops reading is dropped as it would be
//! for live events.
//!
//! # The hand-over
//!
//! The dispatcher fans an event out before the committer gives it its archive seq, so
//! "the archive up to its end, then live" needs care. Three facts make it exact:
//!
//! 1. Archive order is acceptance order: the dispatcher admits records to the commit
//!    queue in the order it accepts them, and the committer appends them in that order.
//! 2. From its registration on ([`Msg::Register`], sent before `authenticate`), the
//!    dispatcher holds every event it accepts for the subscriber. Once the catch-up
//!    starts ([`Msg::Replaying`]) the held events are a window of the latest ones (at
//!    most the subscriber's queue; the oldest half is let go when full, and the window
//!    marked as no longer reaching back to the registration).
//! 3. The dispatcher answers [`Msg::Replaying`] with a fence: the number of records
//!    admitted so far. Once the commit queue has settled that many, every event accepted
//!    before the registration is in the archive (or failed to commit); the catch-up waits
//!    for it before it reads.
//!
//! The catch-up then reads from its start to the archive's end and sends
//! [`Msg::HandOver`] with the key of the last entry it read. If that entry is among the
//! held events, the held events after it are exactly those not read yet; if it is not
//! (it was accepted before the registration, or nothing was read) and the window still
//! reaches back to the registration, all held events are. Either way the dispatcher
//! offers those that pass the filters, in order, and the subscriber is live. Otherwise
//! (the window let events go while the archive was read) the catch-up reads on from
//! where it stopped and asks again: each round reads what was committed meanwhile, so a
//! subscriber that keeps up converges. The start is never after the registration: a
//! position is capped at the archive's last seq read just before [`Msg::Register`].
//!
//! # Positions
//!
//! A [`Position`] is the archive's identity (16 random bytes created with it) and either
//! a seq or the ivorn and dedup key of an archived event, written
//! `ARCHIVE:SEQ` or `ARCHIVE:KEY:IVORN` in hex. The broker tells a bolide subscriber,
//! in an `iamalive` sent before anything else, the seq the events that follow start
//! after; every event it then receives is a later position by its ivorn and key, which
//! the subscriber knows without being told any seq (live events have none yet when they
//! are sent). A position in another archive (the database was replaced or wiped), or of
//! an event retention deleted, or one that does not parse, gets a bounded replay: the
//! latest `--replay-max-events` events not older than `--replay-max-age`. Those bounds
//! apply to every replay. Test events are never replayed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use log::{debug, info, warn};

use crate::committer::CommitQueue;
use crate::dispatcher::Msg;
use crate::filters::{FilterId, FilterTable};
use crate::outbox::{Offer, Outbox};
use crate::store::{Store, StoreError};
use crate::transport;
use crate::voevent::{Event, EventRole, Key};
use crate::whitelist::Whitelist;

/// Default `--replay-max-age`: a day.
pub const DEFAULT_MAX_AGE_SECS: u64 = 86_400;
/// Default `--replay-max-events`.
pub const DEFAULT_MAX_EVENTS: u64 = 10_000;
/// Most entries read per read transaction (and fewer if the subscriber's queue is).
const CHUNK: usize = 256;
/// Longest wait for the dispatcher's answer before the subscriber is let go.
const ANSWER: Duration = Duration::from_secs(30);
/// How often the wait for the fence looks again.
const FENCE_POLL: Duration = Duration::from_millis(2);
/// Longest pause of a wait for a turn ([`ReplaySlots`]) before the subscriber's messages
/// are read; a turn given up ends it at once.
const TURN_POLL: Duration = Duration::from_millis(100);

/// What every catch-up shares.
pub struct ReplayContext {
    /// Catch-ups that read the archive at once (`--max-replays`).
    pub slots: ReplaySlots,
    pub store: Arc<Store>,
    pub commits: Arc<CommitQueue>,
    /// `--replay-max-age`, in seconds.
    pub max_age_secs: u64,
    /// `--replay-max-events`.
    pub max_events: u64,
    /// `--resume-subscribers`: subscribers from these networks are resumed by address
    /// (`None`: none).
    pub by_address: Option<Whitelist>,
}

impl ReplayContext {
    /// Whether a subscriber from `ip` is resumed by its address.
    pub fn resumes(&self, ip: IpAddr) -> bool {
        self.by_address.as_ref().is_some_and(|w| w.allows(ip))
    }

    /// The position stored for subscribers from `ip` (none yet: [`Resume::Fresh`]).
    pub fn stored(&self, ip: IpAddr) -> Resume {
        match self.store.meta_get(&address_key(ip)) {
            Ok(Some(v)) => Resume::parse(&String::from_utf8_lossy(&v)),
            Ok(None) => Resume::Fresh,
            Err(e) => Resume::Unknown(e.to_string()),
        }
    }
}

/// The turns of catch-ups at reading the archive: at most `limit` read at once, the rest
/// wait in arrival order.
///
/// A catch-up reads and writes as fast as its subscriber takes events, so each one keeps a
/// CPU busy (and the subscriber's end another). Many at once (a network reconnecting after
/// an outage, every site at the same moment) would leave the threads that carry live
/// traffic (receivers, the dispatcher, the committer, live subscribers) a small share of
/// the CPUs, and live acks and fan-out would wait behind replays. A turn in the queue
/// costs a waiting subscriber nothing: its live events are held by the dispatcher as for
/// any catch-up.
pub struct ReplaySlots {
    limit: usize,
    /// Subscriber ids in arrival order: the first `limit` read, the rest wait.
    queue: std::sync::Mutex<std::collections::VecDeque<u64>>,
    /// Signalled when a turn is given up.
    moved: std::sync::Condvar,
}

impl ReplaySlots {
    pub fn new(limit: usize) -> ReplaySlots {
        ReplaySlots {
            limit: limit.max(1),
            queue: Default::default(),
            moved: Default::default(),
        }
    }

    /// Default `--max-replays`: half the CPUs, at least one.
    pub fn default_limit() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    /// Join the queue; the turn comes ([`Turn::wait`]) once fewer than `limit` are ahead.
    fn join(&self, id: u64) -> Turn<'_> {
        self.lock().push_back(id);
        Turn { slots: self, id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<u64>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A place in [`ReplaySlots`]' queue, given up when dropped (a catch-up that ends, fails
/// or whose subscriber leaves while it waits).
struct Turn<'a> {
    slots: &'a ReplaySlots,
    id: u64,
}

impl Turn<'_> {
    /// Whether this catch-up may read, waiting up to `patience` for it; and how many
    /// are ahead of it.
    fn wait(&self, patience: Duration) -> (bool, usize) {
        let ahead =
            |q: &std::collections::VecDeque<u64>| q.iter().position(|&i| i == self.id).unwrap_or(0);
        let q = self.slots.lock();
        let n = ahead(&q);
        if n < self.slots.limit {
            return (true, n);
        }
        let (q, _) = self
            .slots
            .moved
            .wait_timeout(q, patience)
            .unwrap_or_else(|p| p.into_inner());
        let n = ahead(&q);
        (n < self.slots.limit, n)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut q = self.slots.lock();
        if let Some(at) = q.iter().position(|&i| i == self.id) {
            q.remove(at);
            self.slots.moved.notify_all();
        }
    }
}

/// The `meta` key of the position of subscribers from `ip` (`--resume-subscribers`).
pub fn address_key(ip: IpAddr) -> Vec<u8> {
    format!("subscriber_position:{}", crate::whitelist::normalize(ip)).into_bytes()
}

/// How often at most a subscriber's acknowledged position is written.
const SAVE_ACKED_EVERY: Duration = Duration::from_millis(500);

/// The last event a subscriber resumed by address acknowledged, kept for its address
/// (`--resume-subscribers`): every VTP subscriber acks each event with its ivorn, in the
/// order sent, so the last ack names how far it got. The ivorn becomes a seq (the newest
/// archived event with that ivorn) when it is saved, which waits for the event's commit.
pub struct Acked {
    ip: IpAddr,
    ivorn: Option<String>,
    saved_at: Option<std::time::Instant>,
}

impl Acked {
    pub fn new(ip: IpAddr) -> Acked {
        Acked {
            ip,
            ivorn: None,
            saved_at: None,
        }
    }

    /// The subscriber sent this `ack`. Not inlined, like [`Acked::save`]: a subscriber
    /// thread's stack stays small (`broadcaster`'s `subscriber_stack_budget`).
    #[inline(never)]
    pub fn acked(&mut self, payload: &[u8]) {
        if let Ok(m) = transport::parse(payload) {
            self.ivorn = m.origin.filter(|o| !o.is_empty());
        }
    }

    /// Write the position if it moved (at most every `SAVE_ACKED_EVERY` unless
    /// `force`); an ivorn not archived yet is tried again later. Not inlined: its LMDB
    /// write stays out of the session's frames.
    #[inline(never)]
    pub fn save(&mut self, ctx: &ReplayContext, force: bool) {
        if self.ivorn.is_none()
            || (!force
                && self
                    .saved_at
                    .is_some_and(|t| t.elapsed() < SAVE_ACKED_EVERY))
        {
            return;
        }
        self.saved_at = Some(std::time::Instant::now());
        let ivorn = self.ivorn.as_deref().unwrap_or_default();
        let seq = match ctx.store.archive_seq_of(ivorn, None) {
            Ok(Some(seq)) => seq,
            Ok(None) => return,
            Err(e) => return warn!("subscriber {}: position not found: {e}", self.ip),
        };
        let at = Position {
            archive: ctx.store.archive_id(),
            at: At::Seq(seq),
        };
        match ctx
            .store
            .meta_put(&address_key(self.ip), at.to_string().as_bytes())
        {
            Ok(()) => {
                debug!("subscriber {}: position {at} ({ivorn}) saved", self.ip);
                self.ivorn = None;
            }
            Err(e) => warn!("subscriber {}: position not saved: {e}", self.ip),
        }
    }
}

/// Where in an archive a subscriber stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub archive: [u8; 16],
    pub at: At,
}

/// The last event a subscriber has, in an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum At {
    /// Everything up to this seq (the start of a stream of events).
    Seq(u64),
    /// This archived event (found by its ivorn and key).
    Event { key: Key, ivorn: String },
}

/// What a subscriber asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// It has no position yet: live events (and those accepted as it connected).
    Fresh,
    At(Position),
    /// A position that does not parse: a bounded replay.
    Unknown(String),
}

impl Resume {
    /// Read the [`transport::POSITION_PARAM`] value (empty: no position yet).
    pub fn parse(text: &str) -> Resume {
        let text = text.trim();
        if text.is_empty() {
            return Resume::Fresh;
        }
        Position::parse(text).map_or_else(|| Resume::Unknown(text.to_string()), Resume::At)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Position {
    /// `ARCHIVE:SEQ` or `ARCHIVE:KEY:IVORN` (hex identity and key).
    pub fn parse(s: &str) -> Option<Position> {
        let mut parts = s.splitn(3, ':');
        let archive = unhex::<16>(parts.next()?)?;
        let second = parts.next()?;
        let at = match parts.next() {
            None => At::Seq(second.parse().ok()?),
            Some(ivorn) if !ivorn.is_empty() => At::Event {
                key: unhex::<32>(second)?,
                ivorn: ivorn.to_string(),
            },
            Some(_) => return None,
        };
        Some(Position { archive, at })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            At::Seq(s) => write!(f, "{}:{s}", hex(&self.archive)),
            At::Event { key, ivorn } => write!(f, "{}:{}:{ivorn}", hex(&self.archive), hex(key)),
        }
    }
}

/// The subscriber's side, as the catch-up needs it from its broadcaster thread.
pub trait Link {
    /// Read what the subscriber sent meanwhile (acks, a new authenticate) without
    /// blocking; `false`: the connection ended.
    fn drain(&mut self) -> bool;
    /// Its filter expressions as last sent, to install at the hand-over.
    fn filters(&mut self) -> Vec<String>;
    /// Called while a catch-up waits before reading: sends an `iamalive` when an interval
    /// has passed, as the live session does; `false`: the connection ended, or the last
    /// iamalive went unanswered.
    fn idle(&mut self) -> bool;
}

/// The subscriber being caught up.
pub struct Subscriber<'a> {
    pub id: u64,
    pub addr: SocketAddr,
    pub out: &'a Outbox,
    pub dispatcher: &'a Sender<Msg>,
    pub local_ivo: &'a str,
    /// The archive's last seq, read just before the subscriber registered.
    pub end: u64,
    /// Its queue (`--subscriber-queue`).
    pub queue: usize,
    /// It understands positions: tell it where the events that follow start.
    pub tell_position: bool,
}

/// Why a catch-up ended without handing over.
#[derive(Debug)]
pub enum Stop {
    /// The dispatcher let the subscriber go (too slow) or is shutting down.
    Dropped,
    /// The connection ended or a write failed.
    Connection(String),
    /// The archive could not be read.
    Store(StoreError),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Dropped => f.write_str("dropped by the dispatcher"),
            Stop::Connection(e) => f.write_str(e),
            Stop::Store(e) => write!(f, "archive unreadable: {e}"),
        }
    }
}

/// The seq the replay starts after, and why (for the log).
fn start_after(ctx: &ReplayContext, sub: &Subscriber<'_>, resume: &Resume) -> (u64, String) {
    let floor = sub.end.saturating_sub(ctx.max_events);
    let bounded = |why: &str| {
        (
            floor,
            format!(
                "{why}: replaying at most the last {} events of the last {} s",
                ctx.max_events, ctx.max_age_secs
            ),
        )
    };
    let pos = match resume {
        Resume::Fresh => return (sub.end, "no position yet".into()),
        Resume::Unknown(text) => return bounded(&format!("unreadable position {text:?}")),
        Resume::At(pos) => pos,
    };
    if pos.archive != ctx.store.archive_id() {
        return bounded("position in another archive (event database replaced?)");
    }
    let seq = match &pos.at {
        At::Seq(s) => *s,
        At::Event { key, ivorn } => match ctx.store.archive_seq_of(ivorn, Some(key)) {
            Ok(Some(s)) => s,
            Ok(None) => return bounded(&format!("{ivorn} is no longer archived")),
            Err(e) => return bounded(&format!("position not found ({e})")),
        },
    };
    let after = seq.min(sub.end).max(floor);
    (after, format!("position {pos}"))
}

/// Replay the archive after `resume` to `sub`, then hand it over to live fan-out; the
/// number of events replayed.
pub fn catch_up(
    ctx: &ReplayContext,
    sub: &Subscriber<'_>,
    resume: &Resume,
    exprs: &[String],
    link: &mut dyn Link,
) -> Result<u64, Stop> {
    let addr = sub.addr;
    let (tx, rx) = bounded(1);
    let replaying = Msg::Replaying {
        id: sub.id,
        answer: tx,
    };
    if sub.dispatcher.send(replaying).is_err() {
        return Err(Stop::Dropped);
    }
    let plan = rx.recv_timeout(ANSWER).map_err(|_| Stop::Dropped)?;
    // Its turn at the archive ([`ReplaySlots`]); the dispatcher holds its live events
    // meanwhile, as it does while the fence settles.
    let turn = ctx.slots.join(sub.id);
    let mut waiting = false;
    loop {
        let (ready, ahead) = turn.wait(TURN_POLL);
        if ready {
            break;
        }
        if !waiting {
            debug!("subscriber {addr}: waiting for a turn to catch up ({ahead} ahead)");
            waiting = true;
        }
        still_there(sub, link)?;
    }
    let (after, why) = start_after(ctx, sub, resume);
    info!(
        "subscriber {addr}: catching up from archive seq {} ({why})",
        after + 1
    );
    let here = Position {
        archive: ctx.store.archive_id(),
        at: At::Seq(after),
    };
    if !sub.tell_position && *resume == Resume::Fresh {
        // Resumed by address, seen for the first time: from here on, until it acks.
        if let Err(e) = ctx
            .store
            .meta_put(&address_key(addr.ip()), here.to_string().as_bytes())
        {
            warn!("subscriber {addr}: position not saved: {e}");
        }
    }
    if sub.tell_position {
        let hello = transport::iamalive_at(sub.local_ivo, &here.to_string());
        sub.out.push_control(crate::frame::encode(&hello));
        flush(sub)?;
    }
    // Every event accepted before the registration is settled in the archive first.
    while ctx.commits.settled() < plan.fence {
        still_there(sub, link)?;
        std::thread::sleep(FENCE_POLL);
    }
    let mut pass = Pass {
        exprs,
        imposed: &plan.imposed,
        cutoff: crate::time::unix_now_ms().saturating_sub(ctx.max_age_secs.saturating_mul(1000)),
        chunk: sub.queue.clamp(1, CHUNK),
        next: after + 1,
        last: None,
        sent: 0,
        read: 0,
    };
    loop {
        pass = read_in_background(ctx, sub, link, pass)?;
        let (tx, rx) = bounded(1);
        let hand_over = Msg::HandOver {
            id: sub.id,
            exprs: link.filters(),
            after: pass.last,
            answer: tx,
        };
        if sub.dispatcher.send(hand_over).is_err() {
            return Err(Stop::Dropped);
        }
        match rx.recv_timeout(ANSWER) {
            Ok(true) => break,
            Ok(false) => debug!("subscriber {addr}: live events outran the catch-up; reading on"),
            Err(_) => return Err(Stop::Dropped),
        }
    }
    let Pass { sent, read, .. } = pass;
    info!(
        "subscriber {addr}: caught up: {sent} events replayed ({read} read from the archive); live from here"
    );
    Ok(sent)
}

/// Where a catch-up stands: what it reads, and how far it has read.
#[derive(Clone)]
struct Pass<'a> {
    /// The subscriber's filters and those imposed on its network.
    exprs: &'a [String],
    imposed: &'a [String],
    /// Events accepted before this (Unix ms) are not replayed (`--replay-max-age`).
    cutoff: u64,
    /// Most entries read per read transaction (and held in memory).
    chunk: usize,
    /// The next seq to read, and the key of the last entry read.
    next: u64,
    last: Option<Key>,
    /// Events replayed, and entries read.
    sent: u64,
    read: u64,
}

impl Pass<'_> {
    /// Read from `next` to the archive's end, a chunk per read transaction, offering the
    /// events that pass the filters to `sub` and writing each chunk out (blocking, under
    /// the write deadline) before reading the next.
    fn read_to_end(&mut self, ctx: &ReplayContext, sub: &Subscriber<'_>) -> Result<(), Stop> {
        let mut table = FilterTable::default();
        let mut acquire = |list: &[String]| -> Vec<FilterId> {
            list.iter().filter_map(|e| table.acquire(e).ok()).collect()
        };
        let (wanted, imposed) = (acquire(self.exprs), acquire(self.imposed));
        let filtered = !wanted.is_empty() || !imposed.is_empty();
        let mut batch: Vec<Arc<Event>> = Vec::with_capacity(self.chunk);
        loop {
            let mut read = 0;
            ctx.store
                .read_archive(self.next, |e| {
                    read += 1;
                    self.next = e.seq + 1;
                    self.last = Some(e.key);
                    let wanted = e.role != EventRole::Test
                        && e.accepted_ms >= self.cutoff
                        && (!filtered || {
                            let mut ev = table.evaluate(e.bytes);
                            ev.wants(&imposed) && ev.wants(&wanted)
                        });
                    if wanted {
                        batch.push(Arc::new(Event::archived(e)));
                    }
                    read < self.chunk
                })
                .map_err(Stop::Store)?;
            self.read += read as u64;
            for ev in batch.drain(..) {
                match sub.out.offer(&ev) {
                    Offer::Written | Offer::Queued => self.sent += 1,
                    Offer::Full => return Err(Stop::Dropped),
                    Offer::Failed => return Err(Stop::Connection("write failed".into())),
                }
            }
            flush(sub)?;
            if read < self.chunk {
                return Ok(());
            }
        }
    }
}

/// One [`Pass::read_to_end`] on a helper thread at the lowest CPU priority, while this
/// thread reads what the subscriber sends (its acks). A replay runs as fast as its
/// subscriber reads: at nice 19 it takes what the threads that carry live traffic leave
/// of the CPUs, and the scheduler lets them run before it. The helper ends with the pass,
/// so no thread that serves live traffic keeps the low priority. If no thread can be
/// started, the pass runs on this thread.
fn read_in_background<'a>(
    ctx: &ReplayContext,
    sub: &Subscriber<'_>,
    link: &mut dyn Link,
    pass: Pass<'a>,
) -> Result<Pass<'a>, Stop> {
    let mut inline = pass.clone();
    let (pass, done, open) = std::thread::scope(|s| {
        let mut pass = pass;
        let spawned = std::thread::Builder::new()
            .name("catch-up".into())
            .spawn_scoped(s, move || {
                crate::sys::lower_thread_priority();
                let done = pass.read_to_end(ctx, sub);
                (pass, done)
            });
        let reader = match spawned {
            Ok(reader) => reader,
            Err(e) => {
                debug!(
                    "subscriber {}: no catch-up thread ({e}); reading here",
                    sub.addr
                );
                let done = inline.read_to_end(ctx, sub);
                return Ok((inline, done, true));
            }
        };
        // The subscriber's messages are read meanwhile; once it is gone, the reader's next
        // write fails and ends the pass.
        let mut open = true;
        while !reader.is_finished() {
            if open && !link.drain() {
                open = false;
            }
            std::thread::sleep(FENCE_POLL);
        }
        let (pass, done) = reader
            .join()
            .map_err(|_| Stop::Connection("the catch-up thread panicked".into()))?;
        Ok((pass, done, open))
    })?;
    done?;
    if !open || !link.drain() {
        return Err(Stop::Connection("closed".into()));
    }
    Ok(pass)
}

/// Between the pauses of a wait before reading: read what the subscriber sent (its
/// iamalive answers, a disconnect); a subscriber dropped or gone ends the wait.
fn still_there(sub: &Subscriber<'_>, link: &mut dyn Link) -> Result<(), Stop> {
    if sub.out.was_dropped() {
        return Err(Stop::Dropped);
    }
    if !link.drain() {
        return Err(Stop::Connection("closed".into()));
    }
    if !link.idle() {
        return Err(Stop::Connection("iamalive unanswered while waiting".into()));
    }
    Ok(())
}

/// Write what is queued, blocking under the write deadline.
fn flush(sub: &Subscriber<'_>) -> Result<(), Stop> {
    sub.out.flush().map_err(|e| {
        if sub.out.was_dropped() {
            Stop::Dropped
        } else {
            warn!("subscriber {}: {e} during its catch-up", sub.addr);
            Stop::Connection(e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns go in arrival order, at most `limit` at once; one given up while waiting
    /// or while reading moves the queue on, and a waiter is woken by it at once.
    #[test]
    fn replay_turns_go_in_order_and_move_on_when_given_up() {
        let slots = ReplaySlots::new(2);
        let now = Duration::ZERO;
        let (a, b, c, d) = (slots.join(1), slots.join(2), slots.join(3), slots.join(4));
        assert_eq!(a.wait(now), (true, 0));
        assert_eq!(b.wait(now), (true, 1));
        assert_eq!(c.wait(now), (false, 2));
        assert_eq!(d.wait(now), (false, 3));
        drop(c);
        assert_eq!(d.wait(now), (false, 2));
        let started = std::time::Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                drop(a);
            });
            assert_eq!(d.wait(Duration::from_secs(10)), (true, 1));
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(ReplaySlots::new(0).join(9).wait(now), (true, 0));
    }

    #[test]
    fn positions_round_trip_and_bad_ones_are_unknown() {
        let seq = Position {
            archive: [0xab; 16],
            at: At::Seq(42),
        };
        assert_eq!(Resume::parse(&seq.to_string()), Resume::At(seq.clone()));
        let ev = Position {
            archive: [1; 16],
            at: At::Event {
                key: [7; 32],
                ivorn: "ivo://x.y/z#a:b".into(),
            },
        };
        assert_eq!(Resume::parse(&ev.to_string()), Resume::At(ev));
        assert_eq!(Resume::parse(" "), Resume::Fresh);
        for bad in [
            "zz:1",
            "abab:1",
            &format!("{}:x", hex(&[0; 16])),
            &format!("{}:{}:", hex(&[0; 16]), hex(&[0; 32])),
        ] {
            assert!(matches!(Resume::parse(bad), Resume::Unknown(_)), "{bad}");
        }
    }
}
