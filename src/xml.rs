//! A small, hardened, non-validating XML 1.0 + Namespaces parser.
//!
//! It owns the security boundary between untrusted bytes and the rest of bolide:
//! UTF-8 only (US-ASCII is a subset), no DOCTYPE at all (so no entity expansion and no
//! external fetches, ever), only the five predefined entities and character references,
//! namespace well-formedness, and hard limits on depth, attributes and element count that
//! are enforced while scanning, before any tree grows. Nothing here recurses, so a deeply
//! nested document cannot overflow a thread stack.
//!
//! The result is a flat arena ([`Document`]) whose strings borrow from the input wherever
//! possible, plus the byte span of the root element (`<` of its start tag to `>` of its end
//! tag), which is what VTP 2.0 deduplicates on.

use std::borrow::Cow;
use std::fmt;

/// Resource limits applied while parsing. Real VOEvents stay far below every one of them
/// (depth 8, 5 attributes per element, 146 elements in the largest real packet).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Maximum element nesting depth (the root is depth 1).
    pub max_depth: usize,
    /// Maximum attributes on one element (namespace declarations included).
    pub max_attributes: usize,
    /// Maximum number of elements in the document.
    pub max_elements: usize,
    /// Longest attribute value, in bytes as written.
    pub max_attribute_len: usize,
    /// Most character data directly inside one element, in bytes.
    pub max_text_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_attributes: 1000,
            max_elements: 100_000,
            max_attribute_len: 64 * 1024,
            max_text_len: 256 * 1024,
        }
    }
}

/// Why a document was refused. Every variant renders as a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Zero bytes.
    Empty,
    /// Bytes that are not valid UTF-8, at this byte offset.
    InvalidUtf8 { offset: usize },
    /// A declared encoding other than UTF-8 / US-ASCII, or a UTF-16 byte pattern.
    UnsupportedEncoding(String),
    /// `<!DOCTYPE` anywhere: refused outright (no DTDs, no entity declarations).
    Doctype,
    /// A character that XML 1.0 does not allow.
    InvalidChar { ch: u32, offset: usize },
    /// A reference to an entity other than the five predefined ones.
    UndefinedEntity { name: String, offset: usize },
    /// An element or attribute prefix with no `xmlns:` declaration in scope.
    UndeclaredPrefix { prefix: String, offset: usize },
    /// Nesting deeper than the limit.
    TooDeep { limit: usize },
    /// More attributes on one element than the limit.
    TooManyAttributes { limit: usize },
    /// More elements than the limit.
    TooManyElements { limit: usize },
    /// An attribute value or an element's text longer than the limit.
    TooLong {
        what: &'static str,
        limit: usize,
        offset: usize,
    },
    /// The same attribute twice on one element.
    DuplicateAttribute { name: String, offset: usize },
    /// Input ended before the document was complete.
    UnexpectedEnd,
    /// An element or text after the root element was closed.
    ContentAfterRoot { offset: usize },
    /// No root element at all (only whitespace, comments or processing instructions).
    NoRoot,
    /// Any other well-formedness error, with a short description.
    Syntax { msg: &'static str, offset: usize },
    /// An end tag that does not match its start tag.
    MismatchedTag {
        expected: String,
        found: String,
        offset: usize,
    },
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Empty => write!(f, "empty message"),
            XmlError::InvalidUtf8 { offset } => {
                write!(f, "not XML: invalid UTF-8 at byte offset {offset}")
            }
            XmlError::UnsupportedEncoding(e) => write!(
                f,
                "unsupported encoding {e} (bolide accepts UTF-8 and US-ASCII)"
            ),
            XmlError::Doctype => write!(f, "DOCTYPE / entity declarations not allowed"),
            XmlError::InvalidChar { ch, offset } => write!(
                f,
                "not well-formed: invalid character U+{ch:04X} at byte offset {offset}"
            ),
            XmlError::UndefinedEntity { name, offset } => write!(
                f,
                "not well-formed: undefined entity &{name}; at byte offset {offset}"
            ),
            XmlError::UndeclaredPrefix { prefix, offset } => write!(
                f,
                "namespace prefix {prefix} is not declared (byte offset {offset})"
            ),
            XmlError::TooDeep { limit } => write!(f, "nesting deeper than {limit} elements"),
            XmlError::TooManyAttributes { limit } => {
                write!(f, "too many attributes on one element (limit {limit})")
            }
            XmlError::TooManyElements { limit } => {
                write!(f, "too many elements (limit {limit})")
            }
            XmlError::TooLong {
                what,
                limit,
                offset,
            } => write!(f, "{what} longer than {limit} bytes at byte offset {offset}"),
            XmlError::DuplicateAttribute { name, offset } => write!(
                f,
                "not well-formed: duplicate attribute {name} at byte offset {offset}"
            ),
            XmlError::UnexpectedEnd => write!(f, "not well-formed: unexpected end of document"),
            XmlError::ContentAfterRoot { offset } => write!(
                f,
                "not well-formed: content after root element at byte offset {offset}"
            ),
            XmlError::NoRoot => write!(f, "not XML: no root element"),
            XmlError::Syntax { msg, offset } => {
                write!(f, "not XML: {msg} at byte offset {offset}")
            }
            XmlError::MismatchedTag {
                expected,
                found,
                offset,
            } => write!(
                f,
                "not well-formed: end tag </{found}> does not match <{expected}> at byte offset {offset}"
            ),
        }
    }
}

impl std::error::Error for XmlError {}

/// Index of an element in [`Document::elements`].
pub type ElementId = usize;

/// An attribute, namespace declarations excluded.
#[derive(Debug, Clone)]
pub struct Attribute<'a> {
    /// Namespace URI (`None` for unprefixed attributes).
    pub ns: Option<&'a str>,
    /// Local name.
    pub local: &'a str,
    /// The name as written (with prefix), for messages.
    pub qname: &'a str,
    /// The normalized value (references replaced, whitespace characters turned into spaces).
    pub value: Cow<'a, str>,
}

/// One element of the arena.
#[derive(Debug, Clone)]
pub struct Element<'a> {
    /// Namespace URI, `None` when the element is in no namespace.
    pub ns: Option<&'a str>,
    /// Local name.
    pub local: &'a str,
    /// The name as written (with prefix), for messages.
    pub qname: &'a str,
    /// Byte offset of the `<` of the start tag, in the original input.
    pub offset: usize,
    /// Where this element's attributes are in [`Document::attributes`] (in document
    /// order, `xmlns`/`xmlns:*` declarations excluded): one array for the whole document
    /// instead of an allocation per element. Read them with [`Document::attrs`].
    pub attr_range: std::ops::Range<u32>,
    /// Parent element.
    pub parent: Option<ElementId>,
    /// First child element.
    pub first_child: Option<ElementId>,
    /// Next sibling element.
    pub next_sibling: Option<ElementId>,
    /// All direct character data (text and CDATA), concatenated, references replaced.
    pub text: Cow<'a, str>,
    /// True if any character data (even whitespace, even an empty CDATA) appeared directly
    /// inside this element.
    pub has_char_data: bool,
}

impl<'a> Element<'a> {
    /// True if the direct character data is not all XML whitespace.
    pub fn has_non_whitespace_text(&self) -> bool {
        self.text
            .bytes()
            .any(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    }
}

/// A parsed document: the element arena, the root, and the root's byte span.
#[derive(Debug)]
pub struct Document<'a> {
    /// All elements, in document order; index 0 is the root.
    pub elements: Vec<Element<'a>>,
    /// The attributes of all elements, element by element in document order (see
    /// [`Element::attr_range`]).
    pub attributes: Vec<Attribute<'a>>,
    /// Byte range of the root element in the input: from the `<` of its start tag through
    /// the `>` that ends its end tag (or its empty-element tag).
    pub root_span: std::ops::Range<usize>,
    /// The encoding named in the XML declaration, if any.
    pub declared_encoding: Option<&'a str>,
}

impl<'a> Document<'a> {
    /// The root element.
    pub fn root(&self) -> &Element<'a> {
        &self.elements[0]
    }

    /// The attributes of element `id`, in document order.
    pub fn attrs(&self, id: ElementId) -> &[Attribute<'a>] {
        let r = &self.elements[id].attr_range;
        &self.attributes[r.start as usize..r.end as usize]
    }

    /// The value of the attribute of element `id` with no namespace and this local name.
    pub fn attr(&self, id: ElementId, local: &str) -> Option<&str> {
        self.attrs(id)
            .iter()
            .find(|a| a.ns.is_none() && a.local == local)
            .map(|a| a.value.as_ref())
    }

    /// Child elements of `id`, in order.
    pub fn children(&self, id: ElementId) -> Children<'_, 'a> {
        Children {
            doc: self,
            next: self.elements[id].first_child,
        }
    }

    /// First child of `id` in no namespace with this local name.
    pub fn child(&self, id: ElementId, local: &str) -> Option<ElementId> {
        self.children(id)
            .find(|&c| self.elements[c].local == local && self.elements[c].ns.is_none())
    }

    /// 1-based line number of a byte offset (for messages).
    pub fn line_of(input: &[u8], offset: usize) -> usize {
        1 + input[..offset.min(input.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
}

/// Iterator over the child elements of one element.
pub struct Children<'d, 'a> {
    doc: &'d Document<'a>,
    next: Option<ElementId>,
}

impl Iterator for Children<'_, '_> {
    type Item = ElementId;
    fn next(&mut self) -> Option<ElementId> {
        let cur = self.next?;
        self.next = self.doc.elements[cur].next_sibling;
        Some(cur)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Document<'_>, XmlError> {
        parse(s.as_bytes(), Limits::default())
    }

    #[test]
    fn parses_namespaces_attributes_text_and_span() {
        let src = "<?xml version='1.0' encoding='UTF-8'?>\n<!-- c -->\n<voe:VOEvent xmlns:voe=\"urn:v\" ivorn=\"ivo://a&amp;b\"><Who>\n  <Date>x&lt;y</Date></Who><What/></voe:VOEvent>\n<!-- after -->\n";
        let d = p(src).unwrap();
        let root = d.root();
        assert_eq!(root.ns, Some("urn:v"));
        assert_eq!(root.local, "VOEvent");
        assert_eq!(d.attr(0, "ivorn"), Some("ivo://a&b"));
        let span = &src[d.root_span.clone()];
        assert!(span.starts_with("<voe:VOEvent") && span.ends_with("</voe:VOEvent>"));
        let who = d.child(0, "Who").unwrap();
        let date = d.child(who, "Date").unwrap();
        assert_eq!(d.elements[date].text, "x<y");
        assert_eq!(d.elements[date].ns, None);
        assert!(!d.elements[who].has_non_whitespace_text());
        assert!(d.elements[who].has_char_data);
        let what = d.child(0, "What").unwrap();
        assert!(!d.elements[what].has_char_data);
        assert_eq!(d.children(0).count(), 2);
        assert_eq!(d.declared_encoding, Some("UTF-8"));
    }

    #[test]
    fn empty_root_span_and_default_namespace() {
        let src = "<VOEvent xmlns='urn:x' a='1'/>";
        let d = p(src).unwrap();
        assert_eq!(d.root_span, 0..src.len());
        assert_eq!(d.root().ns, Some("urn:x"));
        // Unprefixed attributes are in no namespace.
        assert_eq!(d.attrs(0)[0].ns, None);
    }

    #[test]
    fn declaration_spacing_and_bom() {
        assert!(p("<?xml version = '1.0' encoding = 'UTF-8'?><a/>").is_ok());
        let mut b = vec![0xEF, 0xBB, 0xBF];
        b.extend_from_slice(b"<a/>");
        let d = parse(&b, Limits::default()).unwrap();
        assert_eq!(d.root_span, 3..7);
    }

    #[test]
    fn cdata_and_char_refs() {
        let d = p("<a><![CDATA[<x>]]>&#65;&#x42;</a>").unwrap();
        assert_eq!(d.root().text, "<x>AB");
    }

    #[test]
    fn attribute_normalization() {
        let d = p("<a b='x\ty\nz'/>").unwrap();
        assert_eq!(d.attr(0, "b"), Some("x y z"));
    }

    #[test]
    fn refusals() {
        use XmlError::*;
        assert_eq!(p("").unwrap_err(), Empty);
        assert!(matches!(
            p("GCN notice\nTITLE: x").unwrap_err(),
            Syntax { .. }
        ));
        assert!(matches!(p("<a><b></a>").unwrap_err(), MismatchedTag { .. }));
        assert_eq!(p("<a><b>").unwrap_err(), UnexpectedEnd);
        assert!(matches!(
            p("<a/><b/>").unwrap_err(),
            ContentAfterRoot { .. }
        ));
        assert!(matches!(
            p("<a/>text").unwrap_err(),
            ContentAfterRoot { .. }
        ));
        assert!(matches!(
            p("<voe:a/>").unwrap_err(),
            UndeclaredPrefix { .. }
        ));
        assert!(matches!(
            p("<a b:c='1'/>").unwrap_err(),
            UndeclaredPrefix { .. }
        ));
        assert!(matches!(
            p("<a>&foo;</a>").unwrap_err(),
            UndefinedEntity { .. }
        ));
        assert_eq!(p("<!DOCTYPE a><a/>").unwrap_err(), Doctype);
        assert_eq!(
            p("<?xml version='1.0' encoding='X-KLINGON-7'?><a/>").unwrap_err(),
            UnsupportedEncoding("X-KLINGON-7".into())
        );
        assert!(matches!(
            p("<a>\u{0}</a>").unwrap_err(),
            InvalidChar { ch: 0, .. }
        ));
        assert!(matches!(
            parse(b"<a>\xE9</a>", Limits::default()).unwrap_err(),
            InvalidUtf8 { offset: 3 }
        ));
        assert!(matches!(
            p("<a b='1' b='2'/>").unwrap_err(),
            DuplicateAttribute { .. }
        ));
        assert!(matches!(
            p("<a xmlns:x='u' xmlns:y='u' x:b='1' y:b='2'/>").unwrap_err(),
            DuplicateAttribute { .. }
        ));
        assert!(matches!(p("<a>&#0;</a>").unwrap_err(), Syntax { .. }));
        assert!(matches!(
            p(" <?xml version='1.0'?><a/>").unwrap_err(),
            Syntax { .. }
        ));
        assert!(matches!(p("<a b=1/>").unwrap_err(), Syntax { .. }));
        assert!(matches!(p("<a b='<'/>").unwrap_err(), Syntax { .. }));
        assert_eq!(p("<!-- only -->").unwrap_err(), NoRoot);
        // Found by fuzzing: CDATA where the root element should be.
        assert!(matches!(p("<![CDATA[]]>").unwrap_err(), Syntax { .. }));
        assert!(matches!(
            p("<?xml version='1.0'?><![CDATA[x]]><a/>").unwrap_err(),
            Syntax { .. }
        ));
        assert!(matches!(
            p("<a/><![CDATA[x]]>").unwrap_err(),
            ContentAfterRoot { .. }
        ));
        // A bare `xmlns:` binds nothing: not a qualified name.
        assert!(matches!(
            p("<a xmlns:='u'/>").unwrap_err(),
            Syntax {
                msg: "malformed qualified name",
                offset: 3
            }
        ));
        assert!(matches!(
            p("<a>x]]>y</a>").unwrap_err(),
            Syntax { offset: 3, .. }
        ));
        // Truncated: the missing '<' is reported first, as before the one-pass scan.
        assert_eq!(p("<a>x]]>").unwrap_err(), UnexpectedEnd);
        assert_eq!(p("<a b='x").unwrap_err(), UnexpectedEnd);
    }

    /// The one-pass scanners: plain values and text are borrowed, anything with a
    /// reference, CR, TAB or LF (attributes) is decoded; the other quote is plain.
    #[test]
    fn plain_values_are_borrowed_and_the_rest_decoded() {
        let d = p("<a b='x\"y' c=\"it's\" d='1&amp;2' e='t\tn\nr\r!'>p]q<c>r&lt;\r\ns</c></a>")
            .unwrap();
        let a = d.attrs(0);
        assert!(matches!(&a[0].value, Cow::Borrowed("x\"y")));
        assert!(matches!(&a[1].value, Cow::Borrowed("it's")));
        assert_eq!(a[2].value, "1&2");
        assert_eq!(a[3].value, "t n r !");
        assert!(matches!(&d.elements[0].text, Cow::Borrowed("p]q")));
        assert_eq!(d.elements[1].text, "r<\ns");
    }

    #[test]
    fn limits_are_enforced_while_streaming() {
        let deep = "<a>".repeat(100_000);
        assert_eq!(p(&deep).unwrap_err(), XmlError::TooDeep { limit: 64 });
        let mut many = String::from("<a");
        for i in 0..2000 {
            many.push_str(&format!(" a{i}='x'"));
        }
        many.push_str("/>");
        assert_eq!(
            p(&many).unwrap_err(),
            XmlError::TooManyAttributes { limit: 1000 }
        );
        let long_attr = format!("<a b='{}'/>", "x".repeat(70_000));
        assert!(matches!(
            p(&long_attr),
            Err(XmlError::TooLong {
                what: "attribute value",
                ..
            })
        ));
        let long_text = format!(
            "<a>{}<![CDATA[{}]]></a>",
            "x".repeat(200_000),
            "y".repeat(70_000)
        );
        assert!(matches!(
            p(&long_text),
            Err(XmlError::TooLong {
                what: "text of one element",
                ..
            })
        ));
        let lots = format!("<a>{}</a>", "<b/>".repeat(200_000));
        assert_eq!(
            p(&lots).unwrap_err(),
            XmlError::TooManyElements { limit: 100_000 }
        );
    }

    /// The block-wise character check reports the first bad character at its exact
    /// offset wherever it falls relative to the 32-byte blocks, and lets U+FFFD, other
    /// 0xEF-led characters and TAB/LF/CR through.
    #[test]
    fn invalid_characters_found_at_every_offset() {
        for pad in 0..70 {
            let ok = format!("<a>{}\u{FFFD}\u{F000}\t\r\n</a>", "x".repeat(pad));
            assert!(p(&ok).is_ok(), "pad {pad}");
            for (bad, ch) in [
                ("\u{1}", 1),
                ("\u{1F}", 0x1F),
                ("\u{FFFE}", 0xFFFE),
                ("\u{FFFF}", 0xFFFF),
            ] {
                let doc = format!("<a>{}{bad}</a>\u{0}", "x".repeat(pad));
                match p(&doc).unwrap_err() {
                    XmlError::InvalidChar { ch: c, offset } => {
                        assert_eq!((c, offset), (ch, 3 + pad), "pad {pad}, char {ch:#x}")
                    }
                    e => panic!("pad {pad}, char {ch:#x}: {e:?}"),
                }
            }
        }
    }

    /// Names: the ASCII fast path and the general path over chars agree on where a name
    /// ends, whether the non-ASCII character comes first, in the middle or last.
    #[test]
    fn non_ascii_names() {
        let d = p("<\u{E9}l\u{E8}ve a\u{B7}b='1' \u{E9}='2' x-\u{4E2D}.y='3'><c\u{E9}/></\u{E9}l\u{E8}ve>")
            .unwrap();
        let root = d.root();
        assert_eq!(root.local, "\u{E9}l\u{E8}ve");
        let names: Vec<&str> = d.attrs(0).iter().map(|a| a.local).collect();
        assert_eq!(names, ["a\u{B7}b", "\u{E9}", "x-\u{4E2D}.y"]);
        let kids: Vec<&str> = d.children(0).map(|c| d.elements[c].local).collect();
        assert_eq!(kids, ["c\u{E9}"]);
        // U+B7 may continue a name but not start one; digits likewise.
        assert!(p("<\u{B7}a/>").is_err());
        assert!(p("<a \u{B7}b='1'/>").is_err());
        assert!(p("<1a/>").is_err());
        assert!(p("<a/>").is_ok());
    }

    #[test]
    fn utf16_is_refused() {
        assert!(matches!(
            parse(b"<\0?\0x\0", Limits::default()).unwrap_err(),
            XmlError::UnsupportedEncoding(_)
        ));
        assert!(matches!(
            parse(b"\xFF\xFE<\0a\0/\0>\0", Limits::default()).unwrap_err(),
            XmlError::UnsupportedEncoding(_)
        ));
    }
}

#[cfg(test)]
mod corpus_tests {
    /// Every real packet in ../shared/voevents parses, and its span is the root element.
    #[test]
    fn every_real_packet_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/voevents");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("../shared/voevents is present") {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("xml") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let doc = super::parse(&bytes, super::Limits::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(doc.root().local, "VOEvent", "{}", path.display());
            assert_eq!(bytes[doc.root_span.start], b'<');
            assert_eq!(bytes[doc.root_span.end - 1], b'>');
            n += 1;
        }
        assert_eq!(n, 139);
    }
}
