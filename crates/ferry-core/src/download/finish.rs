//! The end of a download: the last piece checks and checkpoint, the error that says why an
//! incomplete download stopped, or verification of the whole file, the rename into place and
//! the [`Outcome`]. Also the rerun of a finished download (verify only).

use super::checkpoint::save_checkpoint;
use super::piece_checks::verify_pieces;
use super::{Download, Outcome, Ran, RunError, Target};
use crate::error::Error;
use crate::events::Event;
use crate::journal::Journal;
use crate::sink::finalize;
use crate::source::Failure;
use crate::verify::{self, Expected};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

impl Download {
    /// After the connections stopped: checks the last pieces, then either saves progress and
    /// returns why the download is incomplete, or verifies the file and renames it into place.
    pub(super) async fn finish(
        &self,
        target: Target,
        ran: Ran,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<Outcome, RunError> {
        let s = &self.cfg.settings;
        let Ran {
            part,
            header_digests,
            shared,
            journal,
        } = ran;
        let shared = &*shared;
        let journal = &*journal;
        let total = shared.validators.length;
        if let Some(t) = &shared.pieces
            && shared.failure.lock().expect("failure lock").is_none()
        {
            let ready = {
                let done = shared.plan().done().clone();
                t.lock().expect("pieces lock").unverified_written(&done)
            };
            if let Err(f) = verify_pieces(shared, ready).await {
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
            save_checkpoint(shared, journal).await?;
            return Err(self.stopped_because(failure, cancel, shared.ranged));
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
        // The journal records the whole file before verification: after a checksum mismatch,
        // a rerun with the right checksum verifies the data kept without fetching it again.
        save_checkpoint(shared, journal).await?;
        s.events.emit(Event::Verifying {
            file: target.display.clone(),
        });
        let mut verified = self
            .verify(&target.part_path, &header_digests, false)
            .await?;
        if let Some(h) = &s.pieces {
            verified.push(format!("blake3 ({} pieces)", h.hashes.len()));
        }
        let made = crate::journal::Validators {
            length: Some(bytes),
            ..shared.validators.clone()
        };
        super::finished_mark::set(&target.part_path, &made);
        finalize(&target.part_path, &target.dest)?;
        Journal::remove(&target.journal_path)?;
        let fetched = shared.fetched.load(Ordering::Relaxed);
        s.events.emit(Event::Done {
            file: target.display,
            bytes,
            fetched,
            secs: started.elapsed().as_secs_f64(),
            verified: verified.clone(),
        });
        Ok(Outcome {
            path: target.dest,
            bytes,
            fetched,
            verified,
            already_complete: false,
        })
    }

    /// Why an incomplete download stopped, from the failure the connections recorded.
    fn stopped_because(
        &self,
        failure: Option<Failure>,
        cancel: &CancellationToken,
        ranged: bool,
    ) -> RunError {
        match failure {
            Some(Failure::Changed(d)) => RunError::Changed(d),
            Some(Failure::Fatal(e)) => RunError::Fatal(e),
            Some(Failure::Transient { reason, .. }) => RunError::Fatal(Error::RetriesExhausted {
                url: self.cfg.urls[0].to_string(),
                attempts: self.cfg.settings.retry.max_attempts,
                last: reason,
            }),
            None if cancel.is_cancelled() && !ranged => {
                RunError::Fatal(Error::CancelledWithoutResume)
            }
            None if cancel.is_cancelled() => RunError::Fatal(Error::Cancelled),
            None => RunError::Fatal(Error::Network {
                url: self.cfg.urls[0].to_string(),
                detail: "every connection stopped before the download was complete".into(),
            }),
        }
    }

    /// A rerun of a finished download: the file is there at the right length; verify it.
    pub(super) async fn already_complete(
        &self,
        target: Target,
        on_disk: u64,
        started: Instant,
    ) -> Result<Outcome, Error> {
        let verified = self.verify(&target.dest, &[], true).await?;
        self.cfg.settings.events.emit(Event::Done {
            file: target.dest.display().to_string(),
            bytes: on_disk,
            fetched: 0,
            secs: started.elapsed().as_secs_f64(),
            verified: verified.clone(),
        });
        Ok(Outcome {
            path: target.dest,
            bytes: on_disk,
            fetched: 0,
            verified,
            already_complete: true,
        })
    }

    /// Checks the user's digests and the server's (and every piece, with `all_pieces`, for a
    /// file that was not verified piece by piece as it arrived); returns what was checked.
    async fn verify(
        &self,
        path: &Path,
        from_headers: &[Expected],
        all_pieces: bool,
    ) -> Result<Vec<String>, Error> {
        let s = &self.cfg.settings;
        let mut names = Vec::new();
        if all_pieces && let Some(h) = s.pieces.clone() {
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
            .map_err(|e| Error::task("verification", e))?
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
        let mut expected: Vec<Expected> = s.checksums.clone();
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
            .map_err(|e| Error::task("verification", e))??;
        Ok(names)
    }
}
