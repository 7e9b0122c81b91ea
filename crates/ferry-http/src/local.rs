//! A local file as a [`Representation`]: ranges are streamed in large positioned reads (from the
//! page cache on the spot, else on the blocking pool), one chunk ahead of the connection, into
//! pooled buffers, so memory stays flat whatever the file size and the number of connections.

use crate::range::ByteRange;
use crate::responder::{RangeStream, Representation};
use bytes::Bytes;
use futures_util::Stream;
use std::borrow::Cow;
use std::fs::{File, Metadata};
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// Bytes per read from a file (and per body frame handed to the connection).
pub const CHUNK: usize = 256 * 1024;

/// The strong ETag of a file: its inode, size and modification time to the nanosecond.
pub fn strong_etag(meta: &Metadata) -> String {
    let mtime_ns = (meta.mtime() as i128) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.size(), mtime_ns)
}

/// A file's modification time (the epoch when the platform cannot tell).
pub fn modified(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

/// An open local file served by ranges.
#[derive(Debug)]
pub struct LocalFile {
    file: File,
    len: u64,
    etag: String,
    modified: Option<SystemTime>,
    content_type: Cow<'static, str>,
}

impl LocalFile {
    /// The file as it is on disk: its length, [`strong_etag`] and [`modified`] time from `meta`
    /// (the file's own metadata).
    pub fn new(file: File, meta: &Metadata, content_type: impl Into<Cow<'static, str>>) -> Self {
        LocalFile {
            file,
            len: meta.len(),
            etag: strong_etag(meta),
            modified: Some(modified(meta)),
            content_type: content_type.into(),
        }
    }

    /// The file with a length and validators the caller vouches for (e.g. from a manifest): the
    /// first `len` bytes are served; a file shorter than that ends its body with an error.
    /// `etag` must be a strong entity-tag, quotes included.
    pub fn with_validators(
        file: File,
        len: u64,
        etag: String,
        modified: Option<SystemTime>,
        content_type: impl Into<Cow<'static, str>>,
    ) -> Self {
        LocalFile {
            file,
            len,
            etag,
            modified,
            content_type: content_type.into(),
        }
    }
}

impl Representation for LocalFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn etag(&self) -> &str {
        &self.etag
    }

    fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    fn content_type(&self) -> &str {
        &self.content_type
    }

    fn read(self: Arc<Self>, range: ByteRange) -> RangeStream {
        Box::pin(FileRange {
            file: self,
            offset: range.start,
            left: range.len(),
            ahead: None,
        })
    }
}

/// The next frame of a [`FileRange`]: ready, or being read on the blocking pool.
enum Ahead {
    Ready(Bytes),
    Reading(JoinHandle<io::Result<Bytes>>),
}

/// The frames of one range of a file, keeping one read in flight ahead of the connection.
struct FileRange {
    file: Arc<LocalFile>,
    /// Where the next read starts.
    offset: u64,
    /// Bytes not yet read.
    left: u64,
    ahead: Option<Ahead>,
}

impl FileRange {
    /// Starts reading the next chunk: data in the page cache is copied right here; only a read
    /// that would wait for the disk goes to the blocking pool (a thread hop per chunk costs more
    /// than the copy).
    fn start_next(&mut self) -> Option<Ahead> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(CHUNK as u64) as usize;
        let offset = self.offset;
        let mut buf = take_buffer();
        let cached = read_cached(&self.file.file, &mut buf[..n], offset);
        let took = if cached > 0 { cached } else { n };
        self.offset += took as u64;
        self.left -= took as u64;
        if cached > 0 {
            return Some(Ahead::Ready(pooled(buf, cached)));
        }
        let file = Arc::clone(&self.file);
        Some(Ahead::Reading(tokio::task::spawn_blocking(move || {
            read_chunk(&file.file, offset, buf, n)
        })))
    }
}

impl Stream for FileRange {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let ahead = match this.ahead.take().or_else(|| this.start_next()) {
            Some(a) => a,
            None => return Poll::Ready(None),
        };
        let chunk = match ahead {
            Ahead::Ready(b) => b,
            Ahead::Reading(mut task) => match Pin::new(&mut task).poll(cx) {
                Poll::Pending => {
                    this.ahead = Some(Ahead::Reading(task));
                    return Poll::Pending;
                }
                Poll::Ready(Ok(Ok(b))) => b,
                Poll::Ready(Ok(Err(e))) => return this.fail(e),
                Poll::Ready(Err(e)) => return this.fail(io::Error::other(e)),
            },
        };
        this.ahead = this.start_next();
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl FileRange {
    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Bytes>>> {
        self.left = 0;
        Poll::Ready(Some(Err(e)))
    }
}

/// Reads exactly `n` bytes at `offset` into `buf` (blocking).
fn read_chunk(file: &File, offset: u64, mut buf: Vec<u8>, n: usize) -> io::Result<Bytes> {
    match file.read_exact_at(&mut buf[..n], offset) {
        Ok(()) => Ok(pooled(buf, n)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while it was being sent",
        )),
        Err(e) => Err(e),
    }
}

/// Reads what the page cache holds at `offset` without waiting for the disk (Linux
/// `preadv2(RWF_NOWAIT)`); 0 when nothing could be read that way.
#[cfg(target_os = "linux")]
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> usize {
    use rustix::io::{Errno, ReadWriteFlags};
    use std::sync::atomic::{AtomicBool, Ordering};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return 0;
    }
    let mut bufs = [io::IoSliceMut::new(buf)];
    match rustix::io::preadv2(file, &mut bufs, offset, ReadWriteFlags::NOWAIT) {
        Ok(n) => n,
        Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS || e == Errno::INVAL => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            0
        }
        // EAGAIN (not cached) and real errors alike: the blocking read decides.
        Err(_) => 0,
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &File, _buf: &mut [u8], _offset: u64) -> usize {
    0
}

/// Read buffers (each [`CHUNK`] bytes long) given back by the connection once it has sent
/// them: steady streaming allocates nothing (a fresh 256 KiB allocation costs page faults on
/// every chunk). At most [`POOL_MAX`] are kept.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 64;

fn take_buffer() -> Vec<u8> {
    let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    pooled.unwrap_or_else(|| vec![0; CHUNK])
}

/// The first `len` bytes of a pool buffer, as a frame; the buffer returns to the pool when the
/// connection drops the frame.
fn pooled(buf: Vec<u8>, len: usize) -> Bytes {
    Bytes::from_owner(PoolBuf { buf, len })
}

struct PoolBuf {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn read_all(f: &Arc<LocalFile>, r: ByteRange) -> io::Result<Vec<u8>> {
        let mut s = Arc::clone(f).read(r);
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn ranges_of_a_file_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content = data(2 * CHUNK + 99);
        std::fs::write(&path, &content).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let f = Arc::new(LocalFile::new(
            File::open(&path).unwrap(),
            &meta,
            "application/octet-stream",
        ));
        assert_eq!(f.len(), content.len() as u64);
        assert_eq!(f.etag(), strong_etag(&meta));
        let n = content.len() as u64;
        for (start, end) in [(0, n), (1, 2), (CHUNK as u64 - 1, CHUNK as u64 + 1), (5, n)] {
            let got = read_all(&f, ByteRange { start, end }).await.unwrap();
            assert_eq!(got, &content[start as usize..end as usize]);
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data(1000)).unwrap();
        let f = Arc::new(LocalFile::with_validators(
            File::open(&path).unwrap(),
            5000,
            "\"t\"".into(),
            None,
            "application/octet-stream",
        ));
        let err = read_all(
            &f,
            ByteRange {
                start: 0,
                end: 5000,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
