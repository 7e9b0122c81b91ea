//! Why the upload core refuses a request: one typed [`Refusal`] for every front end, with the
//! message a client reads ([`Display`](std::fmt::Display)) and the one place where a refusal
//! becomes an HTTP status ([`Refusal::status`]). Front ends add their protocol's headers
//! (`tus::response`).

use crate::data::DataError;
use crate::store::StoreError;
use axum::http::StatusCode;

/// The path prefix of upload URLs, as refusals name them.
pub const PREFIX: &str = "/uploads/";

/// A request the upload core will not carry out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Malformed or contradictory input (a header, the metadata, a target path).
    #[error("{0}")]
    BadRequest(String),
    /// The request body has the wrong media type.
    #[error("upload data must be sent as Content-Type: {0}")]
    MediaType(&'static str),
    /// The request does not speak the protocol version this server speaks.
    #[error("this server speaks tus {0}: send 'Tus-Resumable: {0}'")]
    Version(&'static str),
    /// The method is not one the URL answers.
    #[error("an upload URL answers {0}")]
    Method(&'static str),
    /// No such upload.
    #[error(
        "no upload {0} here: it was terminated, finished long ago, or never existed; start a new upload"
    )]
    NotFound(String),
    /// The upload belongs to another user.
    #[error("upload {0} belongs to another user")]
    NotYours(String),
    /// The upload expired before it was finished.
    #[error("upload {0} expired before it was finished; start a new upload")]
    Expired(String),
    /// The upload's staged data is gone.
    #[error("the data of upload {0} is gone; start a new upload")]
    DataGone(String),
    /// Another request holds the upload's lock.
    #[error("another request is writing to upload {0}; retry when it has finished")]
    Locked(String),
    /// Another request took the upload over mid-body; the bytes up to `offset` were kept.
    #[error("another request took over this upload; the bytes up to offset {offset} were kept")]
    TakenOver {
        /// The upload's new offset.
        offset: u64,
    },
    /// A final (concatenated) upload takes no bytes of its own.
    #[error("this is a final (concatenated) upload: it takes no PATCH; upload to its parts")]
    FinalTakesNoBytes,
    /// The client's offset is not the upload's.
    #[error(
        "Upload-Offset {claimed} does not match the upload's offset {offset}; HEAD the upload and continue from there"
    )]
    OffsetMismatch {
        /// The offset the client sent.
        claimed: u64,
        /// The upload's offset.
        offset: u64,
    },
    /// The upload is complete and takes no more bytes.
    #[error("the upload is complete; it takes no more bytes")]
    Complete,
    /// A length above the server's limit.
    #[error("{length} bytes is more than this server accepts ({max} bytes)")]
    TooLarge {
        /// The length asked for.
        length: u64,
        /// The server's limit.
        max: u64,
    },
    /// The body's announced length goes past the upload's length.
    #[error("the body ({body} bytes) goes past the upload's length: {room} bytes remain")]
    BodyTooLong {
        /// The body's length.
        body: u64,
        /// Bytes the upload still takes.
        room: u64,
    },
    /// The body did not have the digest the client announced: it was discarded.
    #[error("Upload-Checksum does not match the body: the chunk was discarded, send it again")]
    ChecksumMismatch {
        /// The upload's offset (unchanged).
        offset: u64,
    },
    /// The body went on past the upload's length; the bytes up to the length were kept.
    #[error("the body goes past the upload's length; the bytes up to offset {offset} were kept")]
    Overflow {
        /// The upload's new offset.
        offset: u64,
    },
    /// The client broke the body off.
    #[error("the request body broke off: {0}")]
    BodyBroken(String),
    /// The body stalled; the bytes so far were kept.
    #[error("no data for {seconds}s; the bytes up to offset {offset} were kept")]
    Idle {
        /// The idle timeout.
        seconds: u64,
        /// The upload's new offset.
        offset: u64,
    },
    /// A complete upload cannot move to its target (it exists now, or is a directory).
    #[error(
        "the upload is complete but cannot land: {0}; remove it and PATCH again with no body, or upload again with overwrite"
    )]
    CannotLand(#[source] DataError),
    /// The target exists and replacing it was not asked for.
    #[error("{0} already exists; set metadata 'overwrite' to 'true' to replace it")]
    TargetExists(String),
    /// The target exists and belongs to someone else.
    #[error("{0} exists and belongs to another user; you may not replace it")]
    TargetNotYours(String),
    /// The target is a directory.
    #[error("{0} is a directory")]
    TargetIsDirectory(String),
    /// Another user's unfinished upload holds the target.
    #[error("another user is uploading to {0}; try again when it has finished")]
    TargetBusy(String),
    /// The same user's unfinished upload holds the target.
    #[error(
        "you already have an unfinished upload to {target} at {PREFIX}{holder}: resume it, or set metadata 'overwrite' to 'true' to replace it"
    )]
    OwnUnfinished {
        /// The target path.
        target: String,
        /// The upload holding it.
        holder: String,
    },
    /// Concurrent requests keep claiming the target.
    #[error("the target is being claimed by concurrent requests; retry")]
    TargetContended,
    /// A part named by a final upload cannot be used.
    #[error("part {PREFIX}{id}: {refusal}")]
    Part {
        /// The part's id.
        id: String,
        /// Why it cannot be used.
        refusal: Box<Refusal>,
    },
    /// A part already belongs to another final upload.
    #[error("part {PREFIX}{0} already belongs to another final upload")]
    PartTaken(String),
    /// An upload named as a part is not a partial upload.
    #[error("{PREFIX}{0} is not a partial upload")]
    NotPartial(String),
    /// The final upload is being assembled by another request for too long.
    #[error("the final upload is being assembled; retry shortly")]
    Assembling,
    /// The state store failed.
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    /// The data store failed.
    #[error("{}", data_message(.0))]
    Data(#[from] DataError),
    /// The refusal came before the request body was read to its end: the connection closes.
    #[error("{0}")]
    BodyUnread(Box<Refusal>),
    /// An anonymous client (`--public`) asked to replace an existing file.
    #[error(
        "{0} already exists and anonymous uploads never replace files; upload under another name"
    )]
    AnonymousOverwrite(String),
    /// A final upload names the same part more than once.
    #[error("part {PREFIX}{0} is listed more than once; a final upload names each part once")]
    PartRepeated(String),
    /// Lengths that add up past what a 64-bit number holds.
    #[error("the lengths add up to more than 2^64 bytes")]
    LengthOverflow,
    /// The user's unfinished uploads would hold more bytes than their quota.
    #[error(
        "your unfinished uploads hold {used} bytes and this one needs {asked} more, over your quota of {quota} bytes; finish or terminate some uploads first"
    )]
    QuotaBytes {
        /// Bytes the user's unfinished uploads reserve or hold.
        used: u64,
        /// Bytes this request would add.
        asked: u64,
        /// The per-user quota.
        quota: u64,
    },
    /// The user has as many unfinished uploads as their quota allows.
    #[error(
        "you have {quota} unfinished uploads, as many as this server allows; finish or terminate one first"
    )]
    QuotaUploads {
        /// The per-user limit on unfinished uploads.
        quota: u64,
    },
    /// Lengths stated for the upload disagree (with each other, with one set before, or with
    /// the bytes uploaded).
    #[error("{0}")]
    InconsistentLength(String),
}

fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::DiskFull(_) => format!("{e}; bytes already accepted are kept, retry later"),
        _ => e.to_string(),
    }
}

fn data_message(e: &DataError) -> String {
    match e {
        DataError::DiskFull { .. } => {
            format!("{e}; bytes already accepted are kept, retry later")
        }
        DataError::Gone(id) => Refusal::DataGone(id.clone()).to_string(),
        _ => e.to_string(),
    }
}

/// tus's status for a body whose checksum did not match.
const CHECKSUM_MISMATCH: u16 = 460;

impl Refusal {
    /// The HTTP status of this refusal: the one place that decides it.
    pub fn status(&self) -> StatusCode {
        use Refusal as R;
        match self {
            R::BadRequest(_)
            | R::BodyBroken(_)
            | R::NotPartial(_)
            | R::PartRepeated(_)
            | R::InconsistentLength(_) => StatusCode::BAD_REQUEST,
            R::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            R::Version(_) => StatusCode::PRECONDITION_FAILED,
            R::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            R::NotFound(_) => StatusCode::NOT_FOUND,
            R::NotYours(_)
            | R::FinalTakesNoBytes
            | R::TargetNotYours(_)
            | R::AnonymousOverwrite(_) => StatusCode::FORBIDDEN,
            R::Expired(_) | R::DataGone(_) => StatusCode::GONE,
            R::Locked(_) | R::TakenOver { .. } | R::TargetBusy(_) | R::Assembling => {
                StatusCode::LOCKED
            }
            R::OffsetMismatch { .. }
            | R::CannotLand(_)
            | R::TargetExists(_)
            | R::TargetIsDirectory(_)
            | R::OwnUnfinished { .. }
            | R::TargetContended
            | R::PartTaken(_) => StatusCode::CONFLICT,
            R::Complete
            | R::TooLarge { .. }
            | R::BodyTooLong { .. }
            | R::Overflow { .. }
            | R::LengthOverflow => StatusCode::PAYLOAD_TOO_LARGE,
            R::QuotaBytes { .. } => StatusCode::INSUFFICIENT_STORAGE,
            R::QuotaUploads { .. } => StatusCode::TOO_MANY_REQUESTS,
            R::ChecksumMismatch { .. } => {
                StatusCode::from_u16(CHECKSUM_MISMATCH).expect("a valid status code")
            }
            R::Idle { .. } => StatusCode::REQUEST_TIMEOUT,
            R::Part { refusal, .. } | R::BodyUnread(refusal) => refusal.status(),
            R::Store(e) => match e {
                StoreError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
                StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::LockLost(_) => StatusCode::LOCKED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            R::Data(e) => match e {
                DataError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
                DataError::Gone(_) => StatusCode::GONE,
                DataError::TargetExists(_) | DataError::TargetIsDirectory(_) => {
                    StatusCode::CONFLICT
                }
                DataError::TargetPath(..) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The status under the IETF resumable-upload draft: [`Refusal::status`] except where the
    /// draft's text requires another (interop 6, drafts -04 and -05, MUST answer 400 to an
    /// append to a complete upload or past its length and 404 for an upload no longer active;
    /// later drafts are silent and keep these) and for a digest mismatch, whose 460 is tus's.
    pub fn draft_status(&self) -> StatusCode {
        use Refusal as R;
        match self {
            R::Complete
            | R::BodyTooLong { .. }
            | R::Overflow { .. }
            | R::ChecksumMismatch { .. } => StatusCode::BAD_REQUEST,
            R::Expired(_) | R::DataGone(_) | R::Data(DataError::Gone(_)) => StatusCode::NOT_FOUND,
            R::Part { refusal, .. } | R::BodyUnread(refusal) => refusal.draft_status(),
            _ => self.status(),
        }
    }

    /// Seconds after which a retry may succeed, for refusals that are about timing.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::Locked(_) | Refusal::Store(StoreError::LockLost(_)) => Some(1),
            Refusal::Store(StoreError::Unavailable(_)) => Some(2),
            Refusal::Part { refusal, .. } | Refusal::BodyUnread(refusal) => refusal.retry_after(),
            _ => None,
        }
    }

    /// The upload's offset, for refusals that tell the client where to continue.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Refusal::OffsetMismatch { offset, .. }
            | Refusal::ChecksumMismatch { offset }
            | Refusal::Overflow { offset }
            | Refusal::TakenOver { offset } => Some(*offset),
            Refusal::BodyUnread(r) => r.offset(),
            _ => None,
        }
    }

    /// Whether the connection must close after the answer (the body was not read to its end).
    pub fn closes(&self) -> bool {
        matches!(self, Refusal::BodyUnread(_))
    }

    /// Marks this refusal as given before the request body was read to its end, unless
    /// `drained` says it was.
    pub fn unread_unless(self, drained: bool) -> Refusal {
        if drained {
            self
        } else {
            Refusal::BodyUnread(Box::new(self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_hints() {
        let locked = Refusal::Locked("a".into());
        assert_eq!(locked.status(), StatusCode::LOCKED);
        assert_eq!(locked.retry_after(), Some(1));
        let part = Refusal::Part {
            id: "p".into(),
            refusal: Box::new(Refusal::NotYours("p".into())),
        };
        assert_eq!(part.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            part.to_string(),
            "part /uploads/p: upload p belongs to another user"
        );
        let unread = Refusal::Overflow { offset: 7 }.unread_unless(false);
        assert!(unread.closes());
        assert_eq!(unread.offset(), Some(7));
        assert_eq!(unread.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            Refusal::ChecksumMismatch { offset: 0 }.status().as_u16(),
            460
        );
        let full = Refusal::Data(DataError::io(
            "writing the upload",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        ));
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(full.to_string().contains("disk is full"), "{full}");
        assert_eq!(
            Refusal::Store(StoreError::Unavailable("down".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Refusal::AnonymousOverwrite("a".into()).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Refusal::PartRepeated("p".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Refusal::LengthOverflow.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let quota = Refusal::QuotaBytes {
            used: 1,
            asked: 2,
            quota: 2,
        };
        assert_eq!(quota.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(
            Refusal::QuotaUploads { quota: 3 }.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
