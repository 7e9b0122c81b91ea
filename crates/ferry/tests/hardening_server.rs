//! `ferry serve` against hostile clients, on the real binary: connections that never finish
//! their headers (timed out, capped, out of descriptors) while real uploads and downloads
//! finish byte-identical; sizes and concatenations that would overflow or multiply; a disk
//! filled by reservations, leftovers and quotas; who may replace a landed file; and the
//! smaller items of issue 13. What each limit and refusal is: docs/security.md.

use ferry_testkit::serve::FerryServe;
use ferry_testkit::tus::{TusTester, text};
use ferry_testkit::util::{random_bytes, wait_until};
use reqwest::StatusCode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1 << 20;
const ANN: &str = "token-of-ann-the-uploader";
const BOB: &str = "token-of-bob-the-other";
const ROOT: &str = "token-of-root-the-admin";

/// A served temp dir with three users (ann, bob, and root, an admin) and a tus client.
struct Env {
    srv: FerryServe,
    tus: TusTester,
    dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
    _users: tempfile::TempDir,
}

impl Env {
    fn start(args: &[&str]) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        Env::start_in(&dir, tmp, args, env!("CARGO_BIN_EXE_ferry").as_ref())
    }

    /// Serves `dir` with `bin` (the ferry binary, or a wrapper script that execs it).
    fn start_in(dir: &Path, tmp: tempfile::TempDir, args: &[&str], bin: &Path) -> Env {
        let users_dir = tempfile::tempdir().unwrap();
        let users = users_dir.path().join("users.txt");
        std::fs::write(&users, format!("ann {ANN}\nbob {BOB}\nroot {ROOT} admin\n")).unwrap();
        let mut all: Vec<&str> = args.to_vec();
        let users_arg = users.to_string_lossy().into_owned();
        if !args.iter().any(|a| *a == "--public" || *a == "--token") {
            all.extend(["--users", &users_arg]);
        }
        let srv = FerryServe::start(bin, dir, &all);
        Env {
            tus: TusTester::new(srv.url(""), dir.to_path_buf(), ANN),
            srv,
            dir: dir.to_path_buf(),
            _tmp: tmp,
            _users: users_dir,
        }
    }

    /// The descriptors the server process holds now.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.srv.pid().unwrap()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl std::ops::Deref for Env {
    type Target = TusTester;

    fn deref(&self) -> &TusTester {
        &self.tus
    }
}

/// `n` connections that send the start of a request and never finish its headers.
fn stalled_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /files/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect()
}

/// Whether the server closed `s` (end of stream or a reset), waiting at most `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer (408) before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// A tus upload of `data` to `name` as ann, in two PATCHes; returns the upload URL.
async fn upload(env: &Env, name: &str, data: &[u8]) -> String {
    let url = env
        .create(ANN, Some(data.len() as u64), &[("filename", name)])
        .await;
    let half = data.len() / 2;
    env.patch_ok(ANN, &url, 0, &data[..half]).await;
    env.patch_ok(ANN, &url, half as u64, &data[half..]).await;
    url
}

async fn download(env: &Env, path: &str) -> Vec<u8> {
    let r = env
        .client
        .get(env.url(path))
        .bearer_auth(ANN)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap().to_vec()
}

/// Hundreds of connections that never finish their headers hold no one up: uploads and
/// downloads finish byte-identical meanwhile, and the stalled connections are closed once the
/// header timeout passes.
#[tokio::test]
async fn half_open_connections_neither_block_others_nor_stay_forever() {
    let env = Env::start(&["--header-timeout", "3s"]);
    let served = random_bytes(4 * MIB, 1);
    std::fs::write(env.dir.join("served.bin"), &served).unwrap();
    let mut stalled = stalled_connections(env.srv.port(), 300);

    let data = random_bytes(3 * MIB, 2);
    upload(&env, "up.bin", &data).await;
    assert!(std::fs::read(env.dir.join("up.bin")).unwrap() == data);
    assert!(download(&env, "/files/served.bin").await == served);
    let out = tempfile::tempdir().unwrap();
    let got = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["get", "-q", "-x", "4", "-H"])
        .arg(format!("Authorization: Bearer {ANN}"))
        .arg(env.url("/files/served.bin"))
        .current_dir(out.path())
        .output()
        .unwrap();
    assert!(got.status.success(), "{got:?}");
    assert!(std::fs::read(out.path().join("served.bin")).unwrap() == served);

    for s in &mut stalled {
        assert!(
            closed_by_server(s, Duration::from_secs(30)),
            "a connection without complete headers stayed open past the header timeout"
        );
    }
    // And the server answers as before.
    assert!(download(&env, "/files/served.bin").await == served);
}

/// A client that stops reading a download holds its connection only for the keep-alive
/// timeout: no byte moved and no request in a handler, the server closes it.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let env = Env::start(&["--keepalive-timeout", "2s"]);
    std::fs::write(env.dir.join("big.bin"), random_bytes(64 * MIB, 7)).unwrap();
    let before = env.open_fds();
    let mut s = TcpStream::connect(("127.0.0.1", env.srv.port())).unwrap();
    write!(
        s,
        "GET /files/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ANN}\r\n\r\n"
    )
    .unwrap();
    // Accepted and sending (socket, its duplicate, the file) …
    assert!(wait_until(Duration::from_secs(10), || env.open_fds() > before));
    // … then, with the client reading nothing, closed.
    assert!(
        wait_until(Duration::from_secs(30), || env.open_fds() <= before),
        "the stalled download's connection stayed open"
    );
    drop(s);
}

/// At the connection cap, further clients wait for a slot (the server does not accept more
/// descriptors than the cap allows), and are served once stalled connections time out.
#[tokio::test]
async fn at_the_connection_cap_new_clients_wait_for_a_slot() {
    let env = Env::start(&["--max-connections", "8", "--header-timeout", "2s"]);
    std::fs::write(env.dir.join("small.txt"), b"hello").unwrap();
    let before = env.open_fds();
    let _stalled = stalled_connections(env.srv.port(), 40);
    // The server takes 8 of them (two descriptors each: the socket and its duplicate).
    assert!(wait_until(Duration::from_secs(10), || env.open_fds() >= before + 2 * 8));
    let held = env.open_fds();
    assert!(
        held <= before + 2 * 8 + 2,
        "{held} descriptors with the cap at 8 connections (before: {before})"
    );
    // Served once the stalled connections before it in the queue timed out.
    assert_eq!(download(&env, "/files/small.txt").await, b"hello");
}

/// Out of descriptors (a low open-file limit and a high cap), the server pauses accepting
/// instead of failing, and serves again once connections close.
#[tokio::test]
async fn out_of_descriptors_the_server_pauses_accepting_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    std::fs::write(dir.join("small.txt"), b"hello").unwrap();
    let wrapper_dir = tempfile::tempdir().unwrap();
    let wrapper = wrapper_dir.path().join("ferry-low-nofile");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -n 64\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_ferry")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    let env = Env::start_in(&dir, tmp, &["--max-connections", "500"], &wrapper);
    let stalled = stalled_connections(env.srv.port(), 100);
    assert!(
        wait_until(Duration::from_secs(20), || env
            .srv
            .log()
            .contains("accepting connections paused")),
        "{}",
        env.srv.log()
    );
    drop(stalled);
    assert_eq!(download(&env, "/files/small.txt").await, b"hello");
    assert!(env.srv.pid().is_some());
}

/// A `--token` shorter than 16 characters is refused at start, with what to do instead.
#[test]
fn a_short_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--token", "abc"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at least 16"), "{err}");
}

/// Asserts the answer's status (showing its body when it differs); returns the body.
async fn expect(r: reqwest::Response, status: StatusCode) -> String {
    let got = r.status();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(got, status, "{body}");
    body
}

/// A partial upload of `data`, complete; returns its URL path.
async fn complete_part(env: &Env, token: &str, data: &[u8]) -> String {
    let r = env
        .post(
            token,
            Some(data.len() as u64),
            &[],
            &[("Upload-Concat", "partial")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let url = ferry_testkit::tus::location(&r);
    env.patch_ok(token, &url, 0, data).await;
    url
}

/// POST of a final upload of `parts` named `name`.
async fn post_final(env: &Env, parts: &[&str], name: &str) -> reqwest::Response {
    let concat = format!("final;{}", parts.join(" "));
    env.req(ANN, reqwest::Method::POST, "/uploads/")
        .header("Upload-Concat", concat)
        .header(
            "Upload-Metadata",
            ferry_testkit::tus::metadata(&[("filename", name)]),
        )
        .send()
        .await
        .unwrap()
}

/// A partial upload whose length is deferred; returns its URL path.
async fn deferred_part(env: &Env) -> String {
    let r = env
        .post(ANN, None, &[], &[("Upload-Concat", "partial")])
        .await;
    ferry_testkit::tus::location(&r)
}

/// An empty PATCH declaring a deferred length.
async fn declare(env: &Env, url: &str, len: u64) -> reqwest::Response {
    env.req(ANN, reqwest::Method::PATCH, url)
        .header("Upload-Offset", "0")
        .header("Upload-Length", len.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(Vec::new())
        .send()
        .await
        .unwrap()
}

/// A part named twice is refused, and a total over --max-upload-size is refused at creation
/// (known lengths) or when a deferred length becomes known; lengths that overflow 64 bits are
/// refused, not wrapped.
#[tokio::test]
async fn concatenated_sizes_are_checked() {
    let env = Env::start(&["--max-upload-size", "10"]);
    let p = complete_part(&env, ANN, b"abcdef").await;
    let r = post_final(&env, &[&p, &p], "twice.bin").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(text(r).await.contains("more than once"));
    let q = complete_part(&env, ANN, b"ghijkl").await;
    let r = post_final(&env, &[&p, &q], "twelve.bin").await;
    expect(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(env.offset(ANN, &p).await, 6, "the part is intact");
    assert!(!env.dir.join("twelve.bin").exists());

    // Deferred parts: the total is checked as their lengths become known.
    let d1 = deferred_part(&env).await;
    let d2 = deferred_part(&env).await;
    let r = post_final(&env, &[&d1, &d2], "deferred.bin").await;
    expect(r, StatusCode::CREATED).await;
    let r = declare(&env, &d1, 6).await;
    expect(r, StatusCode::NO_CONTENT).await;
    let r = declare(&env, &d2, 6).await;
    expect(r, StatusCode::PAYLOAD_TOO_LARGE).await;

    // No size limit and no quota: lengths that add up past 2^64 are refused.
    let env = Env::start(&["--quota", "off"]);
    let d1 = deferred_part(&env).await;
    let d2 = deferred_part(&env).await;
    let r = post_final(&env, &[&d1, &d2], "huge.bin").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = declare(&env, &d1, u64::MAX - 1).await;
    expect(r, StatusCode::NO_CONTENT).await;
    let r = declare(&env, &d2, 2).await;
    expect(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(!env.srv.log().contains("panicked"), "{}", env.srv.log());
}

/// Finals created at once naming the same parts: one wins and lands the file; the others are
/// refused with 409 or 423 (never a 5xx), and the parts' records stay intact.
#[tokio::test]
async fn concurrent_finals_naming_the_same_parts_have_one_winner() {
    let env = Env::start(&[]);
    let a = random_bytes(MIB, 3);
    let b = random_bytes(MIB, 4);
    let p = complete_part(&env, ANN, &a).await;
    let q = complete_part(&env, ANN, &b).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (client, url) = (env.client.clone(), env.url("/uploads/"));
        let concat = format!("final;{p} {q}");
        let meta = ferry_testkit::tus::metadata(&[("filename", &format!("f{i}.bin"))]);
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("Tus-Resumable", "1.0.0")
                .bearer_auth(ANN)
                .header("Upload-Concat", concat)
                .header("Upload-Metadata", meta)
                .send()
                .await
                .unwrap();
            (i, r.status(), r.text().await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => winners.push(i),
            StatusCode::CONFLICT | StatusCode::LOCKED => {}
            s => panic!("final {i}: {s}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let landed = std::fs::read(env.dir.join(format!("f{}.bin", winners[0]))).unwrap();
    assert!(landed[..MIB] == a[..] && landed[MIB..] == b[..]);
    for part in [&p, &q] {
        assert_eq!(env.offset(ANN, part).await, MIB as u64);
    }
}

/// The served directory on a small disk (tmpfs).
fn on_small_disk(mib: usize, args: &[&str]) -> (Env, ferry_testkit::tmpfs::Tmpfs) {
    let disk = ferry_testkit::tmpfs::Tmpfs::mount(mib);
    let dir = disk.path().join("served");
    std::fs::create_dir(&dir).unwrap();
    let env = Env::start_in(
        &dir,
        tempfile::tempdir().unwrap(),
        args,
        env!("CARGO_BIN_EXE_ferry").as_ref(),
    );
    (env, disk)
}

fn staged_files(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.dir.join(".ferry/uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A creation whose space reservation fails (507) leaves nothing behind: no staged file, no
/// space held; uploads that fit still work.
#[tokio::test]
async fn a_failed_reservation_gives_its_space_back() {
    let (env, _disk) = on_small_disk(16, &[]);
    for _ in 0..3 {
        let r = env
            .post(ANN, Some(64 * MIB as u64), &[("filename", "big.bin")], &[])
            .await;
        expect(r, StatusCode::INSUFFICIENT_STORAGE).await;
    }
    assert_eq!(staged_files(&env), Vec::<String>::new());
    let data = random_bytes(8 * MIB, 5);
    upload(&env, "fits.bin", &data).await;
    assert!(std::fs::read(env.dir.join("fits.bin")).unwrap() == data);
}

/// At start the server removes staged data no record owns (only names it creates, only in its
/// staging directory); the data of a live upload stays and resumes.
#[tokio::test]
async fn staged_data_no_record_owns_is_removed_at_start() {
    let mut env = Env::start(&[]);
    let data = random_bytes(MIB, 6);
    let live = env
        .create(ANN, Some(data.len() as u64), &[("filename", "live.bin")])
        .await;
    env.patch_ok(ANN, &live, 0, &data[..1000]).await;
    env.srv.kill_hard();
    let staging = env.dir.join(".ferry/uploads");
    let orphan = "0123456789abcdef0123456789abcdef";
    for name in [
        orphan.to_string(),
        format!("{orphan}.unverified"),
        "notes.txt".into(),
    ] {
        std::fs::write(staging.join(&name), b"x").unwrap();
    }
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for e in std::fs::read_dir(&staging).unwrap() {
        let f = std::fs::File::options()
            .write(true)
            .open(e.unwrap().path())
            .unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    env.srv.restart();
    assert!(
        wait_until(Duration::from_secs(15), || !staging.join(orphan).exists()),
        "{}",
        env.srv.log()
    );
    assert!(!staging.join(format!("{orphan}.unverified")).exists());
    assert!(
        staging.join("notes.txt").exists(),
        "not a name the server creates"
    );
    env.tus.client = reqwest::Client::new();
    assert_eq!(env.offset(ANN, &live).await, 1000);
    env.patch_ok(ANN, &live, 1000, &data[1000..]).await;
    assert!(std::fs::read(env.dir.join("live.bin")).unwrap() == data);
}

/// Per-user quotas: unfinished uploads (429) and reserved + staged bytes (507), with messages
/// that say what to do; another user is not affected; finishing an upload frees its share.
#[tokio::test]
async fn per_user_quotas() {
    let env = Env::start(&["--quota", "3M", "--quota-uploads", "2"]);
    let a = env
        .create(ANN, Some(MIB as u64), &[("filename", "a")])
        .await;
    let r = env
        .post(ANN, Some(3 * MIB as u64), &[("filename", "b")], &[])
        .await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(text(r).await.contains("quota"));
    let deferred = env.create(ANN, None, &[("filename", "d")]).await;
    let r = env.post(ANN, Some(1), &[("filename", "c")], &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(text(r).await.contains("unfinished uploads"));
    // A deferred-length upload grows only up to the quota.
    let r = env.patch(ANN, &deferred, 0, &vec![7u8; 3 * MIB]).await;
    expect(r, StatusCode::INSUFFICIENT_STORAGE).await;
    env.patch_ok(ANN, &deferred, 0, &vec![7u8; MIB]).await;
    // Bob has his own.
    env.create(BOB, Some(2 * MIB as u64), &[("filename", "bob")])
        .await;
    // Finishing frees the share.
    env.patch_ok(ANN, &a, 0, &vec![1u8; MIB]).await;
    env.create(ANN, Some(MIB as u64), &[("filename", "e")])
        .await;
}

/// A creation of 3 bytes to `name` with `overwrite: true`.
async fn overwrite(env: &Env, token: &str, name: &str) -> reqwest::Response {
    env.post(
        token,
        Some(3),
        &[("filename", name), ("overwrite", "true")],
        &[],
    )
    .await
}

/// Who may replace a landed file: its uploader, or an admin; never another user, never an
/// anonymous client under --public.
#[tokio::test]
async fn only_the_uploader_or_an_admin_replaces_a_file() {
    let env = Env::start(&[]);
    upload(&env, "ann.txt", b"ann's").await;
    let over = [("filename", "ann.txt"), ("overwrite", "true")];
    let r = env.post(BOB, Some(3), &over, &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Ann replaces her own file; root (an admin) replaces anyone's.
    let u = env.create(ANN, Some(3), &over).await;
    env.patch_ok(ANN, &u, 0, b"v2!").await;
    assert_eq!(std::fs::read(env.dir.join("ann.txt")).unwrap(), b"v2!");
    let u = env.create(ROOT, Some(5), &over).await;
    env.patch_ok(ROOT, &u, 0, b"admin").await;
    assert_eq!(std::fs::read(env.dir.join("ann.txt")).unwrap(), b"admin");

    let public = Env::start(&["--public"]);
    let u = public.create("", Some(3), &[("filename", "p.txt")]).await;
    public.patch_ok("", &u, 0, b"one").await;
    let r = overwrite(&public, "", "p.txt").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(text(r).await.contains("anonymous"));
    assert_eq!(std::fs::read(public.dir.join("p.txt")).unwrap(), b"one");
    // An unfinished anonymous upload is not handed to another anonymous client.
    public.create("", Some(3), &[("filename", "q.txt")]).await;
    let r = overwrite(&public, "", "q.txt").await;
    assert_eq!(r.status(), StatusCode::LOCKED);
    assert!(r.headers().get("location").is_none());
}

/// A raw HTTP/1.1 exchange: sends `head` and `body`, returns the answer's status line and
/// headers.
fn raw(port: u16, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before an answer");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A chunked PATCH (no Content-Length) that reaches the upload's length lands the file, also
/// when it goes on past it (413, the bytes up to the length kept and landed).
#[tokio::test]
async fn a_chunked_patch_that_reaches_the_length_lands() {
    let env = Env::start(&[]);
    for (name, body) in [
        ("exact.txt", &b"0123456789"[..]),
        ("past.txt", b"0123456789AB"),
    ] {
        let url = env.create(ANN, Some(10), &[("filename", name)]).await;
        let head = format!(
            "PATCH {url} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {ANN}\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let chunked = format!(
            "{:x}\r\n{}\r\n0\r\n\r\n",
            body.len(),
            String::from_utf8_lossy(body)
        );
        let answer = raw(env.srv.port(), &head, chunked.as_bytes());
        let expected = if body.len() == 10 { "204" } else { "413" };
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{answer}"
        );
        assert_eq!(std::fs::read(env.dir.join(name)).unwrap(), b"0123456789");
    }
}

/// Names that only look alike are one name (NFC), and control, bidirectional and zero-width
/// characters are refused.
#[tokio::test]
async fn look_alike_names_are_one_name_and_invisible_characters_are_refused() {
    let env = Env::start(&[]);
    let nfd = "e\u{301}t\u{e9}.txt"; // "été" with the first é decomposed
    upload(&env, nfd, b"nfd").await;
    let names: Vec<String> = std::fs::read_dir(&env.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    assert_eq!(names, ["\u{e9}t\u{e9}.txt"], "landed under its NFC name");
    let r = env
        .post(ANN, Some(3), &[("filename", "\u{e9}t\u{e9}.txt")], &[])
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "the NFC twin exists");
    for bad in ["invoice\u{202e}fdp.exe", "a\u{200b}b.txt", "bell\u{7}.txt"] {
        for key in ["filename", "path"] {
            let r = env.post(ANN, Some(3), &[(key, bad)], &[]).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{key} {bad:?}");
            assert!(text(r).await.contains("refused"));
        }
    }
}
