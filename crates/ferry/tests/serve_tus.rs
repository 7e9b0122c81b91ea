//! tus uploads into the real `ferry serve` binary where only a real process will do: kill -9
//! and restart (every upload resumes at its offset from the embedded store, unverified bytes
//! are discarded), and a full disk (507, accepted bytes kept). The protocol's conformance runs
//! in process over the in-memory store: `crates/ferry-server/tests/tus.rs`.

use ferry_testkit::serve::FerryServe;
use ferry_testkit::tmpfs::Tmpfs;
use ferry_testkit::tus::{TusTester, raw_patch, sha1_b64, text};
use ferry_testkit::util::random_bytes;
use reqwest::{Method, StatusCode};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

const MIB: usize = 1 << 20;
const ANN: &str = "token-of-ann";
const BOB: &str = "token-of-bob";

/// A served temp dir (or a given dir) and a client speaking tus as one user.
struct Env {
    srv: FerryServe,
    tus: TusTester,
    _tmp: Option<tempfile::TempDir>,
    _users: tempfile::TempDir,
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
            tus: TusTester::new(srv.url(""), dir.to_path_buf(), ANN),
            srv,
            _tmp: tmp,
            _users: users_dir,
        }
    }
}

impl std::ops::Deref for Env {
    type Target = TusTester;

    fn deref(&self) -> &TusTester {
        &self.tus
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- ferry serve log ---\n{}", self.srv.log());
        }
    }
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
    let _conn = raw_patch(env.srv.port(), ANN, &a, 0, data.len(), &data[..sent]);
    env.wait_staged(&a, sent as u64);
    env.srv.kill_hard();
    env.srv.restart();
    env.tus.client = reqwest::Client::new(); // the pooled connections died with the server
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
    env.wait_staged(&c, 2 * MIB as u64);
    env.srv.kill_hard();
    env.srv.restart();
    env.tus.client = reqwest::Client::new(); // the pooled connections died with the server
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
