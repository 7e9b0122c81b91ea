//! Progress of an upload: what each part has on the server and in flight, and the ticker that
//! turns it into `Progress` events.

use super::journal::Part;
use super::shared::Shared;
use crate::events::Event;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Live progress of one part.
pub(crate) struct PartProgress {
    /// Offset the server confirmed.
    pub(crate) acked: AtomicU64,
    /// Bytes of the PATCH in flight that have left.
    pub(crate) inflight: AtomicU64,
    /// The part's length.
    pub(crate) len: u64,
}

impl PartProgress {
    /// Nothing acknowledged yet, for each of `parts`.
    pub(crate) fn for_parts(parts: &[Part]) -> Vec<PartProgress> {
        parts
            .iter()
            .map(|p| PartProgress {
                acked: AtomicU64::new(0),
                inflight: AtomicU64::new(0),
                len: p.end - p.start,
            })
            .collect()
    }
}

/// Emits progress (at most 4 per second) while the parts run.
pub(crate) async fn report(shared: Arc<Shared>) {
    let total: u64 = shared.progress.iter().map(|p| p.len).sum();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_sent = shared.sent.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    let mut rate = 0f64;
    loop {
        tick.tick().await;
        let done: u64 = shared
            .progress
            .iter()
            .map(|p| {
                (p.acked.load(Ordering::Relaxed) + p.inflight.load(Ordering::Relaxed)).min(p.len)
            })
            .sum();
        let sent = shared.sent.load(Ordering::Relaxed);
        let dt = last_at.elapsed().as_secs_f64().max(1e-3);
        let inst = (sent - last_sent) as f64 / dt;
        rate = if rate == 0.0 {
            inst
        } else {
            rate * 0.7 + inst * 0.3
        };
        last_sent = sent;
        last_at = Instant::now();
        let active = shared
            .progress
            .iter()
            .filter(|p| p.acked.load(Ordering::Relaxed) < p.len)
            .count();
        shared.cfg.events.emit(Event::Progress {
            file: shared.display.clone(),
            done,
            total: Some(total),
            rate: rate as u64,
            connections: active,
        });
    }
}
