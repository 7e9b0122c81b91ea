//! The `.part` file: one pre-sized file that every connection writes into at its own offsets
//! (positioned writes, no part files to merge), flushed at checkpoints and renamed into place
//! once complete and verified.
//!
//! A part file is never opened through a symbolic link (`O_NOFOLLOW`), a new one is created only
//! where nothing is (`O_EXCL`), and an existing one must be a regular file: whether it is
//! ferry's is decided by its journal (`download/staging.rs`). Reserving its blocks gives back
//! what it got when it fails.

use crate::error::Error;
use crate::ranges::RangeSet;
use rustix::fs::{FallocateFlags, OFlags};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A shared handle to `<name>.part`.
#[derive(Debug, Clone)]
pub struct PartFile {
    file: Arc<File>,
    path: PathBuf,
}

/// Flags for opening ferry's own files: never through a symbolic link, and never waiting for
/// a writer when the name is a FIFO (it is refused as not a regular file right after).
pub(crate) fn own_file_flags() -> i32 {
    (OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32
}

/// The error for a failed open of ferry's own file `path`: a symbolic link is in the way.
pub(crate) fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return Error::InTheWay {
            path: path.to_owned(),
            reason: "it is a symbolic link".into(),
        };
    }
    Error::io(path, e)
}

impl PartFile {
    /// Creates a new, empty part file at `path`, locked; an existing file or link there is
    /// never opened (someone made it after the download looked: [`Error::InTheWay`]).
    pub fn create(path: &Path) -> Result<PartFile, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(own_file_flags())
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::InTheWay {
                        path: path.to_owned(),
                        reason: "it appeared while this download was starting".into(),
                    }
                } else {
                    open_error(path, e)
                }
            })?;
        Self::locked(file, path)
    }

    /// Opens ferry's existing part file as it is (not through a link; a regular file), locked.
    pub fn open_existing(path: &Path) -> Result<PartFile, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(own_file_flags())
            .open(path)
            .map_err(|e| open_error(path, e))?;
        if !file.metadata().map_err(|e| Error::io(path, e))?.is_file() {
            return Err(Error::InTheWay {
                path: path.to_owned(),
                reason: "it is not a regular file".into(),
            });
        }
        Self::locked(file, path)
    }

    /// Takes the part file's lock: one writer per part file (a second ferry on the same
    /// output would interleave).
    fn locked(file: File, path: &Path) -> Result<PartFile, Error> {
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
        Ok(PartFile {
            file: Arc::new(file),
            path: path.to_owned(),
        })
    }

    /// Sizes the file to `len` (sparse, so writes never extend it) and reserves its blocks
    /// (fallocate), so a full disk is reported before the transfer rather than in the middle of
    /// it. Filesystems without fallocate keep the sparse file. When the reservation fails, the
    /// blocks it got are given back: every range not in `holding` (the bytes that hold data) is
    /// deallocated again, because a filesystem such as ext4 keeps what a failed fallocate
    /// allocated. A full disk is [`Error::NoSpaceForFile`].
    pub fn reserve(&self, len: u64, holding: &RangeSet) -> Result<(), Error> {
        let cur = self.file.metadata().map_err(|e| self.error(e))?.len();
        if cur != len {
            self.file.set_len(len).map_err(|e| self.error(e))?;
        }
        if len == 0 {
            return Ok(());
        }
        match rustix::fs::fallocate(&*self.file, FallocateFlags::KEEP_SIZE, 0, len) {
            Ok(()) => Ok(()),
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL,
            ) => Ok(()),
            Err(e) => {
                for r in holding.missing(len) {
                    // Best effort: a filesystem that cannot punch holes had no blocks to give.
                    let _ = rustix::fs::fallocate(
                        &*self.file,
                        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                        r.start,
                        r.end - r.start,
                    );
                }
                Err(match self.error(e.into()) {
                    Error::DiskFull { path } => Error::NoSpaceForFile { path, len },
                    other => other,
                })
            }
        }
    }

    /// Empties the file (a restart from zero of ferry's own part file).
    pub fn truncate(&self) -> Result<(), Error> {
        self.file.set_len(0).map_err(|e| self.error(e))
    }

    /// Closes and deletes the part file (one this download made and holds nothing of value).
    pub fn remove(self) -> Result<(), Error> {
        let path = self.path.clone();
        drop(self);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn error(&self, e: std::io::Error) -> Error {
        Error::io(&self.path, e)
    }

    /// Where the part file is on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `buf` at `offset` on a blocking thread and hands the buffer back for reuse.
    pub async fn write_at(&self, buf: Vec<u8>, offset: u64) -> (Vec<u8>, Result<(), Error>) {
        let file = self.file.clone();
        let path = self.path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let r = file
                .write_all_at(&buf, offset)
                .map_err(|e| Error::io(&path, e));
            (buf, r)
        })
        .await;
        match joined {
            Ok(out) => out,
            Err(e) => (
                Vec::new(),
                Err(Error::io(&self.path, std::io::Error::other(e.to_string()))),
            ),
        }
    }

    /// Makes every write so far durable (fdatasync), on a blocking thread.
    pub async fn sync(&self) -> Result<(), Error> {
        let file = self.file.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || file.sync_data().map_err(|e| Error::io(&path, e)))
            .await
            .map_err(|e| Error::io(&self.path, std::io::Error::other(e.to_string())))?
    }

    /// Sets the final length (for downloads whose length was unknown until the end).
    pub fn set_len(&self, len: u64) -> Result<(), Error> {
        self.file.set_len(len).map_err(|e| Error::io(&self.path, e))
    }
}

/// Renames the finished part file to its final name, durably.
pub fn finalize(part: &Path, dest: &Path) -> Result<(), Error> {
    std::fs::rename(part, dest).map_err(|e| Error::io(dest, e))?;
    crate::journal::sync_parent_dir(dest).map_err(|e| Error::io(dest, e))
}
