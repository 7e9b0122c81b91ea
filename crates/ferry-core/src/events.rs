//! Events a transfer reports while it runs: start, progress (at most 4 per second), retries,
//! warnings and the end. The `ferry` binary draws bars from them or prints them as NDJSON.

use serde::Serialize;
use std::sync::Arc;

/// One thing a download or upload reports. Serialized (as NDJSON by `ferry --json`) with its
/// kind in an `event` field (`"start"`, `"progress"`, …) beside the variant's fields.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The transfer has been planned and its data starts to flow.
    Start {
        /// The URL transferred: a download's first source, or an upload's tus endpoint.
        url: String,
        /// The file as shown to the user: a download's destination, an upload's local path.
        file: String,
        /// The whole size in bytes, or `None` when the server did not say.
        total: Option<u64>,
        /// Bytes already transferred by an earlier run (on disk for a download, on the server
        /// for an upload).
        resumed: u64,
        /// How many connections the transfer will use at most.
        connections: usize,
        /// Whether the file is moved in several byte ranges (false: one stream over one
        /// connection).
        ranges: bool,
    },
    /// Where the transfer stands; sent at most four times a second.
    Progress {
        /// The file, as in [`Event::Start`].
        file: String,
        /// Bytes done so far, including any resumed from an earlier run.
        done: u64,
        /// The whole size in bytes, or `None` when unknown.
        total: Option<u64>,
        /// Bytes per second over the last few seconds.
        rate: u64,
        /// Connections transferring right now.
        connections: usize,
    },
    /// A request failed with an error worth retrying; it is tried again after `delay_ms`.
    Retry {
        /// The file, as in [`Event::Start`].
        file: String,
        /// The URL the next try goes to (a download may move on to another mirror).
        url: String,
        /// Failures in a row that count against the retry budget (a download's attempt that
        /// still made progress counts nothing, so this can be 0).
        attempt: u32,
        /// How long the transfer waits before the next try, in milliseconds.
        delay_ms: u64,
        /// What went wrong, for people.
        reason: String,
    },
    /// Something the user should know that does not stop the transfer (e.g. falling back to one
    /// connection, dropping a mirror).
    Warning {
        /// The file, as in [`Event::Start`].
        file: String,
        /// The warning, for people.
        message: String,
    },
    /// Every byte is in; the file's digests are being checked.
    Verifying {
        /// The file, as in [`Event::Start`].
        file: String,
    },
    /// The transfer finished and passed every check.
    Done {
        /// The file, as in [`Event::Start`].
        file: String,
        /// The file's whole size in bytes.
        bytes: u64,
        /// Bytes moved in this run: received by a download, sent by an upload (including any
        /// sent again after errors). The rest were moved by an earlier run.
        fetched: u64,
        /// Wall-clock seconds this run took.
        secs: f64,
        /// The checks the file passed, for people (e.g. `sha-256 (--checksum)`,
        /// `blake3 (12 pieces)`); empty when there was nothing to check against.
        verified: Vec<String>,
    },
}

/// Where events go. Cheap to clone; the default drops them.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<dyn Fn(Event) + Send + Sync>>);

impl EventSink {
    /// A sink that calls `f` with every event, on the task that emits it (so `f` should be quick).
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        EventSink(Some(Arc::new(f)))
    }

    /// Hands `e` to the sink's function, if it has one.
    pub fn emit(&self, e: Event) {
        if let Some(f) = &self.0 {
            f(e);
        }
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}
