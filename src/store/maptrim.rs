//! Keeping LMDB's map of `data.mdb` out of the broker's RSS.
//!
//! LMDB reads every page through its shared, read-only map of the file. Each page read
//! stays mapped, and the kernel's fault-around maps the pages around it that are in the
//! page cache as well: with the archive, those are mostly events. Left alone, the RSS
//! would grow with the archive's size. The pages cost nothing to give back: they stay in
//! the page cache, and the next access maps them again (a minor fault).
//!
//! How fast pages get mapped depends on the file's layout, not on the bytes read or
//! written. A commit reads the root-to-leaf path of each database it changes; while a
//! catch-up holds an old snapshot, those are pages the previous commit wrote in new
//! places all over the file, and each maps its 64-KiB neighbourhood. So [`MapTrim`]
//! measures rather than estimates: after a commit (at most every [`WRITER_CHECK_EVERY`])
//! and after every [`CHECK_AFTER_READING`] bytes a reader goes through, it reads the
//! process's file-backed resident pages (`/proc/self/statm`, half a microsecond) and drops the
//! map's pages from the page tables (`madvise(MADV_DONTNEED)`) once they have grown by
//! [`MAPPED_LIMIT`] since the last drop.
//!
//! Dropping has a price: the pages every commit reads (the B-trees' upper levels, the
//! dedup records' leaves, LMDB's free pages) are mapped again, one fault per 64 KiB. A
//! busy dedup database's working set alone can pass the limit, and a writer that dropped
//! it at every limit would spend its time in page faults; so a commit drops the map at
//! most every [`WRITER_INTERVAL`]. A reader going through the archive reads each page
//! once and drops it at the limit.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Growth of the file-backed RSS after which the map's pages are dropped.
pub(super) const MAPPED_LIMIT: u64 = 4 << 20;
/// Bytes of events a reader goes through between two checks.
pub(super) const CHECK_AFTER_READING: u64 = 64 << 10;
/// Least time between two looks at the RSS after commits: commits can come several a
/// millisecond, and each look is a system call.
pub(super) const WRITER_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Least time between two drops a commit asks for.
pub(super) const WRITER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Without `/proc/self/statm`, the map's pages are dropped at every this many checks.
const BLIND_EVERY: u32 = 16;

/// The map of `data.mdb` and what is known of how much of it is mapped.
pub(super) struct MapTrim {
    /// LMDB's map of `data.mdb` (address, length), found once at open; it does not move
    /// while the environment is open.
    mapping: Option<(usize, usize)>,
    /// `/proc/self/statm`, read again at offset 0 for each check.
    statm: Option<fs::File>,
    page_size: u64,
    /// The process's file-backed resident bytes just after the last drop.
    floor: AtomicU64,
    /// Bytes of events read through the map since the last check.
    read: AtomicU64,
    /// Checks since the last drop (counted only without `statm`).
    blind: AtomicU32,
    /// When a commit may drop the map next, in milliseconds since `epoch`.
    writer_next_ms: AtomicU64,
    epoch: std::time::Instant,
}

impl MapTrim {
    /// Find the map of `data_file` (already opened by LMDB) in this process.
    pub(super) fn new(data_file: &Path) -> MapTrim {
        let statm = fs::File::open("/proc/self/statm")
            .map_err(|e| {
                log::debug!("/proc/self/statm: {e}: the event database's map is dropped by count")
            })
            .ok();
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let trim = MapTrim {
            mapping: crate::sys::find_file_mapping(data_file),
            statm,
            page_size,
            floor: AtomicU64::new(0),
            read: AtomicU64::new(0),
            blind: AtomicU32::new(0),
            writer_next_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        };
        trim.floor
            .store(trim.file_rss().unwrap_or(0), Ordering::Relaxed);
        trim
    }

    /// The map's address and length, if it was found.
    #[cfg(test)]
    pub(super) fn mapping(&self) -> Option<(usize, usize)> {
        self.mapping
    }

    /// A transaction committed: drop the map's pages if they have grown past the limit,
    /// looking at most every `WRITER_CHECK_EVERY` and `WRITER_INTERVAL` after a drop.
    pub(super) fn after_commit(&self) {
        let now = self.since_epoch_ms();
        if now >= self.writer_next_ms.load(Ordering::Relaxed) {
            let next = now + WRITER_CHECK_EVERY.as_millis() as u64;
            self.writer_next_ms.store(next, Ordering::Relaxed);
            self.check();
        }
    }

    /// A reader went through an archived event of `size` bytes.
    pub(super) fn after_read(&self, size: usize) {
        let size = size as u64;
        if self.read.fetch_add(size, Ordering::Relaxed) + size >= CHECK_AFTER_READING {
            self.read.store(0, Ordering::Relaxed);
            self.check();
        }
    }

    fn since_epoch_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The process's file-backed resident bytes (the third field of statm: file pages
    /// and shared memory, which bolide has none of).
    fn file_rss(&self) -> Option<u64> {
        let mut buf = [0u8; 128];
        let n = self.statm.as_ref()?.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let pages: u64 = text.split_ascii_whitespace().nth(2)?.parse().ok()?;
        Some(pages * self.page_size)
    }

    fn check(&self) {
        let grown = match self.file_rss() {
            Some(now) => {
                let floor = self.floor.fetch_min(now, Ordering::Relaxed).min(now);
                now - floor >= MAPPED_LIMIT
            }
            None => self.blind.fetch_add(1, Ordering::Relaxed) + 1 >= BLIND_EVERY,
        };
        if grown {
            self.drop_pages();
        }
    }

    /// Drop the map's pages from this process's page tables now.
    pub(super) fn drop_pages(&self) {
        self.blind.store(0, Ordering::Relaxed);
        let next = self.since_epoch_ms() + WRITER_INTERVAL.as_millis() as u64;
        self.writer_next_ms.store(next, Ordering::Relaxed);
        if let Some((addr, len)) = self.mapping {
            // SAFETY: `mapping` is LMDB's shared, read-only map of data.mdb, found at
            // open, and it stays mapped while the environment is open.
            if let Err(e) = unsafe { crate::sys::drop_mapped_pages(addr, len) } {
                log::debug!("madvise on the event database's map: {e}");
            }
        }
        if let Some(now) = self.file_rss() {
            self.floor.store(now, Ordering::Relaxed);
        }
    }

    /// Let the next commit drop the map (`shut` false) or no commit at all (`shut` true),
    /// whatever the time since the last drop (for tests).
    #[cfg(test)]
    pub(super) fn set_writer_gate(&self, shut: bool) {
        let next = if shut { u64::MAX } else { 0 };
        self.writer_next_ms.store(next, Ordering::Relaxed);
    }

    /// Bytes the file-backed RSS may still grow by before the next drop (for tests).
    #[cfg(test)]
    pub(super) fn headroom(&self) -> Option<u64> {
        let now = self.file_rss()?;
        Some((self.floor.load(Ordering::Relaxed) + MAPPED_LIMIT).saturating_sub(now))
    }
}
