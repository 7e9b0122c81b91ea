//! Accepting connections with bounds a client cannot push past: at most
//! [`ConnLimits::max_connections`] at once (further clients wait in the kernel's backlog until a
//! slot frees; out of descriptors, accepting pauses instead of failing), a request's headers
//! within [`ConnLimits::header_timeout`], and a connection on which no byte moved, with no
//! request being handled, closed after [`ConnLimits::keepalive_timeout`]. Graceful shutdown: no
//! new connections, open ones finish their requests (the caller bounds how long).

use crate::socket::ConnSocket;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Descriptors counted per connection when the cap is derived from the open-file limit: the
/// socket, its duplicate (`ConnSocket`), a staged or served file, and one spare.
const FDS_PER_CONNECTION: u64 = 4;
/// Descriptors kept for everything else (the state store, logs, the listener).
const FDS_RESERVED: u64 = 128;
/// The derived cap never exceeds this.
const MAX_CONNECTIONS_DEFAULT: usize = 4096;
/// How long accepting pauses when the process is out of descriptors (nginx: 500 ms).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bounds on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnLimits {
    /// A connection waiting for a request's headers (a new one, or a kept-alive one between
    /// requests: hyper's header timer runs from when it starts waiting) is closed after this.
    /// HTTP/1 only (HTTP/2 frames its headers differently; its idle connections close by
    /// `keepalive_timeout`).
    pub header_timeout: Duration,
    /// A connection on which no byte moved for this long while no request was being handled
    /// (idle, or its client stopped reading a response) is closed.
    pub keepalive_timeout: Duration,
    /// Connections served at once; `None` derives it from the open-file limit
    /// ([`ConnLimits::derived_max`]).
    pub max_connections: Option<usize>,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: None,
        }
    }
}

impl ConnLimits {
    /// The cap when none is configured: (open-file soft limit − 128) / 4, between 16 and 4096.
    pub fn derived_max() -> usize {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1024);
        let by_fds = limit.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION;
        usize::try_from(by_fds)
            .unwrap_or(usize::MAX)
            .clamp(16, MAX_CONNECTIONS_DEFAULT)
    }

    /// The cap in effect.
    pub fn max(&self) -> usize {
        self.max_connections
            .unwrap_or_else(ConnLimits::derived_max)
            .max(1)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// connection to finish its request in flight and close, and returns once all have.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max()));
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut out_of_fds_logged = false;
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                out_of_fds_logged = false;
                stream
            }
            Err(e) => {
                drop(permit);
                if is_connection_error(&e) {
                    continue;
                }
                if !out_of_fds_logged {
                    tracing::warn!("accepting connections paused: {e}");
                    out_of_fds_logged = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let app = app.clone();
        let (stop, done) = (stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            connection(stream, app, limits, stop).await;
            drop((permit, done));
        });
    }
    drop(listener);
    drop(stop_rx);
    drop(done_rx);
    // Every connection now finishes its request in flight (keep-alive off) and ends.
    let _ = stop_tx.send(());
    done_tx.closed().await;
}

/// Errors of one connection that came and went before it was accepted: accept the next.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// What a connection's watchdog sees: when a byte last moved, and how many requests are being
/// handled.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request as in flight until its handler has answered.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection (HTTP/1 or, by prior knowledge, HTTP/2) under `limits`.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let socket = ConnSocket::of(&stream);
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = Counted {
        app,
        socket,
        activity: activity.clone(),
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut conn =
        pin!(builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service)));
    let mut stopping = false;
    loop {
        let idle_deadline = activity.last() + limits.keepalive_timeout;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!("connection ended: {e}");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                let _ = changed;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.last() + limits.keepalive_timeout <= Instant::now()
                {
                    tracing::debug!("closing a connection idle for {:?}", limits.keepalive_timeout);
                    return;
                }
                if activity.in_flight.load(Ordering::Relaxed) > 0 {
                    // A handler is working (a landing's fsync, a takeover wait): look again later.
                    activity.touch();
                }
            }
        }
    }
}

/// The router behind one connection: each request gets the connection's socket (as
/// connect-info) and counts as in flight until its handler has answered.
#[derive(Clone)]
struct Counted {
    app: Router,
    socket: ConnSocket,
    activity: Arc<Activity>,
}

impl tower::Service<axum::http::Request<hyper::body::Incoming>> for Counted {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        req.extensions_mut()
            .insert(ConnectInfo(self.socket.clone()));
        let in_flight = InFlight::new(&self.activity);
        let answer = tower::Service::call(&mut self.app, req);
        Box::pin(async move {
            let res = answer.await;
            drop(in_flight);
            res
        })
    }
}

/// A connection's stream that notes when a byte last moved either way.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_descriptor_limit() {
        let derived = ConnLimits::derived_max();
        assert!((16..=MAX_CONNECTIONS_DEFAULT).contains(&derived));
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        if limit > FDS_RESERVED + 16 * FDS_PER_CONNECTION {
            assert!(derived as u64 * FDS_PER_CONNECTION + FDS_RESERVED <= limit);
        }
        let set = ConnLimits {
            max_connections: Some(0),
            ..ConnLimits::default()
        };
        assert_eq!(set.max(), 1);
    }
}
