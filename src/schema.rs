//! Native VOEvent 2.0 schema validation (spec `vtp.md` §9).
//!
//! This module owns the structural check of author submissions against `VOEvent-v2.0.xsd`
//! as libxml2 applies it: the root element and namespace, every element's allowed
//! attributes and their simple types, content models (`xs:all`, unbounded `xs:choice`, the
//! one `xs:sequence` in `Citations`, simple and empty content) and character data. It works
//! on a [`Document`] already produced by [`crate::xml::parse`]; the lexical rules of the
//! simple types live in [`crate::xsd`].
//!
//! The grammar is data: one `Type` per complex type of the schema (its attributes and its
//! content model), walked once from the root. Valid documents cost no allocation; an error
//! allocates only its own message fields.

use std::fmt;

use crate::xml::{Document, Element, ElementId};
use crate::xsd;

/// Namespace of the VOEvent 2.0 root element.
pub const VOEVENT_NS: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";
/// Namespace of `xsi:schemaLocation` and friends.
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Longest attribute value or text quoted in an error message, in characters.
const MAX_QUOTED: usize = 80;

/// Why a document does not satisfy the VOEvent 2.0 schema. Names are local names as
/// written; `line` is the 1-based line of the start tag concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    /// The root is not `{http://www.ivoa.net/xml/VOEvent/v2.0}VOEvent`.
    WrongRoot {
        name: String,
        namespace: Option<String>,
        line: usize,
    },
    /// An element the parent's type does not allow here (unknown, namespaced, out of order,
    /// or any element inside simple content).
    UnexpectedElement {
        element: String,
        namespace: Option<String>,
        parent: String,
        line: usize,
    },
    /// A second occurrence of an element that `xs:all` allows once.
    DuplicateElement {
        element: String,
        parent: String,
        line: usize,
    },
    /// A required child element is absent.
    MissingElement {
        element: String,
        parent: String,
        line: usize,
    },
    /// A choice that needs at least one child has none.
    EmptyContent {
        element: String,
        expected: String,
        line: usize,
    },
    /// An attribute the element's type does not declare.
    UnexpectedAttribute {
        attribute: String,
        element: String,
        line: usize,
    },
    /// A required attribute is absent.
    MissingAttribute {
        attribute: String,
        element: String,
        line: usize,
    },
    /// An attribute value (`attribute` is `Some`) or element content (`None`) that is not
    /// in its simple type.
    InvalidValue {
        element: String,
        attribute: Option<String>,
        value: String,
        expected: String,
        line: usize,
    },
    /// Character data where none is allowed: non-whitespace text in element-only content,
    /// or any character data at all (`empty_type`) in an empty element.
    UnexpectedText {
        element: String,
        empty_type: bool,
        line: usize,
    },
}

impl SchemaError {
    /// The 1-based line the error refers to.
    pub fn line(&self) -> usize {
        match self {
            SchemaError::WrongRoot { line, .. }
            | SchemaError::UnexpectedElement { line, .. }
            | SchemaError::DuplicateElement { line, .. }
            | SchemaError::MissingElement { line, .. }
            | SchemaError::EmptyContent { line, .. }
            | SchemaError::UnexpectedAttribute { line, .. }
            | SchemaError::MissingAttribute { line, .. }
            | SchemaError::InvalidValue { line, .. }
            | SchemaError::UnexpectedText { line, .. } => *line,
        }
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::WrongRoot {
                name,
                namespace: Some(ns),
                line,
            } => write!(
                f,
                "root element <{name}> in namespace {ns} is not a VOEvent 2.0 event \
                 (expected VOEvent in namespace {VOEVENT_NS}) (line {line})"
            ),
            SchemaError::WrongRoot {
                name,
                namespace: None,
                line,
            } => write!(
                f,
                "root element <{name}> has no namespace; a VOEvent 2.0 event is VOEvent in \
                 namespace {VOEVENT_NS} (line {line})"
            ),
            SchemaError::UnexpectedElement {
                element,
                namespace: Some(ns),
                parent,
                line,
            } => write!(
                f,
                "unexpected element <{element}> in namespace {ns} in <{parent}>; \
                 elements below the root must be in no namespace (line {line})"
            ),
            SchemaError::UnexpectedElement {
                element,
                namespace: None,
                parent,
                line,
            } => write!(
                f,
                "unexpected element <{element}> in <{parent}> (line {line})"
            ),
            SchemaError::DuplicateElement {
                element,
                parent,
                line,
            } => write!(
                f,
                "element <{element}> appears more than once in <{parent}> (line {line})"
            ),
            SchemaError::MissingElement {
                element,
                parent,
                line,
            } => write!(
                f,
                "<{parent}> is missing required element <{element}> (line {line})"
            ),
            SchemaError::EmptyContent {
                element,
                expected,
                line,
            } => write!(
                f,
                "<{element}> must contain at least one of {expected} (line {line})"
            ),
            SchemaError::UnexpectedAttribute {
                attribute,
                element,
                line,
            } => write!(
                f,
                "attribute {attribute} is not allowed on <{element}> (line {line})"
            ),
            SchemaError::MissingAttribute {
                attribute,
                element,
                line,
            } => write!(
                f,
                "<{element}> is missing required attribute {attribute} (line {line})"
            ),
            SchemaError::InvalidValue {
                element,
                attribute: Some(attribute),
                value,
                expected,
                line,
            } => write!(
                f,
                "attribute {attribute} of <{element}> has invalid value '{value}' \
                 (expected {expected}) (line {line})"
            ),
            SchemaError::InvalidValue {
                element,
                attribute: None,
                value,
                expected,
                line,
            } => write!(
                f,
                "<{element}> has invalid content '{value}' (expected {expected}) (line {line})"
            ),
            SchemaError::UnexpectedText {
                element,
                empty_type: true,
                line,
            } => write!(
                f,
                "<{element}> must be empty but contains character data (line {line})"
            ),
            SchemaError::UnexpectedText {
                element,
                empty_type: false,
                line,
            } => write!(
                f,
                "<{element}> may contain only elements, but contains text (line {line})"
            ),
        }
    }
}

impl std::error::Error for SchemaError {}

// ---------------------------------------------------------------------------------------
// The grammar as data
// ---------------------------------------------------------------------------------------

/// The simple types used by attributes and simple-content elements.
#[derive(Clone, Copy, Debug)]
enum Simple {
    /// `xs:string`: anything.
    String,
    /// `xs:anyURI` with libxml2's lax rules.
    AnyUri,
    /// `xs:float`.
    Float,
    /// `smallFloat`: `xs:float` in [0.0, 1.0] (NaN excluded).
    Probability,
    /// `xs:dateTime`.
    DateTime,
    /// `xs:ID`.
    Id,
    /// `xs:token` fixed to `2.0` (the `version` attribute).
    Version,
    /// An enumeration restricting `xs:string`: exact match, no whitespace trimming.
    Enum(&'static [&'static str]),
}

impl Simple {
    fn accepts(self, v: &str) -> bool {
        match self {
            Simple::String => true,
            Simple::AnyUri => xsd::is_any_uri(v),
            Simple::Float => xsd::is_float(v),
            Simple::Probability => xsd::float_value(v).is_some_and(|x| (0.0..=1.0).contains(&x)),
            Simple::DateTime => xsd::is_date_time(v),
            Simple::Id => xsd::is_id(v),
            Simple::Version => xsd::token_equals(v, "2.0"),
            Simple::Enum(values) => values.contains(&v),
        }
    }

    /// What a valid value looks like, for messages.
    fn expected(self) -> String {
        match self {
            Simple::String => "a string".into(),
            Simple::AnyUri => "an xs:anyURI".into(),
            Simple::Float => "an xs:float such as 1.5, -2e3, INF or NaN".into(),
            Simple::Probability => "an xs:float from 0.0 to 1.0".into(),
            Simple::DateTime => {
                "an xs:dateTime such as 2024-01-01T12:00:00.5Z, without spaces".into()
            }
            Simple::Id => "an xs:ID, a name not starting with a digit".into(),
            Simple::Version => "2.0".into(),
            Simple::Enum(values) => format!("one of {}", values.join(", ")),
        }
    }
}

const ROLES: &[&str] = &["observation", "prediction", "utility", "test"];
const DATA_TYPES: &[&str] = &["string", "float", "int"];
const CITES: &[&str] = &["followup", "supersedes", "retraction"];
const ID_VALUES: &[&str] = &[
    "TT-ICRS-TOPO",
    "UTC-ICRS-TOPO",
    "TT-FK5-TOPO",
    "UTC-FK5-TOPO",
    "GPS-ICRS-TOPO",
    "GPS-FK5-TOPO",
    "TT-ICRS-GEO",
    "UTC-ICRS-GEO",
    "TT-FK5-GEO",
    "UTC-FK5-GEO",
    "GPS-ICRS-GEO",
    "TDB-ICRS-BARY",
    "TDB-FK5-BARY",
    "UTC-GEOD-TOPO",
];

/// An attribute declaration (always in no namespace).
struct Attr {
    name: &'static str,
    ty: Simple,
    required: bool,
}

const fn opt(name: &'static str, ty: Simple) -> Attr {
    Attr {
        name,
        ty,
        required: false,
    }
}

const fn req(name: &'static str, ty: Simple) -> Attr {
    Attr {
        name,
        ty,
        required: true,
    }
}

/// A child element declaration. `min`/`max` matter in `xs:all` (0..1 or 1..1) and in a
/// sequence; in an unbounded choice only the name and type matter.
struct Child {
    name: &'static str,
    ty: &'static Type,
    min: u32,
    max: u32,
}

const UNBOUNDED: u32 = u32::MAX;

/// Optional child (`minOccurs="0"`).
const fn c0(name: &'static str, ty: &'static Type) -> Child {
    Child {
        name,
        ty,
        min: 0,
        max: 1,
    }
}

/// Required child (`minOccurs="1"`).
const fn c1(name: &'static str, ty: &'static Type) -> Child {
    Child {
        name,
        ty,
        min: 1,
        max: 1,
    }
}

/// A content model.
enum Content {
    /// Simple content of this type: character data only, no child elements.
    Simple(Simple),
    /// No character data at all (not even whitespace) and no child elements.
    Empty,
    /// `xs:all`: each child at most once (`min` 1: exactly once), in any order.
    All(&'static [Child]),
    /// `xs:choice maxOccurs="unbounded"`: any number of these in any order; at least one
    /// child when `at_least_one` (no alternative has `minOccurs="0"`).
    Choice {
        children: &'static [Child],
        at_least_one: bool,
    },
    /// `xs:sequence`: the children in this order, each `min..=max` times.
    Sequence(&'static [Child]),
}

/// A type: its attributes and its content model. Whitespace-only text is allowed in
/// element-only content (`All`, `Choice`, `Sequence`).
struct Type {
    attrs: &'static [Attr],
    content: Content,
}

const fn simple(ty: Simple) -> Type {
    Type {
        attrs: &[],
        content: Content::Simple(ty),
    }
}

const fn choice(attrs: &'static [Attr], children: &'static [Child], at_least_one: bool) -> Type {
    Type {
        attrs,
        content: Content::Choice {
            children,
            at_least_one,
        },
    }
}

const fn all(attrs: &'static [Attr], children: &'static [Child]) -> Type {
    Type {
        attrs,
        content: Content::All(children),
    }
}

static STRING: Type = simple(Simple::String);
static ANY_URI: Type = simple(Simple::AnyUri);
static FLOAT: Type = simple(Simple::Float);
static DATE_TIME: Type = simple(Simple::DateTime);

static VOEVENT: Type = all(
    &[
        req("ivorn", Simple::AnyUri),
        req("version", Simple::Version),
        opt("role", Simple::Enum(ROLES)),
    ],
    &[
        c0("Who", &WHO),
        c0("What", &WHAT),
        c0("WhereWhen", &WHERE_WHEN),
        c0("How", &HOW),
        c0("Why", &WHY),
        c0("Citations", &CITATIONS),
        c0("Description", &STRING),
        c0("Reference", &REFERENCE),
    ],
);

static WHO: Type = all(
    &[],
    &[
        c0("AuthorIVORN", &ANY_URI),
        c0("Date", &DATE_TIME),
        c0("Description", &STRING),
        c0("Reference", &REFERENCE),
        c0("Author", &AUTHOR),
    ],
);

static AUTHOR: Type = choice(
    &[],
    &[
        c0("title", &STRING),
        c0("shortName", &STRING),
        c0("logoURL", &ANY_URI),
        c0("contactName", &STRING),
        c0("contactEmail", &STRING),
        c0("contactPhone", &STRING),
        c0("contributor", &STRING),
    ],
    true,
);

static WHAT: Type = choice(
    &[],
    &[
        c0("Param", &PARAM),
        c0("Group", &GROUP),
        c0("Table", &TABLE),
        c0("Description", &STRING),
        c0("Reference", &REFERENCE),
    ],
    false,
);

static PARAM: Type = choice(
    &[
        opt("name", Simple::String),
        opt("ucd", Simple::String),
        opt("value", Simple::String),
        opt("unit", Simple::String),
        opt("dataType", Simple::Enum(DATA_TYPES)),
        opt("utype", Simple::String),
    ],
    &[
        c0("Description", &STRING),
        c0("Reference", &REFERENCE),
        c0("Value", &STRING),
    ],
    false,
);

static GROUP: Type = choice(
    &[opt("name", Simple::String), opt("type", Simple::String)],
    &[
        c0("Param", &PARAM),
        c0("Description", &STRING),
        c0("Reference", &REFERENCE),
    ],
    false,
);

static TABLE: Type = choice(
    &[opt("name", Simple::String), opt("type", Simple::String)],
    &[
        c0("Description", &STRING),
        c0("Reference", &REFERENCE),
        c0("Param", &PARAM),
        c0("Field", &FIELD),
        c0("Data", &DATA),
    ],
    false,
);

static FIELD: Type = choice(
    &[
        opt("name", Simple::String),
        opt("ucd", Simple::String),
        opt("unit", Simple::String),
        opt("dataType", Simple::Enum(DATA_TYPES)),
        opt("utype", Simple::String),
    ],
    &[c0("Description", &STRING), c0("Reference", &REFERENCE)],
    false,
);

static DATA: Type = choice(&[], &[c1("TR", &TR)], true);
static TR: Type = choice(&[], &[c1("TD", &STRING)], true);

static WHERE_WHEN: Type = choice(
    &[opt("id", Simple::Id)],
    &[
        c1("ObsDataLocation", &OBS_DATA_LOCATION),
        c0("Description", &STRING),
        c0("Reference", &REFERENCE),
    ],
    false,
);

static OBS_DATA_LOCATION: Type = all(
    &[],
    &[
        c1("ObservatoryLocation", &OBSERVATORY_LOCATION),
        c1("ObservationLocation", &OBSERVATION_LOCATION),
    ],
);

static OBSERVATION_LOCATION: Type = all(
    &[],
    &[
        c1("AstroCoordSystem", &ASTRO_COORD_SYSTEM),
        c1("AstroCoords", &ASTRO_COORDS),
    ],
);

static OBSERVATORY_LOCATION: Type = all(
    &[opt("id", Simple::String)],
    &[
        c0("AstroCoordSystem", &ASTRO_COORD_SYSTEM),
        c0("AstroCoords", &ASTRO_COORDS),
    ],
);

static ASTRO_COORD_SYSTEM: Type = Type {
    attrs: &[opt("id", Simple::Enum(ID_VALUES))],
    content: Content::Empty,
};

static ASTRO_COORDS: Type = all(
    &[opt("coord_system_id", Simple::Enum(ID_VALUES))],
    &[
        c0("Time", &TIME),
        c0("Position2D", &POSITION_2D),
        c0("Position3D", &POSITION_3D),
    ],
);

static TIME: Type = choice(
    &[opt("unit", Simple::String)],
    &[c1("TimeInstant", &TIME_INSTANT), c0("Error", &FLOAT)],
    false,
);

static TIME_INSTANT: Type = choice(
    &[],
    &[
        c0("ISOTime", &STRING),
        c0("TimeOffset", &FLOAT),
        c0("TimeScale", &STRING),
    ],
    false,
);

static POSITION_2D: Type = all(
    &[opt("unit", Simple::String)],
    &[
        c0("Name1", &STRING),
        c0("Name2", &STRING),
        c1("Value2", &VALUE_2),
        c1("Error2Radius", &FLOAT),
    ],
);

static POSITION_3D: Type = all(
    &[opt("unit", Simple::String)],
    &[
        c0("Name1", &STRING),
        c0("Name2", &STRING),
        c0("Name3", &STRING),
        c1("Value3", &VALUE_3),
    ],
);

static VALUE_2: Type = all(&[], &[c1("C1", &FLOAT), c1("C2", &FLOAT)]);
static VALUE_3: Type = all(&[], &[c1("C1", &FLOAT), c1("C2", &FLOAT), c1("C3", &FLOAT)]);

static HOW: Type = choice(
    &[],
    &[c1("Description", &STRING), c1("Reference", &REFERENCE)],
    true,
);

static WHY: Type = choice(
    &[
        opt("importance", Simple::Float),
        opt("expires", Simple::DateTime),
    ],
    &[
        c1("Name", &STRING),
        c1("Concept", &STRING),
        c1("Inference", &INFERENCE),
        c1("Description", &STRING),
        c1("Reference", &REFERENCE),
    ],
    true,
);

static INFERENCE: Type = choice(
    &[
        opt("probability", Simple::Probability),
        opt("relation", Simple::String),
    ],
    &[
        c1("Name", &STRING),
        c1("Concept", &STRING),
        c1("Description", &STRING),
        c1("Reference", &REFERENCE),
    ],
    true,
);

static CITATIONS: Type = Type {
    attrs: &[],
    content: Content::Sequence(&[
        Child {
            name: "EventIVORN",
            ty: &EVENT_IVORN,
            min: 1,
            max: UNBOUNDED,
        },
        c0("Description", &STRING),
    ]),
};

static EVENT_IVORN: Type = Type {
    attrs: &[opt("cite", Simple::Enum(CITES))],
    content: Content::Simple(Simple::String),
};

static REFERENCE: Type = Type {
    attrs: &[
        req("uri", Simple::AnyUri),
        opt("type", Simple::String),
        opt("mimetype", Simple::String),
        opt("meaning", Simple::AnyUri),
    ],
    content: Content::Empty,
};

// ---------------------------------------------------------------------------------------
// The walk
// ---------------------------------------------------------------------------------------

/// Check `doc` (parsed from `input`, which is used only for line numbers) against the
/// VOEvent 2.0 schema. Returns the first violation found, in document order of the
/// elements concerned.
pub fn validate(doc: &Document<'_>, input: &[u8]) -> Result<(), SchemaError> {
    let root = doc.root();
    if root.local != "VOEvent" || root.ns != Some(VOEVENT_NS) {
        return Err(SchemaError::WrongRoot {
            name: root.qname.to_owned(),
            namespace: root.ns.map(str::to_owned),
            line: Document::line_of(input, root.offset),
        });
    }
    Validator { doc, input }.element(0, &VOEVENT)
}

struct Validator<'d, 'a> {
    doc: &'d Document<'a>,
    input: &'d [u8],
}

impl Validator<'_, '_> {
    fn el(&self, id: ElementId) -> &Element<'_> {
        &self.doc.elements[id]
    }

    fn line(&self, id: ElementId) -> usize {
        Document::line_of(self.input, self.el(id).offset)
    }

    /// Check one element against its type, then its children. Recursion depth is bounded
    /// by the grammar (at most 8 levels), since only declared children are descended into.
    fn element(&self, id: ElementId, ty: &Type) -> Result<(), SchemaError> {
        self.attributes(id, ty)?;
        let el = self.el(id);
        match &ty.content {
            Content::Simple(simple) => {
                if let Some(child) = el.first_child {
                    return Err(self.unexpected(child, id));
                }
                if !simple.accepts(&el.text) {
                    return Err(SchemaError::InvalidValue {
                        element: el.local.to_owned(),
                        attribute: None,
                        value: quote(&el.text),
                        expected: simple.expected(),
                        line: self.line(id),
                    });
                }
                Ok(())
            }
            Content::Empty => {
                if el.has_char_data {
                    return Err(SchemaError::UnexpectedText {
                        element: el.local.to_owned(),
                        empty_type: true,
                        line: self.line(id),
                    });
                }
                match el.first_child {
                    Some(child) => Err(self.unexpected(child, id)),
                    None => Ok(()),
                }
            }
            Content::All(children) => {
                self.element_only_text(id)?;
                self.all(id, children)
            }
            Content::Choice {
                children,
                at_least_one,
            } => {
                self.element_only_text(id)?;
                self.choice(id, children, *at_least_one)
            }
            Content::Sequence(children) => {
                self.element_only_text(id)?;
                self.sequence(id, children)
            }
        }
    }

    fn attributes(&self, id: ElementId, ty: &Type) -> Result<(), SchemaError> {
        let el = self.el(id);
        for a in self.doc.attrs(id) {
            let decl = match a.ns {
                None => ty.attrs.iter().find(|d| d.name == a.local),
                Some(XSI_NS)
                    if matches!(a.local, "schemaLocation" | "noNamespaceSchemaLocation") =>
                {
                    continue
                }
                Some(_) => None,
            };
            let Some(decl) = decl else {
                return Err(SchemaError::UnexpectedAttribute {
                    attribute: a.qname.to_owned(),
                    element: el.local.to_owned(),
                    line: self.line(id),
                });
            };
            if !decl.ty.accepts(&a.value) {
                return Err(SchemaError::InvalidValue {
                    element: el.local.to_owned(),
                    attribute: Some(a.qname.to_owned()),
                    value: quote(&a.value),
                    expected: decl.ty.expected(),
                    line: self.line(id),
                });
            }
        }
        for decl in ty.attrs.iter().filter(|d| d.required) {
            if self.doc.attr(id, decl.name).is_none() {
                return Err(SchemaError::MissingAttribute {
                    attribute: decl.name.to_owned(),
                    element: el.local.to_owned(),
                    line: self.line(id),
                });
            }
        }
        Ok(())
    }

    fn element_only_text(&self, id: ElementId) -> Result<(), SchemaError> {
        let el = self.el(id);
        if el.has_non_whitespace_text() {
            return Err(SchemaError::UnexpectedText {
                element: el.local.to_owned(),
                empty_type: false,
                line: self.line(id),
            });
        }
        Ok(())
    }

    /// The declaration among `children` that matches element `id`, if any.
    fn declared<'c>(&self, id: ElementId, children: &'c [Child]) -> Option<(usize, &'c Child)> {
        let el = self.el(id);
        if el.ns.is_some() {
            return None;
        }
        children
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == el.local)
    }

    fn all(&self, id: ElementId, children: &[Child]) -> Result<(), SchemaError> {
        let mut seen: u32 = 0;
        for child in self.doc.children(id) {
            let Some((i, decl)) = self.declared(child, children) else {
                return Err(self.unexpected(child, id));
            };
            if seen & (1 << i) != 0 {
                return Err(SchemaError::DuplicateElement {
                    element: decl.name.to_owned(),
                    parent: self.el(id).local.to_owned(),
                    line: self.line(child),
                });
            }
            seen |= 1 << i;
            self.element(child, decl.ty)?;
        }
        for (i, decl) in children.iter().enumerate() {
            if decl.min > 0 && seen & (1 << i) == 0 {
                return Err(self.missing(decl.name, id));
            }
        }
        Ok(())
    }

    fn choice(
        &self,
        id: ElementId,
        children: &[Child],
        at_least_one: bool,
    ) -> Result<(), SchemaError> {
        let mut count = 0usize;
        for child in self.doc.children(id) {
            let Some((_, decl)) = self.declared(child, children) else {
                return Err(self.unexpected(child, id));
            };
            self.element(child, decl.ty)?;
            count += 1;
        }
        if at_least_one && count == 0 {
            let names: Vec<&str> = children.iter().map(|c| c.name).collect();
            return Err(SchemaError::EmptyContent {
                element: self.el(id).local.to_owned(),
                expected: names.join(", "),
                line: self.line(id),
            });
        }
        Ok(())
    }

    fn sequence(&self, id: ElementId, items: &[Child]) -> Result<(), SchemaError> {
        let mut pos = 0usize;
        let mut count = 0u32;
        for child in self.doc.children(id) {
            let el = self.el(child);
            loop {
                let Some(item) = items.get(pos) else {
                    return Err(self.unexpected(child, id));
                };
                if el.ns.is_none() && el.local == item.name && count < item.max {
                    count += 1;
                    self.element(child, item.ty)?;
                    break;
                }
                if count < item.min {
                    // Something else where this item is still required.
                    return Err(self.unexpected(child, id));
                }
                pos += 1;
                count = 0;
            }
        }
        // Whatever is left must be optional.
        for (i, item) in items.iter().enumerate().skip(pos) {
            let have = if i == pos { count } else { 0 };
            if have < item.min {
                return Err(self.missing(item.name, id));
            }
        }
        Ok(())
    }

    fn unexpected(&self, child: ElementId, parent: ElementId) -> SchemaError {
        let el = self.el(child);
        SchemaError::UnexpectedElement {
            element: if el.ns.is_some() {
                el.qname.to_owned()
            } else {
                el.local.to_owned()
            },
            namespace: el.ns.map(str::to_owned),
            parent: self.el(parent).local.to_owned(),
            line: self.line(child),
        }
    }

    fn missing(&self, name: &str, parent: ElementId) -> SchemaError {
        SchemaError::MissingElement {
            element: name.to_owned(),
            parent: self.el(parent).local.to_owned(),
            line: self.line(parent),
        }
    }
}

/// A value for a message, shortened to [`MAX_QUOTED`] characters.
fn quote(v: &str) -> String {
    match v.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &v[..cut]),
        None => v.to_owned(),
    }
}

#[cfg(test)]
mod tests;
