//! [`LocalDir`], the [`DataStore`] on a local (or shared) filesystem: staged files under the
//! served directory's state directory (`DIR/.ferry/uploads/<id>`), appends streamed in by
//! [`body::write_body`], an unverified-bytes mark beside a file while a checksummed append is
//! in flight, the atomic move of a finished upload to its target (never replacing an existing
//! file unless asked), and the assembly of a concatenated upload from its parts
//! (copy_file_range where the OS allows, via `io::copy`).

use super::body::{self, write_body};
use super::{AppendLimits, Appended, BodyEnd, DataError, DataStore, Incoming, Node, ReadError};
use crate::listing;
use crate::safepath::{self, STATE_DIR};
use async_trait::async_trait;
use ferry_core::verify::Hasher;
use ferry_http::LocalFile;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The staging area of one served directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    dir: PathBuf,
}

impl LocalDir {
    /// The tree at `root` (canonical), staging under `<root>/.ferry/uploads`, which is created
    /// if needed.
    pub fn open(root: &Path) -> io::Result<LocalDir> {
        let local = LocalDir::reader(root);
        std::fs::create_dir_all(&local.dir)?;
        Ok(local)
    }

    /// The tree at `root` (canonical) for reading only: nothing is created (staging an upload
    /// fails until [`LocalDir::open`] made the staging directory).
    pub fn reader(root: &Path) -> LocalDir {
        LocalDir {
            root: root.to_path_buf(),
            dir: root.join(STATE_DIR).join("uploads"),
        }
    }

    /// The staged data file of upload `id`.
    pub fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Creates the empty data file of a new upload and, when the length is known, reserves the
    /// disk space for it (so a full disk is reported at creation, not half-way).
    fn create_sync(&self, id: &str, length: Option<u64>) -> io::Result<()> {
        let path = self.data_path(id);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Some(len) = length
            && len > 0
            && let Err(e) = reserve(&file, len)
        {
            // A failed reservation may have kept what it got (ext4 does): give it all back.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(())
    }

    /// The upload ids whose staged files (data or unverified-bytes marks) are in the staging
    /// directory and untouched for `min_age`. Only names this store creates count.
    fn staged_sync(&self, min_age: std::time::Duration) -> io::Result<Vec<String>> {
        let mut ids = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let id = name.strip_suffix(".unverified").unwrap_or(name);
            let ours = id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let meta = entry.metadata()?;
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if ours && meta.is_file() && old {
                ids.insert(id.to_owned());
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Bytes staged so far (the upload's offset), `None` if the data file is gone.
    fn staged_len(&self, id: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.data_path(id)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Cuts unverified bytes off the data file.
    fn truncate(&self, id: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.data_path(id))?;
        file.set_len(len)?;
        file.sync_data()
    }

    /// Deletes the staged data and its marks (missing is fine).
    fn delete_sync(&self, id: &str) -> io::Result<()> {
        self.clear_unverified(id)?;
        remove_if_present(&self.data_path(id))
    }

    fn unverified_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.unverified"))
    }

    /// Marks the bytes from `offset` on as unverified while a checksummed PATCH writes them.
    /// A mark found with no writer (after a crash) means: cut the file back to `offset`.
    /// A small file beside the data rather than a store transaction: it costs no fsync, and
    /// it only has to outlive the process, like the page-cache bytes it guards.
    fn mark_unverified(&self, id: &str, offset: u64) -> io::Result<()> {
        std::fs::write(self.unverified_path(id), offset.to_string())
    }

    fn clear_unverified(&self, id: &str) -> io::Result<()> {
        remove_if_present(&self.unverified_path(id))
    }

    /// The offset of an unverified-bytes mark, if one is set.
    fn unverified(&self, id: &str) -> io::Result<Option<u64>> {
        match std::fs::read_to_string(self.unverified_path(id)) {
            Ok(text) => Ok(Some(text.trim().parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "bad unverified-bytes mark")
            })?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `target` may be written: `Ok(false)` when nothing is there, `Ok(true)` when a
    /// file exists, an error for a directory or a path that escapes the root.
    fn target_exists_sync(&self, target: &str) -> Result<bool, DataError> {
        let path = self.target_path(target)?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Err(DataError::TargetIsDirectory(target.to_owned())),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(DataError::io("looking at the target", e)),
        }
    }

    /// The absolute path of `target`; its existing ancestors must resolve inside the root.
    fn target_path(&self, target: &str) -> Result<PathBuf, DataError> {
        let rel = safepath::target(target).map_err(|e| DataError::TargetPath(target.into(), e))?;
        // The deepest existing ancestor, resolved, must lie inside the root (no symlink escape).
        let mut ancestor = rel.parent();
        while let Some(a) = ancestor {
            let abs = self.root.join(a);
            if let Ok(canonical) = abs.canonicalize() {
                safepath::check_inside(&self.root, &canonical)
                    .map_err(|e| DataError::TargetPath(target.into(), e))?;
                break;
            }
            ancestor = a.parent();
        }
        Ok(self.root.join(rel))
    }

    /// Moves the staged data of `id` to `target` atomically. Without `overwrite`, an existing
    /// target is never replaced (RENAME_NOREPLACE). Missing parent directories are created.
    fn land_sync(&self, id: &str, target: &str, overwrite: bool) -> Result<(), DataError> {
        let dest = self.target_path(target)?;
        let io_err = |e| DataError::io("moving the upload into place", e);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
            let canonical = parent.canonicalize().map_err(io_err)?;
            safepath::check_inside(&self.root, &canonical)
                .map_err(|e| DataError::TargetPath(target.into(), e))?;
        }
        if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Err(DataError::TargetIsDirectory(target.to_owned()));
        }
        let src = self.data_path(id);
        // The bytes reach the disk before the name points at them.
        File::open(&src)
            .and_then(|f| f.sync_data())
            .map_err(io_err)?;
        if overwrite {
            std::fs::rename(&src, &dest).map_err(io_err)?;
        } else {
            rename_noreplace(&src, &dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    DataError::TargetExists(target.to_owned())
                } else {
                    io_err(e)
                }
            })?;
        }
        if let Some(parent) = dest.parent() {
            sync_dir(parent).map_err(io_err)?;
        }
        Ok(())
    }

    /// Makes the staged data of final upload `id` the concatenation of the staged `parts`
    /// (whose lengths are `lengths`), and returns its length.
    ///
    /// The first part's file becomes the result: the other parts are appended to it (with
    /// copy_file_range where the OS allows, via `io::copy`), so one part is never copied.
    /// Every step can be redone after a crash: an append checks the length already reached
    /// and cuts off a half-done one; the parts after the first stay intact until the caller
    /// deletes them; and once the result is renamed to `id`, it is recognised by its length.
    fn assemble_sync(&self, id: &str, parts: &[String], lengths: &[u64]) -> io::Result<u64> {
        let total = lengths
            .iter()
            .try_fold(0u64, |sum, &len| sum.checked_add(len))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "lengths overflow"))?;
        let dest = self.data_path(id);
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == total) {
            return Ok(total); // done before a crash
        }
        let Some(first) = parts.first() else {
            File::create(&dest)?;
            return Ok(0);
        };
        let base_path = self.data_path(first);
        let mut base = OpenOptions::new().write(true).open(&base_path)?;
        let mut reached = lengths[0];
        for (part, &len) in parts.iter().zip(lengths).skip(1) {
            let have = base.metadata()?.len();
            if have >= reached.saturating_add(len) {
                reached += len; // appended before a crash
                continue;
            }
            base.set_len(reached)?;
            base.seek(SeekFrom::Start(reached))?;
            let mut input = File::open(self.data_path(part))?;
            let copied = io::copy(&mut (&mut input).take(len), &mut base)?;
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("part {part} has {copied} of its {len} bytes"),
                ));
            }
            reached += len;
        }
        base.set_len(total)?;
        drop(base);
        std::fs::rename(&base_path, &dest)?;
        Ok(total)
    }
}

/// Reserves `len` bytes for `file` without changing its length, where the filesystem allows.
fn reserve(file: &File, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::KEEP_SIZE, 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) => Err(io::Error::from(io::ErrorKind::StorageFull)),
        Err(rustix::io::Errno::FBIG) => Err(io::Error::from(io::ErrorKind::FileTooLarge)),
        // Not supported here (some filesystems): space is found while writing instead.
        Err(_) => Ok(()),
    }
}

fn rename_noreplace(src: &Path, dest: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, src, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            // The filesystem cannot do it atomically: link (which refuses to replace) + unlink.
            std::fs::hard_link(src, dest)?;
            std::fs::remove_file(src)
        }
        Err(e) => Err(e.into()),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Runs blocking filesystem work on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, DataError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataError::io(what, io::Error::other(e)))?
}

#[async_trait]
impl DataStore for LocalDir {
    async fn create(
        &self,
        id: &str,
        length: Option<u64>,
        _target: Option<&str>,
    ) -> Result<(), DataError> {
        let (dir, id) = (self.clone(), id.to_owned());
        blocking("creating the upload", move || {
            dir.create_sync(&id, length)
                .map_err(|e| DataError::io("creating the upload", e))
        })
        .await
    }

    async fn offset(&self, id: &str) -> Result<Option<u64>, DataError> {
        if let Some(from) = self
            .unverified(id)
            .map_err(|e| DataError::io("reading the upload", e))?
        {
            return Ok(Some(from));
        }
        self.staged_len(id)
            .map_err(|e| DataError::io("reading the upload", e))
    }

    async fn append(&self, id: &str, body: Incoming, limits: AppendLimits<'_>) -> Appended {
        let offset = limits.offset;
        if limits.checksum.is_some() {
            // Bytes written from here are unverified until the digest matches; a crash in
            // between leaves this mark, and the next writer cuts them off (`recover`).
            if let Err(e) = self.mark_unverified(id, offset) {
                let drained = body::drain(&mut body.body.into_data_stream()).await;
                return Appended {
                    received: 0,
                    kept: 0,
                    verified: None,
                    end: BodyEnd::Disk(e),
                    drained,
                };
            }
        }
        let outcome = write_body(
            body,
            self.data_path(id),
            offset,
            limits.room,
            limits.checksum.map(|c| Hasher::new(c.algorithm)),
            limits.idle,
            &limits.let_go,
        )
        .await;
        let mut appended = Appended {
            received: outcome.written,
            kept: outcome.written,
            verified: None,
            end: outcome.end,
            drained: outcome.drained,
        };
        if let Some(c) = limits.checksum {
            let matched = matches!(appended.end, BodyEnd::Complete)
                && outcome.digest.as_deref() == Some(c.expected.as_slice());
            if !matched {
                appended.kept = 0;
                if let Err(e) = self.truncate(id, offset) {
                    appended.end = BodyEnd::Disk(e);
                }
            }
            if let Err(e) = self.clear_unverified(id) {
                appended.end = BodyEnd::Disk(e);
            }
            appended.verified = Some(matched);
        } else if matches!(appended.end, BodyEnd::Disk(_))
            && let Ok(Some(len)) = self.staged_len(id)
        {
            // A failed write may have left part of a buffer in the file: those are real bytes.
            appended.kept = len.saturating_sub(offset);
        }
        appended
    }

    async fn recover(&self, id: &str) -> Result<(), DataError> {
        let mark = self
            .unverified(id)
            .map_err(|e| DataError::io("reading the upload", e))?;
        if let Some(from) = mark {
            self.truncate(id, from)
                .and_then(|()| self.clear_unverified(id))
                .map_err(|e| DataError::io("discarding unverified bytes", e))?;
        }
        Ok(())
    }

    async fn staged(&self, min_age: std::time::Duration) -> Result<Vec<String>, DataError> {
        let dir = self.clone();
        blocking("listing staged uploads", move || {
            dir.staged_sync(min_age)
                .map_err(|e| DataError::io("listing staged uploads", e))
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<(), DataError> {
        self.delete_sync(id)
            .map_err(|e| DataError::io("deleting the upload", e))
    }

    async fn assemble(&self, id: &str, parts: &[(String, u64)]) -> Result<u64, DataError> {
        let (dir, id) = (self.clone(), id.to_owned());
        let (ids, lengths): (Vec<String>, Vec<u64>) = parts.iter().cloned().unzip();
        blocking("assembling the parts", move || {
            dir.assemble_sync(&id, &ids, &lengths)
                .map_err(|e| DataError::io("assembling the parts", e))
        })
        .await
    }

    async fn unassemble(&self, id: &str, parts: &[String]) -> Result<(), DataError> {
        // The assembled data grew from the first part's file: it goes back there, and the next
        // assembly recognises the parts already appended.
        let assembled = self.data_path(id);
        if assembled.exists()
            && let Some(first) = parts.first()
        {
            std::fs::rename(&assembled, self.data_path(first))
                .map_err(|e| DataError::io("undoing the assembly", e))?;
        }
        Ok(())
    }

    async fn target_exists(&self, target: &str) -> Result<bool, DataError> {
        self.target_exists_sync(target)
    }

    async fn land(&self, id: &str, target: &str, overwrite: bool) -> Result<(), DataError> {
        if self
            .staged_len(id)
            .map_err(|e| DataError::io("reading the upload", e))?
            .is_none()
        {
            return Err(DataError::Gone(id.to_owned()));
        }
        let (dir, id, target) = (self.clone(), id.to_owned(), target.to_owned());
        blocking("moving the upload into place", move || {
            dir.land_sync(&id, &target, overwrite)
        })
        .await
    }

    async fn open(&self, path: &[String]) -> Result<Node, ReadError> {
        let root = self.root.clone();
        let rel: PathBuf = path.iter().collect();
        let opened = tokio::task::spawn_blocking(move || open_path(&root, &rel))
            .await
            .map_err(io::Error::other)??;
        Ok(match opened {
            Opened::Dir(_) => Node::Dir,
            Opened::File(file, meta) => {
                let name = path.last().map(String::as_str).unwrap_or_default();
                let content_type = crate::media::content_type(name);
                Node::File(Arc::new(LocalFile::new(file, &meta, content_type)))
            }
        })
    }

    async fn list(&self, path: &[String]) -> Result<Vec<listing::Entry>, ReadError> {
        let root = self.root.clone();
        let rel: PathBuf = path.iter().collect();
        tokio::task::spawn_blocking(move || match open_path(&root, &rel)? {
            Opened::Dir(dir) => Ok(listing::read_dir(&root, &dir)?),
            Opened::File(..) => Err(ReadError::Io(io::Error::from(io::ErrorKind::NotADirectory))),
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// What a request path names.
enum Opened {
    /// A regular file, open, with its metadata.
    File(File, Metadata),
    /// A folder, by its canonical path.
    Dir(PathBuf),
}

/// Resolves and opens `rel` under `root` (blocking). The opened file's real path is checked
/// again after the open, so a symlink swapped in after the resolution cannot lead outside.
fn open_path(root: &Path, rel: &Path) -> Result<Opened, ReadError> {
    let canonical = safepath::resolve_existing(root, rel)??;
    // Non-blocking: a FIFO swapped in does not hang the thread; no-follow: nor does a symlink.
    let flags = (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags as i32)
        .open(&canonical)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            safepath::check_inside(root, &real)?;
        }
    }
    let meta = file.metadata()?;
    if meta.is_dir() {
        Ok(Opened::Dir(canonical))
    } else if meta.is_file() {
        Ok(Opened::File(file, meta))
    } else {
        Err(ReadError::Special)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safepath::PathError;

    #[test]
    fn land_never_replaces_unless_asked() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        let s = LocalDir::open(&root_path).unwrap();
        s.create_sync("a", Some(3)).unwrap();
        std::fs::write(s.data_path("a"), b"abc").unwrap();
        assert!(!s.target_exists_sync("d/e.txt").unwrap());
        s.land_sync("a", "d/e.txt", false).unwrap();
        assert_eq!(std::fs::read(root_path.join("d/e.txt")).unwrap(), b"abc");
        s.create_sync("b", None).unwrap();
        std::fs::write(s.data_path("b"), b"xyz").unwrap();
        assert!(s.target_exists_sync("d/e.txt").unwrap());
        assert!(matches!(
            s.land_sync("b", "d/e.txt", false),
            Err(DataError::TargetExists(_))
        ));
        assert!(matches!(
            s.land_sync("b", "d", false),
            Err(DataError::TargetIsDirectory(_))
        ));
        s.land_sync("b", "d/e.txt", true).unwrap();
        assert_eq!(std::fs::read(root_path.join("d/e.txt")).unwrap(), b"xyz");
        assert!(matches!(
            s.land_sync("b", "../x", false),
            Err(DataError::TargetPath(_, PathError::Parent))
        ));
    }

    #[test]
    fn symlinked_parent_outside_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("out")).unwrap();
        let s = LocalDir::open(&root_path).unwrap();
        s.create_sync("a", None).unwrap();
        assert!(matches!(
            s.land_sync("a", "out/x", false),
            Err(DataError::TargetPath(_, PathError::Escapes))
        ));
        assert!(matches!(
            s.target_exists_sync("out/sub/x"),
            Err(DataError::TargetPath(_, PathError::Escapes))
        ));
    }

    #[test]
    fn assemble_concatenates() {
        let root = tempfile::tempdir().unwrap();
        let s = LocalDir::open(&root.path().canonicalize().unwrap()).unwrap();
        for (id, data) in [("p1", &b"hello "[..]), ("p2", b"world")] {
            s.create_sync(id, None).unwrap();
            std::fs::write(s.data_path(id), data).unwrap();
        }
        // A crash half-way through an append left junk past the first part: cut off and redone.
        std::fs::write(s.data_path("p1"), b"hello wo").unwrap();
        let parts = ["p1".to_string(), "p2".into()];
        assert_eq!(s.assemble_sync("f", &parts, &[6, 5]).unwrap(), 11);
        assert_eq!(std::fs::read(s.data_path("f")).unwrap(), b"hello world");
        assert!(
            !s.data_path("p1").exists(),
            "the first part became the result"
        );
        assert_eq!(std::fs::read(s.data_path("p2")).unwrap(), b"world");
        // Redone after the rename: recognised by its length.
        assert_eq!(s.assemble_sync("f", &parts, &[6, 5]).unwrap(), 11);
    }
}
