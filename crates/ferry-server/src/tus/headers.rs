//! Parsing and formatting of the tus 1.0 request headers: `Upload-Metadata`, `Upload-Checksum`,
//! `Upload-Concat`, lengths and offsets, and the hashers behind the checksum extension.

pub use crate::data::Checksum;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
pub use ferry_core::verify::{Algorithm, Hasher};

/// The tus protocol version this server speaks.
pub const TUS_VERSION: &str = "1.0.0";
/// Every extension this server implements, for `Tus-Extension`.
pub const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation,concatenation-unfinished";
/// Checksum algorithms accepted in `Upload-Checksum`, for `Tus-Checksum-Algorithm`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256,sha512,md5,blake3";
/// The only content type a PATCH body may have.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// A header value that breaks the protocol (answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
#[non_exhaustive]
pub struct BadHeader(pub String);

/// `Upload-Metadata`: comma-separated `key base64value` pairs (value optional).
pub fn parse_metadata(raw: &str) -> Result<Vec<(String, Option<String>)>, BadHeader> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for pair in raw.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let mut words = pair.split(' ').filter(|w| !w.is_empty());
        let key = words.next().unwrap_or_default();
        if key.is_empty() || !key.is_ascii() {
            return Err(BadHeader(format!("Upload-Metadata: bad key in {pair:?}")));
        }
        let value = match words.next() {
            None => None,
            Some(b64) => {
                let bytes = STANDARD.decode(b64).map_err(|_| {
                    BadHeader(format!("Upload-Metadata: {key}: value is not base64"))
                })?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    BadHeader(format!("Upload-Metadata: {key}: value is not UTF-8"))
                })?)
            }
        };
        if words.next().is_some() {
            return Err(BadHeader(format!(
                "Upload-Metadata: extra words in {pair:?}"
            )));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(BadHeader(format!("Upload-Metadata: key {key} given twice")));
        }
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// A non-negative decimal integer header (`Upload-Length`, `Upload-Offset`).
pub fn parse_u64(name: &str, raw: &str) -> Result<u64, BadHeader> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadHeader(format!(
            "{name} must be a non-negative integer, got {raw:?}"
        )));
    }
    raw.parse()
        .map_err(|_| BadHeader(format!("{name} is too large: {raw}")))
}

/// `Upload-Concat` of a creation request.
#[derive(Debug, PartialEq, Eq)]
pub enum Concat {
    /// `partial`: a part of a later final upload.
    Partial,
    /// `final;…`: upload ids of the parts, in order (taken from the last path segment of each URL).
    Final(Vec<String>),
}

/// Parses `Upload-Concat`: `partial` or `final;URL URL…` (the upload ids are the URLs' last
/// path segments).
pub fn parse_concat(raw: &str) -> Result<Concat, BadHeader> {
    let raw = raw.trim();
    if raw == "partial" {
        return Ok(Concat::Partial);
    }
    let Some(list) = raw.strip_prefix("final;") else {
        return Err(BadHeader(format!(
            "Upload-Concat must be 'partial' or 'final;URL URL…', got {raw:?}"
        )));
    };
    let mut ids = Vec::new();
    for url in list.split(' ').filter(|u| !u.is_empty()) {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let id = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(BadHeader(format!(
                "Upload-Concat: {url:?} is not an upload URL"
            )));
        }
        ids.push(id.to_owned());
    }
    if ids.is_empty() {
        return Err(BadHeader(
            "Upload-Concat: final needs at least one part".into(),
        ));
    }
    Ok(Concat::Final(ids))
}

/// Why an `Upload-Checksum` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumError {
    /// The algorithm is not supported (answered with 400, as the spec asks).
    #[error("Upload-Checksum: algorithm {0:?} is not supported; use one of {CHECKSUM_ALGORITHMS}")]
    Unsupported(String),
    /// The header is not `ALGORITHM BASE64` with a digest of the algorithm's length.
    #[error("Upload-Checksum: {0}")]
    Malformed(String),
}

/// Parses `Upload-Checksum`: `ALGORITHM BASE64-DIGEST`.
pub fn parse_checksum(raw: &str) -> Result<Checksum, ChecksumError> {
    let mut words = raw.split_whitespace();
    let (Some(name), Some(b64), None) = (words.next(), words.next(), words.next()) else {
        return Err(ChecksumError::Malformed(format!(
            "expected 'ALGORITHM BASE64', got {raw:?}"
        )));
    };
    let algorithm =
        Algorithm::parse(name).ok_or_else(|| ChecksumError::Unsupported(name.to_owned()))?;
    let expected = STANDARD
        .decode(b64)
        .map_err(|_| ChecksumError::Malformed(format!("{b64:?} is not base64")))?;
    let want = algorithm.digest_len();
    if expected.len() != want {
        return Err(ChecksumError::Malformed(format!(
            "a {name} digest has {want} bytes, got {}",
            expected.len()
        )));
    }
    Ok(Checksum {
        algorithm,
        expected,
    })
}

/// A header map of `pairs` (names and values as written), for the request parsers' tests.
#[cfg(test)]
pub(crate) fn map(pairs: &[(&str, &str)]) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(
            m,
            vec![
                ("filename".into(), Some("world_domination_plan.pdf".into())),
                ("is_confidential".into(), None)
            ]
        );
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
        assert_eq!(parse_metadata("").unwrap(), vec![]);
    }

    #[test]
    fn numbers_concat_checksums() {
        assert_eq!(parse_u64("Upload-Length", " 12 "), Ok(12));
        assert!(parse_u64("Upload-Length", "-1").is_err());
        assert!(parse_u64("Upload-Length", "1e3").is_err());
        assert!(parse_u64("Upload-Length", "99999999999999999999999").is_err());
        assert_eq!(parse_concat("partial"), Ok(Concat::Partial));
        assert_eq!(
            parse_concat("final;/uploads/ab12 http://h/uploads/cd34/").unwrap(),
            Concat::Final(vec!["ab12".into(), "cd34".into()])
        );
        assert!(parse_concat("final;").is_err());
        assert!(parse_concat("final;/uploads/a.b").is_err());
        let c = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        let mut h = Hasher::new(Algorithm::Sha1);
        h.update(b"hello world");
        assert_eq!(h.finish(), c.expected);
        assert!(matches!(
            parse_checksum("crc32 AAAA"),
            Err(ChecksumError::Unsupported(_))
        ));
        assert!(matches!(
            parse_checksum("sha1 AAAA"),
            Err(ChecksumError::Malformed(_))
        ));
    }
}
