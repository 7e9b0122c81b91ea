//! The resume journal `<name>.ferry`: what a partial download is (sources, validators, length)
//! and which byte ranges of `<name>.part` are already written.
//!
//! On disk it is three lines: a magic/version line, the JSON body, and `blake3:<hex>` of the
//! body. It is replaced atomically (write a temp file, fsync, rename, fsync the directory), so a
//! crash at any instant leaves either the old or the new journal, never a torn one. A journal
//! that fails its checksum, has another version, or describes another download is reported,
//! never trusted.
//!
//! A journal is ferry's own file: it is read and written without following symbolic links, its
//! temp file is created only where nothing (or a leftover of ferry's) is, and the first journal
//! of a download never replaces a file that appeared meanwhile. A file at `<name>.ferry` that
//! does not begin with ferry's magic line is not ferry's: it is refused
//! ([`Error::InTheWay`]) and never replaced or deleted.

use crate::error::Error;
use crate::ranges::RangeSet;
use crate::sink::{open_error, own_file_flags};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const MAGIC: &str = "FERRY-JOURNAL";
/// A journal larger than this is refused as corrupt (64 MiB: millions of done ranges).
const MAX_JOURNAL_BYTES: u64 = 64 << 20;
/// Bumped whenever the body's meaning changes; older or newer journals are refused clearly.
pub const FORMAT_VERSION: u32 = 1;

/// What identifies the remote file: a change in any of these means the bytes on disk may no
/// longer belong to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// Total length in bytes, when the server told it.
    pub length: Option<u64>,
    /// Strong ETag, as sent (with quotes). Weak ETags are not stored: they cannot guard ranges.
    pub etag: Option<String>,
    /// `Last-Modified`, as sent.
    pub last_modified: Option<String>,
}

impl Validators {
    /// The value to send in `If-Range`: the strong ETag, else Last-Modified.
    pub fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }

    /// Describes how `other` differs from `self`, or `None` when they agree. A validator missing
    /// on one side is not a difference (servers do not always send them).
    pub fn difference(&self, other: &Validators) -> Option<String> {
        if let (Some(a), Some(b)) = (self.length, other.length)
            && a != b
        {
            return Some(format!("length changed from {a} to {b} bytes"));
        }
        if let (Some(a), Some(b)) = (&self.etag, &other.etag)
            && a != b
        {
            return Some(format!("ETag changed from {a} to {b}"));
        }
        if let (Some(a), Some(b)) = (&self.last_modified, &other.last_modified)
            && a != b
        {
            return Some(format!("Last-Modified changed from {a} to {b}"));
        }
        None
    }
}

/// The journal's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// The body's format version; always [`FORMAT_VERSION`] in a journal that loads.
    pub version: u32,
    /// The URLs as given (mirrors), in order.
    pub urls: Vec<String>,
    /// The remote file as the server described it when the download began; a resume whose
    /// server now says otherwise is refused.
    pub validators: Validators,
    /// Size of the unit a peer source verifies (BLAKE3 per piece); `None` for plain HTTP.
    #[serde(default)]
    pub piece_size: Option<u64>,
    /// Bytes of `<name>.part` that hold the remote file's bytes.
    pub done: RangeSet,
    /// Unix time (seconds) the journal was last written.
    pub updated: u64,
}

impl Journal {
    /// A journal at [`FORMAT_VERSION`] for a download that has written nothing yet (no piece
    /// size, not yet saved: `updated` is 0).
    pub fn new(urls: Vec<String>, validators: Validators) -> Self {
        Journal {
            version: FORMAT_VERSION,
            urls,
            validators,
            piece_size: None,
            done: RangeSet::new(),
            updated: 0,
        }
    }

    /// `<file>.ferry` next to the final file.
    pub fn path_for(file: &Path) -> PathBuf {
        with_suffix(file, ".ferry")
    }

    /// Reads and checks a journal. `Ok(None)` when there is none. A symbolic link, something
    /// other than a regular file, or a file without ferry's magic line is
    /// [`Error::InTheWay`]; a ferry journal that does not check out is
    /// [`Error::JournalCorrupt`].
    pub fn load(path: &Path) -> Result<Option<Journal>, Error> {
        let text = match read_own(path, MAX_JOURNAL_BYTES)? {
            Some(t) => t,
            None => return Ok(None),
        };
        if !text.starts_with(MAGIC.as_bytes()) {
            return Err(Error::InTheWay {
                path: path.to_owned(),
                reason: format!("it is not a ferry journal (those begin with {MAGIC})"),
            });
        }
        if text.len() as u64 > MAX_JOURNAL_BYTES {
            return Err(Error::JournalCorrupt {
                path: path.to_owned(),
                reason: format!("larger than {} MiB", MAX_JOURNAL_BYTES >> 20),
            });
        }
        Self::parse(&text)
            .map(Some)
            .map_err(|reason| Error::JournalCorrupt {
                path: path.to_owned(),
                reason,
            })
    }

    fn parse(text: &[u8]) -> Result<Journal, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
        let mut lines = text.splitn(3, '\n');
        let header = lines.next().unwrap_or_default();
        let body = lines.next().ok_or("truncated after the header")?;
        let sum_line = lines.next().ok_or("truncated after the body")?;
        let version = header
            .strip_prefix(MAGIC)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or("not a ferry journal")?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this ferry reads version {FORMAT_VERSION}"
            ));
        }
        let sum = sum_line
            .trim_end()
            .strip_prefix("blake3:")
            .ok_or("missing checksum line")?;
        if blake3::hash(body.as_bytes()).to_hex().as_str() != sum {
            return Err("checksum does not match (torn or edited file)".into());
        }
        let journal: Journal = serde_json::from_str(body).map_err(|e| format!("bad body: {e}"))?;
        if journal.version != FORMAT_VERSION {
            return Err("body version does not match header".into());
        }
        if !journal.done.is_well_formed() {
            return Err("done ranges are not sorted and disjoint".into());
        }
        if let Some(len) = journal.validators.length
            && journal.done.max_end() > len
        {
            return Err("done ranges extend past the file length".into());
        }
        Ok(journal)
    }

    /// Serialised form: header, JSON body, checksum.
    pub fn render(&self) -> String {
        let body = serde_json::to_string(self).expect("journal serialises");
        format!(
            "{MAGIC} {FORMAT_VERSION}\n{body}\nblake3:{}\n",
            blake3::hash(body.as_bytes()).to_hex()
        )
    }

    /// Atomically replaces ferry's journal at `path`: temp file, fsync, rename, fsync directory.
    pub fn save(&mut self, path: &Path) -> Result<(), Error> {
        let tmp = self.write_tmp(path)?;
        let write = || -> std::io::Result<()> {
            fs::rename(&tmp, path)?;
            sync_parent_dir(path)
        };
        write().map_err(|e| Error::io(path, e))
    }

    /// Writes the first journal of a download at `path`, where nothing is: a file that
    /// appeared there meanwhile is never replaced (then another ferry is starting the same
    /// download: [`Error::Busy`]).
    pub fn create(&mut self, path: &Path) -> Result<(), Error> {
        let tmp = self.write_tmp(path)?;
        match rename_noreplace(&tmp, path) {
            Ok(()) => sync_parent_dir(path).map_err(|e| Error::io(path, e)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Busy {
                        path: path.to_owned(),
                    }
                } else {
                    Error::io(path, e)
                })
            }
        }
    }

    /// Writes the journal, durably, to `<path>.tmp` (created where nothing is, or over a
    /// leftover temp journal of ferry's) and returns that path.
    fn write_tmp(&mut self, path: &Path) -> Result<PathBuf, Error> {
        self.updated = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let tmp = with_suffix(path, ".tmp");
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(own_file_flags())
                .open(&tmp)
        };
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // A crash between writing and renaming leaves ferry's temp journal (empty or
                // part of one); anything else there is not ferry's.
                let leftover = read_own(&tmp, MAGIC.len() as u64)?.unwrap_or_default();
                let n = leftover.len().min(MAGIC.len());
                if leftover[..n] != MAGIC.as_bytes()[..n] {
                    return Err(Error::InTheWay {
                        path: tmp,
                        reason: "it is not a temporary ferry journal".into(),
                    });
                }
                fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
                create().map_err(|e| open_error(&tmp, e))?
            }
            other => other.map_err(|e| open_error(&tmp, e))?,
        };
        f.write_all(self.render().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(tmp)
    }

    /// Deletes the journal at `path`; one that is already gone is not an error.
    pub fn remove(path: &Path) -> Result<(), Error> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// Reads at most `limit + 1` bytes of ferry's own file `path`, opened without following a
/// symbolic link; `None` when there is no such file. Anything but a regular file is
/// [`Error::InTheWay`].
fn read_own(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, Error> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(own_file_flags())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error(path, e)),
    };
    if !f.metadata().map_err(|e| Error::io(path, e))?.is_file() {
        return Err(Error::InTheWay {
            path: path.to_owned(),
            reason: "it is not a regular file".into(),
        });
    }
    let mut text = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(text))
}

/// Renames `from` to `to` unless something is at `to` (`AlreadyExists`): `renameat2` with
/// `RENAME_NOREPLACE`, else a hard link (which never replaces) and unlinking `from`, else (a
/// file system with neither) a look before a plain rename.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            match fs::hard_link(from, to) {
                Ok(()) => fs::remove_file(from),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
                Err(_) => match fs::symlink_metadata(to) {
                    Ok(_) => Err(std::io::ErrorKind::AlreadyExists.into()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::rename(from, to),
                    Err(e) => Err(e),
                },
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// `path` with `suffix` appended to its file name (`a.iso` → `a.iso.part`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// fsyncs the directory holding `path`, so a rename in it is durable.
pub fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Journal {
        let mut j = Journal::new(
            vec!["http://a/x".into()],
            Validators {
                length: Some(1000),
                etag: Some("\"abc\"".into()),
                last_modified: None,
            },
        );
        j.done = RangeSet::from_ranges([0..10, 20..30]);
        j
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ferry");
        let mut j = sample();
        j.save(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap().unwrap(), j);
        let text = fs::read_to_string(&path).unwrap().replace("20,30", "20,40");
        fs::write(&path, text).unwrap();
        let err = Journal::load(&path).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        fs::write(&path, "").unwrap();
        assert!(Journal::load(&path).is_err());
        fs::write(&path, "FERRY-JOURNAL 99\n{}\nblake3:00\n").unwrap();
        assert!(
            Journal::load(&path)
                .unwrap_err()
                .to_string()
                .contains("version 99")
        );
        assert!(
            Journal::load(&dir.path().join("none.ferry"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_first_journal_never_replaces_a_file_and_a_strangers_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ferry");
        fs::write(&path, b"mine").unwrap();
        let err = sample().create(&path).unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"mine");
        assert!(!with_suffix(&path, ".tmp").exists());
        fs::remove_file(&path).unwrap();
        sample().create(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap().unwrap().urls, sample().urls);
        // A leftover temp journal of ferry's is replaced; anyone else's is not.
        fs::write(with_suffix(&path, ".tmp"), b"FERRY-JOU").unwrap();
        sample().save(&path).unwrap();
        fs::write(with_suffix(&path, ".tmp"), b"notes").unwrap();
        let err = sample().save(&path).unwrap_err();
        assert!(matches!(err, Error::InTheWay { .. }), "{err}");
        assert_eq!(fs::read(with_suffix(&path, ".tmp")).unwrap(), b"notes");
    }

    #[test]
    fn validators_difference() {
        let a = Validators {
            length: Some(1),
            etag: Some("\"a\"".into()),
            last_modified: None,
        };
        let mut b = a.clone();
        assert_eq!(a.difference(&b), None);
        b.etag = Some("\"b\"".into());
        assert!(a.difference(&b).unwrap().contains("ETag"));
        b = a.clone();
        b.length = Some(2);
        assert!(a.difference(&b).unwrap().contains("length"));
        b = Validators::default();
        assert_eq!(a.difference(&b), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn validators() -> impl Strategy<Value = Validators> {
            (
                proptest::option::of(any::<u64>()),
                proptest::option::of("\"[ -~]{0,20}\""),
                proptest::option::of("[ -~]{0,30}"),
            )
                .prop_map(|(length, etag, last_modified)| Validators {
                    length,
                    etag,
                    last_modified,
                })
        }

        fn journal() -> impl Strategy<Value = Journal> {
            (
                proptest::collection::vec(".{0,40}", 1..4),
                validators(),
                proptest::option::of(1u64..1 << 30),
                proptest::collection::vec((0u64..1 << 40, 1u64..1 << 30), 0..8),
                any::<u64>(),
            )
                .prop_map(|(urls, mut validators, piece_size, ranges, updated)| {
                    let done = RangeSet::from_ranges(ranges.into_iter().map(|(s, l)| s..s + l));
                    // A known length covers every done range.
                    if let Some(len) = &mut validators.length {
                        *len = (*len).max(done.max_end());
                    }
                    Journal {
                        version: FORMAT_VERSION,
                        urls,
                        validators,
                        piece_size,
                        done,
                        updated,
                    }
                })
        }

        proptest! {
            #[test]
            fn encode_then_decode_gives_the_journal_back(j in journal()) {
                prop_assert_eq!(Journal::parse(j.render().as_bytes()), Ok(j));
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(j) = Journal::parse(&bytes) {
                    prop_assert!(j.done.is_well_formed());
                }
            }

            #[test]
            fn a_damaged_journal_is_refused_or_means_the_same(
                j in journal(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
                cut in any::<bool>(),
            ) {
                let mut bytes = j.render().into_bytes();
                let i = at.index(bytes.len());
                if cut {
                    bytes.truncate(i);
                } else {
                    bytes[i] = byte;
                }
                if let Ok(read) = Journal::parse(&bytes) {
                    prop_assert_eq!(read, j);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn loading_arbitrary_bytes_gives_a_journal_or_a_typed_error(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("x.ferry");
                fs::write(&path, &bytes).expect("write");
                match Journal::load(&path) {
                    Ok(Some(_)) => {}
                    Err(Error::JournalCorrupt { path: p, reason }) => {
                        prop_assert_eq!(p, path);
                        prop_assert!(!reason.is_empty());
                    }
                    Err(Error::InTheWay { path: p, .. }) => {
                        prop_assert_eq!(p, path);
                        prop_assert!(!bytes.starts_with(MAGIC.as_bytes()));
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }
    }
}
