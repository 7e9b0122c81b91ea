//! The file side of `ferry serve`: `GET`/`HEAD` under the served root. This module owns what is
//! particular to a served directory: path safety (through [`crate::safepath`]: no `..`, no
//! absolute paths, no symlink leaving the root, nothing of the state directory), directory
//! redirects and listings (see [`crate::listing`]), content types by extension, and the mapping
//! of errors to answers. A regular file is handed to [`ferry_http::respond`] as a
//! [`LocalFile`], which does ranges, conditionals, `HEAD` and the streamed body; every body
//! byte is counted into [`Metrics::bytes_served`] once the connection has taken it.

use crate::data::{DataStore, Node, ReadError};
use crate::listing;
use crate::metrics::Metrics;
use crate::safepath::{self, PathError};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use ferry_http::responder::{ByteCounter, Options, counted_bytes, set_text};
use std::io;
use std::sync::Arc;

pub use crate::media::content_type;
pub use ferry_http::local::{CHUNK, modified, strong_etag};

/// Answers GET or HEAD for `rel` (percent-decoded path after `/files/`) of the landed files in
/// `data`.
///
/// `base` is the URL path under which `rel` lives (e.g. `/files/`): directory redirects and the
/// links of listings are `base` + the percent-encoded path.
pub async fn respond(
    data: &dyn DataStore,
    rel: &str,
    method: &Method,
    headers: &HeaderMap,
    metrics: &Arc<Metrics>,
    base: &str,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed here; use GET or HEAD"),
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let parts: Vec<String> = match safepath::components(rel) {
        Ok(parts) => parts.into_iter().map(str::to_owned).collect(),
        Err(e) => return refused(&e),
    };
    let slash_form = rel.is_empty() || rel.ends_with('/');
    let head = method == Method::HEAD;
    match data.open(&parts).await {
        Err(e) => open_error(e),
        Ok(Node::File(rep)) => {
            if slash_form {
                return text(
                    StatusCode::NOT_FOUND,
                    "not found: this is a file, not a directory",
                );
            }
            ferry_http::respond(rep, head, headers, &served(metrics))
        }
        Ok(Node::Dir) => {
            if !slash_form {
                let location = format!("{}/", listing::href(base, &parts));
                let mut res = text(
                    StatusCode::MOVED_PERMANENTLY,
                    format!("a directory: see {location}"),
                );
                if let Ok(v) = HeaderValue::from_str(&location) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                return res;
            }
            serve_dir(data, &parts, base, head, headers, metrics).await
        }
    }
}

/// A directory's listing: JSON when the client accepts `application/json`, else HTML.
async fn serve_dir(
    data: &dyn DataStore,
    parts: &[String],
    base: &str,
    head: bool,
    headers: &HeaderMap,
    metrics: &Arc<Metrics>,
) -> Response {
    let json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"));
    let entries = match data.list(parts).await {
        Ok(entries) => entries,
        Err(e) => return open_error(e),
    };
    let (body, content_type) = if json {
        (listing::json(&entries), "application/json")
    } else {
        (
            listing::html(&entries, parts, base),
            "text/html; charset=utf-8",
        )
    };
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !json {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
    }
    if !head {
        *res.body_mut() = counted_bytes(Bytes::from(body), &served(metrics));
    }
    res
}

/// Counts body bytes into [`Metrics::bytes_served`].
struct BytesServed(Arc<Metrics>);

impl ByteCounter for BytesServed {
    fn add(&self, n: u64) {
        Metrics::add(&self.0.bytes_served, n);
    }
}

/// Responder options that count into `metrics`.
fn served(metrics: &Arc<Metrics>) -> Options {
    Options {
        counter: Some(Arc::new(BytesServed(Arc::clone(metrics)))),
        ..Options::default()
    }
}

/// A plain-text answer saying what happened.
fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    set_text(&mut res, &msg.into());
    res
}

fn refused(e: &PathError) -> Response {
    match e {
        PathError::Private | PathError::Escapes | PathError::Empty => {
            text(StatusCode::NOT_FOUND, "not found")
        }
        _ => text(StatusCode::FORBIDDEN, format!("forbidden: {e}")),
    }
}

fn open_error(e: ReadError) -> Response {
    match e {
        ReadError::Refused(e) => refused(&e),
        ReadError::Special => text(StatusCode::FORBIDDEN, format!("forbidden: {e}")),
        ReadError::Io(e) => match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                text(StatusCode::NOT_FOUND, "not found")
            }
            // ELOOP: a symlink cycle, or a symlink swapped in after resolution.
            _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                text(StatusCode::NOT_FOUND, "not found")
            }
            io::ErrorKind::PermissionDenied => {
                text(StatusCode::FORBIDDEN, "forbidden: permission denied")
            }
            _ => internal(&e),
        },
    }
}

fn internal(e: &io::Error) -> Response {
    tracing::warn!("file side: {e}");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;
    use ferry_http::responder::runs_scripts;
    use http_body_util::BodyExt;
    use std::path::PathBuf;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        metrics: Arc<Metrics>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        Fixture {
            _dir: dir,
            root,
            metrics: Arc::new(Metrics::default()),
        }
    }

    impl Fixture {
        async fn get(
            &self,
            rel: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, HeaderMap, Vec<u8>) {
            self.call(Method::GET, rel, headers).await
        }

        async fn call(
            &self,
            method: Method,
            rel: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, HeaderMap, Vec<u8>) {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let data = crate::data::local::LocalDir::reader(&self.root);
            let res = respond(&data, rel, &method, &h, &self.metrics, "/files/").await;
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
            (status, headers, body)
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn hv<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    #[tokio::test]
    async fn whole_file_ranges_and_counting() {
        let f = fixture();
        let content = data(3 * CHUNK + 17);
        std::fs::write(f.root.join("a.bin"), &content).unwrap();
        let (s, h, b) = f.get("a.bin", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, content);
        assert_eq!(hv(&h, "content-length"), content.len().to_string());
        assert_eq!(hv(&h, "accept-ranges"), "bytes");
        assert_eq!(hv(&h, "content-type"), "application/octet-stream");
        assert!(hv(&h, "etag").starts_with('"'));
        assert_eq!(
            f.metrics
                .bytes_served
                .load(std::sync::atomic::Ordering::Relaxed),
            content.len() as u64
        );

        let range = format!("bytes=100-{}", CHUNK + 5);
        let (s, h, b) = f.get("a.bin", &[("range", &range)]).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert_eq!(b, &content[100..CHUNK + 6]);
        assert_eq!(
            hv(&h, "content-range"),
            format!("bytes 100-{}/{}", CHUNK + 5, content.len())
        );

        let (s, h, b) = f.get("a.bin", &[("range", "bytes=0-1,-2")]).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert!(hv(&h, "content-type").starts_with("multipart/byteranges; boundary="));
        assert_eq!(hv(&h, "content-length"), b.len().to_string());
        let n = content.len();
        let tail = [&content[n - 2..], b"\r\n--"].concat();
        assert!(b.windows(tail.len()).any(|w| w == tail));
        assert!(b.ends_with(b"--\r\n"));

        let (s, h, _) = f.get("a.bin", &[("range", "bytes=999999999-")]).await;
        assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(hv(&h, "content-range"), format!("bytes */{n}"));
    }

    #[tokio::test]
    async fn head_has_the_get_headers_and_no_body() {
        let f = fixture();
        std::fs::write(f.root.join("page.html"), b"<p>hi</p>").unwrap();
        let (_, get_h, _) = f.get("page.html", &[]).await;
        let (s, head_h, body) = f.call(Method::HEAD, "page.html", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(get_h, head_h);
        assert_eq!(hv(&head_h, "content-type"), "text/html; charset=utf-8");
        assert_eq!(hv(&head_h, "content-security-policy"), "sandbox");
        let (s, h, _) = f.call(Method::PUT, "page.html", &[]).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(hv(&h, "allow"), "GET, HEAD");
    }

    #[tokio::test]
    async fn conditionals() {
        let f = fixture();
        std::fs::write(f.root.join("c.txt"), b"hello world").unwrap();
        let (_, h, _) = f.get("c.txt", &[]).await;
        let etag = hv(&h, "etag").to_owned();
        let lm = hv(&h, "last-modified").to_owned();
        let weak = format!("W/{etag}");
        let cases: Vec<(Vec<(&str, &str)>, StatusCode)> = vec![
            (vec![("if-none-match", &etag)], StatusCode::NOT_MODIFIED),
            (vec![("if-none-match", &weak)], StatusCode::NOT_MODIFIED),
            (vec![("if-none-match", "\"other\"")], StatusCode::OK),
            (vec![("if-modified-since", &lm)], StatusCode::NOT_MODIFIED),
            (
                vec![("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
                StatusCode::OK,
            ),
            // If-None-Match wins over If-Modified-Since.
            (
                vec![("if-none-match", "\"other\""), ("if-modified-since", &lm)],
                StatusCode::OK,
            ),
            (vec![("if-match", &etag)], StatusCode::OK),
            (vec![("if-match", "*")], StatusCode::OK),
            (
                vec![("if-match", "\"other\"")],
                StatusCode::PRECONDITION_FAILED,
            ),
            (vec![("if-match", &weak)], StatusCode::PRECONDITION_FAILED),
            (
                vec![("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
                StatusCode::PRECONDITION_FAILED,
            ),
            (vec![("if-unmodified-since", &lm)], StatusCode::OK),
            (
                vec![("range", "bytes=0-4"), ("if-range", &etag)],
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                vec![("range", "bytes=0-4"), ("if-range", &lm)],
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                vec![("range", "bytes=0-4"), ("if-range", "\"old\"")],
                StatusCode::OK,
            ),
            (
                vec![("range", "bytes=0-4"), ("if-range", &weak)],
                StatusCode::OK,
            ),
            (
                vec![
                    ("range", "bytes=0-4"),
                    ("if-range", "Thu, 01 Jan 1970 00:00:00 GMT"),
                ],
                StatusCode::OK,
            ),
            (
                vec![("range", "bytes=0-4"), ("range", "bytes=5-6")],
                StatusCode::OK,
            ),
            (vec![("range", "lines=0-4")], StatusCode::OK),
        ];
        for (headers, want) in cases {
            let (s, h, b) = f.get("c.txt", &headers).await;
            assert_eq!(s, want, "{headers:?}");
            match want {
                StatusCode::OK => assert_eq!(b, b"hello world"),
                StatusCode::PARTIAL_CONTENT => assert_eq!(b, b"hello"),
                StatusCode::NOT_MODIFIED => {
                    assert!(b.is_empty());
                    assert_eq!(hv(&h, "etag"), etag);
                }
                _ => {}
            }
        }
        // HEAD ignores Range.
        let (s, h, _) = f
            .call(Method::HEAD, "c.txt", &[("range", "bytes=0-4")])
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(hv(&h, "content-length"), "11");
    }

    #[tokio::test]
    async fn etag_changes_with_the_content() {
        let f = fixture();
        let p = f.root.join("e");
        std::fs::write(&p, b"one").unwrap();
        let a = strong_etag(&std::fs::metadata(&p).unwrap());
        std::fs::write(&p, b"two!").unwrap();
        let b = strong_etag(&std::fs::metadata(&p).unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with('"') && a.ends_with('"') && !a.starts_with("W/"));
    }

    #[tokio::test]
    async fn paths_and_directories() {
        let f = fixture();
        std::fs::create_dir_all(f.root.join("d/sub")).unwrap();
        std::fs::write(f.root.join("d/x.txt"), b"x").unwrap();
        std::fs::create_dir(f.root.join(safepath::STATE_DIR)).unwrap();
        std::fs::write(f.root.join(".ferry/staged"), b"secret").unwrap();
        for (rel, want) in [
            ("../etc/passwd", StatusCode::FORBIDDEN),
            ("/etc/passwd", StatusCode::FORBIDDEN),
            ("d/../../x", StatusCode::FORBIDDEN),
            (".ferry/staged", StatusCode::NOT_FOUND),
            (".ferry/", StatusCode::NOT_FOUND),
            ("missing", StatusCode::NOT_FOUND),
            ("d/x.txt/", StatusCode::NOT_FOUND),
            ("d/x.txt/y", StatusCode::NOT_FOUND),
            ("d/x.txt", StatusCode::OK),
            ("./d//x.txt", StatusCode::OK),
        ] {
            let (s, _, b) = f.get(rel, &[]).await;
            assert_eq!(s, want, "{rel}");
            assert_ne!(b, b"secret");
        }
        let (s, h, _) = f.get("d/sub", &[]).await;
        assert_eq!(s, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(hv(&h, "location"), "/files/d/sub/");
        let (s, h, b) = f.get("", &[("accept", "application/json")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(hv(&h, "content-type"), "application/json");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v[0]["name"], "d");
        let (s, h, b) = f.get("d/", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(hv(&h, "content-type").starts_with("text/html"));
        let html = String::from_utf8(b).unwrap();
        assert!(html.contains("href=\"/files/d/x.txt\""), "{html}");
        assert!(html.contains("href=\"/files/d/sub/\""), "{html}");
        assert!(html.contains("href=\"/files/\""), "{html}");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a.PNG"), "image/png");
        assert_eq!(content_type("a.tar.gz"), "application/gzip");
        assert_eq!(content_type(".bashrc"), "application/octet-stream");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert!(runs_scripts(content_type("x.svg")));
        assert!(!runs_scripts(content_type("x.mp4")));
    }
}
