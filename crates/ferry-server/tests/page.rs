//! The browser upload page's server side, in process (the real router over the in-memory state
//! store and a temp directory, on a real socket): the page and its embedded assets at `/` with
//! the listing in it, the sign-in form a browser without a token gets, the pre-upload check
//! (`/page/target`) for every state a target can be in and for two users, and the live event
//! stream (`/page/events`): only the user's own uploads, a snapshot for a late subscriber,
//! landings, and an end at shutdown. The page itself runs in a real browser in
//! `crates/ferry/tests/browser.rs`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_server::data::local::LocalDir;
use ferry_server::store::memory::MemoryStore;
use ferry_server::{Auth, Server, ServerConfig};
use reqwest::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const ANN: &str = "token-of-ann";
const BOB: &str = "token-of-bob";
const DEADLINE: Duration = Duration::from_secs(10);

/// A server over a temp directory with users ann and bob, running on the test's runtime.
struct Srv {
    addr: SocketAddr,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Srv {
    async fn start() -> Srv {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let auth = Auth::parse_users(&format!("ann {ANN}\nbob {BOB}\n")).unwrap();
        let config = ServerConfig::new(&dir, auth);
        let data = LocalDir::open(&dir).unwrap();
        let server = Server::with_stores(
            dir.clone(),
            Arc::new(MemoryStore::new()),
            Arc::new(data),
            &config,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async move {
            let _ = stopped.await;
        }));
        Srv {
            addr,
            dir,
            _tmp: tmp,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Stops the server and waits (with a deadline) for it to finish.
    async fn stop(&mut self) -> Duration {
        let started = std::time::Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(DEADLINE, self.task.take().unwrap())
            .await
            .expect("the server stops in time")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(url: &str, token: Option<&str>, accept: Option<&str>) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

/// Creates an upload of `length` bytes to `path` as the user of `token`; returns its URL path.
async fn create(srv: &Srv, token: &str, path: &str, length: u64, extra: &str) -> String {
    let mut meta = format!("path {}", b64(path));
    if !extra.is_empty() {
        meta.push(',');
        meta.push_str(extra);
    }
    let res = client()
        .post(srv.url("/uploads/"))
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .header("upload-metadata", meta)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    header(&res, "location")
}

async fn patch(srv: &Srv, token: &str, upload: &str, offset: u64, body: &'static [u8]) {
    let res = client()
        .patch(srv.url(upload))
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "{}",
        res.text().await.unwrap()
    );
}

async fn target(srv: &Srv, token: &str, path: &str) -> Value {
    let url = format!("{}?path={}", srv.url("/page/target"), percent_encode(path));
    let res = get(&url, Some(token), None).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    assert_eq!(header(&res, "content-type"), "application/json");
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_the_listing_and_its_assets() {
    let srv = Srv::start().await;
    std::fs::write(srv.path("a b.txt"), b"hello").unwrap();
    std::fs::create_dir(srv.path("sub")).unwrap();

    let res = get(&srv.url("/"), Some(ANN), Some("text/html")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    let csp = header(&res, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("http"), "nothing from elsewhere: {csp}");
    let page = res.text().await.unwrap();
    for part in [
        "id=\"pick-files\"",
        "id=\"pick-folder\"",
        "webkitdirectory",
        "<script src=\"/page/app.js\" defer></script>",
        "href=\"/page/app.css\"",
        "<table id=\"listing\"",
        "href=\"/files/a%20b.txt\">a b.txt</a>",
        "href=\"/files/sub/\">sub/</a>",
    ] {
        assert!(page.contains(part), "{part} missing from {page}");
    }
    assert!(!page.contains("{{"), "every placeholder filled");
    assert!(!page.contains("://"), "no external resource: {page}");

    for (path, kind, needle) in [
        (
            "/page/app.js",
            "text/javascript; charset=utf-8",
            "new EventSource('/page/events')",
        ),
        ("/page/app.css", "text/css; charset=utf-8", ".item progress"),
    ] {
        let res = get(&srv.url(path), Some(ANN), None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&res, "content-type"), kind);
        assert_eq!(header(&res, "x-content-type-options"), "nosniff");
        let body = res.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        assert!(
            !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }

    // JSON clients still get the listing at `/`; HEAD has the page's headers and no body.
    let res = get(&srv.url("/"), Some(ANN), Some("application/json")).await;
    assert_eq!(header(&res, "content-type"), "application/json");
    let list: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(list[0]["name"], "sub");
    let res = client()
        .head(srv.url("/"))
        .bearer_auth(ANN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "content-length").parse::<u64>().unwrap() > 1000);
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_a_token_gets_a_sign_in_form() {
    let srv = Srv::start().await;
    let res = get(&srv.url("/"), None, Some("text/html,*/*")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&res, "www-authenticate"), "Bearer realm=\"ferry\"");
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    let form = res.text().await.unwrap();
    assert!(
        form.contains("<form method=\"get\" action=\"/\">"),
        "{form}"
    );
    assert!(form.contains("name=\"token\""));
    assert!(!form.contains("not accepted"));

    let res = get(&srv.url("/?token=wrong-token"), None, Some("text/html")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("That token was not accepted.")
    );

    // A signed-in link: the page, and a cookie that signs in what follows.
    let res = get(&srv.url(&format!("/?token={ANN}")), None, Some("text/html")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "set-cookie").starts_with("ferry_token="));

    // Scripts and other paths keep the plain refusal.
    let res = get(&srv.url("/"), None, None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.text()
            .await
            .unwrap()
            .starts_with("a valid token is required")
    );
    for path in ["/page/target?path=x", "/page/events", "/page/app.js"] {
        let res = get(&srv.url(path), None, Some("text/html")).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(!res.text().await.unwrap().contains("<form"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_upload_check_says_what_is_at_a_target() {
    let srv = Srv::start().await;
    assert_eq!(
        target(&srv, ANN, "new/file.bin").await,
        serde_json::json!({"state": "free", "target": "new/file.bin"})
    );

    // Ann's unfinished upload: hers to resume (with the fingerprint the page stored), busy
    // for bob.
    let fp = b64("big.bin:10:1700000000000");
    let up = create(&srv, ANN, "big.bin", 10, &format!("fingerprint {fp}")).await;
    patch(&srv, ANN, &up, 0, b"0123").await;
    let t = target(&srv, ANN, "big.bin").await;
    assert_eq!(t["state"], "unfinished", "{t}");
    assert_eq!(format!("/uploads/{}", t["id"].as_str().unwrap()), up);
    assert_eq!(t["offset"], 4);
    assert_eq!(t["length"], 10);
    assert_eq!(t["fingerprint"], "big.bin:10:1700000000000");
    assert!(t.get("metadata").is_none(), "{t}");
    assert_eq!(
        target(&srv, BOB, "big.bin").await,
        serde_json::json!({"state": "busy", "target": "big.bin"})
    );

    // A file ann landed: she may replace it, bob may not. A file nobody uploaded, with two
    // users: nobody may.
    let up = create(&srv, ANN, "mine.txt", 2, "").await;
    patch(&srv, ANN, &up, 0, b"ok").await;
    let t = target(&srv, ANN, "mine.txt").await;
    assert_eq!(
        (t["state"].as_str(), t["may_replace"].as_bool()),
        (Some("exists"), Some(true))
    );
    let t = target(&srv, BOB, "mine.txt").await;
    assert_eq!(
        (t["state"].as_str(), t["may_replace"].as_bool()),
        (Some("exists"), Some(false))
    );
    std::fs::write(srv.path("placed.txt"), b"x").unwrap();
    let t = target(&srv, ANN, "placed.txt").await;
    assert_eq!(t["may_replace"], false, "{t}");

    std::fs::create_dir(srv.path("folder")).unwrap();
    assert_eq!(target(&srv, ANN, "folder").await["state"], "directory");
    // Normalised like an upload's metadata path.
    assert_eq!(target(&srv, ANN, "./a//b.txt").await["target"], "a/b.txt");

    for bad in ["../up.txt", "/abs", "", ".ferry/x"] {
        let url = format!("{}?path={}", srv.url("/page/target"), percent_encode(bad));
        let res = get(&url, Some(ANN), None).await;
        assert!(res.status().is_client_error(), "{bad}: {}", res.status());
    }
}

/// Reads server-sent events from a response: `(event, data)` pairs, each within the deadline.
struct Events {
    res: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(srv: &Srv, token: &str) -> Events {
        let res = get(
            &srv.url("/page/events"),
            Some(token),
            Some("text/event-stream"),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "content-type"), "text/event-stream");
        Events {
            res,
            buf: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(DEADLINE, self.res.chunk())
                .await
                .expect("an event within the deadline")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn expect(&mut self, name: &str) -> Value {
        let (got, data) = self.next().await.expect("the stream goes on");
        assert_eq!(got, name, "{data}");
        data
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_pushes_the_users_own_progress_and_landings() {
    let mut srv = Srv::start().await;
    let mut ann = Events::open(&srv, ANN).await;
    assert_eq!(ann.expect("ready").await, serde_json::json!({}));

    // Bob's upload is not ann's business; her own progress and landing are.
    let bobs = create(&srv, BOB, "bob.bin", 3, "").await;
    patch(&srv, BOB, &bobs, 0, b"bob").await;
    // Nor is a partial upload (a part of a client's concatenation): it has no target.
    let res = client()
        .post(srv.url("/uploads/"))
        .bearer_auth(ANN)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "3")
        .header("upload-concat", "partial")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    patch(&srv, ANN, &header(&res, "location"), 0, b"prt").await;
    let up = create(&srv, ANN, "dir/ann.bin", 10, "").await;
    let id = up.trim_start_matches("/uploads/");
    patch(&srv, ANN, &up, 0, b"0123").await;
    let p = ann.expect("progress").await;
    assert_eq!(p["id"], id);
    assert_eq!(p["target"], "dir/ann.bin");
    assert_eq!(
        (p["offset"].as_u64(), p["length"].as_u64()),
        (Some(4), Some(10))
    );
    assert!(p.get("owner").is_none(), "{p}");

    // A page opened now learns where the upload stands first.
    let mut late = Events::open(&srv, ANN).await;
    let p = late.expect("progress").await;
    assert_eq!(
        (p["id"].as_str(), p["offset"].as_u64()),
        (Some(id), Some(4))
    );
    late.expect("ready").await;
    let mut bob = Events::open(&srv, BOB).await;
    bob.expect("ready").await;

    patch(&srv, ANN, &up, 4, b"456789").await;
    for events in [&mut ann, &mut late] {
        assert_eq!(events.expect("progress").await["offset"], 10);
        let l = events.expect("landed").await;
        assert_eq!(
            (l["id"].as_str(), l["target"].as_str()),
            (Some(id), Some("dir/ann.bin"))
        );
        assert_eq!(l["length"], 10);
    }
    assert_eq!(
        std::fs::read(srv.path("dir/ann.bin")).unwrap(),
        b"0123456789"
    );

    // An upload terminated by its owner ends on every page of hers.
    let gone = create(&srv, ANN, "gone.bin", 10, "").await;
    patch(&srv, ANN, &gone, 0, b"01").await;
    assert_eq!(ann.expect("progress").await["offset"], 2);
    let res = client()
        .delete(srv.url(&gone))
        .bearer_auth(ANN)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let e = ann.expect("ended").await;
    assert_eq!(
        (e["id"].as_str(), e["target"].as_str(), e["reason"].as_str()),
        (
            Some(gone.trim_start_matches("/uploads/")),
            Some("gone.bin"),
            Some("terminated")
        )
    );

    // Shutdown ends the streams cleanly rather than cutting them off after the grace period
    // (a cut chunked body is an error, which `next` does not take for an end).
    let took = srv.stop().await;
    eprintln!("the server stopped {took:?} after the shutdown signal");
    assert!(ann.next().await.is_none());
    assert!(bob.next().await.is_none(), "bob saw none of ann's events");
}

#[test]
fn the_page_loads_nothing_from_elsewhere() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/page");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("html" | "js" | "css")
        ) {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{} refers to another site",
                path.display()
            );
        }
    }
}
