//! Real tus clients against `ferry serve`: tus-js-client (Node) with `parallelUploads: 4` (the
//! concatenation extension) and with 5 MiB chunks, tuspy (Python) with `upload_checksum=True`
//! (sha1, and sha256/md5 through its algorithm hook). Every stored file must be byte-identical
//! to its source, at `DIR/<metadata filename>` (or `DIR/<metadata path>`).
//!
//! The clients are driven by the scripts in `tests/peers` (`node/upload.mjs`,
//! `python/upload.py`), installed by `scripts/test.sh`, which exports `FERRY_PEERS_NODE_DIR`
//! (with `node_modules` from `npm ci`) and `FERRY_PEERS_PYTHON` (a venv with tuspy). Without
//! the variables the repository paths are tried (`tests/peers/node`, `target/peers/venv`).
//! When a peer is missing the test says so and skips, except in CI (`CI=true`), where it fails.
//! `FERRY_NODE` names the node binary (default `node` from PATH).

use ferry_testkit::serve::FerryServe;
use ferry_testkit::util::{files_equal, write_random_file};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MIB: u64 = 1 << 20;
const TOKEN: &str = "interop-secret-token";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A peer is missing: fail in CI, else say so and let the caller skip.
fn missing(what: &str) {
    let msg = format!(
        "{what}; install the tus peers with scripts/test.sh (npm ci --prefix tests/peers/node; \
         a venv at target/peers/venv with tests/peers/python/requirements.txt) or set \
         FERRY_PEERS_NODE_DIR / FERRY_PEERS_PYTHON"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// node and the directory with upload.mjs and its node_modules, or None (after `missing`).
fn node_peer() -> Option<(String, PathBuf)> {
    let dir = std::env::var_os("FERRY_PEERS_NODE_DIR")
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
    if !dir
        .join("node_modules/tus-js-client/package.json")
        .is_file()
    {
        missing(&format!(
            "tus-js-client is not installed in {}",
            dir.join("node_modules").display()
        ));
        return None;
    }
    Some((node, dir))
}

/// The venv python with tuspy, or None (after `missing`).
fn python_peer() -> Option<PathBuf> {
    let python = std::env::var_os("FERRY_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/peers/venv/bin/python"));
    let works = Command::new(&python)
        .args(["-c", "import tusclient"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        missing(&format!(
            "no python with tuspy at {} (`import tusclient` failed)",
            python.display()
        ));
        return None;
    }
    Some(python)
}

/// `ferry serve DIR --token TOKEN` over a fresh temp dir (the testkit's harness: a free port,
/// killed by PID on drop, its output kept for failure messages).
struct Serve {
    srv: FerryServe,
    dir: tempfile::TempDir,
}

impl Serve {
    fn start() -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let srv = FerryServe::start(env!("CARGO_BIN_EXE_ferry"), dir.path(), &["--token", TOKEN]);
        Serve { srv, dir }
    }

    fn endpoint(&self) -> String {
        self.srv.url("/uploads/")
    }

    fn log(&self) -> String {
        let log = self.srv.log();
        let start = log.len().saturating_sub(6000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!("--- ferry serve output (tail) ---\n{}", &log[start..])
    }
}

/// Runs a client, returns its JSON result (the last stdout line) after checking it succeeded.
fn run_client(what: &str, cmd: &mut Command, serve: &Serve) -> serde_json::Value {
    let o: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    let ok = o.status.success() && json.as_ref().is_some_and(|j| j["ok"] == true);
    assert!(
        ok,
        "{what} failed ({})\n--- client stdout ---\n{stdout}\n--- client stderr ---\n{stderr}\n{}",
        o.status,
        serve.log()
    );
    let json = json.unwrap();
    eprintln!("{what}: {json}");
    json
}

/// The upload URL the client reports is on the server's tus endpoint.
fn assert_upload_url(json: &serde_json::Value, serve: &Serve) {
    let url = json["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&serve.endpoint()) && url.len() > serve.endpoint().len(),
        "upload URL {url:?} is not under {}",
        serve.endpoint()
    );
}

fn assert_stored(serve: &Serve, rel: &str, src: &Path) {
    let stored = serve.dir.path().join(rel);
    assert!(
        stored.is_file(),
        "the finished upload is not at {} (files in DIR: {:?})\n{}",
        stored.display(),
        visible_files(serve.dir.path()),
        serve.log()
    );
    assert!(
        files_equal(src, &stored),
        "{} differs from its source {} ({} vs {} bytes)",
        stored.display(),
        src.display(),
        std::fs::metadata(&stored).map(|m| m.len()).unwrap_or(0),
        std::fs::metadata(src).map(|m| m.len()).unwrap_or(0),
    );
}

/// Relative paths of the non-hidden files under `dir` (staging lives in a hidden directory).
fn visible_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn node_upload(node: &str, dir: &Path, file: &Path, serve: &Serve, extra: &[&str]) -> Command {
    let mut c = Command::new(node);
    c.arg(dir.join("upload.mjs"))
        .arg(file)
        .arg(serve.endpoint())
        .args(["--token", TOKEN])
        .args(extra)
        .current_dir(dir);
    c
}

fn python_upload(python: &Path, file: &Path, serve: &Serve, extra: &[&str]) -> Command {
    let mut c = Command::new(python);
    c.arg(repo_root().join("tests/peers/python/upload.py"))
        .arg(file)
        .arg(serve.endpoint())
        .args(["--token", TOKEN])
        .args(extra);
    c
}

#[test]
fn tus_js_client_parallel_uploads_4() {
    let Some((node, dir)) = node_peer() else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("parallel.bin");
    // Not a multiple of 4 or of any power of two: the parts have different lengths.
    write_random_file(&file, 48 * MIB + 12_345, 41).unwrap();
    let serve = Serve::start();
    let json = run_client(
        "tus-js-client parallelUploads 4",
        &mut node_upload(&node, &dir, &file, &serve, &["--parallel", "4"]),
        &serve,
    );
    assert_upload_url(&json, &serve);
    assert_eq!(json["bytes"], 48 * MIB + 12_345);
    assert_stored(&serve, "parallel.bin", &file);
}

#[test]
fn tus_js_client_5_mib_chunks() {
    let Some((node, dir)) = node_peer() else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("chunks.bin");
    // Four full 5 MiB PATCHes and a short fifth one.
    write_random_file(&file, 21 * MIB + 333, 42).unwrap();
    let serve = Serve::start();
    let json = run_client(
        "tus-js-client 5 MiB chunks",
        &mut node_upload(
            &node,
            &dir,
            &file,
            &serve,
            &[
                "--chunk-size",
                &(5 * MIB).to_string(),
                "--name",
                "renamed.bin",
            ],
        ),
        &serve,
    );
    assert_upload_url(&json, &serve);
    // Stored under the metadata filename, not the local name.
    assert_stored(&serve, "renamed.bin", &file);
}

#[test]
fn tus_js_client_creation_with_upload_into_a_folder() {
    let Some((node, dir)) = node_peer() else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("small.bin");
    write_random_file(&file, 3 * MIB + 1, 43).unwrap();
    let serve = Serve::start();
    // The whole file in the creating POST (creation-with-upload), to the relative path in
    // metadata `path`.
    let json = run_client(
        "tus-js-client creation-with-upload, metadata path",
        &mut node_upload(
            &node,
            &dir,
            &file,
            &serve,
            &["--data-during-creation", "--meta", "path=sub/dir/small.bin"],
        ),
        &serve,
    );
    assert_upload_url(&json, &serve);
    assert_stored(&serve, "sub/dir/small.bin", &file);
}

#[test]
fn tuspy_with_upload_checksum() {
    let Some(python) = python_peer() else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let serve = Serve::start();
    // tuspy's own choice (sha1, the algorithm the checksum extension requires), then the other
    // algorithms ferry serve offers, each on every PATCH.
    for (algorithm, len, chunk) in [
        ("sha1", 10 * MIB + 77, 2 * MIB),
        ("sha256", 3 * MIB + 5, MIB),
        ("md5", 2 * MIB + 9, MIB),
    ] {
        let name = format!("tuspy-{algorithm}.bin");
        let file = src.path().join(&name);
        write_random_file(&file, len, 44).unwrap();
        let json = run_client(
            &format!("tuspy upload_checksum=True ({algorithm})"),
            &mut python_upload(
                &python,
                &file,
                &serve,
                &["--chunk-size", &chunk.to_string(), "--algorithm", algorithm],
            ),
            &serve,
        );
        assert_eq!(json["checksum"], algorithm);
        assert_upload_url(&json, &serve);
        assert_stored(&serve, &name, &file);
    }
}
