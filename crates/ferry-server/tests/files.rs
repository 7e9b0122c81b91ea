//! The file side over real HTTP: a small axum router that sends `/`, `/files/` and
//! `/files/{*path}` to `ferry_server::files::respond` over a `LocalDir` data store, driven by reqwest, raw TCP (paths that
//! clients would normalise) and the real `curl` binary. Bodies are checked byte for byte; ranges,
//! multipart, conditionals, HEAD, traversal, symlink escape, the state directory and listings.

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::any;
use ferry_server::data::local::LocalDir;
use ferry_server::files;
use ferry_server::metrics::Metrics;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
struct AppState {
    root: Arc<PathBuf>,
    metrics: Arc<Metrics>,
}

async fn file_route(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    UrlPath(path): UrlPath<String>,
) -> Response {
    let data = LocalDir::reader(&st.root);
    files::respond(&data, &path, &method, &headers, &st.metrics, "/files/").await
}

async fn top_route(State(st): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    let data = LocalDir::reader(&st.root);
    files::respond(&data, "", &method, &headers, &st.metrics, "/files/").await
}

/// A served tree: `root/` (the served directory) inside a temporary directory whose other
/// children (`secret.txt`, `outside/`) must never be reachable.
struct Server {
    addr: SocketAddr,
    top: tempfile::TempDir,
    root: PathBuf,
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start() -> Server {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().canonicalize().unwrap().join("root");
        std::fs::create_dir(&root).unwrap();
        let metrics = Arc::new(Metrics::default());
        let state = AppState {
            root: Arc::new(root.clone()),
            metrics: Arc::clone(&metrics),
        };
        let app = Router::new()
            .route("/", any(top_route))
            .route("/files/", any(top_route))
            .route("/files/{*path}", any(file_route))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server {
            addr,
            top,
            root,
            metrics,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn outside(&self) -> &Path {
        self.top.path()
    }
}

/// Deterministic bytes (xorshift), distinct per seed.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let h = res.headers().clone();
    let body = res.bytes().await.unwrap().to_vec();
    (status, h, body)
}

fn hv(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The parts of a `multipart/byteranges` body: (Content-Range, data).
fn multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {content_type}"));
    let delim = format!("\r\n--{boundary}");
    let delim = delim.as_bytes();
    let find = |from: usize| {
        body[from..]
            .windows(delim.len())
            .position(|w| w == delim)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut at = find(0).expect("first delimiter");
    assert_eq!(at, 0, "the body starts with the first delimiter");
    loop {
        let after = at + delim.len();
        if body[after..].starts_with(b"--\r\n") {
            assert_eq!(after + 4, body.len(), "nothing after the close delimiter");
            return parts;
        }
        assert!(body[after..].starts_with(b"\r\n"));
        let head_end = body[after..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + after;
        let head = std::str::from_utf8(&body[after + 2..head_end]).unwrap();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("Content-Range in every part")
            .to_owned();
        assert!(head.lines().any(|l| l.starts_with("Content-Type: ")));
        let next = find(head_end + 4).expect("next delimiter");
        parts.push((range, body[head_end + 4..next].to_vec()));
        at = next;
    }
}

/// Polls `cond` until it holds or `deadline` passes.
async fn eventually(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// Sends a request line as is (no client-side path normalisation); returns status and body.
async fn raw_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status_line = std::str::from_utf8(&buf[..head_end])
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, buf[head_end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_byte_for_byte() {
    let srv = Server::start().await;
    let len = (1 << 20) + 13;
    let data = content(len, 1);
    std::fs::write(srv.root.join("data.bin"), &data).unwrap();
    let url = srv.url("/files/data.bin");

    let (s, h, b) = get(&url, &[]).await;
    assert_eq!(s, 200);
    assert!(b == data);
    assert_eq!(hv(&h, "content-length"), len.to_string());
    assert_eq!(hv(&h, "accept-ranges"), "bytes");
    assert_eq!(hv(&h, "content-type"), "application/octet-stream");
    let etag = hv(&h, "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(httpdate::parse_http_date(&hv(&h, "last-modified")).is_ok());
    let mut sent = b.len() as u64;

    // Single ranges.
    for (spec, start, end) in [
        ("0-0", 0, 1),
        ("0-99", 0, 100),
        ("1000-", 1000, len),
        ("-500", len - 500, len),
        ("-99999999", 0, len),
        ("5-99999999999999999999", 5, len),
        (" 10 - 19 ", 10, 20),
    ] {
        let (s, h, b) = get(&url, &[("range", &format!("bytes={spec}"))]).await;
        assert_eq!(s, 206, "{spec}");
        assert!(b[..] == data[start..end], "{spec}");
        assert_eq!(
            hv(&h, "content-range"),
            format!("bytes {start}-{}/{len}", end - 1)
        );
        assert_eq!(hv(&h, "content-length"), (end - start).to_string());
        sent += b.len() as u64;
    }

    // Several ranges: multipart, client order kept when disjoint, overlaps merged.
    for (spec, want) in [
        ("0-99,200-299", vec![(0, 100), (200, 300)]),
        (
            "700000-700009,3-4,-3",
            vec![(700000, 700010), (3, 5), (len - 3, len)],
        ),
        ("0-99,50-149,1000-1000", vec![(0, 150), (1000, 1001)]),
    ] {
        let (s, h, b) = get(&url, &[("range", &format!("bytes={spec}"))]).await;
        assert_eq!(s, 206, "{spec}");
        assert_eq!(hv(&h, "content-length"), b.len().to_string());
        let parts = multipart(&hv(&h, "content-type"), &b);
        assert_eq!(parts.len(), want.len(), "{spec}");
        for ((range, bytes), (a, e)) in parts.iter().zip(&want) {
            assert_eq!(range, &format!("bytes {a}-{}/{len}", e - 1));
            assert!(bytes[..] == data[*a..*e]);
        }
        sent += b.len() as u64;
    }
    // Overlapping ranges that merge into one: a plain 206.
    let (s, h, b) = get(&url, &[("range", "bytes=0-9,5-19,20-29")]).await;
    assert_eq!(s, 206);
    assert_eq!(hv(&h, "content-range"), format!("bytes 0-29/{len}"));
    assert!(b[..] == data[..30]);
    sent += b.len() as u64;

    // Unsatisfiable.
    let (s, h, _) = get(&url, &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(s, 416);
    assert_eq!(hv(&h, "content-range"), format!("bytes */{len}"));
    let (s, _, _) = get(&url, &[("range", "bytes=-0")]).await;
    assert_eq!(s, 416);
    // Invalid or foreign: ignored, the whole file.
    for bad in ["bytes=5-1", "pages=1-2", "bytes=x", "bytes 0-1"] {
        let (s, _, b) = get(&url, &[("range", bad)]).await;
        assert_eq!(s, 200, "{bad}");
        assert!(b == data);
        sent += b.len() as u64;
    }

    // 16 concurrent ranges reassemble the file.
    let piece = len.div_ceil(16);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let (a, e) = (i * piece, ((i + 1) * piece).min(len));
                let (s, _, b) = get(&url, &[("range", &format!("bytes={a}-{}", e - 1))]).await;
                assert_eq!(s, 206);
                (a, b)
            })
        })
        .collect();
    let mut joined = vec![0u8; len];
    for t in tasks {
        let (a, b) = t.await.unwrap();
        joined[a..a + b.len()].copy_from_slice(&b);
        sent += b.len() as u64;
    }
    assert!(joined == data);

    // Empty file: the whole (empty) file, or 416 for a range that starts in it.
    std::fs::write(srv.root.join("empty"), b"").unwrap();
    let (s, h, b) = get(&srv.url("/files/empty"), &[]).await;
    assert_eq!((s, hv(&h, "content-length"), b.len()), (200, "0".into(), 0));
    let (s, _, _) = get(&srv.url("/files/empty"), &[("range", "bytes=0-")]).await;
    assert_eq!(s, 416);

    // Every body byte of a 200/206 was counted (error texts are not).
    let m = Arc::clone(&srv.metrics);
    assert!(
        eventually(Duration::from_secs(5), || m
            .bytes_served
            .load(Ordering::Relaxed)
            == sent)
        .await,
        "bytes_served {} != {sent}",
        m.bytes_served.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditionals_and_head() {
    let srv = Server::start().await;
    let data = content(10_000, 2);
    std::fs::write(srv.root.join("c.txt"), &data).unwrap();
    let url = srv.url("/files/c.txt");
    let (_, h, _) = get(&url, &[]).await;
    assert_eq!(hv(&h, "content-type"), "text/plain; charset=utf-8");
    let etag = hv(&h, "etag");
    let lm = hv(&h, "last-modified");
    let weak = format!("W/{etag}");
    let epoch = "Thu, 01 Jan 1970 00:00:00 GMT";

    let range = ("range", "bytes=100-199");
    for (headers, want) in [
        (vec![range, ("if-range", etag.as_str())], 206),
        (vec![range, ("if-range", lm.as_str())], 206),
        (vec![range, ("if-range", "\"stale\"")], 200),
        (vec![range, ("if-range", weak.as_str())], 200),
        (vec![range, ("if-range", epoch)], 200),
        (vec![("if-none-match", etag.as_str())], 304),
        (vec![("if-none-match", &format!("\"x\", {weak}"))], 304),
        (vec![("if-none-match", "*")], 304),
        (vec![("if-modified-since", lm.as_str())], 304),
        (vec![("if-modified-since", epoch)], 200),
        (vec![("if-match", etag.as_str())], 200),
        (vec![("if-match", "\"stale\"")], 412),
        (vec![("if-unmodified-since", epoch)], 412),
        (vec![("if-unmodified-since", lm.as_str())], 200),
        (vec![("if-match", "\"stale\""), range], 412),
    ] {
        let (s, h, b) = get(&url, &headers).await;
        assert_eq!(s, want, "{headers:?}");
        match want {
            200 => assert!(b == data),
            206 => assert!(b[..] == data[100..200]),
            304 => {
                assert!(b.is_empty());
                assert_eq!(hv(&h, "etag"), etag);
            }
            _ => assert!(!b.is_empty() && b.len() < 200, "a short text"),
        }
    }

    // HEAD: the GET headers, no body.
    let res = client().head(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    for name in [
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(header(&res, name), hv(&h, name), "{name}");
    }
    assert_eq!(header(&res, "content-length"), "10000");
    assert!(res.bytes().await.unwrap().is_empty());

    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let res = client().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 405, "{method}");
        assert_eq!(header(&res, "allow"), "GET, HEAD");
    }
    assert!(std::fs::read(srv.root.join("c.txt")).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_symlinks_and_the_state_dir() {
    let srv = Server::start().await;
    let secret = b"top secret".to_vec();
    std::fs::write(srv.outside().join("secret.txt"), &secret).unwrap();
    std::fs::create_dir(srv.outside().join("outside")).unwrap();
    std::fs::write(srv.outside().join("outside/secret.txt"), &secret).unwrap();
    std::fs::create_dir(srv.root.join("sub")).unwrap();
    std::fs::write(srv.root.join("sub/inner.txt"), b"inner").unwrap();
    std::fs::create_dir(srv.root.join(".ferry")).unwrap();
    std::fs::write(srv.root.join(".ferry/staged"), &secret).unwrap();
    let link = |target: &dyn AsRef<Path>, at: PathBuf| std::os::unix::fs::symlink(target, at);
    link(&srv.outside().join("outside"), srv.root.join("out-dir")).unwrap();
    link(&srv.outside().join("secret.txt"), srv.root.join("out-file")).unwrap();
    link(&"../secret.txt", srv.root.join("rel-out")).unwrap();
    link(&srv.root.join(".ferry"), srv.root.join("state")).unwrap();
    link(&".ferry/staged", srv.root.join("staged")).unwrap();
    link(&"sub/inner.txt", srv.root.join("in-file")).unwrap();
    link(&srv.root.join("sub"), srv.root.join("in-dir")).unwrap();
    link(&"loop", srv.root.join("loop")).unwrap();
    link(&".", srv.root.join("self")).unwrap();

    // Refused paths: 403 for what no file can be named, 404 for what must look absent.
    for (target, want) in [
        ("/files/../secret.txt", 403),
        ("/files/%2e%2e/secret.txt", 403),
        ("/files/%2E%2E/secret.txt", 403),
        ("/files/..%2fsecret.txt", 403),
        ("/files/..%2Fsecret.txt", 403),
        ("/files/sub/../../secret.txt", 403),
        ("/files/sub%2f..%2f..%2fsecret.txt", 403),
        ("/files/%2e%2e%2f%2e%2e%2fsecret.txt", 403),
        ("/files/..%5csecret.txt", 403),
        ("/files/%2fetc%2fpasswd", 403),
        ("/files//etc/passwd", 403),
        ("/files/sub/%00", 403),
        ("/files/.ferry/staged", 404),
        ("/files/%2eferry/staged", 404),
        ("/files/./.ferry/staged", 404),
        ("/files/.ferry/", 404),
        ("/files/.ferry", 404),
        ("/files/out-dir/secret.txt", 404),
        ("/files/out-dir/", 404),
        ("/files/out-file", 404),
        ("/files/rel-out", 404),
        ("/files/state/staged", 404),
        ("/files/state/", 404),
        ("/files/staged", 404),
        ("/files/loop", 404),
        ("/files/self/.ferry/staged", 404),
        ("/files/self/self/.ferry/", 404),
        ("/files/missing", 404),
        ("/files/%ff", 400),
    ] {
        let (status, body) = raw_get(srv.addr, target).await;
        assert_eq!(status, want, "{target}");
        assert!(
            !body.windows(secret.len()).any(|w| w == secret),
            "{target} leaked"
        );
        assert!(body.len() < 200, "{target}: a short text");
    }
    // The root through a symlink is listed without the state directory.
    let (status, body) = raw_get(srv.addr, "/files/self/").await;
    assert_eq!(status, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(
        page.contains("/files/self/sub/") && !page.contains(".ferry"),
        "{page}"
    );
    for (target, want) in [
        ("/files/sub/inner.txt", &b"inner"[..]),
        ("/files/sub%2Finner.txt", b"inner"),
        ("/files/sub/./inner.txt", b"inner"),
        ("/files/in-file", b"inner"),
        ("/files/in-dir/inner.txt", b"inner"),
    ] {
        let (status, body) = raw_get(srv.addr, target).await;
        assert_eq!((status, &body[..]), (200, want), "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings() {
    let srv = Server::start().await;
    std::fs::create_dir_all(srv.root.join("sub/deeper")).unwrap();
    std::fs::write(srv.root.join("sub/a b&<c>.txt"), b"12345").unwrap();
    std::fs::write(srv.root.join("top.bin"), b"xy").unwrap();
    std::fs::create_dir(srv.root.join(".ferry")).unwrap();
    std::fs::write(srv.root.join(".ferry/staged"), b"s").unwrap();

    // A directory without its slash is redirected.
    let (s, h, _) = get(&srv.url("/files/sub"), &[]).await;
    assert_eq!(s, 301);
    assert_eq!(hv(&h, "location"), "/files/sub/");
    let (s, h, _) = get(&srv.url("/files/sub/deeper"), &[]).await;
    assert_eq!((s, hv(&h, "location")), (301, "/files/sub/deeper/".into()));

    // JSON at the root: no state directory.
    for path in ["/files/", "/"] {
        let (s, h, b) = get(&srv.url(path), &[("accept", "application/json")]).await;
        assert_eq!(s, 200);
        assert_eq!(hv(&h, "content-type"), "application/json");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let names: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["sub", "top.bin"], "{path}");
        assert_eq!(v[0]["type"], "dir");
        assert_eq!(v[1]["type"], "file");
        assert_eq!(v[1]["size"], 2);
        assert!(v[1]["modified"].as_u64().unwrap() > 1_600_000_000);
        // The listed ETag is the file's.
        let (_, fh, _) = get(&srv.url("/files/top.bin"), &[]).await;
        assert_eq!(v[1]["etag"], hv(&fh, "etag"));
    }
    let (s, _, b) = get(
        &srv.url("/files/sub/"),
        &[("accept", "text/html, application/json;q=0.9")],
    )
    .await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v[0]["name"], "deeper");
    assert_eq!(v[1]["name"], "a b&<c>.txt");
    assert_eq!(v[1]["size"], 5);

    // HTML: escaped names, encoded links, a parent link; every link resolves.
    let (s, h, b) = get(&srv.url("/files/sub/"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "content-type"), "text/html; charset=utf-8");
    let page = String::from_utf8(b).unwrap();
    assert!(page.contains(">a b&amp;&lt;c&gt;.txt</a>"), "{page}");
    assert!(!page.contains("<c>"));
    let links: Vec<&str> = page
        .split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(
        links,
        [
            "/files/",
            "/files/sub/deeper/",
            "/files/sub/a%20b%26%3Cc%3E.txt"
        ]
    );
    for link in links {
        let (s, _, _) = get(&srv.url(link), &[]).await;
        assert_eq!(s, 200, "{link}");
    }
    let (_, _, b) = get(&srv.url("/files/sub/a%20b%26%3Cc%3E.txt"), &[]).await;
    assert_eq!(b, b"12345");
    let (s, _, b) = get(&srv.url("/"), &[]).await;
    assert_eq!(s, 200);
    let page = String::from_utf8(b).unwrap();
    assert!(page.contains("href=\"/files/top.bin\""), "{page}");
    assert!(!page.contains(".ferry"));
    assert!(!page.contains("../"));

    // HEAD on a listing: headers, no body.
    let res = client().head(srv.url("/files/sub/")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(header(&res, "content-length").parse::<u64>().unwrap() > 0);
    assert!(res.bytes().await.unwrap().is_empty());
}

/// Whether curl runs; when it does not: a panic in CI (`CI=true`), else a note (skip).
fn have_curl() -> bool {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("curl is not installed (required in CI)");
        }
        eprintln!("SKIPPED: curl is not on PATH");
    }
    found
}

async fn curl(args: &[&str]) -> std::process::Output {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "*"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_interop() {
    if !have_curl() {
        return;
    }
    let srv = Server::start().await;
    let len = 3 * (1 << 20) + 101;
    let data = content(len, 3);
    std::fs::write(srv.root.join("f.bin"), &data).unwrap();
    std::fs::write(srv.outside().join("secret.txt"), b"top secret").unwrap();
    let url = srv.url("/files/f.bin");
    let work = tempfile::tempdir().unwrap();

    // Several ranges: curl writes the multipart body as is.
    let ct = work.path().join("ct");
    let out = curl(&[
        "-r",
        "0-99,200-299,2000000-2100000",
        "-w",
        "%{http_code} %{content_type}",
        "-o",
        ct.to_str().unwrap(),
        &url,
    ])
    .await;
    let w = String::from_utf8(out.stdout).unwrap();
    let (code, content_type) = w.split_once(' ').unwrap();
    assert_eq!(code, "206");
    let parts = multipart(content_type, &std::fs::read(&ct).unwrap());
    let want = [(0, 100), (200, 300), (2_000_000, 2_100_001)];
    assert_eq!(parts.len(), 3);
    let mut concatenated = Vec::new();
    for ((range, bytes), (a, e)) in parts.iter().zip(want) {
        assert_eq!(range, &format!("bytes {a}-{}/{len}", e - 1));
        assert!(bytes[..] == data[a..e]);
        concatenated.extend_from_slice(bytes);
    }
    assert_eq!(concatenated.len(), 100 + 100 + 100_001);

    // Suffix and open ranges.
    let out = curl(&["-r", "-500", &url]).await;
    assert!(out.stdout[..] == data[len - 500..]);
    let out = curl(&["-r", "3000000-", &url]).await;
    assert!(out.stdout[..] == data[3_000_000..]);
    let out = curl(&["-r", "0-0", &url]).await;
    assert_eq!(out.stdout, &data[..1]);

    // Whole file and resume of a partial one (`-C -`).
    let whole = work.path().join("whole");
    curl(&["-o", whole.to_str().unwrap(), &url]).await;
    assert!(std::fs::read(&whole).unwrap() == data);
    let partial = work.path().join("partial");
    std::fs::write(&partial, &data[..1_234_567]).unwrap();
    curl(&["-C", "-", "-o", partial.to_str().unwrap(), &url]).await;
    assert!(std::fs::read(&partial).unwrap() == data);

    // HEAD and an unsatisfiable range.
    let out = curl(&["-I", &url]).await;
    let head = String::from_utf8(out.stdout).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {len}\r\n")));
    assert!(head.contains("accept-ranges: bytes\r\n"));
    let out = curl(&[
        "-r",
        "9999999-",
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &url,
    ])
    .await;
    assert_eq!(out.stdout, b"416");

    // Traversal as typed: curl keeps the dots with --path-as-is.
    for path in ["/files/../secret.txt", "/files/%2e%2e/secret.txt"] {
        let out = curl(&[
            "--path-as-is",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &srv.url(path),
        ])
        .await;
        assert_eq!(out.stdout, b"403", "{path}");
    }
}
