//! Reading the archive ([`crate::archive`]) from outside the broker: `bolide-archive`, and
//! any reader that must never slow the broker. It opens the event database read-only (no
//! `bolide.lock`, no write transaction, only LMDB read transactions, which never block the
//! broker's writer nor are blocked by it), whether the broker runs or not.
//!
//! A [`Query`] selects entries by acceptance time, authoring time (`Who/Date`), ivorn
//! prefix or substring, role and XPath (the subscriber filters' semantics and code). The
//! plan: acceptance-time bounds become a seq range by binary search (seq order is time
//! order); ivorn prefixes are range scans of `by_ivorn`, kept to that seq range, unless
//! bounds leave a range small enough to read whole; entries are read in seq order, forwards or
//! backwards, until the limit. Seq bounds ([`Query::after_seq`]) let a long listing be
//! read in several short transactions. Every filter but XPath is decided on an entry's
//! metadata; its bytes are read (and decompressed) only for an entry that passed them, and
//! only if the query wants them or has an XPath.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lmdb::{Cursor, Environment, EnvironmentFlags, RoTransaction, Transaction};
use serde::Serialize;

use crate::archive::{self, BadEntry, Entry};
use crate::filters::{FilterTable, InvalidFilter};
use crate::store::{Store, FORMAT, FORMAT_4};
use crate::time::utc_timestamp_ms;
use crate::voevent::EventRole;

/// Why the archive cannot be read.
#[derive(Debug)]
pub enum ReadError {
    /// No event database at this path.
    Missing { path: PathBuf },
    /// The files are not a bolide event database, or one without an archive.
    Foreign { path: PathBuf, why: String },
    /// An entry cannot be decoded.
    Entry(BadEntry),
    /// An `--xpath` that does not compile.
    XPath { expr: String, why: InvalidFilter },
    /// LMDB refused (permissions, a damaged file).
    Lmdb { path: PathBuf, source: lmdb::Error },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Missing { path } => write!(
                f,
                "no event database at {}: give --eventdb the directory bolide uses",
                path.display()
            ),
            ReadError::Foreign { path, why } => write!(f, "{}: {why}", path.display()),
            ReadError::Entry(e) => write!(f, "{e}"),
            ReadError::XPath { expr, why } => {
                write!(f, "--xpath '{expr}' is not valid XPath 1.0: {why}")
            }
            ReadError::Lmdb { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ReadError {}

/// Which entries to read. Every bound is optional; times are Unix milliseconds, `since`
/// inclusive and `until` exclusive.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Bounds on `Who/Date`; an entry without a readable one does not match them.
    pub authored_since_ms: Option<u64>,
    pub authored_until_ms: Option<u64>,
    /// The ivorn starts with any of these (none: any ivorn).
    pub ivorn_prefixes: Vec<String>,
    pub ivorn_contains: Option<String>,
    pub role: Option<EventRole>,
    /// An XPath 1.0 expression with the subscriber filters' semantics.
    pub xpath: Option<String>,
    /// At most this many entries.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
    /// Only entries with a seq above / below these (exclusive): where a listing read in
    /// several transactions resumes.
    pub after_seq: Option<u64>,
    pub before_seq: Option<u64>,
    /// Visit entries without their bytes (`bytes` empty; `size` still says how many):
    /// a listing of metadata reads none of the events themselves.
    pub without_bytes: bool,
}

/// What the archive holds, per stream and per role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub count: u64,
    pub bytes: u64,
    /// Acceptance times (ms) of the oldest and newest entries.
    pub oldest_ms: Option<u64>,
    pub newest_ms: Option<u64>,
    /// Per stream (`ivo://authority/resource`): count, first and last acceptance time.
    pub streams: BTreeMap<String, (u64, u64, u64)>,
    /// Per role: count.
    pub roles: BTreeMap<&'static str, u64>,
}

/// An entry's metadata as one JSON object: what `bolide-archive list --json` prints, one
/// per line, and what any other reader of the archive serves for an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryJson<'a> {
    pub seq: u64,
    pub ivorn: &'a str,
    /// `ivo://authority/resource`: the ivorn up to its `#`.
    pub stream: &'a str,
    pub role: &'static str,
    /// Acceptance time, UTC, ISO 8601 with milliseconds (`2026-12-05T12:00:00.123Z`).
    pub accepted: String,
    /// `Who/Date` as written (`null`: absent).
    pub authored: Option<&'a str>,
    /// `Who/AuthorIVORN` (`null`: absent).
    pub author_ivorn: Option<&'a str>,
    /// The event's size in bytes.
    pub bytes: usize,
    /// `author`, `upstream` or `kafka`.
    pub source_kind: &'static str,
    /// The author's address (`host:port`), the upstream broker as `host:port`, or the
    /// Kafka topic.
    pub source: &'a str,
}

impl<'a> EntryJson<'a> {
    pub fn new(e: &Entry<'a>) -> EntryJson<'a> {
        EntryJson {
            seq: e.seq,
            ivorn: e.ivorn,
            // Entry::stream, but borrowed for 'a rather than for `e`.
            stream: e.ivorn.split('#').next().unwrap_or(""),
            role: e.role.as_str(),
            accepted: utc_timestamp_ms(e.accepted_ms),
            authored: e.authored,
            author_ivorn: e.author_ivorn,
            bytes: e.size,
            source_kind: e.source_kind.as_str(),
            source: e.source,
        }
    }
}

/// [`Stats`] as one JSON object (times as in [`EntryJson`]), with the archive's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsJson<'a> {
    /// The archive's identity, 32 hex digits.
    pub archive_id: String,
    pub count: u64,
    pub bytes: u64,
    /// Acceptance times of the oldest and newest entries (`null`: empty).
    pub oldest: Option<String>,
    pub newest: Option<String>,
    /// Entries per role.
    pub roles: &'a BTreeMap<&'static str, u64>,
    /// Per stream (`ivo://authority/resource`).
    pub streams: BTreeMap<&'a str, StreamJson>,
}

/// One stream's line of [`StatsJson`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamJson {
    pub count: u64,
    /// Acceptance times of its oldest and newest entries.
    pub first: String,
    pub last: String,
}

impl<'a> StatsJson<'a> {
    pub fn new(s: &'a Stats, id: [u8; 16]) -> StatsJson<'a> {
        StatsJson {
            archive_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            count: s.count,
            bytes: s.bytes,
            oldest: s.oldest_ms.map(utc_timestamp_ms),
            newest: s.newest_ms.map(utc_timestamp_ms),
            roles: &s.roles,
            streams: s
                .streams
                .iter()
                .map(|(name, &(count, first, last))| {
                    let stream = StreamJson {
                        count,
                        first: utc_timestamp_ms(first),
                        last: utc_timestamp_ms(last),
                    };
                    (name.as_str(), stream)
                })
                .collect(),
        }
    }
}

/// With ivorn prefixes and time (or seq) bounds, a seq range of at most this many entries
/// is read whole, each entry checked against the prefixes: that costs less than
/// collecting a large stream's keys from `by_ivorn` (a stream of 300 000 entries takes
/// tens of milliseconds) to keep the few of them in the range.
const SCAN_INSTEAD_OF_PREFIX: u64 = 20_000;

/// A read-only view of an event database's archive.
pub struct ArchiveReader {
    env: Env,
    dbs: archive::Dbs,
    dir: PathBuf,
}

/// The environment an [`ArchiveReader`] reads: opened read-only by the reader, or the
/// broker's own (LMDB allows one environment per file and process).
enum Env {
    Own(Environment),
    Broker(Arc<Store>),
}

impl ArchiveReader {
    /// A reader of the broker's own event database, in the broker's process.
    pub fn from_store(store: Arc<Store>) -> ArchiveReader {
        ArchiveReader {
            dbs: store.archive_dbs(),
            dir: store.path().to_path_buf(),
            env: Env::Broker(store),
        }
    }

    /// Open the event database in `dir` read-only.
    pub fn open(dir: &Path) -> Result<ArchiveReader, ReadError> {
        if !dir.join("data.mdb").is_file() {
            return Err(ReadError::Missing {
                path: dir.to_path_buf(),
            });
        }
        let lmdb = |source| ReadError::Lmdb {
            path: dir.to_path_buf(),
            source,
        };
        let foreign = |why: String| ReadError::Foreign {
            path: dir.to_path_buf(),
            why,
        };
        let env = Environment::new()
            .set_flags(EnvironmentFlags::READ_ONLY | EnvironmentFlags::NO_TLS)
            .set_max_dbs(8)
            .open(dir)
            .map_err(|e| match e {
                lmdb::Error::Invalid | lmdb::Error::VersionMismatch => {
                    foreign("not an LMDB database".to_string())
                }
                e => lmdb(e),
            })?;
        let open = |name: &str| {
            env.open_db(Some(name)).map_err(|e| match e {
                lmdb::Error::NotFound | lmdb::Error::Incompatible => foreign(format!(
                    "not a bolide event database (no `{name}` database)"
                )),
                e => lmdb(e),
            })
        };
        let meta = open("meta")?;
        {
            let txn = env.begin_ro_txn().map_err(lmdb)?;
            match txn.get(meta, &b"format") {
                // Format 4 reads as format 5 with an empty tail.
                Ok(v) if v == FORMAT || v == FORMAT_4 => {}
                Ok(v) if format_number(v).is_some_and(|n| Some(n) < format_number(FORMAT)) => {
                    return Err(foreign(format!(
                        "an event database of format {:?}, older than this tool reads: start this version of bolide on it once to upgrade it",
                        String::from_utf8_lossy(v)
                    )))
                }
                Ok(v) if v.starts_with(b"bolide-eventdb-") => {
                    return Err(foreign(format!(
                        "an event database of format {:?}, newer than this tool reads",
                        String::from_utf8_lossy(v)
                    )))
                }
                _ => return Err(foreign("not a bolide event database".to_string())),
            }
        }
        let dbs = archive::Dbs {
            archive: open(archive::ARCHIVE_DB)?,
            bytes: open(archive::BYTES_DB)?,
            by_ivorn: open(archive::BY_IVORN_DB)?,
            meta,
        };
        Ok(ArchiveReader {
            env: Env::Own(env),
            dbs,
            dir: dir.to_path_buf(),
        })
    }

    fn read_fail(&self, e: archive::ReadFail) -> ReadError {
        match e {
            archive::ReadFail::Bad(e) => ReadError::Entry(e),
            archive::ReadFail::Lmdb(e) => self.err(e),
        }
    }

    fn err(&self, source: lmdb::Error) -> ReadError {
        ReadError::Lmdb {
            path: self.dir.clone(),
            source,
        }
    }

    fn txn(&self) -> Result<RoTransaction<'_>, ReadError> {
        let env = match &self.env {
            Env::Own(env) => env,
            Env::Broker(store) => store.env(),
        };
        env.begin_ro_txn().map_err(|e| self.err(e))
    }

    /// The archive's identity (16 bytes, created with it).
    pub fn identity(&self) -> Result<[u8; 16], ReadError> {
        let txn = self.txn()?;
        let v = txn
            .get(self.dbs.meta, &archive::ID_KEY)
            .map_err(|e| self.err(e))?;
        v.try_into().map_err(|_| ReadError::Foreign {
            path: self.dir.clone(),
            why: "the archive identity is not 16 bytes".to_string(),
        })
    }

    /// Visit the entries `q` selects, in seq order (newest first with `q.reverse`), until
    /// `visit` returns `false` or the limit is reached; the number visited.
    pub fn query(
        &self,
        q: &Query,
        mut visit: impl FnMut(&Entry<'_>) -> bool,
    ) -> Result<usize, ReadError> {
        let mut xpath = match &q.xpath {
            Some(expr) => {
                let mut table = FilterTable::default();
                let id = table.acquire(expr).map_err(|why| ReadError::XPath {
                    expr: expr.clone(),
                    why,
                })?;
                Some((table, id))
            }
            None => None,
        };
        let limit = q.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(0);
        }
        let txn = self.txn()?;
        let mut n = 0;
        let mut buf = Vec::new();
        let mut fail = None;
        let want_bytes = !q.without_bytes || xpath.is_some();
        let mut each = |e: &Entry<'_>| -> bool {
            if !matches(q, e) {
                return true;
            }
            let full = if want_bytes {
                match archive::with_bytes(&txn, self.dbs, e, &mut buf) {
                    Ok(full) => full,
                    Err(err) => {
                        fail = Some(err);
                        return false;
                    }
                }
            } else {
                e.clone()
            };
            if let Some((table, id)) = &mut xpath {
                if !table.evaluate(full.bytes).matches(*id) {
                    return true;
                }
            }
            n += 1;
            let more = visit(&full);
            more && n < limit
        };
        let (from, to) = self.seq_range(&txn, q)?;
        let from = from.max(q.after_seq.map_or(0, |s| s.saturating_add(1)));
        let to = to.min(q.before_seq.unwrap_or(u64::MAX));
        let bounded = q.since_ms.is_some()
            || q.until_ms.is_some()
            || q.after_seq.is_some()
            || q.before_seq.is_some();
        if q.ivorn_prefixes.is_empty()
            || (bounded && to.saturating_sub(from) <= SCAN_INSTEAD_OF_PREFIX)
        {
            self.scan(&txn, from, to, q.reverse, &mut each)?;
        } else {
            let mut seqs = self.prefix_seqs(&txn, &q.ivorn_prefixes, false)?;
            seqs.retain(|s| (from..to).contains(s));
            seqs.sort_unstable();
            seqs.dedup();
            if q.reverse {
                seqs.reverse();
            }
            for seq in seqs {
                match self.get(&txn, seq)? {
                    Some(e) => {
                        if !each(&e) {
                            break;
                        }
                    }
                    None => continue,
                }
            }
        }
        match fail {
            Some(e) => Err(self.read_fail(e)),
            None => Ok(n),
        }
    }

    /// The newest entry with exactly this ivorn: its bytes.
    pub fn newest_bytes(&self, ivorn: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let txn = self.txn()?;
        let mut seqs = self.prefix_seqs(&txn, &[ivorn.to_string()], true)?;
        seqs.sort_unstable();
        for seq in seqs.into_iter().rev() {
            if let Some(e) = self.get(&txn, seq)? {
                if e.ivorn == ivorn {
                    let mut buf = Vec::new();
                    return archive::with_bytes(&txn, self.dbs, &e, &mut buf)
                        .map(|full| Some(full.bytes.to_vec()))
                        .map_err(|e| self.read_fail(e));
                }
            }
        }
        Ok(None)
    }

    /// Counts and times per stream and per role, and in all.
    pub fn stats(&self) -> Result<Stats, ReadError> {
        let txn = self.txn()?;
        let mut s = Stats::default();
        self.scan(&txn, 0, u64::MAX, false, &mut |e| {
            s.count += 1;
            s.bytes += e.size as u64;
            s.oldest_ms.get_or_insert(e.accepted_ms);
            s.newest_ms = Some(e.accepted_ms);
            // The stream's name is allocated once, not per entry.
            match s.streams.get_mut(e.stream()) {
                Some(st) => {
                    st.0 += 1;
                    st.2 = e.accepted_ms;
                }
                None => {
                    let first = (1, e.accepted_ms, e.accepted_ms);
                    s.streams.insert(e.stream().to_string(), first);
                }
            }
            *s.roles.entry(e.role.as_str()).or_insert(0) += 1;
            true
        })?;
        Ok(s)
    }

    fn get<'t>(
        &self,
        txn: &'t RoTransaction<'_>,
        seq: u64,
    ) -> Result<Option<Entry<'t>>, ReadError> {
        match txn.get(self.dbs.archive, &seq.to_be_bytes()) {
            Ok(v) => archive::decode(seq, v).map(Some).map_err(ReadError::Entry),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The seqs of every entry whose ivorn starts with one of `prefixes` (by `by_ivorn`
    /// and the tail; a prefix longer than the key limit matches on its first part, and
    /// the caller's filter checks the whole ivorn). With `exact`, only the entries whose
    /// ivorn is the prefix itself (as far as the key holds it): the other keys are
    /// skipped without reading their entries, so `ivo://a/b#1` does not read `#10`, ...
    fn prefix_seqs(
        &self,
        txn: &RoTransaction<'_>,
        prefixes: &[String],
        exact: bool,
    ) -> Result<Vec<u64>, ReadError> {
        let mut seqs = Vec::new();
        let mut cursor = txn
            .open_ro_cursor(self.dbs.by_ivorn)
            .map_err(|e| self.err(e))?;
        for p in prefixes {
            let p = &p.as_bytes()[..p.len().min(archive::IVORN_KEY_MAX)];
            for item in cursor.iter_from(p) {
                let (k, _) = item.map_err(|e| self.err(e))?;
                if !k.starts_with(p) {
                    break;
                }
                if exact && k.len() != p.len() + 8 {
                    continue;
                }
                if let Some(seq) = archive::seq_of_ivorn_key(k) {
                    seqs.push(seq);
                }
            }
        }
        // The entries not yet in `by_ivorn`, matched as their keys would be.
        archive::for_each_in_tail(txn, self.dbs, |e| {
            let iv = &e.ivorn.as_bytes()[..e.ivorn.len().min(archive::IVORN_KEY_MAX)];
            let matches = |p: &String| {
                let p = &p.as_bytes()[..p.len().min(archive::IVORN_KEY_MAX)];
                if exact {
                    iv == p
                } else {
                    iv.starts_with(p)
                }
            };
            if prefixes.iter().any(matches) {
                seqs.push(e.seq);
            }
        })
        .map_err(|e| self.read_fail(e))?;
        Ok(seqs)
    }

    /// The seq range `[from, to)` holding the acceptance times `[since, until)`; without
    /// `until`, it ends past the last entry.
    fn seq_range(&self, txn: &RoTransaction<'_>, q: &Query) -> Result<(u64, u64), ReadError> {
        let from = match q.since_ms {
            Some(t) => self.first_seq_at(txn, t)?,
            None => 0,
        };
        let to = self.first_seq_at(txn, q.until_ms.unwrap_or(u64::MAX))?;
        Ok((from, to))
    }

    /// The first seq whose entry was accepted at or after `t_ms` (past the last entry if
    /// none): a binary search, as acceptance times never decrease with seq.
    fn first_seq_at(&self, txn: &RoTransaction<'_>, t_ms: u64) -> Result<u64, ReadError> {
        let cursor = txn
            .open_ro_cursor(self.dbs.archive)
            .map_err(|e| self.err(e))?;
        let seq_at = |op, key: Option<&[u8]>| -> Result<Option<(u64, u64)>, ReadError> {
            match cursor.get(key, None, op) {
                Ok((Some(k), v)) => {
                    let seq = u64::from_be_bytes(k.try_into().unwrap_or([0; 8]));
                    let e = archive::decode(seq, v).map_err(ReadError::Entry)?;
                    Ok(Some((seq, e.accepted_ms)))
                }
                Ok((None, _)) | Err(lmdb::Error::NotFound) => Ok(None),
                Err(e) => Err(self.err(e)),
            }
        };
        let Some((first, _)) = seq_at(lmdb_sys::MDB_FIRST, None)? else {
            return Ok(0);
        };
        let Some((last, last_ms)) = seq_at(lmdb_sys::MDB_LAST, None)? else {
            return Ok(0);
        };
        if last_ms < t_ms {
            return Ok(last + 1);
        }
        // Invariant: the entry at or after `hi` is accepted at or after t; before `lo`, not.
        let (mut lo, mut hi) = (first, last);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match seq_at(lmdb_sys::MDB_SET_RANGE, Some(&mid.to_be_bytes()))? {
                Some((seq, ms)) if ms >= t_ms => hi = mid.min(seq),
                Some((seq, _)) => lo = seq + 1,
                None => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Visit the entries with seq in `[from, to)`, forwards or backwards, until `each`
    /// returns `false`.
    fn scan(
        &self,
        txn: &RoTransaction<'_>,
        from: u64,
        to: u64,
        reverse: bool,
        each: &mut dyn FnMut(&Entry<'_>) -> bool,
    ) -> Result<(), ReadError> {
        if from >= to {
            return Ok(());
        }
        let cursor = txn
            .open_ro_cursor(self.dbs.archive)
            .map_err(|e| self.err(e))?;
        let mut item = if reverse {
            match cursor.get(
                Some(&to.saturating_sub(1).to_be_bytes()),
                None,
                lmdb_sys::MDB_SET_RANGE,
            ) {
                Ok(kv) => Ok(kv),
                Err(lmdb::Error::NotFound) => cursor.get(None, None, lmdb_sys::MDB_LAST),
                Err(e) => Err(e),
            }
        } else {
            cursor.get(Some(&from.to_be_bytes()), None, lmdb_sys::MDB_SET_RANGE)
        };
        loop {
            let (k, v) = match item {
                Ok((Some(k), v)) => (k, v),
                Ok((None, _)) | Err(lmdb::Error::NotFound) => return Ok(()),
                Err(e) => return Err(self.err(e)),
            };
            let seq = u64::from_be_bytes(k.try_into().unwrap_or([0; 8]));
            if seq < from {
                return Ok(());
            }
            if seq < to {
                let e = archive::decode(seq, v).map_err(ReadError::Entry)?;
                if !each(&e) {
                    return Ok(());
                }
            } else if !reverse {
                return Ok(());
            }
            item = cursor.get(
                None,
                None,
                if reverse {
                    lmdb_sys::MDB_PREV
                } else {
                    lmdb_sys::MDB_NEXT
                },
            );
        }
    }
}

/// The number of an event database format (`bolide-eventdb-N`), if it is one.
fn format_number(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v.strip_prefix(b"bolide-eventdb-")?)
        .ok()?
        .parse()
        .ok()
}

/// Whether `e`'s metadata passes every filter of `q` but XPath.
fn matches(q: &Query, e: &Entry<'_>) -> bool {
    if q.since_ms.is_some_and(|t| e.accepted_ms < t)
        || q.until_ms.is_some_and(|t| e.accepted_ms >= t)
    {
        return false;
    }
    if !q.ivorn_prefixes.is_empty()
        && !q
            .ivorn_prefixes
            .iter()
            .any(|p| e.ivorn.starts_with(p.as_str()))
    {
        return false;
    }
    if q.ivorn_contains
        .as_deref()
        .is_some_and(|s| !e.ivorn.contains(s))
    {
        return false;
    }
    if q.role.is_some_and(|r| r != e.role) {
        return false;
    }
    if q.authored_since_ms.is_some() || q.authored_until_ms.is_some() {
        let Some(t) = e.authored.and_then(crate::time::parse_iso8601_ms) else {
            return false;
        };
        if q.authored_since_ms.is_some_and(|s| t < s) || q.authored_until_ms.is_some_and(|u| t >= u)
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreConfig};
    use crate::voevent::{Event, Origin};

    fn event(i: usize, stream: &str, role: &str, date: &str) -> Event {
        let xml = format!(
            "<VOEvent ivorn=\"ivo://x.y/{stream}#{i}\" role=\"{role}\"><Who><AuthorIVORN>ivo://x.y/a</AuthorIVORN><Date>{date}</Date></Who><What><Param name=\"n\" value=\"{i}\"/></What></VOEvent>"
        );
        let doc = crate::xml::parse(xml.as_bytes(), Default::default()).unwrap();
        Event::new(
            xml.as_bytes(),
            format!("ivo://x.y/{stream}#{i}"),
            EventRole::from_attr(role).unwrap(),
            doc.root_span.clone(),
            Origin::Author("127.0.0.1:9".parse().unwrap()),
        )
        .with_who(&doc)
    }

    fn list(r: &ArchiveReader, q: &Query) -> Vec<u64> {
        let mut v = Vec::new();
        r.query(q, |e| {
            v.push(e.seq);
            true
        })
        .unwrap();
        v
    }

    /// Events written by the store in batches come back through every kind of query,
    /// checked against a filter over the list of what was written.
    #[test]
    fn queries_agree_with_an_oracle() {
        let dir = std::env::temp_dir().join(format!("bolide-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let events: Vec<Event> = (0..300)
            .map(|i| {
                let stream = ["gbm", "bat", "lvc"][i % 3];
                let role = if i % 7 == 0 { "test" } else { "observation" };
                event(i, stream, role, &format!("2026-01-01T00:{:02}:00", i % 60))
            })
            .collect();
        {
            let store = Store::open(&StoreConfig::new(&dir)).unwrap();
            for chunk in events.chunks(37) {
                let rows: Vec<_> = chunk.iter().map(|e| (e.key, 1)).collect();
                let refs: Vec<&Event> = chunk.iter().collect();
                store.insert_batch(&rows, &refs).unwrap();
            }
            let c = store.archive_counters();
            assert_eq!((c.count, c.next_seq), (300, 301));
            // Some entries are in `by_ivorn`, the newest in the tail: both are queried.
            assert!(c.indexed > 1 && c.indexed < c.next_seq, "{c:?}");
        }
        let r = ArchiveReader::open(&dir).unwrap();
        let all = list(&r, &Query::default());
        assert_eq!(all, (1..=300).collect::<Vec<u64>>());
        let rev = Query {
            reverse: true,
            limit: Some(5),
            ..Query::default()
        };
        assert_eq!(list(&r, &rev), vec![300, 299, 298, 297, 296]);
        // Prefix (with a limit, both orders), contains, role, authored, XPath.
        let oracle = |f: &dyn Fn(usize, &Event) -> bool| -> Vec<u64> {
            events
                .iter()
                .enumerate()
                .filter(|(i, e)| f(*i, e))
                .map(|(i, _)| i as u64 + 1)
                .collect()
        };
        let q = Query {
            ivorn_prefixes: vec!["ivo://x.y/bat#".into(), "ivo://x.y/lvc#1".into()],
            ..Query::default()
        };
        assert_eq!(
            list(&r, &q),
            oracle(&|_, e| e.ivorn.starts_with("ivo://x.y/bat#")
                || e.ivorn.starts_with("ivo://x.y/lvc#1"))
        );
        let q = Query {
            ivorn_contains: Some("#2".into()),
            role: Some(EventRole::Test),
            ..Query::default()
        };
        assert_eq!(
            list(&r, &q),
            oracle(&|_, e| e.ivorn.contains("#2") && e.role == EventRole::Test)
        );
        let t =
            |m: u64| crate::time::parse_iso8601_ms(&format!("2026-01-01T00:{m:02}:00")).unwrap();
        let q = Query {
            authored_since_ms: Some(t(10)),
            authored_until_ms: Some(t(20)),
            ..Query::default()
        };
        assert_eq!(list(&r, &q), oracle(&|i, _| (10..20).contains(&(i % 60))));
        let q = Query {
            xpath: Some("//Param[@name='n' and @value mod 50 = 0]".into()),
            ..Query::default()
        };
        assert_eq!(list(&r, &q), oracle(&|i, _| i % 50 == 0));
        // Without bytes: metadata only, sizes kept; an XPath still sees the bytes.
        for xpath in [None, q.xpath.clone()] {
            let q = Query {
                without_bytes: true,
                xpath,
                ..Query::default()
            };
            let mut n = 0;
            r.query(&q, |e| {
                let want = events[e.seq as usize - 1].payload();
                assert_eq!(e.size, want.len());
                let bytes: &[u8] = if q.xpath.is_some() { want } else { &[] };
                assert_eq!(e.bytes, bytes);
                n += 1;
                true
            })
            .unwrap();
            assert!(n > 0);
        }
        assert_eq!(format_number(b"bolide-eventdb-12"), Some(12));
        assert!(format_number(b"bolide-eventdb-3") < format_number(FORMAT));
        assert!(format_number(b"bolide-eventdb-12") > format_number(FORMAT));
        assert!(matches!(
            r.query(
                &Query {
                    xpath: Some("//[".into()),
                    ..Query::default()
                },
                |_| true
            ),
            Err(ReadError::XPath { .. })
        ));
        // Acceptance time: everything is recent; a bound in the future selects nothing.
        let now = crate::time::unix_now_ms();
        let q = Query {
            since_ms: Some(now - 60_000),
            ..Query::default()
        };
        assert_eq!(list(&r, &q).len(), 300);
        let q = Query {
            since_ms: Some(now + 60_000),
            ..Query::default()
        };
        assert!(list(&r, &q).is_empty());
        let q = Query {
            until_ms: Some(now - 60_000),
            ..Query::default()
        };
        assert!(list(&r, &q).is_empty());
        // show: the newest with that ivorn, exact bytes.
        assert_eq!(
            r.newest_bytes("ivo://x.y/gbm#3").unwrap().unwrap(),
            events[3].payload()
        );
        assert_eq!(r.newest_bytes("ivo://x.y/gbm#").unwrap(), None);
        let s = r.stats().unwrap();
        assert_eq!(s.count, 300);
        assert_eq!(s.streams.len(), 3);
        assert_eq!(s.streams["ivo://x.y/bat"].0, 100);
        assert_eq!(
            s.roles["test"],
            oracle(&|_, e| e.role == EventRole::Test).len() as u64
        );
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Seq bounds resume a listing where it stopped, in both orders, on both paths (the
    /// `by_ivorn` keys of a prefix, or a scan of a bounded seq range); `newest_bytes`
    /// gives the newest of the entries sharing an ivorn, and nothing for an ivorn that
    /// only begins others.
    #[test]
    fn seq_bounds_resume_and_shared_ivorns() {
        let dir = std::env::temp_dir().join(format!("bolide-reader-s-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut events: Vec<Event> = (0..50)
            .map(|i| event(i, "s", "observation", "2026-01-01T00:00:00"))
            .collect();
        // #3 again, other bytes: seq 51.
        events.push(event(3, "s", "observation", "2026-02-02T00:00:00"));
        {
            let store = Store::open(&StoreConfig::new(&dir)).unwrap();
            let rows: Vec<_> = events.iter().map(|e| (e.key, 1)).collect();
            store
                .insert_batch(&rows, &events.iter().collect::<Vec<_>>())
                .unwrap();
        }
        let r = ArchiveReader::open(&dir).unwrap();
        let ones: Vec<u64> = (1..=51)
            .filter(|&s| events[s as usize - 1].ivorn.starts_with("ivo://x.y/s#1"))
            .collect();
        for reverse in [false, true] {
            for prefixes in [vec![], vec!["ivo://x.y/s#1".to_string()]] {
                let whole = Query {
                    ivorn_prefixes: prefixes.clone(),
                    reverse,
                    ..Query::default()
                };
                let all = list(&r, &whole);
                let mut want = if prefixes.is_empty() {
                    (1..=51).collect()
                } else {
                    ones.clone()
                };
                if reverse {
                    want.reverse();
                }
                assert_eq!(all, want);
                let mut q = Query {
                    limit: Some(4),
                    ..whole
                };
                let mut pieces = Vec::new();
                loop {
                    let got = list(&r, &q);
                    let Some(&last) = got.last() else { break };
                    pieces.extend(got);
                    if reverse {
                        q.before_seq = Some(last);
                    } else {
                        q.after_seq = Some(last);
                    }
                }
                assert_eq!(pieces, all, "reverse {reverse}, prefixes {prefixes:?}");
            }
        }
        assert_eq!(
            r.newest_bytes("ivo://x.y/s#3").unwrap().unwrap(),
            events[50].payload()
        );
        assert_eq!(r.newest_bytes("ivo://x.y/s#").unwrap(), None);
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Binary search over acceptance times: exact boundaries, gaps from pruning.
    #[test]
    fn time_ranges_by_binary_search() {
        let dir = std::env::temp_dir().join(format!("bolide-reader-t-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut times = Vec::new();
        {
            let store = Store::open(&StoreConfig::new(&dir)).unwrap();
            for i in 0..40 {
                let e = event(i, "s", "observation", "2026-01-01T00:00:00");
                store.insert_batch(&[(e.key, 1)], &[&e]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let r = ArchiveReader::open(&dir).unwrap();
        r.query(&Query::default(), |e| {
            times.push(e.accepted_ms);
            true
        })
        .unwrap();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        for (i, &t) in times.iter().enumerate() {
            let since = list(
                &r,
                &Query {
                    since_ms: Some(t),
                    ..Query::default()
                },
            );
            let expect: Vec<u64> = (1..=40).filter(|&s| times[s as usize - 1] >= t).collect();
            assert_eq!(since, expect, "since entry {i}");
            let until = list(
                &r,
                &Query {
                    until_ms: Some(t),
                    reverse: true,
                    ..Query::default()
                },
            );
            let mut expect: Vec<u64> = (1..=40).filter(|&s| times[s as usize - 1] < t).collect();
            expect.reverse();
            assert_eq!(until, expect, "until entry {i}");
        }
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
