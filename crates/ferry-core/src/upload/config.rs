//! What an upload is asked to do: [`UploadBuilder`] collects the settings and
//! [`UploadBuilder::build`] checks them into the [`Config`] an [`Upload`] holds; plus what
//! follows from them (the tus client, the remote name, the metadata).

use super::Upload;
use super::ietf::IetfClient;
use super::protocol::{Client, Protocol};
use super::tus::{self, TusClient};
use crate::error::Error;
use crate::events::EventSink;
use crate::limits::{RateLimiter, RetryPolicy};
use crate::source::{ClientOptions, CustomTls, build_client};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Settings of one upload.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) file: PathBuf,
    pub(crate) endpoint: String,
    pub(crate) remote_name: Option<String>,
    pub(crate) remote_path: Option<String>,
    pub(crate) connections: usize,
    pub(crate) chunk_size: Option<u64>,
    pub(crate) overwrite: bool,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) token: Option<String>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) events: EventSink,
    pub(crate) journal_dir: Option<PathBuf>,
    pub(crate) stall_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<CustomTls>,
    pub(crate) protocol: Protocol,
}

/// Builds an [`Upload`].
#[derive(Debug, Clone)]
pub struct UploadBuilder {
    cfg: Config,
}

impl UploadBuilder {
    /// The default settings for sending `file` to the tus endpoint `endpoint`.
    pub(crate) fn new(file: PathBuf, endpoint: String) -> Self {
        UploadBuilder {
            cfg: Config {
                file,
                endpoint,
                remote_name: None,
                remote_path: None,
                connections: 4,
                chunk_size: None,
                overwrite: false,
                headers: Vec::new(),
                token: None,
                limiter: None,
                retry: RetryPolicy::default(),
                events: EventSink::default(),
                journal_dir: None,
                stall_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(15),
                tls: None,
                protocol: Protocol::Tus,
            },
        }
    }

    /// Connections (partial uploads) for one file; 1 sends one sequential upload.
    pub fn connections(mut self, n: usize) -> Self {
        self.cfg.connections = n.max(1);
        self
    }
    /// Bytes per PATCH (each with its own checksum). Default: a sixteenth of a part, between
    /// 1 and 32 MiB, so an interrupted PATCH loses little and requests stay large.
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.cfg.chunk_size = Some(bytes.max(1));
        self
    }
    /// The name on the server (metadata `filename`); default: the file's own name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.remote_name = Some(name.into());
        self
    }
    /// A relative path with folders on the server (metadata `path`), e.g. for folder uploads.
    pub fn remote_path(mut self, path: impl Into<String>) -> Self {
        self.cfg.remote_path = Some(path.into());
        self
    }
    /// Ask the server to replace an existing file (metadata `overwrite: true`).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.cfg.overwrite = yes;
        self
    }
    /// Sent as `Authorization: Bearer TOKEN`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = Some(token.into());
        self
    }
    /// An extra header on every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.cfg.headers.push((name.into(), value.into()));
        self
    }
    /// Caps the upload's speed; share one limiter to cap several uploads together.
    pub fn limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.cfg.limiter = Some(limiter);
        self
    }
    /// How failed requests are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.cfg.retry = policy;
        self
    }
    /// Where the upload's events go.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.cfg.events = sink;
        self
    }
    /// Where resume journals live (default: the user's data directory).
    pub fn journal_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cfg.journal_dir = Some(dir.into());
        self
    }
    /// A PATCH that moves no byte for this long is dropped and retried.
    pub fn stall_timeout(mut self, d: Duration) -> Self {
        self.cfg.stall_timeout = d;
        self
    }
    /// How long connecting may take (default 15 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.cfg.connect_timeout = d;
        self
    }

    /// TLS settings replacing the system trust store (e.g. [`crate::tls::trust_ca_file`]).
    pub fn tls(mut self, tls: CustomTls) -> Self {
        self.cfg.tls = Some(tls);
        self
    }

    /// The upload protocol (default tus). The IETF draft has no parallel parts: it sends over
    /// one connection.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.cfg.protocol = protocol;
        self
    }

    /// Checks the endpoint (an http or https URL) and the headers, and returns the upload.
    pub fn build(self) -> Result<Upload, Error> {
        let endpoint = Url::parse(&self.cfg.endpoint).map_err(|source| Error::InvalidUrl {
            url: self.cfg.endpoint.clone(),
            source,
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(Error::Usage(format!(
                "{endpoint}: only http and https tus endpoints are supported"
            )));
        }
        for (k, v) in &self.cfg.headers {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::Usage(format!("invalid header name {k:?}")))?;
            HeaderValue::from_str(v)
                .map_err(|_| Error::Usage(format!("invalid value for header {k}")))?;
        }
        let mut cfg = self.cfg;
        if cfg.protocol == Protocol::Ietf {
            cfg.connections = 1;
        }
        Ok(Upload {
            cfg: Arc::new(cfg),
            endpoint,
        })
    }
}

impl Config {
    /// The tus client for `endpoint`, with the configured headers and token.
    pub(crate) fn client(&self, endpoint: &Url) -> Result<TusClient, Error> {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).expect("checked in build"),
                HeaderValue::from_str(v).expect("checked in build"),
            );
        }
        if let Some(t) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                Error::Usage("the token has characters a header cannot carry".into())
            })?;
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let client = build_client(&ClientOptions {
            connect_timeout: self.connect_timeout,
            tls: self.tls.clone(),
            ..Default::default()
        })?;
        Ok(TusClient {
            client,
            endpoint: endpoint.clone(),
            headers,
        })
    }

    /// The client of `endpoint` in the configured protocol, for a file of `size` bytes.
    pub(crate) fn protocol_client(&self, endpoint: &Url, size: u64) -> Result<Client, Error> {
        let base = self.client(endpoint)?;
        Ok(match self.protocol {
            Protocol::Tus => Client::Tus(base),
            Protocol::Ietf => Client::Ietf(IetfClient { base, length: size }),
        })
    }

    /// The remote name: `--name`, else the file's name.
    pub(crate) fn remote(&self) -> Result<String, Error> {
        if let Some(p) = &self.remote_path {
            return Ok(p.clone());
        }
        if let Some(n) = &self.remote_name {
            return Ok(n.clone());
        }
        self.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage(format!("{} has no file name", self.file.display())))
    }

    /// Where the server puts the finished upload stored as `remote`, relative to its folder:
    /// the `path` metadata (with -r), else the `filename` (a name's last segment).
    pub(crate) fn landing(&self, remote: &str) -> String {
        if self.remote_path.is_some() {
            remote.to_owned()
        } else {
            remote.rsplit('/').next().unwrap_or(remote).to_owned()
        }
    }

    /// The `Upload-Metadata` of the upload stored as `remote`.
    pub(crate) fn metadata(&self, remote: &str) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let base = remote.rsplit('/').next().unwrap_or(remote);
        pairs.push(("filename", base));
        if self.remote_path.is_some() {
            pairs.push(("path", remote));
        }
        if self.overwrite {
            pairs.push(("overwrite", "true"));
        }
        tus::metadata(&pairs)
    }
}
