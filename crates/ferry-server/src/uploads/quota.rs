//! Per-user quotas and the totals of concatenations: what a user's unfinished uploads hold
//! (bytes reserved for known lengths, bytes staged for deferred ones, complete parts not yet
//! assembled) and how many there are, checked when an upload is created, when a deferred
//! length becomes known and while a deferred-length upload grows; and the total of a final
//! upload checked against the size limit when a part's deferred length becomes known.

use super::{Refusal, Uploads};
use crate::auth::User;
use crate::store::{Kind, Phase, UploadRecord};

/// What one user's uploads hold.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    /// Bytes reserved or staged.
    bytes: u64,
    /// Unfinished uploads (partial and final ones included).
    unfinished: u64,
}

impl Uploads {
    /// What `owner`'s uploads other than `except` hold now.
    async fn usage(&self, owner: &str, except: Option<&str>) -> Result<Usage, Refusal> {
        let mut usage = Usage::default();
        for rec in self.state.all().await? {
            if rec.owner != owner || Some(rec.id.as_str()) == except {
                continue;
            }
            let unfinished = matches!(rec.phase, Phase::Active | Phase::Landing);
            let holds_data = match rec.kind {
                // A final's bytes are its parts' until it lands.
                Kind::Final { .. } => false,
                Kind::Partial { .. } => rec.phase != Phase::Expired,
                Kind::Normal => unfinished,
            };
            if unfinished {
                usage.unfinished += 1;
            }
            if holds_data {
                let bytes = match rec.length {
                    Some(len) => len,
                    None => self.data.offset(&rec.id).await?.unwrap_or(0),
                };
                usage.bytes = usage.bytes.saturating_add(bytes);
            }
        }
        Ok(usage)
    }

    /// Refuses a new upload of `asked` bytes (0 when deferred or final) over `user`'s quotas.
    pub(super) async fn check_quota(&self, user: &User, asked: u64) -> Result<(), Refusal> {
        let (max_bytes, max_uploads) = (self.policy.quota_bytes, self.policy.quota_uploads);
        if max_bytes.is_none() && max_uploads.is_none() {
            return Ok(());
        }
        let usage = self.usage(&user.0, None).await?;
        if let Some(quota) = max_uploads
            && usage.unfinished >= quota
        {
            return Err(Refusal::QuotaUploads { quota });
        }
        self.check_bytes(usage.bytes, asked)
    }

    fn check_bytes(&self, used: u64, asked: u64) -> Result<(), Refusal> {
        match self.policy.quota_bytes {
            Some(quota) if used.saturating_add(asked) > quota => {
                Err(Refusal::QuotaBytes { used, asked, quota })
            }
            _ => Ok(()),
        }
    }

    /// Refuses a deferred length, now declared as `length`, that takes its owner over quota.
    pub(super) async fn check_quota_growth(
        &self,
        rec: &UploadRecord,
        length: u64,
        offset: u64,
    ) -> Result<(), Refusal> {
        if self.policy.quota_bytes.is_none() {
            return Ok(());
        }
        let others = self.usage(&rec.owner, Some(&rec.id)).await?.bytes;
        self.check_bytes(others.saturating_add(offset), length.saturating_sub(offset))
    }

    /// The bytes a deferred-length upload at `offset` may still take under its owner's quota;
    /// refused outright when an announced body (`body_length`) would not fit.
    pub(super) async fn quota_room(
        &self,
        rec: &UploadRecord,
        offset: u64,
        body_length: Option<u64>,
    ) -> Result<u64, Refusal> {
        let Some(quota) = self.policy.quota_bytes else {
            return Ok(u64::MAX);
        };
        let used = self
            .usage(&rec.owner, Some(&rec.id))
            .await?
            .bytes
            .saturating_add(offset);
        if let Some(body) = body_length {
            self.check_bytes(used, body)?;
        }
        Ok(quota.saturating_sub(used))
    }

    /// Refuses a part's deferred length that takes its final upload's total past the limit.
    pub(super) async fn check_final_total(
        &self,
        final_id: &str,
        part_id: &str,
        part_length: u64,
    ) -> Result<(), Refusal> {
        let Some(UploadRecord {
            kind: Kind::Final { parts },
            ..
        }) = self.state.get(final_id).await?
        else {
            return Ok(());
        };
        let mut total = 0u64;
        for p in &parts {
            let len = if p == part_id {
                part_length
            } else {
                self.state.get(p).await?.and_then(|r| r.length).unwrap_or(0)
            };
            total = total.checked_add(len).ok_or(Refusal::LengthOverflow)?;
        }
        self.check_max(total)
    }
}
