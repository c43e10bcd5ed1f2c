//! The event database's errors: what went wrong, with the path, and what to do about it;
//! and how LMDB's errors map onto them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::DATA_FILE;

/// Everything that can go wrong with the event database.
#[derive(Debug)]
pub enum StoreError {
    /// The memory map (maximum database size) is exhausted.
    MapFull { path: PathBuf, map_size: usize },
    /// The directory or its files cannot be written.
    ReadOnly { path: PathBuf },
    /// `path` (the data file) is not LMDB, not a bolide event database, or is damaged.
    Corrupt { path: PathBuf, reason: String },
    /// The same directory is already open in this process (LMDB forbids
    /// opening one environment twice in a process).
    AlreadyOpen { path: PathBuf },
    /// Another process (another broker) holds the directory's lock.
    InUse { path: PathBuf, pid: Option<u32> },
    /// `--eventdb` names something that is not a directory.
    NotADirectory { path: PathBuf },
    /// An I/O error on `path` (creating the directory, opening the files).
    Io { path: PathBuf, source: io::Error },
    /// Any other LMDB error, on the environment in `path`.
    Lmdb { path: PathBuf, source: lmdb::Error },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::MapFull { path, map_size } => write!(
                f,
                "event database {} is full (map size {} bytes): raise --eventdb-map-size or lower the TTL",
                path.display(),
                map_size
            ),
            StoreError::ReadOnly { path } => write!(
                f,
                "{} is not writable: fix its permissions or point --eventdb at a writable directory",
                path.display()
            ),
            StoreError::Corrupt { path, reason } => write!(
                f,
                "{} is not a bolide event database or is corrupt ({}): move it away (a new one will be created) or point --eventdb elsewhere",
                path.display(),
                reason
            ),
            StoreError::AlreadyOpen { path } => write!(
                f,
                "event database {} is already open in this process: use the existing handle",
                path.display()
            ),
            StoreError::InUse { path, pid } => {
                write!(f, "event database {} is in use by another bolide", path.display())?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(
                    f,
                    ": stop it first, or give this broker its own --eventdb directory"
                )
            }
            StoreError::NotADirectory { path } => write!(
                f,
                "{} is not a directory: give --eventdb a directory (it is created if missing)",
                path.display()
            ),
            StoreError::Io { path, source } => write!(
                f,
                "cannot use event database location {}: {}: check the --eventdb path",
                path.display(),
                source
            ),
            StoreError::Lmdb { path, source } => {
                write!(f, "event database {}: LMDB error: {}", path.display(), source)
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Lmdb { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(super) fn is_denied(kind: io::ErrorKind, errno: Option<i32>) -> bool {
    kind == io::ErrorKind::PermissionDenied
        || matches!(
            errno,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
        )
}

/// Map an LMDB error to a `StoreError` for the environment in `dir`.
pub(super) fn map_lmdb(dir: &Path, map_size: usize, e: lmdb::Error) -> StoreError {
    use lmdb::Error as E;
    match e {
        E::MapFull => StoreError::MapFull {
            path: dir.to_path_buf(),
            map_size,
        },
        E::Invalid | E::VersionMismatch | E::Corrupted | E::PageNotFound | E::Panic => {
            StoreError::Corrupt {
                path: dir.join(DATA_FILE),
                reason: format!("LMDB: {}", e),
            }
        }
        E::Other(errno) if is_denied(io::Error::from_raw_os_error(errno).kind(), Some(errno)) => {
            StoreError::ReadOnly {
                path: dir.to_path_buf(),
            }
        }
        E::Other(errno) if errno > 0 => StoreError::Io {
            path: dir.to_path_buf(),
            source: io::Error::from_raw_os_error(errno),
        },
        source => StoreError::Lmdb {
            path: dir.to_path_buf(),
            source,
        },
    }
}

/// Map a failed archive read to a `StoreError` for the environment in `dir`: LMDB's
/// error, or a damaged entry (the database is corrupt).
pub(super) fn read_fail(dir: &Path, map_size: usize, e: crate::archive::ReadFail) -> StoreError {
    match e {
        crate::archive::ReadFail::Lmdb(e) => map_lmdb(dir, map_size, e),
        crate::archive::ReadFail::Bad(e) => StoreError::Corrupt {
            path: dir.join(DATA_FILE),
            reason: e.to_string(),
        },
    }
}
