//! Brokers subscribed to brokers (--remote): loop prevention in a ring, de-duplication of
//! redundant upstreams, reconnection with backoff, and no reconnect storm against an
//! upstream that accepts and closes at once.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(20);

fn remote(port: u16) -> String {
    format!("--remote=127.0.0.1:{port}")
}

/// Collect `n` distinct events; panics on a duplicate delivery.
fn collect(sub: &mut Subscriber, n: usize) -> HashMap<String, Vec<u8>> {
    let mut got = HashMap::new();
    while got.len() < n {
        let (iv, bytes) = sub
            .next_event(T)
            .unwrap_or_else(|| panic!("only {} of {n} events arrived", got.len()));
        assert!(
            got.insert(iv.clone(), bytes).is_none(),
            "{iv} delivered twice"
        );
    }
    got
}

#[test]
fn ring_of_three_delivers_every_event_exactly_once() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let port = |p: u16| format!("--broadcast-port={p}");
    // A→B→C→A: B subscribes to A, C to B, A to C.
    let a = Broker::start(&["--no-sync", &port(pa), &remote(pc)]);
    let b = Broker::start(&["--no-sync", &port(pb), &remote(pa)]);
    let c = Broker::start(&["--no-sync", &port(pc), &remote(pb)]);
    for x in [&a, &b, &c] {
        assert!(x.wait_log("subscribed to upstream", T), "{}", x.log_text());
    }
    let mut subs: Vec<Subscriber> = [&a, &b, &c]
        .iter()
        .map(|x| Subscriber::connect(x.broadcast(), Behaviour::Healthy))
        .collect();
    // Each broker has its own subscriber plus its downstream broker.
    for x in [&a, &b, &c] {
        assert!(x.wait_log("(2 subscribers)", T), "{}", x.log_text());
    }
    let mut sent = HashMap::new();
    for i in 0..100 {
        for (name, x) in [("a", &a), ("c", &c)] {
            let ev = make_event(&format!("ring-{name}-{i}"), 0);
            assert!(submit(x.receive(), &ev).is_ack());
            sent.insert(format!("ivo://bolide.test/stream#ring-{name}-{i}"), ev);
        }
    }
    for s in &mut subs {
        let got = collect(s, 200);
        for (iv, bytes) in &got {
            assert_eq!(Some(bytes), sent.get(iv), "{iv}: bytes differ");
        }
        assert!(
            s.next_event(Duration::from_millis(500)).is_none(),
            "an extra delivery"
        );
    }
    // Every broker accepted (and so forwarded) each event exactly once; the copy that
    // came round the ring was recognised as seen.
    for (name, x) in [("A", &a), ("B", &b), ("C", &c)] {
        for iv in sent.keys() {
            let n = x.log_count(&format!("accepted {iv} "));
            assert_eq!(n, 1, "broker {name} accepted {iv} {n} times");
        }
    }
    assert!(
        a.log_count("previously seen") >= 100,
        "A never saw its own events come back"
    );
    assert!(c.log_count("previously seen") >= 100);
}

#[test]
fn redundant_upstreams_deliver_each_event_once() {
    let u1 = Broker::start(&["--no-sync"]);
    let u2 = Broker::start(&["--no-sync"]);
    let d = Broker::start(&[
        "--no-sync",
        &remote(u1.broadcast().port()),
        &format!("--subscribe=127.0.0.1:{}", u2.broadcast().port()),
    ]);
    assert!(u1.wait_log("(1 subscribers)", T) && u2.wait_log("(1 subscribers)", T));
    let mut sub = Subscriber::connect(d.broadcast(), Behaviour::Healthy);
    assert!(d.wait_log("(1 subscribers)", T));
    for i in 0..50 {
        let ev = make_event(&format!("redundant-{i}"), 0);
        assert!(submit(u1.receive(), &ev).is_ack());
        assert!(submit(u2.receive(), &ev).is_ack());
    }
    let got = collect(&mut sub, 50);
    assert_eq!(got.len(), 50);
    assert!(
        sub.next_event(Duration::from_millis(800)).is_none(),
        "an event arrived twice"
    );
    assert_eq!(d.log_count("previously seen"), 50, "{}", d.log_text());
}

#[test]
fn subscriber_reconnects_after_the_upstream_restarts() {
    let db = scratch("upstream-db");
    let up_port = free_port();
    let up_args = [
        "--no-sync".to_string(),
        format!("--broadcast-port={up_port}"),
    ];
    let up_refs: Vec<&str> = up_args.iter().map(String::as_str).collect();
    let mut up = Broker::start_with_db(&db, &up_refs, true);
    // The downstream also broadcasts, so the test can watch what it relays.
    let d = Broker::start(&["--no-sync", &remote(up_port)]);
    assert!(d.wait_log("subscribed to upstream", T));
    let mut sub = Subscriber::connect(d.broadcast(), Behaviour::Healthy);
    assert!(d.wait_log("(1 subscribers)", T));
    assert!(submit(up.receive(), &make_event("before-restart", 0)).is_ack());
    assert_eq!(
        sub.next_event(T).unwrap().0,
        "ivo://bolide.test/stream#before-restart"
    );

    up.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let up = Broker::start_with_db(&db, &up_refs, false);
    // Backoff after the drop: ≤1 s, ≤2 s, ≤4 s... so it is back within ~8 s of the restart.
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.log_count("subscribed to upstream") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.log_count("subscribed to upstream"), 2, "{}", d.log_text());
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "reconnected after {took:?}");
    assert!(up.wait_log("(1 subscribers)", T));
    assert!(submit(up.receive(), &make_event("after-restart", 0)).is_ack());
    assert_eq!(
        sub.next_event(T).unwrap().0,
        "ivo://bolide.test/stream#after-restart"
    );
}

#[test]
fn accept_then_close_upstream_gets_a_bounded_number_of_attempts() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let counter = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(12);
        let mut n = 0;
        while Instant::now() < end {
            match l.accept() {
                Ok((s, _)) => {
                    n += 1;
                    drop(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        n
    });
    let d = Broker::spawn(
        vec![
            remote(port),
            format!("--eventdb={}", scratch("storm").display()),
        ],
        &scratch("storm-unused"),
        false,
    );
    let attempts = counter.join().unwrap();
    // Delays of at least 1, 1, 2, 4 s: at most 5 attempts in 12 s (a reset-on-connect
    // client would make 8 or more); and it does keep trying.
    assert!(
        (3..=5).contains(&attempts),
        "{attempts} attempts in 12 s\n{}",
        d.log_text()
    );
}

#[test]
fn own_test_events_coming_back_round_a_ring_are_not_relayed_again() {
    let (pa, pb) = (free_port(), free_port());
    let a = Broker::start(&[
        "--local-ivo=ivo://bolide.test/a",
        "--broadcast-test-interval=1",
        &format!("--broadcast-port={pa}"),
        &remote(pb),
    ]);
    let b = Broker::start(&[
        "--local-ivo=ivo://bolide.test/b",
        &format!("--broadcast-port={pb}"),
        &remote(pa),
    ]);
    assert!(a.wait_log("subscribed to upstream", T) && b.wait_log("subscribed to upstream", T));
    // B takes A's test events as new (they are news to B) and relays them back to A...
    assert!(
        b.wait_log("accepted ivo://bolide.test/a#TestEvent-", T),
        "{}",
        b.log_text()
    );
    // ...where A recognises its own and stops them.
    assert!(
        a.wait_log("ignored ivo://bolide.test/a#TestEvent-", T),
        "{}",
        a.log_text()
    );
    assert_eq!(
        a.log_count("accepted ivo://bolide.test/a#TestEvent-"),
        0,
        "{}",
        a.log_text()
    );
}

#[test]
fn a_silent_upstream_is_dropped_after_the_inactivity_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accepts and holds connections without ever sending a byte.
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(2) {
            held.push(s.unwrap());
        }
        held.len()
    });
    let db = scratch("silent");
    let d = Broker::spawn(
        vec![
            remote(port),
            "--remote-timeout=1".into(),
            format!("--eventdb={}", db.display()),
        ],
        &db,
        false,
    );
    assert!(
        d.wait_log("no iamalive received from upstream 127.0.0.1", T),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("for 1 seconds; reconnecting"));
    // And it does reconnect.
    assert_eq!(holder.join().unwrap(), 2);
}

#[test]
fn filter_is_sent_upstream_and_honoured() {
    let up = Broker::start(&[]);
    let d = Broker::start(&[
        &remote(up.broadcast().port()),
        r#"--filter=contains(@ivorn, "keep")"#,
    ]);
    assert!(up.wait_log("installed 1 filters", T), "{}", up.log_text());
    let mut sub = Subscriber::connect(d.broadcast(), Behaviour::Healthy);
    assert!(d.wait_log("(1 subscribers)", T));
    assert!(submit(up.receive(), &make_event("drop-1", 0)).is_ack());
    assert!(submit(up.receive(), &make_event("keep-2", 0)).is_ack());
    assert_eq!(
        sub.next_event(T).unwrap().0,
        "ivo://bolide.test/stream#keep-2"
    );
    assert!(sub.next_event(Duration::from_millis(500)).is_none());
}
