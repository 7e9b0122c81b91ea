//! Which upload protocol a request to `/uploads/` speaks, decided in one place: tus 1.0 when it
//! carries `Tus-Resumable`; the IETF resumable-upload draft when it carries the draft's fields
//! (`Upload-Complete`, `Upload-Draft-Interop-Version`, or the old `Upload-Incomplete`), or is a
//! HEAD or DELETE of an upload with neither (a client of the final protocol sends nothing
//! else); tus otherwise, whose version check then answers 412 as before. An OPTIONS with no
//! marker at all is discovery by either: tus answers, with the draft's `Upload-Limit` added.
//! Other paths go to the rest of the site untouched.

use crate::ietf;
use crate::uploads::Uploads;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Method};
use std::convert::Infallible;
use std::sync::Arc;
use tower::ServiceExt;

/// The protocols of the upload endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// tus 1.0 ([`crate::tus`]).
    Tus,
    /// The IETF draft ([`crate::ietf`]).
    Ietf,
    /// An OPTIONS that names neither: tus's answer plus the draft's limits.
    Discovery,
}

/// The protocol of a request to the upload endpoint. `resource` says whether the path names an
/// upload (`/uploads/ID`) rather than the endpoint itself.
pub fn of(method: &Method, headers: &HeaderMap, resource: bool) -> Protocol {
    const DRAFT_FIELDS: [&str; 3] = [
        "upload-complete",
        "upload-draft-interop-version",
        "upload-incomplete",
    ];
    if headers.contains_key("tus-resumable") {
        return Protocol::Tus;
    }
    if DRAFT_FIELDS.iter().any(|f| headers.contains_key(*f)) {
        return Protocol::Ietf;
    }
    match *method {
        Method::HEAD | Method::DELETE if resource => Protocol::Ietf,
        Method::OPTIONS => Protocol::Discovery,
        _ => Protocol::Tus,
    }
}

/// Where a request path points: the upload endpoint (`/uploads`, `/uploads/`), one upload
/// resource (`/uploads/ID`), or elsewhere (`None`).
fn upload_path(path: &str) -> Option<bool> {
    match path.strip_prefix("/uploads") {
        Some("" | "/") => Some(false),
        Some(rest) => rest
            .strip_prefix('/')
            .is_some_and(|id| !id.contains('/'))
            .then_some(true),
        None => None,
    }
}

/// `site` (which serves tus under `/uploads`) with the draft's requests to `/uploads` sent to
/// the IETF front end instead. The caller adds authentication around the result.
pub fn router(site: Router, uploads: Arc<Uploads>) -> Router {
    let max_size = uploads.policy().max_size;
    let ietf = ietf::router(uploads);
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let (site, ietf) = (site.clone(), ietf.clone());
        async move {
            let Some(resource) = upload_path(req.uri().path()) else {
                return site.oneshot(req).await;
            };
            Ok::<_, Infallible>(match of(req.method(), req.headers(), resource) {
                Protocol::Tus => site.oneshot(req).await?,
                Protocol::Ietf => ietf.oneshot(req).await?,
                Protocol::Discovery => {
                    let mut res = site.oneshot(req).await?;
                    res.headers_mut().insert(
                        ietf::request::UPLOAD_LIMIT_NAME,
                        ietf::response::limits(ietf::request::Dialect::Final, max_size, None),
                    );
                    res
                }
            })
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(names: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for n in names {
            m.insert(
                axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_static("1"),
            );
        }
        m
    }

    #[test]
    fn one_decision() {
        use Protocol::*;
        let tus_and_draft = h(&["tus-resumable", "upload-complete"]);
        assert_eq!(of(&Method::PATCH, &tus_and_draft, true), Tus);
        assert_eq!(of(&Method::POST, &h(&["upload-complete"]), false), Ietf);
        let interop = h(&["upload-draft-interop-version"]);
        assert_eq!(of(&Method::HEAD, &interop, true), Ietf);
        assert_eq!(of(&Method::HEAD, &h(&[]), true), Ietf);
        assert_eq!(of(&Method::DELETE, &h(&[]), true), Ietf);
        assert_eq!(of(&Method::GET, &h(&[]), true), Tus);
        assert_eq!(of(&Method::POST, &h(&[]), false), Tus);
        assert_eq!(of(&Method::PATCH, &h(&[]), true), Tus);
        assert_eq!(of(&Method::OPTIONS, &h(&[]), false), Discovery);
        assert_eq!(of(&Method::OPTIONS, &interop, false), Ietf);
        assert_eq!(upload_path("/uploads"), Some(false));
        assert_eq!(upload_path("/uploads/"), Some(false));
        assert_eq!(upload_path("/uploads/abc"), Some(true));
        assert_eq!(upload_path("/uploads/a/b"), None);
        assert_eq!(upload_path("/uploadsx"), None);
        assert_eq!(upload_path("/files/uploads"), None);
    }
}
