//! One download, start to finish: probe the source, load or start the journal, run the
//! connections (range plan, work stealing, endgame), checkpoint, verify, rename into place.
//!
//! ```text
//! probe ──► name, validators, length ──► journal (resume or fresh) ──► N connection tasks
//!                                                 ▲                         │ positioned writes
//!                                   checkpointer ─┘ (fdatasync, then journal) ▼
//!                                                                        <name>.part ──► verify ──► <name>
//! ```

use crate::error::Error;
use crate::events::{Event, EventSink};
use crate::journal::{Journal, Validators, with_suffix};
use crate::limits::{RateLimiter, RetryPolicy};
use crate::naming;
use crate::pieces::{PieceHashes, PieceTracker};
use crate::plan::Plan;
use crate::ranges::RangeSet;
use crate::sink::{PartFile, finalize};
use crate::source::{self, ClientOptions, Failure, HttpSource};
use crate::verify::{self, Expected};
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Response, StatusCode};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Where the file goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Exactly this path.
    File(PathBuf),
    /// This directory, under the name the server or URL gives.
    Dir(PathBuf),
}

/// Builds a [`Download`]. Every setting has a sensible default except the URL.
#[derive(Debug, Clone)]
pub struct DownloadBuilder {
    urls: Vec<String>,
    output: Output,
    connections: usize,
    client: ClientOptions,
    limiter: Option<Arc<RateLimiter>>,
    retry: RetryPolicy,
    restart: bool,
    no_restart: bool,
    checksums: Vec<Expected>,
    read_timeout: Duration,
    min_split: u64,
    checkpoint_interval: Duration,
    checkpoint_bytes: Option<u64>,
    events: EventSink,
    pieces: Option<PieceHashes>,
}

impl DownloadBuilder {
    /// Adds a URL. Several URLs are mirrors of the same file.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// Number of connections (default 8).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    /// Adds a request header sent with every request.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, Error> {
        let name = header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Error::Usage(format!("invalid header name {name:?}")))?;
        let value = header::HeaderValue::from_str(value.trim())
            .map_err(|_| Error::Usage(format!("invalid value for header {name}")))?;
        self.client.headers.append(name, value);
        Ok(self)
    }

    /// Caps the total speed of this download; share one limiter to cap several downloads together.
    pub fn rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Attempts in a row without progress before a connection gives up (default 5).
    pub fn retries(mut self, n: u32) -> Self {
        self.retry.max_attempts = n;
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Discard any partial download and start from zero.
    pub fn restart(mut self, yes: bool) -> Self {
        self.restart = yes;
        self
    }

    /// When the remote file changed since the partial download began, fail instead of restarting.
    pub fn no_restart(mut self, yes: bool) -> Self {
        self.no_restart = yes;
        self
    }

    /// Verify the finished file against this digest.
    /// TLS settings replacing the system trust store (e.g. a pinned peer certificate).
    pub fn tls(mut self, tls: crate::source::CustomTls) -> Self {
        self.client.tls = Some(tls);
        self
    }

    /// The expected BLAKE3 hash of every piece (e.g. from a ferry peer's manifest): each piece
    /// is verified as soon as it is written; a bad piece is fetched again from another source
    /// and the source that sent it is dropped. The journal records verified pieces only.
    pub fn pieces(mut self, pieces: PieceHashes) -> Self {
        self.pieces = Some(pieces);
        self
    }

    pub fn checksum(mut self, expected: Expected) -> Self {
        self.checksums.push(expected);
        self
    }

    /// A connection that receives nothing for this long is dropped and retried (default 30 s).
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.read_timeout = t;
        self
    }

    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.client.connect_timeout = t;
        self
    }

    /// Ranges smaller than this are not split between connections (default 1 MiB).
    pub fn min_split(mut self, bytes: u64) -> Self {
        self.min_split = bytes.max(4096);
        self
    }

    /// How often progress is made durable: every `every` (default 1 s), and after `bytes` per
    /// connection (default 512 KiB) but at most every 50 ms.
    pub fn checkpoint(mut self, every: Duration, bytes: Option<u64>) -> Self {
        self.checkpoint_interval = every;
        self.checkpoint_bytes = bytes;
        self
    }

    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = sink;
        self
    }

    pub fn build(self) -> Result<Download, Error> {
        if self.urls.is_empty() {
            return Err(Error::Usage("no URL given".into()));
        }
        let mut sources = Vec::new();
        for u in &self.urls {
            let url = Url::parse(u).map_err(|e| Error::Usage(format!("invalid URL {u:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::Usage(format!(
                    "unsupported URL scheme in {u:?}: only http and https"
                )));
            }
            sources.push(url);
        }
        Ok(Download {
            cfg: Arc::new(Config {
                builder: self,
                urls: sources,
            }),
        })
    }
}

#[derive(Debug)]
struct Config {
    builder: DownloadBuilder,
    urls: Vec<Url>,
}

/// A configured download. [`Download::run`] performs it; running it again resumes.
///
/// ```no_run
/// use ferry_core::{Download, Output, Event, EventSink};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn demo() -> Result<(), ferry_core::Error> {
/// let done = Download::builder()
///     .url("https://example.com/big.iso")
///     .output(Output::Dir(".".into()))
///     .connections(8)
///     .events(EventSink::new(|e| if let Event::Progress { done, .. } = e { eprintln!("{done} bytes") }))
///     .build()?
///     .run(CancellationToken::new())
///     .await?;
/// println!("saved {} ({} bytes)", done.path.display(), done.bytes);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Download {
    cfg: Arc<Config>,
}

/// What a finished download produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub path: PathBuf,
    pub bytes: u64,
    /// Bytes fetched in this run.
    pub fetched: u64,
    /// Digests that were checked, as `algo (origin)`.
    pub verified: Vec<String>,
    /// True when the file was already complete and nothing was fetched.
    pub already_complete: bool,
}

/// Largest range asked for in one request (a connection makes several on one keep-alive socket).
const MAX_REQUEST: u64 = 8 << 20;

/// Internal result of one attempt at the whole download.
enum RunError {
    Fatal(Error),
    /// The remote file changed: start over (unless told not to).
    Changed(String),
}

impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        RunError::Fatal(e)
    }
}

/// What the first response told us.
struct Probe {
    source: usize,
    resp: Option<Response>,
    /// Offset the response body starts at.
    start: u64,
    /// The body is a range we asked for (206), as opposed to the whole file (200).
    ranged: bool,
    validators: Validators,
    headers: HeaderMap,
    final_url: Url,
}

impl Download {
    pub fn builder() -> DownloadBuilder {
        DownloadBuilder {
            urls: Vec::new(),
            output: Output::Dir(PathBuf::from(".")),
            connections: 8,
            client: ClientOptions::default(),
            limiter: None,
            retry: RetryPolicy::default(),
            restart: false,
            no_restart: false,
            checksums: Vec::new(),
            read_timeout: Duration::from_secs(30),
            min_split: 1 << 20,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: None,
            pieces: None,
            events: EventSink::default(),
        }
    }

    /// The output path if it is known before contacting the server (`-o`), else `None`.
    pub fn known_path(&self) -> Option<PathBuf> {
        match &self.cfg.builder.output {
            Output::File(p) => Some(p.clone()),
            Output::Dir(_) => None,
        }
    }

    /// Runs the download until it is complete and verified, fails, or `cancel` fires (then the
    /// journal is saved and the error is [`Error::Cancelled`]).
    pub async fn run(&self, cancel: CancellationToken) -> Result<Outcome, Error> {
        let mut restart = self.cfg.builder.restart;
        let mut restarts = 0;
        loop {
            match self.attempt(restart, &cancel).await {
                Ok(o) => return Ok(o),
                Err(RunError::Fatal(e)) => return Err(e),
                Err(RunError::Changed(detail)) => {
                    if self.cfg.builder.no_restart {
                        return Err(Error::RemoteChanged { detail });
                    }
                    restarts += 1;
                    if restarts > 3 {
                        return Err(Error::RemoteChanged {
                            detail: format!("{detail}; it kept changing over {restarts} restarts"),
                        });
                    }
                    self.cfg.builder.events.emit(Event::Warning {
                        file: self
                            .known_path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        message: format!("the remote file changed ({detail}); starting over"),
                    });
                    restart = true;
                }
            }
        }
    }

    async fn attempt(
        &self,
        restart: bool,
        cancel: &CancellationToken,
    ) -> Result<Outcome, RunError> {
        let b = &self.cfg.builder;
        let started = Instant::now();
        let sources: Arc<Vec<HttpSource>> =
            Arc::new(self.cfg.urls.iter().cloned().map(HttpSource::new).collect());
        let clients = ClientPool::for_options(&b.client);

        // 1. Where does it go, and is there earlier progress?
        let mut dest = match &b.output {
            Output::File(p) => Some(p.clone()),
            Output::Dir(d) => naming::from_url(&self.cfg.urls[0])
                .map(|n| d.join(n))
                .filter(|p| Journal::path_for(p).exists()),
        };
        if restart && let Some(d) = &dest {
            discard_partial(d)?;
        }
        let mut journal = match &dest {
            Some(d) => self.load_journal(d)?,
            None => None,
        };

        // 2. Probe: the first missing bytes (or the start), with If-Range when resuming.
        let probe_size = b.min_split;
        let resume_from = journal.as_ref().and_then(|j| {
            let len = j.validators.length?;
            j.done
                .missing(len)
                .first()
                .map(|r| (r.start, r.end.min(r.start + probe_size)))
        });
        let (range, if_range) = match (&journal, resume_from) {
            (Some(j), Some((s, e))) => (
                Some((s, Some(e))),
                j.validators.if_range().map(str::to_string),
            ),
            _ => (Some((0, Some(probe_size))), None),
        };
        let probe = self
            .probe(&sources, &clients, range, if_range.as_deref(), cancel)
            .await?;

        // 3. Name the file (Content-Disposition, the final URL, the URL) when only a directory was given.
        let dest = match dest.take() {
            Some(d) => d,
            None => {
                let Output::Dir(dir) = &b.output else {
                    unreachable!("file output always has a path")
                };
                let name = probe
                    .headers
                    .get(header::CONTENT_DISPOSITION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(naming::from_content_disposition)
                    .or_else(|| naming::from_url(&probe.final_url))
                    .or_else(|| naming::from_url(&self.cfg.urls[0]))
                    .unwrap_or_else(|| naming::FALLBACK_NAME.to_string());
                let d = dir.join(name);
                if restart {
                    discard_partial(&d)?;
                }
                journal = self.load_journal(&d)?;
                d
            }
        };
        let display = dest.display().to_string();
        let part_path = with_suffix(&dest, ".part");
        let journal_path = Journal::path_for(&dest);

        // 4. Fresh start or resume? A changed remote file is never spliced onto old bytes.
        let total = probe.validators.length;
        if let Some(j) = &journal {
            if let Some(diff) = j.validators.difference(&probe.validators) {
                if !j
                    .urls
                    .iter()
                    .any(|u| self.cfg.urls.iter().any(|v| v.as_str() == u))
                {
                    return Err(Error::JournalForeign {
                        path: journal_path,
                        detail: diff,
                    }
                    .into());
                }
                return Err(RunError::Changed(diff));
            }
            if j.validators.if_range().is_none() && !j.done.is_empty() {
                b.events.emit(Event::Warning {
                    file: display.clone(),
                    message: "the server sends neither ETag nor Last-Modified, so a change of the remote file that keeps its length cannot be detected on resume".into(),
                });
            }
            if !part_path.exists() {
                b.events.emit(Event::Warning {
                    file: display.clone(),
                    message: format!("{} is missing; starting over", part_path.display()),
                });
                journal = None;
            } else if !probe.ranged {
                b.events.emit(Event::Warning {
                    file: display.clone(),
                    message: "the server does not support ranges now, so the partial download cannot be resumed; starting over".into(),
                });
                journal = None;
            }
        } else if dest.exists() && !restart {
            // Complete already? Same length and no journal: a rerun of a finished command.
            let on_disk = std::fs::metadata(&dest)
                .map_err(|e| Error::io(&dest, e))?
                .len();
            if total == Some(on_disk) {
                drop(probe);
                let verified = self.verify(&dest, &[], true).await?;
                b.events.emit(Event::Done {
                    file: dest.display().to_string(),
                    bytes: on_disk,
                    fetched: 0,
                    secs: started.elapsed().as_secs_f64(),
                    verified: verified.clone(),
                });
                return Ok(Outcome {
                    path: dest,
                    bytes: on_disk,
                    fetched: 0,
                    verified,
                    already_complete: true,
                });
            }
            return Err(Error::Exists { path: dest }.into());
        }
        let fresh = journal.is_none();
        let mut journal = journal.unwrap_or_else(|| {
            Journal::new(
                self.cfg.urls.iter().map(|u| u.to_string()).collect(),
                probe.validators.clone(),
            )
        });
        for u in &self.cfg.urls {
            if !journal.urls.iter().any(|j| j == u.as_str()) {
                journal.urls.push(u.to_string());
            }
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let part = PartFile::open(&part_path, total, fresh)?;
        journal.save(&journal_path)?;
        let header_digests = verify::from_headers(&probe.headers);

        let ranged = probe.ranged && total.is_some();
        let connections = if ranged { b.connections.max(1) } else { 1 };
        if !ranged && b.connections > 1 {
            b.events.emit(Event::Warning {
                file: display.clone(),
                message: "the server does not support byte ranges; using one connection".into(),
            });
        }
        let resumed = journal.done.covered();
        b.events.emit(Event::Start {
            url: self.cfg.urls[0].to_string(),
            file: display.clone(),
            total,
            resumed,
            connections,
            ranges: ranged,
        });

        // 5. Run the connections.
        let plan_len = total.unwrap_or(u64::MAX);
        let mut plan = Plan::new(plan_len, journal.done.clone(), connections, b.min_split)
            .with_min_steal_secs(0.5);
        // The probe's body belongs to worker 0: give it the range that starts there.
        if probe.resp.is_some() {
            plan.assign_at(0, probe.start);
        }
        let pieces = match &b.pieces {
            Some(h) if total.is_some_and(|t| h.fits(t)) => Some(Mutex::new(PieceTracker::new(
                h.clone(),
                total.expect("checked"),
                journal.done.clone(),
                self.cfg.urls.len(),
            ))),
            Some(_) => {
                return Err(Error::Protocol {
                    url: self.cfg.urls[0].to_string(),
                    detail: format!(
                        "the source's length ({total:?}) does not match the expected pieces"
                    ),
                }
                .into());
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            pieces,
            cfg: self.cfg.clone(),
            sources,
            plan: Mutex::new(plan),
            part: part.clone(),
            ranged,
            validators: probe.validators.clone(),
            cancel: cancel.child_token(),
            notify: Notify::new(),
            checkpoint_due: Notify::new(),
            fetched: AtomicU64::new(0),
            since_checkpoint: AtomicU64::new(0),
            checkpoint_bytes: b.checkpoint_bytes.unwrap_or(512 << 10) * connections as u64,
            failure: Mutex::new(None),
            eof_at: Mutex::new(None),
            display: display.clone(),
            started: Instant::now(),
            buf_size: ((16usize << 20)
                .div_ceil(connections)
                .clamp(64 << 10, 512 << 10) as u64)
                .min(total.unwrap_or(u64::MAX).max(4096)) as usize,
        });
        let journal = Arc::new(tokio::sync::Mutex::new((journal, journal_path.clone())));
        let checkpointer = tokio::spawn(checkpoint_loop(shared.clone(), journal.clone()));
        let ticker = tokio::spawn(progress_loop(shared.clone()));
        let mut tasks = Vec::new();
        let mut first = Some(probe);
        for w in 0..connections {
            let probe = if w == 0 { first.take() } else { None };
            tasks.push(tokio::spawn(worker(
                shared.clone(),
                w,
                clients.clone(),
                probe,
            )));
        }
        for t in tasks {
            if let Err(e) = t.await {
                shared.fail(Failure::Fatal(Error::io(
                    &part_path,
                    std::io::Error::other(format!("connection task panicked: {e}")),
                )));
            }
        }
        shared.cancel.cancel();
        let _ = ticker.await;
        let _ = checkpointer.await;

        // 6. Final checkpoint; then either an error (progress saved) or verify and rename.
        if let Some(t) = &shared.pieces
            && shared.failure.lock().expect("failure lock").is_none()
        {
            let ready = {
                let done = shared.plan().done().clone();
                t.lock().expect("pieces lock").unverified_written(&done)
            };
            if let Err(f) = verify_pieces(&shared, ready).await {
                shared.fail(f);
            }
        }
        let pieces_ok = shared
            .pieces
            .as_ref()
            .is_none_or(|t| t.lock().expect("pieces lock").complete());
        let eof = *shared.eof_at.lock().expect("eof lock");
        let complete = pieces_ok && {
            let plan = shared.plan.lock().expect("plan lock");
            match (total, eof) {
                (Some(_), _) => plan.is_complete(),
                (None, Some(len)) => plan.done().contains_range(0..len),
                (None, None) => false,
            }
        };
        let failure = shared.failure.lock().expect("failure lock").take();
        // A connection that ran out of retries is no failure when the others finished the file.
        let fatal = matches!(failure, Some(Failure::Fatal(_) | Failure::Changed(_)));
        if !complete || fatal {
            save_checkpoint(&shared, &journal).await?;
            return Err(match failure {
                Some(Failure::Changed(d)) => RunError::Changed(d),
                Some(Failure::Fatal(e)) => RunError::Fatal(e),
                Some(Failure::Transient { reason, .. }) => {
                    RunError::Fatal(Error::RetriesExhausted {
                        url: self.cfg.urls[0].to_string(),
                        attempts: b.retry.max_attempts,
                        last: reason,
                    })
                }
                None if cancel.is_cancelled() => RunError::Fatal(Error::Cancelled),
                None => RunError::Fatal(Error::Network {
                    url: self.cfg.urls[0].to_string(),
                    detail:
                        "every connection stopped before the download was complete; rerun to resume"
                            .into(),
                }),
            });
        }
        let bytes = match (total, eof) {
            (Some(t), _) => t,
            (None, Some(len)) => {
                part.set_len(len)?;
                len
            }
            (None, None) => unreachable!("complete implies a known length"),
        };
        part.sync().await?;
        drop(part);
        b.events.emit(Event::Verifying {
            file: display.clone(),
        });
        let mut verified = self.verify(&part_path, &header_digests, false).await?;
        if let Some(h) = &b.pieces {
            verified.push(format!("blake3 ({} pieces)", h.hashes.len()));
        }
        finalize(&part_path, &dest)?;
        Journal::remove(&journal_path)?;
        let fetched = shared.fetched.load(Ordering::Relaxed);
        b.events.emit(Event::Done {
            file: display,
            bytes,
            fetched,
            secs: started.elapsed().as_secs_f64(),
            verified: verified.clone(),
        });
        Ok(Outcome {
            path: dest,
            bytes,
            fetched,
            verified,
            already_complete: false,
        })
    }

    fn load_journal(&self, dest: &Path) -> Result<Option<Journal>, Error> {
        Journal::load(&Journal::path_for(dest))
    }

    /// Checks the user's digests and the server's (and every piece, with `all_pieces`, for a
    /// file that was not verified piece by piece as it arrived); returns what was checked.
    async fn verify(
        &self,
        path: &Path,
        from_headers: &[Expected],
        all_pieces: bool,
    ) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        if all_pieces && let Some(h) = self.cfg.builder.pieces.clone() {
            let p = path.to_owned();
            let bad = tokio::task::spawn_blocking(move || -> std::io::Result<Option<usize>> {
                let f = std::fs::File::open(&p)?;
                let len = f.metadata()?.len();
                if !h.fits(len) {
                    return Ok(Some(0));
                }
                for i in 0..h.hashes.len() {
                    if !h.check(&f, i, len)? {
                        return Ok(Some(i));
                    }
                }
                Ok(None)
            })
            .await
            .map_err(|e| Error::Usage(format!("verification task failed: {e}")))?
            .map_err(|e| Error::io(path, e))?;
            if let Some(i) = bad {
                return Err(Error::ChecksumMismatch {
                    algo: "blake3".into(),
                    expected: format!("piece {i} as listed"),
                    actual: "different bytes".into(),
                    part: path.to_owned(),
                });
            }
            names.push("blake3 (every piece)".to_string());
        }
        let mut expected: Vec<Expected> = self.cfg.builder.checksums.clone();
        expected.extend(from_headers.iter().cloned());
        if expected.is_empty() {
            return Ok(names);
        }
        names.extend(
            expected
                .iter()
                .map(|e| format!("{} ({})", e.algo, e.origin)),
        );
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || verify::verify_file(&path, &expected))
            .await
            .map_err(|e| Error::Usage(format!("verification task failed: {e}")))??;
        Ok(names)
    }

    /// The first request: learns length, validators, range support and the final URL. Tries each
    /// mirror in turn, with the retry policy.
    async fn probe(
        &self,
        sources: &[HttpSource],
        clients: &ClientPool,
        range: Option<(u64, Option<u64>)>,
        if_range: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Probe, RunError> {
        let b = &self.cfg.builder;
        let client = clients.get(0)?;
        let mut failures = 0u32;
        loop {
            let si = failures as usize % sources.len();
            let src = &sources[si];
            let attempt = tokio::select! {
                r = src.get(&client, range, if_range) => r,
                _ = cancel.cancelled() => return Err(Error::Cancelled.into()),
            };
            let failure = match attempt {
                Ok(resp) => match interpret_probe(resp, si, range) {
                    Ok(p) => {
                        src.set_effective(p.final_url.clone());
                        src.set_validators(p.validators.clone());
                        return Ok(p);
                    }
                    Err(f) => f,
                },
                Err(f) => f,
            };
            match failure {
                Failure::Fatal(e)
                    if sources.len() == 1 || failures as usize + 1 >= sources.len() * 2 =>
                {
                    return Err(e.into());
                }
                Failure::Changed(d) => return Err(RunError::Changed(d)),
                Failure::Fatal(_) => failures += 1,
                Failure::Transient {
                    reason,
                    retry_after,
                } => {
                    failures += 1;
                    if failures > b.retry.max_attempts {
                        return Err(Error::RetriesExhausted {
                            url: src.url.to_string(),
                            attempts: failures,
                            last: reason,
                        }
                        .into());
                    }
                    let delay = b.retry.delay(failures, retry_after);
                    b.events.emit(Event::Retry {
                        file: self
                            .known_path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        url: src.url.to_string(),
                        attempt: failures,
                        delay_ms: delay.as_millis() as u64,
                        reason,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return Err(Error::Cancelled.into()),
                    }
                }
            }
        }
    }
}

/// Reads what the probe's answer says about the file.
fn interpret_probe(
    resp: Response,
    source: usize,
    asked: Option<(u64, Option<u64>)>,
) -> Result<Probe, Failure> {
    let headers = resp.headers().clone();
    let final_url = resp.url().clone();
    let status = resp.status();
    let asked_start = asked.map_or(0, |(s, _)| s);
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        // `bytes */N`: the file is N bytes long. An empty file is complete already; a file shorter
        // than where we resume has changed.
        let total = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(source::parse_content_range)
            .and_then(|(_, _, t)| t);
        return match total {
            Some(0) if asked_start == 0 => Ok(Probe {
                source,
                resp: None,
                start: 0,
                ranged: true,
                validators: source::validators_of(&headers, Some(0)),
                headers,
                final_url,
            }),
            Some(t) => Err(Failure::Changed(format!(
                "the file is now {t} bytes, shorter than the {asked_start} bytes already downloaded"
            ))),
            None => Err(Failure::Transient {
                reason: "server answered 416 without a length".into(),
                retry_after: None,
            }),
        };
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(source::parse_content_range);
        let Some((start, _end, total)) = cr else {
            return Err(Failure::Transient {
                reason: "206 answer without a valid Content-Range".into(),
                retry_after: None,
            });
        };
        if start != asked_start {
            return Err(Failure::Transient {
                reason: format!(
                    "asked for bytes from {asked_start}, the server sent bytes from {start}"
                ),
                retry_after: None,
            });
        }
        if total.is_none() {
            return Err(Failure::Transient {
                reason: "206 answer without the total length".into(),
                retry_after: None,
            });
        }
        let validators = source::validators_of(&headers, total);
        return Ok(Probe {
            source,
            resp: Some(resp),
            start,
            ranged: true,
            validators,
            headers,
            final_url,
        });
    }
    // 200 (or another 2xx): the whole file from byte 0.
    let len = source::content_length(&headers);
    let validators = source::validators_of(&headers, len);
    Ok(Probe {
        source,
        resp: Some(resp),
        start: 0,
        ranged: false,
        validators,
        headers,
        final_url,
    })
}

/// Removes a partial download (journal and part file) before starting over.
fn discard_partial(dest: &Path) -> Result<(), Error> {
    Journal::remove(&Journal::path_for(dest))?;
    let part = with_suffix(dest, ".part");
    match std::fs::remove_file(&part) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&part, e)),
    }
}

/// HTTP clients by connection slot: slot `w` of a download always uses client `w`, so the
/// connections of one download never share a TCP connection (not even over HTTP/2). Clients
/// are built on first use and shared, per set of client options, by every download in the
/// process: a list of 200 small files reuses warm keep-alive connections and builds its TLS
/// trust store a handful of times, not 1600.
#[derive(Clone)]
struct ClientPool {
    opts: ClientOptions,
    clients: SharedClients,
}

/// The clients of one set of options, by slot.
type SharedClients = Arc<Mutex<Vec<Client>>>;

impl ClientPool {
    fn for_options(opts: &ClientOptions) -> Self {
        static POOLS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, SharedClients>>> =
            std::sync::OnceLock::new();
        let key = format!("{opts:?}");
        let clients = POOLS
            .get_or_init(Default::default)
            .lock()
            .expect("client pools lock")
            .entry(key)
            .or_default()
            .clone();
        ClientPool {
            opts: opts.clone(),
            clients,
        }
    }

    fn get(&self, w: usize) -> Result<Client, Error> {
        let mut clients = self.clients.lock().expect("client pool lock");
        while clients.len() <= w {
            clients.push(source::build_client(&self.opts)?);
        }
        Ok(clients[w].clone())
    }
}

/// State shared by the connections of one download.
struct Shared {
    cfg: Arc<Config>,
    sources: Arc<Vec<HttpSource>>,
    plan: Mutex<Plan>,
    part: PartFile,
    /// Ranges are usable (else: one connection, from byte 0, restart on failure).
    ranged: bool,
    /// Validators of the file as first seen; every later answer must agree.
    validators: Validators,
    /// Fires on Ctrl-C, on a fatal error, or when everything is done.
    cancel: CancellationToken,
    /// Wakes idle connections when work may have appeared.
    notify: Notify,
    checkpoint_due: Notify,
    fetched: AtomicU64,
    since_checkpoint: AtomicU64,
    checkpoint_bytes: u64,
    failure: Mutex<Option<Failure>>,
    /// For downloads of unknown length: where the stream ended.
    eof_at: Mutex<Option<u64>>,
    display: String,
    started: Instant,
    buf_size: usize,
    /// Per-piece verification, when the pieces' hashes are known.
    pieces: Option<Mutex<PieceTracker>>,
}

impl Shared {
    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().expect("plan lock")
    }

    /// Records the first fatal failure and stops every connection.
    fn fail(&self, f: Failure) {
        let mut slot = self.failure.lock().expect("failure lock");
        if slot.is_none() || matches!(*slot, Some(Failure::Transient { .. })) {
            *slot = Some(f);
        }
        drop(slot);
        self.cancel.cancel();
        self.notify.notify_waiters();
    }

    fn events(&self) -> &EventSink {
        &self.cfg.builder.events
    }
}

/// How one response's body ended.
enum BodyEnd {
    /// The assignment (or what is left of it after stealing) is written.
    Finished,
    /// The body ended early or cleanly at EOF.
    Eof,
}

/// One connection: takes ranges from the plan until there are none left.
async fn worker(shared: Arc<Shared>, w: usize, clients: ClientPool, mut probe: Option<Probe>) {
    let b = &shared.cfg.builder;
    // Built on first use: a connection that finds nothing to do costs neither a client nor a buffer.
    let mut client: Option<Client> = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut source = probe
        .as_ref()
        .map_or(w % shared.sources.len(), |p| p.source);
    'assignments: loop {
        if shared.cancel.is_cancelled() {
            break;
        }
        let assigned = {
            let mut plan = shared.plan();
            if let Some(current) = plan.assignment(w) {
                Some(current)
            } else if plan.is_complete() {
                None
            } else {
                let r = plan.assign(w);
                let r = if r.is_none() && shared.ranged {
                    plan.assign_duplicate(w, 1.5)
                } else {
                    r
                };
                // A new assignment starts at the average speed per connection, so the endgame
                // can tell a slow connection from one that just began.
                let secs = shared.started.elapsed().as_secs_f64();
                if secs > 0.0 && r.is_some() {
                    let avg = shared.fetched.load(Ordering::Relaxed) as f64
                        / secs
                        / plan.active_count() as f64;
                    plan.set_rate(w, avg);
                }
                r
            }
        };
        let Some(_range) = assigned else {
            let done = {
                let plan = shared.plan();
                plan.is_complete() || plan.active_count() == 0 || !shared.ranged
            };
            if done {
                break;
            }
            tokio::select! {
                _ = shared.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shared.cancel.cancelled() => break,
            }
            continue;
        };
        let mut failures = 0u32;
        let mut best_reach = 0u64;
        loop {
            let Some(cur) = shared.plan().assignment(w) else {
                break;
            };
            if !shared.plan().has_more(w) || shared.cancel.is_cancelled() {
                break;
            }
            // Use the probe's body when it starts where this assignment does.
            let resp = match probe.take() {
                Some(p) if p.resp.is_some() && p.start == cur.start => Ok(p.resp.expect("checked")),
                _ => {
                    if shared.sources[source].disabled().is_some() {
                        source = next_source(&shared, source);
                        if shared.sources[source].disabled().is_some() {
                            break 'assignments;
                        }
                    }
                    let src = &shared.sources[source];
                    let if_range = src
                        .validators()
                        .and_then(|v| v.if_range().map(str::to_string));
                    // Requests are bounded, so a connection whose tail is stolen can usually
                    // finish its current request instead of dropping the connection.
                    let req_end = cur
                        .end
                        .min(cur.start.saturating_add(MAX_REQUEST.max(b.min_split)));
                    shared.plan().set_request_end(w, req_end);
                    let range = if shared.ranged {
                        Some((cur.start, Some(req_end)))
                    } else {
                        None
                    };
                    let got = tokio::select! {
                        r = async {
                            if client.is_none() {
                                client = Some(clients.get(w).map_err(Failure::Fatal)?);
                            }
                            src.get(client.as_ref().expect("just built"), range, if_range.as_deref()).await
                        } => r,
                        _ = shared.cancel.cancelled() => break 'assignments,
                    };
                    got.and_then(|resp| check_response(&shared, source, resp, cur.start))
                }
            };
            let start_pos = cur.start;
            let result = match resp {
                Ok(resp) => read_body(&shared, w, source, resp, start_pos, &mut buf).await,
                Err(f) => Err(f),
            };
            let reached = shared.plan().assignment(w).map_or(start_pos, |a| a.start);
            match result {
                Ok(BodyEnd::Finished) => continue,
                Ok(BodyEnd::Eof) if !shared.ranged && shared.plan().len() == u64::MAX => {
                    // Unknown length: the end of the stream is the end of the file.
                    *shared.eof_at.lock().expect("eof lock") = Some(reached);
                    break 'assignments;
                }
                // A range answer may be shorter than asked: ask for the rest. (Without ranges a
                // short body means starting over, below.)
                Ok(BodyEnd::Eof) if reached > start_pos && shared.ranged => continue,
                outcome => {
                    let failure = match outcome {
                        Err(f) => f,
                        Ok(_) => Failure::Transient {
                            reason: "the server closed the connection before sending any data"
                                .into(),
                            retry_after: None,
                        },
                    };
                    let (reason, retry_after) = match failure {
                        Failure::Transient {
                            reason,
                            retry_after,
                        } => (reason, retry_after),
                        other => {
                            shared.plan().release(w);
                            shared.fail(other);
                            break 'assignments;
                        }
                    };
                    if shared.cancel.is_cancelled() {
                        break 'assignments;
                    }
                    if !shared.ranged {
                        // Without ranges a broken stream can only start again from byte 0.
                        let mut plan = shared.plan();
                        let len = plan.len();
                        *plan = Plan::new(len, RangeSet::new(), 1, b.min_split);
                        plan.assign(0);
                    }
                    // An attempt that moved forward costs nothing from the retry budget and
                    // reconnects at once: a server that resets every few MiB still finishes
                    // at full speed. Attempts without progress back off.
                    let progressed = reached > best_reach;
                    if progressed {
                        best_reach = reached;
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    if failures > b.retry.max_attempts {
                        shared.plan().release(w);
                        *shared.failure.lock().expect("failure lock") = Some(Failure::Transient {
                            reason,
                            retry_after: None,
                        });
                        shared.notify.notify_waiters();
                        break 'assignments;
                    }
                    // Another mirror may do better.
                    source = next_source(&shared, source);
                    let delay = match retry_after {
                        None if progressed => Duration::ZERO,
                        _ => b.retry.delay(failures.max(1), retry_after),
                    };
                    shared.events().emit(Event::Retry {
                        file: shared.display.clone(),
                        url: shared.sources[source].url.to_string(),
                        attempt: failures,
                        delay_ms: delay.as_millis() as u64,
                        reason,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shared.cancel.cancelled() => break 'assignments,
                    }
                }
            }
        }
        shared.plan().release(w);
        shared.notify.notify_waiters();
    }
    shared.plan().release(w);
    shared.notify.notify_waiters();
}

/// The next usable mirror after `current` (itself when it is the only one left).
fn next_source(shared: &Shared, current: usize) -> usize {
    let n = shared.sources.len();
    (1..=n)
        .map(|i| (current + i) % n)
        .find(|&i| shared.sources[i].disabled().is_none())
        .unwrap_or(current)
}

/// Checks that an answer to a range request is the range we asked for, of the same file.
fn check_response(
    shared: &Shared,
    source: usize,
    resp: Response,
    start: u64,
) -> Result<Response, Failure> {
    let src = &shared.sources[source];
    let url = resp.url().clone();
    let headers = resp.headers();
    if !shared.ranged {
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            return Err(Failure::Transient {
                reason: "unexpected 206 to a request without Range".into(),
                retry_after: None,
            });
        }
        let v = source::validators_of(headers, source::content_length(headers));
        if let Some(d) = shared.validators.difference(&v) {
            return Err(Failure::Changed(d));
        }
        src.set_effective(url);
        return Ok(resp);
    }
    let cr = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(source::parse_content_range);
    // Signs that this source does not (or no longer) serve the file we started from.
    let mismatch = match resp.status() {
        StatusCode::PARTIAL_CONTENT => match cr {
            Some((_, _, total)) if total != shared.validators.length => Some(format!(
                "length is {} bytes, expected {}",
                total.map_or("unknown".into(), |t| t.to_string()),
                shared.validators.length.unwrap_or(0)
            )),
            _ => src.validators().and_then(|known| {
                known.difference(&source::validators_of(headers, cr.and_then(|c| c.2)))
            }),
        },
        StatusCode::RANGE_NOT_SATISFIABLE => Some(format!(
            "the server says bytes from {start} do not exist (416)"
        )),
        // A 200 to a request with If-Range means the file changed; without a validator to send
        // it means the server stopped honouring ranges. Either way: not the bytes we asked for.
        status => Some(
            shared
                .validators
                .difference(&source::validators_of(
                    headers,
                    source::content_length(headers),
                ))
                .unwrap_or_else(|| {
                    format!("the server answered {status} instead of the requested range")
                }),
        ),
    };
    if let Some(detail) = mismatch {
        if source == 0 || shared.sources.len() == 1 {
            return Err(Failure::Changed(detail));
        }
        // A mirror that serves something else is dropped; the others carry on.
        let first = shared.sources[0].url.to_string();
        shared.events().emit(Event::Warning {
            file: shared.display.clone(),
            message: format!(
                "dropping mirror {}: it does not serve the same file as {first} ({detail})",
                src.url
            ),
        });
        src.disable(detail.clone());
        if shared.sources.iter().all(|s| s.disabled().is_some()) {
            return Err(Failure::Fatal(Error::MirrorMismatch {
                first,
                mirror: src.url.to_string(),
                detail,
            }));
        }
        return Err(Failure::Transient {
            reason: detail,
            retry_after: None,
        });
    }
    let Some((got_start, _, total)) = cr else {
        return Err(Failure::Transient {
            reason: "206 answer without a valid Content-Range".into(),
            retry_after: None,
        });
    };
    if got_start != start {
        return Err(Failure::Transient {
            reason: format!(
                "asked for bytes from {start}, the server sent bytes from {got_start} (wrong Content-Range)"
            ),
            retry_after: None,
        });
    }
    // A mirror's first answer tells us its own validators, for If-Range next time.
    if src.validators().is_none() {
        src.set_validators(source::validators_of(headers, total));
    }
    src.set_effective(url);
    Ok(resp)
}

/// The offset just past the last byte a response promises: the Content-Range end of a 206, or
/// `start` + Content-Length. Bytes beyond it are never written.
fn promised_end(resp: &Response, start: u64) -> Option<u64> {
    let headers = resp.headers();
    if resp.status() == StatusCode::PARTIAL_CONTENT {
        let cr = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(source::parse_content_range);
        return cr.map(|(_, end, _)| end);
    }
    source::content_length(headers).map(|l| start + l)
}

/// Streams a response body into the part file at `start`, in large positioned writes, until the
/// assignment is written, the body ends, or the connection fails.
async fn read_body(
    shared: &Shared,
    w: usize,
    source: usize,
    mut resp: Response,
    start: u64,
    buf: &mut Vec<u8>,
) -> Result<BodyEnd, Failure> {
    let b = &shared.cfg.builder;
    let mut buf_start = start;
    buf.clear();
    let mut last_flush = Instant::now();
    let assigned_at = Instant::now();
    let mut written_here = 0u64;
    let limit = promised_end(&resp, start).unwrap_or(u64::MAX);
    let mut pos = start;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(b.read_timeout, resp.chunk()) => r,
            _ = shared.cancel.cancelled() => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Ok(BodyEnd::Finished);
            }
        };
        let chunk = match next {
            Err(_) => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Err(Failure::Transient {
                    reason: format!(
                        "no data for {} s (stalled connection)",
                        b.read_timeout.as_secs_f64()
                    ),
                    retry_after: None,
                });
            }
            Ok(Err(e)) => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Err(Failure::Transient {
                    reason: source::describe(&e),
                    retry_after: None,
                });
            }
            Ok(Ok(None)) => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Ok(if shared.plan().has_more(w) {
                    BodyEnd::Eof
                } else {
                    BodyEnd::Finished
                });
            }
            Ok(Ok(Some(c))) => c,
        };
        if let Some(l) = &b.limiter {
            l.acquire(chunk.len() as u64).await;
        }
        // Never past what the response promised (a lying server), nor past the assignment
        // (another connection may have taken the rest).
        let promised = (chunk.len() as u64).min(limit.saturating_sub(pos));
        let take = shared.plan().claim(w, promised) as usize;
        buf.extend_from_slice(&chunk[..take]);
        written_here += take as u64;
        pos += take as u64;
        let stop = take < chunk.len();
        if stop
            || buf.len() >= shared.buf_size
            || last_flush.elapsed() >= Duration::from_millis(500)
        {
            flush(shared, source, buf, &mut buf_start).await?;
            last_flush = Instant::now();
            let secs = assigned_at.elapsed().as_secs_f64();
            let mut plan = shared.plan();
            if secs > 0.05 {
                plan.set_rate(w, written_here as f64 / secs);
            }
            if stop || !plan.has_more(w) {
                return Ok(BodyEnd::Finished);
            }
        }
    }
}

/// Writes the buffered bytes at their offset, then marks them done.
async fn flush(
    shared: &Shared,
    source: usize,
    buf: &mut Vec<u8>,
    buf_start: &mut u64,
) -> Result<(), Failure> {
    if buf.is_empty() {
        return Ok(());
    }
    let len = buf.len() as u64;
    let (back, res) = shared.part.write_at(std::mem::take(buf), *buf_start).await;
    *buf = back;
    buf.clear();
    res.map_err(Failure::Fatal)?;
    let written = *buf_start..*buf_start + len;
    shared.plan().commit(written.clone());
    *buf_start += len;
    if shared.pieces.is_some() {
        check_pieces(shared, &written, source).await?;
    }
    shared.fetched.fetch_add(len, Ordering::Relaxed);
    if shared.since_checkpoint.fetch_add(len, Ordering::Relaxed) + len >= shared.checkpoint_bytes {
        shared.checkpoint_due.notify_one();
    }
    Ok(())
}

/// Verifies the pieces that `source` just completed by writing `written`. A bad piece goes back
/// to the plan, and the source that sent it is dropped (a source sharing the blame is dropped
/// on its second bad piece); with no usable source left the download fails, keeping every
/// verified piece.
async fn check_pieces(shared: &Shared, written: &Range<u64>, source: usize) -> Result<(), Failure> {
    let tracker = shared.pieces.as_ref().expect("pieces configured");
    let ready = {
        let done = shared.plan().done().clone();
        tracker
            .lock()
            .expect("pieces lock")
            .wrote(written, source, &done)
    };
    verify_pieces(shared, ready).await
}

/// Checks `ready` pieces against their hashes and acts on the results.
async fn verify_pieces(shared: &Shared, ready: Vec<usize>) -> Result<(), Failure> {
    let tracker = shared.pieces.as_ref().expect("pieces configured");
    for i in ready {
        let (hashes, len) = {
            let t = tracker.lock().expect("pieces lock");
            (t.hashes.clone(), t.len)
        };
        let path = shared.part.path().to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path).and_then(|f| hashes.check(&f, i, len))
        })
        .await
        .map_err(|e| Failure::Fatal(Error::Setup(e.to_string())))?
        .map_err(|e| Failure::Fatal(Error::io(shared.part.path(), e)))?;
        let (blamed, strikes, range) = {
            let mut t = tracker.lock().expect("pieces lock");
            let blamed = t.checked(i, ok);
            (blamed, t.strikes.clone(), t.hashes.range(i, t.len))
        };
        if ok {
            continue;
        }
        shared.plan().reopen(range.clone());
        for s in &blamed {
            let src = &shared.sources[*s];
            if src.disabled().is_none() && (blamed.len() == 1 || strikes[*s] >= 2) {
                let why = format!(
                    "sent bytes {}-{} that failed verification",
                    range.start,
                    range.end - 1
                );
                shared.events().emit(Event::Warning {
                    file: shared.display.clone(),
                    message: format!("dropped {}: it {why}", redact(&src.url)),
                });
                src.disable(why);
            }
        }
        shared.notify.notify_waiters();
        if shared.sources.iter().all(|s| s.disabled().is_some()) {
            return Err(Failure::Fatal(Error::NoHonestSource {
                detail: format!(
                    "the last bad piece was bytes {}-{}",
                    range.start,
                    range.end - 1
                ),
            }));
        }
    }
    Ok(())
}

/// A URL for messages: without its query (where tokens travel).
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Makes progress durable: fdatasync the part file, then record what was written before it.
async fn save_checkpoint(
    shared: &Shared,
    journal: &tokio::sync::Mutex<(Journal, PathBuf)>,
) -> Result<(), Error> {
    let mut guard = journal.lock().await;
    shared.since_checkpoint.store(0, Ordering::Relaxed);
    // With pieces, only verified pieces are recorded: a resumed download never trusts bytes
    // that were not checked.
    let done = match &shared.pieces {
        Some(t) => t.lock().expect("pieces lock").verified.clone(),
        None => shared.plan().done().clone(),
    };
    if done == guard.0.done {
        return Ok(());
    }
    shared.part.sync().await?;
    let (j, path) = &mut *guard;
    j.done = done;
    let mut snapshot = j.clone();
    let path = path.clone();
    tokio::task::spawn_blocking(move || snapshot.save(&path))
        .await
        .map_err(|e| Error::Usage(format!("journal task failed: {e}")))?
}

/// Checkpoints every interval, or sooner when enough bytes arrived (but not more often than
/// every 50 ms, or 10× the last checkpoint's duration, so a fast link does not spend its time
/// in fsync).
async fn checkpoint_loop(
    shared: Arc<Shared>,
    journal: Arc<tokio::sync::Mutex<(Journal, PathBuf)>>,
) {
    let every = shared.cfg.builder.checkpoint_interval;
    // Syncing takes the disk's time, not ours, but a sync running all the time slows the
    // writers: keep the gap between checkpoints at least 10× the last one's duration.
    let mut min_gap = Duration::from_millis(50).min(every);
    loop {
        let last = Instant::now();
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = shared.checkpoint_due.notified() => {
                let gap = last.elapsed();
                if gap < min_gap {
                    tokio::select! {
                        _ = tokio::time::sleep(min_gap - gap) => {}
                        _ = shared.cancel.cancelled() => return,
                    }
                }
            }
        }
        if shared.cancel.is_cancelled() {
            return;
        }
        let t = Instant::now();
        if let Err(e) = save_checkpoint(&shared, &journal).await {
            shared.fail(Failure::Fatal(e));
            return;
        }
        min_gap = (t.elapsed() * 10).clamp(Duration::from_millis(50), every);
    }
}

/// Emits a progress event at most four times a second.
async fn progress_loop(shared: Arc<Shared>) {
    let total = shared.validators.length;
    let mut samples: std::collections::VecDeque<(Instant, u64)> = Default::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let (done, connections) = {
            let plan = shared.plan();
            (plan.done().covered(), plan.active_count())
        };
        let now = Instant::now();
        samples.push_back((now, shared.fetched.load(Ordering::Relaxed)));
        while samples.len() > 2 && now.duration_since(samples[0].0) > Duration::from_secs(3) {
            samples.pop_front();
        }
        let (t0, b0) = samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        let rate = if secs > 0.0 {
            ((samples.back().expect("one sample").1 - b0) as f64 / secs) as u64
        } else {
            0
        };
        shared.events().emit(Event::Progress {
            file: shared.display.clone(),
            done,
            total,
            rate,
            connections,
        });
    }
}
