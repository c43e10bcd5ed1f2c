//! The operator's view over HTTP (`--http ADDR:PORT`): `/metrics` for Prometheus,
//! `/status` and `/healthz` for programs, `/` for a person, and the archive under
//! `/events`. A small server of its own ([`server`]: an accept thread and
//! [`server::WORKERS`] request threads, request size and time limits, the
//! `--http-whitelist` checked at accept) reads only atomics ([`crate::metrics`]) and LMDB
//! read transactions on the broker's own environment, so no request makes a thread that
//! serves events wait.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::archive_reader::ArchiveReader;
use crate::store::Store;
use crate::whitelist::{NetworkError, Whitelist};

mod events;
mod page;
mod prom;
pub mod server;
mod status;

pub use server::HttpServer;

/// The networks allowed by default: loopback only.
pub const DEFAULT_WHITELIST: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// `--http` and `--http-whitelist`, checked.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub whitelist: Whitelist,
}

/// An `--http` option that cannot be used.
#[derive(Debug)]
pub enum HttpOptionError {
    /// `--http` is not `ADDR:PORT`.
    Addr(String),
    /// A `--http-whitelist` entry.
    Network(NetworkError),
    /// `--http-whitelist` without `--http`.
    WhitelistAlone,
}

impl fmt::Display for HttpOptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpOptionError::Addr(a) => write!(
                f,
                "--http '{a}': expected ADDR:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"
            ),
            HttpOptionError::Network(e) => write!(f, "--http-whitelist: {e}"),
            HttpOptionError::WhitelistAlone => {
                write!(
                    f,
                    "--http-whitelist: needs --http (the address to serve on)"
                )
            }
        }
    }
}

impl std::error::Error for HttpOptionError {}

/// Check `--http` and `--http-whitelist` (`None`: no HTTP view).
pub fn config(
    addr: Option<&str>,
    whitelist: &[String],
) -> Result<Option<HttpConfig>, HttpOptionError> {
    let Some(a) = addr else {
        return match whitelist.is_empty() {
            true => Ok(None),
            false => Err(HttpOptionError::WhitelistAlone),
        };
    };
    let addr: SocketAddr = a
        .trim()
        .parse()
        .map_err(|_| HttpOptionError::Addr(a.to_string()))?;
    let whitelist = match whitelist.is_empty() {
        true => Whitelist::parse(&DEFAULT_WHITELIST),
        false => Whitelist::parse(whitelist),
    }
    .map_err(HttpOptionError::Network)?;
    Ok(Some(HttpConfig { addr, whitelist }))
}

/// What the requests read.
pub struct Context {
    pub store: Arc<Store>,
    pub archive: ArchiveReader,
    /// When the broker started (Unix ms).
    pub started_ms: u64,
    /// The broker's listening sockets: what for, and where.
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// The Kafka gateway's figures (a consumer is running).
    #[cfg(feature = "kafka")]
    pub kafka: Option<Arc<crate::kafka::stats::KafkaStats>>,
    /// The page's previous counters, for its rates.
    page_rates: std::sync::Mutex<Option<page::Sample>>,
}

impl Context {
    pub fn new(
        store: Arc<Store>,
        started_ms: u64,
        listeners: Vec<(&'static str, SocketAddr)>,
    ) -> Context {
        Context {
            archive: ArchiveReader::from_store(Arc::clone(&store)),
            store,
            started_ms,
            listeners,
            #[cfg(feature = "kafka")]
            kafka: None,
            page_rates: Default::default(),
        }
    }
}

/// A response: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// A one-line plain-text answer (errors, `/healthz`).
    pub fn text(status: u16, line: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", format!("{line}\n"))
    }

    fn json(value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::new(200, "application/json", body),
            Err(e) => Reply::text(500, &format!("cannot encode JSON: {e}")),
        }
    }
}

/// Answer `GET path?query`.
pub fn route(ctx: &Arc<Context>, path: &str, query: &str) -> Reply {
    match path {
        "/metrics" => prom::metrics(ctx),
        "/status" => Reply::json(&status::status(ctx)),
        "/healthz" => status::healthz(),
        "/" => page::page(ctx),
        "/events" => events::list(ctx, query),
        p => match p.strip_prefix("/events/") {
            Some(ivorn) => events::show(ctx, ivorn),
            None => Reply::text(404, &format!("no such page: {p}")),
        },
    }
}
