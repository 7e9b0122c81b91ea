//! Bytes: the [`DataStore`] trait that stages the bytes of unfinished uploads (append at an
//! offset, verify, cut back, assemble parts), lands finished ones at their target, and reads
//! the landed files (by ranges, through [`ferry_http::Representation`]) and their folders; and
//! the types it speaks. [`LocalDir`](local::LocalDir) keeps them under the served directory's state
//! directory; [`S3Store`](s3::S3Store) keeps them in a bucket (multipart uploads). Nothing here
//! assumes that staged data is a local file: an upload is named by its id, a landed file by its
//! target path relative to the served root.

pub mod body;
pub mod local;
pub mod s3;

use crate::safepath::PathError;
use crate::socket::ConnSocket;
use async_trait::async_trait;
use ferry_core::verify::Algorithm;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The digest a request body must have (`Upload-Checksum`): its bytes are kept only when it
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The hash algorithm.
    pub algorithm: Algorithm,
    /// The expected digest of the whole body.
    pub expected: Vec<u8>,
}

/// A request body on its way in, with the connection it arrives on.
pub struct Incoming {
    /// The body.
    pub body: axum::body::Body,
    /// The connection's socket when it carries only this body (HTTP/1), for tuning.
    pub socket: Option<ConnSocket>,
}

/// What an append is allowed to write.
#[derive(Debug, Clone)]
pub struct AppendLimits<'a> {
    /// Where the body's first byte goes (the upload's offset, checked by the caller).
    pub offset: u64,
    /// At most this many bytes are taken; a longer body ends with [`BodyEnd::Overflow`].
    pub room: u64,
    /// The digest the body must have, if the client sent one.
    pub checksum: Option<&'a Checksum>,
    /// How long the body may stall before the append ends.
    pub idle: Duration,
    /// Cancelled when another request takes the upload over (the lock's
    /// [`let_go`](crate::store::UploadLock::let_go)): reading ends with [`BodyEnd::TakenOver`],
    /// the bytes written so far kept.
    pub let_go: tokio_util::sync::CancellationToken,
}

/// How reading a body ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyEnd {
    /// The whole body arrived and was written.
    Complete,
    /// The body went past the room it had: the bytes up to it were written, the rest refused.
    Overflow,
    /// The client went away or broke the framing.
    ClientGone(String),
    /// No byte arrived for the idle timeout.
    Idle,
    /// Writing failed (a full disk, an I/O error).
    Disk(io::Error),
    /// Another request asked for the upload's lock: reading stopped, the bytes so far written.
    TakenOver,
}

/// The result of [`DataStore::append`].
#[derive(Debug)]
pub struct Appended {
    /// Body bytes read and written (counted as received, even when later discarded).
    pub received: u64,
    /// Bytes kept from `offset` on: the upload's new offset is `offset + kept`. Zero when a
    /// checksum was asked for and the body did not arrive whole with that digest.
    pub kept: u64,
    /// With a checksum: whether the whole body arrived with the expected digest.
    pub verified: Option<bool>,
    /// How reading the body ended.
    pub end: BodyEnd,
    /// After a refusal (overflow, disk error): whether the rest of the body was read, so the
    /// connection can stay open.
    pub drained: bool,
}

/// A failure of the data backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The backend has no space left.
    #[error("{what}: the server's disk is full")]
    DiskFull {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The upload's staged data is gone.
    #[error("the data of upload {0} is gone")]
    Gone(String),
    /// Landing would replace an existing file, which was not asked for.
    #[error("{0} already exists")]
    TargetExists(String),
    /// The target is a directory.
    #[error("{0} is a directory")]
    TargetIsDirectory(String),
    /// The target path is unsafe or escapes the served root.
    #[error("target {0}: {1}")]
    TargetPath(String, #[source] PathError),
}

impl DataError {
    /// Wraps an I/O error with what was being done (a full disk becomes [`DataError::DiskFull`]).
    pub fn io(what: &'static str, source: io::Error) -> DataError {
        if is_disk_full(&source) {
            DataError::DiskFull { what, source }
        } else {
            DataError::Io { what, source }
        }
    }
}

/// What a path of the served tree holds.
pub enum Node {
    /// A file, readable by ranges.
    File(Arc<dyn ferry_http::Representation>),
    /// A folder (its entries come from [`DataStore::list`]).
    Dir,
}

/// Why a path of the served tree cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The path is refused (it escapes the root, names the state directory, …).
    #[error(transparent)]
    Refused(#[from] PathError),
    /// Neither a regular file nor a folder (a FIFO, a device).
    #[error("not a regular file or directory")]
    Special,
    /// Reading failed (`NotFound` included).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Whether an I/O error means "no space" (a full disk, a quota, a file size limit).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// Staged bytes of unfinished uploads and landed files.
#[async_trait]
pub trait DataStore: Send + Sync + 'static {
    /// Creates the empty staged data of a new upload and, when the length is known, reserves
    /// the space for it (so a full disk is reported at creation, not half-way). `target` is
    /// where it will land (`None` for a part of a concatenation): an object store starts its
    /// multipart upload at that key.
    async fn create(
        &self,
        id: &str,
        length: Option<u64>,
        target: Option<&str>,
    ) -> Result<(), DataError>;

    /// Bytes staged and verified so far (the upload's offset while it is active): what a
    /// checksummed append still checks is not counted. `None` when the data is gone.
    async fn offset(&self, id: &str) -> Result<Option<u64>, DataError>;

    /// Writes `body` at `limits.offset` (the caller holds the upload's lock and checked the
    /// offset). Every byte that reaches the store is kept, except that with a checksum the
    /// body's bytes are kept only when the whole body arrived with that digest.
    async fn append(&self, id: &str, body: Incoming, limits: AppendLimits<'_>) -> Appended;

    /// Repairs what a crash in the middle of an append left (bytes whose checksum was never
    /// checked are cut off). Called under the upload's lock before it is written to.
    async fn recover(&self, id: &str) -> Result<(), DataError>;

    /// The ids of uploads with staged data untouched for `min_age` (for removing data no
    /// record owns). The default lists none.
    async fn staged(&self, min_age: Duration) -> Result<Vec<String>, DataError> {
        let _ = min_age;
        Ok(Vec::new())
    }

    /// Deletes an upload's staged data (missing is fine).
    async fn delete(&self, id: &str) -> Result<(), DataError>;

    /// Makes the staged data of final upload `id` the concatenation of the staged `parts`
    /// (id and length, in order) and returns its length. Redoable after a crash; the parts'
    /// data may be consumed (the caller deletes them after landing).
    async fn assemble(&self, id: &str, parts: &[(String, u64)]) -> Result<u64, DataError>;

    /// Undoes [`DataStore::assemble`] for a final upload that will not be kept, so its parts
    /// can be assembled again by another final upload.
    async fn unassemble(&self, id: &str, parts: &[String]) -> Result<(), DataError>;

    /// Whether a file exists at `target` (an error for a directory or an unsafe path).
    async fn target_exists(&self, target: &str) -> Result<bool, DataError>;

    /// Moves upload `id`'s complete data to `target` atomically and durably. Without
    /// `overwrite` an existing target is never replaced ([`DataError::TargetExists`]).
    async fn land(&self, id: &str, target: &str, overwrite: bool) -> Result<(), DataError>;

    /// What is at `path` (components already checked by [`crate::safepath::components`]; empty
    /// for the root) among the landed files. Never anything of the state.
    async fn open(&self, path: &[String]) -> Result<Node, ReadError>;

    /// The entries of the folder at `path`: folders first, then by name.
    async fn list(&self, path: &[String]) -> Result<Vec<crate::listing::Entry>, ReadError>;
}
