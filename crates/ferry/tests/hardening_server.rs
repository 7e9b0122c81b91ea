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

#[allow(dead_code)]
async fn status_text(r: reqwest::Response) -> String {
    text(r).await
}
