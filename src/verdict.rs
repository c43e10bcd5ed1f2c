//! The answer to one author submission, and the one-shot slot that carries it from the
//! dispatcher or committer back to the author's receiver thread.
//!
//! A slot is a mutex and a condition variable, not a channel: the author thread parks in
//! the kernel until the answer is there. (crossbeam's `recv` first spins and calls
//! `sched_yield` several times; with 16 authors waiting on 2 CPUs that was a context
//! switch storm costing more CPU than the commit itself.) The sending half answers
//! "unavailable" if it is dropped unanswered, so an author never waits for a verdict that
//! cannot come.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::voevent::Rejection;

/// The answer an author's receiver thread waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded durably: send `ack`.
    Accepted,
    /// Send `nak` with this reason.
    Rejected(Rejection),
}

/// Where the verdict lands; the author's thread waits on it.
#[derive(Default)]
pub struct Slot {
    verdict: Mutex<Option<Verdict>>,
    cv: Condvar,
}

impl Slot {
    /// Wait for the verdict until `deadline`; `None` if it has not come by then.
    pub fn wait_until(&self, deadline: Instant) -> Option<Verdict> {
        let mut v = self.verdict.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(verdict) = v.take() {
                return Some(verdict);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            v = self
                .cv
                .wait_timeout(v, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn put(&self, verdict: Verdict) {
        let mut v = self.verdict.lock().unwrap_or_else(|e| e.into_inner());
        *v = Some(verdict);
        self.cv.notify_one();
    }
}

/// The sending half: answer once with [`ReplyTo::send`]; dropped unanswered, it answers
/// [`Rejection::Unavailable`].
pub struct ReplyTo(Option<Arc<Slot>>);

impl ReplyTo {
    pub fn send(mut self, verdict: Verdict) {
        if let Some(slot) = self.0.take() {
            slot.put(verdict);
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.put(Verdict::Rejected(Rejection::Unavailable));
        }
    }
}

/// A new slot and its sending half.
pub fn slot() -> (ReplyTo, Arc<Slot>) {
    let s = Arc::new(Slot::default());
    (ReplyTo(Some(Arc::clone(&s))), s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answer_crosses_threads() {
        let (tx, rx) = slot();
        let t = std::thread::spawn(move || tx.send(Verdict::Accepted));
        let v = rx.wait_until(Instant::now() + Duration::from_secs(10));
        t.join().unwrap();
        assert_eq!(v, Some(Verdict::Accepted));
    }

    #[test]
    fn dropped_unanswered_means_unavailable() {
        let (tx, rx) = slot();
        drop(tx);
        assert_eq!(
            rx.wait_until(Instant::now() + Duration::from_secs(10)),
            Some(Verdict::Rejected(Rejection::Unavailable))
        );
    }

    #[test]
    fn times_out_without_answer() {
        let (_tx, rx) = slot();
        let t0 = Instant::now();
        assert_eq!(rx.wait_until(t0 + Duration::from_millis(50)), None);
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }
}
