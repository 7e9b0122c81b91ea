//! `ferry recv`: decodes the tickets (a damaged one is refused before any connection), then
//! receives the content from every sender with progress, and maps the outcome to an exit code.

use crate::cli::RecvArgs;
use crate::outcome::{self, Command, Ending, exit_code};
use crate::progress::{Mode, Reporter};
use ferry_core::{Error, RetryPolicy};
use ferry_p2p::manifest::ManifestLimits;
use ferry_p2p::recv::{Receive, RecvError};
use ferry_p2p::ticket::Ticket;
use tokio_util::sync::CancellationToken;

pub async fn run(args: RecvArgs) -> u8 {
    let reporter = Reporter::new(Mode::choose(args.json, args.quiet));
    let mut tickets = Vec::new();
    for (i, t) in args.tickets.iter().enumerate() {
        match Ticket::decode(t) {
            Ok(t) => tickets.push(t),
            Err(e) => {
                reporter.error(0, "", &format!("ticket {}: {e}", i + 1), false);
                return exit_code(Ending::Usage);
            }
        }
    }
    if !(1..=256).contains(&args.connections) {
        reporter.error(0, "", "invalid -x: give a number from 1 to 256", false);
        return exit_code(Ending::Usage);
    }
    let Some(max_bytes) = ferry_core::limits::parse_size(&args.max_manifest_size) else {
        reporter.error(
            0,
            "",
            "invalid --max-manifest-size: use e.g. 64M, 1G",
            false,
        );
        return exit_code(Ending::Usage);
    };
    let cancel = CancellationToken::new();
    tokio::spawn(crate::signals::cancel_on_stop(cancel.clone()));
    let mut receive = Receive::new(tickets, &args.dir);
    receive.connections = args.connections;
    receive.retry = RetryPolicy::default();
    receive.limits = ManifestLimits {
        max_bytes,
        max_entries: args.max_entries,
    };
    let sinks = reporter.clone();
    receive.events = Box::new(move |i| sinks.sink(i));
    let notes = reporter.clone();
    receive.note = Box::new(move |m| notes.note(&format!("ferry recv: {m}")));
    match receive.run(cancel.clone()).await {
        Ok(r) => {
            reporter.note(&format!(
                "ferry recv: {} file(s), {} folder(s), {} bytes from {} sender(s) into {}",
                r.files,
                r.dirs,
                r.bytes,
                r.peers,
                args.dir.display()
            ));
            exit_code(Ending::Done)
        }
        Err(RecvError::File {
            source: e @ Error::Cancelled,
            file,
        }) => {
            reporter.paused(0, &file, "interrupted");
            reporter.note(outcome::PAUSED);
            exit_code(Ending::Engine(&e))
        }
        Err(e) => {
            // A file's error ends with the engine's message: the advice follows it.
            let (ending, advice) = match &e {
                RecvError::File { source, .. } => (
                    Ending::Engine(source),
                    outcome::advice(Command::Recv, source),
                ),
                _ => (Ending::Failed, None),
            };
            let message = format!("{e}{}", advice.unwrap_or_default());
            reporter.error(0, "", &message, e.is_resumable());
            exit_code(ending)
        }
    }
}
