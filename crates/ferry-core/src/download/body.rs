//! The hot path: streaming one response body into the part file in large positioned writes,
//! marking what was written done, and waking the checkpointer.

use super::piece_checks::check_pieces;
use super::shared::Shared;
use crate::source::{self, Failure};
use reqwest::header;
use reqwest::{Response, StatusCode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How one response's body ended.
pub(crate) enum BodyEnd {
    /// The assignment (or what is left of it after stealing) is written.
    Finished,
    /// The body ended early or cleanly at EOF.
    Eof,
}

/// The offset just past the last byte a response promises: the Content-Range end of a 206, or
/// `start` + Content-Length. Bytes beyond it are never written.
fn promised_end(resp: &Response, start: u64) -> Option<u64> {
    let headers = resp.headers();
    if resp.status() == StatusCode::PARTIAL_CONTENT {
        let cr = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(source::parse_content_range);
        return cr.map(|(_, end, _)| end);
    }
    source::content_length(headers).map(|l| start + l)
}

/// Streams a response body into the part file at `start`, in large positioned writes, until the
/// assignment is written, the body ends, or the connection fails.
pub(crate) async fn read_body(
    shared: &Shared,
    w: usize,
    source: usize,
    mut resp: Response,
    start: u64,
    buf: &mut Vec<u8>,
) -> Result<BodyEnd, Failure> {
    let s = &shared.cfg.settings;
    let mut buf_start = start;
    buf.clear();
    let mut last_flush = Instant::now();
    let assigned_at = Instant::now();
    let mut written_here = 0u64;
    let limit = promised_end(&resp, start).unwrap_or(u64::MAX);
    let mut pos = start;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(s.read_timeout, resp.chunk()) => r,
            _ = shared.cancel.cancelled() => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Ok(BodyEnd::Finished);
            }
        };
        let chunk = match next {
            Err(_) => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Err(Failure::Transient {
                    reason: format!(
                        "no data for {} s (stalled connection)",
                        s.read_timeout.as_secs_f64()
                    ),
                    retry_after: None,
                });
            }
            Ok(Err(e)) => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Err(Failure::Transient {
                    reason: source::describe(&e),
                    retry_after: None,
                });
            }
            Ok(Ok(None)) => {
                flush(shared, source, buf, &mut buf_start).await?;
                return Ok(if shared.plan().has_more(w) {
                    BodyEnd::Eof
                } else {
                    BodyEnd::Finished
                });
            }
            Ok(Ok(Some(c))) => c,
        };
        if let Some(l) = &s.limiter {
            l.acquire(chunk.len() as u64).await;
        }
        // Never past what the response promised (a lying server), nor past the assignment
        // (another connection may have taken the rest).
        let promised = (chunk.len() as u64).min(limit.saturating_sub(pos));
        let take = shared.plan().claim(w, promised) as usize;
        buf.extend_from_slice(&chunk[..take]);
        written_here += take as u64;
        pos += take as u64;
        let stop = take < chunk.len();
        if stop
            || buf.len() >= shared.buf_size
            || last_flush.elapsed() >= Duration::from_millis(500)
        {
            flush(shared, source, buf, &mut buf_start).await?;
            last_flush = Instant::now();
            let secs = assigned_at.elapsed().as_secs_f64();
            let mut plan = shared.plan();
            if secs > 0.05 {
                plan.set_rate(w, written_here as f64 / secs);
            }
            if stop || !plan.has_more(w) {
                return Ok(BodyEnd::Finished);
            }
        }
    }
}

/// Writes the buffered bytes at their offset, then marks them done.
async fn flush(
    shared: &Shared,
    source: usize,
    buf: &mut Vec<u8>,
    buf_start: &mut u64,
) -> Result<(), Failure> {
    if buf.is_empty() {
        return Ok(());
    }
    let len = buf.len() as u64;
    let (back, res) = shared.part.write_at(std::mem::take(buf), *buf_start).await;
    *buf = back;
    buf.clear();
    res.map_err(Failure::Fatal)?;
    let written = *buf_start..*buf_start + len;
    shared.plan().commit(written.clone());
    *buf_start += len;
    if shared.pieces.is_some() {
        check_pieces(shared, &written, source).await?;
    }
    shared.fetched.fetch_add(len, Ordering::Relaxed);
    if shared.since_checkpoint.fetch_add(len, Ordering::Relaxed) + len >= shared.checkpoint_bytes {
        shared.checkpoint_due.notify_one();
    }
    Ok(())
}
