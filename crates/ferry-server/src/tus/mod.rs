//! The tus 1.0 upload endpoint (`/uploads/`): core protocol plus creation, creation-with-upload,
//! creation-defer-length, expiration, checksum, termination and concatenation(-unfinished).
//! Uploads belong to the user who created them, are written under a per-upload lock, land
//! atomically at their target when complete, and never lose a byte that reached the disk.

pub mod body;
pub mod headers;

use crate::auth::User;
use crate::metrics::Metrics;
use crate::socket::{ConnSocket, RequestSocket};
use crate::staging::{LandError, Staging};
use crate::store::{Created, Kind, Phase, Store, StoreError, UploadLock, UploadRecord};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use body::{BodyEnd, write_body};
use headers::{
    CHECKSUM_ALGORITHMS, ChecksumError, Concat, EXTENSIONS, Hasher, OFFSET_OCTET_STREAM,
    TUS_VERSION,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The URL path prefix of upload URLs.
pub const PREFIX: &str = "/uploads/";

/// Everything the upload handlers share.
pub struct Uploads {
    pub store: Arc<dyn Store>,
    pub staging: Staging,
    pub metrics: Arc<Metrics>,
    /// `--max-upload-size` (`Tus-Max-Size`).
    pub max_size: Option<u64>,
    /// How long an unfinished upload lives after its last PATCH.
    pub expiry: Duration,
    /// How long a PATCH body may stall before the request ends (bytes so far are kept).
    pub idle_timeout: Duration,
    /// Several users exist: files not landed by an upload cannot be overwritten by one.
    pub multi_user: bool,
}

impl Uploads {
    pub fn new(
        store: Arc<dyn Store>,
        staging: Staging,
        metrics: Arc<Metrics>,
        max_size: Option<u64>,
        expiry: Duration,
        idle_timeout: Duration,
        multi_user: bool,
    ) -> Uploads {
        Uploads {
            store,
            staging,
            metrics,
            max_size,
            expiry,
            idle_timeout,
            multi_user,
        }
    }
}

/// The routes under `/uploads`. The caller adds authentication (a [`User`] extension).
pub fn router(uploads: Arc<Uploads>) -> Router {
    Router::new()
        .route("/uploads", post(create).options(options))
        .route("/uploads/", post(create).options(options))
        .route("/uploads/{id}", any(upload))
        .layer(middleware::from_fn(tus_version))
        .with_state(uploads)
}

/// A tus error answer: status, a plain-text reason, and optional extra headers.
#[derive(Debug)]
pub struct TusError {
    status: StatusCode,
    message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl TusError {
    fn new(status: StatusCode, message: impl Into<String>) -> TusError {
        TusError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: HeaderName, value: impl ToString) -> TusError {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let mut res = (self.status, format!("{}\n", self.message)).into_response();
        for (k, v) in self.headers {
            res.headers_mut().insert(k, v);
        }
        res
    }
}

impl From<StoreError> for TusError {
    fn from(e: StoreError) -> TusError {
        if let StoreError::DiskFull(_) = e {
            return TusError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("{e}; bytes already accepted are kept, retry later"),
            );
        }
        tracing::error!("{e}");
        TusError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn io_error(what: &str, e: std::io::Error) -> TusError {
    if is_disk_full(&e) {
        return TusError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "{what}: the server's disk is full; bytes already accepted are kept, retry later"
            ),
        );
    }
    tracing::error!("{what}: {e}");
    TusError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
}

fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || e.kind() == std::io::ErrorKind::FileTooLarge
}

fn bad(message: impl Into<String>) -> TusError {
    TusError::new(StatusCode::BAD_REQUEST, message)
}

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION_H: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// Every tus request except OPTIONS must speak version 1.0.0 (412 otherwise); every response
/// carries `Tus-Resumable`.
async fn tus_version(req: Request, next: Next) -> Response {
    let ok = req.method() == Method::OPTIONS
        || req
            .headers()
            .get(&TUS_RESUMABLE)
            .is_some_and(|v| v.as_bytes() == TUS_VERSION.as_bytes());
    let mut res = if ok {
        next.run(req).await
    } else {
        TusError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("this server speaks tus {TUS_VERSION}: send 'Tus-Resumable: {TUS_VERSION}'"),
        )
        .with(TUS_VERSION_H, TUS_VERSION)
        .into_response()
    };
    res.headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    res
}

async fn options(State(u): State<Arc<Uploads>>) -> Response {
    let mut h = HeaderMap::new();
    h.insert(TUS_VERSION_H, HeaderValue::from_static(TUS_VERSION));
    h.insert(TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS));
    h.insert(
        TUS_CHECKSUM_ALGORITHM,
        HeaderValue::from_static(CHECKSUM_ALGORITHMS),
    );
    if let Some(max) = u.max_size {
        h.insert(TUS_MAX_SIZE, HeaderValue::from(max));
    }
    (StatusCode::NO_CONTENT, h).into_response()
}

/// HEAD, PATCH and DELETE of one upload (any other method: 405).
async fn upload(
    State(u): State<Arc<Uploads>>,
    axum::Extension(user): axum::Extension<User>,
    Path(id): Path<String>,
    method: Method,
    RequestSocket(socket): RequestSocket,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(body);
    let result = match method {
        Method::HEAD => head(&u, &user, &id).await,
        Method::PATCH => patch(&u, &user, &id, &headers, &mut body, socket).await,
        Method::DELETE => terminate(&u, &user, &id).await,
        Method::OPTIONS => return options(State(u)).await,
        _ => Err(TusError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "an upload URL answers HEAD, PATCH and DELETE",
        )
        .with(header::ALLOW, "HEAD, PATCH, DELETE, OPTIONS")),
    };
    match result {
        Ok(res) => res,
        Err(e) => drain_then(body, e).await,
    }
}

/// Answers with `error` after draining what is left of a refused request's body
/// ([`body::drain`]); a body too large to drain ends with `Connection: close`.
async fn drain_then(body: Option<Body>, error: TusError) -> Response {
    let mut res = error.into_response();
    if let Some(body) = body
        && !body::drain(&mut body.into_data_stream()).await
    {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, TusError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| bad(format!("{name} is not valid text"))),
    }
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The target path an upload's metadata asks for: `path` (relative, with folders) or
/// `filename` (a bare name, sanitised); the upload id when neither is given.
fn target_from_metadata(meta: &[(String, Option<String>)], id: &str) -> Result<String, TusError> {
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.clone())
    };
    if let Some(path) = get("path").filter(|p| !p.is_empty()) {
        let rel = crate::safepath::target(&path)
            .map_err(|e| bad(format!("metadata path {path:?}: {e}")))?;
        return Ok(rel.to_string_lossy().into_owned());
    }
    if let Some(name) = get("filename") {
        let clean = ferry_core::naming::sanitize(&name)
            .ok_or_else(|| bad(format!("metadata filename {name:?} has no usable name")))?;
        crate::safepath::target(&clean)
            .map_err(|e| bad(format!("metadata filename {name:?}: {e}")))?;
        return Ok(clean);
    }
    Ok(format!("upload-{id}"))
}

fn wants_overwrite(meta: &[(String, Option<String>)]) -> bool {
    meta.iter().any(|(k, v)| {
        k == "overwrite" && v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true"))
    })
}

/// Loads an upload the user may touch: 404 unknown, 403 another user's, 410 expired.
async fn load(u: &Uploads, user: &User, id: &str) -> Result<UploadRecord, TusError> {
    let rec = u.store.get(id).await?.ok_or_else(|| {
        TusError::new(
            StatusCode::NOT_FOUND,
            format!("no upload {id} here: it was terminated, finished long ago, or never existed; start a new upload"),
        )
    })?;
    if rec.owner != user.0.as_ref() {
        return Err(TusError::new(
            StatusCode::FORBIDDEN,
            format!("upload {id} belongs to another user"),
        ));
    }
    if rec.phase == Phase::Expired {
        return Err(TusError::new(
            StatusCode::GONE,
            format!("upload {id} expired before it was finished; start a new upload"),
        ));
    }
    Ok(rec)
}

/// The offset to report: staged bytes (the file's length) while active, minus bytes still being
/// verified; the length once complete. `None` for an unfinished final upload.
async fn offset_of(u: &Uploads, rec: &UploadRecord) -> Result<Option<u64>, TusError> {
    match rec.phase {
        Phase::Complete | Phase::Landing => Ok(Some(rec.length.unwrap_or(rec.offset))),
        Phase::Expired => Ok(None),
        Phase::Active => {
            if matches!(rec.kind, Kind::Final { .. }) {
                return Ok(None);
            }
            if let Some(from) = u
                .staging
                .unverified(&rec.id)
                .map_err(|e| io_error("reading the upload", e))?
            {
                return Ok(Some(from));
            }
            let staged = u
                .staging
                .staged_len(&rec.id)
                .map_err(|e| io_error("reading the upload", e))?
                .ok_or_else(|| {
                    TusError::new(
                        StatusCode::GONE,
                        format!("the data of upload {} is gone; start a new upload", rec.id),
                    )
                })?;
            Ok(Some(rec.length.map_or(staged, |l| staged.min(l))))
        }
    }
}

fn concat_header(rec: &UploadRecord) -> Option<String> {
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

async fn head(u: &Arc<Uploads>, user: &User, id: &str) -> Result<Response, TusError> {
    let mut rec = load(u, user, id).await?;
    if rec.phase == Phase::Active
        && let Kind::Final { parts } = &rec.kind
    {
        // Self-healing: a final whose parts are all done (e.g. after a crash) is assembled now.
        let parts = parts.clone();
        if all_parts_complete(u, &parts).await? {
            assemble_final(u, id).await?;
            rec = load(u, user, id).await?;
        }
    }
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(offset) = offset_of(u, &rec).await? {
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
    if let Some(meta) = rec.metadata.as_deref()
        && let Ok(v) = HeaderValue::from_str(meta)
    {
        h.insert(UPLOAD_METADATA, v);
    }
    if let Some(c) = concat_header(&rec)
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        h.insert(UPLOAD_CONCAT, v);
    }
    if rec.phase == Phase::Active
        && let Ok(v) = HeaderValue::from_str(&http_date(rec.expires))
    {
        h.insert(UPLOAD_EXPIRES, v);
    }
    Ok((StatusCode::OK, h).into_response())
}

/// Takes the write lock of an upload: 423 when another request is writing to it.
async fn lock(u: &Uploads, id: &str) -> Result<Box<dyn UploadLock>, TusError> {
    u.store.try_lock(id).await?.ok_or_else(|| {
        TusError::new(
            StatusCode::LOCKED,
            format!("another request is writing to upload {id}; retry when it has finished"),
        )
        .with(header::RETRY_AFTER, 1)
    })
}

/// Under the lock: repairs what a crash may have left (unverified bytes, a half-done landing).
async fn recover(u: &Arc<Uploads>, rec: &mut UploadRecord) -> Result<(), TusError> {
    let mark = u
        .staging
        .unverified(&rec.id)
        .map_err(|e| io_error("reading the upload", e))?;
    if let Some(from) = mark {
        u.staging
            .truncate(&rec.id, from)
            .and_then(|()| u.staging.clear_unverified(&rec.id))
            .map_err(|e| io_error("discarding unverified bytes", e))?;
    }
    if rec.phase == Phase::Landing {
        land(u, rec).await?;
    }
    Ok(())
}

async fn patch(
    u: &Arc<Uploads>,
    user: &User,
    id: &str,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    socket: Option<ConnSocket>,
) -> Result<Response, TusError> {
    check_content_type(headers, true)?;
    let claimed = header_str(headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| bad("PATCH needs an Upload-Offset header"))
        .and_then(|v| headers::parse_u64("Upload-Offset", v).map_err(|e| bad(e.0)))?;
    let rec = load(u, user, id).await?;
    if matches!(rec.kind, Kind::Final { .. }) {
        return Err(TusError::new(
            StatusCode::FORBIDDEN,
            "this is a final (concatenated) upload: it takes no PATCH; upload to its parts",
        ));
    }
    let _lock = lock(u, id).await?;
    // Re-read under the lock: the previous holder may have changed it.
    let mut rec = load(u, user, id).await?;
    recover(u, &mut rec).await?;
    let offset = offset_of(u, &rec).await?.unwrap_or(rec.offset);
    if claimed != offset {
        return Err(TusError::new(
            StatusCode::CONFLICT,
            format!("Upload-Offset {claimed} does not match the upload's offset {offset}; HEAD the upload and continue from there"),
        )
        .with(UPLOAD_OFFSET, offset));
    }
    if rec.phase != Phase::Active {
        // Complete already: nothing more to write.
        return if body_is_empty(headers) {
            Ok(offset_response(StatusCode::NO_CONTENT, offset, None))
        } else {
            Err(TusError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the upload is complete; it takes no more bytes",
            ))
        };
    }
    if let Some(len) = header_str(headers, &UPLOAD_LENGTH)? {
        let len = headers::parse_u64("Upload-Length", len).map_err(|e| bad(e.0))?;
        match rec.length {
            Some(have) if have != len => {
                return Err(bad(format!(
                    "Upload-Length {len} differs from the length {have} set before"
                )));
            }
            Some(_) => {}
            None => {
                if len < offset {
                    return Err(bad(format!(
                        "Upload-Length {len} is less than the {offset} bytes already uploaded"
                    )));
                }
                check_max(u, len)?;
                rec.length = Some(len);
                u.store.update(&rec).await?;
            }
        }
    }
    let new_offset = append(u, &mut rec, offset, headers, body, socket).await?;
    let expires = (rec.phase == Phase::Active).then_some(rec.expires);
    Ok(offset_response(StatusCode::NO_CONTENT, new_offset, expires))
}

fn body_is_empty(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
}

fn offset_response(status: StatusCode, offset: u64, expires: Option<u64>) -> Response {
    let mut h = HeaderMap::new();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    if let Some(exp) = expires
        && let Ok(v) = HeaderValue::from_str(&http_date(exp))
    {
        h.insert(UPLOAD_EXPIRES, v);
    }
    (status, h).into_response()
}

fn check_content_type(headers: &HeaderMap, required: bool) -> Result<(), TusError> {
    match headers.get(header::CONTENT_TYPE) {
        Some(v)
            if v.as_bytes()
                .eq_ignore_ascii_case(OFFSET_OCTET_STREAM.as_bytes()) =>
        {
            Ok(())
        }
        None if !required => Ok(()),
        _ => Err(TusError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("upload data must be sent as Content-Type: {OFFSET_OCTET_STREAM}"),
        )),
    }
}

fn check_max(u: &Uploads, len: u64) -> Result<(), TusError> {
    match u.max_size {
        Some(max) if len > max => Err(TusError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{len} bytes is more than this server accepts ({max} bytes)"),
        )
        .with(TUS_MAX_SIZE, max)),
        _ => Ok(()),
    }
}

/// Writes one request body at `offset` (lock held, offset checked) and completes the upload
/// when it reaches its length. Returns the new offset.
async fn append(
    u: &Arc<Uploads>,
    rec: &mut UploadRecord,
    offset: u64,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    socket: Option<ConnSocket>,
) -> Result<u64, TusError> {
    let checksum = match header_str(headers, &UPLOAD_CHECKSUM)? {
        None => None,
        Some(raw) => Some(headers::parse_checksum(raw).map_err(|e| match e {
            ChecksumError::Unsupported(_) => bad(e.to_string()),
            ChecksumError::Malformed(_) => bad(e.to_string()),
        })?),
    };
    let room = match rec.length {
        Some(len) => len - offset,
        None => u.max_size.map_or(u64::MAX, |m| m.saturating_sub(offset)),
    };
    if let Some(cl) = header_str(headers, &header::CONTENT_LENGTH)?
        && let Ok(cl) = cl.trim().parse::<u64>()
        && cl > room
    {
        return Err(TusError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body ({cl} bytes) goes past the upload's length: {room} bytes remain"),
        ));
    }
    if checksum.is_some() {
        // Bytes written from here are unverified until the digest matches; a crash in between
        // leaves this mark, and the next writer cuts them off.
        u.staging
            .mark_unverified(&rec.id, offset)
            .map_err(|e| io_error("writing the upload", e))?;
    }
    let outcome = write_body(
        body.take().unwrap_or_default(),
        socket,
        u.staging.data_path(&rec.id),
        offset,
        room,
        checksum.as_ref().map(|c| Hasher::new(c.algorithm)),
        u.idle_timeout,
    )
    .await;
    Metrics::add(&u.metrics.bytes_received, outcome.written);
    let mut new_offset = offset + outcome.written;
    if let Some(c) = &checksum {
        let matched = matches!(outcome.end, BodyEnd::Complete)
            && outcome.digest.as_deref() == Some(c.expected.as_slice());
        if !matched {
            u.staging
                .truncate(&rec.id, offset)
                .map_err(|e| io_error("discarding the chunk", e))?;
            new_offset = offset;
        }
        u.staging
            .clear_unverified(&rec.id)
            .map_err(|e| io_error("writing the upload", e))?;
        if !matched && matches!(outcome.end, BodyEnd::Complete) {
            touch(u, rec).await?;
            Metrics::add(&u.metrics.checksum_mismatches, 1);
            return Err(TusError::new(
                StatusCode::from_u16(460).expect("valid status"),
                "Upload-Checksum does not match the body: the chunk was discarded, send it again",
            )
            .with(UPLOAD_OFFSET, offset));
        }
    }
    rec.offset = new_offset;
    touch(u, rec).await?;
    let close = |e: TusError| {
        if outcome.drained {
            e
        } else {
            e.with(header::CONNECTION, "close")
        }
    };
    match outcome.end {
        BodyEnd::Complete => {}
        BodyEnd::Overflow => {
            return Err(close(
                TusError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body goes past the upload's length; the bytes up to offset {new_offset} were kept"
                    ),
                )
                .with(UPLOAD_OFFSET, new_offset),
            ));
        }
        BodyEnd::ClientGone(e) => {
            tracing::debug!(id = %rec.id, "client went away mid-PATCH at {new_offset}: {e}");
            return Err(bad(format!("the request body broke off: {e}")));
        }
        BodyEnd::Idle => {
            return Err(TusError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "no data for {}s; the bytes up to offset {new_offset} were kept",
                    u.idle_timeout.as_secs()
                ),
            ));
        }
        BodyEnd::Disk(e) => {
            // A failed write may have left part of a buffer in the file: those are real bytes.
            if checksum.is_none()
                && let Ok(Some(len)) = u.staging.staged_len(&rec.id)
            {
                rec.offset = len;
                u.store.update(rec).await?;
            }
            return Err(close(io_error("writing the upload", e)));
        }
    }
    if rec.length == Some(new_offset) {
        complete(u, rec).await?;
    }
    Ok(new_offset)
}

/// Renews an active upload's expiry after a write. The record is rewritten only when the
/// expiry moved by at least 1/20 of its period: the offset lives in the data file's length, so
/// most PATCHes cost no store transaction (and no fsync) at all.
async fn touch(u: &Uploads, rec: &mut UploadRecord) -> Result<(), TusError> {
    let fresh = now() + u.expiry.as_secs();
    if fresh.saturating_sub(rec.expires) * 20 >= u.expiry.as_secs().max(1) {
        rec.expires = fresh;
        u.store.update(rec).await?;
    }
    Ok(())
}

/// All bytes arrived (lock held): a partial upload is done; other uploads land at their target.
async fn complete(u: &Arc<Uploads>, rec: &mut UploadRecord) -> Result<(), TusError> {
    match &rec.kind {
        Kind::Partial { final_id } => {
            let final_id = final_id.clone();
            rec.phase = Phase::Complete;
            rec.expires = now() + u.expiry.as_secs();
            u.store.update(rec).await?;
            if let Some(final_id) = final_id
                && all_parts_complete_of(u, &final_id).await?
            {
                assemble_final(u, &final_id).await?;
            }
            Ok(())
        }
        Kind::Normal | Kind::Final { .. } => {
            rec.phase = Phase::Landing;
            u.store.update(rec).await?;
            land(u, rec).await
        }
    }
}

/// Moves a complete upload to its target and records who owns the file.
async fn land(u: &Arc<Uploads>, rec: &mut UploadRecord) -> Result<(), TusError> {
    let Some(target) = rec.target.clone() else {
        return Ok(());
    };
    if u.staging.staged_len(&rec.id).ok().flatten().is_some() {
        let (staging, id, t, ow) = (
            u.staging.clone(),
            rec.id.clone(),
            target.clone(),
            rec.overwrite,
        );
        let landed = tokio::task::spawn_blocking(move || staging.land(&id, &t, ow))
            .await
            .map_err(|e| TusError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if let Err(e) = landed {
            // Keep the data staged: the client may retry (e.g. after the file was removed).
            rec.phase = Phase::Active;
            u.store.update(rec).await?;
            return Err(match e {
                LandError::Exists(_) | LandError::IsDirectory(_) => TusError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "the upload is complete but cannot land: {e}; remove it and PATCH again with no body, or upload again with overwrite"
                    ),
                ),
                LandError::BadPath(..) => bad(e.to_string()),
                LandError::Io(_, io) => io_error("moving the upload into place", io),
            });
        }
    }
    // else: the data is gone from staging because an earlier landing moved it (then crashed).
    u.store.set_file_owner(&target, &rec.owner).await?;
    rec.phase = Phase::Complete;
    rec.offset = rec.length.unwrap_or(rec.offset);
    rec.expires = now() + u.expiry.as_secs();
    u.store.update(rec).await?;
    u.store.release_target(&target, &rec.id).await?;
    Metrics::add(&u.metrics.uploads_completed, 1);
    Ok(())
}

async fn all_parts_complete(u: &Uploads, parts: &[String]) -> Result<bool, TusError> {
    for p in parts {
        match u.store.get(p).await? {
            Some(r) if r.phase == Phase::Complete => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

async fn all_parts_complete_of(u: &Uploads, final_id: &str) -> Result<bool, TusError> {
    match u.store.get(final_id).await? {
        Some(UploadRecord {
            kind: Kind::Final { parts },
            phase: Phase::Active,
            ..
        }) => all_parts_complete(u, &parts).await,
        _ => Ok(false),
    }
}

/// Concatenates the parts of final upload `final_id` (all complete) into its data, lands it,
/// and deletes the parts. Waits for the final's lock: two parts finishing at once both get here.
async fn assemble_final(u: &Arc<Uploads>, final_id: &str) -> Result<(), TusError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let _lock = loop {
        if let Some(l) = u.store.try_lock(final_id).await? {
            break l;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(TusError::new(
                StatusCode::LOCKED,
                "the final upload is being assembled; retry shortly",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let Some(mut rec) = u.store.get(final_id).await? else {
        return Ok(());
    };
    recover(u, &mut rec).await?;
    let Kind::Final { parts } = rec.kind.clone() else {
        return Ok(());
    };
    if rec.phase != Phase::Active || !all_parts_complete(u, &parts).await? {
        return Ok(());
    }
    let mut lengths = Vec::new();
    for p in &parts {
        let part = u.store.get(p).await?;
        lengths.push(part.and_then(|r| r.length).unwrap_or(0));
    }
    let (staging, id, p) = (u.staging.clone(), rec.id.clone(), parts.clone());
    let total = tokio::task::spawn_blocking(move || staging.assemble(&id, &p, &lengths))
        .await
        .map_err(|e| TusError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| io_error("assembling the parts", e))?;
    rec.length = Some(total);
    rec.offset = total;
    rec.phase = Phase::Landing;
    u.store.update(&rec).await?;
    land(u, &mut rec).await?;
    // The parts' data is freed; their records stay (complete, pointing at this final) until
    // they expire, so a client that retries the final POST gets this upload again.
    for p in &parts {
        u.staging
            .delete(p)
            .map_err(|e| io_error("removing a part", e))?;
    }
    Ok(())
}

/// A final POST sent again (the client never saw the answer): the final upload these very
/// parts already built with the same metadata, if there is one.
async fn existing_final(
    u: &Uploads,
    user: &User,
    parts: &[String],
    metadata: Option<&str>,
) -> Result<Option<UploadRecord>, TusError> {
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    let Some(UploadRecord {
        kind: Kind::Partial {
            final_id: Some(final_id),
        },
        ..
    }) = u.store.get(first).await?
    else {
        return Ok(None);
    };
    Ok(u.store.get(&final_id).await?.filter(|f| {
        f.owner == user.0.as_ref()
            && f.phase != Phase::Expired
            && f.metadata.as_deref() == metadata
            && matches!(&f.kind, Kind::Final { parts: p } if p == parts)
    }))
}

async fn terminate(u: &Arc<Uploads>, user: &User, id: &str) -> Result<Response, TusError> {
    let rec = match load(u, user, id).await {
        Err(e) if e.status == StatusCode::GONE => {
            // An expired tombstone: forget it.
            u.store.remove(id).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        r => r?,
    };
    let _lock = lock(u, &rec.id).await?;
    remove_upload(u, &rec).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes an upload's staged data (if unfinished) and its record (lock held).
async fn remove_upload(u: &Uploads, rec: &UploadRecord) -> Result<(), TusError> {
    if rec.phase != Phase::Complete {
        u.staging
            .delete(&rec.id)
            .map_err(|e| io_error("deleting the upload", e))?;
        Metrics::add(&u.metrics.uploads_failed, 1);
    } else if matches!(rec.kind, Kind::Partial { .. }) {
        u.staging
            .delete(&rec.id)
            .map_err(|e| io_error("deleting the upload", e))?;
    }
    u.store.remove(&rec.id).await?;
    Ok(())
}

/// May `user` replace the existing file at `target`? Files landed by an upload belong to its
/// user; other files may be replaced only when the server has a single user.
async fn may_overwrite(u: &Uploads, user: &User, target: &str) -> Result<bool, TusError> {
    Ok(match u.store.file_owner(target).await? {
        Some(owner) => owner == user.0.as_ref(),
        None => !u.multi_user,
    })
}

async fn create(
    State(u): State<Arc<Uploads>>,
    axum::Extension(user): axum::Extension<User>,
    RequestSocket(socket): RequestSocket,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(body);
    match create_upload(&u, &user, &headers, &mut body, socket).await {
        Ok(res) => res,
        Err(e) => drain_then(body, e).await,
    }
}

async fn create_upload(
    u: &Arc<Uploads>,
    user: &User,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    socket: Option<ConnSocket>,
) -> Result<Response, TusError> {
    let concat = header_str(headers, &UPLOAD_CONCAT)?
        .map(headers::parse_concat)
        .transpose()
        .map_err(|e| bad(e.0))?;
    let length = header_str(headers, &UPLOAD_LENGTH)?
        .map(|v| headers::parse_u64("Upload-Length", v))
        .transpose()
        .map_err(|e| bad(e.0))?;
    let deferred = match header_str(headers, &UPLOAD_DEFER_LENGTH)? {
        None => false,
        Some("1") => true,
        Some(v) => return Err(bad(format!("Upload-Defer-Length must be 1, got {v:?}"))),
    };
    let is_final = matches!(concat, Some(Concat::Final(_)));
    match (length, deferred, is_final) {
        (Some(_), true, _) => {
            return Err(bad("send Upload-Length or Upload-Defer-Length, not both"));
        }
        (Some(_), _, true) => {
            return Err(bad(
                "a final upload takes no Upload-Length: it is the sum of its parts",
            ));
        }
        (None, false, false) => {
            return Err(bad("send Upload-Length (or Upload-Defer-Length: 1)"));
        }
        _ => {}
    }
    if let Some(len) = length {
        check_max(u, len)?;
    }
    let raw_meta = header_str(headers, &UPLOAD_METADATA)?.map(str::to_owned);
    let meta =
        headers::parse_metadata(raw_meta.as_deref().unwrap_or_default()).map_err(|e| bad(e.0))?;
    let has_body = !body_is_empty(headers)
        && (headers.contains_key(header::CONTENT_LENGTH)
            || headers.contains_key(header::TRANSFER_ENCODING));
    if has_body {
        check_content_type(headers, true)?;
    }

    if let Some(Concat::Final(parts)) = &concat
        && let Some(existing) = existing_final(u, user, parts, raw_meta.as_deref()).await?
    {
        return Ok(created_response(&existing, None));
    }

    let id = new_id();
    let overwrite = wants_overwrite(&meta);
    let now = now();
    let kind = match &concat {
        None => Kind::Normal,
        Some(Concat::Partial) => Kind::Partial { final_id: None },
        Some(Concat::Final(parts)) => Kind::Final {
            parts: parts.clone(),
        },
    };
    let target = match kind {
        Kind::Partial { .. } => None,
        _ => Some(target_from_metadata(&meta, &id)?),
    };
    if let Some(t) = &target {
        match u.staging.target_exists(t) {
            Ok(false) => {}
            Ok(true) if !overwrite => {
                return Err(TusError::new(
                    StatusCode::CONFLICT,
                    format!("{t} already exists; set metadata 'overwrite' to 'true' to replace it"),
                ));
            }
            Ok(true) => {
                if !may_overwrite(u, user, t).await? {
                    return Err(TusError::new(
                        StatusCode::FORBIDDEN,
                        format!("{t} exists and belongs to another user; you may not replace it"),
                    ));
                }
            }
            Err(LandError::IsDirectory(_)) => {
                return Err(TusError::new(
                    StatusCode::CONFLICT,
                    format!("{t} is a directory"),
                ));
            }
            Err(e) => return Err(bad(e.to_string())),
        }
    }

    // A final upload: its parts must be this user's partial uploads, not used by another final.
    let mut final_length = None;
    if let Kind::Final { parts } = &kind {
        let mut sum = Some(0u64);
        for p in parts {
            let part = load(u, user, p)
                .await
                .map_err(|e| TusError::new(e.status, format!("part {PREFIX}{p}: {}", e.message)))?;
            match &part.kind {
                Kind::Partial { final_id: None } => {}
                Kind::Partial { final_id: Some(_) } => {
                    return Err(TusError::new(
                        StatusCode::CONFLICT,
                        format!("part {PREFIX}{p} already belongs to another final upload"),
                    ));
                }
                _ => return Err(bad(format!("{PREFIX}{p} is not a partial upload"))),
            }
            sum = match (sum, part.length) {
                (Some(s), Some(l)) => Some(s + l),
                _ => None,
            };
        }
        final_length = sum;
        if let Some(len) = sum {
            check_max(u, len)?;
        }
    }

    let mut rec = UploadRecord {
        id: id.clone(),
        owner: user.0.to_string(),
        length: if is_final { final_length } else { length },
        offset: 0,
        metadata: raw_meta,
        target,
        overwrite,
        kind,
        phase: Phase::Active,
        created: now,
        expires: now + u.expiry.as_secs(),
    };
    if !is_final {
        let (staging, i, l) = (u.staging.clone(), id.clone(), rec.length);
        tokio::task::spawn_blocking(move || staging.create(&i, l))
            .await
            .map_err(|e| TusError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| io_error("creating the upload", e))?;
    }
    let lock = u.store.try_lock(&id).await?;
    if let Err(e) = reserve(u, user, &rec).await {
        let _ = u.staging.delete(&id);
        return Err(e);
    }
    if let Kind::Final { parts } = &rec.kind {
        for p in parts {
            if let Some(mut part) = u.store.get(p).await? {
                part.kind = Kind::Partial {
                    final_id: Some(id.clone()),
                };
                u.store.update(&part).await?;
            }
        }
        drop(lock);
        if all_parts_complete(u, parts).await?
            && let Err(e) = assemble_final(u, &id).await
        {
            // The client never learns this final's URL: forget it and free its parts, so the
            // same request can be sent again (e.g. after the disk full that stopped it, or
            // with overwrite). Assembled data goes back to the first part, whose file it grew
            // from; the next assembly recognises the parts already appended.
            let assembled = u.staging.data_path(&id);
            if assembled.exists()
                && let Some(first) = parts.first()
            {
                std::fs::rename(&assembled, u.staging.data_path(first))
                    .map_err(|e| io_error("undoing the assembly", e))?;
            }
            for p in parts {
                if let Some(mut part) = u.store.get(p).await? {
                    part.kind = Kind::Partial { final_id: None };
                    u.store.update(&part).await?;
                }
            }
            u.store.remove(&id).await?;
            return Err(e);
        }
        return Ok(created_response(&rec, None));
    }

    let mut offset = None;
    if has_body {
        offset = Some(append(u, &mut rec, 0, headers, body, socket).await?);
    } else if rec.length == Some(0) {
        complete(u, &mut rec).await?;
    }
    drop(lock);
    Ok(created_response(&rec, offset))
}

/// Stores a new record, reserving its target. The same user's unfinished upload to that target
/// is replaced when `overwrite` is asked (else 409 naming it); another user's blocks it (423).
async fn reserve(u: &Uploads, user: &User, rec: &UploadRecord) -> Result<(), TusError> {
    for _ in 0..3 {
        match u.store.create(rec).await? {
            Created::Ok => return Ok(()),
            Created::TargetBusy { holder } => {
                let t = rec.target.as_deref().unwrap_or_default();
                let Some(other) = u.store.get(&holder).await? else {
                    // A stale reservation: drop it and try again.
                    u.store.release_target(t, &holder).await?;
                    continue;
                };
                if other.owner != user.0.as_ref() {
                    return Err(TusError::new(
                        StatusCode::LOCKED,
                        format!("another user is uploading to {t}; try again when it has finished"),
                    ));
                }
                if !rec.overwrite {
                    return Err(TusError::new(
                        StatusCode::CONFLICT,
                        format!("you already have an unfinished upload to {t} at {PREFIX}{holder}: resume it, or set metadata 'overwrite' to 'true' to replace it"),
                    )
                    .with(header::LOCATION, format!("{PREFIX}{holder}")));
                }
                let _lock = lock(u, &holder).await?;
                remove_upload(u, &other).await?;
            }
        }
    }
    Err(TusError::new(
        StatusCode::CONFLICT,
        "the target is being claimed by concurrent requests; retry",
    ))
}

fn created_response(rec: &UploadRecord, offset: Option<u64>) -> Response {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("{PREFIX}{}", rec.id)) {
        h.insert(header::LOCATION, v);
    }
    if let Some(o) = offset {
        h.insert(UPLOAD_OFFSET, HeaderValue::from(o));
    }
    if rec.phase == Phase::Active
        && let Ok(v) = HeaderValue::from_str(&http_date(rec.expires))
    {
        h.insert(UPLOAD_EXPIRES, v);
    }
    (StatusCode::CREATED, h).into_response()
}

/// Expires unfinished uploads whose time ran out (skipping ones being written right now) and
/// forgets old completed and expired records. Returns how many uploads expired.
pub async fn expire(u: &Uploads) -> Result<usize, StoreError> {
    let now = now();
    let mut expired = 0;
    for rec in u.store.all().await? {
        if rec.expires > now {
            continue;
        }
        let Some(_lock) = u.store.try_lock(&rec.id).await? else {
            continue;
        };
        match rec.phase {
            Phase::Active => {
                // The tombstone first (requests answer 410 from then on), then the data.
                let mut tomb = rec.clone();
                tomb.phase = Phase::Expired;
                tomb.expires = now + u.expiry.as_secs();
                u.store.update(&tomb).await?;
                if let Some(t) = &rec.target {
                    u.store.release_target(t, &rec.id).await?;
                }
                if let Err(e) = u.staging.delete(&rec.id) {
                    tracing::warn!("expiry: cannot delete upload {}: {e}", rec.id);
                }
                Metrics::add(&u.metrics.uploads_failed, 1);
                expired += 1;
            }
            Phase::Landing => {} // finished by the next request that touches it
            Phase::Complete | Phase::Expired => {
                if matches!(rec.kind, Kind::Partial { .. }) || rec.phase == Phase::Expired {
                    let _ = u.staging.delete(&rec.id);
                }
                u.store.remove(&rec.id).await?;
            }
        }
    }
    Ok(expired)
}

/// Uploads created and not yet complete (for `/metrics`).
pub async fn active_count(u: &Uploads) -> Result<u64, StoreError> {
    Ok(u.store
        .all()
        .await?
        .iter()
        .filter(|r| r.phase == Phase::Active)
        .count() as u64)
}
