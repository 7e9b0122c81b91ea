//! `ferry get`: turns the arguments into download jobs (mirrors, lists, output names), runs
//! them `-j` at a time with one shared rate limit, and handles Ctrl-C as a clean pause.

use crate::cli::GetArgs;
use crate::outcome::{self, Command, Ending, exit_code};
use crate::progress::{Mode, Reporter};
use ferry_core::limits::parse_size;
use ferry_core::source::RedirectPolicy;
use ferry_core::{Download, Error, Expected, Output, RateLimiter};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One file to fetch: its URLs (mirrors) and where it goes.
#[derive(Debug)]
struct Job {
    urls: Vec<String>,
    output: Output,
}

pub async fn run(args: GetArgs) -> u8 {
    let reporter = Reporter::new(Mode::choose(args.json, args.quiet));
    let downloads = match plan_jobs(&args, &reporter) {
        Ok(d) => d,
        Err(msg) => {
            reporter.error(0, "", &msg, false);
            return exit_code(Ending::Usage);
        }
    };
    let cancel = CancellationToken::new();
    tokio::spawn(crate::signals::cancel_on_stop(cancel.clone()));

    let jobs = args.jobs.max(1);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut handles = Vec::new();
    for (i, d) in downloads.into_iter().enumerate() {
        let sem = semaphore.clone();
        let cancel = cancel.clone();
        let reporter = reporter.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let name = d
                .known_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let r = d.run(cancel).await;
            match &r {
                // A pause is reported once for the whole run (below), except to scripts.
                Err(e @ Error::Cancelled) => {
                    reporter.paused(i, &name, &outcome::message(Command::Get, e))
                }
                Err(e) => reporter.error(
                    i,
                    &name,
                    &outcome::message(Command::Get, e),
                    e.is_resumable(),
                ),
                Ok(_) => {}
            }
            r
        }));
    }
    // The run ends as its worst job: interrupted (3) over failed (1) over done (0).
    let mut code = exit_code(Ending::Done);
    let mut paused = false;
    for h in handles {
        let job = match h.await {
            Ok(Ok(_)) => exit_code(Ending::Done),
            Ok(Err(e)) => {
                paused |= matches!(e, Error::Cancelled);
                exit_code(Ending::Engine(&e))
            }
            Err(_) => exit_code(Ending::Failed),
        };
        code = code.max(job);
    }
    // Only a download that saved progress is promised a resume (one without ranges said so).
    if paused {
        reporter.note(outcome::PAUSED);
    }
    code
}

/// Validates the arguments and builds one `Download` per file.
fn plan_jobs(args: &GetArgs, reporter: &Reporter) -> Result<Vec<Download>, String> {
    let connections = match args.connections.as_str() {
        "auto" => 8,
        n => match n.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => n,
            _ => {
                return Err(format!(
                    "invalid -x {n:?}: give a number from 1 to 1024, or 'auto'"
                ));
            }
        },
    };
    let limiter = match &args.limit_rate {
        Some(r) => Some(Arc::new(RateLimiter::new(parse_size(r).ok_or_else(
            || format!("invalid --limit-rate {r:?}: use e.g. 500K, 20M, 1G"),
        )?))),
        None => None,
    };
    let checksum = args
        .checksum
        .as_deref()
        .map(Expected::parse_spec)
        .transpose()
        .map_err(|e| format!("--checksum: {e}"))?;
    let positive = |s: f64| s > 0.0 && s.is_finite();
    if !positive(args.read_timeout) || !positive(args.connect_timeout) {
        return Err("timeouts must be positive numbers of seconds".into());
    }
    let headers = crate::cli::parse_headers(&args.headers)?;
    let tls = crate::cli::tls_choice(args.cacert.as_deref(), args.insecure)?;

    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut jobs = Vec::new();
    if let Some(list) = &args.input {
        for urls in read_list(list)? {
            jobs.push(Job {
                urls,
                output: Output::Dir(dir.clone()),
            });
        }
    }
    match &args.output {
        Some(out) => {
            if args.urls.is_empty() {
                return Err("-o needs at least one URL".into());
            }
            let path = match &args.dir {
                Some(d) if out.is_relative() => d.join(out),
                _ => out.clone(),
            };
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
                && !parent.is_dir()
            {
                return Err(format!(
                    "-o {}: the folder {} does not exist",
                    path.display(),
                    parent.display()
                ));
            }
            if path.is_dir() {
                return Err(format!(
                    "-o {}: is a directory; use -d to download into a directory",
                    path.display()
                ));
            }
            jobs.push(Job {
                urls: args.urls.clone(),
                output: Output::File(path),
            });
        }
        None => jobs.extend(args.urls.iter().map(|u| Job {
            urls: vec![u.clone()],
            output: Output::Dir(dir.clone()),
        })),
    }
    if jobs.is_empty() {
        return Err("nothing to download: give URLs or -i LIST (see ferry get --help)".into());
    }
    if checksum.is_some() && jobs.len() > 1 {
        return Err("--checksum applies to one file; give one URL (or mirrors with -o)".into());
    }

    jobs.into_iter()
        .enumerate()
        .map(|(i, job)| {
            let mut b = Download::builder()
                .output(job.output)
                .connections(connections)
                .retries(args.retries)
                .restart(args.restart)
                .no_restart(args.no_restart)
                .read_timeout(Duration::from_secs_f64(args.read_timeout))
                .connect_timeout(Duration::from_secs_f64(args.connect_timeout))
                .redirects(RedirectPolicy {
                    follow: true,
                    max: args.max_redirs,
                    trusted: args.location_trusted,
                    allow_downgrade: args.allow_http_redirect,
                });
            for u in job.urls {
                b = b.url(u);
            }
            for (n, v) in &headers {
                b = b.header(n, v).map_err(|e| e.to_string())?;
            }
            if let Some(l) = &limiter {
                b = b.rate_limiter(l.clone());
            }
            if let Some(t) = &tls {
                b = b.tls(t.clone());
            }
            if let Some(c) = &checksum {
                b = b.checksum(c.clone());
            }
            b.events(reporter.sink(i))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Reads `-i LIST`: one file per line, mirrors separated by tabs.
fn read_list(path: &PathBuf) -> Result<Vec<Vec<String>>, String> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| format!("cannot read the list {}: {e}", path.display()),
        )?))
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| format!("cannot read the list {}: {e}", path.display()))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            line.split('\t')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        );
    }
    Ok(out)
}
