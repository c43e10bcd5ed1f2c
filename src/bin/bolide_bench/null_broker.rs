//! `bolide-bench null-broker`: the floor a real broker is compared against.
//!
//! A VTP broker cut down to the work no broker can avoid: accept an author, read its one
//! frame, write an ack, close; write that frame to every subscriber; read (and discard)
//! what the subscribers send back. Nothing else: no parsing beyond a byte search for
//! `ivorn="`, no validation, no duplicate check, no database, no filters, no iamalive, no
//! logging per event. Measured by the other modes, it gives the cost of the sockets alone
//! on this machine, so that bolide's figures can be read as a distance from that floor.
//!
//! Threads: the main thread is the whole author side, one connection at a time, with the
//! fan-out done inline, so an event never changes threads; one thread accepts
//! subscribers (sends each `authenticate`, then adds it to the list); one drains the
//! subscribers' acks every 200 ms so their buffers never fill.
//!
//! Order: the event goes to the subscribers before the author gets its ack. That gives
//! the lowest end-to-end latency: acking first would delay every copy by the ack's write
//! and close, and a back-to-back author's next event, sent on the ack, would queue behind
//! the rest of the previous fan-out. (It costs the author one fan-out of ack latency.)

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;
use bolide::frame::write_frame;
use bolide::sys::{DeadlineReader, NonBlocking};

/// A broker doing only the unavoidable socket work, the floor the others are measured
/// against (runs until killed).
#[derive(FromArgs)]
#[argh(subcommand, name = "null-broker")]
pub struct NullBrokerArgs {
    /// port to listen on for authors (default 0: chosen by the kernel)
    #[argh(option, default = "0")]
    receive_port: u16,
    /// port to listen on for subscribers (default 0: chosen by the kernel)
    #[argh(option, default = "0")]
    broadcast_port: u16,
}

const LOCAL_IVO: &str = "ivo://bolide.bench/null-broker";
/// An author must deliver its whole frame within this.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Per write to a subscriber; a subscriber that stalls longer is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest frame accepted (bolide's default); a larger length prefix closes the connection.
const MAX_EVENT: usize = 1 << 20;
const DRAIN_EVERY: Duration = Duration::from_millis(200);

type Subscribers = Mutex<Vec<Arc<TcpStream>>>;

fn lock(subs: &Subscribers) -> MutexGuard<'_, Vec<Arc<TcpStream>>> {
    subs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Listen on `host` (the global `--host`), print the two port lines, serve forever.
pub fn run(host: &str, a: &NullBrokerArgs) -> ExitCode {
    match start(host, a) {
        Ok((authors, subs)) => serve_authors(authors, &subs),
        Err(e) => {
            let _ = writeln!(io::stderr(), "bolide-bench: null-broker: {e}");
            ExitCode::from(2)
        }
    }
}

fn start(host: &str, a: &NullBrokerArgs) -> Result<(TcpListener, Arc<Subscribers>), String> {
    let bind = |port: u16| {
        let addr = crate::author::resolve(host, port)?;
        let l = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        // As bolide does: thousands of subscribers connect in a burst.
        bolide::sys::set_listen_backlog(&l, bolide::listener::LISTEN_BACKLOG)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let at = l.local_addr().map_err(|e| e.to_string())?;
        Ok::<_, String>((l, at))
    };
    let (authors, a_at) = bind(a.receive_port)?;
    let (subscribers, s_at) = bind(a.broadcast_port)?;
    let subs = Arc::new(Subscribers::default());
    let (s1, s2) = (Arc::clone(&subs), Arc::clone(&subs));
    let no_thread = |e: io::Error| format!("cannot start a thread: {e}");
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_subscribers(subscribers, &s1))
        .map_err(no_thread)?;
    thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain(&s2))
        .map_err(no_thread)?;
    // The lines bolide logs, in the shape tests/bench/run.sh reads.
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "listening for authors on {a_at} (null broker)");
    let _ = writeln!(err, "listening for subscribers on {s_at} (null broker)");
    Ok((authors, subs))
}

/// Accept, read one frame, fan it out, ack, close; one author at a time.
fn serve_authors(l: TcpListener, subs: &Subscribers) -> ! {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((stream, _)) = l.accept() else {
            // Out of descriptors or the like: wait instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(total) = read_frame(&stream, &mut buf) else {
            continue; // nothing, garbage, too big or too slow: just close
        };
        let frame = &buf[..total];
        let reply = match crate::scan::attr_in(&frame[4..], b"ivorn=\"", total) {
            Some(ivorn) => {
                // The frame is written from this buffer: no copy, no hand-off.
                lock(subs).retain(|s| (&**s).write_all(frame).is_ok());
                bolide::transport::ack(&String::from_utf8_lossy(ivorn), Some(LOCAL_IVO))
            }
            None => bolide::transport::nak("", Some(LOCAL_IVO), "no ivorn"),
        };
        // A normal ack (under 1 KB) fits a fresh socket's empty send buffer and cannot
        // block; only one echoing a huge ivorn needs the timeout (and its syscall).
        if reply.len() > 4096 {
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        }
        let _ = write_frame(&mut &stream, &reply);
    }
}

/// One whole frame, length prefix included, into `buf` (grown up to the limit); returns
/// its length. Every read shares one absolute deadline.
fn read_frame(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut r = DeadlineReader {
        stream,
        deadline: Instant::now() + READ_DEADLINE,
    };
    let mut have = 0;
    while have < 4 {
        match r.read(&mut buf[have..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_EVENT {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let total = 4 + len;
    if buf.len() < total {
        buf.resize(total, 0);
    }
    if have < total {
        r.read_exact(&mut buf[have..total])?;
    }
    Ok(total)
}

/// Send each new subscriber `authenticate`, then add it to the fan-out list.
fn accept_subscribers(l: TcpListener, subs: &Subscribers) {
    loop {
        let Ok((s, _)) = l.accept() else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = s.set_nodelay(true);
        let hello = bolide::transport::authenticate(LOCAL_IVO);
        if s.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok() && write_frame(&mut &s, &hello).is_ok()
        {
            lock(subs).push(Arc::new(s));
        }
    }
}

/// Every 200 ms, read and discard whatever each subscriber sent (acks, authenticate
/// answers) without blocking; drop the subscribers that closed.
fn drain(subs: &Subscribers) {
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        thread::sleep(DRAIN_EVERY);
        // A snapshot, so that the fan-out never waits for this pass.
        let snapshot = lock(subs).clone();
        let mut dead = Vec::new();
        for s in &snapshot {
            loop {
                match NonBlocking(s).read(&mut sink) {
                    Ok(n) if n > 0 => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    _ => {}
                }
                dead.push(Arc::clone(s)); // closed by the peer, or a hard error
                break;
            }
        }
        if !dead.is_empty() {
            lock(subs).retain(|s| !dead.iter().any(|d| Arc::ptr_eq(s, d)));
        }
    }
}
