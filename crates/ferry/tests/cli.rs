//! The `ferry` binary end to end against real servers (nginx, `python3 -m http.server`) and the
//! fault server: byte-identical results, SIGKILL and resume, Ctrl-C, exit codes, JSON events,
//! lists, and `ferry status`.

use ferry_testkit::certs::private_ca;
use ferry_testkit::fault::{FaultConfig, FaultServer, Faults};
use ferry_testkit::nginx::{Nginx, NginxOptions};
use ferry_testkit::pyserver::PyHttpServer;
use ferry_testkit::util::{files_equal, random_bytes, wait_until, write_random_file};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.stdin(Stdio::null());
    c
}

fn run(args: &[&str], cwd: &Path) -> Output {
    ferry()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run ferry")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn kill(child: &mut Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn nginx_plain_and_per_connection_throttled() {
    let root = tempfile::tempdir().unwrap();
    write_random_file(root.path().join("big.bin"), 64 * MIB + 17, 1).unwrap();
    let nginx = Nginx::start_with(
        root.path(),
        NginxOptions {
            limit_rate: Some("20m".into()),
            ..Default::default()
        },
    );
    let out = tempfile::tempdir().unwrap();

    let o = run(
        &[
            "get",
            "-q",
            "-x",
            "8",
            "-o",
            "plain.bin",
            &nginx.url("big.bin"),
        ],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(
        &root.path().join("big.bin"),
        &out.path().join("plain.bin")
    ));

    // Throttled per connection: 4 connections each limited by nginx.
    let o = run(
        &[
            "get",
            "-q",
            "-x",
            "4",
            "-o",
            "slow.bin",
            &nginx.slow_url("big.bin"),
        ],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(
        &root.path().join("big.bin"),
        &out.path().join("slow.bin")
    ));
    let ranged = nginx
        .access_log()
        .iter()
        .filter(|e| e.status == 206)
        .count();
    assert!(ranged >= 8, "both downloads used range requests ({ranged})");

    // -d: the name comes from the URL; nothing but the file is left behind.
    let o = run(
        &["get", "-q", "-d", "sub", &nginx.url("big.bin")],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(out.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("big.bin")]);
}

#[test]
fn python_http_server_without_range_support() {
    let root = tempfile::tempdir().unwrap();
    write_random_file(root.path().join("f.bin"), 9 * MIB + 5, 2).unwrap();
    let py = PyHttpServer::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let o = run(
        &["get", "-x", "8", "-o", "f.bin", &py.url("f.bin")],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not support byte ranges"),
        "{}",
        stderr(&o)
    );
    assert!(files_equal(
        &root.path().join("f.bin"),
        &out.path().join("f.bin")
    ));
}

/// SIGKILL at a random instant, rerun: byte-identical, and the bytes the server sent in total
/// exceed the file by at most 16 MiB (128 MiB file, 4 connections).
#[test]
fn sigkill_then_rerun_is_identical_and_wastes_little() {
    let len = 128 * MIB;
    let data = random_bytes(len as usize, 3);
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("big.bin".into(), data.clone())],
        faults: Faults {
            rate_per_conn: Some(10 * MIB),
            ..Default::default()
        },
    });
    let out = tempfile::tempdir().unwrap();
    let url = srv.url("big.bin");
    let args = ["get", "-q", "-x", "4", "-o", "big.bin", url.as_str()];

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let kill_after = 8 * MIB + seed % (80 * MIB);
    eprintln!("killing after the server sent {kill_after} bytes (seed {seed})");
    let mut child = ferry().args(args).current_dir(out.path()).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || srv.body_bytes_sent()
            >= kill_after),
        "transfer never got going"
    );
    kill(&mut child, "-KILL");
    child.wait().unwrap();
    assert!(
        out.path().join("big.bin.part").exists(),
        "the partial download is kept"
    );
    assert!(!out.path().join("big.bin").exists());

    let o = run(&args, out.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let got = std::fs::read(out.path().join("big.bin")).unwrap();
    assert!(got == data, "the resumed file differs");
    assert!(
        !out.path().join("big.bin.ferry").exists() && !out.path().join("big.bin.part").exists()
    );
    let extra = srv.body_bytes_sent() - len;
    eprintln!(
        "extra bytes fetched: {extra} ({:.2} MiB)",
        extra as f64 / MIB as f64
    );
    // What a kill wastes is what arrived after the last checkpoint plus what was in flight:
    // checkpoints are taken on a timer, so the figure grows with the machine's load (1-3 MiB
    // idle, up to about 10 MiB with two cores busy). 16 MiB still tells "resumed" from
    // "started over" (128 MiB) or "lost a connection's segment" (32 MiB).
    assert!(
        extra <= 16 * MIB,
        "fetched {extra} bytes more than the file"
    );
}

#[test]
fn ctrl_c_pauses_with_exit_3_and_status_shows_the_journal() {
    let data = random_bytes(24 * MIB as usize, 4);
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data.clone())],
        faults: Faults {
            rate_per_conn: Some(2 * MIB),
            ..Default::default()
        },
    });
    let out = tempfile::tempdir().unwrap();
    let url = srv.url("f.bin");
    let mut child = ferry()
        .args(["get", "-x", "2", "-o", "f.bin", &url])
        .current_dir(out.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || srv
        .body_bytes_sent()
        >= 3 * MIB));
    kill(&mut child, "-INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("rerun the same command to resume"),
        "{}",
        stderr(&o)
    );

    let st = run(&["status", "f.bin"], out.path());
    assert!(st.status.success(), "{}", stderr(&st));
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("partial") && text.contains(&url) && text.contains("missing:"),
        "{text}"
    );

    srv.set_faults(Faults::default());
    let o = run(&["get", "-q", "-x", "2", "-o", "f.bin", &url], out.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("f.bin")).unwrap() == data);
    let st = run(&["status", "f.bin"], out.path());
    assert!(String::from_utf8_lossy(&st.stdout).contains("complete"));
}

#[test]
fn exit_codes_and_clear_errors() {
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), random_bytes(1000, 5))],
        faults: Faults::default(),
    });
    let out = tempfile::tempdir().unwrap();
    let o = run(&["get", "-x", "zero", &srv.url("f.bin")], out.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("-x"), "{}", stderr(&o));
    let o = run(&["get", "--bogus-flag"], out.path());
    assert_eq!(o.status.code(), Some(2));
    let o = run(
        &["get", "--checksum", "sha-256=xyz", &srv.url("f.bin")],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let o = run(&["get", "-o", "x.bin", &srv.url("nope.bin")], out.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("404") && stderr(&o).contains("check the URL"),
        "{}",
        stderr(&o)
    );
    assert!(!out.path().join("x.bin").exists());

    let o = run(
        &[
            "get",
            "-o",
            "x.bin",
            "--checksum",
            &format!("md5={}", "0".repeat(32)),
            &srv.url("f.bin"),
        ],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("checksum mismatch") && stderr(&o).contains("x.bin.part"),
        "{}",
        stderr(&o)
    );
    assert!(!out.path().join("x.bin").exists() && out.path().join("x.bin.part").exists());
}

#[test]
fn json_events_are_one_object_per_line() {
    let data = random_bytes(3 * MIB as usize, 6);
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data)],
        faults: Faults {
            fail_first: 1,
            fail_status: 503,
            retry_after: Some(0),
            ..Default::default()
        },
    });
    let out = tempfile::tempdir().unwrap();
    let o = run(
        &["get", "--json", "-o", "f.bin", &srv.url("f.bin")],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"retry") && kinds.contains(&"start") && kinds.last() == Some(&"done"),
        "{kinds:?}"
    );
    let done = events.last().unwrap();
    assert_eq!(done["bytes"], 3 * MIB);

    let o = run(
        &["get", "--json", "-o", "g.bin", &srv.url("missing")],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error");
    assert!(last["message"].as_str().unwrap().contains("404"));
}

#[test]
fn list_input_with_parallel_jobs_and_mirrors() {
    let root = tempfile::tempdir().unwrap();
    for i in 0..6 {
        write_random_file(
            root.path().join(format!("f{i}.bin")),
            MIB + i * 1000,
            10 + i,
        )
        .unwrap();
    }
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let mut list = String::from("# a comment\n\n");
    for i in 0..5 {
        list.push_str(&nginx.url(&format!("f{i}.bin")));
        list.push('\n');
    }
    // f5 from two "mirrors" (the same nginx under two URLs).
    list.push_str(&format!(
        "{}\t{}\n",
        nginx.url("f5.bin"),
        nginx.slow_url("f5.bin")
    ));
    std::fs::write(out.path().join("list.txt"), list).unwrap();
    let o = run(
        &["get", "-q", "-i", "list.txt", "-j", "3", "-d", "dl"],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for i in 0..6 {
        let name = format!("f{i}.bin");
        assert!(
            files_equal(&root.path().join(&name), &out.path().join("dl").join(&name)),
            "{name}"
        );
    }
}

#[test]
fn https_via_rustls_with_certificate_verification() {
    let root = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = private_ca(certs.path()).expect("openssl makes the test CA");
    write_random_file(root.path().join("s.bin"), 6 * MIB + 3, 20).unwrap();
    let port = ferry_testkit::util::free_port();
    let tls_server = format!(
        "server {{ listen 127.0.0.1:{port} ssl http2; ssl_certificate {}; ssl_certificate_key {}; root {}; }}",
        ca.cert.display(),
        ca.key.display(),
        root.path().display()
    );
    let nginx = Nginx::start_with(
        root.path(),
        NginxOptions {
            extra_http: tls_server,
            ..Default::default()
        },
    );
    ferry_testkit::util::wait_for_port(("127.0.0.1", port), Duration::from_secs(10)).unwrap();
    let url = format!("https://localhost:{port}/s.bin");
    let out = tempfile::tempdir().unwrap();

    // Trusted through SSL_CERT_FILE: works, over several connections.
    let o = ferry()
        .args(["get", "-q", "-x", "4", "-o", "s.bin", &url])
        .env("SSL_CERT_FILE", &ca.ca)
        .current_dir(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(
        &root.path().join("s.bin"),
        &out.path().join("s.bin")
    ));
    // HTTP/2 is negotiated, yet every ferry connection is its own TCP connection.
    let conns: std::collections::HashSet<u64> = nginx
        .access_log()
        .iter()
        .filter(|e| e.uri == "/s.bin")
        .map(|e| e.connection)
        .collect();
    assert!(
        conns.len() >= 2,
        "ranges were multiplexed onto {} connection(s)",
        conns.len()
    );

    // Not trusted: a clear failure, no file.
    let o = ferry()
        .args(["get", "-q", "--retries", "1", "-o", "t.bin", &url])
        .env("SSL_CERT_FILE", &ca.cert)
        .env("SSL_CERT_DIR", out.path())
        .current_dir(out.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );
    assert!(!out.path().join("t.bin").exists());
}

/// A self-signed certificate such as `openssl req -x509` makes (a CA certificate used as the
/// server's own): refused at once with one plain sentence and the way out, no retries and no
/// TLS library log lines; trusted with `--cacert`, skipped with `--insecure`; `put` too.
#[test]
fn self_signed_certificate_cacert_and_insecure() {
    let root = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .current_dir(certs.path())
        .output()
        .expect("openssl is installed");
    assert!(o.status.success(), "{}", stderr(&o));
    write_random_file(root.path().join("s.bin"), 3 * MIB + 1, 22).unwrap();
    let port = ferry_testkit::util::free_port();
    let c = certs.path().display();
    let _nginx = Nginx::start_with(
        root.path(),
        NginxOptions {
            extra_http: format!(
                "server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {c}/self.pem; ssl_certificate_key {c}/self.key; root {}; }}",
                root.path().display()
            ),
            ..Default::default()
        },
    );
    ferry_testkit::util::wait_for_port(("127.0.0.1", port), Duration::from_secs(10)).unwrap();
    let url = format!("https://localhost:{port}/s.bin");
    let out = tempfile::tempdir().unwrap();
    let cacert = certs.path().join("self.pem");

    let o = run(&["get", "-q", "-o", "a.bin", &url], out.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("certificate is not trusted")
            && err.contains("openssl req -x509")
            && err.contains("--cacert FILE")
            && err.contains("--insecure"),
        "{err}"
    );
    assert!(!err.contains("rustls") && !err.contains('\x1b'), "{err}");
    let o = run(&["get", "--json", "-o", "a.bin", &url], out.path());
    assert_eq!(o.status.code(), Some(1));
    let events = String::from_utf8_lossy(&o.stdout);
    assert!(!events.contains("\"retry\""), "not retried: {events}");
    assert!(!out.path().join("a.bin").exists());

    let o = run(
        &[
            "get",
            "-q",
            "-x",
            "2",
            "--cacert",
            cacert.to_str().unwrap(),
            "-o",
            "a.bin",
            &url,
        ],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(
        &root.path().join("s.bin"),
        &out.path().join("a.bin")
    ));
    let o = run(
        &["get", "-q", "--insecure", "-o", "b.bin", &url],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(
        &root.path().join("s.bin"),
        &out.path().join("b.bin")
    ));
    // The certificate names localhost and 127.0.0.1 only: another name is still refused.
    let other = format!("https://127.0.0.2:{port}/s.bin");
    let o = run(
        &[
            "get",
            "-q",
            "--cacert",
            cacert.to_str().unwrap(),
            "-o",
            "c.bin",
            &other,
        ],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // put meets the same refusal before sending anything, and --cacert gets it past TLS
    // (nginx is no tus server: the answer is then an HTTP error, not a certificate one).
    let endpoint = format!("https://localhost:{port}/uploads/");
    let file = root.path().join("s.bin");
    let o = run(
        &["put", "-q", file.to_str().unwrap(), &endpoint],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--cacert FILE"), "{}", stderr(&o));
    let o = run(
        &[
            "put",
            "-q",
            "--retries",
            "1",
            "--cacert",
            cacert.to_str().unwrap(),
            file.to_str().unwrap(),
            &endpoint,
        ],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("certificate"), "{}", stderr(&o));
}

/// HTTP_PROXY routes requests through the proxy (here the fault server, which accepts
/// absolute-form targets as a forward proxy would); NO_PROXY exempts a host.
#[test]
fn http_proxy_and_no_proxy_are_honoured() {
    let data = random_bytes(2 * MIB as usize, 21);
    let proxy = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data.clone())],
        faults: Faults::default(),
    });
    let out = tempfile::tempdir().unwrap();
    let url = "http://ferry-proxy-test.invalid/f.bin";
    let proxy_url = format!("http://{}", proxy.addr());
    let o = ferry()
        .args(["get", "-q", "-x", "2", "-o", "p.bin", url])
        .env("HTTP_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .current_dir(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("p.bin")).unwrap() == data);
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.path.starts_with("http://ferry-proxy-test.invalid/"))
    );

    let before = proxy.request_count();
    let o = ferry()
        .args(["get", "-q", "--retries", "0", "-o", "n.bin", url])
        .env("HTTP_PROXY", &proxy_url)
        .env("NO_PROXY", "ferry-proxy-test.invalid")
        .current_dir(out.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "the host does not resolve without the proxy"
    );
    assert_eq!(proxy.request_count(), before, "NO_PROXY bypassed the proxy");
}

/// A file of the right length that ferry did not make is neither trusted as finished nor
/// touched; one ferry finished is recognised on a rerun.
#[test]
fn a_foreign_file_of_the_right_length_is_not_trusted() {
    let data = random_bytes(100_000, 23);
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data.clone())],
        faults: Faults::default(),
    });
    let out = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; data.len()];
    std::fs::write(out.path().join("f.bin"), &zeros).unwrap();
    let o = run(&["get", "-q", &srv.url("f.bin")], out.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("f.bin")).unwrap() == zeros);

    let o = run(&["get", "-q", "--restart", &srv.url("f.bin")], out.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("f.bin")).unwrap() == data);
    let before = srv.request_count();
    let o = run(&["get", "--json", &srv.url("f.bin")], out.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let events = String::from_utf8_lossy(&o.stdout);
    assert!(
        events.contains("\"fetched\":0"),
        "nothing fetched again: {events}"
    );
    assert!(srv.request_count() - before <= 1, "one probe only");
}

/// An unreachable host: retry lines name the URL (no empty name) without the HTTP stack's
/// layers, and the end says the server never answered, not that a rerun resumes.
#[test]
fn an_unreachable_host_is_named_and_not_resumable() {
    let out = tempfile::tempdir().unwrap();
    let port = ferry_testkit::util::free_port();
    let url = format!("http://127.0.0.1:{port}/f.bin");
    let o = run(&["get", "--retries", "2", &url], out.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 2, "{err}");
    for retry in &lines[..lines.len() - 1] {
        assert!(retry.starts_with(&format!("{url}: retry ")), "{err}");
    }
    let last = lines[lines.len() - 1];
    assert!(
        last.contains("no answer after") && last.contains("check the address"),
        "{err}"
    );
    assert!(
        !err.contains("client error (Connect)") && !err.contains("resume"),
        "{err}"
    );
}

/// `-o` into a folder that does not exist is refused (no folders are made behind one's back).
#[test]
fn output_into_a_missing_folder_is_refused() {
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), random_bytes(1000, 24))],
        faults: Faults::default(),
    });
    let out = tempfile::tempdir().unwrap();
    let o = run(
        &["get", "-q", "-o", "no/such/x.bin", &srv.url("f.bin")],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!out.path().join("no").exists());
    assert_eq!(srv.request_count(), 0, "refused before any request");
}

/// `ferry status` finds partial downloads in subfolders, and does not call a file ferry did
/// not download complete.
#[test]
fn status_looks_into_subfolders_and_knows_foreign_files() {
    let data = random_bytes(8 * MIB as usize, 25);
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data)],
        faults: Faults {
            rate_per_conn: Some(MIB),
            ..Default::default()
        },
    });
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("sub/deeper")).unwrap();
    let mut child = ferry()
        .args([
            "get",
            "-q",
            "-x",
            "1",
            "-o",
            "sub/deeper/f.bin",
            &srv.url("f.bin"),
        ])
        .current_dir(out.path())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || srv
        .body_bytes_sent()
        >= MIB));
    kill(&mut child, "-INT");
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let st = run(&["status", "."], out.path());
    assert!(st.status.success(), "{}", stderr(&st));
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("sub/deeper/f.bin") && text.contains("partial"),
        "{text}"
    );

    std::fs::write(out.path().join("mine.txt"), b"not from ferry").unwrap();
    let st = run(&["status", "mine.txt"], out.path());
    assert_eq!(st.status.code(), Some(1));
    assert!(
        stderr(&st).contains("not a ferry download"),
        "{}",
        stderr(&st)
    );
}

/// Ctrl-C against a server without byte ranges does not promise a resume it cannot give.
#[test]
fn ctrl_c_without_ranges_says_a_rerun_starts_over() {
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), random_bytes(8 * MIB as usize, 26))],
        faults: Faults {
            no_ranges: true,
            rate_per_conn: Some(MIB),
            ..Default::default()
        },
    });
    let out = tempfile::tempdir().unwrap();
    let mut child = ferry()
        .args(["get", "-o", "f.bin", &srv.url("f.bin")])
        .current_dir(out.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || srv
        .body_bytes_sent()
        >= MIB));
    kill(&mut child, "-INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("a rerun starts over"), "{err}");
    assert!(!err.contains("Progress is saved"), "{err}");
}

/// After a checksum mismatch the data is kept as complete: a rerun with the right checksum
/// verifies it without fetching it again.
#[test]
fn a_rerun_after_a_checksum_mismatch_fetches_nothing() {
    let data = random_bytes(6 * MIB as usize, 27);
    let srv = FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data.clone())],
        faults: Faults::default(),
    });
    let out = tempfile::tempdir().unwrap();
    let wrong = format!("sha-256={}", "0".repeat(64));
    let o = run(
        &[
            "get",
            "-q",
            "-x",
            "4",
            "-o",
            "f.bin",
            "--checksum",
            &wrong,
            &srv.url("f.bin"),
        ],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    std::fs::write(out.path().join("copy.bin"), &data).unwrap();
    let sum = Command::new("sha256sum")
        .arg(out.path().join("copy.bin"))
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let before = srv.body_bytes_sent();
    let right = format!("sha-256={hex}");
    let o = run(
        &[
            "get",
            "--json",
            "-x",
            "4",
            "-o",
            "f.bin",
            "--checksum",
            &right,
            &srv.url("f.bin"),
        ],
        out.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("f.bin")).unwrap() == data);
    let fetched = srv.body_bytes_sent() - before;
    assert!(fetched < 64 * 1024, "fetched {fetched} bytes again");
}
