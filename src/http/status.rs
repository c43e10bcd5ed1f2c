//! `GET /status` (the broker's state as one JSON object) and `GET /healthz` (200 while
//! it serves, 503 while it cannot commit to the event database).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Context, Reply};
use crate::metrics::{DropReason, RejectReason, Source, METRICS};
use crate::time::{unix_now_ms, utc_timestamp_ms};

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub start_time: String,
    pub uptime_seconds: u64,
    pub healthy: bool,
    pub listeners: Vec<Listener>,
    pub counters: Counters,
    pub subscribers: Vec<Subscriber>,
    pub upstreams: Vec<Upstream>,
    pub store: StoreStatus,
    pub process: Option<Process>,
    /// The Kafka consumer (`null` without one).
    pub kafka: Option<Kafka>,
}

/// The broker process's memory and threads.
#[derive(Serialize)]
pub struct Process {
    pub rss_bytes: u64,
    pub threads: u64,
}

#[derive(Serialize)]
pub struct Kafka {
    /// Topics with a partition assigned to this broker.
    pub topics: Vec<String>,
    pub lag: Vec<PartitionLag>,
    /// Seconds since the last heartbeat (`null`: no heartbeat topic, or none yet).
    pub heartbeat_age_seconds: Option<f64>,
}

#[derive(Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
}

#[derive(Serialize)]
pub struct Listener {
    pub role: &'static str,
    pub address: String,
}

#[derive(Serialize)]
pub struct Counters {
    /// Per source: `author`, `upstream`, `kafka`.
    pub accepted: BTreeMap<&'static str, u64>,
    pub duplicates: BTreeMap<&'static str, u64>,
    /// Per reason class.
    pub rejected: BTreeMap<&'static str, u64>,
    pub copies_sent: u64,
    pub subscribers_dropped: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
pub struct Subscriber {
    pub address: String,
    pub connected_since: String,
    pub filters: Vec<String>,
    pub events_sent: u64,
    pub events_acked: u64,
    pub queued: usize,
}

#[derive(Serialize)]
pub struct Upstream {
    pub remote: String,
    pub state: &'static str,
    pub connected_since: Option<String>,
    pub events_received: u64,
    pub last_event: Option<String>,
    pub reconnects: u64,
}

#[derive(Serialize)]
pub struct StoreStatus {
    pub path: String,
    pub map_bytes: u64,
    pub used_bytes: u64,
    pub archive_events: u64,
    pub archive_bytes: u64,
    /// Acceptance time of the oldest archived event.
    pub oldest_event: Option<String>,
}

/// A Unix ms time as ISO 8601 (`None` for 0: never).
fn when(ms: u64) -> Option<String> {
    (ms > 0).then(|| utc_timestamp_ms(ms))
}

/// Name/value pairs, as one JSON object.
fn pairs<T: Copy>(all: &[T], f: impl Fn(T) -> (&'static str, u64)) -> BTreeMap<&'static str, u64> {
    all.iter().map(|&x| f(x)).collect()
}

/// The broker's state now.
pub fn status(ctx: &Context) -> Status {
    let m = &METRICS;
    let now = unix_now_ms();
    let subscribers = m
        .subscribers
        .list()
        .iter()
        .map(|out| Subscriber {
            address: out.stat.peer.to_string(),
            connected_since: utc_timestamp_ms(out.stat.since_ms),
            filters: out
                .stat
                .filters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            events_sent: out.sent(),
            events_acked: out.stat.acked.load(Ordering::Relaxed),
            queued: out.queued(),
        })
        .collect();
    let upstreams = m
        .upstreams
        .list()
        .iter()
        .map(|u| Upstream {
            remote: u.remote.clone(),
            state: u.state().label(),
            connected_since: when(u.since_ms.load(Ordering::Relaxed)),
            events_received: u.received.load(Ordering::Relaxed),
            last_event: when(u.last_event_ms.load(Ordering::Relaxed)),
            reconnects: u.reconnects.load(Ordering::Relaxed),
        })
        .collect();
    let held = ctx.store.archive_counters();
    let (map_bytes, used_bytes) = super::prom::eventdb_bytes(ctx);
    let mut oldest = None;
    // The first entry of the archive, in a read transaction.
    let _ = ctx.store.read_archive(0, |e| {
        oldest = Some(e.accepted_ms);
        false
    });
    Status {
        version: env!("CARGO_PKG_VERSION"),
        start_time: utc_timestamp_ms(ctx.started_ms),
        uptime_seconds: now.saturating_sub(ctx.started_ms) / 1000,
        healthy: !m.commit_failing.load(Ordering::Relaxed),
        listeners: ctx
            .listeners
            .iter()
            .map(|(role, a)| Listener {
                role,
                address: a.to_string(),
            })
            .collect(),
        counters: Counters {
            accepted: pairs(&Source::ALL, |s| (s.label(), m.accepted_from(s))),
            duplicates: pairs(&Source::ALL, |s| (s.label(), m.duplicates_from(s))),
            rejected: pairs(&RejectReason::ALL, |r| (r.label(), m.rejected_for(r))),
            copies_sent: m.copies.load(Ordering::Relaxed),
            subscribers_dropped: pairs(&DropReason::ALL, |r| (r.label(), m.dropped_for(r))),
        },
        subscribers,
        upstreams,
        store: StoreStatus {
            path: ctx.store.path().display().to_string(),
            map_bytes,
            used_bytes,
            archive_events: held.count,
            archive_bytes: held.bytes,
            oldest_event: oldest.and_then(when),
        },
        process: crate::sys::process_stats().map(|p| Process {
            rss_bytes: p.rss_bytes,
            threads: p.threads,
        }),
        kafka: kafka(ctx),
    }
}

#[cfg(feature = "kafka")]
fn kafka(ctx: &Context) -> Option<Kafka> {
    let k = ctx.kafka.as_ref()?;
    Some(Kafka {
        topics: k.topics(),
        lag: k
            .lag()
            .into_iter()
            .map(|(topic, partition, lag)| PartitionLag {
                topic,
                partition,
                lag,
            })
            .collect(),
        heartbeat_age_seconds: k.heartbeat_age().map(|a| a.as_secs_f64()),
    })
}

#[cfg(not(feature = "kafka"))]
fn kafka(_: &Context) -> Option<Kafka> {
    None
}

/// Answer `/healthz`.
pub fn healthz() -> Reply {
    if METRICS.commit_failing.load(Ordering::Relaxed) {
        Reply::text(503, "cannot commit to the event database")
    } else {
        Reply::text(200, "ok")
    }
}
