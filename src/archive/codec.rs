//! How an archived event's bytes are stored: one codec byte, then the bytes as they
//! are, as an LZ4 block, or as an LZ4 block that refers to [`DICTIONARY`].
//!
//! VOEvents of one kind are nearly the same document with other numbers in it: GCN's
//! notices share their namespaces, `Who` block, parameter names, descriptions and
//! layout. A block compressed with a dictionary of such text copies whole runs of it
//! from the dictionary instead of spelling them out once per event, so a GCN notice
//! takes about half the bytes plain LZ4 gives it (RESULTS.md, "The archive"). The
//! dictionary is two GCN notices as GCN distributed them (a Fermi GBM flight position
//! and a Swift BAT GRB position, from the test corpus), 12 KB, hashed into the
//! compressor's table with every event.
//!
//! A value's codec byte says how to read it back; values of [`LZ4`] (format 4's codec)
//! stay readable. [`DICTIONARY`] never changes: every value stored with
//! [`LZ4_DICT1`] needs exactly these bytes to be read. A better dictionary would be
//! another file under another codec byte.

use super::{BadEntry, Entry};

/// The bytes follow as they are.
pub const RAW: u8 = 0;
/// The bytes follow as one LZ4 block.
pub const LZ4: u8 = 1;
/// The bytes follow as one LZ4 block compressed against [`DICTIONARY`].
pub const LZ4_DICT1: u8 = 2;

/// The dictionary of [`LZ4_DICT1`]. Never edit it (module docs).
pub static DICTIONARY: &[u8] = include_bytes!("dictionary-1.xml");

/// `payload` as stored: compressed against [`DICTIONARY`] if that is smaller, else as
/// it is, behind its codec byte.
pub fn pack(payload: &[u8]) -> Vec<u8> {
    let mut packed = vec![0u8; 1 + lz4_flex::block::get_maximum_output_size(payload.len())];
    match lz4_flex::block::compress_into_with_dict(payload, &mut packed[1..], DICTIONARY) {
        Ok(n) if n < payload.len() => {
            packed[0] = LZ4_DICT1;
            packed.truncate(1 + n);
        }
        _ => {
            packed[0] = RAW;
            packed.truncate(1);
            packed.extend_from_slice(payload);
        }
    }
    packed
}

/// The exact bytes of `e` from its stored value (its parts joined): borrowed from it,
/// or decompressed into `buf`.
pub fn unpack<'b>(
    e: &Entry<'_>,
    stored: &'b [u8],
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8], BadEntry> {
    match stored.split_first() {
        Some((&RAW, bytes)) if bytes.len() == e.size => Ok(bytes),
        _ => {
            unpack_into(e, stored, buf)?;
            Ok(&buf[..])
        }
    }
}

/// The exact bytes of `e` from its stored value, into `buf`.
pub fn unpack_into(e: &Entry<'_>, stored: &[u8], buf: &mut Vec<u8>) -> Result<(), BadEntry> {
    let bad = |why| BadEntry { seq: e.seq, why };
    buf.clear();
    let (dict, packed): (&[u8], _) = match stored.split_first() {
        Some((&RAW, bytes)) if bytes.len() == e.size => {
            buf.extend_from_slice(bytes);
            return Ok(());
        }
        Some((&RAW, _)) => return Err(bad("its bytes are not the size it records")),
        Some((&LZ4, packed)) => (b"", packed),
        Some((&LZ4_DICT1, packed)) => (DICTIONARY, packed),
        _ => return Err(bad("its bytes are in an unknown encoding")),
    };
    buf.resize(e.size, 0);
    match lz4_flex::block::decompress_into_with_dict(packed, buf, dict) {
        Ok(n) if n == e.size => Ok(()),
        _ => Err(bad("its compressed bytes are damaged")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::entry_of_size;

    /// The dictionary is the one every stored value of [`LZ4_DICT1`] was compressed
    /// against: a changed byte would make them unreadable.
    #[test]
    fn the_dictionary_never_changes() {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(DICTIONARY).into();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "724426cb46450e49d02fbb544f424dce47cabb9177375e7bf0b10b0d7c02c806"
        );
    }

    /// Every corpus packet comes back bit for bit; the corpus takes well under what
    /// plain LZ4 gives it, and a GCN notice that is not in the dictionary about half.
    #[test]
    fn corpus_packets_round_trip_and_shrink() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/voevents");
        let Ok(listing) = std::fs::read_dir(&dir) else {
            panic!("the corpus is missing: {}", dir.display());
        };
        let (mut raw, mut plain, mut ours, mut n) = (0, 0, 0, 0);
        let mut buf = Vec::new();
        for f in listing {
            let path = f.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("xml") {
                continue;
            }
            let payload = std::fs::read(&path).unwrap();
            let stored = pack(&payload);
            assert_eq!(stored[0], LZ4_DICT1, "{}", path.display());
            let e = entry_of_size(payload.len());
            assert_eq!(unpack(&e, &stored, &mut buf).unwrap(), payload);
            raw += payload.len();
            plain += lz4_flex::block::compress(&payload).len();
            ours += stored.len();
            n += 1;
        }
        assert!(n > 100, "{n} corpus packets");
        assert!(
            ours * 5 < plain * 4,
            "{ours} against LZ4's {plain}, of {raw}"
        );
        let other = std::fs::read(dir.join("swift_grb690738-bat-grb-pos_10.xml")).unwrap();
        let stored = pack(&other);
        assert!(stored.len() * 3 < lz4_flex::block::compress(&other).len() * 2);
    }

    /// Each codec reads back; a short value, a wrong size or an unknown codec byte is
    /// refused with the reason rather than misread.
    #[test]
    fn every_codec_reads_back_and_damage_is_refused() {
        let xml = format!(
            "<VOEvent>{}</VOEvent>",
            "<Param name=\"a\" value=\"1\"/>".repeat(100)
        );
        let payload = xml.as_bytes();
        let e = entry_of_size(payload.len());
        let mut buf = Vec::new();
        let mut plain = vec![LZ4];
        plain.extend(lz4_flex::block::compress(payload));
        let mut raw = vec![RAW];
        raw.extend_from_slice(payload);
        let ours = pack(payload);
        assert_eq!(ours[0], LZ4_DICT1);
        for stored in [&plain, &raw, &ours] {
            assert_eq!(unpack(&e, stored, &mut buf).unwrap(), payload);
            let short = entry_of_size(payload.len() - 1);
            assert!(unpack(&short, stored, &mut buf).is_err());
            let mut odd = stored.clone();
            odd[0] = 7;
            assert!(unpack(&e, &odd, &mut buf)
                .unwrap_err()
                .why
                .contains("unknown encoding"));
        }
        // The dictionary codec needs the dictionary: read as plain LZ4, it fails.
        let mut as_plain = ours.clone();
        as_plain[0] = LZ4;
        assert!(unpack(&e, &as_plain, &mut buf).is_err());
        // A short event is kept as it is.
        assert_eq!(pack(b"<x/>"), b"\0<x/>");
    }
}
