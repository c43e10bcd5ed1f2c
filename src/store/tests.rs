//! Unit tests of the event database: records, expiry, chunked prune, the map's reserve,
//! format checks, the upgrades of formats 1 and 2, and the archive's retention.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const DAY: u64 = 86_400;
const NOW: u64 = 1_700_000_000;

/// A unique directory under the temp dir, removed on drop (also on panic).
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "bolide-store-{}-{}-{}",
            name,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        TestDir(p)
    }
    fn cfg(&self) -> StoreConfig {
        StoreConfig::new(&self.0)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn key(i: u64) -> Key {
    let mut k = [0x5au8; 32];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

#[test]
fn store_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn insert_seen_persist() {
    let d = TestDir::new("basic");
    {
        let s = Store::open(&d.cfg()).unwrap();
        assert!(s.is_empty().unwrap());
        s.insert_batch(&[(key(1), NOW), (key(2), NOW)], &[])
            .unwrap();
        assert!(s.seen(&key(1), NOW).unwrap());
        assert!(s.seen(&key(2), NOW + 10).unwrap());
        assert!(!s.seen(&key(3), NOW).unwrap());
        assert_eq!(s.len().unwrap(), 2);
        // Same directory twice in one process is refused.
        let again = Store::open(&d.cfg()).unwrap_err();
        assert!(matches!(again, StoreError::AlreadyOpen { .. }), "{again}");
    }
    let s = Store::open(&d.cfg()).unwrap();
    assert!(s.seen(&key(1), NOW).unwrap());
    assert!(s.seen(&key(2), NOW).unwrap());
    assert!(!s.seen(&key(3), NOW).unwrap());
    assert_eq!(s.len().unwrap(), 2);
    assert_eq!(s.path(), fs::canonicalize(&d.0).unwrap());
}

#[test]
fn creates_parent_dirs() {
    let d = TestDir::new("parents");
    let cfg = StoreConfig::new(d.0.join("a/b/c"));
    let s = Store::open(&cfg).unwrap();
    assert!(s.path().join("data.mdb").exists());
}

#[test]
fn expiry_and_prune_in_chunks() {
    let d = TestDir::new("expiry");
    let mut cfg = d.cfg();
    cfg.ttl_secs = 10 * DAY;
    let s = Store::open(&cfg).unwrap();
    // 250 expired (ages 10..=259 days: exactly-at-ttl counts as expired), 100 fresh.
    let mut recs = Vec::new();
    for i in 0..250 {
        recs.push((key(i), NOW - (10 + i) * DAY));
    }
    for i in 250..350 {
        recs.push((key(i), NOW - (i - 250) * 60));
    }
    s.insert_batch(&recs, &[]).unwrap();
    assert_eq!(s.len().unwrap(), 350);
    assert!(!s.seen(&key(0), NOW).unwrap(), "exactly ttl old is expired");
    assert!(s.seen(&key(0), NOW - 1).unwrap());
    assert!(!s.seen(&key(100), NOW).unwrap());
    assert!(s.seen(&key(300), NOW).unwrap());
    // Chunk 7 forces many transactions.
    assert_eq!(s.prune(NOW, 7).unwrap(), 250);
    assert_eq!(s.len().unwrap(), 100);
    for i in 250..350 {
        assert!(s.seen(&key(i), NOW).unwrap());
    }
    assert_eq!(s.prune(NOW, 7).unwrap(), 0);
    // chunk 0 is treated as 1
    assert_eq!(s.prune(NOW + 11 * DAY, 0).unwrap(), 100);
    assert!(s.is_empty().unwrap());
}

#[test]
fn overwrite_expired_record() {
    let d = TestDir::new("overwrite");
    let s = Store::open(&d.cfg()).unwrap();
    let old = NOW - 40 * DAY;
    s.insert_batch(&[(key(1), old), (key(2), old)], &[])
        .unwrap();
    assert!(!s.seen(&key(1), NOW).unwrap());
    // Re-insert key 1 fresh; key 1 also repeated in the batch: last wins.
    s.insert_batch(&[(key(1), NOW - 5), (key(1), NOW)], &[])
        .unwrap();
    assert_eq!(s.time_of(&key(1)).unwrap(), Some(NOW));
    assert!(s.seen(&key(1), NOW).unwrap());
    assert_eq!(s.len().unwrap(), 2);
    // Only key 2 is still expired.
    assert_eq!(s.prune(NOW, 100).unwrap(), 1);
    assert!(s.seen(&key(1), NOW).unwrap());
    assert_eq!(s.len().unwrap(), 1);
}

/// Expired and fresh records interleaved in key order, pruned in chunks smaller than
/// the runs: every expired one goes, every fresh one stays, whatever the boundaries.
#[test]
fn prune_interleaved_in_key_order() {
    let d = TestDir::new("interleaved");
    let s = Store::open(&d.cfg()).unwrap();
    let recs: Vec<(Key, u64)> = (0..1000)
        .map(|i| (key(i), if i % 3 == 0 { NOW - 40 * DAY } else { NOW }))
        .collect();
    s.insert_batch(&recs, &[]).unwrap();
    for chunk in [1, 2, 7, 334, 5000] {
        let d2 = TestDir::new("interleaved-chunk");
        let s2 = Store::open(&d2.cfg()).unwrap();
        s2.insert_batch(&recs, &[]).unwrap();
        assert_eq!(s2.prune(NOW, chunk).unwrap(), 334, "chunk {chunk}");
        assert_eq!(s2.len().unwrap(), 666, "chunk {chunk}");
        for i in 0..1000 {
            assert_eq!(
                s2.seen(&key(i), NOW).unwrap(),
                i % 3 != 0,
                "chunk {chunk}, key {i}"
            );
        }
    }
    assert_eq!(s.prune(NOW, 10).unwrap(), 334);
}

/// An LMDB environment in `d` made without `Store`, and its `meta` database: for
/// writing databases the way other versions (or damage) left them.
fn raw_env(d: &TestDir) -> (Environment, Database) {
    fs::create_dir_all(&d.0).unwrap();
    let env = Environment::new().set_max_dbs(4).open(&d.0).unwrap();
    let meta = env
        .create_db(Some(META_DB), DatabaseFlags::empty())
        .unwrap();
    (env, meta)
}

/// A format-1 database (with its `by_time` index) is upgraded in place on open: the
/// records are kept, the index is gone, the format says 2, and it opens as 2 again.
#[test]
fn format_1_is_upgraded_in_place() {
    let d = TestDir::new("format1");
    {
        let (env, meta) = raw_env(&d);
        let events = env
            .create_db(Some(EVENTS_DB), DatabaseFlags::empty())
            .unwrap();
        let by_time = env
            .create_db(Some(BY_TIME_DB), DatabaseFlags::empty())
            .unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(meta, &FORMAT_KEY, &FORMAT_1, WriteFlags::empty())
            .unwrap();
        for (i, t) in [(1, NOW), (2, NOW - 40 * DAY)] {
            txn.put(events, &key(i), &t.to_be_bytes(), WriteFlags::empty())
                .unwrap();
            let mut tk = [0u8; 40];
            tk[..8].copy_from_slice(&t.to_be_bytes());
            tk[8..].copy_from_slice(&key(i));
            txn.put(by_time, &tk, &[0u8; 0], WriteFlags::empty())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    {
        let s = Store::open(&d.cfg()).unwrap();
        assert_eq!(s.len().unwrap(), 2);
        assert_eq!(s.time_of(&key(1)).unwrap(), Some(NOW));
        assert!(s.seen(&key(1), NOW).unwrap());
        assert!(!s.seen(&key(2), NOW).unwrap());
        let txn = s.env.begin_ro_txn().unwrap();
        let meta = unsafe { txn.open_db(Some(META_DB)) }.unwrap();
        assert_eq!(txn.get(meta, &FORMAT_KEY).unwrap(), FORMAT);
        assert!(matches!(
            unsafe { txn.open_db(Some(BY_TIME_DB)) },
            Err(lmdb::Error::NotFound)
        ));
        drop(txn);
        assert_eq!(s.prune(NOW, 10).unwrap(), 1);
    }
    let s = Store::open(&d.cfg()).unwrap();
    assert_eq!(s.len().unwrap(), 1);
    assert!(s.seen(&key(1), NOW).unwrap());
}

#[test]
fn batch_of_10000() {
    let d = TestDir::new("batch");
    let mut cfg = d.cfg();
    cfg.no_sync = true;
    let s = Store::open(&cfg).unwrap();
    let recs: Vec<(Key, u64)> = (0..10_000).map(|i| (key(i), NOW + i % 100)).collect();
    s.insert_batch(&recs, &[]).unwrap();
    assert_eq!(s.len().unwrap(), 10_000);
    assert!(s.seen(&key(0), NOW).unwrap());
    assert!(s.seen(&key(9_999), NOW).unwrap());
    assert!(!s.seen(&key(10_000), NOW).unwrap());
    s.sync().unwrap();
}

#[test]
fn garbage_file_refused() {
    let d = TestDir::new("garbage");
    fs::create_dir_all(&d.0).unwrap();
    let junk: Vec<u8> = (0..16384u32).map(|i| (i * 7 + 3) as u8).collect();
    fs::write(d.0.join("data.mdb"), junk).unwrap();
    let e = Store::open(&d.cfg()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("data.mdb") && msg.contains("move it away"),
        "{msg}"
    );
}

#[test]
fn foreign_lmdb_refused() {
    let d = TestDir::new("foreign");
    fs::create_dir_all(&d.0).unwrap();
    {
        // An LMDB environment with unrelated data in the main database.
        let env = Environment::new().open(&d.0).unwrap();
        let db = env.open_db(None).unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(db, b"hello", b"world", WriteFlags::empty())
            .unwrap();
        txn.commit().unwrap();
    }
    let e = Store::open(&d.cfg()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("data.mdb"), "{e}");
}

#[test]
fn wrong_format_refused() {
    let d = TestDir::new("format");
    {
        let (env, db) = raw_env(&d);
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(db, &FORMAT_KEY, b"bolide-eventdb-99", WriteFlags::empty())
            .unwrap();
        txn.commit().unwrap();
    }
    let e = Store::open(&d.cfg()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("bolide-eventdb-99"), "{e}");
}

#[test]
fn unwritable_location_refused() {
    // Under a regular file: fails for root too.
    let cfg = StoreConfig::new("/dev/null/bolide");
    let e = Store::open(&cfg).unwrap_err();
    assert!(e.to_string().contains("/dev/null/bolide"), "{e}");

    // A read-only directory: permission checks do not apply to root.
    let d = TestDir::new("readonly");
    fs::create_dir_all(&d.0).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&d.0, fs::Permissions::from_mode(0o555)).unwrap();
    let r = Store::open(&d.cfg());
    fs::set_permissions(&d.0, fs::Permissions::from_mode(0o755)).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        println!(
            "skipping the 0555-directory assertion: running as root, which ignores permissions"
        );
    } else {
        let e = r.unwrap_err();
        assert!(matches!(e, StoreError::ReadOnly { .. }), "{e:?}");
        assert!(e.to_string().contains("not writable"), "{e}");
    }
}

#[test]
fn map_full_and_recovery() {
    let d = TestDir::new("mapfull");
    let mut cfg = d.cfg();
    cfg.map_size = 256 * 1024;
    cfg.no_sync = true;
    let s = Store::open(&cfg).unwrap();
    let mut n = 0u64;
    let err = loop {
        let recs: Vec<(Key, u64)> = (n..n + 20).map(|i| (key(i), NOW - 40 * DAY)).collect();
        match s.insert_batch(&recs, &[]) {
            Ok(()) => n += 20,
            Err(e) => break e,
        }
        assert!(n < 100_000, "map never filled");
    };
    assert!(matches!(err, StoreError::MapFull { .. }), "{err:?}");
    assert!(err.to_string().contains("--eventdb-map-size"), "{err}");
    assert!(n > 0);
    // Still readable; the failed batch left nothing behind.
    assert_eq!(s.len().unwrap() as u64, n);
    assert!(s.time_of(&key(0)).unwrap().is_some());
    assert!(s.time_of(&key(n)).unwrap().is_none());
    assert!(!s.seen(&key(n), NOW).unwrap());
    // Pruning (all are expired) frees space; inserts work again.
    assert_eq!(s.prune(NOW, 50).unwrap() as u64, n);
    let recs: Vec<(Key, u64)> = (0..20).map(|i| (key(1_000_000 + i), NOW)).collect();
    s.insert_batch(&recs, &[]).unwrap();
    assert!(s.seen(&key(1_000_000), NOW).unwrap());
}

#[test]
fn concurrent_insert_prune_read() {
    let d = TestDir::new("concurrent");
    let mut cfg = d.cfg();
    cfg.no_sync = true;
    let s = Arc::new(Store::open(&cfg).unwrap());
    const OLD: u64 = 5_000;
    const FRESH: u64 = 10_000;
    const BATCH: u64 = 250;
    let old: Vec<(Key, u64)> = (0..OLD).map(|i| (key(i), NOW - 31 * DAY - i)).collect();
    s.insert_batch(&old, &[]).unwrap();
    let progress = Arc::new(AtomicUsize::new(0)); // fresh records committed
    let done = Arc::new(AtomicBool::new(false));
    // All three start together, so they overlap however fast the writer is.
    let start = Arc::new(std::sync::Barrier::new(3));

    let writer = {
        let (s, progress, start) = (s.clone(), progress.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            for b in 0..FRESH / BATCH {
                let recs: Vec<(Key, u64)> = (0..BATCH)
                    .map(|j| (key(1_000_000 + b * BATCH + j), NOW))
                    .collect();
                s.insert_batch(&recs, &[]).unwrap();
                progress.store(((b + 1) * BATCH) as usize, Ordering::SeqCst);
            }
        })
    };
    let pruner = {
        let (s, done, start) = (s.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut total = 0;
            while !done.load(Ordering::SeqCst) {
                total += s.prune(NOW, 64).unwrap();
                std::thread::yield_now();
            }
            total + s.prune(NOW, 64).unwrap()
        })
    };
    let reader = {
        let (s, progress, done) = (s.clone(), progress.clone(), done.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut checks = 0u64;
            let mut i = 0u64;
            // At least one round, even if the writer is already done.
            while checks == 0 || !done.load(Ordering::SeqCst) {
                let p = progress.load(Ordering::SeqCst) as u64;
                if p > 0 {
                    assert!(s.seen(&key(1_000_000 + i % p), NOW).unwrap());
                }
                assert!(!s.seen(&key(i % OLD), NOW).unwrap());
                i += 1;
                checks += 1;
            }
            checks
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::SeqCst);
    let pruned = pruner.join().unwrap();
    let checks = reader.join().unwrap();
    assert!(checks > 0);
    assert_eq!(pruned as u64, OLD);
    assert_eq!(s.len().unwrap() as u64, FRESH);
}

const CRASH_ENV: &str = "BOLIDE_STORE_CRASH_DIR";

/// Helper run as a child process by `process_abort_with_no_sync_loses_nothing`;
/// does nothing in a normal test run.
#[test]
fn crash_child_helper() {
    let Ok(dir) = std::env::var(CRASH_ENV) else {
        return;
    };
    let mut cfg = StoreConfig::new(dir);
    cfg.no_sync = true;
    let s = Store::open(&cfg).unwrap();
    s.insert_batch(&[(key(42), NOW)], &[]).unwrap();
    // Crash without closing the environment or syncing.
    std::process::abort();
}

#[test]
fn process_abort_with_no_sync_loses_nothing() {
    let d = TestDir::new("crash");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::crash_child_helper",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, &d.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "child should have aborted");
    let s = Store::open(&d.cfg()).unwrap();
    assert!(s.seen(&key(42), NOW).unwrap());
}

/// An archived event of `pad` bytes of description, letters that do not compress.
fn archived_event(i: u64, pad: usize) -> crate::voevent::Event {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let text: String = (0..pad)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect();
    let xml = format!(
        "<VOEvent ivorn=\"ivo://x.y/s#{i}\" role=\"observation\"><Description>{text}</Description></VOEvent>"
    );
    let doc = crate::xml::parse(xml.as_bytes(), Default::default()).unwrap();
    crate::voevent::Event::new(
        xml.as_bytes(),
        format!("ivo://x.y/s#{i}"),
        crate::voevent::EventRole::Observation,
        doc.root_span.clone(),
        crate::voevent::Origin::Author("127.0.0.1:9".parse().unwrap()),
    )
}

/// An event packed ahead (on the thread that checked it) is stored as it was packed; one
/// not packed is packed at commit; both read back exactly.
#[test]
fn events_packed_ahead_are_stored_as_packed() {
    use crate::archive::codec;
    let d = TestDir::new("packed-ahead");
    let s = Store::open(&d.cfg()).unwrap();
    let mut ahead = archived_event(1, 3000);
    // Packed another valid way (plain LZ4), which packing at commit never chooses.
    let mut plain = vec![codec::LZ4];
    plain.extend(lz4_flex::block::compress(ahead.payload()));
    ahead.packed = Some(plain.into_boxed_slice());
    let late = archived_event(2, 3000);
    s.insert_batch(&[(ahead.key, NOW), (late.key, NOW)], &[&ahead, &late])
        .unwrap();
    {
        let txn = s.env.begin_ro_txn().unwrap();
        let codec_of = |seq: u64| {
            let mut k = seq.to_be_bytes().to_vec();
            k.extend(0u32.to_be_bytes());
            txn.get(s.archive.bytes, &k).unwrap()[0]
        };
        assert_eq!(codec_of(1), codec::LZ4);
        assert_eq!(codec_of(2), archive::pack(late.payload())[0]);
        assert_ne!(codec_of(2), codec::LZ4);
    }
    let mut back = Vec::new();
    s.read_archive(0, |e| {
        back.push(e.bytes.to_vec());
        true
    })
    .unwrap();
    assert_eq!(back, [ahead.payload(), late.payload()]);
}

/// When the map runs short the archive gives way: every batch of dedup records is
/// committed (no author would get "storage unavailable"), the oldest archived events are
/// deleted to make room, and the newest stay archived. Nothing is refused until the
/// dedup records alone fill the map.
#[test]
fn a_full_archive_gives_way_to_dedup_records() {
    let d = TestDir::new("archive-full");
    let mut cfg = d.cfg();
    cfg.map_size = 1 << 20;
    cfg.no_sync = true;
    let s = Store::open(&cfg).unwrap();
    for i in 0..600u64 {
        let e = archived_event(i, 4000);
        s.insert_batch(&[(e.key, NOW)], &[&e])
            .unwrap_or_else(|err| panic!("batch {i}: {err}"));
    }
    let c = s.archive_counters();
    assert_eq!(s.len().unwrap(), 600, "every dedup record is kept");
    assert_eq!(c.next_seq, 601);
    assert!(c.count > 10 && c.count < 500, "{c:?}");
    // The newest stay: the archive holds a contiguous run ending at the last seq.
    let txn = s.env.begin_ro_txn().unwrap();
    let mut cursor = txn.open_ro_cursor(s.archive.archive).unwrap();
    let seqs: Vec<u64> = cursor
        .iter_start()
        .map(|kv| u64::from_be_bytes(kv.unwrap().0.try_into().unwrap()))
        .collect();
    assert_eq!(seqs.len() as u64, c.count);
    assert_eq!(*seqs.last().unwrap(), 600);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let ikeys = txn.stat(s.archive.by_ivorn).unwrap().entries();
    let tail = c.next_seq - c.indexed;
    assert!(tail < archive::INDEX_EVERY, "{c:?}");
    assert_eq!(ikeys as u64 + tail, c.count, "by_ivorn follows the archive");
}

/// The newest entries (the tail) are in `by_ivorn` only once there are `INDEX_EVERY` of
/// them, and found by ivorn all along; after a crash the counters come back whole, the
/// tail counted from the entries themselves.
#[test]
fn the_tail_is_found_indexed_in_bulk_and_counted_after_a_crash() {
    let d = TestDir::new("tail");
    let mut cfg = d.cfg();
    cfg.no_sync = true;
    let n = archive::INDEX_EVERY + 10;
    let events: Vec<_> = (0..n).map(|i| archived_event(i, 200)).collect();
    let ikeys = |s: &Store| {
        let txn = s.env.begin_ro_txn().unwrap();
        txn.stat(s.archive.by_ivorn).unwrap().entries() as u64
    };
    let before = {
        let s = Store::open(&cfg).unwrap();
        for (i, e) in events.iter().enumerate() {
            s.insert_batch(&[(e.key, NOW)], &[e]).unwrap();
            let indexed = if (i as u64) < archive::INDEX_EVERY - 1 {
                0
            } else {
                archive::INDEX_EVERY
            };
            assert_eq!(ikeys(&s), indexed, "after event {i}");
        }
        let c = s.archive_counters();
        assert_eq!(
            (c.next_seq, c.count, c.indexed),
            (n + 1, n, archive::INDEX_EVERY + 1)
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                s.archive_seq_of(&e.ivorn, Some(&e.key)).unwrap(),
                Some(i as u64 + 1)
            );
        }
        c
        // Dropped without a word: as after `kill -9`, the tail is not indexed.
    };
    let s = Store::open(&cfg).unwrap();
    assert_eq!(s.archive_counters(), before);
    assert_eq!(ikeys(&s), archive::INDEX_EVERY);
    let newest = events.last().unwrap();
    assert_eq!(s.archive_seq_of(&newest.ivorn, None).unwrap(), Some(n));
    assert_eq!(s.archive_seq_of("ivo://x.y/s#nothing", None).unwrap(), None);
    // A second event with an ivorn of the indexed part, in the tail: the newest wins.
    let again = archived_event(0, 300);
    assert_eq!(again.ivorn, events[0].ivorn);
    s.insert_batch(&[(again.key, NOW)], &[&again]).unwrap();
    assert_eq!(s.archive_seq_of(&again.ivorn, None).unwrap(), Some(n + 1));
    assert_eq!(
        s.archive_seq_of(&again.ivorn, Some(&events[0].key))
            .unwrap(),
        Some(1)
    );
    // Deleting entries indexes the tail in the same transaction.
    let later = crate::time::unix_now_ms() + 40 * 86_400_000;
    assert_eq!(s.prune_archive(later, 5).unwrap() as u64, n + 1);
    let c = s.archive_counters();
    assert_eq!(
        (c.count, c.bytes, c.indexed, c.next_seq),
        (0, 0, n + 2, n + 2)
    );
    assert_eq!(ikeys(&s), 0);
}

/// Retention by size holds at every commit, by age in the insert path (a few per commit)
/// and in `prune_archive`; the counters follow, and survive a reopen.
#[test]
fn archive_retention_by_size_and_age() {
    let d = TestDir::new("archive-retention");
    let mut cfg = d.cfg();
    cfg.archive = Some(ArchiveConfig {
        max_age_secs: 3600,
        max_bytes: Some(10_000),
    });
    {
        let s = Store::open(&cfg).unwrap();
        for i in 0..20u64 {
            let e = archived_event(i, 900);
            s.insert_batch(&[(e.key, NOW)], &[&e]).unwrap();
            let c = s.archive_counters();
            assert!(c.bytes <= 10_000, "{c:?}");
        }
        let c = s.archive_counters();
        assert!(c.count >= 9, "{c:?}");
        // Everything is older than an hour an hour and a bit from now.
        let later = crate::time::unix_now_ms() + 3_700_000;
        assert_eq!(s.prune_archive(later, 3).unwrap(), c.count as usize);
        assert_eq!(s.archive_counters().count, 0);
        assert_eq!(s.archive_counters().bytes, 0);
        assert_eq!(s.archive_counters().next_seq, 21);
    }
    let s = Store::open(&cfg).unwrap();
    assert_eq!(s.archive_counters().next_seq, 21, "seqs are never reused");
    assert_eq!(s.archive_counters().count, 0);
    // --no-archive: dedup records only, the seq does not move.
    drop(s);
    cfg.archive = None;
    let s = Store::open(&cfg).unwrap();
    let e = archived_event(99, 10);
    s.insert_batch(&[(e.key, NOW)], &[&e]).unwrap();
    assert!(s.seen(&e.key, NOW).unwrap());
    assert_eq!(s.archive_counters().next_seq, 21);
}

/// Format 2 (dedup records only) is upgraded in place: its records kept, an empty archive
/// with an identity created.
#[test]
fn format_2_is_upgraded_keeping_records() {
    let d = TestDir::new("format2");
    fs::create_dir_all(&d.0).unwrap();
    {
        let env = Environment::new().set_max_dbs(4).open(&d.0).unwrap();
        let meta = env.create_db(Some("meta"), DatabaseFlags::empty()).unwrap();
        let events = env
            .create_db(Some("events"), DatabaseFlags::empty())
            .unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(meta, &FORMAT_KEY, &FORMAT_2, WriteFlags::empty())
            .unwrap();
        txn.put(events, &key(7), &NOW.to_be_bytes(), WriteFlags::empty())
            .unwrap();
        txn.commit().unwrap();
    }
    let s = Store::open(&d.cfg()).unwrap();
    assert!(s.seen(&key(7), NOW).unwrap());
    assert_eq!(s.archive_counters().next_seq, 1);
    assert_ne!(s.archive_id(), [0; 16]);
    let id = s.archive_id();
    drop(s);
    let s = Store::open(&d.cfg()).unwrap();
    assert_eq!(s.archive_id(), id, "the identity is kept");
}

/// The writer finds LMDB's map of data.mdb (to drop its pages from the page tables), and
/// dropping them loses nothing: the records read back through the map.
#[test]
fn the_map_is_found_and_trimming_it_keeps_the_data() {
    let d = TestDir::new("mapping");
    let s = Store::open(&d.cfg()).unwrap();
    let (_, len) = s.map_trim.mapping().expect("data.mdb is mapped");
    assert_eq!(len, s.map_size);
    let e = archived_event(1, 100);
    s.insert_batch(&[(e.key, NOW)], &[&e]).unwrap();
    s.map_trim.drop_pages();
    assert!(s.seen(&e.key, NOW).unwrap());
    assert_eq!(s.archive_counters().count, 1);
}

/// KiB of `file` mapped in this process (its mappings' `Rss` in /proc/self/smaps).
fn mapped_kib(file: &Path) -> u64 {
    let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
    let name = file.to_str().unwrap();
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if inside {
                kib += rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap();
            }
        } else if line.contains('-') && !line.ends_with(" kB") {
            inside = line.ends_with(name);
        }
    }
    kib
}

/// While a reader holds an old snapshot, every commit reads a fresh path of pages through
/// the map: once the process's file-backed RSS has grown by `MAPPED_LIMIT`, the next
/// commit allowed to (one a `WRITER_INTERVAL` after the last drop) drops them, and the
/// data stays readable. A reader going through the archive drops them the same way,
/// without waiting. The RSS measured is the whole process's, where other tests map
/// and drop their own databases: the checks run alone, in a child process.
#[test]
fn the_map_is_dropped_once_it_has_grown_by_the_limit() {
    const ALONE: &str = "BOLIDE_MAPTRIM_ALONE";
    if std::env::var_os(ALONE).is_some() {
        return map_drop_checks();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::the_map_is_dropped_once_it_has_grown_by_the_limit",
            "--test-threads=1",
        ])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("1 passed"), "the checks did not run: {said}");
}

fn map_drop_checks() {
    use maptrim::MAPPED_LIMIT;
    let d = TestDir::new("trim-growth");
    let s = Store::open(&StoreConfig {
        no_sync: true,
        ..d.cfg()
    })
    .unwrap();
    let data = fs::canonicalize(d.0.join(DATA_FILE)).unwrap();
    let limit_kib = MAPPED_LIMIT / 1024;
    let first = archived_event(0, 3000);
    s.insert_batch(&[(first.key, NOW)], &[&first]).unwrap();
    let snapshot = s.env.begin_ro_txn().unwrap();
    let mut i = 1;
    // Commit event `i` and say how much of data.mdb is mapped.
    let commit = |i: &mut u64, gate_shut: bool| {
        s.map_trim.set_writer_gate(gate_shut);
        let e = archived_event(*i, 3000);
        s.insert_batch(&[(e.key, NOW)], &[&e]).unwrap();
        *i += 1;
        mapped_kib(&data)
    };
    // Commits with the interval gate shut: nothing is dropped, however much is mapped.
    let mut last = 0;
    while last < 2 * limit_kib {
        assert!(i < 20_000, "{i} commits mapped only {last} KiB");
        let now = commit(&mut i, true);
        assert!(now >= last, "dropped at {last} KiB with the gate shut");
        last = now;
    }
    // Commits allowed to drop: until the map has been dropped at least twice and
    // data.mdb holds several limits' worth, it is never much more than the limit, and
    // not dropped at every commit.
    let (mut drops, mut most, start) = (0, 0, i);
    while drops < 3 || fs::metadata(&data).unwrap().len() < 6 * MAPPED_LIMIT {
        assert!(
            i < 40_000,
            "{i} commits and the map was dropped {drops} times"
        );
        let now = commit(&mut i, false);
        if now < last {
            drops += 1;
        }
        if drops > 1 {
            most = most.max(now);
        }
        last = now;
    }
    assert!(
        most <= limit_kib + 1024,
        "{most} KiB of data.mdb mapped (limit {limit_kib} KiB)"
    );
    assert!(
        drops * 8 <= i - start,
        "dropped {drops} times in {} commits",
        i - start
    );
    drop(snapshot);
    assert!(s.seen(&first.key, NOW).unwrap());
    assert_eq!(s.archive_counters().count, i);
    // The reader: all of the archive read in one go.
    s.map_trim.drop_pages();
    let mut most = 0;
    let read = s
        .read_archive(0, |_| {
            most = most.max(mapped_kib(&data));
            true
        })
        .unwrap();
    assert_eq!(read as u64, i);
    assert!(
        most <= limit_kib + 1024,
        "{most} KiB of data.mdb mapped while reading"
    );
    assert!(s.map_trim.headroom().is_some(), "/proc/self/statm is read");
}

/// Format 4 (every entry indexed as it is appended) is read as it is, and upgraded on
/// open by its format record alone: every entry is kept and found.
#[test]
fn format_4_is_upgraded_keeping_every_entry() {
    let d = TestDir::new("format4");
    let events: Vec<_> = (0..5).map(|i| archived_event(i, 500)).collect();
    let before = {
        let s = Store::open(&d.cfg()).unwrap();
        for e in &events {
            s.insert_batch(&[(e.key, NOW)], &[e]).unwrap();
        }
        // As format 4 leaves it: every entry indexed, the format record 4.
        let mut c = s.archive_counters();
        let mut txn = s.env.begin_rw_txn().unwrap();
        archive::index_tail(&mut txn, s.archive, &mut c).unwrap();
        txn.put(s.archive.meta, &FORMAT_KEY, &FORMAT_4, WriteFlags::empty())
            .unwrap();
        txn.commit().unwrap();
        c
    };
    let r = crate::archive_reader::ArchiveReader::open(&d.0).unwrap();
    assert_eq!(
        r.newest_bytes(&events[3].ivorn).unwrap().as_deref(),
        Some(events[3].payload())
    );
    drop(r);
    let s = Store::open(&d.cfg()).unwrap();
    {
        let txn = s.env.begin_ro_txn().unwrap();
        assert_eq!(txn.get(s.archive.meta, &FORMAT_KEY).unwrap(), FORMAT);
    }
    assert_eq!(s.archive_counters(), before);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            s.archive_seq_of(&e.ivorn, Some(&e.key)).unwrap(),
            Some(i as u64 + 1)
        );
    }
    let mut back = Vec::new();
    s.read_archive(0, |e| {
        back.push(e.bytes.to_vec());
        true
    })
    .unwrap();
    let want: Vec<&[u8]> = events.iter().map(|e| e.payload()).collect();
    assert_eq!(back, want);
}

/// A format-3 archive (metadata and bytes in one value per entry) is rewritten in place
/// on open, in several chunks, after an upgrade cut short: every entry comes back with
/// its metadata and exact bytes, the counters, identity and dedup records are kept, the
/// format says 4, and new events follow the old seqs.
#[test]
fn format_3_is_upgraded_keeping_every_entry() {
    let d = TestDir::new("format3");
    let n = 2 * UPGRADE_CHUNK as u64 + 7;
    let id = [7u8; 16];
    let payload = |i: u64| -> Vec<u8> {
        match i % 3 {
            // Compressible XML of varying size, up to 3 overflow pages.
            0 => format!(
                "<VOEvent n=\"{i}\">{}</VOEvent>",
                "<Param/>".repeat(i as usize % 1500)
            )
            .into_bytes(),
            // Incompressible, up to three parts.
            1 => {
                let mut x = i | 1;
                (0..i % 2500 + 1)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            }
            _ => format!("<v{i}/>").into_bytes(),
        }
    };
    let authored: Vec<String> = (0..n)
        .map(|i| format!("2026-01-01T00:00:{:02}", i % 60))
        .collect();
    let entry = |i: u64, bytes: &'static [u8]| archive::Entry {
        seq: i + 1,
        accepted_ms: 1_000 + i,
        role: crate::voevent::EventRole::Observation,
        source_kind: archive::SourceKind::Upstream,
        source: "h:8099",
        ivorn: "ivo://x.y/s#z",
        author_ivorn: (i % 2 == 0).then_some("ivo://x.y/a"),
        authored: None,
        key: key(i),
        size: bytes.len(),
        bytes,
    };
    let payloads: Vec<&'static [u8]> = (0..n).map(|i| &*payload(i).leak()).collect();
    let total: u64 = payloads.iter().map(|p| p.len() as u64).sum();
    {
        fs::create_dir_all(&d.0).unwrap();
        let env = Environment::new()
            .set_max_dbs(8)
            .set_map_size(64 << 20)
            .open(&d.0)
            .unwrap();
        let create = |name| env.create_db(Some(name), DatabaseFlags::empty()).unwrap();
        let meta = create(META_DB);
        let (events, arch, by_ivorn) = (
            create(EVENTS_DB),
            create(archive::ARCHIVE_DB),
            create(archive::BY_IVORN_DB),
        );
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(meta, &FORMAT_KEY, &FORMAT_3, WriteFlags::empty())
            .unwrap();
        txn.put(meta, &archive::ID_KEY, &id, WriteFlags::empty())
            .unwrap();
        for (k, v) in [
            (archive::NEXT_SEQ_KEY, n + 1),
            (archive::COUNT_KEY, n),
            (archive::BYTES_KEY, total),
        ] {
            txn.put(meta, &k, &v.to_be_bytes(), WriteFlags::empty())
                .unwrap();
        }
        for i in 0..n {
            let mut e = entry(i, payloads[i as usize]);
            e.authored = Some(authored[i as usize].as_str());
            txn.put(events, &e.key, &NOW.to_be_bytes(), WriteFlags::empty())
                .unwrap();
            txn.put(
                arch,
                &e.seq.to_be_bytes(),
                &archive::v1::encode(&e),
                WriteFlags::empty(),
            )
            .unwrap();
            txn.put(
                by_ivorn,
                &archive::ivorn_key(e.ivorn, e.seq),
                &[],
                WriteFlags::empty(),
            )
            .unwrap();
        }
        txn.commit().unwrap();
        // An upgrade cut short: a first chunk rewritten, the format still 3.
        let dbs = Dbs {
            archive: arch,
            bytes: create(archive::BYTES_DB),
            by_ivorn,
            meta,
        };
        let mut txn = env.begin_rw_txn().unwrap();
        assert_eq!(
            archive::v1::upgrade_chunk(&mut txn, dbs, 0, 10).unwrap(),
            Some(10)
        );
        txn.commit().unwrap();
    }
    let s = Store::open(&d.cfg()).unwrap();
    {
        let txn = s.env.begin_ro_txn().unwrap();
        assert_eq!(txn.get(s.archive.meta, &FORMAT_KEY).unwrap(), FORMAT);
    }
    assert_eq!(s.archive_id(), id);
    let c = s.archive_counters();
    assert_eq!(
        (c.next_seq, c.count, c.bytes, c.last_ms),
        (n + 1, n, total, 1_000 + n - 1)
    );
    assert_eq!(s.len().unwrap(), n as usize);
    let mut seen = 0;
    s.read_archive(0, |e| {
        let i = e.seq - 1;
        let mut want = entry(i, payloads[i as usize]);
        want.authored = Some(authored[i as usize].as_str());
        assert_eq!(e, &want);
        seen += 1;
        true
    })
    .unwrap();
    assert_eq!(seen, n);
    // New events follow, and the database opens again as format 4.
    let e = archived_event(1, 3000);
    s.insert_batch(&[(e.key, NOW)], &[&e]).unwrap();
    drop(s);
    let s = Store::open(&d.cfg()).unwrap();
    let mut last = None;
    s.read_archive(n + 1, |e| {
        last = Some((e.seq, e.bytes.to_vec()));
        true
    })
    .unwrap();
    assert_eq!(last, Some((n + 1, e.payload().to_vec())));
}
