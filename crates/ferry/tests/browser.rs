//! The upload page of `ferry serve` in real headless browsers: Debian's Chromium
//! (`/usr/bin/chromium`, or `FERRY_CHROMIUM`) driven by playwright-core from
//! `tests/browser/page.mjs`, and Debian's Firefox (`/usr/bin/firefox-esr`, or `FERRY_FIREFOX`)
//! driven over WebDriver by geckodriver from `tests/browser/firefox.mjs` (the `firefox_*`
//! tests: progress, a reload half-way, pause, resume and cancel), one scenario per test,
//! against the real binary. The scenario
//! checks what the page shows and prints what it saw as JSON; this side checks the server's
//! disk and its byte counter (`ferry_bytes_received_total`: bytes counted on the wire).
//! Covered: visible progress; a reload half-way and a browser restart, both resuming from the
//! server's offset; replacing a file declined and accepted; another user's file and upload; a
//! folder and a dropped file; progress pushed to a second page; the keyboard, a cut connection
//! retried, pause, resume, cancel and a phone's width. Waits are on page events and states,
//! each with a deadline; a PATCH is held back (Playwright routing) to catch an upload half-way.
//!
//! scripts/test.sh installs chromium and firefox-esr (apt-get), playwright-core (`npm ci` in
//! tests/browser) and geckodriver (`cargo install`, kept under target/geckodriver) and exports
//! `FERRY_BROWSER_DIR` and `FERRY_GECKODRIVER`; without them the repository's `tests/browser`
//! and `target/geckodriver/bin/geckodriver` are tried. When something is missing the test says so and skips, except in CI
//! (`CI=true`), where it fails. `FERRY_NODE` names the node binary (default `node`).

use ferry_testkit::serve::FerryServe;
use ferry_testkit::util::{files_equal, write_random_file};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const ANN: &str = "token-of-ann-in-the-browser";
const BOB: &str = "token-of-bob-in-the-browser";
/// A whole scenario, browser start included, ends within this.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Says what is missing, what installs it and which variables point at it; a panic in CI
/// (`CI=true`).
fn missing(what: &str, installs: &str, vars: &str) {
    let msg = format!("{what}; scripts/test.sh installs them ({installs}), or set {vars}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// The node binary (`FERRY_NODE`, default `node`) when `node ARGS` exits 0.
fn node_that_runs(args: &[&str]) -> Option<String> {
    let node = std::env::var("FERRY_NODE").unwrap_or_else(|_| "node".into());
    std::process::Command::new(&node)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(node)
}

/// The directory of the scenario scripts: `FERRY_BROWSER_DIR`, else the repository's.
fn scripts_dir() -> PathBuf {
    std::env::var_os("FERRY_BROWSER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/browser"))
}

/// Runs `node ARGS… SCENARIO` in `dir` against `srv` as the user of `token`, with files from
/// `src` and the extra `env`; the JSON report it printed last.
#[allow(clippy::too_many_arguments)]
async fn run_scenario(
    node: &str,
    args: &[&std::ffi::OsStr],
    dir: &Path,
    scenario: &str,
    srv: &FerryServe,
    token: &str,
    src: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Value {
    let mut cmd = tokio::process::Command::new(node);
    cmd.args(args)
        .arg(scenario)
        .current_dir(dir)
        .env("FERRY_URL", srv.url(""))
        .env("FERRY_TOKEN", token)
        .env("FERRY_SRC", src)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SCENARIO_DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("scenario {scenario} ran past {SCENARIO_DEADLINE:?}"))
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {scenario} failed: {stderr}\n--- stdout:\n{stdout}\n--- server log:\n{}",
        srv.log()
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("scenario {scenario} printed no report ({e}): {stdout}"))
}

/// What runs the scenarios.
struct Browser {
    node: String,
    dir: PathBuf,
    chromium: PathBuf,
}

/// node, playwright-core and chromium, or None after saying what is missing (a panic in CI).
fn browser() -> Option<Browser> {
    let missing = |what: &str| {
        missing(
            what,
            "apt-get install chromium; npm ci --prefix tests/browser",
            "FERRY_BROWSER_DIR / FERRY_CHROMIUM",
        )
    };
    let Some(node) = node_that_runs(&["--version"]) else {
        missing("no working Node.js (`node --version` failed; FERRY_NODE)");
        return None;
    };
    let dir = scripts_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing(&format!(
            "playwright-core is not installed in {}",
            dir.join("node_modules").display()
        ));
        return None;
    }
    let chromium = std::env::var_os("FERRY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        missing(&format!("no Chromium at {}", chromium.display()));
        return None;
    }
    Some(Browser {
        node,
        dir,
        chromium,
    })
}

impl Browser {
    /// Runs `scenario` as the user of `token` with files from `src`; its JSON report.
    async fn run(&self, scenario: &str, srv: &FerryServe, token: &str, src: &Path) -> Value {
        self.run_with(scenario, srv, token, src, &[]).await
    }

    async fn run_with(
        &self,
        scenario: &str,
        srv: &FerryServe,
        token: &str,
        src: &Path,
        env: &[(&str, &str)],
    ) -> Value {
        let mut all = vec![("FERRY_CHROMIUM", self.chromium.as_os_str())];
        all.extend(env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))));
        let script = self.dir.join("page.mjs");
        run_scenario(
            &self.node,
            &[script.as_os_str()],
            &self.dir,
            scenario,
            srv,
            token,
            src,
            &all,
        )
        .await
    }
}

/// What runs the Firefox scenarios: node (with a WebSocket), geckodriver and firefox-esr.
struct Firefox {
    node: String,
    dir: PathBuf,
    geckodriver: PathBuf,
    firefox: PathBuf,
}

/// node, geckodriver and Firefox, or None after saying what is missing (a panic in CI).
fn firefox() -> Option<Firefox> {
    let missing = |what: &str| {
        missing(
            what,
            "apt-get install firefox-esr; cargo install geckodriver --locked --root \
             target/geckodriver",
            "FERRY_FIREFOX / FERRY_GECKODRIVER / FERRY_NODE",
        )
    };
    let ws = "process.exit(typeof WebSocket === 'function' ? 0 : 1)";
    let Some(node) = node_that_runs(&["--experimental-websocket", "-e", ws]) else {
        missing("no Node.js with a WebSocket (`node --experimental-websocket`, Node >= 20.10)");
        return None;
    };
    let geckodriver = std::env::var_os("FERRY_GECKODRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/geckodriver/bin/geckodriver"));
    if !geckodriver.is_file() {
        missing(&format!("no geckodriver at {}", geckodriver.display()));
        return None;
    }
    let firefox = std::env::var_os("FERRY_FIREFOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/firefox-esr"));
    if !firefox.is_file() {
        missing(&format!("no Firefox at {}", firefox.display()));
        return None;
    }
    Some(Firefox {
        node,
        dir: scripts_dir(),
        geckodriver,
        firefox,
    })
}

impl Firefox {
    /// Runs the Firefox `scenario` as the user of `token` with files from `src`; its report.
    async fn run(&self, scenario: &str, srv: &FerryServe, token: &str, src: &Path) -> Value {
        let script = self.dir.join("firefox.mjs");
        run_scenario(
            &self.node,
            &["--experimental-websocket".as_ref(), script.as_os_str()],
            &self.dir,
            scenario,
            srv,
            token,
            src,
            &[
                ("FERRY_GECKODRIVER", self.geckodriver.as_os_str()),
                ("FERRY_FIREFOX", self.firefox.as_os_str()),
            ],
        )
        .await
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A counter of the server's `/metrics`.
async fn metric(srv: &FerryServe, token: &str, name: &str) -> u64 {
    let text = client()
        .get(srv.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A served directory and a directory of files to choose, both temporary.
struct Dirs {
    _tmp: tempfile::TempDir,
    served: PathBuf,
    src: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    Dirs {
        served,
        src,
        _tmp: tmp,
    }
}

fn serve_one_user(d: &Dirs) -> FerryServe {
    FerryServe::start(env!("CARGO_BIN_EXE_ferry"), &d.served, &["--token", ANN])
}

/// Either browser, for the scenarios both run.
enum Runner {
    Chromium(Browser),
    Firefox(Firefox),
}

impl Runner {
    async fn run(&self, scenario: &str, srv: &FerryServe, token: &str, src: &Path) -> Value {
        match self {
            Runner::Chromium(b) => b.run(scenario, srv, token, src).await,
            Runner::Firefox(f) => f.run(scenario, srv, token, src).await,
        }
    }
}

/// Scenario `progress`: the bar half-way, the file byte-identical, each byte received once.
async fn upload_shows_its_progress_and_lands(r: Runner) {
    let d = dirs();
    write_random_file(d.src.join("progress.bin"), 6 * MIB, 1).unwrap();
    let srv = serve_one_user(&d);
    let seen = r.run("progress", &srv, ANN, &d.src).await;
    assert_eq!(seen["midway"]["value"], 3 * 512 * KIB, "{seen}");
    assert_eq!(seen["midway"]["max"], 6 * MIB, "{seen}");
    assert!(files_equal(
        &d.src.join("progress.bin"),
        &d.served.join("progress.bin")
    ));
    assert_eq!(
        metric(&srv, ANN, "ferry_bytes_received_total").await,
        6 * MIB
    );
}

/// Scenario `resume` (256 KiB chunks, 4 MiB): five chunks before the reload, the rest from the
/// server's offset after it, each byte received once; the scenario's report.
async fn reload_half_way_resumes_from_the_servers_offset(r: Runner) -> Value {
    let d = dirs();
    let size = 4 * MIB;
    let chunk = 256 * KIB;
    write_random_file(d.src.join("resume.bin"), size, 2).unwrap();
    let srv = serve_one_user(&d);
    let seen = r.run("resume", &srv, ANN, &d.src).await;
    let first: Vec<u64> = serde_json::from_value(seen["first"].clone()).unwrap();
    assert_eq!(first[..5], [0, chunk, 2 * chunk, 3 * chunk, 4 * chunk]);
    assert_eq!(seen["second"][0], 5 * chunk, "{seen}");
    // On the wire: every byte reached the server once.
    assert_eq!(metric(&srv, ANN, "ferry_bytes_received_total").await, size);
    assert!(files_equal(
        &d.src.join("resume.bin"),
        &d.served.join("resume.bin")
    ));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_shows_its_progress_and_lands() {
    let Some(b) = browser() else { return };
    upload_shows_its_progress_and_lands(Runner::Chromium(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_half_way_resumes_from_the_servers_offset() {
    let Some(b) = browser() else { return };
    let seen = reload_half_way_resumes_from_the_servers_offset(Runner::Chromium(b)).await;
    assert_eq!(seen["second_bytes"], 4 * MIB - 5 * 256 * KIB, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_browser_restart_the_server_check_resumes_the_same_file() {
    let Some(b) = browser() else { return };
    let d = dirs();
    let size = 2 * MIB;
    let chunk = 256 * KIB;
    write_random_file(d.src.join("restart.bin"), size, 12).unwrap();
    let srv = serve_one_user(&d);
    let seen = b.run("restart", &srv, ANN, &d.src).await;
    let offsets: Vec<u64> = serde_json::from_value(seen["offsets"].clone()).unwrap();
    assert_eq!(
        offsets,
        (3..8).map(|i| i * chunk).collect::<Vec<_>>(),
        "{seen}"
    );
    assert_eq!(metric(&srv, ANN, "ferry_bytes_received_total").await, size);
    assert!(files_equal(
        &d.src.join("restart.bin"),
        &d.served.join("restart.bin")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_an_existing_file_is_asked_first() {
    let Some(b) = browser() else { return };
    let d = dirs();
    std::fs::write(d.served.join("exists.txt"), b"the old content\n").unwrap();
    std::fs::write(d.src.join("exists.txt"), b"the new content\n").unwrap();
    let srv = serve_one_user(&d);
    let seen = b.run("replace", &srv, ANN, &d.src).await;
    assert_eq!(seen["declined"], "Kept the existing file.");
    assert_eq!(
        seen["kept"], "the old content\n",
        "declining left it: {seen}"
    );
    assert_eq!(
        std::fs::read(d.served.join("exists.txt")).unwrap(),
        b"the new content\n"
    );
}

/// Bob's upload of `body` to `path` (all of it, or only its creation when `finish` is false).
async fn bobs_upload(srv: &FerryServe, path: &str, body: &'static [u8], finish: bool) {
    use base64::Engine;
    let meta = format!(
        "path {}",
        base64::engine::general_purpose::STANDARD.encode(path)
    );
    let mut req = client()
        .post(srv.url("/uploads/"))
        .bearer_auth(BOB)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", body.len().to_string())
        .header("upload-metadata", meta);
    if finish {
        req = req
            .header("content-type", "application/offset+octet-stream")
            .body(body);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status().as_u16(), 201, "{}", srv.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_target_is_reported_and_left_alone() {
    let Some(b) = browser() else { return };
    let d = dirs();
    let users = d.src.join("..").join("users");
    std::fs::write(&users, format!("ann {ANN}\nbob {BOB}\n")).unwrap();
    std::fs::write(d.src.join("bobs.txt"), b"ann's version\n").unwrap();
    std::fs::write(d.src.join("busy.bin"), b"ann's busy file\n").unwrap();
    let srv = FerryServe::start(
        env!("CARGO_BIN_EXE_ferry"),
        &d.served,
        &["--users", users.to_str().unwrap()],
    );
    bobs_upload(&srv, "bobs.txt", b"bob's file\n", true).await;
    bobs_upload(&srv, "busy.bin", b"bob is still uploading this\n", false).await;
    let before = metric(&srv, BOB, "ferry_bytes_received_total").await;
    let seen = b.run("others", &srv, ANN, &d.src).await;
    assert!(seen["notes"]["bobs.txt"].is_string(), "{seen}");
    assert_eq!(
        std::fs::read(d.served.join("bobs.txt")).unwrap(),
        b"bob's file\n"
    );
    assert!(!d.served.join("busy.bin").exists());
    assert_eq!(
        metric(&srv, BOB, "ferry_bytes_received_total").await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_keeps_its_relative_paths_and_a_dropped_file_lands() {
    let Some(b) = browser() else { return };
    let d = dirs();
    let album = d.src.join("album");
    std::fs::create_dir_all(album.join("day 2")).unwrap();
    write_random_file(album.join("one.jpg"), 300 * KIB, 3).unwrap();
    write_random_file(album.join("day 2/two.jpg"), 200 * KIB, 4).unwrap();
    std::fs::write(album.join("day 2/notes.txt"), b"").unwrap();
    let srv = serve_one_user(&d);
    let seen = b.run("folder", &srv, ANN, &d.src).await;
    assert_eq!(
        seen["paths"],
        serde_json::json!([
            "album/day 2/notes.txt",
            "album/day 2/two.jpg",
            "album/one.jpg"
        ])
    );
    for rel in ["one.jpg", "day 2/two.jpg", "day 2/notes.txt"] {
        assert!(
            files_equal(&album.join(rel), &d.served.join("album").join(rel)),
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read(d.served.join("dropped.txt")).unwrap(),
        b"dropped on the page\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_page_sees_the_progress_the_server_pushes() {
    let Some(b) = browser() else { return };
    let d = dirs();
    write_random_file(d.src.join("pushed.bin"), 2 * MIB, 5).unwrap();
    let srv = serve_one_user(&d);
    let seen = b.run("push", &srv, ANN, &d.src).await;
    assert_eq!(seen["midway"]["offset"], 3 * 256 * KIB, "{seen}");
    assert!(files_equal(
        &d.src.join("pushed.bin"),
        &d.served.join("pushed.bin")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_retries_pause_resume_and_cancel() {
    let Some(b) = browser() else { return };
    let d = dirs();
    for (i, name) in ["dropped.bin", "paused.bin", "cancelled.bin"]
        .iter()
        .enumerate()
    {
        write_random_file(d.src.join(name), MIB, 10 + i as u64).unwrap();
    }
    let srv = serve_one_user(&d);
    let seen = b.run("controls", &srv, ANN, &d.src).await;
    // The cut PATCH was sent again; every PATCH of the cancelled upload after the held one
    // never happened.
    assert_eq!(seen["counts"]["dropped.bin"], 5, "{seen}");
    assert_eq!(seen["counts"]["cancelled.bin"], 2, "{seen}");
    for name in ["dropped.bin", "paused.bin"] {
        assert!(
            files_equal(&d.src.join(name), &d.served.join(name)),
            "{name}"
        );
    }
    assert!(!d.served.join("cancelled.bin").exists());
    // The cancelled upload is gone from the server, its bytes with it.
    assert_eq!(
        std::fs::read_dir(d.served.join(".ferry/uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_an_upload_shows_its_progress_and_lands() {
    let Some(f) = firefox() else { return };
    upload_shows_its_progress_and_lands(Runner::Firefox(f)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_a_reload_half_way_resumes_from_the_servers_offset() {
    let Some(f) = firefox() else { return };
    let seen = reload_half_way_resumes_from_the_servers_offset(Runner::Firefox(f)).await;
    // Every PATCH the page sent: the sixth was held and never left; after the reload, the
    // rest from the server's offset (BiDi counts no body bytes in Firefox: the server does).
    let chunk = 256 * KIB;
    let offsets = |from, to| (from..to).map(|i| i * chunk).collect::<Vec<_>>();
    let first: Vec<u64> = serde_json::from_value(seen["first"].clone()).unwrap();
    assert_eq!(first, offsets(0, 6), "{seen}");
    let second: Vec<u64> = serde_json::from_value(seen["second"].clone()).unwrap();
    assert_eq!(second, offsets(5, 16), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_pause_resume_and_cancel() {
    let Some(f) = firefox() else { return };
    let d = dirs();
    for (i, name) in ["paused.bin", "cancelled.bin"].iter().enumerate() {
        write_random_file(d.src.join(name), MIB, 20 + i as u64).unwrap();
    }
    let srv = serve_one_user(&d);
    let seen = f.run("controls", &srv, ANN, &d.src).await;
    // Paused while its third PATCH was held: that one aborted and sent again on resume. The
    // cancelled upload sent no PATCH after the held second one.
    assert_eq!(seen["counts"]["paused.bin"], 5, "{seen}");
    assert_eq!(seen["counts"]["cancelled.bin"], 2, "{seen}");
    assert!(files_equal(
        &d.src.join("paused.bin"),
        &d.served.join("paused.bin")
    ));
    assert!(!d.served.join("cancelled.bin").exists());
    // The cancelled upload is gone from the server, its bytes with it.
    assert_eq!(
        std::fs::read_dir(d.served.join(".ferry/uploads"))
            .unwrap()
            .count(),
        0
    );
}

/// Not a check: writes the README's screenshot. `FERRY_SCREENSHOT=docs/page.png cargo test
/// --release -p ferry --test browser -- --ignored screenshot`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/page.png for the README"]
async fn screenshot() {
    let Some(b) = browser() else { return };
    let shot = std::env::var("FERRY_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("docs/page.png"));
    let d = dirs();
    std::fs::create_dir_all(d.served.join("photos")).unwrap();
    write_random_file(d.served.join("notes.txt"), 3 * KIB, 6).unwrap();
    write_random_file(d.served.join("dataset.tar.zst"), 37 * MIB / 10, 7).unwrap();
    write_random_file(d.src.join("report.pdf"), 900 * KIB, 8).unwrap();
    write_random_file(d.src.join("holiday.mp4"), 3 * MIB, 9).unwrap();
    let srv = serve_one_user(&d);
    let shot = std::path::absolute(shot).unwrap();
    b.run_with(
        "screenshot",
        &srv,
        ANN,
        &d.src,
        &[("FERRY_SHOT", shot.to_str().unwrap())],
    )
    .await;
    assert!(shot.is_file());
}
