//! An IETF resumable-upload test client: creation, append, offset retrieval and cancellation
//! requests to an upload server as one user or another, speaking one draft variant (interop 6,
//! 8, or the final protocol with no interop version). Shared by the in-process conformance
//! tests and the tests against the binary; answers are returned whole for the test to judge.

use reqwest::{Method, RequestBuilder, Response};

/// A client of one upload server speaking one variant of the draft.
pub struct IetfTester {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// `Upload-Draft-Interop-Version` sent with every request; `None` for the final protocol.
    pub interop: Option<&'static str>,
}

impl IetfTester {
    /// A client of the server at `base` speaking interop version `interop` (`None`: final).
    pub fn new(base: String, interop: Option<&'static str>) -> IetfTester {
        IetfTester {
            base,
            client: reqwest::Client::new(),
            interop,
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request as the user of `token` (none when empty), with the interop version.
    pub fn req(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        let mut b = self.client.request(method, self.url(path));
        if !token.is_empty() {
            b = b.bearer_auth(token);
        }
        if let Some(v) = self.interop {
            b = b.header("Upload-Draft-Interop-Version", v);
        }
        b
    }

    /// `POST /uploads/` with `Upload-Complete`, `body` as its content and `extra` headers.
    pub async fn create(
        &self,
        token: &str,
        complete: bool,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Response {
        let mut b = self
            .req(token, Method::POST, "/uploads/")
            .header("Upload-Complete", sf_bool(complete));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(body.to_vec()).send().await.unwrap()
    }

    /// `PATCH` with `application/partial-upload`, `Upload-Offset`, `Upload-Complete` and
    /// `extra` headers.
    pub async fn append(
        &self,
        token: &str,
        url: &str,
        offset: u64,
        complete: bool,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Response {
        let mut b = self
            .req(token, Method::PATCH, url)
            .header("Content-Type", "application/partial-upload")
            .header("Upload-Offset", offset.to_string())
            .header("Upload-Complete", sf_bool(complete));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(body.to_vec()).send().await.unwrap()
    }

    /// Offset retrieval (`HEAD`).
    pub async fn head(&self, token: &str, url: &str) -> Response {
        self.req(token, Method::HEAD, url).send().await.unwrap()
    }

    /// Cancellation (`DELETE`).
    pub async fn delete(&self, token: &str, url: &str) -> Response {
        self.req(token, Method::DELETE, url).send().await.unwrap()
    }
}

/// A structured-field Boolean.
pub fn sf_bool(b: bool) -> &'static str {
    if b { "?1" } else { "?0" }
}

/// A header's value, or "" when absent.
pub fn field(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The members of an `Upload-Limit` value, as `(key, integer)` pairs.
pub fn limits(r: &Response) -> Vec<(String, i64)> {
    field(r, "upload-limit")
        .split(',')
        .filter_map(|m| {
            let (k, v) = m.trim().split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}
