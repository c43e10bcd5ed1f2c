//! Subscriber XPath filters over real sockets, against the corpus: Comet's documented
//! examples and every result type, NaN, invalid expressions, evaluation errors, any-of,
//! the old `<filter type="xpath">` form, replacement by a later authenticate, and the
//! test event passing through filters. Expected sets come from MANIFEST.tsv and from
//! bolide's own XML parser, not from the XPath engine under test.

mod common;

use std::collections::HashSet;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;

struct Packet {
    file: String,
    ivorn: String,
    role: String,
    cites: bool,
    groups: usize,
    bytes: Vec<u8>,
}

fn accepted_packets() -> Vec<Packet> {
    let manifest = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).unwrap();
    let mut lines = manifest.lines();
    let h: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let c = |n: &str| h.iter().position(|x| *x == n).unwrap();
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[c("comet_check")] == "ACCEPT")
        .map(|f| Packet {
            file: f[c("file")].into(),
            ivorn: f[c("ivorn")].into(),
            role: f[c("role")].into(),
            cites: f[c("cites")] != "-",
            groups: f[c("groups")].parse().unwrap(),
            bytes: read_corpus(f[c("file")]),
        })
        .collect()
}

/// Text of the first Citations/EventIVORN, via bolide's parser.
fn first_cited(bytes: &[u8]) -> String {
    let d = bolide::xml::parse(bytes, Default::default()).unwrap();
    d.child(0, "Citations")
        .and_then(|c| d.child(c, "EventIVORN"))
        .map(|e| d.elements[e].text.trim().to_string())
        .unwrap_or_default()
}

/// Collect ivorns until `quiet` passes without an event.
fn collector(mut s: Subscriber, quiet: Duration) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Some((iv, _)) = s.next_event(quiet) {
            got.push(iv);
        }
        got
    })
}

#[test]
fn filter_matrix_over_the_corpus() {
    let packets = accepted_packets();
    assert_eq!(packets.len(), 131);
    type Oracle = fn(&Packet) -> bool;
    let cases: Vec<(&str, Vec<&str>, Oracle)> = vec![
        ("none", vec![], |_| true),
        (
            "comet example: not test",
            vec![r#"/*[local-name()="VOEvent" and @role!="test"]"#],
            |p| p.role != "test",
        ),
        (
            "boolean: swift stream",
            vec![r#"starts-with(@ivorn, "ivo://nasa.gsfc.gcn/SWIFT#")"#],
            |p| p.ivorn.starts_with("ivo://nasa.gsfc.gcn/SWIFT#"),
        ),
        ("node-set: has citations", vec!["//Citations"], |p| p.cites),
        (
            "string: first cited ivorn",
            vec!["string(//Citations/EventIVORN)"],
            |p| !first_cited(&p.bytes).is_empty(),
        ),
        ("number: group count", vec!["count(//What/Group)"], |p| {
            p.groups > 0
        }),
        ("number: zero", vec!["0"], |_| false),
        ("number: NaN is positive", vec!["number(@ivorn)"], |_| true),
        ("invalid only: everything", vec!["//[", "))"], |_| true),
        (
            "evaluation error only: nothing",
            vec!["//voe:VOEvent"],
            |_| false,
        ),
        (
            "any-of with bad ones",
            vec!["//voe:VOEvent", "//[", r#"@role="test""#],
            |p| p.role == "test",
        ),
        (
            "comet example: param value",
            vec![r#"//Param[@name="Packet_Type" and @value>100]"#],
            |p| {
                let d = bolide::xml::parse(&p.bytes, Default::default()).unwrap();
                (0..d.elements.len()).any(|e| {
                    d.elements[e].local == "Param"
                        && d.attr(e, "name") == Some("Packet_Type")
                        && d.attr(e, "value")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .is_some_and(|v| v > 100.0)
                })
            },
        ),
    ];
    let b = Broker::start(&["--no-sync"]);
    let mut readers = Vec::new();
    for (name, filters, _) in &cases {
        let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
        s.authenticate(filters);
        readers.push((name, collector(s, Duration::from_secs(3))));
    }
    // The old form, still accepted by Comet.
    let mut old = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    old.send_raw(br#"<trn:Transport xmlns:trn="http://telescope-networks.org/schema/Transport/v1.1" role="authenticate" version="1.0"><Origin>ivo://bolide.test/broker</Origin><Meta><filter type="xpath">@role="utility"</filter></Meta></trn:Transport>"#);
    let old = collector(old, Duration::from_secs(3));
    assert!(b.wait_log(
        &format!("({} subscribers)", cases.len() + 1),
        Duration::from_secs(10)
    ));
    assert!(b.wait_log("installed 1 filters", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    for p in &packets {
        assert!(submit(b.receive(), &p.bytes).is_ack(), "{}", p.file);
    }
    for ((name, h), (_, _, oracle)) in readers.into_iter().zip(&cases) {
        let got: Vec<String> = h.join().unwrap();
        let set: HashSet<&String> = got.iter().collect();
        assert_eq!(set.len(), got.len(), "{name}: duplicate delivery");
        let want: HashSet<&String> = packets
            .iter()
            .filter(|p| oracle(p))
            .map(|p| &p.ivorn)
            .collect();
        assert_eq!(set, want, "{name}: wrong selection");
    }
    let got: HashSet<String> = old.join().unwrap().into_iter().collect();
    let want: HashSet<String> = packets
        .iter()
        .filter(|p| p.role == "utility")
        .map(|p| p.ivorn.clone())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "old filter form");
    assert!(
        b.log_text().contains("is not valid XPath"),
        "invalid filters are logged"
    );
}

#[test]
fn a_second_authenticate_replaces_the_filters() {
    let b = Broker::start(&[]);
    let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    s.authenticate(&["false()"]);
    assert!(b.wait_log("installed 1 filters", Duration::from_secs(10)));
    assert!(submit(b.receive(), &make_event("swap-1", 0)).is_ack());
    assert!(
        s.next_event(Duration::from_millis(700)).is_none(),
        "filtered event delivered"
    );
    // New filters at any time; an empty list means everything again.
    s.authenticate(&[]);
    assert!(b.wait_log("installed 0 filters", Duration::from_secs(10)));
    assert!(submit(b.receive(), &make_event("swap-2", 0)).is_ack());
    assert_eq!(
        s.next_event(Duration::from_secs(10)).unwrap().0,
        "ivo://bolide.test/stream#swap-2"
    );
    s.authenticate(&[r#"contains(@ivorn, "keep")"#]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.log_count("installed 1 filters") < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.log_count("installed 1 filters"), 2);
    assert!(submit(b.receive(), &make_event("drop-3", 0)).is_ack());
    assert!(submit(b.receive(), &make_event("keep-4", 0)).is_ack());
    assert_eq!(
        s.next_event(Duration::from_secs(10)).unwrap().0,
        "ivo://bolide.test/stream#keep-4"
    );
}

#[test]
fn the_test_event_passes_through_filters() {
    let b = Broker::start(&["--broadcast-test-interval=1"]);
    let mut plain = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let mut picky = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    picky.authenticate(&[r#"/*[local-name()="VOEvent" and @role!="test"]"#]);
    assert!(b.wait_log("installed 1 filters", Duration::from_secs(10)));
    let (iv, _) = plain.next_event(Duration::from_secs(5)).unwrap();
    assert!(iv.contains("#TestEvent-"));
    assert!(submit(b.receive(), &make_event("real-1", 0)).is_ack());
    // The picky one skips test events but gets the real one.
    assert_eq!(
        picky.next_event(Duration::from_secs(5)).unwrap().0,
        "ivo://bolide.test/stream#real-1"
    );
}

#[test]
fn filter_limits_are_enforced() {
    let b = Broker::start(&["--max-filters=2", "--max-filter-length=20"]);
    let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let long = format!("'{}'", "x".repeat(30));
    s.authenticate(&["false()", &long, "false()", "true()"]);
    assert!(b.wait_log("only the first 2 are installed", Duration::from_secs(10)));
    assert!(b.wait_log("exceeds --max-filter-length 20", Duration::from_secs(10)));
    assert!(b.wait_log("installed 1 filters", Duration::from_secs(10)));
    // Only false() remains: nothing arrives.
    assert!(submit(b.receive(), &make_event("lim-1", 0)).is_ack());
    assert!(s.next_event(Duration::from_millis(700)).is_none());
}

/// A subscriber that answers authenticate only after it was registered (slower than the
/// broker's 250 ms wait) still has its filters applied within a fraction of a second.
#[test]
fn a_late_authenticate_answer_applies_promptly() {
    let b = Broker::start(&[]);
    let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", Duration::from_secs(10)));
    s.authenticate(&["false()"]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        b.log_text().contains("installed 1 filters"),
        "filters not applied within 700 ms"
    );
    assert!(submit(b.receive(), &make_event("late-1", 0)).is_ack());
    assert!(
        s.next_event(Duration::from_millis(700)).is_none(),
        "a filtered event was delivered"
    );
}
