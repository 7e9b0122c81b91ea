//! The IETF resumable-upload draft against the real `ferry serve` binary: tus-js-client with
//! `protocol: 'ietf-draft-05'` (interop 6), chunked, and interrupted mid-PATCH then resumed
//! from the server's offset; `ferry put --protocol ietf` and `--protocol tus` end to end, a put
//! killed with SIGKILL and rerun; and the rules every protocol keeps (users and ownership, the
//! size limit, names that stay inside the directory), also under `--public`.
//!
//! tus-js-client is driven by `tests/peers/node/upload-ietf.mjs`, run beside the
//! `node_modules` of `FERRY_PEERS_NODE_DIR` (or `tests/peers/node`), installed by
//! `scripts/test.sh`. When it is missing the test says so and skips, except in CI
//! (`CI=true`), where it fails.

use ferry_testkit::ietf::{IetfTester, field};
use ferry_testkit::proxy::{FaultProxy, ProxyFaults};
use ferry_testkit::serve::FerryServe;
use ferry_testkit::util::{files_equal, wait_until, write_random_file};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const ANN: &str = "ietf-ann-token";
const BOB: &str = "ietf-bob-token";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `ferry serve` over a temp dir with users ann and bob (or `args`), a data dir for journals
/// and a scratch dir for sources.
struct Env {
    srv: FerryServe,
    served: tempfile::TempDir,
    data: tempfile::TempDir,
    src: tempfile::TempDir,
    _users: tempfile::TempDir,
}

impl Env {
    fn start(args: &[&str]) -> Env {
        let served = tempfile::tempdir().unwrap();
        let users_dir = tempfile::tempdir().unwrap();
        let users = users_dir.path().join("users.txt");
        std::fs::write(&users, format!("ann {ANN}\nbob {BOB}\n")).unwrap();
        let mut all = args.to_vec();
        if !args.contains(&"--public") {
            all.extend(["--users", users.to_str().unwrap()]);
        }
        let srv = FerryServe::start(env!("CARGO_BIN_EXE_ferry"), served.path(), &all);
        Env {
            srv,
            served,
            data: tempfile::tempdir().unwrap(),
            src: tempfile::tempdir().unwrap(),
            _users: users_dir,
        }
    }

    fn endpoint(&self) -> String {
        self.srv.url("/uploads/")
    }

    fn file(&self, name: &str, len: u64, seed: u64) -> PathBuf {
        let p = self.src.path().join(name);
        write_random_file(&p, len, seed).unwrap();
        p
    }

    fn served(&self, name: &str) -> PathBuf {
        self.served.path().join(name)
    }

    /// `ferry put` as `token` (none when empty), journals in the env's data dir.
    fn put(&self, token: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.arg("put")
            .args(args)
            .env("FERRY_DATA_DIR", self.data.path())
            .env_remove("FERRY_TOKEN")
            .stdin(Stdio::null());
        if !token.is_empty() {
            c.env("FERRY_TOKEN", token);
        }
        c
    }

    fn log(&self) -> String {
        let log = self.srv.log();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!("--- ferry serve output (tail) ---\n{}", &log[start..])
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn events(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A peer is missing: fail in CI, else say so and let the caller skip.
fn missing(what: &str) {
    let msg = format!(
        "{what}; install the node peers with scripts/test.sh (npm ci --prefix tests/peers/node) or \
         set FERRY_PEERS_NODE_DIR"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// node, and a directory holding `upload-ietf.mjs` beside the peers' `node_modules` (a link),
/// or None (after `missing`).
fn node_peer() -> Option<(String, tempfile::TempDir)> {
    let peers = std::env::var_os("FERRY_PEERS_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/peers/node"));
    let node = std::env::var("FERRY_NODE").unwrap_or_else(|_| "node".into());
    let works = Command::new(&node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        missing(&format!("no working Node.js (`{node} --version` failed)"));
        return None;
    }
    let modules = peers.join("node_modules");
    if !modules.join("tus-js-client/package.json").is_file() {
        missing(&format!(
            "tus-js-client is not installed in {}",
            modules.display()
        ));
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&modules, dir.path().join("node_modules")).unwrap();
    std::fs::copy(
        repo_root().join("tests/peers/node/upload-ietf.mjs"),
        dir.path().join("upload-ietf.mjs"),
    )
    .unwrap();
    Some((node, dir))
}

/// Runs upload-ietf.mjs; returns its JSON result after checking it succeeded.
fn tus_js_ietf(env: &Env, file: &Path, extra: &[&str]) -> Option<serde_json::Value> {
    let (node, dir) = node_peer()?;
    let o = Command::new(node)
        .arg(dir.path().join("upload-ietf.mjs"))
        .arg(file)
        .arg(env.endpoint())
        .args(["--token", ANN])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    assert!(
        o.status.success() && json.as_ref().is_some_and(|j| j["ok"] == true),
        "upload-ietf.mjs failed ({})\n{stdout}\n{}\n{}",
        o.status,
        stderr(&o),
        env.log()
    );
    let json = json.unwrap();
    eprintln!("tus-js-client (ietf-draft-05): {json}");
    assert!(json["url"].as_str().unwrap().starts_with(&env.endpoint()));
    Some(json)
}

#[test]
fn tus_js_client_ietf_draft_05_chunked() {
    let env = Env::start(&[]);
    let file = env.file("chunked.bin", 13 * MIB + 5, 1);
    let Some(_) = tus_js_ietf(
        &env,
        &file,
        &[
            "--chunk-size",
            &(2 * MIB).to_string(),
            "--meta",
            "path=in/a folder/chunked.bin",
        ],
    ) else {
        return;
    };
    assert!(files_equal(&file, &env.served("in/a folder/chunked.bin")));
}

#[test]
fn tus_js_client_ietf_draft_05_interrupted_and_resumed() {
    let env = Env::start(&[]);
    let size = 48 * MIB;
    let file = env.file("resumed.bin", size, 2);
    let Some(json) = tus_js_ietf(
        &env,
        &file,
        &[
            "--chunk-size",
            &(16 * MIB).to_string(),
            "--interrupt-after",
            &(20 * MIB).to_string(),
        ],
    ) else {
        return;
    };
    assert_eq!(json["interrupted"], true);
    let from = json["resumedFrom"].as_u64().unwrap();
    assert!(
        from > 0 && from < size,
        "resumed from the server's offset: {json}"
    );
    assert!(files_equal(&file, &env.served("resumed.bin")));
}

#[test]
fn ferry_put_in_both_protocols() {
    let env = Env::start(&[]);
    for (protocol, size) in [
        ("ietf", 40 * MIB + 3),
        ("tus", 40 * MIB + 3),
        ("ietf", 0),
        ("ietf", 1),
    ] {
        let name = format!("{protocol}-{size}.bin");
        let file = env.file(&name, size, size);
        let o = env
            .put(
                ANN,
                &["--protocol", protocol, "--json", s(&file), &env.endpoint()],
            )
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{protocol}: {}\n{}",
            stderr(&o),
            env.log()
        );
        assert!(files_equal(&file, &env.served(&name)), "{protocol} {size}");
        let done = events(&o)
            .into_iter()
            .find(|e| e["event"] == "done")
            .unwrap();
        assert_eq!(done["bytes"], size);
        if protocol == "ietf" && size > 0 {
            assert_eq!(
                done["verified"][0], "sha256",
                "Content-Digest on every append"
            );
        }
    }
    // A rerun finds it done; a second name is refused as it would be with tus.
    let file = env.src.path().join("ietf-1.bin");
    let o = env
        .put(ANN, &["--protocol", "ietf", s(&file), &env.endpoint()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(env.data.path()).unwrap();
    let o = env
        .put(ANN, &["--protocol", "ietf", s(&file), &env.endpoint()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "exists: {}", stderr(&o));
}

/// SIGKILL mid-upload, then the same command again: it continues from the server's offset.
#[test]
fn ferry_put_ietf_killed_then_rerun_resumes() {
    let env = Env::start(&[]);
    let size = 64 * MIB;
    let file = env.file("k.bin", size, 9);
    let proxy = FaultProxy::start_blocking(
        format!("127.0.0.1:{}", env.srv.port()).parse().unwrap(),
        ProxyFaults::default(),
    );
    let endpoint = proxy.url("/uploads/");
    let args = [
        "--protocol",
        "ietf",
        "--json",
        "--chunk-size",
        "4M",
        s(&file),
        &endpoint,
    ];
    let mut child = env
        .put(ANN, &[&args[..], &["--limit-rate", "32M"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || proxy.bytes_up() >= 20 * MIB),
        "the upload did not get going: {} bytes",
        proxy.bytes_up()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let o = env.put(ANN, &args).output().unwrap();
    assert!(o.status.success(), "{}\n{}", stderr(&o), env.log());
    assert!(files_equal(&file, &env.served("k.bin")));
    let start = events(&o)
        .into_iter()
        .find(|e| e["event"] == "start")
        .unwrap();
    assert!(start["resumed"].as_u64().unwrap() >= 16 * MIB, "{start}");
    let extra = proxy.bytes_up().saturating_sub(size);
    assert!(extra <= 12 * MIB, "re-sent {extra} bytes");
}

/// Ownership, the size limit and names, as with tus: bob cannot touch ann's upload, a file
/// above --max-upload-size is refused before a byte is sent, names stay inside.
#[test]
fn same_rules_as_tus() {
    let env = Env::start(&["--max-upload-size", "2M"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = IetfTester::new(env.srv.url(""), None);
    rt.block_on(async {
        let r = c.create(ANN, false, b"ann's", &[]).await;
        assert_eq!(r.status(), 201);
        let url = field(&r, "location");
        assert_eq!(c.head(BOB, &url).await.status(), 403);
        assert_eq!(c.append(BOB, &url, 5, true, b"!", &[]).await.status(), 403);
        assert_eq!(c.delete(BOB, &url).await.status(), 403);
        assert_eq!(field(&c.head(ANN, &url).await, "upload-offset"), "5");
    });
    let big = env.file("big.bin", 3 * MIB, 3);
    let o = env
        .put(ANN, &["--protocol", "ietf", s(&big), &env.endpoint()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("at most"), "{}", stderr(&o));
    let small = env.file("small.bin", 1000, 4);
    let o = env
        .put(
            ANN,
            &[
                "--protocol",
                "ietf",
                "--name",
                "../../escape.bin",
                s(&small),
                &env.endpoint(),
            ],
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&small, &env.served("escape.bin")));
    assert!(
        !env.served
            .path()
            .parent()
            .unwrap()
            .join("escape.bin")
            .exists()
    );
    // Without a token: 401, with the advice to check it.
    let o = env
        .put("", &["--protocol", "ietf", s(&small), &env.endpoint()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn public_server() {
    let env = Env::start(&["--public"]);
    let file = env.file("pub.bin", 3 * MIB, 5);
    let o = env
        .put("", &["--protocol", "ietf", s(&file), &env.endpoint()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&file, &env.served("pub.bin")));
    let o = env
        .put(
            "",
            &[
                "--protocol",
                "ietf",
                "-r",
                s(env.src.path()),
                &env.endpoint(),
            ],
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let folder = env.src.path().file_name().unwrap().to_str().unwrap();
    assert!(files_equal(
        &file,
        &env.served(&format!("{folder}/pub.bin"))
    ));
    if let Some(json) = tus_js_ietf(&env, &file, &["--name", "../js.bin"]) {
        assert!(json["ok"] == true);
        assert!(files_equal(&file, &env.served("js.bin")));
    }
}
