//! --print-event, --save-event and --cmd over real sockets: exact bytes, Comet's file
//! names without overwriting, failing and hanging children logged without delaying
//! delivery, and a plain subscriber (only --remote) that saves what it receives.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn save_event_uses_comet_names_raw_bytes_and_never_overwrites() {
    let dir = scratch("saved");
    let b = Broker::start(&[
        "--save-event",
        &format!("--save-event-directory={}", dir.display()),
        "--broadcast-test-interval=1",
    ]);
    let first = make_event("save-1", 0);
    let second = make_event("save-1", 1); // same ivorn, other bytes
    assert!(submit(b.receive(), &first).is_ack());
    assert!(submit(b.receive(), &second).is_ack());
    let name = dir.join("ivo__bolide.test_streamsave1");
    let name_ = dir.join("ivo__bolide.test_streamsave1_");
    wait_for("two saved files", || name.exists() && name_.exists());
    assert_eq!(std::fs::read(&name).unwrap(), first);
    assert_eq!(std::fs::read(&name_).unwrap(), second);
    // The broker's own test events (one a second here) are never handled.
    std::thread::sleep(Duration::from_millis(1500));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(b.log_text().contains("sent test event"));
}

#[test]
fn print_event_writes_the_raw_bytes_to_stdout() {
    let b = Broker::start(&["--print-event"]);
    let ev = read_corpus("gaia_non-ascii-utf8_4.xml");
    assert!(submit(b.receive(), &ev).is_ack());
    wait_for("printed event", || b.stdout_bytes().len() >= ev.len());
    let out = b.stdout_bytes();
    assert!(out.starts_with(&ev), "stdout is not the raw event");
}

#[test]
fn cmd_gets_exact_bytes_and_bad_children_do_not_block_delivery() {
    let dir = scratch("cmd");
    let copy = script(
        &dir,
        "copy",
        &format!("cat > {}/got-$$; echo copied", dir.display()),
    );
    let fail = script(&dir, "fail", "cat >/dev/null; echo oops >&2; exit 3");
    let hang = script(&dir, "hang", "exec sleep 60");
    let b = Broker::start(&[
        &format!("--cmd={}", copy.display()),
        &format!("--cmd={}", fail.display()),
        &format!("--cmd={}", hang.display()),
        "--cmd-timeout=2",
    ]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    let ev = make_event("cmd-1", 100);
    assert!(submit(b.receive(), &ev).is_ack());
    assert!(sub.next_event(T).is_some());
    // While the hanging child runs, delivery goes on.
    let started = Instant::now();
    assert!(submit(b.receive(), &make_event("cmd-2", 0)).is_ack());
    assert!(sub.next_event(T).is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "delivery waited for a --cmd child"
    );
    let got = || -> Vec<Vec<u8>> {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("got-")
                    .then(|| std::fs::read(p).unwrap())
            })
            .collect()
    };
    // A child's file exists as soon as its shell opens it, before `cat` has written
    // everything: wait for the content, not just the files.
    wait_for("two copies, one of them the exact bytes of cmd-1", || {
        let g = got();
        g.len() == 2 && g.contains(&ev)
    });
    assert!(
        got().contains(&ev),
        "a --cmd child did not get the exact bytes"
    );
    assert!(b.wait_log("returned non-zero (3)", T), "{}", b.log_text());
    assert!(b.wait_log("said on standard error: oops", T));
    assert!(b.wait_log("said on standard output: copied", T));
    assert!(
        b.wait_log("still running after 2 s: killed", T),
        "{}",
        b.log_text()
    );
}

#[test]
fn a_cmd_that_is_not_executable_is_refused_at_start_up() {
    let dir = scratch("cmd-bad");
    let p = dir.join("plain");
    std::fs::write(&p, "not a program").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bolide"))
        .args(["--remote=127.0.0.1:1", &format!("--cmd={}", p.display())])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not executable"));
}

/// The pygcn-listen replacement: `bolide --remote HOST --save-event`, no --local-ivo.
#[test]
fn plain_subscriber_saves_what_the_upstream_sends() {
    let up = Broker::start(&[]);
    let dir = scratch("listen");
    let db = scratch("listen-db");
    let d = Broker::spawn(
        vec![
            format!("--remote=127.0.0.1:{}", up.broadcast().port()),
            "--save-event".into(),
            format!("--save-event-directory={}", dir.display()),
            format!("--eventdb={}", db.display()),
        ],
        &db,
        false,
    );
    assert!(up.wait_log("(1 subscribers)", T), "{}", d.log_text());
    let ev = read_corpus("lvk_o4-s230518h-preliminary_2.xml");
    assert!(submit(up.receive(), &ev).is_ack());
    let path = dir.join("ivo__gwnet_LVCS230518h1Preliminary");
    wait_for("the saved event", || path.exists());
    assert_eq!(std::fs::read(&path).unwrap(), ev);
    assert!(d.log_text().contains("starting as a subscriber"));
}
