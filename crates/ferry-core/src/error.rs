//! The engine's typed errors. Each message says what happened; advice on what to do next (which
//! command-line options to use, whether a rerun resumes) is the caller's to add.

use std::path::{Path, PathBuf};

/// Why a download or an upload stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input from the caller (URL, checksum spec, output path…).
    #[error("{0}")]
    Usage(String),

    /// A URL that cannot be parsed.
    #[error("invalid URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },

    /// The environment stops us (TLS roots cannot be loaded, a runtime cannot start…).
    #[error("{0}")]
    Setup(String),

    /// The HTTP client cannot be built (e.g. the TLS configuration is unusable).
    #[error("cannot set up the HTTP client: {}", crate::source::describe(.0))]
    HttpClient(#[source] reqwest::Error),

    /// A task of the engine panicked or was aborted.
    #[error("{what} task failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },

    /// The server answered with an error status.
    #[error("{url}: the server answered {status}{hint}")]
    HttpStatus {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// What the status means here (empty, or starting with "; " or ": ").
        hint: String,
    },

    /// The server's TLS certificate is not trusted; retrying cannot help.
    #[error("{url}: the server's certificate is not trusted: {reason}")]
    Certificate {
        /// The URL asked.
        url: String,
        /// Why the certificate was refused, in plain words.
        reason: String,
    },

    /// The transfer stopped for a network reason.
    #[error("{url}: {detail}")]
    Network {
        /// The URL of the transfer.
        url: String,
        /// What happened.
        detail: String,
    },

    /// The server broke the protocol (wrong Content-Range, a lying length…) repeatedly.
    #[error("{url}: {detail}")]
    Protocol {
        /// The URL asked.
        url: String,
        /// What the server did wrong.
        detail: String,
    },

    /// Too many attempts in a row failed without progress; progress is saved.
    #[error(
        "{url}: gave up after {attempts} attempts in a row without progress; last error: {last}"
    )]
    RetriesExhausted {
        /// The URL asked.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Why the last attempt failed.
        last: String,
    },

    /// The server could not be reached at all (no answer to any attempt of the first request).
    #[error("{url}: no answer after {attempts} attempts; last error: {last}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Why the last attempt failed.
        last: String,
    },

    /// The remote file changed while a partial download was waiting, and restarting is not
    /// allowed (or it kept changing).
    #[error("the remote file changed since the partial download began ({detail})")]
    RemoteChanged {
        /// What changed.
        detail: String,
    },

    /// A mirror serves another file than the first URL.
    #[error("{mirror} does not serve the same file as {first}: {detail}")]
    MirrorMismatch {
        /// The first URL.
        first: String,
        /// The mirror that differs.
        mirror: String,
        /// How it differs.
        detail: String,
    },

    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file grew past what the filesystem or the file size limit (ulimit -f) allows.
    #[error("{}: the file is larger than this filesystem or the file size limit (ulimit -f) allows", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The operating system's error (EFBIG).
        #[source]
        source: std::io::Error,
    },

    /// The disk is full; progress is saved.
    #[error("{}: no space left on the device", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },

    /// The finished data does not match an expected digest.
    #[error("{algo} checksum mismatch: expected {expected}, got {actual}; the data is kept in {}", part.display())]
    ChecksumMismatch {
        /// The digest's algorithm.
        algo: String,
        /// What was expected.
        expected: String,
        /// What the data has.
        actual: String,
        /// Where the data is kept.
        part: PathBuf,
    },

    /// The resume journal cannot be read.
    #[error("the resume journal {} is unusable ({reason})", path.display())]
    JournalCorrupt {
        /// The journal.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The resume journal describes another download.
    #[error("the resume journal {} belongs to another download ({detail})", path.display())]
    JournalForeign {
        /// The journal.
        path: PathBuf,
        /// How the downloads differ.
        detail: String,
    },

    /// The destination exists (and is not this download, complete).
    #[error("{} already exists", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },

    /// A file ferry would use for its own bookkeeping (`<name>.part`, `<name>.ferry`,
    /// `<name>.ferry.tmp`) is there and is not provably ferry's (a symbolic link, not a
    /// regular file, not a ferry journal, or a part file its journal does not describe). Such a
    /// file is never written, truncated or deleted, `--restart` included.
    #[error(
        "{} is in the way: {reason}; ferry never writes, truncates or deletes a file it did not make",
        path.display()
    )]
    InTheWay {
        /// The file.
        path: PathBuf,
        /// Why it is not ferry's.
        reason: String,
    },

    /// A redirect that is not followed (another scheme, https to http, a loop, too many, or
    /// none allowed at all).
    #[error("{url}: {refusal}")]
    Redirect {
        /// The URL as given.
        url: String,
        /// Why the redirect was refused.
        refusal: crate::source::RedirectRefusal,
    },

    /// There is not enough space for the whole file; the space reserved for it before the
    /// failure was given back (and a part file made for it removed).
    #[error(
        "{}: no space left on the device for the whole file ({len} bytes); the space reserved for it was given back",
        path.display()
    )]
    NoSpaceForFile {
        /// The part file.
        path: PathBuf,
        /// The file's length.
        len: u64,
    },

    /// Another process is writing the destination.
    #[error("{} is being written by another ferry process; wait for it or stop it first", path.display())]
    Busy {
        /// The destination.
        path: PathBuf,
    },

    /// Every source sent data that failed verification; the verified data is kept.
    #[error(
        "every source sent data that failed verification ({detail}); the verified data is kept"
    )]
    NoHonestSource {
        /// The last bad piece.
        detail: String,
    },

    /// Stopped by the caller (Ctrl-C); the journal is saved and a rerun resumes.
    #[error("interrupted; progress is saved")]
    Cancelled,

    /// Stopped by the caller (Ctrl-C) while downloading from a server without byte ranges:
    /// nothing can be resumed, a rerun starts from zero.
    #[error("interrupted; the server does not support byte ranges, so a rerun starts over")]
    CancelledWithoutResume,
}

impl Error {
    /// The error for `source` on `path`: a full disk and a too large file get their own variants.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull {
            return Error::DiskFull {
                path: path.to_owned(),
            };
        }
        if source.raw_os_error() == Some(27) {
            // EFBIG: the file size limit (ulimit -f) or the filesystem's maximum.
            return Error::FileTooLarge {
                path: path.to_owned(),
                source,
            };
        }
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// A task that did not finish (it panicked or was aborted) while doing `what`.
    pub fn task(what: &'static str, source: tokio::task::JoinError) -> Self {
        Error::Task { what, source }
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
                | Error::NoSpaceForFile { .. }
        )
    }
}
