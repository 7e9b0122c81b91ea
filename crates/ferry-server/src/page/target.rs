//! `GET /page/target?path=…`: the pre-upload check. What is at a target path for the signed-in
//! user ([`TargetStatus`] as JSON, with `state` one of `free`, `exists`, `unfinished`, `busy`,
//! `directory`), plus the `fingerprint` the page stored in the metadata of an unfinished
//! upload, so the page resumes it only for the same file.

use super::PageState;
use crate::auth::User;
use crate::tus::headers::parse_metadata;
use crate::uploads::TargetStatus;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// The query of a pre-upload check.
#[derive(Debug, Deserialize)]
pub struct TargetQuery {
    /// The target path, relative, with folders (as the upload's metadata `path` will be).
    pub path: String,
}

/// Answers the pre-upload check (a refusal, e.g. an invalid path, with its status and message).
pub async fn target(
    State(s): State<Arc<PageState>>,
    Extension(user): Extension<User>,
    Query(q): Query<TargetQuery>,
) -> Response {
    match s.uploads.target_status(&user, &q.path).await {
        Ok(status) => {
            let mut json = serde_json::to_value(&status).unwrap_or_default();
            if let TargetStatus::Unfinished { metadata, .. } = &status
                && let Some(obj) = json.as_object_mut()
            {
                obj.insert(
                    "fingerprint".into(),
                    fingerprint(metadata.as_deref()).into(),
                );
                obj.remove("metadata");
            }
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                json.to_string(),
            )
                .into_response()
        }
        Err(refusal) => (refusal.status(), format!("{refusal}\n")).into_response(),
    }
}

/// The `fingerprint` value of tus metadata, if it has one.
fn fingerprint(metadata: Option<&str>) -> Option<String> {
    parse_metadata(metadata?)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "fingerprint")
        .and_then(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn the_fingerprint_is_read_from_metadata() {
        // "a.bin:5:1700" and "a.bin".
        let meta = "filename YS5iaW4=,fingerprint YS5iaW46NToxNzAw,overwrite";
        assert_eq!(fingerprint(Some(meta)).as_deref(), Some("a.bin:5:1700"));
        assert_eq!(fingerprint(Some("filename YS5iaW4=")), None);
        assert_eq!(fingerprint(Some("not base64 !!")), None);
        assert_eq!(fingerprint(None), None);
    }
}
