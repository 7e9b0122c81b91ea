//! The socket a request came in on, as its handler may see it: an axum connect-info holding a
//! duplicate of the accepted connection's descriptor, so a handler can tune the socket for what
//! the request needs. Uploads use it to raise `SO_RCVLOWAT` while a large body streams in
//! (see `data::body`).

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::Version;
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use std::convert::Infallible;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The accepted connection's socket (none when the descriptor could not be duplicated, e.g.
/// at the process's file limit: the request is then served without tuning).
#[derive(Clone, Debug)]
pub struct ConnSocket(Option<Arc<OwnedFd>>);

impl Connected<IncomingStream<'_, TcpListener>> for ConnSocket {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ConnSocket(stream.io().as_fd().try_clone_to_owned().ok().map(Arc::new))
    }
}

impl ConnSocket {
    /// The socket of an accepted connection (a duplicate of its descriptor).
    pub(crate) fn of(stream: &impl AsFd) -> ConnSocket {
        ConnSocket(stream.as_fd().try_clone_to_owned().ok().map(Arc::new))
    }

    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd) -> ConnSocket {
        ConnSocket(Some(Arc::new(fd)))
    }

    /// The kernel's receive buffer for this socket (`SO_RCVBUF`, which TCP autotuning grows),
    /// or `None` when unknown.
    pub fn recv_buffer(&self) -> Option<usize> {
        rustix::net::sockopt::socket_recv_buffer_size(self.0.as_deref()?).ok()
    }

    /// Sets `SO_RCVLOWAT`: the kernel wakes a reader only once `bytes` are queued (or the
    /// connection ends). Reads still return whatever is there. Setting it lower wakes a waiting
    /// reader at once when enough is already queued.
    #[allow(unsafe_code)]
    pub fn set_recv_low_water(&self, bytes: usize) -> io::Result<()> {
        let Some(fd) = &self.0 else {
            return Ok(());
        };
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fd` is an open descriptor owned by this value for the whole call, and the
        // option value is a live `c_int` whose exact size is passed as `optlen`; the kernel
        // only reads those bytes (an fd that is not a socket just gets ENOTSOCK).
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// An extractor: the request's [`ConnSocket`] when it came over HTTP/1 and the server was
/// started with it as connect-info. An HTTP/2 socket carries other streams too, so its options
/// are not one request's to tune.
pub struct RequestSocket(pub Option<ConnSocket>);

impl<S: Send + Sync> FromRequestParts<S> for RequestSocket {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let socket = parts
            .extensions
            .get::<ConnectInfo<ConnSocket>>()
            .filter(|_| parts.version <= Version::HTTP_11)
            .map(|ConnectInfo(socket)| socket.clone());
        Ok(RequestSocket(socket))
    }
}
