//! What a run prints: its lines for people, then, last, one JSON object with every figure,
//! which tests/bench/run.sh reads with jq and tests/bench_smoke.rs by key.
//!
//! The JSON is written by serde from the structs below, so the keys, their nesting and
//! their order are those of the struct fields. A figure that does not apply to a run is
//! left out, except the latency percentiles, which are null when nothing was measured.
//! Non-integer figures are rounded to three decimals (a microsecond, for milliseconds).

use std::io::{self, Write};
use std::process::ExitCode;

use serde::{Serialize, Serializer};

use crate::stats::BrokerFigures;

/// The outcome of a measuring mode: lines for people, the JSON figures, and whether
/// nothing was lost, duplicated or unexpected and no error occurred.
pub struct Report<T> {
    pub lines: Vec<String>,
    pub figures: T,
    pub ok: bool,
}

/// The JSON line: the figures, then `result`.
#[derive(Serialize)]
struct JsonLine<'a, T> {
    #[serde(flatten)]
    figures: &'a T,
    result: &'static str,
}

impl<T: Serialize> Report<T> {
    /// Print the lines and the JSON line; exit status 0 when ok, 1 otherwise.
    pub fn print(self) -> ExitCode {
        let mut out = io::stdout().lock();
        for l in &self.lines {
            let _ = writeln!(out, "{l}");
        }
        let line = JsonLine {
            figures: &self.figures,
            result: if self.ok { "ok" } else { "fail" },
        };
        let _ = serde_json::to_writer(&mut out, &line);
        let _ = writeln!(out);
        let _ = out.flush();
        if self.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// A figure, written rounded to three decimals; NaN and infinities are written as null.
#[derive(Clone, Copy)]
pub struct Num(pub f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((self.0 * 1000.0).round() / 1000.0)
    }
}

/// `latency_ms`: percentiles of a run's latencies in ms, null when there were none.
#[derive(Serialize)]
pub struct Latency {
    p50: Option<Num>,
    p99: Option<Num>,
    max: Option<Num>,
}

impl From<Option<(f64, f64, f64)>> for Latency {
    fn from(p: Option<(f64, f64, f64)>) -> Latency {
        Latency {
            p50: p.map(|p| Num(p.0)),
            p99: p.map(|p| Num(p.1)),
            max: p.map(|p| Num(p.2)),
        }
    }
}

/// The line for people with the percentiles, when there are any.
pub fn latency_line(what: &str, lat: Option<(f64, f64, f64)>) -> Option<String> {
    let (p50, p99, max) = lat?;
    Some(format!(
        "  {what} ms: p50 {p50:.3}, p99 {p99:.3}, max {max:.3}"
    ))
}

/// `broker`: the broker's CPU time and memory (with `--pid`).
#[derive(Serialize)]
pub struct Broker {
    cpu_s: Num,
    rss_kb_start: u64,
    rss_kb_end: u64,
    rss_kb_peak_sampled: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_kb_with_subscribers_idle: Option<u64>,
}

impl From<&BrokerFigures> for Broker {
    fn from(b: &BrokerFigures) -> Broker {
        Broker {
            cpu_s: Num(b.cpu_s),
            rss_kb_start: b.rss_start,
            rss_kb_end: b.rss_end,
            rss_kb_peak_sampled: b.rss_peak,
            rss_kb_with_subscribers_idle: b.rss_subscribers_idle,
        }
    }
}

/// The figures of `ingest`.
#[derive(Serialize)]
pub struct IngestFigures {
    pub mode: &'static str,
    pub run: String,
    pub authors: usize,
    pub event_bytes: usize,
    pub sent: u64,
    pub acked: u64,
    pub naks: u64,
    pub errors: u64,
    pub elapsed_s: Num,
    pub accepted_per_s: Num,
    pub latency_ms: Latency,
    pub tool: IngestTool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<Broker>,
    /// The broker's CPU time per accepted event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_event: Option<Num>,
}

/// `tool` of `ingest`: the bench's own CPU time.
#[derive(Serialize)]
pub struct IngestTool {
    pub cpu_s: Num,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_event: Option<Num>,
}

/// The figures of `fanout` and `filter`.
#[derive(Serialize)]
pub struct FanFigures {
    pub mode: &'static str,
    pub run: String,
    pub subscribers: usize,
    pub subscribers_receiving: usize,
    pub count: u64,
    pub rate: Num,
    pub event_bytes: usize,
    pub sent: u64,
    pub naks: u64,
    pub errors: u64,
    pub delivered: u64,
    pub expected_deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub foreign: u64,
    pub disconnects: u64,
    pub send_s: Num,
    pub elapsed_s: Num,
    pub deliveries_per_s: Num,
    pub latency_ms: Latency,
    pub tool: FanTool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<Broker>,
    /// The broker's CPU time per delivered copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_copy: Option<Num>,
}

/// `tool` of `fanout` and `filter`: the bench's own CPU time and subscriber threads.
#[derive(Serialize)]
pub struct FanTool {
    pub cpu_s: Num,
    pub cpu_us_per_copy: Num,
    pub threads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(figures: T, ok: bool) -> String {
        let line = JsonLine {
            figures: &figures,
            result: if ok { "ok" } else { "fail" },
        };
        serde_json::to_string(&line).unwrap()
    }

    /// Without a broker nothing of it is written, the percentiles are null, and
    /// `result` comes last.
    #[test]
    fn ingest_line_without_broker_or_latencies() {
        let figures = IngestFigures {
            mode: "ingest",
            run: "r\"1".into(),
            authors: 2,
            event_bytes: 4760,
            sent: 3,
            acked: 0,
            naks: 3,
            errors: 0,
            elapsed_s: Num(1.23456),
            accepted_per_s: Num(0.0),
            latency_ms: Latency::from(None),
            tool: IngestTool {
                cpu_s: Num(f64::NAN),
                cpu_us_per_event: None,
            },
            broker: None,
            cpu_us_per_event: None,
        };
        assert_eq!(
            json(figures, false),
            r#"{"mode":"ingest","run":"r\"1","authors":2,"event_bytes":4760,"sent":3,"#.to_owned()
                + r#""acked":0,"naks":3,"errors":0,"elapsed_s":1.235,"accepted_per_s":0.0,"#
                + r#""latency_ms":{"p50":null,"p99":null,"max":null},"#
                + r#""tool":{"cpu_s":null},"result":"fail"}"#
        );
    }

    /// The broker object keeps its key order, idle RSS last.
    #[test]
    fn broker_object() {
        let b = BrokerFigures {
            cpu_s: 0.5,
            rss_start: 1,
            rss_end: 2,
            rss_peak: 3,
            rss_subscribers_idle: Some(4),
        };
        assert_eq!(
            serde_json::to_string(&Broker::from(&b)).unwrap(),
            r#"{"cpu_s":0.5,"rss_kb_start":1,"rss_kb_end":2,"rss_kb_peak_sampled":3,"#.to_owned()
                + r#""rss_kb_with_subscribers_idle":4}"#
        );
    }
}
