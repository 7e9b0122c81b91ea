//! Command-line syntax (clap): the commands, their flags and help texts with examples.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Move large files fast over many connections; never lose work to an interruption.",
    after_help = "Run 'ferry <command> --help' for a command's options and examples."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download files over many connections; rerun the same command to resume.
    #[command(after_help = GET_EXAMPLES)]
    Get(GetArgs),
    /// Show what a resume journal says: source, validators, done and missing bytes.
    Status(StatusArgs),
    /// Upload files to a tus server over many connections; rerun the same command to resume.
    #[command(after_help = PUT_EXAMPLES)]
    Put(PutArgs),
    /// Share files or folders directly with another machine: prints a ticket, then serves.
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// Receive what `ferry send` shares, from one or more senders (one ticket each).
    #[command(after_help = RECV_EXAMPLES)]
    Recv(RecvArgs),
    /// Serve a directory: downloads with full Range support and resumable (tus) uploads.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
}

const PUT_EXAMPLES: &str = "\
Examples:
  ferry put big.iso http://host:8080/uploads/ --token T
      4 connections (parallel partial uploads) when the server supports concatenation
  ferry put -x 8 --chunk-size 16M a.bin b.bin http://host:8080/uploads/
      several files, one after the other, 8 connections each
  ferry put -r photos/ http://host:8080/uploads/ --token T
      a folder, keeping its relative paths (photos/2026/a.jpg)
  ferry put --name new.iso --overwrite big.iso URL
      upload under another name, replacing what the server has
  ferry put --protocol ietf big.iso http://host:8080/uploads/
      speak the IETF draft (Resumable Uploads for HTTP) instead of tus

Every PATCH carries a checksum (the strongest the server offers). Progress is kept in the
server's offsets and a small journal in ~/.local/share/ferry/uploads: rerun the same command
after Ctrl-C, a crash or a network failure and it continues where it stopped.
Exit codes: 0 done, 1 failed, 2 usage error, 3 interrupted (rerun to resume).";

const SEND_EXAMPLES: &str = "\
Examples:
  ferry send big.iso
      prints a ticket as the first line of stdout; give it to the receiver
  ferry send photos/ notes.txt --listen 0.0.0.0:7000 --limit-rate 20M

The content is hashed first (BLAKE3 per piece, all cores). The transfer is encrypted (TLS with a
fresh certificate whose fingerprint is in the ticket) and needs the ticket's token. Several
machines sending the same content give tickets a receiver can use together. Ctrl-C stops.";

const RECV_EXAMPLES: &str = "\
Examples:
  ferry recv ferry1abc...
      fetch into the current directory (a folder arrives as ./<folder>/...)
  ferry recv -d downloads -x 16 TICKET_FROM_A TICKET_FROM_B
      the same content from two senders at once

Every piece is verified against the sender's manifest; a sender whose bytes fail is dropped.
Rerun the same command to resume. Exit codes: 0 done, 1 failed, 2 usage error, 3 interrupted.";

const SERVE_EXAMPLES: &str = "\
Examples:
  ferry serve ~/share
      serve on 127.0.0.1:8080 with a generated token (printed at start)
  ferry serve ~/share --listen 0.0.0.0:8080 --users users.txt
      every user (one 'NAME TOKEN' per line) has their own uploads and files
  ferry serve . --public --max-upload-size 10G --upload-expiry 2h --quota 20G
      anyone may upload new files (never replace one); unfinished uploads hold at most 20G

URLs: /files/<path> downloads (Range, If-Range, ETag), /uploads/ is the tus 1.0 endpoint,
/ is the upload page with the listing, /metrics has Prometheus counters. Send the token as
'Authorization: Bearer TOKEN', or as ?token=TOKEN in a browser link.
Uploads are staged in DIR/.ferry and land at their metadata 'filename' (or 'path') when complete;
an existing file is replaced only when the upload's metadata has overwrite=true and the user
landed that file or is an admin ('NAME TOKEN admin' in the users file).
Several instances can serve one (shared) DIR behind a load balancer with --store redis://HOST:PORT/0.";

#[derive(Args, Debug)]
#[command(override_usage = "ferry put [OPTIONS] <FILE>... <URL>")]
pub struct PutArgs {
    /// Files (or folders with -r) to upload, then the tus endpoint URL, e.g.
    /// http://host:8080/uploads/ for `ferry serve` (options may come anywhere).
    #[arg(required = true, value_name = "FILE... URL")]
    pub args: Vec<String>,

    /// Connections per file (parallel partial uploads, when the server supports them).
    #[arg(
        short = 'x',
        long = "connections",
        value_name = "N",
        default_value_t = 4
    )]
    pub connections: usize,

    /// Sent as 'Authorization: Bearer TOKEN'.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FERRY_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Extra request header, e.g. -H 'X-Api-Key: k' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'Name: value'")]
    pub headers: Vec<String>,

    /// Bytes per request, each with its own checksum (e.g. 8M). Default: 1/16 of a part, 1-32 MiB.
    #[arg(long = "chunk-size", value_name = "SIZE")]
    pub chunk_size: Option<String>,

    /// Cap the total speed, e.g. 500K, 20M (bytes per second).
    #[arg(long = "limit-rate", value_name = "RATE")]
    pub limit_rate: Option<String>,

    /// The name on the server (one file only); default: the file's name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Replace a file of the same name on the server.
    #[arg(long)]
    pub overwrite: bool,

    /// Trust the server certificates signed by (or equal to) the certificates in this PEM file,
    /// instead of the system's authorities.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,

    /// Do not verify the server's certificate (the connection is encrypted, the server unproven).
    #[arg(short = 'k', long)]
    pub insecure: bool,

    /// Upload folders, keeping their relative paths.
    #[arg(short = 'r', long = "recursive")]
    pub recursive: bool,

    /// The upload protocol: tus (1.0, parallel parts) or ietf ("Resumable Uploads for HTTP",
    /// the IETF draft's final text: one connection per file).
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value_t = PutProtocol::Tus)]
    pub protocol: PutProtocol,

    /// Attempts in a row without progress before giving up.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Print one JSON event per line on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The protocols `ferry put` speaks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutProtocol {
    /// tus 1.0.
    Tus,
    /// The IETF resumable-upload draft (final text).
    Ietf,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Files and folders to send.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Address to listen on (default: every interface, a free port).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub listen: String,

    /// Cap the total sending speed, e.g. 500K, 20M (bytes per second).
    #[arg(long = "limit-rate", value_name = "RATE")]
    pub limit_rate: Option<String>,

    /// Print nothing but the ticket and errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RecvArgs {
    /// Tickets printed by `ferry send`; several for the same content are several senders.
    #[arg(required = true, value_name = "TICKET")]
    pub tickets: Vec<String>,

    /// Directory to receive into.
    #[arg(short = 'd', long = "dir", value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// Connections per file, spread over the senders.
    #[arg(
        short = 'x',
        long = "connections",
        value_name = "N",
        default_value_t = 8
    )]
    pub connections: usize,

    /// Refuse a sender's content list larger than this (e.g. 64M, 1G).
    #[arg(
        long = "max-manifest-size",
        value_name = "SIZE",
        default_value = "256M"
    )]
    pub max_manifest_size: String,

    /// Refuse a sender's content list of more files and folders than this.
    #[arg(long = "max-entries", value_name = "N", default_value_t = 1_000_000)]
    pub max_entries: usize,

    /// Print one JSON event per line on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The directory to serve (and to receive uploads into), or s3://BUCKET[/PREFIX] for an
    /// S3-compatible bucket (endpoint, region and credentials from the AWS_* environment
    /// variables and AWS config files; AWS_ENDPOINT_URL for other servers than AWS).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// With s3://: the local directory for the embedded state store and the spool of parts in
    /// flight. Default: $XDG_STATE_HOME/ferry/s3/BUCKET[/PREFIX] (~/.local/state/… without it).
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Address to listen on; anything but loopback exposes the server to the network.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// One user with this token.
    #[arg(long, value_name = "TOKEN", group = "auth")]
    pub token: Option<String>,

    /// Users file: one 'NAME TOKEN' per line ('NAME TOKEN admin': may replace any file), '#'
    /// comments.
    #[arg(long, value_name = "FILE", group = "auth")]
    pub users: Option<PathBuf>,

    /// No authentication: anyone who can connect may download and upload.
    #[arg(long, group = "auth")]
    pub public: bool,

    /// Refuse uploads larger than this (e.g. 10G).
    #[arg(long = "max-upload-size", value_name = "SIZE")]
    pub max_upload_size: Option<String>,

    /// Delete unfinished uploads this long after their last write (e.g. 90s, 30m, 24h, 7d).
    #[arg(long = "upload-expiry", value_name = "DURATION", default_value = "24h")]
    pub upload_expiry: String,

    /// Keep upload state in Redis, shared by every instance serving the same DIR behind a load
    /// balancer: redis://[USER:PASSWORD@]HOST:PORT/DB (or rediss:// for TLS). Default: an
    /// embedded database in DIR/.ferry (one instance).
    #[arg(long, value_name = "URL", env = "FERRY_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Close a connection that has not sent a request's headers within this time (also an idle
    /// kept-alive HTTP/1 connection waiting for its next request).
    #[arg(
        long = "header-timeout",
        value_name = "DURATION",
        default_value = "60s"
    )]
    pub header_timeout: String,

    /// Close a connection on which nothing moved for this long while no request was being
    /// handled (an idle HTTP/2 connection, a client that stopped reading a download).
    #[arg(
        long = "keepalive-timeout",
        value_name = "DURATION",
        default_value = "75s"
    )]
    pub keepalive_timeout: String,

    /// Serve at most this many connections at once; more wait until one closes. Default:
    /// derived from the open-file limit, at most 4096.
    #[arg(long = "max-connections", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Per-user quota of bytes that unfinished uploads reserve or stage (e.g. 50G), or 'off'.
    #[arg(long, value_name = "SIZE", default_value = "1T")]
    pub quota: String,

    /// Per-user limit on unfinished uploads, or 'off'.
    #[arg(long = "quota-uploads", value_name = "N", default_value = "1000")]
    pub quota_uploads: String,
}

const GET_EXAMPLES: &str = "\
Examples:
  ferry get https://example.com/big.iso
      download into the current directory with 8 connections
  ferry get -x 16 -o big.iso https://a.example/big.iso https://b.example/big.iso
      one file from two mirrors over 16 connections
  ferry get -i urls.txt -d downloads -j 4
      a list (one URL per line; tab-separated mirrors), 4 files at a time
  ferry get --checksum sha-256=9f86d08... --limit-rate 20M URL
      verify the result, cap the total speed at 20 MiB/s
  ferry get --json URL | jq .
      one JSON event per line (start, progress, retry, warning, done, error)
  ferry get --cacert server.pem https://myhost:8443/files/big.iso
      trust a self-signed server certificate (or a private CA); --insecure skips the check

Exit codes: 0 done and verified, 1 failed, 2 usage error, 3 interrupted (rerun to resume).
Ctrl-C pauses: progress is saved in <name>.ferry next to <name>.part (a server without byte
ranges cannot resume: a rerun starts over). A <name>.part or <name>.ferry that ferry did not
make is never touched: the download stops and says so.
Redirects: -H headers and credentials go only to the URL's own scheme, host and port unless
--location-trusted; no Referer is sent; https to http is refused unless --allow-http-redirect.";

#[derive(Args, Debug)]
pub struct GetArgs {
    /// URLs to download. With -o they are mirrors of one file; without, separate files.
    pub urls: Vec<String>,

    /// Save to this file (several URLs are then mirrors of it).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        conflicts_with = "input"
    )]
    pub output: Option<PathBuf>,

    /// Save into this directory, under the name the server or URL gives.
    #[arg(short = 'd', long = "dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Connections per file: a number, or 'auto' (8).
    #[arg(
        short = 'x',
        long = "connections",
        value_name = "N|auto",
        default_value = "auto"
    )]
    pub connections: String,

    /// Read URLs from this file ('-' for standard input): one file per line, mirrors separated
    /// by tabs; blank lines and lines starting with '#' are skipped.
    #[arg(short = 'i', long = "input-file", value_name = "LIST")]
    pub input: Option<PathBuf>,

    /// Files downloaded at the same time.
    #[arg(short = 'j', long = "jobs", value_name = "JOBS", default_value_t = 4)]
    pub jobs: usize,

    /// Verify the finished file: ALGO=HEX with ALGO sha-256, sha-512, sha-1, md5 or blake3.
    #[arg(long, value_name = "ALGO=HEX")]
    pub checksum: Option<String>,

    /// Cap the total speed, e.g. 500K, 20M, 1G (bytes per second).
    #[arg(long = "limit-rate", value_name = "RATE")]
    pub limit_rate: Option<String>,

    /// Extra request header, e.g. -H 'Authorization: Bearer T' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'Name: value'")]
    pub headers: Vec<String>,

    /// Trust the server certificates signed by (or equal to) the certificates in this PEM file,
    /// instead of the system's authorities.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,

    /// Do not verify the server's certificate (the connection is encrypted, the server unproven).
    #[arg(short = 'k', long)]
    pub insecure: bool,

    /// Attempts in a row without progress before a connection gives up.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Also send -H headers and the URL's user:password to the hosts redirects lead to (by
    /// default they go only to the scheme, host and port of the URL given).
    #[arg(long = "location-trusted")]
    pub location_trusted: bool,

    /// Follow a redirect from https to plain http (refused by default).
    #[arg(long = "allow-http-redirect")]
    pub allow_http_redirect: bool,

    /// Most redirects followed for one request.
    #[arg(long = "max-redirs", value_name = "N", default_value_t = 10)]
    pub max_redirs: u32,

    /// Discard any partial download (and an existing file) and start from zero.
    #[arg(long)]
    pub restart: bool,

    /// If the remote file changed since the partial download began, fail instead of starting over.
    #[arg(long = "no-restart", conflicts_with = "restart")]
    pub no_restart: bool,

    /// Seconds without receiving data before a connection is dropped and retried.
    #[arg(long = "read-timeout", value_name = "SECS", default_value_t = 30.0)]
    pub read_timeout: f64,

    /// Seconds to wait for a connection to open.
    #[arg(long = "connect-timeout", value_name = "SECS", default_value_t = 15.0)]
    pub connect_timeout: f64,

    /// Print one JSON event per line on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A file being downloaded (its name, its .part or its .ferry), or a directory.
    pub path: PathBuf,
}

/// `-H 'Name: value'` arguments as (name, value) pairs.
pub fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>, String> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("invalid header {h:?}: use 'Name: value'"))?;
            Ok((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

/// The TLS settings `--cacert FILE` or `--insecure` ask for (`None`: the system's authorities).
pub fn tls_choice(
    cacert: Option<&std::path::Path>,
    insecure: bool,
) -> Result<Option<ferry_core::source::CustomTls>, String> {
    match (cacert, insecure) {
        (Some(file), _) => ferry_core::tls::trust_ca_file(file)
            .map(Some)
            .map_err(|e| match e {
                ferry_core::Error::Usage(m) => m,
                other => format!("--cacert: {other}"),
            }),
        (None, true) => Ok(Some(ferry_core::tls::insecure())),
        (None, false) => Ok(None),
    }
}
