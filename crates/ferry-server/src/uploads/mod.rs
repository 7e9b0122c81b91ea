//! The upload core: the life of an upload (create, append, verify, land, concatenate,
//! terminate, expire) over two traits, a [`StateStore`] for records, reservations and locks and
//! a [`DataStore`] for the bytes. It speaks typed requests and answers with typed outcomes or a
//! [`Refusal`]; the protocol front ends (`tus`, later the IETF draft) parse HTTP into those
//! types and render the answers.
//!
//! Rules it keeps: an upload belongs to the user who created it; one request writes to an
//! upload at a time (its lock, checked before an offset is committed); a target path is
//! reserved by one unfinished upload; a finished upload lands atomically and never replaces an
//! existing file unless asked and allowed; a byte that reached the data store is never lost.

mod append;
mod create;
pub mod events;
mod finish;
mod quota;
pub mod refusal;
mod remove;
pub mod target_status;

pub use append::AppendRequest;
pub use create::{CreateRequest, Shape};
pub use events::{Subscription, UploadEvent};
pub use refusal::{PREFIX, Refusal};
pub use target_status::TargetStatus;

use crate::auth::User;
use crate::data::DataStore;
use crate::metrics::Metrics;
use crate::store::{Kind, Phase, StateStore, UploadLock, UploadRecord};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a request waiting for another's lock tries again.
const TAKEOVER_POLL: Duration = Duration::from_millis(50);
/// How often it repeats its request to let go.
const TAKEOVER_ASK_AGAIN: Duration = Duration::from_secs(1);
/// How long past the lease it waits before it gives up.
const TAKEOVER_SLACK: Duration = Duration::from_secs(1);

/// The limits and policies of an upload service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Policy {
    /// Largest upload accepted; `None` for no limit.
    pub max_size: Option<u64>,
    /// How long an unfinished upload lives after its last write.
    pub expiry: Duration,
    /// How long a request body may stall before the request ends (bytes so far are kept).
    pub idle_timeout: Duration,
    /// Several users exist: files not landed by an upload cannot be overwritten by one.
    pub multi_user: bool,
    /// Most bytes one user's unfinished uploads may reserve or stage; `None` for no limit.
    pub quota_bytes: Option<u64>,
    /// Most unfinished uploads one user may have; `None` for no limit.
    pub quota_uploads: Option<u64>,
}

/// The default per-user quota of reserved and staged bytes: 1 TiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 1 << 40;
/// The default per-user limit on unfinished uploads.
pub const DEFAULT_QUOTA_UPLOADS: u64 = 1000;

impl Policy {
    /// The defaults: no size limit, 24 h expiry, 60 s idle timeout, one user, per-user quotas
    /// of 1 TiB and 1000 unfinished uploads.
    pub fn new() -> Policy {
        Policy {
            max_size: None,
            expiry: Duration::from_secs(24 * 3600),
            idle_timeout: Duration::from_secs(60),
            multi_user: false,
            quota_bytes: Some(DEFAULT_QUOTA_BYTES),
            quota_uploads: Some(DEFAULT_QUOTA_UPLOADS),
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new()
    }
}

/// The upload service: state, data, counters and policy.
pub struct Uploads {
    state: Arc<dyn StateStore>,
    data: Arc<dyn DataStore>,
    metrics: Arc<Metrics>,
    policy: Policy,
    events: events::EventHub,
}

/// What a client may learn of an upload (tus HEAD).
#[derive(Debug, Clone)]
pub struct UploadStatus {
    /// The record.
    pub record: UploadRecord,
    /// The offset to report; `None` for an unfinished final upload.
    pub offset: Option<u64>,
}

/// A new upload, and the offset its creation request's body reached (if it had one).
#[derive(Debug, Clone)]
pub struct Created {
    /// The record.
    pub record: UploadRecord,
    /// The offset after the creation request's body, when it carried one.
    pub offset: Option<u64>,
}

/// The answer to an append.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// The upload's offset now.
    pub offset: u64,
    /// Unix seconds when the upload expires, while it is unfinished.
    pub expires: Option<u64>,
}

impl Uploads {
    /// An upload service over `state` and `data`.
    pub fn new(
        state: Arc<dyn StateStore>,
        data: Arc<dyn DataStore>,
        metrics: Arc<Metrics>,
        policy: Policy,
    ) -> Uploads {
        Uploads {
            state,
            data,
            metrics,
            policy,
            events: events::EventHub::new(),
        }
    }

    /// The service's limits and policies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The state store (for start-up lines and metrics).
    pub fn state(&self) -> &dyn StateStore {
        self.state.as_ref()
    }

    /// What `user` may learn of upload `id`. A final upload whose parts are all complete (after
    /// a crash) is assembled first.
    pub async fn status(&self, user: &User, id: &str) -> Result<UploadStatus, Refusal> {
        let mut rec = self.load(user, id).await?;
        if rec.phase == Phase::Active
            && let Kind::Final { parts } = &rec.kind
        {
            let parts = parts.clone();
            if self.all_parts_complete(&parts).await? {
                self.assemble_final(id).await?;
                rec = self.load(user, id).await?;
            }
        }
        if self.full_but_active(&rec).await? {
            // Every byte is staged but the request that wrote the last ones could not finish
            // the upload (taken over, its client gone): finished under its lock before the
            // offset is reported, since a client that sees offset = length takes the upload as
            // done. When it cannot land (its target exists) the answer stays as it was.
            let lock = self.lock(id).await?;
            let mut fresh = self.load(user, id).await?;
            if let Err(e) = self.recover(&mut fresh, lock.as_ref()).await {
                tracing::debug!(%id, "a staged-complete upload could not land: {e}");
            }
            drop(lock);
            rec = self.load(user, id).await?;
        }
        let offset = self.offset_of(&rec).await?;
        Ok(UploadStatus {
            record: rec,
            offset,
        })
    }

    /// Whether `rec` is an active upload (not a final) whose staged bytes reach its length:
    /// one that must be completed before its offset is reported.
    pub(super) async fn full_but_active(&self, rec: &UploadRecord) -> Result<bool, Refusal> {
        if rec.phase != Phase::Active || matches!(rec.kind, Kind::Final { .. }) {
            return Ok(false);
        }
        let Some(length) = rec.length else {
            return Ok(false);
        };
        Ok(self.data.offset(&rec.id).await? == Some(length))
    }

    /// Loads an upload the user may touch: refused when unknown, another user's, or expired.
    async fn load(&self, user: &User, id: &str) -> Result<UploadRecord, Refusal> {
        let rec = self
            .state
            .get(id)
            .await?
            .ok_or_else(|| Refusal::NotFound(id.to_owned()))?;
        if rec.owner != user.0.as_ref() {
            return Err(Refusal::NotYours(id.to_owned()));
        }
        if rec.phase == Phase::Expired {
            return Err(Refusal::Expired(id.to_owned()));
        }
        Ok(rec)
    }

    /// The offset to report: staged and verified bytes while active; the length once
    /// complete. `None` for an unfinished final upload.
    async fn offset_of(&self, rec: &UploadRecord) -> Result<Option<u64>, Refusal> {
        match rec.phase {
            Phase::Complete | Phase::Landing => Ok(Some(rec.length.unwrap_or(rec.offset))),
            Phase::Expired => Ok(None),
            Phase::Active => {
                if matches!(rec.kind, Kind::Final { .. }) {
                    return Ok(None);
                }
                let staged = self
                    .data
                    .offset(&rec.id)
                    .await?
                    .ok_or_else(|| Refusal::DataGone(rec.id.clone()))?;
                Ok(Some(rec.length.map_or(staged, |l| staged.min(l))))
            }
        }
    }

    /// Takes the write lock of an upload. When another request holds it and the store can ask
    /// holders to let go (a shared store), asks, and waits until the holder has ended its
    /// request (about a second) or its lease ran out (a dead holder); otherwise, or past that,
    /// refused.
    async fn lock(&self, id: &str) -> Result<Box<dyn UploadLock>, Refusal> {
        if let Some(lock) = self.state.try_lock(id).await? {
            return Ok(lock);
        }
        let Some(lease) = self.state.request_release(id).await? else {
            return Err(Refusal::Locked(id.to_owned()));
        };
        let start = tokio::time::Instant::now();
        let deadline = start + lease + TAKEOVER_SLACK;
        let mut asked = start;
        loop {
            tokio::time::sleep(TAKEOVER_POLL).await;
            if let Some(lock) = self.state.try_lock(id).await? {
                tracing::debug!(%id, "took the upload over after {:?}", start.elapsed());
                return Ok(lock);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Refusal::Locked(id.to_owned()));
            }
            // A new holder may have come in between: it is asked too.
            if now - asked >= TAKEOVER_ASK_AGAIN {
                self.state.request_release(id).await?;
                asked = now;
            }
        }
    }

    /// Refuses a length above the server's limit.
    fn check_max(&self, length: u64) -> Result<(), Refusal> {
        match self.policy.max_size {
            Some(max) if length > max => Err(Refusal::TooLarge { length, max }),
            _ => Ok(()),
        }
    }

    /// Unix seconds when an upload written now expires.
    fn fresh_expiry(&self) -> u64 {
        now() + self.policy.expiry.as_secs()
    }

    /// Uploads created and not yet complete (for `/metrics`).
    pub async fn active_count(&self) -> Result<u64, crate::store::StoreError> {
        Ok(self
            .state
            .all()
            .await?
            .iter()
            .filter(|r| r.phase == Phase::Active)
            .count() as u64)
    }
}

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
