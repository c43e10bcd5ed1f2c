//! The answer to one author submission, and the author's connection that carries it.
//!
//! Once a receiver thread has checked an event and handed it to the dispatcher, it does
//! not wait: the connection travels with the event as a [`ReplyTo`], and whichever thread
//! decides the outcome answers on it — the dispatcher for a duplicate, the committer for
//! a new event once its record is durable — with one non-blocking `send` of the `ack` or
//! `nak` (a few hundred bytes into a send buffer nothing else has used) and a close. The
//! receiver thread is back in `accept` at once, and an event costs no sleep and wake-up
//! of its receiver thread. A `ReplyTo` dropped unanswered answers "unavailable"; past the
//! author's deadline the connection is closed without a reply, as the protocol's
//! decision table says.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};

use crate::outbox::send_nonblocking;
use crate::transport;
use crate::voevent::{nak_text, Rejection};

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
                }
                transport::nak(ivorn, Some(&self.local_ivo), &nak_text(r))
            }
        };
        let frame = crate::frame::encode(&msg);
        match send_nonblocking(&stream, &frame) {
            Ok(n) if n == frame.len() => debug!("answered author {peer} for {ivorn}"),
            Ok(_) => warn!("could not reply to author {peer}: its connection is not taking data"),
            Err(e) => warn!("could not reply to author {peer}: {e}"),
        }
        // Dropping `stream` closes it: the FIN follows the reply (the author's event was
        // read in full, so nothing unread turns the close into a reset).
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
