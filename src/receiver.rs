//! The receiver: one thread per author connection (spec §3.3, with bolide's decisions).
//!
//! The thread that accepted the connection serves it while still holding the listener's
//! accept role ([`crate::listener::Handoff`]) as long as nothing can wait: it reads what
//! has already arrived without blocking, and if that is the whole event (the usual case)
//! and no bigger than [`SERVE_IN_PLACE_MAX`], checks it and hands it to the dispatcher
//! with `try_send`. Before a read that would block, a large event, a refusal (written
//! with a timeout) or a full dispatcher inbox, it passes the role on, so a slow author
//! never holds up the next one.
//!
//! An author gets an absolute deadline (20 s by default, not reset by traffic) to send one
//! frame. The frame is checked completely ([`crate::voevent::check_author_event`]); an
//! invalid one gets its `nak` here. A valid event goes to the dispatcher together with the
//! connection itself ([`crate::verdict::ReplyTo`]), and the thread is done: the dispatcher
//! answers a duplicate, the committer answers a new event once its record is committed.
//! Every outcome that allows a reply gets one: `ack`, or `nak` with a reason starting
//! `Event rejected: `. Then the connection closes.
//!
//! A valid event then meets the operator's policy before it is handed over: the IVORN
//! prefixes its address may publish under ([`crate::authorconfig`]), then the address's
//! rate ([`crate::ratelimit`]). A refusal is a `nak` here, logged at warn, and the
//! dispatcher never sees the event, so nothing is recorded.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use log::{info, warn};

use crate::authorconfig::AuthorRules;
use crate::dispatcher::Msg;
use crate::frame::{FrameError, FrameReader};
use crate::listener::{Handoff, RateLimitedLog};
use crate::ratelimit::RateLimiter;
use crate::sys::{DeadlineReader, NonBlocking};
use crate::transport;
use crate::verdict::{Reply, ReplyTo, Verdict};
use crate::voevent::{check_author_event, nak_text, Event, Rejection};
use crate::xml::Limits;

/// What every receiver thread shares.
pub struct ReceiverContext {
    pub local_ivo: Arc<str>,
    pub max_event_size: usize,
    pub timeout: Duration,
    pub limits: Limits,
    pub dispatcher: Sender<Msg>,
    /// `--author-config`: the prefixes each network may publish under.
    pub authors: Option<Arc<AuthorRules>>,
    /// `--author-rate`: the buckets of every author address.
    pub rate: Option<RateLimiter>,
    /// Rate-limit refusals, which a runaway author multiplies: one line a second.
    pub rate_log: RateLimitedLog,
    /// The broker archives what it accepts: events are packed for it here.
    pub archive: bool,
}

/// Largest event checked while the accept role is held: parsing and validating it takes
/// well under a millisecond. A bigger one is checked after the role has been passed on.
pub const SERVE_IN_PLACE_MAX: usize = 64 * 1024;

/// Largest receive buffer a thread keeps for its next author: bigger ones (a large
/// event's) are freed with their connection.
const KEEP_BUFFER_MAX: usize = 64 * 1024;

thread_local! {
    static READ_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A frame reader on this thread's receive buffer, given back when dropped: a thread
/// serving author after author reads each event into the same (warm, already
/// initialized) memory instead of allocating and zeroing 16 KiB per connection. The
/// event is copied out of it once, into its [`crate::voevent::Event`].
struct ThreadBuffer(FrameReader);

impl ThreadBuffer {
    fn take(limit: usize) -> ThreadBuffer {
        ThreadBuffer(FrameReader::with_buffer(limit, READ_BUFFER.take()))
    }
}

impl Drop for ThreadBuffer {
    fn drop(&mut self) {
        let buf = std::mem::replace(&mut self.0, FrameReader::new(0)).into_buffer();
        if buf.capacity() <= KEEP_BUFFER_MAX {
            READ_BUFFER.set(buf);
        }
    }
}

/// Handle one author connection to completion.
pub fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &ReceiverContext,
    handoff: &mut Handoff<'_>,
) {
    let started = Instant::now();
    let deadline = started + ctx.timeout;
    // No TCP_NODELAY or send timeout here: an accepted event's reply is one non-blocking
    // send (crate::verdict), and `reply` below sets both for the refusals it writes.
    let mut frames = ThreadBuffer::take(ctx.max_event_size);
    // What has arrived already, without waiting: usually the whole event. A WouldBlock
    // keeps what was read in `frames`, and the blocking read below goes on from there.
    let payload = match frames.0.read_frame_ref(&mut NonBlocking(&stream)) {
        Err(FrameError::TimedOut) => {
            handoff.release();
            let mut r = DeadlineReader {
                stream: &stream,
                deadline,
            };
            frames.0.read_frame_ref(&mut r)
        }
        other => other,
    };
    if !matches!(&payload, Ok(p) if p.len() <= SERVE_IN_PLACE_MAX) {
        handoff.release();
    }
    let payload = match payload {
        Ok(p) => p,
        Err(FrameError::TimedOut) => {
            warn!(
                "author {peer} timed out after {} seconds without sending a complete event",
                ctx.timeout.as_secs()
            );
            return;
        }
        Err(FrameError::Closed) => {
            info!("author {peer} closed the connection without sending anything");
            return;
        }
        Err(e @ FrameError::TooLarge { .. }) => {
            warn!("refused a message from author {peer}: {e}");
            crate::verdict::count_rejected(crate::metrics::RejectReason::TooLarge);
            let reason = format!("Event rejected: {e}");
            reply(
                &stream,
                peer,
                &transport::nak("", Some(&ctx.local_ivo), &reason),
                ctx.timeout,
            );
            drain(&stream, deadline);
            return;
        }
        Err(e) => {
            warn!("author {peer}: {e}");
            return;
        }
    };
    let mut event = match check_author_event(payload, ctx.limits, peer) {
        Ok(event) => event,
        Err((ivorn, rejection)) => {
            handoff.release();
            let ivorn = ivorn.unwrap_or_default();
            let shown = if ivorn.is_empty() {
                "(no ivorn)"
            } else {
                &ivorn
            };
            info!("rejected {shown} from author {peer}: {rejection}");
            refuse(&stream, peer, &ivorn, &rejection, ctx);
            return;
        }
    };
    if let Err(rejection) = apply_policy(&event, peer, ctx, handoff) {
        refuse(&stream, peer, &event.ivorn, &rejection, ctx);
        return;
    }
    let reply_to = ReplyTo::new(
        stream,
        peer,
        event.ivorn.clone(),
        Arc::clone(&ctx.local_ivo),
        deadline,
    );
    if ctx.archive {
        event.pack_for_archive();
    }
    let msg = Msg::Submit {
        event: Arc::new(event),
        reply: Some(Reply::Author(reply_to)),
    };
    // A full dispatcher inbox blocks us (after passing the accept role on), but never past
    // the author's deadline; an event that cannot be handed over by then gets
    // "unavailable".
    let unsent = match ctx.dispatcher.try_send(msg) {
        Ok(()) => None,
        Err(TrySendError::Full(msg)) => {
            handoff.release();
            ctx.dispatcher
                .send_deadline(msg, deadline)
                .err()
                .map(|e| (e.into_inner(), "did not take it before the deadline"))
        }
        Err(TrySendError::Disconnected(msg)) => Some((msg, "has stopped")),
    };
    if let Some((
        Msg::Submit {
            reply: Some(Reply::Author(r)),
            event,
        },
        why,
    )) = unsent
    {
        warn!("{} from author {peer}: the dispatcher {why}", event.ivorn);
        r.send_at_deadline(Verdict::Rejected(Rejection::Unavailable));
    }
}

/// The operator's policy for a valid event: `--author-config`, then `--author-rate` (so an
/// event that is not permitted spends no token). A refusal passes the accept role on
/// before it is logged: the nak's write may wait.
fn apply_policy(
    event: &Event,
    peer: SocketAddr,
    ctx: &ReceiverContext,
    handoff: &mut Handoff<'_>,
) -> Result<(), Rejection> {
    let ivorn = event.ivorn.as_str();
    if let Some(rules) = &ctx.authors {
        if let Err(r) = rules.check(peer.ip(), ivorn) {
            handoff.release();
            match &r.network {
                Some(net) => warn!(
                    "rejected {ivorn} from author {peer}: not permitted by the --author-config rule for {net} (allowed: {})",
                    r.allowed.join(", ")
                ),
                None => warn!(
                    "rejected {ivorn} from author {peer}: no --author-config rule covers its address (--author-config-strict)"
                ),
            }
            return Err(Rejection::NotPermitted {
                ivorn: ivorn.to_string(),
                addr: peer.ip(),
                allowed: r.network.map(|_| r.allowed),
            });
        }
    }
    if let Some(limiter) = &ctx.rate {
        if !limiter.take(peer.ip()) {
            handoff.release();
            let rate = limiter.rate();
            let rejection = Rejection::RateLimited {
                events: rate.events,
                secs: rate.secs,
                addr: peer.ip(),
            };
            ctx.rate_log
                .warn(|| format!("rejected {ivorn} from author {peer}: {rejection}"));
            return Err(rejection);
        }
    }
    Ok(())
}

/// Answer a refused event with its nak and close (the caller has passed the accept role
/// on: the write may wait).
fn refuse(
    stream: &TcpStream,
    peer: SocketAddr,
    ivorn: &str,
    rejection: &Rejection,
    ctx: &ReceiverContext,
) {
    crate::verdict::count_rejected(
        crate::metrics::RejectReason::of(rejection)
            .unwrap_or(crate::metrics::RejectReason::Invalid),
    );
    reply(
        stream,
        peer,
        &transport::nak(ivorn, Some(&ctx.local_ivo), &nak_text(rejection)),
        ctx.timeout,
    );
    let _ = stream.shutdown(Shutdown::Both);
}

fn reply(stream: &TcpStream, peer: SocketAddr, msg: &[u8], timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(timeout));
    let mut s = stream;
    if let Err(e) = crate::frame::write_frame(&mut s, msg).and_then(|_| s.flush()) {
        warn!("could not reply to author {peer}: {e}");
    }
}

/// After refusing an oversize frame: stop sending, then discard what the author is still
/// sending (briefly, into a small buffer) so the close does not reset the connection
/// before the author has read our nak.
fn drain(stream: &TcpStream, deadline: Instant) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = deadline.min(Instant::now() + Duration::from_secs(2));
    let mut r = DeadlineReader {
        stream,
        deadline: until,
    };
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0usize;
    while let Ok(n) = r.read(&mut buf) {
        total += n;
        if n == 0 || total > 64 << 20 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::{self, Kind, ListenerState};
    use crate::whitelist::Whitelist;
    use std::net::TcpListener;

    /// The event an author sends reaches the dispatcher packed for the archive when the
    /// broker archives (so the committing thread does not compress it), and unpacked
    /// under `--no-archive`.
    #[test]
    fn events_are_packed_on_the_author_thread_when_archived() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/voevents/swift_grb690738-bat-grb-pos_10.xml");
        let payload = std::fs::read(&corpus).unwrap();
        for archive in [true, false] {
            let (tx, rx) = crossbeam_channel::unbounded();
            let ctx = ReceiverContext {
                local_ivo: Arc::from("ivo://x.y/broker"),
                max_event_size: 1 << 20,
                timeout: Duration::from_secs(10),
                limits: Limits::default(),
                dispatcher: tx,
                authors: None,
                rate: None,
                rate_log: Default::default(),
                archive,
            };
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let state = Arc::new(ListenerState::new(listener::Caps::unlimited()));
            listener::start(
                l,
                Whitelist::allow_all(),
                Kind::Authors,
                Arc::clone(&state),
                move |s: TcpStream, peer, h: &mut Handoff<'_>| handle(s, peer, &ctx, h),
            )
            .unwrap();
            let mut author = TcpStream::connect(addr).unwrap();
            author.write_all(&crate::frame::encode(&payload)).unwrap();
            let Ok(Msg::Submit { event, .. }) = rx.recv_timeout(Duration::from_secs(10)) else {
                panic!("no event reached the dispatcher");
            };
            let expected = archive.then(|| crate::archive::pack(&payload).into_boxed_slice());
            assert_eq!(event.packed, expected, "archive: {archive}");
            state.stop();
        }
    }
}
