//! Catch-up after a disconnect: between bolide brokers (`bolide-position`: a broker that
//! was killed, an upstream that restarted, an upstream whose database was wiped), and for
//! plain VTP subscribers resumed by address (`--resume-subscribers`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

fn remote(port: u16) -> String {
    format!("--remote=127.0.0.1:{port}")
}

fn port(p: u16) -> String {
    format!("--broadcast-port={p}")
}

/// Wait until `needle` appears in at least `n` log lines.
fn wait_count(b: &Broker, needle: &str, n: usize) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if b.log_count(needle) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn ivorn(local: &str) -> String {
    format!("ivo://bolide.test/stream#{local}")
}

/// Submit events `tag-0` .. `tag-{n-1}` to `addr`; their ivorns in order.
fn submit_all(addr: std::net::SocketAddr, tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let local = format!("{tag}-{i}");
            assert!(submit(addr, &make_event(&local, 0)).is_ack(), "{local}");
            ivorn(&local)
        })
        .collect()
}

/// A test-role event (never replayed).
fn test_event(local: &str) -> Vec<u8> {
    String::from_utf8(make_event(local, 0))
        .unwrap()
        .replace("role=\"observation\"", "role=\"test\"")
        .into_bytes()
}

/// The next `n` events `sub` receives, in order; panics on a duplicate or a timeout.
fn receive(sub: &mut Subscriber, n: usize) -> Vec<String> {
    let mut got: Vec<String> = Vec::with_capacity(n);
    while got.len() < n {
        let (iv, _) = sub
            .next_event(T)
            .unwrap_or_else(|| panic!("only {} of {n} events arrived: {got:?}", got.len()));
        assert!(!got.contains(&iv), "{iv} delivered twice");
        got.push(iv);
    }
    got
}

fn no_more(sub: &mut Subscriber) {
    if let Some((iv, _)) = sub.next_event(Duration::from_millis(1500)) {
        panic!("an extra delivery: {iv}");
    }
}

fn restart(db: &Path, extra: &[&str]) -> Broker {
    Broker::start_with_db(db, extra, true)
}

/// A → B → C, a subscriber on C. B is killed with SIGKILL, A accepts 200 events (and a
/// few test events), B restarts: B catches up from A, C from B, and the subscriber gets
/// the 200 once each, in A's order, and no test event.
#[test]
fn a_killed_broker_catches_up_in_order() {
    let (pa, pb) = (free_port(), free_port());
    let a = Broker::start(&["--no-sync", &port(pa)]);
    let db_b = scratch("eventdb-b");
    let mut b = restart(&db_b, &[&port(pb), &remote(pa)]);
    let c = Broker::start(&["--no-sync", &remote(pb)]);
    let mut sub = Subscriber::connect(c.broadcast(), Behaviour::Healthy);
    sub.authenticate(&[]);
    assert!(wait_count(&a, "caught up", 1), "{}", a.log_text());
    assert!(wait_count(&b, "caught up", 1), "{}", b.log_text());
    assert!(wait_count(&c, "(1 subscribers)", 1), "{}", c.log_text());
    let warm = submit_all(a.receive(), "warm", 5);
    assert_eq!(receive(&mut sub, 5), warm);
    assert!(
        b.wait_log(&format!(":{} saved", warm[4]), T),
        "{}",
        b.log_text()
    );
    b.kill();
    let mut sent = Vec::new();
    for i in 0..200 {
        if i % 70 == 0 {
            let t = format!("test-{i}");
            assert!(submit(a.receive(), &test_event(&t)).is_ack());
        }
        sent.extend(submit_all(a.receive(), &format!("missed{i}"), 1));
    }
    let b = restart(&db_b, &[&port(pb), &remote(pa)]);
    assert_eq!(receive(&mut sub, 200), sent);
    no_more(&mut sub);
    assert!(
        a.log_text()
            .contains("catching up from archive seq 6 (position "),
        "{}",
        a.log_text()
    );
    // Live events flow on after the catch-up.
    let live = submit_all(a.receive(), "live", 3);
    assert_eq!(receive(&mut sub, 3), live);
    drop(b);
    let _ = std::fs::remove_dir_all(&db_b);
}

/// A restarts (SIGTERM) while B stays up, with authors before and after: B catches up
/// on what A accepted before B reconnected, and its subscriber misses nothing.
#[test]
fn an_upstream_restart_loses_nothing() {
    let pa = free_port();
    let db_a = scratch("eventdb-a");
    let mut a = restart(&db_a, &["--no-sync", &port(pa)]);
    let b = Broker::start(&["--no-sync", &remote(pa)]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    sub.authenticate(&[]);
    assert!(wait_count(&a, "caught up", 1), "{}", a.log_text());
    assert!(wait_count(&b, "(1 subscribers)", 1), "{}", b.log_text());
    let before = submit_all(a.receive(), "before", 20);
    assert_eq!(receive(&mut sub, 20), before);
    assert!(a.terminate(T).is_some_and(|s| s.success()));
    let a = restart(&db_a, &["--no-sync", &port(pa)]);
    // B is still backing off: these are accepted before it reconnects.
    let after = submit_all(a.receive(), "after", 30);
    assert_eq!(receive(&mut sub, 30), after);
    let live = submit_all(a.receive(), "later", 5);
    assert_eq!(receive(&mut sub, 5), live);
    no_more(&mut sub);
    assert_eq!(b.log_count("an event was not recorded"), 0);
    drop(a);
    let _ = std::fs::remove_dir_all(&db_a);
}

/// A's database is wiped while B is down: B's position names an archive A no longer has,
/// so A replays only the latest --replay-max-events, once, and B stays subscribed.
#[test]
fn a_wiped_upstream_gives_a_bounded_replay() {
    let (pa, pb) = (free_port(), free_port());
    let db_a = scratch("eventdb-a");
    let db_b = scratch("eventdb-b");
    let mut a = restart(&db_a, &["--no-sync", &port(pa)]);
    let mut b = restart(&db_b, &["--no-sync", &port(pb), &remote(pa)]);
    assert!(wait_count(&a, "caught up", 1), "{}", a.log_text());
    submit_all(a.receive(), "old", 3);
    assert!(wait_count(
        &b,
        "accepted ivo://bolide.test/stream#old-2 ",
        1
    ));
    b.kill();
    a.kill();
    std::fs::remove_dir_all(&db_a).unwrap();
    let a = restart(&db_a, &["--no-sync", &port(pa), "--replay-max-events=5"]);
    let fresh = submit_all(a.receive(), "fresh", 12);
    let b = restart(&db_b, &["--no-sync", &port(pb), &remote(pa)]);
    assert!(wait_count(&a, "caught up", 1), "{}", a.log_text());
    for iv in &fresh[7..] {
        assert!(
            wait_count(&b, &format!("accepted {iv} "), 1),
            "{iv}: {}",
            b.log_text()
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    for iv in &fresh[..7] {
        assert_eq!(b.log_count(&format!("accepted {iv} ")), 0, "{iv} replayed");
    }
    assert_eq!(
        a.log_count("position in another archive"),
        1,
        "{}",
        a.log_text()
    );
    assert_eq!(b.log_count("subscribed to upstream"), 1, "{}", b.log_text());
    assert_eq!(b.log_count("closed the connection"), 0, "{}", b.log_text());
    // And the new position holds: live events flow, a restart of B replays nothing.
    let live = submit_all(a.receive(), "live", 2);
    assert!(wait_count(&b, &format!("accepted {} ", live[1]), 1));
    // Once its position past the last one is saved (an event accepted but not yet recorded
    // is rightly sent again: at-least-once).
    assert!(
        wait_count(&b, &format!(":{} saved", live[1]), 1),
        "{}",
        b.log_text()
    );
    drop(b);
    let b = restart(&db_b, &["--no-sync", &port(pb), &remote(pa)]);
    assert!(wait_count(&a, "caught up", 2), "{}", a.log_text());
    assert!(wait_count(&b, "subscribed to upstream", 1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.log_count("accepted "), 0, "{}", b.log_text());
    drop((a, b));
    let _ = std::fs::remove_dir_all(&db_a);
    let _ = std::fs::remove_dir_all(&db_b);
}

/// A plain VTP subscriber from a `--resume-subscribers` network reconnects after 100
/// events were accepted: it gets exactly those that pass its filter, in order, then live
/// ones; a subscriber from another address gets nothing replayed.
#[test]
fn subscribers_resumed_by_address_get_what_they_missed() {
    let here = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let elsewhere = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let b = Broker::start(&["--no-sync", "--resume-subscribers=127.0.0.1/32"]);
    let mut sub = Subscriber::connect_from(here, b.broadcast(), Behaviour::Healthy);
    let mut other = Subscriber::connect_from(elsewhere, b.broadcast(), Behaviour::Healthy);
    assert!(wait_count(&b, "(2 subscribers)", 1), "{}", b.log_text());
    let first = submit_all(b.receive(), "first", 10);
    assert_eq!(receive(&mut sub, 10), first);
    assert_eq!(receive(&mut other, 10), first);
    assert!(
        b.wait_log(&format!("({}) saved", first[9]), T),
        "{}",
        b.log_text()
    );
    drop((sub, other));
    assert!(wait_count(&b, "(0 subscribers)", 1), "{}", b.log_text());
    // Half of the missed events carry Packet_Type 1, which the filter selects.
    let mut missed = Vec::new();
    for i in 0..100 {
        let local = format!("missed-{i}");
        let mut ev = String::from_utf8(make_event(&local, 0)).unwrap();
        if i % 2 == 1 {
            ev = ev.replace("value=\"0\"", "value=\"1\"");
            missed.push(ivorn(&local));
        }
        assert!(submit(b.receive(), ev.as_bytes()).is_ack());
    }
    let mut sub = Subscriber::connect_from(here, b.broadcast(), Behaviour::Healthy);
    sub.authenticate(&["//Param[@name='Packet_Type' and @value='1']"]);
    let mut other = Subscriber::connect_from(elsewhere, b.broadcast(), Behaviour::Healthy);
    assert_eq!(receive(&mut sub, 50), missed);
    let live = submit_all(b.receive(), "live", 1);
    // Packet_Type 0: filtered out for `sub`, delivered to `other`.
    assert_eq!(receive(&mut other, 1), live);
    let mut ev = String::from_utf8(make_event("live-1", 0)).unwrap();
    ev = ev.replace("value=\"0\"", "value=\"1\"");
    assert!(submit(b.receive(), ev.as_bytes()).is_ack());
    assert_eq!(receive(&mut sub, 1), vec![ivorn("live-1")]);
    no_more(&mut sub);
    assert_eq!(receive(&mut other, 1), vec![ivorn("live-1")]);
    no_more(&mut other);
    // A first-time subscriber from a new address that never acks: its position is where
    // it connected, so what it missed comes on reconnecting.
    let third = std::net::Ipv4Addr::new(127, 0, 0, 3);
    let b = Broker::start(&["--no-sync", "--resume-subscribers=127.0.0.3/32"]);
    let mut silent = Subscriber::connect_from(third, b.broadcast(), Behaviour::NoAck);
    assert!(wait_count(&b, "(1 subscribers)", 1), "{}", b.log_text());
    drop(silent);
    assert!(wait_count(&b, "(0 subscribers)", 1), "{}", b.log_text());
    let missed = submit_all(b.receive(), "unseen", 5);
    silent = Subscriber::connect_from(third, b.broadcast(), Behaviour::Healthy);
    assert_eq!(receive(&mut silent, 5), missed);
}

/// Handlers after `kill -9` under load: on restart every event acked before the kill is
/// saved exactly once and passed to `--cmd` at least once.
#[test]
fn handlers_catch_up_after_a_crash() {
    use std::os::unix::fs::PermissionsExt;
    let work = scratch("handlers-crash");
    let saved = work.join("saved");
    let got = work.join("cmd.log");
    let cmd = work.join("record.sh");
    std::fs::write(
        &cmd,
        format!(
            "#!/bin/sh\ngrep -o 'ivorn=\"[^\"]*\"' >> {}\n",
            got.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = work.join("eventdb");
    let args = [
        "--save-event".to_string(),
        format!("--save-event-directory={}", saved.display()),
        format!("--cmd={}", cmd.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut b = restart(&db, &args);
    let addr = b.receive();
    let load = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0.. {
            let local = format!("crash{i}");
            let Ok(s) = std::net::TcpStream::connect(addr) else {
                break;
            };
            let wire = bolide::frame::encode(&make_event(&local, 0));
            let reply = exchange_on(s, &wire, Duration::from_secs(5));
            if !reply.is_ack() {
                break;
            }
            acked.push(local);
        }
        acked
    });
    assert!(wait_count(
        &b,
        "accepted ivo://bolide.test/stream#crash150 ",
        1
    ));
    b.kill();
    let mut acked = load.join().unwrap();
    let b = restart(&db, &args);
    acked.extend(
        submit_all(b.receive(), "after", 3)
            .iter()
            .map(|iv| iv.rsplit('#').next().unwrap().to_string()),
    );
    let file =
        |local: &str| saved.join(format!("ivo__bolide.test_stream{}", local.replace('-', "")));
    let deadline = Instant::now() + T;
    let all_done = || {
        let log = std::fs::read_to_string(&got).unwrap_or_default();
        acked
            .iter()
            .all(|l| file(l).exists() && log.contains(&format!("#{l}\"")))
    };
    while !all_done() {
        assert!(
            Instant::now() < deadline,
            "not every acked event was handled: {}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<String> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with('_')),
        "a second file: {names:?}"
    );
    for l in &acked {
        assert_eq!(std::fs::read(file(l)).unwrap(), make_event(l, 0), "{l}");
    }
    assert!(
        b.log_text().contains("not yet handled)"),
        "{}",
        b.log_text()
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&work);
}

/// A subscriber that stops reading during its catch-up is dropped by the write deadline,
/// as for live events, and the other subscribers and authors never wait for it.
#[test]
fn a_subscriber_that_stops_reading_during_its_catch_up_is_dropped() {
    let b = Broker::start(&[
        "--no-sync",
        "--resume-subscribers=127.0.0.1/32",
        "--write-timeout=1",
    ]);
    let here = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let mut stalled = Subscriber::connect_from(here, b.broadcast(), Behaviour::Healthy);
    assert!(wait_count(&b, "(1 subscribers)", 1), "{}", b.log_text());
    drop(stalled);
    assert!(wait_count(&b, "(0 subscribers)", 1), "{}", b.log_text());
    // Far more than the socket buffers hold.
    for i in 0..300 {
        assert!(submit(b.receive(), &make_event(&format!("big-{i}"), 60_000)).is_ack());
    }
    stalled = Subscriber::connect_from(here, b.broadcast(), Behaviour::Healthy);
    assert!(wait_count(&b, "catching up from archive seq", 2));
    let elsewhere = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut other = Subscriber::connect_from(elsewhere, b.broadcast(), Behaviour::Healthy);
    let live = submit_all(b.receive(), "live", 3);
    assert_eq!(receive(&mut other, 3), live);
    assert!(wait_count(&b, "during its catch-up", 1), "{}", b.log_text());
    assert!(wait_count(&b, "catch-up ended", 1), "{}", b.log_text());
    drop(stalled);
}

/// The nice value of each thread of `pid` named `catch-up`.
fn catch_up_threads(pid: u32) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "catch-up" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command name; nice is field 19 of stat, the 17th after it.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        nice.extend(
            rest.split_whitespace()
                .nth(16)
                .and_then(|v| v.parse::<i64>().ok()),
        );
    }
    nice
}

/// With `--max-replays 1`, a second subscriber reconnecting while a first one's catch-up
/// runs waits for its turn (getting iamalives meanwhile, and no event out of order), then
/// catches up in full: catch-ups read the archive one at a time.
#[test]
fn catch_ups_take_turns_and_the_waiting_are_kept_alive() {
    use bolide::transport::Role;
    let (x, y) = (
        std::net::Ipv4Addr::new(127, 0, 4, 1),
        std::net::Ipv4Addr::new(127, 0, 4, 2),
    );
    let b = Broker::start(&[
        "--no-sync",
        "--resume-subscribers=127.0.4.0/24",
        "--max-replays=1",
        "--iamalive-interval=1",
    ]);
    let mut subs: Vec<Subscriber> = [x, y]
        .into_iter()
        .map(|ip| Subscriber::connect_from(ip, b.broadcast(), Behaviour::Healthy))
        .collect();
    for sub in &mut subs {
        sub.authenticate(&[]);
    }
    assert!(wait_count(&b, "(2 subscribers)", 1), "{}", b.log_text());
    let first = submit_all(b.receive(), "first", 1);
    for sub in &mut subs {
        assert_eq!(receive(sub, 1), first);
    }
    let saved = format!("({}) saved", first[0]);
    assert!(wait_count(&b, &saved, 2), "{}", b.log_text());
    drop(subs);
    assert!(wait_count(&b, "(0 subscribers)", 1), "{}", b.log_text());
    // Far more than the socket buffers hold, so the first catch-up lasts as long as its
    // subscriber does not read.
    let missed: Vec<String> = (0..200)
        .map(|i| {
            let local = format!("turn-{i}");
            assert!(submit(b.receive(), &make_event(&local, 60_000)).is_ack());
            ivorn(&local)
        })
        .collect();
    // The first connections caught up too (from nowhere: no position yet).
    let catching_up = "catching up from archive seq";
    let (before, mark) = (b.log_count(catching_up), b.log_text().len());
    let mut first_back = Subscriber::connect_from(x, b.broadcast(), Behaviour::Healthy);
    first_back.authenticate(&[]);
    assert!(wait_count(&b, catching_up, before + 1), "{}", b.log_text());
    let mut second = Subscriber::connect_from(y, b.broadcast(), Behaviour::Healthy);
    second.authenticate(&[]);
    assert!(
        wait_count(&b, "waiting for a turn to catch up (1 ahead)", 1),
        "{}",
        b.log_text()
    );
    let waiting = Instant::now() + Duration::from_millis(2500);
    while let Some(left) = waiting.checked_duration_since(Instant::now()) {
        match second.next_message(left) {
            Ok(Incoming::Transport(t)) => assert_eq!(t.role, Some(Role::IAmAlive)),
            Ok(Incoming::Event { ivorn, .. }) => panic!("{ivorn} before its turn"),
            Err(bolide::frame::FrameError::TimedOut) => break,
            Err(e) => panic!("the waiting subscriber's connection failed: {e}"),
        }
    }
    assert!(second.iamalives >= 2, "{} iamalives", second.iamalives);
    assert_eq!(b.log_count(catching_up), before + 1);
    // The one reading does so on a thread of its own at the lowest CPU priority.
    assert_eq!(
        catch_up_threads(b.pid()),
        vec![19],
        "nice of the catch-up threads"
    );
    assert_eq!(receive(&mut first_back, 200), missed);
    assert_eq!(receive(&mut second, 200), missed);
    let log = b.log_text();
    let log = &log[mark..];
    let ended = log.find("caught up:").expect("the first catch-up ended");
    let began = log.rfind(catching_up).unwrap();
    assert!(ended < began, "the catch-ups overlapped:\n{log}");
    no_more(&mut second);
}

/// A ring A→B→C→A with a `kill -9` of B and a SIGTERM of C while authors submit to A and
/// C: in the end every broker has accepted every event exactly once (its own archive has
/// each once, whichever way round the ring it came), and A's subscriber got each once.
#[test]
fn a_ring_with_restarts_delivers_every_event_once_everywhere() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (db_b, db_c) = (scratch("ring-b"), scratch("ring-c"));
    let a = Broker::start(&["--no-sync", &port(pa), &remote(pc)]);
    let b_args = ["--no-sync".to_string(), port(pb), remote(pa)];
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let c_args = ["--no-sync".to_string(), port(pc), remote(pb)];
    let c_args: Vec<&str> = c_args.iter().map(String::as_str).collect();
    let mut b1 = restart(&db_b, &b_args);
    let mut c1 = restart(&db_c, &c_args);
    for (x, n) in [(&a, 1), (&b1, 1), (&c1, 1)] {
        assert!(wait_count(x, "caught up", n), "{}", x.log_text());
    }
    let mut sub = Subscriber::connect(a.broadcast(), Behaviour::Healthy);
    sub.authenticate(&[]);
    assert!(wait_count(&a, "(2 subscribers)", 1), "{}", a.log_text());
    let mut sent = submit_all(a.receive(), "ring-a0", 10);
    sent.extend(submit_all(c1.receive(), "ring-c0", 10));
    // B has these before it is killed (a crash right after accepting an event may make
    // it accept that one again: at least once).
    for iv in &sent {
        assert!(wait_count(&b1, &format!("accepted {iv} "), 1), "{iv}");
    }
    std::thread::sleep(Duration::from_millis(300));
    b1.kill();
    sent.extend(submit_all(a.receive(), "ring-a1", 30));
    sent.extend(submit_all(c1.receive(), "ring-c1", 30));
    let b2 = restart(&db_b, &b_args);
    assert!(c1.terminate(T).is_some_and(|s| s.success()));
    sent.extend(submit_all(a.receive(), "ring-a2", 30));
    let c2 = restart(&db_c, &c_args);
    sent.extend(submit_all(c2.receive(), "ring-c2", 10));
    let mut got = receive(&mut sub, sent.len());
    no_more(&mut sub);
    got.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got, want);
    for (name, logs) in [
        ("A", vec![&a]),
        ("B", vec![&b1, &b2]),
        ("C", vec![&c1, &c2]),
    ] {
        for iv in &sent {
            let needle = format!("accepted {iv} ");
            let deadline = Instant::now() + T;
            let count = || logs.iter().map(|x| x.log_count(&needle)).sum::<usize>();
            while count() == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(count(), 1, "broker {name} accepted {iv} {} times", count());
        }
    }
    drop((b1, b2, c1, c2));
    let _ = std::fs::remove_dir_all(&db_b);
    let _ = std::fs::remove_dir_all(&db_c);
}

/// One field of /proc/PID/status, in KiB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A schema-valid event whose Description holds `pad` bytes of pseudo-random hex digits,
/// which LZ4 cannot compress: the archive stores about `pad` bytes for it.
fn incompressible_event(local: &str, pad: usize) -> Vec<u8> {
    let mut x = local.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let noise: String = (0..pad)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x >> 60) as u32, 16).unwrap()
        })
        .collect();
    String::from_utf8(make_event(local, 0))
        .unwrap()
        .replace(
            "<Description></Description>",
            &format!("<Description>{noise}</Description>"),
        )
        .into_bytes()
}

/// Submit `n` events of `pad` bytes, `tag-0` .. `tag-{n-1}`, from `authors` threads at once;
/// every one must be acked. Their ivorns, in no particular order.
fn submit_concurrently(
    addr: std::net::SocketAddr,
    tag: &str,
    n: usize,
    authors: usize,
    pad: usize,
) -> Vec<String> {
    let threads: Vec<_> = (0..authors)
        .map(|t| {
            let tag = tag.to_string();
            std::thread::spawn(move || {
                (t..n)
                    .step_by(authors)
                    .map(|i| {
                        let local = format!("{tag}-{i}");
                        let event = incompressible_event(&local, pad);
                        assert!(submit(addr, &event).is_ack(), "{local}");
                        ivorn(&local)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// What `bolide-archive list` prints for `db`: every archived ivorn, in seq (acceptance)
/// order.
fn archived_ivorns(db: &Path) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bolide-archive"))
        .arg(format!("--eventdb={}", db.display()))
        .arg("list")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bolide-archive list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

/// A subscriber resumed by address misses 10 000 events (the default
/// --replay-max-events) of about 4 KB and reconnects; while it receives them, two authors
/// submit 500 more. It gets every one exactly once, in the archive's (acceptance) order,
/// the missed ones first; and the broker's RSS stays far below what holding the replayed
/// events would cost, in its heap or through LMDB's map: the replay streams the archive.
#[test]
fn ten_thousand_missed_events_replay_in_order_while_authors_submit() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    const MISSED: usize = 10_000;
    const LIVE: usize = 500;
    const PAD: usize = 4000;
    // The replayed events weigh MISSED * PAD = 40 MB, in the archive as well (their noise
    // does not compress). A replay that held them in its heap, or left the archive pages
    // it read mapped, would grow the RSS by at least that much; one that streams them
    // holds a chunk, the subscriber's queue, the pages read since the map was last
    // trimmed and what the live authors' connections and commits use: a few MB. The
    // bound sits halfway, at 20 MB.
    const BOUND_KB: u64 = (MISSED * PAD / 2 / 1024) as u64;
    let here = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let b = Broker::start(&["--no-sync", "--resume-subscribers=127.0.0.1/32"]);
    let mut sub = Subscriber::connect_from(here, b.broadcast(), Behaviour::Healthy);
    assert!(wait_count(&b, "(1 subscribers)", 1), "{}", b.log_text());
    let warm = submit_all(b.receive(), "warm", 3);
    assert_eq!(receive(&mut sub, 3), warm);
    assert!(
        b.wait_log(&format!("({}) saved", warm[2]), T),
        "{}",
        b.log_text()
    );
    drop(sub);
    assert!(wait_count(&b, "(0 subscribers)", 1), "{}", b.log_text());
    let sent: HashSet<String> = submit_concurrently(b.receive(), "missed", MISSED, 4, PAD)
        .into_iter()
        .collect();
    let pid = b.pid();
    let rss = |field: &str| status_kb(pid, field);
    let base = rss("VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new([AtomicU64::new(base), AtomicU64::new(0), AtomicU64::new(0)]);
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (p, f) in peak.iter().zip(["VmRSS:", "RssAnon:", "RssFile:"]) {
                    p.fetch_max(status_kb(pid, f), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // The live authors start once the subscriber has 1 000 of the 10 000: the socket
    // buffers hold far fewer, so the broker is still reading the archive for it.
    let received = Arc::new(AtomicUsize::new(0));
    let live = {
        let (received, addr) = (Arc::clone(&received), b.receive());
        std::thread::spawn(move || {
            while received.load(Ordering::Relaxed) < 1000 {
                std::thread::sleep(Duration::from_millis(2));
            }
            submit_concurrently(addr, "live", LIVE, 2, PAD)
        })
    };
    let mut sub = Subscriber::connect_from(here, b.broadcast(), Behaviour::Healthy);
    let mut got = Vec::with_capacity(MISSED + LIVE);
    let mut seen = HashSet::new();
    while got.len() < MISSED + LIVE {
        let (iv, _) = sub
            .next_event(T)
            .unwrap_or_else(|| panic!("only {} of {} events arrived", got.len(), MISSED + LIVE));
        assert!(seen.insert(iv.clone()), "{iv} delivered twice");
        got.push(iv);
        received.fetch_add(1, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let live: HashSet<String> = live.join().unwrap().into_iter().collect();
    no_more(&mut sub);
    assert_eq!(seen.len(), MISSED + LIVE);
    assert!(seen.is_superset(&sent) && seen.is_superset(&live));
    // Acceptance order: the archive's, which has the warm-up events first.
    let archived = archived_ivorns(&b.eventdb);
    assert_eq!(archived[..3], warm[..]);
    assert!(archived[3..] == got[..], "not in the archive's order");
    assert!(
        got[..MISSED].iter().all(|iv| sent.contains(iv)),
        "a live event came before a missed one"
    );
    let [vm, anon, file] = [0, 1, 2].map(|i| peak[i].load(Ordering::Relaxed));
    assert!(
        vm - base < BOUND_KB,
        "RSS grew from {base} KiB to {vm} KiB (anonymous {anon}, file {file}) during the replay"
    );
    assert!(
        b.log_text()
            .contains("catching up from archive seq 4 (position "),
        "{}",
        b.log_text()
    );
}
