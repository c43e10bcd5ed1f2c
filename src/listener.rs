//! Listening sockets and accept loops: bind (dual-stack by default), check each peer
//! against its whitelist at accept, and give each accepted connection its own thread with
//! an explicitly sized stack (reused from connection to connection: [`crate::pool`]). A
//! refused peer is closed without a byte being sent.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use std::time::Instant;

use log::{error, warn};

use crate::pool::Pool;
use crate::whitelist::{normalize, Whitelist};

/// Most connection threads of one listener kept waiting for the next connection.
pub const MAX_IDLE_THREADS: usize = 64;

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
#[derive(Clone, Copy, Debug)]
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
    fd: AtomicI32,
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
            fd: AtomicI32::new(-1),
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
        let fd = self.fd.load(Ordering::SeqCst);
        if fd > 0 {
            // SAFETY: shutdown(2) on a descriptor we own; the listener is still open (the
            // accept loop closes it only after seeing `stopping`).
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
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

/// Accept until stopped, running `handler` on a thread of its own per allowed connection.
pub fn accept_loop<F>(
    listener: TcpListener,
    whitelist: Whitelist,
    kind: Kind,
    state: Arc<ListenerState>,
    handler: F,
) where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + Clone + 'static,
{
    state.fd.store(listener.as_raw_fd(), Ordering::SeqCst);
    let pool = Pool::new(kind.thread_name(), CONNECTION_STACK, MAX_IDLE_THREADS);
    accept_into(&listener, &whitelist, kind, &state, &handler, &pool);
    pool.close();
}

fn accept_into<F>(
    listener: &TcpListener,
    whitelist: &Whitelist,
    kind: Kind,
    state: &Arc<ListenerState>,
    handler: &F,
    pool: &Arc<Pool>,
) where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + Clone + 'static,
{
    loop {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                if state.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("accepting a {} connection failed: {e}", kind.refusal());
                    // Out of descriptors and the like: do not spin.
                    thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let peer = SocketAddr::new(normalize(peer.ip()), peer.port());
        if !whitelist.allows(peer.ip()) {
            state
                .refusals
                .warn(|| format!("Attempted {} from non-whitelisted {peer}", kind.refusal()));
            drop(stream);
            continue;
        }
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(cap) = state.admit(peer.ip()) {
            state
                .refusals
                .warn(|| format!("refused {} from {peer}: over {cap}", kind.refusal()));
            drop(stream);
            continue;
        }
        let h = handler.clone();
        state.active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(Arc::clone(state), peer.ip());
        let label = format!("{} {peer}", kind.thread_name());
        let started = pool.run(
            label,
            Box::new(move || {
                let _guard = guard;
                h(stream, peer)
            }),
        );
        if let Err(e) = started {
            error!("cannot start a thread for {peer}: {e}; closing the connection");
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
