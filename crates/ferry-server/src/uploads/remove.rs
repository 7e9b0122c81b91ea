//! Ending uploads: termination by their owner, and expiry of unfinished uploads whose time ran
//! out (a tombstone answers for them a while), with old records forgotten.

use super::{Refusal, Uploads, now};
use crate::auth::User;
use crate::metrics::Metrics;
use crate::store::{Kind, Phase, StoreError, UploadLock, UploadRecord};

impl Uploads {
    /// Terminates upload `id` of `user`: its data and record are deleted. An expired upload's
    /// tombstone is forgotten.
    pub async fn terminate(&self, user: &User, id: &str) -> Result<(), Refusal> {
        let rec = match self.load(user, id).await {
            Err(Refusal::Expired(_)) => {
                self.state.remove(id).await?;
                return Ok(());
            }
            r => r?,
        };
        let lock = self.lock(&rec.id).await?;
        self.remove_upload(&rec, lock.as_ref()).await
    }

    /// Deletes an upload's staged data (if unfinished, or a part) and its record (lock held).
    pub(super) async fn remove_upload(
        &self,
        rec: &UploadRecord,
        lock: &dyn UploadLock,
    ) -> Result<(), Refusal> {
        lock.check().await?;
        if rec.phase != Phase::Complete {
            self.data.delete(&rec.id).await?;
            Metrics::add(&self.metrics.uploads_failed, 1);
            self.publish_ended(rec, "terminated");
        } else if matches!(rec.kind, Kind::Partial { .. }) {
            self.data.delete(&rec.id).await?;
        }
        self.state.remove(&rec.id).await?;
        Ok(())
    }

    /// Deletes staged data that no upload record owns (left by a crash between creating the
    /// data and its record, or by a state store that lost its records), untouched for
    /// `min_age` (another instance may be creating an upload right now). Returns how many.
    pub async fn remove_orphans(&self, min_age: std::time::Duration) -> Result<usize, Refusal> {
        let mut removed = 0;
        for id in self.data.staged(min_age).await? {
            if self.state.get(&id).await?.is_none() {
                self.data.delete(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Expires unfinished uploads whose time ran out (skipping ones being written right now)
    /// and forgets old completed and expired records. Returns how many uploads expired.
    pub async fn expire(&self) -> Result<usize, StoreError> {
        let now = now();
        let mut expired = 0;
        for rec in self.state.all().await? {
            if rec.expires > now {
                continue;
            }
            let Some(lock) = self.state.try_lock(&rec.id).await? else {
                continue;
            };
            lock.check().await?;
            // Re-read under the lock: another instance may have written to it meanwhile.
            let Some(rec) = self.state.get(&rec.id).await? else {
                continue;
            };
            if rec.expires > now {
                continue;
            }
            match rec.phase {
                Phase::Active => {
                    // The tombstone first (requests answer 410 from then on), then the data.
                    let mut tomb = rec.clone();
                    tomb.phase = Phase::Expired;
                    tomb.expires = now + self.policy.expiry.as_secs();
                    self.state.update(&tomb).await?;
                    if let Some(t) = &rec.target {
                        self.state.release_target(t, &rec.id).await?;
                    }
                    if let Err(e) = self.data.delete(&rec.id).await {
                        tracing::warn!("expiry: cannot delete upload {}: {e}", rec.id);
                    }
                    Metrics::add(&self.metrics.uploads_failed, 1);
                    self.publish_ended(&rec, "expired");
                    expired += 1;
                }
                Phase::Landing => {} // finished by the next request that touches it
                Phase::Complete | Phase::Expired => {
                    if matches!(rec.kind, Kind::Partial { .. }) || rec.phase == Phase::Expired {
                        let _ = self.data.delete(&rec.id).await;
                    }
                    self.state.remove(&rec.id).await?;
                }
            }
        }
        Ok(expired)
    }
}
