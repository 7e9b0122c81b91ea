//! Small helpers for tests: free ports, waiting for a server to listen, deterministic
//! pseudo-random content (fast enough for 128 MiB files in debug builds) and a streaming
//! file comparison.
//!
//! The random content is a pure function of `(seed, offset)`: byte `i` of
//! `random_bytes(len, seed)` is the same whatever `len` is, and [`random_bytes_at`] yields
//! any slice of that stream without producing what comes before it. So a test can check
//! one range of a big file without keeping the whole file in memory. The generator is
//! SplitMix64 over a block counter, written here so that the bytes never change with a
//! dependency's version.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
///
/// Another process may take it before the caller binds it; the server harnesses in this
/// crate retry with a new port when their server fails to bind.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound socket")
        .port()
}

/// Polls `cond` every 5 ms until it holds or `deadline` (a duration from now) has passed;
/// returns whether it held. The way tests wait for something instead of sleeping blindly.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Polls `addr` with TCP connects until one succeeds or `deadline` (a duration from now)
/// has passed. Sleeps 10 ms between attempts; no blind waits.
pub fn wait_for_port(addr: impl ToSocketAddrs, deadline: Duration) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve address: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err("address resolved to nothing".to_string());
    }
    let end = Instant::now() + deadline;
    let mut last_err = String::new();
    loop {
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_millis(200)) {
                Ok(_) => return Ok(()),
                Err(e) => last_err = format!("{a}: {e}"),
            }
        }
        if Instant::now() >= end {
            return Err(format!(
                "nothing listening after {deadline:?} (last error: {last_err})"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 output for block number `block` of the stream for `seed`.
#[inline(always)]
fn block(seed: u64, block: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0xD1B5_4A32_D192_ED03)
        .wrapping_add(block.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with the stream for `seed` starting at byte `offset` of that stream.
pub fn fill_random_at(buf: &mut [u8], seed: u64, offset: u64) {
    let mut pos = offset;
    let mut out = buf;
    // Unaligned head.
    let head = (pos % 8) as usize;
    if head != 0 && !out.is_empty() {
        let bytes = block(seed, pos / 8).to_le_bytes();
        let n = (8 - head).min(out.len());
        out[..n].copy_from_slice(&bytes[head..head + n]);
        out = &mut out[n..];
        pos += n as u64;
    }
    // Aligned body.
    let mut b = pos / 8;
    let mut chunks = out.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&block(seed, b).to_le_bytes());
        b += 1;
    }
    // Tail.
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&block(seed, b).to_le_bytes()[..n]);
    }
}

/// `len` deterministic pseudo-random bytes for `seed` (the stream's first `len` bytes).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    random_bytes_at(seed, 0, len)
}

/// `len` bytes of the stream for `seed`, starting at byte `offset`:
/// equal to `random_bytes(offset + len, seed)[offset..]`.
pub fn random_bytes_at(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_random_at(&mut v, seed, offset);
    v
}

/// Writes `random_bytes(len, seed)` to `path` (created or truncated), streaming in 1 MiB
/// chunks so that big files do not need that much memory. Not fsynced.
pub fn write_random_file(path: impl AsRef<Path>, len: u64, seed: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut w = BufWriter::with_capacity(CHUNK, File::create(path.as_ref())?);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        fill_random_at(&mut buf[..n], seed, off);
        w.write_all(&buf[..n])?;
        off += n as u64;
    }
    w.flush()
}

/// True when both files exist and have the same bytes. Streams both (1 MiB buffers);
/// a missing or unreadable file gives false.
pub fn files_equal(a: &Path, b: &Path) -> bool {
    fn inner(a: &Path, b: &Path) -> io::Result<bool> {
        let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
        if fa.metadata()?.len() != fb.metadata()?.len() {
            return Ok(false);
        }
        const CHUNK: usize = 1 << 20;
        let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        loop {
            let na = read_full(&mut fa, &mut ba)?;
            let nb = read_full(&mut fb, &mut bb)?;
            if na != nb || ba[..na] != bb[..nb] {
                return Ok(false);
            }
            if na == 0 {
                return Ok(true);
            }
        }
    }
    inner(a, b).unwrap_or(false)
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A server child process started by [`spawn_server`]; the caller owns it and kills it.
pub(crate) struct Spawned {
    pub child: std::process::Child,
    pub port: u16,
}

/// Starts a server on a fresh port and waits until it accepts connections.
///
/// `make` gets the port and returns the command to run (stdout/stderr already directed by the
/// caller, usually to files). If the child exits before it listens, `diagnose` is asked for its
/// logs; when they say the address was in use (another process took the port between
/// [`free_port`] and the server's bind), it is tried again with a new port, up to 5 times.
pub(crate) fn spawn_server(
    what: &str,
    mut make: impl FnMut(u16) -> std::process::Command,
    diagnose: impl Fn() -> String,
) -> Spawned {
    const READY: Duration = Duration::from_secs(20);
    let mut last = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let mut cmd = make(port);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        let end = Instant::now() + READY;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on server child") {
                last = format!(
                    "{what} exited with {status} before listening:\n{}",
                    diagnose()
                );
                break;
            }
            if wait_for_port(("127.0.0.1", port), Duration::from_millis(50)).is_ok() {
                // Listening; make sure it is our child that listens, not a port thief.
                if child
                    .try_wait()
                    .expect("try_wait on server child")
                    .is_none()
                {
                    return Spawned { child, port };
                }
                continue;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not listen on 127.0.0.1:{port} within {READY:?}:\n{}",
                    diagnose()
                );
            }
        }
        if !last.contains("in use") {
            break;
        }
    }
    panic!("{last}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_deterministic_and_offset_addressable() {
        let a = random_bytes(1000, 7);
        assert_eq!(a, random_bytes(1000, 7));
        assert_ne!(a, random_bytes(1000, 8));
        assert_eq!(&random_bytes(10, 7)[..], &a[..10]);
        for off in [0usize, 1, 3, 7, 8, 9, 500, 993] {
            for len in [0usize, 1, 5, 8, 13] {
                let len = len.min(1000 - off);
                assert_eq!(random_bytes_at(7, off as u64, len), a[off..off + len]);
            }
        }
    }

    #[test]
    fn write_and_compare() {
        let d = tempfile::tempdir().unwrap();
        let (p, q) = (d.path().join("p"), d.path().join("q"));
        write_random_file(&p, 3 << 20 | 5, 1).unwrap();
        std::fs::write(&q, random_bytes(3 << 20 | 5, 1)).unwrap();
        assert!(files_equal(&p, &q));
        let mut v = std::fs::read(&q).unwrap();
        v[2 << 20] ^= 1;
        std::fs::write(&q, &v).unwrap();
        assert!(!files_equal(&p, &q));
        assert!(!files_equal(&p, &d.path().join("missing")));
    }

    #[test]
    fn free_port_and_wait() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        wait_for_port(addr, Duration::from_secs(1)).unwrap();
        drop(l);
        let p = free_port();
        assert!(wait_for_port(("127.0.0.1", p), Duration::from_millis(50)).is_err());
    }
}
