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
mod tests {
    use super::*;
    use crate::xml::{self, Limits};

    const OPEN: &str = r#"<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://bolide.test/s#1" role="test" version="2.0">"#;
    const CLOSE: &str = "</voe:VOEvent>";

    /// Validate a whole document.
    fn check(doc: &str) -> Result<(), SchemaError> {
        let parsed = xml::parse(doc.as_bytes(), Limits::default()).expect("test XML must parse");
        validate(&parsed, doc.as_bytes())
    }

    /// A minimal valid VOEvent around `body`.
    fn event(body: &str) -> String {
        format!("<?xml version=\"1.0\"?>\n{OPEN}\n{body}\n{CLOSE}")
    }

    /// A VOEvent whose root start tag carries `attrs` (namespace declaration included).
    fn rooted(attrs: &str, body: &str) -> String {
        format!(
            "<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" {attrs}>{body}</voe:VOEvent>"
        )
    }

    #[track_caller]
    fn ok(body: &str) {
        if let Err(e) = check(&event(body)) {
            panic!("expected valid, got: {e}\nbody: {body}");
        }
    }

    #[track_caller]
    fn bad(body: &str) -> SchemaError {
        match check(&event(body)) {
            Ok(()) => panic!("expected invalid: {body}"),
            Err(e) => e,
        }
    }

    /// A WhereWhen with the given AstroCoords content and attributes.
    fn coords(attrs: &str, inner: &str) -> String {
        format!(
            "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation>\
             <AstroCoordSystem id=\"UTC-FK5-GEO\"/><AstroCoords{attrs}>{inner}</AstroCoords>\
             </ObservationLocation></ObsDataLocation></WhereWhen>"
        )
    }

    fn pos2d(value2: &str) -> String {
        coords(
            "",
            &format!("<Position2D unit=\"deg\"><Value2>{value2}</Value2><Error2Radius>1</Error2Radius></Position2D>"),
        )
    }

    // --- root, namespaces, global attributes -------------------------------------------

    #[test]
    fn minimal_and_empty_root() {
        ok("");
        assert_eq!(
            check(
                r#"<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://a.b/c#d" version="2.0"/>"#
            ),
            Ok(())
        );
        // Any prefix, or the default namespace with no children.
        assert_eq!(
            check(
                r#"<x:VOEvent xmlns:x="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="i" version="2.0"/>"#
            ),
            Ok(())
        );
        assert_eq!(
            check(
                r#"<VOEvent xmlns="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="i" version="2.0"/>"#
            ),
            Ok(())
        );
    }

    #[test]
    fn wrong_root() {
        let e = check(r#"<VOEvent ivorn="i" version="2.0"/>"#).unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::WrongRoot {
                    namespace: None,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = check(r#"<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v1.1" ivorn="i" version="1.1"/>"#)
            .unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::WrongRoot {
                    namespace: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
        let e =
            check(r#"<voe:Event xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"/>"#).unwrap_err();
        assert!(matches!(e, SchemaError::WrongRoot { .. }), "{e:?}");
    }

    #[test]
    fn descendants_must_be_in_no_namespace() {
        // Default namespace inherited by the children.
        let e = check(r#"<VOEvent xmlns="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="i" version="2.0"><Who/></VOEvent>"#)
            .unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::UnexpectedElement {
                    namespace: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = bad(r#"<voe:Who/>"#);
        assert!(
            matches!(
                e,
                SchemaError::UnexpectedElement {
                    namespace: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = bad(r#"<x:Description xmlns:x="urn:other">d</x:Description>"#);
        assert!(matches!(e, SchemaError::UnexpectedElement { .. }), "{e:?}");
        ok(r#"<Who xmlns:x="urn:other"><Date>2024-01-01T00:00:00</Date></Who>"#);
    }

    #[test]
    fn root_attributes() {
        let v = |a: &str| check(&rooted(a, ""));
        assert_eq!(v(r#"ivorn="ivo://a.b/c#d" version="2.0""#), Ok(()));
        assert_eq!(v(r#"ivorn="ivo://a.b/c#d" version=" 2.0 ""#), Ok(()));
        assert_eq!(v(r#"ivorn="ivo://a.b/c#d" version="&#9;2.0&#10;""#), Ok(()));
        assert!(matches!(
            v(r#"ivorn="i" version="2.1""#),
            Err(SchemaError::InvalidValue { .. })
        ));
        assert!(matches!(
            v(r#"ivorn="i" version="2""#),
            Err(SchemaError::InvalidValue { .. })
        ));
        assert!(matches!(
            v(r#"ivorn="i""#),
            Err(SchemaError::MissingAttribute { .. })
        ));
        assert!(matches!(
            v(r#"version="2.0""#),
            Err(SchemaError::MissingAttribute { .. })
        ));
        assert!(matches!(
            v(r#"ivorn="a%zz" version="2.0""#),
            Err(SchemaError::InvalidValue { .. })
        ));
        assert_eq!(v(r#"ivorn="" version="2.0""#), Ok(()));
        for role in ["observation", "prediction", "utility", "test"] {
            assert_eq!(
                v(&format!(r#"ivorn="i" version="2.0" role="{role}""#)),
                Ok(())
            );
        }
        for role in [" test", "test ", "Test", "", "observed"] {
            assert!(
                matches!(
                    v(&format!(r#"ivorn="i" version="2.0" role="{role}""#)),
                    Err(SchemaError::InvalidValue { .. })
                ),
                "role {role:?}"
            );
        }
        assert!(matches!(
            v(r#"ivorn="i" version="2.0" foo="x""#),
            Err(SchemaError::UnexpectedAttribute { .. })
        ));
    }

    #[test]
    fn xsi_and_foreign_attributes() {
        const XSI: &str = r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#;
        let v = |a: &str, body: &str| {
            check(&rooted(
                &format!(r#"{XSI} ivorn="i" version="2.0" {a}"#),
                body,
            ))
        };
        assert_eq!(
            v(
                r#"xsi:schemaLocation="http://www.ivoa.net/xml/VOEvent/v2.0 x.xsd""#,
                ""
            ),
            Ok(())
        );
        assert_eq!(v(r#"xsi:noNamespaceSchemaLocation="x.xsd""#, ""), Ok(()));
        // Allowed on every element, not only the root.
        assert_eq!(
            v(
                "",
                r#"<Who xsi:schemaLocation="a b"><Date xsi:noNamespaceSchemaLocation="x">2024-01-01T00:00:00</Date></Who>"#
            ),
            Ok(())
        );
        assert_eq!(
            v("", r#"<Reference uri="x" xsi:schemaLocation="a b"/>"#),
            Ok(())
        );
        for a in [
            r#"xsi:type="x""#,
            r#"xsi:nil="true""#,
            r#"xml:lang="en""#,
            r#"xml:space="preserve""#,
            r#"xmlns:o="urn:o" o:x="1""#,
        ] {
            assert!(
                matches!(v(a, ""), Err(SchemaError::UnexpectedAttribute { .. })),
                "{a}"
            );
        }
        assert!(matches!(
            v("", r#"<Description xml:lang="en">d</Description>"#),
            Err(SchemaError::UnexpectedAttribute { .. })
        ));
        assert!(matches!(
            v("", r#"<Who xsi:nil="true"/>"#),
            Err(SchemaError::UnexpectedAttribute { .. })
        ));
    }

    // --- VOEvent content ----------------------------------------------------------------

    #[test]
    fn voevent_all_any_order_each_once() {
        ok("<Description>d</Description><Reference uri=\"http://x\"/><Citations><EventIVORN>x</EventIVORN></Citations>\
            <Why><Name>n</Name></Why><How><Description/></How><WhereWhen/><What/><Who/>");
        let e = bad("<Who/><What/><Who/>");
        assert!(matches!(e, SchemaError::DuplicateElement { .. }), "{e:?}");
        let e = bad("<Description/><Description/>");
        assert!(matches!(e, SchemaError::DuplicateElement { .. }), "{e:?}");
        let e = bad("<Trigger>x</Trigger>");
        assert!(matches!(e, SchemaError::UnexpectedElement { .. }), "{e:?}");
        // Names are case-sensitive.
        assert!(matches!(
            bad("<who/>"),
            SchemaError::UnexpectedElement { .. }
        ));
    }

    #[test]
    fn element_only_text() {
        ok("  \n\t <!-- comment --> <?pi x?> <![CDATA[  ]]> <Who> \n </Who>");
        let e = bad("stray text");
        assert!(
            matches!(
                e,
                SchemaError::UnexpectedText {
                    empty_type: false,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            bad("<Who>x</Who>"),
            SchemaError::UnexpectedText { .. }
        ));
        assert!(matches!(
            bad("<What><![CDATA[x]]></What>"),
            SchemaError::UnexpectedText { .. }
        ));
        assert!(matches!(
            bad("<How>&#65;<Description/></How>"),
            SchemaError::UnexpectedText { .. }
        ));
    }

    // --- Who / Author ----------------------------------------------------------------------

    #[test]
    fn who() {
        ok("<Who/>");
        ok("<Who><Author><title>t</title></Author><Reference uri=\"x\"/><Description>d</Description>\
            <Date>2024-01-01T00:00:00Z</Date><AuthorIVORN>ivo://a.b/c</AuthorIVORN></Who>");
        assert!(matches!(
            bad("<Who><Date>2024-01-01T00:00:00</Date><Date>2024-01-01T00:00:00</Date></Who>"),
            SchemaError::DuplicateElement { .. }
        ));
        assert!(matches!(
            bad("<Who><Name>x</Name></Who>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Who id=\"x\"/>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
        assert!(matches!(
            bad("<Who><AuthorIVORN>ivo://a#b#c</AuthorIVORN></Who>"),
            SchemaError::InvalidValue {
                attribute: None,
                ..
            }
        ));
        ok("<Who><AuthorIVORN></AuthorIVORN></Who>");
    }

    #[test]
    fn who_date_is_a_date_time() {
        ok("<Who><Date>2024-02-29T23:59:59.5+01:00</Date></Who>");
        ok("<Who><Date>2024-01-01T24:00:00</Date></Who>");
        for d in [
            "2024-01-01",
            " 2024-01-01T00:00:00",
            "2024-01-01T00:00:00\n",
            "2023-02-29T00:00:00",
            "2024-01-01 00:00:00",
            "",
        ] {
            let e = bad(&format!("<Who><Date>{d}</Date></Who>"));
            assert!(
                matches!(
                    e,
                    SchemaError::InvalidValue {
                        attribute: None,
                        ..
                    }
                ),
                "{d:?}: {e:?}"
            );
        }
    }

    #[test]
    fn author() {
        ok("<Who><Author><title>t</title><shortName>s</shortName><logoURL>http://x/l.png</logoURL>\
            <contactName>n</contactName><contactEmail>e</contactEmail><contactPhone>p</contactPhone>\
            <contributor>c1</contributor><contributor>c2</contributor><title>t2</title></Author></Who>");
        let e = bad("<Who><Author/></Who>");
        assert!(matches!(e, SchemaError::EmptyContent { .. }), "{e:?}");
        let e = bad("<Who><Author>\n  </Author></Who>");
        assert!(matches!(e, SchemaError::EmptyContent { .. }), "{e:?}");
        assert!(matches!(
            bad("<Who><Author><logoURL>%zz</logoURL></Author></Who>"),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad("<Who><Author><email>e</email></Author></Who>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Who><Author><title><b>t</b></title></Author></Who>"),
            SchemaError::UnexpectedElement { .. }
        ));
    }

    // --- What: Param, Group, Table --------------------------------------------------------

    #[test]
    fn what_and_param() {
        ok("<What/>");
        ok("<What><Param/><Param name=\"a\" ucd=\"u\" value=\"v\" unit=\"s\" dataType=\"float\" utype=\"t\">\
            <Description>d</Description><Value>1</Value><Value>2</Value><Reference uri=\"x\"/>\
            <Description>again</Description></Param><Description/><Reference uri=\"y\"/><Group/><Table/></What>");
        for dt in ["string", "float", "int"] {
            ok(&format!("<What><Param dataType=\"{dt}\"/></What>"));
        }
        for dt in ["Float", " int", "double", ""] {
            let e = bad(&format!("<What><Param dataType=\"{dt}\"/></What>"));
            assert!(matches!(e, SchemaError::InvalidValue { .. }), "{dt:?}");
        }
        assert!(matches!(
            bad("<What><Param datatype=\"float\"/></What>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
        assert!(matches!(
            bad("<What><Param><Group/></Param></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Field/></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Param><Value a=\"1\">1</Value></Param></What>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
    }

    #[test]
    fn group() {
        ok("<What><Group name=\"g\" type=\"t\"><Param/><Description/><Param/><Reference uri=\"x\"/></Group></What>");
        assert!(matches!(
            bad("<What><Group><Group/></Group></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Group><Table/></Group></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Group ucd=\"x\"/></What>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
    }

    #[test]
    fn table_field_data() {
        ok("<What><Table/></What>");
        ok("<What><Table name=\"t\" type=\"x\"><Data><TR><TD>1</TD></TR></Data><Field name=\"a\" ucd=\"u\" unit=\"s\" \
            dataType=\"int\" utype=\"t\"><Description/><Reference uri=\"x\"/></Field><Param/><Description/>\
            <Data><TR><TD/><TD>2</TD></TR><TR><TD>3</TD></TR></Data></Table></What>");
        ok("<What><Table><Field/></Table></What>");
        assert!(matches!(
            bad("<What><Table><Data/></Table></What>"),
            SchemaError::EmptyContent { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Data><TR/></Data></Table></What>"),
            SchemaError::EmptyContent { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Data><TR><TD><x/></TD></TR></Data></Table></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Data><TD>1</TD></Data></Table></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Field dataType=\"bool\"/></Table></What>"),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Field value=\"1\"/></Table></What>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Field><Param/></Field></Table></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Group/></Table></What>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<What><Table><Data x=\"1\"><TR><TD/></TR></Data></Table></What>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
    }

    // --- WhereWhen ------------------------------------------------------------------------

    #[test]
    fn where_when() {
        ok("<WhereWhen/>");
        ok("<WhereWhen id=\"ww1\"><Description/><Reference uri=\"x\"/></WhereWhen>");
        ok("<WhereWhen id=\" _a.b-c \"/>");
        for id in ["1abc", "a b", "", "a:b"] {
            assert!(
                matches!(
                    bad(&format!("<WhereWhen id=\"{id}\"/>")),
                    SchemaError::InvalidValue { .. }
                ),
                "{id:?}"
            );
        }
        let odl = "<ObsDataLocation><ObservatoryLocation/><ObservationLocation><AstroCoordSystem/><AstroCoords/>\
                   </ObservationLocation></ObsDataLocation>";
        ok(&format!("<WhereWhen>{odl}{odl}</WhereWhen>"));
        assert!(matches!(
            bad("<WhereWhen><Time/></WhereWhen>"),
            SchemaError::UnexpectedElement { .. }
        ));
    }

    #[test]
    fn obs_data_location_requires_both() {
        ok("<WhereWhen><ObsDataLocation><ObservationLocation><AstroCoords/><AstroCoordSystem/></ObservationLocation>\
            <ObservatoryLocation/></ObsDataLocation></WhereWhen>");
        let e =
            bad("<WhereWhen><ObsDataLocation><ObservatoryLocation/></ObsDataLocation></WhereWhen>");
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "ObservationLocation"),
            "{e:?}"
        );
        let e = bad(
            "<WhereWhen><ObsDataLocation><ObservationLocation><AstroCoordSystem/><AstroCoords/>\
                     </ObservationLocation></ObsDataLocation></WhereWhen>",
        );
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "ObservatoryLocation"),
            "{e:?}"
        );
        assert!(matches!(
            bad("<WhereWhen><ObsDataLocation/></WhereWhen>"),
            SchemaError::MissingElement { .. }
        ));
        let e = bad("<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation><AstroCoordSystem/>\
                     </ObservationLocation></ObsDataLocation></WhereWhen>");
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "AstroCoords"),
            "{e:?}"
        );
        let e = bad(
            "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation><AstroCoords/>\
                     </ObservationLocation></ObsDataLocation></WhereWhen>",
        );
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "AstroCoordSystem"),
            "{e:?}"
        );
    }

    #[test]
    fn observatory_location() {
        ok("<WhereWhen><ObsDataLocation><ObservatoryLocation id=\"GEOLUN anything\"><AstroCoords/>\
            <AstroCoordSystem id=\"UTC-GEOD-TOPO\"/></ObservatoryLocation><ObservationLocation><AstroCoordSystem/>\
            <AstroCoords/></ObservationLocation></ObsDataLocation></WhereWhen>");
        assert!(matches!(
            bad("<WhereWhen><ObsDataLocation><ObservatoryLocation><AstroCoords/><AstroCoords/></ObservatoryLocation>\
                 <ObservationLocation><AstroCoordSystem/><AstroCoords/></ObservationLocation></ObsDataLocation></WhereWhen>"),
            SchemaError::DuplicateElement { .. }
        ));
    }

    #[test]
    fn astro_coord_system_is_empty_with_id_values() {
        let sys = |s: &str| {
            format!(
                "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation>{s}<AstroCoords/>\
                 </ObservationLocation></ObsDataLocation></WhereWhen>"
            )
        };
        for id in ID_VALUES {
            ok(&sys(&format!("<AstroCoordSystem id=\"{id}\"/>")));
        }
        ok(&sys(
            "<AstroCoordSystem id=\"UTC-FK5-GEO\"></AstroCoordSystem>",
        ));
        ok(&sys("<AstroCoordSystem><!-- c --></AstroCoordSystem>"));
        for id in [
            "GPS-FK5-GEO",
            "UTC-HPC-TOPO",
            "utc-fk5-geo",
            " UTC-FK5-GEO",
            "",
        ] {
            let e = bad(&sys(&format!("<AstroCoordSystem id=\"{id}\"/>")));
            assert!(matches!(e, SchemaError::InvalidValue { .. }), "{id:?}");
        }
        let e = bad(&sys("<AstroCoordSystem> </AstroCoordSystem>"));
        assert!(
            matches!(
                e,
                SchemaError::UnexpectedText {
                    empty_type: true,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = bad(&sys("<AstroCoordSystem><![CDATA[]]></AstroCoordSystem>"));
        assert!(
            matches!(
                e,
                SchemaError::UnexpectedText {
                    empty_type: true,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = bad(&sys("<AstroCoordSystem><Time/></AstroCoordSystem>"));
        assert!(matches!(e, SchemaError::UnexpectedElement { .. }), "{e:?}");
    }

    #[test]
    fn astro_coords() {
        ok(&coords(
            " coord_system_id=\"TT-ICRS-TOPO\"",
            "<Time><TimeInstant/></Time>",
        ));
        assert!(matches!(
            bad(&coords(" coord_system_id=\"TT-ICRS-topo\"", "")),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad(&coords("", "<Time/><Time/>")),
            SchemaError::DuplicateElement { .. }
        ));
        assert!(matches!(
            bad(&coords(" id=\"x\"", "")),
            SchemaError::UnexpectedAttribute { .. }
        ));
    }

    #[test]
    fn time_and_time_instant() {
        ok(&coords("", "<Time/>"));
        ok(&coords(
            "",
            "<Time unit=\"s\"><Error>0.1</Error><TimeInstant><ISOTime>yesterday</ISOTime><TimeOffset> 1e3 </TimeOffset>\
             <TimeScale>UTC</TimeScale><ISOTime>again</ISOTime></TimeInstant><TimeInstant/><Error>2</Error></Time>",
        ));
        assert!(matches!(
            bad(&coords("", "<Time><Error>x</Error></Time>")),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad(&coords(
                "",
                "<Time><TimeInstant><TimeOffset>1,5</TimeOffset></TimeInstant></Time>"
            )),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad(&coords("", "<Time><TimeInterval/></Time>")),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad(&coords("", "<Time scale=\"x\"/>")),
            SchemaError::UnexpectedAttribute { .. }
        ));
    }

    #[test]
    fn position_2d() {
        ok(&pos2d("<C1>1.5</C1><C2>-2</C2>"));
        ok(&pos2d("<C2> 2 </C2><C1>\n1\n</C1>"));
        ok(&coords(
            "",
            "<Position2D><Error2Radius>INF</Error2Radius><Name2>Dec</Name2><Value2><C1>0</C1><C2>0</C2></Value2>\
             <Name1>RA</Name1></Position2D>",
        ));
        let e = bad(&coords(
            "",
            "<Position2D><Value2><C1>0</C1><C2>0</C2></Value2></Position2D>",
        ));
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "Error2Radius"),
            "{e:?}"
        );
        let e = bad(&coords(
            "",
            "<Position2D><Error2Radius>1</Error2Radius></Position2D>",
        ));
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "Value2"),
            "{e:?}"
        );
        assert!(matches!(
            bad(&coords("", "<Position2D><Value2><C1>0</C1><C2>0</C2></Value2><Error2Radius>big</Error2Radius></Position2D>")),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad(&coords("", "<Position2D><Name3/><Value2><C1>0</C1><C2>0</C2></Value2><Error2Radius>1</Error2Radius></Position2D>")),
            SchemaError::UnexpectedElement { .. }
        ));
    }

    #[test]
    fn value2_coordinates() {
        let e = bad(&pos2d("<C1>1</C1>"));
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "C2"),
            "{e:?}"
        );
        assert!(matches!(
            bad(&pos2d("<C1>1</C1><C2>2</C2><C3>3</C3>")),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad(&pos2d("<C1>1</C1><C1>1</C1><C2>2</C2>")),
            SchemaError::DuplicateElement { .. }
        ));
        assert!(matches!(
            bad(&pos2d("<C1 pos_unit=\"deg\">1</C1><C2>2</C2>")),
            SchemaError::UnexpectedAttribute { .. }
        ));
        for v in ["abc", "", "1.5f", "+INF", "0x10"] {
            let e = bad(&pos2d(&format!("<C1>{v}</C1><C2>2</C2>")));
            assert!(
                matches!(
                    e,
                    SchemaError::InvalidValue {
                        attribute: None,
                        ..
                    }
                ),
                "{v:?}"
            );
        }
        for v in ["NaN", "-INF", "1e", "1e400", ".5", "+1"] {
            ok(&pos2d(&format!("<C1>{v}</C1><C2>2</C2>")));
        }
    }

    #[test]
    fn position_3d() {
        ok(&coords(
            "",
            "<Position3D unit=\"m\"><Name1>x</Name1><Name2>y</Name2><Name3>z</Name3>\
             <Value3><C3>3</C3><C1>1</C1><C2>2</C2></Value3></Position3D>",
        ));
        assert!(matches!(
            bad(&coords(
                "",
                "<Position3D><Value3><C1>1</C1><C2>2</C2></Value3></Position3D>"
            )),
            SchemaError::MissingElement { .. }
        ));
        assert!(matches!(
            bad(&coords("", "<Position3D><Value3><C1>1</C1><C2>2</C2><C3>3</C3></Value3><Error2Radius>1</Error2Radius></Position3D>")),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad(&coords("", "<Position3D/>")),
            SchemaError::MissingElement { .. }
        ));
    }

    // --- How, Why, Inference --------------------------------------------------------------

    #[test]
    fn how_needs_a_child() {
        ok("<How><Description>d</Description><Reference uri=\"x\"/><Description/></How>");
        let e = bad("<How/>");
        assert_eq!(
            e.to_string(),
            "<How> must contain at least one of Description, Reference (line 3)"
        );
        assert!(matches!(
            bad("<How><Name/></How>"),
            SchemaError::UnexpectedElement { .. }
        ));
    }

    #[test]
    fn why() {
        ok("<Why importance=\"0.5\" expires=\"2030-01-01T00:00:00Z\"><Name>n</Name><Concept>c</Concept>\
            <Inference><Name>n</Name></Inference><Description/><Reference uri=\"x\"/><Name>again</Name>\
            <Inference><Concept>c2</Concept></Inference></Why>");
        ok("<Why importance=\"5\"><Name/></Why>");
        ok("<Why importance=\" -1e3 \"><Name/></Why>");
        assert!(matches!(bad("<Why/>"), SchemaError::EmptyContent { .. }));
        assert!(matches!(
            bad("<Why importance=\"high\"><Name/></Why>"),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad("<Why expires=\"2030-01-01\"><Name/></Why>"),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad("<Why expires=\" 2030-01-01T00:00:00\"><Name/></Why>"),
            SchemaError::InvalidValue { .. }
        ));
        assert!(matches!(
            bad("<Why probability=\"1\"><Name/></Why>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
    }

    #[test]
    fn inference() {
        ok("<Why><Inference relation=\"associated\" probability=\"0.5\"><Concept>c</Concept><Name/>\
            <Description/><Reference uri=\"x\"/></Inference><Inference probability=\"1\"><Name/></Inference></Why>");
        assert!(matches!(
            bad("<Why><Inference/></Why>"),
            SchemaError::EmptyContent { .. }
        ));
        assert!(matches!(
            bad("<Why><Inference><Inference><Name/></Inference></Inference></Why>"),
            SchemaError::UnexpectedElement { .. }
        ));
        for p in [
            "0",
            "1",
            "0.0",
            "1.0",
            " 0.5 ",
            "-0",
            "1e",
            "1e-50",
            "1.00000001",
        ] {
            ok(&format!(
                "<Why><Inference probability=\"{p}\"><Name/></Inference></Why>"
            ));
        }
        for p in [
            "1.5", "-0.1", "NaN", "INF", "-INF", "1e400", "high", "", "1.01",
        ] {
            let e = bad(&format!(
                "<Why><Inference probability=\"{p}\"><Name/></Inference></Why>"
            ));
            assert!(matches!(e, SchemaError::InvalidValue { .. }), "{p:?}");
        }
    }

    // --- Citations ------------------------------------------------------------------------

    #[test]
    fn citations_sequence() {
        ok("<Citations><EventIVORN cite=\"followup\">ivo://a.b/c#1</EventIVORN></Citations>");
        ok("<Citations><EventIVORN cite=\"supersedes\">a</EventIVORN><EventIVORN cite=\"retraction\">b</EventIVORN>\
            <EventIVORN/><Description>d</Description></Citations>");
        let e = bad("<Citations/>");
        assert!(
            matches!(&e, SchemaError::MissingElement { element, .. } if element == "EventIVORN"),
            "{e:?}"
        );
        assert!(matches!(
            bad("<Citations><Description/></Citations>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Citations><Description/><EventIVORN>a</EventIVORN></Citations>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Citations><EventIVORN>a</EventIVORN><Description/><EventIVORN>b</EventIVORN></Citations>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Citations><EventIVORN>a</EventIVORN><Description/><Description/></Citations>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Citations><EventIVORN>a</EventIVORN><Reference uri=\"x\"/></Citations>"),
            SchemaError::UnexpectedElement { .. }
        ));
        for cite in [" followup", "Followup", "", "cites"] {
            let e = bad(&format!(
                "<Citations><EventIVORN cite=\"{cite}\">a</EventIVORN></Citations>"
            ));
            assert!(matches!(e, SchemaError::InvalidValue { .. }), "{cite:?}");
        }
        assert!(matches!(
            bad("<Citations><EventIVORN>a<b/></EventIVORN></Citations>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Citations><EventIVORN name=\"x\">a</EventIVORN></Citations>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
        assert!(matches!(
            bad("<Citations>t<EventIVORN>a</EventIVORN></Citations>"),
            SchemaError::UnexpectedText { .. }
        ));
    }

    // --- Reference and simple content -----------------------------------------------------

    #[test]
    fn reference() {
        ok("<Reference uri=\"http://x/y\" type=\"url\" mimetype=\"text/html\" meaning=\"http://m\"/>");
        ok("<Reference uri=\"\"></Reference>");
        ok("<Reference uri=\"a b é\"/>");
        assert!(matches!(
            bad("<Reference/>"),
            SchemaError::MissingAttribute { .. }
        ));
        assert!(matches!(
            bad("<Reference uri=\"x\" name=\"n\"/>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
        for uri in ["%4", "%zz", "a%%b", "a#b#c", "[", "a]", "::"] {
            let e = bad(&format!("<Reference uri=\"{uri}\"/>"));
            assert!(matches!(e, SchemaError::InvalidValue { .. }), "{uri:?}");
        }
        assert!(matches!(
            bad("<Reference uri=\"x\" meaning=\"%zz\"/>"),
            SchemaError::InvalidValue { .. }
        ));
        let e = bad("<Reference uri=\"x\"> </Reference>");
        assert!(
            matches!(
                e,
                SchemaError::UnexpectedText {
                    empty_type: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            bad("<Reference uri=\"x\">t</Reference>"),
            SchemaError::UnexpectedText { .. }
        ));
        assert!(matches!(
            bad("<Reference uri=\"x\"><Description/></Reference>"),
            SchemaError::UnexpectedElement { .. }
        ));
    }

    #[test]
    fn simple_content() {
        ok("<Description><![CDATA[<b>not markup</b>]]> &amp; text <!-- c --></Description>");
        ok("<Description/>");
        assert!(matches!(
            bad("<Description>a <b>b</b></Description>"),
            SchemaError::UnexpectedElement { .. }
        ));
        assert!(matches!(
            bad("<Description format=\"x\">d</Description>"),
            SchemaError::UnexpectedAttribute { .. }
        ));
        assert!(matches!(
            bad("<Why><Name><Concept/></Name></Why>"),
            SchemaError::UnexpectedElement { .. }
        ));
    }

    // --- messages ---------------------------------------------------------------------------

    #[test]
    fn messages_name_element_attribute_value_and_line() {
        let e = check(&event("<Trigger/>")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unexpected element <Trigger> in <VOEvent> (line 3)"
        );
        assert_eq!(e.line(), 3);
        let e = check(&rooted(r#"ivorn="i" version="2.0" role=" test""#, "")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "attribute role of <VOEvent> has invalid value ' test' \
             (expected one of observation, prediction, utility, test) (line 1)"
        );
        let e = bad("\n<Who>\n<Date>soon</Date></Who>");
        assert_eq!(
            e.to_string(),
            "<Date> has invalid content 'soon' (expected an xs:dateTime such as \
             2024-01-01T12:00:00.5Z, without spaces) (line 5)"
        );
        let e = bad(&format!("<Reference uri=\"{}%\"/>", "a".repeat(200)));
        let SchemaError::InvalidValue { value, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(value.len() < 100 && value.ends_with("..."), "{value}");
        let e = check(r#"<VOEvent ivorn="i" version="2.0"/>"#).unwrap_err();
        assert!(e.to_string().contains("has no namespace"), "{e}");
        let e = bad("<Citations/>");
        assert_eq!(
            e.to_string(),
            "<Citations> is missing required element <EventIVORN> (line 3)"
        );
        let e = bad("<Reference uri=\"x\" name=\"n\"/>");
        assert_eq!(
            e.to_string(),
            "attribute name is not allowed on <Reference> (line 3)"
        );
    }

    // --- corpus -------------------------------------------------------------------------------

    const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/voevents");

    fn check_file(path: &str) -> Result<(), SchemaError> {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let doc = xml::parse(&bytes, Limits::default()).unwrap_or_else(|e| panic!("{path}: {e}"));
        validate(&doc, &bytes)
    }

    /// The reason Comet rejects `file`, from MANIFEST's `comet_check` or, when that says
    /// only "REJECT", from the packet table in SOURCES.md.
    fn reject_reason(comet_check: &str, file: &str, sources: &str) -> String {
        if comet_check.trim() != "REJECT" {
            return comet_check.to_owned();
        }
        let needle = format!("| {file} |");
        let row = sources
            .lines()
            .find(|l| l.starts_with(&needle))
            .unwrap_or_else(|| panic!("no reason for {file} in MANIFEST.tsv or SOURCES.md"));
        row.split(" | ")
            .find(|cell| cell.starts_with("REJECT"))
            .unwrap_or_else(|| panic!("no REJECT cell for {file} in SOURCES.md"))
            .to_owned()
    }

    #[test]
    fn corpus_matches_comet() {
        let manifest = std::fs::read_to_string(format!("{CORPUS}/MANIFEST.tsv")).unwrap();
        let sources = std::fs::read_to_string(format!("{CORPUS}/SOURCES.md")).unwrap_or_default();
        let mut lines = manifest.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (file_col, check_col) = (col("file"), col("comet_check"));
        let (mut accepted, mut rejected, mut ivoid_only) = (0, 0, 0);
        let mut listed = std::collections::HashSet::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split('\t').collect();
            let (file, verdict) = (cells[file_col], cells[check_col]);
            listed.insert(file.to_owned());
            let result = check_file(&format!("{CORPUS}/{file}"));
            if verdict == "ACCEPT" {
                assert_eq!(result, Ok(()), "{file} must validate");
                accepted += 1;
            } else {
                assert!(verdict.starts_with("REJECT"), "{file}: {verdict}");
                let reason = reject_reason(verdict, file, &sources);
                if reason.contains("schema-invalid") {
                    assert!(result.is_err(), "{file} must fail the schema ({reason})");
                    rejected += 1;
                } else {
                    assert_eq!(
                        result,
                        Ok(()),
                        "{file} fails only Comet's IVOID check ({reason})"
                    );
                    ivoid_only += 1;
                }
            }
        }
        // Every packet in the directory is listed.
        for entry in std::fs::read_dir(CORPUS).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".xml") {
                assert!(listed.contains(&name), "{name} is not in MANIFEST.tsv");
            }
        }
        assert!(accepted >= 100, "only {accepted} ACCEPT packets");
        assert!(rejected >= 1);
        eprintln!(
            "corpus: {accepted} accepted, {rejected} schema-rejected, {ivoid_only} IVOID-only"
        );
    }

    #[test]
    fn gecam_datatype_typo_is_named() {
        let e = check_file(&format!("{CORPUS}/gecam_flt-event_1.xml")).unwrap_err();
        assert!(
            matches!(&e, SchemaError::UnexpectedAttribute { attribute, element, .. }
            if attribute == "datatype" && element == "Param"),
            "{e:?}"
        );
    }

    #[test]
    fn invalid_directory() {
        assert_eq!(
            check_file(&format!("{CORPUS}/invalid/control/valid-base.xml")),
            Ok(())
        );
        for (file, want) in [
            ("unknown-element.xml", "unexpected element <Trigger>"),
            ("wrong-version.xml", "attribute version"),
            ("xinclude-local-file.xml", "xi:include"),
            ("no-namespace.xml", "no namespace"),
            ("wrong-namespace.xml", "namespace"),
        ] {
            let e = check_file(&format!("{CORPUS}/invalid/{file}")).unwrap_err();
            assert!(e.to_string().contains(want), "{file}: {e}");
        }
    }
}
