//! Group commit: the committer thread, or the dispatcher itself under `--no-sync`.
//!
//! The committer takes every record waiting in its queue, writes them all in one LMDB
//! transaction and commits once (one fsync for the whole batch), then answers each waiting
//! author and tells the dispatcher the keys are durable. While one commit is syncing, new
//! records queue up and share the next one, so durable throughput grows with concurrency
//! instead of being capped at one fsync per event.
//!
//! Under `--no-sync` a commit is a few page writes into the page cache (microseconds),
//! less than handing the batch to another thread costs (a condition-variable wake-up and
//! two context switches per batch). There the
//! queue is [`CommitQueue::inline`] and the dispatcher runs the same [`Committer`]
//! whenever its inbox is empty or [`INLINE_BATCH`] records are waiting: no committer
//! thread is started. The price: while a prune chunk holds LMDB's write lock (up to
//! [`crate::pruner::PRUNE_CHUNK`] deletions), the dispatcher's next commit, and so its
//! next fan-out, waits for it.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use log::{debug, error};

use crate::store::Store;
use crate::verdict::{Reply, Verdict};
use crate::voevent::{Event, Key, Rejection};

/// Most records per transaction.
pub const MAX_BATCH: usize = 4096;
/// Under `--no-sync`, the dispatcher commits at least every this many records even
/// while its inbox is never empty, so authors are answered under sustained load.
pub const INLINE_BATCH: usize = 64;

/// One accepted event to make durable.
pub struct Record {
    pub key: Key,
    pub time: u64,
    pub ivorn: String,
    /// Who waits for the verdict: the author (its ack), or the Kafka consumer (to commit
    /// the message's offset); `None` for upstream events.
    pub reply: Option<Reply>,
    /// The event to archive with its record (`None`: `--no-archive`, or the broker's
    /// own test event).
    pub archive: Option<Arc<Event>>,
}

/// The committer's inbox and the set of keys accepted but not yet durable.
///
/// The dispatcher [`admit`](CommitQueue::admit)s a record (its key joins `pending`); the
/// committer takes everything queued as its next batch and, once the batch is committed
/// (or has failed), removes its keys from `pending`. So the dispatcher's duplicate check
/// is "in `pending` or in LMDB", and no key is ever in neither between acceptance and
/// commit. A mutex and condition variable rather than a channel: the committer sleeps in
/// the kernel until there is work (crossbeam's receive spins and yields first, which on
/// two CPUs under ingest load means needless context switches by the thousand), and it
/// takes a whole batch under one lock.
#[derive(Default)]
pub struct CommitQueue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

#[derive(Default)]
struct QueueState {
    records: Vec<Record>,
    pending: HashSet<Key>,
    closed: bool,
    /// Committed by the dispatcher itself: nobody waits on the condition variable.
    inline: bool,
    /// Records ever admitted, and ever settled (committed or failed), in admission order:
    /// a catch-up waits until `settled` reaches an earlier `admitted` ([`crate::replay`]).
    admitted: u64,
    settled: u64,
}

impl CommitQueue {
    /// A queue for the committer thread ([`run_committer`]).
    pub fn new() -> Arc<CommitQueue> {
        Arc::new(CommitQueue::default())
    }

    /// A queue committed by its admitter ([`Committer::commit_queued`]): admitting wakes
    /// nobody.
    pub fn inline() -> Arc<CommitQueue> {
        let q = CommitQueue::default();
        q.lock().inline = true;
        Arc::new(q)
    }

    /// Whether this queue is committed by its admitter.
    pub fn is_inline(&self) -> bool {
        self.lock().inline
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` was admitted and is not yet committed.
    pub fn is_pending(&self, key: &Key) -> bool {
        self.lock().pending.contains(key)
    }

    /// Keys admitted and not yet committed.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Queue `record` for the next commit. `false` if the committer has stopped: the
    /// record is dropped, which answers its author "unavailable".
    pub fn admit(&self, record: Record) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.pending.insert(record.key);
        st.admitted += 1;
        let was_empty = st.records.is_empty();
        st.records.push(record);
        if was_empty && !st.inline {
            self.cv.notify_one();
        }
        true
    }

    /// No more records: the committer commits what is queued and returns.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_one();
    }

    /// Wait for records and move up to [`MAX_BATCH`] of them into `batch`; `false` once
    /// closed and empty.
    fn take(&self, batch: &mut Vec<Record>) -> bool {
        let mut st = self.lock();
        while st.records.is_empty() {
            if st.closed {
                return false;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Self::move_batch(&mut st, batch);
        true
    }

    fn move_batch(st: &mut QueueState, batch: &mut Vec<Record>) {
        if st.records.len() <= MAX_BATCH {
            std::mem::swap(batch, &mut st.records);
        } else {
            batch.extend(st.records.drain(..MAX_BATCH));
        }
    }

    /// Move what is queued (up to [`MAX_BATCH`]) into `batch` without waiting; `false`
    /// if nothing was.
    fn try_take(&self, batch: &mut Vec<Record>) -> bool {
        let mut st = self.lock();
        if st.records.is_empty() {
            return false;
        }
        Self::move_batch(&mut st, batch);
        true
    }

    /// The batch's keys are committed (or failed): they are no longer pending.
    fn settle(&self, batch: &[Record]) {
        let mut st = self.lock();
        for r in batch {
            st.pending.remove(&r.key);
        }
        st.settled += batch.len() as u64;
    }

    /// Records admitted so far.
    pub fn admitted(&self) -> u64 {
        self.lock().admitted
    }

    /// Records settled so far: every record admitted before the `n`-th is settled once
    /// this reaches `n`.
    pub fn settled(&self) -> u64 {
        self.lock().settled
    }
}

/// What the committer did, returned when its queue is closed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed (or attempted).
    pub commits: u64,
    pub records: u64,
    pub failed: u64,
}

/// One batch at a time: write the records, commit, settle their keys, answer authors.
/// Run by the committer thread, or by the dispatcher for an inline queue.
pub struct Committer {
    store: Arc<Store>,
    batch: Vec<Record>,
    rows: Vec<(Key, u64)>,
    stats: CommitStats,
}

impl Committer {
    pub fn new(store: Arc<Store>) -> Committer {
        Committer {
            store,
            batch: Vec::with_capacity(64),
            rows: Vec::with_capacity(64),
            stats: CommitStats::default(),
        }
    }

    /// What this committer has done so far.
    pub fn stats(&self) -> CommitStats {
        self.stats
    }

    /// Commit everything queued now (in batches of at most [`MAX_BATCH`]), without
    /// waiting for more; the number of records committed.
    pub fn commit_queued(&mut self, queue: &CommitQueue) -> usize {
        let mut n = 0;
        while queue.try_take(&mut self.batch) {
            n += self.batch.len();
            self.commit(queue);
        }
        n
    }

    /// Commit `self.batch` as one transaction and answer its authors.
    fn commit(&mut self, queue: &CommitQueue) {
        let batch = &mut self.batch;
        self.rows.clear();
        self.rows.extend(batch.iter().map(|r| (r.key, r.time)));
        let archive: Vec<&Event> = batch.iter().filter_map(|r| r.archive.as_deref()).collect();
        let started = Instant::now();
        let result = self.store.insert_batch(&self.rows, &archive);
        drop(archive);
        // Only now may the keys leave `pending`: LMDB answers for them from here on.
        queue.settle(batch);
        self.stats.commits += 1;
        self.stats.records += batch.len() as u64;
        crate::metrics::METRICS.committed(result.is_ok());
        match result {
            Ok(()) => {
                debug!(
                    "committed {} records in {:.2} ms",
                    batch.len(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                for r in batch.drain(..) {
                    if let Some(tx) = r.reply {
                        tx.send(Verdict::Accepted);
                    }
                }
            }
            Err(e) => {
                self.stats.failed += batch.len() as u64;
                error!(
                    "event database commit of {} records failed: {e}",
                    batch.len()
                );
                for r in batch.drain(..) {
                    error!("{} was relayed but not recorded", r.ivorn);
                    if let Some(tx) = r.reply {
                        tx.send(Verdict::Rejected(Rejection::Storage));
                    }
                }
            }
        }
    }
}

/// Committer thread body: runs until its queue is closed (after draining it).
pub fn run_committer(store: Arc<Store>, queue: Arc<CommitQueue>) -> CommitStats {
    let mut c = Committer::new(store);
    while queue.take(&mut c.batch) {
        c.commit(&queue);
    }
    c.stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use std::time::Duration;

    /// Records that are waiting together are committed together: one transaction, and
    /// every author answered after it; their keys are pending until then, not after.
    #[test]
    fn waiting_records_share_one_commit() {
        let dir = std::env::temp_dir().join(format!("bolide-committer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&StoreConfig::new(&dir)).unwrap());
        let queue = CommitQueue::new();
        let mut replies = Vec::new();
        for i in 0..10u8 {
            let (author, rtx) =
                crate::verdict::tests::pair(Instant::now() + Duration::from_secs(10));
            replies.push(author);
            assert!(queue.admit(Record {
                key: [i; 32],
                time: 1,
                ivorn: format!("ivo://x.y/z#{i}"),
                reply: Some(rtx.into()),
                archive: None,
            }));
        }
        assert!(queue.is_pending(&[3; 32]));
        assert_eq!(queue.pending(), 10);
        queue.close();
        let stats = run_committer(Arc::clone(&store), Arc::clone(&queue));
        assert_eq!(
            stats,
            CommitStats {
                commits: 1,
                records: 10,
                failed: 0
            },
            "expected one commit for ten waiting records"
        );
        assert_eq!(queue.pending(), 0);
        for author in replies {
            let m = crate::verdict::tests::reply_of(author).expect("a reply");
            assert_eq!(m.role, Some(crate::transport::Role::Ack));
        }
        assert_eq!(store.len().unwrap(), 10);
        // Closed: nothing more is taken, and the late author is told so.
        let (author, rtx) = crate::verdict::tests::pair(Instant::now() + Duration::from_secs(10));
        assert!(!queue.admit(Record {
            key: [99; 32],
            time: 1,
            ivorn: "ivo://x.y/z#late".into(),
            reply: Some(rtx.into()),
            archive: None,
        }));
        let m = crate::verdict::tests::reply_of(author).expect("a reply");
        assert_eq!(m.role, Some(crate::transport::Role::Nak));
        assert!(!queue.is_pending(&[99; 32]));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
