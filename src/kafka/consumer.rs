//! The Kafka consumer thread: one more event source beside receivers and upstreams. It
//! owns the `BaseConsumer`, the subscription, and the bookkeeping of which offsets may be
//! committed.
//!
//! Each message is checked like an upstream broker's event (XML with a `VOEvent` root,
//! within `--max-event-size`) and submitted to the dispatcher with a [`Settle`]: the
//! committer answers it after the event's record is durable, the dispatcher at once if
//! the event was already seen. A partition's offset is committed up to the first message
//! not yet settled, so after a crash every message not known to be recorded is read
//! again, and the ones that were are recognised as seen. A message that is not a usable
//! event (a librdkafka error, no payload, too large, not XML, not a VOEvent) is logged
//! with its topic, partition and offset and settled at once: the consumer never sticks.
//!
//! When the group rebalances (another consumer joins or leaves), the partitions taken
//! from this one are settled as far as they get within [`REVOKE_WAIT`], their settled
//! prefix is committed while they are still this consumer's, and their bookkeeping is
//! dropped: a verdict that comes later commits nothing for a partition another consumer
//! owns, and the messages still open are read again by the partition's next owner.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use log::{debug, error, info, warn};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::stats::{KafkaStats, STATISTICS_EVERY_MS};
use super::{
    is_topic_error, link_state, random_hex, GatewayError, Link, Source, GROUP_ID_KEY, PROBE_EVERY,
};
use crate::cli::KafkaConfig;
use crate::dispatcher::Msg;
use crate::store::Store;
use crate::verdict::{Reply, Settle, Settled, Verdict};
use crate::voevent::{relayed_event, Origin, Rejection};
use crate::xml::{self, Limits, XmlError};

/// Longest wait in one poll: how late a stop or a settled offset is noticed when no
/// message comes.
const POLL: Duration = Duration::from_millis(100);
/// At a rebalance, how long the consumer waits for the verdicts on the messages of the
/// partitions it loses before it commits their settled prefix and lets them go.
const REVOKE_WAIT: Duration = Duration::from_millis(500);

/// Why a message is skipped.
#[derive(Debug)]
pub enum Poison {
    /// librdkafka delivered an error instead of a message (e.g. an unknown topic).
    Kafka(KafkaError),
    /// A message without a value.
    Empty,
    /// Larger than `--max-event-size`.
    TooLarge { size: usize, max: usize },
    /// Not well-formed XML within the parser's limits.
    Xml(XmlError),
    /// XML, but not a VOEvent.
    NotVoevent(Rejection),
}

impl fmt::Display for Poison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Poison::Kafka(e) => write!(f, "{e}"),
            Poison::Empty => write!(f, "no value"),
            Poison::TooLarge { size, max } => {
                write!(f, "{size} bytes, over --max-event-size {max}")
            }
            Poison::Xml(e) => write!(f, "{e}"),
            Poison::NotVoevent(r) => write!(f, "not a VOEvent: {r}"),
        }
    }
}

/// A partition's messages submitted and not yet settled, and what may be committed.
#[derive(Default)]
struct Partition {
    /// Offset -> settled (recorded or known).
    open: BTreeMap<i64, bool>,
    /// The next offset to read, as last committed (`None`: nothing committed yet). A
    /// message whose event could not be recorded stays open: nothing past it is
    /// committed.
    committed: Option<i64>,
}

/// Which offsets are settled, per partition.
#[derive(Default)]
pub struct Offsets {
    partitions: HashMap<(String, i32), Partition>,
    /// Token -> the message it stands for.
    tokens: HashMap<u64, (String, i32, i64)>,
    next_token: u64,
}

impl Offsets {
    /// A message is submitted: its token.
    pub fn open(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let p = self
            .partitions
            .entry((topic.to_string(), partition))
            .or_default();
        p.open.insert(offset, false);
        self.next_token += 1;
        self.tokens
            .insert(self.next_token, (topic.to_string(), partition, offset));
        self.next_token
    }

    /// The message behind `token` is settled: `done` if its event is recorded or known.
    pub fn settle(&mut self, token: u64, done: bool) {
        let Some((topic, partition, offset)) = self.tokens.remove(&token) else {
            return;
        };
        if let Some(p) = self.partitions.get_mut(&(topic, partition)) {
            if let Some(d) = p.open.get_mut(&offset) {
                *d = done;
            }
        }
    }

    /// A message that needs no settling (skipped, or a heartbeat).
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) {
        let t = self.open(topic, partition, offset);
        self.settle(t, true);
    }

    /// The offsets to commit now: for each partition whose settled prefix grew, the
    /// offset after it.
    pub fn ready(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), p) in &mut self.partitions {
            let mut next = None;
            while let Some((&o, &true)) = p.open.first_key_value() {
                p.open.pop_first();
                next = Some(o + 1);
            }
            if let Some(n) = next {
                if p.committed.map_or(true, |c| n > c) {
                    p.committed = Some(n);
                    out.push((topic.clone(), *partition, n));
                }
            }
        }
        out
    }

    /// Messages submitted and not yet settled.
    pub fn unsettled(&self) -> usize {
        self.tokens.len()
    }

    /// Messages of `partitions` submitted and not yet settled.
    pub fn unsettled_in(&self, partitions: &[(String, i32)]) -> usize {
        self.tokens
            .values()
            .filter(|(t, p, _)| partitions.iter().any(|(rt, rp)| rt == t && rp == p))
            .count()
    }

    /// `partitions` are no longer this consumer's: forget them (a later verdict on one
    /// of their messages changes nothing); how many of their messages were unsettled.
    pub fn forget(&mut self, partitions: &[(String, i32)]) -> usize {
        let before = self.tokens.len();
        self.tokens
            .retain(|_, (t, p, _)| !partitions.iter().any(|(rt, rp)| rt == t && rp == p));
        for key in partitions {
            self.partitions.remove(key);
        }
        before - self.tokens.len()
    }
}

/// The offsets and the channel their verdicts come back on; the consumer thread and the
/// rebalance callbacks (which run on that thread, inside a poll) share it.
struct Book {
    offsets: Offsets,
    settled: Receiver<Settled>,
}

impl Book {
    /// Take the verdicts that came back.
    fn settle(&mut self) {
        while let Ok(s) = self.settled.try_recv() {
            self.apply(s);
        }
    }

    fn apply(&mut self, s: Settled) {
        let done = matches!(
            s.verdict,
            Verdict::Accepted | Verdict::Rejected(Rejection::Duplicate)
        );
        if !done {
            error!(
                "kafka consumer: an event was not recorded ({:?}); its partition's offset stays before it, so it is read again after a restart",
                s.verdict
            );
        }
        self.offsets.settle(s.token, done);
    }

    /// The offsets to commit now, as librdkafka takes them.
    fn ready_list(&mut self) -> Option<TopicPartitionList> {
        let ready = self.offsets.ready();
        if ready.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in ready {
            if let Err(e) = tpl.add_partition_offset(&topic, partition, Offset::Offset(next)) {
                debug!("kafka consumer: {topic} partition {partition}: {e}");
            }
        }
        Some(tpl)
    }

    /// Partitions are taken from this consumer: settle what comes back within
    /// [`REVOKE_WAIT`], commit (unless the assignment is already lost, when a commit can
    /// only fail), and forget them.
    fn revoke(&mut self, consumer: &BaseConsumer<Ctx>, revoked: &[(String, i32)]) {
        let lost = consumer.assignment_lost();
        if !lost {
            let deadline = Instant::now() + REVOKE_WAIT;
            while self.offsets.unsettled_in(revoked) > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.settled.recv_timeout(left) {
                    Ok(s) => self.apply(s),
                    Err(_) => break,
                }
            }
            self.settle();
            if let Some(tpl) = self.ready_list() {
                // Asynchronous: librdkafka sends it before it leaves this generation.
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    debug!("kafka consumer: offset commit at the rebalance not sent: {e}");
                }
            }
        }
        let open = self.offsets.forget(revoked);
        info!(
            "kafka consumer: {} partitions revoked by a rebalance{}; {open} messages not yet recorded are left to their next owner",
            revoked.len(),
            if lost { " (assignment lost: nothing committed)" } else { "" },
        );
    }
}

/// The consumer's librdkafka context: the link's state, the figures for the metrics, and
/// the offsets (for the rebalance callbacks).
pub struct Ctx {
    link: Arc<Link>,
    stats: Arc<KafkaStats>,
    book: Mutex<Book>,
    /// The thread has made its last commit and closes the consumer, which revokes every
    /// partition: no rebalance to handle.
    closing: AtomicBool,
}

impl Ctx {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.link.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.link.failed(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.stats.statistics(&statistics);
    }
}

/// (topic, partition) of each element of `tpl`.
fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if !self.closing.load(Ordering::Relaxed) {
                self.book().revoke(consumer, &partitions_of(tpl));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(e) = rebalance {
            warn!("kafka consumer: rebalance failed: {e}");
        }
        match consumer.assignment() {
            Ok(tpl) => {
                let assigned = partitions_of(&tpl);
                if matches!(rebalance, Rebalance::Assign(_)) {
                    let topics: std::collections::BTreeSet<&str> =
                        assigned.iter().map(|(t, _)| t.as_str()).collect();
                    info!(
                        "kafka consumer: {} partitions of {} topics assigned",
                        assigned.len(),
                        topics.len()
                    );
                    debug!("kafka consumer: assigned {assigned:?}");
                }
                self.stats.assigned(assigned);
            }
            Err(e) => debug!("kafka consumer: assignment not known: {e}"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => debug!("kafka consumer: committed {offsets:?}"),
            // Not fatal: a later commit carries a higher offset, and a crash before it
            // only means messages read again, recognised as seen.
            Err(e) => debug!("kafka consumer: offset commit failed: {e}"),
        }
    }
}

/// Create the consumer, subscribe, and start its thread.
pub fn start(
    cfg: &KafkaConfig,
    store: &Arc<Store>,
    source: Source,
    stats: Arc<KafkaStats>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, GatewayError> {
    let group = match &cfg.group_id {
        Some(g) => g.clone(),
        None => {
            let v = store
                .meta_get_or_insert(GROUP_ID_KEY, || {
                    format!("bolide-{}", random_hex(12)).into_bytes()
                })
                .map_err(GatewayError::Store)?;
            String::from_utf8_lossy(&v).into_owned()
        }
    };
    let settled = unbounded();
    let ctx = Ctx {
        link: Arc::new(Link::new("consumer")),
        stats,
        book: Mutex::new(Book {
            offsets: Offsets::default(),
            settled: settled.1,
        }),
        closing: AtomicBool::new(false),
    };
    let mut config = super::client_config(cfg);
    if !cfg
        .client
        .iter()
        .any(|(k, _)| k == "statistics.interval.ms")
    {
        config.set("statistics.interval.ms", STATISTICS_EVERY_MS);
    }
    let consumer: BaseConsumer<Ctx> = config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", cfg.start.as_str())
        .set("enable.partition.eof", "false")
        .create_with_context(ctx)
        .map_err(|source| GatewayError::Client {
            role: "consumer",
            source,
        })?;
    let mut topics = cfg.topics.clone();
    topics.extend(cfg.heartbeat_topic.iter().cloned());
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|source| GatewayError::Subscribe {
            topics: topics.clone(),
            source,
        })?;
    info!(
        "kafka consumer: group {group}, topics {}; a new group starts at the {} messages",
        topics.join(" "),
        cfg.start.as_str()
    );
    let run = Run {
        consumer,
        st: State {
            source,
            heartbeat: cfg.heartbeat_topic.clone(),
            heartbeat_timeout: cfg.heartbeat_timeout,
            settled: settled.0,
            limits: Limits::default(),
        },
    };
    std::thread::Builder::new()
        .name("kafka-consumer".into())
        .stack_size(512 * 1024)
        .spawn(move || run.run(&stop))
        .map_err(GatewayError::Thread)
}

struct Run {
    consumer: BaseConsumer<Ctx>,
    st: State,
}

/// Everything of the thread's but the consumer (which a polled message borrows).
struct State {
    source: Source,
    heartbeat: Option<String>,
    heartbeat_timeout: Duration,
    settled: Sender<Settled>,
    limits: Limits,
}

impl Run {
    fn run(self, stop: &AtomicBool) {
        let mut last_beat = Instant::now();
        let mut beat_missing = false;
        let mut probed = Instant::now();
        let ctx = Arc::clone(self.consumer.context());
        while !stop.load(Ordering::Relaxed) {
            let polled = self.consumer.poll(POLL);
            let gone = match polled {
                None => false,
                Some(Err(e)) => {
                    // librdkafka names no offset here. The link's errors also reach the
                    // context, which logs them once per state; a topic's are logged once.
                    let code = e.rdkafka_error_code();
                    if is_topic_error(code) {
                        ctx.link.failed(&e, &e.to_string());
                    } else if link_state(code).is_some() {
                        debug!("kafka consumer: {e}");
                    } else {
                        warn!("kafka consumer: skipped: {}", Poison::Kafka(e));
                    }
                    false
                }
                Some(Ok(m)) => {
                    ctx.link.works();
                    if self.st.heartbeat.as_deref() == Some(m.topic()) {
                        last_beat = Instant::now();
                        ctx.stats.heartbeat();
                        if beat_missing {
                            info!("kafka consumer: heartbeats on {} again", m.topic());
                            beat_missing = false;
                        }
                        ctx.book()
                            .offsets
                            .done(m.topic(), m.partition(), m.offset());
                        false
                    } else {
                        !self.st.submit(&ctx, &m)
                    }
                }
            };
            if gone {
                break;
            }
            self.commit(&ctx);
            if let Some(t) = &self.st.heartbeat {
                let silence = self.st.heartbeat_timeout;
                if !beat_missing && last_beat.elapsed() >= silence {
                    warn!(
                        "kafka consumer: no heartbeat on {t} for {} s: the stream may be interrupted",
                        silence.as_secs()
                    );
                    beat_missing = true;
                }
            }
            if ctx.link.is_down() && probed.elapsed() >= PROBE_EVERY {
                probed = Instant::now();
                if self
                    .consumer
                    .fetch_metadata(None, Duration::from_secs(1))
                    .is_ok()
                {
                    ctx.link.works();
                }
            }
        }
        // What is settled by now is committed; the rest is read again next time.
        let mut book = ctx.book();
        book.settle();
        if let Some(tpl) = book.ready_list() {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                debug!("kafka consumer: final offset commit failed: {e}");
            }
        }
        info!(
            "kafka consumer stopped ({} messages not yet recorded are read again at the next start)",
            book.offsets.unsettled()
        );
        ctx.closing.store(true, Ordering::Relaxed);
    }

    /// Commit what became settled (asynchronously: the thread does not wait for Kafka).
    fn commit(&self, ctx: &Ctx) {
        let mut book = ctx.book();
        book.settle();
        if let Some(tpl) = book.ready_list() {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                debug!("kafka consumer: offset commit not sent: {e}");
            }
        }
    }
}

impl State {
    /// Check a message and hand its event to the dispatcher; `false` if the dispatcher
    /// has stopped.
    fn submit(&self, ctx: &Ctx, m: &BorrowedMessage<'_>) -> bool {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let mut event = match self.check(m) {
            Ok(e) => e,
            Err(why) => {
                warn!("kafka {topic} partition {partition} offset {offset}: skipped: {why}");
                ctx.book().offsets.done(topic, partition, offset);
                return true;
            }
        };
        debug!(
            "received {} from kafka {topic} partition {partition} offset {offset}",
            event.ivorn
        );
        if self.source.archive {
            event.pack_for_archive();
        }
        let token = ctx.book().offsets.open(topic, partition, offset);
        let reply = Reply::Source(Settle::new(self.settled.clone(), token));
        self.source
            .dispatcher
            .send(Msg::Submit {
                event: Arc::new(event),
                reply: Some(reply),
            })
            .is_ok()
    }

    fn check(&self, m: &BorrowedMessage<'_>) -> Result<crate::voevent::Event, Poison> {
        let payload = m.payload().ok_or(Poison::Empty)?;
        if payload.len() > self.source.max_event_size {
            return Err(Poison::TooLarge {
                size: payload.len(),
                max: self.source.max_event_size,
            });
        }
        let doc = xml::parse(payload, self.limits).map_err(Poison::Xml)?;
        let origin = Origin::Kafka {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
        };
        relayed_event(&doc, payload, origin).map_err(Poison::NotVoevent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets are committed up to the first unsettled message of each partition, a
    /// message that could not be recorded holds its partition back, and partitions do
    /// not wait for each other.
    #[test]
    fn commits_stop_at_the_first_unsettled_message() {
        let mut o = Offsets::default();
        let a: Vec<u64> = (0..4).map(|i| o.open("t", 0, 10 + i)).collect();
        let b = o.open("t", 1, 5);
        assert!(o.ready().is_empty());
        o.settle(a[1], true);
        o.settle(a[2], true);
        assert!(o.ready().is_empty(), "offset 10 is not settled yet");
        o.settle(a[0], true);
        assert_eq!(o.ready(), vec![("t".to_string(), 0, 13)]);
        o.done("t", 0, 14);
        assert!(o.ready().is_empty(), "offset 13 is still open");
        o.settle(a[3], true);
        assert_eq!(o.ready(), vec![("t".to_string(), 0, 15)]);
        o.settle(b, false);
        o.done("t", 1, 6);
        assert!(
            o.ready().is_empty(),
            "an unrecorded event holds partition 1"
        );
        assert_eq!(o.unsettled(), 0);
    }

    /// A revoked partition is forgotten: a verdict on one of its messages that comes
    /// later commits nothing for it, and the other partitions go on.
    #[test]
    fn a_revoked_partition_commits_nothing_more() {
        let mut o = Offsets::default();
        let a0 = o.open("t", 0, 7);
        let a1 = o.open("t", 0, 8);
        let b0 = o.open("t", 1, 3);
        o.settle(a0, true);
        assert_eq!(o.ready(), vec![("t".to_string(), 0, 8)]);
        let revoked = [("t".to_string(), 0)];
        assert_eq!(o.unsettled_in(&revoked), 1);
        assert_eq!(o.forget(&revoked), 1);
        assert_eq!(o.unsettled_in(&revoked), 0);
        o.settle(a1, true);
        o.settle(b0, true);
        assert_eq!(o.ready(), vec![("t".to_string(), 1, 4)]);
        // Assigned again later: it starts afresh from what the group committed.
        o.done("t", 0, 8);
        assert_eq!(o.ready(), vec![("t".to_string(), 0, 9)]);
        assert_eq!(o.unsettled(), 0);
    }
}
