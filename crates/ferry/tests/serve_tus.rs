//! tus uploads into the real `ferry serve` binary where only a real process will do: kill -9
//! and restart (every upload resumes at its offset from the embedded store, unverified bytes
//! are discarded), and a full disk (507, accepted bytes kept). The protocol's conformance runs
//! in process over the in-memory store: `crates/ferry-server/tests/tus.rs`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_testkit::serve::FerryServe;
use ferry_testkit::tmpfs::Tmpfs;
use ferry_testkit::util::{random_bytes, wait_until};
use reqwest::{Method, Response, StatusCode};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: usize = 1 << 20;
const ANN: &str = "token-of-ann";
const BOB: &str = "token-of-bob";

/// A served temp dir (or a given dir) and a client speaking tus as one user.
struct Env {
    srv: FerryServe,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    _users: tempfile::TempDir,
    client: reqwest::Client,
}

impl Env {
    /// Two users, ann and bob, unless `args` says otherwise.
    fn start(args: &[&str]) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        Env::start_in(&dir, args, Some(tmp))
    }

    fn start_in(dir: &Path, args: &[&str], tmp: Option<tempfile::TempDir>) -> Env {
        // Outside the served directory, and removed with the Env.
        let users_dir = tempfile::tempdir().unwrap();
        let users = users_dir.path().join("users.txt");
        std::fs::write(&users, format!("# test users\nann {ANN}\nbob {BOB}\n")).unwrap();
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !args.iter().any(|a| *a == "--public" || *a == "--token") {
            all.extend(["--users".to_string(), users.to_string_lossy().into_owned()]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let srv = FerryServe::start(env!("CARGO_BIN_EXE_ferry"), dir, &all);
        Env {
            srv,
            dir: dir.to_path_buf(),
            _tmp: tmp,
            _users: users_dir,
            client: reqwest::Client::new(),
        }
    }

    fn req(&self, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            self.srv.url(path)
        };
        self.client
            .request(method, url)
            .header("Tus-Resumable", "1.0.0")
            .bearer_auth(token)
    }

    /// POST /uploads/ with a length (or deferred) and metadata; asserts 201; returns the URL path.
    async fn create(&self, token: &str, len: Option<u64>, meta: &[(&str, &str)]) -> String {
        let r = self.post(token, len, meta, &[]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
        location(&r)
    }

    async fn post(
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

    async fn patch(&self, token: &str, url: &str, offset: u64, body: &[u8]) -> Response {
        self.req(token, Method::PATCH, url)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// A PATCH that must be accepted (204).
    async fn patch_ok(&self, token: &str, url: &str, offset: u64, body: &[u8]) {
        let r = self.patch(token, url, offset, body).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    }

    async fn head(&self, token: &str, url: &str) -> Response {
        self.req(token, Method::HEAD, url).send().await.unwrap()
    }

    async fn offset(&self, token: &str, url: &str) -> u64 {
        let r = self.head(token, url).await;
        assert_eq!(r.status(), StatusCode::OK);
        header(&r, "upload-offset").parse().unwrap()
    }

    /// The staged data file of an upload URL.
    fn staged(&self, url: &str) -> PathBuf {
        self.dir
            .join(".ferry/uploads")
            .join(url.rsplit('/').next().unwrap())
    }

    fn staged_len(&self, url: &str) -> Option<u64> {
        std::fs::metadata(self.staged(url)).ok().map(|m| m.len())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- ferry serve log ---\n{}", self.srv.log());
        }
    }
}

fn metadata(meta: &[(&str, &str)]) -> String {
    meta.iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {r:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

fn location(r: &Response) -> String {
    let loc = header(r, "location");
    assert!(loc.starts_with("/uploads/"), "{loc}");
    loc
}

async fn text(r: Response) -> String {
    let status = r.status();
    format!("{status}: {}", r.text().await.unwrap_or_default())
}

fn sha1_b64(data: &[u8]) -> String {
    use system_sha1::digest;
    STANDARD.encode(digest(data))
}

/// SHA-1 through the system's `sha1sum`, so the test does not trust the server's own hasher.
mod system_sha1 {
    pub fn digest(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("sha1sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha1sum");
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        let hex = String::from_utf8(out.stdout).unwrap();
        (0..40)
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }
}

/// A PATCH written by hand on a raw socket: headers announcing `declared` bytes, then only
/// `body`. The connection stays open (holding the upload) until the stream is dropped.
fn raw_patch(
    env: &Env,
    token: &str,
    url: &str,
    offset: u64,
    declared: usize,
    body: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", env.srv.port())).unwrap();
    write!(
        s,
        "PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {token}\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    s
}

fn wait_staged(env: &Env, url: &str, len: u64) {
    assert!(
        wait_until(Duration::from_secs(15), || env.staged_len(url) == Some(len)),
        "staged length stayed at {:?}, expected {len}",
        env.staged_len(url)
    );
}
#[tokio::test]
async fn kill_9_and_restart_resumes_every_upload() {
    let mut env = Env::start(&[]);
    let data = random_bytes(8 * MIB, 13);
    let a = env
        .create(ANN, Some(data.len() as u64), &[("filename", "a.bin")])
        .await;
    let b = env.create(BOB, None, &[("path", "dir/b.bin")]).await;
    env.patch_ok(BOB, &b, 0, &data[..MIB]).await;
    // ann is mid-PATCH when the server is killed: the bytes that reached the disk survive.
    let sent = 3 * MIB + 4321;
    let _conn = raw_patch(&env, ANN, &a, 0, data.len(), &data[..sent]);
    wait_staged(&env, &a, sent as u64);
    env.srv.kill_hard();
    env.srv.restart();
    env.client = reqwest::Client::new(); // the pooled connections died with the server
    assert_eq!(env.offset(ANN, &a).await, sent as u64);
    assert_eq!(env.offset(BOB, &b).await, MIB as u64);
    assert_eq!(
        env.head(BOB, &a).await.status(),
        StatusCode::FORBIDDEN,
        "ownership survives"
    );
    env.patch_ok(ANN, &a, sent as u64, &data[sent..]).await;
    let r = env
        .req(BOB, Method::PATCH, &b)
        .header("Upload-Offset", MIB.to_string())
        .header("Upload-Length", data.len().to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(data[MIB..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(std::fs::read(env.dir.join("a.bin")).unwrap() == data);
    assert!(std::fs::read(env.dir.join("dir/b.bin")).unwrap() == data);
    // A checksummed PATCH cut by a kill leaves unverified bytes: they are discarded.
    let c = env
        .create(ANN, Some(data.len() as u64), &[("filename", "c.bin")])
        .await;
    let mut s = TcpStream::connect(("127.0.0.1", env.srv.port())).unwrap();
    write!(
        s,
        "PATCH {c} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {ANN}\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Checksum: sha1 {}\r\nContent-Length: {}\r\n\r\n",
        sha1_b64(&data),
        data.len()
    )
    .unwrap();
    s.write_all(&data[..2 * MIB]).unwrap();
    wait_staged(&env, &c, 2 * MIB as u64);
    env.srv.kill_hard();
    env.srv.restart();
    env.client = reqwest::Client::new(); // the pooled connections died with the server
    assert_eq!(env.offset(ANN, &c).await, 0);
    env.patch_ok(ANN, &c, 0, &data).await;
    assert!(std::fs::read(env.dir.join("c.bin")).unwrap() == data);
}

/// A full disk answers 507 and loses nothing already accepted; with room again, the upload
/// resumes from the kept bytes. Needs root for the tmpfs (as scripts/test.sh and CI have).
#[tokio::test]
async fn a_full_disk_answers_507_and_keeps_accepted_bytes() {
    let disk = Tmpfs::mount(8);
    let dir = disk.path().canonicalize().unwrap();
    std::fs::create_dir(dir.join("srv")).unwrap();
    let env = Env::start_in(&dir.join("srv"), &["--public"], None);
    let data = random_bytes(12 * MIB, 15);
    // A known length larger than the disk: refused at creation, nothing staged.
    let r = env
        .post("", Some(data.len() as u64), &[("filename", "big.bin")], &[])
        .await;
    assert_eq!(
        r.status(),
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        text(r).await
    );
    // A deferred length runs into the wall mid-PATCH.
    let url = env.create("", None, &[("filename", "big.bin")]).await;
    let r = env.patch("", &url, 0, &data).await;
    assert_eq!(
        r.status(),
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        text(r).await
    );
    let kept = env.offset("", &url).await;
    assert!(kept > 0 && kept < data.len() as u64, "kept {kept}");
    let staged = std::fs::read(env.staged(&url)).unwrap();
    assert_eq!(staged.len() as u64, kept);
    assert!(
        staged == data[..kept as usize],
        "the kept bytes are exactly what was sent"
    );
    disk.resize(32);
    let r = env
        .req("", Method::PATCH, &url)
        .header("Upload-Offset", kept.to_string())
        .header("Upload-Length", data.len().to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(data[kept as usize..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    assert!(std::fs::read(env.dir.join("big.bin")).unwrap() == data);
}
