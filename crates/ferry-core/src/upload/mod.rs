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
//!
//! The jobs live in submodules: `config` (builder and settings), `plan` (the parts and their
//! creation), `send` (sending a part), `concat` (joining the parts), `retry` (retry helpers),
//! `progress` (progress events), `shared` (state of the part tasks), [`journal`], and the
//! protocols behind one seam (`protocol`): [`tus`] (default) and [`ietf`] (`--protocol ietf`).

mod concat;
mod config;
pub mod ietf;
pub mod journal;
mod plan;
mod progress;
mod protocol;
mod retry;
mod send;
mod shared;
pub mod tus;

pub use config::UploadBuilder;
pub use protocol::Protocol;

use crate::error::Error;
use crate::events::Event;
use crate::verify::Algorithm;
use config::Config;
use journal::{FileIdentity, UploadJournal};
use progress::{PartProgress, report};
use protocol::Client;
use retry::retrying;
use shared::Shared;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

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
    /// The file's length.
    pub bytes: u64,
    /// Bytes the server had already from an earlier run.
    pub resumed: u64,
    /// Bytes sent in this run (including any re-sent after errors).
    pub sent: u64,
    /// How long the run took.
    pub secs: f64,
    /// The checksum algorithm every PATCH carried, if the server offered one.
    pub checksum: Option<&'static str>,
}

impl Upload {
    /// Upload `file` to the tus endpoint `endpoint`.
    pub fn builder(file: impl Into<PathBuf>, endpoint: impl Into<String>) -> UploadBuilder {
        UploadBuilder::new(file.into(), endpoint.into())
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
                .map_err(|e| Error::task("file identity", e))??
        };
        let size = identity.size;
        let remote = self.cfg.remote()?;
        let tus = self.cfg.protocol_client(&self.endpoint, size)?;
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
        let mut journal = self
            .earlier_run(&tus, &journal_path, &file, &identity, &remote, &display)
            .await;
        if journal.finished {
            // The same file went up to the same name in an earlier run: nothing to send,
            // unless the server no longer has it.
            if tus.target_exists(&self.cfg.landing(&remote)).await != Some(false) {
                return Ok(self.nothing_to_send(&journal, display, started));
            }
            journal::remove(&journal_path);
            journal = UploadJournal::new(self.endpoint.as_str(), &file, &identity, &remote);
        }
        let resuming = !journal.parts.is_empty();
        let landing = self.cfg.landing(&remote);
        if !resuming && !self.cfg.overwrite && tus.target_exists(&landing).await == Some(true) {
            // Refused before sending anything (the server would refuse the finished upload).
            return Err(Error::Exists {
                path: PathBuf::from(landing),
            });
        }
        let metadata = self.cfg.metadata(&remote);
        let created = if resuming {
            None
        } else {
            let requests = plan::Requests {
                cfg: &self.cfg,
                display: &display,
                cancel: &cancel,
            };
            let created =
                plan::create_parts(requests, &tus, &caps, &file, size, &metadata, &mut journal)
                    .await?;
            journal::save(&journal_path, &journal)?;
            if self.cfg.connections > 1 && !caps.has("concatenation") {
                self.cfg.events.emit(Event::Warning {
                    file: display.clone(),
                    message: "the server does not support concatenation (parallel uploads); sending over one connection".into(),
                });
            }
            Some(created)
        };

        let chunk = self.chunk_size(&journal);
        let progress = PartProgress::for_parts(&journal.parts);
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
            sent: Arc::new(AtomicU64::new(created.as_ref().map_or(0, |c| c.presend))),
            // The parts stop together on the first error without touching the caller's token.
            cancel: cancel.child_token(),
        });

        // Bytes sent with the creation request are this run's, not resumed ones.
        let presend = created.as_ref().map_or(0, |c| c.presend);
        let offsets = shared
            .offsets(&parts, created.and_then(|c| c.first_offset))
            .await?;
        let resumed: u64 = offsets.iter().sum::<u64>().saturating_sub(presend);
        self.cfg.events.emit(Event::Start {
            url: self.endpoint.to_string(),
            file: display.clone(),
            total: Some(size),
            resumed,
            connections: parts.len(),
            ranges: parts.len() > 1,
        });

        send_parts(&shared, offsets).await?;

        let url = if parts.len() > 1 {
            shared.finish_concatenation(size).await?
        } else {
            parts[0].url.clone()
        };
        // Kept as finished: a rerun of the same command (after Ctrl-C in a folder upload, say)
        // has nothing to send for this file instead of meeting "already exists".
        {
            let mut j = shared.journal.lock().expect("journal lock");
            j.finished = true;
            j.final_url = Some(url.clone());
            journal::save(&journal_path, &j)?;
        }
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

    /// The outcome of a rerun after the upload finished: a `Done` event, nothing sent.
    fn nothing_to_send(
        &self,
        journal: &UploadJournal,
        display: String,
        started: Instant,
    ) -> UploadOutcome {
        let secs = started.elapsed().as_secs_f64();
        self.cfg.events.emit(Event::Done {
            file: display,
            bytes: journal.size,
            fetched: 0,
            secs,
            verified: Vec::new(),
        });
        UploadOutcome {
            url: journal
                .final_url
                .clone()
                .or_else(|| journal.parts.first().map(|p| p.url.clone()))
                .unwrap_or_default(),
            bytes: journal.size,
            resumed: journal.size,
            sent: 0,
            secs,
            checksum: None,
        }
    }

    /// Bytes per PATCH: as configured, else a sixteenth of the longest part, between 1 and
    /// 32 MiB.
    fn chunk_size(&self, journal: &UploadJournal) -> u64 {
        let longest = journal
            .parts
            .iter()
            .map(|p| p.end - p.start)
            .max()
            .unwrap_or(0);
        self.cfg
            .chunk_size
            .unwrap_or_else(|| (longest / 16).clamp(1 << 20, 32 << 20))
    }

    /// The journal of an earlier run of this upload, when it is still usable; else (the file
    /// or the remote name changed) the earlier uploads are terminated on the server and a new,
    /// empty journal is returned.
    async fn earlier_run(
        &self,
        tus: &Client,
        journal_path: &Path,
        file: &Path,
        identity: &FileIdentity,
        remote: &str,
        display: &str,
    ) -> UploadJournal {
        match journal::load(journal_path) {
            Some(j) if j.same_file(identity) && j.remote == remote && !j.parts.is_empty() => {
                if j.finished && self.cfg.overwrite {
                    // --overwrite sends it again.
                    journal::remove(journal_path);
                    return UploadJournal::new(self.endpoint.as_str(), file, identity, remote);
                }
                j
            }
            Some(old) => {
                if !old.same_file(identity) && !old.finished {
                    self.cfg.events.emit(Event::Warning {
                        file: display.to_owned(),
                        message: "the file changed since its upload began; starting again".into(),
                    });
                }
                // A finished upload is the server's file now: not ours to terminate.
                let unfinished = if old.finished {
                    &[][..]
                } else {
                    &old.parts[..]
                };
                for p in unfinished
                    .iter()
                    .map(|p| p.url.as_str())
                    .chain(old.final_url.as_deref().filter(|_| !old.finished))
                {
                    if let Ok(u) = Url::parse(p) {
                        let _ = tus.terminate(&u).await;
                    }
                }
                journal::remove(journal_path);
                UploadJournal::new(self.endpoint.as_str(), file, identity, remote)
            }
            None => UploadJournal::new(self.endpoint.as_str(), file, identity, remote),
        }
    }
}

/// Sends every part from its offset at once, with progress events; the first error stops the
/// others and is returned.
async fn send_parts(shared: &Arc<Shared>, offsets: Vec<u64>) -> Result<(), Error> {
    let reporter = tokio::spawn(report(shared.clone()));
    let mut tasks = Vec::new();
    for (i, off) in offsets.into_iter().enumerate() {
        let s = shared.clone();
        tasks.push(tokio::spawn(async move { s.send_part(i, off).await }));
    }
    let mut result = Ok(());
    for t in tasks {
        let r = t
            .await
            .unwrap_or_else(|e| Err(Error::task("part upload", e)));
        if let Err(e) = r {
            // The first error wins; the others stop with it.
            if result.is_ok() {
                shared.cancel.cancel();
                result = Err(e);
            }
        }
    }
    reporter.abort();
    result
}
