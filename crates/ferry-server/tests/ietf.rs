//! Conformance to "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload), in
//! process: the real router and upload core over the in-memory state store and a local data
//! directory, on a real socket. Written from the draft texts: every server MUST of the final
//! protocol (-12) and interop version 8 (-09 to -11), and of interop 6 (-05) where it differs
//! (tus-js-client's `ietf-draft-05`); plus the rules ferry keeps for every protocol
//! (ownership, size limit, traversal, `--public`) and the one decision between tus and the
//! draft on the shared `/uploads/` endpoint.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_server::data::local::LocalDir;
use ferry_server::store::memory::MemoryStore;
use ferry_server::{Auth, Server, ServerConfig};
use ferry_testkit::ietf::{IetfTester, field, limits};
use ferry_testkit::util::random_bytes;
use reqwest::{Method, Response, StatusCode};
use sha2::Digest;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

const ANN: &str = "token-of-ann";
const BOB: &str = "token-of-bob";
const PROBLEMS: &str = "https://iana.org/assignments/http-problem-types";

/// A server over a temp dir (stopped when dropped) and a client per draft variant.
struct Env {
    dir: PathBuf,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _tmp: tempfile::TempDir,
}

impl Env {
    /// Users ann and bob (or `--public`), with an optional size limit.
    async fn start(public: bool, max_upload_size: Option<u64>) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let auth = if public {
            Auth::Public
        } else {
            Auth::parse_users(&format!("ann {ANN}\nbob {BOB}\n")).unwrap()
        };
        let mut config = ServerConfig::new(&dir, auth);
        config.max_upload_size = max_upload_size;
        let data = LocalDir::open(&dir).unwrap();
        let server = Server::with_stores(
            dir.clone(),
            Arc::new(MemoryStore::new()),
            Arc::new(data),
            &config,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(listener, async move {
            let _ = stopped.await;
        }));
        Env {
            dir,
            port,
            stop: Some(stop),
            _tmp: tmp,
        }
    }

    /// A client speaking interop version `interop` (`None`: the final protocol).
    fn client(&self, interop: Option<&'static str>) -> IetfTester {
        IetfTester::new(format!("http://127.0.0.1:{}", self.port), interop)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The variants every MUST of the final protocol is checked in.
const LATEST: [Option<&str>; 2] = [None, Some("8")];

async fn problem(r: Response) -> serde_json::Value {
    assert_eq!(field(&r, "content-type"), "application/problem+json");
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// An append as ann whose content is chunked (no Content-Length): `parts`, one after another.
async fn chunked_append(
    c: &IetfTester,
    url: &str,
    offset: u64,
    complete: bool,
    parts: [&'static [u8]; 2],
) -> Response {
    let chunks = parts.map(Ok::<_, std::io::Error>);
    c.req(ANN, Method::PATCH, url)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", offset.to_string())
        .header("Upload-Complete", if complete { "?1" } else { "?0" })
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap()
}

fn location(r: &Response) -> String {
    let loc = field(r, "location");
    assert!(loc.starts_with("/uploads/"), "{r:?}");
    loc
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_upload_in_the_creation_request() {
    let env = Env::start(false, None).await;
    for (i, interop) in LATEST.into_iter().chain([Some("6")]).enumerate() {
        let c = env.client(interop);
        let data = random_bytes(70_000, i as u64);
        let name = format!("été {i}.bin");
        let disposition = format!(
            "inline; filename=\"plain.bin\"; filename*=UTF-8''{}",
            percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
        );
        let r = c
            .create(
                ANN,
                true,
                &data,
                &[
                    ("Content-Disposition", &disposition),
                    ("Upload-Length", &data.len().to_string()),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{interop:?}");
        assert_eq!(field(&r, "upload-complete"), "?1");
        assert_eq!(field(&r, "upload-offset"), data.len().to_string());
        assert_eq!(
            field(&r, "upload-draft-interop-version"),
            interop.unwrap_or("")
        );
        let url = location(&r);
        assert_eq!(std::fs::read(env.dir.join(&name)).unwrap(), data);
        // The resource stays to be asked: complete, at its length.
        let h = c.head(ANN, &url).await;
        assert_eq!(h.status(), StatusCode::NO_CONTENT);
        assert_eq!(field(&h, "upload-complete"), "?1");
        assert_eq!(field(&h, "upload-offset"), data.len().to_string());
        assert_eq!(field(&h, "upload-length"), data.len().to_string());
    }
}

/// Example 2 of the draft: parts sent serially, each acknowledged; offset retrieval in between
/// carries every field it MUST; the last part completes the upload.
#[tokio::test(flavor = "multi_thread")]
async fn upload_as_a_series_of_parts() {
    let env = Env::start(false, Some(1 << 20)).await;
    let data = random_bytes(30_000, 7);
    for interop in LATEST {
        let c = env.client(interop);
        let name = format!("parts-{}.bin", interop.unwrap_or("final"));
        let r = c
            .create(
                ANN,
                false,
                &data[..10_000],
                &[
                    ("Upload-Length", "30000"),
                    ("Content-Disposition", &format!("inline; filename={name}")),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(field(&r, "upload-complete"), "?0");
        assert_eq!(field(&r, "upload-offset"), "10000");
        // Incomplete creation: Location and Upload-Limit MUST be there.
        let url = location(&r);
        let lim = limits(&r);
        assert!(lim.contains(&("max-size".into(), 1 << 20)), "{lim:?}");
        assert!(lim.iter().any(|(k, v)| k == "max-age" && *v > 0), "{lim:?}");

        let h = c.head(ANN, &url).await;
        assert_eq!(h.status(), StatusCode::NO_CONTENT);
        assert_eq!(field(&h, "upload-offset"), "10000");
        assert_eq!(field(&h, "upload-complete"), "?0");
        assert_eq!(field(&h, "upload-length"), "30000");
        assert_eq!(field(&h, "cache-control"), "no-store");
        assert!(limits(&h).iter().any(|(k, _)| k == "max-size"));

        let r = c
            .append(ANN, &url, 10_000, false, &data[10_000..20_000], &[])
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(field(&r, "upload-complete"), "?0");
        assert_eq!(field(&r, "upload-offset"), "20000");
        assert!(!env.dir.join(&name).exists());
        let r = c
            .append(ANN, &url, 20_000, true, &data[20_000..], &[])
            .await;
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(field(&r, "upload-complete"), "?1");
        assert_eq!(std::fs::read(env.dir.join(&name)).unwrap(), data);
        assert_eq!(field(&c.head(ANN, &url).await, "upload-complete"), "?1");
    }
}

/// A length unknown at creation: HEAD has no Upload-Length until the client supplies one; the
/// request with `Upload-Complete: ?1` fixes it (empty content completes what was sent).
#[tokio::test(flavor = "multi_thread")]
async fn length_known_only_at_the_end() {
    let env = Env::start(false, None).await;
    let c = env.client(None);
    let r = c
        .create(
            ANN,
            false,
            b"",
            &[("Content-Disposition", "inline; filename=s.txt")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(field(&r, "upload-offset"), "0");
    let url = location(&r);
    let h = c.head(ANN, &url).await;
    assert_eq!(field(&h, "upload-length"), "", "no length supplied yet");
    let r = c.append(ANN, &url, 0, false, b"stream", &[]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Chunked (no Content-Length) with ?1: the length is where the content ends.
    let r = chunked_append(&c, &url, 6, true, [b"ing ", b"data"]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(field(&r, "upload-complete"), "?1");
    assert_eq!(
        std::fs::read(env.dir.join("s.txt")).unwrap(),
        b"streaming data"
    );
    assert_eq!(field(&c.head(ANN, &url).await, "upload-length"), "14");

    // Everything sent in earlier parts, then an empty request with ?1.
    let r = c
        .create(
            ANN,
            false,
            b"abc",
            &[("Content-Disposition", "inline; filename=e.txt")],
        )
        .await;
    let url = location(&r);
    let r = c.append(ANN, &url, 3, true, b"", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(env.dir.join("e.txt")).unwrap(), b"abc");
    // An empty representation in one request.
    let r = c
        .create(
            ANN,
            true,
            b"",
            &[("Content-Disposition", "inline; filename=empty")],
        )
        .await;
    assert_eq!(field(&r, "upload-complete"), "?1");
    assert_eq!(std::fs::read(env.dir.join("empty")).unwrap(), b"");
}

/// A wrong offset MUST get 409 with `Upload-Complete: ?0` and the right `Upload-Offset`, here
/// with the draft's problem type and both members; nothing is appended.
#[tokio::test(flavor = "multi_thread")]
async fn mismatching_offset() {
    let env = Env::start(false, None).await;
    for interop in LATEST.into_iter().chain([Some("6")]) {
        let c = env.client(interop);
        let url = location(&c.create(ANN, false, b"12345", &[]).await);
        let r = c.append(ANN, &url, 9, false, b"xx", &[]).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(field(&r, "upload-complete"), "?0");
        assert_eq!(field(&r, "upload-offset"), "5");
        let p = problem(r).await;
        assert_eq!(p["type"], format!("{PROBLEMS}#mismatching-upload-offset"));
        assert_eq!(
            (p["expected-offset"].as_u64(), p["provided-offset"].as_u64()),
            (Some(5), Some(9))
        );
        assert_eq!(field(&c.head(ANN, &url).await, "upload-offset"), "5");
    }
}

/// Lengths from `Upload-Length` and from `Upload-Complete: ?1` with `Content-Length` MUST
/// match, in one request and across requests.
#[tokio::test(flavor = "multi_thread")]
async fn inconsistent_lengths() {
    let env = Env::start(false, None).await;
    let c = env.client(Some("8"));
    let inconsistent = format!("{PROBLEMS}#inconsistent-upload-length");
    let r = c.create(ANN, true, b"abc", &[("Upload-Length", "4")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(r).await["type"], inconsistent);

    let url = location(
        &c.create(ANN, false, b"ab", &[("Upload-Length", "10")])
            .await,
    );
    let r = c
        .append(ANN, &url, 2, false, b"c", &[("Upload-Length", "11")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(r).await["type"], inconsistent);
    // ?1 with content ending before the recorded length.
    let r = c.append(ANN, &url, 2, true, b"cd", &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(r).await["type"], inconsistent);
    assert_eq!(field(&c.head(ANN, &url).await, "upload-offset"), "2");
    // A length below what was already uploaded.
    let url = location(&c.create(ANN, false, b"abcdef", &[]).await);
    let r = c
        .append(ANN, &url, 6, false, b"", &[("Upload-Length", "3")])
        .await;
    assert_eq!(problem(r).await["type"], inconsistent);
}

/// Once the offset would pass a known length the request is refused and the upload resource
/// is invalid: every further interaction is refused.
#[tokio::test(flavor = "multi_thread")]
async fn appends_past_the_length_end_the_upload() {
    let env = Env::start(false, None).await;
    let c = env.client(None);
    // Announced by Content-Length.
    let url = location(&c.create(ANN, false, b"ab", &[("Upload-Length", "4")]).await);
    let r = c.append(ANN, &url, 2, false, b"cdef", &[]).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(c.head(ANN, &url).await.status(), StatusCode::NOT_FOUND);
    // Not announced (chunked): found while reading.
    let url = location(&c.create(ANN, false, b"ab", &[("Upload-Length", "4")]).await);
    let r = chunked_append(&c, &url, 2, false, [b"cd", b"ef"]).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = c.append(ANN, &url, 4, true, b"", &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// An append MUST be a PATCH with `application/partial-upload`, `Upload-Offset` and
/// `Upload-Complete`.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_appends() {
    let env = Env::start(false, None).await;
    let c = env.client(None);
    let url = location(&c.create(ANN, false, b"", &[]).await);
    let base = || {
        c.req(ANN, Method::PATCH, &url)
            .header("Upload-Offset", "0")
            .header("Upload-Complete", "?0")
    };
    let r = base()
        .header("Content-Type", "application/offset+octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = c
        .req(ANN, Method::PATCH, &url)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Complete", "?0")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Not a Boolean: the field is ignored, so it is missing.
    let r = c
        .req(ANN, Method::PATCH, &url)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", "0")
        .header("Upload-Complete", "true")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(field(&c.head(ANN, &url).await, "upload-offset"), "0");
    // Another method on the resource.
    let r = c
        .req(ANN, Method::PUT, &url)
        .header("Upload-Complete", "?1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(field(&r, "allow").contains("PATCH"));
    // An interop version ferry does not speak.
    let r = c
        .client
        .post(c.url("/uploads/"))
        .bearer_auth(ANN)
        .header("Upload-Draft-Interop-Version", "5")
        .header("Upload-Complete", "?1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// An interrupted append keeps what arrived, and the upload MUST NOT be complete then; the
/// offset retrieved is accepted by the next append.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_appends_resume() {
    let env = Env::start(false, None).await;
    let c = env.client(None);
    let data = random_bytes(200_000, 3);
    let url = location(
        &c.create(
            ANN,
            false,
            b"",
            &[("Content-Disposition", "inline; filename=i.bin")],
        )
        .await,
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", env.port))
        .await
        .unwrap();
    let head = format!(
        "PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ANN}\r\n\
         Content-Type: application/partial-upload\r\nUpload-Offset: 0\r\nUpload-Complete: ?1\r\n\
         Content-Length: {}\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&data[..80_000]).await.unwrap();
    s.flush().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while env
        .dir
        .join(".ferry/uploads")
        .join(url.rsplit('/').next().unwrap())
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0)
        < 80_000
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first bytes never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(s);
    let offset = loop {
        let h = c.head(ANN, &url).await;
        if h.status() == StatusCode::NO_CONTENT && field(&h, "upload-offset") == "80000" {
            assert_eq!(
                field(&h, "upload-complete"),
                "?0",
                "interrupted: not complete"
            );
            break 80_000;
        }
        assert!(std::time::Instant::now() < deadline, "{h:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let r = c
        .append(ANN, &url, offset, true, &data[offset as usize..], &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(env.dir.join("i.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancellation() {
    let env = Env::start(false, None).await;
    for interop in LATEST {
        let c = env.client(interop);
        let url = location(&c.create(ANN, false, b"abc", &[]).await);
        assert_eq!(c.delete(ANN, &url).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(c.head(ANN, &url).await.status(), StatusCode::NOT_FOUND);
        let r = c.append(ANN, &url, 3, true, b"", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

/// OPTIONS MUST carry `Upload-Limit`, `min-size=0` when there is no limit. One with no
/// protocol marker is discovery for both: tus's answer with the draft's limits.
#[tokio::test(flavor = "multi_thread")]
async fn options_advertise_limits() {
    let env = Env::start(false, Some(5000)).await;
    let c = env.client(Some("8"));
    let r = c
        .req("", Method::OPTIONS, "/uploads/")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(limits(&r).contains(&("max-size".into(), 5000)), "{r:?}");
    let r = c
        .client
        .request(Method::OPTIONS, c.url("/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(field(&r, "tus-max-size"), "5000");
    assert!(limits(&r).contains(&("max-size".into(), 5000)));
    let env = Env::start(false, None).await;
    let c = env.client(None);
    let r = c
        .req("", Method::OPTIONS, "/uploads")
        .header("Upload-Complete", "?0")
        .send()
        .await;
    assert_eq!(limits(&r.unwrap()), vec![("min-size".into(), 0)]);
}

/// Content-Digest (RFC 9530) guards one request: a mismatch appends nothing. Repr-Digest on a
/// creation that carries the whole representation guards it the same way.
#[tokio::test(flavor = "multi_thread")]
async fn digests() {
    let env = Env::start(false, None).await;
    let c = env.client(None);
    let sha256 = |d: &[u8]| format!("sha-256=:{}:", STANDARD.encode(sha2::Sha256::digest(d)));
    let url = location(
        &c.create(
            ANN,
            false,
            b"",
            &[("Content-Disposition", "inline; filename=d")],
        )
        .await,
    );
    let r = c
        .append(
            ANN,
            &url,
            0,
            false,
            b"good",
            &[("Content-Digest", &sha256(b"good"))],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .append(
            ANN,
            &url,
            4,
            true,
            b"evil",
            &[("Content-Digest", &sha256(b"good"))],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(field(&c.head(ANN, &url).await, "upload-offset"), "4");
    let r = c
        .append(
            ANN,
            &url,
            4,
            true,
            b"more",
            &[("Content-Digest", &sha256(b"more"))],
        )
        .await;
    // (The refused request stated the length 8, which stays recorded: the draft's "MUST
    // record"; this one agrees.)
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(env.dir.join("d")).unwrap(), b"goodmore");
    let r = c
        .create(
            ANN,
            true,
            b"whole",
            &[
                ("Repr-Digest", &sha256(b"other")),
                ("Content-Disposition", "inline; filename=r"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!env.dir.join("r").exists());
}

/// Interop 6 (draft -05): its own MUSTs where they differ from the final protocol.
#[tokio::test(flavor = "multi_thread")]
async fn interop_6_specifics() {
    let env = Env::start(false, None).await;
    let c = env.client(Some("6"));
    // tus-js-client's creation: no content, Upload-Length and Upload-Metadata, ?0.
    let meta = format!("filename {}", STANDARD.encode("six.txt"));
    let r = c
        .create(
            ANN,
            false,
            b"",
            &[("Upload-Length", "6"), ("Upload-Metadata", &meta)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(field(&r, "upload-complete"), "?0");
    let url = location(&r);
    let lim = limits(&r);
    assert!(lim.iter().any(|(k, _)| k == "expires"), "{lim:?}");
    // An incomplete append: 201 with Upload-Offset.
    let r = c.append(ANN, &url, 0, false, b"abc", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(field(&r, "upload-offset"), "3");
    assert_eq!(field(&r, "upload-complete"), "?0");
    // Offset retrieval and cancellation MUST NOT carry upload fields: 400.
    for (name, value) in [
        ("Upload-Offset", "3"),
        ("Upload-Complete", "?0"),
        ("Upload-Length", "6"),
    ] {
        let r = c
            .req(ANN, Method::HEAD, &url)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "HEAD with {name}");
    }
    let r = c
        .req(ANN, Method::DELETE, &url)
        .header("Upload-Offset", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A failure while the upload is active carries its offset.
    let r = c
        .req(ANN, Method::PATCH, &url)
        .header("Upload-Offset", "3")
        .header("Upload-Complete", "?0")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(field(&r, "upload-offset"), "3");
    let r = c.append(ANN, &url, 3, true, b"def", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(field(&r, "upload-complete"), "?1");
    assert_eq!(std::fs::read(env.dir.join("six.txt")).unwrap(), b"abcdef");
    // Appending to a complete upload MUST get 400 (completed-upload problem type).
    let r = c.append(ANN, &url, 6, false, b"more", &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        problem(r).await["type"],
        format!("{PROBLEMS}#completed-upload")
    );
    // Not active any more: 404.
    assert_eq!(c.delete(ANN, &url).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.head(ANN, &url).await.status(), StatusCode::NOT_FOUND);
}

/// The same users, ownership, size limit and path rules as tus.
#[tokio::test(flavor = "multi_thread")]
async fn ownership_limits_and_names() {
    let env = Env::start(false, Some(1000)).await;
    let c = env.client(None);
    let url = location(&c.create(ANN, false, b"ann", &[]).await);
    assert_eq!(c.head(BOB, &url).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        c.append(BOB, &url, 3, true, b"bob", &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(c.delete(BOB, &url).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        c.head("nope", &url).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(field(&c.head(ANN, &url).await, "upload-offset"), "3");
    // Above the size limit: 413 with Upload-Limit, stated or found while reading.
    let r = c
        .create(ANN, false, b"", &[("Upload-Length", "1001")])
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(limits(&r).contains(&("max-size".into(), 1000)));
    let r = c.create(ANN, true, &[0; 1001], &[]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let url = location(&c.create(ANN, false, &[0; 600], &[]).await);
    let r = c.append(ANN, &url, 600, true, &[0; 600], &[]).await;
    assert!(r.status().is_client_error());
    names_stay_inside(&env, ANN).await;
    // Another user's file is not replaced.
    std::fs::write(env.dir.join("bobs.txt"), b"bob").unwrap();
    let meta = format!(
        "filename {},overwrite {}",
        STANDARD.encode("bobs.txt"),
        STANDARD.encode("true")
    );
    let r = c
        .create(ANN, true, b"x", &[("Upload-Metadata", &meta)])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .create(
            ANN,
            true,
            b"x",
            &[("Content-Disposition", "inline; filename=bobs.txt")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(std::fs::read(env.dir.join("bobs.txt")).unwrap(), b"bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn public_server() {
    let env = Env::start(true, None).await;
    let c = env.client(Some("8"));
    let r = c
        .create(
            "",
            true,
            b"hi",
            &[("Content-Disposition", "inline; filename=p.txt")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(env.dir.join("p.txt")).unwrap(), b"hi");
    names_stay_inside(&env, "").await;
}

/// Names never leave the served directory: a filename is a bare name, a path is checked.
async fn names_stay_inside(env: &Env, token: &str) {
    let c = env.client(None);
    let r = c
        .create(
            token,
            true,
            b"x",
            &[(
                "Content-Disposition",
                "attachment; filename=\"../../etc/passwd\"",
            )],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(env.dir.join("passwd")).unwrap(), b"x");
    std::fs::remove_file(env.dir.join("passwd")).unwrap();
    for path in [
        "../escape.txt",
        "/etc/escape.txt",
        "a/../../escape.txt",
        ".ferry/uploads/x",
    ] {
        let meta = format!("path {}", STANDARD.encode(path));
        let r = c
            .create(token, true, b"x", &[("Upload-Metadata", &meta)])
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            field(&r, "upload-complete"),
            "?1",
            "a refused creation: nothing to resume"
        );
    }
    let r = c
        .create(
            token,
            true,
            b"x",
            &[("Content-Disposition", "inline; filename=\"..\"")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!env.dir.parent().unwrap().join("escape.txt").exists());
}

/// One decision between the protocols: tus requests stay tus (even with draft fields), a tus
/// upload can be asked and finished by the draft, and a GET or POST with neither marker
/// still gets tus's 412.
#[tokio::test(flavor = "multi_thread")]
async fn one_endpoint_two_protocols() {
    let env = Env::start(false, None).await;
    let c = env.client(None);
    let r = c
        .client
        .post(c.url("/uploads/"))
        .bearer_auth(ANN)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Complete", "?1")
        .header("Upload-Length", "3")
        .header(
            "Upload-Metadata",
            format!("filename {}", STANDARD.encode("t.txt")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(field(&r, "tus-resumable"), "1.0.0");
    assert_eq!(field(&r, "upload-complete"), "");
    let url = location(&r);
    let h = c.head(ANN, &url).await;
    assert_eq!(
        (
            field(&h, "upload-offset").as_str(),
            field(&h, "upload-complete").as_str()
        ),
        ("0", "?0")
    );
    let r = c.append(ANN, &url, 0, true, b"tus", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(env.dir.join("t.txt")).unwrap(), b"tus");
    for method in [Method::GET, Method::POST, Method::PATCH] {
        let r = c
            .client
            .request(method.clone(), c.url(&url))
            .bearer_auth(ANN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "{method}");
    }
}
