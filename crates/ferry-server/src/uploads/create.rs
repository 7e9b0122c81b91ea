//! Creating uploads: the target path a request asks for, whether an existing file there may be
//! replaced, the reservation of the target (the same user's unfinished upload is resumed or
//! replaced, another user's blocks it), final uploads built from partial ones, and the
//! creation request's own body.

use super::append::AppendRequest;
use super::{Created, Refusal, Uploads, now};
use crate::auth::User;
use crate::data::Incoming;
use crate::store::{Created as Reserved, Kind, Phase, UploadRecord};

/// What kind of upload a creation request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// An ordinary upload that lands at its target.
    Normal,
    /// A partial upload, to be concatenated by a final one.
    Partial,
    /// A final upload: the concatenation of these partial uploads (ids), in order.
    Final(Vec<String>),
}

/// A creation request, parsed.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Normal, partial or final.
    pub shape: Shape,
    /// The upload's length; `None` while deferred, and always for a final upload (the sum of
    /// its parts).
    pub length: Option<u64>,
    /// The metadata exactly as sent (reported back on HEAD).
    pub metadata: Option<String>,
    /// The metadata's pairs.
    pub fields: Vec<(String, Option<String>)>,
    /// How the creation request's body (if it has one) is appended.
    pub append: AppendRequest,
}

impl CreateRequest {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The client asked to replace an existing target (metadata `overwrite: true`).
    fn overwrite(&self) -> bool {
        self.fields.iter().any(|(k, v)| {
            k == "overwrite" && v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
    }

    /// The target path the metadata asks for: `path` (relative, with folders) or `filename` (a
    /// bare name, sanitised); the upload id when neither is given.
    fn target(&self, id: &str) -> Result<String, Refusal> {
        if let Some(path) = self.field("path").filter(|p| !p.is_empty()) {
            let rel = crate::safepath::target(path)
                .map_err(|e| Refusal::BadRequest(format!("metadata path {path:?}: {e}")))?;
            return Ok(rel.to_string_lossy().into_owned());
        }
        if let Some(name) = self.field("filename") {
            let clean = ferry_core::naming::sanitize(name).ok_or_else(|| {
                Refusal::BadRequest(format!("metadata filename {name:?} has no usable name"))
            })?;
            crate::safepath::target(&clean)
                .map_err(|e| Refusal::BadRequest(format!("metadata filename {name:?}: {e}")))?;
            return Ok(clean);
        }
        Ok(format!("upload-{id}"))
    }
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Uploads {
    /// Creates an upload for `user`, appending the request's body when there is one.
    pub async fn create(
        &self,
        user: &User,
        req: &CreateRequest,
        body: &mut Option<Incoming>,
    ) -> Result<Created, Refusal> {
        if let Some(len) = req.length {
            self.check_max(len)?;
        }
        if let Shape::Final(parts) = &req.shape
            && let Some(existing) = self.existing_final(user, parts, req).await?
        {
            return Ok(Created {
                record: existing,
                offset: None,
            });
        }
        let id = new_id();
        let overwrite = req.overwrite();
        let kind = match &req.shape {
            Shape::Normal => Kind::Normal,
            Shape::Partial => Kind::Partial { final_id: None },
            Shape::Final(parts) => Kind::Final {
                parts: parts.clone(),
            },
        };
        let target = match kind {
            Kind::Partial { .. } => None,
            _ => Some(req.target(&id)?),
        };
        if let Some(t) = &target {
            self.check_target(user, t, overwrite).await?;
        }
        let length = match &req.shape {
            Shape::Final(parts) => self.final_length(user, parts).await?,
            _ => req.length,
        };
        let created = now();
        let mut rec = UploadRecord {
            id: id.clone(),
            owner: user.0.to_string(),
            length,
            offset: 0,
            metadata: req.metadata.clone(),
            target,
            overwrite,
            kind,
            phase: Phase::Active,
            created,
            expires: created + self.policy.expiry.as_secs(),
        };
        if let Shape::Final(parts) = &req.shape {
            self.create_final(user, &rec, parts).await?;
            return Ok(Created {
                record: rec,
                offset: None,
            });
        }
        self.data
            .create(&id, rec.length, rec.target.as_deref())
            .await?;
        let lock = self.lock(&id).await?;
        if let Err(e) = self.reserve(user, &rec).await {
            let _ = self.data.delete(&id).await;
            return Err(e);
        }
        let mut offset = None;
        if body.is_some() {
            offset = Some(
                self.write(&mut rec, 0, &req.append, body, lock.as_ref())
                    .await?,
            );
        } else if rec.length == Some(0) {
            self.complete(&mut rec, lock.as_ref()).await?;
        }
        drop(lock);
        Ok(Created {
            record: rec,
            offset,
        })
    }

    /// Refuses a target that exists (unless replacing it was asked for and is allowed) or is a
    /// directory.
    async fn check_target(
        &self,
        user: &User,
        target: &str,
        overwrite: bool,
    ) -> Result<(), Refusal> {
        match self.data.target_exists(target).await {
            Ok(false) => Ok(()),
            Ok(true) if !overwrite => Err(Refusal::TargetExists(target.to_owned())),
            Ok(true) => {
                if self.may_overwrite(user, target).await? {
                    Ok(())
                } else {
                    Err(Refusal::TargetNotYours(target.to_owned()))
                }
            }
            Err(crate::data::DataError::TargetIsDirectory(_)) => {
                Err(Refusal::TargetIsDirectory(target.to_owned()))
            }
            Err(e) => Err(Refusal::BadRequest(e.to_string())),
        }
    }

    /// May `user` replace the existing file at `target`? Files landed by an upload belong to
    /// its user; other files may be replaced only when the server has a single user.
    pub(super) async fn may_overwrite(&self, user: &User, target: &str) -> Result<bool, Refusal> {
        Ok(match self.state.file_owner(target).await? {
            Some(owner) => owner == user.0.as_ref(),
            None => !self.policy.multi_user,
        })
    }

    /// The length of a final upload made of `parts`: they must be this user's partial uploads
    /// not used by another final; `None` while a part's length is deferred.
    async fn final_length(&self, user: &User, parts: &[String]) -> Result<Option<u64>, Refusal> {
        let mut sum = Some(0u64);
        for p in parts {
            let part = self.load(user, p).await.map_err(|e| Refusal::Part {
                id: p.clone(),
                refusal: Box::new(e),
            })?;
            match &part.kind {
                Kind::Partial { final_id: None } => {}
                Kind::Partial { final_id: Some(_) } => return Err(Refusal::PartTaken(p.clone())),
                _ => return Err(Refusal::NotPartial(p.clone())),
            }
            sum = match (sum, part.length) {
                (Some(s), Some(l)) => Some(s + l),
                _ => None,
            };
        }
        if let Some(len) = sum {
            self.check_max(len)?;
        }
        Ok(sum)
    }

    /// Stores a final upload, points its parts at it, and assembles it when they are all
    /// complete already. When that fails, the final is forgotten and its parts freed, so the
    /// same request can be sent again (e.g. after the disk full that stopped it).
    async fn create_final(
        &self,
        user: &User,
        rec: &UploadRecord,
        parts: &[String],
    ) -> Result<(), Refusal> {
        let id = &rec.id;
        let lock = self.state.try_lock(id).await?;
        self.reserve(user, rec).await?;
        self.point_parts(parts, Some(id)).await?;
        drop(lock);
        if self.all_parts_complete(parts).await?
            && let Err(e) = self.assemble_final(id).await
        {
            self.data.unassemble(id, parts).await?;
            self.point_parts(parts, None).await?;
            self.state.remove(id).await?;
            return Err(e);
        }
        Ok(())
    }

    /// Records `final_id` as the final upload of each of `parts`.
    async fn point_parts(&self, parts: &[String], final_id: Option<&str>) -> Result<(), Refusal> {
        for p in parts {
            if let Some(mut part) = self.state.get(p).await? {
                part.kind = Kind::Partial {
                    final_id: final_id.map(str::to_owned),
                };
                self.state.update(&part).await?;
            }
        }
        Ok(())
    }

    /// Stores a new record, reserving its target. The same user's unfinished upload to that
    /// target is replaced when `overwrite` is asked (else refused, naming it); another user's
    /// blocks it.
    async fn reserve(&self, user: &User, rec: &UploadRecord) -> Result<(), Refusal> {
        for _ in 0..3 {
            match self.state.create(rec).await? {
                Reserved::TargetBusy { holder } => {
                    let t = rec.target.as_deref().unwrap_or_default();
                    let Some(other) = self.state.get(&holder).await? else {
                        // A stale reservation: drop it and try again.
                        self.state.release_target(t, &holder).await?;
                        continue;
                    };
                    if other.owner != user.0.as_ref() {
                        return Err(Refusal::TargetBusy(t.to_owned()));
                    }
                    if !rec.overwrite {
                        return Err(Refusal::OwnUnfinished {
                            target: t.to_owned(),
                            holder,
                        });
                    }
                    let lock = self.lock(&holder).await?;
                    self.remove_upload(&other, lock.as_ref()).await?;
                }
                _ => return Ok(()),
            }
        }
        Err(Refusal::TargetContended)
    }

    /// A final creation sent again (the client never saw the answer): the final upload these
    /// very parts already built with the same metadata, if there is one.
    async fn existing_final(
        &self,
        user: &User,
        parts: &[String],
        req: &CreateRequest,
    ) -> Result<Option<UploadRecord>, Refusal> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let Some(UploadRecord {
            kind: Kind::Partial {
                final_id: Some(final_id),
            },
            ..
        }) = self.state.get(first).await?
        else {
            return Ok(None);
        };
        Ok(self.state.get(&final_id).await?.filter(|f| {
            f.owner == user.0.as_ref()
                && f.phase != Phase::Expired
                && f.metadata == req.metadata
                && matches!(&f.kind, Kind::Final { parts: p } if p == parts)
        }))
    }
}
