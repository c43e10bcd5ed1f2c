//! Smoke test of `bolide-bench`: each mode runs briefly against a real bolide and its
//! counts are checked (never its speed).

mod common;

use std::process::Command;

/// Run bolide-bench against `broker` and return (exit status, last line = JSON).
fn bench(broker: &common::Broker, mode: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bolide-bench"))
        .arg(format!("--receive-port={}", broker.receive().port()))
        .arg(format!("--broadcast-port={}", broker.broadcast().port()))
        .arg(format!("--pid={}", broker.pid()))
        .arg("--max-seconds=60")
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
