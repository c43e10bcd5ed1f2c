//! The parser: bytes in, a [`Document`] out.
//!
//! It owns everything that reads untrusted input: the byte-order mark and encoding checks,
//! the block-wise check for characters XML 1.0 forbids, the byte-class table the scanners
//! use, and [`Parser`], which walks the document without recursion and enforces
//! [`Limits`] as it goes. The types it produces live in the parent module.

use std::borrow::Cow;

use super::{Attribute, Document, Element, ElementId, Limits, XmlError};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Parse `input` into a [`Document`] under `limits`.
pub fn parse(input: &[u8], limits: Limits) -> Result<Document<'_>, XmlError> {
    if input.is_empty() {
        return Err(XmlError::Empty);
    }
    // Byte-order marks: UTF-8 is skipped, UTF-16/32 refused before anything else.
    let mut start = 0;
    if input.starts_with(&[0xEF, 0xBB, 0xBF]) {
        start = 3;
    } else if input.starts_with(&[0xFE, 0xFF]) || input.starts_with(&[0xFF, 0xFE]) {
        return Err(XmlError::UnsupportedEncoding("UTF-16".into()));
    } else if input.len() >= 4
        && (input[..4] == [b'<', 0, b'?', 0] || input[..4] == [0, b'<', 0, b'?'])
    {
        return Err(XmlError::UnsupportedEncoding("UTF-16 without BOM".into()));
    }
    let text = match std::str::from_utf8(input) {
        Ok(t) => t,
        Err(e) => {
            return Err(XmlError::InvalidUtf8 {
                offset: e.valid_up_to(),
            })
        }
    };
    check_chars(input)?;
    let mut p = Parser {
        s: text,
        b: input,
        pos: start,
        limits,
        elements: Vec::with_capacity(64),
        attributes: Vec::with_capacity(64),
        ns_stack: Vec::with_capacity(8),
        open: Vec::with_capacity(16),
        last_child: Vec::with_capacity(16),
        attr_scratch: Vec::with_capacity(8),
    };
    p.document()
}

/// Reject characters outside XML 1.0's `Char` production: C0 controls other than TAB, LF
/// and CR, and U+FFFE / U+FFFF. (Surrogates cannot occur in valid UTF-8.)
fn check_chars(b: &[u8]) -> Result<(), XmlError> {
    // Fast pass over 32-byte blocks without an early exit (so it vectorizes): only a block
    // holding a control byte or 0xEF (the lead byte of U+FFFE/U+FFFF) is looked at closely.
    const BLOCK: usize = 32;
    for (n, block) in b.chunks(BLOCK).enumerate() {
        let suspect = block
            .iter()
            .fold(false, |acc, &c| acc | (c < 0x20) | (c == 0xEF));
        if suspect {
            check_chars_slow(b, n * BLOCK, block.len())?;
        }
    }
    Ok(())
}

fn check_chars_slow(b: &[u8], from: usize, len: usize) -> Result<(), XmlError> {
    for i in from..from + len {
        let c = b[i];
        if c < 0x20 && c != b'\t' && c != b'\n' && c != b'\r' {
            return Err(XmlError::InvalidChar {
                ch: c as u32,
                offset: i,
            });
        }
        if c == 0xEF
            && i + 2 < b.len()
            && b[i + 1] == 0xBF
            && (b[i + 2] == 0xBE || b[i + 2] == 0xBF)
        {
            let ch = if b[i + 2] == 0xBE { 0xFFFE } else { 0xFFFF };
            return Err(XmlError::InvalidChar { ch, offset: i });
        }
    }
    Ok(())
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (c as u32) >= 0xC0
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == '-' || c == '.' || c == '\u{B7}'
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Byte classes for the scanners (one table lookup per byte instead of a chain of
/// comparisons).
const NAME_START: u8 = 1; // an ASCII name's first byte: letters, `_`, `:`
const NAME_CHAR: u8 = 2; // an ASCII name's other bytes: those, digits, `-`, `.`
const VALUE_STOP: u8 = 4; // ends a plain attribute value: quotes, `<`, `&`, TAB, LF, CR
const TEXT_STOP: u8 = 8; // ends plain character data: `<`, `&`, CR, `]`

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphabetic() || b == b'_' || b == b':' {
            t[c] |= NAME_START | NAME_CHAR;
        }
        if b.is_ascii_digit() || b == b'-' || b == b'.' {
            t[c] |= NAME_CHAR;
        }
        if matches!(b, b'"' | b'\'' | b'<' | b'&' | b'\t' | b'\n' | b'\r') {
            t[c] |= VALUE_STOP;
        }
        if matches!(b, b'<' | b'&' | b'\r' | b']') {
            t[c] |= TEXT_STOP;
        }
        c += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

/// If `qname` declares a namespace, the prefix it binds: `Some("")` for `xmlns` (the
/// default namespace), `Some(p)` for `xmlns:p` (`p` is empty for a bare `xmlns:`, which
/// is malformed).
fn ns_declaration(qname: &str) -> Option<&str> {
    if qname.as_bytes().first() != Some(&b'x') {
        return None;
    }
    if same(qname, "xmlns") {
        Some("")
    } else {
        qname.strip_prefix("xmlns:")
    }
}

/// String equality for the short names compared here (prefixes, attribute and tag
/// names): an inlined byte loop instead of a call to `memcmp`.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

struct RawAttr<'a> {
    qname: &'a str,
    value: Cow<'a, str>,
    offset: usize,
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    limits: Limits,
    elements: Vec<Element<'a>>,
    attributes: Vec<Attribute<'a>>,
    /// (prefix, uri) bindings; `""` prefix is the default namespace. `None` uri = undeclared.
    ns_stack: Vec<(&'a str, Option<&'a str>)>,
    /// Open elements: (element id, ns_stack length before its declarations).
    open: Vec<(ElementId, usize)>,
    /// Last child appended under each open element (parallel to `open`).
    last_child: Vec<Option<ElementId>>,
    attr_scratch: Vec<RawAttr<'a>>,
}

impl<'a> Parser<'a> {
    fn err(&self, msg: &'static str) -> XmlError {
        XmlError::Syntax {
            msg,
            offset: self.pos,
        }
    }

    fn eof(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn starts(&self, lit: &str) -> bool {
        self.b[self.pos..].starts_with(lit.as_bytes())
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if is_ws(c) {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn expect(&mut self, lit: &str, msg: &'static str) -> Result<(), XmlError> {
        if self.starts(lit) {
            self.pos += lit.len();
            Ok(())
        } else if self.eof() {
            Err(XmlError::UnexpectedEnd)
        } else {
            Err(self.err(msg))
        }
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let start = self.pos;
        let b = self.b;
        // ASCII names (all of VOEvent's) byte by byte; the first non-ASCII byte hands over
        // to the general path over chars.
        match b.get(start) {
            None => return Err(XmlError::UnexpectedEnd),
            Some(&c) if class(c) & NAME_START != 0 => {}
            Some(&c) if c >= 0x80 => return self.name_general(start, start),
            Some(_) => return Err(self.err("expected a name")),
        }
        let mut end = start + 1;
        while end < b.len() && class(b[end]) & NAME_CHAR != 0 {
            end += 1;
        }
        if b.get(end).is_some_and(|&c| c >= 0x80) {
            return self.name_general(start, end);
        }
        self.pos = end;
        Ok(&self.s[start..end])
    }

    /// [`Self::name`] from `resume` on, for names with non-ASCII characters.
    fn name_general(&mut self, start: usize, resume: usize) -> Result<&'a str, XmlError> {
        let mut chars = self.s[resume..].char_indices();
        if resume == start {
            match chars.next() {
                Some((_, c)) if is_name_start(c) => {}
                Some(_) => return Err(self.err("expected a name")),
                None => return Err(XmlError::UnexpectedEnd),
            }
        }
        let mut end = self.s.len();
        for (i, c) in chars {
            if !is_name_char(c) {
                end = resume + i;
                break;
            }
        }
        self.pos = end;
        Ok(&self.s[start..end])
    }

    fn document(&mut self) -> Result<Document<'a>, XmlError> {
        let declared_encoding = if self.starts("<?xml") && {
            let n = self.b.get(self.pos + 5).copied();
            n.map_or(true, is_ws)
        } {
            self.xml_decl()?
        } else {
            None
        };
        // Prolog: whitespace, comments, PIs. No DOCTYPE.
        loop {
            self.skip_ws();
            if self.eof() {
                return Err(XmlError::NoRoot);
            }
            if self.starts("<!--") {
                self.comment()?;
            } else if self.starts("<?") {
                self.pi()?;
            } else if self.starts("<!DOCTYPE") || self.starts("<!doctype") {
                return Err(XmlError::Doctype);
            } else if self.peek() == Some(b'<') {
                break;
            } else {
                return Err(self.err("text before the root element"));
            }
        }
        let root_start = self.pos;
        let root_end = self.root_element()?;
        // Epilog: whitespace, comments, PIs only.
        loop {
            self.skip_ws();
            if self.eof() {
                break;
            }
            if self.starts("<!--") {
                self.comment()?;
            } else if self.starts("<?") {
                self.pi()?;
            } else if self.starts("<!DOCTYPE") {
                return Err(XmlError::Doctype);
            } else {
                return Err(XmlError::ContentAfterRoot { offset: self.pos });
            }
        }
        Ok(Document {
            elements: std::mem::take(&mut self.elements),
            attributes: std::mem::take(&mut self.attributes),
            root_span: root_start..root_end,
            declared_encoding,
        })
    }

    fn xml_decl(&mut self) -> Result<Option<&'a str>, XmlError> {
        self.pos += 5;
        let mut encoding = None;
        let mut seen_version = false;
        loop {
            let had_ws = self.peek().is_some_and(is_ws);
            self.skip_ws();
            if self.starts("?>") {
                self.pos += 2;
                break;
            }
            if self.eof() {
                return Err(XmlError::UnexpectedEnd);
            }
            if !had_ws {
                return Err(self.err("malformed XML declaration"));
            }
            let name = self.name()?;
            self.skip_ws();
            self.expect("=", "malformed XML declaration")?;
            self.skip_ws();
            let q = self.peek().ok_or(XmlError::UnexpectedEnd)?;
            if q != b'"' && q != b'\'' {
                return Err(self.err("malformed XML declaration"));
            }
            self.pos += 1;
            let vstart = self.pos;
            while self.peek().is_some_and(|c| c != q) {
                self.pos += 1;
            }
            if self.eof() {
                return Err(XmlError::UnexpectedEnd);
            }
            let value = &self.s[vstart..self.pos];
            self.pos += 1;
            match name {
                "version" => {
                    if value != "1.0" && value != "1.1" {
                        return Err(self.err("unsupported XML version"));
                    }
                    seen_version = true;
                }
                "encoding" => {
                    let ok = value.eq_ignore_ascii_case("utf-8")
                        || value.eq_ignore_ascii_case("utf8")
                        || value.eq_ignore_ascii_case("us-ascii")
                        || value.eq_ignore_ascii_case("ascii");
                    if !ok {
                        return Err(XmlError::UnsupportedEncoding(
                            value.chars().take(40).collect(),
                        ));
                    }
                    encoding = Some(value);
                }
                "standalone" => {}
                _ => return Err(self.err("malformed XML declaration")),
            }
        }
        if !seen_version {
            return Err(self.err("XML declaration without version"));
        }
        Ok(encoding)
    }

    fn comment(&mut self) -> Result<(), XmlError> {
        self.pos += 4;
        match self.s[self.pos..].find("--") {
            Some(i) => {
                self.pos += i;
                if self.starts("-->") {
                    self.pos += 3;
                    Ok(())
                } else {
                    Err(self.err("'--' inside a comment"))
                }
            }
            None => Err(XmlError::UnexpectedEnd),
        }
    }

    fn pi(&mut self) -> Result<(), XmlError> {
        self.pos += 2;
        let target = self.name()?;
        if target.eq_ignore_ascii_case("xml") {
            return Err(self.err("XML declaration not at the start of the document"));
        }
        match self.s[self.pos..].find("?>") {
            Some(i) => {
                self.pos += i + 2;
                Ok(())
            }
            None => Err(XmlError::UnexpectedEnd),
        }
    }

    /// Parse the root element and everything inside it, iteratively. Returns the offset just
    /// past the root's closing `>`.
    fn root_element(&mut self) -> Result<usize, XmlError> {
        loop {
            // At a '<' that starts markup inside (or at) the root.
            match self.b.get(self.pos + 1) {
                Some(b'/') => {
                    let end = self.end_tag()?;
                    if self.open.is_empty() {
                        return Ok(end);
                    }
                }
                Some(b'!') => {
                    if self.starts("<!--") {
                        self.comment()?;
                    } else if self.starts("<![CDATA[") {
                        if self.open.is_empty() {
                            return Err(self.err("CDATA section outside the root element"));
                        }
                        self.cdata()?;
                    } else if self.starts("<!DOCTYPE") {
                        return Err(XmlError::Doctype);
                    } else {
                        return Err(self.err("unexpected markup declaration"));
                    }
                }
                Some(b'?') => self.pi()?,
                _ => {
                    let empty_end = self.start_tag()?;
                    if let Some(end) = empty_end {
                        if self.open.is_empty() {
                            return Ok(end);
                        }
                    }
                }
            }
            // Character data up to the next '<', in one pass that also notes whether it
            // needs decoding (`&`, CR) and whether it holds the forbidden `]]>`.
            let start = self.pos;
            let b = self.b;
            let mut i = start;
            let mut plain = true;
            let mut cdata_end = false;
            let stop = loop {
                let Some(&c) = b.get(i) else {
                    return Err(XmlError::UnexpectedEnd);
                };
                if class(c) & TEXT_STOP != 0 {
                    match c {
                        b'<' => break i,
                        b']' => cdata_end |= b[i..].starts_with(b"]]>"),
                        _ => plain = false,
                    }
                }
                i += 1;
            };
            if stop > start {
                if self.open.is_empty() {
                    // Cannot happen: the root closed above.
                    return Err(XmlError::ContentAfterRoot { offset: start });
                }
                if cdata_end {
                    return Err(XmlError::Syntax {
                        msg: "']]>' in character data",
                        offset: start,
                    });
                }
                let raw = &self.s[start..stop];
                let text = if plain {
                    Cow::Borrowed(raw)
                } else {
                    self.decode_text(raw, start, false)?
                };
                self.push_text(text)?;
                self.pos = stop;
            }
        }
    }

    fn push_text(&mut self, t: Cow<'a, str>) -> Result<(), XmlError> {
        let Some(&(id, _)) = self.open.last() else {
            return Err(self.err("character data outside the root element"));
        };
        let limit = self.limits.max_text_len;
        let el = &mut self.elements[id];
        if el.text.len() + t.len() > limit {
            return Err(XmlError::TooLong {
                what: "text of one element",
                limit,
                offset: self.pos,
            });
        }
        el.has_char_data = true;
        if el.text.is_empty() {
            el.text = t;
        } else {
            el.text.to_mut().push_str(&t);
        }
        Ok(())
    }

    fn cdata(&mut self) -> Result<(), XmlError> {
        self.pos += 9;
        match self.s[self.pos..].find("]]>") {
            Some(i) => {
                let t = &self.s[self.pos..self.pos + i];
                self.pos += i + 3;
                self.push_text(Cow::Borrowed(t))
            }
            None => Err(XmlError::UnexpectedEnd),
        }
    }

    /// Replace references in text or attribute values. `attr` also normalizes TAB/CR/LF to
    /// spaces, as XML attribute-value normalization requires.
    fn decode_text(&self, raw: &'a str, base: usize, attr: bool) -> Result<Cow<'a, str>, XmlError> {
        let needs = raw
            .bytes()
            .any(|c| c == b'&' || (attr && matches!(c, b'\t' | b'\n' | b'\r')) || c == b'\r');
        if !needs {
            return Ok(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let bytes = raw.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c == b'&' {
                let semi = raw[i..].find(';').ok_or(XmlError::Syntax {
                    msg: "unterminated reference",
                    offset: base + i,
                })?;
                let name = &raw[i + 1..i + semi];
                let ch = match name {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    "apos" => '\'',
                    _ if name.starts_with('#') => {
                        let code = if let Some(h) = name.strip_prefix("#x") {
                            u32::from_str_radix(h, 16).ok()
                        } else {
                            name[1..].parse::<u32>().ok()
                        };
                        let ok = |c: u32| {
                            matches!(c, 0x9 | 0xA | 0xD)
                                || (0x20..=0xD7FF).contains(&c)
                                || (0xE000..=0xFFFD).contains(&c)
                                || (0x10000..=0x10FFFF).contains(&c)
                        };
                        match code.filter(|&c| ok(c)).and_then(char::from_u32) {
                            Some(c) => c,
                            None => {
                                return Err(XmlError::Syntax {
                                    msg: "invalid character reference",
                                    offset: base + i,
                                })
                            }
                        }
                    }
                    _ => {
                        return Err(XmlError::UndefinedEntity {
                            name: name.chars().take(40).collect(),
                            offset: base + i,
                        })
                    }
                };
                if attr && matches!(ch, '\t' | '\n' | '\r') && !name.starts_with('#') {
                    out.push(' ');
                } else {
                    out.push(ch);
                }
                i += semi + 1;
            } else if c == b'\r' {
                // End-of-line handling: CRLF and lone CR become LF (space in attributes).
                out.push(if attr { ' ' } else { '\n' });
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                i += 1;
            } else if attr && (c == b'\t' || c == b'\n') {
                out.push(' ');
                i += 1;
            } else {
                // Copy a run of ordinary bytes (UTF-8 boundaries are preserved because the
                // special bytes are all ASCII).
                let run = bytes[i..]
                    .iter()
                    .position(|&b| b == b'&' || b == b'\r' || (attr && (b == b'\t' || b == b'\n')))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&raw[i..run]);
                i = run;
            }
        }
        Ok(Cow::Owned(out))
    }

    /// Parse a start tag at `<`. Returns `Some(end)` for an empty-element tag.
    fn start_tag(&mut self) -> Result<Option<usize>, XmlError> {
        let offset = self.pos;
        self.pos += 1;
        let qname = self.name()?;
        self.attr_scratch.clear();
        let ns_mark = self.ns_stack.len();
        let empty;
        loop {
            let had_ws = self.peek().is_some_and(is_ws);
            self.skip_ws();
            match self.peek() {
                None => return Err(XmlError::UnexpectedEnd),
                Some(b'>') => {
                    self.pos += 1;
                    empty = false;
                    break;
                }
                Some(b'/') => {
                    self.expect("/>", "expected '/>'")?;
                    empty = true;
                    break;
                }
                _ => {}
            }
            if !had_ws {
                return Err(self.err("expected whitespace between attributes"));
            }
            let aoff = self.pos;
            let aname = self.name()?;
            self.skip_ws();
            self.expect("=", "expected '=' after attribute name")?;
            self.skip_ws();
            let Some(q) = self.peek() else {
                return Err(XmlError::UnexpectedEnd);
            };
            if q != b'"' && q != b'\'' {
                return Err(self.err("attribute value not quoted"));
            }
            self.pos += 1;
            let vstart = self.pos;
            // Up to the closing quote (or a '<'), noting whether the value needs decoding
            // (references, TAB/LF/CR to normalize).
            let b = self.b;
            let mut vend = vstart;
            let mut plain = true;
            loop {
                let Some(&c) = b.get(vend) else {
                    return Err(XmlError::UnexpectedEnd);
                };
                if class(c) & VALUE_STOP != 0 {
                    if c == q || c == b'<' {
                        break;
                    }
                    if c != b'"' && c != b'\'' {
                        plain = false;
                    }
                }
                vend += 1;
            }
            if vend - vstart > self.limits.max_attribute_len {
                return Err(XmlError::TooLong {
                    what: "attribute value",
                    limit: self.limits.max_attribute_len,
                    offset: vstart,
                });
            }
            if self.b[vend] == b'<' {
                self.pos = vend;
                return Err(self.err("'<' in attribute value"));
            }
            let raw = &self.s[vstart..vend];
            let value = if plain {
                Cow::Borrowed(raw)
            } else {
                self.decode_text(raw, vstart, true)?
            };
            self.pos = vend + 1;
            if self.attr_scratch.len() >= self.limits.max_attributes {
                return Err(XmlError::TooManyAttributes {
                    limit: self.limits.max_attributes,
                });
            }
            if let Some(prefix) = ns_declaration(aname) {
                let v: &'a str = match value {
                    Cow::Borrowed(v) => v,
                    Cow::Owned(_) => return Err(self.err("unsupported namespace URI")),
                };
                if prefix.is_empty() && aname.len() > 5 {
                    return Err(XmlError::Syntax {
                        msg: "malformed qualified name",
                        offset: aoff,
                    });
                } else if prefix.is_empty() {
                    self.ns_stack
                        .push(("", if v.is_empty() { None } else { Some(v) }));
                } else {
                    if v.is_empty() {
                        return Err(self.err("empty namespace URI for a prefix"));
                    }
                    self.ns_stack.push((prefix, Some(v)));
                }
            }
            self.attr_scratch.push(RawAttr {
                qname: aname,
                value,
                offset: aoff,
            });
        }
        if self.elements.len() >= self.limits.max_elements {
            return Err(XmlError::TooManyElements {
                limit: self.limits.max_elements,
            });
        }
        if self.open.len() >= self.limits.max_depth {
            return Err(XmlError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        // Resolve the element's and attributes' namespaces.
        let (ns, local) = self.resolve(qname, offset, true)?;
        // Duplicate check on raw names (catches xmlns duplicates too), then on expanded
        // names below.
        for (i, a) in self.attr_scratch.iter().enumerate() {
            if self.attr_scratch[..i]
                .iter()
                .any(|b| same(b.qname, a.qname))
            {
                return Err(XmlError::DuplicateAttribute {
                    name: a.qname.chars().take(60).collect(),
                    offset: a.offset,
                });
            }
        }
        let first = self.attributes.len();
        let mut raw = std::mem::take(&mut self.attr_scratch);
        for a in raw.drain(..) {
            if ns_declaration(a.qname).is_some() {
                continue;
            }
            let (ans, alocal) = self.resolve(a.qname, a.offset, false)?;
            self.attributes.push(Attribute {
                ns: ans,
                local: alocal,
                qname: a.qname,
                value: a.value,
            });
        }
        self.attr_scratch = raw;
        let attrs = &self.attributes[first..];
        for (i, a) in attrs.iter().enumerate() {
            if attrs[..i]
                .iter()
                .any(|b| same(b.local, a.local) && b.ns == a.ns)
            {
                return Err(XmlError::DuplicateAttribute {
                    name: a.qname.chars().take(60).collect(),
                    offset,
                });
            }
        }
        // Both fit: the input is at most 4 GiB (a VTP length prefix is 32 bits).
        let attr_range = first as u32..self.attributes.len() as u32;

        let id = self.elements.len();
        let parent = self.open.last().map(|&(p, _)| p);
        self.elements.push(Element {
            ns,
            local,
            qname,
            offset,
            attr_range,
            parent,
            first_child: None,
            next_sibling: None,
            text: Cow::Borrowed(""),
            has_char_data: false,
        });
        if let Some(p) = parent {
            let slot = self.last_child.last_mut().expect("parallel to open");
            match *slot {
                Some(prev) => self.elements[prev].next_sibling = Some(id),
                None => self.elements[p].first_child = Some(id),
            }
            *slot = Some(id);
        }
        if empty {
            self.ns_stack.truncate(ns_mark);
            Ok(Some(self.pos))
        } else {
            self.open.push((id, ns_mark));
            self.last_child.push(None);
            Ok(None)
        }
    }

    fn resolve(
        &self,
        qname: &'a str,
        offset: usize,
        element: bool,
    ) -> Result<(Option<&'a str>, &'a str), XmlError> {
        let bytes = qname.as_bytes();
        let (prefix, local) = match bytes.iter().position(|&c| c == b':') {
            Some(i) => {
                if i == 0 || i + 1 == bytes.len() || bytes[i + 1..].contains(&b':') {
                    return Err(XmlError::Syntax {
                        msg: "malformed qualified name",
                        offset,
                    });
                }
                (&qname[..i], &qname[i + 1..])
            }
            None if !element => return Ok((None, qname)),
            None => ("", qname),
        };
        if same(prefix, "xml") {
            return Ok((Some(XML_NS), local));
        }
        for &(p, uri) in self.ns_stack.iter().rev() {
            if same(p, prefix) {
                return match uri {
                    Some(u) => Ok((Some(u), local)),
                    None if prefix.is_empty() => Ok((None, local)),
                    None => Err(XmlError::UndeclaredPrefix {
                        prefix: prefix.into(),
                        offset,
                    }),
                };
            }
        }
        if prefix.is_empty() {
            Ok((None, local))
        } else {
            Err(XmlError::UndeclaredPrefix {
                prefix: prefix.chars().take(40).collect(),
                offset,
            })
        }
    }

    /// Parse an end tag at `</`; returns the offset just past its `>`.
    fn end_tag(&mut self) -> Result<usize, XmlError> {
        let offset = self.pos;
        self.pos += 2;
        let name = self.name()?;
        self.skip_ws();
        self.expect(">", "expected '>' to end the end tag")?;
        let (id, mark) = match self.open.pop() {
            Some(x) => x,
            None => return Err(XmlError::ContentAfterRoot { offset }),
        };
        self.last_child.pop();
        let expected = self.elements[id].qname;
        if !same(expected, name) {
            return Err(XmlError::MismatchedTag {
                expected: expected.chars().take(60).collect(),
                found: name.chars().take(60).collect(),
                offset,
            });
        }
        self.ns_stack.truncate(mark);
        Ok(self.pos)
    }
}
