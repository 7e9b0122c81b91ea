//! A download's own files, `<name>.part` and `<name>.ferry`: reading the journal, telling
//! ferry's pair from files that merely have its names, discarding the pair (`--restart`), and
//! opening it for a run in an order that never lets a journal claim bytes of another part file,
//! with the space reservation given back when it fails.
//!
//! A part file is ferry's only when a ferry journal beside it describes it
//! ([`resume::part_state`]); a journal is ferry's only when it begins with ferry's magic line
//! ([`Journal::load`]). Anything else at those names is never written, truncated or deleted.

use super::Target;
use super::resume::{self, PartState};
use crate::error::Error;
use crate::journal::{Journal, with_suffix};
use crate::ranges::RangeSet;
use crate::sink::PartFile;
use std::path::Path;

/// How a run starts on its part file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Continue: ferry's part file and journal stay as they are.
    Resume,
    /// From zero, over ferry's own part file (and journal).
    OverOurs,
    /// From zero with a new part file; `journal_on_disk` when ferry's journal is there already.
    New {
        /// ferry's journal is at `<name>.ferry` (it is replaced, not created).
        journal_on_disk: bool,
    },
}

/// Reads the journal of `dest`, if there is one.
pub(super) fn load_journal(dest: &Path) -> Result<Option<Journal>, Error> {
    Journal::load(&Journal::path_for(dest))
}

/// What `<name>.part` of `target` is, given its journal.
pub(super) fn part_state(target: &Target, journal: Option<&Journal>) -> Result<PartState, Error> {
    resume::part_state(&target.part_path, journal).map_err(|e| Error::io(&target.part_path, e))
}

/// Removes ferry's partial download of `dest` (part file, then journal) before starting over.
/// Only ferry's files go: a journal that is not ferry's is an error, and a part file that no
/// journal of ferry's describes stays (the fresh start then refuses it, saying why). The part
/// file beside a ferry journal that does not check out (edited, damaged) is taken as ferry's
/// when it is a regular file.
pub(super) fn discard_partial(dest: &Path) -> Result<(), Error> {
    let journal_path = Journal::path_for(dest);
    let part = with_suffix(dest, ".part");
    let ours = match Journal::load(&journal_path) {
        Ok(None) => return Ok(()),
        Ok(Some(j)) => {
            resume::part_state(&part, Some(&j)).map_err(|e| Error::io(&part, e))? == PartState::Ours
        }
        Err(Error::JournalCorrupt { .. }) => {
            std::fs::symlink_metadata(&part).is_ok_and(|m| m.file_type().is_file())
        }
        Err(e) => return Err(e),
    };
    if ours {
        match std::fs::remove_file(&part) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&part, e)),
        }
    }
    Journal::remove(&journal_path)
}

/// Opens the part file for a run and saves the journal, in this order:
///
/// - resume: lock ferry's part file, reserve the missing bytes' blocks, save the journal;
/// - from zero over ferry's part file: lock it, save the fresh journal (nothing done), then
///   empty the file, so no journal ever claims bytes of the old content;
/// - from zero with a new part file: the fresh journal first (a new one never replaces a file
///   that appeared meanwhile), then the part file, created where nothing is.
///
/// When the reservation (`len`, when known) fails, its blocks are given back: a part file made
/// for this run is removed with its journal, and a resumed one keeps only the bytes it held.
pub(super) fn open(
    target: &Target,
    journal: &mut Journal,
    start: Start,
    len: Option<u64>,
) -> Result<PartFile, Error> {
    let part = match start {
        Start::Resume => {
            let part = PartFile::open_existing(&target.part_path)?;
            if let Some(len) = len {
                part.reserve(len, &journal.done)?;
            }
            journal.save(&target.journal_path)?;
            return Ok(part);
        }
        Start::OverOurs => {
            let part = PartFile::open_existing(&target.part_path)?;
            journal.save(&target.journal_path)?;
            part.truncate()?;
            part
        }
        Start::New { journal_on_disk } => {
            if journal_on_disk {
                journal.save(&target.journal_path)?;
            } else {
                journal.create(&target.journal_path)?;
            }
            match PartFile::create(&target.part_path) {
                Ok(p) => p,
                Err(e) => {
                    if !journal_on_disk {
                        let _ = Journal::remove(&target.journal_path);
                    }
                    return Err(e);
                }
            }
        }
    };
    if let Some(len) = len
        && let Err(e) = part.reserve(len, &RangeSet::new())
    {
        // Nothing of value is in either file: both go, so a rerun starts clean.
        let _ = part.remove();
        let _ = Journal::remove(&target.journal_path);
        return Err(e);
    }
    Ok(part)
}
