//! The state the part tasks of one upload share (the tus client, the journal, progress), and
//! where each part stands on the server: its URL, its offset, its re-creation when forgotten.

use super::config::Config;
use super::journal::{self, Part, UploadJournal};
use super::progress::PartProgress;
use super::protocol::Client;
use super::retry::{retrying, retrying_gone};
use super::tus::Capabilities;
use crate::error::Error;
use crate::events::Event;
use crate::verify::Algorithm;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use url::Url;

/// State shared by the part tasks of one upload.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<Config>,
    pub(crate) file: PathBuf,
    pub(crate) display: String,
    pub(crate) tus: Client,
    pub(crate) caps: Capabilities,
    pub(crate) algo: Option<Algorithm>,
    pub(crate) chunk: u64,
    /// `Upload-Metadata` of the upload (or of the final upload joining the parts).
    pub(crate) metadata: String,
    pub(crate) journal: Mutex<UploadJournal>,
    pub(crate) journal_path: PathBuf,
    pub(crate) progress: Vec<PartProgress>,
    pub(crate) sent: Arc<AtomicU64>,
    pub(crate) cancel: CancellationToken,
}

impl Shared {
    /// The URL of part `i` on the server, from the journal.
    pub(crate) fn url(&self, i: usize) -> Result<Url, Error> {
        let raw = self.journal.lock().expect("journal lock").parts[i]
            .url
            .clone();
        Url::parse(&raw).map_err(|e| Error::Protocol {
            url: raw,
            detail: format!("bad upload URL in the journal: {e}"),
        })
    }

    /// Where each of `parts` stands on the server (the first at `first_offset` when its
    /// creation just said so), recorded as acknowledged progress.
    pub(crate) async fn offsets(
        &self,
        parts: &[Part],
        first_offset: Option<u64>,
    ) -> Result<Vec<u64>, Error> {
        let mut offsets = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let off = match first_offset {
                Some(o) if i == 0 => o,
                _ => self.offset_of(i, p).await?,
            };
            self.progress[i].acked.store(off, Ordering::Relaxed);
            offsets.push(off);
        }
        Ok(offsets)
    }

    /// The server's offset of part `i`; a part the server forgot is created again.
    pub(crate) async fn offset_of(&self, i: usize, part: &Part) -> Result<u64, Error> {
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
    pub(crate) async fn recreate(&self, i: usize) -> Result<(), Error> {
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
}
