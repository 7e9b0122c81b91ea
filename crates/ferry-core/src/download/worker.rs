//! One connection of a download: takes ranges from the plan until none are left, requests
//! them from a source (bounded requests, `If-Range`), checks each answer is the range asked
//! for of the same file, streams the body, and retries or moves to another mirror on failure.

use super::body::{BodyEnd, read_body};
use super::client_pool::ClientPool;
use super::probe::Probe;
use super::shared::Shared;
use crate::error::Error;
use crate::events::Event;
use crate::plan::Plan;
use crate::ranges::RangeSet;
use crate::source::{self, Failure, HttpSource};
use reqwest::header;
use reqwest::{Client, Response, StatusCode};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Largest range asked for in one request (a connection makes several on one keep-alive socket).
const MAX_REQUEST: u64 = 8 << 20;

/// Whether a connection goes on with the next assignment or stops for good.
enum Next {
    /// This assignment is over (written, stolen, or released): take another.
    Assignment,
    /// The connection is done (cancelled, failed, out of sources, end of stream).
    Stop,
}

/// One connection and what it keeps between requests.
struct Connection {
    shared: Arc<Shared>,
    w: usize,
    clients: ClientPool,
    /// Built on first use: a connection that finds nothing to do costs neither a client nor a buffer.
    client: Option<Client>,
    buf: Vec<u8>,
    /// The source this connection asks now.
    source: usize,
}

/// The retry budget of one assignment.
#[derive(Default)]
struct Attempts {
    /// Failures in a row without progress.
    failures: u32,
    /// The furthest offset an attempt reached.
    best_reach: u64,
}

/// One connection: takes ranges from the plan until there are none left.
pub(crate) async fn worker(
    shared: Arc<Shared>,
    w: usize,
    clients: ClientPool,
    mut probe: Option<Probe>,
) {
    let source = probe
        .as_ref()
        .map_or(w % shared.sources.len(), |p| p.source);
    let mut conn = Connection {
        shared: shared.clone(),
        w,
        clients,
        client: None,
        buf: Vec::new(),
        source,
    };
    loop {
        if shared.cancel.is_cancelled() {
            break;
        }
        if take_assignment(&shared, w).is_none() {
            let done = {
                let plan = shared.plan();
                plan.is_complete() || plan.active_count() == 0 || !shared.ranged
            };
            if done {
                break;
            }
            tokio::select! {
                _ = shared.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shared.cancel.cancelled() => break,
            }
            continue;
        }
        let next = conn.fill_assignment(&mut probe).await;
        if let Next::Stop = next {
            break;
        }
        shared.plan().release(w);
        shared.notify.notify_waiters();
    }
    shared.plan().release(w);
    shared.notify.notify_waiters();
}

/// The current assignment of connection `w`, or a new one (a duplicate of a slow connection's
/// tail in the endgame); `None` when there is nothing to do now.
fn take_assignment(shared: &Shared, w: usize) -> Option<Range<u64>> {
    let mut plan = shared.plan();
    if let Some(current) = plan.assignment(w) {
        return Some(current);
    }
    if plan.is_complete() {
        return None;
    }
    let r = plan.assign(w);
    let r = if r.is_none() && shared.ranged {
        plan.assign_duplicate(w, 1.5)
    } else {
        r
    };
    // A new assignment starts at the average speed per connection, so the endgame
    // can tell a slow connection from one that just began.
    let secs = shared.started.elapsed().as_secs_f64();
    if secs > 0.0 && r.is_some() {
        let avg = shared.fetched.load(Ordering::Relaxed) as f64 / secs / plan.active_count() as f64;
        plan.set_rate(w, avg);
    }
    r
}

impl Connection {
    /// Requests and writes the assignment until it is written or given up.
    async fn fill_assignment(&mut self, probe: &mut Option<Probe>) -> Next {
        let shared = self.shared.clone();
        let w = self.w;
        let mut attempts = Attempts::default();
        loop {
            let Some(cur) = shared.plan().assignment(w) else {
                return Next::Assignment;
            };
            if !shared.plan().has_more(w) || shared.cancel.is_cancelled() {
                return Next::Assignment;
            }
            // Use the probe's body when it starts where this assignment does.
            let resp = match probe.take() {
                Some(p) if p.resp.is_some() && p.start == cur.start => Ok(p.resp.expect("checked")),
                _ => match self.request(&cur).await {
                    Some(r) => r,
                    None => return Next::Stop,
                },
            };
            let start_pos = cur.start;
            let result = match resp {
                Ok(resp) => {
                    read_body(&shared, w, self.source, resp, start_pos, &mut self.buf).await
                }
                Err(f) => Err(f),
            };
            let reached = shared.plan().assignment(w).map_or(start_pos, |a| a.start);
            match result {
                Ok(BodyEnd::Finished) => continue,
                Ok(BodyEnd::Eof) if !shared.ranged && shared.plan().len() == u64::MAX => {
                    // Unknown length: the end of the stream is the end of the file.
                    *shared.eof_at.lock().expect("eof lock") = Some(reached);
                    return Next::Stop;
                }
                // A range answer may be shorter than asked: ask for the rest. (Without ranges a
                // short body means starting over, below.)
                Ok(BodyEnd::Eof) if reached > start_pos && shared.ranged => continue,
                outcome => {
                    let failure = match outcome {
                        Err(f) => f,
                        Ok(_) => Failure::Transient {
                            reason: "the server closed the connection before sending any data"
                                .into(),
                            retry_after: None,
                        },
                    };
                    if !self.after_failure(failure, reached, &mut attempts).await {
                        return Next::Stop;
                    }
                }
            }
        }
    }

    /// Sends the request for (the start of) `cur` to this connection's source, moving to the
    /// next usable source when this one was dropped. `None` when the connection must stop
    /// (cancelled, or no usable source left).
    async fn request(&mut self, cur: &Range<u64>) -> Option<Result<Response, Failure>> {
        let shared = &self.shared;
        let s = &shared.cfg.settings;
        if shared.sources[self.source].disabled().is_some() {
            self.source = next_source(shared, self.source);
            if shared.sources[self.source].disabled().is_some() {
                return None;
            }
        }
        let src = &shared.sources[self.source];
        let if_range = src
            .validators()
            .and_then(|v| v.if_range().map(str::to_string));
        // Requests are bounded, so a connection whose tail is stolen can usually
        // finish its current request instead of dropping the connection.
        let req_end = cur
            .end
            .min(cur.start.saturating_add(MAX_REQUEST.max(s.min_split)));
        shared.plan().set_request_end(self.w, req_end);
        let range = if shared.ranged {
            Some((cur.start, Some(req_end)))
        } else {
            None
        };
        let client = &mut self.client;
        let clients = &self.clients;
        let w = self.w;
        let got = tokio::select! {
            r = async {
                if client.is_none() {
                    *client = Some(clients.get(w).map_err(Failure::Fatal)?);
                }
                src.get(client.as_ref().expect("just built"), range, if_range.as_deref()).await
            } => r,
            _ = shared.cancel.cancelled() => return None,
        };
        Some(got.and_then(|resp| check_response(shared, self.source, resp, cur.start)))
    }

    /// Handles a failed attempt that got as far as `reached`: a fatal failure stops the
    /// download; a transient one is retried (at once after progress, else after a backoff, on
    /// the next mirror) until the retry budget is spent. True when the assignment is tried again.
    async fn after_failure(
        &mut self,
        failure: Failure,
        reached: u64,
        attempts: &mut Attempts,
    ) -> bool {
        let shared = &self.shared;
        let s = &shared.cfg.settings;
        let w = self.w;
        let (reason, retry_after) = match failure {
            Failure::Transient {
                reason,
                retry_after,
            } => (reason, retry_after),
            other => {
                shared.plan().release(w);
                shared.fail(other);
                return false;
            }
        };
        if shared.cancel.is_cancelled() {
            return false;
        }
        if !shared.ranged {
            // Without ranges a broken stream can only start again from byte 0.
            let mut plan = shared.plan();
            let len = plan.len();
            *plan = Plan::new(len, RangeSet::new(), 1, s.min_split);
            plan.assign(0);
        }
        // An attempt that moved forward costs nothing from the retry budget and
        // reconnects at once: a server that resets every few MiB still finishes
        // at full speed. Attempts without progress back off.
        let progressed = reached > attempts.best_reach;
        if progressed {
            attempts.best_reach = reached;
            attempts.failures = 0;
        } else {
            attempts.failures += 1;
        }
        if attempts.failures > s.retry.max_attempts {
            shared.plan().release(w);
            *shared.failure.lock().expect("failure lock") = Some(Failure::Transient {
                reason,
                retry_after: None,
            });
            shared.notify.notify_waiters();
            return false;
        }
        // Another mirror may do better.
        self.source = next_source(shared, self.source);
        let delay = match retry_after {
            None if progressed => Duration::ZERO,
            _ => s.retry.delay(attempts.failures.max(1), retry_after),
        };
        shared.events().emit(Event::Retry {
            file: shared.display.clone(),
            url: shared.sources[self.source].url.to_string(),
            attempt: attempts.failures,
            delay_ms: delay.as_millis() as u64,
            reason,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shared.cancel.cancelled() => false,
        }
    }
}

/// The next usable mirror after `current` (itself when it is the only one left).
fn next_source(shared: &Shared, current: usize) -> usize {
    let n = shared.sources.len();
    (1..=n)
        .map(|i| (current + i) % n)
        .find(|&i| shared.sources[i].disabled().is_none())
        .unwrap_or(current)
}

/// Checks that an answer to a range request is the range we asked for, of the same file.
fn check_response(
    shared: &Shared,
    source: usize,
    resp: Response,
    start: u64,
) -> Result<Response, Failure> {
    let src = &shared.sources[source];
    let url = resp.url().clone();
    let headers = resp.headers();
    if !shared.ranged {
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            return Err(Failure::Transient {
                reason: "unexpected 206 to a request without Range".into(),
                retry_after: None,
            });
        }
        let v = source::validators_of(headers, source::content_length(headers));
        if let Some(d) = shared.validators.difference(&v) {
            return Err(Failure::Changed(d));
        }
        src.set_effective(url);
        return Ok(resp);
    }
    let cr = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(source::parse_content_range);
    let mismatch = serves_another_file(shared, src, &resp, cr, start);
    if let Some(detail) = mismatch {
        if source == 0 || shared.sources.len() == 1 {
            return Err(Failure::Changed(detail));
        }
        // A mirror that serves something else is dropped (and reported once, whichever
        // connection saw it first); the others carry on.
        let first = shared.sources[0].url.to_string();
        if src.disable(detail.clone()) {
            shared.events().emit(Event::Warning {
                file: shared.display.clone(),
                message: format!("dropping mirror {}: {detail}", src.url),
            });
        }
        if shared.sources.iter().all(|s| s.disabled().is_some()) {
            return Err(Failure::Fatal(Error::MirrorMismatch {
                first,
                mirror: src.url.to_string(),
                detail,
            }));
        }
        return Err(Failure::Transient {
            reason: detail,
            retry_after: None,
        });
    }
    let Some((got_start, _, total)) = cr else {
        return Err(Failure::Transient {
            reason: "206 answer without a valid Content-Range".into(),
            retry_after: None,
        });
    };
    if got_start != start {
        return Err(Failure::Transient {
            reason: format!(
                "asked for bytes from {start}, the server sent bytes from {got_start} (wrong Content-Range)"
            ),
            retry_after: None,
        });
    }
    // A mirror's first answer tells us its own validators, for If-Range next time.
    if src.validators().is_none() {
        src.set_validators(source::validators_of(headers, total));
    }
    src.set_effective(url);
    Ok(resp)
}

/// Signs that source `src` does not (or no longer) serve the file we started from, in its
/// answer to a range request from `start`: a description of the difference, or `None`.
fn serves_another_file(
    shared: &Shared,
    src: &HttpSource,
    resp: &Response,
    cr: Option<(u64, u64, Option<u64>)>,
    start: u64,
) -> Option<String> {
    let headers = resp.headers();
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => match cr {
            Some((_, _, total)) if total != shared.validators.length => Some(format!(
                "length is {} bytes, expected {}",
                total.map_or("unknown".into(), |t| t.to_string()),
                shared.validators.length.unwrap_or(0)
            )),
            _ => src.validators().and_then(|known| {
                known.difference(&source::validators_of(headers, cr.and_then(|c| c.2)))
            }),
        },
        StatusCode::RANGE_NOT_SATISFIABLE => Some(format!(
            "the server says bytes from {start} do not exist (416)"
        )),
        // A 200 to a request with If-Range means the file changed; without a validator to send
        // it means the server stopped honouring ranges. Either way: not the bytes we asked for.
        status => Some(
            shared
                .validators
                .difference(&source::validators_of(
                    headers,
                    source::content_length(headers),
                ))
                .unwrap_or_else(|| {
                    format!("the server answered {status} instead of the requested range")
                }),
        ),
    }
}
