//! Unit tests of the XML parser, through [`parse`](super::parse) and the document accessors,
//! and a pass over every real packet in `../shared/voevents`.

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
    // CDATA where the root element should be (tests/fuzz_regressions holds the same).
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
    // Truncated documents report the missing end first, even with a `]]>` on the way.
    assert_eq!(p("<a>x]]>").unwrap_err(), UnexpectedEnd);
    assert_eq!(p("<a b='x").unwrap_err(), UnexpectedEnd);
}

/// The one-pass scanners: plain values and text are borrowed, anything with a
/// reference, CR, TAB or LF (attributes) is decoded; the other quote is plain.
#[test]
fn plain_values_are_borrowed_and_the_rest_decoded() {
    let d =
        p("<a b='x\"y' c=\"it's\" d='1&amp;2' e='t\tn\nr\r!'>p]q<c>r&lt;\r\ns</c></a>").unwrap();
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
    let d = p(
        "<\u{E9}l\u{E8}ve a\u{B7}b='1' \u{E9}='2' x-\u{4E2D}.y='3'><c\u{E9}/></\u{E9}l\u{E8}ve>",
    )
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
        let doc =
            parse(&bytes, Limits::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(doc.root().local, "VOEvent", "{}", path.display());
        assert_eq!(bytes[doc.root_span.start], b'<');
        assert_eq!(bytes[doc.root_span.end - 1], b'>');
        n += 1;
    }
    assert_eq!(n, 139);
}
