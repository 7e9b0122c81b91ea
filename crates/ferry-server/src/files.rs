//! The file side of `ferry serve`: `GET`/`HEAD` of files under the served root with single and
//! multiple ranges, `If-Range`, strong ETags, `Last-Modified`, the other conditional headers
//! (304/412), correct 416, directory redirects and listings (see [`crate::listing`]).
//!
//! Paths go through [`crate::safepath`]: no `..`, no absolute paths, no symlink leaving the root,
//! nothing of the state directory. Bodies are streamed from the file in large positioned reads
//! (from the page cache on the spot, else on the blocking pool), one chunk ahead of the
//! connection, into pooled buffers, so memory stays flat whatever the file size and the number
//! of connections; every body byte is counted into [`Metrics::bytes_served`] once the connection
//! has taken it.

use crate::http_range::{self, ByteRange, Multipart, Resolution};
use crate::listing;
use crate::metrics::Metrics;
use crate::safepath::{self, PathError};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// Bytes per read from a file (and per body frame handed to the connection).
pub const CHUNK: usize = 256 * 1024;

/// Answers GET or HEAD for `rel` (percent-decoded path after `/files/`) under `root` (canonical).
///
/// `base` is the URL path under which `rel` lives (e.g. `/files/`): directory redirects and the
/// links of listings are `base` + the percent-encoded path.
pub async fn respond(
    root: &Path,
    rel: &str,
    method: &Method,
    headers: &HeaderMap,
    metrics: &Arc<Metrics>,
    base: &str,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed here; use GET or HEAD"),
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let parts: Vec<String> = match safepath::components(rel) {
        Ok(parts) => parts.into_iter().map(str::to_owned).collect(),
        Err(e) => return refused(&e),
    };
    let slash_form = rel.is_empty() || rel.ends_with('/');
    let rel_path: PathBuf = parts.iter().collect();
    let opened = {
        let root = root.to_owned();
        tokio::task::spawn_blocking(move || open(&root, &rel_path)).await
    };
    let opened = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return open_error(e),
        Err(e) => return internal(&io::Error::other(e)),
    };
    let head = method == Method::HEAD;
    match opened {
        Opened::File(file, meta) => {
            if slash_form {
                return text(
                    StatusCode::NOT_FOUND,
                    "not found: this is a file, not a directory",
                );
            }
            let name = parts.last().map(String::as_str).unwrap_or_default();
            serve_file(file, &meta, name, head, headers, metrics)
        }
        Opened::Dir(dir) => {
            if !slash_form {
                let location = format!("{}/", listing::href(base, &parts));
                let mut res = text(
                    StatusCode::MOVED_PERMANENTLY,
                    format!("a directory: see {location}"),
                );
                if let Ok(v) = HeaderValue::from_str(&location) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                return res;
            }
            serve_dir(root, dir, &parts, base, head, headers, metrics).await
        }
    }
}

/// A directory's listing: JSON when the client accepts `application/json`, else HTML.
async fn serve_dir(
    root: &Path,
    dir: PathBuf,
    parts: &[String],
    base: &str,
    head: bool,
    headers: &HeaderMap,
    metrics: &Arc<Metrics>,
) -> Response {
    let json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"));
    let root = root.to_owned();
    let entries = tokio::task::spawn_blocking(move || listing::read_dir(&root, &dir)).await;
    let entries = match entries {
        Ok(Ok(entries)) => entries,
        Ok(Err(e)) => return open_error(OpenError::Io(e)),
        Err(e) => return internal(&io::Error::other(e)),
    };
    let (body, content_type) = if json {
        (listing::json(&entries), "application/json")
    } else {
        (
            listing::html(&entries, parts, base),
            "text/html; charset=utf-8",
        )
    };
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !json {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
    }
    if !head {
        *res.body_mut() = counted_body(
            None,
            VecDeque::from([Piece::Bytes(Bytes::from(body))]),
            metrics,
        );
    }
    res
}

/// The strong ETag of a file: its inode, size and modification time to the nanosecond.
pub fn strong_etag(meta: &Metadata) -> String {
    let mtime_ns = (meta.mtime() as i128) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.size(), mtime_ns)
}

/// A file's modification time (the epoch when the platform cannot tell).
pub fn modified(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

/// What a request path names.
enum Opened {
    File(File, Metadata),
    Dir(PathBuf),
}

/// Why a request path could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Refused(#[from] PathError),
    #[error("not a regular file or directory")]
    Special,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Resolves and opens `rel` under `root` (blocking). The opened file's real path is checked
/// again after the open, so a symlink swapped in after the resolution cannot lead outside.
fn open(root: &Path, rel: &Path) -> Result<Opened, OpenError> {
    let canonical = safepath::resolve_existing(root, rel)??;
    // Non-blocking: a FIFO swapped in does not hang the thread; no-follow: nor does a symlink.
    let flags = (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags as i32)
        .open(&canonical)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            safepath::check_inside(root, &real)?;
        }
    }
    let meta = file.metadata()?;
    if meta.is_dir() {
        Ok(Opened::Dir(canonical))
    } else if meta.is_file() {
        Ok(Opened::File(file, meta))
    } else {
        Err(OpenError::Special)
    }
}

fn serve_file(
    file: File,
    meta: &Metadata,
    name: &str,
    head: bool,
    headers: &HeaderMap,
    metrics: &Arc<Metrics>,
) -> Response {
    let len = meta.len();
    let etag = strong_etag(meta);
    let mtime = modified(meta);
    let last_modified = httpdate::fmt_http_date(mtime);
    let content_type = content_type(name);

    let mut res = Response::new(Body::empty());
    {
        let h = res.headers_mut();
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        insert(h, header::ETAG, &etag);
        insert(h, header::LAST_MODIFIED, &last_modified);
    }

    // Preconditions, in the order of RFC 9110 §13.2.2.
    let one = |name: HeaderName| joined(headers, name);
    let precondition_failed = match (one(header::IF_MATCH), one(header::IF_UNMODIFIED_SINCE)) {
        (Some(v), _) => !http_range::if_match(&v, &etag),
        (None, Some(v)) => httpdate::parse_http_date(v.trim())
            .is_ok_and(|d| http_range::unix_secs(mtime) > http_range::unix_secs(d)),
        (None, None) => false,
    };
    if precondition_failed {
        *res.status_mut() = StatusCode::PRECONDITION_FAILED;
        set_text(&mut res, "precondition failed: the file has changed");
        return res;
    }
    let not_modified = match (one(header::IF_NONE_MATCH), one(header::IF_MODIFIED_SINCE)) {
        (Some(v), _) => http_range::none_match_hits(&v, &etag),
        (None, Some(v)) => httpdate::parse_http_date(v.trim())
            .is_ok_and(|d| http_range::unix_secs(mtime) <= http_range::unix_secs(d)),
        (None, None) => false,
    };
    if not_modified {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return res;
    }

    // Range applies to GET only (RFC 9110 §14.2), and only when If-Range (if any) holds.
    let range = match headers.get_all(header::RANGE).iter().collect::<Vec<_>>()[..] {
        [v] if !head => v.to_str().ok().and_then(http_range::parse),
        _ => None,
    };
    let range = range.filter(|_| match one(header::IF_RANGE) {
        Some(v) => http_range::if_range_matches(&v, &etag, mtime),
        None => true,
    });
    let resolution = match range {
        Some(specs) => http_range::resolve(&specs, len),
        None => Resolution::Full,
    };

    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if runs_scripts(content_type) {
        // Uploaded HTML must not run in the server's origin (where the upload page and its
        // token live).
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    let (body_len, pieces) = match resolution {
        Resolution::Unsatisfiable => {
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            insert(
                res.headers_mut(),
                header::CONTENT_RANGE,
                &http_range::unsatisfied_content_range(len),
            );
            set_text(
                &mut res,
                &format!("range not satisfiable: the file has {len} bytes"),
            );
            return res;
        }
        Resolution::Full => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            (len, VecDeque::from([Piece::File { offset: 0, len }]))
        }
        Resolution::Partial(ranges) => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = res.headers_mut();
            match &ranges[..] {
                [r] => {
                    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                    insert(h, header::CONTENT_RANGE, &r.content_range(len));
                    (r.len(), VecDeque::from([file_piece(r)]))
                }
                _ => {
                    let m = Multipart::new(&ranges, len, content_type, &http_range::boundary());
                    insert(h, header::CONTENT_TYPE, &m.content_type);
                    let mut pieces = VecDeque::with_capacity(ranges.len() * 2 + 1);
                    for (head, r) in m.parts {
                        pieces.push_back(Piece::Bytes(Bytes::from(head)));
                        pieces.push_back(file_piece(&r));
                    }
                    pieces.push_back(Piece::Bytes(Bytes::from(m.trailer)));
                    (m.content_length, pieces)
                }
            }
        }
    };
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if !head {
        *res.body_mut() = counted_body(Some(Arc::new(file)), pieces, metrics);
    }
    res
}

fn file_piece(r: &ByteRange) -> Piece {
    Piece::File {
        offset: r.start,
        len: r.len(),
    }
}

/// All values of a header joined with `, ` (list headers may be split over several lines);
/// `None` when absent or not text.
fn joined(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    if values.is_empty() {
        None
    } else {
        Some(values.join(", "))
    }
}

fn insert(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// A plain-text answer saying what happened.
fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    set_text(&mut res, &msg.into());
    res
}

fn set_text(res: &mut Response, msg: &str) {
    let body = format!("{msg}\n");
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    *res.body_mut() = Body::from(body);
}

fn refused(e: &PathError) -> Response {
    match e {
        PathError::Private | PathError::Escapes | PathError::Empty => {
            text(StatusCode::NOT_FOUND, "not found")
        }
        _ => text(StatusCode::FORBIDDEN, format!("forbidden: {e}")),
    }
}

fn open_error(e: OpenError) -> Response {
    match e {
        OpenError::Refused(e) => refused(&e),
        OpenError::Special => text(StatusCode::FORBIDDEN, format!("forbidden: {e}")),
        OpenError::Io(e) => match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                text(StatusCode::NOT_FOUND, "not found")
            }
            // ELOOP: a symlink cycle, or a symlink swapped in after resolution.
            _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                text(StatusCode::NOT_FOUND, "not found")
            }
            io::ErrorKind::PermissionDenied => {
                text(StatusCode::FORBIDDEN, "forbidden: permission denied")
            }
            _ => internal(&e),
        },
    }
}

fn internal(e: &io::Error) -> Response {
    tracing::warn!("file side: {e}");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {e}"),
    )
}

/// Content-Type from the file name's extension; `application/octet-stream` when unknown.
pub fn content_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "text" | "log" | "md" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "csv" => "text/csv",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "xhtml" => "application/xhtml+xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "avi" => "video/x-msvideo",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "bz2" => "application/x-bzip2",
        "xz" => "application/x-xz",
        "zst" => "application/zstd",
        "tar" => "application/x-tar",
        "7z" => "application/x-7z-compressed",
        "iso" => "application/x-iso9660-image",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Types a browser would run scripts in.
fn runs_scripts(content_type: &str) -> bool {
    content_type.starts_with("text/html")
        || content_type == "image/svg+xml"
        || content_type.ends_with("xml")
}

/// One stretch of a response body.
enum Piece {
    Bytes(Bytes),
    File { offset: u64, len: u64 },
}

/// The next frame: ready, or being read from the file on the blocking pool.
enum Ahead {
    Ready(Bytes),
    Reading(JoinHandle<io::Result<Bytes>>),
}

/// Produces a body's frames in order, keeping one file read in flight ahead of the connection.
struct Sender {
    file: Option<Arc<File>>,
    pieces: VecDeque<Piece>,
    ahead: Option<Ahead>,
    /// Bytes of the frame last handed out: counted once the connection asks for the next one
    /// (it has taken them), or at once for the last frame (hyper stops polling a body whose
    /// `Content-Length` is reached).
    uncounted: u64,
    metrics: Arc<Metrics>,
    done: bool,
}

impl Sender {
    fn start_next(&mut self) -> Option<Ahead> {
        match self.pieces.pop_front()? {
            Piece::Bytes(b) => Some(Ahead::Ready(b)),
            Piece::File { offset, len } => {
                let file = self.file.clone()?;
                let n = len.min(CHUNK as u64) as usize;
                let mut buf = take_buffer();
                // Data in the page cache is copied right here; only a read that would wait for
                // the disk goes to the blocking pool (a thread hop per chunk costs more than
                // the copy).
                let cached = read_cached(&file, &mut buf[..n], offset);
                let took = if cached > 0 { cached } else { n };
                if (took as u64) < len {
                    self.pieces.push_front(Piece::File {
                        offset: offset + took as u64,
                        len: len - took as u64,
                    });
                }
                if cached > 0 {
                    return Some(Ahead::Ready(pooled(buf, cached)));
                }
                Some(Ahead::Reading(tokio::task::spawn_blocking(move || {
                    read_chunk(&file, offset, buf, n)
                })))
            }
        }
    }

    async fn next_frame(&mut self) -> Option<io::Result<Bytes>> {
        Metrics::add(
            &self.metrics.bytes_served,
            std::mem::take(&mut self.uncounted),
        );
        if self.done {
            return None;
        }
        let ahead = match self.ahead.take() {
            Some(a) => a,
            None => match self.start_next() {
                Some(a) => a,
                None => {
                    self.done = true;
                    return None;
                }
            },
        };
        let chunk = match ahead {
            Ahead::Ready(b) => b,
            Ahead::Reading(task) => match task.await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return self.fail(e),
                Err(e) => return self.fail(io::Error::other(e)),
            },
        };
        self.ahead = self.start_next();
        if self.ahead.is_none() {
            self.done = true;
            Metrics::add(&self.metrics.bytes_served, chunk.len() as u64);
        } else {
            self.uncounted = chunk.len() as u64;
        }
        Some(Ok(chunk))
    }

    fn fail(&mut self, e: io::Error) -> Option<io::Result<Bytes>> {
        tracing::warn!("file side: reading a file being sent: {e}");
        self.done = true;
        self.pieces.clear();
        Some(Err(e))
    }
}

/// Reads exactly `n` bytes at `offset` into `buf` (blocking).
fn read_chunk(file: &File, offset: u64, mut buf: Vec<u8>, n: usize) -> io::Result<Bytes> {
    match file.read_exact_at(&mut buf[..n], offset) {
        Ok(()) => Ok(pooled(buf, n)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while it was being sent",
        )),
        Err(e) => Err(e),
    }
}

/// Reads what the page cache holds at `offset` without waiting for the disk (Linux
/// `preadv2(RWF_NOWAIT)`); 0 when nothing could be read that way.
#[cfg(target_os = "linux")]
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> usize {
    use rustix::io::{Errno, ReadWriteFlags};
    use std::sync::atomic::{AtomicBool, Ordering};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return 0;
    }
    let mut bufs = [io::IoSliceMut::new(buf)];
    match rustix::io::preadv2(file, &mut bufs, offset, ReadWriteFlags::NOWAIT) {
        Ok(n) => n,
        Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS || e == Errno::INVAL => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            0
        }
        // EAGAIN (not cached) and real errors alike: the blocking read decides.
        Err(_) => 0,
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &File, _buf: &mut [u8], _offset: u64) -> usize {
    0
}

/// Read buffers (each [`CHUNK`] bytes long) given back by the connection once it has sent
/// them: steady streaming allocates nothing (a fresh 256 KiB allocation costs page faults on
/// every chunk). At most [`POOL_MAX`] are kept.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 64;

fn take_buffer() -> Vec<u8> {
    let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    pooled.unwrap_or_else(|| vec![0; CHUNK])
}

/// The first `len` bytes of a pool buffer, as a frame; the buffer returns to the pool when the
/// connection drops the frame.
fn pooled(buf: Vec<u8>, len: usize) -> Bytes {
    Bytes::from_owner(PoolBuf { buf, len })
}

struct PoolBuf {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

fn counted_body(file: Option<Arc<File>>, pieces: VecDeque<Piece>, metrics: &Arc<Metrics>) -> Body {
    let sender = Sender {
        file,
        pieces,
        ahead: None,
        uncounted: 0,
        metrics: Arc::clone(metrics),
        done: false,
    };
    Body::from_stream(futures_util::stream::unfold(sender, |mut s| async move {
        s.next_frame().await.map(|frame| (frame, s))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        metrics: Arc<Metrics>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        Fixture {
            _dir: dir,
            root,
            metrics: Arc::new(Metrics::default()),
        }
    }

    impl Fixture {
        async fn get(
            &self,
            rel: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, HeaderMap, Vec<u8>) {
            self.call(Method::GET, rel, headers).await
        }

        async fn call(
            &self,
            method: Method,
            rel: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, HeaderMap, Vec<u8>) {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let res = respond(&self.root, rel, &method, &h, &self.metrics, "/files/").await;
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
            (status, headers, body)
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn hv<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    #[tokio::test]
    async fn whole_file_ranges_and_counting() {
        let f = fixture();
        let content = data(3 * CHUNK + 17);
        std::fs::write(f.root.join("a.bin"), &content).unwrap();
        let (s, h, b) = f.get("a.bin", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, content);
        assert_eq!(hv(&h, "content-length"), content.len().to_string());
        assert_eq!(hv(&h, "accept-ranges"), "bytes");
        assert_eq!(hv(&h, "content-type"), "application/octet-stream");
        assert!(hv(&h, "etag").starts_with('"'));
        assert_eq!(
            f.metrics
                .bytes_served
                .load(std::sync::atomic::Ordering::Relaxed),
            content.len() as u64
        );

        let range = format!("bytes=100-{}", CHUNK + 5);
        let (s, h, b) = f.get("a.bin", &[("range", &range)]).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert_eq!(b, &content[100..CHUNK + 6]);
        assert_eq!(
            hv(&h, "content-range"),
            format!("bytes 100-{}/{}", CHUNK + 5, content.len())
        );

        let (s, h, b) = f.get("a.bin", &[("range", "bytes=0-1,-2")]).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert!(hv(&h, "content-type").starts_with("multipart/byteranges; boundary="));
        assert_eq!(hv(&h, "content-length"), b.len().to_string());
        let n = content.len();
        let tail = [&content[n - 2..], b"\r\n--"].concat();
        assert!(b.windows(tail.len()).any(|w| w == tail));
        assert!(b.ends_with(b"--\r\n"));

        let (s, h, _) = f.get("a.bin", &[("range", "bytes=999999999-")]).await;
        assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(hv(&h, "content-range"), format!("bytes */{n}"));
    }

    #[tokio::test]
    async fn head_has_the_get_headers_and_no_body() {
        let f = fixture();
        std::fs::write(f.root.join("page.html"), b"<p>hi</p>").unwrap();
        let (_, get_h, _) = f.get("page.html", &[]).await;
        let (s, head_h, body) = f.call(Method::HEAD, "page.html", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(get_h, head_h);
        assert_eq!(hv(&head_h, "content-type"), "text/html; charset=utf-8");
        assert_eq!(hv(&head_h, "content-security-policy"), "sandbox");
        let (s, h, _) = f.call(Method::PUT, "page.html", &[]).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(hv(&h, "allow"), "GET, HEAD");
    }

    #[tokio::test]
    async fn conditionals() {
        let f = fixture();
        std::fs::write(f.root.join("c.txt"), b"hello world").unwrap();
        let (_, h, _) = f.get("c.txt", &[]).await;
        let etag = hv(&h, "etag").to_owned();
        let lm = hv(&h, "last-modified").to_owned();
        let weak = format!("W/{etag}");
        let cases: Vec<(Vec<(&str, &str)>, StatusCode)> = vec![
            (vec![("if-none-match", &etag)], StatusCode::NOT_MODIFIED),
            (vec![("if-none-match", &weak)], StatusCode::NOT_MODIFIED),
            (vec![("if-none-match", "\"other\"")], StatusCode::OK),
            (vec![("if-modified-since", &lm)], StatusCode::NOT_MODIFIED),
            (
                vec![("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
                StatusCode::OK,
            ),
            // If-None-Match wins over If-Modified-Since.
            (
                vec![("if-none-match", "\"other\""), ("if-modified-since", &lm)],
                StatusCode::OK,
            ),
            (vec![("if-match", &etag)], StatusCode::OK),
            (vec![("if-match", "*")], StatusCode::OK),
            (
                vec![("if-match", "\"other\"")],
                StatusCode::PRECONDITION_FAILED,
            ),
            (vec![("if-match", &weak)], StatusCode::PRECONDITION_FAILED),
            (
                vec![("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
                StatusCode::PRECONDITION_FAILED,
            ),
            (vec![("if-unmodified-since", &lm)], StatusCode::OK),
            (
                vec![("range", "bytes=0-4"), ("if-range", &etag)],
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                vec![("range", "bytes=0-4"), ("if-range", &lm)],
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                vec![("range", "bytes=0-4"), ("if-range", "\"old\"")],
                StatusCode::OK,
            ),
            (
                vec![("range", "bytes=0-4"), ("if-range", &weak)],
                StatusCode::OK,
            ),
            (
                vec![
                    ("range", "bytes=0-4"),
                    ("if-range", "Thu, 01 Jan 1970 00:00:00 GMT"),
                ],
                StatusCode::OK,
            ),
            (
                vec![("range", "bytes=0-4"), ("range", "bytes=5-6")],
                StatusCode::OK,
            ),
            (vec![("range", "lines=0-4")], StatusCode::OK),
        ];
        for (headers, want) in cases {
            let (s, h, b) = f.get("c.txt", &headers).await;
            assert_eq!(s, want, "{headers:?}");
            match want {
                StatusCode::OK => assert_eq!(b, b"hello world"),
                StatusCode::PARTIAL_CONTENT => assert_eq!(b, b"hello"),
                StatusCode::NOT_MODIFIED => {
                    assert!(b.is_empty());
                    assert_eq!(hv(&h, "etag"), etag);
                }
                _ => {}
            }
        }
        // HEAD ignores Range.
        let (s, h, _) = f
            .call(Method::HEAD, "c.txt", &[("range", "bytes=0-4")])
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(hv(&h, "content-length"), "11");
    }

    #[tokio::test]
    async fn etag_changes_with_the_content() {
        let f = fixture();
        let p = f.root.join("e");
        std::fs::write(&p, b"one").unwrap();
        let a = strong_etag(&std::fs::metadata(&p).unwrap());
        std::fs::write(&p, b"two!").unwrap();
        let b = strong_etag(&std::fs::metadata(&p).unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with('"') && a.ends_with('"') && !a.starts_with("W/"));
    }

    #[tokio::test]
    async fn paths_and_directories() {
        let f = fixture();
        std::fs::create_dir_all(f.root.join("d/sub")).unwrap();
        std::fs::write(f.root.join("d/x.txt"), b"x").unwrap();
        std::fs::create_dir(f.root.join(safepath::STATE_DIR)).unwrap();
        std::fs::write(f.root.join(".ferry/staged"), b"secret").unwrap();
        for (rel, want) in [
            ("../etc/passwd", StatusCode::FORBIDDEN),
            ("/etc/passwd", StatusCode::FORBIDDEN),
            ("d/../../x", StatusCode::FORBIDDEN),
            (".ferry/staged", StatusCode::NOT_FOUND),
            (".ferry/", StatusCode::NOT_FOUND),
            ("missing", StatusCode::NOT_FOUND),
            ("d/x.txt/", StatusCode::NOT_FOUND),
            ("d/x.txt/y", StatusCode::NOT_FOUND),
            ("d/x.txt", StatusCode::OK),
            ("./d//x.txt", StatusCode::OK),
        ] {
            let (s, _, b) = f.get(rel, &[]).await;
            assert_eq!(s, want, "{rel}");
            assert_ne!(b, b"secret");
        }
        let (s, h, _) = f.get("d/sub", &[]).await;
        assert_eq!(s, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(hv(&h, "location"), "/files/d/sub/");
        let (s, h, b) = f.get("", &[("accept", "application/json")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(hv(&h, "content-type"), "application/json");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v[0]["name"], "d");
        let (s, h, b) = f.get("d/", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(hv(&h, "content-type").starts_with("text/html"));
        let html = String::from_utf8(b).unwrap();
        assert!(html.contains("href=\"/files/d/x.txt\""), "{html}");
        assert!(html.contains("href=\"/files/d/sub/\""), "{html}");
        assert!(html.contains("href=\"/files/\""), "{html}");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a.PNG"), "image/png");
        assert_eq!(content_type("a.tar.gz"), "application/gzip");
        assert_eq!(content_type(".bashrc"), "application/octet-stream");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert!(runs_scripts(content_type("x.svg")));
        assert!(!runs_scripts(content_type("x.mp4")));
    }
}
