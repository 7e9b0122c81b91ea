//! A real S3-compatible server (`s3s-fs`) on 127.0.0.1 for one test: a free port, its own temp
//! directory (a bucket is a folder in it), fixed credentials, and the `AWS_*` environment a
//! client needs to reach it. Killed by its PID when the handle drops.
//!
//! ```no_run
//! use ferry_testkit::s3::S3Server;
//! let Some(s3) = S3Server::start_or_skip() else { return };
//! s3.create_bucket("b");
//! let env = s3.env(); // AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, …
//! ```
//!
//! The binary is `$FERRY_S3S_FS`, else `s3s-fs` on `PATH` (`cargo install s3s-fs --features
//! binary`, done and cached by `scripts/test.sh`). Without it, [`S3Server::start_or_skip`]
//! fails the test under `CI=true` and skips it otherwise.

use crate::util::spawn_server;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "ferry-test-key";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "ferry-test-secret";

/// A running s3s-fs. Killed (by PID) and reaped on drop.
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// The s3s-fs binary: `$FERRY_S3S_FS`, or `s3s-fs` found on `PATH`.
pub fn s3s_fs_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_S3S_FS") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("s3s-fs"))
        .find(|c| c.is_file())
}

impl S3Server {
    /// Starts s3s-fs, or returns `None` after saying why the test skips (not installed).
    /// Under `CI=true` a missing s3s-fs panics instead.
    pub fn start_or_skip() -> Option<S3Server> {
        match s3s_fs_binary() {
            Some(bin) => Some(S3Server::start_with(&bin)),
            None => {
                let msg = "s3s-fs is not installed (looked at $FERRY_S3S_FS and PATH); run \
                           scripts/test.sh once or `cargo install s3s-fs --features binary`";
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED: {msg}");
                None
            }
        }
    }

    /// Starts `bin` on a free port of 127.0.0.1, storing under a new temp directory.
    pub fn start_with(bin: &Path) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("ferry-s3-")
            .tempdir()
            .expect("create temp dir for s3s-fs");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("create s3s-fs data dir");
        let log = dir.path().join("s3s-fs.log");
        let spawned = spawn_server(
            "s3s-fs",
            |port| {
                let out = File::create(&log).expect("create s3s-fs log");
                let err = out.try_clone().expect("clone log handle");
                let mut cmd = Command::new(bin);
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(&data)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err);
                cmd
            },
            || fs::read_to_string(&log).unwrap_or_default(),
        );
        S3Server {
            child: Some(spawned.child),
            port: spawned.port,
            dir,
        }
    }

    /// Creates an empty bucket (a folder of the server's data directory).
    pub fn create_bucket(&self, name: &str) {
        fs::create_dir_all(self.data_dir().join(name)).expect("create bucket folder");
    }

    /// The folder holding the buckets (each a folder; objects are files under it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }

    /// The environment a client needs for this server (and nothing from the machine's AWS
    /// configuration: the config and credential files point at nothing).
    pub fn env(&self) -> Vec<(String, String)> {
        let none = self.dir.path().join("no-aws-config");
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_CONFIG_FILE", none.display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", none.display().to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Multipart uploads in progress in `bucket` (s3s-fs keeps each part as a file named
    /// `.upload_id-<id>.part-<n>` in its data directory): their part files.
    pub fn part_files(&self) -> Vec<String> {
        fs::read_dir(self.data_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(".upload_id-") && n.contains(".part-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills the server (SIGKILL, by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
