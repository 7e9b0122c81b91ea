//! Durable progress and progress reports while a download runs: the checkpointer (fdatasync
//! the part file, then record what it holds in the journal) and the progress ticker.

use super::shared::Shared;
use crate::error::Error;
use crate::events::Event;
use crate::journal::Journal;
use crate::source::Failure;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The journal and where it is saved, locked while a checkpoint writes it.
pub(crate) type JournalSlot = tokio::sync::Mutex<(Journal, PathBuf)>;

/// Makes progress durable: fdatasync the part file, then record what was written before it.
pub(crate) async fn save_checkpoint(shared: &Shared, journal: &JournalSlot) -> Result<(), Error> {
    let mut guard = journal.lock().await;
    shared.since_checkpoint.store(0, Ordering::Relaxed);
    // With pieces, only verified pieces are recorded: a resumed download never trusts bytes
    // that were not checked.
    let done = match &shared.pieces {
        Some(t) => t.lock().expect("pieces lock").verified.clone(),
        None => shared.plan().done().clone(),
    };
    if done == guard.0.done {
        return Ok(());
    }
    shared.part.sync().await?;
    let (j, path) = &mut *guard;
    j.done = done;
    let mut snapshot = j.clone();
    let path = path.clone();
    tokio::task::spawn_blocking(move || snapshot.save(&path))
        .await
        .map_err(|e| Error::task("journal", e))?
}

/// Checkpoints every interval, or sooner when enough bytes arrived (but not more often than
/// every 50 ms, or 10× the last checkpoint's duration, so a fast link does not spend its time
/// in fsync).
pub(crate) async fn checkpoint_loop(shared: Arc<Shared>, journal: Arc<JournalSlot>) {
    let every = shared.cfg.settings.checkpoint_interval;
    // Syncing takes the disk's time, not ours, but a sync running all the time slows the
    // writers: keep the gap between checkpoints at least 10× the last one's duration.
    let mut min_gap = Duration::from_millis(50).min(every);
    loop {
        let last = Instant::now();
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = shared.checkpoint_due.notified() => {
                let gap = last.elapsed();
                if gap < min_gap {
                    tokio::select! {
                        _ = tokio::time::sleep(min_gap - gap) => {}
                        _ = shared.cancel.cancelled() => return,
                    }
                }
            }
        }
        if shared.cancel.is_cancelled() {
            return;
        }
        let t = Instant::now();
        if let Err(e) = save_checkpoint(&shared, &journal).await {
            shared.fail(Failure::Fatal(e));
            return;
        }
        min_gap = (t.elapsed() * 10).clamp(Duration::from_millis(50), every);
    }
}

/// Emits a progress event at most four times a second.
pub(crate) async fn progress_loop(shared: Arc<Shared>) {
    let total = shared.validators.length;
    let mut samples: VecDeque<(Instant, u64)> = Default::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let (done, connections) = {
            let plan = shared.plan();
            (plan.done().covered(), plan.active_count())
        };
        let now = Instant::now();
        samples.push_back((now, shared.fetched.load(Ordering::Relaxed)));
        while samples.len() > 2 && now.duration_since(samples[0].0) > Duration::from_secs(3) {
            samples.pop_front();
        }
        let (t0, b0) = samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        let rate = if secs > 0.0 {
            ((samples.back().expect("one sample").1 - b0) as f64 / secs) as u64
        } else {
            0
        };
        shared.events().emit(Event::Progress {
            file: shared.display.clone(),
            done,
            total,
            rate,
            connections,
        });
    }
}
