//! The answer to one author submission, and the author's connection that carries it.
//!
//! Once a receiver thread has checked an event and handed it to the dispatcher, it does
//! not wait: the connection travels with the event as a [`ReplyTo`], and whichever thread
//! decides the outcome answers on it — the dispatcher for a duplicate, the committer for
//! a new event once its record is durable — with one non-blocking `send` of the `ack` or
//! `nak` (a few hundred bytes into a send buffer nothing else has used) and a close.
//! The reply is sent with `MSG_MORE` and followed by `shutdown(SHUT_WR)`, so the kernel
//! puts the FIN in the reply's own segment: the author receives one segment (and sends
//! one ACK) instead of two.
//! `shutdown` rather than relying on `close`: a close with unread bytes from the author
//! would reset the connection and discard the unsent reply, where `shutdown` sends it
//! first (and the close then resets). The
//! receiver thread is back in `accept` at once, and an event costs no sleep and wake-up
//! of its receiver thread. A `ReplyTo` dropped unanswered answers "unavailable"; past the
//! author's deadline the connection is closed without a reply, as the protocol's
//! decision table says.
//!
//! A source that is not an author connection but still waits for the outcome (the Kafka
//! consumer, which commits a message's offset only once its event is durable or known)
//! gets a [`Settle`] instead: the verdict goes back on a channel with the source's own
//! token. Both travel as a [`Reply`].

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};

use crate::metrics::{RejectReason, METRICS};
use crate::sys::send_dontwait;
use crate::transport;
use crate::voevent::{nak_text, Rejection};

/// Naks sent to authors for anything but a duplicate (invalid events, refused frames,
/// storage or dispatcher unavailable), for the periodic summary. Duplicates are counted
/// by the dispatcher. One broker per process, so one counter per process.
pub static REJECTED: AtomicU64 = AtomicU64::new(0);

/// Count one nak that is not a duplicate's.
pub fn count_rejected(reason: crate::metrics::RejectReason) {
    REJECTED.fetch_add(1, Ordering::Relaxed);
    crate::metrics::METRICS.rejected(reason);
}

/// The outcome of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded durably: send `ack`.
    Accepted,
    /// Send `nak` with this reason.
    Rejected(Rejection),
}

/// An author's connection waiting for the verdict on its event.
pub struct ReplyTo {
    stream: Option<TcpStream>,
    peer: SocketAddr,
    ivorn: String,
    local_ivo: Arc<str>,
    deadline: Instant,
    /// When the event was checked and handed on (the start of its ack latency).
    checked: Instant,
}

impl ReplyTo {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        ivorn: String,
        local_ivo: Arc<str>,
        deadline: Instant,
    ) -> ReplyTo {
        ReplyTo {
            stream: Some(stream),
            peer,
            ivorn,
            local_ivo,
            deadline,
            checked: Instant::now(),
        }
    }

    /// Answer and close (past the author's deadline: close without a reply).
    pub fn send(mut self, verdict: Verdict) {
        self.answer(verdict, false);
    }

    /// Answer and close even at the deadline: for the receiver itself, when the event
    /// could not even be handed over before it (a full dispatcher inbox).
    pub fn send_at_deadline(mut self, verdict: Verdict) {
        self.answer(verdict, true);
    }

    fn answer(&mut self, verdict: Verdict, late_ok: bool) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let (peer, ivorn) = (self.peer, self.ivorn.as_str());
        if !late_ok && Instant::now() > self.deadline {
            warn!("{ivorn} from author {peer}: no verdict within the author deadline; closing without a reply");
            return;
        }
        let msg = match &verdict {
            Verdict::Accepted => transport::ack(ivorn, Some(&self.local_ivo)),
            Verdict::Rejected(r) => {
                // Duplicates are logged by the dispatcher; everything else here.
                if *r != Rejection::Duplicate {
                    info!("rejected {ivorn} from author {peer}: {r}");
                    count_rejected(RejectReason::of(r).unwrap_or(RejectReason::Invalid));
                }
                transport::nak(ivorn, Some(&self.local_ivo), &nak_text(r))
            }
        };
        let frame = crate::frame::encode(&msg);
        // MSG_MORE holds the reply back until the FIN joins it (module docs).
        match send_dontwait(&stream, &frame, libc::MSG_MORE) {
            Ok(n) if n == frame.len() => {
                if verdict == Verdict::Accepted {
                    METRICS.ack_latency.observe(self.checked.elapsed());
                }
                debug!("answered author {peer} for {ivorn}")
            }
            Ok(_) => warn!("could not reply to author {peer}: its connection is not taking data"),
            Err(e) => warn!("could not reply to author {peer}: {e}"),
        }
        // The FIN goes out with the reply; dropping `stream` then closes it.
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// The verdict on one submission from a source that is not an author connection,
/// sent back to that source with its token.
#[derive(Debug)]
pub struct Settled {
    pub token: u64,
    pub verdict: Verdict,
}

/// A source's wait for the verdict on one submission: answered once, on its channel.
/// Dropped unanswered (the committer stopped), it answers "unavailable", so the source
/// never counts the event as done.
pub struct Settle {
    tx: Option<crossbeam_channel::Sender<Settled>>,
    token: u64,
}

impl Settle {
    pub fn new(tx: crossbeam_channel::Sender<Settled>, token: u64) -> Settle {
        Settle {
            tx: Some(tx),
            token,
        }
    }

    fn answer(&mut self, verdict: Verdict) {
        if let Some(tx) = self.tx.take() {
            // A source that has stopped no longer needs the answer.
            let _ = tx.send(Settled {
                token: self.token,
                verdict,
            });
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.answer(Verdict::Rejected(Rejection::Unavailable));
    }
}

/// Who waits for the verdict on a submission.
pub enum Reply {
    /// An author's connection: answered with `ack` or `nak`.
    Author(ReplyTo),
    /// Another source (the Kafka consumer): answered on its channel.
    Source(Settle),
}

impl Reply {
    /// Answer (and, for an author, close).
    pub fn send(self, verdict: Verdict) {
        match self {
            Reply::Author(r) => r.send(verdict),
            Reply::Source(mut s) => s.answer(verdict),
        }
    }
}

impl From<ReplyTo> for Reply {
    fn from(r: ReplyTo) -> Reply {
        Reply::Author(r)
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        self.answer(Verdict::Rejected(Rejection::Unavailable), false);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::FrameReader;
    use crate::transport::Role;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A connected pair: (the author's end, the broker's ReplyTo).
    pub(crate) fn pair(deadline: Instant) -> (TcpStream, ReplyTo) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let author = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (broker, peer) = l.accept().unwrap();
        author
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let r = ReplyTo::new(
            broker,
            peer,
            "ivo://x.y/z#1".into(),
            "ivo://x.y/broker".into(),
            deadline,
        );
        (author, r)
    }

    /// The reply the author got, if any, before the connection closed.
    pub(crate) fn reply_of(mut author: TcpStream) -> Option<transport::Message> {
        let mut fr = FrameReader::new(1 << 16);
        fr.read_frame(&mut author)
            .ok()
            .map(|f| transport::parse(&f).unwrap())
    }

    #[test]
    fn ack_then_close() {
        let (author, r) = pair(Instant::now() + Duration::from_secs(10));
        let t = std::thread::spawn(move || r.send(Verdict::Accepted));
        let m = reply_of(author).expect("a reply");
        t.join().unwrap();
        assert_eq!(m.role, Some(Role::Ack));
        assert_eq!(m.origin.as_deref(), Some("ivo://x.y/z#1"));
    }

    /// Segments the author's socket has received (`tcpi_segs_in`, at byte 140 of the
    /// kernel's `struct tcp_info` since Linux 4.2; glibc's struct stops before it).
    fn segments_in(s: &TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        let mut info = [0u8; 256];
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: getsockopt into a writable buffer of the given length.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        assert!(len >= 144, "kernel tcp_info too short for tcpi_segs_in");
        u32::from_ne_bytes(info[140..144].try_into().unwrap())
    }

    /// Read one frame and then the end of the stream.
    fn frame_then_eof(author: &mut TcpStream) -> Vec<u8> {
        use std::io::Read as _;
        let frame = FrameReader::new(1 << 16).read_frame(author).unwrap();
        let mut rest = Vec::new();
        author.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        frame
    }

    /// The reply and the FIN travel in one segment: the author's socket receives the
    /// SYN-ACK and then one segment, where a plain write and close take two.
    #[test]
    fn reply_and_fin_share_one_segment() {
        use std::io::Write as _;
        let (mut author, r) = pair(Instant::now() + Duration::from_secs(10));
        r.send(Verdict::Accepted);
        let ours = frame_then_eof(&mut author);
        let ours_segments = segments_in(&author);

        // The same reply, written and closed the ordinary way.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut plain_author = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut broker, _) = l.accept().unwrap();
        broker.write_all(&crate::frame::encode(&ours)).unwrap();
        drop(broker);
        assert_eq!(frame_then_eof(&mut plain_author), ours);
        let plain_segments = segments_in(&plain_author);
        assert_eq!(
            (ours_segments, plain_segments),
            (2, 3),
            "segments received (SYN-ACK, reply, FIN): with MSG_MORE + shutdown, then plain"
        );
    }

    /// An author that sent more than its event still gets its reply: the close then
    /// resets the connection (unread bytes), but only after the reply has gone out.
    #[test]
    fn reply_survives_unread_bytes_from_the_author() {
        use std::io::Write as _;
        let (mut author, r) = pair(Instant::now() + Duration::from_secs(10));
        // On loopback the bytes are in the broker's receive queue when write returns.
        author.write_all(b"trailing bytes nobody reads").unwrap();
        r.send(Verdict::Accepted);
        let m = reply_of(author).expect("the reply, before the reset");
        assert_eq!(m.role, Some(Role::Ack));
    }

    #[test]
    fn dropped_unanswered_means_unavailable() {
        let (author, r) = pair(Instant::now() + Duration::from_secs(10));
        drop(r);
        let m = reply_of(author).expect("a reply");
        assert_eq!(m.role, Some(Role::Nak));
        assert_eq!(
            m.result.as_deref(),
            Some("Event rejected: broker unavailable, try again later")
        );
    }

    #[test]
    fn past_the_deadline_closes_without_reply() {
        let (author, r) = pair(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        r.send(Verdict::Accepted);
        assert!(reply_of(author).is_none());
    }

    #[test]
    fn at_the_deadline_the_receiver_still_says_unavailable() {
        let (author, r) = pair(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        r.send_at_deadline(Verdict::Rejected(Rejection::Unavailable));
        let m = reply_of(author).expect("a reply");
        assert_eq!(m.role, Some(Role::Nak));
    }
}
