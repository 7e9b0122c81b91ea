//! What is at a target path for a user, asked before an upload starts (the browser page's
//! pre-upload check): nothing; a file, which this user may or may not replace; the user's own
//! unfinished upload to it (to resume); another user's unfinished upload (busy); a directory.
//! It answers what [`Uploads::create`] would decide, without creating anything.

use super::{Refusal, Uploads};
use crate::auth::User;
use crate::data::DataError;
use crate::store::Phase;
use serde::Serialize;

/// What a target path holds for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetStatus {
    /// Nothing: an upload may start.
    Free {
        /// The normalised target path.
        target: String,
    },
    /// A file exists there; replacing it needs `overwrite: true`, and is allowed when
    /// `may_replace`.
    Exists {
        /// The normalised target path.
        target: String,
        /// Whether this user may replace it.
        may_replace: bool,
    },
    /// This user's own unfinished upload holds the target: resume it.
    Unfinished {
        /// The normalised target path.
        target: String,
        /// The upload id (its URL is `/uploads/<id>`).
        id: String,
        /// Bytes staged so far.
        offset: u64,
        /// The upload's length, when known.
        length: Option<u64>,
        /// `Upload-Metadata` as its client sent it.
        metadata: Option<String>,
    },
    /// Another user's unfinished upload holds the target.
    Busy {
        /// The normalised target path.
        target: String,
    },
    /// A directory is there: no file can land.
    Directory {
        /// The normalised target path.
        target: String,
    },
}

impl Uploads {
    /// What is at `path` (relative, with folders: an upload's metadata `path`) for `user`.
    /// Refused when the path is not a valid target.
    pub async fn target_status(&self, user: &User, path: &str) -> Result<TargetStatus, Refusal> {
        let target = crate::safepath::target(path)
            .map_err(|e| Refusal::BadRequest(format!("path {path:?}: {e}")))?
            .to_string_lossy()
            .into_owned();
        let holder = self
            .state
            .all()
            .await?
            .into_iter()
            .find(|r| r.phase == Phase::Active && r.target.as_deref() == Some(target.as_str()));
        if let Some(rec) = holder {
            if rec.owner != user.0.as_ref() {
                return Ok(TargetStatus::Busy { target });
            }
            let offset = self.offset_of(&rec).await?.unwrap_or(rec.offset);
            return Ok(TargetStatus::Unfinished {
                target,
                id: rec.id,
                offset,
                length: rec.length,
                metadata: rec.metadata,
            });
        }
        match self.data.target_exists(&target).await {
            Ok(false) => Ok(TargetStatus::Free { target }),
            Ok(true) => {
                let may_replace = self.may_overwrite(user, &target).await?;
                Ok(TargetStatus::Exists {
                    target,
                    may_replace,
                })
            }
            Err(DataError::TargetIsDirectory(_)) => Ok(TargetStatus::Directory { target }),
            Err(e) => Err(Refusal::BadRequest(e.to_string())),
        }
    }
}
