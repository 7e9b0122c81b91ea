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
            let path = &plain_name(path)?;
            let rel = crate::safepath::target(path)
                .map_err(|e| Refusal::BadRequest(format!("metadata path {path:?}: {e}")))?;
            return Ok(rel.to_string_lossy().into_owned());
        }
        if let Some(name) = self.field("filename") {
            let name = &plain_name(name)?;
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

/// A name as it will land: refused when it holds a control character or an invisible one that
/// changes how it reads (bidirectional controls, zero-width characters), else normalised to
/// Unicode NFC, so that names that look alike are the same name.
fn plain_name(name: &str) -> Result<String, Refusal> {
    use unicode_normalization::UnicodeNormalization;
    if let Some(c) = name.chars().find(|&c| c.is_control() || invisible(c)) {
        return Err(Refusal::BadRequest(format!(
            "the name {name:?} contains the character U+{:04X}; control, bidirectional and zero-width characters are refused",
            u32::from(c)
        )));
    }
    Ok(name.nfc().collect())
}

/// Bidirectional controls and zero-width characters: they make a name read as another.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
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
        // Anonymous clients never replace anything (an existing file is refused above).
        let overwrite = req.overwrite() && !user.is_anonymous();
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
            self.check_target(user, t, req.overwrite()).await?;
        }
        let length = match &req.shape {
            Shape::Final(parts) => self.final_length(user, parts).await?,
            _ => req.length,
        };
        let reserves = match req.shape {
            Shape::Final(_) => 0,
            _ => req.length.unwrap_or(0),
        };
        self.check_quota(user, reserves).await?;
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
            Ok(true) if user.is_anonymous() => Err(Refusal::AnonymousOverwrite(target.to_owned())),
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

    /// May `user` replace the existing file at `target`? Never an anonymous user; an admin
    /// always; files landed by an upload belong to its user; other files may be replaced only
    /// when the server has a single user.
    pub(super) async fn may_overwrite(&self, user: &User, target: &str) -> Result<bool, Refusal> {
        if user.is_anonymous() {
            return Ok(false);
        }
        if user.is_admin() {
            return Ok(true);
        }
        Ok(match self.state.file_owner(target).await? {
            Some(owner) => owner == user.0.as_ref(),
            None => !self.policy.multi_user,
        })
    }

    /// The length of a final upload made of `parts`: they must be this user's partial uploads,
    /// each named once, not used by another final; `None` while a part's length is deferred
    /// (the lengths known so far must fit the limit already).
    async fn final_length(&self, user: &User, parts: &[String]) -> Result<Option<u64>, Refusal> {
        let mut seen = std::collections::HashSet::new();
        if let Some(p) = parts.iter().find(|p| !seen.insert(p.as_str())) {
            return Err(Refusal::PartRepeated(p.clone()));
        }
        let mut known = 0u64;
        let mut deferred = false;
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
            match part.length {
                Some(l) => known = known.checked_add(l).ok_or(Refusal::LengthOverflow)?,
                None => deferred = true,
            }
        }
        self.check_max(known)?;
        Ok((!deferred).then_some(known))
    }

    /// Stores a final upload, points its parts at it, and assembles it when they are all
    /// complete already. When that fails, the final is forgotten and its parts freed, so the
    /// same request can be sent again (e.g. after the disk full that stopped it).
    ///
    /// The parts are claimed under claim locks (one per part, held while they are checked and
    /// pointed at the final): of finals created at once naming the same part, one wins and the
    /// others are refused (423, then 409 once the winner holds the part), the part's record
    /// untouched by them.
    async fn create_final(
        &self,
        user: &User,
        rec: &UploadRecord,
        parts: &[String],
    ) -> Result<(), Refusal> {
        let id = &rec.id;
        let mut claims = Vec::with_capacity(parts.len());
        for p in parts {
            match self.state.try_lock(&format!("claim:{p}")).await? {
                Some(claim) => claims.push(claim),
                None => {
                    return Err(Refusal::Part {
                        id: p.clone(),
                        refusal: Box::new(Refusal::Locked(p.clone())),
                    });
                }
            }
        }
        // Checked again under the claims: another final may have won meanwhile.
        self.final_length(user, parts).await?;
        let lock = self.state.try_lock(id).await?;
        self.reserve(user, rec).await?;
        self.point_parts(parts, Some(id)).await?;
        drop(claims);
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
                    // Anonymous clients cannot tell each other's uploads apart: none learns
                    // another's upload URL.
                    if other.owner != user.0.as_ref() || user.is_anonymous() {
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

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn names_are_nfc_and_free_of_invisible_characters() {
        assert_eq!(plain_name("e\u{301}t\u{e9}").unwrap(), "\u{e9}t\u{e9}");
        assert_eq!(plain_name("a/b c.txt").unwrap(), "a/b c.txt");
        for bad in [
            "x\u{202e}gpj.exe",
            "a\u{200b}b",
            "a\u{2066}b",
            "\u{feff}a",
            "a\u{7}b",
            "a\nb",
            "\u{061c}a",
        ] {
            assert!(plain_name(bad).is_err(), "{bad:?}");
        }
    }
}
