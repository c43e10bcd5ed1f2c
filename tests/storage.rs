//! The event database as the broker uses it: records expire after --eventdb-max-age and
//! are pruned every --eventdb-prune-interval; a full map gives naks with a clear reason
//! while subscribers keep being served, and the broker recovers once space is freed.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn records_expire_and_are_pruned() {
    let b = Broker::start(&["--eventdb-max-age=1", "--eventdb-prune-interval=1"]);
    let ev = make_event("ttl-1", 0);
    assert!(submit(b.receive(), &ev).is_ack());
    assert!(submit(b.receive(), &ev).is_nak());
    assert!(
        b.wait_log("pruned 1 expired records", Duration::from_secs(10)),
        "{}",
        b.log_text()
    );
    let r = submit(b.receive(), &ev);
    assert!(r.is_ack(), "an expired record still counted as seen: {r:?}");
}

#[test]
fn a_full_map_naks_with_a_reason_and_subscribers_are_still_served() {
    let b = Broker::start(&[
        "--no-sync",
        "--eventdb-map-size=64K",
        "--eventdb-max-age=2",
        "--eventdb-prune-interval=1",
    ]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", Duration::from_secs(10)));
    let mut full_at = None;
    for i in 0..2000 {
        let r = submit(b.receive(), &make_event(&format!("full-{i}"), 0));
        if r.is_nak() {
            assert_eq!(r.result(), "Event rejected: storage unavailable");
            full_at = Some(i);
            break;
        }
        assert!(r.is_ack(), "{r:?}");
    }
    let n = full_at.expect("the 64 KiB map never filled");
    assert!(b.wait_log("event database commit of", Duration::from_secs(5)));
    assert!(b.log_text().contains("is full"), "{}", b.log_text());
    // The subscriber was served throughout (fan-out does not wait for the commit) and is
    // still connected.
    for _ in 0..=n {
        assert!(sub.next_event(Duration::from_secs(10)).is_some());
    }
    // Once the records expire and are pruned, the broker accepts events again.
    let mut recovered = false;
    for i in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        if submit(b.receive(), &make_event(&format!("after-full-{i}"), 0)).is_ack() {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "{}", b.log_text());
    assert!(sub.next_event(Duration::from_secs(10)).is_some());
}
