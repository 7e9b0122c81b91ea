//! `ferry put` end to end: into `ferry serve` over 1 and 4 connections, folders and names,
//! clear refusals, SIGKILL mid-upload then a rerun that re-sends little (bytes counted by a
//! proxy in front of the server), a server killed with -9 mid-upload, a full server disk, and
//! @tus/server (no concatenation) as a second real server.

use ferry_testkit::proxy::{FaultProxy, ProxyFaults};
use ferry_testkit::serve::FerryServe;
use ferry_testkit::util::{files_equal, wait_until, write_random_file};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const TOKEN: &str = "put-test-token-sixteen";

/// A served directory, a data dir for upload journals, and a scratch dir for source files.
struct Env {
    srv: FerryServe,
    served: tempfile::TempDir,
    data: tempfile::TempDir,
    src: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let served = tempfile::tempdir().unwrap();
        let srv = FerryServe::start(
            env!("CARGO_BIN_EXE_ferry"),
            served.path(),
            &["--token", TOKEN],
        );
        Env {
            srv,
            served,
            data: tempfile::tempdir().unwrap(),
            src: tempfile::tempdir().unwrap(),
        }
    }

    fn endpoint(&self) -> String {
        self.srv.url("/uploads/")
    }

    fn file(&self, name: &str, len: u64, seed: u64) -> PathBuf {
        let p = self.src.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        write_random_file(&p, len, seed).unwrap();
        p
    }

    fn put(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.arg("put")
            .env("FERRY_DATA_DIR", self.data.path())
            .env("FERRY_TOKEN", TOKEN)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.put().args(args).output().unwrap()
    }

    fn served(&self, name: &str) -> PathBuf {
        self.served.path().join(name)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn one_and_four_connections_are_byte_identical() {
    let env = Env::start();
    let big = env.file("big.bin", 40 * MIB + 12345, 1);
    let o = env.run(&["-q", "-x", "1", s(&big), &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&big, &env.served("big.bin")));

    // Four partial uploads joined by the server; a small file in the creation request.
    let small = env.file("small.txt", 1000, 2);
    let o = env.run(&[
        "--json",
        "-x",
        "4",
        "--name",
        "big4.bin",
        s(&big),
        &env.endpoint(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&big, &env.served("big4.bin")));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let start = events.iter().find(|e| e["event"] == "start").unwrap();
    assert_eq!(start["connections"], 4, "{start}");
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(
        done["verified"][0], "blake3",
        "every PATCH carried a checksum: {done}"
    );
    let o = env.run(&["-q", s(&small), &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&small, &env.served("small.txt")));

    // Another file under the same name is refused clearly, and replaced with --overwrite.
    let again = env.file("again/small.txt", 1500, 12);
    let o = env.run(&["-q", s(&again), &env.endpoint()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    let other = env.file("other/small.txt", 2000, 3);
    let o = env.run(&["-q", "--overwrite", s(&other), &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&other, &env.served("small.txt")));

    // A folder keeps its relative paths; an empty file is a file too.
    let a = env.file("tree/a.bin", 3 * MIB, 4);
    let b = env.file("tree/sub/b.bin", 17, 5);
    let e = env.file("tree/sub/empty", 0, 6);
    let o = env.run(&["-q", "-r", s(&env.src.path().join("tree")), &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&a, &env.served("tree/a.bin")));
    assert!(files_equal(&b, &env.served("tree/sub/b.bin")));
    assert!(files_equal(&e, &env.served("tree/sub/empty")));

    // Usage errors: exit 2.
    let o = env.run(&["-q", s(&env.src.path().join("tree")), &env.endpoint()]);
    assert_eq!(o.status.code(), Some(2), "a folder without -r");
    let o = env.run(&["-q", s(&big), "not-a-url"]);
    assert_eq!(o.status.code(), Some(2));
    // A wrong token: exit 1 and the reason.
    let o = env
        .put()
        .env("FERRY_TOKEN", "wrong-token")
        .args(["-q", s(&big), &env.endpoint()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
}

/// Starts `ferry put --json` and returns it with a reader of its events.
fn spawn_put(env: &Env, args: &[&str]) -> Child {
    env.put()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn start_event(o: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "start")
        .unwrap_or_else(|| panic!("no start event: {}", stderr(o)))
}

#[test]
fn sigkill_mid_upload_then_rerun_resends_little() {
    let env = Env::start();
    let size = 96 * MIB;
    let file = env.file("k.bin", size, 7);
    let proxy = FaultProxy::start_blocking(
        format!("127.0.0.1:{}", env.srv.port()).parse().unwrap(),
        ProxyFaults::default(),
    );
    let endpoint = proxy.url("/uploads/");
    let seed: u64 = std::env::var("FERRY_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    // Kill somewhere between 15 % and 85 % of the file.
    let kill_at = size * 15 / 100 + seed % (size * 70 / 100);
    let mut child = spawn_put(
        &env,
        &[
            "--json",
            "-x",
            "4",
            "--limit-rate",
            "64M",
            s(&file),
            &endpoint,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), || proxy.bytes_up() >= kill_at),
        "the upload did not get going: {} bytes",
        proxy.bytes_up()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before = proxy.bytes_up();
    let o = env.run(&["--json", "-x", "4", s(&file), &endpoint]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&file, &env.served("k.bin")));
    let start = start_event(&o);
    assert!(
        start["resumed"].as_u64().unwrap() > 0,
        "the rerun resumed: {start}"
    );
    let total = proxy.bytes_up();
    let extra = total.saturating_sub(size);
    eprintln!(
        "seed {seed}: killed at {before} bytes up; {total} bytes up in all; extra {:.2} MiB",
        extra as f64 / MIB as f64
    );
    assert!(extra <= 12 * MIB, "re-sent {extra} bytes (bar: 12 MiB)");
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[test]
fn server_killed_mid_upload_then_rerun_resumes() {
    let mut env = Env::start();
    let size = 64 * MIB;
    let file = env.file("s.bin", size, 8);
    let staged = env.served.path().join(".ferry/uploads");
    let mut child = spawn_put(
        &env,
        &[
            "--json",
            "-x",
            "2",
            "--retries",
            "2",
            "--limit-rate",
            "32M",
            s(&file),
            &env.endpoint(),
        ],
    );
    let staged_bytes = || -> u64 {
        std::fs::read_dir(&staged)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    assert!(wait_until(Duration::from_secs(60), || staged_bytes() >= 16 * MIB));
    env.srv.kill_hard();
    // With the server gone, the client gives up after its retries: a resumable failure.
    let status = child.wait().unwrap();
    let mut err = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if !line.contains("\"progress\"") {
            err.push_str(&line);
            err.push('\n');
        }
    }
    assert_eq!(status.code(), Some(1), "{err}");
    eprintln!("client after the kill: {err}");
    env.srv.restart();
    let o = env.run(&["--json", "-x", "2", s(&file), &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&file, &env.served("s.bin")));
    let start = start_event(&o);
    assert!(start["resumed"].as_u64().unwrap() >= 8 * MIB, "{start}");
}

/// @tus/server (Node) has no concatenation: `-x 4` falls back to one upload, with a warning.
#[test]
fn tus_node_server_without_concatenation() {
    let Some(node_dir) = peers_dir() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let mut server = Command::new("node")
        .arg(node_dir.join("tus-server.mjs"))
        .arg(store.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let endpoint = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("tus-server.mjs said {first:?}"))
        .to_string();
    let env_src = tempfile::tempdir().unwrap();
    let file = env_src.path().join("n.bin");
    write_random_file(&file, 20 * MIB + 3, 9).unwrap();
    let data = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["put", "--json", "-x", "4", s(&file), &endpoint])
        .env("FERRY_DATA_DIR", data.path())
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("concatenation"), "a warning says why: {out}");
    let stored: Vec<PathBuf> = std::fs::read_dir(store.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(files_equal(&file, &stored[0]));
}

/// The Node test peers (installed by scripts/test.sh); skipped outside CI when missing.
fn peers_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FERRY_PEERS_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/node"));
    if dir.join("node_modules/@tus/server").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the Node tus peers are missing from {} (scripts/test.sh installs them)",
        dir.display()
    );
    eprintln!("skipped: Node tus peers not installed (run scripts/test.sh)");
    None
}

/// The server's disk fills up while the final upload is assembled (the parts need room twice):
/// `ferry put` stops with a clear error, its journal stays usable, and once there is room a
/// rerun finishes without sending the parts again. Needs root for the tmpfs (as CI has).
#[test]
fn a_full_server_disk_stops_clearly_and_resumes() {
    let disk = ferry_testkit::tmpfs::Tmpfs::mount(40);
    let served = disk.path().join("srv");
    std::fs::create_dir(&served).unwrap();
    let srv = FerryServe::start(env!("CARGO_BIN_EXE_ferry"), &served, &["--token", TOKEN]);
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.bin");
    write_random_file(&file, 24 * MIB, 10).unwrap();
    let put = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("put")
            .args(extra)
            .args(["-x", "4", "--retries", "2", s(&file), &srv.url("/uploads/")])
            .env("FERRY_DATA_DIR", data.path())
            .env("FERRY_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = put(&["-q"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("disk is full"), "{}", stderr(&o));
    assert!(!served.join("f.bin").exists());
    let journals = std::fs::read_dir(data.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(journals, 1, "the journal is kept");

    disk.resize(80);
    let o = put(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&file, &served.join("f.bin")));
    let start = start_event(&o);
    assert_eq!(
        start["resumed"].as_u64(),
        Some(24 * MIB),
        "no part is sent again: {start}"
    );
}

/// Options may sit anywhere, even between the files and the URL.
#[test]
fn options_between_the_files_and_the_url() {
    let env = Env::start();
    let small = env.file("between.txt", 3000, 11);
    let o = env.run(&[s(&small), "-q", "--name", "moved.txt", &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&small, &env.served("moved.txt")));
    let o = env.run(&["-q", &env.endpoint()]);
    assert_eq!(o.status.code(), Some(2), "a URL alone: {}", stderr(&o));
    assert!(stderr(&o).contains("give the files"), "{}", stderr(&o));
}

/// A target that exists is refused before any byte is sent (not after the whole upload); a
/// rerun of a finished upload (a folder upload stopped by Ctrl-C, say) has nothing to send and
/// succeeds; the wrong URL (the server root) is named as not the tus endpoint.
#[test]
fn existing_targets_reruns_and_wrong_urls() {
    let env = Env::start();
    let proxy = FaultProxy::start_blocking(
        format!("127.0.0.1:{}", env.srv.port()).parse().unwrap(),
        ProxyFaults::default(),
    );
    let endpoint = proxy.url("/uploads/");
    let a = env.file("tree/a.bin", 2 * MIB, 13);
    let b = env.file("tree/sub/b.bin", 3, 14);
    let tree = env.src.path().join("tree");
    let o = env.run(&["-q", "-r", s(&tree), &endpoint]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&a, &env.served("tree/a.bin")));
    assert!(files_equal(&b, &env.served("tree/sub/b.bin")));

    // The same command again: every file is there already, nothing is sent, exit 0.
    let before = proxy.bytes_up();
    let o = env.run(&["-r", s(&tree), &endpoint]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        proxy.bytes_up() - before < 64 * 1024,
        "re-sent {} bytes",
        proxy.bytes_up() - before
    );

    // Another file to an existing name: refused before its bytes go up, -x 4 as with -x 1.
    let x = env.file("x.bin", 1000, 16);
    let o = env.run(&["-q", s(&x), &endpoint]);
    assert!(o.status.success(), "{}", stderr(&o));
    let big = env.file("big/a.bin", 8 * MIB, 15);
    let before = proxy.bytes_up();
    let o = env.run(&["-q", "-x", "4", "--name", "x.bin", s(&big), &endpoint]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );
    assert!(
        proxy.bytes_up() - before < 64 * 1024,
        "sent {} bytes before the refusal",
        proxy.bytes_up() - before
    );
    assert!(files_equal(&x, &env.served("x.bin")));
    let o = env.run(&["-q", "--overwrite", "--name", "x.bin", s(&big), &endpoint]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&big, &env.served("x.bin")));

    // The server root is no tus endpoint: say so (and no warning about concatenation).
    let root = proxy.url("/");
    let o = env.run(&["-x", "4", s(&b), &root]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not a tus upload endpoint") && err.contains("/uploads/"),
        "{err}"
    );
    assert!(!err.contains("concatenation"), "{err}");
}

/// A fresh small upload does not claim to resume; `-r` says which empty folders it skips.
#[test]
fn small_uploads_and_empty_folders_are_reported_truthfully() {
    let env = Env::start();
    let tiny = env.file("t/tiny.txt", 3, 17);
    std::fs::create_dir_all(env.src.path().join("t/empty/deeper")).unwrap();
    let o = env.run(&["--json", s(&tiny), &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        start_event(&o)["resumed"],
        0,
        "a fresh upload resumes nothing"
    );
    let o = env.run(&["-r", s(&env.src.path().join("t")), &env.endpoint()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("empty/deeper: an empty folder, skipped"),
        "{err}"
    );
    assert!(
        !err.contains("t/empty: an empty"),
        "only the deepest: {err}"
    );
    assert!(files_equal(&tiny, &env.served("t/tiny.txt")));
}
