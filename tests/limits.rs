//! Connection caps and per-frame deadlines over real sockets: over a cap the connection is
//! closed at once without a byte and logged (rate-limited); a subscriber or upstream that
//! sends half a frame and stops is dropped at the frame deadline; slow authors do not hold
//! up the next one.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn per_address_caps_for_authors_and_subscribers() {
    let b = Broker::start(&[
        "--max-authors-per-address=2",
        "--max-subscribers-per-address=1",
    ]);
    // Two idle authors from 127.0.0.1 fill its quota...
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(b.receive()).unwrap())
        .collect();
    assert!(b.wait_log("2 authors and 1 subscribers per address", T));
    std::thread::sleep(Duration::from_millis(200));
    // ...so a third is closed at once, without a byte.
    let started = Instant::now();
    let third = TcpStream::connect(b.receive()).unwrap();
    assert!(closed_without_a_byte(third, T));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not closed at once"
    );
    assert!(
        b.wait_log("refused submission from 127.0.0.1", T),
        "{}",
        b.log_text()
    );
    assert!(b.log_text().contains("per-address connection cap"));
    // Another address is not affected.
    let r = exchange_from(Ipv4Addr::new(127, 0, 0, 2), &b, &make_event("cap-1", 0));
    assert!(r.is_ack(), "{r:?}");
    // Subscribers: one per address.
    let _sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    let second = TcpStream::connect(b.broadcast()).unwrap();
    assert!(closed_without_a_byte(second, T));
    assert!(b.wait_log("refused subscription from 127.0.0.1", T));
    // Freed slots are reusable.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + T;
    loop {
        if submit(b.receive(), &make_event("cap-2", 0)).is_ack() {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot was not reusable");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exchange_from(from: Ipv4Addr, b: &Broker, payload: &[u8]) -> Reply {
    let mut s = connect_from(from, b.receive()).unwrap();
    s.write_all(&bolide::frame::encode(payload)).unwrap();
    let mut fr = bolide::frame::FrameReader::new(1 << 20);
    let mut r = bolide::sys::DeadlineReader {
        stream: &s,
        deadline: Instant::now() + T,
    };
    match fr.read_frame(&mut r) {
        Ok(f) => Reply::Msg(bolide::transport::parse(&f).unwrap()),
        Err(_) => Reply::Closed,
    }
}

#[test]
fn total_cap_and_rate_limited_logging() {
    let b = Broker::start(&["--max-connections=3", "--author-timeout=30"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 1, i + 1), b.receive()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // 200 more are refused; the log does not get 200 lines.
    for i in 0..200u32 {
        let s = connect_from(Ipv4Addr::new(127, 0, 2, (i % 200) as u8 + 1), b.receive()).unwrap();
        assert!(
            closed_without_a_byte(s, T),
            "connection {i} over the total cap was served"
        );
    }
    let lines = b.log_count("over the total connection cap");
    assert!(
        (1..=5).contains(&lines),
        "{lines} refusal lines for 200 refusals"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let s = connect_from(Ipv4Addr::new(127, 0, 3, 1), b.receive()).unwrap();
    assert!(closed_without_a_byte(s, T));
    assert!(
        b.wait_log("more like it in the last second", T),
        "{}",
        b.log_text()
    );
    drop(held);
}

#[test]
fn a_subscriber_that_stalls_mid_frame_is_dropped() {
    let b = Broker::start(&["--frame-timeout=1"]);
    let mut stall = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let mut healthy = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(2 subscribers)", T));
    // Half a length prefix, then nothing.
    stall.stream.write_all(&[0, 0]).unwrap();
    let started = Instant::now();
    assert!(stall.closed_by_broker(T), "not dropped");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "dropped before the deadline"
    );
    assert!(
        b.wait_log("sent part of a message (2 of 4 bytes) and stopped", T),
        "{}",
        b.log_text()
    );
    assert!(submit(b.receive(), &make_event("stall-1", 0)).is_ack());
    assert!(healthy.next_event(T).is_some());
}

#[test]
fn an_upstream_that_stalls_mid_frame_is_dropped() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        // A prefix announcing 500 bytes, 10 of them, then silence (but the socket stays
        // open, so only the frame deadline can end this).
        let mut w = 500u32.to_be_bytes().to_vec();
        w.extend_from_slice(b"<voe:VOEve");
        s.write_all(&w).unwrap();
        std::thread::sleep(Duration::from_secs(6));
    });
    let db = scratch("stall-up");
    let d = Broker::spawn(
        vec![
            format!("--remote=127.0.0.1:{port}"),
            "--frame-timeout=1".into(),
            format!("--eventdb={}", db.display()),
        ],
        &db,
        false,
    );
    assert!(
        d.wait_log("sent part of a message (14 of 504 bytes) and stopped", T),
        "{}",
        d.log_text()
    );
    upstream.join().unwrap();
}

/// The thread that accepts an author serves it on the spot only while nothing can wait:
/// authors that send nothing, half a prefix or half an event, and one with an event too
/// large to check in place, must not hold up the next author (whose submit gives up after
/// 10 s, far below the 60-s author deadline here). The half-sent event, completed later,
/// is then read on from where the first, non-blocking read stopped, and acked.
#[test]
fn slow_authors_do_not_hold_up_the_next_one() {
    let b = Broker::start(&["--author-timeout=60"]);
    let silent = TcpStream::connect(b.receive()).unwrap();
    let mut prefix_only = TcpStream::connect(b.receive()).unwrap();
    prefix_only.write_all(&[0, 0]).unwrap();
    let half = bolide::frame::encode(&make_event("slow-half", 0));
    let mut half_sent = TcpStream::connect(b.receive()).unwrap();
    half_sent.write_all(&half[..half.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..3 {
        let r = submit(b.receive(), &make_event(&format!("slow-next-{i}"), 0));
        assert!(r.is_ack(), "author {i} after the slow ones: {r:?}");
    }
    let large = make_event("slow-large", 100_000);
    assert!(large.len() > bolide::receiver::SERVE_IN_PLACE_MAX);
    assert!(submit(b.receive(), &large).is_ack());
    half_sent.write_all(&half[half.len() / 2..]).unwrap();
    half_sent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut frames = bolide::frame::FrameReader::new(1 << 20);
    let reply = frames.read_frame(&mut half_sent).unwrap();
    let msg = bolide::transport::parse(&reply).unwrap();
    assert_eq!(
        msg.role,
        Some(bolide::transport::Role::Ack),
        "the half-sent event, completed: {msg:?}"
    );
    drop((silent, prefix_only));
}
