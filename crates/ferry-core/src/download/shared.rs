//! The state the connections of one download share: the plan, the part file, the sources,
//! counters for checkpoints and progress, and the first fatal failure.

use super::config::Config;
use crate::events::EventSink;
use crate::journal::Validators;
use crate::pieces::PieceTracker;
use crate::plan::Plan;
use crate::sink::PartFile;
use crate::source::{Failure, HttpSource};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// State shared by the connections of one download.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<Config>,
    pub(crate) sources: Arc<Vec<HttpSource>>,
    pub(crate) plan: Mutex<Plan>,
    pub(crate) part: PartFile,
    /// Ranges are usable (else: one connection, from byte 0, restart on failure).
    pub(crate) ranged: bool,
    /// Validators of the file as first seen; every later answer must agree.
    pub(crate) validators: Validators,
    /// Fires on Ctrl-C, on a fatal error, or when everything is done.
    pub(crate) cancel: CancellationToken,
    /// Wakes idle connections when work may have appeared.
    pub(crate) notify: Notify,
    pub(crate) checkpoint_due: Notify,
    pub(crate) fetched: AtomicU64,
    pub(crate) since_checkpoint: AtomicU64,
    pub(crate) checkpoint_bytes: u64,
    pub(crate) failure: Mutex<Option<Failure>>,
    /// For downloads of unknown length: where the stream ended.
    pub(crate) eof_at: Mutex<Option<u64>>,
    pub(crate) display: String,
    pub(crate) started: Instant,
    pub(crate) buf_size: usize,
    /// Per-piece verification, when the pieces' hashes are known.
    pub(crate) pieces: Option<Mutex<PieceTracker>>,
}

impl Shared {
    /// The plan, locked.
    pub(crate) fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().expect("plan lock")
    }

    /// Records the first fatal failure and stops every connection.
    pub(crate) fn fail(&self, f: Failure) {
        let mut slot = self.failure.lock().expect("failure lock");
        if slot.is_none() || matches!(*slot, Some(Failure::Transient { .. })) {
            *slot = Some(f);
        }
        drop(slot);
        self.cancel.cancel();
        self.notify.notify_waiters();
    }

    /// Where events go.
    pub(crate) fn events(&self) -> &EventSink {
        &self.cfg.settings.events
    }
}
