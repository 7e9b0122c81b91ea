//! Retrying tus requests: backoff on transient failures, a `Retry` event per attempt, and the
//! translation of a tus failure into an [`Error`].

use super::config::Config;
use super::tus::TusFailure;
use crate::error::Error;
use crate::events::Event;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Retries a request with backoff on transient failures; fatal ones (and Gone) are errors.
pub(crate) async fn retrying<T, F, Fut>(
    cfg: &Config,
    display: &str,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TusFailure>>,
{
    match retrying_gone(cfg, display, cancel, &mut f).await? {
        Some(t) => Ok(t),
        None => Err(Error::Protocol {
            url: cfg.endpoint.clone(),
            detail: "the server answered 404 Not Found: is this a tus endpoint?".into(),
        }),
    }
}

/// Like [`retrying`], but a `Gone` answer is `Ok(None)`.
pub(crate) async fn retrying_gone<T, F, Fut>(
    cfg: &Config,
    display: &str,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TusFailure>>,
{
    let mut failures = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let r = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            r = f() => r,
        };
        match r {
            Ok(t) => return Ok(Some(t)),
            Err(TusFailure::Gone { .. }) => return Ok(None),
            Err(TusFailure::Untrusted { url, reason }) => {
                return Err(Error::Certificate { url, reason });
            }
            Err(TusFailure::Fatal { status, detail }) => {
                return Err(fatal(&cfg.endpoint, status, detail));
            }
            Err(TusFailure::Transient {
                detail,
                retry_after,
            }) => {
                failures += 1;
                if failures >= cfg.retry.max_attempts {
                    return Err(Error::RetriesExhausted {
                        url: cfg.endpoint.clone(),
                        attempts: failures,
                        last: detail,
                    });
                }
                let delay = cfg.retry.delay(failures, retry_after);
                cfg.events.emit(Event::Retry {
                    file: display.to_owned(),
                    url: cfg.endpoint.clone(),
                    attempt: failures,
                    delay_ms: delay.as_millis() as u64,
                    reason: detail,
                });
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Error::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The error for a fatal answer about `url`: an HTTP status keeps what the server said after
/// it, anything else is a protocol error.
fn fatal(url: &str, status: Option<u16>, detail: String) -> Error {
    match status {
        Some(status) => Error::HttpStatus {
            url: url.to_owned(),
            status,
            hint: strip_prefix(&detail),
        },
        None => Error::Protocol {
            url: url.to_owned(),
            detail,
        },
    }
}

/// [`fatal`] for an upload URL.
pub(crate) fn fatal_at(url: &Url, status: Option<u16>, detail: String) -> Error {
    fatal(url.as_str(), status, detail)
}

/// The part of a failure's detail after "the server answered NNN Reason".
fn strip_prefix(detail: &str) -> String {
    match detail.find("the server answered ") {
        Some(i) => {
            let rest = &detail[i + "the server answered ".len()..];
            // Skip "NNN Reason" up to the first ':' or ';'.
            match rest.find([':', ';']) {
                Some(j) => rest[j..].to_string(),
                None => String::new(),
            }
        }
        None => format!(": {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_keep_what_the_server_said() {
        assert_eq!(
            strip_prefix(
                "http://h/uploads/: the server answered 409 Conflict: a exists; use --overwrite"
            ),
            ": a exists; use --overwrite"
        );
        assert_eq!(
            strip_prefix("http://h/: the server answered 401 Unauthorized"),
            ""
        );
    }
}
