//! One PATCH body into the bucket. The body is cut at the scheduled part boundaries; each part
//! is spooled to a local file (memory stays bounded whatever the part size) and, once whole,
//! uploaded with UploadPart while the next one fills (at most [`UPLOADS_IN_FLIGHT`] at once).
//! What is left when the body ends (less than a part) becomes a tail piece object, so every
//! byte acknowledged is in the bucket before the answer. A part that begins with tail pieces
//! from earlier PATCHes reads them back into its spool file before it is uploaded.
//!
//! With a checksum, nothing is uploaded until the whole body arrived with the expected digest:
//! the parts wait on the spool disk (at most the body's length), then go up.

use super::S3Store;
use super::client::to_io;
use super::layout::{Meta, Staged, Tail};
use super::schedule::MAX_OBJECT;
use crate::data::body::drain;
use crate::data::{AppendLimits, Appended, BodyEnd, Incoming};
use aws_sdk_s3::primitives::{ByteStream, Length};
use bytes::{Bytes, BytesMut};
use ferry_core::verify::Hasher;
use futures_util::StreamExt;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Parts of one upload sent to the bucket at once while the body keeps arriving.
pub const UPLOADS_IN_FLIGHT: usize = 6;
/// Bytes gathered before a write to the spool file.
const WRITE_BATCH: usize = 1 << 20;

/// A part being filled in its spool file.
struct Filling {
    number: u64,
    start: u64,
    end: u64,
    path: PathBuf,
    file: tokio::fs::File,
    /// Bytes of the part before this PATCH's first byte (held by tail pieces).
    head: u64,
    /// Bytes of the part in the file or held by tails (`head` + this PATCH's bytes).
    filled: u64,
}

/// A whole part on the spool disk, ready to go up.
struct Ready {
    number: u64,
    start: u64,
    end: u64,
    path: PathBuf,
    /// Tail pieces to read back into the file's first bytes before the upload.
    tails: Vec<Tail>,
}

impl S3Store {
    /// [`crate::data::DataStore::append`] for the bucket.
    pub(super) async fn append_body(
        &self,
        id: &str,
        incoming: Incoming,
        limits: AppendLimits<'_>,
    ) -> Appended {
        let mut stream = incoming.body.into_data_stream();
        let failed = |e: io::Error, drained: bool| Appended {
            received: 0,
            kept: 0,
            verified: None,
            end: BodyEnd::Disk(e),
            drained,
        };
        let staged = match self.staged(id).await {
            Ok(Some(s)) if s.offset == limits.offset && !s.completed => s,
            Ok(Some(s)) => {
                let e = io::Error::other(format!(
                    "the bucket holds {} bytes of the upload, not {}",
                    s.offset, limits.offset
                ));
                return failed(e, drain(&mut stream).await);
            }
            Ok(None) => {
                let e = io::Error::new(io::ErrorKind::NotFound, "the upload's data is gone");
                return failed(e, drain(&mut stream).await);
            }
            Err(e) => return failed(io::Error::other(e), drain(&mut stream).await),
        };
        let dir = self
            .spool
            .join(format!("{id}.{:016x}", rand::random::<u64>()));
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            return failed(e, drain(&mut stream).await);
        }
        let mut run = Run {
            store: self,
            id,
            staged,
            dir: dir.clone(),
            uploads: JoinSet::new(),
            waiting: Vec::new(),
            uploaded: Vec::new(),
            upload_error: None,
            hold: limits.checksum.is_some(),
        };
        let appended = run.go(&mut stream, &limits).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        appended
    }
}

/// The state of one append.
struct Run<'a> {
    store: &'a S3Store,
    id: &'a str,
    staged: Staged,
    dir: PathBuf,
    uploads: JoinSet<(u64, io::Result<u64>)>,
    /// Whole parts held back until the checksum is known.
    waiting: Vec<Ready>,
    /// Parts uploaded by this append: (number, end).
    uploaded: Vec<(u64, u64)>,
    upload_error: Option<io::Error>,
    /// Parts wait for the checksum.
    hold: bool,
}

impl Run<'_> {
    async fn go<S>(&mut self, stream: &mut S, limits: &AppendLimits<'_>) -> Appended
    where
        S: futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    {
        let offset = limits.offset;
        let room = limits.room.min(MAX_OBJECT.saturating_sub(offset));
        let mut hasher = limits.checksum.map(|c| Hasher::new(c.algorithm));
        let mut filling = match self.open_part(offset).await {
            Ok(f) => f,
            Err(e) => {
                return Appended {
                    received: 0,
                    kept: 0,
                    verified: None,
                    end: BodyEnd::Disk(e),
                    drained: drain(stream).await,
                };
            }
        };
        let mut batch = BytesMut::new();
        let mut taken = 0u64;
        let mut end = BodyEnd::Complete;
        loop {
            let next = tokio::select! {
                biased;
                () = limits.let_go.cancelled() => { end = BodyEnd::TakenOver; break; }
                next = tokio::time::timeout(limits.idle, stream.next()) => next,
            };
            let frame = match next {
                Err(_) => {
                    end = BodyEnd::Idle;
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    end = BodyEnd::ClientGone(e.to_string());
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let left = room - taken;
            let (mut frame, overflow) = if frame.len() as u64 > left {
                (frame.slice(..left as usize), true)
            } else {
                (frame, false)
            };
            taken += frame.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&frame);
            }
            // Cut the frame at part boundaries.
            let mut failure = None;
            while !frame.is_empty() {
                let want =
                    (filling.end - filling.start - filling.filled - batch.len() as u64) as usize;
                let piece = frame.split_to(want.min(frame.len()));
                batch.extend_from_slice(&piece);
                let whole = filling.filled + batch.len() as u64 == filling.end - filling.start;
                if (batch.len() >= WRITE_BATCH || whole)
                    && let Err(e) = flush(&mut filling, &mut batch).await
                {
                    failure = Some(e);
                    break;
                }
                if whole {
                    match self.part_done(filling).await {
                        Ok(next) => filling = next,
                        Err(e) => return self.fail_early(stream, taken, e).await,
                    }
                }
            }
            if let Some(e) = failure.or_else(|| self.upload_error.take()) {
                return self.fail_early(stream, taken, e).await;
            }
            if overflow {
                end = BodyEnd::Overflow;
                break;
            }
        }
        if let Err(e) = flush(&mut filling, &mut batch).await {
            return self.fail_early(stream, taken, e).await;
        }
        let mut drained = true;
        if matches!(end, BodyEnd::Overflow) {
            drained = drain(stream).await;
        }
        if matches!(end, BodyEnd::TakenOver) {
            drained = false;
        }
        let verified = limits.checksum.map(|c| {
            matches!(end, BodyEnd::Complete)
                && hasher.take().map(Hasher::finish).as_deref() == Some(c.expected.as_slice())
        });
        if verified == Some(false) {
            self.uploads.abort_all();
            return Appended {
                received: taken,
                kept: 0,
                verified,
                end,
                drained,
            };
        }
        // Verified (or no checksum): everything read goes up.
        self.hold = false;
        for ready in std::mem::take(&mut self.waiting) {
            self.start_upload(ready).await;
        }
        while !self.uploads.is_empty() {
            self.reap_one().await;
        }
        let committed = match self.upload_error.take() {
            Some(e) => {
                end = BodyEnd::Disk(e);
                self.committed(offset)
            }
            None => match self.keep_tail(&filling).await {
                Ok(()) => offset + taken,
                Err(e) => {
                    end = BodyEnd::Disk(e);
                    self.committed(offset)
                }
            },
        };
        self.clean_stale().await;
        Appended {
            received: taken,
            kept: committed - offset,
            verified,
            end,
            drained,
        }
    }

    /// Ends an append that failed while the body was still arriving: waits for the part
    /// uploads already started, keeps what they committed, and reads what is left of the body.
    async fn fail_early<S>(&mut self, stream: &mut S, taken: u64, e: io::Error) -> Appended
    where
        S: futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    {
        let offset = self.staged.offset;
        if self.hold {
            self.uploads.abort_all();
            self.uploaded.clear();
        }
        while !self.uploads.is_empty() {
            self.reap_one().await;
        }
        self.clean_stale().await;
        Appended {
            received: taken,
            kept: self.committed(offset) - offset,
            verified: None,
            end: BodyEnd::Disk(e),
            drained: drain(stream).await,
        }
    }

    /// Where the bytes in the bucket end after this append's uploads: the contiguous parts
    /// from the first one this append made; or the offset it started at.
    fn committed(&mut self, offset: u64) -> u64 {
        self.uploaded.sort_unstable();
        let first = self.staged.parts.len() as u64 + 1;
        let mut at = offset;
        for (next, &(number, end)) in (first..).zip(&self.uploaded) {
            if number != next {
                break;
            }
            at = end;
        }
        at
    }

    /// Opens the spool file of the part holding byte `at`.
    async fn open_part(&self, at: u64) -> io::Result<Filling> {
        let (number, start, end) = self.staged.meta.schedule.part_at(at);
        let path = self.dir.join(format!("part-{number}"));
        let mut file = tokio::fs::File::create(&path).await?;
        let head = at - start;
        file.seek(io::SeekFrom::Start(head)).await?;
        Ok(Filling {
            number,
            start,
            end,
            path,
            file,
            head,
            filled: head,
        })
    }

    /// A part is whole: it goes up (or waits for the checksum); the next one opens.
    async fn part_done(&mut self, filling: Filling) -> io::Result<Filling> {
        let Filling {
            number,
            start,
            end,
            path,
            file,
            head,
            ..
        } = filling;
        drop(file);
        let tails = if head > 0 {
            self.staged.tails.clone()
        } else {
            Vec::new()
        };
        let ready = Ready {
            number,
            start,
            end,
            path,
            tails,
        };
        if self.hold {
            self.waiting.push(ready);
        } else {
            self.start_upload(ready).await;
        }
        self.open_part(end).await
    }

    /// Starts uploading a whole part, first waiting for a free slot.
    async fn start_upload(&mut self, ready: Ready) {
        while self.uploads.len() >= super::append::UPLOADS_IN_FLIGHT {
            self.reap_one().await;
        }
        let store = self.store.uploader();
        let meta = self.staged.meta.clone();
        self.uploads.spawn(async move {
            let number = ready.number;
            let result = async {
                store
                    .fill_tails(&ready.path, &ready.tails, ready.start)
                    .await?;
                store
                    .upload_part(&meta, number, &ready.path, ready.end - ready.start)
                    .await?;
                let _ = tokio::fs::remove_file(&ready.path).await;
                Ok(ready.end)
            }
            .await;
            (number, result)
        });
    }

    /// Waits for one part upload to end and records how.
    async fn reap_one(&mut self) {
        match self.uploads.join_next().await {
            Some(Ok((number, Ok(end)))) => self.uploaded.push((number, end)),
            Some(Ok((_, Err(e)))) => {
                self.upload_error.get_or_insert(e);
            }
            Some(Err(join)) if join.is_cancelled() => {}
            Some(Err(join)) => {
                self.upload_error.get_or_insert(io::Error::other(join));
            }
            None => {}
        }
    }

    /// Keeps the bytes of the unfinished part that this append brought as a tail piece; past
    /// [`super::MAX_TAILS`] pieces, all of the part's pieces are merged into one.
    async fn keep_tail(&mut self, filling: &Filling) -> io::Result<()> {
        let new = filling.filled - filling.head;
        if new == 0 {
            return Ok(());
        }
        let store = self.store.uploader();
        let tails: &[Tail] = if filling.head > 0 {
            &self.staged.tails
        } else {
            &[]
        };
        let (from, key) = if tails.len() + 1 > super::MAX_TAILS {
            store
                .fill_tails(&filling.path, tails, filling.start)
                .await?;
            (0, self.store.tail_key(self.id, filling.start))
        } else {
            (
                filling.head,
                self.store.tail_key(self.id, filling.start + filling.head),
            )
        };
        let body = ByteStream::read_from()
            .path(&filling.path)
            .offset(from)
            .length(Length::Exact(filling.filled - from))
            .build()
            .await
            .map_err(io::Error::other)?;
        store
            .client
            .put_object()
            .bucket(&store.bucket)
            .key(key)
            .content_length((filling.filled - from) as i64)
            .body(body)
            .send()
            .await
            .map_err(to_io)?;
        Ok(())
    }

    /// Deletes tail pieces that parts made redundant (best effort: they are ignored anyway).
    async fn clean_stale(&mut self) {
        let new_end = self
            .uploaded
            .iter()
            .map(|&(_, e)| e)
            .max()
            .unwrap_or(0)
            .max(self.staged.parts_end);
        let mut stale = std::mem::take(&mut self.staged.stale);
        if self.committed(self.staged.offset) >= new_end && new_end > self.staged.parts_end {
            stale.extend(
                self.staged
                    .tails
                    .iter()
                    .filter(|t| t.start < new_end)
                    .map(|t| t.key.clone()),
            );
        }
        if !stale.is_empty()
            && let Err(e) = self.store.delete_keys(&stale).await
        {
            tracing::debug!(id = %self.id, "could not delete redundant tail pieces: {e}");
        }
    }
}

/// Writes the gathered bytes at the file's position.
async fn flush(filling: &mut Filling, batch: &mut BytesMut) -> io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    filling.file.write_all(batch).await?;
    filling.file.flush().await?;
    filling.filled += batch.len() as u64;
    batch.clear();
    Ok(())
}

/// What a part upload task needs of the store.
#[derive(Clone)]
pub(super) struct Uploader {
    pub(super) client: aws_sdk_s3::Client,
    pub(super) bucket: String,
}

impl Uploader {
    /// Reads tail pieces back into `path` (at their place in the part starting at `start`).
    pub(super) async fn fill_tails(
        &self,
        path: &Path,
        tails: &[Tail],
        start: u64,
    ) -> io::Result<()> {
        if tails.is_empty() {
            return Ok(());
        }
        let mut file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
        for t in tails {
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&t.key)
                .send()
                .await
                .map_err(to_io)?;
            file.seek(io::SeekFrom::Start(t.start - start)).await?;
            let mut body = got.body;
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(io::Error::other)?;
                n += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            if n != t.len {
                return Err(io::Error::other(format!(
                    "tail piece {} has {n} bytes, not {}",
                    t.key, t.len
                )));
            }
        }
        file.flush().await
    }

    /// Uploads `len` bytes of `path` as part `number`; returns its entity tag.
    pub(super) async fn upload_part(
        &self,
        meta: &Meta,
        number: u64,
        path: &Path,
        len: u64,
    ) -> io::Result<String> {
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(len))
            .build()
            .await
            .map_err(io::Error::other)?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&meta.key)
            .upload_id(&meta.upload_id)
            .part_number(number as i32)
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .map_err(to_io)?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }
}
