//! The command lines of `bolide` and `bolide-send`: Comet's flag spellings, refusals with
//! one clear line and the documented exit status, and start-up failures.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn bolide(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bolide"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn send(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bolide-send"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut i = c.stdin.take().unwrap();
        if let Some(b) = stdin {
            i.write_all(b).unwrap();
        }
    }
    c.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn refusals_name_the_problem_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "nothing to do: give --receive (-r)"),
        (&["-r"], "--local-ivo is required"),
        (
            &["--broadcast", "--local-ivo=ivo://ab"],
            "invalid ivorn authority 'ab'",
        ),
        (
            &["-b", "--local-ivo", "ivo://abc/x#y"],
            "must not contain '#'",
        ),
        (
            &[
                "-r",
                "--local-ivo=ivo://abc",
                "--author-whitelist=10.0.0.0/40",
            ],
            "--author-whitelist: invalid network '10.0.0.0/40'",
        ),
        (
            &["-r", "--local-ivo=ivo://abc", "--receive-port=70000"],
            "receive-port",
        ),
        (&["--no-such-flag"], "no-such-flag"),
    ];
    for (args, needle) in cases {
        let o = bolide(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn version_and_help() {
    let o = bolide(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout).trim(),
        format!("bolide {}", env!("CARGO_PKG_VERSION"))
    );
    let o = bolide(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    for flag in [
        "--receive",
        "--broadcast",
        "--local-ivo",
        "--eventdb",
        "--receive-port",
        "--broadcast-port",
        "--broadcast-test-interval",
        "--author-whitelist",
        "--subscriber-whitelist",
        "--verbose",
        "--quiet",
        "--version",
        "--max-event-size",
        "--no-sync",
        "--bind",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn startup_failures_exit_1_with_the_reason() {
    // Port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let db = scratch("cli-port");
    let o = bolide(&[
        "-r",
        "--local-ivo=ivo://abc",
        "--bind=127.0.0.1",
        "--receive-port",
        &port,
        "--eventdb",
        db.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("already in use"),
        "{}",
        text(&o.stderr)
    );
    // A foreign file where the database should be.
    let db = scratch("cli-corrupt");
    std::fs::write(db.join("data.mdb"), vec![0x5a; 16384]).unwrap();
    let o = bolide(&[
        "-r",
        "--local-ivo=ivo://abc",
        "--receive-port=0",
        "--eventdb",
        db.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("data.mdb") && err.contains("not a bolide event database"),
        "{err}"
    );
    // A location that cannot be a directory, even for root.
    let o = bolide(&[
        "-r",
        "--local-ivo=ivo://abc",
        "--receive-port=0",
        "--eventdb=/dev/null/eventdb",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("/dev/null/eventdb is not a directory"),
        "{err}"
    );
    // A file given as the database directory.
    let file = scratch("cli-file").join("passwd");
    std::fs::write(&file, "root:x:0:0::/root:/bin/sh\n").unwrap();
    let o = bolide(&[
        "-r",
        "--local-ivo=ivo://abc",
        "--receive-port=0",
        &format!("--eventdb={}", file.display()),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{} is not a directory", file.display())),
        "{err}"
    );
    // A --save-event-directory that is a file, or below one: named, with what to do.
    for dir in [file.clone(), file.join("events")] {
        let o = bolide(&[
            "-r",
            "--local-ivo=ivo://abc",
            "--receive-port=0",
            "--eventdb",
            scratch("cli-save").to_str().unwrap(),
            "--save-event",
            &format!("--save-event-directory={}", dir.display()),
        ]);
        assert_eq!(o.status.code(), Some(1));
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!(
                "--save-event-directory {} is not a directory",
                dir.display()
            )),
            "{err}"
        );
    }
}

/// A second broker on the event database of a running one is refused at once, naming
/// the directory and the first broker's process id; the first keeps running.
#[test]
fn a_second_broker_on_one_event_database_is_refused() {
    let db = scratch("cli-two");
    let mut first = Broker::start_with_db(&db, &[], false);
    let o = bolide(&[
        "-r",
        "--local-ivo=ivo://abc",
        "--receive-port=0",
        "--broadcast-port=0",
        "-b",
        "--eventdb",
        db.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "is in use by another bolide (pid {})",
            first.pid()
        )) && err.contains(db.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(first.is_running());
    assert!(submit(first.receive(), &make_event("cli-one", 0)).is_ack());
    first.terminate(Duration::from_secs(10));
    // Once the first has stopped, the directory is free again.
    let mut second = Broker::start_with_db(&db, &[], false);
    assert!(second.is_running());
    second.terminate(Duration::from_secs(10));
}

/// Comet's rule for repeated options: the last value wins (here the last --eventdb is
/// the one opened), and an options file carries values with spaces.
#[test]
fn last_value_wins_and_options_files() {
    let (a, b) = (scratch("cli-last-a"), scratch("cli-last-b"));
    let conf = scratch("cli-conf").join("bolide.conf");
    std::fs::write(
        &conf,
        format!(
            "# test\n--eventdb={}\n--filter=//Param[@name=\"Packet_Type\" and @value > 100]\n",
            a.display()
        ),
    )
    .unwrap();
    let mut broker = Broker::spawn(
        vec![
            "-r".into(),
            "--local-ivo=ivo://abc".into(),
            "--receive-port=0".into(),
            format!("--options-file={}", conf.display()),
            format!("--eventdb={}", b.display()),
        ],
        &b,
        false,
    );
    assert!(broker.is_running(), "{}", broker.log_text());
    assert!(submit(broker.receive(), &make_event("cli-one", 0)).is_ack());
    assert!(
        b.join("data.mdb").exists(),
        "the last --eventdb is not used"
    );
    assert!(
        !a.join("data.mdb").exists(),
        "an earlier --eventdb was opened"
    );
    broker.terminate(Duration::from_secs(10));
}

#[test]
fn default_eventdb_is_created_under_xdg_data_home() {
    let home = scratch("xdg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bolide"))
        .args(["-r", "--local-ivo=ivo://abc", "--receive-port=0"])
        .env("XDG_DATA_HOME", &home)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = home.join("bolide/eventdb/data.mdb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !db.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(db.exists(), "no event database at {}", db.display());
}

#[test]
fn bolide_send_exit_statuses() {
    let b = Broker::start(&[]);
    let port = b.receive().port().to_string();
    let file = scratch("send").join("event.xml");
    std::fs::write(&file, make_event("send-1", 0)).unwrap();
    // Ack: exit 0 (Comet's --opt=value spelling).
    let o = send(
        &[
            "-f",
            file.to_str().unwrap(),
            "--host=127.0.0.1",
            &format!("--port={port}"),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("ack"));
    // Nak (duplicate), from standard input: exit 1 with the reason.
    let o = send(&["--port", &port], Some(&make_event("send-1", 0)));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("Event rejected: Previously seen by this broker"));
    // Garbage is a nak too.
    let o = send(&["--port", &port], Some(b"hello"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("Event rejected: not XML"));
    // Other failures: exit 2 with a message.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let o = send(&["--host=127.0.0.1", "--port", &closed], Some(b"<x/>"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("cannot connect"),
        "{}",
        text(&o.stderr)
    );
    let o = send(&["-f", "/nonexistent/event.xml"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("cannot read /nonexistent/event.xml"));
    let o = send(&["--bogus"], None);
    assert_eq!(o.status.code(), Some(2));
    // A peer that accepts and never answers: --timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = silent.local_addr().unwrap().port().to_string();
    let o = send(
        &["--host=127.0.0.1", "--port", &sport, "--timeout=1"],
        Some(&make_event("send-2", 0)),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no reply"), "{}", text(&o.stderr));
}

/// Run a broker briefly with these flags (and RUST_LOG, if given) and return its log.
fn brief_log(flags: &[&str], rust_log: Option<&str>) -> String {
    let db = scratch("log-levels");
    let mut c = Command::new(env!("CARGO_BIN_EXE_bolide"));
    c.args([
        "-r",
        "--local-ivo=ivo://abc",
        "--receive-port=0",
        &format!("--eventdb={}", db.display()),
    ])
    .args(flags)
    .env_remove("RUST_LOG")
    .stderr(Stdio::piped());
    if let Some(v) = rust_log {
        c.env("RUST_LOG", v);
    }
    let child = c.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn log_levels_follow_v_q_and_rust_log() {
    let normal = brief_log(&[], None);
    assert!(
        normal.contains(" INFO ] listening for authors on"),
        "{normal}"
    );
    assert!(!normal.contains("DEBUG"), "{normal}");
    // Every line starts with a UTC timestamp.
    for line in normal.lines() {
        assert!(
            line.starts_with("[20") && line[1..21].ends_with('Z'),
            "{line}"
        );
    }
    let quiet = brief_log(&["-q"], None);
    assert!(!quiet.contains("INFO"), "{quiet}");
    let verbose = brief_log(&["-v"], None);
    assert!(
        verbose.contains("DEBUG] prune: nothing expired"),
        "{verbose}"
    );
    // RUST_LOG wins over -q.
    let env = brief_log(&["-q"], Some("debug"));
    assert!(env.contains("DEBUG") && env.contains("INFO"), "{env}");
}

/// A plain subscriber opens no port, so its start-up log says nothing of connection caps;
/// a broker with a port does.
#[test]
fn connection_caps_are_logged_only_with_a_port() {
    let port = free_port();
    let db = scratch("cli-plain");
    let mut plain = Broker::spawn(vec![format!("--remote=127.0.0.1:{port}")], &db, false);
    assert!(
        plain.wait_log("event database", Duration::from_secs(10)),
        "{}",
        plain.log_text()
    );
    assert!(
        !plain.log_text().contains("connection caps"),
        "{}",
        plain.log_text()
    );
    plain.terminate(Duration::from_secs(10));
    let mut full = Broker::start(&[]);
    assert!(
        full.wait_log("connection caps: ", Duration::from_secs(10)),
        "{}",
        full.log_text()
    );
    full.terminate(Duration::from_secs(10));
}

/// The Kafka options parse in every build. Without the `kafka` feature they are refused
/// with the rebuild hint; with it, options that do not add up are refused by name. Exit
/// status 2 either way, before anything starts.
#[test]
fn kafka_options_are_refused_clearly() {
    let db = scratch("kafka-cli");
    let db = format!("--eventdb={}", db.display());
    let o = bolide(&["-b", "--local-ivo=ivo://a.b/c", &db, "--kafka-topic=t"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    if cfg!(feature = "kafka") {
        assert!(
            err.contains("--kafka-topic: give --kafka-bootstrap"),
            "{err}"
        );
        for (args, want) in [
            (
                &[
                    "--kafka-bootstrap=h:1",
                    "--kafka-topic=t",
                    "--kafka-start=now",
                ][..],
                "--kafka-start: earliest or latest",
            ),
            (
                &["--kafka-bootstrap=h:1", "--kafka-option=nokey"][..],
                "--kafka-option: write KEY=VALUE",
            ),
            (&["--gcn-client-id=x"][..], "BOLIDE_GCN_CLIENT_SECRET"),
            (
                &[
                    "--kafka-bootstrap=h:1",
                    "--kafka-topic=t",
                    "--kafka-heartbeat-timeout=5",
                ][..],
                "--kafka-heartbeat-timeout: only with --kafka-heartbeat-topic",
            ),
            (
                &[
                    "--kafka-bootstrap=h:1",
                    "--kafka-topic=t",
                    "--kafka-heartbeat-topic=hb",
                    "--kafka-heartbeat-timeout=0",
                ][..],
                "--kafka-heartbeat-timeout: give a duration",
            ),
        ] {
            let mut a = vec!["-b", "--local-ivo=ivo://a.b/c", db.as_str()];
            a.extend_from_slice(args);
            let o = Command::new(env!("CARGO_BIN_EXE_bolide"))
                .args(&a)
                .env_remove("BOLIDE_GCN_CLIENT_SECRET")
                .output()
                .unwrap();
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: {err}");
        }
    } else {
        assert!(
            err.contains(
                "this bolide was built without Kafka support: rebuild with --features kafka"
            ),
            "{err}"
        );
    }
}
