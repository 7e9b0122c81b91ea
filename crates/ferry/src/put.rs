//! `ferry put`: turns the arguments into uploads (files, folders with -r, a remote name),
//! runs them one after the other with one shared rate limit, and handles Ctrl-C as a pause.

use crate::cli::{PutArgs, PutProtocol};
use crate::outcome::{self, Command, Ending, exit_code};
use crate::progress::{Mode, Reporter};
use ferry_core::limits::parse_size;
use ferry_core::upload::{Protocol, Upload};
use ferry_core::{Error, RateLimiter, RetryPolicy};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One file to send and its name on the server.
struct Job {
    file: PathBuf,
    /// A relative path with folders (for -r), sent as metadata `path`.
    remote_path: Option<String>,
}

pub async fn run(args: PutArgs) -> u8 {
    let reporter = Reporter::new(Mode::choose(args.json, args.quiet));
    let uploads = match plan(&args) {
        Ok((u, empty)) => {
            for dir in empty {
                reporter.note(&format!(
                    "ferry put: {dir}: an empty folder, skipped (uploads carry files only)"
                ));
            }
            u
        }
        Err(msg) => {
            reporter.error(0, "", &msg, false);
            return exit_code(Ending::Usage);
        }
    };
    let cancel = CancellationToken::new();
    tokio::spawn(crate::signals::cancel_on_stop(cancel.clone()));
    let mut failed = false;
    for (i, (name, builder)) in uploads.into_iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let upload = match builder.events(reporter.sink(i)).build() {
            Ok(u) => u,
            Err(e) => {
                reporter.error(i, &name, &outcome::message(Command::Put, &e), false);
                return exit_code(Ending::Usage);
            }
        };
        match upload.run(cancel.clone()).await {
            Ok(_) => {}
            Err(e @ Error::Cancelled) => {
                reporter.paused(i, &name, &outcome::message(Command::Put, &e));
                reporter.note(outcome::PAUSED);
                return exit_code(Ending::Engine(&e));
            }
            Err(e) => {
                reporter.error(
                    i,
                    &name,
                    &outcome::message(Command::Put, &e),
                    e.is_resumable(),
                );
                failed = true;
            }
        }
    }
    if cancel.is_cancelled() {
        reporter.note(outcome::PAUSED);
        return exit_code(Ending::Interrupted);
    }
    exit_code(if failed { Ending::Failed } else { Ending::Done })
}

/// One upload per file, by its display name.
type Uploads = Vec<(String, ferry_core::upload::UploadBuilder)>;

/// Validates the arguments and builds one upload per file; also returns the empty folders
/// that -r met (nothing can carry them).
fn plan(args: &PutArgs) -> Result<(Uploads, Vec<String>), String> {
    let (url, paths) = match args.args.split_last() {
        Some((url, paths)) if !paths.is_empty() => (url, paths),
        _ => return Err("give the files to upload, then the tus endpoint URL".into()),
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "the last argument must be the tus endpoint URL (http:// or https://), got {url:?}"
        ));
    }
    if !(1..=64).contains(&args.connections) {
        return Err(format!(
            "invalid -x {}: give a number from 1 to 64",
            args.connections
        ));
    }
    let chunk = args
        .chunk_size
        .as_deref()
        .map(|c| parse_size(c).ok_or_else(|| format!("invalid --chunk-size {c:?}: use e.g. 8M")))
        .transpose()?;
    let limiter = args
        .limit_rate
        .as_deref()
        .map(|r| {
            parse_size(r)
                .map(|r| Arc::new(RateLimiter::new(r)))
                .ok_or_else(|| format!("invalid --limit-rate {r:?}: use e.g. 500K, 20M"))
        })
        .transpose()?;
    let headers = crate::cli::parse_headers(&args.headers)?;
    let tls = crate::cli::tls_choice(args.cacert.as_deref(), args.insecure)?;

    let mut jobs = Vec::new();
    let mut empty = Vec::new();
    for p in paths {
        let path = Path::new(p);
        let meta = std::fs::metadata(path).map_err(|e| format!("{p}: {e}"))?;
        if meta.is_dir() {
            if !args.recursive {
                return Err(format!(
                    "{p} is a folder; add -r to upload it with its contents"
                ));
            }
            let base = std::fs::canonicalize(path).map_err(|e| format!("{p}: {e}"))?;
            let top = base
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files = Vec::new();
            let mut empty_dirs = Vec::new();
            walk(&base, &mut files, &mut empty_dirs).map_err(|e| format!("{p}: {e}"))?;
            empty.extend(empty_dirs.iter().map(|d| {
                let rel = d.strip_prefix(&base).unwrap_or(d);
                Path::new(p).join(rel).display().to_string()
            }));
            files.sort();
            for f in files {
                let rel = f.strip_prefix(&base).expect("walked under base");
                let mut remote = top.clone();
                for c in rel.components() {
                    remote.push('/');
                    remote.push_str(&c.as_os_str().to_string_lossy());
                }
                jobs.push(Job {
                    file: f,
                    remote_path: Some(remote.trim_start_matches('/').to_string()),
                });
            }
        } else {
            jobs.push(Job {
                file: path.to_path_buf(),
                remote_path: None,
            });
        }
    }
    if args.name.is_some() && jobs.len() != 1 {
        return Err("--name needs exactly one file".into());
    }
    let retry = RetryPolicy {
        max_attempts: args.retries.max(1),
        ..Default::default()
    };
    let uploads = jobs
        .into_iter()
        .map(|job| {
            let mut b = Upload::builder(&job.file, url.as_str())
                .connections(args.connections)
                .overwrite(args.overwrite)
                .protocol(match args.protocol {
                    PutProtocol::Tus => Protocol::Tus,
                    PutProtocol::Ietf => Protocol::Ietf,
                })
                .retry(retry.clone());
            if let Some(t) = &args.token {
                b = b.token(t);
            }
            for (k, v) in &headers {
                b = b.header(k, v);
            }
            if let Some(t) = &tls {
                b = b.tls(t.clone());
            }
            if let Some(c) = chunk {
                b = b.chunk_size(c);
            }
            if let Some(l) = &limiter {
                b = b.limiter(l.clone());
            }
            if let Some(n) = &args.name {
                b = b.name(n);
            }
            if let Some(r) = &job.remote_path {
                b = b.remote_path(r);
            }
            (job.file.display().to_string(), b)
        })
        .collect();
    Ok((uploads, empty))
}

/// Every regular file under `dir` into `out`, and the folders without any into `empty`
/// (symlinks are not followed).
fn walk(dir: &Path, out: &mut Vec<PathBuf>, empty: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let before = out.len();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), out, empty)?;
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
    if out.len() == before && !empty.iter().any(|e| e.starts_with(dir)) {
        empty.push(dir.to_path_buf());
    }
    Ok(())
}
