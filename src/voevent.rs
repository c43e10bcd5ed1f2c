//! VOEvent packets as bolide handles them: parse once, check, and keep the exact bytes.
//!
//! An [`Event`] holds the frame exactly as received (length prefix included, so each copy
//! to a subscriber is one `write_all`), the `ivorn`, the role, and the dedup key: the
//! SHA-256 of the VTP 2.0 span (root `<` through root end `>`, spec §4). It is shared as
//! `Arc<Event>` by the dispatcher, every subscriber queue and the handlers, so its bytes
//! live in memory once however many subscribers receive it.
//!
//! [`check_author_event`] is the full author-submission pipeline (well-formedness, root,
//! namespace, ivorn, role, version, IVOID, schema) and names the first failure in a
//! [`Rejection`]. [`check_upstream_event`] is the lenient one for events relayed by other
//! brokers (no schema, no IVOID; spec §5.2).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use crate::ivoid::{self, IvoidError};
use crate::schema::{self, SchemaError};
use crate::xml::{self, Document, Limits, XmlError};

/// The VOEvent 2.0 namespace.
pub const VOEVENT_NS: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";

/// Dedup key: SHA-256 of the VTP 2.0 span.
pub type Key = [u8; 32];

/// A VOEvent's `role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventRole {
    Observation,
    Prediction,
    Utility,
    Test,
}

impl EventRole {
    /// Parse the attribute (exact, no trimming: the schema's enumeration).
    pub fn from_attr(s: &str) -> Option<EventRole> {
        match s {
            "observation" => Some(EventRole::Observation),
            "prediction" => Some(EventRole::Prediction),
            "utility" => Some(EventRole::Utility),
            "test" => Some(EventRole::Test),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventRole::Observation => "observation",
            EventRole::Prediction => "prediction",
            EventRole::Utility => "utility",
            EventRole::Test => "test",
        }
    }
}

/// Where an event came from (for log lines and, later, split decisions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Submitted by an author connected from this address.
    Author(SocketAddr),
    /// Relayed by the upstream broker at this address.
    Upstream(String),
    /// A message consumed from Kafka (`--kafka-topic`): where it sits in the topic.
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// This broker's own periodic test event.
    Local,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Author(a) => write!(f, "author {a}"),
            Origin::Upstream(u) => write!(f, "upstream {u}"),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka {topic} partition {partition} offset {offset}"),
            Origin::Local => write!(f, "local test event"),
        }
    }
}

/// One accepted-for-processing VOEvent.
#[derive(Debug)]
pub struct Event {
    /// Length prefix + payload, exactly as received.
    frame: Vec<u8>,
    pub ivorn: String,
    pub role: EventRole,
    pub key: Key,
    pub origin: Origin,
    /// `Who/AuthorIVORN` and `Who/Date` as written (trimmed), for the archive; `None`
    /// where absent.
    pub author_ivorn: Option<String>,
    pub authored: Option<String>,
    /// The payload as the archive stores it ([`crate::archive::pack`]), packed by the
    /// thread that checked the event ([`Event::pack_for_archive`]) so that the one
    /// thread that commits does not spend its time compressing; `None`: packed at
    /// commit, if archived at all.
    pub packed: Option<Box<[u8]>>,
}

impl Event {
    /// Wrap an already-checked payload.
    pub fn new(
        payload: &[u8],
        ivorn: String,
        role: EventRole,
        span: std::ops::Range<usize>,
        origin: Origin,
    ) -> Event {
        let key: Key = Sha256::digest(&payload[span]).into();
        Event {
            frame: crate::frame::encode(payload),
            ivorn,
            role,
            key,
            origin,
            author_ivorn: None,
            authored: None,
            packed: None,
        }
    }

    /// An archived event read back for a catch-up ([`crate::replay`]): its exact bytes and
    /// stored key, nothing parsed or hashed again.
    pub fn archived(e: &crate::archive::Entry<'_>) -> Event {
        Event {
            frame: crate::frame::encode(e.bytes),
            ivorn: e.ivorn.to_string(),
            role: e.role,
            key: e.key,
            origin: Origin::Local,
            author_ivorn: None,
            authored: None,
            packed: None,
        }
    }

    /// Take `Who/AuthorIVORN` and `Who/Date` from the event's document.
    pub fn with_who(mut self, doc: &Document<'_>) -> Event {
        let text = |parent, name| {
            doc.child(parent, name)
                .map(|id| doc.elements[id].text.trim().to_string())
        };
        if let Some(who) = doc.child(0, "Who") {
            self.author_ivorn = text(who, "AuthorIVORN");
            self.authored = text(who, "Date");
        }
        self
    }

    /// Pack the payload for the archive now, on this thread (`packed`).
    pub fn pack_for_archive(&mut self) {
        self.packed = Some(crate::archive::pack(self.payload()).into_boxed_slice());
    }

    /// The payload bytes (no length prefix).
    pub fn payload(&self) -> &[u8] {
        &self.frame[4..]
    }

    /// The frame as it goes on the wire.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Hex of the dedup key (for logs).
    pub fn key_hex(&self) -> String {
        self.key.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why an author's submission was refused. The `Display` text is the reason that follows
/// `Event rejected: ` in the nak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not well-formed, not UTF-8, DOCTYPE, limits...
    Xml(XmlError),
    /// A Transport message on the receive port.
    Transport { role: String },
    /// Some other root element.
    NotVoevent { root: String },
    /// The root is `VOEvent` in the wrong namespace (or none).
    Namespace { ns: Option<String> },
    /// No `ivorn` attribute.
    MissingIvorn,
    /// A role outside the four.
    Role(String),
    /// `version` is not 2.0.
    Version(String),
    /// The ivorn breaks the IVOID rules.
    Ivoid(IvoidError),
    /// The VOEvent 2.0 schema says no.
    Schema(Box<SchemaError>),
    /// The dedup store has it already.
    Duplicate,
    /// The event store failed (full map, I/O error).
    Storage,
    /// The broker is shutting down or overloaded.
    Unavailable,
    /// `--author-config` does not let this address publish this ivorn. `allowed`: the
    /// prefixes of the rule that refused it; `None`: no rule covers the address
    /// (`--author-config-strict`).
    NotPermitted {
        ivorn: String,
        addr: IpAddr,
        allowed: Option<Vec<String>>,
    },
    /// Over `--author-rate`: more than `events` per `secs` seconds from `addr`.
    RateLimited {
        events: u32,
        secs: u64,
        addr: IpAddr,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Xml(e) => e.fmt(f),
            Rejection::Transport { role } => write!(
                f,
                "expected a VOEvent, got a Transport message (role={})",
                role.chars().take(40).collect::<String>()
            ),
            Rejection::NotVoevent { root } => {
                write!(f, "expected a VOEvent, got a <{root}> document")
            }
            Rejection::Namespace { ns: None } => write!(
                f,
                "VOEvent root element is not in the VOEvent 2.0 namespace ({VOEVENT_NS})"
            ),
            Rejection::Namespace { ns: Some(ns) } => write!(
                f,
                "not a VOEvent 2.0 document (namespace {ns}; expected {VOEVENT_NS})"
            ),
            Rejection::MissingIvorn => write!(f, "missing ivorn"),
            Rejection::Role(r) => write!(
                f,
                "invalid role '{r}' (expected observation, prediction, utility or test)"
            ),
            Rejection::Version(v) => write!(f, "unsupported VOEvent version {v} (expected 2.0)"),
            Rejection::Ivoid(e) => e.fmt(f),
            Rejection::Schema(e) => write!(f, "schema-invalid: {e}"),
            Rejection::Duplicate => write!(f, "Previously seen by this broker"),
            Rejection::Storage => write!(f, "storage unavailable"),
            Rejection::Unavailable => write!(f, "broker unavailable, try again later"),
            Rejection::NotPermitted {
                ivorn,
                addr,
                allowed: Some(allowed),
            } => write!(
                f,
                "ivorn {ivorn} not permitted for {addr} (allowed: {})",
                allowed.join(", ")
            ),
            Rejection::NotPermitted {
                ivorn,
                addr,
                allowed: None,
            } => write!(
                f,
                "ivorn {ivorn} not permitted for {addr} (no --author-config rule for this address)"
            ),
            Rejection::RateLimited { events, secs, addr } => {
                write!(f, "rate limit exceeded ({events} per {secs} s from {addr})")
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// The full text of the nak `Result` for a rejection.
pub fn nak_text(r: &Rejection) -> String {
    format!("Event rejected: {r}")
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Root checks shared by both paths: returns the ivorn (if present) of a VOEvent root.
fn voevent_root<'d>(doc: &'d Document<'_>) -> Result<Option<&'d str>, Rejection> {
    let root = doc.root();
    match root.local {
        "VOEvent" => Ok(doc.attr(0, "ivorn")),
        "Transport" => Err(Rejection::Transport {
            role: doc.attr(0, "role").unwrap_or("").to_string(),
        }),
        other => Err(Rejection::NotVoevent { root: clip(other) }),
    }
}

/// Check an author's submission completely. On failure, the ivorn is returned too when
/// one could be read, for the nak's `Origin`.
pub fn check_author_event(
    payload: &[u8],
    limits: Limits,
    peer: SocketAddr,
) -> Result<Event, (Option<String>, Rejection)> {
    let doc = xml::parse(payload, limits).map_err(|e| (None, Rejection::Xml(e)))?;
    let ivorn = voevent_root(&doc).map_err(|r| (None, r))?;
    let root = doc.root();
    let ivorn = ivorn.map(str::to_string);
    let fail = |r: Rejection| (ivorn.clone(), r);
    if root.ns != Some(VOEVENT_NS) {
        return Err(fail(Rejection::Namespace {
            ns: root.ns.map(clip),
        }));
    }
    let Some(iv) = ivorn.as_deref() else {
        return Err(fail(Rejection::MissingIvorn));
    };
    let role = match doc.attr(0, "role") {
        None => EventRole::Observation,
        Some(r) => EventRole::from_attr(r).ok_or_else(|| fail(Rejection::Role(clip(r))))?,
    };
    match doc.attr(0, "version") {
        Some(v) if v.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) == "2.0" => {}
        Some(v) => return Err(fail(Rejection::Version(clip(v)))),
        None => return Err(fail(Rejection::Version("(none)".into()))),
    }
    ivoid::check_event_ivorn(iv).map_err(|e| fail(Rejection::Ivoid(e)))?;
    schema::validate(&doc, payload).map_err(|e| fail(Rejection::Schema(Box::new(e))))?;
    Ok(Event::new(
        payload,
        iv.to_string(),
        role,
        doc.root_span.clone(),
        Origin::Author(peer),
    )
    .with_who(&doc))
}

/// Check an event relayed by an upstream broker, already parsed: a `VOEvent` root in any
/// namespace. The ivorn may be missing (it is then empty); the role defaults to
/// observation and an unknown role is treated as observation too, since nothing here is
/// refused for content (spec §5.2).
pub fn upstream_event(
    doc: &Document<'_>,
    payload: &[u8],
    upstream: &str,
) -> Result<Event, Rejection> {
    relayed_event(doc, payload, Origin::Upstream(upstream.to_string()))
}

/// An event relayed from `origin` (an upstream broker or a Kafka topic): the lenient
/// checks of [`upstream_event`].
pub fn relayed_event(
    doc: &Document<'_>,
    payload: &[u8],
    origin: Origin,
) -> Result<Event, Rejection> {
    let ivorn = voevent_root(doc)?.unwrap_or("").to_string();
    let role = doc
        .attr(0, "role")
        .and_then(EventRole::from_attr)
        .unwrap_or(EventRole::Observation);
    Ok(Event::new(payload, ivorn, role, doc.root_span.clone(), origin).with_who(doc))
}

/// Parse and check an event relayed by an upstream broker (see [`upstream_event`]).
pub fn check_upstream_event(
    payload: &[u8],
    limits: Limits,
    upstream: &str,
) -> Result<Event, Rejection> {
    let doc = xml::parse(payload, limits).map_err(Rejection::Xml)?;
    upstream_event(&doc, payload, upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    const BASE: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://bolide.test/unit#1" role="observation" version="2.0"><Who><AuthorIVORN>ivo://bolide.test/author</AuthorIVORN><Date>2024-01-01T00:00:00</Date></Who></voe:VOEvent>
"#;

    fn check(s: &str) -> Result<Event, (Option<String>, Rejection)> {
        check_author_event(s.as_bytes(), Limits::default(), peer())
    }

    #[test]
    fn accepts_and_keys_on_the_span() {
        let e = check(BASE).unwrap();
        assert_eq!(e.ivorn, "ivo://bolide.test/unit#1");
        assert_eq!(e.role, EventRole::Observation);
        assert_eq!(e.payload(), BASE.as_bytes());
        assert_eq!(&e.frame()[..4], &(BASE.len() as u32).to_be_bytes());
        // Declaration and trailing comments are outside the span: same key.
        let other = BASE.replace(
            "<?xml version='1.0' encoding='UTF-8'?>",
            "<?xml version=\"1.0\"?><!-- hi -->",
        );
        assert_eq!(check(&other).unwrap().key, e.key);
        // One whitespace character inside the element: different key.
        let spaced = BASE.replace("<Who>", "<Who> ");
        assert_ne!(check(&spaced).unwrap().key, e.key);
    }

    #[test]
    fn missing_role_is_observation() {
        let e = check(&BASE.replace(" role=\"observation\"", "")).unwrap();
        assert_eq!(e.role, EventRole::Observation);
    }

    #[test]
    fn rejections_in_order_with_origin() {
        let (iv, r) = check(&BASE.replace("role=\"observation\"", "role=\"alert\"")).unwrap_err();
        assert_eq!(iv.as_deref(), Some("ivo://bolide.test/unit#1"));
        assert_eq!(r, Rejection::Role("alert".into()));
        let (iv, r) = check(&BASE.replace(" ivorn=\"ivo://bolide.test/unit#1\"", "")).unwrap_err();
        assert_eq!((iv, r), (None, Rejection::MissingIvorn));
        let (_, r) = check(&BASE.replace("version=\"2.0\"", "version=\"1.1\"")).unwrap_err();
        assert_eq!(r, Rejection::Version("1.1".into()));
        let (_, r) = check(&BASE.replace("unit#1", "unit")).unwrap_err();
        assert_eq!(r, Rejection::Ivoid(IvoidError::NoLocalId));
        let (_, r) = check(&BASE.replace("v2.0", "v1.1")).unwrap_err();
        assert!(matches!(r, Rejection::Namespace { ns: Some(_) }));
        let (_, r) = check(&BASE.replace("<Who>", "<Trigger/><Who>")).unwrap_err();
        assert!(matches!(r, Rejection::Schema(_)));
        let (_, r) = check("<trn:Transport xmlns:trn='x' role='iamalive'/>").unwrap_err();
        assert_eq!(
            r,
            Rejection::Transport {
                role: "iamalive".into()
            }
        );
        assert_eq!(
            nak_text(&r),
            "Event rejected: expected a VOEvent, got a Transport message (role=iamalive)"
        );
        let (_, r) = check("<html/>").unwrap_err();
        assert!(matches!(r, Rejection::NotVoevent { .. }));
    }

    #[test]
    fn upstream_is_lenient() {
        let e = check_upstream_event(
            b"<VOEvent role='bogus'><Who/></VOEvent>",
            Limits::default(),
            "up:8099",
        )
        .unwrap();
        assert_eq!((e.ivorn.as_str(), e.role), ("", EventRole::Observation));
        assert!(check_upstream_event(b"junk", Limits::default(), "u").is_err());
    }
}
