//! Events a transfer reports while it runs: start, progress (at most 4 per second), retries,
//! warnings and the end. The `ferry` binary draws bars from them or prints them as NDJSON.

use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        url: String,
        file: String,
        total: Option<u64>,
        /// Bytes already on disk from an earlier run.
        resumed: u64,
        connections: usize,
        ranges: bool,
    },
    Progress {
        file: String,
        done: u64,
        total: Option<u64>,
        /// Bytes per second over the last few seconds.
        rate: u64,
        connections: usize,
    },
    Retry {
        file: String,
        url: String,
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    Warning {
        file: String,
        message: String,
    },
    Verifying {
        file: String,
    },
    Done {
        file: String,
        bytes: u64,
        /// Bytes received in this run (the rest were already on disk).
        fetched: u64,
        secs: f64,
        verified: Vec<String>,
    },
}

/// Where events go. Cheap to clone; the default drops them.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<dyn Fn(Event) + Send + Sync>>);

impl EventSink {
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        EventSink(Some(Arc::new(f)))
    }

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
