//! `ferry-fault`: fault injection on loopback for tests and benchmarks, as a process.
//!
//! ```text
//! ferry-fault proxy --upstream 127.0.0.1:8080 --reset-after 1m-6m      # resets in front of nginx
//! ferry-fault serve big.bin --reset-after 1m-6m --no-ranges            # a misbehaving file server
//! ferry-fault delay --upstream 127.0.0.1:8080 --rtt 40ms                # a 40 ms path, any bandwidth
//! ```
//!
//! Both print `listening on http://ADDR` as the first line of stdout, serve until SIGTERM or
//! SIGINT, then print one line of counters and exit 0. Sizes and rates take an optional
//! binary suffix: `512k`, `6m`, `1g` (also `6M`, `6MiB`); rates are bytes per second.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferry_testkit::delay::DelayProxy;
use ferry_testkit::fault::{FaultConfig, FaultServer, Faults};
use ferry_testkit::proxy::{FaultProxy, ProxyFaults};

#[derive(Parser, Debug)]
#[command(
    name = "ferry-fault",
    about = "Loopback fault injection for ferry's tests and benchmarks",
    after_help = "Examples:\n  \
        ferry-fault proxy --upstream 127.0.0.1:8080 --reset-after 1m-6m\n  \
        ferry-fault proxy --upstream 127.0.0.1:8080 --fail-first 3 --fail-status 429 --retry-after 1\n  \
        ferry-fault serve big.bin --listen 127.0.0.1:9000 --reset-after 2m-4m --no-ranges\n  \
        ferry-fault delay --upstream 127.0.0.1:8080 --rtt 40ms"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// A TCP proxy in front of a real HTTP server that resets, stalls, fails and throttles.
    Proxy(ProxyArgs),
    /// An in-process file server (ferry's FaultServer) that misbehaves on purpose; serves FILE
    /// at `/<file name>`.
    Serve(ServeArgs),
    /// A TCP relay that adds a fixed round-trip time (bandwidth unlimited), for benchmarks of
    /// real paths: HTTP/1.1, TLS, HTTP/2 and the peer protocol all pass through.
    Delay(DelayArgs),
}

#[derive(Args, Debug)]
struct DelayArgs {
    /// The server to forward to, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Round-trip time to add, e.g. `40ms`, `0.1s`, `100` (milliseconds).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    rtt: std::time::Duration,
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// The server to forward to, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Per connection, reset (RST) after a random number of downstream bytes in [LO, HI].
    #[arg(long, value_name = "LO-HI", value_parser = parse_range)]
    reset_after: Option<(u64, u64)>,
    /// Per connection, reset after a random number of upstream (upload) bytes in [LO, HI].
    #[arg(long, value_name = "LO-HI", value_parser = parse_range)]
    reset_after_up: Option<(u64, u64)>,
    /// Pass bytes through without parsing HTTP (for TLS upstreams such as `ferry send`).
    #[arg(long)]
    raw_tcp: bool,
    /// Per connection, stop forwarding after N downstream bytes (sockets stay open).
    #[arg(long, value_name = "N", value_parser = parse_size)]
    stall_after: Option<u64>,
    /// Only the first N connections that reach the stall point stall (0: all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    stall_first: u64,
    /// Answer the first N requests with --fail-status instead of forwarding them.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_first: u32,
    /// Status for --fail-first.
    #[arg(long, value_name = "CODE", default_value_t = 503)]
    fail_status: u16,
    /// Send Retry-After: SECS with the --fail-first answers.
    #[arg(long, value_name = "SECS")]
    retry_after: Option<u64>,
    /// Throttle the first BYTES downstream bytes of each connection to RATE bytes/s.
    #[arg(long, value_name = "BYTES:RATE", value_parser = parse_slow_start)]
    slow_start: Option<(u64, u64)>,
    /// Throttle each connection's downstream bytes to RATE bytes/s.
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    rate: Option<u64>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The file to serve (read into memory).
    file: PathBuf,
    /// Address to listen on (default: an ephemeral port on 127.0.0.1; another address puts
    /// a transparent proxy on it in front of the server).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Per response, reset (RST) after a random number of body bytes in [LO, HI].
    #[arg(long, value_name = "LO-HI", value_parser = parse_range)]
    reset_after: Option<(u64, u64)>,
    /// Ignore Range: always 200 with the whole body, no Accept-Ranges.
    #[arg(long)]
    no_ranges: bool,
    /// Send bodies chunked, without Content-Length (implies no ranges).
    #[arg(long)]
    no_content_length: bool,
    /// Send no ETag and no Last-Modified.
    #[arg(long)]
    no_validators: bool,
    /// Per response, stop sending after N body bytes (the socket stays open).
    #[arg(long, value_name = "N", value_parser = parse_size)]
    stall_after: Option<u64>,
    /// Only the first N responses that reach the stall point stall (0: all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    stall_first: u64,
    /// Answer the first N GET requests with --fail-status.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_first: u32,
    /// Status for --fail-first.
    #[arg(long, value_name = "CODE", default_value_t = 503)]
    fail_status: u16,
    /// Send Retry-After: SECS with the --fail-first answers.
    #[arg(long, value_name = "SECS")]
    retry_after: Option<u64>,
    /// Promise the full length but close cleanly after N body bytes.
    #[arg(long, value_name = "N", value_parser = parse_size)]
    truncate_at: Option<u64>,
    /// Throttle each response body to RATE bytes/s.
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    rate: Option<u64>,
}

/// `123`, `4k`, `6m`, `1g`, `1.5m`, `6MiB`, `20M` → bytes (binary multiples).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let stripped = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult) = match stripped.chars().last() {
        Some('k') => (&stripped[..stripped.len() - 1], 1u64 << 10),
        Some('m') => (&stripped[..stripped.len() - 1], 1 << 20),
        Some('g') => (&stripped[..stripped.len() - 1], 1 << 30),
        _ => (stripped, 1),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too large"));
    }
    match num.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok((f * mult as f64).round() as u64),
        _ => Err(format!(
            "{s:?} is not a size (examples: 65536, 512k, 6m, 1g)"
        )),
    }
}

/// `40ms`, `0.1s`, `2s`, or a bare number of milliseconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(secs) = t.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (t, 1e-3)
    };
    match num.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 && f * scale < 3600.0 => {
            Ok(std::time::Duration::from_secs_f64(f * scale))
        }
        _ => Err(format!("{s:?} is not a time (examples: 40ms, 0.1s, 100)")),
    }
}

/// `LO-HI` or a single `N` (= `N-N`).
fn parse_range(s: &str) -> Result<(u64, u64), String> {
    match s.split_once('-') {
        Some((lo, hi)) => Ok((parse_size(lo)?, parse_size(hi)?)),
        None => parse_size(s).map(|n| (n, n)),
    }
}

/// `BYTES:RATE`.
fn parse_slow_start(s: &str) -> Result<(u64, u64), String> {
    let (bytes, rate) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not BYTES:RATE (example: 1m:100k)"))?;
    Ok((parse_size(bytes)?, parse_size(rate)?))
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

async fn run_proxy(a: ProxyArgs) -> Result<(), String> {
    let upstream = a
        .upstream
        .to_socket_addrs()
        .map_err(|e| format!("--upstream {}: {e}", a.upstream))?
        .next()
        .ok_or_else(|| format!("--upstream {}: resolves to no address", a.upstream))?;
    let faults = ProxyFaults {
        reset_after: a.reset_after,
        reset_after_up: a.reset_after_up,
        raw_tcp: a.raw_tcp,
        stall_after: a.stall_after,
        stall_first_n: a.stall_first,
        fail_first: a.fail_first,
        fail_status: a.fail_status,
        retry_after: a.retry_after,
        slow_start: a.slow_start,
        rate_per_conn: a.rate,
    };
    let proxy = FaultProxy::bind(a.listen, upstream, faults)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    announce(proxy.addr());
    shutdown_signal().await;
    println!(
        "bytes_down={} bytes_up={} connections={} resets={}",
        proxy.bytes_down(),
        proxy.bytes_up(),
        proxy.connections(),
        proxy.resets()
    );
    Ok(())
}

async fn run_delay(a: DelayArgs) -> Result<(), String> {
    let upstream = a
        .upstream
        .to_socket_addrs()
        .map_err(|e| format!("--upstream {}: {e}", a.upstream))?
        .next()
        .ok_or_else(|| format!("--upstream {}: resolves to no address", a.upstream))?;
    let proxy = DelayProxy::bind(a.listen, upstream, a.rtt)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    announce(proxy.addr());
    shutdown_signal().await;
    println!("connections={}", proxy.connections());
    Ok(())
}

async fn run_serve(a: ServeArgs) -> Result<(), String> {
    let data = std::fs::read(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    let name = a
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: no usable file name", a.file.display()))?
        .to_string();
    let faults = Faults {
        no_ranges: a.no_ranges,
        no_content_length: a.no_content_length,
        no_validators: a.no_validators,
        reset_after: a.reset_after,
        stall_after: a.stall_after,
        stall_first_n: a.stall_first,
        fail_first: a.fail_first,
        fail_status: a.fail_status,
        retry_after: a.retry_after,
        truncate_at: a.truncate_at,
        rate_per_conn: a.rate,
        ..Default::default()
    };
    let server = FaultServer::start(FaultConfig {
        files: vec![(name, data)],
        faults,
    })
    .await;
    let front = match a.listen {
        Some(listen) if listen != server.addr() => Some(
            FaultProxy::bind(listen, server.addr(), ProxyFaults::default())
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?,
        ),
        _ => None,
    };
    announce(front.as_ref().map_or(server.addr(), FaultProxy::addr));
    shutdown_signal().await;
    println!(
        "body_bytes_sent={} requests={} connections={}",
        server.body_bytes_sent(),
        server.request_count(),
        server.connection_count()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Proxy(a) => run_proxy(a).await,
        Cmd::Serve(a) => run_serve(a).await,
        Cmd::Delay(a) => run_delay(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-fault: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ranges() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("6M"), Ok(6 << 20));
        assert_eq!(parse_size("6MiB"), Ok(6 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1.5m"), Ok(3 << 19));
        assert!(parse_size("fast").is_err());
        assert_eq!(parse_range("1m-6m"), Ok((1 << 20, 6 << 20)));
        assert_eq!(parse_range("100"), Ok((100, 100)));
        assert_eq!(parse_slow_start("1m:100k"), Ok((1 << 20, 100 << 10)));
        assert!(parse_slow_start("1m").is_err());
        assert_eq!(
            parse_duration("40ms"),
            Ok(std::time::Duration::from_millis(40))
        );
        assert_eq!(
            parse_duration("0.1s"),
            Ok(std::time::Duration::from_millis(100))
        );
        assert_eq!(
            parse_duration("100"),
            Ok(std::time::Duration::from_millis(100))
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1ms").is_err());
    }
}
