//! Listening sockets and accept loops: bind (dual-stack by default), check each peer
//! against its whitelist at accept, and give each accepted connection its own thread with
//! an explicitly sized stack. A refused peer is closed without a byte being sent.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{error, warn};

use crate::whitelist::{normalize, Whitelist};

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
    fn refusal(self) -> &'static str {
        match self {
            Kind::Authors => "submission",
            Kind::Subscribers => "subscription",
        }
    }
}

/// Shared between an accept loop, its connection threads and the shutdown path.
#[derive(Default)]
pub struct ListenerState {
    /// Set by [`ListenerState::stop`]; the accept loop returns.
    pub stopping: AtomicBool,
    /// Connection threads running now.
    pub active: AtomicUsize,
    fd: AtomicI32,
}

impl ListenerState {
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

/// Decrements the active count when a connection thread ends, however it ends.
struct ActiveGuard(Arc<ListenerState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accept until stopped, spawning `handler` on a new thread per allowed connection.
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
            warn!("Attempted {} from non-whitelisted {peer}", kind.refusal());
            drop(stream);
            continue;
        }
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let h = handler.clone();
        state.active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(Arc::clone(&state));
        let name = match kind {
            Kind::Authors => format!("author {peer}"),
            Kind::Subscribers => format!("subscriber {peer}"),
        };
        let spawned = thread::Builder::new()
            .name(name)
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _guard = guard;
                h(stream, peer)
            });
        if let Err(e) = spawned {
            error!("cannot start a thread for {peer}: {e}; closing the connection");
        }
    }
}
