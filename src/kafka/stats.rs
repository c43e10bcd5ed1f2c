//! What the Kafka gateway tells the metrics: the age of the last heartbeat, the
//! partitions assigned to this broker's consumer, and how many messages each is behind.
//! It owns [`KafkaStats`], which the consumer thread (and librdkafka's callbacks, which
//! run on that thread inside a poll) update and any thread reads.
//!
//! The lag comes from librdkafka's statistics (`statistics.interval.ms`, every
//! [`STATISTICS_EVERY_MS`] unless a `--kafka-option` sets it): per partition, the high
//! watermark the broker last reported minus the consumer's position (the offset after
//! the last message handed to bolide; before the first one, the committed offset). So it
//! costs one JSON document per interval, nothing per message, and no request of its own.
//! The lock is held only to copy values in or out, never while the consumer waits.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::statistics::Statistics;

/// librdkafka's statistics interval (ms) for the consumer, unless set by an option.
pub const STATISTICS_EVERY_MS: &str = "5000";

/// The gateway's figures for the metrics.
#[derive(Default)]
pub struct KafkaStats {
    /// Whether a heartbeat topic is consumed.
    heartbeat_topic: bool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    last_heartbeat: Option<Instant>,
    /// (topic, partition) assigned to the consumer, sorted.
    assigned: Vec<(String, i32)>,
    /// (topic, partition, messages behind), from the last statistics.
    lag: Vec<(String, i32, i64)>,
}

impl KafkaStats {
    /// Figures for a consumer (`heartbeat_topic`: whether one is consumed).
    pub fn new(heartbeat_topic: bool) -> KafkaStats {
        KafkaStats {
            heartbeat_topic,
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long ago the last heartbeat came (`None`: no heartbeat topic, or none seen
    /// since the start).
    pub fn heartbeat_age(&self) -> Option<Duration> {
        if !self.heartbeat_topic {
            return None;
        }
        self.inner().last_heartbeat.map(|t| t.elapsed())
    }

    /// (topic, partition, messages behind) for each assigned partition whose high
    /// watermark and position are known, as of librdkafka's last statistics.
    pub fn lag(&self) -> Vec<(String, i32, i64)> {
        self.inner().lag.clone()
    }

    /// The topics with a partition assigned to this broker's consumer, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .inner()
            .assigned
            .iter()
            .map(|(t, _)| t.clone())
            .collect();
        t.dedup();
        t
    }

    /// A heartbeat came.
    pub fn heartbeat(&self) {
        self.inner().last_heartbeat = Some(Instant::now());
    }

    /// The consumer's assignment changed to `assigned`.
    pub fn assigned(&self, mut assigned: Vec<(String, i32)>) {
        assigned.sort();
        let mut inner = self.inner();
        inner
            .lag
            .retain(|(t, p, _)| assigned.binary_search(&(t.clone(), *p)).is_ok());
        inner.assigned = assigned;
    }

    /// librdkafka's periodic statistics came.
    pub fn statistics(&self, s: &Statistics) {
        let assigned = self.inner().assigned.clone();
        let lag = lag_of(s, &assigned);
        self.inner().lag = lag;
    }
}

/// The lag of each of `assigned` in `s`: high watermark minus position (or, with no
/// message read yet, minus the committed offset); partitions where either is unknown
/// (negative in librdkafka's statistics) are left out.
fn lag_of(s: &Statistics, assigned: &[(String, i32)]) -> Vec<(String, i32, i64)> {
    assigned
        .iter()
        .filter_map(|(topic, partition)| {
            let p = s.topics.get(topic)?.partitions.get(partition)?;
            let position = [p.app_offset, p.committed_offset]
                .into_iter()
                .find(|&o| o >= 0)?;
            (p.hi_offset >= 0).then(|| (topic.clone(), *partition, (p.hi_offset - position).max(0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics of topic `t` with partitions (id, high watermark, position, committed).
    fn statistics(partitions: &[(i32, i64, i64, i64)]) -> Statistics {
        let mut topic = rdkafka::statistics::Topic::default();
        for &(id, hi, app, committed) in partitions {
            let p = rdkafka::statistics::Partition {
                partition: id,
                hi_offset: hi,
                app_offset: app,
                committed_offset: committed,
                ..Default::default()
            };
            topic.partitions.insert(id, p);
        }
        let mut s = Statistics::default();
        s.topics.insert("t".into(), topic);
        s
    }

    /// The lag is the high watermark minus the position, or minus the committed offset
    /// before the first message; unknown offsets and partitions not assigned are left
    /// out, and a new assignment drops the lag of partitions no longer assigned.
    #[test]
    fn lag_is_high_watermark_minus_position() {
        let stats = KafkaStats::new(false);
        assert_eq!(stats.heartbeat_age(), None);
        stats.heartbeat();
        assert_eq!(stats.heartbeat_age(), None, "no heartbeat topic");
        stats.assigned(vec![
            ("t".into(), 2),
            ("t".into(), 0),
            ("t".into(), 1),
            ("t".into(), 3),
        ]);
        assert_eq!(stats.topics(), vec!["t".to_string()]);
        stats.statistics(&statistics(&[
            (0, 10, 4, 3),
            (1, 7, -1001, 5),
            (2, 9, -1001, -1001),
            (3, -1, 2, 2),
            (4, 50, 0, 0),
            (-1, 0, -1001, -1001),
        ]));
        assert_eq!(
            stats.lag(),
            vec![("t".to_string(), 0, 6), ("t".to_string(), 1, 2)]
        );
        stats.assigned(vec![("t".into(), 1)]);
        assert_eq!(stats.lag(), vec![("t".to_string(), 1, 2)]);
        stats.assigned(Vec::new());
        assert!(stats.topics().is_empty() && stats.lag().is_empty());
        let beats = KafkaStats::new(true);
        assert_eq!(beats.heartbeat_age(), None, "none seen yet");
        beats.heartbeat();
        assert!(beats
            .heartbeat_age()
            .is_some_and(|a| a < Duration::from_secs(60)));
    }
}
