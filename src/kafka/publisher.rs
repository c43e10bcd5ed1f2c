//! The Kafka publisher thread (`--kafka-publish TOPIC`): a reader of the archive with a
//! position. It owns the `BaseProducer` and the position: the seq of the last archived
//! event Kafka confirmed, kept in the event database's `meta` (key [`PUBLISHED_KEY`] +
//! topic) so that after a restart or an outage publishing resumes from the archive.
//!
//! Every event the broker accepts as new is archived in the commit that makes it durable;
//! the store wakes this thread after such a commit ([`Store::wait_for_archive`]), and it
//! produces each entry after its position with key = ivorn and value = the exact bytes,
//! through librdkafka's idempotent producer (`acks=all`, zstd). Deliveries are confirmed
//! out of order across partitions: the position is the seq before the oldest one not yet
//! confirmed. A delivery that fails (Kafka unreachable beyond `message.timeout.ms`)
//! rewinds the thread to it once everything in flight is settled, so nothing accepted is
//! lost to the topic; duplicates happen only in that at-least-once window. The first time
//! a topic is published to, the position starts at the archive's end: the topic gets the
//! events accepted from then on, not the archive's history.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::{GatewayError, Link, LinkContext, PROBE_EVERY, PUBLISHED_KEY};
use crate::cli::KafkaConfig;
use crate::store::Store;

/// Most messages handed to librdkafka and not yet confirmed.
const MAX_IN_FLIGHT: usize = 10_000;
/// How long one wait lasts (for a delivery report, or for the archive to grow): how late
/// a stop is noticed.
const WAIT: Duration = Duration::from_millis(100);
/// While deliveries are outstanding, the thread polls this often for their reports and
/// for new archive entries.
const POLL: Duration = Duration::from_millis(2);
/// The position is written to the event database at most this often (and at stop).
const SAVE_EVERY: Duration = Duration::from_millis(200);
/// Pause after a failed delivery before producing again from the failed event.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The producer's context: its link state, and delivery reports (seq, outcome) collected
/// during a poll.
struct Context {
    link: LinkContext,
    reports: Mutex<Vec<(u64, Result<(), KafkaError>)>>,
}

impl rdkafka::client::ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.link.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(error, reason);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((seq as u64, outcome));
    }
}

/// The `meta` key of the position for `topic`.
pub fn position_key(topic: &str) -> Vec<u8> {
    format!("{PUBLISHED_KEY}{topic}").into_bytes()
}

/// The stored position for `topic` (`None`: never published to).
pub fn position(store: &Store, topic: &str) -> Result<Option<u64>, crate::store::StoreError> {
    Ok(store
        .meta_get(&position_key(topic))?
        .and_then(|v| v.try_into().ok().map(u64::from_be_bytes)))
}

fn producer(cfg: &KafkaConfig, link: &Arc<Link>) -> Result<BaseProducer<Context>, GatewayError> {
    super::client_config(cfg)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        // The statistics are the consumer's (for the metrics); the producer has no use
        // for them.
        .set("statistics.interval.ms", "0")
        .create_with_context(Context {
            link: LinkContext(Arc::clone(link)),
            reports: Mutex::new(Vec::new()),
        })
        .map_err(|source| GatewayError::Client {
            role: "producer",
            source,
        })
}

/// Create the producer, read (or set) the position, and start the thread.
pub fn start(
    cfg: &KafkaConfig,
    topic: &str,
    store: &Arc<Store>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, GatewayError> {
    let link = Arc::new(Link::new("publisher"));
    let producer = producer(cfg, &link)?;
    let end = store.archive_counters().next_seq.saturating_sub(1);
    let v = store
        .meta_get_or_insert(&position_key(topic), || end.to_be_bytes().to_vec())
        .map_err(GatewayError::Store)?;
    let confirmed = v.try_into().map(u64::from_be_bytes).unwrap_or(end);
    info!(
        "kafka publisher: every accepted event goes to topic {topic}, from archive seq {} on ({} waiting)",
        confirmed + 1,
        end.saturating_sub(confirmed)
    );
    let run = Run {
        cfg: cfg.clone(),
        topic: topic.to_string(),
        store: Arc::clone(store),
        link,
        producer,
        confirmed,
        sent: confirmed,
        saved: confirmed,
        saved_at: Instant::now(),
        in_flight: BTreeSet::new(),
        failed: None,
        probed: Instant::now(),
    };
    std::thread::Builder::new()
        .name("kafka-publisher".into())
        .stack_size(512 * 1024)
        .spawn(move || run.run(&stop))
        .map_err(GatewayError::Thread)
}

struct Run {
    cfg: KafkaConfig,
    topic: String,
    store: Arc<Store>,
    link: Arc<Link>,
    producer: BaseProducer<Context>,
    /// The position: every event up to this seq is confirmed by Kafka.
    confirmed: u64,
    /// The newest seq handed to librdkafka.
    sent: u64,
    /// The position as last written to the event database, and when.
    saved: u64,
    saved_at: Instant,
    in_flight: BTreeSet<u64>,
    /// The oldest seq whose delivery failed, until the thread rewinds to it.
    failed: Option<u64>,
    /// When the link was last probed while down.
    probed: Instant,
}

impl Run {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if self.failed.is_none() {
                self.produce();
            }
            if self.in_flight.is_empty() {
                // Sleep until a commit appends to the archive.
                self.store.wait_for_archive(self.sent, WAIT);
                self.producer.poll(Duration::ZERO);
            } else {
                self.producer.poll(POLL);
            }
            self.reports();
            self.recover(stop);
            self.save(false);
            self.probe();
        }
        // Give what is in flight a moment to be confirmed, then record the position.
        let _ = self.producer.flush(Duration::from_secs(5));
        self.reports();
        self.save(true);
        info!(
            "kafka publisher stopped at archive seq {} ({} events in flight are produced again at the next start)",
            self.confirmed,
            self.in_flight.len()
        );
    }

    /// Hand librdkafka the archive's entries after `sent`, up to [`MAX_IN_FLIGHT`].
    fn produce(&mut self) {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let from = self.sent + 1;
        let mut first = None;
        let (producer, topic) = (&self.producer, self.topic.as_str());
        let (in_flight, sent) = (&mut self.in_flight, &mut self.sent);
        let result = self.store.read_archive(from, |e| {
            first.get_or_insert(e.seq);
            let record = BaseRecord::with_opaque_to(topic, e.seq as usize)
                .key(e.ivorn)
                .payload(e.bytes);
            match producer.send(record) {
                Ok(()) => {
                    in_flight.insert(e.seq);
                    *sent = e.seq;
                    in_flight.len() < MAX_IN_FLIGHT
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => false,
                Err((err, _)) => {
                    // The message can never be produced as it is (larger than
                    // message.max.bytes, say): it is skipped, not retried forever.
                    error!(
                        "kafka publisher: {} (archive seq {}) not produced to {topic}: {err}",
                        e.ivorn, e.seq
                    );
                    *sent = e.seq;
                    true
                }
            }
        });
        match result {
            Err(e) => error!("kafka publisher: cannot read the archive: {e}"),
            Ok(_) => {
                if let Some(f) = first.filter(|&f| f > from) {
                    warn!(
                        "kafka publisher: archive seqs {from} to {} were deleted by retention before Kafka confirmed them; they are not published",
                        f - 1
                    );
                }
            }
        }
        self.update_confirmed();
    }

    /// Take the delivery reports the last poll collected.
    fn reports(&mut self) {
        let reports = std::mem::take(
            &mut *self
                .producer
                .context()
                .reports
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (seq, outcome) in reports {
            self.in_flight.remove(&seq);
            match outcome {
                Ok(()) => {
                    self.link.works();
                    debug!(
                        "kafka publisher: archive seq {seq} confirmed on {}",
                        self.topic
                    );
                }
                Err(e) => {
                    if self.failed.is_none() {
                        warn!(
                            "kafka publisher: archive seq {seq} not delivered to {}: {e}; producing again from it",
                            self.topic
                        );
                    }
                    self.failed = Some(self.failed.map_or(seq, |f| f.min(seq)));
                }
            }
        }
        self.update_confirmed();
    }

    fn update_confirmed(&mut self) {
        let oldest = [self.in_flight.first().copied(), self.failed]
            .into_iter()
            .flatten()
            .min();
        self.confirmed = oldest.map_or(self.sent, |s| s - 1);
    }

    /// After a failed delivery, once nothing is in flight: produce again from the failed
    /// event, with a new producer if librdkafka declared the old one unusable.
    fn recover(&mut self, stop: &AtomicBool) {
        let Some(f) = self.failed else {
            return;
        };
        if !self.in_flight.is_empty() {
            return;
        }
        let until = Instant::now() + RETRY_AFTER;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some((code, why)) = self.producer.client().fatal_error() {
            warn!("kafka publisher: producer failed ({code:?}: {why}); starting a new one");
            match producer(&self.cfg, &self.link) {
                Ok(p) => self.producer = p,
                Err(e) => {
                    error!("kafka publisher: {e}");
                    return;
                }
            }
        }
        self.sent = f - 1;
        self.failed = None;
        self.update_confirmed();
    }

    /// While the link is down and nothing is in flight to show it is up again, ask for
    /// metadata every [`PROBE_EVERY`].
    fn probe(&mut self) {
        if !self.link.is_down() || !self.in_flight.is_empty() || self.probed.elapsed() < PROBE_EVERY
        {
            return;
        }
        self.probed = Instant::now();
        if self
            .producer
            .client()
            .fetch_metadata(None, Duration::from_secs(1))
            .is_ok()
        {
            self.link.works();
        }
    }

    /// Write the position if it moved (at most every [`SAVE_EVERY`] unless `now`).
    fn save(&mut self, now: bool) {
        if self.confirmed == self.saved || (!now && self.saved_at.elapsed() < SAVE_EVERY) {
            return;
        }
        match self
            .store
            .meta_put(&position_key(&self.topic), &self.confirmed.to_be_bytes())
        {
            Ok(()) => {
                self.saved = self.confirmed;
                self.saved_at = Instant::now();
            }
            Err(e) => error!("kafka publisher: cannot record the position: {e}"),
        }
    }
}
