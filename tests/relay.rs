//! Author → bolide → subscribers over real loopback sockets: byte-exact relay, the ack's
//! fields, duplicate handling, persistence across a restart, and the test event.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn relays_exact_bytes_to_every_subscriber_and_acks_with_ivorn() {
    let b = Broker::start(&[]);
    let mut subs: Vec<Subscriber> = (0..3)
        .map(|_| Subscriber::connect(b.broadcast(), Behaviour::Healthy))
        .collect();
    assert!(b.wait_log("(3 subscribers)", T));
    let ev = read_corpus("swift_bat-grb-pos-532871-pretty-printed_1.xml");
    let r = submit(b.receive(), &ev);
    assert!(r.is_ack(), "{r:?}");
    let m = r.msg();
    assert_eq!(
        m.origin.as_deref(),
        Some("ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729")
    );
    assert_eq!(m.response.as_deref(), Some(LOCAL_IVO));
    for s in &mut subs {
        let (ivorn, bytes) = s.next_event(T).expect("event relayed");
        assert_eq!(ivorn, "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729");
        assert_eq!(bytes, ev, "relayed bytes differ from the submitted ones");
    }
    assert!(b.wait_log("sent to 3 subscribers", T));
}

#[test]
fn duplicates_are_refused_but_same_ivorn_with_other_bytes_is_new() {
    let b = Broker::start(&[]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    let ev = make_event("dup-1", 10);
    assert!(submit(b.receive(), &ev).is_ack());
    let again = submit(b.receive(), &ev);
    assert!(again.is_nak(), "{again:?}");
    assert_eq!(
        again.result(),
        "Event rejected: Previously seen by this broker"
    );
    assert_eq!(
        again.msg().origin.as_deref(),
        Some("ivo://bolide.test/stream#dup-1")
    );
    // Only the XML declaration differs: outside the VTP span, so still a duplicate.
    let redeclared = String::from_utf8(ev.clone()).unwrap().replace(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<?xml version='1.0'?>",
    );
    assert!(submit(b.receive(), redeclared.as_bytes()).is_nak());
    // Same ivorn, one more character inside the element: a different message.
    let other = make_event("dup-1", 11);
    assert!(submit(b.receive(), &other).is_ack());
    let (_, first) = sub.next_event(T).unwrap();
    let (_, second) = sub.next_event(T).unwrap();
    assert_eq!((first, second), (ev, other));
    assert!(
        sub.next_event(Duration::from_millis(500)).is_none(),
        "a duplicate was relayed"
    );
}

#[test]
fn an_acked_event_is_still_seen_after_a_restart() {
    let db = scratch("restart");
    let ev = make_event("restart-1", 0);
    {
        let b = Broker::start_with_db(&db, &[], true);
        assert!(submit(b.receive(), &ev).is_ack());
    } // killed with SIGKILL: the ack promised the record was committed
    let b = Broker::start_with_db(&db, &[], false);
    let r = submit(b.receive(), &ev);
    assert!(r.is_nak(), "{r:?}");
    assert_eq!(r.result(), "Event rejected: Previously seen by this broker");
    assert!(submit(b.receive(), &make_event("restart-2", 0)).is_ack());
}

#[test]
fn concurrent_authors_all_get_acks_and_subscribers_get_everything() {
    let b = Broker::start(&[]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    let addr = b.receive();
    let handles: Vec<_> = (0..8)
        .map(|a| {
            std::thread::spawn(move || {
                (0..25)
                    .filter(|i| submit(addr, &make_event(&format!("c{a}-{i}"), 0)).is_ack())
                    .count()
            })
        })
        .collect();
    let acked: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(acked, 200);
    let mut got = std::collections::HashSet::new();
    while got.len() < 200 {
        let (iv, _) = sub.next_event(T).expect("all 200 events relayed");
        assert!(got.insert(iv), "an event was relayed twice");
    }
}

#[test]
fn test_event_reaches_subscribers_and_is_not_recorded() {
    let b = Broker::start(&["--broadcast-test-interval=1"]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let (ivorn, bytes) = sub
        .next_event(T)
        .expect("a test event within a few seconds");
    assert!(
        ivorn.starts_with(&format!("{LOCAL_IVO}#TestEvent-")),
        "{ivorn}"
    );
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("role=\"test\""));
    assert!(text.starts_with("<?xml version='1.0' encoding='UTF-8'?>\n<voe:VOEvent"));
    // It is schema-valid: the broker itself accepts it from an author, which also shows
    // it was never recorded in the event database.
    let r = submit(b.receive(), &bytes);
    assert!(r.is_ack(), "{r:?}");
}

#[test]
fn subscriber_gets_authenticate_then_iamalive_and_stays_connected() {
    let b = Broker::start(&["--iamalive-interval=1"]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sub.iamalives < 3 && std::time::Instant::now() < deadline {
        let _ = sub.next_message(Duration::from_secs(2));
    }
    assert!(sub.iamalives >= 3, "iamalives: {}", sub.iamalives);
    // Still served after answering: an event arrives.
    assert!(submit(b.receive(), &make_event("alive-1", 0)).is_ack());
    assert!(sub.next_event(T).is_some());
}

#[test]
fn periodic_summary_line() {
    let b = Broker::start(&["--stats-interval=1"]);
    let _sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    assert!(submit(b.receive(), &make_event("sum-1", 0)).is_ack());
    assert!(submit(b.receive(), &make_event("sum-1", 0)).is_nak());
    assert!(submit(b.receive(), b"<VOEvent/>").is_nak());
    // Counts since start-up, then (a tick later) no increase: robust to where the ticks fall.
    assert!(
        b.wait_log(
            "(1 subscribers); events accepted 1 (+0), duplicates 1 (+0), rejected 1 (+0), copies sent 1 (+0)",
            T
        ),
        "{}",
        b.log_text()
    );
    let log = b.log_text();
    assert!(log.contains("events accepted 1 (+1)"));
    // The process's resident memory and threads end the line: the broker's threads (at
    // least the dispatcher, a listener's and the subscriber's) and a plausible RSS.
    let line = log.lines().rfind(|l| l.contains("summary:")).unwrap();
    let (mib, threads) = line
        .rsplit_once("; RSS ")
        .and_then(|(_, tail)| tail.split_once(" MiB, "))
        .and_then(|(m, t)| Some((m.parse::<f64>().ok()?, t.strip_suffix(" threads")?)))
        .unwrap_or_else(|| panic!("no RSS and threads in {line:?}"));
    let threads: u64 = threads.trim().parse().unwrap();
    assert!(mib > 1.0 && mib < 1024.0, "{line}");
    assert!(threads >= 3, "{line}");
}
