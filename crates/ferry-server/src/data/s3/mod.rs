//! [`S3Store`], the [`DataStore`] over an S3-compatible bucket (`ferry serve s3://BUCKET/PREFIX`).
//!
//! An upload is a multipart upload started at its target's key (`PREFIX/<target>`; a part of a
//! concatenation at `PREFIX/.ferry/uploads/<id>/data`), recorded in the small object
//! `PREFIX/.ferry/uploads/<id>.json`. PATCH bytes become parts at scheduled boundaries
//! (`schedule`), the bytes short of a whole part become tail pieces
//! (`PREFIX/.ferry/uploads/<id>/tail/<offset>`), and the offset is recomputed from the bucket
//! (`layout`), so an instance killed with -9 (or another instance sharing the state) finds every
//! acknowledged byte. Landing uploads the tail as the last part and completes the multipart
//! upload without replacing an existing object unless asked (`land`); a concatenation is
//! composed by UploadPartCopy. Reads are ranged GetObjects (`read`). Nothing of an upload is
//! kept on the local disk but the spool files of the parts in flight (in the state directory,
//! emptied at start).

mod append;
pub mod client;
mod land;
mod layout;
mod read;
pub mod schedule;

pub use client::{Location, StartError};

use super::{AppendLimits, Appended, DataError, DataStore, Incoming, Node, ReadError};
use crate::listing::Entry;
use async_trait::async_trait;
use layout::Meta;
use schedule::{MAX_OBJECT, Schedule};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Most upload records cached in memory (they never change while an upload is active; the
/// cache is emptied when full).
const META_CACHE: usize = 10_000;
/// Most tail pieces of one part before an append merges them into one.
const MAX_TAILS: usize = 16;

/// The staging area and landed tree in one bucket under one prefix.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    spool: PathBuf,
    metas: Mutex<HashMap<String, Meta>>,
}

impl S3Store {
    /// Connects to `location` with the client from the environment, checks the bucket, and
    /// spools parts in flight under `state_dir/spool` (emptied: files there are from a process
    /// that is gone).
    pub async fn open(location: &Location, state_dir: &Path) -> Result<S3Store, OpenError> {
        let (client, endpoint) = client::from_env().await;
        client::check_bucket(&client, &location.bucket, &endpoint).await?;
        let spool = state_dir.join("spool");
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(&spool).map_err(|e| OpenError::Spool(spool.clone(), e))?;
        Ok(S3Store {
            client,
            bucket: location.bucket.clone(),
            prefix: location.prefix.clone(),
            spool,
            metas: Mutex::new(HashMap::new()),
        })
    }

    /// A clonable handle for part uploads.
    fn uploader(&self) -> append::Uploader {
        append::Uploader {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
        }
    }

    /// A spool file for one job of upload `id`.
    fn spool_file(&self, id: &str, job: &str) -> PathBuf {
        self.spool
            .join(format!("{id}.{job}.{:016x}", rand::random::<u64>()))
    }
}

/// Why an [`S3Store`] cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The bucket cannot be used.
    #[error(transparent)]
    Bucket(#[from] StartError),
    /// The local spool directory cannot be made.
    #[error("cannot create the spool directory {0}: {1}")]
    Spool(PathBuf, #[source] io::Error),
}

#[async_trait]
impl DataStore for S3Store {
    async fn create(
        &self,
        id: &str,
        length: Option<u64>,
        target: Option<&str>,
    ) -> Result<(), DataError> {
        if length.is_some_and(|l| l > MAX_OBJECT) {
            return Err(DataError::io(
                "creating the upload",
                io::Error::new(io::ErrorKind::FileTooLarge, "S3 objects hold at most 5 TiB"),
            ));
        }
        let key = match target {
            Some(t) => {
                crate::safepath::target(t).map_err(|e| DataError::TargetPath(t.into(), e))?;
                self.target_key(t)
            }
            None => self.part_data_key(id),
        };
        self.start_upload(id, &key, Schedule::for_length(length))
            .await?;
        Ok(())
    }

    async fn offset(&self, id: &str) -> Result<Option<u64>, DataError> {
        Ok(self.staged(id).await?.map(|s| s.offset))
    }

    async fn append(&self, id: &str, body: Incoming, limits: AppendLimits<'_>) -> Appended {
        self.append_body(id, body, limits).await
    }

    async fn recover(&self, _id: &str) -> Result<(), DataError> {
        // Nothing to repair: bytes reach the bucket only once verified, and the offset is
        // recomputed from what is there.
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), DataError> {
        let meta = self.meta(id).await?;
        // The record first: without it the upload is gone, whatever a crash leaves behind.
        self.metas.lock().expect("metas").remove(id);
        self.delete_keys(&[self.meta_key(id), self.compose_key(id)])
            .await?;
        if let Some(meta) = meta {
            self.abort(&meta).await;
            if meta.key == self.part_data_key(id) {
                self.delete_keys(&[meta.key]).await?;
            }
        }
        self.delete_tails(id).await
    }

    async fn assemble(&self, id: &str, parts: &[(String, u64)]) -> Result<u64, DataError> {
        let mut sized = Vec::with_capacity(parts.len());
        for (part, _) in parts {
            sized.push((part.clone(), self.finish_partial(part).await?));
        }
        let total = sized.iter().map(|p| p.1).sum();
        self.put_json(&self.compose_key(id), &sized).await?;
        Ok(total)
    }

    async fn unassemble(&self, id: &str, _parts: &[String]) -> Result<(), DataError> {
        // The parts stay complete objects; only the composition goes.
        if let Some(meta) = self.meta(id).await? {
            self.abort(&meta).await;
        }
        self.metas.lock().expect("metas").remove(id);
        self.delete_keys(&[self.meta_key(id), self.compose_key(id)])
            .await
    }

    async fn target_exists(&self, target: &str) -> Result<bool, DataError> {
        self.target_exists_key(target).await
    }

    async fn land(&self, id: &str, target: &str, overwrite: bool) -> Result<(), DataError> {
        self.land_upload(id, target, overwrite).await
    }

    async fn open(&self, path: &[String]) -> Result<Node, ReadError> {
        self.open_path(path).await
    }

    async fn list(&self, path: &[String]) -> Result<Vec<Entry>, ReadError> {
        self.list_folder(path).await
    }
}
