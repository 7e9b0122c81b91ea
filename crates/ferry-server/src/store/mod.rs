//! Upload state: the record kept for every upload, and the [`StateStore`] trait that keeps
//! records, target-path reservations, landed-file owners and per-upload locks.
//!
//! Implementations: the embedded [`RedbStore`](redb::RedbStore) (the default: one process, one
//! database file), [`MemoryStore`](memory::MemoryStore) (tests, throw-away servers), and the
//! shared [`RedisStore`](redis::RedisStore) (several instances over one directory). Nothing
//! here assumes one process, except that [`UploadLock`]s of the embedded stores cannot be lost
//! and their holders are never asked to let go.

pub mod memory;
pub mod redb;
pub mod redis;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What kind of tus upload a record is (concatenation extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// An ordinary upload with a target path.
    Normal,
    /// A partial upload (`Upload-Concat: partial`): staged only, never landed by itself.
    /// `final_id` names the final upload waiting for it, once one was created.
    Partial {
        /// The final upload this part belongs to, once one was created.
        final_id: Option<String>,
    },
    /// A final upload (`Upload-Concat: final;…`): the concatenation of `parts`, in order.
    Final {
        /// The ids of the partial uploads, in order.
        parts: Vec<String>,
    },
}

/// Where an upload is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Accepting bytes.
    Active,
    /// All bytes arrived; moving the data to its target (re-done after a crash).
    Landing,
    /// Landed at its target (or, for a partial upload, complete in staging).
    Complete,
    /// Expired before completion: data deleted, the record kept as a tombstone (answers 410).
    Expired,
}

/// One upload. Serialised as JSON inside the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Random 128-bit id, hex: the last segment of the upload URL.
    pub id: String,
    /// The user who created it (empty in `--public` mode).
    pub owner: String,
    /// Total length; `None` while deferred (`Upload-Defer-Length: 1`).
    pub length: Option<u64>,
    /// Offset last recorded. While active, the staged data's length is the truth (bytes that
    /// reached the data store are kept); this copy serves completed uploads.
    pub offset: u64,
    /// `Upload-Metadata` exactly as the client sent it.
    pub metadata: Option<String>,
    /// Target path relative to the served directory (`None` for partial uploads).
    pub target: Option<String>,
    /// The client asked to replace an existing target (metadata `overwrite: true`).
    pub overwrite: bool,
    /// Normal, partial or final.
    pub kind: Kind,
    /// Where the upload is in its life.
    pub phase: Phase,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which an active upload expires (renewed by PATCHes), or after
    /// which a completed or expired record is forgotten.
    pub expires: u64,
}

/// A failure of the state backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, a broken database); the request can be retried later.
    #[error("upload state store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend's disk is full.
    #[error("upload state store: the disk is full: {0}")]
    DiskFull(#[source] std::io::Error),
    /// An earlier I/O error stopped the backend and it could not be reopened.
    #[error("upload state store: an earlier I/O error stopped it and it could not be reopened")]
    Poisoned,
    /// A shared backend cannot be reached right now (answered with 503 and Retry-After).
    #[error("upload state store unreachable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored record cannot be read back.
    #[error("upload state store: record {0} is not valid JSON: {1}")]
    Corrupt(String, #[source] serde_json::Error),
    /// The lease of an [`UploadLock`] ran out or was taken over: its holder must not commit.
    #[error("the lock of upload {0} was lost to another request")]
    LockLost(String),
}

impl StoreError {
    /// A backend failure described by a message (no underlying error value).
    pub fn backend(message: impl Into<String>) -> StoreError {
        StoreError::Backend(message.into().into())
    }
}

/// The outcome of [`StateStore::create`].
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// The record was stored and its target reserved.
    Ok,
    /// Another unfinished upload already targets the same path.
    TargetBusy {
        /// The id of the upload holding the reservation.
        holder: String,
    },
}

/// Held while one request writes to (or deletes) an upload; dropping it releases the lock.
///
/// Locks of a shared store are leases that can be lost (the holder stalled past the lease, or
/// another instance took over): the upload core calls [`UploadLock::check`] before it commits
/// an offset, lands or deletes, so a holder that lost its lease never does.
#[async_trait]
pub trait UploadLock: Send + Sync {
    /// The fencing token of this acquisition: strictly greater than every earlier
    /// acquisition's for the same upload.
    fn fence(&self) -> u64;
    /// `Err(StoreError::LockLost)` once the lock is no longer held.
    async fn check(&self) -> Result<(), StoreError>;
    /// Cancelled when another request asked for this lock ([`StateStore::request_release`]) or
    /// the lock was lost: the holder then ends its request cleanly, keeping what it wrote. The
    /// embedded stores' tokens are never cancelled.
    fn let_go(&self) -> CancellationToken {
        CancellationToken::new()
    }
}

/// The lock of a store that only one process uses: always held, never lost.
struct Unshared;

#[async_trait]
impl UploadLock for Unshared {
    fn fence(&self) -> u64 {
        0
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Upload records, target reservations, landed-file owners and locks.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Inserts a new record and, when it has a target, reserves that path for it (atomically:
    /// two uploads never hold one path).
    async fn create(&self, rec: &UploadRecord) -> Result<Created, StoreError>;
    /// The record of upload `id`.
    async fn get(&self, id: &str) -> Result<Option<UploadRecord>, StoreError>;
    /// Replaces an existing record.
    async fn update(&self, rec: &UploadRecord) -> Result<(), StoreError>;
    /// Removes a record and its target reservation (if it holds one).
    async fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// Drops the target reservation held by `id` (after landing or expiry).
    async fn release_target(&self, target: &str, id: &str) -> Result<(), StoreError>;
    /// Every record (for expiry and metrics).
    async fn all(&self) -> Result<Vec<UploadRecord>, StoreError>;
    /// The user who landed the file at `path`, if it was landed by an upload.
    async fn file_owner(&self, path: &str) -> Result<Option<String>, StoreError>;
    /// Records `owner` as the user who landed the file at `path`.
    async fn set_file_owner(&self, path: &str, owner: &str) -> Result<(), StoreError>;
    /// Takes the write lock of upload `id`, or `None` when another request holds it.
    async fn try_lock(&self, id: &str) -> Result<Option<Box<dyn UploadLock>>, StoreError>;
    /// Asks the holder of upload `id`'s lock to let go (its [`UploadLock::let_go`] fires).
    /// `Ok(Some(lease))`: asked; the lock is free within `lease` even when its holder died.
    /// `Ok(None)` (the default): this store's holders cannot be asked; a busy lock is refused.
    async fn request_release(&self, id: &str) -> Result<Option<Duration>, StoreError> {
        let _ = id;
        Ok(None)
    }
    /// The lock of the expiry sweep, so that one instance at a time sweeps; `None` while
    /// another holds it. A store of one process always grants it.
    async fn sweep_lock(&self) -> Result<Option<Box<dyn UploadLock>>, StoreError> {
        Ok(Some(Box::new(Unshared)))
    }
    /// Whether the backend answers now (for the start-up line); the default always does.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A short name for logs and start-up lines (`redb`, `memory`, `redis`).
    fn name(&self) -> &'static str;
}

/// The record's JSON form, as the embedded stores keep it.
pub(crate) fn encode(rec: &UploadRecord) -> String {
    serde_json::to_string(rec).expect("an upload record always serialises")
}

/// Reads back a record stored by [`encode`].
pub(crate) fn decode(id: &str, json: &str) -> Result<UploadRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(id.to_owned(), e))
}

/// In-process locks for the embedded stores: a set of held ids and a fencing counter. Such a
/// lock is lost only by dropping it.
#[derive(Default, Clone)]
pub(crate) struct LocalLocks {
    held: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    fence: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LocalLocks {
    /// Takes `id`'s lock, or `None` when it is held.
    pub(crate) fn try_lock(&self, id: &str) -> Option<Box<dyn UploadLock>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(id.to_owned()) {
            return None;
        }
        let fence = self
            .fence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        Some(Box::new(LocalLock {
            id: id.to_owned(),
            fence,
            locks: self.clone(),
        }))
    }
}

struct LocalLock {
    id: String,
    fence: u64,
    locks: LocalLocks,
}

#[async_trait]
impl UploadLock for LocalLock {
    fn fence(&self) -> u64 {
        self.fence
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        self.locks
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}
