//! SIGTERM during a sustained submission load: the broker stops accepting, answers the
//! authors in flight, commits, closes the store and exits 0; everything it acked is still
//! "previously seen" after a restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

#[test]
fn sigterm_finishes_in_flight_work_and_loses_nothing_acked() {
    let db = scratch("shutdown");
    let mut b = Broker::start_with_db(&db, &[], true);
    let addr = b.receive();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let authors: Vec<_> = (0..8)
        .map(|a| {
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let ev = make_event(&format!("sd-{a}-{i}"), 0);
                    i += 1;
                    match submit(addr, &ev) {
                        r if r.is_ack() => acked.lock().unwrap().push(ev),
                        Reply::Refused => break, // the listener is gone
                        _ => {}
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let status = b
        .terminate(Duration::from_secs(30))
        .expect("bolide did not exit after SIGTERM");
    stop.store(true, Ordering::SeqCst);
    for a in authors {
        a.join().unwrap();
    }
    assert_eq!(status.code(), Some(0), "{}", b.log_text());
    assert!(
        b.wait_log("shut down cleanly", Duration::from_secs(1)),
        "{}",
        b.log_text()
    );
    assert!(b.log_text().contains("author connections in flight"));
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "only {} events acked before the shutdown",
        acked.len()
    );
    drop(b);
    let b = Broker::start_with_db(&db, &[], false);
    for ev in &acked {
        let r = submit(b.receive(), ev);
        assert!(r.is_nak(), "an acked event was forgotten: {r:?}");
        assert_eq!(r.result(), "Event rejected: Previously seen by this broker");
    }
}
