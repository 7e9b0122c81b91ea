//! The IETF resumable-upload client protocol ("Resumable Uploads for HTTP", the final text of
//! draft-ietf-httpbis-resumable-upload, no interop version): limits by OPTIONS
//! (`Upload-Limit`), careful creation (`Upload-Complete: ?0` and `Upload-Length`, no content,
//! the name in `Content-Disposition`), offset retrieval by HEAD, appends by PATCH with
//! `application/partial-upload` (the last one `Upload-Complete: ?1`) and an RFC 9530
//! `Content-Digest`, and cancellation by DELETE. Answers are classified like tus's
//! ([`TusFailure`]), so `ferry put`'s plan, retries and journal serve both protocols.

use super::tus::{
    Capabilities, RemoteState, TusClient, TusFailure, classify, file_stream, network,
};
use crate::limits::RateLimiter;
use crate::verify::Algorithm;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use url::Url;

/// The media type of an append's content.
const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// An endpoint speaking the draft, for one file of `length` bytes (the draft has no parallel
/// parts: one upload resource per file).
#[derive(Debug, Clone)]
pub struct IetfClient {
    /// The endpoint, HTTP client and headers (shared with tus: landing checks, URL resolution).
    pub base: TusClient,
    /// The file's length: the append reaching it carries `Upload-Complete: ?1`.
    pub length: u64,
}

/// A structured-field Item of a response header (`None` when absent or invalid, which the
/// draft says to ignore).
fn item(headers: &HeaderMap, name: &str) -> Option<sfv::BareItem> {
    let raw = headers.get(name)?;
    sfv::Parser::new(raw.as_bytes())
        .parse::<sfv::Item>()
        .ok()
        .map(|i| i.bare_item)
}

fn integer(headers: &HeaderMap, name: &str) -> Option<u64> {
    u64::try_from(i64::from(item(headers, name)?.as_integer()?)).ok()
}

/// `max-size` of an `Upload-Limit` Dictionary.
pub fn max_size(headers: &HeaderMap) -> Option<u64> {
    let raw = headers.get("upload-limit")?;
    let dict: sfv::Dictionary = sfv::Parser::new(raw.as_bytes()).parse().ok()?;
    match dict.get("max-size")? {
        sfv::ListEntry::Item(i) => u64::try_from(i64::from(i.bare_item.as_integer()?)).ok(),
        sfv::ListEntry::InnerList(_) => None,
    }
}

/// `Content-Disposition` naming `name` (RFC 6266 with an RFC 8187 UTF-8 `filename*`).
pub fn disposition(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("inline; filename*=UTF-8''{encoded}")
}

/// `Content-Digest` of a chunk: the RFC 9530 name of `algo` (`None` when it has none there).
fn content_digest(algo: Algorithm, base64: &str) -> Option<HeaderValue> {
    let name = match algo {
        Algorithm::Sha256 => "sha-256",
        Algorithm::Sha512 => "sha-512",
        _ => return None,
    };
    HeaderValue::from_str(&format!("{name}=:{base64}:")).ok()
}

impl IetfClient {
    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        self.base
            .client
            .request(method, url.clone())
            .headers(self.base.headers.clone())
    }

    /// A request without content to `url`; a network failure classified.
    async fn bare(
        &self,
        method: reqwest::Method,
        url: &Url,
    ) -> Result<reqwest::Response, TusFailure> {
        self.request(method, url)
            .send()
            .await
            .map_err(|e| network(url.as_str(), &e))
    }

    /// OPTIONS: the limits (`Upload-Limit: max-size`). Appends carry SHA-256 `Content-Digest`
    /// (a server that does not check them ignores them); there are no parallel parts.
    pub async fn options(&self) -> Result<Capabilities, TusFailure> {
        let endpoint = &self.base.endpoint;
        let res = self.bare(reqwest::Method::OPTIONS, endpoint).await?;
        if res.status().is_server_error() {
            return Err(classify(endpoint.as_str(), res, true).await);
        }
        Ok(Capabilities {
            extensions: vec!["creation".into(), "checksum".into()],
            checksums: vec!["sha-256".into()],
            max_size: max_size(res.headers()),
        })
    }

    /// Creation without content (`Upload-Complete: ?0`): the name in `Content-Disposition`
    /// (`metadata` is tus's `Upload-Metadata`, sent too for a `path` or `overwrite` that
    /// `ferry serve` reads). Returns the upload resource and its offset.
    pub async fn create(
        &self,
        length: Option<u64>,
        metadata: &str,
        name: &str,
        _body: Option<Bytes>,
    ) -> Result<(Url, u64), TusFailure> {
        let url = self.base.endpoint.as_str();
        let mut req = self
            .request(reqwest::Method::POST, &self.base.endpoint)
            .header("Upload-Complete", "?0")
            .header("Content-Length", 0);
        if let Some(len) = length {
            req = req.header("Upload-Length", len);
        }
        if let Ok(v) = HeaderValue::from_str(&disposition(name)) {
            req = req.header("Content-Disposition", v);
        }
        if !metadata.is_empty() {
            req = req.header("Upload-Metadata", metadata);
        }
        let res = req.send().await.map_err(|e| network(url, &e))?;
        if !res.status().is_success() {
            return Err(classify(url, res, true).await);
        }
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| TusFailure::Fatal {
                status: Some(res.status().as_u16()),
                detail: format!("{url}: the server created no upload resource (no Location)"),
            })?
            .to_owned();
        let offset = integer(res.headers(), "upload-offset").unwrap_or(0);
        Ok((self.base.resolve(&location)?, offset))
    }

    /// Offset retrieval (HEAD).
    pub async fn head(&self, upload: &Url) -> Result<RemoteState, TusFailure> {
        let res = self.bare(reqwest::Method::HEAD, upload).await?;
        if !res.status().is_success() {
            return Err(classify(upload.as_str(), res, false).await);
        }
        Ok(RemoteState {
            offset: integer(res.headers(), "upload-offset"),
            length: integer(res.headers(), "upload-length"),
        })
    }

    /// Cancellation (DELETE).
    pub async fn terminate(&self, upload: &Url) -> Result<(), TusFailure> {
        let res = self.bare(reqwest::Method::DELETE, upload).await?;
        if res.status().is_success() || matches!(res.status().as_u16(), 404 | 410) {
            Ok(())
        } else {
            Err(classify(upload.as_str(), res, false).await)
        }
    }

    /// An append: `len` bytes of `file` from `file_offset` at the upload's `offset`, streamed
    /// from disk; `Upload-Complete: ?1` when they end the file. Returns the new offset (the
    /// server's `Upload-Offset`, or the end of the content when a 2xx gives none).
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
        let last = offset + len == self.length;
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
            .header("Upload-Complete", if last { "?1" } else { "?0" })
            .header("Content-Type", PARTIAL_UPLOAD)
            .header("Content-Length", len)
            .body(body);
        if let Some(v) = checksum.and_then(|(algo, digest)| content_digest(algo, &digest)) {
            req = req.header("Content-Digest", v);
        }
        let res = req.send().await.map_err(|e| network(url, &e))?;
        if !res.status().is_success() {
            return Err(classify(url, res, false).await);
        }
        Ok(integer(res.headers(), "upload-offset").unwrap_or(offset + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let mut h = HeaderMap::new();
        h.insert(
            "upload-limit",
            HeaderValue::from_static("min-size=0, max-size=42, x=(1 2)"),
        );
        h.insert("upload-offset", HeaderValue::from_static("7"));
        assert_eq!(max_size(&h), Some(42));
        assert_eq!(integer(&h, "upload-offset"), Some(7));
        h.insert("upload-limit", HeaderValue::from_static("max-size=\"42\""));
        assert_eq!(max_size(&h), None);
        h.insert("upload-offset", HeaderValue::from_static("-1"));
        assert_eq!(integer(&h, "upload-offset"), None);
        assert_eq!(
            disposition("a b/é.txt"),
            "inline; filename*=UTF-8''a%20b%2F%C3%A9%2Etxt"
        );
        assert_eq!(
            content_digest(Algorithm::Sha256, "AAA=").unwrap(),
            "sha-256=:AAA=:"
        );
        assert!(content_digest(Algorithm::Blake3, "AAA=").is_none());
    }
}
