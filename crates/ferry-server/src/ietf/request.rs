//! IETF resumable-upload requests as types: which draft variant a request speaks, and the
//! headers of a creation (`POST /uploads/` with `Upload-Complete`) or an append (`PATCH` with
//! `application/partial-upload`) parsed into the upload core's [`CreateRequest`] and
//! [`AppendRequest`]. Structured fields (RFC 9651) are parsed with `sfv`; a malformed draft
//! field is ignored as the draft says, and then refused as missing where it is required.

use crate::tus::headers::{Algorithm, Checksum, parse_metadata};
use crate::uploads::{AppendRequest, CreateRequest, Refusal, Shape};
use axum::http::{HeaderMap, HeaderName, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub(super) const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
pub(super) const UPLOAD_INCOMPLETE: HeaderName = HeaderName::from_static("upload-incomplete");
pub(super) const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub(super) const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub(super) const UPLOAD_LIMIT: HeaderName = HeaderName::from_static("upload-limit");
/// `Upload-Limit`, for the discovery answer ([`crate::protocol`]).
pub const UPLOAD_LIMIT_NAME: HeaderName = UPLOAD_LIMIT;
pub(super) const INTEROP_VERSION: HeaderName =
    HeaderName::from_static("upload-draft-interop-version");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");

/// The media type of an append's body.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The variant of the draft a request speaks, from `Upload-Draft-Interop-Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Interop version 6: drafts -04 and -05 (tus-js-client 4's `ietf-draft-05`, iOS 17–18).
    Interop6,
    /// Interop version 8: drafts -09 to -12.
    Interop8,
    /// No interop version: the protocol as the working group finished it (draft -12).
    Final,
}

impl Dialect {
    /// The interop version a draft variant echoes, `None` for the final protocol.
    pub fn interop(self) -> Option<&'static str> {
        match self {
            Dialect::Interop6 => Some("6"),
            Dialect::Interop8 => Some("8"),
            Dialect::Final => None,
        }
    }
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::BadRequest(message.into())
}

/// The draft variant of a request: refused when it names an interop version ferry does not
/// speak (3 to 5 used other fields, 7 was short-lived).
pub fn dialect(headers: &HeaderMap) -> Result<Dialect, Refusal> {
    match headers.get(&INTEROP_VERSION).map(|v| v.as_bytes()) {
        None => Ok(Dialect::Final),
        Some(b"6") => Ok(Dialect::Interop6),
        Some(b"8") => Ok(Dialect::Interop8),
        Some(v) => Err(bad(format!(
            "Upload-Draft-Interop-Version {:?} is not spoken here: ferry speaks interop versions 6 \
             and 8 of the resumable-upload draft and the final protocol (no interop version)",
            String::from_utf8_lossy(v)
        ))),
    }
}

/// A structured-field Item of a header; `None` when absent or not a valid Item (the draft:
/// "other values MUST cause the entire header field to be ignored").
fn item(headers: &HeaderMap, name: &HeaderName) -> Option<sfv::BareItem> {
    let raw = headers.get(name)?;
    sfv::Parser::new(raw.as_bytes())
        .parse::<sfv::Item>()
        .ok()
        .map(|i| i.bare_item)
}

/// `Upload-Complete` (a Boolean); `None` when absent or invalid.
pub fn upload_complete(headers: &HeaderMap) -> Option<bool> {
    item(headers, &UPLOAD_COMPLETE)?.as_boolean()
}

/// A non-negative Integer field (`Upload-Offset`, `Upload-Length`); `None` when absent or
/// invalid.
fn integer(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let i = item(headers, name)?.as_integer()?;
    u64::try_from(i64::from(i)).ok()
}

/// Whether a request carries a body.
pub(super) fn has_body(headers: &HeaderMap) -> bool {
    crate::tus::request::has_body(headers)
}

/// The body's announced length (`Content-Length`).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The digest of an RFC 9530 field (`Content-Digest`, `Repr-Digest`): its SHA-512 or
/// SHA-256 member. `None` when absent or naming only algorithms ferry does not compute (the
/// RFC lets a recipient ignore those); a field that is not a Dictionary is refused.
fn digest(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Checksum>, Refusal> {
    let Some(raw) = headers.get(name) else {
        return Ok(None);
    };
    let dict: sfv::Dictionary = sfv::Parser::new(raw.as_bytes())
        .parse()
        .map_err(|e| bad(format!("{name} is not a structured Dictionary: {e}")))?;
    for (key, algorithm) in [
        ("sha-512", Algorithm::Sha512),
        ("sha-256", Algorithm::Sha256),
    ] {
        let Some(sfv::ListEntry::Item(member)) = dict.get(key) else {
            continue;
        };
        let expected = member
            .bare_item
            .as_byte_sequence()
            .ok_or_else(|| bad(format!("{name}: {key} must be a Byte Sequence")))?
            .to_vec();
        if expected.len() != algorithm.digest_len() {
            return Err(bad(format!(
                "{name}: a {key} digest has {} bytes, got {}",
                algorithm.digest_len(),
                expected.len()
            )));
        }
        return Ok(Some(Checksum {
            algorithm,
            expected,
        }));
    }
    Ok(None)
}

/// The upload length a request states: `Upload-Length`, and (with `Upload-Complete: ?1`)
/// `offset` plus the body's `Content-Length`. Both must agree.
fn stated_length(headers: &HeaderMap, offset: u64, complete: bool) -> Result<Option<u64>, Refusal> {
    let declared = integer(headers, &UPLOAD_LENGTH);
    let implied = if !complete {
        None
    } else if has_body(headers) {
        content_length(headers).map(|l| offset.saturating_add(l))
    } else {
        Some(offset)
    };
    match (declared, implied) {
        (Some(d), Some(i)) if d != i => Err(Refusal::InconsistentLength(format!(
            "Upload-Length {d} disagrees with the {i} bytes that Upload-Complete: ?1 and \
             Content-Length imply"
        ))),
        (d, i) => Ok(d.or(i)),
    }
}

/// `Upload-Complete`, which a creation and an append must carry.
fn required_complete(headers: &HeaderMap) -> Result<bool, Refusal> {
    if headers.contains_key(&UPLOAD_INCOMPLETE) && !headers.contains_key(&UPLOAD_COMPLETE) {
        return Err(bad(
            "Upload-Incomplete belongs to interop versions 3 to 5, which ferry does not speak; \
             send Upload-Complete (interop 6, 8 or the final protocol)",
        ));
    }
    upload_complete(headers).ok_or_else(|| bad("send Upload-Complete: ?1 or ?0 (a Boolean)"))
}

/// The metadata as tus would have sent it, and its pairs.
type Naming = (Option<String>, Vec<(String, Option<String>)>);

/// The name the creation asks for: `Content-Disposition`'s filename (RFC 6266), else
/// tus-js-client's `Upload-Metadata` (`filename`, `path`, `overwrite`, as tus reads them).
fn naming(headers: &HeaderMap) -> Result<Naming, Refusal> {
    let text = |name: &HeaderName| {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| bad(format!("{name} is not valid text")))
            })
            .transpose()
    };
    let metadata = text(&UPLOAD_METADATA)?.map(str::to_owned);
    let mut fields =
        parse_metadata(metadata.as_deref().unwrap_or_default()).map_err(|e| bad(e.0))?;
    let Some(disposition) = text(&header::CONTENT_DISPOSITION)? else {
        return Ok((metadata, fields));
    };
    match ferry_core::naming::from_content_disposition(disposition) {
        Some(name) => {
            fields.retain(|(k, _)| k != "filename");
            fields.push(("filename".into(), Some(name.clone())));
            let tus_form = format!("filename {}", STANDARD.encode(&name));
            let metadata = match metadata {
                Some(m) if !m.trim().is_empty() => Some(format!("{m},{tus_form}")),
                _ => Some(tus_form),
            };
            // The tus form is reported back on a tus HEAD; a filename key given twice is not.
            let metadata = metadata.filter(|m| parse_metadata(m).is_ok());
            Ok((metadata, fields))
        }
        None if disposition.to_ascii_lowercase().contains("filename") => Err(bad(format!(
            "Content-Disposition {disposition:?} names no usable file name"
        ))),
        None => Ok((metadata, fields)),
    }
}

/// Parses a creation request (`POST /uploads/` with `Upload-Complete`).
pub fn create(headers: &HeaderMap) -> Result<CreateRequest, Refusal> {
    let complete = required_complete(headers)?;
    if integer(headers, &UPLOAD_OFFSET).is_some_and(|o| o != 0) {
        return Err(bad(
            "a creation request starts at offset 0: drop Upload-Offset",
        ));
    }
    let length = stated_length(headers, 0, complete)?;
    let (metadata, fields) = naming(headers)?;
    let body = has_body(headers);
    let mut checksum = digest(headers, &CONTENT_DIGEST)?;
    if checksum.is_none() && complete {
        // The whole representation is this request's content: its digest is the content's.
        checksum = digest(headers, &REPR_DIGEST)?;
    }
    Ok(CreateRequest {
        shape: Shape::Normal,
        length,
        metadata,
        fields,
        append: AppendRequest {
            offset: 0,
            length: None,
            checksum: checksum.filter(|_| body),
            body_length: content_length(headers),
            complete,
        },
    })
}

/// Parses an append (`PATCH /uploads/ID`).
pub fn append(headers: &HeaderMap) -> Result<AppendRequest, Refusal> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(PARTIAL_UPLOAD)) {
        return Err(Refusal::MediaType(PARTIAL_UPLOAD));
    }
    let offset = integer(headers, &UPLOAD_OFFSET)
        .ok_or_else(|| bad("an append needs Upload-Offset (a non-negative Integer)"))?;
    let complete = required_complete(headers)?;
    Ok(AppendRequest {
        offset,
        length: stated_length(headers, offset, complete)?,
        checksum: digest(headers, &CONTENT_DIGEST)?,
        body_length: content_length(headers),
        complete,
    })
}

/// Interop 6 (draft -05) forbids upload fields on offset retrieval (`Upload-Offset`,
/// `Upload-Complete`, `Upload-Length`) and cancellation (`Upload-Offset`, `Upload-Complete`):
/// such a request MUST get 400.
pub fn check_bare(headers: &HeaderMap, with_length: bool) -> Result<(), Refusal> {
    let forbidden = [UPLOAD_OFFSET, UPLOAD_COMPLETE, UPLOAD_LENGTH];
    let checked = if with_length { 3 } else { 2 };
    match forbidden[..checked]
        .iter()
        .find(|n| headers.contains_key(*n))
    {
        Some(n) => Err(bad(format!("this request takes no {n} header"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use crate::tus::headers::map as headers;

    #[test]
    fn dialects() {
        assert_eq!(dialect(&headers(&[])).unwrap(), Dialect::Final);
        let six = headers(&[("upload-draft-interop-version", "6")]);
        assert_eq!(dialect(&six).unwrap(), Dialect::Interop6);
        let eight = headers(&[("upload-draft-interop-version", "8")]);
        assert_eq!(dialect(&eight).unwrap(), Dialect::Interop8);
        for v in ["3", "5", "7", "x"] {
            let h = headers(&[("upload-draft-interop-version", v)]);
            assert_eq!(dialect(&h).unwrap_err().status().as_u16(), 400);
        }
    }

    #[test]
    fn creations() {
        let r = create(&headers(&[
            ("upload-complete", "?1"),
            ("content-length", "5"),
            ("upload-length", "5"),
            (
                "content-disposition",
                "inline; filename=\"a b.jpg\"; filename*=UTF-8''%C3%A9t%C3%A9.jpg",
            ),
        ]))
        .unwrap();
        assert_eq!(r.length, Some(5));
        assert!(r.append.complete);
        assert_eq!(r.fields, vec![("filename".into(), Some("été.jpg".into()))]);
        let r = create(&headers(&[
            ("upload-complete", "?0"),
            ("upload-length", "9"),
            ("upload-metadata", "filename YS50eHQ="),
        ]))
        .unwrap();
        assert_eq!((r.length, r.append.complete), (Some(9), false));
        assert_eq!(r.metadata.as_deref(), Some("filename YS50eHQ="));
        // Chunked with ?1: the length is known at the end.
        let r = create(&headers(&[
            ("upload-complete", "?1"),
            ("transfer-encoding", "chunked"),
        ]))
        .unwrap();
        assert_eq!(r.length, None);
        // No content and ?1: an empty representation.
        let r = create(&headers(&[("upload-complete", "?1")])).unwrap();
        assert_eq!(r.length, Some(0));
        for (bad, status) in [
            (&[("upload-complete", "1")][..], 400),
            (
                &[
                    ("upload-complete", "?1"),
                    ("content-length", "5"),
                    ("upload-length", "6"),
                ],
                400,
            ),
            (&[("upload-incomplete", "?0")], 400),
            (&[("upload-complete", "?0"), ("upload-offset", "3")], 400),
            (
                &[
                    ("upload-complete", "?0"),
                    ("content-disposition", "inline; filename=\"..\""),
                ],
                400,
            ),
        ] {
            let e = create(&headers(bad)).unwrap_err();
            assert_eq!(e.status().as_u16(), status, "{bad:?}: {e}");
        }
        let e = create(&headers(&[
            ("upload-complete", "?1"),
            ("content-length", "5"),
            ("upload-length", "6"),
        ]))
        .unwrap_err();
        assert!(matches!(e, Refusal::InconsistentLength(_)), "{e}");
    }

    #[test]
    fn appends_and_digests() {
        let ct = ("content-type", PARTIAL_UPLOAD);
        let r = append(&headers(&[
            ct,
            ("upload-offset", "5"),
            ("upload-complete", "?1"),
            ("content-length", "7"),
            (
                "content-digest",
                "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, md5=:AAAA:",
            ),
        ]))
        .unwrap();
        assert_eq!((r.offset, r.length, r.complete), (5, Some(12), true));
        assert_eq!(r.checksum.unwrap().algorithm, Algorithm::Sha256);
        let r = append(&headers(&[
            ct,
            ("upload-offset", "5"),
            ("upload-complete", "?0"),
            ("content-digest", "unixsum=:AAAA:"),
        ]))
        .unwrap();
        assert!(r.checksum.is_none() && r.length.is_none());
        for (h, status) in [
            (
                &[("upload-offset", "0"), ("upload-complete", "?0")][..],
                415,
            ),
            (&[ct, ("upload-complete", "?0")], 400),
            (
                &[ct, ("upload-offset", "-1"), ("upload-complete", "?0")],
                400,
            ),
            (&[ct, ("upload-offset", "0")], 400),
            (
                &[
                    ct,
                    ("upload-offset", "0"),
                    ("upload-complete", "?0"),
                    ("content-digest", "sha-256=:AAAA:"),
                ],
                400,
            ),
            (
                &[
                    ct,
                    ("upload-offset", "0"),
                    ("upload-complete", "?0"),
                    ("content-digest", "(("),
                ],
                400,
            ),
        ] {
            assert_eq!(
                append(&headers(h)).unwrap_err().status().as_u16(),
                status,
                "{h:?}"
            );
        }
        assert!(check_bare(&headers(&[("upload-length", "1")]), false).is_ok());
        assert!(check_bare(&headers(&[("upload-length", "1")]), true).is_err());
    }

    fn arbitrary_headers() -> impl Strategy<Value = HeaderMap> {
        let name = prop::sample::select(vec![
            "upload-complete",
            "upload-incomplete",
            "upload-offset",
            "upload-length",
            "upload-metadata",
            "upload-draft-interop-version",
            "content-disposition",
            "content-digest",
            "repr-digest",
            "content-length",
            "content-type",
            "transfer-encoding",
        ]);
        let value = prop_oneof![
            "[ -~]{0,40}",
            "[0-9]{1,20}",
            "\\?[01]",
            Just(PARTIAL_UPLOAD.to_owned()),
            "(sha-256|sha-512|md5)=:[A-Za-z0-9+/=]{0,90}:",
            "(inline|attachment); filename\\*?=[ -~]{0,30}",
        ];
        prop::collection::vec((name, value), 0..8).prop_map(|pairs| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.append(HeaderName::from_static(k), v);
                }
            }
            h
        })
    }

    proptest! {
        /// Any headers parse or are refused as a client error; nothing panics, and what parses
        /// is consistent.
        #[test]
        fn any_headers_parse_or_are_refused(h in arbitrary_headers()) {
            let _ = dialect(&h);
            match create(&h) {
                Ok(r) => prop_assert!(upload_complete(&h) == Some(r.append.complete)),
                Err(e) => prop_assert!(e.status().is_client_error(), "{e}"),
            }
            match append(&h) {
                Ok(r) => {
                    prop_assert!(h.contains_key("upload-offset"));
                    if let Some(len) = r.length {
                        prop_assert!(len >= r.offset || !r.complete);
                    }
                }
                Err(e) => prop_assert!(e.status().is_client_error(), "{e}"),
            }
        }
    }
}
