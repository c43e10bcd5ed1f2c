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
//!
//! This file owns the types of that result ([`Document`], [`Element`], [`Attribute`]), the
//! [`Limits`] and the [`XmlError`] enum; the parser itself is in `xml/parser.rs` and is
//! reached through [`parse`].

use std::borrow::Cow;
use std::fmt;

mod parser;
#[cfg(test)]
mod tests;

pub use parser::parse;

/// Resource limits applied while parsing. Real VOEvents stay far below every one of them
/// (the schema nests at most 8 levels deep and declares a handful of attributes per
/// element): they exist to stop hostile input early.
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
