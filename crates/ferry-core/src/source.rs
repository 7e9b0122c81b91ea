//! `HttpSource`: one URL (a mirror) as a source of byte ranges. Builds one HTTP client per
//! connection (so HTTP/2 never folds our connections into one socket), sends range requests
//! with `If-Range`, and sorts each answer into data, a retryable failure or a fatal error.
//!
//! Redirects are followed here, hop by hop, not by the HTTP client, so that what each request
//! carries is decided in one place ([`HttpSource::may_send_credentials`]): the caller's headers
//! (`-H`) and the credentials of the URL go only to the origin (scheme, host, port) of the URL
//! as given, unless [`RedirectPolicy::trusted`] (curl's `--location-trusted`); no `Referer` is
//! ever sent; a redirect to another scheme than http(s), from https to http (unless
//! [`RedirectPolicy::allow_downgrade`]), in a loop or past [`RedirectPolicy::max`] hops is a
//! permanent error ([`Error::Redirect`]).

use crate::error::Error;
use crate::journal::Validators;
use crate::limits::parse_retry_after;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Client, Response, StatusCode};
use std::sync::Mutex;
use std::time::Duration;
use url::Url;

/// Why one attempt failed, and whether retrying can help.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// Try again after a backoff (network error, 5xx, 429, stall, short body, bad range).
    Transient {
        /// What happened.
        reason: String,
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The remote file is not the one the partial download started from.
    Changed(String),
    /// Retrying cannot help (404, 403, disk error…).
    Fatal(Error),
}

/// Connection settings shared by all clients of a transfer.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long establishing a connection (TCP and TLS) may take. Default 15 s.
    pub connect_timeout: Duration,
    /// Headers sent with every request (`Accept-Encoding: identity` is added unless set here,
    /// so byte offsets refer to the file itself).
    pub headers: HeaderMap,
    /// The `User-Agent` header. Default `ferry/<version>`.
    pub user_agent: String,
    /// A TLS configuration to use instead of the system trust store (e.g. one that accepts
    /// only a pinned certificate, for ferry peers).
    pub tls: Option<CustomTls>,
    /// How downloads follow redirects.
    pub redirects: RedirectPolicy,
}

/// How a download follows redirects (`301`, `302`, `303`, `307`, `308` with a `Location`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedirectPolicy {
    /// Follow redirects at all; when false a redirect is an error. Default true.
    pub follow: bool,
    /// Most redirects followed for one request. Default 10.
    pub max: u32,
    /// Send the caller's headers and the URL's credentials to other origins too (curl's
    /// `--location-trusted`). Default false: they go only to the origin of the URL as given.
    pub trusted: bool,
    /// Follow a redirect from https to plain http. Default false.
    pub allow_downgrade: bool,
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        RedirectPolicy {
            follow: true,
            max: 10,
            trusted: false,
            allow_downgrade: false,
        }
    }
}

/// Why a redirect was not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedirectRefusal {
    /// Redirects are not followed at all here (a ferry peer is never left).
    NotFollowed {
        /// Where the redirect pointed.
        to: String,
    },
    /// The `Location` is not a URL.
    BadLocation {
        /// The header as sent.
        location: String,
    },
    /// The target's scheme is not http or https.
    Scheme {
        /// Where the redirect pointed.
        to: String,
    },
    /// From https to plain http.
    Downgrade {
        /// Where the redirect pointed.
        to: String,
    },
    /// Back to a URL of the same chain.
    Loop {
        /// The URL met twice.
        to: String,
    },
    /// More hops than allowed.
    TooMany {
        /// The limit.
        max: u32,
    },
}

impl std::fmt::Display for RedirectRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedirectRefusal::NotFollowed { to } => write!(
                f,
                "the server redirected to {to}; redirects are not followed here"
            ),
            RedirectRefusal::BadLocation { location } => write!(
                f,
                "the server redirected to {location:?}, which is not a URL"
            ),
            RedirectRefusal::Scheme { to } => write!(
                f,
                "the server redirected to {to}; only http and https redirects are followed"
            ),
            RedirectRefusal::Downgrade { to } => write!(
                f,
                "the server redirected from https to plain http ({to}); not followed, as the \
                 transfer would be readable and changeable on the way"
            ),
            RedirectRefusal::Loop { to } => write!(
                f,
                "the server's redirects go round in a loop (back to {to})"
            ),
            RedirectRefusal::TooMany { max } => {
                write!(f, "more than {max} redirects in a row; giving up")
            }
        }
    }
}

/// A preconfigured rustls client configuration, named by `key` (clients are shared between
/// downloads with equal options, so equal keys must mean equal configurations).
#[derive(Clone)]
pub struct CustomTls {
    /// Names the configuration: equal keys must mean equal configurations.
    pub key: String,
    /// The rustls configuration (certificate verification, ALPN).
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// Connect directly, ignoring proxy settings (ferry peers on a local network).
    pub direct: bool,
}

impl std::fmt::Debug for CustomTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomTls({})", self.key)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(15),
            headers: HeaderMap::new(),
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_string(),
            tls: None,
            redirects: RedirectPolicy::default(),
        }
    }
}

/// A client with its own connection pool that follows redirects itself (at most 10, the
/// caller's headers on every request, no `Referer`): the upload client's.
pub fn build_client(opts: &ClientOptions) -> Result<Client, Error> {
    let mut headers = opts.headers.clone();
    headers
        .entry(header::ACCEPT_ENCODING)
        .or_insert(HeaderValue::from_static("identity"));
    client_builder(opts, headers)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .map_err(Error::HttpClient)
}

/// A download connection's client: it follows no redirect ([`HttpSource::get`] does, deciding
/// per hop what to send) and sends none of the caller's headers by itself.
pub fn build_download_client(opts: &ClientOptions) -> Result<Client, Error> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    client_builder(opts, headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(Error::HttpClient)
}

/// The settings both kinds of clients share.
fn client_builder(opts: &ClientOptions, headers: HeaderMap) -> reqwest::ClientBuilder {
    let mut builder = Client::builder();
    if let Some(tls) = &opts.tls {
        builder = builder.tls_backend_preconfigured(tls.config.as_ref().clone());
        if tls.direct {
            // Ferry peers are reached directly (a proxy could not reach a local peer; the
            // pinned certificate keeps the connection safe either way).
            builder = builder.no_proxy();
        }
    }
    builder
        .user_agent(opts.user_agent.clone())
        .default_headers(headers)
        .referer(false)
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
}

/// One URL and what we learned about it.
#[derive(Debug)]
pub struct HttpSource {
    /// The URL as given.
    pub url: Url,
    /// The URL as requested: without its user name and password, which go in an
    /// `Authorization` header where [`HttpSource::may_send_credentials`] allows.
    bare: Url,
    /// The user name and password of the URL as given, percent-decoded.
    userinfo: Option<(String, Option<String>)>,
    /// The caller's headers (`-H`).
    headers: HeaderMap,
    redirects: RedirectPolicy,
    state: Mutex<SourceState>,
}

#[derive(Debug, Default)]
struct SourceState {
    /// Where redirects ended; later range requests go straight there.
    effective: Option<Url>,
    validators: Option<Validators>,
    disabled: Option<String>,
}

impl HttpSource {
    /// A source for `url` with the caller's headers and redirect policy of `opts`, not yet
    /// contacted (no redirect target, validators, or reason to drop it).
    pub fn new(url: Url, opts: &ClientOptions) -> Self {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let userinfo = (!url.username().is_empty() || url.password().is_some())
            .then(|| (decode(url.username()), url.password().map(decode)));
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        HttpSource {
            url,
            bare,
            userinfo,
            headers: opts.headers.clone(),
            redirects: opts.redirects.clone(),
            state: Mutex::new(SourceState::default()),
        }
    }

    /// Whether a request to `target` may carry the caller's headers and the URL's
    /// credentials: only to the origin (scheme, host, port) of the URL as given, unless the
    /// policy trusts every redirect target. The one place this is decided.
    pub fn may_send_credentials(&self, target: &Url) -> bool {
        self.redirects.trusted
            || (target.scheme() == self.bare.scheme()
                && target.host_str() == self.bare.host_str()
                && target.port_or_known_default() == self.bare.port_or_known_default())
    }

    /// Where the redirect `resp` (an answer to a request for `from`) leads, or why it is not
    /// followed; `chain` holds the URLs requested so far.
    fn redirect_target(&self, resp: &Response, from: &Url, chain: &[Url]) -> Result<Url, Failure> {
        let refuse = |refusal| {
            Failure::Fatal(Error::Redirect {
                url: self.bare.to_string(),
                refusal,
            })
        };
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let Ok(to) = from.join(&location) else {
            return Err(refuse(RedirectRefusal::BadLocation { location }));
        };
        let shown = to.to_string();
        if !self.redirects.follow {
            return Err(refuse(RedirectRefusal::NotFollowed { to: shown }));
        }
        if !matches!(to.scheme(), "http" | "https") {
            return Err(refuse(RedirectRefusal::Scheme { to: shown }));
        }
        if from.scheme() == "https" && to.scheme() == "http" && !self.redirects.allow_downgrade {
            return Err(refuse(RedirectRefusal::Downgrade { to: shown }));
        }
        if to == *from || chain.contains(&to) {
            return Err(refuse(RedirectRefusal::Loop { to: shown }));
        }
        if chain.len() >= self.redirects.max as usize {
            return Err(refuse(RedirectRefusal::TooMany {
                max: self.redirects.max,
            }));
        }
        Ok(to)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().expect("source state lock")
    }

    /// The URL requests should use now (after redirects).
    pub fn request_url(&self) -> Url {
        self.lock()
            .effective
            .clone()
            .unwrap_or_else(|| self.bare.clone())
    }

    /// Records where a request's redirects ended: later requests go straight there.
    pub fn set_effective(&self, url: Url) {
        self.lock().effective = Some(url);
    }

    /// What this source said about the file in its first answer (used for its `If-Range`),
    /// or `None` before it answered.
    pub fn validators(&self) -> Option<Validators> {
        self.lock().validators.clone()
    }

    /// Records what this source says about the file.
    pub fn set_validators(&self, v: Validators) {
        self.lock().validators = Some(v);
    }

    /// Stops using this source for `why`; true when it was in use until now (so the caller
    /// that dropped it is the one to report it, once).
    pub fn disable(&self, why: String) -> bool {
        self.lock().disabled.replace(why).is_none()
    }

    /// Why this source was dropped, or `None` while it is still used.
    pub fn disabled(&self) -> Option<String> {
        self.lock().disabled.clone()
    }

    /// GET with an optional `Range: bytes=start-[end-1]` and `If-Range`, following redirects
    /// by [`RedirectPolicy`]; the answer's URL is where they ended.
    pub async fn get(
        &self,
        client: &Client,
        range: Option<(u64, Option<u64>)>,
        if_range: Option<&str>,
    ) -> Result<Response, Failure> {
        let mut url = self.request_url();
        let mut chain = Vec::new();
        loop {
            let resp = self.get_once(client, &url, range, if_range).await?;
            let redirect = matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308)
                && resp.headers().contains_key(header::LOCATION);
            if !redirect {
                return classify(resp, &self.bare);
            }
            let next = self.redirect_target(&resp, &url, &chain)?;
            chain.push(std::mem::replace(&mut url, next));
        }
    }

    /// One request to `url`, with what may go there.
    async fn get_once(
        &self,
        client: &Client,
        url: &Url,
        range: Option<(u64, Option<u64>)>,
        if_range: Option<&str>,
    ) -> Result<Response, Failure> {
        let mut req = client.get(url.clone());
        if self.may_send_credentials(url) {
            if let Some((user, password)) = &self.userinfo {
                req = req.basic_auth(user, password.as_ref());
            }
            req = req.headers(self.headers.clone());
        }
        if let Some((start, end)) = range {
            let value = match end {
                Some(end) => format!("bytes={start}-{}", end - 1),
                None => format!("bytes={start}-"),
            };
            req = req.header(header::RANGE, value);
            if let Some(v) = if_range {
                req = req.header(header::IF_RANGE, v);
            }
        }
        req.send()
            .await
            .map_err(|e| match crate::tls::certificate_problem(&e) {
                // Retrying cannot make a certificate trusted.
                Some(reason) => Failure::Fatal(Error::Certificate {
                    url: self.bare.to_string(),
                    reason,
                }),
                None => Failure::Transient {
                    reason: describe(&e),
                    retry_after: None,
                },
            })
    }
}

/// Sorts a response by status: 2xx passes, the rest become failures.
fn classify(resp: Response, url: &Url) -> Result<Response, Failure> {
    let status = resp.status();
    if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let code = status.as_u16();
    let transient = matches!(code, 408 | 425 | 429 | 500 | 502 | 503 | 504)
        || (code >= 500 && code != 501 && code != 505);
    if transient {
        return Err(Failure::Transient {
            reason: format!("{ANSWERED} {status}"),
            retry_after,
        });
    }
    let hint = match code {
        401 => "; the server wants credentials",
        403 => "; access is forbidden",
        404 | 410 => "; check the URL",
        _ => "",
    };
    Err(Failure::Fatal(Error::HttpStatus {
        url: url.to_string(),
        status: code,
        hint: hint.to_string(),
    }))
}

/// How the reason of a failed attempt that got an HTTP answer begins.
const ANSWERED: &str = "server answered";

/// Whether the reason of a transient failure says the server answered (with an error status)
/// rather than that it could not be reached.
pub fn is_answer(reason: &str) -> bool {
    reason.starts_with(ANSWERED)
}

/// A short, human description of a reqwest error, including its causes.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the body".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(cause) = src {
        let text = cause.to_string();
        // The HTTP stack's own layers ("client error (Connect)", "tcp connect error") say
        // nothing the first words do not: only the real cause is kept.
        let noise = text.starts_with("client error (") || text == "tcp connect error";
        if !noise {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = cause.source();
    }
    s
}

/// `Content-Range: bytes a-b/total` → (a, b exclusive, total); `bytes */total` → (0, 0, total).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if range.trim() == "*" {
        return Some((0, 0, total));
    }
    let (a, b) = range.trim().split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    if b < a || total.is_some_and(|t| b >= t) {
        return None;
    }
    // The last byte of a file is at most u64::MAX - 1: its end must be representable.
    Some((a, b.checked_add(1)?, total))
}

/// Validators of a response; `length` is the whole file's (from Content-Range or Content-Length).
pub fn validators_of(headers: &HeaderMap, length: Option<u64>) -> Validators {
    let get = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = get(header::ETAG).filter(|e| !e.starts_with("W/"));
    Validators {
        length,
        etag,
        last_modified: get(header::LAST_MODIFIED),
    }
}

/// Content-Length of a response, when present.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 6, None)));
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some((0, 0, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 10-5/1000"), None);
        assert_eq!(parse_content_range("bytes 0-1000/1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn weak_etags_are_not_validators() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("W/\"x\""));
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        let v = validators_of(&h, Some(3));
        assert_eq!(v.etag, None);
        assert_eq!(v.if_range(), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Any u64, often one at the edges.
        fn edgy() -> impl Strategy<Value = u64> {
            prop_oneof![
                any::<u64>(),
                Just(0),
                Just(u64::MAX),
                Just(u64::MAX - 1),
                0u64..4
            ]
        }

        proptest! {
            #[test]
            fn any_content_range_parses_to_a_sane_range_or_nothing(v in ".{0,60}") {
                if let Some((start, end, total)) = parse_content_range(&v) {
                    prop_assert!(start <= end);
                    if let Some(t) = total {
                        prop_assert!(end <= t);
                    }
                }
            }

            #[test]
            fn content_ranges_of_the_grammar_are_read_back(
                start in any::<u64>(),
                len in 1u64..1 << 40,
                extra in 0u64..1 << 40,
                known in any::<bool>(),
                pad in " {0,2}",
            ) {
                let last = start.saturating_add(len - 1);
                prop_assume!(last < u64::MAX);
                let total = last.checked_add(1 + extra);
                prop_assume!(total.is_some() || !known);
                let total_text = match (known, total) {
                    (true, Some(t)) => t.to_string(),
                    _ => "*".into(),
                };
                let v = format!("{pad}bytes {start}-{last}/{total_text}{pad}");
                let want_total = if known { total } else { None };
                prop_assert_eq!(parse_content_range(&v), Some((start, last + 1, want_total)));
                // A last byte at or past the total is refused.
                if let Some(t) = want_total {
                    let bad = format!("bytes {start}-{t}/{t}");
                    prop_assert_eq!(parse_content_range(&bad), None);
                }
            }

            #[test]
            fn any_numbers_in_a_content_range_are_safe(
                a in edgy(),
                b in edgy(),
                t in proptest::option::of(edgy()),
            ) {
                let total = t.map_or("*".to_string(), |t| t.to_string());
                let got = parse_content_range(&format!("bytes {a}-{b}/{total}"));
                let valid = a <= b && b < u64::MAX && t.is_none_or(|t| b < t);
                prop_assert_eq!(got, valid.then(|| (a, b + 1, t)));
            }

            #[test]
            fn unsatisfied_ranges_give_the_length(total in any::<u64>()) {
                let v = format!("bytes */{total}");
                prop_assert_eq!(parse_content_range(&v), Some((0, 0, Some(total))));
            }

            #[test]
            fn any_response_headers_give_validators_and_lengths_without_panic(
                etag in proptest::collection::vec(0x20u8..0x7f, 0..40),
                modified in proptest::collection::vec(0x20u8..=0xff, 0..40),
                length in proptest::collection::vec(0x20u8..0x7f, 0..24),
                total in proptest::option::of(any::<u64>()),
            ) {
                let mut h = HeaderMap::new();
                h.insert(header::ETAG, HeaderValue::from_bytes(&etag).expect("visible ascii"));
                if let Ok(v) = HeaderValue::from_bytes(&modified) {
                    h.insert(header::LAST_MODIFIED, v);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_bytes(&length).expect("visible ascii"));
                let v = validators_of(&h, total);
                prop_assert_eq!(v.length, total);
                let text = String::from_utf8(etag).expect("ascii");
                prop_assert_eq!(v.etag, Some(text.clone()).filter(|e| !e.starts_with("W/")));
                let length = String::from_utf8(length).expect("ascii");
                prop_assert_eq!(content_length(&h), length.trim().parse::<u64>().ok());
            }
        }
    }
}
