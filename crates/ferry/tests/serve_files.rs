//! The file side of `ferry serve` against real download clients: curl (single ranges, several
//! ranges in one multipart answer, the whole file), `aria2c -x16 -s16 -k1M` and `ferry get -x 8`
//! must all give byte-identical files; with `--token`, a request without the token gets 401 and
//! `?token=` or `Authorization: Bearer` work. Also: `ferry serve` lifts its soft open-file limit.
//!
//! curl and aria2c are required in CI (`CI=true`); elsewhere a missing tool is reported and its
//! part skipped. `scripts/test.sh` installs both.

use ferry_testkit::serve::FerryServe;
use ferry_testkit::util::{files_equal, random_bytes_at, write_random_file};
use std::process::{Command, Output, Stdio};

const MIB: u64 = 1 << 20;
const TOKEN: &str = "files-interop-token";

/// Whether `tool` runs; when it does not: a panic in CI, else a note (the caller skips).
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = format!("{tool} is not on PATH (scripts/test.sh installs it)");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// `aria2c -x16 -s16 -k1M` writing `dir/name`, quiet and with no user config; add options and
/// the URL.
fn aria2c(dir: &std::path::Path, name: &str) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "-x16",
        "-s16",
        "-k1M",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--no-conf",
        "--console-log-level=warn",
        "--summary-interval=0",
        "-d",
    ])
    .arg(dir)
    .args(["-o", name]);
    c
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("run a client");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn curl(args: &[&str]) -> Output {
    run(Command::new("curl")
        .args(["-sS", "--noproxy", "*"])
        .args(args))
}

/// The HTTP status of a GET (body discarded).
fn status(url: &str, extra: &[&str]) -> String {
    let out = curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], extra, &[url]].concat());
    String::from_utf8(out.stdout).unwrap()
}

/// The data of each part of a `multipart/byteranges` body, in order.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let boundary = content_type
        .split_once("boundary=")
        .map(|(_, b)| b.trim_matches('"'))
        .unwrap_or_else(|| panic!("not multipart: {content_type}"));
    let delim = format!("\r\n--{boundary}");
    let find = |from: usize| {
        body[from..]
            .windows(delim.len())
            .position(|w| w == delim.as_bytes())
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut at = find(0).expect("a first delimiter");
    while !body[at + delim.len()..].starts_with(b"--") {
        let head = at + delim.len();
        let data = body[head..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part headers")
            + head
            + 4;
        let next = find(data).expect("a next delimiter");
        parts.push(body[data..next].to_vec());
        at = next;
    }
    parts
}

/// A served temp directory holding one random file, an empty output directory, and the server.
struct Served {
    tmp: tempfile::TempDir,
    out: std::path::PathBuf,
    src: std::path::PathBuf,
    srv: FerryServe,
}

fn served(name: &str, len: u64, seed: u64, args: &[&str]) -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("served");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let src = dir.join(name);
    write_random_file(&src, len, seed).unwrap();
    let srv = FerryServe::start(env!("CARGO_BIN_EXE_ferry"), &dir, args);
    Served { tmp, out, src, srv }
}

#[test]
fn curl_aria2c_and_ferry_get_download_byte_identical_files() {
    let (len, seed) = (64 * MIB + 7, 41);
    let Served { tmp, out, src, srv } = served("big.bin", len, seed, &["--public"]);
    let url = srv.url("/files/big.bin");

    if have("curl") {
        // Single ranges, one request each: their concatenation equals the source slices.
        let ranges: [(u64, u64); 5] = [
            (0, 0),
            (2, 1_000_000),
            (33 * MIB - 5, 33 * MIB + 5),
            (len - 4096, len - 1),
            (40 * MIB, 43 * MIB),
        ];
        let mut got = Vec::new();
        let mut want = Vec::new();
        for (a, b) in ranges {
            got.extend(curl(&["-r", &format!("{a}-{b}"), &url]).stdout);
            want.extend(random_bytes_at(seed, a, (b - a + 1) as usize));
        }
        assert!(got == want, "single ranges differ\n{}", srv.log());
        // The same ranges in one request (disjoint, so neither merged nor reordered): a
        // multipart answer with the same data.
        let spec: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        let body = tmp.path().join("multi");
        let o = curl(&[
            "-r",
            &spec.join(","),
            "-w",
            "%{http_code} %{content_type}",
            "-o",
            body.to_str().unwrap(),
            &url,
        ]);
        let w = String::from_utf8(o.stdout).unwrap();
        let (code, content_type) = w.split_once(' ').unwrap();
        assert_eq!(code, "206");
        let parts = multipart_parts(content_type, &std::fs::read(&body).unwrap());
        assert!(parts.concat() == want, "multipart ranges differ");
        // A suffix range and the whole file.
        let tail = curl(&["-r", "-500", &url]).stdout;
        assert!(tail == random_bytes_at(seed, len - 500, 500));
        curl(&["-o", out.join("curl.bin").to_str().unwrap(), &url]);
        assert!(files_equal(&src, &out.join("curl.bin")));
        assert_eq!(status(&url, &["-r", &format!("{len}-")]), "416");
    }

    if have("aria2c") {
        run(aria2c(&out, "aria2.bin").args(["--max-tries=3", &url]));
        assert!(
            files_equal(&src, &out.join("aria2.bin")),
            "aria2c's file differs\n{}",
            srv.log()
        );
    }

    run(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["get", "-q", "-x", "8", "-o", "ferry.bin", &url])
        .current_dir(&out));
    assert!(
        files_equal(&src, &out.join("ferry.bin")),
        "ferry get's file differs\n{}",
        srv.log()
    );
}

#[test]
fn a_token_is_required_and_accepted_as_query_or_bearer() {
    let (len, seed) = (8 * MIB + 3, 42);
    let Served { tmp, out, src, srv } = served("f.bin", len, seed, &["--token", TOKEN]);
    let url = srv.url("/files/f.bin");
    let bearer = format!("Authorization: Bearer {TOKEN}");

    if have("curl") {
        assert_eq!(status(&url, &[]), "401", "{}", srv.log());
        assert_eq!(status(&format!("{url}?token=wrong-token"), &[]), "401");
        assert_eq!(
            status(&url, &["-H", "Authorization: Bearer wrong-token"]),
            "401"
        );
        let o = curl(&[
            "-o",
            out.join("q.bin").to_str().unwrap(),
            "-w",
            "%{http_code}",
            &format!("{url}?token={TOKEN}"),
        ]);
        assert_eq!(o.stdout, b"200");
        assert!(files_equal(&src, &out.join("q.bin")));
        let part = curl(&["-H", &bearer, "-r", "100-199", &url]).stdout;
        assert!(part == random_bytes_at(seed, 100, 100));
        let part = curl(&["-r", "-10", &format!("{url}?token={TOKEN}")]).stdout;
        assert!(part == random_bytes_at(seed, len - 10, 10));
        // A browser that opened a ?token= link keeps browsing with the cookie it was given.
        let jar = tmp.path().join("cookies");
        let jar = jar.to_str().unwrap();
        let o = curl(&[
            "-c",
            jar,
            "-o",
            "/dev/null",
            &format!("{url}?token={TOKEN}"),
        ]);
        assert!(o.status.success());
        let listing = srv.url("/files/");
        assert_eq!(
            status(&listing, &["-b", jar]),
            "200",
            "the cookie is accepted"
        );
        assert_eq!(status(&listing, &[]), "401", "not without it");
    }

    if have("aria2c") {
        run(aria2c(&out, "aria2.bin").args([&format!("--header={bearer}"), &url]));
        assert!(files_equal(&src, &out.join("aria2.bin")));
    }

    run(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["get", "-q", "-x", "8", "-o", "ferry.bin"])
        .arg(format!("{url}?token={TOKEN}"))
        .current_dir(&out));
    assert!(files_equal(&src, &out.join("ferry.bin")));
    run(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "get",
            "-q",
            "-x",
            "4",
            "-H",
            &bearer,
            "-o",
            "ferry-h.bin",
            &url,
        ])
        .current_dir(&out));
    assert!(files_equal(&src, &out.join("ferry-h.bin")));
}

/// The hard open-file limit of this process, from /proc.
fn hard_nofile(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let f: Vec<&str> = row.split_whitespace().collect();
    let n = |s: &str| s.parse().unwrap_or(u64::MAX); // "unlimited"
    (n(f[3]), n(f[4]))
}

/// Every connection holds two descriptors (the socket and the duplicate uploads use to tune it),
/// so `ferry serve` lifts its soft open-file limit to the hard one at start-up.
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    use std::io::BufRead;
    if !have("prlimit") {
        return;
    }
    let hard = hard_nofile("self").1.min(4096);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile=256:{hard}"))
        .args([env!("CARGO_BIN_EXE_ferry"), "serve"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--public"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run prlimit ferry serve");
    // Its first line says where it serves: the limit was raised before that.
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let limits = hard_nofile(&child.id().to_string());
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("serving"), "{line}");
    assert_eq!(limits, (hard, hard));
}
