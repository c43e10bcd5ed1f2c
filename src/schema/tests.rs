//! Unit tests of the VOEvent 2.0 schema check on hand-written documents: the root and its
//! namespaces, each content model, attribute and simple type, and the wording of the
//! messages. The helpers here build and check those documents; `where_when` (the deepest
//! part of the grammar) and `corpus` (every packet in `../shared/voevents`) use them too.

use super::*;
use crate::xml::{self, Limits};

mod corpus;
mod where_when;

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
        check(r#"<VOEvent xmlns="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="i" version="2.0"/>"#),
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
    let e = check(r#"<voe:Event xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"/>"#).unwrap_err();
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
    ok(
        "<Who><Author><title>t</title></Author><Reference uri=\"x\"/><Description>d</Description>\
        <Date>2024-01-01T00:00:00Z</Date><AuthorIVORN>ivo://a.b/c</AuthorIVORN></Who>",
    );
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
    ok(
        "<Who><Author><title>t</title><shortName>s</shortName><logoURL>http://x/l.png</logoURL>\
        <contactName>n</contactName><contactEmail>e</contactEmail><contactPhone>p</contactPhone>\
        <contributor>c1</contributor><contributor>c2</contributor><title>t2</title></Author></Who>",
    );
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
