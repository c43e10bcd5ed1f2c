//! The dispatcher thread: the single place where an event is judged new or duplicate and
//! fanned out.
//!
//! It owns the subscriber table (each subscriber's [`Outbox`] and filters) and the
//! test-event timer. Every dedup decision happens on this one thread, and only this thread
//! admits keys, so "check, then insert" is atomic: a key is either pending in the
//! [`CommitQueue`] (admitted, not yet durable), in LMDB (a read transaction answers; the
//! committer removes a key from `pending` only after its commit), or new. A new event is
//! fanned out at once (one non-blocking write per subscriber through its [`Outbox`]; what
//! the kernel does not take is queued for that subscriber's thread, and a full queue drops
//! that subscriber, never waits), then admitted to the commit queue; the committer answers
//! the author after the durable commit. Under `--no-sync` the dispatcher is the committer
//! ([`CommitQueue::inline`]): it commits what is queued whenever its inbox is empty, and
//! at least every [`INLINE_BATCH`] records.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use log::{debug, error, info, warn};

use crate::committer::{CommitQueue, Committer, Record, INLINE_BATCH};
use crate::fanout::{self, Delivery, FanOut, Targets};
use crate::filters::{Evaluation, FilterId, FilterTable};
use crate::metrics::{DropReason, METRICS};
use crate::outbox::Outbox;
use crate::siteconfig::SiteConfig;
use crate::store::Store;
use crate::testevent;
use crate::time;
use crate::verdict::{Reply, Verdict};
use crate::voevent::{Event, EventRole, Key, Origin, Rejection};

/// A subscriber as the dispatcher sees it.
pub struct SubscriberHandle {
    pub id: u64,
    /// Its write side: the dispatcher writes events there directly (see [`Outbox`]).
    pub out: Arc<Outbox>,
    /// Its filters (interned in the dispatcher's [`FilterTable`]); empty = everything.
    pub filters: Box<[FilterId]>,
    /// Filters imposed by `--subscriber-config` for its network; empty = nothing imposed.
    pub imposed: Box<[FilterId]>,
}

impl SubscriberHandle {
    /// A subscriber not yet filtering (its filters come with [`Msg::Start`]).
    pub fn new(id: u64, out: Arc<Outbox>) -> SubscriberHandle {
        SubscriberHandle {
            id,
            out,
            filters: Box::default(),
            imposed: Box::default(),
        }
    }

    /// Its address (kept in its outbox, for the operator's view).
    pub fn peer(&self) -> SocketAddr {
        self.out.stat.peer
    }
}

/// A subscriber that has been sent `authenticate` and whose answer (its filters) is
/// awaited: every event accepted meanwhile is held for it, in order, until [`Msg::Start`].
struct Awaiting {
    sub: SubscriberHandle,
    held: Vec<Arc<Event>>,
    /// Most events held; one more drops the subscriber, as a full backlog does.
    limit: usize,
    /// It is being read a catch-up from the archive ([`Msg::Replaying`]): `held` is a
    /// window of the latest events instead, its oldest half let go when full.
    window: bool,
    /// The window let events go: it no longer reaches back to the registration.
    trimmed: bool,
}

/// The dispatcher's answer to [`Msg::Replaying`]: what a catch-up needs to know.
pub struct ReplayPlan {
    /// Filters `--subscriber-config` imposes on the subscriber.
    pub imposed: Vec<String>,
    /// Records admitted to the commit queue so far: once that many are settled, every
    /// event accepted before the subscriber registered is in the archive.
    pub fence: u64,
}

/// Everything sent to the dispatcher.
pub enum Msg {
    /// A checked event. `reply` waits for the verdict: the author's connection, or the
    /// Kafka consumer's channel (`None` for upstream events, which are acknowledged
    /// upstream whatever happens).
    Submit {
        event: Arc<Event>,
        reply: Option<Reply>,
    },
    /// A subscriber connected and is about to be sent `authenticate`: until
    /// [`Msg::Start`] the events accepted are held for it (at most `hold`).
    Register { sub: SubscriberHandle, hold: usize },
    /// The subscriber's first answer carried these filter expressions (already cut to the
    /// configured limits), or the wait for it ended (none): the events held for it are
    /// filtered and offered, in order, and every later event goes to it like to any other.
    Start { id: u64, exprs: Vec<String> },
    /// Awaited subscriber `id` is being read a catch-up from the archive
    /// ([`crate::replay`]): the events held for it become a window of the latest `hold`.
    Replaying { id: u64, answer: Sender<ReplayPlan> },
    /// The catch-up of awaited subscriber `id` read the archive to its end; `after` is the
    /// key of the last entry it read. If the events held for it reach back to that entry
    /// (or to its registration, when `after` is older), it goes live as with
    /// [`Msg::Start`] with the held events after `after`, and `answer` gets `true`;
    /// otherwise `false`: read on.
    HandOver {
        id: u64,
        exprs: Vec<String>,
        after: Option<Key>,
        answer: Sender<bool>,
    },
    /// A subscriber (re)authenticated with these filter expressions (already cut to the
    /// configured limits); they replace its previous ones.
    SetFilters { id: u64, exprs: Vec<String> },
    /// New `--subscriber-config` rules (SIGHUP): re-applied to every subscriber.
    SiteConfig(SiteConfig),
    /// A subscriber thread ended.
    Unregister(u64),
    /// Stop (after answering what is queued).
    Shutdown,
}

/// Counters, for the log and tests.
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub accepted: u64,
    pub duplicates: u64,
    /// Other naks to authors ([`crate::verdict::REJECTED`] when the summary was taken).
    pub rejected: u64,
    pub copies: u64,
    pub dropped_subscribers: u64,
    /// Transactions the dispatcher committed itself (inline queue, `--no-sync`); 0 when
    /// a committer thread commits.
    pub commits: u64,
}

/// Dispatcher settings.
pub struct Settings {
    pub local_ivo: String,
    /// Period of the one-line summary at info (`None`: never).
    pub stats_interval: Option<Duration>,
    /// Open connections (the listeners' shared counter), for the summary.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Filters imposed per subscriber network.
    pub site: SiteConfig,
    pub test_interval: Option<Duration>,
    pub broadcast: bool,
}

/// The dispatcher's state; [`Dispatcher::run`] is the thread body.
pub struct Dispatcher {
    settings: Settings,
    store: Arc<Store>,
    committer: Arc<CommitQueue>,
    subscribers: Vec<SubscriberHandle>,
    /// Subscribers not yet in `subscribers`: their filters are not known yet.
    awaiting: Vec<Awaiting>,
    stats: Stats,
    handlers: Option<Sender<Arc<Event>>>,
    filters: FilterTable,
    /// Writes an event's copies, with helper threads when they are many.
    fanout: FanOut,
    /// The subscribers an event passes the filters of (reused for each event).
    passing: Vec<usize>,
    /// Keys of our own recent test events: they are never stored, so without this one
    /// could come back through a ring of brokers and be relayed as new.
    own_tests: std::collections::VecDeque<Key>,
    /// For an inline commit queue (`--no-sync`): the dispatcher commits it itself.
    inline: Option<Committer>,
    /// Records admitted to the inline queue since its last commit.
    uncommitted: usize,
}

/// How many of our own test events are remembered.
const OWN_TESTS: usize = 16;

/// However the dispatcher ends (shutdown, or a panic unwinding), the committer is told to
/// commit what is queued and stop.
impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.committer.close();
    }
}

impl Dispatcher {
    pub fn new(
        settings: Settings,
        store: Arc<Store>,
        committer: Arc<CommitQueue>,
        handlers: Option<Sender<Arc<Event>>>,
    ) -> Dispatcher {
        let inline = committer
            .is_inline()
            .then(|| Committer::new(Arc::clone(&store)));
        Dispatcher {
            settings,
            store,
            committer,
            subscribers: Vec::new(),
            awaiting: Vec::new(),
            stats: Stats::default(),
            handlers,
            filters: FilterTable::default(),
            fanout: FanOut::for_this_machine(),
            passing: Vec::new(),
            own_tests: std::collections::VecDeque::with_capacity(OWN_TESTS),
            inline,
            uncommitted: 0,
        }
    }

    /// Thread body: runs until `Shutdown` or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Msg>) -> Stats {
        let mut next_test = self
            .settings
            .test_interval
            .filter(|_| self.settings.broadcast)
            .map(|_| Instant::now());
        let mut next_summary = self.settings.stats_interval.map(|i| Instant::now() + i);
        let mut last = self.stats;
        loop {
            if let Some(at) = next_test {
                if Instant::now() >= at {
                    self.send_test_event();
                    next_test = self.settings.test_interval.map(|i| at + i);
                }
            }
            if let Some(at) = next_summary {
                if Instant::now() >= at {
                    self.log_summary(&last);
                    last = self.stats;
                    next_summary = self.settings.stats_interval.map(|i| at + i);
                }
            }
            let wake = match (next_test, next_summary) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // Nothing more to batch with: commit before waiting (inline queue).
                    self.commit_inline();
                    match wake {
                        Some(at) => {
                            match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                                Ok(m) => m,
                                Err(RecvTimeoutError::Timeout) => continue,
                                Err(RecvTimeoutError::Disconnected) => break,
                            }
                        }
                        None => match rx.recv() {
                            Ok(m) => m,
                            Err(_) => break,
                        },
                    }
                }
            };
            match msg {
                Msg::Submit { event, reply } => self.submit(event, reply),
                Msg::Register { sub, hold } => {
                    debug!(
                        "subscriber {}: holding events until its filters are known",
                        sub.peer()
                    );
                    self.awaiting.push(Awaiting {
                        sub,
                        held: Vec::new(),
                        limit: hold,
                        window: false,
                        trimmed: false,
                    });
                }
                Msg::Start { id, exprs } => self.start(id, exprs),
                Msg::Replaying { id, answer } => {
                    if let Some(a) = self.awaiting.iter_mut().find(|a| a.sub.id == id) {
                        a.window = true;
                        let imposed = self.settings.site.imposed(a.sub.peer().ip()).to_vec();
                        let fence = self.committer.admitted();
                        let _ = answer.send(ReplayPlan { imposed, fence });
                    }
                }
                Msg::HandOver {
                    id,
                    exprs,
                    after,
                    answer,
                } => self.hand_over(id, exprs, after, answer),
                Msg::SetFilters { id, exprs } => self.set_filters(id, exprs),
                Msg::SiteConfig(site) => {
                    self.settings.site = site;
                    for i in 0..self.subscribers.len() {
                        self.impose(i);
                    }
                    info!(
                        "subscriber config reloaded: {} networks; {} subscribers re-evaluated",
                        self.settings.site.networks(),
                        self.subscribers.len()
                    );
                }
                Msg::Unregister(id) => {
                    if let Some(i) = self.subscribers.iter().position(|s| s.id == id) {
                        let h = self.remove(i);
                        info!(
                            "subscriber {} disconnected ({} subscribers)",
                            h.peer(),
                            self.subscribers.len()
                        );
                    } else if let Some(i) = self.awaiting.iter().position(|a| a.sub.id == id) {
                        let a = self.awaiting.swap_remove(i);
                        debug!(
                            "subscriber {} left before its filters were known",
                            a.sub.peer()
                        );
                    }
                }
                Msg::Shutdown => break,
            }
        }
        self.commit_inline();
        if let Some(c) = &self.inline {
            self.stats.commits = c.stats().commits;
        }
        for s in self
            .subscribers
            .iter()
            .chain(self.awaiting.iter().map(|a| &a.sub))
        {
            s.out.shutdown();
        }
        self.stats
    }

    fn submit(&mut self, event: Arc<Event>, reply: Option<Reply>) {
        let arrived = Instant::now();
        let answer = |reply: Option<Reply>, v: Verdict| {
            if let Some(r) = reply {
                r.send(v);
            }
        };
        let own_test_back =
            matches!(event.origin, Origin::Upstream(_)) && self.own_tests.contains(&event.key);
        let seen = if own_test_back || self.committer.is_pending(&event.key) {
            Ok(true)
        } else {
            self.store.seen(&event.key, time::unix_now())
        };
        match seen {
            Err(e) => {
                error!(
                    "event database unavailable, refusing {} from {}: {e}",
                    event.ivorn, event.origin
                );
                answer(reply, Verdict::Rejected(Rejection::Storage));
            }
            Ok(true) => {
                self.stats.duplicates += 1;
                METRICS.duplicate(&event.origin);
                match event.origin {
                    Origin::Author(_) => info!(
                        "rejected {} from {}: previously seen",
                        event.ivorn, event.origin
                    ),
                    _ => debug!(
                        "ignored {} from {}: previously seen",
                        event.ivorn, event.origin
                    ),
                }
                answer(reply, Verdict::Rejected(Rejection::Duplicate));
            }
            Ok(false) => {
                let n = self.fan_out(&event);
                METRICS.fanout_latency.observe(arrived.elapsed());
                METRICS.accepted(&event.origin);
                self.stats.accepted += 1;
                info!(
                    "accepted {} ({}) from {}; sent to {n} subscribers",
                    event.ivorn,
                    event.role.as_str(),
                    event.origin
                );
                if let Some(h) = &self.handlers {
                    let full = h.try_send(Arc::clone(&event)).is_err();
                    METRICS
                        .handler_queue
                        .store(h.len() as u64, Ordering::Relaxed);
                    if full {
                        warn!(
                            "handlers are {} events behind: {} from {} is NOT passed to --print-event/--save-event/--cmd",
                            crate::handlers::HANDLER_QUEUE,
                            event.ivorn,
                            event.origin
                        );
                    }
                }
                let rec = Record {
                    key: event.key,
                    time: time::unix_now(),
                    ivorn: event.ivorn.clone(),
                    reply,
                    // The store archives it unless the archive is off.
                    archive: Some(Arc::clone(&event)),
                };
                // If the committer is gone (shutdown), the record's author is answered
                // "unavailable" as the record is dropped.
                if self.committer.admit(rec) && self.inline.is_some() {
                    self.uncommitted += 1;
                    if self.uncommitted >= INLINE_BATCH {
                        self.commit_inline();
                    }
                }
            }
        }
    }

    /// Inline queue (`--no-sync`): commit what is queued and answer its authors.
    fn commit_inline(&mut self) {
        if let Some(c) = &mut self.inline {
            if self.uncommitted > 0 {
                c.commit_queued(&self.committer);
                self.uncommitted = 0;
            }
        }
    }

    /// Remove subscriber `i`, releasing its filters.
    fn remove(&mut self, i: usize) -> SubscriberHandle {
        let h = self.subscribers.swap_remove(i);
        for &f in h.filters.iter().chain(&h.imposed) {
            self.filters.release(f);
        }
        h
    }

    /// (Re)apply the site config's imposed filters to subscriber `i`.
    fn impose(&mut self, i: usize) {
        let exprs = self
            .settings
            .site
            .imposed(self.subscribers[i].peer().ip())
            .to_vec();
        let mut ids = Vec::with_capacity(exprs.len());
        for e in &exprs {
            match self.filters.acquire(e) {
                Ok(id) => ids.push(id),
                Err(err) => warn!("imposed filter {e:?} is not valid XPath ({err}); ignored"),
            }
        }
        let sub = &mut self.subscribers[i];
        for &f in std::mem::replace(&mut sub.imposed, ids.into_boxed_slice()).iter() {
            self.filters.release(f);
        }
        if !sub.imposed.is_empty() {
            info!(
                "subscriber {}: {} filters imposed by the subscriber config",
                sub.peer(),
                sub.imposed.len()
            );
        }
    }

    fn set_filters(&mut self, id: u64, exprs: Vec<String>) {
        let Some(sub) = self.subscribers.iter_mut().find(|s| s.id == id) else {
            return;
        };
        let mut ids = Vec::with_capacity(exprs.len());
        for e in &exprs {
            match self.filters.acquire(e) {
                Ok(f) => ids.push(f),
                Err(err) => warn!(
                    "filter {e:?} from subscriber {} is not valid XPath ({err}); ignored",
                    sub.peer()
                ),
            }
        }
        for &f in std::mem::replace(&mut sub.filters, ids.into_boxed_slice()).iter() {
            self.filters.release(f);
        }
        info!(
            "subscriber {} installed {} filters ({} distinct expressions in use)",
            sub.peer(),
            sub.filters.len(),
            self.filters.distinct()
        );
    }

    /// Queue `event` on every subscriber that wants it; drop the ones whose queue is full
    /// or gone. The event is parsed for XPath only if some subscriber has filters, and
    /// each distinct expression is evaluated at most once.
    fn fan_out(&mut self, event: &Arc<Event>) -> usize {
        let filtered = self
            .subscribers
            .iter()
            .any(|s| !s.filters.is_empty() || !s.imposed.is_empty());
        // The indices of the subscribers whose filters pass it, in a buffer kept from one
        // event to the next.
        let mut passing = std::mem::take(&mut self.passing);
        passing.clear();
        if filtered {
            let mut eval = self.filters.evaluate(event.payload());
            passing.extend(
                (0..self.subscribers.len())
                    .filter(|&i| passes(&mut eval, &self.subscribers[i], event)),
            );
        }
        let targets = if filtered {
            Targets::Only(&passing)
        } else {
            Targets::All
        };
        let copies = self.fanout.write_all(&self.subscribers, targets, event);
        self.passing = passing;
        // Highest index first, so swap_remove never moves an index still to be removed.
        for &i in copies.gone.iter().rev() {
            self.remove(i);
        }
        self.stats.dropped_subscribers += copies.too_slow;
        self.stats.copies += copies.sent;
        METRICS.copies.fetch_add(copies.sent, Ordering::Relaxed);
        if !self.awaiting.is_empty() {
            self.hold(event);
        }
        copies.sent as usize
    }

    /// Keep `event` for every subscriber whose filters are awaited; drop those already
    /// holding their limit, by the rule of a full backlog.
    fn hold(&mut self, event: &Arc<Event>) {
        let stats = &mut self.stats;
        self.awaiting.retain_mut(|a| {
            if a.held.len() >= a.limit && a.window {
                // The catch-up reads these from the archive; HandOver tells if it must
                // read further.
                a.held.drain(..a.held.len().div_ceil(2));
                a.trimmed = true;
            }
            if a.held.len() < a.limit {
                a.held.push(Arc::clone(event));
                return true;
            }
            warn!(
                "dropping subscriber {}: too slow ({} events held while its answer to authenticate is awaited, not holding {})",
                a.sub.peer(),
                a.held.len(),
                event.ivorn
            );
            a.sub.out.shutdown();
            stats.dropped_subscribers += 1;
            METRICS.dropped(DropReason::TooSlow);
            false
        });
        if !self.awaiting.is_empty() {
            debug!(
                "held {} for {} subscribers whose filters are awaited",
                event.ivorn,
                self.awaiting.len()
            );
        }
    }

    /// The catch-up of awaited subscriber `id` read the archive up to the entry with key
    /// `after` ([`Msg::HandOver`]). Archive order is acceptance order, and the catch-up
    /// read every event accepted before the subscriber registered (its fence): so if
    /// `after` is among the held events, those after it are exactly what it has not
    /// read; if not, and the held events reach back to the registration, they all are.
    fn hand_over(&mut self, id: u64, exprs: Vec<String>, after: Option<Key>, answer: Sender<bool>) {
        // Not there: dropped while awaited; the dropped answer tells the catch-up.
        let Some(a) = self.awaiting.iter_mut().find(|a| a.sub.id == id) else {
            return;
        };
        match after.and_then(|k| a.held.iter().position(|e| e.key == k)) {
            Some(i) => drop(a.held.drain(..=i)),
            None if !a.trimmed => {}
            None => {
                let _ = answer.send(false);
                return;
            }
        }
        let _ = answer.send(true);
        self.start(id, exprs);
    }

    /// The filters of awaited subscriber `id` are known: install them, offer it the events
    /// held for it that pass them, in order, and from now on fan events out to it.
    fn start(&mut self, id: u64, exprs: Vec<String>) {
        // Not there: dropped while awaited, or already gone.
        let Some(i) = self.awaiting.iter().position(|a| a.sub.id == id) else {
            return;
        };
        let Awaiting { sub, held, .. } = self.awaiting.swap_remove(i);
        info!(
            "subscriber {} connected ({} subscribers)",
            sub.peer(),
            self.subscribers.len() + 1
        );
        self.subscribers.push(sub);
        let i = self.subscribers.len() - 1;
        self.impose(i);
        if !exprs.is_empty() {
            self.set_filters(id, exprs);
        }
        if held.is_empty() {
            return;
        }
        let s = &self.subscribers[i];
        let filtered = !s.filters.is_empty() || !s.imposed.is_empty();
        let mut sent = 0;
        let mut alive = true;
        for event in &held {
            if filtered && !passes(&mut self.filters.evaluate(event.payload()), s, event) {
                continue;
            }
            match fanout::offer(&s.out, event) {
                Delivery::Sent => {}
                Delivery::TooSlow => {
                    self.stats.dropped_subscribers += 1;
                    alive = false;
                    break;
                }
                Delivery::Gone => {
                    alive = false;
                    break;
                }
            }
            sent += 1;
        }
        info!(
            "subscriber {}: {} events accepted while its answer to authenticate was awaited; sent the {sent} that pass its filters",
            s.peer(),
            held.len()
        );
        self.stats.copies += sent;
        METRICS.copies.fetch_add(sent, Ordering::Relaxed);
        if !alive {
            self.remove(i);
        }
    }

    /// The periodic one-line summary (`--stats-interval`).
    fn log_summary(&mut self, last: &Stats) {
        self.stats.rejected = crate::verdict::REJECTED.load(std::sync::atomic::Ordering::Relaxed);
        let s = &self.stats;
        info!(
            "summary: {} connections open ({} subscribers); events accepted {} (+{}), duplicates {} (+{}), rejected {} (+{}), copies sent {} (+{}), subscribers dropped {} (+{}); {}",
            self.settings.connections.load(std::sync::atomic::Ordering::Relaxed),
            self.subscribers.len(),
            s.accepted,
            s.accepted - last.accepted,
            s.duplicates,
            s.duplicates - last.duplicates,
            s.rejected,
            s.rejected.saturating_sub(last.rejected),
            s.copies,
            s.copies - last.copies,
            s.dropped_subscribers,
            s.dropped_subscribers - last.dropped_subscribers,
            crate::sys::process_stats().map_or("memory unknown".into(), |p| format!(
                "RSS {:.1} MiB, {} threads",
                p.rss_bytes as f64 / f64::from(1 << 20),
                p.threads
            ))
        );
    }

    fn send_test_event(&mut self) {
        let ts = time::utc_now();
        let payload = testevent::build(&self.settings.local_ivo, &ts);
        let doc_span = match crate::xml::parse(&payload, Default::default()) {
            Ok(d) => d.root_span,
            Err(e) => {
                error!("internal error: test event does not parse: {e}");
                return;
            }
        };
        let ev = Arc::new(Event::new(
            &payload,
            testevent::ivorn(&self.settings.local_ivo, &ts),
            EventRole::Test,
            doc_span,
            Origin::Local,
        ));
        if self.own_tests.len() == OWN_TESTS {
            self.own_tests.pop_front();
        }
        self.own_tests.push_back(ev.key);
        let n = self.fan_out(&ev);
        info!("sent test event {} to {n} subscribers", ev.ivorn);
    }
}

/// Whether `event` passes subscriber `s`'s filters: what the operator imposes AND what
/// the subscriber asked for.
fn passes(e: &mut Evaluation<'_>, s: &SubscriberHandle, event: &Event) -> bool {
    let pass = e.wants(&s.imposed) && e.wants(&s.filters);
    if !pass {
        debug!(
            "{} does not pass the filters of subscriber {}",
            event.ivorn,
            s.peer()
        );
    }
    pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use crate::verdict::tests::{pair, reply_of};
    use crate::voevent::EventRole;
    use crossbeam_channel::unbounded;
    use std::net::TcpStream;

    fn settings() -> Settings {
        Settings {
            local_ivo: "ivo://x.y/broker".into(),
            stats_interval: None,
            connections: Default::default(),
            site: SiteConfig::default(),
            test_interval: None,
            broadcast: false,
        }
    }

    /// A submission of event `i`, and the author's end of its connection.
    fn submit(i: usize) -> (Msg, TcpStream) {
        let payload = format!("<VOEvent ivorn='ivo://x.y/z#{i}'/>").into_bytes();
        let event = Event::new(
            &payload,
            format!("ivo://x.y/z#{i}"),
            EventRole::Observation,
            0..payload.len(),
            Origin::Author("127.0.0.1:1".parse().unwrap()),
        );
        let (author, reply) = pair(Instant::now() + Duration::from_secs(10));
        let msg = Msg::Submit {
            event: Arc::new(event),
            reply: Some(reply.into()),
        };
        (msg, author)
    }

    struct Fixture {
        dir: std::path::PathBuf,
        store: Arc<Store>,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir = std::env::temp_dir()
                .join(format!("bolide-dispatcher-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = StoreConfig::new(&dir);
            cfg.no_sync = true;
            let store = Arc::new(Store::open(&cfg).unwrap());
            Fixture { dir, store }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Under a never-empty inbox the inline committer still commits every INLINE_BATCH
    /// records (and once more at shutdown), and every author gets its ack.
    #[test]
    fn inline_commits_in_batches_under_a_full_inbox() {
        let f = Fixture::new("batches");
        let (tx, rx) = unbounded();
        let n = 3 * INLINE_BATCH + 8;
        let mut authors = Vec::new();
        for i in 0..n {
            let (msg, author) = submit(i);
            tx.send(msg).unwrap();
            authors.push(author);
        }
        tx.send(Msg::Shutdown).unwrap();
        let queue = CommitQueue::inline();
        let d = Dispatcher::new(settings(), Arc::clone(&f.store), Arc::clone(&queue), None);
        let stats = d.run(rx);
        assert_eq!((stats.accepted, stats.commits), (n as u64, 4));
        assert_eq!(f.store.len().unwrap(), n);
        assert_eq!(queue.pending(), 0);
        for a in authors {
            let m = reply_of(a).expect("a reply");
            assert_eq!(m.role, Some(crate::transport::Role::Ack));
        }
    }

    /// An empty inbox is the moment to commit: a lone event is acked while the
    /// dispatcher waits for more, and a second submission of it is a duplicate.
    #[test]
    fn inline_commits_when_the_inbox_is_empty() {
        let f = Fixture::new("idle");
        let (tx, rx) = unbounded();
        let queue = CommitQueue::inline();
        let store = Arc::clone(&f.store);
        let t = std::thread::spawn(move || Dispatcher::new(settings(), store, queue, None).run(rx));
        let (msg, author) = submit(1);
        tx.send(msg).unwrap();
        let m = reply_of(author).expect("an ack without further messages");
        assert_eq!(m.role, Some(crate::transport::Role::Ack));
        assert_eq!(f.store.len().unwrap(), 1);
        let (msg, author) = submit(1);
        tx.send(msg).unwrap();
        let m = reply_of(author).expect("a nak");
        assert_eq!(m.role, Some(crate::transport::Role::Nak));
        tx.send(Msg::Shutdown).unwrap();
        let stats = t.join().unwrap();
        assert_eq!((stats.accepted, stats.duplicates, stats.commits), (1, 1, 1));
    }

    /// A catch-up's hand-over: while the window of held events no longer reaches back to
    /// the last entry the catch-up read, it is told to read on; once it does, exactly the
    /// held events after that entry are sent, in order.
    #[test]
    fn hand_over_sends_the_held_events_after_the_last_entry_read() {
        let f = Fixture::new("handover");
        let (tx, rx) = unbounded();
        let store = Arc::clone(&f.store);
        let queue = CommitQueue::inline();
        let t = std::thread::spawn(move || Dispatcher::new(settings(), store, queue, None).run(rx));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, peer) = l.accept().unwrap();
        let (out, _waker) = Outbox::new(server, peer, 16);
        let sub = SubscriberHandle::new(1, out);
        tx.send(Msg::Register { sub, hold: 4 }).unwrap();
        let (ptx, prx) = crossbeam_channel::bounded(1);
        tx.send(Msg::Replaying { id: 1, answer: ptx }).unwrap();
        prx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (mut keys, mut authors) = (Vec::new(), Vec::new());
        for i in 0..10 {
            let (msg, author) = submit(i);
            if let Msg::Submit { event, .. } = &msg {
                keys.push(event.key);
            }
            tx.send(msg).unwrap();
            authors.push(author);
        }
        let hand_over = |after: Option<Key>| {
            let (atx, arx) = crossbeam_channel::bounded(1);
            let msg = Msg::HandOver {
                id: 1,
                exprs: Vec::new(),
                after,
                answer: atx,
            };
            tx.send(msg).unwrap();
            arx.recv_timeout(Duration::from_secs(10)).unwrap()
        };
        // A window of 4 keeps events 6..=9 of the ten: 2 and "nothing read" are too old.
        assert!(!hand_over(Some(keys[2])));
        assert!(!hand_over(None));
        assert!(hand_over(Some(keys[7])));
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut frames = crate::frame::FrameReader::new(1 << 20);
        for i in [8, 9] {
            let f = frames.read_frame(&mut &client).unwrap();
            assert_eq!(f, format!("<VOEvent ivorn='ivo://x.y/z#{i}'/>").as_bytes());
        }
        assert!(frames.read_frame(&mut &client).is_err(), "an extra event");
        tx.send(Msg::Shutdown).unwrap();
        t.join().unwrap();
    }

    /// With a committer thread's queue the dispatcher commits nothing itself.
    #[test]
    fn committer_thread_queue_is_left_to_the_committer() {
        let f = Fixture::new("thread");
        let (tx, rx) = unbounded();
        let (msg, author) = submit(1);
        tx.send(msg).unwrap();
        tx.send(Msg::Shutdown).unwrap();
        let queue = CommitQueue::new();
        let stats =
            Dispatcher::new(settings(), Arc::clone(&f.store), Arc::clone(&queue), None).run(rx);
        assert_eq!((stats.accepted, stats.commits), (1, 0));
        assert_eq!(f.store.len().unwrap(), 0);
        assert_eq!(queue.pending(), 1);
        let cs = crate::committer::run_committer(Arc::clone(&f.store), queue);
        assert_eq!(cs.records, 1);
        let m = reply_of(author).expect("an ack from the committer");
        assert_eq!(m.role, Some(crate::transport::Role::Ack));
    }
}
