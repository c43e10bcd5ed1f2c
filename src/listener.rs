//! Listening sockets and accept loops: bind (dual-stack by default), check each peer
//! against its whitelist at accept, and give each accepted connection its own thread with
//! an explicitly sized stack. A refused peer is closed without a byte being sent.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
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

/// Accept forever, spawning `handler` on a new thread per allowed connection.
pub fn accept_loop<F>(listener: TcpListener, whitelist: Whitelist, kind: Kind, handler: F)
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + Clone + 'static,
{
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
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
        let h = handler.clone();
        let name = match kind {
            Kind::Authors => format!("author {peer}"),
            Kind::Subscribers => format!("subscriber {peer}"),
        };
        let spawned = thread::Builder::new()
            .name(name)
            .stack_size(CONNECTION_STACK)
            .spawn(move || h(stream, peer));
        if let Err(e) = spawned {
            error!("cannot start a thread for {peer}: {e}; closing the connection");
        }
    }
}
