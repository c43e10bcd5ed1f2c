//! The archive: every event the broker accepted as new, with its exact bytes, in the
//! order it accepted them. It lives in the event database's LMDB environment and is
//! written in the same transaction as the events' dedup records ([`crate::store`]), so an
//! `ack` means the event is archived too. [`crate::archive_reader`] reads it.
//!
//! | database      | key                                      | value |
//! |---------------|------------------------------------------|-------|
//! | `archive`     | seq: 8-byte big-endian, from 1, never reused | an [`Entry`]'s metadata ([`encode_meta_into`]) |
//! | `event_bytes` | seq + 4-byte big-endian part number, from 0 | the event's bytes, in parts ([`put_bytes`]) |
//! | `by_ivorn`    | ivorn bytes (at most [`IVORN_KEY_MAX`]) + seq | empty |
//!
//! An entry's metadata (times, role, source, ivorn, `Who`, size: about 150 bytes) is a
//! record apart from its bytes, so listings, statistics, time searches and retention read
//! small records packed many to a page and never the bytes. The bytes are LZ4-compressed
//! against a dictionary of typical VOEvents when that makes them smaller, behind a
//! one-byte codec ([`codec`]): a GCN notice shrinks to about a quarter at a cost of
//! microseconds, spent by the thread that checked the event ([`Event::packed`]);
//! reading restores the exact bytes.
//! They are stored in parts of at most [`PART`] bytes, which LMDB keeps inside its leaf
//! pages (four to a page, appended in seq order, so the pages fill up) rather than in
//! overflow pages of their own, whose unused ends would be written with every event.
//!
//! `seq` is the broker's acceptance order. The acceptance time in each entry never goes
//! backwards (a clock stepped back repeats the last time), so seq order is time order and
//! a time range is found by binary search over seq. `by_ivorn` keeps every event that
//! shares an ivorn (each under its own seq) and, sorted by ivorn, answers prefix queries
//! (`ivo://authority/stream#`) with a range scan. The `meta` database holds the archive's
//! identity (16 random bytes created with it), the next seq, and the count and bytes of
//! what it holds.
//!
//! An entry and its bytes are written in the transaction that accepts the event; its
//! `by_ivorn` key and the counters in `meta` follow later ([`index_tail`]): when the
//! entries not yet indexed, the *tail*, reach [`INDEX_EVERY`], or when entries are
//! deleted. The stored next seq says where the tail starts. Each of those writes dirties
//! a path of B-tree pages that a durable commit writes and flushes, about a third of
//! what archiving adds to a commit of a few events, so the index is written once for
//! hundreds of entries instead of with each. Nothing is lost or hidden meanwhile: every
//! lookup by ivorn also reads the tail (a few pages of metadata,
//! [`for_each_in_tail`]), and opening the database adds the tail to the stored counters
//! ([`load_counters`]), after a crash too.
//!
//! Retention takes the oldest entries first: by age ([`ArchiveConfig::max_age_secs`]),
//! by total size ([`ArchiveConfig::max_bytes`]), and when the map runs short of space,
//! before any dedup record is refused.

use std::fmt;

use lmdb::{Cursor, Database, RwTransaction, Transaction, WriteFlags};

use crate::voevent::{Event, EventRole, Key, Origin};

pub mod codec;
pub mod v1;

pub use codec::{pack, unpack};

/// Longest ivorn prefix kept in a `by_ivorn` key (LMDB keys are at most 511 bytes; 8
/// more hold the seq). Longer ivorns share the prefix; the entry holds the whole ivorn.
pub const IVORN_KEY_MAX: usize = 480;
/// Version byte of an entry's encoded metadata.
const ENTRY_VERSION: u8 = 2;
/// Fixed part of an entry's metadata: version, accepted ms, role, source kind, key,
/// size, four string lengths.
const HEADER: usize = 1 + 8 + 1 + 1 + 32 + 4 + 4 * 4;
/// Where the string lengths start in the metadata.
const LENGTHS_AT: usize = 1 + 8 + 1 + 1 + 32 + 4;
/// Most bytes of one `event_bytes` value: four such values and their 12-byte keys fill a
/// 4 KiB leaf page, and none needs an overflow page (LMDB moves a value to overflow pages
/// once it takes more than about half a page).
pub const PART: usize = 1000;

pub const ARCHIVE_DB: &str = "archive";
pub const BYTES_DB: &str = "event_bytes";
pub const BY_IVORN_DB: &str = "by_ivorn";
pub const ID_KEY: &[u8] = b"archive_id";
pub const NEXT_SEQ_KEY: &[u8] = b"next_seq";
pub const BYTES_KEY: &[u8] = b"archive_bytes";
pub const COUNT_KEY: &[u8] = b"archive_count";

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// Entries older than this (by acceptance time) are deleted.
    pub max_age_secs: u64,
    /// Most bytes of events kept (their exact bytes; `None`: as many as the map holds).
    pub max_bytes: Option<u64>,
}

/// Where an archived event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Author,
    Upstream,
    Kafka,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Author => "author",
            SourceKind::Upstream => "upstream",
            SourceKind::Kafka => "kafka",
        }
    }

    fn code(self) -> u8 {
        match self {
            SourceKind::Author => 1,
            SourceKind::Upstream => 2,
            SourceKind::Kafka => 3,
        }
    }

    fn from_code(c: u8) -> Option<SourceKind> {
        match c {
            1 => Some(SourceKind::Author),
            2 => Some(SourceKind::Upstream),
            3 => Some(SourceKind::Kafka),
            _ => None,
        }
    }
}

fn role_code(r: EventRole) -> u8 {
    match r {
        EventRole::Observation => 0,
        EventRole::Prediction => 1,
        EventRole::Utility => 2,
        EventRole::Test => 3,
    }
}

fn role_from_code(c: u8) -> Option<EventRole> {
    match c {
        0 => Some(EventRole::Observation),
        1 => Some(EventRole::Prediction),
        2 => Some(EventRole::Utility),
        3 => Some(EventRole::Test),
        _ => None,
    }
}

/// One archived event, borrowed from the database pages it is stored in (its bytes, when
/// compressed, from the reader's buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub seq: u64,
    /// Acceptance time, Unix milliseconds.
    pub accepted_ms: u64,
    pub role: EventRole,
    pub source_kind: SourceKind,
    /// The author's address, or the upstream as `host:port`, or the Kafka topic.
    pub source: &'a str,
    pub ivorn: &'a str,
    /// `Who/AuthorIVORN` and `Who/Date` as written (`None`: absent).
    pub author_ivorn: Option<&'a str>,
    pub authored: Option<&'a str>,
    /// The dedup key (SHA-256 of the VTP span).
    pub key: Key,
    /// The event's size in bytes.
    pub size: usize,
    /// The event's exact bytes; empty in an entry read without them (its metadata only:
    /// [`decode`], `archive_reader::Query::without_bytes`).
    pub bytes: &'a [u8],
}

impl Entry<'_> {
    /// The stream: the ivorn up to its `#` (`ivo://authority/resource`).
    pub fn stream(&self) -> &str {
        self.ivorn.split('#').next().unwrap_or("")
    }
}

/// An entry that cannot be decoded (the database is damaged or of a newer bolide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    pub seq: u64,
    pub why: &'static str,
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "archive entry {} is unreadable: {}", self.seq, self.why)
    }
}

/// Why an entry cannot be read: LMDB refused, or what it holds is damaged.
#[derive(Debug)]
pub enum ReadFail {
    Lmdb(lmdb::Error),
    Bad(BadEntry),
}

impl From<lmdb::Error> for ReadFail {
    fn from(e: lmdb::Error) -> ReadFail {
        ReadFail::Lmdb(e)
    }
}

impl From<BadEntry> for ReadFail {
    fn from(e: BadEntry) -> ReadFail {
        ReadFail::Bad(e)
    }
}

/// The source of an event, if it is one the archive keeps (the broker's own test events
/// are not archived).
pub fn source_of(origin: &Origin) -> Option<(SourceKind, String)> {
    match origin {
        Origin::Author(a) => Some((SourceKind::Author, a.to_string())),
        Origin::Upstream(u) => Some((SourceKind::Upstream, u.clone())),
        Origin::Kafka { topic, .. } => Some((SourceKind::Kafka, topic.clone())),
        Origin::Local => None,
    }
}

/// The strings an entry holds, in their stored order.
fn strings<'e>(e: &Entry<'e>) -> [Option<&'e str>; 4] {
    [Some(e.source), Some(e.ivorn), e.author_ivorn, e.authored]
}

/// The entry of `event` (its seq, time and source as given), with its bytes.
pub fn entry_of<'e>(
    event: &'e Event,
    seq: u64,
    accepted_ms: u64,
    source_kind: SourceKind,
    source: &'e str,
) -> Entry<'e> {
    Entry {
        seq,
        accepted_ms,
        role: event.role,
        source_kind,
        source,
        ivorn: &event.ivorn,
        author_ivorn: event.author_ivorn.as_deref(),
        authored: event.authored.as_deref(),
        key: event.key,
        size: event.payload().len(),
        bytes: event.payload(),
    }
}

/// The length of `e`'s encoded metadata.
pub fn meta_len(e: &Entry<'_>) -> usize {
    let text: usize = strings(e).iter().map(|s| s.map_or(0, str::len)).sum();
    HEADER + text
}

/// Encode `e`'s metadata as an `archive` value into `out`, which is exactly
/// [`meta_len`] bytes long (LMDB's own buffer: no copy in between).
pub fn encode_meta_into(out: &mut [u8], e: &Entry<'_>) {
    let mut at = 0;
    let mut put = |b: &[u8]| {
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&[ENTRY_VERSION]);
    put(&e.accepted_ms.to_be_bytes());
    put(&[role_code(e.role), e.source_kind.code()]);
    put(&e.key);
    put(&(e.size as u32).to_be_bytes());
    let strings = strings(e);
    for s in strings {
        // Length + 1, so 0 means absent.
        put(&s.map_or(0, |s| s.len() as u32 + 1).to_be_bytes());
    }
    for s in strings.into_iter().flatten() {
        put(s.as_bytes());
    }
}

/// `e`'s encoded metadata.
pub fn encode_meta(e: &Entry<'_>) -> Vec<u8> {
    let mut v = vec![0; meta_len(e)];
    encode_meta_into(&mut v, e);
    v
}

/// Decode the metadata stored under `seq`: an entry without its bytes.
pub fn decode(seq: u64, v: &[u8]) -> Result<Entry<'_>, BadEntry> {
    let bad = |why| BadEntry { seq, why };
    if v.len() < HEADER {
        return Err(bad("shorter than its header"));
    }
    if v[0] != ENTRY_VERSION {
        return Err(bad("unknown entry version (written by another bolide?)"));
    }
    let size = u32::from_be_bytes(v[43..47].try_into().expect("4 bytes")) as usize;
    let (mut e, end) = decode_common(seq, v, LENGTHS_AT, HEADER)?;
    if end != v.len() {
        return Err(bad("bytes after its strings"));
    }
    e.size = size;
    Ok(e)
}

/// The fields both entry versions share (version 1 has no size, and its strings start at
/// `strings_at`): the entry, its size and bytes unset, and where its strings end.
fn decode_common(
    seq: u64,
    v: &[u8],
    lengths_at: usize,
    strings_at: usize,
) -> Result<(Entry<'_>, usize), BadEntry> {
    let bad = |why| BadEntry { seq, why };
    let accepted_ms = u64::from_be_bytes(v[1..9].try_into().expect("8 bytes"));
    let role = role_from_code(v[9]).ok_or(bad("unknown role"))?;
    let source_kind = SourceKind::from_code(v[10]).ok_or(bad("unknown source"))?;
    let key: Key = v[11..43].try_into().expect("32 bytes");
    let mut at = strings_at;
    let mut strings: [Option<&str>; 4] = [None; 4];
    for (i, s) in strings.iter_mut().enumerate() {
        let l = lengths_at + 4 * i;
        let n = u32::from_be_bytes(v[l..l + 4].try_into().expect("4 bytes"));
        if n == 0 {
            continue;
        }
        let end = at
            .checked_add(n as usize - 1)
            .filter(|&e| e <= v.len())
            .ok_or(bad("a string runs past the end"))?;
        *s = Some(std::str::from_utf8(&v[at..end]).map_err(|_| bad("a string is not UTF-8"))?);
        at = end;
    }
    let e = Entry {
        seq,
        accepted_ms,
        role,
        source_kind,
        source: strings[0].unwrap_or(""),
        ivorn: strings[1].unwrap_or(""),
        author_ivorn: strings[2],
        authored: strings[3],
        key,
        size: 0,
        bytes: &[],
    };
    Ok((e, at))
}

/// The `event_bytes` key of part `part` of entry `seq`.
fn part_key(seq: u64, part: u32) -> [u8; 12] {
    let mut k = [0; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&part.to_be_bytes());
    k
}

/// Store `payload` as the bytes of entry `seq` ([`pack`]), in parts of at most [`PART`]
/// bytes; `flags`: `APPEND` when `seq` is the highest.
pub fn put_bytes(
    txn: &mut RwTransaction<'_>,
    db: Database,
    seq: u64,
    payload: &[u8],
    flags: WriteFlags,
) -> lmdb::Result<()> {
    put_parts(txn, db, seq, &pack(payload), flags)
}

/// Store `packed` (a [`pack`]ed payload) as the bytes of entry `seq`, in parts.
fn put_parts(
    txn: &mut RwTransaction<'_>,
    db: Database,
    seq: u64,
    packed: &[u8],
    flags: WriteFlags,
) -> lmdb::Result<()> {
    for (i, part) in packed.chunks(PART).enumerate() {
        txn.put(db, &part_key(seq, i as u32), &part, flags)?;
    }
    Ok(())
}

/// Delete the bytes of entry `seq` (every part); how many parts there were.
pub fn delete_bytes(txn: &mut RwTransaction<'_>, db: Database, seq: u64) -> lmdb::Result<u32> {
    let mut part = 0;
    loop {
        match txn.del(db, &part_key(seq, part), None) {
            Ok(()) => part += 1,
            Err(lmdb::Error::NotFound) => return Ok(part),
            Err(e) => return Err(e),
        }
    }
}

/// `e` with its bytes, read from `event_bytes` in `txn` (decompressed into `buf` if need
/// be).
pub fn with_bytes<'b, T: Transaction>(
    txn: &'b T,
    dbs: Dbs,
    e: &Entry<'b>,
    buf: &'b mut Vec<u8>,
) -> Result<Entry<'b>, ReadFail> {
    let cursor = txn.open_ro_cursor(dbs.bytes)?;
    let mut parts: Vec<&'b [u8]> = Vec::new();
    let mut item = cursor.get(Some(&part_key(e.seq, 0)), None, lmdb_sys::MDB_SET_RANGE);
    loop {
        match item {
            Ok((Some(k), v)) if k.len() == 12 && k[..8] == e.seq.to_be_bytes() => parts.push(v),
            Ok(_) | Err(lmdb::Error::NotFound) => break,
            Err(err) => return Err(ReadFail::Lmdb(err)),
        }
        item = cursor.get(None, None, lmdb_sys::MDB_NEXT);
    }
    let bytes = match parts[..] {
        [] => {
            return Err(ReadFail::Bad(BadEntry {
                seq: e.seq,
                why: "its bytes are missing",
            }))
        }
        [one] => unpack(e, one, buf)?,
        _ => {
            codec::unpack_into(e, &parts.concat(), buf)?;
            &buf[..]
        }
    };
    Ok(Entry { bytes, ..e.clone() })
}

/// The `by_ivorn` key of (`ivorn`, `seq`).
pub fn ivorn_key(ivorn: &str, seq: u64) -> Vec<u8> {
    let iv = &ivorn.as_bytes()[..ivorn.len().min(IVORN_KEY_MAX)];
    let mut k = Vec::with_capacity(iv.len() + 8);
    k.extend_from_slice(iv);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq at the end of a `by_ivorn` key.
pub fn seq_of_ivorn_key(k: &[u8]) -> Option<u64> {
    let at = k.len().checked_sub(8)?;
    Some(u64::from_be_bytes(k[at..].try_into().ok()?))
}

/// The archive's databases in an open environment.
#[derive(Clone, Copy, Debug)]
pub struct Dbs {
    /// Entries' metadata, by seq.
    pub archive: Database,
    /// Entries' bytes, by seq.
    pub bytes: Database,
    pub by_ivorn: Database,
    pub meta: Database,
}

/// The writer's view of the archive, kept in memory by the one writing
/// [`crate::store::Store`], and written to `meta` with the tail ([`index_tail`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub next_seq: u64,
    /// Acceptance time of the newest entry (ms): the floor for the next one.
    pub last_ms: u64,
    pub count: u64,
    pub bytes: u64,
    /// Where the tail starts: the first seq not yet in `by_ivorn` (the stored next seq).
    pub indexed: u64,
}

/// Most entries in the tail after a commit: the commit that reaches this many indexes
/// them.
pub const INDEX_EVERY: u64 = 256;

/// Read a big-endian u64 from `meta` (`None` if absent).
pub fn meta_u64<T: Transaction>(
    txn: &T,
    meta: Database,
    key: &[u8],
) -> Result<Option<u64>, lmdb::Error> {
    match txn.get(meta, &key) {
        Ok(v) => Ok(v.try_into().ok().map(u64::from_be_bytes)),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where the tail starts in `txn`: the first seq not in `by_ivorn`.
pub fn tail_start<T: Transaction>(txn: &T, dbs: Dbs) -> Result<u64, lmdb::Error> {
    Ok(meta_u64(txn, dbs.meta, NEXT_SEQ_KEY)?.unwrap_or(1))
}

/// Call `visit` with each entry of the tail (metadata only), oldest first.
pub fn for_each_in_tail<T: Transaction>(
    txn: &T,
    dbs: Dbs,
    mut visit: impl FnMut(&Entry<'_>),
) -> Result<(), ReadFail> {
    let from = tail_start(txn, dbs)?;
    let mut cursor = txn.open_ro_cursor(dbs.archive)?;
    for item in cursor.iter_from(from.to_be_bytes()) {
        let (k, v) = item?;
        let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
        visit(&decode(seq, v)?);
    }
    Ok(())
}

/// The counters: as stored, with the tail's entries added.
pub fn load_counters<T: Transaction>(txn: &T, dbs: Dbs) -> Result<Counters, ReadFail> {
    let last_ms = {
        let cursor = txn.open_ro_cursor(dbs.archive)?;
        match cursor.get(None, None, lmdb_sys::MDB_LAST) {
            Ok((_, v)) => v
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes),
            Err(lmdb::Error::NotFound) => 0,
            Err(e) => return Err(e.into()),
        }
    };
    let indexed = tail_start(txn, dbs)?;
    let mut c = Counters {
        next_seq: indexed,
        last_ms,
        count: meta_u64(txn, dbs.meta, COUNT_KEY)?.unwrap_or(0),
        bytes: meta_u64(txn, dbs.meta, BYTES_KEY)?.unwrap_or(0),
        indexed,
    };
    for_each_in_tail(txn, dbs, |e| {
        c.next_seq = e.seq + 1;
        c.count += 1;
        c.bytes += e.size as u64;
    })?;
    Ok(c)
}

/// Index the tail: put its entries' `by_ivorn` keys and store the counters, so that the
/// tail is empty once `txn` commits. Each commit that appends or deletes entries leaves a
/// tail of fewer than [`INDEX_EVERY`] entries, and one that deletes any leaves none.
pub fn index_tail(txn: &mut RwTransaction<'_>, dbs: Dbs, c: &mut Counters) -> lmdb::Result<()> {
    let mut keys = Vec::new();
    for_each_in_tail(txn, dbs, |e| keys.push(ivorn_key(e.ivorn, e.seq))).map_err(|e| match e {
        ReadFail::Lmdb(e) => e,
        ReadFail::Bad(_) => lmdb::Error::Corrupted,
    })?;
    for k in keys {
        txn.put(dbs.by_ivorn, &k, &[], WriteFlags::empty())?;
    }
    store_counters(txn, dbs, c)?;
    c.indexed = c.next_seq;
    Ok(())
}

/// Write the counters to `meta`.
pub(crate) fn store_counters(
    txn: &mut RwTransaction<'_>,
    dbs: Dbs,
    c: &Counters,
) -> lmdb::Result<()> {
    for (k, v) in [
        (NEXT_SEQ_KEY, c.next_seq),
        (COUNT_KEY, c.count),
        (BYTES_KEY, c.bytes),
    ] {
        txn.put(dbs.meta, &k, &v.to_be_bytes(), WriteFlags::empty())?;
    }
    Ok(())
}

/// Append `event` as the next entry, accepted at `now_ms` (or the newest entry's time if
/// the clock went back), to the tail. The broker's own test events are not archived:
/// `false`.
pub fn append(
    txn: &mut RwTransaction<'_>,
    dbs: Dbs,
    c: &mut Counters,
    event: &Event,
    now_ms: u64,
) -> lmdb::Result<bool> {
    let Some((kind, source)) = source_of(&event.origin) else {
        return Ok(false);
    };
    let accepted = now_ms.max(c.last_ms);
    let seq = c.next_seq;
    let e = entry_of(event, seq, accepted, kind, &source);
    // Written straight into LMDB's page, at the end of the B-tree (seqs only grow).
    let out = txn.reserve(
        dbs.archive,
        &seq.to_be_bytes(),
        meta_len(&e),
        WriteFlags::APPEND,
    )?;
    encode_meta_into(out, &e);
    match &event.packed {
        Some(packed) => put_parts(txn, dbs.bytes, seq, packed, WriteFlags::APPEND)?,
        None => put_bytes(txn, dbs.bytes, seq, event.payload(), WriteFlags::APPEND)?,
    }
    c.next_seq += 1;
    c.last_ms = accepted;
    c.count += 1;
    c.bytes += event.payload().len() as u64;
    Ok(true)
}

/// What [`evict_oldest`] should delete: entries while this says so, given the oldest
/// entry's acceptance time (ms) and the counters as they stand.
pub type Evict<'f> = &'f dyn Fn(u64, &Counters) -> bool;

/// Delete the oldest entries (and their `by_ivorn` keys) while `evict` says so, at most
/// `max` of them; returns how many, and the bytes of events they held.
pub fn evict_oldest(
    txn: &mut RwTransaction<'_>,
    dbs: Dbs,
    c: &mut Counters,
    max: usize,
    evict: Evict<'_>,
) -> lmdb::Result<(usize, u64)> {
    let mut victims: Vec<(u64, Vec<u8>, u64)> = Vec::new();
    {
        let mut cursor = txn.open_ro_cursor(dbs.archive)?;
        let mut sim = *c;
        for item in cursor.iter_start() {
            if victims.len() >= max {
                break;
            }
            let (k, v) = item?;
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            let e = decode(seq, v).map_err(|_| lmdb::Error::Corrupted)?;
            if !evict(e.accepted_ms, &sim) {
                break;
            }
            sim.count = sim.count.saturating_sub(1);
            sim.bytes = sim.bytes.saturating_sub(e.size as u64);
            victims.push((seq, ivorn_key(e.ivorn, seq), e.size as u64));
        }
    }
    let mut freed = 0;
    for (seq, ikey, len) in &victims {
        txn.del(dbs.archive, &seq.to_be_bytes(), None)?;
        delete_bytes(txn, dbs.bytes, *seq)?;
        match txn.del(dbs.by_ivorn, ikey, None) {
            Ok(()) | Err(lmdb::Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        c.count = c.count.saturating_sub(1);
        c.bytes = c.bytes.saturating_sub(*len);
        freed += len;
    }
    Ok((victims.len(), freed))
}

/// 16 random bytes from the kernel, the archive's identity (a position in one archive
/// means nothing in another).
pub fn new_identity() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut id = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
    Ok(id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An entry's metadata for bytes of `size`, to read stored bytes back with.
    pub(crate) fn entry_of_size(size: usize) -> Entry<'static> {
        Entry {
            seq: 1,
            accepted_ms: 0,
            role: EventRole::Observation,
            source_kind: SourceKind::Author,
            source: "",
            ivorn: "",
            author_ivorn: None,
            authored: None,
            key: [0; 32],
            size,
            bytes: &[],
        }
    }

    fn event(origin: Origin, who: bool) -> Event {
        let xml = if who {
            "<VOEvent ivorn=\"ivo://x.y/s#1\" role=\"utility\"><Who><AuthorIVORN> ivo://x.y/a </AuthorIVORN><Date>2026-01-02T03:04:05</Date></Who></VOEvent>"
        } else {
            "<VOEvent ivorn=\"ivo://x.y/s#1\" role=\"utility\"/>"
        };
        let doc = crate::xml::parse(xml.as_bytes(), Default::default()).unwrap();
        Event::new(
            xml.as_bytes(),
            "ivo://x.y/s#1".into(),
            EventRole::Utility,
            doc.root_span.clone(),
            origin,
        )
        .with_who(&doc)
    }

    /// Every field survives encode/decode, absent strings stay absent, format-3 entries
    /// decode to the same entry, and damaged values are refused with the reason rather
    /// than misread (the bytes: [`codec`]'s tests).
    #[test]
    fn entries_round_trip() {
        let e = event(Origin::Author("192.0.2.7:4000".parse().unwrap()), true);
        let full = entry_of(
            &e,
            7,
            1_700_000_000_123,
            SourceKind::Author,
            "192.0.2.7:4000",
        );
        let v = encode_meta(&full);
        let d = decode(7, &v).unwrap();
        assert_eq!(d.seq, 7);
        assert_eq!(d.accepted_ms, 1_700_000_000_123);
        assert_eq!(d.role, EventRole::Utility);
        assert_eq!(d.source_kind, SourceKind::Author);
        assert_eq!(d.source, "192.0.2.7:4000");
        assert_eq!(d.ivorn, "ivo://x.y/s#1");
        assert_eq!(d.stream(), "ivo://x.y/s");
        assert_eq!(d.author_ivorn, Some("ivo://x.y/a"));
        assert_eq!(d.authored, Some("2026-01-02T03:04:05"));
        assert_eq!(d.key, e.key);
        assert_eq!(d.size, e.payload().len());
        assert!(d.bytes.is_empty(), "metadata only");
        assert_eq!(
            Entry {
                bytes: e.payload(),
                ..d.clone()
            },
            full
        );
        let old = v1::encode(&full);
        assert_eq!(v1::decode(7, &old).unwrap(), full);
        let bare = event(Origin::Upstream("h:8099".into()), false);
        let v = encode_meta(&entry_of(&bare, 1, 5, SourceKind::Upstream, "h:8099"));
        let d = decode(1, &v).unwrap();
        assert_eq!((d.author_ivorn, d.authored), (None, None));
        assert_eq!(d.size, bare.payload().len());
        assert!(decode(1, &v[..HEADER - 1]).is_err());
        let mut newer = v.clone();
        newer[0] = 9;
        assert!(decode(1, &newer).unwrap_err().why.contains("version"));
        let mut long = v.clone();
        long[LENGTHS_AT..LENGTHS_AT + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(1, &long).is_err());
        assert_eq!(source_of(&Origin::Local), None);
        let kafka = Origin::Kafka {
            topic: "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK".into(),
            partition: 0,
            offset: 7,
        };
        assert_eq!(
            source_of(&kafka),
            Some((
                SourceKind::Kafka,
                "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK".into()
            ))
        );
    }

    /// `by_ivorn` keys sort by ivorn, then seq, and give the seq back; very long ivorns
    /// are cut to the key limit.
    #[test]
    fn ivorn_keys() {
        let a = ivorn_key("ivo://x.y/s#1", 9);
        let b = ivorn_key("ivo://x.y/s#1", 10);
        let c = ivorn_key("ivo://x.y/s#2", 1);
        assert!(a < b && b < c);
        assert_eq!(seq_of_ivorn_key(&b), Some(10));
        let long = "x".repeat(2000);
        assert_eq!(ivorn_key(&long, 3).len(), IVORN_KEY_MAX + 8);
        assert_eq!(seq_of_ivorn_key(&ivorn_key(&long, 3)), Some(3));
    }
}
