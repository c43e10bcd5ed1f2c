//! Interoperability with the deployed software, in every role, over loopback: Comet 3.1.0
//! (broker, subscriber, comet-sendvo) and pygcn (pygcn-listen), installed from PyPI into a
//! virtualenv by tests/interop/setup.sh. Each check compares the bytes received with the
//! bytes sent.
//!
//! If the peers cannot be installed, each test prints "SKIPPED: <reason>" and returns,
//! unless BOLIDE_REQUIRE_INTEROP is set (CI sets it), in which case it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(20);

/// The venv, or why there is none.
fn venv() -> &'static Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/setup.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(PathBuf::from(
                String::from_utf8_lossy(&o.stdout).trim().to_string(),
            )),
            Ok(o) => Err(String::from_utf8_lossy(&o.stdout).trim().to_string()),
            Err(e) => Err(format!("cannot run setup.sh: {e}")),
        }
    })
}

/// The venv's bin directory, or None after reporting the skip.
fn peers(test: &str) -> Option<PathBuf> {
    match venv() {
        Ok(v) => Some(v.join("bin")),
        Err(why) => {
            if std::env::var_os("BOLIDE_REQUIRE_INTEROP").is_some() {
                panic!("{test}: interop peers required but unavailable: {why}");
            }
            eprintln!("SKIPPED: {test}: {why}");
            None
        }
    }
}

/// A Python peer process, killed on drop, its output collected.
struct Peer {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn start(bin: &Path, exe: &str, args: &[String], cwd: &Path) -> Peer {
        let mut child = Command::new(bin.join(exe))
            .args(args)
            .current_dir(cwd)
            .env("PYTHONUTF8", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        Peer { child, log }
    }

    fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- peer log ----\n{}", self.text());
        }
    }
}

/// A Comet broker on fresh ports: (peer, receive port, broadcast port).
fn comet_broker(bin: &Path, dir: &Path, extra: &[String]) -> (Peer, u16, u16) {
    let mut args: Vec<String> = vec![
        "-n".into(),
        "--pidfile=".into(),
        "--logfile=-".into(),
        "comet".into(),
        "--receive".into(),
        "--broadcast".into(),
        "--local-ivo=ivo://comet.test/broker".into(),
        // Port 0: Comet binds free ports and logs them (no probe-then-bind race).
        "--receive-port=0".into(),
        "--broadcast-port=0".into(),
        format!("--eventdb={}", dir.join("comet-db").display()),
        "--author-whitelist=127.0.0.1/32".into(),
        "--subscriber-whitelist=127.0.0.1/32".into(),
        "--broadcast-test-interval=0".into(),
    ];
    args.extend_from_slice(extra);
    let p = Peer::start(bin, "twistd", &args, dir);
    let port_of = |factory: &str| -> u16 {
        assert!(p.wait_log(factory), "Comet did not start:\n{}", p.text());
        let text = p.text();
        let line = text
            .lines()
            .find(|l| l.contains(factory) && l.contains("starting on "))
            .unwrap();
        line.rsplit("starting on ")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let p1 = port_of("VOEventReceiverFactory");
    let p2 = port_of("VOEventBroadcasterFactory");
    (p, p1, p2)
}

/// A Comet subscriber to 127.0.0.1:`port`, saving events in `dir/events`.
fn comet_subscriber(bin: &Path, dir: &Path, port: u16, filters: &[&str]) -> Peer {
    let mut args: Vec<String> = vec![
        "-n".into(),
        "--pidfile=".into(),
        "--logfile=-".into(),
        "comet".into(),
        "--local-ivo=ivo://comet.test/sub".into(),
        format!("--remote=127.0.0.1:{port}"),
        format!("--eventdb={}", dir.join("sub-db").display()),
        "--save-event".into(),
        format!("--save-event-directory={}", dir.join("events").display()),
    ];
    args.extend(filters.iter().map(|f| format!("--filter={f}")));
    Peer::start(bin, "twistd", &args, dir)
}

fn wait_file(p: &Path) -> Vec<u8> {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(b) = std::fs::read(p) {
            if !b.is_empty() {
                return b;
            }
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sendvo(bin: &Path, port: u16, file: &Path) -> std::process::Output {
    Command::new(bin.join("comet-sendvo"))
        .args([
            "--host=127.0.0.1",
            &format!("--port={port}"),
            &format!("--file={}", file.display()),
        ])
        .env("PYTHONUTF8", "1")
        .output()
        .unwrap()
}

fn control() -> (PathBuf, Vec<u8>) {
    let p = corpus_dir().join("invalid/control/valid-base.xml");
    let b = std::fs::read(&p).unwrap();
    (p, b)
}

#[test]
fn comet_sendvo_submits_to_bolide() {
    let Some(bin) = peers("comet_sendvo_submits_to_bolide") else {
        return;
    };
    let b = Broker::start(&[]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    let (path, bytes) = control();
    let o = sendvo(&bin, b.receive().port(), &path);
    assert!(
        o.status.success(),
        "comet-sendvo failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(sub.next_event(T).unwrap().1, bytes);
    // A duplicate: bolide's nak is understood by Comet's sender (exit 1, reason shown).
    let o = sendvo(&bin, b.receive().port(), &path);
    assert_eq!(o.status.code(), Some(1));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("Previously seen by this broker"), "{out}");
}

#[test]
fn bolide_send_submits_to_comet() {
    let Some(bin) = peers("bolide_send_submits_to_comet") else {
        return;
    };
    let dir = scratch("interop-send");
    let (comet, p1, p2) = comet_broker(&bin, &dir, &[]);
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", p2)).unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    assert!(comet.wait_log("New subscriber"), "{}", comet.text());
    let (path, bytes) = control();
    let send = || {
        Command::new(env!("CARGO_BIN_EXE_bolide-send"))
            .args([
                "-f",
                path.to_str().unwrap(),
                "--host=127.0.0.1",
                &format!("--port={p1}"),
            ])
            .output()
            .unwrap()
    };
    let o = send();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Comet relays what bolide-send sent, byte for byte (after its authenticate).
    let mut fr = bolide::frame::FrameReader::new(1 << 20);
    loop {
        let f = fr.read_frame(&mut raw).expect("a frame from Comet");
        if f == bytes {
            break;
        }
        assert!(
            bolide::transport::parse(&f).is_ok(),
            "unexpected frame from Comet"
        );
    }
    // And Comet's nak comes back as exit 1 with the reason.
    let o = send();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Previously seen by this broker"));
}

#[test]
fn comet_subscribes_to_bolide_and_gets_events_and_test_events() {
    let Some(bin) = peers("comet_subscribes_to_bolide") else {
        return;
    };
    let dir = scratch("interop-comet-sub");
    let b = Broker::start(&["--broadcast-test-interval=2"]);
    let sub = comet_subscriber(&bin, &dir, b.broadcast().port(), &[]);
    assert!(b.wait_log("(1 subscribers)", T), "{}", sub.text());
    // A raw subscriber alongside records the test events exactly as bolide sends them.
    let mut witness = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    let witness = std::thread::spawn(move || {
        let mut seen = std::collections::HashMap::new();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            if let Some((iv, bytes)) = witness.next_event(Duration::from_secs(1)) {
                seen.insert(iv, bytes);
            }
        }
        seen
    });
    let ev = read_corpus("swift_bat-grb-pos-532871-pretty-printed_1.xml");
    assert!(submit(b.receive(), &ev).is_ack());
    let saved = wait_file(&dir.join("events/ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_532871729"));
    assert_eq!(saved, ev, "Comet saved other bytes than bolide was given");
    // bolide's test event: Comet (which validates the schema only on its receive port)
    // takes it and saves it under its ivorn.
    let deadline = Instant::now() + T;
    let test_saved = loop {
        let found = std::fs::read_dir(dir.join("events"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("ivo__bolide.test_brokerTestEvent")
            });
        if let Some(p) = found {
            break std::fs::read(p).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no test event saved:\n{}",
            sub.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(String::from_utf8_lossy(&test_saved).contains("role=\"test\""));
    // Every test event both of them got is byte-identical (the witness may have joined a
    // moment after Comet, so compare the ones it saw).
    let sent = witness.join().unwrap();
    let mut compared = 0;
    for (iv, bytes) in sent.iter().filter(|(iv, _)| iv.contains("#TestEvent-")) {
        let name = bolide::handlers::file_name(iv);
        if let Ok(saved) = std::fs::read(dir.join("events").join(&name)) {
            assert_eq!(
                &saved, bytes,
                "{iv}: Comet saved other bytes than bolide sent"
            );
            compared += 1;
        }
    }
    assert!(
        compared >= 1,
        "no test event seen by both Comet and the witness"
    );
    // Comet acks: it is not dropped as a non-acking subscriber.
    assert!(!b.log_text().contains("not acknowledging"));
}

#[test]
fn bolide_subscribes_to_comet() {
    let Some(bin) = peers("bolide_subscribes_to_comet") else {
        return;
    };
    let dir = scratch("interop-bolide-sub");
    let (comet, p1, p2) = comet_broker(&bin, &dir, &[]);
    let saved = scratch("interop-bolide-saved");
    let db = scratch("interop-bolide-db");
    let d = Broker::spawn(
        vec![
            format!("--remote=127.0.0.1:{p2}"),
            "--save-event".into(),
            format!("--save-event-directory={}", saved.display()),
            format!("--eventdb={}", db.display()),
        ],
        &db,
        false,
    );
    assert!(
        comet.wait_log("New subscriber"),
        "{}\n{}",
        comet.text(),
        d.log_text()
    );
    let (path, bytes) = control();
    assert!(sendvo(&bin, p1, &path).status.success());
    assert_eq!(
        wait_file(&saved.join("ivo__bolide.test_invalidbase1")),
        bytes
    );
    assert!(d.log_text().contains("subscribed to upstream 127.0.0.1:"));
}

#[test]
fn comet_subscriber_filter_is_honoured_by_bolide() {
    let Some(bin) = peers("comet_subscriber_filter_is_honoured") else {
        return;
    };
    let dir = scratch("interop-filter");
    let b = Broker::start(&[]);
    let sub = comet_subscriber(
        &bin,
        &dir,
        b.broadcast().port(),
        &[r#"//Param[@name="Packet_Type" and @value=61]"#],
    );
    assert!(
        b.wait_log("installed 1 filters", T),
        "{}\n{}",
        b.log_text(),
        sub.text()
    );
    let skip = read_corpus("swift_bat-known-pos_28.xml"); // Packet_Type 141
    let keep = read_corpus("swift_grb690738-bat-grb-pos_10.xml"); // Packet_Type 61
    assert!(submit(b.receive(), &skip).is_ack());
    assert!(submit(b.receive(), &keep).is_ack());
    let kept = wait_file(&dir.join("events/ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_690738383"));
    assert_eq!(kept, keep);
    std::thread::sleep(Duration::from_millis(500));
    let names: Vec<_> = std::fs::read_dir(dir.join("events")).unwrap().collect();
    assert_eq!(names.len(), 1, "the filtered-out event reached Comet");
}

#[test]
fn pygcn_listen_receives_and_acks_bolide_events() {
    let Some(bin) = peers("pygcn_listen_receives_and_acks") else {
        return;
    };
    let dir = scratch("interop-pygcn");
    // Strict ack and iamalive accounting: a client that did not ack or answer would be
    // dropped within two 1-second ticks.
    let b = Broker::start(&["--iamalive-interval=1", "--max-unacked=0"]);
    let listen = Peer::start(
        &bin,
        "pygcn-listen",
        &[format!("127.0.0.1:{}", b.broadcast().port())],
        &dir,
    );
    assert!(b.wait_log("(1 subscribers)", T), "{}", listen.text());
    let ev = read_corpus("lvk_o4-s230518h-preliminary_2.xml");
    assert!(submit(b.receive(), &ev).is_ack());
    let saved = wait_file(&dir.join("ivo%3A%2F%2Fgwnet%2FLVC%23S230518h-1-Preliminary"));
    assert_eq!(saved, ev);
    std::thread::sleep(Duration::from_secs(3));
    let log = b.log_text();
    assert!(
        !log.contains("not acknowledging") && !log.contains("appears to be dead"),
        "{log}"
    );
    assert_eq!(b.log_count("disconnected"), 0, "{log}");
}

/// pygcn cannot say where it stopped: with --resume-subscribers its address's last ack
/// is kept, and a pygcn-listen started again saves the events it missed meanwhile.
#[test]
fn pygcn_reconnecting_saves_what_it_missed() {
    let Some(bin) = peers("pygcn_reconnecting_saves_what_it_missed") else {
        return;
    };
    let dir = scratch("interop-pygcn-resume");
    let b = Broker::start(&["--no-sync", "--resume-subscribers=127.0.0.0/8"]);
    let name = |i: usize| dir.join(format!("ivo%3A%2F%2Fbolide.test%2Fstream%23pg-{i}"));
    let args = [format!("127.0.0.1:{}", b.broadcast().port())];
    let listen = Peer::start(&bin, "pygcn-listen", &args, &dir);
    assert!(b.wait_log("(1 subscribers)", T), "{}", listen.text());
    let first = make_event("pg-0", 0);
    assert!(submit(b.receive(), &first).is_ack());
    assert_eq!(wait_file(&name(0)), first);
    assert!(
        b.wait_log("(ivo://bolide.test/stream#pg-0) saved", T),
        "{}",
        b.log_text()
    );
    drop(listen);
    assert!(b.wait_log("(0 subscribers)", T), "{}", b.log_text());
    let missed: Vec<Vec<u8>> = (1..=5).map(|i| make_event(&format!("pg-{i}"), 0)).collect();
    for ev in &missed {
        assert!(submit(b.receive(), ev).is_ack());
    }
    let listen = Peer::start(&bin, "pygcn-listen", &args, &dir);
    for (i, ev) in missed.iter().enumerate() {
        assert_eq!(&wait_file(&name(i + 1)), ev, "{}", listen.text());
    }
    // The catch-up logs its end once its reading thread is done and the hand-over is
    // answered, which may come just after the subscriber has the events.
    assert!(
        b.wait_log("caught up: 5 events replayed", T),
        "{}",
        b.log_text()
    );
    assert_eq!(
        b.log_count("caught up: 5 events replayed"),
        1,
        "{}",
        b.log_text()
    );
}

/// The comet-sendvo command lines compared, H, P and F standing for the host, the port
/// and the event's file, and whether the event goes on standard input.
const SPELLINGS: &[(&[&str], bool)] = &[
    (&["-h", "H", "-p", "P", "-f", "F"], false),
    (&["--host=H", "--port=P", "--file=F"], false),
    (&["-hH", "-pP", "-fF"], false),
    (&["-h", "H", "-p", "P", "-f", "-"], true),
    (&["-h", "H", "-p", "P"], true),
];

/// The words of `form` for 127.0.0.1, `port` and `file`.
fn spelled(form: &[&str], port: u16, file: &Path) -> Vec<String> {
    let (port, file) = (port.to_string(), file.display().to_string());
    form.iter()
        .map(|w| {
            w.replace('H', "127.0.0.1")
                .replace('P', &port)
                .replace('F', &file)
        })
        .collect()
}

/// What a sender made of the broker's answer: its exit status and, for a nak, the reason
/// it printed (comet-sendvo: `refused to accept VOEvent (REASON)` in its log; bolide-send:
/// `nak from HOST:PORT: REASON`).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: Option<i32>,
    nak_reason: Option<String>,
}

const ACK: Outcome = Outcome {
    status: Some(0),
    nak_reason: None,
};

/// Run `exe` (comet-sendvo or bolide-send) with `args`, `file` on standard input if
/// `stdin`, and read its outcome; the second value is everything it printed.
fn send_with(exe: &Path, args: &[String], file: &Path, stdin: bool) -> (Outcome, String) {
    let input = if stdin {
        Stdio::from(std::fs::File::open(file).unwrap())
    } else {
        Stdio::null()
    };
    let o = Command::new(exe)
        .args(args)
        .env("PYTHONUTF8", "1")
        .stdin(input)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let nak_reason = out.lines().find_map(|l| {
        if let Some((_, r)) = l.split_once("refused to accept VOEvent (") {
            return Some(r.strip_suffix(')').unwrap_or(r).to_string());
        }
        // HOST:PORT: REASON (an IPv6 HOST is in brackets, so ": " ends the peer).
        let (_, reason) = l.strip_prefix("nak from ")?.split_once(": ")?;
        Some(reason.to_string())
    });
    let outcome = Outcome {
        status: o.status.code(),
        nak_reason,
    };
    (outcome, out)
}

#[test]
fn sendvo_and_bolide_send_agree_on_every_spelling() {
    let Some(bin) = peers("sendvo_and_bolide_send_agree_on_every_spelling") else {
        return;
    };
    let sendvo = bin.join("comet-sendvo");
    let bolide_send = PathBuf::from(env!("CARGO_BIN_EXE_bolide-send"));
    let (path, bytes) = control();
    // To bolide: each spelling gets a pair of fresh brokers, one per sender, so each
    // sender's first submission is new (ack) and its second a duplicate (a nak).
    for (form, stdin) in SPELLINGS {
        let name = form.join(" ") + if *stdin { " < F" } else { "" };
        let mut duplicates = Vec::new();
        for exe in [&sendvo, &bolide_send] {
            let who = format!("{} {name}", exe.display());
            let b = Broker::start(&[]);
            let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
            assert!(b.wait_log("(1 subscribers)", T));
            let args = spelled(form, b.receive().port(), &path);
            let (first, out) = send_with(exe, &args, &path, *stdin);
            assert_eq!(first, ACK, "{who}:\n{out}");
            assert_eq!(sub.next_event(T).unwrap().1, bytes, "{who}");
            let (second, out) = send_with(exe, &args, &path, *stdin);
            assert_eq!(second.status, Some(1), "{who}:\n{out}");
            duplicates.push(second);
        }
        assert_eq!(duplicates[0], duplicates[1], "{name}: the duplicate");
        assert_eq!(
            duplicates[0].nak_reason.as_deref(),
            Some("Event rejected: Previously seen by this broker"),
            "{name}"
        );
    }
    // To Comet: one broker per sender; the first spelling's event is new (ack), every
    // later spelling resubmits it, and both senders read Comet's nak the same way.
    let mut results = Vec::new();
    let mut comets = Vec::new();
    for exe in [&sendvo, &bolide_send] {
        let dir = scratch("interop-spellings");
        let (comet, p1, p2) = comet_broker(&bin, &dir, &[]);
        let mut outcomes = Vec::new();
        for (form, stdin) in SPELLINGS {
            let (outcome, out) = send_with(exe, &spelled(form, p1, &path), &path, *stdin);
            let want_ack = outcomes.is_empty();
            assert_eq!(
                outcome == ACK,
                want_ack,
                "{} {form:?}:\n{out}",
                exe.display()
            );
            outcomes.push(outcome);
        }
        results.push(outcomes);
        comets.push((comet, p2));
    }
    assert_eq!(results[0], results[1]);
    assert!(results[0][1].nak_reason.is_some(), "{:?}", results[0]);
    // Both refuse Comet's subscriber port at once; bolide-send names it.
    let p2 = comets[1].1;
    let args = spelled(SPELLINGS[0].0, p2, &path);
    let start = Instant::now();
    let (theirs, _) = send_with(&sendvo, &args, &path, false);
    let (ours, out) = send_with(&bolide_send, &args, &path, false);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(theirs.status, Some(1));
    assert_eq!(ours.status, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "127.0.0.1:{p2} is a subscriber port (it sent authenticate)"
        )),
        "{out}"
    );
}
