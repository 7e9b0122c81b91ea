//! Upload state: the record kept for every upload, and the [`Store`] trait that keeps records,
//! target-path reservations, landed-file owners and per-upload locks. The embedded
//! [`RedbStore`](redb::RedbStore) is the default; a shared backend (Redis) implements the same trait.

pub mod redb;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What kind of tus upload a record is (concatenation extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// An ordinary upload with a target path.
    Normal,
    /// A partial upload (`Upload-Concat: partial`): staged only, never landed by itself.
    /// `final_id` names the final upload waiting for it, once one was created.
    Partial { final_id: Option<String> },
    /// A final upload (`Upload-Concat: final;…`): the concatenation of `parts`, in order.
    Final { parts: Vec<String> },
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
    /// Offset last recorded. While active, the staged data file's length is the truth
    /// (bytes that reached the file are kept); this copy serves completed uploads.
    pub offset: u64,
    /// `Upload-Metadata` exactly as the client sent it.
    pub metadata: Option<String>,
    /// Target path relative to the served directory (`None` for partial uploads).
    pub target: Option<String>,
    /// The client asked to replace an existing target (metadata `overwrite: true`).
    pub overwrite: bool,
    pub kind: Kind,
    pub phase: Phase,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which an active upload expires (renewed by PATCHes), or after
    /// which a completed or expired record is forgotten.
    pub expires: u64,
}

/// A failure of the state backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("upload state store: {0}")]
    Backend(String),
    #[error("upload state store: the disk is full: {0}")]
    DiskFull(String),
    #[error("upload state store: an earlier I/O error stopped it and it could not be reopened")]
    Poisoned,
    #[error("upload state store: record {0} is not valid JSON: {1}")]
    Corrupt(String, serde_json::Error),
}

/// The outcome of [`Store::create`].
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    Ok,
    /// Another unfinished upload already targets the same path.
    TargetBusy {
        holder: String,
    },
}

/// Held while one request writes to (or deletes) an upload; dropping it releases the lock.
pub trait UploadLock: Send + Sync {}

/// Upload records, target reservations, landed-file owners and locks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new record and, when it has a target, reserves that path for it (atomically:
    /// two uploads never hold one path).
    async fn create(&self, rec: &UploadRecord) -> Result<Created, StoreError>;
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
    async fn set_file_owner(&self, path: &str, owner: &str) -> Result<(), StoreError>;
    /// Takes the write lock of upload `id`, or `None` when another request holds it.
    async fn try_lock(&self, id: &str) -> Result<Option<Box<dyn UploadLock>>, StoreError>;
}
