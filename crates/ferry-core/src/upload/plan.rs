//! The part plan of a new upload: how many parts (concatenation when the server allows and the
//! file is large enough), their byte ranges, and their creation on the server.

use super::config::Config;
use super::journal::{Part, UploadJournal};
use super::protocol::Client;
use super::retry::retrying;
use super::tus::Capabilities;
use crate::error::Error;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Parts are at least this large: smaller files go over one connection.
const MIN_PART: u64 = 8 << 20;
/// Files up to this size are sent inside the creation request when the server allows.
const SMALL_FILE: u64 = 1 << 20;

/// What creating the parts already did.
pub(crate) struct Created {
    /// The server's offset of the only part, when its creation request carried data.
    pub(crate) first_offset: Option<u64>,
    /// Bytes sent inside the creation request.
    pub(crate) presend: u64,
}

/// The number of parts for a file of `size` bytes when `wants` connections are asked for.
fn part_count(size: u64, wants: usize, parallel_ok: bool) -> u64 {
    if wants > 1 && parallel_ok {
        (size / MIN_PART).clamp(1, wants as u64)
    } else {
        1
    }
}

/// `n` nearly equal ranges covering `0..size`.
pub(crate) fn split(size: u64, n: u64) -> Vec<(u64, u64)> {
    let base = size / n;
    let extra = size % n;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..n {
        let len = base + u64::from(i < extra);
        out.push((start, start + len));
        start += len;
    }
    out
}

/// What retried requests need: the settings, the file's name in events, and the stop signal.
#[derive(Clone, Copy)]
pub(crate) struct Requests<'a> {
    /// The upload's settings (retry policy, events, endpoint).
    pub(crate) cfg: &'a Config,
    /// The file as named in events.
    pub(crate) display: &'a str,
    /// Stops the retries.
    pub(crate) cancel: &'a CancellationToken,
}

/// Plans the parts of `file` (`size` bytes) and creates them on the server, recording them in
/// `journal`: one upload (with the data inside when the file is small and the server allows),
/// or partial uploads to be joined.
pub(crate) async fn create_parts(
    requests: Requests<'_>,
    tus: &Client,
    caps: &Capabilities,
    file: &Path,
    size: u64,
    metadata: &str,
    journal: &mut UploadJournal,
) -> Result<Created, Error> {
    let Requests {
        cfg,
        display,
        cancel,
    } = requests;
    let n = part_count(size, cfg.connections, caps.has("concatenation"));
    if n > 1 {
        for (start, end) in split(size, n) {
            let (url, _) = retrying(cfg, display, cancel, || {
                tus.create(Some(end - start), "", Some("partial"), None)
            })
            .await?;
            journal.parts.push(Part {
                url: url.to_string(),
                start,
                end,
            });
        }
        return Ok(Created {
            first_offset: None,
            presend: 0,
        });
    }
    let small = size <= SMALL_FILE && size > 0 && caps.has("creation-with-upload");
    let body = if small {
        Some(bytes::Bytes::from(
            tokio::fs::read(file)
                .await
                .map_err(|e| Error::io(file, e))?,
        ))
    } else {
        None
    };
    let (url, offset) = retrying(cfg, display, cancel, || {
        tus.create(Some(size), metadata, None, body.clone())
    })
    .await?;
    journal.parts.push(Part {
        url: url.to_string(),
        start: 0,
        end: size,
    });
    Ok(Created {
        first_offset: Some(offset),
        presend: body.as_ref().map_or(0, |b| b.len() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything() {
        assert_eq!(split(10, 3), vec![(0, 4), (4, 7), (7, 10)]);
        assert_eq!(split(8, 4), vec![(0, 2), (2, 4), (4, 6), (6, 8)]);
        assert_eq!(split(0, 1), vec![(0, 0)]);
    }

    #[test]
    fn small_files_and_plain_servers_get_one_part() {
        assert_eq!(part_count(100 << 20, 4, true), 4);
        assert_eq!(part_count(20 << 20, 4, true), 2);
        assert_eq!(part_count(1 << 20, 4, true), 1);
        assert_eq!(part_count(100 << 20, 4, false), 1);
        assert_eq!(part_count(100 << 20, 1, true), 1);
    }
}
