//! `ferry send` / `ferry recv` end to end on loopback: a file and a folder (nested folders, an
//! empty file, an empty folder) arrive byte-identical; a receiver killed with SIGKILL resumes;
//! two senders of the same content are used together; a sender whose file changed on disk is
//! dropped while an honest one completes the transfer; a damaged ticket and an unreachable
//! sender give clear errors and no output.

use ferry_testkit::util::{files_equal, wait_until, write_random_file};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.stdin(Stdio::null());
    c
}

/// A running `ferry send` and its ticket.
struct Sender {
    child: Child,
    ticket: String,
}

impl Sender {
    fn start(paths: &[&Path], extra: &[&str]) -> Sender {
        let mut cmd = ferry();
        cmd.arg("send")
            .args(paths)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ticket = line.trim().to_string();
        if !ticket.starts_with("ferry1") {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("no ticket from ferry send: {line:?} {err}");
        }
        Sender { child, ticket }
    }

    /// Stops the sender (SIGTERM) and returns the bytes it served, from its last line.
    fn stop(mut self) -> u64 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = self.child.wait();
        err.lines()
            .find_map(|l| l.strip_prefix("ferry send: stopped after serving "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary from ferry send: {err}"))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn recv(args: &[&str]) -> Output {
    ferry().arg("recv").args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file and folder under `a` is under `b` with the same content, and nothing more.
fn assert_same_tree(a: &Path, b: &Path) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, bool)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let is_dir = e.file_type().unwrap().is_dir();
            out.push((rel, is_dir));
            if is_dir {
                walk(root, &e.path(), out);
            }
        }
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    walk(a, a, &mut x);
    walk(b, b, &mut y);
    x.sort();
    y.sort();
    assert_eq!(x, y, "the trees differ");
    for (rel, is_dir) in x {
        if !is_dir {
            assert!(
                files_equal(&a.join(&rel), &b.join(&rel)),
                "{} differs",
                rel.display()
            );
        }
    }
}

fn json_events(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_file_and_a_folder_arrive_identical() {
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("album");
    std::fs::create_dir_all(folder.join("2026/summer")).unwrap();
    std::fs::create_dir_all(folder.join("empty-folder")).unwrap();
    write_random_file(folder.join("2026/summer/a.jpg"), 5 * MIB + 7, 1).unwrap();
    write_random_file(folder.join("2026/b.jpg"), 1000, 2).unwrap();
    std::fs::write(folder.join("empty-file"), b"").unwrap();
    let single = src.path().join("single.iso");
    write_random_file(&single, 3 * MIB, 3).unwrap();
    let sender = Sender::start(&[&folder, &single], &[]);

    let out = tempfile::tempdir().unwrap();
    let o = recv(&["-q", "-d", s(out.path()), &sender.ticket]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&folder, &out.path().join("album"));
    assert!(files_equal(&single, &out.path().join("single.iso")));
    // Nothing else: no .part, no journal left behind.
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["album", "single.iso"]);

    // A rerun finds everything complete and verifies it.
    let o = recv(&["--json", "-d", s(out.path()), &sender.ticket]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        json_events(&o)
            .iter()
            .all(|e| e["event"] != "progress" || e["done"] == e["total"])
    );
}

#[test]
fn a_killed_receiver_resumes() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    write_random_file(&file, 48 * MIB, 4).unwrap();
    let sender = Sender::start(&[&file], &["--limit-rate", "12M"]);
    let out = tempfile::tempdir().unwrap();
    let mut child = ferry()
        .args(["recv", "-q", "-x", "4", "-d", s(out.path()), &sender.ticket])
        .spawn()
        .unwrap();
    let journal = out.path().join("big.bin.ferry");
    // Wait until the journal records some verified pieces, then kill a moment later.
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(
            &journal
        )
        .map(|j| j.contains("[["))
        .unwrap_or(false)),
        "no progress recorded"
    );
    std::thread::sleep(Duration::from_millis(100 + rand_ms()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.path().join("big.bin").exists(),
        "no file before it is complete"
    );
    let o = recv(&["--json", "-x", "4", "-d", s(out.path()), &sender.ticket]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(&file, &out.path().join("big.bin")));
    let events = json_events(&o);
    let start = events.iter().find(|e| e["event"] == "start").unwrap();
    assert!(start["resumed"].as_u64().unwrap() > 0, "{start}");
}

fn rand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis() as u64
        % 500
}

#[test]
fn two_senders_are_used_together() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The same content on two "machines" (two directories), each sender throttled.
    write_random_file(a.path().join("data.bin"), 24 * MIB, 5).unwrap();
    std::fs::copy(a.path().join("data.bin"), b.path().join("data.bin")).unwrap();
    let sa = Sender::start(&[&a.path().join("data.bin")], &["--limit-rate", "16M"]);
    let sb = Sender::start(&[&b.path().join("data.bin")], &["--limit-rate", "16M"]);
    let out = tempfile::tempdir().unwrap();
    let o = recv(&["-q", "-x", "8", "-d", s(out.path()), &sa.ticket, &sb.ticket]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(
        &a.path().join("data.bin"),
        &out.path().join("data.bin")
    ));
    let (served_a, served_b) = (sa.stop(), sb.stop());
    assert!(
        served_a > 0 && served_b > 0,
        "both senders served: {served_a} {served_b}"
    );
}

#[test]
fn a_sender_with_a_changed_file_is_dropped() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_random_file(a.path().join("data.bin"), 16 * MIB, 6).unwrap();
    std::fs::copy(a.path().join("data.bin"), b.path().join("data.bin")).unwrap();
    let honest = Sender::start(&[&a.path().join("data.bin")], &["--limit-rate", "32M"]);
    let liar = Sender::start(&[&b.path().join("data.bin")], &[]);
    // After the ticket was printed, the liar's file changes on disk (same size).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(b.path().join("data.bin"))
        .unwrap();
    for at in (0..16 * MIB).step_by(MIB as usize) {
        f.write_all_at(b"garbage!", at + 1000).unwrap();
    }
    drop(f);
    let out = tempfile::tempdir().unwrap();
    let o = recv(&["--json", "-d", s(out.path()), &liar.ticket, &honest.ticket]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_equal(
        &a.path().join("data.bin"),
        &out.path().join("data.bin")
    ));
    let port = |t: &str| -> u16 { ferry_p2p::ticket::Ticket::decode(t).unwrap().port };
    let dropped = json_events(&o).iter().any(|e| {
        e["event"] == "warning"
            && e["message"].as_str().is_some_and(|m| {
                m.contains("dropped") && m.contains(&format!(":{}/", port(&liar.ticket)))
            })
    });
    assert!(
        dropped,
        "the bad sender is reported: {}",
        String::from_utf8_lossy(&o.stdout)
    );

    // The liar alone: a clear error, no file, verified pieces kept for a later resume.
    let out2 = tempfile::tempdir().unwrap();
    let o = recv(&["-q", "-d", s(out2.path()), &liar.ticket]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("failed verification"), "{}", stderr(&o));
    assert!(!out2.path().join("data.bin").exists());
}

#[test]
fn damaged_tickets_and_unreachable_senders_are_clear_errors() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f.bin");
    write_random_file(&file, MIB, 7).unwrap();
    let sender = Sender::start(&[&file], &[]);
    let out = tempfile::tempdir().unwrap();

    // One character changed in the middle.
    let mut damaged: Vec<char> = sender.ticket.chars().collect();
    let mid = damaged.len() / 2;
    damaged[mid] = if damaged[mid] == 'a' { 'b' } else { 'a' };
    let damaged: String = damaged.into_iter().collect();
    let o = recv(&["-d", s(out.path()), &damaged]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    let o = recv(&["-d", s(out.path()), "hello"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a ferry ticket"), "{}", stderr(&o));

    // The sender is gone.
    let ticket = sender.ticket.clone();
    sender.stop();
    let o = recv(&["-d", s(out.path()), &ticket]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("cannot reach").count(),
        1,
        "said once: {}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "no output"
    );

    // Tickets for different content.
    let other = src.path().join("g.bin");
    write_random_file(&other, MIB, 8).unwrap();
    let s1 = Sender::start(&[&file], &[]);
    let s2 = Sender::start(&[&other], &[]);
    let o = recv(&["-d", s(out.path()), &s1.ticket, &s2.ticket]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("different content"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "no output"
    );
}
