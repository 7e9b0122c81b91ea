//! The clients against hostile servers, peers and directories (issue 13), with the release
//! binary: `ferry get` and `ferry recv` never write, truncate or delete a `.part`, `.ferry` or
//! `.ferry.tmp` they did not make (symbolic links included, `--restart` included); a space
//! reservation that fails gives its blocks back (a real ext4, which keeps what a failed
//! `fallocate` got); redirects carry no Referer, no `-H` headers and no credentials to another
//! origin unless `--location-trusted`, and other schemes, loops, too many hops and https → http
//! are refused; a sender's manifest is capped (bytes, entries), its names normalised (NFC) and
//! checked (collisions, bidi controls), and `recv` follows no redirect away from the sender.

use ferry_p2p::manifest::{Entry, EntryKind, MANIFEST_VERSION, Manifest};
use ferry_p2p::send::{Sender, Share};
use ferry_p2p::ticket::Ticket;
use ferry_testkit::certs::private_ca;
use ferry_testkit::ext4::Ext4;
use ferry_testkit::fault::{FaultConfig, FaultServer, Faults};
use ferry_testkit::nginx::{Nginx, NginxOptions};
use ferry_testkit::util::{random_bytes, wait_until, write_random_file};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

fn ferry(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 1 and every fragment in the message.
fn assert_refused(o: &Output, fragments: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for f in fragments {
        assert!(err.contains(f), "{f:?} not in: {err}");
    }
}

/// The command succeeded and `path` holds `data`.
fn assert_fetched(o: &Output, path: impl AsRef<Path>, data: &[u8]) {
    assert!(o.status.success(), "{}", stderr(o));
    assert!(std::fs::read(path).unwrap() == data, "the file differs");
}

fn server(data: &[u8], faults: Faults) -> FaultServer {
    FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data.to_vec())],
        faults,
    })
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---- clients never clobber ------------------------------------------------------------------

#[test]
fn a_users_part_file_is_never_touched_even_with_restart() {
    let data = random_bytes(300_000, 1);
    let srv = server(&data, Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let mine = b"my own notes, not a download".to_vec();
    std::fs::write(dir.path().join("f.bin.part"), &mine).unwrap();
    for extra in [&[][..], &["--restart"][..]] {
        let url = srv.url("f.bin");
        let args: Vec<&str> = ["get", "-q"]
            .into_iter()
            .chain(extra.iter().copied())
            .chain([url.as_str()])
            .collect();
        let o = ferry(&args, dir.path());
        assert_refused(&o, &["f.bin.part is in the way", "another name with -o"]);
        assert_eq!(std::fs::read(dir.path().join("f.bin.part")).unwrap(), mine);
        assert_eq!(names_in(dir.path()), ["f.bin.part"], "nothing else made");
    }
    // Another name works beside it.
    let o = ferry(&["get", "-q", "-o", "g.bin", &srv.url("f.bin")], dir.path());
    assert_fetched(&o, dir.path().join("g.bin"), &data);
}

#[test]
fn a_users_journal_or_temp_journal_is_never_taken_for_ferrys() {
    let data = random_bytes(300_000, 2);
    let srv = server(&data, Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let mine = b"ferry timetable: 7:15, 8:40".to_vec();
    let journal = dir.path().join("f.bin.ferry");
    std::fs::write(&journal, &mine).unwrap();
    for extra in [&[][..], &["--restart"][..]] {
        let url = srv.url("f.bin");
        let args: Vec<&str> = ["get", "-q", "-o", "f.bin"]
            .into_iter()
            .chain(extra.iter().copied())
            .chain([url.as_str()])
            .collect();
        let o = ferry(&args, dir.path());
        assert_refused(&o, &["f.bin.ferry is in the way", "not a ferry journal"]);
        assert_eq!(std::fs::read(&journal).unwrap(), mine);
        assert_eq!(names_in(dir.path()), ["f.bin.ferry"]);
    }
    // The temporary journal's name, too.
    std::fs::rename(&journal, dir.path().join("f.bin.ferry.tmp")).unwrap();
    let o = ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], dir.path());
    assert_refused(&o, &["f.bin.ferry.tmp is in the way"]);
    assert_eq!(
        std::fs::read(dir.path().join("f.bin.ferry.tmp")).unwrap(),
        mine
    );
    assert_eq!(names_in(dir.path()), ["f.bin.ferry.tmp"]);
}

/// Starts a throttled download and pauses it with SIGINT once some bytes arrived: a genuine
/// ferry pair (`f.bin.part`, `f.bin.ferry`) is left in `dir`.
fn paused_download(srv: &FaultServer, dir: &Path, after: u64) {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["get", "-q", "-x", "2", "-o", "f.bin", &srv.url("f.bin")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || srv.body_bytes_sent() >= after),
        "the transfer never got going"
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert!(dir.join("f.bin.part").exists() && dir.join("f.bin.ferry").exists());
}

/// A symbolic link where ferry's part file or journal was (even one to a file of the right
/// size) is never followed, and a part file its journal does not describe is not resumed into.
#[test]
fn links_and_strangers_in_place_of_ferrys_pair_are_never_followed_or_written() {
    let data = random_bytes(4 * MIB, 3);
    let srv = server(
        &data,
        Faults {
            rate_per_conn: Some(512 << 10),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    paused_download(&srv, dir.path(), 256 << 10);
    srv.set_faults(Faults::default());
    let part = dir.path().join("f.bin.part");
    let journal = std::fs::read(dir.path().join("f.bin.ferry")).unwrap();
    let victim = dir.path().join("victim");
    let precious = vec![b'v'; data.len()];
    std::fs::write(&victim, &precious).unwrap();
    std::fs::rename(&part, dir.path().join("saved.part")).unwrap();

    // The part file is a link to a file of the right size.
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    let o = ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], dir.path());
    assert_refused(&o, &["f.bin.part is in the way", "symbolic link"]);
    let o = ferry(
        &["get", "-q", "--restart", "-o", "f.bin", &srv.url("f.bin")],
        dir.path(),
    );
    assert_refused(&o, &["f.bin.part is in the way", "symbolic link"]);
    assert_eq!(std::fs::read(&victim).unwrap(), precious);
    assert!(
        std::fs::symlink_metadata(&part)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A regular file its journal does not describe (another size).
    std::fs::remove_file(&part).unwrap();
    std::fs::write(dir.path().join("f.bin.ferry"), &journal).unwrap();
    std::fs::write(&part, b"short").unwrap();
    let o = ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], dir.path());
    assert_refused(&o, &["f.bin.part is in the way", "journal describes"]);
    assert_eq!(std::fs::read(&part).unwrap(), b"short");

    // The journal is a link: not followed either.
    std::fs::remove_file(dir.path().join("f.bin.ferry")).unwrap();
    std::fs::rename(dir.path().join("saved.part"), &part).unwrap();
    std::fs::write(dir.path().join("journal-copy"), &journal).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("journal-copy"),
        dir.path().join("f.bin.ferry"),
    )
    .unwrap();
    let o = ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], dir.path());
    assert_refused(&o, &["f.bin.ferry is in the way", "symbolic link"]);
    assert_eq!(
        std::fs::read(dir.path().join("journal-copy")).unwrap(),
        journal
    );

    // ferry's own pair back in place: it resumes and completes.
    std::fs::remove_file(dir.path().join("f.bin.ferry")).unwrap();
    std::fs::write(dir.path().join("f.bin.ferry"), &journal).unwrap();
    let o = ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], dir.path());
    assert_fetched(&o, dir.path().join("f.bin"), &data);
    assert_eq!(std::fs::read(&victim).unwrap(), precious);
}

// ---- reservations give back what they got (ext4) ------------------------------------------

/// Runs `run` (which must fail for want of space) on `fs` and checks that the space the
/// failed reservation got was given back (less than 1 MiB is still in use afterwards).
fn refused_for_space_and_given_back(fs: &Ext4, run: impl FnOnce() -> Output) {
    let before = fs.free_bytes();
    let o = run();
    assert_refused(&o, &["no space left", "given back"]);
    let lost = before.saturating_sub(fs.free_bytes());
    assert!(lost < MIB as u64, "{lost} bytes stayed allocated");
}

#[test]
fn a_failed_reservation_gives_the_blocks_back() {
    let fs = Ext4::mount(32);
    let data = random_bytes(48 * MIB, 4);
    let srv = server(&data, Faults::default());
    refused_for_space_and_given_back(&fs, || {
        ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], fs.path())
    });
    assert!(
        !fs.path().join("f.bin.part").exists() && !fs.path().join("f.bin.ferry").exists(),
        "{:?}",
        names_in(fs.path())
    );
}

/// A partial download whose part file lost its reservation (copied with `cp --sparse=always`)
/// resumes on a disk without room for the rest: the rerun gives back what its
/// reservation got, keeps the journal and the bytes, and completes once there is room.
#[test]
fn a_resume_without_room_keeps_its_bytes_and_gives_back_the_rest() {
    let fs = Ext4::mount(48);
    let data = random_bytes(24 * MIB, 5);
    let srv = server(
        &data,
        Faults {
            rate_per_conn: Some(2 * MIB as u64),
            ..Default::default()
        },
    );
    paused_download(&srv, fs.path(), 3 * MIB as u64);
    srv.set_faults(Faults::default());
    let part = fs.path().join("f.bin.part");
    let copy = fs.path().join("copy");
    let o = Command::new("cp")
        .arg("--sparse=always")
        .arg(&part)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(&copy, &part).unwrap();
    let journal = std::fs::read(fs.path().join("f.bin.ferry")).unwrap();
    // Leave 4 MiB: less than the rest of the file.
    let filler = fs.path().join("filler");
    let room = fs.free_bytes() - 4 * MIB as u64;
    let o = Command::new("fallocate")
        .args(["-l", &room.to_string()])
        .arg(&filler)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    refused_for_space_and_given_back(&fs, || {
        ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], fs.path())
    });
    assert_eq!(
        std::fs::read(fs.path().join("f.bin.ferry")).unwrap(),
        journal
    );
    std::fs::remove_file(&filler).unwrap();
    let o = ferry(
        &["get", "-q", "--json", "-o", "f.bin", &srv.url("f.bin")],
        fs.path(),
    );
    assert_fetched(&o, fs.path().join("f.bin"), &data);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("\"resumed\":0,"),
        "the kept bytes were used"
    );
}

// ---- redirects ------------------------------------------------------------------------------

/// nginx answering `locations` (raw `location` blocks), also serving `root`.
fn redirector(root: &Path, locations: String) -> Nginx {
    Nginx::start_with(
        root,
        NginxOptions {
            extra_server: locations,
            ..Default::default()
        },
    )
}

#[test]
fn a_redirect_to_another_origin_carries_no_referer_headers_or_credentials() {
    let data = random_bytes(200_000, 6);
    let other = server(&data, Faults::default());
    let root = tempfile::tempdir().unwrap();
    let a = redirector(
        root.path(),
        format!(
            "location /away/ {{ return 302 http://127.0.0.1:{}/f.bin; }}",
            other.addr().port()
        ),
    );
    let url = format!(
        "http://user:secret-pw@127.0.0.1:{}/away/f.bin?token=query-secret",
        a.port()
    );
    let secrets = [
        "-H",
        "X-Secret: s1",
        "-H",
        "Cookie: session=c1",
        "-H",
        "Authorization: Bearer t1",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["get", "-q", "-o", "f.bin"];
    args.extend(secrets);
    args.push(&url);
    let o = ferry(&args, dir.path());
    assert_fetched(&o, dir.path().join("f.bin"), &data);
    let seen = other.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        for h in ["x-secret", "cookie", "authorization", "referer"] {
            assert!(r.header(h).is_none(), "{h} reached the other origin: {r:?}");
        }
        assert!(!format!("{:?}", r.headers).contains("secret"), "{r:?}");
    }

    // Opted in: the headers follow (curl's --location-trusted); still no Referer.
    let mut args = vec!["get", "-q", "--location-trusted", "-o", "g.bin"];
    args.extend(secrets);
    args.push(&url);
    let o = ferry(&args, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let trusted = &other.requests()[seen.len()..];
    assert!(!trusted.is_empty());
    for r in trusted {
        assert_eq!(r.header("x-secret"), Some("s1"), "{r:?}");
        assert_eq!(r.header("cookie"), Some("session=c1"), "{r:?}");
        assert_eq!(r.header("authorization"), Some("Bearer t1"), "{r:?}");
        assert!(r.header("referer").is_none(), "{r:?}");
    }

    // Within one origin the headers and the URL's credentials go along.
    other.set_faults(Faults {
        redirect_prefix: true,
        ..Default::default()
    });
    let before = other.requests().len();
    let same = format!("http://user:pw@127.0.0.1:{}/r/f.bin", other.addr().port());
    let o = ferry(
        &["get", "-q", "-o", "h.bin", "-H", "X-Secret: s1", &same],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let after: Vec<_> = other.requests()[before..].to_vec();
    assert!(after.iter().any(|r| r.path == "/r/f.bin"));
    for r in &after {
        assert_eq!(r.header("x-secret"), Some("s1"), "{r:?}");
        assert!(
            r.header("authorization")
                .is_some_and(|v| v.starts_with("Basic "))
        );
        assert!(r.header("referer").is_none(), "{r:?}");
    }
}

#[test]
fn other_schemes_loops_and_too_many_redirects_are_permanent_errors() {
    let data = random_bytes(100_000, 7);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f.bin"), &data).unwrap();
    let a = redirector(
        root.path(),
        "location = /ftp { return 302 ftp://127.0.0.1/f.bin; } \
         location = /file { return 302 file:///etc/passwd; } \
         location = /self { return 302 /self; } \
         location = /ping { return 302 /pong; } location = /pong { return 302 /ping; } \
         location = /one { return 302 /two; } location = /two { return 302 /f.bin; }"
            .into(),
    );
    let dir = tempfile::tempdir().unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{}/{p}", a.port());
    for (path, fragments) in [
        ("ftp", &["ftp://127.0.0.1/f.bin", "only http and https"][..]),
        ("file", &["file:///etc/passwd", "only http and https"][..]),
        ("self", &["loop"][..]),
        ("ping", &["loop"][..]),
    ] {
        let o = ferry(
            &["get", "-q", "--retries", "9", "-o", "x.bin", &url(path)],
            dir.path(),
        );
        assert_refused(&o, fragments);
    }
    let o = ferry(
        &["get", "-q", "--max-redirs", "1", "-o", "x.bin", &url("one")],
        dir.path(),
    );
    assert_refused(&o, &["more than 1 redirects", "--max-redirs"]);
    assert!(
        names_in(dir.path()).is_empty(),
        "{:?}",
        names_in(dir.path())
    );
    let retried = a.access_log().iter().filter(|e| e.uri == "/self").count();
    assert_eq!(retried, 1, "a refused redirect is not retried");
    let o = ferry(&["get", "-q", "-o", "x.bin", &url("one")], dir.path());
    assert_fetched(&o, dir.path().join("x.bin"), &data);
}

#[test]
fn https_to_http_is_refused_unless_allowed() {
    let data = random_bytes(100_000, 8);
    let plain = server(&data, Faults::default());
    let root = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = private_ca(certs.path()).expect("openssl makes the test CA");
    let port = ferry_testkit::util::free_port();
    let tls_server = format!(
        "server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {}; \
         location /down/ {{ return 302 http://127.0.0.1:{}/f.bin; }} }}",
        ca.cert.display(),
        ca.key.display(),
        plain.addr().port()
    );
    let _nginx = Nginx::start_with(
        root.path(),
        NginxOptions {
            extra_http: tls_server,
            ..Default::default()
        },
    );
    ferry_testkit::util::wait_for_port(("127.0.0.1", port), Duration::from_secs(10)).unwrap();
    let url = format!("https://localhost:{port}/down/f.bin");
    let cacert = ca.ca.to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(
        &[
            "get",
            "-q",
            "--cacert",
            &cacert,
            "-H",
            "X-Secret: s1",
            "-o",
            "f.bin",
            &url,
        ],
        dir.path(),
    );
    assert_refused(&o, &["from https to plain http", "--allow-http-redirect"]);
    assert_eq!(plain.request_count(), 0, "nothing went over plain http");
    let o = ferry(
        &[
            "get",
            "-q",
            "--cacert",
            &cacert,
            "--allow-http-redirect",
            "-H",
            "X-Secret: s1",
            "-o",
            "f.bin",
            &url,
        ],
        dir.path(),
    );
    assert_fetched(&o, dir.path().join("f.bin"), &data);
    assert!(
        plain
            .requests()
            .iter()
            .all(|r| r.header("x-secret").is_none()),
        "another origin (scheme and port) gets no -H header"
    );
}

// ---- peers ----------------------------------------------------------------------------------

/// A running `ferry send` and its ticket.
struct SendProcess {
    child: Child,
    ticket: String,
}

impl SendProcess {
    fn start(paths: &[&Path]) -> SendProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("send")
            .args(paths)
            .args(["--listen", "127.0.0.1:0", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if !line.starts_with("ferry1") {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("no ticket from ferry send: {line:?} {err}");
        }
        SendProcess {
            child,
            ticket: line.trim().to_string(),
        }
    }
}

impl Drop for SendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn recv(args: &[&str], out: &Path) -> Output {
    let mut all = vec!["recv", "-q", "-d"];
    let out = out.to_string_lossy().into_owned();
    all.push(&out);
    all.extend(args);
    ferry(&all, Path::new("/"))
}

#[test]
fn names_arrive_normalised_and_names_equal_once_normalised_are_refused() {
    let src = tempfile::tempdir().unwrap();
    let nfd = "cafe\u{301}.txt";
    let nfc = "caf\u{e9}.txt";
    let one = src.path().join("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::write(one.join(nfd), b"decomposed").unwrap();
    let sender = SendProcess::start(&[&one]);
    let out = tempfile::tempdir().unwrap();
    let o = recv(&[&sender.ticket], out.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(names_in(&out.path().join("one")), [nfc]);
    assert_eq!(
        std::fs::read(out.path().join("one").join(nfc)).unwrap(),
        b"decomposed"
    );

    let both = src.path().join("both");
    std::fs::create_dir(&both).unwrap();
    std::fs::write(both.join(nfd), b"decomposed").unwrap();
    std::fs::write(both.join(nfc), b"composed").unwrap();
    let sender = SendProcess::start(&[&both]);
    let out = tempfile::tempdir().unwrap();
    let o = recv(&[&sender.ticket], out.path());
    assert_refused(&o, &["same name as entry", "NFC"]);
    assert!(
        names_in(out.path()).is_empty(),
        "{:?}",
        names_in(out.path())
    );
}

/// The real sender, serving a crafted manifest: its ticket, and the runtime serving it.
fn crafted_sender(entries: Vec<Entry>) -> (tokio::runtime::Runtime, String) {
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        piece_size: 1 << 20,
        entries,
    };
    let bytes = manifest.to_bytes();
    let share = Share {
        hash: Manifest::hash_of(&bytes),
        files: vec![None; manifest.entries.len()],
        manifest,
        bytes,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sender = rt
        .block_on(Sender::bind(share, "127.0.0.1:0", None))
        .unwrap();
    let ticket = sender.ticket().encode();
    rt.spawn(sender.serve(std::future::pending()));
    (rt, ticket)
}

fn dir_entry(path: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryKind::Dir,
    }
}

#[test]
fn a_hostile_manifest_is_capped_and_its_disguised_names_refused() {
    let out = tempfile::tempdir().unwrap();
    let (_rt, ticket) = crafted_sender(vec![Entry {
        path: "invoice\u{202E}fdp.exe".into(),
        kind: EntryKind::File {
            size: 0,
            pieces: vec![],
        },
    }]);
    let o = recv(&[&ticket], out.path());
    assert_refused(&o, &["U+202E", "invalid"]);

    let (_rt, ticket) = crafted_sender(vec![dir_entry("a"), dir_entry("b"), dir_entry("c")]);
    let o = recv(&["--max-entries", "2", &ticket], out.path());
    assert_refused(&o, &["3 files and folders", "limit of 2"]);

    let long: Vec<Entry> = (0..20).map(|i| dir_entry(&format!("{i:0>100}"))).collect();
    let (_rt, ticket) = crafted_sender(long);
    let o = recv(&["--max-manifest-size", "1K", &ticket], out.path());
    assert_refused(&o, &["larger than the limit of 1024 bytes", "not used"]);
    let o = recv(&[&ticket], out.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        names_in(out.path()).len(),
        20,
        "under the default caps it is fine"
    );
}

/// A hostile peer with ferry's TLS (a fresh pinned identity, as `ferry send`): it serves
/// `manifest` at `/manifest` (or redirects that too, with `redirect_manifest`) and answers every
/// other request with a redirect to `to`. Returns its runtime and ticket.
fn redirecting_peer(
    manifest: Vec<u8>,
    redirect_manifest: bool,
    to: String,
) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = ferry_p2p::tls::self_signed().unwrap();
    let mut config = (*ferry_p2p::tls::server_config(&id).unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let ticket = Ticket {
        addrs: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        port,
        token: [7; 16],
        fingerprint: id.fingerprint,
        manifest: Manifest::hash_of(&manifest),
    }
    .encode();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let (manifest, to) = (manifest.clone(), to.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let answer = if path.starts_with("/manifest") && !redirect_manifest {
                        let mut a = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            manifest.len()
                        )
                        .into_bytes();
                        a.extend_from_slice(&manifest);
                        a
                    } else {
                        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                            .into_bytes()
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (rt, ticket)
}

#[test]
fn recv_never_follows_a_redirect_away_from_the_sender() {
    let content = b"ten bytes!".to_vec();
    let elsewhere = server(&content, Faults::default());
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        piece_size: 1 << 20,
        entries: vec![Entry {
            path: "f.bin".into(),
            kind: EntryKind::File {
                size: content.len() as u64,
                pieces: vec![blake3::hash(&content).to_hex().to_string()],
            },
        }],
    }
    .to_bytes();
    let out = tempfile::tempdir().unwrap();

    let (_rt, ticket) = redirecting_peer(manifest.clone(), true, elsewhere.url("f.bin"));
    let o = recv(&[&ticket], out.path());
    assert_refused(
        &o,
        &["redirected to", "only to the sender its ticket names"],
    );

    let (_rt, ticket) = redirecting_peer(manifest, false, elsewhere.url("f.bin"));
    let o = recv(&[&ticket], out.path());
    assert_refused(&o, &["f.bin", "redirects are not followed here"]);

    assert_eq!(
        elsewhere.request_count(),
        0,
        "nothing reached the other host"
    );
    assert!(
        names_in(out.path()).is_empty(),
        "{:?}",
        names_in(out.path())
    );
}

#[test]
fn recv_leaves_a_users_staging_files_alone_and_gives_back_a_failed_reservation() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    write_random_file(&file, 24 * MIB as u64, 9).unwrap();
    let sender = SendProcess::start(&[&file]);

    let out = tempfile::tempdir().unwrap();
    let mine = b"mine".to_vec();
    std::fs::write(out.path().join("big.bin.part"), &mine).unwrap();
    let o = recv(&[&sender.ticket], out.path());
    assert_refused(&o, &["big.bin.part is in the way", "-d"]);
    assert_eq!(
        std::fs::read(out.path().join("big.bin.part")).unwrap(),
        mine
    );
    assert_eq!(names_in(out.path()), ["big.bin.part"]);

    let fs = Ext4::mount(16);
    refused_for_space_and_given_back(&fs, || recv(&[&sender.ticket], fs.path()));
    let left: Vec<String> = names_in(fs.path())
        .into_iter()
        .filter(|n| n != "lost+found")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
