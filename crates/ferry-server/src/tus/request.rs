//! tus requests as types: the headers of a creation request and of a PATCH parsed into the
//! upload core's [`CreateRequest`] and [`AppendRequest`], every malformed or contradictory
//! header refused here, before the core is asked anything.

use super::headers::{self, Concat, OFFSET_OCTET_STREAM};
use crate::uploads::{AppendRequest, CreateRequest, Refusal, Shape};
use axum::http::{HeaderMap, HeaderName, header};

pub(super) const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub(super) const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub(super) const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
pub(super) const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
pub(super) const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::BadRequest(message.into())
}

/// A header's value as text; `None` when absent.
fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Refusal> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| bad(format!("{name} is not valid text"))),
    }
}

/// A non-negative integer header; `None` when absent.
fn number(headers: &HeaderMap, name: &HeaderName, label: &str) -> Result<Option<u64>, Refusal> {
    text(headers, name)?
        .map(|v| headers::parse_u64(label, v).map_err(|e| bad(e.0)))
        .transpose()
}

/// Refuses a body whose media type is not tus's.
fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(header::CONTENT_TYPE) {
        Some(v)
            if v.as_bytes()
                .eq_ignore_ascii_case(OFFSET_OCTET_STREAM.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(Refusal::MediaType(OFFSET_OCTET_STREAM)),
    }
}

/// How a body is appended: its checksum and announced length.
fn append_fields(headers: &HeaderMap, offset: u64) -> Result<AppendRequest, Refusal> {
    let checksum = text(headers, &UPLOAD_CHECKSUM)?
        .map(|raw| headers::parse_checksum(raw).map_err(|e| bad(e.to_string())))
        .transpose()?;
    let body_length = text(headers, &header::CONTENT_LENGTH)?.and_then(|v| v.trim().parse().ok());
    Ok(AppendRequest {
        offset,
        length: None,
        checksum,
        body_length,
        complete: false,
    })
}

/// Whether a creation request carries a body (creation-with-upload).
pub(crate) fn has_body(headers: &HeaderMap) -> bool {
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    !empty
        && (headers.contains_key(header::CONTENT_LENGTH)
            || headers.contains_key(header::TRANSFER_ENCODING))
}

/// Parses a creation request (`POST /uploads/`).
pub fn create(headers: &HeaderMap) -> Result<CreateRequest, Refusal> {
    let concat = text(headers, &UPLOAD_CONCAT)?
        .map(headers::parse_concat)
        .transpose()
        .map_err(|e| bad(e.0))?;
    let length = number(headers, &UPLOAD_LENGTH, "Upload-Length")?;
    let deferred = match text(headers, &UPLOAD_DEFER_LENGTH)? {
        None => false,
        Some("1") => true,
        Some(v) => return Err(bad(format!("Upload-Defer-Length must be 1, got {v:?}"))),
    };
    let shape = match concat {
        None => Shape::Normal,
        Some(Concat::Partial) => Shape::Partial,
        Some(Concat::Final(parts)) => Shape::Final(parts),
    };
    let is_final = matches!(shape, Shape::Final(_));
    match (length, deferred, is_final) {
        (Some(_), true, _) => {
            return Err(bad("send Upload-Length or Upload-Defer-Length, not both"));
        }
        (Some(_), _, true) => {
            return Err(bad(
                "a final upload takes no Upload-Length: it is the sum of its parts",
            ));
        }
        (None, false, false) => return Err(bad("send Upload-Length (or Upload-Defer-Length: 1)")),
        _ => {}
    }
    let metadata = text(headers, &UPLOAD_METADATA)?.map(str::to_owned);
    let fields =
        headers::parse_metadata(metadata.as_deref().unwrap_or_default()).map_err(|e| bad(e.0))?;
    let append = if has_body(headers) {
        check_content_type(headers)?;
        append_fields(headers, 0)?
    } else {
        AppendRequest::default()
    };
    Ok(CreateRequest {
        shape,
        length,
        metadata,
        fields,
        append,
    })
}

/// Parses a PATCH.
pub fn append(headers: &HeaderMap) -> Result<AppendRequest, Refusal> {
    check_content_type(headers)?;
    let offset = number(headers, &UPLOAD_OFFSET, "Upload-Offset")?
        .ok_or_else(|| bad("PATCH needs an Upload-Offset header"))?;
    let mut req = append_fields(headers, offset)?;
    req.length = number(headers, &UPLOAD_LENGTH, "Upload-Length")?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use crate::tus::headers::map as headers;

    #[test]
    fn creation_requests() {
        let r = create(&headers(&[
            ("upload-length", "10"),
            ("upload-metadata", "filename YS50eHQ=,overwrite dHJ1ZQ=="),
        ]))
        .unwrap();
        assert_eq!(r.shape, Shape::Normal);
        assert_eq!(r.length, Some(10));
        assert_eq!(r.fields[0], ("filename".into(), Some("a.txt".into())));
        assert!(create(&headers(&[("upload-defer-length", "1")])).is_ok());
        for bad in [
            &[][..],
            &[("upload-length", "1"), ("upload-defer-length", "1")],
            &[("upload-defer-length", "2")],
            &[("upload-length", "-1")],
            &[
                ("upload-concat", "final;/uploads/a"),
                ("upload-length", "3"),
            ],
            &[("upload-length", "3"), ("upload-metadata", "k !!")],
        ] {
            let e = create(&headers(bad)).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{bad:?}: {e}");
        }
        let with_body = headers(&[("upload-length", "3"), ("content-length", "3")]);
        assert_eq!(create(&with_body).unwrap_err().status().as_u16(), 415);
        let r = create(&headers(&[
            ("upload-concat", "final;/uploads/a /uploads/b"),
            ("upload-metadata", ""),
        ]))
        .unwrap();
        assert_eq!(r.shape, Shape::Final(vec!["a".into(), "b".into()]));
        assert_eq!(r.length, None);
    }

    #[test]
    fn patches() {
        let ct = ("content-type", OFFSET_OCTET_STREAM);
        let r = append(&headers(&[
            ct,
            ("upload-offset", "5"),
            ("content-length", "7"),
            ("upload-checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
        ]))
        .unwrap();
        assert_eq!((r.offset, r.body_length, r.length), (5, Some(7), None));
        assert!(r.checksum.is_some());
        assert_eq!(
            append(&headers(&[("upload-offset", "0")]))
                .unwrap_err()
                .status()
                .as_u16(),
            415
        );
        assert_eq!(append(&headers(&[ct])).unwrap_err().status().as_u16(), 400);
        let e = append(&headers(&[
            ct,
            ("upload-offset", "0"),
            ("upload-checksum", "crc32 AAAA"),
        ]));
        assert_eq!(e.unwrap_err().status().as_u16(), 400);
        let r = append(&headers(&[
            ct,
            ("upload-offset", "0"),
            ("upload-length", "9"),
        ]))
        .unwrap();
        assert_eq!(r.length, Some(9));
    }

    /// Headers drawn from the tus vocabulary with arbitrary values.
    fn arbitrary_headers() -> impl Strategy<Value = HeaderMap> {
        let name = prop::sample::select(vec![
            "upload-length",
            "upload-defer-length",
            "upload-offset",
            "upload-metadata",
            "upload-concat",
            "upload-checksum",
            "content-length",
            "content-type",
            "transfer-encoding",
        ]);
        let value = prop_oneof![
            "[ -~]{0,40}",
            "[0-9]{1,25}",
            Just(OFFSET_OCTET_STREAM.to_owned()),
            "(partial|final;(/uploads/[a-z0-9]{0,6} ?){0,3})",
            "(sha1|md5|blake3|crc32) [A-Za-z0-9+/=]{0,50}",
            "([a-z]{1,5}( [A-Za-z0-9+/=]{0,12})?,?){0,4}",
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
            match create(&h) {
                Ok(r) => {
                    if matches!(r.shape, Shape::Final(_)) {
                        prop_assert!(r.length.is_none());
                    }
                }
                Err(e) => prop_assert!(e.status().is_client_error(), "{e}"),
            }
            match append(&h) {
                Ok(_) => prop_assert!(h.contains_key("upload-offset")),
                Err(e) => prop_assert!(e.status().is_client_error(), "{e}"),
            }
        }

        /// Metadata round-trips: what a client encodes, the server reads back (an empty value
        /// is sent as no value, so values here are not empty).
        #[test]
        fn metadata_round_trips(pairs in prop::collection::btree_map("[a-z][a-z0-9_]{0,8}", prop::option::of("\\PC{1,20}"), 0..5)) {
            use base64::Engine;
            let raw = pairs
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)),
                    None => k.clone(),
                })
                .collect::<Vec<_>>()
                .join(",");
            let parsed = headers::parse_metadata(&raw).unwrap();
            let want: Vec<(String, Option<String>)> = pairs.into_iter().collect();
            prop_assert_eq!(parsed, want);
        }

        /// Arbitrary metadata, concat and checksum values never panic.
        #[test]
        fn raw_values_never_panic(raw in "\\PC{0,80}") {
            let _ = headers::parse_metadata(&raw);
            let _ = headers::parse_concat(&raw);
            let _ = headers::parse_checksum(&raw);
            let _ = headers::parse_u64("Upload-Length", &raw);
        }
    }
}
