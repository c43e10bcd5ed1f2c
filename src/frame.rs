//! VTP wire framing: a 4-byte big-endian length, then exactly that many payload bytes.
//!
//! [`FrameReader`] owns a connection's receive buffer. It copes with partial prefixes,
//! partial payloads and several frames per `read`, checks the announced length against the
//! limit *before* allocating anything for it, and recognises the classic little-endian
//! prefix mistake so the log can say so. [`write_frame`] sends one message with a single
//! `write_all` of prefix and payload.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    Closed,
    /// The peer closed the connection in the middle of a frame.
    Truncated { have: usize, want: usize },
    /// The announced length exceeds the limit. `le_hint` is set when the byte-swapped
    /// length would fit, i.e. the peer probably wrote its prefix little-endian.
    TooLarge {
        len: u32,
        limit: usize,
        le_hint: bool,
    },
    /// The read deadline passed.
    TimedOut,
    /// A frame was started but not finished within the per-frame deadline.
    Stalled { have: usize, want: usize },
    /// Any other I/O error.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed"),
            FrameError::Truncated { have, want } => write!(
                f,
                "connection closed mid-frame ({have} of {want} bytes received)"
            ),
            FrameError::TooLarge {
                len,
                limit,
                le_hint,
            } => {
                write!(f, "message too large: {len} bytes > limit {limit}")?;
                if *le_hint {
                    write!(
                        f,
                        " (possible little-endian length prefix: byte-swapped it reads {})",
                        len.swap_bytes()
                    )?;
                }
                Ok(())
            }
            FrameError::TimedOut => write!(f, "timed out waiting for data"),
            FrameError::Stalled { have, want } => write!(
                f,
                "sent part of a message ({have} of {want} bytes) and stopped; per-frame deadline passed"
            ),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
            _ => FrameError::Io(e),
        }
    }
}

/// Classify an announced length against `limit`.
pub fn check_len(len: u32, limit: usize) -> Result<usize, FrameError> {
    if (len as usize) <= limit {
        Ok(len as usize)
    } else {
        let swapped = len.swap_bytes() as usize;
        Err(FrameError::TooLarge {
            len,
            limit,
            le_hint: swapped <= limit,
        })
    }
}

/// Incremental frame decoder over a receive buffer.
pub struct FrameReader {
    /// The receive buffer: `buf[start..end]` is buffered and not yet consumed; all of
    /// `buf` is initialized, and what lies past `end` is room for the next read, so a
    /// reader built on a used buffer ([`FrameReader::with_buffer`]) neither allocates
    /// nor zero-fills for it.
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// End of the bytes received.
    end: usize,
    limit: usize,
    /// When the bytes of the incomplete frame now buffered started arriving.
    partial_since: Option<Instant>,
}

const READ_CHUNK: usize = 16 * 1024;

impl FrameReader {
    /// A reader that refuses frames longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameReader::with_buffer(limit, Vec::new())
    }

    /// A reader receiving into `buf` (whatever it holds is overwritten): for a thread
    /// that serves connection after connection, the previous connection's buffer.
    pub fn with_buffer(limit: usize, buf: Vec<u8>) -> Self {
        FrameReader {
            buf,
            start: 0,
            end: 0,
            limit,
            partial_since: None,
        }
    }

    /// The receive buffer back, for [`FrameReader::with_buffer`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Room for `n` more bytes after `end` (growing `buf` only when it is too short).
    fn room(&mut self, n: usize) -> &mut [u8] {
        self.compact();
        if self.buf.len() < self.end + n {
            self.buf.resize(self.end + n, 0);
        }
        &mut self.buf[self.end..self.end + n]
    }

    /// One `read` from `r` of at most `max` bytes, straight into the buffer (no
    /// intermediate copy, no buffer on the caller's stack). `Ok(0)`: end of stream.
    /// Errors, `WouldBlock` and `Interrupted` included, are the caller's to handle.
    pub fn read_some<R: Read>(&mut self, r: &mut R, max: usize) -> io::Result<usize> {
        let n = r.read(self.room(max))?;
        self.end += n;
        self.note_partial();
        Ok(n)
    }

    /// Feed bytes (from a non-blocking read, say).
    pub fn push(&mut self, data: &[u8]) {
        self.room(data.len()).copy_from_slice(data);
        self.end += data.len();
        self.note_partial();
    }

    /// Keep `partial_since` in step with the buffer: set when unconsumed bytes appear,
    /// cleared when the buffer is empty.
    fn note_partial(&mut self) {
        if self.buffered() == 0 {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
    }

    /// When the incomplete frame now buffered started arriving (`None`: nothing buffered).
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// True if an incomplete frame has been buffered for longer than `timeout`.
    pub fn stalled(&self, timeout: Duration) -> bool {
        !self.has_frame() && self.partial_since.is_some_and(|t| t.elapsed() > timeout)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Consume the next complete frame, if there is one: where its payload is in `buf`
    /// (valid until the buffer is next written).
    fn take(&mut self) -> Result<Option<std::ops::Range<usize>>, FrameError> {
        let avail = self.avail();
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
        let len = check_len(len, self.limit)?;
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let payload = self.start + 4..self.start + 4 + len;
        self.start = payload.end;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.partial_since = None;
        } else {
            // What remains is the start of the next frame, which arrived just now.
            self.partial_since = Some(Instant::now());
        }
        Ok(Some(payload))
    }

    /// Take the next complete frame out of the buffer, if there is one. The returned
    /// payload is a fresh `Vec` of exactly the frame's length.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.with_next_frame(<[u8]>::to_vec)
    }

    /// Hand the next complete frame's payload to `f` where it lies, without copying it
    /// out: for messages that are only looked at, such as a subscriber's acks.
    pub fn with_next_frame<R>(
        &mut self,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, FrameError> {
        Ok(self.take()?.map(|r| f(&self.buf[r])))
    }

    /// True if at least one complete frame is buffered.
    pub fn has_frame(&self) -> bool {
        let avail = self.avail();
        avail.len() >= 4
            && avail.len() - 4
                >= u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize
    }

    /// If a partial frame is buffered, the announced length (once known) and bytes so far.
    pub fn partial(&self) -> Option<(usize, usize)> {
        let avail = self.avail();
        if avail.is_empty() {
            return None;
        }
        let want = if avail.len() >= 4 {
            u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize + 4
        } else {
            4
        };
        Some((avail.len(), want))
    }

    /// Block on `r` until one whole frame is available. Read deadlines are the caller's
    /// business (socket read timeouts surface as [`FrameError::TimedOut`]).
    pub fn read_frame<R: Read>(&mut self, r: &mut R) -> Result<Vec<u8>, FrameError> {
        self.read_frame_ref(r).map(<[u8]>::to_vec)
    }

    /// [`FrameReader::read_frame`] without the copy: the payload stays in the reader's
    /// buffer, borrowed until the reader is next used.
    pub fn read_frame_ref<R: Read>(&mut self, r: &mut R) -> Result<&[u8], FrameError> {
        loop {
            if let Some(payload) = self.take()? {
                return Ok(&self.buf[payload]);
            }
            // Read at most what this frame still needs (bounded by READ_CHUNK), so a huge
            // announced length never makes us allocate more than we were actually sent.
            let need = match self.partial() {
                Some((have, want)) => (want - have).clamp(1, READ_CHUNK),
                None => READ_CHUNK,
            };
            let n = match self.read_some(r, need) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(match self.partial() {
                    None => FrameError::Closed,
                    Some((have, want)) => FrameError::Truncated { have, want },
                });
            }
        }
    }
}

impl FrameReader {
    /// Read one frame from `stream` under two deadlines: nothing at all may take until
    /// `idle_deadline`; once a frame has started, it must be complete within
    /// `frame_timeout` of its first byte ([`FrameError::Stalled`] otherwise).
    pub fn read_frame_deadlines(
        &mut self,
        stream: &TcpStream,
        idle_deadline: Instant,
        frame_timeout: Duration,
    ) -> Result<Vec<u8>, FrameError> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(f);
            }
            let deadline = match self.partial_since {
                Some(t) => idle_deadline.min(t + frame_timeout),
                None => idle_deadline,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match self.partial() {
                    Some((have, want)) => FrameError::Stalled { have, want },
                    None => FrameError::TimedOut,
                });
            }
            stream.set_read_timeout(Some(left))?;
            match self.read_some(&mut { stream }, READ_CHUNK) {
                Ok(0) => {
                    return Err(match self.partial() {
                        None => FrameError::Closed,
                        Some((have, want)) => FrameError::Truncated { have, want },
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }
}

/// Prefix `payload` with its big-endian length, as one buffer.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Write one frame: the prefix and the payload in one `write_all` for small messages, two
/// writes (no copy) for large ones.
pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    if payload.len() <= 8192 {
        w.write_all(&encode(payload))
    } else {
        w.write_all(&(payload.len() as u32).to_be_bytes())?;
        w.write_all(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its data in fixed-size pieces.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn encode_is_big_endian() {
        assert_eq!(encode(b"abc"), vec![0, 0, 0, 3, b'a', b'b', b'c']);
        let mut v = Vec::new();
        write_frame(&mut v, &[7u8; 9000]).unwrap();
        assert_eq!(&v[..4], &9000u32.to_be_bytes());
        assert_eq!(v.len(), 9004);
    }

    #[test]
    fn partial_reads_of_every_size() {
        let mut wire = encode(b"<first/>");
        wire.extend(encode(b""));
        wire.extend(encode(&[b'x'; 5000]));
        for step in [1, 2, 3, 5, 7, 4096, 100_000] {
            let mut r = Trickle { data: &wire, step };
            let mut fr = FrameReader::new(1 << 20);
            assert_eq!(fr.read_frame(&mut r).unwrap(), b"<first/>");
            assert_eq!(fr.read_frame(&mut r).unwrap(), b"");
            assert_eq!(fr.read_frame(&mut r).unwrap().len(), 5000);
            assert!(matches!(fr.read_frame(&mut r), Err(FrameError::Closed)));
        }
    }

    /// A reader on a used buffer reads into it as it is: old bytes never leak into a
    /// frame, and a buffer big enough is neither reallocated nor grown.
    #[test]
    fn a_reused_buffer_is_read_into_in_place() {
        let mut wire = encode(b"first frame");
        wire.extend(encode(b"second"));
        let used = vec![0xAAu8; 32 * 1024];
        let ptr = used.as_ptr();
        let mut fr = FrameReader::with_buffer(1 << 16, used);
        let mut r = &wire[..];
        assert_eq!(fr.read_frame_ref(&mut r).unwrap(), b"first frame");
        assert_eq!(fr.read_frame_ref(&mut r).unwrap(), b"second");
        assert!(matches!(fr.read_frame_ref(&mut r), Err(FrameError::Closed)));
        let back = fr.into_buffer();
        assert_eq!((back.as_ptr(), back.len()), (ptr, 32 * 1024));
    }

    /// `read_some` takes at most `max` bytes per call, straight into the buffer (which
    /// grows to no more than what is buffered plus `max`), and frames split across calls
    /// come out whole.
    #[test]
    fn read_some_reads_at_most_max_into_the_buffer() {
        let mut wire = encode(&[b'a'; 700]);
        wire.extend(encode(b"b"));
        let mut r = &wire[..];
        let mut fr = FrameReader::new(1 << 16);
        assert_eq!(fr.read_some(&mut r, 512).unwrap(), 512);
        assert!(!fr.has_frame());
        assert_eq!(fr.partial(), Some((512, 704)));
        assert!(fr.buf.len() <= 512, "grown to {}", fr.buf.len());
        assert_eq!(fr.read_some(&mut r, 512).unwrap(), 197);
        assert_eq!(fr.next_frame().unwrap().unwrap(), vec![b'a'; 700]);
        assert_eq!(fr.next_frame().unwrap().unwrap(), b"b");
        assert!(fr.buf.len() <= 1024, "grown to {}", fr.buf.len());
        assert_eq!(fr.read_some(&mut r, 512).unwrap(), 0);
        assert_eq!(fr.partial(), None);
    }

    #[test]
    fn several_frames_in_one_push() {
        let mut fr = FrameReader::new(100);
        let mut wire = encode(b"a");
        wire.extend(encode(b"bb"));
        wire.extend_from_slice(&[0, 0]);
        fr.push(&wire);
        assert!(fr.has_frame());
        assert_eq!(fr.next_frame().unwrap().unwrap(), b"a");
        assert_eq!(fr.next_frame().unwrap().unwrap(), b"bb");
        assert!(!fr.has_frame());
        assert!(fr.next_frame().unwrap().is_none());
        fr.push(&[0, 1, b'c']);
        assert!(fr.has_frame());
        assert_eq!(fr.next_frame().unwrap().unwrap(), b"c");
        assert_eq!(fr.buffered(), 0);
    }

    #[test]
    fn oversize_is_refused_before_reading_the_payload() {
        // 0xFFFFFFFF must not allocate 4 GiB: only the prefix is ever read.
        let wire = [0xFF, 0xFF, 0xFF, 0xFF];
        let mut fr = FrameReader::new(1 << 20);
        let err = fr.read_frame(&mut &wire[..]).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: u32::MAX,
                le_hint: false,
                ..
            }
        ));
        // A 1500-byte payload announced little-endian.
        let le = 1500u32.to_le_bytes();
        let err = FrameReader::new(99_999)
            .read_frame(&mut &le[..])
            .unwrap_err();
        match err {
            FrameError::TooLarge { len, le_hint, .. } => {
                assert_eq!(len, 3_691_315_200);
                assert!(le_hint);
            }
            e => panic!("{e:?}"),
        }
        assert!(err_text(3_691_315_200).contains("little-endian"));
        // Exactly the limit is fine.
        assert!(check_len(99_999, 99_999).is_ok());
        assert!(check_len(100_000, 99_999).is_err());
    }

    fn err_text(len: u32) -> String {
        check_len(len, 99_999).unwrap_err().to_string()
    }

    #[test]
    fn a_stalled_frame_is_reported_at_the_frame_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(&[0, 0, 0, 10, b'<']).unwrap();
        let mut fr = FrameReader::new(100);
        let started = Instant::now();
        let far = started + Duration::from_secs(60);
        let err = fr
            .read_frame_deadlines(&s, far, Duration::from_millis(200))
            .unwrap_err();
        assert!(
            matches!(err, FrameError::Stalled { have: 5, want: 14 }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(fr.stalled(Duration::from_millis(100)));
        // Idle (nothing started) is governed by the idle deadline only.
        let mut fr = FrameReader::new(100);
        let (s2, _) = {
            let _c2 = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let a = l.accept().unwrap();
            std::mem::forget(_c2);
            a
        };
        let err = fr
            .read_frame_deadlines(
                &s2,
                Instant::now() + Duration::from_millis(200),
                Duration::from_millis(50),
            )
            .unwrap_err();
        assert!(matches!(err, FrameError::TimedOut), "{err:?}");
        drop(c);
    }

    #[test]
    fn truncated_frame_is_reported() {
        let mut wire = 10u32.to_be_bytes().to_vec();
        wire.extend_from_slice(b"abc");
        let err = FrameReader::new(100)
            .read_frame(&mut &wire[..])
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated { have: 7, want: 14 }));
    }
}
