//! The manifest: what a sender shares. It lists every folder and file (relative `/`-separated
//! paths, each starting with the name of what was sent), each file's size and the BLAKE3 hash of
//! each of its pieces. Its BLAKE3 hash goes into the ticket, so a receiver that checks the
//! manifest's hash and then every piece knows it got exactly what the sender hashed.
//!
//! This module builds a manifest from local paths ([`build`], hashing on every core) and
//! validates one received from a peer ([`Manifest::parse`]) so that none of its paths can escape
//! the receiver's target folder or name something that cannot be created safely.
//!
//! The JSON form, which [`Manifest::to_bytes`] writes compactly and whose bytes are hashed:
//!
//! ```json
//! {"version":1,"piece_size":1048576,"entries":[
//!   {"path":"photos","type":"dir"},
//!   {"path":"photos/a.jpg","type":"file","size":1500000,"pieces":["<64 hex>","<64 hex>"]},
//!   {"path":"photos/empty.txt","type":"file","size":0,"pieces":[]}]}
//! ```
//!
//! Entries come in a fixed order: top-level names sorted, then each folder followed depth-first by
//! its contents, sorted by name (bytewise). Every folder comes before what it contains. So the same
//! content sent from two machines gives the same bytes and the same hash: two senders of the same
//! thing are two peers for it.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use unicode_normalization::UnicodeNormalization;

/// The manifest format this ferry writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Smallest piece size (1 MiB).
pub const MIN_PIECE_SIZE: u64 = 1 << 20;
/// Largest piece size (16 MiB).
pub const MAX_PIECE_SIZE: u64 = 16 << 20;
/// [`piece_size_for`] grows pieces to keep a share near at most this many pieces.
pub const TARGET_PIECES: u64 = 16 * 1024;
/// Longest allowed path component, in bytes (the limit of common file systems).
pub const MAX_NAME_BYTES: usize = 255;
/// Default cap on the bytes of a manifest a receiver reads from a peer (256 MiB: about a
/// million files, or 4 million pieces).
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// Default cap on the entries (files and folders) of a manifest a receiver accepts.
pub const MAX_ENTRIES: usize = 1_000_000;

/// What a receiver accepts from a peer's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestLimits {
    /// Most bytes read (default [`MAX_MANIFEST_BYTES`]).
    pub max_bytes: u64,
    /// Most entries (default [`MAX_ENTRIES`]).
    pub max_entries: usize,
}

impl Default for ManifestLimits {
    fn default() -> Self {
        ManifestLimits {
            max_bytes: MAX_MANIFEST_BYTES,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// What a sender shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Bytes per piece, for every file (each file's last piece may be shorter).
    pub piece_size: u64,
    /// Every folder and file, in the fixed order described at the top of this module.
    pub entries: Vec<Entry>,
}

/// One folder or file of a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated; the first component is the name of what was sent.
    pub path: String,
    /// Folder or file (with its size and piece hashes).
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// `pieces`: lowercase hex BLAKE3 of each piece, in order (the last one may be short); an
    /// empty file has none.
    File {
        /// Length in bytes.
        size: u64,
        /// Piece hashes, lowercase hex.
        pieces: Vec<String>,
    },
}

/// Why a manifest could not be built from local paths, or a received one was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// No path was given.
    #[error("nothing to send: give at least one file or folder")]
    Nothing,
    /// A given path does not exist.
    #[error("{}: no such file or folder; check the path", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What was being read.
        path: PathBuf,
        /// What reading said.
        #[source]
        source: std::io::Error,
    },
    /// A given path has no final name (`/`, `..`).
    #[error(
        "{} has no name to send it under (like / or ..); give the path of the folder itself",
        path.display()
    )]
    NoName {
        /// The path as given.
        path: PathBuf,
    },
    /// A name a receiver could not create safely.
    #[error("cannot send {}: its name {reason}; rename it, or leave it out", path.display())]
    BadName {
        /// The local path.
        path: PathBuf,
        /// What is wrong with the name.
        reason: String,
    },
    /// Neither a regular file nor a folder.
    #[error(
        "cannot send {}: it is neither a regular file nor a folder (a device, socket or pipe)",
        path.display()
    )]
    NotFileOrDir {
        /// The local path.
        path: PathBuf,
    },
    /// Two given paths have the same final name.
    #[error(
        "{} and {} would both arrive as {name:?}; send them separately, or rename one",
        first.display(),
        second.display()
    )]
    SameName {
        /// The shared name.
        name: String,
        /// The first path with it.
        first: PathBuf,
        /// The second path with it.
        second: PathBuf,
    },
    /// A file got shorter while it was hashed.
    #[error(
        "{} changed while it was being hashed (it got shorter); send it again once nothing is \
         writing to it",
        path.display()
    )]
    Changed {
        /// The local path.
        path: PathBuf,
    },
    /// A received manifest's version is newer than this ferry reads.
    #[error(
        "the peer's manifest is version {0}, from a newer ferry (this ferry reads version \
         {MANIFEST_VERSION}); update ferry on this machine"
    )]
    Newer(u32),
    /// A received manifest is not valid JSON of the expected shape.
    #[error("invalid manifest from the peer (not a compatible ferry, or corrupted): {0}")]
    Json(#[source] serde_json::Error),
    /// A received manifest breaks a rule that concerns it as a whole.
    #[error("invalid manifest from the peer: {0}")]
    Invalid(String),
    /// A received manifest's entry breaks a rule.
    #[error("invalid manifest from the peer: entry {index} ({path:?}): {reason}")]
    InvalidEntry {
        /// The entry's position.
        index: usize,
        /// The entry's path as received.
        path: String,
        /// The rule broken.
        reason: String,
    },
}

/// Piece size for a share of `total` bytes: the smallest power of two that splits it into at
/// most [`TARGET_PIECES`] (16,384) pieces, but at least 1 MiB and at most 16 MiB. So pieces are
/// 1 MiB up to 16 GiB, then double with the size; from 256 GiB on they stay 16 MiB and the count
/// grows past 16k. (Pieces do not span files, so each file adds at most one short piece.)
pub fn piece_size_for(total: u64) -> u64 {
    total
        .div_ceil(TARGET_PIECES)
        .next_power_of_two()
        .clamp(MIN_PIECE_SIZE, MAX_PIECE_SIZE)
}

/// Why `name` cannot be a path component, if it cannot: empty, `.` or `..`, longer than 255
/// bytes, a backslash or control character (NUL included), an invisible character that can
/// make a name look like another ([`ferry_core::naming::is_invisible`]: bidirectional
/// controls, zero-width characters, line and paragraph separators), or a Windows device name (`CON`,
/// `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, any case, also with an extension such as
/// `nul.txt`, which Windows treats the same).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty (two '/' in a row, or a leading or trailing '/')".into());
    }
    if name == "." || name == ".." {
        return Err(format!("is {name:?}, which names another folder"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long, more than the {MAX_NAME_BYTES} file systems allow",
            name.len()
        ));
    }
    if name.contains('/') {
        return Err("contains '/'".into());
    }
    if name.contains('\\') {
        return Err("contains a backslash".into());
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character (a newline, tab, NUL, ...)".into());
    }
    if let Some(c) = name.chars().find(|&c| ferry_core::naming::is_invisible(c)) {
        return Err(format!(
            "contains U+{:04X}, an invisible character (bidirectional, zero-width or a \
             separator) that can make a name look like another",
            c as u32
        ));
    }
    let stem = name
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_end_matches(' ');
    if is_device_name(stem) {
        return Err(format!("is a reserved device name on Windows ({stem})"));
    }
    Ok(())
}

fn is_device_name(stem: &str) -> bool {
    let upper = stem.to_uppercase();
    if matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let mut chars = upper.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: String = chars.collect();
    (prefix == "COM" || prefix == "LPT")
        && matches!(
            rest.as_str(),
            "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
        )
}

/// Why `path` cannot be a manifest path, if it cannot: absolute, or any component refused by
/// [`check_name`].
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.starts_with('/') {
        return Err("the path is absolute".into());
    }
    for name in path.split('/') {
        check_name(name).map_err(|reason| format!("a component {reason}"))?;
    }
    Ok(())
}

fn is_lower_hex_64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Canonical bytes (serde_json, compact); the manifest hash is BLAKE3 of exactly these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    /// BLAKE3 of manifest bytes. A receiver hashes the bytes it received (not a re-serialisation
    /// of what it parsed) and compares with the ticket.
    pub fn hash_of(bytes: &[u8]) -> [u8; 32] {
        *blake3::hash(bytes).as_bytes()
    }

    /// `hash_of(&self.to_bytes())`.
    pub fn hash(&self) -> [u8; 32] {
        Self::hash_of(&self.to_bytes())
    }

    /// [`Manifest::parse_with`] under the default [`ManifestLimits`].
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        Self::parse_with(bytes, ManifestLimits::default())
    }

    /// Parses and validates bytes received from a peer: within `limits` (bytes, and entries
    /// counted before any is built); the version; every path safe (see [`check_path`]) and
    /// listed once, paths normalised to Unicode NFC (two that are the same once normalised are
    /// refused: one would replace the other); every entry's parent folder listed before it as a
    /// folder (so no file's path is used as a folder); the piece size a power of two from
    /// 1 MiB to 16 MiB; each file's piece count matching its size, each hash 64 lowercase hex
    /// digits; at least one entry. The manifest returned holds the normalised paths.
    pub fn parse_with(bytes: &[u8], limits: ManifestLimits) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Head {
            version: u32,
            #[serde(default, deserialize_with = "count_entries")]
            entries: usize,
        }
        if bytes.len() as u64 > limits.max_bytes {
            return Err(ManifestError::Invalid(format!(
                "it is larger than the limit of {} bytes",
                limits.max_bytes
            )));
        }
        let Head { version, entries } =
            serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        if version > MANIFEST_VERSION {
            return Err(ManifestError::Newer(version));
        }
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Invalid(format!("unknown version {version}")));
        }
        if entries > limits.max_entries {
            return Err(ManifestError::Invalid(format!(
                "it lists {entries} files and folders, more than the limit of {}",
                limits.max_entries
            )));
        }
        let mut m: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        let ps = m.piece_size;
        if !ps.is_power_of_two() || !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&ps) {
            return Err(ManifestError::Invalid(format!(
                "piece size {ps} is not a power of two from {MIN_PIECE_SIZE} to {MAX_PIECE_SIZE}"
            )));
        }
        if m.entries.is_empty() {
            return Err(ManifestError::Invalid("it lists nothing".into()));
        }
        // Normalised path → (is a folder, index of its entry, its path as sent when that was
        // not normalised).
        type Seen = (bool, usize, Option<String>);
        let mut seen: HashMap<String, Seen> = HashMap::with_capacity(m.entries.len());
        let mut total = 0u64;
        for (index, e) in m.entries.iter_mut().enumerate() {
            let bad = |reason: String| ManifestError::InvalidEntry {
                index,
                path: e.path.clone(),
                reason,
            };
            check_path(&e.path).map_err(bad)?;
            let path: String = e.path.nfc().collect();
            if let Some((parent, _)) = path.rsplit_once('/') {
                match seen.get(parent) {
                    Some((true, ..)) => {}
                    Some((false, ..)) => {
                        return Err(bad(format!("its parent {parent:?} is a file")));
                    }
                    None => {
                        return Err(bad(format!(
                            "its folder {parent:?} is not listed before it"
                        )));
                    }
                }
            }
            let is_dir = matches!(e.kind, EntryKind::Dir);
            if let Some((_, first, sent)) = seen.get(&path) {
                return Err(bad(if *sent.as_ref().unwrap_or(&path) == e.path {
                    "the path is listed twice".into()
                } else {
                    format!(
                        "it is the same name as entry {first} once both are written the same \
                         way (Unicode NFC), so one would replace the other"
                    )
                }));
            }
            if let EntryKind::File { size, pieces } = &e.kind {
                let expected = size.div_ceil(ps);
                if pieces.len() as u64 != expected {
                    return Err(bad(format!(
                        "{} piece hashes for {size} bytes in pieces of {ps} (expected {expected})",
                        pieces.len()
                    )));
                }
                if let Some(k) = pieces.iter().position(|h| !is_lower_hex_64(h)) {
                    return Err(bad(format!(
                        "piece hash {k} is not 64 lowercase hex digits"
                    )));
                }
                total = total
                    .checked_add(*size)
                    .ok_or_else(|| bad("the total size overflows".into()))?;
            }
            let sent = (path != e.path).then(|| std::mem::replace(&mut e.path, path.clone()));
            seen.insert(path, (is_dir, index, sent));
        }
        Ok(m)
    }

    /// Piece hashes of entry `i` as raw bytes (empty for folders).
    ///
    /// Panics if a hash is not hex: never the case for a manifest from [`build`] or
    /// [`Manifest::parse`].
    pub fn piece_hashes(&self, i: usize) -> Vec<[u8; 32]> {
        match &self.entries[i].kind {
            EntryKind::Dir => Vec::new(),
            EntryKind::File { pieces, .. } => pieces
                .iter()
                .map(|h| {
                    let mut out = [0; 32];
                    hex::decode_to_slice(h, &mut out).expect("piece hashes are validated hex");
                    out
                })
                .collect(),
        }
    }

    /// Sum of all file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                EntryKind::Dir => 0,
            })
            .fold(0, u64::saturating_add)
    }
}

/// Counts the elements of a JSON array without building them.
fn count_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of entries")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    d.deserialize_seq(Count)
}

/// An entry found on disk, before hashing.
struct Found {
    path: String,
    /// Local file and its size; `None` for a folder.
    file: Option<(PathBuf, u64)>,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Read {
        path: path.to_owned(),
        source,
    }
}

/// The name `path` is sent under: its last component, or for paths like `.` or `x/..` the name
/// of the folder they resolve to.
fn top_name(path: &Path) -> Result<String, ManifestError> {
    let name = match path.file_name() {
        Some(n) => n.to_owned(),
        None => path
            .canonicalize()
            .map_err(read_err(path))?
            .file_name()
            .ok_or_else(|| ManifestError::NoName {
                path: path.to_owned(),
            })?
            .to_owned(),
    };
    let name = name.to_str().ok_or_else(|| ManifestError::BadName {
        path: path.to_owned(),
        reason: "is not valid UTF-8".into(),
    })?;
    check_name(name).map_err(|reason| ManifestError::BadName {
        path: path.to_owned(),
        reason,
    })?;
    Ok(name.to_owned())
}

/// Adds folder `local` (sent as `rel`) and everything in it to `out`, depth-first, sorted.
fn walk(local: &Path, rel: &str, out: &mut Vec<Found>) -> Result<(), ManifestError> {
    out.push(Found {
        path: rel.to_owned(),
        file: None,
    });
    let mut children = Vec::new();
    for child in std::fs::read_dir(local).map_err(read_err(local))? {
        let child = child.map_err(read_err(local))?;
        children.push((child.file_name(), child.path()));
    }
    children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, path) in children {
        let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            tracing::warn!("not sending {}: symbolic links are skipped", path.display());
            continue;
        }
        if !ft.is_dir() && !ft.is_file() {
            tracing::warn!(
                "not sending {}: not a regular file or folder (a device, socket or pipe)",
                path.display()
            );
            continue;
        }
        let name = name.to_str().ok_or_else(|| ManifestError::BadName {
            path: path.clone(),
            reason: "is not valid UTF-8".into(),
        })?;
        check_name(name).map_err(|reason| ManifestError::BadName {
            path: path.clone(),
            reason,
        })?;
        let child_rel = format!("{rel}/{name}");
        if ft.is_dir() {
            walk(&path, &child_rel, out)?;
        } else {
            out.push(Found {
                path: child_rel,
                file: Some((path, meta.len())),
            });
        }
    }
    Ok(())
}

/// Builds the manifest of `paths`: files or folders, each sent under its own name (a folder
/// `a/b` arrives as `b/...`). Folders are walked recursively, including empty folders and empty
/// files.
///
/// Symbolic links: a path given here is followed (you named it), but links found inside folders
/// are skipped with a `tracing` warning (following them could send things outside the folder, or
/// loop), and so are devices, sockets and pipes. A name that [`check_name`] refuses, or that is
/// not UTF-8, is an error naming the file (leaving it out silently would send less than asked).
///
/// Hashing uses every core (`available_parallelism` threads, taking pieces from a shared counter
/// and reading them with positioned reads). `progress(hashed_bytes, total_bytes)` is called after
/// each piece, from any of those threads, and once before hashing starts.
///
/// Returns the manifest and, per entry (same index), the local file backing it (`None` for
/// folders).
pub fn build(
    paths: &[PathBuf],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Manifest, Vec<Option<PathBuf>>), ManifestError> {
    if paths.is_empty() {
        return Err(ManifestError::Nothing);
    }
    // Top-level paths: check them all, refuse two with the same name, then send in name order.
    let mut tops: Vec<(String, &PathBuf, std::fs::Metadata)> = Vec::with_capacity(paths.len());
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ManifestError::NotFound { path: path.clone() }
            } else {
                read_err(path)(e)
            }
        })?;
        let name = top_name(path)?;
        if let Some((_, first, _)) = tops.iter().find(|(n, _, _)| *n == name) {
            return Err(ManifestError::SameName {
                name,
                first: (*first).clone(),
                second: path.clone(),
            });
        }
        tops.push((name, path, meta));
    }
    tops.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut found = Vec::new();
    for (name, path, meta) in tops {
        if meta.is_dir() {
            walk(path, &name, &mut found)?;
        } else if meta.is_file() {
            found.push(Found {
                path: name,
                file: Some((path.clone(), meta.len())),
            });
        } else {
            return Err(ManifestError::NotFileOrDir { path: path.clone() });
        }
    }

    let total = found
        .iter()
        .filter_map(|f| f.file.as_ref().map(|(_, size)| *size))
        .sum::<u64>();
    let piece_size = piece_size_for(total);
    let hashes = hash_pieces(&found, piece_size, total, progress)?;

    let mut hashes = hashes.into_iter();
    let mut entries = Vec::with_capacity(found.len());
    let mut locals = Vec::with_capacity(found.len());
    for f in found {
        match f.file {
            None => {
                entries.push(Entry {
                    path: f.path,
                    kind: EntryKind::Dir,
                });
                locals.push(None);
            }
            Some((local, size)) => {
                let pieces = hashes
                    .by_ref()
                    .take(size.div_ceil(piece_size) as usize)
                    .map(hex::encode)
                    .collect();
                entries.push(Entry {
                    path: f.path,
                    kind: EntryKind::File { size, pieces },
                });
                locals.push(Some(local));
            }
        }
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        piece_size,
        entries,
    };
    Ok((manifest, locals))
}

/// Hashes every piece of every file in `found`, in parallel; returns the hashes in order (file by
/// file, piece by piece).
fn hash_pieces(
    found: &[Found],
    piece_size: u64,
    total: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<[u8; 32]>, ManifestError> {
    // One job per piece: (file, offset, length).
    let files: Vec<(&Path, u64)> = found
        .iter()
        .filter_map(|f| f.file.as_ref().map(|(p, s)| (p.as_path(), *s)))
        .collect();
    let mut jobs: Vec<(usize, u64, usize)> = Vec::new();
    for (i, &(_, size)) in files.iter().enumerate() {
        let mut offset = 0;
        while offset < size {
            let len = piece_size.min(size - offset);
            jobs.push((i, offset, len as usize));
            offset += len;
        }
    }
    progress(0, total);
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    let next = AtomicUsize::new(0);
    let hashed = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<ManifestError>> = Mutex::new(None);

    let worker = || -> Vec<(usize, [u8; 32])> {
        let mut done = Vec::new();
        let mut buf = Vec::new();
        let mut open: Option<(usize, File)> = None;
        let fail = |e: ManifestError| {
            failed.store(true, Ordering::Relaxed);
            error.lock().expect("not poisoned").get_or_insert(e);
        };
        while !failed.load(Ordering::Relaxed) {
            let j = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(fi, offset, len)) = jobs.get(j) else {
                break;
            };
            let path = files[fi].0;
            if open.as_ref().is_none_or(|(i, _)| *i != fi) {
                match File::open(path) {
                    Ok(f) => open = Some((fi, f)),
                    Err(e) => {
                        fail(read_err(path)(e));
                        break;
                    }
                }
            }
            let (_, file) = open.as_ref().expect("just opened");
            buf.resize(len, 0);
            if let Err(e) = file.read_exact_at(&mut buf, offset) {
                fail(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    ManifestError::Changed {
                        path: path.to_owned(),
                    }
                } else {
                    read_err(path)(e)
                });
                break;
            }
            done.push((j, *blake3::hash(&buf).as_bytes()));
            let so_far = hashed.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
            progress(so_far, total);
        }
        done
    };
    let parts: Vec<Vec<(usize, [u8; 32])>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a hashing thread panicked"))
            .collect()
    });
    if let Some(e) = error.into_inner().expect("not poisoned") {
        return Err(e);
    }
    let mut out = vec![[0u8; 32]; jobs.len()];
    for (j, h) in parts.into_iter().flatten() {
        out[j] = h;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    /// Deterministic, not repetitive bytes.
    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut h = blake3::Hasher::new();
        h.update(&[seed]);
        let mut rd = h.finalize_xof();
        out.resize(len, 0);
        rd.fill(&mut out);
        out
    }

    fn no_progress(_: u64, _: u64) {}

    fn find<'a>(m: &'a Manifest, path: &str) -> (usize, &'a Entry) {
        m.entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.path == path)
            .unwrap_or_else(|| panic!("{path} not in {m:#?}"))
    }

    #[test]
    fn piece_sizes() {
        const MIB: u64 = 1 << 20;
        assert_eq!(piece_size_for(0), MIB);
        assert_eq!(piece_size_for(1), MIB);
        assert_eq!(piece_size_for(16 * 1024 * MIB), MIB);
        assert_eq!(piece_size_for(16 * 1024 * MIB + 1), 2 * MIB);
        assert_eq!(piece_size_for(100 * 1024 * MIB), 8 * MIB);
        assert_eq!(piece_size_for(256 * 1024 * MIB), 16 * MIB);
        assert_eq!(piece_size_for(u64::MAX), 16 * MIB);
        for t in [0, 5, 1 << 33, 1 << 40, 1 << 50] {
            let p = piece_size_for(t);
            assert!(p.is_power_of_two() && (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&p));
            assert!(t.div_ceil(p) <= TARGET_PIECES || p == MAX_PIECE_SIZE);
        }
    }

    /// tmp/share/{a/b/big.bin, a/b/small.txt, a/empty.txt, emptydir/, z.txt}, tmp/solo.bin
    fn tree(tmp: &Path) -> (Vec<u8>, Vec<u8>) {
        let share = tmp.join("share");
        fs::create_dir_all(share.join("a/b")).unwrap();
        fs::create_dir_all(share.join("emptydir")).unwrap();
        let big = data(2 * MIN_PIECE_SIZE as usize + 12345, 1);
        fs::write(share.join("a/b/big.bin"), &big).unwrap();
        fs::write(share.join("a/b/small.txt"), b"hello").unwrap();
        fs::write(share.join("a/empty.txt"), b"").unwrap();
        fs::write(share.join("z.txt"), b"zzz").unwrap();
        let solo = data(MIN_PIECE_SIZE as usize, 2);
        fs::write(tmp.join("solo.bin"), &solo).unwrap();
        (big, solo)
    }

    #[test]
    fn builds_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let (big, solo) = tree(tmp.path());
        let last = AtomicU64::new(u64::MAX);
        let calls = AtomicUsize::new(0);
        let progress = |done: u64, total: u64| {
            assert!(done <= total);
            calls.fetch_add(1, Ordering::Relaxed);
            if done == total {
                last.store(done, Ordering::Relaxed);
            }
        };
        // Given out of order: the manifest sorts the top level.
        let (m, locals) = build(
            &[tmp.path().join("solo.bin"), tmp.path().join("share")],
            &progress,
        )
        .unwrap();
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "share",
                "share/a",
                "share/a/b",
                "share/a/b/big.bin",
                "share/a/b/small.txt",
                "share/a/empty.txt",
                "share/emptydir",
                "share/z.txt",
                "solo.bin",
            ]
        );
        assert_eq!(m.version, MANIFEST_VERSION);
        assert_eq!(m.piece_size, MIN_PIECE_SIZE);
        let total = (big.len() + solo.len() + 5 + 3) as u64;
        assert_eq!(m.total_bytes(), total);
        assert_eq!(last.load(Ordering::Relaxed), total);
        assert!(
            calls.load(Ordering::Relaxed) >= 6,
            "once per piece, and at the start"
        );

        // Folders have no local file and no pieces.
        for dir in ["share", "share/a", "share/a/b", "share/emptydir"] {
            let (i, e) = find(&m, dir);
            assert_eq!(e.kind, EntryKind::Dir);
            assert_eq!(locals[i], None);
            assert!(m.piece_hashes(i).is_empty());
        }
        // An empty file has no pieces.
        let (i, e) = find(&m, "share/a/empty.txt");
        assert_eq!(
            e.kind,
            EntryKind::File {
                size: 0,
                pieces: vec![]
            }
        );
        assert_eq!(
            locals[i].as_deref(),
            Some(&*tmp.path().join("share/a/empty.txt"))
        );

        // Pieces are BLAKE3 of the slices; the last one is short.
        let (i, _) = find(&m, "share/a/b/big.bin");
        let expected: Vec<[u8; 32]> = big
            .chunks(m.piece_size as usize)
            .map(|c| *blake3::hash(c).as_bytes())
            .collect();
        assert_eq!(expected.len(), 3);
        assert_eq!(m.piece_hashes(i), expected);
        assert_eq!(
            locals[i].as_deref(),
            Some(&*tmp.path().join("share/a/b/big.bin"))
        );
        let (i, _) = find(&m, "solo.bin");
        assert_eq!(m.piece_hashes(i), vec![*blake3::hash(&solo).as_bytes()]);
        let (i, _) = find(&m, "share/z.txt");
        assert_eq!(m.piece_hashes(i), vec![*blake3::hash(b"zzz").as_bytes()]);

        // What we build, we accept; and the bytes round-trip.
        let bytes = m.to_bytes();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert_eq!(Manifest::parse(&bytes).unwrap().to_bytes(), bytes);
        assert_eq!(m.hash(), Manifest::hash_of(&bytes));
        assert_eq!(m.hash(), *blake3::hash(&bytes).as_bytes());

        // Same content, same manifest (two senders are two peers of the same thing).
        let (again, _) = build(
            &[tmp.path().join("share"), tmp.path().join("solo.bin")],
            &no_progress,
        )
        .unwrap();
        assert_eq!(again.to_bytes(), bytes);
    }

    #[test]
    fn json_shape() {
        let m = Manifest {
            version: 1,
            piece_size: MIN_PIECE_SIZE,
            entries: vec![
                Entry {
                    path: "d".into(),
                    kind: EntryKind::Dir,
                },
                Entry {
                    path: "d/f".into(),
                    kind: EntryKind::File {
                        size: 1,
                        pieces: vec!["ab".repeat(32)],
                    },
                },
            ],
        };
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"version":1,"piece_size":1048576,"entries":[{{"path":"d","type":"dir"}},{{"path":"d/f","type":"file","size":1,"pieces":["{}"]}}]}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn a_folder_path_like_dot_dot_is_named_after_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        fs::create_dir_all(top.join("sub")).unwrap();
        fs::write(top.join("f"), b"x").unwrap();
        let (m, _) = build(&[top.join("sub/..")], &no_progress).unwrap();
        assert_eq!(m.entries[0].path, "top");
        let (m, _) = build(&[top.join("sub/.")], &no_progress).unwrap();
        assert_eq!(m.entries[0].path, "sub");
        let err = build(&[PathBuf::from("/")], &no_progress).unwrap_err();
        assert!(matches!(err, ManifestError::NoName { .. }), "{err}");
    }

    #[test]
    fn symlinks_inside_folders_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        fs::create_dir(&share).unwrap();
        fs::write(tmp.path().join("outside"), b"secret").unwrap();
        fs::write(share.join("real"), b"data").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), share.join("link")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), share.join("loop")).unwrap();
        let (m, _) = build(std::slice::from_ref(&share), &no_progress).unwrap();
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["share", "share/real"]);
        // A link given directly is followed, and sent under the link's name.
        let (m, locals) = build(&[share.join("link")], &no_progress).unwrap();
        assert_eq!(m.entries[0].path, "link");
        assert_eq!(m.total_bytes(), 6);
        assert_eq!(locals[0].as_deref(), Some(&*share.join("link")));
    }

    #[test]
    fn build_errors_are_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        let err = build(std::slice::from_ref(&missing), &no_progress).unwrap_err();
        assert!(matches!(err, ManifestError::NotFound { .. }));
        assert!(err.to_string().contains("no such file or folder"), "{err}");

        assert!(matches!(
            build(&[], &no_progress).unwrap_err(),
            ManifestError::Nothing
        ));

        fs::create_dir_all(tmp.path().join("x/same")).unwrap();
        fs::write(tmp.path().join("same"), b"1").unwrap();
        let err = build(
            &[tmp.path().join("same"), tmp.path().join("x/same")],
            &no_progress,
        )
        .unwrap_err();
        assert!(matches!(err, ManifestError::SameName { ref name, .. } if name == "same"));
        assert!(
            err.to_string().contains("would both arrive as \"same\""),
            "{err}"
        );

        for bad in ["CON", "nul.txt", "com1", "a\nb", "back\\slash"] {
            let dir = tmp.path().join("bad");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join(bad), b"").unwrap();
            let err = build(&[dir], &no_progress).unwrap_err();
            assert!(matches!(err, ManifestError::BadName { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("rename it"), "{err}");
        }
    }

    #[test]
    fn many_small_files_and_progress_reaches_total() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("many");
        fs::create_dir(&share).unwrap();
        for i in 0..200 {
            fs::write(share.join(format!("f{i:03}")), data(i * 37, i as u8)).unwrap();
        }
        let max = AtomicU64::new(0);
        let progress = |done: u64, _: u64| {
            max.fetch_max(done, Ordering::Relaxed);
        };
        let (m, _) = build(std::slice::from_ref(&share), &progress).unwrap();
        assert_eq!(max.load(Ordering::Relaxed), m.total_bytes());
        for (i, e) in m.entries.iter().enumerate().skip(1) {
            let n: usize = e.path["many/f".len()..].parse().unwrap();
            let d = data(n * 37, n as u8);
            let want: Vec<[u8; 32]> = if d.is_empty() {
                vec![]
            } else {
                vec![*blake3::hash(&d).as_bytes()]
            };
            assert_eq!(m.piece_hashes(i), want, "{}", e.path);
        }
    }

    fn valid() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            piece_size: MIN_PIECE_SIZE,
            entries: vec![
                Entry {
                    path: "top".into(),
                    kind: EntryKind::Dir,
                },
                Entry {
                    path: "top/f".into(),
                    kind: EntryKind::File {
                        size: MIN_PIECE_SIZE + 1,
                        pieces: vec!["0".repeat(64), "f".repeat(64)],
                    },
                },
            ],
        }
    }

    fn parse_err(m: &Manifest) -> String {
        match Manifest::parse(&m.to_bytes()) {
            Ok(_) => panic!("accepted {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parse_rejects_unsafe_paths() {
        assert!(Manifest::parse(&valid().to_bytes()).is_ok());
        let long = "x".repeat(256);
        let cases: &[&str] = &[
            "",
            "/etc/passwd",
            "/top",
            "..",
            "../evil",
            "top/../../evil",
            "top/..",
            ".",
            "./top",
            "top/./f2",
            "top//f2",
            "top/",
            "top\\..\\evil",
            "top/a\\b",
            "top/a\u{0}b",
            "top/a\nb",
            "top/a\u{7f}b",
            "top/a\u{85}b",
            "top/CON",
            "top/con",
            "top/nul.txt",
            "top/Aux",
            "top/COM1",
            "top/lpt9.log",
            "top/PRN ",
            "top/com¹",
            "top/invoice\u{202E}fdp.exe",
            "top/a\u{2066}b",
            "top/a\u{200F}b",
            "top/a\u{2028}b",
            "top/a\u{200B}b",
            "top/a\u{FEFF}b",
            &format!("top/{long}"),
        ];
        for &path in cases {
            let mut m = valid();
            m.entries.push(Entry {
                path: path.into(),
                kind: EntryKind::Dir,
            });
            let err = parse_err(&m);
            assert!(err.contains("entry 2"), "{path:?}: {err}");
        }
        // Near misses are fine.
        for ok in [
            "top/...x",
            "top/..x",
            "top/.hidden",
            "top/console",
            "top/com10",
            "top/nul_x",
            &format!("top/{}", "x".repeat(255)),
        ] {
            let mut m = valid();
            m.entries.push(Entry {
                path: ok.into(),
                kind: EntryKind::Dir,
            });
            Manifest::parse(&m.to_bytes()).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn paths_are_normalised_and_names_equal_once_normalised_are_refused() {
        let mut m = valid();
        m.entries.push(Entry {
            path: "top/cafe\u{301}".into(),
            kind: EntryKind::Dir,
        });
        let parsed = Manifest::parse(&m.to_bytes()).unwrap();
        assert_eq!(parsed.entries[2].path, "top/caf\u{e9}");
        m.entries.push(Entry {
            path: "top/caf\u{e9}".into(),
            kind: EntryKind::Dir,
        });
        let err = parse_err(&m);
        assert!(err.contains("entry 3") && err.contains("NFC"), "{err}");
        // A child under the decomposed folder name finds its normalised parent.
        let mut m = valid();
        m.entries.push(Entry {
            path: "top/cafe\u{301}".into(),
            kind: EntryKind::Dir,
        });
        m.entries.push(Entry {
            path: "top/caf\u{e9}/x".into(),
            kind: EntryKind::Dir,
        });
        assert!(Manifest::parse(&m.to_bytes()).is_ok());
    }

    #[test]
    fn parse_keeps_to_its_limits() {
        let m = valid();
        let bytes = m.to_bytes();
        let exact = ManifestLimits {
            max_bytes: bytes.len() as u64,
            max_entries: m.entries.len(),
        };
        assert!(Manifest::parse_with(&bytes, exact).is_ok());
        let err = Manifest::parse_with(
            &bytes,
            ManifestLimits {
                max_bytes: exact.max_bytes - 1,
                ..exact
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("larger than the limit"), "{err}");
        let err = Manifest::parse_with(
            &bytes,
            ManifestLimits {
                max_entries: exact.max_entries - 1,
                ..exact
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than the limit"), "{err}");
    }

    #[test]
    fn parse_rejects_inconsistent_entries() {
        let with = |f: &dyn Fn(&mut Manifest)| {
            let mut m = valid();
            f(&mut m);
            parse_err(&m)
        };
        let err = with(&|m| m.entries.push(m.entries[1].clone()));
        assert!(err.contains("listed twice"), "{err}");
        let err = with(&|m| m.entries.push(m.entries[0].clone()));
        assert!(err.contains("listed twice"), "{err}");
        // A file used as a folder.
        let err = with(&|m| {
            m.entries.push(Entry {
                path: "top/f/x".into(),
                kind: EntryKind::Dir,
            })
        });
        assert!(err.contains("is a file"), "{err}");
        // A folder listed after its contents, or not at all.
        let err = with(&|m| m.entries.swap(0, 1));
        assert!(err.contains("not listed before"), "{err}");
        let err = with(&|m| {
            m.entries.push(Entry {
                path: "other/x".into(),
                kind: EntryKind::Dir,
            })
        });
        assert!(err.contains("not listed before"), "{err}");
        // Piece counts and hashes.
        let err = with(&|m| {
            if let EntryKind::File { pieces, .. } = &mut m.entries[1].kind {
                pieces.pop();
            }
        });
        assert!(err.contains("expected 2"), "{err}");
        let err = with(&|m| {
            if let EntryKind::File { size, .. } = &mut m.entries[1].kind {
                *size = 0;
            }
        });
        assert!(err.contains("expected 0"), "{err}");
        for bad in [
            "F".repeat(64),
            "0".repeat(63),
            "0".repeat(65),
            "g".repeat(64),
        ] {
            let err = with(&|m| {
                if let EntryKind::File { pieces, .. } = &mut m.entries[1].kind {
                    pieces[1] = bad.clone();
                }
            });
            assert!(err.contains("piece hash 1"), "{err}");
        }
        // Piece size.
        for ps in [
            0,
            1,
            MIN_PIECE_SIZE / 2,
            MIN_PIECE_SIZE + 1,
            3 << 20,
            MAX_PIECE_SIZE * 2,
        ] {
            let err = with(&|m| m.piece_size = ps);
            assert!(err.contains("piece size"), "{ps}: {err}");
        }
        // Nothing at all.
        let err = with(&|m| m.entries.clear());
        assert!(err.contains("lists nothing"), "{err}");
    }

    #[test]
    fn parse_rejects_bad_versions_and_json() {
        let mut m = valid();
        m.version = 2;
        let err = Manifest::parse(&m.to_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::Newer(2)), "{err}");
        assert!(err.to_string().contains("newer ferry"), "{err}");
        // A newer manifest is recognised even if its shape changed.
        let err = Manifest::parse(br#"{"version":7,"stuff":[]}"#).unwrap_err();
        assert!(matches!(err, ManifestError::Newer(7)), "{err}");
        m.version = 0;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()).unwrap_err(),
            ManifestError::Invalid(_)
        ));
        for junk in [&b""[..], b"null", b"<html>", br#"{"version":1}"#] {
            let err = Manifest::parse(junk).unwrap_err();
            assert!(matches!(err, ManifestError::Json(_)), "{err}");
        }
        let unknown =
            br#"{"version":1,"piece_size":1048576,"entries":[{"path":"a","type":"link"}]}"#;
        assert!(matches!(
            Manifest::parse(unknown).unwrap_err(),
            ManifestError::Json(_)
        ));
    }

    /// A name any receiver can create: letters, digits and a few safe punctuation marks, not
    /// starting with a dot and not a device name.
    fn safe_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_][a-zA-Z0-9 _.-]{0,12}"
            .prop_filter("a name check_name accepts", |n| check_name(n).is_ok())
    }

    /// A valid manifest: every folder listed before what it holds, no path twice, piece hashes
    /// matching sizes.
    fn valid_manifest() -> impl Strategy<Value = Manifest> {
        let item = (
            proptest::collection::vec(safe_name(), 1..4),
            proptest::option::of(0u64..5 * MIN_PIECE_SIZE),
            any::<u8>(),
        );
        (0u32..5, proptest::collection::vec(item, 1..12)).prop_map(|(shift, items)| {
            let piece_size = MIN_PIECE_SIZE << shift;
            let mut entries: Vec<Entry> = Vec::new();
            let mut kinds: HashMap<String, bool> = HashMap::new();
            'items: for (names, size, seed) in items {
                for depth in 1..names.len() {
                    let dir = names[..depth].join("/");
                    match kinds.get(&dir) {
                        Some(true) => {}
                        Some(false) => continue 'items,
                        None => {
                            kinds.insert(dir.clone(), true);
                            entries.push(Entry {
                                path: dir,
                                kind: EntryKind::Dir,
                            });
                        }
                    }
                }
                let path = names.join("/");
                if kinds.contains_key(&path) {
                    continue;
                }
                kinds.insert(path.clone(), size.is_none());
                let kind = match size {
                    None => EntryKind::Dir,
                    Some(size) => EntryKind::File {
                        size,
                        pieces: (0..size.div_ceil(piece_size))
                            .map(|k| blake3::hash(&[seed, k as u8]).to_hex().to_string())
                            .collect(),
                    },
                };
                entries.push(Entry { path, kind });
            }
            Manifest {
                version: MANIFEST_VERSION,
                piece_size,
                entries,
            }
        })
    }

    /// A component no receiver may create, or that leads elsewhere.
    fn hostile_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            safe_name().prop_map(|n| format!("{n}\\..")),
            safe_name().prop_map(|n| format!("{n}\0")),
            safe_name().prop_map(|n| format!("{n}\n")),
            (
                prop_oneof![
                    Just("CON"),
                    Just("nul"),
                    Just("Com1"),
                    Just("LPT9"),
                    Just("aux")
                ],
                "(\\.[a-z]{1,3})?"
            )
                .prop_map(|(d, ext)| format!("{d}{ext}")),
            "[a-z]{256,300}",
        ]
    }

    /// Any JSON value, up to a small depth.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("version".to_owned()),
                        Just("piece_size".to_owned()),
                        Just("entries".to_owned()),
                        Just("path".to_owned()),
                        Just("type".to_owned()),
                        Just("size".to_owned()),
                        Just("pieces".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..8,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::parse(&bytes);
        }

        #[test]
        fn arbitrary_json_never_panics(v in any_json(), version in 0u32..3, piece in any::<u64>()) {
            let _ = Manifest::parse(v.to_string().as_bytes());
            // Shaped like a manifest around arbitrary entries, so parsing gets past the header.
            let shaped = serde_json::json!({"version": version, "piece_size": piece, "entries": [v]});
            let _ = Manifest::parse(shaped.to_string().as_bytes());
            let shaped = serde_json::json!({"version": 1, "piece_size": MIN_PIECE_SIZE, "entries": v});
            let _ = Manifest::parse(shaped.to_string().as_bytes());
        }

        #[test]
        fn valid_manifests_round_trip(m in valid_manifest()) {
            let bytes = m.to_bytes();
            let back = Manifest::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.to_bytes(), bytes);
            prop_assert_eq!(back.hash(), m.hash());
        }

        #[test]
        fn hostile_paths_are_rejected(
            m in valid_manifest(),
            at in any::<proptest::sample::Index>(),
            before in proptest::collection::vec(safe_name(), 0..3),
            bad in hostile_name(),
            after in proptest::collection::vec(safe_name(), 0..3),
            absolute in any::<bool>(),
        ) {
            let mut names = before;
            names.push(bad);
            names.extend(after);
            let mut path = names.join("/");
            if absolute {
                path.insert(0, '/');
            }
            prop_assert!(check_path(&path).is_err(), "{:?} accepted", path);
            let mut m = m;
            let i = at.index(m.entries.len());
            m.entries[i].path = path;
            prop_assert!(Manifest::parse(&m.to_bytes()).is_err());
            // Appended as a new top-level entry too (no parent to miss).
            let mut m2 = m.clone();
            m2.entries.push(Entry { path: m.entries[i].path.trim_start_matches('/').to_owned(), kind: EntryKind::Dir });
            let top_level = !m2.entries.last().is_some_and(|e| e.path.contains('/'));
            if top_level {
                prop_assert!(Manifest::parse(&m2.to_bytes()).is_err());
            }
        }
    }
}
