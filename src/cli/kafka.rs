//! The Kafka gateway's options: GCN's one-option set-up, topics, group, start
//! position, librdkafka settings and publishing, checked into a [`KafkaConfig`].

use std::fmt;
use std::time::Duration;

use super::{parse_duration_secs, ConfigError, Options};

/// The environment variable that may hold the GCN client secret.
pub const GCN_SECRET_ENV: &str = "BOLIDE_GCN_CLIENT_SECRET";

/// The topics GCN's VOEvents are published on (classic notices, and SVOM's).
pub const GCN_TOPICS: [&str; 2] = [
    r"^gcn\.classic\.voevent\..*",
    r"^gcn\.notices\.svom\.voevent\..*",
];

/// How long the heartbeat topic may stay silent before a warning, by default.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a consumer group without committed offsets starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaStart {
    Earliest,
    Latest,
}

impl KafkaStart {
    /// librdkafka's `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaStart::Earliest => "earliest",
            KafkaStart::Latest => "latest",
        }
    }
}

/// The Kafka gateway's settings, checked.
#[derive(Clone)]
pub struct KafkaConfig {
    /// librdkafka settings for both clients: bootstrap servers, GCN's OIDC settings,
    /// then every --kafka-option (a later one wins).
    pub client: Vec<(String, String)>,
    /// Topics (or ^patterns) to consume; empty: no consumer.
    pub topics: Vec<String>,
    pub group_id: Option<String>,
    pub start: KafkaStart,
    pub heartbeat_topic: Option<String>,
    /// How long the heartbeat topic may stay silent before a warning.
    pub heartbeat_timeout: Duration,
    /// Topic to publish accepted events to.
    pub publish: Option<String>,
}

/// Whether a librdkafka setting holds a credential (shown as `***`).
pub fn is_secret_setting(key: &str) -> bool {
    key.contains("secret") || key.contains("password") || key.ends_with(".key.pem")
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client: Vec<String> = self
            .client
            .iter()
            .map(|(k, v)| match is_secret_setting(k) {
                true => format!("{k}=***"),
                false => format!("{k}={v}"),
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("client", &client)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("start", &self.start)
            .field("heartbeat_topic", &self.heartbeat_topic)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("publish", &self.publish)
            .finish()
    }
}

impl Options {
    /// The first Kafka option given, if any.
    fn first_kafka_flag(&self) -> Option<&'static str> {
        [
            ("--kafka-bootstrap", self.kafka_bootstrap.is_some()),
            ("--kafka-topic", !self.kafka_topic.is_empty()),
            ("--kafka-group-id", self.kafka_group_id.is_some()),
            ("--kafka-start", self.kafka_start.is_some()),
            ("--kafka-option", !self.kafka_option.is_empty()),
            (
                "--kafka-heartbeat-topic",
                self.kafka_heartbeat_topic.is_some(),
            ),
            (
                "--kafka-heartbeat-timeout",
                self.kafka_heartbeat_timeout.is_some(),
            ),
            ("--kafka-publish", self.kafka_publish.is_some()),
            ("--gcn-client-id", self.gcn_client_id.is_some()),
            (
                "--gcn-client-secret-file",
                self.gcn_client_secret_file.is_some(),
            ),
            ("--gcn-domain", self.gcn_domain.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }

    /// The Kafka gateway's settings (`None` if no Kafka option is given); `secret_env`
    /// is the value of [`GCN_SECRET_ENV`].
    pub fn kafka_config(
        &self,
        secret_env: Option<String>,
    ) -> Result<Option<KafkaConfig>, ConfigError> {
        let Some(first) = self.first_kafka_flag() else {
            return Ok(None);
        };
        if !cfg!(feature = "kafka") {
            return Err(ConfigError::NoKafka { flag: first });
        }
        let bad = |flag, why: &str| ConfigError::Kafka {
            flag,
            why: why.to_string(),
        };
        let mut client = Vec::new();
        let mut topics = self.kafka_topic.clone();
        match &self.gcn_client_id {
            Some(id) => {
                let secret = match (&self.gcn_client_secret_file, secret_env) {
                    (Some(p), _) => std::fs::read_to_string(p)
                        .map_err(|e| ConfigError::Kafka {
                            flag: "--gcn-client-secret-file",
                            why: format!("{}: {e}", p.display()),
                        })?
                        .trim()
                        .to_string(),
                    (None, Some(s)) => s.trim().to_string(),
                    (None, None) => {
                        return Err(ConfigError::Kafka {
                            flag: "--gcn-client-id",
                            why: format!("the client secret is missing: give --gcn-client-secret-file FILE or set {GCN_SECRET_ENV}"),
                        })
                    }
                };
                if secret.is_empty() {
                    return Err(bad(
                        "--gcn-client-secret-file",
                        "the client secret is empty",
                    ));
                }
                let domain = self.gcn_domain.as_deref().unwrap_or("gcn.nasa.gov");
                if domain.is_empty() || domain.contains(|c: char| c == '/' || c.is_whitespace()) {
                    return Err(bad("--gcn-domain", "not a domain name (e.g. gcn.nasa.gov)"));
                }
                for (k, v) in [
                    ("bootstrap.servers", format!("kafka.{domain}")),
                    ("security.protocol", "sasl_ssl".into()),
                    ("sasl.mechanisms", "OAUTHBEARER".into()),
                    ("sasl.oauthbearer.method", "oidc".into()),
                    ("sasl.oauthbearer.client.id", id.clone()),
                    ("sasl.oauthbearer.client.secret", secret),
                    (
                        "sasl.oauthbearer.token.endpoint.url",
                        format!("https://auth.{domain}/oauth2/token"),
                    ),
                ] {
                    client.push((k.to_string(), v));
                }
                if topics.is_empty() {
                    topics = GCN_TOPICS.iter().map(|t| t.to_string()).collect();
                }
            }
            None if self.gcn_client_secret_file.is_some() || self.gcn_domain.is_some() => {
                return Err(bad(
                    "--gcn-client-secret-file / --gcn-domain",
                    "only with --gcn-client-id",
                ))
            }
            None => {}
        }
        match &self.kafka_bootstrap {
            Some(b) if b.trim().is_empty() => {
                return Err(bad("--kafka-bootstrap", "give HOST:PORT[,HOST:PORT...]"))
            }
            Some(b) => client.push(("bootstrap.servers".into(), b.trim().to_string())),
            None if self.gcn_client_id.is_none() => {
                return Err(bad(
                    first,
                    "give --kafka-bootstrap HOST:PORT (or --gcn-client-id for GCN)",
                ))
            }
            None => {}
        }
        for o in &self.kafka_option {
            match o.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    client.push((k.trim().to_string(), v.to_string()))
                }
                _ => return Err(bad("--kafka-option", "write KEY=VALUE")),
            }
        }
        if topics.iter().any(|t| t.trim().is_empty()) {
            return Err(bad("--kafka-topic", "a topic name is empty"));
        }
        if topics.is_empty() && self.kafka_publish.is_none() {
            return Err(bad(
                first,
                "nothing to do with Kafka: give --kafka-topic TOPIC to consume or --kafka-publish TOPIC",
            ));
        }
        if self.kafka_heartbeat_topic.is_some() && topics.is_empty() {
            return Err(bad(
                "--kafka-heartbeat-topic",
                "only with topics to consume",
            ));
        }
        let heartbeat_timeout = match self.kafka_heartbeat_timeout.as_deref() {
            None => DEFAULT_HEARTBEAT_TIMEOUT,
            Some(_) if self.kafka_heartbeat_topic.is_none() => {
                return Err(bad(
                    "--kafka-heartbeat-timeout",
                    "only with --kafka-heartbeat-topic",
                ))
            }
            Some(v) => match parse_duration_secs(v).filter(|&s| s > 0) {
                Some(s) => Duration::from_secs(s),
                None => {
                    return Err(bad(
                        "--kafka-heartbeat-timeout",
                        "give a duration of at least 1 s (60, 90s, 5m)",
                    ))
                }
            },
        };
        let start = match self.kafka_start.as_deref() {
            None | Some("latest") => KafkaStart::Latest,
            Some("earliest") => KafkaStart::Earliest,
            Some(_) => return Err(bad("--kafka-start", "earliest or latest")),
        };
        if self
            .kafka_publish
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.starts_with('^'))
        {
            return Err(bad("--kafka-publish", "give a topic name"));
        }
        Ok(Some(KafkaConfig {
            client,
            topics,
            group_id: self.kafka_group_id.clone(),
            start,
            heartbeat_topic: self.kafka_heartbeat_topic.clone(),
            heartbeat_timeout,
            publish: self.kafka_publish.clone(),
        }))
    }
}
