//! tus 1.0 conformance of the upload service, in process: the real router and upload core over
//! the in-memory state store and a local data directory, on a real socket, driven by reqwest
//! and raw TCP. Every status code the protocol and our extensions promise, ownership across two
//! users, overwrite and traversal refusal, a client that disconnects mid-PATCH, concurrent
//! PATCHes, expiry, concatenation, termination and metrics. (What needs the real binary, a
//! kill -9 and a full disk, is in `crates/ferry/tests/serve_tus.rs`.)

use ferry_server::data::local::LocalDir;
use ferry_server::store::memory::MemoryStore;
use ferry_server::{Auth, Server, ServerConfig};
use ferry_testkit::tus::{TusTester, header, location, metadata, raw_patch, sha1_b64, text};
use ferry_testkit::util::{random_bytes, wait_until};
use reqwest::{Method, StatusCode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1 << 20;
const ANN: &str = "token-of-ann";
const BOB: &str = "token-of-bob";

/// The server on its own runtime and thread, so a test may block (raw sockets, waits) without
/// starving it. Stopped, and its thread joined, when dropped.
struct Srv {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Srv {
    fn start(dir: &Path, config: ServerConfig) -> Srv {
        let root = dir.canonicalize().unwrap();
        let data = LocalDir::open(&root).unwrap();
        let server =
            Server::with_stores(root, Arc::new(MemoryStore::new()), Arc::new(data), &config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = server
                    .run(listener, async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Srv {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A served temp dir, and a client speaking tus as any user (through `Deref`).
struct Env {
    srv: Srv,
    tus: TusTester,
    _tmp: tempfile::TempDir,
}

impl Env {
    /// Two users, ann and bob, unless `args` (`ferry serve`'s options) says otherwise.
    fn start(args: &[&str]) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let mut auth = Auth::parse_users(&format!("ann {ANN}\nbob {BOB}\n")).unwrap();
        let mut options = Vec::new();
        let mut words = args.iter();
        while let Some(arg) = words.next() {
            match *arg {
                "--public" => auth = Auth::Public,
                "--token" => auth = Auth::single(words.next().unwrap()),
                other => options.push((other, *words.next().unwrap())),
            }
        }
        let mut config = ServerConfig::new(&dir, auth);
        for (name, value) in options {
            match name {
                "--max-upload-size" => {
                    config.max_upload_size = Some(ferry_core::limits::parse_size(value).unwrap())
                }
                "--upload-expiry" => {
                    let secs = value.strip_suffix('s').unwrap().parse().unwrap();
                    config.upload_expiry = Duration::from_secs(secs);
                }
                _ => panic!("unknown option {name}"),
            }
        }
        let srv = Srv::start(&dir, config);
        Env {
            tus: TusTester::new(srv.url(""), dir, ANN),
            srv,
            _tmp: tmp,
        }
    }
}

impl std::ops::Deref for Env {
    type Target = TusTester;

    fn deref(&self) -> &TusTester {
        &self.tus
    }
}

/// The tus version check covers the upload routes only: any other unknown path is a 404,
/// whatever its headers.
#[tokio::test]
async fn unknown_paths_are_not_found() {
    let env = Env::start(&[]);
    for path in ["/favicon.ico", "/nothing/here", "/uploadsx"] {
        let r = env
            .client
            .get(env.url(path))
            .bearer_auth(ANN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = env
        .client
        .get(env.url("/uploads/abc"))
        .bearer_auth(ANN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PRECONDITION_FAILED,
        "an upload URL still wants Tus-Resumable"
    );
}

#[tokio::test]
async fn discovery_and_protocol_errors() {
    let env = Env::start(&["--max-upload-size", "1M"]);
    // OPTIONS needs no token and lists everything.
    let r = env
        .client
        .request(Method::OPTIONS, env.srv.url("/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "tus-version"), "1.0.0");
    assert_eq!(header(&r, "tus-resumable"), "1.0.0");
    assert_eq!(header(&r, "tus-max-size"), MIB.to_string());
    let ext = header(&r, "tus-extension");
    for e in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "checksum",
        "termination",
        "concatenation",
        "concatenation-unfinished",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{e} missing from {ext}");
    }
    assert!(header(&r, "tus-checksum-algorithm").contains("sha1"));

    // 401 without a valid token.
    let r = env
        .req("nope-nope", Method::POST, "/uploads/")
        .header("Upload-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // 412 without (or with a wrong) Tus-Resumable, with Tus-Version.
    let r = env
        .client
        .post(env.srv.url("/uploads/"))
        .bearer_auth(ANN)
        .header("Upload-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&r, "tus-version"), "1.0.0");
    let r = env
        .client
        .post(env.srv.url("/uploads/"))
        .bearer_auth(ANN)
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PRECONDITION_FAILED,
        "{}",
        text(r).await
    );
    // 400: no length, both lengths, bad length, bad metadata.
    let r = env
        .req(ANN, Method::POST, "/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = env
        .post(ANN, Some(5), &[], &[("Upload-Defer-Length", "1")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = env
        .req(ANN, Method::POST, "/uploads/")
        .header("Upload-Length", "-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = env
        .req(ANN, Method::POST, "/uploads/")
        .header("Upload-Length", "3")
        .header("Upload-Metadata", "filename !!notbase64")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // 413 over --max-upload-size.
    let r = env.post(ANN, Some(MIB as u64 + 1), &[], &[]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let url = env.create(ANN, Some(10), &[("filename", "ten.bin")]).await;
    let r = env.head(ANN, &url).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "upload-offset"), "0");
    assert_eq!(header(&r, "upload-length"), "10");
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert!(header(&r, "upload-expires").ends_with("GMT"));
    assert_eq!(
        header(&r, "upload-metadata"),
        metadata(&[("filename", "ten.bin")])
    );
    // 415 wrong Content-Type.
    let r = env
        .req(ANN, Method::PATCH, &url)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // 409 offset mismatch, with the real offset.
    let r = env.patch(ANN, &url, 3, b"abc").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(header(&r, "upload-offset"), "0");
    // 413 past the length: nothing written.
    let r = env.patch(ANN, &url, 0, &[7u8; 11]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(env.offset(ANN, &url).await, 0);
    // Two chunks complete it; it lands at its filename.
    let r = env.patch(ANN, &url, 0, b"01234").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), "5");
    assert!(header(&r, "upload-expires").ends_with("GMT"));
    assert!(
        !env.dir.join("ten.bin").exists(),
        "an unfinished upload is never visible"
    );
    let r = env.patch(ANN, &url, 5, b"56789").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        std::fs::read(env.dir.join("ten.bin")).unwrap(),
        b"0123456789"
    );
    assert_eq!(env.offset(ANN, &url).await, 10);
    assert!(env.staged_len(&url).is_none(), "staging is emptied");
    // The file side serves it; the staging area is never served.
    let r = env
        .req(ANN, Method::GET, "/files/ten.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"0123456789");
    let r = env
        .req(ANN, Method::GET, "/files/.ferry/state.redb")
        .send()
        .await
        .unwrap();
    assert!(
        matches!(r.status(), StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
        "{}",
        r.status()
    );
    // 404 for unknown uploads, 405 for GET on an upload.
    let r = env
        .head(ANN, "/uploads/0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = env.req(ANN, Method::GET, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(env.metric("ferry_uploads_completed_total").await >= 1);
    assert!(env.metric("ferry_bytes_received_total").await >= 10);
}

#[tokio::test]
async fn checksum_mismatch_discards_the_chunk() {
    let env = Env::start(&[]);
    let data = random_bytes(3 * MIB, 7);
    let url = env
        .create(ANN, Some(data.len() as u64), &[("filename", "c.bin")])
        .await;
    let half = data.len() / 2;
    let good = sha1_b64(&data[..half]);
    let bad_sum = sha1_b64(b"something else");
    // 460: wrong digest; the offset does not move, the bytes are gone from staging.
    let r = env
        .req(ANN, Method::PATCH, &url)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", format!("sha1 {bad_sum}"))
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 460, "{}", text(r).await);
    assert_eq!(env.offset(ANN, &url).await, 0);
    assert_eq!(env.staged_len(&url), Some(0));
    // 400: an algorithm the server does not support.
    let r = env
        .req(ANN, Method::PATCH, &url)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", "crc32 AAAAAA==")
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The right digest is accepted.
    let r = env
        .req(ANN, Method::PATCH, &url)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", format!("sha1 {good}"))
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = env.patch(ANN, &url, half as u64, &data[half..]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(std::fs::read(env.dir.join("c.bin")).unwrap() == data);
    assert_eq!(
        env.metric("ferry_upload_checksum_mismatches_total").await,
        1
    );
}

#[tokio::test]
async fn creation_with_upload_deferred_length_and_method_override() {
    let env = Env::start(&["--public"]);
    // creation-with-upload: the POST body is the first chunk.
    let r = env
        .req("", Method::POST, "/uploads/")
        .header("Upload-Length", "6")
        .header("Upload-Metadata", metadata(&[("filename", "w.txt")]))
        .header("Content-Type", "application/offset+octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-offset"), "3");
    let url = location(&r);
    // X-HTTP-Method-Override: a POST that acts as PATCH.
    let r = env
        .req("", Method::POST, &url)
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Upload-Offset", "3")
        .header("Content-Type", "application/offset+octet-stream")
        .body("def")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    assert_eq!(std::fs::read(env.dir.join("w.txt")).unwrap(), b"abcdef");

    // creation-defer-length: the length comes with a later PATCH.
    let url = env.create("", None, &[("filename", "d.txt")]).await;
    let r = env.head("", &url).await;
    assert_eq!(header(&r, "upload-defer-length"), "1");
    assert!(r.headers().get("upload-length").is_none());
    env.patch_ok("", &url, 0, b"hello ").await;
    let r = env
        .req("", Method::PATCH, &url)
        .header("Upload-Offset", "6")
        .header("Upload-Length", "11")
        .header("Content-Type", "application/offset+octet-stream")
        .body("world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        std::fs::read(env.dir.join("d.txt")).unwrap(),
        b"hello world"
    );
    // A zero-length upload lands at once.
    let url = env.create("", Some(0), &[("filename", "empty")]).await;
    assert_eq!(env.offset("", &url).await, 0);
    assert_eq!(std::fs::read(env.dir.join("empty")).unwrap(), b"");
    // CORS for browser clients: a preflight answers, and responses expose the tus headers.
    let r = env
        .client
        .request(Method::OPTIONS, env.srv.url("/uploads/"))
        .header("Origin", "http://example.test")
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "upload-offset,tus-resumable,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "http://example.test"
    );
    let r = env
        .req("", Method::HEAD, &url)
        .header("Origin", "http://example.test")
        .send()
        .await
        .unwrap();
    assert!(
        header(&r, "access-control-expose-headers")
            .to_ascii_lowercase()
            .contains("upload-offset")
    );
}

#[tokio::test]
async fn uploads_belong_to_their_user() {
    let env = Env::start(&[]);
    let url = env.create(ANN, Some(8), &[("filename", "ann.txt")]).await;
    env.patch_ok(ANN, &url, 0, b"ann-").await;
    // bob cannot see, write or delete ann's upload.
    assert_eq!(env.head(BOB, &url).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        env.patch(BOB, &url, 4, b"bob!").await.status(),
        StatusCode::FORBIDDEN
    );
    let r = env.req(BOB, Method::DELETE, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // bob cannot start an upload to the path ann is uploading to.
    let r = env
        .post(BOB, Some(3), &[("filename", "ann.txt")], &[])
        .await;
    assert_eq!(r.status(), StatusCode::LOCKED, "{}", text(r).await);
    // ann starting again gets 409 naming her unfinished upload...
    let r = env
        .post(ANN, Some(3), &[("filename", "ann.txt")], &[])
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(header(&r, "location"), url);
    // ...and the same user resumes and finishes.
    env.patch_ok(ANN, &url, 4, b"done").await;
    assert_eq!(std::fs::read(env.dir.join("ann.txt")).unwrap(), b"ann-done");
    // A landed file belongs to ann: bob may not replace it even when asking.
    let r = env
        .post(
            BOB,
            Some(3),
            &[("filename", "ann.txt"), ("overwrite", "true")],
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // ann may.
    let url = env
        .create(
            ANN,
            Some(3),
            &[("filename", "ann.txt"), ("overwrite", "true")],
        )
        .await;
    env.patch_ok(ANN, &url, 0, b"new").await;
    assert_eq!(std::fs::read(env.dir.join("ann.txt")).unwrap(), b"new");
    // With overwrite, ann replaces her own unfinished upload to the same path.
    let old = env.create(ANN, Some(4), &[("filename", "x.txt")]).await;
    let new = env
        .create(
            ANN,
            Some(4),
            &[("filename", "x.txt"), ("overwrite", "true")],
        )
        .await;
    assert_ne!(old, new);
    assert_eq!(env.head(ANN, &old).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn existing_files_are_not_overwritten_unless_asked() {
    let env = Env::start(&["--token", ANN]);
    std::fs::write(env.dir.join("keep.txt"), b"original").unwrap();
    let r = env
        .post(ANN, Some(3), &[("filename", "keep.txt")], &[])
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "{}", text(r).await);
    std::fs::create_dir(env.dir.join("adir")).unwrap();
    let r = env.post(ANN, Some(3), &[("filename", "adir")], &[]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // The file appears while the upload is in progress: completing refuses to replace it, the
    // data stays staged, and once the file is gone an empty PATCH lands it.
    let url = env.create(ANN, Some(3), &[("filename", "late.txt")]).await;
    std::fs::write(env.dir.join("late.txt"), b"someone else").unwrap();
    let r = env.patch(ANN, &url, 0, b"new").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        std::fs::read(env.dir.join("late.txt")).unwrap(),
        b"someone else"
    );
    std::fs::remove_file(env.dir.join("late.txt")).unwrap();
    env.patch_ok(ANN, &url, 3, b"").await;
    assert_eq!(std::fs::read(env.dir.join("late.txt")).unwrap(), b"new");
    // Single user: asking to overwrite a file not made by an upload is allowed.
    let url = env
        .create(
            ANN,
            Some(3),
            &[("filename", "keep.txt"), ("overwrite", "true")],
        )
        .await;
    env.patch_ok(ANN, &url, 0, b"new").await;
    assert_eq!(std::fs::read(env.dir.join("keep.txt")).unwrap(), b"new");
}

#[tokio::test]
async fn paths_never_leave_the_directory() {
    let outside = tempfile::tempdir().unwrap();
    let env = Env::start(&["--public"]);
    std::os::unix::fs::symlink(outside.path(), env.dir.join("out")).unwrap();
    for path in [
        "../escape.txt",
        "/etc/escape.txt",
        "a/../../escape.txt",
        ".ferry/uploads/x",
        "out/escape.txt",
        "out/sub/escape.txt",
    ] {
        let r = env.post("", Some(1), &[("path", path)], &[]).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "path {path:?}: {}",
            text(r).await
        );
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    // A filename is a bare name: directories and dots are stripped.
    let url = env
        .create("", Some(1), &[("filename", "../../etc/passwd")])
        .await;
    env.patch_ok("", &url, 0, b"x").await;
    assert_eq!(std::fs::read(env.dir.join("passwd")).unwrap(), b"x");
    // A relative path with folders creates them.
    let url = env
        .create("", Some(2), &[("path", "photos/2026/a.jpg")])
        .await;
    env.patch_ok("", &url, 0, b"ok").await;
    assert_eq!(
        std::fs::read(env.dir.join("photos/2026/a.jpg")).unwrap(),
        b"ok"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_patch_keeps_every_byte() {
    let env = Env::start(&[]);
    // A body this long makes the server raise the socket's receive low-water mark; when the
    // client pauses, the bytes below the mark that already arrived must still reach the file.
    let data = random_bytes(16 * MIB, 11);
    let url = env
        .create(ANN, Some(data.len() as u64), &[("filename", "cut.bin")])
        .await;
    let (first, sent) = (1_000_000, 1_020_000);
    let mut s = raw_patch(env.srv.port(), ANN, &url, 0, data.len(), &data[..first]);
    env.wait_staged(&url, first as u64);
    // Less than any raised low-water mark, sent to a server that is already waiting for more.
    s.write_all(&data[first..sent]).unwrap();
    env.wait_staged(&url, sent as u64);
    drop(s); // the client goes away mid-body
    // The lock is released once the server notices; the offset is every byte that arrived.
    let mut offset = 0;
    for _ in 0..200 {
        let r = env.head(ANN, &url).await;
        offset = header(&r, "upload-offset").parse().unwrap();
        if env.patch(ANN, &url, offset, &[]).await.status() == StatusCode::NO_CONTENT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(offset, sent as u64);
    env.patch_ok(ANN, &url, offset, &data[sent..]).await;
    assert!(std::fs::read(env.dir.join("cut.bin")).unwrap() == data);
}

/// Reads one response head (status line and headers) from `s`.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte)
            .expect("a response within the read timeout");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

#[tokio::test]
async fn a_long_patch_leaves_its_connection_ready_for_the_next_request() {
    // While a long body streams in, the server raises the socket's receive low-water mark; the
    // end of the body and the next request on the same connection must still be read at once.
    let env = Env::start(&[]);
    let data = random_bytes(12 * MIB, 14);
    let url = env
        .create(ANN, Some(16 * MIB as u64), &[("filename", "keep.bin")])
        .await;
    let mut s = raw_patch(env.srv.port(), ANN, &url, 0, data.len(), &data);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("http/1.1 204"), "{head}");
    write!(
        s,
        "HEAD {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {ANN}\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("upload-offset: {}\r\n", 12 * MIB)),
        "{head}"
    );
}

#[tokio::test]
async fn concurrent_patches_are_serialised() {
    let env = Env::start(&[]);
    let data = random_bytes(2 * MIB, 12);
    let url = env
        .create(ANN, Some(data.len() as u64), &[("filename", "lock.bin")])
        .await;
    let first = raw_patch(env.srv.port(), ANN, &url, 0, data.len(), &data[..MIB]);
    env.wait_staged(&url, MIB as u64);
    // While the first PATCH is writing, a second one is refused with 423 and Retry-After.
    let r = env.patch(ANN, &url, 0, &data).await;
    assert_eq!(r.status(), StatusCode::LOCKED, "{}", text(r).await);
    assert!(r.headers().contains_key("retry-after"));
    // A DELETE must wait too.
    assert_eq!(
        env.req(ANN, Method::DELETE, &url)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::LOCKED
    );
    // The first one finishes normally.
    let mut first = first;
    first.write_all(&data[MIB..]).unwrap();
    let mut answer = [0u8; 12];
    first.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 204");
    assert!(std::fs::read(env.dir.join("lock.bin")).unwrap() == data);
}

#[tokio::test]
async fn unfinished_uploads_expire_and_are_cleaned_up() {
    let env = Env::start(&["--upload-expiry", "1s"]);
    let url = env
        .create(ANN, Some(100), &[("filename", "gone.bin")])
        .await;
    env.patch_ok(ANN, &url, 0, &[1u8; 10]).await;
    assert!(env.staged_len(&url).is_some());
    let mut status = StatusCode::OK;
    for _ in 0..300 {
        status = env.head(ANN, &url).await.status();
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::GONE);
    assert!(
        wait_until(Duration::from_secs(10), || env.staged_len(&url).is_none()),
        "the staged data is deleted"
    );
    assert_eq!(
        env.patch(ANN, &url, 10, &[1u8; 10]).await.status(),
        StatusCode::GONE
    );
    assert!(env.metric("ferry_uploads_failed_total").await >= 1);
    // The target is free again.
    let again = env.create(BOB, Some(1), &[("filename", "gone.bin")]).await;
    env.patch_ok(BOB, &again, 0, b"z").await;
}

#[tokio::test]
async fn termination() {
    let env = Env::start(&[]);
    let url = env.create(ANN, Some(100), &[("filename", "t.bin")]).await;
    env.patch_ok(ANN, &url, 0, &[1u8; 10]).await;
    let r = env.req(ANN, Method::DELETE, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(env.staged_len(&url).is_none());
    assert_eq!(env.head(ANN, &url).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        env.patch(ANN, &url, 10, b"x").await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(!env.dir.join("t.bin").exists());
}

/// One partial upload of ann's per piece between `cuts`, empty; their URL paths.
async fn partial_uploads(env: &Env, cuts: &[usize]) -> Vec<String> {
    let mut parts = Vec::new();
    for w in cuts.windows(2) {
        let r = env
            .post(
                ANN,
                Some((w[1] - w[0]) as u64),
                &[],
                &[("Upload-Concat", "partial")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let p = location(&r);
        assert_eq!(header(&env.head(ANN, &p).await, "upload-concat"), "partial");
        parts.push(p);
    }
    parts
}

#[tokio::test]
async fn concatenation_finished_and_unfinished() {
    let env = Env::start(&[]);
    let data = random_bytes(3 * MIB + 5, 14);
    let cuts = [0, MIB, 2 * MIB + 7, data.len()];
    let parts = partial_uploads(&env, &cuts).await;
    for (i, p) in parts.iter().enumerate() {
        let r = env.patch(ANN, p, 0, &data[cuts[i]..cuts[i + 1]]).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    // Nothing lands from partial uploads alone.
    assert_eq!(
        std::fs::read_dir(&env.dir).unwrap().count(),
        1,
        "only .ferry"
    );
    // bob cannot use ann's parts.
    let concat = format!("final;{}", parts.join(" "));
    let r = env
        .post(
            BOB,
            None,
            &[("filename", "all.bin")],
            &[("Upload-Concat", &concat)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = env
        .post(
            ANN,
            None,
            &[("filename", "all.bin")],
            &[("Upload-Concat", &concat)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let fin = location(&r);
    assert!(std::fs::read(env.dir.join("all.bin")).unwrap() == data);
    let r = env.head(ANN, &fin).await;
    assert_eq!(header(&r, "upload-offset"), data.len().to_string());
    assert!(header(&r, "upload-concat").starts_with("final;"));
    // 403: a final upload takes no PATCH.
    assert_eq!(
        env.patch(ANN, &fin, data.len() as u64, b"x").await.status(),
        StatusCode::FORBIDDEN
    );

    // concatenation-unfinished: the final first, then the parts (absolute URLs this time).
    let parts = partial_uploads(&env, &cuts).await;
    let concat = format!(
        "final;{}",
        parts
            .iter()
            .map(|p| env.srv.url(p))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = env
        .post(
            ANN,
            None,
            &[("path", "later/all.bin")],
            &[("Upload-Concat", &concat)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let fin = location(&r);
    let r = env.head(ANN, &fin).await;
    assert!(
        r.headers().get("upload-offset").is_none(),
        "no offset before the parts are done"
    );
    assert_eq!(header(&r, "upload-length"), data.len().to_string());
    // A part cannot join a second final.
    let r = env
        .post(
            ANN,
            None,
            &[("filename", "twice.bin")],
            &[("Upload-Concat", &concat)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Parts finish in reverse order; the last one assembles and lands the final.
    for i in (0..parts.len()).rev() {
        let r = env
            .patch(ANN, &parts[i], 0, &data[cuts[i]..cuts[i + 1]])
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert!(std::fs::read(env.dir.join("later/all.bin")).unwrap() == data);
    assert_eq!(env.offset(ANN, &fin).await, data.len() as u64);
    assert!(
        env.staged_len(&parts[0]).is_none(),
        "the parts' data is freed"
    );
    assert_eq!(
        env.offset(ANN, &parts[0]).await,
        cuts[1] as u64,
        "a part still reads as complete"
    );
    // The same final POST again (a client that never saw the answer) gets the same upload.
    let r = env
        .post(
            ANN,
            None,
            &[("path", "later/all.bin")],
            &[("Upload-Concat", &concat)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), fin);
}

/// An upload whose staged bytes reach its length but that was never finished (the request
/// that wrote its last bytes was taken over, or its client vanished before the upload could
/// land) is finished before its offset is reported: a client that reads offset = length takes
/// the upload as done, so the file must be there.
#[tokio::test]
async fn an_upload_whose_bytes_are_all_staged_lands_before_its_offset_is_reported() {
    let env = Env::start(&[]);
    let data = random_bytes(MIB, 12);
    let url = env
        .create(ANN, Some(data.len() as u64), &[("filename", "full.bin")])
        .await;
    env.patch_ok(ANN, &url, 0, &data[..1000]).await;
    // The rest reaches the staged file without the request that would have landed it.
    let id = url.rsplit('/').next().unwrap();
    let staged = env.dir.join(".ferry/uploads").join(id);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&staged)
        .unwrap();
    f.write_all(&data[1000..]).unwrap();
    drop(f);
    assert!(!env.dir.join("full.bin").exists());
    let r = env.head(ANN, &url).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "upload-offset"), data.len().to_string());
    assert!(std::fs::read(env.dir.join("full.bin")).unwrap() == data);
}
