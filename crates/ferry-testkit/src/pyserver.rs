//! `python3 -m http.server` on 127.0.0.1 for one test: a real server that ignores `Range`.
//!
//! Python's `SimpleHTTPRequestHandler` (3.11 here, and every release up to at least 3.13)
//! has no Range support: a request with `Range: bytes=0-99` gets `200 OK` and the whole file,
//! with `Content-Length` and no `Accept-Ranges`. It speaks HTTP/1.0 and closes the
//! connection after each response. That makes it the reference for "server without ranges":
//! a downloader must fall back to one connection from byte 0. (Support for ranges has been
//! proposed upstream, CPython gh-86809; if a future Python adds it, the harness test
//! `python_server_ignores_range` fails and says so, and this server would need a handler that
//! strips `Range`.)
//!
//! The interpreter is `$FERRY_PYTHON`, else `python3` on `PATH`. Dropping the handle kills
//! the child by its PID and reaps it.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::spawn_server;

/// A running `python3 -m http.server` serving a directory on 127.0.0.1.
pub struct PyHttpServer {
    child: Child,
    port: u16,
    root: PathBuf,
    log: tempfile::NamedTempFile,
}

impl PyHttpServer {
    /// Starts `python3 -m http.server PORT --bind 127.0.0.1 --directory root` and waits until
    /// it accepts connections. Panics (with the server's output) if it does not start.
    pub fn start(root: &Path) -> PyHttpServer {
        let python = std::env::var_os("FERRY_PYTHON").unwrap_or_else(|| "python3".into());
        let root = fs::canonicalize(root)
            .unwrap_or_else(|e| panic!("python server root {}: {e}", root.display()));
        let log = tempfile::Builder::new()
            .prefix("ferry-pyserver-")
            .suffix(".log")
            .tempfile()
            .expect("create python server log file");
        let log_path = log.path().to_path_buf();
        let spawned = spawn_server(
            "python3 -m http.server",
            |port| {
                let out = File::create(&log_path).expect("open python server log");
                let err = out.try_clone().expect("clone log handle");
                let mut cmd = Command::new(&python);
                cmd.args(["-u", "-m", "http.server"])
                    .arg(port.to_string())
                    .args(["--bind", "127.0.0.1", "--directory"])
                    .arg(&root)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err);
                cmd
            },
            || fs::read_to_string(&log_path).unwrap_or_default(),
        );
        PyHttpServer {
            child: spawned.child,
            port: spawned.port,
            root,
            log,
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The PID of the Python process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The served directory (canonical path).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `http://127.0.0.1:PORT/<path>` (leading `/` optional; `path` is used as given).
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// What the server printed so far: one line per request (`"GET /f HTTP/1.1" 200 -`)
    /// plus any tracebacks.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for PyHttpServer {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
