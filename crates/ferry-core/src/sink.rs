//! The `.part` file: one pre-sized file that every connection writes into at its own offsets
//! (positioned writes, no part files to merge), flushed at checkpoints and renamed into place
//! once complete and verified.

use crate::error::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A shared handle to `<name>.part`.
#[derive(Debug, Clone)]
pub struct PartFile {
    file: Arc<File>,
    path: PathBuf,
}

impl PartFile {
    /// Opens (or creates) the part file without truncating it: existing bytes are the progress
    /// of an earlier run. `len`, when known, pre-sizes it (sparse) so writes never extend it.
    pub fn open(path: &Path, len: Option<u64>, truncate: bool) -> Result<PartFile, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // One writer per part file: a second ferry on the same output would interleave.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
        if let Some(len) = len {
            let cur = file.metadata().map_err(|e| Error::io(path, e))?.len();
            if cur != len {
                file.set_len(len).map_err(|e| Error::io(path, e))?;
            }
            reserve(&file, path, len)?;
        }
        Ok(PartFile {
            file: Arc::new(file),
            path: path.to_owned(),
        })
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

/// Reserves disk blocks for the whole file up front (fallocate), so a full disk is reported
/// before the transfer rather than in the middle of it. Filesystems without fallocate keep the
/// sparse file; blocks already written are left as they are.
fn reserve(file: &File, path: &Path, len: u64) -> Result<(), Error> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
            Ok(())
        }
        Err(e) => Err(Error::io(path, e.into())),
    }
}

/// Renames the finished part file to its final name, durably.
pub fn finalize(part: &Path, dest: &Path) -> Result<(), Error> {
    std::fs::rename(part, dest).map_err(|e| Error::io(dest, e))?;
    crate::journal::sync_parent_dir(dest).map_err(|e| Error::io(dest, e))
}
