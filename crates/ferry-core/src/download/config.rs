//! What a download is asked to do: [`DownloadBuilder`] collects the settings, and
//! [`DownloadBuilder::build`] checks them into the validated [`Config`] a [`Download`] holds.

use super::Download;
use crate::error::Error;
use crate::events::EventSink;
use crate::limits::{RateLimiter, RetryPolicy};
use crate::pieces::PieceHashes;
use crate::source::{ClientOptions, CustomTls, RedirectPolicy};
use crate::verify::Expected;
use reqwest::header;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Where the file goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Exactly this path.
    File(PathBuf),
    /// This directory, under the name the server or URL gives.
    Dir(PathBuf),
}

/// Builds a [`Download`]. Every setting has a sensible default except the URL.
#[derive(Debug, Clone)]
pub struct DownloadBuilder {
    urls: Vec<String>,
    settings: Settings,
}

/// The settings that need no checking beyond what their setters do.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) output: Output,
    pub(crate) connections: usize,
    pub(crate) client: ClientOptions,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) restart: bool,
    pub(crate) no_restart: bool,
    pub(crate) checksums: Vec<Expected>,
    pub(crate) read_timeout: Duration,
    pub(crate) min_split: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) checkpoint_bytes: Option<u64>,
    pub(crate) events: EventSink,
    pub(crate) pieces: Option<PieceHashes>,
}

/// A checked download configuration: at least one URL, every URL http(s).
#[derive(Debug)]
pub(crate) struct Config {
    /// The sources (mirrors of one file), in the order given.
    pub(crate) urls: Vec<Url>,
    /// Everything else the builder was told.
    pub(crate) settings: Settings,
}

impl Default for DownloadBuilder {
    fn default() -> Self {
        DownloadBuilder {
            urls: Vec::new(),
            settings: Settings {
                output: Output::Dir(PathBuf::from(".")),
                connections: 8,
                client: ClientOptions::default(),
                limiter: None,
                retry: RetryPolicy::default(),
                restart: false,
                no_restart: false,
                checksums: Vec::new(),
                read_timeout: Duration::from_secs(30),
                min_split: 1 << 20,
                checkpoint_interval: Duration::from_secs(1),
                checkpoint_bytes: None,
                pieces: None,
                events: EventSink::default(),
            },
        }
    }
}

impl DownloadBuilder {
    /// Adds a URL. Several URLs are mirrors of the same file.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Where the file goes (default: the current directory, under the server's name).
    pub fn output(mut self, output: Output) -> Self {
        self.settings.output = output;
        self
    }

    /// Number of connections (default 8).
    pub fn connections(mut self, n: usize) -> Self {
        self.settings.connections = n.max(1);
        self
    }

    /// Adds a request header sent with every request.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, Error> {
        let name = header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Error::Usage(format!("invalid header name {name:?}")))?;
        let value = header::HeaderValue::from_str(value.trim())
            .map_err(|_| Error::Usage(format!("invalid value for header {name}")))?;
        self.settings.client.headers.append(name, value);
        Ok(self)
    }

    /// Caps the total speed of this download; share one limiter to cap several downloads together.
    pub fn rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.settings.limiter = Some(limiter);
        self
    }

    /// Attempts in a row without progress before a connection gives up (default 5).
    pub fn retries(mut self, n: u32) -> Self {
        self.settings.retry.max_attempts = n;
        self
    }

    /// The whole retry policy (attempts and backoff).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// Discard any partial download and start from zero.
    pub fn restart(mut self, yes: bool) -> Self {
        self.settings.restart = yes;
        self
    }

    /// When the remote file changed since the partial download began, fail instead of restarting.
    pub fn no_restart(mut self, yes: bool) -> Self {
        self.settings.no_restart = yes;
        self
    }

    /// TLS settings replacing the system trust store (e.g. a pinned peer certificate).
    pub fn tls(mut self, tls: CustomTls) -> Self {
        self.settings.client.tls = Some(tls);
        self
    }

    /// How redirects are followed (default: up to 10, the caller's headers and the URL's
    /// credentials to the URL's own origin only, never from https to http).
    pub fn redirects(mut self, policy: RedirectPolicy) -> Self {
        self.settings.client.redirects = policy;
        self
    }

    /// The expected BLAKE3 hash of every piece (e.g. from a ferry peer's manifest): each piece
    /// is verified as soon as it is written; a bad piece is fetched again from another source
    /// and the source that sent it is dropped. The journal records verified pieces only.
    pub fn pieces(mut self, pieces: PieceHashes) -> Self {
        self.settings.pieces = Some(pieces);
        self
    }

    /// Verify the finished file against this digest.
    pub fn checksum(mut self, expected: Expected) -> Self {
        self.settings.checksums.push(expected);
        self
    }

    /// A connection that receives nothing for this long is dropped and retried (default 30 s).
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.settings.read_timeout = t;
        self
    }

    /// How long connecting may take (default 15 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.settings.client.connect_timeout = t;
        self
    }

    /// Ranges smaller than this are not split between connections (default 1 MiB).
    pub fn min_split(mut self, bytes: u64) -> Self {
        self.settings.min_split = bytes.max(4096);
        self
    }

    /// How often progress is made durable: every `every` (default 1 s), and after `bytes` per
    /// connection (default 512 KiB) but at most every 50 ms.
    pub fn checkpoint(mut self, every: Duration, bytes: Option<u64>) -> Self {
        self.settings.checkpoint_interval = every;
        self.settings.checkpoint_bytes = bytes;
        self
    }

    /// Where the download's events (start, progress, retries, warnings, done) go.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.settings.events = sink;
        self
    }

    /// Checks the settings (at least one URL, every URL http or https) and returns the download.
    pub fn build(self) -> Result<Download, Error> {
        if self.urls.is_empty() {
            return Err(Error::Usage("no URL given".into()));
        }
        let mut urls = Vec::new();
        for u in &self.urls {
            let url = Url::parse(u).map_err(|source| Error::InvalidUrl {
                url: u.clone(),
                source,
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::Usage(format!(
                    "unsupported URL scheme in {u:?}: only http and https"
                )));
            }
            urls.push(url);
        }
        Ok(Download {
            cfg: Arc::new(Config {
                urls,
                settings: self.settings,
            }),
        })
    }
}
