//! The `bolide` command line: Comet 3.1.0's options plus bolide's own, read by
//! [`crate::args`] with argh, then checked and turned into a [`Config`].

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::archive::ArchiveConfig;
use crate::authorconfig::{AuthorConfig, AuthorConfigError};
use crate::filters::{check_xpath, InvalidFilter};
use crate::handlers::HandlerConfig;
use crate::ivoid;
use crate::ratelimit::Rate;
use crate::siteconfig::{SiteConfig, SiteConfigError};
use crate::whitelist::{NetworkError, Whitelist};

mod kafka;
pub use kafka::{is_secret_setting, KafkaConfig, KafkaStart, GCN_SECRET_ENV, GCN_TOPICS};

/// bolide: a VOEvent broker (VOEvent Transport Protocol), command-line compatible with Comet.
#[derive(FromArgs, Debug, Default)]
pub struct Options {
    /// accept events from authors on --receive-port
    #[argh(switch, short = 'r')]
    pub receive: bool,

    /// relay events to subscribers on --broadcast-port
    #[argh(switch, short = 'b')]
    pub broadcast: bool,

    /// this broker's IVOA identifier, e.g. ivo://example.org/broker (required with -r or -b)
    #[argh(option)]
    pub local_ivo: Option<String>,

    /// directory of the event database (default: $XDG_DATA_HOME/bolide/eventdb, else
    /// ~/.local/share/bolide/eventdb); created if missing
    #[argh(option)]
    pub eventdb: Option<PathBuf>,

    /// TCP port for authors (default 8098; 0 picks a free port and logs it)
    #[argh(option, default = "8098")]
    pub receive_port: u16,

    /// TCP port for subscribers (default 8099; 0 picks a free port and logs it)
    #[argh(option, default = "8099")]
    pub broadcast_port: u16,

    /// seconds between test events sent to subscribers (default 3600; 0 disables)
    #[argh(option, default = "3600")]
    pub broadcast_test_interval: u64,

    /// network allowed to submit events (CIDR, address, or address/netmask; repeatable;
    /// default: everything, IPv4 and IPv6)
    #[argh(option)]
    pub author_whitelist: Vec<String>,

    /// network allowed to subscribe (same forms; repeatable; default: everything)
    #[argh(option)]
    pub subscriber_whitelist: Vec<String>,

    /// file of the IVORN prefixes authors may publish under, by network, one
    /// "NETWORK PREFIX [PREFIX...]" per line; re-read on SIGHUP (default: no restriction)
    #[argh(option)]
    pub author_config: Option<PathBuf>,

    /// with --author-config: refuse events from authors whose address no rule covers
    /// (default: the whitelist alone decides for them)
    #[argh(switch)]
    pub author_config_strict: bool,

    /// most events accepted from one author address, as N/SECONDS: a burst of N, then N
    /// every SECONDS (default: no limit)
    #[argh(option)]
    pub author_rate: Option<String>,

    /// more logging (-v: debug, -vv: trace)
    #[argh(switch, short = 'v')]
    pub verbose: u8,

    /// less logging (-q: warnings and errors only, -qq: errors only)
    #[argh(switch, short = 'q')]
    pub quiet: u8,

    /// serve the operator's view over HTTP on ADDR:PORT (e.g. 127.0.0.1:8080):
    /// /metrics for Prometheus, /status and /healthz, a status page at /, and the
    /// archive under /events (default: off)
    #[argh(option)]
    pub http: Option<String>,

    /// network allowed to use --http (same forms as --author-whitelist; repeatable;
    /// default: the loopback networks only)
    #[argh(option)]
    pub http_whitelist: Vec<String>,

    /// seconds between one-line summaries at info level (connections, events accepted,
    /// duplicates and rejected, copies sent, drops); default 300, 0 disables
    #[argh(option, default = "300")]
    pub stats_interval: u64,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    /// read options from FILE, one per line as on the command line (`--opt=value` or
    /// `--opt value`, the value running to the end of the line, spaces included; `#`
    /// starts a comment line); options after it on the command line override it
    #[argh(option)]
    pub options_file: Option<PathBuf>,

    /// subscribe to the broker at HOST or HOST:PORT (default port 8099; an IPv6 literal
    /// goes in brackets, as in `[2001:db8::1]:8099`); repeatable
    #[argh(option)]
    pub remote: Vec<String>,

    /// alias of --remote
    #[argh(option)]
    pub subscribe: Vec<String>,

    /// XPath expression sent to every --remote broker: only matching events are requested
    /// (repeatable; an event matching any of them is sent)
    #[argh(option)]
    pub filter: Vec<String>,

    /// most XPath filters installed per subscriber; extra ones are refused (default 32)
    #[argh(option, default = "32")]
    pub max_filters: usize,

    /// longest XPath filter accepted from a subscriber, in bytes (default 4096)
    #[argh(option, default = "4096")]
    pub max_filter_length: usize,

    /// file of filters imposed on subscribers by network, one "NETWORK XPATH" per line;
    /// re-read on SIGHUP
    #[argh(option)]
    pub subscriber_config: Option<PathBuf>,

    /// print every accepted event to standard output
    #[argh(switch)]
    pub print_event: bool,

    /// save every accepted event to a file in --save-event-directory (named after its
    /// ivorn, as Comet does; never overwriting)
    #[argh(switch)]
    pub save_event: bool,

    /// directory for --save-event (default: the working directory at start-up; created
    /// if missing)
    #[argh(option)]
    pub save_event_directory: Option<PathBuf>,

    /// executable run for every accepted event, with the event on its standard input
    /// (repeatable; no arguments, no shell)
    #[argh(option)]
    pub cmd: Vec<PathBuf>,

    /// seconds a --cmd child may run before it is killed (default 60)
    #[argh(option, default = "60")]
    pub cmd_timeout: u64,

    /// most --cmd children running at once; further events queue (default 4)
    #[argh(option, default = "4")]
    pub cmd_concurrency: usize,

    /// seconds without any message from a --remote broker before reconnecting (default 120)
    #[argh(option, default = "120")]
    pub remote_timeout: u64,

    /// largest event accepted, in bytes (default 1048576)
    #[argh(option, default = "1048576")]
    pub max_event_size: usize,

    /// commit the event database without fsync: faster, but acknowledged events can be
    /// forgotten after an OS crash or power loss (never after a process crash)
    #[argh(switch)]
    pub no_sync: bool,

    /// address to listen on (default "::", dual-stack: IPv6 and IPv4)
    #[argh(option)]
    pub bind: Option<IpAddr>,

    /// seconds an event is remembered for duplicate detection (default 2592000 = 30 days)
    #[argh(option, default = "2_592_000")]
    pub eventdb_max_age: u64,

    /// seconds between prunes of expired records (default 21600 = 6 hours)
    #[argh(option, default = "21_600")]
    pub eventdb_prune_interval: u64,

    /// maximum size of the event database, archive included: a number of bytes with an
    /// optional K, M, G or T suffix (default 4G: 30 days of a busy network's archive
    /// several times over)
    #[argh(option, default = "String::from(\"4G\")")]
    pub eventdb_map_size: String,

    /// keep only the dedup records, not the events themselves (no archive)
    #[argh(switch)]
    pub no_archive: bool,

    /// how long archived events are kept: seconds, or a number with s, m, h or d
    /// (default: --eventdb-max-age, 30 days)
    #[argh(option)]
    pub archive_max_age: Option<String>,

    /// most bytes of events the archive keeps, oldest deleted first: a number with an
    /// optional K, M, G or T suffix (default: as much as --eventdb-map-size holds)
    #[argh(option)]
    pub archive_max_size: Option<String>,

    /// seconds an author connection may take to submit its event (default 20)
    #[argh(option, default = "20")]
    pub author_timeout: u64,

    /// seconds between iamalive messages to each subscriber (default 60)
    #[argh(option, default = "60")]
    pub iamalive_interval: u64,

    /// drop a subscriber with more than this many events unacknowledged for a whole
    /// iamalive interval (default 10)
    #[argh(option, default = "10")]
    pub max_unacked: u64,

    /// events queued per subscriber before it is dropped as too slow (default 256)
    #[argh(option, default = "256")]
    pub subscriber_queue: usize,

    /// most connections (authors and subscribers together) open at once (default 4096,
    /// lowered to fit the process's descriptor limit); more are closed at once
    #[argh(option, default = "4096")]
    pub max_connections: usize,

    /// most author connections open at once from one address (default 16)
    #[argh(option, default = "16")]
    pub max_authors_per_address: usize,

    /// most subscriber connections open at once from one address (default 64)
    #[argh(option, default = "64")]
    pub max_subscribers_per_address: usize,

    /// seconds a subscriber or upstream may take to finish a message it has started
    /// sending (default 30); a peer that sends half a frame and stops is dropped
    #[argh(option, default = "30")]
    pub frame_timeout: u64,

    /// seconds a write to a subscriber may block before it is dropped (default 30)
    #[argh(option, default = "30")]
    pub write_timeout: u64,

    /// oldest events a catch-up replays: seconds, or a number with s, m, h or d
    /// (default 24h)
    #[argh(option)]
    pub replay_max_age: Option<String>,

    /// most events a catch-up replays (default 10000)
    #[argh(option, default = "crate::replay::DEFAULT_MAX_EVENTS")]
    pub replay_max_events: u64,

    /// catch-ups that read the archive at once; the others wait their turn (default:
    /// half the CPUs, at least 1)
    #[argh(option)]
    pub max_replays: Option<usize>,

    /// network (whitelist syntax) whose subscribers get, on reconnecting, the events
    /// accepted since the last one their address acknowledged (repeatable)
    #[argh(option)]
    pub resume_subscribers: Vec<String>,

    /// bootstrap servers of a Kafka cluster (HOST:PORT,...) to consume --kafka-topic from and to
    /// --kafka-publish to (needs a bolide built with the kafka feature)
    #[argh(option)]
    pub kafka_bootstrap: Option<String>,

    /// topic to relay events from, on Kafka (repeatable; a leading ^ makes it a regular
    /// expression, as in librdkafka)
    #[argh(option)]
    pub kafka_topic: Vec<String>,

    /// consumer group on Kafka (default: an id created on first use and kept in the event
    /// database, so a restart resumes where it stopped)
    #[argh(option)]
    pub kafka_group_id: Option<String>,

    /// where a consumer group with no committed offsets starts: earliest or latest
    /// (default latest)
    #[argh(option)]
    pub kafka_start: Option<String>,

    /// librdkafka setting KEY=VALUE for the consumer and the producer (repeatable; TLS,
    /// SASL and the like)
    #[argh(option)]
    pub kafka_option: Vec<String>,

    /// topic whose Kafka messages are heartbeats (for GCN, gcn.heartbeat): warn when none
    /// came for --kafka-heartbeat-timeout
    #[argh(option)]
    pub kafka_heartbeat_topic: Option<String>,

    /// how long the heartbeat topic may stay silent before a warning: seconds, or 90s,
    /// 5m (default 60)
    #[argh(option)]
    pub kafka_heartbeat_timeout: Option<String>,

    /// topic on Kafka to publish every event accepted as new to (key: the ivorn; value: the
    /// exact bytes)
    #[argh(option)]
    pub kafka_publish: Option<String>,

    /// GCN Kafka client id (from gcn.nasa.gov): consume GCN's VOEvent notices; the
    /// secret comes from --gcn-client-secret-file or $BOLIDE_GCN_CLIENT_SECRET
    #[argh(option)]
    pub gcn_client_id: Option<String>,

    /// file holding the GCN client secret (never give the secret on the command line)
    #[argh(option)]
    pub gcn_client_secret_file: Option<PathBuf>,

    /// GCN's domain: gcn.nasa.gov (default) or test.gcn.nasa.gov
    #[argh(option)]
    pub gcn_domain: Option<String>,
}

/// Parse a duration in seconds: `90`, `90s`, `15m`, `6h`, `7d`.
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num.parse().ok()?;
    n.checked_mul(unit)
}

/// Parse `123`, `64K`, `16M`, `2G`, `1T` (powers of 1024) into bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 10),
        (i, 'M' | 'm') => (&s[..i], 20),
        (i, 'G' | 'g') => (&s[..i], 30),
        (i, 'T' | 't') => (&s[..i], 40),
        _ => (s, 0),
    };
    let n: usize = num.parse().ok()?;
    n.checked_mul(1usize << shift)
}

/// A command line that parses but cannot be run.
#[derive(Debug)]
pub enum ConfigError {
    /// Neither role requested.
    NoRole,
    /// `--local-ivo` missing while receiving or broadcasting (and the options file the
    /// other options came from, if any: where to set it).
    NoLocalIvo { options_file: Option<PathBuf> },
    /// `--local-ivo` invalid.
    LocalIvo(ivoid::IvoidError),
    /// A whitelist entry.
    Network {
        flag: &'static str,
        err: NetworkError,
    },
    /// A numeric option out of range.
    Range {
        flag: &'static str,
        why: &'static str,
    },
    /// No directory for the event database could be derived.
    NoDataDir,
    /// A `--remote` that is not `host[:port]`.
    Remote { input: String, why: &'static str },
    /// A `--filter` that is not valid XPath 1.0.
    Filter { expr: String, why: InvalidFilter },
    /// A `--cmd` that cannot be run.
    Cmd { path: PathBuf, why: String },
    /// No usable directory for `--save-event`.
    SaveDir(String),
    /// `--subscriber-config` cannot be read or parsed.
    SiteConfig(SiteConfigError),
    /// `--author-config` cannot be read or parsed.
    AuthorConfig(AuthorConfigError),
    /// `--author-rate` is not `N/SECONDS`.
    AuthorRate(String),
    /// A Kafka option, in a bolide built without the `kafka` feature.
    NoKafka { flag: &'static str },
    /// The Kafka options do not add up.
    Kafka { flag: &'static str, why: String },
    /// `--http` or `--http-whitelist`.
    Http(crate::http::HttpOptionError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoRole => write!(
                f,
                "nothing to do: give --receive (-r) to accept events from authors, --broadcast (-b) to serve subscribers, and/or --remote HOST[:PORT] to subscribe to a broker (or --kafka-topic to consume from Kafka)"
            ),
            ConfigError::Remote { input, why } => write!(
                f,
                "--remote '{input}': {why} (write host, host:port, or [IPv6]:port)"
            ),
            ConfigError::Cmd { path, why } => write!(
                f,
                "--cmd {}: {why} (give the path of an executable file; it gets the event on standard input)",
                path.display()
            ),
            ConfigError::SiteConfig(e) => write!(f, "--subscriber-config: {e}"),
            ConfigError::AuthorConfig(e) => write!(f, "--author-config: {e}"),
            ConfigError::AuthorRate(input) => write!(
                f,
                "--author-rate '{input}': expected N/SECONDS, two whole numbers of at least 1 (e.g. 10/60: a burst of 10, then 10 a minute)"
            ),
            ConfigError::NoKafka { flag } => write!(
                f,
                "{flag}: this bolide was built without Kafka support: rebuild with --features kafka"
            ),
            ConfigError::Kafka { flag, why } => write!(f, "{flag}: {why}"),
            ConfigError::Http(e) => write!(f, "{e}"),
            ConfigError::SaveDir(why) => {
                write!(f, "--save-event: {why}; give --save-event-directory DIR")
            }
            ConfigError::Filter { expr, why } => {
                write!(f, "--filter '{expr}' is not valid XPath 1.0: {why}")
            }
            ConfigError::NoLocalIvo { options_file } => {
                write!(
                    f,
                    "--local-ivo is required with --receive or --broadcast, e.g. --local-ivo=ivo://example.org/broker"
                )?;
                match options_file {
                    Some(p) => write!(f, "; set it in {}", p.display()),
                    None => Ok(()),
                }
            }
            ConfigError::LocalIvo(e) => write!(f, "--local-ivo: {e}"),
            ConfigError::Network { flag, err } => write!(f, "{flag}: {err}"),
            ConfigError::Range { flag, why } => write!(f, "{flag}: {why}"),
            ConfigError::NoDataDir => write!(
                f,
                "no default event database directory (neither XDG_DATA_HOME nor HOME is set): give --eventdb DIR"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything the broker needs to run, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub receive: bool,
    pub broadcast: bool,
    /// Required when receiving or broadcasting; optional for a plain subscriber.
    pub local_ivo: Option<String>,
    pub eventdb: PathBuf,
    pub bind: IpAddr,
    pub receive_port: u16,
    pub broadcast_port: u16,
    pub test_interval: Option<Duration>,
    pub author_whitelist: Whitelist,
    pub subscriber_whitelist: Whitelist,
    pub max_event_size: usize,
    pub no_sync: bool,
    pub max_age_secs: u64,
    /// What the archive keeps (`None`: `--no-archive`).
    pub archive: Option<ArchiveConfig>,
    pub prune_interval: Duration,
    pub map_size: usize,
    pub author_timeout: Duration,
    pub iamalive_interval: Duration,
    pub max_unacked: u64,
    pub subscriber_queue: usize,
    pub write_timeout: Duration,
    /// `--replay-max-age` (seconds) and `--replay-max-events`.
    pub replay_max_age_secs: u64,
    pub replay_max_events: u64,
    /// `--max-replays`.
    pub max_replays: usize,
    /// `--resume-subscribers` (`None`: not given).
    pub resume_subscribers: Option<Whitelist>,
    pub remotes: Vec<Remote>,
    pub filters: Vec<String>,
    pub remote_timeout: Duration,
    pub handlers: HandlerConfig,
    pub max_filters: usize,
    pub max_filter_length: usize,
    pub max_connections: usize,
    pub max_authors_per_address: usize,
    pub max_subscribers_per_address: usize,
    pub frame_timeout: Duration,
    pub stats_interval: Option<Duration>,
    /// `--subscriber-config`: the file and its rules as read at start-up.
    pub site_config: Option<(PathBuf, SiteConfig)>,
    /// `--author-config`: the file and its rules as read at start-up.
    pub author_config: Option<(PathBuf, AuthorConfig)>,
    /// `--author-config-strict`.
    pub author_config_strict: bool,
    /// `--author-rate` (`None`: no limit).
    pub author_rate: Option<Rate>,
    /// The Kafka gateway (`None`: no Kafka option given).
    pub kafka: Option<KafkaConfig>,
    /// `--http` (`None`: no HTTP view).
    pub http: Option<crate::http::HttpConfig>,
}

/// A broker to subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parse `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal (port 8099).
pub fn parse_remote(s: &str) -> Result<Remote, ConfigError> {
    let err = |why| ConfigError::Remote {
        input: s.to_string(),
        why,
    };
    let t = s.trim();
    let t = t.strip_prefix("tcp:").unwrap_or(t);
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or(err("unclosed ["))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(err("expected :port after ]"))?),
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(err("not an IPv6 address inside [ ]"));
        }
        (h, port)
    } else if t.parse::<std::net::Ipv6Addr>().is_ok() {
        (t, None)
    } else {
        match t.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (t, None),
        }
    };
    if host.is_empty() {
        return Err(err("empty host"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err(err("not a host name"));
    }
    let port = match port {
        None => 8099,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or(err("bad port"))?,
    };
    Ok(Remote {
        host: host.to_string(),
        port,
    })
}

/// An existing regular file with an execute bit.
fn check_executable(p: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.permissions().mode() & 0o111 == 0 {
        return Err("not executable".into());
    }
    Ok(())
}

/// The default event database directory for this user.
pub fn default_eventdb() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?)
            .join(".local")
            .join("share"),
    };
    Some(base.join("bolide").join("eventdb"))
}

fn positive(v: u64, flag: &'static str) -> Result<Duration, ConfigError> {
    if v == 0 {
        Err(ConfigError::Range {
            flag,
            why: "must be at least 1 second",
        })
    } else {
        Ok(Duration::from_secs(v))
    }
}

impl Options {
    /// Check the options and build a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let remotes = self
            .remote
            .iter()
            .chain(&self.subscribe)
            .map(|r| parse_remote(r))
            .collect::<Result<Vec<_>, _>>()?;
        let kafka = self.kafka_config(std::env::var(GCN_SECRET_ENV).ok())?;
        let consuming = kafka.as_ref().is_some_and(|k| !k.topics.is_empty());
        if !self.receive && !self.broadcast && remotes.is_empty() && !consuming {
            return Err(ConfigError::NoRole);
        }
        for f in &self.filter {
            check_xpath(f).map_err(|why| ConfigError::Filter {
                expr: f.clone(),
                why,
            })?;
        }
        // A plain subscriber (only --remote) needs no IVOID of its own.
        let local_ivo = match self.local_ivo {
            Some(l) => {
                ivoid::check_local_ivo(&l).map_err(ConfigError::LocalIvo)?;
                Some(l)
            }
            None if self.receive || self.broadcast => {
                return Err(ConfigError::NoLocalIvo {
                    options_file: self.options_file,
                })
            }
            None => None,
        };
        let author_whitelist =
            Whitelist::parse(&self.author_whitelist).map_err(|err| ConfigError::Network {
                flag: "--author-whitelist",
                err,
            })?;
        let subscriber_whitelist =
            Whitelist::parse(&self.subscriber_whitelist).map_err(|err| ConfigError::Network {
                flag: "--subscriber-whitelist",
                err,
            })?;
        if self.max_event_size == 0 || self.max_event_size > u32::MAX as usize {
            return Err(ConfigError::Range {
                flag: "--max-event-size",
                why: "must be between 1 and 4294967295 bytes",
            });
        }
        let archive = if self.no_archive {
            None
        } else {
            let max_age_secs = match &self.archive_max_age {
                None => self.eventdb_max_age,
                Some(a) => parse_duration_secs(a).filter(|&s| s > 0).ok_or(ConfigError::Range {
                    flag: "--archive-max-age",
                    why: "must be a positive number of seconds, or a number with s, m, h or d (e.g. 30d)",
                })?,
            };
            let max_bytes = match &self.archive_max_size {
                None => None,
                Some(s) => Some(parse_size(s).filter(|&n| n > 0).ok_or(ConfigError::Range {
                    flag: "--archive-max-size",
                    why: "must be a positive size, e.g. 500M or 2G",
                })? as u64),
            };
            Some(ArchiveConfig {
                max_age_secs,
                max_bytes,
            })
        };
        let map_size = parse_size(&self.eventdb_map_size)
            .filter(|&n| (32 << 10..=1 << 44).contains(&n))
            .ok_or(ConfigError::Range {
                flag: "--eventdb-map-size",
                why: "must be a size between 32K and 16T, e.g. 64M or 2G",
            })?;
        if self.max_connections == 0
            || self.max_authors_per_address == 0
            || self.max_subscribers_per_address == 0
        {
            return Err(ConfigError::Range {
                flag: "--max-connections / --max-*-per-address",
                why: "must be at least 1",
            });
        }
        if self.subscriber_queue == 0 {
            return Err(ConfigError::Range {
                flag: "--subscriber-queue",
                why: "must be at least 1",
            });
        }
        for c in &self.cmd {
            check_executable(c).map_err(|why| ConfigError::Cmd {
                path: c.clone(),
                why,
            })?;
        }
        if self.cmd_concurrency == 0 {
            return Err(ConfigError::Range {
                flag: "--cmd-concurrency",
                why: "must be at least 1",
            });
        }
        let save_dir = match (self.save_event, self.save_event_directory) {
            (true, Some(d)) => Some(d),
            (true, None) => Some(
                std::env::current_dir()
                    .map_err(|e| ConfigError::SaveDir(format!("no working directory: {e}")))?,
            ),
            (false, _) => None,
        };
        let handlers = HandlerConfig {
            print_event: self.print_event,
            save_dir,
            cmds: self.cmd,
            cmd_timeout: positive(self.cmd_timeout, "--cmd-timeout")?,
            cmd_concurrency: self.cmd_concurrency,
        };
        let site_config = match self.subscriber_config {
            Some(p) => {
                let c = SiteConfig::load(&p).map_err(ConfigError::SiteConfig)?;
                Some((p, c))
            }
            None => None,
        };
        let author_config = match self.author_config {
            Some(p) => {
                let c = AuthorConfig::load(&p).map_err(ConfigError::AuthorConfig)?;
                Some((p, c))
            }
            None if self.author_config_strict => {
                return Err(ConfigError::Range {
                    flag: "--author-config-strict",
                    why: "needs --author-config (the rules that say who may publish)",
                })
            }
            None => None,
        };
        let author_rate = match self.author_rate {
            Some(r) => Some(Rate::parse(&r).ok_or(ConfigError::AuthorRate(r))?),
            None => None,
        };
        let http = crate::http::config(self.http.as_deref(), &self.http_whitelist)
            .map_err(ConfigError::Http)?;
        let eventdb = match self.eventdb {
            Some(p) => p,
            None => default_eventdb().ok_or(ConfigError::NoDataDir)?,
        };
        Ok(Config {
            receive: self.receive,
            broadcast: self.broadcast,
            local_ivo,
            eventdb,
            bind: self
                .bind
                .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
            receive_port: self.receive_port,
            broadcast_port: self.broadcast_port,
            test_interval: (self.broadcast_test_interval > 0)
                .then(|| Duration::from_secs(self.broadcast_test_interval)),
            author_whitelist,
            subscriber_whitelist,
            max_event_size: self.max_event_size,
            no_sync: self.no_sync,
            max_age_secs: positive(self.eventdb_max_age, "--eventdb-max-age")?.as_secs(),
            archive,
            prune_interval: positive(self.eventdb_prune_interval, "--eventdb-prune-interval")?,
            map_size,
            author_timeout: positive(self.author_timeout, "--author-timeout")?,
            iamalive_interval: positive(self.iamalive_interval, "--iamalive-interval")?,
            max_unacked: self.max_unacked,
            subscriber_queue: self.subscriber_queue,
            write_timeout: positive(self.write_timeout, "--write-timeout")?,
            replay_max_age_secs: match &self.replay_max_age {
                None => crate::replay::DEFAULT_MAX_AGE_SECS,
                Some(a) => parse_duration_secs(a).ok_or(ConfigError::Range {
                    flag: "--replay-max-age",
                    why: "must be a number of seconds, or a number with s, m, h or d (e.g. 24h)",
                })?,
            },
            replay_max_events: self.replay_max_events,
            max_replays: match self.max_replays {
                None => crate::replay::ReplaySlots::default_limit(),
                Some(0) => {
                    return Err(ConfigError::Range {
                        flag: "--max-replays",
                        why: "must be at least 1",
                    })
                }
                Some(n) => n,
            },
            resume_subscribers: match self.resume_subscribers.is_empty() {
                true => None,
                false => Some(Whitelist::parse(&self.resume_subscribers).map_err(|err| {
                    ConfigError::Network {
                        flag: "--resume-subscribers",
                        err,
                    }
                })?),
            },
            remotes,
            filters: self.filter,
            remote_timeout: positive(self.remote_timeout, "--remote-timeout")?,
            handlers,
            max_filters: self.max_filters,
            max_filter_length: self.max_filter_length,
            max_connections: self.max_connections,
            max_authors_per_address: self.max_authors_per_address,
            max_subscribers_per_address: self.max_subscribers_per_address,
            frame_timeout: positive(self.frame_timeout, "--frame-timeout")?,
            stats_interval: (self.stats_interval > 0)
                .then(|| Duration::from_secs(self.stats_interval)),
            site_config,
            author_config,
            author_config_strict: self.author_config_strict,
            author_rate,
            kafka,
            http,
        })
    }

    /// The log level implied by -v/-q (info by default).
    pub fn log_level(&self) -> log::LevelFilter {
        let lvl = 3i32 + self.verbose as i32 - self.quiet as i32;
        match lvl {
            i32::MIN..=0 => log::LevelFilter::Error,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
