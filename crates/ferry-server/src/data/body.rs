//! Streaming a request body into a local staged data file: a blocking writer thread fed through a
//! bounded channel (socket reads and disk writes overlap, memory stays bounded), an optional
//! running checksum, a byte limit, and an idle timeout so a stalled client cannot hold an
//! upload's lock forever. Every byte that reaches the file is kept and counted. While much of a
//! body is still to come, the socket's receive low-water mark is raised (`LowWater`) so a
//! fast sender wakes us per quarter MiB rather than per burst of segments.

use super::{BodyEnd, Incoming};
use crate::socket::ConnSocket;
use axum::body::HttpBody;
use bytes::Bytes;
use ferry_core::verify::Hasher;
use futures_util::{FutureExt, StreamExt};
use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most bytes gathered into one batch (one write system call, one wake-up of the writer).
const BATCH_BYTES: usize = 1 << 20;
/// Batches queued between the socket reader and the disk writer.
const QUEUE_BATCHES: usize = 8;

/// The result of [`write_body`].
#[derive(Debug)]
pub struct BodyOutcome {
    /// Bytes written to the file at `offset` (also on failure: what reached the file).
    pub written: u64,
    /// Digest of the written bytes, when a hasher was given.
    pub digest: Option<Vec<u8>>,
    /// How reading the body ended.
    pub end: BodyEnd,
    /// After a refusal (overflow, disk error): whether the rest of the body was read, so the
    /// connection can stay open.
    pub drained: bool,
}

/// Writes `incoming`'s body into `path` from `offset`, at most `limit` bytes, hashing with
/// `hasher`. Its socket (when the connection carries only this body, HTTP/1) is for
/// `LowWater`.
/// When `let_go` fires, reading stops ([`BodyEnd::TakenOver`]); what was read is written.
/// The data is not synced here: a killed server keeps page-cache bytes, and after a machine
/// crash the file's length (the offset a client's HEAD gets) never exceeds the data that
/// reached the disk on ext4/XFS (ordered data), so a resuming client re-sends the rest.
/// A finished upload is synced once, before it lands.
pub async fn write_body(
    incoming: Incoming,
    path: PathBuf,
    offset: u64,
    limit: u64,
    hasher: Option<Hasher>,
    idle: Duration,
    let_go: &CancellationToken,
) -> BodyOutcome {
    let Incoming { body, socket } = incoming;
    let (tx, rx) = mpsc::channel::<Vec<Bytes>>(QUEUE_BATCHES);
    let writer = tokio::task::spawn_blocking(move || writer(path, offset, rx, hasher));
    // The length hyper framed the body with (Content-Length; none for chunked bodies).
    let length = body.size_hint().exact();
    let mut stream = body.into_data_stream();
    let mut taken: u64 = 0;
    let mut end = BodyEnd::Complete;
    // Frames are handed to the writer in batches: as many as arrived without waiting (up to
    // BATCH_BYTES). A fast sender costs one wake-up per MiB, and a slow one still sees every
    // frame reach the file at once (nothing waits in memory for the next frame).
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_len = 0usize;
    let mut writer_failed = false;
    let mut low_water = match (socket, length) {
        (Some(socket), Some(length)) => Some(LowWater::new(socket, length)),
        _ => None,
    };
    loop {
        if let_go.is_cancelled() {
            end = BodyEnd::TakenOver;
            break;
        }
        let next = match stream.next().now_or_never() {
            Some(ready) => ready,
            None => {
                if !batch.is_empty() {
                    batch_len = 0;
                    if tx.send(std::mem::take(&mut batch)).await.is_err() {
                        writer_failed = true;
                        break;
                    }
                }
                let waited = tokio::select! {
                    biased;
                    () = let_go.cancelled() => {
                        end = BodyEnd::TakenOver;
                        break;
                    }
                    waited = next_or_idle(&mut stream, low_water.as_mut(), idle) => waited,
                };
                match waited {
                    None => {
                        end = BodyEnd::Idle;
                        break;
                    }
                    Some(next) => next,
                }
            }
        };
        let next = match next {
            None => break,
            Some(Err(e)) => {
                end = BodyEnd::ClientGone(e.to_string());
                break;
            }
            Some(Ok(frame)) => frame,
        };
        if let Some(lw) = low_water.as_mut() {
            lw.received(next.len() as u64);
        }
        let room = limit - taken;
        let (frame, overflow) = if next.len() as u64 > room {
            (next.slice(..room as usize), true)
        } else {
            (next, false)
        };
        taken += frame.len() as u64;
        if !frame.is_empty() {
            batch_len += frame.len();
            batch.push(frame);
        }
        if batch_len >= BATCH_BYTES {
            batch_len = 0;
            if tx.send(std::mem::take(&mut batch)).await.is_err() {
                writer_failed = true;
                break;
            }
        }
        if overflow {
            end = BodyEnd::Overflow;
            break;
        }
    }
    // Back to waking per byte before anything else is read (a drain, the next request).
    drop(low_water);
    if !batch.is_empty() && !writer_failed {
        let _ = tx.send(batch).await;
    }
    drop(tx);
    if !matches!(
        end,
        BodyEnd::Complete | BodyEnd::ClientGone(_) | BodyEnd::Idle | BodyEnd::TakenOver
    ) {
        // Refused bytes are read and dropped so the client hears the answer (see `drain`).
        drain(&mut stream).await;
    }
    let reading_completed = matches!(end, BodyEnd::Complete);
    let mut outcome = match writer.await {
        Ok((written, digest, None)) => BodyOutcome {
            written,
            digest,
            end,
            drained: true,
        },
        Ok((written, digest, Some(e))) => BodyOutcome {
            written,
            digest,
            end: BodyEnd::Disk(e),
            drained: true,
        },
        Err(join) => BodyOutcome {
            written: 0,
            digest: None,
            end: BodyEnd::Disk(io::Error::other(join.to_string())),
            drained: true,
        },
    };
    if matches!(outcome.end, BodyEnd::Disk(_)) && reading_completed {
        outcome.drained = drain(&mut stream).await;
    }
    if matches!(outcome.end, BodyEnd::TakenOver) {
        // The rest of the body is not read: the connection closes after the answer.
        outcome.drained = false;
    }
    outcome
}

/// What the stream's `next` gives, or `None` after `idle` without it. While the low-water mark
/// is raised, a wait of [`PAUSE`] lowers it first, so bytes already queued are read at once.
async fn next_or_idle<S>(
    stream: &mut S,
    low_water: Option<&mut LowWater>,
    idle: Duration,
) -> Option<Option<S::Item>>
where
    S: futures_util::Stream + Unpin,
{
    let mut left = idle;
    if let Some(lw) = low_water.filter(|lw| lw.raised()) {
        if let Ok(next) = tokio::time::timeout(PAUSE, stream.next()).await {
            return Some(next);
        }
        lw.sender_paused();
        left = idle.saturating_sub(PAUSE);
    }
    tokio::time::timeout(left, stream.next()).await.ok()
}

/// The highest receive low-water mark while a body streams in.
const LOW_WATER: usize = 256 << 10;
/// Below this a raised mark saves too little to be worth its system calls.
const LOW_WATER_MIN: usize = 32 << 10;
/// Body bytes that may have left the socket without reaching us yet: hyper's read buffer (up to
/// about 400 KiB, which its allocator may round up) and the frames in its body channel.
const IN_FLIGHT: u64 = 4 << 20;
/// A wait this long for the next frame means a slow or paused sender.
const PAUSE: Duration = Duration::from_millis(20);

/// Fewer wake-ups for a fast sender. A reader that keeps the socket drained is woken per burst
/// of segments (about 64 KiB on loopback), several context switches each down to the disk
/// writer. So while more than [`IN_FLIGHT`] + [`LOW_WATER`] bytes of the body are still to
/// come, `SO_RCVLOWAT` is raised: the kernel wakes us once that much is queued (or the
/// connection ends), which halves the server's CPU time per GiB.
///
/// The mark is at most an eighth of the socket's receive buffer (and follows it as TCP
/// autotuning grows it, up to [`LOW_WATER`]): the advertised window is a share of the buffer
/// (about half for full-sized segments, less for small ones), and the sender must be able to go
/// on filling it while we wake up. A mark the window cannot hold would also make the kernel
/// grow the buffer for it and clamp the window to the mark, a stop-and-go.
/// It is never above what is certainly still to arrive (the last bytes would wait forever),
/// drops to 1 for good when the sender pauses (a slow sender's bytes are written as they
/// come), and is 1 again when this value is dropped, before anything else is read from the
/// connection.
struct LowWater {
    socket: ConnSocket,
    /// Body bytes not yet received by us.
    remaining: u64,
    /// The mark now set (1: the kernel's default).
    mark: usize,
    paused: bool,
}

impl LowWater {
    fn new(socket: ConnSocket, length: u64) -> LowWater {
        let mut lw = LowWater {
            socket,
            remaining: length,
            mark: 1,
            paused: false,
        };
        lw.apply();
        lw
    }

    fn raised(&self) -> bool {
        self.mark > 1
    }

    fn received(&mut self, n: u64) {
        self.remaining = self.remaining.saturating_sub(n);
        self.apply();
    }

    fn sender_paused(&mut self) {
        self.paused = true;
        self.apply();
    }

    fn apply(&mut self) {
        let mut mark = 1;
        if !self.paused && self.remaining > IN_FLIGHT + LOW_WATER as u64 {
            if self.mark == LOW_WATER {
                // At the top already: no need to ask the kernel for the buffer per frame.
                return;
            }
            let eighth = self.socket.recv_buffer().unwrap_or(0) / 8;
            if eighth >= LOW_WATER_MIN {
                mark = eighth.min(LOW_WATER);
            }
        }
        if mark == self.mark {
            return;
        }
        match self.socket.set_recv_low_water(mark) {
            Ok(()) => self.mark = mark,
            // A socket that refuses to raise it is read as it is. One that refuses to lower it
            // (never seen on TCP) would keep the next request waiting: say so.
            Err(e) if mark > 1 => tracing::debug!("SO_RCVLOWAT {mark}: {e}"),
            Err(e) => tracing::warn!("could not lower SO_RCVLOWAT back to 1: {e}"),
        }
    }
}

impl Drop for LowWater {
    fn drop(&mut self) {
        self.remaining = 0;
        self.apply();
    }
}

/// Most of a refused body that is read (and dropped) before answering.
pub const DRAIN_LIMIT: u64 = 16 << 20;

/// Reads what is left of a refused request body, up to [`DRAIN_LIMIT`] bytes and for at most two
/// seconds, and says whether it got to the end. A client still sending when the server answers
/// and closes gets a reset and may lose the answer (the 409 with the right offset, the 507);
/// after a drain it reads the answer normally. Larger bodies are cut off (`Connection: close`).
pub async fn drain<S, E>(stream: &mut S) -> bool
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut total = 0u64;
        while let Some(Ok(frame)) = stream.next().await {
            total += frame.len() as u64;
            if total > DRAIN_LIMIT {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false)
}

/// Bytes written between two background syncs.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Keeps the disk busy while an upload streams in: every [`WRITEBACK_EVERY`] bytes a
/// background thread fdatasyncs the file (one at a time; the writer never waits for it), so the
/// sync before a finished upload lands finds little left to write and dirty pages stay few.
struct Writeback {
    file: Option<std::fs::File>,
    since: u64,
    running: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    fn new(file: &std::fs::File) -> Writeback {
        Writeback {
            file: file.try_clone().ok(),
            since: 0,
            running: None,
        }
    }

    fn wrote(&mut self, n: u64) {
        self.since += n;
        if self.since < WRITEBACK_EVERY || self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Some(f) = self.file.as_ref().and_then(|f| f.try_clone().ok()) {
            self.since = 0;
            self.running = std::thread::Builder::new()
                .name("ferry-writeback".into())
                .spawn(move || {
                    let _ = f.sync_data();
                })
                .ok();
        }
    }
}

/// The blocking half: batches frames into large writes and hashes them.
fn writer(
    path: PathBuf,
    offset: u64,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    mut hasher: Option<Hasher>,
) -> (u64, Option<Vec<u8>>, Option<io::Error>) {
    let mut written = 0u64;
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut writeback = Writeback::new(&file);
        while let Some(batch) = rx.blocking_recv() {
            // On a failed write the file keeps whatever part of the batch reached it; the
            // caller takes the file's length as the truth.
            write_all_vectored(&mut file, &batch)?;
            let n: usize = batch.iter().map(Bytes::len).sum();
            if let Some(h) = hasher.as_mut() {
                for frame in &batch {
                    h.update(frame);
                }
            }
            written += n as u64;
            writeback.wrote(n as u64);
        }
        Ok(())
    })();
    let digest = hasher.map(Hasher::finish);
    (written, digest, result.err())
}

/// Writes every buffer, in order, with as few system calls as the kernel allows.
fn write_all_vectored(file: &mut std::fs::File, mut bufs: &[Bytes]) -> io::Result<()> {
    // Bytes of bufs[0] already written.
    let mut skip = 0usize;
    while !bufs.is_empty() {
        let slices: Vec<io::IoSlice<'_>> = std::iter::once(&bufs[0][skip..])
            .chain(bufs[1..].iter().map(|b| &b[..]))
            .take(1024) // IOV_MAX
            .map(io::IoSlice::new)
            .collect();
        let mut n = file.write_vectored(&slices)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        while n > 0 {
            let left = bufs[0].len() - skip;
            if n >= left {
                n -= left;
                bufs = &bufs[1..];
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, AsRawFd};

    /// `SO_RCVLOWAT` as the kernel has it.
    #[allow(unsafe_code)]
    fn kernel_mark(s: &TcpStream) -> usize {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `s` is an open socket for the whole call; `value` and `len` are live locals
        // and `len` is `value`'s exact size, which is all the kernel writes.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value as usize
    }

    /// A connected socket with a fixed 2 MiB receive buffer (an eighth: 256 KiB) and its
    /// [`ConnSocket`].
    fn socket() -> (TcpStream, TcpStream, ConnSocket) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // The kernel doubles what is asked for.
        rustix::net::sockopt::set_socket_recv_buffer_size(&server, 1 << 20).unwrap();
        let conn = ConnSocket::from_fd(server.as_fd().try_clone_to_owned().unwrap());
        (client, server, conn)
    }

    #[test]
    fn the_mark_is_raised_only_while_much_of_the_body_is_to_come() {
        let (_client, server, conn) = socket();
        assert_eq!(conn.recv_buffer(), Some(2 << 20));
        let mut lw = LowWater::new(conn, 64 << 20);
        assert_eq!(kernel_mark(&server), LOW_WATER);
        lw.received(59 << 20); // 5 MiB to come
        assert_eq!(kernel_mark(&server), LOW_WATER);
        lw.received(1 << 20); // 4 MiB: hyper may already hold some of it
        assert_eq!(kernel_mark(&server), 1);
        drop(lw);
        assert_eq!(kernel_mark(&server), 1);
    }

    #[test]
    fn a_pause_or_the_end_of_the_body_lowers_the_mark() {
        let (_client, server, conn) = socket();
        let mut lw = LowWater::new(conn.clone(), 64 << 20);
        assert!(lw.raised());
        lw.sender_paused();
        assert_eq!(kernel_mark(&server), 1);
        lw.received(1); // stays down for the rest of this body
        assert_eq!(kernel_mark(&server), 1);
        let lw = LowWater::new(conn.clone(), 64 << 20);
        assert_eq!(kernel_mark(&server), LOW_WATER);
        drop(lw); // e.g. the body was refused half-way
        assert_eq!(kernel_mark(&server), 1);
        // A short body never raises it.
        let _lw = LowWater::new(conn, (4 << 20) + LOW_WATER as u64);
        assert_eq!(kernel_mark(&server), 1);
    }

    #[test]
    fn a_small_receive_buffer_gets_no_mark() {
        let (_client, server, conn) = socket();
        rustix::net::sockopt::set_socket_recv_buffer_size(&server, 64 << 10).unwrap();
        let lw = LowWater::new(conn, 64 << 20);
        assert!(!lw.raised());
        assert_eq!(kernel_mark(&server), 1);
    }
}
