//! Sending one part: PATCH after PATCH from the server's offset to the part's end, each chunk's
//! digest computed while the previous chunk is on the wire, stalls detected, failures retried
//! (asking the server where it stands), and a part the server forgot created again.

use super::progress::PartProgress;
use super::retry::fatal_at;
use super::shared::Shared;
use super::tus::{self, TusFailure};
use crate::error::Error;
use crate::events::Event;
use crate::verify::Algorithm;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use url::Url;

/// The digest of the next chunk, being computed: (offset, length, digest task).
type Ahead = (u64, u64, tokio::task::JoinHandle<std::io::Result<String>>);

impl Shared {
    /// Sends part `i` from `offset` to its end, chunk by chunk.
    pub(crate) async fn send_part(&self, i: usize, mut offset: u64) -> Result<(), Error> {
        let (start, end) = {
            let j = self.journal.lock().expect("journal lock");
            (j.parts[i].start, j.parts[i].end)
        };
        let len = end - start;
        let prog = &self.progress[i];
        let mut failures = 0u32;
        let mut recreated = 0;
        let mut url = self.url(i)?;
        // The digest of the next chunk is computed while the current one is on the wire, so
        // hashing never leaves the connection idle: (offset, length, digest task).
        let mut ahead: Option<Ahead> = None;
        while offset < len {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let n = self.chunk.min(len - offset);
            let checksum = self.chunk_digest(&mut ahead, start, offset, n, len).await?;
            prog.inflight.store(0, Ordering::Relaxed);
            let inflight = Arc::new(AtomicU64::new(0));
            let patch = self.tus.patch(
                &url,
                offset,
                &self.file,
                start + offset,
                n,
                checksum,
                inflight.clone(),
                self.cfg.limiter.clone(),
            );
            let result = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Error::Cancelled),
                r = watch_stall(patch, &inflight, prog, &self.sent, self.cfg.stall_timeout) => r,
            };
            prog.inflight.store(0, Ordering::Relaxed);
            let failure = match result {
                Ok(new) if new > offset && new <= len => {
                    offset = new;
                    prog.acked.store(offset, Ordering::Relaxed);
                    failures = 0;
                    continue;
                }
                Ok(new) => TusFailure::Transient {
                    detail: format!(
                        "{url}: the server reported offset {new} after a PATCH from {offset}"
                    ),
                    retry_after: None,
                },
                Err(f) => f,
            };
            match failure {
                TusFailure::Fatal { status, detail } => return Err(fatal_at(&url, status, detail)),
                TusFailure::Untrusted { url, reason } => {
                    return Err(Error::Certificate { url, reason });
                }
                TusFailure::Gone { .. } if recreated < 2 => {
                    recreated += 1;
                    self.recreate(i).await?;
                    url = self.url(i)?;
                    offset = 0;
                    prog.acked.store(0, Ordering::Relaxed);
                    continue;
                }
                TusFailure::Gone { detail } => return Err(fatal_at(&url, None, detail)),
                TusFailure::Transient {
                    detail,
                    retry_after,
                } => {
                    let before = offset;
                    offset = self.server_offset(&url, len, offset, prog).await;
                    if offset > before {
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    self.retry_pause(&url, failures, offset > before, detail, retry_after)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The checksum of the chunk of `n` bytes at `offset` of the part starting at `start`
    /// (`len` bytes long), when the server takes checksums; starts hashing the next chunk.
    async fn chunk_digest(
        &self,
        ahead: &mut Option<Ahead>,
        start: u64,
        offset: u64,
        n: u64,
        len: u64,
    ) -> Result<Option<(Algorithm, String)>, Error> {
        let Some(algo) = self.algo else {
            return Ok(None);
        };
        let task = match ahead.take() {
            Some((o, l, task)) if o == offset && l == n => task,
            other => {
                if let Some((_, _, stale)) = other {
                    stale.abort();
                }
                self.digest_task(algo, start + offset, n)
            }
        };
        let digest = task
            .await
            .map_err(|e| Error::task("checksum", e))?
            .map_err(|e| Error::io(&self.file, e))?;
        let next = offset + n;
        if next < len {
            let m = self.chunk.min(len - next);
            *ahead = Some((next, m, self.digest_task(algo, start + next, m)));
        }
        Ok(Some((algo, digest)))
    }

    /// After a failed PATCH: the server may have kept part of it, so ask where it stands.
    /// Returns the offset to go on from (`offset` when the server does not say).
    async fn server_offset(&self, url: &Url, len: u64, offset: u64, prog: &PartProgress) -> u64 {
        if let Ok(state) = self.tus.head(url).await
            && let Some(o) = state.offset
        {
            let offset = o.min(len);
            prog.acked.store(offset, Ordering::Relaxed);
            return offset;
        }
        offset
    }

    /// Gives up after too many `failures` in a row, else announces the retry and waits for it
    /// (not at all when the failed attempt still `progressed`).
    async fn retry_pause(
        &self,
        url: &Url,
        failures: u32,
        progressed: bool,
        detail: String,
        retry_after: Option<Duration>,
    ) -> Result<(), Error> {
        if failures >= self.cfg.retry.max_attempts {
            return Err(Error::RetriesExhausted {
                url: url.to_string(),
                attempts: failures,
                last: detail,
            });
        }
        let delay = if progressed {
            Duration::ZERO
        } else {
            self.cfg.retry.delay(failures, retry_after)
        };
        self.cfg.events.emit(Event::Retry {
            file: self.display.clone(),
            url: url.to_string(),
            attempt: failures,
            delay_ms: delay.as_millis() as u64,
            reason: detail,
        });
        tokio::select! {
            _ = self.cancel.cancelled() => Err(Error::Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Hashes `n` bytes of the file from `at` on the blocking pool.
    fn digest_task(
        &self,
        algo: Algorithm,
        at: u64,
        n: u64,
    ) -> tokio::task::JoinHandle<std::io::Result<String>> {
        let f = self.file.clone();
        tokio::task::spawn_blocking(move || tus::digest_range(&f, at, n, algo))
    }
}

/// Runs a PATCH, counting its bytes, and abandons it when no byte moved for `stall`.
async fn watch_stall(
    patch: impl std::future::Future<Output = Result<u64, TusFailure>>,
    inflight: &AtomicU64,
    prog: &PartProgress,
    sent: &AtomicU64,
    stall: Duration,
) -> Result<u64, TusFailure> {
    tokio::pin!(patch);
    let mut seen = 0u64;
    let mut last_move = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = &mut patch => {
                let now = inflight.load(Ordering::Relaxed);
                sent.fetch_add(now - seen, Ordering::Relaxed);
                return r;
            }
            _ = tick.tick() => {
                let now = inflight.load(Ordering::Relaxed);
                if now != seen {
                    sent.fetch_add(now - seen, Ordering::Relaxed);
                    prog.inflight.store(now, Ordering::Relaxed);
                    seen = now;
                    last_move = Instant::now();
                } else if last_move.elapsed() >= stall {
                    return Err(TusFailure::Transient {
                        detail: format!("no progress for {}s", stall.as_secs()),
                        retry_after: None,
                    });
                }
            }
        }
    }
}
