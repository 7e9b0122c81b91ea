//! A real `redis-server` on 127.0.0.1 for one test: a free port, its own temp directory (its
//! config, log and dump), stopped (SIGKILL by PID) and restarted on the same port on demand,
//! and killed when the handle drops.
//!
//! ```no_run
//! use ferry_testkit::redis::Redis;
//! let Some(mut redis) = Redis::start_or_skip() else { return };
//! let url = redis.url(); // redis://127.0.0.1:PORT/0
//! redis.kill(); // requests needing state now fail
//! redis.restart(); // same port; the data is gone (no persistence) unless saved
//! ```
//!
//! [`Redis::start_tls_or_skip`] starts one that speaks only TLS (`rediss://`).
//!
//! The binary is `$FERRY_REDIS`, else `redis-server` on `PATH` (Debian package `redis-server`,
//! installed by `scripts/test.sh`). Without it, [`Redis::start_or_skip`] fails the test under
//! `CI=true` and otherwise prints why it skips.

use crate::util::spawn_server;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running redis-server. Killed (by PID) and reaped on drop.
pub struct Redis {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// TLS only: the certificate and key files (PEM) it serves with.
    tls: Option<(PathBuf, PathBuf)>,
}

/// The redis-server binary: `$FERRY_REDIS`, or `redis-server` found on `PATH`.
pub fn redis_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_REDIS") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|c| c.is_file())
}

impl Redis {
    /// Starts redis-server, or returns `None` after saying why the test skips (no
    /// redis-server installed). Under `CI=true` a missing redis-server panics instead.
    pub fn start_or_skip() -> Option<Redis> {
        match redis_binary() {
            Some(bin) => Some(Redis::start_with(bin)),
            None => {
                let msg = "redis-server is not installed (looked at $FERRY_REDIS and PATH); \
                           run scripts/test.sh once or `apt-get install redis-server`";
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED: {msg}");
                None
            }
        }
    }

    /// Starts `bin` on a free port of 127.0.0.1 (no persistence: a restart starts empty unless
    /// [`Redis::save`] wrote a dump first).
    pub fn start_with(bin: PathBuf) -> Redis {
        Redis::spawn(bin, None)
    }

    /// Like [`Redis::start_or_skip`], but the port speaks only TLS (`rediss://`), with the
    /// certificate chain `cert` and its key `key` (PEM files); clients are not asked for one.
    pub fn start_tls_or_skip(cert: &Path, key: &Path) -> Option<Redis> {
        let plain = Redis::start_or_skip()?;
        let bin = plain.bin.clone();
        drop(plain);
        Some(Redis::spawn(
            bin,
            Some((cert.to_path_buf(), key.to_path_buf())),
        ))
    }

    fn spawn(bin: PathBuf, tls: Option<(PathBuf, PathBuf)>) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("ferry-redis-")
            .tempdir()
            .expect("create temp dir for redis");
        let mut redis = Redis {
            bin,
            child: None,
            port: 0,
            dir,
            tls,
        };
        let spawned = spawn_server("redis-server", |port| redis.command(port), || redis.log());
        redis.port = spawned.port;
        redis.child = Some(spawned.child);
        redis
    }

    fn command(&self, port: u16) -> Command {
        let log = self.dir.path().join("redis.log");
        let _ = File::options().create(true).append(true).open(&log);
        let mut cmd = Command::new(&self.bin);
        match &self.tls {
            None => cmd.arg("--port").arg(port.to_string()),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://localhost:PORT/0` for a TLS server.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some(_) => format!("rediss://localhost:{}/0", self.port),
        }
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Writes a dump now (`SAVE`), so that a [`Redis::restart`] comes back with the data.
    pub fn save(&self) {
        let reply = self.cli(&["SAVE"]);
        assert_eq!(reply, "OK", "SAVE answered {reply:?}");
    }

    /// Runs `redis-cli -p PORT WORDS…` (next to the server binary, else on `PATH`) and returns
    /// its output, trimmed: for checks from a test (plain servers, not TLS ones).
    pub fn cli(&self, words: &[&str]) -> String {
        let beside = self.bin.with_file_name("redis-cli");
        let cli = if beside.is_file() {
            beside
        } else {
            PathBuf::from("redis-cli")
        };
        let out = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(words)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills the server (SIGKILL) and reaps it. The port stays reserved for [`Redis::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`Redis::kill`]); it loads the last
    /// [`Redis::save`]d dump, if any. Polls until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = self
                .command(self.port)
                .spawn()
                .expect("restart redis-server");
            if crate::util::wait_for_port(("127.0.0.1", self.port), Duration::from_secs(5)).is_ok()
                && child.try_wait().ok().flatten().is_none()
            {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                std::time::Instant::now() < end,
                "redis-server did not come back on port {}:\n{}",
                self.port,
                self.log()
            );
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
