//! The committer thread (group commit) and the pruner thread.
//!
//! The committer takes every record waiting in its channel, writes them all in one LMDB
//! transaction and commits once (one fsync for the whole batch), then answers each waiting
//! author and tells the dispatcher the keys are durable. While one commit is syncing, new
//! records queue up and share the next one, so durable throughput grows with concurrency
//! instead of being capped at one fsync per event.
//!
//! The pruner deletes expired records in small chunks (each chunk its own short write
//! transaction), so ingest never waits behind a long prune.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, error, info};

use crate::dispatcher::Msg;
use crate::store::Store;
use crate::time;
use crate::verdict::{ReplyTo, Verdict};
use crate::voevent::{Key, Rejection};

/// Most records per transaction.
pub const MAX_BATCH: usize = 4096;
/// Most deletions per prune transaction.
pub const PRUNE_CHUNK: usize = 512;

/// One accepted event to make durable.
pub struct Record {
    pub key: Key,
    pub time: u64,
    pub ivorn: String,
    /// The author waiting for its ack (`None` for upstream events).
    pub reply: Option<ReplyTo>,
}

/// Committer thread body: runs until its channel closes (after draining it).
pub fn run_committer(store: Arc<Store>, rx: Receiver<Record>, dispatcher: Sender<Msg>) {
    let mut batch: Vec<Record> = Vec::with_capacity(64);
    let mut rows: Vec<(Key, u64)> = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        rows.clear();
        rows.extend(batch.iter().map(|r| (r.key, r.time)));
        let started = Instant::now();
        let result = store.insert_batch(&rows);
        let keys: Vec<Key> = rows.iter().map(|r| r.0).collect();
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
                let _ = dispatcher.send(Msg::Committed(keys));
            }
            Err(e) => {
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
                let _ = dispatcher.send(Msg::Failed(keys));
            }
        }
    }
}

/// Pruner thread body: prunes at start-up and then every `interval`, until `stop` closes.
pub fn run_pruner(store: Arc<Store>, interval: Duration, stop: Receiver<()>) {
    loop {
        let started = Instant::now();
        match store.prune(time::unix_now(), PRUNE_CHUNK) {
            Ok(0) => debug!("prune: nothing expired"),
            Ok(n) => info!(
                "pruned {n} expired records from the event database in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            ),
            Err(e) => error!("pruning the event database failed: {e}"),
        }
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use crossbeam_channel::unbounded;

    /// Records that are waiting together are committed together: one transaction, one
    /// `Committed` message, and every author answered after it.
    #[test]
    fn waiting_records_share_one_commit() {
        let dir = std::env::temp_dir().join(format!("bolide-committer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&StoreConfig::new(&dir)).unwrap());
        let (tx, rx) = unbounded();
        let (dtx, drx) = unbounded();
        let mut replies = Vec::new();
        for i in 0..10u8 {
            let (rtx, rrx) = crate::verdict::slot();
            replies.push(rrx);
            tx.send(Record {
                key: [i; 32],
                time: 1,
                ivorn: format!("ivo://x.y/z#{i}"),
                reply: Some(rtx),
            })
            .unwrap();
        }
        drop(tx);
        run_committer(Arc::clone(&store), rx, dtx);
        let msgs: Vec<Msg> = drx.try_iter().collect();
        assert_eq!(msgs.len(), 1, "expected one commit for ten waiting records");
        match &msgs[0] {
            Msg::Committed(keys) => assert_eq!(keys.len(), 10),
            _ => panic!("expected Committed"),
        }
        for r in replies {
            assert_eq!(r.wait_until(Instant::now()), Some(Verdict::Accepted));
        }
        assert_eq!(store.len().unwrap(), 10);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
