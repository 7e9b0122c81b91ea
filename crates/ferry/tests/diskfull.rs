//! A full disk and a file size limit: ferry stops with a clear error, the journal stays valid,
//! and a rerun resumes once there is room. The small disk is a tmpfs mounted for the test
//! (root is needed to mount; scripts/test.sh and CI run as root).

use ferry_testkit::fault::{FaultConfig, FaultServer, Faults};
use ferry_testkit::tmpfs::Tmpfs;
use ferry_testkit::util::{random_bytes, wait_until};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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

fn server(data: &[u8], faults: Faults) -> FaultServer {
    FaultServer::start_blocking(FaultConfig {
        files: vec![("f.bin".into(), data.to_vec())],
        faults,
    })
}

#[test]
fn too_small_a_disk_is_reported_before_the_transfer_and_resumes_with_room() {
    let data = random_bytes(16 * MIB, 30);
    let srv = server(&data, Faults::default());
    let disk = Tmpfs::mount(8);
    let o = ferry(
        &["get", "-q", "-o", "f.bin", &srv.url("f.bin")],
        disk.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no space left"), "{}", stderr(&o));
    assert!(!disk.path().join("f.bin").exists());
    assert!(
        srv.body_bytes_sent() <= MIB as u64,
        "space is reserved before the transfer, not discovered in it"
    );

    disk.resize(40);
    let o = ferry(
        &["get", "-q", "-o", "f.bin", &srv.url("f.bin")],
        disk.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(disk.path().join("f.bin")).unwrap() == data);
}

/// The disk fills up while a download is paused: the rerun cannot even write its journal. It
/// stops with a clear error, the journal from before stays valid, and once space is freed the
/// download resumes and completes.
#[test]
fn a_disk_that_fills_up_keeps_the_journal_valid() {
    let data = random_bytes(12 * MIB, 31);
    let srv = server(
        &data,
        Faults {
            rate_per_conn: Some(2 * MIB as u64),
            ..Default::default()
        },
    );
    let disk = Tmpfs::mount(24);
    let url = srv.url("f.bin");

    // A first run, paused with SIGINT after some progress.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["get", "-q", "-x", "2", "-o", "f.bin", &url])
        .current_dir(disk.path())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || srv.body_bytes_sent()
            >= 3 * MIB as u64),
        "the transfer never got going"
    );
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let journal = std::fs::read(disk.path().join("f.bin.ferry")).unwrap();

    // Fill the disk to the last byte.
    let filler = disk.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    srv.set_faults(Faults::default());
    let o = ferry(&["get", "-q", "-o", "f.bin", &url], disk.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no space left"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(disk.path().join("f.bin.ferry")).unwrap(),
        journal,
        "the journal is untouched"
    );
    let st = ferry(&["status", "f.bin"], disk.path());
    assert!(
        st.status.success() && String::from_utf8_lossy(&st.stdout).contains("partial"),
        "{}",
        stderr(&st)
    );

    std::fs::remove_file(&filler).unwrap();
    let o = ferry(&["get", "-q", "-o", "f.bin", &url], disk.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(disk.path().join("f.bin")).unwrap() == data);
}

/// `ulimit -f` (here via prlimit): a clear error instead of death by SIGXFSZ; then it works.
#[test]
fn the_file_size_limit_is_a_clear_error() {
    let data = random_bytes(8 * MIB, 32);
    let srv = server(&data, Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("prlimit")
        .arg(format!("--fsize={}", 2 * MIB))
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .args(["get", "-q", "-o", "f.bin", &srv.url("f.bin")])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "killed by a signal? {:?} {}",
        o.status,
        stderr(&o)
    );
    assert!(stderr(&o).contains("file size limit"), "{}", stderr(&o));
    let o = ferry(&["get", "-q", "-o", "f.bin", &srv.url("f.bin")], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(dir.path().join("f.bin")).unwrap() == data);
}
