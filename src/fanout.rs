//! Writing one event to many subscribers: the dispatcher's loop of non-blocking sends,
//! shared with helper threads when the recipients are many.
//!
//! A copy costs one `send(MSG_DONTWAIT)` through the subscriber's [`Outbox`], almost all
//! of it the kernel's TCP send; ten thousand copies of a 4.7-KB event take tens of
//! milliseconds on one CPU, and the last subscriber waits for all of them. From
//! [`PARALLEL_FROM`] recipients on, [`FanOut::write_all`] splits them into contiguous
//! shares: one for the dispatcher, one for each helper thread (one per further CPU, at
//! most [`MAX_HELPERS`], started the first time they are needed and kept). It returns once
//! every share is written, so the next event starts only then: every subscriber still
//! gets its events in order, and no subscriber waits for another share's.
//!
//! A helper is handed its share's outboxes (`Arc` clones: the dispatcher's table stays
//! the dispatcher's) and answers with what became of each copy. Helpers are long-lived
//! so that their allocations (the backlogs of subscribers whose socket is full) come from
//! one malloc arena each, not from a new one per event.

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use log::{debug, warn};

use crate::dispatcher::SubscriberHandle;
use crate::metrics::{DropReason, METRICS};
use crate::outbox::{Offer, Outbox};
use crate::voevent::Event;

/// Recipients from which an event's copies are shared with helper threads. Below it, the
/// copies take a few milliseconds and the hand-off would cost more than it saves.
pub const PARALLEL_FROM: usize = 2048;
/// Most helper threads.
pub const MAX_HELPERS: usize = 3;
/// Stack of a helper thread: it only loops over sends and logs.
const HELPER_STACK: usize = 64 * 1024;

/// Which subscribers get the event: all, or those at these indices (ascending).
#[derive(Clone, Copy)]
pub enum Targets<'a> {
    All,
    Only(&'a [usize]),
}

/// What became of an event's copies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copies {
    /// Written or queued.
    pub sent: u64,
    /// Indices of the subscribers shut down (too slow or gone), ascending: the dispatcher
    /// removes them.
    pub gone: Vec<usize>,
    /// Of those, dropped for being too slow.
    pub too_slow: u64,
}

impl Copies {
    /// Count what became of the copy for subscriber `i`.
    fn record(&mut self, i: usize, d: Delivery) {
        match d {
            Delivery::Sent => self.sent += 1,
            Delivery::TooSlow => {
                self.too_slow += 1;
                self.gone.push(i);
            }
            Delivery::Gone => self.gone.push(i),
        }
    }
}

/// What became of one copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written or queued.
    Sent,
    /// Its backlog is full: the subscriber is shut down.
    TooSlow,
    /// Its connection failed: the subscriber is shut down.
    Gone,
}

/// A share of one event's copies for a helper thread.
struct Job {
    event: Arc<Event>,
    outs: Vec<Arc<Outbox>>,
}

/// What a helper made of its share: per outbox, in the order given.
type Done = Vec<Delivery>;

struct Helper {
    jobs: Sender<Job>,
    done: Receiver<Done>,
}

/// The dispatcher's fan-out: its helper threads.
pub struct FanOut {
    helpers: Vec<Helper>,
    /// Helpers to use (0: every copy on the dispatcher).
    wanted: usize,
    /// Recipients from which copies are shared ([`PARALLEL_FROM`]).
    from: usize,
}

impl FanOut {
    /// A fan-out with up to `wanted` helper threads ([`FanOut::for_this_machine`]).
    pub fn new(wanted: usize) -> FanOut {
        FanOut {
            helpers: Vec::new(),
            wanted: wanted.min(MAX_HELPERS),
            from: PARALLEL_FROM,
        }
    }

    /// One helper per CPU beyond the dispatcher's, at most [`MAX_HELPERS`].
    pub fn for_this_machine() -> FanOut {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        FanOut::new(cpus - 1)
    }

    /// Offer `event` to `targets` among `subs`, sharing the copies with the helpers from
    /// [`PARALLEL_FROM`] recipients on.
    pub fn write_all(
        &mut self,
        subs: &[SubscriberHandle],
        targets: Targets<'_>,
        event: &Arc<Event>,
    ) -> Copies {
        let n = match targets {
            Targets::All => subs.len(),
            Targets::Only(idx) => idx.len(),
        };
        let index = |pos: usize| match targets {
            Targets::All => pos,
            Targets::Only(idx) => idx[pos],
        };
        let shares = if n >= self.from {
            self.start_helpers();
            (self.helpers.len() + 1).min(n / (self.from / 2).max(1))
        } else {
            1
        };
        let per = n.div_ceil(shares);
        let mut copies = Copies::default();
        let write_here = |copies: &mut Copies, part: std::ops::Range<usize>| {
            for p in part {
                let i = index(p);
                copies.record(i, offer(&subs[i].out, event));
            }
        };
        // Hand the helpers their shares (the last ones), then write the first here.
        let mut handed = Vec::with_capacity(shares - 1);
        let mut lost = Vec::new();
        for (k, helper) in self.helpers.iter().enumerate().take(shares - 1) {
            let part = (k + 1) * per..((k + 2) * per).min(n);
            let outs = part
                .clone()
                .map(|p| Arc::clone(&subs[index(p)].out))
                .collect();
            let job = Job {
                event: Arc::clone(event),
                outs,
            };
            match helper.jobs.send(job) {
                Ok(()) => handed.push((k, part)),
                // The helper is gone: its share is written here, and it is replaced at
                // the next large event.
                Err(_) => {
                    lost.push(k);
                    write_here(&mut copies, part);
                }
            }
        }
        write_here(&mut copies, 0..per);
        for (k, part) in handed {
            match self.helpers[k].done.recv() {
                Ok(done) => {
                    for (p, d) in part.zip(done) {
                        copies.record(index(p), d);
                    }
                }
                // The thread is gone (it contains its panics, so this is not expected):
                // its share is written here, and it is replaced at the next large event.
                Err(_) => {
                    warn!("a fan-out helper thread ended writing {}", event.ivorn);
                    lost.push(k);
                    write_here(&mut copies, part);
                }
            }
        }
        lost.sort_unstable();
        for k in lost.into_iter().rev() {
            self.helpers.swap_remove(k);
        }
        copies.gone.sort_unstable();
        copies
    }

    /// Start the helpers not running yet; a thread that cannot be started leaves its
    /// share to the dispatcher.
    fn start_helpers(&mut self) {
        while self.helpers.len() < self.wanted {
            let (jobs, inbox) = bounded::<Job>(1);
            let (reply, done) = bounded::<Done>(1);
            let spawned = std::thread::Builder::new()
                .name("fan-out".into())
                .stack_size(HELPER_STACK)
                .spawn(move || {
                    for job in inbox {
                        let d = job.outs.iter().map(|o| contained(o, &job.event)).collect();
                        if reply.send(d).is_err() {
                            break;
                        }
                    }
                });
            match spawned {
                Ok(_) => self.helpers.push(Helper { jobs, done }),
                Err(e) => {
                    warn!("cannot start a fan-out helper thread: {e}; the dispatcher writes its share");
                    self.wanted = self.helpers.len();
                }
            }
        }
    }
}

/// [`offer`], on a helper thread: a panic shuts that subscriber down instead of ending the
/// thread, and the other copies are written.
fn contained(out: &Outbox, event: &Arc<Event>) -> Delivery {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| offer(out, event))).unwrap_or_else(
        |_| {
            warn!(
                "dropping subscriber {}: panic writing {}",
                out.stat.peer, event.ivorn
            );
            out.shutdown();
            Delivery::Gone
        },
    )
}

/// Write or queue `event` on outbox `out`; a subscriber too slow or gone is shut down and
/// must be removed from the table.
#[inline]
pub fn offer(out: &Outbox, event: &Arc<Event>) -> Delivery {
    match out.offer(event) {
        Offer::Written | Offer::Queued => {
            debug!("sent {} to subscriber {}", event.ivorn, out.stat.peer);
            Delivery::Sent
        }
        Offer::Full => {
            warn!(
                "dropping subscriber {}: too slow ({} events queued, not sending {})",
                out.stat.peer,
                out.queued(),
                event.ivorn
            );
            out.shutdown();
            METRICS.dropped(DropReason::TooSlow);
            Delivery::TooSlow
        }
        Offer::Failed => {
            debug!(
                "subscriber {} is gone; not sending {}",
                out.stat.peer, event.ivorn
            );
            out.shutdown();
            Delivery::Gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameReader;
    use std::net::{TcpListener, TcpStream};

    fn event(n: usize) -> Arc<Event> {
        crate::outbox::tests::sized_event(n, 300)
    }

    /// `n` subscribers over loopback connections: the table and each one's reading end.
    fn subscribers(n: usize, limit: usize) -> (Vec<SubscriberHandle>, Vec<TcpStream>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut subs = Vec::new();
        let mut ends = Vec::new();
        for id in 0..n {
            let end = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (w, peer) = l.accept().unwrap();
            let (out, _waker) = Outbox::new(w, peer, limit);
            subs.push(SubscriberHandle::new(id as u64, out));
            ends.push(end);
        }
        (subs, ends)
    }

    /// The ivorns of the frames on `end`, up to its end (the table was dropped).
    fn received(end: &mut TcpStream) -> Vec<String> {
        end.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut fr = FrameReader::new(1 << 20);
        let mut got = Vec::new();
        while let Ok(f) = fr.read_frame(end) {
            let text = String::from_utf8(f).unwrap();
            let at = text.find("ivo://").unwrap();
            got.push(text[at..at + "ivo://x.y/z#0".len()].to_string());
        }
        got
    }

    /// Copies of large events go out on the dispatcher and two helper threads; small ones
    /// on the dispatcher alone. Every subscriber gets each event meant for it once and in
    /// order, and exactly the subscribers that failed or were too slow are reported gone,
    /// by their indices in the table, whichever share they were in.
    #[test]
    fn large_fan_outs_are_shared_and_every_copy_accounted() {
        let (subs, mut ends) = subscribers(60, 2);
        let mut fan = FanOut::new(2);
        fan.from = 12;
        let small = FanOut::new(2).write_all(&subs[..11], Targets::All, &event(9));
        assert_eq!(small.sent, 11);
        // Event 0 to all; event 1 to the even ones (filtered).
        let copies = fan.write_all(&subs, Targets::All, &event(0));
        assert_eq!((copies.sent, copies.too_slow), (60, 0));
        assert!(copies.gone.is_empty());
        assert_eq!(fan.helpers.len(), 2, "helper threads started");
        let even: Vec<usize> = (0..60).step_by(2).collect();
        assert_eq!(
            fan.write_all(&subs, Targets::Only(&even), &event(1)).sent,
            30
        );
        // One failed and one too slow in each share (0-19, 20-39, 40-59).
        let failed = [5, 33, 58];
        let slow = [14, 26, 47];
        for &i in &failed {
            subs[i]
                .out
                .stream()
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
        }
        for &i in &slow {
            subs[i].out.push_control(b"\0\0\0\x02hi".to_vec());
            subs[i].out.push_control(b"\0\0\0\x02hi".to_vec());
        }
        let copies = fan.write_all(&subs, Targets::All, &event(2));
        assert_eq!(copies.gone, [5, 14, 26, 33, 47, 58]);
        assert_eq!((copies.sent, copies.too_slow), (54, 3));
        // The same to the odd ones (filtered): the shares hold other indices.
        let odd: Vec<usize> = (1..60).step_by(2).collect();
        let copies = fan.write_all(&subs, Targets::Only(&odd), &event(3));
        assert_eq!(copies.gone, [5, 33, 47]);
        assert_eq!((copies.sent, copies.too_slow), (27, 1));
        drop(subs);
        for (i, end) in ends.iter_mut().enumerate() {
            let mut want = vec!["ivo://x.y/z#0".to_string()];
            if i % 2 == 0 {
                want.push("ivo://x.y/z#1".into());
            }
            if i < 11 {
                want.insert(0, "ivo://x.y/z#9".into());
            }
            if !failed.contains(&i) && !slow.contains(&i) {
                want.push("ivo://x.y/z#2".into());
                if i % 2 == 1 {
                    want.push("ivo://x.y/z#3".into());
                }
            }
            assert_eq!(received(end), want, "subscriber {i}");
        }
    }

    /// On a one-CPU machine, or below the threshold, no helper thread is started.
    #[test]
    fn no_helpers_when_not_needed() {
        let (subs, mut ends) = subscribers(8, 4);
        let mut alone = FanOut::new(0);
        alone.from = 2;
        assert_eq!(alone.write_all(&subs, Targets::All, &event(0)).sent, 8);
        assert!(alone.helpers.is_empty());
        let mut few = FanOut::new(2);
        few.from = 9;
        assert_eq!(few.write_all(&subs, Targets::All, &event(1)).sent, 8);
        assert!(few.helpers.is_empty());
        drop(subs);
        for end in &mut ends {
            assert_eq!(received(end), ["ivo://x.y/z#0", "ivo://x.y/z#1"]);
        }
    }
}
