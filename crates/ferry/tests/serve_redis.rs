//! Several `ferry serve` instances over one directory, sharing upload state in Redis
//! (`--store redis://…`): a tus-js-client upload whose PATCHes alternate between two instances
//! behind nginx round robin; `ferry put` finishing through one instance while the other is
//! killed with -9; ownership and reservations seen by both; Redis stopped and restarted mid-run
//! (503 with Retry-After, then recovery without a lost byte); a request for an upload whose
//! lock is held elsewhere takes it over (about a second from a live holder, within the lease
//! from a dead one); `rediss://` to a Redis whose certificate comes from a private CA.
//!
//! redis-server, nginx and the Node tus peers come from scripts/test.sh; a missing
//! redis-server or Node peer skips with a message, except under `CI=true`, where it fails.

use ferry_testkit::certs::{PrivateCa, private_ca};
use ferry_testkit::nginx::{Nginx, NginxOptions};
use ferry_testkit::redis::Redis;
use ferry_testkit::serve::FerryServe;
use ferry_testkit::tus::{TusTester, header, metadata, text};
use ferry_testkit::util::{files_equal, random_bytes, wait_until, write_random_file};
use reqwest::{Method, Response, StatusCode};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const ANN: &str = "token-of-ann-sixteen";
const BOB: &str = "token-of-bob";

/// Redis, two instances over one directory (users ann and bob), and a client.
struct Cluster {
    redis: Redis,
    a: FerryServe,
    b: FerryServe,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    _users: tempfile::TempDir,
    client: reqwest::Client,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let redis = Redis::start_or_skip()?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let users_dir = tempfile::tempdir().unwrap();
        let users = users_dir.path().join("users.txt");
        std::fs::write(&users, format!("ann {ANN}\nbob {BOB}\n")).unwrap();
        let url = redis.url();
        let args = ["--users", users.to_str().unwrap(), "--store", &url];
        let a = FerryServe::start(env!("CARGO_BIN_EXE_ferry"), &dir, &args);
        let b = FerryServe::start(env!("CARGO_BIN_EXE_ferry"), &dir, &args);
        Some(Cluster {
            redis,
            a,
            b,
            dir,
            _tmp: tmp,
            _users: users_dir,
            client: reqwest::Client::new(),
        })
    }

    /// The shared tus test client, speaking to instance `srv`.
    fn tus(&self, srv: &FerryServe) -> TusTester {
        TusTester {
            base: srv.url(""),
            dir: self.dir.clone(),
            client: self.client.clone(),
            metrics_token: ANN.to_owned(),
        }
    }

    fn req(
        &self,
        srv: &FerryServe,
        token: &str,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.tus(srv).req(token, method, path)
    }

    async fn post(
        &self,
        srv: &FerryServe,
        token: &str,
        len: usize,
        meta: &[(&str, &str)],
    ) -> Response {
        self.tus(srv).post(token, Some(len as u64), meta, &[]).await
    }

    async fn create(&self, srv: &FerryServe, token: &str, len: usize, name: &str) -> String {
        let r = self.post(srv, token, len, &[("filename", name)]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
        header(&r, "location")
    }

    async fn patch(
        &self,
        srv: &FerryServe,
        token: &str,
        url: &str,
        offset: usize,
        body: &[u8],
    ) -> Response {
        self.tus(srv).patch(token, url, offset as u64, body).await
    }

    async fn offset(&self, srv: &FerryServe, token: &str, url: &str) -> usize {
        let r = self
            .req(srv, token, Method::HEAD, url)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "HEAD {url}: {}\n{}",
            r.status(),
            self.logs()
        );
        header(&r, "upload-offset").parse().unwrap()
    }

    /// HEADs `url` every 50 ms while it answers 503 (Redis on its way back), for at most 15 s;
    /// returns the first other answer, which must be `expected`.
    async fn head_after_outage(
        &self,
        srv: &FerryServe,
        url: &str,
        expected: StatusCode,
    ) -> Response {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.req(srv, ANN, Method::HEAD, url).send().await.unwrap();
            if r.status() != StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(r.status(), expected, "{}", self.logs());
                return r;
            }
            assert!(Instant::now() < end, "no recovery\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn staged_len(&self, url: &str) -> Option<u64> {
        let id = url.rsplit('/').next().unwrap();
        std::fs::metadata(self.dir.join(".ferry/uploads").join(id))
            .ok()
            .map(|m| m.len())
    }

    fn wait_staged(&self, url: &str, len: usize) {
        assert!(
            wait_until(Duration::from_secs(15), || self.staged_len(url)
                == Some(len as u64)),
            "staged length stayed at {:?}, expected {len}",
            self.staged_len(url)
        );
    }

    fn logs(&self) -> String {
        format!(
            "--- instance a ---\n{}\n--- instance b ---\n{}\n--- redis ---\n{}",
            tail(&self.a.log()),
            tail(&self.b.log()),
            tail(&self.redis.log())
        )
    }
}

fn tail(log: &str) -> &str {
    let mut start = log.len().saturating_sub(4000);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

/// A PATCH on a raw socket as ann, announcing `declared` bytes and sending only `body`: the
/// connection (and the upload's lock) stays held until the stream is dropped or answered.
fn raw_patch(
    srv: &FerryServe,
    url: &str,
    offset: usize,
    declared: usize,
    body: &[u8],
) -> TcpStream {
    ferry_testkit::tus::raw_patch(srv.port(), ANN, url, offset as u64, declared, body)
}

/// `ferry_bytes_received_total` of one instance.
async fn bytes_received(c: &Cluster, srv: &FerryServe) -> u64 {
    let r = c
        .req(srv, ANN, Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("ferry_bytes_received_total "))
        .unwrap_or_else(|| panic!("no ferry_bytes_received_total in {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// node and the Node peers' directory, or None after a note (a failure under CI=true).
fn node_peer() -> Option<(String, PathBuf)> {
    let dir = std::env::var_os("FERRY_PEERS_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/node"));
    let node = std::env::var("FERRY_NODE").unwrap_or_else(|_| "node".into());
    if dir
        .join("node_modules/tus-js-client/package.json")
        .is_file()
    {
        return Some((node, dir));
    }
    let msg = format!(
        "tus-js-client is not installed in {} (scripts/test.sh installs it)",
        dir.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

#[tokio::test]
async fn tus_js_client_patches_alternate_between_two_instances() {
    let Some(c) = Cluster::start() else { return };
    let Some((node, peers)) = node_peer() else {
        return;
    };
    let nginx = Nginx::start_with(&c.dir, NginxOptions::round_robin(&[c.a.port(), c.b.port()]));
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("chunks.bin");
    // Five 5 MiB PATCHes and a short sixth: with the creating POST, round robin sends them
    // to both instances in turn.
    write_random_file(&file, (25 * MIB + 333) as u64, 51).unwrap();
    let o = Command::new(&node)
        .arg(peers.join("upload.mjs"))
        .arg(&file)
        .arg(nginx.url("uploads/"))
        .args(["--token", ANN, "--chunk-size", &(5 * MIB).to_string()])
        .current_dir(&peers)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tus-js-client failed\n{}\n{}\n{}\nnginx: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        c.logs(),
        nginx.error_log()
    );
    assert!(
        files_equal(&file, &c.dir.join("chunks.bin")),
        "byte-identical"
    );
    let patches: Vec<_> = nginx
        .access_log()
        .into_iter()
        .filter(|e| e.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 6, "{patches:#?}");
    assert!(patches.iter().all(|e| e.status == 204), "{patches:#?}");
    let (ra, rb) = (
        bytes_received(&c, &c.a).await,
        bytes_received(&c, &c.b).await,
    );
    assert_eq!(ra + rb, (25 * MIB + 333) as u64);
    assert!(
        ra >= (10 * MIB) as u64 && rb >= (10 * MIB) as u64,
        "a got {ra}, b got {rb}"
    );
}

#[tokio::test]
async fn ferry_put_finishes_through_the_other_instance_when_one_is_killed() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let nginx = Nginx::start_with(&c.dir, NginxOptions::round_robin(&[c.a.port(), c.b.port()]));
    let src = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let file = src.path().join("put.bin");
    let len = 48 * MIB + 7;
    write_random_file(&file, len as u64, 52).unwrap();
    let mut put = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "put",
            "--json",
            "-x",
            "2",
            "--chunk-size",
            "2M",
            "--limit-rate",
            "12M",
        ])
        .arg(&file)
        .arg(nginx.url("uploads/"))
        .env("FERRY_DATA_DIR", data_dir.path())
        .env("FERRY_TOKEN", ANN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let staged = || -> u64 {
        std::fs::read_dir(c.dir.join(".ferry/uploads"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || staged() >= 12 * MIB as u64),
        "the upload did not start\n{}",
        c.logs()
    );
    c.a.kill_hard();
    let mut out = String::new();
    let mut err = String::new();
    put.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    put.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = put.wait().unwrap();
    assert!(
        status.success(),
        "ferry put failed ({status})\n{err}\n{}\n{}",
        out.lines()
            .filter(|l| !l.contains("\"progress\""))
            .collect::<Vec<_>>()
            .join("\n"),
        c.logs()
    );
    assert!(files_equal(&file, &c.dir.join("put.bin")), "byte-identical");
}

#[tokio::test]
async fn ownership_and_reservations_hold_across_instances() {
    let Some(c) = Cluster::start() else { return };
    let data = random_bytes(MIB + 5, 53);
    let url = c.create(&c.a, ANN, data.len(), "x.bin").await;
    // The reservation made through a is seen by b.
    let r = c
        .post(&c.b, BOB, data.len(), &[("filename", "x.bin")])
        .await;
    assert_eq!(r.status(), StatusCode::LOCKED, "{}", text(r).await);
    let r = c
        .post(&c.b, ANN, data.len(), &[("filename", "x.bin")])
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "own unfinished upload");
    assert_eq!(header(&r, "location"), url);
    // So is the owner.
    let r = c.req(&c.b, BOB, Method::HEAD, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // ann continues through b what she began through a.
    let r = c.patch(&c.a, ANN, &url, 0, &data[..MIB]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.offset(&c.b, ANN, &url).await, MIB);
    let r = c.patch(&c.b, ANN, &url, MIB, &data[MIB..]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    assert!(std::fs::read(c.dir.join("x.bin")).unwrap() == data);
    // The landed file is ann's on both instances: bob may not replace it, ann may.
    let r = c
        .post(
            &c.a,
            BOB,
            3,
            &[("filename", "x.bin"), ("overwrite", "true")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", text(r).await);
    let r = c
        .post(
            &c.b,
            ANN,
            3,
            &[("filename", "x.bin"), ("overwrite", "true")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
}

#[tokio::test]
async fn redis_stopped_and_restarted_mid_run_loses_no_byte() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let data = random_bytes(4 * MIB + 9, 54);
    let url = c.create(&c.a, ANN, data.len(), "r.bin").await;
    let r = c.patch(&c.a, ANN, &url, 0, &data[..MIB]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // With persistence: what Redis saved comes back with it.
    c.redis.save();
    c.redis.kill();
    for srv in [&c.a, &c.b] {
        let r = c.req(srv, ANN, Method::HEAD, &url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key("retry-after"), "{r:?}");
        let r = c.patch(srv, ANN, &url, MIB, &data[MIB..2 * MIB]).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        c.staged_len(&url),
        Some(MIB as u64),
        "nothing taken while Redis was away"
    );
    assert!(
        c.a.log().contains("unreachable"),
        "a clear log line\n{}",
        c.logs()
    );
    c.redis.restart();
    let r = c.head_after_outage(&c.b, &url, StatusCode::OK).await;
    assert_eq!(header(&r, "upload-offset"), MIB.to_string());
    let r = c.patch(&c.b, ANN, &url, MIB, &data[MIB..]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    assert!(std::fs::read(c.dir.join("r.bin")).unwrap() == data);
    // Without persistence the state is gone: the upload is unknown, nothing is overwritten.
    let url = c.create(&c.a, ANN, data.len(), "gone.bin").await;
    c.redis.kill();
    c.redis.restart();
    c.head_after_outage(&c.a, &url, StatusCode::NOT_FOUND).await;
    assert!(
        std::fs::read(c.dir.join("r.bin")).unwrap() == data,
        "landed files stay"
    );
}

#[tokio::test]
async fn a_live_holder_lets_go() {
    let Some(c) = Cluster::start() else { return };
    let data = random_bytes(4 * MIB, 55);
    let url = c.create(&c.a, ANN, data.len(), "l.bin").await;
    // a holds the lock with a PATCH whose client went quiet after 1 MiB.
    let mut stalled = raw_patch(&c.a, &url, 0, data.len(), &data[..MIB]);
    c.wait_staged(&url, MIB);
    let start = Instant::now();
    let r = c.patch(&c.b, ANN, &url, MIB, &data[MIB..]).await;
    let took = start.elapsed();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}\n{}",
        text(r).await,
        c.logs()
    );
    eprintln!("took over from a live holder in {took:?}");
    assert!(std::fs::read(c.dir.join("l.bin")).unwrap() == data);
    // The holder ended its request with 423, keeping what it had.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 423"), "{answer}");
    assert!(answer.contains("another request took over"), "{answer}");
}

#[tokio::test]
async fn a_dead_holders_lock_is_taken_over_within_the_lease() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let data = random_bytes(4 * MIB, 56);
    let url = c.create(&c.a, ANN, data.len(), "d.bin").await;
    let _stalled = raw_patch(&c.a, &url, 0, data.len(), &data[..MIB]);
    c.wait_staged(&url, MIB);
    c.a.kill_hard();
    let start = Instant::now();
    assert_eq!(c.offset(&c.b, ANN, &url).await, MIB);
    let r = c.patch(&c.b, ANN, &url, MIB, &data[MIB..]).await;
    let took = start.elapsed();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}\n{}",
        text(r).await,
        c.logs()
    );
    eprintln!("took over from a dead holder in {took:?} (lease 10 s)");
    assert!(std::fs::read(c.dir.join("d.bin")).unwrap() == data);
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let Some(PrivateCa { ca, cert, key }) = private_ca(certs.path()) else {
        return;
    };
    let Some(redis) = Redis::start_tls_or_skip(&cert, &key) else {
        return;
    };
    let served = tempfile::tempdir().unwrap();
    let url = redis.url();
    assert!(url.starts_with("rediss://localhost:"), "{url}");
    // rustls trusts the system's roots, and SSL_CERT_FILE names more.
    let srv = FerryServe::start_with_env(
        env!("CARGO_BIN_EXE_ferry"),
        served.path(),
        &["--token", ANN, "--store", &url],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    let client = reqwest::Client::new();
    let data = random_bytes(MIB, 57);
    let r = client
        .post(srv.url("/uploads/"))
        .bearer_auth(ANN)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", metadata(&[("filename", "tls.bin")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}\n{}",
        text(r).await,
        srv.log()
    );
    let upload = header(&r, "location");
    let r = client
        .patch(srv.url(&upload))
        .bearer_auth(ANN)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    assert!(std::fs::read(served.path().join("tls.bin")).unwrap() == data);
    // Without the CA the certificate is refused: uploads answer 503, no plaintext fallback.
    let untrusting = FerryServe::start(
        env!("CARGO_BIN_EXE_ferry"),
        served.path(),
        &["--token", ANN, "--store", &url],
    );
    let r = client
        .head(untrusting.url(&upload))
        .bearer_auth(ANN)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        untrusting.log().contains("certificate"),
        "{}",
        untrusting.log()
    );
}
