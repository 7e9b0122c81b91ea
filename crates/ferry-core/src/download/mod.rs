//! One download, start to finish: probe the source, load or start the journal, run the
//! connections (range plan, work stealing, endgame), checkpoint, verify, rename into place.
//!
//! ```text
//! probe ──► name, validators, length ──► journal (resume or fresh) ──► N connection tasks
//!                                                 ▲                         │ positioned writes
//!                                   checkpointer ─┘ (fdatasync, then journal) ▼
//!                                                                        <name>.part ──► verify ──► <name>
//! ```
//!
//! The jobs live in submodules: `config` (builder and validated settings), `probe` (the
//! first request), `resume` (the resume decision), `worker` and `body` (the connections and
//! the hot path), `piece_checks`, `checkpoint` (durable progress and progress events),
//! `client_pool` (HTTP clients shared by downloads) and `finish` (verification and outcome).

mod body;
mod checkpoint;
mod client_pool;
mod config;
mod finish;
mod finished_mark;
mod piece_checks;
mod probe;
mod resume;
mod shared;
mod staging;
mod worker;

pub use config::{DownloadBuilder, Output};

/// Whether `path` is a file ferry finished downloading (it carries ferry's mark), as opposed
/// to one that merely sits where a download would go.
pub fn finished_by_ferry(path: &Path) -> bool {
    finished_mark::present(path)
}

use crate::error::Error;
use crate::events::Event;
use crate::journal::{Journal, with_suffix};
use crate::naming;
use crate::pieces::PieceTracker;
use crate::plan::Plan;
use crate::sink::PartFile;
use crate::source::{Failure, HttpSource};
use crate::verify::{self, Expected};
use checkpoint::{JournalSlot, checkpoint_loop, progress_loop};
use client_pool::ClientPool;
use config::Config;
use probe::Probe;
use reqwest::header;
use resume::{Decision, OnDisk, PartState, ProbeView, Refusal, RestartReason, ResumeOptions};
use shared::Shared;
use staging::{Start, discard_partial, load_journal};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
    /// Where the file is.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// Bytes fetched in this run.
    pub fetched: u64,
    /// Digests that were checked, as `algo (origin)`.
    pub verified: Vec<String>,
    /// True when the file was already complete and nothing was fetched.
    pub already_complete: bool,
}

/// Internal result of one attempt at the whole download.
pub(crate) enum RunError {
    Fatal(Error),
    /// The remote file changed: start over (unless told not to).
    Changed(String),
}

impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        RunError::Fatal(e)
    }
}

/// The files of one download: the destination, its part file and its journal.
struct Target {
    dest: PathBuf,
    display: String,
    part_path: PathBuf,
    journal_path: PathBuf,
}

impl Target {
    fn new(dest: PathBuf) -> Self {
        Target {
            display: dest.display().to_string(),
            part_path: with_suffix(&dest, ".part"),
            journal_path: Journal::path_for(&dest),
            dest,
        }
    }
}

/// How the resume decision leaves the download.
enum Settled {
    /// Go on with this journal (new unless resuming), starting on the part file so.
    Go { journal: Journal, start: Start },
    /// The file is complete already, this long.
    Complete { bytes: u64 },
}

/// What the connections leave behind for the end of the download.
struct Ran {
    /// The part file (the connections' copy is in `shared`).
    part: PartFile,
    /// Digests the server announced (verified at the end).
    header_digests: Vec<Expected>,
    shared: Arc<Shared>,
    journal: Arc<JournalSlot>,
}

/// Everything ready for the connections to start.
struct Prepared {
    journal: Journal,
    part: PartFile,
    /// Digests the server announced (verified at the end).
    header_digests: Vec<Expected>,
    /// Ranges are usable and the length is known.
    ranged: bool,
    connections: usize,
    /// Per-piece verification, when the pieces' hashes are known.
    pieces: Option<Mutex<PieceTracker>>,
}

impl Download {
    /// A builder with the default settings.
    pub fn builder() -> DownloadBuilder {
        DownloadBuilder::default()
    }

    /// The output path if it is known before contacting the server (`-o`), else `None`.
    pub fn known_path(&self) -> Option<PathBuf> {
        match &self.cfg.settings.output {
            Output::File(p) => Some(p.clone()),
            Output::Dir(_) => None,
        }
    }

    /// The file name in events sent before the name is known: the known path, else empty.
    fn label(&self) -> String {
        self.known_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Runs the download until it is complete and verified, fails, or `cancel` fires (then the
    /// journal is saved and the error is [`Error::Cancelled`]).
    pub async fn run(&self, cancel: CancellationToken) -> Result<Outcome, Error> {
        let s = &self.cfg.settings;
        let mut restart = s.restart;
        let mut restarts = 0;
        loop {
            match self.attempt(restart, &cancel).await {
                Ok(o) => return Ok(o),
                Err(RunError::Fatal(e)) => return Err(e),
                Err(RunError::Changed(detail)) => {
                    if s.no_restart {
                        return Err(Error::RemoteChanged { detail });
                    }
                    restarts += 1;
                    if restarts > 3 {
                        return Err(Error::RemoteChanged {
                            detail: format!("{detail}; it kept changing over {restarts} restarts"),
                        });
                    }
                    s.events.emit(Event::Warning {
                        file: self.label(),
                        message: format!("the remote file changed ({detail}); starting over"),
                    });
                    restart = true;
                }
            }
        }
    }

    /// One attempt at the whole download; a changed remote file ends it with
    /// [`RunError::Changed`].
    async fn attempt(
        &self,
        restart: bool,
        cancel: &CancellationToken,
    ) -> Result<Outcome, RunError> {
        let s = &self.cfg.settings;
        let started = Instant::now();
        let sources: Arc<Vec<HttpSource>> = Arc::new(
            self.cfg
                .urls
                .iter()
                .cloned()
                .map(|u| HttpSource::new(u, &s.client))
                .collect(),
        );
        let clients = ClientPool::for_options(&s.client);

        // 1. Where does it go, and is there earlier progress?
        let (dest, journal) = self.known_destination(restart)?;

        // 2. Probe: the first missing bytes (or the start), with If-Range when resuming.
        let (range, if_range) = probe::probe_request(journal.as_ref(), s.min_split);
        let probe = probe::probe(
            &self.cfg,
            &self.label(),
            &sources,
            &clients,
            range,
            if_range.as_deref(),
            cancel,
        )
        .await?;

        // 3. Name the file (Content-Disposition, the final URL, the URL) when only a directory was given.
        let (target, journal) = match dest {
            Some(d) => (Target::new(d), journal),
            None => {
                let d = self.name_from_probe(&probe);
                if restart {
                    discard_partial(&d)?;
                }
                let journal = load_journal(&d)?;
                (Target::new(d), journal)
            }
        };

        // 4. Fresh start or resume?
        let (journal, start) = match self.settle(&target, journal, &probe, restart)? {
            Settled::Go { journal, start } => (journal, start),
            Settled::Complete { bytes } => {
                drop(probe);
                return Ok(self.already_complete(target, bytes, started).await?);
            }
        };

        // 5. Part file, journal, and the first events; then the connections.
        let prepared = self.prepare(&target, journal, start, &probe)?;
        let ran = self
            .run_connections(&target, prepared, probe, sources, clients, cancel)
            .await;

        // 6. Final checkpoint; then either an error (progress saved) or verify and rename.
        self.finish(target, ran, cancel, started).await
    }

    /// The destination when it is known before the probe (`-o`, or a directory holding a
    /// journal under the URL's name), with the journal of earlier progress.
    fn known_destination(
        &self,
        restart: bool,
    ) -> Result<(Option<PathBuf>, Option<Journal>), Error> {
        let dest = match &self.cfg.settings.output {
            Output::File(p) => Some(p.clone()),
            Output::Dir(d) => naming::from_url(&self.cfg.urls[0])
                .map(|n| d.join(n))
                .filter(|p| std::fs::symlink_metadata(Journal::path_for(p)).is_ok()),
        };
        if restart && let Some(d) = &dest {
            discard_partial(d)?;
        }
        let journal = match &dest {
            Some(d) => load_journal(d)?,
            None => None,
        };
        Ok((dest, journal))
    }

    /// The destination in the output directory, named by Content-Disposition, the final URL,
    /// the URL, or a fallback.
    fn name_from_probe(&self, probe: &Probe) -> PathBuf {
        let Output::Dir(dir) = &self.cfg.settings.output else {
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
        dir.join(name)
    }

    /// Applies the resume decision: the journal to go on with (a new one when starting fresh or
    /// over), that the file is complete already, or the refusal as an error.
    fn settle(
        &self,
        target: &Target,
        journal: Option<Journal>,
        probe: &Probe,
        restart: bool,
    ) -> Result<Settled, RunError> {
        let s = &self.cfg.settings;
        let verifiable = !s.checksums.is_empty() || s.pieces.is_some();
        let part = staging::part_state(target, journal.as_ref())?;
        let disk = OnDisk {
            part: part.clone(),
            dest_trusted: journal.is_none()
                && (verifiable || finished_mark::vouches_for(&target.dest, &probe.validators)),
            dest_len: match &journal {
                Some(_) => None,
                None if !restart && target.dest.exists() => Some(
                    std::fs::metadata(&target.dest)
                        .map_err(|e| Error::io(&target.dest, e))?
                        .len(),
                ),
                None => None,
            },
        };
        let decision = resume::decide(
            journal.as_ref(),
            ProbeView {
                validators: &probe.validators,
                ranged: probe.ranged,
            },
            ResumeOptions {
                urls: &self.cfg.urls,
                restart,
            },
            disk,
        );
        let warn = |message: String| {
            s.events.emit(Event::Warning {
                file: target.display.clone(),
                message,
            })
        };
        if let Some(j) = &journal
            && !matches!(decision, Decision::Refuse(_))
            && resume::unguarded(j)
        {
            warn("the server sends neither ETag nor Last-Modified, so a change of the remote file that keeps its length cannot be detected on resume".into());
        }
        let journal = match decision {
            Decision::Resume => journal,
            Decision::Fresh => None,
            Decision::Restart(RestartReason::PartMissing) => {
                warn(format!(
                    "{} is missing; starting over",
                    target.part_path.display()
                ));
                None
            }
            Decision::Restart(RestartReason::NoRanges) => {
                warn("the server does not support ranges now, so the partial download cannot be resumed; starting over".into());
                None
            }
            Decision::AlreadyComplete { bytes } => return Ok(Settled::Complete { bytes }),
            Decision::Refuse(Refusal::Changed { detail }) => return Err(RunError::Changed(detail)),
            Decision::Refuse(Refusal::Foreign { detail }) => {
                return Err(Error::JournalForeign {
                    path: target.journal_path.clone(),
                    detail,
                }
                .into());
            }
            Decision::Refuse(Refusal::Exists) => {
                return Err(Error::Exists {
                    path: target.dest.clone(),
                }
                .into());
            }
            Decision::Refuse(Refusal::PartNotOurs { reason }) => {
                return Err(Error::InTheWay {
                    path: target.part_path.clone(),
                    reason,
                }
                .into());
            }
        };
        let start = match (&journal, part) {
            (Some(_), _) => Start::Resume,
            (None, PartState::Ours) => Start::OverOurs,
            (None, _) => Start::New {
                journal_on_disk: std::fs::symlink_metadata(&target.journal_path).is_ok(),
            },
        };
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
        Ok(Settled::Go { journal, start })
    }

    /// Creates the part file (and its directory) and saves the journal; announces the start.
    fn prepare(
        &self,
        target: &Target,
        journal: Journal,
        start: Start,
        probe: &Probe,
    ) -> Result<Prepared, RunError> {
        let s = &self.cfg.settings;
        let total = probe.validators.length;
        let mut journal = journal;
        if let Some(parent) = target.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let part = staging::open(target, &mut journal, start, total)?;
        let header_digests = verify::from_headers(&probe.headers);

        let ranged = probe.ranged && total.is_some();
        let connections = if ranged { s.connections.max(1) } else { 1 };
        if !ranged && s.connections > 1 {
            s.events.emit(Event::Warning {
                file: target.display.clone(),
                message: "the server does not support byte ranges; using one connection".into(),
            });
        }
        s.events.emit(Event::Start {
            url: self.cfg.urls[0].to_string(),
            file: target.display.clone(),
            total,
            resumed: journal.done.covered(),
            connections,
            ranges: ranged,
        });
        let pieces = match &s.pieces {
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
        Ok(Prepared {
            journal,
            part,
            header_digests,
            ranged,
            connections,
            pieces,
        })
    }

    /// Runs the connections (the probe's body goes to the first), the checkpointer and the
    /// progress ticker until every connection stopped.
    async fn run_connections(
        &self,
        target: &Target,
        prepared: Prepared,
        probe: Probe,
        sources: Arc<Vec<HttpSource>>,
        clients: ClientPool,
        cancel: &CancellationToken,
    ) -> Ran {
        let s = &self.cfg.settings;
        let part = prepared.part.clone();
        let total = probe.validators.length;
        let connections = prepared.connections;
        let plan_len = total.unwrap_or(u64::MAX);
        let mut plan = Plan::new(
            plan_len,
            prepared.journal.done.clone(),
            connections,
            s.min_split,
        )
        .with_min_steal_secs(0.5);
        // The probe's body belongs to worker 0: give it the range that starts there.
        if probe.resp.is_some() {
            plan.assign_at(0, probe.start);
        }
        let shared = Arc::new(Shared {
            pieces: prepared.pieces,
            cfg: self.cfg.clone(),
            sources,
            plan: Mutex::new(plan),
            part: prepared.part,
            ranged: prepared.ranged,
            validators: probe.validators.clone(),
            cancel: cancel.child_token(),
            notify: Notify::new(),
            checkpoint_due: Notify::new(),
            fetched: AtomicU64::new(0),
            since_checkpoint: AtomicU64::new(0),
            checkpoint_bytes: s.checkpoint_bytes.unwrap_or(512 << 10) * connections as u64,
            failure: Mutex::new(None),
            eof_at: Mutex::new(None),
            display: target.display.clone(),
            started: Instant::now(),
            buf_size: ((16usize << 20)
                .div_ceil(connections)
                .clamp(64 << 10, 512 << 10) as u64)
                .min(total.unwrap_or(u64::MAX).max(4096)) as usize,
        });
        let journal = Arc::new(tokio::sync::Mutex::new((
            prepared.journal,
            target.journal_path.clone(),
        )));
        let checkpointer = tokio::spawn(checkpoint_loop(shared.clone(), journal.clone()));
        let ticker = tokio::spawn(progress_loop(shared.clone()));
        let mut tasks = Vec::new();
        let mut first = Some(probe);
        for w in 0..connections {
            let probe = if w == 0 { first.take() } else { None };
            tasks.push(tokio::spawn(worker::worker(
                shared.clone(),
                w,
                clients.clone(),
                probe,
            )));
        }
        for t in tasks {
            if let Err(e) = t.await {
                shared.fail(Failure::Fatal(Error::io(
                    &target.part_path,
                    std::io::Error::other(format!("connection task panicked: {e}")),
                )));
            }
        }
        shared.cancel.cancel();
        let _ = ticker.await;
        let _ = checkpointer.await;
        Ran {
            part,
            header_digests: prepared.header_digests,
            shared,
            journal,
        }
    }
}
