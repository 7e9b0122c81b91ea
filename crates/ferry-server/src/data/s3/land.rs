//! Finishing uploads in the bucket: the tail becomes the last part and
//! CompleteMultipartUpload makes the object (with `If-None-Match: *` unless replacing was
//! asked, after a HeadObject check for servers that ignore the condition); a final upload of a
//! concatenation is composed from its completed parts by UploadPartCopy (small parts are read
//! back and uploaded, see [`schedule::compose`]). Every step can be redone after a crash: the
//! upload's record says when a completion was under way, and parts already copied are kept.

use super::S3Store;
use super::client::{is_not_found, is_precondition_failed, to_io};
use super::layout::{Meta, Staged};
use super::schedule::{self, Composed, Schedule};
use crate::data::DataError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::io;
use tokio::io::AsyncWriteExt;

/// Characters escaped in an `x-amz-copy-source` key (everything but unreserved ones and `/`).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// How a completion may treat an existing object at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Replace it.
    Yes,
    /// Never (the target is a landed file's name).
    Never,
}

impl S3Store {
    /// [`crate::data::DataStore::land`] for the bucket.
    pub(super) async fn land_upload(
        &self,
        id: &str,
        target: &str,
        overwrite: bool,
    ) -> Result<(), DataError> {
        let key = self.target_key(target);
        let replace = if overwrite {
            Replace::Yes
        } else {
            Replace::Never
        };
        if let Some(parts) = self
            .get_json::<Vec<(String, u64)>>(&self.compose_key(id))
            .await?
        {
            self.compose(id, &key, &parts, target, replace).await?;
        } else {
            let Some(staged) = self.staged(id).await? else {
                return Err(DataError::Gone(id.to_owned()));
            };
            if staged.meta.key != key {
                return Err(DataError::io(
                    "landing the upload",
                    io::Error::other(format!(
                        "the upload was started for {}, not {key}",
                        staged.meta.key
                    )),
                ));
            }
            if !staged.completed {
                if replace == Replace::Never && self.target_exists_key(target).await? {
                    return Err(DataError::TargetExists(target.to_owned()));
                }
                self.complete(id, staged, replace, target).await?;
            }
        }
        self.forget(id).await
    }

    /// Removes an upload's records once its object is complete.
    async fn forget(&self, id: &str) -> Result<(), DataError> {
        self.metas.lock().expect("metas").remove(id);
        self.delete_keys(&[self.meta_key(id), self.compose_key(id)])
            .await?;
        self.delete_tails(id).await
    }

    /// Uploads the tail as the last part and completes the multipart upload.
    async fn complete(
        &self,
        id: &str,
        staged: Staged,
        replace: Replace,
        target: &str,
    ) -> Result<(), DataError> {
        let mut meta = staged.meta.clone();
        let mut parts = staged.parts;
        if !staged.tails.is_empty() {
            let number = parts.len() as u64 + 1;
            let len = staged.offset - staged.parts_end;
            let path = self.spool_file(id, "last");
            let uploaded = async {
                tokio::fs::File::create(&path).await?;
                let up = self.uploader();
                up.fill_tails(&path, &staged.tails, staged.parts_end)
                    .await?;
                up.upload_part(&meta, number, &path, len).await
            }
            .await;
            let _ = tokio::fs::remove_file(&path).await;
            let etag = uploaded.map_err(|e| DataError::io("uploading the last part", e))?;
            parts.push(super::layout::Part {
                number,
                size: len,
                etag,
            });
        }
        meta.completing = Some(staged.offset);
        self.put_json(&self.meta_key(id), &meta).await?;
        self.remember(id, meta.clone());
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .set_e_tag((!p.etag.is_empty()).then(|| p.etag.clone()))
                    .build()
            })
            .collect();
        self.finish_object(&meta, completed, replace, target).await
    }

    /// CompleteMultipartUpload of `meta`'s upload with `parts` (an empty object when there are
    /// none), conditional unless `replace`.
    async fn finish_object(
        &self,
        meta: &Meta,
        parts: Vec<CompletedPart>,
        replace: Replace,
        target: &str,
    ) -> Result<(), DataError> {
        let taken = |e: io::Error| DataError::io("completing the upload", e);
        if parts.is_empty() {
            let mut put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&meta.key)
                .body(ByteStream::from_static(b""));
            if replace == Replace::Never {
                put = put.if_none_match("*");
            }
            match put.send().await {
                Ok(_) => {}
                Err(e) if is_precondition_failed(&e) => {
                    return Err(DataError::TargetExists(target.to_owned()));
                }
                Err(e) => return Err(taken(to_io(e))),
            }
            self.abort(meta).await;
            return Ok(());
        }
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&meta.key)
            .upload_id(&meta.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if replace == Replace::Never {
            complete = complete.if_none_match("*");
        }
        match complete.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_precondition_failed(&e) => Err(DataError::TargetExists(target.to_owned())),
            Err(e) => Err(taken(to_io(e))),
        }
    }

    /// Aborts `meta`'s multipart upload (gone already is fine; a failure is only logged:
    /// a bucket lifecycle rule for incomplete multipart uploads is the backstop).
    pub(super) async fn abort(&self, meta: &Meta) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&meta.key)
            .upload_id(&meta.upload_id)
            .send()
            .await;
        if let Err(e) = aborted
            && !is_not_found(&e)
        {
            tracing::warn!(key = %meta.key, "could not abort a multipart upload: {}", to_io(e));
        }
    }

    /// Completes a part of a concatenation into its own (private) object; returns its length.
    pub(super) async fn finish_partial(&self, id: &str) -> Result<u64, DataError> {
        let Some(staged) = self.staged(id).await? else {
            return Err(DataError::Gone(id.to_owned()));
        };
        let length = staged.offset;
        if !staged.completed {
            self.complete(id, staged, Replace::Yes, id).await?;
        }
        Ok(length)
    }

    /// Makes the object at `key` the concatenation of the completed `parts`.
    async fn compose(
        &self,
        id: &str,
        key: &str,
        parts: &[(String, u64)],
        target: &str,
        replace: Replace,
    ) -> Result<(), DataError> {
        let total: u64 = parts.iter().map(|p| p.1).sum();
        let meta = match self.meta(id).await? {
            Some(m) => m,
            None => {
                if replace == Replace::Never && self.target_exists_key(target).await? {
                    return Err(DataError::TargetExists(target.to_owned()));
                }
                self.start_upload(id, key, Schedule::for_length(Some(total)))
                    .await?
            }
        };
        if meta.completing == Some(total)
            && self.list_parts(&meta).await?.is_none_or(|l| l.is_empty())
            && self.head_size(key).await? == Some(total)
        {
            return Ok(()); // composed before a crash
        }
        let lengths: Vec<u64> = parts.iter().map(|p| p.1).collect();
        let plan = schedule::compose(&lengths).ok_or_else(|| {
            DataError::io(
                "assembling the parts",
                io::Error::other("the parts would need more than 10,000 S3 parts"),
            )
        })?;
        let sources: Vec<String> = parts.iter().map(|(p, _)| self.part_data_key(p)).collect();
        let done = self.list_parts(&meta).await?.unwrap_or_default();
        let mut completed = Vec::with_capacity(plan.len());
        for (i, part) in plan.iter().enumerate() {
            let number = i as u64 + 1;
            let have = done
                .iter()
                .find(|p| p.number == number && p.size == part.len());
            let etag = match have {
                Some(p) => p.etag.clone(),
                None => self.make_part(id, &meta, number, part, &sources).await?,
            };
            completed.push(
                CompletedPart::builder()
                    .part_number(number as i32)
                    .set_e_tag((!etag.is_empty()).then_some(etag))
                    .build(),
            );
        }
        let mut meta = meta;
        meta.completing = Some(total);
        self.put_json(&self.meta_key(id), &meta).await?;
        self.remember(id, meta.clone());
        self.finish_object(&meta, completed, replace, target).await
    }

    /// Makes part `number` of a composition: a server-side copy, or pieces read back and
    /// uploaded.
    async fn make_part(
        &self,
        id: &str,
        meta: &Meta,
        number: u64,
        part: &Composed,
        sources: &[String],
    ) -> Result<String, DataError> {
        let failed = |e| DataError::io("assembling the parts", e);
        match part {
            Composed::Copy { source, start, end } => {
                let copy_source = format!(
                    "{}/{}",
                    self.bucket,
                    utf8_percent_encode(&sources[*source], COPY_SOURCE)
                );
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(&meta.key)
                    .upload_id(&meta.upload_id)
                    .part_number(number as i32)
                    .copy_source(copy_source)
                    .copy_source_range(format!("bytes={}-{}", start, end - 1))
                    .send()
                    .await
                    .map_err(|e| failed(to_io(e)))?;
                Ok(out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default()
                    .to_owned())
            }
            Composed::Gather(pieces) => {
                let path = self.spool_file(id, &format!("gather-{number}"));
                let made = async {
                    let mut file = tokio::fs::File::create(&path).await?;
                    for &(source, start, end) in pieces {
                        let got = self
                            .client
                            .get_object()
                            .bucket(&self.bucket)
                            .key(&sources[source])
                            .range(format!("bytes={}-{}", start, end - 1))
                            .send()
                            .await
                            .map_err(to_io)?;
                        let mut body = got.body;
                        while let Some(chunk) = body.next().await {
                            file.write_all(&chunk.map_err(io::Error::other)?).await?;
                        }
                    }
                    file.flush().await?;
                    drop(file);
                    self.uploader()
                        .upload_part(meta, number, &path, part.len())
                        .await
                }
                .await;
                let _ = tokio::fs::remove_file(&path).await;
                made.map_err(failed)
            }
        }
    }

    /// Starts a multipart upload at `key` for upload `id` and records it.
    pub(super) async fn start_upload(
        &self,
        id: &str,
        key: &str,
        schedule: Schedule,
    ) -> Result<Meta, DataError> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(crate::media::content_type(name))
            .send()
            .await
            .map_err(|e| DataError::io("starting the upload", to_io(e)))?;
        let meta = Meta {
            key: key.to_owned(),
            upload_id: created.upload_id().unwrap_or_default().to_owned(),
            schedule,
            completing: None,
        };
        self.put_json(&self.meta_key(id), &meta).await?;
        self.remember(id, meta.clone());
        Ok(meta)
    }
}
