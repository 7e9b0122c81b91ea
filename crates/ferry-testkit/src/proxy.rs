//! `FaultProxy`: a loopback TCP proxy that injects faults in front of a real server (nginx,
//! `ferry serve`, anything that speaks HTTP/1.1 over TCP), so that ferry and its peers (curl,
//! aria2c, axel) can be run against the same well-behaved server made flaky on purpose.
//!
//! ```no_run
//! use ferry_testkit::nginx::Nginx;
//! use ferry_testkit::proxy::{FaultProxy, ProxyFaults};
//! # let dir = tempfile::tempdir().unwrap();
//! let nginx = Nginx::start(dir.path());
//! let proxy = FaultProxy::start_blocking(
//!     nginx.addr(),
//!     ProxyFaults { reset_after: Some((1 << 20, 6 << 20)), ..Default::default() },
//! );
//! let url = proxy.url("big.bin"); // http://127.0.0.1:PORT/big.bin, reset every 1–6 MiB
//! // ... download ...
//! let wasted = proxy.bytes_down(); // server→client bytes forwarded, headers included
//! ```
//!
//! How it works, and what that means for the faults:
//!
//! - Every accepted client connection gets its own upstream connection. The proxy reads the
//!   client's first request head (through the blank line) *before* it connects upstream, so a
//!   request it answers itself ([`ProxyFaults::fail_first`]) never reaches the server.
//! - Client→server bytes are scanned for request heads: a head is held back until it is
//!   complete, then forwarded (or answered by the proxy); a body announced by
//!   `Content-Length` is forwarded as it comes. After a chunked request body, a `CONNECT` or an
//!   `Upgrade` the rest of the connection is passed through without scanning.
//! - Server→client bytes are not parsed: the byte-count faults ([`ProxyFaults::reset_after`],
//!   [`ProxyFaults::stall_after`], [`ProxyFaults::slow_start`]) count everything the proxy
//!   writes to the client on that connection, response heads included, over all the responses
//!   of a kept-alive connection.
//! - Without faults it is a plain relay with 256 KiB buffers on each direction (both
//!   directions run in one task per connection); counters are relaxed atomics updated once per
//!   chunk, after the chunk was written.
//! - A connection's byte faults (reset, stall, throttles) come from the plan current when the
//!   connection was accepted; [`FaultProxy::set_faults`] changes them for later connections.
//!   The request counters behind [`ProxyFaults::fail_first`] and [`ProxyFaults::stall_first_n`]
//!   belong to the plan: `set_faults` starts them again from zero.
//! - Dropping the [`FaultProxy`] aborts its accept task, which owns every connection task, so
//!   every socket is closed; a proxy from [`FaultProxy::start_blocking`] also shuts down its
//!   private runtime.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Buffer size for each direction of a connection.
const BUF: usize = 256 * 1024;

/// Largest request head the proxy buffers; a longer "head" is forwarded as is and the rest of
/// the connection is passed through without scanning.
const MAX_HEAD: usize = 64 * 1024;

/// Pause between the last byte before a reset and the RST itself: Linux discards data that
/// the client has received but not yet read when the RST arrives, so without it a reading
/// client would lose up to a socket buffer of the bytes counted as sent.
pub const RESET_GRACE: Duration = Duration::from_millis(25);

/// How long a connection the proxy closes after answering a request itself waits for the
/// client's close before dropping the socket.
const LINGER_DRAIN: Duration = Duration::from_secs(2);

/// Throttled writes are cut into pieces of about 1/`PIECES_PER_SEC` of a second's worth.
const PIECES_PER_SEC: u64 = 50;

/// The fault plan. `Default` is a transparent proxy. Construct with
/// `ProxyFaults { field: value, ..Default::default() }`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyFaults {
    /// Per client connection, draw a number N uniformly from `[lo, hi]` (swapped if
    /// `lo > hi`); after N bytes were sent downstream (server→client) on that connection, close
    /// the upstream connection and abort the client's with a TCP RST (`SO_LINGER` 0), after a
    /// pause of [`RESET_GRACE`]. A connection that ends before N bytes is not reset.
    pub reset_after: Option<(u64, u64)>,
    /// Like [`ProxyFaults::reset_after`] for the other direction: after N bytes were sent
    /// upstream (client→server, e.g. an upload's body) on a connection, close the upstream
    /// connection (the server sees the request break off) and reset the client's.
    pub reset_after_up: Option<(u64, u64)>,
    /// Do not parse HTTP: connect upstream at once and pass the bytes through as they are (for
    /// TLS, e.g. `ferry send`). The byte-count faults apply; the request faults
    /// ([`ProxyFaults::fail_first`]) do not.
    pub raw_tcp: bool,
    /// Per connection: after this many downstream bytes stop forwarding; the upstream
    /// connection is closed, the client's is kept open (its bytes are read and discarded) until
    /// the client closes it.
    pub stall_after: Option<u64>,
    /// With [`ProxyFaults::stall_after`]: only the first n connections that reach the stall
    /// point stall (connections that end earlier do not use up the budget); 0 means all.
    pub stall_first_n: u64,
    /// The first n HTTP requests (any method, counted from when this plan was installed) are
    /// not forwarded: the proxy answers them with [`ProxyFaults::fail_status`], a short text
    /// body, `Retry-After` when [`ProxyFaults::retry_after`] is set, and `Connection: close`,
    /// then closes the connection.
    pub fail_first: u32,
    /// The status for [`ProxyFaults::fail_first`]; 0 means 503.
    pub fail_status: u16,
    /// Seconds, sent as `Retry-After` with the [`ProxyFaults::fail_first`] answers.
    pub retry_after: Option<u64>,
    /// `(bytes, bytes/s)`: the first `bytes` downstream bytes of each connection are throttled
    /// to `bytes/s`; after them [`ProxyFaults::rate_per_conn`] applies (or no throttle).
    pub slow_start: Option<(u64, u64)>,
    /// Throttle every connection's downstream bytes to this many bytes per second, smoothly
    /// (pieces of about 1/50 s worth, no burst after idle time).
    pub rate_per_conn: Option<u64>,
}

impl ProxyFaults {
    fn status(&self) -> u16 {
        if self.fail_status == 0 {
            503
        } else {
            self.fail_status
        }
    }
}

/// A running fault-injection proxy on 127.0.0.1. Dropping it stops the proxy and closes every
/// connection.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// The private runtime of a proxy from [`FaultProxy::start_blocking`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts on 127.0.0.1 with an ephemeral port, forwarding to `upstream`. Must be called
    /// inside a tokio runtime; the proxy's tasks run on that runtime (a test that blocks its
    /// thread while talking to the proxy wants [`FaultProxy::start_blocking`]).
    pub async fn start(upstream: SocketAddr, faults: ProxyFaults) -> FaultProxy {
        FaultProxy::bind(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, faults)
            .await
            .expect("FaultProxy: bind 127.0.0.1:0")
    }

    /// Like [`FaultProxy::start`] but listens on `listen` (e.g. a fixed port).
    pub async fn bind(
        listen: SocketAddr,
        upstream: SocketAddr,
        faults: ProxyFaults,
    ) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new(Plan::new(faults)),
            bytes_down: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultProxy {
            addr,
            upstream,
            shared,
            accept,
            runtime: None,
        })
    }

    /// Same as [`FaultProxy::start`], but builds its own multi-thread tokio runtime (2 worker
    /// threads) on a background thread, for sync tests that run downloaders as subprocesses.
    /// May be called from anywhere, even inside another runtime. Dropping the proxy shuts that
    /// runtime down without blocking.
    pub fn start_blocking(upstream: SocketAddr, faults: ProxyFaults) -> FaultProxy {
        std::thread::Builder::new()
            .name("ferry-proxy-start".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ferry-proxy")
                    .enable_all()
                    .build()
                    .expect("FaultProxy: build tokio runtime");
                let mut proxy = runtime.block_on(FaultProxy::start(upstream, faults));
                proxy.runtime = Some(runtime);
                proxy
            })
            .expect("FaultProxy: spawn start thread")
            .join()
            .expect("FaultProxy: start thread panicked")
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `"http://127.0.0.1:PORT/<path>"`; a leading slash on `path` is dropped.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Server→client bytes forwarded so far (all connections, response heads included),
    /// counted as each chunk is written to the client. The proxy's own answers
    /// ([`ProxyFaults::fail_first`]) are not counted.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::Relaxed)
    }

    /// Client→server bytes forwarded so far (request heads and bodies), counted as written
    /// upstream. Requests the proxy answered itself are not counted.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::Relaxed)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections the proxy reset ([`ProxyFaults::reset_after`]).
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }

    /// Connections the proxy stalled ([`ProxyFaults::stall_after`]).
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::Relaxed)
    }

    /// Request heads seen from clients (forwarded or answered by the proxy).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Requests the proxy answered itself ([`ProxyFaults::fail_first`]).
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Replaces the fault plan and restarts its counters. Byte faults apply to connections
    /// accepted from now on; `fail_first` counts requests from now on.
    pub fn set_faults(&self, faults: ProxyFaults) {
        *lock(&self.shared.plan) = Plan::new(faults);
    }

    /// The current fault plan.
    pub fn faults(&self) -> ProxyFaults {
        lock(&self.shared.plan).faults.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks: aborting it aborts them all.
        self.accept.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Shared state

struct Shared {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    connections: AtomicU64,
    resets: AtomicU64,
    stalls: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
}

struct Plan {
    faults: ProxyFaults,
    requests_seen: u64,
    stalls_claimed: u64,
}

impl Plan {
    fn new(faults: ProxyFaults) -> Plan {
        Plan {
            faults,
            requests_seen: 0,
            stalls_claimed: 0,
        }
    }
}

impl Shared {
    /// Counts a request head; `Some((status, retry_after))` when the proxy must answer it.
    fn on_request(&self) -> Option<(u16, Option<u64>)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut plan = lock(&self.plan);
        plan.requests_seen += 1;
        if plan.requests_seen <= u64::from(plan.faults.fail_first) {
            self.failed.fetch_add(1, Ordering::Relaxed);
            Some((plan.faults.status(), plan.faults.retry_after))
        } else {
            None
        }
    }

    /// Claims one stall of the budget; false when it is used up.
    fn claim_stall(&self) -> bool {
        let mut plan = lock(&self.plan);
        let n = plan.faults.stall_first_n;
        if n != 0 && plan.stalls_claimed >= n {
            return false;
        }
        plan.stalls_claimed += 1;
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------
// Request head scanning (client → server)

/// Finds request boundaries in the client→server byte stream.
struct Scanner {
    /// The head being collected (not yet forwarded).
    head: Vec<u8>,
    /// Body bytes of the current request still to come.
    body_left: u64,
    /// Stop scanning: forward everything as it comes.
    passthrough: bool,
}

enum Step {
    /// Forward the first `n` bytes of the input as they are.
    Forward(usize),
    /// Drop the first `n` bytes (blank lines between requests; they are not forwarded).
    Skip(usize),
    /// All input was taken into the head being collected.
    Buffered,
    /// A complete request head, and how many input bytes completed it.
    Head(Vec<u8>, usize),
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            head: Vec::new(),
            body_left: 0,
            passthrough: false,
        }
    }

    /// Looks at the start of `data` (non-empty) and says what to do with it.
    fn step(&mut self, data: &[u8]) -> Step {
        debug_assert!(!data.is_empty());
        if self.passthrough {
            return Step::Forward(data.len());
        }
        if self.body_left > 0 {
            let n = usize::try_from(self.body_left)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.body_left -= n as u64;
            return Step::Forward(n);
        }
        if self.head.is_empty() {
            // Blank lines before a request (RFC 9112 §2.2).
            let blank = data
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                return Step::Skip(blank);
            }
        }
        let from = self.head.len().saturating_sub(3);
        let before = self.head.len();
        self.head.extend_from_slice(data);
        if let Some(pos) = find(&self.head[from..], b"\r\n\r\n") {
            let end = from + pos + 4;
            self.head.truncate(end);
            let head = std::mem::take(&mut self.head);
            self.after_head(&head);
            return Step::Head(head, end - before);
        }
        if self.head.len() > MAX_HEAD {
            // Not HTTP as we know it: give up scanning.
            self.passthrough = true;
            let head = std::mem::take(&mut self.head);
            return Step::Head(head, data.len());
        }
        Step::Buffered
    }

    /// Reads the framing of a request from its head.
    fn after_head(&mut self, head: &[u8]) {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        if request_line
            .get(..8)
            .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT "))
        {
            self.passthrough = true;
        }
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                match value.parse::<u64>() {
                    Ok(n) => self.body_left = n,
                    Err(_) => self.passthrough = true,
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("upgrade")
            {
                self.passthrough = true;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_head_request(head: &[u8]) -> bool {
    head.len() >= 5 && head[..5].eq_ignore_ascii_case(b"HEAD ")
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

/// The proxy's own answer to a request.
fn fail_response(status: u16, retry_after: Option<u64>, head_request: bool) -> Vec<u8> {
    let body = format!("ferry-fault proxy: injected {status}\n");
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if let Some(secs) = retry_after {
        r.push_str(&format!("Retry-After: {secs}\r\n"));
    }
    r.push_str("\r\n");
    if !head_request {
        r.push_str(&body);
    }
    r.into_bytes()
}

// ---------------------------------------------------------------------------------------
// Connections

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(serve_conn(stream, Arc::clone(&shared)));
                }
                // E.g. EMFILE: back off a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The byte faults of one connection, fixed when it is accepted.
#[derive(Clone, Copy, Debug)]
struct ConnFaults {
    reset_at: Option<u64>,
    reset_up_at: Option<u64>,
    stall_at: Option<u64>,
    slow_start: Option<(u64, u64)>,
    rate: Option<u64>,
}

impl ConnFaults {
    fn draw(f: &ProxyFaults) -> ConnFaults {
        let reset_at = f
            .reset_after
            .map(|(lo, hi)| rand::rng().random_range(lo.min(hi)..=lo.max(hi)));
        let reset_up_at = f
            .reset_after_up
            .map(|(lo, hi)| rand::rng().random_range(lo.min(hi)..=lo.max(hi)));
        ConnFaults {
            reset_at,
            reset_up_at,
            stall_at: f.stall_after,
            slow_start: f.slow_start.filter(|&(n, r)| n > 0 && r > 0),
            rate: f.rate_per_conn.filter(|&r| r > 0),
        }
    }

    /// The throttle at `sent` downstream bytes, and how many bytes it applies to from there.
    fn throttle(&self, sent: u64) -> Option<(u64, u64)> {
        if let Some((bytes, rate)) = self.slow_start
            && sent < bytes
        {
            return Some((rate, bytes - sent));
        }
        self.rate.map(|r| (r, u64::MAX))
    }
}

/// How a connection ends.
enum End {
    /// Both directions finished (or the client went away after the server's close).
    Done,
    /// A socket failed: drop both.
    Abort,
    /// Reset point reached.
    Reset,
    /// Stall point reached (and a stall claimed).
    Stall,
    /// A request is answered by the proxy.
    Fail(u16, Option<u64>, bool),
}

enum UpEnd {
    /// The client closed its side; the upstream write side was shut down.
    Eof,
    Error,
    /// Upstream reset point reached.
    Reset,
    /// A request to answer ourselves: status, Retry-After, is a HEAD request.
    Fail(u16, Option<u64>, bool),
}

enum DownEnd {
    /// The server closed its side; the client write side was shut down.
    Eof,
    Error,
    Reset,
    Stall,
    /// Asked to stop (the proxy answers the next request itself).
    Stopped,
}

async fn serve_conn(mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let (conn, raw) = {
        let plan = lock(&shared.plan);
        (ConnFaults::draw(&plan.faults), plan.faults.raw_tcp)
    };

    // The first request head decides whether to connect upstream at all.
    let mut scanner = Scanner::new();
    let mut buf = vec![0u8; BUF];
    let (head, leftover) = if raw {
        scanner.passthrough = true;
        (Vec::new(), Vec::new())
    } else {
        loop {
            let n = match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut data = &buf[..n];
            let mut found = None;
            while !data.is_empty() {
                match scanner.step(data) {
                    Step::Skip(k) => data = &data[k..],
                    Step::Buffered => data = &[],
                    Step::Head(head, k) => {
                        found = Some((head, data[k..].to_vec()));
                        break;
                    }
                    // Not reached before the first head; forward-able bytes only follow a head.
                    Step::Forward(_) => unreachable!("no body before the first head"),
                }
            }
            if let Some(f) = found {
                break f;
            }
        }
    };
    if !raw && let Some((status, retry)) = shared.on_request() {
        answer_and_close(client, status, retry, is_head_request(&head)).await;
        return;
    }
    let mut upstream = match TcpStream::connect(shared.upstream).await {
        Ok(s) => s,
        Err(_) => {
            answer_and_close(client, 502, None, is_head_request(&head)).await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if upstream.write_all(&head).await.is_err() {
        return;
    }
    shared
        .bytes_up
        .fetch_add(head.len() as u64, Ordering::Relaxed);

    let end = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = upstream.split();
        let stop = Notify::new();
        let mut up = pin!(pump_up(
            &mut cr,
            &mut sw,
            buf,
            leftover,
            scanner,
            &shared,
            conn.reset_up_at
                .map(|at| at.saturating_sub(head.len() as u64)),
        ));
        let mut down = pin!(pump_down(&mut sr, &mut cw, conn, &shared, &stop));
        let mut up_end: Option<UpEnd> = None;
        let mut down_done = false;
        loop {
            tokio::select! {
                r = &mut up, if up_end.is_none() => match r {
                    UpEnd::Eof => {
                        if down_done {
                            break End::Done;
                        }
                        up_end = Some(UpEnd::Eof);
                    }
                    UpEnd::Error => break End::Abort,
                    UpEnd::Reset => break End::Reset,
                    UpEnd::Fail(s, r, h) => {
                        stop.notify_one();
                        up_end = Some(UpEnd::Fail(s, r, h));
                        if down_done {
                            break End::Fail(s, r, h);
                        }
                    }
                },
                r = &mut down, if !down_done => match r {
                    DownEnd::Eof => {
                        match up_end {
                            Some(UpEnd::Fail(s, r, h)) => break End::Fail(s, r, h),
                            Some(_) => break End::Done,
                            // The server closed; wait for the client's close (or its next
                            // request, which the proxy cannot forward any more).
                            None => down_done = true,
                        }
                    }
                    DownEnd::Stopped => match up_end {
                        Some(UpEnd::Fail(s, r, h)) => break End::Fail(s, r, h),
                        _ => break End::Abort,
                    },
                    DownEnd::Error => break End::Abort,
                    DownEnd::Reset => break End::Reset,
                    DownEnd::Stall => break End::Stall,
                },
            }
        }
    };

    match end {
        End::Done | End::Abort => {}
        End::Fail(status, retry, head_req) => {
            drop(upstream);
            answer_and_close(client, status, retry, head_req).await;
        }
        End::Reset => {
            shared.resets.fetch_add(1, Ordering::Relaxed);
            drop(upstream);
            let _ = client.flush().await;
            tokio::time::sleep(RESET_GRACE).await;
            let _ = client.set_zero_linger();
            drop(client);
        }
        End::Stall => {
            shared.stalls.fetch_add(1, Ordering::Relaxed);
            drop(upstream);
            drain(&mut client).await;
        }
    }
}

/// Client → server: forwards request heads and bodies, answers nothing itself; stops at the
/// first request the plan says to fail.
async fn pump_up<R, W>(
    cr: &mut R,
    sw: &mut W,
    mut buf: Vec<u8>,
    leftover: Vec<u8>,
    mut scanner: Scanner,
    shared: &Shared,
    mut reset_in: Option<u64>,
) -> UpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The bytes that came with the first head, then whatever the client sends.
    let mut pending = leftover;
    loop {
        let data: &[u8] = if pending.is_empty() {
            match cr.read(&mut buf).await {
                Ok(0) => {
                    let _ = sw.shutdown().await;
                    return UpEnd::Eof;
                }
                Ok(n) => &buf[..n],
                Err(_) => return UpEnd::Error,
            }
        } else {
            &pending
        };
        let mut data = data;
        while !data.is_empty() {
            match scanner.step(data) {
                Step::Forward(n) => {
                    // Up to the reset point, if it falls in this piece.
                    let n_ok = reset_in.map_or(n, |left| n.min(left as usize));
                    if sw.write_all(&data[..n_ok]).await.is_err() {
                        return UpEnd::Error;
                    }
                    shared.bytes_up.fetch_add(n_ok as u64, Ordering::Relaxed);
                    if let Some(left) = reset_in.as_mut() {
                        *left -= n_ok as u64;
                        if *left == 0 {
                            let _ = sw.flush().await;
                            return UpEnd::Reset;
                        }
                    }
                    data = &data[n..];
                }
                Step::Skip(n) => data = &data[n..],
                Step::Buffered => data = &[],
                Step::Head(head, n) => {
                    if let Some((status, retry)) = shared.on_request() {
                        return UpEnd::Fail(status, retry, is_head_request(&head));
                    }
                    if sw.write_all(&head).await.is_err() {
                        return UpEnd::Error;
                    }
                    shared
                        .bytes_up
                        .fetch_add(head.len() as u64, Ordering::Relaxed);
                    if let Some(left) = reset_in.as_mut() {
                        *left = left.saturating_sub(head.len() as u64).max(1);
                    }
                    data = &data[n..];
                }
            }
        }
        pending.clear();
    }
}

/// Server → client: forwards with the connection's byte faults.
async fn pump_down<R, W>(
    sr: &mut R,
    cw: &mut W,
    conn: ConnFaults,
    shared: &Shared,
    stop: &Notify,
) -> DownEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    let mut sent: u64 = 0;
    let mut stall_at = conn.stall_at;
    // When the next throttled piece may be written.
    let mut next = Instant::now();
    loop {
        if conn.reset_at == Some(sent) {
            return DownEnd::Reset;
        }
        if stall_at == Some(sent) {
            if shared.claim_stall() {
                return DownEnd::Stall;
            }
            stall_at = None;
        }
        let mut want = BUF as u64;
        for stop_at in [conn.reset_at, stall_at].into_iter().flatten() {
            want = want.min(stop_at - sent);
        }
        let throttle = conn.throttle(sent);
        if let Some((rate, span)) = throttle {
            want = want.min((rate / PIECES_PER_SEC).max(1)).min(span);
        }
        let want = want as usize;
        let n = tokio::select! {
            biased;
            () = stop.notified() => return DownEnd::Stopped,
            r = sr.read(&mut buf[..want]) => match r {
                Ok(0) => {
                    let _ = cw.shutdown().await;
                    return DownEnd::Eof;
                }
                Ok(n) => n,
                Err(_) => return DownEnd::Error,
            },
        };
        if let Some((rate, _)) = throttle {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next).await;
            } else {
                next = now;
            }
            next += Duration::from_secs_f64(n as f64 / rate as f64);
        }
        if cw.write_all(&buf[..n]).await.is_err() {
            return DownEnd::Error;
        }
        shared.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
        sent += n as u64;
    }
}

/// Writes the proxy's own answer, closes cleanly and waits briefly for the client's close.
async fn answer_and_close(mut client: TcpStream, status: u16, retry: Option<u64>, head_req: bool) {
    if client
        .write_all(&fail_response(status, retry, head_req))
        .await
        .is_err()
    {
        return;
    }
    let _ = client.shutdown().await;
    let _ = tokio::time::timeout(LINGER_DRAIN, drain(&mut client)).await;
}

/// Reads and discards until EOF or an error.
async fn drain(stream: &mut TcpStream) {
    let mut scratch = vec![0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{FaultConfig, FaultServer, Faults};
    use crate::util::{random_bytes, wait_until};
    use std::io::{Read as _, Write as _};
    use std::path::Path;
    use std::process::Command;

    const MIB: usize = 1 << 20;

    fn server(len: usize, seed: u64) -> (FaultServer, Vec<u8>) {
        let data = random_bytes(len, seed);
        let srv = FaultServer::start_blocking(FaultConfig {
            files: vec![("f.bin".into(), data.clone())],
            faults: Faults::default(),
        });
        (srv, data)
    }

    /// `curl -s -S -o OUT -w '%{http_code}' ARGS... URL` → (exit success, status, body).
    fn curl(url: &str, args: &[&str], out: &Path) -> (bool, u16, Vec<u8>) {
        let _ = std::fs::remove_file(out);
        let o = Command::new("curl")
            .args(["-s", "-S", "-o"])
            .arg(out)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .expect("run curl (scripts/test.sh installs it)");
        let status = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (
            o.status.success(),
            status,
            std::fs::read(out).unwrap_or_default(),
        )
    }

    /// Reads one response with a `Content-Length` body from a blocking socket: (head, body).
    fn read_response(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF inside a response head");
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("Content-Length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        (head, body)
    }

    #[test]
    fn scanner_finds_heads_and_skips_bodies() {
        let mut sc = Scanner::new();
        let stream = b"\r\nPOST /u HTTP/1.1\r\nContent-Length: 23\r\n\r\nGET /x HTTP/1.1\r\n\r\n1234GET /f HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut heads = Vec::new();
        let mut forwarded = Vec::new();
        // Feed in awkward pieces to cross every boundary.
        for piece in stream.chunks(5) {
            let mut data = piece;
            while !data.is_empty() {
                match sc.step(data) {
                    Step::Forward(n) => {
                        forwarded.extend_from_slice(&data[..n]);
                        data = &data[n..];
                    }
                    Step::Skip(n) => data = &data[n..],
                    Step::Buffered => data = &[],
                    Step::Head(h, n) => {
                        heads.push(String::from_utf8(h).unwrap());
                        data = &data[n..];
                    }
                }
            }
        }
        assert_eq!(
            heads,
            [
                "POST /u HTTP/1.1\r\nContent-Length: 23\r\n\r\n",
                "GET /f HTTP/1.1\r\nHost: a\r\n\r\n"
            ]
        );
        assert_eq!(forwarded, b"GET /x HTTP/1.1\r\n\r\n1234");

        let mut sc = Scanner::new();
        let Step::Head(_, _) = sc.step(b"PATCH / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        else {
            panic!("head expected")
        };
        assert!(matches!(
            sc.step(b"GET / HTTP/1.1\r\n\r\n"),
            Step::Forward(18)
        ));
    }

    #[test]
    fn passthrough_is_byte_identical_and_counts() {
        let (srv, data) = server(8 * MIB + 7, 1);
        let proxy = FaultProxy::start_blocking(srv.addr(), ProxyFaults::default());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");

        let (ok, status, body) = curl(&proxy.url("f.bin"), &[], &out);
        assert!(ok && status == 200);
        assert!(body == data, "the body differs");
        let (ok, status, body) = curl(&proxy.url("/f.bin"), &["-r", "1000-2999"], &out);
        assert!(ok && status == 206);
        assert!(body == data[1000..3000]);
        let (ok, status, _) = curl(&proxy.url("missing"), &[], &out);
        assert!(ok && status == 404);

        assert_eq!(proxy.connections(), 3);
        assert_eq!(proxy.requests(), 3);
        assert_eq!(srv.request_count(), 3);
        assert_eq!(proxy.resets(), 0);
        let body_bytes = (data.len() + 2000) as u64;
        // Counted after each write returns, so the client may see the last byte a moment
        // before the counter does.
        assert!(
            wait_until(Duration::from_secs(10), || proxy.bytes_down() > body_bytes
                && proxy.bytes_up() > 100),
            "bytes_down {}",
            proxy.bytes_down()
        );
        assert!(proxy.bytes_down() < body_bytes + 2000);
        assert!(proxy.bytes_up() < 1000);

        // Keep-alive: two requests on one connection (curl reuses it within one run).
        let (out_a, out_b) = (dir.path().join("a"), dir.path().join("b"));
        let o = Command::new("curl")
            .args(["-s", "-S", "-o"])
            .arg(&out_a)
            .arg(proxy.url("f.bin"))
            .arg("-o")
            .arg(&out_b)
            .arg(proxy.url("f.bin"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        assert!(std::fs::read(&out_a).unwrap() == data);
        assert!(std::fs::read(&out_b).unwrap() == data);
        assert_eq!(proxy.connections(), 4);
        assert_eq!(proxy.requests(), 5);
    }

    #[test]
    fn reset_after_up_cuts_a_request_body() {
        let (srv, _) = server(MIB, 3);
        let proxy = FaultProxy::start_blocking(
            srv.addr(),
            ProxyFaults {
                reset_after_up: Some((200_000, 200_000)),
                ..Default::default()
            },
        );
        // An upload-sized body: the proxy passes 200 000 bytes (head included), then resets.
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body");
        std::fs::write(&body, vec![7u8; 1_000_000]).unwrap();
        let o = Command::new("curl")
            .args(["-s", "-S", "-o", "/dev/null", "-X", "PUT", "--data-binary"])
            .arg(format!("@{}", body.display()))
            .arg(proxy.url("f.bin"))
            .output()
            .unwrap();
        assert!(!o.status.success(), "the upload is cut off");
        assert!(wait_until(Duration::from_secs(10), || proxy.resets() == 1));
        assert_eq!(proxy.bytes_up(), 200_000);
    }

    #[test]
    fn reset_after_aborts_the_connection() {
        let (srv, data) = server(4 * MIB, 2);
        let proxy = FaultProxy::start_blocking(
            srv.addr(),
            ProxyFaults {
                reset_after: Some((300_000, 100_000)),
                ..Default::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (ok, status, body) = curl(&proxy.url("f.bin"), &[], &out);
        assert!(!ok, "curl should fail on the reset");
        assert_eq!(status, 200);
        assert!(body.len() < 300_000, "{}", body.len());
        assert!(body[..] == data[..body.len()]);
        assert_eq!(proxy.resets(), 1);
        let down = proxy.bytes_down();
        assert!((100_000..=300_000).contains(&down), "bytes_down {down}");

        // A response shorter than the reset point is not reset.
        let (ok, status, body) = curl(&proxy.url("f.bin"), &["-r", "0-999"], &out);
        assert!(ok && status == 206 && body == data[..1000]);
        assert_eq!(proxy.resets(), 1);

        // Faults off for new connections.
        proxy.set_faults(ProxyFaults::default());
        let (ok, _, body) = curl(&proxy.url("f.bin"), &[], &out);
        assert!(ok && body == data);
        assert_eq!(proxy.resets(), 1);
    }

    #[test]
    fn fail_first_is_answered_by_the_proxy() {
        let (srv, data) = server(100_000, 3);
        let proxy = FaultProxy::start_blocking(
            srv.addr(),
            ProxyFaults {
                fail_first: 2,
                fail_status: 429,
                retry_after: Some(7),
                ..Default::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let headers = dir.path().join("headers");
        for _ in 0..2 {
            let (ok, status, _) = curl(
                &proxy.url("f.bin"),
                &["-D", headers.to_str().unwrap()],
                &out,
            );
            assert!(ok);
            assert_eq!(status, 429);
            let h = std::fs::read_to_string(&headers).unwrap();
            assert!(h.contains("Retry-After: 7\r\n"), "{h}");
            assert!(h.contains("Connection: close\r\n"), "{h}");
        }
        assert_eq!(srv.request_count(), 0, "failed requests are not forwarded");
        assert_eq!(srv.connection_count(), 0, "nor is a connection opened");
        let (ok, status, body) = curl(&proxy.url("f.bin"), &[], &out);
        assert!(ok && status == 200 && body == data);
        assert_eq!(
            (proxy.requests(), proxy.failed(), srv.request_count()),
            (3, 2, 1)
        );
        let up = |proxy: &FaultProxy| proxy.bytes_up() as usize;
        let sent = {
            let r = &srv.requests()[0];
            // What curl sent: the request line and headers the server saw.
            let mut n = format!("GET {} HTTP/1.1\r\n", r.path).len() + 2;
            for (name, value) in &r.headers {
                n += name.len() + 2 + value.len() + 2;
            }
            n
        };
        wait_until(Duration::from_secs(10), || up(&proxy) == sent);
        assert_eq!(up(&proxy), sent);

        // On a kept-alive connection: the second request is answered by the proxy (default
        // status 503), after the first was forwarded.
        let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
        let req = b"GET /f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n";
        s.write_all(req).unwrap();
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(body, &data[..10]);
        proxy.set_faults(ProxyFaults {
            fail_first: 1,
            ..Default::default()
        });
        s.write_all(req).unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the proxy closes after its answer");
        assert_eq!(srv.request_count(), 2);
    }

    #[test]
    fn stall_first_n_stalls_exactly_at_the_point() {
        let (srv, data) = server(MIB, 4);
        let proxy = FaultProxy::start_blocking(
            srv.addr(),
            ProxyFaults {
                stall_after: Some(65_536),
                stall_first_n: 1,
                ..Default::default()
            },
        );
        let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
        s.write_all(b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || proxy.stalls() == 1),
            "no stall"
        );
        assert_eq!(proxy.bytes_down(), 65_536);
        // The client still has an open connection; it reads exactly the stall point's bytes.
        let mut got = vec![0u8; 65_536];
        s.read_exact(&mut got).unwrap();
        let head_end = find(&got, b"\r\n\r\n").unwrap() + 4;
        assert!(got[head_end..] == data[..65_536 - head_end]);

        // The budget is used up: the next connection gets everything.
        let dir = tempfile::tempdir().unwrap();
        let (ok, _, body) = curl(&proxy.url("f.bin"), &[], &dir.path().join("o"));
        assert!(ok && body == data);
        assert_eq!(proxy.stalls(), 1);
        drop(s);
    }

    #[test]
    fn throttles_keep_bytes_intact() {
        let (srv, data) = server(MIB + 3, 5);
        let proxy = FaultProxy::start_blocking(
            srv.addr(),
            ProxyFaults {
                slow_start: Some((100_000, 2_000_000)),
                rate_per_conn: Some(16_000_000),
                ..Default::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let (ok, status, body) = curl(&proxy.url("f.bin"), &[], &dir.path().join("o"));
        assert!(ok && status == 200 && body == data);
    }

    #[test]
    fn upload_bodies_pass_and_unreachable_upstream_gets_502() {
        let (srv, _) = server(10, 6);
        let proxy = FaultProxy::start_blocking(srv.addr(), ProxyFaults::default());
        let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
        let body = b"GET /f.bin HTTP/1.1\r\n\r\n".repeat(1000);
        let mut req = format!(
            "PUT /f.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req.extend_from_slice(b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(&req).unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(proxy.requests(), 2);
        assert_eq!(srv.request_count(), 2);
        let want = req.len() as u64;
        wait_until(Duration::from_secs(10), || proxy.bytes_up() == want);
        assert_eq!(proxy.bytes_up(), want);

        // Nothing listens upstream.
        let port = crate::util::free_port();
        let dead = FaultProxy::start_blocking(
            SocketAddr::from(([127, 0, 0, 1], port)),
            ProxyFaults::default(),
        );
        let dir = tempfile::tempdir().unwrap();
        let (ok, status, _) = curl(&dead.url("x"), &[], &dir.path().join("o"));
        assert!(ok && status == 502);
    }
}
