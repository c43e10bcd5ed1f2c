//! The Kafka gateway (cargo feature `kafka`): GCN's notices, or any Kafka topic of
//! VOEvents, in; every event the broker accepts as new, out. This module owns the
//! gateway's start and stop, the librdkafka settings both clients share, and the
//! connection-state log lines; [`consumer`] and [`publisher`] own one thread each.
//!
//! Both clients are librdkafka's plain `BaseConsumer`/`BaseProducer`, each polled by a
//! thread of its own (no async runtime). The consumer is one more event source beside
//! receivers and upstreams: it feeds the dispatcher, and commits a message's offset only
//! once the committer has made its event durable (or the dispatcher found it already
//! seen). The publisher is a reader of the archive with a position kept in the event
//! database. librdkafka retries connections and requests by itself; what it reports per
//! retry goes to the debug log, and [`Link`] logs one line per change of state.

pub mod consumer;
pub mod publisher;
pub mod stats;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use log::{debug, info, warn};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

use crate::cli::{is_secret_setting, KafkaConfig};
use crate::dispatcher::Msg;
use crate::store::{Store, StoreError};
use stats::KafkaStats;

/// `meta` key of the consumer group id created on first use.
pub const GROUP_ID_KEY: &[u8] = b"kafka_group_id";
/// `meta` key prefix of the publisher's position (the last archive seq Kafka confirmed),
/// followed by the topic: a new `--kafka-publish` topic starts from the archive's end.
pub const PUBLISHED_KEY: &str = "kafka_published_seq:";

/// While a link is down, how often its client asks for metadata to notice it is up
/// (a consumer without messages, or a publisher without events, hears of it no other way).
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the gateway could not start.
#[derive(Debug)]
pub enum GatewayError {
    /// librdkafka refused the settings (an unknown key, a bad value, a feature it was
    /// built without).
    Client {
        role: &'static str,
        source: KafkaError,
    },
    /// The subscription was refused (e.g. an invalid regular expression).
    Subscribe {
        topics: Vec<String>,
        source: KafkaError,
    },
    /// The group id or the published position could not be read or kept.
    Store(StoreError),
    /// A thread could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Client { role, source } => {
                write!(f, "cannot create the Kafka {role}: {source}")
            }
            GatewayError::Subscribe { topics, source } => {
                write!(f, "cannot subscribe to Kafka topics {topics:?}: {source}")
            }
            GatewayError::Store(e) => write!(f, "Kafka gateway: {e}"),
            GatewayError::Thread(e) => write!(f, "cannot start a Kafka thread: {e}"),
        }
    }
}

impl std::error::Error for GatewayError {}

/// A client's link to the cluster, as librdkafka reports it: one log line when it goes
/// down (or fails differently), one when it works again, and the per-retry detail at
/// debug level.
pub struct Link {
    role: &'static str,
    /// The state the link is down in ("unreachable", "authentication failing", or
    /// librdkafka's error; `None`: up, or not known to be down). Errors librdkafka reports
    /// per retry map to the same state, so an outage is one line, however long.
    down: Mutex<Option<String>>,
    /// Topic errors already logged (each is logged once).
    topics: Mutex<std::collections::HashSet<String>>,
}

impl Link {
    pub fn new(role: &'static str) -> Link {
        Link {
            role,
            down: Mutex::new(None),
            topics: Mutex::default(),
        }
    }

    /// librdkafka reported a client-wide error (brokers down, transport, authentication;
    /// or a subscribed topic that does not exist, which is no failure of the link).
    pub fn failed(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if is_topic_error(code) {
            let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            if topics.insert(reason.to_string()) {
                warn!("kafka {}: {reason}", self.role);
            } else {
                debug!("kafka {}: {reason}", self.role);
            }
            return;
        }
        let state = match (link_state(code), code) {
            (Some(state), _) => state.to_string(),
            (None, Some(code)) => format!("{code:?}"),
            (None, None) => error.to_string(),
        };
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        // "All brokers down" follows whatever took the last broker down (a failed login,
        // say): no change of state of its own once the link is down.
        let consequence = code == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown);
        if down.as_deref() != Some(state.as_str()) && !(consequence && down.is_some()) {
            warn!(
                "kafka {}: Kafka {state}: {error}: {reason} (librdkafka keeps retrying; logged again only when this changes)",
                self.role
            );
            *down = Some(state);
        } else {
            debug!("kafka {}: {error}: {reason}", self.role);
        }
    }

    /// Something went through: the link works.
    pub fn works(&self) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if down.take().is_some() {
            info!("kafka {}: connected again", self.role);
        }
    }

    /// Whether the link is known to be down.
    pub fn is_down(&self) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// librdkafka's own log lines: connection failures repeat on every retry, so those
    /// (and everything below a warning) go to debug, as do the warnings that a setting
    /// is for the other kind of client (every `--kafka-option` goes to both) and failed
    /// offset commits (a later commit carries a higher offset; the consumer's commit
    /// callback logs them); other warnings and errors are shown.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let retried = matches!(
            fac,
            "FAIL" | "ERROR" | "BROKERFAIL" | "CONNECT" | "SASL" | "CONFWARN" | "COMMITFAIL"
        );
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
                if !retried =>
            {
                warn!("kafka {}: librdkafka {fac}: {message}", self.role)
            }
            _ => debug!("kafka {}: librdkafka {fac}: {message}", self.role),
        }
    }
}

/// An error about one topic (it does not exist, or is not ours to read): logged once per
/// topic, no failure of the link.
pub fn is_topic_error(code: Option<rdkafka::types::RDKafkaErrorCode>) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        code,
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::TopicAuthorizationFailed)
    )
}

/// The state of the link an error means, if it is one librdkafka reports on every retry:
/// the cluster unreachable, or authentication failing.
pub fn link_state(code: Option<rdkafka::types::RDKafkaErrorCode>) -> Option<&'static str> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match code? {
        Code::Authentication
        | Code::SaslAuthenticationFailed
        | Code::ClusterAuthorizationFailed
        | Code::GroupAuthorizationFailed => Some("authentication failing"),
        Code::BrokerTransportFailure
        | Code::AllBrokersDown
        | Code::Resolve
        | Code::BrokerNotAvailable
        | Code::NetworkException
        | Code::CoordinatorNotAvailable => Some("unreachable"),
        _ => None,
    }
}

/// The producer's context (within its own): the link's state.
pub struct LinkContext(pub Arc<Link>);

impl ClientContext for LinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.failed(&error, reason);
    }
}

/// The librdkafka settings both clients start from: `cfg.client` in order (a later
/// value wins), with librdkafka's own logging at its default level.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &cfg.client {
        c.set(k, v);
    }
    c.set_log_level(RDKafkaLogLevel::Info);
    c
}

/// The settings for the log: the secrets replaced by `***`.
pub fn shown(cfg: &KafkaConfig) -> String {
    cfg.client
        .iter()
        .map(|(k, v)| match is_secret_setting(k) {
            true => format!("{k}=***"),
            false => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the consumer needs from the broker.
pub struct Source {
    pub max_event_size: usize,
    pub dispatcher: Sender<Msg>,
    /// The broker archives what it accepts: events are packed for it on the consumer.
    pub archive: bool,
}

/// The running gateway: its threads and their stop flags, and the consumer's figures.
pub struct Gateway {
    consumer: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    publisher: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    stats: Arc<KafkaStats>,
}

impl Gateway {
    /// Create the clients (so a setting librdkafka refuses stops the start-up) and start
    /// their threads.
    pub fn start(
        cfg: &KafkaConfig,
        store: &Arc<Store>,
        source: Source,
    ) -> Result<Gateway, GatewayError> {
        info!("kafka settings: {}", shown(cfg));
        let stats = Arc::new(KafkaStats::new(cfg.heartbeat_topic.is_some()));
        let consumer = match cfg.topics.is_empty() {
            true => None,
            false => {
                let stop = Arc::new(AtomicBool::new(false));
                let h = consumer::start(cfg, store, source, Arc::clone(&stats), Arc::clone(&stop))?;
                Some((stop, h))
            }
        };
        let publisher = match &cfg.publish {
            None => None,
            Some(topic) => {
                let stop = Arc::new(AtomicBool::new(false));
                let h = publisher::start(cfg, topic, store, Arc::clone(&stop))?;
                Some((stop, h))
            }
        };
        Ok(Gateway {
            consumer,
            publisher,
            stats,
        })
    }

    /// The consumer's figures (heartbeat age, assigned topics, lag), for the metrics.
    pub fn stats(&self) -> Arc<KafkaStats> {
        Arc::clone(&self.stats)
    }

    /// Stop consuming (before the dispatcher stops): no new events come in.
    pub fn stop_consuming(&mut self) {
        if let Some((stop, h)) = self.consumer.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
    }

    /// Stop publishing (after the last commit): what Kafka confirmed is recorded.
    pub fn stop_publishing(&mut self) {
        if let Some((stop, h)) = self.publisher.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
    }
}

/// Random hex from the kernel, for a group id.
fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings GCN's own clients use are accepted by the librdkafka this bolide is
    /// built with (OAuth/OIDC needs libcurl and OpenSSL at build time): a consumer is
    /// created without any network traffic.
    #[test]
    fn gcn_oidc_settings_are_accepted() {
        let opts = crate::cli::tests::opts(&[
            "--gcn-client-id=abc",
            "--gcn-domain=test.gcn.nasa.gov",
            "--kafka-group-id=g",
        ]);
        let cfg = opts.kafka_config(Some("s3cret\n".into())).unwrap().unwrap();
        let get = |k: &str| {
            cfg.client
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("bootstrap.servers"), Some("kafka.test.gcn.nasa.gov"));
        assert_eq!(get("sasl.oauthbearer.method"), Some("oidc"));
        assert_eq!(get("sasl.oauthbearer.client.secret"), Some("s3cret"));
        assert_eq!(
            get("sasl.oauthbearer.token.endpoint.url"),
            Some("https://auth.test.gcn.nasa.gov/oauth2/token")
        );
        assert_eq!(cfg.topics, crate::cli::GCN_TOPICS.to_vec());
        assert!(!format!("{cfg:?}").contains("s3cret"));
        assert!(!shown(&cfg).contains("s3cret"));
        // Nothing leaves the machine: no broker to look up, and the token endpoint (which
        // librdkafka asks at once) on a closed loopback port. The OIDC method itself is
        // what a librdkafka built without libcurl refuses.
        let c: rdkafka::consumer::BaseConsumer = client_config(&cfg)
            .set("group.id", "g")
            .set("bootstrap.servers", "")
            .set(
                "sasl.oauthbearer.token.endpoint.url",
                "https://127.0.0.1:1/oauth2/token",
            )
            .create()
            .expect("librdkafka accepts GCN's OIDC settings");
        drop(c);
    }
}
