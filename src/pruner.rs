//! The pruner thread: deletes dedup records older than the retention window, and archived
//! events older than the archive's.
//!
//! It prunes at start-up and then every `--eventdb-prune-interval`. [`Store::prune`] reads through
//! the records in a read transaction (which blocks no writer) and deletes the expired ones
//! in chunks of at most [`PRUNE_CHUNK`], each its own short write transaction, so a commit
//! never waits behind a long prune.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, error, info};

use crate::store::Store;
use crate::time;

/// Most deletions per prune transaction.
pub const PRUNE_CHUNK: usize = 512;

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
        match store.prune_archive(time::unix_now_ms(), PRUNE_CHUNK) {
            Ok(0) => {}
            Ok(n) => info!("pruned {n} archived events (past --archive-max-age or -size)"),
            Err(e) => error!("pruning the archive failed: {e}"),
        }
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}
