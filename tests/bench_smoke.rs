//! Smoke test of `bolide-bench`: each mode runs briefly against a real bolide, and
//! `fanout` and `ingest` against `bolide-bench null-broker`, and their counts are checked
//! (never their speed).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Run bolide-bench against `broker` and return (exit status, last line = JSON).
fn bench(broker: &common::Broker, mode: &[&str]) -> (i32, String, String) {
    let (r, b) = (broker.receive().port(), broker.broadcast().port());
    bench_at(r, b, broker.pid(), mode)
}

/// Run bolide-bench against the broker with these ports and process id. A
/// `--max-seconds=S` among `mode` goes before the mode, as the global option it is
/// (default 60).
fn bench_at(receive: u16, broadcast: u16, pid: u32, mode: &[&str]) -> (i32, String, String) {
    let (limit, mode): (Vec<&str>, Vec<&str>) =
        mode.iter().partition(|a| a.starts_with("--max-seconds="));
    let out = Command::new(env!("CARGO_BIN_EXE_bolide-bench"))
        .arg(format!("--receive-port={receive}"))
        .arg(format!("--broadcast-port={broadcast}"))
        .arg(format!("--pid={pid}"))
        .arg(limit.first().copied().unwrap_or("--max-seconds=60"))
        .args(mode)
        .output()
        .expect("run bolide-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let last = stdout.lines().last().unwrap_or("").to_string();
    (out.status.code().unwrap_or(-1), last, stdout)
}

/// The integer value of `"key":N` in a flat-enough JSON line (first occurrence).
fn int(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + pat.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not an integer in {json}"))
}

fn check_broker_object(json: &str, fanout: bool) {
    assert!(json.contains("\"broker\":{\"cpu_s\":"), "{json}");
    for k in ["rss_kb_start", "rss_kb_end", "rss_kb_peak_sampled"] {
        assert!(int(json, k) > 0, "{k} in {json}");
    }
    if fanout {
        assert!(int(json, "rss_kb_with_subscribers_idle") > 0, "{json}");
        assert!(json.contains("\"cpu_us_per_copy\":"), "{json}");
    } else {
        assert!(json.contains("\"cpu_us_per_event\":"), "{json}");
    }
    for k in ["\"p50\":", "\"p99\":", "\"max\":"] {
        assert!(json.contains(k), "{k} in {json}");
    }
}

#[test]
fn ingest_counts() {
    let broker = common::Broker::start(&["-q"]);
    let (code, json, all) = bench(
        &broker,
        &["ingest", "--authors=4", "--count=50", "--duration=0"],
    );
    assert!(json.starts_with('{') && json.ends_with('}'), "{all}");
    assert!(json.contains("\"mode\":\"ingest\""), "{json}");
    assert_eq!(int(&json, "acked"), 50, "{all}");
    assert_eq!(int(&json, "naks"), 0, "{all}");
    assert_eq!(int(&json, "errors"), 0, "{all}");
    assert!(json.contains("\"accepted_per_s\":"), "{json}");
    check_broker_object(&json, false);
    assert_eq!(code, 0, "{all}");
}

fn fanout_like(mode: &str, expected: u64) {
    let broker = common::Broker::start(&["-q"]);
    let (code, json, all) = bench(
        &broker,
        &[mode, "--subscribers=20", "--count=20", "--rate=0"],
    );
    assert!(json.contains(&format!("\"mode\":\"{mode}\"")), "{all}");
    assert_eq!(int(&json, "expected_deliveries"), expected, "{all}");
    assert_eq!(int(&json, "delivered"), expected, "{all}");
    for k in ["lost", "duplicates", "unexpected", "naks", "errors"] {
        assert_eq!(int(&json, k), 0, "{k}: {all}");
    }
    check_broker_object(&json, true);
    assert_eq!(code, 0, "{all}");
}

#[test]
fn fanout_counts() {
    fanout_like("fanout", 20 * 20);
}

#[test]
fn filter_counts() {
    // Subscriber i has filter i % 4; event n has class n % 4. Filters 0 and 1 match one
    // class, filter 2 classes 2 and 3, filter 3 class 3: per 4 events 5 + 5 + 10 + 5
    // copies for 20 subscribers (5 per filter), so 25 per 4 events, 125 for 20.
    fanout_like("filter", 125);
}

#[test]
fn catchup_counts() {
    let broker = common::Broker::start(&["-q", "--resume-subscribers=127.1.0.0/16"]);
    let (code, json, all) = bench(&broker, &["catchup", "--count=200"]);
    assert!(json.contains("\"mode\":\"catchup\""), "{all}");
    assert_eq!(int(&json, "received"), 200, "{all}");
    for k in ["lost", "duplicates", "out_of_order"] {
        assert_eq!(int(&json, k), 0, "{k}: {all}");
    }
    assert!(json.contains("\"events_per_s\":"), "{json}");
    assert!(!json.contains("\"live\""), "{json}");
    assert_eq!(code, 0, "{all}");
}

/// Several subscribers replay at once while an author submits live events to a live
/// subscriber: every replay complete, and every live event acked and delivered, with
/// latencies for both phases.
#[test]
fn catchup_with_replays_and_live_traffic_counts() {
    let broker = common::Broker::start(&["-q", "--resume-subscribers=127.1.0.0/16"]);
    let (code, json, all) = bench(
        &broker,
        &[
            "catchup",
            "--count=300",
            "--replays=4",
            "--live-rate=40",
            "--baseline=0.5",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect(&all);
    assert_eq!(v["replays"], 4, "{all}");
    assert_eq!(v["received"], 4 * 300, "{all}");
    for k in ["lost", "duplicates", "out_of_order"] {
        assert_eq!(v[k], 0, "{k}: {all}");
    }
    let live = &v["live"];
    assert!(live["submitted"].as_u64().unwrap() >= 10, "{all}");
    for k in ["naks", "errors", "lost"] {
        assert_eq!(live[k], 0, "live {k}: {all}");
    }
    let before = &live["before"];
    assert!(before["events"].as_u64().unwrap() >= 10, "{all}");
    assert!(before["ack_ms"]["p50"].as_f64().unwrap() > 0.0, "{all}");
    assert!(
        before["delivery_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{all}"
    );
    assert!(live["during"]["events"].is_u64(), "{all}");
    assert_eq!(code, 0, "{all}");
}

/// A broker that does not resume these subscribers replays nothing: the bench reports
/// every missed event lost and fails.
#[test]
fn catchup_without_resume_reports_the_loss() {
    let broker = common::Broker::start(&["-q"]);
    let (code, json, all) = bench(&broker, &["catchup", "--count=50", "--max-seconds=3"]);
    assert_eq!(int(&json, "received"), 0, "{all}");
    assert_eq!(int(&json, "lost"), 50, "{all}");
    assert!(json.contains("\"result\":\"fail\""), "{json}");
    assert_eq!(code, 1, "{all}");
}

/// `bolide-bench null-broker`, killed on drop.
struct NullBroker(Child);

impl Drop for NullBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn null_broker_counts() {
    let child = Command::new(env!("CARGO_BIN_EXE_bolide-bench"))
        .args(["null-broker", "--receive-port=0", "--broadcast-port=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bolide-bench null-broker");
    let mut nb = NullBroker(child);
    let pid = nb.0.id();
    // Its two lines, in bolide's shape: "listening for authors on 127.0.0.1:P (null broker)".
    let mut lines = BufReader::new(nb.0.stderr.take().unwrap()).lines();
    let mut port = |who: &str| {
        let l = lines.next().expect("null broker output").unwrap();
        let rest = l
            .strip_prefix(&format!("listening for {who} on 127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected line {l:?}"));
        assert!(rest.ends_with(" (null broker)"), "{l}");
        rest.split(' ').next().unwrap().parse::<u16>().unwrap()
    };
    let (r, b) = (port("authors"), port("subscribers"));

    // Bad authors first: none may crash or hang it.
    let author = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", r)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        reply
    };
    assert!(author(b"").is_empty());
    assert!(author(b"\xff\xff\xff\xffgarbage").is_empty());
    assert!(author(b"\x00\x00\x00\x10short").is_empty());
    let nak = author(b"\x00\x00\x00\x05hello");
    assert!(String::from_utf8_lossy(&nak).contains("role=\"nak\""));

    let (code, json, all) = bench_at(
        r,
        b,
        pid,
        &["fanout", "--subscribers=20", "--count=10", "--rate=0"],
    );
    assert!(json.contains("\"mode\":\"fanout\""), "{all}");
    assert_eq!(int(&json, "expected_deliveries"), 200, "{all}");
    assert_eq!(int(&json, "delivered"), 200, "{all}");
    for k in ["lost", "duplicates", "unexpected", "naks", "errors"] {
        assert_eq!(int(&json, k), 0, "{k}: {all}");
    }
    assert_eq!(code, 0, "{all}");

    let (code, json, all) = bench_at(
        r,
        b,
        pid,
        &["ingest", "--authors=4", "--count=50", "--duration=0"],
    );
    assert_eq!(int(&json, "acked"), 50, "{all}");
    assert_eq!(int(&json, "naks"), 0, "{all}");
    assert_eq!(int(&json, "errors"), 0, "{all}");
    assert_eq!(code, 0, "{all}");
    assert!(nb.0.try_wait().unwrap().is_none(), "the null broker exited");
}

/// bolide-bench with its open-file limit set to `soft`/`hard` before it starts.
fn bench_limited(broker: &common::Broker, soft: u64, hard: u64, mode: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bolide-bench"));
    cmd.arg(format!("--receive-port={}", broker.receive().port()))
        .arg(format!("--broadcast-port={}", broker.broadcast().port()))
        .arg("--max-seconds=60")
        .args(mode);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run bolide-bench")
}

/// Subscribers need a descriptor each: the tool raises its soft limit to the hard one
/// by itself, and when even the hard limit is too low it says so and exits 2 before
/// connecting anyone.
#[test]
fn fanout_raises_its_descriptor_limit() {
    let broker = common::Broker::start(&["-q", "--max-subscribers-per-address=400"]);
    let out = bench_limited(
        &broker,
        64,
        1024,
        &["fanout", "--subscribers=300", "--count=2", "--rate=0"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap_or("");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(int(json, "delivered"), 600, "{stdout}");

    let out = bench_limited(
        &broker,
        64,
        200,
        &["fanout", "--subscribers=300", "--count=2", "--rate=0"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--subscribers 300 needs 364 open files, but the hard limit is 200"),
        "{stderr}"
    );
}
