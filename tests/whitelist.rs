//! Whitelists over real sockets: refused authors and subscribers are closed without a
//! byte; IPv6 loopback works on the default dual-stack listener.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

fn v6(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new("::1".parse().unwrap(), addr.port())
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn refused_peers_are_closed_without_a_byte() {
    let b = Broker::start(&[
        "--author-whitelist=10.0.0.0/8",
        "--subscriber-whitelist=192.0.2.0/255.255.255.0",
    ]);
    let s = TcpStream::connect(b.receive()).unwrap();
    // Even after sending a valid event, nothing comes back.
    let mut w = s.try_clone().unwrap();
    let _ = std::io::Write::write_all(&mut w, &bolide::frame::encode(&make_event("wl-1", 0)));
    assert!(closed_without_a_byte(s, Duration::from_secs(5)));
    let s = TcpStream::connect(b.broadcast()).unwrap();
    assert!(closed_without_a_byte(s, Duration::from_secs(5)));
    assert!(b.wait_log(
        "Attempted submission from non-whitelisted 127.0.0.1",
        Duration::from_secs(5)
    ));
    assert!(b.wait_log(
        "Attempted subscription from non-whitelisted 127.0.0.1",
        Duration::from_secs(5)
    ));
}

#[test]
fn allowed_networks_and_ipv6_loopback() {
    let b = Broker::start(&[
        "--author-whitelist=127.0.0.1",
        "--subscriber-whitelist=::1/128",
    ]);
    // IPv4 author allowed (the dual-stack listener reports ::ffff:127.0.0.1, normalized).
    assert!(submit(b.receive(), &make_event("wl-2", 0)).is_ack());
    if !ipv6_loopback_available() {
        eprintln!("skipping the IPv6 half: no ::1 on this machine");
        return;
    }
    // IPv6 author refused by an IPv4-only list.
    let s = TcpStream::connect(v6(b.receive())).unwrap();
    assert!(closed_without_a_byte(s, Duration::from_secs(5)));
    // IPv6 subscriber allowed, IPv4 subscriber refused.
    let mut sub = Subscriber::connect(v6(b.broadcast()), Behaviour::Healthy);
    let s = TcpStream::connect(b.broadcast()).unwrap();
    assert!(closed_without_a_byte(s, Duration::from_secs(5)));
    assert!(b.wait_log("(1 subscribers)", Duration::from_secs(5)));
    let ev = make_event("wl-3", 0);
    assert!(submit(b.receive(), &ev).is_ack());
    assert_eq!(sub.next_event(Duration::from_secs(10)).unwrap().1, ev);
}

#[test]
fn default_whitelist_accepts_ipv6_authors() {
    if !ipv6_loopback_available() {
        eprintln!("skipped: no ::1 on this machine");
        return;
    }
    let b = Broker::start(&[]);
    let r = submit(v6(b.receive()), &make_event("wl-4", 0));
    assert!(r.is_ack(), "{r:?}");
}
