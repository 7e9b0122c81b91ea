//! Piece checks while a download runs: each piece a write completes is hashed against its
//! expected BLAKE3; a bad piece goes back to the plan and the source that sent it is dropped.

use super::shared::Shared;
use crate::error::Error;
use crate::events::Event;
use crate::source::Failure;
use std::ops::Range;
use url::Url;

/// Verifies the pieces that `source` just completed by writing `written`. A bad piece goes back
/// to the plan, and the source that sent it is dropped (a source sharing the blame is dropped
/// on its second bad piece); with no usable source left the download fails, keeping every
/// verified piece.
pub(crate) async fn check_pieces(
    shared: &Shared,
    written: &Range<u64>,
    source: usize,
) -> Result<(), Failure> {
    let tracker = shared.pieces.as_ref().expect("pieces configured");
    let ready = {
        let done = shared.plan().done().clone();
        tracker
            .lock()
            .expect("pieces lock")
            .wrote(written, source, &done)
    };
    verify_pieces(shared, ready).await
}

/// Checks `ready` pieces against their hashes and acts on the results.
pub(crate) async fn verify_pieces(shared: &Shared, ready: Vec<usize>) -> Result<(), Failure> {
    let tracker = shared.pieces.as_ref().expect("pieces configured");
    for i in ready {
        let (hashes, len) = {
            let t = tracker.lock().expect("pieces lock");
            (t.hashes.clone(), t.len)
        };
        let path = shared.part.path().to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path).and_then(|f| hashes.check(&f, i, len))
        })
        .await
        .map_err(|e| Failure::Fatal(Error::task("piece verification", e)))?
        .map_err(|e| Failure::Fatal(Error::io(shared.part.path(), e)))?;
        let (blamed, strikes, range) = {
            let mut t = tracker.lock().expect("pieces lock");
            let blamed = t.checked(i, ok);
            (blamed, t.strikes.clone(), t.hashes.range(i, t.len))
        };
        if ok {
            continue;
        }
        shared.plan().reopen(range.clone());
        for s in &blamed {
            let src = &shared.sources[*s];
            if src.disabled().is_none() && (blamed.len() == 1 || strikes[*s] >= 2) {
                let why = format!(
                    "sent bytes {}-{} that failed verification",
                    range.start,
                    range.end - 1
                );
                let message = format!("dropped {}: it {why}", redact(&src.url));
                if src.disable(why) {
                    shared.events().emit(Event::Warning {
                        file: shared.display.clone(),
                        message,
                    });
                }
            }
        }
        shared.notify.notify_waiters();
        if shared.sources.iter().all(|s| s.disabled().is_some()) {
            return Err(Failure::Fatal(Error::NoHonestSource {
                detail: format!(
                    "the last bad piece was bytes {}-{}",
                    range.start,
                    range.end - 1
                ),
            }));
        }
    }
    Ok(())
}

/// A URL for messages: without its query (where tokens travel).
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}
