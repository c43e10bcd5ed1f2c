//! Entries of format 3 (`bolide-eventdb-3`, entry version 1): metadata and bytes in one
//! `archive` value. This module reads them and rewrites them as the current format's
//! metadata and `event_bytes` records, in place and in chunks ([`upgrade_chunk`]).

use lmdb::{Cursor, RwTransaction, Transaction, WriteFlags};

use super::{decode_common, encode_meta, put_bytes, BadEntry, Dbs, Entry};

/// Version byte of a format-3 entry.
const VERSION: u8 = 1;
/// Fixed part of a format-3 entry: version, accepted ms, role, source kind, key, four
/// string lengths.
const HEADER: usize = 1 + 8 + 1 + 1 + 32 + 4 * 4;
const LENGTHS_AT: usize = 1 + 8 + 1 + 1 + 32;

/// Decode a format-3 entry: metadata, then the event's bytes to the end.
pub fn decode(seq: u64, v: &[u8]) -> Result<Entry<'_>, BadEntry> {
    if v.len() < HEADER {
        return Err(BadEntry {
            seq,
            why: "shorter than its header",
        });
    }
    let (mut e, at) = decode_common(seq, v, LENGTHS_AT, HEADER)?;
    e.bytes = &v[at..];
    e.size = e.bytes.len();
    Ok(e)
}

/// Rewrite up to `max` format-3 entries with seqs after `after` as metadata and
/// `event_bytes` records (entries already rewritten are passed over); the last seq looked
/// at, `None` once none is left.
pub fn upgrade_chunk(
    txn: &mut RwTransaction<'_>,
    dbs: Dbs,
    after: u64,
    max: usize,
) -> lmdb::Result<Option<u64>> {
    let mut done: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut last = None;
    {
        let mut cursor = txn.open_ro_cursor(dbs.archive)?;
        for item in cursor.iter_from(after.saturating_add(1).to_be_bytes()) {
            let (k, v) = item?;
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            last = Some(seq);
            if v.first() != Some(&VERSION) {
                continue;
            }
            let e = decode(seq, v).map_err(|_| lmdb::Error::Corrupted)?;
            done.push((seq, encode_meta(&e), e.bytes.to_vec()));
            if done.len() >= max {
                break;
            }
        }
    }
    for (seq, meta, bytes) in &done {
        txn.put(dbs.archive, &seq.to_be_bytes(), meta, WriteFlags::empty())?;
        put_bytes(txn, dbs.bytes, *seq, bytes, WriteFlags::empty())?;
    }
    Ok(last)
}

/// A format-3 entry of `e` (for tests that build a format-3 database).
#[cfg(test)]
pub fn encode(e: &Entry<'_>) -> Vec<u8> {
    let meta = encode_meta(e);
    let mut v = Vec::with_capacity(meta.len() + e.bytes.len());
    v.push(VERSION);
    v.extend_from_slice(&meta[1..super::LENGTHS_AT - 4]);
    v.extend_from_slice(&meta[super::LENGTHS_AT..]);
    v.extend_from_slice(e.bytes);
    v
}
