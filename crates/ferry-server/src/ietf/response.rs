//! IETF resumable-upload answers: the upload core's outcomes and refusals rendered with the
//! draft's fields (`Upload-Complete`, `Upload-Offset`, `Upload-Length`, `Upload-Limit`) and, for
//! refusals, RFC 9457 `application/problem+json` bodies with the draft's problem types. The
//! status of a refusal comes from [`Refusal::draft_status`], next to [`Refusal::status`].

use super::request::{
    Dialect, INTEROP_VERSION, UPLOAD_COMPLETE, UPLOAD_LENGTH, UPLOAD_LIMIT, UPLOAD_OFFSET,
};
use crate::store::Phase;
use crate::uploads::{Appended, Created, PREFIX, Refusal, UploadStatus, now};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The methods an upload resource answers.
const UPLOAD_METHODS: &str = "HEAD, GET, PATCH, DELETE, OPTIONS";
/// Where the draft's problem types are registered.
const PROBLEM_TYPES: &str = "https://iana.org/assignments/http-problem-types";

fn insert(h: &mut HeaderMap, name: HeaderName, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        h.insert(name, v);
    }
}

fn boolean(b: bool) -> HeaderValue {
    HeaderValue::from_static(if b { "?1" } else { "?0" })
}

/// `Upload-Limit`: `min-size=0` (so the field is never empty, as the draft asks), the server's
/// `max-size`, and the upload resource's remaining lifetime (`max-age`; interop 6 called it
/// `expires`) while it is unfinished.
pub fn limits(dialect: Dialect, max_size: Option<u64>, expires: Option<u64>) -> HeaderValue {
    let mut v = String::from("min-size=0");
    if let Some(max) = max_size {
        v.push_str(&format!(", max-size={max}"));
    }
    if let Some(at) = expires {
        let key = if dialect == Dialect::Interop6 {
            "expires"
        } else {
            "max-age"
        };
        v.push_str(&format!(", {key}={}", at.saturating_sub(now())));
    }
    HeaderValue::from_str(&v).expect("digits and ASCII keys")
}

/// Headers every answer of a dialect carries: drafts echo their interop version.
fn base(dialect: Dialect) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = dialect.interop() {
        h.insert(INTEROP_VERSION, HeaderValue::from_static(v));
    }
    h
}

/// Which request a refusal answers: upload fields differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// A creation: nothing to resume when it is refused (`Upload-Complete: ?1`, as the
    /// draft's example of a refused creation).
    Creation,
    /// A request to an upload resource: the resumable protocol's answer (`Upload-Complete: ?0`).
    Resource,
}

/// A refusal: its status, the draft's fields, and an RFC 9457 problem body. `offset` is the
/// upload's offset when the front end learnt it (interop 6 MUST send it while the upload is
/// active).
pub fn refusal(
    dialect: Dialect,
    answering: Answering,
    r: &Refusal,
    max_size: Option<u64>,
    offset: Option<u64>,
) -> Response {
    let status = r.draft_status();
    if status.is_server_error() {
        tracing::error!("{r}");
    }
    let mut h = base(dialect);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(UPLOAD_COMPLETE, boolean(answering == Answering::Creation));
    if let Some(offset) = r.offset().or(offset) {
        h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    }
    if let Some(secs) = r.retry_after() {
        insert(&mut h, header::RETRY_AFTER, secs);
    }
    if r.closes() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut problem = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": r.to_string(),
    });
    match unwrap(r) {
        Refusal::OffsetMismatch { claimed, offset } => {
            problem["type"] = format!("{PROBLEM_TYPES}#mismatching-upload-offset").into();
            problem["title"] = "offset from request does not match offset of resource".into();
            problem["expected-offset"] = (*offset).into();
            problem["provided-offset"] = (*claimed).into();
        }
        Refusal::InconsistentLength(_) => {
            problem["type"] = format!("{PROBLEM_TYPES}#inconsistent-upload-length").into();
            problem["title"] = "inconsistent length values for upload".into();
        }
        Refusal::Complete if dialect == Dialect::Interop6 => {
            problem["type"] = format!("{PROBLEM_TYPES}#completed-upload").into();
            problem["title"] = "upload is already completed".into();
        }
        Refusal::TooLarge { .. } | Refusal::BodyTooLong { .. } | Refusal::Overflow { .. } => {
            h.insert(UPLOAD_LIMIT, limits(dialect, max_size, None));
        }
        Refusal::OwnUnfinished { holder, .. } => {
            insert(&mut h, header::LOCATION, format!("{PREFIX}{holder}"));
        }
        Refusal::Method(_) => insert(&mut h, header::ALLOW, UPLOAD_METHODS),
        _ => {}
    }
    (status, h, format!("{problem}\n")).into_response()
}

/// The refusal inside the wrappers that only change how the connection ends.
fn unwrap(r: &Refusal) -> &Refusal {
    match r {
        Refusal::BodyUnread(inner) => unwrap(inner),
        r => r,
    }
}

/// The answer to OPTIONS: the limits of uploads created here.
pub fn options(dialect: Dialect, max_size: Option<u64>) -> Response {
    let mut h = base(dialect);
    h.insert(UPLOAD_LIMIT, limits(dialect, max_size, None));
    insert(&mut h, header::ALLOW, "POST, OPTIONS");
    (StatusCode::NO_CONTENT, h).into_response()
}

/// The answer to offset retrieval (HEAD, or GET without content): never cacheable.
pub fn status(dialect: Dialect, s: &UploadStatus, max_size: Option<u64>) -> Response {
    let rec = &s.record;
    let active = rec.phase == Phase::Active;
    let mut h = base(dialect);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(UPLOAD_OFFSET, HeaderValue::from(s.offset.unwrap_or(0)));
    h.insert(UPLOAD_COMPLETE, boolean(!active));
    if let Some(len) = rec.length {
        h.insert(UPLOAD_LENGTH, HeaderValue::from(len));
    }
    h.insert(
        UPLOAD_LIMIT,
        limits(dialect, max_size, active.then_some(rec.expires)),
    );
    (StatusCode::NO_CONTENT, h).into_response()
}

/// The answer to a creation: 201 with the upload resource's `Location`, whether or not the
/// request completed the upload.
pub fn created(dialect: Dialect, c: &Created, max_size: Option<u64>) -> Response {
    let rec = &c.record;
    let active = rec.phase == Phase::Active;
    let mut h = base(dialect);
    insert(&mut h, header::LOCATION, format!("{PREFIX}{}", rec.id));
    h.insert(UPLOAD_COMPLETE, boolean(!active));
    h.insert(UPLOAD_OFFSET, HeaderValue::from(c.offset.unwrap_or(0)));
    h.insert(
        UPLOAD_LIMIT,
        limits(dialect, max_size, active.then_some(rec.expires)),
    );
    (StatusCode::CREATED, h).into_response()
}

/// The answer to an append. A completed upload gets what its creation would have answered
/// (201); an unfinished one 204 (interop 6: 201, as draft -05 requires), with its offset.
pub fn appended(dialect: Dialect, a: &Appended, max_size: Option<u64>) -> Response {
    let complete = a.expires.is_none();
    let mut h = base(dialect);
    h.insert(UPLOAD_COMPLETE, boolean(complete));
    h.insert(UPLOAD_OFFSET, HeaderValue::from(a.offset));
    if !complete {
        h.insert(UPLOAD_LIMIT, limits(dialect, max_size, a.expires));
    }
    let status = if complete || dialect == Dialect::Interop6 {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    (status, h).into_response()
}

/// The answer to a cancellation.
pub fn cancelled(dialect: Dialect) -> Response {
    (StatusCode::NO_CONTENT, base(dialect)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_fields() {
        assert_eq!(limits(Dialect::Final, None, None), "min-size=0");
        let at = now() + 100;
        let v = limits(Dialect::Final, Some(5), Some(at));
        let v = v.to_str().unwrap();
        assert!(v.starts_with("min-size=0, max-size=5, max-age="), "{v}");
        let dict: sfv::Dictionary = sfv::Parser::new(v).parse().unwrap();
        assert_eq!(dict.len(), 3);
        let v = limits(Dialect::Interop6, None, Some(at));
        assert!(v.to_str().unwrap().contains("expires="), "{v:?}");
    }

    #[test]
    fn problems() {
        let r = refusal(
            Dialect::Final,
            Answering::Resource,
            &Refusal::OffsetMismatch {
                claimed: 9,
                offset: 4,
            },
            None,
            None,
        );
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()["upload-offset"], "4");
        assert_eq!(r.headers()["upload-complete"], "?0");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let r = refusal(
            Dialect::Interop6,
            Answering::Resource,
            &Refusal::Complete,
            None,
            Some(3),
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()["upload-offset"], "3");
        assert_eq!(r.headers()["upload-draft-interop-version"], "6");
    }
}
