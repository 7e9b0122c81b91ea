//! The harnesses against real servers, checked with curl: nginx serves ranges (and its
//! throttled and no-range locations serve correct bytes), python's http.server ignores Range.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_testkit::nginx::{Nginx, NginxOptions};
use ferry_testkit::pyserver::PyHttpServer;
use ferry_testkit::util::{files_equal, random_bytes, write_random_file};

/// Runs `curl -s -o OUT -w '%{http_code}' ARGS... URL` and returns (status, body).
fn curl(url: &str, args: &[&str], out: &Path) -> (u16, Vec<u8>) {
    let o = Command::new("curl")
        .args(["-s", "-S", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl (scripts/test.sh installs it)");
    assert!(o.status.success(), "curl failed: {o:?}");
    let status = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    (status, std::fs::read(out).unwrap_or_default())
}

#[test]
fn nginx_serves_ranges_and_logs_bytes() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(100_000, 42);
    std::fs::write(root.path().join("f.bin"), &data).unwrap();
    let nginx = Nginx::start(root.path());
    let out = root.path().join("out");

    let (status, body) = curl(&nginx.url("f.bin"), &["-r", "0-99"], &out);
    assert_eq!(status, 206);
    assert_eq!(body, &data[..100]);

    let (status, body) = curl(&nginx.url("/f.bin"), &["-r", "1000-"], &out);
    assert_eq!(status, 206);
    assert_eq!(body, &data[1000..]);

    let (status, body) = curl(&nginx.url("f.bin"), &[], &out);
    assert_eq!(status, 200);
    assert_eq!(body, data);

    let (status, _) = curl(&nginx.url("missing"), &[], &out);
    assert_eq!(status, 404);

    let log = nginx.wait_for_requests(4, Duration::from_secs(10)).unwrap();
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].uri, "/f.bin");
    assert_eq!(log[0].status, 206);
    assert_eq!(log[0].range.as_deref(), Some("bytes=0-99"));
    assert!(log[0].completed);
    assert_eq!(log[2].range, None);
    assert_eq!(log[3].status, 404);
    let ok_bytes: u64 = log
        .iter()
        .filter(|e| e.status != 404)
        .map(|e| e.body_bytes_sent)
        .sum();
    assert_eq!(ok_bytes, 100 + (100_000 - 1000) + 100_000);
    assert!(nginx.body_bytes_sent() >= ok_bytes);
}

#[test]
fn nginx_slow_location_serves_correct_bytes() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("f.bin");
    write_random_file(&src, 3 << 20, 7).unwrap();
    // Timing is never asserted; 50 MiB/s keeps this test short.
    let nginx = Nginx::start_with(
        root.path(),
        NginxOptions {
            limit_rate: Some("50m".into()),
            ..Default::default()
        },
    );
    let out = root.path().join("out");
    let (status, _) = curl(&nginx.slow_url("f.bin"), &[], &out);
    assert_eq!(status, 200);
    assert!(files_equal(&src, &out));

    let (status, body) = curl(&nginx.slow_url("f.bin"), &["-r", "5-14"], &out);
    assert_eq!(status, 206);
    assert_eq!(body, &random_bytes(15, 7)[5..]);

    let log = nginx.wait_for_requests(2, Duration::from_secs(10)).unwrap();
    assert_eq!(log[0].uri, "/slow/f.bin");
    assert_eq!(log[0].body_bytes_sent, 3 << 20);
    assert!(
        std::fs::read_to_string(nginx.dir().join("nginx.conf"))
            .unwrap()
            .contains("limit_rate \"50m\";")
    );
}

#[test]
fn nginx_norange_location_answers_200() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(5000, 3);
    std::fs::write(root.path().join("f.bin"), &data).unwrap();
    let nginx = Nginx::start(root.path());
    let out = root.path().join("out");
    let (status, body) = curl(&nginx.norange_url("f.bin"), &["-r", "0-99"], &out);
    assert_eq!(status, 200);
    assert_eq!(body, data);
}

#[test]
fn nginx_instances_are_independent_and_stop_on_drop() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a"), b"hello").unwrap();
    let a = Nginx::start(root.path());
    let b = Nginx::start(root.path());
    assert_ne!(a.port(), b.port());
    let pid = a.pid();
    let addr = a.addr();
    drop(a);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "nginx pid {pid} still exists after drop"
    );
    assert!(std::net::TcpStream::connect(addr).is_err());
    let out = root.path().join("out");
    assert_eq!(curl(&b.url("a"), &[], &out).1, b"hello");
}

#[test]
fn python_server_ignores_range() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(10_000, 9);
    std::fs::write(root.path().join("f.bin"), &data).unwrap();
    let py = PyHttpServer::start(root.path());
    let out = root.path().join("out");
    let (status, body) = curl(&py.url("f.bin"), &["-r", "0-99"], &out);
    assert_eq!(
        status, 200,
        "this python3's http.server answered a Range request with {status}: it supports ranges \
         now, so PyHttpServer no longer models a server without Range support"
    );
    assert_eq!(body, data);
    let pid = py.pid();
    drop(py);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}
