//! The write side of one subscriber connection, shared by the dispatcher and the
//! subscriber's own thread, so that fan-out costs one non-blocking `send` per copy and no
//! thread wake-up at all in the common case.
//!
//! Fast path (dispatcher): if nothing is queued and nobody is writing, the frame is written
//! with `send(MSG_DONTWAIT)`; when the kernel takes it whole, that is the end of it.
//! Slow path: whatever the kernel did not take (the rest of a frame, later frames) goes on
//! a backlog, and the subscriber thread is woken to write it with ordinary blocking writes
//! under the write deadline. While the backlog is non-empty or the thread is writing, the
//! dispatcher only appends, so frames never interleave. A backlog longer than the
//! configured queue means the subscriber is too slow: the dispatcher drops it. The
//! thread's own messages (`authenticate`, `iamalive`) go through the same backlog.
//!
//! The outbox owns the connection's only descriptor: the subscriber thread reads through
//! [`Outbox::stream`], so a subscriber costs one descriptor, not two. An empty backlog
//! holds no allocation: its buffer is released whenever it drains, so an idle subscriber
//! costs only the outbox itself.
//!
//! The outbox also carries what the operator's view shows of its subscriber
//! ([`SubscriberStat`]): it exists exactly as long as the connection and is already
//! shared, so the view costs no allocation of its own.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::sys::send_nonblocking;
use crate::voevent::Event;

/// A frame waiting to be written.
enum Item {
    Event(Arc<Event>),
    Control(Vec<u8>),
}

impl Item {
    fn bytes(&self) -> &[u8] {
        match self {
            Item::Event(e) => e.frame(),
            Item::Control(c) => c,
        }
    }
}

struct State {
    /// Frames not yet (completely) handed to the kernel; the first may be partly written.
    backlog: VecDeque<Item>,
    /// Bytes of the front item already written.
    offset: usize,
    /// The subscriber thread is writing the front item without the lock.
    writing: bool,
    /// Set by the dispatcher when it leaves backlog (or drops the subscriber); cleared by
    /// the subscriber thread when it wakes.
    wake: bool,
}

/// What happened to a frame offered by the dispatcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// The kernel took it whole.
    Written,
    /// Queued for the subscriber thread.
    Queued,
    /// The backlog is full: the subscriber is too slow.
    Full,
    /// The connection failed.
    Failed,
}

/// One connected subscriber, as the operator sees it ([`crate::metrics`], `/status`).
pub struct SubscriberStat {
    pub peer: SocketAddr,
    /// When it connected (Unix ms).
    pub since_ms: u64,
    /// Events it acknowledged.
    pub acked: AtomicU64,
    /// The filters it asked for (set by its thread when they arrive).
    pub filters: Mutex<Vec<String>>,
}

impl SubscriberStat {
    /// The filters it asked for in its latest authenticate answer.
    #[inline(never)]
    pub fn set_filters(&self, exprs: &[String]) {
        *self.filters.lock().unwrap_or_else(|e| e.into_inner()) = exprs.to_vec();
    }
}

/// One subscriber's outgoing side.
pub struct Outbox {
    stream: TcpStream,
    state: Mutex<State>,
    limit: usize,
    /// Wakes the subscriber thread. A condition variable, not a channel: crossbeam's
    /// receive spins with `sched_yield` before parking, which a thousand subscriber threads
    /// would pay on every wake-up.
    cv: Condvar,
    /// Events completely written (for ack accounting).
    sent: AtomicU64,
    /// Set when the dispatcher dropped this subscriber.
    dropped: AtomicBool,
    /// Its line in the operator's view.
    pub stat: SubscriberStat,
}

/// The subscriber thread's handle to be woken when there is backlog to write.
pub struct Waker(Arc<Outbox>);

impl Waker {
    /// Wait up to `timeout` for backlog (or a drop). `false` on timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        let out = &self.0;
        let mut st = out.lock();
        if !st.wake {
            st = out
                .cv
                .wait_timeout(st, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        std::mem::take(&mut st.wake)
    }
}

impl Outbox {
    /// An outbox over `stream` from `peer` (the subscriber thread reads it through
    /// [`Outbox::stream`]; only the outbox writes), holding at most `limit` queued frames.
    pub fn new(stream: TcpStream, peer: SocketAddr, limit: usize) -> (Arc<Outbox>, Waker) {
        let out = Arc::new(Outbox {
            stream,
            state: Mutex::new(State {
                backlog: VecDeque::new(),
                offset: 0,
                writing: false,
                wake: false,
            }),
            limit,
            cv: Condvar::new(),
            sent: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
            stat: SubscriberStat {
                peer,
                since_ms: crate::time::unix_now_ms(),
                acked: AtomicU64::new(0),
                filters: Mutex::new(Vec::new()),
            },
        });
        (Arc::clone(&out), Waker(out))
    }

    /// Wake the subscriber thread (the caller holds the lock).
    fn wake(&self, st: &mut State) {
        if !st.wake {
            st.wake = true;
            self.cv.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection, for the subscriber thread's reads (writes go through the outbox).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Events completely written so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Frames queued now.
    pub fn queued(&self) -> usize {
        self.lock().backlog.len()
    }

    /// The dispatcher's fast path: write `event` now if the way is clear, else queue it.
    pub fn offer(&self, event: &Arc<Event>) -> Offer {
        let mut st = self.lock();
        if st.backlog.is_empty() && !st.writing {
            let frame = event.frame();
            match send_nonblocking(&self.stream, frame) {
                Ok(n) if n == frame.len() => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return Offer::Written;
                }
                Ok(n) => {
                    st.backlog.push_back(Item::Event(Arc::clone(event)));
                    st.offset = n;
                    self.wake(&mut st);
                    return Offer::Queued;
                }
                Err(_) => return Offer::Failed,
            }
        }
        if st.backlog.len() >= self.limit {
            return Offer::Full;
        }
        st.backlog.push_back(Item::Event(Arc::clone(event)));
        self.wake(&mut st);
        Offer::Queued
    }

    /// The subscriber thread's own message (authenticate, iamalive): queued in order,
    /// written by [`Outbox::flush`].
    pub fn push_control(&self, msg: Vec<u8>) {
        self.lock().backlog.push_back(Item::Control(msg));
    }

    /// Write the whole backlog with blocking writes (the socket's write timeout bounds
    /// each). Called only by the subscriber thread.
    pub fn flush(&self) -> io::Result<()> {
        loop {
            let (item, offset) = {
                let mut st = self.lock();
                let Some(item) = st.backlog.pop_front() else {
                    st.writing = false;
                    // Drained: give its buffer back, an idle subscriber holds none.
                    st.backlog = VecDeque::new();
                    return Ok(());
                };
                st.writing = true;
                let off = std::mem::take(&mut st.offset);
                (item, off)
            };
            let mut s = &self.stream;
            let result = s.write_all(&item.bytes()[offset..]);
            if let Err(e) = result {
                self.lock().writing = false;
                return Err(e);
            }
            if matches!(item, Item::Event(_)) {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// True once [`Outbox::shutdown`] was called (by the dispatcher).
    pub fn was_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Shut the connection down (both directions), waking anything blocked on it.
    pub fn shutdown(&self) {
        self.dropped.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let mut st = self.lock();
        self.wake(&mut st);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::FrameReader;
    use crate::voevent::{EventRole, Origin};
    use std::net::TcpListener;

    fn event(n: usize) -> Arc<Event> {
        sized_event(n, 60_000)
    }

    /// Test event `n` (ivorn `ivo://x.y/z#n`) with `pad` bytes of text.
    pub(crate) fn sized_event(n: usize, pad: usize) -> Arc<Event> {
        let body = format!(
            "<VOEvent ivorn='ivo://x.y/z#{n}'>{}</VOEvent>",
            "p".repeat(pad)
        );
        Arc::new(Event::new(
            body.as_bytes(),
            format!("ivo://x.y/z#{n}"),
            EventRole::Test,
            0..body.len(),
            Origin::Local,
        ))
    }

    /// Direct writes until the socket is full, then the backlog; the reader sees every
    /// frame whole and in order, and a backlog over the limit is refused.
    #[test]
    fn order_is_kept_across_direct_writes_and_backlog() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (r, _) = l.accept().unwrap();
        let peer = w.peer_addr().unwrap();
        let (out, waker) = Outbox::new(w, peer, 8);
        let mut offered = Vec::new();
        let mut queued = 0;
        for n in 0..1000 {
            match out.offer(&event(n)) {
                Offer::Written => offered.push(n),
                Offer::Queued => {
                    offered.push(n);
                    queued += 1;
                }
                Offer::Full => break,
                Offer::Failed => panic!("socket failed"),
            }
        }
        assert!(queued > 0 && queued <= 8, "queued {queued}");
        assert!(
            waker.wait(Duration::from_millis(10)),
            "the thread was not woken"
        );
        out.push_control(b"\0\0\0\x02hi".to_vec());
        let reader = std::thread::spawn(move || {
            let mut fr = FrameReader::new(1 << 20);
            let mut got = Vec::new();
            let mut r = r;
            while let Ok(f) = fr.read_frame(&mut r) {
                got.push(f);
            }
            got
        });
        out.flush().unwrap();
        assert_eq!(out.sent(), offered.len() as u64);
        out.shutdown();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), offered.len() + 1);
        for (f, n) in got.iter().zip(&offered) {
            assert!(
                f.starts_with(format!("<VOEvent ivorn='ivo://x.y/z#{n}'>").as_bytes()),
                "frame {n} out of order"
            );
        }
        assert_eq!(got.last().unwrap(), b"hi");
    }
}
