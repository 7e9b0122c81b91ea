//! tus answers: the upload core's outcomes and refusals rendered as HTTP responses with tus's
//! headers. The status of a refusal comes from [`Refusal::status`]; this file only adds the
//! headers tus defines for it and the plain-text reason.

use super::headers::{CHECKSUM_ALGORITHMS, EXTENSIONS, TUS_VERSION};
use super::request::{
    UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET,
};
use crate::store::{Kind, Phase, UploadRecord};
use crate::uploads::{Appended, Created, PREFIX, Refusal, UploadStatus};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::{Duration, UNIX_EPOCH};

pub(super) const TUS_VERSION_H: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");

/// The methods an upload URL answers.
const UPLOAD_METHODS: &str = "HEAD, PATCH, DELETE, OPTIONS";

fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

fn insert(h: &mut HeaderMap, name: HeaderName, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        h.insert(name, v);
    }
}

/// `Upload-Expires` while an upload is unfinished.
fn expires(h: &mut HeaderMap, rec: &UploadRecord) {
    if rec.phase == Phase::Active {
        insert(h, UPLOAD_EXPIRES, http_date(rec.expires));
    }
}

/// A refusal: its status, tus's headers for it, and the reason as text.
pub fn refusal(r: &Refusal) -> Response {
    let status = r.status();
    if status.is_server_error() {
        tracing::error!("{r}");
    }
    let mut h = HeaderMap::new();
    if let Some(offset) = r.offset() {
        insert(&mut h, UPLOAD_OFFSET, offset);
    }
    if let Some(secs) = r.retry_after() {
        insert(&mut h, header::RETRY_AFTER, secs);
    }
    if r.closes() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    match r {
        Refusal::TooLarge { max, .. } => insert(&mut h, TUS_MAX_SIZE, max),
        Refusal::OwnUnfinished { holder, .. } => {
            insert(&mut h, header::LOCATION, format!("{PREFIX}{holder}"));
        }
        Refusal::Method(_) => insert(&mut h, header::ALLOW, UPLOAD_METHODS),
        Refusal::Version(v) => insert(&mut h, TUS_VERSION_H, v),
        _ => {}
    }
    (status, h, format!("{r}\n")).into_response()
}

/// The answer to OPTIONS: what this server speaks.
pub fn options(max_size: Option<u64>) -> Response {
    let mut h = HeaderMap::new();
    h.insert(TUS_VERSION_H, HeaderValue::from_static(TUS_VERSION));
    h.insert(TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS));
    h.insert(
        TUS_CHECKSUM_ALGORITHM,
        HeaderValue::from_static(CHECKSUM_ALGORITHMS),
    );
    if let Some(max) = max_size {
        h.insert(TUS_MAX_SIZE, HeaderValue::from(max));
    }
    (StatusCode::NO_CONTENT, h).into_response()
}

/// `Upload-Concat` of a record, as HEAD reports it.
fn concat(rec: &UploadRecord) -> Option<String> {
    match &rec.kind {
        Kind::Normal => None,
        Kind::Partial { .. } => Some("partial".into()),
        Kind::Final { parts } => Some(format!(
            "final;{}",
            parts
                .iter()
                .map(|p| format!("{PREFIX}{p}"))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// The answer to HEAD.
pub fn status(s: &UploadStatus) -> Response {
    let rec = &s.record;
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(offset) = s.offset {
        h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    }
    match rec.length {
        Some(len) => {
            h.insert(UPLOAD_LENGTH, HeaderValue::from(len));
        }
        None => {
            h.insert(UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1"));
        }
    }
    if let Some(meta) = rec.metadata.as_deref() {
        insert(&mut h, UPLOAD_METADATA, meta);
    }
    if let Some(c) = concat(rec) {
        insert(&mut h, UPLOAD_CONCAT, c);
    }
    expires(&mut h, rec);
    (StatusCode::OK, h).into_response()
}

/// The answer to a creation.
pub fn created(c: &Created) -> Response {
    let mut h = HeaderMap::new();
    insert(&mut h, header::LOCATION, format!("{PREFIX}{}", c.record.id));
    if let Some(o) = c.offset {
        h.insert(UPLOAD_OFFSET, HeaderValue::from(o));
    }
    expires(&mut h, &c.record);
    (StatusCode::CREATED, h).into_response()
}

/// The answer to a PATCH.
pub fn appended(a: &Appended) -> Response {
    let mut h = HeaderMap::new();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(a.offset));
    if let Some(exp) = a.expires {
        insert(&mut h, UPLOAD_EXPIRES, http_date(exp));
    }
    (StatusCode::NO_CONTENT, h).into_response()
}
