//! Where an upload's bytes are in the bucket and how far it got: the keys (the landed tree under
//! the prefix, `.ferry/uploads/` for state), the upload's small record object (multipart upload
//! id, object key, part schedule), and the offset recomputed from the bucket alone: the parts
//! that ListParts reports (every page, tus/tusd#147), contiguous from part 1 and each of its
//! scheduled size, then the chain of tail pieces that starts where they end.

use super::S3Store;
use super::client::{is_not_found, to_io};
use super::schedule::Schedule;
use crate::data::DataError;
use aws_sdk_s3::primitives::ByteStream;
use std::io;

/// The record of one upload's multipart upload, kept as a small object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The key the multipart upload completes to.
    pub key: String,
    /// S3's id of the multipart upload.
    pub upload_id: String,
    /// How the upload is cut into parts.
    pub schedule: Schedule,
    /// Set (to the object's length) just before CompleteMultipartUpload: after it, an upload
    /// whose parts are gone was completed when the object has that length (S3-compatible
    /// servers differ in what ListParts says of a completed upload).
    #[serde(default)]
    pub completing: Option<u64>,
}

/// One uploaded part.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its number (1-based).
    pub number: u64,
    /// Its size.
    pub size: u64,
    /// Its entity tag (for CompleteMultipartUpload).
    pub etag: String,
}

/// One tail piece: bytes past the last whole part, kept as a small object.
#[derive(Debug, Clone)]
pub struct Tail {
    /// Its object key.
    pub key: String,
    /// Offset of its first byte in the upload.
    pub start: u64,
    /// Its length.
    pub len: u64,
}

/// What the bucket holds of an upload.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The upload's record.
    pub meta: Meta,
    /// The parts, contiguous from 1 (an empty list once the upload was completed).
    pub parts: Vec<Part>,
    /// Where the parts end.
    pub parts_end: u64,
    /// The chain of tail pieces from `parts_end`.
    pub tails: Vec<Tail>,
    /// Tail pieces that the parts or a longer piece made redundant (to delete).
    pub stale: Vec<String>,
    /// The multipart upload was completed: the object at `meta.key` holds `offset` bytes.
    pub completed: bool,
    /// Bytes staged: the upload's offset.
    pub offset: u64,
}

/// Most keys a `DeleteObjects` call takes.
const DELETE_BATCH: usize = 1000;

impl S3Store {
    /// The object key of a landed file.
    pub(super) fn target_key(&self, target: &str) -> String {
        format!("{}{}", self.prefix, target)
    }

    /// The key under which an upload's state lives.
    fn upload_dir(&self, id: &str) -> String {
        format!("{}.ferry/uploads/{id}", self.prefix)
    }

    /// The key of an upload's record.
    pub(super) fn meta_key(&self, id: &str) -> String {
        format!("{}.json", self.upload_dir(id))
    }

    /// The key of a final upload's list of parts.
    pub(super) fn compose_key(&self, id: &str) -> String {
        format!("{}.parts.json", self.upload_dir(id))
    }

    /// The key of a partial upload's data (it lands nowhere).
    pub(super) fn part_data_key(&self, id: &str) -> String {
        format!("{}/data", self.upload_dir(id))
    }

    /// The prefix of an upload's tail pieces.
    fn tails_prefix(&self, id: &str) -> String {
        format!("{}/tail/", self.upload_dir(id))
    }

    /// The key of the tail piece starting at `start`.
    pub(super) fn tail_key(&self, id: &str, start: u64) -> String {
        format!("{}{start:020}", self.tails_prefix(id))
    }

    /// Stores a small JSON object.
    pub(super) async fn put_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), DataError> {
        let body = serde_json::to_vec(value).map_err(|e| DataError::io("encoding", e.into()))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| DataError::io("writing the upload's record", to_io(e)))?;
        Ok(())
    }

    /// Reads a small JSON object; `None` when it is not there.
    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, DataError> {
        let got = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(got) => got,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(DataError::io("reading the upload's record", to_io(e))),
        };
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| DataError::io("reading the upload's record", io::Error::other(e)))?
            .into_bytes();
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DataError::io("reading the upload's record", e.into()))
    }

    /// The upload's record (cached: it never changes), `None` when the upload is gone.
    pub(super) async fn meta(&self, id: &str) -> Result<Option<Meta>, DataError> {
        if let Some(m) = self.metas.lock().expect("metas").get(id) {
            return Ok(Some(m.clone()));
        }
        let meta: Option<Meta> = self.get_json(&self.meta_key(id)).await?;
        if let Some(m) = &meta {
            self.remember(id, m.clone());
        }
        Ok(meta)
    }

    /// Caches an upload's record (a bounded cache: it is cleared when full).
    pub(super) fn remember(&self, id: &str, meta: Meta) {
        let mut metas = self.metas.lock().expect("metas");
        if metas.len() >= super::META_CACHE {
            metas.clear();
        }
        metas.insert(id.to_owned(), meta);
    }

    /// Every part of a multipart upload, all pages; `None` when the upload is gone.
    pub(super) async fn list_parts(&self, meta: &Meta) -> Result<Option<Vec<Part>>, DataError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(&meta.key)
                .upload_id(&meta.upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(DataError::io("listing the upload's parts", to_io(e))),
            };
            for p in page.parts() {
                out.push(Part {
                    number: p.part_number().unwrap_or(0).max(0) as u64,
                    size: p.size().unwrap_or(0).max(0) as u64,
                    etag: p.e_tag().unwrap_or_default().to_owned(),
                });
            }
            // Pages end by IsTruncated, not by the marker (S3-compatible servers differ there).
            match (page.is_truncated(), page.next_part_number_marker()) {
                (Some(true), Some(next)) if !next.is_empty() => marker = Some(next.to_owned()),
                _ => break,
            }
            if out.len() as u64 > super::schedule::MAX_PARTS {
                break;
            }
        }
        out.sort_by_key(|p| p.number);
        out.dedup_by_key(|p| p.number);
        Ok(Some(out))
    }

    /// The keys and sizes of objects under `prefix` (every page, at most `limit`).
    pub(super) async fn list_keys(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, DataError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| DataError::io("listing the upload's tail", to_io(e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_owned(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) && out.len() < limit => {
                    token = Some(t.to_owned())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// What the bucket holds of upload `id`; `None` when it is gone.
    pub(super) async fn staged(&self, id: &str) -> Result<Option<Staged>, DataError> {
        let Some(meta) = self.meta(id).await? else {
            return Ok(None);
        };
        let listed = self.list_parts(&meta).await?;
        if let Some(length) = meta.completing
            && listed.as_ref().is_none_or(Vec::is_empty)
            && self.head_size(&meta.key).await? == Some(length)
        {
            // Completed (a part of a concatenation, or a landing that crashed before its
            // record was removed): the object holds everything.
            return Ok(Some(Staged {
                meta,
                parts: Vec::new(),
                parts_end: length,
                tails: Vec::new(),
                stale: Vec::new(),
                completed: true,
                offset: length,
            }));
        }
        let Some(listed) = listed else {
            return Ok(None);
        };
        let mut parts = Vec::new();
        let mut end = 0;
        for p in listed {
            let (start, sched_end) = meta.schedule.part(parts.len() as u64 + 1);
            if p.number != parts.len() as u64 + 1 || p.size == 0 || p.size > sched_end - start {
                break;
            }
            let short = p.size < sched_end - start;
            end = start + p.size;
            parts.push(p);
            if short {
                break; // the last part, uploaded by a landing that did not finish
            }
        }
        let pieces = self
            .list_keys(&self.tails_prefix(id), super::MAX_TAILS * 4)
            .await?;
        let (tails, stale) = chain(&self.tails_prefix(id), pieces, end);
        let offset = tails.last().map_or(end, |t| t.start + t.len);
        Ok(Some(Staged {
            meta,
            parts,
            parts_end: end,
            tails,
            stale,
            completed: false,
            offset,
        }))
    }

    /// The size of the object at `key`, `None` when there is none.
    pub(super) async fn head_size(&self, key: &str) -> Result<Option<u64>, DataError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DataError::io("looking at an object", to_io(e))),
        }
    }

    /// Deletes `keys` (missing ones are fine).
    pub(super) async fn delete_keys(&self, keys: &[String]) -> Result<(), DataError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DataError::io("deleting objects", io::Error::other(e)))?;
            if objects.len() == 1 {
                // One key: a plain DELETE (also where DeleteObjects is missing).
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&batch[0])
                    .send()
                    .await
                    .map_err(|e| DataError::io("deleting an object", to_io(e)))?;
                continue;
            }
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| DataError::io("deleting objects", io::Error::other(e)))?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| DataError::io("deleting objects", to_io(e)))?;
        }
        Ok(())
    }

    /// Deletes every tail piece of `id`.
    pub(super) async fn delete_tails(&self, id: &str) -> Result<(), DataError> {
        let keys: Vec<String> = self
            .list_keys(&self.tails_prefix(id), usize::MAX)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.delete_keys(&keys).await
    }
}

/// The tail pieces that follow each other from `from` (the longest where two start at one
/// offset), and the rest (made redundant by parts or a longer piece).
fn chain(prefix: &str, pieces: Vec<(String, u64)>, from: u64) -> (Vec<Tail>, Vec<String>) {
    let mut all: Vec<Tail> = pieces
        .into_iter()
        .filter_map(|(key, len)| {
            let start = key.strip_prefix(prefix)?.parse().ok()?;
            Some(Tail { key, start, len })
        })
        .collect();
    all.sort_by_key(|t| (t.start, std::cmp::Reverse(t.len)));
    let mut tails = Vec::new();
    let mut stale = Vec::new();
    let mut at = from;
    for t in all {
        if t.start == at && t.len > 0 {
            at += t.len;
            tails.push(t);
        } else if t.start < at {
            stale.push(t.key);
        }
        // A piece past a gap (never written by this store) is left alone.
    }
    (tails, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_chain_from_the_parts() {
        let p = "x/tail/";
        let k = |s: u64| format!("{p}{s:020}");
        let pieces = vec![(k(10), 5), (k(0), 4), (k(4), 2), (k(15), 1), (k(30), 3)];
        // Parts end at 10: the pieces before are stale, 10..15 and 15..16 follow, 30 is a gap.
        let (tails, stale) = chain(p, pieces.clone(), 10);
        assert_eq!(
            tails.iter().map(|t| (t.start, t.len)).collect::<Vec<_>>(),
            [(10, 5), (15, 1)]
        );
        assert_eq!(stale, [k(0), k(4)]);
        // A consolidated piece at 10 covering 10..16 makes 15 stale.
        let mut with_long = pieces;
        with_long[0] = (k(10), 6);
        let (tails, stale) = chain(p, with_long, 10);
        assert_eq!(tails.len(), 1);
        assert!(stale.contains(&k(15)));
    }
}
