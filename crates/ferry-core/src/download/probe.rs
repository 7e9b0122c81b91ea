//! The first request of a download and what its answer says: length, validators, range
//! support, the final URL, and the body (kept for the first connection).

use super::RunError;
use super::client_pool::ClientPool;
use super::config::Config;
use crate::error::Error;
use crate::events::Event;
use crate::journal::{Journal, Validators};
use crate::source::{self, Failure, HttpSource};
use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};
use tokio_util::sync::CancellationToken;
use url::Url;

/// What the first response told us.
pub(crate) struct Probe {
    /// The source that answered.
    pub(crate) source: usize,
    /// The answer, whose body the first connection reads (none for an empty file).
    pub(crate) resp: Option<Response>,
    /// Offset the response body starts at.
    pub(crate) start: u64,
    /// The body is a range we asked for (206), as opposed to the whole file (200).
    pub(crate) ranged: bool,
    /// What identifies the file as the server describes it.
    pub(crate) validators: Validators,
    /// The answer's headers (for the file name and digests).
    pub(crate) headers: HeaderMap,
    /// Where redirects ended.
    pub(crate) final_url: Url,
}

/// The range a probe asks for, and the `If-Range` it sends: the first missing bytes of a
/// journal (at most `probe_size`), else the start of the file.
pub(crate) type ProbeRequest = (Option<(u64, Option<u64>)>, Option<String>);

/// What to ask the server first, given the earlier progress (if any).
pub(crate) fn probe_request(journal: Option<&Journal>, probe_size: u64) -> ProbeRequest {
    let resume_from = journal.and_then(|j| {
        let len = j.validators.length?;
        j.done
            .missing(len)
            .first()
            .map(|r| (r.start, r.end.min(r.start + probe_size)))
    });
    match (journal, resume_from) {
        (Some(j), Some((s, e))) => (
            Some((s, Some(e))),
            j.validators.if_range().map(str::to_string),
        ),
        // Every byte is there (kept after a failed verification): the last byte is enough to
        // learn that the remote file is still the same.
        (Some(j), None) if j.validators.length.is_some_and(|l| l > 0) => {
            let len = j.validators.length.unwrap_or(1);
            (
                Some((len - 1, Some(len))),
                j.validators.if_range().map(str::to_string),
            )
        }
        _ => (Some((0, Some(probe_size))), None),
    }
}

/// The first request: learns length, validators, range support and the final URL. Tries each
/// mirror in turn, with the retry policy. `file` names the download in retry events.
pub(crate) async fn probe(
    cfg: &Config,
    file: &str,
    sources: &[HttpSource],
    clients: &ClientPool,
    range: Option<(u64, Option<u64>)>,
    if_range: Option<&str>,
    cancel: &CancellationToken,
) -> Result<Probe, RunError> {
    let s = &cfg.settings;
    let client = clients.get(0)?;
    let mut failures = 0u32;
    // Whether any attempt got an answer from a server (else it is unreachable).
    let mut answered = false;
    loop {
        let si = failures as usize % sources.len();
        let src = &sources[si];
        let attempt = tokio::select! {
            r = src.get(&client, range, if_range) => r,
            _ = cancel.cancelled() => return Err(Error::Cancelled.into()),
        };
        answered |= match &attempt {
            Ok(_) => true,
            Err(Failure::Transient { reason, .. }) => source::is_answer(reason),
            Err(_) => true,
        };
        let failure = match attempt {
            Ok(resp) => match interpret_probe(resp, si, range) {
                Ok(p) => {
                    src.set_effective(p.final_url.clone());
                    src.set_validators(p.validators.clone());
                    return Ok(p);
                }
                Err(f) => f,
            },
            Err(f) => f,
        };
        match failure {
            Failure::Fatal(e)
                if sources.len() == 1 || failures as usize + 1 >= sources.len() * 2 =>
            {
                return Err(e.into());
            }
            Failure::Changed(d) => return Err(RunError::Changed(d)),
            Failure::Fatal(_) => failures += 1,
            Failure::Transient {
                reason,
                retry_after,
            } => {
                failures += 1;
                if failures > s.retry.max_attempts && !answered {
                    return Err(Error::Unreachable {
                        url: src.url.to_string(),
                        attempts: failures,
                        last: reason,
                    }
                    .into());
                }
                if failures > s.retry.max_attempts {
                    return Err(Error::RetriesExhausted {
                        url: src.url.to_string(),
                        attempts: failures,
                        last: reason,
                    }
                    .into());
                }
                let delay = s.retry.delay(failures, retry_after);
                s.events.emit(Event::Retry {
                    file: file.to_owned(),
                    url: src.url.to_string(),
                    attempt: failures,
                    delay_ms: delay.as_millis() as u64,
                    reason,
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err(Error::Cancelled.into()),
                }
            }
        }
    }
}

/// Reads what the probe's answer says about the file.
fn interpret_probe(
    resp: Response,
    source: usize,
    asked: Option<(u64, Option<u64>)>,
) -> Result<Probe, Failure> {
    let headers = resp.headers().clone();
    let final_url = resp.url().clone();
    let status = resp.status();
    let asked_start = asked.map_or(0, |(s, _)| s);
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        // `bytes */N`: the file is N bytes long. An empty file is complete already; a file shorter
        // than where we resume has changed.
        let total = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(source::parse_content_range)
            .and_then(|(_, _, t)| t);
        return match total {
            Some(0) if asked_start == 0 => Ok(Probe {
                source,
                resp: None,
                start: 0,
                ranged: true,
                validators: source::validators_of(&headers, Some(0)),
                headers,
                final_url,
            }),
            Some(t) => Err(Failure::Changed(format!(
                "the file is now {t} bytes, shorter than the {asked_start} bytes already downloaded"
            ))),
            None => Err(Failure::Transient {
                reason: "server answered 416 without a length".into(),
                retry_after: None,
            }),
        };
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(source::parse_content_range);
        let Some((start, _end, total)) = cr else {
            return Err(Failure::Transient {
                reason: "206 answer without a valid Content-Range".into(),
                retry_after: None,
            });
        };
        if start != asked_start {
            return Err(Failure::Transient {
                reason: format!(
                    "asked for bytes from {asked_start}, the server sent bytes from {start}"
                ),
                retry_after: None,
            });
        }
        if total.is_none() {
            return Err(Failure::Transient {
                reason: "206 answer without the total length".into(),
                retry_after: None,
            });
        }
        let validators = source::validators_of(&headers, total);
        return Ok(Probe {
            source,
            resp: Some(resp),
            start,
            ranged: true,
            validators,
            headers,
            final_url,
        });
    }
    // 200 (or another 2xx): the whole file from byte 0.
    let len = source::content_length(&headers);
    let validators = source::validators_of(&headers, len);
    Ok(Probe {
        source,
        resp: Some(resp),
        start: 0,
        ranged: false,
        validators,
        headers,
        final_url,
    })
}
