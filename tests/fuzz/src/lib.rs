//! The fuzz harnesses: one function per target, each asserting its invariants with
//! `assert!` so that a violation is a crash to libFuzzer.
//!
//! The same file is compiled into the main crate's `tests/fuzz_regressions.rs` (via
//! `#[path]`), so every saved crash input and a set of seed inputs are replayed through
//! exactly this code by `make test`, without a fuzzer.

use std::io::{self, Read};
use std::net::SocketAddr;

use bolide::frame::{self, FrameError, FrameReader};
use bolide::transport::{self, Meta, Role};
use bolide::xml::{self, Limits};
use bolide::{ivoid, voevent};

// ---------------------------------------------------------------------------------------
// frame
// ---------------------------------------------------------------------------------------

/// Bytes of fuzz input that configure the `frame` target before the wire bytes start.
pub const FRAME_HEADER: usize = 4;

/// The frame-size limit chosen by the first header byte.
fn frame_limit(b: u8) -> usize {
    match b % 4 {
        0 => 1 << 20,
        1 => (b >> 2) as usize,
        2 => ((b >> 2) as usize) << 8,
        _ => u32::MAX as usize,
    }
}

/// Read chunk size for one header byte: 0 is "as much as fits" (64 KiB), 0xFF is "return
/// `Interrupted`" (once in a row), anything else that many bytes.
enum Step {
    Bytes(usize),
    Interrupted,
}

fn step(c: u8) -> Step {
    match c {
        0 => Step::Bytes(1 << 16),
        0xFF => Step::Interrupted,
        n => Step::Bytes(n as usize),
    }
}

/// A reader that returns `data` in the chunk sizes cycled from `steps`.
struct Chunked<'a> {
    data: &'a [u8],
    steps: [u8; 3],
    i: usize,
    last_interrupted: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let s = step(self.steps[self.i % 3]);
            self.i += 1;
            match s {
                Step::Interrupted if self.last_interrupted => continue,
                Step::Interrupted => {
                    self.last_interrupted = true;
                    return Err(io::ErrorKind::Interrupted.into());
                }
                Step::Bytes(n) => {
                    self.last_interrupted = false;
                    let n = n.min(buf.len()).min(self.data.len());
                    buf[..n].copy_from_slice(&self.data[..n]);
                    self.data = &self.data[n..];
                    return Ok(n);
                }
            }
        }
    }
}

/// The announced length at `at` in `wire`, if four bytes are there.
fn announced(wire: &[u8], at: usize) -> Option<usize> {
    let p = wire.get(at..at + 4)?;
    Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
}

/// Input: 4 header bytes (limit selector, three chunk sizes), then the wire bytes.
///
/// Invariants, for both the push API and `read_frame`: no panic; every frame returned is
/// no longer than the limit; the frames, re-encoded with `frame::encode`, are exactly the
/// prefix of the wire bytes consumed so far; `has_frame`, `partial` and `buffered` agree
/// with what `next_frame` does; a `TooLarge` error names the announced length, which is
/// over the limit; `Closed`/`Truncated` at end of input describe the unconsumed tail.
pub fn frame(data: &[u8]) {
    let mut header = [0u8, 0, 0, 0];
    let n = data.len().min(FRAME_HEADER);
    header[..n].copy_from_slice(&data[..n]);
    let wire = &data[n..];
    let limit = frame_limit(header[0]);
    let mut steps = [header[1], header[2], header[3]];
    if steps == [0xFF; 3] {
        steps[2] = 1; // some step must move data
    }
    frame_push(wire, limit, steps);
    frame_read(wire, limit, steps);
}

fn check_too_large(e: &FrameError, wire: &[u8], consumed: usize, limit: usize) {
    match *e {
        FrameError::TooLarge {
            len,
            limit: l,
            le_hint,
        } => {
            assert_eq!(l, limit);
            assert_eq!(Some(len as usize), announced(wire, consumed));
            assert!(len as usize > limit);
            assert_eq!(le_hint, len.swap_bytes() as usize <= limit);
        }
        ref other => panic!("unexpected frame error {other:?}"),
    }
}

fn frame_push(wire: &[u8], limit: usize, steps: [u8; 3]) {
    let mut fr = FrameReader::new(limit);
    let mut consumed = 0; // wire bytes returned as frames (prefixes included)
    let mut pushed = 0;
    let mut i = 0;
    'feed: while pushed < wire.len() {
        let n = match step(steps[i % 3]) {
            Step::Bytes(n) => n,
            Step::Interrupted => 0,
        };
        i += 1;
        let end = (pushed + n).min(wire.len());
        fr.push(&wire[pushed..end]);
        pushed = end;
        loop {
            assert_eq!(fr.buffered(), pushed - consumed);
            let has = fr.has_frame();
            match fr.next_frame() {
                Ok(Some(f)) => {
                    assert!(has, "next_frame returned a frame has_frame did not see");
                    assert!(f.len() <= limit, "frame of {} > limit {limit}", f.len());
                    let enc = frame::encode(&f);
                    assert_eq!(&wire[consumed..consumed + enc.len()], &enc[..]);
                    consumed += enc.len();
                }
                Ok(None) => {
                    assert!(!has, "has_frame true but next_frame gave nothing");
                    let rest = pushed - consumed;
                    match fr.partial() {
                        None => assert_eq!(rest, 0),
                        Some((have, want)) => {
                            assert_eq!(have, rest);
                            let w = announced(&wire[..pushed], consumed).map_or(4, |l| l + 4);
                            assert_eq!(want, w);
                            assert!(have < want);
                        }
                    }
                    break;
                }
                Err(e) => {
                    check_too_large(&e, wire, consumed, limit);
                    break 'feed;
                }
            }
        }
    }
}

fn frame_read(wire: &[u8], limit: usize, steps: [u8; 3]) {
    let mut fr = FrameReader::new(limit);
    let mut r = Chunked {
        data: wire,
        steps,
        i: 0,
        last_interrupted: false,
    };
    let mut consumed = 0;
    loop {
        match fr.read_frame(&mut r) {
            Ok(f) => {
                assert!(f.len() <= limit, "frame of {} > limit {limit}", f.len());
                let enc = frame::encode(&f);
                assert_eq!(&wire[consumed..consumed + enc.len()], &enc[..]);
                consumed += enc.len();
            }
            Err(FrameError::Closed) => {
                assert_eq!(consumed, wire.len());
                return;
            }
            Err(FrameError::Truncated { have, want }) => {
                assert!(r.data.is_empty());
                assert_eq!(have, wire.len() - consumed);
                assert!(have > 0 && have < want);
                let w = announced(wire, consumed).map_or(4, |l| l + 4);
                assert_eq!(want, w);
                return;
            }
            Err(e) => {
                check_too_large(&e, wire, consumed, limit);
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// transport
// ---------------------------------------------------------------------------------------

/// Replace what XML 1.0 cannot carry at all (C0 controls but TAB/LF/CR, U+FFFE, U+FFFF).
fn xml_chars(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Input: any bytes. First `transport::parse` on them as they are (no panic; the role
/// agrees with the role attribute). Then the input is split at 0xFF bytes (never valid
/// UTF-8) into strings; they are built into a Transport message with `transport::build`
/// and parsed back, which must give the role, origin, response, result and filters
/// exactly: origin and response trimmed (`parse` trims them, by design), a
/// missing/empty response omitted.
pub fn transport(data: &[u8]) {
    let quick = transport::quick_role(data);
    if let Ok(m) = transport::parse(data) {
        assert_eq!(m.role, Role::from_attr(&m.role_attr));
        // The start-tag fast path never contradicts the parser.
        if let Some(r) = quick {
            assert_eq!(m.role, Some(r), "quick_role disagrees with parse");
        }
    }

    let mut parts = data.split(|&b| b == 0xFF);
    let ctl = parts.next().and_then(|p| p.first().copied()).unwrap_or(0);
    let mut next = || parts.next().map(|p| xml_chars(&String::from_utf8_lossy(p)));
    let role = [Role::IAmAlive, Role::Authenticate, Role::Ack, Role::Nak][(ctl & 3) as usize];
    let origin = next().unwrap_or_default();
    let response = next();
    let (result, filters): (Option<String>, Vec<String>) = match (ctl >> 2) % 3 {
        0 => (None, Vec::new()),
        1 => (Some(next().unwrap_or_default()), Vec::new()),
        _ => (None, std::iter::from_fn(&mut next).collect()),
    };
    let meta = match (&result, (ctl >> 2) % 3) {
        (Some(r), _) => Meta::Result(r),
        (None, 0) => Meta::None,
        (None, _) => Meta::Filters(&filters),
    };
    let wire = transport::build(
        role,
        &origin,
        response.as_deref(),
        "2024-01-01T00:00:00Z",
        meta,
    );
    let m = match transport::parse(&wire) {
        Ok(m) => m,
        // The parser's documented limits (text 256 KiB per element, attribute values
        // 64 KiB) apply to what bolide builds as well; a field past them is refused by
        // design, not a round-trip failure.
        Err(transport::TransportError::Xml(bolide::xml::XmlError::TooLong { .. })) => return,
        Err(e) => panic!(
            "build produced a message parse refuses: {e}\n{}",
            String::from_utf8_lossy(&wire)
        ),
    };
    assert_eq!(m.role, Some(role));
    assert_eq!(m.role_attr, role.as_str());
    assert_eq!(m.origin.as_deref(), Some(origin.trim()));
    let want_response = response.as_deref().filter(|r| !r.is_empty()).map(str::trim);
    assert_eq!(m.response.as_deref(), want_response);
    assert_eq!(m.result, result);
    assert_eq!(m.filters, filters);
}

// ---------------------------------------------------------------------------------------
// xml
// ---------------------------------------------------------------------------------------

/// Input: any bytes, parsed by `xml::parse` with the default limits.
///
/// Invariants: no panic; on success the root span lies within the input, starts with `<`
/// and ends with `>`, and starts at the root's offset; every element's offset is inside
/// the root span, at a `<` followed by the element's qualified name, in strictly
/// increasing document order; parent links point backwards and agree with the
/// first-child / next-sibling links; the element count respects the limit.
pub fn xml(data: &[u8]) {
    let limits = Limits::default();
    let Ok(doc) = xml::parse(data, limits) else {
        return;
    };
    let span = doc.root_span.clone();
    assert!(span.start < span.end && span.end <= data.len(), "{span:?}");
    assert_eq!(data[span.start], b'<');
    assert_eq!(data[span.end - 1], b'>');
    assert!(!doc.elements.is_empty());
    assert!(doc.elements.len() <= limits.max_elements);
    assert_eq!(doc.root().offset, span.start);
    assert!(doc.root().parent.is_none());
    let mut prev = None;
    for (id, el) in doc.elements.iter().enumerate() {
        assert!(el.offset < data.len());
        assert!(span.contains(&el.offset));
        assert_eq!(data[el.offset], b'<');
        assert!(data[el.offset + 1..].starts_with(el.qname.as_bytes()));
        assert!(prev.map_or(true, |p| p < el.offset), "offsets out of order");
        prev = Some(el.offset);
        if id > 0 {
            let p = el.parent.expect("non-root element without parent");
            assert!(p < id);
        }
        let mut last = None;
        for c in doc.children(id) {
            assert!(c > id && last.map_or(true, |l| l < c));
            assert_eq!(doc.elements[c].parent, Some(id));
            last = Some(c);
        }
    }
}

// ---------------------------------------------------------------------------------------
// voevent (full author pipeline, schema validator, IVOID checks)
// ---------------------------------------------------------------------------------------

/// Input: any bytes, as an author's frame payload.
///
/// `voevent::check_author_event` (parse, root, namespace, ivorn, role, version, IVOID,
/// schema) must not panic; on success the event keeps the payload byte for byte, its
/// frame is `frame::encode(payload)`, its ivorn passes `check_event_ivorn` and is the
/// root's `ivorn` attribute. `schema::validate` is also run directly on every document
/// that parses (whatever its root), `check_upstream_event` on the input, and
/// `ivoid::check_event_ivorn` / `check_local_ivo` on the input as a string.
pub fn voevent(data: &[u8]) {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    match voevent::check_author_event(data, Limits::default(), peer) {
        Ok(ev) => {
            assert_eq!(ev.payload(), data);
            assert_eq!(ev.frame(), &frame::encode(data)[..]);
            assert!(ivoid::check_event_ivorn(&ev.ivorn).is_ok());
            let doc = xml::parse(data, Limits::default()).expect("accepted but unparsable");
            assert_eq!(doc.attr(0, "ivorn"), Some(ev.ivorn.as_str()));
            assert!(bolide::schema::validate(&doc, data).is_ok());
        }
        Err((_, r)) => {
            let _ = voevent::nak_text(&r);
        }
    }
    if let Ok(doc) = xml::parse(data, Limits::default()) {
        if let Err(e) = bolide::schema::validate(&doc, data) {
            let _ = e.to_string();
        }
    }
    let _ = voevent::check_upstream_event(data, Limits::default(), "fuzz");
    let s = String::from_utf8_lossy(data);
    for line in std::iter::once(&*s).chain(s.lines().take(4)) {
        let ev = ivoid::check_event_ivorn(line);
        let local = ivoid::check_local_ivo(line);
        if let Ok(id) = ivoid::parse(line) {
            assert!(line.starts_with("ivo://"));
            assert_eq!(ev.is_ok(), id.local.is_some_and(|l| !l.is_empty()));
            assert_eq!(local.is_ok(), id.local.is_none());
        } else {
            assert!(ev.is_err() && local.is_err());
        }
    }
}
