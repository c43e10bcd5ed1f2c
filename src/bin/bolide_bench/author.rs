//! The author side of VTP: resolve the broker's address, connect with a bounded
//! connect(2) ([`connect_bounded`]), and one author transaction ([`submit`]): send one
//! event, read the ack or nak, close. Used by `ingest`, and by `fanout`/`filter` for the
//! probes and the events they measure.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bolide::frame::FrameReader;
use bolide::sys::DeadlineReader;

use crate::scan::{find, transport_role};

/// How the broker answered one event.
pub enum Outcome {
    Ack,
    Nak(String),
    Error(String),
}

/// One VTP author transaction: connect, send, wait for ack/nak, close.
pub fn submit(addr: SocketAddr, wire: &[u8], timeout: Duration) -> Outcome {
    // As few system calls as an author can make, so the tool's own cost stays small next
    // to the broker's; one write of the whole frame needs no TCP_NODELAY (Nagle never
    // holds back the first segment).
    let mut s = match connect_bounded(addr, timeout) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("connect: {e}")),
    };
    if let Err(e) = s.write_all(wire) {
        return Outcome::Error(format!("send: {e}"));
    }
    let mut fr = FrameReader::new(1 << 20);
    let mut r = DeadlineReader {
        stream: &s,
        deadline: Instant::now() + timeout,
    };
    match fr.read_frame(&mut r) {
        Ok(f) => match transport_role(&f) {
            Some(b"ack") => Outcome::Ack,
            Some(b"nak") => {
                let reason = find(&f, b"<Result>")
                    .and_then(|a| {
                        let a = a + 8;
                        find(&f[a..], b"</Result>")
                            .map(|e| String::from_utf8_lossy(&f[a..a + e]).to_string())
                    })
                    .unwrap_or_else(|| "no reason given".into());
                Outcome::Nak(reason)
            }
            _ => Outcome::Error("reply is neither ack nor nak".into()),
        },
        Err(e) => Outcome::Error(format!("reply: {e}")),
    }
}

/// A blocking connection whose connect(2) and writes both give up after `timeout`: on
/// Linux SO_SNDTIMEO bounds a blocking connect too. socket, setsockopt, connect: three
/// system calls where `TcpStream::connect_timeout` makes six (non-blocking mode on and
/// off, poll, SO_ERROR).
fn connect_bounded(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream at once, which
    // closes it on every path below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    // SAFETY: zeroed sockaddr_in/sockaddr_in6 are valid; connect(2) reads `len` bytes.
    let rc = unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                sa.sin6_flowinfo = a.flowinfo();
                sa.sin6_scope_id = a.scope_id();
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // A blocking connect cut short by SO_SNDTIMEO reports EINPROGRESS.
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            ));
        }
        return Err(e);
    }
    Ok(stream)
}

/// The first address of `host` (a name or a literal address) with `port`.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// connect_bounded builds its own socket addresses: it must reach IPv4 and IPv6
    /// listeners, report a refusal, and give up on a listener that never completes the
    /// handshake (accept queue full) instead of waiting for the kernel's two minutes.
    #[test]
    fn connect_bounded_connects_refuses_and_times_out() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = TcpListener::bind(host) else {
                continue; // no IPv6 loopback on this machine
            };
            let s = connect_bounded(l.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
            let (a, _) = l.accept().unwrap();
            assert_eq!(a.peer_addr().unwrap(), s.local_addr().unwrap());
        }
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = connect_bounded(port, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        let started = Instant::now();
        let timed_out = loop {
            match connect_bounded(addr, Duration::from_millis(300)) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() < 5000, "the accept queue never filled");
        };
        assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut, "{timed_out}");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
