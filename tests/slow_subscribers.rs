//! Misbehaving subscribers are dropped while a healthy one gets every event, and the
//! broker's memory stays bounded: one that never reads (its socket fills, its queue
//! overflows), one that never acks, one that never answers iamalive.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const EVENTS: usize = 300;
const PAD: usize = 64 * 1024;

#[test]
fn bad_subscribers_are_dropped_and_the_healthy_one_gets_everything() {
    let b = Broker::start(&[
        "--no-sync",
        "--iamalive-interval=2",
        "--subscriber-queue=16",
        "--write-timeout=3",
    ]);
    let baseline_rss = b.rss_kb();
    // Never reads a single byte, not even the authenticate.
    let stuck = TcpStream::connect(b.broadcast()).unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let mut no_ack = Subscriber::connect(b.broadcast(), Behaviour::NoAck);
    let mut no_alive = Subscriber::connect(b.broadcast(), Behaviour::NoIamalive);
    let mut healthy = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(4 subscribers)", Duration::from_secs(10)));

    // The author keeps at most WINDOW events ahead of the healthy subscriber, so "healthy"
    // means "keeps up" however slowly this machine runs the test: its queue (16) and
    // unacknowledged count (10) never come near the limits, while the bad ones pass them.
    const WINDOW: usize = 8;
    let received = Arc::new(AtomicUsize::new(0));
    let healthy_received = Arc::clone(&received);
    let healthy_thread = std::thread::spawn(move || {
        let mut got = HashSet::new();
        while got.len() < EVENTS {
            match healthy.next_event(Duration::from_secs(30)) {
                Some((iv, bytes)) => {
                    assert!(bytes.len() > PAD);
                    assert!(got.insert(iv), "duplicate delivery");
                    healthy_received.store(got.len(), Ordering::SeqCst);
                }
                None => break,
            }
        }
        got.len()
    });
    let no_ack_thread =
        std::thread::spawn(move || no_ack.closed_by_broker(Duration::from_secs(60)));
    let no_alive_thread =
        std::thread::spawn(move || no_alive.closed_by_broker(Duration::from_secs(60)));

    let mut peak_rss = 0;
    for i in 0..EVENTS {
        let waited = Instant::now();
        while received.load(Ordering::SeqCst) + WINDOW < i {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "the healthy subscriber stopped receiving after {} events",
                received.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = submit(b.receive(), &make_event(&format!("slow-{i}"), PAD));
        assert!(r.is_ack(), "event {i}: {r:?}");
        if i % 20 == 0 {
            peak_rss = peak_rss.max(b.rss_kb());
        }
    }
    assert_eq!(
        healthy_thread.join().unwrap(),
        EVENTS,
        "the healthy subscriber missed events"
    );
    assert!(
        no_ack_thread.join().unwrap(),
        "the non-acking subscriber was not dropped"
    );
    assert!(
        no_alive_thread.join().unwrap(),
        "the silent subscriber was not dropped"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let needle = format!("dropping subscriber 127.0.0.1:{stuck_port}");
    while !b.log_text().contains(&needle) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        b.log_text().contains(&needle),
        "the stuck subscriber was not dropped"
    );
    assert!(b.log_text().contains("is not acknowledging events"));
    assert!(b.log_text().contains("appears to be dead"));
    // ~19 MiB of events went through; the broker holds at most a few queues of them.
    peak_rss = peak_rss.max(b.rss_kb());
    assert!(
        peak_rss < baseline_rss + 48 * 1024,
        "RSS grew from {baseline_rss} KiB to {peak_rss} KiB"
    );
    drop(stuck);
}
