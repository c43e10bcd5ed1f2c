//! `bolide-send` as a drop-in for `comet-sendvo`, over real loopback sockets against the
//! real broker: every spelling of the options, standard input, a subscriber port given by
//! mistake, IPv6 peers, and a host given with its port.

mod common;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

/// Run bolide-send with these arguments and this standard input.
fn bolide_send(args: &[&str], stdin: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bolide-send"))
        .args(args)
        .stdin(stdin)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh event in a file of its own: (path, bytes, ivorn).
fn event_file(dir: &Path, local: &str) -> (PathBuf, Vec<u8>, String) {
    let bytes = make_event(local, 0);
    let path = dir.join(format!("{local}.xml"));
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes, format!("ivo://bolide.test/stream#{local}"))
}

fn ipv6_loopback_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A broker with one subscriber connected, to see what each submission delivers.
fn broker_and_subscriber() -> (Broker, Subscriber) {
    let b = Broker::start(&[]);
    let sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", T));
    (b, sub)
}

#[test]
fn every_comet_sendvo_option_spelling_submits() {
    let (b, mut sub) = broker_and_subscriber();
    let dir = scratch("send-forms");
    let port = b.receive().port().to_string();
    // H, P and F stand for the host, the port and the event's file.
    let forms: &[&[&str]] = &[
        &["-h", "H", "-p", "P", "-f", "F"],
        &["-hH", "-pP", "-fF"],
        &["--host", "H", "--port", "P", "--file", "F"],
        &["--host=H", "--port=P", "--file=F"],
        &["--ho", "H", "--po", "P", "--fi", "F"],
        // The default host, localhost, on the dual-stack listener.
        &["-p", "P", "-f", "F"],
    ];
    for (i, form) in forms.iter().enumerate() {
        let name = form.join(" ");
        let (path, bytes, ivorn) = event_file(&dir, &format!("form-{i}"));
        let args: Vec<String> = form
            .iter()
            .map(|w| {
                w.replace('H', "127.0.0.1")
                    .replace('P', &port)
                    .replace('F', path.to_str().unwrap())
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = bolide_send(&args, Stdio::null());
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        assert!(
            stdout(&o).starts_with("ack from ") && stdout(&o).contains(&format!(" for {ivorn}")),
            "{name}: {}",
            stdout(&o)
        );
        assert_eq!(sub.next_event(T).unwrap(), (ivorn, bytes), "{name}");
    }
}

#[test]
fn dash_and_no_file_read_standard_input() {
    let (b, mut sub) = broker_and_subscriber();
    let dir = scratch("send-stdin");
    let port = b.receive().port().to_string();
    let target = format!("127.0.0.1:{port}");
    let cases: &[(&str, &[&str])] = &[
        ("-f -", &["--host", "127.0.0.1", "--port", &port, "-f", "-"]),
        (
            "--file=-",
            &["--host", "127.0.0.1", "--port", &port, "--file=-"],
        ),
        ("-f-", &["--host", "127.0.0.1", "--port", &port, "-f-"]),
        ("no -f", &["--host", "127.0.0.1", "--port", &port]),
    ];
    for (i, (name, args)) in cases.iter().enumerate() {
        let (path, bytes, ivorn) = event_file(&dir, &format!("stdin-{i}"));
        let o = bolide_send(args, File::open(&path).unwrap().into());
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        assert_eq!(
            stdout(&o),
            format!("ack from {target} for {ivorn}\n"),
            "{name}"
        );
        assert_eq!(sub.next_event(T).unwrap(), (ivorn, bytes), "{name}");
    }
    // The same event again from standard input: the broker's nak, exit 1.
    let (path, _, _) = event_file(&dir, "stdin-0");
    let o = bolide_send(
        &["--port", &port, "-f", "-"],
        File::open(path).unwrap().into(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("Previously seen by this broker"));
}

/// Submit `file` to `host`:`port`, a subscriber port: the refusal must come at once (the
/// default --timeout is 30 s), with exit status 2. Returns standard error.
fn refused_as_subscriber_port(host: &str, port: u16, file: &Path) -> String {
    let port = port.to_string();
    let start = Instant::now();
    let o = bolide_send(
        &[
            "--host",
            host,
            "--port",
            &port,
            "--file",
            file.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn a_subscriber_port_is_named_at_once() {
    let b = Broker::start(&[]);
    let dir = scratch("send-subport");
    let (path, _, _) = event_file(&dir, "subport");
    let port = b.broadcast().port();
    assert_eq!(
        refused_as_subscriber_port("127.0.0.1", port, &path),
        format!(
            "bolide-send: 127.0.0.1:{port} is a subscriber port (it sent authenticate); \
             authors submit to the broker's receive port, 8098 by default\n"
        )
    );
    // A peer whose first word is iamalive is a subscriber port too.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = l.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        bolide::frame::write_frame(&mut s, &bolide::transport::iamalive("ivo://peer.test/b"))
            .unwrap();
        // Hold the connection open until bolide-send closes it.
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let err = refused_as_subscriber_port("127.0.0.1", lport, &path);
    assert!(
        err.contains(&format!(
            "127.0.0.1:{lport} is a subscriber port (it sent iamalive)"
        )),
        "{err}"
    );
    peer.join().unwrap();
}

#[test]
fn ipv6_peers_are_printed_in_brackets() {
    if !ipv6_loopback_available() {
        eprintln!("SKIPPED: ipv6_peers_are_printed_in_brackets: no ::1 on this machine");
        return;
    }
    let b = Broker::start(&["--bind=::1"]);
    let port = b.receive().port().to_string();
    assert_eq!(b.receive().ip().to_string(), "::1");
    let dir = scratch("send-v6");
    let (path, _, ivorn) = event_file(&dir, "v6");
    let file = path.to_str().unwrap();
    // A bare IPv6 address is a host; [::1] is the same host.
    let o = bolide_send(
        &["--host", "::1", "--port", &port, "--file", file],
        Stdio::null(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("ack from [::1]:{port} for {ivorn}\n"));
    let o = bolide_send(
        &["--host=[::1]", "--port", &port, "--file", file],
        Stdio::null(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("nak from [::1]:{port}: Event rejected: Previously seen by this broker\n")
    );
    let bport = b.broadcast().port();
    let err = refused_as_subscriber_port("::1", bport, &path);
    assert!(
        err.starts_with(&format!("bolide-send: [::1]:{bport} is a subscriber port")),
        "{err}"
    );
}

#[test]
fn a_host_with_a_port_gets_a_hint() {
    let b = Broker::start(&[]);
    let port = b.receive().port();
    let dir = scratch("send-hostport");
    let (path, _, _) = event_file(&dir, "hostport");
    let file = path.to_str().unwrap();
    for (host, name) in [
        (format!("localhost:{port}"), "localhost"),
        (format!("127.0.0.1:{port}"), "127.0.0.1"),
        (format!("[::1]:{port}"), "::1"),
    ] {
        let o = bolide_send(&[&format!("--host={host}"), "--file", file], Stdio::null());
        assert_eq!(o.status.code(), Some(2), "{host}");
        assert_eq!(
            stderr(&o),
            format!(
                "bolide-send: --host '{host}' includes a port: give the port with -p/--port, \
                 as in -h {name} -p {port}\n"
            )
        );
    }
    // Nothing was sent.
    assert_eq!(b.log_count("accepted"), 0, "{}", b.log_text());
}
