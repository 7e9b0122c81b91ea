//! A real nginx on 127.0.0.1 for one test: the reference for a well-behaved HTTP/1.1 file
//! server (Range, If-Range, strong ETags, Last-Modified, keep-alive, sendfile).
//!
//! ```no_run
//! use ferry_testkit::nginx::{Nginx, NginxOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! let nginx = Nginx::start(dir.path());
//! let url = nginx.url("big.bin"); // http://127.0.0.1:PORT/big.bin
//! let slow = nginx.slow_url("big.bin"); // same file, `limit_rate` per request
//! let norange = nginx.norange_url("big.bin"); // same file, Range ignored (200)
//! // ... download ...
//! let served = nginx.body_bytes_sent(); // see the note on timing
//!
//! let throttled = Nginx::start_with(
//!     dir.path(),
//!     NginxOptions { limit_rate: Some("1m".into()), ..Default::default() },
//! );
//! ```
//!
//! Locations (all serve the same `root`):
//! - `/` — plain static files, Range support as nginx ships it.
//! - `/slow/` — `limit_rate` ([`NginxOptions::limit_rate`], default `20m` = 20 MiB/s) for each
//!   request, so N parallel connections get about N times the rate of one.
//! - `/norange/` — `max_ranges 0`: a Range header is ignored and the whole file comes back as
//!   `200` without `Accept-Ranges`.
//!
//! The server runs in the foreground as one process (`daemon off; master_process off;`), so
//! the child's PID is the server; dropping [`Nginx`] kills that PID and reaps it. Its config,
//! pid file, logs and temp directories live in a private temp dir, so it runs as root or as a
//! normal user without touching `/etc`, `/var` or `/run`.
//!
//! Do not keep an [`Nginx`] in a `static`: statics are never dropped, so the server would
//! outlive the test process. Starting one takes a few milliseconds; start one per test.
//!
//! The binary is `$FERRY_NGINX`, else `/usr/sbin/nginx`, else `nginx` on `PATH`.
//! `scripts/test.sh` installs it (Debian package `nginx-light`, or `nginx`).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::spawn_server;

/// Settings for [`Nginx::start_with`]. `Default` gives `limit_rate: Some("20m")` and no extra
/// configuration.
#[derive(Debug, Clone)]
pub struct NginxOptions {
    /// nginx `limit_rate` for the `/slow/` location, per request (bytes per second, nginx size
    /// syntax: `"500k"`, `"20m"`). `None` makes `/slow/` unthrottled.
    pub limit_rate: Option<String>,
    /// Raw directives added inside `http { }`, e.g. `"keepalive_requests 3;"`.
    pub extra_http: String,
    /// Raw directives added inside `server { }`, e.g. another location:
    /// `"location /noetag/ { alias ROOT/; etag off; }"` (write the absolute root yourself).
    pub extra_server: String,
}

impl Default for NginxOptions {
    fn default() -> Self {
        NginxOptions {
            limit_rate: Some("20m".to_string()),
            extra_http: String::new(),
            extra_server: String::new(),
        }
    }
}

impl NginxOptions {
    /// nginx in front of several `ferry serve` instances (`backends`: their ports on
    /// 127.0.0.1), round robin per request: `/uploads/`, `/files/` and `/metrics` are proxied
    /// with `proxy_request_buffering off` (a PATCH body streams through as it arrives) and no
    /// size limit; the `Host` header is passed on, so upload URLs name nginx. A dead backend is
    /// skipped for requests that can be retried (not a PATCH whose body went out).
    pub fn round_robin(backends: &[u16]) -> NginxOptions {
        let mut upstream = String::from("upstream ferry_backends { ");
        for port in backends {
            let _ = write!(upstream, "server 127.0.0.1:{port} max_fails=0; ");
        }
        upstream.push('}');
        let proxy = "proxy_pass http://ferry_backends; proxy_http_version 1.1; \
                     proxy_set_header Connection \"\"; proxy_set_header Host $http_host; \
                     proxy_request_buffering off; proxy_buffering off; client_max_body_size 0; \
                     proxy_connect_timeout 2s; proxy_read_timeout 60s; proxy_send_timeout 60s;";
        NginxOptions {
            limit_rate: None,
            extra_http: upstream,
            extra_server: format!(
                "location /uploads/ {{ {proxy} }} location /files/ {{ {proxy} }} \
                 location = /metrics {{ {proxy} }}"
            ),
        }
    }
}

/// One line of the access log: one finished (or aborted) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// `$request_method`, e.g. `GET`, `HEAD`.
    pub method: String,
    /// `$uri` (decoded, without the query string), e.g. `/slow/big.bin`.
    pub uri: String,
    /// `$status`, e.g. 200, 206, 416.
    pub status: u16,
    /// `$body_bytes_sent`: body bytes nginx handed to the kernel for this request.
    pub body_bytes_sent: u64,
    /// `$http_range`: the request's Range header, if it had one.
    pub range: Option<String>,
    /// `$connection`: serial number of the TCP connection; requests with the same number came
    /// over one kept-alive connection. Count distinct values to count connections.
    pub connection: u64,
    /// `$request_completion`: true when nginx sent the whole response, false when the request
    /// ended early (client closed the connection, timeout).
    pub completed: bool,
}

/// A running nginx serving a directory on 127.0.0.1. Killed (by PID) and reaped on drop.
pub struct Nginx {
    child: Child,
    port: u16,
    root: PathBuf,
    dir: tempfile::TempDir,
}

/// The access log format: tab-separated, so that no value can be confused with a separator
/// (nginx escapes control characters in logged values as `\xHH`).
const LOG_FORMAT: &str = "$request_method\\t$uri\\t$status\\t$body_bytes_sent\\t$http_range\\t$connection\\t$request_completion";

/// Path of the nginx binary: `$FERRY_NGINX`, `/usr/sbin/nginx`, or `nginx` on `PATH`.
/// Panics with instructions when none exists.
pub fn nginx_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_NGINX") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "FERRY_NGINX={} does not exist or is not a file",
            p.display()
        );
        return p;
    }
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("nginx");
            if c.is_file() {
                return c;
            }
        }
    }
    panic!(
        "nginx is not installed (looked at $FERRY_NGINX, /usr/sbin/nginx and PATH). \
         Run scripts/test.sh once (it installs it with apt-get), or \
         `apt-get install nginx-light` (or `nginx`), or set FERRY_NGINX=/path/to/nginx."
    );
}

/// Quotes a value for nginx's config syntax.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Nginx {
    /// Starts nginx serving `root` at `/`, `/slow/` (20 MiB/s per request) and `/norange/`.
    /// Panics if nginx is missing or does not start (the panic includes its error log).
    pub fn start(root: &Path) -> Nginx {
        Nginx::start_with(root, NginxOptions::default())
    }

    /// Starts nginx with `opts`; see [`NginxOptions`].
    pub fn start_with(root: &Path, opts: NginxOptions) -> Nginx {
        let bin = nginx_binary();
        let root =
            fs::canonicalize(root).unwrap_or_else(|e| panic!("nginx root {}: {e}", root.display()));
        let dir = tempfile::Builder::new()
            .prefix("ferry-nginx-")
            .tempdir()
            .expect("create temp dir for nginx");
        let d = dir.path().to_path_buf();
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            fs::create_dir_all(d.join(sub)).expect("create nginx temp dir");
        }
        let conf_path = d.join("nginx.conf");
        let error_log = d.join("error.log");
        let stderr_path = d.join("stderr.log");
        let root_s = root.to_str().expect("nginx root must be UTF-8").to_string();
        let d_s = d.to_str().expect("temp dir must be UTF-8").to_string();

        let spawned = spawn_server(
            "nginx",
            |port| {
                let conf = render_config(&d_s, &root_s, port, &opts);
                fs::write(&conf_path, conf).expect("write nginx.conf");
                let _ = File::create(&error_log);
                let mut cmd = Command::new(&bin);
                cmd.arg("-p")
                    .arg(&d)
                    .arg("-c")
                    .arg(&conf_path)
                    .arg("-e")
                    .arg(&error_log)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(File::create(&stderr_path).expect("create nginx stderr log"));
                cmd
            },
            || {
                let a = fs::read_to_string(&stderr_path).unwrap_or_default();
                let b = fs::read_to_string(&error_log).unwrap_or_default();
                format!("{a}{b}")
            },
        );
        Nginx {
            child: spawned.child,
            port: spawned.port,
            root,
            dir,
        }
    }

    /// The port nginx listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The PID of the nginx process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The served directory (canonical path).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The private directory holding `nginx.conf`, `access.log`, `error.log`, the pid file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT/<path>` (a leading `/` in `path` is optional; `path` is used as
    /// given, so percent-encode it yourself if it needs it).
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// `http://127.0.0.1:PORT/slow/<path>`: the same file, throttled per request.
    pub fn slow_url(&self, path: &str) -> String {
        self.url(&format!("slow/{}", path.trim_start_matches('/')))
    }

    /// `http://127.0.0.1:PORT/norange/<path>`: the same file, Range ignored (always 200).
    pub fn norange_url(&self, path: &str) -> String {
        self.url(&format!("norange/{}", path.trim_start_matches('/')))
    }

    /// The access log so far, parsed.
    ///
    /// nginx writes a request's line when the request *finishes*, including an aborted one
    /// (then `completed` is false and `body_bytes_sent` counts what nginx handed to the kernel,
    /// which can exceed what the client read by up to the socket buffers). So a client can see
    /// its last byte before nginx has logged that request: poll with
    /// [`Nginx::wait_for_requests`] rather than reading once.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        let text = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_line).collect()
    }

    /// Sum of `$body_bytes_sent` over the access log so far (see [`Nginx::access_log`] for
    /// when lines appear, and why an aborted request may count bytes the client never read).
    pub fn body_bytes_sent(&self) -> u64 {
        self.access_log().iter().map(|e| e.body_bytes_sent).sum()
    }

    /// Waits until the access log has at least `n` lines, polling every 10 ms, and returns
    /// them; `Err` with what was logged if `timeout` passes first.
    pub fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<AccessLogEntry>, String> {
        let end = Instant::now() + timeout;
        loop {
            let log = self.access_log();
            if log.len() >= n {
                return Ok(log);
            }
            if Instant::now() >= end {
                return Err(format!(
                    "nginx logged {} requests within {timeout:?}, expected at least {n}: {log:#?}",
                    log.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The error log so far (useful in assertion messages).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn render_config(dir: &str, root: &str, port: u16, opts: &NginxOptions) -> String {
    let mut c = String::new();
    let root_slash = format!("{}/", root.trim_end_matches('/'));
    let _ = writeln!(c, "daemon off;\nmaster_process off;\nworker_processes 1;");
    let _ = writeln!(c, "pid {};", q(&format!("{dir}/nginx.pid")));
    let _ = writeln!(c, "error_log {} info;", q(&format!("{dir}/error.log")));
    let _ = writeln!(c, "events {{ worker_connections 1024; }}");
    let _ = writeln!(c, "http {{");
    let _ = writeln!(c, "  default_type application/octet-stream;");
    let _ = writeln!(c, "  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;");
    for (directive, sub) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let _ = writeln!(c, "  {directive} {};", q(&format!("{dir}/{sub}")));
    }
    let _ = writeln!(c, "  log_format ferry \"{LOG_FORMAT}\";");
    let _ = writeln!(c, "  access_log {} ferry;", q(&format!("{dir}/access.log")));
    let _ = writeln!(c, "  {}", opts.extra_http);
    let _ = writeln!(c, "  server {{");
    let _ = writeln!(c, "    listen 127.0.0.1:{port};");
    let _ = writeln!(c, "    server_name localhost;");
    let _ = writeln!(c, "    root {};", q(root));
    let _ = writeln!(c, "    location / {{ }}");
    let _ = write!(c, "    location /slow/ {{ alias {};", q(&root_slash));
    if let Some(rate) = &opts.limit_rate {
        let _ = write!(c, " limit_rate {};", q(rate));
    }
    let _ = writeln!(c, " }}");
    let _ = writeln!(
        c,
        "    location /norange/ {{ alias {}; max_ranges 0; }}",
        q(&root_slash)
    );
    let _ = writeln!(c, "    {}", opts.extra_server);
    let _ = writeln!(c, "  }}\n}}");
    c
}

fn parse_line(line: &str) -> Option<AccessLogEntry> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 7 {
        return None;
    }
    let dash = |s: &str| (s != "-").then(|| s.to_string());
    Some(AccessLogEntry {
        method: f[0].to_string(),
        uri: f[1].to_string(),
        status: f[2].parse().ok()?,
        body_bytes_sent: f[3].parse().ok()?,
        range: dash(f[4]),
        connection: f[5].parse().ok()?,
        completed: f[6] == "OK",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_lines() {
        let e = parse_line("GET\t/slow/a b\t206\t100\tbytes=0-99\t3\tOK").unwrap();
        assert_eq!(e.uri, "/slow/a b");
        assert_eq!(e.status, 206);
        assert_eq!(e.body_bytes_sent, 100);
        assert_eq!(e.range.as_deref(), Some("bytes=0-99"));
        assert_eq!(e.connection, 3);
        assert!(e.completed);
        let e = parse_line("GET\t/x\t200\t7\t-\t4\t-").unwrap();
        assert_eq!(e.range, None);
        assert!(!e.completed);
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn round_robin_proxies_without_buffering() {
        let c = render_config("/tmp/d", "/srv", 1, &NginxOptions::round_robin(&[10, 11]));
        assert!(
            c.contains("server 127.0.0.1:10 max_fails=0; server 127.0.0.1:11"),
            "{c}"
        );
        assert!(
            c.contains("location /uploads/ { proxy_pass http://ferry_backends;"),
            "{c}"
        );
        assert!(c.contains("proxy_request_buffering off;"), "{c}");
    }

    #[test]
    fn config_quotes_paths() {
        let c = render_config("/tmp/d", "/srv/a \"b\"", 1234, &NginxOptions::default());
        assert!(c.contains(r#"root "/srv/a \"b\"";"#), "{c}");
        assert!(c.contains("limit_rate \"20m\";"), "{c}");
        assert!(c.contains("listen 127.0.0.1:1234;"), "{c}");
    }
}
