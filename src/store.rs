//! The persistent event database: duplicate detection for incoming VOEvents and, in the
//! same LMDB environment and transactions, the archive of accepted events.
//!
//! This module owns everything bolide keeps on disk about events it has
//! already seen: an LMDB environment (crate `lmdb-rkv`) in one directory,
//! the dedup record format inside it, expiry after a TTL, pruning of expired
//! records in small write transactions, and the transactions that write the
//! archive ([`crate::archive`] owns its format and retention rules).
//!
//! # On-disk layout
//!
//! The directory (`StoreConfig::dir`, created with its parents if missing)
//! holds the two files of an LMDB environment, `data.mdb` and `lock.mdb`, and
//! `bolide.lock`: a [`Store`] holds an exclusive `flock` on it (with its
//! process id inside) for as long as it is open, so a second broker on the same
//! directory is refused with [`StoreError::InUse`] instead of sharing it.
//! Readers that do not write (read-only tools) need not take it.
//! The environment contains two named databases:
//!
//! | database  | key                                        | value                     |
//! |-----------|--------------------------------------------|---------------------------|
//! | `meta`    | `format`                                   | `bolide-eventdb-5` (bytes)|
//! | `meta`    | `archive_id`, `next_seq`, `archive_count`, `archive_bytes` | see [`crate::archive`] |
//! | `meta`    | `kafka_group_id`, `kafka_published_seq` | the Kafka gateway's consumer group and last confirmed published seq (module `kafka`) |
//! | `events`  | 32-byte SHA-256 of the event's VTP span   | 8-byte big-endian Unix seconds of insertion |
//! | `archive`, `event_bytes`, `by_ivorn` | see [`crate::archive`] | |
//!
//! There is no time index: pruning reads through `events` (in a read
//! transaction, which blocks no one) and deletes what it found expired in
//! short write transactions. An index ordered by time would let it stop at
//! the first unexpired record, but every insert would then dirty a second
//! page at a random place (the digest makes keys random even within one
//! second), a cost paid on the ingest path for every event to save a
//! read-through paid once per `--eventdb-prune-interval` (6 h by default).
//! The figures are in `tests/bench/RESULTS.md` (Ingest, the `by_time` index).
//!
//! `meta/format` is written when the environment is created and checked on
//! every open; an LMDB environment without it (or with another value), or a
//! file that is not LMDB at all, is refused with [`StoreError::Corrupt`]
//! naming the file, rather than being modified. The exceptions are the older
//! formats, upgraded in place on open, keeping every record: format 1 (which
//! keeps a `by_time` index beside the same `events`: dropped) and format 2 (no
//! archive: an empty one is created), in one transaction; format 3 (each
//! archive entry's metadata and bytes in one value) is rewritten entry by entry
//! as metadata and `event_bytes` records, [`UPGRADE_CHUNK`] entries per
//! transaction, and says 3 until the last is done: an upgrade cut short (a
//! crash) goes on at the next open. Format 4 (every archive entry indexed in the
//! transaction that appends it, bytes compressed without a dictionary) is format 5
//! with an empty tail ([`crate::archive`]): only its format record changes. A
//! database of format 5 is refused by older versions of bolide, which would
//! neither read its newest entries by ivorn nor decompress its bytes.
//!
//! A record whose `time + ttl <= now` is expired: [`Store::seen`] reports it
//! as not seen, [`Store::insert_batch`] overwrites it, and [`Store::prune`]
//! deletes it.
//!
//! Every page LMDB reads stays mapped in the process until dropped: `maptrim`
//! drops the map's pages after commits and archive reads once they have grown
//! by a few MiB, so the RSS does not grow with the archive.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags,
};
use log::{info, warn};

use crate::archive::{self, ArchiveConfig, Counters, Dbs};

mod error;
mod maptrim;
use crate::voevent::Event;
pub use error::StoreError;
use error::{is_denied, map_lmdb, read_fail};
use maptrim::MapTrim;

/// SHA-256 of an event's VTP 2.0 span (root element start to end): the key of a record.
pub use crate::voevent::Key;

/// Value of the `format` record in the `meta` database.
pub const FORMAT: &[u8] = b"bolide-eventdb-5";
/// Older formats, upgraded in place on open: with a `by_time` index and no archive,
/// without an archive, with each archive entry in one value, and with every entry
/// indexed in the transaction that appends it.
const FORMAT_1: &[u8] = b"bolide-eventdb-1";
const FORMAT_2: &[u8] = b"bolide-eventdb-2";
const FORMAT_3: &[u8] = b"bolide-eventdb-3";
pub const FORMAT_4: &[u8] = b"bolide-eventdb-4";
/// Archive entries rewritten per transaction by the upgrade from format 3.
pub const UPGRADE_CHUNK: usize = 2000;
/// Default size of the memory map, i.e. the maximum size of `data.mdb`: 4 GiB, which
/// holds 30 days of a busy network's archive (GCN sent about 2 000 VOEvents a day of
/// 2-10 KB: at most 60 000 events, at most 0.6 GiB as they came and about a quarter of
/// that stored compressed) many times over, besides the dedup records.
pub const DEFAULT_MAP_SIZE: usize = 4 << 30;
/// Default lifetime of a record: 30 days.
pub const DEFAULT_TTL_SECS: u64 = 30 * 86_400;
/// A reasonable number of deletions per prune transaction: small enough that
/// the write lock is held for around a millisecond, large enough that the
/// per-commit cost is amortised.
pub const DEFAULT_PRUNE_CHUNK: usize = 1000;

const META_DB: &str = "meta";
const EVENTS_DB: &str = "events";
/// Format 1's time index, dropped by the upgrade to format 2.
const BY_TIME_DB: &str = "by_time";
const FORMAT_KEY: &[u8] = b"format";
const DATA_FILE: &str = "data.mdb";
/// Most archive entries deleted by retention inside one insert transaction.
const EVICT_PER_COMMIT: usize = 256;
/// Pages the archive keeps free beyond the reserve, for a transaction that deletes its
/// oldest entries: it copies the B-tree pages it changes (a path through each of its
/// databases and LMDB's free list) before any page it frees can be reused.
const EVICT_PAGES: usize = 24;
/// The file a writing [`Store`] holds an exclusive `flock` on.
pub const LOCK_FILE: &str = "bolide.lock";

/// How to open a [`Store`].
///
/// # `no_sync`
///
/// With `no_sync: false` (the default) every commit — i.e. every
/// [`Store::insert_batch`] and every prune chunk — waits for `fdatasync` of
/// `data.mdb`, so a committed batch survives an OS crash or power loss.
///
/// With `no_sync: true` the environment is opened with LMDB's `MDB_NOSYNC`
/// (which also implies skipping the meta-page sync that `MDB_NOMETASYNC`
/// alone would skip). Commits then return as soon as the pages have been
/// written into the OS page cache. What is at risk: transactions committed
/// since the kernel last wrote the file back (typically up to ~30 s on Linux)
/// can be lost on an **OS crash or power loss**; the database stays
/// consistent (LMDB keeps the previous meta page), it just forgets the most
/// recent events, which may then be accepted again as new. Nothing is lost on
/// a **process** crash (panic, abort, SIGKILL), because LMDB writes committed
/// pages to the file through the kernel's page cache, which outlives the
/// process. The test `process_abort_with_no_sync_loses_nothing` verifies the
/// latter by aborting a child process right after a no-sync commit and
/// reopening; the OS-crash case is not tested. [`Store::sync`] forces a flush.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory holding `data.mdb` and `lock.mdb`; created if missing.
    pub dir: PathBuf,
    /// Size of the memory map in bytes = maximum size of the database.
    /// Rounded up to a multiple of the page size by LMDB; if the existing file
    /// is larger, the file size wins; 0 means LMDB's default (1 MiB). A map
    /// too small for even the empty database (a few pages) makes `open` fail
    /// with [`StoreError::MapFull`].
    pub map_size: usize,
    /// Skip fsync on commit (see the type documentation for what is at risk).
    pub no_sync: bool,
    /// Lifetime of a record in seconds.
    pub ttl_secs: u64,
    /// What the archive keeps (`None`: `--no-archive`, dedup records only).
    pub archive: Option<ArchiveConfig>,
}

impl StoreConfig {
    /// A configuration with the defaults (4 GiB map, sync on, 30-day TTL, an archive
    /// keeping 30 days).
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            map_size: DEFAULT_MAP_SIZE,
            no_sync: false,
            ttl_secs: DEFAULT_TTL_SECS,
            archive: Some(ArchiveConfig {
                max_age_secs: DEFAULT_TTL_SECS,
                max_bytes: None,
            }),
        }
    }
}

/// Directories currently open in this process (canonical paths).
static OPEN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes its directory from `OPEN_DIRS` when dropped. It is the last field
/// of [`Store`], so it is dropped after the environment has been closed.
struct OpenGuard(PathBuf);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|p| p != &self.0);
    }
}

/// The event database. `Send + Sync`: share it as `Arc<Store>`.
///
/// Reads ([`seen`](Store::seen), [`len`](Store::len)) use LMDB read
/// transactions and never block or are blocked by writers. Writes
/// ([`insert_batch`](Store::insert_batch), [`prune`](Store::prune)) are
/// serialised by LMDB's single write lock.
pub struct Store {
    env: Environment,
    events: Database,
    dir: PathBuf,
    map_size: usize,
    /// Pages in the map, and how many of them inserts leave free (see `headroom`).
    map_pages: usize,
    reserve_pages: usize,
    page_size: usize,
    ttl_secs: u64,
    /// The archive's databases, what it keeps (`None`: nothing), and its counters (held
    /// by the one writer during a write transaction).
    archive: Dbs,
    archive_cfg: Option<ArchiveConfig>,
    counters: Mutex<Counters>,
    /// Notified after every commit that appended to the archive (with `counters`).
    appended: Condvar,
    archive_id: [u8; 16],
    /// LMDB's map of `data.mdb`, kept out of the RSS.
    map_trim: MapTrim,
    /// The directory's `flock`, released (closed) after the environment.
    _lock: fs::File,
    _guard: OpenGuard,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("map_size", &self.map_size)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl Store {
    /// Open (creating if needed) the event database in `cfg.dir`.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        if let Err(e) = fs::create_dir_all(&cfg.dir) {
            let not_dir = e.raw_os_error() == Some(libc::ENOTDIR)
                || (e.kind() == io::ErrorKind::AlreadyExists && !cfg.dir.is_dir());
            return Err(if not_dir {
                StoreError::NotADirectory {
                    path: cfg.dir.clone(),
                }
            } else if is_denied(e.kind(), e.raw_os_error()) {
                StoreError::ReadOnly {
                    path: cfg.dir.clone(),
                }
            } else {
                StoreError::Io {
                    path: cfg.dir.clone(),
                    source: e,
                }
            });
        }
        let dir = fs::canonicalize(&cfg.dir).map_err(|source| StoreError::Io {
            path: cfg.dir.clone(),
            source,
        })?;
        {
            let mut open = OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
            if open.contains(&dir) {
                return Err(StoreError::AlreadyOpen { path: dir });
            }
            open.push(dir.clone());
        }
        // From here on the guard releases the registry entry on every error path.
        let guard = OpenGuard(dir.clone());
        let lock = Self::lock(&dir)?;

        // NO_TLS: the reader slot belongs to the read transaction, not the
        // thread, and is released when the transaction ends. bolide runs a
        // thread per connection; without NO_TLS every thread that ever read
        // would pin one of the (default 126) reader slots until it exits.
        let mut flags = EnvironmentFlags::NO_TLS | EnvironmentFlags::NO_READAHEAD;
        if cfg.no_sync {
            flags |= EnvironmentFlags::NO_SYNC | EnvironmentFlags::NO_META_SYNC;
        }
        let env = Environment::new()
            .set_flags(flags)
            .set_max_dbs(8)
            .set_map_size(cfg.map_size)
            .open(&dir)
            .map_err(|e| map_lmdb(&dir, cfg.map_size, e))?;
        // The real map size (LMDB raises it to the file size if that is larger).
        let map_size = env.info().map(|i| i.map_size()).unwrap_or(cfg.map_size);
        let (events, archive, archive_id, from_3) = Self::init(&env, &dir, map_size)?;
        if from_3 {
            Self::upgrade_from_3(&env, &dir, map_size, archive)?;
        }
        let counters = {
            let txn = env
                .begin_ro_txn()
                .map_err(|e| map_lmdb(&dir, map_size, e))?;
            archive::load_counters(&txn, archive).map_err(|e| read_fail(&dir, map_size, e))?
        };
        let page_size = env
            .stat()
            .map(|s| s.page_size() as usize)
            .map_err(|e| map_lmdb(&dir, map_size, e))?;
        let map_pages = map_size / page_size.max(1);
        let map_trim = MapTrim::new(&dir.join(DATA_FILE));
        Ok(Store {
            env,
            events,
            dir,
            map_size,
            map_pages,
            reserve_pages: (map_pages / 64).clamp(8, 256),
            page_size,
            ttl_secs: cfg.ttl_secs,
            archive,
            archive_cfg: cfg.archive,
            counters: Mutex::new(counters),
            appended: Condvar::new(),
            archive_id,
            map_trim,
            _lock: lock,
            _guard: guard,
        })
    }

    /// Take the directory's exclusive lock and write this process's id into it.
    fn lock(dir: &Path) -> Result<fs::File, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                if is_denied(e.kind(), e.raw_os_error()) {
                    StoreError::ReadOnly { path: path.clone() }
                } else {
                    io_err(e)
                }
            })?;
        if !crate::sys::try_lock_exclusive(&file).map_err(io_err)? {
            let mut text = String::new();
            let _ = io::Read::read_to_string(&mut file, &mut text);
            return Err(StoreError::InUse {
                path: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        file.set_len(0).map_err(io_err)?;
        io::Write::write_all(&mut file, format!("{}\n", std::process::id()).as_bytes())
            .map_err(io_err)?;
        Ok(file)
    }

    /// Check (or, in an empty environment, create) the meta record and open
    /// the databases, in one write transaction; upgrade formats 1 and 2.
    fn init(
        env: &Environment,
        dir: &Path,
        map_size: usize,
    ) -> Result<(Database, Dbs, [u8; 16], bool), StoreError> {
        let err = |e| map_lmdb(dir, map_size, e);
        let corrupt = |reason: String| StoreError::Corrupt {
            path: dir.join(DATA_FILE),
            reason,
        };
        let mut txn = env.begin_rw_txn().map_err(err)?;
        // SAFETY (for the unsafe open_db/create_db/drop_db below): LMDB requires that
        // database handles are not opened by concurrent transactions of the
        // same environment. `env` is not shared yet (`Store::open` owns it)
        // and this is its only transaction.
        let create = |txn: &mut lmdb::RwTransaction<'_>, name: &str| unsafe {
            txn.create_db(Some(name), DatabaseFlags::empty())
                .map_err(err)
        };
        let (meta, from) = match unsafe { txn.open_db(Some(META_DB)) } {
            Ok(meta) => match txn.get(meta, &FORMAT_KEY) {
                Ok(v) if [FORMAT, FORMAT_1, FORMAT_2, FORMAT_3, FORMAT_4].contains(&v) => {
                    (meta, v.to_vec())
                }
                Ok(v) => {
                    return Err(corrupt(format!(
                        "format is {:?}, expected {:?}",
                        String::from_utf8_lossy(v),
                        String::from_utf8_lossy(FORMAT)
                    )))
                }
                Err(lmdb::Error::NotFound) => {
                    return Err(corrupt(
                        "the meta database has no format record".to_string(),
                    ))
                }
                Err(e) => return Err(err(e)),
            },
            Err(lmdb::Error::NotFound) => {
                // No meta database: fine only if the environment is empty.
                let main = unsafe { txn.open_db(None) }.map_err(err)?;
                let entries = txn.stat(main).map_err(err)?.entries();
                if entries != 0 {
                    return Err(corrupt(format!(
                        "an LMDB database without a bolide `{META_DB}` record"
                    )));
                }
                (create(&mut txn, META_DB)?, Vec::new())
            }
            Err(lmdb::Error::Incompatible) => {
                return Err(corrupt(
                    "an LMDB database with a foreign layout".to_string(),
                ))
            }
            Err(e) => return Err(err(e)),
        };
        let open_named =
            |txn: &lmdb::RwTransaction<'_>, name: &str| match unsafe { txn.open_db(Some(name)) } {
                Ok(db) => Ok(db),
                Err(lmdb::Error::NotFound) | Err(lmdb::Error::Incompatible) => {
                    Err(corrupt(format!("database `{name}` is missing")))
                }
                Err(e) => Err(err(e)),
            };
        let fresh = from.is_empty();
        let events = if fresh {
            create(&mut txn, EVENTS_DB)?
        } else {
            open_named(&txn, EVENTS_DB)?
        };
        if from == FORMAT_1 {
            // Format 1 -> 2: the same `events`, without the time index.
            let by_time = open_named(&txn, BY_TIME_DB)?;
            // SAFETY: as above; `by_time` is not used again after this.
            unsafe { txn.drop_db(by_time) }.map_err(err)?;
        }
        let from_3 = from == FORMAT_3;
        let dbs = if from == FORMAT || from == FORMAT_4 || from_3 {
            Dbs {
                archive: open_named(&txn, archive::ARCHIVE_DB)?,
                // Format 3 (`upgrade_from_3`): its entries' bytes go there.
                bytes: if from_3 {
                    create(&mut txn, archive::BYTES_DB)?
                } else {
                    open_named(&txn, archive::BYTES_DB)?
                },
                by_ivorn: open_named(&txn, archive::BY_IVORN_DB)?,
                meta,
            }
        } else {
            // A new environment, or format 1/2 -> 5: an empty archive.
            let dbs = Dbs {
                archive: create(&mut txn, archive::ARCHIVE_DB)?,
                bytes: create(&mut txn, archive::BYTES_DB)?,
                by_ivorn: create(&mut txn, archive::BY_IVORN_DB)?,
                meta,
            };
            let id = archive::new_identity().map_err(|source| StoreError::Io {
                path: PathBuf::from("/dev/urandom"),
                source,
            })?;
            txn.put(meta, &archive::ID_KEY, &id, WriteFlags::empty())
                .map_err(err)?;
            archive::store_counters(
                &mut txn,
                dbs,
                &Counters {
                    next_seq: 1,
                    ..Counters::default()
                },
            )
            .map_err(err)?;
            txn.put(meta, &FORMAT_KEY, &FORMAT, WriteFlags::empty())
                .map_err(err)?;
            if !fresh {
                info!(
                    "upgraded event database {} from {} to {} (records kept; the archive starts empty)",
                    dir.join(DATA_FILE).display(),
                    String::from_utf8_lossy(&from),
                    String::from_utf8_lossy(FORMAT)
                );
            }
            dbs
        };
        if from == FORMAT_4 {
            // Format 4 -> 5: the same records; its index is whole (an empty tail), and
            // its bytes' codec stays readable.
            txn.put(meta, &FORMAT_KEY, &FORMAT, WriteFlags::empty())
                .map_err(err)?;
            info!(
                "upgraded event database {} from {} to {} (every record and archived event kept)",
                dir.join(DATA_FILE).display(),
                String::from_utf8_lossy(FORMAT_4),
                String::from_utf8_lossy(FORMAT)
            );
        }
        let id: [u8; 16] = match txn.get(meta, &archive::ID_KEY) {
            Ok(v) => v
                .try_into()
                .map_err(|_| corrupt("the archive identity is not 16 bytes".to_string()))?,
            Err(lmdb::Error::NotFound) => {
                return Err(corrupt("the archive has no identity".to_string()))
            }
            Err(e) => return Err(err(e)),
        };
        txn.commit().map_err(err)?;
        Ok((events, dbs, id, from_3))
    }

    /// Rewrite a format-3 archive's entries as metadata and `event_bytes` records,
    /// [`UPGRADE_CHUNK`] per committed transaction, then mark the database as the current
    /// format (its `by_ivorn` and counters are whole: an empty tail).
    fn upgrade_from_3(
        env: &Environment,
        dir: &Path,
        map_size: usize,
        dbs: Dbs,
    ) -> Result<(), StoreError> {
        let err = |e| map_lmdb(dir, map_size, e);
        let count = {
            let txn = env.begin_ro_txn().map_err(err)?;
            txn.stat(dbs.archive).map_err(err)?.entries()
        };
        info!(
            "upgrading event database {} from {} to {}: rewriting {count} archived events",
            dir.join(DATA_FILE).display(),
            String::from_utf8_lossy(FORMAT_3),
            String::from_utf8_lossy(FORMAT)
        );
        let mut after = 0;
        loop {
            let mut txn = env.begin_rw_txn().map_err(err)?;
            let last =
                archive::v1::upgrade_chunk(&mut txn, dbs, after, UPGRADE_CHUNK).map_err(err)?;
            if last.is_none() {
                txn.put(dbs.meta, &FORMAT_KEY, &FORMAT, WriteFlags::empty())
                    .map_err(err)?;
            }
            txn.commit().map_err(err)?;
            match last {
                Some(seq) => after = seq,
                None => break,
            }
        }
        info!(
            "upgraded event database {} to {} (every archived event kept)",
            dir.join(DATA_FILE).display(),
            String::from_utf8_lossy(FORMAT)
        );
        Ok(())
    }

    fn err(&self, e: lmdb::Error) -> StoreError {
        map_lmdb(&self.dir, self.map_size, e)
    }

    fn read_fail(&self, e: archive::ReadFail) -> StoreError {
        read_fail(&self.dir, self.map_size, e)
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.dir.join(DATA_FILE),
            reason,
        }
    }

    fn decode_time(&self, v: &[u8]) -> Result<u64, StoreError> {
        let b: [u8; 8] = v
            .try_into()
            .map_err(|_| self.corrupt(format!("an events record has {} bytes, not 8", v.len())))?;
        Ok(u64::from_be_bytes(b))
    }

    fn expired(&self, time: u64, now: u64) -> bool {
        time.saturating_add(self.ttl_secs) <= now
    }

    /// The stored insertion time of `key`, expired or not.
    pub fn time_of(&self, key: &Key) -> Result<Option<u64>, StoreError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.err(e))?;
        match txn.get(self.events, key) {
            Ok(v) => Ok(Some(self.decode_time(v)?)),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Whether `key` has an unexpired record at time `now` (Unix seconds).
    /// A record with `time + ttl <= now` counts as not seen.
    pub fn seen(&self, key: &Key, now: u64) -> Result<bool, StoreError> {
        Ok(matches!(self.time_of(key)?, Some(t) if !self.expired(t, now)))
    }

    /// Store every `(key, time)` in one write transaction with one commit
    /// (group commit: one fsync for the whole batch), and archive each of
    /// `events` (unless the archive is off) in the same transaction. An
    /// existing record for a key — expired or not — is replaced by the new
    /// time; a key repeated within the batch ends with its last time. On error
    /// nothing of the batch is stored.
    ///
    /// The archive never costs an author its ack: when the map is short of
    /// space, the oldest archive entries are deleted first, and if that is not
    /// enough the batch's dedup records are stored without archiving it.
    ///
    /// Very large batches can fail with LMDB's `TxnFull` (on the order of a
    /// million records); batches of thousands are fine.
    pub fn insert_batch(
        &self,
        records: &[(Key, u64)],
        events: &[&Event],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let archiving = self.archive_cfg.is_some() && !events.is_empty();
        if archiving {
            // An archive entry needs contiguous free pages, which a fragmented free list
            // may not have even when the count says so: a transaction that still finds
            // the map full gets more of the oldest entries deleted, and is retried.
            let mut force = 0;
            for _ in 0..4 {
                if !self.make_room(records.len(), events, force)? {
                    break;
                }
                match self.write_batch(records, events) {
                    Err(lmdb::Error::MapFull) => {
                        force = (force * 2).max(self.batch_pages(events) * 4)
                    }
                    other => {
                        self.map_trim.after_commit();
                        return other.map_err(|e| self.err(e));
                    }
                }
            }
            warn!(
                "event database {} is full even without the archive's older events: {} events recorded but not archived",
                self.dir.display(),
                events.len()
            );
        }
        if !self.headroom(records.len(), 0).map_err(|e| self.err(e))? {
            return Err(StoreError::MapFull {
                path: self.dir.clone(),
                map_size: self.map_size,
            });
        }
        let written = self.write_batch(records, &[]).map_err(|e| self.err(e));
        self.map_trim.after_commit();
        written
    }

    /// One write transaction: the dedup records, and the archive entries of `events`
    /// with the retention rules applied; the counters change only if it commits.
    fn write_batch(&self, records: &[(Key, u64)], events: &[&Event]) -> lmdb::Result<()> {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = *counters;
        let mut txn = self.env.begin_rw_txn()?;
        for (key, time) in records {
            txn.put(self.events, key, &time.to_be_bytes(), WriteFlags::empty())?;
        }
        if let (false, Some(cfg)) = (events.is_empty(), self.archive_cfg) {
            let now_ms = crate::time::unix_now_ms();
            for event in events {
                archive::append(&mut txn, self.archive, &mut c, event, now_ms)?;
            }
            // The size bound holds at every commit; age is the pruner's, but a few of
            // the oldest go here too, so a busy archive never waits hours for it.
            let cutoff = now_ms.saturating_sub(cfg.max_age_secs.saturating_mul(1000));
            let over = |oldest_ms: u64, c: &Counters| {
                cfg.max_bytes.is_some_and(|max| c.bytes > max) || oldest_ms < cutoff
            };
            let (gone, _) =
                archive::evict_oldest(&mut txn, self.archive, &mut c, EVICT_PER_COMMIT, &over)?;
            if gone > 0 || c.next_seq - c.indexed >= archive::INDEX_EVERY {
                archive::index_tail(&mut txn, self.archive, &mut c)?;
            }
        }
        txn.commit()?;
        if c.next_seq != counters.next_seq {
            self.appended.notify_all();
        }
        *counters = c;
        Ok(())
    }

    /// Pages the archive entries of `events` take, at most: each event's bytes as if
    /// uncompressed, its metadata and keys.
    fn batch_pages(&self, events: &[&Event]) -> usize {
        let page = self.page_size.max(1);
        events
            .iter()
            .map(|e| (e.payload().len() + 2 * e.ivorn.len() + 256).div_ceil(page) + 2)
            .sum()
    }

    /// Make room in the map for `n` dedup records and the archive entries of `events`,
    /// deleting the oldest archive entries if need be (each deletion in its own
    /// committed transaction, so its pages are free for the next), and at least `force`
    /// pages' worth of them. `false` if even an empty archive would leave too little
    /// room.
    fn make_room(&self, n: usize, events: &[&Event], force: usize) -> Result<bool, StoreError> {
        let page = self.page_size.max(1);
        let pages = self.batch_pages(events);
        let mut force = force;
        for _ in 0..64 {
            if force == 0
                && self
                    .headroom(n, pages + EVICT_PAGES)
                    .map_err(|e| self.err(e))?
            {
                return Ok(true);
            }
            let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            if counters.count == 0 {
                return Ok(false);
            }
            let mut c = *counters;
            let mut txn = self.env.begin_rw_txn().map_err(|e| self.err(e))?;
            let want = (pages.max(force) * page) as u64;
            let start = c.bytes;
            let (gone, _) = archive::evict_oldest(
                &mut txn,
                self.archive,
                &mut c,
                EVICT_PER_COMMIT,
                &|_, c: &Counters| start - c.bytes < want,
            )
            .map_err(|e| self.err(e))?;
            archive::index_tail(&mut txn, self.archive, &mut c).map_err(|e| self.err(e))?;
            txn.commit().map_err(|e| self.err(e))?;
            *counters = c;
            force = 0;
            warn!(
                "event database {} is short of space: deleted the {gone} oldest archived events",
                self.dir.display()
            );
        }
        Ok(false)
    }

    /// Whether a batch of `n` records (and `extra` pages more) leaves the reserve free.
    /// In a full map even a deletion needs free pages (LMDB copies every page it
    /// changes), so inserts stop short of filling it: [`Store::insert_batch`] refuses a
    /// batch unless at least `reserve_pages` (1/64 of the map, between 8 and 256 pages)
    /// would remain besides a generous `2n + 4` pages for the batch itself, and
    /// [`Store::prune`] can then always delete. Cheap while the map has room (one read
    /// of the meta page); near the end it also counts the free list.
    fn headroom(&self, n: usize, extra: usize) -> Result<bool, lmdb::Error> {
        let need = self.reserve_pages + 2 * n + 4 + extra;
        let unused = self
            .map_pages
            .saturating_sub(self.env.info()?.last_pgno() + 1);
        if unused >= need {
            return Ok(true);
        }
        Ok(unused + self.env.freelist()? >= need)
    }

    /// Delete archive entries older than the archive's maximum age, and the oldest
    /// beyond its maximum size, at most `chunk` per write transaction; the number
    /// deleted.
    pub fn prune_archive(&self, now_ms: u64, chunk: usize) -> Result<usize, StoreError> {
        let Some(cfg) = self.archive_cfg else {
            return Ok(0);
        };
        let cutoff = now_ms.saturating_sub(cfg.max_age_secs.saturating_mul(1000));
        let mut total = 0;
        loop {
            let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            let mut c = *counters;
            let mut txn = self.env.begin_rw_txn().map_err(|e| self.err(e))?;
            let (gone, _) = archive::evict_oldest(
                &mut txn,
                self.archive,
                &mut c,
                chunk.max(1),
                &|oldest, c: &Counters| {
                    oldest < cutoff || cfg.max_bytes.is_some_and(|max| c.bytes > max)
                },
            )
            .map_err(|e| self.err(e))?;
            if gone == 0 {
                return Ok(total);
            }
            archive::index_tail(&mut txn, self.archive, &mut c).map_err(|e| self.err(e))?;
            txn.commit().map_err(|e| self.err(e))?;
            *counters = c;
            total += gone;
            drop(counters);
            self.map_trim.after_commit();
            std::thread::yield_now();
        }
    }

    /// The LMDB environment, for the archive's readers in this process
    /// ([`crate::archive_reader::ArchiveReader::from_store`]).
    pub fn env(&self) -> &Environment {
        &self.env
    }

    /// The archive's databases in [`Store::env`].
    pub fn archive_dbs(&self) -> Dbs {
        self.archive
    }

    /// Whether accepted events are archived (not `--no-archive`).
    pub fn archiving(&self) -> bool {
        self.archive_cfg.is_some()
    }

    /// The archive's counters: next seq, newest time, events and bytes held.
    pub fn archive_counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the archive holds an entry after `seq` (its next seq is beyond
    /// `seq + 1`) or `timeout` passes; the next seq either way.
    pub fn wait_for_archive(&self, seq: u64, timeout: Duration) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let (c, _) = self
            .appended
            .wait_timeout_while(counters, timeout, |c| c.next_seq <= seq + 1)
            .unwrap_or_else(|e| e.into_inner());
        c.next_seq
    }

    /// Visit the archive's entries from seq `from` on, in seq order, in one read
    /// transaction (which blocks no writer), until `visit` returns `false`; the number
    /// visited. Entries already deleted by retention are simply not there. Every
    /// `TRIM_AFTER_READING` bytes of events read, by any reader, the map's pages are
    /// dropped, so a catch-up through the whole archive does not map it all.
    pub fn read_archive(
        &self,
        from: u64,
        mut visit: impl FnMut(&archive::Entry<'_>) -> bool,
    ) -> Result<usize, StoreError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.err(e))?;
        let mut cursor = txn
            .open_ro_cursor(self.archive.archive)
            .map_err(|e| self.err(e))?;
        let mut n = 0;
        let mut buf = Vec::new();
        for item in cursor.iter_from(from.to_be_bytes()) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            let meta = archive::decode(seq, v).map_err(|e| self.corrupt(e.to_string()))?;
            let entry = archive::with_bytes(&txn, self.archive, &meta, &mut buf)
                .map_err(|e| self.read_fail(e))?;
            n += 1;
            self.map_trim.after_read(entry.size);
            if !visit(&entry) {
                break;
            }
        }
        Ok(n)
    }

    /// The seq of the newest archived event with this ivorn (and this dedup key, if
    /// given), found in the tail or else through `by_ivorn` (`None`: not in the
    /// archive, e.g. not committed yet or deleted by retention).
    pub fn archive_seq_of(
        &self,
        ivorn: &str,
        key: Option<&Key>,
    ) -> Result<Option<u64>, StoreError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.err(e))?;
        let mut newest = None;
        archive::for_each_in_tail(&txn, self.archive, |e| {
            if e.ivorn == ivorn && key.map_or(true, |k| e.key == *k) {
                newest = Some(e.seq);
            }
        })
        .map_err(|e| self.read_fail(e))?;
        if newest.is_some() {
            return Ok(newest);
        }
        let mut cursor = txn
            .open_ro_cursor(self.archive.by_ivorn)
            .map_err(|e| self.err(e))?;
        let prefix = archive::ivorn_key(ivorn, 0);
        let prefix = &prefix[..prefix.len() - 8];
        let mut found = None;
        for item in cursor.iter_from(prefix) {
            let (k, _) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(prefix) {
                break;
            }
            let Some(seq) = archive::seq_of_ivorn_key(k).filter(|_| k.len() == prefix.len() + 8)
            else {
                continue;
            };
            match txn.get(self.archive.archive, &seq.to_be_bytes()) {
                Ok(v) => {
                    let e = archive::decode(seq, v).map_err(|e| self.corrupt(e.to_string()))?;
                    if e.ivorn == ivorn && key.map_or(true, |k| e.key == *k) {
                        found = Some(seq);
                    }
                }
                Err(lmdb::Error::NotFound) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(found)
    }

    /// A value of the `meta` database (`None` if absent). Keys of other modules live
    /// there beside the format and the archive's counters (e.g. the Kafka gateway's
    /// group id and published position).
    pub fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.err(e))?;
        match txn.get(self.archive.meta, &key) {
            Ok(v) => Ok(Some(v.to_vec())),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Set a value of the `meta` database, in its own (durable, unless `--no-sync`)
    /// write transaction.
    pub fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.env.begin_rw_txn().map_err(|e| self.err(e))?;
        txn.put(self.archive.meta, &key, &value, WriteFlags::empty())
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// The value of `key` in `meta`, set to `make()` first if absent (one write
    /// transaction, so two callers never see different values).
    pub fn meta_get_or_insert(
        &self,
        key: &[u8],
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(v) = self.meta_get(key)? {
            return Ok(v);
        }
        let mut txn = self.env.begin_rw_txn().map_err(|e| self.err(e))?;
        let v = match txn.get(self.archive.meta, &key) {
            Ok(v) => v.to_vec(),
            Err(lmdb::Error::NotFound) => {
                let v = make();
                txn.put(self.archive.meta, &key, &v, WriteFlags::empty())
                    .map_err(|e| self.err(e))?;
                v
            }
            Err(e) => return Err(self.err(e)),
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(v)
    }

    /// The archive's identity, created with it.
    pub fn archive_id(&self) -> [u8; 16] {
        self.archive_id
    }

    /// Delete every record with `time + ttl <= now`, at most `chunk` deletions
    /// (at least one) per write transaction; each chunk is committed before
    /// the next starts, so writers interleave. The records are found by reading
    /// through `events` in key order, a chunk's worth at a time, each in a
    /// read transaction (which never blocks a writer); a record is deleted
    /// only if it is still expired inside the write transaction. Returns the
    /// number of records deleted.
    pub fn prune(&self, now: u64, chunk: usize) -> Result<usize, StoreError> {
        let chunk = chunk.max(1);
        let mut total = 0;
        // The last key looked at: the next chunk starts after it.
        let mut after: Option<Key> = None;
        loop {
            let mut victims: Vec<Key> = Vec::with_capacity(chunk.min(4096));
            let mut at_end = true;
            {
                let txn = self.env.begin_ro_txn().map_err(|e| self.err(e))?;
                let mut cursor = txn.open_ro_cursor(self.events).map_err(|e| self.err(e))?;
                let iter = match &after {
                    Some(k) => cursor.iter_from(k),
                    None => cursor.iter_start(),
                };
                for item in iter {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    let k: Key = k.try_into().map_err(|_| {
                        self.corrupt(format!("an events key has {} bytes, not 32", k.len()))
                    })?;
                    if after == Some(k) {
                        continue;
                    }
                    after = Some(k);
                    if self.expired(self.decode_time(v)?, now) {
                        victims.push(k);
                        if victims.len() >= chunk {
                            at_end = false;
                            break;
                        }
                    }
                }
            }
            total += self.delete_expired(&victims, now)?;
            self.map_trim.after_commit();
            if at_end {
                return Ok(total);
            }
            // Give a waiting writer a chance at the write lock.
            std::thread::yield_now();
        }
    }

    /// Delete those of `keys` that are (still) expired, in one write transaction; a
    /// record re-inserted since it was found expired is kept. In a full map even a
    /// deletion needs a few free pages (LMDB copies the pages it changes), so a
    /// transaction that fails with `MapFull` is retried as two halves, down to single
    /// records: each committed deletion frees pages for the next.
    fn delete_expired(&self, keys: &[Key], now: u64) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let attempt = || -> Result<usize, lmdb::Error> {
            let mut txn = self.env.begin_rw_txn()?;
            let mut deleted = 0;
            for key in keys {
                let time = match txn.get(self.events, key) {
                    Ok(val) => self.decode_time(val).map_err(|_| lmdb::Error::Corrupted)?,
                    Err(lmdb::Error::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                if self.expired(time, now) {
                    txn.del(self.events, key, None)?;
                    deleted += 1;
                }
            }
            txn.commit()?;
            Ok(deleted)
        };
        match attempt() {
            Err(lmdb::Error::MapFull) if keys.len() > 1 => {
                let (a, b) = keys.split_at(keys.len() / 2);
                Ok(self.delete_expired(a, now)? + self.delete_expired(b, now)?)
            }
            other => other.map_err(|e| self.err(e)),
        }
    }

    /// Number of records, expired or not.
    pub fn len(&self) -> Result<usize, StoreError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.err(e))?;
        let stat = txn.stat(self.events).map_err(|e| self.err(e))?;
        Ok(stat.entries())
    }

    /// Whether there are no records at all.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Flush committed transactions to disk (useful with `no_sync`).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.env.sync(true).map_err(|e| self.err(e))
    }

    /// The (canonical) directory holding the database.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The TTL in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }
}

#[cfg(test)]
mod tests;
