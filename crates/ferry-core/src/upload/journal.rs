//! The local resume record of an upload (`ferry put`): which upload URLs on which endpoint hold
//! which byte ranges of which local file. It lives in the user's data directory
//! (`$FERRY_DATA_DIR`, else `$XDG_DATA_HOME/ferry`, else `~/.local/share/ferry`) under
//! `uploads/<key>.json`, one file per (endpoint, absolute path), written atomically. The file's
//! size, mtime and a content fingerprint tell whether it is still the same file.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;
/// Bytes read from the start and from the end of the file for its fingerprint.
const FINGERPRINT_SPAN: u64 = 1 << 20;

/// One upload URL and the bytes of the file it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The URL of the tus upload that carries these bytes (resolved against the endpoint).
    pub url: String,
    /// Offset in the local file of the first byte this upload carries.
    pub start: u64,
    /// Offset in the local file just past the last byte this upload carries (exclusive).
    pub end: u64,
}

/// What a rerun needs to continue an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadJournal {
    /// The record's format version; a record of another version is not used.
    pub version: u32,
    /// The tus endpoint the uploads were created at.
    pub endpoint: String,
    /// The local file, as an absolute path.
    pub path: PathBuf,
    /// The file's size in bytes when the upload began.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// The file's content fingerprint when the upload began (see [`FileIdentity`]).
    pub fingerprint: String,
    /// The remote name (metadata) the upload was created with.
    pub remote: String,
    /// One part: a plain upload. Several: partial uploads joined by a final one.
    pub parts: Vec<Part>,
    /// The final (concatenated) upload, once created.
    pub final_url: Option<String>,
    /// The upload is complete: a rerun of the same command has nothing to send.
    #[serde(default)]
    pub finished: bool,
}

/// Identity of a local file at one moment: size, mtime and a fingerprint of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (0 when the system cannot tell).
    pub mtime_ns: i128,
    /// BLAKE3 (hex) of the size and the first and last MiB of content.
    pub fingerprint: String,
}

impl FileIdentity {
    /// Reads the size and mtime, and hashes (BLAKE3) the first and last MiB with the size.
    pub fn of(path: &Path) -> Result<FileIdentity, Error> {
        let io = |e| Error::io(path, e);
        let mut f = std::fs::File::open(path).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let size = meta.len();
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&size.to_le_bytes());
        let mut buf = vec![0u8; FINGERPRINT_SPAN.min(size) as usize];
        f.read_exact(&mut buf).map_err(io)?;
        hasher.update(&buf);
        if size > FINGERPRINT_SPAN {
            let tail = FINGERPRINT_SPAN.min(size - FINGERPRINT_SPAN);
            f.seek(SeekFrom::Start(size - tail)).map_err(io)?;
            buf.truncate(tail as usize);
            f.read_exact(&mut buf).map_err(io)?;
            hasher.update(&buf);
        }
        Ok(FileIdentity {
            size,
            mtime_ns,
            fingerprint: hasher.finalize().to_hex().to_string(),
        })
    }
}

impl UploadJournal {
    /// A record of an upload of the file at `path` (absolute), identified by `id`, to
    /// `endpoint` under the name `remote`; it has no parts yet.
    pub fn new(endpoint: &str, path: &Path, id: &FileIdentity, remote: &str) -> UploadJournal {
        UploadJournal {
            version: VERSION,
            endpoint: endpoint.to_owned(),
            path: path.to_owned(),
            size: id.size,
            mtime_ns: id.mtime_ns,
            fingerprint: id.fingerprint.clone(),
            remote: remote.to_owned(),
            parts: Vec::new(),
            final_url: None,
            finished: false,
        }
    }

    /// Whether the journal describes this very file content.
    pub fn same_file(&self, id: &FileIdentity) -> bool {
        self.size == id.size && self.mtime_ns == id.mtime_ns && self.fingerprint == id.fingerprint
    }
}

/// The directory holding upload journals.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRY_DATA_DIR") {
        return PathBuf::from(d).join("uploads");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ferry").join("uploads")
}

/// The journal file for (endpoint, absolute path).
pub fn path_for(dir: &Path, endpoint: &str, file: &Path) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(endpoint.as_bytes());
    h.update(b"\n");
    h.update(file.as_os_str().as_encoded_bytes());
    let key = h.finalize().to_hex();
    dir.join(format!("{}.json", &key[..32]))
}

/// Why bytes are not a usable upload journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not the JSON of an upload journal.
    #[error("not an upload journal: {0}")]
    Json(#[source] serde_json::Error),
    /// A journal of another format version.
    #[error("upload journal format version {found}, this ferry reads version {VERSION}")]
    Version {
        /// The version the journal has.
        found: u32,
    },
}

/// Reads a journal from its bytes.
pub fn decode(bytes: &[u8]) -> Result<UploadJournal, DecodeError> {
    let j: UploadJournal = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
    if j.version != VERSION {
        return Err(DecodeError::Version { found: j.version });
    }
    Ok(j)
}

/// The bytes [`save`] writes for `journal`.
pub fn encode(journal: &UploadJournal) -> Vec<u8> {
    serde_json::to_vec_pretty(journal).expect("journal serialises")
}

/// Loads a journal; a missing file is `None`, an unreadable or foreign one too (it is only a
/// hint: the server's offsets are the truth, and starting over loses no data).
pub fn load(path: &Path) -> Option<UploadJournal> {
    decode(&std::fs::read(path).ok()?).ok()
}

/// Writes the journal atomically (temp file, fsync, rename).
pub fn save(path: &Path, journal: &UploadJournal) -> Result<(), Error> {
    let dir = path.parent().expect("journal paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let io = |e| Error::io(&tmp, e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&encode(journal)).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Removes a journal (missing is fine).
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.bin");
        std::fs::write(&f, vec![7u8; 3 << 20]).unwrap();
        let id = FileIdentity::of(&f).unwrap();
        assert_eq!(id.size, 3 << 20);
        let mut j = UploadJournal::new("http://h/uploads/", &f, &id, "f.bin");
        j.parts.push(Part {
            url: "http://h/uploads/a".into(),
            start: 0,
            end: 3 << 20,
        });
        let p = path_for(dir.path(), &j.endpoint, &f);
        save(&p, &j).unwrap();
        assert_eq!(load(&p).unwrap(), j);
        assert!(j.same_file(&id));
        // A change in the middle (not in the fingerprint span) still changes the mtime.
        std::thread::sleep(std::time::Duration::from_millis(10));
        let mut data = std::fs::read(&f).unwrap();
        data[(3 << 20) - 1] = 8;
        std::fs::write(&f, &data).unwrap();
        assert!(!j.same_file(&FileIdentity::of(&f).unwrap()));
        remove(&p);
        assert!(load(&p).is_none());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn journal() -> impl Strategy<Value = UploadJournal> {
            (
                ".{0,40}",
                "[^\u{0}]{0,40}",
                any::<u64>(),
                any::<i128>(),
                "[a-f0-9]{0,64}",
                ".{0,40}",
                proptest::collection::vec((".{0,30}", any::<u64>(), any::<u64>()), 0..5),
                proptest::option::of(".{0,30}"),
            )
                .prop_map(
                    |(endpoint, path, size, mtime_ns, fingerprint, remote, parts, final_url)| {
                        UploadJournal {
                            version: VERSION,
                            endpoint,
                            path: PathBuf::from(path),
                            size,
                            mtime_ns,
                            fingerprint,
                            remote,
                            parts: parts
                                .into_iter()
                                .map(|(url, start, end)| Part { url, start, end })
                                .collect(),
                            finished: final_url.is_some(),
                            final_url,
                        }
                    },
                )
        }

        proptest! {
            #[test]
            fn encode_then_decode_gives_the_journal_back(j in journal()) {
                prop_assert_eq!(decode(&encode(&j)).expect("decodes"), j);
            }

            #[test]
            fn arbitrary_bytes_decode_or_give_a_typed_error(
                bytes in proptest::collection::vec(any::<u8>(), 0..512),
            ) {
                match decode(&bytes) {
                    Ok(j) => prop_assert_eq!(j.version, VERSION),
                    Err(DecodeError::Json(_) | DecodeError::Version { .. }) => {}
                }
            }

            #[test]
            fn other_versions_are_refused(j in journal(), version in any::<u32>()) {
                prop_assume!(version != VERSION);
                let j = UploadJournal { version, ..j };
                let refused = matches!(
                    decode(&encode(&j)),
                    Err(DecodeError::Version { found }) if found == version
                );
                prop_assert!(refused);
            }

            #[test]
            fn a_damaged_journal_is_refused_or_still_a_journal(
                j in journal(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let mut bytes = encode(&j);
                let i = at.index(bytes.len());
                bytes[i] = byte;
                if let Ok(read) = decode(&bytes) {
                    prop_assert_eq!(read.version, VERSION);
                }
            }
        }
    }
}
