//! Soak (not part of `make test`; run with `make soak`, SOAK_SECONDS=600 by default):
//! authors submit steadily while healthy subscribers count deliveries and misbehaving ones
//! (never reading, never acking, never answering iamalive) come and go. Reports RSS at the
//! start and end, deliveries against expectations, and drops; fails on any loss or
//! duplicate at a healthy subscriber or unbounded memory growth.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const HEALTHY: usize = 20;
const AUTHORS: usize = 4;

#[test]
#[ignore = "long-running; use `make soak`"]
fn soak() {
    let secs: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let rate: u64 = std::env::var("SOAK_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    raise_nofile();
    let b = Broker::start(&[
        "--iamalive-interval=10",
        "--subscriber-queue=64",
        "--write-timeout=10",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let healthy: Vec<_> = (0..HEALTHY)
        .map(|_| {
            let mut s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut got = HashSet::new();
                let mut dups = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Some((iv, _)) = s.next_event(Duration::from_millis(500)) {
                        if !got.insert(iv) {
                            dups += 1;
                        }
                    }
                }
                while let Some((iv, _)) = s.next_event(Duration::from_secs(3)) {
                    if !got.insert(iv) {
                        dups += 1;
                    }
                }
                (got, dups)
            })
        })
        .collect();
    assert!(b.wait_log(&format!("({HEALTHY} subscribers)"), Duration::from_secs(20)));
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = b.rss_kb();

    // Misbehaving subscribers, replaced every 30 s.
    let bad_rounds = Arc::new(AtomicUsize::new(0));
    let bad = {
        let (stop, addr, rounds) = (Arc::clone(&stop), b.broadcast(), Arc::clone(&bad_rounds));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let stuck: Vec<TcpStream> =
                    (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
                let mut others: Vec<Subscriber> = (0..3)
                    .map(|i| {
                        Subscriber::connect(
                            addr,
                            if i % 2 == 0 {
                                Behaviour::NoAck
                            } else {
                                Behaviour::NoIamalive
                            },
                        )
                    })
                    .collect();
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    for s in &mut others {
                        let _ = s.next_message(Duration::from_millis(50));
                    }
                }
                drop(stuck);
                rounds.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let addr = b.receive();
    let started = Instant::now();
    let authors: Vec<_> = (0..AUTHORS)
        .map(|a| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            let period = Duration::from_secs_f64(AUTHORS as f64 / rate as f64);
            std::thread::spawn(move || {
                let mut i = 0u64;
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let ev = make_event(&format!("soak-{a}-{i}"), 4000);
                    if submit(addr, &ev).is_ack() {
                        acked
                            .lock()
                            .unwrap()
                            .insert(format!("ivo://bolide.test/stream#soak-{a}-{i}"));
                    }
                    i += 1;
                    next += period;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        })
        .collect();
    let mut rss_peak = rss_start;
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        rss_peak = rss_peak.max(b.rss_kb());
    }
    stop.store(true, Ordering::SeqCst);
    for a in authors {
        a.join().unwrap();
    }
    bad.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let mut delivered = 0;
    let mut lost = 0;
    let mut dups_total = 0;
    for h in healthy {
        let (got, dups) = h.join().unwrap();
        delivered += got.len();
        lost += acked.difference(&got).count();
        dups_total += dups;
    }
    let rss_end = b.rss_kb();
    let drops = b.log_count("dropping subscriber")
        + b.log_count("is not acknowledging events")
        + b.log_count("appears to be dead");
    let summary = format!(
        "soak: {secs} s, {} events acked, {delivered} delivered to {HEALTHY} healthy subscribers (expected {}), lost {lost}, duplicates {dups_total}; \
         {} rounds of bad subscribers, {drops} drops; RSS start {rss_start} KiB, peak {rss_peak} KiB, end {rss_end} KiB",
        acked.len(),
        acked.len() * HEALTHY,
        bad_rounds.load(Ordering::SeqCst)
    );
    println!("{summary}");
    assert_eq!(lost, 0, "{summary}");
    assert_eq!(dups_total, 0, "{summary}");
    assert_eq!(delivered, acked.len() * HEALTHY, "{summary}");
    assert!(rss_end < rss_start + 64 * 1024, "memory grew: {summary}");
}
