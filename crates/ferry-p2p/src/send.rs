//! The sending side of a peer-to-peer transfer (`ferry send`): the shared content (a manifest
//! and the local files behind it) served over TLS with a fresh self-signed certificate and a
//! random token. `GET /manifest` gives the manifest's exact bytes; `GET/HEAD /f/<index>` gives
//! entry `index` through ferry-http's range responder (one range per answer; several ranges get
//! the whole file), so receivers fetch it over many connections and from several senders at once. The ticket tells a receiver where to connect and what to trust.

use crate::manifest::{self, EntryKind, Manifest, ManifestError};
use crate::ticket::Ticket;
use crate::tls;
use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use ferry_core::RateLimiter;
use ferry_http::{LocalFile, Options, Pacer};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What is being sent: the manifest, its exact bytes and hash, and the local file of each entry.
#[derive(Debug, Clone)]
pub struct Share {
    /// The manifest.
    pub manifest: Manifest,
    /// Its exact bytes, as served at `/manifest`.
    pub bytes: Vec<u8>,
    /// BLAKE3 of `bytes` (what tickets name).
    pub hash: [u8; 32],
    /// The local file of each manifest entry (`None` for folders).
    pub files: Vec<Option<PathBuf>>,
}

impl Share {
    /// Hashes `paths` (all cores) and builds the share; `progress(hashed, total)`.
    pub fn build(
        paths: &[PathBuf],
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Share, ManifestError> {
        let (manifest, files) = manifest::build(paths, progress)?;
        let bytes = manifest.to_bytes();
        let hash = Manifest::hash_of(&bytes);
        Ok(Share {
            manifest,
            bytes,
            hash,
            files,
        })
    }
}

/// Why sending could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The listen address could not be bound (or its port read back).
    #[error("cannot listen on {addr}: {source}; pick another address with --listen")]
    Listen {
        /// The address as given.
        addr: String,
        /// What binding said.
        #[source]
        source: std::io::Error,
    },
    /// The TLS identity could not be made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A share bound to a port, ready to serve.
pub struct Sender {
    ticket: Ticket,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<ShareState>,
}

struct ShareState {
    share: Share,
    token: [u8; 16],
    etag_base: String,
    /// Body bytes served, counted by the responder.
    served: Arc<AtomicU64>,
    /// How files are answered: counted into `served`, paced by the limiter, one range at most.
    options: Options,
}

/// The rate limit, as the responder's pacer.
struct Limit(Arc<RateLimiter>);

impl Pacer for Limit {
    fn pace(&self, n: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.0.acquire(n))
    }
}

impl Sender {
    /// Binds `listen` (e.g. `0.0.0.0:0`: every interface, a free port) with a fresh identity and
    /// token. The ticket lists the addresses receivers can try: every interface's address for an
    /// unspecified listen address (non-loopback first), else the one given.
    pub async fn bind(
        share: Share,
        listen: &str,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Result<Sender, SendError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| SendError::Listen {
                addr: listen.to_owned(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| SendError::Listen {
            addr: listen.to_owned(),
            source,
        })?;
        let identity = tls::self_signed()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&identity)?);
        let token: [u8; 16] = rand::random();
        let ticket = Ticket {
            addrs: advertised(local),
            port: local.port(),
            token,
            fingerprint: identity.fingerprint,
            manifest: share.hash,
        };
        let served = Arc::new(AtomicU64::new(0));
        let options = Options {
            counter: Some(served.clone()),
            pacer: limiter.map(|l| Arc::new(Limit(l)) as Arc<dyn Pacer>),
            multipart: false,
        };
        Ok(Sender {
            ticket,
            listener,
            acceptor,
            state: Arc::new(ShareState {
                etag_base: hex::encode(&share.hash[..8]),
                share,
                token,
                served,
                options,
            }),
        })
    }

    /// The ticket that points receivers at this sender.
    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// Serves until `shutdown` resolves. Returns the body bytes served.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> u64 {
        let app = router(self.state.clone());
        tokio::pin!(shutdown);
        loop {
            let (tcp, _) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return; // not TLS, or not our client: nothing to say
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
        self.state.served.load(Ordering::Relaxed)
    }
}

/// Addresses to put in the ticket for a listener bound to `local`.
fn advertised(local: SocketAddr) -> Vec<IpAddr> {
    if !local.ip().is_unspecified() {
        return vec![local.ip()];
    }
    let want_v6 = local.is_ipv6();
    let mut addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| want_v6 || ip.is_ipv4())
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    // Other machines first; loopback last (it only helps on this machine).
    addrs.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    addrs.dedup();
    if addrs.is_empty() {
        addrs.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    addrs.truncate(crate::ticket::MAX_ADDRS);
    addrs
}

fn router(state: Arc<ShareState>) -> Router {
    Router::new()
        .route("/manifest", get(manifest))
        .route("/f/{index}", get(file).head(file))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Every request carries the ticket's token (`?token=HEX` or `Authorization: Bearer HEX`).
async fn require_token(State(s): State<Arc<ShareState>>, req: Request, next: Next) -> Response {
    let given = ferry_http::request_token(&req).unwrap_or_default();
    let expected = hex::encode(s.token);
    // Compared through hashes, so the time taken says nothing about the token.
    if blake3::hash(given.as_bytes()) == blake3::hash(expected.as_bytes()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "this transfer needs the token from its ticket\n",
        )
            .into_response()
    }
}

async fn manifest(State(s): State<Arc<ShareState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(s.share.bytes.clone()),
    )
        .into_response()
}

/// Entry `index`: the whole file, or one range of it. The length is the manifest's (a file that
/// changed on disk is still served at that length; receivers verify every piece).
async fn file(
    State(s): State<Arc<ShareState>>,
    UrlPath(index): UrlPath<usize>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let (Some(entry), Some(Some(path))) = (
        s.share.manifest.entries.get(index),
        s.share.files.get(index),
    ) else {
        return (StatusCode::NOT_FOUND, "no such file in this transfer\n").into_response();
    };
    let EntryKind::File { size: len, .. } = entry.kind else {
        return (StatusCode::NOT_FOUND, "not a file\n").into_response();
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the sender cannot read this file now: {e}\n"),
            )
                .into_response();
        }
    };
    // The same tag on every sender of the same content, so receivers can mix them.
    let etag = format!("\"{}-{index}\"", s.etag_base);
    let rep = LocalFile::with_validators(file, len, etag, None, "application/octet-stream");
    ferry_http::respond(Arc::new(rep), method == Method::HEAD, &headers, &s.options)
}
