//! `DelayProxy`: a loopback TCP relay that adds a fixed round-trip time and nothing else, so
//! that benchmarks can see what loopback hides: every request/response round trip, TLS and
//! HTTP/2 handshakes and flow-control windows cost a real RTT, while bandwidth stays unlimited.
//!
//! ```no_run
//! use std::time::Duration;
//! use ferry_testkit::delay::DelayProxy;
//! # let upstream: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let proxy = DelayProxy::start_blocking(upstream, Duration::from_millis(40));
//! let url = format!("http://{}/big.bin", proxy.addr()); // 40 ms RTT in front of upstream
//! ```
//!
//! How it models a path (and where it does not):
//!
//! - Each direction of each connection is delayed by half the RTT: a chunk read at time `t` is
//!   written to the other side at `t + rtt/2`, in order. The relay reads eagerly, so a chunk's
//!   delay does not hold back the next one: bandwidth is not limited (up to
//!   [`IN_FLIGHT_PER_DIRECTION`] bytes in flight per direction, 64 MiB, which is 1.6 GB/s at
//!   40 ms).
//! - The TCP handshake costs one RTT: client bytes are forwarded as if they had been sent
//!   one RTT after the connection was accepted (a client cannot send before its SYN-ACK).
//! - TCP's own windows are not modelled: the client's socket talks to the relay on loopback
//!   and is acknowledged at once, so slow start and receive windows do not limit throughput
//!   the way they would on a real path. Application-level windows (HTTP/2 flow control) and
//!   every request/response exchange do pay the RTT, which is what the benchmarks measure.
//! - Bytes are relayed, not parsed: HTTP/1.1, HTTP/2, TLS and ferry's peer protocol all pass.
//! - A half-close (EOF) is forwarded after the same delay; an error on either side closes the
//!   connection. Dropping the proxy closes every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest chunk read at once from either side.
const CHUNK: usize = 256 * 1024;

/// Bytes one direction of one connection may hold while they wait out their delay. Reading
/// stops (and TCP back-pressure starts) when this many are in flight.
pub const IN_FLIGHT_PER_DIRECTION: usize = 64 << 20;

/// A running delay relay on 127.0.0.1. Dropping it stops the relay and closes every
/// connection.
pub struct DelayProxy {
    addr: SocketAddr,
    rtt: Duration,
    connections: Arc<AtomicU64>,
    accept: JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    /// Listens on `listen` (port 0: an ephemeral port) and relays every connection to
    /// `upstream` with `rtt` added to each round trip. Must be called inside a tokio runtime.
    pub async fn bind(
        listen: SocketAddr,
        upstream: SocketAddr,
        rtt: Duration,
    ) -> std::io::Result<DelayProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(listener, upstream, rtt, connections.clone()));
        Ok(DelayProxy {
            addr,
            rtt,
            connections,
            accept,
            runtime: None,
        })
    }

    /// Like [`DelayProxy::bind`] on `127.0.0.1:0`, with its own two-thread runtime on a
    /// background thread, for tests and tools that are not async.
    pub fn start_blocking(upstream: SocketAddr, rtt: Duration) -> DelayProxy {
        std::thread::Builder::new()
            .name("ferry-delay-start".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ferry-delay")
                    .enable_all()
                    .build()
                    .expect("DelayProxy: build tokio runtime");
                let mut proxy = runtime
                    .block_on(DelayProxy::bind(
                        SocketAddr::from(([127, 0, 0, 1], 0)),
                        upstream,
                        rtt,
                    ))
                    .expect("DelayProxy: bind 127.0.0.1:0");
                proxy.runtime = Some(runtime);
                proxy
            })
            .expect("DelayProxy: spawn start thread")
            .join()
            .expect("DelayProxy: start thread panicked")
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The round-trip time added.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    rtt: Duration,
    connections: Arc<AtomicU64>,
) {
    // Owning the connection tasks here means aborting this task closes them all.
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.fetch_add(1, Ordering::Relaxed);
                    tasks.spawn(relay(client, upstream, rtt));
                }
                // Out of descriptors and the like: wait for connections to end.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// One client connection: connect upstream, then relay both directions with the delay.
async fn relay(client: TcpStream, upstream: SocketAddr, rtt: Duration) {
    let accepted = Instant::now();
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let one_way = rtt / 2;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Client bytes leave no earlier than one RTT after accept: the handshake a real path costs.
    let up = direction(client_read, server_write, one_way, accepted + rtt);
    let down = direction(server_read, client_write, one_way, accepted);
    // Either direction failing ends the connection; a clean EOF waits for the other side.
    let _ = tokio::try_join!(up, down);
}

/// One direction: a reader that stamps each chunk with its due time and a writer that
/// writes it then. `earliest` is the first instant from which sending counts.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    one_way: Duration,
    earliest: Instant,
) -> std::io::Result<()> {
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_PER_DIRECTION));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Bytes>)>();
    let reader = {
        let budget = budget.clone();
        async move {
            let mut buf = BytesMut::with_capacity(CHUNK);
            loop {
                buf.reserve(CHUNK);
                let n = from.read_buf(&mut buf).await?;
                let due = Instant::now().max(earliest) + one_way;
                if n == 0 {
                    let _ = tx.send((due, None));
                    return Ok::<(), std::io::Error>(());
                }
                let chunk = buf.split().freeze();
                // CHUNK-sized reads keep n far below u32::MAX.
                let permits = budget
                    .acquire_many(n as u32)
                    .await
                    .expect("the budget is never closed");
                permits.forget();
                if tx.send((due, Some(chunk))).is_err() {
                    return Ok(());
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    to.write_all(&bytes).await?;
                    budget.add_permits(bytes.len());
                }
                None => {
                    to.shutdown().await?;
                    return Ok(());
                }
            }
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: what it reads it writes back, until EOF.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_and_each_round_trip_pays_the_rtt() {
        let rtt = Duration::from_millis(30);
        let proxy = DelayProxy::bind("127.0.0.1:0".parse().unwrap(), echo_server().await, rtt)
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let start = Instant::now();
        // Connection set-up (one RTT) plus three echo round trips.
        for round in 0..3u8 {
            let msg = [round; 100];
            s.write_all(&msg).await.unwrap();
            let mut back = [0u8; 100];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
        // A lower bound only: the delay is what this proxy exists for, and a loaded machine
        // can only make it longer.
        assert!(start.elapsed() >= rtt * 4, "{:?}", start.elapsed());

        // A large transfer arrives whole and in order, and EOF is passed on.
        let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(back == data, "relayed bytes differ");
        assert_eq!(proxy.connections(), 1);
    }
}
