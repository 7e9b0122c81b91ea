//! `ferry serve s3://BUCKET/PREFIX` against a real S3-compatible server (s3s-fs on 127.0.0.1):
//! chunked uploads whose PATCHes end inside and across parts (tails kept as objects), a
//! checksum mismatch that keeps nothing, Range reads and the listing from the bucket, landing
//! that never replaces, `ferry put -x 4` (concatenation by UploadPartCopy), a server killed
//! with -9 mid-PATCH and resumed, a deferred length sent in many small PATCHes (tail pieces
//! merged), expiry and termination aborting the multipart upload, and the start-up errors.
//!
//! s3s-fs comes from scripts/test.sh (`FERRY_S3S_FS`); without it the tests skip with a
//! message, except under `CI=true`, where they fail.

use ferry_testkit::s3::S3Server;
use ferry_testkit::serve::FerryServe;
use ferry_testkit::tus::{TusTester, header, sha1_b64, text};
use ferry_testkit::util::{random_bytes, wait_until, write_random_file};
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: usize = 1 << 20;
const TOKEN: &str = "token-of-s3-tests";
const BUCKET: &str = "ferry-bucket";

/// s3s-fs with a bucket, and `ferry serve s3://BUCKET/up` over it.
struct Fixture {
    s3: S3Server,
    serve: FerryServe,
    _state: tempfile::TempDir,
    tus: TusTester,
}

impl Fixture {
    fn start(extra: &[&str]) -> Option<Fixture> {
        let s3 = S3Server::start_or_skip()?;
        s3.create_bucket(BUCKET);
        let state = tempfile::tempdir().unwrap();
        let serve = serve(&s3, state.path(), extra);
        let tus = TusTester::new(serve.url(""), PathBuf::new(), TOKEN);
        Some(Fixture {
            s3,
            serve,
            _state: state,
            tus,
        })
    }

    /// The object at `key` under the prefix, read from s3s-fs's folder.
    fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.s3.data_dir().join(BUCKET).join("up").join(key)).ok()
    }

    /// Files of upload state left under `PREFIX/.ferry/uploads`.
    fn state_objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.s3.data_dir().join(BUCKET).join("up/.ferry/uploads")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    async fn get(&self, path: &str, range: Option<&str>) -> reqwest::Response {
        let mut b = self.tus.client.get(self.serve.url(path)).bearer_auth(TOKEN);
        if let Some(r) = range {
            b = b.header("Range", r);
        }
        b.send().await.unwrap()
    }
}

fn serve(s3: &S3Server, state: &Path, extra: &[&str]) -> FerryServe {
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = vec!["--token", TOKEN, "--state-dir", state.to_str().unwrap()];
    args.extend_from_slice(extra);
    FerryServe::start_with_env(
        env!("CARGO_BIN_EXE_ferry"),
        Path::new(&format!("s3://{BUCKET}/up")),
        &args,
        &env,
    )
}

#[tokio::test]
async fn chunked_upload_lands_and_reads_by_ranges() {
    let Some(f) = Fixture::start(&[]) else { return };
    let data = random_bytes(21 * MIB + 123, 1);
    let url = f
        .tus
        .create(TOKEN, Some(data.len() as u64), &[("filename", "a.bin")])
        .await;
    // PATCHes ending inside part 1 (a tail), across parts 1 and 2, inside part 3, and the end.
    let cuts = [3 * MIB, 13 * MIB, 17 * MIB, data.len()];
    let mut at = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        if i == 2 {
            // A checksum that does not match keeps nothing.
            let r = f
                .tus
                .req(TOKEN, Method::PATCH, &url)
                .header("Upload-Offset", at.to_string())
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Checksum", format!("sha1 {}", sha1_b64(b"other")))
                .body(data[at..cut].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 460, "{}", text(r).await);
            assert_eq!(f.tus.offset(TOKEN, &url).await, at as u64);
            // The right checksum is accepted.
            let r = f
                .tus
                .req(TOKEN, Method::PATCH, &url)
                .header("Upload-Offset", at.to_string())
                .header("Content-Type", "application/offset+octet-stream")
                .header(
                    "Upload-Checksum",
                    format!("sha1 {}", sha1_b64(&data[at..cut])),
                )
                .body(data[at..cut].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
        } else {
            f.tus.patch_ok(TOKEN, &url, at as u64, &data[at..cut]).await;
        }
        at = cut;
        if at < data.len() {
            assert_eq!(
                f.tus.offset(TOKEN, &url).await,
                at as u64,
                "after PATCH {i}"
            );
        }
    }
    assert!(
        f.object("a.bin") == Some(data.clone()),
        "the object differs"
    );
    assert!(
        f.state_objects().is_empty(),
        "state left: {:?}",
        f.state_objects()
    );
    // Whole, one range, a suffix, several ranges.
    let r = f.get("/files/a.bin", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == data[..]);
    let r = f.get("/files/a.bin", Some("bytes=8388600-8388700")).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 8388600-8388700/{}", data.len())
    );
    assert!(r.bytes().await.unwrap() == data[8388600..=8388700]);
    let r = f.get("/files/a.bin", Some("bytes=-10")).await;
    assert!(r.bytes().await.unwrap() == data[data.len() - 10..]);
    let r = f.get("/files/a.bin", Some("bytes=0-1,100-101")).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(header(&r, "content-type").starts_with("multipart/byteranges"));
    let r = f.get("/files/nope.bin", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The listing comes from the bucket; the state prefix is never shown nor served.
    let r = f
        .tus
        .client
        .get(f.serve.url("/files/"))
        .bearer_auth(TOKEN)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let listing = text(r).await;
    assert!(listing.contains("\"a.bin\""), "{listing}");
    assert!(!listing.contains(".ferry"), "{listing}");
    let hidden = f.get("/files/.ferry/uploads/", None).await.status();
    assert!(matches!(hidden.as_u16(), 403 | 404), "{hidden}");
    // A second upload to the same name is refused; nothing replaced.
    let r = f
        .tus
        .post(TOKEN, Some(5), &[("filename", "a.bin")], &[])
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "{}", text(r).await);
    assert!(f.object("a.bin") == Some(data));
}

#[tokio::test]
async fn put_with_four_connections_concatenates_by_part_copy() {
    let Some(f) = Fixture::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // 4 partial uploads of 6.5 MiB (copied server-side), and one of 3000 bytes (gathered).
    for (name, len) in [("big.bin", 26 * MIB as u64), ("small.bin", 3000)] {
        let file = dir.path().join(name);
        write_random_file(&file, len, 7).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["put", "-q", "-x", "4", "--token", TOKEN])
            .arg(&file)
            .arg(f.serve.url("/uploads/"))
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ferry put {name}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            f.serve.log()
        );
        assert!(
            f.object(name) == Some(std::fs::read(&file).unwrap()),
            "{name} differs"
        );
    }
    assert!(
        f.state_objects().is_empty(),
        "state left: {:?}",
        f.state_objects()
    );
    assert!(f.s3.part_files().is_empty(), "{:?}", f.s3.part_files());
}

#[tokio::test]
async fn killed_mid_patch_resumes_without_losing_a_byte() {
    let Some(mut f) = Fixture::start(&[]) else {
        return;
    };
    let data = random_bytes(30 * MIB, 3);
    let url = f
        .tus
        .create(TOKEN, Some(data.len() as u64), &[("filename", "k.bin")])
        .await;
    // Acknowledged: 11 MiB (one part and a tail of 3 MiB).
    f.tus.patch_ok(TOKEN, &url, 0, &data[..11 * MIB]).await;
    // A PATCH that sends 12 MiB of its 19 and then stalls; the server dies under it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let req = f
        .tus
        .req(TOKEN, Method::PATCH, &url)
        .header("Upload-Offset", (11 * MIB).to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", (19 * MIB).to_string())
        .body(body)
        .send();
    let pending = tokio::spawn(req);
    for chunk in data[11 * MIB..23 * MIB].chunks(MIB) {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
    }
    // Part 2 (8..16 MiB) goes up once whole: wait for the bucket to hold it.
    let s3 = &f.s3;
    let part_2_whole = || {
        s3.part_files().iter().any(|n| {
            n.ends_with(".part-2")
                && std::fs::metadata(s3.data_dir().join(n)).is_ok_and(|m| m.len() == 8 << 20)
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), part_2_whole),
        "part 2 did not reach the bucket: {:?}",
        s3.part_files()
    );
    f.serve.kill_hard();
    drop(tx);
    let _ = pending.await;
    f.serve.restart();
    f.tus.client = reqwest::Client::new();
    // Parts 1 and 2 are whole in the bucket (the tail they replaced is not counted twice);
    // the bytes after them were only in the dead server's spool, never acknowledged.
    let offset = f.tus.offset(TOKEN, &url).await as usize;
    assert_eq!(offset, 16 * MIB, "{}", f.serve.log());
    f.tus
        .patch_ok(TOKEN, &url, offset as u64, &data[offset..])
        .await;
    assert!(f.object("k.bin") == Some(data), "the object differs");
}

/// A stream over an mpsc receiver (for a request body sent piece by piece).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn deferred_length_in_small_patches() {
    let Some(f) = Fixture::start(&[]) else { return };
    // 40 PATCHes of 256 KiB: more tail pieces than are kept apart (they are merged), parts at
    // 8 MiB; the length is declared with the last PATCH.
    let piece = 256 * 1024;
    let data = random_bytes(40 * piece + 77, 4);
    let url = f.tus.create(TOKEN, None, &[("filename", "d.bin")]).await;
    let mut at = 0;
    while at < data.len() {
        let end = (at + piece).min(data.len());
        let mut b = f
            .tus
            .req(TOKEN, Method::PATCH, &url)
            .header("Upload-Offset", at.to_string())
            .header("Content-Type", "application/offset+octet-stream");
        if end == data.len() {
            b = b.header("Upload-Length", data.len().to_string());
        }
        let r = b.body(data[at..end].to_vec()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
        at = end;
        if at < data.len() {
            assert_eq!(f.tus.offset(TOKEN, &url).await, at as u64);
        }
    }
    assert!(f.object("d.bin") == Some(data), "the object differs");
    assert!(f.state_objects().is_empty(), "{:?}", f.state_objects());
}

#[tokio::test]
async fn termination_and_expiry_abort_the_multipart_upload() {
    let data = random_bytes(9 * MIB, 5);
    // Terminated: DELETE.
    let Some(f) = Fixture::start(&[]) else { return };
    let url = f.tus.create(TOKEN, Some(20 * MIB as u64), &[]).await;
    f.tus.patch_ok(TOKEN, &url, 0, &data).await;
    assert!(!f.s3.part_files().is_empty(), "part 1 is in the bucket");
    assert!(!f.state_objects().is_empty(), "the record and a tail are");
    let r = f.tus.req(TOKEN, Method::DELETE, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(f.s3.part_files().is_empty(), "{:?}", f.s3.part_files());
    assert!(f.state_objects().is_empty(), "{:?}", f.state_objects());
    drop(f);
    // Expired: left alone for longer than the expiry.
    let Some(f) = Fixture::start(&["--upload-expiry", "2s"]) else {
        return;
    };
    let url = f.tus.create(TOKEN, Some(20 * MIB as u64), &[]).await;
    f.tus.patch_ok(TOKEN, &url, 0, &data).await;
    assert!(
        wait_until(Duration::from_secs(30), || f.s3.part_files().is_empty()
            && f.state_objects().is_empty()),
        "not aborted: {:?} {:?}",
        f.s3.part_files(),
        f.state_objects()
    );
    let r = f.tus.head(TOKEN, &url).await;
    assert!(matches!(r.status().as_u16(), 404 | 410), "{}", r.status());
}

/// Runs `ferry serve s3://…` with `env` and returns its exit status and stderr.
fn serve_fails(url: &str, env: &[(String, String)]) -> (i32, String) {
    let state = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", url, "--public", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn start_up_errors_say_what_to_do() {
    let Some(s3) = S3Server::start_or_skip() else {
        return;
    };
    s3.create_bucket(BUCKET);
    let env = s3.env();
    // A bucket that does not exist.
    let (code, err) = serve_fails("s3://no-such-bucket", &env);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
    // Wrong credentials.
    let mut wrong = env.clone();
    for (k, v) in &mut wrong {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret".into();
        }
    }
    let (code, err) = serve_fails(&format!("s3://{BUCKET}"), &wrong);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    // Nothing listening at the endpoint.
    let port = ferry_testkit::util::free_port();
    let mut gone = env.clone();
    for (k, v) in &mut gone {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{port}");
        }
    }
    let (code, err) = serve_fails(&format!("s3://{BUCKET}"), &gone);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the S3 endpoint"), "{err}");
    assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");
    // A malformed URL is a usage error.
    let (code, err) = serve_fails("s3://", &env);
    assert_eq!(code, 2, "{err}");
}
