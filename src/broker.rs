//! Start-up and wiring: open the event store, bind the listeners, start every long-lived
//! thread (committer, pruner, dispatcher, accept loops) with the channels between them.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, unbounded};
use log::info;

use crate::broadcaster::{self, BroadcastContext};
use crate::cli::Config;
use crate::committer;
use crate::dispatcher::{self, Dispatcher};
use crate::listener::{self, Kind};
use crate::receiver::{self, ReceiverContext};
use crate::store::{Store, StoreConfig, StoreError};
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
    threads: Vec<JoinHandle<()>>,
}

/// Capacity of the dispatcher's inbox; senders block when it is full (back-pressure on
/// authors, never unbounded memory).
const DISPATCH_QUEUE: usize = 4096;

fn spawn<F: FnOnce() + Send + 'static>(
    name: &str,
    stack: usize,
    f: F,
) -> Result<JoinHandle<()>, StartError> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(f)
        .map_err(StartError::Thread)
}

impl Broker {
    /// Open the store, bind, and start every thread.
    pub fn start(cfg: Config) -> Result<Broker, StartError> {
        let store = Arc::new(
            Store::open(&StoreConfig {
                dir: cfg.eventdb.clone(),
                map_size: cfg.map_size,
                no_sync: cfg.no_sync,
                ttl_secs: cfg.max_age_secs,
            })
            .map_err(StartError::Store)?,
        );
        let bind = |port, role| {
            let addr = SocketAddr::new(cfg.bind, port);
            listener::bind(cfg.bind, port).map_err(|err| StartError::Bind { addr, role, err })
        };
        let receive = if cfg.receive {
            Some(bind(cfg.receive_port, "authors")?)
        } else {
            None
        };
        let broadcast = if cfg.broadcast {
            Some(bind(cfg.broadcast_port, "subscribers")?)
        } else {
            None
        };

        let (dispatch_tx, dispatch_rx) = bounded(DISPATCH_QUEUE);
        let (commit_tx, commit_rx) = unbounded();
        let mut threads = Vec::new();
        {
            let store = Arc::clone(&store);
            let d = dispatch_tx.clone();
            threads.push(spawn("committer", 256 * 1024, move || {
                committer::run_committer(store, commit_rx, d)
            })?);
        }
        {
            let store = Arc::clone(&store);
            let interval = cfg.prune_interval;
            let (stop_tx, stop_rx) = bounded::<()>(0);
            // The pruner runs for the life of the process; keep its stop sender alive.
            std::mem::forget(stop_tx);
            threads.push(spawn("pruner", 256 * 1024, move || {
                committer::run_pruner(store, interval, stop_rx)
            })?);
        }
        {
            let d = Dispatcher::new(
                dispatcher::Settings {
                    local_ivo: cfg.local_ivo.clone(),
                    test_interval: cfg.test_interval,
                    broadcast: cfg.broadcast,
                },
                Arc::clone(&store),
                commit_tx,
            );
            threads.push(spawn("dispatcher", 1 << 20, move || {
                d.run(dispatch_rx);
            })?);
        }
        let mut broker = Broker {
            receive_addr: None,
            broadcast_addr: None,
            eventdb: cfg.eventdb.clone(),
            threads,
        };
        if let Some(l) = receive {
            let addr = l.local_addr().map_err(StartError::Thread)?;
            let ctx = Arc::new(ReceiverContext {
                local_ivo: cfg.local_ivo.clone(),
                max_event_size: cfg.max_event_size,
                timeout: cfg.author_timeout,
                limits: Limits::default(),
                dispatcher: dispatch_tx.clone(),
            });
            let wl = cfg.author_whitelist.clone();
            info!("listening for authors on {addr} (whitelist: {wl})");
            broker
                .threads
                .push(spawn("accept authors", 256 * 1024, move || {
                    listener::accept_loop(l, wl, Kind::Authors, move |s, p| {
                        receiver::handle(s, p, Arc::clone(&ctx))
                    })
                })?);
            broker.receive_addr = Some(addr);
        }
        if let Some(l) = broadcast {
            let addr = l.local_addr().map_err(StartError::Thread)?;
            let ctx = Arc::new(BroadcastContext {
                local_ivo: cfg.local_ivo.clone(),
                iamalive_interval: cfg.iamalive_interval,
                max_unacked: cfg.max_unacked,
                queue: cfg.subscriber_queue,
                write_timeout: cfg.write_timeout,
                dispatcher: dispatch_tx.clone(),
                next_id: AtomicU64::new(1),
            });
            let wl = cfg.subscriber_whitelist.clone();
            info!("listening for subscribers on {addr} (whitelist: {wl})");
            broker
                .threads
                .push(spawn("accept subscribers", 256 * 1024, move || {
                    listener::accept_loop(l, wl, Kind::Subscribers, move |s, p| {
                        broadcaster::handle(s, p, Arc::clone(&ctx))
                    })
                })?);
            broker.broadcast_addr = Some(addr);
        }
        info!(
            "event database {} ({} commits, records kept {} s)",
            store.path().display(),
            if cfg.no_sync {
                "unsynced (--no-sync)"
            } else {
                "durable"
            },
            cfg.max_age_secs
        );
        Ok(broker)
    }

    /// Block until the broker's threads end (they run until the process exits).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
