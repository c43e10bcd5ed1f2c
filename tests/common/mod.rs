//! Test harness: runs the real `bolide` binary on loopback with ports chosen by the kernel
//! (port 0, read back from the log), and speaks raw VTP to it as authors and subscribers.
#![allow(dead_code)]

pub mod http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bolide::frame::{write_frame, FrameError, FrameReader};
use bolide::sys::DeadlineReader;
use bolide::transport::{self, Message, Role};

pub const LOCAL_IVO: &str = "ivo://bolide.test/broker";

/// ../shared/voevents
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/voevents")
}

/// A fresh, unique scratch directory.
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "bolide-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running broker process.
pub struct Broker {
    child: Child,
    /// Where the broker's standard output goes.
    pub stdout_path: PathBuf,
    pub receive: Option<SocketAddr>,
    pub broadcast: Option<SocketAddr>,
    pub eventdb: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    keep_db: bool,
}

impl Broker {
    /// Start `bolide -r -b` on ephemeral ports with a fresh event database plus `extra`.
    pub fn start(extra: &[&str]) -> Broker {
        let db = scratch("eventdb");
        Broker::start_with_db(&db, extra, false)
    }

    /// Start on an existing event database directory (kept on drop when `keep` is set).
    pub fn start_with_db(db: &Path, extra: &[&str], keep: bool) -> Broker {
        let mut args: Vec<String> = vec![
            "--receive".into(),
            "--broadcast".into(),
            format!("--eventdb={}", db.display()),
            "--receive-port=0".into(),
        ];
        if !extra.iter().any(|a| a.starts_with("--local-ivo")) {
            args.push(format!("--local-ivo={LOCAL_IVO}"));
        }
        if !extra.iter().any(|a| a.starts_with("--broadcast-port")) {
            args.push("--broadcast-port=0".into());
        }
        if !extra
            .iter()
            .any(|a| a.starts_with("--broadcast-test-interval"))
        {
            args.push("--broadcast-test-interval=0".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Broker::spawn(args, db, keep)
    }

    /// Start with exactly these arguments (ports must be 0 for the harness to find them).
    pub fn spawn(args: Vec<String>, db: &Path, keep: bool) -> Broker {
        Broker::spawn_with_env(args, db, keep, &[])
    }

    /// [`Broker::spawn`] with these environment variables set (`Some`) or removed (`None`).
    pub fn spawn_with_env(
        args: Vec<String>,
        db: &Path,
        keep: bool,
        env: &[(&str, Option<&str>)],
    ) -> Broker {
        let stdout_path = scratch("stdout").join("stdout");
        let stdout = std::fs::File::create(&stdout_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bolide"));
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd
            .args(&args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bolide");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("BOLIDE_TEST_ECHO").is_some() {
                    eprintln!("[bolide] {line}");
                }
                l2.lock().unwrap().push(line);
            }
        });
        let mut b = Broker {
            stdout_path,
            child,
            receive: None,
            broadcast: None,
            eventdb: db.to_path_buf(),
            log,
            keep_db: keep,
        };
        let want_r = args.iter().any(|a| a == "--receive" || a == "-r");
        let want_b = args.iter().any(|a| a == "--broadcast" || a == "-b");
        let deadline = Instant::now() + Duration::from_secs(20);
        while (want_r && b.receive.is_none()) || (want_b && b.broadcast.is_none()) {
            if let Some(status) = b.child.try_wait().unwrap() {
                panic!("bolide exited with {status}: {}", b.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "bolide did not start: {}",
                b.log_text()
            );
            b.receive = b.port_from_log("listening for authors on ");
            b.broadcast = b.port_from_log("listening for subscribers on ");
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    fn port_from_log(&self, marker: &str) -> Option<SocketAddr> {
        let log = self.log.lock().unwrap();
        let line = log.iter().find(|l| l.contains(marker))?;
        let rest = &line[line.find(marker)? + marker.len()..];
        let addr: SocketAddr = rest.split_whitespace().next()?.parse().ok()?;
        let ip = if addr.ip().is_unspecified() {
            "127.0.0.1".parse().unwrap()
        } else {
            addr.ip()
        };
        Some(SocketAddr::new(ip, addr.port()))
    }

    pub fn receive(&self) -> SocketAddr {
        self.receive.expect("receiving")
    }

    pub fn broadcast(&self) -> SocketAddr {
        self.broadcast.expect("broadcasting")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.stdout_path).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Count log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Send a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Send SIGTERM and wait (up to `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stop the broker (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if !self.keep_db {
            let _ = std::fs::remove_dir_all(&self.eventdb);
        }
        if std::thread::panicking() {
            eprintln!("---- bolide log ----\n{}", self.log_text());
        }
    }
}

/// Outcome of a submission.
#[derive(Debug)]
pub enum Reply {
    Msg(Message),
    /// The connection closed without a reply.
    Closed,
    /// No reply within the timeout.
    TimedOut,
    /// The connection was refused (nothing listening).
    Refused,
}

impl Reply {
    pub fn msg(&self) -> &Message {
        match self {
            Reply::Msg(m) => m,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    pub fn is_ack(&self) -> bool {
        matches!(self, Reply::Msg(m) if m.role == Some(Role::Ack))
    }

    pub fn is_nak(&self) -> bool {
        matches!(self, Reply::Msg(m) if m.role == Some(Role::Nak))
    }

    pub fn result(&self) -> String {
        self.msg().result.clone().unwrap_or_default()
    }
}

/// Send raw bytes (already framed or not: `framed` says) and wait for the reply.
pub fn exchange(addr: SocketAddr, wire: &[u8], timeout: Duration) -> Reply {
    let Ok(s) = TcpStream::connect(addr) else {
        return Reply::Refused;
    };
    exchange_on(s, wire, timeout)
}

/// Send raw bytes on a connection already made and wait for the reply.
pub fn exchange_on(mut s: TcpStream, wire: &[u8], timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    s.set_write_timeout(Some(timeout)).unwrap();
    // The broker may refuse and close while we are still writing: that's fine.
    let _ = s.write_all(wire);
    let mut frames = FrameReader::new(1 << 20);
    let mut r = DeadlineReader {
        stream: &s,
        deadline,
    };
    match frames.read_frame(&mut r) {
        Ok(f) => Reply::Msg(transport::parse(&f).expect("reply parses as Transport")),
        Err(FrameError::TimedOut) => Reply::TimedOut,
        Err(FrameError::Closed) | Err(FrameError::Truncated { .. }) => Reply::Closed,
        Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Reply::Closed,
        Err(e) => panic!("reading reply: {e}"),
    }
}

/// Submit one event as an author.
pub fn submit(addr: SocketAddr, payload: &[u8]) -> Reply {
    exchange(
        addr,
        &bolide::frame::encode(payload),
        Duration::from_secs(10),
    )
}

/// Submit one event as an author connecting from the loopback address `from` (see
/// [`connect_from`]).
pub fn submit_from(from: std::net::Ipv4Addr, addr: SocketAddr, payload: &[u8]) -> Reply {
    match connect_from(from, addr) {
        Ok(s) => exchange_on(s, &bolide::frame::encode(payload), Duration::from_secs(10)),
        Err(_) => Reply::Refused,
    }
}

/// What a test subscriber does with events.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Ack every event and answer iamalive.
    Healthy,
    /// Answer iamalive but never ack.
    NoAck,
    /// Ack events but never answer iamalive.
    NoIamalive,
}

/// A raw VTP subscriber.
pub struct Subscriber {
    pub stream: TcpStream,
    frames: FrameReader,
    pub behaviour: Behaviour,
    pub authenticated: bool,
    pub iamalives: usize,
}

impl Subscriber {
    /// Connect and wait for the broker's `authenticate`.
    pub fn connect(addr: SocketAddr, behaviour: Behaviour) -> Subscriber {
        let stream = TcpStream::connect(addr).expect("connect to broadcast port");
        Subscriber::over(stream, behaviour)
    }

    /// Connect from the local address `from` (see [`connect_from`]).
    pub fn connect_from(
        from: std::net::Ipv4Addr,
        addr: SocketAddr,
        behaviour: Behaviour,
    ) -> Subscriber {
        let stream = connect_from(from, addr).expect("connect to broadcast port");
        Subscriber::over(stream, behaviour)
    }

    /// Wait on `stream` for the broker's `authenticate`.
    fn over(stream: TcpStream, behaviour: Behaviour) -> Subscriber {
        let mut s = Subscriber {
            stream,
            frames: FrameReader::new(16 << 20),
            behaviour,
            authenticated: false,
            iamalives: 0,
        };
        let m = s
            .next_message(Duration::from_secs(10))
            .expect("authenticate");
        match m {
            Incoming::Transport(t) if t.role == Some(Role::Authenticate) => {
                assert_eq!(t.origin.as_deref(), Some(LOCAL_IVO));
                s.authenticated = true;
            }
            _ => panic!("expected authenticate first"),
        }
        s
    }

    /// Answer (or re-send) an authenticate with these filters, in the Param form.
    pub fn authenticate(&mut self, filters: &[&str]) {
        let f: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let msg = transport::authenticate_response(LOCAL_IVO, None, &f);
        write_frame(&mut self.stream, &msg).unwrap();
    }

    /// Send raw bytes as one frame.
    pub fn send_raw(&mut self, payload: &[u8]) {
        write_frame(&mut self.stream, payload).unwrap();
    }

    /// Next frame, classified, answering iamalives (and acking events if healthy).
    pub fn next_message(&mut self, timeout: Duration) -> Result<Incoming, FrameError> {
        let deadline = Instant::now() + timeout;
        let frame = {
            let mut r = DeadlineReader {
                stream: &self.stream,
                deadline,
            };
            self.frames.read_frame(&mut r)?
        };
        let doc = bolide::xml::parse(&frame, Default::default()).expect("broker sent XML");
        if doc.root().local == "Transport" {
            let m = transport::from_document(&doc).unwrap();
            if m.role == Some(Role::IAmAlive) && self.behaviour != Behaviour::NoIamalive {
                self.iamalives += 1;
                let resp = transport::iamalive_response(m.origin.as_deref().unwrap_or(""), None);
                let _ = write_frame(&mut self.stream, &resp);
            }
            return Ok(Incoming::Transport(m));
        }
        let ivorn = doc.attr(0, "ivorn").unwrap_or("").to_string();
        if self.behaviour != Behaviour::NoAck {
            let _ = write_frame(&mut self.stream, &transport::ack(&ivorn, None));
        }
        drop(doc);
        Ok(Incoming::Event {
            ivorn,
            bytes: frame,
        })
    }

    /// Next event (skipping Transport messages), or None on timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Option<(String, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.next_message(left) {
                Ok(Incoming::Event { ivorn, bytes }) => return Some((ivorn, bytes)),
                Ok(Incoming::Transport(_)) => continue,
                Err(FrameError::TimedOut) => return None,
                Err(e) => panic!("subscriber connection failed: {e}"),
            }
        }
    }

    /// True once the broker has closed this connection (reading past any queued data).
    pub fn closed_by_broker(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return false;
            }
            match self.next_message(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => continue,
                Err(FrameError::TimedOut) => return false,
                Err(_) => return true,
            }
        }
    }
}

/// A frame received by a subscriber.
pub enum Incoming {
    Transport(Message),
    Event { ivorn: String, bytes: Vec<u8> },
}

/// A schema-valid VOEvent with this ivorn local ID and `pad` bytes of Description text.
pub fn make_event(local: &str, pad: usize) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://bolide.test/stream#{local}" role="observation" version="2.0">
  <Who>
    <AuthorIVORN>ivo://bolide.test/author</AuthorIVORN>
    <Date>2024-01-01T00:00:00</Date>
  </Who>
  <What>
    <Param name="Packet_Type" dataType="int" value="0"/>
  </What>
  <Description>{}</Description>
</voe:VOEvent>
"#,
        "x".repeat(pad)
    )
    .into_bytes()
}

/// Read a file of the shared corpus.
pub fn read_corpus(rel: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A TCP port that is free now, chosen below the kernel's ephemeral range, so that no
/// port-0 bind elsewhere (another test's broker or client) can take it before the caller
/// binds it.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(32768);
    let base = 10_000usize;
    let span = low.saturating_sub(base).max(1000);
    let seed = std::process::id() as usize * 7919;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + (seed + n * 131) % span) as u16;
        // Free for a dual-stack listener (what bolide binds by default) and for IPv4.
        let v6 = std::net::TcpListener::bind(("::", port)).is_ok();
        let v4 = v6 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if v4 {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Whether a raw socket is closed by the peer without any byte arriving.
pub fn closed_without_a_byte(mut s: TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Connect to `to` from the local IPv4 address `from` (any 127.x.y.z works on Linux), so a
/// test can act as several peers.
pub fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    bolide::sys::connect_from(from, to)
}

/// Raise this test process's open-file limit (floods need thousands of sockets).
pub fn raise_nofile() -> u64 {
    bolide::sys::raise_nofile_limit()
}

/// Threads of a process, from /proc.
pub fn threads_of(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Threads:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The rows of the corpus's MANIFEST.tsv whose `comet_check` is ACCEPT (the packets bolide
/// accepts), in the manifest's order, each as column name -> value.
pub fn accepted_manifest_rows() -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).unwrap();
    let mut rows = text.lines().map(|l| l.split('\t'));
    let names: Vec<&str> = rows.next().expect("a header").collect();
    rows.map(|values| {
        names
            .iter()
            .map(|n| n.to_string())
            .zip(values.map(str::to_string))
            .collect::<std::collections::HashMap<_, _>>()
    })
    .filter(|row| row["comet_check"] == "ACCEPT")
    .collect()
}
