//! Listening sockets and the threads that accept on them: bind (dual-stack by default),
//! check each peer against its whitelist and the connection caps at accept, and serve each
//! admitted connection on a thread of its own with an explicitly sized stack. A refused
//! peer is closed without a byte being sent.
//!
//! Connection threads accept for themselves (leader/followers, as Apache's worker MPM
//! does): idle threads all block in `accept` on the shared listening socket, the kernel
//! hands each new connection to exactly one of them, and that thread serves it, so a
//! connection costs no hand-off between threads. A thread that takes the last waiting
//! place starts a spare first, so someone is always accepting; after its connection it
//! goes back to `accept` unless [`MAX_IDLE_THREADS`] are already waiting, and an idle
//! thread retires after [`IDLE_TIMEOUT`] if others are waiting. Reuse matters: starting a
//! thread costs three TLB-shootdown interrupts on every CPU (Rust's guard-paged signal
//! stack is mapped, protected and unmapped; glibc madvises the cached stack), which with
//! one author connection per event was a tenth of the broker's CPU under ingest load.
//! While it serves a connection, a thread carries the peer in its kernel name (what
//! `top -H` and `ps -L` show), e.g. `author 192.0.2.7:4`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use std::time::Instant;

use log::{error, warn};

use crate::whitelist::{normalize, Whitelist};

/// Most threads of one listener kept waiting in `accept` for the next connection.
pub const MAX_IDLE_THREADS: usize = 64;
/// How long a thread waits in `accept` before it retires (if others are waiting).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Stack for connection threads. Nothing on these threads recurses deeply (the XML parser
/// is iterative and the schema walk is bounded by the 64-level depth limit).
pub const CONNECTION_STACK: usize = 256 * 1024;

/// Bind a listener. `::` on Linux accepts IPv4 too (as v4-mapped addresses); on a host
/// without IPv6, `::` falls back to `0.0.0.0` with a warning.
pub fn bind(addr: IpAddr, port: u16) -> io::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::new(addr, port)) {
        Err(e)
            if addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                ) =>
        {
            warn!("IPv6 is not available ({e}); listening on IPv4 only");
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        }
        other => other,
    }
}

/// Which port a listener serves, for log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Authors,
    Subscribers,
}

impl Kind {
    fn thread_name(self) -> &'static str {
        match self {
            Kind::Authors => "author",
            Kind::Subscribers => "subscriber",
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Kind::Authors => "submission",
            Kind::Subscribers => "subscription",
        }
    }
}

/// Connection caps: a total shared by every listener, and one per peer address for each.
#[derive(Clone, Debug)]
pub struct Caps {
    /// Connections open now, over all listeners (shared counter).
    pub total: Arc<AtomicUsize>,
    /// Most connections open at once over all listeners.
    pub max_total: usize,
    /// Most connections open at once from one address, on this listener.
    pub per_address: usize,
}

impl Caps {
    /// No limits (for tests of other things).
    pub fn unlimited() -> Caps {
        Caps {
            total: Arc::new(AtomicUsize::new(0)),
            max_total: usize::MAX,
            per_address: usize::MAX,
        }
    }
}

/// Log lines that a flood could multiply: at most one per second, with the number of
/// events folded into it.
#[derive(Default)]
pub struct RateLimitedLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    /// Log `msg` (at warn) unless a line went out less than a second ago; then count it.
    pub fn warn(&self, msg: impl FnOnce() -> String) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match st.0 {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => st.1 += 1,
            _ => {
                let suppressed = std::mem::take(&mut st.1);
                st.0 = Some(now);
                if suppressed > 0 {
                    warn!("{} ({suppressed} more like it in the last second)", msg());
                } else {
                    warn!("{}", msg());
                }
            }
        }
    }
}

/// Shared between an accept loop, its connection threads and the shutdown path.
pub struct ListenerState {
    /// Set by [`ListenerState::stop`]; the accept loop returns.
    pub stopping: AtomicBool,
    /// Connection threads running now.
    pub active: AtomicUsize,
    /// The listening socket, kept open here until [`ListenerState::stop`] has shut it
    /// down, so the descriptor cannot be closed and reused under it.
    listener: Mutex<Option<Arc<TcpListener>>>,
    /// Threads waiting in `accept` now (or about to).
    waiting: AtomicUsize,
    caps: Caps,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refusals: RateLimitedLog,
}

impl Default for ListenerState {
    fn default() -> Self {
        ListenerState::new(Caps::unlimited())
    }
}

impl ListenerState {
    /// A listener state under these caps.
    pub fn new(caps: Caps) -> ListenerState {
        ListenerState {
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            listener: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            caps,
            per_ip: Mutex::new(HashMap::new()),
            refusals: RateLimitedLog::default(),
        }
    }

    /// Count a new connection from `ip`, or say which cap it exceeds.
    fn admit(&self, ip: IpAddr) -> Result<(), &'static str> {
        let total = self.caps.total.fetch_add(1, Ordering::SeqCst) + 1;
        if total > self.caps.max_total {
            self.caps.total.fetch_sub(1, Ordering::SeqCst);
            return Err("the total connection cap (--max-connections)");
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.caps.per_address {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            self.caps.total.fetch_sub(1, Ordering::SeqCst);
            return Err("the per-address connection cap");
        }
        *n += 1;
        Ok(())
    }

    /// Undo [`ListenerState::admit`].
    fn release(&self, ip: IpAddr) {
        self.caps.total.fetch_sub(1, Ordering::SeqCst);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Make the accept loop return: flag it, then shut the listening socket down so the
    /// blocked `accept` wakes up.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(l) = listener {
            // SAFETY: shutdown(2) on the listening socket, kept open by the Arc we hold.
            unsafe {
                libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
    }

    /// Connection threads still running.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

/// Decrements the counts when a connection thread ends, however it ends.
struct ActiveGuard(Arc<ListenerState>, IpAddr);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.release(self.1);
    }
}

/// What the accepting threads of one listener share.
struct Acceptors<F> {
    listener: Arc<TcpListener>,
    whitelist: Whitelist,
    kind: Kind,
    state: Arc<ListenerState>,
    handler: F,
}

/// Start accepting on `listener` (until [`ListenerState::stop`]): each admitted
/// connection is served by `handler` on a thread of its own (see the module comment).
pub fn start<F>(
    listener: TcpListener,
    whitelist: Whitelist,
    kind: Kind,
    state: Arc<ListenerState>,
    handler: F,
) -> io::Result<()>
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    // accept(2) honours SO_RCVTIMEO: that is how idle threads notice they are idle.
    set_accept_timeout(&listener, IDLE_TIMEOUT)?;
    let listener = Arc::new(listener);
    *state.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&listener));
    let shared = Arc::new(Acceptors {
        listener,
        whitelist,
        kind,
        state,
        handler,
    });
    spawn_acceptor(&shared)
}

fn spawn_acceptor<F>(shared: &Arc<Acceptors<F>>) -> io::Result<()>
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    shared.state.waiting.fetch_add(1, Ordering::SeqCst);
    let s = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(shared.kind.thread_name().to_string())
        .stack_size(CONNECTION_STACK)
        .spawn(move || accept_and_serve(&s));
    if spawned.is_err() {
        shared.state.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    spawned.map(|_| ())
}

/// One thread's life: accept, serve, accept again (see the module comment).
fn accept_and_serve<F>(a: &Arc<Acceptors<F>>)
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let state = &a.state;
    let idle_name = format!("{} idle", a.kind.thread_name());
    set_kernel_name(&idle_name);
    loop {
        // `waiting` counts this thread from here until accept returns.
        let accepted = a.listener.accept();
        let others = state.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if others > 0 {
                    return; // idle, and others are waiting: retire
                }
                state.waiting.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("accepting a {} connection failed: {e}", a.kind.refusal());
                    // Out of descriptors and the like: do not spin.
                    thread::sleep(Duration::from_millis(100));
                }
                state.waiting.fetch_add(1, Ordering::SeqCst);
                continue;
            }
        };
        // Accepted sockets inherit the listener's SO_RCVTIMEO. The receiver sets its
        // deadline before every read (receiver::DeadlineReader), so only subscriber
        // sockets are reset here, saving authors a system call per event.
        if a.kind == Kind::Subscribers {
            let _ = stream.set_read_timeout(None);
        }
        let peer = SocketAddr::new(normalize(peer.ip()), peer.port());
        if admit(a, peer, others) {
            set_kernel_name(&format!("{} {peer}", a.kind.thread_name()));
            let _guard = ActiveGuard(Arc::clone(state), peer.ip());
            (a.handler)(stream, peer);
            set_kernel_name(&idle_name);
        } else {
            drop(stream);
        }
        if state.stopping.load(Ordering::SeqCst)
            || state.waiting.load(Ordering::SeqCst) >= MAX_IDLE_THREADS
        {
            return;
        }
        state.waiting.fetch_add(1, Ordering::SeqCst);
    }
}

/// Whitelist and caps for a just-accepted connection; if admitted, make sure another
/// thread is accepting (`others` are waiting besides this one) before it is served.
/// `false`: the connection was refused and closed.
fn admit<F>(a: &Arc<Acceptors<F>>, peer: SocketAddr, others: usize) -> bool
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let state = &a.state;
    let refusal = a.kind.refusal();
    if !a.whitelist.allows(peer.ip()) {
        state
            .refusals
            .warn(|| format!("Attempted {refusal} from non-whitelisted {peer}"));
        return false;
    }
    if let Err(cap) = state.admit(peer.ip()) {
        state
            .refusals
            .warn(|| format!("refused {refusal} from {peer}: over {cap}"));
        return false;
    }
    if others == 0 {
        if let Err(e) = spawn_acceptor(a) {
            state.release(peer.ip());
            error!("cannot start a thread for {peer}: {e}; closing the connection");
            return false;
        }
    }
    state.active.fetch_add(1, Ordering::SeqCst);
    true
}

fn set_accept_timeout(listener: &TcpListener, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a valid timeval on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set the calling thread's kernel name (at most 15 bytes are kept).
fn set_kernel_name(label: &str) {
    let short: String = label.chars().take(15).collect();
    if let Ok(c) = std::ffi::CString::new(short) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0);
        }
    }
}

/// Raise this process's open-file soft limit to its hard limit; returns the soft limit now
/// in force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialized struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// A listener whose handler reports its thread and echoes one byte.
    fn echo_listener(
        caps: Caps,
    ) -> (
        SocketAddr,
        Arc<ListenerState>,
        mpsc::Receiver<thread::ThreadId>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(ListenerState::new(caps));
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        start(
            l,
            Whitelist::allow_all(),
            Kind::Authors,
            Arc::clone(&state),
            move |mut s: TcpStream, _| {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = tx.lock().unwrap().send(thread::current().id());
                    let _ = s.write_all(&b);
                }
            },
        )
        .unwrap();
        (addr, state, rx)
    }

    fn round_trip(addr: SocketAddr) -> TcpStream {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"x").unwrap();
        c
    }

    /// Sequential connections are served by the same (reused) thread.
    #[test]
    fn threads_are_reused() {
        let (addr, state, rx) = echo_listener(Caps::unlimited());
        let mut ids = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut c = round_trip(addr);
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            ids.insert(rx.recv().unwrap());
            drop(c);
            assert!(wait_for(|| state.active() == 0));
        }
        // One thread serving and one spare accepting: at most two ever served.
        assert!(
            ids.len() <= 2,
            "{} threads for 20 sequential connections",
            ids.len()
        );
        state.stop();
    }

    /// Connections open at the same time each have a thread of their own: the handler of
    /// the first blocks until its byte comes, and the others are served meanwhile.
    #[test]
    fn concurrent_connections_each_get_a_thread() {
        let (addr, state, rx) = echo_listener(Caps::unlimited());
        let silent: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(
            wait_for(|| state.active() == 5),
            "active {}",
            state.active()
        );
        let mut c = round_trip(addr);
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        rx.recv().unwrap();
        drop(silent);
        assert!(wait_for(|| state.active() == 0));
        state.stop();
    }

    /// Over the per-address cap the connection is closed at once, without a byte.
    #[test]
    fn over_the_cap_is_closed() {
        let caps = Caps {
            total: Arc::new(AtomicUsize::new(0)),
            max_total: 100,
            per_address: 2,
        };
        let (addr, state, _rx) = echo_listener(caps);
        let _held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(wait_for(|| state.active() == 2));
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
        state.stop();
    }

    /// After stop, the port no longer accepts and the waiting threads are gone.
    #[test]
    fn stop_closes_the_port() {
        let (addr, state, _rx) = echo_listener(Caps::unlimited());
        drop(round_trip(addr));
        state.stop();
        assert!(wait_for(|| state.waiting.load(Ordering::SeqCst) == 0));
        assert!(wait_for(|| TcpStream::connect(addr).is_err()));
    }
}
