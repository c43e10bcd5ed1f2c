//! No event is lost while a subscriber connects: every event accepted after the broker
//! sent `authenticate` reaches the subscriber, whether it never answers (as pygcn does)
//! or answers late with filters, which then apply to the events accepted before the
//! answer. Events are submitted as soon as the test subscriber has read `authenticate`,
//! inside the broker's 250 ms wait for the answer.

mod common;

use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);
/// Time given to a duplicate or an unwanted event to arrive, after the last one expected.
const QUIET: Duration = Duration::from_millis(500);
/// The filter of the subscriber that answers; it selects the events of [`wanted`].
const FILTER: &str = "//Param[@name=\"Packet_Type\" and @value=\"61\"]";

fn ivorn(local: &str) -> String {
    format!("ivo://bolide.test/stream#{local}")
}

/// An event that passes [`FILTER`].
fn wanted(local: &str) -> Vec<u8> {
    let e = String::from_utf8(make_event(local, 0)).unwrap();
    e.replace(r#"value="0""#, r#"value="61""#).into_bytes()
}

/// Submit each event as an author and check that it is accepted, in this order.
fn submit_all(b: &Broker, events: &[Vec<u8>]) {
    for e in events {
        let r = submit(b.receive(), e);
        assert!(r.is_ack(), "{r:?}");
    }
}

/// The events `s` receives until none comes for [`QUIET`]; at most `limit` of them.
fn received(s: &mut Subscriber, limit: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < limit {
        match s.next_event(if got.is_empty() { T } else { QUIET }) {
            Some((iv, _)) => got.push(iv),
            None => break,
        }
    }
    got
}

/// Wait for `n` events, then make sure nothing else arrives for [`QUIET`].
fn exactly(s: &mut Subscriber, n: usize) -> Vec<String> {
    let mut got = received(s, n);
    if got.len() == n {
        got.extend(s.next_event(QUIET).map(|(iv, _)| iv));
    }
    got
}

/// A subscriber that never answers `authenticate` (pygcn) but acks events and answers
/// iamalive, as pygcn does: it gets the events accepted during the wait for its answer,
/// in order, once each, then the live ones.
#[test]
fn a_subscriber_that_never_answers_gets_the_events_of_the_wait() {
    let b = Broker::start(&["--no-sync"]);
    let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let early = ["early-1", "early-2", "early-3"];
    submit_all(&b, &early.map(|l| make_event(l, 0)));
    assert!(
        b.wait_log("connected (1 subscribers)", T),
        "{}",
        b.log_text()
    );
    let live = ["live-1", "live-2"];
    submit_all(&b, &live.map(|l| make_event(l, 0)));
    let want: Vec<String> = early.iter().chain(&live).map(|l| ivorn(l)).collect();
    assert_eq!(exactly(&mut s, want.len()), want);
    // At least the first event was accepted within the wait (it was held for the
    // subscriber), so the test covered the window it is about.
    assert!(
        b.wait_log(
            "events accepted while its answer to authenticate was awaited",
            T
        ),
        "{}",
        b.log_text()
    );
}

/// A subscriber that answers 200 ms after `authenticate` with an XPath filter: the events
/// accepted before its answer pass through that filter (only the matching ones arrive),
/// in order, once each, then the live ones, filtered the same way.
#[test]
fn a_late_answer_filters_the_events_of_the_wait() {
    let b = Broker::start(&["--no-sync"]);
    let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let authenticated = Instant::now();
    submit_all(
        &b,
        &[
            wanted("early-1"),
            make_event("early-2", 0),
            wanted("early-3"),
        ],
    );
    let answer_at = authenticated + Duration::from_millis(200);
    assert!(
        Instant::now() < answer_at,
        "submitting three events took over 200 ms: the machine is too slow for this test"
    );
    std::thread::sleep(answer_at - Instant::now());
    s.authenticate(&[FILTER]);
    assert!(b.wait_log("installed 1 filters", T), "{}", b.log_text());
    submit_all(&b, &[make_event("live-1", 0), wanted("live-2")]);
    let want: Vec<String> = ["early-1", "early-3", "live-2"].map(ivorn).to_vec();
    assert_eq!(exactly(&mut s, want.len()), want);
    assert!(
        b.wait_log(
            "3 events accepted while its answer to authenticate was awaited; sent the 2 that pass its filters",
            T
        ),
        "{}",
        b.log_text()
    );
}

/// More events during the wait than the subscriber queue holds drop the subscriber, as a
/// full backlog does, with a warning naming it.
#[test]
fn a_wait_longer_than_the_queue_drops_the_subscriber() {
    let b = Broker::start(&["--no-sync", "--subscriber-queue=2"]);
    let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let port = s.stream.local_addr().unwrap().port();
    submit_all(
        &b,
        &["over-1", "over-2", "over-3"].map(|l| make_event(l, 0)),
    );
    assert!(s.closed_by_broker(T), "{}", b.log_text());
    let warning = format!(
        ":{port}: too slow (2 events held while its answer to authenticate is awaited, not holding {})",
        ivorn("over-3")
    );
    assert!(b.wait_log(&warning, T), "{}", b.log_text());
}
