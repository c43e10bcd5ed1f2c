//! Start-up, wiring and shutdown: open the event store, bind the listeners, start every
//! long-lived thread (committer, pruner, dispatcher, accept loops, upstream subscribers,
//! the Kafka gateway)
//! with the channels between them; on shutdown, stop in the order that loses nothing.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use log::{debug, error, info, warn};

use crate::authorconfig::AuthorRules;
use crate::broadcaster::{self, BroadcastContext};
use crate::cli::Config;
use crate::committer;
use crate::dispatcher::{self, Dispatcher, Msg, Stats};
use crate::handlers;
use crate::listener::{self, Caps, Handoff, Kind, ListenerState};
use crate::pruner;
use crate::ratelimit::RateLimiter;
use crate::receiver::{self, ReceiverContext};
use crate::replay::ReplayContext;
use crate::siteconfig::SiteConfig;
use crate::store::{Store, StoreConfig, StoreError};
use crate::upstream::{self, UpstreamContext};
use crate::whitelist::Whitelist;
use crate::xml::Limits;

/// Why the broker could not start.
#[derive(Debug)]
pub enum StartError {
    /// The event database could not be opened.
    Store(StoreError),
    /// A listening socket could not be bound.
    Bind {
        addr: SocketAddr,
        role: &'static str,
        err: io::Error,
    },
    /// A thread could not be started.
    Thread(io::Error),
    /// The handlers could not be set up (save directory, threads).
    Handlers(handlers::HandlerError),
    /// The Kafka gateway could not start (settings librdkafka refuses, a subscription).
    #[cfg(feature = "kafka")]
    Kafka(crate::kafka::GatewayError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "cannot open the event database: {e}"),
            StartError::Bind { addr, role, err } if err.kind() == io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen for {role} on {addr}: the port is already in use (stop the other program or choose another port)"
            ),
            StartError::Bind { addr, role, err } => {
                write!(f, "cannot listen for {role} on {addr}: {err}")
            }
            StartError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            StartError::Handlers(e) => write!(f, "{e}"),
            #[cfg(feature = "kafka")]
            StartError::Kafka(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running broker.
pub struct Broker {
    /// Where authors connect, if receiving.
    pub receive_addr: Option<SocketAddr>,
    /// Where subscribers connect, if broadcasting.
    pub broadcast_addr: Option<SocketAddr>,
    /// The event database directory.
    pub eventdb: PathBuf,
    author_timeout: Duration,
    dispatch_tx: Sender<Msg>,
    dispatcher: JoinHandle<Stats>,
    /// The committer thread (`None` under `--no-sync`: the dispatcher commits).
    committer: Option<JoinHandle<committer::CommitStats>>,
    pruner: (Sender<()>, JoinHandle<()>),
    /// The handlers, stopped after the last commit (they follow the archive).
    handlers: Option<handlers::Handlers>,
    listeners: Vec<(Kind, Arc<ListenerState>)>,
    upstreams: Vec<Sender<()>>,
    store: Arc<Store>,
    site_config: Option<PathBuf>,
    /// `--author-config`, shared with the receivers (`None` without the option or `-r`).
    author_rules: Option<Arc<AuthorRules>>,
    /// The Kafka consumer and publisher threads, if configured.
    #[cfg(feature = "kafka")]
    kafka: Option<crate::kafka::Gateway>,
    /// The HTTP view (`--http`), if configured.
    pub http: Option<crate::http::HttpServer>,
}

/// Capacity of the dispatcher's inbox; senders block when it is full (back-pressure on
/// authors and upstreams, never unbounded memory).
const DISPATCH_QUEUE: usize = 4096;
/// Stack for the long-lived service threads.
const SERVICE_STACK: usize = 256 * 1024;

fn spawn<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
    name: &str,
    stack: usize,
    f: F,
) -> Result<JoinHandle<T>, StartError> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(f)
        .map_err(StartError::Thread)
}

impl Broker {
    /// Open the store, bind, and start every thread.
    pub fn start(cfg: Config) -> Result<Broker, StartError> {
        let started_ms = crate::time::unix_now_ms();
        let store = Arc::new(
            Store::open(&StoreConfig {
                dir: cfg.eventdb.clone(),
                map_size: cfg.map_size,
                no_sync: cfg.no_sync,
                ttl_secs: cfg.max_age_secs,
                archive: cfg.archive,
            })
            .map_err(StartError::Store)?,
        );
        let bind = |port, role| {
            let addr = SocketAddr::new(cfg.bind, port);
            listener::bind(cfg.bind, port).map_err(|err| StartError::Bind { addr, role, err })
        };
        if cfg.bind == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            && std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
                .is_ok_and(|v| v.trim() == "1")
        {
            warn!("net.ipv6.bindv6only is 1: listening on [::] accepts IPv6 only; use --bind 0.0.0.0 for IPv4");
        }
        let receive = match cfg.receive {
            true => Some(bind(cfg.receive_port, "authors")?),
            false => None,
        };
        let broadcast = match cfg.broadcast {
            true => Some(bind(cfg.broadcast_port, "subscribers")?),
            false => None,
        };
        let local_ivo = cfg.local_ivo.clone().unwrap_or_default();
        let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let caps = |per_address| Caps {
            total: Arc::clone(&total),
            max_total: cfg.max_connections,
            per_address,
        };

        let follow = cfg.archive.map(|_| Arc::clone(&store));
        let mut handlers =
            handlers::start(cfg.handlers.clone(), follow).map_err(StartError::Handlers)?;
        let (dispatch_tx, dispatch_rx) = bounded(DISPATCH_QUEUE);
        // Under --no-sync the dispatcher commits itself (committer module docs).
        let (commit_queue, committer): (Arc<committer::CommitQueue>, _) = if cfg.no_sync {
            (committer::CommitQueue::inline(), None)
        } else {
            let queue = committer::CommitQueue::new();
            let store = Arc::clone(&store);
            let q = Arc::clone(&queue);
            let h = spawn("committer", SERVICE_STACK, move || {
                committer::run_committer(store, q)
            })?;
            (queue, Some(h))
        };
        let pruner = {
            let store = Arc::clone(&store);
            let interval = cfg.prune_interval;
            let (stop_tx, stop_rx) = bounded::<()>(0);
            let h = spawn("pruner", SERVICE_STACK, move || {
                pruner::run_pruner(store, interval, stop_rx)
            })?;
            (stop_tx, h)
        };
        let dispatcher = {
            let settings = dispatcher::Settings {
                local_ivo: local_ivo.clone(),
                stats_interval: cfg.stats_interval,
                connections: Arc::clone(&total),
                site: cfg
                    .site_config
                    .as_ref()
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default(),
                test_interval: cfg.test_interval,
                broadcast: cfg.broadcast,
            };
            let store = Arc::clone(&store);
            let handlers = handlers.as_mut().and_then(|h| h.tx.take());
            let queue = Arc::clone(&commit_queue);
            // Built on its own thread: its filter table (sxd-xpath) is not Send.
            spawn("dispatcher", 1 << 20, move || {
                Dispatcher::new(settings, store, queue, handlers).run(dispatch_rx)
            })?
        };
        let mut broker = Broker {
            receive_addr: None,
            broadcast_addr: None,
            eventdb: cfg.eventdb.clone(),
            author_timeout: cfg.author_timeout,
            dispatch_tx: dispatch_tx.clone(),
            dispatcher,
            committer,
            pruner,
            handlers,
            listeners: Vec::new(),
            upstreams: Vec::new(),
            store: Arc::clone(&store),
            site_config: cfg.site_config.as_ref().map(|(p, _)| p.clone()),
            author_rules: None,
            #[cfg(feature = "kafka")]
            kafka: None,
            http: None,
        };
        if let Some(l) = receive {
            let addr = l.local_addr().map_err(StartError::Thread)?;
            broker.author_rules = cfg.author_config.clone().map(|(path, rules)| {
                info!(
                    "author config {}: {} networks; {}",
                    path.display(),
                    rules.networks(),
                    if cfg.author_config_strict {
                        "authors outside them refused (--author-config-strict)"
                    } else {
                        "authors outside them unrestricted"
                    }
                );
                Arc::new(AuthorRules::new(path, rules, cfg.author_config_strict))
            });
            if let Some(rate) = cfg.author_rate {
                info!("author rate limit: {rate} per address (--author-rate)");
            }
            let ctx = Arc::new(ReceiverContext {
                local_ivo: Arc::from(local_ivo.as_str()),
                max_event_size: cfg.max_event_size,
                timeout: cfg.author_timeout,
                limits: Limits::default(),
                dispatcher: dispatch_tx.clone(),
                authors: broker.author_rules.clone(),
                rate: cfg.author_rate.map(RateLimiter::new),
                rate_log: Default::default(),
                archive: cfg.archive.is_some(),
            });
            broker.listen(
                l,
                Kind::Authors,
                cfg.author_whitelist.clone(),
                caps(cfg.max_authors_per_address),
                move |s, p, h: &mut Handoff<'_>| receiver::handle(s, p, &ctx, h),
            )?;
            broker.receive_addr = Some(addr);
        }
        if let Some(l) = broadcast {
            let addr = l.local_addr().map_err(StartError::Thread)?;
            let ctx = Arc::new(BroadcastContext {
                local_ivo: local_ivo.clone(),
                iamalive_interval: cfg.iamalive_interval,
                max_unacked: cfg.max_unacked,
                queue: cfg.subscriber_queue,
                write_timeout: cfg.write_timeout,
                dispatcher: dispatch_tx.clone(),
                next_id: AtomicU64::new(1),
                max_filters: cfg.max_filters,
                max_filter_len: cfg.max_filter_length,
                frame_timeout: cfg.frame_timeout,
                replay: cfg.archive.map(|_| {
                    Arc::new(ReplayContext {
                        store: Arc::clone(&store),
                        commits: Arc::clone(&commit_queue),
                        max_age_secs: cfg.replay_max_age_secs,
                        max_events: cfg.replay_max_events,
                        slots: crate::replay::ReplaySlots::new(cfg.max_replays),
                        by_address: cfg.resume_subscribers.clone(),
                    })
                }),
            });
            broker.listen(
                l,
                Kind::Subscribers,
                cfg.subscriber_whitelist.clone(),
                caps(cfg.max_subscribers_per_address),
                move |s, p, _: &mut Handoff<'_>| broadcaster::handle(s, p, Arc::clone(&ctx)),
            )?;
            broker.broadcast_addr = Some(addr);
        }
        if !cfg.remotes.is_empty() {
            let ctx = Arc::new(UpstreamContext {
                local_ivo: cfg.local_ivo.clone(),
                filters: cfg.filters.clone(),
                max_event_size: cfg.max_event_size,
                limits: Limits::default(),
                inactivity: cfg.remote_timeout,
                frame_timeout: cfg.frame_timeout,
                dispatcher: dispatch_tx.clone(),
                store: Arc::clone(&store),
            });
            for remote in &cfg.remotes {
                let (stop_tx, stop_rx) = bounded::<()>(0);
                let ctx = Arc::clone(&ctx);
                let r = remote.clone();
                info!(
                    "subscribing to upstream {r} ({} filters)",
                    cfg.filters.len()
                );
                // Detached: a session blocked on a read is not waited for at shutdown.
                spawn(&format!("upstream {r}"), SERVICE_STACK, move || {
                    upstream::run(r, ctx, stop_rx)
                })?;
                broker.upstreams.push(stop_tx);
            }
        }
        #[cfg(feature = "kafka")]
        if let Some(k) = &cfg.kafka {
            let source = crate::kafka::Source {
                max_event_size: cfg.max_event_size,
                dispatcher: dispatch_tx.clone(),
                archive: cfg.archive.is_some(),
            };
            broker.kafka =
                Some(crate::kafka::Gateway::start(k, &store, source).map_err(StartError::Kafka)?);
        }
        if let Some(h) = &cfg.http {
            let listeners = [
                ("authors", broker.receive_addr),
                ("subscribers", broker.broadcast_addr),
            ];
            let listeners = listeners
                .iter()
                .filter_map(|(r, a)| a.map(|a| (*r, a)))
                .collect();
            #[allow(unused_mut)]
            let mut ctx = crate::http::Context::new(Arc::clone(&store), started_ms, listeners);
            #[cfg(feature = "kafka")]
            {
                ctx.kafka = broker.kafka.as_ref().map(|g| g.stats());
            }
            let server = crate::http::HttpServer::start(h, Arc::new(ctx)).map_err(|err| {
                StartError::Bind {
                    addr: h.addr,
                    role: "HTTP",
                    err,
                }
            })?;
            broker.http = Some(server);
        }
        // A plain subscriber (only --remote) opens no port: no caps to speak of.
        if cfg.receive || cfg.broadcast {
            info!(
                "connection caps: {} in total, {} authors and {} subscribers per address",
                cfg.max_connections, cfg.max_authors_per_address, cfg.max_subscribers_per_address
            );
        }
        info!(
            "event database {}: {} commits, records kept {} s",
            store.path().display(),
            if cfg.no_sync {
                "unsynced (--no-sync)"
            } else {
                "durable"
            },
            cfg.max_age_secs
        );
        let held = store.archive_counters();
        match cfg.archive {
            Some(a) => info!(
                "archive: {} events, {} bytes; keeps {} s{}",
                held.count,
                held.bytes,
                a.max_age_secs,
                a.max_bytes
                    .map_or(String::new(), |b| format!(" and at most {b} bytes"))
            ),
            None => info!(
                "archive off (--no-archive): {} events kept from before",
                held.count
            ),
        }
        Ok(broker)
    }

    /// Start the accept loop of one listener (its log line names the port and whitelist).
    fn listen<F>(
        &mut self,
        l: std::net::TcpListener,
        kind: Kind,
        whitelist: Whitelist,
        caps: Caps,
        handler: F,
    ) -> Result<(), StartError>
    where
        F: listener::Handler,
    {
        let addr = l.local_addr().map_err(StartError::Thread)?;
        let who = match kind {
            Kind::Authors => "authors",
            Kind::Subscribers => "subscribers",
        };
        info!("listening for {who} on {addr} (whitelist: {whitelist})");
        let state = Arc::new(ListenerState::new(caps));
        listener::start(l, whitelist, kind, Arc::clone(&state), handler)
            .map_err(StartError::Thread)?;
        self.listeners.push((kind, state));
        Ok(())
    }

    /// On SIGHUP: re-read `--subscriber-config` and `--author-config`. A file with errors
    /// keeps the rules in force; either way the connections stay up.
    pub fn reload(&self) {
        if self.site_config.is_none() && self.author_rules.is_none() {
            info!("SIGHUP: no --subscriber-config or --author-config to reload");
            return;
        }
        self.reload_site_config();
        if let Some(rules) = &self.author_rules {
            match rules.reload() {
                Ok(n) => info!("author config reloaded: {n} networks"),
                Err(e) => {
                    error!("author config not reloaded, keeping the previous rules: {e}")
                }
            }
        }
    }

    /// Re-read `--subscriber-config`, if given; the dispatcher re-applies it.
    fn reload_site_config(&self) {
        let Some(path) = &self.site_config else {
            return;
        };
        match SiteConfig::load(path) {
            Ok(c) => {
                let _ = self.dispatch_tx.send(Msg::SiteConfig(c));
            }
            Err(e) => error!("subscriber config not reloaded, keeping the previous rules: {e}"),
        }
    }

    /// Stop without losing anything acknowledged: stop accepting; let in-flight authors
    /// finish (up to the author timeout); stop the upstream subscriptions; let the
    /// dispatcher handle what is queued and the committer commit it and answer the
    /// authors; then close the event database.
    pub fn shutdown(self) {
        let in_flight: usize = self
            .listeners
            .iter()
            .filter(|(k, _)| matches!(k, Kind::Authors))
            .map(|(_, s)| s.active())
            .sum();
        info!(
            "shutting down: {in_flight} author connections in flight, {} upstream subscriptions",
            self.upstreams.len()
        );
        // The HTTP view holds the store: it stops first.
        if let Some(h) = self.http {
            h.stop();
        }
        for (_, state) in &self.listeners {
            state.stop();
        }
        let deadline = Instant::now() + self.author_timeout + Duration::from_secs(1);
        for (kind, state) in self.listeners {
            if matches!(kind, Kind::Authors) {
                while state.active() > 0 && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                if state.active() > 0 {
                    warn!(
                        "{} author connections still open at shutdown; they get no reply",
                        state.active()
                    );
                }
            }
        }
        drop(self.upstreams);
        #[cfg(feature = "kafka")]
        let mut kafka = self.kafka;
        #[cfg(feature = "kafka")]
        if let Some(k) = &mut kafka {
            k.stop_consuming();
        }
        let _ = self.dispatch_tx.send(Msg::Shutdown);
        drop(self.dispatch_tx);
        let stats = self.dispatcher.join().unwrap_or_default();
        // The dispatcher closed the commit queue as it ended: the committer now commits
        // what is queued, answers, and returns (inline, the dispatcher already has).
        let commits = match self.committer {
            Some(c) => c.join().map(|s| s.commits).unwrap_or_default(),
            None => stats.commits,
        };
        debug!(
            "{} events accepted in {commits} commits of the event database",
            stats.accepted
        );
        if let Some(h) = self.handlers {
            h.stop();
        }
        // Everything is committed: the publisher produces the rest and records its
        // position.
        #[cfg(feature = "kafka")]
        if let Some(k) = &mut kafka {
            k.stop_publishing();
        }
        drop(self.pruner.0);
        let _ = self.pruner.1.join();
        if let Err(e) = self.store.sync() {
            warn!("final sync of the event database failed: {e}");
        }
        drop(self.store);
        info!(
            "shut down cleanly: {} events accepted, {} duplicates, {} copies sent, {} subscribers dropped",
            stats.accepted, stats.duplicates, stats.copies, stats.dropped_subscribers
        );
    }
}
