//! The operator's view (`--http`) over real sockets with the real binary: `/metrics`
//! counts exactly the traffic sent and passes `promtool check metrics`; `/status` lists
//! subscribers and upstreams; `/events` agrees with `bolide-archive list --json` filter
//! by filter; `/events/<ivorn>` returns the exact bytes; the whitelist refuses; slow HTTP
//! clients do not stop fan-out; headless Chromium renders the page.
//!
//! promtool (Debian `prometheus`) and Chromium (Debian `chromium`) missing: those checks
//! print `SKIPPED` and pass, unless `BOLIDE_REQUIRE_HTTP_TOOLS` is set (CI sets it).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bolide::transport;
use common::http::{get, get_on, http_addr, metrics_until, sample};
use common::{submit, Broker, Subscriber, LOCAL_IVO};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn start(extra: &[&str]) -> (Broker, SocketAddr) {
    let mut args = vec!["--http=127.0.0.1:0"];
    args.extend_from_slice(extra);
    let b = Broker::start(&args);
    let h = http_addr(&b);
    (b, h)
}

/// A test tool on PATH, or `None` after saying SKIPPED (a failure when required).
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        let why = format!(
            "{name} is not installed (Debian package: {})",
            match name {
                "promtool" => "prometheus",
                n => n,
            }
        );
        if std::env::var_os("BOLIDE_REQUIRE_HTTP_TOOLS").is_some() {
            panic!("{test}: required by BOLIDE_REQUIRE_HTTP_TOOLS: {why}");
        }
        eprintln!("SKIPPED: {test}: {why}");
    }
    found
}

/// A schema-valid VOEvent: ivorn `ivo://bolide.test/<stream>#<local>`, this role,
/// `Who/Date` and Packet_Type value.
fn event(stream: &str, local: &str, role: &str, date: &str, packet: u32) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://bolide.test/{stream}#{local}" role="{role}" version="2.0">
  <Who>
    <AuthorIVORN>ivo://bolide.test/author</AuthorIVORN>
    <Date>{date}</Date>
  </Who>
  <What>
    <Param name="Packet_Type" dataType="int" value="{packet}"/>
  </What>
</voe:VOEvent>
"#
    )
    .into_bytes()
}

fn subscriber(b: &Broker) -> Subscriber {
    let mut s = Subscriber::connect(b.broadcast(), common::Behaviour::Healthy);
    s.authenticate(&[]);
    s
}

#[test]
fn metrics_count_exactly_what_happened_and_pass_promtool() {
    let (b, h) = start(&[]);
    let mut subs = [subscriber(&b), subscriber(&b)];
    // Both subscribers are listed (their filters are known) before any event is sent.
    metrics_until(h, |t| sample(t, "bolide_subscribers") == 2.0);
    for i in 0..3 {
        let r = submit(
            b.receive(),
            &event(
                "s",
                &format!("e{i}"),
                "observation",
                "2025-01-01T00:00:00",
                1,
            ),
        );
        assert!(r.is_ack(), "{}", r.result());
    }
    assert!(submit(
        b.receive(),
        &event("s", "e0", "observation", "2025-01-01T00:00:00", 1)
    )
    .is_nak());
    assert!(submit(b.receive(), b"<notavoevent/>").is_nak());
    for s in &mut subs {
        for _ in 0..3 {
            assert!(s.next_event(WAIT).is_some());
        }
    }
    // One subscriber naks: the broker drops it.
    subs[1].send_raw(&transport::nak("ivo://bolide.test/s#e0", None, "no thanks"));
    let text = metrics_until(h, |t| {
        sample(t, "bolide_subscribers") == 1.0
            && sample(t, "bolide_subscribers_dropped_total{reason=\"nak\"}") == 1.0
    });
    for (name, want) in [
        ("bolide_events_accepted_total{source=\"author\"}", 3.0),
        ("bolide_events_accepted_total{source=\"upstream\"}", 0.0),
        ("bolide_events_duplicate_total{source=\"author\"}", 1.0),
        ("bolide_events_rejected_total{reason=\"invalid\"}", 1.0),
        ("bolide_events_rejected_total{reason=\"schema\"}", 0.0),
        ("bolide_copies_sent_total", 6.0),
        ("bolide_subscribers", 1.0),
        ("bolide_subscribers_dropped_total{reason=\"nak\"}", 1.0),
        ("bolide_subscribers_dropped_total{reason=\"too_slow\"}", 0.0),
        ("bolide_archive_events", 3.0),
        ("bolide_author_ack_latency_seconds_count", 3.0),
        ("bolide_author_ack_latency_seconds_bucket{le=\"+Inf\"}", 3.0),
        ("bolide_fanout_latency_seconds_count", 3.0),
        ("bolide_build_info{version=\"0.1.0\"}", 1.0),
        ("bolide_upstreams{state=\"connected\"}", 0.0),
    ] {
        assert_eq!(sample(&text, name), want, "{name} in\n{text}");
    }
    assert!(sample(&text, "bolide_archive_bytes") > 0.0);
    assert!(
        sample(&text, "bolide_last_event_timestamp_seconds")
            >= sample(&text, "bolide_start_time_seconds")
    );
    assert!(
        sample(&text, "bolide_eventdb_used_bytes") <= sample(&text, "bolide_eventdb_map_bytes")
    );
    let r = get(h, "/metrics");
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert_eq!(get(h, "/healthz").status, 200);
    assert_eq!(get(h, "/nowhere").status, 404);
    let (rss, threads) = proc_status(b.pid());
    assert!(
        (sample(&text, "bolide_threads") - threads as f64).abs() <= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "bolide_resident_memory_bytes") > rss as f64 / 2.0,
        "{text}"
    );

    let Some(promtool) = tool(
        "promtool",
        "metrics_count_exactly_what_happened_and_pass_promtool",
    ) else {
        return;
    };
    let mut p = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn status_lists_subscribers_and_upstreams() {
    let up = Broker::start(&[]);
    let remote = format!("--remote=127.0.0.1:{}", up.broadcast().port());
    let (b, h) = start(&[&remote]);
    let mut s = Subscriber::connect(b.broadcast(), common::Behaviour::Healthy);
    s.authenticate(&["//Param[@name='Packet_Type']"]);
    let deadline = Instant::now() + WAIT;
    let st = loop {
        let st = get(h, "/status").json();
        let ready = st["upstreams"][0]["state"] == "connected"
            && st["subscribers"].as_array().unwrap().len() == 1
            && st["subscribers"][0]["filters"].as_array().unwrap().len() == 1;
        if ready || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        st["upstreams"][0]["remote"],
        format!("127.0.0.1:{}", up.broadcast().port()),
        "{st}"
    );
    assert_eq!(st["upstreams"][0]["state"], "connected", "{st}");
    assert!(st["upstreams"][0]["connected_since"].is_string(), "{st}");
    let sub = &st["subscribers"][0];
    assert_eq!(
        sub["address"],
        s.stream.local_addr().unwrap().to_string(),
        "{st}"
    );
    assert_eq!(sub["filters"][0], "//Param[@name='Packet_Type']", "{st}");
    assert_eq!(st["version"], "0.1.0");
    assert_eq!(st["healthy"], true);
    assert_eq!(st["listeners"].as_array().unwrap().len(), 2, "{st}");

    // An event through the upstream reaches the subscriber and the counts.
    assert!(submit(
        up.receive(),
        &event("u", "1", "observation", "2025-01-01T00:00:00", 1)
    )
    .is_ack());
    assert!(s.next_event(WAIT).is_some());
    let deadline = Instant::now() + WAIT;
    let st = loop {
        let st = get(h, "/status").json();
        if st["subscribers"][0]["events_acked"] == 1 || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st["upstreams"][0]["events_received"], 1, "{st}");
    assert!(st["upstreams"][0]["last_event"].is_string(), "{st}");
    assert_eq!(st["counters"]["accepted"]["upstream"], 1, "{st}");
    assert_eq!(st["subscribers"][0]["events_sent"], 1, "{st}");
    assert_eq!(st["subscribers"][0]["events_acked"], 1, "{st}");
    assert_eq!(st["store"]["archive_events"], 1, "{st}");
    assert!(st["store"]["oldest_event"].is_string(), "{st}");
    // The process's figures agree with what the kernel says of it.
    let (rss, threads) = proc_status(b.pid());
    let near = |v: &Value, want: u64, by: u64| v.as_u64().is_some_and(|v| v.abs_diff(want) <= by);
    assert!(
        near(&st["process"]["threads"], threads, 2),
        "{st} vs {threads}"
    );
    assert!(
        near(&st["process"]["rss_bytes"], rss, rss / 4),
        "{st} vs {rss}"
    );
    assert!(st["kafka"].is_null(), "{st}");

    // The upstream goes away: the link leaves `connected`.
    drop(up);
    let text = metrics_until(h, |t| {
        sample(t, "bolide_upstreams{state=\"connected\"}") == 0.0
    });
    assert_eq!(
        sample(&text, "bolide_upstreams{state=\"connected\"}"),
        0.0,
        "{text}"
    );
}

/// A process's resident memory (bytes) and threads, from `/proc/PID/status`.
fn proc_status(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap()
    };
    (field("VmRSS:") * 1024, field("Threads:"))
}

/// `bolide-archive list --json` with these options, one object per line.
fn archive_list(db: &Path, args: &[String]) -> Vec<Value> {
    let o = Command::new(env!("CARGO_BIN_EXE_bolide-archive"))
        .arg(format!("--eventdb={}", db.display()))
        .arg("list")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (c as char).to_string()
            }
            c => format!("%{c:02X}"),
        })
        .collect()
}

/// Query parameters, and the bolide-archive options that say the same.
type Case = (Vec<(&'static str, String)>, Vec<String>);

#[test]
fn events_agree_with_bolide_archive_filter_by_filter() {
    let (b, h) = start(&[]);
    let events = [
        event("a", "1", "observation", "2024-06-01T00:00:00", 1),
        event("a", "2", "test", "2025-06-01T00:00:00", 2),
        event("b", "1", "observation", "2026-01-01T00:00:00", 1),
        event("b", "2", "utility", "2023-01-01T00:00:00", 3),
        event("c", "x1", "observation", "2025-02-01T00:00:00", 1),
    ];
    for e in &events {
        assert!(submit(b.receive(), e).is_ack());
    }
    let later = bolide::time::utc_timestamp(bolide::time::unix_now() + 3600);
    let cases: Vec<Case> = vec![
        (vec![], vec![]),
        (vec![("since", "1h".into())], vec!["--since=1h".into()]),
        (
            vec![("until", later.clone())],
            vec![format!("--until={later}")],
        ),
        (vec![("until", "1h".into())], vec!["--until=1h".into()]),
        (
            vec![("authored_since", "2025-01-01".into())],
            vec!["--authored-since=2025-01-01".into()],
        ),
        (
            vec![("authored_until", "2025-01-01T00:00:00Z".into())],
            vec!["--authored-until=2025-01-01T00:00:00Z".into()],
        ),
        (
            vec![
                ("ivorn_prefix", "ivo://bolide.test/a#".into()),
                ("ivorn_prefix", "ivo://bolide.test/c".into()),
            ],
            vec![
                "--ivorn-prefix=ivo://bolide.test/a#".into(),
                "--ivorn-prefix=ivo://bolide.test/c".into(),
            ],
        ),
        (
            vec![("ivorn_contains", "#x".into())],
            vec!["--ivorn-contains=#x".into()],
        ),
        (vec![("role", "test".into())], vec!["--role=test".into()]),
        (
            vec![(
                "xpath",
                "//Param[@name='Packet_Type' and @value='1']".into(),
            )],
            vec!["--xpath=//Param[@name='Packet_Type' and @value='1']".into()],
        ),
        (vec![("limit", "2".into())], vec!["--limit=2".into()]),
        (
            vec![("order", "newest".into()), ("limit", "3".into())],
            vec!["--reverse".into(), "--limit=3".into()],
        ),
    ];
    for (params, args) in cases {
        let q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let path = format!("/events?{}", q.join("&"));
        let r = get(h, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let got = r.json();
        let want = archive_list(&b.eventdb, &args);
        assert_eq!(got.as_array().unwrap(), &want, "{path} vs {args:?}");
    }
    // Every case above selected something and none selected everything, taken together.
    assert_eq!(get(h, "/events").json().as_array().unwrap().len(), 5);
    assert_eq!(
        get(h, "/events?role=test").json().as_array().unwrap().len(),
        1
    );

    for bad in [
        "/events?limit=0",
        "/events?limit=10001",
        "/events?role=nonsense",
        "/events?since=yesterday",
        "/events?xpath=%2F%2F%5B",
        "/events?order=sideways",
        "/events?colour=red",
        "/events?since=1h&since=2h",
        "/events?ivorn_prefix=%ZZ",
    ] {
        let r = get(h, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.text().lines().count(), 1, "{bad}: {}", r.text());
    }
}

#[test]
fn event_bytes_are_exact_and_absent_ones_are_404() {
    let (b, h) = start(&[]);
    let payload = event(
        "x",
        "with space & #hash",
        "observation",
        "2025-01-01T00:00:00",
        7,
    );
    let payload = String::from_utf8(payload)
        .unwrap()
        .replace("with space & #hash", "q_1+2/a;b:c?d=e")
        .into_bytes();
    assert!(submit(b.receive(), &payload).is_ack());
    let ivorn = "ivo://bolide.test/x#q_1+2/a;b:c?d=e";
    let r = get(h, &format!("/events/{}", enc(ivorn)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert_eq!(r.body, payload);
    let r = get(h, &format!("/events/{}", enc("ivo://bolide.test/x#absent")));
    assert_eq!(r.status, 404);
    assert_eq!(get(h, "/events/%ZZ").status, 400);
}

#[test]
fn peers_outside_the_whitelist_are_refused() {
    let (_b, h) = start(&["--http-whitelist=127.0.0.1/32"]);
    assert_eq!(get(h, "/healthz").status, 200);
    let s = common::connect_from(Ipv4Addr::new(127, 0, 0, 2), h).unwrap();
    let r = get_on(s, "/status");
    assert!(
        r.as_ref().map_or(true, |r| r.status == 403),
        "a peer outside the whitelist got {:?}",
        r.map(|r| (r.status, r.text()))
    );

    let (_b, h) = start(&["--http-whitelist=10.0.0.0/8"]);
    let r = get_on(TcpStream::connect(h).unwrap(), "/metrics");
    assert!(r.as_ref().map_or(true, |r| r.status == 403));
}

#[test]
fn bad_http_options_are_refused_at_start() {
    for (args, says) in [
        (vec!["--http=localhost"], "--http 'localhost'"),
        (
            vec!["--http=127.0.0.1:0", "--http-whitelist=10.0.0.300/8"],
            "--http-whitelist",
        ),
        (vec!["--http-whitelist=10.0.0.0/8"], "needs --http"),
    ] {
        let db = common::scratch("eventdb");
        let o = Command::new(env!("CARGO_BIN_EXE_bolide"))
            .args([
                "-r",
                &format!("--local-ivo={LOCAL_IVO}"),
                &format!("--eventdb={}", db.display()),
            ])
            .args(&args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn slow_http_clients_do_not_stop_fan_out() {
    common::raise_nofile();
    let (b, h) = start(&[]);
    let mut sub = subscriber(&b);
    metrics_until(h, |t| sample(t, "bolide_subscribers") == 1.0);
    // 200 clients that start a request and never finish it.
    let slow: Vec<TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = TcpStream::connect(h).ok()?;
            let _ = s.write_all(b"GET /metr");
            Some(s)
        })
        .collect();
    assert!(
        slow.len() >= 100,
        "only {} slow clients connected",
        slow.len()
    );
    for i in 0..20 {
        let r = submit(
            b.receive(),
            &event(
                "slow",
                &i.to_string(),
                "observation",
                "2025-01-01T00:00:00",
                1,
            ),
        );
        assert!(r.is_ack(), "{}", r.result());
    }
    for i in 0..20 {
        let (ivorn, _) = sub.next_event(WAIT).expect("every event delivered");
        assert_eq!(ivorn, format!("ivo://bolide.test/slow#{i}"));
    }
    drop(slow);
    // Once the slow clients are gone, the view answers again.
    let deadline = Instant::now() + WAIT;
    while get_on(TcpStream::connect(h).unwrap(), "/healthz").map(|r| r.status) != Some(200) {
        assert!(Instant::now() < deadline, "the HTTP view did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn chromium_renders_the_status_page() {
    let Some(chromium) = tool("chromium", "chromium_renders_the_status_page") else {
        return;
    };
    let (b, h) = start(&[]);
    let _subs = [subscriber(&b), subscriber(&b)];
    metrics_until(h, |t| sample(t, "bolide_subscribers") == 2.0);
    for i in 0..3 {
        assert!(submit(
            b.receive(),
            &event(
                "page",
                &format!("ev{i}"),
                "observation",
                "2025-01-01T00:00:00",
                1
            )
        )
        .is_ack());
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http");
    std::fs::create_dir_all(&out).unwrap();
    let profile = common::scratch("chromium");
    let browser = |extra: &[String]| {
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
            ])
            .args(extra)
            .arg(format!("http://{h}/"))
            .output()
            .unwrap()
    };
    let o = browser(&["--dump-dom".to_string()]);
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        dom.contains("<span id=\"subscriber-count\">2</span>"),
        "the page does not show 2 subscribers:\n{dom}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(dom.contains(">ivo://bolide.test/page#ev2</a>"), "{dom}");
    assert!(
        dom.contains("href=\"/events/ivo%3A%2F%2Fbolide.test%2Fpage%23ev2\""),
        "{dom}"
    );
    let shot = out.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let o = browser(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1280,1600".to_string(),
    ]);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 0)
            .unwrap_or(false),
        "no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("status page screenshot: {}", shot.display());
    let _ = std::fs::remove_dir_all(&profile);
}

#[test]
fn requests_outside_the_limits_are_refused() {
    let (_b, h) = start(&[]);
    let raw = |req: &[u8]| {
        let mut s = TcpStream::connect(h).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(raw(b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n").starts_with("HTTP/1.1 405 "));
    let long = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "x".repeat(9000)
    );
    assert!(raw(long.as_bytes()).starts_with("HTTP/1.1 431 "));
    let head = get_on(TcpStream::connect(h).unwrap(), "/healthz").unwrap();
    assert_eq!(head.text(), "ok\n");
}

#[test]
fn healthz_is_503_while_the_event_database_cannot_commit() {
    let (b, h) = start(&["--no-sync", "--eventdb-map-size=96K"]);
    assert_eq!(get(h, "/healthz").status, 200);
    let full = (0..2000).any(|i| {
        let r = submit(b.receive(), &common::make_event(&format!("full-{i}"), 0));
        assert!(
            r.is_ack() || r.result() == "Event rejected: storage unavailable",
            "{}",
            r.result()
        );
        r.is_nak()
    });
    assert!(full, "the 96 KiB map never filled");
    let r = get(h, "/healthz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(get(h, "/status").json()["healthy"], false);
    let text = get(h, "/metrics").text();
    assert!(
        sample(&text, "bolide_events_rejected_total{reason=\"storage\"}") >= 1.0,
        "{text}"
    );
}
