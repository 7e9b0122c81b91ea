//! The engine against a server that misbehaves on purpose (ferry-testkit's FaultServer): resets,
//! stalls, 5xx/429 bursts, wrong Content-Range, truncated and overlong bodies, no ranges, no
//! length, redirects, mirrors, a file that changes between runs, digests. Each test asserts a
//! byte-identical file or the documented error.

use ferry_core::{Download, Error, Event, EventSink, Expected, Output, RateLimiter};
use ferry_testkit::fault::{FaultConfig, FaultServer, Faults};
use ferry_testkit::util::random_bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MIB: usize = 1 << 20;

async fn server(data: &[u8], faults: Faults) -> FaultServer {
    FaultServer::start(FaultConfig {
        files: vec![("f.bin".into(), data.to_vec())],
        faults,
    })
    .await
}

/// A builder with test-friendly timings: short backoff and read timeout.
fn builder(url: &str, out: &Path) -> ferry_core::DownloadBuilder {
    Download::builder()
        .url(url)
        .output(Output::File(out.to_owned()))
        .connections(4)
        .min_split(256 * 1024)
        .read_timeout(Duration::from_millis(700))
        .retry_policy(ferry_core::RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(2),
        })
}

/// Builds and runs a download to its end (no cancellation).
trait Go {
    fn go(self) -> impl std::future::Future<Output = Result<ferry_core::Outcome, Error>>;
}

impl Go for ferry_core::DownloadBuilder {
    async fn go(self) -> Result<ferry_core::Outcome, Error> {
        self.build().unwrap().run(CancellationToken::new()).await
    }
}

fn collect() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    (EventSink::new(move |ev| e.lock().unwrap().push(ev)), events)
}

fn assert_file(path: &Path, data: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got.len(), data.len(), "length of {}", path.display());
    assert!(got == data, "{} differs from the source", path.display());
}

fn only_final_file_left(dir: &Path, name: &str) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![name.to_string()],
        "journal and part file must be gone after success"
    );
}

async fn fetch_ok(
    faults: Faults,
    len: usize,
) -> (Vec<u8>, FaultServer, PathBuf, tempfile::TempDir) {
    let data = random_bytes(len, len as u64);
    let srv = server(&data, faults).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let outcome = builder(&srv.url("f.bin"), &out).go().await.unwrap();
    assert_eq!(outcome.bytes, len as u64);
    assert_file(&out, &data);
    only_final_file_left(dir.path(), "out.bin");
    (data, srv, out, dir)
}

#[tokio::test]
async fn plain_ranges_use_several_connections() {
    let (_, srv, _, _d) = fetch_ok(Faults::default(), 8 * MIB + 123).await;
    assert!(
        srv.connection_count() >= 4,
        "expected ≥ 4 connections, saw {}",
        srv.connection_count()
    );
    assert!(
        srv.requests()
            .iter()
            .skip(1)
            .all(|r| r.status == 206 && r.if_range.is_some()),
        "range requests carry If-Range"
    );
    assert!(
        srv.body_bytes_sent() <= 8 * MIB as u64 + 123 + MIB as u64,
        "little waste: {} {:#?}",
        srv.body_bytes_sent(),
        srv.requests()
            .iter()
            .map(|r| (r.conn_id, r.range.clone(), r.body_bytes))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn empty_and_tiny_files() {
    fetch_ok(Faults::default(), 0).await;
    fetch_ok(Faults::default(), 1).await;
    fetch_ok(Faults::default(), 256 * 1024 - 1).await;
    fetch_ok(
        Faults {
            no_ranges: true,
            ..Default::default()
        },
        0,
    )
    .await;
}

#[tokio::test]
async fn server_without_ranges_uses_one_stream() {
    let (_, srv, _, _d) = fetch_ok(
        Faults {
            no_ranges: true,
            ..Default::default()
        },
        3 * MIB,
    )
    .await;
    assert_eq!(srv.request_count(), 1);
}

#[tokio::test]
async fn server_without_content_length_streams_to_eof() {
    fetch_ok(
        Faults {
            no_content_length: true,
            ..Default::default()
        },
        3 * MIB + 7,
    )
    .await;
}

#[tokio::test]
async fn connection_resets_every_few_hundred_kib_still_finish() {
    let faults = Faults {
        reset_after: Some((100_000, 600_000)),
        ..Default::default()
    };
    let (_, srv, _, _d) = fetch_ok(faults, 6 * MIB).await;
    assert!(srv.request_count() > 10, "resets forced many requests");
}

#[tokio::test]
async fn stalled_connections_are_dropped_and_retried() {
    let faults = Faults {
        stall_after: Some(300_000),
        stall_first_n: 2,
        ..Default::default()
    };
    fetch_ok(faults, 4 * MIB).await;
}

#[tokio::test]
async fn error_bursts_and_retry_after_are_survived() {
    let faults = Faults {
        fail_first: 3,
        fail_status: 503,
        retry_after: Some(1),
        ..Default::default()
    };
    fetch_ok(faults, 2 * MIB).await;
    let faults = Faults {
        fail_first: 4,
        fail_status: 429,
        ..Default::default()
    };
    fetch_ok(faults, 2 * MIB).await;
}

#[tokio::test]
async fn truncated_bodies_are_completed_by_more_requests() {
    let faults = Faults {
        truncate_at: Some(200_000),
        ..Default::default()
    };
    fetch_ok(faults, 3 * MIB).await;
}

#[tokio::test]
async fn overlong_bodies_do_not_spill() {
    fetch_ok(
        Faults {
            extra_bytes: 5000,
            extra_chunked: true,
            ..Default::default()
        },
        3 * MIB,
    )
    .await;
    fetch_ok(
        Faults {
            extra_bytes: 5000,
            ..Default::default()
        },
        3 * MIB,
    )
    .await;
}

#[tokio::test]
async fn weak_etag_and_no_validators_still_work() {
    fetch_ok(
        Faults {
            weak_etag: true,
            ..Default::default()
        },
        2 * MIB,
    )
    .await;
    fetch_ok(
        Faults {
            no_validators: true,
            ..Default::default()
        },
        2 * MIB,
    )
    .await;
}

#[tokio::test]
async fn wrong_content_range_is_a_clear_error() {
    let data = random_bytes(2 * MIB, 1);
    let srv = server(
        &data,
        Faults {
            wrong_content_range: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let err = builder(&srv.url("f.bin"), &out).go().await.unwrap_err();
    assert!(matches!(err, Error::RetriesExhausted { .. }), "{err}");
    assert!(
        err.to_string().contains("wrong Content-Range")
            || err.to_string().contains("server sent bytes from"),
        "{err}"
    );
    assert!(!out.exists());
}

#[tokio::test]
async fn not_found_fails_fast() {
    let data = random_bytes(100, 1);
    let srv = server(&data, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let err = builder(&srv.url("missing.bin"), &out)
        .go()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert_eq!(srv.request_count(), 1, "a 404 is not retried");
    assert!(!out.exists());
}

#[tokio::test]
async fn redirects_are_followed_and_ranges_use_the_final_url() {
    let data = random_bytes(4 * MIB, 2);
    let srv = server(
        &data,
        Faults {
            redirect_prefix: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    builder(&srv.url("r/f.bin"), &out).go().await.unwrap();
    assert_file(&out, &data);
    let redirected = srv
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/r/"))
        .count();
    assert_eq!(
        redirected, 1,
        "only the first request goes through the redirect"
    );
}

#[tokio::test]
async fn name_from_content_disposition_cannot_escape_the_directory() {
    let data = random_bytes(1000, 3);
    let faults = Faults {
        content_disposition: Some("attachment; filename=\"../../evil.txt\"".into()),
        ..Default::default()
    };
    let srv = server(&data, faults).await;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("dl");
    let outcome = Download::builder()
        .url(srv.url("f.bin"))
        .output(Output::Dir(sub.clone()))
        .go()
        .await
        .unwrap();
    assert_eq!(outcome.path, sub.join("evil.txt"));
    assert_file(&sub.join("evil.txt"), &data);
}

#[tokio::test]
async fn user_checksum_and_repr_digest_are_verified() {
    let data = random_bytes(3 * MIB, 4);
    let good = format!("sha-256={}", hex_sha256(&data));
    let srv = server(
        &data,
        Faults {
            repr_digest: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ok.bin");
    let o = builder(&srv.url("f.bin"), &out)
        .checksum(Expected::parse_spec(&good).unwrap())
        .go()
        .await
        .unwrap();
    assert_eq!(o.verified.len(), 2, "{:?}", o.verified);
    assert!(o.verified.iter().any(|v| v.contains("Repr-Digest")));

    // A wrong --checksum: error, the data stays in .part, no final file.
    let out = dir.path().join("bad.bin");
    let bad = format!("md5={}", "0".repeat(32));
    let err = builder(&srv.url("f.bin"), &out)
        .checksum(Expected::parse_spec(&bad).unwrap())
        .go()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    assert!(!out.exists());
    assert_file(&dir.path().join("bad.bin.part"), &data);

    // A server whose Repr-Digest does not match its bytes.
    srv.set_faults(Faults {
        corrupt_digest: true,
        ..Default::default()
    });
    let out = dir.path().join("lying.bin");
    let err = builder(&srv.url("f.bin"), &out).go().await.unwrap_err();
    assert!(err.to_string().contains("Repr-Digest"), "{err}");
    assert!(!out.exists());
}

fn hex_sha256(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, data).unwrap();
    let d = ferry_core::verify::digest_file(&p, &[ferry_core::Algorithm::Sha256]).unwrap();
    d[0].iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a throttled download and cancels it once `at_least` bytes are on disk.
async fn interrupted_run(
    url: &str,
    out: &Path,
    at_least: u64,
) -> Result<ferry_core::Outcome, Error> {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let sink = EventSink::new(move |e| {
        if let Event::Progress { done, .. } = e
            && done >= at_least
        {
            c.cancel();
        }
    });
    builder(url, out)
        .rate_limiter(Arc::new(RateLimiter::new(8 << 20)))
        .events(sink)
        .build()
        .unwrap()
        .run(cancel)
        .await
}

#[tokio::test]
async fn cancel_then_resume_is_identical_and_refetches_little() {
    let data = random_bytes(12 * MIB, 5);
    let srv = server(&data, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let err = interrupted_run(&srv.url("f.bin"), &out, 3 * MIB as u64)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(dir.path().join("out.bin.ferry").exists() && dir.path().join("out.bin.part").exists());
    let journal = ferry_core::Journal::load(&dir.path().join("out.bin.ferry"))
        .unwrap()
        .unwrap();
    assert!(
        journal.done.covered() >= 3 * MIB as u64,
        "the journal holds the progress: {}",
        journal.done.covered()
    );
    let before = srv.body_bytes_sent();
    let o = builder(&srv.url("f.bin"), &out).go().await.unwrap();
    assert_file(&out, &data);
    let missing = data.len() as u64 - journal.done.covered();
    assert!(
        o.fetched >= missing && o.fetched <= missing + MIB as u64,
        "the rerun fetched {} for {missing} missing",
        o.fetched
    );
    let sent = srv.body_bytes_sent() - before;
    assert!(
        sent <= missing + 2 * MIB as u64,
        "the server sent {sent} for {missing} missing bytes"
    );
}

#[tokio::test]
async fn a_changed_remote_file_restarts_and_is_never_spliced() {
    let old = random_bytes(10 * MIB, 6);
    let new = random_bytes(10 * MIB, 7);
    let srv = server(&old, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    interrupted_run(&srv.url("f.bin"), &out, 2 * MIB as u64)
        .await
        .unwrap_err();
    srv.set_file("f.bin", new.clone());

    // --no-restart refuses, keeping the partial download.
    let err = builder(&srv.url("f.bin"), &out)
        .no_restart(true)
        .go()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RemoteChanged { .. }), "{err}");
    assert!(dir.path().join("out.bin.ferry").exists());

    // Default: warn and start over; the result is the new file.
    let (sink, events) = collect();
    builder(&srv.url("f.bin"), &out)
        .events(sink)
        .go()
        .await
        .unwrap();
    assert_file(&out, &new);
    let warned = events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Warning { message, .. } if message.contains("changed")));
    assert!(warned, "a restart is announced");
}

/// One connection makes several bounded requests; the file changes between two of them. The
/// second request's If-Range no longer matches, so the server answers 200 and ferry starts over
/// instead of splicing old and new bytes.
#[tokio::test]
async fn a_file_changing_mid_download_is_detected_by_if_range() {
    let old = random_bytes(12 * MIB, 8);
    let new = random_bytes(12 * MIB, 9);
    let srv = Arc::new(server(&old, Faults::default()).await);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, ch, new2) = (srv.clone(), changed.clone(), new.clone());
    let (collector, events) = collect();
    let sink = EventSink::new(move |e| {
        if let Event::Progress { done, .. } = &e
            && *done > 2 * MIB as u64
            && !ch.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            s2.set_file("f.bin", new2.clone());
        }
        collector.emit(e);
    });
    builder(&srv.url("f.bin"), &out)
        .connections(1)
        .rate_limiter(Arc::new(RateLimiter::new(16 << 20)))
        .events(sink)
        .go()
        .await
        .unwrap();
    assert_file(&out, &new);
    let warned = events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Warning { message, .. } if message.contains("changed")));
    assert!(warned, "the restart is announced");
    assert!(
        srv.requests()
            .iter()
            .any(|r| r.if_range.is_some() && r.status == 200),
        "If-Range caught the change"
    );
}

#[tokio::test]
async fn corrupt_journal_is_reported_not_trusted() {
    let data = random_bytes(2 * MIB, 10);
    let srv = server(&data, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    std::fs::write(
        dir.path().join("out.bin.ferry"),
        "FERRY-JOURNAL 1\n{\"garbage\"\nblake3:00\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("out.bin.part"), b"old").unwrap();
    let err = builder(&srv.url("f.bin"), &out).go().await.unwrap_err();
    assert!(matches!(err, Error::JournalCorrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("out.bin.part")).unwrap(),
        b"old",
        "nothing is truncated"
    );
    builder(&srv.url("f.bin"), &out)
        .restart(true)
        .go()
        .await
        .unwrap();
    assert_file(&out, &data);
}

#[tokio::test]
async fn existing_file_is_kept_unless_restart() {
    let data = random_bytes(MIB, 11);
    let srv = server(&data, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    std::fs::write(&out, b"precious").unwrap();
    let err = builder(&srv.url("f.bin"), &out).go().await.unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    builder(&srv.url("f.bin"), &out)
        .restart(true)
        .go()
        .await
        .unwrap();
    assert_file(&out, &data);
    // A rerun of a finished download is a no-op success.
    let o = builder(&srv.url("f.bin"), &out).go().await.unwrap();
    assert!(o.already_complete);
}

#[tokio::test]
async fn mirrors_share_the_work_and_a_wrong_mirror_is_dropped() {
    let data = random_bytes(8 * MIB, 12);
    let a = server(&data, Faults::default()).await;
    let b = server(&data, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    builder(&a.url("f.bin"), &out)
        .url(b.url("f.bin"))
        .go()
        .await
        .unwrap();
    assert_file(&out, &data);
    assert!(
        a.body_bytes_sent() > 0 && b.body_bytes_sent() > 0,
        "both mirrors served: {} {}",
        a.body_bytes_sent(),
        b.body_bytes_sent()
    );

    // A "mirror" with another file is dropped with a warning; the download still completes.
    let other = server(&random_bytes(5 * MIB, 13), Faults::default()).await;
    let out2 = dir.path().join("out2.bin");
    let (sink, events) = collect();
    builder(&a.url("f.bin"), &out2)
        .url(other.url("f.bin"))
        .events(sink)
        .go()
        .await
        .unwrap();
    assert_file(&out2, &data);
    let warned = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Warning { message, .. } if message.contains("mirror")))
        .count();
    assert_eq!(
        warned,
        1,
        "dropped once, reported once: {:?}",
        events.lock().unwrap()
    );
}

#[tokio::test]
async fn request_headers_are_sent() {
    let data = random_bytes(1000, 14);
    let srv = server(&data, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    builder(&srv.url("f.bin"), &out)
        .header("Authorization", "Bearer sekret")
        .unwrap()
        .go()
        .await
        .unwrap();
    assert!(
        srv.requests()
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer sekret"))
    );
}

#[tokio::test]
async fn a_second_writer_on_the_same_output_is_refused() {
    let data = random_bytes(8 * MIB, 15);
    let srv = server(
        &data,
        Faults {
            rate_per_conn: Some(2 << 20),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Mutex::new(Some(started_tx));
    let sink = EventSink::new(move |e| {
        if matches!(e, Event::Start { .. })
            && let Some(tx) = started_tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    });
    let cancel = CancellationToken::new();
    let download = builder(&srv.url("f.bin"), &out)
        .events(sink)
        .build()
        .unwrap();
    let c = cancel.clone();
    let first = tokio::spawn(async move { download.run(c).await });
    started_rx.await.unwrap();
    let err = builder(&srv.url("f.bin"), &out).go().await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    cancel.cancel();
    assert!(matches!(first.await.unwrap(), Err(Error::Cancelled)));
}

/// One connection crawls (32 KiB/s on a 2 MiB range, about a minute alone) while the others are
/// fast: stealing and the endgame take its bytes over, so the download ends long before that.
/// The deadline only turns a hang into a failure; it measures nothing.
#[tokio::test]
async fn one_slow_connection_cannot_hold_the_file_hostage() {
    let data = random_bytes(8 * MIB, 16);
    let slow_from = 2 * MIB as u64;
    let srv = server(
        &data,
        Faults {
            slow_at_offset: Some((slow_from, 32 << 10)),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let download = builder(&srv.url("f.bin"), &out).build().unwrap();
    tokio::time::timeout(
        Duration::from_secs(40),
        download.run(CancellationToken::new()),
    )
    .await
    .expect("the slow connection held the download hostage")
    .unwrap();
    assert_file(&out, &data);
    let slow = srv
        .requests()
        .into_iter()
        .find(|r| {
            r.range
                .as_deref()
                .is_some_and(|r| r.starts_with(&format!("bytes={slow_from}-")))
        })
        .unwrap();
    assert!(
        slow.body_bytes < MIB as u64,
        "the slow response itself delivered only {} bytes",
        slow.body_bytes
    );
}

fn piece_hashes(data: &[u8], size: usize) -> ferry_core::PieceHashes {
    ferry_core::PieceHashes {
        size: size as u64,
        hashes: data
            .chunks(size)
            .map(|c| *blake3::hash(c).as_bytes())
            .collect(),
    }
}

#[tokio::test]
async fn pieces_are_verified_and_a_lying_source_is_dropped() {
    let data = random_bytes(6 * MIB + 123, 40);
    let mut bad = data.clone();
    for i in (0..bad.len()).step_by(MIB) {
        bad[i] ^= 0xff; // one wrong byte in every MiB
    }
    let no_validators = Faults {
        no_validators: true,
        ..Faults::default()
    };
    let honest = server(&data, no_validators.clone()).await;
    let liar = server(&bad, no_validators.clone()).await;
    let dir = tempfile::tempdir().unwrap();

    // The honest source alone: every piece checks out.
    let out = dir.path().join("a.bin");
    let done = builder(&honest.url("f.bin"), &out)
        .pieces(piece_hashes(&data, 256 << 10))
        .go()
        .await
        .unwrap();
    assert_file(&out, &data);
    assert!(
        done.verified.iter().any(|v| v.contains("blake3")),
        "{:?}",
        done.verified
    );

    // With a liar beside it: byte-identical, and the liar is dropped and named.
    let out = dir.path().join("b.bin");
    let (sink, events) = collect();
    builder(&liar.url("f.bin"), &out)
        .url(honest.url("f.bin"))
        .connections(4)
        .pieces(piece_hashes(&data, 256 << 10))
        .events(sink)
        .go()
        .await
        .unwrap();
    assert_file(&out, &data);
    let dropped = events.lock().unwrap().iter().any(|e| {
        matches!(e, Event::Warning { message, .. } if message.contains("dropped") && message.contains(&liar.url("f.bin")))
    });
    assert!(dropped, "the liar is reported");

    // The liar alone: a clear error; verified pieces are kept, and a rerun with an honest
    // source fetches only what is missing.
    let out = dir.path().join("c.bin");
    let err = builder(&liar.url("f.bin"), &out)
        .pieces(piece_hashes(&data, 256 << 10))
        .go()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoHonestSource { .. }), "{err}");
    assert!(err.is_resumable());
    assert!(!out.exists());
    let before = honest.body_bytes_sent();
    builder(&honest.url("f.bin"), &out)
        .pieces(piece_hashes(&data, 256 << 10))
        .go()
        .await
        .unwrap();
    assert_file(&out, &data);
    assert!(honest.body_bytes_sent() - before <= data.len() as u64);
}
