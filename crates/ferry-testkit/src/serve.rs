//! `ferry serve` as a child process on 127.0.0.1 for one test: started on a free port, waited
//! for until it listens, killed (SIGKILL by PID) and restarted on the same port on demand, and
//! killed when the handle drops. The binary path comes from the caller
//! (`env!("CARGO_BIN_EXE_ferry")` in the ferry crate's tests).

use crate::util::spawn_server;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `ferry serve DIR --listen 127.0.0.1:PORT ARGS…`.
pub struct FerryServe {
    bin: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl FerryServe {
    /// Starts the server over `dir` with extra `args` (e.g. `["--public"]`).
    pub fn start(bin: impl AsRef<Path>, dir: &Path, args: &[&str]) -> FerryServe {
        FerryServe::start_with_env(bin, dir, args, &[])
    }

    /// Like [`FerryServe::start`], with extra environment variables (e.g. `SSL_CERT_FILE`).
    pub fn start_with_env(
        bin: impl AsRef<Path>,
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> FerryServe {
        let log = tempfile::Builder::new()
            .prefix("ferry-serve-")
            .suffix(".log")
            .tempfile()
            .expect("create ferry serve log file");
        let mut s = FerryServe {
            bin: bin.as_ref().to_path_buf(),
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            port: 0,
            log,
        };
        let log_path = s.log.path().to_path_buf();
        let spawned = spawn_server(
            "ferry serve",
            |port| s.command(port),
            || fs::read_to_string(&log_path).unwrap_or_default(),
        );
        s.port = spawned.port;
        s.child = Some(spawned.child);
        s
    }

    fn command(&self, port: u16) -> Command {
        let out = File::options()
            .append(true)
            .open(self.log.path())
            .expect("open ferry serve log");
        let err = out.try_clone().expect("clone log handle");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg(&self.dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(
                "FERRY_LOG",
                std::env::var("FERRY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        cmd
    }

    /// The port on 127.0.0.1 the server listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The server process's id; `None` after [`kill_hard`](Self::kill_hard) until a restart.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGKILL: no clean-up, no graceful shutdown.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill_hard`](Self::kill_hard)).
    pub fn restart(&mut self) {
        self.kill_hard();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = self
                .command(self.port)
                .spawn()
                .expect("restart ferry serve");
            let up = crate::util::wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || crate::util::wait_for_port(
                        ("127.0.0.1", self.port),
                        Duration::from_millis(50),
                    )
                    .is_ok()
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                std::time::Instant::now() < deadline,
                "ferry serve did not come back on port {}:\n{}",
                self.port,
                self.log()
            );
        }
    }
}

impl Drop for FerryServe {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
