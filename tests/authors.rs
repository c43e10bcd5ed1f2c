//! Who may publish what (--author-config, --author-config-strict) and how fast
//! (--author-rate), over real sockets with the real binary: authors submit from different
//! loopback addresses (127.x.y.z) or from ::1.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

/// A schema-valid event with this ivorn.
fn event(ivorn: &str) -> Vec<u8> {
    String::from_utf8(make_event("PLACEHOLDER", 0))
        .unwrap()
        .replace("ivo://bolide.test/stream#PLACEHOLDER", ivorn)
        .into_bytes()
}

fn lo(c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, c, d)
}

/// Write an author config into a fresh directory.
fn config(text: &str) -> PathBuf {
    let path = scratch("authors").join("authors");
    std::fs::write(&path, text).unwrap();
    path
}

fn flag(path: &std::path::Path) -> String {
    format!("--author-config={}", path.display())
}

/// Submit and require a nak with exactly this text.
fn assert_nak(r: Reply, text: &str) {
    assert!(r.is_nak(), "{r:?}");
    assert_eq!(r.result(), text);
}

/// Wait for a log line containing `start`, and require its level and its ending.
fn assert_logged(b: &Broker, level: &str, start: &str, end: &str) {
    let deadline = Instant::now() + T;
    let line = loop {
        if let Some(l) = b.log_text().lines().find(|l| l.contains(start)) {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {start:?}\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        line.contains(&format!("Z {level}")) && line.ends_with(end),
        "expected {level} ... {start} ... {end}, got {line}"
    );
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn prefixes_per_network_longest_match_and_nothing_recorded() {
    let path = config(
        "# loopback networks, nested\n\
         127.0.0.0/16   ivo://bolide.test/stream#\n\
         127.0.1.0/24   ivo://example.org/\n\
         127.0.1.7      ivo://nasa.gsfc.gcn/ ivo://example.org/\n",
    );
    let b = Broker::start(&[&flag(&path)]);
    assert!(b.wait_log("authors outside them unrestricted", Duration::from_secs(1)));
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    sub.authenticate(&[]);
    assert!(b.wait_log("(1 subscribers)", T));
    let swift = event("ivo://nasa.gsfc.gcn/SWIFT#x");

    // /16: its own stream only.
    assert!(submit_from(lo(0, 9), b.receive(), &event("ivo://bolide.test/stream#a1")).is_ack());
    assert_nak(
        submit_from(lo(0, 9), b.receive(), &event("ivo://example.org/t#a2")),
        "Event rejected: ivorn ivo://example.org/t#a2 not permitted for 127.0.0.9 (allowed: ivo://bolide.test/stream#)",
    );
    // /24 inside it: its own list replaces the /16's.
    assert!(submit_from(lo(1, 5), b.receive(), &event("ivo://example.org/t#a3")).is_ack());
    assert_nak(
        submit_from(lo(1, 5), b.receive(), &event("ivo://bolide.test/stream#a4")),
        "Event rejected: ivorn ivo://bolide.test/stream#a4 not permitted for 127.0.1.5 (allowed: ivo://example.org/)",
    );
    assert_nak(
        submit_from(lo(1, 5), b.receive(), &swift),
        "Event rejected: ivorn ivo://nasa.gsfc.gcn/SWIFT#x not permitted for 127.0.1.5 (allowed: ivo://example.org/)",
    );
    // The refusal is a warning naming the peer, the ivorn and the rule.
    assert_logged(
        &b,
        "WARN",
        "rejected ivo://nasa.gsfc.gcn/SWIFT#x from author 127.0.1.5:",
        "not permitted by the --author-config rule for 127.0.1.0/24 (allowed: ivo://example.org/)",
    );
    // Nothing was recorded: the same bytes from the /32 that may publish them are new.
    let r = submit_from(lo(1, 7), b.receive(), &swift);
    assert!(r.is_ack(), "{r:?}");
    // An address no rule covers keeps the whitelist's answer alone.
    assert!(submit_from(
        Ipv4Addr::new(127, 1, 0, 1),
        b.receive(),
        &event("ivo://anyone.org/s#a5")
    )
    .is_ack());

    // The subscriber got exactly the accepted events, in order.
    let mut got = Vec::new();
    while let Some((iv, _)) = sub.next_event(Duration::from_millis(700)) {
        got.push(iv);
    }
    assert_eq!(
        got,
        [
            "ivo://bolide.test/stream#a1",
            "ivo://example.org/t#a3",
            "ivo://nasa.gsfc.gcn/SWIFT#x",
            "ivo://anyone.org/s#a5"
        ]
    );
}

#[test]
fn strict_mode_refuses_addresses_without_a_rule() {
    let path = config("127.0.0.2 ivo://bolide.test/\n");
    let b = Broker::start(&[&flag(&path), "--author-config-strict"]);
    assert!(b.wait_log(
        "authors outside them refused (--author-config-strict)",
        Duration::from_secs(1)
    ));
    assert!(submit_from(lo(0, 2), b.receive(), &event("ivo://bolide.test/s#1")).is_ack());
    assert_nak(
        submit_from(lo(0, 3), b.receive(), &event("ivo://bolide.test/s#2")),
        "Event rejected: ivorn ivo://bolide.test/s#2 not permitted for 127.0.0.3 (no --author-config rule for this address)",
    );
    assert_logged(
        &b,
        "WARN",
        "rejected ivo://bolide.test/s#2 from author 127.0.0.3:",
        "no --author-config rule covers its address (--author-config-strict)",
    );
    // Refused, not recorded: the permitted address may still publish it.
    assert!(submit_from(lo(0, 2), b.receive(), &event("ivo://bolide.test/s#2")).is_ack());
}

#[test]
fn ipv6_authors() {
    if !ipv6_loopback_available() {
        eprintln!("SKIPPED: ipv6_authors: no ::1 on this machine");
        return;
    }
    // A broker bound to ::1, with a rule for ::1.
    let path = config("::1/128 ivo://v6.example/\n127.0.0.0/8 ivo://bolide.test/\n");
    let b = Broker::start(&["--bind=::1", &flag(&path)]);
    assert_eq!(b.receive().ip().to_string(), "::1");
    assert!(submit(b.receive(), &event("ivo://v6.example/s#1")).is_ack());
    assert_nak(
        submit(b.receive(), &event("ivo://bolide.test/s#2")),
        "Event rejected: ivorn ivo://bolide.test/s#2 not permitted for ::1 (allowed: ivo://v6.example/)",
    );
    assert_logged(
        &b,
        "WARN",
        "rejected ivo://bolide.test/s#2 from author [::1]:",
        "(allowed: ivo://v6.example/)",
    );
    drop(b);

    // Dual-stack: IPv4 authors (seen as IPv4-mapped addresses) meet the IPv4 rule; ::1,
    // which no rule covers, is unrestricted.
    let path = config("127.0.0.0/8 ivo://bolide.test/\n");
    let b = Broker::start(&[&flag(&path)]);
    let v6 = SocketAddr::new("::1".parse().unwrap(), b.receive().port());
    assert!(submit(v6, &event("ivo://v6.example/s#3")).is_ack());
    assert_nak(
        submit(b.receive(), &event("ivo://v6.example/s#4")),
        "Event rejected: ivorn ivo://v6.example/s#4 not permitted for 127.0.0.1 (allowed: ivo://bolide.test/)",
    );
}

#[test]
fn sighup_reloads_a_good_file_and_keeps_the_rules_on_a_bad_one() {
    let path = config("127.0.0.0/8 ivo://example.org/\n");
    let b = Broker::start(&[&flag(&path)]);
    let mine = |n: u32| event(&format!("ivo://bolide.test/s#{n}"));
    assert!(submit(b.receive(), &mine(1)).is_nak());
    assert!(submit(b.receive(), &event("ivo://example.org/s#1")).is_ack());

    std::fs::write(&path, "# now ours\n127.0.0.0/8 ivo://bolide.test/\n").unwrap();
    b.signal(libc::SIGHUP);
    assert!(b.wait_log("author config reloaded: 1 networks", T));
    assert!(submit(b.receive(), &mine(1)).is_ack());
    assert_nak(
        submit(b.receive(), &event("ivo://example.org/s#2")),
        "Event rejected: ivorn ivo://example.org/s#2 not permitted for 127.0.0.1 (allowed: ivo://bolide.test/)",
    );

    // A broken file: logged with its line, the rules in force stay.
    std::fs::write(
        &path,
        "127.0.0.0/8 ivo://example.org/\n127.0.0.1 example.org/\n",
    )
    .unwrap();
    b.signal(libc::SIGHUP);
    assert_logged(
        &b,
        "ERROR",
        "author config not reloaded, keeping the previous rules: ",
        " line 2: invalid IVORN prefix 'example.org/': it must start with ivo:// (e.g. ivo://example.org/telescope#)",
    );
    assert!(submit(b.receive(), &mine(2)).is_ack());
    assert!(submit(b.receive(), &event("ivo://example.org/s#3")).is_nak());
    assert_eq!(b.log_count("author config reloaded"), 1);
}

#[test]
fn bad_author_options_refuse_to_start() {
    let path = config("127.0.0.0/8 ivo://bolide.test/\n10.0.0.0/40 ivo://a.org/\n");
    let bad_line = format!(
        "bolide: --author-config: {} line 2: invalid network '10.0.0.0/40'",
        path.display()
    );
    // Each command line exits 2 with a message starting so.
    let cases = [
        (flag(&path), bad_line.as_str()),
        (
            "--author-config=/nonexistent/authors".into(),
            "bolide: --author-config: /nonexistent/authors: ",
        ),
        (
            "--author-config-strict".into(),
            "bolide: --author-config-strict: needs --author-config",
        ),
        (
            "--author-rate=10".into(),
            "bolide: --author-rate '10': expected N/SECONDS",
        ),
    ];
    for (arg, message) in cases {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_bolide"))
            .args(["-r", "--local-ivo=ivo://abc", &arg])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{arg}: {err}");
        assert!(err.starts_with(message), "{arg}: {err}");
    }
}

#[test]
fn rate_limit_burst_then_refusals_then_recovery() {
    // A burst of 3, then one event every 2 s per address. --no-sync: the burst takes
    // milliseconds, far less than a refill.
    let path = config("127.0.0.0/8 ivo://bolide.test/\n");
    let b = Broker::start(&["--author-rate=3/6", "--no-sync", &flag(&path)]);
    assert!(b.wait_log("author rate limit: 3 per 6 s per address", T));
    let a = lo(0, 1);
    let ev = |n: u32| event(&format!("ivo://bolide.test/s#{n}"));
    // Events refused earlier (invalid, not permitted) spend no token.
    let invalid = String::from_utf8(ev(90))
        .unwrap()
        .replace("<Who>", "<Trigger/><Who>");
    assert!(submit_from(a, b.receive(), invalid.as_bytes())
        .result()
        .contains("schema-invalid"));
    assert!(submit_from(a, b.receive(), &event("ivo://example.org/s#91")).is_nak());
    let started = Instant::now();
    for n in 1..=3 {
        let r = submit_from(a, b.receive(), &ev(n));
        assert!(r.is_ack(), "burst event {n}: {r:?}");
    }
    let limited = "Event rejected: rate limit exceeded (3 per 6 s from 127.0.0.1)";
    assert_nak(submit_from(a, b.receive(), &ev(4)), limited);
    assert_nak(submit_from(a, b.receive(), &ev(4)), limited);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the burst took {:?}: longer than a refill, the test proves nothing",
        started.elapsed()
    );
    // Over the rate, an invalid event still gets its own reason.
    assert!(submit_from(a, b.receive(), invalid.as_bytes())
        .result()
        .contains("schema-invalid"));
    // Another address has its own bucket.
    assert!(submit_from(lo(0, 2), b.receive(), &ev(5)).is_ack());
    assert_logged(
        &b,
        "WARN",
        "rejected ivo://bolide.test/s#4 from author 127.0.0.1:",
        "rate limit exceeded (3 per 6 s from 127.0.0.1)",
    );

    // One token back after 2 s: the refused event is accepted (it was not recorded), then
    // the bucket is empty again.
    let after =
        |ms| (started + Duration::from_millis(ms)).saturating_duration_since(Instant::now());
    std::thread::sleep(after(2100));
    let r = submit_from(a, b.receive(), &ev(4));
    assert!(r.is_ack(), "after a refill: {r:?}");
    assert_nak(submit_from(a, b.receive(), &ev(6)), limited);
    // Duplicates count too: after the next refill, a resubmission spends the token.
    std::thread::sleep(after(4200));
    assert_eq!(
        submit_from(a, b.receive(), &ev(4)).result(),
        "Event rejected: Previously seen by this broker"
    );
    assert_nak(submit_from(a, b.receive(), &ev(6)), limited);
}
