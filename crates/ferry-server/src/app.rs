//! The server as a whole: configuration, shared state, the router (files, uploads, listing,
//! metrics, CORS, method override, authentication), the expiry task and graceful shutdown.

use crate::auth::{self, Auth};
use crate::connections::ConnLimits;
use crate::data::DataStore;
use crate::data::local::LocalDir;
use crate::metrics::Metrics;
use crate::safepath::STATE_DIR;
use crate::store::redb::RedbStore;
use crate::store::redis::RedisStore;
use crate::store::{StateStore, StoreError};
use crate::tus;
use crate::uploads::{Policy, Uploads};
use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Staged data younger than this is never taken for an orphan: another instance sharing the
/// directory may be between creating an upload's data and its record.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(600);

/// What `ferry serve` was asked for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The served directory.
    pub root: PathBuf,
    /// Who may do what.
    pub auth: Auth,
    /// Largest upload accepted (`Tus-Max-Size`); `None` for no limit.
    pub max_upload_size: Option<u64>,
    /// Unfinished uploads expire this long after their last write.
    pub upload_expiry: Duration,
    /// A PATCH body that stalls this long ends the request (bytes so far are kept).
    pub idle_timeout: Duration,
    /// Where upload state lives.
    pub state: StateChoice,
    /// Bounds on connections (header and keep-alive timeouts, the connection cap).
    pub connections: ConnLimits,
    /// Most bytes one user's unfinished uploads may reserve or stage (`None`: no limit).
    pub quota_bytes: Option<u64>,
    /// Most unfinished uploads one user may have (`None`: no limit).
    pub quota_uploads: Option<u64>,
    /// Where the files' bytes live: the served directory, or a bucket (then `root` is only the
    /// local state directory: the embedded store and the spool of parts in flight).
    pub data: DataChoice,
}

/// Where a server keeps the bytes of uploads and landed files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataChoice {
    /// The served directory (`root`), staging under `DIR/.ferry/uploads`.
    Local,
    /// An S3-compatible bucket, configured from the `AWS_*` environment variables and AWS
    /// config files.
    S3(crate::data::s3::Location),
}

/// Where a server keeps its upload state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateChoice {
    /// The embedded store in the served directory (`DIR/.ferry/state.redb`): one process.
    Embedded,
    /// A Redis server (`redis://[user:password@]host:port/db` or `rediss://…`) shared by
    /// several instances serving the same directory.
    Redis(String),
}

impl ServerConfig {
    /// Serves `root` to `auth`'s users with the default limits (no size limit, 24 h expiry,
    /// 60 s idle timeout, the default connection limits and per-user quotas).
    pub fn new(root: impl Into<PathBuf>, auth: Auth) -> ServerConfig {
        ServerConfig {
            root: root.into(),
            auth,
            max_upload_size: None,
            upload_expiry: Duration::from_secs(24 * 3600),
            idle_timeout: Duration::from_secs(60),
            state: StateChoice::Embedded,
            connections: ConnLimits::default(),
            quota_bytes: Some(crate::uploads::DEFAULT_QUOTA_BYTES),
            quota_uploads: Some(crate::uploads::DEFAULT_QUOTA_UPLOADS),
            data: DataChoice::Local,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The served directory cannot be used.
    #[error("cannot serve {0}: {1}")]
    Root(PathBuf, #[source] std::io::Error),
    /// The state directory cannot be created.
    #[error("cannot create the state directory under {0}: {1}")]
    StateDir(PathBuf, #[source] std::io::Error),
    /// The state store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket cannot be used.
    #[error(transparent)]
    Bucket(#[from] crate::data::s3::OpenError),
}

/// A ready server: open state, not yet listening.
pub struct Server {
    root: PathBuf,
    data: Arc<dyn DataStore>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    uploads: Arc<Uploads>,
    connections: ConnLimits,
}

impl Server {
    /// Opens the served directory and its state store: the embedded one
    /// (`DIR/.ferry/state.redb`), or Redis (connected lazily: a Redis that is down makes
    /// requests answer 503 until it is up).
    pub fn open(config: ServerConfig) -> Result<Server, ServerError> {
        if let DataChoice::S3(location) = &config.data {
            return Err(ServerError::Root(
                config.root.clone(),
                std::io::Error::other(format!("{location} needs Server::start")),
            ));
        }
        let root = config
            .root
            .canonicalize()
            .map_err(|e| ServerError::Root(config.root.clone(), e))?;
        if !root.is_dir() {
            return Err(ServerError::Root(
                root,
                std::io::Error::other("not a directory"),
            ));
        }
        let data = LocalDir::open(&root).map_err(|e| ServerError::StateDir(root.clone(), e))?;
        let state: Arc<dyn StateStore> = match &config.state {
            StateChoice::Embedded => {
                Arc::new(RedbStore::open(&root.join(STATE_DIR).join("state.redb"))?)
            }
            StateChoice::Redis(url) => Arc::new(RedisStore::open(url)?),
        };
        Ok(Server::with_stores(root, state, Arc::new(data), &config))
    }

    /// Opens the server [`ServerConfig::data`] asks for: [`Server::open`] for a directory; for a
    /// bucket, checks it (a missing bucket, refused credentials and an unreachable endpoint are
    /// told apart), and keeps the embedded state store (unless Redis is asked for) and the
    /// spool of parts in flight in the local state directory `root` (created if needed).
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let DataChoice::S3(location) = &config.data else {
            return Server::open(config);
        };
        std::fs::create_dir_all(&config.root)
            .map_err(|e| ServerError::StateDir(config.root.clone(), e))?;
        let root = config
            .root
            .canonicalize()
            .map_err(|e| ServerError::StateDir(config.root.clone(), e))?;
        let data = crate::data::s3::S3Store::open(location, &root).await?;
        let state: Arc<dyn StateStore> = match &config.state {
            StateChoice::Embedded => Arc::new(RedbStore::open(&root.join("state.redb"))?),
            StateChoice::Redis(url) => Arc::new(RedisStore::open(url)?),
        };
        Ok(Server::with_stores(root, state, Arc::new(data), &config))
    }

    /// A server over any [`StateStore`] and [`DataStore`] (e.g. shared ones, or in memory).
    /// `root` is the canonical served directory of the file side.
    pub fn with_stores(
        root: PathBuf,
        state: Arc<dyn StateStore>,
        data: Arc<dyn DataStore>,
        config: &ServerConfig,
    ) -> Server {
        let metrics = Arc::new(Metrics::default());
        let mut policy = Policy::new();
        policy.max_size = config.max_upload_size;
        policy.expiry = config.upload_expiry;
        policy.idle_timeout = config.idle_timeout;
        policy.multi_user = config.auth.multi_user();
        policy.quota_bytes = config.quota_bytes;
        policy.quota_uploads = config.quota_uploads;
        let uploads = Arc::new(Uploads::new(state, data.clone(), metrics.clone(), policy));
        Server {
            root,
            data,
            auth: Arc::new(config.auth.clone()),
            metrics,
            uploads,
            connections: config.connections,
        }
    }

    /// The name of the state store in use (`redb`, `memory`, `redis`).
    pub fn state_store(&self) -> &'static str {
        self.uploads.state().name()
    }

    /// Whether the state store answers now (a shared one may be down; requests then answer
    /// 503 until it is back).
    pub async fn check_state_store(&self) -> Result<(), StoreError> {
        self.uploads.state().ping().await
    }

    /// The canonical served directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The whole HTTP application.
    pub fn router(&self) -> Router {
        let files = Arc::new(FilesState {
            data: self.data.clone(),
            metrics: self.metrics.clone(),
            uploads: self.uploads.clone(),
        });
        let page = Arc::new(crate::page::PageState {
            data: self.data.clone(),
            metrics: self.metrics.clone(),
            uploads: self.uploads.clone(),
        });
        let site = Router::new()
            .route("/files", get(index).head(index))
            .route("/files/", get(index).head(index))
            .route("/files/{*path}", get(file).head(file))
            .route("/metrics", get(metrics))
            .with_state(files)
            .merge(crate::page::router(page))
            .merge(tus::router(self.uploads.clone()));
        let site = crate::protocol::router(site, self.uploads.clone());
        let metrics = self.metrics.clone();
        site.layer(middleware::from_fn_with_state(
            self.auth.clone(),
            auth::require_user,
        ))
        .layer(middleware::from_fn(crate::page::sign_in_form))
        .layer(middleware::from_fn(cors))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let metrics = metrics.clone();
            async move {
                Metrics::add(&metrics.requests, 1);
                next.run(req).await
            }
        }))
    }

    /// Serves on `listener` until `shutdown` resolves (then waits up to 5 s for requests in
    /// flight), expiring old uploads in the background.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let uploads = self.uploads.clone();
        let expiry = tokio::spawn(async move {
            let every = (uploads.policy().expiry / 4)
                .clamp(Duration::from_millis(250), Duration::from_secs(60));
            let mut orphans_checked = false;
            loop {
                // One instance at a time sweeps (each upload is still expired under its lock).
                match uploads.state().sweep_lock().await {
                    Ok(Some(_sweeping)) if !orphans_checked => {
                        // Once, at start: staged data no record owns (a crash between the two,
                        // a store that lost its records) goes.
                        orphans_checked = true;
                        match uploads.remove_orphans(ORPHAN_MIN_AGE).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!("removed {n} staged upload(s) no record owns"),
                            Err(e) => tracing::warn!("removing staged data no record owns: {e}"),
                        }
                        continue;
                    }
                    Ok(Some(_sweeping)) => match uploads.expire().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("expired {n} unfinished upload(s)"),
                        Err(e) => tracing::warn!("upload expiry: {e}"),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::debug!("upload expiry skipped: {e}"),
                }
                tokio::time::sleep(every).await;
            }
        });
        let app = method_override(self.router());
        // Requests in flight get a few seconds to finish; a long upload is then cut off (the
        // bytes it wrote are kept and its client resumes from them).
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let events = self.uploads.clone();
        let signal = async move {
            shutdown.await;
            // Live event streams (the page's) end now rather than holding shutdown up.
            events.close_events();
            let _ = stopping_tx.send(());
        };
        let grace = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = crate::connections::serve(listener, app, self.connections, signal) => {}
            () = grace => {}
        }
        expiry.abort();
        Ok(())
    }
}

/// Applies `X-HTTP-Method-Override` (for clients that can only send GET and POST) before routing.
fn method_override(router: Router) -> Router {
    Router::new().fallback_service(tower::ServiceExt::<Request>::map_request(
        router,
        |mut req: Request| {
            if req.method() == Method::POST
                && let Some(m) = req.headers().get("x-http-method-override")
                && let Ok(m) = Method::from_bytes(m.as_bytes())
            {
                *req.method_mut() = m;
            }
            req
        },
    ))
}

/// Headers a browser script may read from our responses.
const EXPOSED: &str = "tus-resumable, tus-version, tus-extension, tus-max-size, tus-checksum-algorithm, \
upload-offset, upload-length, upload-defer-length, upload-metadata, upload-expires, upload-concat, \
location, content-range, accept-ranges, etag, last-modified, content-length";

/// CORS for browser clients (tus-js-client, Uppy). Written here rather than taken from
/// tower-http because its layer treats every OPTIONS request as a preflight, which would
/// swallow tus discovery (`OPTIONS /uploads/` must reach the tus handler). A preflight is an
/// OPTIONS with `Origin` and `Access-Control-Request-Method`; it is answered here, without a
/// token, allowing what it asks for. Other requests with `Origin` get the allow and expose
/// headers on their response.
async fn cors(req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = if preflight {
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        if let Some(m) = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
        }
        if let Some(hs) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, hs.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(86400));
        res
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    res
}

struct FilesState {
    data: Arc<dyn DataStore>,
    metrics: Arc<Metrics>,
    uploads: Arc<Uploads>,
}

/// The served directory's root listing (`/files`, `/files/`; `/` is the page, see
/// [`crate::page`]).
async fn index(State(s): State<Arc<FilesState>>, method: Method, headers: HeaderMap) -> Response {
    crate::files::respond(&*s.data, "", &method, &headers, &s.metrics, "/files/").await
}

async fn file(
    State(s): State<Arc<FilesState>>,
    UrlPath(path): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    crate::files::respond(&*s.data, &path, &method, &headers, &s.metrics, "/files/").await
}

async fn metrics(State(s): State<Arc<FilesState>>) -> Response {
    match s.uploads.active_count().await {
        Ok(active) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            s.metrics.render(active),
        )
            .into_response(),
        Err(e @ StoreError::Unavailable(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
