//! Byte searches in VTP frames: what the bench needs from a message (its ivorn, its
//! Transport role, its Origin) is found by searching the bytes, never by a DOM parse, so
//! the tool's own cost per message stays small next to the broker's.

/// Position of the first `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match hay[i..=last].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The value of the first `name="…"` attribute within the first `window` bytes.
pub fn attr_in<'a>(payload: &'a [u8], name: &[u8], window: usize) -> Option<&'a [u8]> {
    let head = &payload[..payload.len().min(window)];
    let at = find(head, name)? + name.len();
    let end = payload[at..].iter().position(|&b| b == b'"')?;
    Some(&payload[at..at + end])
}

/// Text of the first `<Origin>…</Origin>` (any prefix-free spelling).
pub fn origin_of(payload: &[u8]) -> Option<String> {
    let a = find(payload, b"<Origin>")? + 8;
    let e = find(&payload[a..], b"</Origin>")?;
    Some(
        String::from_utf8_lossy(&payload[a..a + e])
            .trim()
            .to_string(),
    )
}

/// The `role` of a Transport message (cheap).
pub fn transport_role(payload: &[u8]) -> Option<&[u8]> {
    let t = find(payload, b"Transport")?;
    attr_in(&payload[t..], b"role=\"", 1024)
}
