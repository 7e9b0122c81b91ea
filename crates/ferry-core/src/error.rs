//! The engine's typed errors. Each message says what happened and, where it helps, what to do.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the caller (URL, checksum spec, output path…).
    #[error("{0}")]
    Usage(String),

    /// The environment stops us (TLS roots cannot be loaded, a runtime cannot start…).
    #[error("{0}")]
    Setup(String),

    #[error("{url}: the server answered {status}{hint}")]
    HttpStatus {
        url: String,
        status: u16,
        hint: String,
    },

    #[error("{url}: {detail}")]
    Network { url: String, detail: String },

    /// The server broke the protocol (wrong Content-Range, a lying length…) repeatedly.
    #[error("{url}: {detail}")]
    Protocol { url: String, detail: String },

    #[error(
        "{url}: gave up after {attempts} attempts in a row without progress; last error: {last}. Rerun the same command to resume."
    )]
    RetriesExhausted {
        url: String,
        attempts: u32,
        last: String,
    },

    #[error(
        "the remote file changed since the partial download began ({detail}); rerun without --no-restart to start over, or with --restart"
    )]
    RemoteChanged { detail: String },

    #[error("{mirror} does not serve the same file as {first}: {detail}")]
    MirrorMismatch {
        first: String,
        mirror: String,
        detail: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: no space left on the device; free some space and rerun the same command to resume (progress is saved)", path.display())]
    DiskFull { path: PathBuf },

    #[error("{algo} checksum mismatch: expected {expected}, got {actual}; the data is kept in {} — rerun with --restart to download again", part.display())]
    ChecksumMismatch {
        algo: String,
        expected: String,
        actual: String,
        part: PathBuf,
    },

    #[error("the resume journal {} is unusable ({reason}); remove it (and its .part file) or rerun with --restart to start over", path.display())]
    JournalCorrupt { path: PathBuf, reason: String },

    #[error("the resume journal {} belongs to another download ({detail}); use another output name, or --restart to replace it", path.display())]
    JournalForeign { path: PathBuf, detail: String },

    #[error("{} already exists; pass --restart to download it again, or choose another name with -o", path.display())]
    Exists { path: PathBuf },

    #[error("{} is being written by another ferry process; wait for it or stop it first", path.display())]
    Busy { path: PathBuf },

    #[error(
        "every source sent data that failed verification ({detail}); the verified data is kept: rerun the same command with another source to resume"
    )]
    NoHonestSource { detail: String },

    /// Stopped by the caller (Ctrl-C); the journal is saved and a rerun resumes.
    #[error("interrupted; progress is saved, rerun the same command to resume")]
    Cancelled,
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull {
            return Error::DiskFull {
                path: path.to_owned(),
            };
        }
        if source.raw_os_error() == Some(27) {
            // EFBIG: the file size limit (ulimit -f) or the filesystem's maximum.
            return Error::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    source.kind(),
                    "the file is larger than this filesystem or the file size limit (ulimit -f) allows; raise the limit and rerun the same command to resume",
                ),
            };
        }
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// True when a rerun of the same command can continue where this one stopped (after the
    /// cause is gone: the network is back, space is freed…).
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            Error::Cancelled
                | Error::NoHonestSource { .. }
                | Error::RetriesExhausted { .. }
                | Error::Network { .. }
                | Error::DiskFull { .. }
        )
    }
}
