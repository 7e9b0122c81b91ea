//! `FaultServer`: an in-process HTTP/1.1 file server on 127.0.0.1 with switchable faults,
//! for tests that run the ferry downloader against a server that misbehaves on purpose.
//!
//! This file owns the whole server: a small hand-written HTTP/1.1 responder on raw tokio
//! `TcpStream`s (no hyper), so that every fault can be placed exactly on the wire (a TCP
//! reset after N body bytes, a stall, a clean close short of `Content-Length`, bytes past
//! `Content-Length`). Where it is not told to misbehave it is a correct file server:
//!
//! - `GET` and `HEAD`; other methods get `405` with `Allow: GET, HEAD`.
//! - One `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` per request → `206` with
//!   `Content-Range: bytes a-b/total`; an unsatisfiable one → `416` with
//!   `Content-Range: bytes */total`. Several ranges, a syntactically invalid range or a
//!   unit other than `bytes` → `200` with the full body (allowed by RFC 9110 §14.2).
//!   `Range` on `HEAD` is ignored (RFC 9110: range handling is defined for `GET` only).
//! - `Accept-Ranges: bytes`, a strong `ETag` derived from the content (two servers holding
//!   the same bytes send the same tag; see [`FaultServer::etag`]), `Last-Modified`, `Date`,
//!   `Content-Type: application/octet-stream`.
//! - `If-Range`: an entity tag matches only by strong comparison with the current ETag (so
//!   never while [`Faults::weak_etag`] is set); an HTTP-date matches when it equals the
//!   current `Last-Modified` (to the second). Match → the Range is honoured; no match → `200`
//!   with the full body.
//! - `If-Match` (strong comparison, `*` allowed) and `If-Unmodified-Since` → `412` when they
//!   fail. Other conditionals (`If-None-Match`, `If-Modified-Since`) are ignored.
//! - Keep-alive: HTTP/1.1 connections serve requests until the client closes or sends
//!   `Connection: close`; pipelined requests are answered in order. HTTP/1.0 requests are
//!   answered with `Connection: close`. A request body (`Content-Length`) is read and
//!   discarded; a chunked request body gets `501` and the connection is closed.
//! - Unknown paths → `404`. The request target's query string is ignored for the lookup and
//!   `%XX` escapes are decoded; file names are given without a leading slash.
//!
//! Bodies are written in chunks of [`BODY_CHUNK`] bytes (64 KiB), so throttling, reset,
//! stall and truncation points are exact (a chunk is cut at the fault offset) and an
//! unfaulted transfer runs at loopback speed. Each fault is described on its field of
//! [`Faults`]; when several stop points apply to one response (reset, stall, truncate) the
//! earliest offset wins.
//!
//! Counters ([`FaultServer::body_bytes_sent`], [`FaultServer::request_count`]) are atomics
//! updated as bytes are written; [`FaultServer::requests`] is a log of every request.
//! Dropping the [`FaultServer`] aborts its accept task, which owns every connection task, so
//! all sockets are closed; a server from [`FaultServer::start_blocking`] also shuts down its
//! private runtime.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Size of the pieces a response body is written in (64 KiB). With a throttle
/// ([`Faults::rate_per_conn`]) the pieces are smaller, about 1/50 of a second's worth.
pub const BODY_CHUNK: usize = 64 * 1024;

/// Largest request head (request line plus headers) accepted; larger heads get `431`.
const MAX_HEAD: usize = 64 * 1024;

/// How long a connection that the server closes on purpose (after [`Faults::truncate_at`]
/// or [`Faults::extra_bytes`]) waits for the client's own close before it is dropped.
const LINGER_DRAIN: Duration = Duration::from_secs(2);

/// Pause between the last body byte and the RST of [`Faults::reset_after`].
pub const RESET_GRACE: Duration = Duration::from_millis(25);

/// Bytes sent by [`Faults::extra_bytes`], repeated.
const GARBAGE: &[u8] = b"GARBAGE!";

/// What the server serves and how it misbehaves at start. `Default` is no files and no
/// faults.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// `(path, content)`: the path without a leading slash (`"a/b.bin"` is served at
    /// `/a/b.bin`). A later entry with the same path replaces an earlier one.
    pub files: Vec<(String, Vec<u8>)>,
    /// The initial fault plan; replace it at runtime with [`FaultServer::set_faults`].
    pub faults: Faults,
}

/// The fault plan. `Default` is a well-behaved server. Construct with
/// `Faults { field: value, ..Default::default() }`.
///
/// The counters behind [`Faults::fail_first`] and [`Faults::stall_first_n`] belong to the
/// plan: [`FaultServer::set_faults`] starts them again from zero.
///
/// Faults that act on a body (reset, stall, truncate, extra bytes, throttle) apply to
/// `GET` responses that carry file content (`200`/`206`), never to `HEAD`, to error
/// responses or to redirects.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Ignore `Range` (and `If-Range`): always `200` with the full body and
    /// `Content-Length`, and no `Accept-Ranges` header.
    pub no_ranges: bool,
    /// Send bodies with `Transfer-Encoding: chunked` and no `Content-Length`; ranges are
    /// ignored too (always `200`, no `Accept-Ranges`). `HEAD` answers likewise carry
    /// `Transfer-Encoding: chunked` and no length.
    pub no_content_length: bool,
    /// Omit `ETag` and `Last-Modified`; then `If-Range` never matches and `If-Match` only
    /// matches `*`.
    pub no_validators: bool,
    /// Send the ETag as weak, `W/"..."`. A weak tag never satisfies `If-Range` or
    /// `If-Match` (both use strong comparison).
    pub weak_etag: bool,
    /// Per response, draw a number N uniformly from `[lo, hi]` (swapped if `lo > hi`); if N
    /// is less than the body length, write N body bytes and then abort the connection with
    /// a TCP RST (`SO_LINGER` 0, then close). Between the last byte and the RST the server
    /// pauses [`RESET_GRACE`] (25 ms, sending nothing), because Linux discards whatever the
    /// client has received but not yet read when the RST arrives; a client that is reading
    /// therefore gets the N bytes, then `ECONNRESET`.
    pub reset_after: Option<(u64, u64)>,
    /// Per response: after this many body bytes stop writing but keep the socket open; the
    /// server then only reads (and discards) from the socket until the client closes it,
    /// and closes its side then. A body no longer than this is sent whole.
    pub stall_after: Option<u64>,
    /// With [`Faults::stall_after`]: only the first n responses that reach the stall point
    /// stall (responses whose body is shorter do not use up the budget); 0 means every one.
    pub stall_first_n: u64,
    /// The first n `GET` requests (any path, counted from when this plan was installed; `HEAD`
    /// is not counted) are answered with [`Faults::fail_status`] and a short text body.
    pub fail_first: u32,
    /// The status for [`Faults::fail_first`]; 0 means 503.
    pub fail_status: u16,
    /// Seconds, sent as `Retry-After` with the [`Faults::fail_first`] answers.
    pub retry_after: Option<u64>,
    /// Answer ranges with a `206` whose `Content-Range` is shifted by +1 (`bytes a+1-b+1/total`
    /// for a request of `a-b`); the body is still bytes `a..=b`.
    pub wrong_content_range: bool,
    /// Promise the full length (`Content-Length` of the whole response) but after this many
    /// body bytes close the connection cleanly (FIN via `shutdown`, then wait up to 2 s for
    /// the client to close). With chunked framing the terminating `0` chunk is never sent.
    pub truncate_at: Option<u64>,
    /// After the complete promised body, send this many extra bytes (`GARBAGE!` repeated).
    /// With `Content-Length` framing (the default) the bytes are written raw on the socket
    /// past the promised length and then the server closes the connection cleanly, as a lying
    /// server would; the client's HTTP parser sees them as junk after the response. With
    /// chunked framing ([`Faults::extra_chunked`] or [`Faults::no_content_length`]) they are
    /// part of the chunked body, so the client's body stream really yields more bytes than
    /// promised (for a `206`, more than its `Content-Range` says) and the connection stays
    /// alive. Extra bytes are counted by [`FaultServer::garbage_bytes_sent`], not by
    /// [`FaultServer::body_bytes_sent`].
    pub extra_bytes: u64,
    /// With [`Faults::extra_bytes`]: send `200`/`206` bodies chunked (no `Content-Length`;
    /// `Content-Range` and `Accept-Ranges` as usual) and put the extra bytes inside the
    /// chunked body. (Addition to the original plan.)
    pub extra_chunked: bool,
    /// Throttle every response body to this many bytes per second, smoothly: pieces of
    /// about 1/50 s worth (1 byte to 64 KiB), each written when the schedule
    /// `start + sent / rate` allows it.
    pub rate_per_conn: Option<u64>,
    /// `(offset, bytes/s)`: responses whose body starts at exactly this file offset are
    /// throttled to this rate (overriding [`Faults::rate_per_conn`]): one slow connection among
    /// fast ones, for endgame tests.
    pub slow_at_offset: Option<(u64, u64)>,
    /// Send `Repr-Digest: sha-256=:BASE64:` (RFC 9530) of the whole file with every file
    /// response (`200`, `206`, `HEAD`). Computed once per file content, on first use, on a
    /// blocking thread (unoptimized in debug builds: roughly 4 s for 128 MiB).
    pub repr_digest: bool,
    /// Send a `Repr-Digest` that does not match the file (the correct SHA-256 with its first
    /// byte inverted). Implies sending the header even without [`Faults::repr_digest`].
    pub corrupt_digest: bool,
    /// A raw `Content-Disposition` value sent with every file response.
    pub content_disposition: Option<String>,
    /// `GET` or `HEAD` of `/r/<rest>` → `302` with the relative `Location: /<rest>` (query
    /// string kept). Other paths are served as usual.
    pub redirect_prefix: bool,
    /// Answer every request (any method or path) with this status and a short text body
    /// (no body for 204 and 304). Checked before everything else.
    pub status_override: Option<u16>,
}

/// One request as the server saw it, with the status it was answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Which connection carried it: 1 for the first accepted connection, and so on.
    pub conn_id: u64,
    /// The method as sent (`"GET"`, `"HEAD"`, ...).
    pub method: String,
    /// The request target as sent, with its leading slash and query (`"/f.bin?x=1"`).
    pub path: String,
    /// The `Range` header value, if any.
    pub range: Option<String>,
    /// The `If-Range` header value, if any.
    pub if_range: Option<String>,
    /// Every request header, in order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    /// File-content bytes written to the socket for this response so far (excluding
    /// framing, text bodies of generated responses and extra garbage bytes). For a response
    /// still being sent (or stalled) this is the count when [`FaultServer::requests`] was
    /// called.
    pub body_bytes: u64,
}

impl RequestRecord {
    /// The first value of a request header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running fault-injection server on 127.0.0.1. Dropping it stops the server and closes
/// every connection.
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// The private runtime of a server from [`FaultServer::start_blocking`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultServer {
    /// Starts on 127.0.0.1 with an ephemeral port. Must be called inside a tokio runtime;
    /// the server's tasks run on that runtime (so a current-thread test runtime must keep
    /// polling, i.e. the test must not block its thread while talking to the server — use
    /// [`FaultServer::start_blocking`] for that).
    pub async fn start(config: FaultConfig) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FaultServer: bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("FaultServer: local_addr of a bound listener");
        let shared = Arc::new(Shared::new(config));
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FaultServer {
            addr,
            shared,
            accept,
            runtime: None,
        }
    }

    /// Same as [`FaultServer::start`], but builds its own multi-thread tokio runtime (4
    /// worker threads) on a background thread, for sync tests that spawn the ferry binary as
    /// a subprocess. May be called from anywhere, even inside another runtime. Dropping the
    /// server shuts that runtime down without blocking.
    pub fn start_blocking(config: FaultConfig) -> FaultServer {
        std::thread::Builder::new()
            .name("ferry-fault-start".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(4)
                    .thread_name("ferry-fault")
                    .enable_all()
                    .build()
                    .expect("FaultServer: build tokio runtime");
                let mut server = runtime.block_on(FaultServer::start(config));
                server.runtime = Some(runtime);
                server
            })
            .expect("FaultServer: spawn start thread")
            .join()
            .expect("FaultServer: start thread panicked")
    }

    /// The listening address (127.0.0.1 and the ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"http://127.0.0.1:PORT/<path>"`; a leading slash on `path` is dropped.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Total file-content body bytes written to sockets so far (all requests), counted as
    /// each piece is written. Excludes headers, chunk framing, the short text bodies of
    /// generated responses (errors, redirects) and [`Faults::extra_bytes`] garbage.
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::Relaxed)
    }

    /// Total garbage bytes written by [`Faults::extra_bytes`] so far.
    pub fn garbage_bytes_sent(&self) -> u64 {
        self.shared.garbage_bytes.load(Ordering::Relaxed)
    }

    /// Number of requests received (all paths and methods, including those answered with
    /// errors).
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Number of TCP connections accepted so far.
    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// A snapshot of the request log, in the order the requests were answered (the record
    /// is added when the status is decided, before the body is written).
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log)
            .iter()
            .map(|live| {
                let mut rec = live.rec.clone();
                rec.body_bytes = live.sent.load(Ordering::Relaxed);
                rec
            })
            .collect()
    }

    /// Adds or replaces a file ("the remote file changed"): the ETag is derived from the new
    /// content (see [`FaultServer::etag`]) and changes whenever the bytes differ from the
    /// previous content of the path; `Last-Modified` becomes the current time, but always at
    /// least one second later than the path's previous `Last-Modified` (so a change is
    /// visible to date-based `If-Range` even within the same second). Responses already
    /// being sent keep the old content.
    pub fn set_file(&self, path: &str, data: Vec<u8>) {
        let key = path.trim_start_matches('/').to_string();
        let mut files = lock(&self.shared.files);
        let mut modified = now_secs();
        let mut version = 0;
        if let Some(prev) = files.get(&key) {
            modified = modified.max(prev.last_modified + Duration::from_secs(1));
            // memcmp (optimized std code even in debug builds).
            version = prev.version + u64::from(prev.data[..] != data[..]);
        }
        files.insert(
            key,
            Arc::new(FileEntry::new(data.into(), modified, version)),
        );
    }

    /// Removes a file; later requests for it get `404`. Returns whether it existed.
    pub fn remove_file(&self, path: &str) -> bool {
        lock(&self.shared.files)
            .remove(path.trim_start_matches('/'))
            .is_some()
    }

    /// The `ETag` header value currently sent for `path` (`"..."` or `W/"..."`), or `None`
    /// for an unknown path or while [`Faults::no_validators`] is set.
    ///
    /// The tag is `"<hash>-<length>-<version>"`: a SipHash of the content (of all of it up to
    /// 4 MiB, else of 256 blocks of 16 KiB spread evenly over it), the length in hex, and a
    /// per-path version that starts at 0 and that [`FaultServer::set_file`] bumps whenever
    /// the new bytes differ from the old. So two servers given the same bytes send the same
    /// tag, and a changed file always gets a new one, however small the change.
    pub fn etag(&self, path: &str) -> Option<String> {
        let faults = self.faults();
        let file = lock(&self.shared.files)
            .get(path.trim_start_matches('/'))
            .cloned()?;
        (!faults.no_validators).then(|| file.etag_header(faults.weak_etag))
    }

    /// The `Last-Modified` header value currently sent for `path`, or `None` for an unknown
    /// path or while [`Faults::no_validators`] is set.
    pub fn last_modified(&self, path: &str) -> Option<String> {
        let faults = self.faults();
        let file = lock(&self.shared.files)
            .get(path.trim_start_matches('/'))
            .cloned()?;
        (!faults.no_validators).then(|| file.last_modified_str.clone())
    }

    /// Replaces the fault plan at runtime and restarts its counters (for
    /// [`Faults::fail_first`] and [`Faults::stall_first_n`]). Requests already being answered
    /// keep the plan they started with.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.plan) = Plan::new(faults);
    }

    /// The current fault plan.
    pub fn faults(&self) -> Faults {
        lock(&self.shared.plan).faults.clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks: dropping it aborts them all.
        self.accept.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for FaultServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Shared state

struct Shared {
    files: Mutex<HashMap<String, Arc<FileEntry>>>,
    plan: Mutex<Plan>,
    body_bytes: AtomicU64,
    garbage_bytes: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
    log: Mutex<Vec<LiveRecord>>,
}

impl Shared {
    fn new(config: FaultConfig) -> Shared {
        // Initial files look a minute old, so their Last-Modified is "strong" by the
        // RFC 9110 §8.8.2.2 rule (at least a second before Date).
        let modified = now_secs()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or(UNIX_EPOCH);
        let files = config
            .files
            .into_iter()
            .map(|(path, data)| {
                let key = path.trim_start_matches('/').to_string();
                (key, Arc::new(FileEntry::new(data.into(), modified, 0)))
            })
            .collect();
        Shared {
            files: Mutex::new(files),
            plan: Mutex::new(Plan::new(config.faults)),
            body_bytes: AtomicU64::new(0),
            garbage_bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        }
    }
}

/// The fault plan with its counters.
struct Plan {
    faults: Faults,
    gets_seen: u64,
    stalls_claimed: u64,
}

impl Plan {
    fn new(faults: Faults) -> Plan {
        Plan {
            faults,
            gets_seen: 0,
            stalls_claimed: 0,
        }
    }
}

struct LiveRecord {
    rec: RequestRecord,
    sent: Arc<AtomicU64>,
}

struct FileEntry {
    data: Bytes,
    /// The opaque tag with its quotes, without `W/`.
    etag: String,
    /// Bumped by `set_file` when the content changes; part of the tag.
    version: u64,
    last_modified: SystemTime,
    last_modified_str: String,
    /// Base64 SHA-256 of `data`, computed on first use.
    sha256_b64: OnceLock<String>,
}

impl FileEntry {
    fn new(data: Bytes, last_modified: SystemTime, version: u64) -> FileEntry {
        // Hashing runs unoptimized in debug test builds (~200 MB/s), so big files are
        // sampled; `version` makes every change visible anyway.
        const FULL: usize = 4 << 20;
        const BLOCKS: usize = 256;
        const BLOCK: usize = 16 << 10;
        let mut hasher = std::hash::DefaultHasher::new();
        if data.len() <= FULL {
            hasher.write(&data);
        } else {
            let stride = (data.len() - BLOCK) / (BLOCKS - 1);
            for i in 0..BLOCKS {
                hasher.write(&data[i * stride..i * stride + BLOCK]);
            }
        }
        let etag = format!("\"{:016x}-{:x}-{version}\"", hasher.finish(), data.len());
        FileEntry {
            data,
            etag,
            version,
            last_modified,
            last_modified_str: httpdate::fmt_http_date(last_modified),
            sha256_b64: OnceLock::new(),
        }
    }

    fn etag_header(&self, weak: bool) -> String {
        if weak {
            format!("W/{}", self.etag)
        } else {
            self.etag.clone()
        }
    }

    /// The `Repr-Digest` value; computes the SHA-256 on the calling thread if
    /// [`ensure_digest`] has not run.
    fn repr_digest(&self, corrupt: bool) -> String {
        let b64 = self.sha256_b64.get_or_init(|| self.compute_sha256());
        if !corrupt {
            return format!("sha-256=:{b64}:");
        }
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("own base64");
        raw[0] ^= 0xff;
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl FileEntry {
    fn compute_sha256(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&self.data))
    }
}

/// Computes the SHA-256 of the file a request is for on a blocking thread, if a digest will
/// be sent and it is not cached yet: unoptimized SHA-256 in debug builds takes seconds for
/// 100 MiB, and must not hold up the runtime's other connections meanwhile.
async fn ensure_digest(shared: &Shared, req: &Request, faults: &Faults) {
    if !(faults.repr_digest || faults.corrupt_digest) || faults.status_override.is_some() {
        return;
    }
    let Some(file) = lock(&shared.files).get(&req.lookup_path()).cloned() else {
        return;
    };
    if file.sha256_b64.get().is_some() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        file.sha256_b64.get_or_init(|| file.compute_sha256());
    })
    .await;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Now, truncated to whole seconds (HTTP dates have second resolution).
fn now_secs() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

// ---------------------------------------------------------------------------------------
// Connections

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                    conns.spawn(serve_conn(stream, id, Arc::clone(&shared)));
                }
                // E.g. EMFILE: back off a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// What to do with the connection after a response.
enum After {
    /// Read the next request.
    KeepAlive,
    /// Close cleanly: FIN, then wait briefly for the client's close.
    Close,
    /// Abort with a TCP RST.
    Reset,
    /// Keep the socket open, sending nothing, until the client closes it.
    Stall,
    /// The socket failed; drop it.
    Gone,
}

async fn serve_conn(mut stream: TcpStream, conn_id: u64, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        let head = match read_head(&mut stream, &mut buf).await {
            HeadRead::Head(head) => head,
            HeadRead::Eof | HeadRead::Io => return,
            HeadRead::TooLarge => {
                let _ = write_simple(&mut stream, 431, false).await;
                finish(stream, After::Close).await;
                return;
            }
        };
        let Some(req) = Request::parse(&head) else {
            let _ = write_simple(&mut stream, 400, false).await;
            finish(stream, After::Close).await;
            return;
        };
        if req.header("transfer-encoding").is_some() {
            let _ = write_simple(&mut stream, 501, false).await;
            finish(stream, After::Close).await;
            return;
        }
        if let Some(len) = req.header("content-length") {
            let Ok(len) = len.parse::<u64>() else {
                let _ = write_simple(&mut stream, 400, false).await;
                finish(stream, After::Close).await;
                return;
            };
            if discard_body(&mut stream, &mut buf, len).await.is_err() {
                return;
            }
        }
        let after = respond(&mut stream, &req, conn_id, &shared).await;
        match after {
            After::KeepAlive => continue,
            other => {
                finish(stream, other).await;
                return;
            }
        }
    }
}

/// Ends a connection the way `after` says.
async fn finish(mut stream: TcpStream, after: After) {
    match after {
        After::KeepAlive | After::Gone => {}
        After::Close => {
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
            let _ = tokio::time::timeout(LINGER_DRAIN, drain(&mut stream)).await;
        }
        After::Reset => {
            // Give a reading client time to take the bytes already written: Linux drops a
            // socket's unread received data when the RST arrives.
            let _ = stream.flush().await;
            tokio::time::sleep(RESET_GRACE).await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        After::Stall => {
            let _ = stream.flush().await;
            drain(&mut stream).await;
        }
    }
}

/// Reads and discards until EOF or an error.
async fn drain(stream: &mut TcpStream) {
    let mut scratch = [0u8; 4096];
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}

enum HeadRead {
    Head(Vec<u8>),
    Eof,
    Io,
    TooLarge,
}

/// Reads one request head (through the blank line) from `buf` + the socket; bytes after it
/// stay in `buf` for the next request.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> HeadRead {
    let mut searched: usize = 0;
    loop {
        // Tolerate blank lines before a request (RFC 9112 §2.2).
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
            searched = 0;
        }
        let from = searched.saturating_sub(3);
        if let Some(pos) = find(&buf[from..], b"\r\n\r\n") {
            let end = from + pos + 4;
            let head = buf[..end].to_vec();
            buf.drain(..end);
            return HeadRead::Head(head);
        }
        searched = buf.len();
        if buf.len() > MAX_HEAD {
            return HeadRead::TooLarge;
        }
        let mut chunk = [0u8; 8 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return HeadRead::Eof,
            Ok(0) | Err(_) => return HeadRead::Io,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn discard_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: u64) -> std::io::Result<()> {
    let in_buf = (buf.len() as u64).min(len) as usize;
    buf.drain(..in_buf);
    let mut left = len - in_buf as u64;
    let mut scratch = [0u8; 8 * 1024];
    while left > 0 {
        let want = (scratch.len() as u64).min(left) as usize;
        let n = stream.read(&mut scratch[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    minor: u8,
    headers: Vec<(String, String)>,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut parts = lines.next()?.split(' ').filter(|p| !p.is_empty());
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let version = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let minor = match version {
            "HTTP/1.1" => 1,
            "HTTP/1.0" => 0,
            _ => return None,
        };
        let mut headers = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            // Obsolete line folding and malformed fields are rejected.
            if line.starts_with([' ', '\t']) {
                return None;
            }
            let (name, value) = line.split_once(':')?;
            if name.is_empty() || name.ends_with([' ', '\t']) {
                return None;
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        Some(Request {
            method,
            target,
            minor,
            headers,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection may serve another request after this one.
    fn keep_alive(&self) -> bool {
        let close = self
            .headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"));
        self.minor == 1 && !close
    }

    /// The path to look up: no query, no leading slash, `%XX` decoded; an absolute-form
    /// target (`http://host/path`) is reduced to its path.
    fn lookup_path(&self) -> String {
        let mut t = self.target.as_str();
        if let Some(rest) = t
            .strip_prefix("http://")
            .or_else(|| t.strip_prefix("https://"))
        {
            t = rest.find('/').map_or("/", |i| &rest[i..]);
        }
        let t = t.split(['?', '#']).next().unwrap_or("");
        percent_decode(t.trim_start_matches('/'))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    }
}

/// Writes a whole generated response with a short text body (`"<status> <reason>\n"`).
async fn write_simple(
    stream: &mut TcpStream,
    status: u16,
    keep_alive: bool,
) -> std::io::Result<()> {
    let resp = Response::text(status);
    stream
        .write_all(&resp.serialize(keep_alive, false, true))
        .await
}

/// A response head plus a short in-memory body (for generated responses).
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A generated response with a text body naming the status.
    fn text(status: u16) -> Response {
        let mut resp = Response::new(status);
        if !matches!(status, 100..=199 | 204 | 304) {
            resp.headers
                .push(("Content-Type", "text/plain; charset=utf-8".into()));
            resp.body = format!("{status} {}\n", reason(status)).into_bytes();
        }
        resp
    }

    fn header(&mut self, name: &'static str, value: impl Into<String>) {
        self.headers.push((name, value.into()));
    }

    /// Status line, headers and (unless `head_only`) the in-memory body. `framing`: add a
    /// `Content-Length` of the body (the file path adds its own framing headers).
    fn serialize(&self, keep_alive: bool, head_only: bool, framing: bool) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        let _ = write!(
            out,
            "Date: {}\r\n",
            httpdate::fmt_http_date(SystemTime::now())
        );
        out.push_str("Server: ferry-fault\r\n");
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if framing && !matches!(self.status, 100..=199 | 204 | 304) {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if !keep_alive {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// How one requested range resolves against a file.
#[derive(Debug, PartialEq, Eq)]
enum RangeReq {
    /// Serve the whole representation with 200.
    Ignore,
    /// 416.
    Unsatisfiable,
    /// 206 for bytes `first..=last`.
    Single(u64, u64),
}

fn all_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_range(value: &str, total: u64) -> RangeReq {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeReq::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeReq::Ignore;
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs.as_slice() else {
        return RangeReq::Ignore;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeReq::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Some(n) = all_digits(last) else {
            return RangeReq::Ignore;
        };
        if n == 0 || total == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Single(total - n.min(total), total - 1);
    }
    let Some(start) = all_digits(first) else {
        return RangeReq::Ignore;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match all_digits(last) {
            Some(end) if end >= start => end,
            _ => return RangeReq::Ignore,
        }
    };
    if start >= total {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Single(start, end.min(total - 1))
}

/// Strong comparison of an entity-tag list (`If-Match`) against the current tag.
fn etag_list_matches(list: &str, current: Option<&str>) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || (current.is_some_and(|c| t == c) && !t.starts_with("W/")))
}

/// Where a body stops short, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Reset,
    Stall,
    Truncate,
}

/// Everything needed to write one file body.
struct BodyPlan {
    data: Bytes,
    chunked: bool,
    stop: Option<(u64, Stop)>,
    extra: u64,
    rate: Option<u64>,
}

async fn respond(stream: &mut TcpStream, req: &Request, conn_id: u64, shared: &Shared) -> After {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let is_get = req.method == "GET";
    let is_head = req.method == "HEAD";
    let (faults, fail_now) = {
        let mut plan = lock(&shared.plan);
        let fail = is_get && plan.gets_seen < u64::from(plan.faults.fail_first);
        if is_get {
            plan.gets_seen += 1;
        }
        (plan.faults.clone(), fail)
    };
    let keep_alive = req.keep_alive();
    ensure_digest(shared, req, &faults).await;

    let (resp, body) = build_response(req, &faults, fail_now, shared);
    let sent = Arc::new(AtomicU64::new(0));
    lock(&shared.log).push(LiveRecord {
        rec: RequestRecord {
            conn_id,
            method: req.method.clone(),
            path: req.target.clone(),
            range: req.header("range").map(str::to_string),
            if_range: req.header("if-range").map(str::to_string),
            headers: req.headers.clone(),
            status: resp.status,
            body_bytes: 0,
        },
        sent: Arc::clone(&sent),
    });

    let Some(body) = body else {
        // Generated response, or a file response to HEAD / 416 / 412: head (+ text body).
        let bytes = resp.serialize(keep_alive, is_head, resp.body_is_framed());
        if stream.write_all(&bytes).await.is_err() {
            return After::Gone;
        }
        return if keep_alive {
            After::KeepAlive
        } else {
            After::Close
        };
    };

    if stream
        .write_all(&resp.serialize(keep_alive, true, false))
        .await
        .is_err()
    {
        return After::Gone;
    }
    match write_body(stream, &body, shared, &sent).await {
        Err(_) => After::Gone,
        Ok(Some(Stop::Reset)) => After::Reset,
        Ok(Some(Stop::Stall)) => After::Stall,
        Ok(Some(Stop::Truncate)) => After::Close,
        // Garbage past Content-Length: the connection cannot be reused honestly.
        Ok(None) if body.extra > 0 && !body.chunked => After::Close,
        Ok(None) if keep_alive => After::KeepAlive,
        Ok(None) => After::Close,
    }
}

impl Response {
    /// Whether `serialize` should add `Content-Length` for the in-memory body: file
    /// responses set their own framing headers.
    fn body_is_framed(&self) -> bool {
        !self
            .headers
            .iter()
            .any(|(n, _)| *n == "Content-Length" || *n == "Transfer-Encoding")
    }
}

/// Decides the status and headers; returns a body plan when file content is to be sent.
fn build_response(
    req: &Request,
    faults: &Faults,
    fail_now: bool,
    shared: &Shared,
) -> (Response, Option<BodyPlan>) {
    let is_get = req.method == "GET";
    let is_head = req.method == "HEAD";
    if let Some(status) = faults.status_override {
        return (Response::text(status), None);
    }
    if fail_now {
        let status = if faults.fail_status == 0 {
            503
        } else {
            faults.fail_status
        };
        let mut resp = Response::text(status);
        if let Some(secs) = faults.retry_after {
            resp.header("Retry-After", secs.to_string());
        }
        return (resp, None);
    }
    if !is_get && !is_head {
        let mut resp = Response::text(405);
        resp.header("Allow", "GET, HEAD");
        return (resp, None);
    }
    let path = req.lookup_path();
    if let Some(rest) = path.strip_prefix("r/").filter(|_| faults.redirect_prefix) {
        // Keep the query of the original target.
        let query = req
            .target
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        let mut resp = Response::text(302);
        resp.header("Location", format!("/{rest}{query}"));
        return (resp, None);
    }
    let Some(file) = lock(&shared.files).get(&path).cloned() else {
        return (Response::text(404), None);
    };

    let total = file.data.len() as u64;
    let chunked = faults.no_content_length || (faults.extra_chunked && faults.extra_bytes > 0);
    let ranges = !faults.no_ranges && !faults.no_content_length;
    let current_etag = (!faults.no_validators).then(|| file.etag_header(faults.weak_etag));
    let strong_etag = (!faults.no_validators && !faults.weak_etag).then_some(file.etag.as_str());

    let mut resp = Response::new(200);
    resp.header("Content-Type", "application/octet-stream");
    if ranges {
        resp.header("Accept-Ranges", "bytes");
    }
    if let Some(tag) = &current_etag {
        resp.header("ETag", tag.clone());
        resp.header("Last-Modified", file.last_modified_str.clone());
    }
    if let Some(cd) = &faults.content_disposition {
        resp.header("Content-Disposition", cd.clone());
    }
    if faults.repr_digest || faults.corrupt_digest {
        resp.header("Repr-Digest", file.repr_digest(faults.corrupt_digest));
    }

    // Preconditions (RFC 9110 §13.2.2): If-Match, else If-Unmodified-Since.
    let precondition_failed = if let Some(list) = req.header("if-match") {
        !etag_list_matches(list, strong_etag)
    } else if let (Some(date), false) = (req.header("if-unmodified-since"), faults.no_validators) {
        httpdate::parse_http_date(date).is_ok_and(|d| file.last_modified > d)
    } else {
        false
    };
    if precondition_failed {
        let mut failed = Response::text(412);
        failed.headers.extend(
            resp.headers
                .iter()
                .filter(|(n, _)| *n == "ETag" || *n == "Last-Modified")
                .cloned(),
        );
        return (failed, None);
    }

    let mut first = 0;
    let mut last_excl = total;
    if let Some(range) = req.header("range").filter(|_| ranges && is_get) {
        let if_range_ok = match req.header("if-range") {
            None => true,
            Some(v) if v.starts_with('"') || v.starts_with("W/") => strong_etag == Some(v),
            Some(v) => {
                !faults.no_validators
                    && (v == file.last_modified_str
                        || httpdate::parse_http_date(v).is_ok_and(|d| d == file.last_modified))
            }
        };
        if if_range_ok {
            match parse_range(range, total) {
                RangeReq::Ignore => {}
                RangeReq::Unsatisfiable => {
                    resp.status = 416;
                    resp.header("Content-Range", format!("bytes */{total}"));
                    resp.header("Content-Length", "0");
                    return (resp, None);
                }
                RangeReq::Single(a, b) => {
                    resp.status = 206;
                    let shift = u64::from(faults.wrong_content_range);
                    resp.header(
                        "Content-Range",
                        format!("bytes {}-{}/{total}", a + shift, b + shift),
                    );
                    first = a;
                    last_excl = b + 1;
                }
            }
        }
    }
    let len = last_excl - first;
    if chunked {
        resp.header("Transfer-Encoding", "chunked");
    } else {
        resp.header("Content-Length", len.to_string());
    }
    if is_head {
        return (resp, None);
    }

    // Stop points: the earliest of reset, stall (only if it would come first and a stall
    // slot is free), truncate.
    let mut stop: Option<(u64, Stop)> = None;
    let mut consider = |at: u64, kind: Stop| {
        if at < len && stop.is_none_or(|(s, _)| at < s) {
            stop = Some((at, kind));
        }
    };
    if let Some((lo, hi)) = faults.reset_after {
        let at = rand::rng().random_range(lo.min(hi)..=lo.max(hi));
        consider(at, Stop::Reset);
    }
    if let Some(at) = faults.truncate_at {
        consider(at, Stop::Truncate);
    }
    if let Some(at) = faults
        .stall_after
        .filter(|&at| at < len && stop.is_none_or(|(s, _)| at < s))
    {
        let mut plan = lock(&shared.plan);
        let n = faults.stall_first_n;
        if n == 0 || plan.stalls_claimed < n {
            plan.stalls_claimed += 1;
            stop = Some((at, Stop::Stall));
        }
    }
    let body = BodyPlan {
        data: file.data.slice(first as usize..last_excl as usize),
        chunked,
        stop,
        extra: faults.extra_bytes,
        rate: match faults.slow_at_offset {
            Some((offset, rate)) if offset == first && rate > 0 => Some(rate),
            _ => faults.rate_per_conn.filter(|&r| r > 0),
        },
    };
    (resp, Some(body))
}

/// Writes a file body per `plan`. Returns the stop that ended it early, if any. Extra bytes
/// are written only after a complete body.
async fn write_body(
    stream: &mut TcpStream,
    plan: &BodyPlan,
    shared: &Shared,
    sent: &AtomicU64,
) -> std::io::Result<Option<Stop>> {
    let limit = plan.stop.map_or(plan.data.len() as u64, |(at, _)| at) as usize;
    let piece = match plan.rate {
        Some(rate) => (rate / 50).clamp(1, BODY_CHUNK as u64) as usize,
        None => BODY_CHUNK,
    };
    let start = tokio::time::Instant::now();
    let mut framed: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    while pos < limit {
        let n = piece.min(limit - pos);
        if let Some(rate) = plan.rate {
            let due = Duration::from_secs_f64(pos as f64 / rate as f64);
            tokio::time::sleep_until(start + due).await;
        }
        let data = &plan.data[pos..pos + n];
        if plan.chunked {
            framed.clear();
            framed.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            framed.extend_from_slice(data);
            framed.extend_from_slice(b"\r\n");
            stream.write_all(&framed).await?;
        } else {
            stream.write_all(data).await?;
        }
        shared.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
        sent.fetch_add(n as u64, Ordering::Relaxed);
        pos += n;
    }
    if let Some((_, kind)) = plan.stop {
        return Ok(Some(kind));
    }
    if plan.extra > 0 {
        let garbage: Vec<u8> = GARBAGE
            .iter()
            .copied()
            .cycle()
            .take(plan.extra as usize)
            .collect();
        for part in garbage.chunks(BODY_CHUNK) {
            if plan.chunked {
                stream
                    .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .await?;
                stream.write_all(part).await?;
                stream.write_all(b"\r\n").await?;
            } else {
                stream.write_all(part).await?;
            }
            shared
                .garbage_bytes
                .fetch_add(part.len() as u64, Ordering::Relaxed);
        }
    }
    if plan.chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Instant;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// A deterministic non-repeating test file.
    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn server(files: &[(&str, &[u8])], faults: Faults) -> FaultServer {
        FaultServer::start(FaultConfig {
            files: files
                .iter()
                .map(|(p, d)| (p.to_string(), d.to_vec()))
                .collect(),
            faults,
        })
        .await
    }

    /// A response as a raw client saw it.
    #[derive(Debug)]
    struct Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// The error that ended reading, if the stream did not end cleanly.
        error: Option<io::Error>,
    }

    impl Raw {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
        let text = std::str::from_utf8(head).expect("utf-8 head");
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        (status, headers)
    }

    fn decode_chunked(mut raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = find(raw, b"\r\n").expect("chunk size line");
            let size =
                usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap(), 16).unwrap();
            raw = &raw[line_end + 2..];
            if size == 0 {
                assert_eq!(raw, b"\r\n", "chunked terminator");
                return out;
            }
            out.extend_from_slice(&raw[..size]);
            assert_eq!(&raw[size..size + 2], b"\r\n");
            raw = &raw[size + 2..];
        }
    }

    /// Sends `request` on a new connection and reads until EOF or error (the request should
    /// carry `Connection: close` unless the server is expected to close).
    async fn exchange(addr: SocketAddr, request: &str) -> Raw {
        tokio::time::timeout(DEADLINE, async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut all = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let error = loop {
                match s.read(&mut chunk).await {
                    Ok(0) => break None,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                    Err(e) => break Some(e),
                }
            };
            let end = find(&all, b"\r\n\r\n").expect("a response head") + 4;
            let (status, headers) = parse_head(&all[..end]);
            Raw {
                status,
                headers,
                body: all[end..].to_vec(),
                error,
            }
        })
        .await
        .expect("exchange within the deadline")
    }

    async fn get(addr: SocketAddr, path: &str, extra_headers: &str) -> Raw {
        exchange(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra_headers}Connection: close\r\n\r\n"),
        )
        .await
    }

    /// Reads one Content-Length-framed response from a keep-alive connection.
    async fn read_one(s: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Raw {
        let mut chunk = vec![0u8; 16 * 1024];
        let end = loop {
            if let Some(p) = find(buf, b"\r\n\r\n") {
                break p + 4;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF inside a response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let (status, headers) = parse_head(&buf[..end]);
        buf.drain(..end);
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
            error: None,
        };
        let len: usize = if head_only {
            0
        } else {
            raw.header("content-length").unwrap().parse().unwrap()
        };
        while buf.len() < len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF inside a body");
            buf.extend_from_slice(&chunk[..n]);
        }
        raw.body = buf.drain(..len).collect();
        raw
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_get_head_and_keep_alive() {
        let data = content(200_000);
        let srv = server(&[("dir/f.bin", &data)], Faults::default()).await;
        assert_eq!(
            srv.url("/dir/f.bin"),
            format!("http://{}/dir/f.bin", srv.addr())
        );

        let mut s = TcpStream::connect(srv.addr()).await.unwrap();
        // Two requests pipelined in one write, then a HEAD, on one connection.
        s.write_all(
            b"GET /dir/f.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /dir/f.bin?x=1 HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let full = read_one(&mut s, &mut buf, false).await;
        assert_eq!(full.status, 200);
        assert_eq!(full.body, data);
        assert_eq!(full.header("accept-ranges"), Some("bytes"));
        assert_eq!(full.header("content-length"), Some("200000"));
        let etag = full.header("etag").unwrap();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        assert_eq!(Some(etag.to_string()), srv.etag("dir/f.bin"));
        assert!(httpdate::parse_http_date(full.header("last-modified").unwrap()).is_ok());
        assert!(full.header("date").is_some());
        let part = read_one(&mut s, &mut buf, false).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.body, &data[..10]);

        s.write_all(b"HEAD /dir/f.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n")
            .await
            .unwrap();
        let head = read_one(&mut s, &mut buf, true).await;
        assert_eq!(head.status, 200, "Range is ignored on HEAD");
        assert_eq!(head.header("content-length"), Some("200000"));
        assert_eq!(head.header("etag"), Some(etag));
        // Nothing after the HEAD response: the next bytes are the next response.
        s.write_all(
            b"GET /dir/f.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-3\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let last = read_one(&mut s, &mut buf, false).await;
        assert_eq!(last.status, 206);
        assert_eq!(last.body, &data[200_000 - 3..]);
        assert_eq!(last.header("connection"), Some("close"));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty() && buf.is_empty());

        assert_eq!(srv.connection_count(), 1);
        assert_eq!(srv.request_count(), 4);
        let log = srv.requests();
        assert_eq!(log.len(), 4);
        assert!(log.iter().all(|r| r.conn_id == 1));
        assert_eq!(
            log.iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 206, 200, 206]
        );
        assert_eq!(log[1].path, "/dir/f.bin?x=1");
        assert_eq!(log[1].range.as_deref(), Some("bytes=0-9"));
        assert_eq!(log[1].header("Host"), Some("t"));
        assert_eq!(log[2].method, "HEAD");
        assert_eq!(log[2].body_bytes, 0);
        assert_eq!(srv.body_bytes_sent(), 200_000 + 10 + 3);
    }

    #[tokio::test]
    async fn range_forms_and_416() {
        let data = content(100);
        let srv = server(&[("f", &data), ("empty", &[])], Faults::default()).await;
        let addr = srv.addr();
        for (range, first, last) in [
            ("bytes=10-19", 10, 19),
            ("bytes=90-", 90, 99),
            ("bytes=-5", 95, 99),
            ("bytes=-500", 0, 99),
            ("bytes=5-1000", 5, 99),
            ("BYTES = 0-0", 0, 0),
        ] {
            let r = get(addr, "/f", &format!("Range: {range}\r\n")).await;
            assert_eq!(r.status, 206, "{range}");
            assert_eq!(
                r.header("content-range").unwrap(),
                format!("bytes {first}-{last}/100"),
                "{range}"
            );
            assert_eq!(r.body, &data[first..=last], "{range}");
            assert_eq!(
                r.header("content-length").unwrap(),
                (last - first + 1).to_string()
            );
        }
        for range in [
            "bytes=0-1,5-6",
            "bytes=5-1",
            "items=0-1",
            "bytes=x-",
            "bytes=+1-2",
        ] {
            let r = get(addr, "/f", &format!("Range: {range}\r\n")).await;
            assert_eq!(r.status, 200, "{range}");
            assert_eq!(r.body, data, "{range}");
        }
        for (path, range, total) in [
            ("/f", "bytes=100-", 100),
            ("/f", "bytes=200-300", 100),
            ("/f", "bytes=-0", 100),
            ("/empty", "bytes=0-", 0),
        ] {
            let r = get(addr, path, &format!("Range: {range}\r\n")).await;
            assert_eq!(r.status, 416, "{range}");
            assert_eq!(
                r.header("content-range").unwrap(),
                format!("bytes */{total}")
            );
            assert!(r.body.is_empty());
        }
    }

    #[tokio::test]
    async fn if_range_if_match_and_set_file() {
        let data = content(1000);
        let srv = server(&[("f", &data)], Faults::default()).await;
        let addr = srv.addr();
        let etag = srv.etag("f").unwrap();
        let lm = srv.last_modified("f").unwrap();

        let r = get(
            addr,
            "/f",
            &format!("Range: bytes=10-19\r\nIf-Range: {etag}\r\n"),
        )
        .await;
        assert_eq!((r.status, r.body.len()), (206, 10));
        let r = get(
            addr,
            "/f",
            &format!("Range: bytes=10-19\r\nIf-Range: {lm}\r\n"),
        )
        .await;
        assert_eq!((r.status, r.body.len()), (206, 10));
        let r = get(addr, "/f", "Range: bytes=10-19\r\nIf-Range: \"other\"\r\n").await;
        assert_eq!((r.status, r.body.len()), (200, 1000));
        let r = get(
            addr,
            "/f",
            "Range: bytes=10-19\r\nIf-Range: Thu, 01 Jan 2015 00:00:00 GMT\r\n",
        )
        .await;
        assert_eq!((r.status, r.body.len()), (200, 1000));
        let r = get(addr, "/f", &format!("If-Match: {etag}\r\n")).await;
        assert_eq!(r.status, 200);
        let r = get(addr, "/f", "If-Match: \"nope\"\r\n").await;
        assert_eq!(r.status, 412);

        // The remote file changes: new ETag, later Last-Modified; old validators fail.
        let new = content(2000);
        srv.set_file("f", new.clone());
        let etag2 = srv.etag("f").unwrap();
        let lm2 = srv.last_modified("f").unwrap();
        assert_ne!(etag, etag2);
        assert!(httpdate::parse_http_date(&lm2).unwrap() > httpdate::parse_http_date(&lm).unwrap());
        let r = get(
            addr,
            "/f",
            &format!("Range: bytes=10-19\r\nIf-Range: {etag}\r\n"),
        )
        .await;
        assert_eq!((r.status, r.body.len()), (200, 2000));
        assert_eq!(r.header("etag"), Some(etag2.as_str()));
        let r = get(
            addr,
            "/f",
            &format!("Range: bytes=10-19\r\nIf-Range: {lm}\r\n"),
        )
        .await;
        assert_eq!(r.status, 200);
        let r = get(addr, "/f", &format!("If-Match: {etag}\r\n")).await;
        assert_eq!(r.status, 412);
        let r = get(addr, "/f", &format!("If-Unmodified-Since: {lm}\r\n")).await;
        assert_eq!(r.status, 412);
        let r = get(
            addr,
            "/f",
            &format!("Range: bytes=10-19\r\nIf-Range: {etag2}\r\n"),
        )
        .await;
        assert_eq!((r.status, r.body.as_slice()), (206, &new[10..20]));

        // Same content again: same tag. Same content on another server: same tag, unless
        // that path's content was changed there.
        srv.set_file("f", new.clone());
        assert_eq!(srv.etag("f"), Some(etag2.clone()));
        let other = server(&[("f", &new), ("g", &data)], Faults::default()).await;
        assert_ne!(other.etag("f"), Some(etag2.clone()), "version 0 vs 1");
        other.set_file("g", new.clone());
        assert_eq!(other.etag("g"), Some(etag2.clone()));
        // A one-byte change in a big (sampled) file changes the tag.
        let mut big = content(10 << 20);
        other.set_file("big", big.clone());
        let big1 = other.etag("big").unwrap();
        big[12_345] ^= 1;
        other.set_file("big", big);
        assert_ne!(other.etag("big").unwrap(), big1);

        // Weak ETag: sent as W/, never satisfies If-Range.
        srv.set_faults(Faults {
            weak_etag: true,
            ..Default::default()
        });
        let weak = srv.etag("f").unwrap();
        assert_eq!(weak, format!("W/{etag2}"));
        for tag in [&weak, &etag2] {
            let r = get(
                addr,
                "/f",
                &format!("Range: bytes=10-19\r\nIf-Range: {tag}\r\n"),
            )
            .await;
            assert_eq!(r.status, 200, "{tag}");
            assert_eq!(r.header("etag"), Some(weak.as_str()));
        }
        // No validators: none sent, If-Range never matches.
        srv.set_faults(Faults {
            no_validators: true,
            ..Default::default()
        });
        let r = get(
            addr,
            "/f",
            &format!("Range: bytes=10-19\r\nIf-Range: {lm2}\r\n"),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.header("etag").is_none() && r.header("last-modified").is_none());
        let r = get(addr, "/f", "Range: bytes=10-19\r\n").await;
        assert_eq!(r.status, 206);
        assert!(srv.remove_file("f"));
        assert_eq!(get(addr, "/f", "").await.status, 404);
    }

    #[tokio::test]
    async fn errors_redirects_and_overrides() {
        let data = content(100);
        let srv = server(
            &[("a b/f", &data)],
            Faults {
                redirect_prefix: true,
                ..Default::default()
            },
        )
        .await;
        let addr = srv.addr();
        assert_eq!(get(addr, "/a%20b/f", "").await.status, 200);
        assert_eq!(get(addr, "/missing", "").await.status, 404);
        let r = get(addr, "/r/a%20b/f?q=1", "").await;
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some("/a b/f?q=1"));
        let r = exchange(
            addr,
            "DELETE /a%20b/f HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        let r = exchange(addr, "garbage\r\n\r\n").await;
        assert_eq!(r.status, 400);

        srv.set_faults(Faults {
            status_override: Some(403),
            ..Default::default()
        });
        let r = get(addr, "/a%20b/f", "").await;
        assert_eq!(r.status, 403);
        assert_eq!(r.body, b"403 Forbidden\n");
        assert_eq!(srv.body_bytes_sent(), 100, "text bodies are not counted");
    }

    #[tokio::test]
    async fn fail_first_with_retry_after() {
        let data = content(100);
        let srv = server(
            &[("f", &data)],
            Faults {
                fail_first: 2,
                fail_status: 503,
                retry_after: Some(7),
                ..Default::default()
            },
        )
        .await;
        let addr = srv.addr();
        let head = exchange(addr, "HEAD /f HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert_eq!(head.status, 200, "HEAD is not counted");
        for _ in 0..2 {
            let r = get(addr, "/f", "").await;
            assert_eq!(r.status, 503);
            assert_eq!(r.header("retry-after"), Some("7"));
        }
        assert_eq!(get(addr, "/f", "").await.status, 200);
        // A new plan starts its counter again; fail_status 0 means 503.
        srv.set_faults(Faults {
            fail_first: 1,
            ..Default::default()
        });
        let r = get(addr, "/f", "").await;
        assert_eq!(r.status, 503);
        assert!(r.header("retry-after").is_none());
        assert_eq!(get(addr, "/f", "").await.status, 200);
        let statuses: Vec<u16> = srv.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 503, 503, 200, 503, 200]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_aborts_mid_body() {
        let data = content(1 << 20);
        let srv = server(
            &[("f", &data)],
            Faults {
                reset_after: Some((100_000, 200_000)),
                ..Default::default()
            },
        )
        .await;
        for _ in 0..3 {
            let before = srv.body_bytes_sent();
            let r = get(srv.addr(), "/f", "").await;
            assert_eq!(r.status, 200);
            let err = r.error.expect("the read ends with an error");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            let sent = srv.body_bytes_sent() - before;
            assert!((100_000..=200_000).contains(&sent), "{sent}");
            assert!(r.body.len() as u64 <= sent);
            eprintln!("reset: sent {sent}, received {}", r.body.len());
            assert_eq!(r.body, &data[..r.body.len()]);
        }
        // A range shorter than the reset point completes.
        let r = get(srv.addr(), "/f", "Range: bytes=0-999\r\n").await;
        assert!(r.error.is_none());
        assert_eq!(r.body, &data[..1000]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stall_keeps_socket_open_first_n_only() {
        let data = content(1 << 20);
        let srv = server(
            &[("f", &data)],
            Faults {
                stall_after: Some(10_000),
                stall_first_n: 1,
                ..Default::default()
            },
        )
        .await;
        // A short range does not reach the stall point and does not use up the budget.
        let r = get(srv.addr(), "/f", "Range: bytes=0-99\r\n").await;
        assert_eq!(r.body, &data[..100]);

        let mut s = TcpStream::connect(srv.addr()).await.unwrap();
        s.write_all(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let head_end = tokio::time::timeout(DEADLINE, async {
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&chunk[..n]);
                if let Some(p) = find(&got, b"\r\n\r\n").filter(|p| got.len() >= p + 4 + 10_000) {
                    break p + 4;
                }
            }
        })
        .await
        .expect("10 000 body bytes arrive");
        assert_eq!(&got[head_end..], &data[..10_000]);
        // Then nothing, while the socket stays open.
        let quiet = tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await;
        assert!(quiet.is_err(), "no bytes after the stall point: {quiet:?}");
        let stalled = srv.requests().last().unwrap().clone();
        assert_eq!((stalled.status, stalled.body_bytes), (200, 10_000));

        // The next response is not stalled.
        let r = get(srv.addr(), "/f", "").await;
        assert_eq!(r.body, data);
        drop(s);
    }

    #[tokio::test]
    async fn truncate_closes_cleanly_short_of_length() {
        let data = content(100_000);
        let srv = server(
            &[("f", &data)],
            Faults {
                truncate_at: Some(5_000),
                ..Default::default()
            },
        )
        .await;
        let r = get(srv.addr(), "/f", "").await;
        assert!(r.error.is_none(), "clean EOF: {:?}", r.error);
        assert_eq!(r.header("content-length"), Some("100000"));
        assert_eq!(r.body, &data[..5_000]);
        let r = get(srv.addr(), "/f", "Range: bytes=1000-2999\r\n").await;
        assert_eq!(r.header("content-length"), Some("2000"));
        assert_eq!(r.body, &data[1000..6000][..2000], "short range unaffected");
        assert_eq!(srv.body_bytes_sent(), 7_000);
    }

    #[tokio::test]
    async fn extra_bytes_raw_and_chunked() {
        let data = content(1000);
        let srv = server(
            &[("f", &data)],
            Faults {
                extra_bytes: 20,
                ..Default::default()
            },
        )
        .await;
        // Keep-alive request: the server sends the garbage and closes anyway.
        let r = exchange(srv.addr(), "GET /f HTTP/1.1\r\nRange: bytes=0-99\r\n\r\n").await;
        assert_eq!(r.header("content-length"), Some("100"));
        assert_eq!(&r.body[..100], &data[..100]);
        assert_eq!(&r.body[100..], b"GARBAGE!GARBAGE!GARB");
        assert_eq!((srv.body_bytes_sent(), srv.garbage_bytes_sent()), (100, 20));

        srv.set_faults(Faults {
            extra_bytes: 20,
            extra_chunked: true,
            ..Default::default()
        });
        let r = get(srv.addr(), "/f", "Range: bytes=0-99\r\n").await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 0-99/1000"));
        assert!(r.header("content-length").is_none());
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        let body = decode_chunked(&r.body);
        assert_eq!(body.len(), 120);
        assert_eq!(&body[..100], &data[..100]);
    }

    #[tokio::test]
    async fn no_content_length_no_ranges_wrong_content_range() {
        let data = content(300_000);
        let srv = server(
            &[("f", &data)],
            Faults {
                no_content_length: true,
                ..Default::default()
            },
        )
        .await;
        let addr = srv.addr();
        let r = get(addr, "/f", "Range: bytes=0-9\r\n").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert!(r.header("content-length").is_none() && r.header("accept-ranges").is_none());
        assert_eq!(decode_chunked(&r.body), data);

        srv.set_faults(Faults {
            no_ranges: true,
            ..Default::default()
        });
        let r = get(addr, "/f", "Range: bytes=0-9\r\n").await;
        assert_eq!(r.status, 200);
        assert!(r.header("accept-ranges").is_none());
        assert_eq!(r.header("content-length"), Some("300000"));
        assert_eq!(r.body, data);

        srv.set_faults(Faults {
            wrong_content_range: true,
            ..Default::default()
        });
        let r = get(addr, "/f", "Range: bytes=10-19\r\n").await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 11-20/300000"));
        assert_eq!(r.body, &data[10..20]);
    }

    #[tokio::test]
    async fn digest_disposition_and_rate() {
        let data = content(40_000);
        let srv = server(
            &[("f", &data)],
            Faults {
                repr_digest: true,
                content_disposition: Some("attachment; filename=\"x y.bin\"".into()),
                ..Default::default()
            },
        )
        .await;
        let expected = format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data))
        );
        let r = get(srv.addr(), "/f", "Range: bytes=0-9\r\n").await;
        assert_eq!(r.header("repr-digest"), Some(expected.as_str()));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"x y.bin\"")
        );
        srv.set_faults(Faults {
            corrupt_digest: true,
            rate_per_conn: Some(200_000),
            ..Default::default()
        });
        let started = Instant::now();
        let r = get(srv.addr(), "/f", "").await;
        let elapsed = started.elapsed();
        let corrupt = r.header("repr-digest").unwrap();
        assert!(
            corrupt.starts_with("sha-256=:") && corrupt != expected,
            "{corrupt}"
        );
        assert_eq!(r.body, data);
        // 40 000 bytes at 200 000 B/s: the last piece is due at ~0.196 s.
        assert!(elapsed >= Duration::from_millis(180), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_body_at_speed() {
        let data = content(16 << 20);
        let srv = server(&[("big", &data)], Faults::default()).await;
        let r = get(srv.addr(), "/big", "").await;
        assert_eq!(r.body.len(), data.len());
        assert!(r.body == data);
        assert_eq!(srv.body_bytes_sent(), 16 << 20);
    }

    #[test]
    fn blocking_server_with_curl() {
        let data = content(5000);
        let srv = FaultServer::start_blocking(FaultConfig {
            files: vec![("f.bin".into(), data.clone())],
            faults: Faults::default(),
        });
        // Usable from plain threads without a runtime.
        let mut s = std::net::TcpStream::connect(srv.addr()).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET /f.bin HTTP/1.1\r\nRange: bytes=-10\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        assert!(all.starts_with(b"HTTP/1.1 206 Partial Content\r\n"));
        assert!(all.ends_with(&data[4990..]));

        if !std::path::Path::new("/usr/bin/curl").exists() {
            eprintln!("curl not found; skipping the curl half");
            return;
        }
        let out = std::process::Command::new("/usr/bin/curl")
            .args(["-sS", "-r", "100-199", "-o", "-", "-w", "%{http_code}"])
            .arg(srv.url("f.bin"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let (body, code) = out.stdout.split_at(100);
        assert_eq!(body, &data[100..200]);
        assert_eq!(code, b"206");
        // Two URLs in one curl run reuse the keep-alive connection.
        let out = std::process::Command::new("/usr/bin/curl")
            .args(["-sS", "-o", "/dev/null", "-o", "/dev/null"])
            .arg(srv.url("f.bin"))
            .arg(srv.url("f.bin"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(srv.connection_count(), 3);
        assert_eq!(srv.body_bytes_sent(), 10 + 100 + 2 * 5000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_closes_stalled_connections_and_listener() {
        let data = content(100_000);
        let srv = server(
            &[("f", &data)],
            Faults {
                stall_after: Some(0),
                ..Default::default()
            },
        )
        .await;
        let addr = srv.addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /f HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        tokio::time::timeout(DEADLINE, async {
            while find(&got, b"\r\n\r\n").is_none() {
                let n = s.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("the head arrives before the stall");
        drop(srv);
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("the stalled connection is closed when the server is dropped");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    #[test]
    fn range_parser() {
        assert_eq!(parse_range("bytes=0-", 10), RangeReq::Single(0, 9));
        assert_eq!(parse_range("bytes= 3 - 4 ", 10), RangeReq::Single(3, 4));
        assert_eq!(parse_range("bytes=-0", 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=10-", 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=-", 10), RangeReq::Ignore);
        assert_eq!(parse_range("bytes=1-2,3-4", 10), RangeReq::Ignore);
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
    }
}
