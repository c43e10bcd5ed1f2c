//! Connection threads, kept for reuse.
//!
//! Every connection still gets a thread of its own for as long as it lasts (the design's
//! thread-per-connection), but a thread whose connection has ended waits up to
//! [`IDLE_TIMEOUT`] for the next one instead of exiting, and at most `max_idle` threads
//! wait at once. Starting a thread is not cheap on Linux: Rust's guard-paged signal stack
//! (mmap and mprotect at start, munmap at exit) and glibc's madvise of the cached stack
//! each flush the TLB of every CPU with an inter-processor interrupt. With one author
//! connection per event that was a tenth of the broker's CPU under ingest load.
//!
//! While it serves a connection, a thread carries the peer in its kernel name (what
//! `top -H` and `ps -L` show), e.g. `author 192.0.2.7:4`.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// How long a thread without a connection waits for one before it exits.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A unit of work: serve one connection.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    /// Jobs handed over but not yet taken by a thread.
    jobs: VecDeque<(String, Job)>,
    /// Threads waiting for a job.
    idle: usize,
    /// Set by [`Pool::close`]: waiting threads exit.
    closed: bool,
}

/// A set of reusable threads with one stack size.
pub struct Pool {
    state: Mutex<State>,
    cv: Condvar,
    stack: usize,
    max_idle: usize,
    /// Rust-level name of the threads (panic messages); the kernel name is per job.
    name: &'static str,
}

impl Pool {
    pub fn new(name: &'static str, stack: usize, max_idle: usize) -> Arc<Pool> {
        Arc::new(Pool {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            cv: Condvar::new(),
            stack,
            max_idle,
            name,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `job` on a waiting thread, or on a new one if none is free. `label` becomes the
    /// thread's kernel name while the job runs.
    pub fn run(self: &Arc<Self>, label: String, job: Job) -> io::Result<()> {
        {
            let mut st = self.lock();
            // Each queued job is taken by one of the waiting threads; a new one is needed
            // only when every waiting thread already has a job coming.
            if st.idle > st.jobs.len() {
                st.jobs.push_back((label, job));
                self.cv.notify_one();
                return Ok(());
            }
        }
        let pool = Arc::clone(self);
        thread::Builder::new()
            .name(self.name.to_string())
            .stack_size(self.stack)
            .spawn(move || {
                set_kernel_name(&label);
                job();
                pool.serve();
            })
            .map(|_| ())
    }

    /// A thread's life after its first job: take jobs until idle too long or closed.
    fn serve(&self) {
        let mut st = self.lock();
        loop {
            if let Some((label, job)) = st.jobs.pop_front() {
                drop(st);
                set_kernel_name(&label);
                job();
                st = self.lock();
                continue;
            }
            if st.closed || st.idle >= self.max_idle {
                return;
            }
            st.idle += 1;
            let (guard, timeout) = self
                .cv
                .wait_timeout(st, IDLE_TIMEOUT)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.idle -= 1;
            if timeout.timed_out() && st.jobs.is_empty() {
                return;
            }
        }
    }

    /// Threads waiting for a job now.
    pub fn idle(&self) -> usize {
        self.lock().idle
    }

    /// Let every waiting thread exit (threads serving a connection exit after it).
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }
}

/// Set the calling thread's kernel name (at most 15 bytes are kept).
fn set_kernel_name(label: &str) {
    let short: String = label.chars().take(15).collect();
    if let Ok(c) = CString::new(short) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// Concurrent jobs each get a thread of their own, which then wait for more.
    #[test]
    fn concurrent_jobs_never_share_a_thread() {
        let pool = Pool::new("test", 64 * 1024, 8);
        let running = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..4 {
            let running = Arc::clone(&running);
            let done_tx = done_tx.clone();
            pool.run(
                format!("blocking {i}"),
                Box::new(move || {
                    running.fetch_add(1, Ordering::SeqCst);
                    let ok = wait_for(|| running.load(Ordering::SeqCst) == 4);
                    done_tx.send((ok, thread::current().id())).unwrap();
                }),
            )
            .unwrap();
        }
        let mut ids = std::collections::HashSet::new();
        for _ in 0..4 {
            let (ok, id) = done_rx.recv().unwrap();
            assert!(
                ok,
                "a job waited behind another instead of getting its own thread"
            );
            ids.insert(id);
        }
        assert_eq!(ids.len(), 4);
        assert!(wait_for(|| pool.idle() == 4));
        pool.close();
        assert!(
            wait_for(|| pool.idle() == 0),
            "closed pool kept idle threads"
        );
    }

    #[test]
    fn one_thread_serves_sequential_jobs() {
        let pool = Pool::new("test", 64 * 1024, 8);
        let (tx, rx) = mpsc::channel();
        let mut ids = std::collections::HashSet::new();
        for i in 0..10 {
            let tx = tx.clone();
            pool.run(
                format!("job {i}"),
                Box::new(move || tx.send(thread::current().id()).unwrap()),
            )
            .unwrap();
            ids.insert(rx.recv().unwrap());
            assert!(wait_for(|| pool.idle() == 1));
        }
        assert_eq!(ids.len(), 1, "sequential jobs started new threads");
    }

    #[test]
    fn idle_threads_are_capped() {
        let pool = Pool::new("test", 64 * 1024, 2);
        let (done_tx, done_rx) = mpsc::channel();
        let gate = Arc::new(AtomicUsize::new(0));
        for i in 0..5 {
            let gate = Arc::clone(&gate);
            let done_tx = done_tx.clone();
            pool.run(
                format!("j{i}"),
                Box::new(move || {
                    gate.fetch_add(1, Ordering::SeqCst);
                    wait_for(|| gate.load(Ordering::SeqCst) >= 5);
                    done_tx.send(()).unwrap();
                }),
            )
            .unwrap();
        }
        for _ in 0..5 {
            done_rx.recv().unwrap();
        }
        thread::sleep(Duration::from_millis(100));
        assert!(pool.idle() <= 2, "{} idle threads, cap 2", pool.idle());
    }
}
