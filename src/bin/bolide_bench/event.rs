//! The events the bench sends: the template (`event.xml`), the classes that the `filter`
//! mode's XPath filters select, and [`EventMaker`], which fills the template in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Events per class cycle; the filters of `filter` mode select classes.
pub const CLASSES: u64 = 4;

/// The XPath filters of `filter` mode (subscriber i gets FILTERS[i % 4]).
pub const FILTERS: [&str; 4] = [
    "//Param[@name=\"Bench_Class\" and @value=\"0\"]",
    "//Param[@name=\"Bench_Class\" and @value=\"1\"]",
    "//Param[@name=\"Bench_Class\" and (@value=\"2\" or @value=\"3\")]",
    "//Param[@name=\"Bench_Class\" and @value >= 3]",
];

/// Whether `FILTERS[f]` matches an event of class `c`.
pub fn filter_matches(f: usize, c: u64) -> bool {
    match f {
        0 => c == 0,
        1 => c == 1,
        2 => c == 2 || c == 3,
        _ => c >= 3,
    }
}

const IVORN_BASE: &str = "ivo://bolide.bench/SWIFT#BAT_GRB_Pos_";

/// A Swift BAT GRB position notice (shape of GCN's VOEvent 2.0 notices, ~4.5 KB), with
/// three bench Params in What. `{ivorn}`, `{date}`, `{class}`, `{seq}`, `{run}`, `{pad}`
/// are substituted. The file holds the event byte for byte as it goes on the wire (the
/// whole VOEvent on one line), so the event's size and layout are the file's.
const TEMPLATE: &str = include_str!("event.xml");

/// Builds the events of one run: the template is split once at its placeholders, so an
/// event costs one allocation and a few copies.
pub struct EventMaker {
    /// This run's identifier (hex), distinct across runs against the same broker.
    pub run: String,
    prefix: String,
    /// Literal pieces and the placeholder following each (the last has none).
    parts: Vec<(&'static str, Option<&'static str>)>,
    date: String,
    pad: String,
}

impl EventMaker {
    pub fn new(pad: usize) -> EventMaker {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Seconds, nanoseconds and pid: distinct across runs against the same broker.
        let mix = (now.as_secs() << 20)
            ^ u64::from(now.subsec_nanos())
            ^ (u64::from(std::process::id()) << 40);
        let mut date = bolide::time::utc_timestamp(now.as_secs());
        date.pop(); // no trailing Z, as GCN writes it
        let run = format!("{:x}", mix & 0xffff_ffff_ffff);
        let mut parts = Vec::new();
        let mut rest = TEMPLATE;
        while let Some(at) = rest.find('{') {
            let end = at + rest[at..].find('}').expect("closing brace");
            parts.push((&rest[..at], Some(&rest[at + 1..end])));
            rest = &rest[end + 1..];
        }
        parts.push((rest, None));
        EventMaker {
            prefix: format!("{IVORN_BASE}{run}-"),
            run,
            parts,
            date,
            pad: " ".repeat(pad.min(1)) + &"x".repeat(pad.saturating_sub(1)),
        }
    }

    /// Ivorn prefix shared by every event of this run: `<base><run>-`.
    pub fn prefix(&self) -> String {
        self.prefix.clone()
    }

    /// Event `local` (the part after the run prefix) of class `class`, already framed
    /// (4-byte length prefix) when `framed`.
    fn build(&self, local: &str, seq: u64, class: u64, framed: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(TEMPLATE.len() + self.pad.len() + 128);
        if framed {
            out.extend_from_slice(&[0; 4]);
        }
        let (seq, class) = (seq.to_string(), class.to_string());
        for (lit, ph) in &self.parts {
            out.extend_from_slice(lit.as_bytes());
            match ph {
                Some("ivorn") => {
                    out.extend_from_slice(self.prefix.as_bytes());
                    out.extend_from_slice(local.as_bytes());
                }
                Some("date") => out.extend_from_slice(self.date.as_bytes()),
                Some("class") => out.extend_from_slice(class.as_bytes()),
                Some("seq") => out.extend_from_slice(seq.as_bytes()),
                Some("run") => out.extend_from_slice(self.run.as_bytes()),
                Some("pad") => out.extend_from_slice(self.pad.as_bytes()),
                Some(other) => unreachable!("placeholder {other}"),
                None => {}
            }
        }
        if framed {
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
        }
        out
    }

    /// The event alone, as a VTP frame's payload.
    pub fn event(&self, local: &str, seq: u64, class: u64) -> Vec<u8> {
        self.build(local, seq, class, false)
    }

    /// The event as a whole VTP frame, ready to write.
    pub fn framed(&self, local: &str, seq: u64, class: u64) -> Vec<u8> {
        self.build(local, seq, class, true)
    }
}
