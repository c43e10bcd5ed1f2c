//! The broker's counters for the operator's view (`--http`, [`crate::http`]): plain
//! atomics updated by the thread doing the work (one relaxed `fetch_add` each), two
//! latency histograms of atomic buckets, and the live subscribers and upstreams as small
//! shared stat structs, registered when they connect and removed when they go.
//!
//! One broker runs per process, so [`METRICS`] is one process-wide value (as
//! [`crate::verdict::REJECTED`] is): the threads that count need no handle to it, and a
//! reader (an HTTP request) only loads atomics. The only locks here are the two
//! registries' mutexes, taken to add or remove an entry (at connect and disconnect) or to
//! clone the list of `Arc`s (a request), and a subscriber's filter list, written by its
//! thread when the subscriber sends filters and cloned by a request; no thread that
//! serves events waits on them otherwise. A subscriber's queue length is read through its
//! [`Outbox`], whose lock the dispatcher holds for one append at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outbox::Outbox;
use crate::time::unix_now_ms;
use crate::voevent::{Origin, Rejection};

/// Where an event came from, as the metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Author,
    Upstream,
    Kafka,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Author, Source::Upstream, Source::Kafka];

    /// The source of an event from `origin` (`None`: the broker's own test events).
    pub fn of(origin: &Origin) -> Option<Source> {
        match origin {
            Origin::Author(_) => Some(Source::Author),
            Origin::Upstream(_) => Some(Source::Upstream),
            Origin::Kafka { .. } => Some(Source::Kafka),
            Origin::Local => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Source::Author => "author",
            Source::Upstream => "upstream",
            Source::Kafka => "kafka",
        }
    }
}

/// Why an author's event was refused, in a few fixed classes (the label of
/// `bolide_events_rejected_total`; the log line has the full reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a well-formed VOEvent 2.0 (XML, root, namespace, ivorn, role, version, IVOID).
    Invalid,
    /// Well-formed but not valid against the VOEvent 2.0 schema.
    Schema,
    /// A frame over `--max-event-size`.
    TooLarge,
    /// `--author-config` does not let the address publish the ivorn.
    NotPermitted,
    /// Over `--author-rate`.
    RateLimited,
    /// The event database failed (full, I/O).
    Storage,
    /// Shutting down, or overloaded past the author's deadline.
    Unavailable,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Invalid,
        RejectReason::Schema,
        RejectReason::TooLarge,
        RejectReason::NotPermitted,
        RejectReason::RateLimited,
        RejectReason::Storage,
        RejectReason::Unavailable,
    ];

    /// The class of a nak's reason (`None`: a duplicate, counted apart).
    pub fn of(r: &Rejection) -> Option<RejectReason> {
        Some(match r {
            Rejection::Duplicate => return None,
            Rejection::Schema(_) => RejectReason::Schema,
            Rejection::Storage => RejectReason::Storage,
            Rejection::Unavailable => RejectReason::Unavailable,
            Rejection::NotPermitted { .. } => RejectReason::NotPermitted,
            Rejection::RateLimited { .. } => RejectReason::RateLimited,
            Rejection::Xml(_)
            | Rejection::Transport { .. }
            | Rejection::NotVoevent { .. }
            | Rejection::Namespace { .. }
            | Rejection::MissingIvorn
            | Rejection::Role(_)
            | Rejection::Version(_)
            | Rejection::Ivoid(_) => RejectReason::Invalid,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::Schema => "schema",
            RejectReason::TooLarge => "too_large",
            RejectReason::NotPermitted => "not_permitted",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Storage => "storage",
            RejectReason::Unavailable => "unavailable",
        }
    }
}

/// Why the broker dropped a subscriber (the label of `bolide_subscribers_dropped_total`).
/// A subscriber that closes its own connection is not dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its backlog was full (`--subscriber-queue`).
    TooSlow,
    /// Too many events unacknowledged over an iamalive interval (`--max-unacked`).
    NotAcking,
    /// An iamalive unanswered.
    Dead,
    /// It sent a nak.
    Nak,
    /// A socket error or garbage on the connection.
    Error,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::TooSlow,
        DropReason::NotAcking,
        DropReason::Dead,
        DropReason::Nak,
        DropReason::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::TooSlow => "too_slow",
            DropReason::NotAcking => "not_acking",
            DropReason::Dead => "dead",
            DropReason::Nak => "nak",
            DropReason::Error => "error",
        }
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const NS_BUCKETS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The initial value of every counter (an array of atomics is built from copies of it).
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// A latency histogram of atomic counters: an observation is three `fetch_add`s.
pub struct Histogram {
    /// Observations at most each bound (not cumulative; the encoder sums them).
    buckets: [AtomicU64; 16],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [ZERO; 16],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if let Some(i) = NS_BUCKETS.iter().position(|&b| ns <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Sum (seconds), count, and `(bound, observations above the previous bound and at
    /// most this one)`; those above the last bound are the count's remainder.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&b, n)| (b, n.load(Ordering::Relaxed)))
            .collect::<Vec<_>>();
        // Read after the buckets: never fewer observations than they hold.
        let held: u64 = buckets.iter().map(|b| b.1).sum();
        let count = self.count.load(Ordering::Relaxed).max(held);
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// What an upstream link is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    Connecting = 0,
    Connected = 1,
    /// Waiting out the backoff before the next attempt.
    Waiting = 2,
}

impl LinkState {
    pub const ALL: [LinkState; 3] = [
        LinkState::Connecting,
        LinkState::Connected,
        LinkState::Waiting,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Waiting => "waiting",
        }
    }
}

/// One `--remote` link, as the operator sees it.
pub struct UpstreamStat {
    pub remote: String,
    state: AtomicU8,
    /// When the current connection was made (Unix ms; 0: none).
    pub since_ms: AtomicU64,
    pub received: AtomicU64,
    /// When its last event arrived (Unix ms; 0: none yet).
    pub last_event_ms: AtomicU64,
    /// Connection attempts after the first.
    pub reconnects: AtomicU64,
}

impl UpstreamStat {
    pub fn state(&self) -> LinkState {
        match self.state.load(Ordering::Relaxed) {
            1 => LinkState::Connected,
            2 => LinkState::Waiting,
            _ => LinkState::Connecting,
        }
    }

    /// Enter `state` (connecting after a wait counts a reconnect).
    pub fn set(&self, state: LinkState) {
        let was = self.state.swap(state as u8, Ordering::Relaxed);
        match state {
            LinkState::Connecting if was == LinkState::Waiting as u8 => {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            LinkState::Connected => self.since_ms.store(unix_now_ms(), Ordering::Relaxed),
            LinkState::Waiting => self.since_ms.store(0, Ordering::Relaxed),
            LinkState::Connecting => {}
        }
    }

    /// An event arrived on this link.
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_event_ms.store(unix_now_ms(), Ordering::Relaxed);
    }
}

/// The live entries of one kind, each an `Arc` shared with the thread it describes.
pub struct Registry<T> {
    entries: Mutex<Vec<Arc<T>>>,
}

impl<T> Registry<T> {
    const fn new() -> Registry<T> {
        Registry {
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Add `stat` until the returned guard is dropped. Not inlined (nor is removal): a
    /// subscriber thread's stack stays small (`broadcaster`'s `subscriber_stack_budget`).
    #[inline(never)]
    pub fn register(&'static self, stat: Arc<T>) -> Registered<T> {
        self.lock().push(Arc::clone(&stat));
        Registered {
            registry: self,
            stat,
        }
    }

    /// The entries now (the lock is held only to clone the `Arc`s).
    pub fn list(&self) -> Vec<Arc<T>> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registry entry, removed when this is dropped (the connection or thread ended).
pub struct Registered<T: 'static> {
    registry: &'static Registry<T>,
    stat: Arc<T>,
}

impl<T> std::ops::Deref for Registered<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.stat
    }
}

impl<T> Drop for Registered<T> {
    #[inline(never)]
    fn drop(&mut self) {
        let mut v = self.registry.lock();
        if let Some(i) = v.iter().position(|s| Arc::ptr_eq(s, &self.stat)) {
            v.swap_remove(i);
        }
    }
}

/// Every counter of the broker.
pub struct Metrics {
    accepted: [AtomicU64; 3],
    duplicates: [AtomicU64; 3],
    rejected: [AtomicU64; 7],
    dropped: [AtomicU64; 5],
    pub copies: AtomicU64,
    /// Acceptance time of the newest event (Unix ms; 0: none yet).
    pub last_event_ms: AtomicU64,
    /// Events waiting for the handlers, as the dispatcher last saw.
    pub handler_queue: AtomicU64,
    /// The last commit of the event database failed (cleared by the next that succeeds).
    pub commit_failing: AtomicBool,
    /// From the author's event checked to its `ack` sent.
    pub ack_latency: Histogram,
    /// From an event's arrival at the dispatcher to its last copy handed to the kernel or
    /// queued for its subscriber's thread.
    pub fanout_latency: Histogram,
    /// Connected subscribers: their outboxes, which hold what the view shows
    /// ([`crate::outbox::SubscriberStat`]).
    pub subscribers: Registry<Outbox>,
    pub upstreams: Registry<UpstreamStat>,
}

/// The broker's counters (module docs: why one per process).
pub static METRICS: Metrics = Metrics {
    accepted: [ZERO; 3],
    duplicates: [ZERO; 3],
    rejected: [ZERO; 7],
    dropped: [ZERO; 5],
    copies: AtomicU64::new(0),
    last_event_ms: AtomicU64::new(0),
    handler_queue: AtomicU64::new(0),
    commit_failing: AtomicBool::new(false),
    ack_latency: Histogram::new(),
    fanout_latency: Histogram::new(),
    subscribers: Registry::new(),
    upstreams: Registry::new(),
};

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// A new event from `origin` was accepted.
    pub fn accepted(&self, origin: &Origin) {
        if let Some(s) = Source::of(origin) {
            add(&self.accepted[s as usize], 1);
            self.last_event_ms.store(unix_now_ms(), Ordering::Relaxed);
        }
    }

    /// An event from `origin` was a duplicate.
    pub fn duplicate(&self, origin: &Origin) {
        if let Some(s) = Source::of(origin) {
            add(&self.duplicates[s as usize], 1);
        }
    }

    /// An author got a nak for this reason.
    pub fn rejected(&self, r: RejectReason) {
        add(&self.rejected[r as usize], 1);
    }

    /// A commit of the event database succeeded or failed.
    pub fn committed(&self, ok: bool) {
        self.commit_failing.store(!ok, Ordering::Relaxed);
    }

    /// The broker dropped a subscriber.
    pub fn dropped(&self, r: DropReason) {
        add(&self.dropped[r as usize], 1);
    }

    pub fn accepted_from(&self, s: Source) -> u64 {
        self.accepted[s as usize].load(Ordering::Relaxed)
    }

    pub fn duplicates_from(&self, s: Source) -> u64 {
        self.duplicates[s as usize].load(Ordering::Relaxed)
    }

    pub fn rejected_for(&self, r: RejectReason) -> u64 {
        self.rejected[r as usize].load(Ordering::Relaxed)
    }

    pub fn dropped_for(&self, r: DropReason) -> u64 {
        self.dropped[r as usize].load(Ordering::Relaxed)
    }

    /// A subscriber connected: listed until the guard is dropped.
    #[inline(never)]
    pub fn subscriber(&'static self, out: &Arc<Outbox>) -> Registered<Outbox> {
        self.subscribers.register(Arc::clone(out))
    }

    /// An upstream thread started: listed until the guard is dropped.
    pub fn upstream(&'static self, remote: String) -> Registered<UpstreamStat> {
        self.upstreams.register(Arc::new(UpstreamStat {
            remote,
            state: AtomicU8::new(LinkState::Connecting as u8),
            since_ms: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_event_ms: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_each_observation_once() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (sum, count, b) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.00305).abs() < 1e-9);
        assert_eq!(b[0], (0.0001, 1));
        assert_eq!(b[5], (0.005, 1));
        assert_eq!(b.iter().map(|b| b.1).sum::<u64>(), 2);
    }

    #[test]
    fn reject_classes_cover_naks_but_not_duplicates() {
        assert_eq!(RejectReason::of(&Rejection::Duplicate), None);
        assert_eq!(
            RejectReason::of(&Rejection::MissingIvorn),
            Some(RejectReason::Invalid)
        );
        assert_eq!(
            RejectReason::of(&Rejection::Storage),
            Some(RejectReason::Storage)
        );
    }
}
