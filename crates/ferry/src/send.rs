//! `ferry send`: hashes what is shared (showing progress), binds, prints the ticket as the first
//! line of stdout, and serves until Ctrl-C or SIGTERM.

use crate::cli::SendArgs;
use crate::outcome::{Ending, exit_code};
use ferry_core::RateLimiter;
use ferry_core::limits::parse_size;
use ferry_p2p::send::{Sender, Share};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub async fn run(args: SendArgs) -> u8 {
    let limiter = match args.limit_rate.as_deref().map(parse_size) {
        None => None,
        Some(Some(r)) => Some(Arc::new(RateLimiter::new(r))),
        Some(None) => {
            eprintln!("ferry send: invalid --limit-rate: use e.g. 500K, 20M");
            return exit_code(Ending::Usage);
        }
    };
    let quiet = args.quiet;
    let paths = args.paths.clone();
    let started = Instant::now();
    let shown = Arc::new(AtomicU64::new(0));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let share = tokio::task::spawn_blocking(move || {
        Share::build(&paths, &move |hashed, total| {
            if quiet {
                return;
            }
            // On a terminal one line counts up in place; in a file, a line every 25 %.
            let steps = if terminal { 100 } else { 4 };
            let step = hashed * steps / total.max(1);
            if shown.fetch_max(step, Ordering::Relaxed) < step {
                let pct = step * 100 / steps;
                if terminal {
                    let end = if step == steps { "\n" } else { "" };
                    eprint!("\rferry send: hashing {pct}%{end}");
                } else {
                    eprintln!("ferry send: hashing {pct}%");
                }
            }
        })
    })
    .await;
    let share = match share {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("ferry send: {e}");
            return exit_code(Ending::Failed);
        }
        Err(e) => {
            eprintln!("ferry send: hashing failed: {e}");
            return exit_code(Ending::Failed);
        }
    };
    let files = share.files.iter().filter(|f| f.is_some()).count();
    let total = share.manifest.total_bytes();
    let sender = match Sender::bind(share, &args.listen, limiter).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry send: {e}");
            return exit_code(Ending::Failed);
        }
    };
    // The ticket is the first line of stdout, alone, flushed at once (scripts read it).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", sender.ticket().encode());
    let _ = out.flush();
    drop(out);
    if !quiet {
        let addrs: Vec<String> = sender
            .ticket()
            .addrs
            .iter()
            .map(|a| a.to_string())
            .collect();
        eprintln!(
            "ferry send: {files} file(s), {total} bytes, hashed in {:.1}s; serving on port {} ({}).",
            started.elapsed().as_secs_f64(),
            sender.ticket().port,
            addrs.join(", ")
        );
        eprintln!(
            "ferry send: on the other machine run: ferry recv <the ticket above>  (Ctrl-C here stops)"
        );
    }
    let served = sender.serve(crate::signals::stop_requested()).await;
    if !quiet {
        eprintln!("ferry send: stopped after serving {served} bytes");
    }
    exit_code(Ending::Done)
}
