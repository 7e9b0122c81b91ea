//! Resumable uploads to any tus 1.0 server (`ferry put`): one file sent over several
//! connections as partial uploads joined by a final one (concatenation) when the server allows,
//! else as one upload; every PATCH checksummed with the strongest algorithm the server offers;
//! progress recorded in a local journal so a rerun continues from the server's offsets.
//!
//! ```no_run
//! # async fn f() -> Result<(), ferry_core::Error> {
//! use ferry_core::upload::Upload;
//! use tokio_util::sync::CancellationToken;
//! let done = Upload::builder("big.iso", "http://127.0.0.1:8080/uploads/")
//!     .connections(4)
//!     .token("secret")
//!     .build()?
//!     .run(CancellationToken::new())
//!     .await?;
//! println!("uploaded to {}", done.url);
//! # Ok(()) }
//! ```

pub mod journal;
pub mod tus;

use crate::error::Error;
use crate::events::{Event, EventSink};
use crate::limits::{RateLimiter, RetryPolicy};
use crate::source::{ClientOptions, build_client};
use crate::verify::Algorithm;
use journal::{FileIdentity, Part, UploadJournal};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tus::{Capabilities, TusClient, TusFailure};
use url::Url;

/// Parts are at least this large: smaller files go over one connection.
const MIN_PART: u64 = 8 << 20;
/// Files up to this size are sent inside the creation request when the server allows.
const SMALL_FILE: u64 = 1 << 20;

/// Settings of one upload.
#[derive(Debug, Clone)]
struct Config {
    file: PathBuf,
    endpoint: String,
    remote_name: Option<String>,
    remote_path: Option<String>,
    connections: usize,
    chunk_size: Option<u64>,
    overwrite: bool,
    headers: Vec<(String, String)>,
    token: Option<String>,
    limiter: Option<Arc<RateLimiter>>,
    retry: RetryPolicy,
    events: EventSink,
    journal_dir: Option<PathBuf>,
    stall_timeout: Duration,
    connect_timeout: Duration,
}

/// Builds an [`Upload`].
#[derive(Debug, Clone)]
pub struct UploadBuilder {
    cfg: Config,
}

impl UploadBuilder {
    /// Connections (partial uploads) for one file; 1 sends one sequential upload.
    pub fn connections(mut self, n: usize) -> Self {
        self.cfg.connections = n.max(1);
        self
    }
    /// Bytes per PATCH (each with its own checksum). Default: a sixteenth of a part, between
    /// 1 and 32 MiB, so an interrupted PATCH loses little and requests stay large.
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.cfg.chunk_size = Some(bytes.max(1));
        self
    }
    /// The name on the server (metadata `filename`); default: the file's own name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.remote_name = Some(name.into());
        self
    }
    /// A relative path with folders on the server (metadata `path`), e.g. for folder uploads.
    pub fn remote_path(mut self, path: impl Into<String>) -> Self {
        self.cfg.remote_path = Some(path.into());
        self
    }
    /// Ask the server to replace an existing file (metadata `overwrite: true`).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.cfg.overwrite = yes;
        self
    }
    /// Sent as `Authorization: Bearer TOKEN`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = Some(token.into());
        self
    }
    /// An extra header on every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.cfg.headers.push((name.into(), value.into()));
        self
    }
    pub fn limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.cfg.limiter = Some(limiter);
        self
    }
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.cfg.retry = policy;
        self
    }
    pub fn events(mut self, sink: EventSink) -> Self {
        self.cfg.events = sink;
        self
    }
    /// Where resume journals live (default: the user's data directory).
    pub fn journal_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cfg.journal_dir = Some(dir.into());
        self
    }
    /// A PATCH that moves no byte for this long is dropped and retried.
    pub fn stall_timeout(mut self, d: Duration) -> Self {
        self.cfg.stall_timeout = d;
        self
    }
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.cfg.connect_timeout = d;
        self
    }

    pub fn build(self) -> Result<Upload, Error> {
        let endpoint = Url::parse(&self.cfg.endpoint)
            .map_err(|e| Error::Usage(format!("invalid URL {:?}: {e}", self.cfg.endpoint)))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(Error::Usage(format!(
                "{endpoint}: only http and https tus endpoints are supported"
            )));
        }
        for (k, v) in &self.cfg.headers {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::Usage(format!("invalid header name {k:?}")))?;
            HeaderValue::from_str(v)
                .map_err(|_| Error::Usage(format!("invalid value for header {k}")))?;
        }
        Ok(Upload {
            cfg: Arc::new(self.cfg),
            endpoint,
        })
    }
}

/// One file to upload; [`run`](Upload::run) does it (and resumes an earlier run).
#[derive(Debug, Clone)]
pub struct Upload {
    cfg: Arc<Config>,
    endpoint: Url,
}

/// What a finished upload did.
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    /// The upload URL (the final one for a concatenated upload).
    pub url: String,
    pub bytes: u64,
    /// Bytes the server had already from an earlier run.
    pub resumed: u64,
    /// Bytes sent in this run (including any re-sent after errors).
    pub sent: u64,
    pub secs: f64,
    pub checksum: Option<&'static str>,
}

/// Live progress of one part.
struct PartProgress {
    /// Offset the server confirmed.
    acked: AtomicU64,
    /// Bytes of the PATCH in flight that have left.
    inflight: AtomicU64,
    len: u64,
}

/// State shared by the part tasks of one upload.
struct Shared {
    cfg: Arc<Config>,
    file: PathBuf,
    display: String,
    tus: TusClient,
    caps: Capabilities,
    algo: Option<Algorithm>,
    chunk: u64,
    /// `Upload-Metadata` of the upload (or of the final upload joining the parts).
    metadata: String,
    journal: Mutex<UploadJournal>,
    journal_path: PathBuf,
    progress: Vec<PartProgress>,
    sent: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Upload {
    /// Upload `file` to the tus endpoint `endpoint`.
    pub fn builder(file: impl Into<PathBuf>, endpoint: impl Into<String>) -> UploadBuilder {
        UploadBuilder {
            cfg: Config {
                file: file.into(),
                endpoint: endpoint.into(),
                remote_name: None,
                remote_path: None,
                connections: 4,
                chunk_size: None,
                overwrite: false,
                headers: Vec::new(),
                token: None,
                limiter: None,
                retry: RetryPolicy::default(),
                events: EventSink::default(),
                journal_dir: None,
                stall_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(15),
            },
        }
    }

    fn client(&self) -> Result<TusClient, Error> {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.cfg.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).expect("checked in build"),
                HeaderValue::from_str(v).expect("checked in build"),
            );
        }
        if let Some(t) = &self.cfg.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                Error::Usage("the token has characters a header cannot carry".into())
            })?;
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let client = build_client(&ClientOptions {
            connect_timeout: self.cfg.connect_timeout,
            ..Default::default()
        })?;
        Ok(TusClient {
            client,
            endpoint: self.endpoint.clone(),
            headers,
        })
    }

    /// The remote name: `--name`, else the file's name.
    fn remote(&self) -> Result<String, Error> {
        if let Some(p) = &self.cfg.remote_path {
            return Ok(p.clone());
        }
        if let Some(n) = &self.cfg.remote_name {
            return Ok(n.clone());
        }
        self.cfg
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage(format!("{} has no file name", self.cfg.file.display())))
    }

    fn metadata(&self, remote: &str) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let base = remote.rsplit('/').next().unwrap_or(remote);
        pairs.push(("filename", base));
        if self.cfg.remote_path.is_some() {
            pairs.push(("path", remote));
        }
        if self.cfg.overwrite {
            pairs.push(("overwrite", "true"));
        }
        tus::metadata(&pairs)
    }

    /// Runs (or resumes) the upload until it is complete, fails, or `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) -> Result<UploadOutcome, Error> {
        let started = Instant::now();
        let file =
            std::fs::canonicalize(&self.cfg.file).map_err(|e| Error::io(&self.cfg.file, e))?;
        let display = self.cfg.file.display().to_string();
        let identity = {
            let f = file.clone();
            tokio::task::spawn_blocking(move || FileIdentity::of(&f))
                .await
                .map_err(|e| Error::Setup(e.to_string()))??
        };
        let size = identity.size;
        let remote = self.remote()?;
        let tus = self.client()?;
        let caps = retrying(&self.cfg, &display, &cancel, || tus.options()).await?;
        if let Some(max) = caps.max_size
            && size > max
        {
            return Err(Error::HttpStatus {
                url: self.endpoint.to_string(),
                status: 413,
                hint: format!(": the server accepts at most {max} bytes; the file has {size}"),
            });
        }
        let dir = self
            .cfg
            .journal_dir
            .clone()
            .unwrap_or_else(journal::default_dir);
        let journal_path = journal::path_for(&dir, self.endpoint.as_str(), &file);

        // An earlier run of the same upload?
        let mut journal = match journal::load(&journal_path) {
            Some(j) if j.same_file(&identity) && j.remote == remote && !j.parts.is_empty() => j,
            Some(old) => {
                if !old.same_file(&identity) {
                    self.cfg.events.emit(Event::Warning {
                        file: display.clone(),
                        message: "the file changed since its upload began; starting again".into(),
                    });
                }
                for p in old
                    .parts
                    .iter()
                    .map(|p| p.url.as_str())
                    .chain(old.final_url.as_deref())
                {
                    if let Ok(u) = Url::parse(p) {
                        let _ = tus.terminate(&u).await;
                    }
                }
                journal::remove(&journal_path);
                UploadJournal::new(self.endpoint.as_str(), &file, &identity, &remote)
            }
            None => UploadJournal::new(self.endpoint.as_str(), &file, &identity, &remote),
        };
        let resuming = !journal.parts.is_empty();

        let wants = self.cfg.connections;
        let parallel_ok = caps.has("concatenation");
        if wants > 1 && !parallel_ok && !resuming {
            self.cfg.events.emit(Event::Warning {
                file: display.clone(),
                message: "the server does not support concatenation (parallel uploads); sending over one connection".into(),
            });
        }
        let metadata = self.metadata(&remote);
        let mut first_offset = None;
        let mut presend = 0;
        if !resuming {
            let n = if wants > 1 && parallel_ok {
                (size / MIN_PART).clamp(1, wants as u64)
            } else {
                1
            };
            if n == 1 {
                let small = size <= SMALL_FILE && size > 0 && caps.has("creation-with-upload");
                let body = if small {
                    let f = file.clone();
                    Some(bytes::Bytes::from(
                        tokio::fs::read(&f).await.map_err(|e| Error::io(&f, e))?,
                    ))
                } else {
                    None
                };
                let (url, offset) = retrying(&self.cfg, &display, &cancel, || {
                    tus.create(Some(size), &metadata, None, body.clone())
                })
                .await?;
                presend = body.as_ref().map_or(0, |b| b.len() as u64);
                first_offset = Some(offset);
                journal.parts.push(Part {
                    url: url.to_string(),
                    start: 0,
                    end: size,
                });
            } else {
                for (start, end) in split(size, n) {
                    let (url, _) = retrying(&self.cfg, &display, &cancel, || {
                        tus.create(Some(end - start), "", Some("partial"), None)
                    })
                    .await?;
                    journal.parts.push(Part {
                        url: url.to_string(),
                        start,
                        end,
                    });
                }
            }
            journal::save(&journal_path, &journal)?;
        }

        let longest = journal
            .parts
            .iter()
            .map(|p| p.end - p.start)
            .max()
            .unwrap_or(0);
        let chunk = self
            .cfg
            .chunk_size
            .unwrap_or_else(|| (longest / 16).clamp(1 << 20, 32 << 20));
        let progress = journal
            .parts
            .iter()
            .map(|p| PartProgress {
                acked: AtomicU64::new(0),
                inflight: AtomicU64::new(0),
                len: p.end - p.start,
            })
            .collect();
        let parts = journal.parts.clone();
        let shared = Arc::new(Shared {
            cfg: self.cfg.clone(),
            file: file.clone(),
            display: display.clone(),
            algo: caps.best_checksum().filter(|_| caps.has("checksum")),
            caps,
            tus,
            chunk,
            metadata: metadata.clone(),
            journal: Mutex::new(journal),
            journal_path: journal_path.clone(),
            progress,
            sent: Arc::new(AtomicU64::new(presend)),
            // The parts stop together on the first error without touching the caller's token.
            cancel: cancel.child_token(),
        });

        // Where each part stands on the server.
        let mut offsets = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let off = match first_offset {
                Some(o) if i == 0 => o,
                _ => shared.offset_of(i, p).await?,
            };
            shared.progress[i].acked.store(off, Ordering::Relaxed);
            offsets.push(off);
        }
        let resumed: u64 = offsets.iter().sum();
        self.cfg.events.emit(Event::Start {
            url: self.endpoint.to_string(),
            file: display.clone(),
            total: Some(size),
            resumed,
            connections: parts.len(),
            ranges: parts.len() > 1,
        });

        let reporter = tokio::spawn(report(shared.clone()));
        let mut tasks = Vec::new();
        for (i, off) in offsets.into_iter().enumerate() {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move { s.send_part(i, off).await }));
        }
        let mut result = Ok(());
        for t in tasks {
            let r = t.await.unwrap_or_else(|e| Err(Error::Setup(e.to_string())));
            if let Err(e) = r {
                // The first error wins; the others stop with it.
                if result.is_ok() {
                    shared.cancel.cancel();
                    result = Err(e);
                }
            }
        }
        reporter.abort();
        result?;

        let url = if parts.len() > 1 {
            shared.finish_concatenation(size).await?
        } else {
            parts[0].url.clone()
        };
        journal::remove(&journal_path);
        let sent = shared.sent.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        self.cfg.events.emit(Event::Done {
            file: display,
            bytes: size,
            fetched: sent,
            secs,
            verified: shared
                .algo
                .map(|a| vec![a.tus_name().to_string()])
                .unwrap_or_default(),
        });
        Ok(UploadOutcome {
            url,
            bytes: size,
            resumed,
            sent,
            secs,
            checksum: shared.algo.map(Algorithm::tus_name),
        })
    }
}

/// `n` nearly equal ranges covering `0..size`.
fn split(size: u64, n: u64) -> Vec<(u64, u64)> {
    let base = size / n;
    let extra = size % n;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..n {
        let len = base + u64::from(i < extra);
        out.push((start, start + len));
        start += len;
    }
    out
}

impl Shared {
    fn url(&self, i: usize) -> Result<Url, Error> {
        let raw = self.journal.lock().expect("journal lock").parts[i]
            .url
            .clone();
        Url::parse(&raw).map_err(|e| Error::Protocol {
            url: raw,
            detail: format!("bad upload URL in the journal: {e}"),
        })
    }

    /// The server's offset of part `i`; a part the server forgot is created again.
    async fn offset_of(&self, i: usize, part: &Part) -> Result<u64, Error> {
        let url = self.url(i)?;
        match retrying_gone(&self.cfg, &self.display, &self.cancel, || {
            self.tus.head(&url)
        })
        .await?
        {
            Some(state) => Ok(state.offset.unwrap_or(0).min(part.end - part.start)),
            None => {
                self.recreate(i).await?;
                Ok(0)
            }
        }
    }

    /// Creates part `i` again (the server forgot it) and records its new URL.
    async fn recreate(&self, i: usize) -> Result<(), Error> {
        let (start, end, n) = {
            let j = self.journal.lock().expect("journal lock");
            (j.parts[i].start, j.parts[i].end, j.parts.len())
        };
        self.cfg.events.emit(Event::Warning {
            file: self.display.clone(),
            message: "the server no longer has this upload; starting it again".into(),
        });
        let (url, _) = if n == 1 {
            retrying(&self.cfg, &self.display, &self.cancel, || {
                self.tus
                    .create(Some(end - start), &self.metadata, None, None)
            })
            .await?
        } else {
            retrying(&self.cfg, &self.display, &self.cancel, || {
                self.tus
                    .create(Some(end - start), "", Some("partial"), None)
            })
            .await?
        };
        let snapshot = {
            let mut j = self.journal.lock().expect("journal lock");
            j.parts[i].url = url.to_string();
            j.final_url = None;
            j.clone()
        };
        journal::save(&self.journal_path, &snapshot)
    }

    /// Sends part `i` from `offset` to its end, chunk by chunk.
    async fn send_part(&self, i: usize, mut offset: u64) -> Result<(), Error> {
        let (start, end) = {
            let j = self.journal.lock().expect("journal lock");
            (j.parts[i].start, j.parts[i].end)
        };
        let len = end - start;
        let prog = &self.progress[i];
        let mut failures = 0u32;
        let mut recreated = 0;
        let mut url = self.url(i)?;
        // The digest of the next chunk is computed while the current one is on the wire, so
        // hashing never leaves the connection idle: (offset, length, digest task).
        let mut ahead: Option<(u64, u64, tokio::task::JoinHandle<std::io::Result<String>>)> = None;
        while offset < len {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let n = self.chunk.min(len - offset);
            let checksum = match self.algo {
                Some(algo) => {
                    let task = match ahead.take() {
                        Some((o, l, task)) if o == offset && l == n => task,
                        other => {
                            if let Some((_, _, stale)) = other {
                                stale.abort();
                            }
                            self.digest_task(algo, start + offset, n)
                        }
                    };
                    let digest = task
                        .await
                        .map_err(|e| Error::Setup(e.to_string()))?
                        .map_err(|e| Error::io(&self.file, e))?;
                    let next = offset + n;
                    if next < len {
                        let m = self.chunk.min(len - next);
                        ahead = Some((next, m, self.digest_task(algo, start + next, m)));
                    }
                    Some((algo, digest))
                }
                None => None,
            };
            prog.inflight.store(0, Ordering::Relaxed);
            let inflight = Arc::new(AtomicU64::new(0));
            let patch = self.tus.patch(
                &url,
                offset,
                &self.file,
                start + offset,
                n,
                checksum,
                inflight.clone(),
                self.cfg.limiter.clone(),
            );
            let result = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Error::Cancelled),
                r = watch_stall(patch, &inflight, prog, &self.sent, self.cfg.stall_timeout) => r,
            };
            prog.inflight.store(0, Ordering::Relaxed);
            let failure = match result {
                Ok(new) if new > offset && new <= len => {
                    offset = new;
                    prog.acked.store(offset, Ordering::Relaxed);
                    failures = 0;
                    continue;
                }
                Ok(new) => TusFailure::Transient {
                    detail: format!(
                        "{url}: the server reported offset {new} after a PATCH from {offset}"
                    ),
                    retry_after: None,
                },
                Err(f) => f,
            };
            match failure {
                TusFailure::Fatal { status, detail } => return Err(fatal(&url, status, detail)),
                TusFailure::Gone { .. } if recreated < 2 => {
                    recreated += 1;
                    self.recreate(i).await?;
                    url = self.url(i)?;
                    offset = 0;
                    prog.acked.store(0, Ordering::Relaxed);
                    continue;
                }
                TusFailure::Gone { detail } => return Err(fatal(&url, None, detail)),
                TusFailure::Transient {
                    detail,
                    retry_after,
                } => {
                    // The server may have kept part of the failed PATCH: ask where it stands.
                    let before = offset;
                    if let Ok(state) = self.tus.head(&url).await
                        && let Some(o) = state.offset
                    {
                        offset = o.min(len);
                        prog.acked.store(offset, Ordering::Relaxed);
                    }
                    if offset > before {
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    if failures >= self.cfg.retry.max_attempts {
                        return Err(Error::RetriesExhausted {
                            url: url.to_string(),
                            attempts: failures,
                            last: detail,
                        });
                    }
                    let delay = if offset > before {
                        Duration::ZERO
                    } else {
                        self.cfg.retry.delay(failures, retry_after)
                    };
                    self.cfg.events.emit(Event::Retry {
                        file: self.display.clone(),
                        url: url.to_string(),
                        attempt: failures,
                        delay_ms: delay.as_millis() as u64,
                        reason: detail,
                    });
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(Error::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Hashes `n` bytes of the file from `at` on the blocking pool.
    fn digest_task(
        &self,
        algo: Algorithm,
        at: u64,
        n: u64,
    ) -> tokio::task::JoinHandle<std::io::Result<String>> {
        let f = self.file.clone();
        tokio::task::spawn_blocking(move || tus::digest_range(&f, at, n, algo))
    }

    /// Creates (or finds) the final upload that joins the parts. Returns its URL.
    async fn finish_concatenation(&self, size: u64) -> Result<String, Error> {
        let existing = self.journal.lock().expect("journal lock").final_url.clone();
        if let Some(f) = existing
            && let Ok(u) = Url::parse(&f)
            && let Ok(Some(state)) =
                retrying_gone(&self.cfg, &self.display, &self.cancel, || self.tus.head(&u)).await
            && state.offset == Some(size)
        {
            return Ok(f);
        }
        let urls: Vec<String> = {
            let j = self.journal.lock().expect("journal lock");
            j.parts.iter().map(|p| p.url.clone()).collect()
        };
        let concat = format!("final;{}", urls.join(" "));
        let (url, _) = retrying(&self.cfg, &self.display, &self.cancel, || {
            self.tus.create(None, &self.metadata, Some(&concat), None)
        })
        .await?;
        let snapshot = {
            let mut j = self.journal.lock().expect("journal lock");
            j.final_url = Some(url.to_string());
            j.clone()
        };
        journal::save(&self.journal_path, &snapshot)?;
        // A server with concatenation-unfinished may assemble later; check it is complete.
        if self.caps.has("concatenation-unfinished")
            && let Ok(state) = self.tus.head(&url).await
            && state.offset.is_some_and(|o| o != size)
        {
            return Err(Error::Protocol {
                url: url.to_string(),
                detail: format!(
                    "the final upload reports offset {:?} of {size} bytes",
                    state.offset
                ),
            });
        }
        Ok(url.to_string())
    }
}

fn fatal(url: &Url, status: Option<u16>, detail: String) -> Error {
    match status {
        Some(status) => Error::HttpStatus {
            url: url.to_string(),
            status,
            hint: strip_prefix(&detail),
        },
        None => Error::Protocol {
            url: url.to_string(),
            detail,
        },
    }
}

/// Runs a PATCH, counting its bytes, and abandons it when no byte moved for `stall`.
async fn watch_stall(
    patch: impl std::future::Future<Output = Result<u64, TusFailure>>,
    inflight: &AtomicU64,
    prog: &PartProgress,
    sent: &AtomicU64,
    stall: Duration,
) -> Result<u64, TusFailure> {
    tokio::pin!(patch);
    let mut seen = 0u64;
    let mut last_move = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = &mut patch => {
                let now = inflight.load(Ordering::Relaxed);
                sent.fetch_add(now - seen, Ordering::Relaxed);
                return r;
            }
            _ = tick.tick() => {
                let now = inflight.load(Ordering::Relaxed);
                if now != seen {
                    sent.fetch_add(now - seen, Ordering::Relaxed);
                    prog.inflight.store(now, Ordering::Relaxed);
                    seen = now;
                    last_move = Instant::now();
                } else if last_move.elapsed() >= stall {
                    return Err(TusFailure::Transient {
                        detail: format!("no progress for {}s", stall.as_secs()),
                        retry_after: None,
                    });
                }
            }
        }
    }
}

/// Retries a request with backoff on transient failures; fatal ones (and Gone) are errors.
async fn retrying<T, F, Fut>(
    cfg: &Config,
    display: &str,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TusFailure>>,
{
    match retrying_gone(cfg, display, cancel, &mut f).await? {
        Some(t) => Ok(t),
        None => Err(Error::Protocol {
            url: cfg.endpoint.clone(),
            detail: "the server answered 404 Not Found: is this a tus endpoint?".into(),
        }),
    }
}

/// Like [`retrying`], but a `Gone` answer is `Ok(None)`.
async fn retrying_gone<T, F, Fut>(
    cfg: &Config,
    display: &str,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TusFailure>>,
{
    let mut failures = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let r = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            r = f() => r,
        };
        match r {
            Ok(t) => return Ok(Some(t)),
            Err(TusFailure::Gone { .. }) => return Ok(None),
            Err(TusFailure::Fatal { status, detail }) => {
                return Err(match status {
                    Some(s) => Error::HttpStatus {
                        url: cfg.endpoint.clone(),
                        status: s,
                        hint: strip_prefix(&detail),
                    },
                    None => Error::Protocol {
                        url: cfg.endpoint.clone(),
                        detail,
                    },
                });
            }
            Err(TusFailure::Transient {
                detail,
                retry_after,
            }) => {
                failures += 1;
                if failures >= cfg.retry.max_attempts {
                    return Err(Error::RetriesExhausted {
                        url: cfg.endpoint.clone(),
                        attempts: failures,
                        last: detail,
                    });
                }
                let delay = cfg.retry.delay(failures, retry_after);
                cfg.events.emit(Event::Retry {
                    file: display.to_owned(),
                    url: cfg.endpoint.clone(),
                    attempt: failures,
                    delay_ms: delay.as_millis() as u64,
                    reason: detail,
                });
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Error::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The part of a failure's detail after "the server answered NNN Reason".
fn strip_prefix(detail: &str) -> String {
    match detail.find("the server answered ") {
        Some(i) => {
            let rest = &detail[i + "the server answered ".len()..];
            // Skip "NNN Reason" up to the first ':' or ';'.
            match rest.find([':', ';']) {
                Some(j) => rest[j..].to_string(),
                None => String::new(),
            }
        }
        None => format!(": {detail}"),
    }
}

/// Emits progress (at most 4 per second) while the parts run.
async fn report(shared: Arc<Shared>) {
    let total: u64 = shared.progress.iter().map(|p| p.len).sum();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_sent = shared.sent.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    let mut rate = 0f64;
    loop {
        tick.tick().await;
        let done: u64 = shared
            .progress
            .iter()
            .map(|p| {
                (p.acked.load(Ordering::Relaxed) + p.inflight.load(Ordering::Relaxed)).min(p.len)
            })
            .sum();
        let sent = shared.sent.load(Ordering::Relaxed);
        let dt = last_at.elapsed().as_secs_f64().max(1e-3);
        let inst = (sent - last_sent) as f64 / dt;
        rate = if rate == 0.0 {
            inst
        } else {
            rate * 0.7 + inst * 0.3
        };
        last_sent = sent;
        last_at = Instant::now();
        let active = shared
            .progress
            .iter()
            .filter(|p| p.acked.load(Ordering::Relaxed) < p.len)
            .count();
        shared.cfg.events.emit(Event::Progress {
            file: shared.display.clone(),
            done,
            total: Some(total),
            rate: rate as u64,
            connections: active,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything() {
        assert_eq!(split(10, 3), vec![(0, 4), (4, 7), (7, 10)]);
        assert_eq!(split(8, 4), vec![(0, 2), (2, 4), (4, 6), (6, 8)]);
        assert_eq!(split(0, 1), vec![(0, 0)]);
    }

    #[test]
    fn hints_keep_what_the_server_said() {
        assert_eq!(
            strip_prefix(
                "http://h/uploads/: the server answered 409 Conflict: a exists; use --overwrite"
            ),
            ": a exists; use --overwrite"
        );
        assert_eq!(
            strip_prefix("http://h/: the server answered 401 Unauthorized"),
            ""
        );
    }
}
