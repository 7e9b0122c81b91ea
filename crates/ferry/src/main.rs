//! The `ferry` binary: parses the command line, runs the command, and maps every outcome to one
//! exit code in one place ([`outcome::exit_code`]: 0 done and verified, 1 failed, 2 usage error,
//! 3 interrupted and resumable).

// A binary has no public API to document.
#![allow(missing_docs)]

mod cli;
mod get;
mod outcome;
mod progress;
mod put;
mod recv;
mod send;
mod serve;
mod signals;
mod status;

use clap::Parser;
use outcome::{Ending, exit_code};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Errors only unless FERRY_LOG asks for more; the TLS libraries' own error lines are
    // left out (a refused certificate becomes one plain sentence of ferry's).
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("error,rustls=off,rustls_platform_verifier=off")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code(Ending::Failed));
        }
    };
    let code = runtime.block_on(async {
        // A file size limit (ulimit -f) must end in a clear EFBIG error with the journal saved,
        // not in death by SIGXFSZ: listening for the signal replaces its default action.
        let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25));
        match cli.command {
            cli::Command::Get(args) => get::run(args).await,
            cli::Command::Status(args) => status::run(args),
            cli::Command::Serve(args) => serve::run(args).await,
            cli::Command::Put(args) => put::run(args).await,
            cli::Command::Send(args) => send::run(args).await,
            cli::Command::Recv(args) => recv::run(args).await,
        }
    });
    ExitCode::from(code)
}
