//! A tus test client: requests to an upload server as one user or another (creation, PATCH,
//! HEAD, metrics), raw-socket PATCHes that stop half-way, and the staged data of an upload on
//! disk. Shared by the in-process conformance tests and the tests against the binary.

use crate::util::wait_until;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, Response, StatusCode};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// A client of one upload server whose served directory is `dir`.
pub struct TusTester {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The served directory (its staged data is under `.ferry/uploads`).
    pub dir: PathBuf,
    /// The HTTP client (replace it after a server restart: pooled connections died).
    pub client: reqwest::Client,
    /// The token `/metrics` is read with.
    pub metrics_token: String,
}

impl TusTester {
    /// A client of the server at `base` serving `dir`.
    pub fn new(base: String, dir: PathBuf, metrics_token: &str) -> TusTester {
        TusTester {
            base,
            dir,
            client: reqwest::Client::new(),
            metrics_token: metrics_token.to_owned(),
        }
    }

    /// The absolute URL of `path` (unchanged when it is absolute already).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// A tus request (with `Tus-Resumable`) as the user of `token`.
    pub fn req(&self, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Tus-Resumable", "1.0.0")
            .bearer_auth(token)
    }

    /// POST /uploads/ with a length (or deferred) and metadata; asserts 201; returns the URL path.
    pub async fn create(&self, token: &str, len: Option<u64>, meta: &[(&str, &str)]) -> String {
        let r = self.post(token, len, meta, &[]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
        location(&r)
    }

    /// POST /uploads/ with a length (or deferred), metadata and `extra` headers.
    pub async fn post(
        &self,
        token: &str,
        len: Option<u64>,
        meta: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Response {
        let mut b = self.req(token, Method::POST, "/uploads/");
        b = match len {
            Some(l) => b.header("Upload-Length", l.to_string()),
            None => b.header("Upload-Defer-Length", "1"),
        };
        if !meta.is_empty() {
            b = b.header("Upload-Metadata", metadata(meta));
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.send().await.unwrap()
    }

    /// PATCH `body` at `offset`.
    pub async fn patch(&self, token: &str, url: &str, offset: u64, body: &[u8]) -> Response {
        self.req(token, Method::PATCH, url)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// A PATCH that must be accepted (204).
    pub async fn patch_ok(&self, token: &str, url: &str, offset: u64, body: &[u8]) {
        let r = self.patch(token, url, offset, body).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    }

    /// HEAD of an upload.
    pub async fn head(&self, token: &str, url: &str) -> Response {
        self.req(token, Method::HEAD, url).send().await.unwrap()
    }

    /// The upload's offset by HEAD (which must answer 200).
    pub async fn offset(&self, token: &str, url: &str) -> u64 {
        let r = self.head(token, url).await;
        assert_eq!(r.status(), StatusCode::OK);
        header(&r, "upload-offset").parse().unwrap()
    }

    /// The staged data file of an upload URL.
    pub fn staged(&self, url: &str) -> PathBuf {
        self.dir
            .join(".ferry/uploads")
            .join(url.rsplit('/').next().unwrap())
    }

    /// The staged data's length, `None` when there is none.
    pub fn staged_len(&self, url: &str) -> Option<u64> {
        std::fs::metadata(self.staged(url)).ok().map(|m| m.len())
    }

    /// Waits (15 s at most) until the staged data of `url` has `len` bytes.
    pub fn wait_staged(&self, url: &str, len: u64) {
        assert!(
            wait_until(Duration::from_secs(15), || self.staged_len(url)
                == Some(len)),
            "staged length stayed at {:?}, expected {len}",
            self.staged_len(url)
        );
    }

    /// A counter or gauge from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let body = self
            .req(&self.metrics_token, Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
            .parse()
            .unwrap()
    }
}

/// `Upload-Metadata` of `meta` (values base64-encoded).
pub fn metadata(meta: &[(&str, &str)]) -> String {
    meta.iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A header's value, which must be there.
pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {r:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// The `Location` of a created upload, which must be an upload URL path.
pub fn location(r: &Response) -> String {
    let loc = header(r, "location");
    assert!(loc.starts_with("/uploads/"), "{loc}");
    loc
}

/// Status and body of an answer, for assertion messages.
pub async fn text(r: Response) -> String {
    let status = r.status();
    format!("{status}: {}", r.text().await.unwrap_or_default())
}

/// The base64 SHA-1 of `data` through the system's `sha1sum`, so a test does not trust the
/// server's own hasher.
pub fn sha1_b64(data: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sha1sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha1sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let digest: Vec<u8> = (0..40)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    STANDARD.encode(digest)
}

/// A PATCH written by hand on a raw socket to 127.0.0.1:`port`: headers announcing `declared`
/// bytes, then only `body`. The connection stays open (holding the upload) until the stream is
/// dropped.
pub fn raw_patch(
    port: u16,
    token: &str,
    url: &str,
    offset: u64,
    declared: usize,
    body: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {token}\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    s
}
