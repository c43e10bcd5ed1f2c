//! Crash safety: `kill -9` at random points during a sustained multi-author load, 20
//! times over. After each restart every event acked before the kill is "previously seen",
//! the store opens as it is (LMDB needs no repair), and new events are accepted at once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const KILLS: usize = 20;
const AUTHORS: usize = 6;

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn acked_events_survive_repeated_kill_9() {
    let db = scratch("crash");
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut total_acked = 0;
    let mut total_unanswered = 0;
    for round in 0..KILLS {
        let mut b = Broker::start_with_db(&db, &[], true);
        // The store opened as it was left, and the broker accepts at once.
        let fresh = make_event(&format!("r{round}-fresh"), 0);
        let r = submit(b.receive(), &fresh);
        assert!(
            r.is_ack(),
            "round {round}: first event after restart: {r:?}\n{}",
            b.log_text()
        );
        assert!(!b.log_text().contains("ERROR"), "{}", b.log_text());

        let addr = b.receive();
        let acked = Arc::new(Mutex::new(vec![fresh]));
        let stop = Arc::new(AtomicBool::new(false));
        let unanswered = Arc::new(Mutex::new(0usize));
        let authors: Vec<_> = (0..AUTHORS)
            .map(|a| {
                let (acked, stop, unanswered) = (
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                    Arc::clone(&unanswered),
                );
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let ev = make_event(&format!("r{round}-a{a}-{i}"), 64);
                        i += 1;
                        match exchange(addr, &bolide::frame::encode(&ev), Duration::from_secs(5)) {
                            r if r.is_ack() => acked.lock().unwrap().push(ev),
                            Reply::Refused => break,
                            Reply::Msg(m) => panic!("unexpected reply during load: {m:?}"),
                            _ => *unanswered.lock().unwrap() += 1, // cut off by the kill
                        }
                    }
                })
            })
            .collect();
        let delay = Duration::from_millis(100 + rng(&mut seed) % 600);
        let started = Instant::now();
        std::thread::sleep(delay);
        b.kill(); // SIGKILL, no chance to flush anything
        stop.store(true, Ordering::SeqCst);
        for a in authors {
            a.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        total_acked += acked.len();
        total_unanswered += *unanswered.lock().unwrap();
        eprintln!(
            "round {round}: killed after {:?}, {} acked",
            started.elapsed(),
            acked.len()
        );
        drop(b);

        // Everything acked before the kill is remembered.
        let b = Broker::start_with_db(&db, &[], true);
        for ev in &acked {
            let r = submit(b.receive(), ev);
            assert!(
                r.is_nak() && r.result() == "Event rejected: Previously seen by this broker",
                "round {round}: an acked event was forgotten: {r:?}"
            );
        }
    }
    eprintln!("{KILLS} kills: {total_acked} acked events all remembered; {total_unanswered} submissions cut off unanswered");
    assert!(
        total_acked >= KILLS * 10,
        "too little load to mean anything: {total_acked}"
    );
    let _ = std::fs::remove_dir_all(&db);
}
