//! The `ferry-layout` tus extension (docs/uploads.md), in process: the real router and upload
//! core over the in-memory state store and a local data directory. Parts placed in one staged
//! file, the final upload a rename, hostile layouts refused, mixtures copied. (ferry put's
//! `-x 4` into `ferry serve`, kill -9 included, is in `crates/ferry/tests/put.rs`.)

use ferry_server::data::local::LocalDir;
use ferry_server::store::memory::MemoryStore;
use ferry_server::{Auth, Server, ServerConfig};
use ferry_testkit::tus::{TusTester, header, location, sha1_b64, text};
use ferry_testkit::util::random_bytes;
use reqwest::{Method, StatusCode};
use std::sync::Arc;

const MIB: usize = 1 << 20;
const ANN: &str = "token-of-ann";
const BOB: &str = "token-of-bob";

/// Stops the server when dropped (and keeps its directory).
struct Running {
    _stop: tokio::sync::oneshot::Sender<()>,
    _tmp: tempfile::TempDir,
}

/// A server for users ann and bob over a temp dir, and a client for it.
async fn start() -> (TusTester, Running) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let auth = Auth::parse_users(&format!("ann {ANN}\nbob {BOB}\n")).unwrap();
    let config = ServerConfig::new(&dir, auth);
    let data = Arc::new(LocalDir::open(&dir).unwrap());
    let server = Server::with_stores(dir.clone(), Arc::new(MemoryStore::new()), data, &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let running = Running {
        _stop: stop,
        _tmp: tmp,
    };
    (TusTester::new(base, dir, ANN), running)
}

/// POST of a partial upload of `len` bytes placed by the `ferry-layout` value `place`.
async fn placed(env: &TusTester, token: &str, len: usize, place: &str) -> reqwest::Response {
    env.post(
        token,
        Some(len as u64),
        &[("ferry-layout", place)],
        &[("Upload-Concat", "partial")],
    )
    .await
}

/// The `ferry-layout` extension: parts placed in one staged file land at their offsets (bytes
/// written straight there, a checksum mismatch not counted), the final upload is that file
/// renamed (the same inode: nothing copied), and hostile layouts are refused.
#[tokio::test]
async fn layout_places_parts_and_the_final_is_a_rename() {
    use std::os::unix::fs::MetadataExt;
    let (env, _server) = start().await;
    let r = env
        .req(ANN, Method::OPTIONS, "/uploads/")
        .send()
        .await
        .unwrap();
    assert!(
        header(&r, "tus-extension")
            .split(',')
            .any(|e| e == "ferry-layout")
    );
    let data = random_bytes(3 * MIB + 5, 21);
    let cuts = [0, MIB, 2 * MIB + 7, data.len()];
    let total = format!("total={}", data.len());
    let r = placed(&env, ANN, cuts[1], &total).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let host = location(&r);
    let mut parts = vec![host.clone()];
    for w in cuts[1..].windows(2) {
        let r = placed(
            &env,
            ANN,
            w[1] - w[0],
            &format!("host={} offset={}", env.url(&host), w[0]),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
        parts.push(location(&r));
    }
    // Hostile layouts: overlapping, out of range, empty, another user's host, not partial.
    for (token, len, place) in [
        (ANN, 10, format!("host={host} offset={}", cuts[1] - 5)),
        (ANN, 10, format!("host={host} offset={}", data.len() - 5)),
        (ANN, 1, format!("host={host} offset={}", u64::MAX)),
        (ANN, 0, format!("host={host} offset={}", data.len())),
        (ANN, 1, "total=1 host=x offset=0".to_string()),
    ] {
        let r = placed(&env, token, len, &place).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{place}: {}",
            text(r).await
        );
    }
    let r = placed(&env, BOB, 1, &format!("host={host} offset=0")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = env
        .post(ANN, Some(1), &[("ferry-layout", &total)], &[])
        .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a normal upload is not placed"
    );
    // The last part first, then the others; a checksum mismatch moves nothing.
    let r = env
        .req(ANN, Method::PATCH, &parts[2])
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", format!("sha1 {}", sha1_b64(b"other")))
        .body(data[cuts[2]..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 460);
    assert_eq!(env.offset(ANN, &parts[2]).await, 0);
    for i in [2, 0, 1] {
        let half = cuts[i] + (cuts[i + 1] - cuts[i]) / 2;
        env.patch_ok(ANN, &parts[i], 0, &data[cuts[i]..half]).await;
        assert_eq!(env.offset(ANN, &parts[i]).await, (half - cuts[i]) as u64);
        env.patch_ok(
            ANN,
            &parts[i],
            (half - cuts[i]) as u64,
            &data[half..cuts[i + 1]],
        )
        .await;
    }
    // Every byte is at its place in the host's staged file; the members have no file.
    let staged = env.staged(&host);
    assert!(std::fs::read(&staged).unwrap()[..data.len()] == data[..]);
    assert_eq!(env.staged_len(&parts[1]), None);
    let inode = std::fs::metadata(&staged).unwrap().ino();
    let concat = format!("final;{}", parts.join(" "));
    let r = env
        .post(
            ANN,
            None,
            &[("filename", "placed.bin")],
            &[("Upload-Concat", &concat)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let landed = env.dir.join("placed.bin");
    assert!(std::fs::read(&landed).unwrap() == data);
    assert_eq!(
        std::fs::metadata(&landed).unwrap().ino(),
        inode,
        "renamed, not copied"
    );
    // Nothing of the layout is left in staging.
    let left: Vec<_> = std::fs::read_dir(env.dir.join(".ferry/uploads"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Placed parts joined out of order (or with a plain part) are copied: still right.
    let r = placed(&env, ANN, 3, "total=5").await;
    let h2 = location(&r);
    let r = placed(&env, ANN, 2, &format!("host={h2} offset=3")).await;
    let m2 = location(&r);
    env.patch_ok(ANN, &h2, 0, b"abc").await;
    env.patch_ok(ANN, &m2, 0, b"de").await;
    let r = env
        .post(ANN, Some(1), &[], &[("Upload-Concat", "partial")])
        .await;
    let plain = location(&r);
    env.patch_ok(ANN, &plain, 0, b"!").await;
    let concat = format!("final;{m2} {plain} {h2}");
    let r = env
        .post(
            ANN,
            None,
            &[("filename", "mixed.bin")],
            &[("Upload-Concat", &concat)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(std::fs::read(env.dir.join("mixed.bin")).unwrap(), b"de!abc");
}
