//! The resume decision: given the journal of earlier progress (if any), what the probe says
//! about the remote file now, the options and what is on disk, whether to resume, start over,
//! refuse, or start fresh. A pure function, so every case is tested without a server.

use crate::journal::{Journal, Validators};
use std::path::Path;
use url::Url;

/// What the probe learned that matters for resuming.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeView<'a> {
    /// The remote file's validators now.
    pub(crate) validators: &'a Validators,
    /// The server answered the range we asked for.
    pub(crate) ranged: bool,
}

/// The options that matter for resuming.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResumeOptions<'a> {
    /// The URLs of this download.
    pub(crate) urls: &'a [Url],
    /// Start from zero whatever is on disk (the partial download was discarded already).
    pub(crate) restart: bool,
}

/// What `<name>.part` is, as far as the journal beside it tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartState {
    /// Nothing is there.
    Absent,
    /// ferry's: a regular file that a ferry journal describes (its size fits the journal).
    Ours,
    /// Something ferry must not touch, and why.
    NotOurs(String),
}

/// What is on disk next to the destination.
#[derive(Debug, Clone)]
pub(crate) struct OnDisk {
    /// What `<name>.part` is.
    pub(crate) part: PartState,
    /// The length of `<name>` itself, when it exists.
    pub(crate) dest_len: Option<u64>,
    /// `<name>` can be trusted to be this download if its length is right: ferry marked it
    /// when it finished downloading this remote file, or the download can verify it (a
    /// checksum or piece hashes). Any other file is not ferry's to trust or touch.
    pub(crate) dest_trusted: bool,
}

/// What to do with earlier progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// No earlier progress: start a new download.
    Fresh,
    /// Continue the journal's download.
    Resume,
    /// The journal cannot be continued: start from zero (with a warning saying why).
    Restart(RestartReason),
    /// The file is there already, complete (same length, no journal, and ferry's or
    /// verifiable): nothing to fetch.
    AlreadyComplete {
        /// Its length.
        bytes: u64,
    },
    /// Do not touch what is on disk.
    Refuse(Refusal),
}

/// Why a journal is abandoned and the download starts from zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestartReason {
    /// The journal is there but `<name>.part` is not.
    PartMissing,
    /// The server no longer answers ranges, so nothing can be appended.
    NoRanges,
}

/// Why earlier progress (or a file) stops the download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The journal describes another file from other URLs: it is not ours to replace.
    Foreign {
        /// How the files differ.
        detail: String,
    },
    /// The remote file changed since the journal was written (same URLs).
    Changed {
        /// What changed.
        detail: String,
    },
    /// A file of another length, or one ferry did not make and cannot verify, is in the way.
    Exists,
    /// `<name>.part` is there and is not ferry's.
    PartNotOurs {
        /// Why it is not.
        reason: String,
    },
}

/// What `<name>.part` at `path` is, given the journal beside it (if any): ferry's when it is a
/// regular file (never a link) that `journal` describes: as long as the journal's length, or
/// holding at least the journal's done bytes when the length is unknown.
pub(crate) fn part_state(path: &Path, journal: Option<&Journal>) -> std::io::Result<PartState> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PartState::Absent),
        Err(e) => return Err(e),
    };
    let size = meta.len();
    Ok(if meta.file_type().is_symlink() {
        PartState::NotOurs("it is a symbolic link".into())
    } else if !meta.is_file() {
        PartState::NotOurs("it is not a regular file".into())
    } else {
        match journal {
            None => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let journal = name.strip_suffix(".part").unwrap_or(&name);
                PartState::NotOurs(format!(
                    "no ferry journal ({journal}.ferry) describes it, so it may be someone \
                     else's file"
                ))
            }
            Some(j) => match j.validators.length {
                Some(len) if len != size => PartState::NotOurs(format!(
                    "it is {size} bytes but its journal describes a file of {len} bytes"
                )),
                None if size < j.done.max_end() => PartState::NotOurs(format!(
                    "it is {size} bytes, shorter than what its journal says was written"
                )),
                _ => PartState::Ours,
            },
        }
    })
}

/// Decides what to do with earlier progress. A changed remote file is never spliced onto old
/// bytes.
pub(crate) fn decide(
    journal: Option<&Journal>,
    probe: ProbeView<'_>,
    options: ResumeOptions<'_>,
    disk: OnDisk,
) -> Decision {
    let Some(j) = journal else {
        return match disk.dest_len {
            Some(len) if !options.restart => {
                // Complete already? Same length and no journal: a rerun of a finished command.
                if probe.validators.length == Some(len) && disk.dest_trusted {
                    Decision::AlreadyComplete { bytes: len }
                } else {
                    Decision::Refuse(Refusal::Exists)
                }
            }
            _ => match disk.part {
                PartState::NotOurs(reason) => Decision::Refuse(Refusal::PartNotOurs { reason }),
                PartState::Absent | PartState::Ours => Decision::Fresh,
            },
        };
    };
    if let Some(detail) = j.validators.difference(probe.validators) {
        let ours = j
            .urls
            .iter()
            .any(|u| options.urls.iter().any(|v| v.as_str() == u));
        return Decision::Refuse(if ours {
            Refusal::Changed { detail }
        } else {
            Refusal::Foreign { detail }
        });
    }
    match disk.part {
        PartState::Absent => Decision::Restart(RestartReason::PartMissing),
        PartState::NotOurs(reason) => Decision::Refuse(Refusal::PartNotOurs { reason }),
        PartState::Ours if !probe.ranged => Decision::Restart(RestartReason::NoRanges),
        PartState::Ours => Decision::Resume,
    }
}

/// True when a journal with progress has no validator to send in `If-Range`: a change of the
/// remote file that keeps its length cannot be detected.
pub(crate) fn unguarded(journal: &Journal) -> bool {
    journal.validators.if_range().is_none() && !journal.done.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::RangeSet;

    const URL: &str = "http://a.example/f.bin";

    fn validators(len: u64, etag: &str) -> Validators {
        Validators {
            length: Some(len),
            etag: Some(etag.into()),
            last_modified: None,
        }
    }

    fn journal(len: u64, etag: &str) -> Journal {
        let mut j = Journal::new(vec![URL.into()], validators(len, etag));
        j.done.insert(0..10);
        j
    }

    fn urls() -> Vec<Url> {
        vec![Url::parse(URL).unwrap()]
    }

    fn run(
        j: Option<&Journal>,
        now: &Validators,
        ranged: bool,
        restart: bool,
        disk: OnDisk,
    ) -> Decision {
        let urls = urls();
        decide(
            j,
            ProbeView {
                validators: now,
                ranged,
            },
            ResumeOptions {
                urls: &urls,
                restart,
            },
            disk,
        )
    }

    const PART: OnDisk = OnDisk {
        part: PartState::Ours,
        dest_len: None,
        dest_trusted: false,
    };
    const NOTHING: OnDisk = OnDisk {
        part: PartState::Absent,
        dest_len: None,
        dest_trusted: false,
    };

    #[test]
    fn same_file_with_its_part_resumes() {
        let j = journal(100, "\"a\"");
        assert_eq!(
            run(Some(&j), &validators(100, "\"a\""), true, false, PART),
            Decision::Resume
        );
    }

    #[test]
    fn nothing_on_disk_is_fresh() {
        assert_eq!(
            run(None, &validators(100, "\"a\""), true, false, NOTHING),
            Decision::Fresh
        );
    }

    #[test]
    fn a_changed_file_from_the_same_url_is_refused_as_changed() {
        let j = journal(100, "\"a\"");
        assert_eq!(
            run(Some(&j), &validators(100, "\"b\""), true, false, PART),
            Decision::Refuse(Refusal::Changed {
                detail: "ETag changed from \"a\" to \"b\"".into()
            })
        );
    }

    #[test]
    fn a_journal_of_other_urls_and_another_file_is_foreign() {
        let mut j = journal(100, "\"a\"");
        j.urls = vec!["http://elsewhere.example/g".into()];
        assert_eq!(
            run(Some(&j), &validators(120, "\"a\""), true, false, PART),
            Decision::Refuse(Refusal::Foreign {
                detail: "length changed from 100 to 120 bytes".into()
            })
        );
        // Other URLs but the same file: resumed.
        assert_eq!(
            run(Some(&j), &validators(100, "\"a\""), true, false, PART),
            Decision::Resume
        );
    }

    #[test]
    fn a_missing_part_or_lost_range_support_restarts() {
        let j = journal(100, "\"a\"");
        assert_eq!(
            run(Some(&j), &validators(100, "\"a\""), true, false, NOTHING),
            Decision::Restart(RestartReason::PartMissing)
        );
        assert_eq!(
            run(Some(&j), &validators(100, "\"a\""), false, false, PART),
            Decision::Restart(RestartReason::NoRanges)
        );
    }

    #[test]
    fn a_finished_file_is_complete_or_in_the_way() {
        let same = OnDisk {
            part: PartState::Absent,
            dest_len: Some(100),
            dest_trusted: true,
        };
        assert_eq!(
            run(None, &validators(100, "\"a\""), true, false, same.clone()),
            Decision::AlreadyComplete { bytes: 100 }
        );
        let other = OnDisk {
            part: PartState::Absent,
            dest_len: Some(99),
            dest_trusted: true,
        };
        assert_eq!(
            run(None, &validators(100, "\"a\""), true, false, other.clone()),
            Decision::Refuse(Refusal::Exists)
        );
        // A file of the right length that ferry did not make is not trusted (nor touched).
        let foreign = OnDisk {
            dest_trusted: false,
            ..same.clone()
        };
        assert_eq!(
            run(None, &validators(100, "\"a\""), true, false, foreign),
            Decision::Refuse(Refusal::Exists)
        );
        let unknown = Validators::default();
        assert_eq!(
            run(None, &unknown, false, false, same.clone()),
            Decision::Refuse(Refusal::Exists)
        );
        // --restart replaces it.
        assert_eq!(
            run(None, &validators(100, "\"a\""), true, true, other),
            Decision::Fresh
        );
    }

    #[test]
    fn a_part_file_that_is_not_ours_is_refused_whatever_else_is_there() {
        let stranger = OnDisk {
            part: PartState::NotOurs("why".into()),
            ..NOTHING
        };
        let refused = Decision::Refuse(Refusal::PartNotOurs {
            reason: "why".into(),
        });
        let now = validators(100, "\"a\"");
        assert_eq!(run(None, &now, true, false, stranger.clone()), refused);
        assert_eq!(run(None, &now, true, true, stranger.clone()), refused);
        let j = journal(100, "\"a\"");
        assert_eq!(run(Some(&j), &now, true, false, stranger.clone()), refused);
        assert_eq!(run(Some(&j), &now, false, false, stranger), refused);
    }

    #[test]
    fn only_a_regular_file_its_journal_describes_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        let j = journal(100, "\"a\"");
        assert_eq!(part_state(&part, Some(&j)).unwrap(), PartState::Absent);
        std::fs::write(&part, vec![0u8; 100]).unwrap();
        assert_eq!(part_state(&part, Some(&j)).unwrap(), PartState::Ours);
        assert!(matches!(
            part_state(&part, None).unwrap(),
            PartState::NotOurs(_)
        ));
        std::fs::write(&part, vec![0u8; 99]).unwrap();
        assert!(matches!(
            part_state(&part, Some(&j)).unwrap(),
            PartState::NotOurs(_)
        ));
        let mut unknown = j.clone();
        unknown.validators.length = None;
        assert!(matches!(
            part_state(&part, Some(&unknown)).unwrap(),
            PartState::Ours
        ));
        unknown.done.insert(0..200);
        assert!(matches!(
            part_state(&part, Some(&unknown)).unwrap(),
            PartState::NotOurs(_)
        ));
        let target = dir.path().join("target");
        std::fs::write(&target, vec![0u8; 100]).unwrap();
        std::fs::remove_file(&part).unwrap();
        std::os::unix::fs::symlink(&target, &part).unwrap();
        assert!(matches!(
            part_state(&part, Some(&j)).unwrap(),
            PartState::NotOurs(_)
        ));
    }

    #[test]
    fn progress_without_validators_is_unguarded() {
        let mut j = journal(100, "\"a\"");
        assert!(!unguarded(&j));
        j.validators.etag = None;
        assert!(unguarded(&j));
        j.done = RangeSet::new();
        assert!(!unguarded(&j));
    }
}
