//! `GET /metrics`: the broker's counters in Prometheus's text format (0.0.4), every name
//! prefixed `bolide_`, encoded by `prometheus-client` from a collector that reads
//! [`crate::metrics::METRICS`] and the event database's sizes at each scrape.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Context, Reply};
use crate::metrics::{DropReason, Histogram, LinkState, RejectReason, Source, METRICS};

/// The event database's sizes: map, pages in use (bytes).
pub fn eventdb_bytes(ctx: &Context) -> (u64, u64) {
    let env = ctx.store.env();
    let page = env.stat().map(|s| s.page_size() as u64).unwrap_or(4096);
    match env.info() {
        Ok(i) => (i.map_size() as u64, (i.last_pgno() as u64 + 1) * page),
        Err(_) => (0, 0),
    }
}

/// What a scrape reads: the broker's counters and its store.
struct Scrape(Arc<Context>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

type Res = Result<(), std::fmt::Error>;

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Res {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge<N>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> Res
where
    ConstGauge<N>: EncodeMetric,
{
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// One metric with one label over a fixed set of values.
fn family<T: Copy>(
    enc: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    label: &str,
    values: &[T],
    each: impl Fn(T) -> (&'static str, u64),
) -> Res {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for &v in values {
        let (l, n) = each(v);
        let labels = [(label, l)];
        let fm = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(n).encode(fm)?,
            _ => ConstGauge::new(n as i64).encode(fm)?,
        }
    }
    Ok(())
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> Res {
    let (sum, count, buckets) = h.snapshot();
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Res {
        let ctx = &self.0;
        let m = &METRICS;
        let c = MetricType::Counter;
        let g = MetricType::Gauge;
        family(
            &mut enc,
            ("events_accepted", "New events accepted, by source.", c),
            "source",
            &Source::ALL,
            |s| (s.label(), m.accepted_from(s)),
        )?;
        family(
            &mut enc,
            ("events_duplicate", "Events already seen, by source.", c),
            "source",
            &Source::ALL,
            |s| (s.label(), m.duplicates_from(s)),
        )?;
        family(
            &mut enc,
            (
                "events_rejected",
                "Naks to authors other than duplicates, by reason.",
                c,
            ),
            "reason",
            &RejectReason::ALL,
            |r| (r.label(), m.rejected_for(r)),
        )?;
        counter(
            &mut enc,
            "copies_sent",
            "Copies of events handed to subscribers.",
            m.copies.load(std::sync::atomic::Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "subscribers",
            "Subscribers connected.",
            m.subscribers.len() as i64,
        )?;
        family(
            &mut enc,
            (
                "subscribers_dropped",
                "Subscribers the broker dropped, by reason.",
                c,
            ),
            "reason",
            &DropReason::ALL,
            |r| (r.label(), m.dropped_for(r)),
        )?;
        let links = m.upstreams.list();
        family(
            &mut enc,
            (
                "upstreams",
                "Upstream brokers (--remote), by link state.",
                g,
            ),
            "state",
            &LinkState::ALL,
            |s| {
                let n = links.iter().filter(|l| l.state() == s).count();
                (s.label(), n as u64)
            },
        )?;
        let held = ctx.store.archive_counters();
        gauge(
            &mut enc,
            "archive_events",
            "Events in the archive.",
            held.count as i64,
        )?;
        gauge(
            &mut enc,
            "archive_bytes",
            "Bytes of events in the archive.",
            held.bytes as i64,
        )?;
        let (map, used) = eventdb_bytes(ctx);
        gauge(
            &mut enc,
            "eventdb_used_bytes",
            "Bytes of the event database's pages in use.",
            used as i64,
        )?;
        gauge(
            &mut enc,
            "eventdb_map_bytes",
            "Size of the event database's map (--eventdb-map-size).",
            map as i64,
        )?;
        gauge(
            &mut enc,
            "handler_queue",
            "Events waiting for --print-event, --save-event and --cmd.",
            m.handler_queue.load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "last_event_timestamp_seconds",
            "When the newest event was accepted (Unix time; 0: none yet).",
            m.last_event_ms.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e3,
        )?;
        gauge(
            &mut enc,
            "start_time_seconds",
            "When the broker started (Unix time).",
            ctx.started_ms as f64 / 1e3,
        )?;
        {
            let mut d = enc.encode_descriptor(
                "build_info",
                "The broker's version, as a label; the value is 1.",
                None,
                g,
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            ConstGauge::new(1i64).encode(d.encode_family(&labels)?)?;
        }
        if let Some(p) = crate::sys::process_stats() {
            gauge(
                &mut enc,
                "resident_memory_bytes",
                "The broker's resident memory (RSS).",
                p.rss_bytes as i64,
            )?;
            gauge(
                &mut enc,
                "threads",
                "The broker's threads.",
                p.threads as i64,
            )?;
        }
        #[cfg(feature = "kafka")]
        if let Some(k) = &ctx.kafka {
            kafka(&mut enc, k)?;
        }
        histogram(
            &mut enc,
            "author_ack_latency_seconds",
            "From an author's event checked to its ack sent.",
            &m.ack_latency,
        )?;
        histogram(
            &mut enc,
            "fanout_latency_seconds",
            "From an event's arrival at the dispatcher to its last copy handed to the kernel or queued for its subscriber.",
            &m.fanout_latency,
        )
    }
}

/// The Kafka consumer's lag per partition and its heartbeat's age.
#[cfg(feature = "kafka")]
fn kafka(enc: &mut DescriptorEncoder, k: &crate::kafka::stats::KafkaStats) -> Res {
    let mut m = enc.encode_descriptor(
        "kafka_consumer_lag",
        "Messages a partition assigned to the Kafka consumer is behind (librdkafka's statistics).",
        None,
        MetricType::Gauge,
    )?;
    for (topic, partition, lag) in k.lag() {
        let partition = partition.to_string();
        let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
        ConstGauge::new(lag).encode(m.encode_family(&labels)?)?;
    }
    if let Some(age) = k.heartbeat_age() {
        gauge(
            enc,
            "kafka_heartbeat_age_seconds",
            "Seconds since the last message on --kafka-heartbeat-topic.",
            age.as_secs_f64(),
        )?;
    }
    Ok(())
}

/// Answer `/metrics`.
pub fn metrics(ctx: &Arc<Context>) -> Reply {
    let mut registry = Registry::with_prefix("bolide");
    registry.register_collector(Box::new(Scrape(Arc::clone(ctx))));
    let mut text = String::with_capacity(8192);
    match prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        Ok(()) => Reply {
            status: 200,
            content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            body: text.into_bytes(),
        },
        Err(_) => Reply::text(500, "cannot encode the metrics"),
    }
}
