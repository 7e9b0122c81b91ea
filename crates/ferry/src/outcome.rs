//! How a command's outcome reaches the user, in one place: the exit code of every ending
//! (0 done and verified, 1 failed, 2 usage error, 3 interrupted and resumable) and the
//! command-line advice added to an engine error (the engine's messages say what happened; what
//! to type next depends on the command, and `recv` has neither `--restart` nor `-o`).

use ferry_core::Error;
use ferry_core::source::RedirectRefusal;

/// Exit codes of the command contract.
pub mod exit {
    /// Done (and verified).
    pub const OK: u8 = 0;
    /// Failed.
    pub const FAILED: u8 = 1;
    /// The command line is wrong; nothing ran.
    pub const USAGE: u8 = 2;
    /// Interrupted (Ctrl-C, SIGTERM); progress is saved and a rerun resumes.
    pub const INTERRUPTED: u8 = 3;
}

/// The transfer command that is running (the ones that meet engine errors): advice names only
/// the options it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `ferry get`.
    Get,
    /// `ferry put`.
    Put,
    /// `ferry recv`.
    Recv,
}

/// How a command ended.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// Everything asked for is done.
    Done,
    /// Bad arguments, found before anything ran.
    Usage,
    /// Stopped by Ctrl-C or SIGTERM with progress saved.
    Interrupted,
    /// An engine error stopped it (an interruption is [`Error::Cancelled`]).
    Engine(&'a Error),
    /// Any other failure.
    Failed,
}

/// The one map from how a command ended to its exit code.
pub fn exit_code(ending: Ending<'_>) -> u8 {
    match ending {
        Ending::Done => exit::OK,
        Ending::Usage => exit::USAGE,
        Ending::Interrupted | Ending::Engine(Error::Cancelled | Error::CancelledWithoutResume) => {
            exit::INTERRUPTED
        }
        Ending::Engine(_) | Ending::Failed => exit::FAILED,
    }
}

/// The note people get once when a command was paused.
pub const PAUSED: &str = "Paused. Progress is saved; rerun the same command to resume.";

/// What to do about `error`, for someone who ran `command`: text to append to the error's
/// message (starting with its own separator), or `None` when there is nothing to add.
pub fn advice(command: Command, error: &Error) -> Option<&'static str> {
    use Command::{Get, Put, Recv};
    Some(match (command, error) {
        (_, Error::Cancelled) => ", rerun the same command to resume",
        (_, Error::RetriesExhausted { .. }) => ". Rerun the same command to resume.",
        (_, Error::Network { .. }) => "; rerun to resume",
        (_, Error::Unreachable { .. }) => "; check the address and the network, then rerun",
        (_, Error::DiskFull { .. }) => {
            "; free some space and rerun the same command to resume (progress is saved)"
        }
        (_, Error::NoSpaceForFile { .. }) => "; free some space and rerun the same command",
        (Get, Error::InTheWay { .. }) => {
            "; move it away (it is not ferry's), or save under another name with -o"
        }
        (Recv, Error::InTheWay { .. }) => {
            "; move it away (it is not ferry's), or receive into another folder with -d"
        }
        (
            Get,
            Error::Redirect {
                refusal: RedirectRefusal::Downgrade { .. },
                ..
            },
        ) => "; pass --allow-http-redirect to follow it anyway",
        (
            Get,
            Error::Redirect {
                refusal: RedirectRefusal::TooMany { .. },
                ..
            },
        ) => "; raise the limit with --max-redirs if the chain is legitimate",
        (_, Error::FileTooLarge { .. }) => "; raise the limit and rerun the same command to resume",
        (Get | Recv, Error::NoHonestSource { .. }) => {
            ": rerun the same command with another source to resume"
        }
        (Get, Error::RemoteChanged { .. }) => {
            "; rerun without --no-restart to start over, or with --restart"
        }
        (Get, Error::ChecksumMismatch { .. }) => " — rerun with --restart to download again",
        (Get, Error::JournalCorrupt { .. }) => {
            "; remove it (and its .part file) or rerun with --restart to start over"
        }
        (Recv, Error::JournalCorrupt { .. }) => "; remove it (and its .part file) to start over",
        (Get, Error::JournalForeign { .. }) => {
            "; use another output name, or --restart to replace it"
        }
        (Get, Error::Exists { .. }) => {
            "; pass --restart to download it again, or choose another name with -o"
        }
        (Recv, Error::JournalForeign { .. } | Error::Exists { .. }) => {
            "; receive into another folder with -d"
        }
        (Get | Put, Error::Certificate { .. }) => {
            ". If you trust this server, pass its certificate (or its CA's) with --cacert FILE, \
             or skip the check with --insecure."
        }
        (Get, Error::HttpStatus { status: 401, .. }) => {
            " (pass them with -H 'Authorization: …'; after a redirect to another host they are \
             sent only with --location-trusted)"
        }
        (Get, Error::HttpStatus { status: 403, .. }) => " (check the URL, a token or -H headers)",
        (Put, Error::HttpStatus { status: 401, .. }) => " (--token)",
        (Put, Error::HttpStatus { status: 409, .. }) => ": use --overwrite to replace it",
        (Put, Error::Exists { .. }) => " on the server; use --overwrite to replace it",
        _ => return None,
    })
}

/// The message people (and JSON events) get for `error` from `command`: what happened, then
/// what to do.
pub fn message(command: Command, error: &Error) -> String {
    let said = error.to_string();
    match advice(command, error) {
        // A server's own message may carry the same advice already: it is not repeated.
        Some(advice) if !repeats(&said, advice) => format!("{said}{advice}"),
        _ => said,
    }
}

/// Whether `message` names the option `advice` recommends (its first `--option`) already.
fn repeats(message: &str, advice: &str) -> bool {
    advice
        .split_whitespace()
        .find(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .is_some_and(|option| message.contains(option))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn every_ending_has_its_code() {
        assert_eq!(exit_code(Ending::Done), 0);
        assert_eq!(exit_code(Ending::Failed), 1);
        assert_eq!(exit_code(Ending::Engine(&Error::Usage("x".into()))), 1);
        assert_eq!(exit_code(Ending::Usage), 2);
        assert_eq!(exit_code(Ending::Interrupted), 3);
        assert_eq!(exit_code(Ending::Engine(&Error::Cancelled)), 3);
        assert_eq!(exit_code(Ending::Engine(&Error::CancelledWithoutResume)), 3);
    }

    #[test]
    fn advice_names_only_options_the_command_has() {
        let exists = Error::Exists {
            path: PathBuf::from("x.bin"),
        };
        assert_eq!(
            message(Command::Get, &exists),
            "x.bin already exists; pass --restart to download it again, or choose another name with -o"
        );
        let recv = message(Command::Recv, &exists);
        assert!(
            !recv.contains("--restart") && !recv.contains("-o"),
            "{recv}"
        );
        let changed = Error::RemoteChanged {
            detail: "ETag changed".into(),
        };
        assert!(message(Command::Get, &changed).contains("--no-restart"));
        assert!(!message(Command::Recv, &changed).contains("--"));
        let conflict = Error::HttpStatus {
            url: "http://h/uploads/".into(),
            status: 409,
            hint: "; it exists on the server".into(),
        };
        assert!(message(Command::Put, &conflict).ends_with("use --overwrite to replace it"));
        let said_it = Error::HttpStatus {
            url: "http://h/uploads/".into(),
            status: 409,
            hint: ": x exists; use --overwrite".into(),
        };
        assert_eq!(
            message(Command::Put, &said_it)
                .matches("--overwrite")
                .count(),
            1,
            "the hint is not repeated"
        );
        let there = Error::Exists {
            path: PathBuf::from("a/x.bin"),
        };
        assert_eq!(
            message(Command::Put, &there),
            "a/x.bin already exists on the server; use --overwrite to replace it"
        );
        assert!(!message(Command::Get, &conflict).contains("--overwrite"));
    }

    #[test]
    fn resumable_errors_say_a_rerun_resumes() {
        let full = Error::DiskFull {
            path: PathBuf::from("x.bin.part"),
        };
        for command in [Command::Get, Command::Put, Command::Recv] {
            assert!(message(command, &full).contains("rerun the same command to resume"));
        }
        assert_eq!(
            message(Command::Get, &Error::Cancelled),
            "interrupted; progress is saved, rerun the same command to resume"
        );
    }
}
