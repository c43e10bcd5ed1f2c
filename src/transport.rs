//! VTP Transport messages (`iamalive`, `authenticate`, `ack`, `nak`).
//!
//! Building: byte for byte what Comet emits (lxml's pretty printer: the `trn` prefix on
//! `http://www.telescope-networks.org/xml/Transport/v1.1`, attributes in Comet's order,
//! two-space indentation, trailing LF). Parsing: lenient, as deployed peers need: any
//! namespace or none, the `TimeStamp` never looked at, unknown children ignored.
//! [`quick_role`] recognises the two messages a subscriber sends for every event or
//! interval (`ack`, `iamalive`) from the root start tag alone, so counting them never
//! costs a document parse per delivered copy.

use std::fmt;

use crate::xml::{self, Document, XmlError};

/// The namespace Comet writes (spec §2.1).
pub const TRANSPORT_NS: &str = "http://www.telescope-networks.org/xml/Transport/v1.1";

/// A Transport message's `role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    IAmAlive,
    Authenticate,
    Ack,
    Nak,
}

impl Role {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::IAmAlive => "iamalive",
            Role::Authenticate => "authenticate",
            Role::Ack => "ack",
            Role::Nak => "nak",
        }
    }

    /// Parse an attribute value (exact, as Comet compares it).
    pub fn from_attr(s: &str) -> Option<Role> {
        match s {
            "iamalive" => Some(Role::IAmAlive),
            "authenticate" => Some(Role::Authenticate),
            "ack" => Some(Role::Ack),
            "nak" => Some(Role::Nak),
            _ => None,
        }
    }
}

/// The role of an `ack` or `iamalive` Transport message, read from the root start tag
/// only; `None` means "parse it properly" (another role, or anything unusual: a DOCTYPE,
/// a reference in the value, a root that is not `Transport`, a malformed tag). What
/// follows the start tag is not looked at: for these two roles nothing else is used.
pub fn quick_role(payload: &[u8]) -> Option<Role> {
    let mut i = 0;
    // Prolog: whitespace, the XML declaration, comments, processing instructions.
    loop {
        while payload.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        let rest = payload.get(i..)?;
        if rest.starts_with(b"<?") {
            i += find(rest, b"?>")? + 2;
        } else if rest.starts_with(b"<!--") {
            i += find(rest, b"-->")? + 3;
        } else if rest.starts_with(b"<") && !rest.starts_with(b"<!") {
            i += 1;
            break;
        } else {
            return None;
        }
    }
    // Root name, with any prefix: the local part must be `Transport`.
    let name_end = i + payload[i..]
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')?;
    let name = &payload[i..name_end];
    let local = name.rsplit(|b| *b == b':').next()?;
    if local != b"Transport" {
        return None;
    }
    // Attributes, up to the end of the start tag.
    i = name_end;
    loop {
        while payload.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        match payload.get(i)? {
            b'>' | b'/' => return None,
            _ => {}
        }
        let eq = i + payload[i..].iter().position(|b| *b == b'=')?;
        let mut attr = &payload[i..eq];
        while let [rest @ .., last] = attr {
            if !last.is_ascii_whitespace() {
                break;
            }
            attr = rest;
        }
        if attr.is_empty() || attr.iter().any(|b| matches!(b, b'<' | b'>' | b'"' | b'\'')) {
            return None;
        }
        i = eq + 1;
        while payload.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        let quote = *payload.get(i)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let v_start = i + 1;
        let v_end = v_start + payload[v_start..].iter().position(|b| *b == quote)?;
        let value = &payload[v_start..v_end];
        if value.contains(&b'<') {
            return None;
        }
        if attr == b"role" {
            return match value {
                b"ack" => Some(Role::Ack),
                b"iamalive" => Some(Role::IAmAlive),
                _ => None,
            };
        }
        i = v_end + 1;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Escape text content the way lxml does.
pub fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            _ => out.push(c),
        }
    }
}

/// Escape an attribute value the way lxml does.
pub fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            _ => out.push(c),
        }
    }
}

/// What goes inside `<Meta>`.
#[derive(Clone, Copy, Debug)]
pub enum Meta<'a> {
    /// No `Meta` element.
    None,
    /// `<Meta><Result>…</Result></Meta>` (nak reasons).
    Result(&'a str),
    /// `Param name="xpath-filter"` per filter; an empty list gives `<Meta/>`.
    Filters(&'a [String]),
    /// The filters, then bolide's catch-up position ([`POSITION_PARAM`]).
    Position(&'a [String], &'a str),
}

/// The `Param` with which bolide brokers exchange catch-up positions ([`crate::replay`]):
/// a subscriber's authenticate response carries where it stopped, an upstream's
/// `iamalive` where the events that follow it start. Other brokers ignore it (Comet reads
/// only `xpath-filter` Params).
pub const POSITION_PARAM: &str = "bolide-position";

/// Serialize a Transport message exactly as Comet does. `response` is omitted when `None`
/// or empty (Comet omits it when it has no local IVOID).
pub fn build(
    role: Role,
    origin: &str,
    response: Option<&str>,
    timestamp: &str,
    meta: Meta<'_>,
) -> Vec<u8> {
    let mut s = String::with_capacity(512);
    s.push_str("<?xml version='1.0' encoding='UTF-8'?>\n");
    s.push_str("<trn:Transport xmlns:trn=\"");
    s.push_str(TRANSPORT_NS);
    s.push_str("\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" version=\"1.0\" xsi:schemaLocation=\"http://telescope-networks.org/schema/Transport/v1.1 http://www.telescope-networks.org/schema/Transport-v1.1.xsd\" role=\"");
    s.push_str(role.as_str());
    s.push_str("\">\n  <Origin>");
    escape_text(origin, &mut s);
    s.push_str("</Origin>\n");
    if let Some(r) = response.filter(|r| !r.is_empty()) {
        s.push_str("  <Response>");
        escape_text(r, &mut s);
        s.push_str("</Response>\n");
    }
    s.push_str("  <TimeStamp>");
    s.push_str(timestamp);
    s.push_str("</TimeStamp>\n");
    match meta {
        Meta::None => {}
        Meta::Result(text) => {
            s.push_str("  <Meta>\n    <Result>");
            escape_text(text, &mut s);
            s.push_str("</Result>\n  </Meta>\n");
        }
        Meta::Filters([]) => s.push_str("  <Meta/>\n"),
        Meta::Filters(filters) => {
            s.push_str("  <Meta>\n");
            push_params("xpath-filter", filters.iter().map(String::as_str), &mut s);
            s.push_str("  </Meta>\n");
        }
        Meta::Position(filters, position) => {
            s.push_str("  <Meta>\n");
            push_params("xpath-filter", filters.iter().map(String::as_str), &mut s);
            push_params(POSITION_PARAM, [position], &mut s);
            s.push_str("  </Meta>\n");
        }
    }
    s.push_str("</trn:Transport>\n");
    s.into_bytes()
}

/// One `<Param name="…" value="…"/>` line per value.
fn push_params<'v>(name: &str, values: impl IntoIterator<Item = &'v str>, s: &mut String) {
    for v in values {
        s.push_str("    <Param name=\"");
        s.push_str(name);
        s.push_str("\" value=\"");
        escape_attr(v, s);
        s.push_str("\"/>\n");
    }
}

/// `iamalive` from a broker to a subscriber.
pub fn iamalive(local_ivo: &str) -> Vec<u8> {
    build(
        Role::IAmAlive,
        local_ivo,
        None,
        &crate::time::utc_now(),
        Meta::None,
    )
}

/// `authenticate` from a broker to a subscriber.
pub fn authenticate(local_ivo: &str) -> Vec<u8> {
    build(
        Role::Authenticate,
        local_ivo,
        None,
        &crate::time::utc_now(),
        Meta::None,
    )
}

/// Subscriber's answer to an `iamalive`: Origin copied, Response our IVOID if any.
pub fn iamalive_response(origin: &str, local_ivo: Option<&str>) -> Vec<u8> {
    build(
        Role::IAmAlive,
        origin,
        local_ivo,
        &crate::time::utc_now(),
        Meta::None,
    )
}

/// Subscriber's answer to an `authenticate`, carrying its filters.
pub fn authenticate_response(origin: &str, local_ivo: Option<&str>, filters: &[String]) -> Vec<u8> {
    build(
        Role::Authenticate,
        origin,
        local_ivo,
        &crate::time::utc_now(),
        Meta::Filters(filters),
    )
}

/// A bolide subscriber's answer to an `authenticate`: its filters and its catch-up
/// position (empty: none yet).
pub fn authenticate_response_at(
    origin: &str,
    local_ivo: Option<&str>,
    filters: &[String],
    position: &str,
) -> Vec<u8> {
    build(
        Role::Authenticate,
        origin,
        local_ivo,
        &crate::time::utc_now(),
        Meta::Position(filters, position),
    )
}

/// `iamalive` to a bolide subscriber, telling it the position the events that follow
/// start after.
pub fn iamalive_at(local_ivo: &str, position: &str) -> Vec<u8> {
    build(
        Role::IAmAlive,
        local_ivo,
        None,
        &crate::time::utc_now(),
        Meta::Position(&[], position),
    )
}

/// `ack` for the event `ivorn`.
pub fn ack(ivorn: &str, local_ivo: Option<&str>) -> Vec<u8> {
    build(
        Role::Ack,
        ivorn,
        local_ivo,
        &crate::time::utc_now(),
        Meta::None,
    )
}

/// `nak` for the event `ivorn` with a human-readable `Result`.
pub fn nak(ivorn: &str, local_ivo: Option<&str>, result: &str) -> Vec<u8> {
    build(
        Role::Nak,
        ivorn,
        local_ivo,
        &crate::time::utc_now(),
        Meta::Result(result),
    )
}

/// A received Transport message, reduced to what bolide acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// `None` when the role attribute is missing or not one of the four.
    pub role: Option<Role>,
    /// The role attribute as written (for log lines).
    pub role_attr: String,
    pub origin: Option<String>,
    pub response: Option<String>,
    /// `Meta/Result` text.
    pub result: Option<String>,
    /// Filters, both forms: `Meta/Param[@name="xpath-filter"]/@value` and
    /// `Meta/filter[@type="xpath"]` text, in document order.
    pub filters: Vec<String>,
    /// `Meta/Param[@name="bolide-position"]/@value` ([`POSITION_PARAM`]).
    pub position: Option<String>,
}

/// Why a payload is not a usable Transport message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Not well-formed XML.
    Xml(XmlError),
    /// Well-formed, but the root is something else (local name given).
    NotTransport(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Xml(e) => e.fmt(f),
            TransportError::NotTransport(root) => {
                write!(f, "expected a Transport message, got <{root}>")
            }
        }
    }
}

impl std::error::Error for TransportError {}

/// Extract a [`Message`] from a document whose root is `Transport` (any namespace).
pub fn from_document(doc: &Document<'_>) -> Result<Message, TransportError> {
    let root = doc.root();
    if root.local != "Transport" {
        return Err(TransportError::NotTransport(
            root.local.chars().take(60).collect(),
        ));
    }
    let role_attr = doc.attr(0, "role").unwrap_or("").to_string();
    let mut m = Message {
        role: Role::from_attr(&role_attr),
        role_attr,
        ..Message::default()
    };
    for c in doc.children(0) {
        let el = &doc.elements[c];
        if el.ns.is_some() {
            continue;
        }
        match el.local {
            "Origin" => m.origin = Some(el.text.trim().to_string()),
            "Response" => m.response = Some(el.text.trim().to_string()),
            "Meta" => {
                for mc in doc.children(c) {
                    let me = &doc.elements[mc];
                    if me.ns.is_some() {
                        continue;
                    }
                    match me.local {
                        "Result" => m.result = Some(me.text.to_string()),
                        "Param" if doc.attr(mc, "name") == Some("xpath-filter") => {
                            if let Some(v) = doc.attr(mc, "value") {
                                m.filters.push(v.to_string());
                            }
                        }
                        "Param" if doc.attr(mc, "name") == Some(POSITION_PARAM) => {
                            m.position = doc.attr(mc, "value").map(str::to_string);
                        }
                        "filter" if doc.attr(mc, "type") == Some("xpath") => {
                            m.filters.push(me.text.to_string());
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(m)
}

/// Parse a payload as a Transport message.
pub fn parse(payload: &[u8]) -> Result<Message, TransportError> {
    let doc = xml::parse(payload, xml::Limits::default()).map_err(TransportError::Xml)?;
    from_document(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2012-01-01T00:00:00Z";
    const HEAD: &str = "<?xml version='1.0' encoding='UTF-8'?>\n<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" version=\"1.0\" xsi:schemaLocation=\"http://telescope-networks.org/schema/Transport/v1.1 http://www.telescope-networks.org/schema/Transport-v1.1.xsd\" role=";

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    /// The exact bytes lxml produces for Comet's messages (spec §2.1).
    #[test]
    fn byte_compatible_with_comet() {
        assert_eq!(
            s(build(Role::IAmAlive, "ivo://comet.broker/test", None, TS, Meta::None)),
            format!("{HEAD}\"iamalive\">\n  <Origin>ivo://comet.broker/test</Origin>\n  <TimeStamp>{TS}</TimeStamp>\n</trn:Transport>\n")
        );
        assert_eq!(
            s(build(Role::Ack, "ivo://a.b/c#1", Some("ivo://me.test/broker"), TS, Meta::None)),
            format!("{HEAD}\"ack\">\n  <Origin>ivo://a.b/c#1</Origin>\n  <Response>ivo://me.test/broker</Response>\n  <TimeStamp>{TS}</TimeStamp>\n</trn:Transport>\n")
        );
        assert_eq!(
            s(build(Role::Nak, "ivo://a.b/c#1", Some("ivo://me.test/b"), TS, Meta::Result("Event rejected: Previously seen by this broker"))),
            format!("{HEAD}\"nak\">\n  <Origin>ivo://a.b/c#1</Origin>\n  <Response>ivo://me.test/b</Response>\n  <TimeStamp>{TS}</TimeStamp>\n  <Meta>\n    <Result>Event rejected: Previously seen by this broker</Result>\n  </Meta>\n</trn:Transport>\n")
        );
        assert_eq!(
            s(build(Role::Authenticate, "ivo://x.y/z", None, TS, Meta::Filters(&[]))),
            format!("{HEAD}\"authenticate\">\n  <Origin>ivo://x.y/z</Origin>\n  <TimeStamp>{TS}</TimeStamp>\n  <Meta/>\n</trn:Transport>\n")
        );
        let f = vec!["//Param[@name=\"SC_Lat\" and @value>600]".to_string()];
        assert_eq!(
            s(build(Role::Authenticate, "ivo://x.y/z", Some("ivo://me.me/s"), TS, Meta::Filters(&f))),
            format!("{HEAD}\"authenticate\">\n  <Origin>ivo://x.y/z</Origin>\n  <Response>ivo://me.me/s</Response>\n  <TimeStamp>{TS}</TimeStamp>\n  <Meta>\n    <Param name=\"xpath-filter\" value=\"//Param[@name=&quot;SC_Lat&quot; and @value&gt;600]\"/>\n  </Meta>\n</trn:Transport>\n")
        );
    }

    #[test]
    fn text_is_escaped() {
        let v = s(build(Role::Nak, "", None, TS, Meta::Result("a<b & c>d")));
        assert!(v.contains("<Origin></Origin>"));
        assert!(v.contains("<Result>a&lt;b &amp; c&gt;d</Result>"));
    }

    #[test]
    fn round_trip_and_leniency() {
        let m = parse(&nak(
            "ivo://a.b/c#1",
            Some("ivo://me.test/b"),
            "Event rejected: x",
        ))
        .unwrap();
        assert_eq!(m.role, Some(Role::Nak));
        assert_eq!(m.origin.as_deref(), Some("ivo://a.b/c#1"));
        assert_eq!(m.response.as_deref(), Some("ivo://me.test/b"));
        assert_eq!(m.result.as_deref(), Some("Event rejected: x"));
        // pygcn's namespace, local time with microseconds, no Z.
        let pygcn = br#"<?xml version="1.0" encoding="UTF-8"?><trn:Transport role="iamalive" version="1.0" xmlns:trn="http://telescope-networks.org/schema/Transport/v1.1"><Origin>ivo://gcn</Origin><TimeStamp>2024-01-01T12:00:00.123456</TimeStamp></trn:Transport>"#;
        let m = parse(pygcn).unwrap();
        assert_eq!(m.role, Some(Role::IAmAlive));
        assert_eq!(m.origin.as_deref(), Some("ivo://gcn"));
        // No namespace at all; both filter forms.
        let both = br#"<Transport role="authenticate"><Origin>o</Origin><Meta><Param name="xpath-filter" value="//Who"/><filter type="xpath">//What</filter><Param name="other" value="x"/></Meta></Transport>"#;
        let m = parse(both).unwrap();
        assert_eq!(m.filters, vec!["//Who".to_string(), "//What".to_string()]);
        assert_eq!(m.role, Some(Role::Authenticate));
        // Unknown role is reported as None with the text kept.
        let m = parse(b"<Transport role='hello'/>").unwrap();
        assert_eq!((m.role, m.role_attr.as_str()), (None, "hello"));
        assert!(matches!(
            parse(b"<VOEvent/>"),
            Err(TransportError::NotTransport(_))
        ));
        assert!(matches!(parse(b"junk"), Err(TransportError::Xml(_))));
    }

    /// The fast path agrees with the full parse wherever it answers, and declines
    /// everything but plain `ack` and `iamalive` start tags.
    #[test]
    fn quick_role_agrees_with_the_parser() {
        let pygcn_ack = br#"<?xml version='1.0' encoding='UTF-8'?>
<!-- a comment -->
<trn:Transport xmlns:trn="http://telescope-networks.org/schema/Transport/v1.1" version = '1.0' role = 'ack'><Origin>x</Origin></trn:Transport>"#;
        let answered: Vec<(Vec<u8>, Role)> = vec![
            (ack("ivo://a.b/c#1", Some("ivo://me.test/b")), Role::Ack),
            (ack("ivo://a.b/c#1", None), Role::Ack),
            (iamalive_response("ivo://me.test/b", None), Role::IAmAlive),
            (iamalive("ivo://me.test/b"), Role::IAmAlive),
            (pygcn_ack.to_vec(), Role::Ack),
            (b"<Transport role=\"iamalive\"/>".to_vec(), Role::IAmAlive),
        ];
        for (msg, role) in &answered {
            let shown = String::from_utf8_lossy(msg);
            assert_eq!(quick_role(msg), Some(*role), "{shown}");
            assert_eq!(parse(msg).unwrap().role, Some(*role), "{shown}");
        }
        let declined: Vec<Vec<u8>> = vec![
            nak("ivo://a.b/c#1", None, "Event rejected: x"),
            authenticate("ivo://me.test/b"),
            b"<VOEvent role=\"ack\"/>".to_vec(),
            b"<Transport version=\"1.0\"><Meta role=\"ack\"/></Transport>".to_vec(),
            b"<!DOCTYPE x [<!ENTITY a \"ack\">]><Transport role=\"&a;\"/>".to_vec(),
            b"<Transport role=\"ack ack\"/>".to_vec(),
            b"<Transport role=ack/>".to_vec(),
            b"<Transport foo:role=\"ack\"/>".to_vec(),
            b"<Transport role=\"ac".to_vec(),
            b"<!-- <Transport role=\"ack\"/>".to_vec(),
            b"junk".to_vec(),
            Vec::new(),
        ];
        for msg in &declined {
            assert_eq!(quick_role(msg), None, "{}", String::from_utf8_lossy(msg));
        }
    }
}
