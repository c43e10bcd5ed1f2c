//! A connection flood (thousands of connections opened and held, loopback only, from
//! other 127.x addresses) does not stop a legitimate author from being acked or a
//! subscriber from getting events, and the broker's thread count stays bounded by its caps.

mod common;

use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn legitimate_traffic_survives_a_connection_flood() {
    let nofile = raise_nofile();
    let attackers = if nofile >= 8192 {
        3000
    } else {
        (nofile as usize).saturating_sub(200).min(3000)
    };
    let b = Broker::start(&["--max-connections=1000"]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    let base_threads = threads_of(b.pid());

    // Open and hold: half on each port, from 20 addresses 127.0.9.1..20.
    let mut held: Vec<TcpStream> = Vec::with_capacity(attackers);
    for i in 0..attackers {
        let from = Ipv4Addr::new(127, 0, 9, (i % 20) as u8 + 1);
        let to = if i % 2 == 0 {
            b.receive()
        } else {
            b.broadcast()
        };
        match connect_from(from, to) {
            Ok(s) => held.push(s),
            Err(e) => panic!("flood connection {i}: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // Per-address caps admit at most 20 × (16 authors + 64 subscribers) of them.
    let threads = threads_of(b.pid());
    assert!(
        threads <= base_threads + 20 * (16 + 64) + 10,
        "{threads} threads under a flood of {attackers} connections (base {base_threads})"
    );
    // The legitimate author (127.0.0.1) is acked and the subscriber gets the event.
    let ev = make_event("flood-1", 0);
    let r = submit(b.receive(), &ev);
    assert!(r.is_ack(), "{r:?}");
    assert_eq!(sub.next_event(T).unwrap().1, ev);
    assert!(b.log_text().contains("per-address connection cap"));
    drop(held);
    // And after the flood, still fine.
    assert!(submit(b.receive(), &make_event("flood-2", 0)).is_ack());
}
