//! The tus 1.0 client protocol: discovery (OPTIONS), creation (plain, partial, final, with
//! upload), HEAD for offsets, PATCH streamed from the file with a per-chunk checksum, and
//! termination. Every answer is classified so the caller knows whether to retry, start over or
//! give up, and errors carry what the server said.

use crate::limits::{RateLimiter, parse_retry_after};
use crate::source::describe;
use crate::verify::{Algorithm, Hasher};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use url::Url;

const TUS_RESUMABLE: &str = "1.0.0";
/// Read size when streaming a chunk from disk.
const READ_BLOCK: usize = 256 << 10;

/// What the server supports (from OPTIONS).
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// The extensions in `Tus-Extension` (e.g. `creation`, `concatenation`), lower case.
    pub extensions: Vec<String>,
    /// The algorithms in `Tus-Checksum-Algorithm` (e.g. `sha1`, `blake3`), lower case.
    pub checksums: Vec<String>,
    /// `Tus-Max-Size`: the largest upload the server accepts, in bytes; `None` when it names
    /// no limit.
    pub max_size: Option<u64>,
}

impl Capabilities {
    /// What an OPTIONS answer's headers announce: `Tus-Extension` and `Tus-Checksum-Algorithm`
    /// (comma-separated, compared in lower case) and `Tus-Max-Size`. Anything unreadable is
    /// taken as not announced.
    pub fn from_headers(headers: &HeaderMap) -> Capabilities {
        let list = |name: &str| -> Vec<String> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        Capabilities {
            extensions: list("tus-extension"),
            checksums: list("tus-checksum-algorithm"),
            max_size: header_u64(headers, "tus-max-size"),
        }
    }

    /// Whether the server announced the extension `ext` (lower case).
    pub fn has(&self, ext: &str) -> bool {
        self.extensions.iter().any(|e| e == ext)
    }

    /// The checksum algorithm to use: the strongest offered, the faster among equals
    /// (BLAKE3, SHA-512, SHA-256, SHA-1; MD5 only when it is the only one).
    pub fn best_checksum(&self) -> Option<Algorithm> {
        let offered = |names: &[&str]| self.checksums.iter().any(|c| names.contains(&c.as_str()));
        [
            (Algorithm::Blake3, &["blake3"][..]),
            (Algorithm::Sha512, &["sha512", "sha-512"][..]),
            (Algorithm::Sha256, &["sha256", "sha-256"][..]),
            (Algorithm::Sha1, &["sha1", "sha-1"][..]),
            (Algorithm::Md5, &["md5"][..]),
        ]
        .into_iter()
        .find(|(_, names)| offered(names))
        .map(|(a, _)| a)
    }
}

/// Digest (base64) of `len` bytes of `path` from `start`, read in blocks.
pub fn digest_range(path: &Path, start: u64, len: u64, algo: Algorithm) -> std::io::Result<String> {
    let mut h = Hasher::new(algo);
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(STANDARD.encode(h.finish()))
}

/// How a tus request failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TusFailure {
    /// Worth retrying (network, 5xx, 423, 429, 409 offset mismatch, 460 checksum mismatch).
    Transient {
        /// What happened.
        detail: String,
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The upload is gone from the server (404, 410): start it again.
    Gone {
        /// What the server said.
        detail: String,
    },
    /// The server's TLS certificate is not trusted: retrying cannot help.
    Untrusted {
        /// The URL asked.
        url: String,
        /// Why the certificate was refused, in plain words.
        reason: String,
    },
    /// Retrying cannot help (401, 403, 409 at creation, 413, 400…).
    Fatal {
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// What happened.
        detail: String,
    },
}

/// A tus endpoint and the headers every request carries.
#[derive(Debug, Clone)]
pub struct TusClient {
    /// The HTTP client every request goes through.
    pub client: Client,
    /// The creation URL (uploads are POSTed here; relative upload URLs resolve against it).
    pub endpoint: Url,
    /// Headers sent with every request besides `Tus-Resumable` (e.g. authorization).
    pub headers: HeaderMap,
}

/// An upload's state on the server (from HEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteState {
    /// `Upload-Offset`: how many bytes the server holds; `None` when it sent none.
    pub offset: Option<u64>,
    /// `Upload-Length`: the upload's declared size in bytes; `None` while deferred or unsent.
    pub length: Option<u64>,
}

pub(crate) fn network(url: &str, e: &reqwest::Error) -> TusFailure {
    if let Some(reason) = crate::tls::certificate_problem(e) {
        return TusFailure::Untrusted {
            url: url.to_owned(),
            reason,
        };
    }
    TusFailure::Transient {
        detail: format!("{url}: {}", describe(e)),
        retry_after: None,
    }
}

pub(crate) async fn classify(url: &str, res: reqwest::Response, creating: bool) -> TusFailure {
    let status = res.status();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let text = res.text().await.unwrap_or_default();
    let said = text.trim();
    let detail = if said.is_empty() {
        format!("{url}: the server answered {status}")
    } else {
        format!("{url}: the server answered {status}: {said}")
    };
    match status.as_u16() {
        404 | 410 if !creating => TusFailure::Gone { detail },
        409 if !creating => TusFailure::Transient {
            detail,
            retry_after: None,
        },
        423 if !creating => TusFailure::Transient {
            detail,
            retry_after,
        },
        460 | 408 | 429 | 500..=599 => TusFailure::Transient {
            detail,
            retry_after,
        },
        s => {
            let hint = match s {
                404 | 405 => {
                    "; this URL is not a tus upload endpoint (the one of `ferry serve` is /uploads/)"
                }
                401 => "; check the token",
                409 => "; it exists on the server",
                413 => "; the server does not accept a file this large",
                423 => "; another user is uploading to that name",
                _ => "",
            };
            TusFailure::Fatal {
                status: Some(s),
                detail: format!("{detail}{hint}"),
            }
        }
    }
}

impl TusClient {
    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        self.client
            .request(method, url.clone())
            .headers(self.headers.clone())
            .header("Tus-Resumable", TUS_RESUMABLE)
    }

    /// An upload URL from a `Location` (relative ones resolve against the endpoint).
    pub fn resolve(&self, location: &str) -> Result<Url, TusFailure> {
        self.endpoint.join(location).map_err(|e| TusFailure::Fatal {
            status: None,
            detail: format!("the server gave a bad upload URL {location:?}: {e}"),
        })
    }

    /// OPTIONS: the server's extensions, checksum algorithms and size limit. A server that
    /// does not answer OPTIONS is taken to support the core protocol and creation only.
    pub async fn options(&self) -> Result<Capabilities, TusFailure> {
        let url = self.endpoint.as_str();
        let res = self
            .request(reqwest::Method::OPTIONS, &self.endpoint)
            .send()
            .await
            .map_err(|e| network(url, &e))?;
        if !res.status().is_success() {
            if res.status().is_server_error() {
                return Err(classify(url, res, true).await);
            }
            return Ok(Capabilities {
                extensions: vec!["creation".into()],
                ..Default::default()
            });
        }
        Ok(Capabilities::from_headers(res.headers()))
    }

    /// Where a file uploaded as `remote` lands, when the endpoint follows `ferry serve`'s
    /// layout (`…/uploads/` beside `…/files/<path>`); `None` for other endpoints.
    pub fn landing_url(&self, remote: &str) -> Option<Url> {
        let path = self.endpoint.path();
        if !(path.ends_with("/uploads/") || path.ends_with("/uploads")) {
            return None;
        }
        let encoded: Vec<String> = remote
            .split('/')
            .map(|s| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        let base = self.endpoint.join("./").ok()?;
        base.join(&format!("../files/{}", encoded.join("/"))).ok()
    }

    /// Whether the server already has a file at `remote`'s landing place: `Some(true)` when a
    /// HEAD of it answers 2xx, `Some(false)` on 404, `None` when that cannot be told.
    pub async fn target_exists(&self, remote: &str) -> Option<bool> {
        let url = self.landing_url(remote)?;
        let res = self
            .client
            .head(url)
            .headers(self.headers.clone())
            .send()
            .await
            .ok()?;
        match res.status().as_u16() {
            200..=299 => Some(true),
            404 => Some(false),
            _ => None,
        }
    }

    /// POST: creates an upload. `concat` is an `Upload-Concat` value; `body` the first bytes
    /// (creation-with-upload). Returns the upload URL and the offset the server reports.
    pub async fn create(
        &self,
        length: Option<u64>,
        metadata: &str,
        concat: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(Url, u64), TusFailure> {
        let url = self.endpoint.as_str();
        let mut req = self.request(reqwest::Method::POST, &self.endpoint);
        if let Some(len) = length {
            req = req.header("Upload-Length", len);
        }
        if !metadata.is_empty() {
            req = req.header("Upload-Metadata", metadata);
        }
        if let Some(c) = concat {
            req = req.header("Upload-Concat", c);
        }
        match body {
            Some(b) => {
                req = req
                    .header("Content-Type", "application/offset+octet-stream")
                    .body(b)
            }
            None => req = req.header("Content-Length", 0),
        }
        let res = req.send().await.map_err(|e| network(url, &e))?;
        if res.status() != StatusCode::CREATED {
            return Err(classify(url, res, true).await);
        }
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| TusFailure::Fatal {
                status: Some(201),
                detail: format!("{url}: the server created an upload but sent no Location"),
            })?
            .to_owned();
        let offset = header_u64(res.headers(), "upload-offset").unwrap_or(0);
        Ok((self.resolve(&location)?, offset))
    }

    /// HEAD: the upload's offset and length.
    pub async fn head(&self, upload: &Url) -> Result<RemoteState, TusFailure> {
        let url = upload.as_str();
        let res = self
            .request(reqwest::Method::HEAD, upload)
            .send()
            .await
            .map_err(|e| network(url, &e))?;
        if !res.status().is_success() {
            return Err(classify(url, res, false).await);
        }
        Ok(RemoteState {
            offset: header_u64(res.headers(), "upload-offset"),
            length: header_u64(res.headers(), "upload-length"),
        })
    }

    /// DELETE (termination); failures are ignored by callers that only tidy up.
    pub async fn terminate(&self, upload: &Url) -> Result<(), TusFailure> {
        let url = upload.as_str();
        let res = self
            .request(reqwest::Method::DELETE, upload)
            .send()
            .await
            .map_err(|e| network(url, &e))?;
        if res.status().is_success() || matches!(res.status().as_u16(), 404 | 410) {
            Ok(())
        } else {
            Err(classify(url, res, false).await)
        }
    }

    /// PATCH: sends `len` bytes of `file` from `file_offset` as the upload's bytes from
    /// `offset`, streamed from disk, with `checksum` (algorithm, base64 digest) when given.
    /// `sent` counts bytes as they leave; the limiter paces them. Returns the new offset.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        upload: &Url,
        offset: u64,
        file: &Path,
        file_offset: u64,
        len: u64,
        checksum: Option<(Algorithm, String)>,
        sent: Arc<AtomicU64>,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Result<u64, TusFailure> {
        let url = upload.as_str();
        let body = reqwest::Body::wrap_stream(file_stream(
            file.to_path_buf(),
            file_offset,
            len,
            sent,
            limiter,
        ));
        let mut req = self
            .request(reqwest::Method::PATCH, upload)
            .header("Upload-Offset", offset)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Content-Length", len)
            .body(body);
        if let Some((algo, digest)) = checksum {
            req = req.header(
                "Upload-Checksum",
                HeaderValue::from_str(&format!("{} {digest}", algo.tus_name())).expect("ascii"),
            );
        }
        let res = req.send().await.map_err(|e| network(url, &e))?;
        if res.status() != StatusCode::NO_CONTENT && res.status() != StatusCode::OK {
            return Err(classify(url, res, false).await);
        }
        header_u64(res.headers(), "upload-offset").ok_or_else(|| TusFailure::Transient {
            detail: format!("{url}: the server answered the PATCH without Upload-Offset"),
            retry_after: None,
        })
    }
}

pub(crate) fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `len` bytes of a file from `start`, as a stream of blocks read on the blocking pool.
pub(crate) fn file_stream(
    path: PathBuf,
    start: u64,
    len: u64,
    sent: Arc<AtomicU64>,
    limiter: Option<Arc<RateLimiter>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct State {
        file: Option<std::fs::File>,
        path: PathBuf,
        pos: u64,
        left: u64,
        sent: Arc<AtomicU64>,
        limiter: Option<Arc<RateLimiter>>,
    }
    let state = State {
        file: None,
        path,
        pos: start,
        left: len,
        sent,
        limiter,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.left == 0 {
            return None;
        }
        let n = (READ_BLOCK as u64).min(st.left) as usize;
        let file = st.file.take();
        let (path, pos) = (st.path.clone(), st.pos);
        let read =
            tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Vec<u8>)> {
                let mut f = match file {
                    Some(f) => f,
                    None => {
                        let mut f = std::fs::File::open(&path)?;
                        f.seek(SeekFrom::Start(pos))?;
                        f
                    }
                };
                let mut buf = vec![0u8; n];
                f.read_exact(&mut buf)?;
                Ok((f, buf))
            })
            .await;
        let (f, buf) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Some((Err(e), State { left: 0, ..st })),
            Err(e) => return Some((Err(std::io::Error::other(e)), State { left: 0, ..st })),
        };
        if let Some(l) = &st.limiter {
            l.acquire(n as u64).await;
        }
        st.file = Some(f);
        st.pos += n as u64;
        st.left -= n as u64;
        st.sent.fetch_add(n as u64, Ordering::Relaxed);
        Some((Ok(Bytes::from(buf)), st))
    })
}

/// `Upload-Metadata` from key/value pairs.
pub fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_checksum_prefers_strong_and_fast() {
        let caps = |list: &[&str]| Capabilities {
            checksums: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            caps(&["sha1", "sha256", "md5"]).best_checksum(),
            Some(Algorithm::Sha256)
        );
        assert_eq!(
            caps(&["md5", "sha1"]).best_checksum(),
            Some(Algorithm::Sha1)
        );
        assert_eq!(caps(&["md5"]).best_checksum(), Some(Algorithm::Md5));
        assert_eq!(
            caps(&["sha1", "blake3"]).best_checksum(),
            Some(Algorithm::Blake3)
        );
        assert_eq!(caps(&[]).best_checksum(), None);
    }

    #[test]
    fn digests_of_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"xxhello worldyy").unwrap();
        // sha1("hello world") = 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed
        assert_eq!(
            digest_range(&f, 2, 11, Algorithm::Sha1).unwrap(),
            "Kq5sNclPz7QV2+lfQIuc6R7oRu0="
        );
        assert_eq!(metadata(&[("filename", "a b")]), "filename YSBi");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Arbitrary bytes a header value may hold (visible ASCII, tab, obs-text).
        fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..64)
        }

        fn headers(pairs: &[(&'static str, Vec<u8>)]) -> HeaderMap {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(
                    *name,
                    HeaderValue::from_bytes(value).expect("valid value bytes"),
                );
            }
            h
        }

        proptest! {
            #[test]
            fn any_options_answer_is_read_without_panic(
                ext in value_bytes(),
                sums in value_bytes(),
                max in value_bytes(),
            ) {
                let caps = Capabilities::from_headers(&headers(&[
                    ("tus-extension", ext),
                    ("tus-checksum-algorithm", sums),
                    ("tus-max-size", max),
                ]));
                for e in caps.extensions.iter().chain(&caps.checksums) {
                    prop_assert!(!e.is_empty());
                    prop_assert_eq!(e.trim(), e.as_str());
                    prop_assert_eq!(e.to_ascii_lowercase(), e.clone());
                    prop_assert!(!e.contains(','));
                }
                let _ = caps.best_checksum();
            }

            #[test]
            fn announced_lists_and_sizes_are_read_back(
                exts in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,20}", 0..6),
                max in any::<u64>(),
                pad in " {0,3}",
            ) {
                let caps = Capabilities::from_headers(&headers(&[
                    ("tus-extension", exts.join(&format!("{pad},{pad}")).into_bytes()),
                    ("tus-max-size", format!("{pad}{max}{pad}").into_bytes()),
                ]));
                let want: Vec<String> = exts.iter().map(|e| e.to_ascii_lowercase()).collect();
                prop_assert_eq!(caps.extensions, want);
                prop_assert_eq!(caps.max_size, Some(max));
                prop_assert!(caps.checksums.is_empty());
            }

            #[test]
            fn offsets_are_numbers_or_nothing(value in value_bytes(), n in any::<u64>()) {
                let h = headers(&[("upload-offset", value.clone())]);
                let got = header_u64(&h, "upload-offset");
                // Header text is visible ASCII (and tabs); anything else is unreadable.
                let ascii = value.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b));
                let text = String::from_utf8(value).ok().filter(|_| ascii);
                let expect = text.and_then(|t| t.trim().parse::<u64>().ok());
                prop_assert_eq!(got, expect);
                let h = headers(&[("upload-offset", n.to_string().into_bytes())]);
                prop_assert_eq!(header_u64(&h, "upload-offset"), Some(n));
            }

            #[test]
            fn any_location_resolves_or_is_a_fatal_failure(location in ".{0,80}") {
                let tus = TusClient {
                    client: reqwest::Client::new(),
                    endpoint: Url::parse("http://127.0.0.1:1/uploads/").expect("url"),
                    headers: HeaderMap::new(),
                };
                match tus.resolve(&location) {
                    Ok(url) => prop_assert!(!url.as_str().is_empty()),
                    Err(TusFailure::Fatal { status: None, .. }) => {}
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }
    }
}
