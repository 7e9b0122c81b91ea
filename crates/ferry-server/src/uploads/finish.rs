//! Finishing uploads: a complete upload lands at its target (and its owner is recorded), a
//! complete part may complete its final upload, and a final upload is assembled from its
//! parts. Every step can be redone after a crash.

use super::{Refusal, Uploads, now};
use crate::data::DataError;
use crate::metrics::Metrics;
use crate::store::{Kind, Phase, UploadLock, UploadRecord};
use std::time::Duration;

/// How long a request waits for a final upload that another request is assembling.
const ASSEMBLY_WAIT: Duration = Duration::from_secs(60);

impl Uploads {
    /// All bytes arrived (lock held): a partial upload is done; other uploads land at their
    /// target.
    pub(super) async fn complete(
        &self,
        rec: &mut UploadRecord,
        lock: &dyn UploadLock,
    ) -> Result<(), Refusal> {
        match &rec.kind {
            Kind::Partial { final_id } => {
                let final_id = final_id.clone();
                rec.phase = Phase::Complete;
                rec.expires = self.fresh_expiry();
                lock.check().await?;
                self.state.update(rec).await?;
                if let Some(final_id) = final_id
                    && self.all_parts_complete_of(&final_id).await?
                {
                    self.assemble_final(&final_id).await?;
                }
                Ok(())
            }
            Kind::Normal | Kind::Final { .. } => {
                rec.phase = Phase::Landing;
                lock.check().await?;
                self.state.update(rec).await?;
                self.land(rec, lock).await
            }
        }
    }

    /// Moves a complete upload to its target and records who owns the file.
    pub(super) async fn land(
        &self,
        rec: &mut UploadRecord,
        lock: &dyn UploadLock,
    ) -> Result<(), Refusal> {
        let Some(target) = rec.target.clone() else {
            return Ok(());
        };
        lock.check().await?;
        match self.data.land(&rec.id, &target, rec.overwrite).await {
            Ok(()) => {}
            // The data is gone from staging because an earlier landing moved it (then crashed).
            Err(DataError::Gone(_)) => {}
            Err(e) => {
                // Keep the data staged: the client may retry (e.g. after the file was removed).
                rec.phase = Phase::Active;
                self.state.update(rec).await?;
                return Err(match e {
                    DataError::TargetExists(_) | DataError::TargetIsDirectory(_) => {
                        Refusal::CannotLand(e)
                    }
                    DataError::TargetPath(..) => Refusal::BadRequest(e.to_string()),
                    e => Refusal::Data(e),
                });
            }
        }
        self.state.set_file_owner(&target, &rec.owner).await?;
        rec.phase = Phase::Complete;
        rec.offset = rec.length.unwrap_or(rec.offset);
        rec.expires = now() + self.policy.expiry.as_secs();
        self.state.update(rec).await?;
        self.state.release_target(&target, &rec.id).await?;
        Metrics::add(&self.metrics.uploads_completed, 1);
        self.publish_landed(rec);
        Ok(())
    }

    /// Whether every one of `parts` is a complete upload.
    pub(super) async fn all_parts_complete(&self, parts: &[String]) -> Result<bool, Refusal> {
        for p in parts {
            match self.state.get(p).await? {
                Some(r) if r.phase == Phase::Complete => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    async fn all_parts_complete_of(&self, final_id: &str) -> Result<bool, Refusal> {
        match self.state.get(final_id).await? {
            Some(UploadRecord {
                kind: Kind::Final { parts },
                phase: Phase::Active,
                ..
            }) => self.all_parts_complete(&parts).await,
            _ => Ok(false),
        }
    }

    /// Concatenates the parts of final upload `final_id` (all complete) into its data, lands
    /// it, and deletes the parts' data. Waits for the final's lock: two parts finishing at once
    /// both get here.
    pub(super) async fn assemble_final(&self, final_id: &str) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + ASSEMBLY_WAIT;
        let lock = loop {
            if let Some(l) = self.state.try_lock(final_id).await? {
                break l;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Refusal::Assembling);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(mut rec) = self.state.get(final_id).await? else {
            return Ok(());
        };
        self.repair(&mut rec, lock.as_ref()).await?;
        let Kind::Final { parts } = rec.kind.clone() else {
            return Ok(());
        };
        if rec.phase != Phase::Active || !self.all_parts_complete(&parts).await? {
            return Ok(());
        }
        let mut sized = Vec::with_capacity(parts.len());
        let mut sum = 0u64;
        for p in &parts {
            let part = self.state.get(p).await?;
            let len = part.and_then(|r| r.length).unwrap_or(0);
            sum = sum.checked_add(len).ok_or(Refusal::LengthOverflow)?;
            sized.push((p.clone(), len));
        }
        // The total is checked before a byte is copied (parts whose lengths were deferred
        // were checked one by one as they became known).
        self.check_max(sum)?;
        let total = self.data.assemble(&rec.id, &sized).await?;
        rec.length = Some(total);
        rec.offset = total;
        rec.phase = Phase::Landing;
        lock.check().await?;
        self.state.update(&rec).await?;
        self.land(&mut rec, lock.as_ref()).await?;
        // The parts' data is freed; their records stay (complete, pointing at this final)
        // until they expire, so a client that retries the final POST gets this upload again.
        for p in &parts {
            self.data.delete(p).await?;
        }
        Ok(())
    }
}
