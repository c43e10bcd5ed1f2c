//! The HTTP server: an accept thread that checks `--http-whitelist` and hands each
//! connection to one of [`WORKERS`] request threads through a short bounded queue. A
//! request is `GET` or `HEAD` with its head (request line and headers) at most
//! [`MAX_HEAD`] bytes and in at most [`READ_LIMIT`]; the response is written under
//! [`WRITE_LIMIT`] and the connection closed. A peer outside the whitelist gets `403`, a
//! connection that finds the queue full gets `503`, both without a worker; a slow client
//! holds one worker for at most the read and write limits, and never any thread of the
//! broker's.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, TrySendError};
use log::{debug, info, warn};

use super::{route, Context, HttpConfig, Reply};
use crate::whitelist::normalize;

/// Request threads.
pub const WORKERS: usize = 4;
/// Connections accepted and waiting for a worker; more get `503`.
const QUEUE: usize = 32;
/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head.
pub const READ_LIMIT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
pub const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for a client to close after its response.
const LINGER: Duration = Duration::from_millis(200);
/// Stack of the server's threads.
const STACK: usize = 256 * 1024;

/// The running server; [`HttpServer::stop`] ends its threads.
pub struct HttpServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The connection each worker is serving, shut down by [`HttpServer::stop`] so that
    /// a slow client cannot hold the broker's shutdown for the time limits.
    serving: Arc<Serving>,
}

/// One slot per worker: the connection it serves now.
type Serving = Mutex<Vec<Option<TcpStream>>>;

impl HttpServer {
    /// Bind `cfg.addr` and start the threads.
    pub fn start(cfg: &HttpConfig, ctx: Arc<Context>) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(cfg.addr)?;
        let addr = listener.local_addr()?;
        info!("serving HTTP on {addr} (whitelist: {})", cfg.whitelist);
        let stopping = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<(TcpStream, SocketAddr)>(QUEUE);
        let mut threads = Vec::with_capacity(WORKERS + 1);
        let serving: Arc<Serving> = Arc::new(Mutex::new((0..WORKERS).map(|_| None).collect()));
        for i in 0..WORKERS {
            let rx = rx.clone();
            let ctx = Arc::clone(&ctx);
            let serving = Arc::clone(&serving);
            threads.push(
                thread::Builder::new()
                    .name(format!("http {i}"))
                    .stack_size(STACK)
                    .spawn(move || work(&rx, &ctx, &serving, i))?,
            );
        }
        let whitelist = cfg.whitelist.clone();
        let stop = Arc::clone(&stopping);
        threads.push(
            thread::Builder::new()
                .name("http accept".into())
                .stack_size(STACK)
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let stream = match conn {
                            Ok(s) => s,
                            Err(e) => {
                                warn!("HTTP accept on {addr}: {e}");
                                thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                        };
                        let Ok(peer) = stream.peer_addr() else {
                            continue;
                        };
                        if !whitelist.allows(normalize(peer.ip())) {
                            info!("HTTP peer {peer} refused: not in --http-whitelist");
                            refuse(&stream, 403, "not in --http-whitelist");
                            continue;
                        }
                        match tx.try_send((stream, peer)) {
                            Ok(()) => {}
                            Err(TrySendError::Full((s, _))) => {
                                warn!("HTTP peer {peer} refused: {QUEUE} requests already waiting");
                                refuse(&s, 503, "busy");
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                })?,
        );
        Ok(HttpServer {
            addr,
            stopping,
            threads,
            serving,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let the workers finish their requests (within the time limits),
    /// and join the threads.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wake the accept thread; its channel's end then stops the workers.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(2);
        if let Some(t) = self.threads.last() {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        // No connection reaches a worker any more: end those being served.
        for s in lock(&self.serving).iter().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.into_iter().rev() {
            let _ = t.join();
        }
    }
}

/// Answer without a worker: one non-blocking write, then close.
fn refuse(stream: &TcpStream, status: u16, why: &str) {
    let _ = stream.set_nonblocking(true);
    let reply = Reply::text(status, why);
    let _ = (&*stream).write_all(&head(&reply, reply.body.len()));
    let _ = (&*stream).write_all(&reply.body);
    let _ = stream.shutdown(Shutdown::Both);
}

fn lock(s: &Serving) -> std::sync::MutexGuard<'_, Vec<Option<TcpStream>>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn work(rx: &Receiver<(TcpStream, SocketAddr)>, ctx: &Arc<Context>, serving: &Serving, i: usize) {
    while let Ok((stream, peer)) = rx.recv() {
        lock(serving)[i] = stream.try_clone().ok();
        if let Err(e) = serve(&stream, peer, ctx) {
            debug!("HTTP peer {peer}: {e}");
        }
        lock(serving)[i] = None;
        linger(&stream);
    }
}

/// Close after the client has read the response: send our FIN, then read (and discard)
/// what it still sends, briefly, so that closing with unread bytes (a request head that
/// was too long, a body) does not reset the connection before the response arrives.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Why a request could not be read.
enum BadRequest {
    Io(io::Error),
    TooLarge,
    TimedOut,
}

fn serve(stream: &TcpStream, peer: SocketAddr, ctx: &Arc<Context>) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_LIMIT))?;
    let reply = match read_head(stream) {
        Err(BadRequest::Io(e)) => return Err(e),
        Err(BadRequest::TooLarge) => Reply::text(431, "request head too large"),
        Err(BadRequest::TimedOut) => Reply::text(408, "request not received in time"),
        Ok(request) => {
            let line = request.lines().next().unwrap_or("");
            let mut parts = line.split(' ');
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            debug!("HTTP peer {peer}: {method} {target}");
            let reply = match method {
                "GET" | "HEAD" => route(ctx, path, query),
                _ => Reply::text(405, "only GET and HEAD"),
            };
            if method == "HEAD" {
                let mut out = stream;
                return out.write_all(&head(&reply, reply.body.len()));
            }
            reply
        }
    };
    let mut out = stream;
    out.write_all(&head(&reply, reply.body.len()))?;
    out.write_all(&reply.body)?;
    out.flush()
}

/// Read up to the blank line ending the head, within [`MAX_HEAD`] and [`READ_LIMIT`].
fn read_head(stream: &TcpStream) -> Result<String, BadRequest> {
    let deadline = Instant::now() + READ_LIMIT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BadRequest::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(BadRequest::Io)?;
        let n = match (&*stream).read(&mut chunk) {
            Ok(0) => {
                return Err(BadRequest::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(BadRequest::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BadRequest::Io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > MAX_HEAD {
                return Err(BadRequest::TooLarge);
            }
            buf.truncate(end);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return Err(BadRequest::TooLarge);
        }
    }
}

/// The status line and headers of `reply`.
fn head(reply: &Reply, len: usize) -> Vec<u8> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.status, reply.content_type
    )
    .into_bytes()
}
