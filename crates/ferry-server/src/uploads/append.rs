//! Appending bytes to an upload: the offset check under the upload's lock, a deferred length
//! becoming known, the body streamed into the data store (verified when a checksum came with
//! it), the offset committed only while the lock is still held, and completion.

use super::{Appended, Refusal, Uploads};
use crate::auth::User;
use crate::data::{AppendLimits, BodyEnd, Checksum, Incoming};
use crate::metrics::Metrics;
use crate::store::{Kind, Phase, UploadLock, UploadRecord};

/// An append (tus PATCH), parsed.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    /// The offset the client believes the upload is at.
    pub offset: u64,
    /// The upload's length, when the client declares it now (a deferred length).
    pub length: Option<u64>,
    /// The digest the body must have.
    pub checksum: Option<Checksum>,
    /// The body's length when announced (`Content-Length`).
    pub body_length: Option<u64>,
    /// The body ends the upload (the IETF draft's `Upload-Complete: ?1`): once it has been read
    /// to its end, the upload's length is the offset reached and the upload completes. A length
    /// set before must agree.
    pub complete: bool,
}

impl AppendRequest {
    /// The request announces an empty body.
    fn empty_body(&self) -> bool {
        self.body_length == Some(0)
    }
}

impl Uploads {
    /// Appends `body` to upload `id` for `user`. `body` is taken once the request is accepted;
    /// when the answer is a refusal it may still be there, for the front end to drain.
    pub async fn append(
        &self,
        user: &User,
        id: &str,
        req: &AppendRequest,
        body: &mut Option<Incoming>,
    ) -> Result<Appended, Refusal> {
        let rec = self.load(user, id).await?;
        if matches!(rec.kind, Kind::Final { .. }) {
            return Err(Refusal::FinalTakesNoBytes);
        }
        let lock = self.lock(id).await?;
        // Re-read under the lock: the previous holder may have changed it.
        let mut rec = self.load(user, id).await?;
        let finished_now = self.recover(&mut rec, lock.as_ref()).await?;
        let offset = self.offset_of(&rec).await?.unwrap_or(rec.offset);
        if req.offset != offset {
            return Err(Refusal::OffsetMismatch {
                claimed: req.offset,
                offset,
            });
        }
        if rec.phase != Phase::Active {
            // Complete already: nothing more to write.
            // A body of unstated length is taken as empty when this request is the one that
            // finished the upload (its last bytes came in a request that could not).
            return if req.empty_body() || (finished_now && req.body_length.is_none()) {
                Ok(Appended {
                    offset,
                    expires: None,
                })
            } else {
                Err(Refusal::Complete)
            };
        }
        if let Some(length) = req.length {
            self.declare_length(&mut rec, length, offset).await?;
        }
        let new_offset = self
            .write(&mut rec, offset, req, body, lock.as_ref())
            .await?;
        let expires = (rec.phase == Phase::Active).then_some(rec.expires);
        Ok(Appended {
            offset: new_offset,
            expires,
        })
    }

    /// Under the lock: repairs what a crash may have left (unverified bytes, a half-done
    /// landing) and finishes an upload whose bytes are all staged; true when it finished one.
    pub(super) async fn recover(
        &self,
        rec: &mut UploadRecord,
        lock: &dyn UploadLock,
    ) -> Result<bool, Refusal> {
        self.repair(rec, lock).await?;
        if self.full_but_active(rec).await? {
            // Every byte is staged but the request that wrote the last ones could not finish
            // the upload (taken over, its client gone): finished now, so an upload whose
            // offset says "complete" is never left unlanded.
            self.complete(rec, lock).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Under the lock: unverified bytes cut off, a half-done landing finished (what a crash
    /// may have left).
    pub(super) async fn repair(
        &self,
        rec: &mut UploadRecord,
        lock: &dyn UploadLock,
    ) -> Result<(), Refusal> {
        self.data.recover(&rec.id).await?;
        if rec.phase == Phase::Landing {
            self.land(rec, lock).await?;
        }
        Ok(())
    }

    /// The client states the length of an upload: it must agree with a length set before, and
    /// a deferred one becomes known.
    async fn declare_length(
        &self,
        rec: &mut UploadRecord,
        length: u64,
        offset: u64,
    ) -> Result<(), Refusal> {
        match rec.length {
            Some(have) if have != length => Err(Refusal::InconsistentLength(format!(
                "Upload-Length {length} differs from the length {have} set before"
            ))),
            Some(_) => Ok(()),
            None => {
                if length < offset {
                    return Err(Refusal::InconsistentLength(format!(
                        "Upload-Length {length} is less than the {offset} bytes already uploaded"
                    )));
                }
                self.check_max(length)?;
                if let Kind::Partial {
                    final_id: Some(final_id),
                } = &rec.kind
                {
                    self.check_final_total(final_id, &rec.id, length).await?;
                }
                self.check_quota_growth(rec, length, offset).await?;
                rec.length = Some(length);
                self.state.update(rec).await?;
                Ok(())
            }
        }
    }

    /// Writes one request body at `offset` (lock held, offset checked) and completes the upload
    /// when it reaches its length. Returns the new offset.
    pub(super) async fn write(
        &self,
        rec: &mut UploadRecord,
        offset: u64,
        req: &AppendRequest,
        body: &mut Option<Incoming>,
        lock: &dyn UploadLock,
    ) -> Result<u64, Refusal> {
        let room = match rec.length {
            Some(len) => len.saturating_sub(offset),
            None => self
                .policy
                .max_size
                .map_or(u64::MAX, |m| m.saturating_sub(offset))
                .min(self.quota_room(rec, offset, req.body_length).await?),
        };
        if let Some(body_len) = req.body_length
            && body_len > room
        {
            return Err(Refusal::BodyTooLong {
                body: body_len,
                room,
            });
        }
        let Some(incoming) = body.take() else {
            return Ok(offset);
        };
        let limits = AppendLimits {
            offset,
            room,
            checksum: req.checksum.as_ref(),
            idle: self.policy.idle_timeout,
            let_go: lock.let_go(),
        };
        let appended = self.data.append(&rec.id, incoming, limits).await;
        Metrics::add(&self.metrics.bytes_received, appended.received);
        let new_offset = offset.saturating_add(appended.kept);
        if appended.verified == Some(false) && matches!(appended.end, BodyEnd::Complete) {
            self.touch(rec).await?;
            Metrics::add(&self.metrics.checksum_mismatches, 1);
            return Err(Refusal::ChecksumMismatch { offset });
        }
        // The offset is committed only by the lock's holder.
        lock.check().await?;
        self.refresh_claim(rec).await?;
        rec.offset = new_offset;
        self.touch(rec).await?;
        self.publish_progress(rec, new_offset);
        let reached = rec.length == Some(new_offset);
        if reached && !matches!(appended.end, BodyEnd::Complete) {
            // Every byte is here though the body did not end cleanly (a chunked body that
            // went on past the length, a client gone after its last byte): the upload lands
            // now, and the answer still says how the body ended.
            self.complete(rec, lock).await?;
        }
        match appended.end {
            BodyEnd::Complete => {}
            BodyEnd::Overflow => {
                return Err(
                    Refusal::Overflow { offset: new_offset }.unread_unless(appended.drained)
                );
            }
            BodyEnd::ClientGone(e) => {
                tracing::debug!(id = %rec.id, "client went away mid-PATCH at {new_offset}: {e}");
                return Err(Refusal::BodyBroken(e));
            }
            BodyEnd::TakenOver => {
                return Err(
                    Refusal::TakenOver { offset: new_offset }.unread_unless(appended.drained)
                );
            }
            BodyEnd::Idle => {
                return Err(Refusal::Idle {
                    seconds: self.policy.idle_timeout.as_secs(),
                    offset: new_offset,
                });
            }
            BodyEnd::Disk(e) => {
                if req.checksum.is_none() && appended.kept > 0 {
                    self.state.update(rec).await?;
                }
                let refusal = Refusal::Data(crate::data::DataError::io("writing the upload", e));
                return Err(refusal.unread_unless(appended.drained));
            }
        }
        if req.complete {
            self.end_here(rec, new_offset).await?;
        }
        if rec.length == Some(new_offset) {
            self.complete(rec, lock).await?;
        }
        Ok(new_offset)
    }

    /// A partial upload read before its body was written may have been claimed by a final
    /// upload meanwhile (concatenation-unfinished): its record is rewritten with that claim,
    /// never without it.
    async fn refresh_claim(&self, rec: &mut UploadRecord) -> Result<(), Refusal> {
        if matches!(rec.kind, Kind::Partial { .. })
            && let Some(stored) = self.state.get(&rec.id).await?
        {
            rec.kind = stored.kind;
        }
        Ok(())
    }

    /// The body that ends the upload was read to its end at `offset`: a length still unknown
    /// becomes `offset`; a known one must be `offset`.
    async fn end_here(&self, rec: &mut UploadRecord, offset: u64) -> Result<(), Refusal> {
        match rec.length {
            Some(len) if len == offset => Ok(()),
            Some(len) => Err(Refusal::InconsistentLength(format!(
                "the upload was declared complete at offset {offset}, but its length is {len}"
            ))),
            None => {
                self.check_max(offset)?;
                rec.length = Some(offset);
                self.state.update(rec).await?;
                Ok(())
            }
        }
    }

    /// Renews an active upload's expiry after a write. The record is rewritten only when the
    /// expiry moved by at least 1/20 of its period: the offset lives in the data store, so most
    /// appends cost no store transaction (and no fsync) at all.
    async fn touch(&self, rec: &mut UploadRecord) -> Result<(), Refusal> {
        let fresh = self.fresh_expiry();
        let period = self.policy.expiry.as_secs();
        if fresh.saturating_sub(rec.expires) * 20 >= period.max(1) {
            rec.expires = fresh;
            self.state.update(rec).await?;
        }
        Ok(())
    }
}
